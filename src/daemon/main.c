/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "daemon/conf.h"
#include "daemon/gateway.h"
#include "basic/log.h"
#include "audit/audit.h"
#include "basic/macro.h"
#include "store/db.h"

static void help(void)
{
        printf("Usage: mcugwd [OPTIONS]\n\n"
               "The mcugw gateway daemon: authenticates MCUs and relays them to the cloud.\n\n"
               "  -c, --config FILE   configuration file (default %s, plus FILE.d/*.conf)\n"
               "      --check-config  check the configuration, print every error, and exit\n"
               "      --accept-audit-truncation\n"
               "                      accept that the audit log lost records (the daemon refuses\n"
               "                      to start until then); appends an audited record naming\n"
               "                      the lost range, then exits\n"
               "  -h, --help          show this help\n"
               "      --version       show the version\n",
               CONF_DEFAULT_PATH);
}

static int check_config(const char *path)
{
        struct conf_errors err = { 0 };
        struct conf_set set = { 0 };
        int r = conf_set_load(path, &set, &err);

        conf_errors_print(&err, stderr, NULL);
        if (r < 0) {
                fprintf(stderr, "%s: %zu error(s)\n", path, err.n);
                conf_errors_clear(&err);
                return EXIT_FAILURE;
        }
        printf("%s: OK (%zu file(s), %zu enrolled device(s), %zu rule(s), sha256 %s)\n", path,
               set.conf->n_files, set.devices.n, set.rules.n, set.conf->hash);
        conf_set_clear(&set);
        return EXIT_SUCCESS;
}

/* Offline: the daemon refused to start because the audit chain ends before its stored head.
 * Record the operator's decision in the chain itself and move the head on. */
static int accept_audit_truncation(const char *path)
{
        struct conf_errors err = { 0 };
        struct audit_head_check chk;
        _cleanup_free_ char *db_path = NULL, *head = NULL;
        struct audit *a = NULL;
        struct conf *c = NULL;
        struct db *db = NULL;
        char actor[32];
        struct stat st;
        int64_t seq;
        int r;

        if (conf_load(path, &c, &err) < 0) {
                conf_errors_print(&err, stderr, NULL);
                fprintf(stderr, "%s: configuration invalid\n", path);
                conf_errors_clear(&err);
                return EXIT_FAILURE;
        }
        /* Files created here must stay usable by the daemon's user. */
        if (stat(c->state_dir, &st) < 0) {
                fprintf(stderr, "state directory %s: %s\n", c->state_dir, strerror(errno));
                conf_free(c);
                return EXIT_FAILURE;
        }
        if (st.st_uid != geteuid()) {
                fprintf(stderr,
                        "state directory %s belongs to uid %u: run this as the daemon's user, "
                        "e.g. runuser -u mcugw -- mcugwd --accept-audit-truncation\n",
                        c->state_dir, (unsigned)st.st_uid);
                conf_free(c);
                return EXIT_FAILURE;
        }
        if (asprintf(&db_path, "%s/mcugw.db", c->state_dir) < 0 ||
            asprintf(&head, "%s/%s", c->state_dir, AUDIT_HEAD_FILE_NAME) < 0) {
                conf_free(c);
                return EXIT_FAILURE;
        }
        r = db_open(NULL, db_path, c->db.synchronous, 0, &db);
        if (r >= 0)
                r = audit_open(db, &a);
        if (r >= 0)
                r = audit_check_head(a, head, &chk);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", db_path, strerror(-r));
                goto out;
        }
        if (chk.ok) {
                printf("audit log head matches (seq %lld): nothing to accept\n",
                       (long long)chk.db_seq);
                goto out;
        }
        fprintf(stderr, "%s\n", chk.reason);
        snprintf(actor, sizeof actor, "cli:uid=%u", (unsigned)getuid());
        seq = audit_accept_truncation(a, &chk, actor);
        if (seq >= 0 && (r = audit_set_head_file(a, head)) >= 0)
                r = db_commit(db);
        else if (seq < 0)
                r = (int)seq;
        if (r < 0) {
                fprintf(stderr, "cannot record the decision: %s\n", strerror(-r));
                goto out;
        }
        if (chk.expected_seq > chk.db_seq)
                printf("accepted: records %lld to %lld are lost; recorded as audit record %lld "
                       "(audit.truncation_accepted)\n",
                       (long long)chk.db_seq + 1, (long long)chk.expected_seq, (long long)seq);
        else
                printf("accepted: the chain goes on from record %lld; recorded as audit record "
                       "%lld (audit.truncation_accepted)\n",
                       (long long)chk.db_seq, (long long)seq);
out:
        audit_free(a);
        db_close(db);
        conf_free(c);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
        enum { ARG_CHECK = 0x100, ARG_VERSION, ARG_ACCEPT_TRUNCATION };
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK },
                { "accept-audit-truncation", no_argument, NULL, ARG_ACCEPT_TRUNCATION },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        const char *config = CONF_DEFAULT_PATH;
        struct conf_errors err = { 0 };
        struct conf_set set = { 0 };
        struct gateway *gw = NULL;
        bool check = false, accept = false, restart = false;
        uv_loop_t loop;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) >= 0)
                switch (c) {
                case 'c': config = optarg; break;
                case ARG_CHECK: check = true; break;
                case ARG_ACCEPT_TRUNCATION: accept = true; break;
                case 'h': help(); return EXIT_SUCCESS;
                case ARG_VERSION: printf("mcugwd %s\n", MCUGW_VERSION); return EXIT_SUCCESS;
                default: return EXIT_FAILURE;
                }
        if (optind < argc) {
                fprintf(stderr, "mcugwd: unexpected argument '%s'\n", argv[optind]);
                return EXIT_FAILURE;
        }
        if (check)
                return check_config(config);
        if (accept) {
                umask(0027);
                return accept_audit_truncation(config);
        }

        /* Nothing we create (database, keys, caches) is for other users; the control socket's
         * mode is set explicitly. systemd's UMask=0077 is stricter still. */
        umask(0027);
        log_open("mcugwd");
        /* Every outbox delete runs a SQLite statement that allocates and frees a little at the
         * top of the heap. With glibc's default trim threshold (128 KiB) each free handed pages
         * back (brk, a TLB shootdown on every CPU) and the next malloc faulted them in again: a
         * third of the daemon's CPU at 6,000 msgs/s (scripts/bench relay, 90 -> 42 us per
         * message). Keep up to 1 MiB free at the top instead. */
        mallopt(M_TRIM_THRESHOLD, 1 << 20);
        mallopt(M_TOP_PAD, 256 << 10);
        r = conf_set_load(config, &set, &err);
        if (r < 0) {
                conf_errors_print(&err, NULL, NULL);
                log_error("%s: configuration invalid, not starting", config);
                conf_errors_clear(&err);
                return EXIT_FAILURE;
        }

        uv_loop_init(&loop);
        r = gateway_new(&loop, config, &set, &gw);
        if (r >= 0) {
                r = gateway_run(gw);
                restart = gateway_restart_requested(gw);
                gateway_free(gw);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0) {
                log_error("internal error: handles left open at exit");
                return EXIT_FAILURE;
        }
        if (restart && r >= 0) {
                /* Everything is closed (and close-on-exec): the same binary, the same options. */
                execv("/proc/self/exe", argv);
                log_error("cannot restart mcugwd: %m");
                return EXIT_FAILURE; /* systemd's Restart=on-failure starts it again */
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
