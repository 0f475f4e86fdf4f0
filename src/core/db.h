/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

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
 * The schema is versioned with PRAGMA user_version and migrated forward at open.
 */

struct db;

typedef void (*db_commit_cb)(void *userdata, int status);

/* Open (creating if needed) the database at path. With a NULL loop nothing is committed
 * automatically: call db_commit(). synchronous is an enum conf_sync value. */
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
/* Commit now (if a transaction is open) and run the commit callbacks. */
int db_commit(struct db *db);
/* Call cb after the next commit (status 0 or -errno); cb runs even if nothing else is written. */
int db_on_commit(struct db *db, db_commit_cb cb, void *userdata);
/* Called just before every commit, inside the transaction. */
int db_add_precommit(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Undo db_add_precommit(); owners call it before they go away. */
void db_remove_precommit(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Called after every successful commit (the rows are in the database file or its WAL). */
int db_add_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata);
void db_remove_postcommit(struct db *db, int (*fn)(void *userdata), void *userdata);
/* Called after a failed commit was rolled back: what was written since the last commit is gone,
 * and whoever keeps a copy in memory (the audit chain head, the registry) must resync. */
int db_add_rollback(struct db *db, int (*fn)(void *userdata), void *userdata);
void db_remove_rollback(struct db *db, int (*fn)(void *userdata), void *userdata);

/* Pending statements in the open transaction; number of commits so far. */
uint64_t db_commits(const struct db *db);

/* Map an SQLite result code to -errno. */
int db_errno(int rc);
