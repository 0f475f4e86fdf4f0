/* SPDX-License-Identifier: Apache-2.0 */
/* What the link manager does with authenticated messages it cannot use, and with messages a
 * small device cannot receive (docs/protocol.md sections 4, 7 and 2.2): a real link manager
 * with a real registry in a real SQLite file, a socket pair adopted as a stream link, and the
 * device SDK with a 96-byte receive limit (the smallest allowed) at the other end. */
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
#include <jansson.h>
#include <openssl/evp.h>
#include <uv.h>

#include "mcugw/device.h"
#include "posix_openssl.h"

#include "basic/log.h"
#include "link-fixture.h"

#define DEV_ID "msg-1"

struct devside {
        struct mcugw_device dev;
        struct mcugw_posix_link pl;
        uint8_t priv[32], pub[32], gw_pub[32];
        uint8_t rx[MCUGW_DEVICE_RX_BUF(MCUGW_FRAME_MIN)], tx[MCUGW_DEVICE_TX_BUF(256)];
        int fd;
        int errors, last_error;
        char error_text[MCUGW_ERROR_TEXT_MAX + 1];
        int commands;
        uint32_t last_command;
};

static struct devside *cur;
static struct link_manager *mgr;
static int results;
static uint32_t last_result;

static void on_error(void *user, int code, const char *text, size_t len)
{
        struct devside *d = user;

        if (code <= 0)
                return; /* local drops */
        d->errors++;
        d->last_error = code;
        snprintf(d->error_text, sizeof d->error_text, "%.*s", (int)len, text);
}

static void on_command(void *user, uint32_t id, const uint8_t *payload, size_t len)
{
        struct devside *d = user;

        d->commands++;
        d->last_command = id;
}

static void on_result(void *ud, const char *device_id, uint32_t command_id, int status,
                      const uint8_t *payload, size_t len)
{
        results++;
        last_result = command_id;
}

static void dev_start(struct devside *d)
{
        struct mcugw_device_config cfg = { 0 };

        mcugw_posix_port_init(&cfg.port, &d->pl, d->fd);
        cfg.keys.static_priv = d->priv;
        cfg.keys.gateway_pub = d->gw_pub;
        cfg.keys.device_id = DEV_ID;
        cfg.cb.user = d;
        cfg.cb.on_error = on_error;
        cfg.cb.on_command = on_command;
        cfg.rx_buf = d->rx;
        cfg.rx_cap = sizeof d->rx;
        cfg.tx_buf = d->tx;
        cfg.tx_cap = sizeof d->tx;
        assert_int_equal(mcugw_device_init(&d->dev, &cfg), 0);
        assert_int_equal(mcugw_device_start(&d->dev), 0);
}

static void spin_at(uv_loop_t *loop, bool (*pred)(void), int line)
{
        for (int i = 0; i < 5000 && !pred(); i++) {
                uv_run(loop, UV_RUN_NOWAIT);
                mcugw_device_tick(&cur->dev);
                usleep(1000);
        }
        if (!pred())
                fail_msg("condition not reached (line %d)", line);
}
#define spin(loop, pred) spin_at(loop, pred, __LINE__)

/* Let everything in flight arrive (no predicate to wait for: nothing must happen). */
static void settle(uv_loop_t *loop)
{
        for (int i = 0; i < 50; i++) {
                uv_run(loop, UV_RUN_NOWAIT);
                mcugw_device_tick(&cur->dev);
                usleep(1000);
        }
}

static json_int_t counter(const char *name)
{
        json_t *o = json_object();
        json_int_t v;

        assert_int_equal(link_manager_device_stats(mgr, DEV_ID, o), 0);
        v = json_integer_value(json_object_get(json_object_get(o, "link_stats"), name));
        json_decref(o);
        return v;
}

static bool dev_connected(void)
{
        return mcugw_device_state(&cur->dev) == MCUGW_DEV_CONNECTED;
}
static bool up(void)
{
        return link_manager_device_connected(mgr, DEV_ID);
}
static bool one_dup(void)
{
        return counter("dup") == 1;
}
static bool one_mac_error(void)
{
        return counter("mac_errors") == 1;
}
static bool one_error(void)
{
        return cur->errors == 1;
}
static bool two_errors(void)
{
        return cur->errors == 2;
}
static bool one_stray(void)
{
        return counter("stray_results") == 1;
}
static bool got_command(void)
{
        return cur->commands == 1;
}
static bool one_result(void)
{
        return results == 1;
}

/* Seal @p plain on the device's session and write the frame to the gateway, @p copies times,
 * optionally with a ciphertext bit flipped (a forgery reusing the counter). */
static void raw_send(struct devside *d, const uint8_t *plain, size_t len, int copies, bool flip,
                     uint8_t *keep, size_t *keep_len)
{
        uint8_t frame[MCUGW_FRAME_MAX], wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
        int n, w;

        memcpy(frame + MCUGW_DATA_HDR_LEN, plain, len);
        n = mcugw_session_seal(&d->dev.u.s, &mcugw_crypto_openssl, frame + MCUGW_DATA_HDR_LEN, len,
                               frame, sizeof frame);
        assert_true(n > 0);
        if (flip)
                frame[MCUGW_DATA_HDR_LEN] ^= 1;
        w = mcugw_frame_encode(frame, (size_t)n, wire, sizeof wire);
        assert_true(w > 0);
        for (int i = 0; i < copies; i++)
                assert_int_equal(write(d->fd, wire, (size_t)w), w);
        if (keep) {
                memcpy(keep, frame, (size_t)n);
                *keep_len = (size_t)n;
        }
}

static void write_frame(struct devside *d, const uint8_t *frame, size_t len)
{
        uint8_t wire[MCUGW_WIRE_MAX(MCUGW_FRAME_MAX)];
        int w = mcugw_frame_encode(frame, len, wire, sizeof wire);

        assert_true(w > 0);
        assert_int_equal(write(d->fd, wire, (size_t)w), w);
}

static void test_messages(void **state)
{
        struct link_fixture f;
        struct devside *d = calloc(1, sizeof *d);
        const struct link_callbacks cb = { .on_command_result = on_result };
        uint8_t big[MCUGW_MSG_MAX], kept[MCUGW_FRAME_MAX];
        size_t kept_len = 0;
        int sv[2];

        (void)state;
        assert_non_null(d);
        log_set_level(LOG_WARNING);
        assert_int_equal(mcugw_openssl_keygen(d->priv, d->pub), 0);
        link_fixture_open(&f, DEV_ID, d->pub);
        mgr = f.m;
        link_manager_set_callbacks(mgr, &cb);
        memcpy(d->gw_pub, f.gw_pub, 32);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
        assert_int_equal(link_manager_adopt_fd(mgr, sv[1], "test"), 0);
        d->fd = sv[0];
        cur = d;
        dev_start(d);
        spin(&f.loop, dev_connected);
        assert_int_equal(mcugw_device_ping(&d->dev, 7), 0);
        spin(&f.loop, up);
        assert_int_equal(link_manager_msg_room(mgr, DEV_ID), MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD);

        /* An exact duplicate is counted as dup; the same counter with another tag is a forgery
         * (mac_errors). Neither is a replay. */
        {
                const uint8_t ping[5] = { MCUGW_MSG_PING, 1, 0, 0, 0 };
                raw_send(d, ping, sizeof ping, 2, false, kept, &kept_len);
                spin(&f.loop, one_dup);
                kept[kept_len - 1] ^= 1;
                write_frame(d, kept, kept_len);
                spin(&f.loop, one_mac_error);
                assert_int_equal(counter("replays"), 0);
                assert_int_equal(counter("dup"), 1);
        }

        /* An unknown message type: counted as such (not malformed), and the gateway says so. */
        {
                const uint8_t odd[3] = { 0x30, 1, 2 };
                raw_send(d, odd, sizeof odd, 1, false, NULL, NULL);
                spin(&f.loop, one_error);
                assert_int_equal(d->last_error, -MCUGW_ETYPE);
                assert_non_null(strstr(d->error_text, "0x30"));
                assert_int_equal(counter("unknown_type"), 1);
                assert_int_equal(counter("malformed"), 0);
                assert_int_equal(counter("errors_sent"), 1);
        }
        /* A malformed message is malformed; an ERROR from the device is never answered. */
        {
                const uint8_t bad_ping[3] = { MCUGW_MSG_PING, 1, 2 };
                const uint8_t bad_error[2] = { MCUGW_MSG_ERROR, 1 };
                raw_send(d, bad_ping, sizeof bad_ping, 1, false, NULL, NULL);
                spin(&f.loop, two_errors);
                assert_int_equal(d->last_error, -MCUGW_ETRUNC);
                assert_int_equal(counter("malformed"), 1);
                usleep(1100 * 1000); /* the ERROR budget refills */
                raw_send(d, bad_error, sizeof bad_error, 1, false, NULL, NULL);
                settle(&f.loop);
                assert_int_equal(counter("malformed"), 2);
                assert_int_equal(d->errors, 2);
        }

        /* A result for a command the gateway never sent is dropped and counted. */
        assert_int_equal(mcugw_device_send_command_result(&d->dev, 999, 0, NULL, 0), 0);
        spin(&f.loop, one_stray);
        assert_int_equal(results, 0);
        assert_int_equal(counter("command_results"), 0);
        /* A command that fits the device's 96-byte limit goes out; its result comes back once. */
        memset(big, 'x', sizeof big);
        assert_int_equal(link_manager_send_command(mgr, DEV_ID, 5, big,
                                                   MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD - 5),
                         0);
        spin(&f.loop, got_command);
        assert_int_equal(d->last_command, 5);
        assert_int_equal(mcugw_device_send_command_result(&d->dev, 5, 0, NULL, 0), 0);
        spin(&f.loop, one_result);
        assert_int_equal(last_result, 5);
        /* ... and a second result for it is a stray. */
        assert_int_equal(mcugw_device_send_command_result(&d->dev, 5, 0, NULL, 0), 0);
        settle(&f.loop);
        assert_int_equal(results, 1);
        assert_int_equal(counter("stray_results"), 2);
        /* One byte more does not fit: refused at once, counted, nothing sent. */
        assert_int_equal(link_manager_send_command(mgr, DEV_ID, 6, big,
                                                   MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD - 4),
                         -EMSGSIZE);
        assert_int_equal(counter("too_big"), 1);
        assert_int_equal(counter("commands"), 1);
        /* Any other message too big for the device: -EMSGSIZE, counted. */
        {
                struct mcugw_msg v = { .type = MCUGW_MSG_VENDOR_FIRST };
                v.u.raw.body = big;
                v.u.raw.len = MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD;
                assert_int_equal(link_manager_send(mgr, DEV_ID, &v), -EMSGSIZE);
                assert_int_equal(counter("too_big"), 2);
        }

        close(d->fd);
        link_fixture_stop(&f);
        link_fixture_close(&f);
        free(d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_messages),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
