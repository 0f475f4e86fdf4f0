/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit/audit.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/retry.h"
#include "cloud/cborjson.h"
#include "cloud/provision.h"
#include "cloud/session.h"
#include "basic/cred.h"

#define CSR_TOPIC_BASE "$aws/certificates/create-from-csr/"
#define TEMPLATE_MAX 36 /* AWS: provisioning template names are 1..36 characters */
#define ANSWER_TIMEOUT_MS 30000
#define SWITCH_TIMEOUT_MS 60000
#define SWITCH_MAX_FAILURES 2
#define RETRY_MAX_MS 300000
#define RETRY_SERIES_MS (3600 * 1000) /* after giving up, a new series of tries */
#define THING_FILE "thing-name"
#define EXPIRY_CHECK_MS (6 * 3600 * 1000)
#define MAX_ANSWER 65536

enum prov_mode {
        MODE_NONE,
        MODE_PROVISION,
        MODE_ROTATE,
};

enum prov_state {
        ST_IDLE,
        ST_WAIT_SESSION, /* provisioning: until the session is up on the claim */
        ST_CSR_SENT,
        ST_REGISTERING,
        ST_SWITCHING, /* the session tries the new pair */
        ST_RETRY,     /* provisioning failed; the timer starts it again */
        ST_COMPLETE,
        ST_FAILED, /* rotation failed; the old certificate stays */
};

static const char *const state_names[] = {
        [ST_IDLE] = "idle",           [ST_WAIT_SESSION] = "waiting-for-session",
        [ST_CSR_SENT] = "csr-sent",   [ST_REGISTERING] = "registering",
        [ST_SWITCHING] = "switching", [ST_RETRY] = "retrying",
        [ST_COMPLETE] = "complete",   [ST_FAILED] = "failed",
};

static const char *const mode_names[] = {
        [MODE_NONE] = "none",
        [MODE_PROVISION] = "provisioning",
        [MODE_ROTATE] = "rotation",
};

struct provision {
        uv_loop_t *loop;
        struct cloud_session *session;
        struct audit *audit;
        char gateway[65];
        char *cert_file, *key_file, *claim_cert, *claim_key;
        char *cert_new, *key_new;
        char template_name[TEMPLATE_MAX + 1];
        char topic_register[128];
        char topic_csr[64];
        bool cbor; /* Format=cbor: the …/cbor topics, CBOR payloads */
        json_t *parameters;
        uint64_t rotate_before_s;

        enum prov_mode mode;
        enum prov_state state;
        bool provisioned; /* this run switched from the claim to its own certificate */
        EVP_PKEY *key;    /* the new key, until it is on disk */
        char *cert_pem;
        char *token; /* certificateOwnershipToken */
        char certificate_id[129];
        char thing_name[129];
        char actor[40];
        char last_error[256];
        unsigned attempts, failures, switch_failures;
        struct retry retry;
        char *thing_file; /* StateDirectory/thing-name: the thing RegisterThing named */
        provision_thing_fn thing_fn;
        void *thing_ud;
        uint64_t last_auto_ms;

        uv_timer_t timer;        /* answer and switch timeouts, retries */
        uv_timer_t expiry_timer; /* RotateBeforeExpiry= */
        unsigned open_handles;
        bool enabled; /* a session, and key files the new pair can be written to */
        bool stopping;
};

/* ---- files -------------------------------------------------------------------------------- */

static char *path_new(const char *path)
{
        char *s = NULL;
        return asprintf(&s, "%s.new", path) < 0 ? NULL : s;
}

static int fsync_dir_of(const char *path)
{
        _cleanup_free_ char *d = strdup(path);
        int fd, r = 0;
        if (!d)
                return -ENOMEM;
        fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

/* Write a whole file with mode, fsynced; an existing file of that name is replaced. */
static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
        const char *p = data;
        int fd, r = 0;

        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                r = -errno;
        while (r == 0 && len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                p += n;
                len -= (size_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r < 0)
                unlink(path);
        return r;
}

static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

bool provision_use_claim(const struct relay_options *mqtt, const struct provision_options *o)
{
        return o->claim_cert && mqtt->cert_file && !exists(mqtt->cert_file);
}

void provision_recover(const struct relay_options *mqtt)
{
        _cleanup_free_ char *cn = NULL, *kn = NULL;

        if (!mqtt->cert_file || !mqtt->key_file || strncmp(mqtt->key_file, "pkcs11:", 7) == 0)
                return;
        cn = path_new(mqtt->cert_file);
        kn = path_new(mqtt->key_file);
        if (!cn || !kn)
                return;
        if (exists(cn) && exists(kn)) {
                log_notice("provision: discarding %s and %s: a certificate switch was interrupted "
                           "before the new certificate connected",
                           cn, kn);
                unlink(cn);
                unlink(kn);
        } else if (exists(cn)) {
                /* The key was renamed, the certificate not yet: finish the commit. */
                if (rename(cn, mqtt->cert_file) < 0)
                        log_error_errno(-errno, "provision: cannot rename %s: %m", cn);
                else
                        log_notice("provision: completed the interrupted switch to %s",
                                   mqtt->cert_file);
                fsync_dir_of(mqtt->cert_file);
        } else if (exists(kn))
                unlink(kn);
}

/* ---- crypto (no I/O) ---------------------------------------------------------------------- */

int provision_make_csr(const char *cn, EVP_PKEY **ret_key, char **ret_csr_pem)
{
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509_REQ *req = NULL;
        X509_NAME *name;
        BIO *bio = NULL;
        char *data, *pem = NULL;
        long len;
        int r = -EIO;

        if (!key)
                return -EIO;
        req = X509_REQ_new();
        if (!req || X509_REQ_set_version(req, 0) != 1)
                goto out;
        name = X509_REQ_get_subject_name(req);
        if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                       0) != 1 ||
            X509_REQ_set_pubkey(req, key) != 1 || X509_REQ_sign(req, key, EVP_sha256()) <= 0)
                goto out;
        bio = BIO_new(BIO_s_mem());
        if (!bio || PEM_write_bio_X509_REQ(bio, req) != 1)
                goto out;
        len = BIO_get_mem_data(bio, &data);
        pem = len > 0 ? memdup_nul(data, (size_t)len) : NULL;
        if (!pem) {
                r = -ENOMEM;
                goto out;
        }
        *ret_key = key;
        key = NULL;
        *ret_csr_pem = pem;
        r = 0;
out:
        BIO_free(bio);
        X509_REQ_free(req);
        EVP_PKEY_free(key);
        return r;
}

static X509 *cert_from_pem(const char *pem)
{
        BIO *bio = BIO_new_mem_buf(pem, -1);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        return x;
}

static long long asn1_time_unix(const ASN1_TIME *t)
{
        struct tm tm;
        if (ASN1_TIME_to_tm(t, &tm) != 1)
                return 0;
        return (long long)timegm(&tm);
}

static void name_oneline(const X509_NAME *n, char *buf, size_t len)
{
        BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long l;

        buf[0] = 0;
        if (!bio)
                return;
        X509_NAME_print_ex(bio, n, 0, XN_FLAG_RFC2253);
        l = BIO_get_mem_data(bio, &data);
        snprintf(buf, len, "%.*s", (int)MIN(l, (long)len - 1), data);
        BIO_free(bio);
}

static json_t *cert_info(X509 *x)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        char subject[256], issuer[256], fp[3 * EVP_MAX_MD_SIZE + 1] = "", *serial = NULL;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        long long nb = asn1_time_unix(X509_get0_notBefore(x));
        long long na = asn1_time_unix(X509_get0_notAfter(x));
        long long now = (long long)time(NULL);
        json_t *o;

        name_oneline(X509_get_subject_name(x), subject, sizeof subject);
        name_oneline(X509_get_issuer_name(x), issuer, sizeof issuer);
        X509_digest(x, EVP_sha256(), md, &mdlen);
        for (unsigned i = 0; i < mdlen; i++)
                snprintf(fp + 3 * i, 4, "%02X%s", md[i], i + 1 < mdlen ? ":" : "");
        serial = bn ? BN_bn2hex(bn) : NULL;
        o = json_pack("{ss ss ss sI sI sI ss}", "subject", subject, "issuer", issuer, "serial",
                      serial ? serial : "", "not_before_us", (json_int_t)nb * 1000000,
                      "not_after_us", (json_int_t)na * 1000000, "expires_in_ms",
                      (json_int_t)(na - now) * 1000, "fingerprint_sha256", fp);
        OPENSSL_free(serial);
        BN_free(bn);
        return o;
}

json_t *provision_cert_info(const char *path, char *err, size_t n)
{
        BIO *bio = NULL;
        X509 *x;
        json_t *o;

        if (cred_file_bio(path, false, &bio, err, n) < 0) /* regular file, bounded */
                return NULL;
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!x) {
                snprintf(err, n, "%s: not a PEM certificate", path);
                return NULL;
        }
        o = cert_info(x);
        X509_free(x);
        return o;
}

static char *key_to_pem(EVP_PKEY *key, size_t *ret_len)
{
        /* Secure memory for the PEM; it is wiped when freed. */
        BIO *bio = BIO_new(BIO_s_secmem());
        char *data, *out = NULL;
        long len;

        if (!bio || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
                goto out;
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0 || !(out = OPENSSL_secure_malloc((size_t)len)))
                goto out;
        memcpy(out, data, (size_t)len);
        *ret_len = (size_t)len;
out:
        BIO_free(bio);
        return out;
}

/* ---- the flow ----------------------------------------------------------------------------- */

static void forget_secrets(struct provision *p)
{
        EVP_PKEY_free(p->key);
        p->key = NULL;
        free(p->cert_pem);
        p->cert_pem = NULL;
        if (p->token) {
                OPENSSL_cleanse(p->token, strlen(p->token));
                free(p->token);
                p->token = NULL;
        }
}

static const char *event_prefix(const struct provision *p)
{
        return p->mode == MODE_ROTATE ? "cert" : "provision";
}

/* The cloud retry policy (basic/retry.h) with provisioning's pace: fleet provisioning is rate
 * limited per account, and a gateway on its claim has nothing better to do than wait. */
static const struct retry_policy provision_policy = {
        .first_ms = 4000,
        .max_ms = RETRY_MAX_MS,
        .timeout_ms = ANSWER_TIMEOUT_MS,
        .max_tries = 8,
};

static void begin_csr(struct provision *p);

static void on_retry_timer(uv_timer_t *t)
{
        struct provision *p = t->data;
        if (p->state != ST_RETRY)
                return;
        if (cloud_session_up(p->session))
                begin_csr(p);
        else
                p->state = ST_WAIT_SESSION;
}

/* A step failed: say why (status, journal, audit); provisioning tries again later. */
static void fail(struct provision *p, const char *step, const char *fmt, ...) _printf_(3, 4);
static void fail(struct provision *p, const char *step, const char *fmt, ...)
{
        uint64_t delay;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(p->last_error, sizeof p->last_error, fmt, ap);
        va_end(ap);
        p->failures++;
        forget_secrets(p);
        uv_timer_stop(&p->timer);
        if (p->mode == MODE_ROTATE) {
                log_error("cert: rotation failed: %s; keeping the current certificate",
                          p->last_error);
                audit_log(p->audit, p->actor, "cert.rotate_failed", p->cert_file,
                          json_pack("{ss ss}", "step", step, "reason", p->last_error));
                p->mode = MODE_NONE;
                p->state = ST_FAILED;
                return;
        }
        if (!retry_failed(&p->retry, uv_now(p->loop), retry_random())) {
                /* Tries used up: a terminal result, said once; a new series later (or at the
                 * next start). */
                log_error("provision: %s; giving up after %u tries, trying again in %d min",
                          p->last_error, p->retry.failures, RETRY_SERIES_MS / 60000);
                audit_log(p->audit, p->actor, "provision.gave_up", p->gateway,
                          json_pack("{ss ss sI}", "step", step, "reason", p->last_error, "tries",
                                    (json_int_t)p->retry.failures));
                retry_reset(&p->retry);
                p->state = ST_RETRY;
                uv_timer_start(&p->timer, on_retry_timer, RETRY_SERIES_MS, 0);
                return;
        }
        delay = p->retry.due_ms - uv_now(p->loop);
        log_error("provision: %s; trying again in %llu s", p->last_error,
                  (unsigned long long)(delay / 1000));
        audit_log(p->audit, p->actor, "provision.failed", p->gateway,
                  json_pack("{ss ss sI}", "step", step, "reason", p->last_error, "retry_in_ms",
                            (json_int_t)delay));
        p->state = ST_RETRY;
        uv_timer_start(&p->timer, on_retry_timer, delay, 0);
}

static void on_answer_timeout(uv_timer_t *t)
{
        struct provision *p = t->data;
        if (p->state == ST_CSR_SENT)
                fail(p, "create-from-csr", "no answer to the CSR within %d s",
                     ANSWER_TIMEOUT_MS / 1000);
        else if (p->state == ST_REGISTERING)
                fail(p, "register", "no answer from template %s within %d s", p->template_name,
                     ANSWER_TIMEOUT_MS / 1000);
}

static int publish_json(struct provision *p, const char *topic, json_t *o)
{
        uint8_t *buf = NULL;
        size_t len = 0;
        int r;

        if (p->cbor) {
                r = cborjson_encode(o, &buf, &len);
        } else {
                buf = (uint8_t *)json_dumps(o, JSON_COMPACT);
                len = buf ? strlen((char *)buf) : 0;
                r = buf ? 0 : -ENOMEM;
        }
        json_decref(o);
        if (r < 0)
                return r;
        r = cloud_session_publish(p->session, topic, buf, len);
        OPENSSL_cleanse(buf, len); /* may hold the ownership token */
        free(buf);
        return r;
}

static void begin_csr(struct provision *p)
{
        _cleanup_free_ char *csr = NULL;
        int r;

        forget_secrets(p);
        p->attempts++;
        r = provision_make_csr(p->gateway, &p->key, &csr);
        if (r < 0) {
                fail(p, "csr", "cannot generate a key and CSR: %s", strerror(-r));
                return;
        }
        r = publish_json(p, p->topic_csr, json_pack("{ss}", "certificateSigningRequest", csr));
        if (r < 0) {
                fail(p, "create-from-csr", "cannot publish the CSR: %s", strerror(-r));
                return;
        }
        p->state = ST_CSR_SENT;
        log_info("%s: CSR for a new P-256 key sent (CN=%s)", event_prefix(p), p->gateway);
        audit_log(p->audit, p->actor,
                  p->mode == MODE_ROTATE ? "cert.rotate_start" : "provision.csr_sent", p->gateway,
                  json_pack("{si ss}", "attempt", (int)p->attempts, "key", "EC P-256"));
        uv_timer_start(&p->timer, on_answer_timeout, ANSWER_TIMEOUT_MS, 0);
}

static void on_switch_timeout(uv_timer_t *t);

/* The new pair goes to FILE.new (key 0600) and the session tries it. */
static void install(struct provision *p)
{
        char err[512];
        size_t klen = 0;
        char *kpem = key_to_pem(p->key, &klen);
        int r;

        if (!kpem) {
                fail(p, "store", "cannot encode the new key");
                return;
        }
        r = write_file(p->key_new, kpem, klen, 0600);
        OPENSSL_secure_clear_free(kpem, klen);
        if (r >= 0)
                r = write_file(p->cert_new, p->cert_pem, strlen(p->cert_pem), 0644);
        if (r >= 0)
                r = fsync_dir_of(p->cert_new);
        if (r < 0) {
                unlink(p->key_new);
                unlink(p->cert_new);
                fail(p, "store", "cannot write the new certificate and key: %s", strerror(-r));
                return;
        }
        forget_secrets(p); /* the key is on disk now; not kept in memory */
        p->switch_failures = 0;
        p->state = ST_SWITCHING;
        r = cloud_session_set_credentials(p->session, p->cert_new, p->key_new, true, err,
                                          sizeof err);
        if (r < 0) {
                unlink(p->key_new);
                unlink(p->cert_new);
                fail(p, "switch", "cannot use the new certificate: %s", err);
                return;
        }
        uv_timer_start(&p->timer, on_switch_timeout, SWITCH_TIMEOUT_MS, 0);
}

/* RegisterThing named the gateway's thing: it is the gateway's name in the cloud from now on
 * (client id, Jobs and Defender topics), kept in StateDirectory for every later start. */
static int read_thing_file(const char *path, char *buf, size_t n);

static void adopt_thing_name(struct provision *p)
{
        char cur[sizeof p->thing_name];
        int r;

        if (!p->thing_name[0] || strcmp(p->thing_name, p->gateway) == 0 || !p->thing_file)
                return;
        if (read_thing_file(p->thing_file, cur, sizeof cur) == 0 && strcmp(cur, p->thing_name) == 0)
                return; /* in use already */
        r = write_file(p->thing_file, p->thing_name, strlen(p->thing_name), 0640);
        if (r < 0) {
                log_error_errno(r, "provision: cannot store the thing name in %s: %m",
                                p->thing_file);
                return;
        }
        audit_log(p->audit, p->actor, "provision.thing_name", p->thing_name,
                  json_pack("{ss ss}", "previous", p->gateway, "file", p->thing_file));
        if (p->thing_fn)
                p->thing_fn(p->thing_ud, p->thing_name);
}

/* The new pair connected: make it current. Key first: a crash between the renames leaves only
 * CertificateFile.new, which provision_recover() then renames. */
static void commit(struct provision *p)
{
        _cleanup_(json_decrefp) json_t *info = NULL;
        char err[512];
        int r;

        uv_timer_stop(&p->timer);
        if (rename(p->key_new, p->key_file) < 0 || rename(p->cert_new, p->cert_file) < 0) {
                r = -errno;
                fail(p, "commit", "cannot rename the new certificate into place: %s", strerror(-r));
                return;
        }
        fsync_dir_of(p->cert_file);
        if (cloud_session_set_credentials(p->session, p->cert_file, p->key_file, false, err,
                                          sizeof err) < 0)
                log_warning("provision: %s", err);
        info = provision_cert_info(p->cert_file, err, sizeof err);
        p->last_error[0] = 0;
        retry_reset(&p->retry);
        p->state = ST_COMPLETE;
        if (p->mode == MODE_PROVISION) {
                p->provisioned = true;
                log_notice("provision: complete; thing %s, certificate %s in use, the claim is no "
                           "longer used",
                           p->thing_name, p->cert_file);
                audit_log(p->audit, p->actor, "provision.complete", p->gateway,
                          json_pack("{ss ss ss sO*}", "thing_name", p->thing_name, "certificate_id",
                                    p->certificate_id, "certificate", p->cert_file, "info", info));
                cloud_session_hold(p->session, false);
                adopt_thing_name(p);
        } else {
                log_notice("cert: rotated; the new certificate %s is in use", p->cert_file);
                audit_log(p->audit, p->actor, "cert.rotated", p->cert_file,
                          json_pack("{ss sO*}", "certificate_id", p->certificate_id, "info", info));
        }
        p->mode = MODE_NONE;
}

/* The new pair did not connect: drop it, go back to what worked. */
static void switch_back(struct provision *p, const char *why)
{
        const char *cert = p->mode == MODE_PROVISION ? p->claim_cert : p->cert_file;
        const char *key = p->mode == MODE_PROVISION ? p->claim_key : p->key_file;
        char err[512];

        uv_timer_stop(&p->timer);
        unlink(p->key_new);
        unlink(p->cert_new);
        fsync_dir_of(p->cert_new);
        p->state = ST_IDLE; /* the reconnection below is not the new pair's */
        if (cloud_session_set_credentials(p->session, cert, key, true, err, sizeof err) < 0)
                log_error("%s: cannot switch back to %s: %s", event_prefix(p), cert, err);
        else
                log_warning("%s: switched back to %s", event_prefix(p), cert);
        fail(p, "connect", "the new certificate did not connect (%s); back on %s", why, cert);
}

static void on_switch_timeout(uv_timer_t *t)
{
        struct provision *p = t->data;
        if (p->state == ST_SWITCHING)
                switch_back(p, "no connection within a minute");
}

static void maybe_rotate_for_expiry(struct provision *p);

static void on_session(void *ud, enum cloud_session_event ev)
{
        struct provision *p = ud;

        if (p->stopping)
                return;
        switch (ev) {
        case CLOUD_SESSION_UP:
                if (p->state == ST_SWITCHING)
                        commit(p);
                else if (p->state == ST_WAIT_SESSION)
                        begin_csr(p);
                else if (p->mode == MODE_NONE)
                        maybe_rotate_for_expiry(p);
                break;
        case CLOUD_SESSION_DOWN:
                /* An answer may be lost with the connection: start over (a fresh key) when it
                 * is back. */
                if (p->state == ST_CSR_SENT || p->state == ST_REGISTERING) {
                        uv_timer_stop(&p->timer);
                        forget_secrets(p);
                        if (p->mode == MODE_ROTATE) {
                                p->mode = MODE_NONE;
                                p->state = ST_FAILED;
                                snprintf(p->last_error, sizeof p->last_error,
                                         "the connection dropped during rotation");
                                audit_log(p->audit, p->actor, "cert.rotate_failed", p->cert_file,
                                          json_pack("{ss ss}", "step", "create-from-csr", "reason",
                                                    p->last_error));
                        } else
                                p->state = ST_WAIT_SESSION;
                }
                break;
        case CLOUD_SESSION_FAILED:
                if (p->state == ST_SWITCHING && ++p->switch_failures >= SWITCH_MAX_FAILURES) {
                        json_t *st = cloud_session_status_json(p->session);
                        char why[300];
                        snprintf(why, sizeof why, "%s",
                                 json_string_value(json_object_get(st, "last_error")) ?: "refused");
                        json_decref(st);
                        switch_back(p, why);
                }
                break;
        }
}

static const char *answer_error(json_t *o, char *buf, size_t n)
{
        snprintf(buf, n, "%lld %s: %s",
                 (long long)json_integer_value(json_object_get(o, "statusCode")),
                 json_string_value(json_object_get(o, "errorCode")) ?: "?",
                 json_string_value(json_object_get(o, "errorMessage")) ?: "");
        return buf;
}

static void on_csr_answer(struct provision *p, bool accepted, json_t *o)
{
        const char *pem = json_string_value(json_object_get(o, "certificatePem"));
        const char *id = json_string_value(json_object_get(o, "certificateId"));
        const char *token = json_string_value(json_object_get(o, "certificateOwnershipToken"));
        char buf[512];
        X509 *x;
        int r;

        if (!accepted) {
                fail(p, "create-from-csr", "the cloud rejected the CSR: %s",
                     answer_error(o, buf, sizeof buf));
                return;
        }
        if (!pem || !id || (p->mode == MODE_PROVISION && !token)) {
                fail(p, "create-from-csr", "malformed answer to the CSR");
                return;
        }
        x = cert_from_pem(pem);
        if (!x || X509_check_private_key(x, p->key) != 1) {
                X509_free(x);
                fail(p, "create-from-csr", "the issued certificate does not match the new key");
                return;
        }
        X509_free(x);
        snprintf(p->certificate_id, sizeof p->certificate_id, "%s", id);
        if (!(p->cert_pem = strdup(pem)) || (token && !(p->token = strdup(token)))) {
                fail(p, "create-from-csr", "out of memory");
                return;
        }
        log_info("%s: certificate %s received", event_prefix(p), p->certificate_id);
        if (p->mode == MODE_PROVISION)
                audit_log(p->audit, p->actor, "provision.certificate_received", p->gateway,
                          json_pack("{ss}", "certificate_id", p->certificate_id));
        if (p->mode == MODE_ROTATE) {
                install(p);
                return;
        }
        r = publish_json(p, p->topic_register,
                         json_pack("{ss sO}", "certificateOwnershipToken", p->token, "parameters",
                                   p->parameters));
        if (r < 0) {
                fail(p, "register", "cannot publish to template %s: %s", p->template_name,
                     strerror(-r));
                return;
        }
        p->state = ST_REGISTERING;
        uv_timer_start(&p->timer, on_answer_timeout, ANSWER_TIMEOUT_MS, 0);
}

static void on_register_answer(struct provision *p, bool accepted, json_t *o)
{
        const char *thing = json_string_value(json_object_get(o, "thingName"));
        char buf[512];

        if (!accepted) {
                fail(p, "register", "template %s rejected the registration: %s", p->template_name,
                     answer_error(o, buf, sizeof buf));
                return;
        }
        snprintf(p->thing_name, sizeof p->thing_name, "%s", thing ? thing : "");
        log_info("provision: registered as thing %s", p->thing_name);
        audit_log(p->audit, p->actor, "provision.registered", p->gateway,
                  json_pack("{ss ss sO*}", "thing_name", p->thing_name, "certificate_id",
                            p->certificate_id, "device_configuration",
                            json_object_get(o, "deviceConfiguration")));
        install(p);
}

static void on_message(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct provision *p = ud;
        size_t tl = strlen(topic), rl = strlen(p->topic_register), cl = strlen(p->topic_csr);
        bool csr = strncmp(topic, p->topic_csr, cl) == 0 && topic[cl] == '/';
        bool reg = rl && strncmp(topic, p->topic_register, rl) == 0 && topic[rl] == '/';
        const char *verdict;
        bool accepted;
        json_t *o;

        if ((!csr && !reg) || tl > 256)
                return;
        verdict = topic + (csr ? cl : rl) + 1;
        accepted = strcmp(verdict, "accepted") == 0;
        if (!accepted && strcmp(verdict, "rejected") != 0)
                return;
        if ((csr && p->state != ST_CSR_SENT) || (reg && p->state != ST_REGISTERING)) {
                log_debug("provision: ignoring an answer on %s in state %s", topic,
                          state_names[p->state]);
                return;
        }
        uv_timer_stop(&p->timer);
        o = len > MAX_ANSWER ? NULL
            : p->cbor        ? cborjson_decode(payload, len)
                             : json_loadb((const char *)payload, len, 0, NULL);
        if (!json_is_object(o)) {
                json_decref(o);
                fail(p, csr ? "create-from-csr" : "register", "malformed answer on %s", topic);
                return;
        }
        if (csr)
                on_csr_answer(p, accepted, o);
        else
                on_register_answer(p, accepted, o);
        json_decref(o);
}

/* ---- rotation ----------------------------------------------------------------------------- */

static int start_rotation(struct provision *p, const char *actor, char *err, size_t n)
{
        if (!p->enabled) {
                snprintf(err, n,
                         "needs [MQTT] Host=, CertificateFile= and a KeyFile= that is a "
                         "file");
                return -EOPNOTSUPP;
        }
        if (p->mode != MODE_NONE || p->state == ST_SWITCHING) {
                snprintf(err, n, "a %s is already running (%s)", mode_names[p->mode],
                         state_names[p->state]);
                return -EBUSY;
        }
        if (p->mode == MODE_PROVISION || (p->claim_cert && !exists(p->cert_file))) {
                snprintf(err, n, "not provisioned yet: still on the claim");
                return -EBUSY;
        }
        if (!cloud_session_up(p->session)) {
                snprintf(err, n, "the MQTT session is not connected");
                return -ENOTCONN;
        }
        p->mode = MODE_ROTATE;
        p->attempts = 0;
        p->last_error[0] = 0;
        snprintf(p->actor, sizeof p->actor, "%s", actor);
        begin_csr(p);
        return 0;
}

static void maybe_rotate_for_expiry(struct provision *p)
{
        _cleanup_(json_decrefp) json_t *info = NULL;
        long long left, now = (long long)time(NULL);
        char err[512];

        if (!p->rotate_before_s || p->mode != MODE_NONE || !cloud_session_up(p->session))
                return;
        /* After an attempt, not again within an hour. */
        if (p->last_auto_ms && uv_now(p->loop) - p->last_auto_ms < 3600 * 1000)
                return;
        info = provision_cert_info(p->cert_file, err, sizeof err);
        if (!info)
                return;
        left = json_integer_value(json_object_get(info, "not_after_us")) / 1000000 - now;
        if (left > (long long)p->rotate_before_s)
                return;
        log_notice("cert: %s expires in %lld days; rotating", p->cert_file, left / 86400);
        p->last_auto_ms = uv_now(p->loop);
        if (start_rotation(p, "daemon", err, sizeof err) < 0)
                log_warning("cert: cannot rotate: %s", err);
}

static void on_expiry_timer(uv_timer_t *t)
{
        maybe_rotate_for_expiry(t->data);
}

/* ---- the certificate, on request ------------------------------------------------------------- */

int provision_cert_json(struct provision *p, json_t **ret, char *err, size_t errlen)
{
        const char *in_use = cloud_session_cert_file(p->session);
        json_t *o, *info;

        info = p->cert_file ? provision_cert_info(p->cert_file, err, errlen) : NULL;
        if (!info && (!p->claim_cert || exists(p->cert_file ? p->cert_file : ""))) {
                if (!p->cert_file)
                        snprintf(err, errlen, "[MQTT] CertificateFile= not set");
                return -ENOENT;
        }
        o = json_pack("{ss* so ss* s{sb sI} so}", "file", p->cert_file, "certificate",
                      info ? info : json_null(), "in_use", in_use, "rotation", "automatic",
                      p->rotate_before_s > 0, "before_expiry_ms",
                      (json_int_t)p->rotate_before_s * 1000, "provisioning",
                      provision_status_json(p));
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

int provision_rotate(struct provision *p, const char *actor, char *err, size_t errlen)
{
        return start_rotation(p, actor, err, errlen);
}

json_t *provision_status_json(const struct provision *p)
{
        return json_pack("{ss ss sb sb sI sI ss ss ss}", "mode", mode_names[p->mode], "state",
                         state_names[p->state], "complete", p->provisioned, "claim_in_use",
                         p->mode == MODE_PROVISION, "attempts", (json_int_t)p->attempts, "failures",
                         (json_int_t)p->failures, "thing_name", p->thing_name, "certificate_id",
                         p->certificate_id, "last_error", p->last_error);
}

/* ---- life cycle --------------------------------------------------------------------------- */

static void provision_free(struct provision *p)
{
        forget_secrets(p);
        free(p->cert_file);
        free(p->key_file);
        free(p->claim_cert);
        free(p->claim_key);
        free(p->cert_new);
        free(p->key_new);
        free(p->thing_file);
        json_decref(p->parameters);
        free(p);
}

static int read_thing_file(const char *path, char *buf, size_t n)
{
        char tmp[130];
        ssize_t k;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        k = read(fd, tmp, sizeof tmp - 1);
        close(fd);
        if (k <= 0)
                return -ENOENT;
        tmp[k] = 0;
        tmp[strcspn(tmp, "\r\n")] = 0;
        /* AWS thing names: 1..128 of [a-zA-Z0-9:_-]; ours must also fit the gateway name. */
        if (!tmp[0] || strlen(tmp) >= n ||
            strspn(tmp, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
                        "OPQRSTUVWXYZ0123456789:_-") != strlen(tmp))
                return -EINVAL;
        memcpy(buf, tmp, strlen(tmp) + 1);
        return 0;
}

int provision_thing_name(const char *state_dir, char *buf, size_t n)
{
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/" THING_FILE, state_dir) < 0)
                return -ENOMEM;
        return read_thing_file(path, buf, n);
}

void provision_set_thing_listener(struct provision *p, provision_thing_fn fn, void *ud)
{
        p->thing_fn = fn;
        p->thing_ud = ud;
}

static void handle_closed(uv_handle_t *h)
{
        struct provision *p = h->data;
        if (--p->open_handles == 0)
                provision_free(p);
}

void provision_stop(struct provision *p)
{
        if (!p)
                return;
        p->stopping = true;
        cloud_session_forget(p->session, p);
        uv_close((uv_handle_t *)&p->timer, handle_closed);
        uv_close((uv_handle_t *)&p->expiry_timer, handle_closed);
}

int provision_new(uv_loop_t *loop, const struct provision_options *o,
                  const struct relay_options *mqtt, const char *state_dir, const char *gateway,
                  struct cloud_session *session, struct audit *audit, struct provision **ret)
{
        struct provision *p = calloc(1, sizeof *p);
        char filter[200];
        int r;

        if (!p)
                return -ENOMEM;
        p->loop = loop;
        p->session = session;
        p->audit = audit;
        snprintf(p->gateway, sizeof p->gateway, "%s", gateway);
        snprintf(p->actor, sizeof p->actor, "daemon");
        p->cbor = o->cbor == 1;
        snprintf(p->topic_csr, sizeof p->topic_csr, CSR_TOPIC_BASE "%s", p->cbor ? "cbor" : "json");
        retry_init(&p->retry, &provision_policy);
        if (state_dir && asprintf(&p->thing_file, "%s/" THING_FILE, state_dir) < 0)
                p->thing_file = NULL;
        if (state_dir && provision_thing_name(state_dir, p->thing_name, sizeof p->thing_name) == 0)
                p->provisioned = true, p->state = ST_COMPLETE; /* an earlier run registered it */
        p->rotate_before_s = o->rotate_before_usec / 1000000;
        p->parameters = json_object();
        if (!p->parameters)
                goto oom;
        for (size_t i = 0; i < o->parameters.n; i++) {
                const char *kv = o->parameters.v[i], *eq = strchr(kv, '=');
                _cleanup_free_ char *k = eq ? strndup(kv, (size_t)(eq - kv)) : NULL;
                if (!k || json_object_set_new(p->parameters, k, json_string(eq + 1)) < 0)
                        goto oom;
        }
        if ((mqtt->cert_file && !(p->cert_file = strdup(mqtt->cert_file))) ||
            (mqtt->key_file && !(p->key_file = strdup(mqtt->key_file))) ||
            (o->claim_cert && !(p->claim_cert = strdup(o->claim_cert))) ||
            (o->claim_key && !(p->claim_key = strdup(o->claim_key))) ||
            (p->cert_file && !(p->cert_new = path_new(p->cert_file))) ||
            (p->key_file && !(p->key_new = path_new(p->key_file))))
                goto oom;
        if (o->template_name) {
                if (strlen(o->template_name) > TEMPLATE_MAX || strpbrk(o->template_name, "/+#")) {
                        provision_free(p);
                        return log_error_errno(-EINVAL, "provision: bad Template= name %s",
                                               o->template_name);
                }
                snprintf(p->template_name, sizeof p->template_name, "%s", o->template_name);
                snprintf(p->topic_register, sizeof p->topic_register,
                         "$aws/provisioning-templates/%s/provision/%s", p->template_name,
                         p->cbor ? "cbor" : "json");
        }
        uv_timer_init(loop, &p->timer);
        uv_timer_init(loop, &p->expiry_timer);
        p->timer.data = p->expiry_timer.data = p;
        p->open_handles = 2;

        if (mqtt->hosts.n && p->cert_file && p->key_file &&
            strncmp(p->key_file, "pkcs11:", 7) != 0) {
                p->enabled = true;
                /* Subscribed before any request goes out (AWS answers only subscribers). */
                snprintf(filter, sizeof filter, "%s/+", p->topic_csr);
                if ((r = cloud_session_subscribe(session, filter, on_message, p)) < 0)
                        log_warning_errno(r, "provision: cannot subscribe to %s: %m", filter);
                if (p->topic_register[0] && provision_use_claim(mqtt, o)) {
                        snprintf(filter, sizeof filter, "%s/+", p->topic_register);
                        if ((r = cloud_session_subscribe(session, filter, on_message, p)) < 0)
                                log_warning_errno(r, "provision: cannot subscribe to %s: %m",
                                                  filter);
                }
                if ((r = cloud_session_add_listener(session, on_session, p)) < 0) {
                        provision_stop(p); /* the timers are open: freed when they close */
                        return r;
                }
                if (provision_use_claim(mqtt, o)) {
                        p->mode = MODE_PROVISION;
                        p->state = ST_WAIT_SESSION;
                        audit_log(audit, "daemon", "provision.start", p->gateway,
                                  json_pack("{ss ss}", "claim", p->claim_cert, "template",
                                            p->template_name));
                }
                if (p->rotate_before_s)
                        uv_timer_start(&p->expiry_timer, on_expiry_timer, EXPIRY_CHECK_MS,
                                       EXPIRY_CHECK_MS);
        }
        *ret = p;
        return 0;
oom:
        provision_free(p);
        return -ENOMEM;
}

int provision_config_parse_parameter(const char *v, void *field, const char **reason)
{
        const char *eq = strchr(v, '=');
        if (*v && (!eq || eq == v || strlen(v) > 1024)) {
                *reason = "expected Key=Value";
                return -EINVAL;
        }
        return config_parse_strv(v, field, reason);
}

int provision_config_parse_format(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "json") == 0)
                *(int *)field = 0;
        else if (strcmp(v, "cbor") == 0)
                *(int *)field = 1;
        else {
                *reason = "expected json or cbor";
                return -EINVAL;
        }
        return 0;
}
