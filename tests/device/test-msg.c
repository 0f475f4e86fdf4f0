/* SPDX-License-Identifier: Apache-2.0 */
/* Message codec: round trips, exact lengths, bounds, strictness. */
#include "test-util.h"

static int roundtrip(const struct mcugw_msg *m, struct mcugw_msg *out, uint8_t *buf, size_t cap)
{
        int n = mcugw_msg_encode(m, buf, cap);

        assert_true(n > 0);
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, out), 0);
        assert_int_equal(out->type, m->type);
        return n;
}

/* Every strict prefix must be rejected; fixed-size messages reject a trailing byte. */
static void check_prefixes(const uint8_t *buf, int n, int fixed)
{
        struct mcugw_msg m;
        uint8_t tmp[1100];
        int l;

        for (l = 0; l < n; l++) {
                int r = mcugw_msg_decode(buf, (size_t)l, &m);

                if (fixed)
                        assert_true(r == MCUGW_ETRUNC || r == MCUGW_EMALFORMED);
        }
        if (fixed) {
                memcpy(tmp, buf, (size_t)n);
                tmp[n] = 0;
                assert_int_equal(mcugw_msg_decode(tmp, (size_t)n + 1, &m), MCUGW_EMALFORMED);
        }
}

static void test_telemetry(void **state)
{
        struct mcugw_msg m, d;
        uint8_t buf[64];
        int n;

        (void)state;
        m.type = MCUGW_MSG_TELEMETRY;
        m.u.telemetry.stream = 0x1234;
        m.u.telemetry.seq = 0xdeadbeef;
        m.u.telemetry.flags = MCUGW_TLM_ACK_REQUESTED;
        m.u.telemetry.payload = (const uint8_t *)"hello";
        m.u.telemetry.len = 5;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 13);
        assert_int_equal(d.u.telemetry.stream, 0x1234);
        assert_int_equal(d.u.telemetry.seq, 0xdeadbeef);
        assert_int_equal(d.u.telemetry.flags, 1);
        assert_int_equal(d.u.telemetry.len, 5);
        assert_memory_equal(d.u.telemetry.payload, "hello", 5);
        assert_int_equal(mcugw_msg_decode(buf, 7, &d), MCUGW_ETRUNC);
        buf[7] = 0x80;
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), MCUGW_EMALFORMED);
        m.u.telemetry.flags = 0x02;
        assert_int_equal(mcugw_msg_encode(&m, buf, sizeof(buf)), MCUGW_EINVAL);
        m.u.telemetry.flags = 0;
        assert_int_equal(mcugw_msg_encode(&m, buf, 12), MCUGW_ENOSPC);
        m.u.telemetry.len = 0;
        assert_int_equal(roundtrip(&m, &d, buf, sizeof(buf)), 8);
        assert_int_equal(d.u.telemetry.len, 0);
}

static void test_fixed_messages(void **state)
{
        struct mcugw_msg m, d;
        uint8_t buf[64];
        int n;

        (void)state;
        m.type = MCUGW_MSG_ACK;
        m.u.ack.stream = 7;
        m.u.ack.seq = 99;
        m.u.ack.flags = MCUGW_ACK_CUMULATIVE;
        m.u.ack.status = MCUGW_ACK_RETRY;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 9);
        assert_int_equal(d.u.ack.seq, 99);
        assert_int_equal(d.u.ack.status, MCUGW_ACK_RETRY);
        check_prefixes(buf, n, 1);

        m.type = MCUGW_MSG_PING;
        m.u.ping.token = 0x01020304;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 5);
        assert_int_equal(d.u.ping.token, 0x01020304);
        check_prefixes(buf, n, 1);
        m.type = MCUGW_MSG_PONG;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        check_prefixes(buf, n, 1);
}

static void test_strings(void **state)
{
        struct mcugw_msg m, d;
        uint8_t buf[128];
        char fw[40];
        int n;

        (void)state;
        m.type = MCUGW_MSG_STATUS;
        m.u.status.boot_counter = 17;
        m.u.status.uptime_s = 3600;
        m.u.status.reset_cause = MCUGW_RESET_WATCHDOG;
        m.u.status.link_reason = MCUGW_LINK_NOSESSION;
        m.u.status.fw_version = "1.4.2+g1234";
        m.u.status.fw_version_len = 11;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 23);
        assert_int_equal(d.u.status.boot_counter, 17);
        assert_int_equal(d.u.status.reset_cause, MCUGW_RESET_WATCHDOG);
        assert_int_equal(d.u.status.link_reason, MCUGW_LINK_NOSESSION);
        assert_memory_equal(d.u.status.fw_version, "1.4.2+g1234", 11);
        check_prefixes(buf, n, 1);
        /* Declared length beyond the limit, unknown link reason, non-printable text. */
        buf[11] = MCUGW_FW_VERSION_MAX + 1;
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), MCUGW_EMALFORMED);
        buf[11] = 11;
        buf[10] = MCUGW_LINK_REASON_MAX + 1;
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), MCUGW_EMALFORMED);
        buf[10] = MCUGW_LINK_NOSESSION;
        buf[13] = '\n';
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), MCUGW_EMALFORMED);
        memset(fw, 'a', sizeof(fw));
        m.u.status.fw_version = fw;
        m.u.status.fw_version_len = MCUGW_FW_VERSION_MAX;
        assert_int_equal(roundtrip(&m, &d, buf, sizeof(buf)), 12 + MCUGW_FW_VERSION_MAX);
        m.u.status.fw_version_len = MCUGW_FW_VERSION_MAX + 1;
        assert_int_equal(mcugw_msg_encode(&m, buf, sizeof(buf)), MCUGW_EINVAL);

        m.type = MCUGW_MSG_ERROR;
        m.u.error.code = 513;
        m.u.error.text = "quota";
        m.u.error.text_len = 5;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 9);
        assert_int_equal(d.u.error.code, 513);
        check_prefixes(buf, n, 1);
        m.u.error.text_len = MCUGW_ERROR_TEXT_MAX + 1;
        assert_int_equal(mcugw_msg_encode(&m, buf, sizeof(buf)), MCUGW_EINVAL);
}

static void test_command_and_raw(void **state)
{
        struct mcugw_msg m, d;
        uint8_t buf[64];
        int n;

        (void)state;
        m.type = MCUGW_MSG_COMMAND;
        m.u.command.id = 42;
        m.u.command.payload = (const uint8_t *)"go";
        m.u.command.len = 2;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 7);
        assert_int_equal(d.u.command.id, 42);
        assert_int_equal(mcugw_msg_decode(buf, 4, &d), MCUGW_ETRUNC);

        m.type = MCUGW_MSG_COMMAND_RESULT;
        m.u.result.id = 42;
        m.u.result.status = -3;
        m.u.result.payload = NULL;
        m.u.result.len = 0;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(n, 7);
        assert_int_equal(d.u.result.status, -3);
        assert_int_equal(mcugw_msg_decode(buf, 6, &d), MCUGW_ETRUNC);

        m.type = MCUGW_MSG_OTA_CHUNK;
        m.u.raw.body = (const uint8_t *)"\x01\x02";
        m.u.raw.len = 2;
        n = roundtrip(&m, &d, buf, sizeof(buf));
        assert_int_equal(d.u.raw.len, 2);
        m.type = 0xf3;
        roundtrip(&m, &d, buf, sizeof(buf));
}

static void test_unknown_and_empty(void **state)
{
        struct mcugw_msg m, d;
        uint8_t buf[8] = { 0 };
        unsigned t;

        (void)state;
        assert_int_equal(mcugw_msg_decode(buf, 0, &d), MCUGW_ETRUNC);
        for (t = 0; t < 256; t++) {
                int known = (t >= 1 && t <= 10) || (t >= 0x20 && t <= 0x2f) || t >= 0xf0;

                buf[0] = (uint8_t)t;
                if (!known)
                        assert_int_equal(mcugw_msg_decode(buf, 8, &d), MCUGW_ETYPE);
        }
        m.type = 0x10;
        assert_int_equal(mcugw_msg_encode(&m, buf, sizeof(buf)), MCUGW_ETYPE);
}

/* The device's half: the same result as the full decoder for what a gateway sends, ETYPE for
 * what only devices send. */
static void test_decode_down(void **state)
{
        static const uint8_t msgs[][12] = {
                { MCUGW_MSG_TELEMETRY, 1, 0, 2, 0, 0, 0, 0, 'x' },
                { MCUGW_MSG_ACK, 1, 0, 2, 0, 0, 0, 1, 0 },
                { MCUGW_MSG_PING, 1, 2, 3, 4 },
                { MCUGW_MSG_PONG, 1, 2, 3, 4 },
                { MCUGW_MSG_STATUS, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0 },
                { MCUGW_MSG_ERROR, 15, 0, 2, 'n', 'o' },
                { MCUGW_MSG_COMMAND, 7, 0, 0, 0, '{', '}' },
                { MCUGW_MSG_COMMAND_RESULT, 7, 0, 0, 0, 0, 0 },
                { MCUGW_MSG_CONFIG, 7, 0, 0, 0, '{', '}' },
                { MCUGW_MSG_CONFIG_RESULT, 7, 0, 0, 0, 0, 0 },
                { MCUGW_MSG_OTA_CHUNK, 1, 2 },
                { 0xf1, 1 },
        };
        static const size_t lens[] = { 9, 9, 5, 5, 12, 6, 7, 7, 7, 7, 3, 2 };
        struct mcugw_msg a, b;
        uint8_t ea[16], eb[16];

        (void)state;
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
                uint8_t t = msgs[i][0];
                int up_only = t == MCUGW_MSG_TELEMETRY || t == MCUGW_MSG_STATUS ||
                              t == MCUGW_MSG_COMMAND_RESULT || t == MCUGW_MSG_CONFIG_RESULT;

                assert_int_equal(mcugw_msg_decode(msgs[i], lens[i], &a), 0);
                if (up_only) {
                        assert_int_equal(mcugw_msg_decode_down(msgs[i], lens[i], &b), MCUGW_ETYPE);
                        continue;
                }
                assert_int_equal(mcugw_msg_decode_down(msgs[i], lens[i], &b), 0);
                /* decoded alike: both encode back to the message */
                assert_int_equal(mcugw_msg_encode(&a, ea, sizeof ea), (int)lens[i]);
                assert_int_equal(mcugw_msg_encode(&b, eb, sizeof eb), (int)lens[i]);
                assert_memory_equal(ea, msgs[i], lens[i]);
                assert_memory_equal(eb, msgs[i], lens[i]);
                /* and the same refusals: one byte short */
                assert_int_equal(mcugw_msg_decode_down(msgs[i], lens[i] - 1, &b),
                                 mcugw_msg_decode(msgs[i], lens[i] - 1, &a));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_telemetry),         cmocka_unit_test(test_fixed_messages),
                cmocka_unit_test(test_strings),           cmocka_unit_test(test_command_and_raw),
                cmocka_unit_test(test_unknown_and_empty), cmocka_unit_test(test_decode_down),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
