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

static void print_device_row(json_t *d)
{
        char seen[32] = "never";
        long long t = jint(d, "last_seen_us");
        if (t > 0)
                format_time(t, seen, sizeof seen);
        printf("%-20s %-12s %-5s %-12s %-21s %-16s %s\n", jstr(d, "id"), jstr(d, "state"),
               json_is_true(json_object_get(d, "connected")) ? "yes" : "no",
               *jstr(d, "fw_version") ? jstr(d, "fw_version") : "-", seen,
               *jstr(d, "link") ? jstr(d, "link") : "-", jstr(d, "groups"));
}

static void print_devices(json_t *arr)
{
        size_t i;
        json_t *d;
        printf("%-20s %-12s %-5s %-12s %-21s %-16s %s\n", "ID", "STATE", "CONN", "FIRMWARE",
               "LAST SEEN", "LINK", "GROUPS");
        json_array_foreach (arr, i, d)
                print_device_row(d);
        printf("%zu device(s)\n", json_array_size(arr));
}

static void print_device(json_t *d)
{
        const char *k;
        json_t *v;
        json_object_foreach (d, k, v) {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (json_is_string(v))
                        printf("%-16s %s\n", k, json_string_value(v));
                else
                        printf("%-16s %s\n", k, s ? s : "");
                free(s);
        }
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
        printf("imported %lld device(s)\n", jint(d, "imported"));
}

#define IMPORT_MAX ((size_t)64 * 1024 * 1024)

const struct option device_import_opts[] = {
        { "format", required_argument, NULL, 'f' },
        {},
};

int do_device_import(int argc, char **argv)
{
        const char *format = NULL, *path;
        _cleanup_free_ char *content = NULL;
        size_t len = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", device_import_opts, NULL)) >= 0)
                switch (c) {
                case 'f': format = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1)
                return fail("usage: mcugwctl device import FILE [--format csv|json]");
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
                   json_pack("{ss ss ss}", "format", format, "content", content, "name", path),
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
                               jstr(d, "groups"), jstr(d, "state"));
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
