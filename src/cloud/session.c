/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/alloc-util.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/ratelimit.h"
#include "basic/time-util.h"
#include "cloud/mqtt.h"
#include "cloud/pacer.h"
#include "cloud/session.h"
#include "cloud/submap.h"
#include "cloud/topic.h"

/* One line per this many ms at most while the control queue overflows. */
#define DROP_LOG_INTERVAL_MS 10000
/* Publishes handed out per timer callback before yielding to the loop. */
#define RUN_BATCH 64

struct listener {
        cloud_session_fn fn; /* NULL: forgotten while listeners were being called */
        void *userdata;
};

struct cloud_session {
        uv_loop_t *loop;
        struct mqtt *mqtt; /* NULL: no [MQTT] Host= */
        size_t max_payload;
        bool hold, stopping;

        struct pacer pacer;
        uv_timer_t timer;
        bool telemetry_kick; /* tell telemetry to try again (the hold was lifted) */

        struct submap subs;
        cloud_session_message_fn on_unmatched;
        void *unmatched_ud;

        struct listener *listeners;
        size_t n_listeners, n_listeners_alloc;
        unsigned dispatching;

        struct cloud_session_telemetry telemetry;
        struct ratelimit_run drop_log;
};

static bool connected(struct cloud_session *s)
{
        return s && s->mqtt && !s->stopping && mqtt_state(s->mqtt) == MQTT_CONNECTED;
}

static void run(struct cloud_session *s);

static void on_timer(uv_timer_t *t)
{
        run(t->data);
}

/* Wake up when the next publish is due (the pacer knows when). */
static void kick(struct cloud_session *s)
{
        uint64_t delay = 0;

        if (s->stopping)
                return;
        if (pacer_next(&s->pacer, now_monotonic_usec(), &delay) == PACER_NONE && !s->telemetry_kick)
                return;
        uv_timer_start(&s->timer, on_timer, (delay + 999) / 1000, 0);
}

static void telemetry_ready(struct cloud_session *s)
{
        if (s->telemetry.ready)
                s->telemetry.ready(s->telemetry.userdata);
}

static void run(struct cloud_session *s)
{
        if (s->telemetry_kick && connected(s) && !s->hold) {
                s->telemetry_kick = false;
                telemetry_ready(s);
        }
        for (unsigned i = 0; i < RUN_BATCH; i++) {
                uint64_t now = now_monotonic_usec(), delay;
                enum pacer_class c;
                struct pacer_msg m;
                int r;

                if (!connected(s))
                        return;
                c = pacer_next(&s->pacer, now, &delay);
                if (c == PACER_NONE)
                        return;
                if (delay) {
                        kick(s);
                        return;
                }
                if (c == PACER_TELEMETRY) {
                        /* The relay publishes from inside ready(), while the grant lasts. */
                        pacer_telemetry_grant(&s->pacer, true);
                        telemetry_ready(s);
                        pacer_telemetry_grant(&s->pacer, false);
                        continue;
                }
                if (!pacer_control_pop(&s->pacer, now, &m))
                        return;
                r = mqtt_publish(s->mqtt, m.topic, m.payload, m.len, false, NULL);
                if (r < 0)
                        log_warning_errno(r, "cloud session: queued publish on %s failed: %m",
                                          m.topic);
                pacer_msg_free(&m);
        }
        kick(s);
}

/* ---- listeners ---------------------------------------------------------------------------- */

static void compact_listeners(struct cloud_session *s)
{
        size_t k = 0;
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].fn)
                        s->listeners[k++] = s->listeners[i];
        s->n_listeners = k;
}

static void notify(struct cloud_session *s, enum cloud_session_event ev)
{
        s->dispatching++;
        /* By index: a listener may add another (the array may move) or forget itself. */
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].fn)
                        s->listeners[i].fn(s->listeners[i].userdata, ev);
        if (--s->dispatching == 0)
                compact_listeners(s);
}

int cloud_session_add_listener(struct cloud_session *s, cloud_session_fn fn, void *userdata)
{
        int r;

        if (!s || !fn)
                return -EINVAL;
        if ((r = GREEDY_REALLOC(s->listeners, s->n_listeners_alloc, s->n_listeners + 1)) < 0)
                return r;
        s->listeners[s->n_listeners++] = (struct listener){ fn, userdata };
        return 0;
}

void cloud_session_forget(struct cloud_session *s, void *userdata)
{
        if (!s)
                return;
        submap_forget(&s->subs, userdata);
        if (s->on_unmatched && s->unmatched_ud == userdata)
                s->on_unmatched = NULL;
        if (s->telemetry.userdata == userdata)
                s->telemetry = (struct cloud_session_telemetry){ 0 };
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].userdata == userdata)
                        s->listeners[i].fn = NULL;
        /* While listeners are being called the slots stay (notify() walks them by index). */
        if (!s->dispatching)
                compact_listeners(s);
}

/* ---- MQTT callbacks ----------------------------------------------------------------------- */

static void on_connected(void *ud, bool session_present)
{
        struct cloud_session *s = ud;
        notify(s, CLOUD_SESSION_UP);
        kick(s);
}

static void on_connect_failed(void *ud, const char *reason)
{
        notify(ud, CLOUD_SESSION_FAILED);
}

static void on_disconnected(void *ud)
{
        struct cloud_session *s = ud;
        /* Not yet handed to libmosquitto: their owners retry on their own schedule (a job
         * update, a Defender report), and a provisioning request must not go out again under
         * other credentials. */
        size_t n = pacer_flush(&s->pacer);
        if (n)
                log_notice("cloud session: %zu queued publish(es) dropped: the connection went "
                           "down",
                           n);
        notify(s, CLOUD_SESSION_DOWN);
}

static void on_published(void *ud, int mid, int reason)
{
        struct cloud_session *s = ud;
        if (s->telemetry.published)
                s->telemetry.published(s->telemetry.userdata, mid, reason);
}

static void on_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct cloud_session *s = ud;
        const struct submap_entry *e = submap_find(&s->subs, topic);

        if (e)
                e->fn(e->userdata, topic, payload, len);
        else if (s->on_unmatched)
                s->on_unmatched(s->unmatched_ud, topic, payload, len);
}

/* ---- API ---------------------------------------------------------------------------------- */

static bool provisioning_topic(const char *topic)
{
        return strncmp(topic, "$aws/certificates/", 18) == 0 ||
               strncmp(topic, "$aws/provisioning-templates/", 28) == 0;
}

int cloud_session_publish(struct cloud_session *s, const char *topic, const void *payload,
                          size_t len)
{
        uint64_t held;
        int r;

        if (!connected(s))
                return -ENOTCONN;
        if (len > s->max_payload)
                return -EMSGSIZE;
        /* On a claim only fleet provisioning may publish: its policy allows nothing else, and
         * AWS IoT closes the connection of a client that publishes where it may not. */
        if (s->hold && !provisioning_topic(topic))
                return -EPERM;
        r = pacer_control(&s->pacer, topic, payload, len, now_monotonic_usec());
        if (r == 1)
                return mqtt_publish(s->mqtt, topic, payload, len, false, NULL);
        if (r == -ENOBUFS) {
                if (ratelimit_run_error(&s->drop_log, now_monotonic_msec(), &held))
                        log_warning("cloud session: publish queue full (%zu messages, %llu "
                                    "bytes): publish on %s dropped (%llu dropped in all, %llu "
                                    "since the last line)",
                                    s->pacer.n, (unsigned long long)s->pacer.queue_bytes, topic,
                                    (unsigned long long)s->pacer.control_dropped,
                                    (unsigned long long)held);
                return r;
        }
        if (r == 0) {
                uint64_t run_len, ms;
                if (ratelimit_run_ok(&s->drop_log, now_monotonic_msec(), &run_len, &ms))
                        log_notice("cloud session: publish queue has room again (%llu dropped "
                                   "in %llu ms)",
                                   (unsigned long long)run_len, (unsigned long long)ms);
                kick(s);
        }
        return r;
}

int cloud_session_subscribe(struct cloud_session *s, const char *filter,
                            cloud_session_message_fn fn, void *userdata)
{
        int r;

        if (!s || !s->mqtt)
                return -ENOTCONN;
        if ((r = submap_add(&s->subs, filter, fn, userdata)) < 0) {
                if (r == -ENOSPC)
                        log_error("cloud session: cannot subscribe to %s: %u subscriptions "
                                  "already (CLOUD_SESSION_MAX_SUBSCRIPTIONS)",
                                  filter, CLOUD_SESSION_MAX_SUBSCRIPTIONS);
                return r;
        }
        if ((r = mqtt_subscribe(s->mqtt, filter)) < 0)
                submap_forget(&s->subs, userdata); /* all of its handlers: it fails as a whole */
        return r;
}

void cloud_session_set_unmatched(struct cloud_session *s, cloud_session_message_fn fn,
                                 void *userdata)
{
        s->on_unmatched = fn;
        s->unmatched_ud = userdata;
}

void cloud_session_set_telemetry(struct cloud_session *s, const struct cloud_session_telemetry *t)
{
        s->telemetry = t ? *t : (struct cloud_session_telemetry){ 0 };
}

int cloud_session_telemetry_turn(struct cloud_session *s)
{
        if (!connected(s))
                return -ENOTCONN;
        if (s->hold)
                return -EAGAIN; /* cloud_session_hold(false) says when */
        if (pacer_telemetry_ask(&s->pacer, now_monotonic_usec()))
                return 0;
        kick(s);
        return -EAGAIN;
}

int cloud_session_publish_telemetry(struct cloud_session *s, const char *topic, const void *payload,
                                    size_t len, int *ret_mid)
{
        int r;

        if (!connected(s))
                return -ENOTCONN;
        if ((r = mqtt_publish(s->mqtt, topic, payload, len, false, ret_mid)) < 0)
                return r;
        pacer_telemetry_sent(&s->pacer, len, now_monotonic_usec());
        return 0;
}

bool cloud_session_up(struct cloud_session *s)
{
        return connected(s);
}

void cloud_session_hold(struct cloud_session *s, bool hold)
{
        s->hold = hold;
        if (s->mqtt)
                mqtt_set_announce(s->mqtt, !hold);
        if (!hold) {
                s->telemetry_kick = true;
                kick(s);
        }
}

int cloud_session_set_credentials(struct cloud_session *s, const char *cert_file,
                                  const char *key_file, bool reconnect, char *err, size_t n)
{
        if (!s || !s->mqtt || s->stopping) {
                snprintf(err, n, "no MQTT session");
                return -ENOTCONN;
        }
        return mqtt_set_credentials(s->mqtt, cert_file, key_file, reconnect, err, n);
}

const char *cloud_session_cert_file(struct cloud_session *s)
{
        return s && s->mqtt ? mqtt_cert_file(s->mqtt) : NULL;
}

int cloud_session_reconnect(struct cloud_session *s)
{
        if (!s || !s->mqtt || s->stopping)
                return -ENOTCONN;
        return mqtt_reconnect_now(s->mqtt);
}

const char *cloud_session_state(struct cloud_session *s)
{
        return s && s->mqtt ? mqtt_state_to_string(mqtt_state(s->mqtt)) : "disabled";
}

json_t *cloud_session_status_json(struct cloud_session *s)
{
        json_t *o;

        if (!s || !s->mqtt)
                return json_pack("{ss}", "state", "disabled");
        if (!(o = mqtt_status_json(s->mqtt)))
                return NULL;
        json_object_set_new(o, "control_sent", json_integer((json_int_t)s->pacer.control_sent));
        json_object_set_new(o, "control_queued", json_integer((json_int_t)s->pacer.control_queued));
        json_object_set_new(o, "control_dropped",
                            json_integer((json_int_t)s->pacer.control_dropped));
        json_object_set_new(o, "control_waiting", json_integer((json_int_t)s->pacer.n));
        json_object_set_new(o, "telemetry_publishes",
                            json_integer((json_int_t)s->pacer.telemetry_sent));
        json_object_set_new(o, "subscriptions", json_integer((json_int_t)s->subs.n));
        return o;
}

/* ---- life ----------------------------------------------------------------------------------- */

static void session_free(struct cloud_session *s)
{
        pacer_done(&s->pacer);
        submap_done(&s->subs);
        free(s->listeners);
        free(s);
}

static void timer_closed(uv_handle_t *h)
{
        session_free(h->data);
}

void cloud_session_stop(struct cloud_session *s)
{
        if (!s)
                return;
        s->stopping = true;
        mqtt_stop(s->mqtt);
        s->mqtt = NULL;
        uv_close((uv_handle_t *)&s->timer, timer_closed);
}

int cloud_session_new(uv_loop_t *loop, const struct relay_options *c,
                      const struct cloud_session_claim *claim, const char *gateway,
                      struct cloud_session **ret)
{
        struct cloud_session *s = calloc(1, sizeof *s);
        char status_topic[TOPIC_MAX_LEN + 1];
        int r;

        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->max_payload = (size_t)c->max_payload;
        s->drop_log.interval_ms = DROP_LOG_INTERVAL_MS;
        submap_init(&s->subs, CLOUD_SESSION_MAX_SUBSCRIPTIONS);
        if ((r = pacer_init(&s->pacer, c->publishes_per_s, c->bytes_per_s, 0, 0,
                            now_monotonic_usec())) < 0) {
                session_free(s);
                return r;
        }
        if (c->hosts.n) {
                struct mqtt_options o = {
                        .hosts = (const char *const *)c->hosts.v,
                        .n_hosts = c->hosts.n,
                        .port = c->port,
                        .client_id = c->client_id ? c->client_id : gateway,
                        .server_name = c->server_name,
                        .ca_file = c->ca_file,
                        .cert_file = c->cert_file,
                        .key_file = c->key_file,
                        .pkcs11_module = c->pkcs11_module,
                        .alpn = c->alpn,
                        .protocol = c->protocol,
                        .keepalive_s = (unsigned)(c->keepalive_usec / 1000000),
                        .max_inflight = MAX(c->max_inflight, 1u),
                        .reconnect_min_ms = c->reconnect_min_usec / 1000,
                        .reconnect_max_ms = c->reconnect_max_usec / 1000,
                        .status_topic = status_topic,
                        /* Commands, OTA stream blocks (base64 in JSON), job documents,
                         * provisioning replies: nothing legitimate is larger. */
                        .max_incoming = (uint32_t)MIN(c->max_packet, (uint64_t)UINT32_MAX),
                };
                struct mqtt_callbacks cb = {
                        .userdata = s,
                        .on_connected = on_connected,
                        .on_disconnected = on_disconnected,
                        .on_published = on_published,
                        .on_message = on_message,
                        .on_connect_failed = on_connect_failed,
                };
                if (claim) {
                        o.cert_file = claim->cert_file;
                        o.key_file = claim->key_file;
                        s->hold = true;
                        log_notice("mqtt: %s does not exist yet; connecting with the claim %s "
                                   "for fleet provisioning",
                                   c->cert_file, o.cert_file);
                }
                if ((r = topic_expand(c->topic_status, gateway, NULL, 0, status_topic,
                                      sizeof status_topic)) < 0) {
                        session_free(s);
                        return log_error_errno(r,
                                               "mqtt: cannot expand StatusTopic for gateway "
                                               "%s: %m",
                                               gateway);
                }
                if ((r = mqtt_new(loop, &o, &cb, &s->mqtt)) < 0) {
                        session_free(s);
                        return r;
                }
                if (s->hold)
                        mqtt_set_announce(s->mqtt, false);
        } else
                log_notice("mqtt: no [MQTT] Host= configured; telemetry stays in the outbox");

        uv_timer_init(loop, &s->timer);
        s->timer.data = s;
        *ret = s;
        return 0;
}

int cloud_session_start(struct cloud_session *s)
{
        return s && s->mqtt ? mqtt_start(s->mqtt) : 0;
}

/* ---- [MQTT] and [Relay] values ------------------------------------------------------------ */

int cloud_session_config_parse_host(const char *v, void *field, const char **reason)
{
        char host[256];
        unsigned port;
        int r;

        if (!*v) {
                conf_strv_clear(field);
                return 0;
        }
        if (mqtt_parse_server(v, 8883, host, sizeof host, &port) < 0) {
                *reason = "expected host, host:port, an IP address or [IPv6]:port";
                return -EINVAL;
        }
        r = conf_strv_append(field, v);
        if (r == -E2BIG)
                *reason = "too many entries";
        return r;
}

int cloud_session_config_parse_protocol(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "3.1.1") == 0 || strcmp(v, "4") == 0)
                *(int *)field = 4;
        else if (strcmp(v, "5") == 0 || strcmp(v, "5.0") == 0)
                *(int *)field = 5;
        else {
                *reason = "expected 3.1.1 or 5";
                return -EINVAL;
        }
        return 0;
}

int cloud_session_config_parse_inflight(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 65535, reason);
}

int cloud_session_config_parse_rate(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 10000000, reason);
}
