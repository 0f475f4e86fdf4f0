/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "basic/macro.h"

/*
 * Logging: to the journal with structured fields when stderr is connected to it (JOURNAL_STREAM),
 * to stderr otherwise. Functions that take an error code return it negated (-abs(r)), so a
 * caller can write `return log_error_errno(r, "…: %m");` — %m expands to strerror(-r).
 */

int log_level_from_string(const char *s);
const char *log_level_to_string(int level);
void log_set_level(int level);
int log_get_level(void);
/* Decide between journal and stderr; call once at start. */
void log_open(const char *ident);
/* Force stderr (tests, --check-config). */
void log_force_stderr(bool on);

/* device may be NULL; when set it becomes the DEVICE_ID= journal field and a message prefix. */
int log_internal(int level, int error, const char *device, const char *file, int line,
                 const char *fmt, ...) _printf_(6, 7);

#define log_full_errno(level, error, ...)                                                          \
        log_internal((level), (error), NULL, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)

#define log_device(level, dev, ...) log_internal((level), 0, (dev), __FILE__, __LINE__, __VA_ARGS__)
#define log_device_errno(level, e, dev, ...)                                                       \
        log_internal((level), (e), (dev), __FILE__, __LINE__, __VA_ARGS__)
