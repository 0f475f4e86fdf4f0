/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * mcugwctl's insides, shared by its files (one per group of commands) and the one verb table in
 * mcugwctl.c: the global options, the socket client (client.c) and the printing helpers, and
 * every command with its option table. Not an interface of anything else.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

#define DEFAULT_SOCKET "/run/mcugw/control.sock"

/* --socket, --json, --timeout */
extern const char *arg_socket;
extern bool arg_json;
extern int arg_timeout_ms;

struct client {
        int fd;
        char *buf; /* received: [off, len) not consumed yet */
        size_t off, len, cap;
};

/* "mcugwctl: " and the message on stderr; returns EXIT_FAILURE. */
int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Read one line; timeout < 0 waits forever. Returns its length, 0 on EOF, -errno. */
ssize_t client_read_line(struct client *cl, int timeout, char **ret);
/* The next event of a subscription (audit tail --follow, tail): 1 with *ret (a new reference),
 * 0 for a line that is not an event, -1 when the connection ended (said on stderr). */
int client_next_event(struct client *cl, json_t **ret);
/* One request and its reply (*ret_data); errors are printed. */
int call(struct client *cl, const char *cmd, json_t *args, json_t **ret_data);
/* One request whose reply is an array, each element handed to each() as it arrives. */
int call_each(struct client *cl, const char *cmd, json_t *args,
              void (*each)(json_t *elem, void *userdata), void *userdata);
void client_close(struct client *cl);
/* One request, one reply, printed as JSON (--json) or through human; args is stolen. */
int run(const char *cmd, json_t *args, void (*human)(json_t *data));
void print_json(json_t *v);

/* Reading and printing replies. */
const char *jstr(json_t *o, const char *k);
long long jint(json_t *o, const char *k);
/* A list member (an array of strings) joined with sep into buf ("" when absent); a string (an
 * older daemon's "a,b") as it is. */
const char *jlist(json_t *o, const char *k, const char *sep, char *buf, size_t n);
double jreal(json_t *o, const char *k);
void format_time(long long ts_us, char *buf, size_t n);
void format_duration(long long s, char *buf, size_t n);
void format_bytes(double b, char *buf, size_t n);
/* "3m 2s ago" ("never" for 0), and "2026-12-06T10:34:57Z (3m 2s ago)". */
void format_age(long long ts_us, char *buf, size_t n);
void format_time_age(long long ts_us, char *buf, size_t n);
/* The name of a MCUGW_RESET_* code: "watchdog", "ota", … */
const char *reset_cause_name(long long cause);
/* The provisioning line of status and cert show (status.c). */
void print_provisioning(json_t *p);

/* The commands: argv[0] is the command's own name, as for main(). */
/* status.c */
int do_status(int argc, char **argv);
int do_reload(int argc, char **argv);
int do_reconnect(int argc, char **argv);
/* cert.c */
int do_cert_show(int argc, char **argv);
int do_cert_rotate(int argc, char **argv);
/* audit.c */
int do_audit_tail(int argc, char **argv);
int do_audit_verify(int argc, char **argv);
int do_audit_config(int argc, char **argv);
int do_audit_baseline(int argc, char **argv);
extern const struct option audit_tail_opts[];
/* devices.c */
int do_devices(int argc, char **argv);
int do_device_show(int argc, char **argv);
int do_shadow_get(int argc, char **argv);
int do_device_add(int argc, char **argv);
int do_device_approve(int argc, char **argv);
int do_device_quarantine(int argc, char **argv);
int do_device_revoke(int argc, char **argv);
int do_device_restore(int argc, char **argv);
int do_device_remove(int argc, char **argv);
int do_device_set_key(int argc, char **argv);
int do_device_import(int argc, char **argv);
int do_device_export(int argc, char **argv);
int do_device_disconnect(int argc, char **argv);
int do_device_rotate(int argc, char **argv);
extern const struct option devices_opts[];
extern const struct option device_add_opts[];
extern const struct option reason_opts[];
extern const struct option device_remove_opts[];
extern const struct option device_import_opts[];
extern const struct option device_export_opts[];
/* keys.c */
int do_keygen(int argc, char **argv);
int do_pubkey(int argc, char **argv);
int do_factory_keys(int argc, char **argv);
int do_attest(int argc, char **argv);
extern const struct option factory_keys_opts[];
extern const struct option attest_opts[];
/* monitor.c */
int do_metrics(int argc, char **argv);
int do_top(int argc, char **argv);
int do_rules(int argc, char **argv);
int do_defender(int argc, char **argv);
extern const struct option metrics_opts[];
extern const struct option top_opts[];
/* tail.c */
int do_tail(int argc, char **argv);
extern const struct option tail_opts[];
/* ota.c */
int do_ota_list(int argc, char **argv);
int do_ota_show(int argc, char **argv);
int do_ota_abort(int argc, char **argv);
int do_ota_start(int argc, char **argv);
extern const struct option ota_start_opts[];
