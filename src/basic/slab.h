/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>

/*
 * Fixed-size blocks on pages of their own, each page handed back to the kernel (munmap) once its
 * last block is freed. For short-lived objects made in bursts, such as the state of handshakes in
 * flight: from malloc they would leave holes between the long-lived objects allocated in the
 * same burst (sessions, devices), and those holes stay resident after the burst is over.
 *
 * Under AddressSanitizer the blocks come from calloc, so that use after free is still caught.
 */

struct slab_page;

struct slab {
        size_t size;               /* of a block, rounded up to 16 */
        size_t per_page;           /* blocks on one page */
        size_t page_size;          /* sysconf(_SC_PAGESIZE) */
        struct slab_page *partial; /* pages with a free block */
        size_t pages;              /* mapped now */
        size_t used;               /* blocks handed out now */
};

/* Blocks of @size bytes: 0, or -EINVAL when fewer than two fit on a page. */
int slab_init(struct slab *s, size_t size);
/* A zeroed block, or NULL (errno ENOMEM). */
void *slab_alloc(struct slab *s);
/* Give a block of this slab back (NULL is ignored). Its contents are not wiped here. */
void slab_free(struct slab *s, void *p);
