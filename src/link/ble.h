/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <jansson.h>
#include <uv.h>

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

struct conf;
struct audit;
struct link_manager;
struct ble_manager;

/* With no [BLE] Device= configured *ret is NULL and nothing is started (returns 0). Failing to
 * reach the bus is not fatal: it is retried with backoff. */
int ble_manager_new(uv_loop_t *loop, const struct conf *conf, struct audit *audit,
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
/* The last RSSI (dBm) BlueZ reported for the peripheral behind link name "ble:ADDRESS", for
 * the device metrics: 0, -ENOENT (not ours), -ENODATA (no RSSI known yet). */
int ble_manager_rssi(struct ble_manager *m, const char *link_name, int *ret_rssi);
