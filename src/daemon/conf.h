/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Configuration: INI files in systemd style (CamelCase sections and keys), a main file plus sorted
 * drop-ins from FILE.d/NAME.conf; later files override earlier ones key by key. Every key is parsed
 * through one table (conf.c: conf_keys[]) that names its parser, its field and its default.
 * Parsing never stops at the first problem: every error is collected as "file:line: message".
 */

#define CONF_DEFAULT_PATH MCUGW_SYSCONFDIR "/mcugw/mcugw.conf"

enum conf_sync {
        CONF_SYNC_OFF,
        CONF_SYNC_NORMAL,
        CONF_SYNC_FULL,
        CONF_SYNC_EXTRA,
};

#define CONF_STRV_MAX 256

/* The value of a repeatable key. */
struct conf_strv {
        char **v;
        size_t n;
};

struct conf {
        /* [Gateway] */
        char *gateway_name;
        int log_level;

        /* [Paths] */
        char *state_dir;
        char *runtime_dir;
        char *control_socket;
        char *devices_dir;

        /* [Control] */
        mode_t socket_mode;
        char *admin_group;
        char *readonly_group;
        unsigned max_clients;
        uint64_t max_request_bytes;

        /* [Database] */
        int synchronous; /* enum conf_sync */
        uint64_t commit_interval_usec;

        /* [Audit] */
        unsigned refusal_audit_per_min;
        int audit_export;            /* bool: stream records upstream through the outbox */
        uint64_t audit_max_age_usec; /* retention; 0: keep forever */
        uint64_t audit_max_records;  /* retention; 0: no limit */

        /* [Link] */
        char *link_private_key_file;  /* NULL: <StateDirectory>/link.key */
        struct conf_strv link_listen; /* ListenStream=unix:/PATH | tcp:ADDR:PORT */
        struct conf_strv link_serial; /* SerialPort=/dev/PATH[:BAUD] */
        unsigned link_max_connections;
        uint64_t link_handshake_timeout_usec;
        uint64_t link_idle_timeout_usec;       /* 0: never */
        unsigned link_handshake_rate;          /* per second, whole gateway */
        unsigned link_handshake_rate_per_link; /* per second, one link */
        unsigned link_audit_per_min;           /* auth.failed records per link and minute */

        /* [MQTT] (docs/mqtt.md) */
        char *mqtt_host; /* NULL: no cloud session (telemetry stays in the outbox) */
        unsigned mqtt_port;
        char *mqtt_client_id;   /* NULL: the gateway name */
        char *mqtt_server_name; /* SNI and certificate name; NULL: Host */
        char *mqtt_ca_file;
        char *mqtt_cert_file;
        char *mqtt_key_file;      /* a file or a pkcs11: URI */
        char *mqtt_pkcs11_module; /* the PKCS#11 module for pkcs11: URIs */
        char *mqtt_alpn;          /* e.g. x-amzn-mqtt-ca for AWS IoT on port 443 */
        int mqtt_protocol;        /* 4 (3.1.1) or 5 */
        uint64_t mqtt_keepalive_usec;
        unsigned mqtt_max_inflight;
        uint64_t mqtt_reconnect_min_usec, mqtt_reconnect_max_usec;
        char *topic_status;         /* {gateway} */
        char *topic_batch;          /* {gateway} */
        char *topic_telemetry;      /* {gateway} {device} {stream}, Batching=no */
        char *topic_command;        /* {gateway} {device} (a whole level) */
        char *topic_command_result; /* {gateway} {device} */

        /* [Relay] */
        int relay_batching; /* bool */
        uint64_t relay_batch_window_usec;
        uint64_t relay_max_payload;
        unsigned relay_publishes_per_s; /* 0: unlimited */
        uint64_t relay_bytes_per_s;     /* 0: unlimited */

        /* [Outbox] */
        uint64_t outbox_max_bytes;
        unsigned outbox_audit_per_min;

        /* [Monitor] (docs/monitoring.md) */
        int monitor_rules; /* bool: evaluate RulesDirectory */
        char *rules_dir;
        uint64_t metrics_interval_usec;  /* sampling and rule evaluation */
        uint64_t defender_interval_usec; /* 0: no Device Defender reports */
        char *topic_alert;               /* {gateway} */
        char *topic_remediation;         /* {gateway}; results on .../result */
        struct conf_strv cloud_commands; /* remediation commands the cloud may send */
        unsigned cert_expiry_days;       /* `audit config` warns this long before expiry */
        uint64_t drift_check_usec;       /* baseline drift check period; 0: start/reload only */

        /* [BLE] (docs/ble.md); no Device= means no BLE at all */
        char *ble_adapter;             /* "hci0"; NULL: the first adapter BlueZ reports */
        struct conf_strv ble_devices;  /* Device=AA:BB:CC:DD:EE:FF, the allow-list */
        char *ble_service_uuid;        /* default MCUGW_BLE_SERVICE_UUID */
        char *ble_characteristic_uuid; /* default MCUGW_BLE_CHARACTERISTIC_UUID */
        char *ble_bus_address;         /* NULL: the system bus (DBUS_SYSTEM_BUS_ADDRESS) */
        uint64_t ble_reconnect_min_usec, ble_reconnect_max_usec;
        uint64_t ble_notify_rate; /* bytes/s per peripheral, 0: unlimited */
        int ble_acquire;          /* bool: use AcquireWrite/AcquireNotify when offered */

        /* [Onboarding] (src/devices/onboard.h) */
        int onboarding_policy;                      /* enum onboard_policy */
        struct conf_strv manufacturer_keys;         /* KEYID:/path/key.pem */
        struct conf_strv revoked_manufacturer_keys; /* KEYID */

        /* [OTA] (docs/ota.md) */
        char *ota_signing_cert;      /* CodeSigningCertificate=, PEM (ECDSA P-256) */
        char *ota_cache_dir;         /* NULL: <StateDirectory>/ota */
        uint64_t ota_max_cache;      /* MaxCacheSize= */
        uint64_t ota_block_size;     /* BlockSize=: chunk size towards the MCUs (<= link) */
        uint64_t ota_download_block; /* DownloadBlockSize=: MQTT stream block, <= 128K */
        int ota_targeting;           /* 0 thing-per-device, 1 gateway */
        char *ota_thing_template;    /* ThingNameTemplate=, {gateway} {device} */
        unsigned ota_max_concurrent; /* MaxConcurrent= (gateway) */
        unsigned ota_max_per_link;   /* MaxConcurrentPerLink= */
        unsigned ota_abort_after;    /* AbortAfterFailures=, 0: never */
        int ota_allow_downgrade;     /* bool */
        int ota_allow_unsigned;      /* bool */
        uint64_t ota_window;         /* Window=: bytes in flight per MCU, capped by the MCU */

        /* [Provisioning] (docs/provisioning.md): fleet provisioning by claim, rotation */
        char *prov_claim_cert;            /* ClaimCertificateFile= */
        char *prov_claim_key;             /* ClaimKeyFile= */
        char *prov_template;              /* Template=: the provisioning template's name */
        struct conf_strv prov_parameters; /* Parameters=Key=Value */
        uint64_t prov_rotate_before_usec; /* RotateBeforeExpiry=; 0: only `cert rotate` */
        int prov_cbor;                    /* Format=: 0 json, 1 cbor */

        /* SHA-256 over every file read (names and contents), as hex. */
        char hash[65];
        /* The files that were read, in order. */
        char **files;
        size_t n_files;
};

struct conf_errors {
        char **msgs;
        size_t n;
};

/* Parse `path` and its drop-ins. On success *ret is a new config; errors are appended to err
 * and -EINVAL returned if there were any (then *ret is untouched). */
int conf_load(const char *path, struct conf **ret, struct conf_errors *err);
/* Parse a single in-memory buffer (for fuzzing and tests); `name` is used in messages. */
int conf_load_string(const char *name, const char *text, struct conf **ret,
                     struct conf_errors *err);
void conf_free(struct conf *c);

/* Keys whose change needs a restart; returns true and names one in *ret_key if b differs. */
bool conf_needs_restart(const struct conf *a, const struct conf *b, const char **ret_key);

/* The INI reader behind conf_load, for other files in the same syntax (enrollment files):
 * fn gets every Key=Value with its file, line and the running number of its section, so that
 * repeated sections ([Device] [Device] …) can be told apart. Errors go to err. */
typedef void (*conf_ini_fn)(void *userdata, const char *file, unsigned line, unsigned section_index,
                            const char *section, const char *key, const char *value);
int conf_ini_parse_file(const char *path, conf_ini_fn fn, void *userdata, struct conf_errors *err);
int conf_ini_parse_string(const char *name, const char *text, conf_ini_fn fn, void *userdata,
                          struct conf_errors *err);

/* yes/true/on/1 -> 1, no/false/off/0 -> 0, else -EINVAL: the booleans of every file we read. */
int conf_parse_boolean(const char *v);

void conf_errors_add(struct conf_errors *e, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void conf_errors_clear(struct conf_errors *e);
