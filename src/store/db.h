/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sqlite3.h>
#include <uv.h>

/*
 * The state database: one SQLite file in WAL mode with an explicit synchronous level. Writers add
 * their rows inside a transaction that stays open for up to CommitInterval and is then committed
 * in one go (group commit): one fsync for many records, never one per record. Code that must not
 * act before its rows are durable (the outbox acks, for example) asks to be called back after
 * the commit with db_on_commit().
 *
 * A commit that fails (disk full, I/O error) is rolled back: every write since the last commit is
 * gone, the commit callbacks get the error (nothing in it may be acknowledged), and the rollback
 * hooks tell the modules that keep copies in memory to fall back to what is committed. The same
 * happens when SQLite rolls the transaction back by itself after a failed statement (it may, for
 * SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM): the next db_write_begin() or db_commit() notices,
 * runs the rollback hooks at once, and the waiters of that transaction get -EIO at the next
 * db_commit(). Failures are logged rate-limited: the first at once, then one line per 10 s with
 * the count, and one when commits succeed again.
 *
 * With a loop, the disk is never waited for on it (docs/outbox.md): COMMIT only writes the WAL
 * (this connection runs at synchronous=OFF), and a syncer thread fdatasyncs the WAL and runs the
 * checkpoints on a connection of its own at the configured level. At Synchronous=full or extra
 * the commit callbacks run, in commit order, only after the sync that made their commit durable;
 * one sync takes every commit written while the previous one ran, so a slow disk makes bigger
 * groups. At most DB_UNSYNCED_COMMITS_MAX commits wait for the syncer (then the open transaction
 * grows instead), and at most DB_WAITERS_MAX callbacks (then db_on_commit refuses: -ENOBUFS).
 * db_commit() still returns only when its commit is durable: it waits for the syncer.
 *
 * The schema is versioned with PRAGMA user_version and migrated forward at open.
 */

/* [Database] in the configuration. */
enum db_sync {
        DB_SYNC_OFF,
        DB_SYNC_NORMAL,
        DB_SYNC_FULL,
        DB_SYNC_EXTRA,
};

struct db_options {
        int synchronous; /* enum db_sync */
        uint64_t commit_interval_usec;
};

/* Synchronous= off|normal|full|extra (config_parser_t, field: int). */
int db_config_parse_synchronous(const char *v, void *field, const char **reason);

struct db;

typedef void (*db_commit_cb)(void *userdata, int status);

/* Open (creating if needed) the database at path. With a NULL loop nothing is committed
 * automatically: call db_commit(). synchronous is an enum db_sync value. */
int db_open(uv_loop_t *loop, const char *path, int synchronous, uint64_t commit_interval_usec,
            struct db **ret);
/* Commit what is pending and close; closes the timer handle, frees in its close callback. */
void db_close(struct db *db);
void db_set_commit_interval(struct db *db, uint64_t usec);

sqlite3 *db_handle(struct db *db);

/* Prepare a statement that lives as long as the database (finalised by db_close). */
int db_prepare(struct db *db, const char *sql, sqlite3_stmt **ret);

/* Make sure a write transaction is open and the commit timer armed. */
int db_write_begin(struct db *db);
/* After a statement failed: if SQLite rolled the open transaction back by itself, handle that
 * now (rollback hooks; its waiters fail at the next db_commit) and return true. */
bool db_check_txn(struct db *db);
/* Commit now (if a transaction is open), wait until it is durable (blocking: for rare
 * operations and shutdown; the group commit runs on the timer) and run the commit callbacks. */
int db_commit(struct db *db);
/* Call cb after the next commit is durable (status 0 or -errno: then what was written before it
 * may not be in the database); cb runs even if nothing else is written. -ENOBUFS when
 * db_backlogged(). */
int db_on_commit(struct db *db, db_commit_cb cb, void *userdata);
/* Whether commits become durable after COMMIT returns, by the syncer thread (a loop and
 * Synchronous=full or extra): whoever writes something that must not run ahead of the database
 * waits for db_on_commit() then. */
bool db_durable_later(const struct db *db);
/* Too many callbacks wait for the disk: new writes that need one should be refused. */
bool db_backlogged(const struct db *db);
/* Called just before every commit, inside the transaction. */
int db_add_precommit(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Undo db_add_precommit(); owners call it before they go away. */
void db_remove_precommit(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Called after a failed commit was rolled back: what was written since the last commit is gone,
 * and whoever keeps a copy in memory (the audit chain head, the registry) must resync. */
int db_add_rollback(struct db *db, int (*fn)(void *userdata), void *userdata);
void db_remove_rollback(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Called after every successful commit, before the commit callbacks: what was written is now
 * durable (modules that keep committed figures promote theirs). */
int db_add_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata);
void db_remove_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata);

/* Number of commits (attempted) so far; of them failed; whether the last one failed. */
uint64_t db_commits(const struct db *db);
uint64_t db_failed_commits(const struct db *db);
bool db_failing(const struct db *db);
/* WAL syncs and checkpoints the syncer thread has done (0 without a loop). */
uint64_t db_syncs(struct db *db);
uint64_t db_checkpoints(struct db *db);
/* Tests: what the syncer calls instead of fdatasync(fd) (0 or -errno); call before any commit. */
void db_set_sync_fn(struct db *db, int (*fn)(int fd));

/* Map an SQLite result code to -errno. */
int db_errno(int rc);
