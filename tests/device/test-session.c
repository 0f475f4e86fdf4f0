/* SPDX-License-Identifier: Apache-2.0 */
/* Transport sessions: replay window, reordering, forgery, truncation, limits. */
#include "test-util.h"

static struct mcugw_crypto crypto;
static struct mcugw_session tx, rx;

static int setup(void **state)
{
        (void)state;
        crypto = test_crypto();
        rng_reset();
        memset(&tx, 0, sizeof(tx));
        memset(&rx, 0, sizeof(rx));
        crypto.random(crypto.ctx, tx.tx_key, 32);
        crypto.random(crypto.ctx, tx.rx_key, 32);
        memcpy(rx.rx_key, tx.tx_key, 32);
        memcpy(rx.tx_key, tx.rx_key, 32);
        tx.id = rx.id = 0xabcdef01u;
        tx.active = rx.active = 1;
        return 0;
}

struct frame {
        uint8_t b[128];
        size_t len;
};

static void seal_n(struct frame *f, int n)
{
        int i;

        for (i = 0; i < n; i++) {
                uint8_t m[5] = { MCUGW_MSG_PING, (uint8_t)i, 0, 0, 0 };
                int r = mcugw_session_seal(&tx, &crypto, m, sizeof(m), f[i].b, sizeof(f[i].b));

                assert_int_equal(r, 5 + 32);
                f[i].len = (size_t)r;
        }
}

/* Open a copy (opening decrypts in place). */
static int open_copy(const struct frame *f)
{
        uint8_t b[128], *msg;
        size_t mlen;

        memcpy(b, f->b, f->len);
        return mcugw_session_open(&rx, &crypto, b, f->len, &msg, &mlen);
}

static void test_roundtrip(void **state)
{
        struct frame f[1];
        uint8_t *msg;
        size_t mlen;

        (void)state;
        seal_n(f, 1);
        assert_int_equal(f[0].b[1], MCUGW_FRAME_DATA);
        assert_int_equal(mcugw_data_session_id(f[0].b, f[0].len), 0xabcdef01u);
        assert_int_equal(mcugw_session_open(&rx, &crypto, f[0].b, f[0].len, &msg, &mlen), 0);
        assert_int_equal(mlen, 5);
        assert_int_equal(msg[0], MCUGW_MSG_PING);
}

static void test_replay(void **state)
{
        struct frame f[2];

        (void)state;
        seal_n(f, 2);
        assert_int_equal(open_copy(&f[0]), 0);
        assert_int_equal(open_copy(&f[0]), MCUGW_EDUP);
        assert_int_equal(open_copy(&f[1]), 0);
        assert_int_equal(open_copy(&f[1]), MCUGW_EDUP);
        assert_int_equal(open_copy(&f[0]), MCUGW_EDUP);
}

/* A frame that reuses a counter already received but does not authenticate is a forgery
 * (EAUTH), not a duplicate: only exact copies are harmless. */
static void test_forged_duplicate(void **state)
{
        struct frame f[2];

        (void)state;
        seal_n(f, 2);
        assert_int_equal(open_copy(&f[0]), 0);
        f[0].b[MCUGW_DATA_HDR_LEN] ^= 0x01;
        assert_int_equal(open_copy(&f[0]), MCUGW_EAUTH);
        f[0].b[MCUGW_DATA_HDR_LEN] ^= 0x01;
        assert_int_equal(open_copy(&f[0]), MCUGW_EDUP);
        assert_int_equal(open_copy(&f[1]), 0);
}

static void test_reorder_window(void **state)
{
        static struct frame f[200];

        (void)state;
        seal_n(f, 200);
        assert_int_equal(open_copy(&f[5]), 0);
        assert_int_equal(open_copy(&f[3]), 0);
        assert_int_equal(open_copy(&f[9]), 0);
        assert_int_equal(open_copy(&f[0]), 0);
        assert_int_equal(open_copy(&f[3]), MCUGW_EDUP);
        assert_int_equal(open_copy(&f[100]), 0);
        /* 100 - 37 = 63: last slot inside the window; 100 - 36 = 64: outside. */
        assert_int_equal(open_copy(&f[37]), 0);
        assert_int_equal(open_copy(&f[36]), MCUGW_ETOOOLD);
        assert_int_equal(open_copy(&f[9]), MCUGW_ETOOOLD);
        assert_int_equal(open_copy(&f[99]), 0);
        /* A big jump clears the window. */
        assert_int_equal(open_copy(&f[199]), 0);
        assert_int_equal(open_copy(&f[135]), MCUGW_ETOOOLD);
        assert_int_equal(open_copy(&f[150]), 0);
        assert_int_equal(open_copy(&f[150]), MCUGW_EDUP);
}

static void test_bitflip_everywhere(void **state)
{
        struct frame f[2], g;
        size_t i;
        int bit;

        (void)state;
        seal_n(f, 2);
        for (i = 0; i < f[1].len; i++) {
                for (bit = 0; bit < 8; bit++) {
                        int r;

                        g = f[1];
                        g.b[i] ^= (uint8_t)(1u << bit);
                        r = open_copy(&g);
                        assert_true(r < 0);
                        if (i >= 16)
                                assert_int_equal(r, MCUGW_EAUTH);
                }
        }
        /* None of the forgeries moved the window: both genuine frames still open. */
        assert_int_equal(open_copy(&f[1]), 0);
        assert_int_equal(open_copy(&f[0]), 0);
}

static void test_forged_counter_does_not_advance(void **state)
{
        struct frame f[2], g;

        (void)state;
        seal_n(f, 2);
        g = f[1];
        g.b[8 + 2] = 0x10; /* counter 1 -> 0x100001, tag no longer matches */
        assert_int_equal(open_copy(&g), MCUGW_EAUTH);
        assert_int_equal(open_copy(&f[0]), 0);
        assert_int_equal(open_copy(&f[1]), 0);
}

static void test_truncation(void **state)
{
        struct frame f[1], g;
        size_t l;

        (void)state;
        seal_n(f, 1);
        for (l = 0; l < f[0].len; l++) {
                int r;

                g = f[0];
                g.len = l;
                r = open_copy(&g);
                if (l < MCUGW_DATA_OVERHEAD)
                        assert_int_equal(r, MCUGW_ETRUNC);
                else
                        assert_int_equal(r, MCUGW_EAUTH);
        }
        assert_int_equal(open_copy(&f[0]), 0);
}

static void test_wrong_session_and_limits(void **state)
{
        struct frame f[1];
        uint8_t big[1100], out[1100];

        (void)state;
        seal_n(f, 1);
        rx.id++;
        assert_int_equal(open_copy(&f[0]), MCUGW_ESESSION);
        rx.id--;
        rx.active = 0;
        assert_int_equal(open_copy(&f[0]), MCUGW_ESESSION);
        rx.active = 1;

        memset(big, 1, sizeof(big));
        tx.peer_max_frame = 100;
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, 68, out, sizeof(out)), 100);
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, 69, out, sizeof(out)),
                         MCUGW_ETOOBIG);
        tx.peer_max_frame = 0;
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, 69, out, 100), MCUGW_ENOSPC);
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, MCUGW_MSG_MAX + 1, out, sizeof(out)),
                         MCUGW_ETOOBIG);
        tx.tx_counter = MCUGW_REJECT_AFTER_MESSAGES;
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, 5, out, sizeof(out)), MCUGW_EREKEY);
        mcugw_session_wipe(&tx);
        assert_int_equal(tx.active, 0);
        assert_int_equal(mcugw_session_seal(&tx, &crypto, big, 5, out, sizeof(out)),
                         MCUGW_ESESSION);
}

static void test_in_place_seal(void **state)
{
        uint8_t b[64], *msg;
        size_t mlen;
        int n;

        (void)state;
        memcpy(b + 16, "\x03\x01\x02\x03\x04", 5);
        n = mcugw_session_seal(&tx, &crypto, b + 16, 5, b, sizeof(b));
        assert_int_equal(n, 37);
        assert_int_equal(mcugw_session_open(&rx, &crypto, b, (size_t)n, &msg, &mlen), 0);
        assert_memory_equal(msg, "\x03\x01\x02\x03\x04", 5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_roundtrip, setup),
                cmocka_unit_test_setup(test_replay, setup),
                cmocka_unit_test_setup(test_forged_duplicate, setup),
                cmocka_unit_test_setup(test_reorder_window, setup),
                cmocka_unit_test_setup(test_bitflip_everywhere, setup),
                cmocka_unit_test_setup(test_forged_counter_does_not_advance, setup),
                cmocka_unit_test_setup(test_truncation, setup),
                cmocka_unit_test_setup(test_wrong_session_and_limits, setup),
                cmocka_unit_test_setup(test_in_place_seal, setup),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
