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
struct audit_ctl;

/* Registers the commands. Free after control_stop() and the loop run that closes its handles. */
int audit_ctl_new(uv_loop_t *loop, struct audit *audit, struct control *ctl,
                  struct audit_ctl **ret);
void audit_ctl_free(struct audit_ctl *x);
