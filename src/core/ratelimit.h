/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * Repeated errors without a flood of log lines (a full disk fails every group commit, ~100 a
 * second): the first error of a run is logged at once, then at most one line per interval with
 * the number held back since the last line, and one line when the run ends (the first success)
 * with its length and duration. Pure code: the caller passes the time (ms, monotonic) and writes
 * the lines.
 */

struct ratelimit {
        uint64_t interval_ms;
        uint64_t run;      /* errors in the current run; 0: no run */
        uint64_t held;     /* errors not logged since the last line */
        uint64_t first_ms; /* when the run started */
        uint64_t last_ms;  /* when the last line was written */
};

/* An error: true if a line should be written now; *ret_held is then the number of errors held
 * back since the previous line (0 for the first error of a run). */
static inline bool ratelimit_error(struct ratelimit *rl, uint64_t now_ms, uint64_t *ret_held)
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
static inline bool ratelimit_ok(struct ratelimit *rl, uint64_t now_ms, uint64_t *ret_run,
                                uint64_t *ret_ms)
{
        if (!rl->run)
                return false;
        *ret_run = rl->run;
        *ret_ms = now_ms - rl->first_ms;
        rl->run = rl->held = 0;
        return true;
}
