/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Cloud commands that carry a request id (docs/mqtt.md, Cloud → device commands): a command
 * payload of exactly {"request_id": "…", "p": "base64"} is unwrapped to the bytes of "p" for the
 * device, and its result echoes the request id, so that the cloud can match results to requests
 * (MQTT 3.1.1 has no correlation data). Anything else is a raw command, passed on as it is.
 * Pure code: no I/O, fuzzed by tests/fuzz/fuzz-cmdreq.c.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request id: 1 to 64 printable ASCII characters without blanks or quotes. */
#define CMDREQ_ID_MAX 64
/* Results still to come that remember their request id; the oldest is forgotten beyond this
 * (its result then goes out without request_id). */
#define CMDREQ_TABLE_SIZE 1024

/* Is this payload a request envelope? Returns 0 for a raw command (use payload as it is), 1
 * with the request id in ret_id and the decoded payload (malloc'd, *ret_len bytes, at most
 * max_payload) in *ret_payload, -EBADMSG for an envelope with a bad request id or bad base64,
 * -EMSGSIZE if the decoded payload would be over max_payload, -ENOMEM. */
int cmdreq_unwrap(const uint8_t *payload, size_t len, size_t max_payload,
                  char ret_id[CMDREQ_ID_MAX + 1], uint8_t **ret_payload, size_t *ret_len);

/* The gateway's command id → the cloud's request id, for the results still to come. */
struct cmdreq_table {
        struct cmdreq_entry {
                uint32_t command_id; /* 0: free */
                char request_id[CMDREQ_ID_MAX + 1];
        } v[CMDREQ_TABLE_SIZE];
        size_t next;
};

void cmdreq_remember(struct cmdreq_table *t, uint32_t command_id, const char *request_id);
/* Copy the request id of command_id into ret_id and forget it; false if there is none. */
bool cmdreq_take(struct cmdreq_table *t, uint32_t command_id, char ret_id[CMDREQ_ID_MAX + 1]);
