/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway certificate's control commands (docs/control-protocol.md, docs/provisioning.md). */
#include <errno.h>

#include "basic/macro.h"
#include "cloud/provision.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "ctl/provision-ctl.h"

static int cmd_cert_show(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct provision *p = ud;
        char err[512];
        int r = provision_cert_json(p, ret, err, sizeof err);

        if (r == -ENOENT)
                return control_conn_error(c, -ENOENT, "no certificate: %s", err);
        if (r == 0)
                ctl_json_add_iso_times(*ret);
        return r;
}

static int cmd_cert_rotate(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct provision *p = ud;
        char err[256];
        int r = provision_rotate(p, control_conn_peer(c)->actor, err, sizeof err);

        if (r < 0)
                return control_conn_error(c, r, "cannot rotate: %s", err);
        *ret = provision_status_json(p);
        ctl_json_add_iso_times(*ret);
        return 0;
}

static const struct control_command commands[] = {
        { "cert.show", CONTROL_READ, cmd_cert_show },
        { "cert.rotate", CONTROL_ADMIN, cmd_cert_rotate },
};

int provision_ctl_add_commands(struct control *ctl, struct provision *p)
{
        return control_add_commands(ctl, commands, ELEMENTSOF(commands), p);
}
