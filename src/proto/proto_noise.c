/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Noise_IK_25519_ChaChaPoly_SHA256 (Noise revision 34): the symmetric state and the two
 * handshake messages, plus the small helpers (wipe, constant-time compare) the core shares.
 * HMAC-SHA256 and HKDF are built here from the port's one-shot SHA-256 over a scatter list.
 */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

void mcugw_wipe(void *p, size_t len)
{
        volatile uint8_t *v = p;

        while (len--)
                *v++ = 0;
}

int mcugw_ct_equal(const void *a, const void *b, size_t len)
{
        const uint8_t *x = a, *y = b;
        uint8_t d = 0;
        size_t i;

        for (i = 0; i < len; i++)
                d |= (uint8_t)(x[i] ^ y[i]);
        return d == 0;
}

const char *mcugw_link_reason_str(unsigned reason)
{
        static const char *const names[] = {
                "first", "nosession", "timeout", "rekey", "app", "line"
        };

        return reason <= MCUGW_LINK_REASON_MAX ? names[reason] : "unknown";
}

const char *mcugw_strerror(int code)
{
        switch (code) {
        case MCUGW_OK: return "success";
        case MCUGW_EINVAL: return "invalid argument";
        case MCUGW_ENOSPC: return "buffer too small";
        case MCUGW_ESTATE: return "invalid state";
        case MCUGW_EAGAIN: return "try again";
        case MCUGW_ECRYPTO: return "crypto failure";
        case MCUGW_EIO: return "I/O failure";
        case MCUGW_ECRC: return "CRC mismatch";
        case MCUGW_ECOBS: return "malformed COBS";
        case MCUGW_EOVERSIZE: return "frame too large";
        case MCUGW_ERUNT: return "frame too short";
        case MCUGW_EVERSION: return "unsupported version";
        case MCUGW_ETYPE: return "unexpected type";
        case MCUGW_EMALFORMED: return "malformed";
        case MCUGW_ETRUNC: return "truncated";
        case MCUGW_EAUTH: return "authentication failed";
        case MCUGW_EREPLAY: return "replayed counter";
        case MCUGW_ETOOOLD: return "counter outside replay window";
        case MCUGW_ESESSION: return "unknown session";
        case MCUGW_EREKEY: return "counter limit reached";
        case MCUGW_EDH: return "invalid public key";
        case MCUGW_EREJECTED: return "device rejected";
        case MCUGW_ETOOBIG: return "message too big for peer";
        case MCUGW_ESTALE: return "handshake timestamp not newer (replay)";
        case MCUGW_EDUP: return "duplicate frame";
        default: return "unknown error";
        }
}

static int sha256v(const struct mcugw_crypto *c, const struct mcugw_iov *v, size_t n,
                   uint8_t out[32])
{
        return c->sha256(c->ctx, v, n, out);
}

/* HMAC-SHA256 with a 32-byte key over up to two data pieces. */
static int hmac2(const struct mcugw_crypto *c, const uint8_t key[32], const void *d1, size_t l1,
                 const void *d2, size_t l2, uint8_t out[32])
{
        uint8_t pad[64], inner[32];
        struct mcugw_iov v[3];
        size_t i;
        int r;

        for (i = 0; i < 64; i++)
                pad[i] = (uint8_t)((i < 32 ? key[i] : 0) ^ 0x36);
        v[0].base = pad;
        v[0].len = 64;
        v[1].base = d1;
        v[1].len = l1;
        v[2].base = d2;
        v[2].len = l2;
        r = sha256v(c, v, 3, inner);
        if (r == 0) {
                for (i = 0; i < 64; i++)
                        pad[i] ^= 0x36 ^ 0x5c;
                v[1].base = inner;
                v[1].len = 32;
                r = sha256v(c, v, 2, out);
        }
        mcugw_wipe(pad, sizeof(pad));
        mcugw_wipe(inner, sizeof(inner));
        return r;
}

int mcugw_hmac_sha256(const struct mcugw_crypto *c, const uint8_t key[32], const void *d1,
                      size_t l1, const void *d2, size_t l2, uint8_t out[32])
{
        return hmac2(c, key, d1, l1, d2, l2, out);
}

/* Noise HKDF with two outputs; out1/out2 may alias ck. */
static int hkdf2(const struct mcugw_crypto *c, const uint8_t ck[32], const uint8_t *ikm,
                 size_t ikm_len, uint8_t out1[32], uint8_t out2[32])
{
        static const uint8_t one = 1, two = 2;
        uint8_t prk[32], o1[32];
        int r;

        r = hmac2(c, ck, ikm, ikm_len, NULL, 0, prk);
        if (r == 0)
                r = hmac2(c, prk, &one, 1, NULL, 0, o1);
        if (r == 0)
                r = hmac2(c, prk, o1, 32, &two, 1, out2);
        if (r == 0)
                memcpy(out1, o1, 32);
        mcugw_wipe(prk, sizeof(prk));
        mcugw_wipe(o1, sizeof(o1));
        return r;
}

int mcugw_noise_mix_hash(struct mcugw_noise *hs, const void *data, size_t len)
{
        struct mcugw_iov v[2] = { { hs->h, 32 }, { data, len } };

        return sha256v(hs->crypto, v, 2, hs->h);
}

static int mix_key(struct mcugw_noise *hs, const uint8_t ikm[32])
{
        int r = hkdf2(hs->crypto, hs->ck, ikm, 32, hs->ck, hs->k);

        hs->n = 0;
        hs->has_k = r == 0;
        return r;
}

static void make_nonce(uint8_t nonce[12], uint64_t n)
{
        memset(nonce, 0, 4);
        put_le64(nonce + 4, n);
}

int mcugw_noise_encrypt_and_hash(struct mcugw_noise *hs, const uint8_t *p, size_t len, uint8_t *out)
{
        uint8_t nonce[12];
        int r;

        if (!hs->has_k)
                return MCUGW_ESTATE; /* IK: every encrypted field comes after a DH */
        make_nonce(nonce, hs->n);
        r = hs->crypto->aead_seal(hs->crypto->ctx, hs->k, nonce, hs->h, 32, p, len, out);
        if (r < 0)
                return r;
        hs->n++;
        return mcugw_noise_mix_hash(hs, out, len + MCUGW_TAG_LEN);
}

/* @p out may equal @p c (in place): the hash of the ciphertext is taken first. */
int mcugw_noise_decrypt_and_hash(struct mcugw_noise *hs, const uint8_t *c, size_t len, uint8_t *out)
{
        struct mcugw_iov v[2] = { { hs->h, 32 }, { c, len } };
        uint8_t nonce[12], newh[32];
        int r;

        if (!hs->has_k)
                return MCUGW_ESTATE; /* IK: every encrypted field comes after a DH */
        if (len < MCUGW_TAG_LEN)
                return MCUGW_ETRUNC;
        r = sha256v(hs->crypto, v, 2, newh);
        if (r < 0)
                return r;
        make_nonce(nonce, hs->n);
        r = hs->crypto->aead_open(hs->crypto->ctx, hs->k, nonce, hs->h, 32, c, len, out);
        if (r < 0)
                return r == MCUGW_EAUTH ? r : MCUGW_EAUTH;
        hs->n++;
        memcpy(hs->h, newh, 32);
        return 0;
}

int mcugw_noise_dh_mix(struct mcugw_noise *hs, const uint8_t priv[32], const uint8_t pub[32])
{
        uint8_t shared[32], any = 0;
        int r, i;

        r = hs->crypto->x25519(hs->crypto->ctx, shared, priv, pub);
        /* All zero (a low-order public key): constant time, no table of zeros to compare with. */
        for (i = 0; i < 32; i++)
                any |= shared[i];
        if (r == 0 && !any)
                r = MCUGW_EDH;
        if (r == 0)
                r = mix_key(hs, shared);
        mcugw_wipe(shared, sizeof(shared));
        return r;
}

int mcugw_noise_gen_ephemeral(struct mcugw_noise *hs, uint8_t pub[32])
{
        int r = hs->crypto->random(hs->crypto->ctx, hs->e_priv, 32);

        if (r == 0)
                r = hs->crypto->x25519_public(hs->crypto->ctx, pub, hs->e_priv);
        return r < 0 ? MCUGW_ECRYPTO : 0;
}

void mcugw_noise_wipe(struct mcugw_noise *hs)
{
        const struct mcugw_crypto *c = hs->crypto;

        mcugw_wipe(hs, sizeof(*hs));
        hs->crypto = c;
}

int mcugw_noise_init(struct mcugw_noise *hs, const struct mcugw_crypto *c, const uint8_t *prologue,
                     size_t prologue_len, const uint8_t rs_pub[32])
{
        int r;

        mcugw_wipe(hs, sizeof(*hs));
        hs->crypto = c;
        /* The protocol name is exactly HASHLEN bytes, so h = name without hashing. */
        memcpy(hs->h, MCUGW_NOISE_PROTOCOL_NAME, 32);
        memcpy(hs->ck, hs->h, 32);
        memcpy(hs->rs, rs_pub, 32);
        r = mcugw_noise_mix_hash(hs, prologue, prologue_len);
        if (r == 0)
                r = mcugw_noise_mix_hash(hs, rs_pub, 32);
        return r;
}

int mcugw_noise_write_msg1(struct mcugw_noise *hs, const uint8_t s_priv[32],
                           const uint8_t s_pub_cached[32], const uint8_t *payload,
                           size_t payload_len, uint8_t *out, size_t cap)
{
        uint8_t s_pub[32];
        size_t total = 96 + payload_len;
        int r;

        if (cap < total)
                return MCUGW_ENOSPC;
        r = mcugw_noise_gen_ephemeral(hs, out); /* e */
        if (r == 0)
                r = mcugw_noise_mix_hash(hs, out, 32);
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, hs->e_priv, hs->rs); /* es */
        if (r == 0 && s_pub_cached)
                memcpy(s_pub, s_pub_cached, 32);
        else if (r == 0)
                r = hs->crypto->x25519_public(hs->crypto->ctx, s_pub, s_priv) < 0 ? MCUGW_ECRYPTO
                                                                                  : 0;
        if (r == 0)
                r = mcugw_noise_encrypt_and_hash(hs, s_pub, 32, out + 32); /* s */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, s_priv, hs->rs); /* ss */
        if (r == 0)
                r = mcugw_noise_encrypt_and_hash(hs, payload, payload_len, out + 80);
        if (r < 0) {
                mcugw_noise_wipe(hs);
                return r;
        }
        return (int)total;
}

int mcugw_noise_read_msg2(struct mcugw_noise *hs, const uint8_t s_priv[32], uint8_t *msg,
                          size_t len, uint8_t *payload, size_t cap)
{
        struct mcugw_noise saved;
        int r;

        if (len < 48)
                return MCUGW_ETRUNC;
        if (cap < len - 48)
                return MCUGW_ENOSPC;
        saved = *hs;
        memcpy(hs->re, msg, 32);
        r = mcugw_noise_mix_hash(hs, hs->re, 32); /* e */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, hs->e_priv, hs->re); /* ee */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, s_priv, hs->re); /* se */
        if (r == 0)
                r = mcugw_noise_decrypt_and_hash(hs, msg + 32, len - 32, payload);
        /* A forged message 2 must not kill the pending handshake: roll back. */
        if (r < 0)
                *hs = saved;
        mcugw_wipe(&saved, sizeof(saved));
        return r < 0 ? r : (int)(len - 48);
}

int mcugw_noise_split(struct mcugw_noise *hs, uint8_t k_i2r[32], uint8_t k_r2i[32],
                      uint8_t hash[32])
{
        int r;

        r = hkdf2(hs->crypto, hs->ck, NULL, 0, k_i2r, k_r2i);
        if (r == 0 && hash)
                memcpy(hash, hs->h, 32);
        mcugw_noise_wipe(hs);
        return r;
}
