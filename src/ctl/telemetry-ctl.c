/* SPDX-License-Identifier: Apache-2.0 */
/* telemetry.tail: the relayed telemetry as control events (docs/control-protocol.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "basic/hexdecoct.h"
#include "basic/macro.h"
#include "basic/time-util.h"
#include "cloud/cborjson.h"
#include "ctl/control.h"
#include "ctl/ctlproto.h"
#include "ctl/telemetry-ctl.h"
#include "devices/registry.h"

#define TAIL_TOPIC "telemetry"

static int cmd_tail(struct control_conn *c, json_t *args, json_t **ret, void *ud)
{
        const char *dev = NULL, *err;
        char topic[sizeof TAIL_TOPIC + REGISTRY_ID_MAX + 1];

        if (json_object_get(args, "device") &&
            ctl_arg_string(args, "device", REGISTRY_ID_MAX, &dev, &err) < 0)
                return control_conn_error(c, -EINVAL, "device: %s", err);
        /* One topic per filter: "telemetry" for all, "telemetry/ID" for one device. */
        snprintf(topic, sizeof topic, "%s%s%s", TAIL_TOPIC, dev ? "/" : "", dev ? dev : "");
        control_conn_subscribe(c, topic);
        *ret = json_pack("{ss}", "device", dev ? dev : "");
        return CONTROL_STREAM;
}

void telemetry_ctl_publish(struct control *ctl, const char *device_id, uint16_t stream,
                           uint32_t seq, const uint8_t *payload, size_t len)
{
        char topic[sizeof TAIL_TOPIC + REGISTRY_ID_MAX + 1];
        json_t *o, *decoded;

        if (!ctl || !control_has_topic(ctl, TAIL_TOPIC))
                return;
        o = json_pack("{ss si sI sI sI}", "device", device_id, "stream", (int)stream, "seq",
                      (json_int_t)seq, "bytes", (json_int_t)len, "ts_us",
                      (json_int_t)now_realtime_usec());
        if (!o)
                return;
        ctl_json_set_iso(o, "ts_us"); /* not in the payload: that is the device's */
        /* As the cloud gets it: CBOR as JSON, anything else as base64. */
        decoded = cborjson_decode(payload, len);
        if (decoded)
                json_object_set_new(o, "payload", decoded);
        else {
                _cleanup_free_ char *b64 = malloc(4 * ((len + 2) / 3) + 1);
                if (b64) {
                        base64mem(payload, len, b64);
                        json_object_set_new(o, "payload_base64", json_string(b64));
                }
        }
        snprintf(topic, sizeof topic, "%s/%s", TAIL_TOPIC, device_id);
        control_broadcast(ctl, topic, json_incref(o));
        control_broadcast(ctl, TAIL_TOPIC, o);
}

static const struct control_command telemetry_commands[] = {
        /* Device data: the admins', like the outbox it is bound for. */
        { "telemetry.tail", CONTROL_ADMIN, cmd_tail },
};

int telemetry_ctl_add_commands(struct control *ctl)
{
        return control_add_commands(ctl, telemetry_commands, ELEMENTSOF(telemetry_commands), NULL);
}
