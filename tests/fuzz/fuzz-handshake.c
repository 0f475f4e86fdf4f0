/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: a gateway responder (and a device initiator for HS2 frames) fed an
 * arbitrary byte stream. Keys and "randomness" are fixed so that the seed corpus
 * (scripts/gen-vectors.py --corpus) contains a valid handshake and valid DATA frames.
 * Deps: mcugw_proto_dep, mcugw_crypto_openssl_dep.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcugw/proto.h"
#include "posix_openssl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Same fixed keys as the test vectors (docs/protocol.md). */
static const uint8_t gw_priv[32] = {
        0x4a, 0x3a, 0xcb, 0xfd, 0xb1, 0x63, 0xde, 0xc6, 0x51, 0xdf, 0xa3,
        0x19, 0x4d, 0xec, 0xe6, 0x76, 0xd4, 0x37, 0x02, 0x9c, 0x62, 0xa4,
        0x08, 0xb4, 0xc5, 0xea, 0x91, 0x14, 0x24, 0x6e, 0x48, 0x93,
};
static const uint8_t gw_eph[32] = {
        0xbb, 0xdb, 0x4c, 0xdb, 0xd3, 0x09, 0xf1, 0xa1, 0xf2, 0xe1, 0x45,
        0x69, 0x67, 0xfe, 0x28, 0x8c, 0xad, 0xd6, 0xf7, 0x12, 0xd6, 0x5d,
        0xc7, 0xb7, 0x79, 0x3d, 0x5e, 0x63, 0xda, 0x6b, 0x37, 0x5b,
};
static const uint8_t dev_priv[32] = {
        0xe6, 0x1e, 0xf9, 0x91, 0x9c, 0xde, 0x45, 0xdd, 0x5f, 0x82, 0x16,
        0x64, 0x04, 0xbd, 0x08, 0xe3, 0x8b, 0xce, 0xb5, 0xdf, 0xdf, 0xde,
        0xd0, 0xa3, 0x4c, 0x8d, 0xf7, 0xed, 0x54, 0x22, 0x14, 0xd1,
};

/* Deterministic "RNG": session id 0x12345678, the fixed responder ephemeral. */
static int fixed_random(void *ctx, uint8_t *out, size_t len)
{
        (void)ctx;
        if (len == 4) {
                out[0] = 0x78;
                out[1] = 0x56;
                out[2] = 0x34;
                out[3] = 0x12;
        } else if (len == 32) {
                memcpy(out, gw_eph, 32);
        } else {
                memset(out, 0x42, len);
        }
        return 0;
}

static int lookup(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                  const uint8_t *att, size_t att_len)
{
        (void)user;
        (void)pub;
        (void)att;
        (void)att_len;
        if (id_len >= 1 && id[0] == 'x')
                return -1; /* exercise the reject path */
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t buf[MCUGW_FRAME_MAX + MCUGW_CRC_LEN], out[MCUGW_FRAME_MAX];
        static struct mcugw_crypto c;
        static uint8_t gw_pub[32];
        static int init;
        struct mcugw_responder_config rc;
        struct mcugw_responder r;
        struct mcugw_responder_hs r_hs;
        struct mcugw_responder_stats st = { 0 };
        struct mcugw_deframer d;
        const uint8_t *p = data;
        size_t n = size;

        if (!init) {
                c = mcugw_crypto_openssl;
                c.random = fixed_random;
                if (c.x25519_public(c.ctx, gw_pub, gw_priv) != 0)
                        abort();
                init = 1;
        }
        memset(&rc, 0, sizeof(rc));
        rc.crypto = &c;
        rc.static_priv = gw_priv;
        rc.static_pub = gw_pub;
        rc.lookup = lookup;
        if (mcugw_responder_init(&r, &rc) != 0 || mcugw_deframer_init(&d, buf, sizeof(buf)) != 0)
                abort();
        mcugw_responder_set_hs(&r, &r_hs);
        r.stats = &st;

        while (n) {
                struct mcugw_rx rx;
                struct mcugw_msg m;
                uint8_t *f;
                size_t used, fl;
                int rc2 = mcugw_deframer_push(&d, p, n, &used, &f, &fl);

                p += used;
                n -= used;
                if (rc2 != 1)
                        continue;
                if (mcugw_frame_type(f, fl) == MCUGW_FRAME_HS2) {
                        /* Device side: a fresh handshake reading an arbitrary message 2. */
                        struct mcugw_initiator_params ip = { dev_priv, gw_pub, "fuzz", 4,   256,
                                                             NULL,     0,      1,      NULL };
                        struct mcugw_noise hs;
                        struct mcugw_session s;
                        uint8_t hs1[256];

                        if (mcugw_initiator_write_hs1(&hs, &c, &ip, hs1, sizeof(hs1)) < 0)
                                abort();
                        (void)mcugw_initiator_read_hs2(&hs, dev_priv, f, fl, &s);
                        continue;
                }
                if (mcugw_responder_handle(&r, f, fl, &rx) < 0)
                        continue;
                if (rx.kind == MCUGW_RX_REPLY && (rx.len > sizeof(r_hs.hs2) || rx.data != r_hs.hs2))
                        abort();
                if (rx.kind == MCUGW_RX_MESSAGE && mcugw_msg_decode(rx.data, rx.len, &m) == 0) {
                        int k = mcugw_msg_encode(&m, out + MCUGW_DATA_HDR_LEN,
                                                 sizeof(out) - MCUGW_DATA_OVERHEAD);

                        if (k >= 0)
                                (void)mcugw_responder_seal(&r, out + MCUGW_DATA_HDR_LEN, (size_t)k,
                                                           out, sizeof(out));
                }
        }
#ifdef MCUGW_FUZZ_DEBUG
        fprintf(stderr,
                "hs_ok %u dup %u auth_fail %u rejected %u sessions %u rx_ok %u "
                "auth %u replay %u trunc %u bad_session %u malformed %u\n",
                st.hs_ok, st.hs_duplicate, st.hs_auth_fail, st.hs_rejected, st.sessions, st.rx_ok,
                st.rx_auth_fail, st.rx_dup, st.rx_truncated, st.rx_bad_session, st.rx_malformed);
#endif
        mcugw_responder_reset(&r);
        return 0;
}
