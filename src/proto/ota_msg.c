/* SPDX-License-Identifier: Apache-2.0 */
/* OTA message codec (docs/protocol.md section 12). Strict sizes both ways. */
#include <string.h>

#include "mcugw/ota.h"
#include "proto_internal.h"

static int text_ok(const char *s, size_t len)
{
        size_t i;

        for (i = 0; i < len; i++)
                if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] > 0x7e)
                        return 0;
        return 1;
}

/* The device only encodes these two: kept apart so that a firmware linked with --gc-sections
 * carries none of the gateway's encoders. */
int mcugw_ota_encode_reply(const struct mcugw_ota_msg *m, uint8_t *out, size_t cap)
{
        size_t n;

        if (!m || !out)
                return MCUGW_EINVAL;
        switch (m->type) {
        case MCUGW_MSG_OTA_CHUNK_ACK: {
                const struct mcugw_ota_ack *a = &m->u.ack;
                if (a->status > MCUGW_OTA_ACK_REFUSED)
                        return MCUGW_EINVAL;
                if (cap < MCUGW_OTA_ACK_LEN)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, a->transfer_id);
                put_le32(out + 5, a->offset);
                put_le32(out + 9, a->window);
                put_le16(out + 13, a->max_chunk);
                out[15] = a->status;
                return (int)MCUGW_OTA_ACK_LEN;
        }
        case MCUGW_MSG_OTA_STATUS: {
                const struct mcugw_ota_status *s = &m->u.status;
                if (s->state < MCUGW_OTA_ST_RECEIVING || s->state > MCUGW_OTA_ST_ABORTED ||
                    s->reason_len > MCUGW_OTA_REASON_MAX ||
                    (s->reason_len && (!s->reason || !text_ok(s->reason, s->reason_len))))
                        return MCUGW_EINVAL;
                n = 1 + 4 + 1 + 2 + 4 + 1 + s->reason_len;
                if (n > cap)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, s->transfer_id);
                out[5] = s->state;
                put_le16(out + 6, s->code);
                put_le32(out + 8, s->offset);
                out[12] = (uint8_t)s->reason_len;
                if (s->reason_len)
                        memcpy(out + 13, s->reason, s->reason_len);
                return (int)n;
        }
        default: return MCUGW_ETYPE;
        }
}

int mcugw_ota_encode(const struct mcugw_ota_msg *m, uint8_t *out, size_t cap)
{
        size_t n;

        if (!m || !out)
                return MCUGW_EINVAL;
        switch (m->type) {
        case MCUGW_MSG_OTA_OFFER: {
                const struct mcugw_ota_offer *o = &m->u.offer;
                if (!o->transfer_id || !o->size || (o->flags & ~MCUGW_OTA_F_MASK) ||
                    o->version_len > MCUGW_OTA_VERSION_MAX || !o->sig_len ||
                    o->sig_len > MCUGW_OTA_SIG_MAX)
                        return MCUGW_EINVAL;
                if (cap < MCUGW_OTA_OFFER_LEN)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, o->transfer_id);
                put_le32(out + 5, o->size);
                memcpy(out + 9, o->sha256, 32);
                out[41] = o->flags;
                out[42] = (uint8_t)o->version_len;
                out[43] = (uint8_t)o->sig_len;
                return (int)MCUGW_OTA_OFFER_LEN;
        }
        case MCUGW_MSG_OTA_OFFER_MORE: {
                const struct mcugw_ota_more *o = &m->u.more;
                if (!o->len || !o->data || o->offset + o->len > MCUGW_OTA_META_MAX)
                        return MCUGW_EINVAL;
                n = MCUGW_OTA_MORE_HDR + o->len;
                if (n > cap)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, o->transfer_id);
                out[5] = o->offset;
                memmove(out + 6, o->data, o->len);
                return (int)n;
        }
        case MCUGW_MSG_OTA_CHUNK: {
                const struct mcugw_ota_chunk *c = &m->u.chunk;
                if (!c->len || !c->data)
                        return MCUGW_EINVAL;
                n = MCUGW_OTA_CHUNK_HDR + c->len;
                if (n > cap)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, c->transfer_id);
                put_le32(out + 5, c->offset);
                memmove(out + 9, c->data, c->len);
                return (int)n;
        }
        case MCUGW_MSG_OTA_CHUNK_ACK:
        case MCUGW_MSG_OTA_STATUS: return mcugw_ota_encode_reply(m, out, cap);
        case MCUGW_MSG_OTA_ABORT:
                if (cap < 7)
                        return MCUGW_ENOSPC;
                out[0] = m->type;
                put_le32(out + 1, m->u.abort.transfer_id);
                put_le16(out + 5, m->u.abort.code);
                return 7;
        default: return MCUGW_ETYPE;
        }
}

const char *mcugw_ota_code_str(unsigned code)
{
        static const char *const names[] = {
                [MCUGW_OTA_E_NONE] = "no error",
                [MCUGW_OTA_E_TOO_BIG] = "image larger than the slot",
                [MCUGW_OTA_E_FLASH] = "flash write failed",
                [MCUGW_OTA_E_HASH] = "image hash mismatch",
                [MCUGW_OTA_E_SIGNATURE] = "bad image signature",
                [MCUGW_OTA_E_SELF_TEST] = "self-test failed",
                [MCUGW_OTA_E_ABORTED] = "aborted by the gateway",
                [MCUGW_OTA_E_BAD_OFFER] = "bad offer",
                [MCUGW_OTA_E_FLASH_BEGIN] = "flash begin failed",
                [MCUGW_OTA_E_FLASH_FINISH] = "flash finish failed",
                [MCUGW_OTA_E_SET_PENDING] = "cannot mark the image pending",
                [MCUGW_OTA_E_CONFIRM] = "cannot confirm the image",
                [MCUGW_OTA_E_NO_VERIFIER] = "no signature verifier",
        };

        return code < sizeof names / sizeof names[0] ? names[code] : "unknown code";
}

void mcugw_ota_wrap(struct mcugw_msg *msg, const uint8_t *enc, size_t len)
{
        msg->type = enc[0];
        msg->u.raw.body = enc + 1;
        msg->u.raw.len = len - 1;
}

/* What the device decodes (messages from the gateway), apart for the same reason. */
int mcugw_ota_decode_request(const struct mcugw_msg *msg, struct mcugw_ota_msg *out)
{
        const uint8_t *p;
        size_t len;
        struct mcugw_ota_msg d;

        if (!msg || !out)
                return MCUGW_EINVAL;
        p = msg->u.raw.body; /* after the type byte */
        len = msg->u.raw.len;
        memset(&d, 0, sizeof d);
        d.type = msg->type;
        switch (msg->type) {
        case MCUGW_MSG_OTA_OFFER:
                if (len != MCUGW_OTA_OFFER_LEN - 1)
                        return len < MCUGW_OTA_OFFER_LEN - 1 ? MCUGW_ETRUNC : MCUGW_EMALFORMED;
                d.u.offer.transfer_id = get_le32(p);
                d.u.offer.size = get_le32(p + 4);
                memcpy(d.u.offer.sha256, p + 8, 32);
                d.u.offer.flags = p[40];
                d.u.offer.version_len = p[41];
                d.u.offer.sig_len = p[42];
                if (!d.u.offer.transfer_id || !d.u.offer.size ||
                    (d.u.offer.flags & ~MCUGW_OTA_F_MASK) ||
                    d.u.offer.version_len > MCUGW_OTA_VERSION_MAX || !d.u.offer.sig_len ||
                    d.u.offer.sig_len > MCUGW_OTA_SIG_MAX)
                        return MCUGW_EMALFORMED;
                break;
        case MCUGW_MSG_OTA_OFFER_MORE:
                if (len < MCUGW_OTA_MORE_HDR - 1 + 1)
                        return MCUGW_ETRUNC;
                d.u.more.transfer_id = get_le32(p);
                d.u.more.offset = p[4];
                d.u.more.data = p + 5;
                d.u.more.len = len - 5;
                if (d.u.more.offset + d.u.more.len > MCUGW_OTA_META_MAX)
                        return MCUGW_EMALFORMED;
                break;
        case MCUGW_MSG_OTA_CHUNK:
                if (len < MCUGW_OTA_CHUNK_HDR - 1 + 1)
                        return MCUGW_ETRUNC;
                d.u.chunk.transfer_id = get_le32(p);
                d.u.chunk.offset = get_le32(p + 4);
                d.u.chunk.data = p + 8;
                d.u.chunk.len = len - 8;
                break;
        case MCUGW_MSG_OTA_ABORT:
                if (len != 6)
                        return len < 6 ? MCUGW_ETRUNC : MCUGW_EMALFORMED;
                d.u.abort.transfer_id = get_le32(p);
                d.u.abort.code = get_le16(p + 4);
                break;
        default: return MCUGW_ETYPE;
        }
        *out = d;
        return 0;
}

int mcugw_ota_decode(const struct mcugw_msg *msg, struct mcugw_ota_msg *out)
{
        const uint8_t *p;
        size_t len;
        struct mcugw_ota_msg d;

        if (!msg || !out)
                return MCUGW_EINVAL;
        p = msg->u.raw.body; /* after the type byte */
        len = msg->u.raw.len;
        memset(&d, 0, sizeof d);
        d.type = msg->type;
        switch (msg->type) {
        case MCUGW_MSG_OTA_OFFER:
        case MCUGW_MSG_OTA_OFFER_MORE:
        case MCUGW_MSG_OTA_CHUNK:
        case MCUGW_MSG_OTA_ABORT: return mcugw_ota_decode_request(msg, out);
        case MCUGW_MSG_OTA_CHUNK_ACK:
                if (len != MCUGW_OTA_ACK_LEN - 1)
                        return len < MCUGW_OTA_ACK_LEN - 1 ? MCUGW_ETRUNC : MCUGW_EMALFORMED;
                d.u.ack.transfer_id = get_le32(p);
                d.u.ack.offset = get_le32(p + 4);
                d.u.ack.window = get_le32(p + 8);
                d.u.ack.max_chunk = get_le16(p + 12);
                d.u.ack.status = p[14];
                if (d.u.ack.status > MCUGW_OTA_ACK_REFUSED)
                        return MCUGW_EMALFORMED;
                break;
        case MCUGW_MSG_OTA_STATUS:
                if (len < 12)
                        return MCUGW_ETRUNC;
                d.u.status.transfer_id = get_le32(p);
                d.u.status.state = p[4];
                d.u.status.code = get_le16(p + 5);
                d.u.status.offset = get_le32(p + 7);
                d.u.status.reason_len = p[11];
                d.u.status.reason = (const char *)(p + 12);
                if (d.u.status.reason_len > MCUGW_OTA_REASON_MAX ||
                    len != 12 + d.u.status.reason_len ||
                    d.u.status.state < MCUGW_OTA_ST_RECEIVING ||
                    d.u.status.state > MCUGW_OTA_ST_ABORTED ||
                    !text_ok(d.u.status.reason, d.u.status.reason_len))
                        return len < 12 + (size_t)p[11] ? MCUGW_ETRUNC : MCUGW_EMALFORMED;
                break;
        default: return MCUGW_ETYPE;
        }
        *out = d;
        return 0;
}
