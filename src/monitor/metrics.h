/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

/*
 * Metrics (docs/monitoring.md): every MetricsInterval the sampler reads the link counters of
 * each enrolled device and the gateway's own figures (session, outbox, publish rate, disk,
 * process RSS and CPU from /proc), keeps the previous sample to turn counters into per-interval
 * deltas and rates, and hands each device's deltas to a listener (the rule evaluator). The
 * latest sample is what `mcugwctl metrics`, `mcugwctl top` and the Device Defender report show.
 *
 * Memory: one small record per enrolled device (bounded by the registry), nothing per event.
 */

struct link_manager;
struct registry;
struct relay;

/* Per-interval changes of one device's counters. */
struct metrics_delta {
        uint64_t auth_failures, messages, bytes_in, replays, mac_errors, takeovers;
        uint64_t replay_ts; /* replayed messages 1 (handshake timestamp not newer) */
        bool heard;         /* any frame arrived, or the device authenticated, in the interval */
        bool first;         /* the first sample of this device since the daemon started */
};

typedef void (*metrics_delta_fn)(void *userdata, const char *device_id, const char *groups,
                                 const struct metrics_delta *d, uint64_t now_ms);
/* After every sample, once all deltas were delivered. */
typedef void (*metrics_tick_fn)(void *userdata, uint64_t now_ms);

struct metrics_sources {
        struct link_manager *link;
        struct registry *registry;
        struct relay *relay; /* may be NULL */
        const char *state_dir;
};

struct metrics;

int metrics_new(uv_loop_t *loop, const struct metrics_sources *src, uint64_t interval_ms,
                struct metrics **ret);
void metrics_set_listener(struct metrics *m, metrics_delta_fn fn, metrics_tick_fn tick,
                          void *userdata);
void metrics_set_interval(struct metrics *m, uint64_t interval_ms);
/* Take a sample now (tests, `metrics` right after start). */
void metrics_sample(struct metrics *m);
/* {"ts_us","interval_ms","gateway":{…},"devices":[{…}]} of the latest sample (new reference). */
json_t *metrics_json(struct metrics *m);
/* Closes the timer; memory goes in its close callback. NULL is fine. */
void metrics_stop(struct metrics *m);

/* ---- process figures, exposed for tests ---------------------------------------------------- */

struct metrics_proc {
        uint64_t rss_bytes, rss_anon_bytes;
        uint64_t cpu_usec; /* user + system */
        unsigned threads;
        unsigned fds;
};
/* Parse /proc/self/status text (VmRSS, RssAnon, Threads). */
int metrics_parse_proc_status(const char *text, struct metrics_proc *ret);
int metrics_read_proc(struct metrics_proc *ret);
