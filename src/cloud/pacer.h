/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/ratelimit.h"

/*
 * Who publishes next on the cloud session, and when: pure code, the caller passes the time (µs of
 * a monotonic clock) and does the publishing (cloud/session.c). docs/mqtt.md, "Pacing".
 *
 * Two token buckets hold the session as a whole to [Relay] PublishesPerSecond= and
 * BytesPerSecond=. Two classes of publishes share them:
 *   - control: the gateway's own (job updates, stream requests, provisioning, Defender reports,
 *     alerts, remediation and command results). They take precedence: one goes at once when
 *     the buckets allow, otherwise a copy waits in a bounded FIFO (PACER_QUEUE_MAX messages,
 *     PACER_QUEUE_BYTES_MAX bytes; beyond that it is refused and counted as dropped);
 *   - telemetry: the outbox (the relay), which asks for a turn and publishes what it is given.
 * When both wait, they alternate: a control publish that went while telemetry waited is
 * followed by a telemetry one, so telemetry gets at least half of the publishes however many
 * command results pile up, and control never waits behind more than one telemetry publish.
 */

#define PACER_QUEUE_MAX 4096u
#define PACER_QUEUE_BYTES_MAX (8u << 20)

struct pacer_msg {
        char *topic;
        uint8_t *payload;
        size_t len;
};

struct pacer {
        struct ratelimit pubs, bytes;
        struct pacer_msg *queue; /* ring of queue_max */
        size_t queue_max, head, n;
        uint64_t queue_bytes, queue_bytes_max;
        bool telemetry_waiting;
        bool control_turn_used; /* the last publish was control, taken while telemetry waited */
        bool telemetry_granted;

        uint64_t control_sent, control_queued, control_dropped, telemetry_sent;
};

enum pacer_class {
        PACER_NONE,
        PACER_CONTROL,
        PACER_TELEMETRY,
};

/* rate 0: unlimited. queue_max, queue_bytes_max: 0 for the defaults above. */
int pacer_init(struct pacer *p, unsigned publishes_per_s, uint64_t bytes_per_s, size_t queue_max,
               uint64_t queue_bytes_max, uint64_t now_usec);
/* Frees what is queued (not counted as dropped). */
void pacer_done(struct pacer *p);

/* A control publish: 1 if it may go now (its tokens are taken), 0 if a copy was queued (it goes
 * when pacer_next() says PACER_CONTROL), -ENOBUFS if the queue is full (counted in
 * control_dropped), -ENOMEM. */
int pacer_control(struct pacer *p, const char *topic, const void *payload, size_t len,
                  uint64_t now_usec);
/* Telemetry asks to publish: true if it may now (then pacer_telemetry_sent() for each publish);
 * false marks it waiting: pacer_next() will say PACER_TELEMETRY when its turn comes. */
bool pacer_telemetry_ask(struct pacer *p, uint64_t now_usec);
void pacer_telemetry_sent(struct pacer *p, size_t len, uint64_t now_usec);
/* pacer_next() said PACER_TELEMETRY: grant(true) before telling telemetry (it is no longer
 * waiting, and its next ask is answered yes), grant(false) after. One telemetry publish ends the
 * grant; asking again then waits behind queued control publishes. */
void pacer_telemetry_grant(struct pacer *p, bool on);

/* What goes next and in how many µs (*ret_delay; 0: now). PACER_NONE: nothing waits. */
enum pacer_class pacer_next(struct pacer *p, uint64_t now_usec, uint64_t *ret_delay);
/* Take the head of the control queue, charging its tokens: the caller publishes and frees it
 * (pacer_msg_free). false if the queue is empty. */
bool pacer_control_pop(struct pacer *p, uint64_t now_usec, struct pacer_msg *ret);
void pacer_msg_free(struct pacer_msg *m);
/* Drop everything queued (the session went down); returns how many, counted as dropped. */
size_t pacer_flush(struct pacer *p);
