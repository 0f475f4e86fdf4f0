/* SPDX-License-Identifier: Apache-2.0 */
/* OTA image cache with persisted block bitmaps (see ota_cache.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/time-util.h"
#include "store/db.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "ota/ota_cache.h"
#include "ota/ota_stream.h"
#include "ota/ota_verify.h"
#include "basic/fileio.h"

struct ota_image {
        struct ota_cache *cache;
        struct ota_image *next;
        unsigned refs;
        char key[OTA_CACHE_KEY_MAX + 1];
        char sha256[65];
        char *path;
        int fd;
        uint64_t size;
        uint32_t block_size, n_blocks, have;
        uint8_t *bitmap;
        bool complete, discarded, dirty;
};

struct ota_cache {
        struct db *db;
        char *dir;
        uint64_t max_bytes;
        struct ota_image *images; /* referenced ones */
        sqlite3_stmt *get, *put, *del, *touch, *lru;
};

static bool key_ok(const char *k)
{
        size_t n = strlen(k);
        if (n == 0 || n > OTA_CACHE_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '-'))
                        return false;
        return true;
}

static int persist(struct ota_image *img);

static int flush_dirty(void *ud)
{
        struct ota_cache *c = ud;
        for (struct ota_image *i = c->images; i; i = i->next)
                if (i->dirty) {
                        if (i->fd >= 0)
                                (void)fdatasync(i->fd);
                        (void)persist(i);
                }
        return 0;
}

int ota_cache_open(struct db *db, const char *dir, uint64_t max_bytes, struct ota_cache **ret)
{
        struct ota_cache *c = calloc(1, sizeof *c);
        int r;

        if (!c)
                return -ENOMEM;
        c->db = db;
        c->max_bytes = max_bytes;
        c->dir = strdup(dir);
        if (!c->dir) {
                free(c);
                return -ENOMEM;
        }
        if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
                r = -errno;
                goto fail;
        }
        if ((r = db_prepare(
                     db,
                     "SELECT size, block_size, bitmap, complete, sha256, key FROM ota_images "
                     "WHERE key = ?1 OR (complete = 1 AND sha256 = ?1) LIMIT 1",
                     &c->get)) < 0 ||
            (r = db_prepare(db,
                            "INSERT OR REPLACE INTO ota_images (key, size, block_size, bitmap, "
                            "complete, sha256, last_used_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            &c->put)) < 0 ||
            (r = db_prepare(db, "DELETE FROM ota_images WHERE key = ?", &c->del)) < 0 ||
            (r = db_prepare(db,
                            "SELECT key, size FROM ota_images ORDER BY complete DESC, "
                            "last_used_us ASC",
                            &c->lru)) < 0)
                goto fail;
        if ((r = db_add_precommit(db, flush_dirty, c)) < 0)
                goto fail;
        *ret = c;
        return 0;
fail:
        free(c->dir);
        free(c);
        return r;
}

void ota_cache_free(struct ota_cache *c)
{
        if (!c)
                return;
        flush_dirty(c);
        db_remove_precommit(c->db, flush_dirty, c);
        /* Images still referenced keep a dangling cache pointer otherwise: close them. */
        while (c->images) {
                struct ota_image *i = c->images;
                c->images = i->next;
                if (i->fd >= 0)
                        close(i->fd);
                free(i->bitmap);
                free(i->path);
                free(i);
        }
        free(c->dir);
        free(c);
}

static int persist(struct ota_image *img)
{
        struct ota_cache *c = img->cache;
        sqlite3_stmt *s = c->put;
        int r;

        if (img->discarded)
                return 0;
        if ((r = db_write_begin(c->db)) < 0)
                return r;
        sqlite3_reset(s);
        sqlite3_bind_text(s, 1, img->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (int64_t)img->size);
        sqlite3_bind_int64(s, 3, img->block_size);
        sqlite3_bind_blob(s, 4, img->bitmap, (int)((img->n_blocks + 7) / 8), SQLITE_STATIC);
        sqlite3_bind_int(s, 5, img->complete);
        sqlite3_bind_text(s, 6, img->sha256, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, now_realtime_usec());
        r = db_errno(sqlite3_step(s));
        sqlite3_reset(s);
        if (r == 0)
                img->dirty = false;
        return r;
}

static uint32_t popcount_bm(const uint8_t *bm, uint32_t n)
{
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++)
                k += ota_bit_get(bm, i);
        return k;
}

static struct ota_image *find_loaded(struct ota_cache *c, const char *key)
{
        for (struct ota_image *i = c->images; i; i = i->next)
                if (strcmp(i->key, key) == 0 || (i->complete && strcmp(i->sha256, key) == 0))
                        return i;
        return NULL;
}

static struct ota_image *image_new(struct ota_cache *c, const char *key, uint64_t size,
                                   uint32_t block_size)
{
        struct ota_image *img = calloc(1, sizeof *img);

        if (!img)
                return NULL;
        img->cache = c;
        img->fd = -1;
        img->refs = 1;
        snprintf(img->key, sizeof img->key, "%s", key);
        img->size = size;
        img->block_size = block_size;
        img->n_blocks = (uint32_t)((size + block_size - 1) / block_size);
        img->bitmap = calloc((img->n_blocks + 7) / 8 + 1, 1);
        if (!img->bitmap || asprintf(&img->path, "%s/%s.img", c->dir, key) < 0) {
                free(img->bitmap);
                free(img);
                return NULL;
        }
        return img;
}

static void link_image(struct ota_cache *c, struct ota_image *img)
{
        img->next = c->images;
        c->images = img;
}

/* Make room for `need` bytes: evict LRU finished images that are not loaded. */
static void evict(struct ota_cache *c, uint64_t need)
{
        uint64_t total = ota_cache_bytes(c);
        char key[OTA_CACHE_KEY_MAX + 1];

        while (total + need > c->max_bytes) {
                bool found = false;
                sqlite3_reset(c->lru);
                while (sqlite3_step(c->lru) == SQLITE_ROW) {
                        const char *k = (const char *)sqlite3_column_text(c->lru, 0);
                        if (!k || find_loaded(c, k))
                                continue;
                        snprintf(key, sizeof key, "%s", k);
                        found = true;
                        break;
                }
                sqlite3_reset(c->lru);
                if (!found)
                        return;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s.img", c->dir, key) >= 0)
                        unlink(path);
                db_write_begin(c->db);
                sqlite3_reset(c->del);
                sqlite3_bind_text(c->del, 1, key, -1, SQLITE_TRANSIENT);
                sqlite3_step(c->del);
                sqlite3_reset(c->del);
                log_info("ota cache: evicted %s", key);
                total = ota_cache_bytes(c);
        }
}

uint64_t ota_cache_bytes(const struct ota_cache *c)
{
        uint64_t total = 0;
        sqlite3_reset(c->lru);
        while (sqlite3_step(c->lru) == SQLITE_ROW)
                total += (uint64_t)sqlite3_column_int64(c->lru, 1);
        sqlite3_reset(c->lru);
        return total;
}

static int open_file(struct ota_image *img, bool truncate_it)
{
        img->fd = open(img->path, O_RDWR | O_CREAT | O_CLOEXEC | (truncate_it ? O_TRUNC : 0), 0640);
        if (img->fd < 0)
                return -errno;
        return 0;
}

/* Load a row into a new image; 1 found, 0 not found. */
static int load(struct ota_cache *c, const char *key, struct ota_image **ret)
{
        sqlite3_stmt *s = c->get;
        struct ota_image *img;
        const void *bm;
        int bm_len, r = 0;

        sqlite3_reset(s);
        sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_ROW)
                goto out;
        {
                int64_t size = sqlite3_column_int64(s, 0), bs = sqlite3_column_int64(s, 1);
                const char *sha = (const char *)sqlite3_column_text(s, 4);
                const char *rowkey = (const char *)sqlite3_column_text(s, 5);
                if (size <= 0 || bs < 1 || bs > OTA_STREAM_BLOCK_MAX || !rowkey || !key_ok(rowkey))
                        goto out;
                img = image_new(c, rowkey, (uint64_t)size, (uint32_t)bs);
                if (!img) {
                        r = -ENOMEM;
                        goto out;
                }
                bm = sqlite3_column_blob(s, 2);
                bm_len = sqlite3_column_bytes(s, 2);
                if (bm && bm_len == (int)((img->n_blocks + 7) / 8))
                        memcpy(img->bitmap, bm, (size_t)bm_len);
                img->complete = sqlite3_column_int(s, 3) != 0;
                snprintf(img->sha256, sizeof img->sha256, "%s", sha ? sha : "");
                img->have = popcount_bm(img->bitmap, img->n_blocks);
                *ret = img;
                r = 1;
        }
out:
        sqlite3_reset(s);
        return r;
}

int ota_cache_begin(struct ota_cache *c, const char *key, uint64_t size, uint32_t block_size,
                    struct ota_image **ret)
{
        struct ota_image *img;
        int r;

        if (!key_ok(key) || size == 0 || block_size < 1 || block_size > OTA_STREAM_BLOCK_MAX)
                return -EINVAL;
        if (size > c->max_bytes)
                return -ENOSPC;
        img = find_loaded(c, key);
        if (img) {
                img->refs++;
                *ret = img;
                return 0;
        }
        r = load(c, key, &img);
        if (r < 0)
                return r;
        if (r == 1 && (img->size != size || img->block_size != block_size)) {
                ota_image_discard(img);
                free(img->bitmap);
                free(img->path);
                free(img);
                r = 0;
        }
        if (r == 0) {
                evict(c, size);
                img = image_new(c, key, size, block_size);
                if (!img)
                        return -ENOMEM;
                if ((r = open_file(img, true)) < 0 || ftruncate(img->fd, (off_t)size) < 0) {
                        r = r < 0 ? r : -errno;
                        if (img->fd >= 0)
                                close(img->fd);
                        free(img->bitmap);
                        free(img->path);
                        free(img);
                        return r;
                }
                if ((r = persist(img)) < 0)
                        log_warning("ota cache: cannot record %s: %s", key, strerror(-r));
        } else if ((r = open_file(img, false)) < 0) {
                free(img->bitmap);
                free(img->path);
                free(img);
                return r;
        }
        link_image(c, img);
        *ret = img;
        return 0;
}

int ota_cache_lookup(struct ota_cache *c, const char *key, struct ota_image **ret)
{
        struct ota_image *img = find_loaded(c, key);
        int r;

        if (img) {
                if (!img->complete)
                        return -ENOENT;
                img->refs++;
                *ret = img;
                return 0;
        }
        r = load(c, key, &img);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        if (!img->complete) {
                free(img->bitmap);
                free(img->path);
                free(img);
                return -ENOENT;
        }
        if ((r = open_file(img, false)) < 0) {
                free(img->bitmap);
                free(img->path);
                free(img);
                return r;
        }
        link_image(c, img);
        *ret = img;
        return 0;
}

int ota_image_write_block(struct ota_image *img, uint32_t i, const uint8_t *data, size_t len)
{
        uint64_t off;
        size_t want;

        if (i >= img->n_blocks)
                return -EBADMSG;
        off = (uint64_t)i * img->block_size;
        want = (size_t)MIN((uint64_t)img->block_size, img->size - off);
        if (len != want)
                return -EBADMSG;
        if (ota_bit_get(img->bitmap, i))
                return 0;
        for (size_t done = 0; done < len;) {
                ssize_t k = pwrite(img->fd, data + done, len - done, (off_t)(off + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;
                done += (size_t)k;
        }
        ota_bit_set(img->bitmap, i);
        img->have++;
        img->dirty = true;
        db_write_begin(img->cache->db); /* arms the commit timer; bits go in at the commit */
        return 1;
}

int ota_image_finish(struct ota_image *img)
{
        uint8_t h[32];
        int r;

        if (img->have != img->n_blocks)
                return -EAGAIN;
        if (img->complete)
                return 0;
        (void)fdatasync(img->fd);
        if ((r = ota_sha256_file(img->path, img->size, h)) < 0)
                return r;
        ota_hex(h, 32, img->sha256);
        img->complete = true;
        return persist(img);
}

int ota_cache_import(struct ota_cache *c, const char *path, struct ota_image **ret)
{
        /* A regular file; a FIFO or device named by the client must not block the loop. */
        _cleanup_close_ int in = fileio_open(path, 0, 0, NULL, NULL, 0);
        _cleanup_free_ uint8_t *buf = NULL;
        struct ota_image *img;
        uint8_t h[32];
        char hex[65], key[OTA_CACHE_KEY_MAX + 1];
        struct stat st;
        uint32_t bs = 64 * 1024;
        int r;

        if (in < 0)
                return in;
        if (fstat(in, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size <= 0)
                return -EINVAL;
        if ((r = ota_sha256_file(path, (uint64_t)st.st_size, h)) < 0)
                return r;
        ota_hex(h, 32, hex);
        if (ota_cache_lookup(c, hex, ret) == 0)
                return 0;
        snprintf(key, sizeof key, "%s", hex);
        if ((r = ota_cache_begin(c, key, (uint64_t)st.st_size, bs, &img)) < 0)
                return r;
        buf = malloc(bs);
        if (!buf) {
                ota_image_unref(img);
                return -ENOMEM;
        }
        for (uint32_t i = 0; i < img->n_blocks; i++) {
                size_t want = (size_t)MIN((uint64_t)bs, img->size - (uint64_t)i * bs);
                ssize_t k = pread(in, buf, want, (off_t)i * bs);
                if (k != (ssize_t)want || (r = ota_image_write_block(img, i, buf, want)) < 0) {
                        ota_image_discard(img);
                        ota_image_unref(img);
                        return r < 0 ? r : -EIO;
                }
        }
        if ((r = ota_image_finish(img)) < 0 || strcmp(img->sha256, hex) != 0) {
                ota_image_discard(img);
                ota_image_unref(img);
                return r < 0 ? r : -EIO; /* changed while we copied it */
        }
        *ret = img;
        return 0;
}

void ota_image_discard(struct ota_image *img)
{
        struct ota_cache *c = img->cache;

        if (img->discarded)
                return;
        img->discarded = true;
        unlink(img->path);
        db_write_begin(c->db);
        sqlite3_reset(c->del);
        sqlite3_bind_text(c->del, 1, img->key, -1, SQLITE_TRANSIENT);
        sqlite3_step(c->del);
        sqlite3_reset(c->del);
}

void ota_image_ref(struct ota_image *img)
{
        img->refs++;
}

void ota_image_unref(struct ota_image *img)
{
        struct ota_cache *c;

        if (!img || --img->refs > 0)
                return;
        c = img->cache;
        if (img->dirty && img->fd >= 0) {
                (void)fdatasync(img->fd);
                (void)persist(img);
        }
        for (struct ota_image **p = &c->images; *p; p = &(*p)->next)
                if (*p == img) {
                        *p = img->next;
                        break;
                }
        if (img->fd >= 0)
                close(img->fd);
        free(img->bitmap);
        free(img->path);
        free(img);
}

const char *ota_image_key(const struct ota_image *img)
{
        return img->key;
}
const char *ota_image_path(const struct ota_image *img)
{
        return img->path;
}
const char *ota_image_sha256(const struct ota_image *img)
{
        return img->sha256;
}
uint64_t ota_image_size(const struct ota_image *img)
{
        return img->size;
}
uint32_t ota_image_block_size(const struct ota_image *img)
{
        return img->block_size;
}
uint32_t ota_image_blocks(const struct ota_image *img)
{
        return img->n_blocks;
}
uint32_t ota_image_blocks_have(const struct ota_image *img)
{
        return img->have;
}
const uint8_t *ota_image_bitmap(const struct ota_image *img)
{
        return img->bitmap;
}
bool ota_image_complete(const struct ota_image *img)
{
        return img->complete;
}

bool ota_image_usable(const struct ota_image *img)
{
        return img->complete && !img->discarded;
}

int ota_image_read(struct ota_image *img, uint64_t off, uint8_t *buf, size_t len)
{
        ssize_t k;

        if (off >= img->size)
                return 0;
        if (len > img->size - off)
                len = (size_t)(img->size - off);
        do
                k = pread(img->fd, buf, len, (off_t)off);
        while (k < 0 && errno == EINTR);
        return k < 0 ? -errno : (int)k;
}
