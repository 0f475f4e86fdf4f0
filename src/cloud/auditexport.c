/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "basic/time-util.h"
#include "basic/hexdecoct.h"
#include "audit/audit.h"
#include "cloud/auditexport.h"
#include "store/db.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cloud/relay.h"

#define CURSOR_KEY "auditexport.cursor"
#define EXPORT_DELAY_MS 20    /* gather the records of one burst into one pass */
#define PRUNE_PERIOD_MS 60000 /* retention check; sooner while a backlog is being pruned */

struct auditexport {
        uv_timer_t export_timer, prune_timer;
        unsigned open_handles;
        struct db *db;
        struct audit *audit;
        struct relay *relay;
        bool enabled;
        uint64_t max_age_usec, max_records;
        int64_t cursor; /* last seq handed to the outbox */
        uint8_t cursor_hash[AUDIT_HASH_LEN];
        sqlite3_stmt *put;
        uint64_t exported, pruned, failures;
        int last_error;
        bool busy; /* inside a pass: records appended meanwhile wait for the next one */
};

json_t *auditexport_record_json(const struct audit_record *rec, const uint8_t prev[32])
{
        char h[2 * AUDIT_HASH_LEN + 1], p[2 * AUDIT_HASH_LEN + 1];

        hexmem(rec->hash, AUDIT_HASH_LEN, h);
        hexmem(prev, AUDIT_HASH_LEN, p);
        /* details stays the exact text that was hashed, so the cloud can recompute. */
        return json_pack("{si sI sI ss ss ss ss ss ss}", "v", 1, "seq", (json_int_t)rec->seq,
                         "ts_us", (json_int_t)rec->ts_us, "actor", rec->actor, "event", rec->event,
                         "subject", rec->subject, "details", rec->details, "hash", h, "prev", p);
}

static void cursor_load(struct auditexport *x)
{
        sqlite3_stmt *s = NULL;

        x->cursor = 0;
        memset(x->cursor_hash, 0, sizeof x->cursor_hash);
        if (sqlite3_prepare_v2(db_handle(x->db),
                               "SELECT value FROM meta WHERE key = '" CURSOR_KEY "'", -1, &s,
                               NULL) != SQLITE_OK)
                return;
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 8 + AUDIT_HASH_LEN) {
                const uint8_t *v = sqlite3_column_blob(s, 0);
                uint64_t seq = 0;
                for (int i = 0; i < 8; i++)
                        seq = seq << 8 | v[i];
                x->cursor = (int64_t)seq;
                memcpy(x->cursor_hash, v + 8, AUDIT_HASH_LEN);
        }
        sqlite3_finalize(s);
}

static int cursor_store(struct auditexport *x)
{
        uint8_t v[8 + AUDIT_HASH_LEN];
        uint64_t seq = (uint64_t)x->cursor;
        int rc;

        for (int i = 7; i >= 0; i--, seq >>= 8)
                v[i] = (uint8_t)seq;
        memcpy(v + 8, x->cursor_hash, AUDIT_HASH_LEN);
        sqlite3_bind_blob(x->put, 1, v, sizeof v, SQLITE_TRANSIENT);
        rc = sqlite3_step(x->put);
        sqlite3_reset(x->put);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int export_one(void *ud, const struct audit_record *rec)
{
        struct auditexport *x = ud;
        _cleanup_free_ char *text = NULL;
        json_t *o;
        int r;

        if (rec->seq != x->cursor + 1 && x->cursor != 0) {
                /* Pruned below the cursor cannot happen (retention waits for the export); a gap
                 * here means the records were deleted behind our back. Say so upstream. */
                log_warning("audit export: records %lld to %lld are missing; continuing at %lld",
                            (long long)(x->cursor + 1), (long long)(rec->seq - 1),
                            (long long)rec->seq);
        }
        o = auditexport_record_json(rec, x->cursor_hash);
        text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text)
                return -ENOMEM;
        r = relay_submit(x->relay, AUDITEXPORT_DEVICE, AUDITEXPORT_STREAM, (uint32_t)rec->seq,
                         (const uint8_t *)text, strlen(text), NULL, NULL);
        if (r == -EMSGSIZE) {
                /* Larger than MaxPayload: send the chain link without the details; the cloud
                 * sees the gap in content but not in the chain. */
                char h[2 * AUDIT_HASH_LEN + 1], p[2 * AUDIT_HASH_LEN + 1];
                free(text);
                hexmem(rec->hash, AUDIT_HASH_LEN, h);
                hexmem(x->cursor_hash, AUDIT_HASH_LEN, p);
                o = json_pack("{si sI sI ss ss ss sb}", "v", 1, "seq", (json_int_t)rec->seq,
                              "ts_us", (json_int_t)rec->ts_us, "event", rec->event, "hash", h,
                              "prev", p, "truncated", 1);
                text = o ? json_dumps(o, JSON_COMPACT) : NULL;
                json_decref(o);
                if (!text)
                        return -ENOMEM;
                r = relay_submit(x->relay, AUDITEXPORT_DEVICE, AUDITEXPORT_STREAM,
                                 (uint32_t)rec->seq, (const uint8_t *)text, strlen(text), NULL,
                                 NULL);
        }
        if (r < 0) {
                x->last_error = r;
                return r;
        }
        x->cursor = rec->seq;
        memcpy(x->cursor_hash, rec->hash, AUDIT_HASH_LEN);
        x->exported++;
        return 0;
}

static void on_export_timer(uv_timer_t *t);

static void export_pass(struct auditexport *x)
{
        int64_t before = x->cursor;
        int n, r;

        if (!x->enabled || !x->relay || x->busy)
                return;
        /* The outbox rows and the cursor go into the same group-commit transaction. */
        if ((r = db_write_begin(x->db)) < 0)
                return;
        x->busy = true;
        n = audit_read(x->audit, x->cursor, AUDITEXPORT_BATCH, export_one, x);
        x->busy = false;
        if (x->cursor != before && (r = cursor_store(x)) < 0)
                log_error_errno(r, "audit export: cannot store the cursor: %m");
        if (n < 0 || x->last_error) {
                x->failures++;
                log_warning_errno(x->last_error ? x->last_error : n,
                                  "audit export: stopped at record %lld: %m; retrying",
                                  (long long)x->cursor + 1);
                x->last_error = 0;
                uv_timer_start(&x->export_timer, on_export_timer, 1000, 0);
                return;
        }
        /* More than one batch waiting: go on after the loop had its turn. */
        if (audit_head_seq(x->audit) > x->cursor)
                auditexport_notify(x);
}

static void on_export_timer(uv_timer_t *t)
{
        export_pass(t->data);
}

void auditexport_notify(struct auditexport *x)
{
        if (!x || !x->enabled || !x->relay || uv_is_active((uv_handle_t *)&x->export_timer))
                return;
        uv_timer_start(&x->export_timer, on_export_timer, EXPORT_DELAY_MS, 0);
}

int64_t auditexport_prune(struct auditexport *x)
{
        int64_t head = audit_head_seq(x->audit), first, k = 0, r;

        if (!x->max_age_usec && !x->max_records)
                return 0;
        if (x->max_records && (uint64_t)head > x->max_records)
                k = head - (int64_t)x->max_records;
        if (x->max_age_usec) {
                k = MAX(k,
                        audit_seq_before(x->audit, now_realtime_usec() - (int64_t)x->max_age_usec));
        }
        /* Never what the cloud has not got a copy of (in the outbox at least). */
        if (x->enabled)
                k = MIN(k, x->cursor);
        first = audit_first_seq(x->audit);
        if (first <= 0 || k < first)
                return 0;
        k = MIN(k, first + AUDITEXPORT_PRUNE_BATCH - 1);
        r = audit_prune(x->audit, k, "daemon");
        if (r > 0) {
                x->pruned += (uint64_t)r;
                log_info("audit: pruned records %lld to %lld (retention); checkpoint at %lld",
                         (long long)first, (long long)k, (long long)audit_head_seq(x->audit));
                db_commit(x->db);
        } else if (r < 0)
                log_error_errno((int)r, "audit: retention pruning failed: %m");
        return r;
}

static void on_prune_timer(uv_timer_t *t)
{
        struct auditexport *x = t->data;
        int64_t r = auditexport_prune(x);
        /* A long backlog goes in slices of AUDITEXPORT_PRUNE_BATCH, one a second. */
        uv_timer_start(&x->prune_timer, on_prune_timer,
                       r >= AUDITEXPORT_PRUNE_BATCH ? 1000 : PRUNE_PERIOD_MS, 0);
}

void auditexport_update(struct auditexport *x, const struct auditexport_options *o)
{
        bool was = x->enabled;

        x->enabled = o->enabled;
        x->max_age_usec = o->max_age_usec;
        x->max_records = o->max_records;
        if (x->enabled && !was) {
                /* Turned on: start from the oldest record kept, unless we exported before. */
                if (x->cursor == 0) {
                        int64_t first = audit_first_seq(x->audit);
                        x->cursor = first > 1 ? first - 1 : 0;
                }
                auditexport_notify(x);
        }
        uv_timer_start(&x->prune_timer, on_prune_timer, 1000, 0);
}

json_t *auditexport_status(struct auditexport *x)
{
        return json_pack("{sb sI sI sI sI sI sI sI sI}", "enabled", x->enabled, "cursor",
                         (json_int_t)x->cursor, "pending",
                         (json_int_t)(x->enabled ? audit_head_seq(x->audit) - x->cursor : 0),
                         "exported", (json_int_t)x->exported, "failures", (json_int_t)x->failures,
                         "pruned", (json_int_t)x->pruned, "first_seq",
                         (json_int_t)audit_first_seq(x->audit), "max_age_ms",
                         (json_int_t)(x->max_age_usec / 1000), "max_records",
                         (json_int_t)x->max_records);
}

int auditexport_new(uv_loop_t *loop, struct db *db, struct audit *audit, struct relay *relay,
                    const struct auditexport_options *o, struct auditexport **ret)
{
        struct auditexport *x = calloc(1, sizeof *x);
        int r;

        if (!x)
                return -ENOMEM;
        x->db = db;
        x->audit = audit;
        x->relay = relay;
        if ((r = db_prepare(db,
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('" CURSOR_KEY "', ?)",
                            &x->put)) < 0) {
                free(x);
                return r;
        }
        cursor_load(x);
        uv_timer_init(loop, &x->export_timer);
        uv_timer_init(loop, &x->prune_timer);
        x->export_timer.data = x->prune_timer.data = x;
        x->open_handles = 2;
        auditexport_update(x, o);
        *ret = x;
        return 0;
}

static void closed(uv_handle_t *h)
{
        struct auditexport *x = h->data;
        if (--x->open_handles == 0)
                free(x);
}

void auditexport_stop(struct auditexport *x)
{
        if (!x)
                return;
        uv_close((uv_handle_t *)&x->export_timer, closed);
        uv_close((uv_handle_t *)&x->prune_timer, closed);
}
