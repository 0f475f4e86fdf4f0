/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugw link protocol v2 — OTA messages (0x20..0x25) and the device-side OTA receiver.
 *
 * The byte layouts are specified in docs/protocol.md section 12; this header has the codec both
 * sides use and the MCU receiver of libmcugw-device. Pure C99, no malloc, no OS headers.
 *
 *   gateway                                   device
 *   OFFER(id, size, sha256, lengths) ----->
 *   OFFER_MORE(id, off, version||sig) x n ->  (pieces that fit the smallest receive limit)
 *                                        <--- CHUNK_ACK(id, offset = bytes held, window, max)
 *   CHUNK(id, offset, data) x n  -------->    (in order only; a gap -> CHUNK_ACK RESYNC)
 *                                        <--- CHUNK_ACK(id, cumulative offset, window)
 *                                             last byte: hash + signature check, set_pending
 *                                        <--- OTA_STATUS(VERIFIED)  ... reboot into test mode
 *                                        <--- OTA_STATUS(TESTING) after the new handshake
 *                                        <--- OTA_STATUS(CONFIRMED) or OTA_STATUS(FAILED, reason)
 *   ABORT(id, code) --------------------->    drops the transfer
 *
 * A repeated OFFER with the same transfer id is a "where are you?" probe: the device answers
 * with its current offset (resume by offset after a disconnect or a gateway restart).
 */
#ifndef MCUGW_OTA_H
#define MCUGW_OTA_H

#include <stddef.h>
#include <stdint.h>

#include "mcugw/proto.h"
#include "mcugw/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MCUGW_OTA_SIG_MAX 72u /**< DER ECDSA P-256 signature */
#define MCUGW_OTA_VERSION_MAX 32u
#define MCUGW_OTA_REASON_MAX 48u
/** OFFER: type, transfer id, size, sha256, flags, version_len, sig_len (exactly). */
#define MCUGW_OTA_OFFER_LEN (1u + 4u + 4u + 32u + 1u + 1u + 1u)
/** OFFER_MORE before its data: type, transfer id, offset into version || sig. */
#define MCUGW_OTA_MORE_HDR (1u + 4u + 1u)
/** version || sig: what the OFFER_MORE pieces of one offer carry together. */
#define MCUGW_OTA_META_MAX (MCUGW_OTA_VERSION_MAX + MCUGW_OTA_SIG_MAX)
/**
 * Largest OFFER_MORE data the gateway puts in one piece: the message then fits a DATA frame of
 * the smallest receive limit a device may announce (MCUGW_FRAME_MIN), like every message the
 * gateway sends.
 */
#define MCUGW_OTA_MORE_PIECE (MCUGW_FRAME_MIN - MCUGW_DATA_OVERHEAD - MCUGW_OTA_MORE_HDR)
#define MCUGW_OTA_CHUNK_HDR (1u + 4u + 4u) /**< type, transfer id, offset */
#define MCUGW_OTA_ACK_LEN (1u + 4u + 4u + 4u + 2u + 1u)

/** OFFER flags. */
#define MCUGW_OTA_F_MCUBOOT 0x01u   /**< the image is in MCUboot format */
#define MCUGW_OTA_F_TEST_BOOT 0x02u /**< boot it in test mode and confirm after a self-test */
#define MCUGW_OTA_F_MASK 0x03u

/** CHUNK_ACK status. */
#define MCUGW_OTA_ACK_OK 0u      /**< cumulative: every byte below offset is stored */
#define MCUGW_OTA_ACK_RESYNC 1u  /**< a chunk did not start at offset: resend from there */
#define MCUGW_OTA_ACK_BUSY 2u    /**< another transfer is active or waiting for its reboot */
#define MCUGW_OTA_ACK_REFUSED 3u /**< offer refused: see the STATUS that follows */

/* OTA_STATUS states (MCUGW_OTA_ST_*) and OTA_STATUS / ABORT codes (MCUGW_OTA_E_*) are wire
 * numbers: they live in mcugw/wire.h. */

/**
 * OFFER announces the image; the version text and the signature follow in OFFER_MORE pieces
 * (version first, then sig), so that no message is larger than the smallest receive limit.
 */
struct mcugw_ota_offer {
        uint32_t transfer_id; /**< non-zero */
        uint32_t size;        /**< >= 1 */
        uint8_t sha256[32];   /**< of the whole image */
        uint8_t flags;        /**< MCUGW_OTA_F_* */
        size_t version_len;   /**< <= MCUGW_OTA_VERSION_MAX, printable text in OFFER_MORE */
        size_t sig_len;       /**< 1..MCUGW_OTA_SIG_MAX, DER ECDSA P-256 in OFFER_MORE */
};

/** A piece of version || sig of the offer with the same transfer id. */
struct mcugw_ota_more {
        uint32_t transfer_id;
        uint8_t offset; /**< into version || sig */
        const uint8_t *data;
        size_t len; /**< >= 1, offset + len <= MCUGW_OTA_META_MAX */
};

struct mcugw_ota_chunk {
        uint32_t transfer_id;
        uint32_t offset;
        const uint8_t *data;
        size_t len; /**< >= 1 */
};

struct mcugw_ota_ack {
        uint32_t transfer_id;
        uint32_t offset;    /**< cumulative */
        uint32_t window;    /**< bytes the gateway may have in flight beyond offset */
        uint16_t max_chunk; /**< largest chunk data the device accepts */
        uint8_t status;     /**< MCUGW_OTA_ACK_* */
};

struct mcugw_ota_status {
        uint32_t transfer_id;
        uint8_t state; /**< MCUGW_OTA_ST_* */
        uint16_t code; /**< MCUGW_OTA_E_* */
        uint32_t offset;
        const char *reason;
        size_t reason_len; /**< <= MCUGW_OTA_REASON_MAX */
};

struct mcugw_ota_abort {
        uint32_t transfer_id;
        uint16_t code;
};

struct mcugw_ota_msg {
        uint8_t type; /**< MCUGW_MSG_OTA_OFFER .. MCUGW_MSG_OTA_OFFER_MORE */
        union {
                struct mcugw_ota_offer offer;
                struct mcugw_ota_chunk chunk;
                struct mcugw_ota_ack ack;
                struct mcugw_ota_status status;
                struct mcugw_ota_abort abort;
                struct mcugw_ota_more more;
        } u;
};

/**
 * Encode @p m into @p out including the type byte. Returns the length, MCUGW_EINVAL or
 * MCUGW_ENOSPC. Send it as a raw struct mcugw_msg with mcugw_ota_wrap().
 */
int mcugw_ota_encode(const struct mcugw_ota_msg *m, uint8_t *out, size_t cap);
/** Point @p msg at an encoded OTA message (type + body) without copying. */
void mcugw_ota_wrap(struct mcugw_msg *msg, const uint8_t *enc, size_t len);
/**
 * Decode a received message of the OTA range with exact length checks: 0, MCUGW_ETRUNC,
 * MCUGW_EMALFORMED or MCUGW_ETYPE. Pointers refer into the message.
 */
int mcugw_ota_decode(const struct mcugw_msg *msg, struct mcugw_ota_msg *out);
/**
 * The halves a device needs: encode only CHUNK_ACK and OTA_STATUS, decode only OFFER,
 * OFFER_MORE, CHUNK and ABORT (MCUGW_ETYPE for the rest). Same bytes and checks as the full
 * codec, which calls them; a firmware linked with --gc-sections then carries no gateway code.
 */
int mcugw_ota_encode_reply(const struct mcugw_ota_msg *m, uint8_t *out, size_t cap);
int mcugw_ota_decode_request(const struct mcugw_msg *msg, struct mcugw_ota_msg *out);
/**
 * What an OTA_STATUS / ABORT code (MCUGW_OTA_E_*) means, for people: the gateway's wording of a
 * status whose reason is empty. "unknown code" for codes this revision does not know.
 */
const char *mcugw_ota_code_str(unsigned code);

/* ------------------------------------------------------------------------------------------ */
/* Device side: the OTA receiver                                                               */

/** Flash port: where the new image goes (e.g. MCUboot's secondary slot). 0 or negative. */
struct mcugw_flash_port {
        void *ctx;
        /** Prepare (erase) room for @p size bytes. */
        int (*begin)(void *ctx, uint32_t size);
        /** Write at @p offset; the receiver writes strictly in order. */
        int (*write)(void *ctx, uint32_t offset, const uint8_t *data, size_t len);
        /**
         * All @p size bytes written: flush and compute the SHA-256 of the stored image (e.g.
         * over memory-mapped flash). With @p read set, @p sha256 is NULL: only flush.
         */
        int (*finish)(void *ctx, uint32_t size, uint8_t sha256[32]);
        /** Mark the new image to be booted once in test mode (MCUboot: boot_set_pending(0)). */
        int (*set_pending)(void *ctx);
        /** Make the running test image permanent (MCUboot: boot_set_confirmed()). */
        int (*confirm)(void *ctx);
        /**
         * Optional, for flash that is not memory-mapped (SPI, QSPI without XIP): read @p len
         * bytes (at most 64) at @p offset. When set, the receiver reads the stored image back
         * after finish and hashes it with the crypto port's streaming SHA-256 (sha256_init,
         * _update, _final, then required), so finish need not hash.
         */
        int (*read)(void *ctx, uint32_t offset, uint8_t *buf, size_t len);
};

struct mcugw_ota_config {
        struct mcugw_flash_port flash;
        /** Send a message on the link (usually mcugw_device_send on the device). */
        int (*send)(void *ctx, const struct mcugw_msg *m);
        void *send_ctx;
        /** Verify the image signature with this key when the crypto port can (see below). */
        const struct mcugw_crypto *crypto;
        const uint8_t *signer_pub; /**< uncompressed P-256 point, 65 bytes; NULL: hash only */
        uint32_t max_size;         /**< largest image the slot holds */
        uint32_t window;           /**< bytes in flight the device accepts (flow control) */
        uint16_t max_chunk;        /**< largest chunk payload (rx buffer - 41) */
        /** Image verified and pending: the application reboots (now or soon). */
        void (*on_reboot)(void *user, uint32_t transfer_id);
        void *user;
};

/** Receiver state; allocate statically, fields private. */
struct mcugw_ota {
        /* The small fields first: Thumb-2 reaches them with 2-byte instructions. */
        uint8_t state; /**< 0 idle, MCUGW_OTA_ST_*, or an offer waiting for its OFFER_MORE */
        uint8_t sig_len;
        uint8_t resync_sent;
        uint8_t version_len; /**< of the offer being assembled */
        uint8_t meta_got;    /**< bytes of version || sig received so far */
        uint32_t transfer_id, size, offset, acked;
        struct mcugw_ota_config cfg;
        uint8_t sha256[32];
        uint8_t sig[MCUGW_OTA_SIG_MAX];
};

int mcugw_ota_init(struct mcugw_ota *o, const struct mcugw_ota_config *cfg);
/** Feed a received OTA-range message (from on_message). 0 or a negative MCUGW_E* code. */
int mcugw_ota_handle(struct mcugw_ota *o, const struct mcugw_msg *m);
/**
 * After the reboot into the new image in test mode: remember @p transfer_id (kept by the
 * application across the reset) so that the self-test result can be reported.
 */
void mcugw_ota_booted_test(struct mcugw_ota *o, uint32_t transfer_id);
/** Link (re)connected: report where the receiver stands (TESTING, or RECEIVING + offset). */
int mcugw_ota_connected(struct mcugw_ota *o);
/**
 * Self-test result in test mode: @p ok confirms the image (flash.confirm) and reports
 * CONFIRMED; otherwise reports FAILED with @p reason (the bootloader reverts at the next
 * reset; the application resets).
 */
int mcugw_ota_self_test_done(struct mcugw_ota *o, int ok, const char *reason);

#ifdef __cplusplus
}
#endif

#endif /* MCUGW_OTA_H */
