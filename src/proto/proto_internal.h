/* SPDX-License-Identifier: Apache-2.0 */
/* Little-endian load/store helpers shared by the protocol core (not installed). */
#ifndef MCUGW_PROTO_INTERNAL_H
#define MCUGW_PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct mcugw_crypto;

/* Flood resistance (proto_cookie.c): MAC = HMAC-SHA256 truncated to 16 bytes, with a key of
 * @p key_len <= 32 bytes; the AEAD key of a COOKIE frame from its nonce. */
int mcugw_mac16(const struct mcugw_crypto *c, const uint8_t *key, size_t key_len,
                const uint8_t *data, size_t len, uint8_t out[16]);
int mcugw_cookie_reply_key(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                           const uint8_t *nonce, uint8_t key[32]);

/* An HS1 frame ends with mac1 | mac2: where they start, and the shortest frame holding them. */
#define MCUGW_MAC1_OFF(len) ((len)-MCUGW_HS1_MACS_LEN)
#define MCUGW_MAC2_OFF(len) ((len)-MCUGW_MAC_LEN)
#define mcugw_hs1_long_enough(len)                                                                 \
        ((len) >= MCUGW_HDR_LEN + MCUGW_HS1_OVERHEAD + MCUGW_HS1_MACS_LEN)

/* The Noise steps both halves of the handshake use (proto_noise.c): the initiator's messages
 * are there, the responder's (the gateway's, never in firmware) in proto_responder.c. */
int mcugw_noise_mix_hash(struct mcugw_noise *hs, const void *data, size_t len);
/* EncryptAndHash and DecryptAndHash with a key only: in IK every field they handle comes after
 * a DH (MCUGW_ESTATE without one); the plain ephemeral keys go through mix_hash. */
int mcugw_noise_encrypt_and_hash(struct mcugw_noise *hs, const uint8_t *p, size_t len,
                                 uint8_t *out);
/* @p out may equal @p c (in place): the hash of the ciphertext is taken first. */
int mcugw_noise_decrypt_and_hash(struct mcugw_noise *hs, const uint8_t *c, size_t len,
                                 uint8_t *out);
int mcugw_noise_dh_mix(struct mcugw_noise *hs, const uint8_t priv[32], const uint8_t pub[32]);
int mcugw_noise_gen_ephemeral(struct mcugw_noise *hs, uint8_t pub[32]);

/* HMAC-SHA256 with a 32-byte key over the concatenation of two pieces (proto_noise.c). */
int mcugw_hmac_sha256(const struct mcugw_crypto *c, const uint8_t key[32], const void *d1,
                      size_t l1, const void *d2, size_t l2, uint8_t out[32]);

/* Where the target is little-endian, one load or store of the value itself: GCC does not merge
 * the byte stores into one at -Os, and these run for every field of every message (340 bytes
 * of Cortex-M4 code). The unaligned access is memcpy's problem, which knows the target (with
 * -mno-unaligned-access, for parts that trap, it goes byte by byte again). */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) &&                                 \
        __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MCUGW_LE_HOST 1
#else
#define MCUGW_LE_HOST 0
#endif

static inline void put_le16(uint8_t *p, uint16_t v)
{
#if MCUGW_LE_HOST
        memcpy(p, &v, 2);
#else
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
#endif
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
#if MCUGW_LE_HOST
        memcpy(p, &v, 4);
#else
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
#endif
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
#if MCUGW_LE_HOST
        memcpy(p, &v, 8);
#else
        put_le32(p, (uint32_t)v);
        put_le32(p + 4, (uint32_t)(v >> 32));
#endif
}

static inline uint16_t get_le16(const uint8_t *p)
{
#if MCUGW_LE_HOST
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
#else
        return (uint16_t)(p[0] | (p[1] << 8));
#endif
}

static inline uint32_t get_le32(const uint8_t *p)
{
#if MCUGW_LE_HOST
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
#else
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
               ((uint32_t)p[3] << 24);
#endif
}

static inline uint64_t get_le64(const uint8_t *p)
{
#if MCUGW_LE_HOST
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
#else
        return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
#endif
}

#endif
