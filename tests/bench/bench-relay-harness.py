# SPDX-License-Identifier: Apache-2.0
"""The relay benchmarks (scripts/bench-relay, -relay-batched, -latency, -memory, -outage, -scale),
end to end: a real Mosquitto with mutual TLS on 127.0.0.1 (tests/integration/broker.py), the real
mcugwd, and simulated MCUs on the real device SDK (mcugw-sim) over a Unix-socket link: framing,
AEAD, socket I/O and the ACK back are all in the path. Handshakes are done before timing
(mcugw-sim --sync-start); each message carries its send time (mcugw-sim --timestamps), so rates
and latencies run from the MCU's send to delivery at a subscriber of the broker
(bench-relay-subscriber, libmosquitto QoS 1; paho for the batch envelopes). "source":"link" in the
output. Baselines are measured in the same run. The daemon's CPU time per message comes from
/proc/PID/stat. The last line of output is one JSON object. Timings are reported, never asserted.

Usage: bench-relay-harness.py BUILD-DIR NAME"""

import base64
import json
import os
import resource
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
BASELINE = os.path.join(BUILD, "tests", "bench", "bench-relay-baseline")
SUBSCRIBER = os.path.join(BUILD, "tests", "bench", "bench-relay-subscriber")
SIM = os.path.join(BUILD, "src", "sim", "mcugw-sim")
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


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gateway:
    """The real mcugwd with a Unix-socket link listener and the simulated MCUs enrolled; the sims
    run the real device SDK (mcugw-sim). Start with the broker up; the MQTT session is connected
    when start() returns."""

    def __init__(self, root, broker, cert, extra, name, groups, env=None):
        self.run = Run(root, broker, cert, extra, name)
        self.link = os.path.join(self.run.dir, "run", "link.sock")
        devdir = os.path.join(self.run.dir, "devices.d")
        os.makedirs(devdir)
        for prefix, count in groups:
            subprocess.run([SIM, "keys", "--count", str(count), "--seed", f"bench-{prefix}",
                            "--id-prefix", prefix,
                            "--enroll-file", os.path.join(devdir, f"{prefix}devices.conf")],
                           check=True, stdout=subprocess.DEVNULL)
        with open(self.run.conf, "a") as f:
            f.write(f"\n[Paths]\nDevicesDirectory={devdir}\n[Link]\n"
                    f"ListenStream=unix:{self.link}\nHandshakeRate=5000\n")
        self.log = open(os.path.join(self.run.dir, "mcugwd.log"), "wb")
        self.proc = subprocess.Popen([MCUGWD, "--config", self.run.conf], stdout=self.log,
                                     stderr=self.log, env=env)
        self.run.wait_connected()
        self.key = self.run.status()["link"]["public_key"]

    def sim(self, prefix, count, *args, ack_log=None):
        """mcugw-sim run: the devices connect, authenticate, and only then (--sync-start) send;
        stderr is a pipe so that the caller can wait for "all ... devices connected"."""
        cmd = [SIM, "run", "--connect", f"unix:{self.link}", "--count", str(count), "--seed",
               f"bench-{prefix}", "--id-prefix", prefix, "--gateway-key", self.key, "--sync-start",
               "--timestamps"] + [str(a) for a in args]
        if ack_log:
            cmd += ["--ack-log", ack_log]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def wait_sending(sim, timeout=60):
        """Wait until the sim's devices are all authenticated (they start sending then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = sim.stderr.readline()
            if not line:
                raise RuntimeError("mcugw-sim exited before its devices connected")
            if "devices connected" in line:
                threading.Thread(target=sim.stderr.read, daemon=True).start()
                return
        raise RuntimeError("mcugw-sim: devices did not connect")

    def cpu(self):
        return cpu_s(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def subscriber(broker, topic, count, timeout, skip=0):
    """bench-relay-subscriber (libmosquitto, QoS 1), started and subscribed."""
    c = broker.certs.client("bench-sub")
    p = subprocess.Popen([SUBSCRIBER, "127.0.0.1", str(broker.port), broker.certs.ca, c[0], c[1],
                          topic, str(count), str(timeout), str(skip)], stdout=subprocess.PIPE,
                         text=True)
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("subscriber did not subscribe")
    return p


def sub_result(p, timeout=115):
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def e2e_rate(r):
    """Messages/s from the first send (the time in the first payload) to the last delivery."""
    return r["received"] / ((r["last_recv_ns"] - r["first_send_ns"]) / 1e9)


TELEMETRY = "mcugw/bench-gw/dev/+/telemetry/+"


def run_baseline(broker, total, size, inflight, rate=None, skip=0, sub_timeout=100,
                 timeout=110):
    """A bare libmosquitto QoS 1 publisher (bench-relay-baseline) with the given in-flight
    window, paced at `rate` messages/s if given, to the same subscriber as the gateway's:
    (the subscriber's result, messages/s to PUBACK)."""
    pcert = broker.certs.client("bench-baseline")
    sub = subscriber(broker, "bench/baseline", total, sub_timeout, skip=skip)
    out = subprocess.run([BASELINE, "127.0.0.1", str(broker.port), broker.certs.ca, pcert[0],
                          pcert[1], str(total), str(size), str(inflight), "bench/baseline"] +
                         ([str(rate)] if rate else []),
                         capture_output=True, text=True, timeout=timeout, check=True)
    puback = json.loads(out.stdout.strip().splitlines()[-1])["msgs_per_s"]
    return sub_result(sub), puback


def baseline_rate(broker, total, size, inflight):
    """The baseline as fast as its window allows: (messages/s end to end, to PUBACK)."""
    r, puback = run_baseline(broker, total, size, inflight)
    rate = e2e_rate(r)
    log(f"baseline: {rate:.0f} msgs/s to the subscriber ({puback:.0f} to PUBACK)")
    return rate, puback


def sim_done(sim, timeout=30):
    """Wait for mcugw-sim to exit (all its messages acked) and fail the bench if it failed."""
    sim.communicate(timeout=timeout)
    if sim.returncode != 0:
        raise RuntimeError(f"mcugw-sim exited with {sim.returncode}")


def bench_relay(root, broker, cert):
    """Unbatched relay, end to end: simulated MCUs send as fast as their ack windows allow; rate =
    messages / (first MCU send .. last delivery at a subscriber). Baseline: a bare libmosquitto
    QoS 1 publisher with the same in-flight window and the same subscriber, same run."""
    n_dev, per_dev, size, inflight, window = 50, 2000, 64, 20, 32
    total = n_dev * per_dev
    # The baseline runs before and after the gateway and counts as their mean: on a shared
    # machine the load drifts over the minute the three runs take.
    base_before, base_puback = baseline_rate(broker, total, size, inflight)
    res, cpu = {}, {}
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
        gw = Gateway(root, broker, cert, extra, f"relay-{sync}", [("r-", n_dev)])
        try:
            sub = subscriber(broker, TELEMETRY, total, 100)
            sim = gw.sim("r-", n_dev, "--rate", 0, "--fill-window", "--window", window,
                         "--messages", per_dev, "--size", size, "--duration", 100)
            gw.wait_sending(sim)
            c0 = gw.cpu()
            r = sub_result(sub)
            cpu[sync] = (gw.cpu() - c0) / max(r["received"], 1) * 1e6
            sim_done(sim)
        finally:
            gw.stop()
        if r["received"] < total:
            raise RuntimeError(f"Synchronous={sync}: {r['received']} of {total} delivered")
        res[sync] = e2e_rate(r)
        log(f"gateway (Synchronous={sync}): {res[sync]:.0f} msgs/s, "
            f"{cpu[sync]:.1f} us CPU/msg, p50 {r['p50_ms']} ms")
    base_after, _ = baseline_rate(broker, total, size, inflight)
    base = (base_before + base_after) / 2
    return {"gateway_msgs_per_s": round(res["full"]), "baseline_msgs_per_s": round(base),
            "baseline_msgs_per_s_before": round(base_before),
            "baseline_msgs_per_s_after": round(base_after),
            "ratio": round(res["full"] / base, 3), "synchronous": "full",
            "daemon_cpu_us_per_msg": round(cpu["full"], 1),
            "gateway_msgs_per_s_sync_normal": round(res["normal"]),
            "ratio_sync_normal": round(res["normal"] / base, 3),
            "daemon_cpu_us_per_msg_sync_normal": round(cpu["normal"], 1),
            "baseline_msgs_per_s_to_puback": round(base_puback), "messages": total,
            "devices": n_dev, "device_window": window, "payload_bytes": size,
            "baseline_inflight": inflight, "batching": False, "budget_ratio": 0.9,
            "source": "link"}


def batch_scan(sub, seen, state):
    """Count the MCU messages in the new batch envelopes; note the first send and last arrival."""
    snap = sub.snapshot()
    for _, p, t, _ in snap[seen:]:
        env = json.loads(p)
        state["msgs"] += env["n"]
        state["last"] = max(state["last"], t)
        for m in env["msgs"][:1]:
            pl = base64.b64decode(m["p"])
            try:
                ts = int(pl.split(b";")[1][3:]) / 1e9
            except (IndexError, ValueError):
                continue
            state["first"] = min(state["first"], ts)
    return len(snap)


def bench_relay_batched(root, broker, cert):
    n_dev, per_dev, size, window = 100, 4000, 64, 63
    total = n_dev * per_dev
    extra = """
[Relay]
Batching=yes
PublishesPerSecond=100
BytesPerSecond=0
MaxPayload=128K
"""
    gw = Gateway(root, broker, cert, extra, "batched", [("b-", n_dev)])
    sub = Subscriber(broker, ["mcugw/bench-gw/batch"], name="bench-batched", clean=True)
    try:
        sim = gw.sim("b-", n_dev, "--rate", 0, "--fill-window", "--window", window,
                     "--messages", per_dev, "--size", size, "--duration", 110)
        gw.wait_sending(sim)
        c0 = gw.cpu()
        state = {"msgs": 0, "first": float("inf"), "last": 0.0}
        seen = 0
        deadline = time.monotonic() + 110
        sim_c0, sim_cpu = cpu_s(sim.pid), 0.0
        while state["msgs"] < total and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = batch_scan(sub, seen, state)
            try:
                sim_cpu = cpu_s(sim.pid) - sim_c0  # until the sims exit (all acked)
            except OSError:
                pass
        cpu = (gw.cpu() - c0) / max(state["msgs"], 1) * 1e6
        sim_done(sim)
    finally:
        sub.close()
        gw.stop()
    if state["msgs"] < total:
        raise RuntimeError(f"{state['msgs']} of {total} delivered")
    dur = state["last"] - state["first"]
    return {"mcu_msgs_per_s": round(total / dur), "publishes_per_s": round(seen / dur, 1),
            "messages": total, "publishes": seen, "devices": n_dev, "device_window": window,
            "daemon_cpu_us_per_msg": round(cpu, 2),
            "sim_cpu_us_per_msg": round(sim_cpu / total * 1e6, 2), "payload_bytes": size,
            "max_payload": 131072, "publishes_per_s_quota": 100, "bytes_per_s_quota": "unlimited",
            "budget_mcu_msgs_per_s": 50000, "source": "link"}


def bench_latency(root, broker, cert):
    n_dev, rate, secs, warm = 10, 1000, 12, 1000
    total = rate * secs
    # Baseline: a bare libmosquitto publisher at the same rate through the same broker to the
    # same subscriber, same run: the latency this machine gives without the gateway.
    rb, _ = run_baseline(broker, total, 64, 20, rate=rate, skip=warm, sub_timeout=60, timeout=60)
    log(f"baseline: p50 {rb['p50_ms']} ms, p99 {rb['p99_ms']} ms")
    extra = """
[Relay]
Batching=no
PublishesPerSecond=0
BytesPerSecond=0
[Database]
CommitInterval=10ms
"""

    def run(name, *flags):
        gw = Gateway(root, broker, cert, extra, name, [("l-", n_dev)])
        try:
            sub = subscriber(broker, TELEMETRY, total, 60, skip=warm)
            sim = gw.sim("l-", n_dev, "--rate", rate // n_dev, "--messages", total // n_dev,
                         "--size", 64, "--duration", 60, *flags)
            gw.wait_sending(sim)
            c0 = gw.cpu()
            r = sub_result(sub)
            cpu = (gw.cpu() - c0) / max(r["received"], 1) * 1e6
            sim_done(sim)
        finally:
            gw.stop()
        if not r["samples"]:
            raise RuntimeError("no messages received")
        log(f"gateway ({name}): p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        return r, cpu

    # The budget's figure: the MCUs' sends spread over each 10 ms (independent devices, and the
    # same even arrival as the baseline). Then all ten in step, each burst of ten queued behind
    # one another: what a fleet whose clocks agree would see.
    r, cpu = run("latency", "--stagger")
    rs, _ = run("latency-in-step")
    return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "max_ms": r["max_ms"],
            "in_step_p50_ms": rs["p50_ms"], "in_step_p99_ms": rs["p99_ms"],
            "samples": r["samples"], "received": r["received"], "rate_msgs_per_s": rate,
            "baseline_p50_ms": rb["p50_ms"], "baseline_p99_ms": rb["p99_ms"],
            "baseline_max_ms": rb["max_ms"],
            "devices": n_dev, "daemon_cpu_us_per_msg": round(cpu, 1), "batching": False,
            "synchronous": "full", "commit_interval_ms": 10, "budget_p99_ms": 5,
            "source": "link",
            "note": "mcugw-sim send (the SDK) -> link -> mcugwd -> broker -> subscriber; "
                    "the first second is warm-up; devices staggered (in_step_*: not)"}


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
            "budget_base_kib": 4096, "budget_per_device_bytes": 2048}


def bench_outage(root, broker, cert):
    """The broker is down while 100 simulated MCUs send 10,000 messages each through the link
    (each acked only once durable); then the broker comes back with 10 more MCUs sending live at
    1,000 msgs/s. Drain rate and publishes/s until the backlog is gone; every acked message must
    reach the (persistent) subscriber or still be in the outbox."""
    n_dev, per_dev, live_dev, live = 100, 10000, 10, 1000
    sub = Subscriber(broker, ["mcugw/bench-gw/batch"], name="bench-outage", clean=False)
    extra = """
[Relay]
Batching=yes
PublishesPerSecond=100
BytesPerSecond=0
"""
    gw = Gateway(root, broker, cert, extra, "outage", [("o-", n_dev), ("v-", live_dev)])
    run = gw.run
    acked = os.path.join(run.dir, "acked.log")
    acked_live = os.path.join(run.dir, "acked-live.log")
    live_sim = None
    try:
        broker.stop()
        t0 = time.monotonic()
        sim = gw.sim("o-", n_dev, "--rate", 0, "--fill-window", "--window", 48,
                     "--messages", per_dev, "--size", 64, "--duration", 100, ack_log=acked)
        gw.wait_sending(sim)
        c0 = gw.cpu()
        out, _ = sim.communicate(timeout=110)
        st = json.loads(out.strip().splitlines()[-1])
        burst_s = time.monotonic() - t0
        s = run.status()
        buffered = s["outbox"]["rows"]
        ingest_cpu = (gw.cpu() - c0) / max(buffered, 1) * 1e6
        log(f"buffered {buffered} rows in {burst_s:.1f}s (sim: {st['acked']} acked, "
            f"{st['nacked']} nacked)")
        live_sim = gw.sim("v-", live_dev, "--rate", live // live_dev, "--messages", 0,
                          "--size", 64, "--duration", 200, ack_log=acked_live)
        gw.wait_sending(live_sim)
        broker.start()
        t1 = time.monotonic()
        c1 = gw.cpu()
        pub0 = s["mqtt"]["publishes"]
        while True:
            s = run.status()
            if s["outbox"]["rows"] < 2 * live and s["mqtt"]["state"] == "connected":
                break
            if time.monotonic() - t1 > 100:
                raise RuntimeError("backlog did not drain")
            time.sleep(0.05)
        drain_s = time.monotonic() - t1
        drain_cpu = (gw.cpu() - c1) / max(buffered, 1) * 1e6
        pubs = s["mqtt"]["publishes"] - pub0
        log(f"drained in {drain_s:.1f}s, {pubs} publishes")
        live_sim.terminate()
        live_sim.communicate(timeout=20)
        live_sim = None
    finally:
        if live_sim:
            live_sim.kill()
        gw.stop()
    want = set()
    for path in (acked, acked_live):
        with open(path) as f:
            for line in f:
                dev, _stream, seq, status = line.split()
                if status == "0":
                    want.add(f"{dev} {seq}")
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
    return {"buffered": buffered, "burst_s": round(burst_s, 1),
            "drain_mcu_msgs_per_s": round(buffered / drain_s),
            "publishes_per_s": round(pubs / drain_s, 1), "lost": len(want - g - left),
            "left_in_outbox_at_stop": len(left), "acked": len(want),
            "live_msgs_per_s": live, "drain_s": round(drain_s, 2),
            "daemon_cpu_us_per_msg_ingest": round(ingest_cpu, 1),
            "daemon_cpu_us_per_msg_drain": round(drain_cpu, 1),
            "budget": "1,000,000 buffered, 0 lost, >= 20,000/s at <= 100 publishes/s",
            "source": "link"}


def bench_scale(root, broker, cert):
    """MCUGW_BENCH_DEVICES (default 10,000) simulated MCUs connect at once over a Unix socket
    (two mcugw-sim processes), with HandshakeRate= at its default and MaxConnections= raised as
    docs/link.md says; then each sends one message every 10 s. Reported: the time until all are
    authenticated, the daemon's RssAnon and CPU at steady state, the p99 latency from the MCU's
    send to the subscriber, and messages acked by the gateway but never delivered (must be 0).
    The baseline is the same daemon with no MCU connected (RssAnon and CPU over the same time)."""
    n = int(os.environ.get("MCUGW_BENCH_DEVICES", "10000"))
    procs, per_msg_s, rounds = 2, 10, 3
    run = Run(root, broker, cert, "", "scale")
    link = os.path.join(run.dir, "run", "link.sock")
    devdir = os.path.join(run.dir, "devices.d")
    os.makedirs(devdir)
    subprocess.run([SIM, "keys", "--count", str(n), "--seed", "scale", "--id-prefix", "s-",
                    "--enroll-file", os.path.join(devdir, "scale.conf")], check=True,
                   stdout=subprocess.DEVNULL)
    with open(run.conf, "a") as f:
        f.write(f"\n[Paths]\nDevicesDirectory={devdir}\n[Link]\nListenStream=unix:{link}\n"
                # Every simulator is the same Unix user, one "source" to the per-source limit
                # on unauthenticated connections, which is there against one attacker.
                f"MaxConnections={n + 256}\nMaxPendingPerSource={n + 256}\n"
                "[Relay]\nBatching=no\nPublishesPerSecond=0\nBytesPerSecond=0\n")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < n + 512:
        raise RuntimeError(f"the hard limit on open files ({hard}) is below {n + 512}")
    log_f = open(os.path.join(run.dir, "mcugwd.log"), "wb")
    d = subprocess.Popen([MCUGWD, "--config", run.conf], stdout=log_f, stderr=log_f)
    sims, acks = [], []
    sub = None
    try:
        run.wait_connected(timeout=60)
        gw = run.status()["link"]["public_key"]
        c0, t0 = cpu_s(d.pid), time.monotonic()
        time.sleep(per_msg_s)
        idle_cpu = (cpu_s(d.pid) - c0) / (time.monotonic() - t0) * 100
        base = rss_anon_kib(d.pid)
        total = n * rounds
        sub = subscriber(broker, TELEMETRY, total, 300, skip=n)  # the first round is a burst
        t0 = time.monotonic()
        per = (n + procs - 1) // procs
        for i in range(procs):
            count = min(per, n - i * per)
            acks.append(os.path.join(run.dir, f"acks-{i}.log"))
            sims.append(subprocess.Popen(
                [SIM, "run", "--connect", f"unix:{link}", "--count", str(count),
                 "--first-index", str(i * per), "--seed", "scale", "--id-prefix", "s-",
                 "--gateway-key", gw, "--rate", str(1 / per_msg_s), "--messages", str(rounds),
                 "--size", "32", "--timestamps", "--duration", "600", "--ack-log", acks[-1]],
                stdout=subprocess.DEVNULL, stderr=open(acks[-1] + ".err", "w")))
        connected, authenticated_s = 0, None
        while time.monotonic() - t0 < 600:
            for i, sp in enumerate(sims):
                if sp.poll() is not None:
                    with open(acks[i] + ".err") as f:
                        raise RuntimeError(f"mcugw-sim {i} exited ({sp.returncode}): "
                                           + f.read()[-500:])
            connected = (run.status() or {}).get("link", {}).get("devices_connected", 0)
            if connected >= n:
                authenticated_s = round(time.monotonic() - t0, 2)
                break
            time.sleep(0.2)
        if authenticated_s is None:
            raise RuntimeError(f"only {connected} of {n} devices authenticated in 600 s")
        rss = rss_anon_kib(d.pid)
        c0, t1 = cpu_s(d.pid), time.monotonic()
        time.sleep(2 * per_msg_s)
        cpu = (cpu_s(d.pid) - c0) / (time.monotonic() - t1) * 100
        r = sub_result(sub, timeout=400)
        sub = None
        for sp in sims:
            sp.wait(timeout=120)
    finally:
        for sp in sims:
            if sp.poll() is None:
                sp.terminate()
                sp.wait(timeout=20)
        if sub:
            sub.kill()
        d.terminate()
        d.wait(timeout=60)
        log_f.close()
    acked = 0
    for path in acks:
        with open(path) as f:
            acked += sum(1 for line in f if line.split()[-1:] == ["0"])
    return {"devices": n, "authenticated_s": authenticated_s, "rss_anon_kib": rss,
            "rss_anon_kib_idle": base, "per_device_bytes": round((rss - base) * 1024 / n),
            "cpu_percent": round(cpu, 1), "cpu_percent_idle": round(idle_cpu, 1),
            "p99_ms": r["p99_ms"], "p50_ms": r["p50_ms"], "acked": acked,
            "received": r["received"], "lost": max(acked - r["received"], 0),
            "msgs_per_device_per_s": 1 / per_msg_s, "handshake_rate": "default",
            "source": "link",
            "note": "one machine runs the daemon, the broker and the simulators; p99 leaves out "
                    "the first message of every device (all sent at once)"}


SLOW_MS = 20
SLOWFSYNC = os.environ.get("SLOWFSYNC_SO") or os.path.join(BUILD, "tests", "libslowfsync.so")


def slow_env(marks):
    """The daemon's environment on a slow disk: every fsync/fdatasync takes SLOW_MS more
    (tests/slowdisk/slowfsync.c); the shim logs one B and one E per call into marks."""
    if not os.path.exists(SLOWFSYNC):
        raise RuntimeError(f"{SLOWFSYNC} is not built")
    return dict(os.environ, LD_PRELOAD=SLOWFSYNC, SLOWFSYNC_MS=str(SLOW_MS),
                SLOWFSYNC_LOG=marks)


def syncs(marks):
    with open(marks) as f:
        return f.read().count("E")


def bench_relay_slowdisk(root, broker, cert):
    """The relay on an SD-card-like disk (Synchronous=full, every fsync +20 ms), end to end as in
    `relay` and `latency`: the unbatched relay's rate against the bare libmosquitto publisher of
    the same run (ratio), and the latency at 1,000 msg/s (p99). Syncs per message tell how big
    the groups grew."""
    n_dev, per_dev, size, inflight, window = 50, 2000, 64, 20, 32
    total = n_dev * per_dev
    base, base_puback = baseline_rate(broker, total, size, inflight)
    extra = """
[Database]
Synchronous=full
CommitInterval=10ms
[Relay]
Batching=no
PublishesPerSecond=0
BytesPerSecond=0
"""
    # The relay, as fast as the devices' ack windows allow.
    marks = os.path.join(root, "slowdisk-relay.marks")
    gw = Gateway(root, broker, cert, extra, "slowdisk-relay", [("s-", n_dev)],
                 env=slow_env(marks))
    try:
        sub = subscriber(broker, TELEMETRY, total, 100)
        sim = gw.sim("s-", n_dev, "--rate", 0, "--fill-window", "--window", window,
                     "--messages", per_dev, "--size", size, "--duration", 100)
        gw.wait_sending(sim)
        c0, s0, k0 = gw.cpu(), syncs(marks), gw.run.status()["database"]["commits"]
        r = sub_result(sub)
        sim_done(sim, timeout=60)
        # All acked (the sims exit then): the syncs and commits of the whole run.
        relay_syncs = syncs(marks) - s0
        relay_commits = gw.run.status()["database"]["commits"] - k0
        cpu = (gw.cpu() - c0) / max(r["received"], 1) * 1e6
    finally:
        gw.stop()
    if r["received"] < total:
        raise RuntimeError(f"{r['received']} of {total} delivered")
    rate = e2e_rate(r)
    log(f"gateway on a slow disk: {rate:.0f} msgs/s, {relay_syncs} syncs, "
        f"{relay_commits} commits")

    # The latency at a fixed 1,000 msg/s.
    l_dev, l_rate, secs, warm = 10, 1000, 12, 1000
    l_total = l_rate * secs
    marks = os.path.join(root, "slowdisk-latency.marks")
    gw = Gateway(root, broker, cert, extra, "slowdisk-latency", [("t-", l_dev)],
                 env=slow_env(marks))
    try:
        sub = subscriber(broker, TELEMETRY, l_total, 60, skip=warm)
        sim = gw.sim("t-", l_dev, "--rate", l_rate // l_dev, "--messages", l_total // l_dev,
                     "--size", 64, "--duration", 60, "--stagger")
        gw.wait_sending(sim)
        s0 = syncs(marks)
        lr = sub_result(sub)
        sim_done(sim, timeout=60)
        lat_syncs = syncs(marks) - s0
    finally:
        gw.stop()
    if not lr["samples"]:
        raise RuntimeError("no messages received")
    return {"ratio": round(rate / base, 3), "p99_ms": lr["p99_ms"], "p50_ms": lr["p50_ms"],
            "max_ms": lr["max_ms"], "gateway_msgs_per_s": round(rate),
            "baseline_msgs_per_s": round(base), "baseline_msgs_per_s_to_puback": round(base_puback),
            "fsync_delay_ms": SLOW_MS, "synchronous": "full", "commit_interval_ms": 10,
            "relay_msgs_per_sync": round(total / max(relay_syncs, 1), 1),
            "relay_syncs": relay_syncs, "relay_commits": relay_commits,
            "latency_msgs_per_sync": round(l_total / max(lat_syncs, 1), 1),
            "latency_rate_msgs_per_s": l_rate, "latency_samples": lr["samples"],
            "daemon_cpu_us_per_msg": round(cpu, 1), "messages": total, "devices": n_dev,
            "device_window": window, "budget_ratio": 0.8, "budget_p99_ms": 50,
            "source": "link",
            "note": "every fsync/fdatasync of mcugwd delayed by fsync_delay_ms (LD_PRELOAD "
                    "slowfsync.so); baseline: a bare libmosquitto QoS 1 publisher, same run"}


def main():
    root = tempfile.mkdtemp(prefix="mcugw-bench-")
    os.chmod(root, 0o755)
    broker = Broker(root)
    try:
        broker.start()
        cert = broker.certs.client("bench-gw")
        fn = {"relay": bench_relay, "relay-batched": bench_relay_batched,
              "latency": bench_latency, "memory": bench_memory, "outage": bench_outage,
              "scale": bench_scale, "relay-slowdisk": bench_relay_slowdisk}[NAME]
        res = fn(root, broker, cert)
        res = {"benchmark": NAME, **res}
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
