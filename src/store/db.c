/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/db.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/ratelimit.h"
#include "basic/time-util.h"

/* At most one line per this while commits keep failing (a full disk fails every one). */
#define DB_FAIL_LOG_INTERVAL_MS 10000

struct db_waiter {
        db_commit_cb cb;
        void *userdata;
};

struct db_hook {
        int (*fn)(void *userdata);
        void *userdata;
};

struct db {
        sqlite3 *h;
        uv_timer_t timer;
        bool have_timer;
        uint64_t interval_usec;
        bool in_txn;
        uint64_t commits;

        sqlite3_stmt **stmts;
        size_t n_stmts;
        sqlite3_stmt *begin, *commit, *rollback;

        struct db_waiter *waiters;
        size_t n_waiters, cap_waiters;
        /* Waiters of a transaction SQLite rolled back on its own: told at the next db_commit. */
        struct db_waiter *lost_waiters;
        size_t n_lost_waiters;
        struct db_hook *hooks;
        size_t n_hooks;
        struct db_hook *rollback_hooks;
        size_t n_rollback_hooks;
        struct db_hook *postcommit_hooks;
        size_t n_postcommit_hooks;

        uint64_t failed_commits;
        struct ratelimit_run fail_log;
};

/* Forward-only migrations; index i upgrades user_version i to i + 1. Add, never edit. */
static const char *const migrations[] = {
        /* 1: metadata and the hash-chained audit log (docs/audit.md). */
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) STRICT;"
        "CREATE TABLE audit ("
        "  seq INTEGER PRIMARY KEY,"
        "  ts_us INTEGER NOT NULL,"
        "  actor TEXT NOT NULL,"
        "  event TEXT NOT NULL,"
        "  subject TEXT NOT NULL,"
        "  details TEXT NOT NULL,"
        "  hash BLOB NOT NULL) STRICT;"
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        "  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        "  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;",
        /* 2: the device registry (public keys only). */
        "CREATE TABLE devices ("
        "  id TEXT PRIMARY KEY,"
        "  pubkey BLOB NOT NULL UNIQUE,"
        "  state TEXT NOT NULL CHECK (state IN ('pending','active','quarantined','revoked')),"
        "  groups TEXT NOT NULL DEFAULT '',"
        "  source TEXT NOT NULL,"
        "  fw_version TEXT NOT NULL DEFAULT '',"
        "  boot_counter INTEGER NOT NULL DEFAULT 0,"
        "  reset_cause INTEGER NOT NULL DEFAULT 0,"
        "  last_seen_us INTEGER NOT NULL DEFAULT 0,"
        "  link TEXT NOT NULL DEFAULT '',"
        "  updated_us INTEGER NOT NULL) STRICT;",
        /* 3: the telemetry outbox (docs/mqtt.md); ids are allocated by outbox.c. */
        "CREATE TABLE outbox ("
        "  id INTEGER PRIMARY KEY,"
        "  device TEXT NOT NULL,"
        "  stream INTEGER NOT NULL,"
        "  seq INTEGER NOT NULL,"
        "  ts_ms INTEGER NOT NULL,"
        "  payload BLOB NOT NULL) STRICT;",
        /* 4: OTA (docs/ota.md): the image cache with its persisted block bitmaps, jobs and the
         * per-device transfers (offset for resumption). */
        "CREATE TABLE ota_images ("
        "  key TEXT PRIMARY KEY,"
        "  size INTEGER NOT NULL,"
        "  block_size INTEGER NOT NULL,"
        "  bitmap BLOB NOT NULL,"
        "  complete INTEGER NOT NULL DEFAULT 0,"
        "  sha256 TEXT NOT NULL DEFAULT '',"
        "  last_used_us INTEGER NOT NULL) STRICT;"
        "CREATE TABLE ota_jobs ("
        "  id TEXT PRIMARY KEY,"
        "  source TEXT NOT NULL,"
        "  image TEXT NOT NULL,"
        "  state TEXT NOT NULL,"
        "  reason TEXT NOT NULL DEFAULT '',"
        "  doc TEXT NOT NULL DEFAULT '{}',"
        "  created_us INTEGER NOT NULL,"
        "  updated_us INTEGER NOT NULL) STRICT;"
        "CREATE TABLE ota_transfers ("
        "  job TEXT NOT NULL,"
        "  device TEXT NOT NULL,"
        "  state TEXT NOT NULL,"
        "  offset INTEGER NOT NULL DEFAULT 0,"
        "  failures INTEGER NOT NULL DEFAULT 0,"
        "  reason TEXT NOT NULL DEFAULT '',"
        "  updated_us INTEGER NOT NULL,"
        "  PRIMARY KEY (job, device)) STRICT;",
        /* 5: audit retention (docs/audit.md): rows may be deleted only up to the newest
         * audit.checkpoint record's pruned_through, which carries the chain hash there. */
        "CREATE INDEX audit_checkpoints ON audit (seq) WHERE event = 'audit.checkpoint';"
        "DROP TRIGGER audit_no_delete;"
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        "  WHEN OLD.seq > (SELECT COALESCE(MAX(json_extract(details, '$.pruned_through')), 0)"
        "                  FROM audit WHERE event = 'audit.checkpoint')"
        "  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;",
};

int db_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE: return 0;
        case SQLITE_NOMEM: return -ENOMEM;
        case SQLITE_FULL: return -ENOSPC;
        case SQLITE_READONLY: return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH: return -EACCES;
        case SQLITE_BUSY:
        case SQLITE_LOCKED: return -EBUSY;
        case SQLITE_CONSTRAINT: return -EEXIST;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB: return -EBADMSG;
        case SQLITE_CANTOPEN: return -ENOENT;
        case SQLITE_TOOBIG: return -E2BIG;
        case SQLITE_MISUSE:
        case SQLITE_RANGE: return -EINVAL;
        default: return -EIO;
        }
}

sqlite3 *db_handle(struct db *db)
{
        return db->h;
}

uint64_t db_commits(const struct db *db)
{
        return db->commits;
}

uint64_t db_failed_commits(const struct db *db)
{
        return db->failed_commits;
}

bool db_failing(const struct db *db)
{
        return db->fail_log.run > 0;
}

int db_prepare(struct db *db, const char *sql, sqlite3_stmt **ret)
{
        sqlite3_stmt *s, **n;
        int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
        if (rc != SQLITE_OK)
                return log_error_errno(db_errno(rc), "database: cannot prepare '%s': %s", sql,
                                       sqlite3_errmsg(db->h));
        n = realloc(db->stmts, (db->n_stmts + 1) * sizeof *n);
        if (!n) {
                sqlite3_finalize(s);
                return -ENOMEM;
        }
        db->stmts = n;
        db->stmts[db->n_stmts++] = s;
        *ret = s;
        return 0;
}

static int db_step_reset(struct db *db, sqlite3_stmt *s)
{
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_errno(rc);
}

static void db_timer_cb(uv_timer_t *t)
{
        /* db_commit logged a failure (rate-limited). */
        db_commit(t->data);
}

/* SQLite rolls a transaction back by itself after some errors of a statement in it (SQLITE_FULL,
 * SQLITE_IOERR, SQLITE_NOMEM: "the transaction may or may not be rolled back automatically");
 * statements after that would run in autocommit mode, outside any group commit. */
static bool txn_lost(struct db *db)
{
        return db->in_txn && sqlite3_get_autocommit(db->h);
}

/* The open transaction is gone: log (rate-limited), roll back what SQLite still holds, and let
 * the modules bring what they keep in memory back in line with what is committed. */
static void txn_failed(struct db *db, int r, const char *what)
{
        uint64_t held;

        db->failed_commits++;
        if (ratelimit_run_error(&db->fail_log, now_monotonic_msec(), &held)) {
                if (db->fail_log.run == 1)
                        log_error_errno(r, "database: %s: %s; what it carried was rolled back",
                                        what, sqlite3_errmsg(db->h));
                else
                        log_error_errno(
                                r,
                                "database: commits keep failing: %llu failed in %llu s "
                                "(%llu since the last message), now: %s",
                                (unsigned long long)db->fail_log.run,
                                (unsigned long long)(db->fail_log.last_ms - db->fail_log.first_ms) /
                                        1000,
                                (unsigned long long)held + 1, sqlite3_errmsg(db->h));
        }
        if (!sqlite3_get_autocommit(db->h))
                db_step_reset(db, db->rollback);
        db->in_txn = false;
        for (size_t i = 0; i < db->n_rollback_hooks; i++)
                db->rollback_hooks[i].fn(db->rollback_hooks[i].userdata);
}

bool db_check_txn(struct db *db)
{
        if (!txn_lost(db))
                return false;
        /* Its waiters learn it at the next db_commit, not from inside whatever write noticed. */
        if (!db->n_lost_waiters) {
                free(db->lost_waiters);
                db->lost_waiters = db->waiters;
                db->n_lost_waiters = db->n_waiters;
                db->waiters = NULL;
                db->cap_waiters = 0;
        } else
                for (size_t i = 0; i < db->n_waiters; i++) {
                        struct db_waiter *n =
                                realloc(db->lost_waiters, (db->n_lost_waiters + 1) * sizeof *n);
                        if (!n) {
                                db->waiters[i].cb(db->waiters[i].userdata, -EIO);
                                continue;
                        }
                        db->lost_waiters = n;
                        db->lost_waiters[db->n_lost_waiters++] = db->waiters[i];
                }
        db->n_waiters = 0;
        txn_failed(db, -EIO, "a statement failed and SQLite rolled the transaction back");
        db->commits++;
        if (db->have_timer && !uv_is_active((uv_handle_t *)&db->timer))
                uv_timer_start(&db->timer, db_timer_cb, (db->interval_usec + 999) / 1000, 0);
        return true;
}

int db_write_begin(struct db *db)
{
        int r;
        db_check_txn(db);
        if (db->in_txn)
                return 0;
        r = db_step_reset(db, db->begin);
        if (r < 0)
                return log_error_errno(r, "database: BEGIN failed: %s", sqlite3_errmsg(db->h));
        db->in_txn = true;
        if (db->have_timer && !uv_is_active((uv_handle_t *)&db->timer))
                uv_timer_start(&db->timer, db_timer_cb, (db->interval_usec + 999) / 1000, 0);
        return 0;
}

int db_commit(struct db *db)
{
        struct db_waiter *w, *lost;
        size_t n, n_lost;
        int r = 0;

        if (db->have_timer)
                uv_timer_stop(&db->timer);
        if (db->in_txn) {
                uint64_t run, ms;
                r = txn_lost(db) ? -EIO : 0;
                for (size_t i = 0; i < db->n_hooks && r >= 0; i++) {
                        r = db->hooks[i].fn(db->hooks[i].userdata);
                        if (r >= 0 && txn_lost(db))
                                r = -EIO;
                }
                if (r >= 0)
                        r = db_step_reset(db, db->commit);
                if (r < 0)
                        txn_failed(db, r, "commit failed");
                else {
                        db->in_txn = false;
                        if (ratelimit_run_ok(&db->fail_log, now_monotonic_msec(), &run, &ms))
                                log_notice("database: commits succeed again, after %llu failed "
                                           "in %llu.%01llu s",
                                           (unsigned long long)run, (unsigned long long)ms / 1000,
                                           (unsigned long long)ms % 1000 / 100);
                        for (size_t i = 0; i < db->n_postcommit_hooks; i++)
                                db->postcommit_hooks[i].fn(db->postcommit_hooks[i].userdata);
                }
                db->commits++;
        }

        /* Callbacks may queue new waiters; run only the ones that were waiting for this commit
         * (and those of a transaction SQLite rolled back, which failed). */
        lost = db->lost_waiters;
        n_lost = db->n_lost_waiters;
        db->lost_waiters = NULL;
        db->n_lost_waiters = 0;
        w = db->waiters;
        n = db->n_waiters;
        db->waiters = NULL;
        db->n_waiters = db->cap_waiters = 0;
        for (size_t i = 0; i < n_lost; i++)
                lost[i].cb(lost[i].userdata, -EIO);
        free(lost);
        for (size_t i = 0; i < n; i++)
                w[i].cb(w[i].userdata, r);
        free(w);
        return r;
}

int db_on_commit(struct db *db, db_commit_cb cb, void *userdata)
{
        if (db->n_waiters == db->cap_waiters) {
                size_t cap = db->cap_waiters ? db->cap_waiters * 2 : 16;
                struct db_waiter *n = realloc(db->waiters, cap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                db->waiters = n;
                db->cap_waiters = cap;
        }
        db->waiters[db->n_waiters++] = (struct db_waiter){ cb, userdata };
        if (db->have_timer && !uv_is_active((uv_handle_t *)&db->timer))
                uv_timer_start(&db->timer, db_timer_cb, (db->interval_usec + 999) / 1000, 0);
        return 0;
}

int db_add_precommit(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        struct db_hook *n = realloc(db->hooks, (db->n_hooks + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        db->hooks = n;
        db->hooks[db->n_hooks++] = (struct db_hook){ fn, userdata };
        return 0;
}

void db_remove_precommit(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        for (size_t i = 0; i < db->n_hooks; i++)
                if (db->hooks[i].fn == fn && db->hooks[i].userdata == userdata) {
                        memmove(&db->hooks[i], &db->hooks[i + 1],
                                (db->n_hooks - i - 1) * sizeof db->hooks[0]);
                        db->n_hooks--;
                        return;
                }
}

static int hook_add(struct db_hook **hooks, size_t *n_hooks, int (*fn)(void *), void *userdata)
{
        struct db_hook *n = realloc(*hooks, (*n_hooks + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        *hooks = n;
        n[(*n_hooks)++] = (struct db_hook){ fn, userdata };
        return 0;
}

static void hook_remove(struct db_hook *hooks, size_t *n_hooks, int (*fn)(void *), void *userdata)
{
        for (size_t i = 0; i < *n_hooks; i++)
                if (hooks[i].fn == fn && hooks[i].userdata == userdata) {
                        memmove(&hooks[i], &hooks[i + 1], (*n_hooks - i - 1) * sizeof hooks[0]);
                        (*n_hooks)--;
                        return;
                }
}

int db_add_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        return hook_add(&db->postcommit_hooks, &db->n_postcommit_hooks, fn, userdata);
}

void db_remove_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        hook_remove(db->postcommit_hooks, &db->n_postcommit_hooks, fn, userdata);
}

int db_add_rollback(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        return hook_add(&db->rollback_hooks, &db->n_rollback_hooks, fn, userdata);
}

void db_remove_rollback(struct db *db, int (*fn)(void *userdata), void *userdata)
{
        hook_remove(db->rollback_hooks, &db->n_rollback_hooks, fn, userdata);
}

void db_set_commit_interval(struct db *db, uint64_t usec)
{
        db->interval_usec = usec;
}

static int db_exec(struct db *db, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(db->h, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                int r = log_error_errno(db_errno(rc), "database: '%.60s…' failed: %s", sql,
                                        msg ? msg : sqlite3_errstr(rc));
                sqlite3_free(msg);
                return r;
        }
        return 0;
}

static int db_migrate(struct db *db)
{
        sqlite3_stmt *s;
        int version, r;

        if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
        sqlite3_finalize(s);
        if (version < 0)
                return -EIO;
        if (version > (int)ELEMENTSOF(migrations))
                return log_error_errno(-EPROTO,
                                       "database: schema version %d is newer than this daemon "
                                       "knows (%zu); refusing to touch it",
                                       version, ELEMENTSOF(migrations));

        for (int v = version; v < (int)ELEMENTSOF(migrations); v++) {
                char bump[64];
                snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
                r = db_exec(db, "BEGIN IMMEDIATE");
                if (r >= 0)
                        r = db_exec(db, migrations[v]);
                if (r >= 0)
                        r = db_exec(db, bump);
                if (r >= 0)
                        r = db_exec(db, "COMMIT");
                if (r < 0) {
                        db_exec(db, "ROLLBACK");
                        return log_error_errno(r, "database: migration to version %d failed",
                                               v + 1);
                }
                log_info("database: migrated schema to version %d", v + 1);
        }
        return 0;
}

static void db_free(struct db *db)
{
        for (size_t i = 0; i < db->n_stmts; i++)
                sqlite3_finalize(db->stmts[i]);
        free(db->stmts);
        if (db->h)
                sqlite3_close(db->h);
        free(db->waiters);
        free(db->lost_waiters);
        free(db->hooks);
        free(db->rollback_hooks);
        free(db->postcommit_hooks);
        free(db);
}

static void db_timer_closed(uv_handle_t *h)
{
        db_free(h->data);
}

void db_close(struct db *db)
{
        if (!db)
                return;
        db_commit(db);
        if (db->have_timer)
                uv_close((uv_handle_t *)&db->timer, db_timer_closed);
        else
                db_free(db);
}

int db_open(uv_loop_t *loop, const char *path, int synchronous, uint64_t commit_interval_usec,
            struct db **ret)
{
        static const char *const sync_sql[] = {
                [DB_SYNC_OFF] = "PRAGMA synchronous = OFF",
                [DB_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
                [DB_SYNC_FULL] = "PRAGMA synchronous = FULL",
                [DB_SYNC_EXTRA] = "PRAGMA synchronous = EXTRA",
        };
        struct db *db = calloc(1, sizeof *db);
        int rc, r;

        if (!db)
                return -ENOMEM;
        db->interval_usec = commit_interval_usec;
        db->fail_log.interval_ms = DB_FAIL_LOG_INTERVAL_MS;
        rc = sqlite3_open_v2(path, &db->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                     SQLITE_OPEN_NOFOLLOW,
                             NULL);
        if (rc != SQLITE_OK) {
                r = log_error_errno(db_errno(rc), "database %s: cannot open: %s", path,
                                    db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
                goto fail;
        }
        sqlite3_extended_result_codes(db->h, 1);
        sqlite3_busy_timeout(db->h, 5000);

        if (synchronous < 0 || synchronous >= (int)ELEMENTSOF(sync_sql))
                synchronous = DB_SYNC_FULL;
        if ((r = db_exec(db, "PRAGMA journal_mode = WAL")) < 0 ||
            (r = db_exec(db, sync_sql[synchronous])) < 0 ||
            (r = db_exec(db, "PRAGMA foreign_keys = ON")) < 0 ||
            (r = db_exec(db, "PRAGMA secure_delete = ON")) < 0 || (r = db_migrate(db)) < 0)
                goto fail;

        if ((r = db_prepare(db, "BEGIN IMMEDIATE", &db->begin)) < 0 ||
            (r = db_prepare(db, "COMMIT", &db->commit)) < 0 ||
            (r = db_prepare(db, "ROLLBACK", &db->rollback)) < 0)
                goto fail;

        if (loop) {
                uv_timer_init(loop, &db->timer);
                db->timer.data = db;
                db->have_timer = true;
        }
        *ret = db;
        return 0;
fail:
        db_free(db);
        return r;
}

int db_config_parse_synchronous(const char *v, void *field, const char **reason)
{
        static const char *const names[] = { "off", "normal", "full", "extra" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(v, names[i]) == 0) {
                        *(int *)field = (int)i;
                        return 0;
                }
        *reason = "expected off, normal, full or extra";
        return -EINVAL;
}
