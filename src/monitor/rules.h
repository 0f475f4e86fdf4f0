/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/conf-parser.h"

/*
 * Monitoring rules (docs/monitoring.md): per-device thresholds over a sliding window, read from
 * RulesDirectory (/etc/mcugw/rules.d/NAME.conf, [Rule] sections in the configuration's INI
 * syntax), and the evaluator that counts events against them.
 *
 *   [Rule]
 *   Name=auth-flood
 *   Metric=auth_failures      # auth_failures messages bytes replays mac_errors takeovers
 *                             # replay_ts | silence
 *   Window=1min               # counters: how far back to count (1s … 24h)
 *   Threshold=5               # fire when the count in the window reaches this
 *   Timeout=10min             # silence: fire when nothing was heard for this long
 *   Action=quarantine alert   # one or more of alert throttle quarantine disconnect
 *   Match=sensor-*            # device id glob (default *)
 *   Group=field               # and/or: only devices in this group
 *   Hold=5min                 # throttle: how long the device is held back (default: Window)
 *   Enabled=yes
 *
 * Pure code: no I/O beyond reading the rule files, no clock (callers pass the time), so it is
 * unit-tested and fuzzed directly. Memory is bounded: at most RULES_MAX rules, at most
 * max_devices tracked devices, and a fixed number of buckets per (device, rule).
 */

#define RULES_MAX 256
#define RULES_NAME_MAX 64
#define RULES_MATCH_MAX 64
#define RULES_BUCKETS 20
#define RULES_WINDOW_MIN_MS 1000ULL
#define RULES_WINDOW_MAX_MS (24ULL * 3600 * 1000)

enum rule_metric {
        RULE_METRIC_AUTH_FAILURES,
        RULE_METRIC_MESSAGES,
        RULE_METRIC_BYTES,
        RULE_METRIC_REPLAYS,
        RULE_METRIC_MAC_ERRORS,
        RULE_METRIC_TAKEOVERS, /* the session moved to another link: a move, or a cloned key */
        RULE_METRIC_REPLAY_TS, /* messages 1 with the device's key replayed (old timestamp) */
        RULE_METRIC_SILENCE,   /* not a counter: time since the device was last heard */
        _RULE_METRIC_MAX,
};

enum rule_action {
        RULE_ACTION_ALERT = 1u << 0,
        RULE_ACTION_THROTTLE = 1u << 1,
        RULE_ACTION_QUARANTINE = 1u << 2,
        RULE_ACTION_DISCONNECT = 1u << 3,
};

struct rule {
        char name[RULES_NAME_MAX + 1];
        enum rule_metric metric;
        uint64_t window_ms;              /* counters */
        uint64_t threshold;              /* counters */
        uint64_t timeout_ms;             /* silence */
        uint64_t hold_ms;                /* throttle */
        unsigned actions;                /* enum rule_action bits */
        char match[RULES_MATCH_MAX + 1]; /* fnmatch() glob on the device id */
        char group[RULES_MATCH_MAX + 1]; /* "" = any */
        bool enabled;
        char file[256];
        unsigned line; /* of its first key */
};

struct rule_set {
        struct rule *v;
        size_t n, n_alloc;
};

/* Every *.conf in dir, sorted; a missing directory is an empty set. All problems go to err as
 * "file:line: message"; -EINVAL if there were any (then out is empty). */
int rules_load_dir(const char *dir, struct rule_set *out, struct conf_errors *err);
/* One file's text (tests, fuzzing); appends to out, names checked against what out holds. */
int rules_parse_string(const char *name, const char *text, struct rule_set *out,
                       struct conf_errors *err);
void rule_set_free(struct rule_set *rs);
/* Number of enabled rules. */
size_t rule_set_enabled(const struct rule_set *rs);

const char *rule_metric_to_string(enum rule_metric m);
int rule_metric_from_string(const char *s);
/* "alert quarantine" into buf. */
void rule_actions_to_string(unsigned actions, char *buf, size_t n);
/* Does the rule apply to this device? groups is comma separated (may be NULL). */
bool rule_matches(const struct rule *r, const char *device_id, const char *groups);

/* ---- evaluation ---------------------------------------------------------------------------- */

struct rules_engine;

/* A rule fired for a device: value is the count in the window (counters) or the silence in
 * milliseconds. The rule pointer is valid until the next rules_engine_set_rules(). */
typedef void (*rules_fire_fn)(void *userdata, const struct rule *r, const char *device_id,
                              uint64_t value);

/* The engine keeps a copy of rs. max_devices bounds the devices tracked at once. */
int rules_engine_new(const struct rule_set *rs, size_t max_devices, struct rules_engine **ret);
void rules_engine_free(struct rules_engine *e);
/* Replace the rules (reload): per-device windows start again. */
int rules_engine_set_rules(struct rules_engine *e, const struct rule_set *rs);
const struct rule_set *rules_engine_rules(const struct rules_engine *e);

/* Count n events of a counter metric for a device at now_ms; fires the rules whose window
 * count reaches their threshold (once, until the count has dropped below it again). Any event
 * also counts as "heard from" for silence rules. Returns the number of rules fired, or -ENOSPC
 * when the device could not be tracked (max_devices reached; counted in rules_engine_stats). */
int rules_engine_add(struct rules_engine *e, const char *device_id, const char *groups,
                     enum rule_metric metric, uint64_t n, uint64_t now_ms, rules_fire_fn fn,
                     void *userdata);
/* The device was heard from (e.g. it authenticated) without counting anything. */
int rules_engine_seen(struct rules_engine *e, const char *device_id, const char *groups,
                      uint64_t now_ms);
/* Check the silence rules; fires each at most once per silence. Returns the number fired. */
int rules_engine_tick(struct rules_engine *e, uint64_t now_ms, rules_fire_fn fn, void *userdata);
/* Forget a device (removed from the registry) or reset its windows (restored by an operator). */
void rules_engine_forget(struct rules_engine *e, const char *device_id);

/* The current count of one rule's window for a device (0 when untracked). */
uint64_t rules_engine_count(struct rules_engine *e, const char *device_id, size_t rule_index,
                            uint64_t now_ms);

struct rules_engine_stats {
        size_t devices;
        size_t untracked; /* events dropped because max_devices was reached */
        uint64_t fired;
};
void rules_engine_stats(const struct rules_engine *e, struct rules_engine_stats *ret);
