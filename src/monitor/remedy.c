/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "basic/time-util.h"
#include "audit/audit.h"
#include "link/link.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "devices/registry.h"
#include "cloud/session.h"
#include "monitor/remedy.h"
#include "cloud/topic.h"

#define REMEDY_MAX_HOLDS 4096
#define REMEDY_MAX_DEVICES 65536

/* A device held back by a throttle rule until `until_ms`. */
struct hold {
        char id[REGISTRY_ID_MAX + 1];
        char rule[RULES_NAME_MAX + 1];
        uint64_t until_ms;
};

struct remedy {
        uv_loop_t *loop;
        struct audit *audit;
        struct registry *reg;
        struct link_manager *link;
        struct cloud_session *session;
        struct rules_engine *engine;
        size_t rules_enabled;
        char gateway[TOPIC_GATEWAY_MAX + 1];
        char alert_topic[TOPIC_MAX_LEN + 1];
        char remedy_topic[TOPIC_MAX_LEN + 1];
        bool subscribed;
        char **allowed; /* CloudCommands= */
        size_t n_allowed;
        struct hold *holds;
        size_t n_holds;
        uint64_t fired, alerts_published, alerts_unpublished;
};

static void allowed_clear(struct remedy *r)
{
        for (size_t i = 0; i < r->n_allowed; i++)
                free(r->allowed[i]);
        free(r->allowed);
        r->allowed = NULL;
        r->n_allowed = 0;
}

static int set_conf(struct remedy *r, const struct monitor_options *conf)
{
        int q = topic_expand(conf->topic_alert, r->gateway, NULL, 0, r->alert_topic,
                             sizeof r->alert_topic);
        if (q < 0)
                return q;
        q = topic_expand(conf->topic_remediation, r->gateway, NULL, 0, r->remedy_topic,
                         sizeof r->remedy_topic);
        if (q < 0)
                return q;
        allowed_clear(r);
        if (conf->cloud_commands.n) {
                r->allowed = calloc(conf->cloud_commands.n, sizeof *r->allowed);
                if (!r->allowed)
                        return -ENOMEM;
                for (size_t i = 0; i < conf->cloud_commands.n; i++) {
                        if (!(r->allowed[i] = strdup(conf->cloud_commands.v[i])))
                                return -ENOMEM;
                        r->n_allowed++;
                }
        }
        return 0;
}

/* ---- rule actions ------------------------------------------------------------------------ */

static bool hold_add(struct remedy *r, const char *id, const char *rule, uint64_t until_ms)
{
        struct hold *n;

        for (size_t i = 0; i < r->n_holds; i++)
                if (strcmp(r->holds[i].id, id) == 0) {
                        r->holds[i].until_ms = MAX(r->holds[i].until_ms, until_ms);
                        return true;
                }
        if (r->n_holds >= REMEDY_MAX_HOLDS)
                return false;
        n = realloc(r->holds, (r->n_holds + 1) * sizeof *n);
        if (!n)
                return false;
        r->holds = n;
        memset(&n[r->n_holds], 0, sizeof *n);
        snprintf(n[r->n_holds].id, sizeof n->id, "%s", id);
        snprintf(n[r->n_holds].rule, sizeof n->rule, "%s", rule);
        n[r->n_holds].until_ms = until_ms;
        r->n_holds++;
        return true;
}

static void hold_remove(struct remedy *r, const char *id)
{
        for (size_t i = 0; i < r->n_holds; i++)
                if (strcmp(r->holds[i].id, id) == 0) {
                        r->holds[i] = r->holds[--r->n_holds];
                        return;
                }
}

/* A rule's actions as a JSON array (["quarantine", "alert"]) for the control protocol and the
 * audit log; the alert message keeps its documented space-separated string. */
static json_t *actions_json(unsigned actions)
{
        char buf[64];
        json_t *a = json_array();

        rule_actions_to_string(actions, buf, sizeof buf);
        for (const char *p = buf; a && *p;) {
                size_t n = strcspn(p, " ");
                json_array_append_new(a, json_stringn(p, n));
                p += n + (p[n] == ' ');
        }
        return a;
}

static int publish_alert(struct remedy *r, const struct rule *rule, const char *device,
                         uint64_t value, const char *actions)
{
        _cleanup_free_ char *text = NULL;
        json_t *o = json_pack("{ss ss ss ss sI sI sI ss sI}", "type", "rule", "gateway", r->gateway,
                              "device", device, "rule", rule->name, "value", (json_int_t)value,
                              "threshold", (json_int_t)rule->threshold, "window_ms",
                              (json_int_t)rule->window_ms, "actions", actions, "ts_us",
                              (json_int_t)now_realtime_usec());

        if (!o)
                return -ENOMEM;
        json_object_set_new(o, "metric", json_string(rule_metric_to_string(rule->metric)));
        text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        if (!text)
                return -ENOMEM;
        return cloud_session_publish(r->session, r->alert_topic, text, strlen(text));
}

static void on_fire(void *ud, const struct rule *rule, const char *device, uint64_t value)
{
        struct remedy *r = ud;
        const struct registry_device *d = registry_find(r->reg, device);
        char actions[64], reason[160];
        const char *err = NULL;
        json_t *taken = json_array();
        enum device_state before = d ? d->state : DEVICE_ACTIVE;
        int q;

        r->fired++;
        rule_actions_to_string(rule->actions, actions, sizeof actions);
        if (rule->metric == RULE_METRIC_SILENCE)
                snprintf(reason, sizeof reason, "rule %s: silent for %llus", rule->name,
                         (unsigned long long)(value / 1000));
        else
                snprintf(reason, sizeof reason, "rule %s: %llu %s in %llus", rule->name,
                         (unsigned long long)value, rule_metric_to_string(rule->metric),
                         (unsigned long long)(rule->window_ms / 1000));
        log_device(LOG_WARNING, device, "%s: %s", reason, actions);

        if (d && (rule->actions & (RULE_ACTION_QUARANTINE | RULE_ACTION_THROTTLE)) &&
            d->state == DEVICE_ACTIVE) {
                q = registry_set_state(r->reg, "daemon", device, DEVICE_QUARANTINED, reason, &err);
                if (q < 0)
                        log_device(LOG_ERR, device, "cannot quarantine: %s",
                                   err ? err : strerror(-q));
                else if (rule->actions & RULE_ACTION_QUARANTINE) {
                        json_array_append_new(taken, json_string("quarantine"));
                        hold_remove(r, device); /* for good, not for a while */
                } else if (hold_add(r, device, rule->name, uv_now(r->loop) + rule->hold_ms))
                        json_array_append_new(taken, json_string("throttle"));
        }
        if (rule->actions & RULE_ACTION_DISCONNECT &&
            link_manager_disconnect(r->link, device, reason) >= 0)
                json_array_append_new(taken, json_string("disconnect"));
        /* A device already held back keeps being audited, but the cloud heard about it. */
        if ((rule->actions & RULE_ACTION_ALERT) &&
            (before == DEVICE_QUARANTINED || before == DEVICE_REVOKED))
                json_array_append_new(taken, json_string("alert:suppressed"));
        else if (rule->actions & RULE_ACTION_ALERT) {
                q = publish_alert(r, rule, device, value, actions);
                if (q >= 0) {
                        r->alerts_published++;
                        json_array_append_new(taken, json_string("alert"));
                } else {
                        r->alerts_unpublished++;
                        json_array_append_new(taken, json_string("alert:unpublished"));
                }
        }
        audit_log(r->audit, "daemon", "rule.fired", device,
                  json_pack("{ss ss sI sI sI so so}", "rule", rule->name, "metric",
                            rule_metric_to_string(rule->metric), "value", (json_int_t)value,
                            "threshold", (json_int_t)rule->threshold, "window_ms",
                            (json_int_t)rule->window_ms, "actions", actions_json(rule->actions),
                            "taken", taken));
}

void remedy_on_delta(void *userdata, const char *device_id, const char *groups,
                     const struct metrics_delta *d, uint64_t now_ms)
{
        struct remedy *r = userdata;
        const struct {
                enum rule_metric m;
                uint64_t n;
        } feed[] = {
                { RULE_METRIC_AUTH_FAILURES, d->auth_failures },
                { RULE_METRIC_MESSAGES, d->messages },
                { RULE_METRIC_BYTES, d->bytes_in },
                { RULE_METRIC_REPLAYS, d->replays },
                { RULE_METRIC_MAC_ERRORS, d->mac_errors },
                { RULE_METRIC_TAKEOVERS, d->takeovers },
                { RULE_METRIC_REPLAY_TS, d->replay_ts },
        };

        if (!r->engine)
                return;
        /* Silence is measured from the start of observation or the last frame. */
        if (d->first || d->heard)
                rules_engine_seen(r->engine, device_id, groups, now_ms);
        for (size_t i = 0; i < ELEMENTSOF(feed); i++)
                if (feed[i].n)
                        rules_engine_add(r->engine, device_id, groups, feed[i].m, feed[i].n, now_ms,
                                         on_fire, r);
}

void remedy_on_tick(void *userdata, uint64_t now_ms)
{
        struct remedy *r = userdata;

        if (r->engine)
                rules_engine_tick(r->engine, now_ms, on_fire, r);
        for (size_t i = 0; i < r->n_holds;) {
                struct hold h = r->holds[i];
                const struct registry_device *d;
                const char *err = NULL;

                if (h.until_ms > now_ms) {
                        i++;
                        continue;
                }
                r->holds[i] = r->holds[--r->n_holds];
                d = registry_find(r->reg, h.id);
                /* Only undo our own quarantine: an operator may have acted since. */
                if (!d || d->state != DEVICE_QUARANTINED)
                        continue;
                if (registry_set_state(r->reg, "daemon", h.id, DEVICE_ACTIVE, "throttle expired",
                                       &err) >= 0) {
                        log_device(LOG_NOTICE, h.id, "throttle by rule %s expired", h.rule);
                        if (r->engine)
                                rules_engine_forget(r->engine, h.id);
                }
        }
}

/* ---- commands ---------------------------------------------------------------------------- */

int remedy_apply(struct remedy *r, const char *actor, const char *command, const char *device_id,
                 const char *reason, char *err, size_t err_len)
{
        const struct registry_device *d = registry_find(r->reg, device_id);
        enum device_state to;
        const char *e = NULL;
        int q;

        if (!d) {
                snprintf(err, err_len, "unknown device %s", device_id);
                return -ENOENT;
        }
        if (!reason || !*reason)
                reason = command;
        if (strcmp(command, "disconnect") == 0 || strcmp(command, "rotate-session") == 0) {
                q = link_manager_disconnect(
                        r->link, device_id,
                        strcmp(command, "disconnect") == 0 ? reason : "session rotation requested");
                if (q < 0) {
                        snprintf(err, err_len, "device %s is not connected", device_id);
                        return q;
                }
                audit_log(r->audit, actor,
                          strcmp(command, "disconnect") == 0 ? "device.disconnect"
                                                             : "device.rotate_session",
                          device_id, json_pack("{ss}", "reason", reason));
                return 0;
        }
        if (strcmp(command, "quarantine") == 0)
                to = DEVICE_QUARANTINED;
        else if (strcmp(command, "release") == 0 || strcmp(command, "restore") == 0)
                to = DEVICE_ACTIVE;
        else if (strcmp(command, "revoke") == 0)
                to = DEVICE_REVOKED;
        else {
                snprintf(err, err_len, "unknown remediation command '%s'", command);
                return -EINVAL;
        }
        if (to == DEVICE_ACTIVE && d->state != DEVICE_QUARANTINED) {
                snprintf(err, err_len, "device %s is %s, not quarantined", device_id,
                         device_state_to_string(d->state));
                return -EINVAL;
        }
        q = registry_set_state(r->reg, actor, device_id, to, reason, &e);
        if (q < 0) {
                snprintf(err, err_len, "%s", e ? e : strerror(-q));
                return q;
        }
        hold_remove(r, device_id);
        if (to == DEVICE_ACTIVE && r->engine)
                rules_engine_forget(r->engine, device_id); /* a fresh start for its windows */
        return 0;
}

static const char *const remedy_command_names[] = { "quarantine", "release",    "restore",
                                                    "revoke",     "disconnect", "rotate-session" };

int remedy_parse_request(const uint8_t *payload, size_t len, struct remedy_request *ret,
                         const char **ret_error)
{
        json_t *o = NULL, *v;
        const char *s;
        int r = -EINVAL;

        memset(ret, 0, sizeof *ret);
        *ret_error = "malformed remediation command (expected a JSON object "
                     "{\"command\",\"device\"[,\"reason\",\"id\"]})";
        if (len > REMEDY_REQUEST_MAX) {
                *ret_error = "remediation command too large";
                return -EMSGSIZE;
        }
        o = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(o))
                goto out;
        s = json_string_value(json_object_get(o, "device"));
        if (!s || !enroll_id_valid(s)) {
                *ret_error = "remediation command: \"device\" must be a device id";
                goto out;
        }
        snprintf(ret->device, sizeof ret->device, "%s", s);
        s = json_string_value(json_object_get(o, "command"));
        for (size_t i = 0; s && i < ELEMENTSOF(remedy_command_names); i++)
                if (strcmp(s, remedy_command_names[i]) == 0)
                        snprintf(ret->command, sizeof ret->command, "%s", s);
        if (!ret->command[0]) {
                *ret_error = "remediation command: \"command\" must be one of quarantine, "
                             "release, revoke, disconnect, rotate-session";
                goto out;
        }
        v = json_object_get(o, "reason");
        if (v && (!json_is_string(v) || json_string_length(v) >= sizeof ret->reason ||
                  strlen(json_string_value(v)) != json_string_length(v))) {
                *ret_error = "remediation command: \"reason\" must be a string of at most 256 "
                             "bytes";
                goto out;
        }
        if (v)
                snprintf(ret->reason, sizeof ret->reason, "%s", json_string_value(v));
        v = json_object_get(o, "id");
        if (v && (!json_is_string(v) || json_string_length(v) >= sizeof ret->id ||
                  strlen(json_string_value(v)) != json_string_length(v))) {
                *ret_error = "remediation command: \"id\" must be a string of at most 64 bytes";
                goto out;
        }
        if (v)
                snprintf(ret->id, sizeof ret->id, "%s", json_string_value(v));
        *ret_error = NULL;
        r = 0;
out:
        json_decref(o);
        return r;
}

int remedy_cloud_command(struct remedy *r, const uint8_t *payload, size_t len, char *err,
                         size_t err_len)
{
        struct remedy_request req;
        const char *why;
        const char *cmd = req.command, *dev = req.device, *reason = req.reason;
        bool allowed = false;
        int q;

        q = remedy_parse_request(payload, len, &req, &why);
        if (q < 0) {
                snprintf(err, err_len, "%s", why);
                audit_log(r->audit, "cloud", "remedy.cloud", req.device,
                          json_pack("{ss ss}", "outcome", "rejected", "reason", err));
                return q;
        }
        for (size_t i = 0; i < r->n_allowed; i++)
                if (strcmp(r->allowed[i], cmd) == 0 ||
                    (strcmp(cmd, "restore") == 0 && strcmp(r->allowed[i], "release") == 0))
                        allowed = true;
        if (!allowed) {
                snprintf(err, err_len,
                         "remediation command '%s' from the cloud is not allowed "
                         "by CloudCommands=",
                         cmd);
                log_warning("%s", err);
                audit_log(r->audit, "cloud", "remedy.cloud", dev,
                          json_pack("{ss ss ss}", "command", cmd, "outcome", "denied", "reason",
                                    err));
                return -EPERM;
        }
        q = remedy_apply(r, "cloud", cmd, dev, *reason ? reason : "cloud request", err, err_len);
        audit_log(r->audit, "cloud", "remedy.cloud", dev,
                  json_pack("{ss ss ss}", "command", cmd, "outcome", q < 0 ? "failed" : "done",
                            "reason", q < 0 ? err : reason));
        return q;
}

json_t *remedy_rules_json(struct remedy *r)
{
        const struct rule_set *rs = r->engine ? rules_engine_rules(r->engine) : NULL;
        struct rules_engine_stats st = { 0 };
        json_t *a = json_array();

        for (size_t i = 0; rs && i < rs->n; i++) {
                const struct rule *x = &rs->v[i];
                char where[300];
                snprintf(where, sizeof where, "%s:%u", x->file, x->line);
                json_array_append_new(
                        a,
                        json_pack("{ss ss sI sI sI so ss ss sb ss}", "name", x->name, "metric",
                                  rule_metric_to_string(x->metric), "window_ms",
                                  (json_int_t)x->window_ms, "threshold", (json_int_t)x->threshold,
                                  "timeout_ms", (json_int_t)x->timeout_ms, "actions",
                                  actions_json(x->actions), "match", x->match, "group", x->group,
                                  "enabled", x->enabled, "file", where));
        }
        if (r->engine)
                rules_engine_stats(r->engine, &st);
        return json_pack("{so sb sI sI sI sI sI}", "rules", a, "evaluating", r->engine != NULL,
                         "fired", (json_int_t)r->fired, "devices_tracked", (json_int_t)st.devices,
                         "alerts_published", (json_int_t)r->alerts_published, "alerts_unpublished",
                         (json_int_t)r->alerts_unpublished, "throttled", (json_int_t)r->n_holds);
}

const size_t *remedy_rules_enabled(const struct remedy *r)
{
        return &r->rules_enabled;
}

int remedy_update(struct remedy *r, const struct monitor_options *conf, const struct rule_set *rs)
{
        int q;

        if ((q = set_conf(r, conf)) < 0)
                return q;
        if (!conf->rules) {
                rules_engine_free(r->engine);
                r->engine = NULL;
                r->rules_enabled = 0;
                return 0;
        }
        if (r->engine)
                q = rules_engine_set_rules(r->engine, rs);
        else
                q = rules_engine_new(rs, REMEDY_MAX_DEVICES, &r->engine);
        if (q < 0)
                return q;
        r->rules_enabled = rs ? rule_set_enabled(rs) : 0;
        return 0;
}

/* A message on RemediationTopic=: apply it (if allowed) and answer on .../result. */
static void on_cloud_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct remedy *r = ud;
        char err[256] = "", result_topic[TOPIC_MAX_LEN + 16];
        _cleanup_free_ char *text = NULL;
        struct remedy_request req;
        const char *why;
        json_t *res;
        int q;

        /* Parsed twice (here for the reply's id), cheap for a rare message. */
        remedy_parse_request(payload, len, &req, &why);
        q = remedy_cloud_command(r, payload, len, err, sizeof err);
        res = json_pack("{ss ss ss ss}", "id", req.id, "command", req.command, "device", req.device,
                        "status", q < 0 ? "failed" : "done");
        if (res && q < 0)
                json_object_set_new(res, "error", json_string(err));
        text = res ? json_dumps(res, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(res);
        snprintf(result_topic, sizeof result_topic, "%s/result", r->remedy_topic);
        if (text)
                cloud_session_publish(r->session, result_topic, text, strlen(text));
}

int remedy_new(uv_loop_t *loop, struct audit *audit, struct registry *reg,
               struct link_manager *link, struct cloud_session *session,
               const struct monitor_options *conf, const char *gateway, const struct rule_set *rs,
               struct remedy **ret)
{
        struct remedy *r = calloc(1, sizeof *r);
        int q;

        if (!r)
                return -ENOMEM;
        r->loop = loop;
        r->audit = audit;
        r->reg = reg;
        r->link = link;
        r->session = session;
        snprintf(r->gateway, sizeof r->gateway, "%s", gateway);
        q = remedy_update(r, conf, rs);
        if (q < 0) {
                remedy_stop(r);
                return q;
        }
        /* Subscribed even when CloudCommands= is empty: refusals are audited too. */
        if (session && cloud_session_subscribe(session, r->remedy_topic, on_cloud_message, r) >= 0)
                r->subscribed = true;
        *ret = r;
        return 0;
}

void remedy_stop(struct remedy *r)
{
        if (!r)
                return;
        cloud_session_forget(r->session, r);
        allowed_clear(r);
        rules_engine_free(r->engine);
        free(r->holds);
        free(r);
}

int remedy_config_parse_cloud_command(const char *v, void *field, const char **reason)
{
        static const char *const allowed[] = { "quarantine", "release", "revoke", "disconnect",
                                               "rotate-session" };
        if (*v) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(allowed); i++)
                        if (strcmp(v, allowed[i]) == 0)
                                break;
                if (i == ELEMENTSOF(allowed)) {
                        *reason = "expected quarantine, release, revoke, disconnect or "
                                  "rotate-session";
                        return -EINVAL;
                }
        }
        return config_parse_strv(v, field, reason);
}
