/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"

static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        if (err && errlen) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

const char *fileio_type_name(mode_t mode)
{
        if (S_ISDIR(mode))
                return "a directory";
        if (S_ISFIFO(mode))
                return "a FIFO";
        if (S_ISCHR(mode))
                return "a character device";
        if (S_ISBLK(mode))
                return "a block device";
        if (S_ISSOCK(mode))
                return "a socket";
        if (S_ISLNK(mode))
                return "a symbolic link";
        if (S_ISREG(mode))
                return "a regular file";
        return "of unknown type";
}

int fileio_open(const char *path, unsigned flags, uint64_t max, struct stat *ret_st, char *err,
                size_t errlen)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        int fl;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                                (flags & FILEIO_NOFOLLOW ? O_NOFOLLOW : 0));
        if (fd < 0) {
                int r = -errno;
                if (r == -ELOOP && (flags & FILEIO_NOFOLLOW))
                        return fail(r, err, errlen, "%s: is a symbolic link (refused here)", path);
                return fail(r, err, errlen, "%s: cannot open: %s", path, strerror(-r));
        }
        if (fstat(fd, &st) < 0)
                return fail(-errno, err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL, err, errlen,
                            "%s: not a regular file (%s)", path, fileio_type_name(st.st_mode));
        if (max && (uint64_t)st.st_size > max)
                return fail(-EFBIG, err, errlen, "%s: file too large (%llu bytes, limit %llu)",
                            path, (unsigned long long)st.st_size, (unsigned long long)max);
        /* Regular files never block; clear the flag anyway so that no reader is surprised. */
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
                return fail(-errno, err, errlen, "%s: fcntl: %s", path, strerror(errno));
        if (ret_st)
                *ret_st = st;
        return TAKE_FD(fd);
}

int fileio_read_fd(int fd, const char *path, size_t max, char **ret, size_t *ret_len, char *err,
                   size_t errlen)
{
        struct stat st;
        char *buf = NULL;
        size_t len = 0, cap;

        if (fstat(fd, &st) < 0)
                return fail(-errno, err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        if (!max)
                max = SIZE_MAX - 1;
        /* Start with the size fstat() saw (bounded), grow if the file grows, never past max. */
        cap = (size_t)MIN((uint64_t)st.st_size, (uint64_t)max) + 1;
        if (cap < 4096)
                cap = MIN((size_t)4096, max + 1);
        buf = malloc(cap + 1);
        if (!buf)
                return fail(-ENOMEM, err, errlen, "%s: out of memory", path);
        for (;;) {
                ssize_t k;
                if (len == cap) {
                        size_t ncap;
                        char *n;
                        if (cap > max) { /* read max + 1 bytes: it is larger than allowed */
                                fileio_erase_free(buf, len);
                                return fail(-EFBIG, err, errlen,
                                            "%s: file too large (more than %zu bytes, limit %zu)",
                                            path, max, max);
                        }
                        ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
                        n = malloc(ncap + 1);
                        if (!n) {
                                fileio_erase_free(buf, len);
                                return fail(-ENOMEM, err, errlen, "%s: out of memory", path);
                        }
                        memcpy(n, buf, len);
                        fileio_erase_free(buf, len);
                        buf = n;
                        cap = ncap;
                }
                k = read(fd, buf + len, cap - len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int r = -errno;
                        fileio_erase_free(buf, len);
                        return fail(r, err, errlen, "%s: cannot read: %s", path, strerror(-r));
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        if (len > max) {
                fileio_erase_free(buf, len);
                return fail(-EFBIG, err, errlen, "%s: file too large (%zu bytes, limit %zu)", path,
                            len, max);
        }
        buf[len] = 0;
        *ret = buf;
        if (ret_len)
                *ret_len = len;
        return 0;
}

int fileio_read(const char *path, unsigned flags, size_t max, char **ret, size_t *ret_len,
                char *err, size_t errlen)
{
        _cleanup_close_ int fd = fileio_open(path, flags, max, NULL, err, errlen);

        if (fd < 0)
                return fd;
        return fileio_read_fd(fd, path, max, ret, ret_len, err, errlen);
}

void fileio_erase_free(char *buf, size_t len)
{
        if (!buf)
                return;
        explicit_bzero(buf, len);
        free(buf);
}
