/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PSA Crypto implementation of struct mcugw_crypto (tested on Debian's mbedTLS 2.28, which
 * provides every primitive through PSA: no fallback to the classic mbedtls_* API is needed).
 */
#include <string.h>

#include <psa/crypto.h>

#include "psa_mbedtls.h"

static int psa_ready(void)
{
        /* Idempotent and cheap once initialised. */
        return psa_crypto_init() == PSA_SUCCESS ? 0 : MCUGW_ECRYPTO;
}

static int p_random(void *ctx, uint8_t *out, size_t len)
{
        (void)ctx;
        if (psa_ready() < 0 || psa_generate_random(out, len) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        return 0;
}

static int import_x25519(const uint8_t priv[32], psa_key_id_t *id)
{
        psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;

        psa_set_key_type(&a, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_MONTGOMERY));
        psa_set_key_bits(&a, 255);
        psa_set_key_usage_flags(&a, PSA_KEY_USAGE_DERIVE);
        psa_set_key_algorithm(&a, PSA_ALG_ECDH);
        if (psa_ready() < 0 || psa_import_key(&a, priv, 32, id) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        return 0;
}

static int p_x25519_public(void *ctx, uint8_t pub[32], const uint8_t priv[32])
{
        psa_key_id_t id;
        size_t len = 0;
        int r;

        (void)ctx;
        r = import_x25519(priv, &id);
        if (r < 0)
                return r;
        if (psa_export_public_key(id, pub, 32, &len) != PSA_SUCCESS || len != 32)
                r = MCUGW_ECRYPTO;
        psa_destroy_key(id);
        return r;
}

static int p_x25519(void *ctx, uint8_t shared[32], const uint8_t priv[32], const uint8_t peer[32])
{
        psa_key_id_t id;
        size_t len = 0;
        int r;

        (void)ctx;
        r = import_x25519(priv, &id);
        if (r < 0)
                return r;
        if (psa_raw_key_agreement(PSA_ALG_ECDH, id, peer, 32, shared, 32, &len) != PSA_SUCCESS ||
            len != 32)
                r = MCUGW_EDH;
        psa_destroy_key(id);
        return r;
}

static int p_sha256(void *ctx, const struct mcugw_iov *iov, size_t n, uint8_t out[32])
{
        psa_hash_operation_t op = PSA_HASH_OPERATION_INIT;
        size_t i, len = 0;

        (void)ctx;
        if (psa_ready() < 0 || psa_hash_setup(&op, PSA_ALG_SHA_256) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        for (i = 0; i < n; i++) {
                if (iov[i].len && psa_hash_update(&op, iov[i].base, iov[i].len) != PSA_SUCCESS) {
                        psa_hash_abort(&op);
                        return MCUGW_ECRYPTO;
                }
        }
        if (psa_hash_finish(&op, out, 32, &len) != PSA_SUCCESS || len != 32)
                return MCUGW_ECRYPTO;
        return 0;
}

/* Streaming SHA-256: the PSA operation lives in the caller's state, in place (PSA operations
 * must not be copied). */
typedef char
        psa_sha256_state_fits[sizeof(psa_hash_operation_t) <= MCUGW_SHA256_STATE_SIZE ? 1 : -1];

static psa_hash_operation_t *hash_op(struct mcugw_sha256_state *st)
{
        return (psa_hash_operation_t *)(void *)st->u.bytes;
}

static int p_sha256_init(void *ctx, struct mcugw_sha256_state *st)
{
        psa_hash_operation_t init = PSA_HASH_OPERATION_INIT;

        (void)ctx;
        *hash_op(st) = init;
        if (psa_ready() < 0 || psa_hash_setup(hash_op(st), PSA_ALG_SHA_256) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        return 0;
}

static int p_sha256_update(void *ctx, struct mcugw_sha256_state *st, const uint8_t *data,
                           size_t len)
{
        (void)ctx;
        if (len && psa_hash_update(hash_op(st), data, len) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        return 0;
}

static int p_sha256_final(void *ctx, struct mcugw_sha256_state *st, uint8_t out[32])
{
        size_t len = 0;

        (void)ctx;
        if (!out)
                return psa_hash_abort(hash_op(st)) == PSA_SUCCESS ? 0 : MCUGW_ECRYPTO;
        if (psa_hash_finish(hash_op(st), out, 32, &len) != PSA_SUCCESS || len != 32) {
                psa_hash_abort(hash_op(st));
                return MCUGW_ECRYPTO;
        }
        return 0;
}

static int import_chacha(const uint8_t key[32], psa_key_id_t *id)
{
        psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;

        psa_set_key_type(&a, PSA_KEY_TYPE_CHACHA20);
        psa_set_key_bits(&a, 256);
        psa_set_key_usage_flags(&a, PSA_KEY_USAGE_ENCRYPT | PSA_KEY_USAGE_DECRYPT);
        psa_set_key_algorithm(&a, PSA_ALG_CHACHA20_POLY1305);
        if (psa_ready() < 0 || psa_import_key(&a, key, 32, id) != PSA_SUCCESS)
                return MCUGW_ECRYPTO;
        return 0;
}

static int p_seal(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                  size_t ad_len, const uint8_t *pt, size_t len, uint8_t *out)
{
        psa_key_id_t id;
        size_t olen = 0;
        int r;

        (void)ctx;
        r = import_chacha(key, &id);
        if (r < 0)
                return r;
        if (psa_aead_encrypt(id, PSA_ALG_CHACHA20_POLY1305, nonce, 12, ad, ad_len, pt, len, out,
                             len + MCUGW_TAG_LEN, &olen) != PSA_SUCCESS ||
            olen != len + MCUGW_TAG_LEN)
                r = MCUGW_ECRYPTO;
        psa_destroy_key(id);
        return r;
}

static int p_open(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                  size_t ad_len, const uint8_t *ct, size_t len, uint8_t *out)
{
        psa_key_id_t id;
        psa_status_t st;
        size_t olen = 0;
        int r;

        (void)ctx;
        if (len < MCUGW_TAG_LEN)
                return MCUGW_EAUTH;
        r = import_chacha(key, &id);
        if (r < 0)
                return r;
        st = psa_aead_decrypt(id, PSA_ALG_CHACHA20_POLY1305, nonce, 12, ad, ad_len, ct, len, out,
                              len - MCUGW_TAG_LEN, &olen);
        if (st == PSA_ERROR_INVALID_SIGNATURE)
                r = MCUGW_EAUTH;
        else if (st != PSA_SUCCESS || olen != len - MCUGW_TAG_LEN)
                r = MCUGW_ECRYPTO;
        psa_destroy_key(id);
        return r;
}

/* DER SEQUENCE { INTEGER r, INTEGER s } -> r || s (32 bytes each), as PSA wants it. */
static int der_int(const uint8_t **p, const uint8_t *end, uint8_t out[32])
{
        size_t n;

        if (end - *p < 2 || (*p)[0] != 0x02)
                return -1;
        n = (*p)[1];
        *p += 2;
        if (n == 0 || n > 33 || (size_t)(end - *p) < n)
                return -1;
        while (n > 32 || (n > 1 && **p == 0 && ((*p)[1] & 0x80))) {
                if (**p != 0)
                        return -1; /* a 33-byte value that is not just a sign pad */
                (*p)++;
                n--;
        }
        if (n > 32)
                return -1;
        memset(out, 0, 32 - n);
        memcpy(out + 32 - n, *p, n);
        *p += n;
        return 0;
}

static int der_to_raw(const uint8_t *sig, size_t len, uint8_t raw[64])
{
        const uint8_t *p = sig, *end = sig + len;

        if (len < 8 || len > 72 || p[0] != 0x30 || p[1] != len - 2)
                return -1;
        p += 2;
        if (der_int(&p, end, raw) < 0 || der_int(&p, end, raw + 32) < 0 || p != end)
                return -1;
        return 0;
}

static int p_ecdsa_p256_verify(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                               const uint8_t *sig, size_t sig_len)
{
        psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
        psa_key_id_t id;
        uint8_t raw[64];
        psa_status_t st;

        (void)ctx;
        if (!pub || !digest || !sig)
                return MCUGW_EINVAL;
        if (der_to_raw(sig, sig_len, raw) < 0)
                return MCUGW_EAUTH; /* malformed signature: not a valid one */
        psa_set_key_type(&a, PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
        psa_set_key_bits(&a, 256);
        psa_set_key_usage_flags(&a, PSA_KEY_USAGE_VERIFY_HASH);
        psa_set_key_algorithm(&a, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
        if (psa_ready() < 0 || psa_import_key(&a, pub, 65, &id) != PSA_SUCCESS)
                return MCUGW_EINVAL;
        st = psa_verify_hash(id, PSA_ALG_ECDSA(PSA_ALG_SHA_256), digest, 32, raw, sizeof raw);
        psa_destroy_key(id);
        return st == PSA_SUCCESS                   ? 0
               : st == PSA_ERROR_INVALID_SIGNATURE ? MCUGW_EAUTH
                                                   : MCUGW_ECRYPTO;
}

const struct mcugw_crypto mcugw_crypto_psa = {
        .ctx = NULL,
        .random = p_random,
        .x25519_public = p_x25519_public,
        .x25519 = p_x25519,
        .sha256 = p_sha256,
        .aead_seal = p_seal,
        .aead_open = p_open,
        .ecdsa_p256_verify = p_ecdsa_p256_verify,
        .sha256_init = p_sha256_init,
        .sha256_update = p_sha256_update,
        .sha256_final = p_sha256_final,
};
