/* SPDX-License-Identifier: Apache-2.0 */
/* CRC-32C, COBS framing, deframer resynchronisation and limits. */
#include <stdlib.h>

#include "test-util.h"

static void test_crc32c(void **state)
{
        (void)state;
        assert_int_equal(mcugw_crc32c(0, "123456789", 9), 0xe3069283u);
        /* Chaining equals one shot. */
        assert_int_equal(mcugw_crc32c(mcugw_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
        assert_int_equal(mcugw_crc32c(0, "", 0), 0);
}

/* Feed wire bytes in chunks of @p chunk and collect the frames. */
static int deframe_all(struct mcugw_deframer *d, const uint8_t *w, size_t n, size_t chunk,
                       uint8_t out[][1100], size_t *lens, int max, int *errors)
{
        int got = 0;

        while (n) {
                size_t c = n < chunk ? n : chunk;
                const uint8_t *p = w;

                w += c;
                n -= c;
                while (c) {
                        uint8_t *f;
                        size_t used, fl;
                        int r = mcugw_deframer_push(d, p, c, &used, &f, &fl);

                        assert_true(used > 0 && used <= c);
                        p += used;
                        c -= used;
                        if (r == 1) {
                                assert_true(got < max);
                                memcpy(out[got], f, fl);
                                lens[got++] = fl;
                        } else if (r < 0) {
                                (*errors)++;
                        }
                }
        }
        return got;
}

static void test_known_vector(void **state)
{
        /* frame 01 03 00 00 11 00 22 -> COBS of frame|crc then 0x00. */
        static const uint8_t frame[] = { 0x01, 0x03, 0x00, 0x00, 0x11, 0x00, 0x22 };
        uint8_t w[64], crc[4];
        uint32_t c = mcugw_crc32c(0, frame, sizeof(frame));
        int n;

        (void)state;
        crc[0] = (uint8_t)c;
        crc[1] = (uint8_t)(c >> 8);
        crc[2] = (uint8_t)(c >> 16);
        crc[3] = (uint8_t)(c >> 24);
        /* The vector below assumes the CRC has no zero byte (true for this input). */
        assert_non_null(memchr(crc, 0, 4) == NULL ? crc : NULL);
        n = mcugw_frame_encode(frame, sizeof(frame), w, sizeof(w));
        assert_int_equal(n, 13);
        /* 03 01 03 | 01 | 02 11 | 06 22 crc0..3 | 00 */
        {
                const uint8_t want[13] = { 0x03, 0x01,   0x03,   0x01,   0x02,   0x11, 0x06,
                                           0x22, crc[0], crc[1], crc[2], crc[3], 0x00 };

                assert_memory_equal(w, want, 13);
        }
}

static void test_roundtrip_sizes(void **state)
{
        static uint8_t frame[1024], wire[MCUGW_WIRE_MAX(1024)], buf[1028], out[4][1100];
        struct mcugw_deframer d;
        size_t lens[4], n;
        int errors = 0, w, i;

        (void)state;
        srand(1);
        for (n = 4; n <= 1024; n += (n < 600 ? 1 : 37)) {
                for (i = 0; i < (int)n; i++) {
                        int mode = (int)(n % 4);

                        /* mix: random with zeros, no zeros (long COBS blocks), all zeros */
                        frame[i] = mode == 0   ? (uint8_t)rand()
                                   : mode == 1 ? (uint8_t)(1 + rand() % 255)
                                   : mode == 2 ? 0
                                               : (uint8_t)(rand() % 3);
                }
                w = mcugw_frame_encode(frame, n, wire, sizeof(wire));
                assert_true(w > 0 && (size_t)w <= MCUGW_WIRE_MAX(n));
                assert_null(memchr(wire, 0, (size_t)w - 1));
                assert_int_equal(wire[w - 1], 0);
                mcugw_deframer_init(&d, buf, sizeof(buf));
                assert_int_equal(deframe_all(&d, wire, (size_t)w, n % 7 + 1, out, lens, 4, &errors),
                                 1);
                assert_int_equal(errors, 0);
                assert_int_equal(lens[0], n);
                assert_memory_equal(out[0], frame, n);
        }
}

/* docs/protocol.md 2: when frame || CRC ends with a full 254-byte block (code 0xFF), the encoder
 * sends no trailing 0x01 code; a receiver accepts the frame with or without it. */
static void test_cobs_final_full_block(void **state)
{
        static uint8_t frame[250], wire[MCUGW_WIRE_MAX(250) + 1], buf[300], out[4][1100];
        struct mcugw_deframer d;
        size_t lens[4];
        int errors = 0, w;

        (void)state;
        for (;;) {
                /* 250 non-zero bytes and a CRC without a zero byte: one 254-byte block. */
                for (size_t i = 0; i < sizeof frame; i++)
                        frame[i] = (uint8_t)(1 + rand() % 255);
                w = mcugw_frame_encode(frame, sizeof frame, wire, sizeof wire);
                if (w == 256)
                        break;
        }
        assert_int_equal(wire[0], 0xff);
        assert_int_equal(wire[255], 0); /* no 0x01 before the delimiter */
        wire[255] = 0x01;
        wire[256] = 0;
        mcugw_deframer_init(&d, buf, sizeof(buf));
        assert_int_equal(deframe_all(&d, wire, 257, 5, out, lens, 4, &errors), 1);
        assert_int_equal(errors, 0);
        assert_int_equal(lens[0], sizeof frame);
        assert_memory_equal(out[0], frame, sizeof frame);
}

struct sink {
        uint8_t buf[2048];
        size_t len;
};

static int sink_write(void *ctx, const uint8_t *p, size_t n)
{
        struct sink *s = ctx;

        assert_true(s->len + n <= sizeof(s->buf));
        memcpy(s->buf + s->len, p, n);
        s->len += n;
        return 0;
}

static void test_stream_equals_buffer(void **state)
{
        static uint8_t frame[1024], wire[MCUGW_WIRE_MAX(1024)];
        struct sink s;
        size_t n;
        int w, i;

        (void)state;
        for (n = 4; n <= 1024; n += 13) {
                for (i = 0; i < (int)n; i++)
                        frame[i] = (uint8_t)(i % 300 < 260 ? 1 + i % 255 : 0);
                w = mcugw_frame_encode(frame, n, wire, sizeof(wire));
                s.len = 0;
                assert_int_equal(mcugw_frame_encode_stream(frame, n, sink_write, &s), w);
                assert_int_equal(s.len, (size_t)w);
                assert_memory_equal(s.buf, wire, (size_t)w);
        }
}

static void test_resync_after_garbage(void **state)
{
        static const uint8_t f1[] = { 1, 3, 0, 0, 'a', 'b', 'c' };
        static const uint8_t f2[] = { 1, 3, 0, 0, 0, 0, 0, 'x' };
        uint8_t wire[256], buf[64], out[4][1100];
        struct mcugw_deframer d;
        size_t lens[4], n = 0;
        int errors = 0, w, i;

        (void)state;
        /* garbage (no zero), then frame 1, garbage with a zero, frame 2, a corrupted frame */
        for (i = 0; i < 20; i++)
                wire[n++] = (uint8_t)(0x41 + i);
        w = mcugw_frame_encode(f1, sizeof(f1), wire + n, sizeof(wire) - n);
        n += (size_t)w;
        memcpy(wire + n, "\x13\x37\x00\x00\x00", 5);
        n += 5;
        w = mcugw_frame_encode(f2, sizeof(f2), wire + n, sizeof(wire) - n);
        n += (size_t)w;
        w = mcugw_frame_encode(f2, sizeof(f2), wire + n, sizeof(wire) - n);
        wire[n + 3] ^= 0x40; /* bit flip inside the last frame */
        n += (size_t)w;

        mcugw_deframer_init(&d, buf, sizeof(buf));
        /* The garbage prefix merges with frame 1 (no delimiter in between): both are lost,
         * unless the sender prefixes a 0x00 — which is what the spec recommends. */
        assert_int_equal(deframe_all(&d, wire, n, 3, out, lens, 4, &errors), 1);
        assert_int_equal(lens[0], sizeof(f2));
        assert_memory_equal(out[0], f2, sizeof(f2));
        assert_int_equal(d.stats.frames, 1);
        assert_int_equal(errors, 3);
        assert_int_equal(d.stats.crc_errors + d.stats.cobs_errors + d.stats.runts, 3);

        /* With a leading delimiter, garbage costs nothing but itself. */
        n = 0;
        for (i = 0; i < 20; i++)
                wire[n++] = (uint8_t)(0x41 + i);
        wire[n++] = 0;
        w = mcugw_frame_encode(f1, sizeof(f1), wire + n, sizeof(wire) - n);
        n += (size_t)w;
        errors = 0;
        mcugw_deframer_init(&d, buf, sizeof(buf));
        assert_int_equal(deframe_all(&d, wire, n, 1, out, lens, 4, &errors), 1);
        assert_int_equal(errors, 1);
        assert_memory_equal(out[0], f1, sizeof(f1));
        assert_int_equal(d.stats.dropped_bytes, 21);
}

static void test_oversize_and_runt(void **state)
{
        static uint8_t frame[300], wire[400], buf[128], out[4][1100];
        static const uint8_t small[] = { 1, 3, 0, 0 };
        struct mcugw_deframer d;
        size_t lens[4], n;
        int errors = 0, w;

        (void)state;
        memset(frame, 0x55, sizeof(frame));
        frame[0] = 1;
        frame[1] = 3;
        frame[2] = frame[3] = 0;
        mcugw_deframer_init(&d, buf, sizeof(buf));
        w = mcugw_frame_encode(frame, 200, wire, sizeof(wire));
        n = (size_t)w;
        w = mcugw_frame_encode(small, sizeof(small), wire + n, sizeof(wire) - n);
        n += (size_t)w;
        assert_int_equal(deframe_all(&d, wire, n, 17, out, lens, 4, &errors), 1);
        assert_int_equal(d.stats.oversize, 1);
        assert_int_equal(lens[0], 4);
        /* Exactly at the limit: buffer 128 = frame 124 + CRC. */
        w = mcugw_frame_encode(frame, 124, wire, sizeof(wire));
        assert_int_equal(deframe_all(&d, wire, (size_t)w, 5, out, lens, 4, &errors), 1);
        assert_int_equal(lens[0], 124);
        w = mcugw_frame_encode(frame, 125, wire, sizeof(wire));
        assert_int_equal(deframe_all(&d, wire, (size_t)w, 5, out, lens, 4, &errors), 0);
        assert_int_equal(d.stats.oversize, 2);
        /* Runt: 3 bytes + CRC is shorter than header + CRC. */
        w = mcugw_frame_encode(small, 3, wire, sizeof(wire));
        assert_int_equal(deframe_all(&d, wire, (size_t)w, 5, out, lens, 4, &errors), 0);
        assert_int_equal(d.stats.runts, 1);
        /* Encoder refuses a too small output buffer. */
        assert_int_equal(mcugw_frame_encode(frame, 200, wire, 100), MCUGW_ENOSPC);
}

static void test_frame_type(void **state)
{
        uint8_t f[4] = { MCUGW_PROTO_VERSION, 3, 0, 0 };

        (void)state;
        assert_int_equal(mcugw_frame_type(f, 4), 3);
        assert_int_equal(mcugw_frame_type(f, 3), MCUGW_ERUNT);
        f[0] = MCUGW_PROTO_VERSION + 1;
        assert_int_equal(mcugw_frame_type(f, 4), MCUGW_EVERSION);
        f[0] = 1; /* v1 frames are refused by v2 peers */
        assert_int_equal(mcugw_frame_type(f, 4), MCUGW_EVERSION);
        f[0] = MCUGW_PROTO_VERSION;
        f[1] = MCUGW_FRAME_NOSESSION;
        assert_int_equal(mcugw_frame_type(f, 4), MCUGW_FRAME_NOSESSION);
        f[1] = 3;
        f[2] = 1;
        assert_int_equal(mcugw_frame_type(f, 4), MCUGW_EMALFORMED);
        f[2] = 0;
        f[3] = 1;
        assert_int_equal(mcugw_frame_type(f, 4), MCUGW_EMALFORMED);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_crc32c),
                cmocka_unit_test(test_known_vector),
                cmocka_unit_test(test_roundtrip_sizes),
                cmocka_unit_test(test_cobs_final_full_block),
                cmocka_unit_test(test_stream_equals_buffer),
                cmocka_unit_test(test_resync_after_garbage),
                cmocka_unit_test(test_oversize_and_runt),
                cmocka_unit_test(test_frame_type),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
