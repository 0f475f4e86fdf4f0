/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway end of the MCU link. See link.h for the contract and docs/protocol.md for the
 * protocol. Shape: one struct link per stream connection or open serial port, each driven by a
 * uv_poll handle on its fd; a 1 s sweep timer enforces handshake and idle timeouts and rolls the
 * audit limiters. Per-link memory is fixed (deframer buffer, responder, ack ring) plus an output
 * queue that is only allocated when the peer does not read fast enough and is bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "basic/ratelimit.h"
#include "basic/slab.h"
#include "basic/rlimit-util.h"
#include "basic/time-util.h"
#include "basic/hexdecoct.h"
#include "mcugw/proto.h"
#include "posix_openssl.h"

#include "audit/audit.h"
#include "devices/onboard.h"
#include "link/ackq.h"
#include "link/link.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "devices/registry.h"
#include "link/transport.h"
#include "basic/fileio.h"

#define LINK_OUT_MAX (32u * 1024u)  /* queued output per link before we give up on the peer */
#define LINK_READ_BUF (16u * 1024u) /* one read() */
#define LINK_READS_PER_EVENT 4      /* fairness: at most this many reads per poll callback */
#define LINK_PENDING_ACKS 64        /* telemetry handed out, waiting for link_manager_ack() */
#define LINK_RX_CAP (MCUGW_FRAME_MAX + MCUGW_CRC_LEN) /* the deframer's buffer */
#define LINK_HASH_BUCKETS 4096u
#define LINK_NAME_MAX 79u /* "unix:/run/mcugw/link.sock#17", "serial:/dev/ttyUSB0" */
#define LINK_SWEEP_MS 1000u
#define LINK_BACKOFF_MIN_MS 500u
#define LINK_BACKOFF_MAX_MS 30000u
#define LINK_STABLE_MS 5000u /* a port that stayed open this long resets its backoff */
#define LINK_TOUCH_MS 1000u  /* registry_touch() at most once a second per device */
#define LINK_SOURCE_BUCKETS 1024u
#define LINK_CMD_BYTES_MAX (1024u * 1024u) /* commands waiting, all devices together */
/* A command goes out only while the output queue has room for it and the same again: the rest
 * of the queue stays for acks and pings, so commands can never get a device cut off. */
#define LINK_CMD_OUT_MAX (LINK_OUT_MAX / 2u)
/* NOSESSION answers per link (docs/protocol.md, "Liveness"): enough for a device to learn at
 * once, few enough that a line full of stale or forged DATA gets little back. */
#define LINK_NOSESSION_RATE 2.0
#define LINK_NOSESSION_BURST 2.0
/* COOKIE answers per link (docs/protocol.md, "Handshake flood resistance"): an honest device
 * needs one per handshake under load; each is smaller than the HS1 that caused it. */
#define LINK_COOKIE_RATE 10.0
#define LINK_COOKIE_BURST 10.0
/* ERROR answers per link (docs/protocol.md, section 7): enough to tell a developer what is
 * wrong with a message, never a stream a confused device could keep busy. */
#define LINK_ERROR_RATE 1.0
#define LINK_ERROR_BURST 2.0
#define LINK_ERROR_TEXT_MAX (MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD - 4u)
/* Command ids sent to a device whose result has not come back yet. A result for any other id is
 * dropped (`stray_results`): the cloud only ever hears about commands it sent. */
#define LINK_CMD_OUTSTANDING 32u

/* A JIT device waits for an operator: its retries are not failed authentications. */
static const char REJECT_PENDING[] = "pending approval";

/* Every counter we keep, per device and in total. X(name). */
/* clang-format off */
#define LINK_COUNTERS(X)                                                                           \
        X(frames_in) X(frames_out) X(bytes_in) X(bytes_out) X(telemetry) X(telemetry_bytes)       \
        X(acks_sent) X(status_msgs) X(pings) X(keepalives) X(command_results) X(errors_received)  \
        X(handshakes) X(auth_failures) X(hs_throttled) X(mac_errors) X(replays) X(bad_session)    \
        X(truncated) X(crc_errors) X(cobs_errors) X(oversize) X(runts) X(malformed) X(unhandled)  \
        X(tx_dropped) X(takeovers) X(commands) X(commands_busy) X(nosession_sent) X(dup)          \
        X(unknown_type) X(hs_pending) X(stray_results) X(errors_sent) X(too_big)                 \
        X(junk_mac1) X(cookie_sent) X(hs_cookie) X(replay_ts) X(old_version) X(no_memory)      \
/* clang-format on */

struct link_counters {
#define X(n) uint64_t n;
        LINK_COUNTERS(X)
#undef X
};

/* The counters every session of a healthy device moves. A device keeps these inline and the rest
 * (errors, refusals) in a block allocated with the first of them, so that a connected device
 * does not carry 29 zeros. */
#define LINK_HOT_COUNTERS(X)                                                                       \
        X(frames_in) X(frames_out) X(bytes_in) X(bytes_out) X(telemetry) X(telemetry_bytes)       \
        X(acks_sent) X(status_msgs) X(pings) X(keepalives) X(command_results) X(handshakes)       \
        X(commands)

enum {
#define X(n) LC_##n,
        LINK_COUNTERS(X)
#undef X
        LC_MAX
};

enum {
#define X(n) LCH_##n,
        LINK_HOT_COUNTERS(X)
#undef X
        LCH_MAX
};

/* Counter -> its inline slot + 1, or 0: kept in the device's rare block. */
static const uint8_t lc_hot[LC_MAX] = {
#define X(n) [LC_##n] = LCH_##n + 1,
        LINK_HOT_COUNTERS(X)
#undef X
};

/* A cloud command waiting for its turn (CommandsPerSecond=, room in the output queue). */
struct link_cmd {
        struct link_cmd *next;
        uint32_t id;
        uint32_t len;
        uint8_t payload[];
};

/* What we know about one registered device, connected or not. Created on first contact. */
struct link_dev {
        char id[MCUGW_DEVICE_ID_MAX + 1];
        struct link_dev *hnext;
        struct link *link; /* carrying its session now, or NULL */
        uint64_t hot[LCH_MAX]; /* LINK_HOT_COUNTERS */
        uint64_t *rare;        /* LC_MAX counters indexed by LC_*, from the first rare one on */
        int64_t last_seen_us;
        uint64_t last_touch_ms;
        uint64_t hs_ts; /* newest handshake timestamp seen (hs_ts_set): older ones are replays */
        uint8_t hs_ts_key[32]; /* ... under this key: a re-enrolled key starts afresh */
        bool hs_ts_set;
        char *link_name; /* the link it left (strdup), while not connected: NULL if unknown */
        /* auth.ok / link.down records: SessionAuditsPerMinute=, the rest counted and summed up
         * in link.flapping records */
        struct ratelimit_window sess_lim;
        bool sess_lim_init, on_flap_list;
        unsigned sup_ok, sup_down;
        uint64_t takeovers_reported;
        struct link_dev *flap_next;
        struct link_dev_cmds *cmd; /* from its first command on, or NULL */
};

/* A device's cloud commands: paced, a bounded queue, the ids whose result is due. Allocated with
 * the first command sent to the device (one per registered device at most) and kept, so that the
 * pace holds across sessions; a device that never gets a command never pays for it. */
struct link_dev_cmds {
        struct ratelimit bucket;
        struct link_cmd *head, *tail;
        unsigned n;
        bool on_list;
        uint8_t out_next;                   /* when all are due, the next one to forget */
        uint32_t out_used;                  /* bit i: out[i] is due */
        struct link_dev *next;              /* on m->cmd_list */
        uint32_t out[LINK_CMD_OUTSTANDING]; /* ids sent whose result is still due */
};

/* Connections of one source (address or uid) that have not authenticated yet. */
struct link_source {
        struct link_source *next;
        struct transport_source s;
        unsigned pending;
};

/* A handshake in flight on a link: the responder's pending session and cached answer, and what
 * the lookup learned about the claimed device. Allocated for a message 1 that passed mac1 and
 * the handshake budgets, freed once its session is confirmed (or nothing is pending after the
 * message 1 failed, or the link closes): an established session does not carry it, and there
 * is at most one per link (MaxConnections=, the budgets bound how often it is made). */
struct link_hs {
        struct mcugw_responder_hs r;
        const char *reject_reason; /* set by the lookup callback */
        char reject_buf[96];       /* a reject_reason naming the device */
        char claimed_id[MCUGW_DEVICE_ID_MAX + 1];
        uint8_t claimed_key[32];
        bool claimed_key_valid;
};
_Static_assert(sizeof(struct link_hs) <= 1024, "struct link_hs: several to a page (basic/slab.h)");

/* The limits of a link that only a peer under load or in error meets. Made on first use (a full
 * bucket then is what it would have been since the link opened) and kept until the link closes,
 * so that a healthy session does not carry them. */
struct link_limits {
        struct ratelimit hs2_bucket;    /* HS1 with a valid mac2 once hs_bucket is spent */
        struct ratelimit cookie_bucket; /* COOKIE answers */
        struct ratelimit nosession_bucket;
        struct ratelimit error_bucket;
        struct ratelimit_window audit_lim;
};

struct serial_port;
struct listener;

struct link {
        uv_poll_t poll;
        struct link_manager *m;
        struct link *prev, *next; /* all links */
        struct link *gnext;       /* generation hash chain */
        struct serial_port *port; /* NULL for a stream connection */
        struct listener *listener;
        struct link_source *src;         /* while on the pending list */
        struct link *pprev_link, *pnext; /* pending list: accepted, not authenticated */
        bool pending;
        bool closing;
        bool version_warned; /* logged once that the peer speaks another protocol version */
        bool drain_wanted;   /* reached LINK_QUEUE_LOW or refused: on_drained when below it */
        int fd;
        uint32_t gen;
        int poll_events;
        uint64_t opened_ms, last_rx_ms;
        uint64_t keepalive_ms; /* when we last sent a keepalive PING */
        struct link_dev *dev;  /* the authenticated device */
        struct mcugw_deframer df;
        struct mcugw_responder r;
        struct ratelimit hs_bucket;
        struct link_limits *lim; /* from the first of them on, or NULL */
        uint64_t serial;           /* unique per manager: what a cookie is bound to */
        struct link_hs *hs; /* a handshake in flight, or NULL */
        uint8_t *out;
        uint32_t out_len, out_cap;
        struct ackq pend; /* telemetry handed out, waiting for its ACK (ackq.h) */
        /* A frame cut between two reads, and only then: whole frames are decoded in the
         * manager's rxscratch, so a connected device costs no receive buffer between messages. */
        uint8_t *rxbuf;
        char name[]; /* as long as it is, up to LINK_NAME_MAX */
};

struct listener {
        uv_poll_t poll;
        struct link_manager *m;
        struct listener *next;
        struct transport_endpoint ep;
        int fd;
        unsigned connections;
        char name[128];
};

struct serial_port {
        uv_timer_t timer;
        struct link_manager *m;
        struct serial_port *next;
        struct transport_endpoint ep;
        struct link *link;
        uint64_t backoff_ms;
        unsigned opens, failures;
        int last_error;
        char name[128];
};

struct link_manager {
        struct onboard *onboard; /* just-in-time onboarding (link_manager_set_onboard) */
        link_ota_fn ota_fn;      /* OTA engine (link_manager_set_ota_handler) */
        void *ota_ud;
        link_config_result_fn config_fn; /* the shadow (link_manager_set_config_handler) */
        void *config_ud;
        struct link_listener *ev_listeners; /* session events (link_manager_add_listener) */
        uv_loop_t *loop;
        struct audit *audit;
        struct registry *reg;
        struct link_callbacks cb;
        uint8_t priv[32], pub[32];
        char pub_b64[45];
        struct mcugw_responder_config rcfg;
        struct slab hs_slab; /* struct link_hs: made in bursts, short-lived (basic/slab.h) */
        unsigned max_connections, max_pending_per_source;
        unsigned session_audit_per_min;
        unsigned command_queue;
        double commands_per_s;
        uint64_t hs_timeout_ms, idle_timeout_ms;
        double hs_rate_link;
        unsigned audit_per_min;
        struct link *links;
        unsigned n_links, n_stream_links;
        struct listener *listeners;
        struct serial_port *ports;
        uv_timer_t sweep;
        unsigned handles;
        bool stopping;
        uint32_t next_gen;
        struct ratelimit hs_bucket;
        struct ratelimit hs2_bucket; /* gateway-wide budget of HS1 with a valid mac2 */
        struct ratelimit_window audit_lim;
        uint64_t next_serial;
        uint8_t cookie_secret[32]; /* replaced every MCUGW_COOKIE_SECRET_MS */
        uint64_t cookie_secret_ms;
        bool cookie_secret_set;
        uint64_t refused_connections, accepted_connections, hs_timeouts, idle_timeouts;
        uint64_t refused_per_source, evicted_connections, sessions_suppressed;
        uint64_t suppressed_audits;
        /* Accepted stream connections without an authenticated session, oldest first. */
        struct link *pending_head, *pending_tail;
        unsigned n_pending;
        struct link_source *src_hash[LINK_SOURCE_BUCKETS];
        struct link_dev *flap_list; /* devices with suppressed session records */
        struct link_dev *cmd_list;  /* devices with queued commands */
        size_t cmd_bytes;
        uv_timer_t cmd_timer;
        struct link_counters tot;
        struct link *gen_hash[LINK_HASH_BUCKETS];
        struct link_dev *dev_hash[LINK_HASH_BUCKETS];
        size_t n_devs;
        uint8_t rbuf[LINK_READ_BUF];
        uint8_t rxscratch[LINK_RX_CAP]; /* every link's deframer between reads (struct link) */
        uint8_t txbuf[MCUGW_FRAME_MAX];
        uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
};

static void dev_count(struct link_dev *d, unsigned i, uint64_t n)
{
        if (lc_hot[i])
                d->hot[lc_hot[i] - 1] += n;
        else if (d->rare || (d->rare = calloc(LC_MAX, sizeof *d->rare)))
                d->rare[i] += n; /* without memory for the block, the device's count is lost */
}

static uint64_t dev_counter(const struct link_dev *d, unsigned i)
{
        if (lc_hot[i])
                return d->hot[lc_hot[i] - 1];
        return d->rare ? d->rare[i] : 0;
}

static void dev_counters(const struct link_dev *d, struct link_counters *ret)
{
#define X(n) ret->n = dev_counter(d, LC_##n);
        LINK_COUNTERS(X)
#undef X
}

#define DEV_COUNT(d, field, n) dev_count((d), LC_##field, (n))
#define DEV_COUNTER(d, field) dev_counter((d), LC_##field)

#define COUNT(l, field, n)                                                                         \
        do {                                                                                       \
                (l)->m->tot.field += (n);                                                          \
                if ((l)->dev)                                                                      \
                        DEV_COUNT((l)->dev, field, (n));                                           \
        } while (0)

static void link_close(struct link *l, const char *reason);
static void on_link_poll(uv_poll_t *h, int status, int events);
static void cmd_timer_arm(struct link_manager *m, uint64_t ms);
static bool cmd_out_take(struct link_dev *d, uint32_t id);

/* A buffer the link needed could not be had: the session ends (the device reconnects) rather
 * than losing what it sent unnoticed; counted apart from everything a peer does wrong. */
static void link_close_nomem(struct link *l)
{
        COUNT(l, no_memory, 1);
        link_close(l, "out of memory");
}

/* ---- pure helpers ------------------------------------------------------------------------ */

int link_key_load(const char *path, uint8_t priv[32], unsigned *ret_mode)
{
        _cleanup_close_ int fd = -1;
        char buf[128];
        struct stat st;
        ssize_t n;
        size_t len;
        int r;

        /* Never block on a FIFO or device named PrivateKeyFile= (fileio_open()). */
        fd = fileio_open(path, 0, 4096, &st, NULL, 0);
        if (fd == -EISDIR || fd == -EINVAL) { /* not a regular file: say what it is */
                if (ret_mode && stat(path, &st) == 0)
                        *ret_mode = st.st_mode & (S_IFMT | 07777);
                return -EPERM;
        }
        if (fd < 0)
                return fd;
        if (ret_mode)
                *ret_mode = st.st_mode & 07777;
        if (st.st_mode & 077)
                return -EPERM;
        n = read(fd, buf, sizeof buf - 1);
        if (n < 0)
                return -errno;
        len = (size_t)n;
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
                len--;
        r = key_from_base64(buf, len, priv) < 0 ? -EBADMSG : 0;
        OPENSSL_cleanse(buf, sizeof buf);
        return r;
}

int link_key_create(const char *path, uint8_t priv[32])
{
        _cleanup_close_ int fd = -1;
        char b64[46];
        ssize_t n;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0600) < 0 || RAND_bytes(priv, 32) != 1)
                goto fail;
        key_to_base64(priv, b64);
        b64[44] = '\n';
        n = write(fd, b64, 45);
        OPENSSL_cleanse(b64, sizeof b64);
        if (n != 45 || fsync(fd) < 0)
                goto fail;
        return 0;
fail:
        unlink(path);
        OPENSSL_cleanse(priv, 32);
        return errno ? -errno : -EIO;
}

/* ---- bookkeeping ------------------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return h;
}

static uint64_t now_ms(struct link_manager *m)
{
        return uv_now(m->loop);
}

static struct link_dev *dev_find(struct link_manager *m, const char *id)
{
        for (struct link_dev *d = m->dev_hash[hash_str(id) % LINK_HASH_BUCKETS]; d; d = d->hnext)
                if (strcmp(d->id, id) == 0)
                        return d;
        return NULL;
}

/* Only registered devices get an entry, so a peer cannot make this table grow. */
static struct link_dev *dev_get(struct link_manager *m, const char *id)
{
        struct link_dev *d = dev_find(m, id);
        uint32_t b;

        if (d)
                return d;
        if (!m->reg || !registry_find(m->reg, id))
                return NULL;
        d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        snprintf(d->id, sizeof d->id, "%s", id);
        b = hash_str(id) % LINK_HASH_BUCKETS;
        d->hnext = m->dev_hash[b];
        m->dev_hash[b] = d;
        m->n_devs++;
        return d;
}

static void gen_unhash(struct link *l)
{
        struct link **pp = &l->m->gen_hash[l->gen % LINK_HASH_BUCKETS];
        for (; *pp; pp = &(*pp)->gnext)
                if (*pp == l) {
                        *pp = l->gnext;
                        break;
                }
        l->gnext = NULL;
}

/* A new generation: ack tokens of the previous session on this link become void. */
static void gen_bump(struct link *l)
{
        struct link_manager *m = l->m;
        if (l->gen)
                gen_unhash(l);
        if (++m->next_gen == 0)
                m->next_gen = 1;
        l->gen = m->next_gen;
        l->gnext = m->gen_hash[l->gen % LINK_HASH_BUCKETS];
        m->gen_hash[l->gen % LINK_HASH_BUCKETS] = l;
        ackq_clear(&l->pend);
}

static struct link *gen_find(struct link_manager *m, uint32_t gen)
{
        for (struct link *l = m->gen_hash[gen % LINK_HASH_BUCKETS]; l; l = l->gnext)
                if (l->gen == gen)
                        return l;
        return NULL;
}

static void manager_maybe_free(struct link_manager *m)
{
        if (!m->stopping || m->handles > 0)
                return;
        for (size_t i = 0; i < LINK_HASH_BUCKETS; i++)
                while (m->dev_hash[i]) {
                        struct link_dev *d = m->dev_hash[i];
                        m->dev_hash[i] = d->hnext;
                        while (d->cmd && d->cmd->head) {
                                struct link_cmd *c = d->cmd->head;
                                d->cmd->head = c->next;
                                free(c);
                        }
                        free(d->cmd);
                        free(d->link_name);
                        free(d->rare);
                        free(d);
                }
        OPENSSL_cleanse(m->priv, sizeof m->priv);
        free(m);
}

static void audit_json(struct link_manager *m, const char *actor, const char *event,
                       const char *subject, json_t *details)
{
        if (m->audit)
                audit_log(m->audit, actor, event, subject, details);
        else
                json_decref(details);
}

/* The link's struct link_limits; NULL without memory (the caller then refuses what it limits). */
static struct link_limits *link_limits(struct link *l)
{
        struct link_manager *m = l->m;
        uint64_t t = now_ms(m) * USEC_PER_MSEC;

        if (l->lim)
                return l->lim;
        l->lim = malloc(sizeof *l->lim);
        if (!l->lim)
                return NULL;
        ratelimit_init(&l->lim->hs2_bucket, m->hs_rate_link, MAX(m->hs_rate_link * 2, 4.0), t);
        ratelimit_init(&l->lim->cookie_bucket, LINK_COOKIE_RATE, LINK_COOKIE_BURST, t);
        ratelimit_init(&l->lim->nosession_bucket, LINK_NOSESSION_RATE, LINK_NOSESSION_BURST, t);
        ratelimit_init(&l->lim->error_bucket, LINK_ERROR_RATE, LINK_ERROR_BURST, t);
        ratelimit_window_init(&l->lim->audit_lim, m->audit_per_min, 60 * USEC_PER_SEC, t);
        return l->lim;
}

/* Audit a failure-type event unless this link or the whole gateway is over its budget. */
static bool audit_allowed(struct link *l)
{
        struct link_limits *lim = link_limits(l);
        uint64_t t = now_ms(l->m);
        if (!lim || !ratelimit_window_allow(&lim->audit_lim, t * USEC_PER_MSEC))
                return false;
        if (!ratelimit_window_allow(&l->m->audit_lim, t * USEC_PER_MSEC)) {
                l->m->suppressed_audits++;
                return false;
        }
        return true;
}

static void audit_flush_suppressed(struct link *l, bool force)
{
        unsigned s;

        if (!l->lim) /* nothing was ever audited on it */
                return;
        s = force ? l->lim->audit_lim.suppressed
                  : ratelimit_window_roll(&l->lim->audit_lim, now_ms(l->m) * USEC_PER_MSEC);
        if (force)
                l->lim->audit_lim.suppressed = 0;
        if (!s)
                return;
        l->m->suppressed_audits += s;
        /* Summaries count against the gateway budget too: many short-lived connections must
         * not turn them into a flood. Over budget they fold into the gateway's summary. */
        if (ratelimit_window_allow(&l->m->audit_lim, now_ms(l->m) * USEC_PER_MSEC))
                audit_json(l->m, "daemon", "link.audit_suppressed", l->name,
                           json_pack("{ss si}", "link", l->name, "count", (int)s));
        else
                l->m->audit_lim.suppressed += s - 1; /* allow() counted one already */
}

/* auth.ok and link.down of one device: SessionAuditsPerMinute= of them a minute, the rest are
 * counted. The first suppressed one is announced at once (link.flapping, "suppressing"), the
 * counts follow when the minute is over (on_sweep), so a device whose session flaps — two
 * devices sharing a key take it from each other — costs a few records a minute, not thousands. */
static bool session_audit_allowed(struct link_manager *m, struct link_dev *d, bool up)
{
        uint64_t t = now_ms(m);

        if (!d->sess_lim_init) {
                ratelimit_window_init(&d->sess_lim, m->session_audit_per_min, 60 * USEC_PER_SEC,
                                      t * USEC_PER_MSEC);
                d->sess_lim_init = true;
        }
        if (ratelimit_window_allow(&d->sess_lim, t * USEC_PER_MSEC))
                return true;
        if (up)
                d->sup_ok++;
        else
                d->sup_down++;
        m->sessions_suppressed++;
        if (!d->on_flap_list) {
                d->on_flap_list = true;
                d->flap_next = m->flap_list;
                m->flap_list = d;
                d->takeovers_reported = DEV_COUNTER(d, takeovers);
                audit_json(m, "daemon", "link.flapping", d->id,
                           json_pack("{ss si si sI}", "state", "suppressing", "limit",
                                     (int)m->session_audit_per_min, "window_ms", 60000,
                                     "takeovers", (json_int_t)DEV_COUNTER(d, takeovers)));
                log_device(LOG_WARNING, d->id,
                           "session flapping: more than %u session records this minute; the "
                           "rest are counted",
                           m->session_audit_per_min);
        }
        return false;
}

/* The minute of a flapping device is over: one record with what was suppressed in it. */
static void session_audit_roll(struct link_manager *m, uint64_t now)
{
        for (struct link_dev **pp = &m->flap_list; *pp;) {
                struct link_dev *d = *pp;
                if (now * USEC_PER_MSEC < d->sess_lim.start_usec + d->sess_lim.interval_usec) {
                        pp = &d->flap_next;
                        continue;
                }
                ratelimit_window_roll(&d->sess_lim, now * USEC_PER_MSEC);
                audit_json(m, "daemon", "link.flapping", d->id,
                           json_pack("{ss si si sI si}", "state", "summary", "auth_ok",
                                     (int)d->sup_ok, "link_down", (int)d->sup_down, "takeovers",
                                     (json_int_t)(DEV_COUNTER(d, takeovers) - d->takeovers_reported),
                                     "window_ms", 60000));
                d->sup_ok = d->sup_down = 0;
                d->on_flap_list = false;
                *pp = d->flap_next;
                d->flap_next = NULL;
        }
}

/* ---- sources: per-source limits and eviction of unauthenticated connections --------------- */

static uint32_t hash_bytes(const uint8_t *p, size_t n)
{
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 16777619u;
        return h;
}

static struct link_source *source_find(struct link_manager *m, const struct transport_source *s)
{
        uint32_t b = hash_bytes(s->key, sizeof s->key) % LINK_SOURCE_BUCKETS;
        for (struct link_source *x = m->src_hash[b]; x; x = x->next)
                if (memcmp(x->s.key, s->key, sizeof s->key) == 0)
                        return x;
        return NULL;
}

/* A new stream connection waits for its session at the end of the pending list. */
static void pending_list_add(struct link *l, const struct transport_source *s)
{
        struct link_manager *m = l->m;
        struct link_source *x = s ? source_find(m, s) : NULL;

        if (s && !x && (x = calloc(1, sizeof *x))) {
                uint32_t b = hash_bytes(s->key, sizeof s->key) % LINK_SOURCE_BUCKETS;
                x->s = *s;
                x->next = m->src_hash[b];
                m->src_hash[b] = x;
        }
        if (x)
                x->pending++;
        l->src = x;
        l->pending = true;
        l->pnext = NULL;
        l->pprev_link = m->pending_tail;
        if (m->pending_tail)
                m->pending_tail->pnext = l;
        else
                m->pending_head = l;
        m->pending_tail = l;
        m->n_pending++;
}

/* Authenticated or closed: off the pending list, and its source forgets it. */
static void pending_list_remove(struct link *l)
{
        struct link_manager *m = l->m;
        struct link_source *x = l->src;

        if (!l->pending)
                return;
        if (l->pprev_link)
                l->pprev_link->pnext = l->pnext;
        else
                m->pending_head = l->pnext;
        if (l->pnext)
                l->pnext->pprev_link = l->pprev_link;
        else
                m->pending_tail = l->pprev_link;
        l->pending = false;
        l->pnext = l->pprev_link = NULL;
        m->n_pending--;
        l->src = NULL;
        if (x && --x->pending == 0) {
                uint32_t b = hash_bytes(x->s.key, sizeof x->s.key) % LINK_SOURCE_BUCKETS;
                for (struct link_source **pp = &m->src_hash[b]; *pp; pp = &(*pp)->next)
                        if (*pp == x) {
                                *pp = x->next;
                                break;
                        }
                free(x);
        }
}

/* ---- session events ---------------------------------------------------------------------- */

enum link_event {
        LINK_EV_UP,
        LINK_EV_DOWN,
        LINK_EV_DRAINED,
        LINK_EV_STATUS,
};

static void link_emit(struct link_manager *m, enum link_event ev, const char *device_id,
                      const char *reason, size_t queued)
{
        /* The next one is read first: a listener may remove itself. */
        for (struct link_listener *ls = m->ev_listeners, *next; ls; ls = next) {
                next = ls->next;
                switch (ev) {
                case LINK_EV_UP:
                        if (ls->on_up)
                                ls->on_up(ls->ud, device_id);
                        break;
                case LINK_EV_DOWN:
                        if (ls->on_down)
                                ls->on_down(ls->ud, device_id, reason);
                        break;
                case LINK_EV_DRAINED:
                        if (ls->on_drained)
                                ls->on_drained(ls->ud, device_id, queued);
                        break;
                case LINK_EV_STATUS:
                        if (ls->on_status)
                                ls->on_status(ls->ud, device_id);
                        break;
                }
        }
}

/* ---- output ------------------------------------------------------------------------------ */

static void link_update_poll(struct link *l)
{
        int ev = UV_READABLE | (l->port ? 0 : UV_DISCONNECT) | (l->out_len ? UV_WRITABLE : 0);
        if (l->closing || ev == l->poll_events)
                return;
        l->poll_events = ev;
        uv_poll_start(&l->poll, ev, on_link_poll);
}

static int link_flush(struct link *l)
{
        while (l->out_len) {
                ssize_t k = write(l->fd, l->out, l->out_len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                memmove(l->out, l->out + k, l->out_len - (size_t)k);
                l->out_len -= (uint32_t)k;
        }
        if (!l->out_len && l->out_cap > 4096) {
                free(l->out);
                l->out = NULL;
                l->out_cap = 0;
        }
        return 0;
}

static int link_write(struct link *l, const uint8_t *data, size_t len)
{
        size_t need;

        if (l->closing)
                return -EPIPE;
        if (!l->out_len) {
                while (len) {
                        ssize_t k = write(l->fd, data, len);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        break;
                                link_close(l, "write error");
                                return -EIO;
                        }
                        data += k;
                        len -= (size_t)k;
                }
        }
        if (len) {
                need = l->out_len + len;
                if (need > LINK_OUT_MAX) {
                        COUNT(l, tx_dropped, 1);
                        l->drain_wanted = true;
                        if (!l->port)
                                link_close(l, "peer does not read (output queue full)");
                        return -ENOBUFS;
                }
                if (need > l->out_cap) {
                        uint32_t cap = MAX((uint32_t)need, MIN(l->out_cap * 2, LINK_OUT_MAX));
                        uint8_t *o = realloc(l->out, cap);
                        if (!o) {
                                COUNT(l, tx_dropped, 1);
                                return -ENOMEM;
                        }
                        l->out = o;
                        l->out_cap = cap;
                }
                memcpy(l->out + l->out_len, data, len);
                l->out_len += (uint32_t)len;
                if (l->out_len >= LINK_QUEUE_LOW)
                        l->drain_wanted = true;
                link_update_poll(l);
        }
        return 0;
}

static int link_send_frame(struct link *l, const uint8_t *frame, size_t len)
{
        struct link_manager *m = l->m;
        int w = mcugw_frame_encode(frame, len, m->wire, sizeof m->wire);
        int r;

        if (w < 0)
                return -EMSGSIZE;
        r = link_write(l, m->wire, (size_t)w);
        if (r == 0) {
                COUNT(l, frames_out, 1);
                COUNT(l, bytes_out, (uint64_t)w);
        }
        return r;
}

static int link_send_msg(struct link *l, const struct mcugw_msg *msg)
{
        struct link_manager *m = l->m;
        int n = mcugw_msg_encode(msg, m->txbuf + MCUGW_DATA_HDR_LEN,
                                 sizeof m->txbuf - MCUGW_DATA_OVERHEAD);
        if (n < 0)
                return -EMSGSIZE;
        n = mcugw_responder_seal(&l->r, m->txbuf + MCUGW_DATA_HDR_LEN, (size_t)n, m->txbuf,
                                 sizeof m->txbuf);
        if (n == MCUGW_ESESSION)
                return -ENOTCONN;
        if (n == MCUGW_ETOOBIG) {
                /* Larger than the device's receive limit: it could never take it. Counted, and
                 * the caller gets -EMSGSIZE at once rather than a silent timeout. */
                COUNT(l, too_big, 1);
                return -EMSGSIZE;
        }
        if (n < 0)
                return -EMSGSIZE;
        return link_send_frame(l, m->txbuf, (size_t)n);
}

/* The largest message the device on @l can receive (its limit from message 1). */
static size_t link_msg_room(const struct link *l)
{
        const struct mcugw_peer *p = mcugw_responder_peer(&l->r);
        size_t max = p && p->max_rx_frame ? p->max_rx_frame : MCUGW_FRAME_MAX;

        return max > MCUGW_DATA_OVERHEAD ? max - MCUGW_DATA_OVERHEAD : 0;
}

/* Tell the device why a message of its was dropped (docs/protocol.md, section 7: ERROR). Only
 * on an authenticated session, never in answer to an ERROR, rate-limited per link. */
static _printf_(3, 4) void link_send_error(struct link *l, int code, const char *fmt, ...)
{
        struct mcugw_msg e = { .type = MCUGW_MSG_ERROR };
        char text[MCUGW_ERROR_TEXT_MAX + 1];
        va_list ap;
        int n;

        struct link_limits *lim = link_limits(l);

        if (!lim || !ratelimit_try(&lim->error_bucket, 1, now_ms(l->m) * USEC_PER_MSEC))
                return;
        va_start(ap, fmt);
        n = vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        e.u.error.code = (uint16_t)-code;
        e.u.error.text = text;
        /* Short enough that ERROR fits the smallest receive limit (96: message <= 64). */
        e.u.error.text_len = n < 0 ? 0 : MIN((size_t)n, (size_t)LINK_ERROR_TEXT_MAX);
        if (link_send_msg(l, &e) == 0)
                COUNT(l, errors_sent, 1);
}

static int link_send_ack(struct link *l, uint16_t stream, uint32_t seq, uint8_t status)
{
        struct mcugw_msg a = { .type = MCUGW_MSG_ACK };
        int r;
        a.u.ack.stream = stream;
        a.u.ack.seq = seq;
        a.u.ack.flags = 0;
        a.u.ack.status = status;
        r = link_send_msg(l, &a);
        if (r == 0)
                COUNT(l, acks_sent, 1);
        return r;
}

/* ---- sessions ---------------------------------------------------------------------------- */

/* The device leaves this link (the link itself may stay, e.g. a serial port). */
static void link_session_end(struct link *l, const char *reason)
{
        struct link_dev *d = l->dev;
        struct link_manager *m = l->m;

        if (!d)
                return;
        if (m->reg)
                registry_set_connected(m->reg, d->id, false, l->name);
        if (session_audit_allowed(m, d, false)) {
                audit_json(m, "daemon", "link.down", d->id,
                           json_pack("{ss ss}", "link", l->name, "reason", reason));
                log_device(LOG_INFO, d->id, "disconnected from %s: %s", l->name, reason);
        } else
                log_device(LOG_DEBUG, d->id, "disconnected from %s: %s", l->name, reason);
        /* Kept only while it is away: a connected device names its link through d->link. */
        free(d->link_name);
        d->link_name = strdup(l->name);
        d->link = NULL;
        l->dev = NULL;
        l->drain_wanted = false;
        gen_bump(l);
        /* Queued commands go to the next session if it comes at once (a takeover), else they
         * are answered as offline by the command timer. */
        if (d->cmd && d->cmd->head)
                cmd_timer_arm(m, 0);
        link_emit(m, LINK_EV_DOWN, d->id, reason, 0);
}

/* Remove the device from a link at once: close a connection, reset a serial port's session. */
static void link_kick(struct link *l, const char *reason)
{
        if (l->port) {
                link_session_end(l, reason);
                mcugw_responder_reset(&l->r);
        } else
                link_close(l, reason);
}

static void link_auth_failed(struct link *l, const char *reason)
{
        struct link_manager *m = l->m;
        const char *who = l->hs && l->hs->claimed_id[0] ? l->hs->claimed_id : NULL;
        struct link_dev *d = NULL;
        char key[45] = "";

        /* A device onboarded just in time retries while it waits for approval: that is
         * expected, not an attack, so it is counted apart (`hs_pending`) and no rule on
         * auth_failures fires for it. It is still audited. */
        bool pending = reason == REJECT_PENDING;

        if (pending)
                m->tot.hs_pending++;
        else
                m->tot.auth_failures++;
        /* A failure counts against a device only when its own enrolled key was presented
         * (pending, quarantined, revoked, or used under another id). Anyone who knows the
         * gateway's public key can start a handshake with a fresh key and any claimed id: if
         * that counted against the device named, a stranger could get it quarantined by the
         * rules. Unknown keys count gateway-wide and are audited with the claimed id. */
        if (m->reg && l->hs && l->hs->claimed_key_valid) {
                const struct registry_device *rd = registry_find_key(m->reg, l->hs->claimed_key);
                if (rd)
                        d = dev_get(m, rd->id);
        }
        if (d && pending)
                DEV_COUNT(d, hs_pending, 1);
        else if (d)
                DEV_COUNT(d, auth_failures, 1);
        if (!audit_allowed(l))
                return;
        if (l->hs && l->hs->claimed_key_valid)
                key_to_base64(l->hs->claimed_key, key);
        audit_json(m, "daemon", "auth.failed", who ? who : l->name,
                   json_pack("{ss ss ss ss}", "reason", reason, "link", l->name, "device_id",
                             who ? who : "", "key", key));
        log_device(LOG_WARNING, who, "handshake refused on %s: %s", l->name, reason);
}

/* An unknown key: enroll it if it carries a valid manufacturer attestation (onboard.h). */
static int link_onboard(struct link *l, const uint8_t pub[32], const uint8_t *attest,
                        size_t attest_len)
{
        struct link_manager *m = l->m;
        const char *kid = NULL, *why = NULL, *err = NULL;
        enum onboard_policy policy = onboard_policy(m->onboard);
        char actor[48];
        int q;

        q = onboard_verify(m->onboard, l->hs->claimed_id, strlen(l->hs->claimed_id), pub, attest,
                           attest_len, &kid, &why);
        if (q == -ENOENT && m->reg && registry_find(m->reg, l->hs->claimed_id)) {
                /* Most often a key pasted with a typo at enrollment, or a reflashed device. */
                snprintf(l->hs->reject_buf, sizeof l->hs->reject_buf,
                         "key does not match the enrolled key for %s", l->hs->claimed_id);
                l->hs->reject_reason = l->hs->reject_buf;
                return -1;
        }
        if (q < 0) {
                l->hs->reject_reason = q == -ENOENT ? "unknown key" : why;
                return -1;
        }
        if (!m->reg || registry_find(m->reg, l->hs->claimed_id)) {
                l->hs->reject_reason = "attested device id is enrolled with another key";
                return -1;
        }
        snprintf(actor, sizeof actor, "device:%s", l->hs->claimed_id);
        if (registry_add(m->reg, actor, l->hs->claimed_id, pub,
                         policy == ONBOARD_ACTIVE ? DEVICE_ACTIVE : DEVICE_PENDING, "",
                         "onboarding", &err) < 0) {
                l->hs->reject_reason = err;
                return -1;
        }
        audit_json(m, actor, "device.onboarded", l->hs->claimed_id,
                   json_pack("{ss ss ss}", "manufacturer_key", kid, "link", l->name, "state",
                             policy == ONBOARD_ACTIVE ? "active" : "pending"));
        log_device(LOG_NOTICE, l->hs->claimed_id,
                   "onboarded on %s, attested by manufacturer key %s (%s)", l->name, kid,
                   policy == ONBOARD_ACTIVE ? "active" : "pending approval");
        if (policy == ONBOARD_ACTIVE)
                return 0;
        l->hs->reject_reason = REJECT_PENDING;
        return -1;
}

static int lookup_cb(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                     const uint8_t *attest, size_t attest_len)
{
        struct link *l = user;
        const struct registry_device *d;

        memcpy(l->hs->claimed_key, pub, 32);
        l->hs->claimed_key_valid = true;
        id_len = MIN(id_len, (size_t)MCUGW_DEVICE_ID_MAX);
        memcpy(l->hs->claimed_id, id, id_len);
        l->hs->claimed_id[id_len] = 0;

        d = l->m->reg ? registry_find_key(l->m->reg, pub) : NULL;
        if (!d)
                return link_onboard(l, pub, attest, attest_len);
        if (strcmp(d->id, l->hs->claimed_id) != 0) {
                l->hs->reject_reason = "device id does not match the key";
                return -1;
        }
        switch (d->state) {
        case DEVICE_ACTIVE: return 0;
        case DEVICE_REVOKED: l->hs->reject_reason = "revoked"; return -1;
        case DEVICE_QUARANTINED: l->hs->reject_reason = "quarantined"; return -1;
        case DEVICE_PENDING: l->hs->reject_reason = REJECT_PENDING; return -1;
        default: l->hs->reject_reason = "not admitted"; return -1;
        }
}

/* Replay check of handshake message 1 (mcugw_fresh_fn): per enrolled key, the timestamp of the
 * last answered HS1; anything not newer is a replay. Unknown keys keep no state (nothing to
 * displace; onboarding has its own checks). In memory only: after a restart the first timestamp
 * of each device is taken as it comes. */
static int fresh_cb(void *user, const uint8_t pub[32], uint64_t ts, int commit)
{
        struct link *l = user;
        const struct registry_device *rd = l->m->reg ? registry_find_key(l->m->reg, pub) : NULL;
        struct link_dev *d;

        if (!rd)
                return 0;
        d = dev_get(l->m, rd->id);
        if (!d)
                return -ENOMEM;
        if (commit) {
                d->hs_ts = ts;
                memcpy(d->hs_ts_key, pub, 32);
                d->hs_ts_set = true;
                return 0;
        }
        if (d->hs_ts_set && ts <= d->hs_ts && mcugw_ct_equal(d->hs_ts_key, pub, 32)) {
                DEV_COUNT(d, replay_ts, 1);
                return MCUGW_ESTALE;
        }
        return 0;
}

/* The first DATA frame on a new session confirmed it: who is it? */
static int link_session_start(struct link *l)
{
        struct link_manager *m = l->m;
        const struct mcugw_peer *p = mcugw_responder_peer(&l->r);
        const struct registry_device *rd;
        struct link_dev *d;
        char key[45];

        if (!p)
                return -EINVAL;
        /* The state may have changed between message 1 and the confirmation. */
        rd = m->reg ? registry_find_key(m->reg, p->static_pub) : NULL;
        if (!rd || rd->state != DEVICE_ACTIVE || strcmp(rd->id, p->device_id) != 0) {
                if (l->hs)
                        snprintf(l->hs->claimed_id, sizeof l->hs->claimed_id, "%s", p->device_id);
                link_auth_failed(l, "device no longer admitted");
                link_kick(l, "device no longer admitted");
                mcugw_responder_reset(&l->r);
                return -EPERM;
        }
        key_to_base64(p->static_pub, key);
        if (l->dev && strcmp(l->dev->id, p->device_id) == 0) {
                /* Rekey of the same device: the session continues, pending acks stay valid. */
                char actor[48];
                snprintf(actor, sizeof actor, "device:%s", l->dev->id);
                COUNT(l, handshakes, 1);
                if (session_audit_allowed(m, l->dev, true))
                        audit_json(
                                m, actor, "auth.ok", l->dev->id,
                                json_pack("{ss ss sb}", "link", l->name, "key", key, "rekey", 1));
                return 0;
        }
        if (l->dev)
                link_session_end(l, "another device authenticated on this link");
        d = dev_get(m, p->device_id);
        if (!d) {
                link_kick(l, "out of memory");
                return -ENOMEM;
        }
        if (d->link && d->link != l) {
                /* Taken over: the device moved, or two devices share its key (a clone). The
                 * count is the rule metric `takeovers` (docs/monitoring.md). */
                DEV_COUNT(d, takeovers, 1);
                m->tot.takeovers++;
                link_kick(d->link, "device authenticated on another link");
        }
        pending_list_remove(l);
        l->dev = d;
        d->link = l;
        free(d->link_name);
        d->link_name = NULL;
        d->last_seen_us = now_realtime_usec();
        gen_bump(l);
        COUNT(l, handshakes, 1);
        if (m->reg) {
                registry_set_connected(m->reg, d->id, true, l->name);
                registry_touch(m->reg, d->id, d->last_seen_us);
                d->last_touch_ms = now_ms(m);
        }
        if (session_audit_allowed(m, d, true)) {
                char actor[48];
                snprintf(actor, sizeof actor, "device:%s", d->id);
                audit_json(m, actor, "auth.ok", d->id,
                           json_pack("{ss ss}", "link", l->name, "key", key));
                log_device(LOG_INFO, d->id, "authenticated on %s", l->name);
        } else
                log_device(LOG_DEBUG, d->id, "authenticated on %s", l->name);
        if (d->cmd && d->cmd->head)
                cmd_timer_arm(m, 0);
        /* Last: a listener may send at once, and a write error may end the session again. */
        link_emit(m, LINK_EV_UP, d->id, NULL, 0);
        return 0;
}


static void link_message(struct link *l, const uint8_t *data, size_t len)
{
        struct link_manager *m = l->m;
        struct link_dev *d = l->dev;
        struct mcugw_msg msg, reply;
        char text[MCUGW_ERROR_TEXT_MAX + 1];
        uint64_t t = now_ms(m);
        int r;

        d->last_seen_us = now_realtime_usec();
        if (m->reg && t - d->last_touch_ms >= LINK_TOUCH_MS) {
                registry_touch(m->reg, d->id, d->last_seen_us);
                d->last_touch_ms = t;
        }
        r = mcugw_msg_decode(data, len, &msg);
        if (r < 0) {
                unsigned type = len ? data[0] : 0;
                if (r == MCUGW_ETYPE)
                        COUNT(l, unknown_type, 1);
                else
                        COUNT(l, malformed, 1);
                log_device(LOG_DEBUG, d->id, "message type 0x%02x dropped: %s", type,
                           mcugw_strerror(r));
                /* Never answer an ERROR with an ERROR: two confused peers would ping-pong. */
                if (type != MCUGW_MSG_ERROR)
                        link_send_error(l, r, "message type 0x%02x dropped: %s", type,
                                        mcugw_strerror(r));
                return;
        }
        switch (msg.type) {
        case MCUGW_MSG_TELEMETRY: {
                bool want_ack = msg.u.telemetry.flags & MCUGW_TLM_ACK_REQUESTED;
                COUNT(l, telemetry, 1);
                COUNT(l, telemetry_bytes, msg.u.telemetry.len);
                if (m->cb.on_telemetry) {
                        uint64_t token = 0;
                        uint32_t id;
                        if (want_ack) {
                                /* Unacked, the device would resend forever: end the session. */
                                if (ackq_add(&l->pend, msg.u.telemetry.stream,
                                             msg.u.telemetry.seq, &id) < 0) {
                                        link_close_nomem(l);
                                        return;
                                }
                                token = link_token_make(l->gen, id);
                        }
                        m->cb.on_telemetry(m->cb.ud, d->id, msg.u.telemetry.stream,
                                           msg.u.telemetry.seq, msg.u.telemetry.flags,
                                           msg.u.telemetry.payload, msg.u.telemetry.len, token);
                } else if (want_ack)
                        link_send_ack(l, msg.u.telemetry.stream, msg.u.telemetry.seq, MCUGW_ACK_OK);
                break;
        }
        case MCUGW_MSG_STATUS: {
                char fw[MCUGW_FW_VERSION_MAX + 1];
                size_t n = MIN(msg.u.status.fw_version_len, (size_t)MCUGW_FW_VERSION_MAX);
                memcpy(fw, msg.u.status.fw_version, n);
                fw[n] = 0;
                COUNT(l, status_msgs, 1);
                if (m->reg)
                        registry_set_status(m->reg, d->id, fw, msg.u.status.boot_counter,
                                            msg.u.status.reset_cause);
                log_device(msg.u.status.link_reason == MCUGW_LINK_FIRST ? LOG_DEBUG : LOG_INFO,
                           d->id, "status: firmware %s, boot %u, reset cause %u, session reason %s",
                           fw, msg.u.status.boot_counter, msg.u.status.reset_cause,
                           mcugw_link_reason_str(msg.u.status.link_reason));
                link_emit(m, LINK_EV_STATUS, d->id, NULL, 0);
                break;
        }
        case MCUGW_MSG_PING:
                COUNT(l, pings, 1);
                reply = (struct mcugw_msg){ .type = MCUGW_MSG_PONG };
                reply.u.ping.token = msg.u.ping.token;
                link_send_msg(l, &reply);
                break;
        case MCUGW_MSG_PONG: break;
        case MCUGW_MSG_ERROR: {
                size_t n = MIN(msg.u.error.text_len, (size_t)MCUGW_ERROR_TEXT_MAX);
                memcpy(text, msg.u.error.text, n);
                text[n] = 0;
                COUNT(l, errors_received, 1);
                log_device(LOG_WARNING, d->id, "device reports error %u: %s", msg.u.error.code,
                           text);
                break;
        }
        case MCUGW_MSG_COMMAND_RESULT:
                if (!cmd_out_take(d, msg.u.result.id)) {
                        /* Not a command we sent (or its result came already): the cloud must
                         * never hear of results for commands it did not send. */
                        COUNT(l, stray_results, 1);
                        log_device(LOG_DEBUG, d->id, "result for unknown command %u dropped",
                                   msg.u.result.id);
                        link_send_error(l, MCUGW_ESTATE, "result for unknown command %u",
                                        msg.u.result.id);
                        break;
                }
                COUNT(l, command_results, 1);
                if (m->cb.on_command_result)
                        m->cb.on_command_result(m->cb.ud, d->id, msg.u.result.id,
                                                msg.u.result.status, msg.u.result.payload,
                                                msg.u.result.len);
                else
                        log_device(LOG_INFO, d->id, "command %u finished with status %d",
                                   msg.u.result.id, msg.u.result.status);
                break;
        case MCUGW_MSG_CONFIG_RESULT:
                if (!m->config_fn) {
                        COUNT(l, unhandled, 1);
                        break;
                }
                m->config_fn(m->config_ud, d->id, msg.u.result.id, msg.u.result.status,
                             msg.u.result.payload, msg.u.result.len);
                break;
        default:
                if (msg.type >= MCUGW_MSG_OTA_FIRST && msg.type <= MCUGW_MSG_OTA_LAST &&
                    m->ota_fn) {
                        m->ota_fn(m->ota_ud, d->id, &msg);
                        break;
                }
                COUNT(l, unhandled, 1);
                log_device(LOG_DEBUG, d->id, "unhandled message type 0x%02x", msg.type);
                link_send_error(l, MCUGW_ETYPE, "message type 0x%02x not handled", msg.type);
                break;
        }
}

static const char *rx_error_reason(int rc)
{
        switch (rc) {
        case MCUGW_EAUTH: return "bad MAC";
        case MCUGW_EDUP: return "duplicate";
        case MCUGW_ETOOOLD: return "replay (too old)";
        case MCUGW_ETRUNC: return "truncated";
        case MCUGW_ESESSION: return "unknown session";
        default: return mcugw_strerror(rc);
        }
}

/* DATA for a session we do not hold: tell the device to handshake again. Unauthenticated, so it
 * echoes the session id (a device believes it only for its current session), is smaller than
 * the frame that caused it and is rate-limited per link. */
static void link_send_nosession(struct link *l, const uint8_t *frame, size_t len, uint64_t t)
{
        uint8_t f[MCUGW_NOSESSION_LEN] = { MCUGW_PROTO_VERSION, MCUGW_FRAME_NOSESSION, 0, 0 };
        struct link_limits *lim = link_limits(l);

        if (len < MCUGW_DATA_OVERHEAD || !lim ||
            !ratelimit_try(&lim->nosession_bucket, 1, t * USEC_PER_MSEC))
                return;
        memcpy(f + MCUGW_HDR_LEN, frame + MCUGW_HDR_LEN, 4);
        if (link_send_frame(l, f, sizeof f) == 0)
                COUNT(l, nosession_sent, 1);
}

/* Take one handshake from both buckets, or from neither. */
static bool budget_take(struct ratelimit *link_b, struct ratelimit *gw_b, uint64_t t)
{
        uint64_t now = t * USEC_PER_MSEC;

        if (ratelimit_delay(link_b, 1, now) > 0 || ratelimit_delay(gw_b, 1, now) > 0)
                return false;
        ratelimit_take(link_b, 1, now);
        ratelimit_take(gw_b, 1, now);
        return true;
}

static bool link_hs_budget(struct link *l, uint64_t t)
{
        return budget_take(&l->hs_bucket, &l->m->hs_bucket, t);
}

/* The cookie of this link under the current secret (docs/protocol.md, "Handshake flood
 * resistance"): whoever shows it in mac2 can receive what we send on this link. */
static int link_cookie(struct link *l, uint64_t t, uint8_t cookie[MCUGW_COOKIE_LEN])
{
        struct link_manager *m = l->m;
        uint8_t ident[8];

        if (!m->cookie_secret_set || t - m->cookie_secret_ms >= MCUGW_COOKIE_SECRET_MS) {
                if (RAND_bytes(m->cookie_secret, sizeof m->cookie_secret) != 1)
                        return -EIO;
                m->cookie_secret_ms = t;
                m->cookie_secret_set = true;
        }
        for (unsigned i = 0; i < 8; i++)
                ident[i] = (uint8_t)(l->serial >> (8 * i));
        return mcugw_cookie_make(&mcugw_crypto_openssl, m->cookie_secret, ident, sizeof ident,
                                 cookie) < 0
                       ? -EIO
                       : 0;
}

/* The budget is spent: an HS1 with this link's cookie in mac2 has a budget of its own, so that
 * a flood without cookies (junk that passed mac1, replays) cannot take the handshakes of
 * devices that answer cookies. Anything else gets a COOKIE frame. True to go on with it. */
static bool link_hs_cookie(struct link *l, const uint8_t *frame, size_t len, uint64_t t)
{
        struct link_manager *m = l->m;
        struct link_limits *lim = link_limits(l);
        uint8_t cookie[MCUGW_COOKIE_LEN], reply[MCUGW_COOKIE_REPLY_LEN];
        int n;

        if (!lim || link_cookie(l, t, cookie) < 0) {
                COUNT(l, hs_throttled, 1);
                return false;
        }
        if (mcugw_hs1_check_mac2(&mcugw_crypto_openssl, cookie, frame, len) == 0) {
                OPENSSL_cleanse(cookie, sizeof cookie);
                if (!budget_take(&lim->hs2_bucket, &m->hs2_bucket, t)) {
                        COUNT(l, hs_throttled, 1);
                        return false;
                }
                COUNT(l, hs_cookie, 1);
                return true;
        }
        COUNT(l, hs_throttled, 1);
        if (ratelimit_try(&lim->cookie_bucket, 1, t * USEC_PER_MSEC)) {
                n = mcugw_responder_cookie_reply(&l->r, frame, len, cookie, reply, sizeof reply);
                if (n > 0 && link_send_frame(l, reply, (size_t)n) == 0)
                        COUNT(l, cookie_sent, 1);
        }
        OPENSSL_cleanse(cookie, sizeof cookie);
        return false;
}

/* The handshake state of a link (struct link_hs), lent to its responder; NULL without memory. */
static struct link_hs *link_hs_get(struct link *l)
{
        if (!l->hs) {
                l->hs = slab_alloc(&l->m->hs_slab);
                if (!l->hs)
                        return NULL;
                mcugw_responder_set_hs(&l->r, &l->hs->r);
        }
        l->hs->reject_reason = NULL;
        l->hs->claimed_id[0] = 0;
        l->hs->claimed_key_valid = false;
        return l->hs;
}

static void link_hs_free(struct link *l)
{
        if (!l->hs)
                return;
        mcugw_responder_set_hs(&l->r, NULL); /* wipes the pending keys */
        OPENSSL_cleanse(l->hs, sizeof *l->hs);
        slab_free(&l->m->hs_slab, l->hs);
        l->hs = NULL;
}

/* A message 1 that passed mac1 and the budgets, with l->hs allocated. */
static void link_hs1(struct link *l, uint8_t *frame, size_t len)
{
        struct mcugw_rx rx;
        int rc;

        rc = mcugw_responder_handle(&l->r, frame, len, &rx);
        if (rc == 0 && rx.kind == MCUGW_RX_REPLY) {
                link_send_frame(l, rx.data, rx.len);
                return;
        }
        if (rc == MCUGW_ESTALE) {
                /* A replayed message 1: no answer, no audit record, nothing displaced
                 * (the key's owner was counted by fresh_cb). */
                l->m->tot.replay_ts++;
                log_device(LOG_DEBUG, l->hs->claimed_id[0] ? l->hs->claimed_id : NULL,
                           "replayed handshake dropped on %s", l->name);
                return;
        }
        if (rc == MCUGW_EREJECTED)
                link_auth_failed(l, l->hs->reject_reason ? l->hs->reject_reason : "rejected");
        else if (rc == MCUGW_EAUTH || rc == MCUGW_EDH)
                link_auth_failed(l, "handshake failed to authenticate (wrong gateway "
                                    "key or corrupted message)");
        else if (rc < 0) {
                COUNT(l, malformed, 1);
                link_auth_failed(l, "malformed handshake");
        }
}

static void link_frame(struct link *l, uint8_t *frame, size_t len)
{
        struct link_manager *m = l->m;
        struct mcugw_rx rx;
        uint64_t t = now_ms(m);
        int type, rc;

        COUNT(l, frames_in, 1);
        type = mcugw_frame_type(frame, len);
        if (type == MCUGW_EVERSION) {
                /* Most likely a device with an older SDK: say so once per link, count the rest. */
                COUNT(l, old_version, 1);
                if (!l->version_warned)
                        log_device(LOG_WARNING, l->dev ? l->dev->id : NULL,
                                   "link %s: peer speaks link protocol version %u, this gateway "
                                   "speaks version %u: update the device's SDK",
                                   l->name, frame[0], MCUGW_PROTO_VERSION);
                l->version_warned = true;
                return;
        }
        if (type == (int)MCUGW_FRAME_HS1) {
                /* mac1 first: one HMAC, and frames from anyone who does not know our public key
                 * cost nothing more, not even budget. Then message 1, which costs five X25519
                 * operations, comes out of the budgets. */
                rc = mcugw_responder_check_hs1(&l->r, frame, len, NULL);
                if (rc < 0) {
                        /* Still audited (rate-limited per link and gateway-wide): a device
                         * pinning another gateway's key looks exactly like this. */
                        if (rc == MCUGW_EAUTH) {
                                COUNT(l, junk_mac1, 1);
                                link_auth_failed(l, "handshake with a bad mac1 (wrong gateway "
                                                    "key, or junk)");
                        } else {
                                COUNT(l, malformed, 1);
                                link_auth_failed(l, "malformed handshake");
                        }
                        return;
                }
                if (!link_hs_budget(l, t) && !link_hs_cookie(l, frame, len, t))
                        return;
                if (!link_hs_get(l)) {
                        link_close_nomem(l);
                        return;
                }
                link_hs1(l, frame, len);
                /* Nothing pending (this message 1 failed, and no earlier one is answered): the
                 * handshake state goes until the next message 1. */
                if (!mcugw_responder_pending(&l->r))
                        link_hs_free(l);
                return;
        }
        rc = mcugw_responder_handle(&l->r, frame, len, &rx);
        if (rc < 0) {
                const char *why = rx_error_reason(rc);
                switch (rc) {
                case MCUGW_EAUTH: COUNT(l, mac_errors, 1); break;
                /* An exact copy inside the window is what a link may do (docs/protocol.md,
                 * section 4): counted apart, never a replay. Replays are frames from before the
                 * window; forged copies fail the tag (mac_errors). */
                case MCUGW_EDUP: COUNT(l, dup, 1); break;
                case MCUGW_ETOOOLD: COUNT(l, replays, 1); break;
                case MCUGW_ETYPE: COUNT(l, unknown_type, 1); break;
                case MCUGW_ETRUNC: COUNT(l, truncated, 1); break;
                case MCUGW_ESESSION: COUNT(l, bad_session, 1); break;
                default: COUNT(l, malformed, 1); break;
                }
                if (rc == MCUGW_ESESSION && type == (int)MCUGW_FRAME_DATA)
                        link_send_nosession(l, frame, len, t);
                if (rc != MCUGW_ESESSION && rc != MCUGW_EDUP && l->dev && audit_allowed(l))
                        audit_json(m, "daemon", "link.frame_rejected", l->dev->id,
                                   json_pack("{ss ss}", "reason", why, "link", l->name));
                log_device(LOG_DEBUG, l->dev ? l->dev->id : NULL, "frame dropped on %s: %s",
                           l->name, why);
                return;
        }
        if (rx.kind != MCUGW_RX_MESSAGE)
                return;
        if (rx.new_session) {
                rc = link_session_start(l);
                link_hs_free(l); /* confirmed: nothing is pending any more */
                if (rc < 0)
                        return;
        }
        if (!l->dev || l->closing)
                return;
        l->last_rx_ms = t;
        link_message(l, rx.data, rx.len);
}

/* The deframer keeps its state in struct mcugw_deframer and its bytes in buf[0, len): a link
 * that holds no cut frame decodes in the shared rxscratch (nothing else runs between a push and
 * the handling of its frame), and only a frame cut between reads is moved to a buffer of its own.
 * 0, or -ENOMEM. */
static int link_rx_park(struct link *l)
{
        if (l->df.len == 0) {
                if (l->rxbuf) {
                        OPENSSL_clear_free(l->rxbuf, LINK_RX_CAP);
                        l->rxbuf = NULL;
                }
                l->df.buf = l->m->rxscratch;
                return 0;
        }
        if (l->rxbuf)
                return 0;
        l->rxbuf = malloc(LINK_RX_CAP);
        if (!l->rxbuf)
                return -ENOMEM;
        memcpy(l->rxbuf, l->df.buf, l->df.len);
        l->df.buf = l->rxbuf;
        return 0;
}

static void link_input(struct link *l, const uint8_t *p, size_t n)
{
        COUNT(l, bytes_in, n);
        l->df.buf = l->rxbuf ? l->rxbuf : l->m->rxscratch;
        while (n > 0 && !l->closing) {
                uint8_t *frame;
                size_t used = 0, flen;
                int rc = mcugw_deframer_push(&l->df, p, n, &used, &frame, &flen);

                p += used;
                n -= used;
                if (rc == 1)
                        link_frame(l, frame, flen);
                else if (rc < 0) {
                        switch (rc) {
                        case MCUGW_ECRC: COUNT(l, crc_errors, 1); break;
                        case MCUGW_ECOBS: COUNT(l, cobs_errors, 1); break;
                        case MCUGW_EOVERSIZE: COUNT(l, oversize, 1); break;
                        default: COUNT(l, runts, 1); break;
                        }
                }
                if (used == 0 && rc == 0)
                        break;
        }
        if (!l->closing && link_rx_park(l) < 0)
                link_close_nomem(l);
}

/* ---- link lifetime ----------------------------------------------------------------------- */

static void port_schedule(struct serial_port *p);

static void link_closed_cb(uv_handle_t *h)
{
        struct link *l = h->data;
        struct link_manager *m = l->m;

        close(l->fd);
        link_hs_free(l);
        free(l->lim);
        mcugw_responder_reset(&l->r);
        free(l->out);
        ackq_clear(&l->pend);
        if (l->rxbuf)
                OPENSSL_clear_free(l->rxbuf, LINK_RX_CAP);
        OPENSSL_cleanse(l, sizeof *l);
        free(l); /* its name is not secret */
        m->handles--;
        manager_maybe_free(m);
}

static void link_close(struct link *l, const char *reason)
{
        struct link_manager *m = l->m;

        if (l->closing)
                return;
        link_session_end(l, reason);
        pending_list_remove(l);
        audit_flush_suppressed(l, true);
        l->closing = true;
        gen_unhash(l);
        if (l->prev)
                l->prev->next = l->next;
        else
                m->links = l->next;
        if (l->next)
                l->next->prev = l->prev;
        m->n_links--;
        if (l->listener) {
                l->listener->connections--;
                m->n_stream_links--;
        }
        if (l->port) {
                struct serial_port *p = l->port;
                p->link = NULL;
                audit_json(m, "daemon", "link.down", p->name,
                           json_pack("{ss ss}", "port", p->ep.path, "reason", reason));
                log_warning("%s: link down: %s", p->name, reason);
                if (now_ms(m) - l->opened_ms >= LINK_STABLE_MS)
                        p->backoff_ms = LINK_BACKOFF_MIN_MS;
                if (!m->stopping)
                        port_schedule(p);
        } else
                log_debug("%s: closed: %s", l->name, reason);
        uv_close((uv_handle_t *)&l->poll, link_closed_cb);
}

static void on_link_poll(uv_poll_t *h, int status, int events)
{
        struct link *l = h->data;
        struct link_manager *m = l->m;
        char why[96];

        if (l->closing)
                return;
        if (status < 0) {
                /* libuv reports POLLERR/POLLHUP on the descriptor as UV_EBADF: on a serial line
                 * that is the adapter unplugged (the port is reopened when it is back). */
                if (status == UV_EBADF && l->port)
                        snprintf(why, sizeof why, "serial device gone (unplugged?)");
                else
                        snprintf(why, sizeof why, "poll error: %s", uv_strerror(status));
                link_close(l, why);
                return;
        }
        if (events & UV_WRITABLE) {
                int r = link_flush(l);
                if (r < 0) {
                        snprintf(why, sizeof why, "write error: %s", strerror(-r));
                        link_close(l, why);
                        return;
                }
                link_update_poll(l);
                if (l->dev && l->dev->cmd && l->dev->cmd->head && l->out_len < LINK_CMD_OUT_MAX)
                        cmd_timer_arm(m, 0);
                if (l->dev && l->drain_wanted && l->out_len < LINK_QUEUE_LOW) {
                        l->drain_wanted = false;
                        link_emit(m, LINK_EV_DRAINED, l->dev->id, NULL, l->out_len);
                        if (l->closing)
                                return;
                }
        }
        if (!(events & (UV_READABLE | UV_DISCONNECT)))
                return;
        for (int i = 0; i < LINK_READS_PER_EVENT && !l->closing; i++) {
                ssize_t k = read(l->fd, m->rbuf, sizeof m->rbuf);
                if (k > 0) {
                        link_input(l, m->rbuf, (size_t)k);
                        if ((size_t)k < sizeof m->rbuf)
                                break;
                        continue;
                }
                if (k == 0) {
                        link_close(l, l->port ? "hang-up (end of file)" : "connection closed");
                        return;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        break;
                snprintf(why, sizeof why, "read error: %s", strerror(errno));
                link_close(l, why);
                return;
        }
}

static int link_new(struct link_manager *m, int fd, const char *name, struct serial_port *port,
                    struct listener *lis, struct link **ret)
{
        size_t name_len = MIN(strlen(name), (size_t)LINK_NAME_MAX);
        struct link *l = calloc(1, sizeof *l + name_len + 1);
        int r;

        if (!l)
                return -ENOMEM;
        l->m = m;
        l->fd = fd;
        l->port = port;
        l->listener = lis;
        memcpy(l->name, name, name_len);
        l->opened_ms = l->last_rx_ms = now_ms(m);
        ackq_init(&l->pend, LINK_PENDING_ACKS);
        if (mcugw_responder_init(&l->r, &m->rcfg) < 0 ||
            mcugw_deframer_init(&l->df, m->rxscratch, sizeof m->rxscratch) < 0) {
                free(l);
                return -EINVAL;
        }
        mcugw_responder_set_user(&l->r, l);
        ratelimit_init(&l->hs_bucket, m->hs_rate_link, MAX(m->hs_rate_link * 2, 4.0),
                       now_ms(m) * USEC_PER_MSEC);
        l->serial = ++m->next_serial;
        r = uv_poll_init(m->loop, &l->poll, fd);
        if (r < 0) {
                free(l);
                return r;
        }
        m->handles++;
        l->poll.data = l;
        l->poll_events = UV_READABLE | (port ? 0 : UV_DISCONNECT);
        uv_poll_start(&l->poll, l->poll_events, on_link_poll);
        gen_bump(l);
        l->next = m->links;
        if (m->links)
                m->links->prev = l;
        m->links = l;
        m->n_links++;
        if (lis) {
                lis->connections++;
                m->n_stream_links++;
        }
        if (ret)
                *ret = l;
        return 0;
}

/* ---- listeners --------------------------------------------------------------------------- */

static void on_listener_poll(uv_poll_t *h, int status, int events)
{
        struct listener *lis = h->data;
        struct link_manager *m = lis->m;

        if (status < 0 || m->stopping)
                return;
        for (int i = 0; i < 64; i++) {
                char name[160];
                struct transport_source src;
                struct link_source *x;
                struct link *l;
                bool have_src;
                int fd = transport_accept(lis->fd);
                if (fd < 0) {
                        if (fd != -EAGAIN && fd != -EINTR && fd != -ECONNABORTED)
                                log_warning_errno(fd, "%s: accept failed: %m", lis->name);
                        return;
                }
                /* One source may hold only so many connections that have not authenticated:
                 * idle connections from one client must not keep every device out. */
                have_src = transport_peer_source(fd, &src) >= 0;
                x = have_src ? source_find(m, &src) : NULL;
                if (x && x->pending >= m->max_pending_per_source) {
                        m->refused_connections++;
                        if (m->refused_per_source++ % 100 == 0)
                                log_warning("%s: %s holds %u connections without a session "
                                            "(MaxPendingPerSource=%u): refusing its new ones",
                                            lis->name, src.name, x->pending,
                                            m->max_pending_per_source);
                        close(fd);
                        continue;
                }
                /* At the global limit the oldest connection without a session makes room; only
                 * when every connection is authenticated is the new one refused. */
                if (m->n_stream_links >= m->max_connections && m->pending_head) {
                        if (m->evicted_connections++ % 100 == 0)
                                log_warning("%s: MaxConnections=%u reached: closing the oldest "
                                            "connection without a session (%s)",
                                            lis->name, m->max_connections,
                                            m->pending_head->src ? m->pending_head->src->s.name
                                                                 : m->pending_head->name);
                        link_close(m->pending_head,
                                   "MaxConnections reached: the oldest connection without a "
                                   "session makes room");
                }
                if (m->n_stream_links >= m->max_connections) {
                        m->refused_connections++;
                        if (m->refused_connections % 100 == 1)
                                log_warning("%s: MaxConnections=%u reached, refusing connections",
                                            lis->name, m->max_connections);
                        close(fd);
                        continue;
                }
                m->accepted_connections++;
                snprintf(name, sizeof name, "%s#%llu", lis->name,
                         (unsigned long long)m->accepted_connections);
                if (link_new(m, fd, name, NULL, lis, &l) < 0) {
                        close(fd);
                        continue;
                }
                pending_list_add(l, have_src ? &src : NULL);
        }
}

static int listener_add(struct link_manager *m, const char *spec)
{
        struct listener *lis;
        const char *reason = "invalid";
        int r;

        lis = calloc(1, sizeof *lis);
        if (!lis)
                return -ENOMEM;
        lis->m = m;
        lis->fd = -1;
        if (transport_parse_listen(spec, &lis->ep, &reason) < 0) {
                log_error("[Link] ListenStream=%s: %s", spec, reason);
                free(lis);
                return -EINVAL;
        }
        transport_endpoint_name(&lis->ep, lis->name, sizeof lis->name);
        lis->fd = transport_listen(&lis->ep, 512);
        if (lis->fd < 0) {
                r = lis->fd;
                log_error_errno(r, "cannot listen on %s: %m", lis->name);
                free(lis);
                return r;
        }
        r = uv_poll_init(m->loop, &lis->poll, lis->fd);
        if (r < 0) {
                close(lis->fd);
                free(lis);
                return r;
        }
        m->handles++;
        lis->poll.data = lis;
        uv_poll_start(&lis->poll, UV_READABLE, on_listener_poll);
        lis->next = m->listeners;
        m->listeners = lis;
        log_info("link: listening on %s", lis->name);
        return 0;
}

static void listener_closed_cb(uv_handle_t *h)
{
        struct listener *lis = h->data;
        struct link_manager *m = lis->m;
        close(lis->fd);
        free(lis);
        m->handles--;
        manager_maybe_free(m);
}

/* ---- serial ports ------------------------------------------------------------------------ */

static void port_open(struct serial_port *p)
{
        struct link_manager *m = p->m;
        struct link *l;
        int fd, r;

        fd = transport_serial_open(&p->ep);
        if (fd < 0) {
                if (p->failures++ == 0 || fd != p->last_error)
                        log_warning_errno(fd, "%s: cannot open: %m (retrying with backoff)",
                                          p->name);
                p->last_error = fd;
                port_schedule(p);
                return;
        }
        r = link_new(m, fd, p->name, p, NULL, &l);
        if (r < 0) {
                close(fd);
                port_schedule(p);
                return;
        }
        p->link = l;
        p->opens++;
        p->failures = 0;
        p->last_error = 0;
        audit_json(m, "daemon", "link.up", p->name,
                   json_pack("{ss si}", "port", p->ep.path, "baud", (int)p->ep.baud));
        log_info("%s: link up at %u baud", p->name, p->ep.baud);
        /* A leading delimiter separates us from whatever noise came before (section 2). */
        link_write(l, (const uint8_t *)"", 1);
}

static void on_port_timer(uv_timer_t *t)
{
        struct serial_port *p = t->data;
        if (!p->m->stopping && !p->link)
                port_open(p);
}

static void port_schedule(struct serial_port *p)
{
        uv_timer_start(&p->timer, on_port_timer, p->backoff_ms, 0);
        p->backoff_ms = MIN(p->backoff_ms * 2, (uint64_t)LINK_BACKOFF_MAX_MS);
}

static int port_add(struct link_manager *m, const char *spec)
{
        struct serial_port *p = calloc(1, sizeof *p);
        const char *reason = "invalid";

        if (!p)
                return -ENOMEM;
        if (transport_parse_serial(spec, &p->ep, &reason) < 0) {
                log_error("[Link] SerialPort=%s: %s", spec, reason);
                free(p);
                return -EINVAL;
        }
        p->m = m;
        p->backoff_ms = LINK_BACKOFF_MIN_MS;
        transport_endpoint_name(&p->ep, p->name, sizeof p->name);
        uv_timer_init(m->loop, &p->timer);
        p->timer.data = p;
        m->handles++;
        p->next = m->ports;
        m->ports = p;
        port_open(p);
        return 0;
}

static void port_closed_cb(uv_handle_t *h)
{
        struct serial_port *p = h->data;
        struct link_manager *m = p->m;
        free(p);
        m->handles--;
        manager_maybe_free(m);
}

/* ---- registry listener and sweep --------------------------------------------------------- */

static void on_registry_state(void *ud, const struct registry_device *rd,
                              enum device_state old_state)
{
        struct link_manager *m = ud;
        const struct mcugw_peer *p;
        struct link_dev *d = dev_find(m, rd->id);

        /* Whoever reports the device's state hears of it, connected or not. */
        if (rd->state != old_state)
                link_emit(m, LINK_EV_STATUS, rd->id, NULL, 0);
        if (!d || !d->link || d->link->closing)
                return;
        if (rd->state == DEVICE_ACTIVE) {
                /* Still admitted; but if its key was replaced the old key holder must go. */
                p = mcugw_responder_peer(&d->link->r);
                if (p && mcugw_ct_equal(p->static_pub, rd->pubkey, 32))
                        return;
                log_device(LOG_NOTICE, rd->id, "key replaced: closing its session on %s",
                           d->link->name);
                link_kick(d->link, "key replaced");
                return;
        }
        log_device(LOG_NOTICE, rd->id, "now %s: closing its session on %s",
                   device_state_to_string(rd->state), d->link->name);
        link_kick(d->link, device_state_to_string(rd->state));
}

static void on_sweep(uv_timer_t *t)
{
        struct link_manager *m = t->data;
        uint64_t now = now_ms(m);
        struct link *l, *next;
        unsigned s;

        for (l = m->links; l; l = next) {
                next = l->next;
                audit_flush_suppressed(l, false);
                if (!l->port && !l->dev && now - l->opened_ms >= m->hs_timeout_ms) {
                        m->hs_timeouts++;
                        link_close(l, "no authenticated session before the handshake timeout");
                } else if (l->dev && m->idle_timeout_ms &&
                           now - l->last_rx_ms >= m->idle_timeout_ms) {
                        m->idle_timeouts++;
                        link_kick(l, "idle timeout");
                } else if (l->dev && m->idle_timeout_ms &&
                           now - l->last_rx_ms >= m->idle_timeout_ms / 2 &&
                           l->keepalive_ms <= l->last_rx_ms) {
                        /* Quiet is not dead: the SDK answers a PING itself, and any answer
                         * counts as traffic. Only a device that stays silent is dropped. */
                        struct mcugw_msg p = { .type = MCUGW_MSG_PING };
                        p.u.ping.token = l->gen;
                        l->keepalive_ms = now;
                        if (link_send_msg(l, &p) == 0)
                                COUNT(l, keepalives, 1);
                }
        }
        s = ratelimit_window_roll(&m->audit_lim, now * USEC_PER_MSEC);
        if (s)
                audit_json(m, "daemon", "link.audit_suppressed", "gateway",
                           json_pack("{si}", "count", (int)s));
        session_audit_roll(m, now);
}

/* ---- cloud commands: paced per device, a bounded queue, never a full output queue ---------- */

static bool cmd_room(const struct link *l)
{
        return l->out_len + MCUGW_WIRE_MAX(MCUGW_FRAME_MAX) <= LINK_CMD_OUT_MAX;
}

/* The device's command state, made on first use; NULL when there is no memory for it. */
static struct link_dev_cmds *cmd_state(struct link_manager *m, struct link_dev *d)
{
        if (!d->cmd) {
                d->cmd = calloc(1, sizeof *d->cmd);
                if (!d->cmd)
                        return NULL;
                ratelimit_init(&d->cmd->bucket, m->commands_per_s, m->commands_per_s,
                               now_ms(m) * USEC_PER_MSEC);
        }
        return d->cmd;
}

/* Remember a command id sent to the device, so that its result is recognised. */
static void cmd_out_add(struct link_dev_cmds *q, uint32_t id)
{
        unsigned i;

        for (i = 0; i < LINK_CMD_OUTSTANDING; i++)
                if (!(q->out_used & (UINT32_C(1) << i)))
                        break;
        if (i == LINK_CMD_OUTSTANDING) {
                /* All due: one is forgotten, in rotation; its result will be dropped as stray. */
                i = q->out_next;
                q->out_next = (uint8_t)((q->out_next + 1) % LINK_CMD_OUTSTANDING);
        }
        q->out[i] = id;
        q->out_used |= UINT32_C(1) << i;
}

/* True (and forgotten) if a result for @id is due. */
static bool cmd_out_take(struct link_dev *d, uint32_t id)
{
        struct link_dev_cmds *q = d->cmd;

        for (unsigned i = 0; q && i < LINK_CMD_OUTSTANDING; i++)
                if ((q->out_used & (UINT32_C(1) << i)) && q->out[i] == id) {
                        q->out_used &= ~(UINT32_C(1) << i);
                        return true;
                }
        return false;
}

static int cmd_send(struct link *l, uint32_t id, const uint8_t *payload, size_t len)
{
        struct mcugw_msg c = { .type = MCUGW_MSG_COMMAND };
        int r;

        c.u.command.id = id;
        c.u.command.payload = payload;
        c.u.command.len = len;
        r = link_send_msg(l, &c);
        if (r == 0) {
                COUNT(l, commands, 1);
                cmd_out_add(l->dev->cmd, id);
        }
        return r == -ENOBUFS || r == -ENOMEM ? -EIO : r;
}

/* Send what the device's pace and its output queue allow. Returns when to try again (ms), 0
 * when its queue is empty. */
static uint64_t cmd_drain(struct link_manager *m, struct link_dev *d)
{
        struct link_dev_cmds *q = d->cmd;
        uint64_t t = now_ms(m);

        while (q->head) {
                struct link_cmd *c = q->head;
                int r;

                if (!d->link || d->link->closing)
                        r = -ENOTCONN;
                else if (!cmd_room(d->link))
                        return 100; /* and sooner: on_link_poll when the output drains */
                else if (!ratelimit_try(&q->bucket, 1, t * USEC_PER_MSEC))
                        return MAX((uint64_t)(1000.0 / m->commands_per_s), (uint64_t)1);
                else
                        r = cmd_send(d->link, c->id, c->payload, c->len);
                q->head = c->next;
                if (!q->head)
                        q->tail = NULL;
                q->n--;
                m->cmd_bytes -= c->len;
                if (r < 0 && m->cb.on_command_failed)
                        m->cb.on_command_failed(m->cb.ud, d->id, c->id, r);
                free(c);
        }
        return 0;
}

static void on_cmd_timer(uv_timer_t *t)
{
        struct link_manager *m = t->data;
        uint64_t next = 0;

        for (struct link_dev **pp = &m->cmd_list; *pp;) {
                struct link_dev *d = *pp;
                uint64_t w = cmd_drain(m, d);
                if (!d->cmd->head) {
                        *pp = d->cmd->next;
                        d->cmd->next = NULL;
                        d->cmd->on_list = false;
                        continue;
                }
                next = next ? MIN(next, w) : w;
                pp = &d->cmd->next;
        }
        if (m->cmd_list)
                cmd_timer_arm(m, next ? next : 100);
}

static void cmd_timer_arm(struct link_manager *m, uint64_t ms)
{
        if (m->stopping)
                return;
        if (uv_is_active((uv_handle_t *)&m->cmd_timer) && uv_timer_get_due_in(&m->cmd_timer) <= ms)
                return;
        uv_timer_start(&m->cmd_timer, on_cmd_timer, ms, 0);
}

/* ---- public API -------------------------------------------------------------------------- */

static int load_key(struct link_manager *m, const struct link_options *o, const char *state_dir)
{
        _cleanup_free_ char *path = NULL;
        unsigned mode = 0;
        int r;

        if (o->private_key_file)
                path = strdup(o->private_key_file);
        else if (asprintf(&path, "%s/link.key", state_dir) < 0)
                path = NULL;
        if (!path)
                return -ENOMEM;
        r = link_key_load(path, m->priv, &mode);
        if (r == -ENOENT) {
                r = link_key_create(path, m->priv);
                if (r < 0)
                        return log_error_errno(r, "cannot create the link key %s: %m", path);
                log_notice("created a new link key %s", path);
                audit_json(m, "daemon", "link.key_created", path, NULL);
        } else if (r == -EPERM && (mode & S_IFMT) && !S_ISREG(mode)) {
                log_error("link key %s: not a regular file (%s); refusing to use it", path,
                          fileio_type_name(mode));
                return r;
        } else if (r == -EPERM) {
                log_error("link key %s has mode %04o: it must be a regular file readable only "
                          "by its owner (chmod 600 %s); refusing to use it",
                          path, mode, path);
                return r;
        } else if (r == -EFBIG) {
                log_error("link key %s: file too large (expected the base64 of 32 bytes)", path);
                return r;
        } else if (r == -EBADMSG) {
                log_error("link key %s is malformed: expected the base64 of 32 bytes", path);
                return r;
        } else if (r < 0)
                return log_error_errno(r, "cannot read the link key %s: %m", path);
        if (mcugw_crypto_openssl.x25519_public(NULL, m->pub, m->priv) < 0) {
                OPENSSL_cleanse(m->priv, sizeof m->priv);
                return log_error_errno(-EIO, "cannot derive the link public key");
        }
        key_to_base64(m->pub, m->pub_b64);
        return 0;
}

/* Every connection is a file descriptor; the rest of the daemon (serial lines, the database, the
 * MQTT session, control clients, D-Bus) needs a few more. */
#define LINK_FD_RESERVE 256u

static void raise_fd_limit(unsigned max_connections)
{
        uint64_t want = (uint64_t)max_connections + LINK_FD_RESERVE;
        int64_t have = rlimit_nofile_raise(want);
        if (have < 0)
                log_warning_errno(have, "link: cannot raise the limit on open files to %" PRIu64,
                                  want);
        else if ((uint64_t)have < want)
                log_warning("link: MaxConnections=%u needs about %" PRIu64
                            " open files, the limit is %" PRId64
                            " (raise LimitNOFILE= in the unit or ulimit -Hn)",
                            max_connections, want, have);
}

int link_manager_new(uv_loop_t *loop, const struct link_options *o, const char *state_dir,
                     struct audit *audit, struct registry *registry, struct link_manager **ret)
{
        struct link_manager *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->audit = audit;
        m->reg = registry;
        m->max_connections = o->max_connections ? o->max_connections : 1024;
        raise_fd_limit(m->max_connections);
        m->hs_timeout_ms = o->handshake_timeout_usec / 1000;
        if (!m->hs_timeout_ms)
                m->hs_timeout_ms = 10000;
        m->idle_timeout_ms = o->idle_timeout_usec / 1000;
        m->hs_rate_link = o->handshake_rate_per_link ? o->handshake_rate_per_link : 2;
        m->audit_per_min = o->audit_per_min;
        m->max_pending_per_source = o->max_pending_per_source ? o->max_pending_per_source
                                                              : MAX(m->max_connections / 4, 1u);
        m->session_audit_per_min = o->session_audit_per_min;
        m->commands_per_s = o->commands_per_s ? o->commands_per_s : 20;
        m->command_queue = o->command_queue;
        ratelimit_init(&m->hs_bucket, o->handshake_rate ? o->handshake_rate : 1000,
                       o->handshake_rate ? o->handshake_rate : 1000, uv_now(loop) * USEC_PER_MSEC);
        ratelimit_init(&m->hs2_bucket, o->handshake_rate ? o->handshake_rate : 1000,
                       o->handshake_rate ? o->handshake_rate : 1000, uv_now(loop) * USEC_PER_MSEC);
        ratelimit_window_init(&m->audit_lim, MAX(m->audit_per_min * 10, 100u), 60 * USEC_PER_SEC,
                              uv_now(loop) * USEC_PER_MSEC);

        r = load_key(m, o, state_dir);
        if (r < 0) {
                free(m);
                return r;
        }
        m->rcfg = (struct mcugw_responder_config){
                .crypto = &mcugw_crypto_openssl,
                .static_priv = m->priv,
                .static_pub = m->pub,
                .lookup = lookup_cb,
                .fresh = fresh_cb,
                .max_rx_frame = MCUGW_FRAME_MAX,
        };
        (void)slab_init(&m->hs_slab, sizeof(struct link_hs)); /* cannot fail: see link_hs */
        uv_timer_init(loop, &m->sweep);
        m->sweep.data = m;
        m->handles++;
        uv_timer_start(&m->sweep, on_sweep, LINK_SWEEP_MS, LINK_SWEEP_MS);
        uv_timer_init(loop, &m->cmd_timer);
        m->cmd_timer.data = m;
        m->handles++;
        if (registry)
                registry_set_listener(registry, on_registry_state, m);

        for (size_t i = 0; i < o->listen.n; i++)
                if ((r = listener_add(m, o->listen.v[i])) < 0)
                        goto fail;
        for (size_t i = 0; i < o->serial.n; i++)
                if ((r = port_add(m, o->serial.v[i])) < 0)
                        goto fail;
        log_info("link: public key %s", m->pub_b64);
        *ret = m;
        return 0;
fail:
        link_manager_stop(m);
        return r;
}

static void sweep_closed_cb(uv_handle_t *h)
{
        struct link_manager *m = h->data;
        m->handles--;
        manager_maybe_free(m);
}

void link_manager_stop(struct link_manager *m)
{
        if (!m || m->stopping)
                return;
        m->stopping = true;
        if (m->reg)
                registry_set_listener(m->reg, NULL, NULL);
        while (m->links)
                link_close(m->links, "gateway shutting down");
        for (struct listener *lis = m->listeners, *n; lis; lis = n) {
                n = lis->next;
                if (lis->ep.kind == TRANSPORT_UNIX)
                        unlink(lis->ep.path);
                uv_close((uv_handle_t *)&lis->poll, listener_closed_cb);
        }
        m->listeners = NULL;
        for (struct serial_port *p = m->ports, *n; p; p = n) {
                n = p->next;
                uv_close((uv_handle_t *)&p->timer, port_closed_cb);
        }
        m->ports = NULL;
        uv_close((uv_handle_t *)&m->sweep, sweep_closed_cb);
        uv_close((uv_handle_t *)&m->cmd_timer, sweep_closed_cb);
}

void link_manager_set_callbacks(struct link_manager *m, const struct link_callbacks *cb)
{
        if (cb)
                m->cb = *cb;
        else
                memset(&m->cb, 0, sizeof m->cb);
}

int link_manager_ack(struct link_manager *m, uint64_t token, int status)
{
        struct link *l;
        uint32_t gen = (uint32_t)(token >> 32), id = (uint32_t)token;

        if (!m || !token || status < 0 || status > (int)MCUGW_ACK_RETRY)
                return -EINVAL;
        l = gen_find(m, gen);
        if (!l || l->closing || !l->dev)
                return -ENOTCONN;
        uint16_t stream;
        uint32_t seq;
        if (ackq_take(&l->pend, id, &stream, &seq) < 0)
                return -ENOENT;
        return link_send_ack(l, stream, seq, (uint8_t)status);
}

int link_manager_send_command(struct link_manager *m, const char *device_id, uint32_t command_id,
                              const uint8_t *payload, size_t len)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;
        struct link_dev_cmds *q;
        struct link_cmd *c;

        if (!d || !d->link || d->link->closing)
                return -ENOTCONN;
        if (len > MCUGW_MSG_MAX - 5)
                return -EMSGSIZE;
        if (link_msg_room(d->link) < 5 + len) {
                /* Larger than this device can receive: say so now, not after a timeout. */
                COUNT(d->link, too_big, 1);
                return -EMSGSIZE;
        }
        q = cmd_state(m, d);
        if (!q)
                return -ENOMEM;
        if (!q->head && cmd_room(d->link) &&
            ratelimit_try(&q->bucket, 1, now_ms(m) * USEC_PER_MSEC))
                return cmd_send(d->link, command_id, payload, len);
        /* Over the pace or the device reads slowly: wait in its queue, if there is room. */
        if (q->n >= m->command_queue || m->cmd_bytes + len > LINK_CMD_BYTES_MAX) {
                COUNT(d->link, commands_busy, 1);
                return -ENOBUFS;
        }
        c = malloc(sizeof *c + len);
        if (!c)
                return -ENOMEM;
        c->next = NULL;
        c->id = command_id;
        c->len = (uint32_t)len;
        if (len)
                memcpy(c->payload, payload, len);
        if (q->tail)
                q->tail->next = c;
        else
                q->head = c;
        q->tail = c;
        q->n++;
        m->cmd_bytes += len;
        if (!q->on_list) {
                q->on_list = true;
                q->next = m->cmd_list;
                m->cmd_list = d;
        }
        cmd_timer_arm(m, MAX((uint64_t)(1000.0 / m->commands_per_s), (uint64_t)1));
        return 0;
}

void link_manager_set_onboard(struct link_manager *m, struct onboard *o)
{
        m->onboard = o;
}

void link_manager_set_config_handler(struct link_manager *m, link_config_result_fn fn, void *ud)
{
        m->config_fn = fn;
        m->config_ud = ud;
}

void link_manager_set_ota_handler(struct link_manager *m, link_ota_fn fn, void *ud)
{
        m->ota_fn = fn;
        m->ota_ud = ud;
}

int link_manager_send(struct link_manager *m, const char *device_id, const struct mcugw_msg *msg)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;

        if (!d || !d->link || d->link->closing || !msg)
                return -ENOTCONN;
        return link_send_msg(d->link, msg);
}

void link_manager_add_listener(struct link_manager *m, struct link_listener *ls)
{
        struct link_listener **pp = &m->ev_listeners;

        for (; *pp; pp = &(*pp)->next)
                if (*pp == ls)
                        return;
        ls->next = NULL;
        *pp = ls; /* at the end: called in the order added */
}

void link_manager_remove_listener(struct link_manager *m, struct link_listener *ls)
{
        if (!m)
                return;
        for (struct link_listener **pp = &m->ev_listeners; *pp; pp = &(*pp)->next)
                if (*pp == ls) {
                        *pp = ls->next;
                        return;
                }
}

size_t link_manager_msg_room(struct link_manager *m, const char *device_id)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;

        return d && d->link && !d->link->closing ? link_msg_room(d->link) : 0;
}

size_t link_manager_queued(struct link_manager *m, const char *device_id)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;

        return d && d->link ? d->link->out_len : 0;
}

bool link_manager_device_connected(struct link_manager *m, const char *device_id)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;
        return d && d->link && !d->link->closing;
}

int link_manager_disconnect(struct link_manager *m, const char *device_id, const char *reason)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;

        if (!d || !d->link || d->link->closing)
                return -ENOTCONN;
        link_kick(d->link, reason);
        return 0;
}

static json_t *counters_json(const struct link_counters *c)
{
        json_t *o = json_object();
#define X(n) json_object_set_new(o, #n, json_integer((json_int_t)c->n));
        LINK_COUNTERS(X)
#undef X
        return o;
}

int link_manager_device_counters(struct link_manager *m, const char *device_id,
                                 struct link_device_counters *ret)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;

        if (!d)
                return -ENOENT;
        *ret = (struct link_device_counters){
                .frames_in = DEV_COUNTER(d, frames_in),
                .frames_out = DEV_COUNTER(d, frames_out),
                .bytes_in = DEV_COUNTER(d, bytes_in),
                .bytes_out = DEV_COUNTER(d, bytes_out),
                .telemetry = DEV_COUNTER(d, telemetry),
                .handshakes = DEV_COUNTER(d, handshakes),
                .auth_failures = DEV_COUNTER(d, auth_failures),
                .mac_errors = DEV_COUNTER(d, mac_errors),
                .crc_errors = DEV_COUNTER(d, crc_errors),
                .cobs_errors = DEV_COUNTER(d, cobs_errors),
                .replays = DEV_COUNTER(d, replays),
                .truncated = DEV_COUNTER(d, truncated),
                .oversize = DEV_COUNTER(d, oversize),
                .malformed = DEV_COUNTER(d, malformed),
                .tx_dropped = DEV_COUNTER(d, tx_dropped),
                .takeovers = DEV_COUNTER(d, takeovers),
                .commands = DEV_COUNTER(d, commands),
                .commands_busy = DEV_COUNTER(d, commands_busy),
                .dup = DEV_COUNTER(d, dup),
                .replay_ts = DEV_COUNTER(d, replay_ts),
                .last_seen_us = d->last_seen_us,
                .connected = d->link && !d->link->closing,
        };
        return 0;
}

int link_manager_device_stats(struct link_manager *m, const char *device_id, json_t *out)
{
        struct link_dev *d = m ? dev_find(m, device_id) : NULL;
        struct link_counters c;
        json_t *o;

        if (!d)
                return -ENOENT;
        dev_counters(d, &c);
        o = counters_json(&c);
        json_object_set_new(o, "connected", json_boolean(d->link && !d->link->closing));
        json_object_set_new(o, "link", json_string(d->link ? d->link->name : d->link_name ? d->link_name : ""));
        json_object_set_new(o, "last_seen_us", json_integer(d->last_seen_us));
        json_object_set_new(out, "link_stats", o);
        return 0;
}

json_t *link_manager_status(struct link_manager *m)
{
        json_t *o, *lis, *ports;
        unsigned connected = 0;

        if (!m)
                return json_null();
        for (struct link *l = m->links; l; l = l->next)
                connected += l->dev != NULL;
        lis = json_array();
        for (struct listener *x = m->listeners; x; x = x->next)
                json_array_append_new(lis, json_pack("{ss si}", "address", x->name, "connections",
                                                     (int)x->connections));
        ports = json_array();
        for (struct serial_port *p = m->ports; p; p = p->next)
                json_array_append_new(ports,
                                      json_pack("{ss si sb si ss}", "port", p->ep.path, "baud",
                                                (int)p->ep.baud, "open", p->link != NULL, "opens",
                                                (int)p->opens, "device",
                                                p->link && p->link->dev ? p->link->dev->id : ""));
        o = json_pack("{ss so so si si sI sI sI sI sI}", "public_key", m->pub_b64, "listeners", lis,
                      "serial_ports", ports, "links", (int)m->n_links, "devices_connected",
                      (int)connected, "connections_accepted", (json_int_t)m->accepted_connections,
                      "connections_refused", (json_int_t)m->refused_connections,
                      "handshake_timeouts", (json_int_t)m->hs_timeouts, "idle_timeouts",
                      (json_int_t)m->idle_timeouts, "audit_suppressed",
                      (json_int_t)m->suppressed_audits);
        if (o) {
                json_object_set_new(o, "counters", counters_json(&m->tot));
                json_object_set_new(o, "pending", json_integer(m->n_pending));
                json_object_set_new(o, "max_pending_per_source",
                                    json_integer(m->max_pending_per_source));
                json_object_set_new(o, "connections_refused_per_source",
                                    json_integer((json_int_t)m->refused_per_source));
                json_object_set_new(o, "connections_evicted",
                                    json_integer((json_int_t)m->evicted_connections));
                json_object_set_new(o, "session_audits_suppressed",
                                    json_integer((json_int_t)m->sessions_suppressed));
                json_object_set_new(o, "commands_queued_bytes",
                                    json_integer((json_int_t)m->cmd_bytes));
        }
        return o;
}

const char *link_manager_public_key(const struct link_manager *m)
{
        return m ? m->pub_b64 : "";
}

int link_manager_adopt_fd(struct link_manager *m, int fd, const char *name)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return link_new(m, fd, name, NULL, NULL, NULL);
}

/* ---- [Link] values ------------------------------------------------------------------------ */

int link_config_parse_listen(const char *v, void *field, const char **reason)
{
        struct transport_endpoint ep;
        if (*v && transport_parse_listen(v, &ep, reason) < 0)
                return -EINVAL;
        return config_parse_strv(v, field, reason);
}

int link_config_parse_serial(const char *v, void *field, const char **reason)
{
        struct transport_endpoint ep;
        if (*v && transport_parse_serial(v, &ep, reason) < 0)
                return -EINVAL;
        return config_parse_strv(v, field, reason);
}

int link_config_parse_max_connections(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 65536, reason);
}

int link_config_parse_rate(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 1, 1000000, reason);
}

int link_config_parse_pending(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 65536, reason);
}

int link_config_parse_command_queue(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 4096, reason);
}
