/* SPDX-License-Identifier: Apache-2.0 */
/* Exponential backoff with jitter and a bounded number of tries (see retry.h). */
#include <stdlib.h>
#include <sys/random.h>

#include "basic/retry.h"

const struct retry_policy retry_cloud_policy = {
        .first_ms = 500,
        .max_ms = 30000,
        .timeout_ms = 5000,
        .max_tries = 6,
};

/* The backoff before jitter after k failed tries (k >= 1). */
static uint64_t backoff_cap(const struct retry_policy *p, unsigned k)
{
        uint64_t d = (uint64_t)p->first_ms << (k - 1 < 31 ? k - 1 : 31);
        return d > p->max_ms ? p->max_ms : d;
}

uint32_t retry_backoff_ms(const struct retry_policy *p, unsigned failures, uint32_t rnd)
{
        uint64_t d, half;

        if (failures == 0)
                return 0;
        d = backoff_cap(p, failures);
        half = d / 2;
        return (uint32_t)(half + rnd % (d - half + 1)); /* [d/2, d] */
}

bool retry_failed(struct retry *r, uint64_t now_ms, uint32_t rnd)
{
        r->failures++;
        if (retry_exhausted(r))
                return false;
        r->due_ms = now_ms + retry_backoff_ms(r->policy, r->failures, rnd);
        return true;
}

uint64_t retry_budget_ms(const struct retry_policy *p, bool silent)
{
        uint64_t t = 0;

        for (unsigned k = 1; k < p->max_tries; k++)
                t += backoff_cap(p, k);
        if (silent)
                t += (uint64_t)p->timeout_ms * p->max_tries;
        return t;
}

uint32_t retry_random(void)
{
        uint32_t v;

        if (getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v)
                v = (uint32_t)random();
        return v;
}
