/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC-32C + COBS framing. The encoder treats frame | CRC as one virtual input so no buffer
 * needs room for the trailer; the decoder is a byte-at-a-time state machine that never needs
 * more than the caller's buffer and resynchronises on every 0x00.
 */
#include <string.h>

#include "mcugw/proto.h"
#include "proto_internal.h"

/* Nibble table: 64 bytes of rodata instead of 1 KiB, fast enough for both sides. */
static const uint32_t crc32c_nibble[16] = {
        0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
        0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
        0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

uint32_t mcugw_crc32c(uint32_t crc, const void *data, size_t len)
{
        const uint8_t *p = data;

        crc = ~crc;
        while (len--) {
                crc ^= *p++;
                crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
                crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
        }
        return ~crc;
}

/* Virtual input: the frame followed by its 4 CRC bytes. */
struct venc {
        const uint8_t *frame;
        size_t len;
        uint8_t crc[MCUGW_CRC_LEN];
};

static uint8_t venc_at(const struct venc *v, size_t i)
{
        return i < v->len ? v->frame[i] : v->crc[i - v->len];
}

/* Walk COBS blocks; emit() gets the code byte, then the block's data range. */
typedef int (*block_fn)(void *ctx, const struct venc *v, uint8_t code, size_t start, size_t n);

static int cobs_walk(const uint8_t *frame, size_t len, block_fn emit, void *ctx)
{
        struct venc v = { frame, len, { 0 } };
        size_t total = len + MCUGW_CRC_LEN, i = 0, start, n;
        int r;

        put_le32(v.crc, mcugw_crc32c(0, frame, len));
        for (;;) {
                start = i;
                while (i < total && i - start < 254 && venc_at(&v, i) != 0)
                        i++;
                n = i - start;
                r = emit(ctx, &v, (uint8_t)(n + 1), start, n);
                if (r < 0)
                        return r;
                if (i >= total) {
                        /* Ended on data: a 254-byte block at the very end needs no extra 0x01. */
                        break;
                }
                if (n == 254)
                        continue; /* full block, no implied zero: nothing to skip */
                i++;              /* skip the zero the code byte implies */
                if (i == total) {
                        /* The input ended with a zero: one more empty block encodes it. */
                        r = emit(ctx, &v, 1, i, 0);
                        if (r < 0)
                                return r;
                        break;
                }
        }
        return emit(ctx, &v, 0, 0, 0); /* delimiter */
}

struct buf_out {
        uint8_t *out;
        size_t cap;
        size_t pos;
};

static int emit_buf(void *ctx, const struct venc *v, uint8_t code, size_t start, size_t n)
{
        struct buf_out *b = ctx;
        size_t i;

        if (b->pos + 1 + n > b->cap)
                return MCUGW_ENOSPC;
        b->out[b->pos++] = code;
        for (i = 0; i < n; i++)
                b->out[b->pos++] = venc_at(v, start + i);
        return 0;
}

int mcugw_frame_encode(const uint8_t *frame, size_t len, uint8_t *out, size_t cap)
{
        struct buf_out b = { out, cap, 0 };
        int r;

        if (len > 0x7fff0000u)
                return MCUGW_EINVAL;
        r = cobs_walk(frame, len, emit_buf, &b);
        return r < 0 ? r : (int)b.pos;
}

struct stream_out {
        mcugw_write_fn write;
        void *ctx;
        size_t total;
};

static int emit_stream(void *ctx, const struct venc *v, uint8_t code, size_t start, size_t n)
{
        struct stream_out *s = ctx;
        int r;

        r = s->write(s->ctx, &code, 1);
        if (r < 0)
                return r;
        if (n) {
                /* The frame part and the CRC tail each go out in one call. */
                size_t in_frame = start < v->len ? (v->len - start < n ? v->len - start : n) : 0;

                if (in_frame) {
                        r = s->write(s->ctx, v->frame + start, in_frame);
                        if (r < 0)
                                return r;
                }
                if (n > in_frame) {
                        r = s->write(s->ctx, v->crc + (start + in_frame - v->len), n - in_frame);
                        if (r < 0)
                                return r;
                }
        }
        s->total += 1 + n;
        return 0;
}

int mcugw_frame_encode_stream(const uint8_t *frame, size_t len, mcugw_write_fn write, void *ctx)
{
        struct stream_out s = { write, ctx, 0 };
        int r;

        if (len > 0x7fff0000u)
                return MCUGW_EINVAL;
        r = cobs_walk(frame, len, emit_stream, &s);
        return r < 0 ? r : (int)s.total;
}

int mcugw_deframer_init(struct mcugw_deframer *d, uint8_t *buf, size_t cap)
{
        if (cap < MCUGW_HDR_LEN + MCUGW_CRC_LEN)
                return MCUGW_EINVAL;
        memset(d, 0, sizeof(*d));
        d->buf = buf;
        d->cap = cap > 0xffffu ? 0xffffu : (uint16_t)cap;
        return 0;
}

static void deframer_restart(struct mcugw_deframer *d)
{
        d->len = 0;
        d->wire = 0;
        d->left = 0;
        d->code = 0;
        d->discard = 0;
}

static int deframer_put(struct mcugw_deframer *d, uint8_t b)
{
        if (d->len >= d->cap) {
                d->discard = 1;
                return -1;
        }
        d->buf[d->len++] = b;
        return 0;
}

/* A frame ended at a 0x00: classify it. */
static int deframer_finish(struct mcugw_deframer *d, uint8_t **frame, size_t *frame_len)
{
        struct mcugw_deframer_stats *st = &d->stats;
        uint32_t wire = d->wire + 1;
        int r = 0;

        if (d->discard) {
                st->oversize++;
                r = MCUGW_EOVERSIZE;
        } else if (d->left != 0) {
                st->cobs_errors++;
                r = MCUGW_ECOBS;
        } else if (d->len < MCUGW_HDR_LEN + MCUGW_CRC_LEN) {
                st->runts++;
                r = MCUGW_ERUNT;
        } else {
                size_t n = d->len - MCUGW_CRC_LEN;

                if (mcugw_crc32c(0, d->buf, n) != get_le32(d->buf + n)) {
                        st->crc_errors++;
                        r = MCUGW_ECRC;
                } else {
                        st->frames++;
                        *frame = d->buf;
                        *frame_len = n;
                        deframer_restart(d);
                        return 1;
                }
        }
        st->dropped_bytes += wire;
        deframer_restart(d);
        return r;
}

int mcugw_deframer_push(struct mcugw_deframer *d, const uint8_t *data, size_t len, size_t *consumed,
                        uint8_t **frame, size_t *frame_len)
{
        size_t i;

        for (i = 0; i < len; i++) {
                uint8_t b = data[i];

                if (b == 0) {
                        if (d->wire == 0)
                                continue; /* idle delimiter between frames */
                        *consumed = i + 1;
                        return deframer_finish(d, frame, frame_len);
                }
                if (d->wire < 0xffffffffu)
                        d->wire++;
                if (d->discard)
                        continue;
                if (d->left == 0) {
                        /* Code byte: the previous block implied a zero unless it was full. */
                        if (d->code && d->code != 0xff && deframer_put(d, 0) < 0)
                                continue;
                        d->code = b;
                        d->left = (uint8_t)(b - 1);
                } else {
                        if (deframer_put(d, b) < 0)
                                continue;
                        d->left--;
                }
        }
        *consumed = len;
        return 0;
}

int mcugw_frame_type(const uint8_t *frame, size_t len)
{
        if (!frame || len < MCUGW_HDR_LEN)
                return MCUGW_ERUNT;
        if (frame[0] != MCUGW_PROTO_VERSION)
                return MCUGW_EVERSION;
        if (frame[2] != 0 || frame[3] != 0 || frame[1] == 0)
                return MCUGW_EMALFORMED;
        return frame[1];
}
