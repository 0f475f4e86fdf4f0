# SPDX-License-Identifier: Apache-2.0
"""The whole path with real parts: simulated MCUs (mcugw-sim) authenticate over the link, their
telemetry goes through mcugwd's outbox to a real Mosquitto with mutual TLS, and a paho subscriber
with its own certificate sees it under the authenticated device ids; every message the
simulators saw acked arrives; devices that fail authentication never reach the broker; a cloud
command reaches the device and its result comes back."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, Subscriber, free_port  # noqa: E402
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       batch_entries, enroll_file, sim_keys, wait_for)


def main():
    tmp = TempDir("mcugw-mqtt-sim-")
    broker = d = sub = None
    procs = []
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        sub = Subscriber(broker, ["mcugw/it-gw/batch", "mcugw/it-gw/cmd-result/+"],
                         name="sub-sim", clean=True)
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        good = sim_keys(4, "good", "sim-")
        enroll_file(devdir, "sim.conf", good)
        port = free_port()
        config = base_config(tmp, f"""
[Link]
ListenStream=tcp:127.0.0.1:{port}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + \
            broker.mqtt_config(*cert, "") + "\n[Relay]\nBatchWindow=20ms\n"
        d = Daemon(tmp, config).start()
        wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("state") == "connected",
                 timeout=10)
        gw_key = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}"]

        good = Sim(tmp, "good", [*base, "--count", "4", "--seed", "good", "--id-prefix",
                                 "sim-", "--rate", "50", "--messages", "100", "--linger", "3"])
        procs.append(good)
        bad = Sim(tmp, "bad", [*base, "--count", "1", "--seed", "good", "--id-prefix", "sim-",
                               "--unknown", "--messages", "20", "--duration", "4"])
        procs.append(bad)
        # A command while the devices are connected.
        ok = wait_for(lambda: len(batch_entries(sub)) >= 20, timeout=15)
        sub.publish("mcugw/it-gw/cmd/sim-0001", b"blink")
        r = good.wait(40)
        bad_result = bad.wait(20)
        check(r.get("acked", 0) >= 390, f"simulators: {r.get('acked')} of 400 acked")
        ok = wait_for(lambda: len(set(batch_entries(sub))) >= r.get("acked", 0), timeout=15)
        got = set(batch_entries(sub))
        check(ok, f"every acked message arrived at the subscriber ({len(got)})")
        check({x[0] for x in got} == {"sim-0000", "sim-0001", "sim-0002", "sim-0003"},
              "under the authenticated device ids only")
        last = {}
        in_order = True
        for dev, q in batch_entries(sub):
            if q <= last.get(dev, 0):
                in_order = False
            last[dev] = q
        check(in_order, "per-device order")
        check(bad_result.get("authenticated", 1) == 0,
              "a device with an unknown key never authenticated")
        res = [json.loads(m[1]) for m in sub.snapshot() if "/cmd-result/" in m[0]]
        check(any(x["device"] == "sim-0001" and x["status"] == 0 and
                  base64.b64decode(x["p"]) == b"blink" for x in res),
              "command reached sim-0001 through the link; its echo came back as the result")
        ev = [(x["event"], x["subject"]) for x in d.ctl_json("audit", "tail", "-n", "500")]
        check(("cmd.received", "sim-0001") in ev and ("cmd.result", "sim-0001") in ev,
              "command audited")
        st = d.ctl_json("status")
        check(st["outbox"]["rows"] == 0, "outbox empty after delivery")
        rc = d.stop()
        check(rc == 0, "daemon exits 0")
    finally:
        for p in procs:
            p.stop()
        if d:
            d.stop()
        if sub:
            sub.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
