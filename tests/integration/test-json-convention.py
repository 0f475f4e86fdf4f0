# SPDX-License-Identifier: Apache-2.0
"""The control protocol's conventions (docs/control-protocol.md, "Conventions"), checked on the
replies of every read command and on the events, from a daemon with devices (one quarantined),
a rule, OTA jobs, an accepted baseline, a cloud session with Defender and audit export: every
NAME_us instant has its ISO 8601 twin NAME that parses and agrees to the millisecond (null for
never); no member carries a duration in another unit than _ms (rates are _per_s); groups and
actions are arrays. What the daemon passes on from elsewhere (the Defender report AWS got, a
device's telemetry payload) is not walked."""

import datetime
import json
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (OTA_SIGN, Daemon, Sim, TempDir, base_config, check,  # noqa: E402
                       check_no_sanitizer_reports, finish, raw_request, run, sim_keys, skip,
                       wait_for)

try:
    import paho.mqtt.client  # noqa: F401
    from broker import Broker
except ImportError as e:
    skip(f"cannot run the convention test without a broker: {e}")

GW = "it-gw"
# A duration in another unit than milliseconds: _s, _sec, _min, _hours, _days (as a word of the
# name, so days_left too), a bare unit name. Rates (_per_s) are not durations.
OTHER_UNIT = re.compile(r"(^|_)(s|sec|secs|seconds|min|mins|minutes|h|hours|day|days|ns|us)"
                        r"(_|$)")
LISTS = {"groups", "actions"}


def iso_ms(us):
    t = datetime.datetime.fromtimestamp(us // 1000000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{us // 1000 % 1000:03d}Z"


class Walker:
    def __init__(self):
        self.problems = []
        self.instants = 0
        self.durations = 0
        self.lists = 0

    def bad(self, where, what):
        self.problems.append(f"{where}: {what}")

    def walk(self, v, where, skip=()):
        if isinstance(v, list):
            for i, x in enumerate(v):
                self.walk(x, f"{where}[{i}]", skip)
            return
        if not isinstance(v, dict):
            return
        for k, x in v.items():
            at = f"{where}.{k}"
            if at in skip:
                continue
            if k.endswith("_us"):
                self.instant(v, k, at)
            elif k.endswith("_ms"):
                self.durations += 1
                if not isinstance(x, int) or isinstance(x, bool):
                    self.bad(at, f"a duration that is not an integer: {x!r}")
            elif not k.endswith("_per_s") and OTHER_UNIT.search(k):
                self.bad(at, "a duration (or time) in another unit than _ms or _us")
            if k in LISTS:
                self.lists += 1
                if not isinstance(x, list) or not all(isinstance(e, str) for e in x):
                    self.bad(at, f"a list that is not an array of strings: {x!r}")
            self.walk(x, at, skip)

    def instant(self, obj, k, at):
        us, name = obj[k], k[:-3]
        self.instants += 1
        if name not in obj:
            self.bad(at, f"no ISO 8601 twin '{name}'")
            return
        iso = obj[name]
        if us is None or us == 0:
            if iso is not None:
                self.bad(at, f"never ({us}) but {name} = {iso!r}")
            return
        if not isinstance(us, int) or isinstance(us, bool):
            self.bad(at, f"an instant that is not an integer: {us!r}")
            return
        if not isinstance(iso, str) or iso != iso_ms(us):
            self.bad(at, f"{name} = {iso!r}, expected {iso_ms(us)!r} for {us}")
            return
        parsed = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        if parsed.utcoffset() != datetime.timedelta(0) or \
                abs(parsed.timestamp() * 1e6 - us) >= 1000:
            self.bad(at, f"{name} = {iso!r} does not agree with {us} to the millisecond")


def follow_one_audit_event(sockpath, trigger):
    """An `audit` event as a follower gets it: audit.tail with follow, then trigger()."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sockpath)
    s.sendall(b'{"cmd":"audit.tail","args":{"n":0,"follow":true}}\n')
    f = s.makefile("rb")
    reply = json.loads(f.readline())
    trigger()
    event = json.loads(f.readline())
    s.close()
    return reply, event


def main():
    tmp = TempDir("mcugw-conv-")
    broker = d = sim = None
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client(GW)
        keys = tmp.join("keys")
        run(OTA_SIGN, "keygen", keys)
        run(OTA_SIGN, "keygen", tmp.join("evil"))
        devdir, rules = tmp.join("devices.d"), tmp.join("rules.d")
        os.makedirs(devdir)
        os.makedirs(rules)
        with open(os.path.join(rules, "r.conf"), "w") as f:
            f.write("[Rule]\nName=flood\nMetric=messages\nWindow=2s\nThreshold=100000\n"
                    "Action=quarantine alert\n\n[Rule]\nName=quiet\nMetric=silence\n"
                    "Timeout=5min\nAction=alert\n")
        devs = sim_keys(3, "conv", "conv-")
        with open(os.path.join(devdir, "conv.conf"), "w") as f:
            for x in devs:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n"
                        f"Groups=north,pumps\n\n")
        link_sock = tmp.join("run", "link.sock")
        extra = f"""
[Link]
ListenStream=unix:{link_sock}

[Audit]
Export=yes
MaxAge=30d

[Monitor]
RulesDirectory={rules}
MetricsInterval=200ms
DefenderInterval=5min

[OTA]
CodeSigningCertificate={os.path.join(keys, 'signer.crt')}
"""
        config = (base_config(tmp).replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
                  + broker.mqtt_config(*cert) + extra)
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 15),
              "the gateway's MQTT session is up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        sim = Sim(tmp, "s", ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}",
                             "--seed", "conv", "--id-prefix", "conv-", "--count", "3",
                             "--messages", "0", "--rate", "5"])
        check(wait_for(lambda: all(x["connected"] for x in d.ctl_json("devices")), 20),
              "the simulated devices are connected")
        check(wait_for(lambda: all(x["last_seen_us"] > 0 for x in d.ctl_json("devices")), 10),
              "the devices have been seen")

        # Something of every kind: a state change, a baseline, a Defender report, OTA jobs (one
        # refused, one under way), telemetry.
        r = d.ctl("device", "quarantine", devs[2]["id"], "--reason", "convention test")
        check(r.returncode == 0, f"device quarantine ({r.stderr.strip()})")
        check(d.ctl("audit", "baseline", "accept").returncode == 0, "baseline accepted")
        check(d.ctl("defender", "send").returncode == 0, "a Defender report sent")
        for name, key in (("good", "signer.key"), ("evil", None)):
            raw, img = tmp.join(name + ".bin"), tmp.join(name + ".img")
            with open(raw, "wb") as f:
                f.write(os.urandom(4096))
            run(OTA_SIGN, "mcuboot", raw, img, "--version", "2.0.0", "--security-counter", "1")
            run(OTA_SIGN, "sign", os.path.join(keys, key) if key else
                os.path.join(tmp.join("evil"), "signer.key"), img)
            d.ctl("ota", "start", img, "--device", devs[0]["id"])
        jobs = d.ctl_json("ota", "list")
        check(len(jobs) == 2, f"two OTA jobs, one refused ({[j.get('state') for j in jobs]})")

        w = Walker()
        replies = {
            "status": d.ctl_json("status"),
            "devices": d.ctl_json("devices"),
            "metrics": d.ctl_json("metrics"),
            "rules": d.ctl_json("rules"),
            "defender": d.ctl_json("defender"),
            "cert": d.ctl_json("cert", "show"),
            "audit.tail": d.ctl_json("audit", "tail", "-n", "1000"),
            "audit.config": d.ctl_json("audit", "config"),
            "audit.verify": d.ctl_json("audit", "verify"),
            "ota.list": jobs,
        }
        for x in devs:
            replies[f"device.show {x['id']}"] = d.ctl_json("device", "show", x["id"])
        for j in jobs:
            replies[f"ota.show {j['id']}"] = d.ctl_json("ota", "show", j["id"])
        r = d.ctl("tail", "--count", "2", json_out=True, timeout=30)
        tails = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        check(r.returncode == 0 and len(tails) == 2, f"telemetry tail ({r.stderr.strip()})")
        for i, t in enumerate(tails):
            w.walk(t, f"telemetry[{i}]", skip={f"telemetry[{i}].payload"})
        reply, event = follow_one_audit_event(
            d.socket, lambda: d.ctl("device", "restore", devs[2]["id"]))
        check(reply.get("ok") is True and event.get("event") == "audit",
              f"an audit follower gets the event ({event})")
        w.walk(event, "audit event")
        for name, v in replies.items():
            w.walk(v, name, skip={"defender.last_report"})

        check(not w.problems, "every reply follows the conventions:\n  " +
              "\n  ".join(w.problems[:40]))
        # The walk saw what it is meant to check (not an empty daemon).
        st, sc = replies["status"], replies[f"device.show {devs[2]['id']}"]["state_change"]
        check(w.instants >= 20 and w.durations >= 5 and w.lists >= 8,
              f"the walk met instants, durations and lists ({w.instants}, {w.durations}, "
              f"{w.lists})")
        base = replies["audit.config"]["baseline"]
        check(all(x[k] == iso_ms(x[k + "_us"]) for x, k in (
                  (sc, "ts"), (jobs[0], "created"), (base, "accepted"), (tails[0], "ts"),
                  (event["data"], "ts"))),
              "state changes, OTA jobs, the baseline, telemetry and audit events carry ISO times")
        check(isinstance(st["uptime_ms"], int) and "uptime_s" not in st and
              st["audit_export"]["max_age_ms"] == 30 * 86400 * 1000 and
              replies["defender"]["interval_ms"] == 300000 and
              replies["cert"]["rotation"]["before_expiry_ms"] >= 0 and
              replies["cert"]["certificate"]["expires_in_ms"] > 0,
              "durations and configuration echoes in milliseconds")
        rules = {x["name"]: x for x in replies["rules"]["rules"]}
        check(rules["flood"]["actions"] == ["alert", "quarantine"] and
              rules["quiet"]["timeout_ms"] == 300000 and
              replies["devices"][0]["groups"] == ["north", "pumps"] and
              replies["metrics"]["devices"][0]["groups"] == ["north", "pumps"],
              "groups and actions as arrays")
        # Requests take a group list either way: as the replies give it, or as one string.
        extra_keys = sim_keys(2, "conv-add", "add-")
        for x, groups in zip(extra_keys, (["lab", "b"], "lab,b")):
            req = {"cmd": "device.add", "args": {"id": x["id"], "public_key": x["public_key"],
                                                 "groups": groups}}
            rep = json.loads(raw_request(d.socket, json.dumps(req).encode() + b"\n"))
            check(rep.get("ok") and rep["data"]["groups"] == ["lab", "b"],
                  f"device.add with groups {groups!r} ({rep})")
        req = {"cmd": "device.add", "args": {"id": "add-bad", "public_key": devs[0]["public_key"],
                                             "groups": ["ok", 5]}}
        rep = json.loads(raw_request(d.socket, json.dumps(req).encode() + b"\n"))
        check(rep.get("ok") is False and rep["error"]["code"] == "EINVAL" and
              rep["error"]["message"].startswith("groups:"),
              f"device.add refuses a group list with a non-string ({rep})")
        out = d.ctl("devices").stdout
        check("north,pumps" in out, "mcugwctl devices still shows the groups as north,pumps")
        out = d.ctl("rules").stdout
        check("alert quarantine" in out, "mcugwctl rules still shows the actions")
        out = d.ctl("cert", "show").stdout
        check(re.search(r"\(\d+ days left\)", out) is not None and
              re.search(r"Not after:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", out) is not None,
              f"mcugwctl cert show: dates and days left ({out.strip()})")
    finally:
        if sim:
            sim.stop()
        if d:
            d.stop()
            check_no_sanitizer_reports(d, tmp)
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
