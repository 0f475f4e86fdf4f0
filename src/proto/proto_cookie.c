/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handshake flood resistance after WireGuard (whitepaper §5.4): mac1 lets the gateway drop HS1
 * frames from anyone who does not know its public key with one HMAC, before any Diffie-Hellman;
 * under load a cookie bound to the link, sent encrypted in a COOKIE frame, has to come back as
 * mac2, so only peers that can receive on that link get the budget reserved for them. MAC is
 * HMAC-SHA256 truncated to 16 bytes (the crypto port has SHA-256, not BLAKE2s); the cookie
 * reply uses the port's ChaCha20-Poly1305 under a key derived per random 24-byte nonce instead
 * of XChaCha20, which gives the same "random nonces never collide" property.
 *
 * This file holds what the device needs; the gateway-only half (checking macs, making cookies,
 * writing COOKIE frames) is in proto_responder.c, so that it costs no device flash.
 */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

/* The part of an HS1 frame that mac1 covers ends here; mac2 covers 16 bytes more. */
#define MCUGW_MAC1_OFF(len) ((len)-MCUGW_HS1_MACS_LEN)
#define MCUGW_MAC2_OFF(len) ((len)-MCUGW_MAC_LEN)

static int label_hash(const struct mcugw_crypto *c, const char *label, const uint8_t pub[32],
                      uint8_t out[32])
{
        struct mcugw_iov v[2];

        v[0].base = label;
        v[0].len = MCUGW_LABEL_LEN;
        v[1].base = pub;
        v[1].len = 32;
        return c->sha256(c->ctx, v, 2, out);
}

int mcugw_flood_keys(const struct mcugw_crypto *c, const uint8_t gw_pub[32], uint8_t mac1_key[32],
                     uint8_t cookie_key[32])
{
        int r = 0;

        if (mac1_key)
                r = label_hash(c, MCUGW_LABEL_MAC1, gw_pub, mac1_key);
        if (r == 0 && cookie_key)
                r = label_hash(c, MCUGW_LABEL_COOKIE, gw_pub, cookie_key);
        return r;
}

/* MAC(key, data) = HMAC-SHA256(key, data)[0..16). A 16-byte key (a cookie) is zero-padded to
 * 32, which HMAC does anyway. */
int mcugw_mac16(const struct mcugw_crypto *c, const uint8_t *key, size_t key_len,
                const uint8_t *data, size_t len, uint8_t out[MCUGW_MAC_LEN])
{
        uint8_t k[32], full[32];
        int r;

        memset(k, 0, sizeof(k));
        memcpy(k, key, key_len);
        r = mcugw_hmac_sha256(c, k, data, len, NULL, 0, full);
        if (r == 0)
                memcpy(out, full, MCUGW_MAC_LEN);
        mcugw_wipe(k, sizeof(k));
        mcugw_wipe(full, sizeof(full));
        return r;
}

int mcugw_hs1_set_mac2(const struct mcugw_crypto *c, const uint8_t *cookie, uint8_t *frame,
                       size_t len)
{
        if (!mcugw_hs1_long_enough(len))
                return MCUGW_ETRUNC;
        if (!cookie) {
                memset(frame + MCUGW_MAC2_OFF(len), 0, MCUGW_MAC_LEN);
                return 0;
        }
        return mcugw_mac16(c, cookie, MCUGW_COOKIE_LEN, frame, MCUGW_MAC2_OFF(len),
                           frame + MCUGW_MAC2_OFF(len));
}

/* The AEAD key of one COOKIE frame: HMAC(cookie_key, nonce); its 12-byte nonce is then zero. */
int mcugw_cookie_reply_key(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                           const uint8_t *nonce, uint8_t key[32])
{
        return mcugw_hmac_sha256(c, cookie_key, nonce, MCUGW_COOKIE_NONCE_LEN, NULL, 0, key);
}

int mcugw_cookie_reply_read(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                            const uint8_t mac1[MCUGW_MAC_LEN], const uint8_t *frame, size_t len,
                            uint8_t cookie[MCUGW_COOKIE_LEN])
{
        static const uint8_t zero_nonce[12];
        uint8_t key[32], pt[MCUGW_COOKIE_LEN];
        int r;

        r = mcugw_frame_type(frame, len);
        if (r < 0)
                return r;
        if (r != (int)MCUGW_FRAME_COOKIE)
                return MCUGW_ETYPE;
        if (len != MCUGW_COOKIE_REPLY_LEN)
                return MCUGW_EMALFORMED;
        r = mcugw_cookie_reply_key(c, cookie_key, frame + MCUGW_HDR_LEN, key);
        if (r == 0)
                r = c->aead_open(c->ctx, key, zero_nonce, mac1, MCUGW_MAC_LEN,
                                 frame + MCUGW_HDR_LEN + MCUGW_COOKIE_NONCE_LEN,
                                 MCUGW_COOKIE_LEN + MCUGW_TAG_LEN, pt);
        /* key comes from public values; pt is the cookie the caller keeps anyway */
        if (r == 0)
                memcpy(cookie, pt, MCUGW_COOKIE_LEN);
        return r;
}
