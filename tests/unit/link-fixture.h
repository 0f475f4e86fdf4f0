/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The gateway side of the link tests: a real link manager in a temporary state directory, with
 * (for a device id) a real registry and audit log in a real SQLite file and that device
 * enrolled, or (NULL) none; the device end is the test's. Include after <cmocka.h>. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <uv.h>

#include "audit/audit.h"
#include "daemon/conf.h"
#include "devices/registry.h"
#include "link/link.h"
#include "store/db.h"

struct link_fixture {
        char dir[64];
        uv_loop_t loop;
        struct conf *conf;
        struct db *db;
        struct audit *audit;
        struct registry *reg;
        struct link_manager *m;
        uint8_t gw_pub[32]; /* the gateway's static public key, for the device's config */
};

static inline void link_fixture_open(struct link_fixture *f, const char *device_id,
                                     const uint8_t device_pub[32])
{
        char path[128], cfgtext[256];
        struct conf_errors err = { 0 };
        const char *e = NULL;
        uint8_t tmp[36];

        memset(f, 0, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/mcugw-test-link-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        uv_loop_init(&f->loop);
        if (device_id) {
                snprintf(path, sizeof path, "%s/mcugw.db", f->dir);
                assert_int_equal(db_open(&f->loop, path, DB_SYNC_NORMAL, 10000, &f->db), 0);
                assert_int_equal(audit_open(f->db, &f->audit), 0);
                assert_int_equal(registry_open(f->db, f->audit, &f->reg), 0);
                assert_int_equal(registry_add(f->reg, "test", device_id, device_pub, DEVICE_ACTIVE,
                                              "", "cli", &e),
                                 0);
                db_commit(f->db);
        }
        snprintf(cfgtext, sizeof cfgtext, "[Paths]\nStateDirectory=%s\n[Link]\n", f->dir);
        assert_int_equal(conf_load_string("test", cfgtext, &f->conf, &err), 0);
        assert_int_equal(link_manager_new(&f->loop, &f->conf->link, f->conf->state_dir, f->audit,
                                          f->reg, &f->m),
                         0);
        assert_int_equal(
                EVP_DecodeBlock(tmp, (const unsigned char *)link_manager_public_key(f->m), 44), 33);
        memcpy(f->gw_pub, tmp, 32);
}

/* Stop the manager (its last events run in link_fixture_close's loop run) and close the state. */
static inline void link_fixture_stop(struct link_fixture *f)
{
        link_manager_stop(f->m);
        registry_free(f->reg);
        audit_free(f->audit);
        db_close(f->db);
}

static inline void link_fixture_close(struct link_fixture *f)
{
        char cmd[128];

        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&f->loop), 0);
        conf_free(f->conf);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
}
