/* SPDX-License-Identifier: Apache-2.0 */
/* Gateway credentials from files and from a real PKCS#11 token (SoftHSM2, initialised here). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "basic/cred.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

static char dir[64];

static void sh(const char *fmt, ...)
{
        char cmd[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("command failed: %s", cmd);
}

static int setup(void **state)
{
        snprintf(dir, sizeof dir, "/tmp/mcugw-test-cred-XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        /* A self-signed EC certificate and its key, a PKCS#8 copy for the token. */
        sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout key.pem -out cert.pem -days 2 -subj /CN=gw >/dev/null 2>&1 && "
           "chmod 600 key.pem && openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8",
           dir);
        /* A private SoftHSM2 token store. */
        sh("cd %s && mkdir tokens && printf 'directories.tokendir = %s/tokens\\n"
           "objectstore.backend = file\\nlog.level = ERROR\\n' > softhsm2.conf",
           dir, dir);
        char conf[128];
        snprintf(conf, sizeof conf, "%s/softhsm2.conf", dir);
        setenv("SOFTHSM2_CONF", conf, 1);
        sh("softhsm2-util --init-token --free --label mcugw --pin 1234 --so-pin 5678 >/dev/null");
        sh("softhsm2-util --import %s/key.p8 --token mcugw --label gwkey --id 01 --pin 1234 "
           ">/dev/null",
           dir);
        return 0;
}

static int teardown(void **state)
{
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd);
}

static void path(char *out, size_t n, const char *name)
{
        snprintf(out, n, "%s/%s", dir, name);
}

static void test_file_key(void **state)
{
        char key[128], cert[128], err[256];
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        path(key, sizeof key, "key.pem");
        path(cert, sizeof cert, "cert.pem");
        assert_int_equal(cred_ssl_ctx_use(ctx, cert, key, NULL, err, sizeof err), 0);
        SSL_CTX_free(ctx);
}

static void test_file_key_permissions(void **state)
{
        char key[128], err[256];
        EVP_PKEY *k = NULL;

        path(key, sizeof key, "key.pem");
        chmod(key, 0640);
        assert_int_equal(cred_load_private_key(key, NULL, &k, err, sizeof err), -EPERM);
        assert_null(k);
        assert_non_null(strstr(err, "mode 0640"));
        assert_non_null(strstr(err, "chmod 600"));
        chmod(key, 0600);
        assert_int_equal(cred_load_private_key(key, NULL, &k, err, sizeof err), 0);
        EVP_PKEY_free(k);
}

static void test_pkcs11_key(void **state)
{
        char cert[128], err[256];
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        EVP_PKEY *k = NULL;
        unsigned char sig[128];
        size_t siglen = sizeof sig;
        EVP_MD_CTX *md = EVP_MD_CTX_new();

        path(cert, sizeof cert, "cert.pem");
        assert_int_equal(cred_ssl_ctx_use(ctx, cert,
                                          "pkcs11:token=mcugw;object=gwkey;type=private"
                                          "?pin-value=1234",
                                          SOFTHSM_MODULE, err, sizeof err),
                         0);
        SSL_CTX_free(ctx);

        /* The key really lives in the token: it signs. */
        assert_int_equal(cred_load_private_key("pkcs11:token=mcugw;object=gwkey;type=private"
                                               "?pin-value=1234",
                                               SOFTHSM_MODULE, &k, err, sizeof err),
                         0);
        assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k), 1);
        assert_int_equal(EVP_DigestSign(md, sig, &siglen, (const unsigned char *)"x", 1), 1);
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(k);

        /* … with the key of the certificate: the public key verifies what the token signed, and
         * not a signature over other data. */
        X509 *x = NULL;
        assert_int_equal(cred_load_certificate(cert, &x, err, sizeof err), 0);
        md = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)),
                         1);
        assert_int_equal(EVP_DigestVerify(md, sig, siglen, (const unsigned char *)"x", 1), 1);
        EVP_MD_CTX_free(md);
        md = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)),
                         1);
        assert_int_not_equal(EVP_DigestVerify(md, sig, siglen, (const unsigned char *)"y", 1), 1);
        EVP_MD_CTX_free(md);
        X509_free(x);
}

static void test_pkcs11_wrong_pin(void **state)
{
        char err[256];
        EVP_PKEY *k = NULL;

        assert_int_equal(cred_load_private_key("pkcs11:token=mcugw;object=gwkey;type=private"
                                               "?pin-value=0000",
                                               SOFTHSM_MODULE, &k, err, sizeof err),
                         -EACCES);
        assert_null(k);
        assert_non_null(strstr(err, "wrong PIN"));
        assert_null(strstr(err, "0000")); /* the PIN is never repeated */
        /* A token or key that does not exist is not a wrong PIN: the error says what is missing. */
        assert_int_equal(cred_load_private_key("pkcs11:token=nope;object=gwkey;type=private"
                                               "?pin-value=1234",
                                               SOFTHSM_MODULE, &k, err, sizeof err),
                         -ENOENT);
        assert_non_null(strstr(err, "no such token or key"));
        assert_null(k);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_file_key),
                cmocka_unit_test(test_file_key_permissions),
                /* First: libp11 keeps a token logged in for the life of the process. */
                cmocka_unit_test(test_pkcs11_wrong_pin),
                cmocka_unit_test(test_pkcs11_key),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
