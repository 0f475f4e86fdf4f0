/* SPDX-License-Identifier: Apache-2.0 */
/* Bulk-import parsers (CSV and JSON) and the enrollment-file INI path. The first byte picks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/enroll.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct conf_errors e = { 0 };
        struct enroll_list l = { 0 };
        char *text;

        if (size < 1 || size > 256 * 1024)
                return 0;
        text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = 0;
        if (data[0] & 1)
                enroll_parse_json("fuzz.json", text, &l, &e);
        else
                enroll_parse_csv("fuzz.csv", text, &l, &e);
        enroll_list_free(&l);
        conf_errors_clear(&e);
        free(text);
        return 0;
}
