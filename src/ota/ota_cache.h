/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The OTA image cache (docs/ota.md): one file per image in CacheDirectory, its block bitmap in
 * the ota_images table, so a download interrupted by a crash or a reboot resumes with the blocks
 * that are missing. A download is keyed by what the job names (stream, file id, size,
 * signature); a finished image is also findable by its SHA-256, so every MCU that needs the same
 * image is served from one download. The directory is bounded by MaxCacheSize: least recently
 * used finished images not in use are evicted first.
 *
 * Durability: a block's bit is updated in the current group-commit transaction only after its
 * bytes were written with pwrite(); a crash may lose bits (the blocks are fetched again), never
 * mark unwritten data as present. Blocks are written with fdatasync before each commit.
 */

struct db;
struct ota_cache;
struct ota_image;

#define OTA_CACHE_KEY_MAX 64

int ota_cache_open(struct db *db, const char *dir, uint64_t max_bytes, struct ota_cache **ret);
void ota_cache_free(struct ota_cache *c);

/* Open the download named key (created empty, or resumed from its persisted bitmap). A
 * resumed entry whose size or block size differ is restarted. The image is referenced until
 * ota_image_unref(). -ENOSPC when size exceeds the cache. */
int ota_cache_begin(struct ota_cache *c, const char *key, uint64_t size, uint32_t block_size,
                    struct ota_image **ret);
/* Copy a local file into the cache (mcugwctl ota start FILE): a complete image keyed by its
 * SHA-256 hex. */
int ota_cache_import(struct ota_cache *c, const char *path, struct ota_image **ret);
/* A finished image by key or SHA-256 hex; -ENOENT. */
int ota_cache_lookup(struct ota_cache *c, const char *key_or_sha, struct ota_image **ret);

/* Store block i (exactly block_size bytes, the last one the remainder). Duplicates are
 * accepted and ignored (returns 0), wrong index/length: -EBADMSG. Returns 1 when the block
 * was new. */
int ota_image_write_block(struct ota_image *img, uint32_t i, const uint8_t *data, size_t len);
/* After the last block: hash the file, record its SHA-256. 0, -EAGAIN if blocks are missing. */
int ota_image_finish(struct ota_image *img);
/* Drop a download (bad signature): file and row removed when the last reference goes. */
void ota_image_discard(struct ota_image *img);

void ota_image_ref(struct ota_image *img);
void ota_image_unref(struct ota_image *img);

const char *ota_image_key(const struct ota_image *img);
const char *ota_image_path(const struct ota_image *img);
const char *ota_image_sha256(const struct ota_image *img); /* "" until finished */
uint64_t ota_image_size(const struct ota_image *img);
uint32_t ota_image_block_size(const struct ota_image *img);
uint32_t ota_image_blocks(const struct ota_image *img);
uint32_t ota_image_blocks_have(const struct ota_image *img);
const uint8_t *ota_image_bitmap(const struct ota_image *img);
bool ota_image_complete(const struct ota_image *img);
/* Complete and not discarded. */
bool ota_image_usable(const struct ota_image *img);
/* Read len bytes at off (for the transfer to MCUs): the number read or -errno. */
int ota_image_read(struct ota_image *img, uint64_t off, uint8_t *buf, size_t len);

/* Bytes of finished images on disk, and partial ones. */
uint64_t ota_cache_bytes(const struct ota_cache *c);
