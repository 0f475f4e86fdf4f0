/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"

/*
 * The OTA rollout engine (docs/ota.md). A job is one signed image for a set of devices; each
 * device gets a transfer: OFFER, windowed CHUNKs over the authenticated link, cumulative acks,
 * resumption by offset (the device keeps its offset; a repeated OFFER with the same transfer id
 * asks for it), then VERIFIED -> reboot -> TESTING -> CONFIRMED or FAILED.
 *
 * The signature (ECDSA P-256 / SHA-256 over the whole file, against CodeSigningCertificate) is
 * checked before a job is accepted: no byte goes to an MCU before that. MCUboot images are
 * parsed; their version is compared with the device's and a downgrade is refused unless
 * AllowDowngrade=yes.
 *
 * Rollout controls: MaxConcurrent transfers per gateway, MaxConcurrentPerLink per link, and a
 * job is aborted once AbortAfterFailures of its transfers failed. Jobs and transfers live in the
 * state database, so a restarted gateway carries on (the MCU tells where it stands).
 *
 * Sources: local (mcugwctl ota start FILE) and the cloud (ota_jobs.c), which hears about every
 * state change through ota_set_reporter().
 */

/* [OTA] in the configuration (docs/ota.md). */
struct ota_options {
        char *signing_cert;      /* CodeSigningCertificate=, PEM (ECDSA P-256) */
        char *cache_dir;         /* NULL: <state_dir>/ota */
        uint64_t max_cache;      /* MaxCacheSize= */
        uint64_t block_size;     /* BlockSize=: chunk size towards the MCUs (<= link) */
        uint64_t download_block; /* DownloadBlockSize=: MQTT stream block, <= 128K */
        int targeting;           /* 0 thing-per-device, 1 gateway */
        char *thing_template;    /* ThingNameTemplate=, {gateway} {device} */
        unsigned max_concurrent; /* MaxConcurrent= (gateway) */
        unsigned max_per_link;   /* MaxConcurrentPerLink= */
        unsigned abort_after;    /* AbortAfterFailures=, 0: never */
        int allow_downgrade;     /* bool */
        int allow_unsigned;      /* bool */
        uint64_t window;         /* Window=: bytes in flight per MCU, capped by the MCU */
};

/* [OTA] values (config_parser_t): Targeting= (int), BlockSize= and DownloadBlockSize= (uint64_t,
 * 256 .. 128K), the counts (unsigned), ThingNameTemplate= (char *). */
int ota_config_parse_targeting(const char *v, void *field, const char **reason);
int ota_config_parse_block(const char *v, void *field, const char **reason);
int ota_config_parse_count(const char *v, void *field, const char **reason);
int ota_config_parse_thing_template(const char *v, void *field, const char **reason);

struct db;
struct audit;
struct registry;
struct link_manager;
struct mcugw_msg;
struct ota;
struct ota_cache;
struct ota_image;

enum ota_state {
        OTA_QUEUED,
        OTA_DOWNLOADING, /* job: image being fetched from the cloud */
        OTA_IN_PROGRESS,
        OTA_SUCCEEDED,
        OTA_FAILED,
        OTA_CANCELED,
};
const char *ota_state_to_string(enum ota_state s);

/* Per-transfer progress, reported upstream as the stock statusDetails. device_id NULL: the whole
 * job ended (state SUCCEEDED, FAILED or CANCELED, reason set). */
struct ota_progress {
        const char *job_id;
        const char *device_id;
        enum ota_state state;
        const char *self_test;              /* NULL, "ready", "active" */
        const char *reason;                 /* NULL or text (FAILED, SUCCEEDED) */
        uint32_t blocks_done, blocks_total; /* "receive n/m" */
        const char *updated_by;
};
typedef void (*ota_report_fn)(void *ud, const struct ota_progress *p);

struct ota_job_spec {
        const char *id;          /* NULL: generated ("local-N") */
        const char *source;      /* "local" or "cloud" */
        const char *actor;       /* audit actor */
        struct ota_image *image; /* complete, in the cache; referenced by the job */
        const uint8_t *sig;
        size_t sig_len;
        const char *const *devices;
        size_t n_devices;
        const char *const *groups;
        size_t n_groups;
};

/* The image cache is CacheDirectory= or <state_dir>/ota. */
int ota_new(uv_loop_t *loop, const struct ota_options *opts, const char *state_dir, struct db *db,
            struct audit *audit, struct registry *reg, struct link_manager *link, struct ota **ret);
void ota_stop(struct ota *o);
/* The values a reload may change (everything but CacheDirectory= and the targeting). */
void ota_apply_conf(struct ota *o, const struct ota_options *opts);
json_t *ota_status_json(struct ota *o);
struct ota_cache *ota_get_cache(struct ota *o);
void ota_set_reporter(struct ota *o, ota_report_fn fn, void *ud);
/* A device's transfer changed (state, progress, its job ended): for the device shadow, next to
 * the reporter (which the cloud jobs own). */
void ota_set_device_listener(struct ota *o, void (*fn)(void *ud, const char *device_id), void *ud);

/* The link's OTA messages (link_manager_set_ota_handler; ud is the struct ota). */
void ota_link_message(void *ud, const char *device_id, const struct mcugw_msg *m);

/* Check the image (signature, MCUboot header, downgrade policy per device) and create the job.
 * 0 and the job id in ret_id (65 bytes), or -errno with a reason (the failed job is recorded and
 * audited as well when the signature is bad). */
int ota_job_create(struct ota *o, const struct ota_job_spec *spec, char ret_id[65], char *err,
                   size_t errlen);
/* Abort a job: -ENOENT unknown, -EALREADY finished. */
int ota_job_abort(struct ota *o, const char *id, const char *actor);
/* A local job (`ota.start`): the image file (an absolute path), its detached DER signature
 * sig_file (NULL: FILE.sig, and none at all is allowed if AllowUnsigned=yes), for one device or
 * one group. 0 and the job id in ret_id (65 bytes), or -errno with a reason in err. */
int ota_job_start_file(struct ota *o, const char *actor, const char *file, const char *sig_file,
                       const char *device, const char *group, char ret_id[65], char *err,
                       size_t errlen);
/* Every job kept (summaries), as a JSON array. */
json_t *ota_job_list_json(struct ota *o);
/* The device's transfer in an unfinished job ({job, state, offset, size, percent, …}, as in
 * ota.show), or NULL if it has none (the device shadow's "ota"). */
json_t *ota_device_json(struct ota *o, const char *device_id);
/* One job with its transfers; -ENOENT if unknown. */
int ota_job_json(struct ota *o, const char *id, json_t **ret);
/* enum ota_state of a known job (with its reason), or -ENOENT. */
int ota_job_state(struct ota *o, const char *id, const char **ret_reason);
