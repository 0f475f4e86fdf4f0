/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * The cloud session's subscriptions: which handler gets a message on a topic. Pure code (no
 * I/O). Exact filters are found by a hash lookup; filters with '+' or '#' are few (a handful of
 * modules subscribe with one each) and are tried in the order they were added. An exact filter
 * wins over a wildcard one; of two identical filters the first added wins.
 *
 * The table holds only our own filters, so the chains stay short whatever topics the broker
 * sends (a lookup never grows with what a peer does).
 */

/* The most subscriptions a session takes: far more than the modules need (about 10); adding more
 * fails with -ENOSPC. */
#define SUBMAP_MAX 1024u

typedef void (*submap_fn)(void *userdata, const char *topic, const uint8_t *payload, size_t len);

struct submap_entry {
        char *filter;
        submap_fn fn;
        void *userdata;
        struct submap_entry *next;
};

struct submap {
        struct submap_entry **buckets; /* exact filters */
        size_t n_buckets;
        struct submap_entry *wild; /* in the order added */
        size_t n, max;
};

/* max: 0 for SUBMAP_MAX. */
void submap_init(struct submap *m, size_t max);
void submap_done(struct submap *m);
/* 0, -EINVAL (not a valid filter), -ENOSPC (max reached), -ENOMEM. */
int submap_add(struct submap *m, const char *filter, submap_fn fn, void *userdata);
/* Remove every entry with this userdata; returns how many. */
size_t submap_forget(struct submap *m, void *userdata);
/* The entry that handles topic, or NULL. */
const struct submap_entry *submap_find(const struct submap *m, const char *topic);
