/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "audit/audit.h"
#include "store/db.h"

/*
 * The durable outbox (docs/mqtt.md): telemetry waiting for the cloud, one row per MCU message in
 * the `outbox` table of the state database. Rows are appended inside the open group-commit
 * transaction (db.h), read back in id order (which is arrival order, so per device in order),
 * and deleted when the broker acknowledged the publish that carried them. Whatever is left after
 * a restart is simply read again from the start.
 *
 * Ids are allocated here, not by SQLite, so an id is never reused within a run even if a commit
 * fails and rolls rows back: a late PUBACK can only ever delete the rows it carried.
 *
 * Fairness: ids are fair-queueing tags (outbox.c), so reading in id order serves the devices
 * round-robin, each in its own order: one device flooding the outbox delays only itself.
 * outbox_set_floor() tells where the reader is; new ids go above it.
 *
 * Quota: the logical size of a row is its payload + device id + OUTBOX_ROW_OVERHEAD bytes. When
 * an append would take the sum over MaxBytes, a device holding more than its fair share
 * (MaxBytes / devices with queued rows) has the message refused (-EDQUOT); a device under its
 * share gets it in, and the oldest rows of the device with the most queued rows are dropped,
 * down to a little below the quota. So a flooding device can neither evict the others' data nor
 * keep them out. Refusals and drops are counted, logged and audited (`outbox.refused`,
 * `outbox.overflow`, rate-limited with the counts since the last record), never silent.
 *
 * Failed commits (disk full): every append, delivery delete and eviction is part of the open
 * group-commit transaction, and so is every change to the figures above. The figures are kept as
 * of the last commit and as of now; a commit promotes them (db_add_postcommit), a rollback puts
 * the committed ones back (db_add_rollback). So rows of a failed commit never count towards the
 * quota and never make the overflow policy drop committed rows; `appended` and `dropped` count
 * only what was committed; the rows that were lost with a commit count as `refused` (their
 * senders got an error, not an ack, and send them again). Deletes of delivered rows that a
 * rollback brought back are done again in the next transaction; evicted rows it brought back
 * may lie behind a reader's cursor (outbox_take_rewind).
 */

/* Rowid, ints, record header and the (device, id) index entry: measured ~60 bytes, rounded. */
#define OUTBOX_ROW_OVERHEAD 64

struct outbox;

struct outbox_row {
        int64_t id;
        const char *device;
        uint16_t stream;
        uint32_t seq;
        int64_t ts_ms;
        const uint8_t *payload;
        size_t len;
};

/* Called for each row by outbox_scan: return 0 to go on, 1 to stop before consuming this row,
 * or -errno to abort. */
typedef int (*outbox_row_fn)(void *userdata, const struct outbox_row *row);

/* [Outbox] in the configuration. outbox_open() takes its values. */
struct outbox_options {
        uint64_t max_bytes;
        unsigned audit_per_min;
};

int outbox_open(struct db *db, struct audit *audit, uint64_t max_bytes, unsigned audit_per_min,
                struct outbox **ret);
/* Audits drops not yet reported, then frees. */
void outbox_free(struct outbox *o);

/* Append a row in the open transaction; evicts per the overflow policy if over quota.
 * Returns 0 and the new id, -EDQUOT (the device is over its share of a full outbox), -ENOBUFS
 * (too many writes wait for the disk: db_backlogged()), -errno. */
int outbox_append(struct outbox *o, const char *device, uint16_t stream, uint32_t seq,
                  int64_t ts_ms, const uint8_t *payload, size_t len, int64_t *ret_id);
/* Rows with id > after, in id order, at most max_rows; returns the number consumed or -errno. */
int outbox_scan(struct outbox *o, int64_t after, size_t max_rows, outbox_row_fn fn, void *userdata);
/* Delete rows first..last (inclusive): they were delivered. Returns the number deleted. If the
 * commit fails, they are deleted again in the next transaction. */
int outbox_delete_range(struct outbox *o, int64_t first, int64_t last);

/* New rows get ids above this one (the reader's cursor); it only moves up. */
void outbox_set_floor(struct outbox *o, int64_t id);
/* Would a row of `row` bytes be refused? (pure; the policy above) */
bool outbox_over_share(uint64_t max_bytes, uint64_t queued, size_t devices, uint64_t device_bytes,
                       uint64_t row);

struct outbox_device_stats {
        uint64_t rows, bytes;                           /* queued now */
        uint64_t appended, refused, dropped, delivered; /* since the start */
};
/* -ENOENT if the device never had a row in this run (or left from the last one). */
int outbox_device_stats(struct outbox *o, const char *device, struct outbox_device_stats *ret);

/* The table as the open transaction sees it; after a commit or a rollback, what is committed. */
uint64_t outbox_rows(const struct outbox *o);
uint64_t outbox_bytes(const struct outbox *o);
uint64_t outbox_dropped(const struct outbox *o);
/* Rows that were never stored: their append or the commit that carried it failed. */
uint64_t outbox_refused(const struct outbox *o);
int64_t outbox_last_id(const struct outbox *o);
size_t outbox_devices(const struct outbox *o);
/* The lowest id of rows a failed commit brought back after they had been evicted (a reader
 * that went past them must go back), or 0; resets it. */
int64_t outbox_take_rewind(struct outbox *o);

/* Whether the quota fits into the file system of the database: the outbox may use the space
 * the database files take now plus what is free, and needs MaxBytes plus this margin (page
 * slack, the write-ahead log, the other tables). */
#define OUTBOX_SPACE_MARGIN_PERCENT 20
struct outbox_space {
        uint64_t fs_size, fs_free; /* of the file system (free: for unprivileged users) */
        uint64_t db_bytes;         /* the database and its write-ahead log */
        uint64_t needed;           /* MaxBytes + the margin */
        bool fits;                 /* needed <= db_bytes + fs_free (false without a quota) */
};
int outbox_space_check(const char *db_path, uint64_t max_bytes, struct outbox_space *ret);
/* One sentence for a log line or an `audit config` finding, when it does not fit. */
void outbox_space_describe(const struct outbox_space *sp, uint64_t max_bytes, char *buf, size_t n);
/* {"fs_size","fs_free","db_bytes","needed","quota_fits"} */
json_t *outbox_space_json(const struct outbox_space *sp);

/* {"rows","bytes","max_bytes","devices","dropped","dropped_bytes","appended","refused",
 *  "commit_failures","space":{…}}; looks at the free space now. */
json_t *outbox_status_json(struct outbox *o);
