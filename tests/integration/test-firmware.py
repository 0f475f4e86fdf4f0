# SPDX-License-Identifier: Apache-2.0
"""The device SDK on a real MCU target: the reference firmware of examples/firmware/ (Cortex-M4,
PSA port on mbedTLS built from Debian's source package) boots on QEMU mps2-an386 with
-icount shift=0 and talks to the real mcugwd over a serial line (a socat pty pair: the daemon
opens one end as SerialPort=, QEMU's UART0 the other). Its keys come from a provisioning page
loaded by QEMU, not from the image. Checks: the handshake (auth.ok audited, device connected),
STATUS with the firmware version, and telemetry every message of which the gateway ACKs (counted
by the daemon, found in the outbox, and counted by the firmware, whose UART1 console the test
reads). The device is enrolled with `mcugwctl device add` and its public key. Then a power
cycle: the firmware boots again, handshakes again and its telemetry is ACKed again.

Skips (77) only on a developer box where qemu-system-arm, socat or the cross compiler is
missing; under CI (the CI environment variable set) a missing tool is a failure."""

import base64
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import Daemon, TempDir, base_config, check, finish, skip, wait_for  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.environ.get("MCUGW_BUILD_DIR", os.path.join(ROOT, "build"))
QEMU = os.environ.get("QEMU_SYSTEM_ARM", "qemu-system-arm")
PROV_ADDR = 0x3F000
DEVICE_ID = "fw-m4-0001"
FW_VERSION = "fw-example-1.0.0"
ACKS = 5


def require_tools():
    missing = [t for t in (QEMU, "arm-none-eabi-gcc", "socat") if not shutil.which(t)]
    if not missing:
        return
    msg = f"test-firmware: missing {', '.join(missing)} " \
          "(apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi socat)"
    skip(msg)


def x25519_keypair(seed):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    import hashlib
    priv = hashlib.sha256(seed).digest()
    pub = X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return priv, pub


def prov_page(device_id, priv, gw_pub, rng_seed, boot_counter):
    """struct prov_page of examples/firmware/port.h."""
    return struct.pack("<II36s32s32s32sI", 0x5057474D, 1, device_id.encode(), priv, gw_pub,
                       rng_seed, boot_counter)


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def console(tmp, name="console.log"):
    try:
        with open(tmp.join(name), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main():
    require_tools()
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(ROOT, "scripts", "build-firmware"), BUILD],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        print(r.stdout + r.stderr, flush=True)
    check(r.returncode == 0, "scripts/build-firmware builds the firmware (or reuses the cache)")
    if r.returncode != 0:
        finish()
    elf = os.path.join(BUILD, "firmware", "mcugw-fw.elf")
    print(f"# firmware ready in {time.monotonic() - t0:.1f}s", flush=True)

    tmp = TempDir()
    procs = []
    d = None
    try:
        priv, pub = x25519_keypair(b"mcugw firmware test device")

        gw_tty, fw_tty = tmp.join("gw-tty"), tmp.join("fw-tty")
        socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={gw_tty}",
                                  f"pty,raw,echo=0,link={fw_tty}"],
                                 stdout=subprocess.DEVNULL, stderr=open(tmp.join("socat.err"), "w"))
        procs.append(socat)
        check(wait_for(lambda: os.path.exists(gw_tty) and os.path.exists(fw_tty), timeout=10),
              "socat made the pty pair for the serial line")

        config = base_config(tmp, f"""
[Link]
SerialPort={gw_tty}:115200
""")
        d = Daemon(tmp, config).start()
        r = d.ctl("device", "add", DEVICE_ID, base64.b64encode(pub).decode())
        check(r.returncode == 0, f"the firmware's public key is enrolled ({r.stderr.strip()})")
        gw_pub = base64.b64decode(d.ctl_json("status")["link"]["public_key"])

        def boot(rng_seed, log, boot_counter):
            """Power on: write the provisioning page, start QEMU (UART1 console into @log).
            @boot_counter stands in for the counter a real device keeps in flash: it keeps the
            handshake timestamps growing across power cycles (docs/protocol.md, 3.5)."""
            prov = tmp.join("prov.bin")
            with open(prov, "wb") as f:
                f.write(prov_page(DEVICE_ID, priv, gw_pub, rng_seed, boot_counter))
            p = subprocess.Popen(
                [QEMU, "-M", "mps2-an386", "-nographic", "-icount", "shift=0", "-monitor", "none",
                 "-kernel", elf, "-device", f"loader,file={prov},addr={PROV_ADDR:#x}",
                 "-chardev", f"serial,id=link,path={fw_tty}", "-serial", "chardev:link",
                 "-serial", f"file:{tmp.join(log)}"],
                stdin=subprocess.DEVNULL, stdout=open(tmp.join("qemu.out"), "a"),
                stderr=subprocess.STDOUT)
            procs.append(p)
            return p

        qemu = boot(b"QEMU ONLY: not a TRNG".ljust(32, b"."), "console.log", 1)
        t1 = time.monotonic()

        ok = wait_for(lambda: devices(d).get(DEVICE_ID, {}).get("connected"), timeout=30)
        check(ok, "the firmware completes the handshake: device connected")
        if ok:
            print(f"# connected {time.monotonic() - t1:.1f}s after boot", flush=True)
        audit = d.ctl_json("audit", "tail", "-n", "200")
        check(any(x["event"] == "auth.ok" and x["subject"] == DEVICE_ID for x in audit),
              "auth.ok audited for the firmware")
        check("fw: connected" in console(tmp), "the firmware reports the session on its console")
        check(wait_for(lambda: devices(d).get(DEVICE_ID, {}).get("fw_version") == FW_VERSION,
                       timeout=10),
              f"STATUS received: firmware version {FW_VERSION}")
        dev = devices(d)[DEVICE_ID]
        check(dev.get("link", "").startswith("serial:"), "the device is on the serial link")

        def acked():
            return console(tmp).count("fw: ack ") >= ACKS
        check(wait_for(acked, timeout=30), f"{ACKS} telemetry messages each ACKed on the firmware")
        lines = [x for x in console(tmp).splitlines() if x.startswith("fw: ack ")]
        check(all("status=0" in x for x in lines[:ACKS]), "every ACK has status 0 (stored)")
        seqs = [int(x.split("seq=")[1].split()[0]) for x in lines[:ACKS]]
        check(seqs == list(range(1, ACKS + 1)), f"ACKs for seq 1..{ACKS} in order: {seqs}")
        st = devices(d)[DEVICE_ID].get("link_stats", {})
        check(st.get("telemetry", 0) >= ACKS, f"the gateway counted the telemetry ({st})")
        ob = d.ctl_json("status").get("outbox", {})
        check(ob.get("appended", 0) >= ACKS and ob.get("refused", 1) == 0,
              f"the telemetry reached the outbox ({ob})")
        check("fw: error" not in console(tmp), "no dropped frames or gateway errors on the device")
        print(f"# {ACKS} acks {time.monotonic() - t1:.1f}s after boot", flush=True)
        res = [x for x in console(tmp).splitlines() if "heap_peak=" in x]
        if res:
            print(f"# resources: {res[-1]}", flush=True)

        # Power cycle: the firmware boots again and makes a new session. The emulator's seed
        # stands in for the TRNG, so a new boot gets a new seed (with the same seed the same
        # virtual instant would draw the same ephemeral key and send the same message 1).
        qemu.kill()
        qemu.wait()
        boot(os.urandom(32), "console2.log", 2)
        check(wait_for(lambda: "fw: connected" in console(tmp, "console2.log"), timeout=30),
              "after a power cycle the firmware handshakes again")
        check(wait_for(lambda: console(tmp, "console2.log").count("fw: ack ") >= 2, timeout=20),
              "and its telemetry is ACKed again")
        oks = [x for x in d.ctl_json("audit", "tail", "-n", "500")
               if x["event"] == "auth.ok" and x["subject"] == DEVICE_ID]
        check(len(oks) == 2, f"two auth.ok audited for the firmware ({len(oks)})")
        check(devices(d)[DEVICE_ID].get("connected"), "the device is connected after the reboot")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if d:
            d.stop()
        if os.environ.get("KEEP"):
            print(f"# kept {tmp.path}")
        else:
            for log in ("console.log", "console2.log"):
                out = console(tmp, log)
                print(f"# firmware {log}:\n" +
                      "\n".join("#   " + x for x in out.splitlines()[-20:]), flush=True)
            tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
