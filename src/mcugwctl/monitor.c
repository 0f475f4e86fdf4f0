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

static void print_gateway_metrics(FILE *f, json_t *g)
{
        char rss[32], anon[32], db[32], dfree[32], obytes[32];

        format_bytes((double)jint(g, "rss_bytes"), rss, sizeof rss);
        format_bytes((double)jint(g, "rss_anon_bytes"), anon, sizeof anon);
        format_bytes((double)jint(g, "db_bytes"), db, sizeof db);
        format_bytes((double)jint(g, "disk_free_bytes"), dfree, sizeof dfree);
        format_bytes((double)jint(g, "outbox_bytes"), obytes, sizeof obytes);
        fprintf(f, "Session:   %s (%lld reconnect(s)), %lld publishes/s, %lld msgs/s\n",
                jstr(g, "session_state"), jint(g, "reconnects"), jint(g, "publishes_per_s"),
                jint(g, "msgs_per_s"));
        fprintf(f, "Outbox:    %lld msgs, %s, %lld dropped, %lld refused (over share)\n",
                jint(g, "outbox_rows"), obytes, jint(g, "outbox_dropped"),
                jint(g, "outbox_refused"));
        fprintf(f, "Devices:   %lld connected on %lld link(s)\n", jint(g, "devices_connected"),
                jint(g, "links"));
        fprintf(f, "Process:   RSS %s (anon %s), CPU %.1f %%, %lld fds\n", rss, anon,
                jreal(g, "cpu_percent"), jint(g, "fds"));
        fprintf(f, "Disk:      database %s, %s free\n", db, dfree);
}

static void top_table(FILE *f, json_t **v, size_t n, int cols, int rows);

static void print_metrics(json_t *m)
{
        json_t *devs = json_object_get(m, "devices");
        size_t n = json_array_size(devs);
        _cleanup_free_ json_t **v = calloc(n ? n : 1, sizeof *v);

        print_gateway_metrics(stdout, json_object_get(m, "gateway"));
        printf("\n");
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                v[i] = json_array_get(devs, i);
        /* Not for a terminal: every column, the id column as wide as the longest id. */
        top_table(stdout, v, n, 1 << 16, 0);
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

/* The columns of top's device table, in the order they are given up when the terminal is too
 * narrow (ID, STATE and the rates always stay). */
enum top_kind { TOP_STR, TOP_BOOL, TOP_INT, TOP_RATE };
struct top_col {
        const char *title;
        const char *key;
        enum top_kind kind;
        int width;
};

static const struct top_col top_cols[] = {
        { "STATE", "state", TOP_STR, 11 },         { "CONN", "connected", TOP_BOOL, 4 },
        { "MSGS/S", "msgs_per_s", TOP_RATE, 8 },   { "BYTES/S", "bytes_per_s", TOP_RATE, 9 },
        { "QUEUED", "outbox_rows", TOP_INT, 7 },   { "DROPS", "drops", TOP_INT, 6 },
        { "AUTHF", "auth_failures", TOP_INT, 6 },  { "MACERR", "mac_errors", TOP_INT, 6 },
        { "REPLAY", "replays", TOP_INT, 6 },       { "SENT", "delivered", TOP_INT, 8 },
        { "FRAMES IN", "frames_in", TOP_INT, 10 }, { "BYTES IN", "bytes_in", TOP_INT, 10 },
        { "FIRMWARE", "fw_version", TOP_STR, 12 }, { "HSREPL", "replay_ts", TOP_INT, 6 },
};

#define TOP_ID_MIN 12
#define TOP_ID_MAX 24

/* Sort keys: the key that selects it, the field, and the help text. */
struct top_sort {
        char key;
        const char *field; /* NULL: by id */
        const char *help;
};

static const struct top_sort top_sorts[] = {
        { 'm', "msgs_per_s", "messages/s" },
        { 'b', "bytes_per_s", "bytes/s" },
        { 'o', "outbox_rows", "queued" },
        { 'd', "drops", "drops" },
        { 'e', "mac_errors", "MAC errors" },
        { 'a', "auth_failures", "auth failures" },
        { 'i', NULL, "id" },
};

static const struct top_sort *top_sort = &top_sorts[0];

static int top_cmp(const void *a, const void *b)
{
        json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
        double p, q;

        if (!top_sort->field)
                return strcmp(jstr(x, "id"), jstr(y, "id"));
        p = jreal(x, top_sort->field);
        q = jreal(y, top_sort->field);
        if (p != q)
                return p < q ? 1 : -1;
        return strcmp(jstr(x, "id"), jstr(y, "id"));
}

/* Write line to stdout cut to cols characters (UTF-8 aware), then a newline. */
static void top_put_line(const char *line, size_t len, int cols, bool live)
{
        size_t i = 0;
        int chars = 0;

        for (; i < len; i++) {
                if (((unsigned char)line[i] & 0xc0) != 0x80 && ++chars > cols)
                        break;
        }
        fwrite(line, 1, i, stdout);
        /* Erase the rest of the terminal line instead of clearing the screen: no flicker. */
        fputs(live ? "\033[K\n" : "\n", stdout);
}

static void top_cell(json_t *d, const struct top_col *c, char *buf, size_t n)
{
        json_t *v = json_object_get(d, c->key);

        switch (c->kind) {
        case TOP_STR: snprintf(buf, n, "%s", json_string_value(v) ?: "-"); break;
        case TOP_BOOL: snprintf(buf, n, "%s", json_is_true(v) ? "yes" : "no"); break;
        case TOP_INT: snprintf(buf, n, "%lld", (long long)json_integer_value(v)); break;
        case TOP_RATE: snprintf(buf, n, "%.1f", json_number_value(v)); break;
        }
        if (!*buf)
                snprintf(buf, n, "-");
        /* A number too wide for its column in k/M/G rather than cut. */
        if ((c->kind == TOP_INT || c->kind == TOP_RATE) && (int)strlen(buf) > c->width) {
                static const char units[] = "kMGT";
                double x = json_number_value(v);
                for (size_t u = 0; u < sizeof units - 1; u++) {
                        x /= 1000;
                        snprintf(buf, n, "%.1f%c", x, units[u]);
                        if ((int)strlen(buf) <= c->width)
                                break;
                }
        }
}

/* Text is left aligned, numbers right; the last column is not padded (no trailing blanks). */
static bool top_left(int c, int ncols)
{
        return top_cols[c].kind == TOP_STR || top_cols[c].kind == TOP_BOOL;
}

/* The device table for a terminal cols wide: an ID column as wide as the longest id (within
 * TOP_ID_MIN..TOP_ID_MAX, longer ones cut in the middle with a "~"), then as many columns as fit.
 */
static void top_table(FILE *f, json_t **v, size_t n, int cols, int rows)
{
        int idw = TOP_ID_MIN, used, ncols = 0;
        char cell[64];

        for (size_t i = 0; i < n; i++)
                idw = MAX(idw, (int)strlen(jstr(v[i], "id")));
        /* Not on a terminal (metrics, top --once into a pipe) nothing is cut. */
        if (cols < (1 << 16))
                idw = MIN(idw, TOP_ID_MAX);
        used = idw;
        while (ncols < (int)ELEMENTSOF(top_cols) && used + 1 + top_cols[ncols].width <= cols)
                used += 1 + top_cols[ncols++].width;
        fprintf(f, "%-*s", idw, "ID");
        for (int c = 0; c < ncols; c++)
                fprintf(f, top_left(c, ncols) ? " %-*s" : " %*s",
                        c == ncols - 1 && top_left(c, ncols) ? 0 : top_cols[c].width,
                        top_cols[c].title);
        fputc('\n', f);
        for (size_t i = 0; i < n && (rows <= 0 || (int)i < rows); i++) {
                const char *id = jstr(v[i], "id");
                int len = (int)strlen(id);
                /* Cut in the middle: ids of a fleet differ at the end (pump-0001, pump-0002). */
                if (len > idw)
                        fprintf(f, "%.*s~%s", (idw - 1) / 2, id,
                                id + len - (idw - 1 - (idw - 1) / 2));
                else
                        fprintf(f, "%-*s", idw, id);
                for (int c = 0; c < ncols; c++) {
                        top_cell(v[i], &top_cols[c], cell, sizeof cell);
                        fprintf(f, top_left(c, ncols) ? " %-*.*s" : " %*.*s",
                                c == ncols - 1 && top_left(c, ncols) ? 0 : top_cols[c].width,
                                top_cols[c].width, cell);
                }
                fputc('\n', f);
        }
}

static void top_help(FILE *f)
{
        fprintf(f, "Keys:\n");
        for (size_t i = 0; i < ELEMENTSOF(top_sorts); i++)
                fprintf(f, "  %c  sort by %s%s\n", top_sorts[i].key, top_sorts[i].help,
                        &top_sorts[i] == top_sort ? " (now)" : "");
        fprintf(f, "  h, ?  this help (any key returns)\n  q  quit\n");
}

/* One screen of `top`: the gateway, then the devices in the chosen order; every line cut to the
 * terminal's width (cols) and the table to its height (rows, 0: all). */
static void top_draw(json_t *m, bool live, int cols, int rows, bool help)
{
        json_t *devs = json_object_get(m, "devices");
        size_t n = json_array_size(devs), len = 0;
        _cleanup_free_ json_t **v = calloc(n ? n : 1, sizeof *v);
        _cleanup_free_ char *buf = NULL;
        FILE *f = open_memstream(&buf, &len);
        char t[32];

        if (!f || !v)
                return;
        format_time(jint(m, "ts_us"), t, sizeof t);
        fprintf(f, "mcugw top - %s - %zu device(s), by %s%s\n\n", t, n, top_sort->help,
                live ? " - h: help, q: quit" : "");
        if (help)
                top_help(f);
        else {
                print_gateway_metrics(f, json_object_get(m, "gateway"));
                fputc('\n', f);
                for (size_t i = 0; i < n; i++)
                        v[i] = json_array_get(devs, i);
                qsort(v, n, sizeof *v, top_cmp);
                top_table(f, v, n, cols, rows);
        }
        fclose(f);
        if (live)
                fputs("\033[H", stdout);
        for (char *p = buf, *nl; p && *p; p = nl + 1) {
                nl = strchr(p, '\n');
                if (!nl) {
                        top_put_line(p, strlen(p), cols, live);
                        break;
                }
                top_put_line(p, (size_t)(nl - p), cols, live);
        }
        if (live)
                fputs("\033[J", stdout); /* below the last line */
        fflush(stdout);
}

const struct option top_opts[] = {
        { "once", no_argument, NULL, 'o' },
        { "interval", required_argument, NULL, 'i' },
        { "sort", required_argument, NULL, 'S' },
        {},
};

static const struct top_sort *top_sort_find(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(top_sorts); i++)
                if ((top_sorts[i].field && strcmp(name, top_sorts[i].field) == 0) ||
                    (!top_sorts[i].field && strcmp(name, "id") == 0))
                        return &top_sorts[i];
        return NULL;
}

int do_top(int argc, char **argv)
{
        struct termios saved, raw;
        bool once = false, tty = isatty(STDIN_FILENO), restore = false, help = false;
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
                case 'S':
                        top_sort = top_sort_find(optarg);
                        if (!top_sort)
                                return fail("top: unknown sort key '%s' (valid: msgs_per_s, "
                                            "bytes_per_s, outbox_rows, drops, mac_errors, "
                                            "auth_failures, id)",
                                            optarg);
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
                /* The alternate screen (the shell's screen comes back on exit), no cursor. */
                fputs("\033[?1049h\033[H\033[2J\033[?25l", stdout);
        }
        while (!top_quit) {
                struct client cl = { .fd = -1 };
                json_t *d = NULL;
                struct winsize ws = { 0 };
                int rows = 0, cols = 80;
                bool redraw = false;

                if (call(&cl, "metrics", NULL, &d) < 0) {
                        client_close(&cl);
                        ret = EXIT_FAILURE;
                        break;
                }
                client_close(&cl);
                if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
                        cols = ws.ws_col;
                        /* Gateway lines (7) and the header take the rest of the screen. */
                        if (!once && ws.ws_row > 10)
                                rows = ws.ws_row - 10;
                } else if (once)
                        cols = 1 << 16; /* not a terminal: whole lines, all columns */
                if (arg_json)
                        print_json(d);
                else
                        top_draw(d, !once, cols, rows, help);
                if (once) {
                        json_decref(d);
                        break;
                }
                do {
                        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                        char ch = 0;
                        redraw = false;
                        if (poll(&p, tty ? 1 : 0, (int)(interval * 1000)) <= 0 ||
                            read(STDIN_FILENO, &ch, 1) != 1)
                                break;
                        if (ch == 'q' || ch == 'Q') {
                                top_quit = 1;
                                break;
                        }
                        if (help)
                                help = false;
                        else if (ch == 'h' || ch == '?')
                                help = true;
                        for (size_t i = 0; i < ELEMENTSOF(top_sorts); i++)
                                if (ch == top_sorts[i].key)
                                        top_sort = &top_sorts[i];
                        /* A key press shows its effect now, from the data we have. */
                        if (!arg_json)
                                top_draw(d, true, cols, rows, help);
                        redraw = true;
                } while (redraw && !top_quit);
                json_decref(d);
        }
        if (!once) {
                fputs("\033[?25h\033[?1049l", stdout);
                fflush(stdout);
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
                char w[32], th[24] = "-", actions[64];
                bool silence = strcmp(jstr(r, "metric"), "silence") == 0;
                if (!silence)
                        snprintf(th, sizeof th, "%lld", jint(r, "threshold"));
                format_duration((silence ? jint(r, "timeout_ms") : jint(r, "window_ms")) / 1000, w,
                                sizeof w);
                printf("%-20s %-14s %8s %10s %-22s %-12s %-3s %s\n", jstr(r, "name"),
                       jstr(r, "metric"), w, th, jlist(r, "actions", " ", actions, sizeof actions),
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
        printf("Interval:  %llds%s\n", jint(d, "interval_ms") / 1000,
               jint(d, "interval_ms") ? "" : " (off)");
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
