# SPDX-License-Identifier: Apache-2.0
"""Monitoring, rules and remediation end to end (docs/monitoring.md): rule files are checked by
--check-config with file:line; the real daemon evaluates them on live link counters from
simulated devices on the real device SDK: a device that floods telemetry and one that keeps
failing authentication are quarantined by rules within their window (audited as rule.fired)
while the good devices keep flowing; `device restore` releases one and it flows again; a
throttle rule holds a device back and lets it go; `device disconnect` and `rotate-session` end
a session. `metrics` and `top --once` show gateway and per-device figures. `audit config` finds
planted problems (a world-readable key, a world-writable state directory, rules turned off) and
drift since `audit baseline accept`, which is audited as config.drift."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWCTL, MCUGWD, Daemon, Sim, TempDir, base_config, check,  # noqa
                       check_no_sanitizer_reports, finish, sim_keys, wait_for)


RULES = """# test rules
[Rule]
Name=msg-flood
Metric=messages
Window=2s
Threshold=300
Action=quarantine alert
Match=flood-*

[Rule]
Name=auth-flood
Metric=auth_failures
Window=1min
Threshold=3
Action=quarantine

[Rule]
Name=chatty
Metric=bytes
Window=2s
Threshold=20000
Action=throttle alert
Hold=3s
Group=throttled

[Rule]
Name=quiet
Metric=silence
Timeout=1h
Action=alert
"""


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def metrics(d):
    return {x["id"]: x for x in d.ctl_json("metrics")["devices"]}


def audit(d, n=5000):
    return d.ctl_json("audit", "tail", "-n", str(n))


def fired(d, rule, dev):
    return [r for r in audit(d) if r["event"] == "rule.fired" and r["subject"] == dev and
            r["details"]["rule"] == rule]


def top_on_a_terminal(d, key=b"q"):
    """Run `mcugwctl top` on a pseudo-terminal: it redraws at least twice, then `key` (q or
    Ctrl-C, which the terminal turns into SIGINT) ends it with status 0."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(MCUGWCTL, [MCUGWCTL, "--socket", d.socket, "top", "--interval", "0.3"])
    out = b""
    deadline = time.monotonic() + 10
    while out.count(b"mcugw top - ") < 2 and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    os.write(fd, key)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        try:
            if select.select([fd], [], [], 0.1)[0]:
                os.read(fd, 65536)  # keep draining so that top never blocks writing
        except OSError:
            time.sleep(0.05)  # EIO: the child closed the terminal and is exiting
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        return False
    os.close(fd)
    return (out.count(b"mcugw top - ") >= 2 and b"good-0000" in out and
            os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)


def test_check_config(tmp):
    rules = tmp.join("rules-check")
    os.makedirs(rules)
    cfg = tmp.join("check.conf")
    with open(cfg, "w") as f:
        f.write(base_config(tmp) + f"\n[Monitor]\nRulesDirectory={rules}\n")
    with open(os.path.join(rules, "10-good.conf"), "w") as f:
        f.write(RULES)
    r = subprocess.run([MCUGWD, "--check-config", "--config", cfg], capture_output=True,
                       text=True)
    check(r.returncode == 0 and "4 rule(s)" in r.stdout,
          f"--check-config accepts good rules and counts them ({r.stdout.strip()})")
    bad = os.path.join(rules, "20-bad.conf")
    with open(bad, "w") as f:
        f.write("[Rule]\nName=x\nMetric=messages\nWindow=forever\nThreshold=1\nAction=alert\n"
                "\n[Rule]\nName=y\nMetric=silence\nAction=explode\n")
    r = subprocess.run([MCUGWD, "--check-config", "--config", cfg], capture_output=True,
                       text=True)
    check(r.returncode != 0 and f"{bad}:4: Window=forever" in r.stderr and
          f"{bad}:11: Action=explode" in r.stderr and
          f"{bad}:9: Metric=silence needs Timeout=" in r.stderr,
          "--check-config names every rule error with file:line")
    os.unlink(bad)


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        test_check_config(tmp)

        devdir = tmp.join("devices.d")
        rules = tmp.join("rules.d")
        os.makedirs(devdir)
        os.makedirs(rules)
        with open(os.path.join(rules, "10-test.conf"), "w") as f:
            f.write(RULES)
        good = sim_keys(3, "good", "good-")
        flood = sim_keys(1, "flood", "flood-")
        authf = sim_keys(1, "authf", "authf-")
        thr = sim_keys(1, "thr", "thr-")
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for group, groups in ((good, ""), (flood, ""), (authf, ""), (thr, "throttled")):
                for x in group:
                    f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n"
                            f"Groups={groups}\n\n")

        link_sock = tmp.join("run", "link.sock")
        monitor = f"""
[Link]
ListenStream=unix:{link_sock}
HandshakeRatePerLink=20

[Monitor]
RulesDirectory={rules}
MetricsInterval=200ms
"""
        config = base_config(tmp, monitor).replace("[Paths]\n",
                                                   f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}"]

        rl = d.ctl_json("rules")
        check([x["name"] for x in rl["rules"]] == ["msg-flood", "auth-flood", "chatty", "quiet"]
              and rl["evaluating"], "`rules` lists the loaded rules")
        check("auth-flood" in d.ctl("rules").stdout, "`mcugwctl rules` prints a table")
        bad = os.path.join(rules, "99-bad.conf")
        with open(bad, "w") as f:
            f.write("[Rule]\nName=oops\nMetric=messages\nWindow=1s\nThreshold=0\nAction=alert\n")
        r = d.ctl("reload")
        check(r.returncode != 0 and f"{bad}:5: Threshold=0" in r.stderr,
              f"reload with a bad rule file is refused with file:line ({r.stderr.strip()})")
        check(len(d.ctl_json("rules")["rules"]) == 4, "... and the running rules are kept")
        os.unlink(bad)

        sims.append(Sim(tmp, "good", [*base, "--count", "3", "--seed", "good", "--id-prefix",
                                      "good-", "--messages", "0", "--rate", "20"]))
        want = {x["id"] for x in good}
        check(wait_for(lambda: all(devices(d).get(i, {}).get("connected") for i in want),
                       timeout=20), "good devices authenticated")

        # --- metrics ------------------------------------------------------------------------
        check(wait_for(lambda: all(metrics(d)[i]["msgs_per_s"] > 5 for i in want), timeout=10),
              "metrics: per-device messages/s of the good devices")
        m = d.ctl_json("metrics")
        g = m["gateway"]
        check(g["rss_bytes"] > 0 and g["devices_connected"] >= 3 and "outbox_rows" in g and
              g["db_bytes"] > 0 and "cpu_percent" in g,
              "metrics: gateway RSS, connected devices, outbox, database size, CPU")
        dm = metrics(d)["good-0000"]
        check(all(k in dm for k in ("frames_in", "bytes_in", "auth_failures", "mac_errors",
                                    "replays", "drops", "last_seen_us", "fw_version")),
              "metrics: per-device counters")
        r = d.ctl("metrics")
        check(r.returncode == 0 and "good-0001" in r.stdout and "Session:" in r.stdout,
              "`mcugwctl metrics` prints the gateway and a device table")
        r = d.ctl("top", "--once")
        check(r.returncode == 0 and "good-0002" in r.stdout and "\033[" not in r.stdout,
              "`mcugwctl top --once` prints one screen without terminal codes")
        check(top_on_a_terminal(d), "`mcugwctl top` on a terminal refreshes and exits on q")
        check(top_on_a_terminal(d, b"\x03"), "... and on Ctrl-C")

        # --- a flooding device is quarantined within its window ------------------------------
        before = {i: metrics(d)[i]["frames_in"] for i in want}
        t0 = time.monotonic()
        sims.append(Sim(tmp, "flood", [*base, "--seed", "flood", "--id-prefix", "flood-",
                                       "--messages", "0", "--rate", "1000", "--window", "64",
                                       "--duration", "30"]))
        check(wait_for(lambda: devices(d)["flood-0000"]["state"] == "quarantined", timeout=15),
              "a device flooding telemetry is quarantined by rule msg-flood")
        took = time.monotonic() - t0
        check(took < 8, f"... within the window (+ sampling and handshake): {took:.1f}s")
        check(wait_for(lambda: not devices(d)["flood-0000"]["connected"], timeout=3),
              "... and disconnected at once")
        f = fired(d, "msg-flood", "flood-0000")
        check(len(f) == 1 and f[0]["details"]["value"] >= 300 and
              "quarantine" in f[0]["details"]["taken"] and f[0]["actor"] == "daemon",
              f"rule.fired audited with value, threshold and actions taken ({f[:1]})")
        check(any(r["event"] == "device.state" and r["subject"] == "flood-0000" and
                  "msg-flood" in json.dumps(r["details"]) for r in audit(d)),
              "the state change names the rule")
        # AlertTopic without a cloud session: the alert is still audited.
        check("alert:unpublished" in f[0]["details"]["taken"],
              "the alert is audited even without a cloud session")
        time.sleep(1.0)
        after = {i: metrics(d)[i]["frames_in"] for i in want}
        check(all(after[i] > before[i] for i in want) and
              all(devices(d)[i]["connected"] for i in want),
              f"the other devices kept flowing ({before} -> {after})")

        # --- repeated authentication failures -------------------------------------------------
        # A stranger with a fresh key claiming authf-0000's id must not count against it ...
        sims.append(Sim(tmp, "spoof", [*base, "--seed", "authf", "--id-prefix", "authf-",
                                       "--wrong-key", "--duration", "4"]))
        sims[-1].wait(15)
        check(devices(d)["authf-0000"]["state"] == "active" and
              metrics(d).get("authf-0000", {}).get("auth_failures", 0) == 0,
              "failures with unknown keys do not count against the device whose id they claim")
        # ... but authf-0000's own key used under another identity (a cloned key) does.
        t0 = time.monotonic()
        sims.append(Sim(tmp, "authf", [*base, "--seed", "authf", "--id-prefix", "clone-",
                                       "--duration", "20"]))
        check(wait_for(lambda: devices(d)["authf-0000"]["state"] == "quarantined", timeout=20),
              "a device whose key fails authentication repeatedly is quarantined by rule "
              "auth-flood")
        check(time.monotonic() - t0 < 15, f"... within {time.monotonic() - t0:.1f}s")
        f = fired(d, "auth-flood", "authf-0000")
        check(len(f) == 1 and f[0]["details"]["metric"] == "auth_failures",
              "rule.fired audited once for auth-flood")
        sims[-1].stop()

        # --- release ------------------------------------------------------------------------
        r = d.ctl("device", "restore", "authf-0000")
        check(r.returncode == 0 and devices(d)["authf-0000"]["state"] == "active",
              "`device restore` releases the quarantined device")
        ok = Sim(tmp, "authf-ok", [*base, "--seed", "authf", "--id-prefix", "authf-",
                                   "--messages", "20", "--rate", "20"])
        sims.append(ok)
        check(wait_for(lambda: metrics(d)["authf-0000"]["telemetry"] >= 20, timeout=20),
              "after release it authenticates and its telemetry flows again")
        check(devices(d)["authf-0000"]["state"] == "active" and
              len(fired(d, "auth-flood", "authf-0000")) == 1,
              "old failures do not trip the rule again after a release")

        # --- throttle: held back, then let go -------------------------------------------------
        sims.append(Sim(tmp, "thr", [*base, "--seed", "thr", "--id-prefix", "thr-",
                                     "--messages", "0", "--rate", "200", "--size", "200",
                                     "--duration", "4"]))
        check(wait_for(lambda: devices(d)["thr-0000"]["state"] == "quarantined", timeout=15),
              "a chatty device in group 'throttled' is held back by rule chatty")
        sims[-1].stop()
        check(wait_for(lambda: devices(d)["thr-0000"]["state"] == "active", timeout=10),
              "... and released when its Hold= is over")
        check(any(r["event"] == "device.state" and r["subject"] == "thr-0000" and
                  r["details"].get("to") == "active" for r in audit(d)),
              "the release is audited")

        # --- disconnect / rotate-session --------------------------------------------------------
        hs0 = metrics(d)["good-0001"]["handshakes"]
        r = d.ctl("device", "disconnect", "good-0001", "--reason", "test")
        check(r.returncode == 0, "`device disconnect` of a connected device")
        check(any(x["event"] == "device.disconnect" and x["subject"] == "good-0001" and
                  x["actor"].startswith("cli:") for x in audit(d)),
              "disconnect audited with the CLI actor")
        r = d.ctl("device", "rotate-session", "good-0002")
        check(r.returncode == 0 and any(x["event"] == "device.rotate_session" for x in audit(d)),
              "`device rotate-session` audited")
        r = d.ctl("device", "disconnect", "flood-0000")
        check(r.returncode != 0 and "not connected" in r.stderr,
              "disconnecting a device that is not connected fails with a reason")
        check(wait_for(lambda: devices(d)["good-0001"]["connected"] and
                       metrics(d)["good-0001"]["handshakes"] > hs0, timeout=15),
              "the disconnected device handshakes again")

        # --- baseline: findings, accept, drift ------------------------------------------------
        r = d.ctl("audit", "config", json_out=True)
        rep = json.loads(r.stdout)
        check(rep["baseline"] is None, "no baseline accepted yet")
        checks = {x["check"] for x in rep["findings"]}
        check(not checks & {"key.readable_by_others", "perm.world_writable", "rules.disabled"},
              f"a clean setup has none of the planted problems ({sorted(checks)})")
        r = d.ctl("audit", "baseline", "accept")
        check(r.returncode == 0, "`audit baseline accept`")
        check(any(x["event"] == "audit.baseline_accept" for x in audit(d)), "acceptance audited")
        r = d.ctl("audit", "config")
        check(r.returncode == 0 and "no drift" in r.stdout,
              f"right after accepting: no drift ({r.stdout.strip()[-60:]})")

        key = tmp.join("state", "link.key")
        os.chmod(key, 0o644)
        os.chmod(tmp.join("state"), 0o777)
        with open(os.path.join(devdir, "more.conf"), "w") as f:
            x = sim_keys(1, "late", "late-")[0]
            f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n")
        d.write_config(config.replace("MetricsInterval=200ms", "MetricsInterval=200ms\nRules=no")
                       + "\n[OTA]\nAllowUnsigned=yes\n")
        r = d.ctl("reload")
        check(r.returncode == 0, "reload with Rules=no, unsigned OTA allowed and a new device")
        r = d.ctl("audit", "config", json_out=True)
        rep = json.loads(r.stdout)
        by = {x["check"]: x for x in rep["findings"]}
        check(r.returncode == 1, "`audit config` exits 1 with serious findings or drift")
        check(by.get("key.readable_by_others", {}).get("severity") == "critical" and
              key in by["key.readable_by_others"]["subject"],
              "finding: the link key is readable by others (critical)")
        check(by.get("perm.world_writable", {}).get("severity") == "critical",
              "finding: the state directory is world-writable (critical)")
        check("rules.disabled" in by, "finding: rules disabled")
        check(by.get("ota.unsigned_allowed", {}).get("severity") == "high",
              "finding: unsigned OTA allowed (high)")
        items = {x["item"] for x in rep["drift"]}
        check({"config", "devices", f"file:{key}"} <= items,
              f"drift: configuration, enrolled devices and the key file's mode ({items})")
        drift = [x for x in audit(d) if x["event"] == "config.drift"]
        check(len(drift) == 1 and drift[0]["details"]["check"] == "reload",
              "config.drift audited on reload")
        check(d.ctl_json("rules")["evaluating"] is False, "reload turned rule evaluation off")
        r = d.ctl("audit", "config")
        check(r.returncode == 1 and "drift" in r.stdout and "critical" in r.stdout and
              "high severity" in r.stderr, "human output lists findings and drift")
        os.chmod(key, 0o600)
        os.chmod(tmp.join("state"), 0o750)

        # Shutdown: clean, no handles left open.
        for s in sims:
            s.stop()
        sims = []
        rc = d.stop()
        check(rc == 0, f"daemon exits 0 (no leaked handles) ({rc})")
        check_no_sanitizer_reports(d)
        # Drift is reported again at the next start (new state: the check runs at once).
        d2 = Daemon(tmp, config).start()
        d = d2
        check(any(x["event"] == "config.drift" and x["details"]["check"] == "start"
                  for x in audit(d)), "drift audited at start")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
            if os.environ.get("KEEP_LOG"):
                print(d.read_log())
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
