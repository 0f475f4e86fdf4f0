/* SPDX-License-Identifier: Apache-2.0 */
/* The monitoring modules' control commands (docs/control-protocol.md, docs/monitoring.md):
 * rules and operator remediation, metrics, the security baseline, Device Defender. */
#include <errno.h>
#include <string.h>

#include "basic/macro.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "ctl/monitor-ctl.h"
#include "monitor/baseline.h"
#include "monitor/defender.h"
#include "monitor/metrics.h"
#include "monitor/remedy.h"

/* ---- remedy ------------------------------------------------------------------------------- */

static int device_cmd(struct control_conn *c, json_t *args, json_t **ret, void *ud,
                      const char *command)
{
        struct remedy *r = ud;
        const char *id = json_string_value(json_object_get(args, "id"));
        const char *reason = json_string_value(json_object_get(args, "reason"));
        char err[256];
        int q;

        if (!id)
                return control_conn_error(c, -EINVAL, "missing argument 'id'");
        q = remedy_apply(r, control_conn_peer(c)->actor, command, id, reason, err, sizeof err);
        if (q < 0)
                return control_conn_error(c, q, "%s", err);
        *ret = json_pack("{ss ss}", "id", id, "done", command);
        return 0;
}

static int cmd_disconnect(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        return device_cmd(c, args, ret, ud, "disconnect");
}

static int cmd_rotate(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        return device_cmd(c, args, ret, ud, "rotate-session");
}

static int cmd_rules(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        *ret = remedy_rules_json(ud);
        ctl_json_add_iso_times(*ret);
        return 0;
}

static const struct control_command remedy_commands[] = {
        { "rules", CONTROL_READ, cmd_rules },
        { "device.disconnect", CONTROL_ADMIN, cmd_disconnect },
        { "device.rotate-session", CONTROL_ADMIN, cmd_rotate },
};

/* ---- metrics ------------------------------------------------------------------------------ */

static int cmd_metrics(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct metrics *m = ud;
        const char *dev = json_string_value(json_object_get(args, "device"));
        json_t *o = metrics_json(m);

        if (!o)
                return -ENOMEM;
        if (dev) {
                json_t *devs = json_object_get(o, "devices"), *x, *keep = json_array();
                size_t i;
                json_array_foreach (devs, i, x)
                        if (strcmp(json_string_value(json_object_get(x, "id")) ?: "", dev) == 0)
                                json_array_append(keep, x);
                json_object_set_new(o, "devices", keep);
        }
        ctl_json_add_iso_times(o);
        *ret = o;
        return 0;
}

static const struct control_command metrics_commands[] = {
        { "metrics", CONTROL_READ, cmd_metrics },
};

/* ---- baseline ----------------------------------------------------------------------------- */

static int cmd_audit_config(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        *ret = baseline_report_json(ud);
        ctl_json_add_iso_times(*ret);
        return *ret ? 0 : -ENOMEM;
}

static int cmd_baseline_accept(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        int r = baseline_accept(ud, control_conn_peer(c)->actor, ret);

        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return control_conn_error(c, r, "cannot write the baseline: %s", strerror(-r));
        ctl_json_add_iso_times(*ret);
        return 0;
}

static const struct control_command baseline_commands[] = {
        { "audit.config", CONTROL_READ, cmd_audit_config },
        { "audit.baseline.accept", CONTROL_ADMIN, cmd_baseline_accept },
};

/* ---- defender ----------------------------------------------------------------------------- */

/* The gateway's own members get the control protocol's conventions; the last report is the
 * document AWS got, shown as it was sent. */
static json_t *defender_json(struct defender *d)
{
        json_t *o = defender_status_json(d), *report;

        if (!o)
                return NULL;
        report = json_incref(json_object_get(o, "last_report"));
        json_object_del(o, "last_report");
        ctl_json_add_iso_times(o);
        json_object_set_new(o, "last_report", report ?: json_null());
        return o;
}

static int cmd_defender(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        *ret = defender_json(ud);
        return *ret ? 0 : -ENOMEM;
}

static int cmd_defender_send(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct defender *d = ud;
        int r = defender_send(d, NULL);

        if (r < 0)
                return control_conn_error(c, r, "report not sent: %s",
                                          r == -ENOTCONN ? "the cloud session is not up"
                                                         : strerror(-r));
        *ret = defender_json(d);
        return *ret ? 0 : -ENOMEM;
}

static const struct control_command defender_commands[] = {
        { "defender", CONTROL_READ, cmd_defender },
        { "defender.send", CONTROL_ADMIN, cmd_defender_send },
};

int monitor_ctl_add_commands(struct control *ctl, struct remedy *remedy, struct metrics *metrics,
                             struct baseline *baseline, struct defender *defender)
{
        int r;

        if ((r = control_add_commands(ctl, remedy_commands, ELEMENTSOF(remedy_commands), remedy)) <
                    0 ||
            (r = control_add_commands(ctl, metrics_commands, ELEMENTSOF(metrics_commands),
                                      metrics)) < 0 ||
            (r = control_add_commands(ctl, baseline_commands, ELEMENTSOF(baseline_commands),
                                      baseline)) < 0 ||
            (r = control_add_commands(ctl, defender_commands, ELEMENTSOF(defender_commands),
                                      defender)) < 0)
                return r;
        return 0;
}
