/* SPDX-License-Identifier: Apache-2.0 */
/* Request envelopes of cloud commands (cmdreq.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "basic/hexdecoct.h"
#include "basic/macro.h"
#include "cloud/cmdreq.h"

static bool request_id_valid(const char *s, size_t n)
{
        if (n == 0 || n > CMDREQ_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\')
                        return false;
        return true;
}

int cmdreq_unwrap(const uint8_t *payload, size_t len, size_t max_payload,
                  char ret_id[CMDREQ_ID_MAX + 1], uint8_t **ret_payload, size_t *ret_len)
{
        json_t *o, *id, *p;
        const char *b64, *rid;
        size_t b64_len, rid_len, cap;
        uint8_t *out;
        int n, r = 0;

        /* Cheap test first: most commands are not JSON objects at all. */
        if (len < 2 || payload[0] != '{')
                return 0;
        o = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(o) || json_object_size(o) != 2 ||
            !json_is_string(id = json_object_get(o, "request_id")) ||
            !json_is_string(p = json_object_get(o, "p"))) {
                json_decref(o);
                return 0;
        }
        rid = json_string_value(id);
        rid_len = json_string_length(id);
        b64 = json_string_value(p);
        b64_len = json_string_length(p);
        if (!request_id_valid(rid, rid_len) || b64_len % 4 != 0) {
                r = -EBADMSG;
                goto out;
        }
        cap = b64_len / 4 * 3;
        if (cap > max_payload + 2) {
                r = -EMSGSIZE;
                goto out;
        }
        out = malloc(cap ? cap : 1);
        if (!out) {
                r = -ENOMEM;
                goto out;
        }
        n = unbase64mem(b64, b64_len, out, cap);
        if (n < 0 || (size_t)n > max_payload) {
                free(out);
                r = n < 0 ? -EBADMSG : -EMSGSIZE;
                goto out;
        }
        memcpy(ret_id, rid, rid_len + 1);
        *ret_payload = out;
        *ret_len = (size_t)n;
        r = 1;
out:
        json_decref(o);
        return r;
}

void cmdreq_remember(struct cmdreq_table *t, uint32_t command_id, const char *request_id)
{
        struct cmdreq_entry *e = &t->v[t->next];

        /* A ring: the slot of the oldest remembered request is reused. */
        t->next = (t->next + 1) % CMDREQ_TABLE_SIZE;
        e->command_id = command_id;
        snprintf(e->request_id, sizeof e->request_id, "%s", request_id);
}

bool cmdreq_take(struct cmdreq_table *t, uint32_t command_id, char ret_id[CMDREQ_ID_MAX + 1])
{
        if (command_id == 0)
                return false;
        for (size_t i = 0; i < CMDREQ_TABLE_SIZE; i++)
                if (t->v[i].command_id == command_id) {
                        memcpy(ret_id, t->v[i].request_id, sizeof t->v[i].request_id);
                        t->v[i].command_id = 0;
                        return true;
                }
        return false;
}
