/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/time-util.h"
#include "ctl/ctlproto.h"

static bool cmd_valid(const char *s, size_t n)
{
        if (n == 0 || n > CTL_CMD_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
                      s[i] == '-' || s[i] == '_'))
                        return false;
        return true;
}

int ctlproto_parse_request(const char *line, size_t len, struct ctl_request *ret,
                           const char **ret_error)
{
        json_error_t jerr;
        json_t *root, *cmd, *args;
        const char *key;
        json_t *v;

        root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                *ret_error = "request is not valid JSON";
                return -EBADMSG;
        }
        if (!json_is_object(root)) {
                *ret_error = "request must be a JSON object";
                goto bad;
        }
        json_object_foreach (root, key, v)
                if (strcmp(key, "cmd") != 0 && strcmp(key, "args") != 0) {
                        *ret_error = "request has an unknown member (expected cmd, args)";
                        goto bad;
                }
        cmd = json_object_get(root, "cmd");
        if (!json_is_string(cmd) || !cmd_valid(json_string_value(cmd), json_string_length(cmd))) {
                *ret_error = "request needs \"cmd\": a command name of [a-z0-9._-], at most 64";
                goto bad;
        }
        args = json_object_get(root, "args");
        if (args && !json_is_object(args)) {
                *ret_error = "\"args\" must be an object";
                goto bad;
        }
        memset(ret, 0, sizeof *ret);
        memcpy(ret->cmd, json_string_value(cmd), json_string_length(cmd));
        ret->args = args ? json_incref(args) : json_object();
        json_decref(root);
        if (!ret->args) {
                *ret_error = "out of memory";
                return -ENOMEM;
        }
        return 0;
bad:
        json_decref(root);
        return -EINVAL;
}

void ctl_request_done(struct ctl_request *r)
{
        json_decref(r->args);
        r->args = NULL;
}

static char *dump_line(json_t *o, size_t *ret_len)
{
        char *s, *n;
        size_t len;

        if (!o)
                return NULL;
        s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!s)
                return NULL;
        len = strlen(s);
        n = realloc(s, len + 2);
        if (!n) {
                free(s);
                return NULL;
        }
        n[len] = '\n';
        n[len + 1] = 0;
        *ret_len = len + 1;
        return n;
}

char *ctlproto_ok(json_t *data, size_t *ret_len)
{
        return dump_line(json_pack("{sb so}", "ok", 1, "data", data ? data : json_null()), ret_len);
}

char *ctlproto_error(const char *code, const char *message, size_t *ret_len)
{
        return dump_line(
                json_pack("{sb s{ss ss}}", "ok", 0, "error", "code", code, "message", message),
                ret_len);
}

char *ctlproto_event(const char *event, json_t *data, size_t *ret_len)
{
        return dump_line(json_pack("{ss so}", "event", event, "data", data ? data : json_null()),
                         ret_len);
}

char *ctlproto_array_chunk(json_t *arr, bool first, size_t *ret_len)
{
        char *out = NULL;
        size_t len = 0, cap = 0;
        json_t *v;
        size_t i;

        if (!arr)
                return NULL;
        out = malloc(1);
        if (!out)
                goto fail;
        out[0] = 0;
        json_array_foreach (arr, i, v) {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                size_t n;
                if (!s)
                        goto fail;
                n = strlen(s);
                if (len + n + 2 > cap) {
                        size_t ncap = (len + n + 2) * 2;
                        char *b = realloc(out, ncap);
                        if (!b) {
                                free(s);
                                goto fail;
                        }
                        out = b;
                        cap = ncap;
                }
                if (!first || i > 0)
                        out[len++] = ',';
                memcpy(out + len, s, n);
                len += n;
                out[len] = 0;
                free(s);
        }
        json_decref(arr);
        *ret_len = len;
        return out;
fail:
        free(out);
        json_decref(arr);
        return NULL;
}

static bool json_space(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int ctlproto_split_array(struct ctlproto_splitter *s, const char *buf, size_t len, size_t *ret_len,
                         size_t *ret_used)
{
        for (; s->pos < len; s->pos++) {
                char c = buf[s->pos];

                if (s->closed) {
                        /* After the array: the reply's closing brace, then the newline. */
                        if (c == '}' && s->depth == 0)
                                s->depth = 1;
                        else if (c == '\n') {
                                if (s->depth != 1)
                                        return -EBADMSG;
                                *ret_used = s->pos + 1;
                                *ret_len = 0;
                                *s = (struct ctlproto_splitter){ 0 };
                                return CTLPROTO_SPLIT_END;
                        } else if (!json_space(c))
                                return -EBADMSG;
                        continue;
                }
                if (s->in_string) {
                        if (s->escape)
                                s->escape = false;
                        else if (c == '\\')
                                s->escape = true;
                        else if (c == '"')
                                s->in_string = false;
                        else if (c == '\n')
                                return -EBADMSG;
                        continue;
                }
                switch (c) {
                case '"': s->in_string = true; break;
                case '{':
                case '[':
                        if (++s->depth > 4096)
                                return -EBADMSG;
                        break;
                case '}':
                case ']':
                        if (s->depth > 0) {
                                s->depth--;
                                break;
                        }
                        if (c == '}')
                                return -EBADMSG;
                        /* The array's end: the last element, if any, ends here. */
                        for (size_t i = 0; i < s->pos; i++)
                                if (!json_space(buf[i])) {
                                        *ret_len = s->pos;
                                        *ret_used = s->pos; /* the ']' stays for the next call */
                                        s->pos = 0;
                                        return CTLPROTO_SPLIT_ELEMENT;
                                }
                        s->closed = true;
                        break;
                case ',':
                        if (s->depth > 0)
                                break;
                        *ret_len = s->pos;
                        *ret_used = s->pos + 1;
                        s->pos = 0;
                        return CTLPROTO_SPLIT_ELEMENT;
                case '\n': return -EBADMSG;
                default: break;
                }
        }
        return CTLPROTO_SPLIT_MORE;
}

int ctlproto_parse_response(const char *line, size_t len, json_t **ret_data, char **ret_error)
{
        json_t *root = json_loadb(line, len, 0, NULL), *ok, *ev;
        int r = -EBADMSG;

        if (!json_is_object(root))
                goto out;
        ev = json_object_get(root, "event");
        if (json_is_string(ev)) {
                *ret_error = strdup(json_string_value(ev));
                *ret_data = json_incref(json_object_get(root, "data"));
                r = 2;
                goto out;
        }
        ok = json_object_get(root, "ok");
        if (json_is_true(ok)) {
                *ret_data = json_incref(json_object_get(root, "data"));
                r = 1;
        } else if (json_is_false(ok)) {
                json_t *m = json_object_get(json_object_get(root, "error"), "message");
                *ret_error = strdup(json_is_string(m) ? json_string_value(m) : "unknown error");
                r = 0;
        }
out:
        json_decref(root);
        return r;
}

int ctl_arg_int(json_t *args, const char *key, long long min, long long max, long long def,
                long long *ret, const char **ret_error)
{
        json_t *v = json_object_get(args, key);
        if (!v) {
                *ret = def;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
                *ret_error = "argument out of range or not an integer";
                return -EINVAL;
        }
        *ret = json_integer_value(v);
        return 0;
}

int ctl_arg_bool(json_t *args, const char *key, bool def, bool *ret, const char **ret_error)
{
        json_t *v = json_object_get(args, key);
        if (!v) {
                *ret = def;
                return 0;
        }
        if (!json_is_boolean(v)) {
                *ret_error = "argument must be true or false";
                return -EINVAL;
        }
        *ret = json_is_true(v);
        return 0;
}

int ctl_arg_string(json_t *args, const char *key, size_t max_len, const char **ret,
                   const char **ret_error)
{
        json_t *v = json_object_get(args, key);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max_len ||
            strlen(json_string_value(v)) != json_string_length(v)) {
                *ret_error = "missing or invalid string argument";
                return -EINVAL;
        }
        *ret = json_string_value(v);
        return 0;
}

const char *ctlproto_errno_name(int error)
{
        switch (error < 0 ? -error : error) {
        case EACCES: return "EACCES";
        case EPERM: return "EPERM";
        case EINVAL: return "EINVAL";
        case ENOENT: return "ENOENT";
        case EEXIST: return "EEXIST";
        case EBUSY: return "EBUSY";
        case E2BIG: return "E2BIG";
        case EBADMSG: return "EBADMSG";
        case ENOMEM: return "ENOMEM";
        case EOPNOTSUPP: return "EOPNOTSUPP";
        case ENOSYS: return "ENOSYS";
        default: return "EIO";
        }
}

/* The name of the ISO twin of KEY_us, or false when key does not end in "_us". */
static bool iso_name(const char *key, char *buf, size_t n)
{
        size_t len = strlen(key);

        if (len <= 3 || len - 3 >= n || strcmp(key + len - 3, "_us") != 0)
                return false;
        memcpy(buf, key, len - 3);
        buf[len - 3] = 0;
        return true;
}

static void set_iso(json_t *o, const char *name, json_t *us)
{
        char buf[ISO8601_MAX];

        if (json_is_integer(us) && format_iso8601_usec(buf, json_integer_value(us)) == 0)
                json_object_set_new(o, name, json_string(buf));
        else
                json_object_set_new(o, name, json_null());
}

void ctl_json_set_iso(json_t *o, const char *key_us)
{
        char name[128];

        if (json_is_object(o) && iso_name(key_us, name, sizeof name))
                set_iso(o, name, json_object_get(o, key_us));
}

void ctl_json_add_iso_times(json_t *v)
{
        const char *key;
        json_t *m;
        size_t i;

        if (json_is_array(v)) {
                json_array_foreach (v, i, m)
                        ctl_json_add_iso_times(m);
                return;
        }
        if (!json_is_object(v))
                return;
        /* Members cannot be added while the object is walked: the twins are collected first,
         * a few at a time (an object has at most a handful of instants). */
        for (bool again = true; again;) {
                const char *todo[16];
                size_t n = 0;
                char name[128];

                again = false;
                json_object_foreach (v, key, m) {
                        if (json_is_object(m) || json_is_array(m))
                                ctl_json_add_iso_times(m);
                        else if ((json_is_integer(m) || json_is_null(m)) &&
                                 iso_name(key, name, sizeof name) && !json_object_get(v, name)) {
                                if (n == sizeof todo / sizeof *todo) {
                                        again = true;
                                        break;
                                }
                                todo[n++] = key;
                        }
                }
                for (i = 0; i < n; i++) {
                        iso_name(todo[i], name, sizeof name);
                        set_iso(v, name, json_object_get(v, todo[i]));
                }
        }
}
