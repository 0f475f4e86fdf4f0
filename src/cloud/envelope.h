/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * The batch envelope (docs/mqtt.md): many MCU messages in one JSON publish,
 *
 *   {"v":1,"gw":"GATEWAY","msgs":[
 *     {"d":"DEVICE","s":STREAM,"q":SEQ,"t":TS_MS,"p":"BASE64"}, ...],"n":N}
 *
 * d: the authenticated device id; s: stream id; q: the device's sequence number; t: when the
 * gateway received it (ms since the Unix epoch); p: the payload bytes, base64 (RFC 4648 with
 * padding). Entries are in outbox order, so per device in order. The encoder is hand-written
 * (no DOM) because it runs for every message; the size of the publish never exceeds `max`.
 */

struct envelope {
        char *buf;
        size_t len, cap, max;
        unsigned n;
        size_t header_len;
};

/* Start an envelope of at most max bytes for gateway. Returns 0 or -errno. */
int envelope_begin(struct envelope *e, const char *gateway, size_t max);
/* Append one message. -ENOSPC: it does not fit any more (the envelope is unchanged);
 * -EMSGSIZE: it would not fit even in an empty envelope. */
int envelope_add(struct envelope *e, const char *device, uint16_t stream, uint32_t seq,
                 int64_t ts_ms, const uint8_t *payload, size_t len);
/* Close the JSON; returns the text (valid until the next begin/free) and its length. */
const char *envelope_finish(struct envelope *e, size_t *ret_len);
void envelope_free(struct envelope *e);

/* The bytes one message adds to an envelope (including its separating comma). */
size_t envelope_entry_size(const char *device, size_t payload_len);
/* The bytes of an envelope with no messages. */
size_t envelope_overhead(const char *gateway);
