/* SPDX-License-Identifier: Apache-2.0 */
/* Pure parts of the link manager and the transports: key files
 * (format and permission check), endpoint parsing, ack tokens. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>

#include "link/ackq.h"
#include "link/link.h"
#include "link/transport.h"

static void write_file(const char *path, const char *text, mode_t mode)
{
        FILE *f;
        unlink(path);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
}

static void test_key_files(void **state)
{
        char dir[] = "/tmp/mcugw-test-link-XXXXXX", path[128];
        uint8_t k1[32], k2[32];
        unsigned mode = 0;
        struct stat st;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/link.key", dir);

        assert_int_equal(link_key_load(path, k1, &mode), -ENOENT);
        assert_int_equal(link_key_create(path, k1), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(st.st_size, 45); /* base64 + newline, as WireGuard */
        assert_int_equal(link_key_load(path, k2, &mode), 0);
        assert_memory_equal(k1, k2, 32);
        /* Never overwrite an existing key. */
        assert_int_equal(link_key_create(path, k2), -EEXIST);

        /* Credential hygiene: group/other access refused, mode reported. */
        chmod(path, 0640);
        assert_int_equal(link_key_load(path, k2, &mode), -EPERM);
        assert_int_equal(mode, 0640);
        chmod(path, 0604);
        assert_int_equal(link_key_load(path, k2, &mode), -EPERM);
        chmod(path, 0400);
        assert_int_equal(link_key_load(path, k2, &mode), 0);

        /* Format. */
        write_file(path, "not base64\n", 0600);
        assert_int_equal(link_key_load(path, k2, NULL), -EBADMSG);
        write_file(path, "AAAA\n", 0600);
        assert_int_equal(link_key_load(path, k2, NULL), -EBADMSG);
        write_file(path, "2CeQ3vO5rZ6u5QYb0a5o5wG6xgNHPWZ0nH1z1b0cXl4=", 0600); /* no newline */
        assert_int_equal(link_key_load(path, k2, NULL), 0);
        write_file(path, "2CeQ3vO5rZ6u5QYb0a5o5wG6xgNHPWZ0nH1z1b0cXl4=\n\n", 0600);
        assert_int_equal(link_key_load(path, k2, NULL), 0);

        /* A directory is not a key file. */
        unlink(path);
        mkdir(path, 0700);
        assert_int_equal(link_key_load(path, k2, NULL), -EPERM);
        rmdir(path);
        rmdir(dir);
}

static void test_parse_listen(void **state)
{
        struct transport_endpoint ep;
        const char *reason = NULL;
        char name[128];

        assert_int_equal(transport_parse_listen("unix:/run/mcugw/link.sock", &ep, &reason), 0);
        assert_int_equal(ep.kind, TRANSPORT_UNIX);
        assert_string_equal(ep.path, "/run/mcugw/link.sock");

        assert_int_equal(transport_parse_listen("tcp:127.0.0.1:7878", &ep, &reason), 0);
        assert_int_equal(ep.kind, TRANSPORT_TCP);
        transport_endpoint_name(&ep, name, sizeof name);
        assert_string_equal(name, "tcp:127.0.0.1:7878");

        assert_int_equal(transport_parse_listen("tcp:[::1]:7878", &ep, &reason), 0);
        transport_endpoint_name(&ep, name, sizeof name);
        assert_string_equal(name, "tcp:[::1]:7878");

        assert_int_equal(transport_parse_listen("tcp:127.0.0.1:0", &ep, &reason), -EINVAL);
        assert_int_equal(transport_parse_listen("tcp:127.0.0.1:65536", &ep, &reason), -EINVAL);
        assert_int_equal(transport_parse_listen("tcp:localhost:80", &ep, &reason), -EINVAL);
        assert_int_equal(transport_parse_listen("tcp:127.0.0.1", &ep, &reason), -EINVAL);
        assert_int_equal(transport_parse_listen("unix:relative", &ep, &reason), -EINVAL);
        assert_int_equal(transport_parse_listen("udp:1.2.3.4:5", &ep, &reason), -EINVAL);
        assert_non_null(reason);
        char long_path[200] = "unix:/";
        memset(long_path + 6, 'a', 150);
        long_path[156] = 0;
        assert_int_equal(transport_parse_listen(long_path, &ep, &reason), -EINVAL);
}

static void test_parse_serial(void **state)
{
        struct transport_endpoint ep;
        const char *reason = NULL;

        assert_int_equal(transport_parse_serial("/dev/ttyUSB0", &ep, &reason), 0);
        assert_string_equal(ep.path, "/dev/ttyUSB0");
        assert_int_equal(ep.baud, 115200);
        assert_int_equal(transport_parse_serial("/dev/ttyUSB0:921600", &ep, &reason), 0);
        assert_int_equal(ep.baud, 921600);
        /* A colon inside the path without a number after the last one is part of the path. */
        assert_int_equal(transport_parse_serial("/dev/serial/by-path/pci-0:1.0:9600", &ep, &reason),
                         0);
        assert_string_equal(ep.path, "/dev/serial/by-path/pci-0:1.0");
        assert_int_equal(ep.baud, 9600);
        assert_int_equal(transport_parse_serial("/dev/ttyUSB0:12345", &ep, &reason), -EINVAL);
        assert_int_equal(
                transport_parse_serial("/dev/serial/by-path/pci-0:14.0-usb-0:2:1.0", &ep, &reason),
                0);
        assert_string_equal(ep.path, "/dev/serial/by-path/pci-0:14.0-usb-0:2:1.0");
        assert_int_equal(ep.baud, 115200);
        assert_int_equal(transport_parse_serial("ttyUSB0", &ep, &reason), -EINVAL);
        assert_true(transport_baud_supported(115200));
        assert_false(transport_baud_supported(0));
}

/* Per-source limits count IPv4 addresses, IPv6 /64 prefixes and Unix users. */
static void test_source(void **state)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(1) };
        struct sockaddr_in b = { .sin_family = AF_INET, .sin_port = htons(2) };
        struct sockaddr_in6 x = { .sin6_family = AF_INET6 }, y = x, m = x;
        struct sockaddr_un u = { .sun_family = AF_UNIX };
        struct transport_source s1, s2;

        inet_pton(AF_INET, "192.0.2.7", &a.sin_addr);
        inet_pton(AF_INET, "192.0.2.7", &b.sin_addr);
        assert_int_equal(transport_source_from_addr((struct sockaddr *)&a, sizeof a, 0, &s1), 0);
        assert_int_equal(transport_source_from_addr((struct sockaddr *)&b, sizeof b, 0, &s2), 0);
        assert_memory_equal(s1.key, s2.key, sizeof s1.key); /* the port does not matter */
        assert_string_equal(s1.name, "192.0.2.7");
        inet_pton(AF_INET, "192.0.2.8", &b.sin_addr);
        transport_source_from_addr((struct sockaddr *)&b, sizeof b, 0, &s2);
        assert_memory_not_equal(s1.key, s2.key, sizeof s1.key);

        /* One /64 is one source; an IPv4-mapped address is the IPv4 address. */
        inet_pton(AF_INET6, "2001:db8:1:2::1", &x.sin6_addr);
        inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", &y.sin6_addr);
        transport_source_from_addr((struct sockaddr *)&x, sizeof x, 0, &s1);
        transport_source_from_addr((struct sockaddr *)&y, sizeof y, 0, &s2);
        assert_memory_equal(s1.key, s2.key, sizeof s1.key);
        assert_string_equal(s1.name, "2001:db8:1:2::/64");
        inet_pton(AF_INET6, "2001:db8:1:3::1", &y.sin6_addr);
        transport_source_from_addr((struct sockaddr *)&y, sizeof y, 0, &s2);
        assert_memory_not_equal(s1.key, s2.key, sizeof s1.key);
        inet_pton(AF_INET6, "::ffff:192.0.2.7", &m.sin6_addr);
        transport_source_from_addr((struct sockaddr *)&m, sizeof m, 0, &s1);
        transport_source_from_addr((struct sockaddr *)&a, sizeof a, 0, &s2);
        assert_memory_equal(s1.key, s2.key, sizeof s1.key);

        /* Unix sockets: the peer's user. */
        transport_source_from_addr((struct sockaddr *)&u, sizeof u, 1000, &s1);
        transport_source_from_addr((struct sockaddr *)&u, sizeof u, 1001, &s2);
        assert_memory_not_equal(s1.key, s2.key, sizeof s1.key);
        assert_string_equal(s1.name, "uid 1000");
        b.sin_family = AF_APPLETALK;
        assert_int_equal(transport_source_from_addr((struct sockaddr *)&b, sizeof b, 0, &s2),
                         -EAFNOSUPPORT);
}

static void test_token(void **state)
{
        uint64_t t = link_token_make(0xdeadbeef, 42);
        assert_int_equal(t >> 32, 0xdeadbeef);
        assert_int_equal((uint32_t)t, 42);
        /* The generation tells a stale token (a slot of an earlier session) from a live one. */
        assert_int_not_equal(link_token_make(1, 42), link_token_make(2, 42));
        assert_int_not_equal(link_token_make(1, 42), link_token_make(1, 43));
}

/* The pending-ack table: nothing allocated while nothing is pending, grown by doubling only
 * when every slot is taken, never beyond its limit (the oldest slot in rotation is reused, as
 * before), freed again when the last ack is answered; ids stay unique across frees. */
static void test_ackq(void **state)
{
        struct ackq q;
        uint32_t ids[70], seq;
        uint16_t stream;

        ackq_init(&q, 64);
        assert_null(q.slots);
        assert_int_equal(ackq_take(&q, 1, &stream, &seq), -ENOENT);

        /* One message in flight at a time: one small table, gone after each ack. */
        for (uint32_t i = 0; i < 3; i++) {
                assert_int_equal(ackq_add(&q, 7, 100 + i, &ids[i]), 0);
                assert_non_null(q.slots);
                assert_int_equal(q.n_alloc, 8);
                assert_int_equal(ackq_take(&q, ids[i], &stream, &seq), 0);
                assert_int_equal(stream, 7);
                assert_int_equal(seq, 100 + i);
                assert_null(q.slots);
                assert_int_equal(q.n_alloc, 0);
        }
        assert_true(ids[0] != 0 && ids[1] != ids[0] && ids[2] != ids[1]);
        assert_int_equal(ackq_take(&q, ids[2], &stream, &seq), -ENOENT); /* answered once */

        /* Grows 8, 16, 32, 64 as slots fill; a freed slot is reused before growing. */
        for (uint32_t i = 0; i < 9; i++)
                assert_int_equal(ackq_add(&q, 1, i, &ids[i]), 0);
        assert_int_equal(q.n_alloc, 16);
        assert_int_equal(ackq_take(&q, ids[3], &stream, &seq), 0);
        assert_int_equal(seq, 3);
        for (uint32_t i = 9; i < 16; i++)
                assert_int_equal(ackq_add(&q, 1, i, &ids[i]), 0);
        assert_int_equal(q.n_alloc, 16); /* 15 + the freed slot */
        for (uint32_t i = 16; i < 66; i++)
                assert_int_equal(ackq_add(&q, 1, i, &ids[i]), 0);
        assert_int_equal(q.n_alloc, 64);
        assert_int_equal(q.n_used, 64);

        /* At the limit: more messages reuse the oldest slots in rotation, nothing grows. */
        for (uint32_t i = 66; i < 70; i++)
                assert_int_equal(ackq_add(&q, 2, i, &ids[i]), 0);
        assert_int_equal(q.n_alloc, 64);
        assert_int_equal(q.n_used, 64);
        assert_int_equal(ackq_take(&q, ids[0], &stream, &seq), -ENOENT); /* slot 0 reused */
        assert_int_equal(ackq_take(&q, ids[69], &stream, &seq), 0);
        assert_int_equal(stream, 2);
        assert_int_equal(seq, 69);
        assert_int_equal(q.n_used, 63);

        /* Answer all the rest: the table goes once the last one is answered. */
        for (uint32_t i = 0; i < 69; i++)
                (void)ackq_take(&q, ids[i], &stream, &seq);
        assert_int_equal(q.n_used, 0);
        assert_null(q.slots);

        /* A limit that is not a power of two is exact too. */
        ackq_clear(&q);
        ackq_init(&q, 5);
        for (uint32_t i = 0; i < 7; i++)
                assert_int_equal(ackq_add(&q, 3, i, &ids[i]), 0);
        assert_int_equal(q.n_alloc, 5);
        assert_int_equal(q.n_used, 5);
        ackq_clear(&q);
        assert_null(q.slots);
}

int main(void)
{
        const struct CMUnitTest tests[] = {

                cmocka_unit_test(test_key_files),    cmocka_unit_test(test_parse_listen),
                cmocka_unit_test(test_parse_serial), cmocka_unit_test(test_token),
                cmocka_unit_test(test_source),       cmocka_unit_test(test_ackq),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
