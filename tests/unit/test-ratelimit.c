/* SPDX-License-Identifier: Apache-2.0 */
/* basic/ratelimit: the token bucket (try, and delay + take) and the audit window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "basic/ratelimit.h"

#define MS 1000u /* µs */

static void test_try(void **state)
{
        struct ratelimit b;
        int n = 0;

        /* 2/s, burst 4 (handshakes). */
        ratelimit_init(&b, 2, 4, 1000 * MS);
        while (ratelimit_try(&b, 1, 1000 * MS))
                n++;
        assert_int_equal(n, 4);                        /* the burst */
        assert_false(ratelimit_try(&b, 1, 1400 * MS)); /* 0.8 tokens */
        assert_true(ratelimit_try(&b, 1, 1500 * MS));  /* 1.0 */
        assert_false(ratelimit_try(&b, 1, 1500 * MS));
        /* A long pause refills to the burst only. */
        n = 0;
        while (ratelimit_try(&b, 1, 100000 * MS))
                n++;
        assert_int_equal(n, 4);
        /* Time going backwards takes nothing and gives nothing. */
        assert_false(ratelimit_try(&b, 1, 50 * MS));

        /* Bytes (BLE notifications): 1000 B/s, burst 2000; a no costs nothing. */
        ratelimit_init(&b, 1000, 2000, 0);
        assert_true(ratelimit_try(&b, 1500, 0));
        assert_false(ratelimit_try(&b, 600, 0)); /* 500 left */
        assert_true(ratelimit_try(&b, 500, 0));
        assert_false(ratelimit_try(&b, 1, 0));
        assert_true(ratelimit_try(&b, 100, 100 * MS)); /* 100 ms: 100 bytes */
        assert_false(ratelimit_try(&b, 1, 100 * MS));
        assert_false(ratelimit_try(&b, 2001, 1000000 * MS)); /* more than the burst: never */
        assert_true(ratelimit_try(&b, 2000, 1000000 * MS));

        /* Rate 0: unlimited. */
        ratelimit_init(&b, 0, 0, 0);
        for (int i = 0; i < 1000; i++)
                assert_true(ratelimit_try(&b, 1e6, 0));
}

static void test_pacing(void **state)
{
        struct ratelimit b;
        uint64_t t = 1000000, sent = 0;

        /* 100/s with a burst of 1: over 10 s of constant demand, ~1000 go. */
        ratelimit_init(&b, 100, 1, t);
        for (uint64_t now = t; now < t + 10000000; now += 1000)
                if (ratelimit_delay(&b, 1, now) == 0) {
                        ratelimit_take(&b, 1, now);
                        sent++;
                }
        assert_in_range(sent, 999, 1002);

        /* A request bigger than the burst goes once the bucket is full, then the debt is paid
         * before the next: the long-run rate holds. */
        ratelimit_init(&b, 1000, 100, t);
        assert_int_equal(ratelimit_delay(&b, 5000, t), 0);
        ratelimit_take(&b, 5000, t);
        assert_in_range(ratelimit_delay(&b, 1, t), 4900000, 5002000);
        assert_int_equal(ratelimit_delay(&b, 1, t + 5000000), 0);

        /* rate 0: unlimited. */
        ratelimit_init(&b, 0, 0, t);
        ratelimit_take(&b, 1e9, t);
        assert_int_equal(ratelimit_delay(&b, 1e9, t), 0);
}

static void test_window(void **state)
{
        struct ratelimit_window l;
        unsigned pass = 0;

        ratelimit_window_init(&l, 3, 60000 * MS, 0);
        for (int i = 0; i < 10; i++)
                pass += ratelimit_window_allow(&l, 1000 * MS);
        assert_int_equal(pass, 3);
        assert_int_equal(ratelimit_window_roll(&l, 59999 * MS), 0); /* window not over */
        assert_int_equal(ratelimit_window_roll(&l, 60000 * MS), 7); /* the suppressed */
        assert_int_equal(ratelimit_window_roll(&l, 60001 * MS), 0);
        pass = 0;
        for (int i = 0; i < 5; i++)
                pass += ratelimit_window_allow(&l, 61000 * MS);
        assert_int_equal(pass, 3);
        /* A window that suppressed nothing starts over by itself. */
        ratelimit_window_init(&l, 1, 1000 * MS, 0);
        assert_true(ratelimit_window_allow(&l, 0));
        assert_true(ratelimit_window_allow(&l, 1000 * MS));
        /* A limit of 0 suppresses everything but still counts. */
        ratelimit_window_init(&l, 0, 60000 * MS, 0);
        assert_false(ratelimit_window_allow(&l, 1 * MS));
        assert_int_equal(ratelimit_window_roll(&l, 70000 * MS), 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_try),
                cmocka_unit_test(test_pacing),
                cmocka_unit_test(test_window),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
