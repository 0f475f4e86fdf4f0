/* SPDX-License-Identifier: Apache-2.0 */
/* The group commit with the syncer thread (store/db.h, docs/outbox.md): the loop goes on while a
 * sync is stalled, callbacks run only after the sync that made their commit durable and in
 * commit order, a failed sync fails them, a slow disk makes bigger groups (not more commits),
 * the backlog is bounded, and the syncer checkpoints. The stall is a sync function of the test
 * that waits for the test to let it go. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "basic/macro.h"
#include "store/db.h"

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned gate_entered; /* syncs that reached the gate */
static int gate_result;

static int gated_sync(int fd)
{
        int r;
        pthread_mutex_lock(&gate_mu);
        gate_entered++;
        pthread_cond_broadcast(&gate_cond);
        while (!gate_open)
                pthread_cond_wait(&gate_cond, &gate_mu);
        r = gate_result;
        pthread_mutex_unlock(&gate_mu);
        return r < 0 ? r : (fdatasync(fd) < 0 ? -errno : 0);
}

static void gate_set(bool open, int result)
{
        pthread_mutex_lock(&gate_mu);
        gate_open = open;
        gate_result = result;
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_mu);
}

static unsigned gate_count(void)
{
        unsigned n;
        pthread_mutex_lock(&gate_mu);
        n = gate_entered;
        pthread_mutex_unlock(&gate_mu);
        return n;
}

struct fixture {
        char dir[64];
        char path[128];
        uv_loop_t loop;
        struct db *db;
        sqlite3_stmt *ins;
        /* Callbacks, in the order they ran. */
        int order[4096];
        int status[4096];
        size_t n_done;
        unsigned ticks;
        uv_timer_t ticker;
};

struct waiter {
        struct fixture *f;
        int n;
};

static void on_durable(void *ud, int status)
{
        struct waiter *w = ud;
        struct fixture *f = w->f;
        assert_true(f->n_done < ELEMENTSOF(f->order));
        f->order[f->n_done] = w->n;
        f->status[f->n_done] = status;
        f->n_done++;
        free(w);
}

static void write_one(struct fixture *f, int n)
{
        struct waiter *w = malloc(sizeof *w);
        assert_non_null(w);
        *w = (struct waiter){ f, n };
        assert_int_equal(db_write_begin(f->db), 0);
        sqlite3_bind_int(f->ins, 1, n);
        assert_int_equal(sqlite3_step(f->ins), SQLITE_DONE);
        sqlite3_reset(f->ins);
        assert_int_equal(db_on_commit(f->db, on_durable, w), 0);
}

static void on_tick(uv_timer_t *t)
{
        struct fixture *f = t->data;
        f->ticks++;
}

/* Run the loop until pred holds (or fail after ~10 s). */
static void run_until(struct fixture *f, bool (*pred)(struct fixture *f))
{
        for (int i = 0; i < 10000 && !pred(f); i++) {
                uv_run(&f->loop, UV_RUN_NOWAIT);
                usleep(1000);
        }
        assert_true(pred(f));
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-db-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
        assert_int_equal(uv_loop_init(&f->loop), 0);
        assert_int_equal(db_open(&f->loop, f->path, DB_SYNC_FULL, 1000, &f->db), 0);
        assert_int_equal(sqlite3_exec(db_handle(f->db),
                                      "CREATE TABLE t (n INTEGER NOT NULL, pad BLOB)", NULL, NULL,
                                      NULL),
                         SQLITE_OK);
        assert_int_equal(db_prepare(f->db, "INSERT INTO t (n) VALUES (?)", &f->ins), 0);
        uv_timer_init(&f->loop, &f->ticker);
        f->ticker.data = f;
        uv_timer_start(&f->ticker, on_tick, 1, 1);
        gate_set(true, 0);
        gate_entered = 0;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];
        gate_set(true, 0);
        uv_close((uv_handle_t *)&f->ticker, NULL);
        db_close(f->db);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&f->loop), 0);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        free(f);
        return system(cmd);
}

static bool stalled(struct fixture *f)
{
        (void)f;
        return gate_count() > 0;
}

static bool ticked_20(struct fixture *f)
{
        return f->ticks >= 20;
}

static bool got_1(struct fixture *f)
{
        return f->n_done >= 1;
}

static bool got_all_300(struct fixture *f)
{
        return f->n_done >= 300;
}

/* While the sync of a commit is stalled the loop runs timers, and the waiter is not told;
 * it is once the sync is through. */
static void test_stalled_sync_loop_runs(void **state)
{
        struct fixture *f = *state;
        uint64_t commits;

        db_set_sync_fn(f->db, gated_sync);
        gate_set(false, 0);
        write_one(f, 1);
        run_until(f, stalled);
        commits = db_commits(f->db);
        assert_true(commits >= 1);
        f->ticks = 0;
        run_until(f, ticked_20); /* the loop goes on */
        assert_int_equal(f->n_done, 0);
        gate_set(true, 0);
        run_until(f, got_1);
        assert_int_equal(f->order[0], 1);
        assert_int_equal(f->status[0], 0);
        assert_true(db_syncs(f->db) >= 1);
}

/* A slow disk: commits written while a sync is stalled are bounded, the transaction grows
 * instead, and everything is told in order once the disk catches up, in fewer syncs than
 * messages. */
static void test_groups_grow_bounded_in_order(void **state)
{
        struct fixture *f = *state;
        uint64_t c0, syncs0;

        db_set_sync_fn(f->db, gated_sync);
        gate_set(false, 0);
        c0 = db_commits(f->db);
        syncs0 = db_syncs(f->db);
        for (int i = 0; i < 300; i++) {
                write_one(f, i);
                for (int k = 0; k < 3; k++) { /* a few commit intervals pass */
                        uv_run(&f->loop, UV_RUN_NOWAIT);
                        usleep(500);
                }
        }
        assert_true(gate_count() > 0);
        assert_int_equal(f->n_done, 0);
        /* The one being synced, and at most DB_UNSYNCED_COMMITS_MAX (4) written behind it. */
        assert_in_range(db_commits(f->db) - c0, 1, 5);
        gate_set(true, 0);
        run_until(f, got_all_300);
        for (int i = 0; i < 300; i++) {
                assert_int_equal(f->order[i], i);
                assert_int_equal(f->status[i], 0);
        }
        assert_true(db_syncs(f->db) - syncs0 < 300 / 10);
}

/* A failed sync fails the waiters of the commits it carried. */
static void test_failed_sync(void **state)
{
        struct fixture *f = *state;

        db_set_sync_fn(f->db, gated_sync);
        gate_set(true, -EIO);
        write_one(f, 7);
        run_until(f, got_1);
        assert_int_equal(f->order[0], 7);
        assert_int_equal(f->status[0], -EIO);
        /* And the next one, on a good disk, succeeds. */
        gate_set(true, 0);
        write_one(f, 8);
        f->n_done = 0;
        run_until(f, got_1);
        assert_int_equal(f->order[0], 8);
        assert_int_equal(f->status[0], 0);
}

/* db_commit() returns only when its commit is durable, and tells the waiters. */
static void test_explicit_commit_waits(void **state)
{
        struct fixture *f = *state;

        write_one(f, 3);
        assert_int_equal(db_commit(f->db), 0);
        assert_int_equal(f->n_done, 1);
        assert_int_equal(f->order[0], 3);
        assert_int_equal(f->status[0], 0);
}

static bool checkpointed(struct fixture *f)
{
        return db_checkpoints(f->db) >= 1;
}

/* The syncer checkpoints once the WAL is large; the rows are in the database file after. */
static void test_checkpoint_off_loop(void **state)
{
        struct fixture *f = *state;
        sqlite3_stmt *big;
        uint8_t pad[16384] = { 0 };

        assert_int_equal(db_prepare(f->db, "INSERT INTO t (n, pad) VALUES (0, ?)", &big), 0);
        for (int i = 0; i < 400; i++) { /* ~1,600 pages of 4 KiB */
                assert_int_equal(db_write_begin(f->db), 0);
                sqlite3_bind_blob(big, 1, pad, sizeof pad, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(big), SQLITE_DONE);
                sqlite3_reset(big);
                if (i % 50 == 49)
                        assert_int_equal(db_commit(f->db), 0);
        }
        assert_int_equal(db_commit(f->db), 0);
        run_until(f, checkpointed);
}

/* Under load that never pauses (a transaction open again right after each commit) the WAL does
 * not grow without end: past ~4 MiB the loop checkpoints once and SQLite starts it over. (Its
 * size is then ~4 MiB plus the group being committed, which a slow disk makes large: the bound
 * checked is loose, but 64 MiB written never make a 64 MiB WAL.) */
static void test_wal_bounded_under_load(void **state)
{
        struct fixture *f = *state;
        sqlite3_stmt *big;
        static uint8_t pad[16384];
        char wal[160];
        struct stat st;

        assert_int_equal(db_prepare(f->db, "INSERT INTO t (n, pad) VALUES (0, ?)", &big), 0);
        for (int i = 0; i < 4096; i++) { /* 64 MiB */
                assert_int_equal(db_write_begin(f->db), 0);
                sqlite3_bind_blob(big, 1, pad, sizeof pad, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(big), SQLITE_DONE);
                sqlite3_reset(big);
                uv_run(&f->loop, UV_RUN_NOWAIT); /* the commit timer (1 ms) */
        }
        assert_int_equal(db_commit(f->db), 0);
        snprintf(wal, sizeof wal, "%s-wal", f->path);
        assert_int_equal(stat(wal, &st), 0);
        assert_true(st.st_size < 48 * 1024 * 1024);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_stalled_sync_loop_runs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_groups_grow_bounded_in_order, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_sync, setup, teardown),
                cmocka_unit_test_setup_teardown(test_explicit_commit_waits, setup, teardown),
                cmocka_unit_test_setup_teardown(test_checkpoint_off_loop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wal_bounded_under_load, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
