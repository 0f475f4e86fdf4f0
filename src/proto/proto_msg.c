/* SPDX-License-Identifier: Apache-2.0 */
/* Message codec: the plaintext inside DATA frames. Strict sizes both ways. */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

static int text_ok(const char *s, size_t len)
{
        size_t i;

        for (i = 0; i < len; i++)
                if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] > 0x7e)
                        return 0;
        return 1;
}

int mcugw_device_id_valid(const char *id, size_t len)
{
        size_t i;

        if (!id || len < 1 || len > MCUGW_DEVICE_ID_MAX)
                return 0;
        for (i = 0; i < len; i++) {
                uint8_t c = (uint8_t)id[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return 0;
        }
        return 1;
}

static int is_raw_type(uint8_t t)
{
        return (t >= MCUGW_MSG_OTA_FIRST && t <= MCUGW_MSG_OTA_LAST) || t >= MCUGW_MSG_VENDOR_FIRST;
}

int mcugw_msg_encode(const struct mcugw_msg *m, uint8_t *out, size_t cap)
{
        const void *tail = NULL;
        size_t fixed, tail_len = 0;
        uint8_t h[12];

        if (!m || !out)
                return MCUGW_EINVAL;
        h[0] = m->type;
        switch (m->type) {
        case MCUGW_MSG_TELEMETRY:
                if (m->u.telemetry.flags & ~MCUGW_TLM_FLAGS_MASK)
                        return MCUGW_EINVAL;
                put_le16(h + 1, m->u.telemetry.stream);
                put_le32(h + 3, m->u.telemetry.seq);
                h[7] = m->u.telemetry.flags;
                fixed = 8;
                tail = m->u.telemetry.payload;
                tail_len = m->u.telemetry.len;
                break;
        case MCUGW_MSG_ACK:
                if (m->u.ack.flags & ~MCUGW_ACK_FLAGS_MASK)
                        return MCUGW_EINVAL;
                put_le16(h + 1, m->u.ack.stream);
                put_le32(h + 3, m->u.ack.seq);
                h[7] = m->u.ack.flags;
                h[8] = m->u.ack.status;
                fixed = 9;
                break;
        case MCUGW_MSG_PING:
        case MCUGW_MSG_PONG:
                put_le32(h + 1, m->u.ping.token);
                fixed = 5;
                break;
        case MCUGW_MSG_STATUS:
                if (m->u.status.fw_version_len > MCUGW_FW_VERSION_MAX ||
                    (m->u.status.fw_version_len && !m->u.status.fw_version) ||
                    !text_ok(m->u.status.fw_version, m->u.status.fw_version_len))
                        return MCUGW_EINVAL;
                put_le32(h + 1, m->u.status.boot_counter);
                put_le32(h + 5, m->u.status.uptime_s);
                h[9] = m->u.status.reset_cause;
                h[10] = m->u.status.link_reason;
                h[11] = (uint8_t)m->u.status.fw_version_len;
                fixed = 12;
                tail = m->u.status.fw_version;
                tail_len = m->u.status.fw_version_len;
                break;
        case MCUGW_MSG_ERROR:
                if (m->u.error.text_len > MCUGW_ERROR_TEXT_MAX ||
                    (m->u.error.text_len && !m->u.error.text) ||
                    !text_ok(m->u.error.text, m->u.error.text_len))
                        return MCUGW_EINVAL;
                put_le16(h + 1, m->u.error.code);
                h[3] = (uint8_t)m->u.error.text_len;
                fixed = 4;
                tail = m->u.error.text;
                tail_len = m->u.error.text_len;
                break;
        case MCUGW_MSG_COMMAND:
        case MCUGW_MSG_CONFIG: /* same layout: u32 version, JSON */
                put_le32(h + 1, m->u.command.id);
                fixed = 5;
                tail = m->u.command.payload;
                tail_len = m->u.command.len;
                break;
        case MCUGW_MSG_COMMAND_RESULT:
        case MCUGW_MSG_CONFIG_RESULT: /* same layout: u32 version, i16 status, JSON */
                put_le32(h + 1, m->u.result.id);
                put_le16(h + 5, (uint16_t)m->u.result.status);
                fixed = 7;
                tail = m->u.result.payload;
                tail_len = m->u.result.len;
                break;
        default:
                if (!is_raw_type(m->type))
                        return MCUGW_ETYPE;
                fixed = 1;
                tail = m->u.raw.body;
                tail_len = m->u.raw.len;
                break;
        }
        if (tail_len && !tail)
                return MCUGW_EINVAL;
        if (tail_len > MCUGW_MSG_MAX || fixed + tail_len > cap)
                return MCUGW_ENOSPC;
        memcpy(out, h, fixed);
        if (tail_len)
                memcpy(out + fixed, tail, tail_len);
        return (int)(fixed + tail_len);
}

/* What a device decodes: the types a gateway sends (docs/protocol.md section 7, "dir"). Apart
 * from the rest so that a firmware linked with --gc-sections carries no decoder of what only
 * devices send. */
int mcugw_msg_decode_down(const uint8_t *p, size_t len, struct mcugw_msg *m)
{
        struct mcugw_msg d;
        size_t n;

        if (!p || !m)
                return MCUGW_EINVAL;
        if (len < 1)
                return MCUGW_ETRUNC;
        memset(&d, 0, sizeof(d));
        d.type = p[0];
        switch (d.type) {
        case MCUGW_MSG_ACK:
                if (len < 9)
                        return MCUGW_ETRUNC;
                if (len != 9)
                        return MCUGW_EMALFORMED;
                d.u.ack.stream = get_le16(p + 1);
                d.u.ack.seq = get_le32(p + 3);
                d.u.ack.flags = p[7];
                d.u.ack.status = p[8];
                if (d.u.ack.flags & ~MCUGW_ACK_FLAGS_MASK)
                        return MCUGW_EMALFORMED;
                break;
        case MCUGW_MSG_PING:
        case MCUGW_MSG_PONG:
                if (len < 5)
                        return MCUGW_ETRUNC;
                if (len != 5)
                        return MCUGW_EMALFORMED;
                d.u.ping.token = get_le32(p + 1);
                break;
        case MCUGW_MSG_ERROR:
                if (len < 4)
                        return MCUGW_ETRUNC;
                n = p[3];
                if (n > MCUGW_ERROR_TEXT_MAX)
                        return MCUGW_EMALFORMED;
                if (len < 4 + n)
                        return MCUGW_ETRUNC;
                if (len != 4 + n || !text_ok((const char *)p + 4, n))
                        return MCUGW_EMALFORMED;
                d.u.error.code = get_le16(p + 1);
                d.u.error.text = (const char *)p + 4;
                d.u.error.text_len = n;
                break;
        case MCUGW_MSG_COMMAND:
        case MCUGW_MSG_CONFIG:
                if (len < 5)
                        return MCUGW_ETRUNC;
                d.u.command.id = get_le32(p + 1);
                d.u.command.payload = p + 5;
                d.u.command.len = len - 5;
                break;
        default: /* device -> gateway only: TELEMETRY, STATUS, COMMAND_RESULT, CONFIG_RESULT */
                if (!is_raw_type(d.type))
                        return MCUGW_ETYPE;
                d.u.raw.body = p + 1;
                d.u.raw.len = len - 1;
                break;
        }
        if (len > MCUGW_MSG_MAX)
                return MCUGW_EMALFORMED;
        *m = d;
        return 0;
}

int mcugw_msg_decode(const uint8_t *p, size_t len, struct mcugw_msg *m)
{
        struct mcugw_msg d;
        size_t n;

        if (!p || !m)
                return MCUGW_EINVAL;
        if (len < 1)
                return MCUGW_ETRUNC;
        memset(&d, 0, sizeof(d));
        d.type = p[0];
        switch (d.type) {
        case MCUGW_MSG_TELEMETRY:
                if (len < 8)
                        return MCUGW_ETRUNC;
                d.u.telemetry.stream = get_le16(p + 1);
                d.u.telemetry.seq = get_le32(p + 3);
                d.u.telemetry.flags = p[7];
                if (d.u.telemetry.flags & ~MCUGW_TLM_FLAGS_MASK)
                        return MCUGW_EMALFORMED;
                d.u.telemetry.payload = p + 8;
                d.u.telemetry.len = len - 8;
                break;
        case MCUGW_MSG_STATUS:
                if (len < 12)
                        return MCUGW_ETRUNC;
                n = p[11];
                if (n > MCUGW_FW_VERSION_MAX || p[10] > MCUGW_LINK_REASON_MAX)
                        return MCUGW_EMALFORMED;
                if (len < 12 + n)
                        return MCUGW_ETRUNC;
                if (len != 12 + n || !text_ok((const char *)p + 12, n))
                        return MCUGW_EMALFORMED;
                d.u.status.boot_counter = get_le32(p + 1);
                d.u.status.uptime_s = get_le32(p + 5);
                d.u.status.reset_cause = p[9];
                d.u.status.link_reason = p[10];
                d.u.status.fw_version = (const char *)p + 12;
                d.u.status.fw_version_len = n;
                break;
        case MCUGW_MSG_COMMAND_RESULT:
        case MCUGW_MSG_CONFIG_RESULT:
                if (len < 7)
                        return MCUGW_ETRUNC;
                d.u.result.id = get_le32(p + 1);
                d.u.result.status = (int16_t)get_le16(p + 5);
                d.u.result.payload = p + 7;
                d.u.result.len = len - 7;
                break;
        default: return mcugw_msg_decode_down(p, len, m);
        }
        if (len > MCUGW_MSG_MAX)
                return MCUGW_EMALFORMED;
        *m = d;
        return 0;
}
