/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>

#include "basic/conf-parser.h"
#include "cloud/outbox.h"

/*
 * The cloud side's configuration, one struct for the table in daemon/conf.c: the session
 * (cloud/session.h) takes [MQTT] and the quotas of [Relay], the relay (cloud/relay.h) the rest
 * of [Relay] and [Outbox].
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
