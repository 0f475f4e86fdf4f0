/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The cmocka fixture of the audit tests: a fresh SQLite state file in its own temporary
 * directory with the audit log opened on it, removed again by the teardown. Include after
 * <cmocka.h>. */

#include <stdio.h>
#include <stdlib.h>
#include <sqlite3.h>

#include "audit/audit.h"
#include "store/db.h"

struct fixture {
        char dir[64];
        char path[128];
        struct db *db;
        struct audit *audit;
};

static inline int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        assert_non_null(f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-audit-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
        assert_int_equal(db_open(NULL, f->path, DB_SYNC_NORMAL, 0, &f->db), 0);
        assert_int_equal(audit_open(f->db, &f->audit), 0);
        *state = f;
        return 0;
}

static inline int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        audit_free(f->audit);
        db_close(f->db);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

/* Raw SQL on the state file, as an attacker with write access to it would; SQLITE_OK or the
 * error code. */
static inline int exec_sql(struct fixture *f, const char *sql)
{
        char *err = NULL;
        int rc = sqlite3_exec(db_handle(f->db), sql, NULL, NULL, &err);
        if (rc != SQLITE_OK)
                fprintf(stderr, "sql: %s\n", err);
        sqlite3_free(err);
        return rc;
}

/* The same, for SQL that must succeed. */
static inline void exec_ok(struct fixture *f, const char *sql)
{
        assert_int_equal(exec_sql(f, sql), SQLITE_OK);
}
