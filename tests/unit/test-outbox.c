/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "cloud/outbox.h"
#include "monitor/baseline.h"

struct fixture {
        char dir[64];
        char path[128];
        struct db *db;
        struct audit *audit;
        struct outbox *ob;
};

static void open_all(struct fixture *f, uint64_t max_bytes)
{
        assert_int_equal(db_open(NULL, f->path, DB_SYNC_NORMAL, 0, &f->db), 0);
        assert_int_equal(audit_open(f->db, &f->audit), 0);
        assert_int_equal(outbox_open(f->db, f->audit, max_bytes, 1000, &f->ob), 0);
}

static void close_all(struct fixture *f)
{
        outbox_free(f->ob);
        db_commit(f->db);
        audit_free(f->audit);
        db_close(f->db);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-outbox-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

struct seen {
        char dev[8][8];
        uint32_t seq[8];
        int64_t id[8];
        int n, stop_at;
};

static int collect(void *ud, const struct outbox_row *row)
{
        struct seen *s = ud;
        if (s->n == s->stop_at)
                return 1;
        snprintf(s->dev[s->n], sizeof s->dev[0], "%s", row->device);
        s->seq[s->n] = row->seq;
        s->id[s->n] = row->id;
        s->n++;
        return 0;
}

static void test_append_scan_delete(void **state)
{
        struct fixture *f = *state;
        struct seen s = { .stop_at = 3 };
        int64_t id, last;

        open_all(f, 0);
        for (uint32_t i = 1; i <= 3; i++) {
                assert_int_equal(
                        outbox_append(f->ob, "a", 1, i, 100, (const uint8_t *)"xy", 2, &id), 0);
                assert_int_equal(
                        outbox_append(f->ob, "b", 1, i, 100, (const uint8_t *)"z", 1, NULL), 0);
        }
        assert_int_equal(outbox_rows(f->ob), 6);
        assert_int_equal(outbox_bytes(f->ob), 3 * (2 + 1 + 64) + 3 * (1 + 1 + 64));
        assert_int_equal(outbox_last_id(f->ob), id + 1); /* b's third, in the same slot */
        /* In id order, a callback may stop before a row. */
        assert_int_equal(outbox_scan(f->ob, 0, 100, collect, &s), 3);
        assert_string_equal(s.dev[0], "a");
        assert_string_equal(s.dev[1], "b");
        assert_string_equal(s.dev[2], "a");
        assert_int_equal(s.seq[2], 2);
        assert_true(s.id[0] < s.id[1] && s.id[1] < s.id[2]);
        /* Delivered rows go; the rest stays across a restart and ids never go back. */
        assert_int_equal(outbox_delete_range(f->ob, s.id[0], s.id[2]), 3);
        assert_int_equal(outbox_rows(f->ob), 3);
        close_all(f);

        open_all(f, 0);
        assert_int_equal(outbox_rows(f->ob), 3);
        assert_int_equal(outbox_devices(f->ob), 2);
        last = outbox_last_id(f->ob);
        s = (struct seen){ .stop_at = 8 };
        assert_int_equal(outbox_scan(f->ob, 0, 100, collect, &s), 3);
        assert_string_equal(s.dev[0], "b");
        assert_int_equal(s.seq[0], 2);
        /* What is left from the last run goes out first: new ids are above all of it. */
        assert_int_equal(outbox_append(f->ob, "b", 1, 9, 100, (const uint8_t *)"q", 1, &id), 0);
        assert_true(id > last);
        assert_int_equal(outbox_last_id(f->ob), id);
        close_all(f);
}

/* The reading order is round-robin over the devices: a device with a backlog does not delay
 * the others, each device stays in its own order, and new rows go after the reader. */
static void test_fair_order(void **state)
{
        struct fixture *f = *state;
        struct seen s = { .stop_at = 8 };
        int64_t id, cursor;

        open_all(f, 0);
        for (uint32_t k = 1; k <= 100; k++)
                assert_int_equal(
                        outbox_append(f->ob, "flood", 1, k, 1, (const uint8_t *)"x", 1, NULL), 0);
        /* Two quiet devices arrive behind a backlog of 100. */
        assert_int_equal(outbox_append(f->ob, "q1", 1, 1, 1, (const uint8_t *)"y", 1, NULL), 0);
        assert_int_equal(outbox_append(f->ob, "q2", 1, 1, 1, (const uint8_t *)"z", 1, NULL), 0);
        assert_int_equal(outbox_append(f->ob, "q1", 1, 2, 1, (const uint8_t *)"y", 1, NULL), 0);
        assert_int_equal(outbox_scan(f->ob, 0, 8, collect, &s), 8);
        assert_string_equal(s.dev[0], "flood");
        assert_string_equal(s.dev[1], "q1");
        assert_string_equal(s.dev[2], "q2");
        assert_string_equal(s.dev[3], "flood");
        assert_int_equal(s.seq[3], 2);
        assert_string_equal(s.dev[4], "q1");
        assert_int_equal(s.seq[4], 2);
        assert_string_equal(s.dev[5], "flood");
        assert_int_equal(s.seq[5], 3);
        /* The reader published up to the 6th row; a quiet device's next row goes right after
         * it, ahead of the remaining 97 of the flood. */
        cursor = s.id[5];
        outbox_set_floor(f->ob, cursor);
        assert_int_equal(outbox_append(f->ob, "q2", 1, 2, 1, (const uint8_t *)"z", 1, &id), 0);
        assert_true(id > cursor);
        s = (struct seen){ .stop_at = 2 };
        assert_int_equal(outbox_scan(f->ob, cursor, 2, collect, &s), 2);
        assert_string_equal(s.dev[0], "flood");
        assert_int_equal(s.seq[0], 4);
        assert_string_equal(s.dev[1], "q2");
        assert_int_equal(s.seq[1], 2);
        close_all(f);
}

static void test_overflow_drops_biggest_device(void **state)
{
        struct fixture *f = *state;
        uint8_t p[100];
        sqlite3_stmt *st;
        json_t *tail;
        bool audited = false, refused_audited = false;
        size_t i;
        json_t *rec;
        struct outbox_device_stats ds;
        uint32_t accepted = 0;
        int q;

        memset(p, 'p', sizeof p);
        open_all(f, 20000); /* ~120 rows of 166 bytes */
        for (uint32_t k = 1; k <= 5; k++)
                assert_int_equal(outbox_append(f->ob, "quiet", 1, k, 1, p, sizeof p, NULL), 0);
        /* The chatty one fills what the quiet one does not use, then it is over its share of a
         * full outbox: refused, the quiet one's rows stay. */
        for (uint32_t k = 1; k <= 400; k++) {
                q = outbox_append(f->ob, "chatty", 1, k, 1, p, sizeof p, NULL);
                assert_true(q == 0 || q == -EDQUOT);
                accepted += q == 0;
        }
        assert_true(accepted > 100 && accepted < 130);
        assert_int_equal(outbox_refused(f->ob), 400 - accepted);
        assert_int_equal(outbox_dropped(f->ob), 0);
        assert_int_equal(outbox_device_stats(f->ob, "chatty", &ds), 0);
        assert_int_equal(ds.refused, 400 - accepted);
        assert_int_equal(ds.rows, accepted);
        /* The quiet one, under its share, still gets in: the chatty one's oldest make room,
         * until the quiet one holds its share (half) too. */
        accepted = 5;
        for (uint32_t k = 6; k <= 300; k++) {
                q = outbox_append(f->ob, "quiet", 1, k, 1, p, sizeof p, NULL);
                assert_true(q == 0 || q == -EDQUOT);
                accepted += q == 0;
        }
        assert_true(outbox_bytes(f->ob) <= 20000);
        assert_true(outbox_dropped(f->ob) > 0);
        assert_int_equal(outbox_device_stats(f->ob, "quiet", &ds), 0);
        assert_int_equal(ds.dropped, 0);
        assert_int_equal(ds.rows, accepted);
        /* About its share: the refusal applies to a full outbox, and eviction leaves a little
         * room below the quota (hysteresis). */
        assert_true(ds.bytes > 10000 - 2 * 169 && ds.bytes <= 10000 + 2 * 169);
        db_commit(f->db);

        /* The quiet device kept everything; the chatty one lost its oldest. */
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*), min(seq) FROM outbox WHERE "
                                            "device = 'quiet'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), accepted);
        assert_int_equal(sqlite3_column_int(st, 1), 1);
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*), min(seq), max(seq) FROM outbox "
                                            "WHERE device = 'chatty'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_true(sqlite3_column_int(st, 1) > 1);
        assert_int_equal((uint64_t)sqlite3_column_int(st, 0) + accepted, outbox_rows(f->ob));
        sqlite3_finalize(st);

        /* Never silent: audited. */
        assert_int_equal(audit_tail(f->audit, 50, &tail), 0);
        json_array_foreach (tail, i, rec)
                if (strcmp(json_string_value(json_object_get(rec, "event")), "outbox.overflow") ==
                            0 &&
                    strcmp(json_string_value(json_object_get(rec, "subject")), "chatty") == 0)
                        audited = true;
                else if (strcmp(json_string_value(json_object_get(rec, "event")),
                                "outbox.refused") == 0)
                        refused_audited = true;
        json_decref(tail);
        assert_true(audited);
        assert_true(refused_audited);
        close_all(f);
}
/* The share rule alone (pure). */
static void test_share_rule(void **state)
{
        /* Not full: anyone may append, whatever it holds. */
        assert_false(outbox_over_share(1000, 500, 2, 500, 100));
        /* Full: over the fair share (1000 / 2) is refused, under it is not. */
        assert_true(outbox_over_share(1000, 950, 2, 450, 100));
        assert_false(outbox_over_share(1000, 950, 2, 300, 100));
        /* One device alone has all of it: refused only when it would pass the quota. */
        assert_false(outbox_over_share(1000, 900, 1, 900, 100));
        assert_true(outbox_over_share(1000, 950, 1, 950, 100));
        /* No quota: never. */
        assert_false(outbox_over_share(0, 1u << 30, 1, 1u << 30, 100));
}

/* ---- failed commits: the figures follow what is in the database ------------------------------ */

/* What the table holds, by the outbox's measure (inside the open transaction, if any). */
static void table_figures(struct fixture *f, uint64_t *rows, uint64_t *bytes)
{
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*), coalesce(sum(length(payload) + "
                                            "length(device) + 64), 0) FROM outbox",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        *rows = (uint64_t)sqlite3_column_int64(st, 0);
        *bytes = (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_finalize(st);
}

static int64_t table_count(struct fixture *f, const char *where)
{
        sqlite3_stmt *st;
        char sql[256];
        int64_t n;
        snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE %s", where);
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db), sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return n;
}

static void assert_figures_match_table(struct fixture *f)
{
        uint64_t rows, bytes;
        table_figures(f, &rows, &bytes);
        assert_int_equal(outbox_rows(f->ob), rows);
        assert_int_equal(outbox_bytes(f->ob), bytes);
}

static json_int_t status_int(struct fixture *f, const char *key)
{
        json_t *j = outbox_status_json(f->ob);
        json_int_t v;
        assert_non_null(j);
        assert_non_null(json_object_get(j, key));
        v = json_integer_value(json_object_get(j, key));
        json_decref(j);
        return v;
}

/* A real COMMIT that fails: SQLite turns it into a rollback when the commit hook says so. */
static int fail_commit_hook(void *ud)
{
        return *(int *)ud;
}

/* A commit callback per appended message, as the link's acks use them. */
struct ack {
        int64_t id;
        int status;
        bool called;
};

static void on_ack(void *ud, int status)
{
        struct ack *a = ud;
        a->status = status;
        a->called = true;
}

static int append_acked(struct fixture *f, const char *dev, uint32_t seq, size_t len, struct ack *a)
{
        uint8_t p[512];
        int r;
        memset(p, 'p', sizeof p);
        assert_true(len <= sizeof p);
        *a = (struct ack){ 0 };
        r = outbox_append(f->ob, dev, 1, seq, 1, p, len, &a->id);
        if (r >= 0)
                assert_int_equal(db_on_commit(f->db, on_ack, a), 0);
        return r;
}

static int cmp_id(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return (x > y) - (x < y);
}

static void test_failed_commit_restores_figures(void **state)
{
        struct fixture *f = *state;
        struct ack acks[16];
        int64_t ids[10];
        char first3[96];
        int fail = 0;
        uint64_t rows0, bytes0;

        open_all(f, 0);
        sqlite3_commit_hook(db_handle(f->db), fail_commit_hook, &fail);
        for (uint32_t i = 0; i < 10; i++)
                assert_int_equal(append_acked(f, i % 2 ? "a" : "bb", i, 100, &acks[i]), 0);
        assert_int_equal(db_commit(f->db), 0);
        for (int i = 0; i < 10; i++)
                assert_true(acks[i].called && acks[i].status == 0);
        rows0 = outbox_rows(f->ob);
        bytes0 = outbox_bytes(f->ob);
        assert_int_equal(rows0, 10);
        /* The three oldest rows in reading order (ids are fair-queueing tags, not 1..n). */
        for (int i = 0; i < 10; i++)
                ids[i] = acks[i].id;
        qsort(ids, 10, sizeof ids[0], cmp_id);
        snprintf(first3, sizeof first3, "id BETWEEN %lld AND %lld", (long long)ids[0],
                 (long long)ids[2]);

        /* A delivery, new messages and a failed commit. */
        assert_int_equal(outbox_delete_range(f->ob, ids[0], ids[2]), 3);
        for (uint32_t i = 10; i < 15; i++)
                assert_int_equal(append_acked(f, "c", i, 50, &acks[i]), 0);
        assert_int_equal(outbox_rows(f->ob), 12);
        fail = 1;
        assert_true(db_commit(f->db) < 0);
        /* None of the new messages may be acked; the figures are the committed ones. */
        for (int i = 10; i < 15; i++)
                assert_true(acks[i].called && acks[i].status < 0);
        assert_int_equal(outbox_rows(f->ob), rows0);
        assert_int_equal(outbox_bytes(f->ob), bytes0);
        assert_figures_match_table(f);
        assert_int_equal(status_int(f, "appended"), 10);
        assert_int_equal(status_int(f, "refused"), 5);
        assert_int_equal(status_int(f, "dropped"), 0);
        assert_int_equal(status_int(f, "commit_failures"), 1);
        /* Per device too: what the failed commit carried counts as refused, not appended, and
         * the delivery it undid is not a delivery. */
        {
                struct outbox_device_stats ds;
                uint64_t delivered = 0;
                assert_int_equal(outbox_device_stats(f->ob, "c", &ds), 0);
                assert_int_equal(ds.rows, 0);
                assert_int_equal(ds.appended, 0);
                assert_int_equal(ds.refused, 5);
                assert_int_equal(outbox_devices(f->ob), 2);
                assert_int_equal(outbox_device_stats(f->ob, "a", &ds), 0);
                delivered += ds.delivered;
                assert_int_equal(outbox_device_stats(f->ob, "bb", &ds), 0);
                delivered += ds.delivered;
                assert_int_equal(delivered, 0);
        }
        assert_int_equal(table_count(f, first3), 3);

        /* The next transaction deletes the delivered rows again, with whatever it carries. */
        fail = 0;
        assert_int_equal(append_acked(f, "c", 20, 50, &acks[15]), 0);
        assert_int_equal(db_commit(f->db), 0);
        assert_true(acks[15].called && acks[15].status == 0);
        assert_int_equal(table_count(f, first3), 0);
        assert_int_equal(outbox_rows(f->ob), 8);
        assert_figures_match_table(f);
        assert_int_equal(status_int(f, "appended"), 11);
        /* Ids are not reused: the rolled back ones stay spent. */
        for (int i = 0; i < 15; i++)
                assert_true(acks[15].id > acks[i].id);

        /* A restart counts the same. */
        close_all(f);
        open_all(f, 0);
        assert_int_equal(outbox_rows(f->ob), 8);
        assert_figures_match_table(f);
        close_all(f);
}

/* The report: a disk full for a while, phantom rows piling up, and eviction of acked rows. */
static void test_failed_commits_never_evict(void **state)
{
        struct fixture *f = *state;
        struct ack a;
        int fail = 0;
        uint32_t seq = 0;

        /* Rows count 100 + 1 + 64 = 165 bytes; the quota holds 200 of them. */
        open_all(f, 200 * 165);
        sqlite3_commit_hook(db_handle(f->db), fail_commit_hook, &fail);
        for (int i = 0; i < 100; i++)
                assert_int_equal(append_acked(f, "d", ++seq, 100, &a), 0);
        assert_int_equal(db_commit(f->db), 0);

        /* 20 failed group commits of 50 messages each: 5 quotas' worth. */
        fail = 1;
        for (int k = 0; k < 20; k++) {
                for (int i = 0; i < 50; i++)
                        assert_int_equal(append_acked(f, "d", ++seq, 100, &a), 0);
                assert_true(db_commit(f->db) < 0);
                assert_true(a.called && a.status < 0);
                assert_int_equal(outbox_rows(f->ob), 100);
                assert_figures_match_table(f);
        }
        assert_int_equal(outbox_dropped(f->ob), 0);
        assert_int_equal(outbox_refused(f->ob), 1000);

        /* Space again: 50 more fit under the quota, nothing acked before is dropped. */
        fail = 0;
        for (int i = 0; i < 50; i++)
                assert_int_equal(append_acked(f, "d", ++seq, 100, &a), 0);
        assert_int_equal(db_commit(f->db), 0);
        assert_int_equal(outbox_dropped(f->ob), 0);
        assert_int_equal(outbox_rows(f->ob), 150);
        assert_int_equal(table_count(f, "seq BETWEEN 1 AND 100"), 100);
        assert_figures_match_table(f);
        close_all(f);
}

/* Evictions in a failed commit are not drops, and the rows they brought back are announced. */
static void test_failed_commit_undoes_eviction(void **state)
{
        struct fixture *f = *state;
        struct ack a;
        int64_t first_id = 0;
        char where[64];
        int fail = 0;
        json_t *tail, *rec;
        size_t i;
        bool overflow_audited = false;

        open_all(f, 100 * 165);
        sqlite3_commit_hook(db_handle(f->db), fail_commit_hook, &fail);
        for (uint32_t k = 1; k <= 95; k++) {
                assert_int_equal(append_acked(f, "e", k, 100, &a), 0);
                if (k == 1)
                        first_id = a.id;
        }
        assert_int_equal(db_commit(f->db), 0);
        assert_int_equal(outbox_take_rewind(f->ob), 0);

        /* Another device, under its share, makes room at the expense of the biggest ("e"). */
        for (uint32_t k = 96; k <= 110; k++)
                assert_int_equal(append_acked(f, "g", k, 100, &a), 0);
        assert_true(outbox_dropped(f->ob) > 0);
        fail = 1;
        assert_true(db_commit(f->db) < 0);
        /* Nothing was dropped after all, the evicted rows are back, from id 1 on. */
        assert_int_equal(outbox_dropped(f->ob), 0);
        assert_int_equal(status_int(f, "dropped_bytes"), 0);
        assert_int_equal(outbox_rows(f->ob), 95);
        snprintf(where, sizeof where, "id = %lld", (long long)first_id);
        assert_int_equal(table_count(f, where), 1);
        assert_figures_match_table(f);
        assert_int_equal(outbox_take_rewind(f->ob), first_id);
        assert_int_equal(outbox_take_rewind(f->ob), 0);
        /* The overflow record went with the transaction. */
        fail = 0;
        assert_int_equal(audit_tail(f->audit, 50, &tail), 0);
        json_array_foreach (tail, i, rec)
                if (strcmp(json_string_value(json_object_get(rec, "event")), "outbox.overflow") ==
                    0)
                        overflow_audited = true;
        json_decref(tail);
        assert_false(overflow_audited);
        close_all(f);
}

/* SQLite may roll a transaction back by itself after a failed statement (SQLITE_FULL, IOERR);
 * the next write notices, and the messages of that transaction are not acked. */
static void test_transaction_rolled_back_by_sqlite(void **state)
{
        struct fixture *f = *state;
        struct ack a[8];

        open_all(f, 0);
        for (uint32_t k = 0; k < 3; k++)
                assert_int_equal(append_acked(f, "f", k, 10, &a[k]), 0);
        assert_int_equal(db_commit(f->db), 0);
        for (uint32_t k = 3; k < 6; k++)
                assert_int_equal(append_acked(f, "f", k, 10, &a[k]), 0);
        assert_true(audit_log(f->audit, "test", "test.lost", "", NULL) > 0);
        /* What SQLite does on its own after such an error. */
        assert_int_equal(sqlite3_exec(db_handle(f->db), "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
        /* The audit chain notices too and continues from the last committed record. */
        assert_true(audit_log(f->audit, "test", "test.kept", "", NULL) > 0);
        assert_int_equal(append_acked(f, "f", 6, 10, &a[6]), 0);
        /* Noticed at that write: the figures went back to the commit, then counted row 6. */
        assert_int_equal(outbox_rows(f->ob), 4);
        assert_int_equal(outbox_refused(f->ob), 3);
        assert_false(a[3].called);
        assert_int_equal(db_commit(f->db), 0);
        for (int k = 3; k < 6; k++)
                assert_true(a[k].called && a[k].status < 0);
        assert_true(a[6].called && a[6].status == 0);
        assert_int_equal(table_count(f, "seq = 6"), 1);
        assert_int_equal(table_count(f, "seq BETWEEN 3 AND 5"), 0);
        assert_figures_match_table(f);
        {
                struct audit_verify_result v;
                assert_int_equal(audit_verify(f->audit, &v), 0);
                assert_true(v.ok);
                assert_int_equal(v.records, audit_head_seq(f->audit));
        }
        close_all(f);
}

/* A statement that fails for want of space (SQLITE_FULL, from max_page_count here): that
 * message is refused, and whatever happens to the transaction, a message acked OK is in the
 * table and the figures are the table's. */
static void test_append_fails_when_full(void **state)
{
        struct fixture *f = *state;
        struct ack a[400];
        sqlite3_stmt *st;
        int n = 0, r = 0, failed = 0;
        int64_t pages;

        open_all(f, 0);
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db), "PRAGMA page_count", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        pages = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        {
                char sql[64];
                snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages + 8);
                assert_int_equal(sqlite3_exec(db_handle(f->db), sql, NULL, NULL, NULL), SQLITE_OK);
        }
        while (n < 400 && (r = append_acked(f, "g", (uint32_t)n, 500, &a[n])) == 0)
                n++;
        assert_int_equal(r, -ENOSPC);
        assert_true(n > 10);
        /* SQLite rolled the transaction back (this version does, for SQLITE_FULL) or not. */
        assert_figures_match_table(f);
        db_commit(f->db);
        assert_figures_match_table(f);
        for (int k = 0; k < n; k++) {
                char where[32];
                assert_true(a[k].called);
                snprintf(where, sizeof where, "seq = %d", k);
                assert_int_equal(table_count(f, where), a[k].status == 0 ? 1 : 0);
                failed += a[k].status < 0;
        }
        /* The message that did not fit, and those that went with the transaction. */
        assert_int_equal(outbox_refused(f->ob), 1 + failed);
        close_all(f);
}

/* The quota against the file system: status and `audit config` say when it does not fit. */
static void test_space(void **state)
{
        struct baseline_config view;
        struct fixture *f = *state;
        struct outbox_space sp;
        struct conf *c = NULL;
        struct conf_errors err = { 0 };
        char text[256], msg[512];
        json_t *j, *findings, *x;
        size_t i;
        bool found = false;

        open_all(f, 1ULL << 60);
        j = outbox_status_json(f->ob);
        assert_non_null(json_object_get(j, "space"));
        assert_false(
                json_boolean_value(json_object_get(json_object_get(j, "space"), "quota_fits")));
        assert_true(json_integer_value(json_object_get(json_object_get(j, "space"), "fs_size")) >
                    0);
        json_decref(j);
        close_all(f);

        assert_int_equal(outbox_space_check(f->path, 1024 * 1024, &sp), 0);
        assert_true(sp.fits);
        assert_int_equal(sp.needed, 1024 * 1024 + 1024 * 1024 / 100 * 20);
        assert_true(sp.db_bytes > 0);
        assert_int_equal(outbox_space_check(f->path, 0, &sp), 0);
        assert_false(sp.fits); /* no quota */
        assert_int_equal(outbox_space_check(f->path, sp.fs_free + sp.db_bytes, &sp), 0);
        assert_false(sp.fits);
        outbox_space_describe(&sp, sp.fs_free + sp.db_bytes, msg, sizeof msg);
        assert_non_null(strstr(msg, "MaxBytes="));

        snprintf(text, sizeof text, "[Paths]\nStateDirectory=%s\n[Outbox]\nMaxBytes=%llu\n", f->dir,
                 (unsigned long long)(sp.fs_free + sp.db_bytes));
        assert_int_equal(conf_load_string("t.conf", text, &c, &err), 0);
        conf_baseline_config(c, &view);
        findings = baseline_findings(&view, NULL, 1, time(NULL));
        json_array_foreach (findings, i, x)
                if (strcmp(json_string_value(json_object_get(x, "check")),
                           "outbox.quota_exceeds_space") == 0) {
                        found = true;
                        assert_string_equal(json_string_value(json_object_get(x, "severity")),
                                            "medium");
                }
        json_decref(findings);
        assert_true(found);
        c->relay.outbox.max_bytes = 1024 * 1024;
        conf_baseline_config(c, &view);
        findings = baseline_findings(&view, NULL, 1, time(NULL));
        json_array_foreach (findings, i, x)
                assert_null(strstr(json_string_value(json_object_get(x, "check")), "outbox."));
        json_decref(findings);
        conf_free(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_append_scan_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fair_order, setup, teardown),
                cmocka_unit_test(test_share_rule),
                cmocka_unit_test_setup_teardown(test_overflow_drops_biggest_device, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_failed_commit_restores_figures, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_failed_commits_never_evict, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_commit_undoes_eviction, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_transaction_rolled_back_by_sqlite, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_append_fails_when_full, setup, teardown),
                cmocka_unit_test_setup_teardown(test_space, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
