/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"

/*
 * The link manager: the gateway end of every MCU link (docs/protocol.md). It owns the gateway's
 * static X25519 key, the stream listeners and serial ports ([Link] in the configuration), and
 * one struct link per connection or port: deframer, Noise IK responder, bounded output queue,
 * handshake rate limits and timeouts. Devices are admitted through the registry (state active,
 * id matching the key); every handshake outcome is audited (failures rate-limited per link,
 * auth.ok/link.down per device). Connections without a session are limited per source and the
 * oldest goes first when MaxConnections is reached; commands are paced per device.
 *
 * Authenticated telemetry goes to on_telemetry together with an ack token; whoever makes it
 * durable calls link_manager_ack() later. The token names the connection generation and the
 * sequence number, never a pointer: acking a connection that has gone away is a no-op
 * (-ENOTCONN). Without an on_telemetry callback telemetry is counted and acked at once.
 *
 * All on one libuv loop; every fd is a uv_poll handle; no threads.
 */

/* [Link] in the configuration. */
struct link_options {
        char *private_key_file;  /* NULL: <state_dir>/link.key */
        struct conf_strv listen; /* ListenStream=unix:/PATH | tcp:ADDR:PORT */
        struct conf_strv serial; /* SerialPort=/dev/PATH[:BAUD] */
        unsigned max_connections;
        uint64_t handshake_timeout_usec;
        uint64_t idle_timeout_usec;       /* 0: never */
        unsigned handshake_rate;          /* per second, whole gateway */
        unsigned handshake_rate_per_link; /* per second, one link */
        unsigned audit_per_min;           /* auth.failed records per link and minute */
        unsigned max_pending_per_source;  /* unauthenticated connections of one source;
                                           * 0: MaxConnections/4 */
        unsigned session_audit_per_min;   /* auth.ok + link.down records per device/min */
        unsigned commands_per_s;          /* commands sent to one device per second */
        unsigned command_queue;           /* commands waiting for one device */
};

/* [Link] values (config_parser_t): endpoints are checked here so that --check-config reports
 * them with file:line. */
int link_config_parse_listen(const char *v, void *field, const char **reason);
int link_config_parse_serial(const char *v, void *field, const char **reason);
int link_config_parse_max_connections(const char *v, void *field, const char **reason);
int link_config_parse_rate(const char *v, void *field, const char **reason);
int link_config_parse_pending(const char *v, void *field, const char **reason);
int link_config_parse_command_queue(const char *v, void *field, const char **reason);

struct audit;
struct registry;
struct link_manager;
struct mcugw_msg;

/* A token of 0 means "no acknowledgement requested". */
typedef void (*link_telemetry_fn)(void *ud, const char *device_id, uint16_t stream, uint32_t seq,
                                  uint8_t flags, const uint8_t *payload, size_t len,
                                  uint64_t ack_token);
typedef void (*link_command_result_fn)(void *ud, const char *device_id, uint32_t command_id,
                                       int status, const uint8_t *payload, size_t len);
/* A command accepted by link_manager_send_command() (queued) that will never reach the device:
 * -ENOTCONN (it went away), -EMSGSIZE (over its receive limit), -EIO. */
typedef void (*link_command_failed_fn)(void *ud, const char *device_id, uint32_t command_id,
                                       int error);

/* A message of the OTA range (0x20..0x2f) from an authenticated device; m->u.raw is the body. */
typedef void (*link_ota_fn)(void *ud, const char *device_id, const struct mcugw_msg *m);

struct link_callbacks {
        void *ud;
        link_telemetry_fn on_telemetry;
        link_command_result_fn on_command_result;
        link_command_failed_fn on_command_failed;
};

/* Load (or create) the key (in state_dir unless PrivateKeyFile= names it), open the listeners
 * and serial ports of o. registry may be NULL (every device is then refused as unknown). */
int link_manager_new(uv_loop_t *loop, const struct link_options *o, const char *state_dir,
                     struct audit *audit, struct registry *registry, struct link_manager **ret);
/* Close every link, listener and port; memory goes in the last close callback. NULL is fine. */
void link_manager_stop(struct link_manager *m);
void link_manager_set_callbacks(struct link_manager *m, const struct link_callbacks *cb);

/* Send the ACK for telemetry handed out with this token: 0, -ENOTCONN when the connection or
 * session is gone, -ENOENT when the token is unknown (already acked or evicted), -EINVAL. */
int link_manager_ack(struct link_manager *m, uint64_t ack_token, int status);
/* Send a COMMAND to a connected device: 0 (sent, or queued behind others: CommandsPerSecond=
 * per device, and only while its output queue has room), -ENOTCONN, -EMSGSIZE, -EIO, -ENOBUFS
 * (its queue of CommandQueue= commands is full: busy, try later). A queued command that fails
 * later is reported through on_command_failed. */
int link_manager_send_command(struct link_manager *m, const char *device_id, uint32_t command_id,
                              const uint8_t *payload, size_t len);
/* Messages of the OTA range go to this handler (the OTA engine); without one they are counted
 * as unhandled. Separate from link_callbacks so the two owners do not overwrite each other. */
/* Trusted manufacturer keys for just-in-time onboarding of unknown devices (NULL: none). The
 * caller keeps o alive and may swap it on reload. */
struct onboard;
void link_manager_set_onboard(struct link_manager *m, struct onboard *o);
void link_manager_set_ota_handler(struct link_manager *m, link_ota_fn fn, void *ud);
/* CONFIG_RESULT messages (the answer to a CONFIG from the device shadow) go to this handler:
 * version and status as sent, json the device's bytes (unchecked). One owner, like OTA. */
typedef void (*link_config_result_fn)(void *ud, const char *device_id, uint32_t version, int status,
                                      const uint8_t *json, size_t len);
void link_manager_set_config_handler(struct link_manager *m, link_config_result_fn fn, void *ud);
/* Send any message to a connected device (OTA): 0, -ENOTCONN, -EMSGSIZE (too big for the
 * device's receive limit), -ENOBUFS (output queue full: try again later). */
int link_manager_send(struct link_manager *m, const char *device_id, const struct mcugw_msg *msg);
/* Bytes waiting in the output queue of the device's link (0 if none or not connected). */
size_t link_manager_queued(struct link_manager *m, const char *device_id);
/* The largest message (DATA plaintext) the connected device can receive: its receive limit from
 * handshake message 1 minus the DATA overhead. 0 if it is not connected. */
size_t link_manager_msg_room(struct link_manager *m, const char *device_id);

/* A device's output queue counts as drained when, having held LINK_QUEUE_LOW bytes or more (or
 * having refused a message with -ENOBUFS), it falls below LINK_QUEUE_LOW again. A producer that
 * stops sending at this mark is called back by on_drained instead of polling. */
#define LINK_QUEUE_LOW (8u * 1024u)

/* Session events, for whoever keeps work per device (the OTA engine, later the device shadow),
 * so that nobody polls link_manager_device_connected() or link_manager_queued(). Any callback
 * may be NULL. They run on the loop, synchronously, in the order the listeners were added; also
 * from inside link_manager_send() and friends (a write error ends the session), so a callback
 * must not rely on state it read before its own send. A callback may remove its own listener,
 * not another one.
 *
 * on_up: an authenticated session began (not for a rekey of the same device's session; a
 * takeover from another link is on_down, then on_up). on_down: the session is gone (connection
 * closed, kicked, timed out, a serial port reset), with the reason as audited in link.down.
 * on_drained: see LINK_QUEUE_LOW; queued is what is still waiting. on_status: what the registry
 * says of the device changed: it sent STATUS (firmware, boot counter, reset cause), or its state
 * changed (also while it is not connected). */
struct link_listener {
        void *ud;
        void (*on_up)(void *ud, const char *device_id);
        void (*on_down)(void *ud, const char *device_id, const char *reason);
        void (*on_drained)(void *ud, const char *device_id, size_t queued);
        void (*on_status)(void *ud, const char *device_id);
        struct link_listener *next; /* the link manager's, while added */
};
/* Add a listener (the caller owns it and keeps it alive until it is removed, or the manager is
 * stopped). Adding one twice is a no-op. */
void link_manager_add_listener(struct link_manager *m, struct link_listener *ls);
/* Remove a listener; one that is not added is ignored. NULL m is fine. */
void link_manager_remove_listener(struct link_manager *m, struct link_listener *ls);
/* The counters of one device without building JSON, for the metrics sampler (metrics.c), which
 * reads every device every MetricsInterval. -ENOENT if never seen. */
struct link_device_counters {
        uint64_t frames_in, frames_out, bytes_in, bytes_out, telemetry, handshakes;
        uint64_t auth_failures, mac_errors, crc_errors, cobs_errors, replays, truncated;
        uint64_t oversize, malformed, tx_dropped, takeovers, commands, commands_busy;
        uint64_t dup;       /* exact duplicates inside the replay window: harmless */
        uint64_t replay_ts; /* messages 1 refused: timestamp not newer than the last answered */
        int64_t last_seen_us;
        bool connected;
};
int link_manager_device_counters(struct link_manager *m, const char *device_id,
                                 struct link_device_counters *ret);
/* Add the link counters of one device to out (an object). -ENOENT if never seen. */
int link_manager_device_stats(struct link_manager *m, const char *device_id, json_t *out);
/* Gateway totals, listeners and ports, the public key (a new object). */
json_t *link_manager_status(struct link_manager *m);
/* Base64 of the gateway's static public key (44 characters). */
const char *link_manager_public_key(const struct link_manager *m);
bool link_manager_device_connected(struct link_manager *m, const char *device_id);
/* Remediation (remedy.c): end a connected device's session at once — a stream connection is
 * closed, a serial port's session reset — so that it must handshake again. 0, -ENOTCONN. */
int link_manager_disconnect(struct link_manager *m, const char *device_id, const char *reason);
/* Adopt an already connected stream fd as a link (tests, benchmarks, socket activation). */
int link_manager_adopt_fd(struct link_manager *m, int fd, const char *name);

/* ---- pure helpers (unit-tested) ---------------------------------------------------------- */

/* Read a key file holding base64 of a 32-byte X25519 private key. The file must be a regular
 * file not readable or writable by group or others: -EPERM otherwise (*ret_mode tells the
 * mode; with the file type bits when it is not a regular file). -ENOENT if absent, -EBADMSG if
 * malformed, -EFBIG if far too large. A FIFO or device is never opened blocking. */
int link_key_load(const char *path, uint8_t priv[32], unsigned *ret_mode);
/* Create a new key file (mode 0600, O_EXCL) with a fresh key. */
int link_key_create(const char *path, uint8_t priv[32]);

/* Ack tokens: connection generation (never 0) and the id of the link's pending-ack slot (never
 * 0; sequence numbers alone are not unique: they are per stream). */
static inline uint64_t link_token_make(uint32_t gen, uint32_t slot_id)
{
        return ((uint64_t)gen << 32) | slot_id;
}
