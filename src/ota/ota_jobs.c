/* SPDX-License-Identifier: Apache-2.0 */
/* AWS IoT Jobs + MQTT file streams for OTA (see ota_jobs.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/retry.h"
#include "basic/ratelimit.h"
#include "basic/time-util.h"
#include "ota/ota.h"
#include "ota/ota_cache.h"
#include "ota/ota_jobdoc.h"
#include "ota/ota_jobs.h"
#include "ota/ota_stream.h"
#include "ota/ota_verify.h"
#include "devices/registry.h"
#include "cloud/session.h"

#define THING_MAX 128
#define JOBS_TICK_MS 100
#define OWN_POLL_MS 30000         /* $next/get of the gateway's own thing when idle */
#define SWEEP_MS (10 * 60 * 1000) /* $next/get of every device thing again (lost notifies) */
#define SWEEP_JITTER_MS 2000      /* a sweep starts up to this long after the session is up */
#define POLL_RATE 50              /* $next/get per second at most (AWS: 100 publishes/s) */
#define POLL_BURST 10
#define REPOLL_MS 1000           /* a thing whose job ended asks for the next one after this */
#define REQ_SLOTS 4              /* stream requests in flight per download */
#define REQ_BYTES (128u * 1024u) /* AWS serves at most this much per stream request */
#define FOREIGN_AUDITED 16
#define JOB_ID_MAX 64
#define PROGRESS_EVERY 64 /* "receive" is reported every this many blocks (the stock agent) */

/* One stream request in flight. */
struct req {
        struct ota_stream_request r;
        bool open;
        uint64_t sent_ms;
};

struct dl {
        struct dl *next;
        char key[OTA_CACHE_KEY_MAX + 1];
        char thing[THING_MAX + 1];
        char stream[THING_MAX + 1];
        uint32_t fileid;
        struct ota_image *img;
        struct req req[REQ_SLOTS];
        uint8_t *asked;         /* blocks in open requests */
        uint32_t per_request;   /* blocks per request: <= 128 KB, <= 98 */
        bool probing;           /* one request at a time until a block arrives */
        uint64_t wait_since_ms; /* the last block, or the first request after none was open */
        struct retry retry;
        unsigned refs;
        bool done, failed, store_error;
        char reason[600]; /* why it failed */
        uint64_t blocks_rx, blocks_dup, blocks_bad, requests, rejections;
};

enum { CJ_DOWNLOADING, CJ_ENGINE, CJ_FINAL };

struct cjob {
        struct cjob *next;
        char thing[THING_MAX + 1];
        char device[REGISTRY_ID_MAX + 1]; /* a device's thing; "" for the gateway's own */
        char job_id[JOB_ID_MAX + 1];
        char engine_id[65];
        int state;
        bool cancelled;
        struct ota_jobdoc doc;
        struct dl *dl;
        unsigned updates;
        uint32_t last_receive; /* blocks of the download last reported */
        /* The last update until the cloud accepts it (retried on silence and throttling). */
        char *upd;
        char upd_token[24];
        uint64_t upd_sent_ms;
        bool upd_waiting;
        struct retry upd_retry;
        /* Is the execution still there? (a hint said it may be gone: DescribeJobExecution) */
        bool confirming, confirm_waiting;
        char confirm_token[24];
        uint64_t confirm_sent_ms;
        struct retry confirm_retry;
};

/* A thing that asks for its next job soon (its job ended). */
struct repoll {
        struct repoll *next;
        uint64_t due_ms;
        char thing[THING_MAX + 1];
};

struct ota_jobs {
        uv_loop_t *loop;
        uv_timer_t timer;
        struct cloud_session *session;
        struct ota *ota;
        struct registry *reg;
        struct audit *audit;
        char gateway[65];
        bool per_device;
        char *tmpl;
        uint32_t block_size;
        struct dl *dls;
        struct cjob *jobs;
        struct repoll *repolls;
        bool session_up;
        /* The gateway's own thing: $next/get when the session comes up and when idle. */
        uint64_t own_poll_ms;
        char own_token[24];
        uint64_t own_sent_ms;
        struct retry own_retry;
        /* Device things: a sweep over the registry by a cursor, paced by a token bucket. */
        bool sweeping;
        size_t sweep_cursor;
        uint64_t sweep_start_ms;
        struct ratelimit polls;
        unsigned token;
        uint64_t updates_sent, updates_rejected, jobs_seen, foreign_messages, polls_sent,
                jobs_cancelled;
        /* Things not ours whose messages reached us: audited once each (the first few). */
        char foreign[FOREIGN_AUDITED][THING_MAX + 1];
        unsigned n_foreign;
};

static uint64_t now_ms(struct ota_jobs *J)
{
        return uv_now(J->loop);
}

/* ---- pure helpers ------------------------------------------------------------------------ */

int ota_thing_name(const char *tmpl, const char *gateway, const char *device, char *out, size_t n)
{
        size_t o = 0;

        for (const char *p = tmpl; *p;) {
                const char *sub = NULL;
                size_t skip = 1;
                if (strncmp(p, "{gateway}", 9) == 0)
                        sub = gateway, skip = 9;
                else if (strncmp(p, "{device}", 8) == 0)
                        sub = device ? device : "", skip = 8;
                if (sub) {
                        size_t k = strlen(sub);
                        if (o + k >= n)
                                return -ENAMETOOLONG;
                        memcpy(out + o, sub, k);
                        o += k;
                } else {
                        if (o + 1 >= n)
                                return -ENAMETOOLONG;
                        out[o++] = *p;
                }
                p += skip;
        }
        out[o] = 0;
        if (!o || strpbrk(out, "/+#"))
                return -EINVAL;
        return 0;
}

int ota_thing_device(const char *tmpl, const char *gateway, const char *thing, char *out, size_t n)
{
        const char *mark = strstr(tmpl, "{device}");
        char pre[256], suf[256], back[256];
        size_t lp, ls, lt = strlen(thing);

        if (!mark || (size_t)(mark - tmpl) >= sizeof pre || strlen(mark + 8) >= sizeof suf)
                return -ENOENT;
        /* The parts around the first {device}, expanded, must frame the thing name. */
        memcpy(pre, tmpl, (size_t)(mark - tmpl));
        pre[mark - tmpl] = 0;
        lp = ls = 0;
        if (pre[0]) {
                if (ota_thing_name(pre, gateway, NULL, back, sizeof back) < 0)
                        return -ENOENT;
                lp = strlen(back);
                if (strncmp(thing, back, lp) != 0)
                        return -ENOENT;
        }
        snprintf(suf, sizeof suf, "%s", mark + 8);
        if (suf[0]) {
                if (ota_thing_name(suf, gateway, "", back, sizeof back) < 0)
                        return -ENOENT;
                ls = strlen(back);
        }
        if (lt <= lp + ls || (ls && strcmp(thing + lt - ls, back) != 0) || lt - lp - ls >= n)
                return -ENOENT;
        memcpy(out, thing + lp, lt - lp - ls);
        out[lt - lp - ls] = 0;
        /* A template with {device} twice: the expansion must give the thing back. */
        if (ota_thing_name(tmpl, gateway, out, back, sizeof back) < 0 || strcmp(back, thing) != 0)
                return -ENOENT;
        return 0;
}

static int copy_part(const char *s, size_t len, char *out, size_t n)
{
        if (len == 0 || len >= n)
                return -EINVAL;
        memcpy(out, s, len);
        out[len] = 0;
        return 0;
}

int ota_topic_split(const char *topic, char *thing, size_t tn, char *kind, size_t kn, char *name,
                    size_t nn, const char **ret_rest)
{
        const char *p = topic, *e;

        if (strncmp(p, "$aws/things/", 12) != 0)
                return -EINVAL;
        p += 12;
        if (!(e = strchr(p, '/')) || copy_part(p, (size_t)(e - p), thing, tn) < 0)
                return -EINVAL;
        p = e + 1;
        if (!(e = strchr(p, '/')) || copy_part(p, (size_t)(e - p), kind, kn) < 0)
                return -EINVAL;
        p = e + 1;
        e = strchr(p, '/');
        if (copy_part(p, e ? (size_t)(e - p) : strlen(p), name, nn) < 0)
                return -EINVAL;
        *ret_rest = e ? e + 1 : "";
        return 0;
}

/* ---- publishing -------------------------------------------------------------------------- */

static int publish_text(struct ota_jobs *J, const char *topic, const char *text)
{
        int r = cloud_session_publish(J->session, topic, text, strlen(text));
        if (r < 0)
                log_debug("ota jobs: publish to %s failed: %s", topic, strerror(-r));
        return r;
}

static int publish_json(struct ota_jobs *J, const char *topic, json_t *o)
{
        char *text = json_dumps(o, JSON_COMPACT);
        int r;

        json_decref(o);
        if (!text)
                return -ENOMEM;
        r = publish_text(J, topic, text);
        free(text);
        return r;
}

static void new_token(struct ota_jobs *J, char *buf, size_t n)
{
        snprintf(buf, n, "mcugw-%u", ++J->token);
}

static int next_get(struct ota_jobs *J, const char *thing, char *token, size_t tn)
{
        char topic[256];

        snprintf(topic, sizeof topic, "$aws/things/%s/jobs/$next/get", thing);
        new_token(J, token, tn);
        J->polls_sent++;
        return publish_json(J, topic, json_pack("{ss}", "clientToken", token));
}

static void upd_send(struct ota_jobs *J, struct cjob *c)
{
        char topic[320];

        snprintf(topic, sizeof topic, "$aws/things/%s/jobs/%s/update", c->thing, c->job_id);
        c->upd_sent_ms = now_ms(J);
        /* Not sent for want of a session: not a try, it goes when the session is back. */
        c->upd_waiting = publish_text(J, topic, c->upd) != -ENOTCONN;
}

static void upd_done(struct cjob *c)
{
        free(c->upd);
        c->upd = NULL;
        c->upd_token[0] = 0;
}

/* statusDetails is a flat map of strings (AWS refuses anything else). The update is kept until
 * the cloud accepts it; a newer one replaces it. */
static void job_update(struct ota_jobs *J, struct cjob *c, const char *status, json_t *details)
{
        json_t *o;

        if (c->cancelled) {
                json_decref(details);
                return; /* the execution is gone: nothing more to say about it */
        }
        new_token(J, c->upd_token, sizeof c->upd_token);
        o = json_pack("{ss so ss}", "status", status, "statusDetails",
                      details ? details : json_object(), "clientToken", c->upd_token);
        free(c->upd);
        c->upd = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        retry_init(&c->upd_retry, &retry_cloud_policy);
        c->updates++;
        J->updates_sent++;
        if (c->upd)
                upd_send(J, c);
        if (strcmp(status, "IN_PROGRESS") != 0) {
                c->state = CJ_FINAL;
                audit_log(J->audit, "daemon", "ota.job_reported", c->job_id,
                          json_pack("{ss ss}", "thing", c->thing, "status", status));
        }
}

static void job_fail(struct ota_jobs *J, struct cjob *c, const char *reason)
{
        log_warning("ota jobs: job %s on %s failed: %s", c->job_id, c->thing, reason);
        job_update(J, c, "FAILED", json_pack("{ss}", "reason", reason));
}

/* "receive": blocks of the file download, n/m of the stream, as the stock agent reports them:
 * at the start, every PROGRESS_EVERY blocks, and at the end. */
static void report_receive(struct ota_jobs *J, struct cjob *c, bool force)
{
        uint32_t have = ota_image_blocks_have(c->dl->img), total = ota_image_blocks(c->dl->img);
        char rx[32];

        if (c->confirming)
                return; /* the execution may be gone: wait for the cloud's word */
        if (!force && have / PROGRESS_EVERY == c->last_receive / PROGRESS_EVERY && have != total)
                return;
        if (!force && have == c->last_receive)
                return;
        c->last_receive = have;
        snprintf(rx, sizeof rx, "%u/%u", have, total);
        job_update(J, c, "IN_PROGRESS", json_pack("{ss}", "receive", rx));
}

/* ---- downloads ---------------------------------------------------------------------------- */

static void dl_release(struct ota_jobs *J, struct dl *d);

static void dl_close_req(struct dl *d, struct req *q)
{
        if (!q->open)
                return;
        for (uint32_t k = 0; k < q->r.bitmap_len * 8; k++)
                if (ota_bit_get(q->r.bitmap, k))
                        d->asked[(q->r.offset + k) / 8] &=
                                (uint8_t) ~(1u << ((q->r.offset + k) % 8));
        q->open = false;
}

static void dl_close_all(struct dl *d)
{
        for (unsigned i = 0; i < REQ_SLOTS; i++)
                dl_close_req(d, &d->req[i]);
}

static unsigned dl_open_count(const struct dl *d)
{
        unsigned n = 0;
        for (unsigned i = 0; i < REQ_SLOTS; i++)
                n += d->req[i].open;
        return n;
}

static bool dl_on_hold(struct ota_jobs *J, const struct dl *d)
{
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (c->dl == d && !c->confirming)
                        return false;
        return true; /* every job needing it may be gone (or none is left) */
}

/* Ask for missing blocks nobody asked for yet, up to the requests in flight allowed. */
static void dl_pump(struct ota_jobs *J, struct dl *d)
{
        uint32_t nb = ota_image_blocks(d->img), bytes = (nb + 7) / 8;
        const uint8_t *have = ota_image_bitmap(d->img);
        unsigned limit = d->probing ? 1 : REQ_SLOTS;
        uint8_t *want;

        if (d->done || d->failed || !J->session_up || !retry_due(&d->retry, now_ms(J)))
                return;
        if (dl_open_count(d) >= limit || dl_on_hold(J, d))
                return;
        want = malloc(bytes ? bytes : 1);
        if (!want)
                return;
        for (uint32_t i = 0; i < bytes; i++)
                want[i] = have[i] | d->asked[i];
        for (unsigned i = 0; i < REQ_SLOTS && dl_open_count(d) < limit; i++) {
                struct req *q = &d->req[i];
                char topic[320];
                uint8_t *buf = NULL;
                size_t len = 0;

                if (q->open)
                        continue;
                if (!ota_stream_plan_request(want, nb, d->per_request, &q->r))
                        break;
                snprintf(q->r.client_token, sizeof q->r.client_token, "%u", ++J->token);
                q->r.file_id = d->fileid;
                q->r.block_size = ota_image_block_size(d->img);
                if (ota_stream_encode_request(&q->r, &buf, &len) < 0)
                        break;
                snprintf(topic, sizeof topic, "$aws/things/%s/streams/%s/get/cbor", d->thing,
                         d->stream);
                if (cloud_session_publish(J->session, topic, buf, len) < 0) {
                        free(buf);
                        break; /* the session went down: not a try */
                }
                free(buf);
                if (!dl_open_count(d))
                        d->wait_since_ms = now_ms(J);
                q->open = true;
                q->sent_ms = now_ms(J);
                d->requests++;
                for (uint32_t k = 0; k < q->r.bitmap_len * 8; k++)
                        if (ota_bit_get(q->r.bitmap, k)) {
                                ota_bit_set(d->asked, q->r.offset + k);
                                ota_bit_set(want, q->r.offset + k);
                        }
        }
        free(want);
}

static bool req_satisfied(const struct dl *d, const struct req *q)
{
        const uint8_t *have = ota_image_bitmap(d->img);

        for (uint32_t k = 0; k < q->r.bitmap_len * 8; k++)
                if (ota_bit_get(q->r.bitmap, k) && !ota_bit_get(have, q->r.offset + k))
                        return false;
        return true;
}

static void hand_to_engine(struct ota_jobs *J, struct cjob *c)
{
        const char *devs[1];
        struct ota_job_spec spec = { .id = c->engine_id, .source = "cloud", .actor = "cloud" };
        char id[65], err[256];
        int r;

        spec.image = c->dl->img;
        spec.sig = c->doc.files[0].sig;
        spec.sig_len = c->doc.files[0].sig_len;
        if (c->device[0]) {
                devs[0] = c->device;
                spec.devices = devs;
                spec.n_devices = 1;
        } else {
                spec.devices = (const char *const *)c->doc.devices;
                spec.n_devices = c->doc.n_devices;
                spec.groups = (const char *const *)c->doc.groups;
                spec.n_groups = c->doc.n_groups;
        }
        /* A refused job reports through job_fail() below, not through the engine's reporter:
         * the state becomes CJ_ENGINE only once the engine has it. */
        r = ota_job_create(J->ota, &spec, id, err, sizeof err);
        if (r < 0) {
                if (r == -EBADMSG && strstr(err, "signature"))
                        ota_image_discard(c->dl->img); /* never serve it; fetch anew next time */
                job_fail(J, c, err);
                return;
        }
        c->state = CJ_ENGINE;
}

/* The file is here: to the engine (a job whose execution may be gone waits for the cloud). */
static void job_downloaded(struct ota_jobs *J, struct cjob *c)
{
        report_receive(J, c, false);
        if (c->dl->store_error)
                job_fail(J, c, "cannot store the download");
        else if (!ota_image_usable(c->dl->img))
                job_fail(J, c, "the image failed its checks; retry the job");
        else
                hand_to_engine(J, c);
}

/* The download ends without the file: every job waiting for it fails with the reason. */
static void dl_fail(struct ota_jobs *J, struct dl *d, const char *fmt, ...) _printf_(3, 4);
static void dl_fail(struct ota_jobs *J, struct dl *d, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(d->reason, sizeof d->reason, fmt, ap);
        va_end(ap);
        d->failed = true;
        dl_close_all(d);
        audit_log(J->audit, "cloud", "ota.download_failed", d->stream,
                  json_pack("{ss ss sI sI}", "thing", d->thing, "reason", d->reason, "requests",
                            (json_int_t)d->requests, "have",
                            (json_int_t)ota_image_blocks_have(d->img)));
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (c->dl == d && c->state == CJ_DOWNLOADING)
                        job_fail(J, c, d->reason);
}

/* A try of the download failed (refused, or no block for timeout_ms): back off, or give up. */
static void dl_try_failed(struct ota_jobs *J, struct dl *d, const char *why)
{
        dl_close_all(d);
        d->probing = true;
        if (!retry_failed(&d->retry, now_ms(J), retry_random()))
                dl_fail(J, d, "%s (after %u tries)", why, d->retry.failures);
        else
                log_info("ota jobs: stream %s: %s; asking again in %llu ms (try %u of %u)",
                         d->stream, why, (unsigned long long)(d->retry.due_ms - now_ms(J)),
                         d->retry.failures + 1, d->retry.policy->max_tries);
}

static void dl_complete(struct ota_jobs *J, struct dl *d)
{
        int r = ota_image_finish(d->img);

        d->done = true;
        dl_close_all(d);
        audit_log(J->audit, "cloud", "ota.download_done", d->stream,
                  json_pack("{ss sI sI sI sI sI}", "sha256", ota_image_sha256(d->img), "size",
                            (json_int_t)ota_image_size(d->img), "blocks", (json_int_t)d->blocks_rx,
                            "duplicates", (json_int_t)d->blocks_dup, "bad",
                            (json_int_t)d->blocks_bad, "requests", (json_int_t)d->requests));
        d->store_error = r < 0;
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (c->dl == d && c->state == CJ_DOWNLOADING && !c->confirming)
                        job_downloaded(J, c);
}

static struct dl *dl_get(struct ota_jobs *J, struct cjob *c, char *err, size_t errlen)
{
        const struct ota_jobdoc_file *f = &c->doc.files[0];
        uint8_t h[32];
        char hex[41], *in = NULL, key[OTA_CACHE_KEY_MAX + 1];
        struct dl *d;
        uint32_t bs;
        int r;

        /* The download's name: what the job says about the file. */
        if (asprintf(&in, "%s|%u|%llu|", c->doc.streamname, f->fileid,
                     (unsigned long long)f->filesize) < 0)
                return NULL;
        {
                size_t l = strlen(in);
                char *w = realloc(in, l + f->sig_len + 1);
                if (!w) {
                        free(in);
                        return NULL;
                }
                in = w;
                memcpy(in + l, f->sig, f->sig_len);
                ota_sha256_buffer((const uint8_t *)in, l + f->sig_len, h);
                free(in);
        }
        ota_hex(h, 20, hex);
        snprintf(key, sizeof key, "dl-%s", hex);
        for (d = J->dls; d; d = d->next)
                if (strcmp(d->key, key) == 0 && !d->failed) {
                        d->refs++;
                        return d;
                }
        d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        snprintf(d->key, sizeof d->key, "%s", key);
        snprintf(d->thing, sizeof d->thing, "%s", c->thing);
        snprintf(d->stream, sizeof d->stream, "%s", c->doc.streamname);
        d->fileid = f->fileid;
        d->refs = 1;
        d->probing = true;
        retry_init(&d->retry, &retry_cloud_policy);
        r = ota_cache_begin(ota_get_cache(J->ota), key, f->filesize, J->block_size, &d->img);
        if (r < 0) {
                snprintf(err, errlen, "cannot cache the image: %s", strerror(-r));
                free(d);
                return NULL;
        }
        d->asked = calloc(1, (ota_image_blocks(d->img) + 7) / 8 + 1);
        if (!d->asked) {
                ota_image_unref(d->img);
                free(d);
                return NULL;
        }
        /* Each request asks for what the service answers: at most 128 KB and 98 blocks. */
        bs = ota_image_block_size(d->img);
        d->per_request = MAX(1u, MIN(REQ_BYTES / bs, OTA_STREAM_MAX_BLOCKS_PER_REQUEST));
        d->next = J->dls;
        J->dls = d;
        audit_log(J->audit, "cloud",
                  ota_image_blocks_have(d->img) ? "ota.download_resume" : "ota.download_start",
                  d->stream,
                  json_pack("{ss sI sI sI}", "thing", d->thing, "size", (json_int_t)f->filesize,
                            "blocks", (json_int_t)ota_image_blocks(d->img), "have",
                            (json_int_t)ota_image_blocks_have(d->img)));
        return d;
}

static const char *token_of(const struct ota_stream_rejected *rj)
{
        return rj->client_token;
}

static void on_stream_message(struct ota_jobs *J, const char *thing, const char *stream,
                              const char *rest, const uint8_t *p, size_t len)
{
        struct ota_stream_data data;
        struct dl *d;
        int r;

        for (d = J->dls; d; d = d->next)
                if (!d->done && !d->failed && strcmp(d->stream, stream) == 0 &&
                    strcmp(d->thing, thing) == 0)
                        break;
        if (!d)
                return;
        if (strcmp(rest, "rejected/cbor") == 0 || strcmp(rest, "rejected/json") == 0) {
                struct ota_stream_rejected rj = { 0 };
                struct req *q = NULL;
                char why[512];

                (void)ota_stream_decode_rejected(p, len, &rj);
                d->rejections++;
                for (unsigned i = 0; i < REQ_SLOTS; i++)
                        if (d->req[i].open && strcmp(d->req[i].r.client_token, token_of(&rj)) == 0)
                                q = &d->req[i];
                if (!q && *token_of(&rj))
                        return; /* an answer to a request given up already */
                if (strcmp(rj.code, "ResourceNotFound") == 0)
                        snprintf(why, sizeof why, "stream %s not found (ResourceNotFound)", stream);
                else
                        snprintf(why, sizeof why, "stream %s refused the request (%s%s%s)", stream,
                                 *rj.code ? rj.code : "?", *rj.message ? ": " : "", rj.message);
                log_warning("ota jobs: %s", why);
                if (q)
                        dl_close_req(d, q);
                /* One failed try per round: the other requests of this round say the same. */
                if (retry_due(&d->retry, now_ms(J)))
                        dl_try_failed(J, d, why);
                return;
        }
        if (strcmp(rest, "data/cbor") != 0)
                return;
        if (ota_stream_decode_data(p, len, &data) < 0 || data.file_id != d->fileid) {
                d->blocks_bad++; /* truncated, garbage, another file: counted, re-requested */
                return;
        }
        r = ota_image_write_block(d->img, data.block, data.payload, data.len);
        if (r < 0)
                d->blocks_bad++;
        else if (r == 0)
                d->blocks_dup++;
        else {
                d->blocks_rx++;
                d->probing = false;
                d->wait_since_ms = now_ms(J);
                retry_reset(&d->retry);
                for (struct cjob *c = J->jobs; c; c = c->next)
                        if (c->dl == d && c->state == CJ_DOWNLOADING)
                                report_receive(J, c, false);
        }
        if (ota_image_blocks_have(d->img) == ota_image_blocks(d->img)) {
                dl_complete(J, d);
                return;
        }
        for (unsigned i = 0; i < REQ_SLOTS; i++)
                if (d->req[i].open && req_satisfied(d, &d->req[i]))
                        dl_close_req(d, &d->req[i]);
        dl_pump(J, d);
}

static void dl_tick(struct ota_jobs *J, struct dl *d, uint64_t now)
{
        const struct retry_policy *pol = d->retry.policy;

        if (d->done || d->failed)
                return;
        if (ota_image_blocks_have(d->img) == ota_image_blocks(d->img)) {
                dl_complete(J, d);
                return;
        }
        if (!J->session_up) {
                dl_close_all(d); /* the answers are lost with the session; not a try */
                return;
        }
        if (dl_open_count(d) && now - d->wait_since_ms >= pol->timeout_ms) {
                char why[200];
                snprintf(why, sizeof why, "stream %s: no block within %u s", d->stream,
                         pol->timeout_ms / 1000);
                dl_try_failed(J, d, why);
                if (d->failed)
                        return;
        }
        dl_pump(J, d);
}

static void dl_release(struct ota_jobs *J, struct dl *d)
{
        if (!d || --d->refs > 0)
                return;
        for (struct dl **p = &J->dls; *p; p = &(*p)->next)
                if (*p == d) {
                        *p = d->next;
                        break;
                }
        ota_image_unref(d->img);
        free(d->asked);
        free(d);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static struct cjob *find_job(struct ota_jobs *J, const char *thing, const char *job_id)
{
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (strcmp(c->thing, thing) == 0 && strcmp(c->job_id, job_id) == 0)
                        return c;
        return NULL;
}

/* Whose thing is this? The gateway's own, one of its devices' (by the template, a hash lookup in
 * the registry), or another's. */
enum owner { OWNER_NONE, OWNER_GATEWAY, OWNER_DEVICE };

static enum owner thing_owner(struct ota_jobs *J, const char *thing, char *dev, size_t n)
{
        if (strcmp(thing, J->gateway) == 0)
                return OWNER_GATEWAY;
        if (J->per_device && ota_thing_device(J->tmpl, J->gateway, thing, dev, n) == 0 &&
            registry_find(J->reg, dev))
                return OWNER_DEVICE;
        return OWNER_NONE;
}

/* Another thing's message (a wildcard subscription, or a policy wider than ours): never acted
 * on, never answered; counted, and audited once per thing (the first FOREIGN_AUDITED). */
static void foreign_message(struct ota_jobs *J, const char *thing, const char *topic)
{
        J->foreign_messages++;
        for (unsigned i = 0; i < J->n_foreign; i++)
                if (strcmp(J->foreign[i], thing) == 0)
                        return;
        if (J->n_foreign == FOREIGN_AUDITED)
                return;
        snprintf(J->foreign[J->n_foreign++], sizeof J->foreign[0], "%s", thing);
        log_info("ota jobs: ignoring messages of thing %s (not this gateway's)", thing);
        audit_log(J->audit, "cloud", "ota.foreign_thing", thing, json_pack("{ss}", "topic", topic));
}

static void on_execution(struct ota_jobs *J, const char *thing, const char *dev, json_t *ex)
{
        const char *job_id = json_string_value(json_object_get(ex, "jobId"));
        const char *status = json_string_value(json_object_get(ex, "status"));
        json_t *doc = json_object_get(ex, "jobDocument");
        char err[256] = "";
        const char *reason = NULL;
        struct cjob *c;
        int st;

        if (!job_id || strlen(job_id) > 64 || !*job_id)
                return;
        if (find_job(J, thing, job_id))
                return; /* already on it */
        if (status && strcmp(status, "QUEUED") != 0 && strcmp(status, "IN_PROGRESS") != 0)
                return;
        c = calloc(1, sizeof *c);
        if (!c)
                return;
        snprintf(c->thing, sizeof c->thing, "%s", thing);
        snprintf(c->job_id, sizeof c->job_id, "%s", job_id);
        c->next = J->jobs;
        J->jobs = c;
        J->jobs_seen++;
        if (dev) {
                snprintf(c->device, sizeof c->device, "%s", dev);
                snprintf(c->engine_id, sizeof c->engine_id, "%.40s@%.23s", job_id, dev);
        } else
                snprintf(c->engine_id, sizeof c->engine_id, "%s", job_id);
        if (ota_jobdoc_from_json(doc, &c->doc, err, sizeof err) < 0) {
                audit_log(J->audit, "cloud", "ota.job_rejected", job_id,
                          json_pack("{ss ss}", "thing", thing, "reason", err));
                job_fail(J, c, err);
                return;
        }
        if (!dev && !c->doc.n_devices && !c->doc.n_groups) {
                job_fail(J, c, "job document names no devices or groups (\"mcugw\" object)");
                return;
        }
        /* After a restart the engine may already be running (or have finished) this job. */
        st = ota_job_state(J->ota, c->engine_id, &reason);
        if (st >= 0) {
                c->state = CJ_ENGINE;
                if (st == OTA_SUCCEEDED)
                        job_update(J, c, "SUCCEEDED",
                                   json_pack("{ss}", "reason",
                                             reason && strncmp(reason, "accepted", 8) == 0
                                                     ? reason
                                                     : "accepted"));
                else if (st == OTA_FAILED || st == OTA_CANCELED)
                        job_fail(J, c, reason && *reason ? reason : "failed");
                return;
        }
        audit_log(J->audit, "cloud", "ota.job_notified", job_id,
                  json_pack("{ss ss sI}", "thing", thing, "stream", c->doc.streamname, "size",
                            (json_int_t)c->doc.files[0].filesize));
        c->dl = dl_get(J, c, err, sizeof err);
        if (c->dl && c->dl->done) {
                job_downloaded(J, c); /* another job fetched this file a moment ago */
                return;
        }
        if (!c->dl) {
                job_fail(J, c, *err ? err : "cannot start the download");
                return;
        }
        report_receive(J, c, true);
        dl_pump(J, c->dl);
}

/* The execution is gone (cancelled, deleted, or terminal by someone else's hand): stop the
 * download, abort the transfers to the MCUs, and say nothing more about it. */
static void job_cancel(struct ota_jobs *J, struct cjob *c, const char *why)
{
        int prev = c->state;

        if (c->cancelled)
                return;
        c->cancelled = true;
        c->confirming = false;
        c->state = CJ_FINAL; /* before the abort: its reports are not ours to send */
        upd_done(c);
        J->jobs_cancelled++;
        log_notice("ota jobs: job %s on %s was cancelled in the cloud (%s)", c->job_id, c->thing,
                   why);
        if (prev == CJ_ENGINE)
                (void)ota_job_abort(J->ota, c->engine_id, "cloud");
        audit_log(J->audit, "cloud", "ota.job_cancelled", c->job_id,
                  json_pack("{ss ss ss}", "thing", c->thing, "reason", why, "stage",
                            prev == CJ_DOWNLOADING ? "download"
                            : prev == CJ_ENGINE    ? "transfer"
                                                   : "reported"));
        /* The download stops when no other job needs it (the partial file stays resumable). */
        if (c->dl) {
                struct dl *d = c->dl;
                c->dl = NULL;
                if (d->refs == 1)
                        dl_close_all(d);
                dl_release(J, d);
        }
}

/* A hint that an execution may be gone: ask the cloud (DescribeJobExecution). */
static void confirm_send(struct ota_jobs *J, struct cjob *c)
{
        char topic[320];

        snprintf(topic, sizeof topic, "$aws/things/%s/jobs/%s/get", c->thing, c->job_id);
        new_token(J, c->confirm_token, sizeof c->confirm_token);
        c->confirm_sent_ms = now_ms(J);
        c->confirm_waiting = publish_json(J, topic,
                                          json_pack("{ss sb}", "clientToken", c->confirm_token,
                                                    "includeJobDocument", 0)) != -ENOTCONN;
}

static void confirm(struct ota_jobs *J, struct cjob *c)
{
        if (c->cancelled || c->confirming || c->state == CJ_FINAL)
                return;
        c->confirming = true;
        retry_init(&c->confirm_retry, &retry_cloud_policy);
        confirm_send(J, c);
}

/* The execution is still there: carry on where the hint stopped us. */
static void confirm_done(struct ota_jobs *J, struct cjob *c)
{
        c->confirming = false;
        if (c->state != CJ_DOWNLOADING || !c->dl)
                return;
        if (c->dl->done)
                job_downloaded(J, c);
        else
                dl_pump(J, c->dl);
}

/* Every execution we work on for thing that a notification no longer lists may be gone. */
static void check_listed(struct ota_jobs *J, const char *thing, json_t *jobs, const char *next_id)
{
        for (struct cjob *c = J->jobs; c; c = c->next) {
                bool listed = false;
                if (strcmp(c->thing, thing) != 0 || c->cancelled)
                        continue;
                if (jobs) {
                        const char *st;
                        json_t *arr, *e;
                        size_t i;
                        json_object_foreach (jobs, st, arr)
                                json_array_foreach (arr, i, e) {
                                        const char *id =
                                                json_string_value(json_object_get(e, "jobId"));
                                        if (id && strcmp(id, c->job_id) == 0)
                                                listed = true;
                                }
                } else
                        listed = next_id && strcmp(next_id, c->job_id) == 0;
                if (!listed)
                        confirm(J, c);
        }
}

static bool terminal_code(const char *code)
{
        return code &&
               (strcmp(code, "InvalidStateTransition") == 0 ||
                strcmp(code, "TerminalStateReached") == 0 || strcmp(code, "ResourceNotFound") == 0);
}

static bool retriable_code(const char *code)
{
        return code &&
               (strcmp(code, "Throttled") == 0 || strcmp(code, "InternalError") == 0 ||
                strcmp(code, "ServiceUnavailable") == 0 || strcmp(code, "RequestThrottled") == 0);
}

static void on_jobs_message(struct ota_jobs *J, const char *thing, const char *dev,
                            const char *name, const char *rest, const uint8_t *p, size_t len)
{
        const char *token, *code;
        struct cjob *c;
        json_t *o;

        o = json_loadb((const char *)p, len, 0, NULL);
        if (!o) {
                log_debug("ota jobs: malformed JSON on %s/%s", name, rest);
                return;
        }
        token = json_string_value(json_object_get(o, "clientToken"));
        code = json_string_value(json_object_get(o, "code"));
        if ((strcmp(name, "notify-next") == 0 && !*rest) ||
            (strcmp(name, "$next") == 0 && strcmp(rest, "get/accepted") == 0)) {
                json_t *ex = json_object_get(o, "execution");
                const char *id = json_string_value(json_object_get(ex, "jobId"));
                if (strcmp(name, "$next") == 0 && token && strcmp(token, J->own_token) == 0) {
                        J->own_token[0] = 0;
                        retry_reset(&J->own_retry);
                }
                check_listed(J, thing, NULL, id);
                if (json_is_object(ex))
                        on_execution(J, thing, dev, ex);
        } else if (strcmp(name, "notify") == 0 && !*rest) {
                json_t *jobs = json_object_get(o, "jobs");
                if (json_is_object(jobs))
                        check_listed(J, thing, jobs, NULL);
        } else if (strcmp(name, "$next") == 0) {
                /* $next/get/rejected: the next poll asks again */
        } else if (!(c = find_job(J, thing, name))) {
                /* not (or no longer) ours to follow */
        } else if (strcmp(rest, "update/accepted") == 0) {
                if (token && strcmp(token, c->upd_token) == 0)
                        upd_done(c);
        } else if (strcmp(rest, "update/rejected") == 0) {
                J->updates_rejected++;
                log_warning("ota jobs: update of job %s on %s rejected: %s %s", name, thing,
                            code ?: "?", json_string_value(json_object_get(o, "message")) ?: "");
                if (terminal_code(code)) {
                        job_cancel(J, c, code);
                } else if (token && strcmp(token, c->upd_token) == 0) {
                        c->upd_waiting = false;
                        if (!retriable_code(code) ||
                            !retry_failed(&c->upd_retry, now_ms(J), retry_random()))
                                upd_done(c); /* given up: logged and counted */
                }
        } else if (strcmp(rest, "get/accepted") == 0 && c->confirming) {
                json_t *ex = json_object_get(o, "execution");
                const char *st = json_string_value(json_object_get(ex, "status"));
                if (!ex)
                        job_cancel(J, c, "removed");
                else if (st && strcmp(st, "QUEUED") != 0 && strcmp(st, "IN_PROGRESS") != 0)
                        job_cancel(J, c, st);
                else
                        confirm_done(J, c);
        } else if (strcmp(rest, "get/rejected") == 0 && c->confirming) {
                if (code && strcmp(code, "ResourceNotFound") == 0)
                        job_cancel(J, c, "removed (ResourceNotFound)");
                else if (!retriable_code(code) ||
                         !retry_failed(&c->confirm_retry, now_ms(J), retry_random()))
                        confirm_done(J, c);
                else
                        c->confirm_waiting = false;
        }
        json_decref(o);
}

static void on_mqtt_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct ota_jobs *J = ud;
        char thing[THING_MAX + 1], kind[16], name[THING_MAX + 1], dev[REGISTRY_ID_MAX + 1];
        const char *rest;

        if (ota_topic_split(topic, thing, sizeof thing, kind, sizeof kind, name, sizeof name,
                            &rest) < 0)
                return;
        switch (thing_owner(J, thing, dev, sizeof dev)) {
        case OWNER_NONE: foreign_message(J, thing, topic); return;
        case OWNER_GATEWAY: dev[0] = 0; break;
        case OWNER_DEVICE: break;
        }
        if (strcmp(kind, "jobs") == 0)
                on_jobs_message(J, thing, dev[0] ? dev : NULL, name, rest, payload, len);
        else if (strcmp(kind, "streams") == 0)
                on_stream_message(J, thing, name, rest, payload, len);
}

/* updatedBy as the stock agent writes it: the running firmware's version packed into 32 bits
 * (major << 24 | minor << 16 | build), in hex. */
static void version_hex(const char *v, char *out, size_t n)
{
        unsigned a = 0, b = 0, c = 0;
        const char *p = v ? v : "";

        while (*p && !(*p >= '0' && *p <= '9'))
                p++;
        if (sscanf(p, "%u.%u.%u", &a, &b, &c) < 1)
                a = b = c = 0;
        snprintf(out, n, "0x%x", (unsigned)((a & 0xff) << 24 | (b & 0xff) << 16 | (c & 0xffff)));
}

/* The engine's progress becomes the stock statusDetails. */
static void on_progress(void *ud, const struct ota_progress *p)
{
        struct ota_jobs *J = ud;
        struct cjob *c;
        char ver[16], why[96];
        json_t *d;

        for (c = J->jobs; c; c = c->next)
                if (strcmp(c->engine_id, p->job_id) == 0 && c->state == CJ_ENGINE)
                        break;
        if (!c)
                return;
        if (!p->device_id) {
                if (p->state == OTA_SUCCEEDED) {
                        snprintf(why, sizeof why, "accepted v%s", p->updated_by ?: "");
                        job_update(J, c, "SUCCEEDED", json_pack("{ss}", "reason", why));
                } else
                        job_fail(J, c, p->reason && *p->reason ? p->reason : "failed");
                return;
        }
        if (p->state != OTA_IN_PROGRESS || !p->self_test)
                return; /* transfers to the MCUs are not the stock agent's to report */
        /* "ready": the MCU verified the image and reboots, still running the old firmware;
         * "active": it runs the new one in test mode. */
        if (strcmp(p->self_test, "ready") == 0) {
                const struct registry_device *rd = registry_find(J->reg, p->device_id);
                version_hex(rd ? rd->fw_version : NULL, ver, sizeof ver);
        } else
                version_hex(p->updated_by, ver, sizeof ver);
        d = json_pack("{ss ss}", "self_test", p->self_test, "updatedBy", ver);
        if (!c->device[0])
                json_object_set_new(d, "device", json_string(p->device_id));
        job_update(J, c, "IN_PROGRESS", d);
}

/* ---- timer: polling, retries ------------------------------------------------------------ */

static bool thing_busy(struct ota_jobs *J, const char *thing)
{
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (strcmp(c->thing, thing) == 0 && c->state != CJ_FINAL)
                        return true;
        return false;
}

/* Device things: one $next/get each per sweep, at most POLL_RATE a second, by a cursor over the
 * registry (any number of devices; a device added later is in the next sweep). */
static void sweep_step(struct ota_jobs *J, uint64_t now)
{
        const struct registry_device *rd;
        char name[THING_MAX + 1], token[24];
        unsigned skipped = 0;

        if (!J->sweeping) {
                if (now < J->sweep_start_ms)
                        return;
                J->sweeping = true;
                J->sweep_cursor = 0;
        }
        while ((rd = registry_get(J->reg, J->sweep_cursor))) {
                if (ratelimit_delay(&J->polls, 1, now * 1000))
                        return;
                J->sweep_cursor++;
                if (rd->state != DEVICE_ACTIVE ||
                    ota_thing_name(J->tmpl, J->gateway, rd->id, name, sizeof name) < 0 ||
                    thing_busy(J, name)) {
                        if (++skipped >= 256)
                                return; /* the rest in the next tick */
                        continue;
                }
                if (next_get(J, name, token, sizeof token) < 0) {
                        J->sweep_cursor--; /* the session went down: this one again later */
                        return;
                }
                ratelimit_take(&J->polls, 1, now * 1000);
        }
        J->sweeping = false;
        J->sweep_start_ms = now + SWEEP_MS - SWEEP_JITTER_MS + retry_random() % SWEEP_JITTER_MS;
}

static void own_poll(struct ota_jobs *J, uint64_t now)
{
        const struct retry_policy *pol = J->own_retry.policy;

        if (J->own_token[0] && now - J->own_sent_ms >= pol->timeout_ms) {
                /* No answer to $next/get: ask again with backoff; given up, the idle poll does. */
                J->own_token[0] = 0;
                if (retry_failed(&J->own_retry, now, retry_random()))
                        J->own_poll_ms = J->own_retry.due_ms;
                else {
                        retry_reset(&J->own_retry);
                        log_warning("ota jobs: no answer to $next/get of %s", J->gateway);
                }
        }
        if (J->own_token[0] || now < J->own_poll_ms || thing_busy(J, J->gateway))
                return;
        if (next_get(J, J->gateway, J->own_token, sizeof J->own_token) < 0) {
                J->own_token[0] = 0;
                return;
        }
        J->own_sent_ms = now;
        J->own_poll_ms = now + OWN_POLL_MS;
}

/* A request without an answer after timeout_ms is a failed try; after a failed try (silence or
 * a retriable rejection) the same request goes again when the backoff is over; false once the
 * tries are used up. *waiting: sent and not answered yet. */
static bool request_tick(struct retry *r, bool *waiting, uint64_t sent_ms, uint64_t now,
                         bool *ret_resend)
{
        *ret_resend = false;
        if (*waiting && now - sent_ms >= r->policy->timeout_ms) {
                *waiting = false;
                if (!retry_failed(r, now, retry_random()))
                        return false;
        }
        if (!*waiting && now >= r->due_ms) {
                *waiting = true;
                *ret_resend = true;
        }
        return true;
}

static void job_tick(struct ota_jobs *J, struct cjob *c, uint64_t now)
{
        bool resend;

        if (c->upd) {
                if (!request_tick(&c->upd_retry, &c->upd_waiting, c->upd_sent_ms, now, &resend)) {
                        log_warning("ota jobs: no answer to the update of job %s on %s after %u "
                                    "tries",
                                    c->job_id, c->thing, c->upd_retry.failures);
                        upd_done(c);
                } else if (resend)
                        upd_send(J, c);
        }
        if (c->confirming) {
                if (!request_tick(&c->confirm_retry, &c->confirm_waiting, c->confirm_sent_ms, now,
                                  &resend))
                        confirm_done(J, c); /* unknown: carry on; the next hint asks again */
                else if (resend)
                        confirm_send(J, c);
        }
}

static void on_session_change(struct ota_jobs *J, bool up, uint64_t now)
{
        J->session_up = up;
        if (!up)
                return;
        /* Jobs queued while we were away: ask for each thing's next one, spread out. */
        J->own_poll_ms = now + retry_random() % 500;
        J->own_token[0] = 0;
        retry_reset(&J->own_retry);
        if (J->per_device) {
                J->sweeping = false;
                J->sweep_start_ms = now + retry_random() % SWEEP_JITTER_MS;
        }
}

static void on_tick(uv_timer_t *t)
{
        struct ota_jobs *J = t->data;
        uint64_t now = now_ms(J);
        bool up = cloud_session_up(J->session);

        if (up != J->session_up)
                on_session_change(J, up, now);
        if (up) {
                own_poll(J, now);
                if (J->per_device)
                        sweep_step(J, now);
                for (struct repoll **p = &J->repolls; *p;) {
                        struct repoll *rp = *p;
                        char token[24];
                        if (now < rp->due_ms) {
                                p = &rp->next;
                                continue;
                        }
                        if (!thing_busy(J, rp->thing))
                                (void)next_get(J, rp->thing, token, sizeof token);
                        *p = rp->next;
                        free(rp);
                }
        }
        for (struct dl *d = J->dls; d; d = d->next)
                dl_tick(J, d, now);
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (up)
                        job_tick(J, c, now);
        /* Finished jobs (their last word accepted) release their download; the thing asks for
         * its next job soon. */
        for (struct cjob **p = &J->jobs; *p;) {
                struct cjob *c = *p;
                if (c->state == CJ_FINAL && !c->upd && !c->confirming) {
                        struct repoll *rp = calloc(1, sizeof *rp);
                        if (rp && !c->cancelled) {
                                rp->due_ms = now + REPOLL_MS;
                                snprintf(rp->thing, sizeof rp->thing, "%s", c->thing);
                                rp->next = J->repolls;
                                J->repolls = rp;
                        } else
                                free(rp);
                        *p = c->next;
                        if (c->dl)
                                dl_release(J, c->dl);
                        ota_jobdoc_clear(&c->doc);
                        free(c);
                } else
                        p = &c->next;
        }
}

/* ---- life cycle --------------------------------------------------------------------------- */

int ota_jobs_new(uv_loop_t *loop, const struct ota_options *o, const char *gateway,
                 struct cloud_session *session, struct ota *ota, struct registry *reg,
                 struct audit *audit, struct ota_jobs **ret)
{
        char jobs_filter[THING_MAX + 32], streams_filter[THING_MAX + 32];
        struct ota_jobs *J;
        int r;

        J = calloc(1, sizeof *J);
        if (!J)
                return -ENOMEM;
        J->loop = loop;
        J->session = session;
        J->ota = ota;
        J->reg = reg;
        J->audit = audit;
        snprintf(J->gateway, sizeof J->gateway, "%s", gateway);
        J->per_device = o->targeting == 0;
        J->tmpl = strdup(o->thing_template ? o->thing_template : "{gateway}-{device}");
        J->block_size = (uint32_t)o->download_block;
        retry_init(&J->own_retry, &retry_cloud_policy);
        ratelimit_init(&J->polls, POLL_RATE, POLL_BURST, uv_now(loop) * USEC_PER_MSEC);
        if (!J->tmpl) {
                free(J);
                return -ENOMEM;
        }
        /* Targeting=gateway needs only the gateway's thing; one thing per device needs the
         * wildcard (one filter for any number of devices; the policy's iot:Receive narrows what
         * AWS delivers, docs/ota.md), and thing_owner() drops the rest. */
        snprintf(jobs_filter, sizeof jobs_filter, "$aws/things/%s/jobs/#",
                 J->per_device ? "+" : J->gateway);
        snprintf(streams_filter, sizeof streams_filter, "$aws/things/%s/streams/#",
                 J->per_device ? "+" : J->gateway);
        if ((r = cloud_session_subscribe(session, jobs_filter, on_mqtt_message, J)) < 0 ||
            (r = cloud_session_subscribe(session, streams_filter, on_mqtt_message, J)) < 0) {
                log_error_errno(r, "OTA: cannot subscribe to the Jobs and stream topics: %m");
                cloud_session_forget(session, J);
                free(J->tmpl);
                free(J);
                return r;
        }
        ota_set_reporter(ota, on_progress, J);
        uv_timer_init(loop, &J->timer);
        J->timer.data = J;
        uv_timer_start(&J->timer, on_tick, JOBS_TICK_MS, JOBS_TICK_MS);
        *ret = J;
        return 0;
}

static void on_closed(uv_handle_t *h)
{
        free(h->data);
}

void ota_jobs_stop(struct ota_jobs *J)
{
        if (!J)
                return;
        cloud_session_forget(J->session, J);
        ota_set_reporter(J->ota, NULL, NULL);
        /* Images go back to the cache now, while it (and the database) still exist. */
        while (J->jobs) {
                struct cjob *c = J->jobs;
                J->jobs = c->next;
                ota_jobdoc_clear(&c->doc);
                free(c->upd);
                free(c);
        }
        while (J->dls) {
                struct dl *d = J->dls;
                J->dls = d->next;
                ota_image_unref(d->img);
                free(d->asked);
                free(d);
        }
        while (J->repolls) {
                struct repoll *rp = J->repolls;
                J->repolls = rp->next;
                free(rp);
        }
        free(J->tmpl);
        J->tmpl = NULL;
        uv_close((uv_handle_t *)&J->timer, on_closed);
}

json_t *ota_jobs_status(struct ota_jobs *J)
{
        json_t *a = json_array();

        for (struct dl *d = J->dls; d; d = d->next) {
                json_t *o =
                        json_pack("{ss ss sb sb sI sI sI sI sI sI sI sI sI}", "stream", d->stream,
                                  "thing", d->thing, "done", d->done, "failed", d->failed, "blocks",
                                  (json_int_t)ota_image_blocks(d->img), "have",
                                  (json_int_t)ota_image_blocks_have(d->img), "received",
                                  (json_int_t)d->blocks_rx, "duplicates", (json_int_t)d->blocks_dup,
                                  "bad", (json_int_t)d->blocks_bad, "requests",
                                  (json_int_t)d->requests, "rejections", (json_int_t)d->rejections,
                                  "in_flight", (json_int_t)dl_open_count(d), "blocks_per_request",
                                  (json_int_t)d->per_request);
                if (d->failed)
                        json_object_set_new(o, "reason", json_string(d->reason));
                json_array_append_new(a, o);
        }
        return json_pack("{ss sI sI sI sI sI sI so}", "targeting",
                         J->per_device ? "thing-per-device" : "gateway", "jobs_seen",
                         (json_int_t)J->jobs_seen, "updates_sent", (json_int_t)J->updates_sent,
                         "updates_rejected", (json_int_t)J->updates_rejected, "foreign_messages",
                         (json_int_t)J->foreign_messages, "polls_sent", (json_int_t)J->polls_sent,
                         "jobs_cancelled", (json_int_t)J->jobs_cancelled, "downloads", a);
}
