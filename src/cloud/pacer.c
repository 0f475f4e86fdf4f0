/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "cloud/pacer.h"

int pacer_init(struct pacer *p, unsigned publishes_per_s, uint64_t bytes_per_s, size_t queue_max,
               uint64_t queue_bytes_max, uint64_t now_usec)
{
        *p = (struct pacer){
                .queue_max = queue_max ? queue_max : PACER_QUEUE_MAX,
                .queue_bytes_max = queue_bytes_max ? queue_bytes_max : PACER_QUEUE_BYTES_MAX,
        };
        p->queue = calloc(p->queue_max, sizeof *p->queue);
        if (!p->queue)
                return -ENOMEM;
        /* Bursts of 10 ms worth: over any second the rate stays within ~1 % of the quota. */
        ratelimit_init(&p->pubs, publishes_per_s, publishes_per_s / 100.0, now_usec);
        ratelimit_init(&p->bytes, (double)bytes_per_s, (double)bytes_per_s / 10, now_usec);
        return 0;
}

void pacer_msg_free(struct pacer_msg *m)
{
        free(m->topic);
        free(m->payload);
        *m = (struct pacer_msg){ 0 };
}

void pacer_done(struct pacer *p)
{
        if (!p->queue)
                return;
        while (p->n) {
                pacer_msg_free(&p->queue[p->head]);
                p->head = (p->head + 1) % p->queue_max;
                p->n--;
        }
        free(p->queue);
        p->queue = NULL;
}

static uint64_t delay_for(struct pacer *p, size_t len, uint64_t now)
{
        return MAX(ratelimit_delay(&p->pubs, 1, now),
                   ratelimit_delay(&p->bytes, len ? (double)len : 1, now));
}

static void charge(struct pacer *p, size_t len, uint64_t now)
{
        ratelimit_take(&p->pubs, 1, now);
        ratelimit_take(&p->bytes, (double)len, now);
}

/* Control goes first unless it just had a turn while telemetry was waiting. */
static bool control_first(const struct pacer *p)
{
        return !p->telemetry_waiting || !p->control_turn_used;
}

enum pacer_class pacer_next(struct pacer *p, uint64_t now_usec, uint64_t *ret_delay)
{
        enum pacer_class c;

        if (p->n && control_first(p))
                c = PACER_CONTROL;
        else if (p->telemetry_waiting)
                c = PACER_TELEMETRY;
        else if (p->n)
                c = PACER_CONTROL;
        else {
                *ret_delay = 0;
                return PACER_NONE;
        }
        *ret_delay = delay_for(p, c == PACER_CONTROL ? p->queue[p->head].len : 1, now_usec);
        return c;
}

int pacer_control(struct pacer *p, const char *topic, const void *payload, size_t len,
                  uint64_t now_usec)
{
        struct pacer_msg *m;

        /* Behind what is queued already (FIFO), and only on control's turn. */
        if (!p->n && control_first(p) && delay_for(p, len, now_usec) == 0) {
                charge(p, len, now_usec);
                p->control_turn_used = p->telemetry_waiting;
                p->control_sent++;
                return 1;
        }
        if (p->n == p->queue_max || p->queue_bytes + len > p->queue_bytes_max) {
                p->control_dropped++;
                return -ENOBUFS;
        }
        m = &p->queue[(p->head + p->n) % p->queue_max];
        m->topic = strdup(topic);
        m->payload = malloc(MAX(len, (size_t)1));
        if (!m->topic || !m->payload) {
                pacer_msg_free(m);
                return -ENOMEM;
        }
        memcpy(m->payload, payload, len);
        m->len = len;
        p->n++;
        p->queue_bytes += len;
        p->control_queued++;
        return 0;
}

bool pacer_control_pop(struct pacer *p, uint64_t now_usec, struct pacer_msg *ret)
{
        if (!p->n)
                return false;
        *ret = p->queue[p->head];
        p->queue[p->head] = (struct pacer_msg){ 0 };
        p->head = (p->head + 1) % p->queue_max;
        p->n--;
        p->queue_bytes -= ret->len;
        charge(p, ret->len, now_usec);
        p->control_turn_used = p->telemetry_waiting;
        p->control_sent++;
        return true;
}

bool pacer_telemetry_ask(struct pacer *p, uint64_t now_usec)
{
        if ((p->telemetry_granted || !p->n || !control_first(p)) && delay_for(p, 1, now_usec) == 0)
                return true;
        p->telemetry_waiting = true;
        return false;
}

void pacer_telemetry_sent(struct pacer *p, size_t len, uint64_t now_usec)
{
        charge(p, len, now_usec);
        p->control_turn_used = false;
        p->telemetry_granted = false;
        p->telemetry_sent++;
}

void pacer_telemetry_grant(struct pacer *p, bool on)
{
        if (on)
                p->telemetry_waiting = false;
        p->telemetry_granted = on;
}

size_t pacer_flush(struct pacer *p)
{
        size_t n = p->n;
        while (p->n) {
                pacer_msg_free(&p->queue[p->head]);
                p->head = (p->head + 1) % p->queue_max;
                p->n--;
        }
        p->queue_bytes = 0;
        p->control_dropped += n;
        return n;
}
