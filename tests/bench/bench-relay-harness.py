# SPDX-License-Identifier: Apache-2.0
"""The relay benchmarks (scripts/bench-relay, -relay-batched, -latency, -memory, -outage): a real
Mosquitto with mutual TLS on 127.0.0.1 (tests/integration/broker.py), the gateway driven by
relay-driver (the whole gateway with synthetic devices fed through relay_submit, as the link does;
"source":"driver" in the output), baselines measured in the same run. The last line of output is
one JSON object. Timings are reported, never asserted.

Usage: bench-relay-harness.py BUILD-DIR NAME"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from broker import Broker, Subscriber  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
NAME = sys.argv[2]
DRIVER = os.path.join(BUILD, "tests", "integration", "relay-driver")
BASELINE = os.path.join(BUILD, "tests", "bench", "bench-relay-baseline")
MCUGWD = os.path.join(BUILD, "src", "mcugwd")
MCUGWCTL = os.path.join(BUILD, "src", "mcugwctl", "mcugwctl")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Run:
    def __init__(self, root, broker, cert, extra, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "run", "control.sock")
        self.conf = os.path.join(self.dir, "gw.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[Gateway]
Name=bench-gw
LogLevel=notice
[Paths]
StateDirectory={self.dir}/state
RuntimeDirectory={self.dir}/run
ControlSocket={self.sock}
[Control]
AdminGroup=
ReadOnlyGroup=
""" + broker.mqtt_config(*cert) + extra)

    def driver(self, *args, wait=True):
        self.log = open(os.path.join(self.dir, "driver.log"), "wb")
        self.proc = subprocess.Popen([DRIVER, "--config", self.conf] + [str(a) for a in args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        if wait:
            out, _ = self.proc.communicate(timeout=110)
            self.log.close()
            return json.loads(out.strip().splitlines()[-1])
        return self.proc

    def status(self):
        r = subprocess.run([MCUGWCTL, "--socket", self.sock, "--json", "status"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_connected(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s and s.get("mqtt", {}).get("state") == "connected":
                return s
            time.sleep(0.05)
        raise RuntimeError("gateway did not connect")


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def bench_relay(root, broker, cert):
    n_dev, per_dev, size, inflight = 100, 2000, 64, 20
    total = n_dev * per_dev
    pcert = broker.certs.client("bench-baseline")
    out = subprocess.run([BASELINE, "127.0.0.1", str(broker.port), broker.certs.ca, pcert[0],
                          pcert[1], str(total), str(size), str(inflight), "bench/baseline"],
                         capture_output=True, text=True, timeout=110, check=True)
    base = json.loads(out.stdout.strip().splitlines()[-1])["msgs_per_s"]
    log(f"baseline: {base:.0f} msgs/s")
    res = {}
    for sync in ("full", "normal"):
        extra = f"""
[Database]
Synchronous={sync}
CommitInterval=10ms
[Relay]
Batching=no
PublishesPerSecond=0
BytesPerSecond=0
"""
        run = Run(root, broker, cert, extra, f"relay-{sync}")
        r = run.driver("--devices", n_dev, "--count", per_dev, "--rate", 0, "--max-backlog",
                       20000, "--size", size, "--exit-when-drained")
        res[sync] = total / r["drain_s"]
        log(f"gateway (Synchronous={sync}): {res[sync]:.0f} msgs/s")
    return {"gateway_msgs_per_s": round(res["full"]), "baseline_msgs_per_s": round(base),
            "ratio": round(res["full"] / base, 3), "synchronous": "full",
            "gateway_msgs_per_s_sync_normal": round(res["normal"]),
            "ratio_sync_normal": round(res["normal"] / base, 3), "messages": total,
            "payload_bytes": size, "inflight": inflight, "batching": False, "source": "driver"}


def bench_relay_batched(root, broker, cert):
    n_dev, per_dev, size = 100, 8000, 64
    total = n_dev * per_dev
    extra = """
[Relay]
Batching=yes
PublishesPerSecond=100
BytesPerSecond=0
MaxPayload=128K
"""
    run = Run(root, broker, cert, extra, "batched")
    r = run.driver("--devices", n_dev, "--count", per_dev, "--rate", 0, "--max-backlog", 200000,
                   "--size", size, "--exit-when-drained")
    return {"mcu_msgs_per_s": round(total / r["drain_s"]),
            "publishes_per_s": round(r["publishes"] / r["drain_s"], 1), "messages": total,
            "publishes": r["publishes"], "payload_bytes": size, "max_payload": 131072,
            "publishes_per_s_quota": 100, "bytes_per_s_quota": "unlimited", "source": "driver"}


def bench_latency(root, broker, cert):
    sub = Subscriber(broker, ["mcugw/bench-gw/dev/+/telemetry/+"], name="bench-lat", clean=True)
    extra = """
[Relay]
Batching=no
PublishesPerSecond=0
BytesPerSecond=0
[Database]
CommitInterval=10ms
"""
    run = Run(root, broker, cert, extra, "latency")
    proc = run.driver("--devices", 10, "--count", 1200, "--rate", 1000, "--size", 64,
                      "--exit-when-drained", wait=False)
    proc.communicate(timeout=110)
    time.sleep(0.5)
    lat = []
    for topic, payload, t, _ in sub.snapshot():
        try:
            ts = int(payload.split(b";")[1][3:])
        except (IndexError, ValueError):
            continue
        lat.append((t * 1e9 - ts) / 1e6)
    sub.close()
    lat = sorted(lat[1000:])  # the first second warms up
    if not lat:
        raise RuntimeError("no messages received")

    def pct(p):
        return round(lat[min(len(lat) - 1, int(len(lat) * p))], 3)
    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 3),
            "samples": len(lat), "rate_msgs_per_s": 1000, "batching": False,
            "synchronous": "full", "commit_interval_ms": 10, "source": "driver",
            "note": "MCU message into relay_submit -> delivery at a paho subscriber"}


def bench_memory(root, broker, cert):
    """The real mcugwd with its TLS session up: RssAnon with no MCU connected, then with 1,000
    simulated MCUs (mcugw-sim, real handshakes over a Unix socket, 1 message/s each) connected.
    The baseline and the measurement come from the same daemon process."""
    sim = os.path.join(BUILD, "src", "sim", "mcugw-sim")
    n = 1000
    run = Run(root, broker, cert, "", "mem")
    link = os.path.join(run.dir, "run", "link.sock")
    devdir = os.path.join(run.dir, "devices.d")
    os.makedirs(devdir)
    subprocess.run([sim, "keys", "--count", str(n), "--seed", "mem", "--id-prefix", "m-",
                    "--enroll-file", os.path.join(devdir, "mem.conf")], check=True,
                   stdout=subprocess.DEVNULL)
    with open(run.conf, "a") as f:
        f.write(f"\n[Paths]\nDevicesDirectory={devdir}\n[Link]\nListenStream=unix:{link}\n"
                "HandshakeRate=5000\nMaxConnections=2000\n")
    log_f = open(os.path.join(run.dir, "mcugwd.log"), "wb")
    d = subprocess.Popen([MCUGWD, "--config", run.conf], stdout=log_f, stderr=log_f)
    sp = None
    try:
        run.wait_connected()
        time.sleep(1.0)
        base = rss_anon_kib(d.pid)
        gw = run.status()["link"]["public_key"]
        sp = subprocess.Popen([sim, "run", "--connect", f"unix:{link}", "--count", str(n),
                               "--seed", "mem", "--id-prefix", "m-", "--gateway-key", gw,
                               "--rate", "1", "--size", "64", "--messages", "0",
                               "--duration", "90"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        connected = 0
        while time.monotonic() < deadline:
            connected = run.status()["link"].get("devices_connected", 0)
            if connected >= n:
                break
            time.sleep(0.5)
        time.sleep(3.0)  # a few rounds of telemetry through the outbox and the session
        many = rss_anon_kib(d.pid)
    finally:
        if sp:
            sp.terminate()
            sp.wait(timeout=20)
        d.terminate()
        d.wait(timeout=30)
        log_f.close()
    return {"base_rss_anon_kib": base, "per_device_bytes": round((many - base) * 1024 / n),
            "rss_anon_kib_1000_devices": many, "devices_connected": connected, "source": "sim",
            "budget_base_kib": 4096, "budget_per_device_bytes": 4096}


def bench_outage(root, broker, cert):
    n_dev, per_dev, live = 100, 10000, 1000
    total = n_dev * per_dev
    sub = Subscriber(broker, ["mcugw/bench-gw/batch"], name="bench-outage", clean=False)
    extra = """
[Relay]
Batching=yes
PublishesPerSecond=100
BytesPerSecond=0
"""
    run = Run(root, broker, cert, extra, "outage")
    acked = os.path.join(run.dir, "acked.log")
    broker.stop()
    t0 = time.monotonic()
    proc = run.driver("--devices", n_dev, "--count", per_dev, "--rate", 60000, "--size", 64,
                      "--acked-log", acked, "--then-rate", live, wait=False)
    # Wait for the burst to be buffered.
    line = proc.stdout.readline()
    if "burst_done" not in line:
        raise RuntimeError(f"driver: {line}")
    time.sleep(0.5)
    s = run.status()
    buffered = s["outbox"]["rows"]
    log(f"buffered {buffered} rows in {time.monotonic() - t0:.1f}s")
    broker.start()
    t1 = time.monotonic()
    pub0 = s["mqtt"]["publishes"]
    while True:
        s = run.status()
        if s["outbox"]["rows"] < 2 * live and s["mqtt"]["state"] == "connected":
            break
        if time.monotonic() - t1 > 80:
            raise RuntimeError("backlog did not drain")
        time.sleep(0.05)
    drain_s = time.monotonic() - t1
    pubs = s["mqtt"]["publishes"] - pub0
    log(f"drained in {drain_s:.1f}s, {pubs} publishes")
    proc.terminate()
    proc.communicate(timeout=20)
    run.log.close()
    with open(acked) as f:
        want = set(line for line in f.read().split("\n") if line)
    # Live messages acked just before the stop are still in the outbox (sent at the next start):
    # not lost.
    import sqlite3
    db = sqlite3.connect(os.path.join(run.dir, "state", "mcugw.db"))
    left = {f"{d} {q}" for d, q in db.execute("SELECT device, seq FROM outbox")}
    db.close()

    def got():
        g = set()
        for _, p, _, _ in sub.snapshot():
            for m in json.loads(p)["msgs"]:
                g.add(f"{m['d']} {m['q']}")
        return g
    deadline = time.monotonic() + 20
    g = got()
    while not want - left <= g and time.monotonic() < deadline:
        time.sleep(0.5)
        g = got()
    sub.close()
    return {"buffered": buffered, "drain_mcu_msgs_per_s": round(buffered / drain_s),
            "publishes_per_s": round(pubs / drain_s, 1), "lost": len(want - g - left),
            "left_in_outbox_at_stop": len(left),
            "acked": len(want), "live_msgs_per_s": live, "drain_s": round(drain_s, 2),
            "source": "driver"}


def main():
    root = tempfile.mkdtemp(prefix="mcugw-bench-")
    os.chmod(root, 0o755)
    broker = Broker(root)
    try:
        broker.start()
        cert = broker.certs.client("bench-gw")
        fn = {"relay": bench_relay, "relay-batched": bench_relay_batched,
              "latency": bench_latency, "memory": bench_memory, "outage": bench_outage}[NAME]
        res = fn(root, broker, cert)
        res = {"benchmark": NAME, **res}
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
