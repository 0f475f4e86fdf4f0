# SPDX-License-Identifier: Apache-2.0
"""Sessions recover by themselves (docs/protocol.md, "Liveness"): over a pty and over a Unix
socket, after `device rotate-session`, `device disconnect`, a kill -9 and restart of the gateway,
and a pending session displaced by a fresh message 1, the device (the real SDK in mcugw-sim,
default settings) handshakes again by itself and its next message is ACKed within a bounded
time; it says why it reconnected (NOSESSION on a line whose gateway lost the session, the line
itself on a socket), the gateway counts the NOSESSION answers, and no message acked OK is
missing from the outbox afterwards."""

import importlib.util
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import TempDir, check, finish  # noqa: E402
from recovery import Setup  # noqa: E402

BOUND_S = 5.0  # generous for a loaded test machine; scripts/bench recovery measures (<= 2 s)

# What a device may name as the reason of its new session in each case.
REASONS = {
    ("socket", "rotate-session"): {"line"},
    ("socket", "disconnect"): {"line"},
    ("socket", "kill-restart"): {"line"},
    ("socket", "displaced"): {"nosession", "timeout"},
    ("pty", "rotate-session"): {"nosession", "timeout"},
    ("pty", "disconnect"): {"nosession", "timeout"},
    ("pty", "kill-restart"): {"nosession", "timeout"},
    ("pty", "displaced"): {"nosession", "timeout"},
}


def cobs_decode(b):
    out, i = bytearray(), 0
    while i < len(b):
        code = b[i]
        out += b[i + 1:i + code]
        i += code
        if code < 0xff and i < len(b):
            out.append(0)
    return bytes(out)


def forged_data(s):
    """Forged DATA frames for random sessions on a fresh connection: the gateway answers with at
    most a burst of NOSESSION frames (8 bytes, the session id echoed), rate-limited."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "gv", os.path.join(here, "..", "..", "scripts", "gen-vectors.py"))
    gv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gv)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(s.sock)
    sids = [0x1000 + i for i in range(40)]
    wire = b"\x00"
    for sid in sids:
        frame = gv.hdr(3) + struct.pack("<IQ", sid, 1) + bytes(24)
        wire += gv.wire(frame)
    t0 = time.monotonic()
    c.sendall(wire)
    c.settimeout(0.2)
    got = b""
    while time.monotonic() - t0 < 1.0:
        try:
            d = c.recv(4096)
            if not d:
                break
            got += d
        except socket.timeout:
            pass
    c.close()
    el = time.monotonic() - t0
    frames = [cobs_decode(x) for x in got.split(b"\x00") if x]
    nos = [f for f in frames if len(f) == 12 and f[:2] == bytes([gv.VERSION, 4])]
    check(len(nos) == len(frames) and 1 <= len(nos) <= 2 + 2 * el + 1,
          f"40 forged DATA frames get {len(nos)} NOSESSION answer(s) in {el:.1f} s "
          "(per-link limit: burst 2, 2/s)")
    check(all(f[4:8] in {struct.pack("<I", x) for x in sids} for f in nos) and
          all(len(f) - 4 == 8 for f in nos),
          "each is 8 bytes and echoes a session id it was sent")


def main():
    tmp = TempDir()
    s = None
    try:
        s = Setup(tmp)

        def report(transport, case, secs, reason):
            check(secs is not None and secs <= BOUND_S,
                  f"{transport} {case}: the next message is ACKed "
                  f"{'never' if secs is None else f'after {secs:.3f} s'} (<= {BOUND_S} s)")
            if case != "startup":
                check(reason in REASONS[(transport, case)],
                      f"{transport} {case}: the device says why it reconnected ({reason})")

        s.run_cases(report)
        forged_data(s)
        st = s.d.ctl_json("status")["link"]["counters"]
        check(st.get("nosession_sent", 0) >= 1,
              f"the gateway counts its NOSESSION answers ({st.get('nosession_sent')})")
        acked = s.acked_ok()
        results = s.stop()
        print(f"# sims: {results}", flush=True)
        check(all(r.get("reconnects", 0) >= 1 for r in results),
              "every simulator reports its reconnects "
              f"({[r.get('reconnect_reasons') for r in results]})")
        outbox = s.outbox()
        missing = sorted(acked - outbox)
        check(len(acked) > 100 and not missing,
              f"no acked message is lost: {len(acked)} acked OK, all in the outbox "
              f"(missing: {missing[:5]})")
        log = s.d.read_log()
        check("session reason nosession" in log,
              "the gateway logs the reason from the device's STATUS")
    finally:
        if s:
            s.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
