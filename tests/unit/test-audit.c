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
#include "audit-fixture.h"

static void fill(struct fixture *f, int n)
{
        int64_t start = audit_head_seq(f->audit);
        for (int i = 0; i < n; i++) {
                char subject[32];
                int64_t seq;
                snprintf(subject, sizeof subject, "dev-%d", i);
                seq = audit_append(f->audit, "device:x", "auth.ok", subject, "{\"n\":1}");
                assert_int_equal(seq, start + i + 1);
        }
        assert_int_equal(db_commit(f->db), 0);
}

static void test_chain_ok(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 50);
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_true(res.ok);
        assert_int_equal(res.records, 50);
        assert_int_equal(res.first_bad_seq, 0);
}

static void test_append_only_triggers(void **state)
{
        struct fixture *f = *state;
        fill(f, 3);
        assert_int_not_equal(exec_sql(f, "UPDATE audit SET event='x' WHERE seq=2"), SQLITE_OK);
        assert_int_not_equal(exec_sql(f, "DELETE FROM audit WHERE seq=2"), SQLITE_OK);
}

static void test_edit_detected(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 20);
        exec_ok(f, "DROP TRIGGER audit_no_update; UPDATE audit SET subject='forged' WHERE seq=7");
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_int_equal(res.first_bad_seq, 7);
        assert_non_null(strstr(res.reason, "chain hash"));
}

static void test_details_edit_detected(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 5);
        exec_ok(f,
                "DROP TRIGGER audit_no_update; UPDATE audit SET details='{\"n\":2}' WHERE seq=5");
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_int_equal(res.first_bad_seq, 5);
}

static void test_delete_detected(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 20);
        exec_ok(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=11");
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_int_equal(res.first_bad_seq, 11);
        assert_non_null(strstr(res.reason, "missing"));
}

/* Renumbering after a deletion needs new hashes all the way down: caught at the first one. */
static void test_delete_and_renumber_detected(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 10);
        exec_ok(f, "DROP TRIGGER audit_no_delete; DROP TRIGGER audit_no_update;"
                   "DELETE FROM audit WHERE seq=4; UPDATE audit SET seq=seq-1 WHERE seq>4");
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_int_equal(res.first_bad_seq, 4);
}

static void test_tail_truncation_detected(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;
        struct audit *reopened = NULL;

        fill(f, 10);
        exec_ok(f, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq>=9");
        /* The running daemon knows its head. */
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_false(res.ok);
        assert_int_equal(res.first_bad_seq, 9);

        /* After a restart the head stored at each commit still tells. */
        assert_int_equal(audit_open(f->db, &reopened), 0);
        assert_int_equal(audit_verify(reopened, &res), 0);
        assert_false(res.ok);
        assert_non_null(strstr(res.reason, "recorded head is 10"));
        audit_free(reopened);
}

static void test_persist_and_continue(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;

        fill(f, 5);
        audit_free(f->audit);
        db_close(f->db);
        assert_int_equal(db_open(NULL, f->path, DB_SYNC_NORMAL, 0, &f->db), 0);
        assert_int_equal(audit_open(f->db, &f->audit), 0);
        assert_int_equal(audit_head_seq(f->audit), 5);
        fill(f, 5);
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_true(res.ok);
        assert_int_equal(res.records, 10);
}

static void test_tail_json(void **state)
{
        struct fixture *f = *state;
        json_t *arr = NULL;

        fill(f, 30);
        assert_int_equal(audit_tail(f->audit, 5, &arr), 0);
        assert_int_equal(json_array_size(arr), 5);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "seq")), 26);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 4), "seq")), 30);
        assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 4), "event")),
                            "auth.ok");
        assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(json_array_get(arr, 4), "details"), "n")),
                         1);
        json_decref(arr);
}

static int fail_once(void *ud)
{
        int *armed = ud;
        if (*armed) {
                *armed = 0;
                return -ENOSPC;
        }
        return 0;
}

/* A failed group commit (disk full) must not leave the chain broken for good. */
static void test_failed_commit_keeps_chain(void **state)
{
        struct fixture *f = *state;
        struct audit_verify_result res;
        int armed = 1;

        fill(f, 3);
        assert_int_equal(db_add_precommit(f->db, fail_once, &armed), 0);
        audit_append(f->audit, "daemon", "lost", "", NULL);
        audit_append(f->audit, "daemon", "lost", "", NULL);
        assert_int_equal(db_commit(f->db), -ENOSPC);
        assert_int_equal(audit_head_seq(f->audit), 3);
        fill(f, 2);
        db_remove_precommit(f->db, fail_once, &armed);
        assert_int_equal(audit_verify(f->audit, &res), 0);
        assert_true(res.ok);
        assert_int_equal(res.records, 5);
}

/* The documented hash (docs/audit.md) for a fixed record. */
static void test_hash_vector(void **state)
{
        static const uint8_t zero[AUDIT_HASH_LEN];
        struct audit_record rec = { .seq = 1,
                                    .ts_us = 1700000000000000LL,
                                    .actor = "daemon",
                                    .event = "daemon.start",
                                    .subject = "gw",
                                    .details = "{}" };
        uint8_t h[AUDIT_HASH_LEN];
        char hex[65];

        audit_hash(zero, &rec, h);
        for (int i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", h[i]);
        assert_string_equal(hex,
                            "f97d31bbc0bc3e4430da616ba6920b5177b831a18ee2c1aa56174fb44d1750a4");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_chain_ok, setup, teardown),
                cmocka_unit_test_setup_teardown(test_append_only_triggers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_edit_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_details_edit_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_delete_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_delete_and_renumber_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tail_truncation_detected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_persist_and_continue, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tail_json, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_commit_keeps_chain, setup, teardown),
                cmocka_unit_test(test_hash_vector),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
