/* SPDX-License-Identifier: Apache-2.0 */
/* ECDSA P-256 / SHA-256 code-signing verification with OpenSSL 3 (see ota_verify.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "basic/macro.h"
#include "ota/ota_verify.h"
#include "basic/cred.h"
#include "basic/fileio.h"

struct ota_verifier {
        EVP_PKEY *key;
};

static int fail(int r, char *err, size_t n, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int fail(int r, char *err, size_t n, const char *fmt, ...)
{
        va_list ap;

        if (err && n) {
                va_start(ap, fmt);
                vsnprintf(err, n, fmt, ap);
                va_end(ap);
        }
        return r;
}

static int from_bio(BIO *bio, struct ota_verifier **ret, char *err, size_t errlen)
{
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        struct ota_verifier *v;
        EVP_PKEY *k;
        char group[32] = "";
        size_t glen = 0;

        if (!x)
                return fail(-EBADMSG, err, errlen, "not a PEM certificate");
        k = X509_get_pubkey(x);
        X509_free(x);
        if (!k)
                return fail(-EBADMSG, err, errlen, "certificate has no usable public key");
        if (!EVP_PKEY_is_a(k, "EC") ||
            !EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                            &glen) ||
            strcmp(group, "prime256v1") != 0) {
                EVP_PKEY_free(k);
                return fail(-EBADMSG, err, errlen,
                            "code-signing key is not ECDSA P-256 (prime256v1)");
        }
        v = calloc(1, sizeof *v);
        if (!v) {
                EVP_PKEY_free(k);
                return -ENOMEM;
        }
        v->key = k;
        *ret = v;
        return 0;
}

int ota_verifier_new(const char *cert_path, struct ota_verifier **ret, char *err, size_t errlen)
{
        BIO *bio = NULL;
        int r;

        /* Not BIO_new_file(): a regular file only, bounded, and a FIFO cannot block the open. */
        if ((r = cred_file_bio(cert_path, false, &bio, err, errlen)) < 0)
                return r;
        r = from_bio(bio, ret, err, errlen);
        BIO_free(bio);
        return r;
}

int ota_verifier_new_pem(const char *pem, size_t len, struct ota_verifier **ret, char *err,
                         size_t errlen)
{
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        int r;

        if (!bio)
                return -ENOMEM;
        r = from_bio(bio, ret, err, errlen);
        BIO_free(bio);
        return r;
}

void ota_verifier_free(struct ota_verifier *v)
{
        if (!v)
                return;
        EVP_PKEY_free(v->key);
        free(v);
}

static EVP_MD_CTX *verify_begin(const struct ota_verifier *v)
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        if (ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, v->key) != 1) {
                EVP_MD_CTX_free(ctx);
                return NULL;
        }
        return ctx;
}

static int verify_end(EVP_MD_CTX *ctx, const uint8_t *sig, size_t sig_len)
{
        int ok = EVP_DigestVerifyFinal(ctx, sig, sig_len);

        EVP_MD_CTX_free(ctx);
        return ok == 1 ? 0 : -EBADMSG;
}

int ota_verify_buffer(const struct ota_verifier *v, const uint8_t *data, size_t len,
                      const uint8_t *sig, size_t sig_len)
{
        EVP_MD_CTX *ctx;

        if (!v || !sig || !sig_len)
                return -EINVAL;
        ctx = verify_begin(v);
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestVerifyUpdate(ctx, data, len) != 1) {
                EVP_MD_CTX_free(ctx);
                return -EIO;
        }
        return verify_end(ctx, sig, sig_len);
}

/* Feed the first size bytes of path to both digests (either may be NULL). */
static int feed_file(const char *path, uint64_t size, EVP_MD_CTX *verify, EVP_MD_CTX *hash)
{
        _cleanup_close_ int fd = fileio_open(path, 0, 0, NULL, NULL, 0); /* regular files only */
        _cleanup_free_ uint8_t *buf = malloc(64 * 1024);
        uint64_t left = size;

        if (fd < 0)
                return fd;
        if (!buf)
                return -ENOMEM;
        while (left) {
                ssize_t k = read(fd, buf, MIN(left, (uint64_t)64 * 1024));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EBADMSG; /* shorter than announced */
                if (verify && EVP_DigestVerifyUpdate(verify, buf, (size_t)k) != 1)
                        return -EIO;
                if (hash && EVP_DigestUpdate(hash, buf, (size_t)k) != 1)
                        return -EIO;
                left -= (uint64_t)k;
        }
        return 0;
}

int ota_verify_file(const struct ota_verifier *v, const char *path, uint64_t size,
                    const uint8_t *sig, size_t sig_len, uint8_t ret_sha256[32])
{
        EVP_MD_CTX *ctx, *h = NULL;
        int r;

        if (!v || !sig || !sig_len)
                return -EINVAL;
        ctx = verify_begin(v);
        if (!ctx)
                return -ENOMEM;
        if (ret_sha256) {
                h = EVP_MD_CTX_new();
                if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
                        EVP_MD_CTX_free(h);
                        EVP_MD_CTX_free(ctx);
                        return -ENOMEM;
                }
        }
        r = feed_file(path, size, ctx, h);
        if (r < 0) {
                EVP_MD_CTX_free(h);
                EVP_MD_CTX_free(ctx);
                return r;
        }
        if (h) {
                EVP_DigestFinal_ex(h, ret_sha256, NULL);
                EVP_MD_CTX_free(h);
        }
        return verify_end(ctx, sig, sig_len);
}

int ota_sha256_buffer(const uint8_t *data, size_t len, uint8_t out[32])
{
        return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

int ota_sha256_file(const char *path, uint64_t size, uint8_t out[32])
{
        EVP_MD_CTX *h = EVP_MD_CTX_new();
        int r;

        if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(h);
                return -ENOMEM;
        }
        r = feed_file(path, size, NULL, h);
        if (r == 0)
                EVP_DigestFinal_ex(h, out, NULL);
        EVP_MD_CTX_free(h);
        return r;
}

void ota_hex(const uint8_t *p, size_t n, char *out)
{
        static const char d[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = d[p[i] >> 4];
                out[2 * i + 1] = d[p[i] & 15];
        }
        out[2 * n] = 0;
}
