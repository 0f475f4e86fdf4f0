/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugw link protocol v3 — wire constants shared by the device SDK and the gateway.
 *
 * This header is the single source of truth for numbers that appear on the wire. The prose
 * specification with byte layouts, state machines and test vectors is docs/protocol.md; where
 * the two disagree, that is a bug in one of them.
 *
 * Everything multi-byte on the wire is little-endian.
 *
 * Layering (outermost first):
 *
 *   byte stream:  ... 0x00 | COBS( frame | CRC-32C(frame) ) | 0x00 | ...
 *   frame:        header (4 bytes) | body
 *   body:         HS1: Noise IK message 1 | mac1 | mac2      HS2: Noise IK message 2
 *                 COOKIE: nonce | AEAD(cookie)
 *                 DATA: session id | counter | AEAD(ciphertext | tag)
 *   DATA plaintext: one message (type byte + fields), see MCUGW_MSG_*.
 *
 * Pure C99, no OS headers: both sides include it.
 */
#ifndef MCUGW_WIRE_H
#define MCUGW_WIRE_H

#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* Versioning                                                                                  */

/**
 * Wire protocol version carried in every frame header and in both handshake payloads.
 *
 * Version 3 (this one) adds, over version 2, handshake flood resistance after WireGuard
 * (docs/protocol.md, "Handshake flood resistance"): mac1 and mac2 at the end of HS1, the
 * COOKIE frame (0x05), a monotonic timestamp in the HS1 payload, and the prologue
 * "mcugw-link/v3". A v3 gateway refuses v2 frames (MCUGW_EVERSION, counted `old_version`).
 * Also new in version 3: OTA OFFER split into OFFER and OFFER_MORE (0x25) so that every
 * gateway message fits the smallest receive limit (96), and exact duplicates of a DATA frame are
 * told apart from replays (MCUGW_EDUP).
 *
 * Version 2 added, over version 1: the NOSESSION frame (0x04, "no such session,
 * handshake again", gateway -> device), the link_reason byte in STATUS (before the firmware
 * version), and the prologue "mcugw-link/v2". A v2 gateway refuses v1 frames (MCUGW_EVERSION) and
 * v1 handshakes (the prologue differs, so message 1 does not authenticate). docs/protocol.md,
 * "Liveness".
 */
#define MCUGW_PROTO_VERSION 3u

/** Noise protocol name; its 32 bytes are the initial handshake hash (no padding needed). */
#define MCUGW_NOISE_PROTOCOL_NAME "Noise_IK_25519_ChaChaPoly_SHA256"

/** Noise prologue: protocol name and version of this framing ("mcugw-link/v3", 13 bytes). */
#define MCUGW_PROLOGUE "mcugw-link/v3"
#define MCUGW_PROLOGUE_LEN 13u

/* ------------------------------------------------------------------------------------------ */
/* Sizes and limits                                                                            */

#define MCUGW_KEY_LEN 32u /**< X25519 key, ChaCha20 key, SHA-256 output */
#define MCUGW_HASH_LEN 32u
#define MCUGW_TAG_LEN 16u /**< Poly1305 tag */
#define MCUGW_CRC_LEN 4u  /**< CRC-32C trailer inside the COBS frame */

/**
 * Largest decoded frame (header + body, CRC excluded) any peer may send. The gateway always
 * accepts frames of this size; a device announces a smaller receive limit in handshake
 * message 1 (never below MCUGW_FRAME_MIN) and the gateway honours it.
 */
#define MCUGW_FRAME_MAX 1024u

/** Smallest receive limit a device may announce (message 2 always fits in it). */
#define MCUGW_FRAME_MIN 96u

/** Worst-case bytes on the wire for a frame of @p n bytes: COBS(n + CRC) + 0x00 delimiter. */
#define MCUGW_WIRE_MAX(n) ((n) + MCUGW_CRC_LEN + ((n) + MCUGW_CRC_LEN) / 254u + 2u)

/** Frame header: version u8, type u8, flags u8, reserved u8 (must be 0). */
#define MCUGW_HDR_LEN 4u

/** DATA header: common header + session id u32 + counter u64. It is the AEAD associated data. */
#define MCUGW_DATA_HDR_LEN 16u

/** Per-frame overhead of a DATA frame (header + tag), CRC and COBS not included. */
#define MCUGW_DATA_OVERHEAD (MCUGW_DATA_HDR_LEN + MCUGW_TAG_LEN)

/** Largest plaintext message in a DATA frame of the maximal size. */
#define MCUGW_MSG_MAX (MCUGW_FRAME_MAX - MCUGW_DATA_OVERHEAD)

/** Device id: 1..32 bytes of [A-Za-z0-9._-] (mcugw_device_id_valid(); the registry's rule too),
 * not NUL-terminated on the wire. */
#define MCUGW_DEVICE_ID_MAX 32u

/** Attestation blob in handshake message 1 (docs/protocol.md, "Attestation (v1)"). */
#define MCUGW_ATTEST_MAX 512u

/** Replay window size in counters (a 64-bit bitmap). */
#define MCUGW_REPLAY_WINDOW 64u

/**
 * The device starts a new handshake once its send counter reaches this value (or the session
 * is older than its configured rekey interval). Far below the hard limit so there is time.
 */
#define MCUGW_REKEY_AFTER_MESSAGES (UINT64_C(1) << 48)

/** Hard limit: counters >= this are never sent and always rejected (Noise reserves 2^64-1). */
#define MCUGW_REJECT_AFTER_MESSAGES (UINT64_C(1) << 60)

/* ------------------------------------------------------------------------------------------ */
/* Frame types (header byte 1)                                                                 */

#define MCUGW_FRAME_HS1 0x01u  /**< device -> gateway: Noise IK message 1 (-> e, es, s, ss) */
#define MCUGW_FRAME_HS2 0x02u  /**< gateway -> device: Noise IK message 2 (<- e, ee, se) */
#define MCUGW_FRAME_DATA 0x03u /**< either way: AEAD-protected message */
/**
 * gateway -> device, unauthenticated: "no such session, handshake again" (v2). Body: the u32
 * session id of the DATA frame the gateway could not place, echoed. Exactly
 * MCUGW_NOSESSION_LEN bytes. Rate-limited per link by the gateway. A device may conclude only
 * that a new handshake is worth starting: it acts on it only while CONNECTED and only when the
 * id is the one of its current session, and then handshakes as it would after an ACK timeout
 * (nothing is dropped, no key or counter is touched otherwise).
 */
#define MCUGW_FRAME_NOSESSION 0x04u
#define MCUGW_NOSESSION_LEN (MCUGW_HDR_LEN + 4u)

/**
 * gateway -> device, under load: "prove you can receive on this link" (v3). Answers an HS1
 * whose mac1 was valid while the link's handshake budget was spent, instead of processing it.
 * Body: nonce (MCUGW_COOKIE_NONCE_LEN random bytes) | ChaCha20-Poly1305(cookie, 16 bytes) | tag,
 * keyed from the gateway's public key and the nonce, with the answered HS1's mac1 as AD.
 * The device puts MAC(cookie, HS1 up to mac2) into the mac2 field of its next HS1s.
 */
#define MCUGW_FRAME_COOKIE 0x05u

/* Frame flags (header byte 2): none defined in v1, must be 0, receivers reject others. */

/** Exact body lengths of the handshake messages without payload: e, enc(s) and the payload's
 * tag (message 1); e and the payload's tag (message 2). */
#define MCUGW_HS1_OVERHEAD (32u + 32u + MCUGW_TAG_LEN + MCUGW_TAG_LEN)
#define MCUGW_HS2_OVERHEAD (32u + MCUGW_TAG_LEN)

/* ------------------------------------------------------------------------------------------ */
/* Handshake flood resistance (v3, docs/protocol.md "Handshake flood resistance")              */

/** mac1, mac2 and a cookie: HMAC-SHA256 truncated to 16 bytes. */
#define MCUGW_MAC_LEN 16u
/** HS1 ends with mac1 | mac2 (after the Noise message). */
#define MCUGW_HS1_MACS_LEN (2u * MCUGW_MAC_LEN)
#define MCUGW_COOKIE_LEN 16u
#define MCUGW_COOKIE_NONCE_LEN 24u
/** Exact length of a COOKIE frame: header, nonce, encrypted cookie, tag. */
#define MCUGW_COOKIE_REPLY_LEN                                                                     \
        (MCUGW_HDR_LEN + MCUGW_COOKIE_NONCE_LEN + MCUGW_COOKIE_LEN + MCUGW_TAG_LEN)
/** The gateway's cookie secret is replaced this often; a device uses a cookie this long. */
#define MCUGW_COOKIE_SECRET_MS 120000u
/** Labels hashed with the gateway's static public key into the mac1 and cookie keys. */
#define MCUGW_LABEL_MAC1 "mac1----"
#define MCUGW_LABEL_COOKIE "cookie--"
#define MCUGW_LABEL_LEN 8u

/* ------------------------------------------------------------------------------------------ */
/* Handshake payloads (encrypted inside the Noise messages)                                    */

/**
 * HS1 payload:
 *   u8  version (= MCUGW_PROTO_VERSION)
 *   u8  flags (0)
 *   u16 max_rx_frame: largest frame the device can receive, MCUGW_FRAME_MIN..MCUGW_FRAME_MAX
 *   u64 timestamp: strictly greater in every new HS1 of the device (v3; replay protection)
 *   u8  id_len (1..MCUGW_DEVICE_ID_MAX), id bytes
 *   u16 attest_len (0..MCUGW_ATTEST_MAX), attest bytes
 */
#define MCUGW_HS1_PAYLOAD_MIN 16u

/**
 * HS2 payload (exactly 8 bytes):
 *   u8  version, u8 flags (0), u16 max_rx_frame of the gateway, u32 session id (non-zero)
 */
#define MCUGW_HS2_PAYLOAD_LEN 8u

/* ------------------------------------------------------------------------------------------ */
/* Messages (first plaintext byte of a DATA frame)                                             */

#define MCUGW_MSG_TELEMETRY 0x01u      /**< dev->gw: u16 stream, u32 seq, u8 flags, payload */
#define MCUGW_MSG_ACK 0x02u            /**< both: u16 stream, u32 seq, u8 flags, u8 status */
#define MCUGW_MSG_PING 0x03u           /**< both: u32 token */
#define MCUGW_MSG_PONG 0x04u           /**< both: u32 token (echo) */
#define MCUGW_MSG_STATUS 0x05u         /**< dev->gw: u32 boot, u32 uptime, u8 reset, link, n, fw */
#define MCUGW_MSG_ERROR 0x06u          /**< both: u16 code, u8 n, text[n] */
#define MCUGW_MSG_COMMAND 0x07u        /**< gw->dev: u32 command id, payload */
#define MCUGW_MSG_COMMAND_RESULT 0x08u /**< dev->gw: u32 command id, i16 status, payload */
/**
 * Configuration from the device's shadow (docs/protocol.md, "Configuration", docs/shadow.md).
 * CONFIG, gw->dev: u32 version (the shadow's, low 32 bits), then a JSON object of the desired
 * settings that differ from what the device reported (the shadow delta, only allowed keys).
 * CONFIG_RESULT, dev->gw: u32 version (echoed), i16 status (0, or a negative MCUGW_E* code
 * when nothing was applied), then a JSON object of the settings the device now uses; a key of
 * the CONFIG that is missing from it was refused.
 */
#define MCUGW_MSG_CONFIG 0x09u
#define MCUGW_MSG_CONFIG_RESULT 0x0Au
/** Largest JSON object in CONFIG / CONFIG_RESULT: fits one DATA frame of the maximal size. */
#define MCUGW_CONFIG_MAX (MCUGW_MSG_MAX - 7u)

/** 0x20..0x2f: OTA (docs/protocol.md section 12; layouts and codec in mcugw/ota.h). */
#define MCUGW_MSG_OTA_FIRST 0x20u
#define MCUGW_MSG_OTA_OFFER 0x20u
#define MCUGW_MSG_OTA_CHUNK 0x21u
#define MCUGW_MSG_OTA_CHUNK_ACK 0x22u
/** OTA_STATUS (device -> gateway): where a transfer stands. Not STATUS (0x05), the device's
 * boot/firmware report. */
#define MCUGW_MSG_OTA_STATUS 0x23u
#define MCUGW_MSG_OTA_ABORT 0x24u      /**< gw->dev: u32 transfer id, u16 code (MCUGW_OTA_E_*) */
#define MCUGW_MSG_OTA_OFFER_MORE 0x25u /**< gw->dev: version || sig of an OFFER, in pieces */
#define MCUGW_MSG_OTA_LAST 0x2fu

/**
 * OTA_STATUS state (byte 5). With VERIFIED, TESTING and CONFIRMED the code is 0
 * (MCUGW_OTA_E_NONE); the offset is the image size with VERIFIED and 0 with TESTING and
 * CONFIRMED (they come from the new image after its reset, which does not hold a transfer).
 */
#define MCUGW_OTA_ST_RECEIVING 1u /**< offset: bytes held (sent after reconnecting) */
#define MCUGW_OTA_ST_VERIFIED 2u  /**< image complete and verified, rebooting into it */
#define MCUGW_OTA_ST_TESTING 3u   /**< running the new image in test mode, self-test running */
#define MCUGW_OTA_ST_CONFIRMED 4u /**< self-test passed, image made permanent */
#define MCUGW_OTA_ST_FAILED 5u    /**< code + reason; the device stays on its old image */
#define MCUGW_OTA_ST_REJECTED 6u  /**< offer refused (size, flash) */
#define MCUGW_OTA_ST_ABORTED 7u   /**< after an ABORT */

/**
 * OTA_STATUS / ABORT code (u16). The code says what failed; the reason text is optional (the
 * SDK sends only the application's self-test reason, so that no firmware carries the texts) and
 * the gateway words the code when it is empty (mcugw_ota_code_str()).
 */
#define MCUGW_OTA_E_NONE 0u
#define MCUGW_OTA_E_TOO_BIG 1u      /**< image larger than the slot */
#define MCUGW_OTA_E_FLASH 2u        /**< flash write failed */
#define MCUGW_OTA_E_HASH 3u         /**< image hash mismatch */
#define MCUGW_OTA_E_SIGNATURE 4u    /**< bad image signature */
#define MCUGW_OTA_E_SELF_TEST 5u    /**< self-test failed */
#define MCUGW_OTA_E_ABORTED 6u      /**< aborted by the gateway */
#define MCUGW_OTA_E_BAD_OFFER 7u    /**< bad offer */
#define MCUGW_OTA_E_FLASH_BEGIN 8u  /**< flash begin (erase) failed */
#define MCUGW_OTA_E_FLASH_FINISH 9u /**< flash finish or read-back failed */
#define MCUGW_OTA_E_SET_PENDING 10u /**< cannot mark the image pending */
#define MCUGW_OTA_E_CONFIRM 11u     /**< cannot confirm the image */
#define MCUGW_OTA_E_NO_VERIFIER 12u /**< signer key set, no verifier in the crypto port */

/** 0xf0..0xff: vendor/experimental, opaque payload; never used by mcugw itself. */
#define MCUGW_MSG_VENDOR_FIRST 0xf0u

/** Telemetry flags. */
#define MCUGW_TLM_ACK_REQUESTED 0x01u /**< QoS 1: gateway acks once the message is durable */
#define MCUGW_TLM_FLAGS_MASK 0x01u

/* ------------------------------------------------------------------------------------------ */
/* BLE carrier (docs/ble.md)                                                                   */

/**
 * Over Bluetooth LE the byte stream above (COBS frames, unchanged) rides on one GATT
 * characteristic of one primary service of the device, as in the Nordic UART Service:
 * gateway -> device with Write Without Response, device -> gateway with Notify, each ATT
 * packet carrying any slice of the stream (receivers concatenate; the COBS delimiter finds
 * frames). These fixed 128-bit UUIDs are the defaults of the device SDK and of the gateway
 * ([BLE] ServiceUUID=, CharacteristicUUID=): one random base, the service ending its first
 * group in 0001 and the characteristic in 0002, the last group "mcgw" (6d 63 67 77) 00 00.
 */
#define MCUGW_BLE_SERVICE_UUID "6e4d0001-8e5e-4c39-9a0e-6d6367770000"
#define MCUGW_BLE_CHARACTERISTIC_UUID "6e4d0002-8e5e-4c39-9a0e-6d6367770000"

/** Ack flags. */
#define MCUGW_ACK_CUMULATIVE 0x01u /**< every seq <= seq on this stream is acknowledged */
#define MCUGW_ACK_FLAGS_MASK 0x01u

/** Ack status codes. */
#define MCUGW_ACK_OK 0u      /**< stored durably */
#define MCUGW_ACK_DROPPED 1u /**< refused (quota, quarantine); do not resend */
#define MCUGW_ACK_RETRY 2u   /**< transient (outbox full); resend later */

/** Reset causes in STATUS. */
#define MCUGW_RESET_UNKNOWN 0u
#define MCUGW_RESET_POWER_ON 1u
#define MCUGW_RESET_PIN 2u
#define MCUGW_RESET_WATCHDOG 3u
#define MCUGW_RESET_SOFTWARE 4u
#define MCUGW_RESET_BROWNOUT 5u
#define MCUGW_RESET_FAULT 6u
#define MCUGW_RESET_OTA 7u

/**
 * Why the device's current session was started (byte 10 of STATUS, v2; also
 * mcugw_device_link_reason()). The SDK puts it into every STATUS it sends.
 */
#define MCUGW_LINK_FIRST 0u     /**< first session since the device (or the SDK) started */
#define MCUGW_LINK_NOSESSION 1u /**< the gateway said it has no such session (NOSESSION) */
#define MCUGW_LINK_TIMEOUT 2u   /**< no ACK / PONG within the liveness timeout */
#define MCUGW_LINK_REKEY 3u     /**< session lifetime or counter limit reached */
#define MCUGW_LINK_APP 4u       /**< the application restarted the handshake */
#define MCUGW_LINK_LINE 5u      /**< the line (socket, pty) was lost and reopened */
#define MCUGW_LINK_REASON_MAX 5u

#define MCUGW_FW_VERSION_MAX 32u /**< firmware version string in STATUS */
#define MCUGW_ERROR_TEXT_MAX 64u /**< text in ERROR */

/* ------------------------------------------------------------------------------------------ */
/* Error codes (returned as negative ints; also the u16 code of an ERROR message, positive)    */

#define MCUGW_OK 0
#define MCUGW_EINVAL (-1)      /**< bad argument from the caller */
#define MCUGW_ENOSPC (-2)      /**< caller buffer too small */
#define MCUGW_ESTATE (-3)      /**< call not valid in the current state */
#define MCUGW_EAGAIN (-4)      /**< nothing to do yet / no complete frame */
#define MCUGW_ECRYPTO (-5)     /**< crypto port failure (RNG, key import, ...) */
#define MCUGW_EIO (-6)         /**< I/O port failure (link closed, write error) */
#define MCUGW_ECRC (-10)       /**< frame CRC mismatch (line noise) */
#define MCUGW_ECOBS (-11)      /**< malformed COBS (delimiter inside a block) */
#define MCUGW_EOVERSIZE (-12)  /**< frame longer than the receive limit */
#define MCUGW_ERUNT (-13)      /**< frame shorter than header + CRC */
#define MCUGW_EVERSION (-14)   /**< unsupported protocol version */
#define MCUGW_ETYPE (-15)      /**< unknown or unexpected frame / message type */
#define MCUGW_EMALFORMED (-16) /**< bad field, reserved bits set, trailing bytes */
#define MCUGW_ETRUNC (-17)     /**< body shorter than its fixed parts (e.g. missing tag) */
#define MCUGW_EAUTH (-20)      /**< AEAD tag mismatch: forgery, corruption, wrong key */
#define MCUGW_EREPLAY (-21)    /**< replayed message (no longer returned for DATA: see EDUP) */
#define MCUGW_ETOOOLD (-22)    /**< counter left of the replay window */
#define MCUGW_ESESSION (-23)   /**< DATA for an unknown session id / no session */
#define MCUGW_EREKEY (-24)     /**< counter limit reached: a new handshake is required */
#define MCUGW_EDH (-25)        /**< X25519 result all-zero (low-order peer key) */
#define MCUGW_EREJECTED (-26)  /**< responder: device unknown / not allowed (lookup callback) */
#define MCUGW_ETOOBIG (-27)    /**< message does not fit the peer's receive limit */
#define MCUGW_ESTALE (-28)     /**< HS1 timestamp not newer than the device's last one (replay) */
/** An authenticated, exact copy of a DATA frame already received inside the replay window: a
 * link duplicate (or a replay of one, which is as harmless). Dropped, not an attack. */
#define MCUGW_EDUP (-29)

#endif /* MCUGW_WIRE_H */
