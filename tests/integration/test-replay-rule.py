# SPDX-License-Identifier: Apache-2.0
"""Replayed handshakes as a rule metric (docs/monitoring.md, `replay_ts`): the real daemon with a
rule `Metric=replay_ts Threshold=5 Action=quarantine`, two simulated MCUs on the real device SDK
whose first message 1 is recorded on its way (a proxy on the line), and an attacker who plays
the recordings back on connections of its own. Each replay is refused on its timestamp and
counted for the device whose key made it; `mcugwctl metrics` and `top` show the count. Eight
replays get the first device quarantined by that rule; three of the second stay below the
threshold and it stays active."""

import importlib.util
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       sim_keys, wait_for)

# The recording proxy of the handshake-flood test (an attacker on the device's line).
_spec = importlib.util.spec_from_file_location(
    "hs_flood", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "test-handshake-flood.py"))
hs_flood = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hs_flood)

RULE = """[Rule]
Name=hs-replays
Metric=replay_ts
Window=1min
Threshold=5
Action=quarantine
"""


def metrics(d):
    return {x["id"]: x for x in d.ctl_json("metrics")["devices"]}


def state(d, dev):
    return d.ctl_json("device", "show", dev).get("state")


def fired(d, dev):
    return [r["details"] for r in d.ctl_json("audit", "tail", "-n", "3000")
            if r["event"] == "rule.fired" and r["subject"] == dev]


def replay(path, frame, times):
    """Play a recorded message 1 back, each time on a connection of its own."""
    for _ in range(times):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(frame)
        time.sleep(0.05)
        s.close()


def main():
    tmp = TempDir()
    d = None
    sims, proxies = [], []
    try:
        devdir, rules = tmp.join("devices.d"), tmp.join("rules.d")
        os.makedirs(devdir)
        os.makedirs(rules)
        with open(os.path.join(rules, "50-replays.conf"), "w") as f:
            f.write(RULE)
        keys = {seed: sim_keys(1, seed, f"{seed}-")[0] for seed in ("rep", "calm")}
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for k in keys.values():
                f.write(f"[Device]\nId={k['id']}\nPublicKey={k['public_key']}\nState=active\n\n")
        sock = tmp.join("run", "link.sock")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{sock}
HandshakeRate=1000
HandshakeRatePerLink=1000
MaxPendingPerSource=64

[Monitor]
RulesDirectory={rules}
MetricsInterval=200ms
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw = d.ctl_json("status")["link"]["public_key"]

        recorded = {}
        for seed, k in keys.items():
            proxy = hs_flood.Proxy(tmp.join(f"{seed}.sock"), sock)
            proxies.append(proxy)
            sims.append(Sim(tmp, seed, ["--gateway-key", gw, "--connect", f"unix:{proxy.path}",
                                        "--seed", seed, "--id-prefix", f"{seed}-",
                                        "--messages", "0", "--rate", "5"]))
            check(wait_for(lambda: d.ctl_json("device", "show", k["id"]).get("connected"), 20),
                  f"{k['id']} authenticated through the recording proxy")
            recorded[seed] = proxy.first_frame()
            check(recorded[seed] is not None and len(recorded[seed]) > 150,
                  f"its message 1 was recorded on the line")
        rep, calm = keys["rep"]["id"], keys["calm"]["id"]

        replay(sock, recorded["calm"], 3)
        replay(sock, recorded["rep"], 8)
        check(wait_for(lambda: metrics(d)[rep].get("replay_ts", 0) >= 8, 10),
              f"metrics: the replays counted for the device whose key made them "
              f"({metrics(d)[rep].get('replay_ts')})")
        check(wait_for(lambda: state(d, rep) == "quarantined", 10),
              f"eight replayed messages 1 get the device quarantined ({state(d, rep)})")
        details = fired(d, rep)
        check(any(x["rule"] == "hs-replays" and x["metric"] == "replay_ts" and x["value"] >= 5
                  for x in details), f"... by the rule on replay_ts ({details})")
        check(metrics(d)[calm].get("replay_ts") == 3,
              f"metrics: three replays of the other device ({metrics(d)[calm].get('replay_ts')})")
        # A few more sampling periods: below the threshold nothing fires.
        wait_for(lambda: False, 1.0)
        check(state(d, calm) == "active" and not fired(d, calm),
              f"three replays stay below the threshold: still active ({state(d, calm)})")
        top = d.ctl("top", "--once")
        check(top.returncode == 0 and "HSREPL" in top.stdout,
              f"top shows the replay_ts column ({top.stderr.strip()})")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
    finish()


if __name__ == "__main__":
    main()
