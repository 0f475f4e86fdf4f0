/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libmcugw-device: the OTA receiver (docs/protocol.md section 12).
 *
 *   idle --OFFER + OFFER_MORE--> RECEIVING --last byte, hash + signature ok--> VERIFIED --reboot-->
 *   TESTING --self-test ok--> CONFIRMED            (any failure: FAILED, old image stays)
 *
 * Chunks are written strictly in order through the flash port; a chunk that does not start at
 * the current offset is a gap (lost frame) and gets one RESYNC ack until the right one comes.
 * No malloc; the state is a few words plus the signature.
 */
#include <string.h>

#include "mcugw/ota.h"

/* Internal state between an OFFER and its last OFFER_MORE piece; never on the wire. */
#define OTA_OFFERED 0x40u

static int send_ota(struct mcugw_ota *o, const struct mcugw_ota_msg *m)
{
        uint8_t buf[MCUGW_OTA_ACK_LEN + 64];
        struct mcugw_msg msg;
        int n = mcugw_ota_encode_reply(m, buf, sizeof buf);

        if (n < 0)
                return n;
        mcugw_ota_wrap(&msg, buf, (size_t)n);
        return o->cfg.send(o->cfg.send_ctx, &msg);
}

static int send_ack(struct mcugw_ota *o, uint32_t id, uint8_t status)
{
        struct mcugw_ota_msg m;

        m.type = MCUGW_MSG_OTA_CHUNK_ACK;
        m.u.ack.transfer_id = id;
        m.u.ack.offset = o->offset;
        m.u.ack.window = o->cfg.window;
        m.u.ack.max_chunk = o->cfg.max_chunk;
        m.u.ack.status = status;
        if (status == MCUGW_OTA_ACK_OK)
                o->acked = o->offset;
        return send_ota(o, &m);
}

/* Only the application's self-test reason goes out as text: the code says the rest, and the
 * gateway words it (the texts would be ~300 bytes of firmware). */
static int send_status(struct mcugw_ota *o, uint32_t id, uint8_t state, uint16_t code,
                       const char *reason)
{
        struct mcugw_ota_msg m;

        m.type = MCUGW_MSG_OTA_STATUS;
        m.u.status.transfer_id = id;
        m.u.status.state = state;
        m.u.status.code = code;
        m.u.status.offset = o->offset;
        m.u.status.reason = reason;
        m.u.status.reason_len = reason ? strlen(reason) : 0;
        if (m.u.status.reason_len > MCUGW_OTA_REASON_MAX)
                m.u.status.reason_len = MCUGW_OTA_REASON_MAX;
        return send_ota(o, &m);
}

/* An offer that cannot be taken: CHUNK_ACK REFUSED, then the STATUS that says why. */
static int reject(struct mcugw_ota *o, uint16_t code)
{
        o->state = MCUGW_OTA_ST_REJECTED;
        (void)send_ack(o, o->transfer_id, MCUGW_OTA_ACK_REFUSED);
        return send_status(o, o->transfer_id, MCUGW_OTA_ST_REJECTED, code, NULL);
}

static int fail(struct mcugw_ota *o, uint16_t code, const char *reason)
{
        o->state = MCUGW_OTA_ST_FAILED;
        return send_status(o, o->transfer_id, MCUGW_OTA_ST_FAILED, code, reason);
}

int mcugw_ota_init(struct mcugw_ota *o, const struct mcugw_ota_config *cfg)
{
        if (!o || !cfg || !cfg->send || !cfg->flash.begin || !cfg->flash.write ||
            !cfg->flash.finish || !cfg->flash.set_pending || !cfg->flash.confirm ||
            !cfg->max_size || !cfg->max_chunk || cfg->window < cfg->max_chunk)
                return MCUGW_EINVAL;
        /* Reading back needs the streaming hash. */
        if (cfg->flash.read && (!cfg->crypto || !cfg->crypto->sha256_init ||
                                !cfg->crypto->sha256_update || !cfg->crypto->sha256_final))
                return MCUGW_EINVAL;
        memset(o, 0, sizeof *o);
        o->cfg = *cfg;
        return 0;
}

static int on_offer(struct mcugw_ota *o, const struct mcugw_ota_offer *f)
{
        if (f->transfer_id == o->transfer_id && o->state) {
                switch (o->state) {
                case MCUGW_OTA_ST_RECEIVING:
                        if (f->size == o->size && memcmp(f->sha256, o->sha256, 32) == 0) {
                                o->resync_sent = 0;
                                return send_ack(o, f->transfer_id, MCUGW_OTA_ACK_OK); /* resume */
                        }
                        break; /* same id, other image: start over */
                case MCUGW_OTA_ST_VERIFIED:
                case MCUGW_OTA_ST_TESTING:
                case MCUGW_OTA_ST_CONFIRMED:
                        return send_status(o, f->transfer_id, o->state, 0, NULL);
                default: break; /* failed/aborted/rejected: a new attempt */
                }
        } else if (o->state == MCUGW_OTA_ST_VERIFIED || o->state == MCUGW_OTA_ST_TESTING) {
                /* Waiting for the reboot or the self-test of another image. */
                return send_ack(o, f->transfer_id, MCUGW_OTA_ACK_BUSY);
        }
        o->transfer_id = f->transfer_id;
        o->offset = 0;
        o->acked = 0;
        o->resync_sent = 0;
        if (f->size > o->cfg.max_size)
                return reject(o, MCUGW_OTA_E_TOO_BIG);
        /* Wait for version || sig (OFFER_MORE) before touching the flash. */
        o->size = f->size;
        memcpy(o->sha256, f->sha256, 32);
        o->sig_len = (uint8_t)f->sig_len;
        o->version_len = (uint8_t)f->version_len;
        o->meta_got = 0;
        o->state = OTA_OFFERED;
        return 0;
}

/* A piece of version || sig. Pieces are taken in order only: after a lost one the rest are
 * ignored until the gateway repeats the OFFER (it does when no ack comes). */
static int on_more(struct mcugw_ota *o, const struct mcugw_ota_more *m)
{
        size_t total = (size_t)o->version_len + o->sig_len, i;
        int r;

        if (o->state != OTA_OFFERED || m->transfer_id != o->transfer_id)
                return 0; /* e.g. after a resume probe, which needs no signature */
        if (m->offset != o->meta_got)
                return 0;
        if (m->offset + m->len > total)
                return MCUGW_EMALFORMED;
        for (i = 0; i < m->len; i++) {
                size_t at = m->offset + i;
                /* The version is for people; only the signature is kept. */
                if (at >= o->version_len)
                        o->sig[at - o->version_len] = m->data[i];
        }
        o->meta_got = (uint8_t)(m->offset + m->len);
        if (o->meta_got < total)
                return 0;
        r = o->cfg.flash.begin(o->cfg.flash.ctx, o->size);
        if (r < 0)
                return reject(o, MCUGW_OTA_E_FLASH_BEGIN);
        o->state = MCUGW_OTA_ST_RECEIVING;
        return send_ack(o, o->transfer_id, MCUGW_OTA_ACK_OK);
}

/* Kept out of complete(): its ~400 bytes of stack are then free again before the signature
 * check, the deepest call of the receiver. */
#if defined(__GNUC__)
#define OTA_NOINLINE __attribute__((noinline))
#else
#define OTA_NOINLINE
#endif

/* The SHA-256 of the stored image, from finish or by reading it back in small pieces (the
 * hash state is on the stack only now, not in struct mcugw_ota). */
static OTA_NOINLINE int stored_digest(struct mcugw_ota *o, uint8_t digest[32])
{
        const struct mcugw_crypto *c = o->cfg.crypto;
        struct mcugw_sha256_state st;
        uint8_t buf[64];
        uint32_t at;
        size_t n;
        int r;

        if (!o->cfg.flash.read)
                return o->cfg.flash.finish(o->cfg.flash.ctx, o->size, digest);
        r = o->cfg.flash.finish(o->cfg.flash.ctx, o->size, NULL);
        if (r < 0)
                return r;
        r = c->sha256_init(c->ctx, &st);
        for (at = 0; r == 0 && at < o->size; at += (uint32_t)n) {
                n = o->size - at < sizeof buf ? o->size - at : sizeof buf;
                r = o->cfg.flash.read(o->cfg.flash.ctx, at, buf, n);
                if (r == 0)
                        r = c->sha256_update(c->ctx, &st, buf, n);
        }
        if (r < 0) {
                (void)c->sha256_final(c->ctx, &st, NULL);
                return r;
        }
        return c->sha256_final(c->ctx, &st, digest);
}

static int complete(struct mcugw_ota *o)
{
        uint8_t digest[32];
        const struct mcugw_crypto *c = o->cfg.crypto;
        int r;

        r = stored_digest(o, digest);
        if (r < 0)
                return fail(o, MCUGW_OTA_E_FLASH_FINISH, NULL);
        if (!mcugw_ct_equal(digest, o->sha256, 32))
                return fail(o, MCUGW_OTA_E_HASH, NULL);
        if (o->cfg.signer_pub) {
                if (!c || !c->ecdsa_p256_verify)
                        return fail(o, MCUGW_OTA_E_NO_VERIFIER, NULL);
                r = c->ecdsa_p256_verify(c->ctx, o->cfg.signer_pub, digest, o->sig, o->sig_len);
                if (r < 0)
                        return fail(o, MCUGW_OTA_E_SIGNATURE, NULL);
        }
        if (o->cfg.flash.set_pending(o->cfg.flash.ctx) < 0)
                return fail(o, MCUGW_OTA_E_SET_PENDING, NULL);
        o->state = MCUGW_OTA_ST_VERIFIED;
        (void)send_ack(o, o->transfer_id, MCUGW_OTA_ACK_OK);
        r = send_status(o, o->transfer_id, MCUGW_OTA_ST_VERIFIED, 0, NULL);
        if (o->cfg.on_reboot)
                o->cfg.on_reboot(o->cfg.user, o->transfer_id);
        return r;
}

static int on_chunk(struct mcugw_ota *o, const struct mcugw_ota_chunk *ch)
{
        uint32_t skip;
        int r;

        if (o->state != MCUGW_OTA_ST_RECEIVING || ch->transfer_id != o->transfer_id)
                return MCUGW_ESTATE; /* stale chunk of an old or aborted transfer */
        if (ch->offset > o->size || ch->len > o->size - ch->offset)
                return MCUGW_EMALFORMED;
        if (ch->offset > o->offset) {
                /* A gap: something was lost. Ask once; later chunks of the same burst are
                 * dropped silently until the gateway rewinds. */
                if (!o->resync_sent) {
                        o->resync_sent = 1;
                        return send_ack(o, o->transfer_id, MCUGW_OTA_ACK_RESYNC);
                }
                return 0;
        }
        skip = o->offset - ch->offset;
        if (skip >= ch->len)
                return 0; /* duplicate */
        r = o->cfg.flash.write(o->cfg.flash.ctx, o->offset, ch->data + skip, ch->len - skip);
        if (r < 0)
                return fail(o, MCUGW_OTA_E_FLASH, NULL);
        o->offset += (uint32_t)(ch->len - skip);
        o->resync_sent = 0;
        if (o->offset == o->size)
                return complete(o);
        if (o->offset - o->acked >= o->cfg.window / 4)
                return send_ack(o, o->transfer_id, MCUGW_OTA_ACK_OK);
        return 0;
}

int mcugw_ota_handle(struct mcugw_ota *o, const struct mcugw_msg *m)
{
        struct mcugw_ota_msg d;
        int r;

        if (!o || !m)
                return MCUGW_EINVAL;
        r = mcugw_ota_decode_request(m, &d);
        if (r < 0)
                return r;
        switch (d.type) {
        case MCUGW_MSG_OTA_OFFER: return on_offer(o, &d.u.offer);
        case MCUGW_MSG_OTA_OFFER_MORE: return on_more(o, &d.u.more);
        case MCUGW_MSG_OTA_CHUNK: return on_chunk(o, &d.u.chunk);
        case MCUGW_MSG_OTA_ABORT:
                if (d.u.abort.transfer_id != o->transfer_id || !o->state)
                        return 0;
                if (o->state == MCUGW_OTA_ST_CONFIRMED)
                        return 0; /* too late */
                /* Once the image is marked pending, the next reset boots it whatever we say:
                 * report the real state (VERIFIED or TESTING) instead of an abort that would
                 * not happen. */
                if (o->state == MCUGW_OTA_ST_VERIFIED || o->state == MCUGW_OTA_ST_TESTING)
                        return send_status(o, o->transfer_id, o->state, 0, NULL);
                o->state = MCUGW_OTA_ST_ABORTED;
                return send_status(o, o->transfer_id, MCUGW_OTA_ST_ABORTED, MCUGW_OTA_E_ABORTED,
                                   NULL);
        default: return MCUGW_ETYPE; /* not reached: decode_request refused the rest */
        }
}

void mcugw_ota_booted_test(struct mcugw_ota *o, uint32_t transfer_id)
{
        o->transfer_id = transfer_id;
        o->state = MCUGW_OTA_ST_TESTING;
        /* The new image holds no transfer: TESTING and CONFIRMED report offset 0. */
        o->offset = o->size = 0;
}

int mcugw_ota_connected(struct mcugw_ota *o)
{
        if (!o || !o->state)
                return 0;
        switch (o->state) {
        case MCUGW_OTA_ST_RECEIVING:
        case MCUGW_OTA_ST_VERIFIED:
        case MCUGW_OTA_ST_TESTING: return send_status(o, o->transfer_id, o->state, 0, NULL);
        default: return 0;
        }
}

int mcugw_ota_self_test_done(struct mcugw_ota *o, int ok, const char *reason)
{
        if (!o || o->state != MCUGW_OTA_ST_TESTING)
                return MCUGW_ESTATE;
        if (!ok)
                return fail(o, MCUGW_OTA_E_SELF_TEST, reason);
        if (o->cfg.flash.confirm(o->cfg.flash.ctx) < 0)
                return fail(o, MCUGW_OTA_E_CONFIRM, NULL);
        o->state = MCUGW_OTA_ST_CONFIRMED;
        return send_status(o, o->transfer_id, MCUGW_OTA_ST_CONFIRMED, 0, NULL);
}
