/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>

#include "basic/time-util.h"
#include "audit/audit.h"
#include "store/db.h"
#include "cloud/cmdreq.h"
#include "cloud/envelope.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cloud/outbox.h"
#include "cloud/relay.h"
#include "cloud/topic.h"

/* Rows read per SELECT when building a batch: a batch of 128 KB holds ~1,000 small readings. */
#define SCAN_ROWS 8192

struct inflight {
        int mid;
        int64_t first, last;
        uint32_t rows;
};

#define RELAY_UNEXPECTED_LOGGED 64

struct relay {
        uv_loop_t *loop;
        char gateway[TOPIC_GATEWAY_MAX + 1];
        struct db *db;
        struct audit *audit;
        struct outbox *outbox;
        struct cloud_session *session;

        bool batching;
        uint64_t window_ms;
        size_t max_payload;
        size_t max_command; /* MaxCommandSize= */
        unsigned max_inflight;
        char *topic_batch, *topic_telemetry, *topic_command, *topic_result;
        struct cmdreq_table *requests; /* request ids of commands (cmdreq.h); on first use */

        uv_timer_t pump_timer, stats_timer;
        uint64_t pump_due_ms;
        unsigned open_handles;
        bool stopping;

        int64_t cursor; /* the highest outbox id handed to MQTT */
        struct inflight *inflight;
        size_t n_inflight;
        uint64_t first_unsent_ms;
        uint64_t unsent_est; /* estimated envelope bytes of rows past the cursor */
        struct envelope env;

        /* Batch being built by the scan callback. */
        int64_t b_first, b_last;
        uint32_t b_rows;
        int b_err;
        bool b_stopped;

        relay_command_fn on_command;
        void *command_ud;
        uint32_t next_command_id;

        uint64_t submitted, publishes, published_msgs, acked_msgs, rejected_msgs;
        uint64_t commands, commands_rejected, results;
        uint64_t commands_oversize, commands_busy;
        /* Messages on topics nothing here subscribed to handle; the first on each of the
         * first RELAY_UNEXPECTED_LOGGED topics is logged at notice. */
        uint64_t unexpected;
        char *unexpected_topics[RELAY_UNEXPECTED_LOGGED];
        size_t n_unexpected_topics;
        uint64_t last_publishes, last_msgs, publishes_per_s, msgs_per_s;
};

static void pump(struct relay *r);

static void on_pump_timer(uv_timer_t *t)
{
        struct relay *r = t->data;
        r->pump_due_ms = 0;
        pump(r);
}

/* Run the pump after `ms` (0: on the next loop iteration), unless it is due sooner anyway. */
static void pump_arm(struct relay *r, uint64_t ms)
{
        uint64_t due = uv_now(r->loop) + ms;
        if (r->stopping)
                return;
        if (uv_is_active((uv_handle_t *)&r->pump_timer) && r->pump_due_ms <= due)
                return;
        r->pump_due_ms = due;
        uv_timer_start(&r->pump_timer, on_pump_timer, ms, 0);
}

static int inflight_add(struct relay *r, int mid, int64_t first, int64_t last, uint32_t rows)
{
        r->inflight[r->n_inflight++] = (struct inflight){ mid, first, last, rows };
        r->cursor = last;
        r->publishes++;
        r->published_msgs += rows;
        return 0;
}

/* ---- batched ------------------------------------------------------------------------------ */

static int batch_row(void *ud, const struct outbox_row *row)
{
        struct relay *r = ud;
        int q = envelope_add(&r->env, row->device, row->stream, row->seq, row->ts_ms, row->payload,
                             row->len);
        if (q == -ENOSPC)
                return 1;
        if (q == -EMSGSIZE) {
                /* Cannot happen for rows relay_submit accepted (MaxPayload only changes at a
                 * restart, and then it may shrink): skip it, counted, rather than block. */
                log_warning("relay: message %lld of device %s does not fit MaxPayload; dropped",
                            (long long)row->id, row->device);
                r->rejected_msgs++;
                if (!r->b_rows)
                        r->b_first = row->id;
                r->b_last = row->id;
                return 0;
        }
        if (q < 0) {
                r->b_err = q;
                return q;
        }
        if (!r->b_rows)
                r->b_first = row->id;
        r->b_last = row->id;
        r->b_rows++;
        return 0;
}

/* Returns 1 if a publish went out, 0 if there was nothing to send, -errno. */
static int publish_batch(struct relay *r)
{
        const char *text;
        size_t len;
        int mid, q;

        if ((q = envelope_begin(&r->env, r->gateway, r->max_payload)) < 0)
                return q;
        r->b_rows = 0;
        r->b_first = r->b_last = 0;
        r->b_err = 0;
        q = outbox_scan(r->outbox, r->cursor, SCAN_ROWS, batch_row, r);
        if (q < 0)
                return q;
        if (!r->b_rows) {
                if (r->b_last)
                        r->cursor = r->b_last; /* only skipped rows */
                return 0;
        }
        text = envelope_finish(&r->env, &len);
        q = cloud_session_publish_telemetry(r->session, r->topic_batch, text, len, &mid);
        if (q < 0)
                return q;
        inflight_add(r, mid, r->b_first, r->b_last, r->b_rows);
        r->unsent_est -= MIN(r->unsent_est, (uint64_t)(len - r->env.header_len));
        return 1;
}

/* ---- one publish per message -------------------------------------------------------------- */

static int single_row(void *ud, const struct outbox_row *row)
{
        struct relay *r = ud;
        char topic[TOPIC_MAX_LEN + 1];
        int mid, q;

        /* Each publish needs its own turn of the session's pacing. */
        if (r->n_inflight >= r->max_inflight || cloud_session_telemetry_turn(r->session) != 0) {
                r->b_stopped = true;
                return 1;
        }
        if (topic_expand(r->topic_telemetry, r->gateway, row->device, row->stream, topic,
                         sizeof topic) < 0) {
                /* Ids are checked at submit; a row that still does not expand is skipped. */
                log_warning("relay: no topic for device %s; message %lld dropped", row->device,
                            (long long)row->id);
                r->rejected_msgs++;
                r->cursor = row->id;
                return 0;
        }
        q = cloud_session_publish_telemetry(r->session, topic, row->payload, row->len, &mid);
        if (q < 0) {
                r->b_err = q;
                return q;
        }
        inflight_add(r, mid, row->id, row->id, 1);
        r->unsent_est -= MIN(r->unsent_est, envelope_entry_size(row->device, row->len));
        r->b_rows++;
        return 0;
}

static int publish_singles(struct relay *r)
{
        int q;
        int64_t before = r->cursor;
        r->b_rows = 0;
        r->b_err = 0;
        r->b_stopped = false;
        q = outbox_scan(r->outbox, r->cursor, r->max_inflight - r->n_inflight, single_row, r);
        if (q < 0)
                return q;
        return r->b_rows > 0 || r->b_stopped || r->cursor != before ? 1 : 0;
}

/* ---- the pump: publish what the window, the window time and the session's pacing allow ----- */

/* A failed commit brought back rows it had evicted, maybe behind the cursor. */
static void take_rewind(struct relay *r)
{
        int64_t back = r->stopping ? 0 : outbox_take_rewind(r->outbox);
        if (back && back <= r->cursor)
                r->cursor = back - 1;
}

static void pump(struct relay *r)
{
        take_rewind(r);
        while (!r->stopping && cloud_session_up(r->session) && r->n_inflight < r->max_inflight &&
               r->cursor < outbox_last_id(r->outbox)) {
                int q;

                if (r->batching && r->unsent_est < r->max_payload * 9 / 10) {
                        uint64_t age = uv_now(r->loop) - r->first_unsent_ms;
                        if (age < r->window_ms) {
                                pump_arm(r, r->window_ms - age);
                                return;
                        }
                }
                /* Not our turn (quota, the gateway's own publishes first, the hold): the
                 * session calls on_telemetry_ready() when it is. */
                if (cloud_session_telemetry_turn(r->session) != 0)
                        return;
                q = r->batching ? publish_batch(r) : publish_singles(r);
                if (q < 0) {
                        if (q != -ENOTCONN)
                                log_warning_errno(q, "relay: publish failed: %m");
                        pump_arm(r, 100);
                        return;
                }
                if (q == 0) {
                        /* Nothing left past the cursor (rows evicted, or only skipped ones). */
                        r->cursor = MAX(r->cursor, outbox_last_id(r->outbox));
                        r->unsent_est = 0;
                        return;
                }
        }
        if (r->cursor >= outbox_last_id(r->outbox))
                r->unsent_est = 0;
}

/* ---- session callbacks -------------------------------------------------------------------- */

static void on_session(void *ud, enum cloud_session_event ev)
{
        /* In-flight publishes stay in flight across a reconnect: libmosquitto re-sends them
         * after the next CONNACK with the same message ids, and their rows stay in the outbox
         * until acked. */
        if (ev == CLOUD_SESSION_UP)
                pump_arm(ud, 0);
}

/* Our turn of the session's pacing: publish now, while it lasts. */
static void on_telemetry_ready(void *ud)
{
        pump(ud);
}

static void on_published(void *ud, int mid, int reason)
{
        struct relay *r = ud;
        for (size_t i = 0; i < r->n_inflight; i++) {
                struct inflight f = r->inflight[i];
                int q;
                if (f.mid != mid)
                        continue;
                memmove(&r->inflight[i], &r->inflight[i + 1], (r->n_inflight - i - 1) * sizeof f);
                r->n_inflight--;
                if (reason >= 0x80) {
                        /* An MQTT 5 broker refused it (not authorized, quota, payload format):
                         * sending it again would fail the same way. */
                        r->rejected_msgs += f.rows;
                        log_warning("relay: broker refused a publish of %u message(s) (reason "
                                    "0x%02x); dropped",
                                    f.rows, reason);
                        audit_log(r->audit, "daemon", "outbox.rejected", "",
                                  json_pack("{si si}", "messages", (int)f.rows, "reason", reason));
                } else
                        r->acked_msgs += f.rows;
                q = outbox_delete_range(r->outbox, f.first, f.last);
                if (q < 0)
                        log_error_errno(q, "relay: cannot delete delivered messages: %m");
                /* Refill the window right away: libmosquitto sends what we queue here as soon
                 * as it has read this batch of PUBACKs. */
                pump(r);
                return;
        }
}

static const char *errno_name(int e)
{
        switch (e) {
        case 0: return "ok";
        case ENOENT: return "unknown-device";
        case ENOTCONN: return "device-offline";
        case EMSGSIZE: return "too-large";
        case EINVAL: return "bad-request";
        case ETIMEDOUT: return "timeout";
        case EACCES:
        case EPERM: return "denied";
        case ENOSYS: return "not-supported";
        case ENOBUFS: return "busy";
        default: return "error";
        }
}

static int publish_result(struct relay *r, const char *device, uint32_t id, int status,
                          const uint8_t *payload, size_t len)
{
        char req[CMDREQ_ID_MAX + 1];
        char topic[TOPIC_MAX_LEN + 1];
        _cleanup_free_ char *b64 = NULL, *text = NULL;
        json_t *o;
        int q;

        if ((q = topic_expand(r->topic_result, r->gateway, device, 0, topic, sizeof topic)) < 0)
                return q;
        if (len > 4 * 1024 * 1024)
                return -EMSGSIZE;
        b64 = malloc((len + 2) / 3 * 4 + 1);
        if (!b64)
                return -ENOMEM;
        EVP_EncodeBlock((unsigned char *)b64, payload, (int)len);
        o = json_pack("{ss sI si ss ss}", "device", device, "id", (json_int_t)id, "status", status,
                      "result", status < 0 ? errno_name(-status) : "ok", "p", b64);
        /* The cloud's request id, for it to match the result to its request. */
        if (o && r->requests && cmdreq_take(r->requests, id, req))
                json_object_set_new(o, "request_id", json_string(req));
        text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text)
                return -ENOMEM;
        /* Paced like the gateway's other publishes (ahead of telemetry, but never all of the
         * quota: a burst of results cannot starve telemetry). */
        return cloud_session_publish(r->session, topic, text, strlen(text));
}

/* A broker that maps '.' to a topic level separator (RabbitMQ's MQTT plugin, through its AMQP
 * routing keys) delivers cmd/dot.dev-0 as cmd/dot/dev-0: would one '/' put back as '.' make it
 * a command topic? Then the device id in ret_device. */
static bool dot_mangled_command(struct relay *r, const char *topic,
                                char ret_device[TOPIC_DEVICE_MAX + 1])
{
        char t[TOPIC_MAX_LEN + 1];
        size_t n = strlen(topic);

        if (n > TOPIC_MAX_LEN)
                return false;
        memcpy(t, topic, n + 1);
        for (size_t i = 0; i < n; i++) {
                if (t[i] != '/')
                        continue;
                t[i] = '.';
                if (topic_match_device(r->topic_command, r->gateway, t, ret_device) >= 0)
                        return true;
                t[i] = '/';
        }
        return false;
}

/* Counted always, logged at notice the first time per topic (for a bounded number of topics):
 * a command that vanished must leave a trace without a debug log. */
static void unexpected_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct relay *r = ud;
        char device[TOPIC_DEVICE_MAX + 1];
        char *copy;

        r->unexpected++;
        for (size_t i = 0; i < r->n_unexpected_topics; i++)
                if (strcmp(r->unexpected_topics[i], topic) == 0)
                        return;
        if (r->n_unexpected_topics == RELAY_UNEXPECTED_LOGGED) {
                log_debug("relay: ignoring message on unexpected topic %s", topic);
                return;
        }
        copy = strdup(topic);
        if (!copy)
                return;
        r->unexpected_topics[r->n_unexpected_topics++] = copy;
        if (dot_mangled_command(r, topic, device))
                log_notice("relay: message on unexpected topic %s ignored: it looks like a command "
                           "for device %s whose '.' the broker turned into '/' (RabbitMQ does; "
                           "use device ids without '.' there)",
                           topic, device);
        else
                log_notice("relay: message on unexpected topic %s ignored (not a command topic "
                           "%s); further ones on it are only counted",
                           topic, r->topic_command);
}

static void on_command_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct relay *r = ud;
        char device[TOPIC_DEVICE_MAX + 1], req[CMDREQ_ID_MAX + 1];
        _cleanup_free_ uint8_t *unwrapped = NULL;
        uint32_t id;
        int q;

        /* The session hands us what matches the command filter, which may be wider than the
         * template (a '+' for {device} inside a level). */
        q = topic_match_device(r->topic_command, r->gateway, topic, device);
        if (q < 0) {
                unexpected_message(r, topic, payload, len);
                return;
        }
        id = ++r->next_command_id;
        r->commands++;
        q = cmdreq_unwrap(payload, len, r->max_command, req, &unwrapped, &len);
        if (q > 0 && (r->requests || (r->requests = calloc(1, sizeof *r->requests))))
                cmdreq_remember(r->requests, id, req);
        if (q > 0)
                payload = unwrapped;
        if (q == -EBADMSG || q == -ENOMEM) {
                r->commands_rejected++;
                audit_log(r->audit, "cloud", "cmd.rejected", device,
                          json_pack("{sI ss}", "id", (json_int_t)id, "reason",
                                    q == -ENOMEM ? "out of memory" : "bad request envelope"));
                relay_command_failed(r, device, id, q == -EBADMSG ? -EINVAL : q);
                return;
        }
        /* -EMSGSIZE: the envelope itself is longer than the payload it decodes to, so it is
         * refused as too large just below. */
        if (len > r->max_command) {
                /* MaxCommandSize=: refused before it is copied, queued or sent anywhere. */
                r->commands_rejected++;
                if (r->commands_oversize++ % 100 == 0)
                        log_warning(
                                "relay: command %u for %s has %zu bytes, over MaxCommandSize=%zu; "
                                "rejected",
                                id, device, len, r->max_command);
                audit_log(r->audit, "cloud", "cmd.rejected", device,
                          json_pack("{sI ss sI}", "id", (json_int_t)id, "reason", "too-large",
                                    "bytes", (json_int_t)len));
                relay_command_failed(r, device, id, -EMSGSIZE);
                return;
        }
        audit_log(r->audit, "cloud", "cmd.received", device,
                  json_pack("{sI sI}", "id", (json_int_t)id, "bytes", (json_int_t)len));
        q = r->on_command ? r->on_command(r->command_ud, device, id, payload, len) : -ENOSYS;
        if (q == -ENOENT) {
                r->commands_rejected++;
                log_warning("relay: command %u for unknown device %s rejected", id, device);
                audit_log(r->audit, "cloud", "cmd.rejected", device,
                          json_pack("{sI ss}", "id", (json_int_t)id, "reason", "unknown device"));
        }
        if (q == -ENOBUFS)
                r->commands_busy++;
        if (q < 0)
                relay_command_failed(r, device, id, q);
}

/* ---- API ---------------------------------------------------------------------------------- */

int relay_submit(struct relay *r, const char *device_id, uint16_t stream, uint32_t seq,
                 const uint8_t *payload, size_t len, void (*durable_cb)(void *ud, int status),
                 void *userdata)
{
        struct outbox_row row;
        uint64_t entry;
        bool idle;
        int q;

        if (r->stopping)
                return -ESHUTDOWN;
        if (!topic_level_valid(device_id, TOPIC_DEVICE_MAX))
                return -EINVAL;
        entry = envelope_entry_size(device_id, len);
        if ((r->batching && envelope_overhead(r->gateway) + entry > r->max_payload) ||
            len > r->max_payload)
                return -EMSGSIZE;
        /* Nothing waits past the cursor: unbatched, this message is the next publish. */
        take_rewind(r);
        idle = !r->batching && outbox_last_id(r->outbox) <= r->cursor;
        outbox_set_floor(r->outbox, r->cursor); /* fair queueing: new ids after what went out */
        row.ts_ms = now_realtime_msec();
        q = outbox_append(r->outbox, device_id, stream, seq, row.ts_ms, payload, len, &row.id);
        if (q < 0)
                return q;
        r->submitted++;
        if (durable_cb && (q = db_on_commit(r->db, durable_cb, userdata)) < 0)
                return q;
        if (r->unsent_est == 0)
                r->first_unsent_ms = uv_now(r->loop);
        r->unsent_est += entry;
        if (!cloud_session_up(r->session) || r->n_inflight >= r->max_inflight)
                return 0;
        /* Publish it from here rather than read it back from the outbox on the next loop
         * iteration: what the scan would have found, a query and an iteration sooner. As from
         * the scan, the row may still be uncommitted; a PUBACK before a failed commit only
         * means the device's retry is a duplicate (at least once). */
        if (idle) {
                row.device = device_id;
                row.stream = stream;
                row.seq = seq;
                row.payload = payload;
                row.len = len;
                if (single_row(r, &row) == 0)
                        return 0;
        }
        pump_arm(r, 0);
        return 0;
}

int relay_command_failed(struct relay *r, const char *device_id, uint32_t command_id, int error)
{
        int q = publish_result(r, device_id, command_id, error, NULL, 0);
        r->results++;
        audit_log(r->audit, "daemon", "cmd.result", device_id,
                  json_pack("{sI si ss sb}", "id", (json_int_t)command_id, "status", error,
                            "result", errno_name(-error), "published", q >= 0));
        if (q < 0 && q != -ENOBUFS) /* a full queue is logged by the session, rate-limited */
                log_warning_errno(q, "relay: result of command %u for %s not published: %m",
                                  command_id, device_id);
        return q;
}

int relay_command_result(struct relay *r, const char *device_id, uint32_t command_id, int status,
                         const uint8_t *payload, size_t len)
{
        int q = publish_result(r, device_id, command_id, status, payload, len);
        char actor[TOPIC_DEVICE_MAX + 8];
        /* A refusal by the gateway (unknown device) is the daemon's result, not the device's. */
        snprintf(actor, sizeof actor, "%s%s",
                 status == -ENOENT ? "daemon" : "device:", status == -ENOENT ? "" : device_id);
        r->results++;
        audit_log(r->audit, actor, "cmd.result", device_id,
                  json_pack("{sI si ss sb}", "id", (json_int_t)command_id, "status", status,
                            "result", status < 0 ? errno_name(-status) : "ok", "published",
                            q >= 0));
        if (q < 0 && q != -ENOBUFS) /* a full queue is logged by the session, rate-limited */
                log_warning_errno(q, "relay: result of command %u for %s not published: %m",
                                  command_id, device_id);
        return q;
}

void relay_set_command_handler(struct relay *r, relay_command_fn fn, void *userdata)
{
        r->on_command = fn;
        r->command_ud = userdata;
}

static void on_stats_timer(uv_timer_t *t)
{
        struct relay *r = t->data;
        r->publishes_per_s = r->publishes - r->last_publishes;
        r->msgs_per_s = r->published_msgs - r->last_msgs;
        r->last_publishes = r->publishes;
        r->last_msgs = r->published_msgs;
}

json_t *relay_mqtt_status(struct relay *r)
{
        json_t *o = cloud_session_status_json(r->session);
        if (!o)
                return NULL;
        json_object_set_new(o, "batching", json_boolean(r->batching));
        json_object_set_new(o, "publishes", json_integer((json_int_t)r->publishes));
        json_object_set_new(o, "publishes_per_s", json_integer((json_int_t)r->publishes_per_s));
        json_object_set_new(o, "msgs_per_s", json_integer((json_int_t)r->msgs_per_s));
        json_object_set_new(o, "submitted", json_integer((json_int_t)r->submitted));
        json_object_set_new(o, "acked", json_integer((json_int_t)r->acked_msgs));
        json_object_set_new(o, "rejected", json_integer((json_int_t)r->rejected_msgs));
        json_object_set_new(o, "dropped", json_integer((json_int_t)outbox_dropped(r->outbox)));
        json_object_set_new(o, "refused", json_integer((json_int_t)outbox_refused(r->outbox)));
        json_object_set_new(o, "inflight", json_integer((json_int_t)r->n_inflight));
        json_object_set_new(o, "queue_rows", json_integer((json_int_t)outbox_rows(r->outbox)));
        json_object_set_new(o, "queue_bytes", json_integer((json_int_t)outbox_bytes(r->outbox)));
        json_object_set_new(o, "commands", json_integer((json_int_t)r->commands));
        json_object_set_new(o, "commands_rejected", json_integer((json_int_t)r->commands_rejected));
        json_object_set_new(o, "commands_oversize", json_integer((json_int_t)r->commands_oversize));
        json_object_set_new(o, "commands_busy", json_integer((json_int_t)r->commands_busy));
        json_object_set_new(o, "command_results", json_integer((json_int_t)r->results));
        json_object_set_new(o, "unexpected_messages", json_integer((json_int_t)r->unexpected));
        return o;
}

int relay_device_outbox(struct relay *r, const char *device_id, struct outbox_device_stats *ret)
{
        return r && r->outbox ? outbox_device_stats(r->outbox, device_id, ret) : -ENOENT;
}

json_t *relay_outbox_status(struct relay *r)
{
        return outbox_status_json(r->outbox);
}

void relay_status_line(struct relay *r, char *buf, size_t n)
{
        snprintf(buf, n, "mqtt %s, outbox %llu msgs, %llu publishes/s",
                 cloud_session_state(r->session), (unsigned long long)outbox_rows(r->outbox),
                 (unsigned long long)r->publishes_per_s);
}

static void relay_free(struct relay *r)
{
        for (size_t i = 0; i < r->n_unexpected_topics; i++)
                free(r->unexpected_topics[i]);
        envelope_free(&r->env);
        free(r->inflight);
        free(r->topic_batch);
        free(r->topic_telemetry);
        free(r->topic_command);
        free(r->topic_result);
        free(r->requests);
        free(r);
}

static void handle_closed(uv_handle_t *h)
{
        struct relay *r = h->data;
        if (--r->open_handles == 0)
                relay_free(r);
}

void relay_stop(struct relay *r)
{
        if (!r)
                return;
        r->stopping = true;
        cloud_session_forget(r->session, r);
        outbox_free(r->outbox);
        r->outbox = NULL;
        uv_close((uv_handle_t *)&r->pump_timer, handle_closed);
        uv_close((uv_handle_t *)&r->stats_timer, handle_closed);
}

int relay_new(uv_loop_t *loop, const struct relay_options *c, struct cloud_session *session,
              const char *gateway, struct db *db, struct audit *audit, struct relay **ret)
{
        struct relay *r = calloc(1, sizeof *r);
        char filter[TOPIC_MAX_LEN + 1];
        uint64_t now = now_monotonic_usec();
        int q;

        if (!r)
                return -ENOMEM;
        r->loop = loop;
        snprintf(r->gateway, sizeof r->gateway, "%s", gateway);
        r->db = db;
        r->audit = audit;
        r->session = session;
        r->batching = c->batching;
        r->window_ms = c->batch_window_usec / 1000;
        r->max_payload = (size_t)c->max_payload;
        r->max_inflight = MAX(c->max_inflight, 1u);
        r->max_command = c->max_command ? (size_t)c->max_command : RELAY_COMMAND_MAX;
        r->topic_batch = malloc(TOPIC_MAX_LEN + 1);
        if (r->topic_batch &&
            topic_expand(c->topic_batch, gateway, NULL, 0, r->topic_batch, TOPIC_MAX_LEN + 1) < 0) {
                relay_free(r);
                return log_error_errno(-EINVAL, "relay: cannot expand BatchTopic for %s", gateway);
        }
        r->topic_telemetry = strdup(c->topic_telemetry);
        r->topic_command = strdup(c->topic_command);
        r->topic_result = strdup(c->topic_command_result);
        r->inflight = calloc(r->max_inflight, sizeof *r->inflight);
        /* A random start keeps command ids of consecutive runs apart. */
        r->next_command_id = (uint32_t)(now ^ (now >> 32)) & 0x7fffffff;
        if (!r->topic_batch || !r->topic_telemetry || !r->topic_command || !r->topic_result ||
            !r->inflight) {
                relay_free(r);
                return -ENOMEM;
        }
        if ((q = topic_filter(c->topic_command, gateway, filter, sizeof filter)) < 0) {
                relay_free(r);
                return log_error_errno(q, "relay: cannot expand CommandTopic for gateway %s: %m",
                                       gateway);
        }

        q = outbox_open(db, audit, c->outbox.max_bytes, c->outbox.audit_per_min, &r->outbox);
        if (q < 0) {
                relay_free(r);
                return log_error_errno(q, "cannot open the outbox: %m");
        }
        r->unsent_est = outbox_bytes(r->outbox);
        r->first_unsent_ms = 0; /* a backlog goes out at once */

        /* One client of the session among others: device commands, the telemetry turn. */
        q = cloud_session_subscribe(session, filter, on_command_message, r);
        if (q < 0 && q != -ENOTCONN) {
                outbox_free(r->outbox);
                relay_free(r);
                return log_error_errno(q, "relay: cannot subscribe to %s: %m", filter);
        }
        if ((q = cloud_session_add_listener(session, on_session, r)) < 0) {
                cloud_session_forget(session, r);
                outbox_free(r->outbox);
                relay_free(r);
                return q;
        }
        cloud_session_set_unmatched(session, unexpected_message, r);
        cloud_session_set_telemetry(session, &(struct cloud_session_telemetry){
                                                     .userdata = r,
                                                     .ready = on_telemetry_ready,
                                                     .published = on_published,
                                             });

        uv_timer_init(loop, &r->pump_timer);
        uv_timer_init(loop, &r->stats_timer);
        r->pump_timer.data = r->stats_timer.data = r;
        r->open_handles = 2;
        uv_timer_start(&r->stats_timer, on_stats_timer, 1000, 1000);
        *ret = r;
        return 0;
}

/* ---- [Relay] values ------------------------------------------------------------ */

int relay_config_parse_max_command(const char *v, void *field, const char **reason)
{
        uint64_t x;
        if (config_parse_size(v, &x, reason) < 0)
                return -EINVAL;
        if (x < 1 || x > RELAY_COMMAND_MAX) {
                *reason = "expected 1 to 987 bytes: a command must fit one link frame";
                return -EINVAL;
        }
        *(uint64_t *)field = x;
        return 0;
}
