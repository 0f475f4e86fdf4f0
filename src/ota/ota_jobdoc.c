/* SPDX-License-Identifier: Apache-2.0 */
/* afr_ota job document parser (see ota_jobdoc.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "basic/hexdecoct.h"
#include "ota/ota_jobdoc.h"

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
        va_list ap;

        if (err && n) {
                va_start(ap, fmt);
                vsnprintf(err, n, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

static bool str_ok(const char *s, size_t len)
{
        if (len == 0 || len > OTA_JOBDOC_MAX_STR || strlen(s) != len)
                return false; /* empty, too long or embedded NUL */
        return true;
}

static int get_string(json_t *o, const char *key, bool required, char **ret, char *err,
                      size_t errlen)
{
        json_t *v = json_object_get(o, key);

        if (!v) {
                if (required)
                        return fail(err, errlen, "missing \"%s\"", key);
                return 0;
        }
        if (!json_is_string(v) || !str_ok(json_string_value(v), json_string_length(v)))
                return fail(err, errlen, "\"%s\" must be a non-empty string of at most %d bytes",
                            key, OTA_JOBDOC_MAX_STR);
        *ret = strdup(json_string_value(v));
        return *ret ? 0 : -ENOMEM;
}

static int get_uint(json_t *o, const char *key, bool required, uint64_t max, uint64_t *ret,
                    char *err, size_t errlen)
{
        json_t *v = json_object_get(o, key);

        if (!v) {
                if (required)
                        return fail(err, errlen, "missing \"%s\"", key);
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (uint64_t)json_integer_value(v) > max)
                return fail(err, errlen, "\"%s\" must be an integer in 0..%llu", key,
                            (unsigned long long)max);
        *ret = (uint64_t)json_integer_value(v);
        return 0;
}

static int get_names(json_t *o, const char *key, char ***ret, size_t *ret_n, char *err,
                     size_t errlen)
{
        json_t *a = json_object_get(o, key), *v;
        size_t i;

        if (!a)
                return 0;
        if (!json_is_array(a) || json_array_size(a) > OTA_JOBDOC_MAX_TARGETS)
                return fail(err, errlen, "mcugw.%s must be an array of at most %d names", key,
                            OTA_JOBDOC_MAX_TARGETS);
        *ret = calloc(json_array_size(a) + 1, sizeof(char *));
        if (!*ret)
                return -ENOMEM;
        json_array_foreach (a, i, v) {
                if (!json_is_string(v) || !str_ok(json_string_value(v), json_string_length(v)) ||
                    json_string_length(v) > 64)
                        return fail(err, errlen, "mcugw.%s[%zu] must be a name of 1..64 bytes", key,
                                    i);
                (*ret)[i] = strdup(json_string_value(v));
                if (!(*ret)[i])
                        return -ENOMEM;
                *ret_n = i + 1;
        }
        return 0;
}

static int parse_file(json_t *f, size_t idx, struct ota_jobdoc_file *out, char *err, size_t errlen)
{
        uint64_t u = 0;
        json_t *sig;
        int r;

        if (!json_is_object(f))
                return fail(err, errlen, "files[%zu] is not an object", idx);
        if ((r = get_string(f, "filepath", false, &out->filepath, err, errlen)) < 0 ||
            (r = get_string(f, "certfile", false, &out->certfile, err, errlen)) < 0)
                return r;
        if ((r = get_uint(f, "filesize", true, OTA_FILE_MAX_SIZE, &out->filesize, err, errlen)) < 0)
                return r;
        if (out->filesize == 0)
                return fail(err, errlen, "files[%zu]: filesize is 0", idx);
        if ((r = get_uint(f, "fileid", true, UINT32_MAX, &u, err, errlen)) < 0)
                return r;
        out->fileid = (uint32_t)u;
        u = 0;
        if ((r = get_uint(f, "fileType", false, UINT32_MAX, &u, err, errlen)) < 0)
                return r;
        out->file_type = (uint32_t)u;
        sig = json_object_get(f, "sig-sha256-ecdsa");
        if (sig) {
                int n;
                if (!json_is_string(sig))
                        return fail(err, errlen, "files[%zu]: sig-sha256-ecdsa is not a string",
                                    idx);
                n = unbase64mem(json_string_value(sig), json_string_length(sig), out->sig,
                                sizeof out->sig);
                if (n <= 0)
                        return fail(err, errlen,
                                    "files[%zu]: sig-sha256-ecdsa is not base64 of at most %d "
                                    "bytes",
                                    idx, OTA_SIG_MAX);
                out->sig_len = (size_t)n;
        } else {
                /* Another signature method (e.g. sig-sha1-rsa) is a clear refusal, not a
                 * silently unsigned file. */
                const char *k;
                json_t *v;
                json_object_foreach (f, k, v) {
                        if (strncmp(k, "sig-", 4) == 0)
                                return fail(err, errlen,
                                            "files[%zu]: unsupported signature \"%s\" (only "
                                            "sig-sha256-ecdsa)",
                                            idx, k);
                }
        }
        return 0;
}

int ota_jobdoc_from_json(json_t *doc, struct ota_jobdoc *ret, char *err, size_t errlen)
{
        struct ota_jobdoc d = { 0 };
        json_t *afr, *protos, *files, *v, *mg;
        size_t i;
        int r;

        if (!json_is_object(doc)) {
                r = fail(err, errlen, "job document is not a JSON object");
                goto out;
        }
        afr = json_object_get(doc, "afr_ota");
        if (!json_is_object(afr)) {
                r = fail(err, errlen, "not an OTA job document (no \"afr_ota\" object)");
                goto out;
        }
        protos = json_object_get(afr, "protocols");
        if (!json_is_array(protos) || json_array_size(protos) == 0 || json_array_size(protos) > 4) {
                r = fail(err, errlen, "\"protocols\" must be a non-empty array");
                goto out;
        }
        json_array_foreach (protos, i, v) {
                if (!json_is_string(v)) {
                        r = fail(err, errlen, "\"protocols\" must hold strings");
                        goto out;
                }
                if (strcmp(json_string_value(v), "MQTT") == 0)
                        d.mqtt = true;
                else if (strcmp(json_string_value(v), "HTTP") == 0)
                        d.http = true;
        }
        if ((r = get_string(afr, "streamname", d.mqtt, &d.streamname, err, errlen)) < 0)
                goto out;
        files = json_object_get(afr, "files");
        if (!json_is_array(files) || json_array_size(files) == 0 ||
            json_array_size(files) > OTA_JOBDOC_MAX_FILES) {
                r = fail(err, errlen, "\"files\" must be an array of 1..%d files",
                         OTA_JOBDOC_MAX_FILES);
                goto out;
        }
        json_array_foreach (files, i, v) {
                d.n_files = i + 1;
                if ((r = parse_file(v, i, &d.files[i], err, errlen)) < 0)
                        goto out;
        }
        if (!d.mqtt) {
                r = fail(err, errlen, "no supported protocol (mcugw downloads over MQTT)");
                goto out;
        }
        mg = json_object_get(doc, "mcugw");
        if (mg) {
                if (!json_is_object(mg)) {
                        r = fail(err, errlen, "\"mcugw\" is not an object");
                        goto out;
                }
                if ((r = get_names(mg, "devices", &d.devices, &d.n_devices, err, errlen)) < 0 ||
                    (r = get_names(mg, "groups", &d.groups, &d.n_groups, err, errlen)) < 0)
                        goto out;
        }
        *ret = d;
        return 0;
out:
        if (r == -ENOMEM)
                fail(err, errlen, "out of memory");
        ota_jobdoc_clear(&d);
        return r;
}

int ota_jobdoc_parse(const char *text, size_t len, struct ota_jobdoc *ret, char *err, size_t errlen)
{
        json_error_t je;
        json_t *doc;
        int r;

        if (len > OTA_JOBDOC_MAX_LEN)
                return fail(err, errlen, "job document larger than %d bytes", OTA_JOBDOC_MAX_LEN);
        doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!doc)
                return fail(err, errlen, "job document is not JSON: %s", je.text);
        r = ota_jobdoc_from_json(doc, ret, err, errlen);
        json_decref(doc);
        return r;
}

static void free_names(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

void ota_jobdoc_clear(struct ota_jobdoc *d)
{
        if (!d)
                return;
        free(d->streamname);
        for (size_t i = 0; i < d->n_files && i < OTA_JOBDOC_MAX_FILES; i++) {
                free(d->files[i].filepath);
                free(d->files[i].certfile);
        }
        free_names(d->devices);
        free_names(d->groups);
        memset(d, 0, sizeof *d);
}
