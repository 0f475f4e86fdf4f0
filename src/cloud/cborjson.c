/* SPDX-License-Identifier: Apache-2.0 */
/* JSON <-> CBOR for the AWS IoT `…/cbor` topics (see cborjson.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cbor.h>
#include <openssl/evp.h>

#include "cloud/cborjson.h"

static cbor_item_t *to_cbor(const json_t *o, unsigned depth)
{
        cbor_item_t *it = NULL;

        if (depth > CBORJSON_DEPTH_MAX)
                return NULL;
        switch (json_typeof(o)) {
        case JSON_OBJECT: {
                const char *k;
                json_t *v;
                it = cbor_new_definite_map(json_object_size(o));
                if (!it)
                        return NULL;
                json_object_foreach ((json_t *)o, k, v) {
                        cbor_item_t *ck = cbor_build_string(k), *cv = to_cbor(v, depth + 1);
                        bool ok = ck && cv &&
                                  cbor_map_add(it, (struct cbor_pair){ .key = ck, .value = cv });
                        if (ck)
                                cbor_decref(&ck);
                        if (cv)
                                cbor_decref(&cv);
                        if (!ok) {
                                cbor_decref(&it);
                                return NULL;
                        }
                }
                return it;
        }
        case JSON_ARRAY: {
                size_t i;
                json_t *v;
                it = cbor_new_definite_array(json_array_size(o));
                if (!it)
                        return NULL;
                json_array_foreach ((json_t *)o, i, v) {
                        cbor_item_t *cv = to_cbor(v, depth + 1);
                        bool ok = cv && cbor_array_push(it, cv);
                        if (cv)
                                cbor_decref(&cv);
                        if (!ok) {
                                cbor_decref(&it);
                                return NULL;
                        }
                }
                return it;
        }
        case JSON_STRING: return cbor_build_stringn(json_string_value(o), json_string_length(o));
        case JSON_INTEGER: {
                json_int_t v = json_integer_value(o);
                return v >= 0 ? cbor_build_uint64((uint64_t)v)
                              : cbor_build_negint64((uint64_t)(-(v + 1)));
        }
        case JSON_REAL: return cbor_build_float8(json_real_value(o));
        case JSON_TRUE: return cbor_build_bool(true);
        case JSON_FALSE: return cbor_build_bool(false);
        case JSON_NULL: return cbor_new_null();
        }
        return NULL;
}

int cborjson_encode(const json_t *o, uint8_t **ret, size_t *ret_len)
{
        cbor_item_t *it = to_cbor(o, 0);
        unsigned char *buf = NULL;
        size_t cap = 0, n;

        if (!it)
                return -EINVAL;
        n = cbor_serialize_alloc(it, &buf, &cap);
        cbor_decref(&it);
        if (!n) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *ret_len = n;
        return 0;
}

static json_t *to_json(const cbor_item_t *it, unsigned depth);

static json_t *text_of(const cbor_item_t *it)
{
        if (!cbor_isa_string(it) || !cbor_string_is_definite(it))
                return NULL;
        if (!cbor_string_length(it))
                return json_string("");
        return json_stringn((const char *)cbor_string_handle(it), cbor_string_length(it));
}

static json_t *to_json(const cbor_item_t *it, unsigned depth)
{
        if (depth > CBORJSON_DEPTH_MAX)
                return NULL;
        switch (cbor_typeof(it)) {
        case CBOR_TYPE_UINT: {
                uint64_t v = cbor_get_int(it);
                return v > (uint64_t)INT64_MAX ? NULL : json_integer((json_int_t)v);
        }
        case CBOR_TYPE_NEGINT: {
                uint64_t v = cbor_get_int(it);
                return v > (uint64_t)INT64_MAX ? NULL : json_integer(-(json_int_t)v - 1);
        }
        case CBOR_TYPE_STRING: return text_of(it);
        case CBOR_TYPE_BYTESTRING: {
                size_t n = cbor_bytestring_length(it);
                char *b64;
                json_t *s;
                if (!cbor_bytestring_is_definite(it) || n > 1 << 20)
                        return NULL;
                b64 = malloc(4 * ((n + 2) / 3) + 1);
                if (!b64)
                        return NULL;
                EVP_EncodeBlock((unsigned char *)b64, cbor_bytestring_handle(it), (int)n);
                s = json_string(b64);
                free(b64);
                return s;
        }
        case CBOR_TYPE_ARRAY: {
                json_t *a = json_array();
                if (!a || !cbor_array_is_definite(it)) {
                        json_decref(a);
                        return NULL;
                }
                for (size_t i = 0; i < cbor_array_size(it); i++) {
                        cbor_item_t *e = cbor_array_get(it, i);
                        json_t *v = e ? to_json(e, depth + 1) : NULL;
                        if (e)
                                cbor_decref(&e);
                        if (!v || json_array_append_new(a, v) < 0) {
                                json_decref(a);
                                return NULL;
                        }
                }
                return a;
        }
        case CBOR_TYPE_MAP: {
                struct cbor_pair *pairs = cbor_map_handle(it);
                json_t *o = json_object();
                if (!o || !cbor_map_is_definite(it)) {
                        json_decref(o);
                        return NULL;
                }
                for (size_t i = 0; i < cbor_map_size(it); i++) {
                        json_t *k = text_of(pairs[i].key), *v = to_json(pairs[i].value, depth + 1);
                        bool ok = k && v && json_object_set(o, json_string_value(k), v) == 0;
                        json_decref(k);
                        json_decref(v);
                        if (!ok) {
                                json_decref(o);
                                return NULL;
                        }
                }
                return o;
        }
        case CBOR_TYPE_FLOAT_CTRL:
                if (cbor_float_ctrl_is_ctrl(it)) {
                        if (cbor_is_null(it))
                                return json_null();
                        if (cbor_is_bool(it))
                                return json_boolean(cbor_get_bool(it));
                        return NULL;
                }
                return json_real(cbor_float_get_float(it));
        default: return NULL; /* tags */
        }
}

json_t *cborjson_decode(const uint8_t *p, size_t len)
{
        struct cbor_load_result res;
        cbor_item_t *it;
        json_t *o;

        if (!len)
                return NULL;
        it = cbor_load(p, len, &res);
        if (!it)
                return NULL;
        o = res.error.code == CBOR_ERR_NONE && res.read == len ? to_json(it, 0) : NULL;
        cbor_decref(&it);
        return o;
}
