/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

struct control;
struct provision;

/* Register cert.show (read) and cert.rotate (admin). */
int provision_ctl_add_commands(struct control *ctl, struct provision *p);
