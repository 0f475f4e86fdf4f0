/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ini.h>
#include <openssl/evp.h>

#include "config.h"
#include "daemon/conf.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "link/transport.h"
#include "cloud/topic.h"
#include "link/blefrag.h"
#include "mcugw/wire.h"

typedef int (*conf_parser_t)(const char *value, void *field, const char **ret_reason);

/* The C type of the field, for freeing and comparing. */
enum conf_type {
        CONF_STR,
        CONF_INT,
        CONF_UINT,
        CONF_U64,
        CONF_MODE,
        CONF_STRV, /* struct conf_strv: a repeatable key; an empty value clears the list */
};

struct conf_key {
        const char *section;
        const char *key;
        enum conf_type type;
        conf_parser_t parse;
        size_t offset;
        const char *def;    /* parsed through `parse` at init; NULL leaves the field zero */
        bool needs_restart; /* reload keeps the old value and warns */
};

static int parse_string(const char *v, void *field, const char **reason)
{
        char **s = field;
        char *n = strdup(v);
        if (!n)
                return -ENOMEM;
        free(*s);
        *s = n;
        return 0;
}

static int parse_string_opt(const char *v, void *field, const char **reason)
{
        char **s = field;
        if (!*v) {
                free(*s);
                *s = NULL;
                return 0;
        }
        return parse_string(v, field, reason);
}

static int strv_append(struct conf_strv *l, const char *v)
{
        char **n;
        if (l->n >= CONF_STRV_MAX)
                return -E2BIG;
        n = realloc(l->v, (l->n + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        l->v = n;
        if (!(l->v[l->n] = strdup(v)))
                return -ENOMEM;
        l->n++;
        return 0;
}

static void strv_clear(struct conf_strv *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        l->v = NULL;
        l->n = 0;
}

/* Repeatable key: each line adds an entry, an empty assignment resets (as in systemd units). */
static int parse_strv(const char *v, void *field, const char **reason)
{
        int r;
        if (!*v) {
                strv_clear(field);
                return 0;
        }
        r = strv_append(field, v);
        if (r == -E2BIG)
                *reason = "too many entries";
        return r;
}

static int parse_path(const char *v, void *field, const char **reason)
{
        if (v[0] != '/') {
                *reason = "must be an absolute path";
                return -EINVAL;
        }
        if (strlen(v) >= PATH_MAX) {
                *reason = "path too long";
                return -EINVAL;
        }
        return parse_string(v, field, reason);
}

/* AF_UNIX paths are limited by sun_path. */
static int parse_socket_path(const char *v, void *field, const char **reason)
{
        if (strlen(v) >= 108) {
                *reason = "socket path longer than 107 bytes";
                return -EINVAL;
        }
        return parse_path(v, field, reason);
}

static int parse_name(const char *v, void *field, const char **reason)
{
        if (!*v || strlen(v) > 64) {
                *reason = "must be 1 to 64 characters";
                return -EINVAL;
        }
        for (const char *p = v; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("-_.:", *p)) {
                        *reason = "may contain only letters, digits and -_.:";
                        return -EINVAL;
                }
        return parse_string(v, field, reason);
}

static int parse_log_level(const char *v, void *field, const char **reason)
{
        int l = log_level_from_string(v);
        if (l < 0) {
                *reason = "expected one of debug, info, notice, warning, error";
                return -EINVAL;
        }
        *(int *)field = l;
        return 0;
}

static int parse_u64(const char *v, uint64_t *ret, int base)
{
        char *end;
        unsigned long long x;

        if (!*v || *v == '-' || isspace((unsigned char)*v))
                return -EINVAL;
        errno = 0;
        x = strtoull(v, &end, base);
        if (errno || end == v)
                return -EINVAL;
        *ret = x;
        return (int)(end - v);
}

static int parse_mode(const char *v, void *field, const char **reason)
{
        uint64_t m;
        int n = parse_u64(v, &m, 8);
        if (n < 0 || v[n] || m > 0777) {
                *reason = "expected an octal mode such as 0660";
                return -EINVAL;
        }
        *(mode_t *)field = (mode_t)m;
        return 0;
}

static int parse_unsigned_range(const char *v, unsigned *field, uint64_t min, uint64_t max,
                                const char **reason)
{
        uint64_t x;
        int n = parse_u64(v, &x, 10);
        if (n < 0 || v[n] || x < min || x > max) {
                *reason = "number out of range";
                return -EINVAL;
        }
        *field = (unsigned)x;
        return 0;
}

static int parse_max_clients(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 1, 1024, reason);
}

static int parse_per_min(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 0, 100000, reason);
}

/* "64K", "1M", "2G" or plain bytes. */
static int parse_size(const char *v, void *field, const char **reason)
{
        uint64_t x, mul = 1;
        int n = parse_u64(v, &x, 10);
        if (n < 0)
                goto bad;
        switch (v[n]) {
        case 0: break;
        case 'K':
                mul = 1024;
                n++;
                break;
        case 'M':
                mul = 1024 * 1024;
                n++;
                break;
        case 'G':
                mul = 1024ULL * 1024 * 1024;
                n++;
                break;
        default: goto bad;
        }
        if (v[n] || x > UINT64_MAX / mul)
                goto bad;
        *(uint64_t *)field = x * mul;
        return 0;
bad:
        *reason = "expected a size such as 65536, 64K or 1M";
        return -EINVAL;
}

/* "10ms", "2s", "5min", "1h"; a plain number means seconds (as in systemd). Stored in µs. */
static int parse_duration(const char *v, void *field, const char **reason)
{
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                { "", 1000000 },         { "us", 1 },         { "ms", 1000 },
                { "s", 1000000 },        { "min", 60000000 }, { "h", 3600000000ULL },
                { "d", 86400000000ULL },
        };
        uint64_t x;
        int n = parse_u64(v, &x, 10);
        if (n < 0)
                goto bad;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strcmp(v + n, units[i].suffix) == 0) {
                        if (x > UINT64_MAX / units[i].usec)
                                goto bad;
                        *(uint64_t *)field = x * units[i].usec;
                        return 0;
                }
bad:
        *reason = "expected a duration such as 10ms, 2s or 5min";
        return -EINVAL;
}

/* [Link] endpoints are validated here so that --check-config reports them with file:line. */
static int parse_link_listen(const char *v, void *field, const char **reason)
{
        struct transport_endpoint ep;
        if (*v && transport_parse_listen(v, &ep, reason) < 0)
                return -EINVAL;
        return parse_strv(v, field, reason);
}

static int parse_link_serial(const char *v, void *field, const char **reason)
{
        struct transport_endpoint ep;
        if (*v && transport_parse_serial(v, &ep, reason) < 0)
                return -EINVAL;
        return parse_strv(v, field, reason);
}

static int parse_link_max_connections(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 1, 65536, reason);
}

static int parse_link_rate(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 1, 1000000, reason);
}

/* [BLE] (docs/ble.md) */
static int parse_ble_device(const char *v, void *field, const char **reason)
{
        char a[18];
        if (*v && blefrag_address_normalize(v, a) < 0) {
                *reason = "expected a Bluetooth address such as AA:BB:CC:DD:EE:FF";
                return -EINVAL;
        }
        return parse_strv(*v ? a : v, field, reason);
}

static int parse_ble_uuid(const char *v, void *field, const char **reason)
{
        char u[37];
        if (blefrag_uuid_normalize(v, u) < 0) {
                *reason = "expected a 128-bit UUID such as 6e4d0001-8e5e-4c39-9a0e-6d6367770000";
                return -EINVAL;
        }
        return parse_string(u, field, reason);
}

static int parse_ble_adapter(const char *v, void *field, const char **reason)
{
        if (*v &&
            (strlen(v) > 32 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(v))) {
                *reason = "expected an adapter name such as hci0";
                return -EINVAL;
        }
        return parse_string_opt(v, field, reason);
}

/* [MQTT], [Relay], [Outbox] (docs/mqtt.md) */
int conf_parse_boolean(const char *v)
{
        static const char *const yes[] = { "yes", "true", "on", "1" };
        static const char *const no[] = { "no", "false", "off", "0" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcmp(v, yes[i]) == 0)
                        return 1;
                if (strcmp(v, no[i]) == 0)
                        return 0;
        }
        return -EINVAL;
}

static int parse_bool(const char *v, void *field, const char **reason)
{
        int b = conf_parse_boolean(v);
        if (b < 0) {
                *reason = "expected yes or no";
                return b;
        }
        *(int *)field = b;
        return 0;
}

static int parse_port(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 1, 65535, reason);
}

static int parse_mqtt_protocol(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "3.1.1") == 0 || strcmp(v, "4") == 0)
                *(int *)field = 4;
        else if (strcmp(v, "5") == 0 || strcmp(v, "5.0") == 0)
                *(int *)field = 5;
        else {
                *reason = "expected 3.1.1 or 5";
                return -EINVAL;
        }
        return 0;
}

static int parse_mqtt_inflight(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 1, 65535, reason);
}

static int parse_rate(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 0, 10000000, reason);
}

static int parse_topic(const char *v, void *field, unsigned allowed, unsigned required,
                       unsigned whole, const char **reason)
{
        if (topic_template_check(v, allowed, required, whole, reason) < 0)
                return -EINVAL;
        return parse_string(v, field, reason);
}

static int parse_topic_gateway(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY, 0, 0, reason);
}

static int parse_topic_telemetry(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE | TOPIC_VAR_STREAM,
                           TOPIC_VAR_DEVICE, 0, reason);
}

static int parse_topic_command(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE,
                           TOPIC_VAR_DEVICE, reason);
}

static int parse_topic_result(const char *v, void *field, const char **reason)
{
        return parse_topic(v, field, TOPIC_VAR_GATEWAY | TOPIC_VAR_DEVICE, TOPIC_VAR_DEVICE, 0,
                           reason);
}

static int parse_sync(const char *v, void *field, const char **reason)
{
        static const char *const names[] = { "off", "normal", "full", "extra" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(v, names[i]) == 0) {
                        *(int *)field = (int)i;
                        return 0;
                }
        *reason = "expected off, normal, full or extra";
        return -EINVAL;
}

/* A private key: an absolute path, or an RFC 7512 "pkcs11:" URI (cred.h). */
static int parse_key_spec(const char *v, void *field, const char **reason)
{
        if (strncmp(v, "pkcs11:", 7) == 0) {
                if (strlen(v) > 1024) {
                        *reason = "URI too long";
                        return -EINVAL;
                }
                return parse_string(v, field, reason);
        }
        return parse_path(v, field, reason);
}

/* Parameters=Key=Value (fleet provisioning template parameters). */
/* The fleet provisioning API's payload format: AWS offers each topic as …/json and …/cbor. */
static int parse_prov_format(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "json") == 0)
                *(int *)field = 0;
        else if (strcmp(v, "cbor") == 0)
                *(int *)field = 1;
        else {
                *reason = "expected json or cbor";
                return -EINVAL;
        }
        return 0;
}

static int parse_prov_parameter(const char *v, void *field, const char **reason)
{
        const char *eq = strchr(v, '=');
        if (*v && (!eq || eq == v || strlen(v) > 1024)) {
                *reason = "expected Key=Value";
                return -EINVAL;
        }
        return parse_strv(v, field, reason);
}

static int parse_onboarding_policy(const char *v, void *field, const char **reason)
{
        static const char *const names[] = { "off", "pending", "active" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(v, names[i]) == 0) {
                        *(int *)field = (int)i;
                        return 0;
                }
        *reason = "expected off, pending or active";
        return -EINVAL;
}

/* [Monitor] (docs/monitoring.md) */
static int parse_cloud_command(const char *v, void *field, const char **reason)
{
        static const char *const allowed[] = { "quarantine", "release", "revoke", "disconnect",
                                               "rotate-session" };
        if (*v) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(allowed); i++)
                        if (strcmp(v, allowed[i]) == 0)
                                break;
                if (i == ELEMENTSOF(allowed)) {
                        *reason = "expected quarantine, release, revoke, disconnect or "
                                  "rotate-session";
                        return -EINVAL;
                }
        }
        return parse_strv(v, field, reason);
}

/* AWS IoT Device Defender accepts at most one report every 5 minutes; 0 turns reports off. */
static int parse_defender_interval(const char *v, void *field, const char **reason)
{
        uint64_t t = 0;
        if (parse_duration(v, &t, reason) < 0)
                return -EINVAL;
        if (t && t < 300000000ULL) {
                *reason = "must be 0 (off) or at least 300s (Device Defender's minimum)";
                return -EINVAL;
        }
        *(uint64_t *)field = t;
        return 0;
}

static int parse_days(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 0, 3650, reason);
}

#define F(x) offsetof(struct conf, x)
static int parse_ota_targeting(const char *v, void *field, const char **reason)
{
        if (strcmp(v, "thing-per-device") == 0)
                *(int *)field = 0;
        else if (strcmp(v, "gateway") == 0)
                *(int *)field = 1;
        else {
                *reason = "expected thing-per-device or gateway";
                return -EINVAL;
        }
        return 0;
}

static int parse_ota_block(const char *v, void *field, const char **reason)
{
        if (parse_size(v, field, reason) < 0)
                return -EINVAL;
        if (*(uint64_t *)field < 256 || *(uint64_t *)field > 128 * 1024) {
                *reason = "block size must be 256 bytes .. 128K";
                return -EINVAL;
        }
        return 0;
}

static int parse_ota_count(const char *v, void *field, const char **reason)
{
        return parse_unsigned_range(v, field, 0, 100000, reason);
}

static int parse_ota_thing(const char *v, void *field, const char **reason)
{
        if (!*v || strlen(v) > 128 || strchr(v, '/') || strchr(v, '+') || strchr(v, '#')) {
                *reason = "thing name template must be 1..128 characters without / + #";
                return -EINVAL;
        }
        return parse_string(v, field, reason);
}

static const struct conf_key conf_keys[] = {
        { "Gateway", "Name", CONF_STR, parse_name, F(gateway_name), NULL, true },
        { "Gateway", "LogLevel", CONF_INT, parse_log_level, F(log_level), "info", false },
        { "Paths", "StateDirectory", CONF_STR, parse_path, F(state_dir), "/var/lib/mcugw", true },
        { "Paths", "RuntimeDirectory", CONF_STR, parse_path, F(runtime_dir), "/run/mcugw", true },
        { "Paths", "ControlSocket", CONF_STR, parse_socket_path, F(control_socket),
          "/run/mcugw/control.sock", true },
        { "Paths", "DevicesDirectory", CONF_STR, parse_path, F(devices_dir),
          MCUGW_SYSCONFDIR "/mcugw/devices.d", false },
        { "Control", "SocketMode", CONF_MODE, parse_mode, F(socket_mode), "0660", true },
        { "Control", "AdminGroup", CONF_STR, parse_string_opt, F(admin_group), "mcugw-admin",
          false },
        { "Control", "ReadOnlyGroup", CONF_STR, parse_string_opt, F(readonly_group), "mcugw",
          false },
        { "Control", "MaxClients", CONF_UINT, parse_max_clients, F(max_clients), "32", false },
        { "Control", "MaxRequestSize", CONF_U64, parse_size, F(max_request_bytes), "1M", false },
        { "Database", "Synchronous", CONF_INT, parse_sync, F(synchronous), "full", true },
        { "Database", "CommitInterval", CONF_U64, parse_duration, F(commit_interval_usec), "10ms",
          false },
        { "Audit", "RefusalsPerMinute", CONF_UINT, parse_per_min, F(refusal_audit_per_min), "30",
          false },
        { "Audit", "Export", CONF_INT, parse_bool, F(audit_export), "no", false },
        { "Audit", "MaxAge", CONF_U64, parse_duration, F(audit_max_age_usec), "0", false },
        { "Audit", "MaxRecords", CONF_U64, parse_size, F(audit_max_records), "0", false },
        { "Link", "PrivateKeyFile", CONF_STR, parse_path, F(link_private_key_file), NULL, true },
        { "Link", "ListenStream", CONF_STRV, parse_link_listen, F(link_listen), NULL, true },
        { "Link", "SerialPort", CONF_STRV, parse_link_serial, F(link_serial), NULL, true },
        { "Link", "MaxConnections", CONF_UINT, parse_link_max_connections, F(link_max_connections),
          "1024", true },
        { "Link", "HandshakeTimeout", CONF_U64, parse_duration, F(link_handshake_timeout_usec),
          "10s", true },
        { "Link", "IdleTimeout", CONF_U64, parse_duration, F(link_idle_timeout_usec), "5min",
          true },
        { "Link", "HandshakeRate", CONF_UINT, parse_link_rate, F(link_handshake_rate), "1000",
          true },
        { "Link", "HandshakeRatePerLink", CONF_UINT, parse_link_rate,
          F(link_handshake_rate_per_link), "2", true },
        { "Link", "AuditFailuresPerMinute", CONF_UINT, parse_per_min, F(link_audit_per_min), "10",
          true },
        { "MQTT", "Host", CONF_STR, parse_string_opt, F(mqtt_host), NULL, true },
        { "MQTT", "Port", CONF_UINT, parse_port, F(mqtt_port), "8883", true },
        { "MQTT", "ClientId", CONF_STR, parse_string_opt, F(mqtt_client_id), NULL, true },
        { "MQTT", "ServerName", CONF_STR, parse_string_opt, F(mqtt_server_name), NULL, true },
        { "MQTT", "CAFile", CONF_STR, parse_path, F(mqtt_ca_file), NULL, true },
        { "MQTT", "CertificateFile", CONF_STR, parse_path, F(mqtt_cert_file), NULL, true },
        { "MQTT", "KeyFile", CONF_STR, parse_key_spec, F(mqtt_key_file), NULL, true },
        { "MQTT", "PKCS11Module", CONF_STR, parse_path, F(mqtt_pkcs11_module), NULL, true },
        { "MQTT", "ALPN", CONF_STR, parse_string_opt, F(mqtt_alpn), NULL, true },
        { "MQTT", "ProtocolVersion", CONF_INT, parse_mqtt_protocol, F(mqtt_protocol), "3.1.1",
          true },
        { "MQTT", "KeepAlive", CONF_U64, parse_duration, F(mqtt_keepalive_usec), "60s", true },
        { "MQTT", "MaxInflight", CONF_UINT, parse_mqtt_inflight, F(mqtt_max_inflight), "20", true },
        { "MQTT", "ReconnectMin", CONF_U64, parse_duration, F(mqtt_reconnect_min_usec), "1s",
          true },
        { "MQTT", "ReconnectMax", CONF_U64, parse_duration, F(mqtt_reconnect_max_usec), "2min",
          true },
        { "MQTT", "StatusTopic", CONF_STR, parse_topic_gateway, F(topic_status),
          "mcugw/{gateway}/status", true },
        { "MQTT", "BatchTopic", CONF_STR, parse_topic_gateway, F(topic_batch),
          "mcugw/{gateway}/batch", true },
        { "MQTT", "TelemetryTopic", CONF_STR, parse_topic_telemetry, F(topic_telemetry),
          "mcugw/{gateway}/dev/{device}/telemetry/{stream}", true },
        { "MQTT", "CommandTopic", CONF_STR, parse_topic_command, F(topic_command),
          "mcugw/{gateway}/cmd/{device}", true },
        { "MQTT", "CommandResultTopic", CONF_STR, parse_topic_result, F(topic_command_result),
          "mcugw/{gateway}/cmd-result/{device}", true },
        { "Relay", "Batching", CONF_INT, parse_bool, F(relay_batching), "yes", true },
        { "Relay", "BatchWindow", CONF_U64, parse_duration, F(relay_batch_window_usec), "50ms",
          true },
        { "Relay", "MaxPayload", CONF_U64, parse_size, F(relay_max_payload), "128K", true },
        { "Relay", "PublishesPerSecond", CONF_UINT, parse_rate, F(relay_publishes_per_s), "100",
          true },
        { "Relay", "BytesPerSecond", CONF_U64, parse_size, F(relay_bytes_per_s), "512K", true },
        { "Outbox", "MaxBytes", CONF_U64, parse_size, F(outbox_max_bytes), "4G", true },
        { "Outbox", "OverflowAuditsPerMinute", CONF_UINT, parse_per_min, F(outbox_audit_per_min),
          "6", true },
        { "Monitor", "Rules", CONF_INT, parse_bool, F(monitor_rules), "yes", false },
        { "Monitor", "RulesDirectory", CONF_STR, parse_path, F(rules_dir),
          MCUGW_SYSCONFDIR "/mcugw/rules.d", false },
        { "Monitor", "MetricsInterval", CONF_U64, parse_duration, F(metrics_interval_usec), "1s",
          false },
        { "Monitor", "DefenderInterval", CONF_U64, parse_defender_interval,
          F(defender_interval_usec), "300s", false },
        { "Monitor", "AlertTopic", CONF_STR, parse_topic_gateway, F(topic_alert),
          "mcugw/{gateway}/alerts", true },
        { "Monitor", "RemediationTopic", CONF_STR, parse_topic_gateway, F(topic_remediation),
          "mcugw/{gateway}/remediate", true },
        { "Monitor", "CloudCommands", CONF_STRV, parse_cloud_command, F(cloud_commands), NULL,
          false },
        { "Monitor", "CertificateExpiryDays", CONF_UINT, parse_days, F(cert_expiry_days), "30",
          false },
        { "Monitor", "DriftCheckInterval", CONF_U64, parse_duration, F(drift_check_usec), "1h",
          false },
        { "BLE", "Adapter", CONF_STR, parse_ble_adapter, F(ble_adapter), NULL, true },
        { "BLE", "Device", CONF_STRV, parse_ble_device, F(ble_devices), NULL, true },
        { "BLE", "ServiceUUID", CONF_STR, parse_ble_uuid, F(ble_service_uuid),
          MCUGW_BLE_SERVICE_UUID, true },
        { "BLE", "CharacteristicUUID", CONF_STR, parse_ble_uuid, F(ble_characteristic_uuid),
          MCUGW_BLE_CHARACTERISTIC_UUID, true },
        { "BLE", "BusAddress", CONF_STR, parse_string_opt, F(ble_bus_address), NULL, true },
        { "BLE", "ReconnectMin", CONF_U64, parse_duration, F(ble_reconnect_min_usec), "1s", true },
        { "BLE", "ReconnectMax", CONF_U64, parse_duration, F(ble_reconnect_max_usec), "1min",
          true },
        { "BLE", "NotifyRateLimit", CONF_U64, parse_size, F(ble_notify_rate), "64K", true },
        { "BLE", "Acquire", CONF_INT, parse_bool, F(ble_acquire), "yes", true },
        { "Onboarding", "Policy", CONF_INT, parse_onboarding_policy, F(onboarding_policy), "off",
          false },
        { "Onboarding", "ManufacturerKey", CONF_STRV, parse_strv, F(manufacturer_keys), NULL,
          false },
        { "Onboarding", "RevokedManufacturerKey", CONF_STRV, parse_strv,
          F(revoked_manufacturer_keys), NULL, false },
        { "OTA", "CodeSigningCertificate", CONF_STR, parse_path, F(ota_signing_cert), NULL, false },
        { "OTA", "CacheDirectory", CONF_STR, parse_path, F(ota_cache_dir), NULL, true },
        { "OTA", "MaxCacheSize", CONF_U64, parse_size, F(ota_max_cache), "256M", false },
        { "OTA", "BlockSize", CONF_U64, parse_ota_block, F(ota_block_size), "4K", false },
        { "OTA", "DownloadBlockSize", CONF_U64, parse_ota_block, F(ota_download_block), "128K",
          false },
        { "OTA", "Targeting", CONF_INT, parse_ota_targeting, F(ota_targeting), "thing-per-device",
          true },
        { "OTA", "ThingNameTemplate", CONF_STR, parse_ota_thing, F(ota_thing_template),
          "{gateway}-{device}", true },
        { "OTA", "MaxConcurrent", CONF_UINT, parse_ota_count, F(ota_max_concurrent), "8", false },
        { "OTA", "MaxConcurrentPerLink", CONF_UINT, parse_ota_count, F(ota_max_per_link), "1",
          false },
        { "OTA", "AbortAfterFailures", CONF_UINT, parse_ota_count, F(ota_abort_after), "3", false },
        { "OTA", "AllowDowngrade", CONF_INT, parse_bool, F(ota_allow_downgrade), "no", false },
        { "OTA", "AllowUnsigned", CONF_INT, parse_bool, F(ota_allow_unsigned), "no", false },
        { "OTA", "Window", CONF_U64, parse_size, F(ota_window), "16K", false },
        { "Provisioning", "ClaimCertificateFile", CONF_STR, parse_path, F(prov_claim_cert), NULL,
          true },
        { "Provisioning", "ClaimKeyFile", CONF_STR, parse_path, F(prov_claim_key), NULL, true },
        { "Provisioning", "Template", CONF_STR, parse_string_opt, F(prov_template), NULL, true },
        { "Provisioning", "Parameters", CONF_STRV, parse_prov_parameter, F(prov_parameters), NULL,
          true },
        { "Provisioning", "RotateBeforeExpiry", CONF_U64, parse_duration,
          F(prov_rotate_before_usec), "0", true },
        { "Provisioning", "Format", CONF_INT, parse_prov_format, F(prov_cbor), "json", true },
};
#undef F

static const struct conf_key *conf_key_find(const char *section, const char *key, bool *section_ok)
{
        *section_ok = false;
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++) {
                if (strcmp(conf_keys[i].section, section) != 0)
                        continue;
                *section_ok = true;
                if (strcmp(conf_keys[i].key, key) == 0)
                        return &conf_keys[i];
        }
        return NULL;
}

#define CONF_ERRORS_MAX 1000

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
{
        va_list ap;
        char *m;
        char **n;

        /* Enough to fix a file with; a hostile one must not make us allocate without bound. */
        if (e->n > CONF_ERRORS_MAX)
                return;
        if (e->n == CONF_ERRORS_MAX)
                m = strdup("(more errors not shown)");
        else {
                va_start(ap, fmt);
                if (vasprintf(&m, fmt, ap) < 0)
                        m = NULL;
                va_end(ap);
        }
        if (!m)
                return;
        n = realloc(e->msgs, (e->n + 1) * sizeof *n);
        if (!n) {
                free(m);
                return;
        }
        e->msgs = n;
        e->msgs[e->n++] = m;
}

void conf_errors_clear(struct conf_errors *e)
{
        for (size_t i = 0; i < e->n; i++)
                free(e->msgs[i]);
        free(e->msgs);
        e->msgs = NULL;
        e->n = 0;
}

void conf_free(struct conf *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++)
                if (conf_keys[i].type == CONF_STR)
                        free(*(char **)((char *)c + conf_keys[i].offset));
                else if (conf_keys[i].type == CONF_STRV)
                        strv_clear((struct conf_strv *)((char *)c + conf_keys[i].offset));
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        free(c);
}

static struct conf *conf_new_defaults(void)
{
        struct conf *c = calloc(1, sizeof *c);
        if (!c)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++) {
                const char *reason = NULL;
                if (!conf_keys[i].def)
                        continue;
                if (conf_keys[i].parse(conf_keys[i].def, (char *)c + conf_keys[i].offset, &reason) <
                    0) {
                        conf_free(c);
                        return NULL;
                }
        }
        return c;
}

/* State shared between our line reader and the inih handler for one file. inih (as Debian
 * builds it) gives handlers no line numbers and reads lines of at most INI_MAX_LINE bytes, so we
 * feed it through a reader that counts lines, reports overlong ones, disables continuation lines
 * and numbers the sections (so repeated sections can be told apart). */
struct ini_reader {
        const char *name;
        FILE *f;          /* file source, or */
        const char *text; /* string source */
        size_t text_off;
        unsigned line;
        unsigned section_index;
        struct conf_errors *err;
        EVP_MD_CTX *md; /* optional: hash of everything read */
        bool (*section_known)(const char *section);
        conf_ini_fn fn;
        void *userdata;
};

static void ini_hash(struct ini_reader *r, const void *p, size_t n)
{
        if (r->md)
                EVP_DigestUpdate(r->md, p, n);
}

static char *ini_read_line(char *str, int num, void *stream)
{
        struct ini_reader *r = stream;
        char *p;
        size_t len;

        if (r->f) {
                if (!fgets(str, num, r->f))
                        return NULL;
        } else {
                const char *s = r->text + r->text_off, *nl;
                if (!*s)
                        return NULL;
                nl = strchr(s, '\n');
                len = nl ? (size_t)(nl - s + 1) : strlen(s);
                if (len > (size_t)num - 1)
                        len = (size_t)num - 1;
                memcpy(str, s, len);
                str[len] = 0;
                r->text_off += len;
        }
        r->line++;
        len = strlen(str);
        ini_hash(r, str, len);

        /* inih reads in chunks of INI_MAX_LINE: report an overlong line and skip the rest of it. */
        if (len == (size_t)num - 1 && str[len - 1] != '\n') {
                int c;
                conf_errors_add(r->err, "%s:%u: line too long (more than %d bytes)", r->name,
                                r->line, num - 2);
                if (r->f) {
                        while ((c = fgetc(r->f)) != EOF && c != '\n')
                                ini_hash(r, &(char){ (char)c }, 1);
                } else {
                        const char *s = r->text + r->text_off;
                        const char *nl = strchr(s, '\n');
                        size_t skip = nl ? (size_t)(nl - s + 1) : strlen(s);
                        ini_hash(r, s, skip);
                        r->text_off += skip;
                }
                str[0] = '\n';
                str[1] = 0;
                return str;
        }

        /* No continuation lines: an indented line is an ordinary line. */
        for (p = str; *p == ' ' || *p == '\t'; p++)
                ;
        if (p != str)
                memmove(str, p, strlen(p) + 1);

        /* Section headers are checked and numbered here, where we know the line. */
        if (str[0] == '[') {
                char *end = strchr(str, ']');
                r->section_index++;
                if (end && r->section_known) {
                        *end = 0;
                        if (!r->section_known(str + 1))
                                conf_errors_add(r->err, "%s:%u: unknown section [%s]", r->name,
                                                r->line, str + 1);
                        *end = ']';
                }
        }
        return str;
}

static int ini_on_line(void *user, const char *section, const char *name, const char *value)
{
        struct ini_reader *r = user;

        if (!*section) {
                conf_errors_add(r->err, "%s:%u: key '%s' outside of any section", r->name, r->line,
                                name);
                return 1;
        }
        r->fn(r->userdata, r->name, r->line, r->section_index, section, name, value);
        return 1;
}

static void ini_run(struct ini_reader *r)
{
        int q = ini_parse_stream(ini_read_line, r, ini_on_line, r);
        if (q > 0)
                conf_errors_add(r->err, "%s:%d: syntax error (expected [Section] or Key=Value)",
                                r->name, q);
        else if (q < 0)
                conf_errors_add(r->err, "%s: could not be parsed", r->name);
}

int conf_ini_parse_file(const char *path, conf_ini_fn fn, void *userdata, struct conf_errors *err)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        struct ini_reader r = { .name = path, .f = f, .err = err, .fn = fn, .userdata = userdata };

        if (!f) {
                conf_errors_add(err, "%s: cannot open: %s", path, strerror(errno));
                return -errno;
        }
        ini_run(&r);
        return 0;
}

int conf_ini_parse_string(const char *name, const char *text, conf_ini_fn fn, void *userdata,
                          struct conf_errors *err)
{
        struct ini_reader r = {
                .name = name, .text = text, .err = err, .fn = fn, .userdata = userdata
        };
        ini_run(&r);
        return 0;
}

static bool conf_section_known(const char *section)
{
        bool ok;
        conf_key_find(section, "", &ok);
        return ok;
}

struct conf_parse_state {
        struct conf *conf;
        struct conf_errors *err;
};

static void conf_on_key(void *userdata, const char *file, unsigned line, unsigned section_index,
                        const char *section, const char *name, const char *value)
{
        struct conf_parse_state *st = userdata;
        const struct conf_key *k;
        const char *reason = "invalid value";
        bool section_ok;
        int q;

        k = conf_key_find(section, name, &section_ok);
        if (!k) {
                if (section_ok) /* unknown sections were reported by the reader */
                        conf_errors_add(st->err, "%s:%u: unknown key '%s' in section [%s]", file,
                                        line, name, section);
                return;
        }
        q = k->parse(value, (char *)st->conf + k->offset, &reason);
        if (q == -ENOMEM)
                conf_errors_add(st->err, "%s:%u: out of memory", file, line);
        else if (q < 0)
                conf_errors_add(st->err, "%s:%u: %s=%s: %s", file, line, name, value, reason);
}

static int conf_add_file(struct conf *c, const char *path)
{
        char **n = realloc(c->files, (c->n_files + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        c->files = n;
        if (!(c->files[c->n_files] = strdup(path)))
                return -ENOMEM;
        c->n_files++;
        return 0;
}

static int conf_parse_path(struct conf_parse_state *st, EVP_MD_CTX *md, const char *path)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        struct ini_reader r = { .name = path,
                                .f = f,
                                .err = st->err,
                                .md = md,
                                .section_known = conf_section_known,
                                .fn = conf_on_key,
                                .userdata = st };

        if (!f) {
                conf_errors_add(st->err, "%s: cannot open: %s", path, strerror(errno));
                return 0;
        }
        EVP_DigestUpdate(md, path, strlen(path) + 1);
        if (conf_add_file(st->conf, path) < 0)
                return -ENOMEM;
        ini_run(&r);
        return 0;
}

static int dropin_filter(const struct dirent *d)
{
        return d->d_name[0] != '.' && fnmatch("*.conf", d->d_name, 0) == 0;
}

static void conf_finish(struct conf *c, EVP_MD_CTX *md)
{
        unsigned char h[32];
        unsigned len = 0;
        EVP_DigestFinal_ex(md, h, &len);
        for (unsigned i = 0; i < 32; i++)
                snprintf(c->hash + 2 * i, 3, "%02x", h[i]);
}

static void conf_validate(struct conf *c, const char *name, struct conf_errors *err)
{
        if (c->admin_group && c->readonly_group && strcmp(c->admin_group, c->readonly_group) == 0)
                conf_errors_add(err, "%s: [Control] AdminGroup and ReadOnlyGroup must differ",
                                name);
        if (c->max_request_bytes < 1024 || c->max_request_bytes > 16 * 1024 * 1024)
                conf_errors_add(err, "%s: [Control] MaxRequestSize must be between 1K and 16M",
                                name);
        if (c->commit_interval_usec > 1000000)
                conf_errors_add(err, "%s: [Database] CommitInterval must be at most 1s", name);
        if (c->mqtt_host && (!c->mqtt_ca_file || !c->mqtt_cert_file || !c->mqtt_key_file))
                conf_errors_add(err,
                                "%s: [MQTT] Host= needs CAFile=, CertificateFile= and "
                                "KeyFile= (mutual TLS)",
                                name);
        if (c->prov_claim_cert && (!c->prov_claim_key || !c->prov_template || !c->mqtt_host))
                conf_errors_add(err,
                                "%s: [Provisioning] ClaimCertificateFile= needs "
                                "ClaimKeyFile=, Template= and [MQTT] Host=",
                                name);
        if ((c->prov_claim_cert || c->prov_rotate_before_usec) && c->mqtt_key_file &&
            strncmp(c->mqtt_key_file, "pkcs11:", 7) == 0)
                conf_errors_add(err,
                                "%s: [Provisioning] needs [MQTT] KeyFile= to be a file: the "
                                "new key is written there",
                                name);
        if (c->mqtt_reconnect_min_usec < 1000000 ||
            c->mqtt_reconnect_max_usec < c->mqtt_reconnect_min_usec)
                conf_errors_add(err,
                                "%s: [MQTT] ReconnectMin must be at least 1s and at most "
                                "ReconnectMax",
                                name);
        if (c->mqtt_keepalive_usec < 5000000 || c->mqtt_keepalive_usec > 65535000000ULL)
                conf_errors_add(err, "%s: [MQTT] KeepAlive must be between 5s and 65535s", name);
        if (c->relay_max_payload < 1024 || c->relay_max_payload > 256 * 1024 * 1024)
                conf_errors_add(err, "%s: [Relay] MaxPayload must be between 1K and 256M", name);
        if (c->relay_batch_window_usec > 10000000)
                conf_errors_add(err, "%s: [Relay] BatchWindow must be at most 10s", name);
        if (c->metrics_interval_usec < 100000 || c->metrics_interval_usec > 60000000)
                conf_errors_add(err, "%s: [Monitor] MetricsInterval must be between 100ms and 60s",
                                name);
        if (c->outbox_max_bytes && c->outbox_max_bytes < 1024 * 1024)
                conf_errors_add(err, "%s: [Outbox] MaxBytes must be at least 1M", name);
}

int conf_load(const char *path, struct conf **ret, struct conf_errors *err)
{
        struct conf *c = conf_new_defaults();
        struct conf_parse_state st = { .conf = c, .err = err };
        _cleanup_free_ char *dir = NULL;
        struct dirent **ents = NULL;
        size_t errs_before = err->n;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int n, q = 0;

        if (!c || !md) {
                conf_free(c);
                EVP_MD_CTX_free(md);
                return -ENOMEM;
        }
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);

        q = conf_parse_path(&st, md, path);
        if (q < 0)
                goto out;

        if (asprintf(&dir, "%s.d", path) < 0) {
                q = -ENOMEM;
                goto out;
        }
        n = scandir(dir, &ents, dropin_filter, alphasort);
        if (n < 0 && errno != ENOENT && errno != ENOTDIR)
                conf_errors_add(err, "%s: cannot read drop-in directory: %s", dir, strerror(errno));
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (q >= 0 && asprintf(&p, "%s/%s", dir, ents[i]->d_name) >= 0)
                        q = conf_parse_path(&st, md, p);
                free(ents[i]);
        }
        free(ents);
        if (q < 0)
                goto out;

        conf_validate(c, path, err);
        conf_finish(c, md);
out:
        EVP_MD_CTX_free(md);
        if (q < 0 || err->n > errs_before) {
                conf_free(c);
                return q < 0 ? q : -EINVAL;
        }
        *ret = c;
        return 0;
}

int conf_load_string(const char *name, const char *text, struct conf **ret, struct conf_errors *err)
{
        struct conf *c = conf_new_defaults();
        struct conf_parse_state st = { .conf = c, .err = err };
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        struct ini_reader r = { .name = name,
                                .text = text,
                                .err = err,
                                .md = md,
                                .section_known = conf_section_known,
                                .fn = conf_on_key,
                                .userdata = &st };
        size_t errs_before = err->n;

        if (!c || !md) {
                conf_free(c);
                EVP_MD_CTX_free(md);
                return -ENOMEM;
        }
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        ini_run(&r);
        conf_validate(c, name, err);
        conf_finish(c, md);
        EVP_MD_CTX_free(md);
        if (err->n > errs_before) {
                conf_free(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

static bool field_differs(const struct conf_key *k, const struct conf *a, const struct conf *b)
{
        const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
        switch (k->type) {
        case CONF_STR: {
                const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
                if (!sa || !sb)
                        return sa != sb;
                return strcmp(sa, sb) != 0;
        }
        case CONF_INT: return *(const int *)fa != *(const int *)fb;
        case CONF_UINT: return *(const unsigned *)fa != *(const unsigned *)fb;
        case CONF_U64: return *(const uint64_t *)fa != *(const uint64_t *)fb;
        case CONF_MODE: return *(const mode_t *)fa != *(const mode_t *)fb;
        case CONF_STRV: {
                const struct conf_strv *la = fa, *lb = fb;
                if (la->n != lb->n)
                        return true;
                for (size_t i = 0; i < la->n; i++)
                        if (strcmp(la->v[i], lb->v[i]) != 0)
                                return true;
                return false;
        }
        }
        return true;
}

bool conf_needs_restart(const struct conf *a, const struct conf *b, const char **ret_key)
{
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++)
                if (conf_keys[i].needs_restart && field_differs(&conf_keys[i], a, b)) {
                        *ret_key = conf_keys[i].key;
                        return true;
                }
        return false;
}
