/* SPDX-License-Identifier: Apache-2.0 */
/* Device side of the handshake: HS1 with the mcugw payload, HS2 into a session. */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

int mcugw_initiator_write_hs1(struct mcugw_noise *hs, const struct mcugw_crypto *c,
                              const struct mcugw_initiator_params *p, uint8_t *out, size_t cap)
{
        uint8_t mac1_key[32], *pl;
        size_t plen, n;
        int r;

        if (!hs || !c || !p || !out || !p->static_priv || !p->gateway_pub ||
            !mcugw_device_id_valid(p->device_id, p->device_id_len) ||
            p->attest_len > MCUGW_ATTEST_MAX || (!p->attest && p->attest_len) ||
            p->max_rx_frame < MCUGW_FRAME_MIN || p->max_rx_frame > MCUGW_FRAME_MAX)
                return MCUGW_EINVAL;
        plen = 15 + p->device_id_len + p->attest_len;
        if (cap < MCUGW_HDR_LEN + MCUGW_HS1_OVERHEAD + plen + MCUGW_HS1_MACS_LEN)
                return MCUGW_ENOSPC;
        /* Build the payload where its ciphertext will live and encrypt it in place. */
        pl = out + MCUGW_HDR_LEN + 80;
        pl[0] = MCUGW_PROTO_VERSION;
        pl[1] = 0;
        put_le16(pl + 2, p->max_rx_frame);
        put_le64(pl + 4, p->timestamp);
        pl[12] = (uint8_t)p->device_id_len;
        memcpy(pl + 13, p->device_id, p->device_id_len);
        put_le16(pl + 13 + p->device_id_len, (uint16_t)p->attest_len);
        if (p->attest_len)
                memcpy(pl + 15 + p->device_id_len, p->attest, p->attest_len);
        r = mcugw_noise_init(hs, c, (const uint8_t *)MCUGW_PROLOGUE, MCUGW_PROLOGUE_LEN,
                             p->gateway_pub);
        if (r == 0)
                r = mcugw_noise_write_msg1(hs, p->static_priv, p->static_pub, pl, plen,
                                           out + MCUGW_HDR_LEN,
                                           cap - MCUGW_HDR_LEN - MCUGW_HS1_MACS_LEN);
        if (r < 0)
                return r;
        out[0] = MCUGW_PROTO_VERSION;
        out[1] = MCUGW_FRAME_HS1;
        out[2] = 0;
        out[3] = 0;
        /* mac1 over header and Noise message; mac2 stays zero until a cookie comes. The mac1
         * key is derived from a public key: nothing to wipe. */
        n = MCUGW_HDR_LEN + (size_t)r;
        r = mcugw_flood_keys(c, p->gateway_pub, mac1_key, NULL);
        if (r == 0)
                r = mcugw_mac16(c, mac1_key, 32, out, n, out + n);
        if (r < 0) {
                mcugw_noise_wipe(hs);
                return r;
        }
        memset(out + n + MCUGW_MAC_LEN, 0, MCUGW_MAC_LEN);
        return (int)(n + MCUGW_HS1_MACS_LEN);
}

int mcugw_initiator_read_hs2(struct mcugw_noise *hs, const uint8_t static_priv[32], uint8_t *frame,
                             size_t len, struct mcugw_session *s)
{
        uint8_t k1[32], k2[32], *pl;
        uint16_t max_rx;
        uint32_t id;
        int r;

        r = mcugw_frame_type(frame, len);
        if (r < 0)
                return r;
        if (r != MCUGW_FRAME_HS2)
                return MCUGW_ETYPE;
        if (len < MCUGW_HDR_LEN + MCUGW_HS2_OVERHEAD + MCUGW_HS2_PAYLOAD_LEN)
                return MCUGW_ETRUNC;
        if (len != MCUGW_HDR_LEN + MCUGW_HS2_OVERHEAD + MCUGW_HS2_PAYLOAD_LEN)
                return MCUGW_EMALFORMED;
        pl = frame + MCUGW_HDR_LEN + 32;
        r = mcugw_noise_read_msg2(hs, static_priv, frame + MCUGW_HDR_LEN, len - MCUGW_HDR_LEN, pl,
                                  MCUGW_HS2_PAYLOAD_LEN);
        if (r < 0)
                return r;
        if (pl[0] != MCUGW_PROTO_VERSION) {
                mcugw_noise_wipe(hs);
                return MCUGW_EVERSION;
        }
        max_rx = get_le16(pl + 2);
        id = get_le32(pl + 4);
        if (pl[1] != 0 || max_rx < MCUGW_FRAME_MIN || max_rx > MCUGW_FRAME_MAX || id == 0) {
                mcugw_noise_wipe(hs);
                return MCUGW_EMALFORMED;
        }
        r = mcugw_noise_split(hs, k1, k2, NULL);
        if (r == 0) {
                /* hs may share storage with s: it is wiped now, fill s last. */
                mcugw_wipe(s, sizeof(*s));
                memcpy(s->tx_key, k1, 32);
                memcpy(s->rx_key, k2, 32);
                s->id = id;
                s->peer_max_frame = max_rx;
                s->active = 1;
        }
        mcugw_wipe(k1, sizeof(k1));
        mcugw_wipe(k2, sizeof(k2));
        return r;
}
