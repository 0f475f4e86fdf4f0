/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: devices and the device group: enrollment, state changes, remedies, import and
 * export (docs/devices.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <fcntl.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "devices/enroll.h"
#include "mcugwctl/mcugwctl.h"

/* Column widths of the devices table: the widest value, so that a long id or link name pushes
 * the columns right instead of breaking them. */
struct dev_cols {
        int id, state, fw, seen, groups;
};

static void dev_cols_fit(struct dev_cols *w, json_t *d)
{
        char seen[48], groups[512];
        format_age(jint(d, "last_seen_us"), seen, sizeof seen);
        w->id = MAX(w->id, (int)strlen(jstr(d, "id")));
        w->state = MAX(w->state, (int)strlen(jstr(d, "state")));
        w->fw = MAX(w->fw, (int)strlen(jstr(d, "fw_version")));
        w->seen = MAX(w->seen, (int)strlen(seen));
        w->groups = MAX(w->groups, (int)strlen(jlist(d, "groups", ",", groups, sizeof groups)));
}

static void print_device_row_w(json_t *d, const struct dev_cols *w)
{
        char seen[48], groups[512];
        format_age(jint(d, "last_seen_us"), seen, sizeof seen);
        jlist(d, "groups", ",", groups, sizeof groups);
        printf("%-*s  %-*s  %-4s  %-*s  %-*s  %-*s  %s\n", w->id, jstr(d, "id"), w->state,
               jstr(d, "state"), json_is_true(json_object_get(d, "connected")) ? "yes" : "no",
               w->fw, *jstr(d, "fw_version") ? jstr(d, "fw_version") : "-", w->seen, seen,
               w->groups, *groups ? groups : "-", *jstr(d, "link") ? jstr(d, "link") : "-");
}

static const struct dev_cols dev_cols_min = { 2, 5, 8, 9, 6 }; /* the headers */

static void print_devices_header(const struct dev_cols *w)
{
        printf("%-*s  %-*s  %-4s  %-*s  %-*s  %-*s  %s\n", w->id, "ID", w->state, "STATE", "CONN",
               w->fw, "FIRMWARE", w->seen, "LAST SEEN", w->groups, "GROUPS", "LINK");
}

/* One device as a one-row table (the reply to add, approve, quarantine, …). */
static void print_device_row(json_t *d)
{
        struct dev_cols w = dev_cols_min;
        dev_cols_fit(&w, d);
        print_devices_header(&w);
        print_device_row_w(d, &w);
}

static void print_devices(json_t *arr)
{
        struct dev_cols w = dev_cols_min;
        size_t i;
        json_t *d;

        json_array_foreach (arr, i, d)
                dev_cols_fit(&w, d);
        print_devices_header(&w);
        json_array_foreach (arr, i, d)
                print_device_row_w(d, &w);
        printf("%zu device(s)\n", json_array_size(arr));
}

/* The link counters as an aligned table, three name/value pairs a line; zeros of the error
 * counters are left out so that what went wrong stands out. */
static void print_link_stats(json_t *ls)
{
        static const char *const always[] = { "frames_in", "frames_out", "bytes_in",
                                              "bytes_out", "telemetry",  "telemetry_bytes",
                                              "handshakes" };
        const char *k;
        json_t *v;
        int col = 0;

        printf("Link stats:\n");
        json_object_foreach (ls, k, v) {
                bool keep = false;
                size_t kl = strlen(k);
                if (!json_is_integer(v) || (kl > 3 && strcmp(k + kl - 3, "_us") == 0))
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(always) && !keep; i++)
                        keep = strcmp(k, always[i]) == 0;
                if (!keep && json_integer_value(v) == 0)
                        continue;
                printf("  %-16s %10lld%s", k, (long long)json_integer_value(v),
                       ++col % 3 == 0 ? "\n" : "");
        }
        if (col % 3)
                printf("\n");
}

static void print_device(json_t *d)
{
        /* The fields shown above the rest, with a label and a readable value. */
        static const char *const shown[] = { "id",           "public_key",   "state",
                                             "state_change", "groups",       "source",
                                             "fw_version",   "boot_counter", "reset_cause",
                                             "last_seen_us", "last_seen",    "link",
                                             "connected",    "link_stats" };
        json_t *sc = json_object_get(d, "state_change"), *v;
        char seen[96], groups[512];
        const char *k;

        format_time_age(jint(d, "last_seen_us"), seen, sizeof seen);
        jlist(d, "groups", ",", groups, sizeof groups);
        printf("Device:     %s\n", jstr(d, "id"));
        printf("State:      %s\n", jstr(d, "state"));
        if (sc) {
                char when[96];
                format_time_age(jint(sc, "ts_us"), when, sizeof when);
                printf("            %s by %s on %s%s%s\n", *jstr(sc, "from") ? "changed" : "set",
                       jstr(sc, "actor"), when, *jstr(sc, "reason") ? ": " : "",
                       jstr(sc, "reason"));
        }
        printf("Public key: %s\n", jstr(d, "public_key"));
        printf("Groups:     %s\n", *groups ? groups : "-");
        printf("Enrolled:   from %s\n", jstr(d, "source"));
        printf("Connected:  %s%s%s\n", json_is_true(json_object_get(d, "connected")) ? "yes" : "no",
               *jstr(d, "link")
                       ? json_is_true(json_object_get(d, "connected")) ? " on " : ", last on "
                       : "",
               jstr(d, "link"));
        printf("Last seen:  %s\n", seen);
        printf("Firmware:   %s, boot %lld, last reset: %s\n",
               *jstr(d, "fw_version") ? jstr(d, "fw_version") : "unknown", jint(d, "boot_counter"),
               reset_cause_name(jint(d, "reset_cause")));
        /* Anything else (added by newer daemons), as it comes. */
        json_object_foreach (d, k, v) {
                bool known = false;
                for (size_t i = 0; i < ELEMENTSOF(shown) && !known; i++)
                        known = strcmp(k, shown[i]) == 0;
                if (known)
                        continue;
                char label[80];
                snprintf(label, sizeof label, "%s:", k);
                if (json_is_string(v))
                        printf("%-11s %s\n", label, json_string_value(v));
                else {
                        _cleanup_free_ char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                        printf("%-11s %s\n", label, t ? t : "");
                }
        }
        if (json_is_object(json_object_get(d, "link_stats")))
                print_link_stats(json_object_get(d, "link_stats"));
}

const struct option devices_opts[] = {
        { "state", required_argument, NULL, 's' },
        { "group", required_argument, NULL, 'g' },
        {},
};

int do_devices(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "s:g:", devices_opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        if (device_state_from_string(optarg) < 0) {
                                json_decref(args);
                                return fail("devices: unknown state '%s' (valid: pending, active, "
                                            "quarantined, revoked)",
                                            optarg);
                        }
                        json_object_set_new(args, "state", json_string(optarg));
                        break;
                case 'g': json_object_set_new(args, "group", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (optind < argc) {
                json_decref(args);
                return fail("devices: unexpected argument '%s'", argv[optind]);
        }
        return run("devices", args, print_devices);
}

int do_device_show(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl device show ID");
        return run("device.show", json_pack("{ss}", "id", argv[1]), print_device);
}

int do_shadow_get(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl shadow get ID");
        return run("shadow.get", json_pack("{ss}", "id", argv[1]), print_json);
}

const struct option device_add_opts[] = {
        { "groups", required_argument, NULL, 'g' },
        { "pending", no_argument, NULL, 'p' },
        {},
};

int do_device_add(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "g:p", device_add_opts, NULL)) >= 0)
                switch (c) {
                case 'g': json_object_set_new(args, "groups", json_string(optarg)); break;
                case 'p': json_object_set_new(args, "state", json_string("pending")); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 2) {
                json_decref(args);
                return fail("usage: mcugwctl device add ID PUBLIC_KEY [--groups G,H] [--pending]");
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        json_object_set_new(args, "public_key", json_string(argv[optind + 1]));
        return run("device.add", args, print_device_row);
}

/* COMMAND ID [--reason TEXT] for the device verbs. */
const struct option reason_opts[] = {
        { "reason", required_argument, NULL, 'r' },
        {},
};

static int id_with_reason(const char *cmd, int argc, char **argv, void (*human)(json_t *))
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "r:", reason_opts, NULL)) >= 0)
                switch (c) {
                case 'r': json_object_set_new(args, "reason", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1) {
                json_decref(args);
                return fail("usage: mcugwctl %s ID [--reason TEXT]", cmd);
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        return run(cmd, args, human);
}

static int state_change(const char *cmd, int argc, char **argv)
{
        return id_with_reason(cmd, argc, argv, print_device_row);
}

int do_device_approve(int argc, char **argv)
{
        return state_change("device.approve", argc, argv);
}

int do_device_quarantine(int argc, char **argv)
{
        return state_change("device.quarantine", argc, argv);
}

int do_device_revoke(int argc, char **argv)
{
        return state_change("device.revoke", argc, argv);
}

int do_device_restore(int argc, char **argv)
{
        return state_change("device.restore", argc, argv);
}

static void print_removed(json_t *d)
{
        printf("%s: removed (its audit history is kept)\n", jstr(d, "id"));
}

const struct option device_remove_opts[] = {
        { "force", no_argument, NULL, 'f' },
        { "reason", required_argument, NULL, 'r' },
        {},
};

int do_device_remove(int argc, char **argv)
{
        json_t *args = json_object();
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "fr:", device_remove_opts, NULL)) >= 0)
                switch (c) {
                case 'f': json_object_set_new(args, "force", json_true()); break;
                case 'r': json_object_set_new(args, "reason", json_string(optarg)); break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1) {
                json_decref(args);
                return fail("usage: mcugwctl device remove ID [--force] [--reason TEXT]");
        }
        json_object_set_new(args, "id", json_string(argv[optind]));
        return run("device.remove", args, print_removed);
}

int do_device_set_key(int argc, char **argv)
{
        if (argc != 3)
                return fail("usage: mcugwctl device set-key ID PUBLIC_KEY");
        return run("device.set-key", json_pack("{ss ss}", "id", argv[1], "public_key", argv[2]),
                   print_device_row);
}

static void print_imported(json_t *d)
{
        printf("imported %lld device(s)", jint(d, "imported"));
        if (jint(d, "updated"))
                printf(", updated %lld", jint(d, "updated"));
        if (jint(d, "skipped"))
                printf(", skipped %lld already enrolled", jint(d, "skipped"));
        if (jint(d, "unchanged"))
                printf(", %lld unchanged", jint(d, "unchanged"));
        printf("\n");
}

#define IMPORT_MAX ((size_t)64 * 1024 * 1024)

const struct option device_import_opts[] = {
        { "format", required_argument, NULL, 'f' },
        { "update", no_argument, NULL, 'u' },
        { "skip-existing", no_argument, NULL, 'k' },
        {},
};

int do_device_import(int argc, char **argv)
{
        const char *format = NULL, *path;
        bool update = false, skip = false;
        _cleanup_free_ char *content = NULL;
        size_t len = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:uk", device_import_opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                case 'u': update = true; break;
                case 'k': skip = true; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1)
                return fail("usage: mcugwctl device import FILE [--format csv|json] "
                            "[--update|--skip-existing]");
        if (update && skip)
                return fail("device import: --update and --skip-existing exclude each other");
        if (format && strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
                return fail("device import: unknown format '%s' (valid: csv, json)", format);
        path = argv[optind];
        if (!format) {
                size_t n = strlen(path);
                format = n > 5 && strcmp(path + n - 5, ".json") == 0 ? "json" : "csv";
        }
        if (strcmp(path, "-") != 0) {
                /* A regular file, at most 64 MiB, never a FIFO that blocks the open. */
                char msg[4200];
                if (fileio_read(path, 0, IMPORT_MAX, &content, &len, msg, sizeof msg) < 0)
                        return fail("%s", msg);
        } else {
                size_t cap = 0;
                for (;;) {
                        char *n;
                        size_t k;
                        if (len + 65536 + 1 > cap) {
                                if (cap > IMPORT_MAX)
                                        return fail("%s: file too large", path);
                                n = realloc(content, cap + 65536 + 1);
                                if (!n)
                                        return fail("out of memory");
                                content = n;
                                cap += 65536 + 1;
                        }
                        k = fread(content + len, 1, cap - len - 1, stdin);
                        len += k;
                        if (k == 0)
                                break;
                }
                if (ferror(stdin))
                        return fail("cannot read %s", path);
                content[len] = 0;
        }
        if (memchr(content, 0, len))
                return fail("%s: NUL byte (not a text file?)", path);
        return run("device.import",
                   json_pack("{ss ss ss sb sb}", "format", format, "content", content, "name", path,
                             "update", update, "skip_existing", skip),
                   print_imported);
}

static json_t *export_data;

static void keep_export(json_t *d)
{
        export_data = json_incref(d);
}

/* The registry in the import formats, so that a gateway can be rebuilt or cloned from it. */
const struct option device_export_opts[] = {
        { "format", required_argument, NULL, 'f' },
        {},
};

int do_device_export(int argc, char **argv)
{
        const char *format = "csv";
        bool json_out = arg_json;
        char groups[512];
        size_t i;
        json_t *d;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", device_export_opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("usage: mcugwctl device export [--format csv|json] > FILE");
        if (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
                return fail("device export: unknown format '%s' (valid: csv, json)", format);
        arg_json = false;
        r = run("devices", NULL, keep_export);
        arg_json = json_out;
        if (r != EXIT_SUCCESS)
                return r;
        if (strcmp(format, "json") == 0 || arg_json) {
                json_t *out = json_array();
                json_array_foreach (export_data, i, d)
                        json_array_append_new(out, json_pack("{sO sO sO sO}", "id",
                                                             json_object_get(d, "id"), "public_key",
                                                             json_object_get(d, "public_key"),
                                                             "groups", json_object_get(d, "groups"),
                                                             "state", json_object_get(d, "state")));
                print_json(out);
                json_decref(out);
        } else {
                printf("id,public_key,groups,state\n");
                json_array_foreach (export_data, i, d)
                        printf("%s,%s,\"%s\",%s\n", jstr(d, "id"), jstr(d, "public_key"),
                               jlist(d, "groups", ",", groups, sizeof groups), jstr(d, "state"));
        }
        json_decref(export_data);
        return EXIT_SUCCESS;
}

static void print_done(json_t *d)
{
        printf("%s: %s done\n", jstr(d, "id"), jstr(d, "done"));
}

static int device_remedy(const char *cmd, int argc, char **argv)
{
        return id_with_reason(cmd, argc, argv, print_done);
}

int do_device_disconnect(int argc, char **argv)
{
        return device_remedy("device.disconnect", argc, argv);
}

int do_device_rotate(int argc, char **argv)
{
        return device_remedy("device.rotate-session", argc, argv);
}
