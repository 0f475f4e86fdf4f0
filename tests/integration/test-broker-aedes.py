# SPDX-License-Identifier: Apache-2.0
"""A second broker besides Mosquitto: aedes (Node.js) behind Node's TLS server with mutual TLS.
With Protocol=5 the gateway says plainly that the broker refused MQTT 5 and what to set; with
the default 3.1.1, telemetry from simulated MCUs (mcugw-sim) reaches a subscriber on aedes and a
cloud command reaches the device and its result comes back. Skipped (77) without node and the
aedes package (scripts/install-deps installs both)."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import AedesBroker, Subscriber, aedes_available, free_port  # noqa: E402
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, skip,  # noqa: E402
                       batch_entries, enroll_file, sim_keys, wait_for)

V5_REFUSED = "the broker refused MQTT 5 (ProtocolVersion=5); set ProtocolVersion=3.1.1 (4)"


def mqtt_status(d):
    return d.ctl_json("status").get("mqtt", {})


def test_v5_refused(tmp, broker, cert):
    d = Daemon(tmp, base_config(tmp) + broker.mqtt_config(*cert, "ProtocolVersion=5"),
               name="v5.conf")
    d.log_path = tmp.join("v5.log")
    try:
        d.start()
        ok = wait_for(lambda: V5_REFUSED in mqtt_status(d).get("last_error", ""), timeout=15)
        st = mqtt_status(d)
        check(ok and st["state"] != "connected",
              f"Protocol=5 against aedes: status says so ({st.get('last_error')!r})")
        check(V5_REFUSED in d.read_log(), "and so does the log")
        # libmosquitto falls back to 3.1.1 by itself after such a refusal; we do not.
        ok = wait_for(lambda: mqtt_status(d).get("attempts", 0) >= 2, timeout=10)
        st = mqtt_status(d)
        check(ok and st["state"] != "connected" and V5_REFUSED in st["last_error"],
              f"the next attempt is MQTT 5 again, refused again ({st['attempts']} attempts)")
        check(d.stop() == 0, "daemon exits 0")
    finally:
        d.stop()


def test_relay(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/it-gw/batch", "mcugw/it-gw/cmd-result/+",
                              "mcugw/it-gw/status"], name="sub-aedes", clean=True)
    devdir = tmp.join("devices.d")
    os.makedirs(devdir)
    good = sim_keys(2, "aedes", "sim-")
    enroll_file(devdir, "sim.conf", good)
    port = free_port()
    config = base_config(tmp, f"""
[Link]
ListenStream=tcp:127.0.0.1:{port}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + \
        broker.mqtt_config(*cert, "") + "\n[Relay]\nBatchWindow=20ms\n"
    d = Daemon(tmp, config, name="relay.conf")
    d.log_path = tmp.join("relay.log")
    sim = None
    try:
        d.start()
        ok = wait_for(lambda: mqtt_status(d).get("state") == "connected", timeout=15)
        check(ok, f"connected to aedes with MQTT 3.1.1 ({mqtt_status(d).get('last_error')})")
        ok = wait_for(lambda: any(t == "mcugw/it-gw/status" and p == b"online"
                                  for t, p, _, _ in sub.snapshot()), timeout=10)
        check(ok, "the gateway says online on aedes")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        sim = Sim(tmp, "aedes", ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}",
                                 "--count", "2", "--seed", "aedes", "--id-prefix", "sim-",
                                 "--rate", "20", "--messages", "40", "--linger", "3"])
        wait_for(lambda: len(batch_entries(sub)) >= 5, timeout=15)
        sub.publish("mcugw/it-gw/cmd/sim-0001", b"blink")
        r = sim.wait(40)
        check(r.get("acked", 0) >= 76, f"simulators: {r.get('acked')} of 80 acked")
        ok = wait_for(lambda: len(set(batch_entries(sub))) >= r.get("acked", 0), timeout=15)
        got = set(batch_entries(sub))
        check(ok and {x[0] for x in got} == {"sim-0000", "sim-0001"},
              f"telemetry reached the subscriber on aedes ({len(got)} messages)")
        res = [json.loads(m[1]) for m in sub.snapshot() if "/cmd-result/" in m[0]]
        check(any(x["device"] == "sim-0001" and x["status"] == 0 and
                  base64.b64decode(x["p"]) == b"blink" for x in res),
              "a command through aedes reached sim-0001; its result came back")
        check(d.stop() == 0, "daemon exits 0")
    finally:
        if sim:
            sim.stop()
        d.stop()
        sub.close()


def main():
    why = aedes_available()
    if why:
        skip(why)
    tmp = TempDir("mcugw-aedes-")
    broker = None
    try:
        broker = AedesBroker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        test_v5_refused(tmp, broker, cert)
        test_relay(tmp, broker, cert)
    finally:
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
