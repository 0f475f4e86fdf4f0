/* SPDX-License-Identifier: Apache-2.0 */
/* The cloud session's pure parts: the pacing of every publish (cloud/pacer.c, on a clock of our
 * own) and the subscription map (cloud/submap.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cloud/pacer.h"
#include "cloud/submap.h"

#define MS 1000u /* µs */
#define T0 (1000 * MS)

static void test_control_now_then_queued(void **state)
{
        struct pacer p;
        struct pacer_msg m;
        uint64_t d;

        assert_int_equal(pacer_init(&p, 10, 0, 0, 0, T0), 0);
        /* The burst (one publish at 10/s) goes at once, the next waits its 100 ms. */
        assert_int_equal(pacer_control(&p, "a", "1", 1, T0), 1);
        assert_int_equal(pacer_control(&p, "b", "22", 2, T0), 0);
        assert_int_equal(pacer_control(&p, "c", "333", 3, T0), 0);
        assert_int_equal(pacer_next(&p, T0, &d), PACER_CONTROL);
        assert_true(d > 90 * MS && d <= 101 * MS);
        assert_int_equal(pacer_next(&p, T0 + d, &d), PACER_CONTROL);
        assert_int_equal(d, 0);
        /* In order. */
        assert_true(pacer_control_pop(&p, T0 + 101 * MS, &m));
        assert_string_equal(m.topic, "b");
        assert_int_equal(m.len, 2);
        assert_memory_equal(m.payload, "22", 2);
        pacer_msg_free(&m);
        /* A new one goes behind the queued one even when tokens are there. */
        assert_int_equal(pacer_control(&p, "d", "4", 1, T0 + 500 * MS), 0);
        assert_true(pacer_control_pop(&p, T0 + 500 * MS, &m));
        assert_string_equal(m.topic, "c");
        pacer_msg_free(&m);
        assert_int_equal(p.control_sent, 3);
        assert_int_equal(p.control_queued, 3);
        assert_int_equal(pacer_flush(&p), 1);
        assert_int_equal(p.control_dropped, 1);
        assert_int_equal(pacer_next(&p, T0 + 500 * MS, &d), PACER_NONE);
        pacer_done(&p);
}

static void test_queue_bounded(void **state)
{
        struct pacer p;
        char big[600] = { 0 };

        /* 3 messages or 1000 bytes. */
        assert_int_equal(pacer_init(&p, 1, 0, 3, 1000, T0), 0);
        assert_int_equal(pacer_control(&p, "t", "x", 1, T0), 1);
        for (int i = 0; i < 3; i++)
                assert_int_equal(pacer_control(&p, "t", "x", 1, T0), 0);
        assert_int_equal(pacer_control(&p, "t", "x", 1, T0), -ENOBUFS);
        assert_int_equal(p.control_dropped, 1);
        assert_int_equal(pacer_flush(&p), 3); /* the session went down: dropped too */
        assert_int_equal(p.control_dropped, 4);
        assert_int_equal(pacer_control(&p, "t", big, sizeof big, T0), 0);
        assert_int_equal(pacer_control(&p, "t", big, sizeof big, T0), -ENOBUFS);
        assert_int_equal(p.n, 1);
        assert_int_equal(p.control_dropped, 5);
        pacer_done(&p);
}

/* Control first: with telemetry waiting, a control publish queued at the same time goes before
 * it, and telemetry goes next. */
static void test_control_precedence(void **state)
{
        struct pacer p;
        struct pacer_msg m;
        uint64_t d, now = T0;

        assert_int_equal(pacer_init(&p, 10, 0, 0, 0, T0), 0);
        assert_true(pacer_telemetry_ask(&p, now));
        pacer_telemetry_sent(&p, 100, now);
        assert_false(pacer_telemetry_ask(&p, now)); /* out of tokens: waiting */
        assert_int_equal(pacer_control(&p, "job", "u", 1, now), 0);
        assert_int_equal(pacer_next(&p, now, &d), PACER_CONTROL);
        now += d;
        assert_true(pacer_control_pop(&p, now, &m));
        pacer_msg_free(&m);
        assert_int_equal(pacer_control(&p, "job", "v", 1, now), 0);
        /* Control had its turn while telemetry waited: telemetry next. */
        assert_int_equal(pacer_next(&p, now, &d), PACER_TELEMETRY);
        now += d;
        pacer_telemetry_grant(&p, true);
        assert_true(pacer_telemetry_ask(&p, now));
        pacer_telemetry_sent(&p, 100, now);
        /* One publish per grant: the next ask waits behind the queued control publish. */
        assert_false(pacer_telemetry_ask(&p, now + 200 * MS));
        pacer_telemetry_grant(&p, false);
        assert_int_equal(pacer_next(&p, now, &d), PACER_CONTROL);
        pacer_done(&p);
}

/* 20 s of a burst of 2,000 control publishes (command results) next to telemetry that always has
 * something to send, at PublishesPerSecond=20: no second holds more than the bucket allows,
 * telemetry gets every other publish while both wait, control never waits behind two telemetry
 * publishes in a row. */
static void test_shared_quota(void **state)
{
        enum { RATE = 20, SECONDS = 20 };
        struct pacer p;
        uint64_t now = T0, end = T0 + SECONDS * 1000 * MS, *times;
        char *order;
        size_t n = 0, n_control = 0, n_tlm = 0, max_tlm_run = 0, run = 0;

        times = calloc(RATE * SECONDS * 2 + 16, sizeof *times);
        order = calloc(RATE * SECONDS * 2 + 16, 1);
        assert_non_null(times);
        assert_non_null(order);
        assert_int_equal(pacer_init(&p, RATE, 0, 0, 0, T0), 0);
        for (int i = 0; i < 2000; i++)
                if (pacer_control(&p, "r", "result", 6, now) == 1) {
                        times[n] = now;
                        order[n++] = 'c';
                }
        assert_false(pacer_telemetry_ask(&p, now));
        for (;;) {
                struct pacer_msg m;
                uint64_t d;
                enum pacer_class c = pacer_next(&p, now, &d);

                assert_int_not_equal(c, PACER_NONE);
                if (now + d > end)
                        break;
                now += d;
                if (c == PACER_CONTROL) {
                        assert_true(pacer_control_pop(&p, now, &m));
                        pacer_msg_free(&m);
                        order[n] = 'c';
                        run = 0;
                } else {
                        pacer_telemetry_grant(&p, true);
                        assert_true(pacer_telemetry_ask(&p, now));
                        pacer_telemetry_sent(&p, 500, now);
                        assert_false(pacer_telemetry_ask(&p, now)); /* more to send */
                        pacer_telemetry_grant(&p, false);
                        order[n] = 't';
                        max_tlm_run = ++run > max_tlm_run ? run : max_tlm_run;
                }
                times[n++] = now;
        }
        for (size_t i = 0; i < n; i++) {
                size_t k = 0;
                n_control += order[i] == 'c';
                n_tlm += order[i] == 't';
                for (size_t j = i; j < n && times[j] < times[i] + 1000 * MS; j++)
                        k++;
                if (k > RATE + 1)
                        fail_msg("%zu publishes in the second from %llu µs (quota %d)", k,
                                 (unsigned long long)(times[i] - T0), RATE);
        }
        /* The long-run rate holds, and the quota is used. */
        assert_true(n <= RATE * SECONDS + 1);
        assert_true(n >= RATE * SECONDS - 2);
        /* Every other publish is telemetry, and control is never more than one behind. */
        assert_true(n_tlm >= n / 2 - 1);
        assert_true(n_control >= n / 2);
        assert_int_equal(max_tlm_run, 1);
        assert_int_equal(p.control_dropped, 0);
        pacer_done(&p);
        free(times);
        free(order);
}

/* Unlimited (rate 0): everything goes at once, nothing is queued. */
static void test_unlimited(void **state)
{
        struct pacer p;
        uint64_t d;

        assert_int_equal(pacer_init(&p, 0, 0, 0, 0, T0), 0);
        for (int i = 0; i < 1000; i++)
                assert_int_equal(pacer_control(&p, "t", "x", 1, T0), 1);
        assert_true(pacer_telemetry_ask(&p, T0));
        assert_int_equal(pacer_next(&p, T0, &d), PACER_NONE);
        pacer_done(&p);
}

/* ---- the subscription map ------------------------------------------------------------------ */

static char got[64];

static void fn_a(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        snprintf(got, sizeof got, "a:%s", (const char *)ud);
}

static void fn_b(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        snprintf(got, sizeof got, "b:%s", (const char *)ud);
}

static const char *deliver(const struct submap *m, const char *topic)
{
        const struct submap_entry *e = submap_find(m, topic);
        got[0] = 0;
        if (!e)
                return "none";
        e->fn(e->userdata, topic, NULL, 0);
        return got;
}

static void test_submap(void **state)
{
        struct submap m;
        char jobs[] = "jobs", defender[] = "defender", remedy[] = "remedy", other[] = "other";

        submap_init(&m, 0);
        assert_int_equal(submap_add(&m, "$aws/things/gw/jobs/notify-next", fn_a, jobs), 0);
        assert_int_equal(submap_add(&m, "$aws/things/gw/defender/metrics/json/+", fn_a, defender),
                         0);
        assert_int_equal(submap_add(&m, "mcugw/gw/remedy", fn_b, remedy), 0);
        assert_int_equal(submap_add(&m, "mcugw/gw/#", fn_b, other), 0);
        assert_int_equal(submap_add(&m, "bad/#/filter", fn_b, other), -EINVAL);
        assert_int_equal(m.n, 4);

        assert_string_equal(deliver(&m, "$aws/things/gw/jobs/notify-next"), "a:jobs");
        assert_string_equal(deliver(&m, "$aws/things/gw/defender/metrics/json/accepted"),
                            "a:defender");
        /* The exact filter wins over the wildcard added after it... */
        assert_string_equal(deliver(&m, "mcugw/gw/remedy"), "b:remedy");
        assert_string_equal(deliver(&m, "mcugw/gw/anything/else"), "b:other");
        assert_string_equal(deliver(&m, "$aws/things/gw/jobs/other"), "none");
        assert_string_equal(deliver(&m, "$aws/things/gw/defender/metrics/json/a/b"), "none");

        /* ...and of two identical filters the first added. */
        assert_int_equal(submap_add(&m, "mcugw/gw/remedy", fn_a, jobs), 0);
        assert_string_equal(deliver(&m, "mcugw/gw/remedy"), "b:remedy");
        assert_int_equal(submap_forget(&m, remedy), 1);
        assert_string_equal(deliver(&m, "mcugw/gw/remedy"), "a:jobs");
        assert_int_equal(submap_forget(&m, jobs), 2);
        assert_string_equal(deliver(&m, "mcugw/gw/remedy"), "b:other");
        assert_string_equal(deliver(&m, "$aws/things/gw/jobs/notify-next"), "none");
        assert_int_equal(submap_forget(&m, other), 1);
        assert_int_equal(submap_forget(&m, other), 0);
        assert_int_equal(m.n, 1);
        submap_done(&m);
}

/* Thousands of exact filters (a shadow topic per device) are all found, beyond the fixed table
 * of eight the relay had; the bound is enforced. */
static void test_submap_many(void **state)
{
        enum { N = 3000 };
        static char ids[N][8];
        struct submap m;
        char topic[64];

        submap_init(&m, N);
        for (int i = 0; i < N; i++) {
                snprintf(ids[i], sizeof ids[i], "%d", i);
                snprintf(topic, sizeof topic, "$aws/things/dev-%d/shadow/update/delta", i);
                assert_int_equal(submap_add(&m, topic, fn_a, ids[i]), 0);
        }
        assert_int_equal(submap_add(&m, "one/too/many", fn_a, ids[0]), -ENOSPC);
        assert_true(m.n_buckets >= N);
        for (int i = 0; i < N; i++) {
                char want[16];
                snprintf(topic, sizeof topic, "$aws/things/dev-%d/shadow/update/delta", i);
                snprintf(want, sizeof want, "a:%d", i);
                assert_string_equal(deliver(&m, topic), want);
        }
        assert_string_equal(deliver(&m, "$aws/things/dev-3000/shadow/update/delta"), "none");
        submap_done(&m);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_control_now_then_queued),
                cmocka_unit_test(test_queue_bounded),
                cmocka_unit_test(test_control_precedence),
                cmocka_unit_test(test_shared_quota),
                cmocka_unit_test(test_unlimited),
                cmocka_unit_test(test_submap),
                cmocka_unit_test(test_submap_many),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
