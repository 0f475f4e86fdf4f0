/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <jansson.h>
#include <uv.h>

/*
 * The security baseline (docs/monitoring.md, `mcugwctl audit config`): checks of the running
 * configuration and of the files it names, each finding with a severity; and drift against an
 * accepted snapshot.
 *
 * The snapshot (`mcugwctl audit baseline accept`) holds the configuration hash, the SHA-256 and
 * mode of every key and certificate file, a hash of the enrolled device set (id, key, state,
 * groups) and of the rule files. It is kept in the meta table of the state database and its
 * acceptance is audited. Drift is checked at start, on reload and every DriftCheckInterval;
 * a new or changed drift is audited as `config.drift` (an unchanged one only once).
 */

enum baseline_severity {
        BASELINE_INFO,
        BASELINE_LOW,
        BASELINE_MEDIUM,
        BASELINE_HIGH,
        BASELINE_CRITICAL,
};

const char *baseline_severity_to_string(enum baseline_severity s);

struct link_options;
struct relay_options;
struct provision_options;
struct ota_options;
struct monitor_options;

/* What the baseline looks at: the configuration in effect. The gateway fills it in (pointers into
 * its configuration) and again after every reload. */
struct baseline_config {
        const char *hash; /* of the configuration files */
        char *const *files;
        size_t n_files;
        const char *state_dir;
        const char *devices_dir;
        const char *control_socket;
        mode_t socket_mode;
        const char *admin_group;    /* may be NULL */
        const char *readonly_group; /* may be NULL */
        const struct link_options *link;
        const struct relay_options *mqtt;
        const struct provision_options *provision;
        const struct ota_options *ota;
        const struct monitor_options *monitor;
};

/* [Monitor] CertificateExpiryDays= (config_parser_t, field: unsigned, 0 .. 3650). */
int baseline_config_parse_days(const char *v, void *field, const char **reason);

struct registry;
struct db;
struct audit;

/* Findings for this configuration at time now: a JSON array of {"severity","check","subject",
 * "message"}, most severe first. rules_enabled is the number of enabled rules loaded. */
json_t *baseline_findings(const struct baseline_config *c, struct registry *reg,
                          size_t rules_enabled, time_t now);
/* The current snapshot (a JSON object). */
json_t *baseline_snapshot(const struct baseline_config *c, struct registry *reg);
/* Differences between an accepted and a current snapshot: a JSON array of {"item","accepted",
 * "current"}; empty when nothing drifted. */
json_t *baseline_diff(json_t *accepted, json_t *current);

/* The runtime part: the accepted baseline, the periodic drift check. */
struct baseline;

/* conf and rules_enabled are read at every check (the gateway updates them on reload). */
int baseline_new(uv_loop_t *loop, struct db *db, struct audit *audit, struct registry *reg,
                 const struct baseline_config *conf, const size_t *rules_enabled,
                 struct baseline **ret);
/* Check for drift now (start, reload); audits a new drift. Returns the number of differences. */
int baseline_check_drift(struct baseline *b, const char *why);
/* Re-arm the periodic check after a reload changed DriftCheckInterval. */
void baseline_update(struct baseline *b);
/* `audit config`: {"findings": baseline_findings(), "baseline": {"accepted_us","actor"} or null,
 * "drift": baseline_diff() or null}. NULL on ENOMEM. */
json_t *baseline_report_json(struct baseline *b);
/* Accept the current snapshot as the baseline (stored, audited as audit.baseline_accept);
 * 0 and {"snapshot_sha256","snapshot"} in *ret, or -errno (-ENOMEM, or the database's). */
int baseline_accept(struct baseline *b, const char *actor, json_t **ret);
/* Closes the timer; memory goes in its close callback. NULL is fine. */
void baseline_stop(struct baseline *b);
