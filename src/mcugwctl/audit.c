/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: audit tail, verify, config, baseline (docs/audit.md, docs/monitoring.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <unistd.h>

#include "basic/macro.h"
#include "ctl/ctlproto.h"
#include "mcugwctl/mcugwctl.h"

static void print_audit_record(json_t *r)
{
        char t[32];
        char *details;

        if (arg_json) {
                char *s = json_dumps(r, JSON_COMPACT);
                if (s)
                        puts(s);
                free(s);
                return;
        }
        format_time(jint(r, "ts_us"), t, sizeof t);
        details = json_dumps(json_object_get(r, "details"), JSON_COMPACT | JSON_ENCODE_ANY);
        printf("%6lld  %s  %-20s %-22s %-20s %s\n", jint(r, "seq"), t, jstr(r, "actor"),
               jstr(r, "event"), jstr(r, "subject"), details ? details : "");
        free(details);
}

/* audit tail's records as they arrive: a table, JSON lines with --follow, or one JSON array
 * (indented as print_json() would) without. elem NULL: the end of the reply. */
struct tail_printer {
        bool follow, started;
};

static void print_tail_element(json_t *elem, void *userdata)
{
        struct tail_printer *tp = userdata;
        bool array = arg_json && !tp->follow;

        if (!elem) {
                if (array)
                        puts(tp->started ? "\n]" : "[]");
                else if (!tp->started && !arg_json)
                        print_tail_element(json_null(), tp); /* the header alone */
                return;
        }
        if (!tp->started) {
                if (array)
                        fputs("[\n", stdout);
                else if (!arg_json)
                        printf("%6s  %-20s  %-20s %-22s %-20s %s\n", "SEQ", "TIME", "ACTOR",
                               "EVENT", "SUBJECT", "DETAILS");
        } else if (array)
                fputs(",\n", stdout);
        if (json_is_null(elem)) {
                tp->started = true;
                return;
        }
        if (array) {
                char *s = json_dumps(elem, JSON_INDENT(2) | JSON_ENCODE_ANY);
                fputs("  ", stdout);
                for (const char *p = s ? s : "null"; *p; p++) {
                        putchar(*p);
                        if (*p == '\n')
                                fputs("  ", stdout);
                }
                free(s);
        } else
                print_audit_record(elem);
        tp->started = true;
}

const struct option audit_tail_opts[] = {
        { "lines", required_argument, NULL, 'n' },
        { "follow", no_argument, NULL, 'f' },
        {},
};

int do_audit_tail(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        struct tail_printer tp = { 0 };
        long long n = 20;
        bool follow = false;
        int c, ret = EXIT_FAILURE;
        char *end;

        optind = 0;
        while ((c = getopt_long(argc, argv, "n:f", audit_tail_opts, NULL)) >= 0)
                switch (c) {
                case 'n':
                        n = strtoll(optarg, &end, 10);
                        if (*end || n < 0 || n > 100000)
                                return fail("audit tail: -n takes a number from 0 to 100000");
                        break;
                case 'f': follow = true; break;
                default: return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("audit tail: unexpected argument '%s'", argv[optind]);

        tp.follow = follow;
        if (call_each(&cl, "audit.tail", json_pack("{sI sb}", "n", (json_int_t)n, "follow", follow),
                      print_tail_element, &tp) < 0)
                goto out;
        print_tail_element(NULL, &tp);
        fflush(stdout);
        while (follow) {
                json_t *rec;
                int k = client_next_event(&cl, &rec);
                if (k < 0)
                        goto out;
                if (k > 0)
                        print_audit_record(rec);
                json_decref(rec);
                fflush(stdout);
        }
        ret = EXIT_SUCCESS;
out:
        if (cl.fd >= 0)
                close(cl.fd);
        free(cl.buf);
        return ret;
}

int do_audit_verify(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *d = NULL;
        int ret = EXIT_FAILURE;

        if (argc > 1)
                return fail("audit verify: unexpected argument '%s'", argv[1]);
        if (call(&cl, "audit.verify", NULL, &d) < 0)
                goto out;
        if (arg_json)
                print_json(d);
        if (json_is_true(json_object_get(d, "ok"))) {
                if (!arg_json)
                        printf("audit chain intact: %lld records\n", jint(d, "records"));
                ret = EXIT_SUCCESS;
        } else
                fail("audit chain broken at record %lld: %s", jint(d, "first_bad_seq"),
                     jstr(d, "reason"));
out:
        json_decref(d);
        if (cl.fd >= 0)
                close(cl.fd);
        free(cl.buf);
        return ret;
}

static int severity_rank(const char *s)
{
        static const char *const names[] = { "info", "low", "medium", "high", "critical" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(s, names[i]) == 0)
                        return (int)i;
        return 0;
}

/* Exit status: 0 when nothing of high severity or above and no drift, 1 otherwise. */
int do_audit_config(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *d = NULL, *f, *findings, *drift, *base;
        size_t i, serious = 0;
        int ret = EXIT_FAILURE;

        if (argc > 1)
                return fail("audit config: unexpected argument '%s'", argv[1]);
        if (call(&cl, "audit.config", NULL, &d) < 0)
                goto out;
        findings = json_object_get(d, "findings");
        drift = json_object_get(d, "drift");
        base = json_object_get(d, "baseline");
        json_array_foreach (findings, i, f)
                serious += severity_rank(jstr(f, "severity")) >= 3;
        if (arg_json)
                print_json(d);
        else {
                json_array_foreach (findings, i, f)
                        printf("%-8s  %-26s %s\n", jstr(f, "severity"), jstr(f, "check"),
                               jstr(f, "message"));
                if (!json_array_size(findings))
                        printf("no findings\n");
                if (json_is_object(base)) {
                        char t[32];
                        format_time(jint(base, "accepted_us"), t, sizeof t);
                        printf("\nbaseline accepted %s by %s: ", t, jstr(base, "actor"));
                        if (!json_array_size(drift))
                                printf("no drift\n");
                        else {
                                json_t *x;
                                printf("%zu difference(s)\n", json_array_size(drift));
                                json_array_foreach (drift, i, x)
                                        printf("  drift     %s\n", jstr(x, "item"));
                        }
                } else
                        printf("\nno baseline accepted yet (mcugwctl audit baseline accept)\n");
        }
        if (serious || json_array_size(drift))
                fail("%zu finding(s) of high severity or above, %zu drifted item(s)", serious,
                     json_array_size(drift));
        else
                ret = EXIT_SUCCESS;
out:
        json_decref(d);
        client_close(&cl);
        return ret;
}

static void print_accepted(json_t *d)
{
        printf("baseline accepted (snapshot sha256 %.16s…)\n", jstr(d, "snapshot_sha256"));
}

int do_audit_baseline(int argc, char **argv)
{
        if (argc != 2 || strcmp(argv[1], "accept") != 0)
                return fail("usage: mcugwctl audit baseline accept");
        return run("audit.baseline.accept", NULL, print_accepted);
}
