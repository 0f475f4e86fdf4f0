/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ctl/ctlproto.h"
#include "basic/macro.h"
#include "basic/time-util.h"

static int parse(const char *s, struct ctl_request *r, const char **err)
{
        return ctlproto_parse_request(s, strlen(s), r, err);
}

static void test_valid(void **state)
{
        struct ctl_request r;
        const char *err = NULL;

        assert_int_equal(parse("{\"cmd\":\"status\"}", &r, &err), 0);
        assert_string_equal(r.cmd, "status");
        assert_true(json_is_object(r.args));
        assert_int_equal(json_object_size(r.args), 0);
        ctl_request_done(&r);

        assert_int_equal(parse("{\"cmd\":\"audit.tail\",\"args\":{\"n\":5}}", &r, &err), 0);
        assert_string_equal(r.cmd, "audit.tail");
        assert_int_equal(json_integer_value(json_object_get(r.args, "n")), 5);
        ctl_request_done(&r);
}

static void test_invalid(void **state)
{
        static const char *const bad[] = {
                "",
                "not json",
                "[]",
                "\"status\"",
                "{}",
                "{\"cmd\":5}",
                "{\"cmd\":\"\"}",
                "{\"cmd\":\"Status\"}",
                "{\"cmd\":\"a b\"}",
                "{\"cmd\":\"status\",\"args\":[]}",
                "{\"cmd\":\"status\",\"extra\":1}",
                "{\"cmd\":\"status\",\"cmd\":\"reload\"}",
                "{\"cmd\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                "{\"cmd\":\"st\\u0000atus\"}",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct ctl_request r;
                const char *err = NULL;
                int q = parse(bad[i], &r, &err);
                if (q == 0)
                        fail_msg("accepted: %s", bad[i]);
                assert_non_null(err);
        }
}

static void test_roundtrip(void **state)
{
        size_t len = 0;
        char *s;
        json_t *data = NULL;
        char *err = NULL;

        s = ctlproto_ok(json_pack("{si}", "x", 3), &len);
        assert_int_equal(s[len - 1], '\n');
        assert_int_equal(ctlproto_parse_response(s, len - 1, &data, &err), 1);
        assert_int_equal(json_integer_value(json_object_get(data, "x")), 3);
        json_decref(data);
        free(s);

        s = ctlproto_error("EPERM", "nope", &len);
        assert_int_equal(ctlproto_parse_response(s, len - 1, &data, &err), 0);
        assert_string_equal(err, "nope");
        free(err);
        free(s);

        s = ctlproto_event("audit", json_integer(1), &len);
        assert_int_equal(ctlproto_parse_response(s, len - 1, &data, &err), 2);
        assert_string_equal(err, "audit");
        free(err);
        json_decref(data);
        free(s);

        assert_int_equal(ctlproto_parse_response("{}", 2, &data, &err), -EBADMSG);
}

static void test_args(void **state)
{
        json_t *a = json_pack("{si ss sb}", "n", 7, "s", "x", "b", 1);
        const char *err, *s;
        long long n;
        bool b;

        assert_int_equal(ctl_arg_int(a, "n", 0, 10, 1, &n, &err), 0);
        assert_int_equal(n, 7);
        assert_int_equal(ctl_arg_int(a, "n", 0, 5, 1, &n, &err), -EINVAL);
        assert_int_equal(ctl_arg_int(a, "missing", 0, 5, 3, &n, &err), 0);
        assert_int_equal(n, 3);
        assert_int_equal(ctl_arg_int(a, "s", 0, 5, 3, &n, &err), -EINVAL);
        assert_int_equal(ctl_arg_bool(a, "b", false, &b, &err), 0);
        assert_true(b);
        assert_int_equal(ctl_arg_string(a, "s", 4, &s, &err), 0);
        assert_string_equal(s, "x");
        assert_int_equal(ctl_arg_string(a, "n", 4, &s, &err), -EINVAL);
        json_decref(a);
}

/* The chunked array reply is byte for byte what ctlproto_ok() sends for the same array. */
static char *chunked(json_t *arr, size_t per_chunk, size_t *ret_len)
{
        size_t n = json_array_size(arr), len = strlen(CTLPROTO_ARRAY_HEAD);
        char *out = strdup(CTLPROTO_ARRAY_HEAD);

        for (size_t i = 0; i < n || i == 0; i += per_chunk) {
                json_t *part = json_array();
                size_t clen = 0;
                char *c;
                for (size_t k = i; k < n && k < i + per_chunk; k++)
                        json_array_append(part, json_array_get(arr, k));
                c = ctlproto_array_chunk(part, i == 0, &clen);
                assert_non_null(c);
                out = realloc(out, len + clen + 1);
                memcpy(out + len, c, clen + 1);
                len += clen;
                free(c);
                if (n == 0)
                        break;
        }
        out = realloc(out, len + strlen(CTLPROTO_ARRAY_TAIL) + 1);
        strcpy(out + len, CTLPROTO_ARRAY_TAIL);
        *ret_len = len + strlen(CTLPROTO_ARRAY_TAIL);
        return out;
}

static void test_array_chunks(void **state)
{
        json_t *arr = json_pack("[{ss si} s [i,{s[]}] i {}]", "a", "x,]}\"\\", "b", 1, "str\n,", 1,
                                "q", 7);
        for (size_t per = 1; per <= 6; per++) {
                size_t len = 0, olen = 0;
                char *c = chunked(arr, per, &len);
                char *o = ctlproto_ok(json_incref(arr), &olen);
                assert_int_equal(len, olen);
                assert_memory_equal(c, o, len);
                free(c);
                free(o);
        }
        {
                json_t *empty = json_array();
                size_t len = 0, olen = 0;
                char *c = chunked(empty, 3, &len);
                char *o = ctlproto_ok(json_incref(empty), &olen);
                assert_string_equal(c, o);
                free(c);
                free(o);
                json_decref(empty);
        }
        json_decref(arr);
}

/* Split a reply fed in pieces of every size; the elements come out whole and in order. */
static void test_split_array(void **state)
{
        json_t *arr = json_pack("[{ss si} s [i,{s[]}] i {} s]", "a", "x,]}\"\\[{", "b", 1, "str,]",
                                1, "q", 7, "");
        size_t olen = 0;
        char *o = ctlproto_ok(json_incref(arr), &olen);
        size_t hl = strlen(CTLPROTO_ARRAY_HEAD);

        assert_memory_equal(o, CTLPROTO_ARRAY_HEAD, hl);
        for (size_t piece = 1; piece <= olen; piece++) {
                struct ctlproto_splitter sp = { 0 };
                char buf[512];
                size_t have = 0, fed = hl, got = 0;
                bool end = false;

                while (!end) {
                        size_t len = 0, used = 0;
                        int k = ctlproto_split_array(&sp, buf, have, &len, &used);
                        assert_true(k >= 0);
                        if (k == CTLPROTO_SPLIT_MORE) {
                                size_t n = MIN(piece, olen - fed);
                                assert_true(n > 0);
                                memcpy(buf + have, o + fed, n);
                                have += n;
                                fed += n;
                                continue;
                        }
                        if (k == CTLPROTO_SPLIT_ELEMENT) {
                                json_t *e = json_loadb(buf, len, JSON_DECODE_ANY, NULL);
                                assert_non_null(e);
                                assert_true(json_equal(e, json_array_get(arr, got)));
                                json_decref(e);
                                got++;
                        } else
                                end = true;
                        memmove(buf, buf + used, have - used);
                        have -= used;
                }
                assert_int_equal(got, json_array_size(arr));
                assert_int_equal(fed, olen);
                assert_int_equal(have, 0);
        }
        free(o);
        json_decref(arr);

        {
                struct ctlproto_splitter sp = { 0 };
                size_t len, used;
                assert_int_equal(ctlproto_split_array(&sp, "]}\n", 3, &len, &used),
                                 CTLPROTO_SPLIT_END);
                assert_int_equal(used, 3);
                sp = (struct ctlproto_splitter){ 0 };
                assert_int_equal(ctlproto_split_array(&sp, "1}", 2, &len, &used), -EBADMSG);
                sp = (struct ctlproto_splitter){ 0 };
                assert_int_equal(ctlproto_split_array(&sp, "\"a\nb\"]", 7, &len, &used), -EBADMSG);
                sp = (struct ctlproto_splitter){ 0 };
                assert_int_equal(ctlproto_split_array(&sp, "]x", 2, &len, &used), -EBADMSG);
        }
}

/* The time convention: NAME beside every NAME_us, ISO 8601 UTC with milliseconds, null for
 * never; nested objects and arrays too; a twin already there and other members left alone. */
static void test_iso_times(void **state)
{
        char buf[ISO8601_MAX];
        json_t *o = json_pack("{sI sI s{sn sI} s[{sI}] ss sI}", "ts_us",
                              (json_int_t)1796566370123456, "last_seen_us", (json_int_t)0, "inner",
                              "x_us", "accepted_us", (json_int_t)1000, "list", "created_us",
                              (json_int_t)999999, "kept_us", "text", "ts_ms", (json_int_t)5);

        assert_int_equal(format_iso8601_usec(buf, 1796566370123456), 0);
        assert_string_equal(buf, "2026-12-06T14:12:50.123Z");
        assert_int_equal(format_iso8601_usec(buf, 0), -EINVAL);
        assert_int_equal(format_iso8601_usec(buf, -5), -EINVAL);

        ctl_json_add_iso_times(o);
        assert_string_equal(json_string_value(json_object_get(o, "ts")),
                            "2026-12-06T14:12:50.123Z");
        assert_true(json_is_null(json_object_get(o, "last_seen")));
        assert_true(json_is_null(json_object_get(json_object_get(o, "inner"), "x")));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(o, "inner"), "accepted")),
                "1970-01-01T00:00:00.001Z");
        assert_string_equal(json_string_value(json_object_get(
                                    json_array_get(json_object_get(o, "list"), 0), "created")),
                            "1970-01-01T00:00:00.999Z");
        /* A string NAME_us is not an instant; NAME_ms is a duration: neither gets a twin. */
        assert_null(json_object_get(o, "kept"));
        assert_null(json_object_get(o, "ts_m"));
        assert_int_equal(json_object_size(o), 8);
        json_decref(o);

        /* More instants in one object than are collected at once. */
        o = json_object();
        for (int i = 0; i < 40; i++) {
                char k[16];
                snprintf(k, sizeof k, "t%d_us", i);
                json_object_set_new(o, k, json_integer(1000000 * (i + 1)));
        }
        ctl_json_add_iso_times(o);
        assert_int_equal(json_object_size(o), 80);
        assert_string_equal(json_string_value(json_object_get(o, "t39")),
                            "1970-01-01T00:00:40.000Z");

        /* Only the member asked for, not nested ones. */
        json_decref(o);
        o = json_pack("{sI s{sI}}", "ts_us", (json_int_t)2000000, "payload", "t_us", (json_int_t)1);
        ctl_json_set_iso(o, "ts_us");
        assert_string_equal(json_string_value(json_object_get(o, "ts")),
                            "1970-01-01T00:00:02.000Z");
        assert_null(json_object_get(json_object_get(o, "payload"), "t"));
        json_decref(o);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid),        cmocka_unit_test(test_invalid),
                cmocka_unit_test(test_roundtrip),    cmocka_unit_test(test_args),
                cmocka_unit_test(test_array_chunks), cmocka_unit_test(test_split_array),
                cmocka_unit_test(test_iso_times),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
