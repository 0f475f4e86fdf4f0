/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "basic/time-util.h"
#include "link/link.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "monitor/metrics.h"
#include "devices/registry.h"
#include "cloud/relay.h"
#include "cloud/outbox.h"

#define METRICS_HASH 1024u

/* The link counters we sample, in the order of struct mdev.c[]. */
static const char *const counter_names[] = {
        "frames_in",     "frames_out", "bytes_in",      "bytes_out", "telemetry",
        "auth_failures", "mac_errors", "crc_errors",    "replays",   "tx_dropped",
        "malformed",     "handshakes", "truncated",     "oversize",  "cobs_errors",
        "takeovers",     "commands",   "commands_busy", "dup",       "replay_ts",
};
enum {
        C_FRAMES_IN,
        C_FRAMES_OUT,
        C_BYTES_IN,
        C_BYTES_OUT,
        C_TELEMETRY,
        C_AUTH_FAILURES,
        C_MAC_ERRORS,
        C_CRC_ERRORS,
        C_REPLAYS,
        C_TX_DROPPED,
        C_MALFORMED,
        C_HANDSHAKES,
        C_TRUNCATED,
        C_OVERSIZE,
        C_COBS_ERRORS,
        C_TAKEOVERS,
        C_COMMANDS,
        C_COMMANDS_BUSY,
        C_DUP,
        C_REPLAY_TS,
        _C_MAX,
};

struct mdev {
        struct mdev *next;
        uint64_t gen;
        uint64_t c[_C_MAX];
        double msgs_per_s, bytes_per_s;
        int64_t last_seen_us;
        char id[REGISTRY_ID_MAX + 1];
};

struct metrics {
        uv_timer_t timer;
        uv_loop_t *loop;
        struct metrics_sources src;
        char *state_dir;
        uint64_t interval_ms;
        metrics_delta_fn fn;
        metrics_tick_fn tick;
        void *ud;
        uint64_t gen;
        uint64_t last_ms;
        int64_t last_ts_us;
        uint64_t last_cpu_usec;
        double cpu_percent;
        struct metrics_proc proc;
        size_t n_devs;
        struct mdev *hash[METRICS_HASH];
};

static unsigned hash_id(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return h % METRICS_HASH;
}

static struct mdev *mdev_get(struct metrics *m, const char *id, bool *created)
{
        unsigned h = hash_id(id);
        struct mdev *d;

        *created = false;
        for (d = m->hash[h]; d; d = d->next)
                if (strcmp(d->id, id) == 0)
                        return d;
        d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        snprintf(d->id, sizeof d->id, "%s", id);
        d->next = m->hash[h];
        m->hash[h] = d;
        m->n_devs++;
        *created = true;
        return d;
}

/* Devices that left the registry. */
static void mdev_prune(struct metrics *m)
{
        for (unsigned h = 0; h < METRICS_HASH; h++)
                for (struct mdev **pp = &m->hash[h]; *pp;) {
                        struct mdev *d = *pp;
                        if (d->gen != m->gen) {
                                *pp = d->next;
                                free(d);
                                m->n_devs--;
                        } else
                                pp = &d->next;
                }
}

/* ---- /proc ------------------------------------------------------------------------------- */

static uint64_t kb_field(const char *text, const char *name)
{
        const char *p = text;
        size_t n = strlen(name);

        while (p && *p) {
                if (strncmp(p, name, n) == 0 && p[n] == ':')
                        return strtoull(p + n + 1, NULL, 10) * 1024;
                p = strchr(p, '\n');
                if (p)
                        p++;
        }
        return 0;
}

int metrics_parse_proc_status(const char *text, struct metrics_proc *ret)
{
        const char *t;

        if (!text)
                return -EINVAL;
        ret->rss_bytes = kb_field(text, "VmRSS");
        ret->rss_anon_bytes = kb_field(text, "RssAnon");
        t = strstr(text, "\nThreads:");
        ret->threads = t ? (unsigned)strtoul(t + 9, NULL, 10) : 0;
        return ret->rss_bytes ? 0 : -ENODATA;
}

int metrics_read_proc(struct metrics_proc *ret)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char buf[4096];
        size_t n;
        struct rusage ru;
        DIR *d;
        struct dirent *e;
        int r;

        if (!f)
                return -errno;
        n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        r = metrics_parse_proc_status(buf, ret);
        if (getrusage(RUSAGE_SELF, &ru) == 0)
                ret->cpu_usec =
                        (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
                        (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
        ret->fds = 0;
        d = opendir("/proc/self/fd");
        if (d) {
                while ((e = readdir(d)))
                        ret->fds += e->d_name[0] != '.';
                closedir(d);
                ret->fds = ret->fds ? ret->fds - 1 : 0; /* the directory's own fd */
        }
        return r;
}

/* ---- sampling ---------------------------------------------------------------------------- */

static void read_counters(const struct link_device_counters *k, uint64_t c[_C_MAX])
{
        c[C_FRAMES_IN] = k->frames_in;
        c[C_FRAMES_OUT] = k->frames_out;
        c[C_BYTES_IN] = k->bytes_in;
        c[C_BYTES_OUT] = k->bytes_out;
        c[C_TELEMETRY] = k->telemetry;
        c[C_AUTH_FAILURES] = k->auth_failures;
        c[C_MAC_ERRORS] = k->mac_errors;
        c[C_CRC_ERRORS] = k->crc_errors;
        c[C_REPLAYS] = k->replays;
        c[C_TX_DROPPED] = k->tx_dropped;
        c[C_MALFORMED] = k->malformed;
        c[C_HANDSHAKES] = k->handshakes;
        c[C_TRUNCATED] = k->truncated;
        c[C_OVERSIZE] = k->oversize;
        c[C_COBS_ERRORS] = k->cobs_errors;
        c[C_TAKEOVERS] = k->takeovers;
        c[C_COMMANDS] = k->commands;
        c[C_COMMANDS_BUSY] = k->commands_busy;
        c[C_DUP] = k->dup;
        c[C_REPLAY_TS] = k->replay_ts;
}

void metrics_sample(struct metrics *m)
{
        uint64_t now = uv_now(m->loop);
        double dt = m->last_ms && now > m->last_ms ? (double)(now - m->last_ms) / 1000.0 : 0;
        size_t n = m->src.registry ? registry_count(m->src.registry, NULL) : 0;

        m->gen++;
        for (size_t i = 0; i < n; i++) {
                const struct registry_device *rd = registry_get(m->src.registry, i);
                struct link_device_counters k;
                uint64_t c[_C_MAX] = { 0 };
                struct metrics_delta delta = { 0 };
                struct mdev *d;
                bool created;
                int64_t seen_us = 0;

                if (!rd)
                        break;
                d = mdev_get(m, rd->id, &created);
                if (!d)
                        continue;
                d->gen = m->gen;
                if (link_manager_device_counters(m->src.link, rd->id, &k) >= 0) {
                        read_counters(&k, c);
                        seen_us = k.last_seen_us;
                }
                /* Counters only grow while the daemon runs; guard anyway. */
#define D(k) (c[k] >= d->c[k] ? c[k] - d->c[k] : c[k])
                delta.auth_failures = D(C_AUTH_FAILURES);
                delta.messages = D(C_TELEMETRY);
                delta.bytes_in = D(C_BYTES_IN);
                delta.replays = D(C_REPLAYS);
                delta.mac_errors = D(C_MAC_ERRORS);
                delta.takeovers = D(C_TAKEOVERS);
                delta.replay_ts = D(C_REPLAY_TS);
                delta.heard = seen_us != d->last_seen_us || D(C_FRAMES_IN) > 0;
                delta.first = created;
                if (dt > 0) {
                        d->msgs_per_s = (double)D(C_TELEMETRY) / dt;
                        d->bytes_per_s = (double)D(C_BYTES_IN) / dt;
                }
#undef D
                memcpy(d->c, c, sizeof c);
                d->last_seen_us = seen_us;
                if (m->fn)
                        m->fn(m->ud, rd->id, rd->groups, &delta, now);
        }
        mdev_prune(m);

        if (metrics_read_proc(&m->proc) >= 0 && dt > 0 && m->last_cpu_usec)
                m->cpu_percent = (double)(m->proc.cpu_usec - m->last_cpu_usec) / (dt * 1e4);
        m->last_cpu_usec = m->proc.cpu_usec;
        m->last_ms = now;
        m->last_ts_us = now_realtime_usec();
        if (m->tick)
                m->tick(m->ud, now);
}

static void on_timer(uv_timer_t *t)
{
        metrics_sample(t->data);
}

static json_t *device_json(struct metrics *m, const struct registry_device *rd)
{
        bool created;
        struct mdev *d = mdev_get(m, rd->id, &created);
        json_t *o;

        if (!d)
                return NULL;
        if (created)
                d->gen = m->gen;
        o = json_pack("{ss ss sb ss ss sI si sI}", "id", rd->id, "state",
                      device_state_to_string(rd->state), "connected",
                      link_manager_device_connected(m->src.link, rd->id), "link", rd->link,
                      "fw_version", rd->fw_version, "boot_counter", (json_int_t)rd->boot_counter,
                      "reset_cause", (int)rd->reset_cause, "last_seen_us",
                      (json_int_t)(d->last_seen_us ? d->last_seen_us : rd->last_seen_us));
        if (!o)
                return NULL;
        for (size_t i = 0; i < _C_MAX; i++)
                json_object_set_new(o, counter_names[i], json_integer((json_int_t)d->c[i]));
        json_object_set_new(o, "msgs_per_s", json_real(d->msgs_per_s));
        json_object_set_new(o, "bytes_per_s", json_real(d->bytes_per_s));
        json_object_set_new(o, "drops",
                            json_integer((json_int_t)(d->c[C_TX_DROPPED] + d->c[C_MALFORMED] +
                                                      d->c[C_TRUNCATED] + d->c[C_OVERSIZE] +
                                                      d->c[C_CRC_ERRORS] + d->c[C_COBS_ERRORS])));
        json_object_set_new(o, "groups", registry_groups_json(rd->groups));
        {
                /* Its share of the outbox and of the publish quota (docs/mqtt.md, Fairness). */
                struct outbox_device_stats ob = { 0 };
                if (m->src.relay)
                        relay_device_outbox(m->src.relay, rd->id, &ob);
                json_object_set_new(o, "outbox_rows", json_integer((json_int_t)ob.rows));
                json_object_set_new(o, "outbox_bytes", json_integer((json_int_t)ob.bytes));
                json_object_set_new(o, "outbox_refused", json_integer((json_int_t)ob.refused));
                json_object_set_new(o, "outbox_dropped", json_integer((json_int_t)ob.dropped));
                json_object_set_new(o, "delivered", json_integer((json_int_t)ob.delivered));
        }
        return o;
}

static json_t *gateway_json(struct metrics *m)
{
        json_t *g = json_object(), *mq = NULL, *ob = NULL, *link;
        struct statvfs vfs;
        struct stat st;
        uint64_t db_bytes = 0;
        char path[4096];

        if (!g)
                return NULL;
        if (m->src.relay) {
                mq = relay_mqtt_status(m->src.relay);
                ob = relay_outbox_status(m->src.relay);
        }
        json_object_set_new(g, "session_state",
                            json_string(json_string_value(json_object_get(mq, "state")) ?: "none"));
        json_object_set_new(g, "connects",
                            json_integer(json_integer_value(json_object_get(mq, "connects"))));
        json_object_set_new(
                g, "reconnects",
                json_integer(MAX(json_integer_value(json_object_get(mq, "connects")) - 1,
                                 (json_int_t)0)));
        json_object_set_new(
                g, "publishes_per_s",
                json_integer(json_integer_value(json_object_get(mq, "publishes_per_s"))));
        json_object_set_new(g, "msgs_per_s",
                            json_integer(json_integer_value(json_object_get(mq, "msgs_per_s"))));
        json_object_set_new(g, "outbox_rows",
                            json_integer(json_integer_value(json_object_get(ob, "rows"))));
        json_object_set_new(g, "outbox_bytes",
                            json_integer(json_integer_value(json_object_get(ob, "bytes"))));
        json_object_set_new(g, "outbox_dropped",
                            json_integer(json_integer_value(json_object_get(ob, "dropped"))));
        json_object_set_new(g, "outbox_refused",
                            json_integer(json_integer_value(json_object_get(ob, "refused"))));
        json_decref(mq);
        json_decref(ob);
        link = link_manager_status(m->src.link);
        json_object_set_new(
                g, "devices_connected",
                json_integer(json_integer_value(json_object_get(link, "devices_connected"))));
        json_object_set_new(g, "links",
                            json_integer(json_integer_value(json_object_get(link, "links"))));
        json_decref(link);
        for (const char *suffix = ""; suffix; suffix = *suffix ? NULL : "-wal") {
                snprintf(path, sizeof path, "%s/mcugw.db%s", m->state_dir, suffix);
                if (stat(path, &st) == 0)
                        db_bytes += (uint64_t)st.st_size;
        }
        json_object_set_new(g, "db_bytes", json_integer((json_int_t)db_bytes));
        if (statvfs(m->state_dir, &vfs) == 0) {
                json_object_set_new(
                        g, "disk_free_bytes",
                        json_integer((json_int_t)((uint64_t)vfs.f_bavail * vfs.f_frsize)));
                json_object_set_new(
                        g, "disk_total_bytes",
                        json_integer((json_int_t)((uint64_t)vfs.f_blocks * vfs.f_frsize)));
        }
        json_object_set_new(g, "rss_bytes", json_integer((json_int_t)m->proc.rss_bytes));
        json_object_set_new(g, "rss_anon_bytes", json_integer((json_int_t)m->proc.rss_anon_bytes));
        json_object_set_new(g, "cpu_percent", json_real(m->cpu_percent));
        json_object_set_new(g, "cpu_ms", json_integer((json_int_t)(m->proc.cpu_usec / 1000)));
        json_object_set_new(g, "threads", json_integer(m->proc.threads));
        json_object_set_new(g, "fds", json_integer(m->proc.fds));
        return g;
}

json_t *metrics_json(struct metrics *m)
{
        json_t *devs = json_array();
        size_t n = m->src.registry ? registry_count(m->src.registry, NULL) : 0;

        if (!m->last_ms)
                metrics_sample(m);
        for (size_t i = 0; i < n; i++) {
                const struct registry_device *rd = registry_get(m->src.registry, i);
                if (rd)
                        json_array_append_new(devs, device_json(m, rd));
        }
        return json_pack("{sI sI so so}", "ts_us", (json_int_t)m->last_ts_us, "interval_ms",
                         (json_int_t)m->interval_ms, "gateway", gateway_json(m), "devices", devs);
}

void metrics_set_listener(struct metrics *m, metrics_delta_fn fn, metrics_tick_fn tick,
                          void *userdata)
{
        m->fn = fn;
        m->tick = tick;
        m->ud = userdata;
}

void metrics_set_interval(struct metrics *m, uint64_t interval_ms)
{
        interval_ms = MAX(interval_ms, (uint64_t)100);
        if (interval_ms == m->interval_ms)
                return;
        m->interval_ms = interval_ms;
        uv_timer_start(&m->timer, on_timer, interval_ms, interval_ms);
}

int metrics_new(uv_loop_t *loop, const struct metrics_sources *src, uint64_t interval_ms,
                struct metrics **ret)
{
        struct metrics *m = calloc(1, sizeof *m);

        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->src = *src;
        m->state_dir = strdup(src->state_dir ? src->state_dir : "/");
        if (!m->state_dir) {
                free(m);
                return -ENOMEM;
        }
        m->src.state_dir = m->state_dir;
        uv_timer_init(loop, &m->timer);
        m->timer.data = m;
        metrics_set_interval(m, interval_ms);
        *ret = m;
        return 0;
}

static void timer_closed(uv_handle_t *h)
{
        struct metrics *m = h->data;
        for (unsigned i = 0; i < METRICS_HASH; i++)
                for (struct mdev *d = m->hash[i], *n; d; d = n) {
                        n = d->next;
                        free(d);
                }
        free(m->state_dir);
        free(m);
}

void metrics_stop(struct metrics *m)
{
        if (!m)
                return;
        uv_close((uv_handle_t *)&m->timer, timer_closed);
}
