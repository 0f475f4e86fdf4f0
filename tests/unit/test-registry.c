/* SPDX-License-Identifier: Apache-2.0 */
/* The registry's lifecycle changes (#17.1): set-key and remove, their audit records, the
 * indexes after a removal, persistence, and devices from DevicesDirectory refused. */
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
#include "devices/registry.h"
#include "store/db.h"

struct fixture {
        char dir[64];
        char path[128];
        struct db *db;
        struct audit *audit;
        struct registry *reg;
        int calls;
        enum device_state last_state;
        char last_id[REGISTRY_ID_MAX + 1];
};

static void on_state(void *ud, const struct registry_device *d, enum device_state old)
{
        struct fixture *f = ud;
        f->calls++;
        f->last_state = d->state;
        snprintf(f->last_id, sizeof f->last_id, "%s", d->id);
}

static void reg_open(struct fixture *f)
{
        assert_int_equal(registry_open(f->db, f->audit, &f->reg), 0);
        registry_set_listener(f->reg, on_state, f);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-registry-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
        assert_int_equal(db_open(NULL, f->path, DB_SYNC_NORMAL, 0, &f->db), 0);
        assert_int_equal(audit_open(f->db, &f->audit), 0);
        reg_open(f);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        registry_free(f->reg);
        audit_free(f->audit);
        db_close(f->db);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

static void key(uint8_t k[REGISTRY_KEY_LEN], int n)
{
        memset(k, n, REGISTRY_KEY_LEN);
}

static void add(struct fixture *f, const char *id, int n, const char *source)
{
        uint8_t k[REGISTRY_KEY_LEN];
        const char *err = NULL;
        key(k, n);
        assert_int_equal(registry_add(f->reg, "test", id, k, DEVICE_ACTIVE, "", source, &err), 0);
}

/* Audit records whose subject is id. */
static int records_of(struct fixture *f, const char *id, const char *event)
{
        sqlite3_stmt *s;
        int n = -1;
        assert_int_equal(db_commit(f->db), 0);
        assert_int_equal(sqlite3_prepare_v2(db_handle(f->db),
                                            "SELECT count(*) FROM audit WHERE subject = ?1 AND "
                                            "(?2 IS NULL OR event = ?2)",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        if (event)
                sqlite3_bind_text(s, 2, event, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW)
                n = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        return n;
}

static void test_set_key(void **state)
{
        struct fixture *f = *state;
        uint8_t k[REGISTRY_KEY_LEN];
        const char *err = NULL;

        add(f, "a", 1, "cli");
        add(f, "b", 2, "cli");
        key(k, 3);
        assert_int_equal(registry_set_key(f->reg, "test", "a", k, &err), 0);
        assert_int_equal(f->calls, 1); /* the link hears it: the old key's session goes */
        assert_string_equal(f->last_id, "a");
        assert_int_equal(f->last_state, DEVICE_ACTIVE);
        assert_non_null(registry_find_key(f->reg, k));
        assert_string_equal(registry_find_key(f->reg, k)->id, "a");
        key(k, 1);
        assert_null(registry_find_key(f->reg, k));
        assert_int_equal(records_of(f, "a", "device.key_changed"), 1);

        key(k, 2);
        assert_int_equal(registry_set_key(f->reg, "test", "a", k, &err), -EEXIST);
        assert_non_null(strstr(err, "already enrolled as b"));
        key(k, 3);
        assert_int_equal(registry_set_key(f->reg, "test", "a", k, &err), -EALREADY);
        assert_int_equal(registry_set_key(f->reg, "test", "nosuch", k, &err), -ENOENT);
        add(f, "file-1", 4, "file");
        key(k, 5);
        assert_int_equal(registry_set_key(f->reg, "test", "file-1", k, &err), -EPERM);
        assert_non_null(strstr(err, "DevicesDirectory"));
}

static void test_remove(void **state)
{
        struct fixture *f = *state;
        uint8_t k[REGISTRY_KEY_LEN];
        const char *err = NULL;
        char id[16];

        for (int i = 0; i < 100; i++) {
                snprintf(id, sizeof id, "d-%d", i);
                add(f, id, i + 1, "cli");
        }
        assert_int_equal(registry_set_state(f->reg, "test", "d-50", DEVICE_REVOKED, "", &err), 0);
        f->calls = 0;
        assert_int_equal(registry_remove(f->reg, "test", "d-50", "typo", &err), 0);
        assert_int_equal(f->calls, 0); /* already revoked: nothing to close */
        assert_int_equal(registry_remove(f->reg, "test", "d-10", "", &err), 0);
        assert_int_equal(f->calls, 1); /* closed like a revocation */
        assert_int_equal(f->last_state, DEVICE_REVOKED);
        assert_int_equal(registry_count(f->reg, NULL), 98);
        assert_null(registry_find(f->reg, "d-50"));
        key(k, 51);
        assert_null(registry_find_key(f->reg, k));
        /* Every other device is still found by id and by key. */
        for (int i = 0; i < 100; i++) {
                snprintf(id, sizeof id, "d-%d", i);
                key(k, i + 1);
                if (i == 50 || i == 10)
                        continue;
                assert_non_null(registry_find(f->reg, id));
                assert_ptr_equal(registry_find_key(f->reg, k), registry_find(f->reg, id));
        }
        /* The history stays, with one more record. */
        assert_int_equal(records_of(f, "d-50", "device.added"), 1);
        assert_int_equal(records_of(f, "d-50", "device.state"), 1);
        assert_int_equal(records_of(f, "d-50", "device.removed"), 1);
        assert_int_equal(registry_remove(f->reg, "test", "d-50", "", &err), -ENOENT);

        /* The id and the key may be enrolled again. */
        add(f, "d-50", 51, "cli");
        assert_int_equal(registry_find(f->reg, "d-50")->state, DEVICE_ACTIVE);

        /* Gone from the database too. */
        assert_int_equal(db_commit(f->db), 0);
        registry_free(f->reg);
        reg_open(f);
        assert_int_equal(registry_count(f->reg, NULL), 99);
        assert_null(registry_find(f->reg, "d-10"));
        assert_non_null(registry_find(f->reg, "d-50"));

        add(f, "file-2", 200, "file");
        assert_int_equal(registry_remove(f->reg, "test", "file-2", "", &err), -EPERM);
        assert_non_null(registry_find(f->reg, "file-2"));
}

/* Last-seen facts are written at the next commit, and only for the devices touched since the
 * last one: those listed before a removal (which renumbers the devices after it) are still the
 * ones written, and the untouched ones are not written at all. */
static void test_touch_written_at_commit(void **state)
{
        struct fixture *f = *state;
        const char *err = NULL;
        char id[16];
        int before, removal;

        for (int i = 0; i < 20; i++) {
                snprintf(id, sizeof id, "t-%d", i);
                add(f, id, i + 1, "cli");
        }
        assert_int_equal(db_commit(f->db), 0);
        /* What a removal alone writes (the row, its audit record and chain head). */
        before = sqlite3_total_changes(db_handle(f->db));
        assert_int_equal(registry_remove(f->reg, "test", "t-2", "", &err), 0);
        assert_int_equal(db_commit(f->db), 0);
        removal = sqlite3_total_changes(db_handle(f->db)) - before;

        before = sqlite3_total_changes(db_handle(f->db));
        registry_touch(f->reg, "t-15", 1111);
        registry_touch(f->reg, "t-3", 2222);
        registry_touch(f->reg, "t-15", 3333); /* twice: one row */
        assert_int_equal(registry_remove(f->reg, "test", "t-1", "", &err), 0);
        assert_int_equal(db_commit(f->db), 0);
        /* t-15 and t-3 saved once each, nothing else. */
        assert_int_equal(sqlite3_total_changes(db_handle(f->db)) - before, removal + 2);

        registry_free(f->reg);
        reg_open(f);
        assert_int_equal(registry_find(f->reg, "t-15")->last_seen_us, 3333);
        assert_int_equal(registry_find(f->reg, "t-3")->last_seen_us, 2222);
        assert_int_not_equal(registry_find(f->reg, "t-4")->last_seen_us, 3333);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_set_key, setup, teardown),
                cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
                cmocka_unit_test_setup_teardown(test_touch_written_at_commit, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
