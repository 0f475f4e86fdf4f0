/* SPDX-License-Identifier: Apache-2.0 */
/* basic/slab: blocks are zeroed, distinct and reused, and a page goes back once it is empty. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "basic/slab.h"

static void test_pages_come_and_go(void **state)
{
        struct slab s;
        void *b[100];

        (void)state;
        assert_int_equal(slab_init(&s, 440), 0);
        assert_int_equal(s.size, 448);
        assert_true(s.per_page >= 2);
        for (size_t i = 0; i < 100; i++) {
                b[i] = slab_alloc(&s);
                assert_non_null(b[i]);
                for (size_t k = 0; k < 440; k++)
                        assert_int_equal(((uint8_t *)b[i])[k], 0);
                memset(b[i], 0xa5, 440);
        }
        assert_int_equal(s.used, 100);
        for (size_t i = 0; i < 100; i++)
                for (size_t j = i + 1; j < 100; j++)
                        assert_true((uint8_t *)b[i] + 440 <= (uint8_t *)b[j] ||
                                    (uint8_t *)b[j] + 440 <= (uint8_t *)b[i]);
#ifndef __SANITIZE_ADDRESS__
        assert_int_equal(s.pages, (100 + s.per_page - 1) / s.per_page);
#endif
        /* Every other block back: no page is empty, and the holes are used again, zeroed. */
        for (size_t i = 0; i < 100; i += 2)
                slab_free(&s, b[i]);
        for (size_t i = 0; i < 100; i += 2) {
                b[i] = slab_alloc(&s);
                assert_int_equal(((uint8_t *)b[i])[0], 0);
        }
#ifndef __SANITIZE_ADDRESS__
        assert_int_equal(s.pages, (100 + s.per_page - 1) / s.per_page);
#endif
        /* All back: nothing stays mapped. */
        for (size_t i = 0; i < 100; i++)
                slab_free(&s, b[i]);
        slab_free(&s, NULL);
        assert_int_equal(s.used, 0);
        assert_int_equal(s.pages, 0);
        assert_null(s.partial);
}

static void test_sizes(void **state)
{
        struct slab s;

        (void)state;
        assert_int_equal(slab_init(&s, 1), 0);
        assert_int_equal(s.size, 16);
        assert_int_equal(slab_init(&s, s.page_size), -EINVAL);
        assert_int_equal(slab_init(&s, s.page_size / 2), -EINVAL); /* the header needs room */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pages_come_and_go),
                cmocka_unit_test(test_sizes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
