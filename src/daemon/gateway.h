/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <uv.h>

#include "daemon/conf.h"

/*
 * The daemon object: owns the loop's long-lived parts and starts them in an explicit order
 * (database, audit log, control socket, signals, watchdog), stopping them in reverse.
 */

struct gateway;

/* Takes everything set holds (conf_set_load()); the set is empty afterwards, on failure too.
 * config_path is re-read on SIGHUP / `reload`. */
int gateway_new(uv_loop_t *loop, const char *config_path, struct conf_set *set,
                struct gateway **ret);
/* Run the loop until SIGTERM/SIGINT; returns 0 or -errno. */
int gateway_run(struct gateway *gw);
/* After gateway_run(): should the daemon start again (provisioning named its thing)? */
bool gateway_restart_requested(struct gateway *gw);
/* Frees everything; the loop must then close cleanly. */
void gateway_free(struct gateway *gw);

struct relay;
/* The relay (the outbox and its client of the cloud session), for front ends such as test
 * drivers. */
struct relay *gateway_relay(struct gateway *gw);
