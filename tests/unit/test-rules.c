/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "monitor/rules.h"

static const char *const good = "[Rule]\n"
                                "Name=auth-flood\n"
                                "Metric=auth_failures\n"
                                "Window=1min\n"
                                "Threshold=5\n"
                                "Action=quarantine alert\n"
                                "\n"
                                "[Rule]\n"
                                "Name=chatty\n"
                                "Metric=messages\n"
                                "Window=10s\n"
                                "Threshold=100\n"
                                "Action=throttle\n"
                                "Match=sensor-*\n"
                                "\n"
                                "[Rule]\n"
                                "Name=quiet\n"
                                "Metric=silence\n"
                                "Timeout=10min\n"
                                "Action=alert\n"
                                "Group=field\n"
                                "Enabled=no\n";

static void test_parse_good(void **state)
{
        struct conf_errors err = { 0 };
        struct rule_set rs = { 0 };
        char acts[64];

        assert_int_equal(rules_parse_string("good.conf", good, &rs, &err), 0);
        assert_int_equal(err.n, 0);
        assert_int_equal(rs.n, 3);
        assert_string_equal(rs.v[0].name, "auth-flood");
        assert_int_equal(rs.v[0].metric, RULE_METRIC_AUTH_FAILURES);
        assert_int_equal(rs.v[0].window_ms, 60000);
        assert_int_equal(rs.v[0].threshold, 5);
        assert_int_equal(rs.v[0].actions, RULE_ACTION_QUARANTINE | RULE_ACTION_ALERT);
        rule_actions_to_string(rs.v[0].actions, acts, sizeof acts);
        assert_string_equal(acts, "alert quarantine");
        assert_string_equal(rs.v[0].match, "*");
        assert_int_equal(rs.v[0].line, 2);
        assert_int_equal(rs.v[1].hold_ms, 10000); /* throttle holds for the window by default */
        assert_string_equal(rs.v[1].match, "sensor-*");
        assert_int_equal(rs.v[2].metric, RULE_METRIC_SILENCE);
        assert_int_equal(rs.v[2].timeout_ms, 600000);
        assert_false(rs.v[2].enabled);
        assert_int_equal(rule_set_enabled(&rs), 2);
        rule_set_free(&rs);
}

/* Every error names its file and line; nothing is half-loaded. */
static void expect_error(const char *text, const char *needle)
{
        struct conf_errors err = { 0 };
        struct rule_set rs = { 0 };
        bool found = false;

        assert_int_equal(rules_parse_string("r.conf", text, &rs, &err), -EINVAL);
        assert_true(err.n > 0);
        for (size_t i = 0; i < err.n; i++) {
                assert_true(strncmp(err.msgs[i], "r.conf:", 7) == 0);
                if (strstr(err.msgs[i], needle))
                        found = true;
        }
        if (!found)
                for (size_t i = 0; i < err.n; i++)
                        fprintf(stderr, "got: %s\n", err.msgs[i]);
        assert_true(found);
        conf_errors_clear(&err);
        rule_set_free(&rs);
}

static void test_parse_errors(void **state)
{
        expect_error("[Rule]\nName=a\nMetric=bogus\nWindow=1s\nThreshold=1\nAction=alert\n",
                     "r.conf:3: Metric=bogus");
        expect_error("[Rule]\nName=a\nMetric=messages\nWindow=1s\nThreshold=0\nAction=alert\n",
                     "r.conf:5: Threshold=0");
        expect_error("[Rule]\nName=a\nMetric=messages\nWindow=2d\nThreshold=1\nAction=alert\n",
                     "r.conf:4: Window=2d");
        expect_error("[Rule]\nName=a\nMetric=messages\nWindow=1s\nThreshold=1\nAction=nuke\n",
                     "r.conf:6: Action=nuke");
        expect_error("[Rule]\nName=a\nMetric=messages\nThreshold=1\nAction=alert\n",
                     "r.conf:2: Metric=messages needs Window= and Threshold=");
        expect_error("[Rule]\nName=a\nMetric=silence\nAction=alert\n",
                     "r.conf:2: Metric=silence needs Timeout=");
        expect_error("[Rule]\nMetric=bytes\nWindow=1s\nThreshold=1\nAction=alert\n",
                     "r.conf:2: [Rule] needs Name=");
        expect_error("[Rule]\nName=a\nName=b\n", "r.conf:3: Name= given twice");
        expect_error("[Rule]\nName=a\nColour=red\n", "r.conf:3: unknown key 'Colour'");
        expect_error("[Rules]\nName=a\n", "r.conf:2: unknown section [Rules]");
        expect_error("[Rule]\nName=a b\n", "r.conf:2: Name=a b");
        expect_error("[Rule]\nName=x\nMetric=bytes\nWindow=1s\nThreshold=1\nAction=alert\n"
                     "[Rule]\nName=x\nMetric=bytes\nWindow=1s\nThreshold=1\nAction=alert\n",
                     "r.conf:8: rule 'x' is already defined at r.conf:2");
        expect_error("[Rule]\nName=a\nMetric=bytes\nWindow=1s\nThreshold=1\nAction=alert\n"
                     "Hold=5s\n",
                     "Hold= is only for Action=throttle");
        expect_error("Name=a\n", "outside of any section");
}

static void test_load_dir(void **state)
{
        char dir[64] = "/tmp/mcugw-test-rules-XXXXXX", path[128], cmd[160];
        struct conf_errors err = { 0 };
        struct rule_set rs = { 0 };
        FILE *f;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/10-a.conf", dir);
        f = fopen(path, "w");
        fputs(good, f);
        fclose(f);
        snprintf(path, sizeof path, "%s/ignored.txt", dir);
        f = fopen(path, "w");
        fputs("garbage", f);
        fclose(f);
        assert_int_equal(rules_load_dir(dir, &rs, &err), 0);
        assert_int_equal(rs.n, 3);
        rule_set_free(&rs);

        /* A second file redefining a rule is an error that names both places. */
        snprintf(path, sizeof path, "%s/20-b.conf", dir);
        f = fopen(path, "w");
        fputs("[Rule]\nName=chatty\nMetric=bytes\nWindow=1s\nThreshold=9\nAction=alert\n", f);
        fclose(f);
        assert_int_equal(rules_load_dir(dir, &rs, &err), -EINVAL);
        assert_int_equal(rs.n, 0);
        assert_int_equal(err.n, 1);
        assert_non_null(strstr(err.msgs[0], "20-b.conf:2: rule 'chatty' is already defined at"));
        assert_non_null(strstr(err.msgs[0], "10-a.conf:9"));
        conf_errors_clear(&err);

        /* A missing directory is no rules, not an error. */
        snprintf(path, sizeof path, "%s/nope", dir);
        assert_int_equal(rules_load_dir(path, &rs, &err), 0);
        assert_int_equal(rs.n, 0);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

struct fired {
        int n;
        char rule[RULES_NAME_MAX + 1];
        char device[64];
        uint64_t value;
};

static void on_fire(void *ud, const struct rule *r, const char *device, uint64_t value)
{
        struct fired *f = ud;
        f->n++;
        snprintf(f->rule, sizeof f->rule, "%s", r->name);
        snprintf(f->device, sizeof f->device, "%s", device);
        f->value = value;
}

static void load(struct rule_set *rs, const char *text)
{
        struct conf_errors err = { 0 };
        assert_int_equal(rules_parse_string("t.conf", text, rs, &err), 0);
}

static void test_window(void **state)
{
        struct rule_set rs = { 0 };
        struct rules_engine *e;
        struct fired f = { 0 };
        uint64_t t = 1000000;

        load(&rs, "[Rule]\nName=af\nMetric=auth_failures\nWindow=1min\nThreshold=5\n"
                  "Action=quarantine\n");
        assert_int_equal(rules_engine_new(&rs, 100, &e), 0);
        rule_set_free(&rs);

        /* Four failures in a minute: nothing. The fifth fires, once. */
        for (int i = 0; i < 4; i++)
                assert_int_equal(rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 1,
                                                  t + i * 1000, on_fire, &f),
                                 0);
        assert_int_equal(f.n, 0);
        /* Other metrics and other devices do not count. */
        rules_engine_add(e, "d1", NULL, RULE_METRIC_MESSAGES, 100, t + 4000, on_fire, &f);
        rules_engine_add(e, "d2", NULL, RULE_METRIC_AUTH_FAILURES, 4, t + 4000, on_fire, &f);
        assert_int_equal(f.n, 0);
        assert_int_equal(rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 1, t + 5000,
                                          on_fire, &f),
                         1);
        assert_int_equal(f.n, 1);
        assert_string_equal(f.device, "d1");
        assert_string_equal(f.rule, "af");
        assert_int_equal(f.value, 5);
        rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 1, t + 6000, on_fire, &f);
        assert_int_equal(f.n, 1); /* latched */
        assert_int_equal(rules_engine_count(e, "d1", 0, t + 6000), 6);

        /* Two minutes later the window is empty: re-armed, and slow failures never fire. */
        t += 180000;
        assert_int_equal(rules_engine_count(e, "d1", 0, t), 0);
        for (int i = 0; i < 20; i++)
                rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 1, t + i * 20000,
                                 on_fire, &f);
        assert_int_equal(f.n, 1);
        /* A burst fires again. */
        rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 10, t + 400000, on_fire, &f);
        assert_int_equal(f.n, 2);
        assert_true(f.value >= 10);
        rules_engine_free(e);
}

/* The takeovers metric, and the shipped rules file parses (with its session-takeover rule). */
static void test_takeovers(void **state)
{
        struct rule_set rs = { 0 };
        struct conf_errors err = { 0 };
        struct rules_engine *e;
        struct fired f = { 0 };
        const char *root = getenv("MCUGW_SOURCE_ROOT");
        char dir[4096];
        bool found = false;

        assert_int_equal(rule_metric_from_string("takeovers"), RULE_METRIC_TAKEOVERS);
        assert_string_equal(rule_metric_to_string(RULE_METRIC_TAKEOVERS), "takeovers");
        assert_int_equal(rule_metric_from_string("replay_ts"), RULE_METRIC_REPLAY_TS);
        assert_string_equal(rule_metric_to_string(RULE_METRIC_REPLAY_TS), "replay_ts");
        load(&rs, "[Rule]\nName=clone\nMetric=takeovers\nWindow=1min\nThreshold=10\n"
                  "Action=quarantine alert\n");
        assert_int_equal(rules_engine_new(&rs, 100, &e), 0);
        rule_set_free(&rs);
        assert_int_equal(
                rules_engine_add(e, "d1", NULL, RULE_METRIC_TAKEOVERS, 9, 1000, on_fire, &f), 0);
        /* Handshakes of another kind do not count; the tenth takeover fires. */
        rules_engine_add(e, "d1", NULL, RULE_METRIC_AUTH_FAILURES, 5, 2000, on_fire, &f);
        assert_int_equal(f.n, 0);
        assert_int_equal(
                rules_engine_add(e, "d1", NULL, RULE_METRIC_TAKEOVERS, 1, 3000, on_fire, &f), 1);
        assert_string_equal(f.rule, "clone");
        assert_int_equal(f.value, 10);
        rules_engine_free(e);

        if (!root)
                skip();
        snprintf(dir, sizeof dir, "%s/etc/mcugw/rules.d", root);
        assert_int_equal(rules_load_dir(dir, &rs, &err), 0);
        for (size_t i = 0; i < rs.n; i++)
                if (strcmp(rs.v[i].name, "session-takeover") == 0) {
                        found = true;
                        assert_int_equal(rs.v[i].metric, RULE_METRIC_TAKEOVERS);
                        assert_true(rs.v[i].enabled);
                        assert_true(rs.v[i].actions & RULE_ACTION_QUARANTINE);
                }
        assert_true(found);
        rule_set_free(&rs);
}

static void test_match_and_silence(void **state)
{
        struct rule_set rs = { 0 };
        struct rules_engine *e;
        struct fired f = { 0 };
        struct rules_engine_stats st;

        load(&rs, "[Rule]\nName=b\nMetric=bytes\nWindow=1s\nThreshold=1000\nAction=alert\n"
                  "Match=sensor-*\nGroup=field\n"
                  "[Rule]\nName=s\nMetric=silence\nTimeout=30s\nAction=alert\n"
                  "[Rule]\nName=off\nMetric=bytes\nWindow=1s\nThreshold=1\nAction=alert\n"
                  "Enabled=no\n");
        assert_int_equal(rules_engine_new(&rs, 2, &e), 0);
        rule_set_free(&rs);

        rules_engine_add(e, "sensor-1", "lab", RULE_METRIC_BYTES, 5000, 1000, on_fire, &f);
        rules_engine_add(e, "pump-1", "field", RULE_METRIC_BYTES, 5000, 1000, on_fire, &f);
        assert_int_equal(f.n, 0);
        rules_engine_forget(e, "sensor-1");
        rules_engine_add(e, "sensor-2", "lab,field", RULE_METRIC_BYTES, 5000, 1000, on_fire, &f);
        assert_int_equal(f.n, 1);
        assert_string_equal(f.device, "sensor-2");

        /* Bounded: a third device is not tracked. */
        assert_int_equal(rules_engine_add(e, "x", NULL, RULE_METRIC_BYTES, 1, 1000, on_fire, &f),
                         -ENOSPC);
        rules_engine_stats(e, &st);
        assert_int_equal(st.devices, 2);
        assert_int_equal(st.untracked, 1);

        /* Silence: fires once per silence, re-arms when the device is heard again. */
        f.n = 0;
        assert_int_equal(rules_engine_tick(e, 20000, on_fire, &f), 0);
        assert_int_equal(rules_engine_tick(e, 31000, on_fire, &f), 2);
        assert_int_equal(rules_engine_tick(e, 40000, on_fire, &f), 0);
        rules_engine_seen(e, "pump-1", "field", 41000);
        assert_int_equal(rules_engine_tick(e, 60000, on_fire, &f), 0);
        assert_int_equal(rules_engine_tick(e, 72000, on_fire, &f), 1);
        assert_string_equal(f.device, "pump-1");
        assert_int_equal(f.value, 31000);
        rules_engine_free(e);
}

/* Memory is fixed per device and rule however many events arrive. */
static void test_bounded_counts(void **state)
{
        struct rule_set rs = { 0 };
        struct rules_engine *e;

        load(&rs, "[Rule]\nName=m\nMetric=messages\nWindow=10s\nThreshold=4294967295\n"
                  "Action=alert\n");
        assert_int_equal(rules_engine_new(&rs, 10, &e), 0);
        rule_set_free(&rs);
        for (uint64_t t = 0; t < 100000; t += 7)
                rules_engine_add(e, "d", NULL, RULE_METRIC_MESSAGES, 3, t, NULL, NULL);
        /* About 10 s worth of events: 3 per 7 ms, give or take one bucket. */
        {
                uint64_t c = rules_engine_count(e, "d", 0, 100000);
                assert_true(c >= 3 * 9000 / 7 && c <= 3 * 10600 / 7);
        }
        rules_engine_add(e, "d", NULL, RULE_METRIC_MESSAGES, UINT64_MAX, 100001, NULL, NULL);
        rules_engine_free(e);
}

/* Without rules nothing is evaluated, so no device costs memory; rules loaded later start from
 * scratch (rules_engine_set_rules() forgets every device) and track from then on. */
static void test_no_rules_no_devices(void **state)
{
        struct rule_set rs = { 0 };
        struct rules_engine_stats st;
        struct rules_engine *e;

        (void)state;
        assert_int_equal(rules_engine_new(&rs, 10, &e), 0);
        assert_int_equal(rules_engine_add(e, "d", NULL, RULE_METRIC_MESSAGES, 1, 0, NULL, NULL), 0);
        assert_int_equal(rules_engine_seen(e, "d", NULL, 0), 0);
        rules_engine_stats(e, &st);
        assert_int_equal(st.devices, 0);
        assert_int_equal(st.untracked, 0);

        load(&rs, "[Rule]\nName=m\nMetric=messages\nWindow=10s\nThreshold=2\nAction=alert\n");
        assert_int_equal(rules_engine_set_rules(e, &rs), 0);
        rule_set_free(&rs);
        assert_int_equal(rules_engine_add(e, "d", NULL, RULE_METRIC_MESSAGES, 1, 0, NULL, NULL), 0);
        assert_int_equal(rules_engine_add(e, "d", NULL, RULE_METRIC_MESSAGES, 1, 1, NULL, NULL), 1);
        rules_engine_stats(e, &st);
        assert_int_equal(st.devices, 1);
        rules_engine_free(e);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_good),
                cmocka_unit_test(test_parse_errors),
                cmocka_unit_test(test_load_dir),
                cmocka_unit_test(test_window),
                cmocka_unit_test(test_match_and_silence),
                cmocka_unit_test(test_bounded_counts),
                cmocka_unit_test(test_takeovers),
                cmocka_unit_test(test_no_rules_no_devices),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
