/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "basic/conf-parser.h"
#include "cloud/topic.h"

static const struct {
        const char *name;
        size_t len;
        unsigned var;
        size_t max;
} vars[] = {
        { "{gateway}", 9, TOPIC_VAR_GATEWAY, TOPIC_GATEWAY_MAX },
        { "{device}", 8, TOPIC_VAR_DEVICE, TOPIC_DEVICE_MAX },
        { "{stream}", 8, TOPIC_VAR_STREAM, TOPIC_STREAM_MAX },
};

/* The placeholder starting at p, or -1. */
static int var_at(const char *p)
{
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
                if (strncmp(p, vars[i].name, vars[i].len) == 0)
                        return (int)i;
        return -1;
}

bool topic_level_valid(const char *s, size_t max)
{
        size_t n = 0;
        if (!s || !*s || *s == '$')
                return false;
        for (; *s; s++, n++) {
                unsigned char c = (unsigned char)*s;
                if (c < 0x21 || c > 0x7e || c == '/' || c == '+' || c == '#')
                        return false;
        }
        return n <= max;
}

int topic_template_check(const char *tmpl, unsigned allowed, unsigned required,
                         unsigned whole_level, const char **ret_reason)
{
        size_t max_len = 0;
        unsigned seen = 0, levels = 1;
        bool level_empty = true;
        const char *p;

        if (!*tmpl) {
                *ret_reason = "empty topic";
                return -EINVAL;
        }
        if (*tmpl == '$') {
                *ret_reason = "topics starting with '$' are reserved";
                return -EINVAL;
        }
        if (*tmpl == '/') {
                *ret_reason = "must not start with '/' (empty first level)";
                return -EINVAL;
        }
        for (p = tmpl; *p;) {
                int v;
                if (*p == '/') {
                        if (level_empty) {
                                *ret_reason = "empty topic level";
                                return -EINVAL;
                        }
                        levels++;
                        level_empty = true;
                        max_len++;
                        p++;
                        continue;
                }
                if (*p == '+' || *p == '#') {
                        *ret_reason = "wildcards (+ #) are not allowed in a topic";
                        return -EINVAL;
                }
                if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f) {
                        *ret_reason = "control characters are not allowed";
                        return -EINVAL;
                }
                if (*p == '{') {
                        v = var_at(p);
                        if (v < 0) {
                                *ret_reason = "unknown placeholder (expected {gateway}, {device} "
                                              "or {stream})";
                                return -EINVAL;
                        }
                        if (!(allowed & vars[v].var)) {
                                *ret_reason = "placeholder not allowed in this topic";
                                return -EINVAL;
                        }
                        if ((whole_level & vars[v].var) &&
                            (!level_empty || (p[vars[v].len] && p[vars[v].len] != '/'))) {
                                *ret_reason = "{device} must be a whole topic level here";
                                return -EINVAL;
                        }
                        seen |= vars[v].var;
                        max_len += vars[v].max;
                        level_empty = false;
                        p += vars[v].len;
                        continue;
                }
                if (*p == '}') {
                        *ret_reason = "unbalanced '}'";
                        return -EINVAL;
                }
                level_empty = false;
                max_len++;
                p++;
        }
        if (level_empty) {
                *ret_reason = "empty topic level (trailing '/')";
                return -EINVAL;
        }
        if ((seen & required) != required) {
                *ret_reason = required & TOPIC_VAR_DEVICE ? "must contain {device}"
                                                          : "missing a required placeholder";
                return -EINVAL;
        }
        if (levels > TOPIC_MAX_LEVELS) {
                *ret_reason = "more than 8 topic levels (AWS IoT Core limit)";
                return -EINVAL;
        }
        if (max_len > TOPIC_MAX_LEN) {
                *ret_reason = "may expand to more than 256 bytes (AWS IoT Core limit)";
                return -EINVAL;
        }
        return 0;
}

static int expand(const char *tmpl, const char *gateway, const char *device, uint16_t stream,
                  bool device_wild, char *out, size_t n)
{
        char num[8];
        size_t o = 0;

        if (n == 0)
                return -ENAMETOOLONG;
        for (const char *p = tmpl; *p;) {
                const char *s = NULL;
                size_t l;
                int v = *p == '{' ? var_at(p) : -1;

                if (v < 0) {
                        if (o + 1 >= n)
                                return -ENAMETOOLONG;
                        out[o++] = *p++;
                        continue;
                }
                switch (vars[v].var) {
                case TOPIC_VAR_GATEWAY:
                        if (!topic_level_valid(gateway, TOPIC_GATEWAY_MAX))
                                return -EINVAL;
                        s = gateway;
                        break;
                case TOPIC_VAR_DEVICE:
                        if (device_wild)
                                s = "+";
                        else if (!topic_level_valid(device, TOPIC_DEVICE_MAX))
                                return -EINVAL;
                        else
                                s = device;
                        break;
                case TOPIC_VAR_STREAM:
                        snprintf(num, sizeof num, "%u", (unsigned)stream);
                        s = num;
                        break;
                }
                l = strlen(s);
                if (o + l >= n)
                        return -ENAMETOOLONG;
                memcpy(out + o, s, l);
                o += l;
                p += vars[v].len;
        }
        out[o] = 0;
        return (int)o;
}

int topic_expand(const char *tmpl, const char *gateway, const char *device, uint16_t stream,
                 char *out, size_t n)
{
        return expand(tmpl, gateway, device, stream, false, out, n);
}

int topic_filter(const char *tmpl, const char *gateway, char *out, size_t n)
{
        return expand(tmpl, gateway, NULL, 0, true, out, n);
}

int topic_match_device(const char *tmpl, const char *gateway, const char *topic,
                       char ret_device[TOPIC_DEVICE_MAX + 1])
{
        char filter[TOPIC_MAX_LEN + 1];
        const char *f, *t;
        const char *dev = NULL;
        size_t dev_len = 0;

        if (topic_filter(tmpl, gateway, filter, sizeof filter) < 0)
                return -EINVAL;
        for (f = filter, t = topic;;) {
                const char *fe = strchrnul(f, '/'), *te = strchrnul(t, '/');
                if (fe - f == 1 && *f == '+') {
                        dev = t;
                        dev_len = (size_t)(te - t);
                } else if (fe - f != te - t || memcmp(f, t, (size_t)(fe - f)) != 0)
                        return -ENOENT;
                if (!*fe || !*te) {
                        if (*fe || *te)
                                return -ENOENT;
                        break;
                }
                f = fe + 1;
                t = te + 1;
        }
        if (!dev)
                return -ENOENT;
        if (dev_len == 0 || dev_len > TOPIC_DEVICE_MAX)
                return -EINVAL;
        memcpy(ret_device, dev, dev_len);
        ret_device[dev_len] = 0;
        return topic_level_valid(ret_device, TOPIC_DEVICE_MAX) ? 0 : -EINVAL;
}

/* ---- templates in the configuration ------------------------------------------------------- */

static int parse_topic(const char *v, void *field, unsigned allowed, unsigned required,
                       unsigned whole, const char **reason)
{
        if (topic_template_check(v, allowed, required, whole, reason) < 0)
                return -EINVAL;
        return config_parse_string(v, field, reason);
}

int topic_config_parse_gateway(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY, 0, 0, reason);
}

int topic_config_parse_telemetry(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE | TOPIC_VAR_STREAM,
                           TOPIC_VAR_DEVICE, 0, reason);
}

int topic_config_parse_command(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE,
                           TOPIC_VAR_DEVICE, reason);
}

int topic_config_parse_result(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE, 0,
                           reason);
}
