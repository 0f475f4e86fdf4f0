/* SPDX-License-Identifier: Apache-2.0 */
/* The pure parts of the relay: the batch envelope and the token bucket. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "cloud/envelope.h"

static void test_envelope_decodes(void **state)
{
        struct envelope e = { 0 };
        const uint8_t bin[] = { 0, 1, 2, 0xff, '"', '\\' };
        json_error_t jerr;
        const char *text;
        unsigned char dec[16];
        json_t *o, *m;
        size_t len;

        assert_int_equal(envelope_begin(&e, "gw-1", 4096), 0);
        assert_int_equal(envelope_add(&e, "dev\"1", 7, 42, 1700000000123LL, bin, sizeof bin), 0);
        assert_int_equal(envelope_add(&e, "dev2", 65535, 4294967295u, 1, NULL, 0), 0);
        text = envelope_finish(&e, &len);
        assert_int_equal(strlen(text), len);
        assert_true(len <= 4096);
        o = json_loadb(text, len, 0, &jerr);
        if (!o)
                fail_msg("not JSON: %s: %s", jerr.text, text);
        assert_int_equal(json_integer_value(json_object_get(o, "v")), 1);
        assert_string_equal(json_string_value(json_object_get(o, "gw")), "gw-1");
        assert_int_equal(json_integer_value(json_object_get(o, "n")), 2);
        m = json_array_get(json_object_get(o, "msgs"), 0);
        assert_string_equal(json_string_value(json_object_get(m, "d")), "dev\"1");
        assert_int_equal(json_integer_value(json_object_get(m, "s")), 7);
        assert_int_equal(json_integer_value(json_object_get(m, "q")), 42);
        assert_int_equal(json_integer_value(json_object_get(m, "t")), 1700000000123LL);
        assert_int_equal(
                EVP_DecodeBlock(
                        dec, (const unsigned char *)json_string_value(json_object_get(m, "p")), 8),
                6);
        assert_memory_equal(dec, bin, sizeof bin);
        m = json_array_get(json_object_get(o, "msgs"), 1);
        assert_int_equal(json_integer_value(json_object_get(m, "q")), 4294967295LL);
        assert_string_equal(json_string_value(json_object_get(m, "p")), "");
        json_decref(o);
        envelope_free(&e);
}

static void test_envelope_limit(void **state)
{
        struct envelope e = { 0 };
        uint8_t p[100];
        size_t len, n = 0;
        const char *text;
        int r;

        memset(p, 'a', sizeof p);
        assert_int_equal(envelope_begin(&e, "gw", 2000), 0);
        while ((r = envelope_add(&e, "d", 1, (uint32_t)n, 5, p, sizeof p)) == 0)
                n++;
        assert_int_equal(r, -ENOSPC);
        assert_true(n >= 10); /* ~170 bytes per entry */
        text = envelope_finish(&e, &len);
        assert_true(len <= 2000);
        {
                json_t *o = json_loadb(text, len, 0, NULL);
                assert_non_null(o);
                json_decref(o);
        }
        /* Too big for any envelope of this size. */
        assert_int_equal(envelope_begin(&e, "gw", 2000), 0);
        assert_int_equal(envelope_add(&e, "d", 1, 1, 5, (uint8_t[2000]){ 0 }, 2000), -EMSGSIZE);
        assert_int_equal(envelope_begin(&e, "gw", 10), -EMSGSIZE);
        envelope_free(&e);
}

static void test_entry_size_bound(void **state)
{
        /* The bound used for quota and batching decisions is never below the real size. */
        for (size_t l = 0; l < 200; l += 7) {
                struct envelope e = { 0 };
                uint8_t p[200] = { 0 };
                size_t before;
                assert_int_equal(envelope_begin(&e, "g", 100000), 0);
                assert_int_equal(envelope_add(&e, "x", 1, 1, 1, p, l), 0);
                before = e.len;
                assert_int_equal(envelope_add(&e, "dev-\\x", 65535, 4294967295u, -1, p, l), 0);
                assert_true(e.len - before <= envelope_entry_size("dev-\\x", l));
                envelope_free(&e);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_envelope_decodes),
                cmocka_unit_test(test_envelope_limit),
                cmocka_unit_test(test_entry_size_bound),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
