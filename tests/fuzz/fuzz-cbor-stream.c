/* SPDX-License-Identifier: Apache-2.0 */
/* AWS MQTT stream CBOR: data replies, rejections and requests; valid ones must round-trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ota/ota_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct ota_stream_data d, d2;
        struct ota_stream_request q, q2;
        struct ota_stream_rejected rj;
        uint8_t *buf;
        size_t len;

        if (ota_stream_decode_data(data, size, &d) == 0 &&
            ota_stream_encode_data(&d, &buf, &len) == 0) {
                if (ota_stream_decode_data(buf, len, &d2) != 0 || d2.len != d.len ||
                    memcmp(d2.payload, d.payload, d.len) != 0)
                        abort();
                free(buf);
        }
        if (ota_stream_decode_request(data, size, &q) == 0 &&
            ota_stream_encode_request(&q, &buf, &len) == 0) {
                if (ota_stream_decode_request(buf, len, &q2) != 0 || q2.n_blocks != q.n_blocks)
                        abort();
                free(buf);
        }
        (void)ota_stream_decode_rejected(data, size, &rj);
        return 0;
}
