/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The receiving end of the end-to-end relay benchmarks: a libmosquitto subscriber (QoS 1) that
 * reads the send time from each payload ("...ts=NANOS;", CLOCK_REALTIME, as mcugw-sim
 * --timestamps and bench-relay-baseline write it) and notes the arrival time.
 *
 *   bench-relay-subscriber HOST PORT CA CERT KEY TOPIC COUNT TIMEOUT-S SKIP
 *
 * Prints "ready" once subscribed, then, when COUNT messages are in (or after TIMEOUT-S seconds),
 * {"received":N,"first_send_ns":…,"last_recv_ns":…,"p50_ms":…,"p99_ms":…,"max_ms":…,"samples":…}
 * where the percentiles are over the messages after the first SKIP (warm-up).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <mosquitto.h>

static long count, skip, received;
static double *lat;
static long n_lat;
static unsigned long long first_send = ~0ULL, last_recv;
static int subscribed;
static const char *topic;

static unsigned long long now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
        if (rc == 0)
                mosquitto_subscribe(m, NULL, topic, 1);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *qos)
{
        if (!subscribed) {
                subscribed = 1;
                printf("ready\n");
                fflush(stdout);
        }
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
        unsigned long long t = now_ns(), ts = 0;
        char buf[64];
        size_t n =
                (size_t)msg->payloadlen < sizeof buf - 1 ? (size_t)msg->payloadlen : sizeof buf - 1;
        const char *p;

        received++;
        last_recv = t;
        memcpy(buf, msg->payload, n);
        buf[n] = 0;
        p = strstr(buf, "ts=");
        if (!p)
                return;
        ts = strtoull(p + 3, NULL, 10);
        if (ts < first_send)
                first_send = ts;
        if (received > skip && n_lat < count)
                lat[n_lat++] = (double)(long long)(t - ts) / 1e6;
}

static int cmp(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double pct(double p)
{
        long i = (long)((double)n_lat * p);
        if (!n_lat)
                return -1;
        return lat[i < n_lat ? i : n_lat - 1];
}

int main(int argc, char **argv)
{
        struct mosquitto *m;
        double timeout;
        struct timespec t0, t;
        int rc;

        if (argc != 10) {
                fprintf(stderr, "usage: %s HOST PORT CA CERT KEY TOPIC COUNT TIMEOUT-S SKIP\n",
                        argv[0]);
                return 2;
        }
        topic = argv[6];
        count = atol(argv[7]);
        timeout = atof(argv[8]);
        skip = atol(argv[9]);
        lat = calloc((size_t)count + 1, sizeof *lat);
        mosquitto_lib_init();
        m = mosquitto_new("bench-subscriber", true, NULL);
        mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_connect_callback_set(m, on_connect);
        mosquitto_subscribe_callback_set(m, on_subscribe);
        mosquitto_message_callback_set(m, on_message);
        if (!lat ||
            mosquitto_tls_set(m, argv[3], NULL, argv[4], argv[5], NULL) != MOSQ_ERR_SUCCESS ||
            mosquitto_connect(m, argv[1], atoi(argv[2]), 60) != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "subscriber: cannot connect\n");
                return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if ((rc = mosquitto_loop(m, 100, 1)) != MOSQ_ERR_SUCCESS) {
                        fprintf(stderr, "subscriber: %s\n", mosquitto_strerror(rc));
                        return 1;
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                if (received >= count ||
                    (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >
                            timeout)
                        break;
        }
        qsort(lat, (size_t)n_lat, sizeof *lat, cmp);
        printf("{\"received\":%ld,\"first_send_ns\":%llu,\"last_recv_ns\":%llu,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"samples\":%ld}\n",
               received, first_send == ~0ULL ? 0 : first_send, last_recv, pct(0.50), pct(0.99),
               n_lat ? lat[n_lat - 1] : -1.0, n_lat);
        mosquitto_disconnect(m);
        mosquitto_destroy(m);
        mosquitto_lib_cleanup();
        free(lat);
        return 0;
}
