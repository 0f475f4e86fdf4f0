/* SPDX-License-Identifier: Apache-2.0 */
/* Pure parts of the BLE bridge (blefrag.c): ATT payload sizes, the bounded byte rings, and the
 * property the bridge relies on: link frames cut into ATT-sized pieces at any MTU and
 * concatenated again come out of the link's deframer unchanged. Also address/UUID parsing and
 * the notification rate limiter. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "link/blefrag.h"
#include "mcugw/proto.h"
#include "mcugw/wire.h"

static void test_payload_max(void **state)
{
        /* WriteValue: one Write Command carries ATT_MTU - 3. */
        assert_int_equal(blefrag_payload_max(23, false), 20);
        assert_int_equal(blefrag_payload_max(185, false), 182);
        assert_int_equal(blefrag_payload_max(247, false), 244);
        /* Unknown or nonsense MTUs count as the default 23. */
        assert_int_equal(blefrag_payload_max(0, false), 20);
        assert_int_equal(blefrag_payload_max(5, false), 20);
        /* The acquired socket's MTU is already the payload size. */
        assert_int_equal(blefrag_payload_max(182, true), 182);
        assert_int_equal(blefrag_payload_max(0, true), 23);
        /* Never more than an attribute value can hold. */
        assert_int_equal(blefrag_payload_max(517, false), 512);
        assert_int_equal(blefrag_payload_max(65535, true), 512);
        assert_int_equal(blefrag_next(1000, 23, false), 20);
        assert_int_equal(blefrag_next(7, 23, false), 7);
        assert_int_equal(blefrag_next(0, 23, false), 0);
}

static void test_ring_basic(void **state)
{
        uint8_t buf[8], out[16];
        const uint8_t *f;
        struct blefrag_ring r;

        blefrag_ring_init(&r, buf, sizeof buf);
        assert_int_equal(blefrag_ring_len(&r), 0);
        assert_int_equal(blefrag_ring_space(&r), 8);
        assert_int_equal(blefrag_ring_push(&r, (const uint8_t *)"abcde", 5), 5);
        /* All or nothing: 5 more do not fit, nothing is taken. */
        assert_int_equal(blefrag_ring_push(&r, (const uint8_t *)"fghij", 5), 0);
        assert_int_equal(blefrag_ring_len(&r), 5);
        assert_int_equal(blefrag_ring_peek(&r, out, 3), 3);
        assert_memory_equal(out, "abc", 3);
        blefrag_ring_consume(&r, 3);
        /* Wraps around the end of the buffer. */
        assert_int_equal(blefrag_ring_push(&r, (const uint8_t *)"fghijk", 6), 6);
        assert_int_equal(blefrag_ring_space(&r), 0);
        assert_int_equal(blefrag_ring_peek(&r, out, sizeof out), 8);
        assert_memory_equal(out, "defghijk", 8);
        /* front() gives the contiguous part only. */
        assert_int_equal(blefrag_ring_front(&r, &f), 5);
        assert_memory_equal(f, "defgh", 5);
        blefrag_ring_consume(&r, 5);
        assert_int_equal(blefrag_ring_front(&r, &f), 3);
        assert_memory_equal(f, "ijk", 3);
        /* push_some takes what fits. */
        assert_int_equal(blefrag_ring_push_some(&r, (const uint8_t *)"0123456789", 10), 5);
        blefrag_ring_consume(&r, 100); /* more than there is: empties */
        assert_int_equal(blefrag_ring_len(&r), 0);
        assert_int_equal(blefrag_ring_space(&r), 8);
        assert_int_equal(blefrag_ring_front(&r, &f), 0);
}

/* A peer can never grow a ring: pushing forever keeps len <= cap. */
static void test_ring_bounded(void **state)
{
        uint8_t buf[100], chunk[37];
        struct blefrag_ring r;
        size_t accepted = 0, dropped = 0;

        memset(chunk, 0x55, sizeof chunk);
        blefrag_ring_init(&r, buf, sizeof buf);
        for (int i = 0; i < 10000; i++) {
                size_t n = blefrag_ring_push(&r, chunk, sizeof chunk);
                if (n)
                        accepted++;
                else
                        dropped++;
                assert_true(blefrag_ring_len(&r) <= sizeof buf);
                if (i % 7 == 0)
                        blefrag_ring_consume(&r, 20);
        }
        assert_true(dropped > 0);
        assert_true(accepted > 0);
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
        rng_state = rng_state * 1103515245u + 12345u;
        return rng_state >> 8;
}

/* Frames → COBS wire bytes → ring → ATT pieces of every MTU → concatenated → deframer. */
static void test_fragment_reassemble(void **state)
{
        static const unsigned mtus[] = { 23, 24, 27, 50, 185, 247, 517 };
        static uint8_t frames[20][MCUGW_FRAME_MAX];
        static size_t lens[20];
        static uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
        static uint8_t rxbuf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN];
        static uint8_t ringbuf[4096];
        uint8_t pkt[BLEFRAG_ATT_VALUE_MAX];

        for (int i = 0; i < 20; i++) {
                lens[i] = MCUGW_HDR_LEN + rng() % (MCUGW_FRAME_MAX - MCUGW_HDR_LEN + 1);
                for (size_t k = 0; k < lens[i]; k++)
                        frames[i][k] = (uint8_t)(rng() % 4 == 0 ? 0 : rng());
        }
        for (size_t mi = 0; mi < sizeof mtus / sizeof mtus[0]; mi++) {
                for (int fd_mode = 0; fd_mode < 2; fd_mode++) {
                        struct blefrag_ring r;
                        struct mcugw_deframer df;
                        int next = 0, got = 0;
                        size_t max = blefrag_payload_max(mtus[mi], fd_mode);

                        blefrag_ring_init(&r, ringbuf, sizeof ringbuf);
                        assert_int_equal(mcugw_deframer_init(&df, rxbuf, sizeof rxbuf), 0);
                        while (got < 20) {
                                /* The link writes whole wire frames while there is room. */
                                while (next < 20) {
                                        int w = mcugw_frame_encode(frames[next], lens[next], wire,
                                                                   sizeof wire);
                                        assert_true(w > 0);
                                        if (!blefrag_ring_push(&r, wire, (size_t)w))
                                                break;
                                        next++;
                                }
                                /* The bridge sends one ATT packet; the peer appends it. */
                                size_t n = blefrag_next(blefrag_ring_len(&r), mtus[mi], fd_mode);
                                assert_true(n > 0 && n <= max);
                                assert_int_equal(blefrag_ring_peek(&r, pkt, n), n);
                                blefrag_ring_consume(&r, n);
                                const uint8_t *p = pkt;
                                while (n) {
                                        size_t used;
                                        uint8_t *f;
                                        size_t fl;
                                        int rc = mcugw_deframer_push(&df, p, n, &used, &f, &fl);
                                        assert_true(rc >= 0);
                                        if (rc == 1) {
                                                assert_int_equal(fl, lens[got]);
                                                assert_memory_equal(f, frames[got], fl);
                                                got++;
                                        }
                                        p += used;
                                        n -= used;
                                }
                        }
                        assert_int_equal(df.stats.frames, 20);
                        assert_int_equal(df.stats.crc_errors + df.stats.cobs_errors, 0);
                }
        }
}

/* Whole notifications lost (ring full or rate limit) cost only the frames they touched: the
 * deframer resynchronises at the next delimiter and later frames come through. */
static void test_drop_resync(void **state)
{
        static uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
        static uint8_t rxbuf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN];
        uint8_t frame[200];
        struct mcugw_deframer df;
        int good = 0;

        for (size_t k = 0; k < sizeof frame; k++)
                frame[k] = (uint8_t)(k * 7 + 1);
        frame[0] = MCUGW_PROTO_VERSION;
        assert_int_equal(mcugw_deframer_init(&df, rxbuf, sizeof rxbuf), 0);
        for (int i = 0; i < 10; i++) {
                int w = mcugw_frame_encode(frame, sizeof frame, wire, sizeof wire);
                assert_true(w > 0);
                for (int off = 0; off < w; off += 20) {
                        size_t n = (size_t)(w - off < 20 ? w - off : 20), used;
                        const uint8_t *p = wire + off;
                        uint8_t *f;
                        size_t fl;
                        if (i == 3 && off == 40)
                                continue; /* a dropped notification */
                        while (n) {
                                int rc = mcugw_deframer_push(&df, p, n, &used, &f, &fl);
                                if (rc == 1) {
                                        assert_memory_equal(f, frame, sizeof frame);
                                        good++;
                                }
                                p += used;
                                n -= used;
                        }
                }
        }
        assert_int_equal(good, 9);
}

static void test_address_uuid(void **state)
{
        char a[18], u[37];

        assert_int_equal(blefrag_address_normalize("aa:bb:cc:dd:ee:0f", a), 0);
        assert_string_equal(a, "AA:BB:CC:DD:EE:0F");
        assert_int_equal(blefrag_address_normalize("AA:BB:CC:DD:EE", a), -EINVAL);
        assert_int_equal(blefrag_address_normalize("AA-BB-CC-DD-EE-FF", a), -EINVAL);
        assert_int_equal(blefrag_address_normalize("GG:BB:CC:DD:EE:FF", a), -EINVAL);
        assert_int_equal(blefrag_address_normalize("AA:BB:CC:DD:EE:FF0", a), -EINVAL);
        assert_int_equal(blefrag_address_normalize(NULL, a), -EINVAL);

        assert_int_equal(blefrag_uuid_normalize("6E4D0002-8E5E-4C39-9A0E-6D6367770000", u), 0);
        assert_string_equal(u, MCUGW_BLE_CHARACTERISTIC_UUID);
        assert_int_equal(blefrag_uuid_normalize(MCUGW_BLE_SERVICE_UUID, u), 0);
        assert_string_equal(u, MCUGW_BLE_SERVICE_UUID);
        assert_int_equal(blefrag_uuid_normalize("6e4d0002", u), -EINVAL);
        assert_int_equal(blefrag_uuid_normalize("6e4d00028e5e-4c39-9a0e-6d6367770000-", u),
                         -EINVAL);
        assert_int_equal(blefrag_uuid_normalize("6e4d0002-8e5e-4c39-9a0e-6d636777000g", u),
                         -EINVAL);
        assert_string_not_equal(MCUGW_BLE_SERVICE_UUID, MCUGW_BLE_CHARACTERISTIC_UUID);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_payload_max),  cmocka_unit_test(test_ring_basic),
                cmocka_unit_test(test_ring_bounded), cmocka_unit_test(test_fragment_reassemble),
                cmocka_unit_test(test_drop_resync),  cmocka_unit_test(test_address_uuid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
