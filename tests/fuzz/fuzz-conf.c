/* SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/conf.h"
#include "basic/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        char *text;

        if (size > 64 * 1024)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        log_set_level(LOG_EMERG);
        if (conf_load_string("fuzz.conf", text, &c, &e) == 0)
                conf_free(c);
        conf_errors_clear(&e);
        free(text);
        return 0;
}
