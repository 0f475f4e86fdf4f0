/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

/*
 * AWS IoT Device Defender device-side metrics (docs/monitoring.md): a JSON report published
 * every DefenderInterval (at least 5 minutes, the service's limit) to
 * $aws/things/THING/defender/metrics/json, THING being the MQTT client id. Its replies on
 * .../accepted and .../rejected are counted; a rejection is logged and audited.
 *
 *   {"header":{"report_id":N,"version":"1.0"},
 *    "metrics":{"listening_tcp_ports":{"ports":[{"port":P}],"total":n},
 *               "listening_udp_ports":{...},
 *               "network_stats":{"bytes_in","bytes_out","packets_in","packets_out"},
 *               "tcp_connections":{"established_connections":{"connections":[
 *                   {"remote_addr":"A:P","local_port":P}],"total":n}}},
 *    "custom_metrics":{"NAME":[{"number":x}] | [{"number_list":[…]}] | [{"string_list":[…]}]}}
 *
 * report_id grows strictly (seconds since the epoch, bumped if two reports share a second).
 * The parsers of /proc/net are pure functions, unit-tested on captured text.
 */

#define DEFENDER_MAX_PORTS 64
#define DEFENDER_MAX_CONNECTIONS 64
#define DEFENDER_MAX_DEVICES 100 /* per-device custom metric lists (AWS caps list sizes) */

struct defender_port {
        uint16_t port;
};

struct defender_conn {
        char remote[64]; /* "ADDR:PORT" */
        uint16_t local_port;
};

struct defender_net {
        struct defender_port tcp_listen[DEFENDER_MAX_PORTS];
        size_t n_tcp_listen;
        struct defender_port udp_listen[DEFENDER_MAX_PORTS];
        size_t n_udp_listen;
        struct defender_conn established[DEFENDER_MAX_CONNECTIONS];
        size_t n_established, total_established;
        uint64_t bytes_in, bytes_out, packets_in, packets_out;
};

/* /proc/net/tcp or tcp6 text: listening ports (deduplicated) and established connections.
 * udp: /proc/net/udp text, "listening" meaning bound sockets (state 07). */
int defender_parse_tcp(const char *text, bool ipv6, struct defender_net *net);
int defender_parse_udp(const char *text, struct defender_net *net);
/* /proc/net/dev text: sums over every interface but lo. */
int defender_parse_dev(const char *text, struct defender_net *net);
/* Read /proc/net/{tcp,tcp6,udp,udp6,dev} of this network namespace. */
int defender_read_net(struct defender_net *net);

/* The report for report_id, from the network facts and a metrics_json() object. */
json_t *defender_report(uint64_t report_id, const struct defender_net *net, json_t *metrics);

struct cloud_session;
struct metrics;
struct audit;
/* [Monitor] DefenderInterval= (config_parser_t, field: uint64_t µs): 0 (off) or at least 300s,
 * AWS IoT Device Defender's minimum. */
int defender_config_parse_interval(const char *v, void *field, const char **reason);

struct defender;

/* thing: the MQTT client id. Starts the periodic report if interval_ms > 0 and a session is
 * configured. */
int defender_new(uv_loop_t *loop, struct cloud_session *session, struct metrics *metrics,
                 struct audit *audit, const char *thing, uint64_t interval_ms,
                 struct defender **ret);
void defender_set_interval(struct defender *d, uint64_t interval_ms);
/* Build and publish a report now; 0 or -errno (-ENOTCONN offline). *ret_report (optional)
 * gets the report. */
int defender_send(struct defender *d, json_t **ret_report);
/* {"topic","interval_s","sent","accepted","rejected","failed","last_report_id",
 * "last_rejection","last_report"}. */
json_t *defender_status_json(struct defender *d);
void defender_stop(struct defender *d);
