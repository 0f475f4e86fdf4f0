/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "audit/audit.h"
#include "cloud/auditexport.h"
#include "monitor/baseline.h"
#include "link/ble.h"
#include "ctl/audit-ctl.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "ctl/monitor-ctl.h"
#include "ctl/ota-ctl.h"
#include "ctl/provision-ctl.h"
#include "ctl/registry-ctl.h"
#include "ctl/telemetry-ctl.h"
#include "ctl/shadow-ctl.h"
#include "store/db.h"
#include "monitor/defender.h"
#include "basic/lockfile.h"
#include "daemon/gateway.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "mcugw/proto.h"
#include "mcugw/wire.h"
#include "monitor/metrics.h"
#include "monitor/remedy.h"
#include "monitor/rules.h"
#include "link/link.h"
#include "devices/onboard.h"
#include "ota/ota.h"
#include "cloud/provision.h"
#include "ota/ota_jobs.h"
#include "devices/registry.h"
#include "cloud/relay.h"
#include "cloud/session.h"
#include "cloud/shadow.h"

struct gateway {
        uv_loop_t *loop;
        char *config_path;
        struct conf *conf; /* in effect: restart-only keys keep their running values */
        struct baseline_config baseline_cfg; /* the baseline's view of conf */
        char name[65];
        int lock_fd; /* StateDirectory/mcugwd.lock: one daemon per state directory */
        struct db *db;
        struct audit *audit;
        bool audit_head_file_created;
        int64_t audit_db_seq;
        struct registry *registry;
        struct control *control;
        struct audit_ctl *audit_ctl; /* audit.tail, audit.verify */
        struct link_manager *link;
        struct onboard *onboard; /* trusted manufacturer keys (JIT onboarding) */
        struct ble_manager *ble;
        struct cloud_session *session;
        struct relay *relay;
        struct provision *provision; /* fleet provisioning, certificate rotation */
        struct ota *ota;             /* OTA rollout engine (docs/ota.md) */
        struct ota_jobs *ota_jobs;   /* AWS IoT Jobs + streams; NULL without [MQTT] */
        struct remedy *remedy;       /* rules and remediation (docs/monitoring.md) */
        struct metrics *metrics;
        struct baseline *baseline;
        struct defender *defender;
        struct auditexport *auditexport;
        struct shadow *shadow; /* device shadows; NULL with [Shadow] Mode=off */
        struct link_listener shadow_listener;
        uv_timer_t status_timer;
        bool have_status_timer;
        uv_signal_t sig_term, sig_int, sig_hup;
        uv_timer_t watchdog;
        bool have_watchdog;
        uint64_t started_ms;
        unsigned reloads, reload_failures;
        char last_error[256];
        int exit_status;
        bool restart; /* provisioning named the thing: start again with it */
};

static const char *gw_name(const struct gateway *gw)
{
        return gw->name;
}

static void gw_notify_status(struct gateway *gw)
{
        char relay_line[128] = "";
        if (gw->relay)
                relay_status_line(gw->relay, relay_line, sizeof relay_line);
        sd_notifyf(0, "STATUS=gateway %s: running; %s; audit head %lld; %u control clients",
                   gw_name(gw), relay_line, (long long)audit_head_seq(gw->audit),
                   control_clients(gw->control));
}

static json_t *conf_files_json(const struct conf *c)
{
        json_t *a = json_array();
        for (size_t i = 0; i < c->n_files; i++)
                json_array_append_new(a, json_string(c->files[i]));
        return a;
}

/* The changed restart-only keys that are not in effect yet ("Section.Key"). */
static json_t *restart_pending_json(const struct conf *c)
{
        json_t *a = json_array();
        for (size_t i = 0; i < c->restart_pending.n; i++)
                json_array_append_new(a, json_string(c->restart_pending.v[i]));
        return a;
}

/* mkdir -p with a mode for the last component; existing directories are left alone. */
static int mkdir_parents(const char *path, mode_t mode)
{
        _cleanup_free_ char *p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0)
                return errno == EEXIST ? 0 : -errno;
        /* Exactly this mode, whatever the umask: the runtime directory must stay traversable
         * for the control socket's group. */
        if (chmod(p, mode) < 0)
                return -errno;
        return 0;
}

static struct control_options control_opts(const struct conf *c)
{
        return (struct control_options){
                .path = c->control_socket,
                .mode = c->socket_mode,
                .admin_group = c->admin_group,
                .readonly_group = c->readonly_group,
                .max_clients = c->max_clients,
                .max_request = (size_t)c->max_request_bytes,
                .refusals_per_min = c->refusal_audit_per_min,
        };
}

/* Apply a new, valid configuration that conf_keep_running() made the one in effect. */
static void gw_apply_conf(struct gateway *gw, struct conf *n)
{
        struct control_options o;

        log_set_level(n->log_level);
        db_set_commit_interval(gw->db, n->db.commit_interval_usec);
        if (gw->ota)
                ota_apply_conf(gw->ota, &n->ota);
        o = control_opts(n);
        control_update(gw->control, &o);
        conf_free(gw->conf);
        gw->conf = n;
        conf_baseline_config(gw->conf, &gw->baseline_cfg);
}

/* One warning naming every changed key that waits for a restart. */
static void gw_warn_restart_pending(const struct conf *c)
{
        char keys[1024] = "";
        size_t len = 0;

        if (!c->restart_pending.n)
                return;
        for (size_t i = 0; i < c->restart_pending.n && len < sizeof keys; i++) {
                int q = snprintf(keys + len, sizeof keys - len, "%s%s", i ? ", " : "",
                                 c->restart_pending.v[i]);
                if (q < 0)
                        break;
                len += (size_t)q;
        }
        log_warning("reload: %s changed; %s effect only after a restart", keys,
                    c->restart_pending.n > 1 ? "these take" : "that takes");
}

/* Re-read the configuration; keep the old one if the new one has errors. */
static int gw_reload(struct gateway *gw, const char *actor, json_t **ret_errors)
{
        struct conf_errors err = { 0 };
        struct conf_set set = { 0 };
        json_t *errors;
        char old_hash[65];
        int r;

        sd_notifyf(0, "RELOADING=1\nSTATUS=reloading configuration");
        r = conf_set_load(gw->config_path, &set, &err);
        if (r >= 0 && (r = conf_keep_running(set.conf, gw->conf)) < 0) {
                conf_errors_add(&err, "%s: %s", gw->config_path, strerror(-r));
                conf_set_clear(&set);
        }
        if (r < 0) {
                errors = json_array();
                conf_errors_print(&err, NULL, "reload: ");
                for (size_t i = 0; i < err.n; i++)
                        json_array_append_new(errors, json_string(err.msgs[i]));
                log_error("reload: configuration has %zu error(s); keeping the running one", err.n);
                snprintf(gw->last_error, sizeof gw->last_error, "reload failed: %s",
                         err.n ? err.msgs[0] : strerror(-r));
                gw->reload_failures++;
                audit_log(gw->audit, actor, "config.reload_failed", gw->config_path,
                          json_pack("{sO ss}", "errors", errors, "kept_hash", gw->conf->hash));
                if (ret_errors)
                        *ret_errors = errors;
                else
                        json_decref(errors);
                conf_errors_clear(&err);
                sd_notify(0, "READY=1");
                gw_notify_status(gw);
                return -EINVAL;
        }
        memcpy(old_hash, gw->conf->hash, sizeof old_hash);
        gw_warn_restart_pending(set.conf);
        gw_apply_conf(gw, TAKE_PTR(set.conf));
        registry_sync_files(gw->registry, &set.devices);
        link_manager_set_onboard(gw->link, set.onboard);
        onboard_free(gw->onboard);
        gw->onboard = TAKE_PTR(set.onboard);
        if (gw->remedy && (r = remedy_update(gw->remedy, &gw->conf->monitor, &set.rules)) < 0)
                log_error_errno(r, "reload: cannot apply the rules: %m");
        conf_set_clear(&set);
        if (gw->metrics)
                metrics_set_interval(gw->metrics, gw->conf->monitor.metrics_interval_usec / 1000);
        if (gw->defender)
                defender_set_interval(gw->defender,
                                      gw->conf->monitor.defender_interval_usec / 1000);
        if (gw->auditexport)
                auditexport_update(gw->auditexport, &gw->conf->audit_export);
        if (gw->baseline) {
                baseline_update(gw->baseline);
                baseline_check_drift(gw->baseline, "reload");
        }
        /* A reload is often the operator's sign that a file was fixed (a key, a certificate):
         * the cloud session tries now instead of at the end of its backoff. */
        if (gw->session && !cloud_session_up(gw->session))
                cloud_session_reconnect(gw->session);
        gw->reloads++;
        audit_log(gw->audit, actor, "config.reload", gw->config_path,
                  json_pack("{ss ss so}", "hash", gw->conf->hash, "old_hash", old_hash, "files",
                            conf_files_json(gw->conf)));
        log_info("configuration reloaded (%.12s)", gw->conf->hash);
        sd_notify(0, "READY=1");
        gw_notify_status(gw);
        return 0;
}

static void gw_begin_stop(struct gateway *gw, const char *why)
{
        log_info("%s: shutting down", why);
        sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
        uv_stop(gw->loop);
}

/* RegisterThing named the gateway's thing (stored by provision.c): the client id, the Jobs and
 * Defender topics all follow the name, so the daemon starts again with it. */
static void gw_on_thing_name(void *ud, const char *thing)
{
        struct gateway *gw = ud;

        log_notice("the gateway's thing is %s now (fleet provisioning); restarting to use it",
                   thing);
        gw->restart = true;
        /* Not STOPPING=1: the same process (execv in main.c) says READY=1 again. */
        sd_notify(0, "RELOADING=1\nSTATUS=restarting with the provisioned thing name");
        uv_stop(gw->loop);
}

bool gateway_restart_requested(struct gateway *gw)
{
        return gw->restart;
}

static void on_signal(uv_signal_t *s, int signum)
{
        struct gateway *gw = s->data;
        if (signum == SIGHUP)
                gw_reload(gw, "daemon", NULL);
        else
                gw_begin_stop(gw, strsignal(signum));
}

static void on_status_timer(uv_timer_t *t)
{
        gw_notify_status(t->data);
}

struct relay *gateway_relay(struct gateway *gw)
{
        return gw->relay;
}

static void on_watchdog(uv_timer_t *t)
{
        sd_notify(0, "WATCHDOG=1");
}

/* Control commands of the core. */

static int cmd_status(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct gateway *gw = ud;
        size_t counts[_DEVICE_STATE_MAX];
        json_t *o =
                json_pack("{ss ss si sI ss so s{sI sI} s{sI} s{si} s{si si} ss}", "version",
                          MCUGW_VERSION, "gateway", gw_name(gw), "pid", (int)getpid(), "uptime_ms",
                          (json_int_t)(uv_now(gw->loop) - gw->started_ms), "config_hash",
                          gw->conf->hash, "config_files", conf_files_json(gw->conf), "audit",
                          "records", (json_int_t)audit_head_seq(gw->audit), "head_seq",
                          (json_int_t)audit_head_seq(gw->audit), "database", "commits",
                          (json_int_t)db_commits(gw->db), "control", "clients",
                          (int)control_clients(gw->control), "reloads", "ok", (int)gw->reloads,
                          "failed", (int)gw->reload_failures, "last_error", gw->last_error);
        if (!o)
                return -ENOMEM;
        json_object_set_new(o, "restart_pending", restart_pending_json(gw->conf));
        registry_count(gw->registry, counts);
        json_object_set_new(o, "devices",
                            json_pack("{sI sI sI sI sI}", "total",
                                      (json_int_t)registry_count(gw->registry, NULL), "pending",
                                      (json_int_t)counts[DEVICE_PENDING], "active",
                                      (json_int_t)counts[DEVICE_ACTIVE], "quarantined",
                                      (json_int_t)counts[DEVICE_QUARANTINED], "revoked",
                                      (json_int_t)counts[DEVICE_REVOKED]));
        json_object_set_new(o, "link", link_manager_status(gw->link));
        if (gw->auditexport)
                json_object_set_new(o, "audit_export", auditexport_status(gw->auditexport));
        if (gw->ota) {
                json_t *ot = ota_status_json(gw->ota);
                if (gw->ota_jobs)
                        json_object_set_new(ot, "cloud", ota_jobs_status(gw->ota_jobs));
                json_object_set_new(o, "ota", ot);
        }
        json_object_set_new(o, "ble", ble_manager_status(gw->ble));
        if (gw->provision)
                json_object_set_new(o, "provisioning", provision_status_json(gw->provision));
        if (gw->relay) {
                json_object_set_new(o, "mqtt", relay_mqtt_status(gw->relay));
                json_object_set_new(o, "outbox", relay_outbox_status(gw->relay));
                if (gw->shadow)
                        json_object_set_new(o, "shadow", shadow_status_json(gw->shadow));
        }
        ctl_json_add_iso_times(o);
        *ret = o;
        return 0;
}

/* `devices` and `device show` carry the link counters of each device. */
static void gw_decorate_device(void *ud, const char *id, json_t *obj)
{
        struct gateway *gw = ud;
        json_t *ls;

        link_manager_device_stats(gw->link, id, obj);
        /* A device on a BLE link: its peripheral's RSSI and GATT counters. */
        ls = json_object_get(obj, "link_stats");
        ble_manager_link_stats(gw->ble, json_string_value(json_object_get(ls, "link")), obj);
        shadow_decorate(gw->shadow, id, obj);
}

static int cmd_reload(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct gateway *gw = ud;
        json_t *errors = NULL;
        int r;

        r = gw_reload(gw, control_conn_peer(c)->actor, &errors);
        if (r < 0) {
                const char *first = json_string_value(json_array_get(errors, 0));
                control_conn_error(c, -EINVAL,
                                   "new configuration rejected, still running the "
                                   "old one: %s%s",
                                   first ? first : "unknown error",
                                   json_array_size(errors) > 1 ? " (and more, see the journal)"
                                                               : "");
                json_decref(errors);
                return -EINVAL;
        }
        *ret = json_pack("{ss so}", "config_hash", gw->conf->hash, "restart_pending",
                         restart_pending_json(gw->conf));
        return 0;
}

/* Retry the cloud session now instead of at the end of its backoff. */
static int cmd_reconnect(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct gateway *gw = ud;
        int r = cloud_session_reconnect(gw->session);

        if (r == -ENOTCONN)
                return control_conn_error(c, r, "no cloud session configured ([MQTT] Host=)");
        if (r == -EISCONN)
                return control_conn_error(c, r, "the cloud session is connected");
        if (r < 0 && r != -EINPROGRESS)
                return control_conn_error(c, r, "cannot reconnect: %s", strerror(-r));
        audit_log(gw->audit, control_conn_peer(c)->actor, "mqtt.reconnect", "mqtt",
                  json_pack("{sb}", "in_progress", r == -EINPROGRESS));
        *ret = relay_mqtt_status(gw->relay);
        json_object_set_new(*ret, "in_progress", json_boolean(r == -EINPROGRESS));
        ctl_json_add_iso_times(*ret);
        return 0;
}

static const struct control_command core_commands[] = {
        { "status", CONTROL_READ, cmd_status },
        { "reload", CONTROL_ADMIN, cmd_reload },
        { "reconnect", CONTROL_ADMIN, cmd_reconnect },
};

static void on_audit_record(void *ud, const struct audit_record *rec)
{
        struct gateway *gw = ud;
        if (gw->control) {
                json_t *o = audit_record_to_json(rec);
                ctl_json_add_iso_times(o);
                control_broadcast(gw->control, "audit", o);
        }
        if (gw->auditexport)
                auditexport_notify(gw->auditexport);
}

static int socket_activated_fd(void)
{
        int n = sd_listen_fds(1);
        if (n <= 0)
                return -1;
        if (n > 1)
                log_warning("received %d sockets from systemd; using the first", n);
        return SD_LISTEN_FDS_START;
}

/* The relay path: authenticated telemetry from the link goes into the durable outbox, and the
 * device gets its ACK only after the group commit that made the message durable. Cloud commands
 * go the other way. The link and the relay know nothing of each other; this is the glue. */
struct pending_ack {
        struct gateway *gw;
        uint64_t token;
};

static void on_durable(void *ud, int status)
{
        struct pending_ack *p = ud;
        /* The link may be gone (shutdown) or the device reconnected: the token tells. */
        if (p->gw->link)
                link_manager_ack(p->gw->link, p->token,
                                 status < 0 ? MCUGW_ACK_RETRY : MCUGW_ACK_OK);
        free(p);
}

static void on_telemetry(void *ud, const char *device_id, uint16_t stream, uint32_t seq,
                         uint8_t flags, const uint8_t *payload, size_t len, uint64_t token)
{
        struct gateway *gw = ud;
        struct pending_ack *p = malloc(sizeof *p);
        int r;

        if (!p) {
                link_manager_ack(gw->link, token, MCUGW_ACK_RETRY);
                return;
        }
        *p = (struct pending_ack){ gw, token };
        r = relay_submit(gw->relay, device_id, stream, seq, payload, len, on_durable, p);
        if (r >= 0) /* `mcugwctl tail`: what is on its way to the cloud */
                telemetry_ctl_publish(gw->control, device_id, stream, seq, payload, len);
        if (r < 0) {
                free(p);
                /* Too big or malformed will never succeed; anything else may later. */
                link_manager_ack(gw->link, token,
                                 r == -EMSGSIZE || r == -EINVAL ? MCUGW_ACK_DROPPED
                                                                : MCUGW_ACK_RETRY);
        }
}

static void on_command_result(void *ud, const char *device_id, uint32_t command_id, int status,
                              const uint8_t *payload, size_t len)
{
        struct gateway *gw = ud;
        relay_command_result(gw->relay, device_id, command_id, status, payload, len);
}

static void on_command_failed(void *ud, const char *device_id, uint32_t command_id, int error)
{
        struct gateway *gw = ud;
        relay_command_failed(gw->relay, device_id, command_id, error);
}

static int on_cloud_command(void *ud, const char *device_id, uint32_t command_id,
                            const uint8_t *payload, size_t len)
{
        struct gateway *gw = ud;
        if (!registry_find(gw->registry, device_id))
                return -ENOENT;
        return link_manager_send_command(gw->link, device_id, command_id, payload, len);
}

static void gw_wire_relay(struct gateway *gw)
{
        const struct link_callbacks cb = {
                .ud = gw,
                .on_telemetry = on_telemetry,
                .on_command_result = on_command_result,
                .on_command_failed = on_command_failed,
        };
        link_manager_set_callbacks(gw->link, &cb);
        relay_set_command_handler(gw->relay, on_cloud_command, gw);
}

static void gw_unwire_relay(struct gateway *gw)
{
        const struct link_callbacks none = { 0 };
        if (gw->link)
                link_manager_set_callbacks(gw->link, &none);
        if (gw->relay)
                relay_set_command_handler(gw->relay, NULL, NULL);
}

/* ---- device shadows: link events in, CONFIG out -------------------------------------------- */

static void gw_shadow_up(void *ud, const char *device_id)
{
        struct gateway *gw = ud;
        shadow_device_up(gw->shadow, device_id);
}

static void gw_shadow_down(void *ud, const char *device_id, const char *reason)
{
        struct gateway *gw = ud;
        shadow_device_changed(gw->shadow, device_id);
}

static void gw_shadow_status(void *ud, const char *device_id)
{
        struct gateway *gw = ud;
        shadow_device_changed(gw->shadow, device_id);
}

_Static_assert(SHADOW_CONFIG_MAX == MCUGW_CONFIG_MAX, "a CONFIG's JSON is one DATA message");

static int gw_shadow_send(void *ud, const char *device_id, uint32_t version, const char *json,
                          size_t len)
{
        struct gateway *gw = ud;
        struct mcugw_msg m = { .type = MCUGW_MSG_CONFIG };

        m.u.command.id = version;
        m.u.command.payload = (const uint8_t *)json;
        m.u.command.len = len;
        return link_manager_send(gw->link, device_id, &m);
}

static void gw_shadow_facts(void *ud, const char *device_id, unsigned fields, json_t *rep)
{
        struct gateway *gw = ud;
        struct link_device_counters c;

        if ((fields & SHADOW_F_COUNTERS) &&
            link_manager_device_counters(gw->link, device_id, &c) >= 0)
                json_object_set_new(rep, "counters",
                                    json_pack("{sI sI sI sI}", "telemetry", (json_int_t)c.telemetry,
                                              "handshakes", (json_int_t)c.handshakes,
                                              "authFailures", (json_int_t)c.auth_failures,
                                              "macErrors", (json_int_t)c.mac_errors));
        if (fields & SHADOW_F_OTA) {
                /* The shadow merges objects: always the same keys, so that nothing of an earlier
                 * transfer lingers; null (deleted) when there is none. */
                json_t *x = ota_device_json(gw->ota, device_id);
                json_object_set_new(rep, "ota",
                                    x ? json_pack("{sO sO sO sO}", "job", json_object_get(x, "job"),
                                                  "state", json_object_get(x, "state"), "percent",
                                                  json_object_get(x, "percent") ?: json_null(),
                                                  "reason",
                                                  json_object_get(x, "reason") ?: json_null())
                                      : json_null());
                json_decref(x);
        }
}

static void gw_shadow_ota(void *ud, const char *device_id)
{
        struct gateway *gw = ud;
        shadow_device_changed(gw->shadow, device_id);
}

static void gw_config_result(void *ud, const char *device_id, uint32_t version, int status,
                             const uint8_t *json, size_t len)
{
        struct gateway *gw = ud;
        shadow_config_result(gw->shadow, device_id, version, status, json, len);
}

static int gw_shadow_start(struct gateway *gw)
{
        int r;

        if (gw->conf->shadow.mode == SHADOW_OFF || !gw->conf->relay.hosts.n)
                return 0;
        if ((r = shadow_new(gw->loop, &gw->conf->shadow, gw_name(gw), gw->session, gw->registry,
                            gw->audit, &gw->shadow)) < 0)
                return r;
        shadow_set_device_io(gw->shadow, gw_shadow_send, gw_shadow_facts, gw);
        gw->shadow_listener = (struct link_listener){
                .ud = gw,
                .on_up = gw_shadow_up,
                .on_down = gw_shadow_down,
                .on_status = gw_shadow_status,
        };
        link_manager_add_listener(gw->link, &gw->shadow_listener);
        link_manager_set_config_handler(gw->link, gw_config_result, gw);
        ota_set_device_listener(gw->ota, gw_shadow_ota, gw);
        return shadow_ctl_add_commands(gw->control, gw->shadow);
}

static void gw_shadow_stop(struct gateway *gw)
{
        if (!gw->shadow)
                return;
        link_manager_remove_listener(gw->link, &gw->shadow_listener);
        link_manager_set_config_handler(gw->link, NULL, NULL);
        if (gw->ota)
                ota_set_device_listener(gw->ota, NULL, NULL);
        shadow_stop(gw->shadow);
        gw->shadow = NULL;
}

/* Rules, metrics, remediation and the baseline (docs/monitoring.md), after links and relay. */
static int gw_monitor_start(struct gateway *gw, const struct rule_set *rules)
{
        struct metrics_sources src = {
                .link = gw->link,
                .registry = gw->registry,
                .relay = gw->relay,
                .state_dir = gw->conf->state_dir,
        };
        int r;

        r = remedy_new(gw->loop, gw->audit, gw->registry, gw->link, gw->session, &gw->conf->monitor,
                       gw_name(gw), rules, &gw->remedy);
        if (r < 0)
                return log_error_errno(r, "cannot start the rule evaluator: %m");
        if ((r = metrics_new(gw->loop, &src, gw->conf->monitor.metrics_interval_usec / 1000,
                             &gw->metrics)) < 0)
                return r;
        metrics_set_listener(gw->metrics, remedy_on_delta, remedy_on_tick, gw->remedy);
        if ((r = baseline_new(gw->loop, gw->db, gw->audit, gw->registry, &gw->baseline_cfg,
                              remedy_rules_enabled(gw->remedy), &gw->baseline)) < 0)
                return r;
        if ((r = defender_new(gw->loop, gw->session, gw->metrics, gw->audit,
                              gw->conf->relay.client_id ? gw->conf->relay.client_id : gw_name(gw),
                              gw->conf->monitor.defender_interval_usec / 1000, &gw->defender)) <
                    0 ||
            (r = monitor_ctl_add_commands(gw->control, gw->remedy, gw->metrics, gw->baseline,
                                          gw->defender)) < 0)
                return r;
        if ((r = auditexport_new(gw->loop, gw->db, gw->audit, gw->relay, &gw->conf->audit_export,
                                 &gw->auditexport)) < 0)
                return r;
        baseline_check_drift(gw->baseline, "start");
        return 0;
}

/* Before anything touches the state: a second daemon on the same state directory would fight
 * the first over the control socket, the MQTT client id and the audit chain. */
static int gw_lock_state(struct gateway *gw)
{
        _cleanup_free_ char *path = NULL;
        pid_t holder = 0;
        int r;

        if (asprintf(&path, "%s/mcugwd.lock", gw->conf->state_dir) < 0)
                return -ENOMEM;
        r = lockfile_take(path, &holder);
        if (r == -EBUSY) {
                if (holder > 0)
                        log_error("state directory %s is in use by another mcugwd (PID %ld)",
                                  gw->conf->state_dir, (long)holder);
                else
                        log_error("state directory %s is in use by another mcugwd",
                                  gw->conf->state_dir);
                return r;
        }
        if (r < 0)
                return log_error_errno(r, "cannot lock %s: %m", path);
        gw->lock_fd = r;
        return 0;
}

/* The audit chain must end where the head stored with it (meta.audit_head) and the head file
 * outside it say; if not, its tail was lost (deleted, a truncated WAL, a wiped or restored
 * database) and the daemon does not extend it until the operator accepts that
 * (mcugwd --accept-audit-truncation), an audited decision. */
static int gw_check_audit_head(struct gateway *gw, const struct conf *conf)
{
        _cleanup_free_ char *head = NULL;
        struct audit_head_check chk;
        int r;

        if (asprintf(&head, "%s/%s", conf->state_dir, AUDIT_HEAD_FILE_NAME) < 0)
                return -ENOMEM;
        if ((r = audit_check_head(gw->audit, head, &chk)) < 0)
                return log_error_errno(r, "cannot read the audit log head: %m");
        if (!chk.ok) {
                log_error("%s", chk.reason);
                log_error("refusing to extend an audit log that lost records; if the loss is "
                          "understood, accept it (an audited record names the lost range): "
                          "mcugwd --accept-audit-truncation --config %s",
                          gw->config_path);
                /* Not one more record on this chain, not even daemon.stop. */
                audit_free(gw->audit);
                gw->audit = NULL;
                return -EBADMSG;
        }
        if (chk.head_file_missing)
                log_warning("audit: no head file %s yet; the database ends at seq %lld, which "
                            "is taken as the head from now on",
                            head, (long long)chk.db_seq);
        gw->audit_head_file_created = chk.head_file_missing;
        gw->audit_db_seq = chk.db_seq;
        return audit_set_head_file(gw->audit, head);
}

int gateway_new(uv_loop_t *loop, const char *config_path, struct conf_set *set,
                struct gateway **ret)
{
        struct gateway *gw = calloc(1, sizeof *gw);
        _cleanup_free_ char *db_path = NULL;
        struct conf *conf = set->conf;
        struct control_options o;
        struct cloud_session_claim claim = { conf->provision.claim_cert,
                                             conf->provision.claim_key };
        uint64_t wd_usec = 0;
        char cn[sizeof gw->name];
        int r;

        if (!gw) {
                conf_set_clear(set);
                return -ENOMEM;
        }
        gw->loop = loop;
        gw->lock_fd = -1;
        gw->conf = TAKE_PTR(set->conf);
        conf_baseline_config(gw->conf, &gw->baseline_cfg);
        gw->onboard = TAKE_PTR(set->onboard);
        gw->config_path = strdup(config_path);
        gw->started_ms = uv_now(loop);
        if (conf->gateway_name)
                snprintf(gw->name, sizeof gw->name, "%s", conf->gateway_name);
        else if (gethostname(gw->name, sizeof gw->name - 1) < 0)
                strcpy(gw->name, "mcugw");
        /* A provisioned gateway is known in the cloud by the thing RegisterThing named; Name=
         * stays the certificate's CN. */
        snprintf(cn, sizeof cn, "%s", gw->name);
        if (provision_thing_name(conf->state_dir, gw->name, sizeof gw->name) == 0)
                log_info("thing name %s (fleet provisioning, %s/thing-name)", gw->name,
                         conf->state_dir);
        log_set_level(conf->log_level);

        /* 1. directories */
        if ((r = mkdir_parents(conf->state_dir, 0750)) < 0) {
                log_error_errno(r, "cannot create state directory %s: %m", conf->state_dir);
                goto fail;
        }
        if ((r = mkdir_parents(conf->runtime_dir, 0755)) < 0) {
                log_error_errno(r, "cannot create runtime directory %s: %m", conf->runtime_dir);
                goto fail;
        }
        if ((r = gw_lock_state(gw)) < 0)
                goto fail;

        /* 2. database and audit log */
        if (asprintf(&db_path, "%s/mcugw.db", conf->state_dir) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = db_open(loop, db_path, conf->db.synchronous, conf->db.commit_interval_usec,
                         &gw->db)) < 0)
                goto fail;
        if ((r = audit_open(gw->db, &gw->audit)) < 0) {
                log_error_errno(r, "cannot open the audit log: %m");
                goto fail;
        }
        /* Before anything is appended: does the chain still end where the daemon left it? */
        if ((r = gw_check_audit_head(gw, conf)) < 0)
                goto fail;
        audit_set_listener(gw->audit, on_audit_record, gw);
        audit_log(gw->audit, "daemon", "daemon.start", gw_name(gw),
                  json_pack("{ss si}", "version", MCUGW_VERSION, "pid", (int)getpid()));
        if (gw->audit_head_file_created)
                audit_log(gw->audit, "daemon", "audit.head_file_created", "audit",
                          json_pack("{sI}", "database_seq", (json_int_t)gw->audit_db_seq));
        audit_log(gw->audit, "daemon", "config.load", config_path,
                  json_pack("{ss so}", "hash", conf->hash, "files", conf_files_json(conf)));

        /* 3. device registry, brought in line with DevicesDirectory */
        if ((r = registry_open(gw->db, gw->audit, &gw->registry)) < 0) {
                log_error_errno(r, "cannot open the device registry: %m");
                goto fail;
        }
        registry_sync_files(gw->registry, &set->devices);

        /* 4. control socket */
        o = control_opts(conf);
        if ((r = control_new(loop, gw->audit, &o, socket_activated_fd(), &gw->control)) < 0)
                goto fail;
        if ((r = control_add_commands(gw->control, core_commands, ELEMENTSOF(core_commands), gw)) <
                    0 ||
            (r = audit_ctl_new(loop, gw->audit, gw->control, &gw->audit_ctl)) < 0 ||
            (r = registry_ctl_add_commands(gw->control, gw->registry)) < 0 ||
            (r = telemetry_ctl_add_commands(gw->control)) < 0)
                goto fail;

        /* 4b. MCU links: gateway key, stream listeners, serial ports, JIT onboarding */
        if ((r = link_manager_new(loop, &conf->link, conf->state_dir, gw->audit, gw->registry,
                                  &gw->link)) < 0)
                goto fail;
        link_manager_set_onboard(gw->link, gw->onboard);
        registry_set_decorator(gw->registry, gw_decorate_device, gw);

        /* 4b'. BLE peripherals (BlueZ over D-Bus), bridged into links */
        if ((r = ble_manager_new(loop, &conf->ble, gw->audit, gw->link, &gw->ble)) < 0)
                goto fail;

        /* 4c. the cloud: the MQTT session (on the claim until provisioned), its clients: the
         * relay (durable outbox, device commands), provisioning, OTA jobs, monitoring */
        provision_recover(&conf->relay);
        /* The gateway decides the session's first credentials: the provisioning claim while the
         * certificate does not exist yet. */
        if ((r = cloud_session_new(loop, &conf->relay,
                                   provision_use_claim(&conf->relay, &conf->provision) ? &claim
                                                                                       : NULL,
                                   gw_name(gw), &gw->session)) < 0)
                goto fail;
        if ((r = relay_new(loop, &conf->relay, gw->session, gw_name(gw), gw->db, gw->audit,
                           &gw->relay)) < 0)
                goto fail;
        if ((r = cloud_session_start(gw->session)) < 0)
                goto fail;
        if ((r = provision_new(loop, &conf->provision, &conf->relay, conf->state_dir, cn,
                               gw->session, gw->audit, &gw->provision)) < 0 ||
            (r = provision_ctl_add_commands(gw->control, gw->provision)) < 0)
                goto fail;
        provision_set_thing_listener(gw->provision, gw_on_thing_name, gw);
        /* 4c'. OTA: image cache, signature check, transfers over the links */
        if ((r = ota_new(loop, &conf->ota, conf->state_dir, gw->db, gw->audit, gw->registry,
                         gw->link, &gw->ota)) < 0 ||
            (r = ota_ctl_add_commands(gw->control, gw->ota)) < 0)
                goto fail;
        link_manager_set_ota_handler(gw->link, ota_link_message, gw->ota);
        /* No cloud: local updates only. */
        if (conf->relay.hosts.n &&
            (r = ota_jobs_new(loop, &conf->ota, gw_name(gw), gw->session, gw->ota, gw->registry,
                              gw->audit, &gw->ota_jobs)) < 0)
                goto fail;
        gw_wire_relay(gw);
        /* 4c''. device shadows */
        if ((r = gw_shadow_start(gw)) < 0)
                goto fail;
        /* 4d. monitoring: rules on the metrics sampler's deltas, remediation, baseline */
        if ((r = gw_monitor_start(gw, &set->rules)) < 0)
                goto fail;

        uv_timer_init(loop, &gw->status_timer);
        gw->status_timer.data = gw;
        uv_timer_start(&gw->status_timer, on_status_timer, 5000, 5000);
        gw->have_status_timer = true;

        /* 5. signals */
        uv_signal_init(loop, &gw->sig_term);
        uv_signal_init(loop, &gw->sig_int);
        uv_signal_init(loop, &gw->sig_hup);
        gw->sig_term.data = gw->sig_int.data = gw->sig_hup.data = gw;
        uv_signal_start(&gw->sig_term, on_signal, SIGTERM);
        uv_signal_start(&gw->sig_int, on_signal, SIGINT);
        uv_signal_start(&gw->sig_hup, on_signal, SIGHUP);
        signal(SIGPIPE, SIG_IGN);

        /* 6. watchdog: ping at half the interval systemd expects */
        if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
                uv_timer_init(loop, &gw->watchdog);
                uv_timer_start(&gw->watchdog, on_watchdog, 0, MAX(wd_usec / 2000, (uint64_t)1));
                gw->have_watchdog = true;
        }

        conf_set_clear(set);
        db_commit(gw->db);
        *ret = gw;
        return 0;
fail:
        conf_set_clear(set);
        gateway_free(gw);
        return r;
}

int gateway_run(struct gateway *gw)
{
        log_info("gateway %s ready, control socket %s", gw_name(gw), gw->conf->control_socket);
        sd_notify(0, "READY=1");
        gw_notify_status(gw);
        uv_run(gw->loop, UV_RUN_DEFAULT);
        return gw->exit_status;
}

static void noop_close(uv_handle_t *h)
{
}

void gateway_free(struct gateway *gw)
{
        if (!gw)
                return;
        /* Reverse order of gateway_new. */
        if (gw->have_watchdog)
                uv_close((uv_handle_t *)&gw->watchdog, noop_close);
        if (gw->sig_term.loop) {
                uv_close((uv_handle_t *)&gw->sig_term, noop_close);
                uv_close((uv_handle_t *)&gw->sig_int, noop_close);
                uv_close((uv_handle_t *)&gw->sig_hup, noop_close);
        }
        if (gw->have_status_timer)
                uv_close((uv_handle_t *)&gw->status_timer, noop_close);
        auditexport_stop(gw->auditexport);
        gw->auditexport = NULL;
        defender_stop(gw->defender);
        gw->defender = NULL;
        baseline_stop(gw->baseline);
        gw->baseline = NULL;
        metrics_stop(gw->metrics);
        gw->metrics = NULL;
        remedy_stop(gw->remedy);
        gw->remedy = NULL;
        gw_shadow_stop(gw);
        ota_jobs_stop(gw->ota_jobs);
        gw->ota_jobs = NULL;
        if (gw->ota) {
                link_manager_set_ota_handler(gw->link, NULL, NULL);
                ota_stop(gw->ota);
                gw->ota = NULL;
        }
        gw_unwire_relay(gw);
        provision_stop(gw->provision);
        gw->provision = NULL;
        if (gw->relay) {
                relay_stop(gw->relay);
                gw->relay = NULL;
        }
        cloud_session_stop(gw->session);
        gw->session = NULL;
        if (gw->ble) {
                ble_manager_stop(gw->ble);
                gw->ble = NULL;
        }
        if (gw->link) {
                registry_set_decorator(gw->registry, NULL, NULL);
                link_manager_stop(gw->link);
                gw->link = NULL;
        }
        onboard_free(gw->onboard);
        gw->onboard = NULL;
        if (gw->control) {
                control_stop(gw->control);
                gw->control = NULL;
        }
        /* Modules free their memory in their handles' close callbacks, and some of them still
         * touch the database there (pre-commit hooks, last rows): let those run while the
         * database is open. */
        uv_run(gw->loop, UV_RUN_DEFAULT);
        audit_ctl_free(gw->audit_ctl); /* after the connections, whose work may refer to it */
        gw->audit_ctl = NULL;
        if (gw->audit) {
                audit_log(gw->audit, "daemon", "daemon.stop", gw_name(gw), NULL);
                audit_set_listener(gw->audit, NULL, NULL);
        }
        registry_free(gw->registry);
        if (gw->db)
                db_commit(gw->db);
        audit_free(gw->audit);
        db_close(gw->db);
        /* And the database's own timer. */
        uv_run(gw->loop, UV_RUN_DEFAULT);
        /* Last: the state is committed and closed; another daemon may take it now. */
        if (gw->lock_fd >= 0)
                close(gw->lock_fd);
        conf_free(gw->conf);
        free(gw->config_path);
        free(gw);
}
