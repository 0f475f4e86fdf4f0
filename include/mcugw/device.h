/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libmcugw-device: the MCU side of the mcugw link (the Noise IK initiator).
 *
 * C99, no malloc, no OS headers. The application owns every byte of memory: the context
 * (struct mcugw_device) and two buffers. Everything platform-specific comes in through a port:
 * a byte sink for the link, an optional byte source, a millisecond clock, the crypto table
 * (struct mcugw_crypto, e.g. the PSA/mbedTLS port) and where the keys live.
 *
 * Typical main loop:
 *
 *      static uint8_t rx[MCUGW_DEVICE_RX_BUF(256)], tx[MCUGW_DEVICE_TX_BUF(256)];
 *      static struct mcugw_device dev;
 *      cfg.rx_buf = rx; cfg.rx_cap = sizeof rx; cfg.tx_buf = tx; cfg.tx_cap = sizeof tx; ...
 *      cfg.boot_counter = flash_boot_counter_increment();  // or port.timestamp with an RTC
 *      mcugw_device_init(&dev, &cfg);
 *      mcugw_device_start(&dev);
 *      for (;;) {
 *              n = uart_read(buf, sizeof buf); mcugw_device_input(&dev, buf, n);  // or port.recv
 *              mcugw_device_tick(&dev);                     // retransmits, rekey
 *              if (mcugw_device_state(&dev) == MCUGW_DEV_CONNECTED)
 *                      mcugw_device_send_telemetry(&dev, 1, seq++, MCUGW_TLM_ACK_REQUESTED, d, n);
 *      }
 *
 * Not reentrant: call everything from one context (callbacks run inside input/tick).
 */
#ifndef MCUGW_DEVICE_H
#define MCUGW_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "mcugw/ota.h" /* OTA receiver: struct mcugw_ota, the flash port */
#include "mcugw/proto.h"
#include "mcugw/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Receive buffer bytes for a device accepting frames up to @p max_frame bytes. */
#define MCUGW_DEVICE_RX_BUF(max_frame) ((max_frame) + MCUGW_CRC_LEN)
/** Transmit buffer bytes for frames up to @p max_frame (must also hold handshake message 1). */
#define MCUGW_DEVICE_TX_BUF(max_frame) (max_frame)
/** Size of handshake message 1 (the minimum transmit buffer) for an id of @p id_len bytes. */
#define MCUGW_DEVICE_HS1_LEN(id_len)                                                               \
        (MCUGW_HDR_LEN + MCUGW_HS1_OVERHEAD + 15u + (id_len) + MCUGW_HS1_MACS_LEN)
/** The same with a manufacturer attestation of @p attest_len bytes in message 1. */
#define MCUGW_DEVICE_HS1_LEN_ATTEST(id_len, attest_len)                                            \
        (MCUGW_DEVICE_HS1_LEN(id_len) + (attest_len))

/** First retransmission timeout of message 1; doubles per attempt up to the maximum. */
#define MCUGW_DEVICE_HS_TIMEOUT_MS 1000u
#define MCUGW_DEVICE_HS_TIMEOUT_MAX_MS 32000u
/** Attempts with the same message 1 before a fresh ephemeral key is drawn. */
#define MCUGW_DEVICE_HS_ATTEMPTS 6u
/** Default session lifetime before a new handshake (forward secrecy), 24 h. */
#define MCUGW_DEVICE_REKEY_MS (24u * 3600u * 1000u)
/**
 * Liveness (docs/protocol.md, "Liveness"): once the device has sent something that the gateway
 * answers (telemetry with MCUGW_TLM_ACK_REQUESTED, a PING), it expects an authenticated frame
 * from the gateway within this time, else it handshakes again (MCUGW_LINK_TIMEOUT). Each
 * consecutive timeout doubles it up to the maximum; any authenticated frame resets it.
 */
#define MCUGW_DEVICE_LIVENESS_MS 2000u
#define MCUGW_DEVICE_LIVENESS_MAX_MS 32000u
/** mcugw_device_config.liveness_ms value that turns the liveness rule off. */
#define MCUGW_DEVICE_LIVENESS_OFF UINT32_MAX

/** Link states reported by mcugw_device_state() and on_state. */
enum mcugw_device_state {
        MCUGW_DEV_IDLE = 0,      /**< not started */
        MCUGW_DEV_HANDSHAKE = 1, /**< message 1 sent, waiting for message 2 */
        MCUGW_DEV_CONNECTED = 2, /**< session up: messages flow */
};

/** Platform port. */
struct mcugw_device_port {
        void *ctx; /**< passed to send/recv/now_ms */
        /** Queue @p len bytes on the link. 0 on success, negative to report failure. */
        int (*send)(void *ctx, const uint8_t *data, size_t len);
        /**
         * Optional: read up to @p cap received bytes without blocking; return the count (0 if
         * none) or negative. When NULL, feed bytes with mcugw_device_input() instead.
         */
        int (*recv)(void *ctx, uint8_t *buf, size_t cap);
        /** Monotonic milliseconds (wrapping is fine). */
        uint32_t (*now_ms)(void *ctx);
        /**
         * Optional, for devices with a real-time clock: a value that is strictly greater at
         * every call, across reboots too (e.g. TAI64N-like seconds << 32 | fraction). It goes
         * into every new message 1 so the gateway refuses replays (docs/protocol.md, "Handshake
         * flood resistance"). When NULL the SDK uses config.boot_counter << 32 | a count of
         * messages 1 since start, which needs boot_counter to grow at every boot.
         */
        uint64_t (*timestamp)(void *ctx);
        const struct mcugw_crypto *crypto; /**< primitives, see <mcugw/proto.h> */
        /**
         * Optional: called before the first byte of every frame with a bound of its size on the
         * wire (MCUGW_WIRE_MAX of the frame); send() then gets the frame's bytes in pieces,
         * ending with its 0x00 delimiter. Return 0 to go ahead, or MCUGW_EAGAIN when the link
         * cannot take that many bytes now ("try later"): nothing of the frame is sent. Then
         * mcugw_device_send*() return MCUGW_EAGAIN (call again later) and message 1 is retried
         * at the next mcugw_device_tick(). A port with a DMA, radio or RTOS queue reserves room
         * for the whole frame here, so that send() never has to fail in the middle of one.
         */
        int (*frame_begin)(void *ctx, size_t wire_max);
};

/** Key storage: pointers into flash/secure storage, read at each handshake. */
struct mcugw_device_keys {
        const uint8_t *static_priv; /**< device X25519 private key, 32 bytes */
        /**
         * Optional: the public key of static_priv (32 bytes, e.g. stored next to it at
         * provisioning). It saves one of the six X25519 operations of every handshake; NULL
         * makes the SDK compute it each time. A wrong key makes every handshake fail.
         */
        const uint8_t *static_pub;
        const uint8_t *gateway_pub; /**< pinned gateway X25519 public key, 32 bytes */
        const char *device_id;      /**< NUL-terminated, 1..32 printable ASCII */
        /** Optional manufacturer attestation (docs/protocol.md, "Attestation"), sent in message
         * 1 so that a gateway that trusts the manufacturer can enroll the device on first
         * contact. NULL/0 if the device has none. */
        const uint8_t *attest;
        uint16_t attest_len;
};

/** Application callbacks; any may be NULL. They run inside input()/tick(). */
struct mcugw_device_callbacks {
        void *user;
        /** Link state changed (enum mcugw_device_state). */
        void (*on_state)(void *user, int state);
        /** Cloud-to-device command; answer with mcugw_device_send_command_result(). */
        void (*on_command)(void *user, uint32_t id, const uint8_t *payload, size_t len);
        /** Gateway acknowledged telemetry. */
        void (*on_ack)(void *user, uint16_t stream, uint32_t seq, uint8_t flags, uint8_t status);
        /**
         * An error: @p code < 0 is a local MCUGW_E* code for a dropped frame (text NULL);
         * @p code > 0 is an ERROR message from the gateway with its text.
         */
        void (*on_error)(void *user, int code, const char *text, size_t len);
        /** Any other message (PONG, OTA range, vendor range). PINGs are answered internally. */
        void (*on_message)(void *user, const struct mcugw_msg *m);
        /**
         * Configuration from the device's shadow (docs/shadow.md): @p json is a JSON object
         * (not NUL-terminated) of settings to apply. Answer with
         * mcugw_device_send_config_result(), echoing @p version, with the settings now in use
         * (leave out the ones refused). Without this callback CONFIG goes to on_message.
         */
        void (*on_config)(void *user, uint32_t version, const uint8_t *json, size_t len);
};

/** Everything mcugw_device_init() needs. Copied into the context. */
struct mcugw_device_config {
        struct mcugw_device_port port;
        struct mcugw_device_keys keys;
        struct mcugw_device_callbacks cb;
        uint8_t *rx_buf; /**< MCUGW_DEVICE_RX_BUF(n), n >= MCUGW_FRAME_MIN: n is announced */
        size_t rx_cap;
        uint8_t *tx_buf; /**< >= MCUGW_DEVICE_HS1_LEN(strlen(device_id)) */
        size_t tx_cap;
        uint32_t rekey_ms; /**< session lifetime; 0 = MCUGW_DEVICE_REKEY_MS */
        /** ACK/PONG timeout; 0 = MCUGW_DEVICE_LIVENESS_MS, MCUGW_DEVICE_LIVENESS_OFF = never */
        uint32_t liveness_ms;
        /** Non-zero: ignore the gateway's NOSESSION frames (the application decides). */
        uint8_t ignore_nosession;
        /**
         * Boot counter, persisted by the application and incremented before every start (the
         * value STATUS reports). With no port.timestamp it makes message 1 timestamps grow across
         * reboots; a device that restarts with the same value is refused as a replay until its
         * count passes the last one the gateway saw, or the gateway restarts.
         */
        uint32_t boot_counter;
};

/** Counters for diagnostics. */
struct mcugw_device_stats {
        uint32_t handshakes;  /**< sessions established */
        uint32_t hs_sent;     /**< message 1 transmissions incl. retransmits */
        uint32_t rx_messages; /**< authenticated messages received */
        uint32_t rx_dropped;  /**< frames dropped after deframing (auth, replay, ...) */
        uint32_t tx_messages;
        uint32_t reconnects;    /**< handshakes started after the first (any reason) */
        uint32_t nosession;     /**< NOSESSION frames acted upon */
        uint32_t live_timeouts; /**< liveness timeouts (no ACK/PONG in time) */
        uint32_t cookies;       /**< COOKIE frames accepted (gateway under load, mac2 sent) */
};

/** Device context. Allocate statically; treat fields as private. */
struct mcugw_device {
        /* The small fields first: Thumb-2 reaches byte fields at offsets below 32 and words
         * below 128 with 2-byte instructions (about 130 bytes less code than at the end). */
        uint8_t state;
        uint8_t attempts;
        uint8_t live_waiting;
        uint8_t link_reason; /**< MCUGW_LINK_*: why the current/next session was started */
        uint8_t cookie_valid;
        uint16_t hs1_len;     /**< message 1 kept in tx_buf for retransmission */
        uint32_t deadline_ms; /**< next message 1 retransmission */
        uint32_t timeout_ms;
        uint32_t session_ms;       /**< when the session started */
        uint32_t live_deadline_ms; /**< an answer is due by then (live_waiting) */
        uint32_t live_ms;          /**< current liveness timeout (backs off) */
        uint32_t cookie_ms;        /**< when the cookie came; used for MCUGW_COOKIE_SECRET_MS */
        uint32_t hs_seq;           /**< messages 1 built since start (timestamp) */
        struct mcugw_device_stats stats;
        struct mcugw_device_config cfg;
        uint8_t cookie[MCUGW_COOKIE_LEN]; /**< from the last COOKIE frame, for mac2 */
        struct mcugw_deframer df;
        union {
                struct mcugw_noise hs;  /**< during the handshake */
                struct mcugw_session s; /**< once connected */
        } u;
};

/**
 * Check @p cfg and prepare @p dev (state IDLE). Returns MCUGW_EINVAL for missing port
 * functions/keys, a bad device id or buffers too small.
 */
int mcugw_device_init(struct mcugw_device *dev, const struct mcugw_device_config *cfg);

/**
 * Start (or restart) the handshake: sends message 1. Any current session is dropped. The
 * reason recorded is MCUGW_LINK_FIRST for the first call after init, else MCUGW_LINK_APP.
 */
int mcugw_device_start(struct mcugw_device *dev);

/**
 * The same with an explicit reason (MCUGW_LINK_*), e.g. MCUGW_LINK_LINE after the application
 * reopened the line and re-initialised the context. The SDK itself uses it on NOSESSION,
 * liveness timeouts and rekeying.
 */
int mcugw_device_reconnect(struct mcugw_device *dev, uint8_t reason);

/**
 * Why the current session (or the handshake under way) was started: MCUGW_LINK_*. Read it in
 * on_state(MCUGW_DEV_CONNECTED); mcugw_device_send_status() also sends it to the gateway.
 */
int mcugw_device_link_reason(const struct mcugw_device *dev);

/**
 * Drive timers: retransmit message 1 with exponential backoff, re-handshake when the session
 * is too old or its counter is near the limit, or when the gateway did not answer in time
 * (liveness); drains port.recv if set. Call often (each loop
 * or every few ms). Returns 0 or the first error from the port.
 */
int mcugw_device_tick(struct mcugw_device *dev);

/**
 * Feed bytes received from the link (any chunking). Complete frames are processed at once and
 * callbacks run. Returns 0; dropped frames are counted and reported through on_error.
 */
int mcugw_device_input(struct mcugw_device *dev, const uint8_t *data, size_t len);

/** Current enum mcugw_device_state. */
int mcugw_device_state(const struct mcugw_device *dev);

/**
 * Encrypt and send any message. MCUGW_ESTATE unless connected, MCUGW_ETOOBIG/ENOSPC when it
 * does not fit the gateway limit or tx buffer, or the error from port.send.
 */
int mcugw_device_send(struct mcugw_device *dev, const struct mcugw_msg *m);

/** Send telemetry on @p stream; set MCUGW_TLM_ACK_REQUESTED in @p flags to get an ack. */
int mcugw_device_send_telemetry(struct mcugw_device *dev, uint16_t stream, uint32_t seq,
                                uint8_t flags, const uint8_t *payload, size_t len);

/**
 * Send device status (firmware version string up to 32 printable bytes, may be NULL). The
 * message also carries mcugw_device_link_reason().
 */
int mcugw_device_send_status(struct mcugw_device *dev, uint32_t boot_counter, uint32_t uptime_s,
                             uint8_t reset_cause, const char *fw_version);

/** Send a PING; the PONG arrives through on_message. */
int mcugw_device_ping(struct mcugw_device *dev, uint32_t token);

/** Answer a command. */
int mcugw_device_send_command_result(struct mcugw_device *dev, uint32_t id, int16_t status,
                                     const uint8_t *payload, size_t len);

/**
 * Answer a CONFIG: @p version as received, @p status 0 (or a negative MCUGW_E* code if nothing
 * was applied), @p json a JSON object of the settings in use now (at most MCUGW_CONFIG_MAX).
 */
int mcugw_device_send_config_result(struct mcugw_device *dev, uint32_t version, int16_t status,
                                    const uint8_t *json, size_t len);

/** Largest telemetry payload that fits the current session and the tx buffer (0 if none). */
size_t mcugw_device_max_payload(const struct mcugw_device *dev);

#ifdef __cplusplus
}
#endif

#endif /* MCUGW_DEVICE_H */
