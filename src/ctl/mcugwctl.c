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
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config.h"
#include "ctlproto.h"
#include "enroll.h"
#include "macro.h"

#define DEFAULT_SOCKET "/run/mcugw/control.sock"
#define MAX_LINE (16 * 1024 * 1024)

static const char *arg_socket;
static bool arg_json;
static int arg_timeout_ms = 30000;

struct client {
        int fd;
        char *buf;
        size_t len, cap;
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
                     e == ENOENT || e == ECONNREFUSED ? " (is mcugwd running?)" :
                     e == EACCES ? " (are you in the mcugw group?)" : "");
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

/* Read one line; timeout < 0 waits forever. Returns length, 0 on EOF, -errno. */
static ssize_t client_read_line(struct client *cl, int timeout, char **ret)
{
        for (;;) {
                char *nl = cl->buf ? memchr(cl->buf, '\n', cl->len) : NULL;
                struct pollfd p = { .fd = cl->fd, .events = POLLIN };
                ssize_t n;

                if (nl) {
                        size_t l = (size_t)(nl - cl->buf);
                        char *line = strndup(cl->buf, l);
                        if (!line)
                                return -ENOMEM;
                        memmove(cl->buf, nl + 1, cl->len - l - 1);
                        cl->len -= l + 1;
                        *ret = line;
                        return (ssize_t)l + 1;
                }
                if (cl->len + 65536 > cl->cap) {
                        char *b;
                        if (cl->cap >= MAX_LINE)
                                return -E2BIG;
                        b = realloc(cl->buf, cl->cap + 65536 + 1);
                        if (!b)
                                return -ENOMEM;
                        cl->buf = b;
                        cl->cap += 65536;
                }
                n = poll(&p, 1, timeout);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == 0)
                        return -ETIMEDOUT;
                n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return 0;
                cl->len += (size_t)n;
        }
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
        printf("Reloads:   %lld ok, %lld failed\n", jint(json_object_get(d, "reloads"), "ok"),
               jint(json_object_get(d, "reloads"), "failed"));
        if (*jstr(d, "last_error"))
                printf("Last error: %s\n", jstr(d, "last_error"));
}

static int do_status(int argc, char **argv)
{
        if (argc > 1)
                return fail("status: unexpected argument '%s'", argv[1]);
        return run("status", NULL, print_status);
}

static void print_reloaded(json_t *d)
{
        printf("configuration reloaded (sha256 %.16s…)\n", jstr(d, "config_hash"));
}

static int do_reload(int argc, char **argv)
{
        if (argc > 1)
                return fail("reload: unexpected argument '%s'", argv[1]);
        return run("reload", NULL, print_reloaded);
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
        printf("%6lld  %s  %-14s %-24s %-20s %s\n", jint(r, "seq"), t, jstr(r, "actor"),
               jstr(r, "event"), jstr(r, "subject"), details ? details : "");
        free(details);
}

static int do_audit_tail(int argc, char **argv)
{
        static const struct option opts[] = {
                { "lines", required_argument, NULL, 'n' },
                { "follow", no_argument, NULL, 'f' },
                {},
        };
        struct client cl = { .fd = -1 };
        json_t *d = NULL;
        long long n = 20;
        bool follow = false;
        int c, ret = EXIT_FAILURE;
        char *end;

        optind = 0;
        while ((c = getopt_long(argc, argv, "n:f", opts, NULL)) >= 0)
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

        if (call(&cl, "audit.tail", json_pack("{sI sb}", "n", (json_int_t)n, "follow", follow),
                 &d) < 0)
                goto out;
        if (arg_json && !follow)
                print_json(d);
        else {
                size_t i;
                json_t *r;
                if (!arg_json)
                        printf("%6s  %-20s  %-14s %-24s %-20s %s\n", "SEQ", "TIME", "ACTOR",
                               "EVENT", "SUBJECT", "DETAILS");
                json_array_foreach(d, i, r)
                        print_audit_record(r);
        }
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
        json_decref(d);
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
        json_array_foreach(arr, i, d)
                print_device_row(d);
        printf("%zu device(s)\n", json_array_size(arr));
}

static void print_device(json_t *d)
{
        const char *k;
        json_t *v;
        json_object_foreach(d, k, v) {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (json_is_string(v))
                        printf("%-16s %s\n", k, json_string_value(v));
                else
                        printf("%-16s %s\n", k, s ? s : "");
                free(s);
        }
}

static int do_devices(int argc, char **argv)
{
        static const struct option opts[] = {
                { "state", required_argument, NULL, 's' },
                { "group", required_argument, NULL, 'g' },
                {},
        };
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "s:g:", opts, NULL)) >= 0)
                switch (c) {
                case 's': json_object_set_new(args, "state", json_string(optarg)); break;
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

static int do_device_add(int argc, char **argv)
{
        static const struct option opts[] = {
                { "groups", required_argument, NULL, 'g' },
                { "pending", no_argument, NULL, 'p' },
                {},
        };
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "g:p", opts, NULL)) >= 0)
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

static int state_change(const char *cmd, int argc, char **argv)
{
        static const struct option opts[] = {
                { "reason", required_argument, NULL, 'r' },
                {},
        };
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "r:", opts, NULL)) >= 0)
                switch (c) {
                case 'r': json_object_set_new(args, "reason", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1) {
                json_decref(args);
                return fail("usage: mcugwctl %s ID [--reason TEXT]", cmd);
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        return run(cmd, args, print_device_row);
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

static void print_imported(json_t *d)
{
        printf("imported %lld device(s)\n", jint(d, "imported"));
}

static int do_device_import(int argc, char **argv)
{
        static const struct option opts[] = {
                { "format", required_argument, NULL, 'f' },
                {},
        };
        const char *format = NULL, *path;
        _cleanup_free_ char *content = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t len = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1)
                return fail("usage: mcugwctl device import FILE [--format csv|json]");
        path = argv[optind];
        if (!format) {
                size_t n = strlen(path);
                format = n > 5 && strcmp(path + n - 5, ".json") == 0 ? "json" : "csv";
        }
        f = strcmp(path, "-") == 0 ? NULL : fopen(path, "re");
        if (!f && strcmp(path, "-") != 0)
                return fail("cannot open %s: %s", path, strerror(errno));
        {
                FILE *in = f ? f : stdin;
                size_t cap = 0;
                for (;;) {
                        char *n;
                        size_t k;
                        if (len + 65536 + 1 > cap) {
                                if (cap > 64 * 1024 * 1024)
                                        return fail("%s: file too large", path);
                                n = realloc(content, cap + 65536 + 1);
                                if (!n)
                                        return fail("out of memory");
                                content = n;
                                cap += 65536 + 1;
                        }
                        k = fread(content + len, 1, cap - len - 1, in);
                        len += k;
                        if (k == 0)
                                break;
                }
                if (ferror(in))
                        return fail("cannot read %s", path);
                content[len] = 0;
        }
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
                printf("{\"private_key_file\": \"%s\", \"public_key\": \"%s\"}\n", argv[1],
                       pub);
        else
                printf("%s\n", pub);
        return EXIT_SUCCESS;
}

/* For the factory: N key pairs in DIR (PREFIX-0001.key …) and DIR/import.csv listing their public
 * keys, ready for `mcugwctl device import`. The private keys are to be flashed into the MCUs and
 * then destroyed; the gateway never needs them. */
static int do_factory_keys(int argc, char **argv)
{
        static const struct option opts[] = {
                { "count", required_argument, NULL, 'n' },
                { "prefix", required_argument, NULL, 'p' },
                { "groups", required_argument, NULL, 'g' },
                { "pending", no_argument, NULL, 'P' },
                {},
        };
        const char *prefix = "mcu", *groups = "", *dir;
        _cleanup_fclose_ FILE *csv = NULL;
        char path[4096], groups_norm[ENROLL_GROUPS_MAX + 1], id[ENROLL_ID_MAX + 1];
        bool pending = false;
        long n = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "n:p:g:P", opts, NULL)) >= 0)
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
                                    "[A-Za-z0-9._-]", id);
                snprintf(path, sizeof path, "%s/%s.key", dir, id);
                if (write_keypair(path, pub) < 0)
                        return EXIT_FAILURE;
                fprintf(csv, "%s,%s,\"%s\",%s\n", id, pub, groups_norm,
                        pending ? "pending" : "active");
        }
        if (fflush(csv) != 0)
                return fail("cannot write %s/import.csv", dir);
        printf("%ld key pair(s) in %s; enroll them with: mcugwctl device import %s/import.csv\n",
               n, dir, dir);
        return EXIT_SUCCESS;
}

static json_t *export_data;

static void keep_export(json_t *d)
{
        export_data = json_incref(d);
}

/* The registry in the import formats, so that a gateway can be rebuilt or cloned from it. */
static int do_device_export(int argc, char **argv)
{
        static const struct option opts[] = {
                { "format", required_argument, NULL, 'f' },
                {},
        };
        const char *format = "csv";
        bool json_out = arg_json;
        size_t i;
        json_t *d;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("usage: mcugwctl device export [--format csv|json] > FILE");
        if (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
                return fail("--format must be csv or json");
        arg_json = false;
        r = run("devices", NULL, keep_export);
        arg_json = json_out;
        if (r != EXIT_SUCCESS)
                return r;
        if (strcmp(format, "json") == 0 || arg_json) {
                json_t *out = json_array();
                json_array_foreach(export_data, i, d)
                        json_array_append_new(out, json_pack("{sO sO sO sO}", "id",
                                                             json_object_get(d, "id"), "public_key",
                                                             json_object_get(d, "public_key"),
                                                             "groups", json_object_get(d, "groups"),
                                                             "state", json_object_get(d, "state")));
                print_json(out);
                json_decref(out);
        } else {
                printf("id,public_key,groups,state\n");
                json_array_foreach(export_data, i, d)
                        printf("%s,%s,\"%s\",%s\n", jstr(d, "id"), jstr(d, "public_key"),
                               jstr(d, "groups"), jstr(d, "state"));
        }
        json_decref(export_data);
        return EXIT_SUCCESS;
}

struct verb {
        const char *group; /* NULL for top-level verbs */
        const char *name;
        int (*fn)(int argc, char **argv);
        const char *help;
};

static const struct verb verbs[] = {
        { NULL, "status", do_status, "show the daemon's state" },
        { NULL, "reload", do_reload, "re-read the configuration (kept if invalid)" },
        { "audit", "tail", do_audit_tail, "show the last audit records [-n N] [--follow]" },
        { "audit", "verify", do_audit_verify, "check the audit log's hash chain" },
        { NULL, "devices", do_devices, "list devices [--state S] [--group G]" },
        { "device", "show", do_device_show, "show one device: ID" },
        { "device", "add", do_device_add, "enroll: ID PUBLIC_KEY [--groups G,H] [--pending]" },
        { "device", "approve", do_device_approve, "activate a pending device: ID" },
        { "device", "quarantine", do_device_quarantine, "stop relaying a device: ID [--reason R]" },
        { "device", "restore", do_device_restore, "release a quarantined device: ID" },
        { "device", "revoke", do_device_revoke, "revoke a device for good: ID [--reason R]" },
        { "device", "import", do_device_import, "bulk enroll, all or nothing: FILE (.csv/.json)" },
        { "device", "export", do_device_export, "the registry as an import file [--format csv|json]" },
        { NULL, "keygen", do_keygen, "create a key pair: PRIVATE_KEY_FILE, prints the public key" },
        { NULL, "factory-keys", do_factory_keys,
          "N key pairs + import.csv: DIR --count N [--prefix P] [--groups G]" },
};

static void help(void)
{
        printf("Usage: mcugwctl [--socket PATH] [--json] COMMAND [ARGS]\n\n"
               "Query and administer mcugwd over its control socket\n"
               "(default %s, or $MCUGW_SOCKET).\n\nCommands:\n", DEFAULT_SOCKET);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char name[48];
                snprintf(name, sizeof name, "%s%s%s", verbs[i].group ? verbs[i].group : "",
                         verbs[i].group ? " " : "", verbs[i].name);
                printf("  %-22s %s\n", name, verbs[i].help);
        }
        printf("\nOptions:\n"
               "  -s, --socket PATH   control socket\n"
               "  -j, --json          machine-readable output\n"
               "  -t, --timeout SEC   how long to wait for a reply (default 30)\n"
               "  -h, --help          this help\n"
               "      --version       version\n");
}

int main(int argc, char **argv)
{
        enum { ARG_VERSION = 0x100 };
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "+s:jt:h", opts, NULL)) >= 0)
                switch (c) {
                case 's': arg_socket = optarg; break;
                case 'j': arg_json = true; break;
                case 't': arg_timeout_ms = atoi(optarg) * 1000; break;
                case 'h': help(); return EXIT_SUCCESS;
                case ARG_VERSION: printf("mcugwctl %s\n", MCUGW_VERSION); return EXIT_SUCCESS;
                default: return EXIT_FAILURE;
                }
        if (arg_timeout_ms <= 0)
                return fail("--timeout must be a positive number of seconds");
        if (optind >= argc) {
                help();
                return EXIT_FAILURE;
        }
        argc -= optind;
        argv += optind;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (!verbs[i].group && strcmp(argv[0], verbs[i].name) == 0)
                        return verbs[i].fn(argc, argv);
                if (verbs[i].group && strcmp(argv[0], verbs[i].group) == 0 && argc > 1 &&
                    strcmp(argv[1], verbs[i].name) == 0)
                        return verbs[i].fn(argc - 1, argv + 1);
        }
        return fail("unknown command '%s%s%s' (see mcugwctl --help)", argv[0], argc > 1 ? " " : "",
                    argc > 1 ? argv[1] : "");
}
