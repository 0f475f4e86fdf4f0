/* SPDX-License-Identifier: Apache-2.0 */
/* CBOR codec for AWS MQTT file streams (see ota_stream.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cbor.h>

#include "ota/ota_stream.h"

/* ---- encoding ---------------------------------------------------------------------------- */

/* Smallest encoding of an unsigned integer (what AWS and the FreeRTOS agent send). */
static cbor_item_t *build_uint(uint32_t v)
{
        if (v <= UINT8_MAX)
                return cbor_build_uint8((uint8_t)v);
        if (v <= UINT16_MAX)
                return cbor_build_uint16((uint16_t)v);
        return cbor_build_uint32(v);
}

static bool add(cbor_item_t *map, const char *key, cbor_item_t *value)
{
        cbor_item_t *k = cbor_build_string(key);
        bool ok;

        if (!k || !value) {
                if (k)
                        cbor_decref(&k);
                if (value)
                        cbor_decref(&value);
                return false;
        }
        ok = cbor_map_add(map, (struct cbor_pair){ .key = k, .value = value });
        cbor_decref(&k);
        cbor_decref(&value);
        return ok;
}

static int serialize(cbor_item_t *map, bool ok, uint8_t **ret, size_t *ret_len)
{
        unsigned char *buf = NULL;
        size_t cap = 0, n;

        if (!ok) {
                cbor_decref(&map);
                return -ENOMEM;
        }
        n = cbor_serialize_alloc(map, &buf, &cap);
        cbor_decref(&map);
        if (!n) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *ret_len = n;
        return 0;
}

int ota_stream_encode_request(const struct ota_stream_request *req, uint8_t **ret, size_t *ret_len)
{
        size_t tl = strnlen(req->client_token, sizeof req->client_token);
        cbor_item_t *map;
        bool ok;

        if (tl == 0 || tl > OTA_STREAM_TOKEN_MAX || req->block_size < OTA_STREAM_BLOCK_MIN ||
            req->block_size > OTA_STREAM_BLOCK_MAX || req->n_blocks == 0 ||
            req->n_blocks > OTA_STREAM_MAX_BLOCKS_PER_REQUEST ||
            req->bitmap_len > OTA_STREAM_BITMAP_MAX)
                return -EINVAL;
        map = cbor_new_definite_map(req->bitmap_len ? 6 : 5);
        if (!map)
                return -ENOMEM;
        ok = add(map, "c", cbor_build_string(req->client_token)) &&
             add(map, "f", build_uint(req->file_id)) &&
             add(map, "l", build_uint(req->block_size)) && add(map, "o", build_uint(req->offset));
        if (ok && req->bitmap_len)
                ok = add(map, "b", cbor_build_bytestring(req->bitmap, req->bitmap_len));
        ok = ok && add(map, "n", build_uint(req->n_blocks));
        return serialize(map, ok, ret, ret_len);
}

int ota_stream_encode_data(const struct ota_stream_data *d, uint8_t **ret, size_t *ret_len)
{
        cbor_item_t *map;
        bool ok;

        if (d->len > OTA_STREAM_BLOCK_MAX || (d->len && !d->payload))
                return -EINVAL;
        map = cbor_new_definite_map(4);
        if (!map)
                return -ENOMEM;
        ok = add(map, "f", build_uint(d->file_id)) && add(map, "i", build_uint(d->block)) &&
             add(map, "l", build_uint(d->len)) &&
             add(map, "p", cbor_build_bytestring(d->payload, d->len));
        return serialize(map, ok, ret, ret_len);
}

/* ---- decoding: a flat map of short text keys to unsigned/byte/text values ----------------- */

enum kind { K_OTHER, K_MAP, K_UINT, K_BYTES, K_TEXT };

struct item {
        enum kind kind;
        uint64_t u; /* K_UINT value, K_MAP pairs */
        const uint8_t *ptr;
        size_t len;
};

static void cb_u8(void *c, uint8_t v)
{
        *(struct item *)c = (struct item){ .kind = K_UINT, .u = v };
}
static void cb_u16(void *c, uint16_t v)
{
        *(struct item *)c = (struct item){ .kind = K_UINT, .u = v };
}
static void cb_u32(void *c, uint32_t v)
{
        *(struct item *)c = (struct item){ .kind = K_UINT, .u = v };
}
static void cb_u64(void *c, uint64_t v)
{
        *(struct item *)c = (struct item){ .kind = K_UINT, .u = v };
}
static void cb_bytes(void *c, cbor_data p, size_t n)
{
        *(struct item *)c = (struct item){ .kind = K_BYTES, .ptr = p, .len = n };
}
static void cb_text(void *c, cbor_data p, size_t n)
{
        *(struct item *)c = (struct item){ .kind = K_TEXT, .ptr = p, .len = n };
}
static void cb_map(void *c, size_t n)
{
        *(struct item *)c = (struct item){ .kind = K_MAP, .u = n };
}

static const struct cbor_callbacks *callbacks(void)
{
        static struct cbor_callbacks cb;
        static bool init;

        if (!init) {
                cb = cbor_empty_callbacks;
                cb.uint8 = cb_u8;
                cb.uint16 = cb_u16;
                cb.uint32 = cb_u32;
                cb.uint64 = cb_u64;
                cb.byte_string = cb_bytes; /* definite only; indefinite starts stay K_OTHER */
                cb.string = cb_text;
                cb.map_start = cb_map;
                init = true;
        }
        return &cb;
}

/* Decode one item at *off. Strings are checked to lie inside the input (libcbor does, this is
 * belt and braces since we keep pointers). */
static int next_item(const uint8_t *p, size_t len, size_t *off, struct item *it)
{
        struct cbor_decoder_result r;

        if (*off >= len)
                return -EBADMSG;
        *it = (struct item){ .kind = K_OTHER };
        r = cbor_stream_decode(p + *off, len - *off, callbacks(), it);
        if (r.status != CBOR_DECODER_FINISHED || r.read == 0 || r.read > len - *off)
                return -EBADMSG;
        if ((it->kind == K_BYTES || it->kind == K_TEXT) &&
            (it->ptr < p + *off || it->len > (size_t)(p + len - it->ptr)))
                return -EBADMSG;
        *off += r.read;
        return it->kind == K_OTHER ? -EBADMSG : 0;
}

#define MAX_PAIRS 16

struct pair {
        char key;
        struct item v;
};

/* Top level must be one definite map of single-character text keys (AWS's keys) to scalar
 * values, no duplicates, nothing after it. */
static int decode_flat(const uint8_t *p, size_t len, struct pair *out, size_t *ret_n)
{
        struct item it, k;
        size_t off = 0, n;

        if (!p || next_item(p, len, &off, &it) < 0 || it.kind != K_MAP || it.u > MAX_PAIRS)
                return -EBADMSG;
        n = (size_t)it.u;
        for (size_t i = 0; i < n; i++) {
                if (next_item(p, len, &off, &k) < 0 || k.kind != K_TEXT || k.len != 1)
                        return -EBADMSG;
                if (next_item(p, len, &off, &out[i].v) < 0 || out[i].v.kind == K_MAP)
                        return -EBADMSG;
                out[i].key = (char)k.ptr[0];
                for (size_t j = 0; j < i; j++)
                        if (out[j].key == out[i].key)
                                return -EBADMSG;
        }
        if (off != len)
                return -EBADMSG;
        *ret_n = n;
        return 0;
}

static const struct item *find(const struct pair *v, size_t n, char key, enum kind kind)
{
        for (size_t i = 0; i < n; i++)
                if (v[i].key == key)
                        return v[i].v.kind == kind ? &v[i].v : NULL;
        return NULL;
}

static bool get_u32(const struct pair *v, size_t n, char key, uint32_t *ret)
{
        const struct item *it = find(v, n, key, K_UINT);

        if (!it || it->u > UINT32_MAX)
                return false;
        *ret = (uint32_t)it->u;
        return true;
}

static bool get_text(const struct pair *v, size_t n, char key, char *out, size_t cap)
{
        const struct item *it = find(v, n, key, K_TEXT);

        if (!it || it->len >= cap || memchr(it->ptr, 0, it->len))
                return false;
        memcpy(out, it->ptr, it->len);
        out[it->len] = 0;
        return true;
}

int ota_stream_decode_data(const uint8_t *p, size_t len, struct ota_stream_data *ret)
{
        struct pair v[MAX_PAIRS];
        const struct item *pl;
        struct ota_stream_data d;
        size_t n;

        if (decode_flat(p, len, v, &n) < 0)
                return -EBADMSG;
        pl = find(v, n, 'p', K_BYTES);
        if (!get_u32(v, n, 'f', &d.file_id) || !get_u32(v, n, 'i', &d.block) ||
            !get_u32(v, n, 'l', &d.len) || !pl || pl->len != d.len ||
            d.len > OTA_STREAM_BLOCK_MAX || d.len == 0)
                return -EBADMSG;
        d.payload = pl->ptr;
        *ret = d;
        return 0;
}

int ota_stream_decode_request(const uint8_t *p, size_t len, struct ota_stream_request *ret)
{
        struct pair v[MAX_PAIRS];
        struct ota_stream_request q = { 0 };
        const struct item *b;
        size_t n;

        if (decode_flat(p, len, v, &n) < 0)
                return -EBADMSG;
        if (!get_text(v, n, 'c', q.client_token, sizeof q.client_token) ||
            !get_u32(v, n, 'f', &q.file_id) || !get_u32(v, n, 'l', &q.block_size) ||
            !get_u32(v, n, 'o', &q.offset) || !get_u32(v, n, 'n', &q.n_blocks) ||
            q.block_size < OTA_STREAM_BLOCK_MIN || q.block_size > OTA_STREAM_BLOCK_MAX ||
            q.n_blocks == 0 || q.n_blocks > OTA_STREAM_MAX_BLOCKS_PER_REQUEST)
                return -EBADMSG;
        b = find(v, n, 'b', K_BYTES);
        if (b) {
                if (b->len == 0 || b->len > OTA_STREAM_BITMAP_MAX)
                        return -EBADMSG;
                memcpy(q.bitmap, b->ptr, b->len);
                q.bitmap_len = b->len;
        } else {
                for (size_t i = 0; i < n; i++)
                        if (v[i].key == 'b')
                                return -EBADMSG; /* present with the wrong type */
        }
        *ret = q;
        return 0;
}

int ota_stream_decode_rejected(const uint8_t *p, size_t len, struct ota_stream_rejected *ret)
{
        struct pair v[MAX_PAIRS];
        struct ota_stream_rejected r = { 0 };
        size_t n;

        if (decode_flat(p, len, v, &n) < 0 || !get_text(v, n, 'o', r.code, sizeof r.code))
                return -EBADMSG;
        (void)get_text(v, n, 'm', r.message, sizeof r.message);
        (void)get_text(v, n, 'c', r.client_token, sizeof r.client_token);
        *ret = r;
        return 0;
}

uint32_t ota_stream_plan_request(const uint8_t *have, uint32_t n_total, uint32_t max_blocks,
                                 struct ota_stream_request *req)
{
        uint32_t first = 0, count = 0, span;

        while (first < n_total && ota_bit_get(have, first))
                first++;
        if (first == n_total)
                return 0;
        if (max_blocks > OTA_STREAM_MAX_BLOCKS_PER_REQUEST)
                max_blocks = OTA_STREAM_MAX_BLOCKS_PER_REQUEST;
        span = n_total - first;
        if (span > OTA_STREAM_BITMAP_MAX * 8)
                span = OTA_STREAM_BITMAP_MAX * 8;
        memset(req->bitmap, 0, sizeof req->bitmap);
        req->offset = first;
        req->bitmap_len = 0;
        for (uint32_t k = 0; k < span && count < max_blocks; k++) {
                if (ota_bit_get(have, first + k))
                        continue;
                ota_bit_set(req->bitmap, k);
                req->bitmap_len = k / 8 + 1;
                count++;
        }
        req->n_blocks = count;
        return count;
}
