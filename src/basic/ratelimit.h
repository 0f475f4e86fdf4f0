/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * Rate limits, pure code (the caller passes the time, in µs of a monotonic clock).
 *
 * A token bucket: tokens accrue at `rate` per second up to `burst`; rate 0 means unlimited.
 * Two ways to spend:
 *   - ratelimit_try(): take n only if the bucket holds n (handshakes, BLE notifications): the
 *     answer is yes or no and a no costs nothing;
 *   - ratelimit_delay() + ratelimit_take(): pacing (publishes/s, bytes/s). A request of n may go
 *     once the bucket holds min(n, burst), and then takes all n, so the balance may go negative:
 *     one request bigger than the burst still goes, and the long-run rate holds.
 *
 * A window: the first `limit` events of each interval pass, the rest are counted, and the count
 * is handed out once the window is over, so that a flood of identical audit records becomes a
 * few records and one "N more" summary.
 */

struct ratelimit {
        double rate;  /* tokens per second, 0 = unlimited */
        double burst; /* the most tokens the bucket holds */
        double tokens;
        uint64_t last_usec;
};

void ratelimit_init(struct ratelimit *b, double rate, double burst, uint64_t now_usec);
/* Take n tokens if the bucket holds them: true; otherwise false and nothing taken. */
bool ratelimit_try(struct ratelimit *b, double n, uint64_t now_usec);
/* How long until a request of n may go (0: now). */
uint64_t ratelimit_delay(struct ratelimit *b, double n, uint64_t now_usec);
/* Take n tokens unconditionally (the balance may go negative). */
void ratelimit_take(struct ratelimit *b, double n, uint64_t now_usec);

struct ratelimit_window {
        uint64_t start_usec;
        uint64_t interval_usec;
        unsigned limit;
        unsigned passed;
        unsigned suppressed;
};

void ratelimit_window_init(struct ratelimit_window *w, unsigned limit, uint64_t interval_usec,
                           uint64_t now_usec);
/* true for the first `limit` events of a window; the others are counted as suppressed. */
bool ratelimit_window_allow(struct ratelimit_window *w, uint64_t now_usec);
/* Once the window is over: returns the number suppressed in it and starts a new window (0 and
 * nothing changed while it lasts). */
unsigned ratelimit_window_roll(struct ratelimit_window *w, uint64_t now_usec);
