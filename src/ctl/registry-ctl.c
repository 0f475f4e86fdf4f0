/* SPDX-License-Identifier: Apache-2.0 */
/* The device registry's control commands: devices, device.show/add/approve/quarantine/revoke/
 * restore/import/remove/set-key (docs/control-protocol.md). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "basic/macro.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "audit/audit.h"
#include "ctl/registry-ctl.h"
#include "devices/enroll.h"
#include "devices/registry.h"

/* Instants as *_us and ISO 8601 (docs/control-protocol.md, "Times"). */
static json_t *device_json(struct registry *r, const struct registry_device *d)
{
        json_t *o = registry_device_json(r, d);
        if (o)
                ctl_json_add_iso_times(o);
        return o;
}

static int cmd_devices(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        json_t *arr = json_array();
        const char *err, *state = NULL, *group = NULL;
        int want = -1;

        if (json_object_get(args, "state")) {
                if (ctl_arg_string(args, "state", 16, &state, &err) < 0 ||
                    (want = device_state_from_string(state)) < 0)
                        return control_conn_error(c, -EINVAL,
                                                  "unknown state '%s' (valid: pending, active, "
                                                  "quarantined, revoked)",
                                                  state ? state : "");
        }
        if (json_object_get(args, "group") && ctl_arg_string(args, "group", 64, &group, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < registry_count(r, NULL); i++) {
                const struct registry_device *d = registry_get(r, i);
                if (want >= 0 && (int)d->state != want)
                        continue;
                if (group && !registry_device_in_group(d, group))
                        continue;
                json_array_append_new(arr, device_json(r, d));
        }
        *ret = arr;
        return 0;
}

static int get_device(struct registry *r, struct control_conn *c, json_t *args,
                      const struct registry_device **ret)
{
        const char *id, *err;
        if (ctl_arg_string(args, "id", REGISTRY_ID_MAX, &id, &err) < 0)
                return control_conn_error(c, -EINVAL, "a device id is required");
        *ret = registry_find(r, id);
        if (!*ret)
                return control_conn_error(c, -ENOENT, "no device %s", id);
        return 0;
}

/* A device that is not active: who put it in its state, when and why (the newest
 * device.state audit record), so that `device show` answers "who quarantined this?". */
static void add_state_change(struct registry *r, const struct registry_device *d, json_t *o)
{
        json_t *rec = NULL, *det;

        if (d->state == DEVICE_ACTIVE ||
            audit_last(registry_audit(r), "device.state", d->id, &rec) < 0 || !rec)
                return;
        det = json_object_get(rec, "details");
        json_object_set_new(o, "state_change",
                            json_pack("{ss sI ss ss sI}", "actor",
                                      json_string_value(json_object_get(rec, "actor")) ?: "",
                                      "ts_us", json_integer_value(json_object_get(rec, "ts_us")),
                                      "from", json_string_value(json_object_get(det, "from")) ?: "",
                                      "reason",
                                      json_string_value(json_object_get(det, "reason")) ?: "",
                                      "seq", json_integer_value(json_object_get(rec, "seq"))));
        ctl_json_set_iso(json_object_get(o, "state_change"), "ts_us");
        json_decref(rec);
}

static int cmd_device_show(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const struct registry_device *d;
        int q = get_device(r, c, args, &d);
        if (q < 0)
                return q;
        *ret = device_json(r, d);
        add_state_change(r, d, *ret);
        return 0;
}

static int cmd_device_add(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const char *id, *key, *err, *state = "active", *groups = "";
        char joined[REGISTRY_GROUPS_MAX + 1];
        uint8_t k[REGISTRY_KEY_LEN];
        int s, q;

        if (ctl_arg_string(args, "id", 64, &id, &err) < 0)
                return control_conn_error(c, -EINVAL, "a device id is required");
        if (ctl_arg_string(args, "public_key", 64, &key, &err) < 0 ||
            key_from_base64(key, strlen(key), k) < 0)
                return control_conn_error(c, -EINVAL,
                                          "public key must be 44 characters of base64 (32 bytes)");
        if (json_object_get(args, "state") && ctl_arg_string(args, "state", 16, &state, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        if (json_is_array(json_object_get(args, "groups"))) {
                /* As devices and device.show give it (["a", "b"]); "a,b" is accepted too. */
                if (enroll_groups_join(json_object_get(args, "groups"), joined, sizeof joined) < 0)
                        return control_conn_error(c, -EINVAL,
                                                  "groups: a list of names, at most %d "
                                                  "characters in all",
                                                  REGISTRY_GROUPS_MAX);
                groups = joined;
        } else if (json_object_get(args, "groups") &&
                   ctl_arg_string(args, "groups", REGISTRY_GROUPS_MAX, &groups, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        s = device_state_from_string(state);
        if (s != DEVICE_ACTIVE && s != DEVICE_PENDING)
                return control_conn_error(c, -EINVAL, "a new device is active or pending");
        q = registry_add(r, control_conn_peer(c)->actor, id, k, (enum device_state)s, groups, "cli",
                         &err);
        if (q < 0)
                return control_conn_error(c, q, "%s", err);
        *ret = device_json(r, registry_find(r, id));
        return 0;
}

static int set_state(struct control_conn *c, json_t *args, json_t **ret, struct registry *r,
                     enum device_state to)
{
        const struct registry_device *d;
        const char *reason = "", *err;
        int q = get_device(r, c, args, &d);

        if (q < 0)
                return q;
        if (json_object_get(args, "reason") &&
            ctl_arg_string(args, "reason", 200, &reason, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        if (to == DEVICE_ACTIVE && d->state == DEVICE_ACTIVE)
                return control_conn_error(c, -EINVAL, "device %s is already active", d->id);
        q = registry_set_state(r, control_conn_peer(c)->actor, d->id, to, reason, &err);
        if (q < 0)
                return control_conn_error(c, q, "%s", err);
        *ret = device_json(r, d);
        return 0;
}

static int cmd_device_approve(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const struct registry_device *d;
        int q = get_device(r, c, args, &d);
        if (q < 0)
                return q;
        if (d->state != DEVICE_PENDING)
                return control_conn_error(c, -EINVAL, "device %s is %s, not pending", d->id,
                                          device_state_to_string(d->state));
        return set_state(c, args, ret, r, DEVICE_ACTIVE);
}

static int cmd_device_quarantine(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        return set_state(c, args, ret, ud, DEVICE_QUARANTINED);
}

static int cmd_device_revoke(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        return set_state(c, args, ret, ud, DEVICE_REVOKED);
}

static int cmd_device_restore(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const struct registry_device *d;
        int q = get_device(r, c, args, &d);
        if (q < 0)
                return q;
        if (d->state != DEVICE_QUARANTINED)
                return control_conn_error(c, -EINVAL, "device %s is %s, not quarantined", d->id,
                                          device_state_to_string(d->state));
        return set_state(c, args, ret, r, DEVICE_ACTIVE);
}

/* Forget a device (devices.md, "Revocation and removal"); a connected one only with force (a
 * device from DevicesDirectory is refused by the registry whatever its state). */
static int cmd_device_remove(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const struct registry_device *d;
        const char *reason = "", *err;
        char id[REGISTRY_ID_MAX + 1];
        bool force = false;
        int q = get_device(r, c, args, &d);

        if (q < 0)
                return q;
        if (ctl_arg_bool(args, "force", false, &force, &err) < 0 ||
            (json_object_get(args, "reason") &&
             ctl_arg_string(args, "reason", 200, &reason, &err) < 0))
                return control_conn_error(c, -EINVAL, "%s", err);
        if (d->connected && !force && strcmp(d->source, "file") != 0)
                return control_conn_error(c, -EBUSY,
                                          "device %s is connected (on %s): disconnect it first, "
                                          "or remove it with --force",
                                          d->id, d->link);
        snprintf(id, sizeof id, "%s", d->id);
        q = registry_remove(r, control_conn_peer(c)->actor, id, reason, &err);
        if (q < 0)
                return control_conn_error(c, q, "%s", err);
        *ret = json_pack("{ss ss}", "id", id, "done", "removed");
        return 0;
}

static int cmd_device_set_key(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const struct registry_device *d;
        const char *key, *err;
        uint8_t k[REGISTRY_KEY_LEN];
        int q = get_device(r, c, args, &d);

        if (q < 0)
                return q;
        if (ctl_arg_string(args, "public_key", 64, &key, &err) < 0 ||
            key_from_base64(key, strlen(key), k) < 0)
                return control_conn_error(c, -EINVAL,
                                          "public key must be 44 characters of base64 (32 bytes)");
        q = registry_set_key(r, control_conn_peer(c)->actor, d->id, k, &err);
        if (q < 0)
                return control_conn_error(c, q, "%s", err);
        *ret = device_json(r, d);
        return 0;
}

static int cmd_device_import(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct registry *r = ud;
        const char *format, *content, *name = "import", *err;
        struct conf_errors errs = { 0 };
        struct registry_import_result res = { 0 };
        bool update, skip;
        int q;

        if (ctl_arg_string(args, "format", 8, &format, &err) < 0 ||
            (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0))
                return control_conn_error(c, -EINVAL, "format must be csv or json");
        if (ctl_arg_string(args, "content", 64 * 1024 * 1024, &content, &err) < 0)
                return control_conn_error(c, -EINVAL, "the file is empty or not text");
        if (json_object_get(args, "name"))
                ctl_arg_string(args, "name", 255, &name, &err);

        if (ctl_arg_bool(args, "update", false, &update, &err) < 0 ||
            ctl_arg_bool(args, "skip_existing", false, &skip, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        if (update && skip)
                return control_conn_error(c, -EINVAL,
                                          "update and skip_existing exclude each other");
        q = registry_import_text(r, control_conn_peer(c)->actor, format, name, content,
                                 update ? REGISTRY_IMPORT_UPDATE
                                 : skip ? REGISTRY_IMPORT_SKIP_EXISTING
                                        : REGISTRY_IMPORT_NEW,
                                 &res, &errs);
        if (q < 0) {
                char all[900];
                size_t off = 0;
                all[0] = 0;
                for (size_t i = 0; i < errs.n; i++)
                        if (off < sizeof all)
                                off += (size_t)snprintf(all + off, sizeof all - off, "%s%s",
                                                        i ? "; " : "", errs.msgs[i]);
                control_conn_error(c, -EINVAL, "nothing imported, %zu error(s): %s", errs.n, all);
                conf_errors_clear(&errs);
                return -EINVAL;
        }
        *ret = json_pack("{sI sI sI sI}", "imported", (json_int_t)res.added, "updated",
                         (json_int_t)res.updated, "skipped", (json_int_t)res.skipped, "unchanged",
                         (json_int_t)res.unchanged);
        return 0;
}

static const struct control_command registry_commands[] = {
        { "devices", CONTROL_READ, cmd_devices },
        { "device.show", CONTROL_READ, cmd_device_show },
        { "device.add", CONTROL_ADMIN, cmd_device_add },
        { "device.approve", CONTROL_ADMIN, cmd_device_approve },
        { "device.quarantine", CONTROL_ADMIN, cmd_device_quarantine },
        { "device.revoke", CONTROL_ADMIN, cmd_device_revoke },
        { "device.restore", CONTROL_ADMIN, cmd_device_restore },
        { "device.import", CONTROL_ADMIN, cmd_device_import },
        { "device.remove", CONTROL_ADMIN, cmd_device_remove },
        { "device.set-key", CONTROL_ADMIN, cmd_device_set_key },
};

int registry_ctl_add_commands(struct control *ctl, struct registry *r)
{
        return control_add_commands(ctl, registry_commands, ELEMENTSOF(registry_commands), r);
}
