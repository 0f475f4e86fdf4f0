/* SPDX-License-Identifier: Apache-2.0 */
/* How the MQTT session gets to an address without ever blocking the loop: a resolver that never
 * answers (the loop keeps ticking, lookups time out, are retried and capped, stopping does not
 * wait for them), an answer that comes after the timeout (used by the next attempt), every
 * address tried in order, SNI with the configured name, the connect timeout's reason. The resolver
 * is replaced (mqtt_set_resolver); the TLS server is a listening socket that never accepts. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "cloud/mqtt.h"

static char dir[64];

static void sh(const char *fmt, ...)
{
        char cmd[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("command failed: %s", cmd);
}

/* ---- a resolver under the test's control ---------------------------------------------------- */

static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t res_cond = PTHREAD_COND_INITIALIZER;
static bool res_release;      /* blocked lookups may return */
static int res_delay_ms;      /* < 0: block until released */
static const char *res_addrs; /* space-separated numeric addresses to answer */
static int res_calls, res_returned;

static int fake_resolver(const char *node, const char *service, const struct addrinfo *hints,
                         struct addrinfo **res)
{
        struct addrinfo h = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST };
        struct addrinfo *list = NULL, **tail = &list;
        char buf[256], *save = NULL;
        int delay;

        pthread_mutex_lock(&res_lock);
        res_calls++;
        delay = res_delay_ms;
        if (delay < 0)
                while (!res_release)
                        pthread_cond_wait(&res_cond, &res_lock);
        pthread_mutex_unlock(&res_lock);
        if (delay > 0)
                usleep((useconds_t)delay * 1000);

        snprintf(buf, sizeof buf, "%s", res_addrs ? res_addrs : "");
        for (char *a = strtok_r(buf, " ", &save); a; a = strtok_r(NULL, " ", &save)) {
                struct addrinfo *one = NULL;
                if (getaddrinfo(a, service, &h, &one) == 0) {
                        *tail = one; /* freeaddrinfo() frees node by node */
                        while (*tail)
                                tail = &(*tail)->ai_next;
                }
        }
        pthread_mutex_lock(&res_lock);
        res_returned++;
        pthread_mutex_unlock(&res_lock);
        *res = list;
        return list ? 0 : EAI_NONAME;
}

static void resolver_reset(int delay_ms, const char *addrs)
{
        pthread_mutex_lock(&res_lock);
        res_release = false;
        res_delay_ms = delay_ms;
        res_addrs = addrs;
        res_calls = res_returned = 0;
        pthread_mutex_unlock(&res_lock);
}

/* Let blocked lookups return and wait until every one has (and freed what it held). */
static void resolver_drain(void)
{
        int calls, returned;
        for (int i = 0; i < 500; i++) {
                pthread_mutex_lock(&res_lock);
                res_release = true;
                pthread_cond_broadcast(&res_cond);
                calls = res_calls;
                returned = res_returned;
                pthread_mutex_unlock(&res_lock);
                if (calls == returned)
                        break;
                usleep(10000);
        }
        usleep(100000); /* the thread frees its block after the resolver returns */
}

static int calls(void)
{
        int n;
        pthread_mutex_lock(&res_lock);
        n = res_calls;
        pthread_mutex_unlock(&res_lock);
        return n;
}

/* ---- the loop ------------------------------------------------------------------------------- */

static uv_loop_t loop;
static uint64_t last_tick, worst_gap;

static void on_tick(uv_timer_t *t)
{
        uint64_t now = uv_hrtime() / 1000000;
        if (last_tick && now - last_tick > worst_gap)
                worst_gap = now - last_tick;
        last_tick = now;
}

static void on_stop(uv_timer_t *t)
{
        uv_stop(t->loop);
}

/* Run the loop for ms, a 10 ms ticker measuring how long it ever went without a turn. */
static void run_for(unsigned ms)
{
        uv_timer_t tick, stop;
        uv_timer_init(&loop, &tick);
        uv_timer_init(&loop, &stop);
        last_tick = 0;
        uv_timer_start(&tick, on_tick, 10, 10);
        uv_timer_start(&stop, on_stop, ms, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close((uv_handle_t *)&tick, NULL);
        uv_close((uv_handle_t *)&stop, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
}

static struct mqtt *session_hosts(const char *host, const char *const *hosts, size_t n_hosts,
                                  unsigned port, uint64_t resolve_ms, uint64_t connect_ms)
{
        char ca[128], cert[128], key[128];
        struct mqtt_options o = {
                .host = host,
                .hosts = hosts,
                .n_hosts = n_hosts,
                .port = port,
                .client_id = "gw",
                .ca_file = ca,
                .cert_file = cert,
                .key_file = key,
                .protocol = 4,
                .keepalive_s = 60,
                .max_inflight = 10,
                .reconnect_min_ms = 1000,
                .reconnect_max_ms = 1000,
                .resolve_timeout_ms = resolve_ms,
                .connect_timeout_ms = connect_ms,
                .status_topic = "gw/status",
        };
        struct mqtt_callbacks cb = { 0 };
        struct mqtt *m = NULL;

        snprintf(ca, sizeof ca, "%s/ca.pem", dir);
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        assert_int_equal(mqtt_new(&loop, &o, &cb, &m), 0);
        return m;
}

static struct mqtt *session(const char *host, unsigned port, uint64_t resolve_ms,
                            uint64_t connect_ms)
{
        return session_hosts(host, NULL, 0, port, resolve_ms, connect_ms);
}

static void stop_and_close(struct mqtt *m)
{
        uint64_t t = uv_hrtime();
        mqtt_stop(m);
        uv_run(&loop, UV_RUN_DEFAULT);
        /* Stopping never waits for the resolver. */
        assert_true((uv_hrtime() - t) / 1000000 < 500);
        assert_int_equal(uv_loop_close(&loop), 0);
}

static json_t *status(struct mqtt *m)
{
        return mqtt_status_json(m);
}

/* A TCP listener that never accepts: the kernel completes the TCP handshake, nobody answers
 * the ClientHello. */
static int tarpit(unsigned *port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(listen(fd, 8), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
        *port = ntohs(a.sin_port);
        return fd;
}

/* The first bytes the client sent on the first queued connection. */
static size_t first_hello(int lfd, char *buf, size_t n)
{
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        ssize_t k;
        if (c < 0)
                return 0;
        k = recv(c, buf, n, 0);
        close(c);
        return k > 0 ? (size_t)k : 0;
}

static bool contains(const char *buf, size_t n, const char *s)
{
        size_t l = strlen(s);
        for (size_t i = 0; i + l <= n; i++)
                if (memcmp(buf + i, s, l) == 0)
                        return true;
        return false;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_resolver_never_answers(void **state)
{
        struct mqtt *m;
        json_t *st;

        resolver_reset(-1, "127.0.0.1");
        assert_int_equal(uv_loop_init(&loop), 0);
        worst_gap = 0;
        m = session("broker.test", 1, 100, 500);
        mqtt_start(m);
        run_for(700);
        /* The lookup timed out; the loop never waited for it. */
        assert_non_null(strstr(mqtt_last_error(m), "cannot resolve broker.test: no answer from "
                                                   "the DNS resolver within 100 ms"));
        assert_int_equal(calls(), 1);
        run_for(4100);
        /* Each attempt after a few timeouts starts a lookup of its own (the old ones are
         * abandoned), up to four; then attempts fail at once, saying so. */
        assert_int_equal(calls(), 4);
        assert_non_null(strstr(mqtt_last_error(m), "the resolver has not answered 4 lookups"));
        /* A loop blocked by the resolver would stay blocked (it never answers); a busy machine
         * (ASan, other jobs) takes turns of a few hundred ms. */
        if (worst_gap >= 2000)
                fail_msg("the loop went %llu ms without a turn", (unsigned long long)worst_gap);
        st = status(m);
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 0);
        assert_int_equal(json_integer_value(json_object_get(st, "lookups")), 4);
        json_decref(st);
        assert_int_equal(mqtt_state(m), MQTT_DISCONNECTED);
        /* Stop with four lookups still stuck in the resolver. */
        stop_and_close(m);
        resolver_drain();
}

static void test_late_answer_sni_timeout(void **state)
{
        char hello[4096];
        unsigned port;
        int lfd = tarpit(&port);
        struct mqtt *m;
        size_t n;
        json_t *st;

        /* Answers after 300 ms, with a 100 ms timeout: the next attempt uses that answer. */
        resolver_reset(300, "127.0.0.1");
        assert_int_equal(uv_loop_init(&loop), 0);
        m = session("broker.test", port, 100, 300);
        mqtt_start(m);
        run_for(600);
        assert_non_null(strstr(mqtt_last_error(m), "no answer from the DNS resolver"));
        run_for(1200);
        assert_int_equal(calls(), 1);
        st = status(m);
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 1);
        assert_string_equal(json_string_value(json_object_get(st, "address")), "127.0.0.1");
        json_decref(st);
        assert_non_null(strstr(mqtt_last_error(m), "TLS handshake timed out after 300 ms: the "
                                                   "server accepted the TCP connection but never "
                                                   "answered the ClientHello"));
        n = first_hello(lfd, hello, sizeof hello);
        assert_true(n > 5 && hello[0] == 0x16);
        /* SNI is the host name, not the address connected to. */
        assert_true(contains(hello, n, "broker.test"));
        assert_false(contains(hello, n, "127.0.0.1"));
        stop_and_close(m);
        close(lfd);
        resolver_drain();
}

static void test_every_address_in_order(void **state)
{
        unsigned port;
        int lfd = tarpit(&port);
        struct mqtt *m;
        json_t *st;

        /* Nothing listens on ::1 (or there is no IPv6): the next address is tried at once. */
        resolver_reset(0, "::1 127.0.0.1");
        assert_int_equal(uv_loop_init(&loop), 0);
        m = session("broker.test", port, 1000, 300);
        mqtt_start(m);
        run_for(200);
        st = status(m);
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 2);
        assert_string_equal(json_string_value(json_object_get(st, "address")), "127.0.0.1");
        assert_int_equal(mqtt_state(m), MQTT_CONNECTING);
        json_decref(st);
        run_for(400);
        /* Both failed: one round, then the backoff. */
        assert_int_equal(mqtt_state(m), MQTT_DISCONNECTED);
        assert_non_null(strstr(mqtt_last_error(m), "never answered the ClientHello"));
        assert_int_equal(calls(), 1);
        stop_and_close(m);
        close(lfd);
        resolver_drain();
}

static void test_numeric_host_no_lookup(void **state)
{
        unsigned port;
        int lfd = tarpit(&port);
        struct mqtt *m;
        char hello[4096];
        size_t n;

        resolver_reset(-1, "");
        assert_int_equal(uv_loop_init(&loop), 0);
        m = session("127.0.0.1", port, 100, 300);
        mqtt_start(m);
        run_for(200);
        assert_int_equal(calls(), 0);
        assert_int_equal(mqtt_state(m), MQTT_CONNECTING);
        n = first_hello(lfd, hello, sizeof hello);
        assert_true(n > 5 && hello[0] == 0x16);
        assert_false(contains(hello, n, "127.0.0.1")); /* no IP address in SNI */
        stop_and_close(m);
        close(lfd);
        resolver_drain();
}

static void test_parse_server(void **state)
{
        static const struct {
                const char *s;
                const char *host; /* NULL: refused */
                unsigned port;
        } t[] = {
                { "broker.example.com", "broker.example.com", 8883 },
                { "broker.example.com:1883", "broker.example.com", 1883 },
                { "192.0.2.1:443", "192.0.2.1", 443 },
                { "2001:db8::1", "2001:db8::1", 8883 },
                { "[2001:db8::1]", "2001:db8::1", 8883 },
                { "[2001:db8::1]:8884", "2001:db8::1", 8884 },
                { "", NULL, 0 },
                { "host:", NULL, 0 },
                { "host:0", NULL, 0 },
                { "host:65536", NULL, 0 },
                { "host:-1", NULL, 0 },
                { "host:12x", NULL, 0 },
                { ":1883", NULL, 0 },
                { "[2001:db8::1", NULL, 0 },
                { "[2001:db8::1]x", NULL, 0 },
                { "[]:1883", NULL, 0 },
                { "[broker]:1883", NULL, 0 },
                { "bro ker", NULL, 0 },
                { "a:b:c", NULL, 0 },
        };
        char host[256];
        unsigned port;

        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
                int r = mqtt_parse_server(t[i].s, 8883, host, sizeof host, &port);
                if (!t[i].host) {
                        if (r != -EINVAL)
                                fail_msg("%s accepted", t[i].s);
                        continue;
                }
                if (r != 0)
                        fail_msg("%s refused", t[i].s);
                assert_string_equal(host, t[i].host);
                assert_int_equal(port, t[i].port);
        }
}

static void test_hosts_in_order(void **state)
{
        unsigned port;
        int lfd = tarpit(&port);
        char second[64], hello[4096];
        const char *hosts[2] = { "127.0.0.1:1", second };
        struct mqtt *m;
        json_t *st;
        size_t n;

        /* Nothing listens on port 1 of the first Host=: the second is tried at once, with its
         * own port and its own name in SNI; after both, the backoff. */
        snprintf(second, sizeof second, "broker.test:%u", port);
        resolver_reset(0, "127.0.0.1");
        assert_int_equal(uv_loop_init(&loop), 0);
        m = session_hosts(NULL, hosts, 2, 9, 1000, 300);
        st = status(m);
        assert_int_equal(json_array_size(json_object_get(st, "servers")), 2);
        assert_string_equal(json_string_value(json_object_get(st, "server")), "127.0.0.1:1");
        json_decref(st);
        mqtt_start(m);
        run_for(200);
        st = status(m);
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 2);
        assert_string_equal(json_string_value(json_object_get(st, "server")), second);
        assert_int_equal(json_integer_value(json_object_get(st, "server_index")), 2);
        assert_int_equal(mqtt_state(m), MQTT_CONNECTING);
        json_decref(st);
        n = first_hello(lfd, hello, sizeof hello);
        assert_true(n > 5 && hello[0] == 0x16);
        assert_true(contains(hello, n, "broker.test"));
        run_for(400);
        assert_int_equal(mqtt_state(m), MQTT_DISCONNECTED);
        st = status(m);
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 2);
        json_decref(st);
        assert_int_equal(calls(), 1); /* the first Host= is an address: no lookup */
        stop_and_close(m);
        close(lfd);
        resolver_drain();
}

static int setup(void **state)
{
        signal(SIGPIPE, SIG_IGN);
        snprintf(dir, sizeof dir, "/tmp/mcugw-test-mqtt-XXXXXX");
        if (!mkdtemp(dir))
                return -1;
        sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout key.pem -out cert.pem -days 2 -subj /CN=gw >/dev/null 2>&1 && "
           "chmod 600 key.pem && cp cert.pem ca.pem",
           dir);
        mqtt_set_resolver(fake_resolver);
        return 0;
}

static int teardown(void **state)
{
        char cmd[128];
        mqtt_set_resolver(NULL);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_resolver_never_answers),
                cmocka_unit_test(test_late_answer_sni_timeout),
                cmocka_unit_test(test_every_address_in_order),
                cmocka_unit_test(test_numeric_host_no_lookup),
                cmocka_unit_test(test_parse_server),
                cmocka_unit_test(test_hosts_in_order),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
