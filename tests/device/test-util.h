/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the device/protocol unit tests (header-only, each test is one file). */
#ifndef MCUGW_TEST_UTIL_H
#define MCUGW_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mcugw/proto.h"

#ifdef MCUGW_TEST_PSA
#include "psa_mbedtls.h"
#define TEST_CRYPTO_BASE (&mcugw_crypto_psa)
#else
#include "posix_openssl.h"
#define TEST_CRYPTO_BASE (&mcugw_crypto_openssl)
#endif

static inline size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
        size_t n = 0;
        unsigned v;

        while (hex[0] && hex[1]) {
                if (sscanf(hex, "%2x", &v) != 1)
                        break;
                if (n >= cap)
                        fail_msg("unhex: buffer too small");
                out[n++] = (uint8_t)v;
                hex += 2;
        }
        return n;
}

static inline void tohex(const uint8_t *p, size_t n, char *out)
{
        size_t i;

        for (i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", p[i]);
        out[2 * n] = '\0';
}

/* Compare bytes against a hex string, printing both on mismatch. */
#define assert_hex_equal(buf, len, hex)                                                            \
        do {                                                                                       \
                static char got_[8192];                                                            \
                tohex((buf), (len), got_);                                                         \
                assert_string_equal(got_, (hex));                                                  \
        } while (0)

/*
 * Scripted randomness: a crypto table that forwards everything to the real port but serves
 * "random" bytes from a queue first (fixed ephemerals and session ids for test vectors).
 */
struct scripted_rng {
        uint8_t bytes[256];
        size_t len;
        size_t pos;
};

static struct scripted_rng test_rng;

static inline int scripted_random(void *ctx, uint8_t *out, size_t len)
{
        struct scripted_rng *s = &test_rng;

        (void)ctx;
        if (s->pos + len <= s->len) {
                memcpy(out, s->bytes + s->pos, len);
                s->pos += len;
                return 0;
        }
        return TEST_CRYPTO_BASE->random(TEST_CRYPTO_BASE->ctx, out, len);
}

static inline void rng_push_hex(const char *hex)
{
        test_rng.len +=
                unhex(hex, test_rng.bytes + test_rng.len, sizeof(test_rng.bytes) - test_rng.len);
}

static inline void rng_reset(void)
{
        memset(&test_rng, 0, sizeof(test_rng));
}

static inline struct mcugw_crypto test_crypto(void)
{
        struct mcugw_crypto c = *TEST_CRYPTO_BASE;

        c.random = scripted_random;
        return c;
}

static inline void test_keypair(const struct mcugw_crypto *c, uint8_t priv[32], uint8_t pub[32])
{
        assert_int_equal(TEST_CRYPTO_BASE->random(TEST_CRYPTO_BASE->ctx, priv, 32), 0);
        assert_int_equal(c->x25519_public(c->ctx, pub, priv), 0);
}

#endif
