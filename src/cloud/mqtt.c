/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
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

#include "basic/alloc-util.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/cred.h"
#include "cloud/mqtt.h"

/* Lookups running at once (the one whose answer is wanted and the abandoned ones that have not
 * returned yet): a resolver that never answers costs at most this many parked threads. */
#define MQTT_MAX_LOOKUPS 4
/* A lookup that has not answered after this many resolve timeouts is abandoned: the next attempt
 * starts a new one instead of waiting for it again (glibc gives up after attempts x timeout per
 * name server, 30 s with three of them and the defaults). */
#define MQTT_LOOKUP_ABANDON_TIMEOUTS 6

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

/*
 * Name resolution runs on a thread of its own so that a resolver that does not answer (getaddrinfo
 * blocks for timeout x attempts x name servers, or forever in a stuck NSS module) never holds up
 * the loop. Not uv_getaddrinfo(): its request keeps uv_run() from returning until getaddrinfo
 * does, so a stopping daemon would wait for the resolver, and it ties up a slot of libuv's shared
 * threadpool. Here the thread is detached and owns a reference to this block; the session owns
 * another. The answer comes back through the session's uv_async_t, which the thread touches only
 * under the lock and only while the session has not closed it (async != NULL). Every lookup has a
 * generation: an answer for anything but the current one is dropped by the thread itself.
 */
typedef int (*mqtt_resolver_fn)(const char *node, const char *service, const struct addrinfo *hints,
                                struct addrinfo **res);

struct mqtt_dns {
        pthread_mutex_t lock;
        unsigned refs; /* the session's, plus one per running thread */
        uv_async_t *async;
        char *host;          /* immutable */
        mqtt_resolver_fn fn; /* immutable */
        unsigned gen;        /* the lookup whose answer is wanted */
        unsigned threads;    /* lookups still running, abandoned ones included */
        bool running;        /* the wanted one is running */
        bool done;           /* and has answered: err, sys_errno, res */
        int err, sys_errno;
        struct addrinfo *res;
        uint64_t started_ms; /* loop time the wanted one started (loop thread only) */
};

struct dns_job {
        struct mqtt_dns *d;
        unsigned gen;
};

/* How sure we are of why an attempt failed: a more specific reason is never overwritten by a
 * vaguer one that comes later (the OpenSSL error queue after a verify callback, "A TLS error
 * occurred" after both). */
enum {
        REASON_NONE,
        REASON_GENERIC, /* a libmosquitto return code */
        REASON_LOG,     /* a libmosquitto log line */
        REASON_SOCKET,  /* the socket's own error */
        REASON_TLS,     /* an OpenSSL error or a TLS alert from the broker */
        REASON_EXACT,   /* certificate verification, timeouts, CONNACK */
};

/* One Host= entry: its name (or address), port, the name its certificate must match and its own
 * resolver block. */
struct mqtt_host {
        char *name;
        unsigned port;
        char *verify_name; /* ServerName=, else name */
        bool sni;
        struct mqtt_dns *dns;
};

struct mqtt {
        uv_loop_t *loop;
        struct mosquitto *mosq;
        struct mqtt_callbacks cb;
        enum mqtt_state state;

        /* Every Host= in order; host, port, verify_name, sni and dns point into the one being
         * tried (or connected to). */
        struct mqtt_host *hosts;
        unsigned n_hosts, host_index;
        const char *host;
        char *client_id, *server_name, *status_topic;
        /* Kept to rebuild the TLS context when the credentials change (mqtt_set_credentials). */
        char *ca_file, *alpn, *cert_file, *key_file, *pkcs11_module;
        /* The name the broker's certificate must match (ServerName=, else Host=); sent as SNI
         * unless it is an IP address. The socket connects to a numeric address. */
        const char *verify_name;
        bool sni;
        SSL_CTX *ssl_ctx; /* our reference; libmosquitto holds its own; NULL: the
                           * credentials did not load (tls_ensure() retries every round) */
        bool quiet;       /* no "online", no last will (mqtt_set_announce) */
        bool cred_retry;  /* an operator asked to try now (mqtt_reconnect_now) */
        unsigned port, keepalive_s;
        int protocol;
        uint64_t reconnect_min_ms, reconnect_max_ms;
        uint64_t resolve_timeout_ms, connect_timeout_ms;

        struct mqtt_poll *poll;
        uv_timer_t misc_timer, reconnect_timer, connect_timer;
        uv_async_t dns_async;
        struct mqtt_dns *dns;
        unsigned open_handles;
        bool stopping;
        bool just_connected, session_present;

        /* One round: for each Host= in order, resolve, then try every address in order until
         * one gets a CONNACK. */
        bool resolving;
        bool round_reached; /* an address of some Host= was tried this round */
        struct addrinfo *addrs, *addr_next;
        unsigned n_addrs, addr_index;
        char addr[INET6_ADDRSTRLEN + IF_NAMESIZE + 2]; /* the address of this attempt */
        bool tls_done; /* this attempt finished its handshake (so CONNECT went out) */
        bool refused;  /* this attempt got a CONNACK refusal */
        char reason[256];
        int reason_level;

        uint64_t last_connect_ms;
        unsigned backoff_step;
        int status_mid;

        struct mqtt_sub *subs; /* the session's (cloud/session.c) filters, each once */
        size_t n_subs, n_subs_alloc;

        uint64_t connects, attempts, disconnects, subs_refused, lookups;
        char last_error[256];
        uint32_t max_incoming; /* announced Maximum Packet Size (MQTT 5), 0: none */
};

static mqtt_resolver_fn default_resolver = getaddrinfo;

void mqtt_set_resolver(int (*fn)(const char *node, const char *service,
                                 const struct addrinfo *hints, struct addrinfo **res))
{
        default_resolver = fn ? fn : getaddrinfo;
}

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
}

/* Why the current attempt (or connection) is failing, if nothing more certain is known yet. */
static void note(struct mqtt *m, int level, const char *fmt, ...) _printf_(3, 4);
static void note(struct mqtt *m, int level, const char *fmt, ...)
{
        va_list ap;
        if (level <= m->reason_level)
                return;
        va_start(ap, fmt);
        vsnprintf(m->reason, sizeof m->reason, fmt, ap);
        va_end(ap);
        m->reason_level = level;
}

static void reason_clear(struct mqtt *m)
{
        m->reason[0] = 0;
        m->reason_level = REASON_NONE;
}

static const char *mosq_strerror(int rc, int err)
{
        if (rc == MOSQ_ERR_ERRNO)
                return strerror(err);
        if (rc == MOSQ_ERR_KEEPALIVE) /* "Unknown error." in libmosquitto 2.0 */
                return "keepalive timeout";
        return mosquitto_strerror(rc);
}

static void fmt_duration(char *buf, size_t n, uint64_t ms)
{
        if (ms % 1000 == 0)
                snprintf(buf, n, "%llu s", (unsigned long long)(ms / 1000));
        else
                snprintf(buf, n, "%llu ms", (unsigned long long)ms);
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

/* Append s to buf (", " between entries), printable ASCII only: names come from the peer. */
static void append_name(char *buf, size_t n, const unsigned char *s, size_t len)
{
        size_t off = strlen(buf);
        if (off && off + 2 < n) {
                memcpy(buf + off, ", ", 3);
                off += 2;
        }
        for (size_t i = 0; i < len && off + 1 < n; i++)
                buf[off++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
        buf[off] = 0;
}

/* The names a certificate is valid for: its DNS and IP subjectAltNames, else its CN. */
static void cert_names(X509 *x, char *buf, size_t n)
{
        GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        int cn;

        buf[0] = 0;
        for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
                char ip[INET6_ADDRSTRLEN];
                if (g->type == GEN_DNS)
                        append_name(buf, n, ASN1_STRING_get0_data(g->d.dNSName),
                                    (size_t)ASN1_STRING_length(g->d.dNSName));
                else if (g->type == GEN_IPADD &&
                         (ASN1_STRING_length(g->d.iPAddress) == 4 ||
                          ASN1_STRING_length(g->d.iPAddress) == 16) &&
                         inet_ntop(ASN1_STRING_length(g->d.iPAddress) == 4 ? AF_INET : AF_INET6,
                                   ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof ip))
                        append_name(buf, n, (const unsigned char *)ip, strlen(ip));
        }
        GENERAL_NAMES_free(gens);
        if (buf[0])
                return;
        cn = X509_NAME_get_index_by_NID(X509_get_subject_name(x), NID_commonName, -1);
        if (cn >= 0) {
                ASN1_STRING *s =
                        X509_NAME_ENTRY_get_data(X509_NAME_get_entry(X509_get_subject_name(x), cn));
                append_name(buf, n, ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
        }
        if (!buf[0])
                snprintf(buf, n, "no name at all");
}

static void dn_string(const X509_NAME *name, char *buf, size_t n)
{
        BIO *b = BIO_new(BIO_s_mem());
        int l = 0;
        buf[0] = 0;
        if (!b)
                return;
        if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0)
                l = BIO_read(b, buf, (int)n - 1);
        buf[l > 0 ? l : 0] = 0;
        BIO_free(b);
        for (char *p = buf; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                        *p = '?';
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
        char names[160], subject[160], issuer[160];
        X509 *cert;
        SSL *ssl;
        struct mqtt *m;
        int err, depth;

        if (ok)
                return ok;
        ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
        m = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
        if (!m)
                return ok;
        err = X509_STORE_CTX_get_error(x);
        depth = X509_STORE_CTX_get_error_depth(x);
        cert = X509_STORE_CTX_get_current_cert(x);
        subject[0] = issuer[0] = 0;
        if (cert) {
                dn_string(X509_get_subject_name(cert), subject, sizeof subject);
                dn_string(X509_get_issuer_name(cert), issuer, sizeof issuer);
        }
        switch (err) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
                if (cert)
                        cert_names(cert, names, sizeof names);
                else
                        snprintf(names, sizeof names, "?");
                note(m, REASON_EXACT, "%s mismatch: the broker's certificate is for %s, not %s%s",
                     err == X509_V_ERR_HOSTNAME_MISMATCH ? "hostname" : "IP address", names,
                     m->verify_name, m->server_name ? " (ServerName=)" : "");
                break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: {
                /* Name the broker's own certificate and the CA its chain ends with. */
                STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(x);
                X509 *leaf = chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : cert;
                if (leaf && leaf != cert)
                        dn_string(X509_get_subject_name(leaf), subject, sizeof subject);
                note(m, REASON_EXACT,
                     "unknown CA: the broker's certificate (%s) chains to %s, which is not in "
                     "CAFile=%s (%s)",
                     subject[0] ? subject : "?", issuer[0] ? issuer : "?", m->ca_file,
                     X509_verify_cert_error_string(err));
                break;
        }
        default:
                note(m, REASON_EXACT, "the broker's certificate was rejected: %s (%s, depth %d)",
                     X509_verify_cert_error_string(err), subject[0] ? subject : "?", depth);
        }
        return ok;
}

static bool is_ip(const char *s);

/* The name (or address) this connection's certificate must match: the context has the first
 * Host='s; another Host= (without ServerName=) brings its own. */
static void ssl_set_verify_name(SSL *ssl, const char *name)
{
        X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
        if (is_ip(name)) {
                X509_VERIFY_PARAM_set1_host(p, NULL, 0);
                X509_VERIFY_PARAM_set1_ip_asc(p, name);
        } else {
                X509_VERIFY_PARAM_set1_ip(p, NULL, 0);
                X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                X509_VERIFY_PARAM_set1_host(p, name, 0);
        }
}

/* libmosquitto sets SNI to the address it connects to, a numeric one: replace it with the name
 * the certificate is checked against, or none when that is an address (RFC 6066: no literal IP
 * addresses in SNI), just before the ClientHello is built. */
static void info_cb(const SSL *ssl, int where, int ret)
{
        struct mqtt *m;
        if (where & SSL_CB_HANDSHAKE_START) {
                m = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
                if (m && m->n_hosts > 1 && !m->server_name)
                        ssl_set_verify_name((SSL *)ssl, m->verify_name);
                if (m)
                        SSL_set_tlsext_host_name((SSL *)ssl,
                                                 m->sni ? (char *)m->verify_name : NULL);
        } else if (where & SSL_CB_HANDSHAKE_DONE) {
                m = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
                if (m)
                        m->tls_done = true;
        }
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
        /* Read through cred_file_bio() (regular files only, bounded), not by OpenSSL's own
         * fopen(): a FIFO or a device named here must not stall the daemon. */
        if (cred_ssl_ctx_load_ca(ctx, o->ca_file, kerr, sizeof kerr) < 0) {
                snprintf(err, n, "CAFile: %s", kerr);
                goto fail;
        }
        if (cred_ssl_ctx_use_chain(ctx, o->cert_file, kerr, sizeof kerr) < 0) {
                snprintf(err, n, "CertificateFile: %s", kerr);
                goto fail;
        }
        if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
                if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
                        ERR_clear_error();
                        snprintf(err, n, "KeyFile %s does not match CertificateFile %s",
                                 o->key_file, o->cert_file);
                        goto fail;
                }
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

/* ---- name resolution ---------------------------------------------------------------------- */

static void dns_free(struct mqtt_dns *d)
{
        if (d->res)
                freeaddrinfo(d->res);
        pthread_mutex_destroy(&d->lock);
        free(d->host);
        free(d);
}

static struct mqtt_dns *dns_new(const char *host)
{
        struct mqtt_dns *d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        d->host = strdup(host);
        if (!d->host || pthread_mutex_init(&d->lock, NULL) != 0) {
                free(d->host);
                free(d);
                return NULL;
        }
        d->refs = 1;
        d->fn = default_resolver;
        return d;
}

/* The session lets go (its uv_async_t is about to be closed): a lookup still running finishes
 * on its own and frees what is left. */
static void dns_release(struct mqtt_dns *d)
{
        bool last;

        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->async = NULL;
        d->running = false;
        d->gen++; /* nobody wants any answer now */
        last = --d->refs == 0;
        pthread_mutex_unlock(&d->lock);
        if (last)
                dns_free(d);
}

static void *dns_thread(void *arg)
{
        struct dns_job *j = arg;
        struct mqtt_dns *d = j->d;
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
        };
        struct addrinfo *res = NULL;
        int err, sys_errno;
        bool last;

        err = d->fn(d->host, NULL, &hints, &res);
        sys_errno = errno;
        if (err)
                res = NULL;
        pthread_mutex_lock(&d->lock);
        d->threads--;
        if (j->gen == d->gen && d->running) {
                d->running = false;
                d->done = true;
                d->err = err;
                d->sys_errno = sys_errno;
                d->res = TAKE_PTR(res);
                if (d->async)
                        uv_async_send(d->async);
        }
        last = --d->refs == 0;
        pthread_mutex_unlock(&d->lock);
        if (res)
                freeaddrinfo(res); /* an abandoned lookup */
        free(j);
        if (last)
                dns_free(d);
        return NULL;
}

/* Under d->lock: start a lookup that becomes the wanted one. */
static int dns_spawn(struct mqtt_dns *d, uint64_t now)
{
        struct dns_job *j = malloc(sizeof *j);
        pthread_attr_t attr;
        sigset_t all, old;
        pthread_t t;
        int r;

        if (!j)
                return -ENOMEM;
        if ((r = pthread_attr_init(&attr)) != 0) {
                free(j);
                return -r;
        }
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        j->d = d;
        j->gen = ++d->gen;
        d->threads++;
        d->refs++;
        d->running = true;
        d->done = false;
        d->started_ms = now;
        /* Signals are the loop's business (uv_signal): none for the resolver thread. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&t, &attr, dns_thread, j);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                d->threads--;
                d->refs--;
                d->running = false;
                free(j);
                return -r;
        }
        return 0;
}

/* ---- the loop glue ------------------------------------------------------------------------ */

static void mqtt_schedule_reconnect(struct mqtt *m);
static void mqtt_lost(struct mqtt *m, int rc, int err);
static void try_next_address(struct mqtt *m);
static void host_start(struct mqtt *m);

static void addrs_free(struct mqtt *m)
{
        if (m->addrs)
                freeaddrinfo(m->addrs);
        m->addrs = m->addr_next = NULL;
        m->n_addrs = m->addr_index = 0;
}

/* Everything the session owns; also the failure path of mqtt_new(). */
static void mqtt_free(struct mqtt *m)
{
        for (size_t i = 0; i < m->n_subs; i++)
                free(m->subs[i].filter);
        free(m->subs);
        if (m->mosq)
                mosquitto_destroy(m->mosq);
        for (unsigned i = 0; m->hosts && i < m->n_hosts; i++) {
                dns_release(m->hosts[i].dns);
                free(m->hosts[i].name);
                free(m->hosts[i].verify_name);
        }
        free(m->hosts);
        addrs_free(m);
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

/* After any libmosquitto call: did it lose the connection behind our back? err: errno right
 * after the call. */
static void check_rc(struct mqtt *m, int rc, int err)
{
        if (m->poll && (mosquitto_socket(m->mosq) != m->poll->fd ||
                        (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING)))
                mqtt_lost(m, rc, err);
}

static void do_read(struct mqtt *m)
{
        int rc, err;
        SSL *ssl;
        do {
                rc = mosquitto_loop_read(m->mosq, 1);
                err = errno;
                ssl = m->poll ? mosquitto_ssl_get(m->mosq) : NULL;
        } while (rc == MOSQ_ERR_SUCCESS && ssl && SSL_has_pending(ssl));
        check_rc(m, rc, err);
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
                 * noted, then ask the socket. */
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                do_read(m);
                if (m->poll != p)
                        return;
                getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                note(m, REASON_SOCKET, "socket error: %s",
                     soerr ? strerror(soerr) : uv_strerror(status));
                mqtt_lost(m, MOSQ_ERR_CONN_LOST, 0);
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
                        note(m, REASON_SOCKET, "%s", strerror(soerr));
                        mqtt_lost(m, MOSQ_ERR_CONN_LOST, 0);
                        return;
                }
        }
        if (m->poll == p && (events & UV_WRITABLE)) {
                int rc = mosquitto_loop_write(m->mosq, 1);
                check_rc(m, rc, errno);
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
        /* Keepalive only once connected: before the CONNACK, the connect timeout applies. */
        if (!m->poll || m->state != MQTT_CONNECTED)
                return;
        rc = mosquitto_loop_misc(m->mosq);
        check_rc(m, rc, errno);
        poll_update(m);
}

/* The round is over without a session: back off, then resolve again. on_connect_failed only
 * for rounds that reached a server (a lookup that failed says nothing about the credentials). */
static void round_failed(struct mqtt *m, bool notify)
{
        addrs_free(m);
        m->resolving = false;
        uv_timer_stop(&m->connect_timer);
        if (m->stopping) {
                m->state = MQTT_STOPPED;
                return;
        }
        m->state = MQTT_DISCONNECTED;
        if (notify && m->cb.on_connect_failed)
                m->cb.on_connect_failed(m->cb.userdata, m->last_error);
        mqtt_schedule_reconnect(m);
}

static void on_next_host(uv_timer_t *t)
{
        host_start(t->data);
}

/* Every address of this Host= failed (or its name did not resolve): the next Host= after delay
 * ms, or the backoff after the last one. on_connect_failed only when some Host= was reached. */
static void host_failed(struct mqtt *m, uint64_t delay)
{
        if (m->host_index + 1 >= m->n_hosts || m->stopping) {
                round_failed(m, m->round_reached);
                return;
        }
        addrs_free(m);
        m->resolving = false;
        uv_timer_stop(&m->connect_timer);
        m->host_index++;
        uv_timer_start(&m->reconnect_timer, on_next_host, delay, 0);
}

/* The Host= tried after this one in this round ("" after the last). */
static const char *next_hint(const struct mqtt *m, char *buf, size_t n)
{
        const struct mqtt_host *h;
        if (m->addr_next && !m->refused) {
                snprintf(buf, n, "; trying the next address");
                return buf;
        }
        if (m->host_index + 1 >= m->n_hosts) {
                buf[0] = 0;
                return buf;
        }
        h = &m->hosts[m->host_index + 1];
        snprintf(buf, n, strchr(h->name, ':') ? "; trying [%s]:%u next" : "; trying %s:%u next",
                 h->name, h->port);
        return buf;
}

/* One address failed: say why (the most certain reason noted), and whether another follows. */
static void attempt_log(struct mqtt *m, bool more)
{
        char hint[300];

        if (!m->reason[0])
                note(m, REASON_GENERIC, "connection failed");
        if (m->tls_done && !m->refused && m->reason_level < REASON_TLS) {
                /* With TLS 1.3 the broker checks our certificate after our side of the
                 * handshake is done: its alert may be lost to the reset that follows. A broker
                 * that does not speak MQTT 5 may close at once on a v5 CONNECT it cannot parse. */
                char r[sizeof m->reason];
                snprintf(r, sizeof r, "%s", m->reason);
                if (m->protocol == 5)
                        note(m, REASON_TLS,
                             "the broker closed the connection right after our MQTT 5 CONNECT, "
                             "before CONNACK (%s): %s; or did it refuse our client certificate "
                             "(CertificateFile=%s)?",
                             r, MQTT_V5_REFUSED, m->cert_file);
                else
                        note(m, REASON_TLS,
                             "the broker closed the connection after the TLS handshake, before "
                             "CONNACK (%s): did it refuse our client certificate "
                             "(CertificateFile=%s)?",
                             r, m->cert_file);
        }
        set_error(m, "%s", m->reason);
        if (m->stopping)
                return;
        if (strcmp(m->host, m->addr) == 0)
                log_full_errno(m->refused ? LOG_ERR : LOG_WARNING, 0,
                               "mqtt: cannot connect to %s:%u: %s%s", m->host, m->port, m->reason,
                               next_hint(m, hint, sizeof hint));
        else
                log_full_errno(m->refused ? LOG_ERR : LOG_WARNING, 0,
                               "mqtt: cannot connect to %s:%u at %s: %s%s", m->host, m->port,
                               m->addr, m->reason,
                               more ? "; trying the next address"
                                    : next_hint(m, hint, sizeof hint));
}

static void on_next_address(uv_timer_t *t)
{
        try_next_address(t->data);
}

/* The attempt in flight failed (socket, TLS, CONNACK, timeout). */
static void attempt_failed(struct mqtt *m)
{
        bool more = m->addr_next && !m->refused && !m->stopping;
        uint64_t delay = 0, since;

        poll_close(m);
        uv_timer_stop(&m->connect_timer);
        attempt_log(m, more);
        /* Another address of the same name (or the next Host=), at once unless this one got as
         * far as sending CONNECT (never more than one per second). */
        if (m->tls_done) {
                since = uv_now(m->loop) - m->last_connect_ms;
                delay = since < 1000 ? 1000 - since : 0;
        }
        if (!more) {
                host_failed(m, delay);
                return;
        }
        uv_timer_start(&m->reconnect_timer, on_next_address, delay, 0);
}

static void on_connect_timeout(uv_timer_t *t)
{
        struct mqtt *m = t->data;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char dur[32];
        SSL *ssl;

        if (!m->poll || m->state != MQTT_CONNECTING)
                return;
        fmt_duration(dur, sizeof dur, m->connect_timeout_ms);
        ssl = mosquitto_ssl_get(m->mosq);
        if (getpeername(m->poll->fd, (struct sockaddr *)&ss, &sl) < 0)
                note(m, REASON_EXACT, "TCP connection timed out after %s (no answer from %s)", dur,
                     m->addr);
        else if (!m->tls_done && ssl && SSL_get_state(ssl) == TLS_ST_CW_CLNT_HELLO &&
                 !SSL_want_write(ssl)) /* sent, waiting for the ServerHello */
                note(m, REASON_EXACT,
                     "TLS handshake timed out after %s: the server accepted the TCP connection "
                     "but never answered the ClientHello",
                     dur);
        else if (!m->tls_done)
                note(m, REASON_EXACT, "TLS handshake timed out after %s", dur);
        else
                note(m, REASON_EXACT, "no CONNACK from the broker within %s", dur);
        /* libmosquitto keeps the socket until the next connect: end the connection now. */
        shutdown(m->poll->fd, SHUT_RDWR);
        attempt_failed(m);
}

/* Connect to one numeric address; 0 when the attempt is under way, else the reason is noted. */
static int connect_address(struct mqtt *m, const struct addrinfo *ai)
{
        struct mqtt_poll *p;
        int rc, fd, err;

        m->tls_done = m->refused = false;
        reason_clear(m);
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, m->addr, sizeof m->addr, NULL, 0,
                        NI_NUMERICHOST) != 0) {
                snprintf(m->addr, sizeof m->addr, "?");
                note(m, REASON_EXACT, "unusable address");
                return -1;
        }
        m->last_connect_ms = uv_now(m->loop);
        m->attempts++;
        if (strcmp(m->host, m->addr) == 0)
                log_debug("mqtt: connecting to %s:%u", m->host, m->port);
        else
                log_debug("mqtt: connecting to %s:%u at %s (address %u of %u)", m->host, m->port,
                          m->addr, m->addr_index, m->n_addrs);
        /* libmosquitto falls back to 3.1.1 for good after a broker refused v5 (handle_connack):
         * ProtocolVersion= is what the operator asked for, every time. */
        if (m->protocol == 5)
                mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
        /* A numeric host: libmosquitto's own getaddrinfo() does no lookup. */
        rc = mosquitto_connect_async(m->mosq, m->addr, (int)m->port, (int)m->keepalive_s);
        err = errno;
        if (rc != MOSQ_ERR_SUCCESS) {
                note(m, rc == MOSQ_ERR_ERRNO ? REASON_SOCKET : REASON_GENERIC, "%s",
                     mosq_strerror(rc, err));
                return -1;
        }
        fd = mosquitto_socket(m->mosq);
        if (fd < 0) {
                note(m, REASON_GENERIC, "no socket");
                return -1;
        }
        p = calloc(1, sizeof *p);
        if (!p || uv_poll_init(m->loop, &p->h, fd) < 0) {
                free(p);
                shutdown(fd, SHUT_RDWR);
                note(m, REASON_GENERIC, "cannot watch the socket");
                return -1;
        }
        p->m = m;
        p->fd = fd;
        p->h.data = m;
        m->open_handles++;
        m->poll = p;
        poll_start_cb(m);
        uv_timer_start(&m->connect_timer, on_connect_timeout, m->connect_timeout_ms, 0);
        return 0;
}

static void try_next_address(struct mqtt *m)
{
        while (m->addr_next && !m->stopping) {
                struct addrinfo *ai = m->addr_next;
                m->addr_next = ai->ai_next;
                m->addr_index++;
                if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                        continue;
                if (connect_address(m, ai) == 0)
                        return;
                attempt_log(m, m->addr_next != NULL);
        }
        host_failed(m, 0);
}

static void resolve_done(struct mqtt *m, struct addrinfo *res, int err, int sys_errno)
{
        m->resolving = false;
        uv_timer_stop(&m->connect_timer);
        if (err || !res) {
                set_error(m, "cannot resolve %s: %s", m->host,
                          err == EAI_SYSTEM ? strerror(sys_errno)
                          : err             ? gai_strerror(err)
                                            : "no address");
                if (res)
                        freeaddrinfo(res);
                log_warning("mqtt: %s", m->last_error);
                host_failed(m, 0);
                return;
        }
        m->round_reached = true;
        m->addrs = m->addr_next = res;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
                m->n_addrs++;
        try_next_address(m);
}

static void on_dns_async(uv_async_t *h)
{
        struct mqtt *m = h->data;
        struct mqtt_dns *d = m->dns;
        struct addrinfo *res;
        int err, sys_errno;

        /* Not waiting (the lookup timed out): the answer stays for the next attempt. */
        if (!d || !m->resolving)
                return;
        pthread_mutex_lock(&d->lock);
        if (!d->done) {
                pthread_mutex_unlock(&d->lock);
                return;
        }
        res = TAKE_PTR(d->res);
        err = d->err;
        sys_errno = d->sys_errno;
        d->done = false;
        pthread_mutex_unlock(&d->lock);
        resolve_done(m, res, err, sys_errno);
}

static void on_resolve_timeout(uv_timer_t *t)
{
        struct mqtt *m = t->data;
        char dur[32];

        if (!m->resolving)
                return;
        fmt_duration(dur, sizeof dur, m->resolve_timeout_ms);
        set_error(m, "cannot resolve %s: no answer from the DNS resolver within %s", m->host, dur);
        log_warning("mqtt: %s", m->last_error);
        host_failed(m, 0);
}

static void resolve_start(struct mqtt *m)
{
        struct mqtt_dns *d = m->dns;
        uint64_t now = uv_now(m->loop), age = 0;
        uint64_t abandon = m->resolve_timeout_ms * MQTT_LOOKUP_ABANDON_TIMEOUTS;
        struct addrinfo *res = NULL;
        int err = 0, sys_errno = 0, r = 0;
        bool answered = false, waiting = false, abandoned = false;
        unsigned pending = 0;

        m->resolving = true;
        pthread_mutex_lock(&d->lock);
        if (d->done) {
                /* The answer to a lookup that had timed out came in since. */
                answered = true;
                res = TAKE_PTR(d->res);
                err = d->err;
                sys_errno = d->sys_errno;
                d->done = false;
        } else if (d->running && now - d->started_ms < abandon) {
                /* Still running: wait for it again rather than pile up lookups. */
                waiting = true;
                age = now - d->started_ms;
        } else if (d->threads >= MQTT_MAX_LOOKUPS) {
                r = -EBUSY;
                pending = d->threads;
        } else {
                abandoned = d->running;
                age = now - d->started_ms;
                r = dns_spawn(d, now);
        }
        pthread_mutex_unlock(&d->lock);

        if (answered) {
                resolve_done(m, res, err, sys_errno);
                return;
        }
        if (r < 0) {
                if (r == -EBUSY)
                        set_error(m, "cannot resolve %s: the resolver has not answered %u lookups",
                                  m->host, pending);
                else
                        set_error(m, "cannot resolve %s: cannot start a lookup: %s", m->host,
                                  strerror(-r));
                log_warning("mqtt: %s", m->last_error);
                host_failed(m, 0);
                return;
        }
        if (waiting)
                log_debug("mqtt: still waiting for the lookup of %s started %llu ms ago", m->host,
                          (unsigned long long)age);
        else {
                m->lookups++;
                if (abandoned)
                        log_warning("mqtt: the lookup of %s has not answered in %llu s; starting "
                                    "another",
                                    m->host, (unsigned long long)(age / 1000));
                else
                        log_debug("mqtt: resolving %s", m->host);
        }
        uv_timer_start(&m->connect_timer, on_resolve_timeout, m->resolve_timeout_ms, 0);
}

/* The TLS context, built again from the files if they did not load before (a key file fixed
 * while the daemon ran). 0 when there is one; else the reason is the session's error, logged
 * when it changes. */
static int tls_ensure(struct mqtt *m)
{
        char err[512], was[sizeof m->last_error];
        int q;

        if (m->ssl_ctx)
                return 0;
        /* A token counts wrong PINs and may lock itself: try it again only when asked. */
        if (strncmp(m->key_file, "pkcs11:", 7) == 0 && !m->cred_retry)
                return -EAGAIN;
        m->cred_retry = false;
        snprintf(was, sizeof was, "%s", m->last_error);
        q = mqtt_set_credentials(m, m->cert_file, m->key_file, false, err, sizeof err);
        if (q < 0) {
                set_error(m, "credentials: %s", err);
                if (strcmp(was, m->last_error) != 0)
                        log_error("mqtt: %s", m->last_error);
                return q;
        }
        log_notice("mqtt: the credentials load now (CertificateFile=%s); connecting", m->cert_file);
        m->last_error[0] = 0;
        return 0;
}

static void host_select(struct mqtt *m, unsigned i)
{
        struct mqtt_host *h = &m->hosts[i];
        m->host_index = i;
        m->host = h->name;
        m->port = h->port;
        m->verify_name = h->verify_name;
        m->sni = h->sni;
        m->dns = h->dns;
}

/* The current Host=: its addresses (from the resolver thread, or the numeric Host= itself), then
 * each in order. */
static void host_start(struct mqtt *m)
{
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_NUMERICHOST,
        };
        struct addrinfo *res = NULL;
        int err;

        if (m->stopping)
                return;
        addrs_free(m);
        host_select(m, m->host_index);
        m->state = MQTT_CONNECTING;
        if (!is_ip(m->host)) {
                resolve_start(m);
                return;
        }
        err = getaddrinfo(m->host, NULL, &hints, &res); /* no lookup: AI_NUMERICHOST */
        resolve_done(m, res, err, errno);
}

/* A new round: every Host= in order, from the first. */
static void round_start(struct mqtt *m)
{
        if (m->stopping)
                return;
        if (tls_ensure(m) < 0) {
                /* Never a connection without our TLS context: wait, then try the files again. */
                m->state = MQTT_DISCONNECTED;
                mqtt_schedule_reconnect(m);
                return;
        }
        m->host_index = 0;
        m->round_reached = false;
        host_start(m);
}

static void on_reconnect_timer(uv_timer_t *t)
{
        round_start(t->data);
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
static void mqtt_lost(struct mqtt *m, int rc, int err)
{
        if (m->state == MQTT_DISCONNECTED || m->state == MQTT_STOPPED) {
                poll_close(m);
                return;
        }
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_PENDING)
                note(m, REASON_GENERIC, "%s", mosq_strerror(rc, err));
        if (m->state == MQTT_CONNECTING) {
                if (m->poll)
                        attempt_failed(m);
                return;
        }
        poll_close(m);
        m->state = m->stopping ? MQTT_STOPPED : MQTT_DISCONNECTED;
        m->just_connected = false;
        m->disconnects++;
        if (!m->reason[0])
                note(m, REASON_GENERIC, "connection lost");
        set_error(m, "%s", m->reason);
        if (!m->stopping)
                log_warning("mqtt: disconnected from %s:%u: %s", m->host, m->port, m->last_error);
        if (m->cb.on_disconnected)
                m->cb.on_disconnected(m->cb.userdata);
        mqtt_schedule_reconnect(m);
}

/* ---- libmosquitto callbacks (run inside loop_read/loop_write) ------------------------------ */

static void on_connect_cb(struct mosquitto *mosq, void *ud, int rc, int flags,
                          const mosquitto_property *props)
{
        struct mqtt *m = ud;

        if (rc != 0) {
                m->refused = true;
                /* A 3.1.1 broker answers a v5 CONNECT with the 3.1.1 refusal "unacceptable
                 * protocol version" (1, which libmosquitto passes on as is), a v5 one with
                 * 0x84. */
                if (m->protocol == 5 && (rc == CONNACK_REFUSED_PROTOCOL_VERSION ||
                                         rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION))
                        note(m, REASON_EXACT, "%s (CONNACK: %s)", MQTT_V5_REFUSED,
                             rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION
                                     ? mosquitto_reason_string(rc)
                                     : mosquitto_connack_string(rc));
                else
                        note(m, REASON_EXACT, "broker refused the connection: %s",
                             m->protocol == 5 ? mosquitto_reason_string(rc)
                                              : mosquitto_connack_string(rc));
                return; /* libmosquitto disconnects; on_disconnect follows */
        }
        uv_timer_stop(&m->connect_timer);
        addrs_free(m);
        m->state = MQTT_CONNECTED;
        m->connects++;
        m->backoff_step = 0;
        m->last_error[0] = 0;
        reason_clear(m);
        m->session_present = flags & 1;
        if (strcmp(m->host, m->addr) == 0)
                log_info("mqtt: connected to %s:%u as %s (MQTT %s, session %s)", m->host, m->port,
                         m->client_id, m->protocol == 5 ? "5" : "3.1.1",
                         m->session_present ? "resumed" : "new");
        else
                log_info("mqtt: connected to %s:%u at %s as %s (MQTT %s, session %s)", m->host,
                         m->port, m->addr, m->client_id, m->protocol == 5 ? "5" : "3.1.1",
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
        int err = errno;
        if (m->stopping)
                return;
        if (rc == MOSQ_ERR_KEEPALIVE)
                note(m, REASON_EXACT, "keepalive timeout: nothing from the broker for %u s",
                     m->keepalive_s);
        mqtt_lost(m, rc == 0 ? MOSQ_ERR_CONN_LOST : rc, err);
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

/* libmosquitto logs OpenSSL's error queue as "OpenSSL Error[0]: error:0A000418:SSL
 * routines::tlsv1 alert unknown ca": say what it means for us. */
static void note_openssl(struct mqtt *m, const char *line)
{
        const char *r = strrchr(line, ':'), *alert;

        r = r ? r + 1 : line;
        while (*r == ' ')
                r++;
        alert = strstr(r, "alert ");
        /* After the handshake, an EOF without close_notify is the broker closing the
         * connection, not a TLS failure: attempt_log() says what that means. */
        if (m->tls_done && m->state == MQTT_CONNECTING && strstr(r, "unexpected eof"))
                note(m, REASON_SOCKET, "connection closed by the broker");
        else if (alert && (strstr(r, "unknown ca") || strstr(r, "bad certificate") ||
                           strstr(r, "certificate required") || strstr(r, "certificate unknown") ||
                           strstr(r, "certificate revoked") || strstr(r, "certificate expired") ||
                           strstr(r, "unsupported certificate") || strstr(r, "access denied")))
                note(m, REASON_TLS,
                     "the broker refused our client certificate (TLS alert \"%s\"): is "
                     "CertificateFile=%s issued by a CA the broker trusts, and registered and "
                     "active there?",
                     alert + 6, m->cert_file);
        else if (alert)
                note(m, REASON_TLS, "the broker ended the TLS handshake (TLS alert \"%s\")",
                     alert + 6);
        else if (strstr(r, "certificate verify failed"))
                note(m, REASON_TLS, "the broker's certificate failed verification");
        else if (strstr(r, "wrong version number") || strstr(r, "packet length too long") ||
                 strstr(r, "record layer failure"))
                note(m, REASON_TLS, "TLS error: %s (is port %u a TLS listener?)", r, m->port);
        else
                note(m, REASON_TLS, "TLS error: %s", r);
}

static void on_log_cb(struct mosquitto *mosq, void *ud, int level, const char *str)
{
        struct mqtt *m = ud;
        if (!(level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)))
                return;
        /* The reason goes into the one line that says an attempt failed (or the connection was
         * lost), with the address. */
        if (strncmp(str, "OpenSSL Error", 13) == 0)
                note_openssl(m, str);
        else if (strncmp(str, "Warning", 7) != 0)
                note(m, REASON_LOG, "%s", str);
        log_debug("mqtt: libmosquitto: %s", str);
}

/* ---- API ---------------------------------------------------------------------------------- */

int mqtt_parse_server(const char *s, unsigned default_port, char *host, size_t n,
                      unsigned *ret_port)
{
        const char *end, *colon = NULL;
        unsigned long port = default_port;
        bool bracketed = false;
        size_t len;
        char *e;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '[') {
                end = strchr(s, ']');
                if (!end || end == s + 1 || (end[1] && end[1] != ':'))
                        return -EINVAL;
                s++;
                bracketed = true;
                len = (size_t)(end - s);
                colon = end[1] ? end + 1 : NULL;
        } else {
                colon = strchr(s, ':');
                if (colon && strchr(colon + 1, ':'))
                        colon = NULL; /* a bare IPv6 address */
                len = colon ? (size_t)(colon - s) : strlen(s);
        }
        if (len == 0 || len >= n)
                return -EINVAL;
        if (colon) {
                errno = 0;
                port = strtoul(colon + 1, &e, 10);
                if (!colon[1] || *e || errno || port == 0 || port > 65535 || colon[1] == '-' ||
                    colon[1] == '+')
                        return -EINVAL;
        }
        for (size_t i = 0; i < len; i++)
                if (s[i] <= ' ' || s[i] >= 0x7f || s[i] == '/' || s[i] == '[' || s[i] == ']')
                        return -EINVAL;
        memcpy(host, s, len);
        host[len] = 0;
        /* Brackets for an IPv6 address only. */
        if ((strchr(host, ':') || bracketed) && (!strchr(host, ':') || !is_ip(host)))
                return -EINVAL;
        *ret_port = (unsigned)port;
        return 0;
}

static int hosts_new(struct mqtt *m, const struct mqtt_options *o)
{
        const char *one[1] = { o->host };
        const char *const *v = o->n_hosts ? o->hosts : one;
        size_t n = o->n_hosts ? o->n_hosts : 1;
        char name[256];

        m->hosts = calloc(n, sizeof *m->hosts);
        if (!m->hosts)
                return -ENOMEM;
        m->n_hosts = (unsigned)n;
        for (size_t i = 0; i < n; i++) {
                struct mqtt_host *h = &m->hosts[i];
                if (mqtt_parse_server(v[i], o->port, name, sizeof name, &h->port) < 0)
                        return log_error_errno(-EINVAL, "mqtt: bad Host=%s", v[i] ? v[i] : "");
                h->name = strdup(name);
                h->verify_name = strdup(o->server_name ? o->server_name : name);
                h->dns = dns_new(name);
                if (!h->name || !h->verify_name || !h->dns)
                        return -ENOMEM;
                h->sni = !is_ip(h->verify_name);
        }
        return 0;
}

int mqtt_new(uv_loop_t *loop, const struct mqtt_options *opts, const struct mqtt_callbacks *cb,
             struct mqtt **ret)
{
        static bool lib_ready;
        struct mqtt_options o1 = *opts;
        const struct mqtt_options *o = &o1;
        char name[256];
        struct mqtt *m;
        char err[512];
        SSL_CTX *ctx;
        unsigned port;
        int rc;

        if (!lib_ready) {
                mosquitto_lib_init();
                lib_ready = true;
        }
        /* The TLS context checks the first Host='s name; the others set theirs per connection. */
        if (mqtt_parse_server(o->n_hosts ? o->hosts[0] : o->host, o->port, name, sizeof name,
                              &port) < 0)
                return log_error_errno(-EINVAL, "mqtt: bad Host=%s",
                                       o->n_hosts ? o->hosts[0]
                                       : o->host  ? o->host
                                                  : "");
        o1.host = name;
        /* Credentials that do not load (missing, unreadable, mismatched) stop only the cloud
         * session: the local side must keep serving the devices. Every round tries again. */
        ctx = mqtt_tls_ctx_new(o, err, sizeof err);
        if (!ctx)
                log_error("mqtt: %s; the cloud session waits for usable credentials (tried again "
                          "%s on reload or mcugwctl reconnect)",
                          err,
                          strncmp(o->key_file, "pkcs11:", 7) == 0
                                  ? "only"
                                  : "with the backoff, and at once");
        m = calloc(1, sizeof *m);
        if (!m) {
                SSL_CTX_free(ctx);
                return -ENOMEM;
        }
        m->loop = loop;
        m->cb = *cb;
        o1 = *opts;
        if ((rc = hosts_new(m, o)) < 0)
                goto fail;
        host_select(m, 0);
        m->protocol = o->protocol;
        m->keepalive_s = o->keepalive_s;
        m->reconnect_min_ms = MAX(o->reconnect_min_ms, (uint64_t)1000);
        m->reconnect_max_ms = MAX(o->reconnect_max_ms, m->reconnect_min_ms);
        m->resolve_timeout_ms =
                o->resolve_timeout_ms ? o->resolve_timeout_ms : MQTT_RESOLVE_TIMEOUT_MS_DEFAULT;
        m->connect_timeout_ms =
                o->connect_timeout_ms ? o->connect_timeout_ms : MQTT_CONNECT_TIMEOUT_MS_DEFAULT;
        m->status_mid = -1;
        m->client_id = strdup(o->client_id);
        m->server_name = o->server_name ? strdup(o->server_name) : NULL;
        m->status_topic = strdup(o->status_topic);
        m->ca_file = strdup(o->ca_file);
        m->cert_file = strdup(o->cert_file);
        m->key_file = strdup(o->key_file);
        m->alpn = o->alpn ? strdup(o->alpn) : NULL;
        m->pkcs11_module = o->pkcs11_module ? strdup(o->pkcs11_module) : NULL;
        if (!m->client_id || !m->status_topic || !m->ca_file || !m->cert_file || !m->key_file ||
            (o->alpn && !m->alpn) || (o->pkcs11_module && !m->pkcs11_module) ||
            (o->server_name && !m->server_name)) {
                rc = -ENOMEM;
                goto fail;
        }
        if (ctx)
                SSL_CTX_set_app_data(ctx, m);
        else
                set_error(m, "credentials: %s", err);
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
        if (ctx && (mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, ctx) != MOSQ_ERR_SUCCESS ||
                    mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) !=
                            MOSQ_ERR_SUCCESS)) {
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
        uv_timer_init(loop, &m->connect_timer);
        uv_async_init(loop, &m->dns_async, on_dns_async);
        /* Only a lookup in progress needs it, and then the resolve timer runs. */
        uv_unref((uv_handle_t *)&m->dns_async);
        for (unsigned i = 0; i < m->n_hosts; i++)
                m->hosts[i].dns->async = &m->dns_async; /* no thread yet: no lock needed */
        m->misc_timer.data = m->reconnect_timer.data = m->connect_timer.data = m;
        m->dns_async.data = m;
        m->open_handles = 4;
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
        if (mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, ctx) != MOSQ_ERR_SUCCESS ||
            mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS) {
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
                note(m, REASON_EXACT, "reconnecting with certificate %s", cert_file);
                mqtt_lost(m, MOSQ_ERR_SUCCESS, 0);
        } else if (reconnect && m->state == MQTT_CONNECTING && !m->resolving) {
                /* Not a failure of the new pair: start over with it. (While the name is being
                 * resolved there is nothing to undo: the attempt will use the new pair.) */
                if (m->poll)
                        shutdown(m->poll->fd, SHUT_RDWR);
                poll_close(m);
                uv_timer_stop(&m->connect_timer);
                addrs_free(m);
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

int mqtt_reconnect_now(struct mqtt *m)
{
        uint64_t since;

        if (m->stopping)
                return -ESHUTDOWN;
        if (m->state == MQTT_CONNECTED)
                return -EISCONN;
        if (m->state == MQTT_CONNECTING)
                return -EINPROGRESS;
        m->backoff_step = 0;
        m->cred_retry = true;
        uv_timer_stop(&m->reconnect_timer);
        /* Still never more than one CONNECT per second. */
        since = uv_now(m->loop) - m->last_connect_ms;
        if (m->last_connect_ms && since < 1000)
                uv_timer_start(&m->reconnect_timer, on_reconnect_timer, 1000 - since, 0);
        else
                round_start(m);
        return 0;
}

int mqtt_start(struct mqtt *m)
{
        uv_timer_start(&m->misc_timer, on_misc_timer, 1000, 1000);
        round_start(m);
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
                check_rc(m, rc, errno);
                return -EIO;
        }
        check_rc(m, MOSQ_ERR_SUCCESS, 0);
        poll_update(m);
        if (ret_mid)
                *ret_mid = mid;
        return 0;
}

int mqtt_subscribe(struct mqtt *m, const char *filter)
{
        int r;

        /* A module that goes away and comes back subscribes again: once is enough. */
        for (size_t i = 0; i < m->n_subs; i++)
                if (strcmp(m->subs[i].filter, filter) == 0)
                        return 0;
        if ((r = GREEDY_REALLOC(m->subs, m->n_subs_alloc, m->n_subs + 1)) < 0)
                return r;
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
        m->resolving = false;
        poll_close(m);
        /* A lookup still running keeps its own reference and never touches the async handle
         * once released: the loop does not wait for the resolver. */
        for (unsigned i = 0; i < m->n_hosts; i++) {
                dns_release(m->hosts[i].dns);
                m->hosts[i].dns = NULL;
        }
        m->dns = NULL;
        uv_close((uv_handle_t *)&m->misc_timer, handle_closed);
        uv_close((uv_handle_t *)&m->reconnect_timer, handle_closed);
        uv_close((uv_handle_t *)&m->connect_timer, handle_closed);
        uv_close((uv_handle_t *)&m->dns_async, handle_closed);
}

static void fmt_server(char *buf, size_t n, const char *host, unsigned port)
{
        snprintf(buf, n, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

json_t *mqtt_status_json(const struct mqtt *m)
{
        char server[300];
        json_t *servers = json_array(), *j;

        for (unsigned i = 0; servers && i < m->n_hosts; i++) {
                fmt_server(server, sizeof server, m->hosts[i].name, m->hosts[i].port);
                json_array_append_new(servers, json_string(server));
        }
        fmt_server(server, sizeof server, m->host, m->port);
        j = json_pack("{ss ss ss ss ss sI sI sI sI sI ss sI}", "state",
                      mqtt_state_to_string(m->state), "server", server, "address", m->addr,
                      "client_id", m->client_id, "protocol", m->protocol == 5 ? "5" : "3.1.1",
                      "connects", (json_int_t)m->connects, "attempts", (json_int_t)m->attempts,
                      "lookups", (json_int_t)m->lookups, "disconnects", (json_int_t)m->disconnects,
                      "subscriptions_refused", (json_int_t)m->subs_refused, "last_error",
                      m->last_error, "max_incoming", (json_int_t)m->max_incoming);
        /* Waiting out the backoff: when the next round starts. */
        if (j && m->state == MQTT_DISCONNECTED && uv_is_active((uv_handle_t *)&m->reconnect_timer))
                json_object_set_new(
                        j, "next_attempt_ms",
                        json_integer((json_int_t)uv_timer_get_due_in(&m->reconnect_timer)));
        if (j && servers) {
                json_object_set_new(j, "servers", servers);
                json_object_set_new(j, "server_index", json_integer(m->host_index + 1));
        } else
                json_decref(servers);
        return j;
}
