/* SPDX-License-Identifier: Apache-2.0 */
/* Fleet provisioning helpers: the CSR (P-256, CN, self-signature), certificate info, and the
 * crash-recovery rules for an interrupted certificate switch (docs/provisioning.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "daemon/conf.h"
#include "cloud/cborjson.h"
#include "cloud/provision.h"

static char dir[64];

static void sh(const char *fmt, ...)
{
        char cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("command failed: %s", cmd);
}

static void touch(const char *name, const char *text)
{
        char p[128];
        FILE *f;
        snprintf(p, sizeof p, "%s/%s", dir, name);
        f = fopen(p, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int present(const char *name)
{
        char p[128];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        return access(p, F_OK) == 0;
}

static void test_csr(void **state)
{
        EVP_PKEY *key = NULL, *pub;
        char *pem = NULL, cn[64];
        X509_REQ *req;
        BIO *bio;

        assert_int_equal(provision_make_csr("gw-7", &key, &pem), 0);
        assert_non_null(strstr(pem, "BEGIN CERTIFICATE REQUEST"));
        assert_null(strstr(pem, "PRIVATE KEY"));
        bio = BIO_new_mem_buf(pem, -1);
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        assert_non_null(req);
        pub = X509_REQ_get0_pubkey(req);
        assert_int_equal(X509_REQ_verify(req, pub), 1);
        assert_int_equal(EVP_PKEY_eq(pub, key), 1);
        assert_int_equal(EVP_PKEY_get_bits(key), 256);
        X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
        assert_string_equal(cn, "gw-7");
        X509_REQ_free(req);
        BIO_free(bio);
        EVP_PKEY_free(key);
        free(pem);
}

static void test_cert_info(void **state)
{
        char p[128], err[256];
        json_t *o;

        sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout k.pem -out c.pem -days 10 -subj /CN=gw-info >/dev/null 2>&1",
           dir);
        snprintf(p, sizeof p, "%s/c.pem", dir);
        o = provision_cert_info(p, err, sizeof err);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "subject")), "CN=gw-info");
        assert_in_range(json_integer_value(json_object_get(o, "expires_in_ms")) / 86400000, 9, 10);
        assert_int_equal(strlen(json_string_value(json_object_get(o, "fingerprint_sha256"))),
                         32 * 3 - 1);
        json_decref(o);
        snprintf(p, sizeof p, "%s/k.pem", dir);
        assert_null(provision_cert_info(p, err, sizeof err));
        assert_non_null(strstr(err, "not a PEM certificate"));
}

static void recover(void)
{
        char text[512];
        struct conf *c = NULL;
        struct conf_errors err = { 0 };

        snprintf(text, sizeof text,
                 "[MQTT]\nHost=127.0.0.1\nCAFile=%s/ca\nCertificateFile=%s/m.crt\n"
                 "KeyFile=%s/m.key\n",
                 dir, dir, dir);
        assert_int_equal(conf_load_string("t", text, &c, &err), 0);
        provision_recover(&c->relay);
        conf_free(c);
}

static void test_recover(void **state)
{
        /* Both .new: the switch was not committed: discarded, the old pair stays. */
        touch("m.crt", "old");
        touch("m.key", "old");
        touch("m.crt.new", "new");
        touch("m.key.new", "new");
        recover();
        assert_false(present("m.crt.new"));
        assert_false(present("m.key.new"));
        assert_true(present("m.crt"));
        /* Only the certificate's .new: the key was renamed already; the certificate follows. */
        touch("m.crt.new", "new");
        recover();
        assert_false(present("m.crt.new"));
        {
                char p[128], buf[8] = "";
                FILE *f;
                snprintf(p, sizeof p, "%s/m.crt", dir);
                f = fopen(p, "r");
                assert_non_null(fgets(buf, sizeof buf, f));
                fclose(f);
                assert_string_equal(buf, "new");
        }
        /* Only the key's .new: a crash while writing: deleted. */
        touch("m.key.new", "partial");
        recover();
        assert_false(present("m.key.new"));
}

static int setup(void **state)
{
        snprintf(dir, sizeof dir, "/tmp/mcugw-test-prov-XXXXXX");
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
        sh("rm -rf %s", dir);
        return 0;
}

/* The fleet provisioning API's CBOR flavour: what we send, what AWS answers. */
static void test_cborjson(void **state)
{
        /* {"certificateOwnershipToken": "tok", "parameters": {"SerialNumber": "SN-1"}} */
        static const uint8_t reg[] = { 0xa2, 0x78, 0x19, 'c', 'e', 'r', 't',  'i', 'f', 'i', 'c',
                                       'a',  't',  'e',  'O', 'w', 'n', 'e',  'r', 's', 'h', 'i',
                                       'p',  'T',  'o',  'k', 'e', 'n', 0x63, 't', 'o', 'k', 0x6a,
                                       'p',  'a',  'r',  'a', 'm', 'e', 't',  'e', 'r', 's', 0xa1,
                                       0x6c, 'S',  'e',  'r', 'i', 'a', 'l',  'N', 'u', 'm', 'b',
                                       'e',  'r',  0x64, 'S', 'N', '-', '1' };
        json_t *o = json_pack("{ss s{ss}}", "certificateOwnershipToken", "tok", "parameters",
                              "SerialNumber", "SN-1");
        json_t *back, *rej;
        uint8_t *buf = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(cborjson_encode(o, &buf, &len), 0);
        assert_int_equal(len, sizeof reg);
        assert_memory_equal(buf, reg, len);
        back = cborjson_decode(buf, len);
        assert_true(json_equal(back, o));
        json_decref(back);
        /* trailing bytes, truncation: refused */
        assert_null(cborjson_decode(buf, len - 1));
        free(buf);
        json_decref(o);
        /* {"statusCode": 400, "errorCode": "InvalidCSR", "ok": false, "n": -2, "x": null} */
        o = json_pack("{si ss sb si sn}", "statusCode", 400, "errorCode", "InvalidCSR", "ok", 0,
                      "n", -2, "x");
        assert_int_equal(cborjson_encode(o, &buf, &len), 0);
        rej = cborjson_decode(buf, len);
        assert_true(json_equal(rej, o));
        json_decref(rej);
        json_decref(o);
        {
                uint8_t *more = realloc(buf, len + 1);
                assert_non_null(more);
                more[len] = 0;
                assert_null(cborjson_decode(more, len + 1));
                free(more);
        }
        /* a map with a non-text key, nesting beyond the limit */
        {
                static const uint8_t intkey[] = { 0xa1, 0x01, 0x02 };
                uint8_t deep[CBORJSON_DEPTH_MAX + 3];
                assert_null(cborjson_decode(intkey, sizeof intkey));
                memset(deep, 0x81, sizeof deep - 1);
                deep[sizeof deep - 1] = 0x01;
                assert_null(cborjson_decode(deep, sizeof deep));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_csr),
                cmocka_unit_test(test_cert_info),
                cmocka_unit_test(test_recover),
                cmocka_unit_test(test_cborjson),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
