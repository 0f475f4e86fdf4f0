/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: the ota group: jobs, their progress, start and abort (docs/ota.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <unistd.h>

#include "basic/macro.h"
#include "mcugwctl/mcugwctl.h"

/* ---- ota ---------------------------------------------------------------------------------- */

static void print_ota_list(json_t *d)
{
        size_t i;
        json_t *j;

        printf("%-28s %-6s %-12s %-14s %s\n", "JOB", "SOURCE", "STATE", "VERSION", "DEVICES");
        json_array_foreach (d, i, j) {
                printf("%-28s %-6s %-12s %-14s %lld/%lld ok%s%s\n",
                       json_string_value(json_object_get(j, "id")),
                       json_string_value(json_object_get(j, "source")),
                       json_string_value(json_object_get(j, "state")),
                       json_string_value(json_object_get(j, "version")),
                       json_integer_value(json_object_get(j, "succeeded")),
                       json_integer_value(json_object_get(j, "devices")),
                       json_object_get(j, "reason") ? "  " : "",
                       json_object_get(j, "reason")
                               ? json_string_value(json_object_get(j, "reason"))
                               : "");
        }
}

static void print_ota_job(json_t *j)
{
        size_t i;
        json_t *x;

        printf("job %s (%s): %s, version %s%s\n", json_string_value(json_object_get(j, "id")),
               json_string_value(json_object_get(j, "source")),
               json_string_value(json_object_get(j, "state")),
               json_string_value(json_object_get(j, "version")),
               json_is_true(json_object_get(j, "mcuboot")) ? " (MCUboot)" : "");
        if (json_object_get(j, "reason"))
                printf("  reason: %s\n", json_string_value(json_object_get(j, "reason")));
        json_array_foreach (json_object_get(j, "transfers"), i, x) {
                long long pct = json_integer_value(json_object_get(x, "percent"));
                char bar[21];
                memset(bar, '#', (size_t)(pct / 5));
                memset(bar + pct / 5, '.', (size_t)(20 - pct / 5));
                bar[20] = 0;
                printf("  %-24s %-10s [%s] %3lld%% %lld/%lld%s%s\n",
                       json_string_value(json_object_get(x, "device")),
                       json_string_value(json_object_get(x, "state")), bar, pct,
                       json_integer_value(json_object_get(x, "offset")),
                       json_integer_value(json_object_get(x, "size")),
                       json_object_get(x, "reason") ? "  " : "",
                       json_object_get(x, "reason")
                               ? json_string_value(json_object_get(x, "reason"))
                               : "");
        }
}

int do_ota_list(int argc, char **argv)
{
        return run("ota.list", json_object(), print_ota_list);
}

int do_ota_show(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota show ID");
        return run("ota.show", json_pack("{ss}", "id", argv[1]), print_ota_job);
}

int do_ota_abort(int argc, char **argv)
{
        if (argc != 2)
                return fail("usage: mcugwctl ota abort ID");
        return run("ota.abort", json_pack("{ss}", "id", argv[1]), NULL);
}

/* Follow a job until it ends: one progress line per change (or JSON at the end). */
static int ota_wait(const char *id)
{
        _cleanup_free_ char *last = NULL;

        for (;;) {
                struct client cl = { .fd = -1 };
                json_t *d = NULL;
                const char *st;
                char *now;
                int r = call(&cl, "ota.show", json_pack("{ss}", "id", id), &d);

                client_close(&cl);
                if (r < 0)
                        return EXIT_FAILURE;
                st = json_string_value(json_object_get(d, "state"));
                now = json_dumps(json_object_get(d, "transfers"), JSON_COMPACT);
                if (!arg_json && (!last || !now || strcmp(last, now) != 0)) {
                        print_ota_job(d);
                        fflush(stdout);
                }
                free(last);
                last = now;
                if (st && strcmp(st, "IN_PROGRESS") != 0 && strcmp(st, "QUEUED") != 0 &&
                    strcmp(st, "DOWNLOADING") != 0) {
                        if (arg_json)
                                print_json(d);
                        r = strcmp(st, "SUCCEEDED") == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
                        if (r != EXIT_SUCCESS)
                                fprintf(stderr, "mcugwctl: OTA job %s %s: %s\n", id, st,
                                        json_string_value(json_object_get(d, "reason")) ?: "");
                        json_decref(d);
                        return r;
                }
                json_decref(d);
                usleep(500 * 1000);
        }
}

const struct option ota_start_opts[] = {
        { "device", required_argument, NULL, 'd' },
        { "group", required_argument, NULL, 'g' },
        { "signature", required_argument, NULL, 's' },
        { "wait", no_argument, NULL, 'w' },
        {},
};

int do_ota_start(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *args = json_object(), *d = NULL;
        char *abs = NULL, id[80];
        bool wait = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "d:g:s:w", ota_start_opts, NULL)) >= 0)
                switch (c) {
                case 'd': json_object_set_new(args, "device", json_string(optarg)); break;
                case 'g': json_object_set_new(args, "group", json_string(optarg)); break;
                case 's': {
                        char *a = realpath(optarg, NULL);
                        if (!a) {
                                json_decref(args);
                                return fail("%s: %s", optarg, strerror(errno));
                        }
                        json_object_set_new(args, "signature", json_string(a));
                        free(a);
                        break;
                }
                case 'w': wait = true; break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (argc - optind != 1 ||
            (!json_object_get(args, "device") == !json_object_get(args, "group"))) {
                json_decref(args);
                return fail("usage: mcugwctl ota start FILE --device ID|--group G [--signature "
                            "FILE.sig] [--wait]");
        }
        abs = realpath(argv[optind], NULL);
        if (!abs) {
                json_decref(args);
                return fail("%s: %s", argv[optind], strerror(errno));
        }
        json_object_set_new(args, "file", json_string(abs));
        free(abs);
        r = call(&cl, "ota.start", args, &d);
        client_close(&cl);
        if (r < 0)
                return EXIT_FAILURE;
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(d, "id")) ?: "");
        if (!wait) {
                if (arg_json)
                        print_json(d);
                else
                        print_ota_job(d);
                json_decref(d);
                return EXIT_SUCCESS;
        }
        json_decref(d);
        return ota_wait(id);
}
