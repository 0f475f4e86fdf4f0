/* SPDX-License-Identifier: Apache-2.0 */
/* Cloud remediation requests (remedy_parse_request): JSON from the network. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/remedy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct remedy_request req;
        const char *err = NULL;

        if (remedy_parse_request(data, size, &req, &err) == 0) {
                /* Whatever was accepted is bounded and terminated. */
                if (strlen(req.command) >= sizeof req.command || !req.device[0] ||
                    strlen(req.reason) >= sizeof req.reason || strlen(req.id) >= sizeof req.id)
                        abort();
        } else if (!err)
                abort();
        return 0;
}
