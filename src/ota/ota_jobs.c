/* SPDX-License-Identifier: Apache-2.0 */
/* AWS IoT Jobs + MQTT file streams for OTA (see ota_jobs.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "ota/ota.h"
#include "ota/ota_cache.h"
#include "ota/ota_jobdoc.h"
#include "ota/ota_jobs.h"
#include "ota/ota_stream.h"
#include "ota/ota_verify.h"
#include "devices/registry.h"
#include "cloud/relay.h"

#define THING_MAX 128
#define JOBS_TICK_MS 100
#define POLL_MS 30000 /* $next/get when idle */
#define REQ_TIMEOUT_MS 3000
#define BACKOFF_MAX_MS 30000
#define REQ_BLOCKS 32 /* blocks per stream request (AWS allows 98) */
#define MAX_RETRIES 20
#define FOREIGN_AUDITED 16

struct dl {
        struct dl *next;
        char key[OTA_CACHE_KEY_MAX + 1];
        char thing[THING_MAX + 1];
        char stream[THING_MAX + 1];
        uint32_t fileid;
        struct ota_image *img;
        struct ota_stream_request req; /* the outstanding request */
        bool req_open;
        uint64_t req_ms, backoff_ms;
        unsigned retries, refs;
        bool done, failed, announced;
        uint64_t blocks_rx, blocks_dup, blocks_bad, requests;
};

enum { CJ_DOWNLOADING, CJ_ENGINE, CJ_FINAL };

struct cjob {
        struct cjob *next;
        char thing[THING_MAX + 1];
        char device[REGISTRY_ID_MAX + 1]; /* thing-per-device */
        char job_id[65];
        char engine_id[65];
        int state;
        struct ota_jobdoc doc;
        struct dl *dl;
        unsigned updates;
};

struct ota_jobs {
        uv_loop_t *loop;
        uv_timer_t timer;
        struct relay *relay;
        struct ota *ota;
        struct registry *reg;
        struct audit *audit;
        char gateway[65];
        bool per_device;
        char *tmpl;
        uint32_t block_size;
        struct dl *dls;
        struct cjob *jobs;
        struct {
                char name[THING_MAX + 1];
                uint64_t next_poll_ms;
        } polls[64];
        unsigned n_polls, token;
        uint64_t updates_sent, updates_rejected, jobs_seen, foreign_messages;
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

static void publish_json(struct ota_jobs *J, const char *topic, json_t *o)
{
        char *text = json_dumps(o, JSON_COMPACT);
        int r;

        json_decref(o);
        if (!text)
                return;
        r = relay_publish(J->relay, topic, text, strlen(text));
        if (r < 0)
                log_debug("ota jobs: publish to %s failed: %s", topic, strerror(-r));
        free(text);
}

static void next_get(struct ota_jobs *J, const char *thing)
{
        char topic[256], token[32];

        snprintf(topic, sizeof topic, "$aws/things/%s/jobs/$next/get", thing);
        snprintf(token, sizeof token, "mcugw-%u", ++J->token);
        publish_json(J, topic, json_pack("{ss}", "clientToken", token));
}

/* statusDetails is a flat map of strings (AWS refuses anything else). */
static void job_update(struct ota_jobs *J, struct cjob *c, const char *status, json_t *details)
{
        char topic[320], token[32];

        snprintf(topic, sizeof topic, "$aws/things/%s/jobs/%s/update", c->thing, c->job_id);
        snprintf(token, sizeof token, "mcugw-%u", ++J->token);
        publish_json(J, topic,
                     json_pack("{ss so ss}", "status", status, "statusDetails",
                               details ? details : json_object(), "clientToken", token));
        c->updates++;
        J->updates_sent++;
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

/* ---- downloads ---------------------------------------------------------------------------- */

static void dl_request(struct ota_jobs *J, struct dl *d)
{
        char topic[320], token[24];
        uint8_t *buf = NULL;
        size_t len = 0;
        uint32_t n;
        int r;

        n = ota_stream_plan_request(ota_image_bitmap(d->img), ota_image_blocks(d->img), REQ_BLOCKS,
                                    &d->req);
        if (!n)
                return;
        snprintf(token, sizeof token, "%u", ++J->token);
        snprintf(d->req.client_token, sizeof d->req.client_token, "%s", token);
        d->req.file_id = d->fileid;
        d->req.block_size = ota_image_block_size(d->img);
        if (ota_stream_encode_request(&d->req, &buf, &len) < 0)
                return;
        snprintf(topic, sizeof topic, "$aws/things/%s/streams/%s/get/cbor", d->thing, d->stream);
        r = relay_publish(J->relay, topic, buf, len);
        free(buf);
        d->req_open = true;
        d->req_ms = now_ms(J);
        d->requests++;
        if (r < 0)
                log_debug("ota jobs: stream request not sent: %s", strerror(-r));
}

static bool req_satisfied(const struct dl *d)
{
        const uint8_t *have = ota_image_bitmap(d->img);

        for (uint32_t k = 0; k < d->req.bitmap_len * 8; k++)
                if (ota_bit_get(d->req.bitmap, k) && !ota_bit_get(have, d->req.offset + k))
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
        free(d);
}

static void dl_complete(struct ota_jobs *J, struct dl *d)
{
        int r = ota_image_finish(d->img);

        d->done = true;
        d->req_open = false;
        audit_log(J->audit, "cloud", "ota.download_done", d->stream,
                  json_pack("{ss sI sI sI sI}", "sha256", ota_image_sha256(d->img), "size",
                            (json_int_t)ota_image_size(d->img), "blocks", (json_int_t)d->blocks_rx,
                            "duplicates", (json_int_t)d->blocks_dup, "bad",
                            (json_int_t)d->blocks_bad));
        for (struct cjob *c = J->jobs; c; c = c->next) {
                if (c->dl != d || c->state != CJ_DOWNLOADING)
                        continue;
                if (r < 0)
                        job_fail(J, c, "cannot store the download");
                else
                        hand_to_engine(J, c);
        }
}

static struct dl *dl_get(struct ota_jobs *J, struct cjob *c, char *err, size_t errlen)
{
        const struct ota_jobdoc_file *f = &c->doc.files[0];
        uint8_t h[32];
        char hex[41], *in = NULL, key[OTA_CACHE_KEY_MAX + 1];
        struct dl *d;
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
                if (strcmp(d->key, key) == 0) {
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
        d->backoff_ms = REQ_TIMEOUT_MS;
        r = ota_cache_begin(ota_get_cache(J->ota), key, f->filesize, J->block_size, &d->img);
        if (r < 0) {
                snprintf(err, errlen, "cannot cache the image: %s", strerror(-r));
                free(d);
                return NULL;
        }
        d->next = J->dls;
        J->dls = d;
        audit_log(J->audit, "cloud",
                  ota_image_blocks_have(d->img) ? "ota.download_resume" : "ota.download_start",
                  d->stream,
                  json_pack("{ss sI sI sI}", "thing", d->thing, "size", (json_int_t)f->filesize,
                            "blocks", (json_int_t)ota_image_blocks(d->img), "have",
                            (json_int_t)ota_image_blocks_have(d->img)));
        if (ota_image_complete(d->img) || ota_image_blocks_have(d->img) == ota_image_blocks(d->img))
                d->done = false; /* dl_complete runs from the tick */
        return d;
}

static void on_stream_message(struct ota_jobs *J, const char *thing, const char *stream,
                              const char *rest, const uint8_t *p, size_t len)
{
        struct ota_stream_data data;
        struct dl *d;
        int r;

        for (d = J->dls; d; d = d->next)
                if (!d->done && strcmp(d->stream, stream) == 0 && strcmp(d->thing, thing) == 0)
                        break;
        if (!d)
                return;
        if (strcmp(rest, "rejected/cbor") == 0 || strcmp(rest, "rejected/json") == 0) {
                struct ota_stream_rejected rj = { 0 };
                (void)ota_stream_decode_rejected(p, len, &rj);
                log_warning("ota jobs: stream %s refused the request: %s %s", stream, rj.code,
                            rj.message);
                d->req_open = false;
                d->req_ms = now_ms(J);
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
                d->retries = 0;
                d->backoff_ms = REQ_TIMEOUT_MS;
        }
        if (ota_image_blocks_have(d->img) == ota_image_blocks(d->img)) {
                dl_complete(J, d);
                return;
        }
        if (d->req_open && req_satisfied(d)) {
                d->req_open = false;
                dl_request(J, d);
        }
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
                        job_update(J, c, "SUCCEEDED", json_pack("{ss}", "reason", "accepted"));
                else if (st == OTA_FAILED || st == OTA_CANCELED)
                        job_fail(J, c, reason && *reason ? reason : "failed");
                return;
        }
        audit_log(J->audit, "cloud", "ota.job_notified", job_id,
                  json_pack("{ss ss sI}", "thing", thing, "stream", c->doc.streamname, "size",
                            (json_int_t)c->doc.files[0].filesize));
        c->dl = dl_get(J, c, err, sizeof err);
        if (c->dl && c->dl->done) {
                /* Another job fetched this file a moment ago. */
                if (ota_image_usable(c->dl->img))
                        hand_to_engine(J, c);
                else
                        job_fail(J, c, "the image failed its checks; retry the job");
                return;
        }
        if (!c->dl) {
                job_fail(J, c, *err ? err : "cannot start the download");
                return;
        }
        job_update(J, c, "IN_PROGRESS", json_pack("{ss}", "receive", "0/1"));
}

static void on_jobs_message(struct ota_jobs *J, const char *thing, const char *dev,
                            const char *name, const char *rest, const uint8_t *p, size_t len)
{
        json_t *o;

        o = json_loadb((const char *)p, len, 0, NULL);
        if (!o) {
                log_debug("ota jobs: malformed JSON on %s/%s", name, rest);
                return;
        }
        if ((strcmp(name, "notify-next") == 0 && !*rest) ||
            (strcmp(name, "$next") == 0 && strcmp(rest, "get/accepted") == 0)) {
                json_t *ex = json_object_get(o, "execution");
                if (json_is_object(ex))
                        on_execution(J, thing, dev, ex);
        } else if (strcmp(rest, "update/rejected") == 0) {
                J->updates_rejected++;
                log_warning("ota jobs: update of job %s on %s rejected: %s", name, thing,
                            json_string_value(json_object_get(o, "message")) ?: "?");
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

/* The engine's progress becomes the stock statusDetails. */
static void on_progress(void *ud, const struct ota_progress *p)
{
        struct ota_jobs *J = ud;
        struct cjob *c;
        char rx[32];

        for (c = J->jobs; c; c = c->next)
                if (strcmp(c->engine_id, p->job_id) == 0 && c->state == CJ_ENGINE)
                        break;
        if (!c)
                return;
        if (!p->device_id) {
                if (p->state == OTA_SUCCEEDED)
                        job_update(J, c, "SUCCEEDED",
                                   json_pack("{ss ss}", "reason", "accepted", "updatedBy",
                                             p->updated_by ? p->updated_by : ""));
                else
                        job_fail(J, c, p->reason && *p->reason ? p->reason : "failed");
                return;
        }
        if (p->state != OTA_IN_PROGRESS)
                return; /* the job's end comes with device_id NULL */
        snprintf(rx, sizeof rx, "%u/%u", p->blocks_done, p->blocks_total);
        {
                json_t *d = json_pack("{ss ss}", "receive", rx, "updatedBy",
                                      p->updated_by ? p->updated_by : "");
                if (p->self_test)
                        json_object_set_new(d, "self_test", json_string(p->self_test));
                if (!c->device[0])
                        json_object_set_new(d, "device", json_string(p->device_id));
                job_update(J, c, "IN_PROGRESS", d);
        }
}

/* ---- timer: polling, request retries ---------------------------------------------------- */

static void poll_thing(struct ota_jobs *J, const char *thing, uint64_t now)
{
        unsigned i;

        for (i = 0; i < J->n_polls; i++)
                if (strcmp(J->polls[i].name, thing) == 0)
                        break;
        if (i == J->n_polls) {
                if (J->n_polls == ELEMENTSOF(J->polls))
                        return;
                snprintf(J->polls[i].name, sizeof J->polls[i].name, "%s", thing);
                J->polls[i].next_poll_ms = 0;
                J->n_polls++;
        }
        if (now < J->polls[i].next_poll_ms)
                return;
        for (struct cjob *c = J->jobs; c; c = c->next)
                if (strcmp(c->thing, thing) == 0 && c->state != CJ_FINAL)
                        return; /* busy with a job */
        next_get(J, thing);
        J->polls[i].next_poll_ms = now + POLL_MS;
}

static void on_tick(uv_timer_t *t)
{
        struct ota_jobs *J = t->data;
        uint64_t now = now_ms(J);
        char name[THING_MAX + 1];

        if (J->per_device) {
                const struct registry_device *rd;
                for (size_t i = 0; (rd = registry_get(J->reg, i)); i++)
                        if (rd->state == DEVICE_ACTIVE &&
                            ota_thing_name(J->tmpl, J->gateway, rd->id, name, sizeof name) == 0)
                                poll_thing(J, name, now);
        } else
                poll_thing(J, J->gateway, now);

        for (struct dl *d = J->dls; d; d = d->next) {
                if (d->done || d->failed)
                        continue;
                if (ota_image_blocks_have(d->img) == ota_image_blocks(d->img)) {
                        dl_complete(J, d);
                        continue;
                }
                if (!d->req_open) {
                        if (now - d->req_ms >= (d->retries ? d->backoff_ms : 0))
                                dl_request(J, d);
                } else if (now - d->req_ms >= d->backoff_ms) {
                        /* Lost request or lost blocks: ask again for what is missing, backing
                         * off exponentially (with the cloud's limits in mind). */
                        if (++d->retries > MAX_RETRIES) {
                                d->failed = true;
                                for (struct cjob *c = J->jobs; c; c = c->next)
                                        if (c->dl == d && c->state == CJ_DOWNLOADING)
                                                job_fail(J, c, "download timed out");
                                continue;
                        }
                        d->backoff_ms = MIN(d->backoff_ms * 2, (uint64_t)BACKOFF_MAX_MS);
                        d->req_open = false;
                        dl_request(J, d);
                }
        }
        /* Finished jobs release their download; the next poll comes soon. */
        for (struct cjob **p = &J->jobs; *p;) {
                struct cjob *c = *p;
                if (c->state == CJ_FINAL) {
                        for (unsigned i = 0; i < J->n_polls; i++)
                                if (strcmp(J->polls[i].name, c->thing) == 0)
                                        J->polls[i].next_poll_ms = now + 1000;
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

int ota_jobs_new(uv_loop_t *loop, const struct conf *conf, const char *gateway, struct relay *relay,
                 struct ota *ota, struct registry *reg, struct audit *audit, struct ota_jobs **ret)
{
        char jobs_filter[THING_MAX + 32], streams_filter[THING_MAX + 32];
        struct ota_jobs *J;
        int r;

        if (!conf->mqtt_host)
                return 0; /* no cloud: local updates only */
        J = calloc(1, sizeof *J);
        if (!J)
                return -ENOMEM;
        J->loop = loop;
        J->relay = relay;
        J->ota = ota;
        J->reg = reg;
        J->audit = audit;
        snprintf(J->gateway, sizeof J->gateway, "%s", gateway);
        J->per_device = conf->ota_targeting == 0;
        J->tmpl =
                strdup(conf->ota_thing_template ? conf->ota_thing_template : "{gateway}-{device}");
        J->block_size = (uint32_t)conf->ota_download_block;
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
        if ((r = relay_subscribe(relay, jobs_filter, on_mqtt_message, J)) < 0 ||
            (r = relay_subscribe(relay, streams_filter, on_mqtt_message, J)) < 0) {
                log_error_errno(r, "OTA: cannot subscribe to the Jobs and stream topics: %m");
                relay_forget_handlers(relay, J);
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
        relay_forget_handlers(J->relay, J);
        ota_set_reporter(J->ota, NULL, NULL);
        /* Images go back to the cache now, while it (and the database) still exist. */
        while (J->jobs) {
                struct cjob *c = J->jobs;
                J->jobs = c->next;
                ota_jobdoc_clear(&c->doc);
                free(c);
        }
        while (J->dls) {
                struct dl *d = J->dls;
                J->dls = d->next;
                ota_image_unref(d->img);
                free(d);
        }
        free(J->tmpl);
        J->tmpl = NULL;
        uv_close((uv_handle_t *)&J->timer, on_closed);
}

json_t *ota_jobs_status(struct ota_jobs *J)
{
        json_t *a = json_array();

        for (struct dl *d = J->dls; d; d = d->next)
                json_array_append_new(
                        a, json_pack("{ss ss sb sI sI sI sI sI sI}", "stream", d->stream, "thing",
                                     d->thing, "done", d->done, "blocks",
                                     (json_int_t)ota_image_blocks(d->img), "have",
                                     (json_int_t)ota_image_blocks_have(d->img), "received",
                                     (json_int_t)d->blocks_rx, "duplicates",
                                     (json_int_t)d->blocks_dup, "bad", (json_int_t)d->blocks_bad,
                                     "requests", (json_int_t)d->requests));
        return json_pack("{ss sI sI sI sI so}", "targeting",
                         J->per_device ? "thing-per-device" : "gateway", "jobs_seen",
                         (json_int_t)J->jobs_seen, "updates_sent", (json_int_t)J->updates_sent,
                         "updates_rejected", (json_int_t)J->updates_rejected, "foreign_messages",
                         (json_int_t)J->foreign_messages, "downloads", a);
}
