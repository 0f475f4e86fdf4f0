/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "store/db.h"

/*
 * The audit log: an append-only table in the state database whose rows are hash-chained
 * (docs/audit.md). hash[n] = SHA-256("mcugw-audit-v1" || hash[n-1] || seq || time || actor ||
 * event || subject || details), with hash[0] = 32 zero bytes, so an edited, inserted or deleted
 * row breaks the chain at that point. The chain head is also kept in the meta table, in a head
 * file outside the database and in memory while the daemon runs, so that a truncated tail is
 * noticed too (audit_check_head()).
 *
 * Actors: "daemon", "cli:uid=N", "device:ID", "cloud".
 */

#define AUDIT_HASH_LEN 32

struct audit;

struct audit_record {
        int64_t seq;
        int64_t ts_us; /* CLOCK_REALTIME, µs */
        const char *actor;
        const char *event;
        const char *subject;
        const char *details; /* a JSON object, as text */
        uint8_t hash[AUDIT_HASH_LEN];
};

struct audit_verify_result {
        bool ok;
        int64_t records;
        int64_t first_seq;     /* the oldest record kept; > 1 after retention pruning */
        int64_t first_bad_seq; /* 0 if ok */
        char reason[160];
};

typedef void (*audit_listener_fn)(void *userdata, const struct audit_record *rec);

int audit_open(struct db *db, struct audit **ret);
void audit_free(struct audit *a);

/* Append a record in the current (group-committed) transaction. details may be NULL. Returns the
 * new sequence number. */
int64_t audit_append(struct audit *a, const char *actor, const char *event, const char *subject,
                     const char *details_json);
/* Same, with details as a JSON object (reference stolen, may be NULL). */
int64_t audit_log(struct audit *a, const char *actor, const char *event, const char *subject,
                  json_t *details);

/* Walk the whole chain; fills *res. Returns 0 when the walk ran (res->ok tells the verdict) and
 * -errno when the database could not be read. */
int audit_verify(struct audit *a, struct audit_verify_result *res);

/* The same walk in steps, for a caller that must not stop its event loop for the seconds a large
 * log takes (the control socket): begin, then step until it returns 0, then read the result.
 * A step checks at most max_records records (0: no limit) and returns 1 while there is more to
 * do, 0 when the verdict is in, -errno when the database could not be read. Records appended
 * between steps are part of the walk (it ends at the head it finds when it runs out of records),
 * and a walk overtaken by retention pruning starts again from the new checkpoint. A walk must be
 * freed before the audit log. */
struct audit_verify_walk;
int audit_verify_begin(struct audit *a, struct audit_verify_walk **ret);
int audit_verify_step(struct audit_verify_walk *w, size_t max_records);
const struct audit_verify_result *audit_verify_walk_result(const struct audit_verify_walk *w);
void audit_verify_free(struct audit_verify_walk *w);

/* Retention (docs/audit.md): append an `audit.checkpoint` record that carries the chain hash
 * of record through_seq (which commits to everything before it), then delete the records up to
 * through_seq. audit_verify() then starts from the oldest kept record with that hash as its
 * predecessor. Returns the number of records deleted (0 if none were older), or -errno. */
int64_t audit_prune(struct audit *a, int64_t through_seq, const char *actor);
/* Sequence number of the oldest record kept (0 when the log is empty). */
int64_t audit_first_seq(struct audit *a);
/* Records with seq > after_seq in order, at most max; fn returns 0 to go on, < 0 to stop.
 * Returns the number passed to fn or -errno. For the upstream export. */
typedef int (*audit_record_fn)(void *userdata, const struct audit_record *rec);
int audit_read(struct audit *a, int64_t after_seq, size_t max, audit_record_fn fn, void *userdata);
/* The seq of the newest record with ts_us < before_us, 0 if none. */
int64_t audit_seq_before(struct audit *a, int64_t before_us);

/* The last n records, oldest first, as a JSON array of objects. */
int audit_tail(struct audit *a, int64_t n, json_t **ret);
json_t *audit_record_to_json(const struct audit_record *rec);
/* The newest record of this event and subject (*ret NULL if none), for `device show`. */
int audit_last(struct audit *a, const char *event, const char *subject, json_t **ret);

int64_t audit_head_seq(const struct audit *a);
/* Called for every appended record (after it is in the transaction). One listener at a time is
 * enough for the control socket, which fans out itself. */
void audit_set_listener(struct audit *a, audit_listener_fn fn, void *userdata);

/*
 * The head outside the database (docs/audit.md, "The head"). The head file holds one line,
 * "mcugw-audit-head-v1 seq=N hash=HEX", written (new file, fdatasync, rename) after each group
 * commit that added records. At start the daemon compares the last record in the database with
 * meta.audit_head and with the head file; a database that ends before either (a deleted tail, a
 * truncated WAL, a wiped or restored database) or disagrees with them is not extended until the
 * operator accepts the loss (mcugwd --accept-audit-truncation), which is itself audited.
 */
#define AUDIT_HEAD_FILE_NAME "audit.head" /* in StateDirectory */

struct audit_head_check {
        bool ok;
        bool head_file_missing; /* ok, but the database has records and no head file exists */
        int64_t db_seq;         /* the last record in the database (0: none) */
        uint8_t db_hash[AUDIT_HASH_LEN];
        int64_t expected_seq; /* when !ok: what the stored head says */
        uint8_t expected_hash[AUDIT_HASH_LEN];
        const char *source; /* when !ok: "head file" or "meta.audit_head" */
        char reason[1024];  /* when !ok: one line, every finding */
};

/* Compare before anything is appended. Returns 0 (verdict in *res) or -errno if the database
 * could not be read. head_file may be NULL (meta only). */
int audit_check_head(struct audit *a, const char *head_file, struct audit_head_check *res);
/* Keep the head file from now on (written after every commit that added records). */
int audit_set_head_file(struct audit *a, const char *path);
/* The operator's decision after a failed check: append an `audit.truncation_accepted` record
 * that names what the database has, what the stored head said and the lost range; the chain goes
 * on from the last record in the database. Returns its seq or -errno; commit to make it (and
 * the new head) durable. */
int64_t audit_accept_truncation(struct audit *a, const struct audit_head_check *chk,
                                const char *actor);

/* Compute the chain hash of rec given the previous hash (exposed for tests and docs). */
void audit_hash(const uint8_t prev[AUDIT_HASH_LEN], const struct audit_record *rec,
                uint8_t out[AUDIT_HASH_LEN]);
