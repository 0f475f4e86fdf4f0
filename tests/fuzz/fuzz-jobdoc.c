/* SPDX-License-Identifier: Apache-2.0 */
/* OTA job documents (afr_ota + mcugw targeting). */
#include <stdint.h>
#include <stdlib.h>

#include "ota/ota_jobdoc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct ota_jobdoc d;
        char err[200];

        if (ota_jobdoc_parse((const char *)data, size, &d, err, sizeof err) == 0)
                ota_jobdoc_clear(&d);
        return 0;
}
