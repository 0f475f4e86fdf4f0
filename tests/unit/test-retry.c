/* SPDX-License-Identifier: Apache-2.0 */
/* The one retry policy for cloud requests (basic/retry.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "basic/retry.h"

static const struct retry_policy pol = {
        .first_ms = 500, .max_ms = 3000, .timeout_ms = 5000, .max_tries = 6
};

static void test_backoff(void **state)
{
        (void)state;
        assert_int_equal(retry_backoff_ms(&pol, 0, 12345), 0);
        /* [d/2, d] with d = 500, 1000, 2000, 3000 (capped), 3000 */
        assert_int_equal(retry_backoff_ms(&pol, 1, 0), 250);
        assert_int_equal(retry_backoff_ms(&pol, 1, 250), 500);
        assert_int_equal(retry_backoff_ms(&pol, 1, 251), 250);
        assert_int_equal(retry_backoff_ms(&pol, 2, 0), 500);
        assert_int_equal(retry_backoff_ms(&pol, 3, 1000), 2000);
        assert_int_equal(retry_backoff_ms(&pol, 4, 0), 1500);
        assert_int_equal(retry_backoff_ms(&pol, 40, 1500), 3000);
        for (uint32_t r = 0; r < 100000; r += 7) {
                uint32_t b = retry_backoff_ms(&pol, 3, r * 2654435761u);
                assert_true(b >= 1000 && b <= 2000);
        }
}

static void test_bounded(void **state)
{
        struct retry r;
        uint64_t now = 1000;

        (void)state;
        retry_init(&r, &pol);
        assert_true(retry_due(&r, now));
        for (unsigned i = 1; i < pol.max_tries; i++) {
                assert_true(retry_failed(&r, now, 0));
                assert_false(retry_due(&r, now));
                assert_true(retry_due(&r, r.due_ms));
                now = r.due_ms;
        }
        assert_false(retry_failed(&r, now, 0)); /* the 6th failure is terminal */
        assert_true(retry_exhausted(&r));
        retry_reset(&r);
        assert_false(retry_exhausted(&r));
        assert_true(retry_due(&r, 0));
}

static void test_budget(void **state)
{
        (void)state;
        /* 500 + 1000 + 2000 + 3000 + 3000 */
        assert_int_equal(retry_budget_ms(&pol, false), 9500);
        assert_int_equal(retry_budget_ms(&pol, true), 9500 + 6 * 5000);
        /* The cloud policy as docs/ota.md states it. */
        assert_int_equal(retry_cloud_policy.max_tries, 6);
        assert_int_equal(retry_budget_ms(&retry_cloud_policy, false), 15500);
        assert_int_equal(retry_budget_ms(&retry_cloud_policy, true), 45500);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backoff),
                cmocka_unit_test(test_bounded),
                cmocka_unit_test(test_budget),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
