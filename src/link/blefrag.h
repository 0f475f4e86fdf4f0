/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Pure helpers of the BLE bridge (ble.c), no I/O, unit-tested (tests/unit/test-ble.c).
 *
 * The link protocol is a COBS-framed byte stream (docs/protocol.md), so a stream may be cut
 * anywhere: outgoing bytes are cut into ATT-sized pieces and incoming notifications are simply
 * concatenated again in order; the link's deframer finds the frame boundaries. What matters is
 * that the pieces fit one ATT packet and that nothing a peer controls grows without bound, hence
 * a fixed-capacity byte ring for each direction.
 */

/* ATT_MTU default before an MTU exchange, and the ATT header of a Write Command. */
#define BLEFRAG_ATT_MTU_DEFAULT 23u
#define BLEFRAG_ATT_WRITE_HDR 3u
/* Largest attribute value (Core spec, Vol 3, Part F, 3.2.9). */
#define BLEFRAG_ATT_VALUE_MAX 512u

/* Bytes per write: through WriteValue the value must fit one Write Command (ATT_MTU - 3); the
 * socket of AcquireWrite takes at most the MTU it returned per write (BlueZ already subtracted
 * the header). mtu 0 or below 23 counts as 23. Never more than 512. */
size_t blefrag_payload_max(unsigned mtu, bool acquired_fd);

/* A bounded FIFO of bytes over a caller-provided buffer. */
struct blefrag_ring {
        uint8_t *buf;
        size_t cap;
        size_t head; /* next byte to read */
        size_t len;
};

void blefrag_ring_init(struct blefrag_ring *r, uint8_t *buf, size_t cap);
static inline size_t blefrag_ring_len(const struct blefrag_ring *r)
{
        return r->len;
}
static inline size_t blefrag_ring_space(const struct blefrag_ring *r)
{
        return r->cap - r->len;
}
/* Append all n bytes or none: returns n, or 0 when they do not fit (the caller counts a drop;
 * a notification is never stored in part, so the stream loses whole ATT packets only). */
size_t blefrag_ring_push(struct blefrag_ring *r, const uint8_t *p, size_t n);
/* Append as much as fits; returns the number of bytes taken. */
size_t blefrag_ring_push_some(struct blefrag_ring *r, const uint8_t *p, size_t n);
/* Copy up to n bytes from the front without consuming them; returns the number copied. */
size_t blefrag_ring_peek(const struct blefrag_ring *r, uint8_t *out, size_t n);
/* The contiguous bytes at the front (for write(2) without a copy); returns their number. */
size_t blefrag_ring_front(const struct blefrag_ring *r, const uint8_t **ret);
void blefrag_ring_consume(struct blefrag_ring *r, size_t n);

/* The next piece to send from a ring holding `avail` bytes: min(avail, payload max). */
static inline size_t blefrag_next(size_t avail, unsigned mtu, bool acquired_fd)
{
        size_t m = blefrag_payload_max(mtu, acquired_fd);
        return avail < m ? avail : m;
}

/* Bluetooth device address "AA:BB:CC:DD:EE:FF": validate and upper-case into out[18].
 * Returns 0 or -EINVAL. */
int blefrag_address_normalize(const char *in, char out[18]);
/* 128-bit UUID in the 8-4-4-4-12 form: validate and lower-case into out[37] (BlueZ reports
 * UUIDs in lower case). Returns 0 or -EINVAL. */
int blefrag_uuid_normalize(const char *in, char out[37]);
