# SPDX-License-Identifier: Apache-2.0
"""OTA without a cloud (`mcugwctl ota start FILE`): the real daemon, simulated MCUs on the real
device SDK with the OTA receiver and a file-backed flash slot, images made and signed by
scripts/ota-sign. Happy path with MCUboot version and test-mode reboot + confirm; a bad
signature and an unsigned image are refused before any byte reaches an MCU (job FAILED with a
reason, audited); a downgrade is refused by policy; a group update; a failing self-test leaves
the device on its old firmware; a link dropped mid-transfer and a gateway restart mid-transfer
both resume by offset; abort."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, run,  # noqa: E402
                       check_no_sanitizer_reports, sim_keys, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
SIGN = os.path.join(HERE, "..", "..", "scripts", "ota-sign")


def make_image(tmp, name, version, size, key, sec=1):
    raw = tmp.join(name + ".bin")
    with open(raw, "wb") as f:
        f.write(os.urandom(size))
    img = tmp.join(name + ".img")
    run(SIGN, "mcuboot", raw, img, "--version", version, "--security-counter", str(sec))
    if key:
        run(SIGN, "sign", key, img)
    return img


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def audit(d, n=5000):
    return d.ctl_json("audit", "tail", "-n", str(n))


def job(d, jid):
    return d.ctl_json("ota", "show", jid)


def start(d, img, *target):
    r = d.ctl("ota", "start", img, *target, json_out=True)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def wait_job(d, jid, timeout=60):
    return wait_for(lambda: job(d, jid)["state"] not in ("IN_PROGRESS", "QUEUED"),
                    timeout=timeout, interval=0.2) and job(d, jid)


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
        devs = sim_keys(6, "ota", "ota-")
        with open(os.path.join(devdir, "ota.conf"), "w") as f:
            for i, x in enumerate(devs):
                groups = "line-a" if i in (1, 2) else "line-b"
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n"
                        f"Groups={groups}\n\n")
        link_sock = tmp.join("run", "link.sock")
        slots = tmp.join("slots")
        os.makedirs(slots)
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link_sock}
IdleTimeout=0

[OTA]
CodeSigningCertificate={cert}
MaxConcurrent=4
MaxConcurrentPerLink=1
AbortAfterFailures=0
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]
        check("ota" in d.ctl_json("status"), "status has an ota object")

        def sim(name, first, count=1, extra=()):
            s = Sim(tmp, name, ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}",
                                "--seed", "ota", "--id-prefix", "ota-", "--first-index",
                                str(first), "--count", str(count), "--messages", "0",
                                "--rate", "1", "--ota-dir", slots, "--ota-cert", cert,
                                "--fw-version", "1.0.0", *extra])
            sims.append(s)
            return s

        s0 = sim("s0", 0)
        s12 = sim("s12", 1, 2)
        s3 = sim("s3", 3, extra=("--ota-fail-self-test",))
        s4 = sim("s4", 4, extra=("--baud", "115200"))
        want = [x["id"] for x in devs[:5]]
        check(wait_for(lambda: all(devices(d).get(i, {}).get("connected") for i in want), 20),
              "five OTA-capable simulated MCUs connected")

        # --- happy path -------------------------------------------------------------------
        img2 = make_image(tmp, "fw-2.0.0", "2.0.0", 60000, signer, sec=2)
        r = d.ctl("ota", "start", img2, "--device", "ota-0000", "--wait")
        check(r.returncode == 0, f"ota start --wait ends in SUCCEEDED ({r.stderr.strip()})")
        check("100%" in r.stdout and "succeeded" in r.stdout,
              f"progress is shown while waiting (100%, succeeded): {r.stdout[-300:]!r}")
        jobs = d.ctl_json("ota", "list")
        j = job(d, jobs[0]["id"])
        check(j["state"] == "SUCCEEDED" and j["version"] == "2.0.0" and j["mcuboot"],
              f"job SUCCEEDED with the MCUboot version 2.0.0 ({j['state']}, {j['version']})")
        check(wait_for(lambda: devices(d)["ota-0000"]["fw_version"] == "2.0.0", 10),
              "the device reports firmware 2.0.0 after the reboot")
        with open(img2, "rb") as f, open(os.path.join(slots, "ota-0000.slot"), "rb") as g:
            check(f.read() == g.read(), "the MCU's flash slot holds exactly the image")
        ev = [(x["event"], x["subject"], x["details"]) for x in audit(d)]
        jid = j["id"]
        for e in ("ota.job_received", "ota.signature_ok"):
            check(any(x[0] == e and x[1] == jid for x in ev), f"{e} audited")
        for e in ("ota.transfer_start", "ota.transfer_done"):
            check(any(x[0] == e and x[1] == "ota-0000" and x[2].get("job") == jid for x in ev),
                  f"{e} audited for the device")
        st = [x[2].get("result") for x in ev if x[0] == "ota.self_test" and x[1] == "ota-0000"]
        check(st[-2:] == ["active", "passed"], f"ota.self_test active then passed audited ({st})")
        check("SUCCEEDED" in d.ctl("ota", "list").stdout, "ota list shows the job (table)")

        # --- a bad signature and an unsigned image: nothing reaches the MCU -----------------
        slot_mtime = os.stat(os.path.join(slots, "ota-0000.slot")).st_mtime_ns
        img3 = make_image(tmp, "fw-3.0.0", "3.0.0", 30000, os.path.join(tmp.join("evil"),
                                                                         "signer.key"))
        r = d.ctl("ota", "start", img3, "--device", "ota-0000")
        check(r.returncode != 0 and "signature" in r.stderr,
              f"a badly signed image is refused with a clear error ({r.stderr.strip()})")
        bad = d.ctl_json("ota", "list")[0]
        check(bad["state"] == "FAILED" and "signature" in bad.get("reason", ""),
              f"the job is FAILED with the reason ({bad})")
        ev = audit(d)
        check(any(x["event"] == "ota.signature_failed" and x["subject"] == bad["id"] for x in ev),
              "ota.signature_failed audited")
        check(not any(x["event"].startswith("ota.transfer") and
                      x["details"].get("job") == bad["id"] for x in ev),
              "no transfer started for the refused job")
        time.sleep(0.5)
        check(os.stat(os.path.join(slots, "ota-0000.slot")).st_mtime_ns == slot_mtime,
              "not a byte reached the MCU's flash")
        unsigned = make_image(tmp, "fw-3.1.0", "3.1.0", 1000, None)
        r = d.ctl("ota", "start", unsigned, "--device", "ota-0000")
        check(r.returncode != 0 and "AllowUnsigned" in r.stderr,
              f"an unsigned image is refused (AllowUnsigned=no): {r.stderr.strip()}")
        old = make_image(tmp, "fw-1.5.0", "1.5.0", 1000, signer)
        r = d.ctl("ota", "start", old, "--device", "ota-0000")
        check(r.returncode != 0 and "downgrade" in r.stderr,
              f"a downgrade is refused by policy: {r.stderr.strip()}")

        # --- a group: two devices, one cached image ---------------------------------------
        cache_before = d.ctl_json("status")["ota"]["cache_bytes"]
        r, jg = start(d, img2, "--group", "line-a")
        check(r.returncode == 0 and jg["devices"] == 2, "a group job targets both devices")
        jg = wait_job(d, jg["id"])
        check(jg and jg["state"] == "SUCCEEDED" and jg["succeeded"] == 2,
              f"both devices of the group updated ({jg and jg['state']})")
        check(d.ctl_json("status")["ota"]["cache_bytes"] == cache_before,
              "the same image is served from the cache (no second copy)")

        # --- the self-test fails: job FAILED, device stays on the old firmware ---------------
        r, jf = start(d, img2, "--device", "ota-0003")
        jf = wait_job(d, jf["id"])
        check(jf and jf["state"] == "FAILED" and "self-test" in jf.get("reason", ""),
              f"a failing self-test ends the job FAILED with the reason ({jf and jf.get('reason')})")
        check(wait_for(lambda: devices(d)["ota-0003"]["fw_version"] == "1.0.0", 10),
              "the device reverted to its old firmware 1.0.0")
        check(any(x["event"] == "ota.self_test" and x["subject"] == "ota-0003" and
                  x["details"].get("result") == "failed" for x in audit(d)),
              "the failed self-test is audited")

        # --- link dropped mid-transfer: resume by offset -----------------------------------
        big = make_image(tmp, "fw-2.1.0", "2.1.0", 120000, signer)
        r, jb = start(d, big, "--device", "ota-0004")
        check(wait_for(lambda: job(d, jb["id"])["transfers"][0]["offset"] > 30000, 20),
              "slow (115200 baud) transfer under way")
        sent_before = d.ctl_json("status")["ota"]["bytes_sent"]
        check(d.ctl("device", "disconnect", "ota-0004").returncode == 0, "link dropped")
        jb = wait_job(d, jb["id"], 60)
        check(jb and jb["state"] == "SUCCEEDED", f"the transfer finished after the drop ({jb and jb['state']})")
        check(jb and jb["transfers"][0].get("resumed"), "... resumed by offset, not restarted")
        check(any(x["event"] == "ota.transfer_resume" and x["subject"] == "ota-0004"
                  for x in audit(d)), "ota.transfer_resume audited")
        sent = d.ctl_json("status")["ota"]["bytes_sent"] - sent_before
        check(sent < 120000, f"less than one image re-sent after the drop ({sent} bytes)")

        # --- gateway restart mid-transfer ----------------------------------------------------
        img22 = make_image(tmp, "fw-2.2.0", "2.2.0", 120000, signer)
        r, jr = start(d, img22, "--device", "ota-0004")
        check(wait_for(lambda: job(d, jr["id"])["transfers"][0]["offset"] > 30000, 20),
              "second slow transfer under way")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        d.start()
        check(wait_for(lambda: devices(d).get("ota-0004", {}).get("connected"), 20),
              "the device reconnected to the restarted gateway")
        jr2 = wait_job(d, jr["id"], 60)
        check(jr2 and jr2["state"] == "SUCCEEDED" and jr2["transfers"][0].get("resumed"),
              f"after kill -9 of the gateway the job resumed by offset and succeeded "
              f"({jr2 and jr2['state']})")
        check(wait_for(lambda: devices(d)["ota-0004"]["fw_version"] == "2.2.0", 10),
              "the device runs 2.2.0")

        # --- abort ------------------------------------------------------------------------
        img23 = make_image(tmp, "fw-2.3.0", "2.3.0", 200000, signer)
        r, ja = start(d, img23, "--device", "ota-0004")
        wait_for(lambda: job(d, ja["id"])["transfers"][0]["offset"] > 10000, 20)
        check(d.ctl("ota", "abort", ja["id"]).returncode == 0, "ota abort")
        ja = job(d, ja["id"])
        check(ja["state"] == "CANCELED" and ja["transfers"][0]["state"] == "aborted",
              "the job is CANCELED and the transfer aborted")
        check(d.ctl("ota", "abort", ja["id"]).returncode != 0, "aborting twice is an error")
        check(d.ctl("ota", "show", "nope").returncode != 0, "ota show of an unknown job fails")

        # --- rollout controls: one at a time, abort after the first failure ------------------
        d.write_config(config.replace("MaxConcurrent=4", "MaxConcurrent=1")
                       .replace("AbortAfterFailures=0", "AbortAfterFailures=1"))
        check(d.ctl("reload").returncode == 0, "reload with MaxConcurrent=1, AbortAfterFailures=1")
        img3ok = make_image(tmp, "fw-3.0.0-ok", "3.0.0", 40000, signer)
        r, jl = start(d, img3ok, "--group", "line-b")  # ota-0000, -0003 (fails), -0004, -0005
        check(r.returncode == 0 and jl["devices"] == 4, "a job for the four devices of line-b")
        peak = [0]

        def sample():
            j = job(d, jl["id"])
            act = sum(x["state"] in ("offered", "sending", "rebooting", "testing")
                      for x in j["transfers"])
            peak[0] = max(peak[0], act)
            return j["state"] not in ("IN_PROGRESS", "QUEUED") and j
        jl = wait_for(sample, 90, 0.05)
        check(peak[0] == 1, f"never more than one transfer at a time (peak {peak[0]})")
        states = sorted(x["state"] for x in jl["transfers"]) if jl else []
        check(jl and jl["state"] == "FAILED" and "failed" in states and "aborted" in states,
              f"the first failure aborted the rest of the job ({states})")

        v = d.ctl("audit", "verify", json_out=True)
        check(v.returncode == 0 and json.loads(v.stdout)["ok"], "audit chain still verifies")
        for sm in sims:
            sm.stop()
        rc = d.stop()
        check(rc == 0, f"mcugwd exits 0 on SIGTERM ({rc})")
        check_no_sanitizer_reports(d, tmp)
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
            if "--keep" in sys.argv:
                print("kept", tmp.path)
            else:
                tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
