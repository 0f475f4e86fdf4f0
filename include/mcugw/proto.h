/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugw link protocol core: framing, Noise IK handshake, transport sessions, message codec.
 *
 * Pure C99, no I/O, no malloc, no OS headers. Both the device SDK (initiator) and the gateway
 * (responder) link it. All crypto goes through struct mcugw_crypto, so the same code runs on
 * OpenSSL (gateway, simulator) and on PSA/mbedTLS (MCU).
 *
 * Conventions: functions return >= 0 on success (often a length) and a negative MCUGW_E* code
 * from <mcugw/wire.h> on failure. Output parameters are untouched on failure unless noted.
 * Nothing here keeps pointers to caller memory beyond the call unless documented.
 *
 * Pointer arguments must be valid: the framing, handshake, cookie and session functions do not
 * check them for NULL (they run for every frame, and on an MCU the checks cost about 300 bytes
 * of flash: docs/protocol.md section 11). Lengths, capacities and everything that came from
 * the wire are always checked. The device SDK's entry points (<mcugw/device.h>, <mcugw/ota.h>)
 * check what the application passes, the responder its configuration.
 *
 * Gateway quick start (one object per link, see docs/protocol.md section 8):
 *
 *      mcugw_deframer_init(&df, rxbuf, sizeof rxbuf);              // rxbuf: MCUGW_FRAME_MAX + 4
 *      mcugw_responder_init(&r, &cfg);                             // cfg.lookup = registry check
 *      on bytes:  while (n) { rc = mcugw_deframer_push(&df, p, n, &used, &f, &fl); p += used;
 *                             n -= used; if (rc == 1) handle(f, fl); else if (rc < 0) count(rc); }
 *      handle:    rc = mcugw_responder_handle(&r, f, fl, &rx);
 *                 rx.kind == MCUGW_RX_REPLY   -> mcugw_frame_encode(rx.data, rx.len, ...) & write
 *                 rx.kind == MCUGW_RX_MESSAGE -> mcugw_msg_decode(rx.data, rx.len, &msg)
 *                 rc < 0                      -> count per code (EAUTH, EDUP, ...)
 *      send:      n = mcugw_msg_encode(&m, buf + MCUGW_DATA_HDR_LEN, ...);
 *                 n = mcugw_responder_seal(&r, buf + MCUGW_DATA_HDR_LEN, n, buf, sizeof buf);
 *                 mcugw_frame_encode(buf, n, wire, sizeof wire) & write
 */
#ifndef MCUGW_PROTO_H
#define MCUGW_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "mcugw/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ========================================================================================== */
/* Utilities                                                                                   */

/** Overwrite @p len bytes at @p p with zeros in a way the compiler cannot elide. */
void mcugw_wipe(void *p, size_t len);

/** Constant-time comparison; returns 1 if equal, 0 otherwise. */
int mcugw_ct_equal(const void *a, const void *b, size_t len);

/** Return a static English description of an MCUGW_E* code (for logs). */
const char *mcugw_strerror(int code);

/** Return a static name for an MCUGW_LINK_* session reason ("first", "nosession", ...). */
const char *mcugw_link_reason_str(unsigned reason);

/* ========================================================================================== */
/* Crypto port                                                                                 */

/** One piece of a scatter list for hashing. */
struct mcugw_iov {
        const void *base;
        size_t len;
};

/**
 * Room for the state of a streaming SHA-256, laid out by the crypto port (PSA: its
 * psa_hash_operation_t, 232 bytes on a 64-bit host with mbedTLS 2.28; OpenSSL: a pointer).
 * Each port checks at compile time that its state fits. Keep it on the stack: it lives only
 * while one digest is computed.
 */
#define MCUGW_SHA256_STATE_SIZE 256u
struct mcugw_sha256_state {
        union {
                uint64_t align_u64;
                void *align_ptr;
                uint8_t bytes[MCUGW_SHA256_STATE_SIZE];
        } u;
};

/**
 * Crypto primitives the core needs. Every function returns 0 on success or a negative
 * MCUGW_E* code (MCUGW_ECRYPTO for an internal failure). HMAC and HKDF are built by the core
 * from @ref sha256; X25519 scalars are clamped by the implementation (RFC 7748).
 */
struct mcugw_crypto {
        void *ctx; /**< passed to every function */
        /** Fill @p out with @p len cryptographically secure random bytes. */
        int (*random)(void *ctx, uint8_t *out, size_t len);
        /** Compute the X25519 public key of a 32-byte private key. */
        int (*x25519_public)(void *ctx, uint8_t pub[32], const uint8_t priv[32]);
        /** X25519(priv, peer) -> shared. May return MCUGW_EDH for an all-zero result. */
        int (*x25519)(void *ctx, uint8_t shared[32], const uint8_t priv[32],
                      const uint8_t peer[32]);
        /** SHA-256 over the concatenation of @p n pieces. */
        int (*sha256)(void *ctx, const struct mcugw_iov *iov, size_t n, uint8_t out[32]);
        /**
         * ChaCha20-Poly1305 (RFC 8439) encrypt: writes @p len ciphertext bytes then the 16-byte
         * tag to @p out. @p out may equal @p pt (in place); no other overlap.
         */
        int (*aead_seal)(void *ctx, const uint8_t key[32], const uint8_t nonce[12],
                         const uint8_t *ad, size_t ad_len, const uint8_t *pt, size_t len,
                         uint8_t *out);
        /**
         * ChaCha20-Poly1305 decrypt + verify (constant-time tag check). @p len includes the tag;
         * writes len - 16 bytes to @p out (may equal @p ct). Returns MCUGW_EAUTH on mismatch,
         * in which case @p out contents are unspecified.
         */
        int (*aead_open)(void *ctx, const uint8_t key[32], const uint8_t nonce[12],
                         const uint8_t *ad, size_t ad_len, const uint8_t *ct, size_t len,
                         uint8_t *out);
        /**
         * Optional (OTA, NULL if the port has none): verify a DER-encoded ECDSA P-256 signature
         * over a SHA-256 @p digest with the uncompressed public key @p pub (0x04 || X || Y).
         * Returns 0, MCUGW_EAUTH for a bad signature, MCUGW_ECRYPTO/EINVAL otherwise.
         */
        int (*ecdsa_p256_verify)(void *ctx, const uint8_t pub[65], const uint8_t digest[32],
                                 const uint8_t *sig, size_t sig_len);
        /**
         * Optional (OTA from flash that is not memory-mapped, NULL if the port has none): a
         * streaming SHA-256. init prepares @p st; update hashes more bytes; final writes the
         * digest to @p out and releases @p st, or only releases it when @p out is NULL (to
         * abandon a stream). After a successful init, final must be called exactly once; after
         * a failed init or update, the caller still calls final(NULL).
         */
        int (*sha256_init)(void *ctx, struct mcugw_sha256_state *st);
        int (*sha256_update)(void *ctx, struct mcugw_sha256_state *st, const uint8_t *data,
                             size_t len);
        int (*sha256_final)(void *ctx, struct mcugw_sha256_state *st, uint8_t out[32]);
};

/* ========================================================================================== */
/* Framing: CRC-32C + COBS + 0x00 delimiter                                                    */

/**
 * CRC-32C (Castagnoli, reflected 0x82F63B78, init/xorout 0xFFFFFFFF), zlib-style chaining:
 * start with @p crc = 0 and feed the previous result to continue. "123456789" -> 0xE3069283.
 */
uint32_t mcugw_crc32c(uint32_t crc, const void *data, size_t len);

/**
 * Encode @p frame (header + body, no CRC) for the wire: COBS(frame | CRC-32C LE) + 0x00.
 * Returns the number of bytes written to @p out (at most MCUGW_WIRE_MAX(len)) or MCUGW_ENOSPC.
 */
int mcugw_frame_encode(const uint8_t *frame, size_t len, uint8_t *out, size_t cap);

/** Byte sink for the streaming encoder: returns 0 or a negative error that aborts encoding. */
typedef int (*mcugw_write_fn)(void *ctx, const uint8_t *data, size_t len);

/**
 * Same bytes as mcugw_frame_encode() but pushed through @p write in pieces, without an output
 * buffer (the device SDK uses it to save RAM). Returns the total number of bytes written or
 * the first error from @p write.
 */
int mcugw_frame_encode_stream(const uint8_t *frame, size_t len, mcugw_write_fn write, void *ctx);

/** Counters kept by a deframer; every dropped byte/frame is counted in exactly one bucket. */
struct mcugw_deframer_stats {
        uint32_t frames;        /**< good frames delivered */
        uint32_t crc_errors;    /**< COBS fine, CRC wrong (line noise, garbage) */
        uint32_t cobs_errors;   /**< delimiter inside a COBS block */
        uint32_t oversize;      /**< longer than the buffer; discarded up to the next 0x00 */
        uint32_t runts;         /**< shorter than header + CRC */
        uint32_t dropped_bytes; /**< wire bytes belonging to dropped frames */
};

/** Incremental COBS/CRC decoder over a caller buffer. Treat fields as private. */
struct mcugw_deframer {
        uint8_t *buf;
        uint16_t cap;
        uint16_t len;
        uint32_t wire;   /**< wire bytes of the frame being decoded */
        uint8_t left;    /**< data bytes left in the current COBS block */
        uint8_t code;    /**< code byte of the current block, 0 = none yet */
        uint8_t discard; /**< oversize: dropping until the next 0x00 */
        struct mcugw_deframer_stats stats;
};

/**
 * Initialise @p d over @p buf. @p cap must hold the largest accepted frame plus the 4-byte CRC
 * (e.g. MCUGW_FRAME_MAX + MCUGW_CRC_LEN) and be at least MCUGW_HDR_LEN + MCUGW_CRC_LEN.
 */
int mcugw_deframer_init(struct mcugw_deframer *d, uint8_t *buf, size_t cap);

/**
 * Feed up to @p len bytes. Stops after the first frame boundary (0x00). Sets *consumed to the
 * bytes used. Returns 1 with *frame / *frame_len (CRC removed; points into the buffer, valid
 * until the next push) when a good frame completed, 0 when all input was absorbed without a
 * frame, or a negative code (MCUGW_ECRC, ECOBS, EOVERSIZE, ERUNT) when a bad frame was dropped
 * (already counted in the stats). Call again with the remaining input.
 */
int mcugw_deframer_push(struct mcugw_deframer *d, const uint8_t *data, size_t len, size_t *consumed,
                        uint8_t **frame, size_t *frame_len);

/**
 * Validate the 4-byte common header of a decoded frame and return its type (> 0) or
 * MCUGW_ERUNT / EVERSION / EMALFORMED (flags or reserved byte set).
 */
int mcugw_frame_type(const uint8_t *frame, size_t len);

/* ========================================================================================== */
/* Noise_IK_25519_ChaChaPoly_SHA256, low level (exact Noise rev. 34 semantics)                 */

/** Handshake state. Secrets are wiped by split / mcugw_noise_wipe(). */
struct mcugw_noise {
        const struct mcugw_crypto *crypto;
        uint8_t ck[32];
        uint8_t h[32];
        uint8_t k[32];
        uint64_t n;
        uint8_t has_k;
        uint8_t e_priv[32];
        uint8_t re[32]; /**< remote ephemeral */
        uint8_t rs[32]; /**< remote static: responder key (initiator) / learned key (responder) */
};

/**
 * Initialise for either role: h = ck = protocol name, MixHash(prologue), MixHash(responder
 * static public key) (the IK pre-message). The initiator passes the pinned gateway key; the
 * responder passes its own public key.
 */
int mcugw_noise_init(struct mcugw_noise *hs, const struct mcugw_crypto *c, const uint8_t *prologue,
                     size_t prologue_len, const uint8_t rs_pub[32]);

/**
 * Initiator: -> e, es, s, ss + payload. A fresh ephemeral comes from crypto->random.
 * @p s_pub is the public key of @p s_priv if the caller has it cached, else NULL (it is then
 * computed: one X25519 more). Writes 96 + @p payload_len bytes to @p out; returns that length.
 */
int mcugw_noise_write_msg1(struct mcugw_noise *hs, const uint8_t s_priv[32],
                           const uint8_t s_pub[32], const uint8_t *payload, size_t payload_len,
                           uint8_t *out, size_t cap);

/**
 * Responder (proto_responder.c, the gateway's half: not in the device SDK): read message 1. On
 * success hs->rs holds the initiator static key, the payload (len - 96 bytes) is written to @p
 * payload (may equal msg + 80: in place) and its length returned. MCUGW_ETRUNC if too short,
 * MCUGW_EAUTH if a tag fails.
 */
int mcugw_noise_read_msg1(struct mcugw_noise *hs, const uint8_t s_priv[32], uint8_t *msg,
                          size_t len, uint8_t *payload, size_t cap);

/** Responder (proto_responder.c): <- e, ee, se + payload; writes 48 + payload_len bytes, returns
 * that length. */
int mcugw_noise_write_msg2(struct mcugw_noise *hs, const uint8_t *payload, size_t payload_len,
                           uint8_t *out, size_t cap);

/**
 * Initiator: read message 2 (same conventions as mcugw_noise_read_msg1(); in place means
 * @p payload == msg + 32). On failure the state is rolled back, so a forged message 2 does not
 * abort the handshake.
 */
int mcugw_noise_read_msg2(struct mcugw_noise *hs, const uint8_t s_priv[32], uint8_t *msg,
                          size_t len, uint8_t *payload, size_t cap);

/**
 * Split(): derive the initiator->responder and responder->initiator keys, optionally copy
 * the handshake hash to @p hash, then wipe the whole handshake state.
 */
int mcugw_noise_split(struct mcugw_noise *hs, uint8_t k_i2r[32], uint8_t k_r2i[32],
                      uint8_t hash[32]);

/** Wipe a handshake state (safe to call twice). */
void mcugw_noise_wipe(struct mcugw_noise *hs);

/* ========================================================================================== */
/* Transport session: AEAD with explicit counters and a 64-frame replay window                 */

/** One established session (one direction pair). Treat fields as private. */
struct mcugw_session {
        uint8_t tx_key[32];
        uint8_t rx_key[32];
        uint64_t tx_counter; /**< next counter to send */
        uint64_t rx_top;     /**< highest counter accepted */
        uint64_t rx_bitmap;  /**< bit i set: rx_top - i accepted; 0 = nothing received yet */
        uint32_t id;         /**< session id from handshake message 2 */
        uint16_t peer_max_frame;
        uint8_t active;
};

/**
 * Build a DATA frame: header (session id, next counter) + ChaCha20-Poly1305(msg) + tag, with
 * the 16 header bytes as associated data. @p msg may be out + MCUGW_DATA_HDR_LEN (in place).
 * Returns the frame length (len + 32). MCUGW_ETOOBIG if it would exceed the peer's limit,
 * MCUGW_EREKEY when the counter limit is reached, MCUGW_ESESSION if not active.
 */
int mcugw_session_seal(struct mcugw_session *s, const struct mcugw_crypto *c, const uint8_t *msg,
                       size_t len, uint8_t *out, size_t cap);

/**
 * Authenticate and decrypt a DATA frame in place. Checks in this order: length (ETRUNC),
 * header (EMALFORMED), session id (ESESSION), counter limit (EREKEY), window (ETOOOLD), tag
 * (EAUTH), already received (EDUP: an authenticated exact duplicate); the window only advances
 * after the tag verified. On success *msg points at frame + 16 and *msg_len is len - 32.
 */
int mcugw_session_open(struct mcugw_session *s, const struct mcugw_crypto *c, uint8_t *frame,
                       size_t len, uint8_t **msg, size_t *msg_len);

/** Session id of a DATA frame (0 if @p len is too short). */
uint32_t mcugw_data_session_id(const uint8_t *frame, size_t len);

/** Wipe keys and mark inactive. */
void mcugw_session_wipe(struct mcugw_session *s);

/* ========================================================================================== */
/* Handshake frames with mcugw payloads                                                        */

/** What the initiator puts into handshake message 1. */
struct mcugw_initiator_params {
        const uint8_t *static_priv; /**< device static private key, 32 bytes */
        const uint8_t *gateway_pub; /**< pinned gateway static public key, 32 bytes */
        const char *device_id;      /**< 1..32 printable ASCII bytes */
        size_t device_id_len;
        uint16_t max_rx_frame; /**< MCUGW_FRAME_MIN..MCUGW_FRAME_MAX */
        const uint8_t *attest; /**< optional, NULL in v1 */
        size_t attest_len;
        /** Strictly greater than in any earlier HS1 of this device (see wire.h, v3). */
        uint64_t timestamp;
        /**
         * Optional: the public key of static_priv (32 bytes), saving one X25519 per handshake.
         * NULL: computed each time. A wrong key makes the gateway refuse the handshake.
         */
        const uint8_t *static_pub;
};

/**
 * Start a handshake: initialise @p hs and write a complete HS1 frame (header + Noise message
 * 1 + mac1 + an all-zero mac2, no CRC) to @p out. Keep @p out unchanged to retransmit the same
 * bytes (mcugw_hs1_set_mac2() may change the last 16). Returns its length.
 */
int mcugw_initiator_write_hs1(struct mcugw_noise *hs, const struct mcugw_crypto *c,
                              const struct mcugw_initiator_params *p, uint8_t *out, size_t cap);

/**
 * Process an HS2 frame (decrypted in place). On success fills @p s (which may share storage
 * with @p hs: the handshake is wiped first) and returns 0.
 */
int mcugw_initiator_read_hs2(struct mcugw_noise *hs, const uint8_t static_priv[32], uint8_t *frame,
                             size_t len, struct mcugw_session *s);

/* ========================================================================================== */
/* Handshake flood resistance: mac1, mac2, cookies (docs/protocol.md; WireGuard §5.4)          */

/**
 * Derive the two keys both ends compute from the gateway's static public key:
 * mac1_key = SHA-256("mac1----" | pub), cookie_key = SHA-256("cookie--" | pub). Either output
 * may be NULL.
 */
int mcugw_flood_keys(const struct mcugw_crypto *c, const uint8_t gw_pub[32], uint8_t mac1_key[32],
                     uint8_t cookie_key[32]);

/**
 * Check mac1 of an HS1 frame in constant time: MAC(mac1_key, frame up to mac1). Returns 0,
 * MCUGW_ETRUNC (too short to hold the Noise message and both macs) or MCUGW_EAUTH. One HMAC:
 * cheap enough to run on every frame before any Diffie-Hellman.
 */
int mcugw_hs1_check_mac1(const struct mcugw_crypto *c, const uint8_t mac1_key[32],
                         const uint8_t *frame, size_t len);

/** Check mac2 against @p cookie (MCUGW_COOKIE_LEN bytes). Returns 0 or MCUGW_EAUTH. */
int mcugw_hs1_check_mac2(const struct mcugw_crypto *c, const uint8_t *cookie, const uint8_t *frame,
                         size_t len);

/** Set mac2 of an HS1 frame: MAC(cookie, frame up to mac2), or all zero if @p cookie is NULL. */
int mcugw_hs1_set_mac2(const struct mcugw_crypto *c, const uint8_t *cookie, uint8_t *frame,
                       size_t len);

/**
 * Gateway: the cookie for one link, MAC(secret, ident): @p secret is random and replaced every
 * MCUGW_COOKIE_SECRET_MS, @p ident names the link (its connection) so the cookie is worth
 * nothing elsewhere.
 */
int mcugw_cookie_make(const struct mcugw_crypto *c, const uint8_t secret[32], const void *ident,
                      size_t ident_len, uint8_t cookie[MCUGW_COOKIE_LEN]);

/**
 * Gateway: write the COOKIE frame answering @p hs1 (whose mac1 was checked) to @p out. The
 * nonce comes from crypto->random; the key is HMAC(cookie_key, nonce), so random 24-byte nonces
 * never repeat a (key, nonce) pair in practice. Returns MCUGW_COOKIE_REPLY_LEN.
 */
int mcugw_cookie_reply_write(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                             const uint8_t *hs1, size_t hs1_len,
                             const uint8_t cookie[MCUGW_COOKIE_LEN], uint8_t *out, size_t cap);

/**
 * Device: parse and authenticate a COOKIE frame answering the HS1 whose mac1 is @p mac1. On
 * success writes the cookie and returns 0; MCUGW_ETYPE (not a COOKIE frame), EMALFORMED (wrong
 * length), EAUTH (not for our HS1 or forged) otherwise, with @p cookie untouched.
 */
int mcugw_cookie_reply_read(const struct mcugw_crypto *c, const uint8_t cookie_key[32],
                            const uint8_t mac1[MCUGW_MAC_LEN], const uint8_t *frame, size_t len,
                            uint8_t cookie[MCUGW_COOKIE_LEN]);

/**
 * Registry lookup on the responder: called once per new message 1 after the initiator's
 * static key was authenticated. Return 0 to accept, negative to reject (no reply is sent).
 */
typedef int (*mcugw_lookup_fn)(void *user, const uint8_t device_pub[32], const char *device_id,
                               size_t device_id_len, const uint8_t *attest, size_t attest_len);

/**
 * Replay check on the responder. Called with @p commit = 0 after the initiator's static key and
 * the payload authenticated and before the lookup: return 0 if @p timestamp is newer than the
 * last one answered for @p device_pub, negative to refuse the HS1 as a replay (MCUGW_ESTALE:
 * nothing answered, nothing displaced). Called again with @p commit = 1 once the HS1 is
 * answered: remember @p timestamp. A refused HS1 is not remembered, so that the device's
 * retransmission of the very same bytes still works once it is admitted.
 */
typedef int (*mcugw_fresh_fn)(void *user, const uint8_t device_pub[32], uint64_t timestamp,
                              int commit);

/**
 * Responder configuration. The responder keeps a pointer to it, not a copy (a gateway shares one
 * among all its links): it and the keys it points to must outlive the responder.
 */
struct mcugw_responder_config {
        const struct mcugw_crypto *crypto;
        const uint8_t *static_priv; /**< gateway static private key (32) */
        const uint8_t *static_pub;  /**< and its public key (32) */
        mcugw_lookup_fn lookup;     /**< required */
        mcugw_fresh_fn fresh;       /**< optional: without it timestamps are not checked */
        void *user;                 /**< passed to lookup and fresh */
        uint16_t max_rx_frame;      /**< announced in HS2; 0 means MCUGW_FRAME_MAX */
};

/** Identity of the device behind a session, learned from handshake message 1. */
struct mcugw_peer {
        uint8_t static_pub[32];
        char device_id[MCUGW_DEVICE_ID_MAX + 1]; /**< NUL-terminated */
        uint8_t device_id_len;
        uint16_t max_rx_frame;
};

/** Counters of a responder, where its user lends them (mcugw_responder.stats). */
struct mcugw_responder_stats {
        uint32_t hs_ok;        /**< handshakes answered (pending sessions created) */
        uint32_t hs_duplicate; /**< duplicate message 1 answered from cache */
        uint32_t hs_auth_fail; /**< message 1 failed to decrypt (wrong gateway key, garbage) */
        uint32_t hs_rejected;  /**< lookup said no */
        uint32_t hs_malformed; /**< bad payload */
        uint32_t hs_bad_mac1;  /**< mac1 wrong: dropped before any DH */
        uint32_t hs_stale;     /**< timestamp not newer: a replayed message 1 */
        uint32_t sessions;     /**< sessions confirmed by the first DATA frame */
        uint32_t rx_ok;
        uint32_t rx_auth_fail;
        uint32_t rx_dup; /**< authenticated duplicates inside the window (MCUGW_EDUP) */
        uint32_t rx_too_old;
        uint32_t rx_bad_session;
        uint32_t rx_truncated; /**< DATA frame shorter than header + tag */
        uint32_t rx_malformed; /**< bad header or version, wrong frame type */
        uint32_t tx_ok;
};

/**
 * A handshake in flight on the responder: the session answered and not yet confirmed, and the
 * answer kept for a retransmitted message 1. Lent by the caller (mcugw_responder_set_hs()), so
 * that a gateway holds it only while a handshake is under way, not for every idle session.
 */
struct mcugw_responder_hs {
        struct mcugw_session next; /**< answered, not yet confirmed by the initiator */
        struct mcugw_peer next_peer;
        uint8_t hs1_hash[32]; /**< SHA-256 of the last answered HS1 frame, macs excluded */
        uint8_t hs2[MCUGW_HDR_LEN + MCUGW_HS2_OVERHEAD + MCUGW_HS2_PAYLOAD_LEN];
        uint8_t hs2_valid;
};

/** Responder (gateway) state for one link. Treat fields as private except via accessors. */
struct mcugw_responder {
        const struct mcugw_responder_config *cfg;
        void *user;               /**< passed to lookup and fresh: cfg->user, or set_user() */
        struct mcugw_session cur; /**< confirmed session */
        struct mcugw_peer peer;
        struct mcugw_responder_hs *hs;       /**< mcugw_responder_set_hs(), or NULL */
        uint8_t mac1_key[32];                /**< mcugw_flood_keys() of our public key */
        uint8_t cookie_key[32];              /**< for COOKIE frames */
        struct mcugw_responder_stats *stats; /**< lent by the caller, or NULL: not counted */
};

/** Result kinds of mcugw_responder_handle(). */
enum {
        MCUGW_RX_NONE = 0,    /**< consumed, nothing to do */
        MCUGW_RX_REPLY = 1,   /**< send rx.data/rx.len (a frame) back on the link */
        MCUGW_RX_MESSAGE = 2, /**< rx.data/rx.len is an authenticated plaintext message */
};

/** Output of mcugw_responder_handle(). */
struct mcugw_rx {
        int kind;            /**< MCUGW_RX_* */
        const uint8_t *data; /**< reply frame (in the responder) or message (in the frame) */
        size_t len;
        uint8_t new_handshake; /**< a fresh message 1 was accepted (session pending) */
        uint8_t new_session;   /**< this frame confirmed a new session: re-read the peer */
};

/**
 * Initialise a responder on @p cfg (kept by pointer). Returns MCUGW_EINVAL on a missing key,
 * crypto table or lookup.
 */
int mcugw_responder_init(struct mcugw_responder *r, const struct mcugw_responder_config *cfg);

/** Pass @p user to the lookup and fresh callbacks instead of cfg->user (one per link). */
void mcugw_responder_set_user(struct mcugw_responder *r, void *user);

/**
 * Lend @p hs (wiped here) as the storage of a handshake in flight, or take it back with NULL:
 * the pending session, if any, is forgotten and the storage wiped. Without storage, message 1
 * fails with MCUGW_ENOSPC and DATA frames are checked against the confirmed session only.
 */
void mcugw_responder_set_hs(struct mcugw_responder *r, struct mcugw_responder_hs *hs);

/** 1 while a message 1 is answered and its session not yet confirmed, else 0. */
int mcugw_responder_pending(const struct mcugw_responder *r);

/**
 * Before spending anything on an HS1 frame: check mac1 (MCUGW_EAUTH, counted hs_bad_mac1, or
 * MCUGW_ETRUNC) and, if @p cookie is not NULL, mac2 against it. Returns 1 if mac1 and mac2 are
 * valid, 0 if only mac1 is.
 */
int mcugw_responder_check_hs1(struct mcugw_responder *r, const uint8_t *frame, size_t len,
                              const uint8_t *cookie);

/**
 * Under load: write the COOKIE frame answering @p hs1 (checked with mcugw_responder_check_hs1())
 * to @p out, carrying @p cookie. Returns its length.
 */
int mcugw_responder_cookie_reply(struct mcugw_responder *r, const uint8_t *hs1, size_t hs1_len,
                                 const uint8_t cookie[MCUGW_COOKIE_LEN], uint8_t *out, size_t cap);

/**
 * Process one decoded frame (from the deframer; decrypted in place). Returns 0 and fills @p rx,
 * or a negative code for a dropped frame (also counted in r->stats): MCUGW_EAUTH, EDUP,
 * ETOOOLD, ESESSION, ETRUNC, EMALFORMED, EVERSION, ETYPE, EREJECTED, ...
 *
 * Handshake: message 1 needs a valid mac1 (EAUTH) and, with cfg.fresh, a new timestamp (ESTALE:
 * a replay, answered with nothing and displacing nothing). A valid message 1 from a device the
 * lookup accepts is answered (RX_REPLY) and
 * creates a pending session; the current session stays usable until the device's first DATA
 * frame on the new session confirms it (rx.new_session = 1, r->peer updated). A byte-identical
 * repeat of the last message 1 gets the cached message 2 again without new crypto.
 */
int mcugw_responder_handle(struct mcugw_responder *r, uint8_t *frame, size_t len,
                           struct mcugw_rx *rx);

/**
 * Seal a plaintext message into a DATA frame on the confirmed session (see
 * mcugw_session_seal(); @p msg may be out + MCUGW_DATA_HDR_LEN). Returns the frame length.
 */
int mcugw_responder_seal(struct mcugw_responder *r, const uint8_t *msg, size_t len, uint8_t *out,
                         size_t cap);

/**
 * The device id rule, the same for the wire (HS1), the SDK and the gateway's registry: 1 to
 * MCUGW_DEVICE_ID_MAX bytes of [A-Za-z0-9._-]. Ids end up in MQTT topics, file names and log
 * lines, where '/', '+', '#', quotes or spaces would change their meaning. 1 if valid.
 */
int mcugw_device_id_valid(const char *id, size_t len);

/** The confirmed peer, or NULL before the first session. */
const struct mcugw_peer *mcugw_responder_peer(const struct mcugw_responder *r);

/** Wipe all keys and forget the sessions (configuration kept). */
void mcugw_responder_reset(struct mcugw_responder *r);

/* ========================================================================================== */
/* Messages                                                                                    */

/** A decoded message. Pointers refer into the buffer given to mcugw_msg_decode(). */
struct mcugw_msg {
        uint8_t type; /**< MCUGW_MSG_* */
        union {
                struct {
                        uint16_t stream;
                        uint32_t seq;
                        uint8_t flags; /**< MCUGW_TLM_* */
                        const uint8_t *payload;
                        size_t len;
                } telemetry;
                struct {
                        uint16_t stream;
                        uint32_t seq;
                        uint8_t flags;  /**< MCUGW_ACK_* */
                        uint8_t status; /**< MCUGW_ACK_OK, ... */
                } ack;
                struct {
                        uint32_t token;
                } ping; /**< PING and PONG */
                struct {
                        uint32_t boot_counter;
                        uint32_t uptime_s;
                        uint8_t reset_cause; /**< MCUGW_RESET_* */
                        uint8_t link_reason; /**< MCUGW_LINK_*: why this session started */
                        const char *fw_version;
                        size_t fw_version_len; /**< <= MCUGW_FW_VERSION_MAX */
                } status;
                struct {
                        uint16_t code;
                        const char *text;
                        size_t text_len; /**< <= MCUGW_ERROR_TEXT_MAX */
                } error;
                struct {
                        uint32_t id;
                        const uint8_t *payload;
                        size_t len;
                } command; /**< COMMAND, and CONFIG (id: the version) */
                struct {
                        uint32_t id;
                        int16_t status;
                        const uint8_t *payload;
                        size_t len;
                } result; /**< COMMAND_RESULT, and CONFIG_RESULT (id: the version) */
                struct {
                        const uint8_t *body; /**< bytes after the type byte */
                        size_t len;
                } raw; /**< OTA range and vendor range: opaque here */
        } u;
};

/**
 * Encode @p m into @p out (must not overlap the payload). Returns the length, MCUGW_ENOSPC,
 * MCUGW_EINVAL (field out of range) or MCUGW_ETYPE. The result is at most MCUGW_MSG_MAX only if
 * the caller keeps payloads small enough; callers check against the session limit.
 */
int mcugw_msg_encode(const struct mcugw_msg *m, uint8_t *out, size_t cap);

/**
 * Decode with strict length checks (exact sizes for fixed messages, declared string lengths
 * within bounds, no trailing bytes). Returns 0, MCUGW_ETRUNC, MCUGW_EMALFORMED or MCUGW_ETYPE.
 */
int mcugw_msg_decode(const uint8_t *p, size_t len, struct mcugw_msg *m);
/**
 * The half a device needs: the same checks for the types a gateway sends (ACK, PING, PONG,
 * ERROR, COMMAND, CONFIG, OTA, vendor); the types only devices send (TELEMETRY, STATUS,
 * COMMAND_RESULT, CONFIG_RESULT) are MCUGW_ETYPE. mcugw_msg_decode() calls it for the rest.
 */
int mcugw_msg_decode_down(const uint8_t *p, size_t len, struct mcugw_msg *m);

#ifdef __cplusplus
}
#endif

#endif /* MCUGW_PROTO_H */
