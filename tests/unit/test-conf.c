/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/conf.h"
#include "basic/log.h"

static char tmpdir[64];

static void write_file(const char *rel, const char *text)
{
        char p[256];
        FILE *f;
        snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
        f = fopen(p, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state)
{
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mcugw-test-conf-XXXXXX");
        assert_non_null(mkdtemp(tmpdir));
        return 0;
}

static int teardown(void **state)
{
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        return system(cmd);
}

static bool has_error(const struct conf_errors *e, const char *needle)
{
        for (size_t i = 0; i < e->n; i++)
                if (strstr(e->msgs[i], needle))
                        return true;
        return false;
}

static void dump_errors(const struct conf_errors *e)
{
        for (size_t i = 0; i < e->n; i++)
                fprintf(stderr, "  error: %s\n", e->msgs[i]);
}

static void test_defaults(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;

        assert_int_equal(conf_load_string("x.conf", "", &c, &e), 0);
        assert_string_equal(c->state_dir, "/var/lib/mcugw");
        assert_string_equal(c->control_socket, "/run/mcugw/control.sock");
        assert_int_equal(c->socket_mode, 0660);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_int_equal(c->db.synchronous, DB_SYNC_FULL);
        assert_int_equal(c->db.commit_interval_usec, 10000);
        assert_int_equal(c->max_request_bytes, 1024 * 1024);
        assert_int_equal(strlen(c->hash), 64);
        conf_free(c);
}

static void test_values(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        const char *text = "# comment\n"
                           "[Gateway]\n"
                           "Name = gw-1\n"
                           "LogLevel=debug\n"
                           "\n"
                           "[Paths]\n"
                           "  StateDirectory=/tmp/state\n"
                           "ControlSocket=/tmp/state/ctl.sock\n"
                           "[Control]\n"
                           "SocketMode=0600\n"
                           "MaxRequestSize=1M\n"
                           "AdminGroup=\n"
                           "[Database]\n"
                           "Synchronous=normal\n"
                           "CommitInterval=250ms\n";
        int r = conf_load_string("x.conf", text, &c, &e);
        dump_errors(&e);
        assert_int_equal(r, 0);
        assert_string_equal(c->gateway_name, "gw-1");
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_string_equal(c->state_dir, "/tmp/state");
        assert_string_equal(c->control_socket, "/tmp/state/ctl.sock");
        assert_int_equal(c->socket_mode, 0600);
        assert_int_equal(c->max_request_bytes, 1024 * 1024);
        assert_null(c->admin_group);
        assert_int_equal(c->db.synchronous, DB_SYNC_NORMAL);
        assert_int_equal(c->db.commit_interval_usec, 250000);
        conf_free(c);
}

/* Every problem is reported, each with its file and line, and nothing is half-applied. */
static void test_errors_with_lines(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        const char *text = "[Gateway]\n"                 /* 1 */
                           "LogLevel=loud\n"             /* 2: bad value */
                           "Colour=blue\n"               /* 3: unknown key */
                           "[Nope]\n"                    /* 4: unknown section */
                           "Foo=bar\n"                   /* 5: (section already reported) */
                           "[Paths]\n"                   /* 6 */
                           "StateDirectory=relative\n"   /* 7: not absolute */
                           "this is not ini\n"           /* 8: syntax */
                           "[Database]\n"                /* 9 */
                           "CommitInterval=5 parsecs\n"; /* 10: bad duration */

        assert_int_equal(conf_load_string("bad.conf", text, &c, &e), -EINVAL);
        assert_null(c);
        dump_errors(&e);
        assert_true(has_error(&e, "bad.conf:2: LogLevel=loud"));
        assert_true(has_error(&e, "bad.conf:3: unknown key 'Colour' in section [Gateway]"));
        assert_true(has_error(&e, "bad.conf:4: unknown section [Nope]"));
        assert_true(has_error(&e, "bad.conf:7: StateDirectory=relative: must be an absolute path"));
        assert_true(has_error(&e, "bad.conf:8: syntax error"));
        assert_true(has_error(&e, "bad.conf:10: CommitInterval=5 parsecs"));
        assert_int_equal(e.n, 6);
        conf_errors_clear(&e);
}

/* The fairness keys: defaults, values, and a command size a link frame cannot carry. */
static void test_fairness_keys(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;

        assert_int_equal(conf_load_string("d.conf", "", &c, &e), 0);
        assert_int_equal(c->link.max_pending_per_source, 0); /* a quarter of MaxConnections */
        assert_int_equal(c->link.session_audit_per_min, 10);
        assert_int_equal(c->link.commands_per_s, 20);
        assert_int_equal(c->link.command_queue, 32);
        assert_int_equal(c->relay.max_command, 987);
        conf_free(c);
        c = NULL;
        assert_int_equal(conf_load_string("v.conf",
                                          "[Link]\nMaxPendingPerSource=8\n"
                                          "SessionAuditsPerMinute=0\nCommandsPerSecond=5\n"
                                          "CommandQueue=0\n[Relay]\nMaxCommandSize=512\n",
                                          &c, &e),
                         0);
        assert_int_equal(c->link.max_pending_per_source, 8);
        assert_int_equal(c->link.session_audit_per_min, 0);
        assert_int_equal(c->link.commands_per_s, 5);
        assert_int_equal(c->link.command_queue, 0);
        assert_int_equal(c->relay.max_command, 512);
        conf_free(c);
        c = NULL;
        assert_int_equal(conf_load_string("bad.conf",
                                          "[Relay]\nMaxCommandSize=64K\n[Link]\n"
                                          "CommandsPerSecond=0\nCommandQueue=5000\n",
                                          &c, &e),
                         -EINVAL);
        assert_true(has_error(&e, "bad.conf:2: MaxCommandSize=64K"));
        assert_true(has_error(&e, "must fit one link frame"));
        assert_true(has_error(&e, "bad.conf:4: CommandsPerSecond=0"));
        assert_true(has_error(&e, "bad.conf:5: CommandQueue=5000"));
        conf_errors_clear(&e);
}

static void test_long_line(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        char text[1024];

        snprintf(text, sizeof text, "[Gateway]\nName=%0500d\nLogLevel=debug\n", 1);
        assert_int_equal(conf_load_string("long.conf", text, &c, &e), -EINVAL);
        dump_errors(&e);
        assert_true(has_error(&e, "long.conf:2: line too long"));
        assert_int_equal(e.n, 1);
        conf_errors_clear(&e);
}

/* Drop-ins are read in lexical order after the main file; the last word wins. */
static void test_dropins(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        char main_path[256], d[256];

        snprintf(main_path, sizeof main_path, "%s/mcugw.conf", tmpdir);
        snprintf(d, sizeof d, "%s/mcugw.conf.d", tmpdir);
        write_file("mcugw.conf", "[Gateway]\nName=main\nLogLevel=warning\n"
                                 "[Paths]\nStateDirectory=/a\n");
        assert_int_equal(mkdir(d, 0755), 0);
        write_file("mcugw.conf.d/20-b.conf", "[Gateway]\nName=from-b\n");
        write_file("mcugw.conf.d/10-a.conf", "[Gateway]\nName=from-a\nLogLevel=debug\n");
        write_file("mcugw.conf.d/30-c.conf.disabled", "[Gateway]\nName=ignored\n");
        write_file("mcugw.conf.d/.hidden.conf", "[Gateway]\nName=hidden\n");

        assert_int_equal(conf_load(main_path, &c, &e), 0);
        assert_string_equal(c->gateway_name, "from-b");
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_string_equal(c->state_dir, "/a");
        assert_int_equal(c->n_files, 3);
        assert_true(strstr(c->files[1], "10-a.conf") != NULL);
        assert_true(strstr(c->files[2], "20-b.conf") != NULL);
        conf_free(c);

        /* An error in a drop-in names the drop-in and its line. */
        write_file("mcugw.conf.d/40-bad.conf", "\n[Control]\nSocketMode=999\n");
        assert_int_equal(conf_load(main_path, &c, &e), -EINVAL);
        dump_errors(&e);
        assert_int_equal(e.n, 1);
        assert_true(has_error(&e, "mcugw.conf.d/40-bad.conf:3: SocketMode=999"));
        conf_errors_clear(&e);
}

static void test_missing_file(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;

        assert_int_equal(conf_load("/nonexistent/mcugw.conf", &c, &e), -EINVAL);
        assert_true(has_error(&e, "/nonexistent/mcugw.conf: cannot open"));
        conf_errors_clear(&e);
}

static void test_hash_changes(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *a = NULL, *b = NULL;
        const char *key = NULL;

        assert_int_equal(conf_load_string("x", "[Gateway]\nLogLevel=info\n", &a, &e), 0);
        assert_int_equal(conf_load_string("x", "[Gateway]\nLogLevel=debug\n", &b, &e), 0);
        assert_string_not_equal(a->hash, b->hash);
        assert_false(conf_needs_restart(a, b, &key));
        conf_free(b);
        assert_int_equal(conf_load_string("x", "[Paths]\nStateDirectory=/elsewhere\n", &b, &e), 0);
        assert_true(conf_needs_restart(a, b, &key));
        assert_string_equal(key, "StateDirectory");
        conf_free(a);
        conf_free(b);
}

/* A reload's effective config: a changed restart-only key keeps its running value (and is listed
 * as pending), a live key takes the new value. */
static void test_keep_running(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *run = NULL, *n = NULL;

        assert_int_equal(conf_load_string("x",
                                          "[Gateway]\nLogLevel=info\n"
                                          "[Link]\nPrivateKeyFile=/old/link.key\n"
                                          "ListenStream=tcp:127.0.0.1:7000\n"
                                          "[Monitor]\nCloudCommands=quarantine\n",
                                          &run, &e),
                         0);
        assert_int_equal(conf_load_string("x",
                                          "[Gateway]\nLogLevel=debug\n"
                                          "[Link]\nPrivateKeyFile=/new/link.key\n"
                                          "ListenStream=tcp:127.0.0.1:7000\n"
                                          "ListenStream=tcp:127.0.0.1:7001\n"
                                          "[Monitor]\nCloudCommands=release\n"
                                          "[Database]\nSynchronous=normal\n",
                                          &n, &e),
                         0);
        assert_int_equal(conf_keep_running(n, run), 3);
        /* restart-only: the running values, copied */
        assert_string_equal(n->link.private_key_file, "/old/link.key");
        assert_ptr_not_equal(n->link.private_key_file, run->link.private_key_file);
        assert_int_equal(n->link.listen.n, 1);
        assert_string_equal(n->link.listen.v[0], "tcp:127.0.0.1:7000");
        assert_int_equal(n->db.synchronous, DB_SYNC_FULL);
        assert_int_equal(n->restart_pending.n, 3);
        assert_string_equal(n->restart_pending.v[0], "Database.Synchronous");
        assert_string_equal(n->restart_pending.v[1], "Link.PrivateKeyFile");
        assert_string_equal(n->restart_pending.v[2], "Link.ListenStream");
        /* live: the new values */
        assert_int_equal(n->log_level, LOG_DEBUG);
        assert_int_equal(n->monitor.cloud_commands.n, 1);
        assert_string_equal(n->monitor.cloud_commands.v[0], "release");
        /* nothing is pending between the effective config and itself */
        assert_int_equal(conf_keep_running(run, run), 0);
        conf_free(run);
        /* each config owns its strings: freeing the old one leaves the new one intact */
        assert_string_equal(n->link.private_key_file, "/old/link.key");

        /* a key changed back to the running value is no longer pending */
        assert_int_equal(conf_load_string("x",
                                          "[Link]\nPrivateKeyFile=/old/link.key\n"
                                          "ListenStream=tcp:127.0.0.1:7000\n",
                                          &run, &e),
                         0);
        assert_int_equal(conf_keep_running(run, n), 0);
        assert_int_equal(run->restart_pending.n, 0);
        conf_free(run);
        conf_free(n);
        conf_errors_clear(&e);
}

/* Hostile files: a drop-in that is a FIFO, a link to /dev/zero or /dev/urandom, a directory, a
 * file with NUL bytes or one far too large is an error that names the file (and the line), and
 * loading never blocks or loops (alarm() kills the test if it does). */
static void test_hostile_dropins(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        char main_path[256], d[128], p[256], big[4096];
        FILE *f;

        alarm(20);
        snprintf(main_path, sizeof main_path, "%s/h.conf", tmpdir);
        snprintf(d, sizeof d, "%s/h.conf.d", tmpdir);
        write_file("h.conf", "[Gateway]\nName=main\n");
        assert_int_equal(mkdir(d, 0755), 0);

        snprintf(p, sizeof p, "%s/10-fifo.conf", d);
        assert_int_equal(mkfifo(p, 0600), 0);
        snprintf(p, sizeof p, "%s/20-zero.conf", d);
        assert_int_equal(symlink("/dev/zero", p), 0);
        snprintf(p, sizeof p, "%s/30-random.conf", d);
        assert_int_equal(symlink("/dev/urandom", p), 0);
        snprintf(p, sizeof p, "%s/40-dir.conf", d);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof p, "%s/50-nul.conf", d);
        assert_non_null(f = fopen(p, "w"));
        fwrite("[Gateway]\nLogLevel=debug\nName=a\0b\n", 1, 35, f);
        fclose(f);
        snprintf(p, sizeof p, "%s/60-big.conf", d);
        assert_non_null(f = fopen(p, "w"));
        memset(big, '#', sizeof big);
        for (int i = 0; i < 300; i++) /* 1.2 MB of comment lines */
                fwrite(big, 1, sizeof big, f);
        fclose(f);
        write_file("h.conf.d/70-good.conf", "[Gateway]\nLogLevel=debug\n");

        assert_int_equal(conf_load(main_path, &c, &e), -EINVAL);
        assert_null(c);
        dump_errors(&e);
        assert_true(has_error(&e, "h.conf.d/10-fifo.conf: not a regular file (a FIFO)"));
        assert_true(
                has_error(&e, "h.conf.d/20-zero.conf: not a regular file (a character device)"));
        assert_true(has_error(&e, "h.conf.d/30-random.conf: not a regular file"));
        assert_true(has_error(&e, "h.conf.d/40-dir.conf: not a regular file (a directory)"));
        assert_true(has_error(&e, "h.conf.d/50-nul.conf:3: NUL byte"));
        assert_true(has_error(&e, "h.conf.d/60-big.conf: file too large (1228800 bytes, limit "
                                  "1048576)"));
        assert_int_equal(e.n, 6);
        conf_errors_clear(&e);
        alarm(0);
}

/* A FIFO or device named by a key or certificate setting is a configuration error too. */
static void test_hostile_named_files(void **state)
{
        struct conf_errors e = { 0 };
        struct conf *c = NULL;
        char main_path[256], fifo[256], text[1024];

        alarm(20);
        snprintf(main_path, sizeof main_path, "%s/k.conf", tmpdir);
        snprintf(fifo, sizeof fifo, "%s/key.fifo", tmpdir);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        snprintf(text, sizeof text,
                 "[Paths]\nStateDirectory=%s/state\n[Link]\nPrivateKeyFile=%s\n"
                 "[MQTT]\nKeyFile=%s\nCAFile=/dev/zero\n[OTA]\nCodeSigningCertificate=%s\n",
                 tmpdir, fifo, fifo, tmpdir);
        write_file("k.conf", text);
        assert_int_equal(conf_load(main_path, &c, &e), -EINVAL);
        dump_errors(&e);
        assert_true(has_error(&e, "[Link] PrivateKeyFile= "));
        assert_true(has_error(&e, "key.fifo: not a regular file (a FIFO)"));
        assert_true(has_error(&e, "[MQTT] KeyFile= "));
        assert_true(has_error(&e, "[MQTT] CAFile= /dev/zero: not a regular file"));
        assert_true(has_error(&e, "[OTA] CodeSigningCertificate= "));
        assert_int_equal(e.n, 4);
        conf_errors_clear(&e);

        /* Absent files are not errors here (the link key is created at start). */
        snprintf(text, sizeof text,
                 "[Paths]\nStateDirectory=%s/state\n[Link]\nPrivateKeyFile=%s/none.key\n", tmpdir,
                 tmpdir);
        write_file("k.conf", text);
        assert_int_equal(conf_load(main_path, &c, &e), 0);
        conf_free(c);
        alarm(0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_values),
                cmocka_unit_test(test_errors_with_lines),
                cmocka_unit_test(test_long_line),
                cmocka_unit_test(test_dropins),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_hash_changes),
                cmocka_unit_test(test_keep_running),
                cmocka_unit_test(test_hostile_dropins),
                cmocka_unit_test(test_hostile_named_files),
                cmocka_unit_test(test_fairness_keys),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
