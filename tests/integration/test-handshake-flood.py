# SPDX-License-Identifier: Apache-2.0
"""Handshake flood resistance (docs/protocol.md, "Handshake flood resistance"; issue #15.2) end to
end: the real daemon (HandshakeRate=20), a simulated device on the real SDK behind a recording
proxy on a Unix socket, and attackers on their own connections. The device's first HS1 is
recorded on its way. Then, while junk HS1 frames (random bytes: no valid mac1) and replays of
the recorded HS1 arrive at 10x the rate limit: the junk is dropped on mac1 and counted; the
replays are refused on their timestamp (counted `replay_ts`, answered with nothing, no
auth.failed against the device); the recorded HS1 injected into the device's own connection
displaces nothing (the device stays connected, on the same session, acks keep coming); and
after `device rotate-session` the honest device, and one on a serial line (a pty), handshake
again through the flood (budgets are per link; by the
cookie if the budget is spent: which of the two depends on timing, so the cookie path itself is
asserted in tests/device/test-handshake.c and measured by scripts/bench handshake-flood). A frame of protocol version 2 is refused and counted."""

import importlib.util
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, sim_keys,  # noqa
                       wait_for)

_spec = importlib.util.spec_from_file_location(
    "gen_vectors", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "gen-vectors.py"))
gv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gv)  # framing helpers (crc32c, COBS) of the independent model

RATE = 20


class Proxy:
    """Unix socket proxy between the device and the daemon; records device -> gateway bytes
    and can inject bytes into that direction (an attacker on the device's line)."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.rec = bytearray()
        self.up = None
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                dev, _ = self.srv.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.target)
            self.up = up
            threading.Thread(target=self.pump, args=(dev, up, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, dev, False), daemon=True).start()

    def pump(self, src, dst, record):
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if record:
                self.rec += b
            with self.lock:
                try:
                    dst.sendall(b)
                except OSError:
                    return

    def inject(self, b):
        with self.lock:
            self.up.sendall(b)

    def first_frame(self):
        data = bytes(self.rec).lstrip(b"\0")
        end = data.find(b"\0")
        return data[:end + 1] if end > 0 else None


def junk_hs1():
    body = bytes(random.getrandbits(8) for _ in range(166))
    return gv.wire(bytes([3, 1, 0, 0]) + body)


def lstats(d):
    return d.ctl_json("status")["link"]["counters"]


def main():
    tmp = TempDir()
    d = sim = ptysim = proxy = None
    attackers = []
    try:
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        good = sim_keys(1, "flood", "hon-")
        ptyk = sim_keys(1, "floodpty", "pty-")
        dev, ptydev = good[0]["id"], ptyk[0]["id"]
        with open(os.path.join(devdir, "hon.conf"), "w") as f:
            for k in (good[0], ptyk[0]):
                f.write(f"[Device]\nId={k['id']}\nPublicKey={k['public_key']}\nState=active\n\n")
        tty = tmp.join("tty0")
        link_sock = tmp.join("run", "link.sock")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link_sock}
HandshakeTimeout=1h
HandshakeRate={RATE}
HandshakeRatePerLink=2
SerialPort={tty}:115200
MaxConnections=128
MaxPendingPerSource=64
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]
        proxy = Proxy(tmp.join("proxy.sock"), link_sock)
        events = tmp.join("events.log")
        sim = Sim(tmp, "hon", ["--gateway-key", gw_key, "--connect", f"unix:{proxy.path}",
                               "--seed", "flood", "--id-prefix", "hon-", "--messages", "0",
                               "--rate", "20", "--event-log", events])

        ptysim = Sim(tmp, "pty", ["--gateway-key", gw_key, "--connect", f"pty:{tty}", "--seed",
                                  "floodpty", "--id-prefix", "pty-", "--messages", "0", "--rate",
                                  "10", "--baud", "115200"])

        def devs():
            return {x["id"]: x for x in d.ctl_json("devices")}

        def connected():
            return devs().get(dev, {}).get("connected")
        check(wait_for(connected, timeout=20), "the honest device authenticated via the proxy")
        check(wait_for(lambda: devs().get(ptydev, {}).get("connected"), timeout=20),
              "the pty device authenticated on the serial line")
        hs1 = proxy.first_frame()
        check(hs1 is not None and len(hs1) > 150, "its first message 1 was recorded on the line")
        before = lstats(d)
        sessions_before = devs()[dev]["link_stats"]["handshakes"]

        # The flood: 20 attacker connections, junk and replays each at 10x the rate limit. (All
        # connections here come from one Unix user, one "source": MaxPendingPerSource= is raised
        # so that what is tested is the handshake budget, not the per-source connection limit.)
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(link_sock)
            s.setblocking(False)
            attackers.append(s)
        stop = threading.Event()

        def flood():
            n, t0 = 0, time.monotonic()
            while not stop.is_set():
                owed = int((time.monotonic() - t0) * RATE * 10)
                while n < owed:
                    s = attackers[n % len(attackers)]
                    for frame in (junk_hs1(), hs1):
                        try:
                            s.send(frame)
                        except (BlockingIOError, OSError):
                            pass
                    try:
                        while s.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    n += 1
                time.sleep(0.005)
        th = threading.Thread(target=flood, daemon=True)
        th.start()
        time.sleep(1.0)

        # The recorded HS1 on the device's own line: nothing may be displaced.
        for _ in range(3):
            proxy.inject(hs1)
            time.sleep(0.1)
        acks_at = os.path.getsize(events)
        time.sleep(1.5)
        with open(events) as f:
            f.seek(acks_at)
            later = f.read().split("\n")
        check(any(" ack " in x for x in later) and not any(" down " in x for x in later),
              "a replayed HS1 on the device's own line displaces nothing: still connected, acks "
              "keep coming")
        check(devs()[dev]["link_stats"]["handshakes"] == sessions_before,
              "no new session for the device out of a replay")

        # A new handshake of the honest device in the middle of the flood.
        t_rot = time.monotonic()
        r = d.ctl("device", "rotate-session", dev)
        check(r.returncode == 0, f"rotate-session ({r.stderr.strip()})")
        check(wait_for(lambda: devs()[dev]["link_stats"]["handshakes"] >
                       sessions_before, timeout=20),
              f"the honest device handshakes again through the flood "
              f"({time.monotonic() - t_rot:.1f} s)")
        with open(events) as f:
            ups = [x for x in f.read().split("\n") if " up " in x]
        check(len(ups) >= 2, f"the device reports its new session ({ups[-1:]})")
        pty_before = devs()[ptydev]["link_stats"]["handshakes"]
        r = d.ctl("device", "rotate-session", ptydev)
        check(r.returncode == 0, f"rotate-session on the serial line ({r.stderr.strip()})")
        check(wait_for(lambda: devs()[ptydev]["link_stats"]["handshakes"] > pty_before and
                       devs()[ptydev]["connected"], timeout=20),
              "the pty device handshakes again on its line through the flood")
        stop.set()
        th.join()
        after = lstats(d)
        dj = {k: after[k] - before.get(k, 0) for k in after}
        check(dj["junk_mac1"] > 100, f"junk dropped on mac1 and counted ({dj['junk_mac1']})")
        check(dj["replay_ts"] >= 1, f"replays refused on their timestamp ({dj['replay_ts']})")
        check(dj["hs_throttled"] > 0 and dj["cookie_sent"] > 0,
              f"replays beyond the budget throttled, answered with cookies "
              f"({dj['hs_throttled']}, {dj['cookie_sent']})")
        dstats = devs()[dev]["link_stats"]
        check(dstats.get("replay_ts", 0) >= 1 and dstats.get("auth_failures", 0) == 0,
              f"replays are counted for the device, never as its auth failures ({dstats})")
        fails = [x for x in d.ctl_json("audit", "tail", "-n", "5000")
                 if x["event"] == "auth.failed" and x["details"].get("device_id") == dev]
        check(not fails, "no auth.failed records for the honest device (no oracle, no blame)")

        # An old client: refused and counted, not taken for junk.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(link_sock)
        s.sendall(gv.wire(bytes([2, 1, 0, 0]) + bytes(150)))
        check(wait_for(lambda: lstats(d)["old_version"] >= 1, timeout=5),
              "a protocol version 2 frame is refused and counted (old_version)")
        check("link protocol version 2" in d.read_log(), "and logged with both versions")
        s.close()
    finally:
        for s in attackers:
            s.close()
        if sim:
            sim.stop()
        if ptysim:
            ptysim.stop()
        if d:
            d.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
