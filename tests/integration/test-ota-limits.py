# SPDX-License-Identifier: Apache-2.0
"""OTA reaches the smallest devices the spec allows (docs/protocol.md 2.2, 12.2): simulated MCUs
on the real device SDK announcing receive limits of 96 (the minimum), 128 (the reference minimal
device) and 1024 bytes, over a Unix socket and the 96-byte one also over a pseudo-terminal, all
get the same signed MCUboot image from the real daemon (`mcugwctl ota start`): the OFFER goes
out in pieces that fit every limit, each transfer SUCCEEDS, the flash slot holds exactly the
image and the device reboots into the new version. No message was too big for any device
(`too_big` stays 0). Two of them announce a window that is not a multiple of their chunk size
(1.5 chunks), and every device acknowledges 30 ms late (busy with its flash): the gateway never
has more than the window beyond the last acknowledged offset in flight, not even by the end of a
chunk (a real MCU sizes its window to its receive ring; the reference firmware under QEMU lost
bytes when the gateway overran it). Before the OFFER was split, the 96 and 128 devices never got it and each
job failed after ~60 s with "no progress from the device"."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, run,  # noqa: E402
                       sim_keys, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
SIGN = os.path.join(HERE, "..", "..", "scripts", "ota-sign")

# (name, --rx-frame, transport, --ota-window): a chunk is the limit - 41 bytes; 82 and 1474 are
# 1.5 chunks of the 96- and 1024-byte devices.
DEVICES = (("r96", 96, "unix", 82), ("r128", 128, "unix", 16384), ("r1024", 1024, "unix", 1474),
           ("p96", 96, "pty", 16384))


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        keys = tmp.join("keys")
        run(SIGN, "keygen", keys)
        signer = os.path.join(keys, "signer.key")
        cert = os.path.join(keys, "signer.crt")

        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        ids = {}
        with open(os.path.join(devdir, "ota.conf"), "w") as f:
            for name, *_ in DEVICES:
                x = sim_keys(1, name, f"{name}-")[0]
                ids[name] = x["id"]
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n\n")
        link_sock = tmp.join("run", "link.sock")
        tty = tmp.join("tty0")
        slots = tmp.join("slots")
        os.makedirs(slots)
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link_sock}
SerialPort={tty}:115200
IdleTimeout=0

[OTA]
CodeSigningCertificate={cert}
MaxConcurrent=4
MaxConcurrentPerLink=1
AbortAfterFailures=0
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]

        for name, limit, transport, window in DEVICES:
            target = f"unix:{link_sock}" if transport == "unix" else f"pty:{tty}"
            sims.append(Sim(tmp, name, [
                "--gateway-key", gw_key, "--connect", target, "--seed", name, "--id-prefix",
                f"{name}-", "--messages", "0", "--rate", "1", "--ota-dir", slots,
                "--ota-cert", cert, "--fw-version", "1.0.0", "--rx-frame", str(limit),
                "--ota-window", str(window), "--ota-ack-delay", "30"]))
        check(wait_for(lambda: all(devices(d).get(i, {}).get("connected") for i in ids.values()),
                       20), "four devices connected (receive limits 96, 128, 1024; socket, pty)")

        # Small enough to stay quick over 115200 baud with 55-byte chunks, large enough for
        # many windows.
        raw = tmp.join("fw.bin")
        with open(raw, "wb") as f:
            f.write(os.urandom(6000))
        img = tmp.join("fw.img")
        run(SIGN, "mcuboot", raw, img, "--version", "2.0.0", "--security-counter", "2")
        run(SIGN, "sign", signer, img)
        with open(img, "rb") as f:
            image = f.read()

        jobs = {}
        for name, *_ in DEVICES:
            r = d.ctl("ota", "start", img, "--device", ids[name], json_out=True)
            check(r.returncode == 0, f"{name}: ota start accepted ({r.stderr.strip()})")
            if r.returncode == 0:
                jobs[name] = json.loads(r.stdout)["id"]

        def done():
            return all(d.ctl_json("ota", "show", j)["state"] not in ("IN_PROGRESS", "QUEUED")
                       for j in jobs.values())
        check(wait_for(done, 50, 0.2), "every job finished (well before the 60 s stall limit)")
        for name, limit, transport, _ in DEVICES:
            if name not in jobs:
                continue
            j = d.ctl_json("ota", "show", jobs[name])
            check(j["state"] == "SUCCEEDED",
                  f"{name} (limit {limit}, {transport}): job SUCCEEDED ({j['state']}, "
                  f"{j.get('reason', '')})")
            path = os.path.join(slots, f"{ids[name]}.slot")
            held = open(path, "rb").read() if os.path.exists(path) else b""
            check(held == image, f"{name}: the flash slot holds exactly the image")
            check(wait_for(lambda: devices(d)[ids[name]]["fw_version"] == "2.0.0", 10),
                  f"{name}: the device reports firmware 2.0.0 after the reboot")
        counters = d.ctl_json("status")["link"]["counters"]
        check(counters.get("too_big", -1) == 0,
              f"no message was too big for any device (too_big {counters.get('too_big')})")
        for (name, _, _, window), s in zip(DEVICES, sims):
            over = s.stop().get("ota_over_window")
            check(over == 0, f"{name}: nothing sent beyond its {window}-byte window "
                  f"({over} bytes over)")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
    finish()


if __name__ == "__main__":
    main()
