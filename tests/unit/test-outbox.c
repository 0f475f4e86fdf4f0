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

#include "audit.h"
#include "conf.h"
#include "db.h"
#include "outbox.h"

struct fixture {
        char dir[64];
        char path[128];
        struct db *db;
        struct audit *audit;
        struct outbox *ob;
};

static void open_all(struct fixture *f, uint64_t max_bytes)
{
        assert_int_equal(db_open(NULL, f->path, CONF_SYNC_NORMAL, 0, &f->db), 0);
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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_append_scan_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fair_order, setup, teardown),
                cmocka_unit_test(test_share_rule),
                cmocka_unit_test_setup_teardown(test_overflow_drops_biggest_device, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
