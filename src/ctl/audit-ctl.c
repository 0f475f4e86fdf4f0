/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "ctl/control.h"
#include "ctl/audit-ctl.h"
#include "ctl/ctlproto.h"
#include "basic/log.h"
#include "basic/macro.h"

/* Up to this many records a tail is answered at once; more go out as a chunked array. */
#define TAIL_AT_ONCE 500
#define TAIL_MAX 100000
/* Records checked per loop turn by a verify walk (a few milliseconds). */
#define VERIFY_STEP 2000
/* The read-only tier: a user's next walk at least this long after the last one ended; at most
 * this many walks of read-only users at a time; one audit record a minute per user unless the
 * verdict changes. */
#define VERIFY_PAUSE_MS 10000
#define VERIFY_MAX_READONLY 2
#define VERIFY_LOG_MS 60000
#define VERIFY_PEERS 64

struct verify_peer {
        bool used, running, logged;
        uid_t uid;
        uint64_t last_end, last_used, logged_at;
        bool logged_ok;
        int64_t logged_bad;
        unsigned unlogged;
};

struct audit_ctl {
        uv_loop_t *loop;
        struct audit *audit;
        struct verify_peer peers[VERIFY_PEERS];
        unsigned running_readonly;
};

struct tail_job {
        struct audit *audit;
        int64_t after, last;
};

struct tail_fill {
        struct tail_job *job;
        json_t *arr;
};

static int tail_add(void *userdata, const struct audit_record *rec)
{
        struct tail_fill *f = userdata;

        if (rec->seq > f->job->last)
                return -1;
        json_t *o = audit_record_to_json(rec);

        ctl_json_add_iso_times(o);
        json_array_append_new(f->arr, o);
        f->job->after = rec->seq;
        return 0;
}

static int tail_next(struct control_conn *c, void *state, size_t max, json_t *arr)
{
        struct tail_job *j = state;
        struct tail_fill f = { j, arr };
        int n;

        if (j->after >= j->last)
                return 0;
        n = audit_read(j->audit, j->after, (size_t)MIN((int64_t)max, j->last - j->after), tail_add,
                       &f);
        if (n < 0)
                return control_conn_error(c, n, "cannot read the audit log: %s", strerror(-n));
        /* n == 0: the rest was pruned meanwhile. */
        return n > 0 && j->after < j->last ? 1 : 0;
}

static int cmd_audit_tail(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct audit_ctl *x = ud;
        struct tail_job *j;
        const char *err;
        long long n;
        bool follow;
        int r;

        if (ctl_arg_int(args, "n", 0, TAIL_MAX, 20, &n, &err) < 0 ||
            ctl_arg_bool(args, "follow", false, &follow, &err) < 0)
                return control_conn_error(c, -EINVAL, "%s", err);
        if (n <= TAIL_AT_ONCE) {
                r = audit_tail(x->audit, n, ret);
                if (r < 0)
                        return control_conn_error(c, r, "cannot read the audit log: %s",
                                                  strerror(-r));
                if (follow) {
                        /* The reply goes out first; new records follow as "audit" events. */
                        control_conn_subscribe(c, "audit");
                        return CONTROL_STREAM;
                }
                return 0;
        }
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        /* The range is fixed now; with follow, records appended while it goes out are held and
         * sent as events after it. */
        j->audit = x->audit;
        j->last = audit_head_seq(x->audit);
        j->after = MAX(j->last - n, (int64_t)0);
        if (follow)
                control_conn_subscribe(c, "audit");
        return control_conn_reply_array(c, tail_next, free, j);
}

struct verify_job {
        struct audit_ctl *x;
        struct audit_verify_walk *walk;
        struct verify_peer *peer; /* the read-only tier's bookkeeping, NULL for admins */
        char actor[32];
};

static struct verify_peer *verify_peer(struct audit_ctl *x, uid_t uid)
{
        struct verify_peer *p, *victim = NULL;

        for (p = x->peers; p < x->peers + VERIFY_PEERS; p++)
                if (p->used && p->uid == uid)
                        return p;
        for (p = x->peers; p < x->peers + VERIFY_PEERS; p++) {
                if (!p->used) {
                        victim = p;
                        break;
                }
                if (!p->running && (!victim || p->last_used < victim->last_used))
                        victim = p;
        }
        if (victim)
                *victim = (struct verify_peer){ .used = true, .uid = uid };
        return victim;
}

/* Every walk of an admin is audited; a read-only user's at most once a minute (with the number
 * of walks since), or when the verdict changed. */
static bool verify_should_log(struct audit_ctl *x, struct verify_peer *p,
                              const struct audit_verify_result *res, unsigned *ret_coalesced)
{
        uint64_t now = uv_now(x->loop);

        *ret_coalesced = 0;
        if (!p)
                return true;
        if (p->logged && now - p->logged_at < VERIFY_LOG_MS && p->logged_ok == res->ok &&
            p->logged_bad == res->first_bad_seq) {
                p->unlogged++;
                return false;
        }
        *ret_coalesced = p->unlogged;
        p->unlogged = 0;
        p->logged = true;
        p->logged_at = now;
        p->logged_ok = res->ok;
        p->logged_bad = res->first_bad_seq;
        return true;
}

static int verify_step(struct control_conn *c, void *state, json_t **ret)
{
        struct verify_job *j = state;
        const struct audit_verify_result *res;
        unsigned coalesced;
        int r;

        r = audit_verify_step(j->walk, VERIFY_STEP);
        if (r < 0)
                return control_conn_error(c, r, "cannot read the audit log: %s", strerror(-r));
        if (r > 0)
                return 1;
        res = audit_verify_walk_result(j->walk);
        if (verify_should_log(j->x, j->peer, res, &coalesced)) {
                json_t *d =
                        json_pack("{sb sI}", "ok", res->ok, "records", (json_int_t)res->records);
                if (d && coalesced)
                        json_object_set_new(d, "coalesced", json_integer(coalesced));
                audit_log(j->x->audit, j->actor, "audit.verify", "", d);
        }
        if (!res->ok)
                log_error("audit chain broken at record %lld: %s", (long long)res->first_bad_seq,
                          res->reason);
        *ret = json_pack("{sb sI sI ss}", "ok", res->ok, "records", (json_int_t)res->records,
                         "first_bad_seq", (json_int_t)res->first_bad_seq, "reason", res->reason);
        return 0;
}

static void verify_free(void *state)
{
        struct verify_job *j = state;

        if (j->peer) {
                j->peer->running = false;
                j->peer->last_end = uv_now(j->x->loop);
                j->x->running_readonly--;
        }
        audit_verify_free(j->walk);
        free(j);
}

static int cmd_audit_verify(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        struct audit_ctl *x = ud;
        const struct control_peer *peer = control_conn_peer(c);
        struct verify_peer *p = NULL;
        struct verify_job *j;
        uint64_t now = uv_now(x->loop);
        int r;

        if (peer->level < CONTROL_ADMIN) {
                p = verify_peer(x, peer->uid);
                if (!p || p->running)
                        return control_conn_error(c, -EBUSY,
                                                  "audit.verify: your previous verification is "
                                                  "still running");
                if (p->last_end && now - p->last_end < VERIFY_PAUSE_MS)
                        return control_conn_error(
                                c, -EBUSY,
                                "audit.verify: read-only users may verify once every %u s; try "
                                "again in %llu s",
                                VERIFY_PAUSE_MS / 1000,
                                (unsigned long long)(VERIFY_PAUSE_MS - (now - p->last_end) + 999) /
                                        1000);
                if (x->running_readonly >= VERIFY_MAX_READONLY)
                        return control_conn_error(c, -EBUSY,
                                                  "audit.verify: %u verifications by read-only "
                                                  "users are running; try again later",
                                                  x->running_readonly);
                p->last_used = now;
        }
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->x = x;
        snprintf(j->actor, sizeof j->actor, "%s", peer->actor);
        r = audit_verify_begin(x->audit, &j->walk);
        if (r < 0) {
                free(j);
                return control_conn_error(c, r, "cannot read the audit log: %s", strerror(-r));
        }
        if (p) {
                j->peer = p;
                p->running = true;
                x->running_readonly++;
        }
        return control_conn_defer(c, verify_step, verify_free, j);
}

static const struct control_command audit_ctl_commands[] = {
        { "audit.tail", CONTROL_READ, cmd_audit_tail },
        { "audit.verify", CONTROL_READ, cmd_audit_verify },
};

int audit_ctl_new(uv_loop_t *loop, struct audit *audit, struct control *ctl, struct audit_ctl **ret)
{
        struct audit_ctl *x = calloc(1, sizeof *x);
        int r;

        if (!x)
                return -ENOMEM;
        x->loop = loop;
        x->audit = audit;
        r = control_add_commands(ctl, audit_ctl_commands, ELEMENTSOF(audit_ctl_commands), x);
        if (r < 0) {
                free(x);
                return r;
        }
        *ret = x;
        return 0;
}

void audit_ctl_free(struct audit_ctl *x)
{
        free(x);
}
