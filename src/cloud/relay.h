/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"
#include "cloud/options.h"
#include "cloud/outbox.h"
#include "cloud/session.h"

/*
 * The relay (docs/mqtt.md): authenticated MCU telemetry in, MQTT out, cloud commands back down.
 *
 *   relay_submit() ──► outbox (SQLite, group commit) ──► durable_cb ──► the link acks the MCU
 *                          │
 *                          └──► batches (JSON envelope, ≤ MaxPayload, BatchWindow) or one
 *                               publish per message ──► a turn of the session's pacing
 *                               (cloud/session.h: publishes/s, bytes/s, the gateway's own
 *                               publishes first) ──► QoS 1, at most MaxInflight publishes
 *                               ──► PUBACK deletes rows
 *
 * Only rows from the outbox are published, in id order, so what is left after a crash goes out
 * first and every device's messages in its order; outbox ids are fair-queueing tags, so the
 * devices take turns (one device's backlog does not delay the others). At most MaxInflight
 * publishes are outstanding: the backlog stays on disk, not in memory.
 *
 * Authorization: a device only ever publishes into topics expanded with the id the link
 * authenticated (the device_id argument), never one taken from the payload; commands are taken
 * only from the command topic of a device id and handed to on_command, which refuses unknown
 * devices (cmd.rejected).
 */

/* A command travels in one COMMAND message of the link: its payload, command id (4 bytes) and
 * type (1) in one frame (daemon/conf.c checks this against the wire protocol's MCUGW_MSG_MAX). */
#define RELAY_COMMAND_MAX 987u

/* [Relay] MaxCommandSize= (config_parser_t, u64). */
int relay_config_parse_max_command(const char *v, void *field, const char **reason);

struct relay;
struct db;
struct audit;

/* Deliver a cloud command to a device: 0, -ENOENT (unknown device: rejected), -ENOTCONN,
 * other -errno. The result comes back through relay_command_result(). */
typedef int (*relay_command_fn)(void *userdata, const char *device_id, uint32_t command_id,
                                const uint8_t *payload, size_t len);

/* Opens the outbox and becomes a client of the session: it subscribes to the command topic,
 * takes the messages nothing else subscribed to (counted, logged once per topic) and publishes
 * telemetry in the turns the session's pacing gives it. */
int relay_new(uv_loop_t *loop, const struct relay_options *o, struct cloud_session *session,
              const char *gateway, struct db *db, struct audit *audit, struct relay **ret);
/* Stop publishing, leave the session (which stays), close the handles; memory goes in the last
 * close callback. */
void relay_stop(struct relay *r);

void relay_set_command_handler(struct relay *r, relay_command_fn fn, void *userdata);

/* Queue one message of an authenticated device. durable_cb(userdata, 0) runs after the group
 * commit that made it durable (or with -errno if that commit failed); it is not called when
 * relay_submit itself fails (-EINVAL bad device id, -EMSGSIZE too big for MaxPayload, -EIO). */
int relay_submit(struct relay *r, const char *device_id, uint16_t stream, uint32_t seq,
                 const uint8_t *payload, size_t len, void (*durable_cb)(void *ud, int status),
                 void *userdata);

/* Publish the result of a command on the device's result topic (audited as cmd.result). */
int relay_command_result(struct relay *r, const char *device_id, uint32_t command_id, int status,
                         const uint8_t *payload, size_t len);

/* Publish the result of a command the gateway could not deliver: error is a negative errno
 * (-ENOTCONN device-offline, -EMSGSIZE too-large, -ENOBUFS busy, ...), audited as cmd.result
 * with actor daemon. */
int relay_command_failed(struct relay *r, const char *device_id, uint32_t command_id, int error);

/* {"mqtt":{…},"outbox":{…}} parts for the status command: "mqtt" is the session's
 * (cloud_session_status_json()) with the relay's counters. */
json_t *relay_mqtt_status(struct relay *r);
json_t *relay_outbox_status(struct relay *r);
/* The outbox figures of one device (queued, refused, dropped, delivered): -ENOENT if none. */
struct outbox_device_stats;
int relay_device_outbox(struct relay *r, const char *device_id, struct outbox_device_stats *ret);
/* A short line for sd_notify STATUS=, e.g. "mqtt connected, outbox 12 rows". */
void relay_status_line(struct relay *r, char *buf, size_t n);
