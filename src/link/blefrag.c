/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "link/blefrag.h"

size_t blefrag_payload_max(unsigned mtu, bool acquired_fd)
{
        size_t m = mtu < BLEFRAG_ATT_MTU_DEFAULT ? BLEFRAG_ATT_MTU_DEFAULT : mtu;
        if (!acquired_fd)
                m -= BLEFRAG_ATT_WRITE_HDR;
        return m > BLEFRAG_ATT_VALUE_MAX ? BLEFRAG_ATT_VALUE_MAX : m;
}

void blefrag_ring_init(struct blefrag_ring *r, uint8_t *buf, size_t cap)
{
        r->buf = buf;
        r->cap = cap;
        r->head = 0;
        r->len = 0;
}

size_t blefrag_ring_push_some(struct blefrag_ring *r, const uint8_t *p, size_t n)
{
        size_t take = n < blefrag_ring_space(r) ? n : blefrag_ring_space(r);
        size_t tail = (r->head + r->len) % (r->cap ? r->cap : 1);
        size_t first = take < r->cap - tail ? take : r->cap - tail;

        if (!take)
                return 0;
        memcpy(r->buf + tail, p, first);
        memcpy(r->buf, p + first, take - first);
        r->len += take;
        return take;
}

size_t blefrag_ring_push(struct blefrag_ring *r, const uint8_t *p, size_t n)
{
        if (n > blefrag_ring_space(r))
                return 0;
        return blefrag_ring_push_some(r, p, n);
}

size_t blefrag_ring_peek(const struct blefrag_ring *r, uint8_t *out, size_t n)
{
        size_t take = n < r->len ? n : r->len;
        size_t first = take < r->cap - r->head ? take : r->cap - r->head;

        if (!take)
                return 0;
        memcpy(out, r->buf + r->head, first);
        memcpy(out + first, r->buf, take - first);
        return take;
}

size_t blefrag_ring_front(const struct blefrag_ring *r, const uint8_t **ret)
{
        size_t first = r->len < r->cap - r->head ? r->len : r->cap - r->head;
        *ret = r->buf + r->head;
        return first;
}

void blefrag_ring_consume(struct blefrag_ring *r, size_t n)
{
        if (n > r->len)
                n = r->len;
        r->len -= n;
        r->head = r->len ? (r->head + n) % r->cap : 0;
}

int blefrag_address_normalize(const char *in, char out[18])
{
        if (!in || strlen(in) != 17)
                return -EINVAL;
        for (size_t i = 0; i < 17; i++) {
                if (i % 3 == 2) {
                        if (in[i] != ':')
                                return -EINVAL;
                        out[i] = ':';
                } else {
                        if (!isxdigit((unsigned char)in[i]))
                                return -EINVAL;
                        out[i] = (char)toupper((unsigned char)in[i]);
                }
        }
        out[17] = 0;
        return 0;
}

int blefrag_uuid_normalize(const char *in, char out[37])
{
        if (!in || strlen(in) != 36)
                return -EINVAL;
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (in[i] != '-')
                                return -EINVAL;
                        out[i] = '-';
                } else {
                        if (!isxdigit((unsigned char)in[i]))
                                return -EINVAL;
                        out[i] = (char)tolower((unsigned char)in[i]);
                }
        }
        out[36] = 0;
        return 0;
}
