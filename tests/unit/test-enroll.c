/* SPDX-License-Identifier: Apache-2.0 */
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

#include "devices/enroll.h"
#include "mcugw/proto.h"

/* Two valid keys (base64 of 32 bytes) */
#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static bool has_error(const struct conf_errors *e, const char *needle)
{
        for (size_t i = 0; i < e->n; i++)
                if (strstr(e->msgs[i], needle))
                        return true;
        for (size_t i = 0; i < e->n; i++)
                fprintf(stderr, "  have: %s\n", e->msgs[i]);
        return false;
}

static void test_base64(void **state)
{
        uint8_t k[32];
        char out[45];

        assert_int_equal(key_from_base64(K1, strlen(K1), k), 0);
        assert_int_equal(k[0], 0);
        assert_int_equal(k[31], 31);
        key_to_base64(k, out);
        assert_string_equal(out, K1);
        assert_int_equal(key_from_base64("short", strlen("short"), k), -EINVAL);
        assert_int_equal(key_from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh==",
                                         strlen("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh=="), k),
                         -EINVAL);
        assert_int_equal(key_from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh!=",
                                         strlen("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh!="), k),
                         -EINVAL);
}

static void test_csv(void **state)
{
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        const char *csv = "id,public_key,groups,state\n"
                          "# a comment\n"
                          "dev-1," K1 ",floor1;hvac,active\n"
                          "dev-2, " K2 " ,\"a,b\",pending\r\n";

        assert_int_equal(enroll_parse_csv("f.csv", csv, &l, &e), 0);
        assert_int_equal(l.n, 2);
        assert_string_equal(l.v[0].id, "dev-1");
        assert_string_equal(l.v[0].groups, "floor1,hvac");
        assert_int_equal(l.v[0].state, DEVICE_ACTIVE);
        assert_int_equal(l.v[0].line, 3);
        assert_string_equal(l.v[1].groups, "a,b");
        assert_int_equal(l.v[1].state, DEVICE_PENDING);
        enroll_list_free(&l);
}

static void test_csv_errors(void **state)
{
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        const char *csv = "dev-1," K1 "\n"
                          "bad id!," K2 "\n"
                          "dev-3,notakey\n"
                          "dev-1," K2 "\n"
                          "dev-5," K1 ",,sleepy\n"
                          "onlyonefield\n"
                          "dev-7,\"unterminated\n";

        assert_int_equal(enroll_parse_csv("f.csv", csv, &l, &e), -EINVAL);
        assert_null(l.v);
        assert_true(has_error(&e, "f.csv:2: id 'bad id!'"));
        assert_true(has_error(&e, "f.csv:3: public_key 'notakey'"));
        assert_true(has_error(&e, "f.csv:4: device id dev-1 defined twice"));
        assert_true(has_error(&e, "f.csv:5: state 'sleepy'"));
        assert_true(has_error(&e, "f.csv:6: expected id,public_key"));
        assert_true(has_error(&e, "f.csv:7: expected id,public_key"));
        conf_errors_clear(&e);
}

static void test_json(void **state)
{
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        const char *js = "[{\"id\":\"a\",\"public_key\":\"" K1 "\",\"groups\":[\"x\",\"y\"]},"
                         " {\"id\":\"b\",\"public_key\":\"" K2 "\",\"state\":\"pending\"}]";

        assert_int_equal(enroll_parse_json("f.json", js, &l, &e), 0);
        assert_int_equal(l.n, 2);
        assert_string_equal(l.v[0].groups, "x,y");
        assert_int_equal(l.v[1].state, DEVICE_PENDING);
        enroll_list_free(&l);

        assert_int_equal(enroll_parse_json("f.json", "{}", &l, &e), -EINVAL);
        assert_true(has_error(&e, "expected a JSON array"));
        conf_errors_clear(&e);
        assert_int_equal(enroll_parse_json("f.json",
                                           "[{\"id\":\"a\",\"public_key\":\"" K1 "\"},"
                                           "{\"id\":\"b\",\"public_key\":\"" K1 "\",\"x\":1}]",
                                           &l, &e),
                         -EINVAL);
        assert_true(has_error(&e, "entry 2: \"x\""));
        assert_true(has_error(&e, "has the same key as a"));
        conf_errors_clear(&e);
}

static void test_dir(void **state)
{
        char dir[] = "/tmp/mcugw-test-enroll-XXXXXX", p[128], cmd[160];
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        FILE *f;

        assert_non_null(mkdtemp(dir));
        snprintf(p, sizeof p, "%s/10-a.conf", dir);
        f = fopen(p, "w");
        fprintf(f,
                "[Device]\nId=a\nPublicKey=%s\nGroups=g1\n\n[Device]\nId=b\nPublicKey=%s\n"
                "State=pending\n",
                K1, K2);
        fclose(f);
        assert_int_equal(enroll_load_dir(dir, &l, &e), 0);
        assert_int_equal(l.n, 2);
        assert_string_equal(l.v[1].id, "b");
        assert_int_equal(l.v[1].state, DEVICE_PENDING);
        enroll_list_free(&l);

        snprintf(p, sizeof p, "%s/20-b.conf", dir);
        f = fopen(p, "w");
        fprintf(f, "[Device]\nId=c\nPublicKey=%s\nColour=red\n[Thing]\nX=1\n", K1);
        fclose(f);
        assert_int_equal(enroll_load_dir(dir, &l, &e), -EINVAL);
        assert_true(has_error(&e, "20-b.conf:4: Colour=red: unknown key"));
        assert_true(has_error(&e, "20-b.conf:6: unknown section [Thing]"));
        assert_true(has_error(&e, "20-b.conf:2: device c has the same key as a"));
        conf_errors_clear(&e);

        /* A missing directory is simply empty. */
        assert_int_equal(enroll_load_dir("/nonexistent/devices.d", &l, &e), 0);
        assert_int_equal(l.n, 0);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_groups(void **state)
{
        char out[64];
        assert_int_equal(enroll_groups_normalize(" a, b;c ", out, sizeof out), 0);
        assert_string_equal(out, "a,b,c");
        assert_int_equal(enroll_groups_normalize("a b!", out, sizeof out), -EINVAL);
        assert_int_equal(enroll_groups_normalize("aaaaaaaaaa,bbbbbbbbbb", out, 8), -E2BIG);
}

/* A hostile import (every line the same key) costs O(n log n) and a bounded error list. */
static void test_many_duplicates(void **state)
{
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        size_t n = 20000, cap = n * 64, off = 0;
        char *csv = malloc(cap);

        assert_non_null(csv);
        for (size_t i = 0; i < n; i++)
                off += (size_t)snprintf(csv + off, cap - off, "d%zu,%s\n", i, K1);
        assert_int_equal(enroll_parse_csv("big.csv", csv, &l, &e), -EINVAL);
        assert_true(e.n <= 1001);
        assert_true(has_error(&e, "big.csv:2: device d1 has the same key as d0"));
        assert_true(has_error(&e, "(more errors not shown)"));
        conf_errors_clear(&e);
        free(csv);
}

/* One device id rule: the registry's and the wire's (HS1, SDK) agree on every byte and length. */
static void test_id_rule_matches_wire(void **state)
{
        char id[MCUGW_DEVICE_ID_MAX + 2];

        (void)state;
        for (int c = 1; c < 256; c++) {
                id[0] = 'a';
                id[1] = (char)c;
                id[2] = 0;
                assert_int_equal(enroll_id_valid(id), mcugw_device_id_valid(id, 2) == 1);
        }
        assert_true(enroll_id_valid("sensor-0001.a_b"));
        assert_false(enroll_id_valid("a/b") || mcugw_device_id_valid("a/b", 3));
        memset(id, 'x', sizeof id);
        id[MCUGW_DEVICE_ID_MAX] = 0;
        assert_true(enroll_id_valid(id) && mcugw_device_id_valid(id, MCUGW_DEVICE_ID_MAX));
        id[MCUGW_DEVICE_ID_MAX] = 'x';
        id[MCUGW_DEVICE_ID_MAX + 1] = 0;
        assert_true(!enroll_id_valid(id) && !mcugw_device_id_valid(id, MCUGW_DEVICE_ID_MAX + 1));
        assert_true(!enroll_id_valid("") && !mcugw_device_id_valid("", 0));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_id_rule_matches_wire),
                cmocka_unit_test(test_base64),
                cmocka_unit_test(test_csv),
                cmocka_unit_test(test_csv_errors),
                cmocka_unit_test(test_json),
                cmocka_unit_test(test_dir),
                cmocka_unit_test(test_groups),
                cmocka_unit_test(test_many_duplicates),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
