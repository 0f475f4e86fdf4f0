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

#include "monitor/baseline.h"
#include "daemon/conf.h"

struct fixture {
        char dir[64];
        struct conf *conf;
        struct baseline_config view;
};

/* The baseline's view of the fixture's configuration, as the gateway builds it. */
static const struct baseline_config *view(struct fixture *f)
{
        conf_baseline_config(f->conf, &f->view);
        return &f->view;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        struct conf_errors err = { 0 };
        char text[1024], p[128];

        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-baseline-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(p, sizeof p, "%s/state", f->dir);
        assert_int_equal(mkdir(p, 0750), 0);
        snprintf(p, sizeof p, "%s/state/link.key", f->dir);
        write_file(p, "2CeQ3vO5rZ6u5QYb0a5o5wG6xgNHPWZ0nH1z1b0cXl4=\n", 0600);
        snprintf(p, sizeof p, "%s/rules.d", f->dir);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(text, sizeof text,
                 "[Paths]\nStateDirectory=%s/state\nRuntimeDirectory=%s/run\n"
                 "ControlSocket=%s/run/c.sock\nDevicesDirectory=%s/devices.d\n"
                 "[Monitor]\nRulesDirectory=%s/rules.d\n",
                 f->dir, f->dir, f->dir, f->dir, f->dir);
        assert_int_equal(conf_load_string("t.conf", text, &f->conf, &err), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        conf_free(f->conf);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

static json_t *find(json_t *findings, const char *check)
{
        size_t i;
        json_t *x;
        json_array_foreach (findings, i, x)
                if (strcmp(json_string_value(json_object_get(x, "check")), check) == 0)
                        return x;
        return NULL;
}

static const char *sev(json_t *x)
{
        return json_string_value(json_object_get(x, "severity"));
}

static void test_findings(void **state)
{
        struct fixture *f = *state;
        char p[128];
        json_t *a;

        a = baseline_findings(view(f), NULL, 3, time(NULL));
        assert_non_null(a);
        assert_null(find(a, "key.readable_by_others"));
        assert_null(find(a, "perm.world_writable"));
        assert_null(find(a, "rules.none"));
        assert_non_null(find(a, "tls.no_cloud"));
        json_decref(a);

        /* Plant problems. */
        snprintf(p, sizeof p, "%s/state/link.key", f->dir);
        assert_int_equal(chmod(p, 0644), 0);
        snprintf(p, sizeof p, "%s/state", f->dir);
        assert_int_equal(chmod(p, 0777), 0);
        a = baseline_findings(view(f), NULL, 0, time(NULL));
        assert_string_equal(sev(find(a, "key.readable_by_others")), "critical");
        assert_string_equal(sev(find(a, "perm.world_writable")), "critical");
        assert_string_equal(sev(find(a, "rules.none")), "medium");
        /* Most severe first. */
        assert_string_equal(sev(json_array_get(a, 0)), "critical");
        assert_string_equal(sev(json_array_get(a, json_array_size(a) - 1)), "info");
        json_decref(a);

        snprintf(p, sizeof p, "%s/state/link.key", f->dir);
        assert_int_equal(chmod(p, 0640), 0);
        f->conf->monitor.rules = 0;
        f->conf->ota.allow_unsigned = 1;
        a = baseline_findings(view(f), NULL, 0, time(NULL));
        assert_string_equal(sev(find(a, "key.readable_by_group")), "high");
        assert_non_null(find(a, "rules.disabled"));
        assert_string_equal(sev(find(a, "ota.unsigned_allowed")), "high");
        json_decref(a);
}

static void test_cert_expiry(void **state)
{
        struct fixture *f = *state;
        char cmd[512], crt[128];
        json_t *a;

        snprintf(crt, sizeof crt, "%s/c.crt", f->dir);
        snprintf(cmd, sizeof cmd,
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                 "-keyout %s/c.key -out %s -days 10 -subj /CN=t >/dev/null 2>&1",
                 f->dir, crt);
        assert_int_equal(system(cmd), 0);
        f->conf->relay.cert_file = strdup(crt);
        a = baseline_findings(view(f), NULL, 1, time(NULL));
        assert_string_equal(sev(find(a, "cert.expiring")), "medium");
        json_decref(a);
        a = baseline_findings(view(f), NULL, 1, time(NULL) + 20 * 86400);
        assert_string_equal(sev(find(a, "cert.expired")), "critical");
        assert_null(find(a, "cert.expiring"));
        json_decref(a);
        f->conf->monitor.cert_expiry_days = 5;
        a = baseline_findings(view(f), NULL, 1, time(NULL));
        assert_null(find(a, "cert.expiring"));
        json_decref(a);
}

static void test_drift(void **state)
{
        struct fixture *f = *state;
        json_t *s1, *s2, *d;
        char p[128];

        s1 = baseline_snapshot(view(f), NULL);
        s2 = baseline_snapshot(view(f), NULL);
        d = baseline_diff(s1, s2);
        assert_int_equal(json_array_size(d), 0);
        json_decref(d);
        json_decref(s2);

        snprintf(p, sizeof p, "%s/state/link.key", f->dir);
        assert_int_equal(chmod(p, 0644), 0);
        snprintf(p, sizeof p, "%s/rules.d/a.conf", f->dir);
        write_file(p, "[Rule]\n", 0644);
        s2 = baseline_snapshot(view(f), NULL);
        d = baseline_diff(s1, s2);
        assert_int_equal(json_array_size(d), 2);
        {
                char item[160];
                snprintf(item, sizeof item, "file:%s/state/link.key", f->dir);
                assert_string_equal(
                        json_string_value(json_object_get(json_array_get(d, 0), "item")), item);
                assert_string_equal(
                        json_string_value(json_object_get(json_array_get(d, 1), "item")), "rules");
        }
        json_decref(d);
        json_decref(s1);
        json_decref(s2);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_findings, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cert_expiry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_drift, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
