/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scripts/bench audit: how many hash-chained audit records per second the daemon's audit module
 * appends to a real SQLite file (WAL, synchronous=FULL) with group commit, and — as the baseline
 * in the same run — with one commit per record. Prints one JSON object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "store/db.h"
#include "basic/log.h"

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run(const char *dir, const char *name, int records, int group)
{
        char path[512];
        struct db *db;
        struct audit *a;
        struct audit_verify_result res;
        double t0, t;

        snprintf(path, sizeof path, "%s/%s.db", dir, name);
        if (db_open(NULL, path, DB_SYNC_FULL, 0, &db) < 0 || audit_open(db, &a) < 0) {
                fprintf(stderr, "cannot open %s\n", path);
                exit(1);
        }
        t0 = now_s();
        for (int i = 0; i < records; i++) {
                char subject[32];
                snprintf(subject, sizeof subject, "sensor-%04d", i % 1000);
                if (audit_append(a, "device:sensor", "auth.ok", subject,
                                 "{\"link\":\"unix:/run/mcugw/link.sock\",\"rtt_ms\":3}") < 0) {
                        fprintf(stderr, "append failed\n");
                        exit(1);
                }
                if ((i + 1) % group == 0)
                        db_commit(db);
        }
        db_commit(db);
        t = now_s() - t0;
        if (audit_verify(a, &res) < 0 || !res.ok || res.records != records) {
                fprintf(stderr, "verify failed: %s\n", res.reason);
                exit(1);
        }
        audit_free(a);
        db_close(db);
        return records / t;
}

int main(int argc, char **argv)
{
        char dir[] = "/tmp/mcugw-bench-audit-XXXXXX", cmd[128];
        int records = argc > 1 ? atoi(argv[1]) : 200000;
        int group = 1000;
        double grouped, single;

        log_set_level(LOG_WARNING);
        if (!mkdtemp(dir))
                return 1;
        grouped = run(dir, "grouped", records, group);
        single = run(dir, "single", 500, 1);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                return 1;
        printf("{\"audit_records_per_s\": %.0f, \"records\": %d, \"group_commit_records\": %d, "
               "\"synchronous\": \"full\", \"baseline_commit_per_record_per_s\": %.0f, "
               "\"budget_records_per_s\": 20000}\n",
               grouped, records, group, single);
        return 0;
}
