/* SPDX-License-Identifier: Apache-2.0 */
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
        int64_t id;

        open_all(f, 0);
        for (uint32_t i = 1; i <= 3; i++) {
                assert_int_equal(
                        outbox_append(f->ob, "a", 1, i, 100, (const uint8_t *)"xy", 2, &id), 0);
                assert_int_equal(
                        outbox_append(f->ob, "b", 1, i, 100, (const uint8_t *)"z", 1, NULL), 0);
        }
        assert_int_equal(outbox_rows(f->ob), 6);
        assert_int_equal(outbox_bytes(f->ob), 3 * (2 + 1 + 64) + 3 * (1 + 1 + 64));
        assert_int_equal(outbox_last_id(f->ob), 6);
        /* In id order, a callback may stop before a row. */
        assert_int_equal(outbox_scan(f->ob, 0, 100, collect, &s), 3);
        assert_string_equal(s.dev[0], "a");
        assert_string_equal(s.dev[1], "b");
        assert_int_equal(s.seq[2], 2);
        /* Delivered rows go; the rest stays across a restart and ids never go back. */
        assert_int_equal(outbox_delete_range(f->ob, 1, 3), 3);
        assert_int_equal(outbox_rows(f->ob), 3);
        close_all(f);

        open_all(f, 0);
        assert_int_equal(outbox_rows(f->ob), 3);
        assert_int_equal(outbox_devices(f->ob), 2);
        s = (struct seen){ .stop_at = 8 };
        assert_int_equal(outbox_scan(f->ob, 0, 100, collect, &s), 3);
        assert_int_equal(s.id[0], 4);
        assert_int_equal(outbox_append(f->ob, "a", 1, 9, 100, (const uint8_t *)"q", 1, &id), 0);
        assert_int_equal(id, 7);
        close_all(f);
}

static void test_overflow_drops_biggest_device(void **state)
{
        struct fixture *f = *state;
        uint8_t p[100];
        sqlite3_stmt *st;
        json_t *tail;
        bool audited = false;
        size_t i;
        json_t *rec;

        memset(p, 'p', sizeof p);
        open_all(f, 20000); /* ~120 rows of 166 bytes */
        for (uint32_t k = 1; k <= 5; k++)
                assert_int_equal(outbox_append(f->ob, "quiet", 1, k, 1, p, sizeof p, NULL), 0);
        for (uint32_t k = 1; k <= 400; k++)
                assert_int_equal(outbox_append(f->ob, "chatty", 1, k, 1, p, sizeof p, NULL), 0);
        assert_true(outbox_bytes(f->ob) <= 20000);
        assert_true(outbox_dropped(f->ob) > 250);
        db_commit(f->db);

        /* The quiet device kept everything; the chatty one lost its oldest. */
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*), min(seq) FROM outbox WHERE "
                                            "device = 'quiet'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 5);
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*), min(seq), max(seq) FROM outbox "
                                            "WHERE device = 'chatty'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 2), 400);
        assert_true(sqlite3_column_int(st, 1) > 250);
        assert_int_equal((uint64_t)sqlite3_column_int(st, 0) + 5, outbox_rows(f->ob));
        sqlite3_finalize(st);

        /* Never silent: audited. */
        assert_int_equal(audit_tail(f->audit, 50, &tail), 0);
        json_array_foreach (tail, i, rec)
                if (strcmp(json_string_value(json_object_get(rec, "event")), "outbox.overflow") ==
                            0 &&
                    strcmp(json_string_value(json_object_get(rec, "subject")), "chatty") == 0)
                        audited = true;
        json_decref(tail);
        assert_true(audited);
        close_all(f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_append_scan_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_overflow_drops_biggest_device, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
