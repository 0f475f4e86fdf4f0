/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: cert show, cert rotate: the gateway's MQTT certificate (docs/provisioning.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <time.h>

#include "mcugwctl/mcugwctl.h"

static void print_cert(json_t *d)
{
        json_t *c = json_object_get(d, "certificate");
        char nb[32], na[32];
        time_t t;

        printf("File:        %s%s\n", jstr(d, "file"),
               *jstr(d, "in_use") && strcmp(jstr(d, "in_use"), jstr(d, "file")) != 0
                       ? " (not in use)"
                       : "");
        if (*jstr(d, "in_use") && strcmp(jstr(d, "in_use"), jstr(d, "file")) != 0)
                printf("In use:      %s\n", jstr(d, "in_use"));
        if (json_is_object(c)) {
                long long left = jint(c, "expires_in_ms") / 1000;
                t = (time_t)(jint(c, "not_before_us") / 1000000);
                strftime(nb, sizeof nb, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
                t = (time_t)(jint(c, "not_after_us") / 1000000);
                strftime(na, sizeof na, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
                printf("Subject:     %s\nIssuer:      %s\nSerial:      %s\n", jstr(c, "subject"),
                       jstr(c, "issuer"), jstr(c, "serial"));
                printf("Not before:  %s\nNot after:   %s (%lld days left)\n", nb, na,
                       /* Whole days left, or begun days since it expired. */
                       left >= 0 ? left / 86400 : -((-left + 86399) / 86400));
                printf("SHA-256:     %s\n", jstr(c, "fingerprint_sha256"));
        } else
                printf("Certificate: none yet\n");
        if (json_is_true(json_object_get(json_object_get(d, "rotation"), "automatic")))
                printf("Rotation:    automatic, %lld days before expiry\n",
                       jint(json_object_get(d, "rotation"), "before_expiry_ms") / 86400000);
        print_provisioning(json_object_get(d, "provisioning"));
}

int do_cert_show(int argc, char **argv)
{
        if (argc > 1)
                return fail("cert show: unexpected argument '%s'", argv[1]);
        return run("cert.show", NULL, print_cert);
}

static void print_rotating(json_t *d)
{
        printf("rotation started: new key and CSR sent; the old certificate stays until the new "
               "one has connected (see mcugwctl cert show)\n");
}

int do_cert_rotate(int argc, char **argv)
{
        if (argc > 1)
                return fail("cert rotate: unexpected argument '%s'", argv[1]);
        return run("cert.rotate", NULL, print_rotating);
}
