/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "macro.h"
#include "cred.h"
#include "mqtt.h"

#define MQTT_MAX_SUBS 16

/* The uv_poll_t is the first member of struct mqtt_poll. */
#define container_of_poll(h) ((struct mqtt_poll *)(void *)(h))

struct mqtt_poll {
        uv_poll_t h;
        struct mqtt *m;
        int fd;
        int events;
};

struct mqtt_sub {
        char *filter;
        int mid;
};

struct mqtt {
        uv_loop_t *loop;
        struct mosquitto *mosq;
        struct mqtt_callbacks cb;
        enum mqtt_state state;

        char *host, *client_id, *server_name, *status_topic;
        /* Kept to rebuild the TLS context when the credentials change (mqtt_set_credentials). */
        char *ca_file, *alpn, *cert_file, *key_file, *pkcs11_module;
        SSL_CTX *ssl_ctx; /* our reference; libmosquitto holds its own */
        bool quiet;       /* no "online", no last will (mqtt_set_announce) */
        unsigned port, keepalive_s;
        int protocol;
        uint32_t max_incoming; /* announced Maximum Packet Size (MQTT 5), 0: none */
        uint64_t reconnect_min_ms, reconnect_max_ms;

        struct mqtt_poll *poll;
        uv_timer_t misc_timer, reconnect_timer;
        unsigned open_handles;
        bool stopping;
        bool ever_connected_attempt;
        bool just_connected, session_present;

        uint64_t last_connect_ms;
        unsigned backoff_step;
        int status_mid;

        struct mqtt_sub subs[MQTT_MAX_SUBS];
        size_t n_subs;

        uint64_t connects, attempts, disconnects, subs_refused;
        char last_error[256];
        uint64_t last_error_ms;
};

static const char *const state_names[] = {
        [MQTT_DISCONNECTED] = "disconnected",
        [MQTT_CONNECTING] = "connecting",
        [MQTT_CONNECTED] = "connected",
        [MQTT_STOPPED] = "stopped",
};

const char *mqtt_state_to_string(enum mqtt_state s)
{
        return s < ELEMENTSOF(state_names) ? state_names[s] : "?";
}

enum mqtt_state mqtt_state(const struct mqtt *m)
{
        return m->state;
}

const char *mqtt_last_error(const struct mqtt *m)
{
        return m->last_error;
}

static void set_error(struct mqtt *m, const char *fmt, ...) _printf_(2, 3);
static void set_error(struct mqtt *m, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->last_error, sizeof m->last_error, fmt, ap);
        va_end(ap);
        m->last_error_ms = uv_now(m->loop);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static void ssl_error_string(char *buf, size_t n)
{
        unsigned long e = ERR_get_error();
        if (!e) {
                snprintf(buf, n, "unknown OpenSSL error");
                return;
        }
        ERR_error_string_n(e, buf, n);
        ERR_clear_error();
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
        SSL *ssl;
        struct mqtt *m;
        int err;

        if (ok)
                return ok;
        ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
        m = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
        err = X509_STORE_CTX_get_error(x);
        if (m)
                set_error(m, "server certificate rejected: %s (depth %d)",
                          X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(x));
        return ok;
}

/* libmosquitto sets SNI to the host it connects to; ServerName= overrides it here, just before
 * the ClientHello is built. */
static void info_cb(const SSL *ssl, int where, int ret)
{
        struct mqtt *m;
        if (!(where & SSL_CB_HANDSHAKE_START))
                return;
        m = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
        if (m && m->server_name && strcmp(m->server_name, m->host) != 0)
                SSL_set_tlsext_host_name((SSL *)ssl, m->server_name);
}

static bool is_ip(const char *s)
{
        unsigned char buf[16];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

void *mqtt_tls_ctx_new(const struct mqtt_options *o, char *err, size_t n)
{
        const char *name = o->server_name ? o->server_name : o->host;
        char ebuf[200], kerr[512];
        EVP_PKEY *key = NULL;
        SSL_CTX *ctx;

        /* From an owner-only file (as ssh insists for its keys) or from a PKCS#11 token. */
        if (cred_load_private_key(o->key_file, o->pkcs11_module, &key, kerr, sizeof kerr) < 0) {
                snprintf(err, n, "KeyFile: %s", kerr);
                return NULL;
        }
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) {
                ssl_error_string(ebuf, sizeof ebuf);
                snprintf(err, n, "cannot create a TLS context: %s", ebuf);
                EVP_PKEY_free(key);
                return NULL;
        }
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        /* Read whole socket buffers, not a record header and then its body: with read-ahead a
         * burst of PUBACKs costs one read(2), not two per PUBACK (do_read drains what is
         * buffered, as epoll will not say so). */
        SSL_CTX_set_read_ahead(ctx, 1);
        if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
                ssl_error_string(ebuf, sizeof ebuf);
                snprintf(err, n, "CAFile %s: %s", o->ca_file, ebuf);
                goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
                ssl_error_string(ebuf, sizeof ebuf);
                snprintf(err, n, "CertificateFile %s: %s", o->cert_file, ebuf);
                goto fail;
        }
        if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
                ssl_error_string(ebuf, sizeof ebuf);
                snprintf(err, n, "KeyFile %s: %s", o->key_file, ebuf);
                goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                snprintf(err, n, "KeyFile %s does not match CertificateFile %s", o->key_file,
                         o->cert_file);
                goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
        if (is_ip(name)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), name) != 1) {
                        snprintf(err, n, "bad server address %s", name);
                        goto fail;
                }
        } else {
                X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx),
                                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (X509_VERIFY_PARAM_set1_host(SSL_CTX_get0_param(ctx), name, 0) != 1) {
                        snprintf(err, n, "bad server name %s", name);
                        goto fail;
                }
        }
        if (o->alpn && *o->alpn) {
                size_t l = strlen(o->alpn);
                unsigned char proto[256];
                if (l > 255) {
                        snprintf(err, n, "ALPN protocol name too long");
                        goto fail;
                }
                proto[0] = (unsigned char)l;
                memcpy(proto + 1, o->alpn, l);
                if (SSL_CTX_set_alpn_protos(ctx, proto, (unsigned)l + 1) != 0) {
                        snprintf(err, n, "cannot set ALPN");
                        goto fail;
                }
        }
        SSL_CTX_set_info_callback(ctx, info_cb);
        EVP_PKEY_free(key); /* the context holds its own reference */
        return ctx;
fail:
        EVP_PKEY_free(key);
        SSL_CTX_free(ctx);
        return NULL;
}

/* ---- the loop glue ------------------------------------------------------------------------ */

static void mqtt_schedule_reconnect(struct mqtt *m);
static void mqtt_lost(struct mqtt *m, int rc);

/* Everything the session owns; also the failure path of mqtt_new(). */
static void mqtt_free(struct mqtt *m)
{
        for (size_t i = 0; i < m->n_subs; i++)
                free(m->subs[i].filter);
        if (m->mosq)
                mosquitto_destroy(m->mosq);
        free(m->host);
        free(m->client_id);
        free(m->server_name);
        free(m->status_topic);
        free(m->ca_file);
        free(m->alpn);
        free(m->cert_file);
        free(m->key_file);
        free(m->pkcs11_module);
        SSL_CTX_free(m->ssl_ctx);
        free(m);
}

static void handle_closed(uv_handle_t *h)
{
        struct mqtt *m = h->data;
        if (h->type == UV_POLL)
                free(container_of_poll((uv_poll_t *)h));
        if (--m->open_handles == 0 && m->stopping)
                mqtt_free(m);
}

static void poll_close(struct mqtt *m)
{
        if (!m->poll)
                return;
        uv_close((uv_handle_t *)&m->poll->h, handle_closed);
        m->poll = NULL;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void poll_update(struct mqtt *m)
{
        int ev;
        if (!m->poll)
                return;
        ev = UV_READABLE | (mosquitto_want_write(m->mosq) ? UV_WRITABLE : 0);
        if (ev != m->poll->events) {
                m->poll->events = ev;
                uv_poll_start(&m->poll->h, ev, on_poll);
        }
}

/* After any libmosquitto call: did it lose the connection behind our back? */
static void check_rc(struct mqtt *m, int rc)
{
        if (m->poll && (mosquitto_socket(m->mosq) != m->poll->fd ||
                        (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING)))
                mqtt_lost(m, rc);
}

static void do_read(struct mqtt *m)
{
        int rc;
        SSL *ssl;
        do {
                rc = mosquitto_loop_read(m->mosq, 1);
                ssl = m->poll ? mosquitto_ssl_get(m->mosq) : NULL;
        } while (rc == MOSQ_ERR_SUCCESS && ssl && SSL_has_pending(ssl));
        check_rc(m, rc);
}

static void poll_start_cb(struct mqtt *m)
{
        /* Readable and writable until the TCP connection is up; then write interest follows
         * mosquitto_want_write(). */
        uv_poll_start(&m->poll->h, UV_READABLE | UV_WRITABLE, on_poll);
        m->poll->events = UV_READABLE | UV_WRITABLE;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
        struct mqtt_poll *p = container_of_poll(h);
        struct mqtt *m = p->m;
        bool handshaking;
        SSL *ssl;

        if (status < 0) {
                /* libuv reports EPOLLERR as UV_EBADF. The peer may have sent a TLS alert (say,
                 * "unknown ca") before resetting: let libmosquitto read it so the reason gets
                 * logged, then ask the socket. */
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                do_read(m);
                if (m->poll != p)
                        return;
                getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (uv_now(m->loop) - m->last_error_ms > 100)
                        set_error(m, "socket error: %s",
                                  soerr ? strerror(soerr) : uv_strerror(status));
                mqtt_lost(m, MOSQ_ERR_ERRNO);
                return;
        }
        ssl = mosquitto_ssl_get(m->mosq);
        handshaking = !ssl || !SSL_is_init_finished(ssl);
        if ((events & UV_READABLE) || handshaking)
                do_read(m);
        /* What the callbacks queued (PUBACKs of commands, publishes the owner made from
         * on_published) goes out now rather than one loop iteration later. */
        if (m->poll == p && !handshaking && !(events & UV_WRITABLE) &&
            mosquitto_want_write(m->mosq))
                events |= UV_WRITABLE;
        if (handshaking && m->poll == p) {
                /* libmosquitto 2.0 does not notice a failed non-blocking connect (it spins on
                 * EPIPE): ask the socket, after it had its chance to read a TLS alert. */
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                char c;
                ssize_t k;
                if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                        soerr = errno;
                if (!soerr && (events & UV_READABLE)) {
                        k = recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
                        if (k == 0)
                                soerr = ECONNRESET;
                        else if (k < 0 && errno != EAGAIN && errno != EINTR)
                                soerr = errno;
                }
                if (soerr) {
                        set_error(m, "%s", strerror(soerr));
                        mqtt_lost(m, MOSQ_ERR_CONN_LOST);
                        return;
                }
        }
        if (m->poll == p && (events & UV_WRITABLE)) {
                int rc = mosquitto_loop_write(m->mosq, 1);
                check_rc(m, rc);
        }
        if (m->poll == p)
                poll_update(m);
        if (m->just_connected && m->state == MQTT_CONNECTED) {
                m->just_connected = false;
                if (m->cb.on_connected)
                        m->cb.on_connected(m->cb.userdata, m->session_present);
                poll_update(m);
        }
}

static void on_misc_timer(uv_timer_t *t)
{
        struct mqtt *m = t->data;
        int rc;
        if (!m->poll)
                return;
        rc = mosquitto_loop_misc(m->mosq);
        check_rc(m, rc);
        poll_update(m);
}

static void do_connect(struct mqtt *m)
{
        struct mqtt_poll *p;
        int rc, fd;

        if (m->stopping)
                return;
        m->last_connect_ms = uv_now(m->loop);
        m->attempts++;
        m->state = MQTT_CONNECTING;
        if (!m->ever_connected_attempt) {
                m->ever_connected_attempt = true;
                rc = mosquitto_connect_async(m->mosq, m->host, (int)m->port, (int)m->keepalive_s);
        } else
                rc = mosquitto_reconnect_async(m->mosq);
        if (rc != MOSQ_ERR_SUCCESS) {
                set_error(m, "cannot connect to %s:%u: %s", m->host, m->port,
                          rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
                log_warning("mqtt: %s", m->last_error);
                m->state = MQTT_DISCONNECTED;
                mqtt_schedule_reconnect(m);
                return;
        }
        fd = mosquitto_socket(m->mosq);
        if (fd < 0) {
                set_error(m, "cannot connect to %s:%u: no socket", m->host, m->port);
                m->state = MQTT_DISCONNECTED;
                mqtt_schedule_reconnect(m);
                return;
        }
        p = calloc(1, sizeof *p);
        if (!p) {
                m->state = MQTT_DISCONNECTED;
                mqtt_schedule_reconnect(m);
                return;
        }
        p->m = m;
        p->fd = fd;
        if (uv_poll_init(m->loop, &p->h, fd) < 0) {
                free(p);
                mosquitto_disconnect(m->mosq);
                m->state = MQTT_DISCONNECTED;
                mqtt_schedule_reconnect(m);
                return;
        }
        p->h.data = m;
        m->open_handles++;
        m->poll = p;
        poll_start_cb(m);
        log_debug("mqtt: connecting to %s:%u", m->host, m->port);
}

static void on_reconnect_timer(uv_timer_t *t)
{
        do_connect(t->data);
}

static void mqtt_schedule_reconnect(struct mqtt *m)
{
        uint64_t delay, since, r = 0;

        if (m->stopping)
                return;
        delay = m->reconnect_min_ms << MIN(m->backoff_step, 20u);
        delay = MIN(delay, m->reconnect_max_ms);
        if (m->backoff_step < 32)
                m->backoff_step++;
        /* Full jitter over the upper half: fleets that lost the broker together do not come
         * back together. */
        RAND_bytes((unsigned char *)&r, sizeof r);
        delay = delay / 2 + (delay / 2 ? r % (delay / 2 + 1) : 0);
        delay = MAX(delay, m->reconnect_min_ms);
        /* Never more than one CONNECT per second (AWS IoT Core's limit per client id). */
        since = uv_now(m->loop) - m->last_connect_ms;
        if (since + delay < 1000)
                delay = 1000 - since;
        log_debug("mqtt: reconnecting in %llu ms", (unsigned long long)delay);
        uv_timer_start(&m->reconnect_timer, on_reconnect_timer, delay, 0);
}

/* The connection is gone (from a callback or a failed call): tear down, plan the next try. */
static void mqtt_lost(struct mqtt *m, int rc)
{
        bool was_connected = m->state == MQTT_CONNECTED;

        if (m->state == MQTT_DISCONNECTED || m->state == MQTT_STOPPED) {
                poll_close(m);
                return;
        }
        poll_close(m);
        m->state = m->stopping ? MQTT_STOPPED : MQTT_DISCONNECTED;
        m->just_connected = false;
        if (was_connected)
                m->disconnects++;
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING &&
            uv_now(m->loop) - m->last_error_ms > 100)
                set_error(m, "%s: %s", was_connected ? "connection lost" : "connection failed",
                          rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        if (was_connected)
                log_warning("mqtt: disconnected from %s:%u: %s", m->host, m->port, m->last_error);
        else if (!m->stopping)
                log_warning("mqtt: cannot connect to %s:%u: %s", m->host, m->port, m->last_error);
        if (was_connected && m->cb.on_disconnected)
                m->cb.on_disconnected(m->cb.userdata);
        else if (!was_connected && !m->stopping && m->cb.on_connect_failed)
                m->cb.on_connect_failed(m->cb.userdata, m->last_error);
        mqtt_schedule_reconnect(m);
}

/* ---- libmosquitto callbacks (run inside loop_read/loop_write) ------------------------------ */

static void on_connect_cb(struct mosquitto *mosq, void *ud, int rc, int flags,
                          const mosquitto_property *props)
{
        struct mqtt *m = ud;

        if (rc != 0) {
                set_error(m, "broker refused the connection: %s",
                          m->protocol == 5 ? mosquitto_reason_string(rc)
                                           : mosquitto_connack_string(rc));
                log_error("mqtt: %s", m->last_error);
                return; /* libmosquitto disconnects; on_disconnect follows */
        }
        m->state = MQTT_CONNECTED;
        m->connects++;
        m->backoff_step = 0;
        m->last_error[0] = 0;
        m->session_present = flags & 1;
        log_info("mqtt: connected to %s:%u as %s (MQTT %s, session %s)", m->host, m->port,
                 m->client_id, m->protocol == 5 ? "5" : "3.1.1",
                 m->session_present ? "resumed" : "new");
        if (!m->quiet)
                mosquitto_publish(m->mosq, &m->status_mid, m->status_topic, 6, "online", 1, true);
        for (size_t i = 0; i < m->n_subs; i++)
                mosquitto_subscribe(m->mosq, &m->subs[i].mid, m->subs[i].filter, 1);
        /* Tell the owner after libmosquitto has re-queued the old in-flight messages, which it
         * does when this callback returns: new publishes must go after them. */
        m->just_connected = true;
}

static void on_disconnect_cb(struct mosquitto *mosq, void *ud, int rc,
                             const mosquitto_property *props)
{
        struct mqtt *m = ud;
        if (m->stopping)
                return;
        mqtt_lost(m, rc == 0 ? MOSQ_ERR_CONN_LOST : rc);
}

static void on_publish_cb(struct mosquitto *mosq, void *ud, int mid, int reason,
                          const mosquitto_property *props)
{
        struct mqtt *m = ud;
        if (mid == m->status_mid) {
                m->status_mid = -1; /* message ids wrap at 65535 */
                return;
        }
        if (m->cb.on_published)
                m->cb.on_published(m->cb.userdata, mid, reason);
}

static void on_message_cb(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg,
                          const mosquitto_property *props)
{
        struct mqtt *m = ud;
        if (m->cb.on_message)
                m->cb.on_message(m->cb.userdata, msg->topic, msg->payload,
                                 (size_t)MAX(msg->payloadlen, 0));
}

static void on_subscribe_cb(struct mosquitto *mosq, void *ud, int mid, int qos_count,
                            const int *granted, const mosquitto_property *props)
{
        struct mqtt *m = ud;
        const char *filter = "?";

        for (size_t i = 0; i < m->n_subs; i++)
                if (m->subs[i].mid == mid)
                        filter = m->subs[i].filter;
        for (int i = 0; i < qos_count; i++)
                if (granted[i] >= 0x80) {
                        m->subs_refused++;
                        set_error(m, "broker refused the subscription to %s (reason 0x%02x)",
                                  filter, granted[i]);
                        log_error("mqtt: %s", m->last_error);
                } else
                        log_debug("mqtt: subscribed to %s (QoS %d)", filter, granted[i]);
}

static void on_log_cb(struct mosquitto *mosq, void *ud, int level, const char *str)
{
        struct mqtt *m = ud;
        if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
                /* OpenSSL's reasons ("tlsv1 alert unknown ca", "certificate verify failed") come
                 * through here; keep them as the last error. */
                if (strstr(str, "OpenSSL Error") || !m->last_error[0] ||
                    uv_now(m->loop) - m->last_error_ms > 100)
                        set_error(m, "%s", str);
                log_warning("mqtt: %s", str);
        }
}

/* ---- API ---------------------------------------------------------------------------------- */

int mqtt_new(uv_loop_t *loop, const struct mqtt_options *o, const struct mqtt_callbacks *cb,
             struct mqtt **ret)
{
        static bool lib_ready;
        struct mqtt *m;
        char err[512];
        SSL_CTX *ctx;
        int rc;

        if (!lib_ready) {
                mosquitto_lib_init();
                lib_ready = true;
        }
        ctx = mqtt_tls_ctx_new(o, err, sizeof err);
        if (!ctx)
                return log_error_errno(-EINVAL, "mqtt: %s", err);
        m = calloc(1, sizeof *m);
        if (!m) {
                SSL_CTX_free(ctx);
                return -ENOMEM;
        }
        m->loop = loop;
        m->cb = *cb;
        m->port = o->port;
        m->protocol = o->protocol;
        m->keepalive_s = o->keepalive_s;
        m->reconnect_min_ms = MAX(o->reconnect_min_ms, (uint64_t)1000);
        m->reconnect_max_ms = MAX(o->reconnect_max_ms, m->reconnect_min_ms);
        m->status_mid = -1;
        m->host = strdup(o->host);
        m->client_id = strdup(o->client_id);
        m->server_name = o->server_name ? strdup(o->server_name) : NULL;
        m->status_topic = strdup(o->status_topic);
        m->ca_file = strdup(o->ca_file);
        m->cert_file = strdup(o->cert_file);
        m->key_file = strdup(o->key_file);
        m->alpn = o->alpn ? strdup(o->alpn) : NULL;
        m->pkcs11_module = o->pkcs11_module ? strdup(o->pkcs11_module) : NULL;
        if (!m->host || !m->client_id || !m->status_topic || !m->ca_file || !m->cert_file ||
            !m->key_file || (o->alpn && !m->alpn) || (o->pkcs11_module && !m->pkcs11_module) ||
            (o->server_name && !m->server_name)) {
                rc = -ENOMEM;
                goto fail;
        }
        SSL_CTX_set_app_data(ctx, m);
        m->mosq = mosquitto_new(m->client_id, false, m);
        if (!m->mosq) {
                rc = log_error_errno(-errno, "mqtt: cannot create the client: %m");
                goto fail;
        }
        mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                             o->protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
        mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_int_option(m->mosq, MOSQ_OPT_SEND_MAXIMUM, (int)MAX(o->max_inflight, 1u));
        mosquitto_max_inflight_messages_set(m->mosq, MAX(o->max_inflight, 1u));
        if (mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, ctx) != MOSQ_ERR_SUCCESS ||
            mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS) {
                rc = log_error_errno(-EINVAL, "mqtt: libmosquitto refused the TLS context");
                goto fail;
        }
        m->ssl_ctx = ctx; /* libmosquitto holds its own reference */
        ctx = NULL;
        if (mosquitto_will_set(m->mosq, m->status_topic, 7, "offline", 1, true) !=
            MOSQ_ERR_SUCCESS) {
                rc = log_error_errno(-EINVAL, "mqtt: cannot set the last will on %s",
                                     m->status_topic);
                goto fail;
        }
        if (o->protocol == 5 && o->max_incoming) {
                mosquitto_property *props = NULL;
                /* libmosquitto 2.0 has no asynchronous connect that takes CONNECT properties,
                 * but mosquitto_connect_bind_v5() stores them before it looks at the host: with
                 * no host it stops there (MOSQ_ERR_INVAL), and every later connect_async and
                 * reconnect_async sends them. */
                if (mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                                 o->max_incoming) == MOSQ_ERR_SUCCESS &&
                    mosquitto_connect_bind_v5(m->mosq, NULL, (int)m->port, (int)m->keepalive_s,
                                              NULL, props) == MOSQ_ERR_INVAL)
                        m->max_incoming = o->max_incoming;
                else
                        log_warning("mqtt: cannot announce a Maximum Packet Size of %u",
                                    o->max_incoming);
                mosquitto_property_free_all(&props);
        }
        mosquitto_connect_v5_callback_set(m->mosq, on_connect_cb);
        mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect_cb);
        mosquitto_publish_v5_callback_set(m->mosq, on_publish_cb);
        mosquitto_message_v5_callback_set(m->mosq, on_message_cb);
        mosquitto_subscribe_v5_callback_set(m->mosq, on_subscribe_cb);
        mosquitto_log_callback_set(m->mosq, on_log_cb);

        uv_timer_init(loop, &m->misc_timer);
        uv_timer_init(loop, &m->reconnect_timer);
        m->misc_timer.data = m->reconnect_timer.data = m;
        m->open_handles = 2;
        *ret = m;
        return 0;
fail:
        SSL_CTX_free(ctx); /* NULL once m->ssl_ctx owns it */
        mqtt_free(m);
        return rc;
}

int mqtt_set_credentials(struct mqtt *m, const char *cert_file, const char *key_file,
                         bool reconnect, char *err, size_t n)
{
        struct mqtt_options o = {
                .host = m->host,
                .server_name = m->server_name,
                .ca_file = m->ca_file,
                .cert_file = cert_file,
                .key_file = key_file,
                .pkcs11_module = m->pkcs11_module,
                .alpn = m->alpn,
        };
        char *c = NULL, *k = NULL;
        SSL_CTX *ctx, *old;

        if (m->stopping)
                return -ESHUTDOWN;
        ctx = mqtt_tls_ctx_new(&o, err, n);
        if (!ctx)
                return -EINVAL;
        c = strdup(cert_file);
        k = strdup(key_file);
        if (!c || !k) {
                free(c);
                free(k);
                SSL_CTX_free(ctx);
                return -ENOMEM;
        }
        SSL_CTX_set_app_data(ctx, m);
        if (mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, ctx) != MOSQ_ERR_SUCCESS) {
                snprintf(err, n, "libmosquitto refused the TLS context");
                free(c);
                free(k);
                SSL_CTX_free(ctx);
                return -EINVAL;
        }
        /* libmosquitto took a reference to the new context; up to 2.0 (options.c) it does not
         * drop the one it held on the old: drop both ours and that one (a live connection keeps
         * its own reference). Later versions: only ours (at worst one context leaks). */
        old = m->ssl_ctx;
        m->ssl_ctx = ctx;
        SSL_CTX_free(old);
#if LIBMOSQUITTO_VERSION_NUMBER < 2001000
        SSL_CTX_free(old);
#endif
        free(m->cert_file);
        free(m->key_file);
        m->cert_file = c;
        m->key_file = k;
        if (reconnect && m->state == MQTT_CONNECTED) {
                log_info("mqtt: reconnecting with certificate %s", cert_file);
                m->backoff_step = 0;
                mosquitto_disconnect(m->mosq);
                mqtt_lost(m, MOSQ_ERR_SUCCESS);
        } else if (reconnect && m->state == MQTT_CONNECTING) {
                /* Not a failure of the new pair: start over with it. */
                poll_close(m);
                m->state = MQTT_DISCONNECTED;
                m->backoff_step = 0;
                mqtt_schedule_reconnect(m);
        }
        return 0;
}

int mqtt_set_announce(struct mqtt *m, bool on)
{
        bool was_quiet = m->quiet;

        m->quiet = !on;
        if (!on)
                return mosquitto_will_clear(m->mosq) == MOSQ_ERR_SUCCESS ? 0 : -EINVAL;
        if (mosquitto_will_set(m->mosq, m->status_topic, 7, "offline", 1, true) != MOSQ_ERR_SUCCESS)
                return -EINVAL;
        /* Connected quietly: say "online" now (the will counts from the next CONNECT). */
        if (was_quiet && m->state == MQTT_CONNECTED) {
                mosquitto_publish(m->mosq, &m->status_mid, m->status_topic, 6, "online", 1, true);
                poll_update(m);
        }
        return 0;
}

const char *mqtt_cert_file(const struct mqtt *m)
{
        return m->cert_file;
}

int mqtt_start(struct mqtt *m)
{
        uv_timer_start(&m->misc_timer, on_misc_timer, 1000, 1000);
        do_connect(m);
        return 0;
}

int mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, bool retain,
                 int *ret_mid)
{
        int rc, mid = 0;

        if (m->state != MQTT_CONNECTED)
                return -ENOTCONN;
        if (len > 256 * 1024 * 1024)
                return -EMSGSIZE;
        rc = mosquitto_publish(m->mosq, &mid, topic, (int)len, payload, 1, retain);
        switch (rc) {
        case MOSQ_ERR_SUCCESS: break;
        case MOSQ_ERR_NO_CONN: return -ENOTCONN;
        case MOSQ_ERR_PAYLOAD_SIZE:
        case MOSQ_ERR_OVERSIZE_PACKET: return -EMSGSIZE;
        case MOSQ_ERR_NOMEM: return -ENOMEM;
        case MOSQ_ERR_INVAL:
        case MOSQ_ERR_MALFORMED_UTF8: return -EINVAL;
        default:
                log_debug("mqtt: publish to %s failed: %s", topic, mosquitto_strerror(rc));
                check_rc(m, rc);
                return -EIO;
        }
        check_rc(m, MOSQ_ERR_SUCCESS);
        poll_update(m);
        if (ret_mid)
                *ret_mid = mid;
        return 0;
}

int mqtt_subscribe(struct mqtt *m, const char *filter)
{
        if (m->n_subs >= MQTT_MAX_SUBS)
                return -E2BIG;
        if (!(m->subs[m->n_subs].filter = strdup(filter)))
                return -ENOMEM;
        m->subs[m->n_subs].mid = -1;
        if (m->state == MQTT_CONNECTED) {
                mosquitto_subscribe(m->mosq, &m->subs[m->n_subs].mid, filter, 1);
                poll_update(m);
        }
        m->n_subs++;
        return 0;
}

void mqtt_stop(struct mqtt *m)
{
        if (!m)
                return;
        m->stopping = true;
        if (m->state == MQTT_CONNECTED) {
                /* A clean DISCONNECT suppresses the will, so say "offline" ourselves; MQTT 5
                 * can ask the broker to send the will instead. */
                if (m->protocol == 5)
                        mosquitto_disconnect_v5(m->mosq, MQTT_RC_DISCONNECT_WITH_WILL_MSG, NULL);
                else {
                        if (!m->quiet)
                                mosquitto_publish(m->mosq, NULL, m->status_topic, 7, "offline", 1,
                                                  true);
                        mosquitto_disconnect(m->mosq);
                }
                /* Best effort, non-blocking: what does not fit in the socket buffer now is
                 * covered by the will. */
                for (int i = 0; i < 4 && mosquitto_want_write(m->mosq); i++)
                        if (mosquitto_loop_write(m->mosq, 1) != MOSQ_ERR_SUCCESS)
                                break;
        }
        m->state = MQTT_STOPPED;
        poll_close(m);
        uv_close((uv_handle_t *)&m->misc_timer, handle_closed);
        uv_close((uv_handle_t *)&m->reconnect_timer, handle_closed);
}

json_t *mqtt_status_json(const struct mqtt *m)
{
        char server[300];
        snprintf(server, sizeof server, "%s:%u", m->host, m->port);
        return json_pack("{ss ss ss ss sI sI sI sI ss sI}", "state", mqtt_state_to_string(m->state),
                         "server", server, "client_id", m->client_id, "protocol",
                         m->protocol == 5 ? "5" : "3.1.1", "connects", (json_int_t)m->connects,
                         "attempts", (json_int_t)m->attempts, "disconnects",
                         (json_int_t)m->disconnects, "subscriptions_refused",
                         (json_int_t)m->subs_refused, "last_error", m->last_error, "max_incoming",
                         (json_int_t)m->max_incoming);
}
