/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"

/*
 * The device shadow (docs/shadow.md): one AWS IoT shadow per MCU, over the gateway's one
 * session.
 *
 *   link/registry events ──► per-device dirty flag ──► one timer, UpdatesPerInterval= publishes
 *                                                      per UpdateInterval=, round robin
 *   …/update/delta, …/get/accepted ──► checked (size, depth, AllowedDesired=) ──► CONFIG over
 *   the link ──► CONFIG_RESULT ──► reported (with the version read) ──► the delta clears
 *
 * Reported state is built when it is sent, from the registry and the facts callback, so what
 * changed while the cloud was away is coalesced: one update per device after reconnect, and
 * none when the document is what the cloud already has. Each device has at most one request
 * outstanding, which keeps the version the gateway knows exact; a 409 re-reads the shadow, a 400
 * or 413 is audited (shadow.rejected) and that document is not sent again.
 *
 * The module knows neither the link nor OTA: the daemon feeds it events and lends it a
 * function that sends CONFIG, and one that adds runtime facts (counters, OTA state).
 */

enum shadow_mode {
        SHADOW_OFF,
        SHADOW_THING_PER_DEVICE, /* the classic shadow of each MCU's own thing */
        SHADOW_GATEWAY,          /* a named shadow per MCU on the gateway's thing */
};

/* The reported fields (Reported=), as bits. */
enum {
        SHADOW_F_CONNECTED = 1 << 0, /* connected, since */
        SHADOW_F_LINK = 1 << 1,
        SHADOW_F_FIRMWARE = 1 << 2,
        SHADOW_F_BOOT = 1 << 3,
        SHADOW_F_RESET = 1 << 4,
        SHADOW_F_LAST_SEEN = 1 << 5,
        SHADOW_F_STATE = 1 << 6,
        SHADOW_F_OTA = 1 << 7,
        SHADOW_F_COUNTERS = 1 << 8,
        SHADOW_F_ALL = (1 << 9) - 1,
};

/* AWS IoT limits (the shadow service's quotas): the whole document, the nesting of a state. */
#define SHADOW_DOC_MAX 8192u
#define SHADOW_DEPTH_MAX 6u
#define SHADOW_NAME_MAX 128u /* a thing name; a named shadow's name is at most 64 */
/* The JSON of one CONFIG or CONFIG_RESULT: MCUGW_CONFIG_MAX of the wire protocol (the daemon
 * checks the two agree). */
#define SHADOW_CONFIG_MAX 985u

/* [Shadow] */
struct shadow_options {
        int mode;                 /* enum shadow_mode */
        char *name_template;      /* thing (thing-per-device) or shadow name; NULL: default */
        unsigned reported;        /* SHADOW_F_* */
        struct conf_strv allowed; /* AllowedDesired=: top-level keys passed to the MCUs */
        unsigned max_depth;       /* MaxDepth=: of a desired value, <= SHADOW_DEPTH_MAX */
        uint64_t update_interval_usec;
        unsigned updates_per_interval;
};

int shadow_config_parse_mode(const char *v, void *field, const char **reason);     /* int */
int shadow_config_parse_reported(const char *v, void *field, const char **reason); /* unsigned */
int shadow_config_parse_template(const char *v, void *field, const char **reason); /* char * */
int shadow_config_parse_key(const char *v, void *field, const char **reason);      /* conf_strv */
int shadow_config_parse_depth(const char *v, void *field, const char **reason);    /* unsigned */
int shadow_config_parse_count(const char *v, void *field, const char **reason);    /* unsigned */
/* The template in effect: NameTemplate= or the mode's default. */
const char *shadow_name_template(const struct shadow_options *o);

struct shadow;
struct cloud_session;
struct registry;
struct audit;

/* Send CONFIG (version, a JSON object) to a connected device: 0, -ENOTCONN, -EMSGSIZE, -ENOBUFS. */
typedef int (*shadow_send_fn)(void *ud, const char *device_id, uint32_t version, const char *json,
                              size_t len);
/* Add runtime facts of a device to its reported object ("link", "counters", "ota"). */
typedef void (*shadow_facts_fn)(void *ud, const char *device_id, unsigned fields, json_t *rep);

int shadow_new(uv_loop_t *loop, const struct shadow_options *o, const char *gateway,
               struct cloud_session *session, struct registry *registry, struct audit *audit,
               struct shadow **ret);
/* Stop the timer, drop the session handlers; memory goes in the close callback. NULL is fine. */
void shadow_stop(struct shadow *s);
void shadow_set_device_io(struct shadow *s, shadow_send_fn send, shadow_facts_fn facts, void *ud);

/* A device's reported state may have changed (session down, STATUS, registry state). */
void shadow_device_changed(struct shadow *s, const char *device_id);
/* A device's session began: its reported state changed, and its desired state is read again so
 * that what changed while it was away reaches it. */
void shadow_device_up(struct shadow *s, const char *device_id);
/* A CONFIG_RESULT from a device (json unchecked). */
void shadow_config_result(struct shadow *s, const char *device_id, uint32_t version, int status,
                          const uint8_t *json, size_t len);

/* What the gateway last saw of a device's shadow (mcugwctl shadow get): -ENOENT if nothing. */
int shadow_device_json(struct shadow *s, const char *device_id, json_t **ret);
/* The "shadow" fields of `device show` (versions, pending delta), added to obj. */
void shadow_decorate(struct shadow *s, const char *device_id, json_t *obj);
/* Counters for the status command. */
json_t *shadow_status_json(struct shadow *s);

/* ---- pure helpers (unit-tested, fuzzed) -------------------------------------------------- */

/* Check a desired state (the "state" of a delta) against the limits: an object, at most
 * max_depth levels, keys in allowed (others go to *ret_refused, an array). *ret_config holds the
 * allowed keys (possibly empty) and fits a CONFIG message (SHADOW_CONFIG_MAX). -EINVAL (not an
 * object, too deep), -EMSGSIZE (too large for CONFIG), with *ret_reason. */
int shadow_desired_check(json_t *state, const struct conf_strv *allowed, unsigned max_depth,
                         json_t **ret_config, json_t **ret_refused, const char **ret_reason);
/* Parse an update/delta message: its version and checked state (shadow_desired_check()). */
int shadow_delta_parse(const void *payload, size_t len, const struct conf_strv *allowed,
                       unsigned max_depth, uint64_t *ret_version, json_t **ret_config,
                       json_t **ret_refused, const char **ret_reason);
/* Parse a CONFIG_RESULT's JSON: an object of at most SHADOW_CONFIG_MAX bytes and max_depth
 * levels; keys not in allowed are dropped (a device reports only what it may be told). */
int shadow_result_parse(const uint8_t *json, size_t len, const struct conf_strv *allowed,
                        unsigned max_depth, json_t **ret_applied, const char **ret_reason);

enum shadow_op {
        SHADOW_OP_GET_ACCEPTED,
        SHADOW_OP_GET_REJECTED,
        SHADOW_OP_UPDATE_ACCEPTED,
        SHADOW_OP_UPDATE_REJECTED,
        SHADOW_OP_UPDATE_DELTA,
};
/* Split a shadow response topic: the thing (thing-per-device) or shadow name (gateway) into
 * ret_name (SHADOW_NAME_MAX + 1) and the operation. -ENOENT if it is none of ours. */
int shadow_topic_parse(int mode, const char *gateway, const char *topic, char *ret_name,
                       enum shadow_op *ret_op);
/* Expand the name template ({gateway}, {device}) and check the result is a valid thing name
 * (1..128 of [A-Za-z0-9:_-]) or, in gateway mode, shadow name (1..64): -EINVAL otherwise. */
int shadow_name(int mode, const char *tmpl, const char *gateway, const char *device, char *out,
                size_t n);
