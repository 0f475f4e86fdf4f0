#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""scripts/bench shadow: N simulated MCUs (MCUGW_BENCH_SHADOW_N, default 200) connect at once to
a fresh mcugwd with device shadows on, against the scripted shadow service over a real Mosquitto
with mutual TLS. Measured: the shadow requests the cloud receives until every MCU is reported
connected, the most in one second, and how long it took; once with the pacing of the
configuration below (UpdatesPerInterval=10 per 100ms, 100 a second) and, as the baseline in the
same run, with the pacing out of the way (1000 per 10ms). The last line is one JSON object."""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build-bench")
os.environ.setdefault("MCUGWD", os.path.join(BUILD, "src/mcugwd"))
os.environ.setdefault("MCUGWCTL", os.path.join(BUILD, "src/mcugwctl/mcugwctl"))
os.environ.setdefault("MCUGW_SIM", os.path.join(BUILD, "src/sim/mcugw-sim"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from aws_cloud import AwsCloud  # noqa: E402
from broker import Broker  # noqa: E402
from mcugwtest import (Daemon, Sim, TempDir, base_config, enroll_file,  # noqa: E402
                       max_per_second, sim_keys, wait_for)

N = int(os.environ.get("MCUGW_BENCH_SHADOW_N", "200"))


def one_run(per_interval, interval_ms):
    tmp = TempDir("mcugw-bench-shadow-")
    broker = cloud = d = sim = None
    try:
        broker = Broker(tmp.path).start()
        cloud = AwsCloud(broker)
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "b.conf", sim_keys(N, "bench", "b-"))
        link = tmp.join("run", "link.sock")
        config = (base_config(tmp) + broker.mqtt_config(*broker.certs.client("it-gw")) + f"""
[Link]
ListenStream=unix:{link}
IdleTimeout=0
[Shadow]
Mode=thing-per-device
UpdateInterval={interval_ms}ms
UpdatesPerInterval={per_interval}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n").replace(
            "LogLevel=debug", "LogLevel=notice")
        d = Daemon(tmp, config).start()
        wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20)
        things = {f"it-gw-b-{i:04d}" for i in range(N)}
        # The enrolled devices are reported (disconnected) first; the storm starts after that.
        wait_for(lambda: d.ctl_json("status")["shadow"]["updates"] >= N, 120, 0.2)
        time.sleep(0.5)
        with cloud.lock:
            before = len(cloud.shadow_requests)
        gw_key = d.ctl_json("status")["link"]["public_key"]
        t0 = time.time()
        sim = Sim(tmp, "storm", ["--gateway-key", gw_key, "--connect", f"unix:{link}",
                                 "--seed", "bench", "--id-prefix", "b-", "--count", str(N),
                                 "--messages", "0", "--rate", "0.1"])

        def done():
            with cloud.lock:
                reqs = cloud.shadow_requests[before:]
            return {t.split("/")[2] for _, t, r in reqs if t.endswith("/update") and
                    (r or {}).get("state", {}).get("reported", {}).get("connected")} == things
        ok = wait_for(done, 180, 0.1)
        elapsed = time.time() - t0
        with cloud.lock:
            reqs = cloud.shadow_requests[before:]
        return {"complete": ok, "requests": len(reqs),
                "peak_per_s": max_per_second(sorted(t for t, _, _ in reqs)),
                "seconds_until_all_reported": round(elapsed, 2)}
    finally:
        if sim:
            sim.stop()
        if d:
            d.stop()
        if cloud:
            cloud.close()
        if broker:
            broker.stop()
        tmp.cleanup()


def main():
    paced = one_run(10, 100)
    baseline = one_run(1000, 10)
    print(json.dumps({"devices": N, "paced_100_per_s": paced, "baseline_unpaced": baseline}))


if __name__ == "__main__":
    main()
