# SPDX-License-Identifier: Apache-2.0
"""Session recovery scenarios (docs/protocol.md, "Liveness"), shared by
tests/integration/test-recovery.py and scripts/bench-recovery.

One daemon with a stream listener and a serial port (a pty made by mcugw-sim), one simulated
device on each, both on the real SDK with its default liveness settings. For each transport
and each way a gateway can lose a session, the time from the gateway being able to serve again
to the device's next ACKed message is measured from the simulator's event log (CLOCK_MONOTONIC,
the clock of time.monotonic()):
  rotate-session, disconnect: from the moment the control command returned;
  kill -9 + restart:          from the moment the new daemon answered on its control socket;
  displaced pending session:  from the moment the device sent the displacing message 1 (the
                              gateway serves throughout; the device must notice by itself).
At the end the daemon is stopped and every message acked OK must be in its outbox."""

import os
import signal
import sqlite3
import time

from mcugwtest import (Daemon, Sim, base_config, enroll_file, sim_keys, wait_for)

CASES = ("rotate-session", "disconnect", "kill-restart", "displaced")
TRANSPORTS = ("socket", "pty")


class Events:
    """The simulators' --event-log files: [(t_seconds, device, event, args)]."""

    def __init__(self, paths):
        self.paths = paths

    def read(self):
        out = []
        for path in self.paths:
            try:
                with open(path) as f:
                    for line in f:
                        p = line.split()
                        if len(p) >= 3 and line.endswith("\n"):
                            out.append((int(p[0]) / 1000.0, p[1], p[2], p[3:]))
            except FileNotFoundError:
                pass
        return sorted(out)

    def first_after(self, dev, kind, t, pred=lambda a: True):
        for e in self.read():
            if e[1] == dev and e[2] == kind and e[0] >= t and pred(e[3]):
                return e
        return None

    def acked_ok(self):
        return {(e[1], int(e[3][0]), int(e[3][1])) for e in self.read()
                if e[2] == "ack" and e[3][2] == "0"}


class Setup:
    def __init__(self, tmp):
        self.tmp = tmp
        devdir = tmp.join("devices.d")
        os.makedirs(devdir, exist_ok=True)
        self.devs = {"socket": sim_keys(1, "rsock", "rsock-")[0],
                     "pty": sim_keys(1, "rpty", "rpty-")[0],
                     "socket-displaced": sim_keys(1, "dsock", "dsock-")[0],
                     "pty-displaced": sim_keys(1, "dpty", "dpty-")[0]}
        enroll_file(devdir, "rec.conf", self.devs.values())
        self.sock = tmp.join("run", "link.sock")
        self.tty = tmp.join("tty-rec")
        self.tty2 = tmp.join("tty-disp")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{self.sock}
SerialPort={self.tty}:115200
SerialPort={self.tty2}:115200
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        self.d = Daemon(tmp, config).start()
        self.gw_key = self.d.ctl_json("status")["link"]["public_key"]
        self.events = Events([tmp.join(f"ev-{n}.log") for n in ("rpty", "rsock", "dpty", "dsock")])
        self.sims = []

    def start_sims(self):
        base = ["--gateway-key", self.gw_key, "--messages", "0", "--rate", "20"]
        runs = (("rpty", f"pty:{self.tty}", []), ("rsock", f"unix:{self.sock}", []),
                ("dpty", f"pty:{self.tty2}", ["--displace", "1"]),
                ("dsock", f"unix:{self.sock}", ["--displace", "1"]))
        for seed, target, extra in runs:
            self.sims.append(Sim(self.tmp, seed, [*base, *extra, "--connect", target,
                                                  "--seed", seed, "--id-prefix", seed + "-",
                                                  "--event-log", self.tmp.join(f"ev-{seed}.log")]))

    def flowing(self, dev, since):
        return wait_for(lambda: self.events.first_after(dev, "ack", since), timeout=20)

    def act(self, case, dev):
        """Make the gateway lose the device's session; returns when it can serve again."""
        if case == "rotate-session":
            r = self.d.ctl("device", "rotate-session", dev)
            assert r.returncode == 0, r.stderr
        elif case == "disconnect":
            r = self.d.ctl("device", "disconnect", dev)
            assert r.returncode == 0, r.stderr
        elif case == "kill-restart":
            self.d.proc.send_signal(signal.SIGKILL)
            self.d.proc.wait()
            self.d.log.close()
            self.d.start()
        return time.monotonic()

    def recover(self, dev, t_ready, timeout=15):
        """Seconds from t_ready to the device's next ACKed message, or None."""
        e = wait_for(lambda: self.events.first_after(dev, "ack", t_ready,
                                                     lambda a: a[2] == "0"), timeout=timeout)
        return e[0] - t_ready if e else None

    def reconnect_reason(self, dev, since):
        e = self.events.first_after(dev, "up", since)
        return e[3][0] if e else None

    def run_cases(self, report):
        """report(transport, case, seconds or None, reason)."""
        ids = {t: self.devs[t]["id"] for t in TRANSPORTS}
        self.start_sims()
        for t in TRANSPORTS:
            for dev in (ids[t], self.devs[t + "-displaced"]["id"]):
                if not self.flowing(dev, 0):
                    report(t, "startup", None, None)
        for case in ("rotate-session", "disconnect", "kill-restart"):
            for t in TRANSPORTS:
                t0 = time.monotonic()
                # kill-restart hits both devices at once; measure both from the same restart.
                if case == "kill-restart" and t != TRANSPORTS[0]:
                    continue
                ready = self.act(case, ids[t])
                targets = TRANSPORTS if case == "kill-restart" else (t,)
                for tt in targets:
                    s = self.recover(ids[tt], ready)
                    report(tt, case, s, self.reconnect_reason(ids[tt], t0))
                # Let the window refill so the next case starts from a steady flow.
                self.flowing(ids[t], time.monotonic())
        # A pending session displaced by a fresh message 1 on the same line/connection: the
        # simulators did it on their first session, at the start.
        for t in TRANSPORTS:
            dev = self.devs[t + "-displaced"]["id"]
            e = self.events.first_after(dev, "displace", 0)
            if not e:
                report(t, "displaced", None, None)
                continue
            a = self.events.first_after(dev, "ack", e[0], lambda x: x[2] == "0")
            up = self.events.first_after(dev, "up", e[0], lambda x: x[0] != "first")
            report(t, "displaced", a[0] - e[0] if a else None, up[3][0] if up else None)

    def acked_ok(self):
        return self.events.acked_ok()

    def stop(self):
        results = [s.stop() for s in self.sims]
        self.sims = []
        if self.d:
            self.d.stop()
        return results

    def outbox(self):
        db = sqlite3.connect(f"file:{self.d.db_path()}?mode=ro", uri=True)
        try:
            return {(r[0], r[1], r[2]) for r in
                    db.execute("SELECT device, stream, seq FROM outbox")}
        finally:
            db.close()
