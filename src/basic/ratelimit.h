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

/*
 * Repeated errors without a flood of log lines (a full disk fails every group commit, ~100 a
 * second): the first error of a run is logged at once, then at most one line per interval with
 * the number held back since the last line, and one line when the run ends (the first success)
 * with its length and duration. The caller passes the time (ms, monotonic: these are log lines,
 * not pacing) and writes the lines.
 */

struct ratelimit_run {
        uint64_t interval_ms;
        uint64_t run;      /* errors in the current run; 0: no run */
        uint64_t held;     /* errors not logged since the last line */
        uint64_t first_ms; /* when the run started */
        uint64_t last_ms;  /* when the last line was written */
};

/* An error: true if a line should be written now; *ret_held is then the number of errors held
 * back since the previous line (0 for the first error of a run). */
static inline bool ratelimit_run_error(struct ratelimit_run *rl, uint64_t now_ms,
                                       uint64_t *ret_held)
{
        if (rl->run++ == 0) {
                rl->first_ms = rl->last_ms = now_ms;
                rl->held = 0;
                *ret_held = 0;
                return true;
        }
        if (now_ms - rl->last_ms < rl->interval_ms) {
                rl->held++;
                return false;
        }
        *ret_held = rl->held;
        rl->held = 0;
        rl->last_ms = now_ms;
        return true;
}

/* A success: true if it ended a run of errors; *ret_run and *ret_ms are then its length and how
 * long it lasted. */
static inline bool ratelimit_run_ok(struct ratelimit_run *rl, uint64_t now_ms, uint64_t *ret_run,
                                    uint64_t *ret_ms)
{
        if (!rl->run)
                return false;
        *ret_run = rl->run;
        *ret_ms = now_ms - rl->first_ms;
        rl->run = rl->held = 0;
        return true;
}
