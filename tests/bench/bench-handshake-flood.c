/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scripts/bench handshake-flood: honest handshakes completed per second while junk and replayed
 * HS1 frames arrive at 10x the gateway's handshake rate limit (issue #15.2; docs/protocol.md,
 * "Handshake flood resistance"). All real: the link manager with a real registry in a real
 * SQLite file, each honest device the real device SDK (POSIX/OpenSSL port) on its own socket
 * pair, the attackers on socket pairs of their own. Honest devices handshake again 500 ms after
 * each success (below the per-link budget). Same run: a quiet phase (baseline), then a flood
 * phase with junk (random HS1-shaped frames: no valid mac1) and replays of HS1 frames recorded
 * from the honest devices (valid mac1, old timestamps), each at --flood-factor times
 * HandshakeRate=. Prints one JSON object; the budget is ratio >= 0.9.
 *
 *   bench-handshake-flood [--honest N] [--attackers N] [--rate R] [--seconds S]
 *                         [--flood-factor F]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <jansson.h>
#include <uv.h>

#include "mcugw/device.h"
#include "posix_openssl.h"

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "link/link.h"
#include "basic/log.h"
#include "devices/registry.h"

#define MAX_PEERS 256
#define TICK_MS 5
#define PAUSE_MS 500 /* an honest device handshakes again this long after a success */

struct honest {
        int fd;
        uv_poll_t poll;
        struct mcugw_device dev;
        uint8_t rx[MCUGW_DEVICE_RX_BUF(256)], tx[MCUGW_DEVICE_TX_BUF(512)];
        char id[24];
        uint8_t priv[32];
        uint64_t again_ms; /* reconnect then (0: not scheduled) */
        /* the first message 1 it sends, as an attacker on the line would record it */
        uint8_t rec[MCUGW_WIRE_MAX(512)];
        size_t rec_len;
        int recording;
};

static struct honest honest[MAX_PEERS];
static int att_fd[MAX_PEERS];
static int n_honest = 8, n_att = 20, phase; /* 0 warm-up, 1 quiet, 2 flood, 3 done */
static unsigned rate = 20, factor = 10;
static double seconds = 4.0;
static long completed[4], junk_sent, replays_sent;
static uint64_t phase_start_ms, ts_counter;
static uint8_t gw_pub[32];
static uv_loop_t loop;

static uint64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void die(const char *what, int r)
{
        fprintf(stderr, "bench-handshake-flood: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static int port_send(void *ctx, const uint8_t *data, size_t len)
{
        struct honest *h = ctx;
        size_t off = 0;

        if (h->recording && h->rec_len + len <= sizeof h->rec) {
                memcpy(h->rec + h->rec_len, data, len);
                h->rec_len += len;
                if (len && data[len - 1] == 0)
                        h->recording = 0; /* the delimiter: one whole frame */
        }
        while (off < len) {
                ssize_t k = write(h->fd, data + off, len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return MCUGW_EIO;
                off += (size_t)k;
        }
        return 0;
}

static uint32_t port_now(void *ctx)
{
        return (uint32_t)mono_ms();
}

/* Every honest device's timestamps grow (one counter for all is enough for that). */
static uint64_t port_timestamp(void *ctx)
{
        return ++ts_counter;
}

static void on_state(void *user, int st)
{
        struct honest *h = user;

        if (st != MCUGW_DEV_CONNECTED)
                return;
        completed[phase]++;
        h->again_ms = mono_ms() + PAUSE_MS;
}

static void on_honest_poll(uv_poll_t *p, int status, int events)
{
        struct honest *h = p->data;
        uint8_t buf[2048];
        ssize_t k;

        while ((k = recv(h->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
                mcugw_device_input(&h->dev, buf, (size_t)k);
}

/* An HS1-shaped frame of random bytes: right header and length, no valid mac1. */
static size_t junk_frame(uint8_t *wire, size_t cap)
{
        uint8_t f[170];
        int n;

        RAND_bytes(f, sizeof f);
        f[0] = MCUGW_PROTO_VERSION;
        f[1] = MCUGW_FRAME_HS1;
        f[2] = f[3] = 0;
        n = mcugw_frame_encode(f, sizeof f, wire, cap);
        return n > 0 ? (size_t)n : 0;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
        /* The gateway may lag behind a flood: drop what does not fit, as a line would. */
        (void)send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void on_tick(uv_timer_t *t)
{
        uint64_t now = mono_ms();
        uint8_t buf[4096];

        for (int i = 0; i < n_honest; i++) {
                struct honest *h = &honest[i];
                mcugw_device_tick(&h->dev);
                if (h->again_ms && now >= h->again_ms &&
                    mcugw_device_state(&h->dev) == MCUGW_DEV_CONNECTED) {
                        h->again_ms = 0;
                        mcugw_device_reconnect(&h->dev, MCUGW_LINK_APP);
                }
        }
        if (phase == 2) {
                /* Junk and replays, each at factor x the rate limit, spread over the links. */
                double el = (double)(now - phase_start_ms) / 1000.0;
                long owed = (long)(el * rate * factor);
                while (junk_sent < owed || replays_sent < owed) {
                        int a = (int)((junk_sent + replays_sent) % n_att);
                        if (junk_sent <= replays_sent) {
                                uint8_t w[MCUGW_WIRE_MAX(200)];
                                size_t n = junk_frame(w, sizeof w);
                                send_all(att_fd[a], w, n);
                                junk_sent++;
                        } else {
                                struct honest *h = &honest[replays_sent % n_honest];
                                send_all(att_fd[a], h->rec, h->rec_len);
                                replays_sent++;
                        }
                }
        }
        for (int a = 0; a < n_att; a++)
                while (recv(att_fd[a], buf, sizeof buf, MSG_DONTWAIT) > 0)
                        ; /* COOKIE frames nobody can use without the gateway's key */
        if (now - phase_start_ms >= (uint64_t)((phase == 0 ? 1.0 : seconds) * 1000)) {
                phase++;
                phase_start_ms = now;
                if (phase == 3)
                        uv_stop(&loop);
        }
}

static json_int_t counter(json_t *st, const char *name)
{
        return json_integer_value(json_object_get(json_object_get(st, "counters"), name));
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "honest", required_argument, NULL, 'h' },
                { "attackers", required_argument, NULL, 'a' },
                { "rate", required_argument, NULL, 'r' },
                { "seconds", required_argument, NULL, 's' },
                { "flood-factor", required_argument, NULL, 'f' },
                {},
        };
        char dir[] = "/tmp/mcugw-bench-flood-XXXXXX", path[256], cfgtext[512], cmd[300];
        struct conf_errors err = { 0 };
        struct conf *conf = NULL;
        struct db *db = NULL;
        struct audit *audit = NULL;
        struct registry *reg = NULL;
        struct link_manager *m = NULL;
        uv_timer_t tick;
        json_t *st;
        double quiet, flood;
        int c, r, recorded = 0;

        while ((c = getopt_long(argc, argv, "h:a:r:s:f:", opts, NULL)) >= 0)
                switch (c) {
                case 'h': n_honest = atoi(optarg); break;
                case 'a': n_att = atoi(optarg); break;
                case 'r': rate = (unsigned)atoi(optarg); break;
                case 's': seconds = atof(optarg); break;
                case 'f': factor = (unsigned)atoi(optarg); break;
                default: return 2;
                }
        if (n_honest < 1 || n_honest > MAX_PEERS || n_att < 1 || n_att > MAX_PEERS || !rate ||
            seconds <= 0 || !factor)
                return 2;
        log_set_level(LOG_ERR);
        if (!mkdtemp(dir))
                die("mkdtemp", errno);
        uv_loop_init(&loop);
        snprintf(path, sizeof path, "%s/mcugw.db", dir);
        if ((r = db_open(&loop, path, DB_SYNC_NORMAL, 10000, &db)) < 0)
                die("db_open", r);
        if ((r = audit_open(db, &audit)) < 0)
                die("audit_open", r);
        if ((r = registry_open(db, audit, &reg)) < 0)
                die("registry_open", r);
        for (int i = 0; i < n_honest; i++) {
                uint8_t pub[32];
                const char *e = NULL;
                mcugw_openssl_keygen(honest[i].priv, pub);
                snprintf(honest[i].id, sizeof honest[i].id, "honest-%03d", i);
                if (registry_add(reg, "bench", honest[i].id, pub, DEVICE_ACTIVE, "", "cli", &e) < 0)
                        die("registry_add", EINVAL);
        }
        db_commit(db);
        snprintf(cfgtext, sizeof cfgtext,
                 "[Paths]\nStateDirectory=%s\n[Link]\nHandshakeRate=%u\n"
                 "HandshakeRatePerLink=2\nHandshakeTimeout=1h\n",
                 dir, rate);
        if ((r = conf_load_string("bench", cfgtext, &conf, &err)) < 0)
                die("conf", r);
        if ((r = link_manager_new(&loop, &conf->link, conf->state_dir, audit, reg, &m)) < 0)
                die("link_manager_new", r);
        {
                uint8_t tmp[36];
                EVP_DecodeBlock(tmp, (const unsigned char *)link_manager_public_key(m), 44);
                memcpy(gw_pub, tmp, 32);
        }
        for (int i = 0; i < n_honest + n_att; i++) {
                int sp[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
                        die("socketpair", errno);
                if ((r = link_manager_adopt_fd(m, sp[1], i < n_honest ? "honest" : "attacker")) < 0)
                        die("adopt", r);
                if (i >= n_honest) {
                        att_fd[i - n_honest] = sp[0];
                        continue;
                }
                struct honest *h = &honest[i];
                struct mcugw_device_config dc = {
                        .port = { .ctx = h,
                                  .send = port_send,
                                  .now_ms = port_now,
                                  .timestamp = port_timestamp,
                                  .crypto = &mcugw_crypto_openssl },
                        .keys = { .static_priv = h->priv,
                                  .gateway_pub = gw_pub,
                                  .device_id = h->id },
                        .cb = { .user = h, .on_state = on_state },
                        .rx_buf = h->rx,
                        .rx_cap = sizeof h->rx,
                        .tx_buf = h->tx,
                        .tx_cap = sizeof h->tx,
                        .liveness_ms = MCUGW_DEVICE_LIVENESS_OFF,
                };
                h->fd = sp[0];
                if (mcugw_device_init(&h->dev, &dc) < 0)
                        die("device_init", EINVAL);
                uv_poll_init(&loop, &h->poll, h->fd);
                h->poll.data = h;
                uv_poll_start(&h->poll, UV_READABLE, on_honest_poll);
                h->recording = 1;
                mcugw_device_start(&h->dev);
        }
        uv_timer_init(&loop, &tick);
        uv_timer_start(&tick, on_tick, TICK_MS, TICK_MS);
        phase_start_ms = mono_ms();
        uv_run(&loop, UV_RUN_DEFAULT);

        for (int i = 0; i < n_honest; i++)
                recorded += honest[i].rec_len > 0 && !honest[i].recording;
        st = link_manager_status(m);
        quiet = completed[1] / seconds;
        flood = completed[2] / seconds;
        printf("{\"honest_per_s_quiet\": %.2f, \"honest_per_s_flood\": %.2f, \"ratio\": %.3f, "
               "\"budget_ratio\": 0.9, \"handshake_rate\": %u, \"honest_devices\": %d, "
               "\"attacker_links\": %d, \"junk_per_s\": %.1f, \"replays_per_s\": %.1f, "
               "\"recorded_hs1\": %d, \"junk_mac1\": %lld, \"cookie_sent\": %lld, "
               "\"hs_cookie\": %lld, \"replay_ts\": %lld, \"hs_throttled\": %lld, "
               "\"seconds_per_phase\": %.1f}\n",
               quiet, flood, quiet > 0 ? flood / quiet : 0.0, rate, n_honest, n_att,
               junk_sent / seconds, replays_sent / seconds, recorded,
               (long long)counter(st, "junk_mac1"), (long long)counter(st, "cookie_sent"),
               (long long)counter(st, "hs_cookie"), (long long)counter(st, "replay_ts"),
               (long long)counter(st, "hs_throttled"), seconds);
        json_decref(st);

        uv_timer_stop(&tick);
        uv_close((uv_handle_t *)&tick, NULL);
        for (int i = 0; i < n_honest; i++) {
                uv_poll_stop(&honest[i].poll);
                uv_close((uv_handle_t *)&honest[i].poll, NULL);
        }
        link_manager_stop(m);
        registry_free(reg);
        audit_free(audit);
        db_close(db);
        uv_run(&loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&loop);
        for (int i = 0; i < n_honest; i++)
                close(honest[i].fd);
        for (int i = 0; i < n_att; i++)
                close(att_fd[i]);
        conf_free(conf);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "bench-handshake-flood: could not remove %s\n", dir);
        return r == 0 && recorded == n_honest ? 0 : 1;
}
