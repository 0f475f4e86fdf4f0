/* SPDX-License-Identifier: Apache-2.0 */
/* The OTA engine's control commands (docs/control-protocol.md, docs/ota.md). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "basic/macro.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "ctl/ota-ctl.h"
#include "ota/ota.h"

static int cmd_list(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct ota *o = ud;

        *ret = ota_job_list_json(o);
        ctl_json_add_iso_times(*ret);
        return 0;
}

static int cmd_show(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct ota *o = ud;
        const char *id, *err;

        if (ctl_arg_string(args, "id", 64, &id, &err) < 0)
                return control_conn_error(c, -EINVAL, "id: %s", err);
        if (ota_job_json(o, id, ret) == 0) {
                ctl_json_add_iso_times(*ret);
                return 0;
        }
        return control_conn_error(c, -ENOENT, "no OTA job %s", id);
}

static int cmd_start(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct ota *o = ud;
        const char *file, *dev = NULL, *group = NULL, *sigfile = NULL, *err;
        char id[65] = "", why[1024];
        int r;

        if (ctl_arg_string(args, "file", 4096, &file, &err) < 0)
                return control_conn_error(c, -EINVAL, "file: %s", err);
        if (json_object_get(args, "device") && ctl_arg_string(args, "device", 64, &dev, &err) < 0)
                return control_conn_error(c, -EINVAL, "device: %s", err);
        if (json_object_get(args, "group") && ctl_arg_string(args, "group", 64, &group, &err) < 0)
                return control_conn_error(c, -EINVAL, "group: %s", err);
        if (json_object_get(args, "signature") &&
            ctl_arg_string(args, "signature", 4096, &sigfile, &err) < 0)
                return control_conn_error(c, -EINVAL, "signature: %s", err);
        if (!dev == !group)
                return control_conn_error(c, -EINVAL, "give exactly one of device or group");
        if (file[0] != '/')
                return control_conn_error(c, -EINVAL, "file must be an absolute path");
        r = ota_job_start_file(o, control_conn_peer(c)->actor, file, sigfile, dev, group, id, why,
                               sizeof why);
        if (r < 0)
                return control_conn_error(c, r, "%s", why);
        ota_job_json(o, id, ret);
        ctl_json_add_iso_times(*ret);
        return 0;
}

static int cmd_abort(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct ota *o = ud;
        const char *id, *err;
        int r;

        if (ctl_arg_string(args, "id", 64, &id, &err) < 0)
                return control_conn_error(c, -EINVAL, "id: %s", err);
        r = ota_job_abort(o, id, control_conn_peer(c)->actor);
        if (r == -ENOENT)
                return control_conn_error(c, r, "no OTA job %s", id);
        if (r == -EALREADY)
                return control_conn_error(c, r, "OTA job %s has already finished", id);
        *ret = json_pack("{ss}", "id", id);
        return 0;
}

static const struct control_command ota_commands[] = {
        { "ota.list", CONTROL_READ, cmd_list },
        { "ota.show", CONTROL_READ, cmd_show },
        { "ota.start", CONTROL_ADMIN, cmd_start },
        { "ota.abort", CONTROL_ADMIN, cmd_abort },
};

int ota_ctl_add_commands(struct control *ctl, struct ota *o)
{
        return control_add_commands(ctl, ota_commands, ELEMENTSOF(ota_commands), o);
}
