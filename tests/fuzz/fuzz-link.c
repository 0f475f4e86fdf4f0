/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's per-link code path (src/link/link.c) under arbitrary input, through a real
 * socket, a real link manager and a real registry. The first byte selects the mode:
 *
 *   even: the rest goes to the link as raw wire bytes (framing, handshake, DATA parsing);
 *   odd:  the harness authenticates as an enrolled device first (a real Noise IK handshake),
 *         then sends the rest as messages, each `len u8 | plaintext` sealed into a DATA frame,
 *         so that the message handling behind the AEAD is reached.
 *
 * The manager, registry and database live for the whole run; each input gets a new connection,
 * which is closed at the end (the link is torn down as on a real hang-up).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
        int init;
        char dir[64];
        uv_loop_t loop;
        struct db *db;
        struct audit *audit;
        struct registry *reg;
        struct conf *conf;
        struct link_manager *m;
        uint8_t dev_priv[32], dev_pub[32], gw_pub[32];
} F;

static void fz_cleanup(void)
{
        char cmd[128];

        if (getenv("FUZZ_LINK_STATS")) {
                json_t *st = link_manager_status(F.m);
                char *txt = json_dumps(st, JSON_COMPACT);
                fprintf(stderr, "%s\n", txt ? txt : "");
                free(txt);
                json_decref(st);
        }
        link_manager_stop(F.m);
        registry_free(F.reg);
        audit_free(F.audit);
        db_close(F.db);
        uv_run(&F.loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&F.loop) != 0)
                abort(); /* a leaked handle */
        conf_free(F.conf);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", F.dir);
        if (system(cmd) != 0)
                fprintf(stderr, "fuzz-link: could not remove %s\n", F.dir);
}

static void fz_init(void)
{
        struct conf_errors err = { 0 };
        char path[128], text[256];
        const char *e = NULL;
        uint8_t tmp[36];

        log_set_level(LOG_CRIT);
        snprintf(F.dir, sizeof F.dir, "/tmp/mcugw-fuzz-link-XXXXXX");
        if (!mkdtemp(F.dir))
                abort();
        uv_loop_init(&F.loop);
        snprintf(path, sizeof path, "%s/mcugw.db", F.dir);
        if (db_open(&F.loop, path, DB_SYNC_OFF, 100000, &F.db) < 0 ||
            audit_open(F.db, &F.audit) < 0 || registry_open(F.db, F.audit, &F.reg) < 0)
                abort();
        memset(F.dev_priv, 0x42, sizeof F.dev_priv);
        mcugw_crypto_openssl.x25519_public(NULL, F.dev_pub, F.dev_priv);
        if (registry_add(F.reg, "fuzz", "fuzz-0", F.dev_pub, DEVICE_ACTIVE, "", "cli", &e) < 0)
                abort();
        snprintf(text, sizeof text,
                 "[Paths]\nStateDirectory=%s\n[Link]\nHandshakeRate=1000000\n"
                 "HandshakeRatePerLink=1000000\n",
                 F.dir);
        if (conf_load_string("fuzz", text, &F.conf, &err) < 0 ||
            link_manager_new(&F.loop, &F.conf->link, F.conf->state_dir, F.audit, F.reg, &F.m) < 0)
                abort();
        EVP_DecodeBlock(tmp, (const unsigned char *)link_manager_public_key(F.m), 44);
        memcpy(F.gw_pub, tmp, 32);
        atexit(fz_cleanup);
        F.init = 1;
}

static void pump(int n)
{
        for (int i = 0; i < n; i++)
                uv_run(&F.loop, UV_RUN_NOWAIT);
}

/* Write everything, letting the gateway read when the socket buffer is full. */
static void put(int fd, const uint8_t *p, size_t n)
{
        while (n) {
                ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        uint8_t sink[4096];
                        if (errno != EAGAIN)
                                return;
                        pump(1);
                        while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
                                ;
                        continue;
                }
                p += k;
                n -= (size_t)k;
        }
}

static int put_frame(int fd, const uint8_t *frame, size_t len)
{
        uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
        int w = mcugw_frame_encode(frame, len, wire, sizeof wire);
        if (w < 0)
                return w;
        put(fd, wire, (size_t)w);
        return 0;
}

/* Authenticate as fuzz-0; returns 0 with an established session. */
static int handshake(int fd, struct mcugw_session *s)
{
        struct mcugw_initiator_params p = {
                .static_priv = F.dev_priv,
                .gateway_pub = F.gw_pub,
                .device_id = "fuzz-0",
                .device_id_len = 6,
                .max_rx_frame = MCUGW_FRAME_MAX,
        };
        uint8_t frame[MCUGW_FRAME_MAX], rxbuf[MCUGW_FRAME_MAX + 4], in[512], *f;
        struct mcugw_deframer df;
        struct mcugw_noise hs;
        size_t used, flen;
        ssize_t k;
        int n;

        n = mcugw_initiator_write_hs1(&hs, &mcugw_crypto_openssl, &p, frame, sizeof frame);
        if (n < 0 || put_frame(fd, frame, (size_t)n) < 0)
                return -1;
        pump(4);
        k = recv(fd, in, sizeof in, MSG_DONTWAIT);
        mcugw_deframer_init(&df, rxbuf, sizeof rxbuf);
        for (size_t off = 0; k > 0 && off < (size_t)k; off += used) {
                if (mcugw_deframer_push(&df, in + off, (size_t)k - off, &used, &f, &flen) == 1)
                        return mcugw_initiator_read_hs2(&hs, F.dev_priv, f, flen, s);
                if (!used)
                        break;
        }
        mcugw_noise_wipe(&hs);
        return -1;
}

static void send_msg(int fd, struct mcugw_session *s, const uint8_t *msg, size_t len)
{
        uint8_t frame[MCUGW_FRAME_MAX];
        int n;

        if (len > sizeof frame - MCUGW_DATA_OVERHEAD)
                return;
        memcpy(frame + MCUGW_DATA_HDR_LEN, msg, len);
        n = mcugw_session_seal(s, &mcugw_crypto_openssl, frame + MCUGW_DATA_HDR_LEN, len, frame,
                               sizeof frame);
        if (n > 0)
                put_frame(fd, frame, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        int sv[2];
        uint8_t sink[4096];

        if (!F.init)
                fz_init();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return 0;
        if (link_manager_adopt_fd(F.m, sv[1], "fuzz") < 0) {
                close(sv[0]);
                close(sv[1]);
                return 0;
        }
        if (size && (data[0] & 1)) {
                struct mcugw_session s;
                static const uint8_t ping[] = { MCUGW_MSG_PING, 0, 0, 0, 0 };
                if (handshake(sv[0], &s) == 0) {
                        send_msg(sv[0], &s, ping, sizeof ping); /* key confirmation */
                        for (size_t off = 1; off < size;) {
                                size_t len = data[off++];
                                if (len > size - off)
                                        len = size - off;
                                send_msg(sv[0], &s, data + off, len);
                                off += len;
                                pump(1);
                        }
                        mcugw_session_wipe(&s);
                }
        } else if (size > 1)
                put(sv[0], data + 1, size - 1);
        pump(4);
        while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
                ;
        close(sv[0]);
        pump(4);
        return 0;
}
