/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cloud/topic.h"

#define ALL (TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE | TOPIC_VAR_STREAM)

static void check_ok(const char *t, unsigned allowed, unsigned required, unsigned whole)
{
        const char *reason = NULL;
        int r = topic_template_check(t, allowed, required, whole, &reason);
        if (r != 0)
                fail_msg("'%s' refused: %s", t, reason);
}

static void check_bad(const char *t, unsigned allowed, unsigned required, unsigned whole,
                      const char *want)
{
        const char *reason = NULL;
        int r = topic_template_check(t, allowed, required, whole, &reason);
        if (r != -EINVAL)
                fail_msg("'%s' accepted", t);
        if (!strstr(reason, want))
                fail_msg("'%s': reason '%s' lacks '%s'", t, reason, want);
}

static void test_template_check(void **state)
{
        check_ok("mcugw/{gateway}/dev/{device}/telemetry/{stream}", ALL, TOPIC_VAR_DEVICE, 0);
        check_ok("mcugw/{gateway}/cmd/{device}", ALL, TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE);
        check_ok("a/b/c/d/e/f/g/h", ALL, 0, 0);
        check_bad("a/b/c/d/e/f/g/h/i", ALL, 0, 0, "8 topic levels");
        check_bad("a/+/b", ALL, 0, 0, "wildcards");
        check_bad("a/#", ALL, 0, 0, "wildcards");
        check_bad("$aws/things/x", ALL, 0, 0, "reserved");
        check_bad("/a", ALL, 0, 0, "must not start");
        check_bad("a//b", ALL, 0, 0, "empty topic level");
        check_bad("a/b/", ALL, 0, 0, "trailing");
        check_bad("", ALL, 0, 0, "empty");
        check_bad("a/{devices}", ALL, 0, 0, "unknown placeholder");
        check_bad("a/{device", ALL, 0, 0, "unknown placeholder");
        check_bad("a/b}", ALL, 0, 0, "unbalanced");
        check_bad("a/{stream}", TOPIC_VAR_GATEWAY, 0, 0, "not allowed");
        check_bad("a/{gateway}", ALL, TOPIC_VAR_DEVICE, 0, "must contain {device}");
        check_bad("a/cmd-{device}", ALL, TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE, "whole topic level");
        check_bad("a/{device}x", ALL, TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE, "whole topic level");
        /* 4 × 64-byte gateway names could exceed 256 bytes. */
        check_bad("{gateway}/{gateway}/{gateway}/{gateway}/x", ALL, 0, 0, "256 bytes");
        check_bad("a/\x01", ALL, 0, 0, "control");
}

static void test_expand(void **state)
{
        char out[TOPIC_MAX_LEN + 1];
        assert_int_equal(topic_expand("mcugw/{gateway}/dev/{device}/telemetry/{stream}", "gw1",
                                      "dev-7", 65535, out, sizeof out),
                         strlen("mcugw/gw1/dev/dev-7/telemetry/65535"));
        assert_string_equal(out, "mcugw/gw1/dev/dev-7/telemetry/65535");
        /* Device ids that would escape their level or add wildcards are refused. */
        assert_int_equal(topic_expand("a/{device}", "g", "x/y", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "+", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "#", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "$SYS", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "a b", 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", NULL, 0, out, sizeof out), -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "0123456789012345678901234567890123", 0,
                                      out, sizeof out),
                         -EINVAL);
        assert_int_equal(topic_expand("a/{device}", "g", "abc", 0, out, 5), -ENAMETOOLONG);
}

static void test_filter_match(void **state)
{
        const char *t = "mcugw/{gateway}/cmd/{device}";
        char out[TOPIC_MAX_LEN + 1], dev[TOPIC_DEVICE_MAX + 1];

        assert_true(topic_filter(t, "gw", out, sizeof out) > 0);
        assert_string_equal(out, "mcugw/gw/cmd/+");
        assert_int_equal(topic_match_device(t, "gw", "mcugw/gw/cmd/dev-1", dev), 0);
        assert_string_equal(dev, "dev-1");
        assert_int_equal(topic_match_device(t, "gw", "mcugw/other/cmd/dev-1", dev), -ENOENT);
        assert_int_equal(topic_match_device(t, "gw", "mcugw/gw/cmd/dev-1/x", dev), -ENOENT);
        assert_int_equal(topic_match_device(t, "gw", "mcugw/gw/cmd", dev), -ENOENT);
        assert_int_equal(topic_match_device(t, "gw", "mcugw/gw/cmd/", dev), -EINVAL);
        assert_int_equal(topic_match_device(t, "gw", "mcugw/gw/cmd/$x", dev), -EINVAL);
        assert_int_equal(topic_match_device("{device}/c", "gw", "d9/c", dev), 0);
        assert_string_equal(dev, "d9");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_template_check),
                cmocka_unit_test(test_expand),
                cmocka_unit_test(test_filter_match),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
