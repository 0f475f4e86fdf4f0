/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "daemon/conf.h"
#include "devices/onboard.h"

static char dir[64], pem_acme[128], pem_other[128];
static EVP_PKEY *acme, *other;
static const uint8_t dev_pub[32] = { 1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31 };

static void write_pub(EVP_PKEY *k, const char *path)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_PUBKEY(f, k), 1);
        fclose(f);
}

static int setup(void **state)
{
        snprintf(dir, sizeof dir, "/tmp/mcugw-test-onboard-XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        acme = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        snprintf(pem_acme, sizeof pem_acme, "%s/acme.pem", dir);
        snprintf(pem_other, sizeof pem_other, "%s/other.pem", dir);
        write_pub(acme, pem_acme);
        write_pub(other, pem_other);
        return 0;
}

static int teardown(void **state)
{
        char cmd[128];
        EVP_PKEY_free(acme);
        EVP_PKEY_free(other);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd);
}

static struct onboard *make(const char *extra)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        struct onboard *o = NULL;
        char text[1024];

        snprintf(text, sizeof text,
                 "[Onboarding]\nPolicy=pending\nManufacturerKey=acme:%s\n"
                 "ManufacturerKey=old-line:%s\n%s",
                 pem_acme, pem_other, extra);
        assert_int_equal(conf_load_string("t.conf", text, &c, &e), 0);
        assert_int_equal(onboard_new(&c->onboarding, &o, &e), 0);
        conf_free(c);
        return o;
}

static void test_sign_verify(void **state)
{
        struct onboard *o = make("");
        uint8_t att[ONBOARD_ATTEST_MAX], bad[ONBOARD_ATTEST_MAX], other_pub[32];
        const char *kid = NULL, *why = NULL;
        int n = onboard_attest_sign(acme, "acme", "dev-1", dev_pub, att, sizeof att);

        assert_int_equal(n, 2 + 4 + 64);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why), 0);
        assert_string_equal(kid, "acme");
        assert_int_equal(onboard_policy(o), ONBOARD_PENDING);

        /* Bound to the id and to the key. */
        assert_int_equal(onboard_verify(o, "dev-2", 5, dev_pub, att, (size_t)n, &kid, &why),
                         -EACCES);
        memcpy(other_pub, dev_pub, 32);
        other_pub[0] ^= 1;
        assert_int_equal(onboard_verify(o, "dev-1", 5, other_pub, att, (size_t)n, &kid, &why),
                         -EACCES);
        assert_string_equal(why, "attestation signature does not verify");

        /* Tampered signature, truncated, unknown version, unknown key id. */
        memcpy(bad, att, (size_t)n);
        bad[n - 1] ^= 0x40;
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, bad, (size_t)n, &kid, &why),
                         -EACCES);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n - 1, &kid, &why),
                         -EBADMSG);
        memcpy(bad, att, (size_t)n);
        bad[0] = 2;
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, bad, (size_t)n, &kid, &why),
                         -EBADMSG);
        n = onboard_attest_sign(acme, "nobody", "dev-1", dev_pub, att, sizeof att);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why),
                         -EACCES);
        assert_string_equal(why, "attestation by an untrusted manufacturer key");
        /* Signed by the wrong private key under a trusted id. */
        n = onboard_attest_sign(other, "acme", "dev-1", dev_pub, att, sizeof att);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why),
                         -EACCES);
        /* No attestation at all. */
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, NULL, 0, &kid, &why), -ENOENT);
        onboard_free(o);
}

static void test_revoked(void **state)
{
        struct onboard *o = make("RevokedManufacturerKey=old-line\n");
        uint8_t att[ONBOARD_ATTEST_MAX];
        const char *kid = NULL, *why = NULL;
        int n = onboard_attest_sign(other, "old-line", "dev-1", dev_pub, att, sizeof att);

        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why),
                         -EKEYREVOKED);
        assert_string_equal(why, "attestation by a revoked manufacturer key");
        n = onboard_attest_sign(acme, "acme", "dev-1", dev_pub, att, sizeof att);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why), 0);
        onboard_free(o);
}

static void test_policy_off_and_config_errors(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        struct onboard *o = NULL;
        uint8_t att[ONBOARD_ATTEST_MAX];
        const char *kid, *why;
        char text[512];
        int n;

        assert_int_equal(conf_load_string("t.conf", "", &c, &e), 0);
        assert_int_equal(onboard_new(&c->onboarding, &o, &e), 0);
        n = onboard_attest_sign(acme, "acme", "dev-1", dev_pub, att, sizeof att);
        assert_int_equal(onboard_verify(o, "dev-1", 5, dev_pub, att, (size_t)n, &kid, &why),
                         -ENOENT);
        onboard_free(o);
        conf_free(c);

        snprintf(text, sizeof text,
                 "[Onboarding]\nManufacturerKey=nocolon\n"
                 "ManufacturerKey=x:/nonexistent.pem\n");
        assert_int_equal(conf_load_string("t.conf", text, &c, &e), 0);
        assert_int_equal(onboard_new(&c->onboarding, &o, &e), -EINVAL);
        assert_int_equal(e.n, 2);
        conf_errors_clear(&e);
        conf_free(c);
        assert_int_equal(conf_load_string("t.conf", "[Onboarding]\nPolicy=maybe\n", &c, &e),
                         -EINVAL);
        conf_errors_clear(&e);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sign_verify),
                cmocka_unit_test(test_revoked),
                cmocka_unit_test(test_policy_off_and_config_errors),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
