/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/*
 * JSON documents as CBOR, for the AWS IoT MQTT APIs that offer both (fleet provisioning's
 * `…/cbor` topics): maps with text keys, arrays, text strings, integers, booleans, null and
 * floats, in both directions. Pure code on libcbor; decoding checks every item (nesting at most
 * CBORJSON_DEPTH_MAX deep, map keys text, no trailing bytes), byte strings become base64 text.
 */

#define CBORJSON_DEPTH_MAX 16

/* Encode o: 0 and *ret (malloc'd) / *ret_len, -EINVAL for what CBOR of JSON cannot hold,
 * -ENOMEM. */
int cborjson_encode(const json_t *o, uint8_t **ret, size_t *ret_len);
/* Decode one CBOR item filling the whole buffer: a new reference, or NULL. */
json_t *cborjson_decode(const uint8_t *p, size_t len);
