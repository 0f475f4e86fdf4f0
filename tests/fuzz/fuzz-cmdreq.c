/* SPDX-License-Identifier: Apache-2.0 */
/* Request envelopes of cloud commands (src/cloud/cmdreq.c): any payload from the broker. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloud/cmdreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char id[CMDREQ_ID_MAX + 1];
        uint8_t *p = NULL;
        size_t n = 0;
        int r = cmdreq_unwrap(data, size, 987, id, &p, &n);

        if (r > 0) {
                /* What was promised: a bounded payload and a printable id. */
                if (n > 987 || strlen(id) == 0 || strlen(id) > CMDREQ_ID_MAX)
                        abort();
                free(p);
        }
        return 0;
}
