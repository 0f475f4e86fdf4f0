/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "config.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/cred.h"
#include "cloud/topic.h"
#include "ctl/control.h"
#include "basic/fileio.h"
#include "daemon/conf.h"
#include "mcugw/wire.h"
#include "monitor/defender.h"

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
        config_parser_t parse;
        size_t offset;
        const char *def;    /* parsed through `parse` at init; NULL leaves the field zero */
        bool needs_restart; /* reload keeps the old value and warns */
};

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
        return config_parse_string(v, field, reason);
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

#define F(x) offsetof(struct conf, x)
static const struct conf_key conf_keys[] = {
        { "Gateway", "Name", CONF_STR, parse_name, F(gateway_name), NULL, true },
        { "Gateway", "LogLevel", CONF_INT, parse_log_level, F(log_level), "info", false },
        { "Paths", "StateDirectory", CONF_STR, config_parse_path, F(state_dir), "/var/lib/mcugw",
          true },
        { "Paths", "RuntimeDirectory", CONF_STR, config_parse_path, F(runtime_dir), "/run/mcugw",
          true },
        { "Paths", "ControlSocket", CONF_STR, config_parse_socket_path, F(control_socket),
          "/run/mcugw/control.sock", true },
        { "Paths", "DevicesDirectory", CONF_STR, config_parse_path, F(devices_dir),
          MCUGW_SYSCONFDIR "/mcugw/devices.d", false },
        { "Control", "SocketMode", CONF_MODE, config_parse_mode, F(socket_mode), "0660", true },
        { "Control", "AdminGroup", CONF_STR, config_parse_string_opt, F(admin_group), "mcugw-admin",
          false },
        { "Control", "ReadOnlyGroup", CONF_STR, config_parse_string_opt, F(readonly_group), "mcugw",
          false },
        { "Control", "MaxClients", CONF_UINT, control_config_parse_max_clients, F(max_clients),
          "32", false },
        { "Control", "MaxRequestSize", CONF_U64, config_parse_size, F(max_request_bytes), "1M",
          false },
        { "Database", "Synchronous", CONF_INT, db_config_parse_synchronous, F(db.synchronous),
          "full", true },
        { "Database", "CommitInterval", CONF_U64, config_parse_duration, F(db.commit_interval_usec),
          "10ms", false },
        { "Audit", "RefusalsPerMinute", CONF_UINT, config_parse_per_minute,
          F(refusal_audit_per_min), "30", false },
        { "Audit", "Export", CONF_INT, config_parse_bool, F(audit_export.enabled), "no", false },
        { "Audit", "MaxAge", CONF_U64, config_parse_duration, F(audit_export.max_age_usec), "0",
          false },
        { "Audit", "MaxRecords", CONF_U64, config_parse_size, F(audit_export.max_records), "0",
          false },
        { "Link", "PrivateKeyFile", CONF_STR, config_parse_path, F(link.private_key_file), NULL,
          true },
        { "Link", "ListenStream", CONF_STRV, link_config_parse_listen, F(link.listen), NULL, true },
        { "Link", "SerialPort", CONF_STRV, link_config_parse_serial, F(link.serial), NULL, true },
        { "Link", "MaxConnections", CONF_UINT, link_config_parse_max_connections,
          F(link.max_connections), "1024", true },
        { "Link", "HandshakeTimeout", CONF_U64, config_parse_duration,
          F(link.handshake_timeout_usec), "10s", true },
        { "Link", "IdleTimeout", CONF_U64, config_parse_duration, F(link.idle_timeout_usec), "5min",
          true },
        { "Link", "HandshakeRate", CONF_UINT, link_config_parse_rate, F(link.handshake_rate),
          "1000", true },
        { "Link", "HandshakeRatePerLink", CONF_UINT, link_config_parse_rate,
          F(link.handshake_rate_per_link), "2", true },
        { "Link", "AuditFailuresPerMinute", CONF_UINT, config_parse_per_minute,
          F(link.audit_per_min), "10", true },
        { "Link", "MaxPendingPerSource", CONF_UINT, link_config_parse_pending,
          F(link.max_pending_per_source), "0", true },
        { "Link", "SessionAuditsPerMinute", CONF_UINT, config_parse_per_minute,
          F(link.session_audit_per_min), "10", true },
        { "Link", "CommandsPerSecond", CONF_UINT, link_config_parse_rate, F(link.commands_per_s),
          "20", true },
        { "Link", "CommandQueue", CONF_UINT, link_config_parse_command_queue, F(link.command_queue),
          "32", true },
        { "MQTT", "Host", CONF_STRV, cloud_session_config_parse_host, F(relay.hosts), NULL, true },
        { "MQTT", "Port", CONF_UINT, config_parse_port, F(relay.port), "8883", true },
        { "MQTT", "ClientId", CONF_STR, config_parse_string_opt, F(relay.client_id), NULL, true },
        { "MQTT", "ServerName", CONF_STR, config_parse_string_opt, F(relay.server_name), NULL,
          true },
        { "MQTT", "CAFile", CONF_STR, config_parse_path, F(relay.ca_file), NULL, true },
        { "MQTT", "CertificateFile", CONF_STR, config_parse_path, F(relay.cert_file), NULL, true },
        { "MQTT", "KeyFile", CONF_STR, cred_config_parse_key, F(relay.key_file), NULL, true },
        { "MQTT", "PKCS11Module", CONF_STR, config_parse_path, F(relay.pkcs11_module), NULL, true },
        { "MQTT", "ALPN", CONF_STR, config_parse_string_opt, F(relay.alpn), NULL, true },
        { "MQTT", "ProtocolVersion", CONF_INT, cloud_session_config_parse_protocol,
          F(relay.protocol), "3.1.1", true },
        { "MQTT", "KeepAlive", CONF_U64, config_parse_duration, F(relay.keepalive_usec), "60s",
          true },
        { "MQTT", "MaxInflight", CONF_UINT, cloud_session_config_parse_inflight,
          F(relay.max_inflight), "20", true },
        { "MQTT", "ReconnectMin", CONF_U64, config_parse_duration, F(relay.reconnect_min_usec),
          "1s", true },
        { "MQTT", "ReconnectMax", CONF_U64, config_parse_duration, F(relay.reconnect_max_usec),
          "2min", true },
        { "MQTT", "StatusTopic", CONF_STR, topic_config_parse_gateway, F(relay.topic_status),
          "mcugw/{gateway}/status", true },
        { "MQTT", "BatchTopic", CONF_STR, topic_config_parse_gateway, F(relay.topic_batch),
          "mcugw/{gateway}/batch", true },
        { "MQTT", "TelemetryTopic", CONF_STR, topic_config_parse_telemetry,
          F(relay.topic_telemetry), "mcugw/{gateway}/dev/{device}/telemetry/{stream}", true },
        { "MQTT", "CommandTopic", CONF_STR, topic_config_parse_command, F(relay.topic_command),
          "mcugw/{gateway}/cmd/{device}", true },
        { "MQTT", "CommandResultTopic", CONF_STR, topic_config_parse_result,
          F(relay.topic_command_result), "mcugw/{gateway}/cmd-result/{device}", true },
        { "Relay", "Batching", CONF_INT, config_parse_bool, F(relay.batching), "yes", true },
        { "Relay", "BatchWindow", CONF_U64, config_parse_duration, F(relay.batch_window_usec),
          "50ms", true },
        { "Relay", "MaxPayload", CONF_U64, config_parse_size, F(relay.max_payload), "128K", true },
        { "Relay", "MaxCommandSize", CONF_U64, relay_config_parse_max_command, F(relay.max_command),
          "987", true },
        { "Relay", "PublishesPerSecond", CONF_UINT, cloud_session_config_parse_rate,
          F(relay.publishes_per_s), "100", true },
        { "Relay", "BytesPerSecond", CONF_U64, config_parse_size, F(relay.bytes_per_s), "512K",
          true },
        { "Outbox", "MaxBytes", CONF_U64, config_parse_size, F(relay.outbox.max_bytes), "4G",
          true },
        { "Outbox", "OverflowAuditsPerMinute", CONF_UINT, config_parse_per_minute,
          F(relay.outbox.audit_per_min), "6", true },
        { "Monitor", "Rules", CONF_INT, config_parse_bool, F(monitor.rules), "yes", false },
        { "Monitor", "RulesDirectory", CONF_STR, config_parse_path, F(monitor.rules_dir),
          MCUGW_SYSCONFDIR "/mcugw/rules.d", false },
        { "Monitor", "MetricsInterval", CONF_U64, config_parse_duration,
          F(monitor.metrics_interval_usec), "1s", false },
        { "Monitor", "DefenderInterval", CONF_U64, defender_config_parse_interval,
          F(monitor.defender_interval_usec), "300s", false },
        { "Monitor", "AlertTopic", CONF_STR, topic_config_parse_gateway, F(monitor.topic_alert),
          "mcugw/{gateway}/alerts", true },
        { "Monitor", "RemediationTopic", CONF_STR, topic_config_parse_gateway,
          F(monitor.topic_remediation), "mcugw/{gateway}/remediate", true },
        { "Monitor", "CloudCommands", CONF_STRV, remedy_config_parse_cloud_command,
          F(monitor.cloud_commands), NULL, false },
        { "Monitor", "CertificateExpiryDays", CONF_UINT, baseline_config_parse_days,
          F(monitor.cert_expiry_days), "30", false },
        { "Monitor", "DriftCheckInterval", CONF_U64, config_parse_duration,
          F(monitor.drift_check_usec), "1h", false },
        { "BLE", "Adapter", CONF_STR, ble_config_parse_adapter, F(ble.adapter), NULL, true },
        { "BLE", "Device", CONF_STRV, ble_config_parse_device, F(ble.devices), NULL, true },
        { "BLE", "ServiceUUID", CONF_STR, ble_config_parse_uuid, F(ble.service_uuid),
          MCUGW_BLE_SERVICE_UUID, true },
        { "BLE", "CharacteristicUUID", CONF_STR, ble_config_parse_uuid, F(ble.characteristic_uuid),
          MCUGW_BLE_CHARACTERISTIC_UUID, true },
        { "BLE", "BusAddress", CONF_STR, config_parse_string_opt, F(ble.bus_address), NULL, true },
        { "BLE", "ReconnectMin", CONF_U64, config_parse_duration, F(ble.reconnect_min_usec), "1s",
          true },
        { "BLE", "ReconnectMax", CONF_U64, config_parse_duration, F(ble.reconnect_max_usec), "1min",
          true },
        { "BLE", "NotifyRateLimit", CONF_U64, config_parse_size, F(ble.notify_rate), "64K", true },
        { "BLE", "Acquire", CONF_INT, config_parse_bool, F(ble.acquire), "yes", true },
        { "Onboarding", "Policy", CONF_INT, onboard_config_parse_policy, F(onboarding.policy),
          "off", false },
        { "Onboarding", "ManufacturerKey", CONF_STRV, config_parse_strv,
          F(onboarding.manufacturer_keys), NULL, false },
        { "Onboarding", "RevokedManufacturerKey", CONF_STRV, config_parse_strv,
          F(onboarding.revoked_manufacturer_keys), NULL, false },
        { "OTA", "CodeSigningCertificate", CONF_STR, config_parse_path, F(ota.signing_cert), NULL,
          false },
        { "OTA", "CacheDirectory", CONF_STR, config_parse_path, F(ota.cache_dir), NULL, true },
        { "OTA", "MaxCacheSize", CONF_U64, config_parse_size, F(ota.max_cache), "256M", false },
        { "OTA", "BlockSize", CONF_U64, ota_config_parse_block, F(ota.block_size), "4K", false },
        { "OTA", "DownloadBlockSize", CONF_U64, ota_config_parse_block, F(ota.download_block),
          "128K", false },
        { "OTA", "Targeting", CONF_INT, ota_config_parse_targeting, F(ota.targeting),
          "thing-per-device", true },
        { "OTA", "ThingNameTemplate", CONF_STR, ota_config_parse_thing_template,
          F(ota.thing_template), "{gateway}-{device}", true },
        { "OTA", "MaxConcurrent", CONF_UINT, ota_config_parse_count, F(ota.max_concurrent), "8",
          false },
        { "OTA", "MaxConcurrentPerLink", CONF_UINT, ota_config_parse_count, F(ota.max_per_link),
          "1", false },
        { "OTA", "AbortAfterFailures", CONF_UINT, ota_config_parse_count, F(ota.abort_after), "3",
          false },
        { "OTA", "AllowDowngrade", CONF_INT, config_parse_bool, F(ota.allow_downgrade), "no",
          false },
        { "OTA", "AllowUnsigned", CONF_INT, config_parse_bool, F(ota.allow_unsigned), "no", false },
        { "OTA", "Window", CONF_U64, config_parse_size, F(ota.window), "16K", false },
        { "Shadow", "Mode", CONF_INT, shadow_config_parse_mode, F(shadow.mode), "off", true },
        { "Shadow", "NameTemplate", CONF_STR, shadow_config_parse_template, F(shadow.name_template),
          NULL, true },
        { "Shadow", "Reported", CONF_UINT, shadow_config_parse_reported, F(shadow.reported), "all",
          true },
        { "Shadow", "AllowedDesired", CONF_STRV, shadow_config_parse_key, F(shadow.allowed), NULL,
          true },
        { "Shadow", "MaxDepth", CONF_UINT, shadow_config_parse_depth, F(shadow.max_depth), "3",
          true },
        { "Shadow", "UpdateInterval", CONF_U64, config_parse_duration,
          F(shadow.update_interval_usec), "1s", true },
        { "Shadow", "UpdatesPerInterval", CONF_UINT, shadow_config_parse_count,
          F(shadow.updates_per_interval), "10", true },
        { "Provisioning", "ClaimCertificateFile", CONF_STR, config_parse_path,
          F(provision.claim_cert), NULL, true },
        { "Provisioning", "ClaimKeyFile", CONF_STR, config_parse_path, F(provision.claim_key), NULL,
          true },
        { "Provisioning", "Template", CONF_STR, config_parse_string_opt, F(provision.template_name),
          NULL, true },
        { "Provisioning", "Parameters", CONF_STRV, provision_config_parse_parameter,
          F(provision.parameters), NULL, true },
        { "Provisioning", "RotateBeforeExpiry", CONF_U64, config_parse_duration,
          F(provision.rotate_before_usec), "0", true },
        { "Provisioning", "Format", CONF_INT, provision_config_parse_format, F(provision.cbor),
          "json", true },
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

void conf_free(struct conf *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++)
                if (conf_keys[i].type == CONF_STR)
                        free(*(char **)((char *)c + conf_keys[i].offset));
                else if (conf_keys[i].type == CONF_STRV)
                        conf_strv_clear((struct conf_strv *)((char *)c + conf_keys[i].offset));
        conf_strv_clear(&c->restart_pending);
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
        const struct conf_ini_extra x = { .md = md, .section_known = conf_section_known };

        /* A file that cannot be read is an error in st->err; the others are still read. */
        int q = conf_ini_parse_file_extra(path, &x, conf_on_key, st, st->err);

        if (q == -ENOMEM)
                return q;
        if (q < 0)
                return 0;
        return conf_add_file(st->conf, path);
}

static int dropin_filter(const struct dirent *d)
{
        return d->d_name[0] != '.' && fnmatch("*.conf", d->d_name, 0) == 0;
}

_Static_assert(RELAY_COMMAND_MAX == MCUGW_MSG_MAX - 5u, "a command must fit one link frame");

static void conf_finish(struct conf *c, EVP_MD_CTX *md)
{
        /* Commands, OTA stream blocks (base64 in JSON), job documents, provisioning replies:
         * nothing legitimate the broker sends is larger. */
        c->relay.max_packet = MAX((uint64_t)256 * 1024, 2 * c->ota.download_block + 64 * 1024);
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
        if (c->db.commit_interval_usec > 1000000)
                conf_errors_add(err, "%s: [Database] CommitInterval must be at most 1s", name);
        if (c->relay.hosts.n && (!c->relay.ca_file || !c->relay.cert_file || !c->relay.key_file))
                conf_errors_add(err,
                                "%s: [MQTT] Host= needs CAFile=, CertificateFile= and "
                                "KeyFile= (mutual TLS)",
                                name);
        if (c->provision.claim_cert &&
            (!c->provision.claim_key || !c->provision.template_name || !c->relay.hosts.n))
                conf_errors_add(err,
                                "%s: [Provisioning] ClaimCertificateFile= needs "
                                "ClaimKeyFile=, Template= and [MQTT] Host=",
                                name);
        if ((c->provision.claim_cert || c->provision.rotate_before_usec) && c->relay.key_file &&
            strncmp(c->relay.key_file, "pkcs11:", 7) == 0)
                conf_errors_add(err,
                                "%s: [Provisioning] needs [MQTT] KeyFile= to be a file: the "
                                "new key is written there",
                                name);
        if (c->relay.reconnect_min_usec < 1000000 ||
            c->relay.reconnect_max_usec < c->relay.reconnect_min_usec)
                conf_errors_add(err,
                                "%s: [MQTT] ReconnectMin must be at least 1s and at most "
                                "ReconnectMax",
                                name);
        if (c->relay.keepalive_usec < 5000000 || c->relay.keepalive_usec > 65535000000ULL)
                conf_errors_add(err, "%s: [MQTT] KeepAlive must be between 5s and 65535s", name);
        if (c->relay.max_payload < 1024 || c->relay.max_payload > 256 * 1024 * 1024)
                conf_errors_add(err, "%s: [Relay] MaxPayload must be between 1K and 256M", name);
        if (c->relay.batch_window_usec > 10000000)
                conf_errors_add(err, "%s: [Relay] BatchWindow must be at most 10s", name);
        if (c->monitor.metrics_interval_usec < 100000 ||
            c->monitor.metrics_interval_usec > 60000000)
                conf_errors_add(err, "%s: [Monitor] MetricsInterval must be between 100ms and 60s",
                                name);
        if (c->relay.outbox.max_bytes && c->relay.outbox.max_bytes < 1024 * 1024)
                conf_errors_add(err, "%s: [Outbox] MaxBytes must be at least 1M", name);
        if (c->shadow.update_interval_usec < 10000 || c->shadow.update_interval_usec > 60000000)
                conf_errors_add(err, "%s: [Shadow] UpdateInterval must be between 10ms and 60s",
                                name);
        if (c->shadow.mode != SHADOW_OFF && !c->relay.hosts.n)
                conf_errors_add(err, "%s: [Shadow] Mode= needs a cloud session ([MQTT] Host=)",
                                name);
}

/* The files the configuration names (keys, certificates) are read later, some only when the
 * cloud session connects; check now that each one that exists is a regular file of a sane size,
 * so that a FIFO, a device or a directory is an error of the configuration (with --check-config
 * and on reload) rather than a stall or a late failure. Absent or unreadable files are not
 * reported here: some are created later (the link key, provisioned credentials), and
 * --check-config may run as another user than the daemon. */
static void conf_check_files(const struct conf *c, const char *name, struct conf_errors *err)
{
        _cleanup_free_ char *link_key = NULL;
        const struct {
                const char *key;
                const char *path;
                uint64_t max;
        } files[] = {
                { "[Link] PrivateKeyFile=", c->link.private_key_file, FILEIO_PEM_MAX },
                { "[MQTT] CAFile=", c->relay.ca_file, FILEIO_PEM_MAX },
                { "[MQTT] CertificateFile=", c->relay.cert_file, FILEIO_PEM_MAX },
                { "[MQTT] KeyFile=", c->relay.key_file, FILEIO_PEM_MAX },
                { "[MQTT] PKCS11Module=", c->relay.pkcs11_module, 0 }, /* dlopen()ed */
                { "[Provisioning] ClaimCertificateFile=", c->provision.claim_cert, FILEIO_PEM_MAX },
                { "[Provisioning] ClaimKeyFile=", c->provision.claim_key, FILEIO_PEM_MAX },
                { "[OTA] CodeSigningCertificate=", c->ota.signing_cert, FILEIO_PEM_MAX },
                { "[Link] PrivateKeyFile= (default)", NULL, FILEIO_PEM_MAX },
        };

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                const char *p = files[i].path;
                char msg[PATH_MAX + 128];
                int fd;

                if (i == ELEMENTSOF(files) - 1 && !c->link.private_key_file && c->state_dir &&
                    asprintf(&link_key, "%s/link.key", c->state_dir) >= 0)
                        p = link_key;
                if (!p || strncmp(p, "pkcs11:", 7) == 0)
                        continue;
                fd = fileio_open(p, 0, files[i].max, NULL, msg, sizeof msg);
                if (fd >= 0)
                        close(fd);
                else if (fd != -ENOENT && fd != -EACCES && fd != -EPERM && fd != -ENOTDIR)
                        conf_errors_add(err, "%s: %s %s", name, files[i].key, msg);
        }
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
        conf_check_files(c, path, err);
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
        const struct conf_ini_extra x = { .md = md, .section_known = conf_section_known };
        size_t errs_before = err->n;

        if (!c || !md) {
                conf_free(c);
                EVP_MD_CTX_free(md);
                return -ENOMEM;
        }
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        conf_ini_parse_string_extra(name, text, &x, conf_on_key, &st, err);
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

/* dst's field of key k becomes a copy of src's. */
static int field_copy(const struct conf_key *k, struct conf *dst, const struct conf *src)
{
        void *fd = (char *)dst + k->offset;
        const void *fs = (const char *)src + k->offset;
        switch (k->type) {
        case CONF_STR: {
                const char *s = *(char *const *)fs;
                char *n = NULL;
                if (s && !(n = strdup(s)))
                        return -ENOMEM;
                free(*(char **)fd);
                *(char **)fd = n;
                return 0;
        }
        case CONF_INT: memcpy(fd, fs, sizeof(int)); return 0;
        case CONF_UINT: memcpy(fd, fs, sizeof(unsigned)); return 0;
        case CONF_U64: memcpy(fd, fs, sizeof(uint64_t)); return 0;
        case CONF_MODE: memcpy(fd, fs, sizeof(mode_t)); return 0;
        case CONF_STRV: return conf_strv_copy(fd, fs);
        }
        return -EINVAL;
}

int conf_keep_running(struct conf *n, const struct conf *running)
{
        int count = 0, r;

        conf_strv_clear(&n->restart_pending);
        for (size_t i = 0; i < ELEMENTSOF(conf_keys); i++) {
                const struct conf_key *k = &conf_keys[i];
                char name[64];

                if (!k->needs_restart || !field_differs(k, n, running))
                        continue;
                if ((r = field_copy(k, n, running)) < 0)
                        return r;
                snprintf(name, sizeof name, "%s.%s", k->section, k->key);
                if ((r = conf_strv_append(&n->restart_pending, name)) < 0)
                        return r;
                count++;
        }
        return count;
}

int conf_set_load(const char *path, struct conf_set *ret, struct conf_errors *err)
{
        struct conf_set s = { 0 };
        int r;

        r = conf_load(path, &s.conf, err);
        if (r >= 0)
                r = enroll_load_dir(s.conf->devices_dir, &s.devices, err);
        if (r >= 0 && s.conf->monitor.rules)
                r = rules_load_dir(s.conf->monitor.rules_dir, &s.rules, err);
        if (r >= 0)
                r = onboard_new(&s.conf->onboarding, &s.onboard, err);
        if (r < 0) {
                conf_set_clear(&s);
                return r == -ENOMEM ? r : -EINVAL;
        }
        *ret = s;
        return 0;
}

void conf_set_clear(struct conf_set *s)
{
        onboard_free(s->onboard);
        s->onboard = NULL;
        rule_set_free(&s->rules);
        enroll_list_free(&s->devices);
        conf_free(s->conf);
        s->conf = NULL;
}

void conf_baseline_config(const struct conf *c, struct baseline_config *ret)
{
        *ret = (struct baseline_config){
                .hash = c->hash,
                .files = c->files,
                .n_files = c->n_files,
                .state_dir = c->state_dir,
                .devices_dir = c->devices_dir,
                .control_socket = c->control_socket,
                .socket_mode = c->socket_mode,
                .admin_group = c->admin_group,
                .readonly_group = c->readonly_group,
                .link = &c->link,
                .mqtt = &c->relay,
                .provision = &c->provision,
                .ota = &c->ota,
                .monitor = &c->monitor,
        };
}
