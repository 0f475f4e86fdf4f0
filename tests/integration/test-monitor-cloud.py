# SPDX-License-Identifier: Apache-2.0
"""Monitoring against a real Mosquitto with mutual TLS (broker.py): the Device Defender report
arrives on $aws/things/THING/defender/metrics/json in the documented format and its
accepted/rejected replies are counted; a rule's alert is published on AlertTopic; remediation
commands from the cloud are applied only when CloudCommands= allows them, audited with actor
"cloud" either way, and answered on RemediationTopic/result; every audit record is exported
through the outbox with its chain hash, and the cloud side recomputes the chain with no gap —
also across a broker outage; retention prunes with a checkpoint and `audit verify` still passes,
the checkpoint itself being exported."""

import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       sim_keys, wait_for)

try:
    import paho.mqtt.client  # noqa: F401
    from broker import Broker, Subscriber
except ImportError as e:
    print(f"cannot run the cloud monitoring test: {e}")
    sys.exit(1 if os.environ.get("CI") else 77)

GW = "it-gw"
DEFENDER = f"$aws/things/{GW}/defender/metrics/json"

RULES = """[Rule]
Name=msg-flood
Metric=messages
Window=2s
Threshold=300
Action=quarantine alert
Match=flood-*
"""


def chain_hash(prev, r):
    """docs/audit.md: the chain hash of one record."""
    h = hashlib.sha256()
    h.update(b"mcugw-audit-v1")
    h.update(prev)
    h.update(r["seq"].to_bytes(8, "big"))
    h.update(r["ts_us"].to_bytes(8, "big", signed=True))
    for k in ("actor", "event", "subject", "details"):
        b = r[k].encode()
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()


def exported(sub):
    """Audit records the cloud received, by seq (duplicates allowed: at-least-once)."""
    out = {}
    for topic, payload, _, _ in sub.snapshot():
        if not topic.endswith("/batch"):
            continue
        env = json.loads(payload)
        for m in env["msgs"]:
            if m["d"] == "@audit":
                r = json.loads(base64.b64decode(m["p"]))
                out[r["seq"]] = r
    return out


def check_chain(recs, first, last):
    """Every record first..last present, each hash recomputed and linked to the previous."""
    prev = None
    for seq in range(first, last + 1):
        r = recs.get(seq)
        if r is None:
            return f"record {seq} missing"
        if prev is not None and r["prev"] != prev:
            return f"record {seq}: prev does not match record {seq - 1}"
        if chain_hash(bytes.fromhex(r["prev"]), r).hex() != r["hash"]:
            return f"record {seq}: hash does not match its content"
        prev = r["hash"]
    return None


def msgs_on(sub, topic):
    return [json.loads(p) for t, p, _, _ in sub.snapshot() if t == topic]


def main():
    tmp = TempDir("mcugw-moncloud-")
    broker = d = sub = None
    sims = []
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client(GW)
        sub = Subscriber(broker, [DEFENDER, f"mcugw/{GW}/batch", f"mcugw/{GW}/alerts",
                                  f"mcugw/{GW}/remediate/result"])

        devdir = tmp.join("devices.d")
        rules = tmp.join("rules.d")
        os.makedirs(devdir)
        os.makedirs(rules)
        with open(os.path.join(rules, "r.conf"), "w") as f:
            f.write(RULES)
        good = sim_keys(2, "good", "good-")
        flood = sim_keys(1, "flood", "flood-")
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for x in good + flood:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n\n")
        link_sock = tmp.join("run", "link.sock")
        extra = f"""
[Link]
ListenStream=unix:{link_sock}

[Relay]
BatchWindow=20ms

[Audit]
Export=yes

[Monitor]
RulesDirectory={rules}
MetricsInterval=200ms
CloudCommands=quarantine
CloudCommands=release
"""
        config = (base_config(tmp).replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
                  + broker.mqtt_config(*cert) + extra)
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected",
                       timeout=15), "the gateway's MQTT session is up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}"]
        sims.append(Sim(tmp, "good", [*base, "--count", "2", "--seed", "good", "--id-prefix",
                                      "good-", "--messages", "0", "--rate", "10"]))
        check(wait_for(lambda: all(x["connected"] for x in d.ctl_json("devices")
                                   if x["id"].startswith("good-")), timeout=20),
              "devices connected")

        # --- Device Defender -----------------------------------------------------------------
        r = d.ctl("defender", "send")
        check(r.returncode == 0, f"`mcugwctl defender send` ({r.stderr.strip()})")
        reps = wait_for(lambda: msgs_on(sub, DEFENDER), timeout=10)
        check(bool(reps), f"the report arrives on {DEFENDER}")
        rep = reps[0] if reps else {}
        hdr = rep.get("header", {})
        met = rep.get("metrics", {})
        cm = rep.get("custom_metrics", {})
        check(isinstance(hdr.get("report_id"), int) and hdr.get("version") == "1.0",
              "header: report_id and version 1.0")
        check({"listening_tcp_ports", "network_stats", "tcp_connections"} <= set(met) and
              "ports" in met["listening_tcp_ports"] and
              "established_connections" in met["tcp_connections"] and
              {"bytes_in", "bytes_out", "packets_in", "packets_out"} <= set(met["network_stats"]),
              "metrics: listening_tcp_ports, network_stats, tcp_connections")
        check(any(c["local_port"] and c["remote_addr"].endswith(f":{broker.port}")
                  for c in met.get("tcp_connections", {}).get("established_connections", {})
                  .get("connections", [])),
              "the connection to the broker is among the established connections")
        check(cm.get("mcugw_devices", [{}])[0].get("number") == 3 and
              set(cm.get("mcugw_device_ids", [{}])[0].get("string_list", [])) ==
              {"good-0000", "good-0001", "flood-0000"} and
              "number_list" in cm.get("mcugw_device_messages", [{}])[0],
              "custom_metrics: gateway figures and per-device lists")
        rid = hdr.get("report_id")
        sub.publish(DEFENDER + "/accepted",
                    json.dumps({"thingName": GW, "reportId": rid, "status": "ACCEPTED"}))
        check(wait_for(lambda: d.ctl_json("defender")["accepted"] == 1, timeout=5),
              "an accepted reply is counted")
        sub.publish(DEFENDER + "/rejected",
                    json.dumps({"thingName": GW, "reportId": rid, "status": "REJECTED",
                                "statusDetails": {"ErrorCode": "THROTTLED",
                                                  "ErrorMessage": "too many reports"}}))
        check(wait_for(lambda: d.ctl_json("defender")["rejected"] == 1, timeout=5),
              "a rejected reply is counted")
        check("THROTTLED" in d.ctl_json("defender")["last_rejection"] and
              any(x["event"] == "defender.rejected" for x in
                  d.ctl_json("audit", "tail", "-n", "200")),
              "the rejection reason is kept and audited")

        # --- alert from a rule ---------------------------------------------------------------
        sims.append(Sim(tmp, "flood", [*base, "--seed", "flood", "--id-prefix", "flood-",
                                       "--messages", "0", "--rate", "1000", "--duration", "20"]))
        alerts = wait_for(lambda: msgs_on(sub, f"mcugw/{GW}/alerts"), timeout=15)
        check(bool(alerts) and alerts[0]["device"] == "flood-0000" and
              alerts[0]["rule"] == "msg-flood" and alerts[0]["value"] >= 300,
              f"the rule's alert is published on AlertTopic ({alerts[:1]})")
        check(any(x["event"] == "rule.fired" and "alert" in x["details"]["taken"]
                  for x in d.ctl_json("audit", "tail", "-n", "300")),
              "rule.fired audits the published alert")
        sims[-1].stop()

        # --- cloud remediation -----------------------------------------------------------------
        sub.publish(f"mcugw/{GW}/remediate",
                    json.dumps({"command": "quarantine", "device": "good-0000", "id": "r1",
                                "reason": "SOC ticket 42"}))
        check(wait_for(lambda: {x["id"]: x for x in d.ctl_json("devices")}["good-0000"]["state"]
                       == "quarantined", timeout=10),
              "an allowed cloud command quarantines the device")
        res = wait_for(lambda: [m for m in msgs_on(sub, f"mcugw/{GW}/remediate/result")
                                if m.get("id") == "r1"], timeout=5)
        check(bool(res) and res[0]["status"] == "done", f"the result is published ({res})")
        recs = d.ctl_json("audit", "tail", "-n", "300")
        check(any(x["event"] == "remedy.cloud" and x["actor"] == "cloud" and
                  x["details"]["outcome"] == "done" for x in recs) and
              any(x["event"] == "device.state" and x["actor"] == "cloud" and
                  x["subject"] == "good-0000" for x in recs),
              "audited with origin cloud")
        sub.publish(f"mcugw/{GW}/remediate",
                    json.dumps({"command": "revoke", "device": "good-0001", "id": "r2"}))
        res = wait_for(lambda: [m for m in msgs_on(sub, f"mcugw/{GW}/remediate/result")
                                if m.get("id") == "r2"], timeout=5)
        check(bool(res) and res[0]["status"] == "failed" and "not allowed" in res[0]["error"],
              f"a command not in CloudCommands= is refused ({res})")
        check({x["id"]: x for x in d.ctl_json("devices")}["good-0001"]["state"] == "active" and
              any(x["event"] == "remedy.cloud" and x["details"].get("outcome") == "denied"
                  for x in d.ctl_json("audit", "tail", "-n", "300")),
              "... the device is untouched and the refusal audited")
        sub.publish(f"mcugw/{GW}/remediate", b"{not json")
        sub.publish(f"mcugw/{GW}/remediate",
                    json.dumps({"command": "release", "device": "good-0000", "id": "r3"}))
        check(wait_for(lambda: {x["id"]: x for x in d.ctl_json("devices")}["good-0000"]["state"]
                       == "active", timeout=10),
              "release from the cloud (after a malformed message, which is ignored)")

        # --- audit export ------------------------------------------------------------------------
        head = d.ctl_json("status")["audit"]["head_seq"]
        check(wait_for(lambda: max(exported(sub), default=0) >= head, timeout=15),
              f"every audit record up to {head} reaches the broker")
        recs = exported(sub)
        err = check_chain(recs, min(recs), max(recs))
        check(err is None and min(recs) == 1,
              f"the cloud recomputes the chain from record 1 with no gap ({err})")

        # Outage: records written while the broker is down arrive afterwards, no gap.
        broker.stop()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] != "connected",
                       timeout=10), "broker down")
        for i in range(5):
            d.ctl("device", "quarantine", "good-0001", "--reason", f"outage {i}")
            d.ctl("device", "restore", "good-0001")
        during = d.ctl_json("status")["audit"]["head_seq"]
        check(wait_for(lambda: d.ctl_json("status")["audit_export"]["cursor"] >= during,
                       timeout=5),
              "records written during the outage are handed to the outbox")
        broker.start()
        check(wait_for(lambda: max(exported(sub), default=0) >= during, timeout=30),
              "after the outage the backlog is delivered")
        recs = exported(sub)
        err = check_chain(recs, 1, during)
        check(err is None, f"no gap in the chain across the outage ({err})")

        # --- retention with a checkpoint ----------------------------------------------------------
        d.write_config(config.replace("Export=yes", "Export=yes\nMaxRecords=20"))
        check(d.ctl("reload").returncode == 0, "reload with MaxRecords=20")
        check(wait_for(lambda: d.ctl_json("status")["audit_export"]["first_seq"] > 1,
                       timeout=10), "old records pruned")
        v = d.ctl("audit", "verify")
        check(v.returncode == 0, f"`audit verify` passes after pruning ({v.stdout.strip()})")
        cps = [x for x in d.ctl_json("audit", "tail", "-n", "100")
               if x["event"] == "audit.checkpoint"]
        check(len(cps) >= 1 and cps[0]["details"]["pruned_through"] >= 1 and
              len(cps[0]["details"]["prefix_hash"]) == 64,
              "an audit.checkpoint record carries the pruned prefix's hash")
        last_cp = cps[-1]["seq"] if cps else 0
        check(wait_for(lambda: last_cp in exported(sub), timeout=10),
              "the checkpoint is exported too")
        recs = exported(sub)
        cp = recs.get(last_cp, {})
        pt = json.loads(cp.get("details", "{}")).get("pruned_through", 0)
        check(pt in recs and recs[pt]["hash"] == json.loads(cp["details"])["prefix_hash"],
              "the cloud matches the checkpoint's prefix hash with the record it exported")
        err = check_chain(recs, 1, max(recs))
        check(err is None, f"the exported chain is still complete ({err})")

        for s in sims:
            s.stop()
        sims = []
        rc = d.stop()
        check(rc == 0, f"daemon exits 0 ({rc})")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
            if os.environ.get("KEEP_LOG"):
                print(d.read_log())
        if sub:
            sub.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
