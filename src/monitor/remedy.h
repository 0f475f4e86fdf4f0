/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"
#include "monitor/metrics.h"
#include "monitor/rules.h"

/*
 * Remediation (docs/monitoring.md): the rules evaluated live on the metrics sampler's deltas,
 * and the actions they and operators take.
 *
 *   alert       audited (`rule.fired`) and published to AlertTopic when the cloud session is up
 *   quarantine  registry state quarantined: the link closes the session at once and refuses
 *               handshakes; auth failures are still counted and audited
 *   throttle    quarantine for Hold= (default: the window), then back to active — unless an
 *               operator changed the state in between
 *   disconnect  the session is closed; the device may handshake again at once
 *
 * Every action is audited with its origin: "daemon" for rules, "cli:uid=N" for mcugwctl,
 * "cloud" for remediation commands received over MQTT (only those allowed by CloudCommands=).
 */

struct audit;
struct registry;
struct link_manager;
struct cloud_session;
/* [Monitor] in the configuration (docs/monitoring.md): the rules and remediation, and the
 * intervals of the metrics sampler, Device Defender and the baseline's drift check. */
struct monitor_options {
        int rules; /* bool: evaluate RulesDirectory */
        char *rules_dir;
        uint64_t metrics_interval_usec;  /* sampling and rule evaluation */
        uint64_t defender_interval_usec; /* 0: no Device Defender reports */
        char *topic_alert;               /* {gateway} */
        char *topic_remediation;         /* {gateway}; results on .../result */
        struct conf_strv cloud_commands; /* remediation commands the cloud may send */
        unsigned cert_expiry_days;       /* `audit config` warns this long before expiry */
        uint64_t drift_check_usec;       /* baseline drift check period; 0: start/reload only */
};

/* CloudCommands= (config_parser_t, field: struct conf_strv): the commands remedy knows. */
int remedy_config_parse_cloud_command(const char *v, void *field, const char **reason);

struct remedy;

/* rs is copied. gateway names the alert topic's {gateway}. */
int remedy_new(uv_loop_t *loop, struct audit *audit, struct registry *reg,
               struct link_manager *link, struct cloud_session *session,
               const struct monitor_options *conf, const char *gateway, const struct rule_set *rs,
               struct remedy **ret);
/* New rules (and AlertTopic) after a reload; windows start again. */
int remedy_update(struct remedy *r, const struct monitor_options *conf, const struct rule_set *rs);
/* Feed from the metrics sampler (metrics_set_listener). */
void remedy_on_delta(void *userdata, const char *device_id, const char *groups,
                     const struct metrics_delta *d, uint64_t now_ms);
void remedy_on_tick(void *userdata, uint64_t now_ms);

/* One remediation command: "quarantine", "release" (restore), "revoke", "disconnect",
 * "rotate-session". Returns 0 or -errno with a message in err. */
int remedy_apply(struct remedy *r, const char *actor, const char *command, const char *device_id,
                 const char *reason, char *err, size_t err_len);
/* A cloud remediation request (JSON {"command","device","reason"?,"id"?}), checked against
 * CloudCommands=; audited as `remedy.cloud` with the outcome either way. Returns 0 or -errno.
 * The daemon receives these on RemediationTopic= and answers on RemediationTopic/result with
 * {"id","command","device","status","error"?}. */
int remedy_cloud_command(struct remedy *r, const uint8_t *payload, size_t len, char *err,
                         size_t err_len);

/* A cloud remediation request, parsed and checked (pure; fuzzed by tests/fuzz/fuzz-remedy.c). */
#define REMEDY_REQUEST_MAX 4096
struct remedy_request {
        char command[16]; /* one of the command names above ("restore" = "release") */
        char device[33];  /* a valid device id */
        char reason[257]; /* "" if none */
        char id[65];      /* the caller's correlation id, "" if none */
};
int remedy_parse_request(const uint8_t *payload, size_t len, struct remedy_request *ret,
                         const char **ret_error);

/* Number of enabled rules (for the baseline check). */
const size_t *remedy_rules_enabled(const struct remedy *r);
/* `rules`: {"rules":[{"name","metric","window_ms","threshold","timeout_ms","actions","match",
 * "group","enabled","file"}], "evaluating", "fired", "devices_tracked", "alerts_published",
 * "alerts_unpublished", "throttled"}. */
json_t *remedy_rules_json(struct remedy *r);
/* Closes the timer; memory goes in its close callback. NULL is fine. */
void remedy_stop(struct remedy *r);
