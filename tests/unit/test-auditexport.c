/* SPDX-License-Identifier: Apache-2.0 */
/* Audit retention with checkpoints (audit_prune, audit_verify from a checkpoint) and the export
 * record format (auditexport_record_json). */
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
#include "cloud/auditexport.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "audit-fixture.h"

static void fill(struct fixture *f, int n)
{
        for (int i = 0; i < n; i++)
                assert_true(audit_append(f->audit, "daemon", "test", "x", "{\"i\":1}") > 0);
        assert_int_equal(db_commit(f->db), 0);
}

static void verify(struct fixture *f, bool ok, int64_t first)
{
        struct audit_verify_result res;
        assert_int_equal(audit_verify(f->audit, &res), 0);
        if (res.ok != ok)
                fprintf(stderr, "verify: %s\n", res.reason);
        assert_int_equal(res.ok, ok);
        if (ok)
                assert_int_equal(res.first_seq, first);
}

static void test_prune(void **state)
{
        struct fixture *f = *state;

        fill(f, 100);
        /* Without a checkpoint nothing may be deleted. */
        assert_int_not_equal(exec_sql(f, "DELETE FROM audit WHERE seq = 1"), SQLITE_OK);

        assert_int_equal(audit_prune(f->audit, 40, "daemon"), 40);
        assert_int_equal(db_commit(f->db), 0);
        assert_int_equal(audit_first_seq(f->audit), 41);
        assert_int_equal(audit_head_seq(f->audit), 101); /* the checkpoint record */
        verify(f, true, 41);

        /* Above the checkpoint the log is still append-only. */
        assert_int_not_equal(exec_sql(f, "DELETE FROM audit WHERE seq = 41"), SQLITE_OK);
        assert_int_not_equal(exec_sql(f, "UPDATE audit SET actor = 'x' WHERE seq = 50"), SQLITE_OK);

        /* Prune again, past the first checkpoint: the second one carries on. */
        fill(f, 10);
        assert_int_equal(audit_prune(f->audit, 105, "daemon"), 65);
        assert_int_equal(db_commit(f->db), 0);
        verify(f, true, 106);
        /* Nothing older left: a no-op. */
        assert_int_equal(audit_prune(f->audit, 10, "daemon"), 0);
}

static void test_prune_tamper(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 50);
        assert_int_equal(audit_prune(f->audit, 20, "daemon"), 20);
        assert_int_equal(db_commit(f->db), 0);

        /* Someone who drops the trigger and deletes more of the oldest records. */
        assert_int_equal(
                exec_sql(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq <= 25"),
                SQLITE_OK);
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_non_null(strstr(res.reason, "without a checkpoint"));
}

static void test_checkpoint_edit(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 30);
        assert_int_equal(audit_prune(f->audit, 10, "daemon"), 10);
        assert_int_equal(db_commit(f->db), 0);
        /* Forging the checkpoint's prefix hash breaks the chain at the first kept record. */
        assert_int_equal(
                exec_sql(f, "DROP TRIGGER audit_no_update;"
                            "UPDATE audit SET details = replace(details, '\"prefix_hash\":\"',"
                            " '\"prefix_hash\":\"00') WHERE event = 'audit.checkpoint'"),
                SQLITE_OK);
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
}

static int collect(void *ud, const struct audit_record *rec)
{
        json_t *a = ud;
        static uint8_t prev[32];
        json_array_append_new(a, auditexport_record_json(rec, prev));
        memcpy(prev, rec->hash, 32);
        return 0;
}

static void test_export_record(void **state)
{
        struct fixture *f = *state;
        json_t *a = json_array(), *r0, *r1;

        fill(f, 3);
        assert_int_equal(audit_read(f->audit, 1, 10, collect, a), 2);
        r0 = json_array_get(a, 0);
        r1 = json_array_get(a, 1);
        assert_int_equal(json_integer_value(json_object_get(r0, "seq")), 2);
        assert_string_equal(json_string_value(json_object_get(r0, "details")), "{\"i\":1}");
        assert_string_equal(json_string_value(json_object_get(r1, "prev")),
                            json_string_value(json_object_get(r0, "hash")));
        assert_int_equal(strlen(json_string_value(json_object_get(r1, "hash"))), 64);
        json_decref(a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune_tamper, setup, teardown),
                cmocka_unit_test_setup_teardown(test_checkpoint_edit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_export_record, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
