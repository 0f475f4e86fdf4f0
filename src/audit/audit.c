/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "basic/time-util.h"
#include "basic/hexdecoct.h"
#include "audit/audit.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/fileio.h"

#define AUDIT_DOMAIN "mcugw-audit-v1"

struct audit {
        struct db *db;
        sqlite3_stmt *insert, *head_put, *tail, *walk, *last;
        int64_t head_seq;
        uint8_t head_hash[AUDIT_HASH_LEN];
        bool head_dirty;
        /* The copy of the head outside the database (audit_set_head_file()): what the commit
         * under way carries, written once it is durable. */
        char *head_file;
        bool head_file_pending;
        int64_t pending_seq;
        uint8_t pending_hash[AUDIT_HASH_LEN];
        /* Heads committed but waiting for the database's sync (db_durable_later()). */
        unsigned heads_waiting;
        EVP_MD_CTX *md;
        audit_listener_fn listener;
        void *listener_data;
};

static void put_be64(uint8_t *p, uint64_t v)
{
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t)v;
}

static void hash_field(EVP_MD_CTX *md, const char *s)
{
        size_t n = strlen(s);
        uint8_t len[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
        EVP_DigestUpdate(md, len, 4);
        EVP_DigestUpdate(md, s, n);
}

static void audit_hash_ctx(EVP_MD_CTX *md, const uint8_t prev[AUDIT_HASH_LEN],
                           const struct audit_record *rec, uint8_t out[AUDIT_HASH_LEN])
{
        uint8_t nums[16];
        unsigned len;

        put_be64(nums, (uint64_t)rec->seq);
        put_be64(nums + 8, (uint64_t)rec->ts_us);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, AUDIT_DOMAIN, sizeof AUDIT_DOMAIN - 1);
        EVP_DigestUpdate(md, prev, AUDIT_HASH_LEN);
        EVP_DigestUpdate(md, nums, sizeof nums);
        hash_field(md, rec->actor);
        hash_field(md, rec->event);
        hash_field(md, rec->subject);
        hash_field(md, rec->details);
        EVP_DigestFinal_ex(md, out, &len);
}

void audit_hash(const uint8_t prev[AUDIT_HASH_LEN], const struct audit_record *rec,
                uint8_t out[AUDIT_HASH_LEN])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md)
                abort();
        audit_hash_ctx(md, prev, rec, out);
        EVP_MD_CTX_free(md);
}

/* Runs inside each group commit: persist the head so a truncated tail shows up offline too. */
static int audit_precommit(void *userdata)
{
        struct audit *a = userdata;
        uint8_t v[8 + AUDIT_HASH_LEN];
        int rc;

        if (!a->head_dirty)
                return 0;
        put_be64(v, (uint64_t)a->head_seq);
        memcpy(v + 8, a->head_hash, AUDIT_HASH_LEN);
        sqlite3_bind_blob(a->head_put, 1, v, sizeof v, SQLITE_STATIC);
        rc = sqlite3_step(a->head_put);
        sqlite3_reset(a->head_put);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        a->head_dirty = false;
        if (a->head_file) {
                a->head_file_pending = true;
                a->pending_seq = a->head_seq;
                memcpy(a->pending_hash, a->head_hash, AUDIT_HASH_LEN);
        }
        return 0;
}

static int head_file_write(const char *path, int64_t seq, const uint8_t hash[AUDIT_HASH_LEN]);

struct durable_head {
        struct audit *a;
        int64_t seq;
        uint8_t hash[AUDIT_HASH_LEN];
};

static void audit_head_durable(void *userdata, int status)
{
        struct durable_head *h = userdata;
        int r;

        h->a->heads_waiting--;
        /* A failed sync: the database may not hold this head; the next commit writes one. */
        if (status >= 0 && (r = head_file_write(h->a->head_file, h->seq, h->hash)) < 0)
                log_error_errno(r, "audit: cannot write the head file %s: %m", h->a->head_file);
        free(h);
}

/* After a group commit that carried records: the head file follows the database (once per
 * commit, not per record; the fsync is the price of a copy that survives a wiped database),
 * and never runs ahead of it: where the commit is synced later (store/db.h), once it is. */
static int audit_postcommit(void *userdata)
{
        struct audit *a = userdata;
        int r;

        if (!a->head_file_pending)
                return 0;
        if (db_durable_later(a->db)) {
                struct durable_head *h = malloc(sizeof *h);
                if (!h)
                        return 0; /* stays pending: the next commit writes it */
                *h = (struct durable_head){ .a = a, .seq = a->pending_seq };
                memcpy(h->hash, a->pending_hash, AUDIT_HASH_LEN);
                /* The next group's waiters run once everything before is durable, this commit
                 * included. */
                if (db_on_commit(a->db, audit_head_durable, h) < 0) {
                        free(h);
                        return 0;
                }
                a->heads_waiting++;
                a->head_file_pending = false;
                return 0;
        }
        a->head_file_pending = false;
        r = head_file_write(a->head_file, a->pending_seq, a->pending_hash);
        if (r < 0)
                log_error_errno(r, "audit: cannot write the head file %s: %m", a->head_file);
        return 0;
}

/* The chain continues from the last record on disk. */
static void audit_load_head(struct audit *a)
{
        a->head_seq = 0;
        memset(a->head_hash, 0, AUDIT_HASH_LEN);
        if (sqlite3_step(a->last) == SQLITE_ROW) {
                a->head_seq = sqlite3_column_int64(a->last, 0);
                if (sqlite3_column_bytes(a->last, 1) == AUDIT_HASH_LEN)
                        memcpy(a->head_hash, sqlite3_column_blob(a->last, 1), AUDIT_HASH_LEN);
        }
        sqlite3_reset(a->last);
}

/* A failed commit (disk full, I/O error) took the records since the last commit with it: carry
 * on from the last durable one, so the chain stays verifiable, and say what was lost. */
static int audit_rollback(void *userdata)
{
        struct audit *a = userdata;
        int64_t before = a->head_seq;

        audit_load_head(a);
        a->head_dirty = false;
        a->head_file_pending = false;
        if (before != a->head_seq)
                log_error("audit: %lld record(s) lost with a failed commit; the chain continues "
                          "from record %lld",
                          (long long)(before - a->head_seq), (long long)a->head_seq);
        return 0;
}

int audit_open(struct db *db, struct audit **ret)
{
        struct audit *a = calloc(1, sizeof *a);
        int r;

        if (!a || !(a->md = EVP_MD_CTX_new())) {
                free(a);
                return -ENOMEM;
        }
        a->db = db;
        if ((r = db_prepare(db,
                            "INSERT INTO audit (seq, ts_us, actor, event, subject, details, hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            &a->insert)) < 0 ||
            (r = db_prepare(db, "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?)",
                            &a->head_put)) < 0 ||
            (r = db_prepare(db,
                            "SELECT seq, ts_us, actor, event, subject, details, hash FROM audit "
                            "WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit) - ? "
                            "ORDER BY seq",
                            &a->tail)) < 0 ||
            (r = db_prepare(db,
                            "SELECT seq, ts_us, actor, event, subject, details, hash FROM audit "
                            "ORDER BY seq",
                            &a->walk)) < 0 ||
            (r = db_prepare(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                            &a->last)) < 0 ||
            (r = db_add_precommit(db, audit_precommit, a)) < 0 ||
            (r = db_add_postcommit(db, audit_postcommit, a)) < 0 ||
            (r = db_add_rollback(db, audit_rollback, a)) < 0) {
                audit_free(a);
                return r;
        }
        audit_load_head(a);
        *ret = a;
        return 0;
}

void audit_free(struct audit *a)
{
        if (!a)
                return;
        if ((a->head_dirty && a->head_file) || a->heads_waiting)
                db_commit(a->db); /* the head goes to meta and then to the head file */
        else if (a->head_dirty && db_write_begin(a->db) >= 0)
                audit_precommit(a);
        if (a->head_file) {
                /* A copy for the journal, outside the box if it is forwarded. */
                char h[2 * AUDIT_HASH_LEN + 1];
                hexmem(a->head_hash, AUDIT_HASH_LEN, h);
                log_info("audit: chain head at stop: seq %lld hash %s", (long long)a->head_seq, h);
        }
        db_remove_precommit(a->db, audit_precommit, a);
        db_remove_postcommit(a->db, audit_postcommit, a);
        db_remove_rollback(a->db, audit_rollback, a);
        EVP_MD_CTX_free(a->md);
        free(a->head_file);
        free(a);
}

int64_t audit_head_seq(const struct audit *a)
{
        return a->head_seq;
}

void audit_set_listener(struct audit *a, audit_listener_fn fn, void *userdata)
{
        a->listener = fn;
        a->listener_data = userdata;
}

/* ---- the head outside the database (docs/audit.md, "The head") ----------------------------- */

#define HEAD_FILE_MAGIC "mcugw-audit-head-v1"

/* A hex hash from a text column or file (NULL: not one). */
static int unhex_str(const char *s, uint8_t *out, size_t n)
{
        return s ? unhexmem(s, strlen(s), out, n) : -EINVAL;
}

static int head_file_write(const char *path, int64_t seq, const uint8_t hash[AUDIT_HASH_LEN])
{
        _cleanup_free_ char *tmp = NULL;
        char line[160], h[2 * AUDIT_HASH_LEN + 1];
        int fd, n, r = 0;

        hexmem(hash, AUDIT_HASH_LEN, h);
        n = snprintf(line, sizeof line, "%s seq=%lld hash=%s\n", HEAD_FILE_MAGIC, (long long)seq,
                     h);
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        /* Write a new file and rename it over the old one: after a crash the head file is the old
         * one or the new one, never half of each. An old one is still consistent (it names a
         * record the database has); without fsync on the directory the rename may be lost, which
         * leaves the old one too. */
        (void)unlink(tmp);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
        if (fd < 0)
                return -errno;
        if (write(fd, line, (size_t)n) != n || fdatasync(fd) < 0)
                r = errno ? -errno : -EIO;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlink(tmp);
        return r;
}

/* 1 and the head if the file is there, 0 if it is not, -errno (message in err) if it is there
 * but unusable. */
static int head_file_read(const char *path, int64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN],
                          char *err, size_t errlen)
{
        _cleanup_free_ char *text = NULL;
        char magic[32], h[2 * AUDIT_HASH_LEN + 2];
        long long seq;
        size_t len = 0;
        int r;

        /* The daemon writes this file itself: a symbolic link, a FIFO or anything large is not
         * one of ours. */
        r = fileio_read(path, FILEIO_NOFOLLOW, 4096, &text, &len, err, errlen);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (memchr(text, 0, len) || sscanf(text, "%31s seq=%lld hash=%65s", magic, &seq, h) != 3 ||
            strcmp(magic, HEAD_FILE_MAGIC) != 0 || seq < 0 ||
            unhex_str(h, ret_hash, AUDIT_HASH_LEN) < 0) {
                snprintf(err, errlen, "%s: not an audit head file (expected \"%s seq=N hash=HEX\")",
                         path, HEAD_FILE_MAGIC);
                return -EBADMSG;
        }
        *ret_seq = seq;
        return 1;
}

/* meta.audit_head: 1 and the head, 0 if absent, -errno. */
static int meta_head_read(struct audit *a, int64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN])
{
        sqlite3_stmt *s = NULL;
        int r = 0, rc;

        if (sqlite3_prepare_v2(db_handle(a->db), "SELECT value FROM meta WHERE key = 'audit_head'",
                               -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                const uint8_t *v = sqlite3_column_blob(s, 0);
                uint64_t seq = 0;
                if (!v || sqlite3_column_bytes(s, 0) != 8 + AUDIT_HASH_LEN) {
                        r = -EBADMSG;
                } else {
                        for (int i = 0; i < 8; i++)
                                seq = seq << 8 | v[i];
                        *ret_seq = (int64_t)seq;
                        memcpy(ret_hash, v + 8, AUDIT_HASH_LEN);
                        r = 1;
                }
        } else if (rc != SQLITE_DONE)
                r = db_errno(rc);
        sqlite3_finalize(s);
        return r;
}

/* Does the chain in the database contain record seq with this hash? Also true when seq was
 * pruned by a checkpoint that carries exactly this hash as its prefix hash. */
static bool chain_has(struct audit *a, int64_t seq, const uint8_t hash[AUDIT_HASH_LEN])
{
        sqlite3_stmt *s = NULL;
        uint8_t h[AUDIT_HASH_LEN];
        bool found = false, yes = false;

        if (seq == 0) {
                static const uint8_t zero[AUDIT_HASH_LEN];
                return CRYPTO_memcmp(hash, zero, AUDIT_HASH_LEN) == 0;
        }
        if (sqlite3_prepare_v2(db_handle(a->db), "SELECT hash FROM audit WHERE seq = ?", -1, &s,
                               NULL) != SQLITE_OK)
                return false;
        sqlite3_bind_int64(s, 1, seq);
        if (sqlite3_step(s) == SQLITE_ROW) {
                found = true;
                yes = sqlite3_column_bytes(s, 0) == AUDIT_HASH_LEN &&
                      CRYPTO_memcmp(sqlite3_column_blob(s, 0), hash, AUDIT_HASH_LEN) == 0;
        }
        sqlite3_finalize(s);
        if (found)
                return yes;
        if (sqlite3_prepare_v2(db_handle(a->db),
                               "SELECT json_extract(details, '$.prefix_hash') FROM audit "
                               "WHERE event = 'audit.checkpoint' AND "
                               "json_extract(details, '$.pruned_through') = ?",
                               -1, &s, NULL) != SQLITE_OK)
                return false;
        sqlite3_bind_int64(s, 1, seq);
        while (!yes && sqlite3_step(s) == SQLITE_ROW)
                yes = unhex_str((const char *)sqlite3_column_text(s, 0), h, AUDIT_HASH_LEN) == 0 &&
                      CRYPTO_memcmp(h, hash, AUDIT_HASH_LEN) == 0;
        sqlite3_finalize(s);
        return yes;
}

static void check_fail(struct audit_head_check *res, const char *source, int64_t seq,
                       const uint8_t *hash, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
static void check_fail(struct audit_head_check *res, const char *source, int64_t seq,
                       const uint8_t *hash, const char *fmt, ...)
{
        size_t off = strlen(res->reason);
        va_list ap;

        if (res->ok || seq > res->expected_seq) {
                res->expected_seq = seq;
                res->source = source;
                if (hash)
                        memcpy(res->expected_hash, hash, AUDIT_HASH_LEN);
        }
        res->ok = false;
        if (off && off + 2 < sizeof res->reason) {
                memcpy(res->reason + off, "; ", 3);
                off += 2;
        }
        va_start(ap, fmt);
        vsnprintf(res->reason + off, sizeof res->reason - off, fmt, ap);
        va_end(ap);
}

int audit_check_head(struct audit *a, const char *head_file, struct audit_head_check *res)
{
        uint8_t mh[AUDIT_HASH_LEN], fh[AUDIT_HASH_LEN];
        char hx[2 * AUDIT_HASH_LEN + 1], dbx[2 * AUDIT_HASH_LEN + 1], ferr[512];
        int64_t mseq = 0, fseq = 0, M;
        int mr, fr;

        memset(res, 0, sizeof *res);
        res->ok = true;
        /* Only what is committed counts: nothing may have been appended yet. */
        audit_load_head(a);
        M = res->db_seq = a->head_seq;
        memcpy(res->db_hash, a->head_hash, AUDIT_HASH_LEN);
        hexmem(res->db_hash, AUDIT_HASH_LEN, dbx);

        mr = meta_head_read(a, &mseq, mh);
        if (mr == -EBADMSG)
                check_fail(res, "meta.audit_head", M, NULL,
                           "meta.audit_head is malformed, database ends at seq %lld", (long long)M);
        else if (mr < 0)
                return mr;
        else if (mr == 0 && M > 0)
                check_fail(res, "meta.audit_head", M, NULL,
                           "meta.audit_head is missing, database ends at seq %lld", (long long)M);
        else if (mr == 1 && (mseq != M || CRYPTO_memcmp(mh, res->db_hash, AUDIT_HASH_LEN) != 0)) {
                hexmem(mh, AUDIT_HASH_LEN, hx);
                check_fail(res, "meta.audit_head", mseq, mh,
                           mseq > M ? "audit log lost its tail: meta.audit_head says seq %lld "
                                      "hash %s, database ends at seq %lld"
                                    : "audit log head does not match: meta.audit_head says seq "
                                      "%lld hash %s, database ends at seq %lld",
                           (long long)mseq, hx, (long long)M);
        }

        if (head_file) {
                fr = head_file_read(head_file, &fseq, fh, ferr, sizeof ferr);
                if (fr < 0)
                        check_fail(res, "head file", M, NULL, "%s", ferr);
                else if (fr == 0)
                        res->head_file_missing = M > 0;
                else if (fseq > M) {
                        hexmem(fh, AUDIT_HASH_LEN, hx);
                        check_fail(res, "head file", fseq, fh,
                                   "audit log lost its tail: head file says seq %lld hash %s, "
                                   "database ends at seq %lld",
                                   (long long)fseq, hx, (long long)M);
                } else if (!chain_has(a, fseq, fh)) {
                        hexmem(fh, AUDIT_HASH_LEN, hx);
                        check_fail(res, "head file", fseq, fh,
                                   "audit log replaced: head file says seq %lld hash %s, the "
                                   "database has another record %lld (it ends at seq %lld)",
                                   (long long)fseq, hx, (long long)fseq, (long long)M);
                }
        }
        if (res->ok)
                log_info("audit: chain head at start: seq %lld hash %s", (long long)M, dbx);
        return 0;
}

int audit_set_head_file(struct audit *a, const char *path)
{
        char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        free(a->head_file);
        a->head_file = p;
        return 0;
}

int64_t audit_accept_truncation(struct audit *a, const struct audit_head_check *chk,
                                const char *actor)
{
        char dbx[2 * AUDIT_HASH_LEN + 1], ex[2 * AUDIT_HASH_LEN + 1];
        json_t *d;

        hexmem(chk->db_hash, AUDIT_HASH_LEN, dbx);
        hexmem(chk->expected_hash, AUDIT_HASH_LEN, ex);
        d = json_pack("{sI ss sI ss ss ss}", "database_seq", (json_int_t)chk->db_seq,
                      "database_hash", dbx, "expected_seq", (json_int_t)chk->expected_seq,
                      "expected_hash", ex, "source", chk->source ? chk->source : "", "reason",
                      chk->reason);
        if (!d)
                return -ENOMEM;
        if (chk->expected_seq > chk->db_seq) {
                json_object_set_new(d, "lost_from", json_integer(chk->db_seq + 1));
                json_object_set_new(d, "lost_through", json_integer(chk->expected_seq));
        }
        return audit_log(a, actor, "audit.truncation_accepted", "audit", d);
}

int64_t audit_append(struct audit *a, const char *actor, const char *event, const char *subject,
                     const char *details_json)
{
        struct audit_record rec = {
                .ts_us = now_realtime_usec(),
                .actor = actor,
                .event = event,
                .subject = subject ? subject : "",
                .details = details_json ? details_json : "{}",
        };
        int rc, r;

        r = db_write_begin(a->db);
        if (r < 0)
                return r;
        /* After db_write_begin: it may have found the transaction rolled back and the head
         * reloaded (audit_rollback). */
        rec.seq = a->head_seq + 1;
        audit_hash_ctx(a->md, a->head_hash, &rec, rec.hash);

        sqlite3_bind_int64(a->insert, 1, rec.seq);
        sqlite3_bind_int64(a->insert, 2, rec.ts_us);
        sqlite3_bind_text(a->insert, 3, rec.actor, -1, SQLITE_STATIC);
        sqlite3_bind_text(a->insert, 4, rec.event, -1, SQLITE_STATIC);
        sqlite3_bind_text(a->insert, 5, rec.subject, -1, SQLITE_STATIC);
        sqlite3_bind_text(a->insert, 6, rec.details, -1, SQLITE_STATIC);
        sqlite3_bind_blob(a->insert, 7, rec.hash, AUDIT_HASH_LEN, SQLITE_STATIC);
        rc = sqlite3_step(a->insert);
        sqlite3_reset(a->insert);
        sqlite3_clear_bindings(a->insert);
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "audit: cannot append %s record: %s", event,
                                       sqlite3_errmsg(db_handle(a->db)));

        a->head_seq = rec.seq;
        memcpy(a->head_hash, rec.hash, AUDIT_HASH_LEN);
        a->head_dirty = true;
        if (a->listener)
                a->listener(a->listener_data, &rec);
        return rec.seq;
}

int64_t audit_log(struct audit *a, const char *actor, const char *event, const char *subject,
                  json_t *details)
{
        _cleanup_free_ char *text = NULL;
        int64_t r;

        if (details) {
                text = json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS);
                json_decref(details);
                if (!text)
                        return -ENOMEM;
        }
        r = audit_append(a, actor, event, subject, text);
        return r;
}

static void record_from_row(sqlite3_stmt *s, struct audit_record *rec)
{
        const void *h;
        memset(rec, 0, sizeof *rec);
        rec->seq = sqlite3_column_int64(s, 0);
        rec->ts_us = sqlite3_column_int64(s, 1);
        rec->actor = (const char *)sqlite3_column_text(s, 2);
        rec->event = (const char *)sqlite3_column_text(s, 3);
        rec->subject = (const char *)sqlite3_column_text(s, 4);
        rec->details = (const char *)sqlite3_column_text(s, 5);
        h = sqlite3_column_blob(s, 6);
        if (h && sqlite3_column_bytes(s, 6) == AUDIT_HASH_LEN)
                memcpy(rec->hash, h, AUDIT_HASH_LEN);
        if (!rec->actor)
                rec->actor = "";
        if (!rec->event)
                rec->event = "";
        if (!rec->subject)
                rec->subject = "";
        if (!rec->details)
                rec->details = "";
}

json_t *audit_record_to_json(const struct audit_record *rec)
{
        char h[2 * AUDIT_HASH_LEN + 1];
        json_t *details = json_loads(rec->details, 0, NULL);

        hexmem(rec->hash, AUDIT_HASH_LEN, h);
        if (!details)
                details = json_string(rec->details);
        return json_pack("{sI sI ss ss ss so ss}", "seq", (json_int_t)rec->seq, "ts_us",
                         (json_int_t)rec->ts_us, "actor", rec->actor, "event", rec->event,
                         "subject", rec->subject, "details", details, "hash", h);
}

int audit_tail(struct audit *a, int64_t n, json_t **ret)
{
        json_t *arr = json_array();
        int rc;

        if (!arr)
                return -ENOMEM;
        sqlite3_bind_int64(a->tail, 1, n);
        while ((rc = sqlite3_step(a->tail)) == SQLITE_ROW) {
                struct audit_record rec;
                record_from_row(a->tail, &rec);
                json_array_append_new(arr, audit_record_to_json(&rec));
        }
        sqlite3_reset(a->tail);
        if (rc != SQLITE_DONE) {
                json_decref(arr);
                return db_errno(rc);
        }
        *ret = arr;
        return 0;
}

int audit_last(struct audit *a, const char *event, const char *subject, json_t **ret)
{
        sqlite3_stmt *s = NULL;
        int rc;

        /* Rare (device show of a device that is not active): no statement kept for it. SQLite
         * walks seq (the rowid) backwards and stops at the first match, so a recent change is
         * found at once; only a long-ago one costs a longer walk. */
        if (sqlite3_prepare_v2(db_handle(a->db),
                               "SELECT seq, ts_us, actor, event, subject, details, hash FROM audit "
                               "WHERE event = ?1 AND subject = ?2 ORDER BY seq DESC LIMIT 1",
                               -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_text(s, 1, event, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, subject, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                struct audit_record rec;
                record_from_row(s, &rec);
                *ret = audit_record_to_json(&rec);
        } else if (rc == SQLITE_DONE)
                *ret = NULL;
        sqlite3_finalize(s);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static void verify_fail(struct audit_verify_result *res, int64_t seq, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void verify_fail(struct audit_verify_result *res, int64_t seq, const char *fmt, ...)
{
        va_list ap;
        res->ok = false;
        res->first_bad_seq = seq;
        va_start(ap, fmt);
        vsnprintf(res->reason, sizeof res->reason, fmt, ap);
        va_end(ap);
}

static int64_t query_int(struct audit *a, const char *sql, int64_t arg)
{
        sqlite3_stmt *s = NULL;
        int64_t v = 0;

        if (sqlite3_prepare_v2(db_handle(a->db), sql, -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(s, 1, arg);
        if (sqlite3_step(s) == SQLITE_ROW)
                v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

int64_t audit_first_seq(struct audit *a)
{
        return query_int(a, "SELECT COALESCE(MIN(seq), 0) FROM audit WHERE ?1 = ?1", 0);
}

int64_t audit_seq_before(struct audit *a, int64_t before_us)
{
        /* ts_us grows with seq (give or take clock steps): binary search on the primary key
         * would be exact; the newest row older than before_us is good enough here. */
        return query_int(a, "SELECT COALESCE(MAX(seq), 0) FROM audit WHERE ts_us < ?", before_us);
}

/* The predecessor hash of the oldest kept record `first`: zero for record 1, otherwise the
 * prefix_hash of the checkpoint that pruned through first - 1. */
static int checkpoint_prev(struct audit *a, int64_t first, uint8_t prev[AUDIT_HASH_LEN])
{
        sqlite3_stmt *s = NULL;
        int r = -ENOENT;

        memset(prev, 0, AUDIT_HASH_LEN);
        if (first <= 1)
                return 0;
        if (sqlite3_prepare_v2(db_handle(a->db),
                               "SELECT json_extract(details, '$.prefix_hash') FROM audit "
                               "WHERE event = 'audit.checkpoint' AND "
                               "json_extract(details, '$.pruned_through') = ? "
                               "ORDER BY seq DESC LIMIT 1",
                               -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(s, 1, first - 1);
        if (sqlite3_step(s) == SQLITE_ROW)
                r = unhexmem((const char *)sqlite3_column_text(s, 0),
                             (size_t)sqlite3_column_bytes(s, 0), prev, AUDIT_HASH_LEN);
        sqlite3_finalize(s);
        return r;
}

int64_t audit_prune(struct audit *a, int64_t through, const char *actor)
{
        sqlite3_stmt *s = NULL;
        uint8_t h[AUDIT_HASH_LEN];
        char hx[2 * AUDIT_HASH_LEN + 1];
        int64_t first = audit_first_seq(a), seq, deleted;
        int rc, r;

        if (first <= 0 || through < first)
                return 0;
        through = MIN(through, a->head_seq);
        if ((r = db_write_begin(a->db)) < 0)
                return r;
        if (sqlite3_prepare_v2(db_handle(a->db), "SELECT hash FROM audit WHERE seq = ?", -1, &s,
                               NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(s, 1, through);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW || sqlite3_column_bytes(s, 0) != AUDIT_HASH_LEN) {
                sqlite3_finalize(s);
                return rc == SQLITE_ROW || rc == SQLITE_DONE ? -ENOENT : db_errno(rc);
        }
        memcpy(h, sqlite3_column_blob(s, 0), AUDIT_HASH_LEN);
        sqlite3_finalize(s);
        hexmem(h, AUDIT_HASH_LEN, hx);

        /* The checkpoint goes into the chain first: the delete trigger allows only rows it
         * covers, and verify finds the prefix hash in it. */
        seq = audit_log(a, actor, "audit.checkpoint", "audit",
                        json_pack("{sI sI sI ss}", "first_seq", (json_int_t)first, "pruned_through",
                                  (json_int_t)through, "records", (json_int_t)(through - first + 1),
                                  "prefix_hash", hx));
        if (seq < 0)
                return seq;
        if (sqlite3_prepare_v2(db_handle(a->db), "DELETE FROM audit WHERE seq <= ?", -1, &s,
                               NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(s, 1, through);
        rc = sqlite3_step(s);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "audit: cannot prune through %lld: %s",
                                       (long long)through, sqlite3_errmsg(db_handle(a->db)));
        deleted = sqlite3_changes(db_handle(a->db));
        return deleted;
}

int audit_read(struct audit *a, int64_t after, size_t max, audit_record_fn fn, void *userdata)
{
        sqlite3_stmt *s = NULL;
        int n = 0, rc;

        if (sqlite3_prepare_v2(db_handle(a->db),
                               "SELECT seq, ts_us, actor, event, subject, details, hash FROM audit "
                               "WHERE seq > ? ORDER BY seq LIMIT ?",
                               -1, &s, NULL) != SQLITE_OK)
                return -EIO;
        sqlite3_bind_int64(s, 1, after);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                struct audit_record rec;
                record_from_row(s, &rec);
                if (fn(userdata, &rec) < 0)
                        break;
                n++;
        }
        sqlite3_finalize(s);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : db_errno(rc);
}

/* An incremental walk of the chain (audit_verify_begin/step). The walk reads the records in
 * slices by primary key, so a step costs the same wherever it is in the log, and holds no SQLite
 * statement open between steps: the daemon keeps appending (and retention keeps pruning) while a
 * walk is under way. */
struct audit_verify_walk {
        struct audit *a;
        struct audit_verify_result res;
        uint8_t prev[AUDIT_HASH_LEN];
        int64_t expect; /* the next record the chain needs */
        sqlite3_stmt *slice;
        unsigned restarts;
        bool done;
};

#define AUDIT_VERIFY_MAX_RESTARTS 3

static void walk_finish(struct audit_verify_walk *w)
{
        w->done = true;
        sqlite3_finalize(w->slice);
        w->slice = NULL;
}

/* (Re)start at the oldest record kept. Returns 0 or -errno. */
static int walk_start(struct audit_verify_walk *w)
{
        struct audit *a = w->a;
        int64_t first;

        memset(&w->res, 0, sizeof w->res);
        w->res.ok = true;
        memset(w->prev, 0, sizeof w->prev);
        /* Commit first so the walk sees everything appended so far. */
        db_commit(a->db);

        /* After retention pruning the chain starts at a checkpoint's prefix hash. */
        first = audit_first_seq(a);
        if (first < 0)
                return (int)first;
        if (first == 0)
                first = 1;
        w->expect = w->res.first_seq = first;
        if (checkpoint_prev(a, first, w->prev) < 0) {
                verify_fail(&w->res, 1, "records 1 to %lld missing (deleted without a checkpoint)",
                            (long long)(first - 1));
                walk_finish(w);
        }
        return 0;
}

int audit_verify_begin(struct audit *a, struct audit_verify_walk **ret)
{
        struct audit_verify_walk *w = calloc(1, sizeof *w);
        int r;

        if (!w)
                return -ENOMEM;
        w->a = a;
        if (sqlite3_prepare_v2(db_handle(a->db),
                               "SELECT seq, ts_us, actor, event, subject, details, hash FROM audit "
                               "WHERE seq >= ? ORDER BY seq LIMIT ?",
                               -1, &w->slice, NULL) != SQLITE_OK) {
                free(w);
                return -EIO;
        }
        r = walk_start(w);
        if (r < 0) {
                audit_verify_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

/* The end of the chain: compare with the head in memory and with the one stored at each commit.
 * Runs in the same step that found no more records, so nothing was appended in between. */
static void walk_check_head(struct audit_verify_walk *w)
{
        struct audit *a = w->a;
        sqlite3_stmt *meta = NULL;
        int rc;

        if (w->expect - 1 != a->head_seq ||
            CRYPTO_memcmp(w->prev, a->head_hash, AUDIT_HASH_LEN) != 0) {
                verify_fail(&w->res, w->expect,
                            "chain ends at record %lld but the daemon wrote up to "
                            "%lld (tail deleted or replaced)",
                            (long long)(w->expect - 1), (long long)a->head_seq);
                return;
        }
        /* The records read in this step may not be committed yet: commit, so that the stored
         * head is the one in memory. */
        db_commit(a->db);
        rc = sqlite3_prepare_v2(db_handle(a->db), "SELECT value FROM meta WHERE key = 'audit_head'",
                                -1, &meta, NULL);
        if (rc == SQLITE_OK && sqlite3_step(meta) == SQLITE_ROW &&
            sqlite3_column_bytes(meta, 0) == 8 + AUDIT_HASH_LEN) {
                const uint8_t *v = sqlite3_column_blob(meta, 0);
                uint64_t seq = 0;
                for (int i = 0; i < 8; i++)
                        seq = seq << 8 | v[i];
                if ((int64_t)seq != w->expect - 1 ||
                    CRYPTO_memcmp(v + 8, w->prev, AUDIT_HASH_LEN) != 0)
                        verify_fail(&w->res, w->expect,
                                    "chain ends at record %lld but the recorded "
                                    "head is %llu (tail deleted or replaced)",
                                    (long long)(w->expect - 1), (unsigned long long)seq);
        } else if (w->expect > 1)
                verify_fail(&w->res, w->expect, "recorded chain head is missing");
        sqlite3_finalize(meta);
}

int audit_verify_step(struct audit_verify_walk *w, size_t max_records)
{
        struct audit *a = w->a;
        size_t n = 0;
        int rc, r;

        if (w->done)
                return 0;
        if (max_records == 0 || max_records > INT64_MAX)
                max_records = INT64_MAX;
        sqlite3_bind_int64(w->slice, 1, w->expect);
        sqlite3_bind_int64(w->slice, 2, (sqlite3_int64)max_records);
        while ((rc = sqlite3_step(w->slice)) == SQLITE_ROW) {
                struct audit_record rec;
                uint8_t h[AUDIT_HASH_LEN];

                record_from_row(w->slice, &rec);
                n++;
                if (rec.seq != w->expect) {
                        /* Retention pruned records this walk had not reached yet: the chain now
                         * starts at a newer checkpoint; walk again from there. */
                        if (audit_first_seq(a) > w->expect &&
                            w->restarts++ < AUDIT_VERIFY_MAX_RESTARTS) {
                                sqlite3_reset(w->slice);
                                r = walk_start(w);
                                return r < 0 ? r : w->done ? 0 : 1;
                        }
                        w->res.records++;
                        verify_fail(&w->res, w->expect, "record %lld missing (deleted)",
                                    (long long)w->expect);
                        break;
                }
                w->res.records++;
                audit_hash_ctx(a->md, w->prev, &rec, h);
                if (CRYPTO_memcmp(h, rec.hash, AUDIT_HASH_LEN) != 0) {
                        verify_fail(&w->res, rec.seq,
                                    "record %lld does not match its chain hash "
                                    "(edited, inserted or reordered)",
                                    (long long)rec.seq);
                        break;
                }
                memcpy(w->prev, h, AUDIT_HASH_LEN);
                w->expect++;
        }
        sqlite3_reset(w->slice);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return db_errno(rc);
        if (!w->res.ok) {
                walk_finish(w);
                return 0;
        }
        if (n == max_records)
                return 1; /* perhaps more */
        walk_check_head(w);
        walk_finish(w);
        return 0;
}

const struct audit_verify_result *audit_verify_walk_result(const struct audit_verify_walk *w)
{
        return &w->res;
}

void audit_verify_free(struct audit_verify_walk *w)
{
        if (!w)
                return;
        sqlite3_finalize(w->slice);
        free(w);
}

int audit_verify(struct audit *a, struct audit_verify_result *res)
{
        struct audit_verify_walk *w;
        int r;

        memset(res, 0, sizeof *res);
        r = audit_verify_begin(a, &w);
        if (r < 0)
                return r;
        while ((r = audit_verify_step(w, 0)) > 0)
                ;
        if (r == 0)
                *res = w->res;
        audit_verify_free(w);
        return r;
}
