/* SPDX-License-Identifier: Apache-2.0 */
/* The link manager's session events (struct link_listener): a real link manager with a real
 * registry in a real SQLite file, a socket pair adopted as a stream link, and the device SDK
 * with the OpenSSL port at the other end, all in this process on one loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <uv.h>

#include "mcugw/device.h"
#include "posix_openssl.h"

#include "basic/log.h"
#include "link-fixture.h"

#define DEV_ID "ev-1"

/* Every event of every listener, in the order they came. */
struct rec {
        char who;
        char what; /* 'u', 'd', 'q' (drained) */
        char device[40];
        char reason[96];
        size_t queued;
};
static struct rec recs[64];
static size_t n_recs;

struct tl {
        struct link_listener ls;
        char who;
        struct link_manager *m;
        bool remove_self_on_down;
};

static void record(struct tl *t, char what, const char *id, const char *reason, size_t queued)
{
        struct rec *r;

        assert_true(n_recs < sizeof recs / sizeof recs[0]);
        r = &recs[n_recs++];
        r->who = t->who;
        r->what = what;
        snprintf(r->device, sizeof r->device, "%s", id);
        snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
        r->queued = queued;
}

static void on_up(void *ud, const char *id)
{
        record(ud, 'u', id, NULL, 0);
}

static void on_down(void *ud, const char *id, const char *reason)
{
        struct tl *t = ud;

        record(t, 'd', id, reason, 0);
        if (t->remove_self_on_down)
                link_manager_remove_listener(t->m, &t->ls);
}

static void on_drained(void *ud, const char *id, size_t queued)
{
        record(ud, 'q', id, NULL, queued);
}

static void tl_init(struct tl *t, char who, struct link_manager *m)
{
        memset(t, 0, sizeof *t);
        t->who = who;
        t->m = m;
        t->ls.ud = t;
        t->ls.on_up = on_up;
        t->ls.on_down = on_down;
        t->ls.on_drained = on_drained;
}

static size_t count(char who, char what)
{
        size_t n = 0;
        for (size_t i = 0; i < n_recs; i++)
                n += recs[i].who == who && recs[i].what == what;
        return n;
}

/* The device end: the SDK on a non-blocking socket. */
struct devside {
        struct mcugw_device dev;
        struct mcugw_posix_link pl;
        uint8_t priv[32], pub[32], gw_pub[32];
        uint8_t rx[MCUGW_DEVICE_RX_BUF(512)], tx[MCUGW_DEVICE_TX_BUF(512)];
        int fd;
};

static void dev_start(struct devside *d)
{
        struct mcugw_device_config cfg = { 0 };

        mcugw_posix_port_init(&cfg.port, &d->pl, d->fd);
        cfg.keys.static_priv = d->priv;
        cfg.keys.gateway_pub = d->gw_pub;
        cfg.keys.device_id = DEV_ID;
        cfg.rx_buf = d->rx;
        cfg.rx_cap = sizeof d->rx;
        cfg.tx_buf = d->tx;
        cfg.tx_cap = sizeof d->tx;
        assert_int_equal(mcugw_device_init(&d->dev, &cfg), 0);
        assert_int_equal(mcugw_device_start(&d->dev), 0);
}

/* Run the loop and the device until pred() holds (at most ~5 s). */
static void spin(uv_loop_t *loop, struct devside *d, bool (*pred)(void))
{
        for (int i = 0; i < 5000 && !pred(); i++) {
                uv_run(loop, UV_RUN_NOWAIT);
                if (d)
                        mcugw_device_tick(&d->dev);
                usleep(1000);
        }
        assert_true(pred());
}

static struct devside *cur_dev;
static bool dev_connected(void)
{
        return mcugw_device_state(&cur_dev->dev) == MCUGW_DEV_CONNECTED;
}
static bool a_up(void)
{
        return count('A', 'u') == 1;
}
static bool a_drained(void)
{
        return count('A', 'q') == 1;
}
static bool a_down(void)
{
        return count('A', 'd') == 1;
}

static void test_listener_events(void **state)
{
        struct link_fixture f;
        struct link_manager *m;
        struct devside *d = calloc(1, sizeof *d);
        struct tl a, b, c;
        int sv[2], small = 4096, sent = 0;
        size_t before;

        (void)state;
        assert_non_null(d);
        n_recs = 0;
        log_set_level(LOG_WARNING);
        assert_int_equal(mcugw_openssl_keygen(d->priv, d->pub), 0);
        link_fixture_open(&f, DEV_ID, d->pub);
        m = f.m;
        memcpy(d->gw_pub, f.gw_pub, 32);

        /* C first: it removes itself from inside on_down, and A after it must still hear. */
        tl_init(&c, 'C', m);
        c.remove_self_on_down = true;
        tl_init(&a, 'A', m);
        tl_init(&b, 'B', m);
        b.ls.on_drained = NULL; /* any callback may be NULL */
        link_manager_add_listener(m, &c.ls);
        link_manager_add_listener(m, &a.ls);
        link_manager_add_listener(m, &b.ls);
        link_manager_add_listener(m, &a.ls); /* twice: no-op */

        /* Small socket buffers, so that the gateway's output queue fills. */
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
        assert_int_equal(link_manager_adopt_fd(m, sv[1], "test"), 0);
        d->fd = sv[0];
        cur_dev = d;

        /* Up: only once the session is confirmed by the device's first DATA frame. */
        dev_start(d);
        spin(&f.loop, d, dev_connected);
        assert_int_equal(n_recs, 0);
        assert_int_equal(mcugw_device_ping(&d->dev, 7), 0);
        spin(&f.loop, d, a_up);
        assert_int_equal(n_recs, 3);
        assert_int_equal(recs[0].who, 'C');
        assert_int_equal(recs[1].who, 'A');
        assert_int_equal(recs[2].who, 'B');
        for (size_t i = 0; i < 3; i++) {
                assert_int_equal(recs[i].what, 'u');
                assert_string_equal(recs[i].device, DEV_ID);
        }
        assert_true(link_manager_device_connected(m, DEV_ID));

        /* Drained: the device stops reading; fill the queue up to the mark (never to the
         * limit, where a stream link is closed). No event while it only grows. */
        while (link_manager_queued(m, DEV_ID) < LINK_QUEUE_LOW) {
                struct mcugw_msg p = { .type = MCUGW_MSG_PING };
                p.u.ping.token = (uint32_t)sent;
                assert_int_equal(link_manager_send(m, DEV_ID, &p), 0);
                assert_true(++sent < 100000);
        }
        before = link_manager_queued(m, DEV_ID);
        assert_true(before >= LINK_QUEUE_LOW);
        uv_run(&f.loop, UV_RUN_NOWAIT);
        assert_int_equal(count('A', 'q'), 0);
        /* The device reads again (the bytes are dropped: only the queue matters here). */
        for (int i = 0; i < 5000 && !a_drained(); i++) {
                uint8_t buf[4096];
                while (read(d->fd, buf, sizeof buf) > 0)
                        ;
                uv_run(&f.loop, UV_RUN_NOWAIT);
                usleep(1000);
        }
        assert_int_equal(count('A', 'q'), 1);
        assert_int_equal(count('C', 'q'), 1);
        assert_int_equal(count('B', 'q'), 0);
        for (size_t i = 0; i < n_recs; i++)
                if (recs[i].what == 'q') {
                        assert_string_equal(recs[i].device, DEV_ID);
                        assert_true(recs[i].queued < LINK_QUEUE_LOW);
                }
        /* Below the mark without having been above it again: no second event. */
        for (int i = 0; i < 20; i++) {
                uint8_t buf[4096];
                struct mcugw_msg p = { .type = MCUGW_MSG_PING };
                assert_int_equal(link_manager_send(m, DEV_ID, &p), 0);
                while (read(d->fd, buf, sizeof buf) > 0)
                        ;
                uv_run(&f.loop, UV_RUN_NOWAIT);
        }
        assert_int_equal(count('A', 'q'), 1);

        /* B is removed (and removing it twice is harmless); the device goes away. */
        link_manager_remove_listener(m, &b.ls);
        link_manager_remove_listener(m, &b.ls);
        close(d->fd);
        spin(&f.loop, NULL, a_down);
        assert_int_equal(count('C', 'd'), 1);
        assert_int_equal(count('B', 'd'), 0);
        for (size_t i = 0; i < n_recs; i++)
                if (recs[i].what == 'd') {
                        assert_string_equal(recs[i].device, DEV_ID);
                        assert_string_equal(recs[i].reason, "connection closed");
                }
        assert_false(link_manager_device_connected(m, DEV_ID));

        /* Listeners still added when the manager stops hear the last sessions end: none is up
         * now, so nothing more. C removed itself. */
        before = n_recs;
        link_fixture_stop(&f);
        link_fixture_close(&f);
        assert_int_equal(n_recs, before);
        free(d);
}

static json_int_t counter(struct link_manager *m, const char *name)
{
        json_t *st = link_manager_status(m);
        json_int_t v = json_integer_value(json_object_get(json_object_get(st, "counters"), name));
        json_decref(st);
        return v;
}

/* Write @len bytes to @fd and run the loop until the manager has read them all. */
static void feed(uv_loop_t *loop, struct link_manager *m, int fd, const uint8_t *p, size_t len)
{
        json_int_t want = counter(m, "bytes_in") + (json_int_t)len;
        assert_int_equal(write(fd, p, len), (ssize_t)len);
        for (int i = 0; i < 5000 && counter(m, "bytes_in") < want; i++) {
                uv_run(loop, UV_RUN_NOWAIT);
                usleep(1000);
        }
        assert_int_equal(counter(m, "bytes_in"), want);
}

/* Links decode whole frames in one shared buffer; a frame cut between two reads must keep its
 * first part while another link decodes whole frames in between. Each frame here is a DATA
 * frame with a good CRC and no session: a mixed-up buffer would show as a CRC error. */
static void test_cut_frames(void **state)
{
        struct link_fixture f;
        struct link_manager *m;
        uint8_t frame[300], wa[MCUGW_WIRE_MAX(300)], wb[MCUGW_WIRE_MAX(300)];
        int a[2], b[2], na, nb;

        (void)state;
        log_set_level(LOG_ERR);
        link_fixture_open(&f, NULL, NULL);
        m = f.m;
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
        assert_int_equal(link_manager_adopt_fd(m, a[1], "cut-a"), 0);
        assert_int_equal(link_manager_adopt_fd(m, b[1], "cut-b"), 0);

        memset(frame, 0xa5, sizeof frame);
        frame[0] = MCUGW_PROTO_VERSION;
        frame[1] = MCUGW_FRAME_DATA;
        frame[2] = frame[3] = 0;
        na = mcugw_frame_encode(frame, sizeof frame, wa, sizeof wa);
        assert_true(na > 100);
        memset(frame + 4, 0x3c, sizeof frame - 4);
        nb = mcugw_frame_encode(frame, sizeof frame, wb, sizeof wb);
        assert_true(nb > 100);

        /* A's frame in two reads, B's two whole frames and one cut frame of its own between. */
        feed(&f.loop, m, a[0], wa, 100);
        feed(&f.loop, m, b[0], wb, (size_t)nb);
        feed(&f.loop, m, b[0], wb, 50);
        feed(&f.loop, m, a[0], wa + 100, (size_t)na - 100);
        feed(&f.loop, m, b[0], wb + 50, (size_t)nb - 50);
        feed(&f.loop, m, b[0], wb, (size_t)nb);
        assert_int_equal(counter(m, "crc_errors"), 0);
        assert_int_equal(counter(m, "cobs_errors"), 0);
        assert_int_equal(counter(m, "bad_session"), 4);

        close(a[0]);
        close(b[0]);
        link_fixture_stop(&f);
        link_fixture_close(&f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_listener_events),
                cmocka_unit_test(test_cut_frames),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
