/* SPDX-License-Identifier: Apache-2.0 */
/* MCUboot image header and TLV areas. */
#include <stdint.h>
#include <stdlib.h>

#include "ota/ota_mcuboot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct ota_mcuboot_info info;
        char err[160], v[40];

        if (ota_mcuboot_parse(data, size, &info, err, sizeof err) == 0) {
                if (info.hashed_len > size || info.total_len != size ||
                    (info.sig_len && info.sig_off + info.sig_len > size))
                        abort();
                ota_mcuboot_version_str(&info.version, v, sizeof v);
        }
        return 0;
}
