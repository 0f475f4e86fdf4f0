/* SPDX-License-Identifier: Apache-2.0 */
#include "basic/ratelimit.h"

void ratelimit_init(struct ratelimit *b, double rate, double burst, uint64_t now_usec)
{
        b->rate = rate;
        b->burst = burst < 1 ? 1 : burst;
        b->tokens = b->burst;
        b->last_usec = now_usec;
}

static void refill(struct ratelimit *b, uint64_t now_usec)
{
        if (now_usec > b->last_usec) {
                b->tokens += b->rate * (double)(now_usec - b->last_usec) / 1e6;
                if (b->tokens > b->burst)
                        b->tokens = b->burst;
                b->last_usec = now_usec;
        }
}

bool ratelimit_try(struct ratelimit *b, double n, uint64_t now_usec)
{
        if (b->rate <= 0)
                return true;
        refill(b, now_usec);
        if (b->tokens < n - 1e-9) /* rounding: 10 × 0.1 is not quite 1 */
                return false;
        b->tokens -= n;
        return true;
}

uint64_t ratelimit_delay(struct ratelimit *b, double n, uint64_t now_usec)
{
        double need;

        if (b->rate <= 0)
                return 0;
        refill(b, now_usec);
        need = n < b->burst ? n : b->burst;
        if (b->tokens >= need - 1e-6)
                return 0;
        return (uint64_t)((need - b->tokens) * 1e6 / b->rate) + 1;
}

void ratelimit_take(struct ratelimit *b, double n, uint64_t now_usec)
{
        if (b->rate <= 0)
                return;
        refill(b, now_usec);
        b->tokens -= n;
}

void ratelimit_window_init(struct ratelimit_window *w, unsigned limit, uint64_t interval_usec,
                           uint64_t now_usec)
{
        *w = (struct ratelimit_window){
                .start_usec = now_usec,
                .interval_usec = interval_usec,
                .limit = limit,
        };
}

unsigned ratelimit_window_roll(struct ratelimit_window *w, uint64_t now_usec)
{
        unsigned s;

        if (now_usec < w->start_usec + w->interval_usec)
                return 0;
        s = w->suppressed;
        w->start_usec = now_usec;
        w->passed = 0;
        w->suppressed = 0;
        return s;
}

bool ratelimit_window_allow(struct ratelimit_window *w, uint64_t now_usec)
{
        /* A window that suppressed nothing simply starts over; one that did waits for its
         * owner's roll(), which reports the count. */
        if (now_usec >= w->start_usec + w->interval_usec && w->suppressed == 0) {
                w->start_usec = now_usec;
                w->passed = 0;
        }
        if (w->passed < w->limit) {
                w->passed++;
                return true;
        }
        w->suppressed++;
        return false;
}
