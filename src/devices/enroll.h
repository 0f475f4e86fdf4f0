/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "basic/conf-parser.h"
#include "basic/hexdecoct.h" /* keys are base64 of 32 bytes, as WireGuard writes them */

/*
 * Enrollment records, parsed but not applied: from DevicesDirectory (NAME.conf files holding
 * [Device] sections with Id=, PublicKey=, Groups=, State=) and from bulk import files (CSV or
 * JSON, see docs/devices.md). Pure code with no I/O beyond reading the files, so that it can be
 * fuzzed; every problem is reported as "file:line: message" and nothing is half-parsed.
 */

#define ENROLL_ID_MAX 32
#define ENROLL_KEY_LEN 32
#define ENROLL_GROUPS_MAX 256
#define ENROLL_MAX_ENTRIES 100000

enum device_state {
        DEVICE_PENDING,
        DEVICE_ACTIVE,
        DEVICE_QUARANTINED,
        DEVICE_REVOKED,
        _DEVICE_STATE_MAX,
};

struct enroll_entry {
        char id[ENROLL_ID_MAX + 1];
        uint8_t key[ENROLL_KEY_LEN];
        enum device_state state;
        char groups[ENROLL_GROUPS_MAX + 1];
        unsigned line; /* where it was defined (CSV line, JSON entry index + 1, [Device] line) */
};

struct enroll_list {
        struct enroll_entry *v;
        size_t n, n_alloc;
};

/* Every *.conf in dir, sorted; a missing directory is an empty list. */
int enroll_load_dir(const char *dir, struct enroll_list *out, struct conf_errors *err);
/* Bulk import formats. CSV: id,public_key[,groups[,state]] with an optional header line;
 * groups inside one CSV field are separated by ';' or by ',' when the field is quoted. JSON: an
 * array of {"id", "public_key", "groups": "a,b" | ["a","b"], "state"}. */
int enroll_parse_csv(const char *name, const char *text, struct enroll_list *out,
                     struct conf_errors *err);
int enroll_parse_json(const char *name, const char *text, struct enroll_list *out,
                      struct conf_errors *err);
void enroll_list_free(struct enroll_list *l);

bool enroll_id_valid(const char *id);
/* Normalise a group list ("a, b;c" -> "a,b,c"); -EINVAL for a bad name. */
int enroll_groups_normalize(const char *in, char *out, size_t n);
/* A JSON array of group names (["a", "b"]) as the list "a,b" in out (n bytes); -EINVAL for
 * anything but an array of strings, or a list that does not fit. The names are checked by
 * enroll_groups_normalize(), not here. */
struct json_t;
int enroll_groups_join(const struct json_t *array, char *out, size_t n);

const char *device_state_to_string(enum device_state s);
int device_state_from_string(const char *s);
