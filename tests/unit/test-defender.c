/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "monitor/defender.h"
#include "monitor/metrics.h"

static const char tcp[] =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0      "
        "  0 1058 1 00000000077992f6 100 0 0 10 0\n"
        "   1: 0100007F:924B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0      "
        "  0 183227 1 00000000ad2eb65b 100 0 0 10 0\n"
        "   2: 0100007F:E468 0100007F:D7D1 06 00000000:00000000 03:00000919 00000000     0      "
        "  0 0 3 000000000bcc69f6\n"
        "   3: 0A00000A:C350 0200A8C0:22B3 01 00000000:00000000 00:00000000 00000000     0      "
        "  0 4242 1 0000000000000000 20 4 30 10 -1\n"
        "   4: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0      "
        "  0 1059 1 00000000077992f6 100 0 0 10 0\n"
        "garbage line\n"
        "   5: ZZZZZZZZ:07E8 00000000:0000 0A\n";

static const char tcp6[] =
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 1 1\n"
        "   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 "
        "00000000:00000000 00:00000000 00000000     0        0 2 1\n";

static const char udp[] =
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n"
        "  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0    "
        "    0 10 2 0 0\n"
        "  101: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0    "
        "    0 11 2 0 0\n";

static const char dev[] =
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
        "drop fifo colls carrier compressed\n"
        "    lo: 978765518 3060241    0    0    0     0          0         0 978765518 3060241  "
        "  0    0    0     0       0          0\n"
        "  eth0: 1000 10    0    0    0     0          0         0 2000 20    0    0    0     0 "
        "      0          0\n"
        " wlan0: 500 5    0    0    0     0          0         0 700 7    0    0    0     0     "
        "  0          0\n";

static void test_parse(void **state)
{
        struct defender_net net = { 0 };

        assert_int_equal(defender_parse_tcp(tcp, false, &net), 0);
        assert_int_equal(defender_parse_tcp(tcp6, true, &net), 0);
        assert_int_equal(defender_parse_udp(udp, &net), 0);
        assert_int_equal(defender_parse_dev(dev, &net), 0);

        /* 2024 twice (deduplicated), 37451, 22 over IPv6 */
        assert_int_equal(net.n_tcp_listen, 3);
        assert_int_equal(net.tcp_listen[0].port, 2024);
        assert_int_equal(net.tcp_listen[1].port, 37451);
        assert_int_equal(net.tcp_listen[2].port, 22);
        assert_int_equal(net.n_established, 2);
        assert_int_equal(net.total_established, 2);
        assert_string_equal(net.established[0].remote, "192.168.0.2:8883");
        assert_int_equal(net.established[0].local_port, 50000);
        assert_string_equal(net.established[1].remote, "[::1]:54321");
        assert_int_equal(net.established[1].local_port, 8080);
        assert_int_equal(net.n_udp_listen, 2);
        assert_int_equal(net.udp_listen[0].port, 68);
        assert_int_equal(net.udp_listen[1].port, 53);
        assert_int_equal(net.bytes_in, 1500);
        assert_int_equal(net.packets_in, 15);
        assert_int_equal(net.bytes_out, 2700);
        assert_int_equal(net.packets_out, 27);

        /* Nonsense is ignored, not a crash. */
        memset(&net, 0, sizeof net);
        assert_int_equal(defender_parse_tcp("", false, &net), 0);
        assert_int_equal(defender_parse_tcp("hdr\n 0: 1:2 3:4 0A\n", true, &net), 0);
        assert_int_equal(defender_parse_dev("x:\nlo: 1 2\n", &net), 0);
        assert_int_equal(net.n_tcp_listen + net.bytes_in, 0);
}

static void test_report(void **state)
{
        struct defender_net net = { 0 };
        json_t *m, *rep, *cm;

        defender_parse_tcp(tcp, false, &net);
        defender_parse_dev(dev, &net);
        m = json_pack("{s{sI sI sf} s[{ss ss sb sI sI sI sI}{ss ss sb sI sI sI sI}]}", "gateway",
                      "outbox_rows", (json_int_t)12, "rss_bytes", (json_int_t)4096, "cpu_percent",
                      1.5, "devices", "id", "a", "state", "active", "connected", 1, "telemetry",
                      (json_int_t)100, "auth_failures", (json_int_t)0, "mac_errors", (json_int_t)1,
                      "replays", (json_int_t)0, "id", "b", "state", "quarantined", "connected", 0,
                      "telemetry", (json_int_t)5, "auth_failures", (json_int_t)9, "mac_errors",
                      (json_int_t)0, "replays", (json_int_t)2);
        rep = defender_report(1700000000, &net, m);
        assert_non_null(rep);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(rep, "header"), "report_id")),
                1700000000);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(rep, "header"), "version")),
                "1.0");
        {
                json_t *mt = json_object_get(rep, "metrics");
                json_t *lp = json_object_get(mt, "listening_tcp_ports");
                json_t *tc = json_object_get(json_object_get(mt, "tcp_connections"),
                                             "established_connections");
                assert_int_equal(json_integer_value(json_object_get(lp, "total")), 2);
                assert_int_equal(json_array_size(json_object_get(lp, "ports")), 2);
                assert_int_equal(json_integer_value(json_object_get(tc, "total")), 1);
                assert_string_equal(json_string_value(json_object_get(
                                            json_array_get(json_object_get(tc, "connections"), 0),
                                            "remote_addr")),
                                    "192.168.0.2:8883");
                assert_int_equal(json_integer_value(json_object_get(
                                         json_object_get(mt, "network_stats"), "bytes_in")),
                                 1500);
        }
        cm = json_object_get(rep, "custom_metrics");
#define NUM(name)                                                                                  \
        json_number_value(json_object_get(json_array_get(json_object_get(cm, name), 0), "number"))
        assert_true(NUM("mcugw_auth_failures") == 9);
        assert_true(NUM("mcugw_devices_quarantined") == 1);
        assert_true(NUM("mcugw_devices_connected") == 1);
        assert_true(NUM("mcugw_outbox_rows") == 12);
        assert_true(NUM("mcugw_cpu_percent") == 1.5);
#undef NUM
        {
                json_t *ids = json_object_get(
                        json_array_get(json_object_get(cm, "mcugw_device_ids"), 0), "string_list");
                json_t *msgs = json_object_get(
                        json_array_get(json_object_get(cm, "mcugw_device_messages"), 0),
                        "number_list");
                assert_int_equal(json_array_size(ids), 2);
                assert_int_equal(json_integer_value(json_array_get(msgs, 1)), 5);
        }
        json_decref(rep);
        json_decref(m);
}

static void test_proc_status(void **state)
{
        struct metrics_proc p = { 0 };
        const char *text = "Name:\tmcugwd\nVmPeak:\t  10000 kB\nVmRSS:\t    5120 kB\n"
                           "RssAnon:\t    2048 kB\nThreads:\t1\n";
        assert_int_equal(metrics_parse_proc_status(text, &p), 0);
        assert_int_equal(p.rss_bytes, 5120 * 1024);
        assert_int_equal(p.rss_anon_bytes, 2048 * 1024);
        assert_int_equal(p.threads, 1);
        assert_int_equal(metrics_parse_proc_status("nothing\n", &p), -ENODATA);
        assert_int_equal(metrics_read_proc(&p), 0);
        assert_true(p.rss_bytes > 0 && p.fds >= 3);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_report),
                cmocka_unit_test(test_proc_status),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
