/* SPDX-License-Identifier: Apache-2.0 */
/* An LD_PRELOAD shim that stands in for a slow disk (an SD card, eMMC): every fsync() and
 * fdatasync() of the process is delayed by SLOWFSYNC_MS milliseconds before the real call.
 * Used by `scripts/bench relay-slowdisk` and by test-outbox-slowdisk.
 *
 *   SLOWFSYNC_MS=20      the delay (default 0: none)
 *   SLOWFSYNC_ARM=PATH   delay only while PATH exists (a test switches the slow disk on and off)
 *   SLOWFSYNC_LOG=PATH   append "B\n" when a delayed call begins and "E\n" when it returns, so
 *                        a test can tell that a sync is in progress right now
 *
 * Only for tests and benchmarks; never installed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void mark(const char *what)
{
        const char *log = getenv("SLOWFSYNC_LOG");
        int fd;
        if (!log)
                return;
        fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        (void)!write(fd, what, 2);
        close(fd);
}

/* Returns whether the call was delayed (then "E" is written after it). */
static int delay(void)
{
        const char *ms = getenv("SLOWFSYNC_MS"), *arm = getenv("SLOWFSYNC_ARM");
        long v = ms ? strtol(ms, NULL, 10) : 0;
        struct timespec ts;
        struct stat st;

        if (v <= 0 || (arm && stat(arm, &st) < 0))
                return 0;
        mark("B\n");
        ts.tv_sec = v / 1000;
        ts.tv_nsec = (v % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        return 1;
}

int fsync(int fd)
{
        static int (*real)(int);
        int saved, r, d;
        if (!real)
                real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
        d = delay();
        r = real(fd);
        saved = errno;
        if (d)
                mark("E\n");
        errno = saved;
        return r;
}

int fdatasync(int fd)
{
        static int (*real)(int);
        int saved, r, d;
        if (!real)
                real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
        d = delay();
        r = real(fd);
        saved = errno;
        if (d)
                mark("E\n");
        errno = saved;
        return r;
}
