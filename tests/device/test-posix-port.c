/* SPDX-License-Identifier: Apache-2.0 */
/* The POSIX I/O + OpenSSL port: a device on one end of a socketpair, a responder on the other. */
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "test-util.h"

#include "mcugw/device.h"

static uint8_t gw_priv[32], gw_pub[32], dev_priv[32], dev_pub[32];

static int lookup(void *user, const uint8_t pub[32], const char *id, size_t id_len,
                  const uint8_t *att, size_t att_len)
{
        (void)user;
        (void)id;
        (void)id_len;
        (void)att;
        (void)att_len;
        return mcugw_ct_equal(pub, dev_pub, 32) ? 0 : -1;
}

/* Gateway side: read what is there, answer HS1, return the number of messages received. */
static int gw_poll(int fd, struct mcugw_responder *r, struct mcugw_deframer *d,
                   struct mcugw_msg *last)
{
        uint8_t in[512], w[256];
        ssize_t n;
        int msgs = 0;

        while ((n = read(fd, in, sizeof(in))) > 0) {
                const uint8_t *p = in;
                size_t left = (size_t)n;

                while (left) {
                        struct mcugw_rx rx;
                        uint8_t *f;
                        size_t used, fl;
                        int rc = mcugw_deframer_push(d, p, left, &used, &f, &fl);

                        p += used;
                        left -= used;
                        if (rc != 1 || mcugw_responder_handle(r, f, fl, &rx) < 0)
                                continue;
                        if (rx.kind == MCUGW_RX_REPLY) {
                                int wl = mcugw_frame_encode(rx.data, rx.len, w, sizeof(w));

                                assert_int_equal(write(fd, w, (size_t)wl), wl);
                        } else if (rx.kind == MCUGW_RX_MESSAGE) {
                                assert_int_equal(mcugw_msg_decode(rx.data, rx.len, last), 0);
                                msgs++;
                        }
                }
        }
        return msgs;
}

static void test_socketpair(void **state)
{
        static uint8_t rx[MCUGW_DEVICE_RX_BUF(512)], tx[512], gwbuf[MCUGW_FRAME_MAX + 4];
        struct mcugw_responder_config rc;
        struct mcugw_device_config c;
        struct mcugw_posix_link link;
        struct mcugw_responder r;
        struct mcugw_responder_hs hs;
        struct mcugw_deframer d;
        struct mcugw_device dev;
        struct mcugw_msg last;
        int sv[2], i;

        (void)state;
        assert_int_equal(mcugw_openssl_keygen(gw_priv, gw_pub), 0);
        assert_int_equal(mcugw_openssl_keygen(dev_priv, dev_pub), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);

        memset(&c, 0, sizeof(c));
        mcugw_posix_port_init(&c.port, &link, sv[0]);
        c.keys.static_priv = dev_priv;
        c.keys.gateway_pub = gw_pub;
        c.keys.device_id = "posix-1";
        c.rx_buf = rx;
        c.rx_cap = sizeof(rx);
        c.tx_buf = tx;
        c.tx_cap = sizeof(tx);
        assert_int_equal(mcugw_device_init(&dev, &c), 0);

        memset(&rc, 0, sizeof(rc));
        rc.crypto = &mcugw_crypto_openssl;
        rc.static_priv = gw_priv;
        rc.static_pub = gw_pub;
        rc.lookup = lookup;
        rc.fresh = NULL;
        assert_int_equal(mcugw_responder_init(&r, &rc), 0);
        mcugw_responder_set_hs(&r, &hs);
        assert_int_equal(mcugw_deframer_init(&d, gwbuf, sizeof(gwbuf)), 0);

        assert_int_equal(mcugw_device_start(&dev), 0);
        assert_int_equal(gw_poll(sv[1], &r, &d, &last), 0);
        assert_int_equal(mcugw_device_tick(&dev), 0); /* reads HS2 through port.recv */
        assert_int_equal(mcugw_device_state(&dev), MCUGW_DEV_CONNECTED);
        assert_int_equal(gw_poll(sv[1], &r, &d, &last), 1);
        assert_int_equal(last.type, MCUGW_MSG_PING);
        for (i = 0; i < 10; i++)
                assert_int_equal(mcugw_device_send_telemetry(&dev, 1, (uint32_t)i, 0,
                                                             (const uint8_t *)"v", 1),
                                 0);
        assert_int_equal(gw_poll(sv[1], &r, &d, &last), 10);
        assert_int_equal(last.u.telemetry.seq, 9);
        assert_string_equal(mcugw_responder_peer(&r)->device_id, "posix-1");

        /* Peer gone: recv reports MCUGW_EIO. */
        close(sv[1]);
        assert_int_equal(mcugw_device_tick(&dev), MCUGW_EIO);
        close(sv[0]);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_socketpair),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
