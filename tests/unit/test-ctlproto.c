/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ctl/ctlproto.h"

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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid),
                cmocka_unit_test(test_invalid),
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_args),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
