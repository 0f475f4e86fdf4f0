/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

struct control;
struct registry;

/* Register devices, device.show (read) and device.add/approve/quarantine/revoke/restore/import
 * (admin), which act on the registry. */
int registry_ctl_add_commands(struct control *ctl, struct registry *r);
