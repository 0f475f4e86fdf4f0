# SPDX-License-Identifier: Apache-2.0
"""The relay end to end against a real Mosquitto with mutual TLS (broker.py): telemetry on the
right topics, the batch envelope, one publish per message with Batching=no, the online/offline
status and last will, a client certificate from the wrong CA refused with the reason logged, a
broker outage buffered and replayed in per-device order, kill -9 during a burst losing nothing
that was acked, pacing under the publish quota, commands down and results up (unknown devices
rejected and audited), key file permissions, topic template errors in --check-config.

The gateway is driven by relay-driver (the whole gateway with synthetic devices submitted
through relay_submit, as the link does) so these tests stand on their own."""

import base64
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, Subscriber  # noqa: E402
from mcugwtest import (MCUGWD, Daemon, TempDir, base_config, check, finish,  # noqa: E402
                       wait_for)

DRIVER = os.environ.get("RELAY_DRIVER", "build/tests/integration/relay-driver")


class Driver(Daemon):
    """relay-driver with the Daemon helpers (control socket, log, stop)."""

    def __init__(self, tmp, config_text, args, name="mcugw.conf"):
        super().__init__(tmp, config_text, name)
        self.args = args
        self.out_path = tmp.join("driver.out")

    def start(self, wait_ctl=True):
        self.log = open(self.log_path, "ab")
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen([DRIVER, "--config", self.config] + self.args,
                                     stdout=self.out, stderr=self.log)
        if wait_ctl:
            ok = wait_for(lambda: self.ctl("status").returncode == 0 or
                          self.proc.poll() is not None, timeout=15)
            if self.proc.poll() is not None or not ok:
                raise RuntimeError(f"relay-driver did not start:\n{self.read_log()}")
        return self

    def stop(self, timeout=15):
        rc = super().stop(timeout)
        self.out.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.out.close()

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def status(self):
        return self.ctl_json("status")


def gw_config(tmp, broker, cert, extra=""):
    return base_config(tmp) + broker.mqtt_config(*cert) + extra


def decode_batches(msgs, topic="mcugw/it-gw/batch"):
    """[(device, seq, payload bytes)] from every envelope, in arrival order."""
    out = []
    for t, p, _, _ in msgs:
        if t != topic:
            continue
        env = json.loads(p)
        assert env["v"] == 1 and env["gw"] == "it-gw" and env["n"] == len(env["msgs"])
        for m in env["msgs"]:
            out.append((m["d"], m["q"], base64.b64decode(m["p"]), m["s"], m["t"]))
    return out


def per_device_in_order(entries):
    """Every device's sequence numbers, first arrivals only, must rise."""
    last = {}
    seen = set()
    for d, q, *_ in entries:
        if (d, q) in seen:
            continue  # a duplicate of the in-flight window
        seen.add((d, q))
        if last.get(d, 0) >= q:
            return False
        last[d] = q
    return True


def test_telemetry(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/#"], name="sub-telemetry", clean=True)
    d = Driver(tmp, gw_config(tmp, broker, cert),
               ["--devices", "3", "--count", "40", "--rate", "300", "--size", "20"]).start()
    try:
        wait_for(lambda: d.status().get("mqtt", {}).get("state") == "connected", timeout=10)
        ok = wait_for(lambda: len(decode_batches(sub.snapshot())) >= 120, timeout=20)
        entries = decode_batches(sub.snapshot())
        check(ok, f"120 messages arrived in batch envelopes (got {len(entries)})")
        check({e[0] for e in entries} == {"d0", "d1", "d2"}, "entries name their devices")
        check(all(e[2].startswith(b"seq=%d;" % e[1]) for e in entries),
              "payloads decode (base64) and match their sequence numbers")
        check(all(e[3] == 1 and e[4] > 1_600_000_000_000 for e in entries),
              "stream id and gateway timestamp present")
        check(per_device_in_order(entries), "per-device order kept")
        batches = [m for m in sub.snapshot() if m[0] == "mcugw/it-gw/batch"]
        check(len(batches) < 60, f"messages were batched ({len(batches)} publishes for 120)")
        st = [m for m in sub.snapshot() if m[0] == "mcugw/it-gw/status"]
        check(st and st[-1][1] == b"online", "status topic says online")
        s = d.status()
        m = s["mqtt"]
        check(m["state"] == "connected" and m["connects"] >= 1, "status --json has the session")
        wait_for(lambda: d.status()["mqtt"]["acked"] >= 120, timeout=5)
        s = d.status()
        check(s["mqtt"]["acked"] >= 120 and s["outbox"]["rows"] == 0,
              "everything acked and deleted from the outbox")
        r = d.ctl("status")
        check(r.returncode == 0 and "MQTT:" in r.stdout and "connected" in r.stdout and
              "Outbox:" in r.stdout, "human status shows session and outbox")
        d.stop()
        time.sleep(0.5)
        st = [m for m in sub.snapshot() if m[0] == "mcugw/it-gw/status"]
        check(st and st[-1][1] == b"offline", "clean stop publishes offline")
        check("handles left open" not in d.read_log(), "no libuv handle left open at exit")
    finally:
        d.stop()
        sub.close()


def test_unbatched_and_will(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/#"], name="sub-unbatched", clean=True)
    extra = "\n[Relay]\nBatching=no\n"
    d = Driver(tmp, gw_config(tmp, broker, cert, extra),
               ["--devices", "2", "--count", "10", "--rate", "100"]).start()
    try:
        ok = wait_for(lambda: len([m for m in sub.snapshot() if "/telemetry/" in m[0]]) >= 20,
                      timeout=15)
        tel = [m for m in sub.snapshot() if "/telemetry/" in m[0]]
        check(ok, f"Batching=no: 20 publishes on per-device topics (got {len(tel)})")
        check({m[0] for m in tel} == {"mcugw/it-gw/dev/d0/telemetry/1",
                                      "mcugw/it-gw/dev/d1/telemetry/1"},
              "per-device topics expanded from the template with the authenticated id")
        check(all(m[1].startswith(b"seq=") for m in tel), "raw payload published")
        # kill -9: the broker publishes the retained last will.
        d.kill9()
        ok = wait_for(lambda: [m for m in sub.snapshot() if m[0] == "mcugw/it-gw/status"]
                      [-1][1] == b"offline", timeout=10)
        check(ok, "last will 'offline' published after kill -9")
    finally:
        if d.proc.poll() is None:
            d.stop()
        sub.close()


def test_bad_cert(tmp, broker):
    rogue = broker.certs.client("rogue-gw", cn="it-gw", ca="rogue-ca")
    d = Driver(tmp, gw_config(tmp, broker, rogue), ["--count", "5", "--rate", "10"]).start()
    try:
        ok = wait_for(lambda: d.status()["mqtt"]["attempts"] >= 3, timeout=15)
        s = d.status()["mqtt"]
        check(ok and s["state"] != "connected" and s["connects"] == 0,
              "client certificate from another CA: never connected, retries")
        log = d.read_log()
        check(re.search(r"unknown ca|certificate", log, re.I) is not None,
              "daemon logs why (OpenSSL alert)")
        check(s["last_error"] != "", f"status shows the last error ({s['last_error'][:60]})")
        check(s["attempts"] <= 4, "reconnect backoff: at most one CONNECT per second")
        check(d.status()["outbox"]["rows"] == 5, "telemetry kept in the outbox meanwhile")
    finally:
        d.stop()


def test_outage(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/it-gw/batch"], name="sub-outage", clean=False)
    d = Driver(tmp, gw_config(tmp, broker, cert, "\n[MQTT]\nKeepAlive=5s\n"),
               ["--devices", "4", "--count", "600", "--rate", "400"]).start()
    try:
        wait_for(lambda: len(decode_batches(sub.snapshot())) > 100, timeout=10)
        broker.stop()
        time.sleep(3)
        s = d.status()
        check(s["mqtt"]["state"] != "connected", "broker down: session lost")
        check(s["outbox"]["rows"] > 500, f"buffered in the outbox ({s['outbox']['rows']} rows)")
        broker.start()
        ok = wait_for(lambda: d.status()["mqtt"]["acked"] >= 2400, timeout=30)
        check(ok, "reconnected and drained the backlog")
        d.stop()
        sent = json.loads(d.output().strip().splitlines()[-1])["durable"]
        # The broker holds the subscriber's queue while it reconnects.
        wait_for(lambda: len({(e[0], e[1]) for e in decode_batches(sub.snapshot())}) >= sent,
                 timeout=20)
        entries = decode_batches(sub.snapshot())
        got = {(e[0], e[1]) for e in entries}
        check(len(got) >= sent, f"all {sent} acked messages arrived after the outage "
                                f"(got {len(got)})")
        check(per_device_in_order(entries), "replayed in per-device order")
        log = d.read_log()
        check("disconnected from" in log, "disconnect logged")
    finally:
        if d.proc.poll() is None:
            d.stop()
        sub.close()


def test_kill9(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/it-gw/batch"], name="sub-kill9", clean=False)
    acked = tmp.join("acked.log")
    conf = gw_config(tmp, broker, cert, "\n[Relay]\nBatchWindow=20ms\n")
    random.seed(os.getpid())
    try:
        for round_ in range(4):
            d = Driver(tmp, conf, ["--devices", "5", "--count", "0", "--rate", "3000",
                                   "--acked-log", acked], name=f"k{round_}.conf").start()
            time.sleep(random.uniform(0.3, 1.5))
            d.kill9()
            if round_ == 1:
                broker.restart()
        # A last clean run drains whatever is left.
        d = Driver(tmp, conf, ["--devices", "5", "--count", "0", "--rate", "1"],
                   name="final.conf").start()
        wait_for(lambda: d.status()["outbox"]["rows"] == 0, timeout=30)
        d.stop()
        with open(acked) as f:
            want = {tuple(line.split()) for line in f if line.strip()}
        wait_for(lambda: want <= {(e[0], str(e[1])) for e in decode_batches(sub.snapshot())},
                 timeout=20)
        got = {(e[0], str(e[1])) for e in decode_batches(sub.snapshot())}
        missing = want - got
        check(len(want) > 1000 and not missing,
              f"kill -9 x4 + broker restart: all {len(want)} acked messages arrived "
              f"({len(missing)} missing)")
        c = __import__("sqlite3").connect(d.db_path())
        check(c.execute("PRAGMA integrity_check").fetchone()[0] == "ok",
              "database intact after the crashes")
        c.close()
    finally:
        sub.close()


def test_pacing(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/it-gw/dev/+/telemetry/+"], name="sub-pacing", clean=True)
    extra = "\n[Relay]\nBatching=no\nPublishesPerSecond=20\n"
    d = Driver(tmp, gw_config(tmp, broker, cert, extra),
               ["--devices", "2", "--count", "0", "--rate", "200"]).start()
    try:
        # Seconds counted from the first message, so that a slow start (ASan, a loaded
        # machine) does not cut the window short.
        wait_for(lambda: sub.snapshot(), timeout=20)
        time.sleep(4.2)
        d.stop()
        times = [m[2] for m in sub.snapshot()]
        t0 = times[0] if times else 0
        per_s = collections.Counter(int(t - t0) for t in times)
        full = [per_s[s] for s in range(1, 4)]
        check(times and max(full) <= 22,
              f"PublishesPerSecond=20 holds under 200 msgs/s offered: {full}")
        # The pacer does not throttle far below the quota either (half of it, with room for a
        # loaded machine).
        check(times and min(full) >= 10, f"... and uses it: {full}")
    finally:
        d.stop()
        sub.close()


def test_commands(tmp, broker, cert):
    sub = Subscriber(broker, ["mcugw/it-gw/cmd-result/+"], name="sub-cmd", clean=True)
    d = Driver(tmp, gw_config(tmp, broker, cert), ["--devices", "2", "--count", "1"]).start()
    try:
        wait_for(lambda: d.status()["mqtt"]["state"] == "connected", timeout=10)
        time.sleep(0.3)
        sub.publish("mcugw/it-gw/cmd/d1", b"reboot")
        sub.publish("mcugw/it-gw/cmd/nosuch", b"reboot")
        ok = wait_for(lambda: len(sub.snapshot()) >= 2, timeout=10)
        check(ok and re.search(r"^CMD d1 \d+ reboot$", d.output(), re.M) is not None,
              "command delivered to device d1")
        res = {m[0]: json.loads(m[1]) for m in sub.snapshot()}
        r1 = res.get("mcugw/it-gw/cmd-result/d1", {})
        check(r1.get("status") == 0 and base64.b64decode(r1.get("p", "")) == b"ok:reboot",
              "result published on the device's result topic")
        r2 = res.get("mcugw/it-gw/cmd-result/nosuch", {})
        check(r2.get("result") == "unknown-device", "command for an unknown device refused")
        ev = [(x["event"], x["subject"]) for x in d.ctl_json("audit", "tail", "-n", "50")]
        check(("cmd.received", "d1") in ev and ("cmd.result", "d1") in ev,
              "cmd.received and cmd.result audited")
        check(("cmd.rejected", "nosuch") in ev, "cmd.rejected audited")
        check(d.status()["mqtt"]["commands"] == 2, "commands counted")
        check("request_id" not in r1, "a raw command's result has no request_id")
        # A request envelope (#17.15): the device gets the bytes of "p", the result echoes the
        # cloud's request id, also when the gateway answers for the device.
        n0 = len(sub.snapshot())
        env = {"request_id": "req-42", "p": base64.b64encode(b"status").decode()}
        sub.publish("mcugw/it-gw/cmd/d1", json.dumps(env).encode())
        sub.publish("mcugw/it-gw/cmd/nosuch", json.dumps(dict(env, request_id="req-43")).encode())
        sub.publish("mcugw/it-gw/cmd/d1", json.dumps(dict(env, request_id="bad id")).encode())
        ok = wait_for(lambda: len(sub.snapshot()) >= n0 + 3, timeout=10)
        got = [json.loads(m[1]) for m in sub.snapshot()[n0:]]
        by_req = {x.get("request_id"): x for x in got}
        check(ok and re.search(r"^CMD d1 \d+ status$", d.output(), re.M) is not None,
              "an enveloped command reaches the device unwrapped")
        check(by_req.get("req-42", {}).get("status") == 0 and
              base64.b64decode(by_req["req-42"].get("p", "")) == b"ok:status",
              f"its result echoes request_id req-42 ({got})")
        check(by_req.get("req-43", {}).get("result") == "unknown-device",
              "the gateway's own refusal echoes the request id too")
        check(any(x.get("result") == "bad-request" and "request_id" not in x for x in got),
              "an envelope with a bad request id is refused as bad-request")
        # Not a command topic (the device level is no valid id): counted, logged once per topic
        # at notice (#17.8).
        long_id = "mcugw/it-gw/cmd/" + "x" * 40
        for t in (long_id, long_id, "mcugw/it-gw/cmd/"):
            sub.publish(t, b"x")
        check(wait_for(lambda: d.status()["mqtt"].get("unexpected_messages") == 3, timeout=10),
              f"messages on unexpected topics counted in status "
              f"({d.status()['mqtt'].get('unexpected_messages')})")
        log = d.read_log()
        check(log.count("notice: relay: message on unexpected topic " + long_id + " ") == 1
              and "unexpected topic mcugw/it-gw/cmd/ " in log,
              "the first message on each unexpected topic logged at notice")
        check(d.status()["mqtt"]["commands"] == 5, "and not counted as commands")
    finally:
        d.stop()
        sub.close()


def test_config_errors(tmp, broker, cert):
    bad = tmp.join("topics.conf")
    with open(bad, "w") as f:
        f.write(base_config(tmp) + "\n[MQTT]\nTelemetryTopic=a/+/{device}\n"
                "CommandTopic=x/cmd-{device}\nBatchTopic=a/b/c/d/e/f/g/h/i\n"
                "StatusTopic=$aws/things/{gateway}/status\n")
    r = subprocess.run([MCUGWD, "--check-config", "--config", bad], capture_output=True,
                       text=True)
    check(r.returncode != 0 and "wildcards" in r.stderr and "whole topic level" in r.stderr and
          "8 topic levels" in r.stderr and "reserved" in r.stderr,
          "--check-config rejects bad topic templates with reasons")
    check(re.search(re.escape(bad) + r":\d+: TelemetryTopic=", r.stderr) is not None,
          "with file:line")

    key = tmp.join("loose.key")
    with open(cert[1], "rb") as src, open(key, "wb") as dst:
        dst.write(src.read())
    os.chmod(key, 0o644)
    conf = gw_config(tmp, broker, (cert[0], key))
    # The cloud session refuses the key; the daemon runs on for the local side (#17.4).
    d = Daemon(tmp, conf, name="loose.conf")
    try:
        d.start()
        err = d.ctl_json("status")["mqtt"]["last_error"]
        check(d.ctl_json("status")["mqtt"]["state"] != "connected",
              "the cloud session refuses a group/world-readable key")
        check("accessible by group or others" in err and "0644" in err,
              f"a group/world-readable key file: a clear error in status ({err})")
    finally:
        d.stop()


def main():
    tmp = TempDir("mcugw-mqtt-")
    tmps = [tmp]
    broker = None
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        only = sys.argv[1:] or None
        tests = [("config", lambda t: test_config_errors(t, broker, cert)),
                 ("telemetry", lambda t: test_telemetry(t, broker, cert)),
                 ("unbatched", lambda t: test_unbatched_and_will(t, broker, cert)),
                 ("badcert", lambda t: test_bad_cert(t, broker)),
                 ("commands", lambda t: test_commands(t, broker, cert)),
                 ("pacing", lambda t: test_pacing(t, broker, cert)),
                 ("outage", lambda t: test_outage(t, broker, cert)),
                 ("kill9", lambda t: test_kill9(t, broker, cert))]
        for name, fn in tests:
            if only and name not in only:
                continue
            print(f"# {name}", flush=True)
            t = time.monotonic()
            sub = TempDir(f"mcugw-mqtt-{name}-")
            tmps.append(sub)
            fn(sub)
            print(f"# {name}: {time.monotonic() - t:.1f}s", flush=True)
        # Under ASan/UBSan every gateway run must have exited clean (leaks are reported at exit).
        reports = []
        for t in tmps:
            for root, _, files in os.walk(t.path):
                for fname in files:
                    if fname.endswith(".log") and fname != "mosquitto.log":
                        with open(os.path.join(root, fname), errors="replace") as f:
                            text = f.read()
                        if "Sanitizer" in text or "runtime error" in text:
                            reports.append(os.path.join(root, fname))
        check(not reports, f"no sanitizer report from any gateway run {reports}")
    finally:
        if broker:
            broker.stop()
        if os.environ.get("MCUGW_TEST_KEEP"):
            print("kept", [t.path for t in tmps])
        else:
            for t in tmps:
                t.cleanup()
    finish()


if __name__ == "__main__":
    main()
