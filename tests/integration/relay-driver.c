/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relay-driver: the whole gateway (gateway_new: database, audit, control socket, relay, MQTT)
 * fed with synthetic telemetry from N made-up devices through relay_submit(), as the link does
 * for authenticated MCUs. Used by the integration tests of the relay, so that they do not
 * depend on the link or the simulator (the benchmarks go through the link: mcugw-sim).
 *
 *   relay-driver --config FILE [--devices N] [--count M] [--rate R] [--size S]
 *                [--acked-log FILE] [--max-backlog B] [--exit-when-drained] [--then-rate R]
 *
 * Each device d<i> sends M messages (0 = forever) with seq 1, 2, …; the payload is ASCII
 * "seq=N;ts=NANOS;" (CLOCK_REALTIME) padded with 'x' to S bytes. --rate is messages/s over all
 * devices (0: as fast as the relay drains, keeping at most B messages not yet acked by the
 * broker). Each message whose durable callback fired is appended to the acked log as
 * "DEVICE SEQ\n" with write(2), so a kill -9 loses no line. Commands for d<i> are printed on
 * stdout ("CMD DEVICE ID PAYLOAD") and answered at once with "ok:" + payload; others are refused
 * as unknown devices. With --then-rate, once the M messages per device are out the devices go on
 * at R messages/s (live traffic after a burst). At exit one JSON line of counters goes to
 * stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/conf.h"
#include "daemon/gateway.h"
#include "basic/log.h"
#include "cloud/relay.h"

static unsigned arg_devices = 1, arg_size = 32;
static uint64_t arg_count = 100, arg_rate = 1000, arg_max_backlog = 20000, arg_then_rate;
static bool then_mode;
static uint64_t then_t0_ns, then_sent0;
static const char *arg_config, *arg_acked;
static bool arg_exit_drained;

static struct relay *relay;
static int acked_fd = -1;
static uint32_t *seqs;
static uint64_t sent, durable, failed;
static uint64_t t0_ns, t_last_ns, t_drained_ns;
static uv_timer_t gen_timer;

static uint64_t now_ns(clockid_t c)
{
        struct timespec ts;
        clock_gettime(c, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void on_durable(void *ud, int status)
{
        uintptr_t v = (uintptr_t)ud;
        char line[64];
        int n;

        if (status < 0) {
                failed++;
                return;
        }
        durable++;
        if (acked_fd >= 0) {
                n = snprintf(line, sizeof line, "d%u %u\n", (unsigned)(v >> 32),
                             (unsigned)(v & 0xffffffffu));
                if (write(acked_fd, line, (size_t)n) < 0)
                        abort();
        }
}

static uint64_t relay_counter(const char *name)
{
        json_t *o = relay_mqtt_status(relay);
        uint64_t a = (uint64_t)json_integer_value(json_object_get(o, name));
        json_decref(o);
        return a;
}

static uint64_t broker_acked(void)
{
        return relay_counter("acked");
}

static bool send_one(void)
{
        static uint8_t buf[65536];
        unsigned d = (unsigned)(sent % arg_devices);
        char dev[16];
        uint32_t seq;
        int n, r;

        if (arg_count && !then_mode && seqs[d] >= arg_count)
                return false;
        seq = seqs[d] + 1;
        snprintf(dev, sizeof dev, "d%u", d);
        n = snprintf((char *)buf, sizeof buf, "seq=%u;ts=%" PRIu64 ";", seq,
                     now_ns(CLOCK_REALTIME));
        if ((unsigned)n < arg_size)
                memset(buf + n, 'x', arg_size - (unsigned)n);
        r = relay_submit(relay, dev, 1, seq, buf, MAX((unsigned)n, arg_size), on_durable,
                         (void *)(((uintptr_t)d << 32) | seq));
        if (r < 0) {
                fprintf(stderr, "relay-driver: submit failed: %s\n", strerror(-r));
                return false;
        }
        seqs[d] = seq;
        sent++;
        return true;
}

static void on_gen(uv_timer_t *t)
{
        uint64_t total = arg_count * arg_devices, target, now = now_ns(CLOCK_MONOTONIC);
        unsigned burst = 0;

        if (!t0_ns)
                t0_ns = now;
        if (arg_rate)
                target = (now - t0_ns) * arg_rate / 1000000000ULL + 1;
        else {
                uint64_t a = broker_acked();
                target = a + arg_max_backlog;
        }
        if (arg_count && !then_mode)
                target = MIN(target, total);
        if (then_mode)
                target = then_sent0 + (now - then_t0_ns) * arg_then_rate / 1000000000ULL + 1;
        while (sent < target && burst < 20000 && send_one())
                burst++;
        if (burst)
                t_last_ns = now;
        /* --then-rate: after the counted burst, keep going at a live rate, forever. */
        if (arg_then_rate && !then_mode && arg_count && sent >= total) {
                then_mode = true;
                then_t0_ns = now;
                then_sent0 = sent;
                printf("{\"burst_done\":%" PRIu64 "}\n", sent);
                fflush(stdout);
        }
        if (arg_count && sent >= total && arg_exit_drained && durable >= total &&
            broker_acked() >= total) {
                t_drained_ns = now;
                uv_timer_stop(t);
                kill(getpid(), SIGTERM);
        }
}

static int on_command(void *ud, const char *device, uint32_t id, const uint8_t *p, size_t len)
{
        char out[1100];
        unsigned idx;
        char tail;

        if (sscanf(device, "d%u%c", &idx, &tail) != 1 || idx >= arg_devices)
                return -ENOENT;
        printf("CMD %s %u %.*s\n", device, id, (int)MIN(len, (size_t)1000), (const char *)p);
        fflush(stdout);
        snprintf(out, sizeof out, "ok:%.*s", (int)MIN(len, (size_t)1000), (const char *)p);
        relay_command_result(relay, device, id, 0, (const uint8_t *)out, strlen(out));
        return 0;
}

static void noop_close(uv_handle_t *h)
{
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "devices", required_argument, NULL, 'd' },
                { "count", required_argument, NULL, 'n' },
                { "rate", required_argument, NULL, 'r' },
                { "size", required_argument, NULL, 's' },
                { "acked-log", required_argument, NULL, 'a' },
                { "max-backlog", required_argument, NULL, 'b' },
                { "exit-when-drained", no_argument, NULL, 'x' },
                { "then-rate", required_argument, NULL, 't' },
                {},
        };
        struct conf_errors err = { 0 };
        struct conf_set set = { 0 };
        struct gateway *gw = NULL;
        uv_loop_t loop;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:d:n:r:s:a:b:xt:", opts, NULL)) >= 0)
                switch (c) {
                case 'c': arg_config = optarg; break;
                case 'd': arg_devices = (unsigned)strtoul(optarg, NULL, 10); break;
                case 'n': arg_count = strtoull(optarg, NULL, 10); break;
                case 'r': arg_rate = strtoull(optarg, NULL, 10); break;
                case 's': arg_size = (unsigned)strtoul(optarg, NULL, 10); break;
                case 'a': arg_acked = optarg; break;
                case 'b': arg_max_backlog = strtoull(optarg, NULL, 10); break;
                case 'x': arg_exit_drained = true; break;
                case 't': arg_then_rate = strtoull(optarg, NULL, 10); break;
                default: return 2;
                }
        if (!arg_config || !arg_devices || arg_size > 60000) {
                fprintf(stderr, "usage: relay-driver --config FILE [options]\n");
                return 2;
        }
        seqs = calloc(arg_devices, sizeof *seqs);
        if (arg_acked) {
                acked_fd = open(arg_acked, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (acked_fd < 0) {
                        perror(arg_acked);
                        return 1;
                }
        }
        log_open("relay-driver");
        r = conf_set_load(arg_config, &set, &err);
        if (r < 0) {
                conf_errors_print(&err, stderr, NULL);
                conf_errors_clear(&err);
                return 1;
        }
        uv_loop_init(&loop);
        r = gateway_new(&loop, arg_config, &set, &gw);
        if (r >= 0) {
                relay = gateway_relay(gw);
                relay_set_command_handler(relay, on_command, NULL);
                uv_timer_init(&loop, &gen_timer);
                uv_timer_start(&gen_timer, on_gen, 1, 1);
                r = gateway_run(gw);
                uv_close((uv_handle_t *)&gen_timer, noop_close);
                printf("{\"sent\":%" PRIu64 ",\"durable\":%" PRIu64 ",\"failed\":%" PRIu64
                       ",\"broker_acked\":%" PRIu64 ",\"publishes\":%" PRIu64
                       ",\"send_s\":%.3f,\"drain_s\":%.3f}\n",
                       sent, durable, failed, broker_acked(), relay_counter("publishes"),
                       (double)(t_last_ns - t0_ns) / 1e9,
                       t_drained_ns ? (double)(t_drained_ns - t0_ns) / 1e9 : -1.0);
                fflush(stdout);
                gateway_free(gw);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        free(seqs);
        if (acked_fd >= 0)
                close(acked_fd);
        if (uv_loop_close(&loop) != 0) {
                fprintf(stderr, "relay-driver: handles left open at exit\n");
                return 1;
        }
        return r < 0 ? 1 : 0;
}
