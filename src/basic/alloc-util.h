/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Growable arrays: an array, its length and its capacity (`n_alloc`, in elements). Growing by one
 * element per realloc makes n appends cost O(n²) copies (under ASan, minutes for a large import);
 * doubling keeps them O(n).
 */

/* Make room for at least `need` elements in *p of `size` bytes each, *allocated being the
 * current capacity. 0, or -ENOMEM with *p and *allocated untouched. */
static inline int greedy_realloc(void **p, size_t *allocated, size_t need, size_t size)
{
        size_t n;
        void *q;

        if (need <= *allocated)
                return 0;
        n = *allocated ? *allocated : 8;
        while (n < need) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        if (size && n > SIZE_MAX / size)
                return -ENOMEM;
        q = realloc(*p, n * size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *allocated = n;
        return 0;
}

#define GREEDY_REALLOC(array, allocated, need)                                                     \
        greedy_realloc((void **)&(array), &(allocated), (need), sizeof *(array))
