/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * AWS IoT MQTT-based file delivery, CBOR flavour (docs/ota.md):
 *
 *   request  $aws/things/{thing}/streams/{stream}/get/cbor
 *            {"c": client token, "f": file id, "l": block size, "o": first block,
 *             "b": bitmap of wanted blocks (bit k of byte j = block o + 8j + k, LSB first),
 *             "n": number of blocks}
 *   reply    $aws/things/{thing}/streams/{stream}/data/cbor
 *            {"f": file id, "i": block index, "l": block length, "p": block bytes}
 *   error    $aws/things/{thing}/streams/{stream}/rejected/cbor
 *            {"o": error code, "m": message, "c": client token}
 *
 * Pure: encoding uses libcbor's builder, decoding its streaming decoder (no allocation, nothing
 * nested accepted, each length checked against the input before it is trusted).
 */

#define OTA_STREAM_BLOCK_MIN 256u
#define OTA_STREAM_BLOCK_MAX (128u * 1024u)   /* AWS limit */
#define OTA_STREAM_MAX_BLOCKS_PER_REQUEST 98u /* AWS limit on "n" */
#define OTA_STREAM_BITMAP_MAX 128u            /* bytes of "b" we send or accept */
#define OTA_STREAM_TOKEN_MAX 64u

struct ota_stream_request {
        char client_token[OTA_STREAM_TOKEN_MAX + 1];
        uint32_t file_id;
        uint32_t block_size;
        uint32_t offset; /* first block */
        uint32_t n_blocks;
        uint8_t bitmap[OTA_STREAM_BITMAP_MAX];
        size_t bitmap_len; /* 0: no "b", all n blocks from o */
};

struct ota_stream_data {
        uint32_t file_id;
        uint32_t block;
        uint32_t len;
        const uint8_t *payload; /* points into the decoded buffer */
};

struct ota_stream_rejected {
        char code[64];
        char message[128];
        char client_token[OTA_STREAM_TOKEN_MAX + 1];
};

/* Encode a request; *ret (malloc'd) and *ret_len on success, -EINVAL for bad fields. */
int ota_stream_encode_request(const struct ota_stream_request *req, uint8_t **ret, size_t *ret_len);
/* Decode a request (used by tests, the fuzzer and the bench-side cloud): 0 or -EBADMSG. */
int ota_stream_decode_request(const uint8_t *p, size_t len, struct ota_stream_request *ret);

/* Encode / decode a data reply. Decode checks every field is present, l == length of p and
 * l <= OTA_STREAM_BLOCK_MAX: 0 or -EBADMSG. */
int ota_stream_encode_data(const struct ota_stream_data *d, uint8_t **ret, size_t *ret_len);
int ota_stream_decode_data(const uint8_t *p, size_t len, struct ota_stream_data *ret);

int ota_stream_decode_rejected(const uint8_t *p, size_t len, struct ota_stream_rejected *ret);

/* Bitmap helpers: bit k (LSB first within each byte). */
static inline bool ota_bit_get(const uint8_t *bm, uint32_t k)
{
        return bm[k / 8] & (1u << (k % 8));
}
static inline void ota_bit_set(uint8_t *bm, uint32_t k)
{
        bm[k / 8] |= (uint8_t)(1u << (k % 8));
}

/* Fill req->bitmap with up to max_blocks blocks that are still missing in have (a bitmap of
 * received blocks over the whole file of n_total blocks), starting at the first missing one.
 * Returns the number of blocks requested (0: nothing missing). */
uint32_t ota_stream_plan_request(const uint8_t *have, uint32_t n_total, uint32_t max_blocks,
                                 struct ota_stream_request *req);
