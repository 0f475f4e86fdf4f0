/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The BLE carrier: BlueZ's D-Bus API driven through sd-bus on the libuv loop. See ble.h for the
 * contract and docs/ble.md for the configuration and the BlueZ calls used.
 *
 * Shape: one struct ble_peer per allow-listed address, for the daemon's lifetime, holding what
 * BlueZ told us about it (object paths, Connected, ServicesResolved, RSSI, the characteristic's
 * flags) and the reconnect backoff; one struct ble_session per GATT connection, holding the
 * socketpair to the link manager, the acquired write/notify sockets (if any), the two bounded
 * byte rings and the pending D-Bus calls. A session is freed in its last handle's close
 * callback; its pending calls are cancelled by dropping their sd_bus_slot references first, so
 * no reply can reach freed memory. A 1 s tick drives reconnects, discovery, flood accounting
 * and reconnecting the bus itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-bus.h>

#include "basic/time-util.h"
#include "basic/ratelimit.h"
#include "audit/audit.h"
#include "link/ble.h"
#include "link/blefrag.h"
#include "link/link.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "link/sdbus-uv.h"

#define BLE_TX_CAP 4096u       /* link -> peripheral bytes waiting for GATT */
#define BLE_RX_CAP 8192u       /* peripheral -> link bytes the link has not read yet */
#define BLE_WRITES_INFLIGHT 4u /* WriteValue calls outstanding per peripheral */
#define BLE_READS_PER_EVENT 16 /* fairness: notification packets per poll callback */
#define BLE_TICK_MS 1000u
#define BLE_FLOOD_SECONDS 3u /* seconds in a row with drops before we disconnect */
#define BLE_STABLE_MS 10000u /* a connection that lasted this long resets the backoff */
#define BLE_RESOLVE_TIMEOUT_MS 30000u
#define BLE_IGNORED_MAX 256u /* distinct ignored addresses remembered (logged once) */
#define BLE_BUS_RETRY_MIN_MS 1000u

#define BLUEZ "org.bluez"
#define IFACE_ADAPTER "org.bluez.Adapter1"
#define IFACE_DEVICE "org.bluez.Device1"
#define IFACE_SERVICE "org.bluez.GattService1"
#define IFACE_CHAR "org.bluez.GattCharacteristic1"
#define IFACE_PROPS "org.freedesktop.DBus.Properties"
#define IFACE_OM "org.freedesktop.DBus.ObjectManager"

enum peer_state {
        PEER_ABSENT,     /* BlueZ has no Device1 object for it (yet) */
        PEER_IDLE,       /* known, not connected; Connect when the backoff allows */
        PEER_CONNECTING, /* Device1.Connect pending */
        PEER_RESOLVING,  /* connected, waiting for ServicesResolved and the characteristic */
        PEER_ACQUIRING,  /* session: AcquireWrite/AcquireNotify/StartNotify pending */
        PEER_UP,         /* session bridged to a link */
        _PEER_STATE_MAX,
};

static const char *const peer_state_names[_PEER_STATE_MAX] = {
        "absent", "idle", "connecting", "resolving", "acquiring", "up",
};

#define CHR_WRITE_NR 0x1u
#define CHR_NOTIFY 0x2u

#define PEER_COUNTERS(X)                                                                           \
        X(connects)                                                                                \
        X(disconnects)                                                                             \
        X(connect_failures)                                                                        \
        X(tx_bytes)                                                                                \
        X(rx_bytes)                                                                                \
        X(writes)                                                                                  \
        X(write_errors) X(notifications) X(rx_dropped) X(rx_dropped_bytes) X(flood_disconnects)

struct ble_counters {
#define X(n) uint64_t n;
        PEER_COUNTERS(X)
#undef X
};

struct ble_manager;
struct ble_session;

struct ble_peer {
        struct ble_manager *m;
        char addr[18];
        char link_name[24];
        char *dev_path, *svc_path, *chr_path;
        unsigned chr_flags;
        bool chr_write_acquired_prop, chr_notify_acquired_prop;
        unsigned chr_mtu;
        bool connected, resolved, have_rssi;
        int rssi;
        enum peer_state state;
        uint64_t state_ms;
        sd_bus_slot *connect_slot;
        uint64_t next_attempt_ms, backoff_ms;
        struct ble_session *s;
        struct ratelimit bucket; /* notification bytes/s */
        unsigned flood_secs;
        uint64_t drops_this_tick;
        bool penalty;
        struct ble_counters c;
        char last_reason[96];
};

struct ble_session {
        struct ble_manager *m;
        struct ble_peer *p; /* NULL once closed */
        int sp_fd, wfd, nfd;
        uv_poll_t sp_poll, w_poll, n_poll;
        bool have_sp, have_w, have_n;
        int sp_events, w_events;
        unsigned open_handles;
        sd_bus_slot *acq_w_slot, *acq_n_slot, *notify_slot;
        sd_bus_slot *write_slots[BLE_WRITES_INFLIGHT];
        unsigned writes_inflight;
        unsigned wmtu, nmtu;
        bool write_ready, notify_ready, write_fd_mode, notify_fd_mode, closing;
        uint64_t up_ms;
        struct blefrag_ring tx, rx;
        uint8_t txbuf[BLE_TX_CAP];
        uint8_t rxbuf[BLE_RX_CAP];
};

struct ble_manager {
        uv_loop_t *loop;
        struct audit *audit;
        struct link_manager *link;
        char *bus_address;
        char *adapter_name;
        char adapter_prefix[64]; /* "/org/bluez/hci0/" when Adapter= is set */
        char svc_uuid[37], chr_uuid[37];
        uint64_t rc_min_ms, rc_max_ms;
        uint64_t notify_rate;
        bool acquire;
        sd_bus *bus;
        struct sdbus_uv *glue;
        sd_bus_slot *match_added, *match_removed, *match_props, *match_owner;
        sd_bus_slot *gmo_slot, *disc_slot;
        char *adapter_path;
        bool bluez_up, discovering, disc_started;
        uint64_t bus_next_ms, bus_backoff_ms;
        unsigned bus_connects;
        char bus_error[96];
        struct ble_peer *peers;
        size_t n_peers;
        char (*ignored)[18];
        size_t n_ignored;
        uint64_t ignored_total;
        uv_timer_t tick;
        unsigned handles;
        bool stopping;
        struct ble_counters tot;
        uint8_t iobuf[BLE_TX_CAP];
};

#define COUNT(p, field, n)                                                                         \
        do {                                                                                       \
                (p)->c.field += (n);                                                               \
                (p)->m->tot.field += (n);                                                          \
        } while (0)

static void peer_update(struct ble_peer *p);
static void peer_fail(struct ble_peer *p, const char *reason, bool penalty);
static void session_tx_kick(struct ble_session *s);
static void session_update_sp(struct ble_session *s);
static void on_sp_poll(uv_poll_t *h, int status, int events);

static uint64_t now_ms(struct ble_manager *m)
{
        return uv_now(m->loop);
}

static bool streq(const char *a, const char *b)
{
        return a && b && strcmp(a, b) == 0;
}

static bool path_under(const char *path, const char *parent)
{
        size_t n = parent ? strlen(parent) : 0;
        return n && path && strncmp(path, parent, n) == 0 && path[n] == '/';
}

static void set_str(char **dst, const char *v)
{
        free(*dst);
        *dst = v ? strdup(v) : NULL;
}

static void peer_set_state(struct ble_peer *p, enum peer_state st)
{
        if (p->state == st)
                return;
        log_debug("ble %s: %s -> %s", p->addr, peer_state_names[p->state], peer_state_names[st]);
        p->state = st;
        p->state_ms = now_ms(p->m);
}

static void manager_maybe_free(struct ble_manager *m)
{
        if (!m->stopping || m->handles)
                return;
        for (size_t i = 0; i < m->n_peers; i++) {
                free(m->peers[i].dev_path);
                free(m->peers[i].svc_path);
                free(m->peers[i].chr_path);
        }
        free(m->peers);
        free(m->ignored);
        free(m->adapter_path);
        free(m->adapter_name);
        free(m->bus_address);
        free(m);
}

/* ---- sessions: the bridge between one GATT characteristic and one link ------------------- */

static void session_handle_closed(uv_handle_t *h)
{
        struct ble_session *s = h->data;
        struct ble_manager *m = s->m;

        if (h == (uv_handle_t *)&s->sp_poll)
                close(s->sp_fd);
        else if (h == (uv_handle_t *)&s->w_poll)
                close(s->wfd);
        else if (h == (uv_handle_t *)&s->n_poll)
                close(s->nfd);
        if (--s->open_handles)
                return;
        free(s);
        m->handles--;
        manager_maybe_free(m);
}

/* Tear the bridge down: cancel its calls, close its sockets (the link sees end-of-file). */
static void session_close(struct ble_session *s)
{
        struct ble_manager *m = s->m;

        if (s->closing)
                return;
        s->closing = true;
        if (s->p)
                s->p->s = NULL;
        s->p = NULL;
        s->acq_w_slot = sd_bus_slot_unref(s->acq_w_slot);
        s->acq_n_slot = sd_bus_slot_unref(s->acq_n_slot);
        s->notify_slot = sd_bus_slot_unref(s->notify_slot);
        for (unsigned i = 0; i < BLE_WRITES_INFLIGHT; i++)
                s->write_slots[i] = sd_bus_slot_unref(s->write_slots[i]);
        if (s->have_sp)
                uv_close((uv_handle_t *)&s->sp_poll, session_handle_closed);
        if (s->have_w)
                uv_close((uv_handle_t *)&s->w_poll, session_handle_closed);
        if (s->have_n)
                uv_close((uv_handle_t *)&s->n_poll, session_handle_closed);
        if (!s->open_handles) {
                free(s);
                m->handles--;
                manager_maybe_free(m);
        }
}

/* Move queued notification bytes into the link's socket as far as it takes them. */
static int session_rx_flush(struct ble_session *s)
{
        while (blefrag_ring_len(&s->rx)) {
                const uint8_t *f;
                size_t n = blefrag_ring_front(&s->rx, &f);
                ssize_t k = write(s->sp_fd, f, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                blefrag_ring_consume(&s->rx, (size_t)k);
        }
        return 0;
}

/* Bytes of one notification (one ATT packet), from the notify socket or a Value signal. */
static void session_rx(struct ble_session *s, const uint8_t *data, size_t len)
{
        struct ble_peer *p = s->p;
        uint64_t now = now_ms(s->m);

        COUNT(p, notifications, 1);
        COUNT(p, rx_bytes, len);
        if (!ratelimit_try(&p->bucket, (double)len, now * USEC_PER_MSEC) ||
            blefrag_ring_push(&s->rx, data, len) != len) {
                /* Rate limit exceeded, or the link does not read: drop the whole packet. */
                COUNT(p, rx_dropped, 1);
                COUNT(p, rx_dropped_bytes, len);
                p->drops_this_tick++;
                return;
        }
        /* Hand it to the link at once if it is reading; otherwise the poll does later. */
        if (s->have_sp && !(s->sp_events & UV_WRITABLE)) {
                if (session_rx_flush(s) < 0)
                        return peer_fail(p, "link socket write error", false);
                session_update_sp(s);
        }
}

static void session_update_sp(struct ble_session *s)
{
        int ev;
        if (s->closing || !s->have_sp)
                return;
        ev = UV_DISCONNECT | (blefrag_ring_space(&s->tx) ? UV_READABLE : 0) |
             (blefrag_ring_len(&s->rx) ? UV_WRITABLE : 0);
        if (ev == s->sp_events)
                return;
        s->sp_events = ev;
        uv_poll_start(&s->sp_poll, ev, on_sp_poll);
}

static void on_sp_poll(uv_poll_t *h, int status, int events)
{
        struct ble_session *s = h->data;
        struct ble_peer *p = s->p;
        struct ble_manager *m = s->m;

        if (s->closing || !p)
                return;
        if (status < 0)
                return peer_fail(p, "link socket error", false);
        if ((events & UV_WRITABLE) && session_rx_flush(s) < 0)
                return peer_fail(p, "link socket write error", false);
        if (events & (UV_READABLE | UV_DISCONNECT)) {
                size_t space = MIN(blefrag_ring_space(&s->tx), sizeof m->iobuf);
                /* The link never half-closes: a hang-up with a full queue is the end. */
                if (!space && (events & UV_DISCONNECT))
                        return peer_fail(p, "link closed by the gateway", false);
                if (space) {
                        ssize_t k = read(s->sp_fd, m->iobuf, space);
                        if (k == 0)
                                return peer_fail(p, "link closed by the gateway", false);
                        if (k < 0 && errno != EAGAIN && errno != EINTR)
                                return peer_fail(p, "link socket read error", false);
                        if (k > 0) {
                                blefrag_ring_push(&s->tx, m->iobuf, (size_t)k);
                                session_tx_kick(s);
                                if (s->closing)
                                        return;
                        }
                }
        }
        session_update_sp(s);
}

static void on_write_value_reply_slot(struct ble_session *s, sd_bus_message *reply, unsigned i)
{
        struct ble_peer *p = s->p;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        s->write_slots[i] = sd_bus_slot_unref(s->write_slots[i]);
        s->writes_inflight--;
        if (!p)
                return;
        if (e) {
                COUNT(p, write_errors, 1);
                log_debug("ble %s: WriteValue failed: %s: %s", p->addr, e->name,
                          e->message ? e->message : "");
                if (streq(e->name, "org.bluez.Error.NotConnected"))
                        return peer_fail(p, "peripheral not connected", false);
        }
        session_tx_kick(s);
        session_update_sp(s);
}

/* One callback per in-flight slot index, so the reply knows which slot to drop. */
#define WRITE_CB(i)                                                                                \
        static int on_write_value_##i(sd_bus_message *r, void *ud, sd_bus_error *e)                \
        {                                                                                          \
                on_write_value_reply_slot(ud, r, i);                                               \
                return 0;                                                                          \
        }
WRITE_CB(0)
WRITE_CB(1)
WRITE_CB(2)
WRITE_CB(3)
static const sd_bus_message_handler_t write_cbs[BLE_WRITES_INFLIGHT] = {
        on_write_value_0,
        on_write_value_1,
        on_write_value_2,
        on_write_value_3,
};

static int session_write_value(struct ble_session *s, const uint8_t *data, size_t len)
{
        struct ble_peer *p = s->p;
        struct ble_manager *m = s->m;
        sd_bus_message *msg = NULL;
        unsigned i;
        int r;

        for (i = 0; i < BLE_WRITES_INFLIGHT && s->write_slots[i]; i++)
                ;
        if (i == BLE_WRITES_INFLIGHT)
                return -EBUSY;
        r = sd_bus_message_new_method_call(m->bus, &msg, BLUEZ, p->chr_path, IFACE_CHAR,
                                           "WriteValue");
        if (r >= 0)
                r = sd_bus_message_append_array(msg, 'y', data, len);
        if (r >= 0)
                r = sd_bus_message_append(msg, "a{sv}", 1, "type", "s", "command");
        if (r >= 0)
                r = sd_bus_call_async(m->bus, &s->write_slots[i], msg, write_cbs[i], s, 0);
        sd_bus_message_unref(msg);
        if (r < 0)
                return r;
        s->writes_inflight++;
        return 0;
}

static void on_w_poll(uv_poll_t *h, int status, int events)
{
        struct ble_session *s = h->data;
        if (s->closing || !s->p)
                return;
        if (status < 0 || (events & UV_DISCONNECT))
                return peer_fail(s->p, "write socket closed", false);
        uv_poll_stop(&s->w_poll);
        s->w_events = 0;
        session_tx_kick(s);
        if (!s->closing)
                session_update_sp(s);
}

/* Push queued link bytes to the characteristic, one ATT packet at a time. */
static void session_tx_kick(struct ble_session *s)
{
        struct ble_peer *p = s->p;
        uint8_t pkt[BLEFRAG_ATT_VALUE_MAX];

        while (!s->closing && s->write_ready && blefrag_ring_len(&s->tx)) {
                size_t n = blefrag_next(blefrag_ring_len(&s->tx), s->wmtu, s->write_fd_mode);
                blefrag_ring_peek(&s->tx, pkt, n);
                if (s->write_fd_mode) {
                        ssize_t k = write(s->wfd, pkt, n);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN) {
                                        if (!s->w_events) {
                                                s->w_events = UV_WRITABLE | UV_DISCONNECT;
                                                uv_poll_start(&s->w_poll, s->w_events, on_w_poll);
                                        }
                                        return;
                                }
                                return peer_fail(p, "write socket error", false);
                        }
                        n = (size_t)k;
                } else {
                        int r = session_write_value(s, pkt, n);
                        if (r == -EBUSY)
                                return;
                        if (r < 0)
                                return peer_fail(p, "cannot queue WriteValue", false);
                }
                blefrag_ring_consume(&s->tx, n);
                COUNT(p, writes, 1);
                COUNT(p, tx_bytes, n);
        }
}

static void on_n_poll(uv_poll_t *h, int status, int events)
{
        struct ble_session *s = h->data;
        struct ble_manager *m = s->m;

        if (s->closing || !s->p)
                return;
        if (status < 0)
                return peer_fail(s->p, "notify socket error", false);
        for (int i = 0; i < BLE_READS_PER_EVENT && !s->closing; i++) {
                ssize_t k = read(s->nfd, m->iobuf, sizeof m->iobuf);
                if (k > 0) {
                        /* A SEQPACKET socket from BlueZ: one notification per read. */
                        session_rx(s, m->iobuf, (size_t)k);
                        continue;
                }
                if (k == 0)
                        return peer_fail(s->p, "notify socket closed", false);
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return peer_fail(s->p, "notify socket read error", false);
                break;
        }
}

/* Both directions are ready: make the link. */
static void session_bridge(struct ble_session *s)
{
        struct ble_peer *p = s->p;
        struct ble_manager *m = s->m;
        int sv[2], r;

        if (!s->write_ready || !s->notify_ready || s->have_sp)
                return;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                return peer_fail(p, "socketpair failed", false);
        r = link_manager_adopt_fd(m->link, sv[1], p->link_name);
        if (r < 0) {
                close(sv[0]);
                close(sv[1]);
                log_warning_errno(r, "ble %s: the link manager refused the link: %m", p->addr);
                return peer_fail(p, "link manager refused the link", false);
        }
        s->sp_fd = sv[0];
        if (uv_poll_init(m->loop, &s->sp_poll, s->sp_fd) < 0) {
                close(sv[0]); /* the link sees end-of-file and goes away */
                return peer_fail(p, "cannot poll the link socket", false);
        }
        s->sp_poll.data = s;
        s->have_sp = true;
        s->open_handles++;
        s->sp_events = UV_READABLE | UV_DISCONNECT;
        uv_poll_start(&s->sp_poll, s->sp_events, on_sp_poll);
        s->up_ms = now_ms(m);
        peer_set_state(p, PEER_UP);
        COUNT(p, connects, 1);
        p->last_reason[0] = 0;
        log_info("ble %s: connected (write %s, %u bytes per packet; notify %s)", p->addr,
                 s->write_fd_mode ? "socket" : "WriteValue",
                 (unsigned)blefrag_payload_max(s->wmtu, s->write_fd_mode),
                 s->notify_fd_mode ? "socket" : "PropertiesChanged");
        audit_log(m->audit, "daemon", "ble.connected", p->addr,
                  json_pack("{ss ss si si ss ss}", "path", p->dev_path, "link", p->link_name, "mtu",
                            (int)s->wmtu, "packet",
                            (int)blefrag_payload_max(s->wmtu, s->write_fd_mode), "write",
                            s->write_fd_mode ? "acquired" : "value", "notify",
                            s->notify_fd_mode ? "acquired" : "signal"));
        /* Bytes that arrived while we were setting up go in now. */
        session_update_sp(s);
}

/* Reply of AcquireWrite/AcquireNotify: "hq" (fd, mtu). Falls back to the D-Bus path on error. */
static int acquired_fd(sd_bus_message *reply, struct ble_session *s, bool write)
{
        struct ble_peer *p = s->p;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int fd = -1, r;
        uint16_t mtu = 0;

        if (!e) {
                r = sd_bus_message_read(reply, "hq", &fd, &mtu);
                if (r >= 0)
                        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (r < 0 || fd < 0) {
                        log_warning("ble %s: bad Acquire%s reply", p->addr,
                                    write ? "Write" : "Notify");
                        fd = -1;
                }
        } else
                log_info("ble %s: Acquire%s failed (%s), using %s", p->addr,
                         write ? "Write" : "Notify", e->message ? e->message : e->name,
                         write ? "WriteValue" : "StartNotify");
        if (fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                close(fd);
                fd = -1;
        }
        if (fd >= 0)
                *(write ? &s->wmtu : &s->nmtu) = mtu;
        return fd;
}

static int on_acquire_write(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_session *s = ud;
        int fd;

        s->acq_w_slot = sd_bus_slot_unref(s->acq_w_slot);
        if (!s->p)
                return 0;
        fd = acquired_fd(reply, s, true);
        if (fd >= 0 && uv_poll_init(s->m->loop, &s->w_poll, fd) < 0) {
                close(fd);
                fd = -1;
        }
        if (fd >= 0) {
                s->wfd = fd;
                s->w_poll.data = s;
                s->have_w = true;
                s->open_handles++;
                s->write_fd_mode = true;
        } else {
                s->write_fd_mode = false;
                s->wmtu = s->p->chr_mtu;
        }
        s->write_ready = true;
        session_bridge(s);
        return 0;
}

static int on_start_notify(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_session *s = ud;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        s->notify_slot = sd_bus_slot_unref(s->notify_slot);
        if (!s->p)
                return 0;
        if (e) {
                log_warning("ble %s: StartNotify failed: %s", s->p->addr,
                            e->message ? e->message : e->name);
                peer_fail(s->p, "StartNotify failed", false);
                return 0;
        }
        s->notify_ready = true;
        session_bridge(s);
        return 0;
}

static int start_notify(struct ble_session *s)
{
        s->notify_fd_mode = false;
        return sd_bus_call_method_async(s->m->bus, &s->notify_slot, BLUEZ, s->p->chr_path,
                                        IFACE_CHAR, "StartNotify", on_start_notify, s, "");
}

static int on_acquire_notify(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_session *s = ud;
        int fd;

        s->acq_n_slot = sd_bus_slot_unref(s->acq_n_slot);
        if (!s->p)
                return 0;
        fd = acquired_fd(reply, s, false);
        if (fd >= 0 && uv_poll_init(s->m->loop, &s->n_poll, fd) < 0) {
                close(fd);
                fd = -1;
        }
        if (fd < 0) {
                if (start_notify(s) < 0)
                        peer_fail(s->p, "cannot call StartNotify", false);
                return 0;
        }
        s->nfd = fd;
        s->n_poll.data = s;
        s->have_n = true;
        s->open_handles++;
        s->notify_fd_mode = true;
        uv_poll_start(&s->n_poll, UV_READABLE | UV_DISCONNECT, on_n_poll);
        s->notify_ready = true;
        session_bridge(s);
        return 0;
}

static void session_start(struct ble_peer *p)
{
        struct ble_manager *m = p->m;
        struct ble_session *s;
        int r;

        /* The carrier is defined as write-without-response + notify (docs/ble.md). */
        if (!(p->chr_flags & CHR_WRITE_NR) || !(p->chr_flags & CHR_NOTIFY))
                return peer_fail(p, "characteristic lacks write-without-response or notify", true);
        s = calloc(1, sizeof *s);
        if (!s)
                return peer_fail(p, "out of memory", false);
        s->m = m;
        s->p = p;
        s->sp_fd = s->wfd = s->nfd = -1;
        s->wmtu = s->nmtu = p->chr_mtu;
        blefrag_ring_init(&s->tx, s->txbuf, sizeof s->txbuf);
        blefrag_ring_init(&s->rx, s->rxbuf, sizeof s->rxbuf);
        ratelimit_init(&p->bucket, (double)m->notify_rate, (double)m->notify_rate * 2,
                       now_ms(m) * USEC_PER_MSEC);
        p->s = s;
        m->handles++;
        peer_set_state(p, PEER_ACQUIRING);

        if (m->acquire && p->chr_write_acquired_prop)
                r = sd_bus_call_method_async(m->bus, &s->acq_w_slot, BLUEZ, p->chr_path, IFACE_CHAR,
                                             "AcquireWrite", on_acquire_write, s, "a{sv}", 0);
        else {
                s->write_ready = true;
                r = 0;
        }
        if (r >= 0) {
                if (m->acquire && p->chr_notify_acquired_prop)
                        r = sd_bus_call_method_async(m->bus, &s->acq_n_slot, BLUEZ, p->chr_path,
                                                     IFACE_CHAR, "AcquireNotify", on_acquire_notify,
                                                     s, "a{sv}", 0);
                else
                        r = start_notify(s);
        }
        if (r < 0)
                return peer_fail(p, "cannot call the characteristic", false);
        session_bridge(s);
}

/* ---- peers ------------------------------------------------------------------------------- */

static void peer_schedule(struct ble_peer *p, bool penalty)
{
        struct ble_manager *m = p->m;
        uint64_t delay = penalty ? m->rc_max_ms : p->backoff_ms;

        p->next_attempt_ms = now_ms(m) + delay;
        p->backoff_ms = MIN(MAX(p->backoff_ms * 2, m->rc_min_ms), m->rc_max_ms);
}

/* The GATT connection is gone or we give it up: audit if it was up, back off. */
static void peer_down(struct ble_peer *p, const char *reason, bool penalty)
{
        struct ble_manager *m = p->m;
        bool was_up = p->state == PEER_UP;

        if (p->s) {
                if (was_up && now_ms(m) - p->s->up_ms >= BLE_STABLE_MS)
                        p->backoff_ms = m->rc_min_ms;
                session_close(p->s);
        }
        snprintf(p->last_reason, sizeof p->last_reason, "%s", reason);
        if (was_up) {
                COUNT(p, disconnects, 1);
                log_info("ble %s: disconnected: %s", p->addr, reason);
                audit_log(m->audit, "daemon", "ble.disconnected", p->addr,
                          json_pack("{ss ss}", "reason", reason, "link", p->link_name));
        } else if (p->state != PEER_ABSENT && p->state != PEER_IDLE)
                log_info("ble %s: connection attempt failed: %s", p->addr, reason);
        p->connect_slot = sd_bus_slot_unref(p->connect_slot);
        if (p->state != PEER_ABSENT)
                peer_set_state(p, p->dev_path ? PEER_IDLE : PEER_ABSENT);
        if (!m->stopping)
                peer_schedule(p, penalty);
}

/* We give up on this connection: tell BlueZ to disconnect too. */
static void peer_fail(struct ble_peer *p, const char *reason, bool penalty)
{
        struct ble_manager *m = p->m;

        if (p->state != PEER_UP && p->state != PEER_CONNECTING)
                COUNT(p, connect_failures, 1);
        if (p->connected && p->dev_path && m->bus)
                sd_bus_call_method_async(m->bus, NULL, BLUEZ, p->dev_path, IFACE_DEVICE,
                                         "Disconnect", NULL, NULL, "");
        p->connected = false;
        p->resolved = false;
        peer_down(p, reason, penalty);
}

static int on_connect_reply(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_peer *p = ud;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        p->connect_slot = sd_bus_slot_unref(p->connect_slot);
        if (p->state != PEER_CONNECTING)
                return 0;
        if (e && !streq(e->name, "org.bluez.Error.AlreadyConnected")) {
                char why[96];
                COUNT(p, connect_failures, 1);
                snprintf(why, sizeof why, "Connect: %s", e->message ? e->message : e->name);
                peer_down(p, why, false);
                return 0;
        }
        p->connected = true;
        peer_set_state(p, PEER_RESOLVING);
        peer_update(p);
        return 0;
}

/* Decide the next step of a peer from what we know; called on every change and each tick. */
static void peer_update(struct ble_peer *p)
{
        struct ble_manager *m = p->m;
        int r;

        if (m->stopping || !m->bus || !m->bluez_up)
                return;
        if (!p->dev_path) {
                if (p->state != PEER_ABSENT)
                        peer_down(p, "device object removed", false);
                return;
        }
        switch (p->state) {
        case PEER_ABSENT:
                peer_set_state(p, PEER_IDLE);
                p->next_attempt_ms = now_ms(m);
                /* fall through */
        case PEER_IDLE:
                if (p->connected) {
                        peer_set_state(p, PEER_RESOLVING);
                        return peer_update(p);
                }
                if (now_ms(m) < p->next_attempt_ms)
                        return;
                r = sd_bus_call_method_async(m->bus, &p->connect_slot, BLUEZ, p->dev_path,
                                             IFACE_DEVICE, "Connect", on_connect_reply, p, "");
                if (r < 0) {
                        log_warning_errno(r, "ble %s: cannot call Connect: %m", p->addr);
                        peer_schedule(p, false);
                        return;
                }
                log_debug("ble %s: connecting", p->addr);
                peer_set_state(p, PEER_CONNECTING);
                return;
        case PEER_CONNECTING: return;
        case PEER_RESOLVING:
                if (!p->connected)
                        return peer_down(p, "disconnected while resolving services", false);
                if (!p->resolved) {
                        if (now_ms(m) - p->state_ms > BLE_RESOLVE_TIMEOUT_MS)
                                peer_fail(p, "services not resolved in time", false);
                        return;
                }
                if (!p->chr_path)
                        return peer_fail(p, "the mcugw GATT characteristic is missing", true);
                return session_start(p);
        case PEER_ACQUIRING:
        case PEER_UP:
                if (!p->connected)
                        peer_down(p, "peripheral disconnected", false);
                return;
        default: return;
        }
}

static struct ble_peer *peer_by_addr(struct ble_manager *m, const char *addr)
{
        for (size_t i = 0; i < m->n_peers; i++)
                if (strcmp(m->peers[i].addr, addr) == 0)
                        return &m->peers[i];
        return NULL;
}

static struct ble_peer *peer_by_dev_path(struct ble_manager *m, const char *path)
{
        for (size_t i = 0; i < m->n_peers; i++)
                if (streq(m->peers[i].dev_path, path))
                        return &m->peers[i];
        return NULL;
}

static struct ble_peer *peer_owning(struct ble_manager *m, const char *path)
{
        for (size_t i = 0; i < m->n_peers; i++)
                if (path_under(path, m->peers[i].dev_path))
                        return &m->peers[i];
        return NULL;
}

/* A peripheral we will not connect: count it, log and audit it once per address. */
static void ignore_device(struct ble_manager *m, const char *addr, const char *path)
{
        for (size_t i = 0; i < m->n_ignored; i++)
                if (strcmp(m->ignored[i], addr) == 0)
                        return;
        m->ignored_total++;
        if (m->n_ignored >= BLE_IGNORED_MAX)
                return;
        memcpy(m->ignored[m->n_ignored++], addr, 18);
        log_info("ble %s: not on the allow-list ([BLE] Device=), ignored", addr);
        audit_log(m->audit, "daemon", "ble.ignored", addr,
                  json_pack("{ss ss}", "path", path, "reason", "not on the allow-list"));
}

/* ---- BlueZ objects and properties -------------------------------------------------------- */

struct props {
        const char *address, *adapter, *uuid, *service, *device;
        int connected, resolved; /* -1: not present */
        bool has_rssi, has_flags, has_write_acquired, has_notify_acquired, has_mtu, has_value;
        int16_t rssi;
        uint16_t mtu;
        unsigned flags;
        const void *value;
        size_t value_len;
};

static int read_variant(sd_bus_message *msg, const char *sig, void *out)
{
        int r = sd_bus_message_enter_container(msg, 'v', sig);
        if (r < 0)
                return r;
        r = sd_bus_message_read_basic(msg, sig[0], out);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

static int read_flags(sd_bus_message *msg, unsigned *ret)
{
        const char *f;
        int r;

        *ret = 0;
        if ((r = sd_bus_message_enter_container(msg, 'v', "as")) < 0 ||
            (r = sd_bus_message_enter_container(msg, 'a', "s")) < 0)
                return r;
        while ((r = sd_bus_message_read_basic(msg, 's', &f)) > 0) {
                if (strcmp(f, "write-without-response") == 0)
                        *ret |= CHR_WRITE_NR;
                else if (strcmp(f, "notify") == 0)
                        *ret |= CHR_NOTIFY;
        }
        if (r < 0 || (r = sd_bus_message_exit_container(msg)) < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

/* Parse an a{sv} of one of the interfaces we care about; unknown keys are skipped. */
static int parse_props(sd_bus_message *msg, struct props *pr)
{
        int r;

        *pr = (struct props){ .connected = -1, .resolved = -1 };
        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                const char *key, *contents = NULL;
                char type;
                int b;

                if ((r = sd_bus_message_read_basic(msg, 's', &key)) < 0 ||
                    (r = sd_bus_message_peek_type(msg, &type, &contents)) < 0)
                        return r;
                if (!contents)
                        contents = "";
#define IS(k, sig) (strcmp(key, k) == 0 && strcmp(contents, sig) == 0)
                if (IS("Address", "s"))
                        r = read_variant(msg, "s", &pr->address);
                else if (IS("Adapter", "o"))
                        r = read_variant(msg, "o", &pr->adapter);
                else if (IS("UUID", "s"))
                        r = read_variant(msg, "s", &pr->uuid);
                else if (IS("Service", "o"))
                        r = read_variant(msg, "o", &pr->service);
                else if (IS("Device", "o"))
                        r = read_variant(msg, "o", &pr->device);
                else if (IS("Connected", "b")) {
                        r = read_variant(msg, "b", &b);
                        pr->connected = !!b;
                } else if (IS("ServicesResolved", "b")) {
                        r = read_variant(msg, "b", &b);
                        pr->resolved = !!b;
                } else if (IS("RSSI", "n")) {
                        r = read_variant(msg, "n", &pr->rssi);
                        pr->has_rssi = true;
                } else if (IS("MTU", "q")) {
                        r = read_variant(msg, "q", &pr->mtu);
                        pr->has_mtu = true;
                } else if (IS("Flags", "as")) {
                        r = read_flags(msg, &pr->flags);
                        pr->has_flags = true;
                } else if (IS("WriteAcquired", "b")) {
                        r = read_variant(msg, "b", &b);
                        pr->has_write_acquired = true;
                } else if (IS("NotifyAcquired", "b")) {
                        r = read_variant(msg, "b", &b);
                        pr->has_notify_acquired = true;
                } else if (IS("Value", "ay")) {
                        if ((r = sd_bus_message_enter_container(msg, 'v', "ay")) >= 0 &&
                            (r = sd_bus_message_read_array(msg, 'y', &pr->value, &pr->value_len)) >=
                                    0)
                                r = sd_bus_message_exit_container(msg);
                        pr->has_value = true;
                } else
                        r = sd_bus_message_skip(msg, "v");
#undef IS
                if (r < 0 || (r = sd_bus_message_exit_container(msg)) < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

static void device_props(struct ble_manager *m, const char *path, const struct props *pr,
                         bool added)
{
        struct ble_peer *p = peer_by_dev_path(m, path);
        char addr[18];

        if (!p && added) {
                if (!pr->address || blefrag_address_normalize(pr->address, addr) < 0)
                        return;
                if (m->adapter_prefix[0] &&
                    strncmp(path, m->adapter_prefix, strlen(m->adapter_prefix)) != 0)
                        return;
                p = peer_by_addr(m, addr);
                if (!p)
                        return ignore_device(m, addr, path);
                if (p->dev_path) /* the same address on another adapter: first one wins */
                        return;
                set_str(&p->dev_path, path);
                log_debug("ble %s: device object %s", p->addr, path);
        }
        if (!p)
                return;
        if (pr->has_rssi) {
                p->rssi = pr->rssi;
                p->have_rssi = true;
        }
        if (pr->resolved >= 0)
                p->resolved = pr->resolved;
        if (pr->connected >= 0) {
                p->connected = pr->connected;
                if (!p->connected)
                        p->resolved = false;
        }
        peer_update(p);
}

static void service_props(struct ble_manager *m, const char *path, const struct props *pr)
{
        struct ble_peer *p = peer_owning(m, path);
        if (p && streq(pr->uuid, m->svc_uuid))
                set_str(&p->svc_path, path);
}

static void char_props(struct ble_manager *m, const char *path, const struct props *pr, bool added)
{
        struct ble_peer *p = peer_owning(m, path);

        if (!p)
                return;
        if (added) {
                char u[37];
                if (!pr->uuid || blefrag_uuid_normalize(pr->uuid, u) < 0 ||
                    strcmp(u, m->chr_uuid) != 0)
                        return;
                if (p->svc_path && pr->service && !streq(pr->service, p->svc_path))
                        return;
                set_str(&p->chr_path, path);
                p->chr_flags = pr->flags;
                p->chr_write_acquired_prop = pr->has_write_acquired;
                p->chr_notify_acquired_prop = pr->has_notify_acquired;
                p->chr_mtu = pr->has_mtu ? pr->mtu : 0;
                peer_update(p);
                return;
        }
        if (!streq(p->chr_path, path))
                return;
        if (pr->has_mtu) {
                p->chr_mtu = pr->mtu;
                if (p->s && !p->s->write_fd_mode)
                        p->s->wmtu = pr->mtu;
        }
        if (pr->has_value && p->s && p->s->notify_ready && !p->s->notify_fd_mode)
                session_rx(p->s, pr->value, pr->value_len);
}

static void adapter_props(struct ble_manager *m, const char *path, const struct props *pr)
{
        if (!m->adapter_path) {
                if (strncmp(path, "/org/bluez/", 11) != 0)
                        return;
                if (m->adapter_name && strcmp(path + 11, m->adapter_name) != 0)
                        return;
                set_str(&m->adapter_path, path);
                log_info("ble: using adapter %s", path);
        }
}

/* a{sa{sv}}: every interface of one object. pass 0: adapters and devices; 1: GATT objects
 * (GetManagedObjects lists objects in no particular order). */
static int parse_interfaces(struct ble_manager *m, sd_bus_message *msg, const char *path, int pass)
{
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sa{sv}")) > 0) {
                const char *iface;
                struct props pr;
                int which;

                if ((r = sd_bus_message_read_basic(msg, 's', &iface)) < 0)
                        return r;
                which = strcmp(iface, IFACE_ADAPTER) == 0   ? 0
                        : strcmp(iface, IFACE_DEVICE) == 0  ? 1
                        : strcmp(iface, IFACE_SERVICE) == 0 ? 2
                        : strcmp(iface, IFACE_CHAR) == 0    ? 3
                                                            : -1;
                if (which < 0 || (pass == 0) != (which <= 1))
                        r = sd_bus_message_skip(msg, "a{sv}");
                else if ((r = parse_props(msg, &pr)) >= 0) {
                        if (which == 0)
                                adapter_props(m, path, &pr);
                        else if (which == 1)
                                device_props(m, path, &pr, true);
                        else if (which == 2)
                                service_props(m, path, &pr);
                        else
                                char_props(m, path, &pr, true);
                }
                if (r < 0 || (r = sd_bus_message_exit_container(msg)) < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(msg);
}

static int on_interfaces_added(sd_bus_message *msg, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const char *path;
        int r;

        if (sd_bus_message_read_basic(msg, 'o', &path) < 0)
                return 0;
        for (int pass = 0; pass < 2; pass++) {
                if (pass && (r = sd_bus_message_rewind(msg, true)) >= 0)
                        r = sd_bus_message_skip(msg, "o");
                else
                        r = 0;
                if (r >= 0)
                        r = parse_interfaces(m, msg, path, pass);
                if (r < 0) {
                        log_debug_errno(r, "ble: bad InterfacesAdded for %s: %m", path);
                        return 0;
                }
        }
        return 0;
}

static int on_interfaces_removed(sd_bus_message *msg, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const char *path, *iface;
        int r;

        if (sd_bus_message_read_basic(msg, 'o', &path) < 0 ||
            sd_bus_message_enter_container(msg, 'a', "s") < 0)
                return 0;
        while ((r = sd_bus_message_read_basic(msg, 's', &iface)) > 0) {
                if (strcmp(iface, IFACE_DEVICE) == 0) {
                        struct ble_peer *p = peer_by_dev_path(m, path);
                        if (!p)
                                continue;
                        p->connected = p->resolved = false;
                        peer_down(p, "device removed by BlueZ", false);
                        p->dev_path = (free(p->dev_path), NULL);
                        p->svc_path = (free(p->svc_path), NULL);
                        p->chr_path = (free(p->chr_path), NULL);
                        peer_set_state(p, PEER_ABSENT);
                } else if (strcmp(iface, IFACE_CHAR) == 0) {
                        struct ble_peer *p = peer_owning(m, path);
                        if (!p || !streq(p->chr_path, path))
                                continue;
                        p->chr_path = (free(p->chr_path), NULL);
                        if (p->s)
                                peer_fail(p, "characteristic removed", false);
                } else if (strcmp(iface, IFACE_ADAPTER) == 0 && streq(path, m->adapter_path)) {
                        log_warning("ble: adapter %s removed", path);
                        m->adapter_path = (free(m->adapter_path), NULL);
                        m->discovering = m->disc_started = false;
                }
        }
        return 0;
}

static int on_properties_changed(sd_bus_message *msg, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const char *path = sd_bus_message_get_path(msg), *iface;
        struct props pr;

        if (!path || sd_bus_message_read_basic(msg, 's', &iface) < 0)
                return 0;
        if (strcmp(iface, IFACE_DEVICE) == 0) {
                if (parse_props(msg, &pr) >= 0)
                        device_props(m, path, &pr, false);
        } else if (strcmp(iface, IFACE_CHAR) == 0) {
                if (parse_props(msg, &pr) >= 0)
                        char_props(m, path, &pr, false);
        } else if (strcmp(iface, IFACE_ADAPTER) == 0 && streq(path, m->adapter_path)) {
                int r = sd_bus_message_enter_container(msg, 'a', "{sv}");
                while (r >= 0 && (r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                        const char *key;
                        int b;
                        if (sd_bus_message_read_basic(msg, 's', &key) < 0)
                                break;
                        if (strcmp(key, "Discovering") == 0 && read_variant(msg, "b", &b) >= 0)
                                m->discovering = b;
                        else
                                sd_bus_message_skip(msg, "v");
                        r = sd_bus_message_exit_container(msg);
                }
        }
        return 0;
}

static void bluez_gone(struct ble_manager *m, const char *why)
{
        for (size_t i = 0; i < m->n_peers; i++) {
                struct ble_peer *p = &m->peers[i];
                p->connected = p->resolved = false;
                peer_down(p, why, false);
                p->dev_path = (free(p->dev_path), NULL);
                p->svc_path = (free(p->svc_path), NULL);
                p->chr_path = (free(p->chr_path), NULL);
                peer_set_state(p, PEER_ABSENT);
        }
        m->adapter_path = (free(m->adapter_path), NULL);
        m->bluez_up = m->discovering = m->disc_started = false;
        m->gmo_slot = sd_bus_slot_unref(m->gmo_slot);
        m->disc_slot = sd_bus_slot_unref(m->disc_slot);
}

static int on_managed_objects(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        size_t known = 0;
        int r = 0;

        m->gmo_slot = sd_bus_slot_unref(m->gmo_slot);
        if (e) {
                log_warning("ble: BlueZ is not available (%s); waiting for org.bluez",
                            e->message ? e->message : e->name);
                return 0;
        }
        m->bluez_up = true;
        for (int pass = 0; pass < 2 && r >= 0; pass++) {
                if (pass)
                        r = sd_bus_message_rewind(reply, true);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
                while (r >= 0 &&
                       (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                        const char *path;
                        if ((r = sd_bus_message_read_basic(reply, 'o', &path)) < 0 ||
                            (r = parse_interfaces(m, reply, path, pass)) < 0)
                                break;
                        r = sd_bus_message_exit_container(reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0)
                log_warning_errno(r, "ble: cannot parse BlueZ's objects: %m");
        for (size_t i = 0; i < m->n_peers; i++)
                known += m->peers[i].dev_path != NULL;
        log_info("ble: BlueZ up, adapter %s, %zu of %zu allow-listed peripherals known",
                 m->adapter_path ? m->adapter_path : "(none yet)", known, m->n_peers);
        for (size_t i = 0; i < m->n_peers; i++)
                peer_update(&m->peers[i]);
        return 0;
}

static void bluez_refresh(struct ble_manager *m)
{
        int r;

        m->gmo_slot = sd_bus_slot_unref(m->gmo_slot);
        r = sd_bus_call_method_async(m->bus, &m->gmo_slot, BLUEZ, "/", IFACE_OM,
                                     "GetManagedObjects", on_managed_objects, m, "");
        if (r < 0)
                log_warning_errno(r, "ble: cannot call GetManagedObjects: %m");
}

static int on_name_owner_changed(sd_bus_message *msg, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(msg, "sss", &name, &old_owner, &new_owner) < 0 ||
            strcmp(name, BLUEZ) != 0)
                return 0;
        if (*old_owner) {
                log_warning("ble: bluetoothd left the bus");
                bluez_gone(m, "bluetoothd went away");
        }
        if (*new_owner) {
                log_info("ble: bluetoothd appeared on the bus");
                bluez_refresh(m);
        }
        return 0;
}

/* ---- discovery --------------------------------------------------------------------------- */

static int on_discovery_reply(sd_bus_message *reply, void *ud, sd_bus_error *err)
{
        struct ble_manager *m = ud;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        m->disc_slot = sd_bus_slot_unref(m->disc_slot);
        if (e) {
                log_debug("ble: discovery call failed: %s", e->message ? e->message : e->name);
                return 0;
        }
        if (!m->disc_started) {
                /* The filter is set; now start. */
                m->disc_started = true;
                sd_bus_call_method_async(m->bus, &m->disc_slot, BLUEZ, m->adapter_path,
                                         IFACE_ADAPTER, "StartDiscovery", on_discovery_reply, m,
                                         "");
        }
        return 0;
}

/* Scan (LE only) while an allow-listed peripheral has no Device1 object; stop when all do. */
static void discovery_update(struct ble_manager *m)
{
        sd_bus_message *msg = NULL;
        bool missing = false;
        int r;

        if (!m->bus || !m->bluez_up || !m->adapter_path || m->disc_slot)
                return;
        for (size_t i = 0; i < m->n_peers; i++)
                missing |= m->peers[i].dev_path == NULL;
        if (missing && !m->disc_started) {
                r = sd_bus_message_new_method_call(m->bus, &msg, BLUEZ, m->adapter_path,
                                                   IFACE_ADAPTER, "SetDiscoveryFilter");
                if (r >= 0)
                        r = sd_bus_message_append(msg, "a{sv}", 2, "Transport", "s", "le",
                                                  "DuplicateData", "b", 0);
                if (r >= 0)
                        r = sd_bus_call_async(m->bus, &m->disc_slot, msg, on_discovery_reply, m, 0);
                sd_bus_message_unref(msg);
                if (r < 0)
                        log_debug_errno(r, "ble: cannot call SetDiscoveryFilter: %m");
        } else if (!missing && m->disc_started) {
                m->disc_started = false;
                sd_bus_call_method_async(m->bus, NULL, BLUEZ, m->adapter_path, IFACE_ADAPTER,
                                         "StopDiscovery", NULL, NULL, "");
        }
}

/* ---- the bus ----------------------------------------------------------------------------- */

static void bus_close(struct ble_manager *m, const char *why)
{
        if (!m->bus)
                return;
        bluez_gone(m, why);
        m->match_added = sd_bus_slot_unref(m->match_added);
        m->match_removed = sd_bus_slot_unref(m->match_removed);
        m->match_props = sd_bus_slot_unref(m->match_props);
        m->match_owner = sd_bus_slot_unref(m->match_owner);
        for (size_t i = 0; i < m->n_peers; i++)
                m->peers[i].connect_slot = sd_bus_slot_unref(m->peers[i].connect_slot);
        sdbus_uv_detach(m->glue);
        m->glue = NULL;
        m->bus = sd_bus_unref(m->bus);
}

static void bus_schedule_retry(struct ble_manager *m)
{
        m->bus_next_ms = now_ms(m) + m->bus_backoff_ms;
        m->bus_backoff_ms = MIN(MAX(m->bus_backoff_ms * 2, BLE_BUS_RETRY_MIN_MS), m->rc_max_ms);
}

static void on_bus_error(void *ud, int error)
{
        struct ble_manager *m = ud;
        snprintf(m->bus_error, sizeof m->bus_error, "%s", strerror(-error));
        log_warning_errno(error, "ble: D-Bus connection lost: %m; reconnecting");
        bus_close(m, "D-Bus connection lost");
        bus_schedule_retry(m);
}

static int bus_open(struct ble_manager *m)
{
        sd_bus *bus = NULL;
        int r;

        if (m->bus_address) {
                if ((r = sd_bus_new(&bus)) < 0)
                        return r;
                if ((r = sd_bus_set_address(bus, m->bus_address)) < 0 ||
                    (r = sd_bus_set_bus_client(bus, 1)) < 0 ||
                    (r = sd_bus_negotiate_fds(bus, 1)) < 0 ||
                    (r = sd_bus_set_description(bus, "mcugw-ble")) < 0 ||
                    (r = sd_bus_start(bus)) < 0) {
                        sd_bus_unref(bus);
                        return r;
                }
        } else if ((r = sd_bus_open_system_with_description(&bus, "mcugw-ble")) < 0)
                return r;
        m->bus = bus;
        r = sdbus_uv_attach(m->loop, bus, on_bus_error, m, &m->glue);
        /* Matches and calls are all asynchronous: nothing here waits for the bus. */
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &m->match_added, BLUEZ, NULL, IFACE_OM,
                                              "InterfacesAdded", on_interfaces_added, NULL, m);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &m->match_removed, BLUEZ, NULL, IFACE_OM,
                                              "InterfacesRemoved", on_interfaces_removed, NULL, m);
        if (r >= 0)
                r = sd_bus_add_match_async(bus, &m->match_props,
                                           "type='signal',sender='" BLUEZ
                                           "',interface='" IFACE_PROPS
                                           "',member='PropertiesChanged',"
                                           "path_namespace='/org/bluez'",
                                           on_properties_changed, NULL, m);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &m->match_owner, "org.freedesktop.DBus",
                                              "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                              "NameOwnerChanged", on_name_owner_changed, NULL, m);
        if (r < 0) {
                bus_close(m, "D-Bus setup failed");
                return r;
        }
        m->bus_connects++;
        m->bus_error[0] = 0;
        m->bus_backoff_ms = BLE_BUS_RETRY_MIN_MS;
        bluez_refresh(m);
        return 0;
}

static void bus_try_open(struct ble_manager *m)
{
        int r = bus_open(m);
        if (r < 0) {
                snprintf(m->bus_error, sizeof m->bus_error, "%s", strerror(-r));
                log_warning_errno(r, "ble: cannot connect to %s: %m; retrying",
                                  m->bus_address ? m->bus_address : "the system bus");
                bus_schedule_retry(m);
        }
}

/* ---- tick -------------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
        struct ble_manager *m = t->data;

        if (m->stopping)
                return;
        if (!m->bus) {
                if (now_ms(m) >= m->bus_next_ms)
                        bus_try_open(m);
                return;
        }
        for (size_t i = 0; i < m->n_peers; i++) {
                struct ble_peer *p = &m->peers[i];
                if (p->drops_this_tick) {
                        p->flood_secs++;
                        if (p->flood_secs == 1)
                                log_warning("ble %s: dropping notifications (rate limit %llu B/s "
                                            "or the link is not reading)",
                                            p->addr, (unsigned long long)m->notify_rate);
                } else
                        p->flood_secs = 0;
                p->drops_this_tick = 0;
                if (p->flood_secs >= BLE_FLOOD_SECONDS && p->state == PEER_UP) {
                        COUNT(p, flood_disconnects, 1);
                        p->flood_secs = 0;
                        peer_fail(p, "notification flood", true);
                        continue;
                }
                peer_update(p);
        }
        discovery_update(m);
}

/* ---- public ------------------------------------------------------------------------------ */

int ble_manager_new(uv_loop_t *loop, const struct ble_options *o, struct audit *audit,
                    struct link_manager *link, struct ble_manager **ret)
{
        struct ble_manager *m;

        *ret = NULL;
        if (!o->devices.n)
                return 0;
        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->audit = audit;
        m->link = link;
        m->bus_address = o->bus_address ? strdup(o->bus_address) : NULL;
        m->adapter_name = o->adapter ? strdup(o->adapter) : NULL;
        if (m->adapter_name)
                snprintf(m->adapter_prefix, sizeof m->adapter_prefix, "/org/bluez/%s/",
                         m->adapter_name);
        snprintf(m->svc_uuid, sizeof m->svc_uuid, "%s", o->service_uuid);
        snprintf(m->chr_uuid, sizeof m->chr_uuid, "%s", o->characteristic_uuid);
        m->rc_min_ms = MAX(o->reconnect_min_usec / 1000, (uint64_t)100);
        m->rc_max_ms = MAX(o->reconnect_max_usec / 1000, m->rc_min_ms);
        m->notify_rate = o->notify_rate;
        m->acquire = o->acquire;
        m->peers = calloc(o->devices.n, sizeof *m->peers);
        m->ignored = calloc(BLE_IGNORED_MAX, sizeof *m->ignored);
        if (!m->peers || !m->ignored) {
                m->stopping = true;
                manager_maybe_free(m);
                return -ENOMEM;
        }
        for (size_t i = 0; i < o->devices.n; i++) {
                char a[18];
                if (blefrag_address_normalize(o->devices.v[i], a) < 0 || peer_by_addr(m, a))
                        continue;
                struct ble_peer *p = &m->peers[m->n_peers++];
                p->m = m;
                memcpy(p->addr, a, sizeof a);
                snprintf(p->link_name, sizeof p->link_name, "ble:%s", a);
                p->backoff_ms = m->rc_min_ms;
        }
        uv_timer_init(loop, &m->tick);
        m->tick.data = m;
        m->handles++;
        uv_timer_start(&m->tick, on_tick, BLE_TICK_MS, BLE_TICK_MS);
        m->bus_backoff_ms = BLE_BUS_RETRY_MIN_MS;
        log_info("ble: %zu allow-listed peripheral(s), service %s, characteristic %s, bus %s",
                 m->n_peers, m->svc_uuid, m->chr_uuid, m->bus_address ? m->bus_address : "system");
        bus_try_open(m);
        *ret = m;
        return 0;
}

static void tick_closed(uv_handle_t *h)
{
        struct ble_manager *m = h->data;
        m->handles--;
        manager_maybe_free(m);
}

void ble_manager_stop(struct ble_manager *m)
{
        bool sent = false;

        if (!m || m->stopping)
                return;
        for (size_t i = 0; i < m->n_peers; i++) {
                struct ble_peer *p = &m->peers[i];
                /* Release the peripheral so that the MCU sees the link end and starts afresh. */
                if (p->state >= PEER_CONNECTING && p->dev_path && m->bus && m->bluez_up)
                        sent |= sd_bus_call_method_async(m->bus, NULL, BLUEZ, p->dev_path,
                                                         IFACE_DEVICE, "Disconnect", NULL, NULL,
                                                         "") >= 0;
                peer_down(p, "gateway shutting down", false);
        }
        m->stopping = true;
        if (sent)
                sd_bus_flush(m->bus); /* the Disconnect calls above, to a local socket */
        bus_close(m, "gateway shutting down");
        uv_close((uv_handle_t *)&m->tick, tick_closed);
}

static json_t *counters_json(const struct ble_counters *c)
{
        json_t *o = json_object();
#define X(n) json_object_set_new(o, #n, json_integer((json_int_t)c->n));
        PEER_COUNTERS(X)
#undef X
        return o;
}

static json_t *peer_json(const struct ble_peer *p)
{
        json_t *o = json_pack("{ss ss sb sb ss}", "address", p->addr, "state",
                              peer_state_names[p->state], "connected", p->state == PEER_UP,
                              "present", p->dev_path != NULL, "last_reason", p->last_reason);
        json_object_set_new(o, "rssi", p->have_rssi ? json_integer(p->rssi) : json_null());
        if (p->s) {
                json_object_set_new(o, "mtu", json_integer(p->s->wmtu));
                json_object_set_new(o, "packet",
                                    json_integer((json_int_t)blefrag_payload_max(
                                            p->s->wmtu, p->s->write_fd_mode)));
                json_object_set_new(o, "write",
                                    json_string(p->s->write_fd_mode ? "acquired" : "value"));
                json_object_set_new(o, "notify",
                                    json_string(p->s->notify_fd_mode ? "acquired" : "signal"));
                json_object_set_new(o, "tx_queued", json_integer((json_int_t)p->s->tx.len));
                json_object_set_new(o, "rx_queued", json_integer((json_int_t)p->s->rx.len));
        }
        json_object_set_new(o, "counters", counters_json(&p->c));
        return o;
}

json_t *ble_manager_status(struct ble_manager *m)
{
        json_t *o, *peers;
        unsigned up = 0;

        if (!m)
                return json_pack("{sb}", "enabled", false);
        peers = json_array();
        for (size_t i = 0; i < m->n_peers; i++) {
                up += m->peers[i].state == PEER_UP;
                json_array_append_new(peers, peer_json(&m->peers[i]));
        }
        o = json_pack("{sb ss sb sb ss? sb si si sI so}", "enabled", true, "bus",
                      m->bus_address ? m->bus_address : "system", "bus_connected", m->bus != NULL,
                      "bluez", m->bluez_up, "adapter", m->adapter_path, "discovering",
                      m->discovering, "peripherals", (int)m->n_peers, "peripherals_connected",
                      (int)up, "ignored", (json_int_t)m->ignored_total, "devices", peers);
        if (!o)
                return NULL;
        json_object_set_new(o, "bus_error", json_string(m->bus_error));
        json_object_set_new(o, "dbus_messages",
                            json_integer((json_int_t)sdbus_uv_processed(m->glue)));
        json_object_set_new(o, "counters", counters_json(&m->tot));
        return o;
}

int ble_manager_link_stats(struct ble_manager *m, const char *link_name, json_t *out)
{
        struct ble_peer *p;

        if (!m || !link_name || strncmp(link_name, "ble:", 4) != 0)
                return -ENOENT;
        p = peer_by_addr(m, link_name + 4);
        if (!p)
                return -ENOENT;
        json_object_set_new(out, "ble", peer_json(p));
        return 0;
}

/* ---- [BLE] values ------------------------------------------------------------------------- */

int ble_config_parse_device(const char *v, void *field, const char **reason)
{
        char a[18];
        if (*v && blefrag_address_normalize(v, a) < 0) {
                *reason = "expected a Bluetooth address such as AA:BB:CC:DD:EE:FF";
                return -EINVAL;
        }
        return config_parse_strv(*v ? a : v, field, reason);
}

int ble_config_parse_uuid(const char *v, void *field, const char **reason)
{
        char u[37];
        if (blefrag_uuid_normalize(v, u) < 0) {
                *reason = "expected a 128-bit UUID such as 6e4d0001-8e5e-4c39-9a0e-6d6367770000";
                return -EINVAL;
        }
        return config_parse_string(u, field, reason);
}

int ble_config_parse_adapter(const char *v, void *field, const char **reason)
{
        if (*v &&
            (strlen(v) > 32 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(v))) {
                *reason = "expected an adapter name such as hci0";
                return -EINVAL;
        }
        return config_parse_string_opt(v, field, reason);
}
