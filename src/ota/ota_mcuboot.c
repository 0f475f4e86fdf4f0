/* SPDX-License-Identifier: Apache-2.0 */
/* MCUboot image header and TLV parser (see ota_mcuboot.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota/ota_mcuboot.h"

static uint16_t le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
        va_list ap;

        if (err && n) {
                va_start(ap, fmt);
                vsnprintf(err, n, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

bool ota_mcuboot_is_image(const uint8_t *p, size_t len)
{
        return p && len >= 4 && le32(p) == OTA_MCUBOOT_MAGIC;
}

/* Walk one TLV area [off, off + total). */
static int walk(const uint8_t *p, size_t off, size_t total, bool protected_area,
                struct ota_mcuboot_info *info, char *err, size_t errlen)
{
        size_t end = off + total, q = off + 4;

        while (q < end) {
                uint16_t type, len;
                if (end - q < 4)
                        return fail(err, errlen, "TLV header at %zu truncated", q);
                type = le16(p + q);
                len = le16(p + q + 2);
                q += 4;
                if (len > end - q)
                        return fail(err, errlen, "TLV 0x%02x at %zu overruns its area", type,
                                    q - 4);
                switch (type) {
                case OTA_MCUBOOT_TLV_SEC_CNT:
                        if (!protected_area || len != 4 || info->has_sec_cnt)
                                return fail(err, errlen,
                                            "security counter TLV must be one protected u32");
                        info->has_sec_cnt = true;
                        info->sec_cnt = le32(p + q);
                        break;
                case OTA_MCUBOOT_TLV_SHA256:
                        if (protected_area || len != 32 || info->has_sha256)
                                return fail(err, errlen,
                                            "SHA-256 TLV must be one 32-byte "
                                            "unprotected TLV");
                        info->has_sha256 = true;
                        memcpy(info->sha256, p + q, 32);
                        break;
                case OTA_MCUBOOT_TLV_ECDSA_SIG:
                        if (protected_area || len < 8 || len > 72 || info->sig_len)
                                return fail(err, errlen, "bad ECDSA signature TLV");
                        info->sig_off = q;
                        info->sig_len = len;
                        break;
                default: break; /* key hash, other algorithms, dependencies: not ours */
                }
                q += len;
        }
        return 0;
}

int ota_mcuboot_parse(const uint8_t *p, size_t len, struct ota_mcuboot_info *ret, char *err,
                      size_t errlen)
{
        struct ota_mcuboot_info info = { 0 };
        size_t off;
        int r;

        if (!p || len < OTA_MCUBOOT_HDR_MIN)
                return fail(err, errlen, "shorter than an MCUboot header");
        if (le32(p) != OTA_MCUBOOT_MAGIC)
                return fail(err, errlen, "bad MCUboot magic 0x%08x", le32(p));
        info.load_addr = le32(p + 4);
        info.hdr_size = le16(p + 8);
        info.protect_tlv_size = le16(p + 10);
        info.img_size = le32(p + 12);
        info.flags = le32(p + 16);
        info.version.major = p[20];
        info.version.minor = p[21];
        info.version.revision = le16(p + 22);
        info.version.build = le32(p + 24);
        if (info.hdr_size < OTA_MCUBOOT_HDR_MIN || info.hdr_size > len)
                return fail(err, errlen, "header size %u out of range", info.hdr_size);
        if (info.img_size > len - info.hdr_size)
                return fail(err, errlen, "image size %u exceeds the file", info.img_size);
        off = (size_t)info.hdr_size + info.img_size;
        if (info.protect_tlv_size) {
                if (info.protect_tlv_size < 4 || info.protect_tlv_size > len - off ||
                    le16(p + off) != OTA_MCUBOOT_TLV_PROT ||
                    le16(p + off + 2) != info.protect_tlv_size)
                        return fail(err, errlen, "bad protected TLV area");
                if ((r = walk(p, off, info.protect_tlv_size, true, &info, err, errlen)) < 0)
                        return r;
                off += info.protect_tlv_size;
        }
        info.hashed_len = off;
        if (len - off < 4 || le16(p + off) != OTA_MCUBOOT_TLV_INFO)
                return fail(err, errlen, "no TLV area after the image");
        {
                size_t total = le16(p + off + 2);
                if (total < 4 || total > len - off)
                        return fail(err, errlen, "TLV area length %zu out of range", total);
                if ((r = walk(p, off, total, false, &info, err, errlen)) < 0)
                        return r;
                off += total;
        }
        if (off != len)
                return fail(err, errlen, "%zu bytes after the TLV area", len - off);
        if (!info.has_sha256)
                return fail(err, errlen, "no SHA-256 TLV");
        info.total_len = off;
        *ret = info;
        return 0;
}

int ota_mcuboot_version_cmp(const struct ota_mcuboot_version *a,
                            const struct ota_mcuboot_version *b)
{
        if (a->major != b->major)
                return a->major < b->major ? -1 : 1;
        if (a->minor != b->minor)
                return a->minor < b->minor ? -1 : 1;
        if (a->revision != b->revision)
                return a->revision < b->revision ? -1 : 1;
        if (a->build != b->build)
                return a->build < b->build ? -1 : 1;
        return 0;
}

void ota_mcuboot_version_str(const struct ota_mcuboot_version *v, char *out, size_t n)
{
        if (v->build)
                snprintf(out, n, "%u.%u.%u+%u", v->major, v->minor, v->revision, v->build);
        else
                snprintf(out, n, "%u.%u.%u", v->major, v->minor, v->revision);
}

int ota_mcuboot_version_parse(const char *s, struct ota_mcuboot_version *ret)
{
        unsigned long part[4] = { 0 };
        const char *q = s;
        char *end;

        if (!s)
                return -EINVAL;
        /* Tolerate a leading "v" and a product prefix such as "sim-". */
        while (*q && (*q < '0' || *q > '9'))
                q++;
        for (int i = 0; i < 4; i++) {
                if (*q < '0' || *q > '9')
                        return -EINVAL;
                part[i] = strtoul(q, &end, 10);
                q = end;
                if (i < 2 && *q != '.')
                        return -EINVAL;
                if (i == 2 && *q != '+')
                        break;
                if (i < 3)
                        q++;
        }
        if (*q || part[0] > 255 || part[1] > 255 || part[2] > 65535 || part[3] > UINT32_MAX)
                return -EINVAL;
        *ret = (struct ota_mcuboot_version){ (uint8_t)part[0], (uint8_t)part[1], (uint16_t)part[2],
                                             (uint32_t)part[3] };
        return 0;
}
