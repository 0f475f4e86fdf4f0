/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <openssl/types.h>

/*
 * The machinery every configuration file shares: the INI reader (systemd syntax: CamelCase
 * sections and keys, no continuation lines), the list of "file:line: message" errors, and the
 * generic value parsers that a key table (daemon/conf.c) points at. Values specific to one
 * feature (an endpoint, a topic template, a Bluetooth address) are parsed beside that feature as
 * <module>_config_parse_<what>(), with the same signature (config_parser_t).
 */

/* ---- errors --------------------------------------------------------------------------------- */

struct conf_errors {
        char **msgs;
        size_t n;
};

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void conf_errors_clear(struct conf_errors *e);
/* Report every error, one per line: written to f as they are (--check-config prints
 * "file:line: message"), or, with f NULL, logged as errors after prefix (e.g. "reload: "). */
void conf_errors_print(const struct conf_errors *e, FILE *f, const char *prefix);

/* ---- repeatable keys ------------------------------------------------------------------------ */

#define CONF_STRV_MAX 256

/* The value of a repeatable key. */
struct conf_strv {
        char **v;
        size_t n;
};

/* -E2BIG beyond CONF_STRV_MAX entries, -ENOMEM. */
int conf_strv_append(struct conf_strv *l, const char *v);
void conf_strv_clear(struct conf_strv *l);
/* Replace *dst by a copy of *src; on -ENOMEM *dst is left empty. */
int conf_strv_copy(struct conf_strv *dst, const struct conf_strv *src);

/* ---- the INI reader ------------------------------------------------------------------------- */

/* fn gets every Key=Value with its file, line and the running number of its section, so that
 * repeated sections ([Device] [Device] …) can be told apart. Errors go to err. */
typedef void (*conf_ini_fn)(void *userdata, const char *file, unsigned line, unsigned section_index,
                            const char *section, const char *key, const char *value);
/* -errno (and an error in err) if the file cannot be opened. */
int conf_ini_parse_file(const char *path, conf_ini_fn fn, void *userdata, struct conf_errors *err);
int conf_ini_parse_string(const char *name, const char *text, conf_ini_fn fn, void *userdata,
                          struct conf_errors *err);

/* What the configuration loader adds to the plain reader: everything read (and, for a file, its
 * name) is hashed into md, and a section header section_known() rejects is an error. */
struct conf_ini_extra {
        EVP_MD_CTX *md;                             /* may be NULL */
        bool (*section_known)(const char *section); /* may be NULL */
};
int conf_ini_parse_file_extra(const char *path, const struct conf_ini_extra *x, conf_ini_fn fn,
                              void *userdata, struct conf_errors *err);
int conf_ini_parse_string_extra(const char *name, const char *text, const struct conf_ini_extra *x,
                                conf_ini_fn fn, void *userdata, struct conf_errors *err);

/* ---- value parsers -------------------------------------------------------------------------- */

/* yes/true/on/1 -> 1, no/false/off/0 -> 0, else -EINVAL: the booleans of every file we read. */
int conf_parse_boolean(const char *v);

/* Parse value into *field (whose C type the parser knows); on failure return -errno and, for
 * -EINVAL, set *ret_reason to a static explanation. An empty value resets where that makes
 * sense (optional strings, lists). */
typedef int (*config_parser_t)(const char *value, void *field, const char **ret_reason);

int config_parse_string(const char *v, void *field, const char **reason);     /* char * */
int config_parse_string_opt(const char *v, void *field, const char **reason); /* "": NULL */
/* struct conf_strv: each assignment adds an entry, an empty one clears the list (systemd). */
int config_parse_strv(const char *v, void *field, const char **reason);
int config_parse_path(const char *v, void *field, const char **reason); /* absolute */
/* An absolute path that fits an AF_UNIX sun_path. */
int config_parse_socket_path(const char *v, void *field, const char **reason);
int config_parse_bool(const char *v, void *field, const char **reason);     /* int */
int config_parse_mode(const char *v, void *field, const char **reason);     /* mode_t, octal */
int config_parse_size(const char *v, void *field, const char **reason);     /* uint64_t, 64K */
int config_parse_duration(const char *v, void *field, const char **reason); /* uint64_t µs */
int config_parse_port(const char *v, void *field, const char **reason);     /* unsigned */
/* unsigned 0..100000: audit records per minute. */
int config_parse_per_minute(const char *v, void *field, const char **reason);
/* The helper behind the bounded unsigned keys (field: unsigned). */
int config_parse_unsigned_range(const char *v, unsigned *field, uint64_t min, uint64_t max,
                                const char **reason);
