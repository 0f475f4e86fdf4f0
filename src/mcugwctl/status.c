/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: status, reload, reconnect: the daemon and its cloud session. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "mcugwctl/mcugwctl.h"

/* The cloud session and the outbox (docs/mqtt.md). */
static void print_status_mqtt(json_t *m, json_t *ob)
{
        if (!m)
                return;
        if (strcmp(jstr(m, "state"), "disabled") == 0)
                printf("MQTT:      disabled (no [MQTT] Host=)\n");
        else {
                json_t *servers = json_object_get(m, "servers");
                char next[48] = "", which[64] = "";
                if (json_is_integer(json_object_get(m, "next_attempt_ms")))
                        snprintf(next, sizeof next, ", next attempt in %lld s",
                                 (jint(m, "next_attempt_ms") + 999) / 1000);
                /* With several Host=, which one is in use (or being tried). */
                if (json_array_size(servers) > 1)
                        snprintf(which, sizeof which, " (Host= %lld of %zu)",
                                 jint(m, "server_index"), json_array_size(servers));
                const char *st = jstr(m, "state");
                /* "connected to", "connecting to", but "disconnected from". */
                printf("MQTT:      %s %s %s%s as %s (MQTT %s), %lld connect(s), %lld "
                       "attempt(s)%s\n",
                       st, strncmp(st, "dis", 3) == 0 ? "from" : "to", jstr(m, "server"), which,
                       jstr(m, "client_id"), jstr(m, "protocol"), jint(m, "connects"),
                       jint(m, "attempts"), next);
                printf("Publish:   %lld/s (%lld msgs/s), %lld publishes, %lld acked, %lld in "
                       "flight, %lld rejected%s\n",
                       jint(m, "publishes_per_s"), jint(m, "msgs_per_s"), jint(m, "publishes"),
                       jint(m, "acked"), jint(m, "inflight"), jint(m, "rejected"),
                       json_is_true(json_object_get(m, "batching")) ? ", batched" : "");
                if (*jstr(m, "last_error"))
                        printf("MQTT error: %s\n", jstr(m, "last_error"));
                if (jint(m, "unexpected_messages"))
                        printf("Ignored:   %lld message(s) on unexpected topics (the first on "
                               "each is in the journal)\n",
                               jint(m, "unexpected_messages"));
        }
        if (ob) {
                char used[32], max[32];
                format_bytes((double)jint(ob, "bytes"), used, sizeof used);
                format_bytes((double)jint(ob, "max_bytes"), max, sizeof max);
                printf("Outbox:    %lld message(s), %s of %s, %lld dropped (quota)\n",
                       jint(ob, "rows"), used, max, jint(ob, "dropped"));
        }
        if (ob && (jint(ob, "refused") || jint(ob, "commit_failures")))
                printf("Outbox:    %lld message(s) refused (devices told to retry), %lld failed "
                       "commit(s)\n",
                       jint(ob, "refused"), jint(ob, "commit_failures"));
        if (ob && json_is_false(json_object_get(json_object_get(ob, "space"), "quota_fits"))) {
                json_t *sp = json_object_get(ob, "space");
                char need[32], db[32], fs[32];
                format_bytes((double)jint(sp, "needed"), need, sizeof need);
                format_bytes((double)jint(sp, "db_bytes"), db, sizeof db);
                format_bytes((double)jint(sp, "fs_free"), fs, sizeof fs);
                printf("Warning:   the outbox quota does not fit: it needs ~%s, the database has "
                       "%s and its file system %s free\n",
                       need, db, fs);
        }
}

/* Fleet provisioning / rotation: one line, only when there is something to say. */
void print_provisioning(json_t *p)
{
        if (!p || (strcmp(jstr(p, "mode"), "none") == 0 && strcmp(jstr(p, "state"), "idle") == 0))
                return;
        if (json_is_true(json_object_get(p, "complete")))
                printf("Provision: complete, thing %s, certificate %s; the claim is no longer "
                       "used\n",
                       jstr(p, "thing_name"), jstr(p, "certificate_id"));
        else
                printf("Provision: %s %s, %lld attempt(s)\n", jstr(p, "mode"), jstr(p, "state"),
                       jint(p, "attempts"));
        if (*jstr(p, "last_error"))
                printf("Provision error: %s\n", jstr(p, "last_error"));
}

/* "A.B, C.D" of the changed keys that wait for a restart. */
static void print_restart_pending(json_t *pending)
{
        json_t *k;
        size_t i;

        json_array_foreach (pending, i, k)
                printf("%s%s", i ? ", " : "", json_string_value(k));
}

static void print_status(json_t *d)
{
        json_t *files = json_object_get(d, "config_files"), *dev = json_object_get(d, "devices");
        char up[64];

        format_duration(jint(d, "uptime_ms") / 1000, up, sizeof up);
        printf("Gateway:   %s\n", jstr(d, "gateway"));
        printf("Version:   %s\n", jstr(d, "version"));
        printf("PID:       %lld\n", jint(d, "pid"));
        printf("Uptime:    %s\n", up);
        printf("Config:    %s (%zu file(s), sha256 %.16s…)\n",
               json_string_value(json_array_get(files, 0)), json_array_size(files),
               jstr(d, "config_hash"));
        if (dev)
                printf("Devices:   %lld enrolled: %lld active, %lld pending, %lld quarantined, "
                       "%lld revoked\n",
                       jint(dev, "total"), jint(dev, "active"), jint(dev, "pending"),
                       jint(dev, "quarantined"), jint(dev, "revoked"));
        printf("Audit:     %lld records\n", jint(json_object_get(d, "audit"), "records"));
        printf("Control:   %lld client(s)\n", jint(json_object_get(d, "control"), "clients"));
        if (json_is_object(json_object_get(d, "link"))) {
                json_t *lk = json_object_get(d, "link");
                printf("Link:      key %s; %lld device(s) connected on %lld link(s); %lld auth "
                       "failure(s)\n",
                       jstr(lk, "public_key"), jint(lk, "devices_connected"), jint(lk, "links"),
                       jint(json_object_get(lk, "counters"), "auth_failures"));
        }
        if (json_is_true(json_object_get(json_object_get(d, "ble"), "enabled"))) {
                json_t *b = json_object_get(d, "ble");
                printf("BLE:       %lld of %lld peripheral(s) connected; adapter %s; bus %s%s; "
                       "%lld ignored, %lld flood disconnect(s)\n",
                       jint(b, "peripherals_connected"), jint(b, "peripherals"),
                       *jstr(b, "adapter") ? jstr(b, "adapter") : "none",
                       json_is_true(json_object_get(b, "bus_connected")) ? "up" : "down",
                       json_is_true(json_object_get(b, "bluez")) ? "" : " (no bluetoothd)",
                       jint(b, "ignored"),
                       jint(json_object_get(b, "counters"), "flood_disconnects"));
        }
        printf("Reloads:   %lld ok, %lld failed\n", jint(json_object_get(d, "reloads"), "ok"),
               jint(json_object_get(d, "reloads"), "failed"));
        if (json_array_size(json_object_get(d, "restart_pending"))) {
                printf("Restart:   pending for ");
                print_restart_pending(json_object_get(d, "restart_pending"));
                printf(" (changed; in effect after a restart)\n");
        }
        print_status_mqtt(json_object_get(d, "mqtt"), json_object_get(d, "outbox"));
        print_provisioning(json_object_get(d, "provisioning"));
        if (*jstr(d, "last_error"))
                printf("Last error: %s\n", jstr(d, "last_error"));
}

int do_status(int argc, char **argv)
{
        if (argc > 1)
                return fail("status: unexpected argument '%s'", argv[1]);
        return run("status", NULL, print_status);
}

static void print_reloaded(json_t *d)
{
        json_t *pending = json_object_get(d, "restart_pending");

        printf("configuration reloaded (sha256 %.16s…)\n", jstr(d, "config_hash"));
        if (json_array_size(pending)) {
                printf("waiting for a restart: ");
                print_restart_pending(pending);
                printf(" (changed, still at the running value until mcugwd restarts)\n");
        }
}

int do_reload(int argc, char **argv)
{
        if (argc > 1)
                return fail("reload: unexpected argument '%s'", argv[1]);
        return run("reload", NULL, print_reloaded);
}

static void print_reconnecting(json_t *d)
{
        if (json_is_true(json_object_get(d, "in_progress")))
                printf("an attempt to connect to %s is under way\n", jstr(d, "server"));
        else
                printf("connecting to %s now\n", jstr(d, "server"));
}

int do_reconnect(int argc, char **argv)
{
        if (argc > 1)
                return fail("reconnect: unexpected argument '%s'", argv[1]);
        return run("reconnect", NULL, print_reconnecting);
}
