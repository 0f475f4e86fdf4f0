/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

struct control;
struct remedy;
struct metrics;
struct baseline;
struct defender;

/* Register rules, metrics, audit.config, defender (read) and device.disconnect,
 * device.rotate-session, audit.baseline.accept, defender.send (admin). */
int monitor_ctl_add_commands(struct control *ctl, struct remedy *remedy, struct metrics *metrics,
                             struct baseline *baseline, struct defender *defender);
