/* SPDX-License-Identifier: Apache-2.0 */
/* The device shadow's pure parts: names, response topics, the checks of a desired state and of
 * a CONFIG_RESULT, the [Shadow] value parsers, and CONFIG / CONFIG_RESULT on the wire. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cloud/shadow.h"
#include "mcugw/proto.h"
#include "mcugw/wire.h"

static char *allowed_v[] = { "interval", "mode" };
static const struct conf_strv allowed = { allowed_v, 2 };

static void test_name(void **state)
{
        char out[SHADOW_NAME_MAX + 1], longid[80];

        assert_int_equal(shadow_name(SHADOW_THING_PER_DEVICE, "{gateway}-{device}", "gw", "d-1",
                                     out, sizeof out),
                         6);
        assert_string_equal(out, "gw-d-1");
        assert_int_equal(shadow_name(SHADOW_GATEWAY, "{device}", "gw", "dev:2", out, sizeof out),
                         5);
        /* Not a thing-name character, and too long for a named shadow (64). */
        assert_int_equal(
                shadow_name(SHADOW_THING_PER_DEVICE, "{device}", "gw", "a.b", out, sizeof out),
                -EINVAL);
        memset(longid, 'x', 65);
        longid[65] = 0;
        assert_int_equal(shadow_name(SHADOW_GATEWAY, "{device}", "gw", longid, out, sizeof out),
                         -EINVAL);
        assert_int_equal(
                shadow_name(SHADOW_THING_PER_DEVICE, "{device}", "gw", longid, out, sizeof out),
                65);
        assert_int_equal(shadow_name(SHADOW_THING_PER_DEVICE, "{device}", "gw", longid, out, 10),
                         -EINVAL);
}

static void test_topic(void **state)
{
        char name[SHADOW_NAME_MAX + 1];
        enum shadow_op op;

        assert_int_equal(shadow_topic_parse(SHADOW_THING_PER_DEVICE, "gw",
                                            "$aws/things/gw-d1/shadow/update/delta", name, &op),
                         0);
        assert_string_equal(name, "gw-d1");
        assert_int_equal(op, SHADOW_OP_UPDATE_DELTA);
        assert_int_equal(shadow_topic_parse(SHADOW_THING_PER_DEVICE, "gw",
                                            "$aws/things/t/shadow/get/rejected", name, &op),
                         0);
        assert_int_equal(op, SHADOW_OP_GET_REJECTED);
        assert_int_equal(shadow_topic_parse(SHADOW_GATEWAY, "gw",
                                            "$aws/things/gw/shadow/name/d1/update/accepted", name,
                                            &op),
                         0);
        assert_string_equal(name, "d1");
        assert_int_equal(op, SHADOW_OP_UPDATE_ACCEPTED);
        /* Another thing's named shadows, the documents topic, other services: not ours. */
        assert_int_equal(shadow_topic_parse(SHADOW_GATEWAY, "gw",
                                            "$aws/things/gw2/shadow/name/d1/get/accepted", name,
                                            &op),
                         -ENOENT);
        assert_int_equal(shadow_topic_parse(SHADOW_THING_PER_DEVICE, "gw",
                                            "$aws/things/t/shadow/update/documents", name, &op),
                         -ENOENT);
        assert_int_equal(shadow_topic_parse(SHADOW_THING_PER_DEVICE, "gw",
                                            "$aws/things/t/jobs/notify", name, &op),
                         -ENOENT);
        assert_int_equal(shadow_topic_parse(SHADOW_THING_PER_DEVICE, "gw",
                                            "$aws/things//shadow/get/accepted", name, &op),
                         -ENOENT);
}

static void test_desired(void **state)
{
        json_t *cfg = NULL, *refused = NULL, *st;
        const char *reason = NULL;
        char big[1200];
        uint64_t v = 0;

        const char *delta = "{\"version\":7,\"timestamp\":1,\"state\":{\"interval\":30,"
                            "\"mode\":{\"a\":[1,2]},\"secret\":1}}";
        assert_int_equal(
                shadow_delta_parse(delta, strlen(delta), &allowed, 3, &v, &cfg, &refused, &reason),
                0);
        assert_int_equal(v, 7);
        assert_int_equal(json_object_size(cfg), 2);
        assert_int_equal(json_array_size(refused), 1);
        assert_string_equal(json_string_value(json_array_get(refused, 0)), "secret");
        json_decref(cfg);
        json_decref(refused);

        /* Depth: the state object is level 1; {"mode":{"a":[1]}} is 3 deep. */
        st = json_loads("{\"mode\":{\"a\":[1]}}", 0, NULL);
        assert_int_equal(shadow_desired_check(st, &allowed, 2, &cfg, &refused, &reason), -EINVAL);
        assert_string_equal(reason, "nested too deep");
        assert_int_equal(shadow_desired_check(st, &allowed, 3, &cfg, &refused, &reason), 0);
        json_decref(cfg);
        json_decref(refused);
        json_decref(st);

        /* Too big for one CONFIG message. */
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = 0;
        st = json_pack("{ss}", "mode", big);
        assert_int_equal(shadow_desired_check(st, &allowed, 3, &cfg, &refused, &reason), -EMSGSIZE);
        json_decref(st);

        assert_int_equal(shadow_delta_parse("[]", 2, &allowed, 3, &v, &cfg, &refused, &reason),
                         -EINVAL);
        assert_int_equal(
                shadow_delta_parse("{\"state\":{}}", 12, &allowed, 3, &v, &cfg, &refused, &reason),
                -EINVAL); /* no version */
        assert_int_equal(shadow_delta_parse("{\"version\":1,\"state\":3}", 23, &allowed, 3, &v,
                                            &cfg, &refused, &reason),
                         -EINVAL);
}

static void test_result(void **state)
{
        json_t *applied = NULL;
        const char *reason = NULL;
        const char *ok = "{\"interval\":30,\"connected\":false}";

        /* A device reports only keys it may be told: "connected" is the gateway's. */
        assert_int_equal(shadow_result_parse((const uint8_t *)ok, strlen(ok), &allowed, 3, &applied,
                                             &reason),
                         0);
        assert_int_equal(json_object_size(applied), 1);
        assert_non_null(json_object_get(applied, "interval"));
        json_decref(applied);
        assert_int_equal(
                shadow_result_parse((const uint8_t *)"nope", 4, &allowed, 3, &applied, &reason),
                -EINVAL);
        assert_int_equal(shadow_result_parse((const uint8_t *)"{\"a\":1,\"a\":2}", 13, &allowed, 3,
                                             &applied, &reason),
                         -EINVAL);
}

static void test_config_values(void **state)
{
        const char *reason = NULL;
        struct conf_strv keys = { 0 };
        unsigned f = 0;
        int mode = -1;

        assert_int_equal(shadow_config_parse_mode("gateway", &mode, &reason), 0);
        assert_int_equal(mode, SHADOW_GATEWAY);
        assert_int_equal(shadow_config_parse_mode("on", &mode, &reason), -EINVAL);
        assert_int_equal(shadow_config_parse_reported("connected firmware", &f, &reason), 0);
        assert_int_equal(f, SHADOW_F_CONNECTED | SHADOW_F_FIRMWARE);
        assert_int_equal(shadow_config_parse_reported("colour", &f, &reason), -EINVAL);
        assert_int_equal(shadow_config_parse_key("interval mode", &keys, &reason), 0);
        assert_int_equal(keys.n, 2);
        /* The gateway's own fields cannot be desired. */
        assert_int_equal(shadow_config_parse_key("connected", &keys, &reason), -EINVAL);
        assert_int_equal(shadow_config_parse_key("a/b", &keys, &reason), -EINVAL);
        conf_strv_clear(&keys);
}

static void test_wire(void **state)
{
        uint8_t buf[64];
        struct mcugw_msg m = { .type = MCUGW_MSG_CONFIG }, d;
        int n;

        m.u.command.id = 0x01020304;
        m.u.command.payload = (const uint8_t *)"{\"a\":1}";
        m.u.command.len = 7;
        n = mcugw_msg_encode(&m, buf, sizeof buf);
        assert_int_equal(n, 12);
        assert_int_equal(buf[0], 0x09);
        assert_int_equal(buf[1], 0x04); /* little-endian version */
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), 0);
        assert_int_equal(d.type, MCUGW_MSG_CONFIG);
        assert_int_equal(d.u.command.id, 0x01020304);
        assert_memory_equal(d.u.command.payload, "{\"a\":1}", 7);

        m = (struct mcugw_msg){ .type = MCUGW_MSG_CONFIG_RESULT };
        m.u.result.id = 9;
        m.u.result.status = -2;
        m.u.result.payload = (const uint8_t *)"{}";
        m.u.result.len = 2;
        n = mcugw_msg_encode(&m, buf, sizeof buf);
        assert_int_equal(n, 9);
        assert_int_equal(mcugw_msg_decode(buf, (size_t)n, &d), 0);
        assert_int_equal(d.u.result.status, -2);
        assert_int_equal(mcugw_msg_decode(buf, 6, &d), MCUGW_ETRUNC);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_name),          cmocka_unit_test(test_topic),
                cmocka_unit_test(test_desired),       cmocka_unit_test(test_result),
                cmocka_unit_test(test_config_values), cmocka_unit_test(test_wire),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
