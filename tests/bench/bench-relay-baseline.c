/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The baseline of scripts/bench relay: a bare libmosquitto QoS 1 publisher, same TLS client
 * certificate, same broker, same in-flight window and TCP_NODELAY as the gateway, no outbox.
 *
 *   bench-relay-baseline HOST PORT CA CERT KEY COUNT SIZE INFLIGHT TOPIC [RATE]
 *
 * With RATE (messages per second) the sends are paced, for the latency benchmark's baseline;
 * without, it sends as fast as the in-flight window allows.
 *
 * Prints {"msgs":N,"seconds":S,"msgs_per_s":R} when every PUBACK is in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <mosquitto.h>

static long inflight, acked;
static int connected;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
        connected = rc == 0 ? 1 : -1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
        inflight--;
        acked++;
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
        struct mosquitto *m;
        long count, sent = 0, max_inflight;
        size_t size;
        char *payload;
        double t0, rate = 0;
        int rc;

        if (argc != 10 && argc != 11) {
                fprintf(stderr,
                        "usage: %s HOST PORT CA CERT KEY COUNT SIZE INFLIGHT TOPIC [RATE]\n",
                        argv[0]);
                return 2;
        }
        count = atol(argv[6]);
        size = (size_t)atol(argv[7]);
        max_inflight = atol(argv[8]);
        if (argc == 11)
                rate = atof(argv[10]);
        payload = malloc(size + 1);
        memset(payload, 'x', size);
        mosquitto_lib_init();
        m = mosquitto_new("bench-baseline", true, NULL);
        mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_max_inflight_messages_set(m, (unsigned)max_inflight);
        mosquitto_publish_callback_set(m, on_publish);
        mosquitto_connect_callback_set(m, on_connect);
        if (mosquitto_tls_set(m, argv[3], NULL, argv[4], argv[5], NULL) != MOSQ_ERR_SUCCESS ||
            mosquitto_connect(m, argv[1], atoi(argv[2]), 60) != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "baseline: cannot connect\n");
                return 1;
        }
        /* Wait for CONNACK. */
        while (connected == 0)
                if ((rc = mosquitto_loop(m, 100, 1)) != MOSQ_ERR_SUCCESS) {
                        fprintf(stderr, "baseline: %s\n", mosquitto_strerror(rc));
                        return 1;
                }
        if (connected < 0) {
                fprintf(stderr, "baseline: connection refused\n");
                return 1;
        }
        t0 = now_s();
        while (acked < count) {
                while (sent < count && inflight < max_inflight &&
                       (rate <= 0 || now_s() >= t0 + (double)sent / rate)) {
                        struct timespec rt;
                        int n;
                        clock_gettime(CLOCK_REALTIME, &rt);
                        /* The send time, for bench-relay-subscriber (as mcugw-sim --timestamps). */
                        n = snprintf(payload, size, "seq=%ld;ts=%llu;", sent + 1,
                                     (unsigned long long)rt.tv_sec * 1000000000ULL +
                                             (unsigned long long)rt.tv_nsec);
                        payload[n] = 'x';
                        if (mosquitto_publish(m, NULL, argv[9], (int)size, payload, 1, false) !=
                            MOSQ_ERR_SUCCESS) {
                                fprintf(stderr, "baseline: publish failed\n");
                                return 1;
                        }
                        sent++;
                        inflight++;
                }
                if ((rc = mosquitto_loop(m, rate > 0 ? 1 : 1000, 1)) != MOSQ_ERR_SUCCESS) {
                        fprintf(stderr, "baseline: %s\n", mosquitto_strerror(rc));
                        return 1;
                }
        }
        printf("{\"msgs\":%ld,\"seconds\":%.3f,\"msgs_per_s\":%.0f}\n", count, now_s() - t0,
               (double)count / (now_s() - t0));
        mosquitto_disconnect(m);
        mosquitto_destroy(m);
        mosquitto_lib_cleanup();
        free(payload);
        return 0;
}
