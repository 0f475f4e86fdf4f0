# SPDX-License-Identifier: Apache-2.0
"""Shadow pacing with a fleet (docs/shadow.md, "Pacing"): 200 simulated MCUs (as many as stay
fast on a shared test machine; the pacing does not depend on the count; MCUGW_FLEET_N=1000 runs
the issue's thousand) connecting, and
reconnecting all at once while the cloud is away, against the scripted cloud's shadow service.

Counted, not timed: every shadow request the cloud receives. Their rate never exceeds what
UpdatesPerInterval= per UpdateInterval= allows (checked over every one-second window of the
broker-side arrival times, with two intervals of slack for jitter); what changed
while the cloud was away costs each device one read and one update after the reconnect, however
many times it went down and up in between; and every device ends reported connected."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       enroll_file, max_per_second, sim_keys, wait_for)
from broker import Broker  # noqa: E402
from aws_cloud import AwsCloud  # noqa: E402

N = int(os.environ.get("MCUGW_FLEET_N", "200"))
PER_INTERVAL, INTERVAL = 10, 0.1  # 100 requests a second


def main():
    tmp = TempDir("mcugw-shadow-fleet-")
    broker = cloud = d = None
    sims = []
    try:
        broker = Broker(tmp.path).start()
        cloud = AwsCloud(broker)
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "f.conf", sim_keys(N, "fleet", "f-"))
        link_sock = tmp.join("run", "link.sock")
        config = (base_config(tmp) + broker.mqtt_config(*broker.certs.client("it-gw")) + f"""
[Link]
ListenStream=unix:{link_sock}
IdleTimeout=0

[Shadow]
Mode=thing-per-device
UpdateInterval={int(INTERVAL * 1000)}ms
UpdatesPerInterval={PER_INTERVAL}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "session up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        things = [f"it-gw-f-{i:04d}" for i in range(N)]

        def start_fleet(tag):
            sims.append(Sim(tmp, tag, ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}",
                                       "--seed", "fleet", "--id-prefix", "f-", "--count", str(N),
                                       "--messages", "0", "--rate", "0.1"]))

        def connected_in_cloud():
            n = 0
            for t in things:
                doc = cloud.shadow_get_doc(t) or {}
                n += doc.get("state", {}).get("reported", {}).get("connected") is True
            return n

        start_fleet("first")
        check(wait_for(lambda: connected_in_cloud() == N, 90, 0.5),
              f"all {N} MCUs reported connected")

        # All go down and come back while the cloud is away: coalesced.
        broker.stop()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] != "connected", 20),
              "the cloud session is down")
        sims[-1].stop()
        check(wait_for(lambda: not any(x["connected"] for x in d.ctl_json("devices")), 20),
              "every MCU disconnected")
        start_fleet("second")
        check(wait_for(lambda: all(x["connected"] for x in d.ctl_json("devices")), 60),
              "every MCU connected again, the cloud still away")
        with cloud.lock:
            before = len(cloud.shadow_requests)
        broker.start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 30),
              "the cloud session is back")
        def reported_since():
            with cloud.lock:
                reqs = cloud.shadow_requests[before:]
            return {t.split("/")[2] for _, t, r in reqs if t.endswith("/update") and
                    (r or {}).get("state", {}).get("reported", {}).get("connected") is True}
        # A request published before the scripted cloud subscribed again is lost; the gateway
        # sends it again when its answer is overdue (30 s), so this may take that long.
        check(wait_for(lambda: reported_since() == set(things), 90, 0.5),
              f"all {N} MCUs reported connected again after the reconnect")
        time.sleep(1)  # nothing more should come; if it does, it is counted below
        with cloud.lock:
            reqs = list(cloud.shadow_requests)
        after = reqs[before:]
        gets = sum(t.endswith("/get") for _, t, _ in after)
        updates = sum(t.endswith("/update") for _, t, _ in after)
        print(f"# after the reconnect: {gets} reads, {updates} updates for {N} devices",
              flush=True)
        check(gets <= N and updates <= N,
              f"one read and one update per device after the reconnect ({gets}, {updates})")
        times = sorted(t for t, _, _ in reqs)
        peak = max_per_second(times)
        # Arrival times jitter: two intervals of slack. Unpaced, the reconnect alone would put
        # 400 requests into the first second.
        limit = PER_INTERVAL * (round(1 / INTERVAL) + 2)
        print(f"# {len(reqs)} shadow requests in all, at most {peak} in one second "
              f"(limit {limit})", flush=True)
        check(peak <= limit, f"never more than {limit} shadow requests a second ({peak})")
        sims[-1].stop()
        check(d.stop() == 0, "daemon exits 0")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
        if cloud:
            cloud.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
