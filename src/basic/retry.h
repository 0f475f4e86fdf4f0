/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * One retry policy for every request the gateway makes of the cloud (Jobs, streams, fleet
 * provisioning; docs/ota.md "Retries"): a request that is refused or not answered is a failed
 * try; the next try waits an exponential backoff with jitter, and after max_tries failed tries
 * in a row the caller gives up with a terminal result. A try that makes progress (an answer, a
 * stream block) resets the count. Tries the caller could not send because the session is down do
 * not count: retry_* only sees what the caller reports.
 *
 * Delay before try k+1 after k failed tries: d = min(first_ms * 2^(k-1), max_ms), jittered
 * uniformly over [d/2, d] ("equal jitter") so that many gateways (or many requests of one
 * gateway) that failed together do not come back together. Pure code: the caller passes the
 * time and the random number.
 */

struct retry_policy {
        uint32_t first_ms;   /* backoff after the first failure */
        uint32_t max_ms;     /* cap of the backoff */
        uint32_t timeout_ms; /* a request without an answer for this long failed */
        unsigned max_tries;  /* failed tries in a row before giving up */
};

/* The cloud policy: 0.5 s, 1, 2, 4, 8 s (each jittered to 50..100 %), 6 tries, 5 s timeout. */
extern const struct retry_policy retry_cloud_policy;

struct retry {
        const struct retry_policy *policy;
        unsigned failures; /* failed tries in a row */
        uint64_t due_ms;   /* the next try may go at this time */
};

static inline void retry_init(struct retry *r, const struct retry_policy *p)
{
        r->policy = p;
        r->failures = 0;
        r->due_ms = 0;
}

/* Progress: the count starts again and the next try may go at once. */
static inline void retry_reset(struct retry *r)
{
        r->failures = 0;
        r->due_ms = 0;
}

/* May the next try go at now_ms? */
static inline bool retry_due(const struct retry *r, uint64_t now_ms)
{
        return now_ms >= r->due_ms;
}

/* The backoff before the next try after `failures` failed tries, jittered with rnd (any 32-bit
 * random number). 0 for failures == 0. */
uint32_t retry_backoff_ms(const struct retry_policy *p, unsigned failures, uint32_t rnd);

/* Record a failed try at now_ms. false: the tries are used up (terminal); true: the next try is
 * due at r->due_ms. */
bool retry_failed(struct retry *r, uint64_t now_ms, uint32_t rnd);

/* Whether max_tries were used up. */
static inline bool retry_exhausted(const struct retry *r)
{
        return r->failures >= r->policy->max_tries;
}

/* The longest time from the first try to the terminal result when every try is refused at once
 * (the sum of the largest backoffs), and when no try is ever answered (timeouts added). */
uint64_t retry_budget_ms(const struct retry_policy *p, bool silent);

/* A random number for the jitter (not for secrets). */
uint32_t retry_random(void);
