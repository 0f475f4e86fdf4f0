# SPDX-License-Identifier: Apache-2.0
"""`mcugwctl ota start --wait` as an operator sees it, against the real daemon and simulated
MCUs (one behind a 115200-baud link, so a transfer takes seconds): into a pipe, plain lines with
sizes, rate and ETA, one per state change or 10 %; on a terminal (tmux), one line per device
redrawn in place; a group job names the members it leaves out (quarantined) and those it updates
later (offline); a refused job has no version rather than the image's hash."""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWCTL, Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       run, sim_keys, skip, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
SIGN = os.path.join(HERE, "..", "..", "scripts", "ota-sign")


def make_image(tmp, name, version, size, key):
    raw = tmp.join(name + ".bin")
    with open(raw, "wb") as f:
        f.write(os.urandom(size))
    img = tmp.join(name + ".img")
    run(SIGN, "mcuboot", raw, img, "--version", version, "--security-counter", "1")
    run(SIGN, "sign", key, img)
    return img


def tmux(sock, *args):
    return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True,
                          timeout=10)


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        keys = tmp.join("keys")
        run(SIGN, "keygen", keys)
        run(SIGN, "keygen", tmp.join("evil"))
        signer = os.path.join(keys, "signer.key")
        cert = os.path.join(keys, "signer.crt")
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        devs = sim_keys(3, "wait", "w-")
        with open(os.path.join(devdir, "w.conf"), "w") as f:
            for x in devs:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n"
                        f"Groups=line\n\n")
        link_sock = tmp.join("run", "link.sock")
        slots = tmp.join("slots")
        os.makedirs(slots)
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link_sock}
IdleTimeout=0

[OTA]
CodeSigningCertificate={cert}
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]
        # w-0000 behind a slow link; w-0001 connected (to be quarantined); w-0002 never connects.
        for first in (0, 1):
            sims.append(Sim(tmp, f"s{first}", [
                "--gateway-key", gw_key, "--connect", f"unix:{link_sock}", "--seed", "wait",
                "--id-prefix", "w-", "--first-index", str(first), "--count", "1",
                "--messages", "0", "--rate", "1", "--ota-dir", slots, "--ota-cert", cert,
                "--fw-version", "1.0.0", "--baud", "115200"]))
        check(wait_for(lambda: all(x["connected"] for x in d.ctl_json("devices")
                                   if x["id"] in ("w-0000", "w-0001")), 20),
              "two simulated MCUs connected")

        # --- not a terminal: plain lines, with sizes, rate and ETA ------------------------
        img = make_image(tmp, "fw-2", "2.0.0", 40000, signer)
        r = d.ctl("ota", "start", img, "--device", "w-0000", "--wait", timeout=120)
        lines = [x for x in r.stdout.splitlines() if x.startswith("w-0000")]
        check(r.returncode == 0, f"ota start --wait succeeds ({r.stderr.strip()})")
        check("\033[" not in r.stdout and "\r" not in r.stdout,
              "into a pipe: no terminal codes")
        check(any(re.search(r"sending .* \d+%  [\d.]+ KiB of 39\.\d KiB  [\d.]+ (KiB|B)/s  ETA "
                            r"\d+s", x) for x in lines),
              f"progress lines carry the size, the rate and an ETA: {lines}")
        pcts = [int(m.group(1)) for x in lines for m in [re.search(r"(\d+)%", x)] if m]
        check(len(lines) == len(set(lines)) and pcts == sorted(pcts) and len(lines) <= 20,
              f"one line per state change or 10 % step, no repeats ({len(lines)} lines)")
        check(re.search(r"job \S+ SUCCEEDED: 1 of 1 device\(s\) updated to 2\.0\.0", r.stdout),
              f"a closing summary: {r.stdout.splitlines()[-1:]}")

        # --- a terminal: one line per device, redrawn in place ----------------------------
        if subprocess.run(["sh", "-c", "command -v tmux"], capture_output=True).returncode != 0:
            skip("tmux is not installed (apt-get install tmux)")
        img3 = make_image(tmp, "fw-3", "3.0.0", 40000, signer)
        sock = tmp.join("tmux.sock")
        done = tmp.join("done")
        tmux(sock, "-f", "/dev/null", "new-session", "-d", "-s", "ota", "-x", "120", "-y", "30",
             f"{MCUGWCTL} --socket {d.socket} ota start {img3} --device w-0000 --wait; "
             f"echo $? > {done}; sleep 60")
        try:
            seen_moving = wait_for(lambda: any(
                re.search(r"w-0000 +sending .*[1-9]\d?%", x) for x in tmux(
                    sock, "capture-pane", "-p", "-t", "ota").stdout.splitlines()), 60)
            check(seen_moving, "on a terminal the transfer shows while it runs")
            check(wait_for(lambda: os.path.exists(done) and open(done).read().strip(), 120)
                  == "0", "... and ends in success")
            screen = tmux(sock, "capture-pane", "-p", "-t", "ota", "-S", "-100").stdout
            dev_lines = [x for x in screen.splitlines() if x.startswith("w-0000")]
            check(len(dev_lines) == 1 and "succeeded" in dev_lines[0] and "100%" in dev_lines[0],
                  f"one line for the device, redrawn in place to 'succeeded 100%': {dev_lines}")
        finally:
            tmux(sock, "kill-server")

        # --- a group job: who is left out, who is offline ---------------------------------
        r = d.ctl("device", "quarantine", "w-0001", "--reason", "bench")
        check(r.returncode == 0, "w-0001 quarantined")
        img4 = make_image(tmp, "fw-4", "4.0.0", 2000, signer)
        r = d.ctl("ota", "start", img4, "--group", "line")
        check(r.returncode == 0 and "left out: w-0001 (quarantined)" in r.stdout and
              "offline:  w-0002" in r.stdout,
              f"a group job names the member left out and the offline one: {r.stdout!r}")
        d.ctl("ota", "abort", d.ctl_json("ota", "list")[0]["id"])
        img5 = make_image(tmp, "fw-5", "5.0.0", 2000, signer)
        j = json.loads(d.ctl("ota", "start", img5, "--group", "line", json_out=True).stdout)
        check({"device": "w-0001", "reason": "quarantined", "included": False} in
              j.get("left_out", []) and
              {"device": "w-0002", "reason": "offline", "included": True} in j.get("left_out", []),
              f"--json: left_out lists both ({j.get('left_out')})")
        d.ctl("ota", "abort", j["id"])

        # --- a refused job has no version ---------------------------------------------------
        evil = make_image(tmp, "fw-6", "6.0.0", 2000, os.path.join(tmp.join("evil"),
                                                                   "signer.key"))
        r = d.ctl("ota", "start", evil, "--device", "w-0000")
        bad = d.ctl_json("ota", "list")[0]
        check(r.returncode != 0 and bad["state"] == "FAILED" and bad["version"] == "",
              f"a refused job has no version, not the image's hash ({bad})")
        row = [x for x in d.ctl("ota", "list").stdout.splitlines() if x.startswith(bad["id"])]
        check(row and row[0].split()[3] == "-", f"ota list shows - as its version ({row})")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
