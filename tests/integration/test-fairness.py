# SPDX-License-Identifier: Apache-2.0
"""One device or one client must not exhaust what the others share. The real daemon, real
simulated devices (mcugw-sim), a real Mosquitto with mutual TLS (MQTT 5) and a paho subscriber:

* connections: one client holding many idle TCP connections is refused beyond
  MaxPendingPerSource=; clients on many addresses filling MaxConnections= make room by having
  their oldest unauthenticated connection closed: an honest device still gets in;
* flapping: two simulators with the same key take the session from each other; the auth.ok and
  link.down records of that device stay within SessionAuditsPerMinute= (link.flapping says the
  rest are counted), and the shipped session-takeover rule fires and quarantines it;
* commands: a burst of 3,000 commands to one device leaves it connected (paced, queue bounded,
  the rest answered "busy"); a command over MaxCommandSize= is answered "too-large"; a 64 MiB
  command never reaches the gateway (MQTT 5 Maximum Packet Size) and its memory stays low;
* the outbox and the publish quota: one device flooding next to three normal ones; the normal
  devices' messages are delivered while the flood waits (counts, not timings), and once the
  outbox is full the flooding device is refused (retry NACKs) while the others are not and lose
  nothing.
"""

import base64
import collections
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, Subscriber, free_port  # noqa: E402
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       check_no_sanitizer_reports, sim_keys, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RULES = os.path.join(HERE, "..", "..", "etc", "mcugw", "rules.d", "10-default.conf")


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def audit(d, n=5000):
    return d.ctl_json("audit", "tail", "-n", str(n))


def link_status(d):
    return d.ctl_json("status")["link"]


def metrics_of(d, dev):
    m = d.ctl_json("metrics", "--device", dev)
    return m["devices"][0] if m.get("devices") else {}


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def idle_connections(src, port, n):
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        out.append(s)
    return out


def test_connections(d, port, base, tmp):
    socks = idle_connections("127.0.0.2", port, 40)
    check(wait_for(lambda: link_status(d)["connections_refused_per_source"] >= 36, timeout=10),
          "one client: connections beyond MaxPendingPerSource=4 refused "
          f"({link_status(d)['connections_refused_per_source']})")
    check(link_status(d)["pending"] <= 4, "no more than 4 of its connections are kept")
    # Eight more clients fill MaxConnections=32 with idle connections.
    for i in range(3, 11):
        socks += idle_connections(f"127.0.0.{i}", port, 4)
    check(wait_for(lambda: link_status(d)["pending"] >= 32, timeout=10),
          f"MaxConnections=32 filled with idle connections ({link_status(d)['pending']})")
    honest = Sim(tmp, "honest", [*base, "--seed", "honest", "--id-prefix", "honest-",
                                 "--messages", "3", "--rate", "10"])
    r = honest.wait(20)
    check(r.get("authenticated") == 1 and r.get("acked") == 3,
          f"an honest device still connects and delivers ({r})")
    check(link_status(d)["connections_evicted"] >= 1,
          "the oldest unauthenticated connection was closed to make room "
          f"({link_status(d)['connections_evicted']})")
    for s in socks:
        s.close()
    check(wait_for(lambda: link_status(d)["pending"] == 0, timeout=10),
          "the idle connections are gone")


def test_flapping(d, base, tmp):
    clones = [Sim(tmp, f"clone{i}", [*base, "--seed", "clone", "--id-prefix", "clone-",
                                     "--messages", "0", "--rate", "5", "--duration", "6",
                                     "--reconnect-delay", "20"]) for i in (1, 2)]
    check(wait_for(lambda: devices(d)["clone-0000"]["state"] == "quarantined", timeout=15),
          "two devices sharing a key: the session-takeover rule quarantines it")
    res = [c.wait(20) for c in clones]
    st = devices(d)["clone-0000"]["link_stats"]
    check(st.get("takeovers", 0) >= 10, f"takeovers counted ({st.get('takeovers')})")
    recs = [x for x in audit(d) if x["subject"] == "clone-0000"]
    sessions = [x for x in recs if x["event"] in ("auth.ok", "link.down")]
    check(1 <= len(sessions) <= 5,
          f"auth.ok/link.down records within SessionAuditsPerMinute=5 ({len(sessions)} for "
          f"{st.get('handshakes')} sessions)")
    flap = [x for x in recs if x["event"] == "link.flapping"]
    check(len(flap) == 1 and flap[0]["details"]["state"] == "suppressing",
          "one link.flapping record says the rest are counted")
    fired = [x for x in recs if x["event"] == "rule.fired"]
    check(any(x["details"]["rule"] == "session-takeover" and
              x["details"]["metric"] == "takeovers" for x in fired),
          "rule.fired: session-takeover on the takeovers metric")
    check(link_status(d)["session_audits_suppressed"] >= 1, "suppressed session records counted")
    check(sum(r.get("handshakes", 0) for r in res) >= 10,
          f"the clones did take the session from each other "
          f"({[r.get('handshakes') for r in res]} handshakes)")


def results(sub, dev):
    return [json.loads(p) for t, p, _, _ in sub.snapshot() if t == f"mcugw/it-gw/cmd-result/{dev}"]


def test_commands(d, base, tmp, broker, sub):
    # Long enough for the results of the burst at PublishesPerSecond= (stopped below).
    dev = Sim(tmp, "cmd", [*base, "--seed", "cmd", "--id-prefix", "cmd-", "--messages", "0",
                           "--rate", "2", "--duration", "90"])
    check(wait_for(lambda: devices(d).get("cmd-0000", {}).get("connected"), timeout=15),
          "command device connected")
    infos = [sub.c.publish("mcugw/it-gw/cmd/cmd-0000", b"c%05d" % i, qos=1) for i in range(3000)]
    for i in infos:
        i.wait_for_publish()
    sub.publish("mcugw/it-gw/cmd/cmd-0000", b"x" * 2000)
    check(wait_for(lambda: len(results(sub, "cmd-0000")) >= 3001, timeout=60),
          f"every command got a result ({len(results(sub, 'cmd-0000'))} of 3001)")
    time.sleep(1.0)
    res = results(sub, "cmd-0000")
    # 64 MiB, then a small one: the broker delivers them in order, so when the small one's
    # result is here the big one was delivered or dropped.
    hwm_before = vm_hwm_kib(d.proc.pid)
    sub.publish("mcugw/it-gw/cmd/cmd-0000", b"y" * (64 << 20))
    sub.publish("mcugw/it-gw/cmd/cmd-0000", b"sentinel")
    check(wait_for(lambda: len(results(sub, "cmd-0000")) >= 3002, timeout=60),
          "a command after the 64 MiB one got its result")
    by = collections.Counter(x["result"] for x in res)
    echoed = [x for x in res if x["result"] == "ok"]
    check(by["ok"] >= 20 and by["busy"] >= 1 and by["ok"] + by["busy"] == 3000,
          f"burst: paced and queued up to the limit, the rest answered busy ({dict(by)})")
    check(all(base64.b64decode(x["p"]).startswith(b"c") for x in echoed),
          "the commands that went through reached the device (echoed)")
    check(by["too-large"] == 1, "the command over MaxCommandSize= answered too-large")
    ds = devices(d)["cmd-0000"]
    check(ds["connected"] and ds["link_stats"]["tx_dropped"] == 0,
          "the device stayed connected, nothing dropped on its link")
    mq = d.ctl_json("status")["mqtt"]
    check(mq["commands"] == 3002 and mq["commands_oversize"] == 1,
          f"the 64 MiB command never reached the gateway ({mq['commands']} commands seen)")
    hwm = vm_hwm_kib(d.proc.pid)
    check(hwm - hwm_before < 32 * 1024,
          f"peak memory stays low: VmHWM {hwm} KiB (before the 64 MiB command: {hwm_before} KiB)")
    r = dev.stop()
    by["ok"] += sum(1 for x in results(sub, "cmd-0000")[3001:] if x["result"] == "ok")
    check(r.get("disconnects") == 0 and r.get("commands") == by["ok"],
          f"the device was never cut off and saw exactly the accepted commands ({r})")
    ev = [x for x in audit(d) if x["subject"] == "cmd-0000"]
    check(any(x["event"] == "cmd.rejected" and x["details"]["reason"] == "too-large"
              for x in ev), "the oversize command audited as cmd.rejected (too-large)")


def delivered(sub):
    c = collections.Counter()
    for t, _, _, _ in sub.snapshot():
        parts = t.split("/")
        if len(parts) >= 5 and parts[2] == "dev":
            c[parts[3]] += 1
    return c


def test_fairness(d, base, tmp, tsub):
    normal = Sim(tmp, "normal", [*base, "--count", "3", "--seed", "fair", "--id-prefix", "fair-",
                                 "--messages", "0", "--rate", "2", "--duration", "12"])
    flood = Sim(tmp, "flood", [*base, "--seed", "flood", "--id-prefix", "flood-", "--messages",
                               "0", "--rate", "400", "--size", "900", "--window", "64",
                               "--duration", "12"])
    rn, rf = normal.wait(30), flood.wait(30)
    time.sleep(2.0)  # the last messages of the normal devices: a round of the queue
    got = delivered(tsub)
    normal_ids = ["fair-0000", "fair-0001", "fair-0002"]
    m = {i: metrics_of(d, i) for i in normal_ids + ["flood-0000"]}
    print(f"# sent/acked: normal {rn.get('sent')}/{rn.get('acked')}, "
          f"flood {rf.get('sent')}/{rf.get('acked')}/{rf.get('nacked')} nacked; "
          f"delivered {dict(got)}", flush=True)
    acked_each = rn.get("acked", 0) / 3
    check(acked_each >= 15 and all(got[i] >= 0.9 * acked_each for i in normal_ids),
          f"normal devices delivered next to the flood ({[got[i] for i in normal_ids]} of "
          f"~{acked_each:.0f} each)")
    check(rf.get("acked", 0) > got["flood-0000"] + 100,
          f"the flooding device waits behind its own backlog ({got['flood-0000']} of "
          f"{rf.get('acked')} delivered)")
    check(m["flood-0000"]["outbox_rows"] > 100 and
          all(m[i]["outbox_rows"] <= 3 for i in normal_ids),
          f"metrics: the backlog is the flooding device's "
          f"({[m[i]['outbox_rows'] for i in normal_ids + ['flood-0000']]})")
    check(0 < rf.get("nacked", 0) <= m["flood-0000"]["outbox_refused"],
          f"outbox full: the flooding device over its share is refused "
          f"({m['flood-0000']['outbox_refused']} refused, {rf.get('nacked')} NACKs seen)")
    check(rn.get("nacked") == 0 and all(m[i]["outbox_refused"] == 0 and
                                        m[i]["outbox_dropped"] == 0 for i in normal_ids),
          "the normal devices were never refused and lost nothing")
    check(any(x["event"] == "outbox.refused" and x["subject"] == "flood-0000"
              for x in audit(d)), "refusals audited (outbox.refused)")


def main():
    tmp = TempDir("mcugw-fair-")
    broker = d = sub = tsub = None
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        rules = tmp.join("rules.d")
        os.makedirs(rules)
        # The shipped rules, session-takeover among them; message-flood would throttle the
        # flooding device of test_fairness, whose point is to keep flooding.
        with open(DEFAULT_RULES) as f:
            text = f.read()
        assert "Threshold=2000\n" in text
        with open(os.path.join(rules, "10-default.conf"), "w") as f:
            f.write(text.replace("Threshold=2000\n", "Threshold=1000000\n"))
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for keys in (sim_keys(1, "honest", "honest-"), sim_keys(1, "clone", "clone-"),
                         sim_keys(1, "cmd", "cmd-"), sim_keys(3, "fair", "fair-"),
                         sim_keys(1, "flood", "flood-")):
                for x in keys:
                    f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n"
                            "State=active\n\n")
        port = free_port()
        config = base_config(tmp, f"""
[Link]
ListenStream=tcp:127.0.0.1:{port}
MaxConnections=32
MaxPendingPerSource=4
HandshakeTimeout=60s
SessionAuditsPerMinute=5
CommandsPerSecond=20
CommandQueue=16

[Relay]
Batching=no
# Command results are paced like every publish: the 3,001 of the burst take 30 s at 100/s (150 s
# at 20/s); the flood below is still four times the quota.
PublishesPerSecond=100

[Outbox]
MaxBytes=1M

[Monitor]
RulesDirectory={rules}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + \
            broker.mqtt_config(*cert, "ProtocolVersion=5")
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("state") ==
                       "connected", timeout=15), "MQTT 5 session up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}"]
        sub = Subscriber(broker, ["mcugw/it-gw/cmd-result/+"], name="sub-cmd", clean=True)
        tsub = Subscriber(broker, ["mcugw/it-gw/dev/+/telemetry/+"], name="sub-tlm",
                          clean=True)

        test_connections(d, port, base, tmp)
        test_flapping(d, base, tmp)
        test_commands(d, base, tmp, broker, sub)
        test_fairness(d, base, tmp, tsub)

        check(d.ctl("audit", "verify").returncode == 0, "audit chain intact")
        rc = d.stop()
        check(rc == 0, "daemon exits 0")
        log = d.read_log()
        check("handles left open" not in log, "no libuv handle left open at exit")
        check_no_sanitizer_reports(d, tmp)
    finally:
        if d:
            d.stop()
            if "--verbose" in sys.argv or os.environ.get("MCUGW_TEST_VERBOSE"):
                print(d.read_log())
        for s in (sub, tsub):
            if s:
                s.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
