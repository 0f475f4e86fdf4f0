/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gateway side of the link: answers handshake message 1 (with duplicate detection), keeps the
 * confirmed session and one pending session, and opens/seals DATA frames.
 */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

/* Counted only where the caller lent a struct mcugw_responder_stats. */
#define STAT(r, field)                                                                             \
        do {                                                                                       \
                if ((r)->stats)                                                                    \
                        (r)->stats->field++;                                                       \
        } while (0)

/* Flood resistance, the gateway's half (proto_cookie.c has the device's). */

int mcugw_hs1_check_mac1(const struct mcugw_crypto *c, const uint8_t mac1_key[32],
                         const uint8_t *frame, size_t len)
{
        uint8_t m[MCUGW_MAC_LEN];
        int r;

        if (!c || !mac1_key || !frame)
                return MCUGW_EINVAL;
        if (!mcugw_hs1_long_enough(len))
                return MCUGW_ETRUNC;
        r = mcugw_mac16(c, mac1_key, 32, frame, MCUGW_MAC1_OFF(len), m);
        if (r < 0)
                return r;
        return mcugw_ct_equal(m, frame + MCUGW_MAC1_OFF(len), MCUGW_MAC_LEN) ? 0 : MCUGW_EAUTH;
}

int mcugw_hs1_check_mac2(const struct mcugw_crypto *c, const uint8_t *cookie, const uint8_t *frame,
                         size_t len)
{
        uint8_t m[MCUGW_MAC_LEN];
        int r;

        if (!c || !cookie || !frame)
                return MCUGW_EINVAL;
        if (!mcugw_hs1_long_enough(len))
                return MCUGW_ETRUNC;
        r = mcugw_mac16(c, cookie, MCUGW_COOKIE_LEN, frame, MCUGW_MAC2_OFF(len), m);
        if (r < 0)
                return r;
        return mcugw_ct_equal(m, frame + MCUGW_MAC2_OFF(len), MCUGW_MAC_LEN) ? 0 : MCUGW_EAUTH;
}

int mcugw_cookie_make(const struct mcugw_crypto *c, const uint8_t secret[32], const void *ident,
                      size_t ident_len, uint8_t cookie[MCUGW_COOKIE_LEN])
{
        if (!c || !secret || (!ident && ident_len) || !cookie)
                return MCUGW_EINVAL;
        return mcugw_mac16(c, secret, 32, ident, ident_len, cookie);
}

int mcugw_cookie_reply_write(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                             const uint8_t *hs1, size_t hs1_len,
                             const uint8_t cookie[MCUGW_COOKIE_LEN], uint8_t *out, size_t cap)
{
        static const uint8_t zero_nonce[12];
        uint8_t key[32], *nonce = out + MCUGW_HDR_LEN;
        int r;

        if (!c || !cookie_key || !hs1 || !cookie || !out)
                return MCUGW_EINVAL;
        if (!mcugw_hs1_long_enough(hs1_len))
                return MCUGW_ETRUNC;
        if (cap < MCUGW_COOKIE_REPLY_LEN)
                return MCUGW_ENOSPC;
        out[0] = MCUGW_PROTO_VERSION;
        out[1] = MCUGW_FRAME_COOKIE;
        out[2] = 0;
        out[3] = 0;
        r = c->random(c->ctx, nonce, MCUGW_COOKIE_NONCE_LEN);
        if (r == 0)
                r = mcugw_cookie_reply_key(c, cookie_key, nonce, key);
        if (r == 0)
                r = c->aead_seal(c->ctx, key, zero_nonce, hs1 + MCUGW_MAC1_OFF(hs1_len),
                                 MCUGW_MAC_LEN, cookie, MCUGW_COOKIE_LEN,
                                 nonce + MCUGW_COOKIE_NONCE_LEN);
        mcugw_wipe(key, sizeof(key));
        return r < 0 ? r : (int)MCUGW_COOKIE_REPLY_LEN;
}

int mcugw_responder_init(struct mcugw_responder *r, const struct mcugw_responder_config *cfg)
{
        if (!r || !cfg || !cfg->crypto || !cfg->static_priv || !cfg->static_pub || !cfg->lookup)
                return MCUGW_EINVAL;
        if (cfg->max_rx_frame &&
            (cfg->max_rx_frame < MCUGW_FRAME_MIN || cfg->max_rx_frame > MCUGW_FRAME_MAX))
                return MCUGW_EINVAL;
        memset(r, 0, sizeof(*r));
        r->cfg = cfg;
        r->user = cfg->user;
        return mcugw_flood_keys(cfg->crypto, cfg->static_pub, r->mac1_key, r->cookie_key);
}

int mcugw_responder_check_hs1(struct mcugw_responder *r, const uint8_t *frame, size_t len,
                              const uint8_t *cookie)
{
        int ret;

        if (!r || !frame)
                return MCUGW_EINVAL;
        ret = mcugw_hs1_check_mac1(r->cfg->crypto, r->mac1_key, frame, len);
        if (ret == MCUGW_EAUTH)
                STAT(r, hs_bad_mac1);
        else if (ret == MCUGW_ETRUNC)
                STAT(r, hs_malformed);
        if (ret < 0)
                return ret;
        return cookie && mcugw_hs1_check_mac2(r->cfg->crypto, cookie, frame, len) == 0;
}

int mcugw_responder_cookie_reply(struct mcugw_responder *r, const uint8_t *hs1, size_t hs1_len,
                                 const uint8_t cookie[MCUGW_COOKIE_LEN], uint8_t *out, size_t cap)
{
        if (!r)
                return MCUGW_EINVAL;
        return mcugw_cookie_reply_write(r->cfg->crypto, r->cookie_key, hs1, hs1_len, cookie, out,
                                        cap);
}

void mcugw_responder_reset(struct mcugw_responder *r)
{
        const struct mcugw_responder_config *cfg;
        struct mcugw_responder_stats *st;
        void *user;
        struct mcugw_responder_hs *hs;
        uint8_t k1[32], k2[32];

        if (!r)
                return;
        cfg = r->cfg;
        user = r->user;
        st = r->stats;
        hs = r->hs;
        memcpy(k1, r->mac1_key, 32);
        memcpy(k2, r->cookie_key, 32);
        mcugw_wipe(r, sizeof(*r));
        if (hs)
                mcugw_wipe(hs, sizeof(*hs));
        r->cfg = cfg;
        r->user = user;
        r->stats = st;
        r->hs = hs;
        memcpy(r->mac1_key, k1, 32);
        memcpy(r->cookie_key, k2, 32);
}

void mcugw_responder_set_user(struct mcugw_responder *r, void *user)
{
        if (r)
                r->user = user;
}

void mcugw_responder_set_hs(struct mcugw_responder *r, struct mcugw_responder_hs *hs)
{
        if (!r)
                return;
        if (r->hs)
                mcugw_wipe(r->hs, sizeof(*r->hs));
        if (hs)
                mcugw_wipe(hs, sizeof(*hs));
        r->hs = hs;
}

int mcugw_responder_pending(const struct mcugw_responder *r)
{
        return r && r->hs && r->hs->next.active;
}

const struct mcugw_peer *mcugw_responder_peer(const struct mcugw_responder *r)
{
        return r && r->cur.active ? &r->peer : NULL;
}

/* ---- Noise IK, the responder's messages (the initiator's are in proto_noise.c) ------------- */

int mcugw_noise_read_msg1(struct mcugw_noise *hs, const uint8_t s_priv[32], uint8_t *msg,
                          size_t len, uint8_t *payload, size_t cap)
{
        int r;

        if (!hs || !s_priv || !msg || !payload)
                return MCUGW_EINVAL;
        if (len < 96)
                return MCUGW_ETRUNC;
        if (cap < len - 96)
                return MCUGW_ENOSPC;
        memcpy(hs->re, msg, 32);
        r = mcugw_noise_mix_hash(hs, hs->re, 32); /* e */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, s_priv, hs->re); /* es */
        if (r == 0)
                r = mcugw_noise_decrypt_and_hash(hs, msg + 32, 48, hs->rs); /* s */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, s_priv, hs->rs); /* ss */
        if (r == 0)
                r = mcugw_noise_decrypt_and_hash(hs, msg + 80, len - 80, payload);
        if (r < 0) {
                mcugw_noise_wipe(hs);
                return r;
        }
        return (int)(len - 96);
}

int mcugw_noise_write_msg2(struct mcugw_noise *hs, const uint8_t *payload, size_t payload_len,
                           uint8_t *out, size_t cap)
{
        size_t total = 48 + payload_len;
        int r;

        if (!hs || !out || (!payload && payload_len))
                return MCUGW_EINVAL;
        if (cap < total)
                return MCUGW_ENOSPC;
        r = mcugw_noise_gen_ephemeral(hs, out); /* e */
        if (r == 0)
                r = mcugw_noise_mix_hash(hs, out, 32);
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, hs->e_priv, hs->re); /* ee */
        if (r == 0)
                r = mcugw_noise_dh_mix(hs, hs->e_priv, hs->rs); /* se */
        if (r == 0)
                r = mcugw_noise_encrypt_and_hash(hs, payload, payload_len, out + 32);
        if (r < 0) {
                mcugw_noise_wipe(hs);
                return r;
        }
        return (int)total;
}

/* Parse the HS1 payload into @p peer; returns attest pointer/len through the out params. */
static int parse_hs1_payload(const uint8_t *p, size_t len, struct mcugw_peer *peer,
                             uint64_t *timestamp, const uint8_t **attest, size_t *attest_len)
{
        size_t id_len, alen;

        if (len < MCUGW_HS1_PAYLOAD_MIN)
                return MCUGW_ETRUNC;
        if (p[0] != MCUGW_PROTO_VERSION)
                return MCUGW_EVERSION;
        if (p[1] != 0)
                return MCUGW_EMALFORMED;
        peer->max_rx_frame = get_le16(p + 2);
        if (peer->max_rx_frame < MCUGW_FRAME_MIN || peer->max_rx_frame > MCUGW_FRAME_MAX)
                return MCUGW_EMALFORMED;
        *timestamp = get_le64(p + 4);
        id_len = p[12];
        if (id_len < 1 || id_len > MCUGW_DEVICE_ID_MAX || len < 15 + id_len)
                return MCUGW_EMALFORMED;
        if (!mcugw_device_id_valid((const char *)p + 13, id_len))
                return MCUGW_EMALFORMED;
        alen = get_le16(p + 13 + id_len);
        if (alen > MCUGW_ATTEST_MAX || len != 15 + id_len + alen)
                return MCUGW_EMALFORMED;
        memcpy(peer->device_id, p + 13, id_len);
        peer->device_id[id_len] = '\0';
        peer->device_id_len = (uint8_t)id_len;
        *attest = alen ? p + 15 + id_len : NULL;
        *attest_len = alen;
        return 0;
}

static int new_session_id(struct mcugw_responder *r, uint32_t *id)
{
        uint8_t b[4];
        int i;

        for (i = 0; i < 8; i++) {
                if (r->cfg->crypto->random(r->cfg->crypto->ctx, b, 4) < 0)
                        return MCUGW_ECRYPTO;
                *id = get_le32(b);
                if (*id != 0 && !(r->cur.active && *id == r->cur.id))
                        return 0;
        }
        return MCUGW_ECRYPTO; /* a broken RNG, not bad luck */
}

static int handle_hs1(struct mcugw_responder *r, uint8_t *frame, size_t len, struct mcugw_rx *rx)
{
        const struct mcugw_crypto *c = r->cfg->crypto;
        struct mcugw_responder_hs *p = r->hs;
        struct mcugw_iov v = { frame, len };
        struct mcugw_noise hs;
        struct mcugw_peer peer;
        uint8_t hash[32], pl[MCUGW_HS2_PAYLOAD_LEN];
        const uint8_t *attest;
        size_t attest_len, nlen;
        uint64_t ts = 0;
        uint32_t sid;
        int n, ret;

        if (!p)
                return MCUGW_ENOSPC;
        if (len < MCUGW_HDR_LEN + MCUGW_HS1_OVERHEAD + MCUGW_HS1_PAYLOAD_MIN + MCUGW_HS1_MACS_LEN) {
                STAT(r, hs_malformed);
                return MCUGW_ETRUNC;
        }
        /* Callers normally checked mac1 already (to decide on budgets); it is one HMAC, and a
         * responder used alone must not do DH for junk either. */
        ret = mcugw_hs1_check_mac1(c, r->mac1_key, frame, len);
        if (ret < 0) {
                STAT(r, hs_bad_mac1);
                return ret;
        }
        /* The macs are not part of the handshake: a retransmission with mac2 set after a cookie
         * is still the same message 1. */
        nlen = len - MCUGW_HS1_MACS_LEN;
        v.len = nlen;
        if (c->sha256(c->ctx, &v, 1, hash) < 0)
                return MCUGW_ECRYPTO;
        if (p->hs2_valid && mcugw_ct_equal(hash, p->hs1_hash, 32)) {
                /* Retransmitted message 1: our message 2 was lost. Same answer, no crypto. */
                STAT(r, hs_duplicate);
                rx->kind = MCUGW_RX_REPLY;
                rx->data = p->hs2;
                rx->len = sizeof(p->hs2);
                return 0;
        }

        ret = mcugw_noise_init(&hs, c, (const uint8_t *)MCUGW_PROLOGUE, MCUGW_PROLOGUE_LEN,
                               r->cfg->static_pub);
        if (ret < 0)
                return ret;
        n = mcugw_noise_read_msg1(&hs, r->cfg->static_priv, frame + MCUGW_HDR_LEN,
                                  nlen - MCUGW_HDR_LEN, frame + MCUGW_HDR_LEN + 80,
                                  nlen - MCUGW_HDR_LEN - 80);
        if (n < 0) {
                if (n == MCUGW_EAUTH || n == MCUGW_EDH)
                        STAT(r, hs_auth_fail);
                else
                        STAT(r, hs_malformed);
                return n;
        }
        memset(&peer, 0, sizeof(peer));
        ret = parse_hs1_payload(frame + MCUGW_HDR_LEN + 80, (size_t)n, &peer, &ts, &attest,
                                &attest_len);
        if (ret < 0) {
                STAT(r, hs_malformed);
                goto out;
        }
        memcpy(peer.static_pub, hs.rs, 32);
        /* Before the lookup: a replay must not learn whether the device is admitted, and must
         * not touch the pending or the confirmed session. */
        if (r->cfg->fresh && r->cfg->fresh(r->user, peer.static_pub, ts, 0) < 0) {
                STAT(r, hs_stale);
                ret = MCUGW_ESTALE;
                goto out;
        }
        if (r->cfg->lookup(r->user, peer.static_pub, peer.device_id, peer.device_id_len, attest,
                           attest_len) < 0) {
                STAT(r, hs_rejected);
                ret = MCUGW_EREJECTED;
                goto out;
        }
        ret = new_session_id(r, &sid);
        if (ret < 0)
                goto out;
        pl[0] = MCUGW_PROTO_VERSION;
        pl[1] = 0;
        put_le16(pl + 2, r->cfg->max_rx_frame ? r->cfg->max_rx_frame : MCUGW_FRAME_MAX);
        put_le32(pl + 4, sid);
        p->hs2_valid = 0;
        n = mcugw_noise_write_msg2(&hs, pl, sizeof(pl), p->hs2 + MCUGW_HDR_LEN,
                                   sizeof(p->hs2) - MCUGW_HDR_LEN);
        if (n < 0) {
                ret = n;
                goto out;
        }
        p->hs2[0] = MCUGW_PROTO_VERSION;
        p->hs2[1] = MCUGW_FRAME_HS2;
        p->hs2[2] = 0;
        p->hs2[3] = 0;
        mcugw_session_wipe(&p->next);
        ret = mcugw_noise_split(&hs, p->next.rx_key, p->next.tx_key, NULL);
        if (ret < 0) {
                mcugw_session_wipe(&p->next);
                goto out;
        }
        p->next.id = sid;
        p->next.peer_max_frame = peer.max_rx_frame;
        p->next.active = 1;
        p->next_peer = peer;
        if (r->cfg->fresh)
                (void)r->cfg->fresh(r->user, peer.static_pub, ts, 1);
        memcpy(p->hs1_hash, hash, 32);
        p->hs2_valid = 1;
        STAT(r, hs_ok);
        rx->kind = MCUGW_RX_REPLY;
        rx->data = p->hs2;
        rx->len = sizeof(p->hs2);
        rx->new_handshake = 1;
out:
        mcugw_noise_wipe(&hs);
        return ret;
}

static void count_rx_error(struct mcugw_responder *r, int e)
{
        switch (e) {
        case MCUGW_EAUTH: STAT(r, rx_auth_fail); break;
        case MCUGW_EDUP: STAT(r, rx_dup); break;
        case MCUGW_ETOOOLD: STAT(r, rx_too_old); break;
        case MCUGW_ESESSION: STAT(r, rx_bad_session); break;
        case MCUGW_ETRUNC: STAT(r, rx_truncated); break;
        default: STAT(r, rx_malformed); break;
        }
}

static int handle_data(struct mcugw_responder *r, uint8_t *frame, size_t len, struct mcugw_rx *rx)
{
        uint32_t sid = mcugw_data_session_id(frame, len);
        struct mcugw_responder_hs *p = r->hs;
        uint8_t *msg;
        size_t mlen;
        int ret;

        if (len < MCUGW_DATA_OVERHEAD) {
                ret = MCUGW_ETRUNC;
        } else if (p && p->next.active && sid == p->next.id) {
                ret = mcugw_session_open(&p->next, r->cfg->crypto, frame, len, &msg, &mlen);
                if (ret == 0) {
                        /* Key confirmation: the initiator really holds the new keys. */
                        mcugw_session_wipe(&r->cur);
                        r->cur = p->next;
                        r->peer = p->next_peer;
                        mcugw_session_wipe(&p->next);
                        STAT(r, sessions);
                        rx->new_session = 1;
                }
        } else if (r->cur.active && sid == r->cur.id) {
                ret = mcugw_session_open(&r->cur, r->cfg->crypto, frame, len, &msg, &mlen);
        } else {
                ret = MCUGW_ESESSION;
        }
        if (ret < 0) {
                count_rx_error(r, ret);
                return ret;
        }
        STAT(r, rx_ok);
        rx->kind = MCUGW_RX_MESSAGE;
        rx->data = msg;
        rx->len = mlen;
        return 0;
}

int mcugw_responder_handle(struct mcugw_responder *r, uint8_t *frame, size_t len,
                           struct mcugw_rx *rx)
{
        int t;

        if (!r || !frame || !rx)
                return MCUGW_EINVAL;
        memset(rx, 0, sizeof(*rx));
        t = mcugw_frame_type(frame, len);
        if (t < 0) {
                count_rx_error(r, t);
                return t;
        }
        if (t == MCUGW_FRAME_HS1)
                return handle_hs1(r, frame, len, rx);
        if (t == MCUGW_FRAME_DATA)
                return handle_data(r, frame, len, rx);
        STAT(r, rx_malformed);
        return MCUGW_ETYPE;
}

int mcugw_responder_seal(struct mcugw_responder *r, const uint8_t *msg, size_t len, uint8_t *out,
                         size_t cap)
{
        int n;

        if (!r)
                return MCUGW_EINVAL;
        n = mcugw_session_seal(&r->cur, r->cfg->crypto, msg, len, out, cap);
        if (n >= 0)
                STAT(r, tx_ok);
        return n;
}
