/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <mosquitto.h>

#include "cloud/submap.h"

static bool is_wild(const char *filter)
{
        return strpbrk(filter, "+#") != NULL;
}

/* FNV-1a: the keys are our own filters, so no peer can choose collisions. */
static uint64_t hash(const char *s)
{
        uint64_t h = 0xcbf29ce484222325ULL;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
        return h;
}

void submap_init(struct submap *m, size_t max)
{
        *m = (struct submap){ .max = max ? max : SUBMAP_MAX };
}

static void free_chain(struct submap_entry *e)
{
        while (e) {
                struct submap_entry *next = e->next;
                free(e->filter);
                free(e);
                e = next;
        }
}

void submap_done(struct submap *m)
{
        for (size_t i = 0; i < m->n_buckets; i++)
                free_chain(m->buckets[i]);
        free(m->buckets);
        free_chain(m->wild);
        *m = (struct submap){ .max = m->max };
}

static void append(struct submap_entry **head, struct submap_entry *e)
{
        while (*head)
                head = &(*head)->next;
        e->next = NULL;
        *head = e;
}

/* Keep the load factor at most 1 (doubling, so n adds cost O(n)). */
static int grow(struct submap *m)
{
        size_t nb = m->n_buckets ? m->n_buckets * 2 : 16;
        struct submap_entry **b = calloc(nb, sizeof *b);

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_buckets; i++)
                for (struct submap_entry *e = m->buckets[i], *next; e; e = next) {
                        next = e->next;
                        append(&b[hash(e->filter) % nb], e);
                }
        free(m->buckets);
        m->buckets = b;
        m->n_buckets = nb;
        return 0;
}

int submap_add(struct submap *m, const char *filter, submap_fn fn, void *userdata)
{
        struct submap_entry *e;
        int r;

        if (!filter || !fn || mosquitto_sub_topic_check(filter) != MOSQ_ERR_SUCCESS)
                return -EINVAL;
        if (m->n >= m->max)
                return -ENOSPC;
        if (!is_wild(filter) && m->n >= m->n_buckets && (r = grow(m)) < 0)
                return r;
        e = calloc(1, sizeof *e);
        if (!e || !(e->filter = strdup(filter))) {
                free(e);
                return -ENOMEM;
        }
        e->fn = fn;
        e->userdata = userdata;
        append(is_wild(filter) ? &m->wild : &m->buckets[hash(filter) % m->n_buckets], e);
        m->n++;
        return 0;
}

static size_t forget_chain(struct submap_entry **p, void *userdata)
{
        size_t n = 0;
        while (*p) {
                struct submap_entry *e = *p;
                if (e->userdata != userdata) {
                        p = &e->next;
                        continue;
                }
                *p = e->next;
                free(e->filter);
                free(e);
                n++;
        }
        return n;
}

size_t submap_forget(struct submap *m, void *userdata)
{
        size_t n = forget_chain(&m->wild, userdata);
        for (size_t i = 0; i < m->n_buckets; i++)
                n += forget_chain(&m->buckets[i], userdata);
        m->n -= n;
        return n;
}

const struct submap_entry *submap_find(const struct submap *m, const char *topic)
{
        if (m->n_buckets)
                for (const struct submap_entry *e = m->buckets[hash(topic) % m->n_buckets]; e;
                     e = e->next)
                        if (strcmp(e->filter, topic) == 0)
                                return e;
        for (const struct submap_entry *e = m->wild; e; e = e->next) {
                bool match = false;
                if (mosquitto_topic_matches_sub(e->filter, topic, &match) == MOSQ_ERR_SUCCESS &&
                    match)
                        return e;
        }
        return NULL;
}
