/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OpenSSL 3 implementation of struct mcugw_crypto. Every function converts OpenSSL failures
 * to MCUGW_ECRYPTO (or MCUGW_EAUTH for a bad tag / MCUGW_EDH for a low-order point) here, at
 * the module boundary.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "posix_openssl.h"

/*
 * Explicitly fetched algorithms: EVP_sha256()/EVP_chacha20_poly1305() would do an implicit
 * provider fetch on every init, which costs more than hashing the few bytes the handshake needs.
 */
static EVP_MD *md_sha256;
static EVP_CIPHER *cipher_chachapoly;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_algorithms(void)
{
        md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        cipher_chachapoly = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
}

static const EVP_MD *sha256_md(void)
{
        pthread_once(&fetch_once, fetch_algorithms);
        return md_sha256 ? md_sha256 : EVP_sha256();
}

static const EVP_CIPHER *chachapoly_cipher(void)
{
        pthread_once(&fetch_once, fetch_algorithms);
        return cipher_chachapoly ? cipher_chachapoly : EVP_chacha20_poly1305();
}

static int ossl_random(void *ctx, uint8_t *out, size_t len)
{
        (void)ctx;
        if (len > 0x7fffffff || RAND_bytes(out, (int)len) != 1)
                return MCUGW_ECRYPTO;
        return 0;
}

static int ossl_x25519_public(void *ctx, uint8_t pub[32], const uint8_t priv[32])
{
        EVP_PKEY *k;
        size_t len = 32;
        int r = MCUGW_ECRYPTO;

        (void)ctx;
        k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
        if (k && EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == 32)
                r = 0;
        EVP_PKEY_free(k);
        return r;
}

/*
 * Import a private key for derivation only. EVP_PKEY_new_raw_private_key() would compute the
 * public key (a full scalar multiplication) that derive never uses; passing a placeholder public
 * key through EVP_PKEY_fromdata() skips it and halves the cost of every DH.
 */
static EVP_PKEY *import_dh_key(const uint8_t priv[32])
{
        static const uint8_t unused_pub[32];
        EVP_PKEY_CTX *pc;
        EVP_PKEY *k = NULL;
        OSSL_PARAM params[3];

        params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)priv, 32);
        params[1] =
                OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)unused_pub, 32);
        params[2] = OSSL_PARAM_construct_end();
        pc = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
        if (!pc || EVP_PKEY_fromdata_init(pc) != 1 ||
            EVP_PKEY_fromdata(pc, &k, EVP_PKEY_KEYPAIR, params) != 1)
                k = NULL;
        EVP_PKEY_CTX_free(pc);
        if (!k)
                k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
        return k;
}

static int ossl_x25519(void *ctx, uint8_t shared[32], const uint8_t priv[32],
                       const uint8_t peer[32])
{
        EVP_PKEY *k = NULL, *p = NULL;
        EVP_PKEY_CTX *pc = NULL;
        size_t len = 32;
        int r = MCUGW_ECRYPTO;

        (void)ctx;
        k = import_dh_key(priv);
        p = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
        if (!k || !p)
                goto out;
        pc = EVP_PKEY_CTX_new(k, NULL);
        if (!pc || EVP_PKEY_derive_init(pc) != 1 || EVP_PKEY_derive_set_peer(pc, p) != 1)
                goto out;
        /* OpenSSL refuses an all-zero result (low-order point): report it as such. */
        if (EVP_PKEY_derive(pc, shared, &len) != 1 || len != 32) {
                r = MCUGW_EDH;
                goto out;
        }
        r = 0;
out:
        EVP_PKEY_CTX_free(pc);
        EVP_PKEY_free(p);
        EVP_PKEY_free(k);
        return r;
}

static int ossl_sha256(void *ctx, const struct mcugw_iov *iov, size_t n, uint8_t out[32])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int len = 32;
        int r = MCUGW_ECRYPTO;
        size_t i;

        (void)ctx;
        if (!md || EVP_DigestInit_ex(md, sha256_md(), NULL) != 1)
                goto out;
        for (i = 0; i < n; i++)
                if (iov[i].len && EVP_DigestUpdate(md, iov[i].base, iov[i].len) != 1)
                        goto out;
        if (EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32)
                r = 0;
out:
        EVP_MD_CTX_free(md);
        return r;
}

static int ossl_aead(int enc, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                     size_t ad_len, const uint8_t *in, size_t len, uint8_t *out)
{
        EVP_CIPHER_CTX *c;
        int outl, r = MCUGW_ECRYPTO;

        if (len > 0x7fffffff || ad_len > 0x7fffffff)
                return MCUGW_EINVAL;
        c = EVP_CIPHER_CTX_new();
        if (!c || EVP_CipherInit_ex(c, chachapoly_cipher(), NULL, key, nonce, enc) != 1)
                goto out;
        if (!enc &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, MCUGW_TAG_LEN, (void *)(in + len)) != 1)
                goto out;
        if (ad_len && EVP_CipherUpdate(c, NULL, &outl, ad, (int)ad_len) != 1)
                goto out;
        if (len && EVP_CipherUpdate(c, out, &outl, in, (int)len) != 1)
                goto out;
        if (EVP_CipherFinal_ex(c, out + len, &outl) != 1) {
                r = enc ? MCUGW_ECRYPTO : MCUGW_EAUTH;
                goto out;
        }
        if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, MCUGW_TAG_LEN, out + len) != 1)
                goto out;
        r = 0;
out:
        EVP_CIPHER_CTX_free(c);
        return r;
}

static int ossl_seal(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                     size_t ad_len, const uint8_t *pt, size_t len, uint8_t *out)
{
        (void)ctx;
        return ossl_aead(1, key, nonce, ad, ad_len, pt, len, out);
}

static int ossl_open(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                     size_t ad_len, const uint8_t *ct, size_t len, uint8_t *out)
{
        int r;

        (void)ctx;
        if (len < MCUGW_TAG_LEN)
                return MCUGW_EAUTH;
        /* The tag is set before decryption, so out == ct (in place) is fine. */
        r = ossl_aead(0, key, nonce, ad, ad_len, ct, len - MCUGW_TAG_LEN, out);
        if (r < 0)
                OPENSSL_cleanse(out, len - MCUGW_TAG_LEN); /* never expose unverified text */
        return r;
}

/* OTA: ECDSA P-256 over a SHA-256 digest, key as an uncompressed point. */
static int ossl_ecdsa_p256_verify(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                                  const uint8_t *sig, size_t sig_len)
{
        OSSL_PARAM params[3];
        EVP_PKEY_CTX *kctx, *vctx = NULL;
        EVP_PKEY *key = NULL;
        int r = MCUGW_ECRYPTO, ok;

        (void)ctx;
        if (!pub || !digest || !sig || !sig_len || pub[0] != 0x04)
                return MCUGW_EINVAL;
        params[0] = OSSL_PARAM_construct_utf8_string("group", (char *)"prime256v1", 0);
        params[1] = OSSL_PARAM_construct_octet_string("pub", (void *)pub, 65);
        params[2] = OSSL_PARAM_construct_end();
        kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!kctx || EVP_PKEY_fromdata_init(kctx) != 1 ||
            EVP_PKEY_fromdata(kctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
                r = MCUGW_EINVAL; /* not a point on the curve */
                goto out;
        }
        vctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!vctx || EVP_PKEY_verify_init(vctx) != 1)
                goto out;
        ok = EVP_PKEY_verify(vctx, sig, sig_len, digest, 32);
        r = ok == 1 ? 0 : MCUGW_EAUTH; /* 0: wrong signature, <0: malformed DER */
out:
        EVP_PKEY_CTX_free(vctx);
        EVP_PKEY_free(key);
        EVP_PKEY_CTX_free(kctx);
        return r;
}

/* Streaming SHA-256: the state holds the EVP_MD_CTX (OpenSSL 3 allocates it), final frees it. */
typedef char ossl_sha256_state_fits[sizeof(EVP_MD_CTX *) <= MCUGW_SHA256_STATE_SIZE ? 1 : -1];

static int ossl_sha256_init(void *ctx, struct mcugw_sha256_state *st)
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();

        (void)ctx;
        st->u.align_ptr = md;
        if (!md || EVP_DigestInit_ex(md, sha256_md(), NULL) != 1)
                return MCUGW_ECRYPTO;
        return 0;
}

static int ossl_sha256_update(void *ctx, struct mcugw_sha256_state *st, const uint8_t *data,
                              size_t len)
{
        (void)ctx;
        if (!st->u.align_ptr || (len && EVP_DigestUpdate(st->u.align_ptr, data, len) != 1))
                return MCUGW_ECRYPTO;
        return 0;
}

static int ossl_sha256_final(void *ctx, struct mcugw_sha256_state *st, uint8_t out[32])
{
        EVP_MD_CTX *md = st->u.align_ptr;
        unsigned int len = 32;
        int r = 0;

        (void)ctx;
        if (out && (!md || EVP_DigestFinal_ex(md, out, &len) != 1 || len != 32))
                r = MCUGW_ECRYPTO;
        EVP_MD_CTX_free(md);
        st->u.align_ptr = NULL;
        return r;
}

const struct mcugw_crypto mcugw_crypto_openssl = {
        .ctx = NULL,
        .random = ossl_random,
        .x25519_public = ossl_x25519_public,
        .x25519 = ossl_x25519,
        .sha256 = ossl_sha256,
        .aead_seal = ossl_seal,
        .aead_open = ossl_open,
        .ecdsa_p256_verify = ossl_ecdsa_p256_verify,
        .sha256_init = ossl_sha256_init,
        .sha256_update = ossl_sha256_update,
        .sha256_final = ossl_sha256_final,
};

int mcugw_openssl_keygen(uint8_t priv[32], uint8_t pub[32])
{
        if (ossl_random(NULL, priv, 32) < 0)
                return MCUGW_ECRYPTO;
        return ossl_x25519_public(NULL, pub, priv);
}

/* ---- I/O half of the POSIX port (simulator, host tests) ---- */

static int posix_send(void *ctx, const uint8_t *data, size_t len)
{
        struct mcugw_posix_link *l = ctx;

        while (len) {
                ssize_t n = write(l->fd, data, len);

                if (n < 0) {
                        struct pollfd p = { .fd = l->fd, .events = POLLOUT };

                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                return MCUGW_EIO;
                        if (poll(&p, 1, 1000) < 0 && errno != EINTR)
                                return MCUGW_EIO;
                        continue;
                }
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

static int posix_recv(void *ctx, uint8_t *buf, size_t cap)
{
        struct mcugw_posix_link *l = ctx;
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        ssize_t n;
        int r;

        do
                r = poll(&p, 1, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return MCUGW_EIO;
        if (r == 0)
                return 0;
        do
                n = read(l->fd, buf, cap);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : MCUGW_EIO;
        if (n == 0)
                return MCUGW_EIO; /* peer closed: poll said readable, read says EOF */
        return (int)n;
}

static uint32_t posix_now_ms(void *ctx)
{
        struct timespec ts;

        (void)ctx;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void mcugw_posix_port_init(struct mcugw_device_port *port, struct mcugw_posix_link *link, int fd)
{
        link->fd = fd;
        memset(port, 0, sizeof(*port));
        port->ctx = link;
        port->send = posix_send;
        port->recv = posix_recv;
        port->now_ms = posix_now_ms;
        port->crypto = &mcugw_crypto_openssl;
}
