/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <systemd/sd-bus.h>
#include <uv.h>

/*
 * Drive an sd-bus connection from the libuv loop, without threads and without blocking:
 * a uv_poll on sd_bus_get_fd() with the events of sd_bus_get_events(), a uv_timer for
 * sd_bus_get_timeout(), and a uv_prepare that re-arms both before the loop sleeps (so a message
 * queued by sd_bus_call_method_async() anywhere gets written without the caller having to tell
 * us). Each wake-up runs sd_bus_process() until it returns 0, but at most a budget of messages:
 * a peer flooding the bus delays the others by one loop iteration, it cannot monopolise it
 * (sd-bus then reports a zero timeout and we come back right after the other handles ran).
 *
 * When the connection fails (sd_bus_process() < 0, e.g. the bus went away), on_error is called
 * once, outside sd_bus_process(); the owner should then detach and drop the bus.
 */

struct sdbus_uv;
typedef void (*sdbus_uv_error_fn)(void *userdata, int error);

/* Takes a reference on bus. */
int sdbus_uv_attach(uv_loop_t *loop, sd_bus *bus, sdbus_uv_error_fn on_error, void *userdata,
                    struct sdbus_uv **ret);
/* Close the handles and drop the reference on the bus; memory goes in the last close callback.
 * NULL is fine. Safe to call from within on_error or any sd-bus callback. */
void sdbus_uv_detach(struct sdbus_uv *s);
/* Messages handled so far (for status). */
uint64_t sdbus_uv_processed(const struct sdbus_uv *s);
