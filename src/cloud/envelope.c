/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "cloud/envelope.h"

/* Room for `],"n":4294967295}`. */
#define TRAILER_MAX 17

static size_t json_str_size(const char *s)
{
        size_t n = 2;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        n += 2;
                else if (c < 0x20)
                        n += 6;
                else
                        n++;
        }
        return n;
}

static char *json_str_put(char *o, const char *s)
{
        static const char hex[] = "0123456789abcdef";
        *o++ = '"';
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\') {
                        *o++ = '\\';
                        *o++ = (char)c;
                } else if (c < 0x20) {
                        memcpy(o, "\\u00", 4);
                        o[4] = hex[c >> 4];
                        o[5] = hex[c & 15];
                        o += 6;
                } else
                        *o++ = (char)c;
        }
        *o++ = '"';
        return o;
}

static size_t b64_size(size_t n)
{
        return (n + 2) / 3 * 4;
}

/* {"d":…,"s":65535,"q":4294967295,"t":-9223372036854775808,"p":…} plus a comma */
size_t envelope_entry_size(const char *device, size_t payload_len)
{
        return 1 + 5 + json_str_size(device) + 5 + 5 + 5 + 10 + 5 + 20 + 5 + 2 +
               b64_size(payload_len) + 1;
}

size_t envelope_overhead(const char *gateway)
{
        return 13 + json_str_size(gateway) + 9 + TRAILER_MAX;
}

static int reserve(struct envelope *e, size_t more)
{
        size_t cap;
        char *n;
        if (e->len + more + 1 <= e->cap)
                return 0;
        cap = e->cap ? e->cap : 4096;
        while (cap < e->len + more + 1)
                cap *= 2;
        n = realloc(e->buf, cap);
        if (!n)
                return -ENOMEM;
        e->buf = n;
        e->cap = cap;
        return 0;
}

int envelope_begin(struct envelope *e, const char *gateway, size_t max)
{
        size_t need = envelope_overhead(gateway);
        char *o;
        int r;

        e->len = 0;
        e->n = 0;
        e->max = max;
        if (need > max)
                return -EMSGSIZE;
        if ((r = reserve(e, need)) < 0)
                return r;
        o = e->buf;
        memcpy(o, "{\"v\":1,\"gw\":", 12);
        o = json_str_put(o + 12, gateway);
        memcpy(o, ",\"msgs\":[", 9);
        o += 9;
        e->len = e->header_len = (size_t)(o - e->buf);
        return 0;
}

int envelope_add(struct envelope *e, const char *device, uint16_t stream, uint32_t seq,
                 int64_t ts_ms, const uint8_t *payload, size_t len)
{
        size_t bound = envelope_entry_size(device, len);
        char *o;
        int r;

        if (e->header_len + bound + TRAILER_MAX > e->max)
                return -EMSGSIZE;
        if (e->len + bound + TRAILER_MAX > e->max)
                return -ENOSPC;
        if ((r = reserve(e, bound + TRAILER_MAX)) < 0)
                return r;
        o = e->buf + e->len;
        if (e->n)
                *o++ = ',';
        memcpy(o, "{\"d\":", 5);
        o = json_str_put(o + 5, device);
        o += sprintf(o, ",\"s\":%u,\"q\":%" PRIu32 ",\"t\":%" PRId64 ",\"p\":\"", (unsigned)stream,
                     seq, ts_ms);
        o += EVP_EncodeBlock((unsigned char *)o, payload, (int)len);
        *o++ = '"';
        *o++ = '}';
        e->len = (size_t)(o - e->buf);
        e->n++;
        return 0;
}

const char *envelope_finish(struct envelope *e, size_t *ret_len)
{
        e->len += (size_t)snprintf(e->buf + e->len, e->cap - e->len, "],\"n\":%u}", e->n);
        *ret_len = e->len;
        return e->buf;
}

void envelope_free(struct envelope *e)
{
        free(e->buf);
        *e = (struct envelope){ 0 };
}
