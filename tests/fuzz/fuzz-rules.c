/* SPDX-License-Identifier: Apache-2.0 */
/* Rule files (rules.h): the parser, then a few events through the evaluator with the result. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_fire(void *ud, const struct rule *r, const char *device, uint64_t value)
{
        (*(unsigned *)ud)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct conf_errors e = { 0 };
        struct rule_set rs = { 0 };
        struct rules_engine *eng;
        unsigned fired = 0;
        char *text;

        if (size > 256 * 1024)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        if (rules_parse_string("fuzz.conf", text, &rs, &e) == 0 &&
            rules_engine_new(&rs, 4, &eng) == 0) {
                for (unsigned i = 0; i < 64; i++) {
                        uint8_t b = size ? data[i % size] : 0;
                        char id[8];
                        snprintf(id, sizeof id, "d%u", b % 6);
                        rules_engine_add(eng, id, b & 1 ? "field" : NULL,
                                         (enum rule_metric)(b % _RULE_METRIC_MAX), b,
                                         (uint64_t)i * 997 * (b + 1), on_fire, &fired);
                        if (b % 7 == 0)
                                rules_engine_tick(eng, (uint64_t)i * 60000, on_fire, &fired);
                }
                rules_engine_free(eng);
        }
        rule_set_free(&rs);
        conf_errors_clear(&e);
        free(text);
        return 0;
}
