/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * MCUboot image format (docs/ota.md, after mcuboot's docs/design.md), all little-endian:
 *
 *   header (ih_hdr_size bytes, the first 32 defined):
 *     u32 magic 0x96f3b83d | u32 load_addr | u16 hdr_size | u16 protect_tlv_size
 *     u32 img_size | u32 flags | u8 major u8 minor u16 revision u32 build_num | u32 pad
 *   image (img_size bytes)
 *   protected TLV area (protect_tlv_size bytes, may be absent):
 *     u16 magic 0x6908 | u16 total (incl. this 4-byte info) | TLVs
 *   TLV area:  u16 magic 0x6907 | u16 total | TLVs
 *   TLV:       u16 type | u16 len | value
 *
 * The SHA-256 TLV covers header + image + protected TLVs. The security counter (0x50, u32) is
 * a protected TLV. Pure parser over a buffer; checks every offset and length.
 */

#define OTA_MCUBOOT_MAGIC 0x96f3b83du
#define OTA_MCUBOOT_HDR_MIN 32u
#define OTA_MCUBOOT_TLV_INFO 0x6907u
#define OTA_MCUBOOT_TLV_PROT 0x6908u

#define OTA_MCUBOOT_TLV_KEYHASH 0x01u
#define OTA_MCUBOOT_TLV_SHA256 0x10u
#define OTA_MCUBOOT_TLV_RSA2048 0x20u
#define OTA_MCUBOOT_TLV_ECDSA224 0x21u
#define OTA_MCUBOOT_TLV_ECDSA_SIG 0x22u /* ECDSA P-256, DER */
#define OTA_MCUBOOT_TLV_ED25519 0x24u
#define OTA_MCUBOOT_TLV_SEC_CNT 0x50u

struct ota_mcuboot_version {
        uint8_t major, minor;
        uint16_t revision;
        uint32_t build;
};

struct ota_mcuboot_info {
        uint32_t load_addr;
        uint16_t hdr_size;
        uint16_t protect_tlv_size;
        uint32_t img_size;
        uint32_t flags;
        struct ota_mcuboot_version version;
        bool has_sec_cnt;
        uint32_t sec_cnt;
        bool has_sha256;
        uint8_t sha256[32];
        size_t sig_off, sig_len; /* ECDSA_SIG TLV value, 0 if none */
        size_t hashed_len;       /* hdr_size + img_size + protect_tlv_size */
        size_t total_len;        /* through the end of the TLV area */
};

/* True when the buffer starts with the MCUboot magic. */
bool ota_mcuboot_is_image(const uint8_t *p, size_t len);
/* Parse; 0 or -EBADMSG with a reason in err. Trailing bytes after the TLV area are refused. */
int ota_mcuboot_parse(const uint8_t *p, size_t len, struct ota_mcuboot_info *ret, char *err,
                      size_t errlen);
/* <0, 0, >0 like strcmp; build numbers are compared too. */
int ota_mcuboot_version_cmp(const struct ota_mcuboot_version *a,
                            const struct ota_mcuboot_version *b);
/* "major.minor.revision+build" */
void ota_mcuboot_version_str(const struct ota_mcuboot_version *v, char *out, size_t n);
/* Parse "1.2.3" or "1.2.3+4" (as the simulator and MCUs report it). 0 or -EINVAL. */
int ota_mcuboot_version_parse(const char *s, struct ota_mcuboot_version *ret);
