/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

/*
 * Upstream audit export and retention (docs/audit.md).
 *
 * Export ([Audit] Export=yes): every audit record, in order, becomes one row of the durable
 * outbox under the pseudo-device AUDITEXPORT_DEVICE (not a valid device id, so it never clashes
 * with one), stream AUDITEXPORT_STREAM, sequence number = the record's seq. The relay delivers it
 * like telemetry — batched, paced, kept through outages, at least once and in order. The payload
 * is the record with its chain hash and its predecessor's, so the cloud can check that nothing is
 * missing and recompute every hash. The export cursor (seq and hash of the last record handed to
 * the outbox) is stored in the same transaction as the outbox rows.
 *
 * Retention ([Audit] MaxAge=, MaxRecords=): records older than MaxAge or beyond the newest
 * MaxRecords are pruned with audit_prune() (a checkpoint record carries the chain hash of the
 * pruned prefix), but never records that were not exported yet.
 */

#define AUDITEXPORT_DEVICE "@audit"
#define AUDITEXPORT_STREAM 0
#define AUDITEXPORT_BATCH 512         /* records handed to the outbox per pass */
#define AUDITEXPORT_PRUNE_BATCH 10000 /* records deleted per retention pass */

struct db;
struct audit;
struct relay;

/* [Audit] Export=, MaxAge=, MaxRecords= in the configuration. */
struct auditexport_options {
        int enabled;           /* bool: stream records upstream through the outbox */
        uint64_t max_age_usec; /* retention; 0: keep forever */
        uint64_t max_records;  /* retention; 0: no limit */
};
struct audit_record;

struct auditexport;

int auditexport_new(uv_loop_t *loop, struct db *db, struct audit *audit, struct relay *relay,
                    const struct auditexport_options *o, struct auditexport **ret);
/* Export=, MaxAge=, MaxRecords= after a reload. */
void auditexport_update(struct auditexport *x, const struct auditexport_options *o);
/* A record was appended (from the audit listener): export it soon. */
void auditexport_notify(struct auditexport *x);
/* Run one retention pass now; returns the number of records pruned or -errno. */
int64_t auditexport_prune(struct auditexport *x);
/* {"enabled","cursor","pending","exported","pruned","first_seq","max_age_s","max_records"} */
json_t *auditexport_status(struct auditexport *x);
/* The export payload of one record (exposed for tests): a JSON object. prev is the chain hash
 * of the record before it. */
json_t *auditexport_record_json(const struct audit_record *rec, const uint8_t prev[32]);
/* Closes the timers; memory goes in the last close callback. NULL is fine. */
void auditexport_stop(struct auditexport *x);
