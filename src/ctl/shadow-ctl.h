/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

struct control;
struct shadow;

/* Register shadow.get (read): what the gateway last saw of a device's shadow. */
int shadow_ctl_add_commands(struct control *ctl, struct shadow *s);
