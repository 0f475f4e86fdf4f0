/* SPDX-License-Identifier: Apache-2.0 */
/* OTA pure parts: job documents, CBOR stream codec, MCUboot parser, signature check, cache. */
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
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "daemon/conf.h"
#include "store/db.h"
#include "ota/ota_cache.h"
#include "ota/ota_jobdoc.h"
#include "ota/ota_jobs.h"
#include "ota/ota_mcuboot.h"
#include "ota/ota_stream.h"
#include "ota/ota_verify.h"

/* ---- job documents ------------------------------------------------------------------------ */

/* What AWS CreateOTAUpdate puts into the job (MQTT protocol, code signing by AWS Signer). */
static const char aws_doc[] =
        "{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"AFR_OTA-0f7c3e6a\","
        "\"files\":[{\"filepath\":\"/firmware.bin\",\"filesize\":181853,\"fileid\":0,"
        "\"certfile\":\"ecdsasigner.crt\",\"update_data_url\":null,\"auth_scheme\":null,"
        "\"sig-sha256-ecdsa\":\"MEUCIQBFQ0nkIvBSlxkerRPiHT21IOWr71IFXklkuC+yE/WToQIgBDpxh3TFcr2K"
        "Ja2+sb/NXAJWrhHOz5+cP5JdDlK+r4k=\"}]}}";

static void test_jobdoc_aws(void **state)
{
        struct ota_jobdoc d;
        char err[200] = "";

        assert_int_equal(ota_jobdoc_parse(aws_doc, strlen(aws_doc), &d, err, sizeof err), 0);
        assert_true(d.mqtt);
        assert_false(d.http);
        assert_string_equal(d.streamname, "AFR_OTA-0f7c3e6a");
        assert_int_equal(d.n_files, 1);
        assert_string_equal(d.files[0].filepath, "/firmware.bin");
        assert_string_equal(d.files[0].certfile, "ecdsasigner.crt");
        assert_int_equal(d.files[0].filesize, 181853);
        assert_int_equal(d.files[0].fileid, 0);
        assert_int_equal(d.files[0].sig_len, 71);
        assert_int_equal(d.files[0].sig[0], 0x30);
        assert_null(d.devices);
        ota_jobdoc_clear(&d);
}

static void test_jobdoc_targets(void **state)
{
        const char *doc = "{\"afr_ota\":{\"protocols\":[\"MQTT\",\"HTTP\"],\"streamname\":\"s\","
                          "\"files\":[{\"filesize\":10,\"fileid\":3}]},"
                          "\"mcugw\":{\"devices\":[\"a\",\"b\"],\"groups\":[\"g\"]}}";
        struct ota_jobdoc d;
        char err[200];

        assert_int_equal(ota_jobdoc_parse(doc, strlen(doc), &d, err, sizeof err), 0);
        assert_int_equal(d.n_devices, 2);
        assert_string_equal(d.devices[1], "b");
        assert_int_equal(d.n_groups, 1);
        assert_string_equal(d.groups[0], "g");
        assert_int_equal(d.files[0].sig_len, 0);
        ota_jobdoc_clear(&d);
}

static void expect_bad(const char *doc, const char *needle)
{
        struct ota_jobdoc d;
        char err[200] = "";

        assert_int_equal(ota_jobdoc_parse(doc, strlen(doc), &d, err, sizeof err), -EBADMSG);
        if (!strstr(err, needle))
                fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void test_jobdoc_errors(void **state)
{
        expect_bad("[]", "not a JSON object");
        expect_bad("{", "not JSON");
        expect_bad("{\"x\":1}", "afr_ota");
        expect_bad("{\"afr_ota\":{\"protocols\":[],\"files\":[]}}", "protocols");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"files\":[]}}", "streamname");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[]}}",
                   "files");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[{"
                   "\"fileid\":0}]}}",
                   "filesize");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[{"
                   "\"fileid\":0,\"filesize\":-1}]}}",
                   "filesize");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[{"
                   "\"fileid\":0,\"filesize\":5,\"sig-sha256-ecdsa\":\"!!!!\"}]}}",
                   "base64");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[{"
                   "\"fileid\":0,\"filesize\":5,\"sig-sha1-rsa\":\"AAAA\"}]}}",
                   "unsupported signature");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"HTTP\"],\"files\":[{"
                   "\"fileid\":0,\"filesize\":5}]}}",
                   "MQTT");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"files\":[{"
                   "\"fileid\":0,\"filesize\":5}]},\"mcugw\":{\"devices\":[1]}}",
                   "devices[0]");
        expect_bad("{\"afr_ota\":{\"protocols\":[\"MQTT\"],\"streamname\":\"s\",\"streamname\":"
                   "\"t\",\"files\":[]}}",
                   "not JSON");
}

/* ---- CBOR streams -------------------------------------------------------------------------- */

static void test_stream_request(void **state)
{
        struct ota_stream_request q = { .client_token = "rdy",
                                        .file_id = 0,
                                        .block_size = 4096,
                                        .offset = 0,
                                        .n_blocks = 2,
                                        .bitmap = { 0x03 },
                                        .bitmap_len = 1 };
        struct ota_stream_request back;
        /* a6 61 63 63 'rdy' 61 66 00 61 6c 19 10 00 61 6f 00 61 62 41 03 61 6e 02 */
        static const uint8_t expect[] = { 0xa6, 0x61, 'c',  0x63, 'r',  'd',  'y',  0x61, 'f',
                                          0x00, 0x61, 'l',  0x19, 0x10, 0x00, 0x61, 'o',  0x00,
                                          0x61, 'b',  0x41, 0x03, 0x61, 'n',  0x02 };
        uint8_t *buf;
        size_t len;

        assert_int_equal(ota_stream_encode_request(&q, &buf, &len), 0);
        assert_int_equal(len, sizeof expect);
        assert_memory_equal(buf, expect, sizeof expect);
        assert_int_equal(ota_stream_decode_request(buf, len, &back), 0);
        assert_string_equal(back.client_token, "rdy");
        assert_int_equal(back.block_size, 4096);
        assert_int_equal(back.bitmap_len, 1);
        assert_int_equal(back.bitmap[0], 3);
        assert_int_equal(back.n_blocks, 2);
        /* truncated and trailing bytes */
        assert_int_equal(ota_stream_decode_request(buf, len - 1, &back), -EBADMSG);
        free(buf);
        q.block_size = 100;
        assert_int_equal(ota_stream_encode_request(&q, &buf, &len), -EINVAL);
        q.block_size = 4096;
        q.n_blocks = 99;
        assert_int_equal(ota_stream_encode_request(&q, &buf, &len), -EINVAL);
}

static void test_stream_data(void **state)
{
        uint8_t payload[300], *buf, copy[400];
        struct ota_stream_data d = { .file_id = 1,
                                     .block = 7,
                                     .len = sizeof payload,
                                     .payload = payload },
                               back;
        size_t len;

        for (size_t i = 0; i < sizeof payload; i++)
                payload[i] = (uint8_t)i;
        assert_int_equal(ota_stream_encode_data(&d, &buf, &len), 0);
        assert_int_equal(ota_stream_decode_data(buf, len, &back), 0);
        assert_int_equal(back.file_id, 1);
        assert_int_equal(back.block, 7);
        assert_int_equal(back.len, 300);
        assert_memory_equal(back.payload, payload, 300);
        /* every truncation fails cleanly */
        for (size_t n = 0; n < len; n++)
                assert_int_equal(ota_stream_decode_data(buf, n, &back), -EBADMSG);
        /* trailing garbage */
        memcpy(copy, buf, len);
        copy[len] = 0;
        assert_int_equal(ota_stream_decode_data(copy, len + 1, &back), -EBADMSG);
        free(buf);
        /* l disagreeing with p */
        static const uint8_t lie[] = { 0xa4, 0x61, 'f',  0x00, 0x61, 'i',  0x00, 0x61,
                                       'l',  0x05, 0x61, 'p',  0x42, 0x01, 0x02 };
        assert_int_equal(ota_stream_decode_data(lie, sizeof lie, &back), -EBADMSG);
        /* duplicate keys */
        static const uint8_t dup[] = { 0xa4, 0x61, 'f',  0x00, 0x61, 'f',  0x00,
                                       0x61, 'l',  0x01, 0x61, 'p',  0x41, 0x01 };
        assert_int_equal(ota_stream_decode_data(dup, sizeof dup, &back), -EBADMSG);
        /* a map claiming 2^32 pairs in 9 bytes */
        static const uint8_t huge[] = { 0xba, 0xff, 0xff, 0xff, 0xff, 0x61, 'f', 0x00, 0x00 };
        assert_int_equal(ota_stream_decode_data(huge, sizeof huge, &back), -EBADMSG);
        /* a byte string longer than the input */
        static const uint8_t longbs[] = { 0xa1, 0x61, 'p', 0x5a, 0x00, 0x10, 0x00, 0x00, 0x01 };
        assert_int_equal(ota_stream_decode_data(longbs, sizeof longbs, &back), -EBADMSG);
}

static void test_stream_rejected(void **state)
{
        static const uint8_t rej[] = { 0xa2, 0x61, 'o', 0x68, 'N',  'o', 't',  'F',
                                       'o',  'u',  'n', 'd',  0x61, 'c', 0x61, 'x' };
        struct ota_stream_rejected r;

        assert_int_equal(ota_stream_decode_rejected(rej, sizeof rej, &r), 0);
        assert_string_equal(r.code, "NotFound");
        assert_string_equal(r.client_token, "x");
}

static void test_stream_plan(void **state)
{
        uint8_t have[32] = { 0 };
        struct ota_stream_request q = { 0 };

        /* blocks 0,1,3 present of 20: asks 2,4,5,... up to 4 */
        have[0] = 0x0b;
        assert_int_equal(ota_stream_plan_request(have, 20, 4, &q), 4);
        assert_int_equal(q.offset, 2);
        assert_int_equal(q.bitmap[0], 0x1d); /* blocks 2,4,5,6 relative 0,2,3,4 */
        assert_int_equal(q.bitmap_len, 1);
        memset(have, 0xff, 3);
        have[2] = 0x0f; /* 0..19 present */
        assert_int_equal(ota_stream_plan_request(have, 20, 4, &q), 0);
}

/* ---- MCUboot ------------------------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
        put16(p, (uint16_t)v);
        put16(p + 2, (uint16_t)(v >> 16));
}

/* header 32 | image 64 | protected: info + sec cnt | tlv: info + sha256 */
static size_t make_image(uint8_t *b, uint32_t sec)
{
        size_t o = 0;

        memset(b, 0, 256);
        put32(b, OTA_MCUBOOT_MAGIC);
        put16(b + 8, 32);
        put16(b + 10, 4 + 8);
        put32(b + 12, 64);
        b[20] = 1;
        b[21] = 2;
        put16(b + 22, 3);
        put32(b + 24, 4);
        o = 32;
        memset(b + o, 0xab, 64);
        o += 64;
        put16(b + o, OTA_MCUBOOT_TLV_PROT);
        put16(b + o + 2, 12);
        put16(b + o + 4, OTA_MCUBOOT_TLV_SEC_CNT);
        put16(b + o + 6, 4);
        put32(b + o + 8, sec);
        o += 12;
        put16(b + o, OTA_MCUBOOT_TLV_INFO);
        put16(b + o + 2, 4 + 4 + 32);
        put16(b + o + 4, OTA_MCUBOOT_TLV_SHA256);
        put16(b + o + 6, 32);
        ota_sha256_buffer(b, o, b + o + 8);
        return o + 40;
}

static void test_mcuboot(void **state)
{
        uint8_t b[256];
        size_t n = make_image(b, 7);
        struct ota_mcuboot_info info;
        struct ota_mcuboot_version v;
        char err[128], s[32];
        uint8_t h[32];

        assert_true(ota_mcuboot_is_image(b, n));
        assert_int_equal(ota_mcuboot_parse(b, n, &info, err, sizeof err), 0);
        assert_int_equal(info.version.major, 1);
        assert_int_equal(info.version.minor, 2);
        assert_int_equal(info.version.revision, 3);
        assert_int_equal(info.version.build, 4);
        assert_true(info.has_sec_cnt);
        assert_int_equal(info.sec_cnt, 7);
        assert_int_equal(info.hashed_len, 32 + 64 + 12);
        ota_sha256_buffer(b, info.hashed_len, h);
        assert_memory_equal(h, info.sha256, 32);
        ota_mcuboot_version_str(&info.version, s, sizeof s);
        assert_string_equal(s, "1.2.3+4");
        /* every truncation is refused */
        for (size_t k = 0; k < n; k++)
                assert_int_equal(ota_mcuboot_parse(b, k, &info, err, sizeof err), -EBADMSG);
        /* TLV overrunning its area */
        put16(b + 32 + 64 + 12 + 6, 33);
        assert_int_equal(ota_mcuboot_parse(b, n, &info, err, sizeof err), -EBADMSG);
        make_image(b, 7);
        b[0] ^= 1;
        assert_int_equal(ota_mcuboot_parse(b, n, &info, err, sizeof err), -EBADMSG);
        assert_non_null(strstr(err, "magic"));

        assert_int_equal(ota_mcuboot_version_parse("sim-1.0.0", &v), 0);
        assert_int_equal(v.major, 1);
        assert_int_equal(ota_mcuboot_version_parse("2.1.7+9", &v), 0);
        assert_int_equal(v.build, 9);
        assert_int_equal(ota_mcuboot_version_parse("2.1", &v), -EINVAL);
        assert_int_equal(ota_mcuboot_version_parse("2.1.3x", &v), -EINVAL);
        struct ota_mcuboot_version a = { 1, 2, 3, 0 }, c = { 1, 10, 0, 0 };
        assert_true(ota_mcuboot_version_cmp(&a, &c) < 0);
        assert_true(ota_mcuboot_version_cmp(&c, &a) > 0);
        assert_int_equal(ota_mcuboot_version_cmp(&a, &a), 0);
}

/* ---- signatures ---------------------------------------------------------------------------- */

static EVP_PKEY *make_cert(const char *curve, char **ret_pem)
{
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
        X509 *x = X509_new();
        BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long n;

        assert_non_null(k);
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"code signer", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        X509_set_pubkey(x, k);
        assert_true(X509_sign(x, k, EVP_sha256()) > 0);
        PEM_write_bio_X509(bio, x);
        n = BIO_get_mem_data(bio, &data);
        /* the BIO's memory is not NUL-terminated */
        *ret_pem = malloc((size_t)n + 1);
        assert_non_null(*ret_pem);
        memcpy(*ret_pem, data, (size_t)n);
        (*ret_pem)[n] = 0;
        BIO_free(bio);
        X509_free(x);
        return k;
}

static size_t sign(EVP_PKEY *k, const uint8_t *d, size_t n, uint8_t *sig)
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t sl = 80;

        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
        assert_int_equal(EVP_DigestSign(ctx, sig, &sl, d, n), 1);
        EVP_MD_CTX_free(ctx);
        return sl;
}

static void test_verify(void **state)
{
        char *pem, *pem384, err[160], path[] = "/tmp/test-ota-XXXXXX";
        EVP_PKEY *k = make_cert("P-256", &pem), *k384 = make_cert("P-384", &pem384);
        struct ota_verifier *v, *v2;
        uint8_t data[1000], sig[80], h[32], h2[32];
        size_t sl;
        int fd;

        for (size_t i = 0; i < sizeof data; i++)
                data[i] = (uint8_t)(i * 7);
        sl = sign(k, data, sizeof data, sig);
        assert_int_equal(ota_verifier_new_pem(pem, strlen(pem), &v, err, sizeof err), 0);
        assert_int_equal(ota_verify_buffer(v, data, sizeof data, sig, sl), 0);
        data[10] ^= 1;
        assert_int_equal(ota_verify_buffer(v, data, sizeof data, sig, sl), -EBADMSG);
        data[10] ^= 1;
        assert_int_equal(ota_verify_buffer(v, data, sizeof data, sig, sl - 1), -EBADMSG);

        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, sizeof data), (ssize_t)sizeof data);
        close(fd);
        assert_int_equal(ota_verify_file(v, path, sizeof data, sig, sl, h), 0);
        ota_sha256_buffer(data, sizeof data, h2);
        assert_memory_equal(h, h2, 32);
        /* file shorter than announced */
        assert_int_equal(ota_verify_file(v, path, sizeof data + 1, sig, sl, h), -EBADMSG);
        unlink(path);

        assert_int_equal(ota_verifier_new_pem(pem384, strlen(pem384), &v2, err, sizeof err),
                         -EBADMSG);
        assert_non_null(strstr(err, "P-256"));
        assert_int_equal(ota_verifier_new_pem("junk", 4, &v2, err, sizeof err), -EBADMSG);
        ota_verifier_free(v);
        EVP_PKEY_free(k);
        EVP_PKEY_free(k384);
        free(pem);
        free(pem384);
}

/* ---- cache --------------------------------------------------------------------------------- */

static void test_cache_resume(void **state)
{
        char dir[] = "/tmp/test-ota-cache-XXXXXX", dbp[128], cdir[128];
        struct db *db;
        struct ota_cache *c;
        struct ota_image *img, *again;
        uint8_t block[1000], buf[2600], h[32];
        char hex[65];

        assert_non_null(mkdtemp(dir));
        snprintf(dbp, sizeof dbp, "%s/s.db", dir);
        snprintf(cdir, sizeof cdir, "%s/cache", dir);
        for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = (uint8_t)(i * 13 + 1);

        assert_int_equal(db_open(NULL, dbp, 2, 0, &db), 0);
        assert_int_equal(ota_cache_open(db, cdir, 1 << 20, &c), 0);
        assert_int_equal(ota_cache_begin(c, "dl-abc", sizeof buf, 1000, &img), 0);
        assert_int_equal(ota_image_blocks(img), 3);
        /* wrong lengths, wrong index */
        assert_int_equal(ota_image_write_block(img, 0, buf, 999), -EBADMSG);
        assert_int_equal(ota_image_write_block(img, 3, buf, 1000), -EBADMSG);
        assert_int_equal(ota_image_write_block(img, 2, buf + 2000, 1000), -EBADMSG);
        /* out of order + duplicate */
        assert_int_equal(ota_image_write_block(img, 2, buf + 2000, 600), 1);
        assert_int_equal(ota_image_write_block(img, 2, buf + 2000, 600), 0);
        assert_int_equal(ota_image_write_block(img, 0, buf, 1000), 1);
        assert_int_equal(ota_image_finish(img), -EAGAIN);
        db_commit(db);
        /* "crash": drop everything without finishing */
        ota_image_unref(img);
        ota_cache_free(c);
        db_close(db);

        assert_int_equal(db_open(NULL, dbp, 2, 0, &db), 0);
        assert_int_equal(ota_cache_open(db, cdir, 1 << 20, &c), 0);
        assert_int_equal(ota_cache_lookup(c, "dl-abc", &again), -ENOENT); /* not finished */
        assert_int_equal(ota_cache_begin(c, "dl-abc", sizeof buf, 1000, &img), 0);
        assert_int_equal(ota_image_blocks_have(img), 2);
        assert_int_equal(ota_image_bitmap(img)[0], 0x05);
        memcpy(block, buf + 1000, 1000);
        assert_int_equal(ota_image_write_block(img, 1, block, 1000), 1);
        assert_int_equal(ota_image_finish(img), 0);
        ota_sha256_buffer(buf, sizeof buf, h);
        ota_hex(h, 32, hex);
        assert_string_equal(ota_image_sha256(img), hex);
        /* found by hash as well */
        assert_int_equal(ota_cache_lookup(c, hex, &again), 0);
        assert_ptr_equal(again, img);
        ota_image_unref(again);
        {
                uint8_t rb[100];
                assert_int_equal(ota_image_read(img, 2550, rb, sizeof rb), 50);
                assert_memory_equal(rb, buf + 2550, 50);
        }
        ota_image_unref(img);
        db_commit(db);
        assert_int_equal(ota_cache_lookup(c, hex, &again), 0);
        assert_string_equal(ota_image_key(again), "dl-abc");
        ota_image_unref(again);
        /* too big for the cache */
        assert_int_equal(ota_cache_begin(c, "dl-big", 2 << 20, 4096, &img), -ENOSPC);
        /* eviction: a second 600 KiB image pushes the first (unused) one out */
        assert_int_equal(ota_cache_begin(c, "dl-x", 600 << 10, 4096, &img), 0);
        assert_int_equal(ota_cache_begin(c, "dl-y", 600 << 10, 4096, &again), 0);
        ota_image_unref(img);
        ota_image_unref(again);
        assert_true(ota_cache_bytes(c) <= (1 << 20) + (600 << 10));
        ota_cache_free(c);
        db_close(db);
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_thing_and_topics(void **state)
{
        char out[64], thing[64], kind[16], name[64];
        const char *rest;

        assert_int_equal(ota_thing_name("{gateway}-{device}", "gw", "s-1", out, sizeof out), 0);
        assert_string_equal(out, "gw-s-1");
        assert_int_equal(ota_thing_name("x{device}", "gw", "a/b", out, sizeof out), -EINVAL);
        assert_int_equal(ota_thing_name("{gateway}{gateway}{gateway}", "0123456789012345678901",
                                        NULL, out, sizeof out),
                         -ENAMETOOLONG);
        /* The inverse: a thing name back to the device, only for this gateway's pattern. */
        assert_int_equal(ota_thing_device("{gateway}-{device}", "gw", "gw-s-1", out, sizeof out),
                         0);
        assert_string_equal(out, "s-1");
        assert_int_equal(ota_thing_device("{gateway}-{device}", "gw", "gw2-s-1", out, sizeof out),
                         -ENOENT);
        assert_int_equal(ota_thing_device("{gateway}-{device}", "gw", "gw-", out, sizeof out),
                         -ENOENT);
        assert_int_equal(ota_thing_device("{gateway}-{device}", "gw", "gw", out, sizeof out),
                         -ENOENT);
        assert_int_equal(ota_thing_device("mcu-{device}-at-{gateway}", "gw", "mcu-s-1-at-gw", out,
                                          sizeof out),
                         0);
        assert_string_equal(out, "s-1");
        assert_int_equal(ota_thing_device("mcu-{device}-at-{gateway}", "gw", "mcu-s-1-at-gw2", out,
                                          sizeof out),
                         -ENOENT);
        assert_int_equal(ota_thing_device("{device}", "gw", "s-9", out, sizeof out), 0);
        assert_string_equal(out, "s-9");
        assert_int_equal(ota_thing_device("{device}_{device}", "gw", "a_a", out, sizeof out),
                         -ENOENT); /* ambiguous templates are not inverted */
        assert_int_equal(ota_thing_device("{gateway}", "gw", "gw", out, sizeof out), -ENOENT);
        assert_int_equal(ota_topic_split("$aws/things/gw-1/jobs/notify-next", thing, sizeof thing,
                                         kind, sizeof kind, name, sizeof name, &rest),
                         0);
        assert_string_equal(thing, "gw-1");
        assert_string_equal(kind, "jobs");
        assert_string_equal(name, "notify-next");
        assert_string_equal(rest, "");
        assert_int_equal(ota_topic_split("$aws/things/t/jobs/$next/get/accepted", thing,
                                         sizeof thing, kind, sizeof kind, name, sizeof name, &rest),
                         0);
        assert_string_equal(name, "$next");
        assert_string_equal(rest, "get/accepted");
        assert_int_equal(ota_topic_split("$aws/things/t/streams/AFR_OTA-1/data/cbor", thing,
                                         sizeof thing, kind, sizeof kind, name, sizeof name, &rest),
                         0);
        assert_string_equal(kind, "streams");
        assert_string_equal(rest, "data/cbor");
        assert_int_equal(ota_topic_split("$aws/things//jobs/x", thing, sizeof thing, kind,
                                         sizeof kind, name, sizeof name, &rest),
                         -EINVAL);
        assert_int_equal(ota_topic_split("mcugw/x/jobs/y", thing, sizeof thing, kind, sizeof kind,
                                         name, sizeof name, &rest),
                         -EINVAL);
        assert_int_equal(ota_topic_split("$aws/things/t/jobs", thing, sizeof thing, kind,
                                         sizeof kind, name, sizeof name, &rest),
                         -EINVAL);
}

static void test_conf(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c;

        assert_int_equal(conf_load_string("t.conf",
                                          "[OTA]\nCodeSigningCertificate=/etc/mcugw/signer.crt\n"
                                          "BlockSize=1K\nDownloadBlockSize=64K\nTargeting=gateway\n"
                                          "MaxConcurrent=2\nMaxConcurrentPerLink=1\n"
                                          "AbortAfterFailures=5\nAllowDowngrade=yes\n",
                                          &c, &e),
                         0);
        assert_string_equal(c->ota.signing_cert, "/etc/mcugw/signer.crt");
        assert_int_equal(c->ota.block_size, 1024);
        assert_int_equal(c->ota.download_block, 65536);
        assert_int_equal(c->ota.targeting, 1);
        assert_int_equal(c->ota.max_concurrent, 2);
        assert_int_equal(c->ota.abort_after, 5);
        assert_true(c->ota.allow_downgrade);
        assert_false(c->ota.allow_unsigned);
        assert_string_equal(c->ota.thing_template, "{gateway}-{device}");
        conf_free(c);
        assert_true(conf_load_string("t.conf", "[OTA]\nDownloadBlockSize=256K\n", &c, &e) < 0);
        assert_true(conf_load_string("t.conf", "[OTA]\nTargeting=everyone\n", &c, &e) < 0);
        assert_true(conf_load_string("t.conf", "[OTA]\nThingNameTemplate=a/{device}\n", &c, &e) <
                    0);
        conf_errors_clear(&e);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_jobdoc_aws),       cmocka_unit_test(test_jobdoc_targets),
                cmocka_unit_test(test_jobdoc_errors),    cmocka_unit_test(test_stream_request),
                cmocka_unit_test(test_stream_data),      cmocka_unit_test(test_stream_rejected),
                cmocka_unit_test(test_stream_plan),      cmocka_unit_test(test_mcuboot),
                cmocka_unit_test(test_verify),           cmocka_unit_test(test_cache_resume),
                cmocka_unit_test(test_thing_and_topics), cmocka_unit_test(test_conf),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
