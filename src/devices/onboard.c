/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "basic/macro.h"
#include "devices/onboard.h"
#include "basic/cred.h"

#define ATTEST_DOMAIN "mcugw-attest-v1"

struct onboard_key {
        char id[ONBOARD_KEY_ID_MAX + 1];
        EVP_PKEY *pub;
        bool revoked;
};

struct onboard {
        enum onboard_policy policy;
        struct onboard_key *keys;
        size_t n;
};

static int attest_digest(const char *id, size_t id_len, const uint8_t pub[ENROLL_KEY_LEN],
                         uint8_t out[32])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t l = (uint8_t)id_len;
        unsigned n = 0;
        int ok;

        if (!md)
                return -ENOMEM;
        ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, ATTEST_DOMAIN, sizeof ATTEST_DOMAIN - 1) == 1 &&
             EVP_DigestUpdate(md, &l, 1) == 1 && EVP_DigestUpdate(md, id, id_len) == 1 &&
             EVP_DigestUpdate(md, pub, ENROLL_KEY_LEN) == 1 && EVP_DigestFinal_ex(md, out, &n) == 1;
        EVP_MD_CTX_free(md);
        return ok ? 0 : -EIO;
}

static bool key_id_valid(const char *s, size_t n)
{
        if (n == 0 || n > ONBOARD_KEY_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
                        return false;
        return true;
}

/* A PEM public key, or a certificate whose key is used. Must be EC P-256. */
static EVP_PKEY *load_public(const char *path, const char **reason, char *buf, size_t buflen)
{
        BIO *bio = NULL;
        EVP_PKEY *k;
        X509 *x;
        char curve[32];

        /* A regular file, bounded, read without blocking (cred_file_bio()); the message names
         * the file. */
        if (cred_file_bio(path, false, &bio, buf, buflen) < 0) {
                *reason = buf;
                return NULL;
        }
        k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        if (!k) {
                (void)BIO_reset(bio);
                x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
                if (x) {
                        k = X509_get_pubkey(x);
                        X509_free(x);
                }
        }
        BIO_free(bio);
        ERR_clear_error();
        if (!k) {
                *reason = "not a PEM public key or certificate";
                return NULL;
        }
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
            EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof curve, NULL) != 1 ||
            strcmp(curve, "prime256v1") != 0) {
                EVP_PKEY_free(k);
                *reason = "not an EC P-256 key";
                return NULL;
        }
        return k;
}

int onboard_new(const struct onboard_options *c, struct onboard **ret, struct conf_errors *err)
{
        struct onboard *o = calloc(1, sizeof *o);
        size_t before = err->n;

        if (!o)
                return -ENOMEM;
        o->policy = (enum onboard_policy)c->policy;
        o->keys = calloc(c->manufacturer_keys.n ? c->manufacturer_keys.n : 1, sizeof *o->keys);
        if (!o->keys) {
                free(o);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->manufacturer_keys.n; i++) {
                const char *spec = c->manufacturer_keys.v[i], *colon = strchr(spec, ':');
                const char *reason = NULL;
                char why[512];
                struct onboard_key *k = &o->keys[o->n];

                if (!colon || !key_id_valid(spec, (size_t)(colon - spec)) || colon[1] != '/') {
                        conf_errors_add(err,
                                        "[Onboarding] ManufacturerKey=%s: expected "
                                        "KEYID:/path/to/key.pem",
                                        spec);
                        continue;
                }
                memcpy(k->id, spec, (size_t)(colon - spec));
                k->pub = load_public(colon + 1, &reason, why, sizeof why);
                if (!k->pub) {
                        conf_errors_add(err, "%s: manufacturer key %s: %s", colon + 1, k->id,
                                        reason);
                        continue;
                }
                for (size_t j = 0; j < c->revoked_manufacturer_keys.n; j++)
                        if (strcmp(c->revoked_manufacturer_keys.v[j], k->id) == 0)
                                k->revoked = true;
                o->n++;
        }
        if (err->n > before) {
                onboard_free(o);
                return -EINVAL;
        }
        *ret = o;
        return 0;
}

void onboard_free(struct onboard *o)
{
        if (!o)
                return;
        for (size_t i = 0; i < o->n; i++)
                EVP_PKEY_free(o->keys[i].pub);
        free(o->keys);
        free(o);
}

enum onboard_policy onboard_policy(const struct onboard *o)
{
        return o ? o->policy : ONBOARD_OFF;
}

int onboard_verify(const struct onboard *o, const char *id, size_t id_len,
                   const uint8_t pub[ENROLL_KEY_LEN], const uint8_t *attest, size_t attest_len,
                   const char **ret_key_id, const char **ret_reason)
{
        const struct onboard_key *k = NULL;
        uint8_t digest[32];
        unsigned char der[80], *p = der;
        ECDSA_SIG *sig = NULL;
        BIGNUM *r = NULL, *s = NULL;
        EVP_PKEY_CTX *ctx = NULL;
        size_t kid_len;
        int der_len, q = -EACCES;

        if (!o || o->policy == ONBOARD_OFF) {
                *ret_reason = "unknown key (onboarding disabled)";
                return -ENOENT;
        }
        if (!attest || attest_len == 0) {
                *ret_reason = "unknown key, no attestation";
                return -ENOENT;
        }
        if (attest_len < 2 || attest[0] != ONBOARD_ATTEST_VERSION) {
                *ret_reason = "attestation: unknown format";
                return -EBADMSG;
        }
        kid_len = attest[1];
        if (attest_len != 2 + kid_len + 64 || !key_id_valid((const char *)attest + 2, kid_len)) {
                *ret_reason = "attestation: malformed";
                return -EBADMSG;
        }
        for (size_t i = 0; i < o->n; i++)
                if (strlen(o->keys[i].id) == kid_len &&
                    memcmp(o->keys[i].id, attest + 2, kid_len) == 0)
                        k = &o->keys[i];
        if (!k) {
                *ret_reason = "attestation by an untrusted manufacturer key";
                return -EACCES;
        }
        if (k->revoked) {
                *ret_key_id = k->id;
                *ret_reason = "attestation by a revoked manufacturer key";
                return -EKEYREVOKED;
        }
        if (attest_digest(id, id_len, pub, digest) < 0) {
                *ret_reason = "internal error";
                return -EIO;
        }
        /* raw r||s (what an MCU's PSA API produces) to DER for OpenSSL */
        sig = ECDSA_SIG_new();
        r = BN_bin2bn(attest + 2 + kid_len, 32, NULL);
        s = BN_bin2bn(attest + 2 + kid_len + 32, 32, NULL);
        if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
                BN_free(r);
                BN_free(s);
                *ret_reason = "internal error";
                q = -ENOMEM;
                goto out;
        }
        der_len = i2d_ECDSA_SIG(sig, &p);
        ctx = EVP_PKEY_CTX_new(k->pub, NULL);
        if (der_len <= 0 || !ctx || EVP_PKEY_verify_init(ctx) != 1 ||
            EVP_PKEY_verify(ctx, der, (size_t)der_len, digest, sizeof digest) != 1) {
                *ret_reason = "attestation signature does not verify";
                goto out;
        }
        *ret_key_id = k->id;
        q = 0;
out:
        EVP_PKEY_CTX_free(ctx);
        ECDSA_SIG_free(sig);
        return q;
}

int onboard_attest_sign(EVP_PKEY *mkey, const char *key_id, const char *id,
                        const uint8_t pub[ENROLL_KEY_LEN], uint8_t *out, size_t cap)
{
        size_t kid_len = strlen(key_id), der_len = 0;
        unsigned char der[80];
        const unsigned char *p = der;
        uint8_t digest[32];
        EVP_PKEY_CTX *ctx;
        ECDSA_SIG *sig;
        const BIGNUM *r, *s;
        int q = -EIO;

        if (!key_id_valid(key_id, kid_len) || !enroll_id_valid(id))
                return -EINVAL;
        if (cap < 2 + kid_len + 64)
                return -ENOBUFS;
        if (attest_digest(id, strlen(id), pub, digest) < 0)
                return -EIO;
        ctx = EVP_PKEY_CTX_new(mkey, NULL);
        der_len = sizeof der;
        if (!ctx || EVP_PKEY_sign_init(ctx) != 1 ||
            EVP_PKEY_sign(ctx, der, &der_len, digest, sizeof digest) != 1) {
                EVP_PKEY_CTX_free(ctx);
                return -EIO;
        }
        EVP_PKEY_CTX_free(ctx);
        sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        if (!sig)
                return -EIO;
        ECDSA_SIG_get0(sig, &r, &s);
        out[0] = ONBOARD_ATTEST_VERSION;
        out[1] = (uint8_t)kid_len;
        memcpy(out + 2, key_id, kid_len);
        if (BN_bn2binpad(r, out + 2 + kid_len, 32) == 32 &&
            BN_bn2binpad(s, out + 2 + kid_len + 32, 32) == 32)
                q = (int)(2 + kid_len + 64);
        ECDSA_SIG_free(sig);
        return q;
}

int onboard_config_parse_policy(const char *v, void *field, const char **reason)
{
        static const char *const names[] = { "off", "pending", "active" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(v, names[i]) == 0) {
                        *(int *)field = (int)i;
                        return 0;
                }
        *reason = "expected off, pending or active";
        return -EINVAL;
}
