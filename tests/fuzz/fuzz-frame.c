/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the deframer (COBS + CRC) and the message codec.
 * Properties checked beyond "no crash": every delivered frame re-encodes and deframes to the
 * same bytes; every decodable message re-encodes to exactly the bytes it came from.
 * Deps: mcugw_proto_dep.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcugw/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_msg(const uint8_t *p, size_t len)
{
        static uint8_t again[MCUGW_FRAME_MAX + 16];
        struct mcugw_msg m;
        int n;

        if (mcugw_msg_decode(p, len, &m) != 0)
                return;
        n = mcugw_msg_encode(&m, again, sizeof(again));
        if (n < 0 || (size_t)n != len || memcmp(again, p, len) != 0)
                abort(); /* decode/encode must be a bijection on valid messages */
}

static void check_frame(const uint8_t *f, size_t len)
{
        static uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX) + 8];
        static uint8_t buf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN];
        struct mcugw_deframer d;
        uint8_t *g;
        size_t used, gl;
        int n, r;

        (void)mcugw_frame_type(f, len);
        if (len > MCUGW_HDR_LEN)
                check_msg(f + MCUGW_HDR_LEN, len - MCUGW_HDR_LEN);
        if (len > MCUGW_DATA_HDR_LEN)
                check_msg(f + MCUGW_DATA_HDR_LEN, len - MCUGW_DATA_HDR_LEN);
        (void)mcugw_data_session_id(f, len);

        n = mcugw_frame_encode(f, len, wire, sizeof(wire));
        if (n < 0 || (size_t)n > MCUGW_WIRE_MAX(len) || memchr(wire, 0, (size_t)n - 1))
                abort();
        mcugw_deframer_init(&d, buf, sizeof(buf));
        r = mcugw_deframer_push(&d, wire, (size_t)n, &used, &g, &gl);
        if (len < MCUGW_HDR_LEN) {
                if (r != MCUGW_ERUNT)
                        abort(); /* shorter than a header: always a runt */
                return;
        }
        if (r != 1 || used != (size_t)n || gl != len || memcmp(g, f, len) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t buf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN];
        static uint8_t small[MCUGW_FRAME_MIN + MCUGW_CRC_LEN];
        static uint8_t copy[MCUGW_FRAME_MAX];
        struct mcugw_deframer d, ds;
        const uint8_t *p = data;
        size_t n = size;

        /* Large and minimal receive buffers see the same stream. */
        mcugw_deframer_init(&d, buf, sizeof(buf));
        mcugw_deframer_init(&ds, small, sizeof(small));
        while (n) {
                uint8_t *f;
                size_t used, fl;
                /* Chunk size from the data itself so split points vary. */
                size_t chunk = 1 + (p[0] % 64);
                size_t c = chunk < n ? chunk : n;
                const uint8_t *q = p;
                size_t m = c;

                while (m) {
                        int r = mcugw_deframer_push(&d, q, m, &used, &f, &fl);

                        if (used == 0 || used > m)
                                abort();
                        q += used;
                        m -= used;
                        if (r == 1) {
                                memcpy(copy, f, fl);
                                check_frame(copy, fl);
                        }
                }
                q = p;
                m = c;
                while (m) {
                        int r = mcugw_deframer_push(&ds, q, m, &used, &f, &fl);

                        q += used;
                        m -= used;
                        if (r == 1 && fl > MCUGW_FRAME_MIN)
                                abort();
                }
                p += c;
                n -= c;
        }
        /* The raw input as one frame body. */
        if (size <= MCUGW_FRAME_MAX) {
                memcpy(copy, data, size);
                check_frame(copy, size);
        }
        return 0;
}
