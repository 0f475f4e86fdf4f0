/* SPDX-License-Identifier: Apache-2.0 */
/* The pkcs11 engine is the PKCS#11 path Debian 12 ships for OpenSSL 3 (no pkcs11-provider in
 * bookworm), and engines are deprecated API in OpenSSL 3: allow it in this file only. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ui.h>
#include <openssl/x509.h>

#include "basic/conf-parser.h"
#include "basic/cred.h"
#include "basic/macro.h"
#include "basic/fileio.h"

static int seterr(char *err, size_t n, int r, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int seterr(char *err, size_t n, int r, const char *fmt, ...)
{
        va_list ap;
        unsigned long e = ERR_peek_last_error();
        size_t off;

        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
        off = strlen(err);
        if (e && off + 3 < n) {
                snprintf(err + off, n - off, " (%s)",
                         ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "OpenSSL error");
        }
        ERR_clear_error();
        return r;
}

static int check_private_st(const char *path, const struct stat *st, char *err, size_t errlen)
{
        if (!S_ISREG(st->st_mode))
                return seterr(err, errlen, -EINVAL, "private key %s: not a regular file (%s)", path,
                              fileio_type_name(st->st_mode));
        if (st->st_mode & 0077)
                return seterr(err, errlen, -EPERM,
                              "private key %s is accessible by group or others (mode %04o); "
                              "refusing it: chmod 600 %s",
                              path, (unsigned)(st->st_mode & 07777), path);
        return 0;
}

int cred_file_bio(const char *path, bool secret, BIO **ret, char *err, size_t errlen)
{
        _cleanup_close_ int fd = -1;
        char msg[512];
        char *buf = NULL;
        size_t len = 0;
        struct stat st;
        BIO *bio;
        int r;

        fd = fileio_open(path, 0, FILEIO_PEM_MAX, &st, msg, sizeof msg);
        if (fd < 0)
                return seterr(err, errlen, fd, "%s", msg);
        if (secret && (r = check_private_st(path, &st, err, errlen)) < 0)
                return r;
        if ((r = fileio_read_fd(fd, path, FILEIO_PEM_MAX, &buf, &len, msg, sizeof msg)) < 0)
                return seterr(err, errlen, r, "%s", msg);
        /* Key material goes to secure memory, wiped when the BIO is freed. */
        bio = BIO_new(secret ? BIO_s_secmem() : BIO_s_mem());
        if (!bio || (len && BIO_write(bio, buf, (int)len) != (int)len)) {
                BIO_free(bio);
                fileio_erase_free(buf, len);
                return seterr(err, errlen, -ENOMEM, "%s: out of memory", path);
        }
        fileio_erase_free(buf, len);
        /* BIO_reset() rewinds (for readers that try one format, then another). */
        BIO_set_flags(bio, BIO_FLAGS_NONCLEAR_RST);
        *ret = bio;
        return 0;
}

static int load_key_file(const char *path, EVP_PKEY **ret, char *err, size_t errlen)
{
        BIO *bio = NULL;
        EVP_PKEY *k;
        int r = cred_file_bio(path, true, &bio, err, errlen);

        if (r < 0) {
                /* Say what the file was meant to be. */
                if (strncmp(err, "private key ", 12) != 0) {
                        char tmp[512];
                        snprintf(tmp, sizeof tmp, "%s", err);
                        snprintf(err, errlen, "private key %s", tmp);
                }
                return r;
        }
        k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        if (!k) {
                (void)BIO_reset(bio);
                ERR_clear_error();
                k = d2i_PrivateKey_bio(bio, NULL);
        }
        BIO_free(bio);
        if (!k)
                return seterr(err, errlen, -EBADMSG, "private key %s: not a PEM or DER key", path);
        *ret = k;
        return 0;
}

/* One pkcs11 engine for the life of the process: libp11 keeps per-module state (sessions,
 * logins, method tables) that it does not give back when an engine is torn down, so it is set up
 * once and kept (it stays reachable, and a second module path is refused). */
static ENGINE *pkcs11_engine(const char *module, char *err, size_t errlen)
{
        static ENGINE *engine;
        static char *engine_module;
        ENGINE *e;

        if (engine) {
                if ((module || engine_module) &&
                    (!module || !engine_module || strcmp(module, engine_module) != 0)) {
                        seterr(err, errlen, 0, "pkcs11 engine: already using module %s",
                               engine_module ? engine_module : "(default)");
                        return NULL;
                }
                return engine;
        }
        ENGINE_load_builtin_engines();
        e = ENGINE_by_id("pkcs11"); /* engines-3/pkcs11.so, loaded on demand */
        if (!e) {
                seterr(err, errlen, 0,
                       "PKCS#11 URIs need OpenSSL's pkcs11 engine (libengine-pkcs11-openssl)");
                return NULL;
        }
        if (module && ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) != 1) {
                seterr(err, errlen, 0, "pkcs11 engine: cannot use module %s", module);
                ENGINE_free(e);
                return NULL;
        }
        if (ENGINE_init(e) != 1) {
                seterr(err, errlen, 0, "pkcs11 engine: cannot initialise%s%s",
                       module ? " module " : "", module ? module : "");
                ENGINE_free(e);
                return NULL;
        }
        engine = e;
        engine_module = module ? strdup(module) : NULL;
        return engine;
}

static int load_key_pkcs11(const char *uri, const char *module, EVP_PKEY **ret, char *err,
                           size_t errlen)
{
        ENGINE *e = pkcs11_engine(module, err, errlen);
        EVP_PKEY *k;

        if (!e)
                return -ENOPKG;
        /* UI_null(): never prompt for a PIN on a terminal — a daemon has none. The PIN comes in
         * the URI (pin-source=file:… is best: libp11 prints URIs it cannot resolve). */
        ERR_clear_error();
        k = ENGINE_load_private_key(e, uri, (UI_METHOD *)UI_null(), NULL);
        if (!k) {
                /* Never repeat the query part: it may hold pin-value=. */
                int n = (int)strcspn(uri, "?");
                bool bad_pin = false;
                const char *why = NULL;
                unsigned long code;

                /* libp11 leaves the module's reason (CKR_PIN_INCORRECT, CKR_PIN_LOCKED, …) or
                 * its own ("object not found") on the error queue: tell the operator which. */
                while ((code = ERR_get_error()) != 0) {
                        const char *r = ERR_reason_error_string(code);
                        if (!r)
                                continue;
                        if (strstr(r, "PIN"))
                                bad_pin = true;
                        if (!why || strstr(r, "PIN") || strstr(r, "not found"))
                                why = r;
                }
                if (bad_pin)
                        return seterr(err, errlen, -EACCES, "PKCS#11 key %.*s: wrong PIN (%s)", n,
                                      uri, why);
                if (why && strstr(why, "not found"))
                        return seterr(err, errlen, -ENOENT,
                                      "PKCS#11 key %.*s: no such token or key in the module", n,
                                      uri);
                return seterr(err, errlen, -EIO, "PKCS#11 key %.*s: cannot load (%s)", n, uri,
                              why ? why : "no reason given");
        }
        *ret = k;
        return 0;
}

int cred_load_private_key(const char *spec, const char *module, EVP_PKEY **ret, char *err,
                          size_t errlen)
{
        if (strncmp(spec, "pkcs11:", 7) == 0)
                return load_key_pkcs11(spec, module, ret, err, errlen);
        return load_key_file(spec, ret, err, errlen);
}

int cred_load_certificate(const char *path, X509 **ret, char *err, size_t errlen)
{
        BIO *bio = NULL;
        char msg[512];
        X509 *x;
        int r = cred_file_bio(path, false, &bio, msg, sizeof msg);

        if (r < 0)
                return seterr(err, errlen, r, "certificate %s", msg);
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!x)
                return seterr(err, errlen, -EBADMSG, "certificate %s: not a PEM certificate", path);
        *ret = x;
        return 0;
}

int cred_ssl_ctx_load_ca(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        BIO *bio = NULL;
        char msg[512];
        X509 *x;
        int n = 0, r = cred_file_bio(path, false, &bio, msg, sizeof msg);

        if (r < 0)
                return seterr(err, errlen, r, "%s", msg);
        /* Every certificate in the file, as SSL_CTX_load_verify_locations() takes them. */
        while ((x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL))) {
                if (X509_STORE_add_cert(store, x) == 1)
                        n++;
                X509_free(x);
        }
        BIO_free(bio);
        ERR_clear_error(); /* the end of the file */
        if (!n)
                return seterr(err, errlen, -EBADMSG, "%s: no PEM certificate", path);
        return 0;
}

int cred_ssl_ctx_use_chain(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
        BIO *bio = NULL;
        char msg[512];
        X509 *x;
        int r = cred_file_bio(path, false, &bio, msg, sizeof msg);

        if (r < 0)
                return seterr(err, errlen, r, "%s", msg);
        x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
        if (!x) {
                BIO_free(bio);
                return seterr(err, errlen, -EBADMSG, "%s: not a PEM certificate", path);
        }
        if (SSL_CTX_use_certificate(ctx, x) != 1) {
                X509_free(x);
                BIO_free(bio);
                return seterr(err, errlen, -EINVAL, "%s: certificate cannot be used", path);
        }
        X509_free(x);
        /* The rest of the file: intermediate certificates, as SSL_CTX_use_certificate_chain_file()
         * takes them. */
        SSL_CTX_clear_chain_certs(ctx);
        while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
                if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
                        X509_free(x);
                        BIO_free(bio);
                        return seterr(err, errlen, -EINVAL, "%s: chain certificate cannot be used",
                                      path);
                }
        }
        BIO_free(bio);
        ERR_clear_error(); /* the end of the file */
        return 0;
}

int cred_ssl_ctx_use(SSL_CTX *ctx, const char *cert_path, const char *key_spec, const char *module,
                     char *err, size_t errlen)
{
        EVP_PKEY *k = NULL;
        X509 *x = NULL;
        int r;

        if ((r = cred_load_certificate(cert_path, &x, err, errlen)) < 0)
                return r;
        if ((r = cred_load_private_key(key_spec, module, &k, err, errlen)) < 0)
                goto out;
        if (SSL_CTX_use_certificate(ctx, x) != 1) {
                r = seterr(err, errlen, -EINVAL, "certificate %s cannot be used", cert_path);
                goto out;
        }
        if (SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
                r = seterr(err, errlen, -EINVAL, "private key %s does not match certificate %s",
                           key_spec, cert_path);
                goto out;
        }
        r = 0;
out:
        EVP_PKEY_free(k);
        X509_free(x);
        return r;
}

int cred_config_parse_key(const char *v, void *field, const char **reason)
{
        if (strncmp(v, "pkcs11:", 7) == 0) {
                if (strlen(v) > 1024) {
                        *reason = "URI too long";
                        return -EINVAL;
                }
                return config_parse_string(v, field, reason);
        }
        return config_parse_path(v, field, reason);
}
