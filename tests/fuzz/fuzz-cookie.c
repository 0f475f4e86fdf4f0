/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: what a device and the gateway do with an arbitrary frame before any
 * Diffie-Hellman (docs/protocol.md, "Handshake flood resistance"): the device's COOKIE frame
 * parser, against the mac1 of a real HS1 and against the input's own tail, and the gateway's
 * mac1/mac2 checks and cookie answer on the input taken as an HS1. The seed corpus
 * (scripts/gen-vectors.py --corpus) holds a valid COOKIE frame for the fixed keys below.
 * Deps: mcugw_proto_dep, mcugw_crypto_openssl_dep.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcugw/proto.h"
#include "posix_openssl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The responder static key of the test vectors (docs/protocol.md). */
static const uint8_t gw_priv[32] = {
        0x4a, 0x3a, 0xcb, 0xfd, 0xb1, 0x63, 0xde, 0xc6, 0x51, 0xdf, 0xa3,
        0x19, 0x4d, 0xec, 0xe6, 0x76, 0xd4, 0x37, 0x02, 0x9c, 0x62, 0xa4,
        0x08, 0xb4, 0xc5, 0xea, 0x91, 0x14, 0x24, 0x6e, 0x48, 0x93,
};

/* mac1 of MV_HS1 (the HS1 the corpus COOKIE frame answers). */
static const uint8_t vec_mac1[16] = {
        0xed, 0xde, 0xc1, 0xd1, 0x2d, 0xa0, 0xa5, 0x38,
        0xbc, 0x12, 0x18, 0x44, 0x8f, 0x4e, 0x3f, 0xcb,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t gw_pub[32], mac1_key[32], cookie_key[32], secret[32];
        static int init;
        uint8_t cookie[MCUGW_COOKIE_LEN], mine[MCUGW_COOKIE_LEN], reply[MCUGW_COOKIE_REPLY_LEN];
        uint8_t *f;
        int r;

        if (!init) {
                if (mcugw_crypto_openssl.x25519_public(NULL, gw_pub, gw_priv) != 0 ||
                    mcugw_flood_keys(&mcugw_crypto_openssl, gw_pub, mac1_key, cookie_key) != 0)
                        abort();
                memset(secret, 0x5a, sizeof(secret));
                init = 1;
        }
        if (size > MCUGW_FRAME_MAX)
                return 0;
        f = malloc(size ? size : 1);
        if (!f)
                return 0;
        memcpy(f, data, size);

        /* Device side. A cookie comes out only for a frame that authenticates. */
        r = mcugw_cookie_reply_read(&mcugw_crypto_openssl, cookie_key, vec_mac1, f, size, cookie);
        if (r == 0 && size != MCUGW_COOKIE_REPLY_LEN)
                abort();
        if (size >= 16)
                (void)mcugw_cookie_reply_read(&mcugw_crypto_openssl, cookie_key, f + size - 16, f,
                                              size, cookie);

        /* Gateway side: the input as an HS1. */
        r = mcugw_hs1_check_mac1(&mcugw_crypto_openssl, mac1_key, f, size);
        if (r == 0) {
                if (mcugw_cookie_make(&mcugw_crypto_openssl, secret, "link", 4, mine) != 0)
                        abort();
                (void)mcugw_hs1_check_mac2(&mcugw_crypto_openssl, mine, f, size);
                r = mcugw_cookie_reply_write(&mcugw_crypto_openssl, cookie_key, f, size, mine,
                                             reply, sizeof(reply));
                /* Our own answer must parse back into the same cookie. */
                if (r != (int)MCUGW_COOKIE_REPLY_LEN ||
                    mcugw_cookie_reply_read(&mcugw_crypto_openssl, cookie_key,
                                            f + size - MCUGW_HS1_MACS_LEN, reply, sizeof(reply),
                                            cookie) != 0 ||
                    memcmp(cookie, mine, sizeof(cookie)) != 0)
                        abort();
                if (mcugw_hs1_set_mac2(&mcugw_crypto_openssl, mine, f, size) != 0 ||
                    mcugw_hs1_check_mac2(&mcugw_crypto_openssl, mine, f, size) != 0)
                        abort();
        }
        free(f);
        return 0;
}
