/* SPDX-License-Identifier: Apache-2.0 */
/* The device shadow's parsers of cloud and device input: update/delta documents, CONFIG_RESULT
 * JSON and response topics. The first byte picks the parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloud/shadow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char *keys_v[] = { "interval", "mode", "label" };
        const struct conf_strv keys = { keys_v, 3 };
        json_t *a = NULL, *b = NULL;
        const char *reason = NULL;
        char name[SHADOW_NAME_MAX + 1], *topic;
        enum shadow_op op;
        uint64_t v;

        if (size < 1)
                return 0;
        switch (data[0] % 3) {
        case 0:
                if (shadow_delta_parse(data + 1, size - 1, &keys, 3, &v, &a, &b, &reason) == 0) {
                        json_decref(a);
                        json_decref(b);
                }
                break;
        case 1:
                if (shadow_result_parse(data + 1, size - 1, &keys, 3, &a, &reason) == 0)
                        json_decref(a);
                break;
        default:
                /* A C string of the bytes (strndup() would still read them as one). */
                topic = malloc(size);
                if (!topic)
                        return 0;
                memcpy(topic, data + 1, size - 1);
                topic[size - 1] = '\0';
                (void)shadow_topic_parse(data[0] & 4 ? SHADOW_GATEWAY : SHADOW_THING_PER_DEVICE,
                                         "gw", topic, name, &op);
                free(topic);
                break;
        }
        return 0;
}
