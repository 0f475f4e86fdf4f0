/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/slab.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_MALLOC 1
#endif
#endif

/* At the start of each page; the blocks follow. */
struct slab_page {
        struct slab_page *next, *prev; /* on s->partial */
        void *free;                    /* freed blocks, linked through their first word */
        size_t used;                   /* blocks handed out */
        size_t fresh;                  /* blocks never handed out start here */
};

#define SLAB_HEADER ((sizeof(struct slab_page) + 15u) & ~(size_t)15u)

int slab_init(struct slab *s, size_t size)
{
        long ps = sysconf(_SC_PAGESIZE);

        memset(s, 0, sizeof *s);
        s->page_size = ps > 0 ? (size_t)ps : 4096u;
        s->size = (MAX(size, sizeof(void *)) + 15u) & ~(size_t)15u;
        if (s->size > s->page_size)
                return -EINVAL;
        s->per_page = (s->page_size - SLAB_HEADER) / s->size;
        return s->per_page < 2 ? -EINVAL : 0;
}

static void partial_remove(struct slab *s, struct slab_page *pg)
{
        if (pg->prev)
                pg->prev->next = pg->next;
        else
                s->partial = pg->next;
        if (pg->next)
                pg->next->prev = pg->prev;
        pg->next = pg->prev = NULL;
}

static void partial_add(struct slab *s, struct slab_page *pg)
{
        pg->prev = NULL;
        pg->next = s->partial;
        if (s->partial)
                s->partial->prev = pg;
        s->partial = pg;
}

void *slab_alloc(struct slab *s)
{
        struct slab_page *pg = s->partial;
        uint8_t *b;

#ifdef SLAB_MALLOC
        b = calloc(1, s->size);
        if (b)
                s->used++;
        return b;
#endif
        if (!pg) {
                void *m = mmap(NULL, s->page_size, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED) {
                        errno = ENOMEM;
                        return NULL;
                }
                pg = m; /* zeroed by the kernel */
                partial_add(s, pg);
                s->pages++;
        }
        if (pg->free) {
                b = pg->free;
                memcpy(&pg->free, b, sizeof(void *));
        } else
                b = (uint8_t *)pg + SLAB_HEADER + pg->fresh++ * s->size;
        if (++pg->used == s->per_page)
                partial_remove(s, pg);
        s->used++;
        memset(b, 0, s->size);
        return b;
}

void slab_free(struct slab *s, void *p)
{
        struct slab_page *pg;

        if (!p)
                return;
        s->used--;
#ifdef SLAB_MALLOC
        free(p);
        return;
#endif
        pg = (struct slab_page *)((uintptr_t)p & ~(uintptr_t)(s->page_size - 1));
        if (pg->used-- == s->per_page)
                partial_add(s, pg);
        if (pg->used == 0) {
                partial_remove(s, pg);
                munmap(pg, s->page_size);
                s->pages--;
                return;
        }
        memcpy(p, &pg->free, sizeof(void *));
        pg->free = p;
}
