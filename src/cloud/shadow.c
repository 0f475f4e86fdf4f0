/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/time-util.h"
#include "cloud/session.h"
#include "cloud/shadow.h"
#include "devices/registry.h"

/* A request without an answer (lost with the session, or never answered) frees the device for
 * the next one after this long. */
#define SHADOW_ANSWER_TIMEOUT_MS 30000u
/* Devices the module keeps state for: the registry's size bounds it; this is a backstop. */
#define SHADOW_DEVICES_MAX 100000u

#define _cleanup_json_ _cleanup_(json_decrefp) /* jansson's */

/* ---- configuration ----------------------------------------------------------------------- */

int shadow_config_parse_mode(const char *v, void *field, const char **reason)
{
        int *m = field;
        if (strcmp(v, "off") == 0)
                *m = SHADOW_OFF;
        else if (strcmp(v, "thing-per-device") == 0)
                *m = SHADOW_THING_PER_DEVICE;
        else if (strcmp(v, "gateway") == 0)
                *m = SHADOW_GATEWAY;
        else {
                *reason = "expected off, thing-per-device or gateway";
                return -EINVAL;
        }
        return 0;
}

static const char *const field_names[] = {
        "connected", "link", "firmware", "boot", "reset", "lastSeen", "state", "ota", "counters",
};

/* Reported=connected firmware …: space-separated; repeating the key adds to it, an empty value
 * resets it to nothing. */
int shadow_config_parse_reported(const char *v, void *field, const char **reason)
{
        unsigned *f = field, bits = 0;
        _cleanup_free_ char *copy = strdup(v);
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                size_t i;
                if (strcmp(w, "all") == 0) {
                        bits |= SHADOW_F_ALL;
                        continue;
                }
                for (i = 0; i < ELEMENTSOF(field_names); i++)
                        if (strcmp(w, field_names[i]) == 0)
                                break;
                if (i == ELEMENTSOF(field_names)) {
                        *reason = "unknown field (connected, link, firmware, boot, reset, "
                                  "lastSeen, state, ota, counters, all)";
                        return -EINVAL;
                }
                bits |= 1u << i;
        }
        *f = *v ? bits : 0;
        return 0;
}

static bool name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == ':' || c == '_' || c == '-';
}

int shadow_config_parse_template(const char *v, void *field, const char **reason)
{
        char probe[SHADOW_NAME_MAX * 2];
        /* Checked with a short device id: a long one can still overflow, which is refused per
         * device when it is expanded. */
        if (shadow_name(SHADOW_THING_PER_DEVICE, v, "gw", "dev", probe, sizeof probe) < 0 ||
            !strstr(v, "{device}")) {
                *reason = "name template must contain {device} and expand to 1..128 of "
                          "A-Z a-z 0-9 : _ -";
                return -EINVAL;
        }
        return config_parse_string(v, field, reason);
}

/* AllowedDesired=key …: space-separated, repeatable; an empty value clears the list. */
int shadow_config_parse_key(const char *v, void *field, const char **reason)
{
        _cleanup_free_ char *copy = strdup(v);
        char *save = NULL;
        int r;

        if (!copy)
                return -ENOMEM;
        if (!*v)
                return config_parse_strv(v, field, reason);
        for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
                /* A key the gateway reports itself must not be settable from the cloud. */
                for (size_t i = 0; i < ELEMENTSOF(field_names); i++)
                        if (strcmp(w, field_names[i]) == 0 || strcmp(w, "since") == 0) {
                                *reason = "this key is reported by the gateway";
                                return -EINVAL;
                        }
                for (const char *p = w; *p; p++)
                        if (!name_char(*p)) {
                                *reason = "keys are A-Z a-z 0-9 : _ -";
                                return -EINVAL;
                        }
                if (strlen(w) > 64) {
                        *reason = "key longer than 64";
                        return -EINVAL;
                }
                if ((r = config_parse_strv(w, field, reason)) < 0)
                        return r;
        }
        return 0;
}

int shadow_config_parse_depth(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, SHADOW_DEPTH_MAX, reason);
}

int shadow_config_parse_count(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 1000, reason);
}

const char *shadow_name_template(const struct shadow_options *o)
{
        if (o->name_template)
                return o->name_template;
        /* The same thing names as [OTA] ThingNameTemplate='s default. */
        return o->mode == SHADOW_GATEWAY ? "{device}" : "{gateway}-{device}";
}

/* ---- pure helpers ------------------------------------------------------------------------ */

int shadow_name(int mode, const char *tmpl, const char *gateway, const char *device, char *out,
                size_t n)
{
        size_t len = 0, max = mode == SHADOW_GATEWAY ? 64 : SHADOW_NAME_MAX;

        for (const char *p = tmpl; *p;) {
                const char *val = NULL;
                if (strncmp(p, "{gateway}", 9) == 0) {
                        val = gateway;
                        p += 9;
                } else if (strncmp(p, "{device}", 8) == 0) {
                        val = device;
                        p += 8;
                }
                if (val) {
                        for (; *val; val++) {
                                if (len + 1 >= n || !name_char(*val))
                                        return -EINVAL;
                                out[len++] = *val;
                        }
                        continue;
                }
                if (len + 1 >= n || !name_char(*p))
                        return -EINVAL;
                out[len++] = *p++;
        }
        if (len == 0 || len > max || len >= n)
                return -EINVAL;
        out[len] = 0;
        return (int)len;
}

int shadow_topic_parse(int mode, const char *gateway, const char *topic, char *ret_name,
                       enum shadow_op *ret_op)
{
        const char *p = topic, *name, *end;
        size_t glen = strlen(gateway);

        if (strncmp(p, "$aws/things/", 12) != 0)
                return -ENOENT;
        p += 12;
        if (mode == SHADOW_GATEWAY) {
                if (strncmp(p, gateway, glen) != 0 || strncmp(p + glen, "/shadow/name/", 13) != 0)
                        return -ENOENT;
                name = p + glen + 13;
                end = strchr(name, '/');
        } else {
                name = p;
                end = strchr(name, '/');
                if (!end || strncmp(end, "/shadow/", 8) != 0)
                        return -ENOENT;
        }
        if (!end || end == name || (size_t)(end - name) > SHADOW_NAME_MAX)
                return -ENOENT;
        memcpy(ret_name, name, (size_t)(end - name));
        ret_name[end - name] = 0;
        p = mode == SHADOW_GATEWAY ? end : end + 7; /* at "/get/…" */
        if (strcmp(p, "/get/accepted") == 0)
                *ret_op = SHADOW_OP_GET_ACCEPTED;
        else if (strcmp(p, "/get/rejected") == 0)
                *ret_op = SHADOW_OP_GET_REJECTED;
        else if (strcmp(p, "/update/accepted") == 0)
                *ret_op = SHADOW_OP_UPDATE_ACCEPTED;
        else if (strcmp(p, "/update/rejected") == 0)
                *ret_op = SHADOW_OP_UPDATE_REJECTED;
        else if (strcmp(p, "/update/delta") == 0)
                *ret_op = SHADOW_OP_UPDATE_DELTA;
        else
                return -ENOENT;
        return 0;
}

/* Levels of nesting of v: a scalar is 0, {} or [] of scalars 1. Stops counting past limit. */
static unsigned json_depth(json_t *v, unsigned limit)
{
        unsigned d = 0, sub;
        const char *k;
        json_t *x;
        size_t i;

        if (limit == 0)
                return json_is_object(v) || json_is_array(v) ? 1 : 0;
        if (json_is_object(v)) {
                json_object_foreach (v, k, x)
                        if ((sub = json_depth(x, limit - 1)) > d)
                                d = sub;
                return d + 1;
        }
        if (json_is_array(v)) {
                json_array_foreach (v, i, x)
                        if ((sub = json_depth(x, limit - 1)) > d)
                                d = sub;
                return d + 1;
        }
        return 0;
}

static bool key_allowed(const struct conf_strv *allowed, const char *k)
{
        for (size_t i = 0; i < allowed->n; i++)
                if (strcmp(allowed->v[i], k) == 0)
                        return true;
        return false;
}

int shadow_desired_check(json_t *state, const struct conf_strv *allowed, unsigned max_depth,
                         json_t **ret_config, json_t **ret_refused, const char **ret_reason)
{
        _cleanup_json_ json_t *config = NULL, *refused = NULL;
        _cleanup_free_ char *text = NULL;
        const char *k;
        json_t *v;

        if (!json_is_object(state)) {
                *ret_reason = "state is not an object";
                return -EINVAL;
        }
        /* The keys are one level; their values may nest max_depth - 1 more. */
        if (json_depth(state, max_depth + 1) > max_depth) {
                *ret_reason = "nested too deep";
                return -EINVAL;
        }
        config = json_object();
        refused = json_array();
        if (!config || !refused)
                return -ENOMEM;
        json_object_foreach (state, k, v) {
                if (key_allowed(allowed, k))
                        json_object_set(config, k, v);
                else
                        json_array_append_new(refused, json_string(k));
        }
        text = json_dumps(config, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        if (strlen(text) > SHADOW_CONFIG_MAX) {
                *ret_reason = "larger than a CONFIG message";
                return -EMSGSIZE;
        }
        *ret_config = TAKE_PTR(config);
        *ret_refused = TAKE_PTR(refused);
        return 0;
}

int shadow_delta_parse(const void *payload, size_t len, const struct conf_strv *allowed,
                       unsigned max_depth, uint64_t *ret_version, json_t **ret_config,
                       json_t **ret_refused, const char **ret_reason)
{
        _cleanup_json_ json_t *doc = NULL;
        json_t *ver;
        int r;

        if (len > SHADOW_DOC_MAX) {
                *ret_reason = "delta larger than a shadow document";
                return -EMSGSIZE;
        }
        /* JSON_DECODE_ANY is not set: a document is an object. Depth is bounded by the size. */
        doc = json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(doc)) {
                *ret_reason = "delta is not a JSON object";
                return -EINVAL;
        }
        ver = json_object_get(doc, "version");
        if (!json_is_integer(ver) || json_integer_value(ver) < 0) {
                *ret_reason = "delta without a version";
                return -EINVAL;
        }
        r = shadow_desired_check(json_object_get(doc, "state"), allowed, max_depth, ret_config,
                                 ret_refused, ret_reason);
        if (r < 0)
                return r;
        *ret_version = (uint64_t)json_integer_value(ver);
        return 0;
}

int shadow_result_parse(const uint8_t *json, size_t len, const struct conf_strv *allowed,
                        unsigned max_depth, json_t **ret_applied, const char **ret_reason)
{
        _cleanup_json_ json_t *doc = NULL, *config = NULL, *refused = NULL;
        int r;

        if (len > SHADOW_CONFIG_MAX) {
                *ret_reason = "result larger than a CONFIG message";
                return -EMSGSIZE;
        }
        doc = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
        if (!doc) {
                *ret_reason = "result is not JSON";
                return -EINVAL;
        }
        r = shadow_desired_check(doc, allowed, max_depth, &config, &refused, ret_reason);
        if (r < 0)
                return r;
        *ret_applied = TAKE_PTR(config);
        return 0;
}

/* ---- the module -------------------------------------------------------------------------- */

struct shadow_dev {
        char id[REGISTRY_ID_MAX + 1];
        char name[SHADOW_NAME_MAX + 1]; /* "" when the id makes no valid name */
        bool dirty;                     /* reported state may differ from last_reported */
        bool need_get;                  /* read the shadow (device up, 409, cloud back) */
        bool inflight;                  /* a request waits for its answer (token) */
        bool inflight_is_get;
        uint64_t inflight_until_ms;
        char token[48];
        char *inflight_doc;  /* the reported object sent, kept until it is accepted */
        char *last_reported; /* the reported object the cloud has (accepted) */
        uint64_t version;    /* the shadow version the gateway knows; 0: none */
        bool was_connected;
        int64_t since_s; /* when connected last changed */
        /* desired → device */
        json_t *pending; /* config to send; NULL if none */
        uint64_t pending_version;
        bool config_out; /* a CONFIG waits for its CONFIG_RESULT */
        uint64_t config_out_version;
        json_t *config_out_keys; /* the config sent, to name refused keys */
        json_t *applied;         /* applied settings to report; NULL if none */
        json_t *applied_out;     /* those in the update waiting for its answer */
        json_t *last_delta;      /* the last delta seen (for shadow get) */
        json_t *last_doc;        /* the last document read (get/accepted) */
        uint64_t updates, gets, rejected, conflicts, configs_sent, configs_applied;
        char last_error[96];
};

struct shadow {
        uv_loop_t *loop;
        uv_timer_t timer;
        struct shadow_options o;
        char *gateway;
        char *tmpl;
        struct cloud_session *session;
        struct registry *registry;
        struct audit *audit;
        shadow_send_fn send;
        shadow_facts_fn facts;
        void *io_ud;
        struct shadow_dev **devs;
        size_t n_devs, cap_devs, cursor;
        uint64_t token_seq;
        uint64_t publishes, updates, gets, rejected, conflicts, timeouts, deltas, deltas_refused,
                refused_keys, configs_sent, configs_applied, skipped_unchanged;
};

static struct shadow_dev *dev_find(struct shadow *s, const char *id)
{
        for (size_t i = 0; i < s->n_devs; i++)
                if (strcmp(s->devs[i]->id, id) == 0)
                        return s->devs[i];
        return NULL;
}

static struct shadow_dev *dev_by_name(struct shadow *s, const char *name)
{
        for (size_t i = 0; i < s->n_devs; i++)
                if (strcmp(s->devs[i]->name, name) == 0)
                        return s->devs[i];
        return NULL;
}

static struct shadow_dev *dev_get(struct shadow *s, const char *id)
{
        struct shadow_dev *d = dev_find(s, id);
        if (d)
                return d;
        if (strlen(id) > REGISTRY_ID_MAX || s->n_devs >= SHADOW_DEVICES_MAX)
                return NULL;
        if (s->n_devs == s->cap_devs) {
                size_t cap = s->cap_devs ? s->cap_devs * 2 : 64;
                struct shadow_dev **n = realloc(s->devs, cap * sizeof *n);
                if (!n)
                        return NULL;
                s->devs = n;
                s->cap_devs = cap;
        }
        d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        snprintf(d->id, sizeof d->id, "%s", id);
        if (shadow_name(s->o.mode, s->tmpl, s->gateway, id, d->name, sizeof d->name) < 0) {
                log_device(LOG_WARNING, id, "shadow: no valid %s name from template %s",
                           s->o.mode == SHADOW_GATEWAY ? "shadow" : "thing", s->tmpl);
                d->name[0] = 0;
        }
        d->since_s = now_realtime_usec() / (int64_t)USEC_PER_SEC;
        s->devs[s->n_devs++] = d;
        return d;
}

static void dev_free(struct shadow_dev *d)
{
        if (!d)
                return;
        free(d->inflight_doc);
        free(d->last_reported);
        json_decref(d->pending);
        json_decref(d->config_out_keys);
        json_decref(d->applied);
        json_decref(d->applied_out);
        json_decref(d->last_delta);
        json_decref(d->last_doc);
        free(d);
}

static void shadow_topic(struct shadow *s, const struct shadow_dev *d, const char *op, char *out,
                         size_t n)
{
        if (s->o.mode == SHADOW_GATEWAY)
                snprintf(out, n, "$aws/things/%s/shadow/name/%s/%s", s->gateway, d->name, op);
        else
                snprintf(out, n, "$aws/things/%s/shadow/%s", d->name, op);
}

/* The reset causes of STATUS (MCUGW_RESET_* in mcugw/wire.h, in that order) by name. */
static const char *reset_name(unsigned c)
{
        static const char *const names[] = {
                "unknown", "power-on", "pin", "watchdog", "software", "brownout", "fault", "ota",
        };
        return c < ELEMENTSOF(names) ? names[c] : "unknown";
}

/* The reported object of a device now (gateway fields only). */
static json_t *build_reported(struct shadow *s, struct shadow_dev *d)
{
        const struct registry_device *rd = registry_find(s->registry, d->id);
        unsigned f = s->o.reported;
        json_t *o = json_object();

        if (!o || !rd)
                return o;
        if (rd->connected != d->was_connected) {
                d->was_connected = rd->connected;
                d->since_s = now_realtime_usec() / (int64_t)USEC_PER_SEC;
        }
        if (f & SHADOW_F_CONNECTED) {
                json_object_set_new(o, "connected", json_boolean(rd->connected));
                json_object_set_new(o, "since", json_integer(d->since_s));
        }
        /* Unknown values are null, not left out: the shadow keeps what is not overwritten. */
        if (f & SHADOW_F_LINK)
                json_object_set_new(o, "link", rd->link[0] ? json_string(rd->link) : json_null());
        if (f & SHADOW_F_FIRMWARE)
                json_object_set_new(o, "firmware",
                                    rd->fw_version[0] ? json_string(rd->fw_version) : json_null());
        if (f & SHADOW_F_BOOT)
                json_object_set_new(o, "boot", json_integer(rd->boot_counter));
        if (f & SHADOW_F_RESET)
                json_object_set_new(o, "reset", json_string(reset_name(rd->reset_cause)));
        if (f & SHADOW_F_LAST_SEEN)
                json_object_set_new(o, "lastSeen",
                                    rd->last_seen_us
                                            ? json_integer(rd->last_seen_us / (int64_t)USEC_PER_SEC)
                                            : json_null());
        if (f & SHADOW_F_STATE)
                json_object_set_new(o, "state", json_string(device_state_to_string(rd->state)));
        if (s->facts && (f & (SHADOW_F_OTA | SHADOW_F_COUNTERS)))
                s->facts(s->io_ud, d->id, f, o);
        return o;
}

static void audit_rejected(struct shadow *s, struct shadow_dev *d, const char *what, int code,
                           const char *reason, json_t *keys)
{
        json_t *det = json_pack("{ss ss}", "what", what, "reason", reason ? reason : "");
        if (code)
                json_object_set_new(det, "code", json_integer(code));
        if (keys)
                json_object_set(det, "keys", keys);
        snprintf(d->last_error, sizeof d->last_error, "%s: %s", what, reason ? reason : "");
        d->rejected++;
        s->rejected++;
        audit_log(s->audit, "daemon", "shadow.rejected", d->id, det);
}

static int publish(struct shadow *s, struct shadow_dev *d, const char *op, json_t *req)
{
        char topic[384];
        _cleanup_free_ char *text = NULL;
        int r;

        snprintf(d->token, sizeof d->token, "mcugw-%" PRIu64, ++s->token_seq);
        json_object_set_new(req, "clientToken", json_string(d->token));
        text = json_dumps(req, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        if (strlen(text) > SHADOW_DOC_MAX)
                return -EMSGSIZE;
        shadow_topic(s, d, op, topic, sizeof topic);
        r = cloud_session_publish(s->session, topic, text, strlen(text));
        if (r < 0)
                return r;
        s->publishes++;
        d->inflight = true;
        d->inflight_until_ms = uv_now(s->loop) + SHADOW_ANSWER_TIMEOUT_MS;
        return 0;
}

/* One request for a device, if it has work: a read, the applied configuration, its state.
 * Returns 1 if a publish went out, 0 if there was nothing to send, -errno. */
static int dev_work(struct shadow *s, struct shadow_dev *d)
{
        _cleanup_json_ json_t *req = NULL, *rep = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!d->name[0])
                return 0;
        if (d->need_get) {
                req = json_object();
                if ((r = publish(s, d, "get", req)) < 0)
                        return r;
                d->need_get = false;
                d->inflight_is_get = true;
                d->gets++;
                s->gets++;
                return 1;
        }
        if (!d->dirty && !d->applied)
                return 0;
        if (!registry_find(s->registry, d->id)) {
                d->dirty = false; /* removed from the registry: nothing to report */
                return 0;
        }
        rep = build_reported(s, d);
        if (!rep)
                return -ENOMEM;
        text = json_dumps(rep, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text)
                return -ENOMEM;
        if (!d->applied && d->last_reported && strcmp(text, d->last_reported) == 0) {
                /* The cloud has this already: coalesced away, no publish. */
                d->dirty = false;
                s->skipped_unchanged++;
                return 0;
        }
        if (d->applied)
                json_object_update(rep, d->applied);
        req = json_pack("{s{sO}}", "state", "reported", rep);
        /* The applied configuration is reported against the version that was read, so that a
         * desired state changed in between is a conflict (409) and is read again, not
         * overwritten as done. */
        if (d->applied && d->version)
                json_object_set_new(req, "version", json_integer((json_int_t)d->version));
        r = publish(s, d, "update", req);
        if (r == -EMSGSIZE) {
                audit_rejected(s, d, "reported", 413, "document over the size limit", NULL);
                json_decref(TAKE_PTR(d->applied));
                d->dirty = false;
                return 0;
        }
        if (r < 0)
                return r;
        free(d->inflight_doc);
        d->inflight_doc = TAKE_PTR(text);
        json_decref(d->applied_out);
        d->applied_out = TAKE_PTR(d->applied);
        d->inflight_is_get = false;
        d->dirty = false;
        d->updates++;
        s->updates++;
        return 1;
}

/* An update that got no answer: its applied settings are still to report. */
static void unanswered_update(struct shadow_dev *d)
{
        d->dirty = true;
        if (!d->applied_out)
                return;
        if (d->applied)
                json_object_update_missing(d->applied, d->applied_out);
        else
                d->applied = json_incref(d->applied_out);
        json_decref(TAKE_PTR(d->applied_out));
}

static void session_came_up(struct shadow *s)
{
        const struct registry_device *rd;

        /* Every device the registry knows: what changed while the cloud was away goes out now,
         * once (unchanged documents cost nothing), and the connected ones read their desired
         * state, whose deltas were missed. */
        for (size_t i = 0; (rd = registry_get(s->registry, i)); i++) {
                struct shadow_dev *d = dev_get(s, rd->id);
                if (!d)
                        continue;
                if (d->inflight && !d->inflight_is_get)
                        unanswered_update(d);
                d->dirty = true;
                d->inflight = false;
                if (rd->connected)
                        d->need_get = true;
        }
}

/* Every CONNACK, even one right after a drop that no tick saw: deltas of that gap are read. */
static void on_session(void *userdata, enum cloud_session_event ev)
{
        struct shadow *s = userdata;

        if (ev == CLOUD_SESSION_UP)
                session_came_up(s);
}

static void on_timer(uv_timer_t *t)
{
        struct shadow *s = t->data;
        unsigned budget = s->o.updates_per_interval;
        uint64_t now = uv_now(s->loop);

        if (!cloud_session_up(s->session) || !s->n_devs)
                return;
        /* Round robin from where the last tick stopped, so that every device gets its turn. */
        for (size_t k = 0; k < s->n_devs && budget; k++) {
                struct shadow_dev *d = s->devs[(s->cursor + k) % s->n_devs];
                int r;
                if (d->inflight) {
                        if (now < d->inflight_until_ms)
                                continue;
                        d->inflight = false;
                        s->timeouts++;
                        if (d->inflight_is_get)
                                d->need_get = true;
                        else
                                unanswered_update(d);
                }
                r = dev_work(s, d);
                if (r < 0) {
                        log_device(LOG_DEBUG, d->id, "shadow: request not sent: %s", strerror(-r));
                        break; /* the session went away, most likely: next tick */
                }
                if (r > 0) {
                        budget--;
                        s->cursor = (s->cursor + k + 1) % s->n_devs;
                }
        }
}

/* ---- desired → device -------------------------------------------------------------------- */

static void send_pending(struct shadow *s, struct shadow_dev *d)
{
        const struct registry_device *rd = registry_find(s->registry, d->id);
        _cleanup_free_ char *text = NULL;
        int r;

        if (!d->pending || d->config_out || !s->send || !rd || !rd->connected)
                return;
        text = json_dumps(d->pending, JSON_COMPACT);
        if (!text)
                return;
        r = s->send(s->io_ud, d->id, (uint32_t)d->pending_version, text, strlen(text));
        if (r < 0) {
                /* Offline or busy: it goes when the device comes back (shadow_device_up). */
                log_device(LOG_DEBUG, d->id, "shadow: CONFIG not sent: %s", strerror(-r));
                return;
        }
        d->config_out = true;
        d->config_out_version = d->pending_version;
        json_decref(d->config_out_keys);
        d->config_out_keys = TAKE_PTR(d->pending);
        d->configs_sent++;
        s->configs_sent++;
}

static void take_delta(struct shadow *s, struct shadow_dev *d, json_t *state, uint64_t version)
{
        _cleanup_json_ json_t *config = NULL, *refused = NULL;
        const char *reason = NULL;
        int r;

        s->deltas++;
        json_decref(d->last_delta);
        d->last_delta = json_incref(state);
        r = shadow_desired_check(state, &s->o.allowed, s->o.max_depth, &config, &refused, &reason);
        if (r < 0) {
                s->deltas_refused++;
                log_device(LOG_WARNING, d->id, "shadow: desired state v%" PRIu64 " refused: %s",
                           version, reason);
                audit_rejected(s, d, "desired", 0, reason, NULL);
                return;
        }
        if (json_array_size(refused)) {
                s->refused_keys += json_array_size(refused);
                audit_rejected(s, d, "desired", 0, "key not allowed", refused);
        }
        if (!json_object_size(config))
                return;
        json_decref(d->pending);
        d->pending = TAKE_PTR(config);
        d->pending_version = version;
        send_pending(s, d);
}

static json_t *load(const uint8_t *p, size_t len)
{
        if (len > SHADOW_DOC_MAX)
                return NULL;
        return json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, NULL);
}

static bool is_ours(const struct shadow_dev *d, json_t *doc)
{
        const char *tok = json_string_value(json_object_get(doc, "clientToken"));
        return d->inflight && tok && strcmp(tok, d->token) == 0;
}

static void on_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct shadow *s = ud;
        char name[SHADOW_NAME_MAX + 1];
        enum shadow_op op;
        struct shadow_dev *d;
        _cleanup_json_ json_t *doc = NULL;
        json_t *ver;
        int code;

        if (shadow_topic_parse(s->o.mode, s->gateway, topic, name, &op) < 0 ||
            !(d = dev_by_name(s, name)))
                return;
        doc = load(payload, len);
        if (!json_is_object(doc)) {
                log_device(LOG_WARNING, d->id, "shadow: %s: not a JSON object", topic);
                return;
        }
        ver = json_object_get(doc, "version");
        switch (op) {
        case SHADOW_OP_UPDATE_DELTA: {
                uint64_t v = json_is_integer(ver) ? (uint64_t)json_integer_value(ver) : 0;
                if (v && v < d->version) {
                        /* Older than a version seen since (messages on different topics may
                         * come out of order): what is desired now is read, not guessed. */
                        d->need_get = true;
                        return;
                }
                if (v > d->version)
                        d->version = v;
                take_delta(s, d, json_object_get(doc, "state"), v);
                return;
        }
        case SHADOW_OP_GET_ACCEPTED: {
                json_t *delta = json_object_get(json_object_get(doc, "state"), "delta");
                if (!is_ours(d, doc))
                        return;
                d->inflight = false;
                if (json_is_integer(ver))
                        d->version = (uint64_t)json_integer_value(ver);
                json_decref(d->last_doc);
                d->last_doc = json_incref(doc);
                if (delta)
                        take_delta(s, d, delta, d->version);
                return;
        }
        case SHADOW_OP_UPDATE_ACCEPTED:
                if (json_is_integer(ver) && (uint64_t)json_integer_value(ver) > d->version)
                        d->version = (uint64_t)json_integer_value(ver);
                if (!is_ours(d, doc))
                        return; /* another writer (the operator's desired) */
                d->inflight = false;
                free(d->last_reported);
                d->last_reported = TAKE_PTR(d->inflight_doc);
                json_decref(TAKE_PTR(d->applied_out));
                return;
        case SHADOW_OP_GET_REJECTED:
        case SHADOW_OP_UPDATE_REJECTED: {
                const char *msg = json_string_value(json_object_get(doc, "message"));
                bool get = op == SHADOW_OP_GET_REJECTED;
                if (!is_ours(d, doc))
                        return;
                d->inflight = false;
                code = (int)json_integer_value(json_object_get(doc, "code"));
                if (get && code == 404) {
                        /* No shadow yet: nothing desired. */
                        d->version = 0;
                        return;
                }
                if (!get && code == 409) {
                        /* Someone changed the shadow since it was read: read it again; its
                         * delta says what is still to do. The applied settings go out again
                         * with the device's next answer. */
                        d->conflicts++;
                        s->conflicts++;
                        d->need_get = true;
                        d->dirty = true;
                        json_decref(TAKE_PTR(d->applied_out));
                        log_device(LOG_INFO, d->id, "shadow: version conflict, reading it again");
                        return;
                }
                /* 400, 413, …: this document will not be accepted; sending it again would only
                 * repeat the answer. It is taken as sent; the next change is tried afresh. */
                log_device(LOG_WARNING, d->id, "shadow: %s rejected: %d %s", get ? "get" : "update",
                           code, msg ? msg : "");
                audit_rejected(s, d, get ? "get" : "reported", code, msg, NULL);
                if (!get) {
                        free(d->last_reported);
                        d->last_reported = TAKE_PTR(d->inflight_doc);
                        json_decref(TAKE_PTR(d->applied_out));
                }
                return;
        }
        }
}

/* ---- API --------------------------------------------------------------------------------- */

int shadow_new(uv_loop_t *loop, const struct shadow_options *o, const char *gateway,
               struct cloud_session *session, struct registry *registry, struct audit *audit,
               struct shadow **ret)
{
        static const char *const ops[] = { "+/accepted", "+/rejected", "update/delta" };
        struct shadow *s = calloc(1, sizeof *s);
        char filter[256];
        int r;

        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->o = *o;
        s->o.name_template = NULL;
        s->o.allowed = (struct conf_strv){ 0 };
        s->gateway = strdup(gateway);
        s->tmpl = strdup(shadow_name_template(o));
        s->session = session;
        s->registry = registry;
        s->audit = audit;
        if (!s->gateway || !s->tmpl || conf_strv_copy(&s->o.allowed, &o->allowed) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (!s->o.max_depth)
                s->o.max_depth = 3;
        if (!s->o.updates_per_interval)
                s->o.updates_per_interval = 10;
        if (!s->o.update_interval_usec)
                s->o.update_interval_usec = USEC_PER_SEC;
        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                if (o->mode == SHADOW_GATEWAY)
                        snprintf(filter, sizeof filter, "$aws/things/%s/shadow/name/+/%s", gateway,
                                 ops[i]);
                else
                        snprintf(filter, sizeof filter, "$aws/things/+/shadow/%s", ops[i]);
                if ((r = cloud_session_subscribe(session, filter, on_message, s)) < 0) {
                        log_error_errno(r, "shadow: cannot subscribe to %s: %m", filter);
                        cloud_session_forget(session, s);
                        goto fail;
                }
        }
        if ((r = cloud_session_add_listener(session, on_session, s)) < 0) {
                cloud_session_forget(session, s);
                goto fail;
        }
        uv_timer_init(loop, &s->timer);
        s->timer.data = s;
        uv_timer_start(&s->timer, on_timer, s->o.update_interval_usec / 1000,
                       MAX(s->o.update_interval_usec / 1000, (uint64_t)1));
        *ret = s;
        return 0;
fail:
        conf_strv_clear(&s->o.allowed);
        free(s->gateway);
        free(s->tmpl);
        free(s);
        return r;
}

static void on_closed(uv_handle_t *h)
{
        struct shadow *s = h->data;
        for (size_t i = 0; i < s->n_devs; i++)
                dev_free(s->devs[i]);
        free(s->devs);
        conf_strv_clear(&s->o.allowed);
        free(s->gateway);
        free(s->tmpl);
        free(s);
}

void shadow_stop(struct shadow *s)
{
        if (!s)
                return;
        cloud_session_forget(s->session, s);
        uv_close((uv_handle_t *)&s->timer, on_closed);
}

void shadow_set_device_io(struct shadow *s, shadow_send_fn send, shadow_facts_fn facts, void *ud)
{
        s->send = send;
        s->facts = facts;
        s->io_ud = ud;
}

void shadow_device_changed(struct shadow *s, const char *device_id)
{
        struct shadow_dev *d = s ? dev_get(s, device_id) : NULL;
        const struct registry_device *rd;
        if (!d)
                return;
        d->dirty = true;
        rd = registry_find(s->registry, device_id);
        if (!rd || !rd->connected)
                d->config_out = false; /* its answer will not come: sent again when it is back */
}

void shadow_device_up(struct shadow *s, const char *device_id)
{
        struct shadow_dev *d = s ? dev_get(s, device_id) : NULL;
        if (!d)
                return;
        d->dirty = true;
        d->config_out = false;
        if (d->config_out_keys && !d->pending) {
                /* A CONFIG lost with the last session is still to do. */
                d->pending = TAKE_PTR(d->config_out_keys);
                d->pending_version = d->config_out_version;
        }
        if (cloud_session_up(s->session))
                d->need_get = true; /* the current delta comes with the answer */
        else
                send_pending(s, d); /* no cloud: what was last known */
}

void shadow_config_result(struct shadow *s, const char *device_id, uint32_t version, int status,
                          const uint8_t *json, size_t len)
{
        struct shadow_dev *d = s ? dev_find(s, device_id) : NULL;
        _cleanup_json_ json_t *applied = NULL, *refused = NULL;
        const char *reason = NULL, *k;
        json_t *v;
        int r;

        if (!d || !d->config_out || version != (uint32_t)d->config_out_version) {
                log_device(LOG_DEBUG, device_id, "shadow: CONFIG_RESULT %u not expected", version);
                return;
        }
        d->config_out = false;
        if (status < 0) {
                audit_rejected(s, d, "config", status, "the device applied nothing",
                               d->config_out_keys);
                goto next;
        }
        r = shadow_result_parse(json, len, &s->o.allowed, s->o.max_depth, &applied, &reason);
        if (r < 0) {
                audit_rejected(s, d, "config", 0, reason, NULL);
                goto next;
        }
        refused = json_array();
        json_object_foreach (d->config_out_keys, k, v)
                if (!json_object_get(applied, k))
                        json_array_append_new(refused, json_string(k));
        if (json_array_size(refused))
                audit_rejected(s, d, "config", 0, "refused by the device", refused);
        if (json_object_size(applied)) {
                json_t *keys = json_array();
                json_object_foreach (applied, k, v)
                        json_array_append_new(keys, json_string(k));
                audit_log(s->audit, "device", "shadow.applied", d->id,
                          json_pack("{sI so}", "version", (json_int_t)d->config_out_version, "keys",
                                    keys));
                d->configs_applied++;
                s->configs_applied++;
                if (!d->applied)
                        d->applied = json_object();
                json_object_update(d->applied, applied);
        }
next:
        json_decref(TAKE_PTR(d->config_out_keys));
        send_pending(s, d); /* a newer delta that waited */
}

int shadow_device_json(struct shadow *s, const char *device_id, json_t **ret)
{
        struct shadow_dev *d = s ? dev_find(s, device_id) : NULL;
        json_t *o;

        if (!d)
                return -ENOENT;
        o = json_pack("{ss sI}", "name", d->name, "version", (json_int_t)d->version);
        if (!o)
                return -ENOMEM;
        if (d->last_doc)
                json_object_set(o, "document", d->last_doc);
        if (d->last_delta)
                json_object_set(o, "last_delta", d->last_delta);
        if (d->last_reported)
                json_object_set_new(o, "reported", json_loads(d->last_reported, 0, NULL));
        if (d->pending)
                json_object_set(o, "pending", d->pending);
        *ret = o;
        return 0;
}

void shadow_decorate(struct shadow *s, const char *device_id, json_t *obj)
{
        struct shadow_dev *d = s ? dev_find(s, device_id) : NULL;
        json_t *o;

        if (!d)
                return;
        o = json_pack("{ss sI sb sI sI sI sI}", "name", d->name, "version", (json_int_t)d->version,
                      "reported_current", d->last_reported && !d->dirty, "updates",
                      (json_int_t)d->updates, "configs_sent", (json_int_t)d->configs_sent,
                      "configs_applied", (json_int_t)d->configs_applied, "rejected",
                      (json_int_t)d->rejected);
        if (!o)
                return;
        if (d->pending || d->config_out_keys)
                json_object_set(o, "pending_delta", d->pending ? d->pending : d->config_out_keys);
        if (d->last_error[0])
                json_object_set_new(o, "last_error", json_string(d->last_error));
        json_object_set_new(obj, "shadow", o);
}

json_t *shadow_status_json(struct shadow *s)
{
        size_t dirty = 0;
        for (size_t i = 0; i < s->n_devs; i++)
                dirty += s->devs[i]->dirty || s->devs[i]->need_get || s->devs[i]->applied;
        return json_pack("{ss sI sI sI sI sI sI sI sI sI sI sI sI sI}", "mode",
                         s->o.mode == SHADOW_GATEWAY ? "gateway" : "thing-per-device", "devices",
                         (json_int_t)s->n_devs, "waiting", (json_int_t)dirty, "publishes",
                         (json_int_t)s->publishes, "updates", (json_int_t)s->updates, "gets",
                         (json_int_t)s->gets, "unchanged", (json_int_t)s->skipped_unchanged,
                         "deltas", (json_int_t)s->deltas, "configs_sent",
                         (json_int_t)s->configs_sent, "configs_applied",
                         (json_int_t)s->configs_applied, "rejected", (json_int_t)s->rejected,
                         "refused_keys", (json_int_t)s->refused_keys, "conflicts",
                         (json_int_t)s->conflicts, "timeouts", (json_int_t)s->timeouts);
}
