# SPDX-License-Identifier: Apache-2.0
"""Every publish of the cloud session is paced (docs/mqtt.md, "Pacing"). The real daemon, real
simulated devices (mcugw-sim) and a real Mosquitto with mutual TLS; a paho subscriber on every
topic of the gateway sees what the broker sees:

* with PublishesPerSecond=20, telemetry above the quota, a burst of command results (commands
  answered "busy"), Device Defender reports and the OTA jobs requests together, no second holds
  more publishes than the bucket allows (20, plus its burst of one, plus one for the
  subscriber's clock);
* telemetry keeps flowing during the burst of command results: it gets at least every other
  publish while both wait, so it is not starved;
* every command still gets its result (the control queue is bounded, but not reached here).
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       sim_keys, skip, wait_for)

try:
    import paho.mqtt.client  # noqa: F401
    from broker import Broker, Subscriber, free_port
except ImportError as e:
    skip(f"cannot run the pacing test: {e}")

GW = "it-gw"
RATE = 20
COMMANDS = 120


def kind(topic):
    parts = topic.split("/")
    if topic.startswith(f"mcugw/{GW}/dev/"):
        return "telemetry"
    if topic.startswith(f"mcugw/{GW}/cmd-result/"):
        return "result"
    if topic.startswith(f"mcugw/{GW}/cmd/") or topic.endswith(("/accepted", "/rejected")):
        return None  # the cloud's side
    if topic == f"$aws/things/{GW}/defender/metrics/json":
        return "defender"
    if "jobs" in parts:
        return "jobs"
    if topic.endswith("/status"):
        return None  # the retained online/offline status, one per connect (not paced)
    return "other"


def gateway_publishes(sub):
    return [(t, ts) for t, _, ts, retained in sub.snapshot() if not retained and kind(t)]


def main():
    tmp = TempDir("mcugw-pacing-")
    broker = d = sub = None
    sims = []
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client(GW)
        sub = Subscriber(broker, [f"mcugw/{GW}/#", "$aws/things/#"], name="sub-all", clean=True)
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for x in sim_keys(2, "tlm", "tlm-") + sim_keys(1, "cmd", "cmd-"):
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n\n")
        port = free_port()
        config = base_config(tmp, f"""
[Link]
ListenStream=tcp:127.0.0.1:{port}
CommandsPerSecond=5
CommandQueue=4

[Relay]
Batching=no
PublishesPerSecond={RATE}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + broker.mqtt_config(*cert)
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("state") ==
                       "connected", timeout=15), "MQTT session up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}"]
        # 2 x 25 messages/s: telemetry alone wants more than the quota, so it always waits.
        sims.append(Sim(tmp, "tlm", [*base, "--count", "2", "--seed", "tlm", "--id-prefix",
                                     "tlm-", "--messages", "0", "--rate", "25",
                                     "--duration", "40"]))
        sims.append(Sim(tmp, "cmd", [*base, "--seed", "cmd", "--id-prefix", "cmd-",
                                     "--messages", "0", "--rate", "1", "--duration", "40"]))
        check(wait_for(lambda: all(x.get("connected") for x in d.ctl_json("devices")),
                       timeout=15), "the devices are connected")
        check(wait_for(lambda: sum(1 for t, _ in gateway_publishes(sub)
                                   if kind(t) == "telemetry") >= 20, timeout=15),
              "telemetry flows")

        # The burst: commands the device cannot take are answered "busy" at once, and a few
        # Device Defender reports go out next to them.
        infos = [sub.c.publish(f"mcugw/{GW}/cmd/cmd-0000", b"c%04d" % i, qos=1)
                 for i in range(COMMANDS)]
        for i in infos:
            i.wait_for_publish()
        for _ in range(5):
            check(d.ctl("defender", "send").returncode == 0, "`mcugwctl defender send`")
        check(wait_for(lambda: sum(1 for t, _ in gateway_publishes(sub)
                                   if kind(t) == "result") >= COMMANDS, timeout=60),
              "every command got its result")
        time.sleep(1.5)  # what is still in flight
        sims[0].stop()
        pubs = gateway_publishes(sub)
        by = collections.Counter(kind(t) for t, _ in pubs)
        print(f"# publishes seen: {dict(by)}", flush=True)
        check(by["defender"] == 5, f"the Defender reports went out ({by['defender']})")

        # The bucket: RATE a second, a burst of one; one more for the subscriber's clock.
        times = sorted(ts for _, ts in pubs)
        worst, j = 0, 0
        for i in range(len(times)):
            while times[i] - times[j] >= 1.0:
                j += 1
            worst = max(worst, i - j + 1)
        check(worst <= RATE + 2,
              f"no second holds more than PublishesPerSecond={RATE} allows "
              f"(at most {worst} in a second, {len(times)} publishes)")

        # During the burst (first to last result) telemetry got its share.
        res = [ts for t, ts in pubs if kind(t) == "result"]
        first, last = min(res), max(res)
        tlm = sum(1 for t, ts in pubs if kind(t) == "telemetry" and first <= ts <= last)
        print(f"# during the burst: {len(res)} results, {tlm} telemetry publishes", flush=True)
        check(tlm * 3 >= len(res),
              f"telemetry flows during the burst of command results ({tlm} telemetry "
              f"publishes next to {len(res)} results)")
        mq = d.ctl_json("status")["mqtt"]
        check(mq.get("control_dropped") == 0 and mq.get("control_queued", 0) >= COMMANDS // 2,
              f"the results waited in the control queue, none dropped "
              f"(queued {mq.get('control_queued')}, dropped {mq.get('control_dropped')})")

        rc = d.stop()
        check(rc == 0, "daemon exits 0")
        log = d.read_log()
        check("handles left open" not in log, "no libuv handle left open at exit")
        check("Sanitizer" not in log and "runtime error" not in log, "no sanitizer report")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
            if "--verbose" in sys.argv or os.environ.get("MCUGW_TEST_VERBOSE"):
                print(d.read_log())
        if sub:
            sub.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
