/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>

#include "basic/time-util.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "devices/registry.h"

/* Open-addressing index (linear probing) from id or key to the device's slot. */
struct index {
        uint32_t *slots; /* device number + 1; 0 = empty */
        size_t cap;      /* power of two */
};

struct registry {
        struct db *db;
        struct audit *audit;
        struct registry_device **devs;
        /* Devices whose row is behind memory: dirty[i] per device, and their numbers in
         * dirty_list[0..n_dirty) so that a commit writes k dirty rows in O(k), not O(n). */
        bool *dirty;
        size_t *dirty_list, n_dirty;
        size_t n, cap;
        struct index by_id, by_key;
        sqlite3_stmt *save, *load;
        registry_state_fn listener;
        void *listener_data;
        registry_decorate_fn decorate;
        void *decorate_data;
        char errbuf[160];
};

static uint64_t hash_bytes(const void *p, size_t n)
{
        const uint8_t *b = p;
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (size_t i = 0; i < n; i++)
                h = (h ^ b[i]) * 1099511628211ULL;
        return h;
}

static uint64_t dev_hash(const struct registry_device *d, bool by_key)
{
        return by_key ? hash_bytes(d->pubkey, REGISTRY_KEY_LEN) : hash_bytes(d->id, strlen(d->id));
}

static void index_put(struct registry *r, struct index *ix, size_t dev, bool by_key)
{
        size_t i = dev_hash(r->devs[dev], by_key) & (ix->cap - 1);
        while (ix->slots[i])
                i = (i + 1) & (ix->cap - 1);
        ix->slots[i] = (uint32_t)dev + 1;
}

static int index_rebuild(struct registry *r, struct index *ix, size_t want, bool by_key)
{
        uint32_t *slots;
        size_t cap = 64;
        while (cap < want * 2)
                cap *= 2;
        slots = calloc(cap, sizeof *slots);
        if (!slots)
                return -ENOMEM; /* the old index stays valid */
        free(ix->slots);
        ix->slots = slots;
        ix->cap = cap;
        for (size_t i = 0; i < r->n; i++)
                index_put(r, ix, i, by_key);
        return 0;
}

/* The device's number (its place in devs) through the id index, O(1); SIZE_MAX if unknown. */
static size_t find_index(struct registry *r, const char *id)
{
        size_t i;
        if (!r->by_id.cap)
                return SIZE_MAX;
        i = hash_bytes(id, strlen(id)) & (r->by_id.cap - 1);
        for (; r->by_id.slots[i]; i = (i + 1) & (r->by_id.cap - 1))
                if (strcmp(r->devs[r->by_id.slots[i] - 1]->id, id) == 0)
                        return r->by_id.slots[i] - 1;
        return SIZE_MAX;
}

const struct registry_device *registry_find(struct registry *r, const char *id)
{
        size_t i = find_index(r, id);
        return i == SIZE_MAX ? NULL : r->devs[i];
}

static struct registry_device *find_mut(struct registry *r, const char *id)
{
        return (struct registry_device *)registry_find(r, id);
}

static size_t dev_index(struct registry *r, const struct registry_device *d)
{
        return find_index(r, d->id);
}

/* Public keys are not secret, but compare them in constant time anyway: it costs nothing. */
const struct registry_device *registry_find_key(struct registry *r,
                                                const uint8_t key[REGISTRY_KEY_LEN])
{
        size_t i;
        if (!r->by_key.cap)
                return NULL;
        i = hash_bytes(key, REGISTRY_KEY_LEN) & (r->by_key.cap - 1);
        for (; r->by_key.slots[i]; i = (i + 1) & (r->by_key.cap - 1)) {
                struct registry_device *d = r->devs[r->by_key.slots[i] - 1];
                if (CRYPTO_memcmp(d->pubkey, key, REGISTRY_KEY_LEN) == 0)
                        return d;
        }
        return NULL;
}

static int dev_save(struct registry *r, const struct registry_device *d)
{
        sqlite3_stmt *s = r->save;
        int rc, q = db_write_begin(r->db);
        if (q < 0)
                return q;
        sqlite3_bind_text(s, 1, d->id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 2, d->pubkey, REGISTRY_KEY_LEN, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, device_state_to_string(d->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, d->groups, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, d->source, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, d->fw_version, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, d->boot_counter);
        sqlite3_bind_int(s, 8, d->reset_cause);
        sqlite3_bind_int64(s, 9, d->last_seen_us);
        sqlite3_bind_text(s, 10, d->link, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 11, now_realtime_usec());
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "registry: cannot save device %s: %s", d->id,
                                       sqlite3_errmsg(db_handle(r->db)));
        return 0;
}

/* last-seen and link facts change with every frame: written at the next group commit only. */
static int registry_precommit(void *userdata)
{
        struct registry *r = userdata;
        for (size_t k = 0; k < r->n_dirty; k++) {
                size_t i = r->dirty_list[k];
                r->dirty[i] = false;
                dev_save(r, r->devs[i]);
        }
        r->n_dirty = 0;
        return 0;
}

static void set_dirty(struct registry *r, size_t i)
{
        if (i >= r->n || r->dirty[i])
                return;
        r->dirty[i] = true;
        r->dirty_list[r->n_dirty++] = i;
}

/* A failed commit lost rows we wrote: memory is the truth, write every device again. */
static int registry_rollback(void *userdata)
{
        struct registry *r = userdata;
        for (size_t i = 0; i < r->n; i++)
                set_dirty(r, i);
        return 0;
}

static void mark_dirty(struct registry *r, const struct registry_device *d)
{
        set_dirty(r, dev_index(r, d));
        db_write_begin(r->db);
}

static struct registry_device *dev_insert(struct registry *r, struct registry_device *d)
{
        if (r->n == r->cap) {
                size_t cap = r->cap ? r->cap * 2 : 64;
                struct registry_device **n = realloc(r->devs, cap * sizeof *n);
                bool *dn;
                size_t *dl;
                if (!n)
                        return NULL;
                r->devs = n;
                dn = realloc(r->dirty, cap * sizeof *dn);
                if (!dn)
                        return NULL;
                r->dirty = dn;
                dl = realloc(r->dirty_list, cap * sizeof *dl);
                if (!dl)
                        return NULL;
                r->dirty_list = dl;
                r->cap = cap;
        }
        r->devs[r->n] = d;
        r->dirty[r->n] = false;
        r->n++;
        if (r->n * 2 > r->by_id.cap) {
                if (index_rebuild(r, &r->by_id, r->n, false) < 0 ||
                    index_rebuild(r, &r->by_key, r->n, true) < 0) {
                        /* Out of memory: forget the new device again, the indexes still hold
                         * only the old ones (a rebuilt one holds them too). */
                        r->n--;
                        index_rebuild(r, &r->by_id, r->n, false);
                        index_rebuild(r, &r->by_key, r->n, true);
                        return NULL;
                }
        } else {
                index_put(r, &r->by_id, r->n - 1, false);
                index_put(r, &r->by_key, r->n - 1, true);
        }
        return d;
}

int registry_open(struct db *db, struct audit *audit, struct registry **ret)
{
        struct registry *r = calloc(1, sizeof *r);
        int q, rc;

        if (!r)
                return -ENOMEM;
        r->db = db;
        r->audit = audit;
        if ((q = db_prepare(db,
                            "INSERT INTO devices (id, pubkey, state, groups, source, fw_version, "
                            "boot_counter, reset_cause, last_seen_us, link, updated_us) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                            "ON CONFLICT(id) DO UPDATE SET pubkey = ?2, state = ?3, groups = ?4, "
                            "source = ?5, fw_version = ?6, boot_counter = ?7, reset_cause = ?8, "
                            "last_seen_us = ?9, link = ?10, updated_us = ?11",
                            &r->save)) < 0 ||
            (q = db_prepare(db,
                            "SELECT id, pubkey, state, groups, source, fw_version, boot_counter, "
                            "reset_cause, last_seen_us, link FROM devices ORDER BY id",
                            &r->load)) < 0 ||
            (q = index_rebuild(r, &r->by_id, 0, false)) < 0 ||
            (q = index_rebuild(r, &r->by_key, 0, true)) < 0 ||
            (q = db_add_precommit(db, registry_precommit, r)) < 0 ||
            (q = db_add_rollback(db, registry_rollback, r)) < 0)
                goto fail;

        while ((rc = sqlite3_step(r->load)) == SQLITE_ROW) {
                struct registry_device *d = calloc(1, sizeof *d);
                const char *st;
                int state;
                if (!d) {
                        q = -ENOMEM;
                        goto fail;
                }
                snprintf(d->id, sizeof d->id, "%s", sqlite3_column_text(r->load, 0));
                if (sqlite3_column_bytes(r->load, 1) == REGISTRY_KEY_LEN)
                        memcpy(d->pubkey, sqlite3_column_blob(r->load, 1), REGISTRY_KEY_LEN);
                st = (const char *)sqlite3_column_text(r->load, 2);
                state = st ? device_state_from_string(st) : -EINVAL;
                d->state = state < 0 ? DEVICE_QUARANTINED : (enum device_state)state;
                snprintf(d->groups, sizeof d->groups, "%s", sqlite3_column_text(r->load, 3));
                snprintf(d->source, sizeof d->source, "%s", sqlite3_column_text(r->load, 4));
                snprintf(d->fw_version, sizeof d->fw_version, "%s",
                         sqlite3_column_text(r->load, 5));
                d->boot_counter = (uint32_t)sqlite3_column_int64(r->load, 6);
                d->reset_cause = (uint8_t)sqlite3_column_int(r->load, 7);
                d->last_seen_us = sqlite3_column_int64(r->load, 8);
                snprintf(d->link, sizeof d->link, "%s", sqlite3_column_text(r->load, 9));
                if (!dev_insert(r, d)) {
                        free(d);
                        q = -ENOMEM;
                        goto fail;
                }
        }
        sqlite3_reset(r->load);
        if (rc != SQLITE_DONE) {
                q = db_errno(rc);
                goto fail;
        }
        *ret = r;
        return 0;
fail:
        sqlite3_reset(r->load);
        registry_free(r);
        return q;
}

void registry_free(struct registry *r)
{
        if (!r)
                return;
        /* Write what is dirty into the open transaction; the owner of the db commits it. */
        if (r->n_dirty > 0 && db_write_begin(r->db) >= 0)
                registry_precommit(r);
        db_remove_precommit(r->db, registry_precommit, r);
        db_remove_rollback(r->db, registry_rollback, r);
        for (size_t i = 0; i < r->n; i++)
                free(r->devs[i]);
        free(r->devs);
        free(r->dirty);
        free(r->dirty_list);
        free(r->by_id.slots);
        free(r->by_key.slots);
        free(r);
}

void registry_set_listener(struct registry *r, registry_state_fn fn, void *userdata)
{
        r->listener = fn;
        r->listener_data = userdata;
}

void registry_set_decorator(struct registry *r, registry_decorate_fn fn, void *userdata)
{
        r->decorate = fn;
        r->decorate_data = userdata;
}

size_t registry_count(struct registry *r, size_t counts[_DEVICE_STATE_MAX])
{
        if (counts) {
                memset(counts, 0, sizeof(size_t) * _DEVICE_STATE_MAX);
                for (size_t i = 0; i < r->n; i++)
                        counts[r->devs[i]->state]++;
        }
        return r->n;
}

const struct registry_device *registry_get(struct registry *r, size_t i)
{
        return i < r->n ? r->devs[i] : NULL;
}

void registry_set_connected(struct registry *r, const char *id, bool connected, const char *link)
{
        struct registry_device *d = find_mut(r, id);
        if (!d)
                return;
        d->connected = connected;
        if (connected) {
                snprintf(d->link, sizeof d->link, "%s", link ? link : "");
                d->last_seen_us = now_realtime_usec();
        }
        mark_dirty(r, d);
}

void registry_touch(struct registry *r, const char *id, int64_t t)
{
        size_t i = find_index(r, id); /* once: this runs for every frame */
        if (i == SIZE_MAX)
                return;
        r->devs[i]->last_seen_us = t ? t : now_realtime_usec();
        /* Written at the next commit only if something else is written; at most a commit
         * interval of last-seen precision is lost in a crash. */
        r->devs[i]->connected = true;
        set_dirty(r, i);
}

void registry_set_status(struct registry *r, const char *id, const char *fw_version,
                         uint32_t boot_counter, uint8_t reset_cause)
{
        struct registry_device *d = find_mut(r, id);
        bool changed;
        if (!d)
                return;
        changed = strncmp(d->fw_version, fw_version ? fw_version : "", REGISTRY_FW_MAX) != 0 ||
                  d->boot_counter != boot_counter;
        if (changed)
                audit_log(r->audit, "daemon", "device.status", id,
                          json_pack("{ss ss sI si}", "fw_version", fw_version ? fw_version : "",
                                    "old_fw_version", d->fw_version, "boot_counter",
                                    (json_int_t)boot_counter, "reset_cause", reset_cause));
        snprintf(d->fw_version, sizeof d->fw_version, "%s", fw_version ? fw_version : "");
        d->boot_counter = boot_counter;
        d->reset_cause = reset_cause;
        mark_dirty(r, d);
}

static void key_b64(const uint8_t *k, char out[45])
{
        key_to_base64(k, out);
}

int registry_add(struct registry *r, const char *actor, const char *id,
                 const uint8_t key[REGISTRY_KEY_LEN], enum device_state state, const char *groups,
                 const char *source, const char **ret_error)
{
        const struct registry_device *other;
        struct registry_device *d;
        char b64[45];
        int q;

        if (!enroll_id_valid(id)) {
                *ret_error = "device id must be 1 to 32 characters of [A-Za-z0-9._-]";
                return -EINVAL;
        }
        if (registry_find(r, id)) {
                snprintf(r->errbuf, sizeof r->errbuf, "device %s is already enrolled", id);
                *ret_error = r->errbuf;
                return -EEXIST;
        }
        other = registry_find_key(r, key);
        if (other) {
                snprintf(r->errbuf, sizeof r->errbuf, "that key is already enrolled as %s",
                         other->id);
                *ret_error = r->errbuf;
                return -EEXIST;
        }
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        snprintf(d->id, sizeof d->id, "%s", id);
        memcpy(d->pubkey, key, REGISTRY_KEY_LEN);
        d->state = state;
        if (groups && enroll_groups_normalize(groups, d->groups, sizeof d->groups) < 0) {
                free(d);
                *ret_error = "groups must be names of [A-Za-z0-9._-] separated by ','";
                return -EINVAL;
        }
        snprintf(d->source, sizeof d->source, "%s", source);
        q = dev_save(r, d);
        if (q < 0 || !dev_insert(r, d)) {
                free(d);
                *ret_error = "cannot store the device";
                return q < 0 ? q : -ENOMEM;
        }
        key_b64(key, b64);
        audit_log(r->audit, actor, "device.added", id,
                  json_pack("{ss ss so ss}", "public_key", b64, "state",
                            device_state_to_string(state), "groups",
                            registry_groups_json(d->groups), "source", source));
        log_device(LOG_INFO, id, "enrolled (%s, %s) by %s", device_state_to_string(state), source,
                   actor);
        return 0;
}

int registry_set_state(struct registry *r, const char *actor, const char *id,
                       enum device_state state, const char *reason, const char **ret_error)
{
        struct registry_device *d = find_mut(r, id);
        enum device_state old;
        int q;

        if (!d) {
                snprintf(r->errbuf, sizeof r->errbuf, "no device %s", id);
                *ret_error = r->errbuf;
                return -ENOENT;
        }
        if (d->state == state)
                return 0;
        if (d->state == DEVICE_REVOKED && state != DEVICE_REVOKED && strcmp(actor, "daemon") != 0 &&
            strcmp(d->source, "file") != 0) {
                /* A revoked key stays revoked: enroll a new key instead. */
                *ret_error = "device is revoked; enroll it again with a new key";
                return -EPERM;
        }
        old = d->state;
        d->state = state;
        q = dev_save(r, d);
        if (q < 0) {
                d->state = old;
                *ret_error = "cannot store the device";
                return q;
        }
        audit_log(r->audit, actor, "device.state", id,
                  json_pack("{ss ss ss}", "from", device_state_to_string(old), "to",
                            device_state_to_string(state), "reason", reason ? reason : ""));
        log_device(LOG_NOTICE, id, "%s -> %s by %s%s%s", device_state_to_string(old),
                   device_state_to_string(state), actor, reason && *reason ? ": " : "",
                   reason ? reason : "");
        if (r->listener)
                r->listener(r->listener_data, d, old);
        return 0;
}

int registry_set_key(struct registry *r, const char *actor, const char *id,
                     const uint8_t key[REGISTRY_KEY_LEN], const char **ret_error)
{
        struct registry_device *d = find_mut(r, id);
        const struct registry_device *other;
        uint8_t old[REGISTRY_KEY_LEN];
        char b64[45], old64[45];
        int q;

        if (!d) {
                snprintf(r->errbuf, sizeof r->errbuf, "no device %s", id);
                *ret_error = r->errbuf;
                return -ENOENT;
        }
        if (strcmp(d->source, "file") == 0) {
                /* The next reload would put the file's key back. */
                snprintf(r->errbuf, sizeof r->errbuf,
                         "device %s is enrolled from DevicesDirectory: change its PublicKey= "
                         "there and reload",
                         id);
                *ret_error = r->errbuf;
                return -EPERM;
        }
        other = registry_find_key(r, key);
        if (other == d) {
                snprintf(r->errbuf, sizeof r->errbuf, "device %s already has that key", id);
                *ret_error = r->errbuf;
                return -EALREADY;
        }
        if (other) {
                snprintf(r->errbuf, sizeof r->errbuf, "that key is already enrolled as %s",
                         other->id);
                *ret_error = r->errbuf;
                return -EEXIST;
        }
        memcpy(old, d->pubkey, REGISTRY_KEY_LEN);
        memcpy(d->pubkey, key, REGISTRY_KEY_LEN);
        q = dev_save(r, d);
        if (q < 0 || index_rebuild(r, &r->by_key, r->n, true) < 0) {
                memcpy(d->pubkey, old, REGISTRY_KEY_LEN);
                index_rebuild(r, &r->by_key, r->n, true);
                *ret_error = "cannot store the device";
                return q < 0 ? q : -ENOMEM;
        }
        key_b64(key, b64);
        key_b64(old, old64);
        audit_log(r->audit, actor, "device.key_changed", id,
                  json_pack("{ss ss ss}", "public_key", b64, "old_public_key", old64, "source",
                            "cli"));
        log_device(LOG_NOTICE, id, "key replaced by %s", actor);
        /* Whoever holds the old key must not stay connected. */
        if (r->listener)
                r->listener(r->listener_data, d, d->state);
        return 0;
}

int registry_remove(struct registry *r, const char *actor, const char *id, const char *reason,
                    const char **ret_error)
{
        struct registry_device *d = find_mut(r, id);
        enum device_state old;
        sqlite3_stmt *s = NULL;
        size_t i;
        char b64[45];
        int q, rc;

        if (!d) {
                snprintf(r->errbuf, sizeof r->errbuf, "no device %s", id);
                *ret_error = r->errbuf;
                return -ENOENT;
        }
        if (strcmp(d->source, "file") == 0) {
                /* The next reload would enroll it again. */
                snprintf(r->errbuf, sizeof r->errbuf,
                         "device %s is enrolled from DevicesDirectory: delete its [Device] "
                         "section there and reload",
                         id);
                *ret_error = r->errbuf;
                return -EPERM;
        }
        q = db_write_begin(r->db);
        if (q >= 0 && sqlite3_prepare_v2(db_handle(r->db), "DELETE FROM devices WHERE id = ?1", -1,
                                         &s, NULL) != SQLITE_OK)
                q = -EIO;
        if (q >= 0) {
                sqlite3_bind_text(s, 1, d->id, -1, SQLITE_STATIC);
                rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        q = db_errno(rc);
                sqlite3_finalize(s);
        }
        if (q < 0) {
                *ret_error = "cannot remove the device from the database";
                return q;
        }
        key_b64(d->pubkey, b64);
        /* The audit history of the id stays: removal is one more record of it. */
        audit_log(r->audit, actor, "device.removed", id,
                  json_pack("{ss ss so sb ss}", "public_key", b64, "state",
                            device_state_to_string(d->state), "groups",
                            registry_groups_json(d->groups), "connected", d->connected, "reason",
                            reason ? reason : ""));
        log_device(LOG_NOTICE, id, "removed from the registry by %s%s%s", actor,
                   reason && *reason ? ": " : "", reason ? reason : "");
        /* A connected device loses its session at once, as on revocation. */
        old = d->state;
        d->state = DEVICE_REVOKED;
        if (r->listener && old != DEVICE_REVOKED)
                r->listener(r->listener_data, d, old);
        i = dev_index(r, d);
        if (i == SIZE_MAX)
                return 0;
        memmove(r->devs + i, r->devs + i + 1, (r->n - i - 1) * sizeof *r->devs);
        memmove(r->dirty + i, r->dirty + i + 1, (r->n - i - 1) * sizeof *r->dirty);
        r->n--;
        /* The numbers after i moved down by one: list the dirty ones again (O(n), as the move). */
        r->n_dirty = 0;
        for (size_t j = 0; j < r->n; j++)
                if (r->dirty[j])
                        r->dirty_list[r->n_dirty++] = j;
        free(d);
        /* Rebuilding at the same size allocates again; on failure rebuild in place. */
        if (index_rebuild(r, &r->by_id, r->n, false) < 0) {
                memset(r->by_id.slots, 0, r->by_id.cap * sizeof *r->by_id.slots);
                for (size_t j = 0; j < r->n; j++)
                        index_put(r, &r->by_id, j, false);
        }
        if (index_rebuild(r, &r->by_key, r->n, true) < 0) {
                memset(r->by_key.slots, 0, r->by_key.cap * sizeof *r->by_key.slots);
                for (size_t j = 0; j < r->n; j++)
                        index_put(r, &r->by_key, j, true);
        }
        return 0;
}

int registry_sync_files(struct registry *r, const struct enroll_list *files)
{
        const char *err;

        for (size_t i = 0; i < files->n; i++) {
                const struct enroll_entry *e = &files->v[i];
                struct registry_device *d = find_mut(r, e->id);

                if (!d) {
                        if (registry_add(r, "daemon", e->id, e->key, e->state, e->groups, "file",
                                         &err) < 0)
                                log_error("registry: cannot enroll %s from DevicesDirectory: %s",
                                          e->id, err);
                        continue;
                }
                if (CRYPTO_memcmp(d->pubkey, e->key, REGISTRY_KEY_LEN) != 0) {
                        const struct registry_device *other = registry_find_key(r, e->key);
                        char b64[45];
                        if (other) {
                                log_error("registry: key for %s is already enrolled as %s", e->id,
                                          other->id);
                                continue;
                        }
                        memcpy(d->pubkey, e->key, REGISTRY_KEY_LEN);
                        index_rebuild(r, &r->by_key, r->n, true);
                        key_b64(e->key, b64);
                        audit_log(r->audit, "daemon", "device.key_changed", d->id,
                                  json_pack("{ss ss}", "public_key", b64, "source", "file"));
                        /* Whoever holds the old key must not stay connected. */
                        if (r->listener)
                                r->listener(r->listener_data, d, d->state);
                }
                if (strcmp(d->groups, e->groups) != 0) {
                        audit_log(r->audit, "daemon", "device.groups", d->id,
                                  json_pack("{so so}", "from", registry_groups_json(d->groups),
                                            "to", registry_groups_json(e->groups)));
                        snprintf(d->groups, sizeof d->groups, "%s", e->groups);
                }
                snprintf(d->source, sizeof d->source, "file");
                dev_save(r, d);
        }

        /* File devices no longer listed are revoked (kept for the audit trail). */
        for (size_t i = 0; i < r->n; i++) {
                struct registry_device *d = r->devs[i];
                bool listed = false;
                if (strcmp(d->source, "file") != 0 || d->state == DEVICE_REVOKED)
                        continue;
                for (size_t j = 0; j < files->n && !listed; j++)
                        listed = strcmp(files->v[j].id, d->id) == 0;
                if (!listed)
                        registry_set_state(r, "daemon", d->id, DEVICE_REVOKED,
                                           "removed from DevicesDirectory", &err);
        }
        return 0;
}

/* What an import does with an entry whose id is enrolled already. */
static bool import_differs(const struct registry_device *d, const struct enroll_entry *e)
{
        return CRYPTO_memcmp(d->pubkey, e->key, REGISTRY_KEY_LEN) != 0 ||
               strcmp(d->groups, e->groups) != 0;
}

static int import_update(struct registry *r, const char *actor, struct registry_device *d,
                         const struct enroll_entry *e, const char **ret_error)
{
        int q;

        if (CRYPTO_memcmp(d->pubkey, e->key, REGISTRY_KEY_LEN) != 0 &&
            (q = registry_set_key(r, actor, d->id, e->key, ret_error)) < 0)
                return q;
        if (strcmp(d->groups, e->groups) != 0) {
                char old[REGISTRY_GROUPS_MAX + 1];
                snprintf(old, sizeof old, "%s", d->groups);
                snprintf(d->groups, sizeof d->groups, "%s", e->groups);
                q = dev_save(r, d);
                if (q < 0) {
                        snprintf(d->groups, sizeof d->groups, "%s", old);
                        *ret_error = "cannot store the device";
                        return q;
                }
                audit_log(r->audit, actor, "device.groups", d->id,
                          json_pack("{so so ss}", "from", registry_groups_json(old), "to",
                                    registry_groups_json(e->groups), "source", "import"));
        }
        return 0;
}

int registry_import(struct registry *r, const char *actor, const char *source,
                    const struct enroll_list *list, enum registry_import_mode mode,
                    struct registry_import_result *res, struct conf_errors *err)
{
        const char *why;
        size_t before = err->n;
        struct registry_import_result n = { 0 };

        /* Validate everything against the registry first: all or nothing. */
        for (size_t i = 0; i < list->n; i++) {
                const struct enroll_entry *e = &list->v[i];
                const struct registry_device *d = registry_find(r, e->id), *o;

                o = registry_find_key(r, e->key);
                if (d && mode == REGISTRY_IMPORT_NEW)
                        conf_errors_add(err,
                                        "line %u: device %s is already enrolled (--skip-existing "
                                        "leaves it as it is, --update changes it)",
                                        e->line, e->id);
                else if (d && mode == REGISTRY_IMPORT_UPDATE && import_differs(d, e) &&
                         strcmp(d->source, "file") == 0)
                        conf_errors_add(err,
                                        "line %u: device %s is enrolled from DevicesDirectory: "
                                        "change it there",
                                        e->line, e->id);
                else if (d && mode == REGISTRY_IMPORT_UPDATE && d->state == DEVICE_REVOKED &&
                         import_differs(d, e))
                        conf_errors_add(err, "line %u: device %s is revoked", e->line, e->id);
                else if (o && o != d && (!d || mode == REGISTRY_IMPORT_UPDATE))
                        conf_errors_add(err, "line %u: key of %s is already enrolled as %s",
                                        e->line, e->id, o->id);
        }
        if (err->n > before)
                return -EINVAL;
        for (size_t i = 0; i < list->n; i++) {
                const struct enroll_entry *e = &list->v[i];
                struct registry_device *d = find_mut(r, e->id);
                int q = 0;

                if (!d) {
                        q = registry_add(r, actor, e->id, e->key, e->state, e->groups, source,
                                         &why);
                        n.added++;
                } else if (mode == REGISTRY_IMPORT_SKIP_EXISTING)
                        n.skipped++;
                else if (!import_differs(d, e))
                        n.unchanged++;
                else {
                        q = import_update(r, actor, d, e, &why);
                        n.updated++;
                }
                if (q < 0) {
                        /* Checked above; only storage can fail here. */
                        conf_errors_add(err, "line %u: %s", e->line, why);
                        return -EIO;
                }
        }
        audit_log(r->audit, actor, "device.import", source,
                  json_pack("{sI sI sI sI}", "devices", (json_int_t)n.added, "updated",
                            (json_int_t)n.updated, "skipped", (json_int_t)n.skipped, "unchanged",
                            (json_int_t)n.unchanged));
        if (res)
                *res = n;
        return 0;
}

json_t *registry_groups_json(const char *groups)
{
        json_t *arr = json_array();

        /* groups is normalised: names separated by single commas, no spaces. */
        for (const char *p = groups; arr && *p;) {
                size_t n = strcspn(p, ",");
                json_array_append_new(arr, json_stringn(p, n));
                p += n + (p[n] == ',');
        }
        return arr;
}

json_t *registry_device_to_json(const struct registry_device *d)
{
        char b64[45];
        key_b64(d->pubkey, b64);
        return json_pack("{ss ss ss so ss ss sI si sI ss sb}", "id", d->id, "public_key", b64,
                         "state", device_state_to_string(d->state), "groups",
                         registry_groups_json(d->groups), "source", d->source, "fw_version",
                         d->fw_version, "boot_counter", (json_int_t)d->boot_counter, "reset_cause",
                         d->reset_cause, "last_seen_us", (json_int_t)d->last_seen_us, "link",
                         d->link, "connected", d->connected);
}

json_t *registry_device_json(struct registry *r, const struct registry_device *d)
{
        json_t *o = registry_device_to_json(d);
        if (o && r->decorate)
                r->decorate(r->decorate_data, d->id, o);
        return o;
}

struct audit *registry_audit(struct registry *r)
{
        return r->audit;
}

bool registry_device_in_group(const struct registry_device *d, const char *group)
{
        char pat[REGISTRY_GROUPS_MAX + 3];
        char g[72];
        snprintf(pat, sizeof pat, ",%s,", d->groups);
        snprintf(g, sizeof g, ",%s,", group);
        return strstr(pat, g) != NULL;
}

int registry_import_text(struct registry *r, const char *actor, const char *format,
                         const char *name, const char *content, enum registry_import_mode mode,
                         struct registry_import_result *res, struct conf_errors *errs)
{
        struct enroll_list list = { 0 };
        json_t *msgs;
        int q;

        q = strcmp(format, "csv") == 0 ? enroll_parse_csv(name, content, &list, errs)
                                       : enroll_parse_json(name, content, &list, errs);
        if (q >= 0)
                q = registry_import(r, actor, name, &list, mode, res, errs);
        enroll_list_free(&list);
        if (q < 0) {
                msgs = json_array();
                for (size_t i = 0; i < errs->n; i++)
                        json_array_append_new(msgs, json_string(errs->msgs[i]));
                audit_log(r->audit, actor, "device.import_failed", name,
                          json_pack("{sO}", "errors", msgs));
                json_decref(msgs);
                return q;
        }
        return 0;
}
