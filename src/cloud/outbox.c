/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "basic/time-util.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cloud/outbox.h"
#include "cloud/topic.h"
#include "basic/ratelimit.h"

/* Outbox ids are fair-queueing tags: id = slot << OUTBOX_ID_SHIFT | the device's index. Every
 * device takes its next slot at max(its last slot + cost, the slot after what was published):
 * a slot holds at most one message of each device, and reading in id order is round-robin over
 * the devices, each in its own order. A device that floods only pushes its own messages into
 * later slots; one that was quiet gets the next slot. */
#define OUTBOX_ID_SHIFT 20
#define OUTBOX_IDX_MAX ((1u << OUTBOX_ID_SHIFT) - 1)
#define OUTBOX_SLOT_BYTES 512 /* a message costs one slot per this many bytes, at least one */

/* Redo lists longer than this are cut (the rows are then sent again after a restart). */
#define OUTBOX_REDO_MAX 4096
/* How often the free space is looked at, at most: on appends, and after failed commits. */
#define SPACE_CHECK_MS 10000
#define SPACE_CHECK_FAILING_MS 1000

struct dev_count {
        char id[TOPIC_DEVICE_MAX + 1];
        uint64_t rows, bytes;     /* in the table now, the open transaction included */
        uint64_t c_rows, c_bytes; /* as of the last commit */
        uint32_t idx;             /* low bits of its ids, 1..OUTBOX_IDX_MAX */
        int64_t next_slot;        /* its next message goes here or later */
        /* Since the start; appended, dropped and delivered follow the commits like rows. */
        uint64_t appended, dropped, delivered, refused;
        uint64_t c_appended, c_dropped, c_delivered;
        bool dirty; /* changed in the open transaction */
};

/* What the outbox knows about its table, kept twice: as of the last commit and as of now (the
 * open transaction included). A commit promotes `now`, a rollback puts `committed` back, so the
 * figures never count rows that are not in the database. */
struct figures {
        uint64_t rows, bytes;
        uint64_t appended;                          /* rows appended */
        uint64_t dropped, dropped_bytes;            /* rows evicted by the overflow policy */
        uint64_t unreported_rows, unreported_bytes; /* of those, not audited yet */
};

struct range {
        int64_t first, last;
};

struct ranges {
        struct range *v;
        size_t n, cap;
};

struct outbox {
        struct db *db;
        struct audit *audit;
        sqlite3_stmt *insert, *scan, *del_range, *evict;
        uint64_t max_bytes;
        int64_t max_id;    /* the highest id handed out; ids are never reused in a run */
        int64_t base_slot; /* rows left from the last run are all below this slot */
        int64_t floor;     /* new ids are above this one: the reader's position */
        uint32_t n_idx;
        size_t n_active; /* devices with queued rows */
        struct figures now, committed;
        bool dirty;              /* `now` differs from `committed` */
        bool hooked;             /* the db hooks are registered */
        uint64_t txn_appended;   /* rows appended in the open transaction */
        uint64_t refused;        /* rows never stored: the append or its commit failed */
        int64_t txn_evicted_min; /* lowest id evicted in the open transaction, 0: none */
        int64_t rewind;          /* lowest id a rollback brought back, for outbox_take_rewind */
        /* Delivered ranges deleted in the open transaction; and those a rollback brought back,
         * to be deleted again. */
        struct ranges txn_dels, redo;
        bool redo_cut;

        /* Per-device queue sizes, for the overflow policy: open addressing over pointers (an
         * empty slot costs 8 bytes, not a whole entry), never shrinks. */
        struct dev_count **devs;
        size_t n_devs, cap_devs;

        char unreported_device[TOPIC_DEVICE_MAX + 1];
        unsigned audit_per_min;
        uint64_t last_audit_ms;
        /* Refusals of devices over their share (the overflow policy), for the audit log. */
        uint64_t unreported_refused, last_refusal_audit_ms;
        char refused_device[TOPIC_DEVICE_MAX + 1];

        struct ratelimit_run append_log;

        /* The file system the database is on (outbox_space_check). */
        char *db_path;
        struct outbox_space space;
        bool space_known;
        uint64_t space_checked_ms;
};

static uint64_t row_bytes(size_t device_len, size_t payload_len)
{
        return payload_len + device_len + OUTBOX_ROW_OVERHEAD;
}

static uint64_t hash_str(const char *s, size_t n)
{
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < n; i++)
                h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
        return h;
}

static int devs_grow(struct outbox *o);

static struct dev_count *dev_get(struct outbox *o, const char *id, size_t len, bool create)
{
        size_t i;
        if (len > TOPIC_DEVICE_MAX)
                len = TOPIC_DEVICE_MAX;
        if (create && (o->n_devs + 1) * 4 >= o->cap_devs * 3 && devs_grow(o) < 0)
                return NULL;
        if (!o->cap_devs)
                return NULL;
        for (i = hash_str(id, len) & (o->cap_devs - 1);; i = (i + 1) & (o->cap_devs - 1)) {
                struct dev_count *d = o->devs[i];
                if (!d) {
                        if (!create)
                                return NULL;
                        d = calloc(1, sizeof *d);
                        if (!d)
                                return NULL;
                        memcpy(d->id, id, len);
                        d->id[len] = 0;
                        o->devs[i] = d;
                        o->n_devs++;
                        return d;
                }
                if (strncmp(d->id, id, len) == 0 && d->id[len] == 0)
                        return d;
        }
}

static int devs_grow(struct outbox *o)
{
        struct dev_count **old = o->devs;
        size_t old_cap = o->cap_devs;
        size_t cap = old_cap ? old_cap * 2 : 64;

        o->devs = calloc(cap, sizeof *o->devs);
        if (!o->devs) {
                o->devs = old;
                return -ENOMEM;
        }
        o->cap_devs = cap;
        for (size_t i = 0; i < old_cap; i++)
                if (old[i]) {
                        size_t j = hash_str(old[i]->id, strlen(old[i]->id)) & (cap - 1);
                        while (o->devs[j])
                                j = (j + 1) & (cap - 1);
                        o->devs[j] = old[i];
                }
        free(old);
        return 0;
}

static void account_delete(struct outbox *o, const char *device, size_t device_len, size_t len,
                           bool delivered)
{
        struct dev_count *d = dev_get(o, device, device_len, false);
        uint64_t b = row_bytes(device_len, len);
        if (d) {
                if (d->rows == 1)
                        o->n_active -= MIN(o->n_active, (size_t)1);
                d->rows -= MIN(d->rows, 1);
                d->bytes -= MIN(d->bytes, b);
                if (delivered)
                        d->delivered++;
                else
                        d->dropped++;
                d->dirty = true;
        }
        o->now.rows -= MIN(o->now.rows, 1);
        o->now.bytes -= MIN(o->now.bytes, b);
        o->dirty = true;
}

/* Step a DELETE … RETURNING device, length(payload), id and account for every row it removed.
 * The statement is part of the open transaction: if that fails, the rollback hook puts the
 * figures back. */
static int step_delete(struct outbox *o, sqlite3_stmt *s, bool delivered, uint64_t *ret_bytes,
                       int64_t *ret_min_id)
{
        uint64_t bytes = 0;
        int64_t min_id = 0;
        int rc, n = 0;

        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *dev = (const char *)sqlite3_column_text(s, 0);
                size_t dl = (size_t)sqlite3_column_bytes(s, 0);
                size_t len = (size_t)sqlite3_column_int64(s, 1);
                int64_t id = sqlite3_column_int64(s, 2);
                account_delete(o, dev ? dev : "", dev ? dl : 0, len, delivered);
                bytes += row_bytes(dl, len);
                if (!min_id || id < min_id)
                        min_id = id;
                n++;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
                int r = log_error_errno(db_errno(rc), "outbox: delete failed: %s",
                                        sqlite3_errmsg(db_handle(o->db)));
                db_check_txn(o->db);
                return r;
        }
        if (ret_bytes)
                *ret_bytes = bytes;
        if (ret_min_id)
                *ret_min_id = min_id;
        return n;
}

static int ranges_add(struct ranges *r, int64_t first, int64_t last)
{
        if (r->n && r->v[r->n - 1].last + 1 >= first && r->v[r->n - 1].first <= first) {
                r->v[r->n - 1].last = MAX(r->v[r->n - 1].last, last);
                return 0;
        }
        if (r->n == r->cap) {
                size_t cap = r->cap ? r->cap * 2 : 16;
                struct range *v = realloc(r->v, cap * sizeof *v);
                if (!v)
                        return -ENOMEM;
                r->v = v;
                r->cap = cap;
        }
        r->v[r->n++] = (struct range){ first, last };
        return 0;
}

/* Delete delivered rows first..last in the open transaction, remembered until it commits. */
static int delete_delivered(struct outbox *o, int64_t first, int64_t last)
{
        int n;
        sqlite3_bind_int64(o->del_range, 1, first);
        sqlite3_bind_int64(o->del_range, 2, last);
        n = step_delete(o, o->del_range, true, NULL, NULL);
        if (n >= 0 && ranges_add(&o->txn_dels, first, last) < 0)
                log_warning("outbox: out of memory; if this commit fails, messages %lld..%lld "
                            "are sent again after a restart",
                            (long long)first, (long long)last);
        return n;
}

/* Delivered rows whose delete a failed commit took back: delete them again. */
static void redo_deletes(struct outbox *o)
{
        size_t done = 0;
        while (done < o->redo.n) {
                if (delete_delivered(o, o->redo.v[done].first, o->redo.v[done].last) < 0)
                        break;
                done++;
        }
        memmove(o->redo.v, o->redo.v + done, (o->redo.n - done) * sizeof *o->redo.v);
        o->redo.n -= done;
}

static void report_drops(struct outbox *o, bool force)
{
        uint64_t t = now_monotonic_msec();
        if (!o->now.unreported_rows)
                return;
        if (!force && o->audit_per_min == 0)
                return;
        if (!force && o->last_audit_ms && t - o->last_audit_ms < 60000 / o->audit_per_min)
                return;
        o->last_audit_ms = t;
        log_warning("outbox: over quota (%llu of %llu bytes): dropped %llu oldest message(s) "
                    "(%llu bytes), most recently of device %s; %llu dropped in total",
                    (unsigned long long)o->now.bytes, (unsigned long long)o->max_bytes,
                    (unsigned long long)o->now.unreported_rows,
                    (unsigned long long)o->now.unreported_bytes, o->unreported_device,
                    (unsigned long long)o->now.dropped);
        /* The record goes into the same transaction as the drops: both stay or both go. */
        if (o->audit)
                audit_log(o->audit, "daemon", "outbox.overflow", o->unreported_device,
                          json_pack("{sI sI sI sI sI}", "dropped_rows",
                                    (json_int_t)o->now.unreported_rows, "dropped_bytes",
                                    (json_int_t)o->now.unreported_bytes, "total_dropped",
                                    (json_int_t)o->now.dropped, "queue_bytes",
                                    (json_int_t)o->now.bytes, "max_bytes",
                                    (json_int_t)o->max_bytes));
        o->now.unreported_rows = o->now.unreported_bytes = 0;
        o->dirty = true;
}

static void report_refusals(struct outbox *o, bool force)
{
        uint64_t t = now_monotonic_msec();
        if (!o->unreported_refused)
                return;
        if (!force && o->audit_per_min == 0)
                return;
        if (!force && o->last_refusal_audit_ms &&
            t - o->last_refusal_audit_ms < 60000 / o->audit_per_min)
                return;
        o->last_refusal_audit_ms = t;
        log_warning("outbox: full (%llu of %llu bytes): refused %llu new message(s) of devices "
                    "over their share, most recently of %s; %llu refused in total",
                    (unsigned long long)o->now.bytes, (unsigned long long)o->max_bytes,
                    (unsigned long long)o->unreported_refused, o->refused_device,
                    (unsigned long long)o->refused);
        if (o->audit)
                audit_log(o->audit, "daemon", "outbox.refused", o->refused_device,
                          json_pack("{sI sI sI sI}", "refused_rows",
                                    (json_int_t)o->unreported_refused, "total_refused",
                                    (json_int_t)o->refused, "queue_bytes", (json_int_t)o->now.bytes,
                                    "max_bytes", (json_int_t)o->max_bytes));
        o->unreported_refused = 0;
}

static int outbox_count(struct outbox *o);
static void space_check(struct outbox *o, bool force);

/* The overflow policy: drop the oldest rows of the device with the most queued rows until the
 * queue is a little below the quota (hysteresis, so this does not run for every append). The
 * figures are those of the table as this transaction sees it: what is committed plus what this
 * transaction added and removed, never rows of a transaction that failed. */
static int outbox_evict(struct outbox *o)
{
        uint64_t slack = MIN(o->max_bytes / 100, (uint64_t)64 * 1024);
        uint64_t target = o->max_bytes - slack;
        bool recounted = false;

        while (o->now.bytes > target && o->now.rows > 0) {
                struct dev_count *big = NULL;
                uint64_t freed = 0, want;
                int64_t min_id = 0;
                int n;

                for (size_t i = 0; i < o->cap_devs; i++)
                        if (o->devs[i] && o->devs[i]->id[0] && o->devs[i]->rows &&
                            (!big || o->devs[i]->rows > big->rows))
                                big = o->devs[i];
                if (!big)
                        break;
                /* Enough of its rows to get under the target, estimated from its average. */
                want = (o->now.bytes - target) / MAX(big->bytes / MAX(big->rows, 1), (uint64_t)1) +
                       1;
                want = MIN(want, big->rows);
                want = MAX(MIN(want, (uint64_t)4096), (uint64_t)1);
                snprintf(o->unreported_device, sizeof o->unreported_device, "%s", big->id);
                sqlite3_bind_text(o->evict, 1, big->id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(o->evict, 2, (sqlite3_int64)want);
                n = step_delete(o, o->evict, false, &freed, &min_id);
                if (n < 0)
                        return n;
                if (n == 0) {
                        /* Our figures disagree with the table (they should not): trust the
                         * table, once. */
                        int r;
                        if (recounted)
                                break;
                        log_warning("outbox: the queue figures of device %s disagree with the "
                                    "table; counting again",
                                    big->id);
                        if ((r = outbox_count(o)) < 0)
                                return r;
                        recounted = true;
                        continue;
                }
                if (!o->txn_evicted_min || min_id < o->txn_evicted_min)
                        o->txn_evicted_min = min_id;
                o->now.dropped += (uint64_t)n;
                o->now.dropped_bytes += freed;
                o->now.unreported_rows += (uint64_t)n;
                o->now.unreported_bytes += freed;
        }
        report_drops(o, false);
        return 0;
}

bool outbox_over_share(uint64_t max_bytes, uint64_t queued, size_t devices, uint64_t device_bytes,
                       uint64_t row)
{
        if (!max_bytes || queued + row <= max_bytes)
                return false;
        return device_bytes + row > max_bytes / MAX(devices, (size_t)1);
}

int outbox_append(struct outbox *o, const char *device, uint16_t stream, uint32_t seq,
                  int64_t ts_ms, const uint8_t *payload, size_t len, int64_t *ret_id)
{
        size_t dl = strlen(device);
        uint64_t b = row_bytes(dl, len);
        struct dev_count *d;
        int64_t id = 0, slot;
        int rc = SQLITE_DONE, r;

        /* The disk is far behind (store/db.h): refuse before storing, so that the sender's
         * RETRY is not for a row that is in the table anyway. */
        if (db_backlogged(o->db)) {
                o->refused++;
                return -ENOBUFS;
        }
        if ((r = db_write_begin(o->db)) < 0) {
                o->refused++;
                return r;
        }
        if (o->redo.n)
                redo_deletes(o);
        space_check(o, false);
        d = dev_get(o, device, dl, true);
        if (!d) {
                o->refused++;
                return -ENOMEM;
        }
        /* Full: a device over its fair share gets no more room (its message is refused, the
         * link tells it to retry); one under it makes room at the expense of the biggest
         * (outbox_evict). */
        if (outbox_over_share(o->max_bytes, o->now.bytes, o->n_active + (d->rows == 0), d->bytes,
                              b)) {
                d->refused++;
                o->refused++;
                o->unreported_refused++;
                snprintf(o->refused_device, sizeof o->refused_device, "%s", d->id);
                report_refusals(o, false);
                return -EDQUOT;
        }
        if (!d->idx)
                d->idx = o->n_idx++ % OUTBOX_IDX_MAX + 1;
        slot = MAX(MAX(o->base_slot, (o->floor >> OUTBOX_ID_SHIFT) + 1), d->next_slot);
        for (int tries = 0; tries < 8; tries++, slot++) {
                id = (slot << OUTBOX_ID_SHIFT) | d->idx;
                sqlite3_bind_int64(o->insert, 1, id);
                sqlite3_bind_text(o->insert, 2, device, (int)dl, SQLITE_STATIC);
                sqlite3_bind_int(o->insert, 3, stream);
                sqlite3_bind_int64(o->insert, 4, seq);
                sqlite3_bind_int64(o->insert, 5, ts_ms);
                sqlite3_bind_blob(o->insert, 6, len ? (const void *)payload : "", (int)len,
                                  SQLITE_STATIC);
                rc = sqlite3_step(o->insert);
                sqlite3_reset(o->insert);
                sqlite3_clear_bindings(o->insert);
                /* Only with more than OUTBOX_IDX_MAX devices in one run can two share an index
                 * and meet in a slot: take the next one. */
                if ((rc & 0xff) != SQLITE_CONSTRAINT)
                        break;
        }
        /* Ids are never reused in a run, even if this row is rolled back. */
        d->next_slot = slot + 1 + (int64_t)(b / OUTBOX_SLOT_BYTES);
        o->max_id = MAX(o->max_id, id);
        if (rc != SQLITE_DONE) {
                uint64_t held;
                r = db_errno(rc);
                o->refused++;
                d->refused++;
                if (ratelimit_run_error(&o->append_log, now_monotonic_msec(), &held))
                        log_error_errno(r,
                                        "outbox: cannot append for device %s: %s (%llu failed "
                                        "appends in a row, %llu since the last message)",
                                        device, sqlite3_errmsg(db_handle(o->db)),
                                        (unsigned long long)o->append_log.run,
                                        (unsigned long long)held + 1);
                /* SQLite may have rolled back the whole transaction (SQLITE_FULL does that):
                 * then the figures go back to the last commit now, not at the next write. */
                db_check_txn(o->db);
                return r ? r : -EIO;
        } else {
                uint64_t run, ms;
                if (ratelimit_run_ok(&o->append_log, now_monotonic_msec(), &run, &ms))
                        log_notice("outbox: appends succeed again, after %llu failed in %llu s",
                                   (unsigned long long)run, (unsigned long long)ms / 1000);
        }
        o->txn_appended++;
        o->now.appended++;
        o->now.rows++;
        o->now.bytes += b;
        if (d->rows == 0)
                o->n_active++;
        d->rows++;
        d->bytes += b;
        d->appended++;
        d->dirty = o->dirty = true;
        if (o->max_bytes && o->now.bytes > o->max_bytes && (r = outbox_evict(o)) < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 0;
}

int outbox_scan(struct outbox *o, int64_t after, size_t max_rows, outbox_row_fn fn, void *userdata)
{
        int rc, r = 0, n = 0;

        sqlite3_bind_int64(o->scan, 1, after);
        sqlite3_bind_int64(o->scan, 2, (sqlite3_int64)max_rows);
        while ((rc = sqlite3_step(o->scan)) == SQLITE_ROW) {
                const char *dev = (const char *)sqlite3_column_text(o->scan, 1);
                struct outbox_row row = {
                        .id = sqlite3_column_int64(o->scan, 0),
                        .device = dev ? dev : "",
                        .stream = (uint16_t)sqlite3_column_int(o->scan, 2),
                        .seq = (uint32_t)sqlite3_column_int64(o->scan, 3),
                        .ts_ms = sqlite3_column_int64(o->scan, 4),
                        .payload = sqlite3_column_blob(o->scan, 5),
                        .len = (size_t)sqlite3_column_bytes(o->scan, 5),
                };
                r = fn(userdata, &row);
                if (r != 0)
                        break;
                n++;
        }
        sqlite3_reset(o->scan);
        if (r < 0)
                return r;
        if (r == 0 && rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "outbox: cannot read: %s",
                                       sqlite3_errmsg(db_handle(o->db)));
        return n;
}

int outbox_delete_range(struct outbox *o, int64_t first, int64_t last)
{
        int r = db_write_begin(o->db);
        if (r < 0)
                return r;
        if (o->redo.n)
                redo_deletes(o);
        return delete_delivered(o, first, last);
}

uint64_t outbox_rows(const struct outbox *o)
{
        return o->now.rows;
}

uint64_t outbox_bytes(const struct outbox *o)
{
        return o->now.bytes;
}

uint64_t outbox_dropped(const struct outbox *o)
{
        return o->now.dropped;
}

uint64_t outbox_refused(const struct outbox *o)
{
        return o->refused;
}

int64_t outbox_take_rewind(struct outbox *o)
{
        int64_t id = o->rewind;
        o->rewind = 0;
        return id;
}

int64_t outbox_last_id(const struct outbox *o)
{
        return o->max_id;
}

void outbox_set_floor(struct outbox *o, int64_t id)
{
        o->floor = MAX(o->floor, id);
}

int outbox_device_stats(struct outbox *o, const char *device, struct outbox_device_stats *ret)
{
        struct dev_count *d = dev_get(o, device, strlen(device), false);
        if (!d)
                return -ENOENT;
        *ret = (struct outbox_device_stats){
                .rows = d->rows,
                .bytes = d->bytes,
                .appended = d->appended,
                .refused = d->refused,
                .dropped = d->dropped,
                .delivered = d->delivered,
        };
        return 0;
}

size_t outbox_devices(const struct outbox *o)
{
        return o->n_active;
}

static void count_active(struct outbox *o)
{
        o->n_active = 0;
        for (size_t i = 0; i < o->cap_devs; i++)
                if (o->devs[i] && o->devs[i]->id[0] && o->devs[i]->rows)
                        o->n_active++;
}

json_t *outbox_space_json(const struct outbox_space *sp)
{
        return json_pack("{sI sI sI sI sb}", "fs_size", (json_int_t)sp->fs_size, "fs_free",
                         (json_int_t)sp->fs_free, "db_bytes", (json_int_t)sp->db_bytes, "needed",
                         (json_int_t)sp->needed, "quota_fits", sp->fits);
}

json_t *outbox_status_json(struct outbox *o)
{
        json_t *j;
        space_check(o, true);
        j = json_pack("{sI sI sI sI sI sI sI sI sI}", "rows", (json_int_t)o->now.rows, "bytes",
                      (json_int_t)o->now.bytes, "max_bytes", (json_int_t)o->max_bytes, "devices",
                      (json_int_t)outbox_devices(o), "dropped", (json_int_t)o->now.dropped,
                      "dropped_bytes", (json_int_t)o->now.dropped_bytes, "appended",
                      (json_int_t)o->now.appended, "refused", (json_int_t)o->refused,
                      "commit_failures", (json_int_t)db_failed_commits(o->db));
        if (j && o->space_known)
                json_object_set_new(j, "space", outbox_space_json(&o->space));
        return j;
}

/* ---- commit and rollback: the figures follow what is in the database ---------------------- */

static void txn_reset(struct outbox *o)
{
        o->dirty = false;
        o->txn_appended = 0;
        o->txn_evicted_min = 0;
        o->txn_dels.n = 0;
}

static int outbox_postcommit(void *userdata)
{
        struct outbox *o = userdata;
        if (!o->dirty)
                return 0;
        o->committed = o->now;
        for (size_t i = 0; i < o->cap_devs; i++)
                if (o->devs[i] && o->devs[i]->dirty) {
                        struct dev_count *d = o->devs[i];
                        d->c_rows = d->rows;
                        d->c_bytes = d->bytes;
                        d->c_appended = d->appended;
                        d->c_dropped = d->dropped;
                        d->c_delivered = d->delivered;
                        d->dirty = false;
                }
        txn_reset(o);
        return 0;
}

static int outbox_rollback(void *userdata)
{
        struct outbox *o = userdata;

        space_check(o, false);
        if (!o->dirty)
                return 0;
        /* Appended rows are gone: their senders get an error (no ack) and send them again. */
        o->refused += o->txn_appended;
        o->now = o->committed;
        for (size_t i = 0; i < o->cap_devs; i++)
                if (o->devs[i] && o->devs[i]->dirty) {
                        struct dev_count *d = o->devs[i];
                        d->refused += d->appended - d->c_appended; /* lost with the commit */
                        d->rows = d->c_rows;
                        d->bytes = d->c_bytes;
                        d->appended = d->c_appended;
                        d->dropped = d->c_dropped;
                        d->delivered = d->c_delivered;
                        d->dirty = false;
                }
        count_active(o);
        /* Evicted rows are back: a reader may have passed them already. */
        if (o->txn_evicted_min && (!o->rewind || o->txn_evicted_min < o->rewind))
                o->rewind = o->txn_evicted_min;
        /* Delivered rows are back: delete them again in the next transaction. */
        for (size_t i = 0; i < o->txn_dels.n; i++) {
                if (o->redo.n >= OUTBOX_REDO_MAX ||
                    ranges_add(&o->redo, o->txn_dels.v[i].first, o->txn_dels.v[i].last) < 0) {
                        if (!o->redo_cut)
                                log_warning("outbox: too many delivered messages to delete "
                                            "again after failed commits; some will be sent "
                                            "again after a restart");
                        o->redo_cut = true;
                        break;
                }
        }
        txn_reset(o);
        return 0;
}

static int outbox_precommit(void *userdata)
{
        struct outbox *o = userdata;
        if (o->redo.n)
                redo_deletes(o);
        return 0;
}

/* ---- the free space ----------------------------------------------------------------------- */

int outbox_space_check(const char *db_path, uint64_t max_bytes, struct outbox_space *ret)
{
        _cleanup_free_ char *dir = strdup(db_path);
        struct statvfs vfs;
        struct outbox_space sp = { 0 };

        if (!dir)
                return -ENOMEM;
        if (statvfs(dirname(dir), &vfs) < 0)
                return -errno;
        sp.fs_size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
        sp.fs_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        for (const char *suffix = ""; suffix; suffix = *suffix ? NULL : "-wal") {
                char path[4096];
                struct stat st;
                snprintf(path, sizeof path, "%s%s", db_path, suffix);
                if (stat(path, &st) == 0)
                        sp.db_bytes += (uint64_t)st.st_size;
        }
        sp.needed = max_bytes + max_bytes / 100 * OUTBOX_SPACE_MARGIN_PERCENT;
        sp.fits = max_bytes && sp.needed <= sp.fs_free + sp.db_bytes;
        *ret = sp;
        return 0;
}

static void fmt_size(uint64_t v, char *buf, size_t n)
{
        static const char *const units[] = { "GiB", "MiB", "KiB" };
        for (int i = 0; i < 3; i++) {
                uint64_t u = 1ULL << (10 * (3 - i));
                if (v >= u) {
                        snprintf(buf, n, "%.1f %s", (double)v / (double)u, units[i]);
                        return;
                }
        }
        snprintf(buf, n, "%llu bytes", (unsigned long long)v);
}

void outbox_space_describe(const struct outbox_space *sp, uint64_t max_bytes, char *buf, size_t n)
{
        char q[32], need[32], fr[32], db[32];
        fmt_size(max_bytes, q, sizeof q);
        fmt_size(sp->needed, need, sizeof need);
        fmt_size(sp->fs_free, fr, sizeof fr);
        fmt_size(sp->db_bytes, db, sizeof db);
        if (!max_bytes)
                snprintf(buf, n,
                         "[Outbox] MaxBytes=0: no quota; the outbox grows until the file system "
                         "is full (%s free), then new messages are refused",
                         fr);
        else
                snprintf(buf, n,
                         "[Outbox] MaxBytes=%s needs ~%s on disk, but the database (%s) and the "
                         "free space (%s) of its file system hold less: when that is full, new "
                         "messages are refused (devices retry) and the quota's drop-oldest "
                         "policy never runs",
                         q, need, db, fr);
}

/* Look at the free space (forced, or when due) and say when the quota stops or starts to fit. */
static void space_check(struct outbox *o, bool force)
{
        uint64_t t = now_monotonic_msec();
        struct outbox_space sp;
        bool was_known = o->space_known, was_fit = o->space.fits;

        if (!o->db_path)
                return;
        if (!force && o->space_known &&
            t - o->space_checked_ms < (db_failing(o->db) ? SPACE_CHECK_FAILING_MS : SPACE_CHECK_MS))
                return;
        o->space_checked_ms = t;
        if (outbox_space_check(o->db_path, o->max_bytes, &sp) < 0)
                return;
        o->space = sp;
        o->space_known = true;
        if ((sp.fits == was_fit && was_known) || !o->max_bytes)
                return;
        if (!sp.fits) {
                char msg[512];
                outbox_space_describe(&sp, o->max_bytes, msg, sizeof msg);
                log_warning("outbox: %s", msg);
        } else if (was_known)
                log_notice("outbox: the quota fits into the file system again (%llu bytes free)",
                           (unsigned long long)sp.fs_free);
}

/* (Re)build the figures from the table: at start, and if they ever disagree with it. */
static int outbox_count(struct outbox *o)
{
        sqlite3_stmt *s;
        int rc;

        rc = sqlite3_prepare_v2(db_handle(o->db),
                                "SELECT device, count(*), sum(length(payload)), max(id) "
                                "FROM outbox GROUP BY device",
                                -1, &s, NULL);
        if (rc != SQLITE_OK)
                return log_error_errno(db_errno(rc), "outbox: cannot read: %s",
                                       sqlite3_errmsg(db_handle(o->db)));
        for (size_t i = 0; i < o->cap_devs; i++)
                if (o->devs[i] && o->devs[i]->id[0]) {
                        o->devs[i]->rows = o->devs[i]->bytes = 0;
                        o->devs[i]->dirty = true;
                }
        o->now.rows = o->now.bytes = 0;
        o->dirty = true;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *dev = (const char *)sqlite3_column_text(s, 0);
                size_t dl = (size_t)sqlite3_column_bytes(s, 0);
                uint64_t rows = (uint64_t)sqlite3_column_int64(s, 1);
                uint64_t bytes =
                        (uint64_t)sqlite3_column_int64(s, 2) + rows * (dl + OUTBOX_ROW_OVERHEAD);
                struct dev_count *d = dev_get(o, dev ? dev : "", dev ? dl : 0, true);
                if (!d) {
                        sqlite3_finalize(s);
                        return -ENOMEM;
                }
                d->rows += rows;
                d->bytes += bytes;
                d->dirty = true;
                o->now.rows += rows;
                o->now.bytes += bytes;
                o->max_id = MAX(o->max_id, (int64_t)sqlite3_column_int64(s, 3));
        }
        sqlite3_finalize(s);
        count_active(o);
        o->base_slot = MAX(o->base_slot, (o->max_id >> OUTBOX_ID_SHIFT) + 1);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int outbox_open(struct db *db, struct audit *audit, uint64_t max_bytes, unsigned audit_per_min,
                struct outbox **ret)
{
        struct outbox *o = calloc(1, sizeof *o);
        int r;

        if (!o)
                return -ENOMEM;
        o->db = db;
        o->audit = audit;
        o->max_bytes = max_bytes;
        o->audit_per_min = audit_per_min;
        o->append_log.interval_ms = 10000;
        if ((r = db_prepare(db,
                            "INSERT INTO outbox (id, device, stream, seq, ts_ms, payload) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            &o->insert)) < 0 ||
            (r = db_prepare(db,
                            "SELECT id, device, stream, seq, ts_ms, payload FROM outbox "
                            "WHERE id > ? ORDER BY id LIMIT ?",
                            &o->scan)) < 0 ||
            (r = db_prepare(db,
                            "DELETE FROM outbox WHERE id BETWEEN ? AND ? "
                            "RETURNING device, length(payload), id",
                            &o->del_range)) < 0 ||
            /* No (device, id) index: it would double the page writes of every append and
             * delete, and eviction is rare. Without it this walks the table in id order and
             * stops after LIMIT rows of the device, which as the device with the most rows is
             * dense among the oldest rows. */
            (r = db_prepare(db,
                            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                            "WHERE device = ? ORDER BY id LIMIT ?) "
                            "RETURNING device, length(payload), id",
                            &o->evict)) < 0 ||
            (r = outbox_count(o)) < 0) {
                outbox_free(o);
                return r;
        }
        /* What the table holds at start is committed. */
        outbox_postcommit(o);
        if ((r = db_add_postcommit(db, outbox_postcommit, o)) < 0 ||
            (r = db_add_rollback(db, outbox_rollback, o)) < 0 ||
            (r = db_add_precommit(db, outbox_precommit, o)) < 0) {
                o->hooked = true;
                outbox_free(o);
                return r;
        }
        o->hooked = true;
        if (o->now.rows)
                log_info("outbox: %llu message(s) (%llu bytes) from %zu device(s) left from the "
                         "last run; they go out first",
                         (unsigned long long)o->now.rows, (unsigned long long)o->now.bytes,
                         outbox_devices(o));
        {
                const char *p = sqlite3_db_filename(db_handle(db), "main");
                if (p && *p && !(o->db_path = strdup(p))) {
                        outbox_free(o);
                        return -ENOMEM;
                }
        }
        space_check(o, true);
        *ret = o;
        return 0;
}

void outbox_free(struct outbox *o)
{
        if (!o)
                return;
        report_drops(o, true);
        report_refusals(o, true);
        if (o->hooked) {
                db_remove_postcommit(o->db, outbox_postcommit, o);
                db_remove_rollback(o->db, outbox_rollback, o);
                db_remove_precommit(o->db, outbox_precommit, o);
        }
        /* The statements belong to the database and are finalised by db_close(). */
        for (size_t i = 0; i < o->cap_devs; i++)
                free(o->devs[i]);
        free(o->devs);
        free(o->txn_dels.v);
        free(o->redo.v);
        free(o->db_path);
        free(o);
}
