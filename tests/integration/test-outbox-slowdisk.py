# SPDX-License-Identifier: Apache-2.0
"""The loop never waits for the disk (issue 18, point 2; docs/outbox.md).

mcugwd runs with Synchronous=full under the slowfsync shim (LD_PRELOAD): once the test switches
it on, every fsync/fdatasync of the daemon takes 3 s, and the shim logs when one begins and ends.
Simulated MCUs (mcugw-sim) send telemetry over a TCP link the whole time. While a sync is
stalled — the shim's log shows it begun and not ended, both before and after — the daemon still
answers `status` on its control socket and its link still takes in telemetry frames (the link's
counter grows). Before this design the commit's fsync ran on the loop and neither could happen
until it returned.

Then the slow disk is switched off, the devices are acked again, mcugwd is killed with SIGKILL
and restarted without the shim: every message a device saw acked OK is in the outbox."""

import os
import signal
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, free_port,  # noqa: E402
                       enroll_file, sim_keys, skip, wait_for)

STALL_MS = 3000
DEVICES = 2
RATE = 10  # per device and second: a stall takes ~30 messages, under the link's 64 ack slots


def shim_path():
    if os.environ.get("SLOWFSYNC_SO"):
        return os.environ["SLOWFSYNC_SO"]
    mcugwd = os.environ.get("MCUGWD", "")
    p = os.path.join(os.path.dirname(os.path.dirname(mcugwd)), "tests", "libslowfsync.so")
    return p if os.path.exists(p) else None


def marks(path):
    """(syncs begun, syncs ended) under the slow disk."""
    try:
        with open(path) as f:
            s = f.read()
    except FileNotFoundError:
        return 0, 0
    return s.count("B"), s.count("E")


def acked_ok(path):
    ok = set()
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                dev, _stream, seq, status = line.split()
                if status == "0":
                    ok.add((dev, int(seq)))
    except FileNotFoundError:
        pass
    return ok


def telemetry_in(d):
    return d.ctl_json("status")["link"]["counters"]["telemetry"]


def main():
    shim = shim_path()
    if not shim:
        skip("tests/libslowfsync.so is not built next to mcugwd")
    tmp = TempDir("mcugw-slowdisk-")
    d = sim = None
    try:
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "sim.conf", sim_keys(DEVICES, "sd", "sd-"))
        port = free_port()
        config = base_config(tmp, f"""
Synchronous=full

[Link]
ListenStream=tcp:127.0.0.1:{port}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        arm, marks_log = tmp.join("slowdisk-on"), tmp.join("slowfsync.log")
        env = dict(os.environ, LD_PRELOAD=shim, SLOWFSYNC_MS=str(STALL_MS), SLOWFSYNC_ARM=arm,
                   SLOWFSYNC_LOG=marks_log)
        # An ASan build wants its runtime first; the shim has no instrumentation to miss.
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
        d = Daemon(tmp, config).start(env=env)
        key = d.ctl_json("status")["link"]["public_key"]
        ack_log = tmp.join("acks.log")
        sim = Sim(tmp, "sd", ["--gateway-key", key, "--connect", f"tcp:127.0.0.1:{port}",
                              "--count", str(DEVICES), "--seed", "sd", "--id-prefix", "sd-",
                              "--rate", str(RATE), "--messages", "0", "--duration", "40",
                              "--window", "48", "--liveness-ms", "30000", "--ack-log", ack_log])
        check(wait_for(lambda: len(acked_ok(ack_log)) >= 10, timeout=20),
              f"acks on a fast disk ({len(acked_ok(ack_log))})")

        open(arm, "w").close()
        began = wait_for(lambda: marks(marks_log)[0] > marks(marks_log)[1], timeout=10)
        if not check(began, f"a sync stalls on the slow disk (marks {marks(marks_log)})"):
            return
        b0, e0 = marks(marks_log)
        t0 = telemetry_in(d)  # the control socket answers during the stall
        grew = wait_for(lambda: telemetry_in(d) > t0, timeout=STALL_MS / 1000 / 2)
        t1 = telemetry_in(d)
        b1, e1 = marks(marks_log)
        check(e1 == e0, f"the stalled sync is still running ({b0}/{e0} -> {b1}/{e1} begun/ended)"
              " while the checks below ran")
        check(e1 == e0 and grew, "while a commit's sync is stalled, the daemon answers on its "
              f"control socket and takes in telemetry from the link ({t0} -> {t1} messages)")

        os.unlink(arm)
        n_ok = len(acked_ok(ack_log))
        check(wait_for(lambda: len(acked_ok(ack_log)) > n_ok + 20, timeout=20),
              "the devices are acked again once the disk is back")
        st = d.ctl_json("status")
        print(f"# outbox {st['outbox']} link counters telemetry={t1}", flush=True)

        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        ok = acked_ok(ack_log)  # acks cannot come after the kill
        sim.stop()
        sim = None
        d.start()
        c = sqlite3.connect(f"file:{d.db_path()}?mode=ro", uri=True, timeout=10)
        try:
            rows = set((dev, seq) for dev, seq in c.execute("SELECT device, seq FROM outbox"))
        finally:
            c.close()
        lost = ok - rows
        check(len(ok) > 0 and not lost, f"every message acked OK is in the outbox after kill -9: "
              f"{len(ok)} acked, {len(lost)} missing {sorted(lost)[:5]}")
        d.stop()
    finally:
        if sim:
            sim.stop()
        if d and d.proc and d.proc.poll() is None:
            d.proc.kill()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
