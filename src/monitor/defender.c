/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "basic/conf-parser.h"
#include "basic/hexdecoct.h"
#include "monitor/defender.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "monitor/metrics.h"
#include "cloud/session.h"

#define DEFENDER_TOPIC_FMT "$aws/things/%s/defender/metrics/json"
#define PROC_NET_MAX (4 * 1024 * 1024)

/* ---- /proc/net parsers ------------------------------------------------------------------- */

/* "0100007F:0CEA" (v4) or 32 hex digits ":PORT" (v6) → text address and port. The kernel
 * prints each 32-bit word of the address in host byte order. */
static int parse_addr(const char *s, size_t len, bool ipv6, char *out, size_t n, uint16_t *ret_port)
{
        size_t alen = ipv6 ? 32 : 8;
        uint8_t raw[16];
        unsigned port = 0;
        char text[INET6_ADDRSTRLEN];

        if (len != alen + 5 || s[alen] != ':')
                return -EINVAL;
        for (size_t w = 0; w < alen / 8; w++) {
                uint32_t v = 0;
                for (size_t i = 0; i < 8; i++) {
                        int h = unhexchar(s[w * 8 + i]);
                        if (h < 0)
                                return -EINVAL;
                        v = v << 4 | (uint32_t)h;
                }
                memcpy(raw + 4 * w, &v, 4); /* back to memory order */
        }
        for (size_t i = alen + 1; i < len; i++) {
                int h = unhexchar(s[i]);
                if (h < 0)
                        return -EINVAL;
                port = port << 4 | (unsigned)h;
        }
        if (!inet_ntop(ipv6 ? AF_INET6 : AF_INET, raw, text, sizeof text))
                return -EINVAL;
        if (out)
                snprintf(out, n, ipv6 ? "[%s]:%u" : "%s:%u", text, port);
        *ret_port = (uint16_t)port;
        return 0;
}

static void add_port(struct defender_port *v, size_t *n, uint16_t port)
{
        for (size_t i = 0; i < *n; i++)
                if (v[i].port == port)
                        return;
        if (*n < DEFENDER_MAX_PORTS)
                v[(*n)++].port = port;
}

/* Split a line into whitespace-separated fields; returns the count. */
static size_t fields(const char *line, const char *f[], size_t len[], size_t max)
{
        size_t k = 0;
        const char *p = line;

        while (*p && *p != '\n' && k < max) {
                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p || *p == '\n')
                        break;
                f[k] = p;
                while (*p && *p != ' ' && *p != '\t' && *p != '\n')
                        p++;
                len[k] = (size_t)(p - f[k]);
                k++;
        }
        return k;
}

static const char *next_line(const char *p)
{
        p = strchr(p, '\n');
        return p ? p + 1 : NULL;
}

int defender_parse_tcp(const char *text, bool ipv6, struct defender_net *net)
{
        const char *line = text ? next_line(text) : NULL; /* skip the header */

        for (; line && *line; line = next_line(line)) {
                const char *f[4];
                size_t len[4];
                uint16_t lport, rport;
                char remote[64];

                if (fields(line, f, len, 4) < 4 || len[2] == 0 || len[3] != 2)
                        continue;
                if (parse_addr(f[1], len[1], ipv6, NULL, 0, &lport) < 0 ||
                    parse_addr(f[2], len[2], ipv6, remote, sizeof remote, &rport) < 0)
                        continue;
                if (strncmp(f[3], "0A", 2) == 0)
                        add_port(net->tcp_listen, &net->n_tcp_listen, lport);
                else if (strncmp(f[3], "01", 2) == 0) {
                        net->total_established++;
                        if (net->n_established < DEFENDER_MAX_CONNECTIONS) {
                                struct defender_conn *c = &net->established[net->n_established++];
                                snprintf(c->remote, sizeof c->remote, "%s", remote);
                                c->local_port = lport;
                        }
                }
        }
        return 0;
}

int defender_parse_udp(const char *text, struct defender_net *net)
{
        const char *line = text ? next_line(text) : NULL;

        for (; line && *line; line = next_line(line)) {
                const char *f[4];
                size_t len[4];
                uint16_t lport;
                bool v6;

                if (fields(line, f, len, 4) < 4 || len[3] != 2 || strncmp(f[3], "07", 2) != 0)
                        continue;
                v6 = len[1] == 37;
                if (parse_addr(f[1], len[1], v6, NULL, 0, &lport) < 0 || lport == 0)
                        continue;
                add_port(net->udp_listen, &net->n_udp_listen, lport);
        }
        return 0;
}

int defender_parse_dev(const char *text, struct defender_net *net)
{
        const char *line = text;

        for (; line && *line; line = next_line(line)) {
                const char *colon = strchr(line, ':'), *nl = strchr(line, '\n');
                const char *name = line;
                unsigned long long v[10] = { 0 };

                if (!colon || (nl && colon > nl))
                        continue;
                while (*name == ' ')
                        name++;
                if (colon - name == 2 && strncmp(name, "lo", 2) == 0)
                        continue;
                if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                           &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) != 10)
                        continue;
                net->bytes_in += v[0];
                net->packets_in += v[1];
                net->bytes_out += v[8];
                net->packets_out += v[9];
        }
        return 0;
}

static char *read_text(const char *path)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0, cap = 0;

        if (!f)
                return NULL;
        for (;;) {
                size_t k;
                if (len + 4096 + 1 > cap) {
                        char *n;
                        if (cap >= PROC_NET_MAX)
                                break;
                        n = realloc(buf, cap + 65536);
                        if (!n)
                                break;
                        buf = n;
                        cap += 65536;
                }
                k = fread(buf + len, 1, cap - len - 1, f);
                len += k;
                if (k == 0)
                        break;
        }
        if (buf)
                buf[len] = 0;
        return buf;
}

int defender_read_net(struct defender_net *net)
{
        /* /proc/self/net: the unit's ProcSubset=pid hides /proc/net, not the process's own
         * view of its network namespace. */
        static const struct {
                const char *path;
                int kind; /* 0 tcp, 1 tcp6, 2 udp, 3 dev */
        } files[] = { { "/proc/self/net/tcp", 0 },
                      { "/proc/self/net/tcp6", 1 },
                      { "/proc/self/net/udp", 2 },
                      { "/proc/self/net/udp6", 2 },
                      { "/proc/self/net/dev", 3 } };

        memset(net, 0, sizeof *net);
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *t = read_text(files[i].path);
                if (!t)
                        continue;
                switch (files[i].kind) {
                case 0: defender_parse_tcp(t, false, net); break;
                case 1: defender_parse_tcp(t, true, net); break;
                case 2: defender_parse_udp(t, net); break;
                default: defender_parse_dev(t, net); break;
                }
        }
        return 0;
}

/* ---- the report -------------------------------------------------------------------------- */

static json_t *ports_json(const struct defender_port *v, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_pack("{si}", "port", (int)v[i].port));
        return json_pack("{so si}", "ports", a, "total", (int)n);
}

static void custom_number(json_t *c, const char *name, double v)
{
        json_object_set_new(c, name, json_pack("[{sf}]", "number", v));
}

static void custom_int(json_t *c, const char *name, json_int_t v)
{
        json_object_set_new(c, name, json_pack("[{sI}]", "number", v));
}

json_t *defender_report(uint64_t report_id, const struct defender_net *net, json_t *metrics)
{
        json_t *g = json_object_get(metrics, "gateway");
        json_t *devs = json_object_get(metrics, "devices"), *d;
        json_t *conns = json_array(), *custom = json_object();
        json_t *ids = json_array(), *msgs = json_array(), *authf = json_array(),
               *macerr = json_array(), *replays = json_array(), *quarantined = json_array();
        json_int_t sum_auth = 0, sum_mac = 0, sum_replay = 0, n_quar = 0, n_conn = 0;
        size_t i, listed = 0;

        for (size_t k = 0; k < net->n_established; k++)
                json_array_append_new(conns, json_pack("{ss si}", "remote_addr",
                                                       net->established[k].remote, "local_port",
                                                       (int)net->established[k].local_port));

        json_array_foreach (devs, i, d) {
                json_int_t a = json_integer_value(json_object_get(d, "auth_failures"));
                json_int_t m = json_integer_value(json_object_get(d, "mac_errors"));
                json_int_t r = json_integer_value(json_object_get(d, "replays"));
                const char *state = json_string_value(json_object_get(d, "state"));
                sum_auth += a;
                sum_mac += m;
                sum_replay += r;
                n_conn += json_is_true(json_object_get(d, "connected"));
                if (state && strcmp(state, "quarantined") == 0) {
                        n_quar++;
                        if (json_array_size(quarantined) < DEFENDER_MAX_DEVICES)
                                json_array_append(quarantined, json_object_get(d, "id"));
                }
                if (listed < DEFENDER_MAX_DEVICES) {
                        json_array_append(ids, json_object_get(d, "id"));
                        json_array_append_new(msgs, json_integer(json_integer_value(
                                                            json_object_get(d, "telemetry"))));
                        json_array_append_new(authf, json_integer(a));
                        json_array_append_new(macerr, json_integer(m));
                        json_array_append_new(replays, json_integer(r));
                        listed++;
                }
        }
        custom_int(custom, "mcugw_devices", (json_int_t)json_array_size(devs));
        custom_int(custom, "mcugw_devices_connected", n_conn);
        custom_int(custom, "mcugw_devices_quarantined", n_quar);
        custom_int(custom, "mcugw_auth_failures", sum_auth);
        custom_int(custom, "mcugw_mac_errors", sum_mac);
        custom_int(custom, "mcugw_replays", sum_replay);
        custom_int(custom, "mcugw_outbox_rows",
                   json_integer_value(json_object_get(g, "outbox_rows")));
        custom_int(custom, "mcugw_outbox_bytes",
                   json_integer_value(json_object_get(g, "outbox_bytes")));
        custom_int(custom, "mcugw_outbox_dropped",
                   json_integer_value(json_object_get(g, "outbox_dropped")));
        custom_int(custom, "mcugw_reconnects",
                   json_integer_value(json_object_get(g, "reconnects")));
        custom_int(custom, "mcugw_publishes_per_s",
                   json_integer_value(json_object_get(g, "publishes_per_s")));
        custom_int(custom, "mcugw_rss_bytes", json_integer_value(json_object_get(g, "rss_bytes")));
        custom_int(custom, "mcugw_disk_free_bytes",
                   json_integer_value(json_object_get(g, "disk_free_bytes")));
        custom_number(custom, "mcugw_cpu_percent",
                      json_number_value(json_object_get(g, "cpu_percent")));
        json_object_set_new(custom, "mcugw_device_ids", json_pack("[{so}]", "string_list", ids));
        json_object_set_new(custom, "mcugw_device_messages",
                            json_pack("[{so}]", "number_list", msgs));
        json_object_set_new(custom, "mcugw_device_auth_failures",
                            json_pack("[{so}]", "number_list", authf));
        json_object_set_new(custom, "mcugw_device_mac_errors",
                            json_pack("[{so}]", "number_list", macerr));
        json_object_set_new(custom, "mcugw_device_replays",
                            json_pack("[{so}]", "number_list", replays));
        json_object_set_new(custom, "mcugw_quarantined",
                            json_pack("[{so}]", "string_list", quarantined));

        return json_pack("{s{sI ss} s{so so s{sI sI sI sI} s{s{so si}}} so}", "header", "report_id",
                         (json_int_t)report_id, "version", "1.0", "metrics", "listening_tcp_ports",
                         ports_json(net->tcp_listen, net->n_tcp_listen), "listening_udp_ports",
                         ports_json(net->udp_listen, net->n_udp_listen), "network_stats",
                         "bytes_in", (json_int_t)net->bytes_in, "bytes_out",
                         (json_int_t)net->bytes_out, "packets_in", (json_int_t)net->packets_in,
                         "packets_out", (json_int_t)net->packets_out, "tcp_connections",
                         "established_connections", "connections", conns, "total",
                         (int)net->total_established, "custom_metrics", custom);
}

/* ---- runtime ----------------------------------------------------------------------------- */

struct defender {
        uv_timer_t timer;
        struct cloud_session *session;
        struct metrics *metrics;
        struct audit *audit;
        char topic[256];
        uint64_t interval_ms;
        uint64_t last_id;
        uint64_t sent, accepted, rejected, failed;
        char last_rejection[256];
        json_t *last_report;
};

static void on_reply(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
        struct defender *d = ud;
        json_t *o = json_loadb((const char *)payload, len, 0, NULL);
        size_t tl = strlen(topic);
        bool accepted = tl >= 9 && strcmp(topic + tl - 9, "/accepted") == 0;
        json_int_t id = json_integer_value(json_object_get(o, "reportId"));

        if (accepted) {
                d->accepted++;
                log_debug("defender: report %lld accepted", (long long)id);
        } else {
                json_t *details = json_object_get(o, "statusDetails");
                const char *code = json_string_value(json_object_get(details, "ErrorCode"));
                const char *msg = json_string_value(json_object_get(details, "ErrorMessage"));
                d->rejected++;
                snprintf(d->last_rejection, sizeof d->last_rejection, "%s%s%s",
                         code ? code : "rejected", msg ? ": " : "", msg ? msg : "");
                log_warning("defender: report %lld rejected: %s", (long long)id, d->last_rejection);
                audit_log(d->audit, "cloud", "defender.rejected", "",
                          json_pack("{sI ss}", "report_id", id, "reason", d->last_rejection));
        }
        json_decref(o);
}

int defender_send(struct defender *d, json_t **ret_report)
{
        struct defender_net net;
        json_t *m, *rep;
        _cleanup_free_ char *text = NULL;
        uint64_t id = (uint64_t)time(NULL);
        int r;

        if (id <= d->last_id)
                id = d->last_id + 1;
        defender_read_net(&net);
        metrics_sample(d->metrics);
        m = metrics_json(d->metrics);
        rep = defender_report(id, &net, m);
        json_decref(m);
        if (!rep)
                return -ENOMEM;
        text = json_dumps(rep, JSON_COMPACT);
        if (!text) {
                json_decref(rep);
                return -ENOMEM;
        }
        r = cloud_session_publish(d->session, d->topic, text, strlen(text));
        if (r < 0) {
                d->failed++;
                json_decref(rep);
                return r;
        }
        d->last_id = id;
        d->sent++;
        json_decref(d->last_report);
        d->last_report = json_incref(rep);
        if (ret_report)
                *ret_report = rep;
        else
                json_decref(rep);
        return 0;
}

static void on_timer(uv_timer_t *t)
{
        struct defender *d = t->data;
        int r = defender_send(d, NULL);
        if (r < 0)
                log_debug_errno(r, "defender: report not sent: %m");
}

void defender_set_interval(struct defender *d, uint64_t interval_ms)
{
        if (interval_ms == d->interval_ms)
                return;
        d->interval_ms = interval_ms;
        uv_timer_stop(&d->timer);
        if (interval_ms)
                uv_timer_start(&d->timer, on_timer, interval_ms, interval_ms);
}

json_t *defender_status_json(struct defender *d)
{
        return json_pack("{ss sI sI sI sI sI sI ss sO}", "topic", d->topic, "interval_ms",
                         (json_int_t)d->interval_ms, "sent", (json_int_t)d->sent, "accepted",
                         (json_int_t)d->accepted, "rejected", (json_int_t)d->rejected, "failed",
                         (json_int_t)d->failed, "last_report_id", (json_int_t)d->last_id,
                         "last_rejection", d->last_rejection, "last_report",
                         d->last_report ? d->last_report : json_null());
}

int defender_new(uv_loop_t *loop, struct cloud_session *session, struct metrics *metrics,
                 struct audit *audit, const char *thing, uint64_t interval_ms,
                 struct defender **ret)
{
        struct defender *d = calloc(1, sizeof *d);
        char filter[300];

        if (!d)
                return -ENOMEM;
        d->session = session;
        d->metrics = metrics;
        d->audit = audit;
        snprintf(d->topic, sizeof d->topic, DEFENDER_TOPIC_FMT, thing);
        uv_timer_init(loop, &d->timer);
        d->timer.data = d;
        snprintf(filter, sizeof filter, "%s/+", d->topic);
        /* Without a session there is nothing to publish to; the status still answers. */
        if (cloud_session_subscribe(session, filter, on_reply, d) < 0)
                log_debug("defender: no cloud session; reports off");
        else
                defender_set_interval(d, interval_ms);
        *ret = d;
        return 0;
}

static void timer_closed(uv_handle_t *h)
{
        struct defender *d = h->data;
        json_decref(d->last_report);
        free(d);
}

void defender_stop(struct defender *d)
{
        if (!d)
                return;
        cloud_session_forget(d->session, d);
        uv_close((uv_handle_t *)&d->timer, timer_closed);
}

int defender_config_parse_interval(const char *v, void *field, const char **reason)
{
        uint64_t t = 0;
        if (config_parse_duration(v, &t, reason) < 0)
                return -EINVAL;
        if (t && t < 300000000ULL) {
                *reason = "must be 0 (off) or at least 300s (Device Defender's minimum)";
                return -EINVAL;
        }
        *(uint64_t *)field = t;
        return 0;
}
