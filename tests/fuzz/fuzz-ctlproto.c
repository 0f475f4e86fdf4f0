/* SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>

#include "ctl/ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct ctl_request r;
        const char *err = NULL;
        json_t *d = NULL;
        char *msg = NULL;
        long long n;
        bool b;
        const char *s;

        if (ctlproto_parse_request((const char *)data, size, &r, &err) == 0) {
                /* What handlers do with arguments must be safe for any parsed request, too. */
                ctl_arg_int(r.args, "n", 0, 100000, 20, &n, &err);
                ctl_arg_bool(r.args, "follow", false, &b, &err);
                ctl_arg_string(r.args, "device", 64, &s, &err);
                ctl_request_done(&r);
        }
        if (ctlproto_parse_response((const char *)data, size, &d, &msg) >= 0) {
                json_decref(d);
                free(msg);
        }
        /* mcugwctl's splitter of long array replies, fed what follows the array's head. */
        {
                struct ctlproto_splitter sp = { 0 };
                size_t off = 0, len, used;
                int k;
                while ((k = ctlproto_split_array(&sp, (const char *)data + off, size - off, &len,
                                                 &used)) > 0) {
                        if (used > size - off || len > size - off)
                                abort();
                        off += used;
                        if (k == CTLPROTO_SPLIT_END)
                                break;
                }
        }
        return 0;
}
