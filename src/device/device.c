/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libmcugw-device: initiator state machine on top of the protocol core.
 *
 *   IDLE --start--> HANDSHAKE --HS2 ok--> CONNECTED --rekey/start--> HANDSHAKE
 *                                          CONNECTED --NOSESSION/liveness timeout--> HANDSHAKE
 *
 * Liveness: a gateway that lost our session (restart, rotate-session, a pending session
 * displaced) either says so with NOSESSION (unauthenticated: only believed for our current
 * session id, and all it can cause is a handshake) or stays silent; then the first answer we
 * wait for (ACK, PONG) does not come within live_ms and we handshake again, backing off.
 *
 * Message 1 stays in tx_buf during HANDSHAKE so a retransmission sends the very same bytes
 * (the gateway answers a duplicate from its cache); only mac2 changes once a COOKIE frame says
 * the gateway is under load (docs/protocol.md, "Handshake flood resistance"). The handshake state
 * and the session share storage: nothing is sent while a handshake is running.
 */
#include <string.h>

#include "mcugw/device.h"
#include "proto_internal.h"

static uint32_t now(const struct mcugw_device *dev)
{
        return dev->cfg.port.now_ms(dev->cfg.port.ctx);
}

/* Wrap-safe "t is at or after deadline". */
static int reached(uint32_t t, uint32_t deadline)
{
        return (int32_t)(t - deadline) >= 0;
}

static void set_state(struct mcugw_device *dev, uint8_t st)
{
        if (dev->state == st)
                return;
        dev->state = st;
        if (dev->cfg.cb.on_state)
                dev->cfg.cb.on_state(dev->cfg.cb.user, st);
}

static void report(struct mcugw_device *dev, int code)
{
        if (dev->cfg.cb.on_error)
                dev->cfg.cb.on_error(dev->cfg.cb.user, code, NULL, 0);
}

int mcugw_device_init(struct mcugw_device *dev, const struct mcugw_device_config *cfg)
{
        size_t id_len;

        if (!dev || !cfg || !cfg->port.send || !cfg->port.now_ms || !cfg->port.crypto ||
            !cfg->keys.static_priv || !cfg->keys.gateway_pub || !cfg->keys.device_id ||
            !cfg->rx_buf || !cfg->tx_buf)
                return MCUGW_EINVAL;
        id_len = strlen(cfg->keys.device_id);
        if (!mcugw_device_id_valid(cfg->keys.device_id, id_len) ||
            cfg->rx_cap < MCUGW_DEVICE_RX_BUF(MCUGW_FRAME_MIN) ||
            cfg->tx_cap < MCUGW_DEVICE_HS1_LEN(id_len))
                return MCUGW_EINVAL;
        memset(dev, 0, sizeof(*dev));
        dev->cfg = *cfg;
        if (dev->cfg.rx_cap > MCUGW_DEVICE_RX_BUF(MCUGW_FRAME_MAX))
                dev->cfg.rx_cap = MCUGW_DEVICE_RX_BUF(MCUGW_FRAME_MAX);
        if (dev->cfg.tx_cap > MCUGW_FRAME_MAX)
                dev->cfg.tx_cap = MCUGW_FRAME_MAX;
        if (!dev->cfg.rekey_ms)
                dev->cfg.rekey_ms = MCUGW_DEVICE_REKEY_MS;
        if (!dev->cfg.liveness_ms)
                dev->cfg.liveness_ms = MCUGW_DEVICE_LIVENESS_MS;
        dev->live_ms = dev->cfg.liveness_ms;
        return mcugw_deframer_init(&dev->df, dev->cfg.rx_buf, dev->cfg.rx_cap);
}

int mcugw_device_state(const struct mcugw_device *dev)
{
        return dev ? dev->state : MCUGW_DEV_IDLE;
}

static int send_frame(struct mcugw_device *dev, const uint8_t *frame, size_t len)
{
        int r = 0;

        /* Whole frames or nothing: the port says up front whether the link has room. */
        if (dev->cfg.port.frame_begin)
                r = dev->cfg.port.frame_begin(dev->cfg.port.ctx, MCUGW_WIRE_MAX(len));
        if (r == 0)
                r = mcugw_frame_encode_stream(frame, len, dev->cfg.port.send, dev->cfg.port.ctx);
        return r < 0 ? r : 0;
}

/* Build a fresh message 1 (new ephemeral) into tx_buf. */
static int new_hs1(struct mcugw_device *dev)
{
        struct mcugw_initiator_params p;
        int n;

        p.static_priv = dev->cfg.keys.static_priv;
        p.static_pub = dev->cfg.keys.static_pub;
        p.gateway_pub = dev->cfg.keys.gateway_pub;
        p.device_id = dev->cfg.keys.device_id;
        p.device_id_len = strlen(dev->cfg.keys.device_id);
        p.max_rx_frame = (uint16_t)(dev->cfg.rx_cap - MCUGW_CRC_LEN);
        p.attest = dev->cfg.keys.attest;
        p.attest_len = dev->cfg.keys.attest ? dev->cfg.keys.attest_len : 0;
        /* Replay protection: every new message 1 carries a larger value than the last. */
        dev->hs_seq++;
        p.timestamp = dev->cfg.port.timestamp
                              ? dev->cfg.port.timestamp(dev->cfg.port.ctx)
                              : ((uint64_t)dev->cfg.boot_counter << 32) | dev->hs_seq;
        mcugw_session_wipe(&dev->u.s);
        n = mcugw_initiator_write_hs1(&dev->u.hs, dev->cfg.port.crypto, &p, dev->cfg.tx_buf,
                                      dev->cfg.tx_cap);
        if (n < 0)
                return n;
        dev->hs1_len = (uint16_t)n;
        dev->attempts = 0;
        dev->timeout_ms = MCUGW_DEVICE_HS_TIMEOUT_MS;
        return 0;
}

/* mac2 from a cookie younger than the gateway's secret, else zero. */
static int hs1_mac2(struct mcugw_device *dev)
{
        if (dev->cookie_valid && now(dev) - dev->cookie_ms >= MCUGW_COOKIE_SECRET_MS)
                dev->cookie_valid = 0;
        return mcugw_hs1_set_mac2(dev->cfg.port.crypto, dev->cookie_valid ? dev->cookie : NULL,
                                  dev->cfg.tx_buf, dev->hs1_len);
}

static int send_hs1(struct mcugw_device *dev)
{
        int r = hs1_mac2(dev);

        if (r == 0)
                r = send_frame(dev, dev->cfg.tx_buf, dev->hs1_len);
        if (r == MCUGW_EAGAIN) {
                /* Link busy: no attempt spent, the next tick tries again. */
                dev->deadline_ms = now(dev);
                return 0;
        }
        /* Sent, or failed on the way out: either way the next try waits and backs off. */
        dev->attempts++;
        dev->stats.hs_sent++;
        dev->deadline_ms = now(dev) + dev->timeout_ms;
        if (dev->timeout_ms < MCUGW_DEVICE_HS_TIMEOUT_MAX_MS)
                dev->timeout_ms *= 2;
        return r;
}

int mcugw_device_reconnect(struct mcugw_device *dev, uint8_t reason)
{
        int r;

        if (!dev || !dev->cfg.tx_buf || reason > MCUGW_LINK_REASON_MAX)
                return MCUGW_EINVAL;
        if (reason != MCUGW_LINK_FIRST)
                dev->stats.reconnects++;
        dev->link_reason = reason;
        dev->live_waiting = 0;
        r = new_hs1(dev);
        if (r < 0) {
                set_state(dev, MCUGW_DEV_IDLE);
                return r;
        }
        set_state(dev, MCUGW_DEV_HANDSHAKE);
        return send_hs1(dev);
}

int mcugw_device_start(struct mcugw_device *dev)
{
        if (!dev)
                return MCUGW_EINVAL;
        return mcugw_device_reconnect(dev, dev->state == MCUGW_DEV_IDLE && !dev->stats.hs_sent
                                                   ? MCUGW_LINK_FIRST
                                                   : MCUGW_LINK_APP);
}

int mcugw_device_link_reason(const struct mcugw_device *dev)
{
        return dev ? dev->link_reason : MCUGW_LINK_FIRST;
}

int mcugw_device_send(struct mcugw_device *dev, const struct mcugw_msg *m)
{
        uint8_t *tx;
        int n, r;

        if (!dev || !m)
                return MCUGW_EINVAL;
        if (dev->state != MCUGW_DEV_CONNECTED)
                return MCUGW_ESTATE;
        if (dev->cfg.tx_cap < MCUGW_DATA_OVERHEAD)
                return MCUGW_ENOSPC;
        tx = dev->cfg.tx_buf;
        n = mcugw_msg_encode(m, tx + MCUGW_DATA_HDR_LEN, dev->cfg.tx_cap - MCUGW_DATA_OVERHEAD);
        if (n < 0)
                return n;
        n = mcugw_session_seal(&dev->u.s, dev->cfg.port.crypto, tx + MCUGW_DATA_HDR_LEN, (size_t)n,
                               tx, dev->cfg.tx_cap);
        if (n < 0)
                return n;
        r = send_frame(dev, tx, (size_t)n);
        if (r == 0)
                dev->stats.tx_messages++;
        /* Something the gateway answers: start the liveness clock unless it already runs. */
        if (r == 0 && !dev->live_waiting && dev->cfg.liveness_ms != MCUGW_DEVICE_LIVENESS_OFF &&
            (m->type == MCUGW_MSG_PING || (m->type == MCUGW_MSG_TELEMETRY &&
                                           (m->u.telemetry.flags & MCUGW_TLM_ACK_REQUESTED)))) {
                dev->live_waiting = 1;
                dev->live_deadline_ms = now(dev) + dev->live_ms;
        }
        return r;
}

int mcugw_device_send_telemetry(struct mcugw_device *dev, uint16_t stream, uint32_t seq,
                                uint8_t flags, const uint8_t *payload, size_t len)
{
        struct mcugw_msg m;

        m.type = MCUGW_MSG_TELEMETRY;
        m.u.telemetry.stream = stream;
        m.u.telemetry.seq = seq;
        m.u.telemetry.flags = flags;
        m.u.telemetry.payload = payload;
        m.u.telemetry.len = len;
        return mcugw_device_send(dev, &m);
}

int mcugw_device_send_status(struct mcugw_device *dev, uint32_t boot_counter, uint32_t uptime_s,
                             uint8_t reset_cause, const char *fw_version)
{
        struct mcugw_msg m;

        m.type = MCUGW_MSG_STATUS;
        m.u.status.boot_counter = boot_counter;
        m.u.status.uptime_s = uptime_s;
        m.u.status.reset_cause = reset_cause;
        m.u.status.link_reason = dev->link_reason;
        m.u.status.fw_version = fw_version;
        m.u.status.fw_version_len = fw_version ? strlen(fw_version) : 0;
        return mcugw_device_send(dev, &m);
}

static int send_ping(struct mcugw_device *dev, uint8_t type, uint32_t token)
{
        struct mcugw_msg m;

        m.type = type;
        m.u.ping.token = token;
        return mcugw_device_send(dev, &m);
}

int mcugw_device_ping(struct mcugw_device *dev, uint32_t token)
{
        return send_ping(dev, MCUGW_MSG_PING, token);
}

int mcugw_device_send_command_result(struct mcugw_device *dev, uint32_t id, int16_t status,
                                     const uint8_t *payload, size_t len)
{
        struct mcugw_msg m;

        m.type = MCUGW_MSG_COMMAND_RESULT;
        m.u.result.id = id;
        m.u.result.status = status;
        m.u.result.payload = payload;
        m.u.result.len = len;
        return mcugw_device_send(dev, &m);
}

int mcugw_device_send_config_result(struct mcugw_device *dev, uint32_t version, int16_t status,
                                    const uint8_t *json, size_t len)
{
        struct mcugw_msg m;

        if (len > MCUGW_CONFIG_MAX)
                return MCUGW_EINVAL;
        m.type = MCUGW_MSG_CONFIG_RESULT;
        m.u.result.id = version;
        m.u.result.status = status;
        m.u.result.payload = json;
        m.u.result.len = len;
        return mcugw_device_send(dev, &m);
}

size_t mcugw_device_max_payload(const struct mcugw_device *dev)
{
        size_t lim;

        if (!dev || dev->state != MCUGW_DEV_CONNECTED)
                return 0;
        lim = dev->cfg.tx_cap;
        if (dev->u.s.peer_max_frame < lim)
                lim = dev->u.s.peer_max_frame;
        return lim > MCUGW_DATA_OVERHEAD + 8 ? lim - MCUGW_DATA_OVERHEAD - 8 : 0;
}

static void dispatch(struct mcugw_device *dev, const struct mcugw_msg *m)
{
        const struct mcugw_device_callbacks *cb = &dev->cfg.cb;

        switch (m->type) {
        case MCUGW_MSG_PING: (void)send_ping(dev, MCUGW_MSG_PONG, m->u.ping.token); break;
        case MCUGW_MSG_COMMAND:
                if (cb->on_command)
                        cb->on_command(cb->user, m->u.command.id, m->u.command.payload,
                                       m->u.command.len);
                break;
        case MCUGW_MSG_CONFIG:
                if (cb->on_config)
                        cb->on_config(cb->user, m->u.command.id, m->u.command.payload,
                                      m->u.command.len);
                else if (cb->on_message)
                        cb->on_message(cb->user, m);
                break;
        case MCUGW_MSG_ACK:
                if (cb->on_ack)
                        cb->on_ack(cb->user, m->u.ack.stream, m->u.ack.seq, m->u.ack.flags,
                                   m->u.ack.status);
                break;
        case MCUGW_MSG_ERROR:
                if (cb->on_error)
                        cb->on_error(cb->user, m->u.error.code ? m->u.error.code : 1,
                                     m->u.error.text, m->u.error.text_len);
                break;
        default:
                if (cb->on_message)
                        cb->on_message(cb->user, m);
                break;
        }
}

static int handle_frame(struct mcugw_device *dev, uint8_t *frame, size_t len)
{
        struct mcugw_msg m;
        uint8_t *msg;
        size_t mlen;
        int t, r;

        t = mcugw_frame_type(frame, len);
        if (t < 0)
                return t;
        if (t == MCUGW_FRAME_HS2) {
                if (dev->state != MCUGW_DEV_HANDSHAKE)
                        return 0; /* late duplicate of message 2: harmless */
                r = mcugw_initiator_read_hs2(&dev->u.hs, dev->cfg.keys.static_priv, frame, len,
                                             &dev->u.s);
                if (r < 0) {
                        /* A forged/garbled message 2 is rolled back; a well-authenticated
                         * but unacceptable one consumed the handshake: start over. */
                        if (!dev->u.hs.has_k)
                                (void)mcugw_device_reconnect(dev, dev->link_reason);
                        return r;
                }
                dev->session_ms = now(dev);
                dev->stats.handshakes++;
                set_state(dev, MCUGW_DEV_CONNECTED);
                /* Key confirmation: the gateway promotes the session on our first frame. */
                return send_ping(dev, MCUGW_MSG_PING, 0);
        }
        if (t == MCUGW_FRAME_COOKIE) {
                /* The gateway is under load and wants proof that we receive on this link. Only
                 * for the message 1 in flight (its mac1 is the AD); sent once more at once with
                 * mac2, which a forger could cause too but only one frame per frame. */
                uint8_t key[32]; /* from the gateway's public key: nothing to wipe */

                if (dev->state != MCUGW_DEV_HANDSHAKE)
                        return MCUGW_ESTATE;
                r = mcugw_flood_keys(dev->cfg.port.crypto, dev->cfg.keys.gateway_pub, NULL, key);
                if (r == 0)
                        r = mcugw_cookie_reply_read(dev->cfg.port.crypto, key,
                                                    dev->cfg.tx_buf + dev->hs1_len -
                                                            MCUGW_HS1_MACS_LEN,
                                                    frame, len, dev->cookie);
                if (r < 0)
                        return r;
                dev->cookie_valid = 1;
                dev->cookie_ms = now(dev);
                dev->stats.cookies++;
                r = hs1_mac2(dev);
                if (r == 0)
                        r = send_frame(dev, dev->cfg.tx_buf, dev->hs1_len);
                if (r == 0)
                        dev->stats.hs_sent++;
                return r;
        }
        if (t == MCUGW_FRAME_NOSESSION) {
                /* Unauthenticated: believed only for our current session, and all it does is
                 * what a liveness timeout would do a little later. */
                if (len != MCUGW_NOSESSION_LEN)
                        return MCUGW_EMALFORMED;
                if (dev->state != MCUGW_DEV_CONNECTED || dev->cfg.ignore_nosession ||
                    get_le32(frame + MCUGW_HDR_LEN) != dev->u.s.id)
                        return MCUGW_ESESSION;
                dev->stats.nosession++;
                return mcugw_device_reconnect(dev, MCUGW_LINK_NOSESSION);
        }
        if (t != MCUGW_FRAME_DATA)
                return MCUGW_ETYPE;
        if (dev->state != MCUGW_DEV_CONNECTED)
                return MCUGW_ESESSION;
        r = mcugw_session_open(&dev->u.s, dev->cfg.port.crypto, frame, len, &msg, &mlen);
        if (r < 0)
                return r;
        /* The gateway holds this session: whatever we were waiting for, it is alive. */
        dev->live_waiting = 0;
        dev->live_ms = dev->cfg.liveness_ms;
        r = mcugw_msg_decode_down(msg, mlen, &m);
        if (r < 0)
                return r;
        dev->stats.rx_messages++;
        dispatch(dev, &m);
        return 0;
}

int mcugw_device_input(struct mcugw_device *dev, const uint8_t *data, size_t len)
{
        uint8_t *frame;
        size_t used, flen;
        int r;

        if (!dev || (!data && len))
                return MCUGW_EINVAL;
        while (len) {
                r = mcugw_deframer_push(&dev->df, data, len, &used, &frame, &flen);
                data += used;
                len -= used;
                if (r == 1)
                        r = handle_frame(dev, frame, flen);
                if (r < 0) {
                        dev->stats.rx_dropped++;
                        report(dev, r);
                }
        }
        return 0;
}

int mcugw_device_tick(struct mcugw_device *dev)
{
        uint8_t buf[32];
        uint32_t t;
        int n;

        if (!dev)
                return MCUGW_EINVAL;
        if (dev->cfg.port.recv) {
                while ((n = dev->cfg.port.recv(dev->cfg.port.ctx, buf, sizeof(buf))) > 0)
                        (void)mcugw_device_input(dev, buf, (size_t)n);
                if (n < 0)
                        return n;
        }
        t = now(dev);
        if (dev->state == MCUGW_DEV_HANDSHAKE && reached(t, dev->deadline_ms)) {
                if (dev->attempts >= MCUGW_DEVICE_HS_ATTEMPTS) {
                        /* Long silence: retire this ephemeral; keep the long backoff. */
                        uint32_t keep = dev->timeout_ms;
                        int r = new_hs1(dev);

                        if (r < 0)
                                return r;
                        dev->timeout_ms = keep;
                }
                return send_hs1(dev);
        }
        if (dev->state != MCUGW_DEV_CONNECTED)
                return 0;
        if (dev->live_waiting && reached(t, dev->live_deadline_ms)) {
                /* Silence: the gateway lost the session or the line is down. Back off so that
                 * a slow gateway is not answered with a storm of handshakes. */
                dev->stats.live_timeouts++;
                if (dev->live_ms < MCUGW_DEVICE_LIVENESS_MAX_MS)
                        dev->live_ms *= 2;
                return mcugw_device_reconnect(dev, MCUGW_LINK_TIMEOUT);
        }
        if (dev->u.s.tx_counter >= MCUGW_REKEY_AFTER_MESSAGES ||
            reached(t, dev->session_ms + dev->cfg.rekey_ms))
                return mcugw_device_reconnect(dev, MCUGW_LINK_REKEY);
        return 0;
}
