/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "basic/alloc-util.h"
#include "basic/hexdecoct.h"
#include "devices/enroll.h"
#include "basic/macro.h"

static const char *const state_names[] = {
        [DEVICE_PENDING] = "pending",
        [DEVICE_ACTIVE] = "active",
        [DEVICE_QUARANTINED] = "quarantined",
        [DEVICE_REVOKED] = "revoked",
};

const char *device_state_to_string(enum device_state s)
{
        return (unsigned)s < ELEMENTSOF(state_names) ? state_names[s] : "unknown";
}

int device_state_from_string(const char *s)
{
        for (size_t i = 0; i < ELEMENTSOF(state_names); i++)
                if (strcmp(s, state_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

/* The same rule as mcugw_device_id_valid() on the wire (docs/protocol.md 3.1): this layer does
 * not include the protocol core, so tests/unit/test-enroll.c checks the two agree on every
 * byte. */
bool enroll_id_valid(const char *id)
{
        size_t n = strlen(id);
        if (n == 0 || n > ENROLL_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)id[i]) && !strchr("-_.", id[i]))
                        return false;
        return true;
}

int enroll_groups_join(const json_t *array, char *out, size_t n)
{
        size_t i, off = 0;
        json_t *g;

        if (!json_is_array(array) || n == 0)
                return -EINVAL;
        out[0] = 0;
        json_array_foreach (array, i, g) {
                int k = json_is_string(g) ? snprintf(out + off, n - off, "%s%s", i ? "," : "",
                                                     json_string_value(g))
                                          : -1;
                if (k < 0 || (size_t)k >= n - off)
                        return -EINVAL;
                off += (size_t)k;
        }
        return 0;
}

int enroll_groups_normalize(const char *in, char *out, size_t n)
{
        size_t o = 0;
        const char *p = in;

        while (*p) {
                const char *start, *end;
                size_t len;

                while (*p == ' ' || *p == ',' || *p == ';' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                start = p;
                while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
                        p++;
                end = p;
                len = (size_t)(end - start);
                if (len > 64)
                        return -EINVAL;
                for (const char *q = start; q < end; q++)
                        if (!isalnum((unsigned char)*q) && !strchr("-_.", *q))
                                return -EINVAL;
                if (o + len + 2 > n)
                        return -E2BIG;
                if (o)
                        out[o++] = ',';
                memcpy(out + o, start, len);
                o += len;
        }
        out[o] = 0;
        return 0;
}

void enroll_list_free(struct enroll_list *l)
{
        free(l->v);
        *l = (struct enroll_list){ 0 };
}

static struct enroll_entry *enroll_list_add(struct enroll_list *l)
{
        if (l->n >= ENROLL_MAX_ENTRIES || GREEDY_REALLOC(l->v, l->n_alloc, l->n + 1) < 0)
                return NULL;
        memset(&l->v[l->n], 0, sizeof l->v[0]);
        l->v[l->n].state = DEVICE_ACTIVE;
        l->v[l->n].line = 0;
        return &l->v[l->n++];
}

/* Fill one field of an entry from text; returns a static reason on error. */
static const char *enroll_set(struct enroll_entry *e, const char *key, const char *value)
{
        int s;
        if (strcmp(key, "Id") == 0 || strcmp(key, "id") == 0) {
                if (!enroll_id_valid(value))
                        return "device id must be 1 to 32 characters of [A-Za-z0-9._-]";
                strcpy(e->id, value);
        } else if (strcmp(key, "PublicKey") == 0 || strcmp(key, "public_key") == 0) {
                if (key_from_base64(value, strlen(value), e->key) < 0)
                        return "public key must be 44 characters of base64 (32 bytes)";
        } else if (strcmp(key, "Groups") == 0 || strcmp(key, "groups") == 0) {
                if (enroll_groups_normalize(value, e->groups, sizeof e->groups) < 0)
                        return "groups must be names of [A-Za-z0-9._-] separated by ',' or ';'";
        } else if (strcmp(key, "State") == 0 || strcmp(key, "state") == 0) {
                s = device_state_from_string(value);
                if (s < 0)
                        return "state must be pending, active, quarantined or revoked";
                e->state = (enum device_state)s;
        } else
                return "unknown key";
        return NULL;
}

static bool key_is_zero(const uint8_t *k)
{
        uint8_t acc = 0;
        for (size_t i = 0; i < ENROLL_KEY_LEN; i++)
                acc |= k[i];
        return acc == 0;
}

/* Ids and keys must be unique within one list: entries from `from` on are checked against
 * everything before them too (earlier files of the same directory). */
static int cmp_id(const void *a, const void *b, void *ud)
{
        const struct enroll_entry *v = ud;
        size_t i = *(const size_t *)a, j = *(const size_t *)b;
        int c = strcmp(v[i].id, v[j].id);
        return c ? c : (i > j) - (i < j);
}

static int cmp_key(const void *a, const void *b, void *ud)
{
        const struct enroll_entry *v = ud;
        size_t i = *(const size_t *)a, j = *(const size_t *)b;
        int c = memcmp(v[i].key, v[j].key, ENROLL_KEY_LEN);
        return c ? c : (i > j) - (i < j);
}

/* Ids and keys must be unique within one list: entries from `from` on are checked against
 * everything before them too (earlier files of the same directory). Sorting keeps this
 * O(n log n) for a 100,000-line import, and each entry gets at most one duplicate error. */
static void enroll_check(const char *name, struct enroll_list *l, size_t from,
                         struct conf_errors *err)
{
        size_t *ix;

        for (size_t i = from; i < l->n; i++) {
                if (!l->v[i].id[0])
                        conf_errors_add(err, "%s:%u: device has no Id", name, l->v[i].line);
                if (key_is_zero(l->v[i].key))
                        conf_errors_add(err, "%s:%u: device %s has no PublicKey", name,
                                        l->v[i].line, l->v[i].id);
        }
        if (l->n < 2)
                return;
        ix = malloc(l->n * sizeof *ix);
        if (!ix) {
                conf_errors_add(err, "%s: out of memory", name);
                return;
        }
        for (size_t i = 0; i < l->n; i++)
                ix[i] = i;
        qsort_r(ix, l->n, sizeof *ix, cmp_id, l->v);
        for (size_t k = 1, g = 0; k < l->n; k++) {
                size_t first = ix[g], i = ix[k];
                if (strcmp(l->v[first].id, l->v[i].id) != 0) {
                        g = k; /* a new group of equal ids; ix[g] is its earliest entry */
                        continue;
                }
                if (i >= from && l->v[i].id[0])
                        conf_errors_add(err,
                                        "%s:%u: device id %s defined twice (first at line "
                                        "%u)",
                                        name, l->v[i].line, l->v[i].id, l->v[first].line);
        }
        qsort_r(ix, l->n, sizeof *ix, cmp_key, l->v);
        for (size_t k = 1, g = 0; k < l->n; k++) {
                size_t first = ix[g], i = ix[k];
                if (memcmp(l->v[first].key, l->v[i].key, ENROLL_KEY_LEN) != 0) {
                        g = k;
                        continue;
                }
                if (i >= from && !key_is_zero(l->v[i].key) &&
                    strcmp(l->v[first].id, l->v[i].id) != 0)
                        conf_errors_add(err, "%s:%u: device %s has the same key as %s", name,
                                        l->v[i].line, l->v[i].id, l->v[first].id);
        }
        free(ix);
}

struct dir_state {
        struct enroll_list *list;
        struct conf_errors *err;
        unsigned section;
        struct enroll_entry *cur;
        bool oom;
};

static void dir_on_key(void *userdata, const char *file, unsigned line, unsigned section_index,
                       const char *section, const char *key, const char *value)
{
        struct dir_state *st = userdata;
        const char *reason;

        if (strcmp(section, "Device") != 0) {
                if (st->section != section_index) {
                        conf_errors_add(st->err, "%s:%u: unknown section [%s] (expected [Device])",
                                        file, line, section);
                        st->section = section_index;
                        st->cur = NULL;
                }
                return;
        }
        if (st->section != section_index || !st->cur) {
                st->section = section_index;
                st->cur = enroll_list_add(st->list);
                if (!st->cur) {
                        conf_errors_add(st->err, "%s:%u: too many devices", file, line);
                        return;
                }
                st->cur->line = line;
        }
        reason = enroll_set(st->cur, key, value);
        if (reason)
                conf_errors_add(st->err, "%s:%u: %s=%s: %s", file, line, key, value, reason);
}

static int conf_filter(const struct dirent *d)
{
        return d->d_name[0] != '.' && fnmatch("*.conf", d->d_name, 0) == 0;
}

int enroll_load_dir(const char *dir, struct enroll_list *out, struct conf_errors *err)
{
        struct enroll_list l = { 0 };
        struct dirent **ents = NULL;
        size_t before = err->n;
        int n;

        n = scandir(dir, &ents, conf_filter, alphasort);
        if (n < 0) {
                if (errno == ENOENT) {
                        *out = l;
                        return 0;
                }
                conf_errors_add(err, "%s: cannot read: %s", dir, strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                struct dir_state st = { .list = &l, .err = err };
                size_t from = l.n;
                if (asprintf(&p, "%s/%s", dir, ents[i]->d_name) >= 0) {
                        conf_ini_parse_file(p, dir_on_key, &st, err);
                        enroll_check(p, &l, from, err);
                }
                free(ents[i]);
        }
        free(ents);
        if (err->n > before) {
                enroll_list_free(&l);
                return -EINVAL;
        }
        *out = l;
        return 0;
}

/* Split one CSV line into at most 4 fields, in place; double quotes may enclose a field. */
static int csv_split(char *line, char *fields[4])
{
        char *p = line;
        int n = 0;

        for (;;) {
                char *start, *w, sep;

                if (n == 4)
                        return -E2BIG;
                while (*p == ' ' || *p == '\t')
                        p++;
                if (*p == '"') {
                        start = w = ++p;
                        for (;;) {
                                if (!*p)
                                        return -EINVAL; /* unterminated quote */
                                if (*p == '"' && p[1] == '"') {
                                        *w++ = '"';
                                        p += 2;
                                } else if (*p == '"') {
                                        p++;
                                        break;
                                } else
                                        *w++ = *p++;
                        }
                        while (*p == ' ' || *p == '\t')
                                p++;
                        if (*p && *p != ',')
                                return -EINVAL;
                } else {
                        start = p;
                        while (*p && *p != ',')
                                p++;
                        w = p;
                        while (w > start && (w[-1] == ' ' || w[-1] == '\t'))
                                w--;
                }
                sep = *p;
                *w = 0;
                fields[n++] = start;
                if (!sep)
                        return n;
                p++;
        }
}

int enroll_parse_csv(const char *name, const char *text, struct enroll_list *out,
                     struct conf_errors *err)
{
        static const char *const keys[] = { "id", "public_key", "groups", "state" };
        struct enroll_list l = { 0 };
        size_t before = err->n;
        const char *p = text;
        unsigned line = 0;

        while (*p) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                char buf[1024], *fields[4];
                struct enroll_entry *e;
                int nf;

                line++;
                if (len && p[len - 1] == '\r')
                        len--;
                if (len >= sizeof buf) {
                        conf_errors_add(err, "%s:%u: line too long", name, line);
                        goto next;
                }
                memcpy(buf, p, len);
                buf[len] = 0;
                if (!buf[0] || buf[0] == '#')
                        goto next;
                nf = csv_split(buf, fields);
                if (nf < 2) {
                        conf_errors_add(err, "%s:%u: expected id,public_key[,groups[,state]]", name,
                                        line);
                        goto next;
                }
                if (line == 1 && strcmp(fields[0], "id") == 0)
                        goto next; /* header */
                e = enroll_list_add(&l);
                if (!e) {
                        conf_errors_add(err, "%s:%u: too many devices", name, line);
                        break;
                }
                e->line = line;
                for (int i = 0; i < nf; i++) {
                        const char *reason;
                        if (i >= 2 && !*fields[i])
                                continue;
                        reason = enroll_set(e, keys[i], fields[i]);
                        if (reason)
                                conf_errors_add(err, "%s:%u: %s '%s': %s", name, line, keys[i],
                                                fields[i], reason);
                }
        next:
                if (!nl)
                        break;
                p = nl + 1;
        }
        enroll_check(name, &l, 0, err);
        if (err->n > before) {
                enroll_list_free(&l);
                return -EINVAL;
        }
        *out = l;
        return 0;
}

int enroll_parse_json(const char *name, const char *text, struct enroll_list *out,
                      struct conf_errors *err)
{
        struct enroll_list l = { 0 };
        size_t before = err->n, i;
        json_error_t jerr;
        json_t *root, *o;

        root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                conf_errors_add(err, "%s:%d: invalid JSON: %s", name, jerr.line, jerr.text);
                return -EINVAL;
        }
        if (!json_is_array(root)) {
                conf_errors_add(err, "%s: expected a JSON array of devices", name);
                json_decref(root);
                return -EINVAL;
        }
        json_array_foreach (root, i, o) {
                struct enroll_entry *e;
                const char *k;
                json_t *v;

                if (!json_is_object(o)) {
                        conf_errors_add(err, "%s: entry %zu: not an object", name, i + 1);
                        continue;
                }
                e = enroll_list_add(&l);
                if (!e) {
                        conf_errors_add(err, "%s: entry %zu: too many devices", name, i + 1);
                        break;
                }
                e->line = (unsigned)i + 1;
                json_object_foreach (o, k, v) {
                        char buf[ENROLL_GROUPS_MAX + 1];
                        const char *reason = NULL;

                        if (json_is_string(v))
                                reason = enroll_set(e, k, json_string_value(v));
                        else if (json_is_array(v) && strcmp(k, "groups") == 0)
                                reason = enroll_groups_join(v, buf, sizeof buf) < 0
                                                 ? "groups must be a list of names"
                                                 : enroll_set(e, k, buf);
                        else
                                reason = "must be a string";
                        if (reason)
                                conf_errors_add(err, "%s: entry %zu: \"%s\": %s", name, i + 1, k,
                                                reason);
                }
        }
        json_decref(root);
        enroll_check(name, &l, 0, err);
        if (err->n > before) {
                enroll_list_free(&l);
                return -EINVAL;
        }
        *out = l;
        return 0;
}
