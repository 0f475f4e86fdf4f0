/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "cloud/options.h"

/*
 * The one cloud session (docs/mqtt.md): it owns the MQTT connection (cloud/mqtt.h), the
 * credentials in use (the provisioning claim or the certificate: the gateway chooses), the
 * hold while on a claim, the subscriptions and their handlers, the session listeners and the
 * pacing of every publish. Every module that talks to the cloud is a client of it: the relay
 * (telemetry from the outbox, device commands), OTA jobs, fleet provisioning, Device Defender,
 * remediation, the shadow.
 *
 * Pacing (cloud/pacer.h): the whole session stays within [Relay] PublishesPerSecond= and
 * BytesPerSecond=. The gateway's own publishes (cloud_session_publish) go first and wait in a
 * bounded queue when the quota is spent; telemetry (cloud_session_telemetry_turn) gets the
 * rest, and at least every other publish while both wait. The retained online/offline status
 * (one per connect, sent by mqtt.c) is the only publish outside the buckets.
 */

struct cloud_session;

/* [MQTT] and [Relay] values of the session (config_parser_t). */
int cloud_session_config_parse_host(const char *v, void *field, const char **reason);     /* strv */
int cloud_session_config_parse_protocol(const char *v, void *field, const char **reason); /* int */
int cloud_session_config_parse_inflight(const char *v, void *field, const char **reason); /* uint */
int cloud_session_config_parse_rate(const char *v, void *field, const char **reason);     /* uint */

/* A fleet-provisioning claim to connect with while CertificateFile=/KeyFile= do not exist yet:
 * the session then carries nothing but provisioning (it starts held). The gateway decides which
 * credentials the session starts with (provision_use_claim()); the session only uses them. */
struct cloud_session_claim {
        const char *cert_file;
        const char *key_file;
};

/* The most subscriptions a session takes (cloud/submap.h): ~10 filters are used today, the
 * shadow adds some per device. Beyond it cloud_session_subscribe() fails with -ENOSPC. */
#define CLOUD_SESSION_MAX_SUBSCRIPTIONS 4096u

/* Creates the session; with [MQTT] Host= it starts connecting in the background, with the claim
 * if one is given, else with the configured certificate. Without Host= it exists but never
 * connects (publishing and subscribing answer -ENOTCONN). */
int cloud_session_new(uv_loop_t *loop, const struct relay_options *o,
                      const struct cloud_session_claim *claim, const char *gateway,
                      struct cloud_session **ret);
/* Start connecting (and keep reconnecting); a no-op without a session. */
int cloud_session_start(struct cloud_session *s);
/* Close the connection and the handles; memory goes in the last close callback. Its clients
 * stop first. */
void cloud_session_stop(struct cloud_session *s);

/* Publish a message of the gateway itself (job updates, stream requests, provisioning, Defender
 * reports, alerts, remediation and command results) on topic, QoS 1. It goes at once when the
 * quota allows, else it waits in a bounded queue ahead of telemetry (a queue that the session
 * going down empties). 0 (sent or queued), -ENOTCONN when there is no session or it is down,
 * -EMSGSIZE over MaxPayload, -EPERM while held (only the fleet provisioning API's topics may be
 * used on a claim), -ENOBUFS when the queue is full (counted in "control_dropped", logged). */
int cloud_session_publish(struct cloud_session *s, const char *topic, const void *payload,
                          size_t len);

/* Messages on a topic matching filter (now and after every reconnect) go to fn. An exact topic
 * is found by a hash lookup, wildcard filters are tried in the order added; the first match
 * gets the message. -ENOTCONN without an MQTT session configured, -EINVAL for a bad filter,
 * -ENOSPC beyond CLOUD_SESSION_MAX_SUBSCRIPTIONS. */
typedef void (*cloud_session_message_fn)(void *userdata, const char *topic, const uint8_t *payload,
                                         size_t len);
int cloud_session_subscribe(struct cloud_session *s, const char *filter,
                            cloud_session_message_fn fn, void *userdata);
/* Messages that no handler takes (the relay counts and explains them). */
void cloud_session_set_unmatched(struct cloud_session *s, cloud_session_message_fn fn,
                                 void *userdata);

/* The session's life: UP after every CONNACK, DOWN when an established connection ends, FAILED
 * when an attempt ends before CONNACK (TLS or broker refusal). Any number of listeners, called
 * in the order added. */
enum cloud_session_event {
        CLOUD_SESSION_UP,
        CLOUD_SESSION_DOWN,
        CLOUD_SESSION_FAILED,
};
typedef void (*cloud_session_fn)(void *userdata, enum cloud_session_event ev);
int cloud_session_add_listener(struct cloud_session *s, cloud_session_fn fn, void *userdata);
/* Drop the handlers and listeners registered with this userdata (their owner goes away first;
 * safe from inside one of its callbacks). */
void cloud_session_forget(struct cloud_session *s, void *userdata);

/* Telemetry, for the relay: the one client that publishes from the outbox. ready() says it is
 * telemetry's turn again after cloud_session_telemetry_turn() said -EAGAIN (or the hold was
 * lifted); published() hands on every PUBACK (mid, reason as in mqtt.h). */
struct cloud_session_telemetry {
        void *userdata;
        void (*ready)(void *userdata);
        void (*published)(void *userdata, int mid, int reason);
};
void cloud_session_set_telemetry(struct cloud_session *s, const struct cloud_session_telemetry *t);
/* May telemetry publish now? 0: yes, publish one with cloud_session_publish_telemetry() and ask
 * again for the next; -EAGAIN: not now (quota, queued control publishes, the hold), ready()
 * follows; -ENOTCONN: not connected (a listener hears UP). */
int cloud_session_telemetry_turn(struct cloud_session *s);
/* Publish one telemetry message after a turn: its tokens are taken; ret_mid for the PUBACK. */
int cloud_session_publish_telemetry(struct cloud_session *s, const char *topic, const void *payload,
                                    size_t len, int *ret_mid);

/* Connected now? */
bool cloud_session_up(struct cloud_session *s);
/* Hold back telemetry and every publish but the fleet provisioning API's (while on a claim),
 * and do not announce the gateway online; false resumes. */
void cloud_session_hold(struct cloud_session *s, bool hold);
/* Switch to another certificate and key (mqtt_set_credentials()). */
int cloud_session_set_credentials(struct cloud_session *s, const char *cert_file,
                                  const char *key_file, bool reconnect, char *err, size_t n);
/* The certificate in use now (NULL without a session). */
const char *cloud_session_cert_file(struct cloud_session *s);
/* Connect now (mqtt_reconnect_now()); -ENOTCONN without a session. */
int cloud_session_reconnect(struct cloud_session *s);
/* The MQTT state as a string ("disabled" without a session). */
const char *cloud_session_state(struct cloud_session *s);
/* mqtt_status_json() and the pacing figures ("control_sent", "control_queued",
 * "control_dropped", "control_waiting", "telemetry_publishes", "subscriptions"); {"state":
 * "disabled"} without a session. */
json_t *cloud_session_status_json(struct cloud_session *s);
