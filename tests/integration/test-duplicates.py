# SPDX-License-Identifier: Apache-2.0
"""Duplicates are not attacks (docs/protocol.md section 4, docs/monitoring.md): the real daemon
with the shipped default rules (etc/mcugw/rules.d/10-default.conf) and simulated MCUs on the real
device SDK. A device whose link duplicates far more than eleven frames a minute stays active:
the copies are counted as `dup`, never as `replays`, no rule fires and every message is acked.
Frames from before the replay window (someone playing back a recording) still get the device
quarantined by the `replays` rule, and forged frames still trip `bad-frames`. A device onboarded
just in time that keeps retrying while it waits for approval is counted as `hs_pending`, not as
an authentication failure, and is neither quarantined nor alerted on; once approved it gets in."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       sim_keys, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RULES = os.path.join(HERE, "..", "..", "etc", "mcugw", "rules.d", "10-default.conf")


def stats(d, dev):
    return d.ctl_json("device", "show", dev).get("link_stats", {})


def state(d, dev):
    return d.ctl_json("device", "show", dev).get("state")


def fired(d, dev):
    return [r["details"]["rule"] for r in d.ctl_json("audit", "tail", "-n", "3000")
            if r["event"] == "rule.fired" and r["subject"] == dev]


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        acme_priv, acme_pub = tmp.join("acme.key"), tmp.join("acme.pub")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                        acme_priv], check=True, capture_output=True)
        subprocess.run(["openssl", "ec", "-in", acme_priv, "-pubout", "-out", acme_pub],
                       check=True, capture_output=True)
        devdir = tmp.join("devices.d")
        rules = tmp.join("rules.d")
        os.makedirs(devdir)
        os.makedirs(rules)
        shutil.copy(DEFAULT_RULES, os.path.join(rules, "10-default.conf"))
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for seed in ("dup", "old", "forge"):
                x = sim_keys(1, seed, f"{seed}-")[0]
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n\n")
        sock = tmp.join("run", "link.sock")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{sock}
HandshakeRatePerLink=50

[Monitor]
RulesDirectory={rules}
MetricsInterval=200ms

[Onboarding]
Policy=pending
ManufacturerKey=acme:{acme_pub}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw, "--connect", f"unix:{sock}"]

        def sim(seed, *extra):
            s = Sim(tmp, seed, [*base, "--seed", seed, "--id-prefix", f"{seed}-", *extra])
            sims.append(s)
            return s

        # Every other data frame duplicated, 40 messages in ~1.5 s: far above the old limit
        # of ten "replays" a minute.
        r = sim("dup", "--replay", "--every", "2", "--messages", "40", "--rate", "30",
                "--duration", "3").wait(30)
        st = stats(d, "dup-0000")
        check(st.get("dup", 0) >= 11 and st.get("replays", -1) == 0,
              f"duplicated frames counted as dup ({st.get('dup')}), not as replays "
              f"({st.get('replays')})")
        check(r.get("sent") == 40 and r.get("acked") == 40,
              f"every message of the duplicating device acked ({r.get('acked')}/{r.get('sent')})")
        # Let the sampler and the rules see the counts (several MetricsInterval= periods).
        wait_for(lambda: False, 1.5)
        check(state(d, "dup-0000") == "active" and not fired(d, "dup-0000"),
              f"the duplicating device stays active, no rule fired ({state(d, 'dup-0000')}, "
              f"{fired(d, 'dup-0000')})")

        # Frames from before the window: a recording played back. Quarantined by `replays`.
        sim("old", "--replay-old", "--every", "2", "--messages", "140", "--rate", "70",
            "--duration", "3.5").wait(30)
        check(wait_for(lambda: state(d, "old-0000") == "quarantined", 10),
              f"frames from before the window get the device quarantined ({state(d, 'old-0000')},"
              f" replays {stats(d, 'old-0000').get('replays')})")
        check("replays" in fired(d, "old-0000"), "... by the default rule `replays`")
        check(stats(d, "old-0000").get("dup", -1) == 0, "... and none of them counted as dup")

        # Forged frames: the default `bad-frames` rule fires.
        sim("forge", "--bitflip", "--every", "2", "--messages", "40", "--rate", "30",
            "--duration", "3").wait(30)
        check(wait_for(lambda: "bad-frames" in fired(d, "forge-0000"), 10),
              f"forged frames trip `bad-frames` (mac_errors "
              f"{stats(d, 'forge-0000').get('mac_errors')})")

        # A JIT device waiting for approval, retrying: each run sends message 1 at once and
        # again after a second. Well above the auth-failures threshold (5 a minute).
        for i in range(5):
            sim("acme", "--attest-key", acme_priv, "--attest-key-id", "acme", "--messages", "0",
                "--duration", "1.3").wait(20)
        st = stats(d, "acme-0000")
        check(st.get("hs_pending", 0) >= 6 and st.get("auth_failures", -1) == 0,
              f"a pending device's retries are hs_pending ({st.get('hs_pending')}), not auth "
              f"failures ({st.get('auth_failures')})")
        wait_for(lambda: False, 1.5)
        check(state(d, "acme-0000") == "pending" and not fired(d, "acme-0000"),
              f"the pending device is neither quarantined nor alerted on "
              f"({state(d, 'acme-0000')}, {fired(d, 'acme-0000')})")
        check(d.ctl("device", "approve", "acme-0000").returncode == 0, "approve it")
        s = sim("acme", "--attest-key", acme_priv, "--attest-key-id", "acme", "--messages", "0",
                "--duration", "20")
        check(wait_for(lambda: d.ctl_json("device", "show", "acme-0000").get("connected"), 15),
              "the approved device gets in")
        s.stop()
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
    finish()


if __name__ == "__main__":
    main()
