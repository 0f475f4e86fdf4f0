/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The baseline of scripts/bench ota-download: a bare libmosquitto client that downloads a file
 * from an MQTT stream the simplest fast way AWS allows — one 128 KB request (one block of
 * BLOCK bytes, or 128K/BLOCK blocks) at a time, the next as soon as the last block of the
 * previous one is in. Same broker, same TLS client certificate, same scripted cloud as the
 * gateway.
 *
 *   bench-ota-download-baseline HOST PORT CA CERT KEY THING STREAM SIZE BLOCK
 *
 * Prints {"bytes":N,"seconds":S,"bytes_per_s":R} once every block is in.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <mosquitto.h>

#include "ota/ota_stream.h"

static uint32_t n_blocks, have, next_block, per_req, block_size, outstanding;
static uint8_t *got;
static char req_topic[256];
static int connected, subscribed;

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void request(struct mosquitto *m)
{
        struct ota_stream_request r = { .file_id = 0, .block_size = block_size };
        uint8_t *buf = NULL;
        size_t len = 0;

        if (next_block >= n_blocks)
                return;
        r.offset = next_block;
        r.n_blocks = next_block + per_req > n_blocks ? n_blocks - next_block : per_req;
        snprintf(r.client_token, sizeof r.client_token, "b%u", next_block);
        if (ota_stream_encode_request(&r, &buf, &len) < 0)
                exit(1);
        outstanding = r.n_blocks;
        next_block += r.n_blocks;
        mosquitto_publish(m, NULL, req_topic, (int)len, buf, 0, false);
        free(buf);
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
        connected = rc == 0 ? 1 : -1;
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *q)
{
        subscribed = 1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
        struct ota_stream_data d;

        if (ota_stream_decode_data(msg->payload, (size_t)msg->payloadlen, &d) < 0 ||
            d.block >= n_blocks)
                return;
        if (!got[d.block]) {
                got[d.block] = 1;
                have++;
        }
        if (outstanding && --outstanding == 0)
                request(m);
}

int main(int argc, char **argv)
{
        char data_topic[256];
        struct mosquitto *m;
        uint64_t size;
        double t0, t1;

        if (argc != 10) {
                fprintf(stderr, "usage: %s HOST PORT CA CERT KEY THING STREAM SIZE BLOCK\n",
                        argv[0]);
                return 2;
        }
        size = strtoull(argv[8], NULL, 10);
        block_size = (uint32_t)atol(argv[9]);
        n_blocks = (uint32_t)((size + block_size - 1) / block_size);
        per_req = OTA_STREAM_BLOCK_MAX / block_size ? OTA_STREAM_BLOCK_MAX / block_size : 1;
        got = calloc(n_blocks, 1);
        snprintf(req_topic, sizeof req_topic, "$aws/things/%s/streams/%s/get/cbor", argv[6],
                 argv[7]);
        snprintf(data_topic, sizeof data_topic, "$aws/things/%s/streams/%s/data/cbor", argv[6],
                 argv[7]);
        mosquitto_lib_init();
        m = mosquitto_new("bench-ota-baseline", true, NULL);
        mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_connect_callback_set(m, on_connect);
        mosquitto_subscribe_callback_set(m, on_subscribe);
        mosquitto_message_callback_set(m, on_message);
        if (mosquitto_tls_set(m, argv[3], NULL, argv[4], argv[5], NULL) != MOSQ_ERR_SUCCESS ||
            mosquitto_connect(m, argv[1], atoi(argv[2]), 30) != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "cannot connect\n");
                return 1;
        }
        while (!connected)
                mosquitto_loop(m, 100, 1);
        if (connected < 0)
                return 1;
        mosquitto_subscribe(m, NULL, data_topic, 0);
        while (!subscribed)
                mosquitto_loop(m, 100, 1);
        t0 = now_s();
        request(m);
        while (have < n_blocks) {
                if (mosquitto_loop(m, 1000, 1) != MOSQ_ERR_SUCCESS)
                        return 1;
                if (now_s() - t0 > 120) {
                        fprintf(stderr, "timed out with %u of %u blocks\n", have, n_blocks);
                        return 1;
                }
        }
        t1 = now_s();
        printf("{\"bytes\":%llu,\"seconds\":%.3f,\"bytes_per_s\":%.0f}\n", (unsigned long long)size,
               t1 - t0, (double)size / (t1 - t0));
        mosquitto_disconnect(m);
        mosquitto_destroy(m);
        mosquitto_lib_cleanup();
        free(got);
        return 0;
}
