/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * MQTT topic templates (docs/mqtt.md): text with the placeholders {gateway}, {device} and
 * {stream}, expanded for each publish. Pure code, no I/O, so it is unit-tested and fuzzable.
 *
 * Limits follow AWS IoT Core, which are the tightest of the brokers we target: at most 8 levels,
 * at most 256 bytes after expansion, no wildcards (+ #), no empty level, no leading '$' (the
 * reserved topics) and no NUL. A template is checked at config load against the longest values
 * its placeholders can take, so an accepted template can always be expanded.
 */

#define TOPIC_MAX_LEN 256
#define TOPIC_MAX_LEVELS 8
#define TOPIC_GATEWAY_MAX 64 /* [Gateway] Name= */
#define TOPIC_DEVICE_MAX 32  /* device ids (registry) */
#define TOPIC_STREAM_MAX 5   /* decimal uint16_t */

enum {
        TOPIC_VAR_GATEWAY = 1 << 0,
        TOPIC_VAR_DEVICE = 1 << 1,
        TOPIC_VAR_STREAM = 1 << 2,
};

/* Check a template: only the placeholders in `allowed` may appear, those in `required` must.
 * With TOPIC_VAR_DEVICE in `whole_level`, {device} must be a complete level on its own (needed
 * to turn the template into a subscription filter). Returns 0 or -EINVAL with *ret_reason. */
/* Topic templates as config values (config_parser_t, field: char *): {gateway} only; telemetry
 * ({gateway} {device} {stream}, {device} required); command ({device} a whole level); command
 * result ({gateway} {device}, {device} required). */
int topic_config_parse_gateway(const char *v, void *field, const char **reason);
int topic_config_parse_telemetry(const char *v, void *field, const char **reason);
int topic_config_parse_command(const char *v, void *field, const char **reason);
int topic_config_parse_result(const char *v, void *field, const char **reason);

int topic_template_check(const char *tmpl, unsigned allowed, unsigned required,
                         unsigned whole_level, const char **ret_reason);

/* Is s usable as one topic level (a device id or gateway name)? Non-empty, at most max bytes,
 * printable ASCII without / + # and not starting with '$'. */
bool topic_level_valid(const char *s, size_t max);

/* Expand tmpl into out (size n, NUL-terminated). device may be NULL if the template has no
 * {device}. Returns the length, or -EINVAL (bad device id or template), -ENAMETOOLONG. */
int topic_expand(const char *tmpl, const char *gateway, const char *device, uint16_t stream,
                 char *out, size_t n);

/* The subscription filter of a template whose {device} is a whole level: {device} becomes '+'. */
int topic_filter(const char *tmpl, const char *gateway, char *out, size_t n);

/* If topic matches tmpl (with {gateway} expanded), copy the {device} level into ret_device
 * (size TOPIC_DEVICE_MAX + 1) and return 0; -ENOENT if it does not match, -EINVAL if the device
 * level is not a valid id. */
int topic_match_device(const char *tmpl, const char *gateway, const char *topic,
                       char ret_device[TOPIC_DEVICE_MAX + 1]);
