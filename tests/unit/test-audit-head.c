/* SPDX-License-Identifier: Apache-2.0 */
/* The audit head outside the database (audit_check_head, the head file, the accepted
 * truncation): a chain that ends before its stored head is reported, whatever removed the tail. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"

struct fixture {
        char dir[64];
        char path[128];
        char head[128];
        struct db *db;
        struct audit *audit;
};

static void open_all(struct fixture *f)
{
        assert_int_equal(db_open(NULL, f->path, DB_SYNC_FULL, 0, &f->db), 0);
        assert_int_equal(audit_open(f->db, &f->audit), 0);
}

static void close_all(struct fixture *f)
{
        audit_free(f->audit);
        db_close(f->db);
        f->audit = NULL;
        f->db = NULL;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-audit-head-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
        snprintf(f->head, sizeof f->head, "%s/audit.head", f->dir);
        open_all(f);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        if (f->audit)
                close_all(f);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

/* Start as the daemon does: check, then keep the head file. */
static void start(struct fixture *f, struct audit_head_check *chk)
{
        assert_int_equal(audit_check_head(f->audit, f->head, chk), 0);
        if (chk->ok)
                assert_int_equal(audit_set_head_file(f->audit, f->head), 0);
}

static void fill(struct fixture *f, int n)
{
        for (int i = 0; i < n; i++)
                assert_true(audit_append(f->audit, "daemon", "test.event", "x", NULL) > 0);
        assert_int_equal(db_commit(f->db), 0);
}

static void exec(struct fixture *f, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(db_handle(f->db), sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK)
                fprintf(stderr, "%s: %s\n", sql, msg);
        assert_int_equal(rc, SQLITE_OK);
}

static void read_head_file(struct fixture *f, long long *seq)
{
        char buf[256];
        FILE *fp = fopen(f->head, "re");
        assert_non_null(fp);
        assert_non_null(fgets(buf, sizeof buf, fp));
        fclose(fp);
        assert_int_equal(sscanf(buf, "mcugw-audit-head-v1 seq=%lld hash=", seq), 1);
}

static void test_fresh_and_follow(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;
        long long seq = 0;

        start(f, &chk);
        assert_true(chk.ok);
        assert_false(chk.head_file_missing); /* nothing to miss yet */
        assert_int_equal(access(f->head, F_OK), -1);
        fill(f, 3);
        read_head_file(f, &seq);
        assert_int_equal(seq, 3);
        fill(f, 2);
        read_head_file(f, &seq);
        assert_int_equal(seq, 5);

        /* Reopen: consistent. */
        close_all(f);
        open_all(f);
        start(f, &chk);
        assert_true(chk.ok);
        assert_int_equal(chk.db_seq, 5);
}

/* Without the head file (first start of this version): ok, flagged. */
static void test_no_head_file(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;

        fill(f, 4);
        close_all(f);
        open_all(f);
        start(f, &chk);
        assert_true(chk.ok);
        assert_true(chk.head_file_missing);
}

static void test_deleted_tail(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;
        struct audit_verify_result v;
        char sql[200];
        long long seq = 0;

        start(f, &chk);
        fill(f, 10);
        close_all(f);
        open_all(f);
        exec(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 7");
        start(f, &chk);
        assert_false(chk.ok);
        assert_int_equal(chk.db_seq, 7);
        assert_int_equal(chk.expected_seq, 10);
        assert_non_null(strstr(chk.reason, "meta.audit_head says seq 10"));
        assert_non_null(strstr(chk.reason, "head file says seq 10"));
        assert_non_null(strstr(chk.reason, "database ends at seq 7"));

        /* meta rewritten to match: the head file still tells. */
        snprintf(sql, sizeof sql,
                 "UPDATE meta SET value = (SELECT CAST(x'0000000000000007' || hash AS BLOB) FROM "
                 "audit WHERE seq = 7) WHERE key = 'audit_head'");
        exec(f, sql);
        start(f, &chk);
        assert_false(chk.ok);
        assert_null(strstr(chk.reason, "meta.audit_head"));
        assert_non_null(strstr(chk.reason, "audit log lost its tail: head file says seq 10 hash "));

        /* The operator accepts: one record naming 8..10, then the chain goes on and verifies. */
        assert_int_equal(audit_accept_truncation(f->audit, &chk, "cli:uid=0"), 8);
        assert_int_equal(audit_set_head_file(f->audit, f->head), 0);
        assert_int_equal(db_commit(f->db), 0);
        read_head_file(f, &seq);
        assert_int_equal(seq, 8);
        assert_int_equal(audit_verify(f->audit, &v), 0);
        assert_true(v.ok);
        close_all(f);
        open_all(f);
        start(f, &chk);
        assert_true(chk.ok);
        {
                sqlite3_stmt *s;
                assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                                    "SELECT json_extract(details, '$.lost_from'), "
                                                    "json_extract(details, '$.lost_through') FROM "
                                                    "audit WHERE event = "
                                                    "'audit.truncation_accepted'",
                                                    -1, &s, NULL),
                                 SQLITE_OK);
                assert_int_equal(sqlite3_step(s), SQLITE_ROW);
                assert_int_equal(sqlite3_column_int64(s, 0), 8);
                assert_int_equal(sqlite3_column_int64(s, 1), 10);
                sqlite3_finalize(s);
        }
}

/* A wiped database with the head file left: every record lost. */
static void test_wiped(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;
        char p[160];

        start(f, &chk);
        fill(f, 6);
        close_all(f);
        unlink(f->path);
        snprintf(p, sizeof p, "%s-wal", f->path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", f->path);
        unlink(p);
        open_all(f);
        start(f, &chk);
        assert_false(chk.ok);
        assert_int_equal(chk.db_seq, 0);
        assert_int_equal(chk.expected_seq, 6);
        assert_non_null(strstr(chk.reason, "head file says seq 6"));
        assert_non_null(strstr(chk.reason, "database ends at seq 0"));
        assert_int_equal(audit_accept_truncation(f->audit, &chk, "cli:uid=0"), 1);
        assert_int_equal(db_commit(f->db), 0);
}

/* A record replaced (same seq, other hash) behind the head file: caught too. */
static void test_replaced(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;

        start(f, &chk);
        fill(f, 4);
        close_all(f);
        open_all(f);
        /* Rewrite record 4 and meta consistently: only the head file knows the old hash. */
        exec(f, "DROP TRIGGER audit_no_update; UPDATE audit SET hash = zeroblob(32) WHERE seq = 4;"
                "UPDATE meta SET value = CAST(x'0000000000000004' || zeroblob(32) AS BLOB) WHERE "
                "key = 'audit_head'");
        start(f, &chk);
        assert_false(chk.ok);
        assert_non_null(strstr(chk.reason, "audit log replaced: head file says seq 4"));
}

/* A head file behind the database (crash between commit and rename) is fine; a broken one is
 * not, and neither is one that is not a regular file. */
static void test_head_file_states(void **state)
{
        struct fixture *f = *state;
        struct audit_head_check chk;
        FILE *fp;

        start(f, &chk);
        fill(f, 3);
        close_all(f);
        open_all(f); /* no head file kept: records 4 and 5 leave it behind */
        fill(f, 2);
        close_all(f);
        open_all(f);
        start(f, &chk);
        assert_true(chk.ok);
        assert_int_equal(chk.db_seq, 5);
        close_all(f);
        open_all(f);

        fp = fopen(f->head, "we");
        assert_non_null(fp);
        fputs("garbage\n", fp);
        fclose(fp);
        start(f, &chk);
        assert_false(chk.ok);
        assert_non_null(strstr(chk.reason, "not an audit head file"));

        unlink(f->head);
        assert_int_equal(mkfifo(f->head, 0600), 0);
        alarm(10); /* a blocking open would hang here */
        start(f, &chk);
        alarm(0);
        assert_false(chk.ok);
        assert_non_null(strstr(chk.reason, "not a regular file (a FIFO)"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_fresh_and_follow, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_head_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deleted_tail, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wiped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_replaced, setup, teardown),
                cmocka_unit_test_setup_teardown(test_head_file_states, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
