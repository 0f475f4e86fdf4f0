/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: the control socket client: connect, send a request, read replies of any size (arrays
 * element by element), and the helpers every command prints with. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "ctl/ctlproto.h"
#include "mcugwctl/mcugwctl.h"

const char *arg_socket;
bool arg_json;
int arg_timeout_ms = 30000;

int fail(const char *fmt, ...)
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
ssize_t client_read_line(struct client *cl, int timeout, char **ret)
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

int client_next_event(struct client *cl, json_t **ret)
{
        _cleanup_free_ char *line = NULL, *ev = NULL;
        ssize_t k = client_read_line(cl, -1, &line);

        *ret = NULL;
        if (k < 0)
                return fail("connection lost: %s", strerror((int)-k)), -1;
        if (k == 0)
                return fail("the daemon closed the connection"), -1;
        if (ctlproto_parse_response(line, strlen(line), ret, &ev) == 2)
                return 1;
        json_decref(*ret);
        *ret = NULL;
        return 0;
}

/* Read one reply line. Returns 0 with *ret_data, or prints the error. send_error: what sending
 * the request returned; the daemon may refuse a peer and hang up before reading the request, and
 * its reply is still in our receive queue, so the reply is read even if the send failed. */
static int call_read_reply(struct client *cl, int send_error, json_t **ret_data)
{
        _cleanup_free_ char *line = NULL, *err = NULL;
        ssize_t n;
        int r;

        n = client_read_line(cl, arg_timeout_ms, &line);
        if (n <= 0 && send_error < 0)
                return fail("cannot send request: %s", strerror(-send_error)), -1;
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
int call(struct client *cl, const char *cmd, json_t *args, json_t **ret_data)
{
        if (client_connect(cl) < 0)
                return -1;
        return call_read_reply(cl, client_send(cl, cmd, args), ret_data);
}

/* Send a request whose reply is an array, and hand its elements to each() as they arrive: a
 * long array reply (CTLPROTO_ARRAY_HEAD …) is never held whole. Returns 0 once the whole array
 * was read, or prints the error. */
int call_each(struct client *cl, const char *cmd, json_t *args,
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
                r = call_read_reply(cl, 0, &d);
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

void print_json(json_t *v)
{
        char *s = json_dumps(v ? v : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
        if (s)
                puts(s);
        free(s);
}

void client_close(struct client *cl)
{
        if (cl->fd >= 0)
                close(cl->fd);
        free(cl->buf);
}

/* One request, one reply: print it as JSON or through `human`. args is stolen. */
int run(const char *cmd, json_t *args, void (*human)(json_t *data))
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

const char *jstr(json_t *o, const char *k)
{
        const char *s = json_string_value(json_object_get(o, k));
        return s ? s : "";
}

long long jint(json_t *o, const char *k)
{
        return json_integer_value(json_object_get(o, k));
}

const char *jlist(json_t *o, const char *k, const char *sep, char *buf, size_t n)
{
        json_t *v = json_object_get(o, k), *x;
        size_t i, off = 0;

        if (json_is_string(v))
                return json_string_value(v);
        if (n)
                buf[0] = 0;
        json_array_foreach (v, i, x) {
                int w = snprintf(buf + off, n - off, "%s%s", i ? sep : "",
                                 json_string_value(x) ?: "");
                if (w < 0 || (size_t)w >= n - off)
                        break;
                off += (size_t)w;
        }
        return buf;
}

void format_time(long long ts_us, char *buf, size_t n)
{
        time_t t = (time_t)(ts_us / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void format_duration(long long s, char *buf, size_t n)
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

double jreal(json_t *o, const char *k)
{
        return json_number_value(json_object_get(o, k));
}

void format_bytes(double b, char *buf, size_t n)
{
        static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        size_t i = 0;
        while (b >= 1024 && i + 1 < ELEMENTSOF(u)) {
                b /= 1024;
                i++;
        }
        snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

void format_age(long long ts_us, char *buf, size_t n)
{
        char d[48];
        long long now = (long long)time(NULL), t = ts_us / 1000000;

        if (ts_us <= 0) {
                snprintf(buf, n, "never");
                return;
        }
        if (t > now) {
                snprintf(buf, n, "just now");
                return;
        }
        format_duration(now - t, d, sizeof d);
        /* "3m 2s ago" reads better without the seconds once there are hours. */
        if (now - t >= 3600)
                *strrchr(d, ' ') = 0;
        snprintf(buf, n, "%s ago", d);
}

void format_time_age(long long ts_us, char *buf, size_t n)
{
        char t[32], a[48];

        if (ts_us <= 0) {
                snprintf(buf, n, "never");
                return;
        }
        format_time(ts_us, t, sizeof t);
        format_age(ts_us, a, sizeof a);
        snprintf(buf, n, "%s (%s)", t, a);
}

const char *reset_cause_name(long long cause)
{
        /* MCUGW_RESET_* of include/mcugw/wire.h, in order. */
        static const char *const names[] = { "unknown",  "power-on",  "pin",   "watchdog",
                                             "software", "brown-out", "fault", "ota" };
        return cause >= 0 && cause < (long long)ELEMENTSOF(names) ? names[cause] : "unknown";
}
