/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the OTA message codec (docs/protocol.md 12.2) and the device's OTA receiver.
 * The input is a sequence of messages, each `u8 len | len bytes` (type byte first). Properties
 * checked beyond "no crash": every decodable message re-encodes to exactly its bytes; the
 * receiver never writes outside the announced image, never writes before an offer's OFFER_MORE
 * pieces are complete, and only answers with messages that fit the smallest receive limit.
 * Deps: mcugw_device_dep.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcugw/ota.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOT 4096u

static uint32_t begun;
static int begins;

static int f_begin(void *c, uint32_t size)
{
        (void)c;
        if (size > SLOT)
                abort(); /* the receiver checks max_size first */
        begun = size;
        begins++;
        return 0;
}

static int f_write(void *c, uint32_t off, const uint8_t *d, size_t len)
{
        (void)c;
        (void)d;
        if (!begins || (uint64_t)off + len > begun)
                abort();
        return 0;
}

static int f_finish(void *c, uint32_t size, uint8_t out[32])
{
        (void)c;
        (void)size;
        memset(out, 0, 32); /* an offer with an all-zero hash completes */
        return 0;
}

static int f_ok(void *c)
{
        (void)c;
        return 0;
}

static int f_send(void *c, const struct mcugw_msg *m)
{
        (void)c;
        if (1 + m->u.raw.len > MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD)
                abort();
        return 0;
}

static void check_codec(const struct mcugw_msg *msg, const uint8_t *p, size_t len)
{
        static uint8_t again[MCUGW_MSG_MAX + 16];
        struct mcugw_ota_msg d;
        int n;

        if (mcugw_ota_decode(msg, &d) != 0)
                return;
        n = mcugw_ota_encode(&d, again, sizeof again);
        if (n < 0 || (size_t)n != len || memcmp(again, p, len) != 0)
                abort(); /* decode/encode must be a bijection on valid messages */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t buf[256];
        struct mcugw_ota o;
        struct mcugw_ota_config cfg = {
                .flash = { NULL, f_begin, f_write, f_finish, f_ok, f_ok, NULL },
                .send = f_send,
                .max_size = SLOT,
                .window = 256,
                .max_chunk = 55,
        };

        begun = 0;
        begins = 0;
        if (mcugw_ota_init(&o, &cfg) != 0)
                abort();
        while (size) {
                size_t len = data[0];
                struct mcugw_msg msg;

                data++;
                size--;
                if (len > size)
                        len = size;
                if (len) {
                        memcpy(buf, data, len);
                        mcugw_ota_wrap(&msg, buf, len);
                        check_codec(&msg, buf, len);
                        if (msg.type >= MCUGW_MSG_OTA_FIRST && msg.type <= MCUGW_MSG_OTA_LAST)
                                (void)mcugw_ota_handle(&o, &msg);
                }
                data += len;
                size -= len;
        }
        return 0;
}
