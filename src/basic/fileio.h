/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/*
 * Reading a file that the configuration names (the INI files, enrolment and rule files, keys,
 * certificates, images) without letting the file decide how long we wait or how much we read.
 *
 * fileio_open() opens with O_RDONLY|O_CLOEXEC|O_NOCTTY|O_NONBLOCK, so a FIFO or a device node
 * cannot block the open, checks with fstat() on the open descriptor (no window between check and
 * use) that it is a regular file no larger than the limit, and then clears O_NONBLOCK. Symbolic
 * links are followed unless FILEIO_NOFOLLOW is given — links are common in /etc (configuration
 * management, certbot's live/ directory), and what counts is that the target is a regular file.
 * fileio_read() reads the whole file, bounded by the same limit even if it grows meanwhile, into
 * a NUL-terminated buffer.
 *
 * Errors are -errno, with a message that starts with the file name in err:
 *   "PATH: not a regular file (a FIFO)"
 *   "PATH: file too large (N bytes, limit M)"
 *   "PATH: cannot open: No such file or directory"
 */

/* One INI file (main file, drop-in, device or rule file). */
#define FILEIO_CONF_MAX ((size_t)1 << 20)
/* A PEM or DER certificate, certificate bundle or key. */
#define FILEIO_PEM_MAX ((size_t)4 << 20)

enum {
        FILEIO_NOFOLLOW = 1 << 0, /* refuse a symbolic link as the last path component */
};

/* Returns the descriptor (>= 0) or -errno. max 0: no size limit. ret_st may be NULL. */
int fileio_open(const char *path, unsigned flags, uint64_t max, struct stat *ret_st, char *err,
                size_t errlen);

/* The whole file in *ret (malloc'd, NUL-terminated, *ret_len bytes before the NUL, may contain
 * NUL bytes). ret_len may be NULL. Returns 0 or -errno. */
int fileio_read(const char *path, unsigned flags, size_t max, char **ret, size_t *ret_len,
                char *err, size_t errlen);

/* The same from a descriptor returned by fileio_open(); path is for messages only. */
int fileio_read_fd(int fd, const char *path, size_t max, char **ret, size_t *ret_len, char *err,
                   size_t errlen);

/* Wipe and free a buffer that held a secret (a private key). */
void fileio_erase_free(char *buf, size_t len);

/* "a FIFO", "a directory", ... for st_mode. */
const char *fileio_type_name(mode_t mode);
