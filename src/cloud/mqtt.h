/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

/*
 * The one northbound MQTT session (docs/mqtt.md): libmosquitto driven by the libuv loop, never by
 * its own thread. A uv_poll handle watches mosquitto_socket() (write interest only while
 * mosquitto_want_write()), a 1 s timer runs mosquitto_loop_misc() (keepalive), and a timer
 * reconnects with exponential backoff and jitter, never more than one CONNECT per second.
 *
 * TLS is ours: the SSL_CTX is built here (TLS >= 1.2, CA file, client certificate and key, the
 * server name checked against the certificate, SNI, optional ALPN) and handed to libmosquitto
 * with MOSQ_OPT_SSL_CTX, so a PKCS#11/TPM key can be plugged in later by changing only
 * mqtt_tls_ctx_new(). The session is persistent (clean session off, fixed client id); a retained
 * last will on the status topic says "offline", "online" is published after every CONNACK.
 *
 * Connecting never blocks the loop. The host name is resolved on a thread of our own, bounded by
 * a resolve timeout (a lookup that does not answer in time is waited for again by the next
 * attempt, or abandoned after a few timeouts: at most four threads ever wait on a
 * stuck resolver, and stopping never waits for one). Each address is then tried in order, handing
 * libmosquitto the numeric address (so its own getaddrinfo() does no lookup) while the broker's
 * certificate is still checked against ServerName=/Host= and SNI still carries that name (none if
 * it is an IP address). TCP connect, TLS handshake and CONNACK together are bounded by a connect
 * timeout. A failed address moves on to the next one at once (after a second if CONNECT went
 * out). With several hosts (Host= repeated) a round goes through each in order, every address
 * of one before the next; a round where all failed goes through the backoff (a lookup that failed
 * or timed out moves on to the next host like a failed address). Every round starts from the
 * first host; a connection to a later one is kept until it is lost.
 * Every failure is logged once, with the address and the most precise reason known: the
 * certificate names on a hostname mismatch, the issuer on an unknown CA, the TLS alert when the
 * broker refuses our certificate, which phase timed out.
 *
 * Every publish is QoS 1; the caller gets the message id and hears the PUBACK through
 * on_published. Messages in flight when the connection drops are re-sent by libmosquitto after
 * the next CONNACK, before anything new (on_connected runs after that).
 */

struct mqtt;

enum mqtt_state {
        MQTT_DISCONNECTED,
        MQTT_CONNECTING,
        MQTT_CONNECTED,
        MQTT_STOPPED,
};

struct mqtt_options {
        const char *host; /* host[:port]; used when n_hosts is 0 */
        unsigned port;    /* the default for entries without one */
        /* Several brokers (Host= repeated), "host[:port]" or "[v6addr]:port" each, tried in
         * this order in every round; the backoff applies after the last. */
        const char *const *hosts;
        size_t n_hosts;
        const char *client_id;
        const char *server_name; /* NULL: host */
        const char *ca_file;
        const char *cert_file;
        const char *key_file;      /* a file, or a "pkcs11:" URI (cred.h) */
        const char *pkcs11_module; /* for pkcs11: URIs; NULL: the engine's default */
        const char *alpn;          /* NULL: none */
        int protocol;              /* 4 or 5 */
        unsigned keepalive_s;
        unsigned max_inflight;
        uint64_t reconnect_min_ms, reconnect_max_ms;
        uint64_t resolve_timeout_ms; /* 0: MQTT_RESOLVE_TIMEOUT_MS_DEFAULT */
        uint64_t connect_timeout_ms; /* TCP + TLS + CONNACK; 0: MQTT_CONNECT_TIMEOUT_MS_DEFAULT */
        const char *status_topic;    /* expanded; the last will goes here */
        /* MQTT 5: the Maximum Packet Size announced in CONNECT; the broker does not send us
         * anything larger. 0: none. MQTT 3.1.1 has no way to say it. */
        uint32_t max_incoming;
};

/* In the reason of an attempt the broker refused because it does not speak MQTT 5. */
#define MQTT_V5_REFUSED                                                                            \
        "the broker refused MQTT 5 (ProtocolVersion=5); set ProtocolVersion=3.1.1 (4)"

#define MQTT_RESOLVE_TIMEOUT_MS_DEFAULT 10000
#define MQTT_CONNECT_TIMEOUT_MS_DEFAULT 15000

struct mqtt_callbacks {
        void *userdata;
        /* The session is up (after CONNACK and the re-sending of old in-flight messages). */
        void (*on_connected)(void *userdata, bool session_present);
        void (*on_disconnected)(void *userdata);
        /* PUBACK for mid; reason is 0 or an MQTT 5 reason code (>= 0x80: refused). */
        void (*on_published)(void *userdata, int mid, int reason);
        void (*on_message)(void *userdata, const char *topic, const uint8_t *payload, size_t len);
        /* A round of connection attempts failed before CONNACK (every address of the host: TLS
         * refused, broker refused, no route, timeout); reason is the last error. Not called when
         * the name could not be resolved. Optional. */
        void (*on_connect_failed)(void *userdata, const char *reason);
};

/* Split "host[:port]" ("[v6addr][:port]", a bare IPv6 address): 0, or -EINVAL. */
int mqtt_parse_server(const char *s, unsigned default_port, char *host, size_t n,
                      unsigned *ret_port);

/* Builds the TLS context (checks the key file's permissions) and the client; does not connect.
 * Errors are logged with the reason. Credentials that do not load are not one: the session then
 * stays disconnected with the reason as its last error, and loads them again every round. */
int mqtt_new(uv_loop_t *loop, const struct mqtt_options *opts, const struct mqtt_callbacks *cb,
             struct mqtt **ret);
/* Switch to another client certificate and key (certificate rotation, fleet provisioning): a new
 * TLS context is built and checked first (-EINVAL with the reason in err, the old one stays); with
 * reconnect, the current connection is dropped and the next attempt uses the new pair. */
int mqtt_set_credentials(struct mqtt *m, const char *cert_file, const char *key_file,
                         bool reconnect, char *err, size_t n);
/* Whether the session says "online"/"offline" on the status topic (the default). Off for a
 * provisioning claim, whose policy allows nothing but provisioning; takes effect with the next
 * CONNECT. */
int mqtt_set_announce(struct mqtt *m, bool on);
/* The certificate file the session uses now. */
const char *mqtt_cert_file(const struct mqtt *m);
/* Start connecting (and keep reconnecting). */
int mqtt_start(struct mqtt *m);
/* Try now instead of at the end of the backoff (mcugwctl reconnect, reload); the backoff starts
 * over. -EISCONN when connected, -EINPROGRESS while an attempt is under way. */
int mqtt_reconnect_now(struct mqtt *m);
/* Say "offline", disconnect, close the handles; memory goes in the last close callback. */
void mqtt_stop(struct mqtt *m);

/* QoS 1 publish. Returns 0 and the message id, -ENOTCONN when not connected, -EMSGSIZE, -EIO. */
int mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, bool retain,
                 int *ret_mid);
/* Subscribe (QoS 1) now and after every reconnect; a refusal in SUBACK is logged and counted.
 * A filter already subscribed is not subscribed twice. */
int mqtt_subscribe(struct mqtt *m, const char *filter);

enum mqtt_state mqtt_state(const struct mqtt *m);
const char *mqtt_state_to_string(enum mqtt_state s);
const char *mqtt_last_error(const struct mqtt *m);
/* {"state","server","address","client_id","protocol","connects","attempts","lookups",
 *  "disconnects","subscriptions_refused","last_error","servers","server_index"}; server: the
 *  Host= in use (or being tried), server_index its place (from 1) in servers, every Host=;
 *  address: the numeric address of the connection, or of the last attempt. */
json_t *mqtt_status_json(const struct mqtt *m);

/* Exposed for tests: the TLS client context for opts (NULL with *ret_error on failure). */
void *mqtt_tls_ctx_new(const struct mqtt_options *opts, char *ret_error, size_t n);
/* Tests: the function the resolver thread calls instead of getaddrinfo() (NULL: getaddrinfo),
 * for sessions created afterwards. Its list is freed with freeaddrinfo(). */
struct addrinfo;
void mqtt_set_resolver(int (*fn)(const char *node, const char *service,
                                 const struct addrinfo *hints, struct addrinfo **res));
