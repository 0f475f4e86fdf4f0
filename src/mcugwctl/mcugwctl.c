/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugwctl: the command-line client of the control socket. A subcommand table in the manner of
 * wireguard-tools' wg.c; each entry builds a request, sends it and prints the reply as a human
 * table or, with --json, as JSON for scripts. The commands live in one file per group (status.c,
 * audit.c, devices.c, keys.c, monitor.c, ota.c, cert.c, tail.c) around this one table; client.c
 * talks to the socket.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "basic/macro.h"
#include "mcugwctl/mcugwctl.h"

struct verb {
        const char *group; /* NULL for top-level verbs */
        const char *name;
        int (*fn)(int argc, char **argv);
        const char *help;
        const struct option *opts; /* its options (NULL: none), for options anywhere */
};

static const struct verb verbs[] = {
        { NULL, "status", do_status, "show the daemon's state", NULL },
        { NULL, "reload", do_reload, "re-read the configuration (kept if invalid)", NULL },
        { NULL, "reconnect", do_reconnect, "connect the cloud session now, not after the backoff",
          NULL },
        { "audit", "tail", do_audit_tail, "show the last audit records [-n N] [--follow]",
          audit_tail_opts },
        { "audit", "verify", do_audit_verify, "check the audit log's hash chain", NULL },
        { "audit", "config", do_audit_config,
          "check the configuration against the security baseline, show drift", NULL },
        { "audit", "baseline", do_audit_baseline, "accept: record the current state as baseline",
          NULL },
        { NULL, "metrics", do_metrics, "gateway and per-device metrics [--device ID]",
          metrics_opts },
        { NULL, "top", do_top, "live metrics, busiest devices first [--once] [--interval S]",
          top_opts },
        { NULL, "tail", do_tail, "watch the telemetry as it is relayed [--device ID] [--count N]",
          tail_opts },
        { NULL, "rules", do_rules, "list the monitoring rules and what they did", NULL },
        { NULL, "defender", do_defender, "Device Defender reports; send: publish one now", NULL },
        { NULL, "devices", do_devices, "list devices [--state S] [--group G]", devices_opts },
        { "device", "show", do_device_show, "show one device: ID", NULL },
        { "shadow", "get", do_shadow_get, "the device shadow the gateway last saw: ID", NULL },
        { "cert", "show", do_cert_show, "the gateway's MQTT certificate, expiry, provisioning",
          NULL },
        { "cert", "rotate", do_cert_rotate, "new key + certificate via the cloud (CSR)", NULL },
        { "ota", "list", do_ota_list, "OTA jobs and their state", NULL },
        { "ota", "show", do_ota_show, "one OTA job with per-device progress: ID", NULL },
        { "ota", "start", do_ota_start,
          "update devices from a signed file: FILE --device ID|--group G [--signature S] "
          "[--wait]",
          ota_start_opts },
        { "ota", "abort", do_ota_abort, "abort an OTA job: ID", NULL },
        { "device", "add", do_device_add, "enroll: ID PUBLIC_KEY [--groups G,H] [--pending]",
          device_add_opts },
        { "device", "approve", do_device_approve, "activate a pending device: ID", reason_opts },
        { "device", "quarantine", do_device_quarantine, "stop relaying a device: ID [--reason R]",
          reason_opts },
        { "device", "restore", do_device_restore, "release a quarantined device: ID", reason_opts },
        { "device", "revoke", do_device_revoke, "revoke a device for good: ID [--reason R]",
          reason_opts },
        { "device", "disconnect", do_device_disconnect, "end a device's session: ID", reason_opts },
        { "device", "rotate-session", do_device_rotate,
          "force a new handshake (fresh session keys): ID", reason_opts },
        { "device", "remove", do_device_remove,
          "forget a device, keep its audit history: ID [--force] [--reason R]",
          device_remove_opts },
        { "device", "set-key", do_device_set_key,
          "replace a device's key, end its session: ID PUBLIC_KEY", NULL },
        { "device", "import", do_device_import,
          "bulk enroll, all or nothing: FILE (.csv/.json) [--update|--skip-existing]",
          device_import_opts },
        { "device", "export", do_device_export,
          "the registry as an import file [--format csv|json]", device_export_opts },
        { NULL, "pubkey", do_pubkey, "the public key of a private key read from stdin", NULL },
        { NULL, "keygen", do_keygen, "create a key pair: PRIVATE_KEY_FILE, prints the public key",
          NULL },
        { NULL, "attest", do_attest,
          "sign a device for onboarding: --manufacturer-key K --key-id I DEVICE_ID PUBLIC_KEY",
          attest_opts },
        { NULL, "factory-keys", do_factory_keys,
          "N key pairs + import.csv: DIR --count N [--prefix P] [--groups G]", factory_keys_opts },
};

static void help(void)
{
        printf("Usage: mcugwctl [--socket PATH] [--json] COMMAND [ARGS]\n\n"
               "Query and administer mcugwd over its control socket\n"
               "(default %s, or $MCUGW_SOCKET). Without a command: status.\n\nCommands:\n",
               DEFAULT_SOCKET);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char name[48];
                snprintf(name, sizeof name, "%s%s%s", verbs[i].group ? verbs[i].group : "",
                         verbs[i].group ? " " : "", verbs[i].name);
                printf("  %-22s %s\n", name, verbs[i].help);
        }
        printf("\nOptions (before or after the command):\n"
               "  -s, --socket PATH   control socket\n"
               "  -j, --json          machine-readable output\n"
               "  -t, --timeout SEC   how long to wait for a reply (default 30)\n"
               "  -h, --help          this help, or the command's\n"
               "      --version       version\n");
}

static bool is_group(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].group && strcmp(verbs[i].group, name) == 0)
                        return true;
        return false;
}

/* A group's commands, as `mcugwctl GROUP` shows them (to f). */
static void group_help(FILE *f, const char *group)
{
        fprintf(f, "Usage: mcugwctl %s COMMAND [ARGS]\n\nCommands:\n", group);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].group && strcmp(verbs[i].group, group) == 0)
                        fprintf(f, "  %-16s %s\n", verbs[i].name, verbs[i].help);
}

/* "a, b, c": the top-level verbs and groups, each once. */
static void list_commands(FILE *f)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const char *n = verbs[i].group ? verbs[i].group : verbs[i].name;
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = strcmp(verbs[j].group ? verbs[j].group : verbs[j].name, n) == 0;
                if (!seen)
                        fprintf(f, "%s%s", i ? ", " : "", n);
        }
}

static const struct option *find_option(const struct option *opts, const char *name, size_t len,
                                        int val)
{
        for (; opts && opts->name; opts++)
                if (name ? strlen(opts->name) == len && strncmp(opts->name, name, len) == 0
                         : opts->val == val)
                        return opts;
        return NULL;
}

enum { ARG_VERSION = 0x100 };
static const struct option global_opts[] = {
        { "socket", required_argument, NULL, 's' },    { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },   { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION }, {},
};

static int set_global(int c, const char *value)
{
        switch (c) {
        case 's': arg_socket = value; return 0;
        case 'j': arg_json = true; return 0;
        case 't': arg_timeout_ms = atoi(value) * 1000; return 0;
        case 'h': help(); return 1;
        case ARG_VERSION: printf("mcugwctl %s\n", MCUGW_VERSION); return 1;
        default: return -1;
        }
}

/* Options anywhere (`mcugwctl status --json`, as `networkctl list --json=short`): take the global
 * options out of a command's arguments, leaving the command's own (its opts win where a short
 * letter is both, e.g. `devices -s`) and their values. Stops at "--". Returns the new argc, or
 * -1 for --help (*ret_help) … */
static int strip_globals(int argc, char **argv, const struct option *opts, bool *ret_help)
{
        int out = 1;

        for (int i = 1; i < argc; i++) {
                const char *w = argv[i], *eq;
                const struct option *o = NULL, *g = NULL;
                bool value_next = false;

                if (strcmp(w, "--") == 0) {
                        while (i < argc)
                                argv[out++] = argv[i++];
                        break;
                }
                if (w[0] == '-' && w[1] == '-') {
                        eq = strchr(w + 2, '=');
                        size_t len = eq ? (size_t)(eq - w - 2) : strlen(w + 2);
                        o = find_option(opts, w + 2, len, 0);
                        if (!o)
                                g = find_option(global_opts, w + 2, len, 0);
                        value_next = !eq;
                } else if (w[0] == '-' && w[1] && !w[2]) {
                        o = find_option(opts, NULL, 0, w[1]);
                        if (!o)
                                g = find_option(global_opts, NULL, 0, w[1]);
                        value_next = true;
                        eq = NULL;
                } else
                        eq = NULL;
                if (g) {
                        const char *value = NULL;
                        if (g->has_arg == required_argument) {
                                if (eq)
                                        value = eq + 1;
                                else if (i + 1 < argc)
                                        value = argv[++i];
                                else {
                                        fail("option '%s' requires an argument", w);
                                        return -2;
                                }
                        }
                        if (g->val == 'h') {
                                *ret_help = true;
                                continue;
                        }
                        if (set_global(g->val, value) != 0)
                                return -2;
                        continue;
                }
                argv[out++] = argv[i];
                if (o && o->has_arg == required_argument && value_next && i + 1 < argc)
                        argv[out++] = argv[++i];
        }
        argv[out] = NULL;
        return out;
}

int main(int argc, char **argv)
{
        static char status_arg[] = "status";
        static char *status_argv[] = { status_arg, NULL };
        const struct verb *v = NULL;
        bool verb_help = false;
        int c, skip;

        while ((c = getopt_long(argc, argv, "+s:jt:h", global_opts, NULL)) >= 0) {
                int q = set_global(c, optarg);
                if (q > 0)
                        return EXIT_SUCCESS;
                if (q < 0)
                        return EXIT_FAILURE;
        }
        argc -= optind;
        argv += optind;
        if (argc == 0) {
                /* As wg does: no command shows the state. */
                argc = 1;
                argv = status_argv;
        }

        for (size_t i = 0; i < ELEMENTSOF(verbs) && !v; i++) {
                if (!verbs[i].group && strcmp(argv[0], verbs[i].name) == 0)
                        v = &verbs[i];
                else if (verbs[i].group && strcmp(argv[0], verbs[i].group) == 0 && argc > 1 &&
                         strcmp(argv[1], verbs[i].name) == 0)
                        v = &verbs[i];
        }
        if (!v && is_group(argv[0])) {
                if (argc == 1 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                        group_help(stdout, argv[0]);
                        return EXIT_SUCCESS;
                }
                fail("unknown command '%s %s'", argv[0], argv[1]);
                group_help(stderr, argv[0]);
                return EXIT_FAILURE;
        }
        if (!v) {
                fputs("mcugwctl: unknown command '", stderr);
                fputs(argv[0], stderr);
                fputs("'; commands: ", stderr);
                list_commands(stderr);
                fputs(" (see mcugwctl --help)\n", stderr);
                return EXIT_FAILURE;
        }
        skip = v->group ? 1 : 0;
        argc = strip_globals(argc - skip, argv + skip, v->opts, &verb_help);
        argv += skip;
        if (argc < 0)
                return EXIT_FAILURE;
        if (arg_timeout_ms <= 0)
                return fail("--timeout must be a positive number of seconds");
        if (verb_help) {
                printf("mcugwctl %s%s%s: %s\n", v->group ? v->group : "", v->group ? " " : "",
                       v->name, v->help);
                return EXIT_SUCCESS;
        }
        return v->fn(argc, argv);
}
