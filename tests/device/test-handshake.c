/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libmcugw-device (initiator) against the responder, in memory over a simulated lossy byte
 * link: handshake, retransmission, duplicates, wrong keys, rejection, re-handshake, traffic,
 * liveness (NOSESSION from a gateway that lost the session, ACK/PONG timeouts with backoff).
 */
#include "test-util.h"

#include "mcugw/device.h"

struct link {
        uint8_t buf[8192];
        size_t len;
};

static struct mcugw_crypto crypto;
static uint8_t dev_priv[32], dev_pub[32], gw_priv[32], gw_pub[32], other_pub[32];
static uint32_t clock_ms;
static struct link to_gw, to_dev;

static struct mcugw_device dev;
static uint8_t dev_rx[MCUGW_DEVICE_RX_BUF(256)], dev_tx[MCUGW_DEVICE_TX_BUF(256)];

static struct mcugw_responder gw;
static struct mcugw_responder_hs gw_hs;
static struct mcugw_responder_stats gw_stats;
static struct mcugw_deframer gw_df;
static uint8_t gw_rxbuf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN];
static int gw_accept;
static int gw_last_error;
static int gw_messages;
static struct mcugw_msg gw_last_msg;
static int gw_nosession;  /* answer DATA for an unknown session with NOSESSION, as link.c does */
static int gw_mute_data;  /* answer handshakes only: the gateway is silent after that */
static int gw_down;       /* the gateway hears nothing */
static int gw_under_load; /* HS1 without this cookie in mac2 gets a COOKIE frame, as link.c */
static uint8_t gw_cookie[MCUGW_COOKIE_LEN];
static int gw_cookies_sent;
static uint64_t gw_last_ts; /* the replay check of link.c (fresh_cb), for the one device */
static int gw_ts_set;
static int x25519_calls;
static int x25519_public_calls;

static int dev_states[8], n_states;
static uint32_t acked_seq, command_id;
static int dev_errors;

/* port.frame_begin: "try later" while link_busy; checks each frame against its announced bound. */
static int link_busy, frames_begun;
static size_t frame_start, frame_bound;

static int port_frame_begin(void *ctx, size_t wire_max)
{
        struct link *l = ctx;

        if (link_busy)
                return MCUGW_EAGAIN;
        if (frames_begun && l->len >= frame_start) /* the last frame kept its bound */
                assert_true(l->len - frame_start <= frame_bound);
        frames_begun++;
        frame_start = l->len;
        frame_bound = wire_max;
        return 0;
}

static int port_send(void *ctx, const uint8_t *p, size_t n)
{
        struct link *l = ctx;

        assert_true(l->len + n <= sizeof(l->buf));
        memcpy(l->buf + l->len, p, n);
        l->len += n;
        return 0;
}

static uint32_t port_now(void *ctx)
{
        (void)ctx;
        return clock_ms;
}

static int counting_x25519(void *ctx, uint8_t shared[32], const uint8_t priv[32],
                           const uint8_t peer[32])
{
        x25519_calls++;
        return TEST_CRYPTO_BASE->x25519(ctx, shared, priv, peer);
}

static int counting_x25519_public(void *ctx, uint8_t pub[32], const uint8_t priv[32])
{
        x25519_public_calls++;
        return TEST_CRYPTO_BASE->x25519_public(ctx, pub, priv);
}

static int fresh(void *user, const uint8_t pub[32], uint64_t ts, int commit)
{
        (void)user;
        (void)pub;
        if (commit) {
                gw_last_ts = ts;
                gw_ts_set = 1;
                return 0;
        }
        return gw_ts_set && ts <= gw_last_ts ? MCUGW_ESTALE : 0;
}

static int lookup(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                  const uint8_t *att, size_t att_len)
{
        (void)user;
        (void)att;
        assert_int_equal(att_len, 0);
        if (!gw_accept || id_len != 8 || memcmp(id, "dev-0001", 8) != 0)
                return -1;
        return mcugw_ct_equal(pub, dev_pub, 32) ? 0 : -1;
}

static void on_state(void *u, int st)
{
        (void)u;
        if (n_states < 8)
                dev_states[n_states++] = st;
}

static void on_ack(void *u, uint16_t stream, uint32_t seq, uint8_t flags, uint8_t status)
{
        (void)u;
        (void)stream;
        (void)flags;
        assert_int_equal(status, MCUGW_ACK_OK);
        acked_seq = seq;
}

static void on_command(void *u, uint32_t id, const uint8_t *p, size_t n)
{
        (void)u;
        command_id = id;
        assert_int_equal(n, 6);
        assert_memory_equal(p, "reboot", 6);
        assert_int_equal(mcugw_device_send_command_result(&dev, id, 0, NULL, 0), 0);
}

/* The application applies "interval" and refuses the rest. */
static uint32_t config_version;
static void on_config(void *u, uint32_t version, const uint8_t *json, size_t n)
{
        (void)u;
        config_version = version;
        assert_int_equal(n, 25);
        assert_memory_equal(json, "{\"interval\":5,\"mode\":\"x\"}", 25);
        assert_int_equal(mcugw_device_send_config_result(&dev, version, 0,
                                                         (const uint8_t *)"{\"interval\":5}", 14),
                         0);
}

static void on_error(void *u, int code, const char *t, size_t n)
{
        (void)u;
        (void)t;
        (void)n;
        (void)code;
        dev_errors++;
}

static void dev_config(struct mcugw_device_config *c, const uint8_t *pinned)
{
        memset(c, 0, sizeof(*c));
        c->port.ctx = &to_gw;
        c->port.send = port_send;
        c->port.now_ms = port_now;
        c->port.crypto = &crypto;
        c->keys.static_priv = dev_priv;
        c->keys.gateway_pub = pinned;
        c->keys.device_id = "dev-0001";
        c->cb.on_state = on_state;
        c->cb.on_ack = on_ack;
        c->cb.on_command = on_command;
        c->cb.on_config = on_config;
        c->cb.on_error = on_error;
        c->rx_buf = dev_rx;
        c->rx_cap = sizeof(dev_rx);
        c->tx_buf = dev_tx;
        c->tx_cap = sizeof(dev_tx);
}

static int setup(void **state)
{
        static struct mcugw_responder_config rc; /* the responder keeps a pointer to it */
        struct mcugw_device_config c;

        (void)state;
        rng_reset();
        crypto = test_crypto();
        crypto.x25519 = counting_x25519;
        crypto.x25519_public = counting_x25519_public;
        x25519_calls = x25519_public_calls = 0;
        gw_under_load = gw_cookies_sent = gw_ts_set = 0;
        gw_last_ts = 0;
        memset(gw_cookie, 0x33, sizeof(gw_cookie));
        /* Fresh key pairs for every test; other_pub is a gateway key nobody holds. */
        test_keypair(&crypto, dev_priv, dev_pub);
        test_keypair(&crypto, gw_priv, gw_pub);
        {
                uint8_t tmp[32];

                test_keypair(&crypto, tmp, other_pub);
        }
        clock_ms = 1000;
        to_gw.len = to_dev.len = 0;
        n_states = 0;
        acked_seq = command_id = 0;
        dev_errors = 0;
        gw_accept = 1;
        gw_last_error = 0;
        gw_messages = 0;
        gw_nosession = gw_mute_data = gw_down = 0;

        rc.crypto = &crypto;
        rc.static_priv = gw_priv;
        rc.static_pub = gw_pub;
        rc.lookup = lookup;
        rc.fresh = fresh;
        rc.user = NULL;
        rc.max_rx_frame = 0;
        assert_int_equal(mcugw_responder_init(&gw, &rc), 0);
        mcugw_responder_set_hs(&gw, &gw_hs);
        memset(&gw_stats, 0, sizeof gw_stats);
        gw.stats = &gw_stats;
        assert_int_equal(mcugw_deframer_init(&gw_df, gw_rxbuf, sizeof(gw_rxbuf)), 0);
        dev_config(&c, gw_pub);
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        return 0;
}

/* Gateway: consume everything the device sent; answer handshakes and PINGs. */
static void gw_pump(void)
{
        const uint8_t *p = to_gw.buf;
        size_t n = to_gw.len;

        while (n) {
                struct mcugw_rx rx;
                uint8_t *f, out[1100], w[1200];
                size_t used, fl;
                int r = mcugw_deframer_push(&gw_df, p, n, &used, &f, &fl);

                p += used;
                n -= used;
                if (r != 1)
                        continue;
                if (gw_down)
                        continue;
                if (mcugw_frame_type(f, fl) == (int)MCUGW_FRAME_HS1) {
                        /* What link.c does before spending anything on message 1. */
                        r = mcugw_responder_check_hs1(&gw, f, fl, gw_cookie);
                        if (r < 0) {
                                gw_last_error = r;
                                continue;
                        }
                        if (gw_under_load && r != 1) {
                                int cl = mcugw_responder_cookie_reply(&gw, f, fl, gw_cookie, out,
                                                                      sizeof(out));
                                int wl;

                                assert_int_equal(cl, MCUGW_COOKIE_REPLY_LEN);
                                wl = mcugw_frame_encode(out, (size_t)cl, w, sizeof(w));
                                port_send(&to_dev, w, (size_t)wl);
                                gw_cookies_sent++;
                                continue;
                        }
                }
                r = mcugw_responder_handle(&gw, f, fl, &rx);
                if (r < 0) {
                        gw_last_error = r;
                        if (r == MCUGW_ESESSION && gw_nosession) {
                                uint8_t ns[MCUGW_NOSESSION_LEN] = { MCUGW_PROTO_VERSION,
                                                                    MCUGW_FRAME_NOSESSION, 0, 0 };
                                int wl;

                                memcpy(ns + MCUGW_HDR_LEN, f + MCUGW_HDR_LEN, 4);
                                wl = mcugw_frame_encode(ns, sizeof(ns), w, sizeof(w));
                                port_send(&to_dev, w, (size_t)wl);
                        }
                        continue;
                }
                if (rx.kind == MCUGW_RX_REPLY) {
                        int wl = mcugw_frame_encode(rx.data, rx.len, w, sizeof(w));

                        port_send(&to_dev, w, (size_t)wl);
                } else if (rx.kind == MCUGW_RX_MESSAGE) {
                        assert_int_equal(mcugw_msg_decode(rx.data, rx.len, &gw_last_msg), 0);
                        gw_messages++;
                        if (gw_mute_data)
                                continue;
                        if (gw_last_msg.type == MCUGW_MSG_PING) {
                                struct mcugw_msg pong;
                                int ml, fl2, wl;

                                pong.type = MCUGW_MSG_PONG;
                                pong.u.ping.token = gw_last_msg.u.ping.token;
                                ml = mcugw_msg_encode(&pong, out + 16, sizeof(out) - 16);
                                fl2 = mcugw_responder_seal(&gw, out + 16, (size_t)ml, out,
                                                           sizeof(out));
                                assert_true(fl2 > 0);
                                wl = mcugw_frame_encode(out, (size_t)fl2, w, sizeof(w));
                                port_send(&to_dev, w, (size_t)wl);
                        }
                        if (gw_last_msg.type == MCUGW_MSG_TELEMETRY &&
                            (gw_last_msg.u.telemetry.flags & MCUGW_TLM_ACK_REQUESTED)) {
                                struct mcugw_msg a;
                                int ml, fl2, wl;

                                a.type = MCUGW_MSG_ACK;
                                a.u.ack.stream = gw_last_msg.u.telemetry.stream;
                                a.u.ack.seq = gw_last_msg.u.telemetry.seq;
                                a.u.ack.flags = 0;
                                a.u.ack.status = MCUGW_ACK_OK;
                                ml = mcugw_msg_encode(&a, out + 16, sizeof(out) - 16);
                                fl2 = mcugw_responder_seal(&gw, out + 16, (size_t)ml, out,
                                                           sizeof(out));
                                assert_true(fl2 > 0);
                                wl = mcugw_frame_encode(out, (size_t)fl2, w, sizeof(w));
                                port_send(&to_dev, w, (size_t)wl);
                        }
                }
        }
        to_gw.len = 0;
}

static void dev_pump(void)
{
        size_t n = to_dev.len;

        to_dev.len = 0;
        assert_int_equal(mcugw_device_input(&dev, to_dev.buf, n), 0);
}

static void exchange(void)
{
        int i;

        for (i = 0; i < 4; i++) {
                gw_pump();
                dev_pump();
        }
}

static void gw_send(const struct mcugw_msg *m)
{
        uint8_t out[1100], w[1200];
        int ml, fl, wl;

        ml = mcugw_msg_encode(m, out + 16, sizeof(out) - 16);
        fl = mcugw_responder_seal(&gw, out + 16, (size_t)ml, out, sizeof(out));
        assert_true(fl > 0);
        wl = mcugw_frame_encode(out, (size_t)fl, w, sizeof(w));
        port_send(&to_dev, w, (size_t)wl);
}

static void connect_ok(void)
{
        assert_int_equal(mcugw_device_start(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_non_null(mcugw_responder_peer(&gw));
}

static void test_connect_and_traffic(void **state)
{
        struct mcugw_msg m;

        (void)state;
        connect_ok();
        assert_int_equal(gw_stats.hs_ok, 1);
        assert_int_equal(gw_stats.sessions, 1);
        assert_string_equal(mcugw_responder_peer(&gw)->device_id, "dev-0001");
        assert_memory_equal(mcugw_responder_peer(&gw)->static_pub, dev_pub, 32);
        assert_int_equal(mcugw_responder_peer(&gw)->max_rx_frame, 256);
        assert_int_equal(n_states, 2);
        assert_int_equal(dev_states[0], MCUGW_DEV_HANDSHAKE);
        assert_int_equal(dev_states[1], MCUGW_DEV_CONNECTED);
        /* The confirmation PING was the first message. */
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_PING);

        assert_int_equal(mcugw_device_send_telemetry(&dev, 3, 77, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"{\"t\":1}", 7),
                         0);
        exchange();
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_TELEMETRY);
        assert_int_equal(gw_last_msg.u.telemetry.seq, 77);
        assert_int_equal(acked_seq, 77);

        assert_int_equal(mcugw_device_send_status(&dev, 5, 60, MCUGW_RESET_POWER_ON, "1.0.0"), 0);
        exchange();
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_STATUS);
        assert_int_equal(gw_last_msg.u.status.boot_counter, 5);

        m.type = MCUGW_MSG_COMMAND;
        m.u.command.id = 1234;
        m.u.command.payload = (const uint8_t *)"reboot";
        m.u.command.len = 6;
        gw_send(&m);
        exchange();
        assert_int_equal(command_id, 1234);
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_COMMAND_RESULT);
        assert_int_equal(gw_last_msg.u.result.id, 1234);

        /* Configuration from the shadow: on_config, answered with what was applied. */
        m.type = MCUGW_MSG_CONFIG;
        m.u.command.id = 77;
        m.u.command.payload = (const uint8_t *)"{\"interval\":5,\"mode\":\"x\"}";
        m.u.command.len = 25;
        gw_send(&m);
        exchange();
        assert_int_equal(config_version, 77);
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_CONFIG_RESULT);
        assert_int_equal(gw_last_msg.u.result.id, 77);
        assert_int_equal(gw_last_msg.u.result.status, 0);
        assert_int_equal(gw_last_msg.u.result.len, 14);

        /* Gateway PING is answered by the SDK. */
        m.type = MCUGW_MSG_PING;
        m.u.ping.token = 9;
        gw_send(&m);
        exchange();
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_PONG);
        assert_int_equal(gw_last_msg.u.ping.token, 9);

        /* Payload limit follows the smaller of tx buffer and gateway limit. */
        assert_int_equal(mcugw_device_max_payload(&dev), 256 - 32 - 8);
        {
                static uint8_t big[300];

                assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 1, 0, big, 217),
                                 MCUGW_ENOSPC);
                assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 1, 0, big, 216), 0);
        }
        /* The gateway honours the device's receive limit (256 = 32 overhead + 224). */
        {
                static uint8_t msg[300], out[400];

                msg[0] = MCUGW_MSG_COMMAND;
                assert_int_equal(mcugw_responder_seal(&gw, msg, 225, out, sizeof(out)),
                                 MCUGW_ETOOBIG);
                assert_int_equal(mcugw_responder_seal(&gw, msg, 224, out, sizeof(out)), 256);
        }
        assert_int_equal(dev_errors, 0);
}

static void test_lost_msg1(void **state)
{
        uint8_t first[256];
        size_t first_len;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        first_len = to_gw.len;
        memcpy(first, to_gw.buf, first_len);
        to_gw.len = 0; /* lost */
        clock_ms += MCUGW_DEVICE_HS_TIMEOUT_MS - 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(to_gw.len, 0);
        clock_ms += 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(to_gw.len, first_len);
        assert_memory_equal(to_gw.buf, first, first_len); /* same bytes */
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(dev.stats.hs_sent, 2);
        assert_int_equal(gw_stats.hs_duplicate, 0);
}

static void test_lost_msg2(void **state)
{
        uint8_t hs2[128];
        size_t hs2_len;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        gw_pump();
        hs2_len = to_dev.len;
        memcpy(hs2, to_dev.buf, hs2_len);
        to_dev.len = 0; /* message 2 lost */
        clock_ms += MCUGW_DEVICE_HS_TIMEOUT_MS;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        gw_pump();
        assert_int_equal(gw_stats.hs_duplicate, 1);
        assert_int_equal(gw_stats.hs_ok, 1);
        assert_int_equal(to_dev.len, hs2_len);
        assert_memory_equal(to_dev.buf, hs2, hs2_len); /* cached answer */
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw_stats.sessions, 1);
        /* A late duplicate message 2 is ignored by the connected device. */
        port_send(&to_dev, hs2, hs2_len);
        dev_pump();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(dev_errors, 0);
}

static void test_backoff_and_fresh_ephemeral(void **state)
{
        uint8_t first[256];
        size_t first_len;
        uint32_t expect = MCUGW_DEVICE_HS_TIMEOUT_MS;
        unsigned i;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        first_len = to_gw.len;
        memcpy(first, to_gw.buf, first_len);
        to_gw.len = 0;
        for (i = 1; i < MCUGW_DEVICE_HS_ATTEMPTS; i++) {
                clock_ms += expect - 1;
                mcugw_device_tick(&dev);
                assert_int_equal(to_gw.len, 0);
                clock_ms += 1;
                mcugw_device_tick(&dev);
                assert_int_equal(to_gw.len, first_len);
                assert_memory_equal(to_gw.buf, first, first_len);
                to_gw.len = 0;
                expect = expect * 2 > MCUGW_DEVICE_HS_TIMEOUT_MAX_MS
                                 ? MCUGW_DEVICE_HS_TIMEOUT_MAX_MS
                                 : expect * 2;
        }
        clock_ms += expect;
        mcugw_device_tick(&dev);
        assert_int_equal(to_gw.len, first_len);
        assert_memory_not_equal(to_gw.buf, first, first_len); /* new ephemeral */
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
}

static void test_duplicate_msg1_while_connected(void **state)
{
        uint8_t first[256];
        size_t first_len;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        first_len = to_gw.len;
        memcpy(first, to_gw.buf, first_len);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        port_send(&to_gw, first, first_len); /* duplicated by the link */
        exchange();
        assert_int_equal(gw_stats.hs_duplicate, 1);
        assert_int_equal(gw_stats.hs_ok, 1);
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 5, 0, NULL, 0), 0);
        exchange();
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_TELEMETRY);
        assert_int_equal(gw_stats.sessions, 1);
}

static void test_wrong_gateway_key(void **state)
{
        struct mcugw_device_config c;

        (void)state;
        dev_config(&c, other_pub);
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        assert_int_equal(mcugw_device_start(&dev), 0);
        exchange();
        /* mac1 is keyed from the gateway's public key: dropped before any DH. */
        assert_int_equal(gw_last_error, MCUGW_EAUTH);
        assert_int_equal(gw_stats.hs_bad_mac1, 1);
        assert_int_equal(gw_stats.hs_auth_fail, 0);
        assert_int_equal(to_dev.len, 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_null(mcugw_responder_peer(&gw));
}

/* keys.static_pub saves the device one X25519 per message 1; a wrong one fails the handshake. */
static void test_cached_static_pub(void **state)
{
        struct mcugw_device_config c;
        int ops_computed, ops_cached;

        (void)state;
        x25519_calls = x25519_public_calls = 0;
        assert_int_equal(mcugw_device_start(&dev), 0);
        ops_computed = x25519_calls + x25519_public_calls;
        assert_int_equal(x25519_public_calls, 2); /* e and s */

        dev_config(&c, gw_pub);
        c.keys.static_pub = dev_pub;
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        to_gw.len = 0; /* the first message 1 is never delivered */
        x25519_calls = x25519_public_calls = 0;
        assert_int_equal(mcugw_device_start(&dev), 0);
        ops_cached = x25519_calls + x25519_public_calls;
        assert_int_equal(x25519_public_calls, 1); /* e only */
        assert_int_equal(ops_cached, ops_computed - 1);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_memory_equal(mcugw_responder_peer(&gw)->static_pub, dev_pub, 32);

        /* A cached key that is not the private key's: the gateway's ss differs, no session. */
        dev_config(&c, gw_pub);
        c.keys.static_pub = other_pub;
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        assert_int_equal(mcugw_device_start(&dev), 0);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(gw_last_error, MCUGW_EAUTH);
}

/* port.frame_begin answers "try later": nothing of the frame goes out, telemetry returns
 * MCUGW_EAGAIN, message 1 waits for the next tick without spending an attempt. */
static void test_frame_begin_try_later(void **state)
{
        struct mcugw_device_config c;

        (void)state;
        dev_config(&c, gw_pub);
        c.port.frame_begin = port_frame_begin;
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        link_busy = 1;
        frames_begun = 0;
        assert_int_equal(mcugw_device_start(&dev), 0);
        assert_int_equal(to_gw.len, 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(dev.stats.hs_sent, 0);
        clock_ms += 5;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(to_gw.len, 0);
        link_busy = 0;
        clock_ms += 5; /* long before the first retransmission timeout */
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(dev.stats.hs_sent, 1);
        assert_true(to_gw.len > 0 && to_gw.len <= frame_bound);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);

        link_busy = 1;
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 5, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"x", 1),
                         MCUGW_EAGAIN);
        assert_int_equal(to_gw.len, 0);
        link_busy = 0;
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 5, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"x", 1),
                         0);
        assert_true(to_gw.len - frame_start <= frame_bound);
        exchange();
        assert_int_equal(acked_seq, 5);
}

static void test_unknown_device(void **state)
{
        (void)state;
        gw_accept = 0;
        assert_int_equal(mcugw_device_start(&dev), 0);
        exchange();
        assert_int_equal(gw_last_error, MCUGW_EREJECTED);
        assert_int_equal(gw_stats.hs_rejected, 1);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        /* Enrolled later: the next retransmission gets through (no cached reject). */
        gw_accept = 1;
        clock_ms += MCUGW_DEVICE_HS_TIMEOUT_MS;
        mcugw_device_tick(&dev);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
}

static void test_forged_msg2_is_ignored(void **state)
{
        uint8_t hs2[128];
        size_t hs2_len;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        gw_pump();
        hs2_len = to_dev.len;
        memcpy(hs2, to_dev.buf, hs2_len);
        /* Flip a ciphertext bit and re-encode (a valid CRC), as an active attacker would. */
        {
                uint8_t f[64], w[128];
                int wl;

                memcpy(f, gw_hs.hs2, sizeof(gw_hs.hs2));
                f[40] ^= 1;
                wl = mcugw_frame_encode(f, sizeof(gw_hs.hs2), w, sizeof(w));
                to_dev.len = 0;
                port_send(&to_dev, w, (size_t)wl);
        }
        dev_pump();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(dev_errors, 1);
        /* The genuine message 2 still completes the same handshake. */
        port_send(&to_dev, hs2, hs2_len);
        dev_pump();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
}

static void test_rehandshake_and_replayed_msg1(void **state)
{
        uint8_t old_hs1[256];
        size_t old_len;
        uint32_t sid1;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        old_len = to_gw.len;
        memcpy(old_hs1, to_gw.buf, old_len);
        exchange();
        sid1 = gw.cur.id;

        /* Session lifetime expires: the device re-handshakes on its own. */
        clock_ms += MCUGW_DEVICE_REKEY_MS;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(mcugw_device_link_reason(&dev), MCUGW_LINK_REKEY);
        gw_pump();
        /* Pending only: the old session is still the current one. */
        assert_int_equal(gw.cur.id, sid1);
        assert_true(gw_hs.next.active);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw_stats.sessions, 2);
        assert_true(gw.cur.id != sid1);

        /* An attacker replays the first message 1: its timestamp is old, so it is refused
         * after the static key decrypted, answered with nothing, and the live session keeps
         * working. */
        port_send(&to_gw, old_hs1, old_len);
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_ESTALE);
        assert_int_equal(gw_stats.hs_stale, 1);
        assert_int_equal(gw_stats.hs_ok, 2);
        assert_int_equal(to_dev.len, 0);
        assert_false(gw_hs.next.active);
        assert_int_equal(mcugw_device_send_telemetry(&dev, 2, 8, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"x", 1),
                         0);
        exchange();
        assert_int_equal(acked_seq, 8);
        assert_int_equal(gw_stats.sessions, 2);
}

/* The handshake state is lent by the caller (link.c allocates it only while a handshake is in
 * flight): without it message 1 is refused before any crypto; taken back while a session is
 * pending, that session is forgotten and the confirmed one goes on. */
static void test_handshake_storage_lent(void **state)
{
        uint32_t sid1;

        (void)state;
        mcugw_responder_set_hs(&gw, NULL);
        assert_int_equal(mcugw_device_start(&dev), 0);
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_ENOSPC);
        assert_int_equal(to_dev.len, 0);
        assert_int_equal(gw_stats.hs_ok, 0);

        mcugw_responder_set_hs(&gw, &gw_hs);
        clock_ms += MCUGW_DEVICE_REKEY_MS; /* the device retries its message 1 */
        assert_int_equal(mcugw_device_tick(&dev), 0);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_false(mcugw_responder_pending(&gw));
        sid1 = gw.cur.id;

        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_APP), 0);
        gw_pump(); /* answered: pending */
        assert_true(mcugw_responder_pending(&gw));
        mcugw_responder_set_hs(&gw, NULL);
        assert_false(mcugw_responder_pending(&gw));
        assert_int_equal(gw.cur.id, sid1);
        assert_int_equal(gw_stats.sessions, 1);
}

/* A replay while a new session is pending (a serial line: one responder for everything on
 * it) must not displace the pending session: the device confirms the one it was answered. */
static void test_replay_does_not_displace_pending(void **state)
{
        uint8_t old_hs1[512];
        size_t old_len;
        uint32_t pending;

        (void)state;
        assert_int_equal(mcugw_device_start(&dev), 0);
        old_len = to_gw.len;
        memcpy(old_hs1, to_gw.buf, old_len);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);

        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_APP), 0);
        gw_pump(); /* answered: pending */
        assert_true(gw_hs.next.active);
        pending = gw_hs.next.id;
        port_send(&to_gw, old_hs1, old_len);
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_ESTALE);
        assert_int_equal(gw_hs.next.id, pending);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw.cur.id, pending);
        assert_int_equal(gw_stats.sessions, 2);
        /* Each new message 1 of the SDK carries a larger timestamp (boot counter 0 here). */
        assert_int_equal(gw_last_ts, 2);
}

/* HS1-shaped junk from someone who does not know the gateway's public key costs one HMAC:
 * dropped on mac1 with no Diffie-Hellman at all. */
static void test_junk_hs1_costs_no_dh(void **state)
{
        uint8_t junk[160], w[200];
        int i, wl;

        (void)state;
        for (i = 0; i < 40; i++) {
                assert_int_equal(TEST_CRYPTO_BASE->random(NULL, junk, sizeof(junk)), 0);
                junk[0] = MCUGW_PROTO_VERSION;
                junk[1] = MCUGW_FRAME_HS1;
                junk[2] = junk[3] = 0;
                wl = mcugw_frame_encode(junk, sizeof(junk), w, sizeof(w));
                port_send(&to_gw, w, (size_t)wl);
        }
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_EAUTH);
        assert_int_equal(gw_stats.hs_bad_mac1, 40);
        assert_int_equal(gw_stats.hs_auth_fail, 0);
        assert_int_equal(x25519_calls, 0);
        assert_int_equal(to_dev.len, 0);
        connect_ok();
}

/* Under load the gateway answers message 1 with a COOKIE frame; the device sends it again at
 * once with mac2, gets through, and keeps using the cookie for its next handshakes until it is
 * as old as the gateway's secret. A COOKIE frame for another HS1 is refused. */
static void test_cookie_under_load(void **state)
{
        uint8_t cookie_key[32], reply[MCUGW_COOKIE_REPLY_LEN], fake_hs1[160], w[200];
        int wl, calls;

        (void)state;
        gw_under_load = 1;
        assert_int_equal(mcugw_device_start(&dev), 0);
        calls = x25519_calls;
        gw_pump();
        assert_int_equal(gw_cookies_sent, 1);
        assert_int_equal(x25519_calls, calls); /* a cookie costs the gateway no DH */
        assert_int_equal(gw_stats.hs_ok, 0);
        calls = x25519_calls;
        dev_pump();
        assert_int_equal(dev.stats.cookies, 1);
        assert_int_equal(dev.stats.hs_sent, 2);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw_cookies_sent, 1);
        assert_true(x25519_calls > calls);

        /* The next handshake carries mac2 from the start. */
        clock_ms += 60000;
        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_APP), 0);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw_cookies_sent, 1);

        /* Two minutes after it came the device drops it, and a new one is needed. */
        clock_ms += MCUGW_COOKIE_SECRET_MS;
        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_APP), 0);
        exchange();
        assert_int_equal(gw_cookies_sent, 2);
        assert_int_equal(dev.stats.cookies, 2);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);

        /* A COOKIE frame answering some other HS1 (its mac1 is the AD) is refused, as is one
         * arriving when no handshake runs. */
        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_APP), 0);
        to_gw.len = 0;
        memset(fake_hs1, 0x5c, sizeof(fake_hs1));
        assert_int_equal(mcugw_flood_keys(&crypto, gw_pub, NULL, cookie_key), 0);
        assert_int_equal(mcugw_cookie_reply_write(&crypto, cookie_key, fake_hs1, sizeof(fake_hs1),
                                                  gw_cookie, reply, sizeof(reply)),
                         MCUGW_COOKIE_REPLY_LEN);
        wl = mcugw_frame_encode(reply, sizeof(reply), w, sizeof(w));
        port_send(&to_dev, w, (size_t)wl);
        dev_pump();
        assert_int_equal(dev.stats.cookies, 2);
        assert_int_equal(to_gw.len, 0);
        assert_true(dev_errors > 0);
}

static void test_replay_through_link(void **state)
{
        uint8_t frame[256];
        size_t len;

        (void)state;
        connect_ok();
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 1, 0, (const uint8_t *)"a", 1), 0);
        len = to_gw.len;
        memcpy(frame, to_gw.buf, len);
        gw_pump();
        port_send(&to_gw, frame, len);
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_EDUP);
        assert_int_equal(gw_stats.rx_dup, 1);
}

/* The gateway forgot the session (restart, rotate-session): its NOSESSION makes the device
 * handshake again at once, and the new session says why. */
static void test_nosession_rehandshake(void **state)
{
        (void)state;
        connect_ok();
        assert_int_equal(mcugw_device_link_reason(&dev), MCUGW_LINK_FIRST);
        mcugw_responder_reset(&gw);
        gw_nosession = 1;
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 5, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"a", 1),
                         0);
        gw_pump();
        assert_int_equal(gw_last_error, MCUGW_ESESSION);
        dev_pump();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(mcugw_device_link_reason(&dev), MCUGW_LINK_NOSESSION);
        assert_int_equal(dev.stats.nosession, 1);
        assert_int_equal(dev.stats.reconnects, 1);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(mcugw_device_send_status(&dev, 1, 2, MCUGW_RESET_POWER_ON, "1.0"), 0);
        exchange();
        assert_int_equal(gw_last_msg.type, MCUGW_MSG_STATUS);
        assert_int_equal(gw_last_msg.u.status.link_reason, MCUGW_LINK_NOSESSION);
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 6, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"b", 1),
                         0);
        exchange();
        assert_int_equal(acked_seq, 6);
        /* An application restart is its own reason. */
        assert_int_equal(mcugw_device_start(&dev), 0);
        assert_int_equal(mcugw_device_link_reason(&dev), MCUGW_LINK_APP);
        assert_int_equal(mcugw_device_reconnect(&dev, MCUGW_LINK_REASON_MAX + 1), MCUGW_EINVAL);
}

static void feed_nosession(uint32_t sid, size_t extra)
{
        uint8_t ns[MCUGW_NOSESSION_LEN + 4] = { MCUGW_PROTO_VERSION, MCUGW_FRAME_NOSESSION, 0, 0 };
        uint8_t w[64];
        int wl;

        ns[4] = (uint8_t)sid;
        ns[5] = (uint8_t)(sid >> 8);
        ns[6] = (uint8_t)(sid >> 16);
        ns[7] = (uint8_t)(sid >> 24);
        wl = mcugw_frame_encode(ns, MCUGW_NOSESSION_LEN + extra, w, sizeof(w));
        assert_true(wl > 0);
        assert_int_equal(mcugw_device_input(&dev, w, (size_t)wl), 0);
}

/* NOSESSION is unauthenticated: believed only for the current session, in the right shape,
 * while connected, and not at all when the application said so. */
static void test_nosession_forged_is_ignored(void **state)
{
        struct mcugw_device_config c;
        uint32_t sid;

        (void)state;
        feed_nosession(0, 0); /* idle */
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_IDLE);
        assert_int_equal(mcugw_device_start(&dev), 0);
        feed_nosession(0, 0); /* handshaking */
        assert_int_equal(dev.stats.hs_sent, 1);
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        sid = gw.cur.id;
        dev_errors = 0;
        feed_nosession(sid + 1, 0); /* another session */
        feed_nosession(sid, 1);     /* trailing byte */
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(dev.stats.nosession, 0);
        assert_int_equal(dev_errors, 2);

        dev_config(&c, gw_pub);
        c.ignore_nosession = 1;
        c.boot_counter = 1; /* a restarted device: its timestamps must grow past the old ones */
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        mcugw_responder_reset(&gw);
        connect_ok();
        feed_nosession(gw.cur.id, 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        /* The real one does work. */
        dev.cfg.ignore_nosession = 0;
        feed_nosession(gw.cur.id, 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
}

/* A gateway that says nothing: no ACK/PONG within the liveness timeout means a new handshake,
 * and the timeout doubles while the gateway stays silent, then comes back to the default. */
static void test_liveness_timeout_backoff(void **state)
{
        (void)state;
        connect_ok();
        assert_int_equal(dev.live_waiting, 0); /* the confirmation PING was answered */
        /* Fire-and-forget telemetry expects nothing. */
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 1, 0, (const uint8_t *)"a", 1), 0);
        clock_ms += 10 * MCUGW_DEVICE_LIVENESS_MS;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);

        gw_down = 1;
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 2, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"a", 1),
                         0);
        gw_pump();
        clock_ms += MCUGW_DEVICE_LIVENESS_MS - 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        clock_ms += 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(mcugw_device_link_reason(&dev), MCUGW_LINK_TIMEOUT);
        assert_int_equal(dev.stats.live_timeouts, 1);

        /* Handshakes go through but the gateway answers nothing else: twice the timeout. */
        gw_down = 0;
        gw_mute_data = 1;
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        clock_ms += 2 * MCUGW_DEVICE_LIVENESS_MS - 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        clock_ms += 1;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_HANDSHAKE);
        assert_int_equal(dev.stats.live_timeouts, 2);

        /* The gateway answers again: the timeout is back to the default. */
        gw_mute_data = 0;
        exchange();
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(dev.live_ms, MCUGW_DEVICE_LIVENESS_MS);
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 3, MCUGW_TLM_ACK_REQUESTED,
                                                     (const uint8_t *)"a", 1),
                         0);
        exchange();
        assert_int_equal(acked_seq, 3);
        assert_int_equal(dev.stats.reconnects, 2);
}

static void test_liveness_off(void **state)
{
        struct mcugw_device_config c;

        (void)state;
        dev_config(&c, gw_pub);
        c.liveness_ms = MCUGW_DEVICE_LIVENESS_OFF;
        assert_int_equal(mcugw_device_init(&dev, &c), 0);
        connect_ok();
        gw_down = 1;
        assert_int_equal(mcugw_device_ping(&dev, 7), 0);
        clock_ms += 3600u * 1000u;
        assert_int_equal(mcugw_device_tick(&dev), 0);
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
}

static void test_init_validation(void **state)
{
        struct mcugw_device_config c;
        struct mcugw_device d;

        (void)state;
        dev_config(&c, gw_pub);
        c.rx_cap = MCUGW_FRAME_MIN + 3;
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL);
        dev_config(&c, gw_pub);
        c.tx_cap = MCUGW_DEVICE_HS1_LEN(8) - 1;
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL);
        c.tx_cap = MCUGW_DEVICE_HS1_LEN(8);
        assert_int_equal(mcugw_device_init(&d, &c), 0);
        c.keys.device_id = "";
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL);
        c.keys.device_id = "has spc";
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL); /* [A-Za-z0-9._-] only */
        c.keys.device_id = "a/b";
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL);
        c.keys.device_id = "a+b";
        assert_int_equal(mcugw_device_init(&d, &c), MCUGW_EINVAL);
        assert_int_equal(mcugw_device_send_telemetry(&dev, 1, 1, 0, NULL, 0), MCUGW_ESTATE);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_connect_and_traffic, setup),
                cmocka_unit_test_setup(test_lost_msg1, setup),
                cmocka_unit_test_setup(test_lost_msg2, setup),
                cmocka_unit_test_setup(test_backoff_and_fresh_ephemeral, setup),
                cmocka_unit_test_setup(test_duplicate_msg1_while_connected, setup),
                cmocka_unit_test_setup(test_wrong_gateway_key, setup),
                cmocka_unit_test_setup(test_cached_static_pub, setup),
                cmocka_unit_test_setup(test_frame_begin_try_later, setup),
                cmocka_unit_test_setup(test_unknown_device, setup),
                cmocka_unit_test_setup(test_forged_msg2_is_ignored, setup),
                cmocka_unit_test_setup(test_rehandshake_and_replayed_msg1, setup),
                cmocka_unit_test_setup(test_replay_through_link, setup),
                cmocka_unit_test_setup(test_replay_does_not_displace_pending, setup),
                cmocka_unit_test_setup(test_junk_hs1_costs_no_dh, setup),
                cmocka_unit_test_setup(test_cookie_under_load, setup),
                cmocka_unit_test_setup(test_nosession_rehandshake, setup),
                cmocka_unit_test_setup(test_nosession_forged_is_ignored, setup),
                cmocka_unit_test_setup(test_liveness_timeout_backoff, setup),
                cmocka_unit_test_setup(test_liveness_off, setup),
                cmocka_unit_test_setup(test_init_validation, setup),
                cmocka_unit_test_setup(test_handshake_storage_lent, setup),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
