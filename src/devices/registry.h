/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "audit/audit.h"
#include "store/db.h"
#include "devices/enroll.h"

/*
 * The device registry: every MCU the gateway may talk to, by id and X25519 static public key,
 * kept in the state database. Fed from DevicesDirectory (/etc/mcugw/devices.d/NAME.conf,
 * [Device] sections) at start and reload, and from mcugwctl (device add/approve/quarantine/
 * revoke/import). Only public keys are stored: a stolen database lets nobody impersonate a device.
 * Every change is audited; listeners hear about state changes so that quarantining or revoking a
 * connected device takes effect at once.
 */

#define REGISTRY_ID_MAX ENROLL_ID_MAX
#define REGISTRY_KEY_LEN ENROLL_KEY_LEN
#define REGISTRY_GROUPS_MAX ENROLL_GROUPS_MAX
#define REGISTRY_FW_MAX 32

struct registry_device {
        char id[REGISTRY_ID_MAX + 1];
        uint8_t pubkey[REGISTRY_KEY_LEN];
        enum device_state state;
        char groups[REGISTRY_GROUPS_MAX + 1]; /* comma separated */
        char source[16];                      /* "file", "cli", "import", "onboarding" */
        char fw_version[REGISTRY_FW_MAX + 1];
        uint32_t boot_counter;
        uint8_t reset_cause;
        int64_t last_seen_us; /* 0: never */
        char link[64];        /* the link it was last seen on */
        bool connected;
};

struct audit;
struct registry;

typedef void (*registry_state_fn)(void *userdata, const struct registry_device *dev,
                                  enum device_state old_state);

int registry_open(struct db *db, struct audit *audit, struct registry **ret);
void registry_free(struct registry *r);

/* Look up by id or by public key (constant-time key comparison). NULL if unknown. */
const struct registry_device *registry_find(struct registry *r, const char *id);
const struct registry_device *registry_find_key(struct registry *r,
                                                const uint8_t key[REGISTRY_KEY_LEN]);

/* Called on every state change (from any source). One listener: the link manager. */
void registry_set_listener(struct registry *r, registry_state_fn fn, void *userdata);

/* Runtime facts reported by the link: connected/disconnected, last seen, device status. */
void registry_set_connected(struct registry *r, const char *id, bool connected, const char *link);
void registry_touch(struct registry *r, const char *id, int64_t now_us);
void registry_set_status(struct registry *r, const char *id, const char *fw_version,
                         uint32_t boot_counter, uint8_t reset_cause);

/* Changes; actor is an audit actor ("cli:uid=0", "daemon", "cloud"). Return 0 or -errno with a
 * message in *ret_error (static or in the registry, valid until the next call). */
int registry_add(struct registry *r, const char *actor, const char *id,
                 const uint8_t key[REGISTRY_KEY_LEN], enum device_state state, const char *groups,
                 const char *source, const char **ret_error);
int registry_set_state(struct registry *r, const char *actor, const char *id,
                       enum device_state state, const char *reason, const char **ret_error);

/* Replace a device's key (its state stays); a session under the old key is closed. Refused for
 * a device enrolled from DevicesDirectory (the file is the truth there). Audited as
 * device.key_changed. */
int registry_set_key(struct registry *r, const char *actor, const char *id,
                     const uint8_t key[REGISTRY_KEY_LEN], const char **ret_error);
/* Forget a device: its row goes, its session is closed, its audit history stays (one more
 * record, device.removed). The id and the key may be enrolled again afterwards. Refused for a
 * device enrolled from DevicesDirectory. */
int registry_remove(struct registry *r, const char *actor, const char *id, const char *reason,
                    const char **ret_error);

/* Bring the file-sourced devices in line with DevicesDirectory: add new ones, update keys and
 * groups, revoke the ones no longer listed. States changed by an operator are kept. */
int registry_sync_files(struct registry *r, const struct enroll_list *files);
/* What a bulk import does with an entry whose id is enrolled already: refuse the whole file
 * (NEW), leave the device as it is (SKIP_EXISTING), or give it the entry's key and groups
 * (UPDATE; its state stays, a new key ends its session). So importing a file twice is no error. */
enum registry_import_mode {
        REGISTRY_IMPORT_NEW,
        REGISTRY_IMPORT_SKIP_EXISTING,
        REGISTRY_IMPORT_UPDATE,
};
struct registry_import_result {
        size_t added, updated, skipped, unchanged;
};
/* All-or-nothing bulk add (one transaction); errors name the entry's line. res may be NULL. */
int registry_import(struct registry *r, const char *actor, const char *source,
                    const struct enroll_list *list, enum registry_import_mode mode,
                    struct registry_import_result *res, struct conf_errors *err);

json_t *registry_device_to_json(const struct registry_device *d);
/* A normalised group list ("a,b") as a JSON array (["a", "b"]), as every JSON the gateway
 * builds carries it. */
json_t *registry_groups_json(const char *groups);
/* Number of devices; counts[state] per state if counts is not NULL. */
size_t registry_count(struct registry *r, size_t counts[_DEVICE_STATE_MAX]);
/* Iterate: returns the i-th device or NULL past the end. */
const struct registry_device *registry_get(struct registry *r, size_t i);

/* Adds runtime facts (the link's counters) to a device's JSON in `devices`/`device show`. */
typedef void (*registry_decorate_fn)(void *userdata, const char *id, json_t *obj);
void registry_set_decorator(struct registry *r, registry_decorate_fn fn, void *userdata);

/* A device's JSON (registry_device_to_json()) with the runtime facts the decorator adds. */
json_t *registry_device_json(struct registry *r, const struct registry_device *d);
/* True if group is one of the device's comma-separated groups. */
bool registry_device_in_group(const struct registry_device *d, const char *group);
/* The audit log the registry writes to (for who changed a device's state, and why). */
struct audit *registry_audit(struct registry *r);
/* Parse an enrollment file's text (format "csv" or "json") and import it all or nothing
 * (registry_import()); what was done in *res. A failure is audited as device.import_failed with
 * every error, which are left in err. */
int registry_import_text(struct registry *r, const char *actor, const char *format,
                         const char *name, const char *content, enum registry_import_mode mode,
                         struct registry_import_result *res, struct conf_errors *err);
