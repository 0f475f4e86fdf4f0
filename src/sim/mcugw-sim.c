/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mcugw-sim: N simulated MCUs on the real device SDK (libmcugw-device + the POSIX/OpenSSL port),
 * over Unix/TCP stream sockets or pseudo-terminals, in one thread with poll().
 *
 *   mcugw-sim keys --count N --seed S [--id-prefix P] [--json] [--enroll-file PATH]
 *   mcugw-sim run  --connect unix:PATH|tcp:HOST:PORT|pty:PATH [...] --gateway-key KEY|@FILE
 *                  [--count N] [--seed S] [--rate R] [--size B] [--messages M] [--duration S]
 *                  [--timestamps] [--sync-start] [--stagger] [--fill-window]
 *                  [--baud N] [--wrong-key|--unknown|--wrong-gateway-key|--replay|--bitflip|
 *                  --garbage|--truncate|--flood|--slowloris] [--every K] [--displace N]
 *                  [--event-log PATH] [--liveness-ms MS] [--rx-frame N] [--replay-old]
 *
 * Keys are derived from the seed and the device index (SHA-256("mcugw-sim/v1|SEED|INDEX")), so
 * a test can enroll the devices before starting them. Devices are spread over the --connect
 * targets round-robin; a pty carries exactly one device. The sim creates the pty pair itself and
 * points the symlink PATH at the slave (like socat's link=), which the gateway opens as its
 * SerialPort. At the end (or on SIGINT/SIGTERM) one JSON object with the statistics is printed.
 * Every session after the first is reported on stderr with its reason (the SDK's
 * mcugw_device_link_reason()) and counted per reason in the statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/rand.h>

#include <jansson.h>

#include "basic/time-util.h"
#include "basic/hexdecoct.h"
#include "basic/cred.h"
#include "basic/rlimit-util.h"
#include "devices/onboard.h"
#include "mcugw/device.h"
#include "mcugw/proto.h"
#include "posix_openssl.h"

#define OUTQ_CAP (16 * 1024)
#define ACC_CAP (MCUGW_WIRE_MAX(MCUGW_FRAME_MAX) + 64)
#define FLOOD_HS1 16
#define MIN_SZ(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

enum misbehave {
        BAD_NONE,
        BAD_WRONG_KEY,
        BAD_UNKNOWN,
        BAD_WRONG_GATEWAY_KEY,
        BAD_REPLAY,
        BAD_BITFLIP,
        BAD_GARBAGE,
        BAD_TRUNCATE,
        BAD_FLOOD,
        BAD_SLOWLORIS,
        BAD_REPLAY_OLD,
};

struct target {
        char spec[256];
        int kind; /* 'u', 't', 'p' */
        char path[108];
        char host[128];
        char port[16];
        int users;
};

struct sim_dev {
        unsigned index;
        char id[MCUGW_DEVICE_ID_MAX + 1];
        uint8_t priv[32], pub[32];
        struct target *t;
        int fd;
        int slave_fd; /* pty: kept open so the line exists while the gateway reopens */
        struct mcugw_device dev;
        uint8_t rx[MCUGW_DEVICE_RX_BUF(MCUGW_FRAME_MAX)];
        uint8_t tx[MCUGW_DEVICE_TX_BUF(MCUGW_FRAME_MAX)];
        uint8_t outq[OUTQ_CAP];
        size_t outq_len;
        uint8_t acc[ACC_CAP]; /* wire bytes of the frame being sent */
        size_t acc_len;
        uint8_t last_data[ACC_CAP]; /* for --replay */
        size_t last_data_len;
        uint8_t old_data[ACC_CAP]; /* for --replay-old: an early frame of the session */
        size_t old_data_len;
        uint64_t old_data_frame; /* its number in data_frames */
        double baud_tokens;
        uint64_t baud_last_ms;
        uint64_t started_ms, connected_ms, next_send_ms, reconnect_ms, slow_next_ms;
        size_t slow_off;
        uint32_t seq;
        uint64_t sent, acked, nacked, corrupted, injected, data_frames, send_errors, disconnects;
        uint64_t handshakes, commands, configs;
        uint64_t lost; /* telemetry still unanswered when its session was lost */
        uint64_t reasons[MCUGW_LINK_REASON_MAX + 1]; /* sessions by mcugw_device_link_reason() */
        uint64_t down_ms;                            /* when the last session was lost, or 0 */
        unsigned displace_left;
        bool connected_once, sabotaged, done;
        /* OTA (--ota-dir): the flash slot is a file, a reboot is a new handshake */
        struct mcugw_ota ota;
        bool ota_on;
        int ota_fd;
        char fw[MCUGW_FW_VERSION_MAX + 1], fw_old[MCUGW_FW_VERSION_MAX + 1];
        char fw_offered[MCUGW_FW_VERSION_MAX + 1], fw_pending[MCUGW_FW_VERSION_MAX + 1];
        uint8_t fw_offered_len;
        uint32_t ota_tid, boots;
        uint8_t attest[ONBOARD_ATTEST_MAX]; /* manufacturer attestation sent in message 1 */
        uint16_t attest_len;
        uint64_t reboot_at_ms, self_test_at_ms;
        int reboot_kind; /* 1: into the new image (test mode), 2: back to the old one */
        uint64_t ota_confirmed, ota_failed;
        uint64_t ota_over_window; /* chunk bytes the gateway sent beyond our window */
        /* --ota-ack-delay: the newest CHUNK_ACK, held back (acks are cumulative) */
        uint64_t ack_due_ms;
        uint32_t ack_seen; /* offset of the last ack actually sent: all the gateway can know */
        uint8_t ack_len, ack_buf[MCUGW_OTA_ACK_LEN + 8];
        double rx_tokens; /* --baud also limits what the device reads (gateway -> device) */
        uint64_t rx_last_ms;
        int state;
};

static struct {
        unsigned count, first_index;
        const char *seed, *id_prefix;
        double rate;
        size_t size;
        uint64_t messages;
        double duration;
        unsigned baud;
        unsigned window;
        unsigned every;
        enum misbehave bad;
        bool json;
        uint8_t gw_pub[32];
        bool have_gw;
        const char *enroll_file;
        double linger;
        unsigned reconnect_ms;   /* --reconnect-delay */
        const char *ota_dir;     /* --ota-dir: accept OTA, slots are files here */
        bool ota_fail_self_test; /* --ota-fail-self-test */
        const char *fw_version;  /* --fw-version (default sim-1.0.0) */
        FILE *ack_log;           /* --ack-log: one line per ack, "device stream seq status" */
        FILE *event_log;         /* --event-log: "MONOTONIC_MS DEVICE EVENT ARGS" lines */
        unsigned displace;       /* --displace N: displace our own first N pending sessions */
        uint32_t liveness_ms;    /* --liveness-ms (0: the SDK's default) */
        unsigned rx_frame;       /* --rx-frame: the device's receive limit (96..1024) */
        uint8_t ota_pub[65];     /* --ota-cert: the device checks the signature too */
        bool have_ota_pub;
        const char *key_file; /* one device with this private key (mcugwctl keygen) */
        const char *id;
        EVP_PKEY *attest_key; /* --attest-key: sign each device as its manufacturer would */
        const char *attest_key_id;
        bool timestamps; /* --timestamps: payload "seq=N;ts=NANOS;" (CLOCK_REALTIME) */
        bool sync_start; /* --sync-start: no telemetry until every device is connected */
        bool stagger; /* --stagger: device i sends first i/count of an interval after the others */
        bool fill_window;       /* --fill-window: with --rate 0, refill the whole ack window */
        uint32_t ota_window;    /* --ota-window: OTA bytes in flight the device accepts */
        unsigned ota_ack_delay; /* --ota-ack-delay: ms each CHUNK_ACK is held back */
        const char *config_refuse[8]; /* --config-refuse KEY: the application refuses it */
        unsigned n_config_refuse;
} opt = {
        .count = 0,
        .seed = "mcugw",
        .id_prefix = "sim-",
        .rate = 10,
        .size = 16,
        .messages = 10,
        .duration = 0,
        .window = 32,
        .ota_window = 16384,
        .every = 5,
        .reconnect_ms = 1000,
};

static struct target targets[256];
static unsigned n_targets;
static struct sim_dev *devs;
static volatile sig_atomic_t stop_requested;
static uint64_t t0_ms;

static void on_signal(int sig)
{
        stop_requested = 1;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
        va_list ap;
        fputs("mcugw-sim: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(1);
}

static int unb64(const char *s, uint8_t k[32])
{
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
                n--;
        return key_from_base64(s, n, k);
}

/* Deterministic keys: a test can compute the public keys before the devices exist. */
static void derive_key(const char *seed, unsigned index, uint8_t priv[32], uint8_t pub[32])
{
        char buf[512];
        unsigned len = 32;
        int n = snprintf(buf, sizeof buf, "mcugw-sim/v1|%s|%u", seed, index);
        EVP_Digest(buf, (size_t)n, priv, &len, EVP_sha256(), NULL);
        mcugw_crypto_openssl.x25519_public(NULL, pub, priv);
}

/* One line per event with CLOCK_MONOTONIC milliseconds (Python's time.monotonic() * 1000). */
static void event(struct sim_dev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(struct sim_dev *d, const char *fmt, ...)
{
        va_list ap;

        if (!opt.event_log)
                return;
        fprintf(opt.event_log, "%llu %s ", (unsigned long long)now_monotonic_msec(), d->id);
        va_start(ap, fmt);
        vfprintf(opt.event_log, fmt, ap);
        va_end(ap);
        fputc('\n', opt.event_log);
}

/* Telemetry sent and not answered yet (late answers of a lost session may make it negative). */
static uint64_t inflight(const struct sim_dev *d)
{
        uint64_t done = d->acked + d->nacked + d->corrupted + d->lost;
        return d->sent > done ? d->sent - done : 0;
}

static void make_id(unsigned index, char *out, size_t n)
{
        snprintf(out, n, "%s%04u", opt.id_prefix, index);
}

/* ---- output path: frame hook (misbehaviour), queue, baud limiter --------------------------- */

static void outq_put(struct sim_dev *d, const uint8_t *p, size_t n)
{
        if (d->outq_len + n > OUTQ_CAP) {
                d->send_errors++;
                return;
        }
        memcpy(d->outq + d->outq_len, p, n);
        d->outq_len += n;
}

/* Re-encode a modified frame with a valid CRC so it reaches the AEAD / length checks. */
static void send_modified(struct sim_dev *d, const uint8_t *frame, size_t len)
{
        uint8_t wire[ACC_CAP];
        int w = mcugw_frame_encode(frame, len, wire, sizeof wire);
        if (w > 0)
                outq_put(d, wire, (size_t)w);
}

static void frame_out(struct sim_dev *d, const uint8_t *wire, size_t wlen)
{
        uint8_t buf[ACC_CAP], *frame;
        struct mcugw_deframer df;
        size_t used, flen;
        bool data;

        mcugw_deframer_init(&df, buf, sizeof buf);
        if (mcugw_deframer_push(&df, wire, wlen, &used, &frame, &flen) != 1) {
                outq_put(d, wire, wlen);
                return;
        }
        data = flen >= MCUGW_DATA_OVERHEAD && frame[1] == MCUGW_FRAME_DATA;
        if (data)
                d->data_frames++;
        /* Leave the key confirmation and the first messages alone. */
        if (!data || d->data_frames < 3 || d->data_frames % opt.every != 0) {
                outq_put(d, wire, wlen);
                if (data) {
                        memcpy(d->last_data, wire, wlen);
                        d->last_data_len = wlen;
                        if (!d->old_data_len) {
                                memcpy(d->old_data, wire, wlen);
                                d->old_data_len = wlen;
                                d->old_data_frame = d->data_frames;
                        }
                }
                return;
        }
        switch (opt.bad) {
        case BAD_REPLAY:
                outq_put(d, wire, wlen);
                if (d->last_data_len)
                        outq_put(d, d->last_data, d->last_data_len);
                d->injected++;
                break;
        case BAD_REPLAY_OLD:
                /* A frame from before the replay window (what an attacker who recorded the line
                 * can send; a link does not delay a frame by 64 others). */
                outq_put(d, wire, wlen);
                if (d->old_data_len &&
                    d->data_frames - d->old_data_frame > MCUGW_REPLAY_WINDOW + 2) {
                        outq_put(d, d->old_data, d->old_data_len);
                        d->injected++;
                }
                break;
        case BAD_BITFLIP:
                frame[MCUGW_DATA_HDR_LEN + (flen - MCUGW_DATA_HDR_LEN) / 2] ^= 0x10;
                send_modified(d, frame, flen);
                d->sabotaged = true;
                d->corrupted++;
                break;
        case BAD_TRUNCATE:
                send_modified(d, frame, 24);
                d->sabotaged = true;
                d->corrupted++;
                break;
        case BAD_GARBAGE: {
                uint8_t g[64];
                RAND_bytes(g, sizeof g);
                for (size_t i = 0; i < sizeof g; i++)
                        if (!g[i])
                                g[i] = 0x55;
                g[sizeof g - 1] = 0;
                outq_put(d, g, sizeof g);
                outq_put(d, wire, wlen);
                d->injected++;
                break;
        }
        default: outq_put(d, wire, wlen); break;
        }
}

static int port_send(void *ctx, const uint8_t *data, size_t len)
{
        struct sim_dev *d = ctx;
        for (size_t i = 0; i < len; i++) {
                if (d->acc_len >= ACC_CAP) {
                        outq_put(d, d->acc, d->acc_len);
                        d->acc_len = 0;
                }
                d->acc[d->acc_len++] = data[i];
                if (data[i] == 0) {
                        if (d->acc_len == 1 || opt.bad == BAD_SLOWLORIS)
                                outq_put(d, d->acc, d->acc_len);
                        else
                                frame_out(d, d->acc, d->acc_len);
                        d->acc_len = 0;
                }
        }
        return d->fd < 0 ? MCUGW_EIO : 0;
}

static uint32_t port_now(void *ctx)
{
        return (uint32_t)now_monotonic_msec();
}

/* Handshake timestamps (replay protection): the wall clock in ns, as a device with an RTC
 * would, so they keep growing across restarts of the simulator; strictly increasing within
 * this process whatever the clock does. */
static uint64_t port_timestamp(void *ctx)
{
        static uint64_t last;
        uint64_t t = (uint64_t)now_realtime_usec() * 1000u;

        last = t > last ? t : last + 1;
        return last;
}

static void flush_out(struct sim_dev *d, uint64_t now)
{
        size_t n = d->outq_len;
        ssize_t k;

        if (d->fd < 0 || !n)
                return;
        if (opt.bad == BAD_SLOWLORIS) {
                /* One byte a second: never a complete message 1 before the gateway's timeout. */
                if (now < d->slow_next_ms)
                        return;
                d->slow_next_ms = now + 1000;
                n = 1;
        } else if (opt.baud) {
                d->baud_tokens += (double)(now - d->baud_last_ms) * opt.baud / 10000.0;
                if (d->baud_tokens > opt.baud / 100.0 + 64)
                        d->baud_tokens = opt.baud / 100.0 + 64;
                d->baud_last_ms = now;
                if (d->baud_tokens < 1)
                        return;
                n = MIN_SZ(n, (size_t)d->baud_tokens);
        }
        k = write(d->fd, d->outq, n);
        if (k <= 0)
                return;
        if (opt.baud)
                d->baud_tokens -= (double)k;
        memmove(d->outq, d->outq + k, d->outq_len - (size_t)k);
        d->outq_len -= (size_t)k;
}

/* ---- OTA: flash port on a file, reboot = re-handshake with the new version ----------------- */

static int fl_begin(void *ctx, uint32_t size)
{
        struct sim_dev *d = ctx;
        char path[4200];

        if (d->ota_fd >= 0)
                close(d->ota_fd);
        snprintf(path, sizeof path, "%s/%s.slot", opt.ota_dir, d->id);
        d->ota_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (d->ota_fd < 0 || ftruncate(d->ota_fd, size) < 0)
                return -1;
        snprintf(d->fw_pending, sizeof d->fw_pending, "%s", d->fw_offered);
        return 0;
}

static int fl_write(void *ctx, uint32_t off, const uint8_t *data, size_t len)
{
        struct sim_dev *d = ctx;
        return pwrite(d->ota_fd, data, len, off) == (ssize_t)len ? 0 : -1;
}

static int fl_finish(void *ctx, uint32_t size, uint8_t out[32])
{
        struct sim_dev *d = ctx;
        EVP_MD_CTX *h = EVP_MD_CTX_new();
        uint8_t buf[65536];
        uint32_t off = 0;
        int r = -1;

        if (h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1) {
                while (off < size) {
                        ssize_t k = pread(d->ota_fd, buf, MIN_SZ(sizeof buf, size - off), off);
                        if (k <= 0)
                                break;
                        EVP_DigestUpdate(h, buf, (size_t)k);
                        off += (uint32_t)k;
                }
                if (off == size && EVP_DigestFinal_ex(h, out, NULL) == 1)
                        r = 0;
        }
        EVP_MD_CTX_free(h);
        return r;
}

static int fl_set_pending(void *ctx)
{
        return 0; /* the "bootloader" below boots the slot once after the reboot */
}

static int fl_confirm(void *ctx)
{
        struct sim_dev *d = ctx;
        d->ota_confirmed++;
        return 0;
}

/* Send an OTA reply now; once an ack has left, its offset is what the gateway may know. */
static int ota_send_now(struct sim_dev *d, const struct mcugw_msg *m)
{
        struct mcugw_ota_msg a;

        if (m->type == MCUGW_MSG_OTA_CHUNK_ACK && mcugw_ota_decode(m, &a) == 0)
                d->ack_seen = a.u.ack.offset;
        return mcugw_device_send(&d->dev, m);
}

static void ota_flush_ack(struct sim_dev *d)
{
        struct mcugw_msg m;

        if (!d->ack_len)
                return;
        mcugw_ota_wrap(&m, d->ack_buf, d->ack_len);
        d->ack_len = 0;
        (void)ota_send_now(d, &m);
}

/* With --ota-ack-delay, an MCU busy with its flash: acks leave late, and until they do the
 * gateway must stay within the window (checked in on_message). */
static int ota_send(void *ctx, const struct mcugw_msg *m)
{
        struct sim_dev *d = ctx;

        if (opt.ota_ack_delay && m->type == MCUGW_MSG_OTA_CHUNK_ACK &&
            m->u.raw.len + 1 <= sizeof d->ack_buf) {
                if (!d->ack_len)
                        d->ack_due_ms = now_monotonic_msec() + opt.ota_ack_delay;
                d->ack_buf[0] = m->type;
                memcpy(d->ack_buf + 1, m->u.raw.body, m->u.raw.len);
                d->ack_len = (uint8_t)(m->u.raw.len + 1);
                return 0;
        }
        ota_flush_ack(d); /* in order: an ack before the STATUS that follows it */
        return ota_send_now(d, m);
}

static void ota_reboot_cb(void *user, uint32_t transfer_id)
{
        struct sim_dev *d = user;
        d->ota_tid = transfer_id;
        d->reboot_kind = 1;
        d->reboot_at_ms = now_monotonic_msec() + 100;
}

static void sim_ota_init(struct sim_dev *d)
{
        struct mcugw_ota_config c = {
                .flash = { d, fl_begin, fl_write, fl_finish, fl_set_pending, fl_confirm, NULL },
                .send = ota_send,
                .send_ctx = d,
                .crypto = &mcugw_crypto_openssl,
                .signer_pub = opt.have_ota_pub ? opt.ota_pub : NULL,
                .max_size = 64u << 20,
                .window = opt.ota_window,
                .max_chunk = (opt.rx_frame ? opt.rx_frame : MCUGW_FRAME_MAX) - MCUGW_DATA_OVERHEAD -
                             MCUGW_OTA_CHUNK_HDR,
                .on_reboot = ota_reboot_cb,
                .user = d,
        };
        d->ota_fd = -1;
        snprintf(d->fw, sizeof d->fw, "%s", opt.fw_version ? opt.fw_version : "sim-1.0.0");
        if (mcugw_ota_init(&d->ota, &c) < 0)
                die("device %s: bad OTA configuration", d->id);
        d->ota_on = true;
}

static void sim_ota_connected(struct sim_dev *d)
{
        if (!d->ota_on)
                return;
        mcugw_ota_connected(&d->ota);
        if (d->ota.state == MCUGW_OTA_ST_TESTING && !d->self_test_at_ms)
                d->self_test_at_ms = now_monotonic_msec() + 200;
}

static void on_message(void *user, const struct mcugw_msg *m)
{
        struct sim_dev *d = user;
        struct mcugw_ota_msg o;

        if (!d->ota_on || m->type < MCUGW_MSG_OTA_FIRST || m->type > MCUGW_MSG_OTA_LAST)
                return;
        /* The version comes in the OFFER_MORE pieces, before the signature. */
        if (m->type == MCUGW_MSG_OTA_OFFER && mcugw_ota_decode(m, &o) == 0) {
                d->fw_offered_len = (uint8_t)o.u.offer.version_len;
                memset(d->fw_offered, 0, sizeof d->fw_offered);
        } else if (m->type == MCUGW_MSG_OTA_OFFER_MORE && mcugw_ota_decode(m, &o) == 0) {
                for (size_t i = 0; i < o.u.more.len; i++) {
                        size_t at = o.u.more.offset + i;
                        uint8_t c = o.u.more.data[i];
                        if (at < d->fw_offered_len && at < MCUGW_FW_VERSION_MAX)
                                d->fw_offered[at] = c >= 0x20 && c <= 0x7e ? (char)c : '?';
                }
        }
        /* Flow control: a chunk must end within the window beyond the last ack that left (a
         * real MCU's receive ring overflows otherwise). */
        if (m->type == MCUGW_MSG_OTA_CHUNK && mcugw_ota_decode(m, &o) == 0 &&
            d->ota.state == MCUGW_OTA_ST_RECEIVING &&
            (uint64_t)o.u.chunk.offset + o.u.chunk.len > (uint64_t)d->ack_seen + opt.ota_window)
                d->ota_over_window +=
                        (uint64_t)o.u.chunk.offset + o.u.chunk.len - d->ack_seen - opt.ota_window;
        mcugw_ota_handle(&d->ota, m);
}

static void dev_start(struct sim_dev *d, uint64_t now);

/* The "bootloader": reboot into the pending image in test mode, or back to the old one. */
static void sim_ota_tick(struct sim_dev *d, uint64_t now)
{
        if (!d->ota_on)
                return;
        if (d->ack_len && now >= d->ack_due_ms)
                ota_flush_ack(d);
        if (d->reboot_at_ms && now >= d->reboot_at_ms) {
                d->reboot_at_ms = 0;
                d->boots++;
                if (d->reboot_kind == 1) {
                        snprintf(d->fw_old, sizeof d->fw_old, "%s", d->fw);
                        snprintf(d->fw, sizeof d->fw, "%s", d->fw_pending);
                        mcugw_ota_booted_test(&d->ota, d->ota_tid);
                } else
                        snprintf(d->fw, sizeof d->fw, "%s", d->fw_old);
                /* A reset: the session is gone, the line stays; a new handshake. */
                d->self_test_at_ms = 0;
                d->outq_len = 0;
                d->acc_len = 0;
                {
                        struct mcugw_device_config cfg = d->dev.cfg;
                        mcugw_device_init(&d->dev, &cfg);
                        d->state = MCUGW_DEV_IDLE;
                        outq_put(d, (const uint8_t *)"", 1);
                        mcugw_device_start(&d->dev);
                }
        }
        if (d->self_test_at_ms && now >= d->self_test_at_ms && d->state == MCUGW_DEV_CONNECTED &&
            d->ota.state == MCUGW_OTA_ST_TESTING) {
                d->self_test_at_ms = 0;
                if (opt.ota_fail_self_test) {
                        mcugw_ota_self_test_done(&d->ota, 0, "self-test failed (simulated)");
                        d->ota_failed++;
                        d->reboot_kind = 2; /* the bootloader reverts */
                        d->reboot_at_ms = now + 100;
                } else
                        mcugw_ota_self_test_done(&d->ota, 1, NULL);
        }
}

static void read_ota_cert(const char *path)
{
        FILE *f = fopen(path, "re");
        X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
        EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
        size_t n = 0;

        if (f)
                fclose(f);
        if (!k ||
            EVP_PKEY_get_octet_string_param(k, "encoded-pub-key", opt.ota_pub, sizeof opt.ota_pub,
                                            &n) != 1 ||
            n != 65)
                die("--ota-cert %s: not a P-256 certificate", path);
        opt.have_ota_pub = true;
        EVP_PKEY_free(k);
        X509_free(x);
}

/* ---- device callbacks -------------------------------------------------------------------- */

static void displace_pending(struct sim_dev *d);

static void on_state(void *user, int state)
{
        struct sim_dev *d = user;
        int prev = d->state;

        d->state = state;
        if (prev == MCUGW_DEV_CONNECTED && state != MCUGW_DEV_CONNECTED) {
                d->down_ms = now_monotonic_msec();
                event(d, "down %s", mcugw_link_reason_str(mcugw_device_link_reason(&d->dev)));
        }
        if (state == MCUGW_DEV_CONNECTED) {
                int why = mcugw_device_link_reason(&d->dev);
                uint64_t n = inflight(d);

                d->handshakes++;
                d->reasons[why]++;
                /* What the old session did not answer is gone with it (the gateway acks only
                 * what it stored): free the window for new messages. */
                d->lost += n;
                if (why != MCUGW_LINK_FIRST)
                        fprintf(stderr, "mcugw-sim: %s: reconnected (%s), %llu unanswered\n", d->id,
                                mcugw_link_reason_str((unsigned)why), (unsigned long long)n);
                event(d, "up %s", mcugw_link_reason_str((unsigned)why));
                if (d->displace_left) {
                        d->displace_left--;
                        displace_pending(d);
                }
                if (!d->connected_once) {
                        d->connected_ms = now_monotonic_msec();
                        d->connected_once = true;
                }
                mcugw_device_send_status(
                        &d->dev, 1 + d->boots, (uint32_t)((now_monotonic_msec() - t0_ms) / 1000),
                        d->boots ? MCUGW_RESET_OTA : MCUGW_RESET_POWER_ON,
                        d->fw[0] ? d->fw : (opt.fw_version ? opt.fw_version : "sim-1.0.0"));
                sim_ota_connected(d);
        }
}

static void on_ack(void *user, uint16_t stream, uint32_t seq, uint8_t flags, uint8_t status)
{
        struct sim_dev *d = user;
        if (opt.ack_log)
                fprintf(opt.ack_log, "%s %u %u %u\n", d->id, stream, seq, status);
        event(d, "ack %u %u %u", stream, seq, status);
        if (status == MCUGW_ACK_OK)
                d->acked++;
        else
                d->nacked++;
}

static void on_command(void *user, uint32_t id, const uint8_t *payload, size_t len)
{
        struct sim_dev *d = user;
        d->commands++;
        /* Echo the command back as its result. */
        mcugw_device_send_command_result(&d->dev, id, 0, payload, len);
}

/* The application's configuration callback: apply every setting but the refused keys, and
 * answer with what is in use now (docs/shadow.md). */
static void on_config(void *user, uint32_t version, const uint8_t *payload, size_t len)
{
        struct sim_dev *d = user;
        json_t *cfg = json_loadb((const char *)payload, len, 0, NULL);
        char *out;

        d->configs++;
        if (!json_is_object(cfg)) {
                json_decref(cfg);
                mcugw_device_send_config_result(&d->dev, version, MCUGW_EMALFORMED, NULL, 0);
                return;
        }
        for (unsigned i = 0; i < opt.n_config_refuse; i++)
                json_object_del(cfg, opt.config_refuse[i]);
        out = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
        event(d, "config %u %s", version, out ? out : "?");
        if (out)
                mcugw_device_send_config_result(&d->dev, version, 0, (const uint8_t *)out,
                                                strlen(out));
        free(out);
        json_decref(cfg);
}

/* ---- connections ------------------------------------------------------------------------- */

static int connect_target(struct sim_dev *d)
{
        struct target *t = d->t;
        int fd = -1;

        if (t->kind == 'u') {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                strcpy(sa.sun_path, t->path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                        goto fail;
        } else if (t->kind == 't') {
                struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
                int one = 1;
                if (getaddrinfo(t->host, t->port, &hints, &ai) != 0 || !ai)
                        return -1;
                fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                        freeaddrinfo(ai);
                        goto fail;
                }
                freeaddrinfo(ai);
                setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
        } else {
                struct termios tio;
                char *name;
                if (d->slave_fd < 0) {
                        if (openpty(&fd, &d->slave_fd, NULL, NULL, NULL) < 0)
                                return -1;
                        tcgetattr(d->slave_fd, &tio);
                        cfmakeraw(&tio);
                        tcsetattr(d->slave_fd, TCSANOW, &tio);
                        tcgetattr(fd, &tio);
                        cfmakeraw(&tio);
                        tcsetattr(fd, TCSANOW, &tio);
                        name = ttyname(d->slave_fd);
                        if (!name)
                                goto fail;
                        unlink(t->path);
                        if (symlink(name, t->path) < 0)
                                goto fail;
                        fcntl(fd, F_SETFD, FD_CLOEXEC);
                        fcntl(d->slave_fd, F_SETFD, FD_CLOEXEC);
                } else
                        return -1;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        return fd;
fail:
        if (fd >= 0)
                close(fd);
        return -1;
}

/* A fresh message 1 of this device, made with its own key outside its SDK state machine: the
 * length written into f, or a negative MCUGW_E*. */
static int own_hs1(const struct sim_dev *d, uint64_t timestamp, uint8_t *f, size_t cap)
{
        struct mcugw_noise hs;
        struct mcugw_initiator_params p = {
                .static_priv = d->priv,
                .gateway_pub = opt.gw_pub,
                .device_id = d->id,
                .device_id_len = strlen(d->id),
                .max_rx_frame = MCUGW_FRAME_MAX,
                .timestamp = timestamp,
        };
        int n = mcugw_initiator_write_hs1(&hs, &mcugw_crypto_openssl, &p, f, cap);

        mcugw_noise_wipe(&hs);
        return n;
}

/* What an attacker on the line (or a replayed message 1) does to a pending session: a fresh
 * message 1 of this device, sent before our key confirmation, replaces the session the gateway
 * just offered us. Our first DATA frames then name a session the gateway no longer has. */
static void displace_pending(struct sim_dev *d)
{
        uint8_t f[256];
        /* Newer than the device's own: only a fresh message 1 made with the device's key
         * displaces a pending session (a replayed one is refused, protocol 3.5). */
        int n = own_hs1(d, port_timestamp(NULL), f, sizeof f);

        if (n > 0) {
                send_modified(d, f, (size_t)n);
                event(d, "displace");
        }
}

static void dev_start(struct sim_dev *d, uint64_t now)
{
        struct mcugw_device_config cfg = { 0 };
        static uint8_t wrong_gw[32];
        static bool wrong_gw_init;

        d->fd = connect_target(d);
        if (d->fd < 0) {
                d->reconnect_ms = now + 500;
                return;
        }
        if (!wrong_gw_init) {
                RAND_bytes(wrong_gw, sizeof wrong_gw);
                wrong_gw_init = true;
        }
        cfg.port.ctx = d;
        cfg.port.send = port_send;
        cfg.port.recv = NULL;
        cfg.port.now_ms = port_now;
        cfg.port.timestamp = port_timestamp;
        cfg.port.crypto = &mcugw_crypto_openssl;
        cfg.keys.static_priv = d->priv;
        cfg.keys.gateway_pub = opt.bad == BAD_WRONG_GATEWAY_KEY ? wrong_gw : opt.gw_pub;
        cfg.keys.device_id = d->id;
        cfg.keys.attest = d->attest_len ? d->attest : NULL;
        cfg.keys.attest_len = d->attest_len;
        cfg.cb.user = d;
        cfg.cb.on_state = on_state;
        cfg.cb.on_ack = on_ack;
        cfg.cb.on_command = on_command;
        cfg.cb.on_config = on_config;
        cfg.cb.on_message = on_message;
        cfg.rx_buf = d->rx;
        cfg.rx_cap = opt.rx_frame ? MCUGW_DEVICE_RX_BUF(opt.rx_frame) : sizeof d->rx;
        cfg.tx_buf = d->tx;
        cfg.tx_cap = sizeof d->tx;
        cfg.liveness_ms = opt.liveness_ms;
        d->outq_len = 0;
        d->acc_len = 0;
        d->baud_last_ms = now;
        d->baud_tokens = 0;
        d->slow_next_ms = now;
        if (mcugw_device_init(&d->dev, &cfg) < 0)
                die("device %s: bad configuration", d->id);
        /* A leading delimiter, as the spec recommends after (re)opening a line. */
        outq_put(d, (const uint8_t *)"", 1);
        /* A line lost and opened again is a reconnect too, with its own reason. */
        mcugw_device_reconnect(&d->dev, d->disconnects ? MCUGW_LINK_LINE : MCUGW_LINK_FIRST);
        if (opt.bad == BAD_FLOOD) {
                /* Many distinct messages 1 at once: each would cost the gateway 5 X25519s. */
                uint8_t f[256];
                for (int i = 0; i < FLOOD_HS1; i++) {
                        int n = own_hs1(d, 0, f, sizeof f);
                        if (n > 0)
                                send_modified(d, f, (size_t)n);
                }
        }
}

static void dev_drop(struct sim_dev *d, uint64_t now)
{
        if (d->fd >= 0)
                close(d->fd);
        d->fd = -1;
        if (d->state == MCUGW_DEV_CONNECTED) {
                d->down_ms = now;
                event(d, "down line");
        }
        d->state = MCUGW_DEV_IDLE;
        d->disconnects++;
        d->reconnect_ms = now + opt.reconnect_ms;
}

/* ---- statistics -------------------------------------------------------------------------- */

static void print_stats(void)
{
        uint64_t sent = 0, acked = 0, nacked = 0, corrupted = 0, errors = 0, disc = 0, hs = 0;
        uint64_t injected = 0, ota_confirmed = 0, ota_failed = 0, ota_over_window = 0, commands = 0,
                 lost = 0, configs = 0;
        uint64_t reasons[MCUGW_LINK_REASON_MAX + 1] = { 0 }, reconnects = 0;
        char rbuf[256];
        size_t rlen = 0;
        unsigned connected = 0, ever = 0;
        double hs_sum = 0, hs_max = 0, el = (double)(now_monotonic_msec() - t0_ms) / 1000.0;

        if (opt.ack_log)
                fflush(opt.ack_log);
        for (unsigned i = 0; i < opt.count; i++) {
                struct sim_dev *d = &devs[i];
                sent += d->sent;
                acked += d->acked;
                nacked += d->nacked;
                corrupted += d->corrupted;
                injected += d->injected;
                errors += d->send_errors;
                disc += d->disconnects;
                hs += d->handshakes;
                commands += d->commands;
                configs += d->configs;
                lost += d->lost;
                for (unsigned k = 0; k <= MCUGW_LINK_REASON_MAX; k++) {
                        reasons[k] += d->reasons[k];
                        reconnects += k != MCUGW_LINK_FIRST ? d->reasons[k] : 0;
                }
                ota_confirmed += d->ota_confirmed;
                ota_failed += d->ota_failed;
                ota_over_window += d->ota_over_window;
                connected += d->state == MCUGW_DEV_CONNECTED && d->fd >= 0;
                if (d->connected_once) {
                        double t = (double)(d->connected_ms - d->started_ms);
                        ever++;
                        hs_sum += t;
                        if (t > hs_max)
                                hs_max = t;
                }
        }
        rbuf[0] = 0;
        for (unsigned k = 1; k <= MCUGW_LINK_REASON_MAX; k++)
                rlen += (size_t)snprintf(rbuf + rlen, sizeof rbuf - rlen, "%s\"%s\": %llu",
                                         k > 1 ? ", " : "", mcugw_link_reason_str(k),
                                         (unsigned long long)reasons[k]);
        printf("{\"reconnects\": %llu, \"reconnect_reasons\": {%s}, \"lost\": %llu, ",
               (unsigned long long)reconnects, rbuf, (unsigned long long)lost);
        printf("\"devices\": %u, \"connected\": %u, \"authenticated\": %u, \"handshakes\": %llu, "
               "\"sent\": %llu, \"acked\": %llu, \"nacked\": %llu, \"corrupted\": %llu, "
               "\"injected\": %llu, "
               "\"errors\": %llu, \"disconnects\": %llu, \"handshake_ms_avg\": %.1f, "
               "\"handshake_ms_max\": %.1f, \"elapsed_s\": %.3f, \"acked_per_s\": %.1f, "
               "\"ota_confirmed\": %llu, \"ota_failed\": %llu, \"ota_over_window\": %llu, "
               "\"commands\": %llu, "
               "\"configs\": %llu, "
               "\"fw_version\": \"%s\"}\n",
               opt.count, connected, ever, (unsigned long long)hs, (unsigned long long)sent,
               (unsigned long long)acked, (unsigned long long)nacked, (unsigned long long)corrupted,
               (unsigned long long)injected, (unsigned long long)errors, (unsigned long long)disc,
               ever ? hs_sum / ever : 0.0, hs_max, el, el > 0 ? (double)acked / el : 0.0,
               (unsigned long long)ota_confirmed, (unsigned long long)ota_failed,
               (unsigned long long)ota_over_window, (unsigned long long)commands,
               (unsigned long long)configs,
               opt.count && devs[0].fw[0] ? devs[0].fw
                                          : (opt.fw_version ? opt.fw_version : "sim-1.0.0"));
        fflush(stdout);
}

/* ---- main loop --------------------------------------------------------------------------- */

static bool dev_finished(struct sim_dev *d)
{
        if (!opt.messages)
                return false;
        if (d->ota_on &&
            (d->reboot_at_ms || d->self_test_at_ms || d->ota.state == MCUGW_OTA_ST_RECEIVING ||
             d->ota.state == MCUGW_OTA_ST_VERIFIED || d->ota.state == MCUGW_OTA_ST_TESTING))
                return false; /* an update is under way */
        return d->sent >= opt.messages && inflight(d) == 0;
}

static int run(void)
{
        struct pollfd *pfd = calloc(opt.count, sizeof *pfd);
        uint8_t payload[MCUGW_MSG_MAX], buf[4096];
        uint64_t now = now_monotonic_msec(), deadline, linger_until = 0;
        double interval = opt.rate > 0 ? 1000.0 / opt.rate : 0;
        bool started = false;

        if (!pfd)
                die("out of memory");
        /* One descriptor per device, and a few of our own. */
        if (rlimit_nofile_raise((uint64_t)opt.count + 64) < (int64_t)opt.count + 64)
                fprintf(stderr, "mcugw-sim: warning: the limit on open files is below %u devices\n",
                        opt.count);
        deadline = opt.duration > 0 ? now + (uint64_t)(opt.duration * 1000) : UINT64_MAX;
        memset(payload, 'x', sizeof payload);
        for (unsigned i = 0; i < opt.count; i++) {
                devs[i].started_ms = now;
                dev_start(&devs[i], now);
        }
        while (!stop_requested) {
                bool all_done = true, held = false;
                int timeout = 5;
                now = now_monotonic_msec();
                if (now >= deadline)
                        break;
                if (opt.sync_start && !started) {
                        unsigned up = 0;
                        for (unsigned i = 0; i < opt.count; i++)
                                up += devs[i].state == MCUGW_DEV_CONNECTED;
                        held = up < opt.count;
                        if (!held) {
                                started = true;
                                fprintf(stderr, "mcugw-sim: all %u devices connected\n", opt.count);
                        }
                }
                for (unsigned i = 0; i < opt.count; i++) {
                        struct sim_dev *d = &devs[i];
                        if (d->fd < 0) {
                                if (now >= d->reconnect_ms)
                                        dev_start(d, now);
                                pfd[i] = (struct pollfd){ .fd = -1 };
                                all_done = false;
                                continue;
                        }
                        mcugw_device_tick(&d->dev);
                        sim_ota_tick(d, now);
                        /* Independent MCUs are not in step: with --stagger device i starts i/count
                         * of an interval after the first, so that the rate arrives evenly. */
                        if (opt.stagger && !d->next_send_ms && interval > 0 &&
                            d->state == MCUGW_DEV_CONNECTED && !held)
                                d->next_send_ms = now + 1 + (uint64_t)(interval * i / opt.count);
                        while (d->state == MCUGW_DEV_CONNECTED && opt.bad != BAD_SLOWLORIS &&
                               !held && (!opt.messages || d->sent < opt.messages) &&
                               now >= d->next_send_ms && inflight(d) < opt.window &&
                               d->outq_len < OUTQ_CAP / 2) {
                                size_t sz = MIN_SZ(opt.size, mcugw_device_max_payload(&d->dev));
                                d->sabotaged = false;
                                if (opt.timestamps) {
                                        char ts[64];
                                        struct timespec rt;
                                        int n;
                                        clock_gettime(CLOCK_REALTIME, &rt);
                                        n = snprintf(ts, sizeof ts, "seq=%u;ts=%llu;", d->seq + 1,
                                                     (unsigned long long)rt.tv_sec * 1000000000ULL +
                                                             (unsigned long long)rt.tv_nsec);
                                        memcpy(payload, ts, MIN_SZ((size_t)n, sz));
                                }
                                if (mcugw_device_send_telemetry(&d->dev, 1, ++d->seq,
                                                                MCUGW_TLM_ACK_REQUESTED, payload,
                                                                sz) == 0)
                                        d->sent++;
                                else
                                        d->send_errors++;
                                if (d->next_send_ms == 0)
                                        d->next_send_ms = now;
                                d->next_send_ms += (uint64_t)interval;
                                if (d->next_send_ms < now && interval > 0 &&
                                    now - d->next_send_ms > 1000)
                                        d->next_send_ms = now;
                                if (!opt.fill_window || interval > 0 || d->fd < 0 || d->send_errors)
                                        break;
                        }
                        flush_out(d, now);
                        /* Wake for the next send that is due, not up to 5 ms late. */
                        if (d->state == MCUGW_DEV_CONNECTED && interval > 0 &&
                            d->next_send_ms > now)
                                timeout = (int)MIN_SZ((size_t)timeout, d->next_send_ms - now);
                        if (!dev_finished(d))
                                all_done = false;
                        pfd[i] = (struct pollfd){ .fd = d->fd,
                                                  .events = POLLIN | (d->outq_len ? POLLOUT : 0) };
                }
                if (all_done && opt.bad == BAD_NONE) {
                        if (!linger_until)
                                linger_until = now + (uint64_t)(opt.linger * 1000);
                        if (now >= linger_until)
                                break;
                }
                if (poll(pfd, opt.count, timeout) < 0 && errno != EINTR)
                        die("poll: %s", strerror(errno));
                now = now_monotonic_msec();
                for (unsigned i = 0; i < opt.count; i++) {
                        struct sim_dev *d = &devs[i];
                        if (pfd[i].fd < 0 || !pfd[i].revents)
                                continue;
                        if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                                size_t cap = sizeof buf;
                                ssize_t k;
                                if (opt.baud) {
                                        /* A serial line carries baud/10 bytes/s both ways. */
                                        d->rx_tokens +=
                                                (double)(now - d->rx_last_ms) * opt.baud / 10000.0;
                                        if (d->rx_tokens > opt.baud / 100.0 + 64)
                                                d->rx_tokens = opt.baud / 100.0 + 64;
                                        d->rx_last_ms = now;
                                        cap = MIN_SZ(cap, (size_t)MAX(d->rx_tokens, 0.0));
                                        if (cap == 0)
                                                continue;
                                }
                                k = read(d->fd, buf, cap);
                                if (opt.baud && k > 0)
                                        d->rx_tokens -= (double)k;
                                if (k > 0)
                                        mcugw_device_input(&d->dev, buf, (size_t)k);
                                else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                                        dev_drop(d, now);
                        }
                        if (d->fd >= 0 && (pfd[i].revents & POLLOUT))
                                flush_out(d, now);
                }
        }
        free(pfd);
        print_stats();
        return 0;
}

/* ---- options ----------------------------------------------------------------------------- */

static void add_target(const char *spec)
{
        size_t len;
        struct target *t;

        if (!spec)
                die("--connect needs an argument");
        len = strlen(spec);
        if (n_targets >= sizeof targets / sizeof targets[0])
                die("too many --connect targets");
        t = &targets[n_targets++];
        snprintf(t->spec, sizeof t->spec, "%s", spec);
        if (strncmp(spec, "unix:", 5) == 0 && len - 5 < sizeof t->path) {
                t->kind = 'u';
                memcpy(t->path, spec + 5, len - 5 + 1);
        } else if (strncmp(spec, "pty:", 4) == 0 && len - 4 < sizeof t->path) {
                t->kind = 'p';
                memcpy(t->path, spec + 4, len - 4 + 1);
        } else if (strncmp(spec, "tcp:", 4) == 0) {
                const char *c = strrchr(spec + 4, ':');
                if (!c || (size_t)(c - spec - 4) >= sizeof t->host ||
                    strlen(c + 1) >= sizeof t->port)
                        die("bad --connect %s (tcp:HOST:PORT)", spec);
                t->kind = 't';
                memcpy(t->host, spec + 4, (size_t)(c - spec - 4));
                strcpy(t->port, c + 1);
        } else
                die("bad --connect %s (unix:PATH, tcp:HOST:PORT or pty:PATH)", spec);
}

static void read_gateway_key(const char *arg)
{
        char buf[256] = "";
        if (arg[0] == '@') {
                FILE *f = fopen(arg + 1, "re");
                if (!f || !fgets(buf, sizeof buf, f))
                        die("cannot read the gateway key from %s", arg + 1);
                fclose(f);
                arg = buf;
        }
        if (unb64(arg, opt.gw_pub) < 0)
                die("--gateway-key: expected 44 characters of base64");
        opt.have_gw = true;
}

static void write_enroll_file(void)
{
        FILE *f = fopen(opt.enroll_file, "we");
        if (!f)
                die("cannot write %s: %s", opt.enroll_file, strerror(errno));
        fprintf(f, "# mcugw-sim devices, seed %s\n", opt.seed);
        for (unsigned i = 0; i < opt.count; i++) {
                char k[45];
                key_to_base64(devs[i].pub, k);
                fprintf(f, "[Device]\nId=%s\nPublicKey=%s\nState=active\n\n", devs[i].id, k);
        }
        if (fclose(f) != 0)
                die("cannot write %s", opt.enroll_file);
}

static void usage(void)
{
        printf("Usage: mcugw-sim keys --count N [--seed S] [--id-prefix P] [--json]"
               " [--enroll-file PATH]\n"
               "       mcugw-sim run --connect unix:PATH|tcp:HOST:PORT|pty:PATH [...]"
               " --gateway-key KEY|@FILE [options]\n\n"
               "  -n, --count N          devices (default: 1, or one per pty target)\n"
               "      --first-index K    index of the first device (default 0)\n"
               "      --seed S           key derivation seed (default mcugw)\n"
               "      --id-prefix P      device ids are P0000, P0001, ... (default sim-)\n"
               "      --rate R           telemetry messages per second per device (default 10)\n"
               "      --size B           telemetry payload bytes (default 16)\n"
               "      --messages M       messages per device, 0 = until --duration (default 10)\n"
               "      --duration S       stop after S seconds\n"
               "      --linger S         stay connected S seconds after the last ack\n"
               "      --reconnect-delay MS  wait this long after a lost connection (default 1000)\n"
               "      --window W         unacknowledged messages per device (default 32)\n"
               "      --ack-log PATH     write \"DEVICE STREAM SEQ STATUS\" for every ack\n"
               "                         (status 0: OK, the message is durable in the gateway)\n"
               "      --event-log PATH   write \"MONOTONIC_MS DEVICE EVENT ...\" lines: up "
               "REASON,\n"
               "                         down REASON, ack STREAM SEQ STATUS, displace\n"
               "      --liveness-ms MS   the SDK's ACK/PONG timeout (default 2000)\n"
               "      --rx-frame N       the devices' receive limit, 96..1024 (default 1024)\n"
               "      --displace N       displace our own first N pending sessions with a fresh\n"
               "                         message 1 (as an attacker on the line could)\n"
               "      --timestamps       payload starts \"seq=N;ts=NANOS;\" (CLOCK_REALTIME at "
               "send)\n"
               "      --sync-start       send no telemetry until every device is connected\n"
               "      --stagger          spread the devices' sends over the interval (not in "
               "step)\n"
               "      --fill-window      with --rate 0: refill the whole ack window each turn\n"
               "      --baud N           limit each device's line to N baud (8N1), both ways\n"
               "      --ota-dir DIR      accept OTA updates; the flash slots are files in DIR\n"
               "      --ota-cert PEM     the device checks image signatures with this key too\n"
               "      --ota-fail-self-test  the new image fails its self-test (reverts)\n"
               "      --ota-window BYTES OTA bytes in flight the device accepts (16384)\n"
               "      --ota-ack-delay MS hold each OTA chunk ack back (a busy MCU)\n"
               "      --fw-version V     firmware version reported (default sim-1.0.0)\n"
               "      --config-refuse KEY  refuse this setting of a CONFIG (repeatable)\n"
               "      --every K          misbehave on every K-th data frame (default 5)\n"
               "      --wrong-key --unknown --wrong-gateway-key --replay --bitflip --garbage\n"
               "      --truncate --flood --slowloris --replay-old   misbehave on purpose\n"
               "      --json             (keys) print JSON\n"
               "      --enroll-file PATH write a devices.d enrollment file for the devices\n"
               "      --key-file PATH    one device with this private key (mcugwctl keygen)\n"
               "      --id ID            its device id\n"
               "      --attest-key PEM --attest-key-id ID\n"
               "                         present a manufacturer attestation signed with this\n"
               "                         EC P-256 key (just-in-time onboarding)\n");
}

int main(int argc, char **argv)
{
        enum {
                O_SEED = 0x100,
                O_PREFIX,
                O_RATE,
                O_SIZE,
                O_MESSAGES,
                O_DURATION,
                O_BAUD,
                O_WINDOW,
                O_EVERY,
                O_JSON,
                O_ENROLL,
                O_GWKEY,
                O_FIRST,
                O_LINGER,
                O_RECONNECT,
                O_OTA_DIR,
                O_OTA_FAIL,
                O_FW_VERSION,
                O_OTA_CERT,
                O_OTA_WINDOW,
                O_OTA_ACK_DELAY,
                O_KEYFILE,
                O_ID,
                O_ATTEST_KEY,
                O_ATTEST_KID,
                O_ACK_LOG,
                O_EVENT_LOG,
                O_DISPLACE,
                O_LIVENESS,
                O_RX_FRAME,
                O_TIMESTAMPS,
                O_SYNC_START,
                O_STAGGER,
                O_FILL_WINDOW,
                O_CONFIG_REFUSE,
                O_BAD
        };
        static const struct option opts[] = {
                { "count", required_argument, NULL, 'n' },
                { "connect", required_argument, NULL, 'c' },
                { "seed", required_argument, NULL, O_SEED },
                { "id-prefix", required_argument, NULL, O_PREFIX },
                { "rate", required_argument, NULL, O_RATE },
                { "size", required_argument, NULL, O_SIZE },
                { "messages", required_argument, NULL, O_MESSAGES },
                { "duration", required_argument, NULL, O_DURATION },
                { "linger", required_argument, NULL, O_LINGER },
                { "reconnect-delay", required_argument, NULL, O_RECONNECT },
                { "ota-dir", required_argument, NULL, O_OTA_DIR },
                { "ota-fail-self-test", no_argument, NULL, O_OTA_FAIL },
                { "fw-version", required_argument, NULL, O_FW_VERSION },
                { "config-refuse", required_argument, NULL, O_CONFIG_REFUSE },
                { "ota-cert", required_argument, NULL, O_OTA_CERT },
                { "ota-window", required_argument, NULL, O_OTA_WINDOW },
                { "ota-ack-delay", required_argument, NULL, O_OTA_ACK_DELAY },
                { "baud", required_argument, NULL, O_BAUD },
                { "window", required_argument, NULL, O_WINDOW },
                { "every", required_argument, NULL, O_EVERY },
                { "json", no_argument, NULL, O_JSON },
                { "enroll-file", required_argument, NULL, O_ENROLL },
                { "gateway-key", required_argument, NULL, O_GWKEY },
                { "first-index", required_argument, NULL, O_FIRST },
                { "key-file", required_argument, NULL, O_KEYFILE },
                { "id", required_argument, NULL, O_ID },
                { "attest-key", required_argument, NULL, O_ATTEST_KEY },
                { "attest-key-id", required_argument, NULL, O_ATTEST_KID },
                { "ack-log", required_argument, NULL, O_ACK_LOG },
                { "event-log", required_argument, NULL, O_EVENT_LOG },
                { "displace", required_argument, NULL, O_DISPLACE },
                { "liveness-ms", required_argument, NULL, O_LIVENESS },
                { "rx-frame", required_argument, NULL, O_RX_FRAME },
                { "replay-old", no_argument, NULL, O_BAD + BAD_REPLAY_OLD },
                { "timestamps", no_argument, NULL, O_TIMESTAMPS },
                { "sync-start", no_argument, NULL, O_SYNC_START },
                { "stagger", no_argument, NULL, O_STAGGER },
                { "fill-window", no_argument, NULL, O_FILL_WINDOW },
                { "wrong-key", no_argument, NULL, O_BAD + BAD_WRONG_KEY },
                { "unknown", no_argument, NULL, O_BAD + BAD_UNKNOWN },
                { "wrong-gateway-key", no_argument, NULL, O_BAD + BAD_WRONG_GATEWAY_KEY },
                { "replay", no_argument, NULL, O_BAD + BAD_REPLAY },
                { "bitflip", no_argument, NULL, O_BAD + BAD_BITFLIP },
                { "garbage", no_argument, NULL, O_BAD + BAD_GARBAGE },
                { "truncate", no_argument, NULL, O_BAD + BAD_TRUNCATE },
                { "flood", no_argument, NULL, O_BAD + BAD_FLOOD },
                { "slowloris", no_argument, NULL, O_BAD + BAD_SLOWLORIS },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *mode;
        unsigned ptys = 0;
        int c;

        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                usage();
                return argc < 2;
        }
        mode = argv[1];
        if (strcmp(mode, "keys") != 0 && strcmp(mode, "run") != 0)
                die("unknown mode '%s' (keys or run)", mode);
        optind = 2;
        while ((c = getopt_long(argc, argv, "n:c:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'n': opt.count = (unsigned)strtoul(optarg, NULL, 10); break;
                case 'c': add_target(optarg); break;
                case O_SEED: opt.seed = optarg; break;
                case O_PREFIX: opt.id_prefix = optarg; break;
                case O_RATE: opt.rate = strtod(optarg, NULL); break;
                case O_SIZE: opt.size = strtoul(optarg, NULL, 10); break;
                case O_MESSAGES: opt.messages = strtoull(optarg, NULL, 10); break;
                case O_DURATION: opt.duration = strtod(optarg, NULL); break;
                case O_LINGER: opt.linger = strtod(optarg, NULL); break;
                case O_RECONNECT: opt.reconnect_ms = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_OTA_DIR: opt.ota_dir = optarg; break;
                case O_OTA_FAIL: opt.ota_fail_self_test = true; break;
                case O_OTA_WINDOW: opt.ota_window = (uint32_t)strtoul(optarg, NULL, 10); break;
                case O_OTA_ACK_DELAY:
                        opt.ota_ack_delay = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case O_FW_VERSION: opt.fw_version = optarg; break;
                case O_CONFIG_REFUSE:
                        if (opt.n_config_refuse ==
                            sizeof opt.config_refuse / sizeof opt.config_refuse[0])
                                die("too many --config-refuse");
                        opt.config_refuse[opt.n_config_refuse++] = optarg;
                        break;
                case O_OTA_CERT: read_ota_cert(optarg); break;
                case O_BAUD: opt.baud = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_WINDOW: opt.window = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_EVERY: opt.every = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_JSON: opt.json = true; break;
                case O_ENROLL: opt.enroll_file = optarg; break;
                case O_GWKEY: read_gateway_key(optarg); break;
                case O_FIRST: opt.first_index = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_KEYFILE: opt.key_file = optarg; break;
                case O_ID: opt.id = optarg; break;
                case O_ATTEST_KEY: {
                        char err[512];
                        if (cred_load_private_key(optarg, NULL, &opt.attest_key, err, sizeof err) <
                            0)
                                die("--attest-key: %s", err);
                        break;
                }
                case O_ATTEST_KID: opt.attest_key_id = optarg; break;
                case O_ACK_LOG:
                        if (!(opt.ack_log = fopen(optarg, "we")))
                                die("--ack-log %s: %s", optarg, strerror(errno));
                        setvbuf(opt.ack_log, NULL, _IOLBF, 0);
                        break;
                case O_EVENT_LOG:
                        if (!(opt.event_log = fopen(optarg, "we")))
                                die("--event-log %s: %s", optarg, strerror(errno));
                        setvbuf(opt.event_log, NULL, _IOLBF, 0);
                        break;
                case O_DISPLACE: opt.displace = (unsigned)strtoul(optarg, NULL, 10); break;
                case O_LIVENESS: opt.liveness_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
                case O_RX_FRAME:
                        opt.rx_frame = (unsigned)strtoul(optarg, NULL, 10);
                        if (opt.rx_frame < MCUGW_FRAME_MIN || opt.rx_frame > MCUGW_FRAME_MAX)
                                die("--rx-frame: %u..%u", MCUGW_FRAME_MIN, MCUGW_FRAME_MAX);
                        break;
                case O_TIMESTAMPS: opt.timestamps = true; break;
                case O_SYNC_START: opt.sync_start = true; break;
                case O_STAGGER: opt.stagger = true; break;
                case O_FILL_WINDOW: opt.fill_window = true; break;
                case 'h': usage(); return 0;
                default:
                        if (c > O_BAD && c <= O_BAD + BAD_REPLAY_OLD) {
                                opt.bad = (enum misbehave)(c - O_BAD);
                                break;
                        }
                        return 1;
                }
        }
        if (opt.every < 1)
                opt.every = 1;
        if (opt.window < 1)
                opt.window = 1;
        for (unsigned i = 0; i < n_targets; i++)
                ptys += targets[i].kind == 'p';
        if (!opt.count)
                opt.count = ptys && ptys == n_targets ? ptys : 1;
        if (opt.count > 100000)
                die("--count too large");
        if (strlen(opt.id_prefix) + 6 > MCUGW_DEVICE_ID_MAX)
                die("--id-prefix too long");
        if (opt.bad == BAD_UNKNOWN)
                opt.id_prefix = "unknown-";

        devs = calloc(opt.count, sizeof *devs);
        if (!devs)
                die("out of memory");
        for (unsigned i = 0; i < opt.count; i++) {
                struct sim_dev *d = &devs[i];
                d->index = opt.first_index + i;
                d->fd = d->slave_fd = -1;
                make_id(d->index, d->id, sizeof d->id);
                if (opt.bad == BAD_WRONG_KEY || opt.bad == BAD_UNKNOWN) {
                        RAND_bytes(d->priv, 32);
                        mcugw_crypto_openssl.x25519_public(NULL, d->pub, d->priv);
                } else
                        derive_key(opt.seed, d->index, d->priv, d->pub);
                d->ota_fd = -1;
                d->displace_left = opt.displace;
                snprintf(d->fw, sizeof d->fw, "%s", opt.fw_version ? opt.fw_version : "sim-1.0.0");
                if (opt.ota_dir)
                        sim_ota_init(d);
        }
        if (opt.key_file) {
                char buf[256] = "";
                FILE *f;
                if (opt.count != 1 || !opt.id)
                        die("--key-file is for one device: give --id and no --count > 1");
                if (strlen(opt.id) > MCUGW_DEVICE_ID_MAX)
                        die("--id: at most %u characters", MCUGW_DEVICE_ID_MAX);
                f = fopen(opt.key_file, "re");
                if (!f || !fgets(buf, sizeof buf, f) || unb64(buf, devs[0].priv) < 0)
                        die("cannot read a base64 private key from %s", opt.key_file);
                fclose(f);
                OPENSSL_cleanse(buf, sizeof buf);
                mcugw_crypto_openssl.x25519_public(NULL, devs[0].pub, devs[0].priv);
                snprintf(devs[0].id, sizeof devs[0].id, "%s", opt.id);
        } else if (opt.id) {
                die("--id needs --key-file");
        }
        if (opt.attest_key) {
                if (!opt.attest_key_id)
                        die("--attest-key needs --attest-key-id");
                for (unsigned i = 0; i < opt.count; i++) {
                        int n = onboard_attest_sign(opt.attest_key, opt.attest_key_id, devs[i].id,
                                                    devs[i].pub, devs[i].attest,
                                                    sizeof devs[i].attest);
                        if (n < 0)
                                die("cannot sign the attestation of %s", devs[i].id);
                        devs[i].attest_len = (uint16_t)n;
                }
                EVP_PKEY_free(opt.attest_key);
        }
        if (opt.enroll_file)
                write_enroll_file();

        if (strcmp(mode, "keys") == 0) {
                for (unsigned i = 0; i < opt.count; i++) {
                        char k[45];
                        key_to_base64(devs[i].pub, k);
                        if (opt.json)
                                printf("%s{\"id\": \"%s\", \"public_key\": \"%s\"}%s",
                                       i ? "  " : "[\n  ", devs[i].id, k,
                                       i + 1 < opt.count ? ",\n" : "\n]\n");
                        else
                                printf("%s %s\n", devs[i].id, k);
                }
                free(devs);
                return 0;
        }

        if (!n_targets)
                die("run: at least one --connect is needed");
        if (!opt.have_gw)
                die("run: --gateway-key is needed (mcugwctl status shows link.public_key)");
        for (unsigned i = 0; i < opt.count; i++) {
                devs[i].t = &targets[i % n_targets];
                if (++devs[i].t->users > 1 && devs[i].t->kind == 'p')
                        die("a pty carries one device: give one --connect pty:PATH per device");
        }
        signal(SIGPIPE, SIG_IGN);
        {
                struct sigaction sa = { .sa_handler = on_signal };
                sigaction(SIGINT, &sa, NULL);
                sigaction(SIGTERM, &sa, NULL);
        }
        t0_ms = now_monotonic_msec();
        c = run();
        for (unsigned i = 0; i < opt.count; i++) {
                struct sim_dev *d = &devs[i];
                if (d->fd >= 0)
                        close(d->fd);
                if (d->slave_fd >= 0) {
                        close(d->slave_fd);
                        /* Unplugged: the line is gone until a new sim creates it. */
                        unlink(d->t->path);
                }
        }
        free(devs);
        return c;
}
