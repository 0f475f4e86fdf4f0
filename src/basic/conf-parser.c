/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ini.h>
#include <openssl/evp.h>

#include "basic/conf-parser.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"

int config_parse_string(const char *v, void *field, const char **reason)
{
        char **s = field;
        char *n = strdup(v);
        if (!n)
                return -ENOMEM;
        free(*s);
        *s = n;
        return 0;
}

int config_parse_string_opt(const char *v, void *field, const char **reason)
{
        char **s = field;
        if (!*v) {
                free(*s);
                *s = NULL;
                return 0;
        }
        return config_parse_string(v, field, reason);
}

int conf_strv_append(struct conf_strv *l, const char *v)
{
        char **n;
        if (l->n >= CONF_STRV_MAX)
                return -E2BIG;
        n = realloc(l->v, (l->n + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        l->v = n;
        if (!(l->v[l->n] = strdup(v)))
                return -ENOMEM;
        l->n++;
        return 0;
}

void conf_strv_clear(struct conf_strv *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        l->v = NULL;
        l->n = 0;
}

int conf_strv_copy(struct conf_strv *dst, const struct conf_strv *src)
{
        conf_strv_clear(dst);
        if (!src->n)
                return 0;
        if (!(dst->v = calloc(src->n, sizeof *dst->v)))
                return -ENOMEM;
        for (; dst->n < src->n; dst->n++)
                if (!(dst->v[dst->n] = strdup(src->v[dst->n]))) {
                        conf_strv_clear(dst);
                        return -ENOMEM;
                }
        return 0;
}

/* Repeatable key: each line adds an entry, an empty assignment resets (as in systemd units). */
int config_parse_strv(const char *v, void *field, const char **reason)
{
        int r;
        if (!*v) {
                conf_strv_clear(field);
                return 0;
        }
        r = conf_strv_append(field, v);
        if (r == -E2BIG)
                *reason = "too many entries";
        return r;
}

int config_parse_path(const char *v, void *field, const char **reason)
{
        if (v[0] != '/') {
                *reason = "must be an absolute path";
                return -EINVAL;
        }
        if (strlen(v) >= PATH_MAX) {
                *reason = "path too long";
                return -EINVAL;
        }
        return config_parse_string(v, field, reason);
}

/* AF_UNIX paths are limited by sun_path. */
int config_parse_socket_path(const char *v, void *field, const char **reason)
{
        if (strlen(v) >= 108) {
                *reason = "socket path longer than 107 bytes";
                return -EINVAL;
        }
        return config_parse_path(v, field, reason);
}

static int parse_u64(const char *v, uint64_t *ret, int base)
{
        char *end;
        unsigned long long x;

        if (!*v || *v == '-' || isspace((unsigned char)*v))
                return -EINVAL;
        errno = 0;
        x = strtoull(v, &end, base);
        if (errno || end == v)
                return -EINVAL;
        *ret = x;
        return (int)(end - v);
}

int config_parse_mode(const char *v, void *field, const char **reason)
{
        uint64_t m;
        int n = parse_u64(v, &m, 8);
        if (n < 0 || v[n] || m > 0777) {
                *reason = "expected an octal mode such as 0660";
                return -EINVAL;
        }
        *(mode_t *)field = (mode_t)m;
        return 0;
}

int config_parse_unsigned_range(const char *v, unsigned *field, uint64_t min, uint64_t max,
                                const char **reason)
{
        uint64_t x;
        int n = parse_u64(v, &x, 10);
        if (n < 0 || v[n] || x < min || x > max) {
                *reason = "number out of range";
                return -EINVAL;
        }
        *field = (unsigned)x;
        return 0;
}

int config_parse_per_minute(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 100000, reason);
}

/* "64K", "1M", "2G" or plain bytes. */
int config_parse_size(const char *v, void *field, const char **reason)
{
        uint64_t x, mul = 1;
        int n = parse_u64(v, &x, 10);
        if (n < 0)
                goto bad;
        switch (v[n]) {
        case 0: break;
        case 'K':
                mul = 1024;
                n++;
                break;
        case 'M':
                mul = 1024 * 1024;
                n++;
                break;
        case 'G':
                mul = 1024ULL * 1024 * 1024;
                n++;
                break;
        default: goto bad;
        }
        if (v[n] || x > UINT64_MAX / mul)
                goto bad;
        *(uint64_t *)field = x * mul;
        return 0;
bad:
        *reason = "expected a size such as 65536, 64K or 1M";
        return -EINVAL;
}

/* "10ms", "2s", "5min", "1h"; a plain number means seconds (as in systemd). Stored in µs. */
int config_parse_duration(const char *v, void *field, const char **reason)
{
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                { "", 1000000 },         { "us", 1 },         { "ms", 1000 },
                { "s", 1000000 },        { "min", 60000000 }, { "h", 3600000000ULL },
                { "d", 86400000000ULL },
        };
        uint64_t x;
        int n = parse_u64(v, &x, 10);
        if (n < 0)
                goto bad;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strcmp(v + n, units[i].suffix) == 0) {
                        if (x > UINT64_MAX / units[i].usec)
                                goto bad;
                        *(uint64_t *)field = x * units[i].usec;
                        return 0;
                }
bad:
        *reason = "expected a duration such as 10ms, 2s or 5min";
        return -EINVAL;
}

int conf_parse_boolean(const char *v)
{
        static const char *const yes[] = { "yes", "true", "on", "1" };
        static const char *const no[] = { "no", "false", "off", "0" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcmp(v, yes[i]) == 0)
                        return 1;
                if (strcmp(v, no[i]) == 0)
                        return 0;
        }
        return -EINVAL;
}

int config_parse_bool(const char *v, void *field, const char **reason)
{
        int b = conf_parse_boolean(v);
        if (b < 0) {
                *reason = "expected yes or no";
                return b;
        }
        *(int *)field = b;
        return 0;
}

int config_parse_port(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 65535, reason);
}

#define CONF_ERRORS_MAX 1000

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
{
        va_list ap;
        char *m;
        char **n;

        /* Enough to fix a file with; a hostile one must not make us allocate without bound. */
        if (e->n > CONF_ERRORS_MAX)
                return;
        if (e->n == CONF_ERRORS_MAX)
                m = strdup("(more errors not shown)");
        else {
                va_start(ap, fmt);
                if (vasprintf(&m, fmt, ap) < 0)
                        m = NULL;
                va_end(ap);
        }
        if (!m)
                return;
        n = realloc(e->msgs, (e->n + 1) * sizeof *n);
        if (!n) {
                free(m);
                return;
        }
        e->msgs = n;
        e->msgs[e->n++] = m;
}

void conf_errors_clear(struct conf_errors *e)
{
        for (size_t i = 0; i < e->n; i++)
                free(e->msgs[i]);
        free(e->msgs);
        e->msgs = NULL;
        e->n = 0;
}

void conf_errors_print(const struct conf_errors *e, FILE *f, const char *prefix)
{
        for (size_t i = 0; i < e->n; i++)
                if (f)
                        fprintf(f, "%s%s\n", prefix ? prefix : "", e->msgs[i]);
                else
                        log_error("%s%s", prefix ? prefix : "", e->msgs[i]);
}

/* State shared between our line reader and the inih handler for one file. inih (as Debian
 * builds it) gives handlers no line numbers and reads lines of at most INI_MAX_LINE bytes, so we
 * feed it through a reader that counts lines, reports overlong ones and NUL bytes, disables
 * continuation lines and numbers the sections (so repeated sections can be told apart). Files are
 * read whole first (fileio_read(): a regular file, at most FILEIO_CONF_MAX bytes), so that a FIFO,
 * a device or an endless file cannot stall the reader. */
struct ini_reader {
        const char *name;
        const char *text; /* the whole file or string, text_len bytes (may hold NUL bytes) */
        size_t text_len;
        size_t text_off;
        unsigned line;
        unsigned section_index;
        bool nul_reported;
        struct conf_errors *err;
        EVP_MD_CTX *md; /* optional: hash of everything read */
        bool (*section_known)(const char *section);
        conf_ini_fn fn;
        void *userdata;
};

static void ini_hash(struct ini_reader *r, const void *p, size_t n)
{
        if (r->md)
                EVP_DigestUpdate(r->md, p, n);
}

static char *ini_read_line(char *str, int num, void *stream)
{
        struct ini_reader *r = stream;
        const char *s, *nl;
        char *p;
        size_t len, avail;

        if (r->text_off >= r->text_len)
                return NULL;
        s = r->text + r->text_off;
        avail = r->text_len - r->text_off;
        nl = memchr(s, '\n', avail);
        len = nl ? (size_t)(nl - s + 1) : avail;
        r->text_off += len;
        r->line++;
        ini_hash(r, s, len);

        /* A text file has no NUL bytes: report the first line that has one and read each such
         * line as empty (the file is refused anyway, as the error counts). */
        if (memchr(s, 0, len)) {
                if (!r->nul_reported)
                        conf_errors_add(r->err, "%s:%u: NUL byte (not a text file?)", r->name,
                                        r->line);
                r->nul_reported = true;
                str[0] = '\n';
                str[1] = 0;
                return str;
        }

        /* inih reads in chunks of INI_MAX_LINE: report an overlong line and skip it. */
        if (len > (size_t)num - 1 || (len == (size_t)num - 1 && s[len - 1] != '\n')) {
                conf_errors_add(r->err, "%s:%u: line too long (more than %d bytes)", r->name,
                                r->line, num - 2);
                str[0] = '\n';
                str[1] = 0;
                return str;
        }
        memcpy(str, s, len);
        str[len] = 0;

        /* No continuation lines: an indented line is an ordinary line. */
        for (p = str; *p == ' ' || *p == '\t'; p++)
                ;
        if (p != str)
                memmove(str, p, strlen(p) + 1);

        /* Section headers are checked and numbered here, where we know the line. */
        if (str[0] == '[') {
                char *end = strchr(str, ']');
                r->section_index++;
                if (end && r->section_known) {
                        *end = 0;
                        if (!r->section_known(str + 1))
                                conf_errors_add(r->err, "%s:%u: unknown section [%s]", r->name,
                                                r->line, str + 1);
                        *end = ']';
                }
        }
        return str;
}

static int ini_on_line(void *user, const char *section, const char *name, const char *value)
{
        struct ini_reader *r = user;

        if (!*section) {
                conf_errors_add(r->err, "%s:%u: key '%s' outside of any section", r->name, r->line,
                                name);
                return 1;
        }
        r->fn(r->userdata, r->name, r->line, r->section_index, section, name, value);
        return 1;
}

static void ini_run(struct ini_reader *r)
{
        int q = ini_parse_stream(ini_read_line, r, ini_on_line, r);
        if (q > 0)
                conf_errors_add(r->err, "%s:%d: syntax error (expected [Section] or Key=Value)",
                                r->name, q);
        else if (q < 0)
                conf_errors_add(r->err, "%s: could not be parsed", r->name);
}

/* Read one INI file whole (bounded, regular files only); errors name the file. */
static int ini_read_file(const char *path, char **ret, size_t *ret_len, struct conf_errors *err)
{
        char msg[PATH_MAX + 128];
        int r = fileio_read(path, 0, FILEIO_CONF_MAX, ret, ret_len, msg, sizeof msg);

        if (r < 0)
                conf_errors_add(err, "%s", msg);
        return r;
}

int conf_ini_parse_file_extra(const char *path, const struct conf_ini_extra *x, conf_ini_fn fn,
                              void *userdata, struct conf_errors *err)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int q = ini_read_file(path, &text, &len, err);
        struct ini_reader r = { .name = path,
                                .text = text,
                                .text_len = len,
                                .err = err,
                                .md = x ? x->md : NULL,
                                .section_known = x ? x->section_known : NULL,
                                .fn = fn,
                                .userdata = userdata };

        if (q < 0)
                return q;
        ini_hash(&r, path, strlen(path) + 1);
        ini_run(&r);
        return 0;
}

int conf_ini_parse_file(const char *path, conf_ini_fn fn, void *userdata, struct conf_errors *err)
{
        return conf_ini_parse_file_extra(path, NULL, fn, userdata, err);
}

int conf_ini_parse_string_extra(const char *name, const char *text, const struct conf_ini_extra *x,
                                conf_ini_fn fn, void *userdata, struct conf_errors *err)
{
        struct ini_reader r = { .name = name,
                                .text = text,
                                .text_len = strlen(text),
                                .err = err,
                                .md = x ? x->md : NULL,
                                .section_known = x ? x->section_known : NULL,
                                .fn = fn,
                                .userdata = userdata };
        ini_run(&r);
        return 0;
}

int conf_ini_parse_string(const char *name, const char *text, conf_ini_fn fn, void *userdata,
                          struct conf_errors *err)
{
        return conf_ini_parse_string_extra(name, text, NULL, fn, userdata, err);
}
