/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>
#include <time.h>

/*
 * The clocks, read one way everywhere. Wall-clock time (realtime) is for records that people and
 * the cloud read: audit rows, timestamps in messages. Monotonic time is for intervals, rates and
 * timeouts, which must not jump with the wall clock. Code on the loop that may use the loop's
 * cached time (uv_now) should: it is cheaper and consistent within one loop turn.
 */

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define MSEC_PER_SEC UINT64_C(1000)

static inline int64_t now_realtime_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t now_realtime_msec(void)
{
        return now_realtime_usec() / 1000;
}

static inline uint64_t now_monotonic_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t now_monotonic_msec(void)
{
        return now_monotonic_usec() / 1000;
}
