/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit-fill DB N: append N hash-chained records to the audit log of the state database DB
 * (created if missing) with the daemon's own audit module, before the daemon starts. The control
 * socket's abuse tests (test-control-abuse.py) need a large log, and writing it through mcugwctl
 * would take minutes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "basic/log.h"

int main(int argc, char **argv)
{
        struct db *db;
        struct audit *a;
        long n;

        if (argc != 3 || (n = atol(argv[2])) < 0) {
                fprintf(stderr, "usage: audit-fill DB N\n");
                return 2;
        }
        log_set_level(LOG_WARNING);
        if (db_open(NULL, argv[1], DB_SYNC_OFF, 0, &db) < 0 || audit_open(db, &a) < 0) {
                fprintf(stderr, "audit-fill: cannot open %s\n", argv[1]);
                return 1;
        }
        for (long i = 0; i < n; i++) {
                char subject[32];
                snprintf(subject, sizeof subject, "sensor-%04ld", i % 1000);
                if (audit_append(a, "device:sensor", "auth.ok", subject,
                                 "{\"link\":\"unix:/run/mcugw/link.sock\",\"rtt_ms\":3,"
                                 "\"note\":\"filler record for the control socket tests\"}") < 0) {
                        fprintf(stderr, "audit-fill: append failed\n");
                        return 1;
                }
                if ((i + 1) % 10000 == 0 && db_commit(db) < 0) {
                        fprintf(stderr, "audit-fill: commit failed\n");
                        return 1;
                }
        }
        audit_free(a);
        db_close(db);
        return 0;
}
