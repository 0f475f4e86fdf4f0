/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "basic/alloc-util.h"
#include "basic/macro.h"
#include "monitor/rules.h"

static const char *const metric_names[_RULE_METRIC_MAX] = {
        [RULE_METRIC_AUTH_FAILURES] = "auth_failures",
        [RULE_METRIC_MESSAGES] = "messages",
        [RULE_METRIC_BYTES] = "bytes",
        [RULE_METRIC_REPLAYS] = "replays",
        [RULE_METRIC_MAC_ERRORS] = "mac_errors",
        [RULE_METRIC_TAKEOVERS] = "takeovers",
        [RULE_METRIC_REPLAY_TS] = "replay_ts",
        [RULE_METRIC_SILENCE] = "silence",
};

static const struct {
        const char *name;
        unsigned bit;
} action_names[] = {
        { "alert", RULE_ACTION_ALERT },
        { "throttle", RULE_ACTION_THROTTLE },
        { "quarantine", RULE_ACTION_QUARANTINE },
        { "disconnect", RULE_ACTION_DISCONNECT },
};

const char *rule_metric_to_string(enum rule_metric m)
{
        return (unsigned)m < _RULE_METRIC_MAX ? metric_names[m] : "unknown";
}

int rule_metric_from_string(const char *s)
{
        for (int i = 0; i < _RULE_METRIC_MAX; i++)
                if (strcmp(s, metric_names[i]) == 0)
                        return i;
        return -EINVAL;
}

void rule_actions_to_string(unsigned actions, char *buf, size_t n)
{
        size_t off = 0;
        if (n == 0)
                return;
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(action_names); i++)
                if (actions & action_names[i].bit) {
                        int k = snprintf(buf + off, n - off, "%s%s", off ? " " : "",
                                         action_names[i].name);
                        if (k < 0 || (size_t)k >= n - off)
                                return;
                        off += (size_t)k;
                }
}

/* ---- parsing ----------------------------------------------------------------------------- */

/* "10ms", "2s", "5min", "1h"; a plain number means seconds (as in the configuration). */
static int parse_duration_ms(const char *v, uint64_t *ret)
{
        static const struct {
                const char *suffix;
                uint64_t ms;
        } units[] = { { "", 1000 },     { "ms", 1 },      { "s", 1000 },
                      { "min", 60000 }, { "h", 3600000 }, { "d", 86400000 } };
        unsigned long long x;
        char *end;

        if (!isdigit((unsigned char)*v))
                return -EINVAL;
        errno = 0;
        x = strtoull(v, &end, 10);
        if (errno)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strcmp(end, units[i].suffix) == 0) {
                        if (x > UINT64_MAX / units[i].ms)
                                return -EINVAL;
                        *ret = x * units[i].ms;
                        return 0;
                }
        return -EINVAL;
}

static int parse_count(const char *v, uint64_t *ret)
{
        unsigned long long x;
        char *end;
        if (!isdigit((unsigned char)*v))
                return -EINVAL;
        errno = 0;
        x = strtoull(v, &end, 10);
        if (errno || *end || x == 0 || x > UINT32_MAX)
                return -EINVAL;
        *ret = x;
        return 0;
}

static int parse_actions(const char *v, unsigned *ret)
{
        unsigned bits = 0;
        const char *p = v;

        while (*p) {
                size_t len;
                bool found = false;
                while (*p == ' ' || *p == ',' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                len = strcspn(p, " ,\t");
                for (size_t i = 0; i < ELEMENTSOF(action_names); i++)
                        if (strlen(action_names[i].name) == len &&
                            strncmp(p, action_names[i].name, len) == 0) {
                                bits |= action_names[i].bit;
                                found = true;
                        }
                if (!found)
                        return -EINVAL;
                p += len;
        }
        if (!bits)
                return -EINVAL;
        *ret = bits;
        return 0;
}

static bool name_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > RULES_NAME_MAX)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
                        return false;
        return true;
}

static bool printable(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

enum {
        SEEN_NAME = 1u << 0,
        SEEN_METRIC = 1u << 1,
        SEEN_WINDOW = 1u << 2,
        SEEN_THRESHOLD = 1u << 3,
        SEEN_TIMEOUT = 1u << 4,
        SEEN_ACTION = 1u << 5,
        SEEN_MATCH = 1u << 6,
        SEEN_GROUP = 1u << 7,
        SEEN_HOLD = 1u << 8,
        SEEN_ENABLED = 1u << 9,
};

struct parse_state {
        struct rule_set *out;
        size_t first; /* index of this file's first rule in out */
        struct conf_errors *err;
        unsigned section;     /* section_index of the rule being filled, 0 = none */
        unsigned bad_section; /* section_index of an unknown section already reported */
        bool in_rule;
        struct rule cur;
        unsigned seen;
        bool cur_bad; /* an error in this rule: do not add it */
        bool overflow_reported;
        int r; /* -ENOMEM */
};

static void rule_finish(struct parse_state *st)
{
        struct rule *r = &st->cur;
        bool bad = st->cur_bad;

        if (!st->in_rule)
                return;
        st->in_rule = false;
        if (!(st->seen & SEEN_NAME)) {
                conf_errors_add(st->err, "%s:%u: [Rule] needs Name=", r->file, r->line);
                bad = true;
        }
        if (!(st->seen & SEEN_METRIC)) {
                conf_errors_add(st->err, "%s:%u: [Rule] needs Metric=", r->file, r->line);
                bad = true;
        } else if (!(st->seen & SEEN_ACTION)) {
                conf_errors_add(st->err, "%s:%u: [Rule] needs Action=", r->file, r->line);
                bad = true;
        } else if (r->metric == RULE_METRIC_SILENCE) {
                if (!(st->seen & SEEN_TIMEOUT)) {
                        conf_errors_add(st->err, "%s:%u: Metric=silence needs Timeout=", r->file,
                                        r->line);
                        bad = true;
                }
                if (st->seen & (SEEN_WINDOW | SEEN_THRESHOLD)) {
                        conf_errors_add(st->err,
                                        "%s:%u: Metric=silence takes Timeout=, not Window= or "
                                        "Threshold=",
                                        r->file, r->line);
                        bad = true;
                }
        } else {
                if (!(st->seen & SEEN_WINDOW) || !(st->seen & SEEN_THRESHOLD)) {
                        conf_errors_add(st->err,
                                        "%s:%u: Metric=%s needs Window= and Threshold=", r->file,
                                        r->line, rule_metric_to_string(r->metric));
                        bad = true;
                }
                if (st->seen & SEEN_TIMEOUT) {
                        conf_errors_add(st->err, "%s:%u: Timeout= is only for Metric=silence",
                                        r->file, r->line);
                        bad = true;
                }
        }
        if ((st->seen & SEEN_HOLD) && !(r->actions & RULE_ACTION_THROTTLE)) {
                conf_errors_add(st->err, "%s:%u: Hold= is only for Action=throttle", r->file,
                                r->line);
                bad = true;
        }
        if (bad)
                return;
        for (size_t i = 0; i < st->out->n; i++)
                if (strcmp(st->out->v[i].name, r->name) == 0) {
                        conf_errors_add(st->err, "%s:%u: rule '%s' is already defined at %s:%u",
                                        r->file, r->line, r->name, st->out->v[i].file,
                                        st->out->v[i].line);
                        return;
                }
        if (st->out->n >= RULES_MAX) {
                if (!st->overflow_reported)
                        conf_errors_add(st->err, "%s:%u: too many rules (at most %d)", r->file,
                                        r->line, RULES_MAX);
                st->overflow_reported = true;
                return;
        }
        if (r->metric == RULE_METRIC_SILENCE)
                r->window_ms = r->timeout_ms;
        if ((r->actions & RULE_ACTION_THROTTLE) && !(st->seen & SEEN_HOLD))
                r->hold_ms = r->window_ms;
        if (GREEDY_REALLOC(st->out->v, st->out->n_alloc, st->out->n + 1) < 0) {
                st->r = -ENOMEM;
                return;
        }
        st->out->v[st->out->n++] = *r;
}

static void rule_begin(struct parse_state *st, const char *file, unsigned line, unsigned section)
{
        rule_finish(st);
        memset(&st->cur, 0, sizeof st->cur);
        st->cur.enabled = true;
        strcpy(st->cur.match, "*");
        snprintf(st->cur.file, sizeof st->cur.file, "%s", file);
        st->cur.line = line;
        st->section = section;
        st->in_rule = true;
        st->seen = 0;
        st->cur_bad = false;
}

static void on_key(void *userdata, const char *file, unsigned line, unsigned section_index,
                   const char *section, const char *key, const char *value)
{
        struct parse_state *st = userdata;
        struct rule *r = &st->cur;
        unsigned bit = 0;
        int q = 0;
        const char *why = NULL;

        if (strcmp(section, "Rule") != 0) {
                /* One message per section, not per key. */
                if (st->bad_section != section_index)
                        conf_errors_add(st->err, "%s:%u: unknown section [%s] (expected [Rule])",
                                        file, line, section);
                rule_finish(st);
                st->bad_section = section_index;
                return;
        }
        if (!st->in_rule || st->section != section_index)
                rule_begin(st, file, line, section_index);

        if (strcmp(key, "Name") == 0) {
                bit = SEEN_NAME;
                if (!name_valid(value)) {
                        why = "must be 1 to 64 letters, digits or -_.";
                        q = -EINVAL;
                } else
                        snprintf(r->name, sizeof r->name, "%s", value);
        } else if (strcmp(key, "Metric") == 0) {
                bit = SEEN_METRIC;
                q = rule_metric_from_string(value);
                if (q < 0)
                        why = "expected auth_failures, messages, bytes, replays, mac_errors, "
                              "takeovers, replay_ts or silence";
                else
                        r->metric = (enum rule_metric)q;
        } else if (strcmp(key, "Window") == 0) {
                bit = SEEN_WINDOW;
                q = parse_duration_ms(value, &r->window_ms);
                if (q < 0 || r->window_ms < RULES_WINDOW_MIN_MS ||
                    r->window_ms > RULES_WINDOW_MAX_MS) {
                        why = "expected a duration from 1s to 24h, such as 10s or 1min";
                        q = -EINVAL;
                }
        } else if (strcmp(key, "Timeout") == 0) {
                bit = SEEN_TIMEOUT;
                q = parse_duration_ms(value, &r->timeout_ms);
                if (q < 0 || r->timeout_ms < RULES_WINDOW_MIN_MS ||
                    r->timeout_ms > 30 * RULES_WINDOW_MAX_MS) {
                        why = "expected a duration from 1s to 30d, such as 10min";
                        q = -EINVAL;
                }
        } else if (strcmp(key, "Hold") == 0) {
                bit = SEEN_HOLD;
                q = parse_duration_ms(value, &r->hold_ms);
                if (q < 0 || r->hold_ms < RULES_WINDOW_MIN_MS || r->hold_ms > RULES_WINDOW_MAX_MS) {
                        why = "expected a duration from 1s to 24h";
                        q = -EINVAL;
                }
        } else if (strcmp(key, "Threshold") == 0) {
                bit = SEEN_THRESHOLD;
                q = parse_count(value, &r->threshold);
                if (q < 0)
                        why = "expected a whole number from 1 to 4294967295";
        } else if (strcmp(key, "Action") == 0) {
                bit = SEEN_ACTION;
                q = parse_actions(value, &r->actions);
                if (q < 0)
                        why = "expected one or more of alert, throttle, quarantine, disconnect";
        } else if (strcmp(key, "Match") == 0) {
                bit = SEEN_MATCH;
                if (!*value || strlen(value) > RULES_MATCH_MAX || !printable(value)) {
                        why = "expected a device id pattern of 1 to 64 characters, such as "
                              "sensor-*";
                        q = -EINVAL;
                } else
                        snprintf(r->match, sizeof r->match, "%s", value);
        } else if (strcmp(key, "Group") == 0) {
                bit = SEEN_GROUP;
                if (!name_valid(value)) {
                        why = "expected a group name of letters, digits and -_.";
                        q = -EINVAL;
                } else
                        snprintf(r->group, sizeof r->group, "%s", value);
        } else if (strcmp(key, "Enabled") == 0) {
                bit = SEEN_ENABLED;
                int b = conf_parse_boolean(value);
                if (b < 0) {
                        why = "expected yes or no";
                        q = -EINVAL;
                } else
                        r->enabled = b;
        } else {
                conf_errors_add(st->err, "%s:%u: unknown key '%s' in section [Rule]", file, line,
                                key);
                st->cur_bad = true;
                return;
        }
        if (st->seen & bit) {
                conf_errors_add(st->err, "%s:%u: %s= given twice in one [Rule]", file, line, key);
                st->cur_bad = true;
                return;
        }
        st->seen |= bit;
        if (q < 0) {
                conf_errors_add(st->err, "%s:%u: %s=%s: %s", file, line, key, value, why);
                st->cur_bad = true;
                /* Keep later checks quiet about a key that was present but wrong. */
        }
}

static int parse_common(const char *name, const char *text, struct rule_set *out,
                        struct conf_errors *err)
{
        struct parse_state st = { .out = out, .first = out->n, .err = err };
        size_t before = err->n;
        int r;

        if (text)
                r = conf_ini_parse_string(name, text, on_key, &st, err);
        else
                r = conf_ini_parse_file(name, on_key, &st, err);
        rule_finish(&st);
        if (st.r < 0)
                return st.r;
        if (r < 0)
                return r;
        return err->n > before ? -EINVAL : 0;
}

int rules_parse_string(const char *name, const char *text, struct rule_set *out,
                       struct conf_errors *err)
{
        return parse_common(name, text ? text : "", out, err);
}

static int conf_filter(const struct dirent *d)
{
        return d->d_name[0] != '.' && fnmatch("*.conf", d->d_name, 0) == 0;
}

int rules_load_dir(const char *dir, struct rule_set *out, struct conf_errors *err)
{
        struct dirent **ents = NULL;
        struct rule_set rs = { 0 };
        size_t before = err->n;
        int n, r = 0;

        n = scandir(dir, &ents, conf_filter, alphasort);
        if (n < 0) {
                if (errno == ENOENT) {
                        *out = rs;
                        return 0;
                }
                conf_errors_add(err, "%s: cannot read the rules directory: %s", dir,
                                strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (r != -ENOMEM && asprintf(&p, "%s/%s", dir, ents[i]->d_name) >= 0) {
                        int q = parse_common(p, NULL, &rs, err);
                        if (q == -ENOMEM)
                                r = q;
                } else
                        r = -ENOMEM;
                free(ents[i]);
        }
        free(ents);
        if (r < 0 || err->n > before) {
                rule_set_free(&rs);
                return r < 0 ? r : -EINVAL;
        }
        *out = rs;
        return 0;
}

void rule_set_free(struct rule_set *rs)
{
        if (!rs)
                return;
        free(rs->v);
        *rs = (struct rule_set){ 0 };
}

size_t rule_set_enabled(const struct rule_set *rs)
{
        size_t k = 0;
        for (size_t i = 0; i < rs->n; i++)
                k += rs->v[i].enabled;
        return k;
}

static bool in_groups(const char *group, const char *groups)
{
        size_t n = strlen(group);
        const char *p = groups;

        if (!groups)
                return false;
        while (*p) {
                size_t len = strcspn(p, ",");
                if (len == n && strncmp(p, group, n) == 0)
                        return true;
                p += len;
                if (*p == ',')
                        p++;
        }
        return false;
}

bool rule_matches(const struct rule *r, const char *device_id, const char *groups)
{
        if (r->group[0] && !in_groups(r->group, groups))
                return false;
        return fnmatch(r->match, device_id, 0) == 0;
}

/* ---- evaluation -------------------------------------------------------------------------- */

/*
 * Each (device, rule) pair has RULES_BUCKETS counters, each covering window/RULES_BUCKETS
 * milliseconds, in a ring indexed by absolute bucket number. The count "in the window" is the
 * sum of the ring: the events of the last window, give or take one bucket (5 %). That keeps
 * memory fixed however fast a device sends.
 */
struct rule_state {
        uint64_t head; /* absolute bucket number of the newest bucket */
        uint32_t b[RULES_BUCKETS];
        uint8_t match; /* 0 unknown, 1 applies, 2 does not */
        bool latched;  /* fired; re-armed once the count drops below the threshold */
};

struct rules_dev {
        struct rules_dev *next;
        uint64_t last_seen_ms;
        char id[RULES_NAME_MAX + 1];
        struct rule_state s[];
};

#define RULES_HASH 1024u

struct rules_engine {
        struct rule_set rs;
        size_t max_devices, n_devices, untracked;
        uint64_t fired;
        struct rules_dev *hash[RULES_HASH];
};

static unsigned hash_id(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return h % RULES_HASH;
}

static void engine_clear(struct rules_engine *e)
{
        for (unsigned i = 0; i < RULES_HASH; i++) {
                struct rules_dev *d = e->hash[i], *n;
                for (; d; d = n) {
                        n = d->next;
                        free(d);
                }
                e->hash[i] = NULL;
        }
        e->n_devices = 0;
}

int rules_engine_set_rules(struct rules_engine *e, const struct rule_set *rs)
{
        struct rule *v = NULL;

        if (rs && rs->n) {
                v = malloc(rs->n * sizeof *v);
                if (!v)
                        return -ENOMEM;
                memcpy(v, rs->v, rs->n * sizeof *v);
        }
        engine_clear(e);
        free(e->rs.v);
        e->rs.v = v;
        e->rs.n = rs ? rs->n : 0;
        return 0;
}

int rules_engine_new(const struct rule_set *rs, size_t max_devices, struct rules_engine **ret)
{
        struct rules_engine *e = calloc(1, sizeof *e);
        int r;

        if (!e)
                return -ENOMEM;
        e->max_devices = max_devices;
        r = rules_engine_set_rules(e, rs);
        if (r < 0) {
                free(e);
                return r;
        }
        *ret = e;
        return 0;
}

void rules_engine_free(struct rules_engine *e)
{
        if (!e)
                return;
        engine_clear(e);
        free(e->rs.v);
        free(e);
}

const struct rule_set *rules_engine_rules(const struct rules_engine *e)
{
        return &e->rs;
}

static struct rules_dev *dev_find(struct rules_engine *e, const char *id)
{
        for (struct rules_dev *d = e->hash[hash_id(id)]; d; d = d->next)
                if (strcmp(d->id, id) == 0)
                        return d;
        return NULL;
}

static struct rules_dev *dev_get(struct rules_engine *e, const char *id, const char *groups,
                                 uint64_t now_ms)
{
        struct rules_dev *d = dev_find(e, id);
        unsigned h;

        if (d)
                return d;
        if (!e->rs.n)
                return NULL; /* nothing to evaluate; new rules start from scratch anyway */
        if (strlen(id) > RULES_NAME_MAX || e->n_devices >= e->max_devices) {
                e->untracked++;
                return NULL;
        }
        d = calloc(1, sizeof *d + e->rs.n * sizeof d->s[0]);
        if (!d) {
                e->untracked++;
                return NULL;
        }
        strcpy(d->id, id);
        d->last_seen_ms = now_ms;
        for (size_t i = 0; i < e->rs.n; i++)
                d->s[i].match = e->rs.v[i].enabled && rule_matches(&e->rs.v[i], id, groups) ? 1 : 2;
        h = hash_id(id);
        d->next = e->hash[h];
        e->hash[h] = d;
        e->n_devices++;
        return d;
}

static uint64_t bucket_width(const struct rule *r)
{
        uint64_t w = r->window_ms / RULES_BUCKETS;
        return w ? w : 1;
}

/* Move the ring forward to now, clearing the buckets that fell out of the window. */
static void state_advance(struct rule_state *s, const struct rule *r, uint64_t now_ms)
{
        uint64_t idx = now_ms / bucket_width(r);

        if (idx <= s->head)
                return;
        if (idx - s->head >= RULES_BUCKETS)
                memset(s->b, 0, sizeof s->b);
        else
                for (uint64_t k = s->head + 1; k <= idx; k++)
                        s->b[k % RULES_BUCKETS] = 0;
        s->head = idx;
}

static uint64_t state_sum(const struct rule_state *s)
{
        uint64_t t = 0;
        for (unsigned i = 0; i < RULES_BUCKETS; i++)
                t += s->b[i];
        return t;
}

int rules_engine_add(struct rules_engine *e, const char *device_id, const char *groups,
                     enum rule_metric metric, uint64_t n, uint64_t now_ms, rules_fire_fn fn,
                     void *userdata)
{
        struct rules_dev *d = dev_get(e, device_id, groups, now_ms);
        int fired = 0;

        if (!d)
                return e->rs.n ? -ENOSPC : 0;
        d->last_seen_ms = MAX(d->last_seen_ms, now_ms);
        for (size_t i = 0; i < e->rs.n; i++) {
                const struct rule *r = &e->rs.v[i];
                struct rule_state *s = &d->s[i];
                uint64_t sum;

                if (r->metric == RULE_METRIC_SILENCE) {
                        s->latched = false; /* heard from: a new silence may fire again */
                        continue;
                }
                if (s->match != 1 || r->metric != metric)
                        continue;
                state_advance(s, r, now_ms);
                s->b[s->head % RULES_BUCKETS] = (uint32_t)MIN(
                        (uint64_t)s->b[s->head % RULES_BUCKETS] + n, (uint64_t)UINT32_MAX);
                sum = state_sum(s);
                if (sum < r->threshold) {
                        s->latched = false;
                        continue;
                }
                if (s->latched)
                        continue;
                s->latched = true;
                e->fired++;
                fired++;
                if (fn)
                        fn(userdata, r, d->id, sum);
        }
        return fired;
}

int rules_engine_seen(struct rules_engine *e, const char *device_id, const char *groups,
                      uint64_t now_ms)
{
        struct rules_dev *d = dev_get(e, device_id, groups, now_ms);

        if (!d)
                return e->rs.n ? -ENOSPC : 0;
        d->last_seen_ms = MAX(d->last_seen_ms, now_ms);
        for (size_t i = 0; i < e->rs.n; i++)
                if (e->rs.v[i].metric == RULE_METRIC_SILENCE)
                        d->s[i].latched = false;
        return 0;
}

int rules_engine_tick(struct rules_engine *e, uint64_t now_ms, rules_fire_fn fn, void *userdata)
{
        int fired = 0;

        for (unsigned h = 0; h < RULES_HASH; h++)
                for (struct rules_dev *d = e->hash[h]; d; d = d->next)
                        for (size_t i = 0; i < e->rs.n; i++) {
                                const struct rule *r = &e->rs.v[i];
                                struct rule_state *s = &d->s[i];
                                uint64_t quiet;

                                if (s->match != 1)
                                        continue;
                                if (r->metric != RULE_METRIC_SILENCE) {
                                        /* Let a latched counter re-arm while nothing arrives. */
                                        if (s->latched) {
                                                state_advance(s, r, now_ms);
                                                if (state_sum(s) < r->threshold)
                                                        s->latched = false;
                                        }
                                        continue;
                                }
                                quiet = now_ms > d->last_seen_ms ? now_ms - d->last_seen_ms : 0;
                                if (s->latched || quiet < r->timeout_ms)
                                        continue;
                                s->latched = true;
                                e->fired++;
                                fired++;
                                if (fn)
                                        fn(userdata, r, d->id, quiet);
                        }
        return fired;
}

void rules_engine_forget(struct rules_engine *e, const char *device_id)
{
        struct rules_dev **pp = &e->hash[hash_id(device_id)];

        for (; *pp; pp = &(*pp)->next)
                if (strcmp((*pp)->id, device_id) == 0) {
                        struct rules_dev *d = *pp;
                        *pp = d->next;
                        free(d);
                        e->n_devices--;
                        return;
                }
}

uint64_t rules_engine_count(struct rules_engine *e, const char *device_id, size_t rule_index,
                            uint64_t now_ms)
{
        struct rules_dev *d = dev_find(e, device_id);

        if (!d || rule_index >= e->rs.n || e->rs.v[rule_index].metric == RULE_METRIC_SILENCE)
                return 0;
        state_advance(&d->s[rule_index], &e->rs.v[rule_index], now_ms);
        return state_sum(&d->s[rule_index]);
}

void rules_engine_stats(const struct rules_engine *e, struct rules_engine_stats *ret)
{
        ret->devices = e->n_devices;
        ret->untracked = e->untracked;
        ret->fired = e->fired;
}
