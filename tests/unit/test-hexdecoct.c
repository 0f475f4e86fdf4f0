/* SPDX-License-Identifier: Apache-2.0 */
/* basic/hexdecoct: hex, base64, and the one decoder of keys. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "basic/hexdecoct.h"

static void test_hex(void **state)
{
        const uint8_t in[] = { 0x00, 0x01, 0xab, 0xff };
        char h[2 * sizeof in + 1];
        uint8_t out[sizeof in];

        hexmem(in, sizeof in, h);
        assert_string_equal(h, "0001abff");
        assert_int_equal(unhexmem(h, strlen(h), out, sizeof out), 0);
        assert_memory_equal(in, out, sizeof in);
        assert_int_equal(unhexmem("0001ABFF", 8, out, sizeof out), 0);
        assert_memory_equal(in, out, sizeof in);
        assert_int_equal(unhexmem("0001abf", 7, out, sizeof out), -EINVAL);  /* length */
        assert_int_equal(unhexmem("0001abfg", 8, out, sizeof out), -EINVAL); /* digit */
        assert_int_equal(unhexmem(" 001abff", 8, out, sizeof out), -EINVAL); /* sscanf took it */
        assert_int_equal(unhexmem(NULL, 8, out, sizeof out), -EINVAL);
}

static void test_base64(void **state)
{
        uint8_t out[8];
        char e[16];

        assert_int_equal(unbase64mem("AQID", 4, out, sizeof out), 3);
        assert_int_equal(out[2], 3);
        assert_int_equal(unbase64mem("AQI=", 4, out, sizeof out), 2);
        assert_int_equal(unbase64mem("AQ==", 4, out, sizeof out), 1);
        assert_int_equal(unbase64mem("AR==", 4, out, sizeof out), -EINVAL); /* bits */
        assert_int_equal(unbase64mem("A=QI", 4, out, sizeof out), -EINVAL);
        assert_int_equal(unbase64mem("AQI", 3, out, sizeof out), -EINVAL);
        assert_int_equal(unbase64mem("AQ-D", 4, out, sizeof out), -EINVAL);
        assert_int_equal(unbase64mem("AQIDBAUGBwgJ", 12, out, sizeof out), -ENOSPC);

        /* The encoder agrees with OpenSSL's for every length around a block. */
        for (size_t n = 0; n <= 7; n++) {
                const uint8_t in[7] = { 0xfb, 0xff, 0x00, 0x10, 0x83, 0x7e, 0x41 };
                unsigned char ref[16];
                EVP_EncodeBlock(ref, in, (int)n);
                assert_int_equal(base64mem(in, n, e), strlen((char *)ref));
                assert_string_equal(e, (char *)ref);
                assert_int_equal(unbase64mem(e, strlen(e), out, sizeof out), (int)n);
                assert_memory_equal(out, in, n);
        }
}

static void test_key(void **state)
{
        uint8_t k[KEY_LEN], back[KEY_LEN];
        char b[KEY_BASE64_SIZE], bad[KEY_BASE64_SIZE];

        for (size_t i = 0; i < KEY_LEN; i++)
                k[i] = (uint8_t)(i * 37 + 1);
        key_to_base64(k, b);
        assert_int_equal(strlen(b), KEY_BASE64_LEN);
        assert_int_equal(key_from_base64(b, strlen(b), back), 0);
        assert_memory_equal(k, back, KEY_LEN);

        /* Everything else is refused, with one error. */
        assert_int_equal(key_from_base64(b, KEY_BASE64_LEN - 1, back), -EINVAL);
        memcpy(bad, b, sizeof b);
        bad[10] = '*';
        assert_int_equal(key_from_base64(bad, KEY_BASE64_LEN, back), -EINVAL);
        memcpy(bad, b, sizeof b);
        bad[42] = '=';
        assert_int_equal(key_from_base64(bad, KEY_BASE64_LEN, back), -EINVAL); /* 31 bytes */
        assert_int_equal(key_from_base64("AAAA", 4, back), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hex),
                cmocka_unit_test(test_base64),
                cmocka_unit_test(test_key),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
