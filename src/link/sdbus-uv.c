/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "basic/time-util.h"
#include "link/sdbus-uv.h"

#define SDBUS_UV_BUDGET 256 /* messages per wake-up */

struct sdbus_uv {
        uv_poll_t poll;
        uv_timer_t timer;
        uv_prepare_t prepare;
        sd_bus *bus;
        sdbus_uv_error_fn on_error;
        void *userdata;
        int fd;
        int events;        /* UV_* currently armed, 0 for none */
        uint64_t timer_at; /* absolute µs armed, UINT64_MAX for none */
        unsigned open_handles;
        uint64_t processed;
        bool closing, failed, in_process;
};

static void sdbus_uv_fail(struct sdbus_uv *s, int r)
{
        if (s->failed || s->closing)
                return;
        s->failed = true;
        uv_poll_stop(&s->poll);
        uv_timer_stop(&s->timer);
        if (s->on_error)
                s->on_error(s->userdata, r);
}

static void sdbus_uv_process(struct sdbus_uv *s)
{
        int r = 0;

        if (s->closing || s->failed)
                return;
        s->in_process = true;
        sd_bus_ref(s->bus);
        for (int i = 0; i < SDBUS_UV_BUDGET && !s->closing; i++) {
                r = sd_bus_process(s->bus, NULL);
                if (r <= 0)
                        break;
                s->processed++;
        }
        s->in_process = false;
        /* on_error may detach us and drop the owner's reference: keep ours until here. */
        if (r < 0 && !s->closing)
                sdbus_uv_fail(s, r);
        sd_bus_unref(s->bus);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
        sdbus_uv_process(h->data);
}

static void on_timer(uv_timer_t *h)
{
        struct sdbus_uv *s = h->data;
        s->timer_at = UINT64_MAX;
        sdbus_uv_process(s);
}

/* Before the loop sleeps: arm the poll and the timer with what sd-bus wants now. */
static void on_prepare(uv_prepare_t *h)
{
        struct sdbus_uv *s = h->data;
        uint64_t t = UINT64_MAX, now;
        int ev, uvev = 0, r;

        if (s->closing || s->failed)
                return;
        ev = sd_bus_get_events(s->bus);
        if (ev < 0) {
                sdbus_uv_fail(s, ev);
                return;
        }
        if (ev & POLLIN)
                uvev |= UV_READABLE;
        if (ev & POLLOUT)
                uvev |= UV_WRITABLE;
        if (uvev != s->events) {
                r = uvev ? uv_poll_start(&s->poll, uvev, on_poll) : uv_poll_stop(&s->poll);
                if (r < 0) {
                        sdbus_uv_fail(s, -EIO);
                        return;
                }
                s->events = uvev;
        }
        r = sd_bus_get_timeout(s->bus, &t);
        if (r < 0) {
                sdbus_uv_fail(s, r);
                return;
        }
        if (t == s->timer_at)
                return;
        s->timer_at = t;
        if (t == UINT64_MAX) {
                uv_timer_stop(&s->timer);
                return;
        }
        now = now_monotonic_usec();
        uv_timer_start(&s->timer, on_timer, t > now ? (t - now + 999) / 1000 : 0, 0);
}

static void on_closed(uv_handle_t *h)
{
        struct sdbus_uv *s = h->data;
        if (--s->open_handles)
                return;
        sd_bus_unref(s->bus);
        free(s);
}

int sdbus_uv_attach(uv_loop_t *loop, sd_bus *bus, sdbus_uv_error_fn on_error, void *userdata,
                    struct sdbus_uv **ret)
{
        struct sdbus_uv *s;
        int fd = sd_bus_get_fd(bus), r;

        if (fd < 0)
                return fd;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        r = uv_poll_init(loop, &s->poll, fd);
        if (r < 0) {
                free(s);
                return r;
        }
        uv_timer_init(loop, &s->timer);
        uv_prepare_init(loop, &s->prepare);
        s->poll.data = s->timer.data = s->prepare.data = s;
        s->open_handles = 3;
        s->bus = sd_bus_ref(bus);
        s->fd = fd;
        s->events = 0;
        s->timer_at = UINT64_MAX;
        s->on_error = on_error;
        s->userdata = userdata;
        uv_prepare_start(&s->prepare, on_prepare);
        *ret = s;
        return 0;
}

void sdbus_uv_detach(struct sdbus_uv *s)
{
        if (!s || s->closing)
                return;
        s->closing = true;
        uv_close((uv_handle_t *)&s->poll, on_closed);
        uv_close((uv_handle_t *)&s->timer, on_closed);
        uv_close((uv_handle_t *)&s->prepare, on_closed);
}

uint64_t sdbus_uv_processed(const struct sdbus_uv *s)
{
        return s ? s->processed : 0;
}
