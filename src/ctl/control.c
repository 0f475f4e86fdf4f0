/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/time-util.h"
#include "basic/ratelimit.h"
#include "audit/audit.h"
#include "basic/conf-parser.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "basic/log.h"
#include "basic/macro.h"

/* A follower (audit.tail --follow) that lets this much pile up unread is dropped. */
#define CONTROL_MAX_OUTQ (1024 * 1024)
/* A connection gets its next request or step only when at most this much is unread: a client
 * that pipelines requests without reading the replies stops being served (backpressure), it does
 * not make the daemon buffer them. */
#define CONTROL_OUTQ_LOW (64 * 1024)
/* Elements of an array reply produced per step. */
#define CONTROL_CHUNK 500
/* Work for the read-only tier per loop turn; at least one step always runs. */
#define CONTROL_TURN_NS (10 * 1000 * 1000)
#define CONTROL_IDLE_MS 60000
#define CONTROL_SWEEP_MS 5000
#define CONTROL_MAX_GROUPS 256

struct control_table {
        const struct control_command *cmds;
        size_t n;
        void *userdata;
};

struct control_job {
        control_step_fn step;  /* deferred work, or */
        control_chunk_fn next; /* an array reply */
        void (*free_fn)(void *state);
        void *state;
        bool started; /* array: the head has been sent */
        size_t sent;  /* array: elements so far */
};

struct control_conn {
        uv_pipe_t pipe;
        struct control *ctl;
        struct control_conn *next, *prev;
        struct control_peer peer;
        char *buf; /* requests: [off, len) not handled yet */
        size_t off, len, cap;
        unsigned lines; /* complete request lines in buf */
        bool reading;
        bool counted; /* in its tier's count */
        uint64_t last_active;
        bool closing;
        bool close_after_write;
        unsigned n_writes;
        size_t queued; /* bytes written but not yet taken by the socket */
        struct control_job *job;
        char *held; /* events that arrived while a reply was going out */
        size_t held_len;
        char *topic;
        char errmsg[1024];
        int errcode;
};

struct control {
        uv_loop_t *loop;
        uv_pipe_t server;
        uv_timer_t sweep;
        uv_idle_t work; /* active while some connection has a request or step to run */
        struct audit *audit;
        struct control_options opts;
        char *path; /* set when we created the socket file ourselves */
        gid_t admin_gid, ro_gid;
        bool have_admin_gid, have_ro_gid;
        /* The groups' names, for refusals that say which group would let the peer in. */
        char admin_name[64], ro_name[64];
        struct control_table *tables;
        size_t n_tables;
        struct control_conn *conns, *conns_tail;
        unsigned n_conns;
        unsigned n_tier[CONTROL_ADMIN + 1];
        unsigned pending_closes;
        bool stopping;
        struct ratelimit_window refusal_lim; /* refusal audit rate limit */
};

struct write_req {
        uv_write_t req;
        struct control_conn *conn;
        char *data;
        size_t len;
};

static void control_maybe_free(struct control *ctl);
static void audit_limited(struct control *ctl, const struct control_peer *p, const char *event,
                          const char *subject, json_t *details);
static void control_handle_closed(uv_handle_t *h);

static void resolve_group(const char *name, gid_t *gid, bool *have, const char *what)
{
        struct group *g;
        *have = false;
        if (!name)
                return;
        g = getgrnam(name);
        if (!g) {
                log_warning("control: %s '%s' does not exist; ignoring it", what, name);
                return;
        }
        *gid = g->gr_gid;
        *have = true;
}

void control_update(struct control *ctl, const struct control_options *opts)
{
        ctl->opts.admin_group = NULL;
        ctl->opts.readonly_group = NULL;
        ctl->opts.max_clients = opts->max_clients;
        ctl->opts.max_request = opts->max_request;
        ctl->opts.refusals_per_min = opts->refusals_per_min;
        ctl->refusal_lim.limit = opts->refusals_per_min;
        resolve_group(opts->admin_group, &ctl->admin_gid, &ctl->have_admin_gid, "AdminGroup");
        resolve_group(opts->readonly_group, &ctl->ro_gid, &ctl->have_ro_gid, "ReadOnlyGroup");
        snprintf(ctl->admin_name, sizeof ctl->admin_name, "%s",
                 ctl->have_admin_gid ? opts->admin_group : "");
        snprintf(ctl->ro_name, sizeof ctl->ro_name, "%s",
                 ctl->have_ro_gid ? opts->readonly_group : "");
}

static enum control_level peer_level(struct control *ctl, int fd, const struct ucred *cred)
{
        gid_t groups[CONTROL_MAX_GROUPS];
        socklen_t len = sizeof groups;
        size_t n = 0;
        bool admin = false, ro = false;

        if (cred->uid == 0 || cred->uid == geteuid())
                return CONTROL_ADMIN;
        /* SO_PEERGROUPS gives the supplementary groups the peer had at connect(). */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
                n = len / sizeof(gid_t);
        for (size_t i = 0; i <= n; i++) {
                gid_t g = i < n ? groups[i] : cred->gid;
                if (ctl->have_admin_gid && g == ctl->admin_gid)
                        admin = true;
                if (ctl->have_ro_gid && g == ctl->ro_gid)
                        ro = true;
        }
        return admin ? CONTROL_ADMIN : ro ? CONTROL_READ : CONTROL_NONE;
}

static void control_kick(struct control *ctl);

static void list_unlink(struct control *ctl, struct control_conn *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                ctl->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                ctl->conns_tail = c->prev;
        c->next = c->prev = NULL;
}

static void list_append(struct control *ctl, struct control_conn *c)
{
        c->next = NULL;
        c->prev = ctl->conns_tail;
        if (ctl->conns_tail)
                ctl->conns_tail->next = c;
        else
                ctl->conns = c;
        ctl->conns_tail = c;
}

static void job_free(struct control_job *job)
{
        if (!job)
                return;
        if (job->free_fn)
                job->free_fn(job->state);
        free(job);
}

static void conn_closed(uv_handle_t *h)
{
        struct control_conn *c = h->data;
        struct control *ctl = c->ctl;

        /* The job goes here, not in conn_close(), which may run inside one of its steps. */
        job_free(c->job);
        free(c->held);
        free(c->buf);
        free(c->topic);
        free(c);
        ctl->pending_closes--;
        control_maybe_free(ctl);
}

static void conn_close(struct control_conn *c)
{
        struct control *ctl = c->ctl;
        if (c->closing)
                return;
        c->closing = true;
        list_unlink(ctl, c);
        ctl->n_conns--;
        if (c->counted)
                ctl->n_tier[c->peer.level]--;
        ctl->pending_closes++;
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static void write_done(uv_write_t *req, int status)
{
        struct write_req *w = (struct write_req *)req;
        struct control_conn *c = w->conn;

        c->queued -= w->len;
        free(w->data);
        free(w);
        c->n_writes--;
        if (c->closing)
                return;
        c->last_active = uv_now(c->ctl->loop);
        if (status < 0 || (c->close_after_write && c->n_writes == 0)) {
                conn_close(c);
                return;
        }
        /* Backpressure released: this client may have its next request or step. */
        if ((c->job || c->lines) && c->queued <= CONTROL_OUTQ_LOW)
                control_kick(c->ctl);
}

/* Takes ownership of data. An event (a line the client did not ask for) to a client that lets
 * CONTROL_MAX_OUTQ pile up unread drops it; replies are never dropped: the scheduler sends the
 * next one only once the client has read the last. */
static int conn_write(struct control_conn *c, char *data, size_t len, bool event)
{
        struct write_req *w;
        uv_buf_t b = uv_buf_init(data, (unsigned)len);
        int r;

        if (!data)
                return -ENOMEM;
        if (c->closing) {
                free(data);
                return -ECONNRESET;
        }
        if (event && c->queued > CONTROL_MAX_OUTQ) {
                free(data);
                log_warning("control: client pid %d does not read its events; dropping it",
                            (int)c->peer.pid);
                conn_close(c);
                return -ENOBUFS;
        }
        w = calloc(1, sizeof *w);
        if (!w) {
                free(data);
                return -ENOMEM;
        }
        w->conn = c;
        w->data = data;
        w->len = len;
        r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, write_done);
        if (r >= 0) {
                c->n_writes++;
                c->queued += len;
        } else {
                free(data);
                free(w);
                conn_close(c);
                return r;
        }
        return 0;
}

static void conn_reply_error(struct control_conn *c, int error, const char *msg, bool then_close)
{
        size_t len = 0;
        char *s = ctlproto_error(ctlproto_errno_name(error), msg, &len);
        if (then_close)
                c->close_after_write = true;
        conn_write(c, s, len, false);
}

/* The reply to a request: data (stolen) on success, else the error the handler named in
 * c->errmsg or, without one, -r's text. */
static void conn_reply(struct control_conn *c, int r, json_t *data)
{
        size_t olen = 0;

        if (r < 0) {
                conn_reply_error(c, c->errmsg[0] ? c->errcode : r,
                                 c->errmsg[0] ? c->errmsg : strerror(-r), false);
                json_decref(data);
        } else {
                char *out = ctlproto_ok(data, &olen);
                conn_write(c, out, olen, false);
        }
}

int control_conn_error(struct control_conn *c, int error, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
        va_end(ap);
        c->errcode = error;
        return error < 0 ? error : -error;
}

const struct control_peer *control_conn_peer(const struct control_conn *c)
{
        return &c->peer;
}

int control_conn_send_event(struct control_conn *c, const char *event, json_t *data)
{
        size_t len = 0;
        char *s = ctlproto_event(event, data, &len);

        if (!s || c->closing || !c->job)
                return conn_write(c, s, len, true);
        /* A reply is still going out: the event follows it. */
        if (c->held_len + len > CONTROL_MAX_OUTQ) {
                free(s);
                log_warning("control: client pid %d does not read its events; dropping it",
                            (int)c->peer.pid);
                conn_close(c);
                return -ENOBUFS;
        }
        {
                char *n = realloc(c->held, c->held_len + len);
                if (!n) {
                        free(s);
                        return -ENOMEM;
                }
                c->held = n;
        }
        memcpy(c->held + c->held_len, s, len);
        c->held_len += len;
        free(s);
        return 0;
}

void control_conn_subscribe(struct control_conn *c, const char *topic)
{
        free(c->topic);
        c->topic = strdup(topic);
}

bool control_has_topic(struct control *ctl, const char *prefix)
{
        size_t n = strlen(prefix);
        for (struct control_conn *c = ctl->conns; c; c = c->next)
                if (c->topic && strncmp(c->topic, prefix, n) == 0)
                        return true;
        return false;
}

void control_broadcast(struct control *ctl, const char *topic, json_t *data)
{
        struct control_conn *c, *next;
        for (c = ctl->conns; c; c = next) {
                next = c->next;
                if (c->topic && strcmp(c->topic, topic) == 0)
                        control_conn_send_event(c, topic, json_incref(data));
        }
        json_decref(data);
}

static int conn_set_job(struct control_conn *c, control_step_fn step, control_chunk_fn next,
                        void (*free_fn)(void *), void *state)
{
        struct control_job *job;

        if (c->job || !(job = calloc(1, sizeof *job))) {
                if (free_fn)
                        free_fn(state);
                return c->job ? -EBUSY : -ENOMEM;
        }
        job->step = step;
        job->next = next;
        job->free_fn = free_fn;
        job->state = state;
        c->job = job;
        control_kick(c->ctl);
        return CONTROL_DEFERRED;
}

int control_conn_defer(struct control_conn *c, control_step_fn step, void (*free_fn)(void *),
                       void *state)
{
        return conn_set_job(c, step, NULL, free_fn, state);
}

int control_conn_reply_array(struct control_conn *c, control_chunk_fn next, void (*free_fn)(void *),
                             void *state)
{
        return conn_set_job(c, NULL, next, free_fn, state);
}

/* The reply is complete: free the work, send the events that waited for it. */
static void conn_job_end(struct control_conn *c)
{
        struct control_job *job = c->job;

        c->job = NULL;
        job_free(job);
        if (c->held) {
                char *h = c->held;
                size_t n = c->held_len;
                c->held = NULL;
                c->held_len = 0;
                conn_write(c, h, n, true);
        }
}

static void conn_job_step(struct control_conn *c)
{
        struct control_job *job = c->job;
        json_t *data = NULL;
        int r;

        c->errmsg[0] = 0;
        if (job->step) {
                r = job->step(c, job->state, &data);
                if (c->closing) {
                        json_decref(data);
                        return;
                }
                if (r > 0)
                        return;
                conn_reply(c, r, data);
                conn_job_end(c);
                return;
        }

        {
                json_t *arr = json_array();
                size_t n, clen = 0, hlen = job->started ? 0 : strlen(CTLPROTO_ARRAY_HEAD);
                char *chunk, *out;

                if (!arr) {
                        conn_close(c);
                        return;
                }
                r = job->next(c, job->state, CONTROL_CHUNK, arr);
                if (c->closing) {
                        json_decref(arr);
                        return;
                }
                if (r < 0) {
                        json_decref(arr);
                        if (!job->started) {
                                conn_reply_error(c, c->errmsg[0] ? c->errcode : r,
                                                 c->errmsg[0] ? c->errmsg : strerror(-r), false);
                                conn_job_end(c);
                        } else {
                                log_warning("control: reply to pid %d failed after %zu elements: "
                                            "%s; closing the connection",
                                            (int)c->peer.pid, job->sent, strerror(-r));
                                conn_close(c);
                        }
                        return;
                }
                n = json_array_size(arr);
                chunk = ctlproto_array_chunk(arr, job->sent == 0, &clen);
                out = chunk ? malloc(hlen + clen + sizeof CTLPROTO_ARRAY_TAIL) : NULL;
                if (!out) {
                        free(chunk);
                        conn_close(c);
                        return;
                }
                memcpy(out, CTLPROTO_ARRAY_HEAD, hlen);
                memcpy(out + hlen, chunk, clen);
                free(chunk);
                clen += hlen;
                if (r == 0) {
                        memcpy(out + clen, CTLPROTO_ARRAY_TAIL, strlen(CTLPROTO_ARRAY_TAIL));
                        clen += strlen(CTLPROTO_ARRAY_TAIL);
                }
                job->started = true;
                job->sent += n;
                if (clen > 0)
                        conn_write(c, out, clen, false);
                else
                        free(out);
                if (r == 0 && !c->closing)
                        conn_job_end(c);
        }
}

static const struct control_command *find_command(struct control *ctl, const char *name,
                                                  void **ret_userdata)
{
        for (size_t t = 0; t < ctl->n_tables; t++)
                for (size_t i = 0; i < ctl->tables[t].n; i++)
                        if (strcmp(ctl->tables[t].cmds[i].name, name) == 0) {
                                *ret_userdata = ctl->tables[t].userdata;
                                return &ctl->tables[t].cmds[i];
                        }
        return NULL;
}

static void conn_handle_line(struct control_conn *c, const char *line, size_t len)
{
        struct control *ctl = c->ctl;
        struct ctl_request req;
        const struct control_command *cmd;
        const char *err = NULL;
        json_t *data = NULL;
        void *ud = NULL;
        int r;

        r = ctlproto_parse_request(line, len, &req, &err);
        if (r < 0) {
                conn_reply_error(c, r, err, false);
                return;
        }
        cmd = find_command(ctl, req.cmd, &ud);
        if (!cmd) {
                char m[128];
                snprintf(m, sizeof m, "unknown command '%s'", req.cmd);
                conn_reply_error(c, -EOPNOTSUPP, m, false);
                goto out;
        }
        if (c->peer.level < cmd->level) {
                char m[320];
                if (*ctl->admin_name)
                        snprintf(m, sizeof m,
                                 "permission denied: '%s' needs root or the group %s "
                                 "([Control] AdminGroup=)",
                                 req.cmd, ctl->admin_name);
                else
                        snprintf(m, sizeof m,
                                 "permission denied: '%s' needs root (no [Control] AdminGroup= "
                                 "exists)",
                                 req.cmd);
                audit_limited(ctl, &c->peer, "ctl.denied", req.cmd,
                              json_pack("{si}", "pid", (int)c->peer.pid));
                conn_reply_error(c, -EPERM, m, false);
                goto out;
        }
        c->errmsg[0] = 0;
        r = cmd->fn(c, req.args, &data, ud);
        if (r == CONTROL_DEFERRED && c->job)
                json_decref(data); /* the reply comes from the job */
        else
                conn_reply(c, r == CONTROL_DEFERRED ? -EIO : r, data);
out:
        ctl_request_done(&req);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct control_conn *c = h->data;
        size_t want = c->ctl->opts.max_request + 1;

        if (c->cap - c->len < 4096 && c->off > 0) {
                memmove(c->buf, c->buf + c->off, c->len - c->off);
                c->len -= c->off;
                c->off = 0;
        }
        if (c->cap - c->len < 4096 && c->cap < want) {
                size_t cap = MIN(want, MAX(c->cap * 2, (size_t)4096));
                char *n = realloc(c->buf, cap);
                if (n) {
                        c->buf = n;
                        c->cap = cap;
                }
        }
        *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Read while there is room for a request. A client that pipelines more than MaxRequestSize= of
 * requests is not read from until the daemon has worked through them; an unterminated request
 * that long is refused. */
static void conn_check_input(struct control_conn *c)
{
        size_t pending = c->len - c->off;

        if (c->closing || c->close_after_write)
                return;
        if (pending >= c->ctl->opts.max_request) {
                if (c->reading)
                        uv_read_stop((uv_stream_t *)&c->pipe);
                c->reading = false;
                if (c->lines == 0) {
                        char m[96];
                        snprintf(m, sizeof m, "request larger than %zu bytes",
                                 c->ctl->opts.max_request);
                        conn_reply_error(c, -E2BIG, m, true);
                }
                return;
        }
        if (!c->reading && uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read) >= 0)
                c->reading = true;
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct control_conn *c = s->data;
        const char *p;

        if (nread < 0) {
                conn_close(c);
                return;
        }
        if (c->close_after_write || c->closing || nread == 0)
                return;
        c->last_active = uv_now(c->ctl->loop);
        if (c->topic)
                return; /* a streaming connection takes no further commands */
        p = c->buf + c->len;
        c->len += (size_t)nread;
        for (const char *e = c->buf + c->len; (p = memchr(p, '\n', (size_t)(e - p))); p++)
                c->lines++;
        if (c->lines)
                control_kick(c->ctl);
        conn_check_input(c);
}

/* Handle the next request line of c. */
static void conn_take_line(struct control_conn *c)
{
        char *start = c->buf + c->off;
        char *nl = memchr(start, '\n', c->len - c->off);
        size_t l;

        if (!nl) { /* cannot happen: lines counts them */
                c->lines = 0;
                return;
        }
        l = (size_t)(nl - start);
        c->off += l + 1;
        c->lines--;
        conn_handle_line(c, start, l);
        if (c->closing)
                return;
        if (c->off == c->len || c->topic) {
                /* After a follow request nothing more is read as a command. */
                c->off = c->len = 0;
                c->lines = 0;
        }
        conn_check_input(c);
}

/* The scheduler. */

static bool conn_runnable(const struct control_conn *c)
{
        if (c->closing || c->close_after_write)
                return false;
        if (!c->job && (c->topic || c->lines == 0))
                return false;
        return c->queued <= CONTROL_OUTQ_LOW;
}

static void conn_run_once(struct control_conn *c)
{
        c->last_active = uv_now(c->ctl->loop);
        if (c->job)
                conn_job_step(c);
        else
                conn_take_line(c);
}

/* One loop turn's work: a request or a step for every admin connection that has one, then for
 * the read-only ones in turn, round robin, as long as CONTROL_TURN_NS lasts (at least one). The
 * loop polls its sockets (without blocking: an idle handle is active) between turns, so nothing
 * a client asks for holds the daemon up for longer than a step. */
static void work_cb(uv_idle_t *h)
{
        struct control *ctl = h->data;
        uint64_t start = uv_hrtime();
        struct control_conn *c, *next;
        unsigned k, served = 0;
        bool more = false;

        for (c = ctl->conns; c; c = next) {
                next = c->next;
                if (c->peer.level == CONTROL_ADMIN && conn_runnable(c))
                        conn_run_once(c);
        }
        k = ctl->n_conns;
        for (unsigned i = 0; i < k && ctl->conns; i++) {
                if (served > 0 && uv_hrtime() - start > CONTROL_TURN_NS)
                        break;
                c = ctl->conns;
                list_unlink(ctl, c);
                list_append(ctl, c);
                if (c->peer.level == CONTROL_ADMIN || !conn_runnable(c))
                        continue;
                conn_run_once(c);
                served++;
        }
        for (c = ctl->conns; c && !more; c = c->next)
                more = conn_runnable(c);
        if (!more)
                uv_idle_stop(&ctl->work);
}

static void control_kick(struct control *ctl)
{
        if (!ctl->stopping)
                uv_idle_start(&ctl->work, work_cb);
}

/* Refused peers and denied commands are audited, but a local user must not be able to flood the
 * audit log with them: at most RefusalsPerMinute records a minute, the rest counted in one
 * ctl.refused.suppressed record. Takes details. */
static void audit_limited(struct control *ctl, const struct control_peer *p, const char *event,
                          const char *subject, json_t *details)
{
        uint64_t now = uv_now(ctl->loop) * USEC_PER_MSEC;
        unsigned suppressed = ratelimit_window_roll(&ctl->refusal_lim, now);

        if (suppressed)
                audit_log(ctl->audit, "daemon", "ctl.refused.suppressed", "",
                          json_pack("{si}", "count", (int)suppressed));
        if (ratelimit_window_allow(&ctl->refusal_lim, now))
                audit_log(ctl->audit, p->actor, event, subject, details);
        else
                json_decref(details);
}

static void audit_refusal(struct control *ctl, const struct control_peer *p)
{
        audit_limited(ctl, p, "ctl.refused", "",
                      json_pack("{si si}", "pid", (int)p->pid, "gid", (int)p->gid));
}

static unsigned admin_reserve(const struct control *ctl)
{
        return MAX(ctl->opts.max_clients / 4, 1u);
}

unsigned control_tier_limit(const struct control *ctl, enum control_level level)
{
        unsigned max = ctl->opts.max_clients;

        if (level == CONTROL_ADMIN)
                return max;
        if (level == CONTROL_READ)
                return max > admin_reserve(ctl) ? max - admin_reserve(ctl) : 1;
        return 0;
}

unsigned control_tier_clients(const struct control *ctl, enum control_level level)
{
        return level == CONTROL_ADMIN || level == CONTROL_READ ? ctl->n_tier[level] : 0;
}

static void on_connection(uv_stream_t *server, int status)
{
        struct control *ctl = server->data;
        struct control_conn *c;
        struct ucred cred;
        socklen_t len = sizeof cred;
        uv_os_fd_t fd;

        if (status < 0) {
                log_warning("control: accept failed: %s", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof *c);
        if (!c)
                return;
        c->ctl = ctl;
        uv_pipe_init(ctl->loop, &c->pipe, 0);
        c->pipe.data = c;
        list_append(ctl, c);
        ctl->n_conns++;
        c->last_active = uv_now(ctl->loop);

        if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
                conn_close(c);
                return;
        }
        if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                log_warning("control: cannot identify peer: %m");
                conn_close(c);
                return;
        }
        c->peer.pid = cred.pid;
        c->peer.uid = cred.uid;
        c->peer.gid = cred.gid;
        c->peer.level = peer_level(ctl, fd, &cred);
        snprintf(c->peer.actor, sizeof c->peer.actor, "cli:uid=%u", (unsigned)cred.uid);

        if (c->peer.level == CONTROL_NONE) {
                char m[320];
                log_notice("control: refusing uid %u (pid %d): not root, not in the admin or "
                           "read-only group",
                           (unsigned)cred.uid, (int)cred.pid);
                audit_refusal(ctl, &c->peer);
                snprintf(m, sizeof m,
                         "permission denied: uid %u may not use this socket: it takes root or "
                         "the group %s (admin) or %s (read-only)",
                         (unsigned)cred.uid, *ctl->admin_name ? ctl->admin_name : "-",
                         *ctl->ro_name ? ctl->ro_name : "-");
                conn_reply_error(c, -EACCES, m, true);
                return;
        }
        /* Each tier within its own limit, and the admins' share kept for them: however many
         * connections read-only peers open (followers included), root still gets in. */
        if (control_tier_clients(ctl, c->peer.level) >= control_tier_limit(ctl, c->peer.level) ||
            (ctl->n_tier[CONTROL_READ] + ctl->n_tier[CONTROL_ADMIN] >= ctl->opts.max_clients &&
             (c->peer.level != CONTROL_ADMIN ||
              ctl->n_tier[CONTROL_ADMIN] >= admin_reserve(ctl)))) {
                char m[128];
                snprintf(m, sizeof m, "too many control clients (%u of %u for the %s tier)",
                         control_tier_clients(ctl, c->peer.level),
                         control_tier_limit(ctl, c->peer.level),
                         c->peer.level == CONTROL_ADMIN ? "admin" : "read-only");
                conn_reply_error(c, -EBUSY, m, true);
                return;
        }
        c->counted = true;
        ctl->n_tier[c->peer.level]++;
        if (uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read) >= 0)
                c->reading = true;
}

static void sweep_cb(uv_timer_t *t)
{
        struct control *ctl = t->data;
        uint64_t now = uv_now(ctl->loop);
        struct control_conn *c, *next;

        /* Idle: no request, and nothing of a reply read, for a minute. Followers wait for
         * events as long as they like, but not with a reply they do not read. */
        for (c = ctl->conns; c; c = next) {
                next = c->next;
                if ((!c->topic || c->job) && now - c->last_active > CONTROL_IDLE_MS)
                        conn_close(c);
        }
}

static int listen_socket(const char *path, mode_t mode, const char *group)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        struct stat st;
        mode_t old;
        int r;

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        /* Remove a stale socket, but never some other file that happens to be there. */
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(-EEXIST, "control: %s exists and is not a socket",
                                               path);
                unlink(path);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        old = umask(0777 & ~mode);
        r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
        umask(old);
        if (r < 0)
                return log_error_errno(-errno, "control: cannot bind %s: %m", path);
        if (chmod(path, mode) < 0)
                return log_error_errno(-errno, "control: cannot chmod %s: %m", path);
        if (group) {
                struct group *g = getgrnam(group);
                /* The unit runs us with that group already (the usual case): no chown(), which
                 * its seccomp filter (~@privileged) would refuse. */
                if (g && g->gr_gid != getegid() && chown(path, (uid_t)-1, g->gr_gid) < 0)
                        log_warning("control: cannot give %s to group %s: %m", path, group);
        }
        if (listen(fd, 64) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int control_new(uv_loop_t *loop, struct audit *audit, const struct control_options *opts,
                int listen_fd, struct control **ret)
{
        struct control *ctl = calloc(1, sizeof *ctl);
        int fd = listen_fd, r;

        if (!ctl)
                return -ENOMEM;
        ctl->loop = loop;
        ctl->audit = audit;
        ratelimit_window_init(&ctl->refusal_lim, opts->refusals_per_min, 60 * USEC_PER_SEC,
                              uv_now(loop) * USEC_PER_MSEC);
        control_update(ctl, opts);

        if (fd < 0) {
                fd = listen_socket(opts->path, opts->mode, opts->readonly_group);
                if (fd < 0) {
                        free(ctl);
                        return fd;
                }
                ctl->path = strdup(opts->path);
        }
        uv_pipe_init(loop, &ctl->server, 0);
        ctl->server.data = ctl;
        r = uv_pipe_open(&ctl->server, fd);
        if (r >= 0)
                r = uv_listen((uv_stream_t *)&ctl->server, 64, on_connection);
        if (r < 0) {
                log_error("control: cannot listen: %s", uv_strerror(r));
                /* Freed in the close callback, once the loop runs. */
                ctl->stopping = true;
                ctl->pending_closes = 1;
                uv_close((uv_handle_t *)&ctl->server, control_handle_closed);
                return r;
        }
        uv_idle_init(loop, &ctl->work);
        ctl->work.data = ctl;
        uv_timer_init(loop, &ctl->sweep);
        ctl->sweep.data = ctl;
        uv_timer_start(&ctl->sweep, sweep_cb, CONTROL_SWEEP_MS, CONTROL_SWEEP_MS);
        uv_unref((uv_handle_t *)&ctl->sweep);
        *ret = ctl;
        return 0;
}

int control_add_commands(struct control *ctl, const struct control_command *cmds, size_t n,
                         void *userdata)
{
        struct control_table *t = realloc(ctl->tables, (ctl->n_tables + 1) * sizeof *t);
        if (!t)
                return -ENOMEM;
        ctl->tables = t;
        ctl->tables[ctl->n_tables++] = (struct control_table){ cmds, n, userdata };
        return 0;
}

unsigned control_clients(const struct control *ctl)
{
        return ctl->n_conns;
}

static void control_maybe_free(struct control *ctl)
{
        if (!ctl->stopping || ctl->pending_closes > 0)
                return;
        free(ctl->tables);
        free(ctl->path);
        free(ctl);
}

static void control_handle_closed(uv_handle_t *h)
{
        struct control *ctl = h->data;
        ctl->pending_closes--;
        control_maybe_free(ctl);
}

void control_stop(struct control *ctl)
{
        if (!ctl)
                return;
        while (ctl->conns)
                conn_close(ctl->conns);
        if (ctl->path)
                unlink(ctl->path);
        ctl->stopping = true;
        ctl->pending_closes += 3;
        uv_close((uv_handle_t *)&ctl->server, control_handle_closed);
        uv_close((uv_handle_t *)&ctl->sweep, control_handle_closed);
        uv_close((uv_handle_t *)&ctl->work, control_handle_closed);
}

int control_config_parse_max_clients(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 1024, reason);
}
