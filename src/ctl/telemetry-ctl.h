/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct control;

/* Register telemetry.tail (admin): a stream of the telemetry the gateway relays, of every device
 * or of one, for debugging without a broker client (`mcugwctl tail`). */
int telemetry_ctl_add_commands(struct control *ctl);
/* One authenticated telemetry message on its way to the outbox, for the tail subscribers; costs
 * one pass over the connections when there are none. */
void telemetry_ctl_publish(struct control *ctl, const char *device_id, uint16_t stream,
                           uint32_t seq, const uint8_t *payload, size_t len);
