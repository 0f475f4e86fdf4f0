/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Configuration: INI files in systemd style (CamelCase sections and keys), a main file plus sorted
 * drop-ins from FILE.d/NAME.conf; later files override earlier ones key by key. Every key is parsed
 * through one table (conf.c: conf_keys[]) that names its parser, its field and its default.
 * Parsing never stops at the first problem: every error is collected as "file:line: message".
 */

#define CONF_DEFAULT_PATH MCUGW_SYSCONFDIR "/mcugw/mcugw.conf"

enum conf_sync {
        CONF_SYNC_OFF,
        CONF_SYNC_NORMAL,
        CONF_SYNC_FULL,
        CONF_SYNC_EXTRA,
};

#define CONF_STRV_MAX 256

/* The value of a repeatable key. */
struct conf_strv {
        char **v;
        size_t n;
};

struct conf {
        /* [Gateway] */
        char *gateway_name;
        int log_level;

        /* [Paths] */
        char *state_dir;
        char *runtime_dir;
        char *control_socket;
        char *devices_dir;

        /* [Control] */
        mode_t socket_mode;
        char *admin_group;
        char *readonly_group;
        unsigned max_clients;
        uint64_t max_request_bytes;

        /* [Database] */
        int synchronous; /* enum conf_sync */
        uint64_t commit_interval_usec;

        /* [Audit] */
        unsigned refusal_audit_per_min;

        /* SHA-256 over every file read (names and contents), as hex. */
        char hash[65];
        /* The files that were read, in order. */
        char **files;
        size_t n_files;
};

struct conf_errors {
        char **msgs;
        size_t n;
};

/* Parse `path` and its drop-ins. On success *ret is a new config; errors are appended to err
 * and -EINVAL returned if there were any (then *ret is untouched). */
int conf_load(const char *path, struct conf **ret, struct conf_errors *err);
/* Parse a single in-memory buffer (for fuzzing and tests); `name` is used in messages. */
int conf_load_string(const char *name, const char *text, struct conf **ret,
                     struct conf_errors *err);
void conf_free(struct conf *c);

/* Keys whose change needs a restart; returns true and names one in *ret_key if b differs. */
bool conf_needs_restart(const struct conf *a, const struct conf *b, const char **ret_key);

/* The INI reader behind conf_load, for other files in the same syntax (enrollment files):
 * fn gets every Key=Value with its file, line and the running number of its section, so that
 * repeated sections ([Device] [Device] …) can be told apart. Errors go to err. */
typedef void (*conf_ini_fn)(void *userdata, const char *file, unsigned line,
                            unsigned section_index, const char *section, const char *key,
                            const char *value);
int conf_ini_parse_file(const char *path, conf_ini_fn fn, void *userdata,
                        struct conf_errors *err);
int conf_ini_parse_string(const char *name, const char *text, conf_ini_fn fn, void *userdata,
                          struct conf_errors *err);

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void conf_errors_clear(struct conf_errors *e);
