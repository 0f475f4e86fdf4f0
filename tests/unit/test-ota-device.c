/* SPDX-License-Identifier: Apache-2.0 */
/* OTA wire codec and the device-side receiver (flash in memory, OpenSSL crypto port). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "mcugw/ota.h"
#include "posix_openssl.h"
#ifdef OTA_TEST_PSA
#include "psa_mbedtls.h"
#define CRYPTO mcugw_crypto_psa /* the MCU-class port verifies the signature */
#else
#define CRYPTO mcugw_crypto_openssl
#endif

#define IMG_SIZE 5000

struct fake {
        uint8_t flash[8192];
        uint32_t begun, pending, confirmed, reboots;
        struct mcugw_ota_msg last[8];
        uint8_t raw[8][128];
        int n_sent;
        int fail_write;
        int reads, fail_read;
        uint32_t corrupt_at; /* SPI flash: the byte at corrupt_at - 1 is stored flipped */
};

static int f_begin(void *c, uint32_t size)
{
        struct fake *f = c;
        f->begun = size;
        memset(f->flash, 0xff, sizeof f->flash);
        return 0;
}
static int f_write(void *c, uint32_t off, const uint8_t *d, size_t len)
{
        struct fake *f = c;
        if (f->fail_write)
                return -1;
        assert_true(off + len <= sizeof f->flash);
        memcpy(f->flash + off, d, len);
        return 0;
}
static int f_finish(void *c, uint32_t size, uint8_t out[32])
{
        struct fake *f = c;
        return EVP_Digest(f->flash, size, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -1;
}
/* Flash that is not memory-mapped: finish cannot hash, the receiver reads back. */
static int f_finish_spi(void *c, uint32_t size, uint8_t out[32])
{
        assert_null(out);
        return 0;
}
static int f_read(void *c, uint32_t off, uint8_t *buf, size_t len)
{
        struct fake *f = c;

        assert_true(len >= 1 && len <= 64);
        assert_true(off + len <= sizeof f->flash);
        f->reads++;
        if (f->fail_read)
                return -1;
        memcpy(buf, f->flash + off, len);
        if (f->corrupt_at && f->corrupt_at - 1 >= off && f->corrupt_at - 1 < off + len)
                buf[f->corrupt_at - 1 - off] ^= 0x10;
        return 0;
}
static int f_pending(void *c)
{
        ((struct fake *)c)->pending++;
        return 0;
}
static int f_confirm(void *c)
{
        ((struct fake *)c)->confirmed++;
        return 0;
}
static void f_reboot(void *u, uint32_t id)
{
        ((struct fake *)u)->reboots++;
}

/* Capture what the receiver sends; decode it again to check the encoder. */
static int f_send(void *c, const struct mcugw_msg *m)
{
        struct fake *f = c;
        int k = f->n_sent % 8;
        struct mcugw_msg copy = *m;

        assert_true(m->u.raw.len < sizeof f->raw[k]);
        memcpy(f->raw[k], m->u.raw.body, m->u.raw.len);
        copy.u.raw.body = f->raw[k];
        assert_int_equal(mcugw_ota_decode(&copy, &f->last[k]), 0);
        f->n_sent++;
        return 0;
}

static const struct mcugw_ota_msg *last(struct fake *f)
{
        assert_true(f->n_sent > 0);
        return &f->last[(f->n_sent - 1) % 8];
}

static uint8_t image[IMG_SIZE], pub[65], sig[80], sha[32];
static size_t sig_len;

static void make_signed_image(void)
{
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t pl = 0;

        for (size_t i = 0; i < sizeof image; i++)
                image[i] = (uint8_t)(i * 31 + 7);
        EVP_Digest(image, sizeof image, sha, NULL, EVP_sha256(), NULL);
        sig_len = sizeof sig;
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
        assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, image, sizeof image), 1);
        assert_int_equal(
                EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &pl),
                1);
        assert_int_equal(pl, 65);
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(k);
}

static void setup_rx(struct mcugw_ota *o, struct fake *f, const uint8_t *signer)
{
        struct mcugw_ota_config cfg = {
                .flash = { f, f_begin, f_write, f_finish, f_pending, f_confirm, NULL },
                .send = f_send,
                .send_ctx = f,
                .crypto = &CRYPTO,
                .signer_pub = signer,
                .max_size = sizeof f->flash,
                .window = 2048,
                .max_chunk = 512,
                .on_reboot = f_reboot,
                .user = f,
        };
        memset(f, 0, sizeof *f);
        assert_int_equal(mcugw_ota_init(o, &cfg), 0);
}

static int deliver(struct mcugw_ota *o, const struct mcugw_ota_msg *m)
{
        uint8_t buf[1100];
        struct mcugw_msg msg;
        int n = mcugw_ota_encode(m, buf, sizeof buf);

        assert_true(n > 0);
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        return mcugw_ota_handle(o, &msg);
}

/* The largest message a gateway may send to a device with the smallest receive limit. */
#define MSG_MIN_LIMIT (MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD)

static int deliver_more(struct mcugw_ota *o, uint32_t id, const uint8_t *meta, size_t off,
                        size_t len)
{
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_OFFER_MORE };

        m.u.more.transfer_id = id;
        m.u.more.offset = (uint8_t)off;
        m.u.more.data = meta + off;
        m.u.more.len = len;
        return deliver(o, &m);
}

/* OFFER and version || sig in pieces, as the gateway sends them; @skip_piece (or -1) is lost. */
static void offer_lossy(struct mcugw_ota *o, uint32_t id, const uint8_t *s, size_t sl,
                        int skip_piece)
{
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_OFFER };
        uint8_t meta[MCUGW_OTA_META_MAX], buf[1100];
        size_t total = 5 + sl;
        int piece = 0;

        m.u.offer.transfer_id = id;
        m.u.offer.size = IMG_SIZE;
        memcpy(m.u.offer.sha256, sha, 32);
        m.u.offer.flags = MCUGW_OTA_F_TEST_BOOT;
        m.u.offer.version_len = 5;
        m.u.offer.sig_len = sl;
        assert_true(mcugw_ota_encode(&m, buf, sizeof buf) <= (int)MSG_MIN_LIMIT);
        assert_int_equal(deliver(o, &m), 0);
        memcpy(meta, "2.0.0", 5);
        memcpy(meta + 5, s, sl);
        for (size_t off = 0; off < total; off += MCUGW_OTA_MORE_PIECE, piece++) {
                size_t n = total - off < MCUGW_OTA_MORE_PIECE ? total - off : MCUGW_OTA_MORE_PIECE;
                assert_true(MCUGW_OTA_MORE_HDR + n <= MSG_MIN_LIMIT);
                if (piece != skip_piece)
                        assert_int_equal(deliver_more(o, id, meta, off, n), 0);
        }
}

static void offer(struct mcugw_ota *o, uint32_t id, const uint8_t *s, size_t sl)
{
        offer_lossy(o, id, s, sl, -1);
}

static int chunk(struct mcugw_ota *o, uint32_t id, uint32_t off, uint32_t len)
{
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_CHUNK };

        m.u.chunk.transfer_id = id;
        m.u.chunk.offset = off;
        m.u.chunk.data = image + off;
        m.u.chunk.len = len;
        return deliver(o, &m);
}

static void test_codec(void **state)
{
        struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_STATUS }, d;
        uint8_t buf[128];
        struct mcugw_msg msg;
        int n;

        m.u.status = (struct mcugw_ota_status){ .transfer_id = 9,
                                                .state = MCUGW_OTA_ST_FAILED,
                                                .code = 5,
                                                .offset = 77,
                                                .reason = "bad",
                                                .reason_len = 3 };
        n = mcugw_ota_encode(&m, buf, sizeof buf);
        assert_int_equal(n, 16);
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        assert_int_equal(mcugw_ota_decode(&msg, &d), 0);
        assert_int_equal(d.u.status.offset, 77);
        assert_memory_equal(d.u.status.reason, "bad", 3);
        for (size_t k = 0; k < (size_t)n - 1; k++) {
                msg.u.raw.len = k;
                assert_true(mcugw_ota_decode(&msg, &d) < 0);
        }
        msg.u.raw.len = (size_t)n; /* trailing byte */
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);
        /* unknown state, reserved offer flag, zero-length signature */
        m.u.status.state = 9;
        assert_int_equal(mcugw_ota_encode(&m, buf, sizeof buf), MCUGW_EINVAL);
        m.type = MCUGW_MSG_OTA_OFFER;
        m.u.offer = (struct mcugw_ota_offer){
                .transfer_id = 1, .size = 1, .flags = 0x80, .version_len = 5, .sig_len = 8
        };
        assert_int_equal(mcugw_ota_encode(&m, buf, sizeof buf), MCUGW_EINVAL);
        m.u.offer.flags = 0;
        n = mcugw_ota_encode(&m, buf, sizeof buf);
        assert_int_equal(n, (int)MCUGW_OTA_OFFER_LEN);
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        assert_int_equal(mcugw_ota_decode(&msg, &d), 0);
        assert_int_equal(d.u.offer.version_len, 5);
        assert_int_equal(d.u.offer.sig_len, 8);
        msg.u.raw.len = (size_t)n; /* trailing byte */
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);
        msg.u.raw.len = (size_t)n - 2;
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_ETRUNC);
        buf[n - 1] = 0; /* sig_len 0 */
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);
        buf[n - 1] = MCUGW_OTA_SIG_MAX + 1;
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);
        buf[n - 1] = 8;
        buf[n - 2] = MCUGW_OTA_VERSION_MAX + 1;
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);

        /* OFFER_MORE: at least one byte, never beyond version || sig at their longest */
        m.type = MCUGW_MSG_OTA_OFFER_MORE;
        m.u.more =
                (struct mcugw_ota_more){ .transfer_id = 3, .offset = 100, .data = sig, .len = 4 };
        n = mcugw_ota_encode(&m, buf, sizeof buf);
        assert_int_equal(n, (int)MCUGW_OTA_MORE_HDR + 4);
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        assert_int_equal(mcugw_ota_decode(&msg, &d), 0);
        assert_int_equal(d.u.more.offset, 100);
        assert_int_equal(d.u.more.len, 4);
        msg.u.raw.len = MCUGW_OTA_MORE_HDR - 1; /* no data */
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_ETRUNC);
        m.u.more.len = 5;
        assert_int_equal(mcugw_ota_encode(&m, buf, sizeof buf), MCUGW_EINVAL);
        buf[5] = 101;
        msg.u.raw.len = MCUGW_OTA_MORE_HDR + 3;
        assert_int_equal(mcugw_ota_decode(&msg, &d), MCUGW_EMALFORMED);
}

/* At the smallest receive limit the signature needs two pieces; one lost piece only delays the
 * offer until the gateway repeats it, and nothing touches the flash before the last piece. */
static void test_offer_in_pieces(void **state)
{
        struct mcugw_ota o;
        struct fake f;

        make_signed_image();
        assert_true(5 + sig_len > MCUGW_OTA_MORE_PIECE); /* really more than one piece */
        setup_rx(&o, &f, pub);
        offer_lossy(&o, 7, sig, sig_len, 0);
        assert_int_equal(f.begun, 0);
        assert_int_equal(f.n_sent, 0);
        offer_lossy(&o, 7, sig, sig_len, 1);
        assert_int_equal(f.begun, 0);
        assert_int_equal(f.n_sent, 0);
        offer(&o, 7, sig, sig_len);
        assert_int_equal(f.begun, IMG_SIZE);
        assert_int_equal(last(&f)->type, MCUGW_MSG_OTA_CHUNK_ACK);
        assert_int_equal(last(&f)->u.ack.status, MCUGW_OTA_ACK_OK);
        /* a piece beyond what the offer announced is malformed */
        setup_rx(&o, &f, pub);
        {
                struct mcugw_ota_msg m = { .type = MCUGW_MSG_OTA_OFFER };
                m.u.offer.transfer_id = 9;
                m.u.offer.size = IMG_SIZE;
                m.u.offer.version_len = 0;
                m.u.offer.sig_len = 4;
                assert_int_equal(deliver(&o, &m), 0);
                assert_int_equal(deliver_more(&o, 9, sig, 0, 5), MCUGW_EMALFORMED);
                /* pieces of another transfer are ignored */
                assert_int_equal(deliver_more(&o, 10, sig, 0, 4), 0);
                assert_int_equal(f.begun, 0);
        }
        for (uint32_t off = 0; off < IMG_SIZE; off += 500)
                assert_int_equal(chunk(&o, 7, off, 500), MCUGW_ESTATE);
}

static void test_receive_in_order(void **state)
{
        struct mcugw_ota o;
        struct fake f;

        make_signed_image();
        setup_rx(&o, &f, pub);
        offer(&o, 7, sig, sig_len);
        assert_int_equal(f.begun, IMG_SIZE);
        assert_int_equal(last(&f)->type, MCUGW_MSG_OTA_CHUNK_ACK);
        assert_int_equal(last(&f)->u.ack.offset, 0);
        assert_int_equal(last(&f)->u.ack.window, 2048);
        /* 500-byte chunks; a duplicate and an out-of-order chunk on the way */
        assert_int_equal(chunk(&o, 7, 0, 500), 0);
        assert_int_equal(chunk(&o, 7, 0, 500), 0); /* duplicate: ignored */
        int before = f.n_sent;
        assert_int_equal(chunk(&o, 7, 1000, 500), 0); /* gap */
        assert_int_equal(f.n_sent, before + 1);
        assert_int_equal(last(&f)->u.ack.status, MCUGW_OTA_ACK_RESYNC);
        assert_int_equal(last(&f)->u.ack.offset, 500);
        assert_int_equal(chunk(&o, 7, 1500, 500), 0); /* still a gap: silent */
        assert_int_equal(f.n_sent, before + 1);
        /* a re-offer is a probe: resume at 500 */
        offer(&o, 7, sig, sig_len);
        assert_int_equal(last(&f)->u.ack.offset, 500);
        for (uint32_t off = 500; off < IMG_SIZE; off += 500)
                assert_int_equal(chunk(&o, 7, off, 500), 0);
        assert_int_equal(o.state, MCUGW_OTA_ST_VERIFIED);
        assert_int_equal(f.pending, 1);
        assert_int_equal(f.reboots, 1);
        assert_int_equal(last(&f)->type, MCUGW_MSG_OTA_STATUS);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_VERIFIED);
        assert_int_equal(last(&f)->u.status.offset, IMG_SIZE);
        assert_memory_equal(f.flash, image, IMG_SIZE);
        /* another offer while waiting for the reboot: busy */
        offer(&o, 8, sig, sig_len);
        assert_int_equal(last(&f)->u.ack.status, MCUGW_OTA_ACK_BUSY);
        /* reboot into test mode, self-test passes */
        mcugw_ota_booted_test(&o, 7);
        assert_int_equal(mcugw_ota_connected(&o), 0);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_TESTING);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_NONE);
        assert_int_equal(last(&f)->u.status.offset, 0); /* docs/protocol.md 12.2 */
        assert_int_equal(mcugw_ota_self_test_done(&o, 1, NULL), 0);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_NONE);
        assert_int_equal(last(&f)->u.status.offset, 0);
        assert_int_equal(f.confirmed, 1);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_CONFIRMED);
        /* a late duplicate offer gets the final state again */
        offer(&o, 7, sig, sig_len);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_CONFIRMED);
}

/* The port's streaming SHA-256 equals the one-shot hash, in pieces of any size; final(NULL)
 * releases an abandoned stream (the ASan build checks for leaks). */
static void test_sha256_stream(void **state)
{
        struct mcugw_sha256_state st;
        struct mcugw_iov iov = { image, sizeof image };
        uint8_t one[32], streamed[32];
        size_t off, n;

        make_signed_image();
        assert_int_equal(CRYPTO.sha256(CRYPTO.ctx, &iov, 1, one), 0);
        assert_int_equal(CRYPTO.sha256_init(CRYPTO.ctx, &st), 0);
        for (off = 0, n = 1; off < sizeof image; off += n, n = n * 3 + 1) {
                if (n > sizeof image - off)
                        n = sizeof image - off;
                assert_int_equal(CRYPTO.sha256_update(CRYPTO.ctx, &st, image + off, n), 0);
        }
        assert_int_equal(CRYPTO.sha256_update(CRYPTO.ctx, &st, image, 0), 0);
        assert_int_equal(CRYPTO.sha256_final(CRYPTO.ctx, &st, streamed), 0);
        assert_memory_equal(streamed, one, 32);
        assert_memory_equal(streamed, sha, 32);
        assert_int_equal(CRYPTO.sha256_init(CRYPTO.ctx, &st), 0);
        assert_int_equal(CRYPTO.sha256_update(CRYPTO.ctx, &st, image, 10), 0);
        assert_int_equal(CRYPTO.sha256_final(CRYPTO.ctx, &st, NULL), 0);
}

static void setup_spi(struct mcugw_ota *o, struct fake *f)
{
        struct mcugw_ota_config cfg = {
                .flash = { f, f_begin, f_write, f_finish_spi, f_pending, f_confirm, f_read },
                .send = f_send,
                .send_ctx = f,
                .crypto = &CRYPTO,
                .signer_pub = pub,
                .max_size = sizeof f->flash,
                .window = 2048,
                .max_chunk = 512,
                .on_reboot = f_reboot,
                .user = f,
        };
        memset(f, 0, sizeof *f);
        assert_int_equal(mcugw_ota_init(o, &cfg), 0);
}

static void receive_spi(struct mcugw_ota *o, struct fake *f, uint32_t id)
{
        offer(o, id, sig, sig_len);
        for (uint32_t off = 0; off < IMG_SIZE; off += 500)
                assert_int_equal(chunk(o, id, off, 500), 0);
}

/* OTA into flash that is not memory-mapped: the image is read back in 64-byte pieces through
 * the flash port and hashed with the streaming SHA-256; what is stored is what is checked. */
static void test_spi_flash_read_back(void **state)
{
        struct mcugw_ota_config cfg;
        struct mcugw_crypto no_stream = CRYPTO;
        struct mcugw_ota o;
        struct fake f;

        make_signed_image();
        setup_spi(&o, &f);
        receive_spi(&o, &f, 21);
        assert_int_equal(o.state, MCUGW_OTA_ST_VERIFIED);
        assert_int_equal(f.reads, (IMG_SIZE + 63) / 64);
        assert_int_equal(f.pending, 1);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_VERIFIED);

        /* One byte stored wrong: the hash of what was sent would match, the stored one not. */
        setup_spi(&o, &f);
        f.corrupt_at = 4321;
        receive_spi(&o, &f, 22);
        assert_int_equal(o.state, MCUGW_OTA_ST_FAILED);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_HASH);
        assert_int_equal(f.pending, 0);

        /* A read error fails the finish step. */
        setup_spi(&o, &f);
        f.fail_read = 1;
        receive_spi(&o, &f, 23);
        assert_int_equal(o.state, MCUGW_OTA_ST_FAILED);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_FLASH_FINISH);
        assert_int_equal(f.reads, 1);

        /* Reading back needs a port with the streaming hash. */
        cfg = o.cfg;
        no_stream.sha256_init = NULL;
        cfg.crypto = &no_stream;
        assert_int_equal(mcugw_ota_init(&o, &cfg), MCUGW_EINVAL);
}

static void test_bad_signature(void **state)
{
        struct mcugw_ota o;
        struct fake f;
        uint8_t bad[80];

        make_signed_image();
        memcpy(bad, sig, sig_len);
        bad[sig_len - 1] ^= 1;
        setup_rx(&o, &f, pub);
        offer(&o, 3, bad, sig_len);
        for (uint32_t off = 0; off < IMG_SIZE; off += 1000)
                assert_int_equal(chunk(&o, 3, off, 1000), 0);
        assert_int_equal(o.state, MCUGW_OTA_ST_FAILED);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_SIGNATURE);
        /* The code is the reason: no text in firmware, the gateway words it. */
        assert_int_equal(last(&f)->u.status.reason_len, 0);
        assert_string_equal(mcugw_ota_code_str(last(&f)->u.status.code), "bad image signature");
        assert_string_equal(mcugw_ota_code_str(MCUGW_OTA_E_NO_VERIFIER), "no signature verifier");
        assert_string_equal(mcugw_ota_code_str(MCUGW_OTA_E_NO_VERIFIER + 1), "unknown code");
        assert_int_equal(f.pending, 0);
        assert_int_equal(f.reboots, 0);
}

static void test_self_test_fails_and_limits(void **state)
{
        struct mcugw_ota o;
        struct fake f;

        make_signed_image();
        setup_rx(&o, &f, pub);
        mcugw_ota_booted_test(&o, 4);
        assert_int_equal(mcugw_ota_self_test_done(&o, 0, "sensor missing"), 0);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_FAILED);
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_SELF_TEST);
        assert_memory_equal(last(&f)->u.status.reason, "sensor missing", 14);
        assert_int_equal(f.confirmed, 0);
        assert_int_equal(mcugw_ota_self_test_done(&o, 1, NULL), MCUGW_ESTATE);
        /* chunk past the end, stale transfer id */
        offer(&o, 5, sig, sig_len);
        assert_int_equal(chunk(&o, 5, IMG_SIZE - 10, 10), 0); /* gap: resync */
        assert_int_equal(chunk(&o, 6, 0, 10), MCUGW_ESTATE);
        /* corrupted data: hash mismatch */
        image[10] ^= 1;
        for (uint32_t off = 0; off < IMG_SIZE; off += 1000)
                chunk(&o, 5, off, 1000);
        image[10] ^= 1;
        assert_int_equal(last(&f)->u.status.code, MCUGW_OTA_E_HASH);
        /* abort */
        offer(&o, 11, sig, sig_len);
        struct mcugw_ota_msg a = { .type = MCUGW_MSG_OTA_ABORT };
        a.u.abort.transfer_id = 11;
        assert_int_equal(deliver(&o, &a), 0);
        assert_int_equal(last(&f)->u.status.state, MCUGW_OTA_ST_ABORTED);
}

/* The port's verifier against OpenSSL signatures: many, so that r and s with the high bit set
 * (a DER sign pad) and short values occur; a flipped bit and garbage DER are refused. */
static void test_ecdsa_port(void **state)
{
        uint8_t d[32], bad[80];

        make_signed_image();
        EVP_Digest(image, sizeof image, d, NULL, EVP_sha256(), NULL);
        assert_non_null(CRYPTO.ecdsa_p256_verify);
        for (int i = 0; i < 24; i++) {
                EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                EVP_MD_CTX *ctx = EVP_MD_CTX_new();
                uint8_t p[65], sg[80];
                size_t pl = 0, sl = sizeof sg;
                EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, p, sizeof p, &pl);
                EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k);
                EVP_DigestSign(ctx, sg, &sl, image, sizeof image);
                assert_int_equal(CRYPTO.ecdsa_p256_verify(CRYPTO.ctx, p, d, sg, sl), 0);
                memcpy(bad, sg, sl);
                bad[sl - 3] ^= 0x10;
                assert_int_not_equal(CRYPTO.ecdsa_p256_verify(CRYPTO.ctx, p, d, bad, sl), 0);
                assert_int_not_equal(CRYPTO.ecdsa_p256_verify(CRYPTO.ctx, p, d, sg, sl - 1), 0);
                EVP_MD_CTX_free(ctx);
                EVP_PKEY_free(k);
        }
        memset(bad, 0x30, sizeof bad);
        assert_int_not_equal(CRYPTO.ecdsa_p256_verify(CRYPTO.ctx, pub, d, bad, 72), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_codec),
                cmocka_unit_test(test_offer_in_pieces),
                cmocka_unit_test(test_ecdsa_port),
                cmocka_unit_test(test_receive_in_order),
                cmocka_unit_test(test_bad_signature),
                cmocka_unit_test(test_sha256_stream),
                cmocka_unit_test(test_spi_flash_read_back),
                cmocka_unit_test(test_self_test_fails_and_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
