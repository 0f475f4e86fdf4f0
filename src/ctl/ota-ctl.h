/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

struct control;
struct ota;

/* Register ota.list, ota.show (read), ota.start and ota.abort (admin). */
int ota_ctl_add_commands(struct control *ctl, struct ota *o);
