/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "basic/time-util.h"
#include "basic/hexdecoct.h"
#include "audit/audit.h"
#include "monitor/baseline.h"
#include "cloud/provision.h"
#include "cloud/mqtt.h"
#include "cloud/relay.h"
#include "link/link.h"
#include "monitor/remedy.h"
#include "ota/ota.h"
#include "store/db.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "devices/registry.h"
#include "cloud/outbox.h"
#include "basic/cred.h"
#include "basic/fileio.h"

#define BASELINE_META_KEY "monitor.baseline"
#define BASELINE_FILE_MAX (16 * 1024 * 1024)

static const char *const severity_names[] = { "info", "low", "medium", "high", "critical" };

const char *baseline_severity_to_string(enum baseline_severity s)
{
        return (unsigned)s < ELEMENTSOF(severity_names) ? severity_names[s] : "unknown";
}

static void add(json_t *a, enum baseline_severity sev, const char *check, const char *subject,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void add(json_t *a, enum baseline_severity sev, const char *check, const char *subject,
                const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        json_array_append_new(a, json_pack("{ss ss ss ss}", "severity",
                                           baseline_severity_to_string(sev), "check", check,
                                           "subject", subject ? subject : "", "message", msg));
}

static char *link_key_path(const struct baseline_config *c)
{
        char *p = NULL;
        if (c->link->private_key_file)
                return strdup(c->link->private_key_file);
        if (asprintf(&p, "%s/link.key", c->state_dir) < 0)
                return NULL;
        return p;
}

/* A private key: must be a regular file that nobody but its owner can read or write. */
static void check_key_file(json_t *a, const char *what, const char *path)
{
        struct stat st;

        if (!path)
                return;
        if (stat(path, &st) < 0) {
                if (errno != ENOENT)
                        add(a, BASELINE_MEDIUM, "key.unreadable", path, "%s %s: cannot stat: %s",
                            what, path, strerror(errno));
                return;
        }
        if (!S_ISREG(st.st_mode))
                add(a, BASELINE_HIGH, "key.not_regular", path, "%s %s is not a regular file", what,
                    path);
        if (st.st_mode & S_IROTH)
                add(a, BASELINE_CRITICAL, "key.readable_by_others", path,
                    "%s %s is readable by any user (mode %04o); chmod 0600 it", what, path,
                    (unsigned)(st.st_mode & 07777));
        else if (st.st_mode & S_IWOTH)
                add(a, BASELINE_CRITICAL, "key.writable_by_others", path,
                    "%s %s is writable by any user (mode %04o); chmod 0600 it", what, path,
                    (unsigned)(st.st_mode & 07777));
        else if (st.st_mode & (S_IRGRP | S_IWGRP))
                add(a, BASELINE_HIGH, "key.readable_by_group", path,
                    "%s %s is accessible to its group (mode %04o); chmod 0600 it", what, path,
                    (unsigned)(st.st_mode & 07777));
        if (st.st_uid != geteuid() && st.st_uid != 0)
                add(a, BASELINE_MEDIUM, "key.owner", path,
                    "%s %s belongs to uid %u, not to the daemon's user or root", what, path,
                    (unsigned)st.st_uid);
}

static void check_cert(json_t *a, const char *what, const char *path, unsigned warn_days,
                       time_t now)
{
        BIO *bio = NULL;
        char why[512];
        X509 *x;
        int days = 0, secs = 0;
        ASN1_TIME *t;

        if (!path)
                return;
        /* A regular file, bounded: a FIFO named here must not block the loop. */
        if (cred_file_bio(path, false, &bio, why, sizeof why) < 0) {
                add(a, BASELINE_HIGH, "cert.unreadable", path, "%s %s", what, why);
                return;
        }
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        ERR_clear_error();
        if (!x) {
                add(a, BASELINE_HIGH, "cert.invalid", path, "%s %s holds no PEM certificate", what,
                    path);
                return;
        }
        t = ASN1_TIME_set(NULL, now);
        if (t && ASN1_TIME_diff(&days, &secs, t, X509_get0_notAfter(x))) {
                if (days < 0 || (days == 0 && secs <= 0))
                        add(a, BASELINE_CRITICAL, "cert.expired", path, "%s %s has expired", what,
                            path);
                else if ((unsigned)days < warn_days)
                        add(a, BASELINE_MEDIUM, "cert.expiring", path,
                            "%s %s expires in %d day(s) (warning at %u)", what, path, days,
                            warn_days);
        }
        if (t && ASN1_TIME_diff(&days, &secs, t, X509_get0_notBefore(x)) && (days > 0 || secs > 0))
                add(a, BASELINE_MEDIUM, "cert.not_yet_valid", path,
                    "%s %s is not valid yet (clock wrong?)", what, path);
        ASN1_TIME_free(t);
        X509_free(x);
}

static void check_mqtt_credentials(json_t *a, const struct relay_options *r,
                                   const struct provision_options *p)
{
        char host[256];
        unsigned port;
        struct mqtt_options o = {
                .host = host, /* the first Host=: the TLS context checks its name */
                .server_name = r->server_name,
                .ca_file = r->ca_file,
                .cert_file = r->cert_file,
                .key_file = r->key_file,
                .pkcs11_module = r->pkcs11_module,
                .alpn = r->alpn,
        };
        char err[512];
        void *ctx;

        if (!r->hosts.n || !r->ca_file || !r->cert_file || !r->key_file ||
            mqtt_parse_server(r->hosts.v[0], r->port, host, sizeof host, &port) < 0)
                return;
        if (provision_use_claim(r, p)) {
                o.cert_file = p->claim_cert;
                o.key_file = p->claim_key;
        }
        ctx = mqtt_tls_ctx_new(&o, err, sizeof err);
        if (!ctx) {
                add(a, BASELINE_HIGH, "mqtt.credentials", "[MQTT]",
                    "the cloud session cannot start: %s", err);
                return;
        }
        SSL_CTX_free(ctx);
}

static void check_dir(json_t *a, const char *what, const char *path, bool secret)
{
        struct stat st;

        if (!path || stat(path, &st) < 0)
                return;
        if (st.st_mode & S_IWOTH)
                add(a, BASELINE_CRITICAL, "perm.world_writable", path,
                    "%s %s is writable by any user (mode %04o)", what, path,
                    (unsigned)(st.st_mode & 07777));
        else if (secret && (st.st_mode & S_IROTH))
                add(a, BASELINE_MEDIUM, "perm.world_readable", path,
                    "%s %s is readable by any user (mode %04o)", what, path,
                    (unsigned)(st.st_mode & 07777));
        if (S_ISDIR(st.st_mode) && (st.st_mode & S_IWGRP) && secret)
                add(a, BASELINE_LOW, "perm.group_writable", path,
                    "%s %s is writable by its group (mode %04o)", what, path,
                    (unsigned)(st.st_mode & 07777));
}

static int cmp_str(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

static void check_devices(json_t *a, struct registry *reg)
{
        static const uint8_t zero[REGISTRY_KEY_LEN];
        size_t n = reg ? registry_count(reg, NULL) : 0;
        char **keys = n ? calloc(n, sizeof *keys) : NULL;
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                const struct registry_device *d = registry_get(reg, i);
                if (!d)
                        break;
                if (memcmp(d->pubkey, zero, sizeof zero) == 0)
                        add(a, BASELINE_HIGH, "device.no_key", d->id,
                            "device %s is enrolled without a public key", d->id);
                if (keys) {
                        char b64[45];
                        key_to_base64(d->pubkey, b64);
                        if (asprintf(&keys[k], "%s %s", b64, d->id) >= 0)
                                k++;
                }
        }
        if (keys) {
                qsort(keys, k, sizeof *keys, cmp_str);
                for (size_t i = 1; i < k; i++)
                        if (strncmp(keys[i - 1], keys[i], 44) == 0)
                                add(a, BASELINE_HIGH, "device.duplicate_key", keys[i] + 45,
                                    "devices %s and %s share one public key", keys[i - 1] + 45,
                                    keys[i] + 45);
                for (size_t i = 0; i < k; i++)
                        free(keys[i]);
                free(keys);
        }
}

static int sev_rank(json_t *f)
{
        const char *s = json_string_value(json_object_get(f, "severity"));
        for (size_t i = 0; i < ELEMENTSOF(severity_names); i++)
                if (s && strcmp(s, severity_names[i]) == 0)
                        return (int)i;
        return 0;
}

json_t *baseline_findings(const struct baseline_config *c, struct registry *reg,
                          size_t rules_enabled, time_t now)
{
        json_t *a = json_array(), *sorted;
        _cleanup_free_ char *link_key = link_key_path(c);
        _cleanup_free_ char *db_path = NULL;

        if (!a)
                return NULL;
        /* Credentials */
        check_key_file(a, "link private key", link_key);
        check_key_file(a, "MQTT private key", c->mqtt->key_file);
        check_key_file(a, "provisioning claim key", c->provision->claim_key);
        check_cert(a, "MQTT client certificate", c->mqtt->cert_file, c->monitor->cert_expiry_days,
                   now);
        check_cert(a, "MQTT CA certificate", c->mqtt->ca_file, c->monitor->cert_expiry_days, now);

        /* The cloud session's credentials as the session loads them (a key that does not
         * match its certificate, a CA file that holds no certificate): the daemon runs without
         * the cloud then, and says why here too. */
        check_mqtt_credentials(a, c->mqtt, c->provision);

        /* TLS: the daemon builds its own SSL_CTX with TLS 1.2 as the floor (mqtt.h) and has no
         * setting to lower it; without a host there is no cloud session at all. */
        if (!c->mqtt->hosts.n)
                add(a, BASELINE_INFO, "tls.no_cloud", "[MQTT] Host",
                    "no cloud session configured: telemetry stays in the outbox and no "
                    "alerts or audit records leave the gateway");

        /* Files and directories */
        check_dir(a, "state directory", c->state_dir, true);
        if (asprintf(&db_path, "%s/mcugw.db", c->state_dir) >= 0)
                check_dir(a, "state database", db_path, true);
        /* The outbox quota against the file system it lives on (docs/mqtt.md). */
        if (db_path) {
                struct outbox_space sp;
                char msg[512];
                if (outbox_space_check(db_path, c->mqtt->outbox.max_bytes, &sp) >= 0 && !sp.fits) {
                        outbox_space_describe(&sp, c->mqtt->outbox.max_bytes, msg, sizeof msg);
                        add(a, c->mqtt->outbox.max_bytes ? BASELINE_MEDIUM : BASELINE_LOW,
                            c->mqtt->outbox.max_bytes ? "outbox.quota_exceeds_space"
                                                      : "outbox.no_quota",
                            "[Outbox] MaxBytes", "%s", msg);
                }
        }
        check_dir(a, "devices directory", c->devices_dir, false);
        check_dir(a, "rules directory", c->monitor->rules_dir, false);
        for (size_t i = 0; i < c->n_files; i++)
                check_dir(a, "configuration file", c->files[i], false);
        check_dir(a, "control socket", c->control_socket, false);
        if (c->socket_mode & 0002)
                add(a, BASELINE_MEDIUM, "control.socket_mode", "[Control] SocketMode",
                    "SocketMode=%04o lets any user connect (peers are still checked with "
                    "SO_PEERCRED)",
                    (unsigned)c->socket_mode);
        if (!c->admin_group && !c->readonly_group)
                add(a, BASELINE_INFO, "control.groups", "[Control]",
                    "no AdminGroup or ReadOnlyGroup: only root and the daemon's user may use "
                    "the control socket");

        /* OTA: images reach MCUs only after the code-signing check (docs/ota.md). */
        if (c->ota->allow_unsigned)
                add(a, BASELINE_HIGH, "ota.unsigned_allowed", "[OTA] AllowUnsigned",
                    "unsigned firmware images may be sent to MCUs");
        if (c->ota->allow_downgrade)
                add(a, BASELINE_MEDIUM, "ota.downgrade_allowed", "[OTA] AllowDowngrade",
                    "older firmware may be installed (anti-rollback off)");
        if (!c->ota->signing_cert && !c->ota->allow_unsigned)
                add(a, BASELINE_LOW, "ota.no_signing_cert", "[OTA] CodeSigningCertificate",
                    "no code-signing certificate: every OTA image will be refused");
        check_cert(a, "OTA code-signing certificate", c->ota->signing_cert,
                   c->monitor->cert_expiry_days, now);
        check_dir(a, "OTA cache directory", c->ota->cache_dir, false);

        /* Devices */
        check_devices(a, reg);

        /* Monitoring */
        if (!c->monitor->rules)
                add(a, BASELINE_MEDIUM, "rules.disabled", "[Monitor] Rules",
                    "rule evaluation is turned off: misbehaving devices are not remediated");
        else if (rules_enabled == 0)
                add(a, BASELINE_MEDIUM, "rules.none", c->monitor->rules_dir,
                    "no enabled rules in %s: misbehaving devices are not remediated",
                    c->monitor->rules_dir);
        if (c->monitor->cloud_commands.n)
                add(a, BASELINE_INFO, "remedy.cloud_commands", "[Monitor] CloudCommands",
                    "the cloud may send %zu kind(s) of remediation command",
                    c->monitor->cloud_commands.n);

        /* Most severe first, stable otherwise. */
        sorted = json_array();
        for (int s = BASELINE_CRITICAL; s >= BASELINE_INFO; s--) {
                size_t i;
                json_t *f;
                json_array_foreach (a, i, f)
                        if (sev_rank(f) == s)
                                json_array_append(sorted, f);
        }
        json_decref(a);
        return sorted;
}

/* ---- snapshot and drift ------------------------------------------------------------------ */

/* {"sha256","mode"} of a file, or {"missing":true}. */
static json_t *file_fact(const char *path)
{
        uint8_t buf[8192], h[32];
        char hx[65];
        unsigned hl = 0;
        ssize_t n;
        size_t total = 0;
        EVP_MD_CTX *md;
        /* Never blocks on a FIFO or device; those count as missing (not a file we can hash). */
        _cleanup_close_ int fd = fileio_open(path, 0, 0, NULL, NULL, 0);

        if (fd < 0)
                return json_pack("{sb}", "missing", 1);
        md = EVP_MD_CTX_new();
        if (!md)
                return NULL;
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        while ((n = read(fd, buf, sizeof buf)) > 0 && total < BASELINE_FILE_MAX) {
                EVP_DigestUpdate(md, buf, (size_t)n);
                total += (size_t)n;
        }
        EVP_DigestFinal_ex(md, h, &hl);
        EVP_MD_CTX_free(md);
        hexmem(h, 32, hx);
        return json_pack("{ss}", "sha256", hx);
}

static json_t *file_fact_mode(const char *path)
{
        json_t *o = file_fact(path);
        struct stat st;
        char mode[8];

        if (o && json_object_get(o, "sha256") && stat(path, &st) == 0) {
                snprintf(mode, sizeof mode, "%04o", (unsigned)(st.st_mode & 07777));
                json_object_set_new(o, "mode", json_string(mode));
        }
        return o;
}

static void hash_str(EVP_MD_CTX *md, const char *s)
{
        EVP_DigestUpdate(md, s, strlen(s) + 1);
}

static void md_hex(EVP_MD_CTX *md, char out[65])
{
        uint8_t h[32];
        unsigned hl = 0;
        EVP_DigestFinal_ex(md, h, &hl);
        hexmem(h, 32, out);
}

static json_t *devices_fact(struct registry *reg)
{
        size_t n = reg ? registry_count(reg, NULL) : 0, k = 0;
        char **rows = n ? calloc(n, sizeof *rows) : NULL;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        char hx[65];

        if (!md || (n && !rows)) {
                EVP_MD_CTX_free(md);
                free(rows);
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                const struct registry_device *d = registry_get(reg, i);
                char b64[45];
                if (!d)
                        break;
                key_to_base64(d->pubkey, b64);
                if (asprintf(&rows[k], "%s %s %s %s", d->id, b64, device_state_to_string(d->state),
                             d->groups) >= 0)
                        k++;
        }
        if (rows)
                qsort(rows, k, sizeof *rows, cmp_str);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        for (size_t i = 0; i < k; i++) {
                hash_str(md, rows[i]);
                free(rows[i]);
        }
        free(rows);
        md_hex(md, hx);
        EVP_MD_CTX_free(md);
        return json_pack("{sI ss}", "count", (json_int_t)k, "sha256", hx);
}

static int conf_filter(const struct dirent *d)
{
        return d->d_name[0] != '.' && fnmatch("*.conf", d->d_name, 0) == 0;
}

/* The rule files, by name and content. */
static json_t *dir_fact(const char *dir)
{
        struct dirent **ents = NULL;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        char hx[65];
        int n;

        if (!md)
                return NULL;
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        n = dir ? scandir(dir, &ents, conf_filter, alphasort) : -1;
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s/%s", dir, ents[i]->d_name) >= 0) {
                        json_t *f = file_fact(p);
                        hash_str(md, ents[i]->d_name);
                        hash_str(md, json_string_value(json_object_get(f, "sha256")) ?: "-");
                        json_decref(f);
                }
                free(ents[i]);
        }
        free(ents);
        md_hex(md, hx);
        EVP_MD_CTX_free(md);
        return json_pack("{si ss}", "files", n < 0 ? 0 : n, "sha256", hx);
}

json_t *baseline_snapshot(const struct baseline_config *c, struct registry *reg)
{
        _cleanup_free_ char *link_key = link_key_path(c);
        json_t *files = json_object();
        const char *paths[] = { link_key, c->mqtt->key_file, c->mqtt->cert_file, c->mqtt->ca_file,
                                c->ota->signing_cert };

        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                if (paths[i])
                        json_object_set_new(files, paths[i], file_fact_mode(paths[i]));
        return json_pack("{ss so so so}", "config_hash", c->hash, "files", files, "devices",
                         devices_fact(reg), "rules", dir_fact(c->monitor->rules_dir));
}

static void diff_add(json_t *out, const char *item, json_t *a, json_t *b)
{
        json_array_append_new(out, json_pack("{ss sO sO}", "item", item, "accepted",
                                             a ? a : json_null(), "current", b ? b : json_null()));
}

json_t *baseline_diff(json_t *accepted, json_t *current)
{
        json_t *out = json_array();
        json_t *fa = json_object_get(accepted, "files"), *fb = json_object_get(current, "files");
        const char *k;
        json_t *v;
        char item[600];

        if (!json_equal(json_object_get(accepted, "config_hash"),
                        json_object_get(current, "config_hash")))
                diff_add(out, "config", json_object_get(accepted, "config_hash"),
                         json_object_get(current, "config_hash"));
        json_object_foreach (fa, k, v) {
                json_t *w = json_object_get(fb, k);
                snprintf(item, sizeof item, "file:%s", k);
                if (!json_equal(v, w))
                        diff_add(out, item, v, w);
        }
        json_object_foreach (fb, k, v)
                if (!json_object_get(fa, k)) {
                        snprintf(item, sizeof item, "file:%s", k);
                        diff_add(out, item, NULL, v);
                }
        if (!json_equal(json_object_get(accepted, "devices"), json_object_get(current, "devices")))
                diff_add(out, "devices", json_object_get(accepted, "devices"),
                         json_object_get(current, "devices"));
        if (!json_equal(json_object_get(accepted, "rules"), json_object_get(current, "rules")))
                diff_add(out, "rules", json_object_get(accepted, "rules"),
                         json_object_get(current, "rules"));
        return out;
}

/* ---- runtime ----------------------------------------------------------------------------- */

struct baseline {
        uv_timer_t timer;
        struct db *db;
        struct audit *audit;
        struct registry *reg;
        const struct baseline_config *conf;
        const size_t *rules_enabled;
        uint64_t interval_ms;
        char last_drift[65]; /* hash of the drift last audited; "" = none */
        sqlite3_stmt *get, *put;
};

static json_t *baseline_load(struct baseline *b)
{
        json_t *v = NULL;
        if (sqlite3_step(b->get) == SQLITE_ROW) {
                const char *s = (const char *)sqlite3_column_blob(b->get, 0);
                int n = sqlite3_column_bytes(b->get, 0);
                if (s && n > 0)
                        v = json_loadb(s, (size_t)n, 0, NULL);
        }
        sqlite3_reset(b->get);
        return v;
}

static void text_hash(const char *s, char out[65])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md) {
                out[0] = 0;
                return;
        }
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, s, strlen(s));
        md_hex(md, out);
        EVP_MD_CTX_free(md);
}

/* Returns the differences (new reference) or NULL when no baseline was accepted. */
static json_t *baseline_current_drift(struct baseline *b, json_t **ret_accepted)
{
        json_t *acc = baseline_load(b), *cur, *d;

        if (!acc)
                return NULL;
        cur = baseline_snapshot(b->conf, b->reg);
        d = baseline_diff(json_object_get(acc, "snapshot"), cur);
        json_decref(cur);
        if (ret_accepted)
                *ret_accepted = acc;
        else
                json_decref(acc);
        return d;
}

int baseline_check_drift(struct baseline *b, const char *why)
{
        json_t *d = baseline_current_drift(b, NULL);
        _cleanup_free_ char *text = NULL;
        char h[65];
        size_t n;

        if (!d)
                return 0;
        n = json_array_size(d);
        if (n == 0) {
                if (b->last_drift[0])
                        audit_log(b->audit, "daemon", "config.drift_resolved", "baseline",
                                  json_pack("{ss}", "check", why));
                b->last_drift[0] = 0;
                json_decref(d);
                return 0;
        }
        text = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
        text_hash(text ? text : "", h);
        if (strcmp(h, b->last_drift) != 0) {
                size_t i;
                json_t *x, *items = json_array();
                json_array_foreach (d, i, x)
                        json_array_append(items, json_object_get(x, "item"));
                log_warning("configuration drifted from the accepted baseline (%s): %zu "
                            "difference(s)",
                            why, n);
                audit_log(b->audit, "daemon", "config.drift", "baseline",
                          json_pack("{ss so sO}", "check", why, "items", items, "differences", d));
                memcpy(b->last_drift, h, sizeof h);
        }
        json_decref(d);
        return (int)n;
}

static void on_timer(uv_timer_t *t)
{
        baseline_check_drift(t->data, "periodic");
}

void baseline_update(struct baseline *b)
{
        uint64_t ms = b->conf->monitor->drift_check_usec / 1000;

        if (ms == b->interval_ms)
                return;
        b->interval_ms = ms;
        uv_timer_stop(&b->timer);
        if (ms)
                uv_timer_start(&b->timer, on_timer, ms, ms);
}

json_t *baseline_report_json(struct baseline *b)
{
        json_t *acc = NULL, *drift = baseline_current_drift(b, &acc);
        json_t *f = baseline_findings(b->conf, b->reg, *b->rules_enabled, time(NULL));
        json_t *o;

        if (!f) {
                json_decref(drift);
                json_decref(acc);
                return NULL;
        }
        o = json_pack("{so}", "findings", f);
        if (acc) {
                json_object_set_new(o, "baseline",
                                    json_pack("{sO sO}", "accepted_us",
                                              json_object_get(acc, "accepted_us"), "actor",
                                              json_object_get(acc, "actor")));
                json_object_set_new(o, "drift", drift);
        } else {
                json_object_set_new(o, "baseline", json_null());
                json_object_set_new(o, "drift", json_null());
                json_decref(drift);
        }
        json_decref(acc);
        return o;
}

int baseline_accept(struct baseline *b, const char *actor, json_t **ret)
{
        json_t *snap = baseline_snapshot(b->conf, b->reg);
        _cleanup_free_ char *text = NULL;
        char h[65];
        int rc, r;

        if (!snap)
                return -ENOMEM;
        {
                json_t *rec =
                        json_pack("{sI ss sO}", "accepted_us", (json_int_t)now_realtime_usec(),
                                  "actor", actor, "snapshot", snap);
                text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
                json_decref(rec);
        }
        if (!text) {
                json_decref(snap);
                return -ENOMEM;
        }
        if ((r = db_write_begin(b->db)) < 0) {
                json_decref(snap);
                return r;
        }
        sqlite3_bind_blob(b->put, 1, text, (int)strlen(text), SQLITE_STATIC);
        rc = sqlite3_step(b->put);
        sqlite3_reset(b->put);
        sqlite3_clear_bindings(b->put);
        if (rc != SQLITE_DONE) {
                json_decref(snap);
                return db_errno(rc);
        }
        {
                _cleanup_free_ char *s = json_dumps(snap, JSON_COMPACT | JSON_SORT_KEYS);
                text_hash(s ? s : "", h);
        }
        audit_log(b->audit, actor, "audit.baseline_accept", "baseline",
                  json_pack("{ss ss sO}", "snapshot_sha256", h, "config_hash", b->conf->hash,
                            "devices", json_object_get(snap, "devices")));
        b->last_drift[0] = 0;
        db_commit(b->db);
        *ret = json_pack("{ss so}", "snapshot_sha256", h, "snapshot", snap);
        return 0;
}

int baseline_new(uv_loop_t *loop, struct db *db, struct audit *audit, struct registry *reg,
                 const struct baseline_config *conf, const size_t *rules_enabled,
                 struct baseline **ret)
{
        struct baseline *b = calloc(1, sizeof *b);
        int r;

        if (!b)
                return -ENOMEM;
        b->db = db;
        b->audit = audit;
        b->reg = reg;
        b->conf = conf;
        b->rules_enabled = rules_enabled;
        if ((r = db_prepare(db, "SELECT value FROM meta WHERE key = '" BASELINE_META_KEY "'",
                            &b->get)) < 0 ||
            (r = db_prepare(db,
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('" BASELINE_META_KEY
                            "', ?)",
                            &b->put)) < 0) {
                free(b);
                return r;
        }
        uv_timer_init(loop, &b->timer);
        b->timer.data = b;
        baseline_update(b);
        *ret = b;
        return 0;
}

static void timer_closed(uv_handle_t *h)
{
        free(h->data);
}

void baseline_stop(struct baseline *b)
{
        if (!b)
                return;
        uv_close((uv_handle_t *)&b->timer, timer_closed);
}

int baseline_config_parse_days(const char *v, void *field, const char **reason)
{
        return config_parse_unsigned_range(v, field, 0, 3650, reason);
}
