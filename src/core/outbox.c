/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "outbox.h"
#include "topic.h"

/* Outbox ids are fair-queueing tags: id = slot << OUTBOX_ID_SHIFT | the device's index. Every
 * device takes its next slot at max(its last slot + cost, the slot after what was published):
 * a slot holds at most one message of each device, and reading in id order is round-robin over
 * the devices, each in its own order. A device that floods only pushes its own messages into
 * later slots; one that was quiet gets the next slot. */
#define OUTBOX_ID_SHIFT 20
#define OUTBOX_IDX_MAX ((1u << OUTBOX_ID_SHIFT) - 1)
#define OUTBOX_SLOT_BYTES 512 /* a message costs one slot per this many bytes, at least one */

struct dev_count {
        char id[TOPIC_DEVICE_MAX + 1];
        uint64_t rows, bytes;
        uint32_t idx;      /* low bits of its ids, 1..OUTBOX_IDX_MAX */
        int64_t next_slot; /* its next message goes here or later */
        uint64_t appended, refused, dropped, delivered;
};

struct outbox {
        struct db *db;
        struct audit *audit;
        sqlite3_stmt *insert, *scan, *del_range, *evict;
        uint64_t max_bytes;
        uint64_t rows, bytes;
        int64_t max_id;    /* the highest id handed out */
        int64_t base_slot; /* rows left from the last run are all below this slot */
        int64_t floor;     /* new ids are above this one: the reader's position */
        uint32_t n_idx;
        size_t n_active; /* devices with queued rows */
        uint64_t appended, refused;
        uint64_t unreported_refused, last_refusal_audit_ms;
        char refused_device[TOPIC_DEVICE_MAX + 1];

        /* Per-device queue sizes, for the overflow policy: open addressing, never shrinks. */
        struct dev_count *devs;
        size_t n_devs, cap_devs;

        /* Drops, and what of them has not been audited yet. */
        uint64_t dropped, dropped_bytes;
        uint64_t unreported_rows, unreported_bytes;
        char unreported_device[TOPIC_DEVICE_MAX + 1];
        unsigned audit_per_min;
        uint64_t last_audit_ms;
};

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
                struct dev_count *d = &o->devs[i];
                if (!d->id[0]) {
                        if (!create)
                                return NULL;
                        memcpy(d->id, id, len);
                        d->id[len] = 0;
                        o->n_devs++;
                        return d;
                }
                if (strncmp(d->id, id, len) == 0 && d->id[len] == 0)
                        return d;
        }
}

static int devs_grow(struct outbox *o)
{
        struct dev_count *old = o->devs;
        size_t old_cap = o->cap_devs;
        size_t cap = old_cap ? old_cap * 2 : 64;

        o->devs = calloc(cap, sizeof *o->devs);
        if (!o->devs) {
                o->devs = old;
                return -ENOMEM;
        }
        o->cap_devs = cap;
        o->n_devs = 0;
        for (size_t i = 0; i < old_cap; i++)
                if (old[i].id[0]) {
                        struct dev_count *d = dev_get(o, old[i].id, strlen(old[i].id), true);
                        memcpy(d, &old[i], sizeof *d);
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
        }
        o->rows -= MIN(o->rows, 1);
        o->bytes -= MIN(o->bytes, b);
}

/* Step a DELETE … RETURNING device, length(payload) and account for every row it removed. */
static int step_delete(struct outbox *o, sqlite3_stmt *s, bool delivered, uint64_t *ret_bytes)
{
        uint64_t bytes = 0;
        int rc, n = 0;

        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *dev = (const char *)sqlite3_column_text(s, 0);
                size_t dl = (size_t)sqlite3_column_bytes(s, 0);
                size_t len = (size_t)sqlite3_column_int64(s, 1);
                account_delete(o, dev ? dev : "", dev ? dl : 0, len, delivered);
                bytes += row_bytes(dl, len);
                n++;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "outbox: delete failed: %s",
                                       sqlite3_errmsg(db_handle(o->db)));
        if (ret_bytes)
                *ret_bytes = bytes;
        return n;
}

static void report_drops(struct outbox *o, bool force)
{
        uint64_t t = now_ms();
        if (!o->unreported_rows)
                return;
        if (!force && o->audit_per_min == 0)
                return;
        if (!force && o->last_audit_ms && t - o->last_audit_ms < 60000 / o->audit_per_min)
                return;
        o->last_audit_ms = t;
        log_warning("outbox: over quota (%llu of %llu bytes): dropped %llu oldest message(s) "
                    "(%llu bytes), most recently of device %s; %llu dropped in total",
                    (unsigned long long)o->bytes, (unsigned long long)o->max_bytes,
                    (unsigned long long)o->unreported_rows, (unsigned long long)o->unreported_bytes,
                    o->unreported_device, (unsigned long long)o->dropped);
        if (o->audit)
                audit_log(o->audit, "daemon", "outbox.overflow", o->unreported_device,
                          json_pack("{sI sI sI sI sI}", "dropped_rows",
                                    (json_int_t)o->unreported_rows, "dropped_bytes",
                                    (json_int_t)o->unreported_bytes, "total_dropped",
                                    (json_int_t)o->dropped, "queue_bytes", (json_int_t)o->bytes,
                                    "max_bytes", (json_int_t)o->max_bytes));
        o->unreported_rows = o->unreported_bytes = 0;
}

static void report_refusals(struct outbox *o, bool force)
{
        uint64_t t = now_ms();
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
                    (unsigned long long)o->bytes, (unsigned long long)o->max_bytes,
                    (unsigned long long)o->unreported_refused, o->refused_device,
                    (unsigned long long)o->refused);
        if (o->audit)
                audit_log(o->audit, "daemon", "outbox.refused", o->refused_device,
                          json_pack("{sI sI sI sI}", "refused_rows",
                                    (json_int_t)o->unreported_refused, "total_refused",
                                    (json_int_t)o->refused, "queue_bytes", (json_int_t)o->bytes,
                                    "max_bytes", (json_int_t)o->max_bytes));
        o->unreported_refused = 0;
}

/* The overflow policy: drop the oldest rows of the device with the most queued rows until the
 * queue is a little below the quota (hysteresis, so this does not run for every append). */
static int outbox_evict(struct outbox *o)
{
        uint64_t slack = MIN(o->max_bytes / 100, (uint64_t)64 * 1024);
        uint64_t target = o->max_bytes - slack;

        while (o->bytes > target && o->rows > 0) {
                struct dev_count *big = NULL;
                uint64_t freed = 0, want;
                int n;

                for (size_t i = 0; i < o->cap_devs; i++)
                        if (o->devs[i].id[0] && o->devs[i].rows &&
                            (!big || o->devs[i].rows > big->rows))
                                big = &o->devs[i];
                if (!big)
                        break;
                /* Enough of its rows to get under the target, estimated from its average. */
                want = (o->bytes - target) / MAX(big->bytes / MAX(big->rows, 1), (uint64_t)1) + 1;
                want = MIN(want, big->rows);
                want = MAX(MIN(want, (uint64_t)4096), (uint64_t)1);
                snprintf(o->unreported_device, sizeof o->unreported_device, "%s", big->id);
                sqlite3_bind_text(o->evict, 1, big->id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(o->evict, 2, (sqlite3_int64)want);
                n = step_delete(o, o->evict, false, &freed);
                if (n < 0)
                        return n;
                if (n == 0) {
                        /* Our counts disagree with the table: trust the table. */
                        if (big->rows)
                                o->n_active -= MIN(o->n_active, (size_t)1);
                        big->rows = big->bytes = 0;
                        continue;
                }
                o->dropped += (uint64_t)n;
                o->dropped_bytes += freed;
                o->unreported_rows += (uint64_t)n;
                o->unreported_bytes += freed;
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
        struct dev_count *d;
        uint64_t b = row_bytes(dl, len);
        int64_t id = 0, slot;
        int rc = SQLITE_DONE, r;

        if ((r = db_write_begin(o->db)) < 0)
                return r;
        d = dev_get(o, device, dl, true);
        if (!d)
                return -ENOMEM;
        /* Full: a device over its fair share gets no more room (its message is refused, the
         * link NACKs it); one under it makes room at the expense of the biggest (below). */
        if (outbox_over_share(o->max_bytes, o->bytes, o->n_active + (d->rows == 0), d->bytes, b)) {
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
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "outbox: cannot append for device %s: %s",
                                       device, sqlite3_errmsg(db_handle(o->db)));
        /* Ids are never reused in a run, even if this row is rolled back. */
        d->next_slot = slot + 1 + (int64_t)(b / OUTBOX_SLOT_BYTES);
        o->max_id = MAX(o->max_id, id);
        o->appended++;
        o->rows++;
        o->bytes += b;
        if (d->rows == 0)
                o->n_active++;
        d->rows++;
        d->bytes += b;
        d->appended++;
        if (o->max_bytes && o->bytes > o->max_bytes && (r = outbox_evict(o)) < 0)
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
        sqlite3_bind_int64(o->del_range, 1, first);
        sqlite3_bind_int64(o->del_range, 2, last);
        return step_delete(o, o->del_range, true, NULL);
}

uint64_t outbox_rows(const struct outbox *o)
{
        return o->rows;
}

uint64_t outbox_bytes(const struct outbox *o)
{
        return o->bytes;
}

uint64_t outbox_dropped(const struct outbox *o)
{
        return o->dropped;
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

uint64_t outbox_refused(const struct outbox *o)
{
        return o->refused;
}

size_t outbox_devices(const struct outbox *o)
{
        return o->n_active;
}

json_t *outbox_status_json(const struct outbox *o)
{
        return json_pack("{sI sI sI sI sI sI sI sI}", "rows", (json_int_t)o->rows, "bytes",
                         (json_int_t)o->bytes, "max_bytes", (json_int_t)o->max_bytes, "devices",
                         (json_int_t)outbox_devices(o), "dropped", (json_int_t)o->dropped,
                         "dropped_bytes", (json_int_t)o->dropped_bytes, "appended",
                         (json_int_t)o->appended, "refused", (json_int_t)o->refused);
}

/* Rebuild the counts from the table (once, at start). */
static int outbox_load(struct outbox *o)
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
        o->max_id = 0;
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
                if (!d->rows && rows)
                        o->n_active++;
                d->rows += rows;
                d->bytes += bytes;
                o->rows += rows;
                o->bytes += bytes;
                o->max_id = MAX(o->max_id, (int64_t)sqlite3_column_int64(s, 3));
        }
        sqlite3_finalize(s);
        o->base_slot = (o->max_id >> OUTBOX_ID_SHIFT) + 1;
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
                            "RETURNING device, length(payload)",
                            &o->del_range)) < 0 ||
            /* No (device, id) index: it would double the page writes of every append and
             * delete, and eviction is rare. Without it this walks the table in id order and
             * stops after LIMIT rows of the device, which as the device with the most rows is
             * dense among the oldest rows. */
            (r = db_prepare(db,
                            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                            "WHERE device = ? ORDER BY id LIMIT ?) "
                            "RETURNING device, length(payload)",
                            &o->evict)) < 0 ||
            (r = outbox_load(o)) < 0) {
                outbox_free(o);
                return r;
        }
        if (o->rows)
                log_info("outbox: %llu message(s) (%llu bytes) from %zu device(s) left from the "
                         "last run; they go out first",
                         (unsigned long long)o->rows, (unsigned long long)o->bytes,
                         outbox_devices(o));
        *ret = o;
        return 0;
}

void outbox_free(struct outbox *o)
{
        if (!o)
                return;
        report_drops(o, true);
        report_refusals(o, true);
        /* The statements belong to the database and are finalised by db_close(). */
        free(o->devs);
        free(o);
}
