/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugwctl: the command-line client of the control socket. A subcommand table in the manner of
 * wireguard-tools' wg.c; each entry builds a request, sends it and prints the reply as a human
 * table or, with --json, as JSON for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config.h"
#include "ctl/ctlproto.h"
#include "basic/cred.h"
#include "devices/enroll.h"
#include "devices/onboard.h"
#include "basic/macro.h"
#include "basic/fileio.h"

#define DEFAULT_SOCKET "/run/mcugw/control.sock"

static const char *arg_socket;
static bool arg_json;
static int arg_timeout_ms = 30000;

struct client {
        int fd;
        char *buf; /* received: [off, len) not consumed yet */
        size_t off, len, cap;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
        va_list ap;
        fputs("mcugwctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_FAILURE;
}

static int client_connect(struct client *cl)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *path = arg_socket ? arg_socket : getenv("MCUGW_SOCKET");

        if (!path || !*path)
                path = DEFAULT_SOCKET;
        if (strlen(path) >= sizeof sa.sun_path)
                return fail("socket path too long: %s", path), -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cl->fd < 0 || connect(cl->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                int e = errno;
                fail("cannot connect to %s: %s%s", path, strerror(e),
                     e == ENOENT || e == ECONNREFUSED ? " (is mcugwd running?)"
                     : e == EACCES                    ? " (are you in the mcugw group?)"
                                                      : "");
                return -e;
        }
        return 0;
}

static int client_send(struct client *cl, const char *cmd, json_t *args)
{
        json_t *req = json_pack("{ss so}", "cmd", cmd, "args", args ? args : json_object());
        char *s = json_dumps(req, JSON_COMPACT);
        size_t len, off = 0;

        json_decref(req);
        if (!s)
                return -ENOMEM;
        len = strlen(s);
        s[len++] = '\n'; /* json_dumps leaves room for the NUL we overwrite */
        while (off < len) {
                ssize_t n = send(cl->fd, s + off, len - off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        free(s);
                        return -errno;
                }
                off += (size_t)n;
        }
        free(s);
        return 0;
}

/* Receive what the socket has, growing the buffer as needed: a reply line may be of any size
 * (docs/control-protocol.md); only its array elements are handed on one by one (call_each).
 * timeout < 0 waits forever. Returns the bytes received, 0 on EOF, -errno. */
static ssize_t client_fill(struct client *cl, int timeout)
{
        struct pollfd p = { .fd = cl->fd, .events = POLLIN };
        ssize_t n;

        if (cl->off > 0) {
                memmove(cl->buf, cl->buf + cl->off, cl->len - cl->off);
                cl->len -= cl->off;
                cl->off = 0;
        }
        if (cl->cap - cl->len < 65536) {
                size_t cap = MAX(cl->cap * 2, (size_t)256 * 1024);
                char *b;
                if (cap < cl->cap)
                        return -ENOMEM;
                b = realloc(cl->buf, cap + 1);
                if (!b)
                        return -ENOMEM;
                cl->buf = b;
                cl->cap = cap;
        }
        for (;;) {
                n = poll(&p, 1, timeout);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ETIMEDOUT;
                n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                cl->len += (size_t)n;
                return n;
        }
}

/* Read one line; timeout < 0 waits forever (between arriving bytes). Returns length, 0 on EOF,
 * -errno. */
static ssize_t client_read_line(struct client *cl, int timeout, char **ret)
{
        size_t scanned = 0;

        for (;;) {
                char *nl = cl->len > cl->off ? memchr(cl->buf + cl->off + scanned, '\n',
                                                      cl->len - cl->off - scanned)
                                             : NULL;
                ssize_t n;

                if (nl) {
                        size_t l = (size_t)(nl - (cl->buf + cl->off));
                        char *line = memdup_nul(cl->buf + cl->off, l);
                        if (!line)
                                return -ENOMEM;
                        cl->off += l + 1;
                        *ret = line;
                        return (ssize_t)l + 1;
                }
                scanned = cl->len - cl->off;
                n = client_fill(cl, timeout);
                if (n <= 0)
                        return n;
        }
}

/* Read one reply line. Returns 0 with *ret_data, or prints the error. */
static int call_read_reply(struct client *cl, json_t **ret_data)
{
        _cleanup_free_ char *line = NULL, *err = NULL;
        ssize_t n;
        int r;

        n = client_read_line(cl, arg_timeout_ms, &line);
        if (n == 0)
                return fail("the daemon closed the connection without answering"), -1;
        if (n < 0)
                return fail("no reply from the daemon: %s", strerror((int)-n)), -1;
        r = ctlproto_parse_response(line, strlen(line), ret_data, &err);
        if (r == 0)
                return fail("%s", err), -1;
        if (r != 1)
                return fail("malformed reply from the daemon"), -1;
        return 0;
}

/* Send a request and wait for its reply. Returns 0 with *ret_data, or prints the error. */
static int call(struct client *cl, const char *cmd, json_t *args, json_t **ret_data)
{
        _cleanup_free_ char *line = NULL, *err = NULL;
        ssize_t n;
        int r;

        if (client_connect(cl) < 0)
                return -1;
        /* The daemon may refuse a peer and hang up before reading the request: its reply is
         * still in our receive queue, so read it even if the send failed. */
        r = client_send(cl, cmd, args);
        n = client_read_line(cl, arg_timeout_ms, &line);
        if (n <= 0 && r < 0)
                return fail("cannot send request: %s", strerror(-r)), -1;
        if (n == 0)
                return fail("the daemon closed the connection without answering"), -1;
        if (n < 0)
                return fail("no reply from the daemon: %s", strerror((int)-n)), -1;
        r = ctlproto_parse_response(line, strlen(line), ret_data, &err);
        if (r == 0)
                return fail("%s", err), -1;
        if (r != 1)
                return fail("malformed reply from the daemon"), -1;
        return 0;
}

/* Send a request whose reply is an array, and hand its elements to each() as they arrive: a
 * long array reply (CTLPROTO_ARRAY_HEAD …) is never held whole. Returns 0 once the whole array
 * was read, or prints the error. */
static int call_each(struct client *cl, const char *cmd, json_t *args,
                     void (*each)(json_t *elem, void *userdata), void *userdata)
{
        const size_t hl = strlen(CTLPROTO_ARRAY_HEAD);
        struct ctlproto_splitter sp = { 0 };
        json_t *d = NULL, *e;
        ssize_t n = 1;
        size_t i;
        int r;

        if (client_connect(cl) < 0)
                return -1;
        r = client_send(cl, cmd, args);
        while (cl->len - cl->off < hl &&
               (cl->len == cl->off || !memchr(cl->buf + cl->off, '\n', cl->len - cl->off)) &&
               (n = client_fill(cl, arg_timeout_ms)) > 0)
                ;
        if (cl->len - cl->off < hl || memcmp(cl->buf + cl->off, CTLPROTO_ARRAY_HEAD, hl) != 0) {
                /* An error, or a reply in one piece. */
                if (n <= 0 && cl->len == cl->off) {
                        if (r < 0)
                                return fail("cannot send request: %s", strerror(-r)), -1;
                        if (n == 0)
                                return fail("the daemon closed the connection without "
                                            "answering"),
                                       -1;
                        return fail("no reply from the daemon: %s", strerror((int)-n)), -1;
                }
                r = call_read_reply(cl, &d);
                if (r < 0)
                        return r;
                if (!json_is_array(d)) {
                        json_decref(d);
                        return fail("malformed reply from the daemon"), -1;
                }
                json_array_foreach (d, i, e)
                        each(e, userdata);
                json_decref(d);
                return 0;
        }
        cl->off += hl;
        for (;;) {
                size_t len = 0, used = 0;
                int k = ctlproto_split_array(&sp, cl->buf + cl->off, cl->len - cl->off, &len,
                                             &used);
                if (k < 0)
                        return fail("malformed reply from the daemon"), -1;
                if (k == CTLPROTO_SPLIT_MORE) {
                        n = client_fill(cl, arg_timeout_ms);
                        if (n == 0)
                                return fail("the daemon closed the connection in the middle of "
                                            "its reply"),
                                       -1;
                        if (n < 0)
                                return fail("reply interrupted: %s", strerror((int)-n)), -1;
                        continue;
                }
                if (k == CTLPROTO_SPLIT_ELEMENT) {
                        e = json_loadb(cl->buf + cl->off, len, JSON_DECODE_ANY, NULL);
                        if (!e)
                                return fail("malformed reply from the daemon"), -1;
                        each(e, userdata);
                        json_decref(e);
                }
                cl->off += used;
                if (k == CTLPROTO_SPLIT_END)
                        return 0;
        }
}

static void print_json(json_t *v)
{
        char *s = json_dumps(v ? v : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
        if (s)
                puts(s);
        free(s);
}

static void client_close(struct client *cl)
{
        if (cl->fd >= 0)
                close(cl->fd);
        free(cl->buf);
}

/* One request, one reply: print it as JSON or through `human`. args is stolen. */
static int run(const char *cmd, json_t *args, void (*human)(json_t *data))
{
        struct client cl = { .fd = -1 };
        json_t *d = NULL;
        int ret = EXIT_FAILURE;

        if (call(&cl, cmd, args, &d) >= 0) {
                if (arg_json)
                        print_json(d);
                else if (human)
                        human(d);
                ret = EXIT_SUCCESS;
        }
        json_decref(d);
        client_close(&cl);
        return ret;
}

static const char *jstr(json_t *o, const char *k)
{
        const char *s = json_string_value(json_object_get(o, k));
        return s ? s : "";
}

static long long jint(json_t *o, const char *k)
{
        return json_integer_value(json_object_get(o, k));
}

static void format_time(long long ts_us, char *buf, size_t n)
{
        time_t t = (time_t)(ts_us / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void format_duration(long long s, char *buf, size_t n)
{
        if (s >= 86400)
                snprintf(buf, n, "%lldd %lldh %lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
        else if (s >= 3600)
                snprintf(buf, n, "%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
        else if (s >= 60)
                snprintf(buf, n, "%lldm %llds", s / 60, s % 60);
        else
                snprintf(buf, n, "%llds", s);
}

/* The cloud session and the outbox (docs/mqtt.md). */
static void print_status_mqtt(json_t *m, json_t *ob)
{
        if (!m)
                return;
        if (strcmp(jstr(m, "state"), "disabled") == 0)
                printf("MQTT:      disabled (no [MQTT] Host=)\n");
        else {
                char next[48] = "";
                if (json_is_integer(json_object_get(m, "next_attempt_s")))
                        snprintf(next, sizeof next, ", next attempt in %lld s",
                                 jint(m, "next_attempt_s"));
                printf("MQTT:      %s to %s as %s (MQTT %s), %lld connect(s), %lld "
                       "attempt(s)%s\n",
                       jstr(m, "state"), jstr(m, "server"), jstr(m, "client_id"),
                       jstr(m, "protocol"), jint(m, "connects"), jint(m, "attempts"), next);
                printf("Publish:   %lld/s (%lld msgs/s), %lld publishes, %lld acked, %lld in "
                       "flight, %lld rejected%s\n",
                       jint(m, "publishes_per_s"), jint(m, "msgs_per_s"), jint(m, "publishes"),
                       jint(m, "acked"), jint(m, "inflight"), jint(m, "rejected"),
                       json_is_true(json_object_get(m, "batching")) ? ", batched" : "");
                if (*jstr(m, "last_error"))
                        printf("MQTT error: %s\n", jstr(m, "last_error"));
                if (jint(m, "unexpected_messages"))
                        printf("Ignored:   %lld message(s) on unexpected topics (the first on "
                               "each is in the journal)\n",
                               jint(m, "unexpected_messages"));
        }
        if (ob)
                printf("Outbox:    %lld message(s), %lld of %lld bytes, %lld dropped (quota)\n",
                       jint(ob, "rows"), jint(ob, "bytes"), jint(ob, "max_bytes"),
                       jint(ob, "dropped"));
        if (ob && (jint(ob, "refused") || jint(ob, "commit_failures")))
                printf("Outbox:    %lld message(s) refused (devices told to retry), %lld failed "
                       "commit(s)\n",
                       jint(ob, "refused"), jint(ob, "commit_failures"));
        if (ob && json_is_false(json_object_get(json_object_get(ob, "space"), "quota_fits")))
                printf("Warning:   the outbox quota does not fit: it needs ~%lld bytes, the "
                       "database has %lld and its file system %lld free\n",
                       jint(json_object_get(ob, "space"), "needed"),
                       jint(json_object_get(ob, "space"), "db_bytes"),
                       jint(json_object_get(ob, "space"), "fs_free"));
}

/* Fleet provisioning / rotation: one line, only when there is something to say. */
static void print_provisioning(json_t *p)
{
        if (!p || (strcmp(jstr(p, "mode"), "none") == 0 && strcmp(jstr(p, "state"), "idle") == 0))
                return;
        if (json_is_true(json_object_get(p, "complete")))
                printf("Provision: complete, thing %s, certificate %s; the claim is no longer "
                       "used\n",
                       jstr(p, "thing_name"), jstr(p, "certificate_id"));
        else
                printf("Provision: %s %s, %lld attempt(s)\n", jstr(p, "mode"), jstr(p, "state"),
                       jint(p, "attempts"));
        if (*jstr(p, "last_error"))
                printf("Provision error: %s\n", jstr(p, "last_error"));
}

/* "A.B, C.D" of the changed keys that wait for a restart. */
static void print_restart_pending(json_t *pending)
{
        json_t *k;
        size_t i;

        json_array_foreach (pending, i, k)
                printf("%s%s", i ? ", " : "", json_string_value(k));
}

static void print_status(json_t *d)
{
        json_t *files = json_object_get(d, "config_files"), *dev = json_object_get(d, "devices");
        char up[64];

        format_duration(jint(d, "uptime_s"), up, sizeof up);
        printf("Gateway:   %s\n", jstr(d, "gateway"));
        printf("Version:   %s\n", jstr(d, "version"));
        printf("PID:       %lld\n", jint(d, "pid"));
        printf("Uptime:    %s\n", up);
        printf("Config:    %s (%zu file(s), sha256 %.16s…)\n",
               json_string_value(json_array_get(files, 0)), json_array_size(files),
               jstr(d, "config_hash"));
        if (dev)
                printf("Devices:   %lld enrolled: %lld active, %lld pending, %lld quarantined, "
                       "%lld revoked\n",
                       jint(dev, "total"), jint(dev, "active"), jint(dev, "pending"),
                       jint(dev, "quarantined"), jint(dev, "revoked"));
        printf("Audit:     %lld records\n", jint(json_object_get(d, "audit"), "records"));
        printf("Control:   %lld client(s)\n", jint(json_object_get(d, "control"), "clients"));
        if (json_is_object(json_object_get(d, "link"))) {
                json_t *lk = json_object_get(d, "link");
                printf("Link:      key %s; %lld device(s) connected on %lld link(s); %lld auth "
                       "failure(s)\n",
                       jstr(lk, "public_key"), jint(lk, "devices_connected"), jint(lk, "links"),
                       jint(json_object_get(lk, "counters"), "auth_failures"));
        }
        if (json_is_true(json_object_get(json_object_get(d, "ble"), "enabled"))) {
                json_t *b = json_object_get(d, "ble");
                printf("BLE:       %lld of %lld peripheral(s) connected; adapter %s; bus %s%s; "
                       "%lld ignored, %lld flood disconnect(s)\n",
                       jint(b, "peripherals_connected"), jint(b, "peripherals"),
                       *jstr(b, "adapter") ? jstr(b, "adapter") : "none",
                       json_is_true(json_object_get(b, "bus_connected")) ? "up" : "down",
                       json_is_true(json_object_get(b, "bluez")) ? "" : " (no bluetoothd)",
                       jint(b, "ignored"),
                       jint(json_object_get(b, "counters"), "flood_disconnects"));
        }
        printf("Reloads:   %lld ok, %lld failed\n", jint(json_object_get(d, "reloads"), "ok"),
               jint(json_object_get(d, "reloads"), "failed"));
        if (json_array_size(json_object_get(d, "restart_pending"))) {
                printf("Restart:   pending for ");
                print_restart_pending(json_object_get(d, "restart_pending"));
                printf(" (changed; in effect after a restart)\n");
        }
        print_status_mqtt(json_object_get(d, "mqtt"), json_object_get(d, "outbox"));
        print_provisioning(json_object_get(d, "provisioning"));
        if (*jstr(d, "last_error"))
                printf("Last error: %s\n", jstr(d, "last_error"));
}

static int do_status(int argc, char **argv)
{
        if (argc > 1)
                return fail("status: unexpected argument '%s'", argv[1]);
        return run("status", NULL, print_status);
}

static void print_cert(json_t *d)
{
        json_t *c = json_object_get(d, "certificate");
        char nb[32], na[32];
        time_t t;

        printf("File:        %s%s\n", jstr(d, "file"),
               *jstr(d, "in_use") && strcmp(jstr(d, "in_use"), jstr(d, "file")) != 0
                       ? " (not in use)"
                       : "");
        if (*jstr(d, "in_use") && strcmp(jstr(d, "in_use"), jstr(d, "file")) != 0)
                printf("In use:      %s\n", jstr(d, "in_use"));
        if (json_is_object(c)) {
                t = (time_t)jint(c, "not_before");
                strftime(nb, sizeof nb, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
                t = (time_t)jint(c, "not_after");
                strftime(na, sizeof na, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
                printf("Subject:     %s\nIssuer:      %s\nSerial:      %s\n", jstr(c, "subject"),
                       jstr(c, "issuer"), jstr(c, "serial"));
                printf("Not before:  %s\nNot after:   %s (%lld days left)\n", nb, na,
                       jint(c, "days_left"));
                printf("SHA-256:     %s\n", jstr(c, "fingerprint_sha256"));
        } else
                printf("Certificate: none yet\n");
        if (json_is_true(json_object_get(json_object_get(d, "rotation"), "automatic")))
                printf("Rotation:    automatic, %lld days before expiry\n",
                       jint(json_object_get(d, "rotation"), "before_expiry_s") / 86400);
        print_provisioning(json_object_get(d, "provisioning"));
}

static int do_cert_show(int argc, char **argv)
{
        if (argc > 1)
                return fail("cert show: unexpected argument '%s'", argv[1]);
        return run("cert.show", NULL, print_cert);
}

static void print_rotating(json_t *d)
{
        printf("rotation started: new key and CSR sent; the old certificate stays until the new "
               "one has connected (see mcugwctl cert show)\n");
}

static int do_cert_rotate(int argc, char **argv)
{
        if (argc > 1)
                return fail("cert rotate: unexpected argument '%s'", argv[1]);
        return run("cert.rotate", NULL, print_rotating);
}

static void print_reloaded(json_t *d)
{
        json_t *pending = json_object_get(d, "restart_pending");

        printf("configuration reloaded (sha256 %.16s…)\n", jstr(d, "config_hash"));
        if (json_array_size(pending)) {
                printf("waiting for a restart: ");
                print_restart_pending(pending);
                printf(" (changed, still at the running value until mcugwd restarts)\n");
        }
}

static int do_reload(int argc, char **argv)
{
        if (argc > 1)
                return fail("reload: unexpected argument '%s'", argv[1]);
        return run("reload", NULL, print_reloaded);
}

static void print_reconnecting(json_t *d)
{
        if (json_is_true(json_object_get(d, "in_progress")))
                printf("an attempt to connect to %s is under way\n", jstr(d, "server"));
        else
                printf("connecting to %s now\n", jstr(d, "server"));
}

static int do_reconnect(int argc, char **argv)
{
        if (argc > 1)
                return fail("reconnect: unexpected argument '%s'", argv[1]);
        return run("reconnect", NULL, print_reconnecting);
}

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

static const struct option audit_tail_opts[] = {
        { "lines", required_argument, NULL, 'n' },
        { "follow", no_argument, NULL, 'f' },
        {},
};

static int do_audit_tail(int argc, char **argv)
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
                _cleanup_free_ char *line = NULL, *ev = NULL;
                json_t *rec = NULL;
                ssize_t k = client_read_line(&cl, -1, &line);
                if (k <= 0) {
                        if (k < 0)
                                fail("connection lost: %s", strerror((int)-k));
                        else
                                fail("the daemon closed the connection");
                        goto out;
                }
                if (ctlproto_parse_response(line, strlen(line), &rec, &ev) == 2)
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

static int do_audit_verify(int argc, char **argv)
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

static void print_device_row(json_t *d)
{
        char seen[32] = "never";
        long long t = jint(d, "last_seen_us");
        if (t > 0)
                format_time(t, seen, sizeof seen);
        printf("%-20s %-12s %-5s %-12s %-21s %-16s %s\n", jstr(d, "id"), jstr(d, "state"),
               json_is_true(json_object_get(d, "connected")) ? "yes" : "no",
               *jstr(d, "fw_version") ? jstr(d, "fw_version") : "-", seen,
               *jstr(d, "link") ? jstr(d, "link") : "-", jstr(d, "groups"));
}

static void print_devices(json_t *arr)
{
        size_t i;
        json_t *d;
        printf("%-20s %-12s %-5s %-12s %-21s %-16s %s\n", "ID", "STATE", "CONN", "FIRMWARE",
               "LAST SEEN", "LINK", "GROUPS");
        json_array_foreach (arr, i, d)
                print_device_row(d);
        printf("%zu device(s)\n", json_array_size(arr));
}

static void print_device(json_t *d)
{
        const char *k;
        json_t *v;
        json_object_foreach (d, k, v) {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (json_is_string(v))
                        printf("%-16s %s\n", k, json_string_value(v));
                else
                        printf("%-16s %s\n", k, s ? s : "");
                free(s);
        }
}

static const struct option devices_opts[] = {
        { "state", required_argument, NULL, 's' },
        { "group", required_argument, NULL, 'g' },
        {},
};

static int do_devices(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "s:g:", devices_opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        if (device_state_from_string(optarg) < 0) {
                                json_decref(args);
                                return fail("devices: unknown state '%s' (valid: pending, active, "
                                            "quarantined, revoked)",
                                            optarg);
                        }
                        json_object_set_new(args, "state", json_string(optarg));
                        break;
                case 'g': json_object_set_new(args, "group", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (optind < argc) {
                json_decref(args);
                return fail("devices: unexpected argument '%s'", argv[optind]);
        }
        return run("devices", args, print_devices);
}

static int do_device_show(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl device show ID");
        return run("device.show", json_pack("{ss}", "id", argv[1]), print_device);
}

static const struct option device_add_opts[] = {
        { "groups", required_argument, NULL, 'g' },
        { "pending", no_argument, NULL, 'p' },
        {},
};

static int do_device_add(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "g:p", device_add_opts, NULL)) >= 0)
                switch (c) {
                case 'g': json_object_set_new(args, "groups", json_string(optarg)); break;
                case 'p': json_object_set_new(args, "state", json_string("pending")); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 2) {
                json_decref(args);
                return fail("usage: mcugwctl device add ID PUBLIC_KEY [--groups G,H] [--pending]");
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        json_object_set_new(args, "public_key", json_string(argv[optind + 1]));
        return run("device.add", args, print_device_row);
}

/* COMMAND ID [--reason TEXT] for the device verbs. */
static const struct option reason_opts[] = {
        { "reason", required_argument, NULL, 'r' },
        {},
};

static int id_with_reason(const char *cmd, int argc, char **argv, void (*human)(json_t *))
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "r:", reason_opts, NULL)) >= 0)
                switch (c) {
                case 'r': json_object_set_new(args, "reason", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1) {
                json_decref(args);
                return fail("usage: mcugwctl %s ID [--reason TEXT]", cmd);
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        return run(cmd, args, human);
}

static int state_change(const char *cmd, int argc, char **argv)
{
        return id_with_reason(cmd, argc, argv, print_device_row);
}

static int do_device_approve(int argc, char **argv)
{
        return state_change("device.approve", argc, argv);
}

static int do_device_quarantine(int argc, char **argv)
{
        return state_change("device.quarantine", argc, argv);
}

static int do_device_revoke(int argc, char **argv)
{
        return state_change("device.revoke", argc, argv);
}

static int do_device_restore(int argc, char **argv)
{
        return state_change("device.restore", argc, argv);
}

static void print_removed(json_t *d)
{
        printf("%s: removed (its audit history is kept)\n", jstr(d, "id"));
}

static const struct option device_remove_opts[] = {
        { "force", no_argument, NULL, 'f' },
        { "reason", required_argument, NULL, 'r' },
        {},
};

static int do_device_remove(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "fr:", device_remove_opts, NULL)) >= 0)
                switch (c) {
                case 'f': json_object_set_new(args, "force", json_true()); break;
                case 'r': json_object_set_new(args, "reason", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1) {
                json_decref(args);
                return fail("usage: mcugwctl device remove ID [--force] [--reason TEXT]");
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        return run("device.remove", args, print_removed);
}

static int do_device_set_key(int argc, char **argv)
{
        if (argc != 3)
                return fail("usage: mcugwctl device set-key ID PUBLIC_KEY");
        return run("device.set-key", json_pack("{ss ss}", "id", argv[1], "public_key", argv[2]),
                   print_device_row);
}

static void print_imported(json_t *d)
{
        printf("imported %lld device(s)\n", jint(d, "imported"));
}

#define IMPORT_MAX ((size_t)64 * 1024 * 1024)

static const struct option device_import_opts[] = {
        { "format", required_argument, NULL, 'f' },
        {},
};

static int do_device_import(int argc, char **argv)
{
        const char *format = NULL, *path;
        _cleanup_free_ char *content = NULL;
        size_t len = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", device_import_opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1)
                return fail("usage: mcugwctl device import FILE [--format csv|json]");
        if (format && strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
                return fail("device import: unknown format '%s' (valid: csv, json)", format);
        path = argv[optind];
        if (!format) {
                size_t n = strlen(path);
                format = n > 5 && strcmp(path + n - 5, ".json") == 0 ? "json" : "csv";
        }
        if (strcmp(path, "-") != 0) {
                /* A regular file, at most 64 MiB, never a FIFO that blocks the open. */
                char msg[4200];
                if (fileio_read(path, 0, IMPORT_MAX, &content, &len, msg, sizeof msg) < 0)
                        return fail("%s", msg);
        } else {
                size_t cap = 0;
                for (;;) {
                        char *n;
                        size_t k;
                        if (len + 65536 + 1 > cap) {
                                if (cap > IMPORT_MAX)
                                        return fail("%s: file too large", path);
                                n = realloc(content, cap + 65536 + 1);
                                if (!n)
                                        return fail("out of memory");
                                content = n;
                                cap += 65536 + 1;
                        }
                        k = fread(content + len, 1, cap - len - 1, stdin);
                        len += k;
                        if (k == 0)
                                break;
                }
                if (ferror(stdin))
                        return fail("cannot read %s", path);
                content[len] = 0;
        }
        if (memchr(content, 0, len))
                return fail("%s: NUL byte (not a text file?)", path);
        return run("device.import",
                   json_pack("{ss ss ss}", "format", format, "content", content, "name", path),
                   print_imported);
}

/* Create an X25519 key pair; the private key goes to path (owner-only, never overwritten). */
static int write_keypair(const char *path, char pub_b64[45])
{
        uint8_t priv[32], pub[32];
        size_t plen = sizeof priv, publen = sizeof pub;
        char b64[45];
        EVP_PKEY *k;
        int fd, r = -EIO;

        k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
        if (!k || EVP_PKEY_get_raw_private_key(k, priv, &plen) != 1 ||
            EVP_PKEY_get_raw_public_key(k, pub, &publen) != 1) {
                EVP_PKEY_free(k);
                fail("key generation failed");
                goto out;
        }
        EVP_PKEY_free(k);
        key_to_base64(priv, b64);
        key_to_base64(pub, pub_b64);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                fail("cannot create %s: %s%s", path, strerror(errno),
                     errno == EEXIST ? " (refusing to overwrite a key)" : "");
                goto out;
        }
        if (write(fd, b64, 44) != 44 || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
                r = -errno;
                fail("cannot write %s: %s", path, strerror(errno));
                close(fd);
                unlink(path);
                goto out;
        }
        close(fd);
        r = 0;
out:
        OPENSSL_cleanse(priv, sizeof priv);
        OPENSSL_cleanse(b64, sizeof b64);
        return r;
}

/* Generate a device (or any X25519) key pair locally: the private key goes to FILE, owner-only;
 * the public key, the one to enroll, is printed. */
static int do_keygen(int argc, char **argv)
{
        char pub[45];

        if (argc != 2)
                return fail("usage: mcugwctl keygen PRIVATE_KEY_FILE   (prints the public key)");
        if (write_keypair(argv[1], pub) < 0)
                return EXIT_FAILURE;
        if (arg_json)
                printf("{\"private_key_file\": \"%s\", \"public_key\": \"%s\"}\n", argv[1], pub);
        else
                printf("%s\n", pub);
        return EXIT_SUCCESS;
}

/* The public key of a private key read from stdin, as `wg pubkey` does: for a key whose public
 * half was lost, or to check which device a key file belongs to. */
static int do_pubkey(int argc, char **argv)
{
        char buf[256], pub64[45];
        uint8_t priv[32], pub[32];
        size_t n = 0, publen = sizeof pub;
        EVP_PKEY *k = NULL;
        int ret = EXIT_FAILURE;

        if (argc != 1)
                return fail("usage: mcugwctl pubkey < PRIVATE_KEY_FILE   (prints the public key)");
        n = fread(buf, 1, sizeof buf - 1, stdin);
        if (ferror(stdin)) {
                fail("cannot read the private key from stdin");
                goto out;
        }
        buf[n] = 0;
        while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
                buf[--n] = 0;
        if (key_from_base64(buf, n, priv) < 0) {
                fail("a private key is 44 characters of base64 (32 bytes), as mcugwctl keygen "
                     "writes it");
                goto out;
        }
        k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, sizeof priv);
        if (!k || EVP_PKEY_get_raw_public_key(k, pub, &publen) != 1) {
                fail("cannot derive the public key");
                goto out;
        }
        key_to_base64(pub, pub64);
        if (arg_json)
                printf("{\"public_key\": \"%s\"}\n", pub64);
        else
                printf("%s\n", pub64);
        ret = EXIT_SUCCESS;
out:
        EVP_PKEY_free(k);
        OPENSSL_cleanse(buf, sizeof buf);
        OPENSSL_cleanse(priv, sizeof priv);
        return ret;
}

/* For the factory: N key pairs in DIR (PREFIX-0001.key …) and DIR/import.csv listing their public
 * keys, ready for `mcugwctl device import`. The private keys are to be flashed into the MCUs and
 * then destroyed; the gateway never needs them. */
static const struct option factory_keys_opts[] = {
        { "count", required_argument, NULL, 'n' },
        { "prefix", required_argument, NULL, 'p' },
        { "groups", required_argument, NULL, 'g' },
        { "pending", no_argument, NULL, 'P' },
        {},
};

static int do_factory_keys(int argc, char **argv)
{
        const char *prefix = "mcu", *groups = "", *dir;
        _cleanup_fclose_ FILE *csv = NULL;
        char path[4096], groups_norm[ENROLL_GROUPS_MAX + 1], id[ENROLL_ID_MAX + 1];
        bool pending = false;
        long n = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "n:p:g:P", factory_keys_opts, NULL)) >= 0)
                switch (c) {
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 'p': prefix = optarg; break;
                case 'g': groups = optarg; break;
                case 'P': pending = true; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1 || n < 1 || n > 100000)
                return fail("usage: mcugwctl factory-keys DIR --count N (1-100000) [--prefix P] "
                            "[--groups G,H] [--pending]");
        if (enroll_groups_normalize(groups, groups_norm, sizeof groups_norm) < 0)
                return fail("--groups: names of [A-Za-z0-9._-] separated by ','");
        dir = argv[optind];
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return fail("cannot create %s: %s", dir, strerror(errno));
        snprintf(path, sizeof path, "%s/import.csv", dir);
        {
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd < 0)
                        return fail("cannot create %s: %s", path, strerror(errno));
                csv = fdopen(fd, "w");
                if (!csv)
                        return fail("cannot write %s: %s", path, strerror(errno));
        }
        fprintf(csv, "id,public_key,groups,state\n");
        for (long i = 1; i <= n; i++) {
                char pub[45];
                snprintf(id, sizeof id, "%s-%04ld", prefix, i);
                if (!enroll_id_valid(id))
                        return fail("device id %s is not valid: use a shorter --prefix of "
                                    "[A-Za-z0-9._-]",
                                    id);
                snprintf(path, sizeof path, "%s/%s.key", dir, id);
                if (write_keypair(path, pub) < 0)
                        return EXIT_FAILURE;
                fprintf(csv, "%s,%s,\"%s\",%s\n", id, pub, groups_norm,
                        pending ? "pending" : "active");
        }
        if (fflush(csv) != 0)
                return fail("cannot write %s/import.csv", dir);
        printf("%ld key pair(s) in %s; enroll them with: mcugwctl device import %s/import.csv\n", n,
               dir, dir);
        return EXIT_SUCCESS;
}

/* The manufacturer's side of just-in-time onboarding: sign a device's id and public key. */
static const struct option attest_opts[] = {
        { "manufacturer-key", required_argument, NULL, 'k' },
        { "key-id", required_argument, NULL, 'i' },
        {},
};

static int do_attest(int argc, char **argv)
{
        const char *mkey = NULL, *kid = NULL;
        uint8_t pub[ENROLL_KEY_LEN], att[ONBOARD_ATTEST_MAX];
        char err[512], b64[2 * ONBOARD_ATTEST_MAX];
        EVP_PKEY *k = NULL;
        int c, n;

        optind = 0;
        while ((c = getopt_long(argc, argv, "k:i:", attest_opts, NULL)) >= 0)
                switch (c) {
                case 'k': mkey = optarg; break;
                case 'i': kid = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (!mkey || !kid || argc - optind != 2)
                return fail("usage: mcugwctl attest --manufacturer-key KEY.pem --key-id ID "
                            "DEVICE_ID PUBLIC_KEY");
        if (key_from_base64(argv[optind + 1], strlen(argv[optind + 1]), pub) < 0)
                return fail("public key must be 44 characters of base64 (32 bytes)");
        if (cred_load_private_key(mkey, NULL, &k, err, sizeof err) < 0)
                return fail("%s", err);
        n = onboard_attest_sign(k, kid, argv[optind], pub, att, sizeof att);
        EVP_PKEY_free(k);
        if (n < 0)
                return fail("cannot sign: %s (key id and device id must be 1-32 characters of "
                            "[A-Za-z0-9._-], the key EC P-256)",
                            strerror(-n));
        EVP_EncodeBlock((unsigned char *)b64, att, n);
        printf("%s\n", b64);
        return EXIT_SUCCESS;
}

static json_t *export_data;

static void keep_export(json_t *d)
{
        export_data = json_incref(d);
}

/* The registry in the import formats, so that a gateway can be rebuilt or cloned from it. */
static const struct option device_export_opts[] = {
        { "format", required_argument, NULL, 'f' },
        {},
};

static int do_device_export(int argc, char **argv)
{
        const char *format = "csv";
        bool json_out = arg_json;
        size_t i;
        json_t *d;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", device_export_opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("usage: mcugwctl device export [--format csv|json] > FILE");
        if (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
                return fail("device export: unknown format '%s' (valid: csv, json)", format);
        arg_json = false;
        r = run("devices", NULL, keep_export);
        arg_json = json_out;
        if (r != EXIT_SUCCESS)
                return r;
        if (strcmp(format, "json") == 0 || arg_json) {
                json_t *out = json_array();
                json_array_foreach (export_data, i, d)
                        json_array_append_new(out, json_pack("{sO sO sO sO}", "id",
                                                             json_object_get(d, "id"), "public_key",
                                                             json_object_get(d, "public_key"),
                                                             "groups", json_object_get(d, "groups"),
                                                             "state", json_object_get(d, "state")));
                print_json(out);
                json_decref(out);
        } else {
                printf("id,public_key,groups,state\n");
                json_array_foreach (export_data, i, d)
                        printf("%s,%s,\"%s\",%s\n", jstr(d, "id"), jstr(d, "public_key"),
                               jstr(d, "groups"), jstr(d, "state"));
        }
        json_decref(export_data);
        return EXIT_SUCCESS;
}

/* ---- monitoring: metrics, top, rules, audit config, remediation (docs/monitoring.md) ------ */

static double jreal(json_t *o, const char *k)
{
        return json_number_value(json_object_get(o, k));
}

static void format_bytes(double b, char *buf, size_t n)
{
        static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        size_t i = 0;
        while (b >= 1024 && i + 1 < ELEMENTSOF(u)) {
                b /= 1024;
                i++;
        }
        snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

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

static const struct option metrics_opts[] = {
        { "device", required_argument, NULL, 'd' },
        {},
};

static int do_metrics(int argc, char **argv)
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

static const struct option top_opts[] = {
        { "once", no_argument, NULL, 'o' },
        { "interval", required_argument, NULL, 'i' },
        {},
};

static int do_top(int argc, char **argv)
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

static int do_rules(int argc, char **argv)
{
        if (argc > 1)
                return fail("rules: unexpected argument '%s'", argv[1]);
        return run("rules", NULL, print_rules);
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
static int do_audit_config(int argc, char **argv)
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

static int do_audit_baseline(int argc, char **argv)
{
        if (argc != 2 || strcmp(argv[1], "accept") != 0)
                return fail("usage: mcugwctl audit baseline accept");
        return run("audit.baseline.accept", NULL, print_accepted);
}

static void print_done(json_t *d)
{
        printf("%s: %s done\n", jstr(d, "id"), jstr(d, "done"));
}

static int device_remedy(const char *cmd, int argc, char **argv)
{
        return id_with_reason(cmd, argc, argv, print_done);
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

static int do_defender(int argc, char **argv)
{
        if (argc == 2 && strcmp(argv[1], "send") == 0)
                return run("defender.send", NULL, print_defender);
        if (argc != 1)
                return fail("usage: mcugwctl defender [send]");
        return run("defender", NULL, print_defender);
}

static int do_device_disconnect(int argc, char **argv)
{
        return device_remedy("device.disconnect", argc, argv);
}

static int do_device_rotate(int argc, char **argv)
{
        return device_remedy("device.rotate-session", argc, argv);
}

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
                       json_string_value(json_object_get(j, "version")),
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
               json_string_value(json_object_get(j, "version")),
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

static int do_ota_list(int argc, char **argv)
{
        return run("ota.list", json_object(), print_ota_list);
}

static int do_ota_show(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota show ID");
        return run("ota.show", json_pack("{ss}", "id", argv[1]), print_ota_job);
}

static int do_ota_abort(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota abort ID");
        return run("ota.abort", json_pack("{ss}", "id", argv[1]), NULL);
}

/* Follow a job until it ends: one progress line per change (or JSON at the end). */
static int ota_wait(const char *id)
{
        _cleanup_free_ char *last = NULL;

        for (;;) {
                struct client cl = { .fd = -1 };
                json_t *d = NULL;
                const char *st;
                char *now;
                int r = call(&cl, "ota.show", json_pack("{ss}", "id", id), &d);

                client_close(&cl);
                if (r < 0)
                        return EXIT_FAILURE;
                st = json_string_value(json_object_get(d, "state"));
                now = json_dumps(json_object_get(d, "transfers"), JSON_COMPACT);
                if (!arg_json && (!last || !now || strcmp(last, now) != 0)) {
                        print_ota_job(d);
                        fflush(stdout);
                }
                free(last);
                last = now;
                if (st && strcmp(st, "IN_PROGRESS") != 0 && strcmp(st, "QUEUED") != 0 &&
                    strcmp(st, "DOWNLOADING") != 0) {
                        if (arg_json)
                                print_json(d);
                        r = strcmp(st, "SUCCEEDED") == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
                        if (r != EXIT_SUCCESS)
                                fprintf(stderr, "mcugwctl: OTA job %s %s: %s\n", id, st,
                                        json_string_value(json_object_get(d, "reason")) ?: "");
                        json_decref(d);
                        return r;
                }
                json_decref(d);
                usleep(500 * 1000);
        }
}

static const struct option ota_start_opts[] = {
        { "device", required_argument, NULL, 'd' },
        { "group", required_argument, NULL, 'g' },
        { "signature", required_argument, NULL, 's' },
        { "wait", no_argument, NULL, 'w' },
        {},
};

static int do_ota_start(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *args = json_object(), *d = NULL;
        char *abs = NULL, id[80];
        bool wait = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "d:g:s:w", ota_start_opts, NULL)) >= 0)
                switch (c) {
                case 'd': json_object_set_new(args, "device", json_string(optarg)); break;
                case 'g': json_object_set_new(args, "group", json_string(optarg)); break;
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
        if (!wait) {
                if (arg_json)
                        print_json(d);
                else
                        print_ota_job(d);
                json_decref(d);
                return EXIT_SUCCESS;
        }
        json_decref(d);
        return ota_wait(id);
}

struct verb {
        const char *group; /* NULL for top-level verbs */
        const char *name;
        int (*fn)(int argc, char **argv);
        const char *help;
        const struct option *opts; /* its options (NULL: none), for options anywhere */
};

static const struct verb verbs[] = {
        { NULL, "status", do_status, "show the daemon's state", NULL },
        { NULL, "reload", do_reload, "re-read the configuration (kept if invalid)", NULL },
        { NULL, "reconnect", do_reconnect, "connect the cloud session now, not after the backoff",
          NULL },
        { "audit", "tail", do_audit_tail, "show the last audit records [-n N] [--follow]",
          audit_tail_opts },
        { "audit", "verify", do_audit_verify, "check the audit log's hash chain", NULL },
        { "audit", "config", do_audit_config,
          "check the configuration against the security baseline, show drift", NULL },
        { "audit", "baseline", do_audit_baseline, "accept: record the current state as baseline",
          NULL },
        { NULL, "metrics", do_metrics, "gateway and per-device metrics [--device ID]",
          metrics_opts },
        { NULL, "top", do_top, "live metrics, busiest devices first [--once] [--interval S]",
          top_opts },
        { NULL, "rules", do_rules, "list the monitoring rules and what they did", NULL },
        { NULL, "defender", do_defender, "Device Defender reports; send: publish one now", NULL },
        { NULL, "devices", do_devices, "list devices [--state S] [--group G]", devices_opts },
        { "device", "show", do_device_show, "show one device: ID", NULL },
        { "cert", "show", do_cert_show, "the gateway's MQTT certificate, expiry, provisioning",
          NULL },
        { "cert", "rotate", do_cert_rotate, "new key + certificate via the cloud (CSR)", NULL },
        { "ota", "list", do_ota_list, "OTA jobs and their state", NULL },
        { "ota", "show", do_ota_show, "one OTA job with per-device progress: ID", NULL },
        { "ota", "start", do_ota_start,
          "update devices from a signed file: FILE --device ID|--group G [--signature S] "
          "[--wait]",
          ota_start_opts },
        { "ota", "abort", do_ota_abort, "abort an OTA job: ID", NULL },
        { "device", "add", do_device_add, "enroll: ID PUBLIC_KEY [--groups G,H] [--pending]",
          device_add_opts },
        { "device", "approve", do_device_approve, "activate a pending device: ID", reason_opts },
        { "device", "quarantine", do_device_quarantine, "stop relaying a device: ID [--reason R]",
          reason_opts },
        { "device", "restore", do_device_restore, "release a quarantined device: ID", reason_opts },
        { "device", "revoke", do_device_revoke, "revoke a device for good: ID [--reason R]",
          reason_opts },
        { "device", "disconnect", do_device_disconnect, "end a device's session: ID", reason_opts },
        { "device", "rotate-session", do_device_rotate,
          "force a new handshake (fresh session keys): ID", reason_opts },
        { "device", "remove", do_device_remove,
          "forget a device, keep its audit history: ID [--force] [--reason R]",
          device_remove_opts },
        { "device", "set-key", do_device_set_key,
          "replace a device's key, end its session: ID PUBLIC_KEY", NULL },
        { "device", "import", do_device_import, "bulk enroll, all or nothing: FILE (.csv/.json)",
          device_import_opts },
        { "device", "export", do_device_export,
          "the registry as an import file [--format csv|json]", device_export_opts },
        { NULL, "pubkey", do_pubkey, "the public key of a private key read from stdin", NULL },
        { NULL, "keygen", do_keygen, "create a key pair: PRIVATE_KEY_FILE, prints the public key",
          NULL },
        { NULL, "attest", do_attest,
          "sign a device for onboarding: --manufacturer-key K --key-id I DEVICE_ID PUBLIC_KEY",
          attest_opts },
        { NULL, "factory-keys", do_factory_keys,
          "N key pairs + import.csv: DIR --count N [--prefix P] [--groups G]", factory_keys_opts },
};

static void help(void)
{
        printf("Usage: mcugwctl [--socket PATH] [--json] COMMAND [ARGS]\n\n"
               "Query and administer mcugwd over its control socket\n"
               "(default %s, or $MCUGW_SOCKET). Without a command: status.\n\nCommands:\n",
               DEFAULT_SOCKET);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char name[48];
                snprintf(name, sizeof name, "%s%s%s", verbs[i].group ? verbs[i].group : "",
                         verbs[i].group ? " " : "", verbs[i].name);
                printf("  %-22s %s\n", name, verbs[i].help);
        }
        printf("\nOptions (before or after the command):\n"
               "  -s, --socket PATH   control socket\n"
               "  -j, --json          machine-readable output\n"
               "  -t, --timeout SEC   how long to wait for a reply (default 30)\n"
               "  -h, --help          this help, or the command's\n"
               "      --version       version\n");
}

static bool is_group(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].group && strcmp(verbs[i].group, name) == 0)
                        return true;
        return false;
}

/* A group's commands, as `mcugwctl GROUP` shows them (to f). */
static void group_help(FILE *f, const char *group)
{
        fprintf(f, "Usage: mcugwctl %s COMMAND [ARGS]\n\nCommands:\n", group);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].group && strcmp(verbs[i].group, group) == 0)
                        fprintf(f, "  %-16s %s\n", verbs[i].name, verbs[i].help);
}

/* "a, b, c": the top-level verbs and groups, each once. */
static void list_commands(FILE *f)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const char *n = verbs[i].group ? verbs[i].group : verbs[i].name;
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = strcmp(verbs[j].group ? verbs[j].group : verbs[j].name, n) == 0;
                if (!seen)
                        fprintf(f, "%s%s", i ? ", " : "", n);
        }
}

static const struct option *find_option(const struct option *opts, const char *name, size_t len,
                                        int val)
{
        for (; opts && opts->name; opts++)
                if (name ? strlen(opts->name) == len && strncmp(opts->name, name, len) == 0
                         : opts->val == val)
                        return opts;
        return NULL;
}

enum { ARG_VERSION = 0x100 };
static const struct option global_opts[] = {
        { "socket", required_argument, NULL, 's' },    { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },   { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION }, {},
};

static int set_global(int c, const char *value)
{
        switch (c) {
        case 's': arg_socket = value; return 0;
        case 'j': arg_json = true; return 0;
        case 't': arg_timeout_ms = atoi(value) * 1000; return 0;
        case 'h': help(); return 1;
        case ARG_VERSION: printf("mcugwctl %s\n", MCUGW_VERSION); return 1;
        default: return -1;
        }
}

/* Options anywhere (`mcugwctl status --json`, as `networkctl list --json=short`): take the global
 * options out of a command's arguments, leaving the command's own (its opts win where a short
 * letter is both, e.g. `devices -s`) and their values. Stops at "--". Returns the new argc, or
 * -1 for --help (*ret_help) … */
static int strip_globals(int argc, char **argv, const struct option *opts, bool *ret_help)
{
        int out = 1;

        for (int i = 1; i < argc; i++) {
                const char *w = argv[i], *eq;
                const struct option *o = NULL, *g = NULL;
                bool value_next = false;

                if (strcmp(w, "--") == 0) {
                        while (i < argc)
                                argv[out++] = argv[i++];
                        break;
                }
                if (w[0] == '-' && w[1] == '-') {
                        eq = strchr(w + 2, '=');
                        size_t len = eq ? (size_t)(eq - w - 2) : strlen(w + 2);
                        o = find_option(opts, w + 2, len, 0);
                        if (!o)
                                g = find_option(global_opts, w + 2, len, 0);
                        value_next = !eq;
                } else if (w[0] == '-' && w[1] && !w[2]) {
                        o = find_option(opts, NULL, 0, w[1]);
                        if (!o)
                                g = find_option(global_opts, NULL, 0, w[1]);
                        value_next = true;
                        eq = NULL;
                } else
                        eq = NULL;
                if (g) {
                        const char *value = NULL;
                        if (g->has_arg == required_argument) {
                                if (eq)
                                        value = eq + 1;
                                else if (i + 1 < argc)
                                        value = argv[++i];
                                else {
                                        fail("option '%s' requires an argument", w);
                                        return -2;
                                }
                        }
                        if (g->val == 'h') {
                                *ret_help = true;
                                continue;
                        }
                        if (set_global(g->val, value) != 0)
                                return -2;
                        continue;
                }
                argv[out++] = argv[i];
                if (o && o->has_arg == required_argument && value_next && i + 1 < argc)
                        argv[out++] = argv[++i];
        }
        argv[out] = NULL;
        return out;
}

int main(int argc, char **argv)
{
        static char status_arg[] = "status";
        static char *status_argv[] = { status_arg, NULL };
        const struct verb *v = NULL;
        bool verb_help = false;
        int c, skip;

        while ((c = getopt_long(argc, argv, "+s:jt:h", global_opts, NULL)) >= 0) {
                int q = set_global(c, optarg);
                if (q > 0)
                        return EXIT_SUCCESS;
                if (q < 0)
                        return EXIT_FAILURE;
        }
        argc -= optind;
        argv += optind;
        if (argc == 0) {
                /* As wg does: no command shows the state. */
                argc = 1;
                argv = status_argv;
        }

        for (size_t i = 0; i < ELEMENTSOF(verbs) && !v; i++) {
                if (!verbs[i].group && strcmp(argv[0], verbs[i].name) == 0)
                        v = &verbs[i];
                else if (verbs[i].group && strcmp(argv[0], verbs[i].group) == 0 && argc > 1 &&
                         strcmp(argv[1], verbs[i].name) == 0)
                        v = &verbs[i];
        }
        if (!v && is_group(argv[0])) {
                if (argc == 1 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                        group_help(stdout, argv[0]);
                        return EXIT_SUCCESS;
                }
                fail("unknown command '%s %s'", argv[0], argv[1]);
                group_help(stderr, argv[0]);
                return EXIT_FAILURE;
        }
        if (!v) {
                fputs("mcugwctl: unknown command '", stderr);
                fputs(argv[0], stderr);
                fputs("'; commands: ", stderr);
                list_commands(stderr);
                fputs(" (see mcugwctl --help)\n", stderr);
                return EXIT_FAILURE;
        }
        skip = v->group ? 1 : 0;
        argc = strip_globals(argc - skip, argv + skip, v->opts, &verb_help);
        argv += skip;
        if (argc < 0)
                return EXIT_FAILURE;
        if (arg_timeout_ms <= 0)
                return fail("--timeout must be a positive number of seconds");
        if (verb_help) {
                printf("mcugwctl %s%s%s: %s\n", v->group ? v->group : "", v->group ? " " : "",
                       v->name, v->help);
                return EXIT_SUCCESS;
        }
        return v->fn(argc, argv);
}
