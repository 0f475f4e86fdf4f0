/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <uv.h>

/*
 * The audit commands of the control socket (docs/control-protocol.md): `audit.tail`, whose reply
 * of up to 100000 records goes out in chunks as the client reads it (and, with `follow`, turns
 * into a stream of new records), and `audit.verify`, which walks the hash chain a slice per loop
 * turn and is limited for the read-only tier: one walk per user at a time, a pause between walks,
 * at most two read-only walks in all, and their audit records coalesced.
 */

struct audit;
struct control;
struct ctlaudit;

/* Registers the commands. Free after control_stop() and the loop run that closes its handles. */
int ctlaudit_new(uv_loop_t *loop, struct audit *audit, struct control *ctl, struct ctlaudit **ret);
void ctlaudit_free(struct ctlaudit *x);
