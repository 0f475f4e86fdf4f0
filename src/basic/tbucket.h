/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * A token bucket for pacing (publishes/s, bytes/s). Tokens accrue at `rate` per second up to
 * `burst`. A request of n is allowed once the bucket holds min(n, burst) tokens and then takes
 * all n, so the balance may go negative: a request larger than the burst (one big publish) is
 * still possible and the long-run rate holds. rate 0 means unlimited. Pure code: the caller
 * passes the time (µs, monotonic).
 */

struct tbucket {
        double rate;  /* tokens per second, 0 = unlimited */
        double burst; /* the most tokens the bucket holds */
        double tokens;
        uint64_t last_us;
};

static inline void tbucket_init(struct tbucket *b, double rate, double burst, uint64_t now_us)
{
        b->rate = rate;
        b->burst = burst < 1 ? 1 : burst;
        b->tokens = b->burst;
        b->last_us = now_us;
}

static inline void tbucket_refill(struct tbucket *b, uint64_t now_us)
{
        if (now_us > b->last_us) {
                b->tokens += b->rate * (double)(now_us - b->last_us) / 1e6;
                if (b->tokens > b->burst)
                        b->tokens = b->burst;
        }
        b->last_us = now_us;
}

/* How long until a request of n may go (0: now). */
static inline uint64_t tbucket_delay_us(struct tbucket *b, double n, uint64_t now_us)
{
        double need;
        if (b->rate <= 0)
                return 0;
        tbucket_refill(b, now_us);
        need = n < b->burst ? n : b->burst;
        if (b->tokens >= need - 1e-6) /* rounding: 10 × 0.1 is not quite 1 */
                return 0;
        return (uint64_t)((need - b->tokens) * 1e6 / b->rate) + 1;
}

static inline void tbucket_take(struct tbucket *b, double n, uint64_t now_us)
{
        if (b->rate <= 0)
                return;
        tbucket_refill(b, now_us);
        b->tokens -= n;
}
