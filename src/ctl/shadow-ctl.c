/* SPDX-License-Identifier: Apache-2.0 */
/* The device shadow's control commands (docs/control-protocol.md, docs/shadow.md). */
#include <errno.h>

#include "basic/macro.h"
#include "cloud/shadow.h"
#include "ctl/control.h"
#include "ctl/shadow-ctl.h"

static int cmd_shadow_get(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        const char *id = json_string_value(json_object_get(args, "id"));
        int r;

        if (!id)
                return control_conn_error(c, -EINVAL, "shadow.get needs \"id\"");
        r = shadow_device_json(ud, id, ret);
        if (r == -ENOENT)
                return control_conn_error(c, -ENOENT, "no shadow seen for device %s", id);
        return r;
}

static const struct control_command commands[] = {
        { "shadow.get", CONTROL_READ, cmd_shadow_get },
};

int shadow_ctl_add_commands(struct control *ctl, struct shadow *s)
{
        return control_add_commands(ctl, commands, ELEMENTSOF(commands), s);
}
