/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scripts/bench handshake: MCU authentications per second on one core through the gateway's
 * real per-link code path: the link manager reading handshake message 1 from a socket, the
 * deframer, the Noise IK responder, the registry lookup by public key (a real registry in a real
 * SQLite file with --devices enrolled devices), message 2 written back. The device side (message
 * 1 for every handshake, each with a fresh ephemeral) is computed before the clock starts. As a
 * baseline in the same run: the bare responder (mcugw_responder_handle) on the same frames with
 * a trivial lookup. Prints one JSON object.
 *
 *   bench-handshake [--handshakes N] [--devices N] [--links N]
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
#include <uv.h>

#include "mcugw/proto.h"
#include "posix_openssl.h"

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "link/link.h"
#include "basic/log.h"
#include "devices/registry.h"

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this (single-threaded) process: the capacity of one core, whatever else the
 * machine is busy with. */
static double cpu_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct hs1 {
        uint8_t wire[MCUGW_WIRE_MAX(256)];
        size_t wire_len;
        uint8_t frame[256];
        size_t frame_len;
};

static int accept_all(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                      const uint8_t *attest, size_t attest_len)
{
        return 0;
}

static void die(const char *what, int r)
{
        fprintf(stderr, "bench-handshake: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

int main(int argc, char **argv)
{
        int n_hs = 10000, n_devs = 256, n_links = 32, c;
        static const struct option opts[] = {
                { "handshakes", required_argument, NULL, 'n' },
                { "devices", required_argument, NULL, 'd' },
                { "links", required_argument, NULL, 'l' },
                {},
        };
        char dir[] = "/tmp/mcugw-bench-hs-XXXXXX", path[256], cfgtext[512], cmd[300];
        struct conf_errors err = { 0 };
        struct conf *conf = NULL;
        struct db *db = NULL;
        struct audit *audit = NULL;
        struct registry *reg = NULL;
        struct link_manager *m = NULL;
        uint8_t(*dpriv)[32], gw_pub[32];
        char(*dids)[24];
        struct hs1 *hs;
        int(*pairs)[2];
        uv_loop_t loop;
        double t0, c0, t_link, c_link, t_resp, c_resp;
        long answered = 0;
        int r;

        while ((c = getopt_long(argc, argv, "n:d:l:", opts, NULL)) >= 0)
                switch (c) {
                case 'n': n_hs = atoi(optarg); break;
                case 'd': n_devs = atoi(optarg); break;
                case 'l': n_links = atoi(optarg); break;
                default: return 2;
                }
        if (n_hs < 1 || n_devs < 1 || n_links < 1 || n_links > 1000)
                return 2;
        log_set_level(LOG_WARNING);
        if (!mkdtemp(dir))
                die("mkdtemp", errno);
        uv_loop_init(&loop);

        /* A real registry in a real database. */
        snprintf(path, sizeof path, "%s/mcugw.db", dir);
        if ((r = db_open(&loop, path, DB_SYNC_NORMAL, 10000, &db)) < 0)
                die("db_open", r);
        if ((r = audit_open(db, &audit)) < 0)
                die("audit_open", r);
        if ((r = registry_open(db, audit, &reg)) < 0)
                die("registry_open", r);
        dpriv = calloc((size_t)n_devs, sizeof *dpriv);
        dids = calloc((size_t)n_devs, sizeof *dids);
        hs = calloc((size_t)n_hs, sizeof *hs);
        pairs = calloc((size_t)n_links, sizeof *pairs);
        if (!dpriv || !dids || !hs || !pairs)
                die("calloc", ENOMEM);
        for (int i = 0; i < n_devs; i++) {
                uint8_t pub[32];
                const char *e = NULL;
                mcugw_openssl_keygen(dpriv[i], pub);
                snprintf(dids[i], sizeof dids[i], "bench-%05d", i);
                if ((r = registry_add(reg, "bench", dids[i], pub, DEVICE_ACTIVE, "", "cli", &e)) <
                    0) {
                        fprintf(stderr, "registry_add: %s\n", e ? e : "?");
                        return 1;
                }
        }
        db_commit(db);

        /* The link manager with its own key; no listeners: socket pairs are adopted. */
        snprintf(cfgtext, sizeof cfgtext,
                 "[Paths]\nStateDirectory=%s\n[Link]\nHandshakeRate=1000000\n"
                 "HandshakeRatePerLink=1000000\nHandshakeTimeout=1h\n",
                 dir);
        if ((r = conf_load_string("bench", cfgtext, &conf, &err)) < 0)
                die("conf", r);
        if ((r = link_manager_new(&loop, &conf->link, conf->state_dir, audit, reg, &m)) < 0)
                die("link_manager_new", r);
        {
                uint8_t tmp[36];
                EVP_DecodeBlock(tmp, (const unsigned char *)link_manager_public_key(m), 44);
                memcpy(gw_pub, tmp, 32);
        }
        for (int i = 0; i < n_links; i++) {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]) < 0)
                        die("socketpair", errno);
                if ((r = link_manager_adopt_fd(m, pairs[i][1], "bench")) < 0)
                        die("adopt", r);
        }

        /* Device side, off the clock: one message 1 per handshake, fresh ephemeral each. */
        for (int i = 0; i < n_hs; i++) {
                struct mcugw_noise st;
                int d = i % n_devs, n, w;
                struct mcugw_initiator_params p = {
                        .static_priv = dpriv[d],
                        .gateway_pub = gw_pub,
                        .device_id = dids[d],
                        .device_id_len = strlen(dids[d]),
                        .max_rx_frame = 256,
                        .timestamp = (uint64_t)i + 1, /* each a new handshake, not a replay */
                };
                n = mcugw_initiator_write_hs1(&st, &mcugw_crypto_openssl, &p, hs[i].frame,
                                              sizeof hs[i].frame);
                if (n < 0)
                        die("write_hs1", EINVAL);
                hs[i].frame_len = (size_t)n;
                w = mcugw_frame_encode(hs[i].frame, (size_t)n, hs[i].wire, sizeof hs[i].wire);
                if (w < 0)
                        die("frame_encode", EINVAL);
                hs[i].wire_len = (size_t)w;
                mcugw_noise_wipe(&st);
        }

        /* Timed: the gateway's link path. One message 1 per link in flight, like real devices. */
        t0 = now_s();
        c0 = cpu_s();
        for (int i = 0; i < n_hs; i += n_links) {
                int batch = n_hs - i < n_links ? n_hs - i : n_links, got = 0;
                for (int j = 0; j < batch; j++)
                        if (write(pairs[j][0], hs[i + j].wire, hs[i + j].wire_len) !=
                            (ssize_t)hs[i + j].wire_len)
                                die("write", errno);
                while (got < batch) {
                        uv_run(&loop, UV_RUN_ONCE);
                        for (int j = 0; j < batch; j++) {
                                uint8_t buf[512];
                                ssize_t k = recv(pairs[j][0], buf, sizeof buf, MSG_DONTWAIT);
                                /* HS2 on the wire: 60-byte frame + CRC + COBS + delimiter. */
                                if (k > 0) {
                                        got++;
                                        answered++;
                                }
                        }
                }
        }
        t_link = now_s() - t0;
        c_link = cpu_s() - c0;

        /* Baseline: the bare responder, same frames, trivial lookup. */
        {
                struct mcugw_responder resp;
                struct mcugw_responder_hs resp_hs;
                struct mcugw_responder_config rc = {
                        .crypto = &mcugw_crypto_openssl,
                        .lookup = accept_all,
                        .static_pub = gw_pub,
                };
                /* The manager's private key stays inside it: the baseline gets its own key
                 * pair and message 1 frames made for it (off the clock). */
                uint8_t bpriv[32], bpub[32];
                mcugw_openssl_keygen(bpriv, bpub);
                rc.static_priv = bpriv;
                rc.static_pub = bpub;
                for (int i = 0; i < n_hs; i++) {
                        struct mcugw_noise st;
                        int d = i % n_devs;
                        struct mcugw_initiator_params p = {
                                .static_priv = dpriv[d],
                                .gateway_pub = bpub,
                                .device_id = dids[d],
                                .device_id_len = strlen(dids[d]),
                                .max_rx_frame = 256,
                                .timestamp = (uint64_t)i + 1,
                        };
                        int n = mcugw_initiator_write_hs1(&st, &mcugw_crypto_openssl, &p,
                                                          hs[i].frame, sizeof hs[i].frame);
                        hs[i].frame_len = n > 0 ? (size_t)n : 0;
                        mcugw_noise_wipe(&st);
                }
                mcugw_responder_init(&resp, &rc);
                mcugw_responder_set_hs(&resp, &resp_hs);
                t0 = now_s();
                c0 = cpu_s();
                for (int i = 0; i < n_hs; i++) {
                        struct mcugw_rx rx;
                        mcugw_responder_handle(&resp, hs[i].frame, hs[i].frame_len, &rx);
                }
                t_resp = now_s() - t0;
                c_resp = cpu_s() - c0;
                mcugw_responder_reset(&resp);
        }

        link_manager_stop(m);
        registry_free(reg);
        audit_free(audit);
        db_close(db);
        uv_run(&loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&loop);
        for (int i = 0; i < n_links; i++)
                close(pairs[i][0]);
        conf_free(conf);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "bench-handshake: could not remove %s\n", dir);
        free(dpriv);
        free(dids);
        free(hs);
        free(pairs);
        /* handshakes_per_s: per CPU second of the gateway's code path (one core's capacity);
         * the wall-clock figure depends on what else runs on the machine. */
        printf("{\"handshakes_per_s\": %.0f, \"wall_handshakes_per_s\": %.0f, "
               "\"handshakes\": %d, \"answered\": %ld, \"devices\": %d, \"links\": %d, "
               "\"cpu_s\": %.3f, \"elapsed_s\": %.3f, \"baseline_responder_only_per_s\": %.0f, "
               "\"baseline_responder_only_wall_per_s\": %.0f, "
               "\"link_path_vs_responder\": %.3f, \"budget\": 2000, \"loop_closed\": %s}\n",
               n_hs / c_link, n_hs / t_link, n_hs, answered, n_devs, n_links, c_link, t_link,
               n_hs / c_resp, n_hs / t_resp, c_resp / c_link, r == 0 ? "true" : "false");
        return answered == n_hs && r == 0 ? 0 : 1;
}
