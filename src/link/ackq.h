/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * The pending-ack table of one link (link.c), no I/O, unit-tested (tests/unit/test-link.c):
 * telemetry handed to the relay and waiting for link_manager_ack(). Sequence numbers are per
 * stream, so an entry is named by its own id (never 0), which goes into the ack token.
 *
 * Most devices have at most one or two messages in flight, so the table is allocated on the
 * first message that asks for an ack, doubled (alloc-util.h) only while every slot is taken, up
 * to `max`, and freed when the last pending ack is answered: an idle device holds none. At `max`
 * the oldest slot in rotation is reused; its ack is lost and the device resends.
 */

struct ackq_slot {
        uint32_t id;
        uint32_t seq;
        uint16_t stream;
        uint8_t used;
};

struct ackq {
        struct ackq_slot *slots;
        size_t n_alloc;   /* slots allocated, 0 while none is pending */
        unsigned n_used;  /* slots taken */
        unsigned max;     /* never more slots than this */
        unsigned evict;   /* the slot reused next when all max are taken */
        uint32_t next_id; /* ids stay unique over the link's life, across frees */
};

/* An empty table of at most @max (≥ 1) slots; allocates nothing. */
void ackq_init(struct ackq *q, unsigned max);

/* Record (stream, seq); *ret_id gets the entry's id. 0, or -ENOMEM with the table unchanged. */
int ackq_add(struct ackq *q, uint16_t stream, uint32_t seq, uint32_t *ret_id);

/* Remove the entry @id and return what it held. 0, or -ENOENT (answered, or reused at max). */
int ackq_take(struct ackq *q, uint32_t id, uint16_t *ret_stream, uint32_t *ret_seq);

/* Free the slots; the table is empty (and may be used again). */
void ackq_clear(struct ackq *q);
