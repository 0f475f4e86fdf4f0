/* SPDX-License-Identifier: Apache-2.0 */
/* The incremental verify walk (audit_verify_begin/step), as the control socket runs it: a slice
 * per loop turn while the daemon appends and retention prunes. */
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
#include "audit-fixture.h"

static void fill(struct fixture *f, int n)
{
        for (int i = 0; i < n; i++)
                assert_true(audit_append(f->audit, "daemon", "test", "x", "{\"i\":1}") > 0);
}

/* Steps until the verdict; returns how many steps it took. */
static int walk(struct audit_verify_walk *w, size_t per_step, void (*between)(void *), void *ud)
{
        int steps = 0, r;
        while ((r = audit_verify_step(w, per_step)) > 0) {
                steps++;
                if (between)
                        between(ud);
        }
        assert_int_equal(r, 0);
        return steps + 1;
}

static void test_steps_match_whole_walk(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_walk *w;
        struct audit_verify_result whole;
        const struct audit_verify_result *res;

        fill(f, 1000);
        assert_int_equal(audit_verify(f->audit, &whole), 0);
        assert_true(whole.ok);
        assert_int_equal(whole.records, 1000);

        assert_int_equal(audit_verify_begin(f->audit, &w), 0);
        assert_true(walk(w, 64, NULL, NULL) >= 1000 / 64);
        res = audit_verify_walk_result(w);
        assert_true(res->ok);
        assert_int_equal(res->records, 1000);
        audit_verify_free(w);

        /* A slice that ends exactly at the head, and an empty log's walk, end cleanly too. */
        assert_int_equal(audit_verify_begin(f->audit, &w), 0);
        walk(w, 500, NULL, NULL);
        assert_true(audit_verify_walk_result(w)->ok);
        audit_verify_free(w);
}

static void append_some(void *ud)
{
        struct fixture *f = ud;
        fill(f, 3);
}

static void test_appends_during_walk(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_walk *w;
        const struct audit_verify_result *res;

        fill(f, 500);
        db_commit(f->db);
        assert_int_equal(audit_verify_begin(f->audit, &w), 0);
        walk(w, 50, append_some, f);
        res = audit_verify_walk_result(w);
        assert_true(res->ok);
        /* The walk caught up with the records appended on the way and ended at the live head. */
        assert_true(res->records > 500);
        assert_int_equal(res->records, audit_head_seq(f->audit));
        audit_verify_free(w);
}

static void prune_once(void *ud)
{
        struct fixture *f = ud;
        static bool done;
        if (!done && audit_first_seq(f->audit) == 1) {
                assert_true(audit_prune(f->audit, 400, "daemon") > 0);
                done = true;
        }
}

static void test_pruned_during_walk(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_walk *w;
        const struct audit_verify_result *res;

        fill(f, 1000);
        db_commit(f->db);
        assert_int_equal(audit_verify_begin(f->audit, &w), 0);
        /* After the first slice (records 1-100), retention deletes 1-400: not a deletion to
         * report, the walk starts again from the checkpoint. */
        walk(w, 100, prune_once, f);
        res = audit_verify_walk_result(w);
        assert_true(res->ok);
        assert_int_equal(res->first_seq, 401);
        assert_int_equal(res->records, audit_head_seq(f->audit) - 400);
        audit_verify_free(w);
}

static void test_deletion_still_found(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_walk *w;
        const struct audit_verify_result *res;

        fill(f, 300);
        db_commit(f->db);
        exec_ok(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 150;");
        assert_int_equal(audit_verify_begin(f->audit, &w), 0);
        walk(w, 40, NULL, NULL);
        res = audit_verify_walk_result(w);
        assert_false(res->ok);
        assert_int_equal(res->first_bad_seq, 150);
        assert_non_null(strstr(res->reason, "record 150 missing"));
        audit_verify_free(w);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_steps_match_whole_walk, setup, teardown),
                cmocka_unit_test_setup_teardown(test_appends_during_walk, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pruned_during_walk, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deletion_still_found, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
