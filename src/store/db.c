/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/db.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/ratelimit.h"
#include "basic/time-util.h"

/* At most one line per this while commits keep failing (a full disk fails every one). */
#define DB_FAIL_LOG_INTERVAL_MS 10000
/* Commits written but not yet synced, at most (docs/outbox.md): past this the open transaction
 * takes everything new until the syncer catches up, so a slow disk gets bigger groups, not more
 * of them. */
#define DB_UNSYNCED_COMMITS_MAX 4
/* WAL pages after which the syncer checkpoints (SQLite's own default for autocheckpoint). */
#define DB_CHECKPOINT_PAGES 1000
/* WAL pages past which the loop checkpoints itself once, right after a COMMIT (see
 * wal_restart()): about 4 MiB of 4 KiB pages, where SQLite's own autocheckpoint would start the
 * WAL over. The WAL shares the disk with the outbox: at 16 MiB it filled an 8 MiB file system
 * (test-outbox-diskfull) that the outbox's rows alone fit in. */
#define DB_WAL_RESTART_PAGES DB_CHECKPOINT_PAGES
/* Waiters (messages not acked yet) in the open transaction and waiting for the syncer, at most:
 * past this db_on_commit refuses (-ENOBUFS) and the link answers RETRY. 16 bytes each. */
#define DB_WAITERS_MAX 65536

/* Page cache per connection: SQLite's default (2 MiB) would grow each connection's share of
 * RssAnon for as long as the outbox moves through new pages, up to 4 MiB more than the daemon
 * needs. The outbox is written at its tail and read and deleted at its head, the registry is
 * small: 512 KiB holds their working set, and a miss costs a read from the kernel's page cache. */
#define DB_CACHE_SQL "PRAGMA cache_size = -512"

static const char *const sync_sql[] = {
        [DB_SYNC_OFF] = "PRAGMA synchronous = OFF",
        [DB_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
        [DB_SYNC_FULL] = "PRAGMA synchronous = FULL",
        [DB_SYNC_EXTRA] = "PRAGMA synchronous = EXTRA",
};

struct db_waiter {
        db_commit_cb cb;
        void *userdata;
};

/* Waiters released together once the syncer reports `gen` durable; status < 0: the commit
 * itself failed (they are still told in order, after the waiters of earlier commits). */
struct db_batch {
        uint64_t gen;
        int status;
        struct db_waiter *w;
        size_t n;
};

/* The syncer thread (docs/outbox.md). Everything here is under `mu`. */
struct db_syncer {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cond;       /* to the thread: work; from it: a sync finished */
        uint64_t want_gen;         /* commits the loop wants durable, up to this one */
        uint64_t done_gen;         /* synced up to here (successfully or not) */
        uint64_t fail_lo, fail_hi; /* commits whose sync failed (fail_err), until the loop reads */
        int fail_err;
        int ckpt_err; /* a checkpoint failed; the loop logs it */
        bool ckpt_wanted, stop;
        uint64_t syncs, checkpoints;
        /* The thread's own: */
        sqlite3 *ck; /* its connection, for checkpoints */
        int wal_fd;
        char *wal_path, *dir_path;
        int (*sync_fn)(int fd); /* fdatasync; tests put a stall here */
        bool inited;
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

        /* With a loop: commits are written on it, synced by the syncer thread. */
        bool threaded;
        int synchronous;  /* enum db_sync, as configured */
        uv_async_t async; /* the syncer finished a sync or a checkpoint */
        unsigned open_handles;
        uint64_t gen;             /* commits written (successful ones) */
        struct db_batch *batches; /* waiting for the syncer, in commit order */
        size_t n_batches, cap_batches;
        size_t n_unsynced;    /* waiters in those batches */
        int wal_pages;        /* frames in the WAL after the last commit (the WAL hook) */
        int ckpt_asked_pages; /* wal_pages when the syncer was last asked to checkpoint */
        uint64_t loop_checkpoints;
        uint64_t backlog_refused;
        struct ratelimit_run backlog_log;
        struct ratelimit_run sync_fail_log;
        struct db_syncer sy;
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

uint64_t db_syncs(struct db *db)
{
        uint64_t n;
        if (!db->sy.inited)
                return 0;
        pthread_mutex_lock(&db->sy.mu);
        n = db->sy.syncs;
        pthread_mutex_unlock(&db->sy.mu);
        return n;
}

uint64_t db_checkpoints(struct db *db)
{
        uint64_t n;
        if (!db->sy.inited)
                return 0;
        pthread_mutex_lock(&db->sy.mu);
        n = db->sy.checkpoints;
        pthread_mutex_unlock(&db->sy.mu);
        return n;
}

void db_set_sync_fn(struct db *db, int (*fn)(int fd))
{
        if (!db->sy.inited)
                return;
        pthread_mutex_lock(&db->sy.mu);
        db->sy.sync_fn = fn;
        pthread_mutex_unlock(&db->sy.mu);
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

static int commit_group(struct db *db, bool wait);
static int db_exec(struct db *db, const char *sql);

static void db_timer_cb(uv_timer_t *t)
{
        /* commit_group logged a failure (rate-limited). */
        commit_group(t->data, false);
}

static void timer_arm(struct db *db)
{
        if (db->have_timer && !uv_is_active((uv_handle_t *)&db->timer))
                uv_timer_start(&db->timer, db_timer_cb, (db->interval_usec + 999) / 1000, 0);
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
        timer_arm(db);
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
        timer_arm(db);
        return 0;
}

/* ---- the syncer ---------------------------------------------------------------------------- */

/* Acks wait for the syncer only where the configuration promises durability per commit. */
static bool waits_for_sync(const struct db *db)
{
        return db->threaded && db->synchronous >= DB_SYNC_FULL;
}

static int sync_fd(int fd)
{
        return fdatasync(fd) < 0 ? -errno : 0;
}

/* Make what the loop's connection wrote to the WAL durable. SQLite takes no locks on the -wal
 * file itself (WAL locks live in -shm), so a descriptor of our own is safe to open and close; the
 * database file is never opened here (closing a descriptor of it would drop SQLite's POSIX
 * locks). The WAL is re-opened if it was replaced. */
static int syncer_sync(struct db_syncer *sy, int (*sync_fn)(int fd))
{
        struct stat st, fst;

        if (stat(sy->wal_path, &st) < 0)
                /* No WAL: nothing was written since the last connection closed it. */
                return errno == ENOENT ? 0 : -errno;
        if (sy->wal_fd < 0 || fstat(sy->wal_fd, &fst) < 0 || fst.st_ino != st.st_ino ||
            fst.st_dev != st.st_dev) {
                int dfd;
                if (sy->wal_fd >= 0)
                        close(sy->wal_fd);
                sy->wal_fd = open(sy->wal_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (sy->wal_fd < 0)
                        return -errno;
                /* A new WAL file: its directory entry must be durable too. */
                dfd = open(sy->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                        int r = fsync(dfd) < 0 ? -errno : 0;
                        close(dfd);
                        if (r < 0)
                                return r;
                }
        }
        return sync_fn(sy->wal_fd);
}

/* The thread's own connection runs the checkpoints, at the configured synchronous level: it
 * syncs the WAL before copying it into the database and the database before the WAL may be
 * reused, as SQLite's own checkpoints would, but off the loop. PASSIVE never waits for the
 * loop's connection. */
static int syncer_checkpoint(struct db_syncer *sy)
{
        int rc = sqlite3_wal_checkpoint_v2(sy->ck, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return rc == SQLITE_BUSY ? 0 : db_errno(rc);
}

static void *syncer_main(void *userdata)
{
        struct db *db = userdata;
        struct db_syncer *sy = &db->sy;

        pthread_mutex_lock(&sy->mu);
        for (;;) {
                int (*sync_fn)(int fd);
                uint64_t target;
                bool need, ck;
                int r = 0, cr = 0;

                while (!sy->stop && sy->want_gen == sy->done_gen && !sy->ckpt_wanted)
                        pthread_cond_wait(&sy->cond, &sy->mu);
                if (sy->want_gen == sy->done_gen && (sy->stop || !sy->ckpt_wanted))
                        break;
                /* Everything written up to now goes into this one sync: while it runs, the loop
                 * writes the next commits, which the next sync takes all at once. */
                target = sy->want_gen;
                sync_fn = sy->sync_fn;
                need = target > sy->done_gen;
                ck = sy->ckpt_wanted && !sy->stop;
                sy->ckpt_wanted = false;
                pthread_mutex_unlock(&sy->mu);

                if (need)
                        r = syncer_sync(sy, sync_fn);
                if (ck)
                        cr = syncer_checkpoint(sy);

                pthread_mutex_lock(&sy->mu);
                if (need) {
                        if (r < 0) {
                                if (!sy->fail_hi)
                                        sy->fail_lo = sy->done_gen + 1;
                                sy->fail_hi = target;
                                sy->fail_err = r;
                        }
                        sy->done_gen = target;
                        sy->syncs++;
                }
                if (cr < 0)
                        sy->ckpt_err = cr;
                else if (ck)
                        sy->checkpoints++;
                pthread_cond_broadcast(&sy->cond);
                pthread_mutex_unlock(&sy->mu);
                uv_async_send(&db->async);
                pthread_mutex_lock(&sy->mu);
        }
        pthread_mutex_unlock(&sy->mu);
        return NULL;
}

static int wal_hook(void *userdata, sqlite3 *h, const char *name, int pages)
{
        struct db *db = userdata;
        (void)h;
        (void)name;
        /* Instead of SQLite's autocheckpoint, which would run on the loop (and here without
         * syncing: the loop's connection is at synchronous=OFF). */
        /* Once per DB_CHECKPOINT_PAGES new pages, not at every commit past it: each checkpoint
         * costs the syncer two syncs, and the acks wait behind them. */
        if (pages < db->wal_pages)
                db->ckpt_asked_pages = 0; /* the WAL started over */
        db->wal_pages = pages;
        if (pages - db->ckpt_asked_pages >= DB_CHECKPOINT_PAGES) {
                db->ckpt_asked_pages = pages;
                pthread_mutex_lock(&db->sy.mu);
                db->sy.ckpt_wanted = true;
                pthread_mutex_unlock(&db->sy.mu);
        }
        return SQLITE_OK;
}

/* The syncer's checkpoints copy the WAL into the database, but SQLite starts the WAL over only
 * when the writer begins a transaction while nothing is left to copy, and under steady load the
 * loop always has committed more by then: the WAL would grow without end. So once it is past
 * DB_WAL_RESTART_PAGES, the loop checkpoints itself right after a COMMIT (no transaction open) at
 * the configured level: SQLite syncs the WAL, copies what the syncer has not copied yet and
 * syncs the database; the next transaction starts the WAL over. This is the one place the loop
 * waits for the disk: two syncs once per ~4 MiB of WAL, and only under load that never pauses. */
static void wal_restart(struct db *db)
{
        int rc;

        if (db_exec(db, sync_sql[db->synchronous]) < 0)
                return;
        rc = sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc == SQLITE_OK) {
                db->loop_checkpoints++;
                db->wal_pages = db->ckpt_asked_pages = 0;
        } else if (rc != SQLITE_BUSY) /* BUSY: the syncer is checkpointing; next commit */
                log_warning("database: checkpoint failed: %s", sqlite3_errstr(rc));
        db_exec(db, sync_sql[DB_SYNC_OFF]);
}

/* Hand everything written so far to the syncer. */
static void syncer_kick(struct db *db)
{
        pthread_mutex_lock(&db->sy.mu);
        if (waits_for_sync(db))
                db->sy.want_gen = db->gen;
        else
                db->sy.done_gen = db->sy.want_gen = db->gen;
        if (db->sy.want_gen != db->sy.done_gen || db->sy.ckpt_wanted)
                pthread_cond_signal(&db->sy.cond);
        pthread_mutex_unlock(&db->sy.mu);
}

static void async_ref(struct db *db)
{
        /* The async handle keeps the loop alive only while waiters wait for it. */
        if (db->n_batches)
                uv_ref((uv_handle_t *)&db->async);
        else
                uv_unref((uv_handle_t *)&db->async);
}

/* Release the batches the syncer is done with, in commit order. */
static void release_synced(struct db *db)
{
        uint64_t done, lo, hi;
        int err, ckerr;

        pthread_mutex_lock(&db->sy.mu);
        done = db->sy.done_gen;
        lo = db->sy.fail_lo;
        hi = db->sy.fail_hi;
        err = db->sy.fail_err;
        ckerr = db->sy.ckpt_err;
        db->sy.ckpt_err = 0;
        if (hi && hi <= done)
                db->sy.fail_lo = db->sy.fail_hi = 0;
        pthread_mutex_unlock(&db->sy.mu);

        if (ckerr < 0)
                log_warning_errno(ckerr, "database: checkpoint failed: %m; the WAL grows until "
                                         "one succeeds");
        if (hi) {
                uint64_t held;
                if (ratelimit_run_error(&db->sync_fail_log, now_monotonic_msec(), &held))
                        log_error_errno(err,
                                        "database: syncing the WAL failed: %m; %llu failure(s) "
                                        "since the last message; the messages of those commits "
                                        "get no ack and are sent again",
                                        (unsigned long long)held + 1);
                db->failed_commits += hi - lo + 1;
        }

        while (db->n_batches && db->batches[0].gen <= done) {
                struct db_batch b = db->batches[0];
                int status = b.status < 0 ? b.status : hi && b.gen >= lo && b.gen <= hi ? err : 0;
                memmove(&db->batches[0], &db->batches[1],
                        (db->n_batches - 1) * sizeof db->batches[0]);
                db->n_batches--;
                db->n_unsynced -= b.n;
                for (size_t i = 0; i < b.n; i++)
                        b.w[i].cb(b.w[i].userdata, status);
                free(b.w);
        }
        async_ref(db);
}

static void async_cb(uv_async_t *a)
{
        struct db *db = a->data;
        release_synced(db);
        /* A commit held back for the backlog goes now, with all that came meanwhile. */
        if (db->in_txn && db->have_timer && !uv_is_active((uv_handle_t *)&db->timer))
                commit_group(db, false);
}

static int unsynced_commits(struct db *db)
{
        uint64_t done;
        pthread_mutex_lock(&db->sy.mu);
        done = db->sy.done_gen;
        pthread_mutex_unlock(&db->sy.mu);
        return (int)MIN(db->gen - done, (uint64_t)INT32_MAX);
}

static void wait_synced(struct db *db, uint64_t gen)
{
        pthread_mutex_lock(&db->sy.mu);
        while (db->sy.done_gen < gen)
                pthread_cond_wait(&db->sy.cond, &db->sy.mu);
        pthread_mutex_unlock(&db->sy.mu);
}

/* Waiters of a commit (or of a failed one: status < 0) are told in commit order, after the
 * syncer made the commit durable. Without memory for the batch, wait for it here. */
static void deliver(struct db *db, struct db_waiter *w, size_t n, int status)
{
        if (n && waits_for_sync(db)) {
                if (db->n_batches == db->cap_batches) {
                        size_t cap = db->cap_batches ? db->cap_batches * 2 : 8;
                        struct db_batch *nb = realloc(db->batches, cap * sizeof *nb);
                        if (nb) {
                                db->batches = nb;
                                db->cap_batches = cap;
                        }
                }
                if (db->n_batches < db->cap_batches) {
                        db->batches[db->n_batches++] = (struct db_batch){ db->gen, status, w, n };
                        db->n_unsynced += n;
                        async_ref(db);
                        return;
                }
                wait_synced(db, db->gen);
                if (status >= 0) {
                        pthread_mutex_lock(&db->sy.mu);
                        status = db->sy.fail_hi >= db->gen ? db->sy.fail_err : 0;
                        pthread_mutex_unlock(&db->sy.mu);
                }
                release_synced(db);
        }
        for (size_t i = 0; i < n; i++)
                w[i].cb(w[i].userdata, status);
        free(w);
}

/* ---- commits ------------------------------------------------------------------------------ */

/* COMMIT the open transaction; with the syncer this only writes the WAL (synchronous=OFF on
 * this connection) and the syncer makes it durable. wait: until it is (db_commit, db_close). */
static int commit_group(struct db *db, bool wait)
{
        struct db_waiter *w, *lost;
        size_t n, n_lost;
        int r = 0;

        if (db->have_timer)
                uv_timer_stop(&db->timer);
        if (!wait && db->threaded && db->in_txn && unsynced_commits(db) >= DB_UNSYNCED_COMMITS_MAX)
                /* The disk is behind: keep the transaction open and let it grow; the syncer's
                 * next completion commits it (async_cb). */
                return 0;
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
                        db->gen++;
                        if (ratelimit_run_ok(&db->fail_log, now_monotonic_msec(), &run, &ms))
                                log_notice("database: commits succeed again, after %llu failed "
                                           "in %llu.%01llu s",
                                           (unsigned long long)run, (unsigned long long)ms / 1000,
                                           (unsigned long long)ms % 1000 / 100);
                        for (size_t i = 0; i < db->n_postcommit_hooks; i++)
                                db->postcommit_hooks[i].fn(db->postcommit_hooks[i].userdata);
                        if (db->threaded && db->wal_pages >= DB_WAL_RESTART_PAGES)
                                wal_restart(db);
                }
                db->commits++;
        }
        if (db->threaded)
                syncer_kick(db);

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
        if (n_lost)
                deliver(db, lost, n_lost, -EIO);
        else
                free(lost);
        if (n)
                deliver(db, w, n, r);
        else
                free(w);
        /* Waiters of a failed commit with nothing before them unsynced go now: no sync may
         * come to release them (a full disk fails every commit). */
        if (db->n_batches)
                release_synced(db);
        if (wait && r >= 0 && waits_for_sync(db)) {
                wait_synced(db, db->gen);
                pthread_mutex_lock(&db->sy.mu);
                if (db->sy.fail_hi >= db->gen)
                        r = db->sy.fail_err;
                pthread_mutex_unlock(&db->sy.mu);
                release_synced(db);
        }
        return r;
}

int db_commit(struct db *db)
{
        return commit_group(db, true);
}

bool db_durable_later(const struct db *db)
{
        return waits_for_sync(db);
}

bool db_backlogged(const struct db *db)
{
        return db->n_waiters + db->n_unsynced >= DB_WAITERS_MAX;
}

int db_on_commit(struct db *db, db_commit_cb cb, void *userdata)
{
        if (db_backlogged(db)) {
                uint64_t held;
                db->backlog_refused++;
                if (ratelimit_run_error(&db->backlog_log, now_monotonic_msec(), &held))
                        log_warning("database: %zu writes wait for the disk; refusing more "
                                    "(%llu refused so far): the senders retry",
                                    db->n_waiters + db->n_unsynced,
                                    (unsigned long long)db->backlog_refused);
                return -ENOBUFS;
        }
        if (db->n_waiters == db->cap_waiters) {
                size_t cap = db->cap_waiters ? db->cap_waiters * 2 : 16;
                struct db_waiter *n = realloc(db->waiters, cap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                db->waiters = n;
                db->cap_waiters = cap;
        }
        db->waiters[db->n_waiters++] = (struct db_waiter){ cb, userdata };
        timer_arm(db);
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

/* Stop the syncer after it synced everything; its connection and descriptor go with it. */
static void syncer_stop(struct db *db)
{
        if (!db->threaded)
                return;
        pthread_mutex_lock(&db->sy.mu);
        db->sy.stop = true;
        pthread_cond_signal(&db->sy.cond);
        pthread_mutex_unlock(&db->sy.mu);
        pthread_join(db->sy.thread, NULL);
        db->threaded = false;
}

static void db_free(struct db *db)
{
        syncer_stop(db);
        free(db->batches);
        if (db->sy.ck)
                sqlite3_close(db->sy.ck);
        if (db->sy.wal_fd >= 0)
                close(db->sy.wal_fd);
        free(db->sy.wal_path);
        free(db->sy.dir_path);
        if (db->sy.inited) {
                pthread_mutex_destroy(&db->sy.mu);
                pthread_cond_destroy(&db->sy.cond);
        }
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

static void db_handle_closed(uv_handle_t *h)
{
        struct db *db = h->data;
        if (--db->open_handles == 0)
                db_free(db);
}

void db_close(struct db *db)
{
        if (!db)
                return;
        db_commit(db);
        if (db->threaded) {
                syncer_stop(db);
                release_synced(db);
                /* This connection closes last and checkpoints: at the configured level again,
                 * so that the checkpoint syncs as SQLite's own would. */
                db_exec(db, sync_sql[db->synchronous]);
        }
        if (db->have_timer) {
                db->open_handles = 2;
                uv_close((uv_handle_t *)&db->timer, db_handle_closed);
                uv_close((uv_handle_t *)&db->async, db_handle_closed);
        } else
                db_free(db);
}

/* With a loop, commits are synced and checkpointed by a thread of our own (docs/outbox.md). */
static int syncer_start(struct db *db, const char *path)
{
        const char *main_path = sqlite3_db_filename(db->h, "main");
        _cleanup_free_ char *dir = NULL;
        int rc, r;

        if (!main_path || !*main_path)
                return 0; /* an in-memory or temporary database: nothing to sync */
        pthread_mutex_init(&db->sy.mu, NULL);
        pthread_cond_init(&db->sy.cond, NULL);
        db->sy.inited = true;
        db->sy.sync_fn = sync_fd;
        if (!(db->sy.wal_path = strdup(sqlite3_filename_wal(main_path))) ||
            !(dir = strdup(main_path)) || !(db->sy.dir_path = strdup(dirname(dir))))
                return -ENOMEM;

        /* One connection per thread, each opened NOMUTEX: neither is ever used by two threads. */
        rc = sqlite3_open_v2(path, &db->sy.ck,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                             NULL);
        if (rc != SQLITE_OK)
                return log_error_errno(db_errno(rc),
                                       "database %s: cannot open a second connection for "
                                       "checkpoints: %s",
                                       path, sqlite3_errstr(rc));
        if (sqlite3_exec(db->sy.ck, sync_sql[db->synchronous], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db->sy.ck, "PRAGMA wal_autocheckpoint = 0", NULL, NULL, NULL) !=
                    SQLITE_OK ||
            sqlite3_exec(db->sy.ck, DB_CACHE_SQL, NULL, NULL, NULL) != SQLITE_OK)
                return log_error_errno(-EIO,
                                       "database %s: cannot set up the checkpoint connection: %s",
                                       path, sqlite3_errmsg(db->sy.ck));
        db->backlog_log.interval_ms = DB_FAIL_LOG_INTERVAL_MS;
        db->sync_fail_log.interval_ms = DB_FAIL_LOG_INTERVAL_MS;
        /* It waits for work, which only comes once the loop commits. */
        r = -pthread_create(&db->sy.thread, NULL, syncer_main, db);
        if (r < 0)
                return log_error_errno(r, "database: cannot start the syncer thread: %m");
        db->threaded = true;
        /* The loop's connection only writes the WAL; the syncer syncs it and checkpoints. */
        sqlite3_wal_hook(db->h, wal_hook, db);
        return db_exec(db, sync_sql[DB_SYNC_OFF]);
}

int db_open(uv_loop_t *loop, const char *path, int synchronous, uint64_t commit_interval_usec,
            struct db **ret)
{
        struct db *db = calloc(1, sizeof *db);
        int rc, r;

        if (!db)
                return -ENOMEM;
        db->sy.wal_fd = -1;
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
        db->synchronous = synchronous;
        if ((r = db_exec(db, "PRAGMA journal_mode = WAL")) < 0 ||
            (r = db_exec(db, sync_sql[synchronous])) < 0 || (r = db_exec(db, DB_CACHE_SQL)) < 0 ||
            (r = db_exec(db, "PRAGMA foreign_keys = ON")) < 0 ||
            (r = db_exec(db, "PRAGMA secure_delete = ON")) < 0 || (r = db_migrate(db)) < 0)
                goto fail;

        if ((r = db_prepare(db, "BEGIN IMMEDIATE", &db->begin)) < 0 ||
            (r = db_prepare(db, "COMMIT", &db->commit)) < 0 ||
            (r = db_prepare(db, "ROLLBACK", &db->rollback)) < 0)
                goto fail;

        if (loop) {
                if ((r = syncer_start(db, path)) < 0)
                        goto fail;
                uv_timer_init(loop, &db->timer);
                db->timer.data = db;
                uv_async_init(loop, &db->async, async_cb);
                db->async.data = db;
                uv_unref((uv_handle_t *)&db->async);
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
