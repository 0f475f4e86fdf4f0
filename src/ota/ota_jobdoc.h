/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * OTA job documents (docs/ota.md): the FreeRTOS/AWS "afr_ota" document that AWS
 * CreateOTAUpdate puts into a job, plus mcugw's optional targeting object for jobs sent to the
 * gateway's own thing. Pure: no I/O, every field checked, unknown keys ignored (AWS adds some).
 *
 *   {"afr_ota": {"protocols": ["MQTT"], "streamname": "AFR_OTA-…",
 *                "files": [{"filepath": "…", "filesize": N, "fileid": 0, "certfile": "…",
 *                           "sig-sha256-ecdsa": "<base64 DER>", "fileType": 0}]},
 *    "mcugw": {"devices": ["sensor-1"], "groups": ["line-a"]}}          (optional)
 */

#define OTA_JOBDOC_MAX_LEN (32 * 1024) /* AWS caps job documents at 32 KiB */
#define OTA_JOBDOC_MAX_FILES 8
#define OTA_JOBDOC_MAX_STR 1024
#define OTA_JOBDOC_MAX_TARGETS 256
#define OTA_SIG_MAX 128 /* DER ECDSA P-256 is at most 72 bytes */
#define OTA_FILE_MAX_SIZE (UINT64_C(1) << 32)

struct ota_jobdoc_file {
        char *filepath;
        char *certfile;
        uint64_t filesize;
        uint32_t fileid;
        uint32_t file_type; /* "fileType", 0 when absent */
        uint8_t sig[OTA_SIG_MAX];
        size_t sig_len; /* 0: no "sig-sha256-ecdsa" */
};

struct ota_jobdoc {
        char *streamname;
        bool mqtt, http;
        struct ota_jobdoc_file files[OTA_JOBDOC_MAX_FILES];
        size_t n_files;
        char **devices; /* "mcugw" targeting, NULL-terminated, may be NULL */
        size_t n_devices;
        char **groups;
        size_t n_groups;
};

/* Parse a job document given as JSON text. On failure returns -EBADMSG (or -ENOMEM) with a
 * one-line reason in err; *ret is left cleared. */
int ota_jobdoc_parse(const char *text, size_t len, struct ota_jobdoc *ret, char *err,
                     size_t errlen);
/* Same from an already parsed jansson object (the jobDocument of a Jobs message). */
struct json_t;
int ota_jobdoc_from_json(struct json_t *doc, struct ota_jobdoc *ret, char *err, size_t errlen);
void ota_jobdoc_clear(struct ota_jobdoc *d);
