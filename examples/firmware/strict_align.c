/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memcpy for parts that trap unaligned accesses (the Cortex-M3 build: CCR.UNALIGN_TRP on).
 *
 * newlib-nano's memcpy for ARMv7-M is prebuilt to use unaligned word loads when source and
 * destination are misaligned to each other, which ARMv7-M allows unless the trap is on; the
 * SDK (rightly) copies keys and payloads between arbitrary byte offsets. -mno-unaligned-access
 * only covers the code we compile, so the M3 build links this copy in front of newlib's: words
 * when both pointers are aligned, bytes otherwise. (Found by the M3 test: the first handshake
 * faulted in memcpy, called from mcugw_noise_init.) Cortex-M0 parts need the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef FW_ALIGN_TRAP
/* Keep GCC from turning the loops back into a call to memcpy. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void *
memcpy(void *restrict dst, const void *restrict src, size_t n)
{
        uint8_t *d = dst;
        const uint8_t *s = src;

        if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
                for (; n >= 4; n -= 4, d += 4, s += 4)
                        *(uint32_t *)(void *)d = *(const uint32_t *)(const void *)s;
        }
        while (n--)
                *d++ = *s++;
        return dst;
}
#endif
