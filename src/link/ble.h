/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "basic/conf-parser.h"

/*
 * The BLE carrier of the MCU link (docs/ble.md): BlueZ over D-Bus (sd-bus on the libuv loop,
 * sdbus-uv.h), allow-listed peripherals by address, one GATT characteristic per peripheral
 * (write-without-response down, notify up; AcquireWrite/AcquireNotify when BlueZ offers them,
 * WriteValue type "command" and StartNotify + PropertiesChanged otherwise). Each connected
 * peripheral becomes an ordinary link: a socketpair whose other end goes to
 * link_manager_adopt_fd(m, fd, "ble:AA:BB:CC:DD:EE:FF"), so authentication, counters and the
 * relay are those of every other transport. Buffers are fixed per peripheral; excess
 * notifications are dropped and counted, and a peripheral that keeps flooding is disconnected.
 * Connections and disconnections are audited (ble.connected, ble.disconnected, ble.ignored).
 */

/* [BLE] in the configuration (docs/ble.md); no Device= means no BLE at all. */
struct ble_options {
        char *adapter;             /* "hci0"; NULL: the first adapter BlueZ reports */
        struct conf_strv devices;  /* Device=AA:BB:CC:DD:EE:FF, the allow-list */
        char *service_uuid;        /* default MCUGW_BLE_SERVICE_UUID */
        char *characteristic_uuid; /* default MCUGW_BLE_CHARACTERISTIC_UUID */
        char *bus_address;         /* NULL: the system bus (DBUS_SYSTEM_BUS_ADDRESS) */
        uint64_t reconnect_min_usec, reconnect_max_usec;
        uint64_t notify_rate; /* bytes/s per peripheral, 0: unlimited */
        int acquire;          /* bool: use AcquireWrite/AcquireNotify when offered */
};

/* [BLE] values (config_parser_t), normalised: addresses upper case, UUIDs lower case. */
int ble_config_parse_device(const char *v, void *field, const char **reason);
int ble_config_parse_uuid(const char *v, void *field, const char **reason);
int ble_config_parse_adapter(const char *v, void *field, const char **reason);

struct audit;
struct link_manager;
struct ble_manager;

/* With no [BLE] Device= configured *ret is NULL and nothing is started (returns 0). Failing to
 * reach the bus is not fatal: it is retried with backoff. */
int ble_manager_new(uv_loop_t *loop, const struct ble_options *o, struct audit *audit,
                    struct link_manager *link, struct ble_manager **ret);
/* Disconnect the links (not the peripherals: BlueZ keeps them for the next start), close the
 * bus and every handle; memory goes in the last close callback. NULL is fine. */
void ble_manager_stop(struct ble_manager *m);
/* The "ble" object of `mcugwctl status` (a new reference; {"enabled": false} for NULL). */
json_t *ble_manager_status(struct ble_manager *m);
/* Add {"ble": {address, state, connected, rssi, mtu, counters…}} to out for the peripheral
 * behind link name "ble:ADDRESS" (as link_manager_device_stats() reports it); -ENOENT if it
 * is not one of ours. */
int ble_manager_link_stats(struct ble_manager *m, const char *link_name, json_t *out);
