/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
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

/* "2026-12-06T13:52:50.123Z": the ISO 8601 form of a realtime instant in UTC, with milliseconds
 * (the control protocol's convention, docs/control-protocol.md). -EINVAL for us <= 0, which
 * means never or unknown. */
#define ISO8601_MAX 64 /* room for any int fields, as the compiler checks */
static inline int format_iso8601_usec(char buf[static ISO8601_MAX], int64_t us)
{
        time_t t = (time_t)(us / 1000000);
        struct tm tm;

        if (us <= 0 || !gmtime_r(&t, &tm))
                return -EINVAL;
        snprintf(buf, ISO8601_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(us / 1000 % 1000));
        return 0;
}
