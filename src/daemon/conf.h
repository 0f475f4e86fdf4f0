/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "basic/conf-parser.h"
#include "cloud/auditexport.h"
#include "cloud/provision.h"
#include "cloud/relay.h"
#include "cloud/shadow.h"
#include "devices/enroll.h"
#include "devices/onboard.h"
#include "link/ble.h"
#include "link/link.h"
#include "monitor/baseline.h"
#include "monitor/remedy.h"
#include "monitor/rules.h"
#include "ota/ota.h"
#include "store/db.h"

/*
 * Configuration: INI files in systemd style (CamelCase sections and keys), a main file plus sorted
 * drop-ins from FILE.d/NAME.conf; later files override earlier ones key by key. Every key is parsed
 * through one table (conf.c: conf_keys[]) that names its parser, its field and its default; the
 * fields are the option structs of the modules (link_options, relay_options, …), which take
 * nothing but their own. Parsing never stops at the first problem: every error is collected as
 * "file:line: message".
 */

#define CONF_DEFAULT_PATH MCUGW_SYSCONFDIR "/mcugw/mcugw.conf"

struct conf {
        /* [Gateway] */
        char *gateway_name;
        int log_level;

        /* [Paths] */
        char *state_dir;
        char *runtime_dir;
        char *control_socket;
        char *devices_dir;

        /* [Control] */
        mode_t socket_mode;
        char *admin_group;
        char *readonly_group;
        unsigned max_clients;
        uint64_t max_request_bytes;

        struct db_options db; /* [Database] */

        /* [Audit] */
        unsigned refusal_audit_per_min;
        struct auditexport_options audit_export;

        struct link_options link;           /* [Link] */
        struct relay_options relay;         /* [MQTT], [Relay], [Outbox] */
        struct monitor_options monitor;     /* [Monitor] */
        struct ble_options ble;             /* [BLE] */
        struct onboard_options onboarding;  /* [Onboarding] */
        struct ota_options ota;             /* [OTA] */
        struct provision_options provision; /* [Provisioning] */
        struct shadow_options shadow;       /* [Shadow] */

        /* SHA-256 over every file read (names and contents), as hex. */
        char hash[65];
        /* The files that were read, in order. */
        char **files;
        size_t n_files;
        /* After conf_keep_running(): the restart-only keys ("Section.Key") whose value in the
         * files differs from the one in effect. */
        struct conf_strv restart_pending;
};

/* Parse `path` and its drop-ins. On success *ret is a new config; errors are appended to err
 * and -EINVAL returned if there were any (then *ret is untouched). */
int conf_load(const char *path, struct conf **ret, struct conf_errors *err);
/* Parse a single in-memory buffer (for fuzzing and tests); `name` is used in messages. */
int conf_load_string(const char *name, const char *text, struct conf **ret,
                     struct conf_errors *err);
void conf_free(struct conf *c);

/* Keys whose change needs a restart; returns true and names one in *ret_key if b differs. */
bool conf_needs_restart(const struct conf *a, const struct conf *b, const char **ret_key);

/* Turn n, freshly loaded on a reload, into the configuration in effect: every restart-only key
 * whose value differs from the running configuration's keeps the running value (copied), and its
 * name goes to n->restart_pending. Returns the number of such keys or -ENOMEM. */
int conf_keep_running(struct conf *n, const struct conf *running);

/* Everything the daemon reads from its configuration: the config file with its drop-ins, the
 * enrolled devices (DevicesDirectory=), the rules (RulesDirectory=, with Rules=yes) and the
 * trusted manufacturer keys ([Onboarding]). */
struct conf_set {
        struct conf *conf;
        struct enroll_list devices;
        struct rule_set rules;
        struct onboard *onboard;
};

/* Load a whole set, for --check-config, the start and every reload. On failure every problem
 * is in err, -EINVAL (or -ENOMEM) is returned and *ret is untouched. */
int conf_set_load(const char *path, struct conf_set *ret, struct conf_errors *err);
/* Frees what the set still owns (parts taken out are NULL or empty). */
void conf_set_clear(struct conf_set *s);

/* The baseline's view of c (pointers into c: valid while c is). */
void conf_baseline_config(const struct conf *c, struct baseline_config *ret);
