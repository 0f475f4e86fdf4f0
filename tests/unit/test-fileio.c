/* SPDX-License-Identifier: Apache-2.0 */
/* fileio: regular files only, bounded, never blocking on a FIFO or device. Every test runs under
 * alarm(): a reader that blocks or loops (the old fopen()/fgets() behaviour on a FIFO or
 * /dev/zero) kills the test instead of hanging it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "basic/fileio.h"

static char tmpdir[64];

static void path_of(char *p, size_t n, const char *rel)
{
        snprintf(p, n, "%s/%s", tmpdir, rel);
}

static void write_bytes(const char *rel, const void *data, size_t len)
{
        char p[256];
        int fd;
        path_of(p, sizeof p, rel);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        close(fd);
}

static int setup(void **state)
{
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mcugw-test-fileio-XXXXXX");
        assert_non_null(mkdtemp(tmpdir));
        alarm(20);
        return 0;
}

static int teardown(void **state)
{
        char cmd[128];
        alarm(0);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        return system(cmd);
}

static void test_regular(void **state)
{
        char p[256], err[512], *buf = NULL;
        size_t len = 0;

        write_bytes("a.conf", "[Gateway]\nName=x\n", 17);
        path_of(p, sizeof p, "a.conf");
        assert_int_equal(fileio_read(p, 0, FILEIO_CONF_MAX, &buf, &len, err, sizeof err), 0);
        assert_int_equal(len, 17);
        assert_string_equal(buf, "[Gateway]\nName=x\n");
        free(buf);

        /* Empty: fine, an empty string. */
        write_bytes("empty", "", 0);
        path_of(p, sizeof p, "empty");
        assert_int_equal(fileio_read(p, 0, 16, &buf, &len, err, sizeof err), 0);
        assert_int_equal(len, 0);
        assert_string_equal(buf, "");
        free(buf);

        /* NUL bytes are kept (the caller decides), the buffer is still terminated. */
        write_bytes("nul", "a\0b", 3);
        path_of(p, sizeof p, "nul");
        assert_int_equal(fileio_read(p, 0, 16, &buf, &len, err, sizeof err), 0);
        assert_int_equal(len, 3);
        assert_memory_equal(buf, "a\0b", 4);
        free(buf);
}

static void test_size_limit(void **state)
{
        char p[256], err[512], *buf = NULL, data[9000];
        size_t len = 0;

        memset(data, 'x', sizeof data);
        write_bytes("big", data, sizeof data);
        path_of(p, sizeof p, "big");
        /* Exactly the limit is allowed, one byte more is not, and the message says so. */
        assert_int_equal(fileio_read(p, 0, sizeof data, &buf, &len, err, sizeof err), 0);
        assert_int_equal(len, sizeof data);
        free(buf);
        buf = NULL;
        assert_int_equal(fileio_read(p, 0, sizeof data - 1, &buf, &len, err, sizeof err), -EFBIG);
        assert_null(buf);
        assert_true(strstr(err, "big: file too large (9000 bytes, limit 8999)") != NULL);
}

static void test_fifo(void **state)
{
        char p[256], err[512], *buf = NULL;
        int fd;

        path_of(p, sizeof p, "f.conf");
        assert_int_equal(mkfifo(p, 0600), 0);
        /* No writer: a blocking open would never return. */
        fd = fileio_open(p, 0, 0, NULL, err, sizeof err);
        assert_int_equal(fd, -EINVAL);
        assert_true(strstr(err, "f.conf: not a regular file (a FIFO)") != NULL);
        assert_int_equal(fileio_read(p, 0, 100, &buf, NULL, err, sizeof err), -EINVAL);
        assert_null(buf);
}

static void test_devices_and_dirs(void **state)
{
        char p[256], err[512], *buf = NULL;

        /* /dev/zero and /dev/urandom never end: refused before the first read. */
        assert_int_equal(fileio_read("/dev/zero", 0, 100, &buf, NULL, err, sizeof err), -EINVAL);
        assert_string_equal(err, "/dev/zero: not a regular file (a character device)");
        assert_int_equal(fileio_read("/dev/urandom", 0, 100, &buf, NULL, err, sizeof err), -EINVAL);
        /* Reached through a symbolic link too (the target is what counts). */
        path_of(p, sizeof p, "zero.conf");
        assert_int_equal(symlink("/dev/zero", p), 0);
        assert_int_equal(fileio_read(p, 0, 100, &buf, NULL, err, sizeof err), -EINVAL);
        assert_true(strstr(err, "zero.conf: not a regular file (a character device)") != NULL);

        path_of(p, sizeof p, "x.conf");
        assert_int_equal(mkdir(p, 0700), 0);
        assert_int_equal(fileio_read(p, 0, 100, &buf, NULL, err, sizeof err), -EISDIR);
        assert_true(strstr(err, "x.conf: not a regular file (a directory)") != NULL);
        assert_null(buf);

        path_of(p, sizeof p, "missing");
        assert_int_equal(fileio_read(p, 0, 100, &buf, NULL, err, sizeof err), -ENOENT);
        assert_true(strstr(err, "missing: cannot open: ") != NULL);
}

static void test_symlinks(void **state)
{
        char p[256], target[256], err[512], *buf = NULL;
        size_t len = 0;

        write_bytes("target", "hello", 5);
        path_of(target, sizeof target, "target");
        path_of(p, sizeof p, "link");
        assert_int_equal(symlink(target, p), 0);
        /* Followed by default: links in /etc are common and legitimate. */
        assert_int_equal(fileio_read(p, 0, 100, &buf, &len, err, sizeof err), 0);
        assert_string_equal(buf, "hello");
        free(buf);
        buf = NULL;
        /* Refused where the caller says so. */
        assert_int_equal(fileio_read(p, FILEIO_NOFOLLOW, 100, &buf, &len, err, sizeof err), -ELOOP);
        assert_true(strstr(err, "link: is a symbolic link") != NULL);
        assert_null(buf);
}

static void test_open_clears_nonblock(void **state)
{
        char p[256], err[512];
        struct stat st;
        int fd;

        write_bytes("r", "abc", 3);
        path_of(p, sizeof p, "r");
        fd = fileio_open(p, 0, 3, &st, err, sizeof err);
        assert_true(fd >= 0);
        assert_int_equal(st.st_size, 3);
        assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        close(fd);
        assert_int_equal(fileio_open(p, 0, 2, NULL, err, sizeof err), -EFBIG);
        /* err may be NULL. */
        assert_int_equal(fileio_open("/dev/null", 0, 0, NULL, NULL, 0), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_regular, setup, teardown),
                cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fifo, setup, teardown),
                cmocka_unit_test_setup_teardown(test_devices_and_dirs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_open_clears_nonblock, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
