/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transport phase: DATA frames with explicit 64-bit counters (the link may lose or reorder
 * frames, so the nonce cannot be implicit) and a 64-entry sliding replay window.
 */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

static void data_nonce(uint8_t nonce[12], uint64_t ctr)
{
        memset(nonce, 0, 4);
        put_le64(nonce + 4, ctr);
}

int mcugw_session_seal(struct mcugw_session *s, const struct mcugw_crypto *c, const uint8_t *msg,
                       size_t len, uint8_t *out, size_t cap)
{
        uint8_t nonce[12];
        size_t total;
        int r;

        if (!s->active)
                return MCUGW_ESESSION;
        if (len > MCUGW_MSG_MAX)
                return MCUGW_ETOOBIG;
        total = MCUGW_DATA_OVERHEAD + len;
        if (s->peer_max_frame && total > s->peer_max_frame)
                return MCUGW_ETOOBIG;
        if (total > cap)
                return MCUGW_ENOSPC;
        if (s->tx_counter >= MCUGW_REJECT_AFTER_MESSAGES)
                return MCUGW_EREKEY;
        if (len && msg != out + MCUGW_DATA_HDR_LEN)
                memmove(out + MCUGW_DATA_HDR_LEN, msg, len);
        out[0] = MCUGW_PROTO_VERSION;
        out[1] = MCUGW_FRAME_DATA;
        out[2] = 0;
        out[3] = 0;
        put_le32(out + 4, s->id);
        put_le64(out + 8, s->tx_counter);
        data_nonce(nonce, s->tx_counter);
        r = c->aead_seal(c->ctx, s->tx_key, nonce, out, MCUGW_DATA_HDR_LEN,
                         out + MCUGW_DATA_HDR_LEN, len, out + MCUGW_DATA_HDR_LEN);
        if (r < 0)
                return MCUGW_ECRYPTO;
        s->tx_counter++;
        return (int)total;
}

/* A new session has rx_top = 0 and an empty bitmap: counter 0 is then "not seen" and every
 * larger one is ahead, so the first frame needs no case of its own. */
static int window_check(const struct mcugw_session *s, uint64_t ctr)
{
        uint64_t diff;

        if (ctr > s->rx_top)
                return 0;
        diff = s->rx_top - ctr;
        if (diff >= MCUGW_REPLAY_WINDOW)
                return MCUGW_ETOOOLD;
        if ((s->rx_bitmap >> diff) & 1u)
                return MCUGW_EDUP;
        return 0;
}

static void window_update(struct mcugw_session *s, uint64_t ctr)
{
        uint64_t shift;

        if (ctr > s->rx_top) {
                shift = ctr - s->rx_top;
                s->rx_bitmap = shift >= 64 ? 1 : (s->rx_bitmap << shift) | 1;
                s->rx_top = ctr;
        } else {
                s->rx_bitmap |= UINT64_C(1) << (s->rx_top - ctr);
        }
}

uint32_t mcugw_data_session_id(const uint8_t *frame, size_t len)
{
        return frame && len >= MCUGW_DATA_HDR_LEN ? get_le32(frame + 4) : 0;
}

int mcugw_session_open(struct mcugw_session *s, const struct mcugw_crypto *c, uint8_t *frame,
                       size_t len, uint8_t **msg, size_t *msg_len)
{
        uint8_t nonce[12];
        uint64_t ctr;
        int r, seen;

        if (len < MCUGW_DATA_OVERHEAD)
                return MCUGW_ETRUNC;
        r = mcugw_frame_type(frame, len);
        if (r < 0)
                return r;
        if (r != MCUGW_FRAME_DATA)
                return MCUGW_ETYPE;
        if (!s->active || get_le32(frame + 4) != s->id)
                return MCUGW_ESESSION;
        ctr = get_le64(frame + 8);
        if (ctr >= MCUGW_REJECT_AFTER_MESSAGES)
                return MCUGW_EREKEY;
        seen = window_check(s, ctr);
        if (seen == MCUGW_ETOOOLD)
                return seen;
        /* The tag is checked before a seen counter is reported, so that an exact copy (links
         * may duplicate frames: harmless, MCUGW_EDUP) is told apart from a forgery that reuses
         * a counter (MCUGW_EAUTH). It costs no more than any frame with a fresh counter. */
        data_nonce(nonce, ctr);
        r = c->aead_open(c->ctx, s->rx_key, nonce, frame, MCUGW_DATA_HDR_LEN,
                         frame + MCUGW_DATA_HDR_LEN, len - MCUGW_DATA_HDR_LEN,
                         frame + MCUGW_DATA_HDR_LEN);
        if (r < 0)
                return MCUGW_EAUTH;
        if (seen < 0)
                return seen;
        window_update(s, ctr);
        *msg = frame + MCUGW_DATA_HDR_LEN;
        *msg_len = len - MCUGW_DATA_OVERHEAD;
        return 0;
}

void mcugw_session_wipe(struct mcugw_session *s)
{
        if (s)
                mcugw_wipe(s, sizeof(*s));
}
