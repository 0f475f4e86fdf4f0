/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/alloc-util.h"
#include "basic/macro.h"
#include "link/ackq.h"

void ackq_init(struct ackq *q, unsigned max)
{
        *q = (struct ackq){ .max = max ? max : 1 };
}

static uint32_t ackq_new_id(struct ackq *q)
{
        if (++q->next_id == 0)
                ++q->next_id;
        return q->next_id;
}

int ackq_add(struct ackq *q, uint16_t stream, uint32_t seq, uint32_t *ret_id)
{
        struct ackq_slot *s = NULL;

        if (q->n_used < q->n_alloc) {
                for (size_t i = 0; i < q->n_alloc; i++)
                        if (!q->slots[i].used) {
                                s = &q->slots[i];
                                break;
                        }
        } else if (q->n_alloc < q->max) {
                size_t old = q->n_alloc;
                /* greedy_realloc() starts at 8 and doubles; the clamp keeps any max exact. */
                size_t want = MIN(MAX(old * 2, (size_t)8), (size_t)q->max);
                if (GREEDY_REALLOC(q->slots, q->n_alloc, want) < 0)
                        return -ENOMEM;
                if (q->n_alloc > q->max) {
                        /* Doubling overshot: give the rest back rather than exceed max. */
                        struct ackq_slot *t = realloc(q->slots, q->max * sizeof *t);
                        if (t)
                                q->slots = t;
                        q->n_alloc = q->max;
                }
                memset(q->slots + old, 0, (q->n_alloc - old) * sizeof *q->slots);
                s = &q->slots[old];
        } else {
                /* Full at max: the oldest slot in rotation goes; the device resends. */
                s = &q->slots[q->evict];
                q->evict = (q->evict + 1) % q->max;
                q->n_used--;
        }
        *s = (struct ackq_slot){ .id = ackq_new_id(q), .seq = seq, .stream = stream, .used = 1 };
        q->n_used++;
        *ret_id = s->id;
        return 0;
}

int ackq_take(struct ackq *q, uint32_t id, uint16_t *ret_stream, uint32_t *ret_seq)
{
        for (size_t i = 0; i < q->n_alloc; i++) {
                struct ackq_slot *s = &q->slots[i];
                if (!s->used || s->id != id)
                        continue;
                *ret_stream = s->stream;
                *ret_seq = s->seq;
                s->used = 0;
                if (--q->n_used == 0)
                        ackq_clear(q);
                return 0;
        }
        return -ENOENT;
}

void ackq_clear(struct ackq *q)
{
        free(q->slots);
        q->slots = NULL;
        q->n_alloc = 0;
        q->n_used = 0;
        q->evict = 0;
}
