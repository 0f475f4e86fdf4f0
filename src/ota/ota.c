/* SPDX-License-Identifier: Apache-2.0 */
/* OTA rollout engine: jobs, per-device transfers over the link (see ota.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

#include "basic/alloc-util.h"
#include "basic/time-util.h"
#include "mcugw/ota.h"

#include "audit/audit.h"
#include "store/db.h"
#include "link/link.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "ota/ota.h"
#include "ota/ota_cache.h"
#include "ota/ota_mcuboot.h"
#include "ota/ota_verify.h"
#include "devices/registry.h"
#include "basic/fileio.h"

#define OTA_STALL_MS 3000 /* no ack progress: probe with the OFFER again */
#define OTA_MAX_PROBES 20 /* ... this often in a row: the transfer fails */
#define OTA_BUSY_RETRY_MS 5000
#define OTA_TEST_TIMEOUT_MS (10 * 60 * 1000) /* reboot + self-test must finish in this */
/* A paused transfer is offered again this long after its device is back. */
#define OTA_REOFFER_MS 300
/* Bytes queued on the link before we wait for its on_drained. */
#define OTA_QUEUE_LIMIT LINK_QUEUE_LOW
#define OTA_PERSIST_EVERY (64 * 1024)
#define OTA_MAX_JOBS_KEPT 64 /* finished jobs kept in memory for `ota list` */
#define OTA_DEV_BUCKETS 4096u
#define OTA_NEVER UINT64_MAX

enum xfer_state {
        X_QUEUED,
        X_OFFERED, /* OFFER sent, waiting for the first ack */
        X_SENDING,
        X_REBOOTING, /* device verified the image, rebooting into it */
        X_TESTING,
        X_DONE,
        X_FAILED,
        X_ABORTED,
};

static const char *const xfer_names[] = {
        [X_QUEUED] = "queued",       [X_OFFERED] = "offered", [X_SENDING] = "sending",
        [X_REBOOTING] = "rebooting", [X_TESTING] = "testing", [X_DONE] = "succeeded",
        [X_FAILED] = "failed",       [X_ABORTED] = "aborted",
};

/* Nothing walks every transfer on a clock. The link's session events (link_listener) and the
 * device's messages drive the transfers; the few that have something to do soon are on one of
 * two lists, and one timer is armed for the earliest deadline among them:
 *   ready:  queued, the device is up: waiting for a slot (MaxConcurrent=...) or for next_try_ms;
 *   active: offered, sending, rebooting or testing (holding a slot, also while the device is
 *           away), with a stall, retry or self-test deadline.
 * A queued transfer of a device that is away is on neither, and costs nothing until on_up. */
enum x_list {
        XL_NONE,
        XL_READY,
        XL_ACTIVE,
        _XL_MAX,
};

struct ota_xfer;
struct x_list_head {
        struct ota_xfer *head, *tail;
        size_t n;
};

struct ota_job;

struct ota_xfer {
        struct ota_job *job;
        char device[REGISTRY_ID_MAX + 1];
        char link[64];
        enum xfer_state state;
        uint32_t acked, sent, window, max_chunk, persisted;
        uint64_t last_progress_ms, next_try_ms, started_ms, state_ms;
        unsigned probes;
        bool resumed, ever_started;
        bool up;      /* the device has a session (link events) */
        uint8_t list; /* enum x_list */
        char reason[96];
        struct ota_xfer *lprev, *lnext;   /* on o->lists[list] */
        struct ota_xfer *dnext, **dpprev; /* o->by_dev chain (of its job while indexed) */
};

struct ota_job {
        struct ota_job *next;
        struct ota *o;
        char id[65];
        char source[8];
        enum ota_state state;
        char reason[160];
        struct ota_image *img;
        uint8_t sha256[32];
        uint8_t sig[MCUGW_OTA_SIG_MAX];
        size_t sig_len;
        char version[MCUGW_OTA_VERSION_MAX + 1];
        bool mcuboot;
        uint32_t transfer_id;
        uint64_t size; /* kept after the image reference is dropped */
        struct ota_xfer *x;
        size_t n_x, n_x_alloc;
        unsigned failures;
        int64_t created_us;
        bool indexed; /* its transfers are in o->by_dev */
};

struct ota {
        uv_loop_t *loop;
        struct db *db;
        struct audit *audit;
        struct registry *reg;
        struct link_manager *link;
        struct ota_cache *cache;
        struct ota_verifier *verifier;
        uv_timer_t timer; /* armed for the earliest deadline of a listed transfer */
        struct link_listener listener;
        struct x_list_head lists[_XL_MAX];
        struct ota_xfer **due; /* on_timer's scratch */
        size_t due_cap;
        bool unindex_pending;                     /* a finished job is still in by_dev */
        struct ota_xfer *by_dev[OTA_DEV_BUCKETS]; /* transfers of unfinished jobs by device */
        struct ota_job *jobs;
        unsigned next_local;
        ota_report_fn report;
        void *report_ud;
        void (*device_fn)(void *ud, const char *device_id); /* ota_set_device_listener */
        void *device_ud;
        /* config */
        uint32_t block_size, window;
        unsigned max_concurrent, max_per_link, abort_after;
        bool allow_downgrade, allow_unsigned;
        sqlite3_stmt *put_job, *put_x, *load_jobs, *load_x;
        uint64_t chunks_sent, bytes_sent, resyncs, probes;
};

const char *ota_state_to_string(enum ota_state s)
{
        static const char *const n[] = { "QUEUED",    "DOWNLOADING", "IN_PROGRESS",
                                         "SUCCEEDED", "FAILED",      "CANCELED" };
        return (unsigned)s < ELEMENTSOF(n) ? n[s] : "?";
}

static uint64_t now_ms(struct ota *o)
{
        return uv_now(o->loop);
}

static bool x_final(const struct ota_xfer *x)
{
        return x->state == X_DONE || x->state == X_FAILED || x->state == X_ABORTED;
}

static bool x_active(const struct ota_xfer *x)
{
        return x->state == X_OFFERED || x->state == X_SENDING || x->state == X_REBOOTING ||
               x->state == X_TESTING;
}

static bool job_final(const struct ota_job *j)
{
        return j->state == OTA_SUCCEEDED || j->state == OTA_FAILED || j->state == OTA_CANCELED;
}

/* ---- scheduling: transfers by device, the two lists, one timer ---------------------------- */

static void on_timer(uv_timer_t *t);

static uint32_t dev_hash(const char *id)
{
        uint32_t h = 2166136261u;
        for (; *id; id++)
                h = (h ^ (uint8_t)*id) * 16777619u;
        return h % OTA_DEV_BUCKETS;
}

static void xl_remove(struct x_list_head *h, struct ota_xfer *x)
{
        if (x->lprev)
                x->lprev->lnext = x->lnext;
        else
                h->head = x->lnext;
        if (x->lnext)
                x->lnext->lprev = x->lprev;
        else
                h->tail = x->lprev;
        x->lprev = x->lnext = NULL;
        h->n--;
}

static void xl_append(struct x_list_head *h, struct ota_xfer *x)
{
        x->lnext = NULL;
        x->lprev = h->tail;
        if (h->tail)
                h->tail->lnext = x;
        else
                h->head = x;
        h->tail = x;
        h->n++;
}

/* When the timer must look at x next (ms, loop time), OTA_NEVER if only an event can move it. */
static uint64_t x_due(const struct ota_xfer *x)
{
        switch (x->state) {
        case X_QUEUED: return x->list == XL_READY ? x->next_try_ms : OTA_NEVER;
        case X_OFFERED: return x->up ? x->next_try_ms : OTA_NEVER;
        case X_SENDING:
                return x->up ? MAX(x->last_progress_ms + OTA_STALL_MS, x->next_try_ms) : OTA_NEVER;
        case X_REBOOTING:
        case X_TESTING:
                return MIN(x->state_ms + OTA_TEST_TIMEOUT_MS + 1,
                           x->up ? x->next_try_ms : OTA_NEVER);
        default: return OTA_NEVER;
        }
}

/* Make sure the timer fires within ms. */
static void ota_arm(struct ota *o, uint64_t ms)
{
        if (uv_is_closing((uv_handle_t *)&o->timer))
                return;
        if (uv_is_active((uv_handle_t *)&o->timer) && uv_timer_get_due_in(&o->timer) <= ms)
                return;
        uv_timer_start(&o->timer, on_timer, ms, 0);
}

static void x_schedule(struct ota_xfer *x)
{
        struct ota *o = x->job->o;
        uint64_t due = x_due(x), now = now_ms(o);

        if (due != OTA_NEVER)
                ota_arm(o, due > now ? due - now : 0);
}

/* Put x on the list its state asks for; call after every change of state or of x->up. A
 * transfer that leaves the active list frees a slot: the ready ones get their turn. */
static void x_relist(struct ota_xfer *x)
{
        struct ota *o = x->job->o;
        enum x_list want = XL_NONE;

        if (x_active(x))
                want = XL_ACTIVE;
        else if (x->state == X_QUEUED && x->up && x->job->indexed &&
                 x->job->state == OTA_IN_PROGRESS)
                want = XL_READY;
        if (want != x->list) {
                if (x->list != XL_NONE)
                        xl_remove(&o->lists[x->list], x);
                if (want != XL_NONE)
                        xl_append(&o->lists[want], x);
                if (x->list == XL_ACTIVE && o->lists[XL_READY].n)
                        ota_arm(o, 0);
                x->list = want;
        }
        x_schedule(x);
}

/* Index the transfers of a job that is ready to run, and list those that can start. */
static void job_index(struct ota_job *j)
{
        struct ota *o = j->o;

        if (j->indexed)
                return;
        j->indexed = true;
        for (size_t i = 0; i < j->n_x; i++) {
                struct ota_xfer *x = &j->x[i];
                struct ota_xfer **b = &o->by_dev[dev_hash(x->device)];

                x->dnext = *b;
                if (*b)
                        (*b)->dpprev = &x->dnext;
                *b = x;
                x->dpprev = b;
                x->up = o->link && link_manager_device_connected(o->link, x->device);
                x_relist(x);
        }
}

/* Never from inside an event handler that walks a chain: only from the timer and job_free. */
static void job_unindex(struct ota_job *j)
{
        if (!j->indexed)
                return;
        for (size_t i = 0; i < j->n_x; i++) {
                struct ota_xfer *x = &j->x[i];
                if (x->list != XL_NONE) {
                        xl_remove(&j->o->lists[x->list], x);
                        x->list = XL_NONE;
                }
                *x->dpprev = x->dnext;
                if (x->dnext)
                        x->dnext->dpprev = x->dpprev;
                x->dnext = NULL;
                x->dpprev = NULL;
        }
        j->indexed = false;
}

/* ---- persistence ------------------------------------------------------------------------- */

static json_t *job_doc(const struct ota_job *j)
{
        char sig_hex[2 * MCUGW_OTA_SIG_MAX + 1], sha[65];

        ota_hex(j->sig, j->sig_len, sig_hex);
        ota_hex(j->sha256, 32, sha);
        return json_pack("{ss ss ss sb sI sI}", "sig", sig_hex, "sha256", sha, "version",
                         j->version, "mcuboot", j->mcuboot, "transfer_id",
                         (json_int_t)j->transfer_id, "size", (json_int_t)j->size);
}

static void persist_job(struct ota_job *j)
{
        struct ota *o = j->o;
        sqlite3_stmt *s = o->put_job;
        json_t *tmp = job_doc(j);
        char *doc = json_dumps(tmp, JSON_COMPACT);

        json_decref(tmp);
        if (db_write_begin(o->db) < 0 || !doc) {
                free(doc);
                return;
        }
        sqlite3_reset(s);
        sqlite3_bind_text(s, 1, j->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, j->source, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, j->img ? ota_image_sha256(j->img) : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, ota_state_to_string(j->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, j->reason, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 6, doc, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 7, j->created_us);
        sqlite3_bind_int64(s, 8, now_realtime_usec());
        if (sqlite3_step(s) != SQLITE_DONE)
                log_warning("ota: cannot record job %s", j->id);
        sqlite3_reset(s);
        free(doc);
}

static void persist_x(struct ota_xfer *x)
{
        struct ota *o = x->job->o;
        sqlite3_stmt *s = o->put_x;

        if (db_write_begin(o->db) < 0)
                return;
        sqlite3_reset(s);
        sqlite3_bind_text(s, 1, x->job->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, x->device, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, xfer_names[x->state], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, x->acked);
        sqlite3_bind_int64(s, 5, 0);
        sqlite3_bind_text(s, 6, x->reason, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 7, now_realtime_usec());
        sqlite3_step(s);
        sqlite3_reset(s);
        x->persisted = x->acked;
}

/* ---- reporting ---------------------------------------------------------------------------- */

static void audit_x(struct ota_xfer *x, const char *event, json_t *extra)
{
        struct ota_job *j = x->job;
        json_t *d = json_pack("{ss ss sI}", "job", j->id, "version", j->version, "offset",
                              (json_int_t)x->acked);
        if (extra) {
                json_object_update(d, extra);
                json_decref(extra);
        }
        audit_log(j->o->audit, "daemon", event, x->device, d);
}

static void report(struct ota_xfer *x, enum ota_state st, const char *self_test, const char *reason)
{
        struct ota *o = x->job->o;
        uint32_t bs = o->block_size;
        uint64_t size = ota_image_size(x->job->img);
        struct ota_progress p = {
                .job_id = x->job->id,
                .device_id = x->device,
                .state = st,
                .self_test = self_test,
                .reason = reason,
                .blocks_done = (uint32_t)((x->acked + bs - 1) / bs),
                .blocks_total = (uint32_t)((size + bs - 1) / bs),
                .updated_by = x->job->version,
        };
        if (o->report)
                o->report(o->report_ud, &p);
        if (o->device_fn)
                o->device_fn(o->device_ud, x->device);
}

static void job_check_done(struct ota_job *j);

static void x_set(struct ota_xfer *x, enum xfer_state st, const char *reason)
{
        x->state = st;
        x->state_ms = now_ms(x->job->o);
        if (reason)
                snprintf(x->reason, sizeof x->reason, "%s", reason);
        persist_x(x);
        x_relist(x);
}

static void x_fail(struct ota_xfer *x, const char *reason)
{
        struct ota_job *j = x->job;

        if (x_final(x))
                return;
        log_device(LOG_WARNING, x->device, "ota job %s failed: %s", j->id, reason);
        x_set(x, X_FAILED, reason);
        j->failures++;
        audit_x(x, "ota.transfer_failed", json_pack("{ss}", "reason", reason));
        report(x, OTA_FAILED, NULL, reason);
        job_check_done(j);
}

static void job_finish(struct ota_job *j, enum ota_state st, const char *reason)
{
        j->state = st;
        if (reason)
                snprintf(j->reason, sizeof j->reason, "%s", reason);
        if (j->indexed) {
                /* Out of by_dev soon, not now: an event handler may be walking it. */
                j->o->unindex_pending = true;
                ota_arm(j->o, 0);
        }
        persist_job(j);
        audit_log(j->o->audit, "daemon",
                  st == OTA_SUCCEEDED ? "ota.job_succeeded" : "ota.job_failed", j->id,
                  json_pack("{ss ss}", "state", ota_state_to_string(st), "reason", j->reason));
        log_info("ota job %s: %s%s%s", j->id, ota_state_to_string(st), *j->reason ? ": " : "",
                 j->reason);
        if (j->o->report) {
                struct ota_progress p = {
                        .job_id = j->id, .state = st, .reason = j->reason, .updated_by = j->version
                };
                j->o->report(j->o->report_ud, &p);
        }
        if (j->o->device_fn)
                for (size_t i = 0; i < j->n_x; i++)
                        j->o->device_fn(j->o->device_ud, j->x[i].device);
        if (j->img) {
                ota_image_unref(j->img);
                j->img = NULL;
        }
}

static void send_abort(struct ota_xfer *x)
{
        struct ota_job *j = x->job;
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_ABORT };
        struct mcugw_msg msg;
        uint8_t buf[16];
        int n;

        m.u.abort.transfer_id = j->transfer_id;
        m.u.abort.code = MCUGW_OTA_E_ABORTED;
        n = mcugw_ota_encode(&m, buf, sizeof buf);
        if (n > 0) {
                mcugw_ota_wrap(&msg, buf, (size_t)n);
                (void)link_manager_send(j->o->link, x->device, &msg);
        }
}

static void job_check_done(struct ota_job *j)
{
        size_t ok = 0, final = 0;
        const char *first = NULL;

        if (job_final(j))
                return;
        if (j->o->abort_after && j->failures >= j->o->abort_after) {
                char why[96];
                snprintf(why, sizeof why, "aborted after %u failed transfers", j->failures);
                for (size_t i = 0; i < j->n_x; i++)
                        if (!x_final(&j->x[i])) {
                                if (x_active(&j->x[i]))
                                        send_abort(&j->x[i]);
                                x_set(&j->x[i], X_ABORTED, why);
                                report(&j->x[i], OTA_CANCELED, NULL, why);
                        }
        }
        for (size_t i = 0; i < j->n_x; i++) {
                if (x_final(&j->x[i]))
                        final++;
                if (j->x[i].state == X_DONE)
                        ok++;
                else if (x_final(&j->x[i]) && !first)
                        first = j->x[i].reason;
        }
        if (final < j->n_x)
                return;
        if (ok == j->n_x)
                job_finish(j, OTA_SUCCEEDED, NULL);
        else {
                char why[160];
                snprintf(why, sizeof why, "%zu of %zu devices failed: %s", j->n_x - ok, j->n_x,
                         first ? first : "?");
                job_finish(j, OTA_FAILED, why);
        }
}

/* ---- the transfer ------------------------------------------------------------------------ */

static int send_ota(struct ota_xfer *x, const struct mcugw_ota_msg *m, uint8_t *buf, size_t cap)
{
        struct mcugw_msg msg;
        int n = mcugw_ota_encode(m, buf, cap);

        if (n < 0)
                return -EINVAL;
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        return link_manager_send(x->job->o->link, x->device, &msg);
}

/* OFFER, then version || sig in OFFER_MORE pieces: each message fits the smallest receive
 * limit a device may announce (docs/protocol.md 12.2), so every device can be offered. */
static int send_offer(struct ota_xfer *x)
{
        struct ota_job *j = x->job;
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_OFFER };
        uint8_t meta[MCUGW_OTA_META_MAX], buf[MCUGW_OTA_MORE_HDR + MCUGW_OTA_META_MAX];
        size_t vl = strlen(j->version), total = vl + j->sig_len;
        int r;

        x->next_try_ms = now_ms(j->o) + OTA_STALL_MS;
        m.u.offer.transfer_id = j->transfer_id;
        m.u.offer.size = (uint32_t)ota_image_size(j->img);
        memcpy(m.u.offer.sha256, j->sha256, 32);
        m.u.offer.flags = MCUGW_OTA_F_TEST_BOOT | (j->mcuboot ? MCUGW_OTA_F_MCUBOOT : 0);
        m.u.offer.version_len = vl;
        m.u.offer.sig_len = j->sig_len;
        r = send_ota(x, &m, buf, sizeof buf);
        if (r < 0)
                return r;
        memcpy(meta, j->version, vl);
        memcpy(meta + vl, j->sig, j->sig_len);
        for (size_t off = 0; off < total; off += MCUGW_OTA_MORE_PIECE) {
                struct mcugw_ota_msg p = { .type = MCUGW_MSG_OTA_OFFER_MORE };
                p.u.more.transfer_id = j->transfer_id;
                p.u.more.offset = (uint8_t)off;
                p.u.more.data = meta + off;
                p.u.more.len = MIN(total - off, (size_t)MCUGW_OTA_MORE_PIECE);
                r = send_ota(x, &p, buf, sizeof buf);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Push chunks while the window and the link queue allow. */
static void pump(struct ota_xfer *x)
{
        struct ota_job *j = x->job;
        struct ota *o = j->o;
        uint32_t size = (uint32_t)ota_image_size(j->img);
        uint8_t buf[MCUGW_OTA_CHUNK_HDR + MCUGW_MSG_MAX];

        if (x->state != X_SENDING)
                return;
        /* Stopped by the window (an ack continues) or the link's queue (on_drained does). */
        while (x->sent < size && x->sent - x->acked < x->window &&
               link_manager_queued(o->link, x->device) < OTA_QUEUE_LIMIT) {
                /* Never more than the window in flight, also not by the end of a chunk: the
                 * device sized it to what it can buffer while it is busy (docs/protocol.md). */
                uint32_t len = MIN(MIN(x->max_chunk, o->block_size),
                                   MIN(size - x->sent, x->window - (x->sent - x->acked)));
                size_t room = link_manager_msg_room(o->link, x->device);
                struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_CHUNK };
                int n, r;

                if (len > MCUGW_MSG_MAX - MCUGW_OTA_CHUNK_HDR)
                        len = MCUGW_MSG_MAX - MCUGW_OTA_CHUNK_HDR;
                /* A device may announce a max_chunk its own receive limit cannot carry: the
                 * limit from its handshake wins. */
                if (room > MCUGW_OTA_CHUNK_HDR && len > room - MCUGW_OTA_CHUNK_HDR)
                        len = (uint32_t)(room - MCUGW_OTA_CHUNK_HDR);
                n = ota_image_read(j->img, x->sent, buf + MCUGW_OTA_CHUNK_HDR, len);
                if (n != (int)len) {
                        x_fail(x, "cannot read the cached image");
                        return;
                }
                m.u.chunk.transfer_id = j->transfer_id;
                m.u.chunk.offset = x->sent;
                m.u.chunk.data = buf + MCUGW_OTA_CHUNK_HDR; /* encoded in place */
                m.u.chunk.len = len;
                r = send_ota(x, &m, buf, sizeof buf);
                if (r == -ENOBUFS)
                        return; /* queue full: on_drained or the next ack continues */
                if (r < 0) {
                        if (r == -EMSGSIZE && x->max_chunk > 64) {
                                x->max_chunk /= 2; /* the device's limit was smaller */
                                continue;
                        }
                        return; /* not connected: the stall timer handles it */
                }
                x->sent += len;
                o->chunks_sent++;
                o->bytes_sent += len;
        }
}

static unsigned active_count(struct ota *o, const char *link)
{
        unsigned n = 0;

        if (!link)
                return (unsigned)o->lists[XL_ACTIVE].n;
        for (struct ota_xfer *x = o->lists[XL_ACTIVE].head; x; x = x->lnext)
                if (strcmp(x->link, link) == 0)
                        n++;
        return n;
}

static void x_start(struct ota_xfer *x)
{
        const struct registry_device *rd = registry_find(x->job->o->reg, x->device);

        snprintf(x->link, sizeof x->link, "%s", rd ? rd->link : "");
        x->acked = x->sent = 0;
        x->window = x->max_chunk = 0;
        x->probes = 0;
        x->started_ms = x->last_progress_ms = now_ms(x->job->o);
        x->next_try_ms = x->started_ms + OTA_STALL_MS;
        x_set(x, X_OFFERED, NULL);
        if (send_offer(x) < 0)
                x->next_try_ms = now_ms(x->job->o) + 1000;
        x_schedule(x);
}

/* The device's session went away: an offered or sending transfer is paused (no failure
 * counted) and keeps its slot; it is offered again when the device is back, and the device
 * answers with the offset it holds. */
static void x_pause(struct ota_xfer *x, uint64_t now)
{
        if (x->state != X_OFFERED && x->state != X_SENDING)
                return;
        x->state = X_OFFERED;
        x->last_progress_ms = now;
        x->next_try_ms = now + OTA_REOFFER_MS;
        x->probes = 0;
}

/* A deadline of an active transfer has come: stall probes, retries, the self-test timeout. */
static void x_timeout(struct ota_xfer *x, uint64_t now)
{
        struct ota *o = x->job->o;

        switch (x->state) {
        case X_OFFERED:
        case X_SENDING:
                pump(x);
                if (!x_active(x))
                        break;
                if (x->state == X_SENDING && now - x->last_progress_ms < OTA_STALL_MS)
                        break;
                if (now < x->next_try_ms)
                        break;
                if (++x->probes > OTA_MAX_PROBES) {
                        x_fail(x, "no progress from the device");
                        break;
                }
                o->probes++;
                (void)send_offer(x);
                break;
        case X_REBOOTING:
        case X_TESTING:
                if (now - x->state_ms > OTA_TEST_TIMEOUT_MS)
                        x_fail(x, "device did not report its self-test");
                else if (x->up && now >= x->next_try_ms) {
                        /* Ask again now and then (lost STATUS). */
                        (void)send_offer(x);
                        x->next_try_ms = now + 10 * OTA_STALL_MS;
                }
                break;
        default: break;
        }
}

static int due_reserve(struct ota *o, size_t n)
{
        struct ota_xfer **p;

        if (n <= o->due_cap)
                return 0;
        n = MAX(n, 2 * o->due_cap);
        p = realloc(o->due, n * sizeof *p);
        if (!p)
                return -ENOMEM;
        o->due = p;
        o->due_cap = n;
        return 0;
}

/* Start the ready transfers that the limits allow, oldest first. */
static void start_ready(struct ota *o, uint64_t now)
{
        size_t n = 0;

        if (!o->lists[XL_READY].n ||
            (o->max_concurrent && o->lists[XL_ACTIVE].n >= o->max_concurrent) ||
            due_reserve(o, o->lists[XL_READY].n) < 0)
                return;
        /* Collected first: starting one can end a session, and move others off the list. */
        for (struct ota_xfer *x = o->lists[XL_READY].head; x; x = x->lnext)
                if (x->next_try_ms <= now)
                        o->due[n++] = x;
        for (size_t i = 0; i < n; i++) {
                struct ota_xfer *x = o->due[i];
                const struct registry_device *rd;

                if (x->list != XL_READY || x->next_try_ms > now)
                        continue;
                if (o->max_concurrent && o->lists[XL_ACTIVE].n >= o->max_concurrent)
                        break;
                rd = registry_find(o->reg, x->device);
                if (o->max_per_link && rd && active_count(o, rd->link) >= o->max_per_link)
                        continue;
                x_start(x);
        }
}

static void on_timer(uv_timer_t *t)
{
        struct ota *o = t->data;
        uint64_t now = now_ms(o), next = OTA_NEVER;
        size_t n = 0;

        if (o->unindex_pending) {
                o->unindex_pending = false;
                for (struct ota_job *j = o->jobs; j; j = j->next)
                        if (job_final(j))
                                job_unindex(j);
        }
        if (due_reserve(o, o->lists[XL_ACTIVE].n + o->lists[XL_READY].n) < 0) {
                ota_arm(o, 100);
                return;
        }
        /* Collected first: acting on one transfer can move others between the lists. */
        for (struct ota_xfer *x = o->lists[XL_ACTIVE].head; x; x = x->lnext)
                if (x_due(x) <= now)
                        o->due[n++] = x;
        for (size_t i = 0; i < n; i++)
                if (o->due[i]->list == XL_ACTIVE && x_due(o->due[i]) <= now)
                        x_timeout(o->due[i], now);
        start_ready(o, now);
        /* Ready transfers past next_try_ms wait for a slot: a transfer leaving the active list
         * re-arms the timer. Deadlines that moved later (progress) are found here. */
        for (struct ota_xfer *x = o->lists[XL_ACTIVE].head; x; x = x->lnext)
                next = MIN(next, x_due(x));
        for (struct ota_xfer *x = o->lists[XL_READY].head; x; x = x->lnext)
                if (x->next_try_ms > now)
                        next = MIN(next, x->next_try_ms);
        if (next != OTA_NEVER)
                ota_arm(o, next > now ? next - now : 1);
}

/* ---- link events -------------------------------------------------------------------------- */

/* The handlers walk the device's chain; nothing they call changes a chain (job_unindex waits
 * for the timer). Up or down, a live transfer pauses from now: up, the re-offer comes
 * OTA_REOFFER_MS later; down, it waits for the device. */
static void ota_device_updown(struct ota *o, const char *device_id, bool up)
{
        uint64_t now = now_ms(o);

        for (struct ota_xfer *x = o->by_dev[dev_hash(device_id)]; x; x = x->dnext) {
                if (strcmp(x->device, device_id) != 0)
                        continue;
                x->up = up;
                if (x_final(x) || job_final(x->job))
                        continue;
                x_pause(x, now);
                x_relist(x);
        }
}

static void ota_on_up(void *ud, const char *device_id)
{
        ota_device_updown(ud, device_id, true);
}

static void ota_on_down(void *ud, const char *device_id, const char *reason)
{
        ota_device_updown(ud, device_id, false);
}

static void ota_on_drained(void *ud, const char *device_id, size_t queued)
{
        struct ota *o = ud;

        for (struct ota_xfer *x = o->by_dev[dev_hash(device_id)]; x; x = x->dnext)
                if (x->state == X_SENDING && x->up && strcmp(x->device, device_id) == 0)
                        pump(x);
}

static struct ota_xfer *find_x(struct ota *o, const char *device, uint32_t transfer_id)
{
        for (struct ota_xfer *x = o->by_dev[dev_hash(device)]; x; x = x->dnext)
                if (x->job->transfer_id == transfer_id && !job_final(x->job) &&
                    strcmp(x->device, device) == 0)
                        return x;
        return NULL;
}

static void x_progress(struct ota_xfer *x, uint32_t offset)
{
        struct ota *o = x->job->o;
        uint32_t size = (uint32_t)ota_image_size(x->job->img);

        if (offset > size)
                return;
        x->last_progress_ms = now_ms(o);
        x->probes = 0;
        if (offset < x->acked || offset > x->sent)
                x->sent = offset; /* rewind (device lost data) or device ahead (resume) */
        x->acked = offset;
        if (x->acked - x->persisted >= OTA_PERSIST_EVERY) {
                persist_x(x);
                report(x, OTA_IN_PROGRESS, NULL, NULL);
        }
}

static void on_ack(struct ota_xfer *x, const struct mcugw_ota_ack *a)
{
        struct ota *o = x->job->o;

        if (x->state != X_OFFERED && x->state != X_SENDING)
                return;
        switch (a->status) {
        case MCUGW_OTA_ACK_OK:
        case MCUGW_OTA_ACK_RESYNC:
                if (a->max_chunk < 16 || a->window < a->max_chunk)
                        return; /* nonsense limits: ignored, counted as a stall */
                x->max_chunk = a->max_chunk;
                x->window = MIN(a->window, o->window);
                if (x->state == X_OFFERED) {
                        bool resume = a->offset > 0 || x->ever_started;
                        x->sent = x->acked = a->offset;
                        x->resumed |= resume;
                        audit_x(x, resume ? "ota.transfer_resume" : "ota.transfer_start",
                                json_pack("{ss sI}", "link", x->link, "size",
                                          (json_int_t)ota_image_size(x->job->img)));
                        x->state = X_SENDING;
                        if (!x->ever_started)
                                report(x, OTA_IN_PROGRESS, NULL, NULL);
                        x->ever_started = true;
                }
                if (a->status == MCUGW_OTA_ACK_RESYNC) {
                        o->resyncs++;
                        x->sent = a->offset;
                }
                x_progress(x, a->offset);
                pump(x);
                break;
        case MCUGW_OTA_ACK_BUSY:
                x->state = X_QUEUED;
                x->next_try_ms = now_ms(o) + OTA_BUSY_RETRY_MS;
                x_relist(x);
                break;
        default: break; /* REFUSED: the STATUS that follows says why */
        }
}

static void on_status(struct ota_xfer *x, const struct mcugw_ota_status *s)
{
        char reason[MCUGW_OTA_REASON_MAX + 1];

        snprintf(reason, sizeof reason, "%.*s", (int)s->reason_len, s->reason ? s->reason : "");
        switch (s->state) {
        case MCUGW_OTA_ST_RECEIVING:
                /* After a reconnect: resume from the device's offset. */
                if (x->state == X_SENDING || x->state == X_OFFERED) {
                        x->state = X_OFFERED;
                        (void)send_offer(x);
                }
                break;
        case MCUGW_OTA_ST_VERIFIED:
                if (x->state != X_OFFERED && x->state != X_SENDING)
                        break;
                x->acked = (uint32_t)ota_image_size(x->job->img);
                x_set(x, X_REBOOTING, NULL);
                x->next_try_ms = now_ms(x->job->o) + 10 * OTA_STALL_MS;
                audit_x(x, "ota.transfer_done",
                        json_pack("{sI sI}", "bytes", (json_int_t)x->acked, "duration_ms",
                                  (json_int_t)(now_ms(x->job->o) - x->started_ms)));
                report(x, OTA_IN_PROGRESS, "ready", NULL);
                break;
        case MCUGW_OTA_ST_TESTING:
                if (x->state != X_REBOOTING && x->state != X_OFFERED && x->state != X_SENDING)
                        break;
                x_set(x, X_TESTING, NULL);
                audit_x(x, "ota.self_test", json_pack("{ss}", "result", "active"));
                report(x, OTA_IN_PROGRESS, "active", NULL);
                break;
        case MCUGW_OTA_ST_CONFIRMED:
                if (x_final(x))
                        break;
                x_set(x, X_DONE, NULL);
                audit_x(x, "ota.self_test", json_pack("{ss}", "result", "passed"));
                {
                        char why[64];
                        snprintf(why, sizeof why, "accepted v%s", x->job->version);
                        report(x, OTA_SUCCEEDED, NULL, why);
                }
                job_check_done(x->job);
                break;
        case MCUGW_OTA_ST_FAILED:
        case MCUGW_OTA_ST_REJECTED:
        case MCUGW_OTA_ST_ABORTED: {
                /* The SDK sends a text only for the application's self-test reason. */
                const char *text = *reason ? reason : mcugw_ota_code_str(s->code);
                char why[128];
                if (x_final(x))
                        break;
                snprintf(why, sizeof why, "%s: %s (code %u)",
                         s->state == MCUGW_OTA_ST_FAILED ? "rejected" : "refused", text, s->code);
                if (s->code == MCUGW_OTA_E_SELF_TEST)
                        audit_x(x, "ota.self_test",
                                json_pack("{ss ss}", "result", "failed", "reason", text));
                x_fail(x, why);
                break;
        }
        default: break;
        }
}

void ota_link_message(void *ud, const char *device_id, const struct mcugw_msg *m)
{
        struct ota *o = ud;
        struct mcugw_ota_msg d;
        struct ota_xfer *x;
        uint32_t id;

        if (!o || mcugw_ota_decode(m, &d) < 0) {
                log_device(LOG_DEBUG, device_id, "malformed OTA message dropped");
                return;
        }
        switch (d.type) {
        case MCUGW_MSG_OTA_CHUNK_ACK: id = d.u.ack.transfer_id; break;
        case MCUGW_MSG_OTA_STATUS: id = d.u.status.transfer_id; break;
        default: return; /* offers and chunks only go to devices */
        }
        x = find_x(o, device_id, id);
        if (!x) {
                log_device(LOG_DEBUG, device_id, "OTA message for unknown transfer %u", id);
                return;
        }
        if (d.type == MCUGW_MSG_OTA_CHUNK_ACK)
                on_ack(x, &d.u.ack);
        else
                on_status(x, &d.u.status);
}

/* ---- jobs -------------------------------------------------------------------------------- */

static void job_free(struct ota_job *j)
{
        if (!j)
                return;
        job_unindex(j);
        if (j->img)
                ota_image_unref(j->img);
        free(j->x);
        free(j);
}

static bool in_groups(const char *groups, const char *g)
{
        size_t n = strlen(g);
        for (const char *p = groups; p && *p;) {
                const char *e = strchr(p, ',');
                size_t k = e ? (size_t)(e - p) : strlen(p);
                if (k == n && strncmp(p, g, n) == 0)
                        return true;
                p = e ? e + 1 : NULL;
        }
        return false;
}

static int add_target(struct ota_job *j, const char *id)
{

        for (size_t i = 0; i < j->n_x; i++)
                if (strcmp(j->x[i].device, id) == 0)
                        return 0;
        if (GREEDY_REALLOC(j->x, j->n_x_alloc, j->n_x + 1) < 0)
                return -ENOMEM;
        memset(&j->x[j->n_x], 0, sizeof j->x[0]);
        j->x[j->n_x].job = j;
        snprintf(j->x[j->n_x].device, sizeof j->x[j->n_x].device, "%s", id);
        j->n_x++;
        return 0;
}

static void prune(struct ota *o)
{
        unsigned kept = 0;
        for (struct ota_job **p = &o->jobs; *p;) {
                if (job_final(*p) && ++kept > OTA_MAX_JOBS_KEPT) {
                        struct ota_job *j = *p;
                        *p = j->next;
                        job_free(j);
                } else
                        p = &(*p)->next;
        }
}

static void job_link(struct ota *o, struct ota_job *j)
{
        /* newest first */
        j->next = o->jobs;
        o->jobs = j;
        prune(o);
}

static int fail_spec(char *err, size_t n, int r, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int fail_spec(char *err, size_t n, int r, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
        return r;
}

/* Signature + MCUboot checks. 0 or -EBADMSG/-EPERM with err set. */
static int check_image(struct ota *o, struct ota_job *j, const struct ota_job_spec *spec, char *err,
                       size_t errlen, struct ota_mcuboot_info *mb)
{
        struct ota_image *img = spec->image;
        uint64_t size = ota_image_size(img);
        uint8_t hdr[4];
        int r;

        if (size > UINT32_MAX)
                return fail_spec(err, errlen, -EFBIG, "image larger than 4 GiB");
        if (!spec->sig_len) {
                if (!o->allow_unsigned)
                        return fail_spec(err, errlen, -EPERM,
                                         "image is not signed and AllowUnsigned=no");
                audit_log(o->audit, spec->actor, "ota.signature_skipped", j->id,
                          json_pack("{ss}", "sha256", ota_image_sha256(img)));
        } else {
                if (!o->verifier)
                        return fail_spec(err, errlen, -ENOKEY,
                                         "no CodeSigningCertificate= configured");
                r = ota_verify_file(o->verifier, ota_image_path(img), size, spec->sig,
                                    spec->sig_len, NULL);
                if (r < 0) {
                        audit_log(o->audit, spec->actor, "ota.signature_failed", j->id,
                                  json_pack("{ss ss}", "sha256", ota_image_sha256(img), "error",
                                            r == -EBADMSG ? "signature does not verify"
                                                          : strerror(-r)));
                        return fail_spec(err, errlen, -EBADMSG,
                                         "code-signing signature check failed");
                }
                audit_log(o->audit, spec->actor, "ota.signature_ok", j->id,
                          json_pack("{ss sI}", "sha256", ota_image_sha256(img), "size",
                                    (json_int_t)size));
        }
        if (ota_image_read(img, 0, hdr, 4) == 4 && ota_mcuboot_is_image(hdr, 4)) {
                _cleanup_free_ uint8_t *buf = malloc(size);
                char why[160];
                uint8_t h[32];

                if (!buf || ota_image_read(img, 0, buf, size) != (int)size)
                        return fail_spec(err, errlen, -EIO, "cannot read the image");
                if (ota_mcuboot_parse(buf, size, mb, why, sizeof why) < 0)
                        return fail_spec(err, errlen, -EBADMSG, "bad MCUboot image: %s", why);
                ota_sha256_buffer(buf, mb->hashed_len, h);
                if (memcmp(h, mb->sha256, 32) != 0)
                        return fail_spec(err, errlen, -EBADMSG,
                                         "MCUboot image hash TLV does not match");
                j->mcuboot = true;
                ota_mcuboot_version_str(&mb->version, j->version, sizeof j->version);
        }
        return 0;
}

int ota_job_create(struct ota *o, const struct ota_job_spec *spec, char ret_id[65], char *err,
                   size_t errlen)
{
        struct ota_mcuboot_info mb = { 0 };
        struct ota_job *j;
        int r;

        if (!spec->image || !ota_image_complete(spec->image) || spec->sig_len > MCUGW_OTA_SIG_MAX)
                return fail_spec(err, errlen, -EINVAL, "no complete image");
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->o = o;
        if (spec->id)
                snprintf(j->id, sizeof j->id, "%s", spec->id);
        else
                snprintf(j->id, sizeof j->id, "local-%lld-%u",
                         (long long)(now_realtime_usec() / 1000000), ++o->next_local);
        snprintf(j->source, sizeof j->source, "%s", spec->source ? spec->source : "local");
        j->created_us = now_realtime_usec();
        j->state = OTA_IN_PROGRESS;
        snprintf(j->version, sizeof j->version, "%.12s", ota_image_sha256(spec->image));
        while (!j->transfer_id)
                if (RAND_bytes((unsigned char *)&j->transfer_id, sizeof j->transfer_id) != 1)
                        j->transfer_id = (uint32_t)now_realtime_usec() | 1;
        /* The image must be checked before anything else happens with it. */
        r = check_image(o, j, spec, err, errlen, &mb);
        if (r < 0) {
                /* Not an image we accept: it has no version (its hash is no version, and
                 * `ota list` showing one reads as if something was installed). */
                j->version[0] = 0;
                audit_log(o->audit, spec->actor, "ota.job_rejected", j->id,
                          json_pack("{ss ss}", "source", j->source, "reason", err));
                job_link(o, j);
                job_finish(j, OTA_FAILED, err);
                if (ret_id)
                        snprintf(ret_id, 65, "%s", j->id);
                return r;
        }
        memcpy(j->sig, spec->sig, spec->sig_len);
        j->sig_len = spec->sig_len;
        {
                const char *hex = ota_image_sha256(spec->image);
                for (int i = 0; i < 32; i++) {
                        unsigned v;
                        sscanf(hex + 2 * i, "%2x", &v);
                        j->sha256[i] = (uint8_t)v;
                }
        }
        /* Targets: devices by id, then every device of the groups. */
        for (size_t i = 0; i < spec->n_devices; i++) {
                const struct registry_device *rd = registry_find(o->reg, spec->devices[i]);
                if (!rd) {
                        r = fail_spec(err, errlen, -ENOENT, "unknown device %s", spec->devices[i]);
                        goto bad;
                }
                if ((r = add_target(j, rd->id)) < 0)
                        goto bad;
        }
        for (size_t g = 0; g < spec->n_groups; g++) {
                const struct registry_device *rd;
                size_t before = j->n_x;
                for (size_t i = 0; (rd = registry_get(o->reg, i)); i++)
                        if (rd->state == DEVICE_ACTIVE && in_groups(rd->groups, spec->groups[g]) &&
                            (r = add_target(j, rd->id)) < 0)
                                goto bad;
                if (j->n_x == before) {
                        r = fail_spec(err, errlen, -ENOENT, "no active device in group %s",
                                      spec->groups[g]);
                        goto bad;
                }
        }
        if (!j->n_x) {
                r = fail_spec(err, errlen, -EINVAL, "no target device");
                goto bad;
        }
        /* Anti-rollback by policy: an MCUboot version below the device's is refused. */
        if (j->mcuboot && !o->allow_downgrade)
                for (size_t i = 0; i < j->n_x; i++) {
                        const struct registry_device *rd = registry_find(o->reg, j->x[i].device);
                        struct ota_mcuboot_version cur;
                        if (rd && ota_mcuboot_version_parse(rd->fw_version, &cur) == 0 &&
                            ota_mcuboot_version_cmp(&mb.version, &cur) < 0) {
                                r = fail_spec(err, errlen, -EPERM,
                                              "downgrade refused: device %s runs %s, image is %s "
                                              "(AllowDowngrade=no)",
                                              rd->id, rd->fw_version, j->version);
                                goto bad;
                        }
                }
        j->img = spec->image;
        j->size = ota_image_size(j->img);
        ota_image_ref(j->img);
        job_link(o, j);
        persist_job(j);
        for (size_t i = 0; i < j->n_x; i++)
                persist_x(&j->x[i]);
        job_index(j); /* those whose device is up start on the timer, at once */
        {
                json_t *t = json_array();
                for (size_t i = 0; i < j->n_x; i++)
                        json_array_append_new(t, json_string(j->x[i].device));
                audit_log(o->audit, spec->actor, "ota.job_received", j->id,
                          json_pack("{ss ss ss sI sb so sI}", "source", j->source, "sha256",
                                    ota_image_sha256(j->img), "version", j->version, "size",
                                    (json_int_t)ota_image_size(j->img), "mcuboot", j->mcuboot,
                                    "devices", t, "security_counter",
                                    (json_int_t)(mb.has_sec_cnt ? mb.sec_cnt : 0)));
        }
        log_info("ota job %s: %s (%llu bytes) for %zu device(s)", j->id, j->version,
                 (unsigned long long)ota_image_size(j->img), j->n_x);
        if (ret_id)
                snprintf(ret_id, 65, "%s", j->id);
        return 0;
bad:
        audit_log(o->audit, spec->actor, "ota.job_rejected", j->id,
                  json_pack("{ss ss}", "source", j->source, "reason", err));
        job_link(o, j);
        job_finish(j, OTA_FAILED, err);
        if (ret_id)
                snprintf(ret_id, 65, "%s", j->id);
        return r;
}

int ota_job_abort(struct ota *o, const char *id, const char *actor)
{
        for (struct ota_job *j = o->jobs; j; j = j->next) {
                if (strcmp(j->id, id) != 0)
                        continue;
                if (job_final(j))
                        return -EALREADY;
                for (size_t i = 0; i < j->n_x; i++)
                        if (!x_final(&j->x[i])) {
                                if (x_active(&j->x[i]))
                                        send_abort(&j->x[i]);
                                x_set(&j->x[i], X_ABORTED, "aborted by operator");
                                report(&j->x[i], OTA_CANCELED, NULL, "aborted");
                        }
                audit_log(o->audit, actor, "ota.job_aborted", j->id, NULL);
                job_finish(j, OTA_CANCELED, "aborted");
                return 0;
        }
        return -ENOENT;
}

int ota_job_state(struct ota *o, const char *id, const char **ret_reason)
{
        for (struct ota_job *j = o->jobs; j; j = j->next)
                if (strcmp(j->id, id) == 0) {
                        if (ret_reason)
                                *ret_reason = j->reason;
                        return (int)j->state;
                }
        return -ENOENT;
}

/* ---- JSON views, local jobs ---------------------------------------------------------------- */

static json_t *x_json(const struct ota_xfer *x)
{
        uint64_t size = x->job->size;
        json_t *o = json_pack("{ss ss sI sI}", "device", x->device, "state", xfer_names[x->state],
                              "offset", (json_int_t)x->acked, "size", (json_int_t)size);
        if (size)
                json_object_set_new(o, "percent",
                                    json_integer((json_int_t)(x->acked * 100 / size)));
        if (*x->reason)
                json_object_set_new(o, "reason", json_string(x->reason));
        if (x->resumed)
                json_object_set_new(o, "resumed", json_true());
        return o;
}

static json_t *job_json(const struct ota_job *j, bool details)
{
        size_t done = 0;
        json_t *o;

        for (size_t i = 0; i < j->n_x; i++)
                done += j->x[i].state == X_DONE;
        o = json_pack("{ss ss ss ss sI sI sI}", "id", j->id, "source", j->source, "state",
                      ota_state_to_string(j->state), "version", j->version, "devices",
                      (json_int_t)j->n_x, "succeeded", (json_int_t)done, "created_us",
                      (json_int_t)j->created_us);
        if (*j->reason)
                json_object_set_new(o, "reason", json_string(j->reason));
        if (details) {
                json_t *a = json_array();
                for (size_t i = 0; i < j->n_x; i++)
                        json_array_append_new(a, x_json(&j->x[i]));
                json_object_set_new(o, "transfers", a);
                json_object_set_new(o, "transfer_id", json_integer(j->transfer_id));
                json_object_set_new(o, "mcuboot", json_boolean(j->mcuboot));
        }
        return o;
}

json_t *ota_device_json(struct ota *o, const char *device_id)
{
        if (!o)
                return NULL;
        for (struct ota_xfer *x = o->by_dev[dev_hash(device_id)]; x; x = x->dnext)
                if (!job_final(x->job) && strcmp(x->device, device_id) == 0) {
                        json_t *j = x_json(x);
                        json_object_del(j, "device");
                        json_object_set_new(j, "job", json_string(x->job->id));
                        return j;
                }
        return NULL;
}

json_t *ota_job_list_json(struct ota *o)
{
        json_t *a = json_array();

        for (struct ota_job *j = o->jobs; j; j = j->next)
                json_array_append_new(a, job_json(j, false));
        return a;
}

int ota_job_json(struct ota *o, const char *id, json_t **ret)
{
        for (struct ota_job *j = o->jobs; j; j = j->next)
                if (strcmp(j->id, id) == 0) {
                        *ret = job_json(j, true);
                        return 0;
                }
        return -ENOENT;
}

static int read_sig_file(const char *path, uint8_t *sig, size_t cap)
{
        _cleanup_free_ char *buf = NULL;
        size_t n = 0;
        int r;

        /* A regular file of at most cap - 1 bytes, never a FIFO that blocks the loop. */
        r = fileio_read(path, 0, cap - 1, &buf, &n, NULL, 0);
        if (r == -EFBIG)
                return -EBADMSG;
        if (r < 0)
                return r;
        if (n == 0)
                return -EBADMSG;
        memcpy(sig, buf, n);
        return (int)n;
}

int ota_job_start_file(struct ota *o, const char *actor, const char *file, const char *sigfile,
                       const char *dev, const char *group, char ret_id[65], char *err,
                       size_t errlen)
{
        struct ota_job_spec spec = { .source = "local" };
        struct ota_image *img;
        uint8_t sig[MCUGW_OTA_SIG_MAX + 1];
        char why[256], path[4200];
        bool sig_given = sigfile != NULL;
        int r, n = 0;

        if (!sigfile) {
                snprintf(path, sizeof path, "%s.sig", file);
                sigfile = path;
        }
        n = read_sig_file(sigfile, sig, sizeof sig);
        if (n == -ENOENT && !sig_given)
                n = 0; /* unsigned: allowed only with AllowUnsigned=yes */
        else if (n < 0) {
                snprintf(err, errlen, "cannot read the signature %s: %s", sigfile,
                         n == -EBADMSG                  ? "not a DER signature"
                         : n == -EINVAL || n == -EISDIR ? "not a regular file"
                                                        : strerror(-n));
                return n;
        }
        r = ota_cache_import(o->cache, file, &img);
        if (r < 0) {
                snprintf(err, errlen, "cannot read %s: %s", file,
                         r == -EINVAL || r == -EISDIR ? "not a regular file (or empty)"
                                                      : strerror(-r));
                return r;
        }
        spec.actor = actor;
        spec.image = img;
        spec.sig = sig;
        spec.sig_len = (size_t)n;
        spec.devices = dev ? &dev : NULL;
        spec.n_devices = dev ? 1 : 0;
        spec.groups = group ? &group : NULL;
        spec.n_groups = group ? 1 : 0;
        r = ota_job_create(o, &spec, ret_id, why, sizeof why);
        ota_image_unref(img);
        db_commit(o->db);
        if (r < 0) {
                snprintf(err, errlen, "OTA job %s refused: %s", ret_id, why);
                return r;
        }
        return 0;
}

json_t *ota_status_json(struct ota *o)
{
        size_t active = 0, jobs = 0;

        for (struct ota_job *j = o->jobs; j; j = j->next)
                if (!job_final(j))
                        jobs++;
        active = active_count(o, NULL);
        return json_pack("{sI sI sI sI sI sI sI sb}", "jobs_active", (json_int_t)jobs,
                         "transfers_active", (json_int_t)active, "chunks_sent",
                         (json_int_t)o->chunks_sent, "bytes_sent", (json_int_t)o->bytes_sent,
                         "resyncs", (json_int_t)o->resyncs, "probes", (json_int_t)o->probes,
                         "cache_bytes", (json_int_t)ota_cache_bytes(o->cache),
                         "signing_certificate", o->verifier != NULL);
}

/* ---- restart: reload unfinished jobs ------------------------------------------------------ */

static int hex_decode(const char *s, uint8_t *out, size_t cap)
{
        size_t n = strlen(s);
        if (n % 2 || n / 2 > cap)
                return -EINVAL;
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;
                if (sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                out[i] = (uint8_t)v;
        }
        return (int)(n / 2);
}

static void load_jobs(struct ota *o)
{
        sqlite3_stmt *s = o->load_jobs;

        sqlite3_reset(s);
        while (sqlite3_step(s) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(s, 0);
                const char *src = (const char *)sqlite3_column_text(s, 1);
                const char *image = (const char *)sqlite3_column_text(s, 2);
                const char *doc = (const char *)sqlite3_column_text(s, 3);
                json_t *d = doc ? json_loads(doc, 0, NULL) : NULL;
                struct ota_job *j = calloc(1, sizeof *j);
                const char *sig = json_string_value(json_object_get(d, "sig"));
                const char *sha = json_string_value(json_object_get(d, "sha256"));
                const char *ver = json_string_value(json_object_get(d, "version"));
                int n;

                if (!j || !id || !image || !sig || !sha || !ver ||
                    ota_cache_lookup(o->cache, image, &j->img) < 0) {
                        log_warning("ota: cannot resume job %s (image gone)", id ? id : "?");
                        json_decref(d);
                        free(j);
                        continue;
                }
                j->o = o;
                snprintf(j->id, sizeof j->id, "%s", id);
                snprintf(j->source, sizeof j->source, "%s", src ? src : "local");
                snprintf(j->version, sizeof j->version, "%s", ver);
                n = hex_decode(sig, j->sig, sizeof j->sig);
                j->sig_len = n > 0 ? (size_t)n : 0;
                hex_decode(sha, j->sha256, 32);
                j->mcuboot = json_is_true(json_object_get(d, "mcuboot"));
                j->size = ota_image_size(j->img);
                j->transfer_id = (uint32_t)json_integer_value(json_object_get(d, "transfer_id"));
                j->state = OTA_IN_PROGRESS;
                j->created_us = now_realtime_usec();
                json_decref(d);
                sqlite3_reset(o->load_x);
                sqlite3_bind_text(o->load_x, 1, j->id, -1, SQLITE_TRANSIENT);
                while (sqlite3_step(o->load_x) == SQLITE_ROW) {
                        const char *dev = (const char *)sqlite3_column_text(o->load_x, 0);
                        const char *st = (const char *)sqlite3_column_text(o->load_x, 1);
                        if (!dev || add_target(j, dev) < 0)
                                continue;
                        struct ota_xfer *x = &j->x[j->n_x - 1];
                        x->acked = (uint32_t)sqlite3_column_int64(o->load_x, 2);
                        x->state = X_QUEUED;
                        for (int k = X_DONE; k <= X_ABORTED; k++)
                                if (st && strcmp(st, xfer_names[k]) == 0)
                                        x->state = (enum xfer_state)k;
                        if (st && (strcmp(st, "rebooting") == 0 || strcmp(st, "testing") == 0))
                                x->state = X_QUEUED; /* the re-offer returns its state */
                        x->ever_started = x->acked > 0;
                }
                sqlite3_reset(o->load_x);
                log_info("ota: resuming job %s (%zu device(s))", j->id, j->n_x);
                audit_log(o->audit, "daemon", "ota.job_resumed", j->id, NULL);
                job_link(o, j);
                job_index(j);
                job_check_done(j);
        }
        sqlite3_reset(s);
}

/* ---- life cycle --------------------------------------------------------------------------- */

void ota_apply_conf(struct ota *o, const struct ota_options *opts)
{
        char err[256];

        o->block_size = (uint32_t)opts->block_size;
        o->window = (uint32_t)MAX(opts->window, (uint64_t)1024);
        o->max_concurrent = opts->max_concurrent;
        o->max_per_link = opts->max_per_link;
        o->abort_after = opts->abort_after;
        o->allow_downgrade = opts->allow_downgrade;
        o->allow_unsigned = opts->allow_unsigned;
        if (o->lists[XL_READY].n)
                ota_arm(o, 0); /* the limits may have grown */
        if (opts->signing_cert) {
                struct ota_verifier *v;
                if (ota_verifier_new(opts->signing_cert, &v, err, sizeof err) == 0) {
                        ota_verifier_free(o->verifier);
                        o->verifier = v;
                } else
                        log_error("OTA: CodeSigningCertificate %s: %s", opts->signing_cert, err);
        } else {
                ota_verifier_free(o->verifier);
                o->verifier = NULL;
        }
}

int ota_new(uv_loop_t *loop, const struct ota_options *opts, const char *state_dir, struct db *db,
            struct audit *audit, struct registry *reg, struct link_manager *link, struct ota **ret)
{
        struct ota *o = calloc(1, sizeof *o);
        _cleanup_free_ char *dir = NULL;
        int r;

        if (!o)
                return -ENOMEM;
        o->loop = loop;
        o->db = db;
        o->audit = audit;
        o->reg = reg;
        o->link = link;
        if (opts->cache_dir)
                dir = strdup(opts->cache_dir);
        else if (asprintf(&dir, "%s/ota", state_dir) < 0)
                dir = NULL;
        if (!dir) {
                free(o);
                return -ENOMEM;
        }
        if ((r = ota_cache_open(db, dir, opts->max_cache, &o->cache)) < 0) {
                log_error_errno(r, "OTA: cannot open the image cache %s: %m", dir);
                free(o);
                return r;
        }
        if ((r = db_prepare(db,
                            "INSERT OR REPLACE INTO ota_jobs (id, source, image, state, reason, "
                            "doc, created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            &o->put_job)) < 0 ||
            (r = db_prepare(db,
                            "INSERT OR REPLACE INTO ota_transfers (job, device, state, offset, "
                            "failures, reason, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            &o->put_x)) < 0 ||
            (r = db_prepare(db,
                            "SELECT id, source, image, doc FROM ota_jobs WHERE state = "
                            "'IN_PROGRESS' ORDER BY created_us",
                            &o->load_jobs)) < 0 ||
            (r = db_prepare(db,
                            "SELECT device, state, offset FROM ota_transfers WHERE job = ? "
                            "ORDER BY device",
                            &o->load_x)) < 0) {
                ota_cache_free(o->cache);
                free(o);
                return r;
        }
        uv_timer_init(loop, &o->timer);
        o->timer.data = o;
        ota_apply_conf(o, opts);
        load_jobs(o);
        o->listener = (struct link_listener){
                .ud = o,
                .on_up = ota_on_up,
                .on_down = ota_on_down,
                .on_drained = ota_on_drained,
        };
        if (link)
                link_manager_add_listener(link, &o->listener);
        *ret = o;
        return 0;
}

struct ota_cache *ota_get_cache(struct ota *o)
{
        return o->cache;
}

void ota_set_device_listener(struct ota *o, void (*fn)(void *ud, const char *device_id), void *ud)
{
        o->device_fn = fn;
        o->device_ud = ud;
}

void ota_set_reporter(struct ota *o, ota_report_fn fn, void *ud)
{
        o->report = fn;
        o->report_ud = ud;
}

static void on_timer_closed(uv_handle_t *h)
{
        struct ota *o = h->data;

        free(o->due);
        free(o);
}

void ota_stop(struct ota *o)
{
        if (!o)
                return;
        link_manager_remove_listener(o->link, &o->listener);
        /* Everything that touches the database happens now: the database goes away in the
         * same loop iteration as our timer's close callback. Offsets reached so far go in with
         * the final commit. */
        for (struct ota_job *j = o->jobs; j; j = j->next)
                for (size_t i = 0; i < j->n_x; i++)
                        if (!x_final(&j->x[i]) && j->x[i].acked != j->x[i].persisted)
                                persist_x(&j->x[i]);
        while (o->jobs) {
                struct ota_job *j = o->jobs;
                o->jobs = j->next;
                job_free(j);
        }
        ota_cache_free(o->cache);
        o->cache = NULL;
        ota_verifier_free(o->verifier);
        o->verifier = NULL;
        uv_close((uv_handle_t *)&o->timer, on_timer_closed);
}

/* ---- [OTA] values ------------------------------------------------------------------------- */

int ota_config_parse_targeting(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "thing-per-device") == 0)
                *(int *)field = 0;
        else if (strcmp(v, "gateway") == 0)
                *(int *)field = 1;
        else {
                *reason = "expected thing-per-device or gateway";
                return -EINVAL;
        }
        return 0;
}

int ota_config_parse_block(const char *v, void *field, const char **reason)
{
        if (config_parse_size(v, field, reason) < 0)
                return -EINVAL;
        if (*(uint64_t *)field < 256 || *(uint64_t *)field > 128 * 1024) {
                *reason = "block size must be 256 bytes .. 128K";
                return -EINVAL;
        }
        return 0;
}

int ota_config_parse_count(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 100000, reason);
}

int ota_config_parse_thing_template(const char *v, void *field, const char **reason)
{
        if (!*v || strlen(v) > 128 || strchr(v, '/') || strchr(v, '+') || strchr(v, '#')) {
                *reason = "thing name template must be 1..128 characters without / + #";
                return -EINVAL;
        }
        return config_parse_string(v, field, reason);
}
