/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/*
 * The control protocol spoken on the control socket (docs/control-protocol.md): newline-delimited
 * JSON, one request object per line, one response object per line.
 *
 *   request:  {"cmd": "audit.tail", "args": {"n": 20}}          ("args" optional, an object)
 *   response: {"ok": true, "data": …}
 *             {"ok": false, "error": {"code": "EACCES", "message": "…"}}
 *   stream:   {"event": "audit", "data": …}                       (after a "follow" request)
 *
 * This file is the codec only: no I/O, so that it can be unit-tested and fuzzed.
 */

#define CTL_CMD_MAX 64

struct ctl_request {
        char cmd[CTL_CMD_MAX + 1];
        json_t *args; /* always an object (empty if absent) */
};

/* Parse one request line (without its newline). On failure returns -EINVAL/-EBADMSG and sets
 * *ret_error to a static message. */
int ctlproto_parse_request(const char *line, size_t len, struct ctl_request *ret,
                           const char **ret_error);
void ctl_request_done(struct ctl_request *r);

/* Serialise a success (data stolen, may be NULL), an error, or a stream event, with the trailing
 * newline. Returned strings are malloc'ed; NULL on ENOMEM. */
char *ctlproto_ok(json_t *data, size_t *ret_len);
char *ctlproto_error(const char *code, const char *message, size_t *ret_len);
char *ctlproto_event(const char *event, json_t *data, size_t *ret_len);

/* A success reply whose data is a long array goes out in pieces, each written when the client
 * has read the one before, so that neither side holds the whole reply: the head
 * CTLPROTO_ARRAY_HEAD, then the elements, then CTLPROTO_ARRAY_TAIL. The bytes are exactly those
 * of ctlproto_ok() with the same array. */
#define CTLPROTO_ARRAY_HEAD "{\"ok\":true,\"data\":["
#define CTLPROTO_ARRAY_TAIL "]}\n"
/* The elements of arr (stolen) as compact JSON separated by commas, with a leading comma unless
 * first. NULL on ENOMEM; an empty array gives "". */
char *ctlproto_array_chunk(json_t *arr, bool first, size_t *ret_len);

/* Client side of the above: split what follows CTLPROTO_ARRAY_HEAD into elements as it arrives.
 * buf holds the unconsumed bytes; the splitter remembers how far it has looked. Returns
 * CTLPROTO_SPLIT_ELEMENT with the element in buf[0, *ret_len) and *ret_used bytes to drop
 * (element and separator), CTLPROTO_SPLIT_END when buf starts with the end of the array (drop
 * *ret_used bytes, up to and including the newline), CTLPROTO_SPLIT_MORE when more bytes are
 * needed, -EBADMSG when this is not a JSON array. */
struct ctlproto_splitter {
        size_t pos;
        unsigned depth;
        bool in_string, escape, closed;
};
enum {
        CTLPROTO_SPLIT_MORE = 0,
        CTLPROTO_SPLIT_ELEMENT = 1,
        CTLPROTO_SPLIT_END = 2,
};
int ctlproto_split_array(struct ctlproto_splitter *s, const char *buf, size_t len, size_t *ret_len,
                         size_t *ret_used);

/* Client side: parse one response line. Returns 1 for ok (data in *ret_data), 0 for an error
 * (message in *ret_error, malloc'ed), 2 for a stream event (data in *ret_data, name in
 * *ret_error), -EBADMSG when the line is not a valid response. */
int ctlproto_parse_response(const char *line, size_t len, json_t **ret_data, char **ret_error);

/* Argument helpers used by handlers: return -EINVAL with a message when the type is wrong. */
int ctl_arg_int(json_t *args, const char *key, long long min, long long max, long long def,
                long long *ret, const char **ret_error);
int ctl_arg_bool(json_t *args, const char *key, bool def, bool *ret, const char **ret_error);
int ctl_arg_string(json_t *args, const char *key, size_t max_len, const char **ret,
                   const char **ret_error);

const char *ctlproto_errno_name(int error);

/* The control protocol's time convention (docs/control-protocol.md, "Times"): an instant goes
 * out as NAME_us (UNIX microseconds) and NAME (ISO 8601 UTC with milliseconds, null for never).
 * ctl_json_set_iso() adds NAME beside o's NAME_us (key_us must end in "_us");
 * ctl_json_add_iso_times() does it for every integer (or null) NAME_us member of v and of the
 * objects and arrays inside it. Only for JSON the gateway builds: a device's payload or a cloud
 * document is passed on as it came. */
void ctl_json_set_iso(json_t *o, const char *key_us);
void ctl_json_add_iso_times(json_t *v);
