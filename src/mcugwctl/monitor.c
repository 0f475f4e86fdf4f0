/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: metrics, top, rules, defender (docs/monitoring.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "basic/macro.h"
#include "mcugwctl/mcugwctl.h"

/* ---- monitoring: metrics, top, rules, audit config, remediation (docs/monitoring.md) ------ */

static void print_gateway_metrics(json_t *g)
{
        char rss[32], anon[32], db[32], dfree[32], obytes[32];

        format_bytes((double)jint(g, "rss_bytes"), rss, sizeof rss);
        format_bytes((double)jint(g, "rss_anon_bytes"), anon, sizeof anon);
        format_bytes((double)jint(g, "db_bytes"), db, sizeof db);
        format_bytes((double)jint(g, "disk_free_bytes"), dfree, sizeof dfree);
        format_bytes((double)jint(g, "outbox_bytes"), obytes, sizeof obytes);
        printf("Session:   %s (%lld reconnect(s)), %lld publishes/s, %lld msgs/s\n",
               jstr(g, "session_state"), jint(g, "reconnects"), jint(g, "publishes_per_s"),
               jint(g, "msgs_per_s"));
        printf("Outbox:    %lld msgs, %s, %lld dropped, %lld refused (over share)\n",
               jint(g, "outbox_rows"), obytes, jint(g, "outbox_dropped"),
               jint(g, "outbox_refused"));
        printf("Devices:   %lld connected on %lld link(s)\n", jint(g, "devices_connected"),
               jint(g, "links"));
        printf("Process:   RSS %s (anon %s), CPU %.1f %%, %lld fds\n", rss, anon,
               jreal(g, "cpu_percent"), jint(g, "fds"));
        printf("Disk:      database %s, %s free\n", db, dfree);
}

static void print_device_metrics_header(void)
{
        printf("%-20s %-11s %-4s %9s %9s %10s %10s %6s %6s %6s %6s %8s %8s %s\n", "ID", "STATE",
               "CONN", "MSGS/S", "BYTES/S", "FRAMES IN", "BYTES IN", "AUTHF", "MACERR", "REPLAY",
               "DROPS", "QUEUED", "SENT", "FIRMWARE");
}

static void print_device_metrics(json_t *d)
{
        printf("%-20s %-11s %-4s %9.1f %9.0f %10lld %10lld %6lld %6lld %6lld %6lld %8lld %8lld "
               "%s\n",
               jstr(d, "id"), jstr(d, "state"),
               json_is_true(json_object_get(d, "connected")) ? "yes" : "no", jreal(d, "msgs_per_s"),
               jreal(d, "bytes_per_s"), jint(d, "frames_in"), jint(d, "bytes_in"),
               jint(d, "auth_failures"), jint(d, "mac_errors"), jint(d, "replays"),
               jint(d, "drops"), jint(d, "outbox_rows"), jint(d, "delivered"),
               *jstr(d, "fw_version") ? jstr(d, "fw_version") : "-");
}

static void print_metrics(json_t *m)
{
        json_t *devs = json_object_get(m, "devices"), *d;
        size_t i;

        print_gateway_metrics(json_object_get(m, "gateway"));
        printf("\n");
        print_device_metrics_header();
        json_array_foreach (devs, i, d)
                print_device_metrics(d);
}

const struct option metrics_opts[] = {
        { "device", required_argument, NULL, 'd' },
        {},
};

int do_metrics(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "d:", metrics_opts, NULL)) >= 0)
                switch (c) {
                case 'd': json_object_set_new(args, "device", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (optind < argc) {
                json_decref(args);
                return fail("metrics: unexpected argument '%s'", argv[optind]);
        }
        return run("metrics", args, print_metrics);
}

static volatile sig_atomic_t top_quit;

static void top_on_signal(int sig)
{
        top_quit = 1;
}

static int cmp_msgs_rate(const void *a, const void *b)
{
        double x = jreal(*(json_t *const *)a, "msgs_per_s");
        double y = jreal(*(json_t *const *)b, "msgs_per_s");
        return x < y ? 1 : x > y ? -1 : 0;
}

/* One screen of `top`: the gateway, then the busiest devices first. */
static void top_draw(json_t *m, bool clear, int rows)
{
        json_t *devs = json_object_get(m, "devices");
        size_t n = json_array_size(devs);
        json_t **v = calloc(n ? n : 1, sizeof *v);
        char t[32];

        if (clear)
                fputs("\033[H\033[2J", stdout);
        format_time(jint(m, "ts_us"), t, sizeof t);
        printf("mcugw top — %s — %zu device(s)%s\n\n", t, n, clear ? " — q to quit" : "");
        print_gateway_metrics(json_object_get(m, "gateway"));
        printf("\n");
        print_device_metrics_header();
        for (size_t i = 0; v && i < n; i++)
                v[i] = json_array_get(devs, i);
        if (v)
                qsort(v, n, sizeof *v, cmp_msgs_rate);
        for (size_t i = 0; v && i < n && (rows <= 0 || (int)i < rows); i++)
                print_device_metrics(v[i]);
        free(v);
        fflush(stdout);
}

const struct option top_opts[] = {
        { "once", no_argument, NULL, 'o' },
        { "interval", required_argument, NULL, 'i' },
        {},
};

int do_top(int argc, char **argv)
{
        struct termios saved, raw;
        bool once = false, tty = isatty(STDIN_FILENO), restore = false;
        double interval = 1.0;
        int c, ret = EXIT_SUCCESS;

        optind = 0;
        while ((c = getopt_long(argc, argv, "oi:", top_opts, NULL)) >= 0)
                switch (c) {
                case 'o': once = true; break;
                case 'i':
                        interval = strtod(optarg, NULL);
                        if (interval < 0.2 || interval > 3600)
                                return fail("top: --interval takes 0.2 to 3600 seconds");
                        break;
                default: return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("top: unexpected argument '%s'", argv[optind]);
        if (!once) {
                signal(SIGINT, top_on_signal);
                signal(SIGTERM, top_on_signal);
                if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
                        raw = saved;
                        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
                        raw.c_cc[VMIN] = 0;
                        raw.c_cc[VTIME] = 0;
                        restore = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
                }
                fputs("\033[?25l", stdout); /* hide the cursor */
        }
        while (!top_quit) {
                struct client cl = { .fd = -1 };
                json_t *d = NULL;
                struct winsize ws = { 0 };
                int rows = 0;

                if (call(&cl, "metrics", NULL, &d) < 0) {
                        client_close(&cl);
                        ret = EXIT_FAILURE;
                        break;
                }
                client_close(&cl);
                if (!once && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 10)
                        rows = ws.ws_row - 10;
                if (arg_json)
                        print_json(d);
                else
                        top_draw(d, !once, rows);
                json_decref(d);
                if (once)
                        break;
                {
                        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                        int ms = (int)(interval * 1000);
                        if (poll(&p, tty ? 1 : 0, ms) > 0) {
                                char ch = 0;
                                if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
                                        break;
                        }
                }
        }
        if (!once) {
                fputs("\033[?25h\n", stdout);
                if (restore)
                        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        }
        return ret;
}

static void print_rules(json_t *d)
{
        json_t *rules = json_object_get(d, "rules"), *r;
        size_t i;

        printf("%-20s %-14s %8s %10s %-22s %-12s %-3s %s\n", "NAME", "METRIC", "WINDOW",
               "THRESHOLD", "ACTIONS", "MATCH", "ON", "FILE");
        json_array_foreach (rules, i, r) {
                char w[32], th[24] = "-";
                bool silence = strcmp(jstr(r, "metric"), "silence") == 0;
                if (!silence)
                        snprintf(th, sizeof th, "%lld", jint(r, "threshold"));
                format_duration((silence ? jint(r, "timeout_ms") : jint(r, "window_ms")) / 1000, w,
                                sizeof w);
                printf("%-20s %-14s %8s %10s %-22s %-12s %-3s %s\n", jstr(r, "name"),
                       jstr(r, "metric"), w, th, jstr(r, "actions"),
                       *jstr(r, "group") ? jstr(r, "group") : jstr(r, "match"),
                       json_is_true(json_object_get(r, "enabled")) ? "yes" : "no", jstr(r, "file"));
        }
        printf("%zu rule(s)%s; fired %lld time(s), %lld device(s) throttled now\n",
               json_array_size(rules),
               json_is_true(json_object_get(d, "evaluating")) ? "" : " (evaluation off)",
               jint(d, "fired"), jint(d, "throttled"));
}

int do_rules(int argc, char **argv)
{
        if (argc > 1)
                return fail("rules: unexpected argument '%s'", argv[1]);
        return run("rules", NULL, print_rules);
}

static void print_defender(json_t *d)
{
        printf("Topic:     %s\n", jstr(d, "topic"));
        printf("Interval:  %llds%s\n", jint(d, "interval_s"),
               jint(d, "interval_s") ? "" : " (off)");
        printf("Reports:   %lld sent, %lld accepted, %lld rejected, %lld not sent (offline)\n",
               jint(d, "sent"), jint(d, "accepted"), jint(d, "rejected"), jint(d, "failed"));
        if (jint(d, "last_report_id"))
                printf("Last:      report %lld\n", jint(d, "last_report_id"));
        if (*jstr(d, "last_rejection"))
                printf("Rejection: %s\n", jstr(d, "last_rejection"));
}

int do_defender(int argc, char **argv)
{
        if (argc == 2 && strcmp(argv[1], "send") == 0)
                return run("defender.send", NULL, print_defender);
        if (argc != 1)
                return fail("usage: mcugwctl defender [send]");
        return run("defender", NULL, print_defender);
}
