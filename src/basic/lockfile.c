/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "basic/lockfile.h"

static pid_t read_holder(int fd)
{
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long pid;
        char *end;

        if (n <= 0)
                return 0;
        buf[n] = '\0';
        pid = strtol(buf, &end, 10);
        if (end == buf || pid <= 0 || pid > 0x7fffffff)
                return 0;
        return (pid_t)pid;
}

int lockfile_take(const char *path, pid_t *ret_holder)
{
        /* O_NOFOLLOW: a symlink planted in the state directory must not make us truncate
         * another file. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
        char buf[32];
        int len, r;

        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                if (r == -EBUSY && ret_holder)
                        *ret_holder = read_holder(fd);
                close(fd);
                return r;
        }
        len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
                r = -errno;
                close(fd);
                return r;
        }
        return fd;
}
