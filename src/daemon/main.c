/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "daemon/conf.h"
#include "devices/enroll.h"
#include "daemon/gateway.h"
#include "devices/onboard.h"
#include "basic/log.h"
#include "monitor/rules.h"

static void help(void)
{
        printf("Usage: mcugwd [OPTIONS]\n\n"
               "The mcugw gateway daemon: authenticates MCUs and relays them to the cloud.\n\n"
               "  -c, --config FILE   configuration file (default %s, plus FILE.d/*.conf)\n"
               "      --check-config  check the configuration, print every error, and exit\n"
               "  -h, --help          show this help\n"
               "      --version       show the version\n",
               CONF_DEFAULT_PATH);
}

static int check_config(const char *path)
{
        struct conf_errors err = { 0 };
        struct enroll_list devices = { 0 };
        struct rule_set rules = { 0 };
        struct onboard *onboard = NULL;
        struct conf *c = NULL;
        int r = conf_load(path, &c, &err);

        if (r >= 0 && enroll_load_dir(c->devices_dir, &devices, &err) < 0) {
                conf_free(c);
                r = -EINVAL;
        }
        if (r >= 0 && c->monitor_rules && rules_load_dir(c->rules_dir, &rules, &err) < 0) {
                enroll_list_free(&devices);
                conf_free(c);
                r = -EINVAL;
        }
        if (r >= 0 && onboard_new(c, &onboard, &err) < 0) {
                rule_set_free(&rules);
                enroll_list_free(&devices);
                conf_free(c);
                r = -EINVAL;
        }
        onboard_free(onboard);
        for (size_t i = 0; i < err.n; i++)
                fprintf(stderr, "%s\n", err.msgs[i]);
        if (r < 0) {
                fprintf(stderr, "%s: %zu error(s)\n", path, err.n);
                conf_errors_clear(&err);
                return EXIT_FAILURE;
        }
        printf("%s: OK (%zu file(s), %zu enrolled device(s), %zu rule(s), sha256 %s)\n", path,
               c->n_files, devices.n, rules.n, c->hash);
        rule_set_free(&rules);
        enroll_list_free(&devices);
        conf_free(c);
        return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
        enum { ARG_CHECK = 0x100, ARG_VERSION };
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        const char *config = CONF_DEFAULT_PATH;
        struct conf_errors err = { 0 };
        struct conf *conf = NULL;
        struct gateway *gw = NULL;
        bool check = false, restart = false;
        uv_loop_t loop;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) >= 0)
                switch (c) {
                case 'c': config = optarg; break;
                case ARG_CHECK: check = true; break;
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

        /* Nothing we create (database, keys, caches) is for other users; the control socket's
         * mode is set explicitly. systemd's UMask=0077 is stricter still. */
        umask(0027);
        log_open("mcugwd");
        r = conf_load(config, &conf, &err);
        if (r < 0) {
                for (size_t i = 0; i < err.n; i++)
                        log_error("%s", err.msgs[i]);
                log_error("%s: configuration invalid, not starting", config);
                conf_errors_clear(&err);
                return EXIT_FAILURE;
        }

        uv_loop_init(&loop);
        r = gateway_new(&loop, config, conf, &gw);
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
