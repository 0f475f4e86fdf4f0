#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""scripts/bench mcu: the reference firmware (examples/firmware/) under QEMU against the real
mcugwd, Cortex-M4 (mps2-an386) and, as the same-run comparison, Cortex-M3 (mps2-an385).

Instruction counts: QEMU runs with -icount shift=0, one instruction per nanosecond of virtual
time; the firmware times each operation with SysTick (40 ns resolution) and prints the counts on
its console. They are INSTRUCTIONS, not cycles of any real part (a real M4 needs more cycles
than instructions: wait states, multi-cycle loads, multiplies on the M3). A handshake is counted
from message 1 to CONNECTED, idle time excluded; telemetry is one 8-byte message with an ACK
requested (encrypt, frame, UART writes); the ECDSA P-256 verify is the OTA signature check.

Memory: flash and RAM per component from the linker map (sdk: the device SDK and protocol
core; port: the PSA crypto port and the example's port glue and flash port; crypto: mbedTLS;
app: the application, board support and startup; libc: newlib-nano and libgcc), the stack
high-water mark by painting at run time, and a static worst case from -fcallgraph-info=su
(indirect calls resolved to the deepest function that is never called directly, i.e. a
callback or crypto table entry: an upper bound of the call graph, not of interrupts nesting).

Usage: bench-mcu.py BUILD-DIR. The last line is one JSON object."""

import base64
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build-bench"))
os.environ.setdefault("MCUGWD", os.path.join(BUILD, "src", "mcugwd"))
os.environ.setdefault("MCUGWCTL", os.path.join(BUILD, "src", "mcugwctl", "mcugwctl"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mcugwtest import OTA_SIGN, Daemon, TempDir, base_config, run, wait_for  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "fwtest", os.path.join(ROOT, "tests", "integration", "test-firmware.py"))
fwtest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fwtest)

QEMU = os.environ.get("QEMU_SYSTEM_ARM", "qemu-system-arm")
MACHINE = {"m4": "mps2-an386", "m3": "mps2-an385"}


def component(path):
    if "/sdk/device/port/" in path or "/app/port.o" in path or "/app/slots.o" in path:
        return "port"
    if "/sdk/" in path:
        return "sdk"
    if "libmbedcrypto" in path or "/mbedcrypto-" in path:
        return "crypto"
    if "/app/" in path:
        return "app"
    return "libc"


def map_sizes(path):
    """{component: {"flash": n, "ram": n}} from a GNU ld map file (input sections)."""
    out = {c: {"flash": 0, "ram": 0} for c in ("sdk", "port", "crypto", "app", "libc")}
    with open(path) as f:
        text = f.read()
    text = text[text.index("Linker script and memory map"):]
    # An input section line, its name possibly alone on the line before.
    pat = re.compile(r"^ (\.[^\s]+|COMMON)\s*\n?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$",
                     re.M)
    for m in pat.finditer(text):
        name, addr, size, obj = m.group(1), int(m.group(2), 16), int(m.group(3), 16), m.group(4)
        if not size or name.startswith((".debug", ".comment", ".ARM.attributes")) or \
                addr == 0 and not name.startswith(".vectors"):
            continue
        c = component(obj)
        if name.startswith((".text", ".rodata", ".ARM.exidx", ".vectors")):
            out[c]["flash"] += size
        elif name.startswith(".data"):
            out[c]["flash"] += size  # the initial values
            out[c]["ram"] += size
        elif name.startswith((".bss", "COMMON")):
            out[c]["ram"] += size
    return out


def static_stack(ci_files):
    """Worst-case stack of main() from the -fcallgraph-info=su call graphs."""
    frame, edges = {}, {}
    node = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*\\n(\d+) bytes')
    edge = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
    for p in ci_files:
        with open(p) as f:
            for line in f:
                m = node.match(line)
                if m:
                    frame[m.group(1)] = max(frame.get(m.group(1), 0), int(m.group(2)))
                    continue
                m = edge.match(line)
                if m:
                    edges.setdefault(m.group(1), set()).add(m.group(2))
    called = set().union(*edges.values()) if edges else set()
    roots = {"main", "reset_handler", "systick_handler", "uart0_rx_handler", "fault_handler",
             "fault_report", "early_init"}
    # Indirect call targets: functions with a frame that nothing calls directly.
    indirect = [n for n in frame if n not in called and n.rsplit(":", 1)[-1] not in roots]
    memo = {}

    def depth(n, path):
        if n in memo:
            return memo[n]
        if n in path:
            return 0  # recursion: counted once
        path.add(n)
        best = 0
        for t in edges.get(n, ()):
            if t == "__indirect_call":
                best = max(best, max((depth(i, path) for i in indirect), default=0))
            else:
                best = max(best, depth(t, path))
        path.discard(n)
        memo[n] = frame.get(n, 0) + best
        return memo[n]

    return depth("main", set())


def run_cpu(cpu, tmp):
    fwdir = os.path.join(BUILD, "firmware")
    elf = os.path.join(fwdir, f"{cpu}-a", "mcugw-fw.elf")
    device_id = f"bench-{cpu}"
    priv, pub = fwtest.x25519_keypair(b"bench " + cpu.encode())
    keys = tmp.join(f"signer-{cpu}")
    run(OTA_SIGN, "keygen", keys)
    key = os.path.join(keys, "signer.key")
    gw_tty, fw_tty = tmp.join(f"gw-{cpu}"), tmp.join(f"fw-{cpu}")
    procs = []
    d = None
    log = f"console-{cpu}.log"
    try:
        procs.append(subprocess.Popen(["socat", f"pty,raw,echo=0,link={gw_tty}",
                                       f"pty,raw,echo=0,link={fw_tty}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not wait_for(lambda: os.path.exists(gw_tty) and os.path.exists(fw_tty), 10):
            raise SystemExit("bench-mcu: socat made no pty pair")
        d = Daemon(tmp, base_config(tmp, f"""
[Link]
SerialPort={gw_tty}:115200

[OTA]
CodeSigningCertificate={os.path.join(keys, "signer.crt")}
"""), name=f"mcugw-{cpu}.conf").start()
        d.ctl("device", "add", device_id, base64.b64encode(pub).decode())
        gw_pub = base64.b64decode(d.ctl_json("status")["link"]["public_key"])
        prov = tmp.join(f"prov-{cpu}.bin")
        with open(prov, "wb") as f:
            f.write(fwtest.prov_page(device_id, priv, gw_pub, os.urandom(32),
                                     fwtest.p256_public(key), 1))
        procs.append(subprocess.Popen(
            [QEMU, "-M", MACHINE[cpu], "-nographic", "-icount", "shift=0", "-monitor", "none",
             "-kernel", elf, "-device", f"loader,file={prov},addr=0x3f000",
             "-chardev", f"serial,id=link,path={fw_tty}", "-serial", "chardev:link",
             "-serial", f"file:{tmp.join(log)}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def con():
            return fwtest.console(tmp, log)
        if not wait_for(lambda: con().count("fw: ack ") >= 2, 60):
            raise SystemExit(f"bench-mcu: the {cpu} firmware did not connect:\n{con()}")
        img = fwtest.mcuboot_image(tmp, os.path.join(fwdir, f"{cpu}-b", "mcugw-fw.bin"),
                                   f"fw-{cpu}", "2.0.0", key)
        t0 = time.monotonic()
        r = d.ctl("ota", "start", img, "--device", device_id, "--wait", timeout=120)
        ota_s = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench-mcu: OTA failed: {r.stderr}\n{con()}")
        wait_for(lambda: "fw: ota confirmed" in con(), 30)
        text = con()
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait()
        if d:
            d.stop()

    def ints(key):
        return [int(x) for x in re.findall(rf"\b{key}=(\d+)", text)]
    hs, x25519 = ints("connected insn"), ints("x25519_insn")
    tlm = [int(x) for x in re.findall(r"telemetry seq=\d+ insn=(\d+)", text)]
    mp = map_sizes(os.path.join(fwdir, f"{cpu}-a", "mcugw-fw.map"))
    with open(os.path.join(fwdir, f"{cpu}-a", "mcugw-fw.map")) as f:
        lib = re.search(r"(\S*/mbedcrypto-[^/\s]+)/libmbedcrypto\.a", f.read()).group(1)
    ci = glob.glob(os.path.join(fwdir, f"{cpu}-a", "**", "*.ci"), recursive=True) + \
        glob.glob(os.path.join(lib, "*.ci"))
    return {
        "machine": MACHINE[cpu],
        "handshake_instructions": min(hs),
        "handshakes_measured": len(hs),
        "x25519_instructions": min(x25519),
        "telemetry_instructions": min(tlm),
        "ecdsa_verify_instructions": ints("ecdsa_insn")[0],
        "stack_bytes": max(ints("stack_peak")),
        "stack_static_bytes": static_stack(ci),
        "heap_peak_bytes": max(ints("heap_peak")),
        "sdk_flash_bytes": mp["sdk"]["flash"],
        "firmware_flash_bytes": sum(c["flash"] for c in mp.values()),
        "firmware_ram_bytes": sum(c["ram"] for c in mp.values()),
        "flash_bytes": {c: v["flash"] for c, v in mp.items()},
        "ram_bytes": {c: v["ram"] for c, v in mp.items()},
        "ota_image_bytes": os.path.getsize(img),
        "ota_seconds": round(ota_s, 1),
    }


def main():
    r = subprocess.run([os.path.join(ROOT, "scripts", "build-firmware"), BUILD],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench-mcu: build-firmware failed:\n{r.stdout}{r.stderr}")
    tmp = TempDir()
    try:
        m4 = run_cpu("m4", tmp)
        m3 = run_cpu("m3", tmp)
    finally:
        tmp.cleanup()
    out = {"benchmark": "mcu",
           "source": "QEMU -icount shift=0: instruction counts (1 per virtual ns), not cycles; "
                     "flash/RAM from the linker map; stack painted at run time "
                     "and static from -fcallgraph-info",
           "cpu": "cortex-m4"}
    out.update(m4)
    out["baseline_cortex_m3"] = m3
    print(json.dumps(out))


if __name__ == "__main__":
    main()
