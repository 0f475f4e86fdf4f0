/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <jansson.h>
#include <uv.h>

/*
 * The control socket server: AF_UNIX stream socket, newline-delimited JSON (ctlproto.h). Every
 * connection's peer is identified with SO_PEERCRED/SO_PEERGROUPS and given a tier: root, the
 * daemon's own user and members of AdminGroup are admins; members of ReadOnlyGroup may query;
 * everyone else is refused (and audited, rate-limited). Modules register their commands with
 * control_add_commands().
 */

enum control_level {
        CONTROL_NONE = 0,
        CONTROL_READ = 1,
        CONTROL_ADMIN = 2,
};

struct control;
struct control_conn;
struct audit;

struct control_peer {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        enum control_level level;
        char actor[32]; /* "cli:uid=N" */
};

/* Return value of a handler that keeps the connection open to stream events. */
#define CONTROL_STREAM 1

/* A handler returns 0 and sets *ret_data (may stay NULL), or CONTROL_STREAM, or -errno after
 * calling control_conn_error() (otherwise a generic message is sent). */
typedef int (*control_handler_fn)(struct control_conn *c, json_t *args, json_t **ret_data,
                                  void *userdata);

struct control_command {
        const char *name;
        enum control_level level;
        control_handler_fn fn;
};

struct control_options {
        const char *path;
        mode_t mode;
        const char *admin_group;    /* may be NULL */
        const char *readonly_group; /* may be NULL */
        unsigned max_clients;
        size_t max_request;
        unsigned refusals_per_min;
};

/* [Control] MaxClients= (config_parser_t, field: unsigned, 1 .. 1024). */
int control_config_parse_max_clients(const char *v, void *field, const char **reason);

/* Listen on opts->path, or on listen_fd (>= 0) when socket-activated. */
int control_new(uv_loop_t *loop, struct audit *audit, const struct control_options *opts,
                int listen_fd, struct control **ret);
/* Groups, limits: applied on reload. */
void control_update(struct control *ctl, const struct control_options *opts);
int control_add_commands(struct control *ctl, const struct control_command *cmds, size_t n,
                         void *userdata);
/* Close every connection and the listener; frees itself once all handles are closed. */
void control_stop(struct control *ctl);
unsigned control_clients(const struct control *ctl);

const struct control_peer *control_conn_peer(const struct control_conn *c);
int control_conn_error(struct control_conn *c, int error, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Streaming: send an event line; a slow reader whose queue exceeds its limit is dropped. */
int control_conn_send_event(struct control_conn *c, const char *event, json_t *data);
/* Streaming connections subscribed to a topic, e.g. "audit". */
void control_conn_subscribe(struct control_conn *c, const char *topic);
void control_broadcast(struct control *ctl, const char *topic, json_t *data);
