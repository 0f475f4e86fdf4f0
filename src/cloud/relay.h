/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"
#include "cloud/outbox.h"

/*
 * The relay (docs/mqtt.md): authenticated MCU telemetry in, MQTT out, cloud commands back down.
 *
 *   relay_submit() ──► outbox (SQLite, group commit) ──► durable_cb ──► the link acks the MCU
 *                          │
 *                          └──► batches (JSON envelope, ≤ MaxPayload, BatchWindow) or one
 *                               publish per message ──► token buckets (publishes/s, bytes/s)
 *                               ──► QoS 1, at most MaxInflight publishes ──► PUBACK deletes rows
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

/* [MQTT] (docs/mqtt.md), [Relay] and [Outbox] in the configuration. */
struct relay_options {
        /* [MQTT] */
        /* Host=host[:port], repeatable: brokers tried in this order (mqtt.h); none: no cloud
         * session (telemetry stays in the outbox) */
        struct conf_strv hosts;
        unsigned port;
        char *client_id;   /* NULL: the gateway name */
        char *server_name; /* SNI and certificate name; NULL: Host */
        char *ca_file;
        char *cert_file;
        char *key_file;      /* a file or a pkcs11: URI */
        char *pkcs11_module; /* the PKCS#11 module for pkcs11: URIs */
        char *alpn;          /* e.g. x-amzn-mqtt-ca for AWS IoT on port 443 */
        int protocol;        /* 4 (3.1.1) or 5 */
        uint64_t keepalive_usec;
        unsigned max_inflight;
        uint64_t reconnect_min_usec, reconnect_max_usec;
        char *topic_status;         /* {gateway} */
        char *topic_batch;          /* {gateway} */
        char *topic_telemetry;      /* {gateway} {device} {stream}, Batching=no */
        char *topic_command;        /* {gateway} {device} (a whole level) */
        char *topic_command_result; /* {gateway} {device} */

        /* [Relay] */
        int batching; /* bool */
        uint64_t batch_window_usec;
        uint64_t max_payload;
        unsigned publishes_per_s; /* 0: unlimited */
        uint64_t bytes_per_s;     /* 0: unlimited */
        uint64_t max_command;     /* MaxCommandSize=: cloud command payload, <= RELAY_COMMAND_MAX */
        /* The largest message the broker may send us (MQTT 5 Maximum Packet Size); the daemon
         * derives it from [OTA] DownloadBlockSize= (stream blocks are the biggest). */
        uint64_t max_packet;

        /* [Outbox] */
        struct outbox_options outbox;
};

/* A command travels in one COMMAND message of the link: its payload, command id (4 bytes) and
 * type (1) in one frame (daemon/conf.c checks this against the wire protocol's MCUGW_MSG_MAX). */
#define RELAY_COMMAND_MAX 987u

/* [MQTT] and [Relay] values (config_parser_t). */
int relay_config_parse_max_command(const char *v, void *field, const char **reason); /* u64 */
int relay_config_parse_protocol(const char *v, void *field, const char **reason);    /* int */
int relay_config_parse_host(const char *v, void *field, const char **reason);        /* conf_strv */
int relay_config_parse_inflight(const char *v, void *field, const char **reason);    /* unsigned */
int relay_config_parse_rate(const char *v, void *field, const char **reason);        /* unsigned */

struct relay;
struct db;
struct audit;

/* Deliver a cloud command to a device: 0, -ENOENT (unknown device: rejected), -ENOTCONN,
 * other -errno. The result comes back through relay_command_result(). */
typedef int (*relay_command_fn)(void *userdata, const char *device_id, uint32_t command_id,
                                const uint8_t *payload, size_t len);

/* A fleet-provisioning claim to connect with while CertificateFile=/KeyFile= do not exist yet:
 * the session then carries nothing but provisioning. The gateway decides which credentials the
 * session starts with (provision_use_claim()); the relay only uses them. */
struct relay_claim {
        const char *cert_file;
        const char *key_file;
};

/* Opens the outbox and, if [MQTT] Host= is set, the session (connecting in the background), with
 * the claim if one is given, else with the configured certificate. */
int relay_new(uv_loop_t *loop, const struct relay_options *o, const struct relay_claim *claim,
              const char *gateway, struct db *db, struct audit *audit, struct relay **ret);
/* Stop publishing, close the session and the handles; memory goes in the last close callback. */
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

/* Publish a message of the gateway itself (alerts, Device Defender reports) on topic, QoS 1,
 * outside the outbox and its pacing: best effort, -ENOTCONN when there is no session or it is
 * down, -EMSGSIZE over MaxPayload. */
int relay_publish(struct relay *r, const char *topic, const void *payload, size_t len);

/* Messages on other topics than the device command topic (Device Defender replies, gateway
 * remediation commands): subscribe to filter (now and after every reconnect) and hand matching
 * messages to fn. -ENOTCONN without an MQTT session configured. At most RELAY_MAX_HANDLERS. */
#define RELAY_MAX_HANDLERS 16
typedef void (*relay_message_fn)(void *userdata, const char *topic, const uint8_t *payload,
                                 size_t len);
int relay_subscribe(struct relay *r, const char *filter, relay_message_fn fn, void *userdata);
/* Drop the handlers registered with this userdata (their owner goes away first). */
void relay_forget_handlers(struct relay *r, void *userdata);

/* The session's life, for fleet provisioning and certificate rotation (provision.h): UP after
 * every CONNACK, DOWN when an established connection ends, FAILED when an attempt ends before
 * CONNACK (TLS or broker refusal). */
enum relay_session_event {
        RELAY_SESSION_UP,
        RELAY_SESSION_DOWN,
        RELAY_SESSION_FAILED,
};
typedef void (*relay_session_fn)(void *userdata, enum relay_session_event ev);
void relay_set_session_listener(struct relay *r, relay_session_fn fn, void *userdata);
/* Connected now? */
bool relay_session_up(struct relay *r);
/* Hold back telemetry from the outbox (while on a provisioning claim); false resumes. While
 * held, relay_publish() refuses (-EPERM) every topic but the fleet provisioning API's, and the
 * session does not announce itself. The relay starts held when it connects with the claim
 * (provision_use_claim()). */
void relay_hold(struct relay *r, bool hold);
/* Switch the session to another certificate and key (mqtt_set_credentials()); the certificate
 * in use now (NULL without a session). */
int relay_set_credentials(struct relay *r, const char *cert_file, const char *key_file,
                          bool reconnect, char *err, size_t n);
const char *relay_cert_file(struct relay *r);
/* Connect the cloud session now (mqtt_reconnect_now()); -ENOTCONN without a session. */
int relay_reconnect(struct relay *r);

/* {"mqtt":{…},"outbox":{…}} parts for the status command. */
json_t *relay_mqtt_status(struct relay *r);
json_t *relay_outbox_status(struct relay *r);
/* The outbox figures of one device (queued, refused, dropped, delivered): -ENOENT if none. */
struct outbox_device_stats;
int relay_device_outbox(struct relay *r, const char *device_id, struct outbox_device_stats *ret);
/* A short line for sd_notify STATUS=, e.g. "mqtt connected, outbox 12 rows". */
void relay_status_line(struct relay *r, char *buf, size_t n);
