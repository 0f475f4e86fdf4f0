/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Known-answer tests:
 *  1. the official Noise test vector for Noise_IK_25519_ChaChaPoly_SHA256 from cacophony
 *     (vectors/cacophony.txt), run through the low-level mcugw_noise_* API;
 *  2. the mcugw v1 vectors of docs/protocol.md (HS1, HS2, DATA frames, wire bytes).
 * Compiled once per crypto port (OpenSSL, and PSA/mbedTLS when available).
 * Set MCUGW_PRINT_VECTORS=1 to print the mcugw frames as hex.
 */
#include <stdlib.h>

#include "test-util.h"

/* ---- cacophony: Noise_IK_25519_ChaChaPoly_SHA256 ---- */
#define CA_PROLOGUE "4a6f686e2047616c74"
#define CA_INIT_STATIC "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"
#define CA_RESP_STATIC "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"
#define CA_RESP_PUB "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62"
#define CA_INIT_EPH "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"
#define CA_RESP_EPH "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"
/* handshake_hash of the current cacophony.txt entry (a copy from 2017, before cacophony fixed
 * a bug, has 49fb1c05... there; the messages and transport ciphertexts are the same in both). */
#define CA_HASH "0b0f68fb0c27e03ce9b97565995ed4838cc0581b762ef72b062f6a546419fad7"

static const char *const ca_msgs[6][2] = {
        { "4c756477696720766f6e204d69736573",
          "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944718da798efbcd915285202"
          "04f904b9bd6c7413dccdc214d951e15253e39987f18146e8cd0873654207148333479d4d16c289f0294b29"
          "960a72f48e0b7bba2e89083169825e59642148d492020664ccf7" },
        { "4d757272617920526f746862617264",
          "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088435361e70b2ed446e6c9ec38"
          "7d1d6b3b840f194e373979d241b203c4acafccf5" },
        { "462e20412e20486179656b", "050e9f3c8fac16b68dbce8f8c4bfbf6617c897f9ada4aa29aa19c8" },
        { "4361726c204d656e676572", "344233a6cabb7141d80f3da2fedc311d9646bbb0f505afe403a667" },
        { "4a65616e2d426170746973746520536179",
          "62cdeeb172ad7ade7aa7d9e069da5790f12331bfa00177787a1d0810c67dc3b2b4" },
        { "457567656e2042f6686d20766f6e2042617765726b",
          "029bead1b40992327044d409d9a1f3ad8f36c3c452775d557e18bbeb2e8dfcead32d514024" },
};

static void test_cacophony_ik(void **state)
{
        struct mcugw_crypto c = test_crypto();
        struct mcugw_noise ini, resp;
        uint8_t prologue[16], is[32], rs[32], rpub[32], pub[32], buf[256], pl[64], ct[256];
        uint8_t ik1[32], ik2[32], rk1[32], rk2[32], ih[32], rh[32], nonce[12];
        size_t plen, plen2, prl;
        int n, i;

        (void)state;
        rng_reset();
        rng_push_hex(CA_INIT_EPH);
        rng_push_hex(CA_RESP_EPH);
        prl = unhex(CA_PROLOGUE, prologue, sizeof(prologue));
        unhex(CA_INIT_STATIC, is, 32);
        unhex(CA_RESP_STATIC, rs, 32);
        unhex(CA_RESP_PUB, rpub, 32);
        assert_int_equal(c.x25519_public(c.ctx, pub, rs), 0);
        assert_memory_equal(pub, rpub, 32);

        assert_int_equal(mcugw_noise_init(&ini, &c, prologue, prl, rpub), 0);
        assert_int_equal(mcugw_noise_init(&resp, &c, prologue, prl, rpub), 0);

        plen = unhex(ca_msgs[0][0], pl, sizeof(pl));
        n = mcugw_noise_write_msg1(&ini, is, NULL, pl, plen, buf, sizeof(buf));
        assert_int_equal(n, 96 + (int)plen);
        assert_hex_equal(buf, (size_t)n, ca_msgs[0][1]);
        n = mcugw_noise_read_msg1(&resp, rs, buf, (size_t)n, buf + 80, (size_t)n - 80);
        assert_int_equal(n, (int)plen);
        assert_memory_equal(buf + 80, pl, plen);

        plen = unhex(ca_msgs[1][0], pl, sizeof(pl));
        n = mcugw_noise_write_msg2(&resp, pl, plen, buf, sizeof(buf));
        assert_int_equal(n, 48 + (int)plen);
        assert_hex_equal(buf, (size_t)n, ca_msgs[1][1]);
        n = mcugw_noise_read_msg2(&ini, is, buf, (size_t)n, buf + 32, (size_t)n - 32);
        assert_int_equal(n, (int)plen);
        assert_memory_equal(buf + 32, pl, plen);

        assert_int_equal(mcugw_noise_split(&ini, ik1, ik2, ih), 0);
        assert_int_equal(mcugw_noise_split(&resp, rk1, rk2, rh), 0);
        assert_memory_equal(ih, rh, 32);
        assert_memory_equal(ik1, rk1, 32);
        assert_memory_equal(ik2, rk2, 32);

        /* Transport messages: initiator sends 2 and 4 with k1, responder 3 and 5 with k2,
         * implicit nonces 0, 1 per direction, empty associated data. */
        for (i = 2; i < 6; i++) {
                const uint8_t *k = (i % 2 == 0) ? ik1 : rk2;

                plen = unhex(ca_msgs[i][0], pl, sizeof(pl));
                memset(nonce, 0, sizeof(nonce));
                nonce[4] = (uint8_t)((i - 2) / 2);
                assert_int_equal(c.aead_seal(c.ctx, k, nonce, NULL, 0, pl, plen, ct), 0);
                assert_hex_equal(ct, plen + 16, ca_msgs[i][1]);
                plen2 = plen + 16;
                assert_int_equal(c.aead_open(c.ctx, k, nonce, NULL, 0, ct, plen2, ct), 0);
                assert_memory_equal(ct, pl, plen);
        }
        assert_hex_equal(ih, 32, CA_HASH);
}

/* ---- mcugw v1 vectors (docs/protocol.md, "Test vectors") ---- */
#define MV_DEVICE_ID "sensor-0001"
#define MV_SESSION_RNG "78563412" /* session id 0x12345678 */

#include "vectors-mcugw.h"

static int lookup_accept(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                         const uint8_t *att, size_t att_len)
{
        (void)att;
        (void)att_len;
        assert_int_equal(id_len, strlen(MV_DEVICE_ID));
        assert_memory_equal(id, MV_DEVICE_ID, id_len);
        assert_memory_equal(pub, user, 32);
        return 0;
}

static void maybe_print(const char *name, const uint8_t *p, size_t n)
{
        static char hex[4096];

        if (!getenv("MCUGW_PRINT_VECTORS"))
                return;
        tohex(p, n, hex);
        printf("#define %s \\\n", name);
        for (size_t i = 0; i < 2 * n; i += 64)
                printf("        \"%.64s\"%s\n", hex + i, i + 64 < 2 * n ? " \\" : "");
}

/* Flood resistance (docs/protocol.md): mac1 of MV_HS1, the COOKIE frame for cookie 11..11
 * with nonce 42..42, and the same HS1 with mac2 under that cookie. Leaves @p hs1 as it was. */
static void check_cookie_vectors(struct mcugw_crypto *c, const uint8_t gw_pub[32], uint8_t *hs1,
                                 size_t n1)
{
        uint8_t mac1_key[32], cookie_key[32], cookie[16], got[16], reply[MCUGW_COOKIE_REPLY_LEN];
        uint8_t other[32];

        memset(cookie, 0x11, sizeof(cookie));
        assert_int_equal(mcugw_flood_keys(c, gw_pub, mac1_key, cookie_key), 0);
        assert_int_equal(mcugw_hs1_check_mac1(c, mac1_key, hs1, n1), 0);
        /* Keyed from the gateway key: a frame for another gateway fails, as does any bit. */
        memcpy(other, gw_pub, 32);
        other[0] ^= 1;
        assert_int_equal(mcugw_flood_keys(c, other, other, NULL), 0);
        assert_int_equal(mcugw_hs1_check_mac1(c, other, hs1, n1), MCUGW_EAUTH);
        hs1[40] ^= 1;
        assert_int_equal(mcugw_hs1_check_mac1(c, mac1_key, hs1, n1), MCUGW_EAUTH);
        hs1[40] ^= 1;
        assert_int_equal(mcugw_hs1_check_mac1(c, mac1_key, hs1, 4 + 96 + 31), MCUGW_ETRUNC);
        assert_int_equal(mcugw_hs1_check_mac2(c, cookie, hs1, n1), MCUGW_EAUTH);

        rng_push_hex("424242424242424242424242424242424242424242424242");
        assert_int_equal(
                mcugw_cookie_reply_write(c, cookie_key, hs1, n1, cookie, reply, sizeof(reply)),
                MCUGW_COOKIE_REPLY_LEN);
        maybe_print("MV_COOKIE", reply, sizeof(reply));
        assert_hex_equal(reply, sizeof(reply), MV_COOKIE);
        assert_int_equal(
                mcugw_cookie_reply_read(c, cookie_key, hs1 + n1 - 32, reply, sizeof(reply), got),
                0);
        assert_memory_equal(got, cookie, 16);
        /* Bound to the HS1 it answers (its mac1 is the AD) and to its exact length. */
        assert_int_equal(
                mcugw_cookie_reply_read(c, cookie_key, hs1 + n1 - 16, reply, sizeof(reply), got),
                MCUGW_EAUTH);
        assert_int_equal(mcugw_cookie_reply_read(c, cookie_key, hs1 + n1 - 32, reply,
                                                 sizeof(reply) - 1, got),
                         MCUGW_EMALFORMED);
        assert_int_equal(mcugw_cookie_reply_read(c, cookie_key, hs1 + n1 - 32, hs1, n1, got),
                         MCUGW_ETYPE);

        assert_int_equal(mcugw_hs1_set_mac2(c, cookie, hs1, n1), 0);
        maybe_print("MV_HS1_MAC2", hs1, n1);
        assert_hex_equal(hs1, n1, MV_HS1_MAC2);
        assert_int_equal(mcugw_hs1_check_mac2(c, cookie, hs1, n1), 0);
        assert_int_equal(mcugw_hs1_check_mac1(c, mac1_key, hs1, n1), 0);
        got[0] = 0x11 ^ 1;
        memset(got + 1, 0x11, 15);
        assert_int_equal(mcugw_hs1_check_mac2(c, got, hs1, n1), MCUGW_EAUTH);
        assert_int_equal(mcugw_hs1_set_mac2(c, NULL, hs1, n1), 0);
        assert_hex_equal(hs1, n1, MV_HS1);
}

static void test_mcugw_vectors(void **state)
{
        struct mcugw_crypto c = test_crypto();
        struct mcugw_initiator_params p = { 0 };
        struct mcugw_responder_config rc;
        struct mcugw_responder r;
        struct mcugw_responder_hs r_hs;
        struct mcugw_noise hs;
        struct mcugw_session s;
        struct mcugw_rx rx;
        struct mcugw_msg m;
        uint8_t dev_priv[32], dev_pub[32], gw_priv[32], gw_pub[32];
        uint8_t hs1[256], hs2[128], f[256], wire[300], *msg;
        size_t mlen;
        int n, n1;

        (void)state;
        rng_reset();
        rng_push_hex(CA_INIT_EPH);
        rng_push_hex(MV_SESSION_RNG); /* the responder draws the session id first */
        rng_push_hex(CA_RESP_EPH);
        unhex(CA_INIT_STATIC, dev_priv, 32);
        unhex(CA_RESP_STATIC, gw_priv, 32);
        assert_int_equal(c.x25519_public(c.ctx, dev_pub, dev_priv), 0);
        assert_int_equal(c.x25519_public(c.ctx, gw_pub, gw_priv), 0);

        p.static_priv = dev_priv;
        p.gateway_pub = gw_pub;
        p.device_id = MV_DEVICE_ID;
        p.device_id_len = strlen(MV_DEVICE_ID);
        p.max_rx_frame = 256;
        p.attest = NULL;
        p.attest_len = 0;
        p.timestamp = 1;
        n1 = mcugw_initiator_write_hs1(&hs, &c, &p, hs1, sizeof(hs1));
        assert_int_equal(n1, 4 + 96 + 15 + 11 + 32);
        maybe_print("MV_HS1", hs1, (size_t)n1);
        n = mcugw_frame_encode(hs1, (size_t)n1, wire, sizeof(wire));
        maybe_print("MV_HS1_WIRE", wire, (size_t)n);
        assert_hex_equal(hs1, (size_t)n1, MV_HS1);
        assert_hex_equal(wire, (size_t)n, MV_HS1_WIRE);

        rc.crypto = &c;
        rc.static_priv = gw_priv;
        rc.static_pub = gw_pub;
        rc.lookup = lookup_accept;
        rc.fresh = NULL;
        rc.user = dev_pub;
        rc.max_rx_frame = 0;
        assert_int_equal(mcugw_responder_init(&r, &rc), 0);
        mcugw_responder_set_hs(&r, &r_hs);
        memcpy(f, hs1, (size_t)n1);
        assert_int_equal(mcugw_responder_handle(&r, f, (size_t)n1, &rx), 0);
        assert_int_equal(rx.kind, MCUGW_RX_REPLY);
        assert_int_equal(rx.len, 60);
        maybe_print("MV_HS2", rx.data, rx.len);
        assert_hex_equal(rx.data, rx.len, MV_HS2);
        memcpy(hs2, rx.data, rx.len);
        assert_int_equal(mcugw_initiator_read_hs2(&hs, dev_priv, hs2, rx.len, &s), 0);
        assert_int_equal(s.id, 0x12345678u);
        assert_int_equal(s.peer_max_frame, 1024);

        /* Device -> gateway: PING token 0 (counter 0), telemetry (counter 1). */
        m.type = MCUGW_MSG_PING;
        m.u.ping.token = 0;
        n = mcugw_msg_encode(&m, f + 16, sizeof(f) - 16);
        n = mcugw_session_seal(&s, &c, f + 16, (size_t)n, f, sizeof(f));
        assert_int_equal(n, 37);
        maybe_print("MV_DATA_PING", f, (size_t)n);
        assert_hex_equal(f, (size_t)n, MV_DATA_PING);
        assert_int_equal(mcugw_responder_handle(&r, f, (size_t)n, &rx), 0);
        assert_int_equal(rx.kind, MCUGW_RX_MESSAGE);
        assert_int_equal(rx.new_session, 1);

        m.type = MCUGW_MSG_TELEMETRY;
        m.u.telemetry.stream = 1;
        m.u.telemetry.seq = 1;
        m.u.telemetry.flags = MCUGW_TLM_ACK_REQUESTED;
        m.u.telemetry.payload = (const uint8_t *)"21.5C";
        m.u.telemetry.len = 5;
        n = mcugw_msg_encode(&m, f + 16, sizeof(f) - 16);
        assert_int_equal(n, 13);
        n = mcugw_session_seal(&s, &c, f + 16, (size_t)n, f, sizeof(f));
        maybe_print("MV_DATA_TELEMETRY", f, (size_t)n);
        assert_hex_equal(f, (size_t)n, MV_DATA_TELEMETRY);
        assert_int_equal(mcugw_responder_handle(&r, f, (size_t)n, &rx), 0);
        assert_int_equal(mcugw_msg_decode(rx.data, rx.len, &m), 0);
        assert_int_equal(m.type, MCUGW_MSG_TELEMETRY);
        assert_int_equal(m.u.telemetry.len, 5);

        /* Gateway -> device: cumulative ACK of seq 1 (counter 0). */
        m.type = MCUGW_MSG_ACK;
        m.u.ack.stream = 1;
        m.u.ack.seq = 1;
        m.u.ack.flags = MCUGW_ACK_CUMULATIVE;
        m.u.ack.status = MCUGW_ACK_OK;
        n = mcugw_msg_encode(&m, f + 16, sizeof(f) - 16);
        n = mcugw_responder_seal(&r, f + 16, (size_t)n, f, sizeof(f));
        maybe_print("MV_DATA_ACK", f, (size_t)n);
        assert_hex_equal(f, (size_t)n, MV_DATA_ACK);
        assert_int_equal(mcugw_session_open(&s, &c, f, (size_t)n, &msg, &mlen), 0);
        assert_int_equal(mcugw_msg_decode(msg, mlen, &m), 0);
        assert_int_equal(m.type, MCUGW_MSG_ACK);

        check_cookie_vectors(&c, gw_pub, hs1, (size_t)n1);
}

/* Low-order peer points give an all-zero X25519 result: refused by port and core alike. */
static void test_low_order_points(void **state)
{
        static const char *const bad[] = {
                "0000000000000000000000000000000000000000000000000000000000000000",
                "0100000000000000000000000000000000000000000000000000000000000000",
                "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        };
        struct mcugw_crypto c = test_crypto();
        struct mcugw_noise hs;
        uint8_t priv[32], pub[32], shared[32], msg[200];
        size_t i;

        (void)state;
        rng_reset();
        test_keypair(&c, priv, pub);
        for (i = 0; i < 3; i++) {
                uint8_t p[32];

                unhex(bad[i], p, 32);
                assert_true(c.x25519(c.ctx, shared, priv, p) < 0 ||
                            mcugw_ct_equal(shared, (const uint8_t[32]){ 0 }, 32));
                /* A message 1 whose ephemeral is low-order dies in the core. */
                memset(msg, 0x11, sizeof(msg));
                memcpy(msg, p, 32);
                assert_int_equal(mcugw_noise_init(&hs, &c, NULL, 0, pub), 0);
                assert_int_equal(mcugw_noise_read_msg1(&hs, priv, msg, sizeof(msg), msg + 80,
                                                       sizeof(msg) - 80),
                                 MCUGW_EDH);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cacophony_ik),
                cmocka_unit_test(test_low_order_points),
                cmocka_unit_test(test_mcugw_vectors),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
