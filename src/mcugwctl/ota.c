/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: the ota group: jobs, their progress, start and abort (docs/ota.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/time-util.h"
#include "mcugwctl/mcugwctl.h"

/* ---- ota ---------------------------------------------------------------------------------- */

static void print_ota_list(json_t *d)
{
        size_t i;
        json_t *j;

        printf("%-28s %-6s %-12s %-14s %s\n", "JOB", "SOURCE", "STATE", "VERSION", "DEVICES");
        json_array_foreach (d, i, j) {
                printf("%-28s %-6s %-12s %-14s %lld/%lld ok%s%s\n",
                       json_string_value(json_object_get(j, "id")),
                       json_string_value(json_object_get(j, "source")),
                       json_string_value(json_object_get(j, "state")),
                       *jstr(j, "version") ? jstr(j, "version") : "-",
                       json_integer_value(json_object_get(j, "succeeded")),
                       json_integer_value(json_object_get(j, "devices")),
                       json_object_get(j, "reason") ? "  " : "",
                       json_object_get(j, "reason")
                               ? json_string_value(json_object_get(j, "reason"))
                               : "");
        }
}

static void print_ota_job(json_t *j)
{
        size_t i;
        json_t *x;

        printf("job %s (%s): %s, version %s%s\n", json_string_value(json_object_get(j, "id")),
               json_string_value(json_object_get(j, "source")),
               json_string_value(json_object_get(j, "state")),
               *jstr(j, "version") ? jstr(j, "version") : "-",
               json_is_true(json_object_get(j, "mcuboot")) ? " (MCUboot)" : "");
        if (json_object_get(j, "reason"))
                printf("  reason: %s\n", json_string_value(json_object_get(j, "reason")));
        json_array_foreach (json_object_get(j, "transfers"), i, x) {
                long long pct = json_integer_value(json_object_get(x, "percent"));
                char bar[21];
                memset(bar, '#', (size_t)(pct / 5));
                memset(bar + pct / 5, '.', (size_t)(20 - pct / 5));
                bar[20] = 0;
                printf("  %-24s %-10s [%s] %3lld%% %lld/%lld%s%s\n",
                       json_string_value(json_object_get(x, "device")),
                       json_string_value(json_object_get(x, "state")), bar, pct,
                       json_integer_value(json_object_get(x, "offset")),
                       json_integer_value(json_object_get(x, "size")),
                       json_object_get(x, "reason") ? "  " : "",
                       json_object_get(x, "reason")
                               ? json_string_value(json_object_get(x, "reason"))
                               : "");
        }
}

int do_ota_list(int argc, char **argv)
{
        return run("ota.list", json_object(), print_ota_list);
}

int do_ota_show(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota show ID");
        return run("ota.show", json_pack("{ss}", "id", argv[1]), print_ota_job);
}

int do_ota_abort(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota abort ID");
        return run("ota.abort", json_pack("{ss}", "id", argv[1]), NULL);
}

/* What `ota start --wait` remembers of one transfer between two looks: where its rate is
 * measured from, and what was last printed (for the plain, not-a-terminal output). */
struct wait_xfer {
        char device[72];
        double t0;
        long long off0;
        char last_state[16];
        long long last_decile;
};

#define WAIT_MAX_XFERS 4096

/* "ota-0001  sending     [#####.....]  48%  28.1 KiB of 58.6 KiB  9.4 KiB/s  ETA 3s" */
static void format_progress(json_t *x, struct wait_xfer *w, double now, char *buf, size_t n)
{
        long long off = jint(x, "offset"), size = jint(x, "size"), pct = jint(x, "percent");
        const char *st = jstr(x, "state");
        char done[32], total[32], rate[40] = "", eta[48] = "", bar[11];

        if (pct < 0 || pct > 100)
                pct = 0;
        memset(bar, '#', (size_t)(pct / 10));
        memset(bar + pct / 10, '.', (size_t)(10 - pct / 10));
        bar[10] = 0;
        format_bytes((double)off, done, sizeof done);
        format_bytes((double)size, total, sizeof total);
        /* The rate since this run first saw the transfer move (a resumed one starts mid-way). */
        if (w->t0 == 0 && off > 0) {
                w->t0 = now;
                w->off0 = off;
        }
        if (strcmp(st, "sending") == 0 && w->t0 > 0 && now - w->t0 >= 0.5 && off > w->off0) {
                double r = (double)(off - w->off0) / (now - w->t0);
                char rb[32], d[32];
                format_bytes(r, rb, sizeof rb);
                snprintf(rate, sizeof rate, "  %s/s", rb);
                format_duration((long long)((double)(size - off) / r + 0.5), d, sizeof d);
                snprintf(eta, sizeof eta, "  ETA %s", d);
        }
        snprintf(buf, n, "%-24s %-10s [%s] %3lld%%  %s of %s%s%s%s%s", jstr(x, "device"), st, bar,
                 pct, done, total, rate, eta, *jstr(x, "reason") ? "  " : "", jstr(x, "reason"));
}

static struct wait_xfer *wait_find(struct wait_xfer *ws, size_t *n, const char *dev)
{
        for (size_t i = 0; i < *n; i++)
                if (strcmp(ws[i].device, dev) == 0)
                        return &ws[i];
        if (*n >= WAIT_MAX_XFERS)
                return NULL;
        ws[*n] = (struct wait_xfer){ .last_decile = -1 };
        snprintf(ws[*n].device, sizeof ws[*n].device, "%s", dev);
        return &ws[(*n)++];
}

/* Follow a job until it ends. On a terminal one line per device, redrawn in place; otherwise a
 * plain line when a device changes state or passes another 10 % (a log stays short). With
 * --json, only the final job. */
static int ota_wait(const char *id)
{
        _cleanup_free_ struct wait_xfer *ws = calloc(WAIT_MAX_XFERS, sizeof *ws);
        bool tty = !arg_json && isatty(STDOUT_FILENO);
        size_t n_ws = 0, drawn = 0;
        struct winsize win = { 0 };

        if (!ws)
                return fail("out of memory");
        for (;;) {
                struct client cl = { .fd = -1 };
                json_t *d = NULL, *x;
                const char *st;
                double now = (double)now_monotonic_usec() / 1e6;
                size_t i;
                int r = call(&cl, "ota.show", json_pack("{ss}", "id", id), &d);

                client_close(&cl);
                if (r < 0)
                        return EXIT_FAILURE;
                st = jstr(d, "state");
                /* In place only while every device has a line on the screen: the cursor cannot
                 * go back above its top. */
                if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &win) == 0 && win.ws_row > 0 &&
                    json_array_size(json_object_get(d, "transfers")) + 2 > win.ws_row)
                        tty = false;
                if (tty && drawn)
                        printf("\033[%zuA", drawn); /* back to the first device line */
                drawn = 0;
                json_array_foreach (json_object_get(d, "transfers"), i, x) {
                        struct wait_xfer *w = wait_find(ws, &n_ws, jstr(x, "device"));
                        long long decile = jint(x, "percent") / 10;
                        char line[512];

                        if (!w || arg_json)
                                continue;
                        format_progress(x, w, now, line, sizeof line);
                        if (tty) {
                                printf("\r%s\033[K\n", line);
                                drawn++;
                        } else if (strcmp(w->last_state, jstr(x, "state")) != 0 ||
                                   decile != w->last_decile) {
                                printf("%s\n", line);
                        }
                        snprintf(w->last_state, sizeof w->last_state, "%s", jstr(x, "state"));
                        w->last_decile = decile;
                }
                fflush(stdout);
                if (*st && strcmp(st, "IN_PROGRESS") != 0 && strcmp(st, "QUEUED") != 0 &&
                    strcmp(st, "DOWNLOADING") != 0) {
                        if (arg_json)
                                print_json(d);
                        else
                                printf("job %s %s: %lld of %lld device(s) updated%s%s\n", id, st,
                                       jint(d, "succeeded"), jint(d, "devices"),
                                       *jstr(d, "version") ? " to " : "", jstr(d, "version"));
                        r = strcmp(st, "SUCCEEDED") == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
                        if (r != EXIT_SUCCESS)
                                fprintf(stderr, "mcugwctl: OTA job %s %s: %s\n", id, st,
                                        jstr(d, "reason"));
                        json_decref(d);
                        return r;
                }
                json_decref(d);
                usleep(500 * 1000);
        }
}

/* A group job updates the group's active devices: which members it leaves out and why
 * ("quarantined", "pending", "revoked"), and which of those it updates are offline now
 * ("offline": they start when they connect). [{"device", "reason", "included"}] */
static json_t *left_out_json(json_t *job, json_t *members)
{
        json_t *out = json_array(), *m, *x;
        size_t i, j;

        json_array_foreach (members, i, m) {
                bool in = false;
                json_array_foreach (json_object_get(job, "transfers"), j, x)
                        in = in || strcmp(jstr(x, "device"), jstr(m, "id")) == 0;
                if (!in)
                        json_array_append_new(out, json_pack("{ss ss sb}", "device", jstr(m, "id"),
                                                             "reason", jstr(m, "state"), "included",
                                                             false));
                else if (!json_is_true(json_object_get(m, "connected")))
                        json_array_append_new(out,
                                              json_pack("{ss ss sb}", "device", jstr(m, "id"),
                                                        "reason", "offline", "included", true));
        }
        return out;
}

static void print_left_out(json_t *left)
{
        json_t *x;
        size_t i;

        json_array_foreach (left, i, x)
                if (json_is_true(json_object_get(x, "included")))
                        printf("offline:  %s (updated when it connects)\n", jstr(x, "device"));
                else
                        printf("left out: %s (%s)\n", jstr(x, "device"), jstr(x, "reason"));
}

const struct option ota_start_opts[] = {
        { "device", required_argument, NULL, 'd' },
        { "group", required_argument, NULL, 'g' },
        { "signature", required_argument, NULL, 's' },
        { "wait", no_argument, NULL, 'w' },
        {},
};

int do_ota_start(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *args = json_object(), *d = NULL;
        char *abs = NULL, id[80];
        const char *group = NULL;
        bool wait = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "d:g:s:w", ota_start_opts, NULL)) >= 0)
                switch (c) {
                case 'd': json_object_set_new(args, "device", json_string(optarg)); break;
                case 'g':
                        json_object_set_new(args, "group", json_string(optarg));
                        group = optarg;
                        break;
                case 's': {
                        char *a = realpath(optarg, NULL);
                        if (!a) {
                                json_decref(args);
                                return fail("%s: %s", optarg, strerror(errno));
                        }
                        json_object_set_new(args, "signature", json_string(a));
                        free(a);
                        break;
                }
                case 'w': wait = true; break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1 ||
            (!json_object_get(args, "device") == !json_object_get(args, "group"))) {
                json_decref(args);
                return fail("usage: mcugwctl ota start FILE --device ID|--group G [--signature "
                            "FILE.sig] [--wait]");
        }
        abs = realpath(argv[optind], NULL);
        if (!abs) {
                json_decref(args);
                return fail("%s: %s", argv[optind], strerror(errno));
        }
        json_object_set_new(args, "file", json_string(abs));
        free(abs);
        r = call(&cl, "ota.start", args, &d);
        client_close(&cl);
        if (r < 0)
                return EXIT_FAILURE;
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(d, "id")) ?: "");
        if (group) {
                json_t *members = NULL;
                struct client c2 = { .fd = -1 };
                if (call(&c2, "devices", json_pack("{ss}", "group", group), &members) >= 0) {
                        json_t *left = left_out_json(d, members);
                        if (!arg_json)
                                print_left_out(left);
                        json_object_set_new(d, "left_out", left);
                }
                client_close(&c2);
                json_decref(members);
        }
        if (!wait) {
                if (arg_json)
                        print_json(d);
                else
                        print_ota_job(d);
                json_decref(d);
                return EXIT_SUCCESS;
        }
        if (!arg_json)
                printf("job %s: version %s, %lld device(s)\n", id,
                       *jstr(d, "version") ? jstr(d, "version") : "-", jint(d, "devices"));
        json_decref(d);
        return ota_wait(id);
}
