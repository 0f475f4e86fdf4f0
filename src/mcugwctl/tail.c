/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl tail: the telemetry the gateway relays, as it goes (docs/control-protocol.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <unistd.h>

#include "basic/macro.h"
#include "ctl/ctlproto.h"
#include "mcugwctl/mcugwctl.h"

/* "2026-12-06T10:34:57Z pump-1 stream 0 seq 42 16 B {"t":21.5}" */
static void print_message(json_t *m)
{
        char t[32], b[32];
        json_t *p = json_object_get(m, "payload");
        _cleanup_free_ char *text = p ? json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

        if (arg_json) {
                /* One object a line (JSON Lines), for jq and friends. */
                _cleanup_free_ char *line = json_dumps(m, JSON_COMPACT);
                if (line)
                        puts(line);
                return;
        }
        format_time(jint(m, "ts_us"), t, sizeof t);
        format_bytes((double)jint(m, "bytes"), b, sizeof b);
        printf("%s %s stream %lld seq %lld %s %s%s\n", t, jstr(m, "device"), jint(m, "stream"),
               jint(m, "seq"), b, text ? text : "base64:", text ? "" : jstr(m, "payload_base64"));
}

const struct option tail_opts[] = {
        { "device", required_argument, NULL, 'd' },
        { "count", required_argument, NULL, 'n' },
        {},
};

int do_tail(int argc, char **argv)
{
        struct client cl = { .fd = -1 };
        json_t *args = json_object(), *d = NULL;
        long long count = -1, seen = 0;
        bool one;
        int c, ret = EXIT_FAILURE;
        char *end;

        optind = 0;
        while ((c = getopt_long(argc, argv, "d:n:", tail_opts, NULL)) >= 0)
                switch (c) {
                case 'd': json_object_set_new(args, "device", json_string(optarg)); break;
                case 'n':
                        count = strtoll(optarg, &end, 10);
                        if (*end || count < 1) {
                                json_decref(args);
                                return fail("tail: --count takes a positive number");
                        }
                        break;
                default: json_decref(args); return EXIT_FAILURE;
                }
        if (optind < argc) {
                json_decref(args);
                return fail("tail: unexpected argument '%s'", argv[optind]);
        }
        one = json_object_get(args, "device") != NULL;
        if (call(&cl, "telemetry.tail", args, &d) < 0) /* args stolen */
                goto out;
        json_decref(d);
        if (!arg_json && isatty(STDERR_FILENO))
                fprintf(stderr, "watching the telemetry of %s (Ctrl-C ends)\n",
                        one ? "one device" : "every device");
        while (count < 0 || seen < count) {
                json_t *m;
                int k = client_next_event(&cl, &m);

                if (k < 0)
                        goto out;
                if (k > 0) {
                        print_message(m);
                        seen++;
                }
                json_decref(m);
                fflush(stdout);
        }
        ret = EXIT_SUCCESS;
out:
        client_close(&cl);
        return ret;
}
