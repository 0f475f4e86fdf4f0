# SPDX-License-Identifier: Apache-2.0
"""The cloud side of OTA against a scripted cloud that behaves as AWS IoT documents it
(aws_cloud.py: notify/notify-next shapes, seconds timestamps, versionNumber, terminal-state
rejections, 128 KB per stream request, ResourceNotFound, CancelJob --force), over a real
Mosquitto with mutual TLS and the real daemon.

Covered: executions of other things are never acted on nor answered (both targetings); a job
cancelled mid-download installs nothing and gets no further update; a missing stream and a
stream deleted mid-download end FAILED with the precise reason within the retry budget and with
a bounded number of requests; thing-per-device polling reaches the 900th of 1,000 devices;
stream requests stay within 128 KB."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (SIM, Daemon, Sim, TempDir, base_config, check, finish, run,  # noqa
                       wait_for)
from broker import Broker  # noqa
from aws_cloud import AwsCloud  # noqa

HERE = os.path.dirname(os.path.abspath(__file__))
SIGN = os.path.join(HERE, "..", "..", "scripts", "ota-sign")


def make_image(tmp, name, version, size, key):
    raw = tmp.join(name + ".bin")
    with open(raw, "wb") as f:
        f.write(os.urandom(size))
    img = tmp.join(name + ".img")
    run(SIGN, "mcuboot", raw, img, "--version", version, "--security-counter", "1")
    run(SIGN, "sign", key, img)
    with open(img, "rb") as f:
        data = f.read()
    return data, run(SIGN, "base64", img + ".sig")


def job_document(stream, size, sig, devices=None):
    doc = {"afr_ota": {"protocols": ["MQTT"], "streamname": stream,
                       "files": [{"filepath": "/firmware.bin", "filesize": size, "fileid": 0,
                                  "certfile": "ecdsasigner.crt", "sig-sha256-ecdsa": sig}]}}
    if devices:
        doc["mcugw"] = {"devices": devices}
    return doc


def main():
    tmp = TempDir()
    broker = Broker(tmp.path).start()
    cloud = None
    d = None
    sims = []
    try:
        cloud = AwsCloud(broker)
        keys = tmp.join("keys")
        run(SIGN, "keygen", keys)
        signer, cert = os.path.join(keys, "signer.key"), os.path.join(keys, "signer.crt")
        devs = json.loads(run(SIM, "keys", "--count", "3", "--seed", "jobs", "--id-prefix",
                              "j-", "--json"))
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        with open(os.path.join(devdir, "j.conf"), "w") as f:
            for x in devs:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n\n")
        slots = tmp.join("slots")
        os.makedirs(slots)
        link_sock = tmp.join("run", "link.sock")
        gw_cert = broker.certs.client("it-gw")
        config = (base_config(tmp) + broker.mqtt_config(*gw_cert) + f"""
[Link]
ListenStream=unix:{link_sock}
IdleTimeout=0

[OTA]
CodeSigningCertificate={cert}
Targeting=thing-per-device
DownloadBlockSize=4K
AbortAfterFailures=0
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "the gateway's MQTT session is up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        for i in range(3):
            sims.append(Sim(tmp, f"j{i}", ["--gateway-key", gw_key, "--connect",
                                           f"unix:{link_sock}", "--seed", "jobs",
                                           "--id-prefix", "j-", "--first-index", str(i),
                                           "--messages", "0", "--rate", "1", "--ota-dir", slots,
                                           "--ota-cert", cert, "--fw-version", "1.0.0"]))

        def devices():
            return {x["id"]: x for x in d.ctl_json("devices")}
        check(wait_for(lambda: all(devices().get(x["id"], {}).get("connected") for x in devs),
                       20), "three simulated MCUs connected")

        def final(thing, job, timeout=60):
            ok = wait_for(lambda: (cloud.execution(thing, job) or {}).get("status")
                          in ("SUCCEEDED", "FAILED"), timeout, 0.2)
            return (cloud.execution(thing, job) or {}).get("status") if ok else None

        def audit():
            return d.ctl_json("audit", "tail", "-n", "5000")

        def rejected_for(thing):
            return [r for r in cloud.rejected if r[0].startswith(f"$aws/things/{thing}/")]

        data, sig = make_image(tmp, "fw-2.0.0", "2.0.0", 40000, signer)
        cloud.create_stream("AFR_OTA-a", {0: data})

        # --- other things' jobs: never acted on, never answered --------------------------------
        foreign = [("other-gw-j-0000", "job-f1", job_document("AFR_OTA-a", len(data), sig)),
                   ("other-gw", "job-f2", job_document("AFR_OTA-a", len(data), sig, ["j-0000"])),
                   ("it-gw-nosuch", "job-f3", job_document("AFR_OTA-a", len(data), sig))]
        for thing, job, doc in foreign:
            cloud.create_job(thing, job, doc)
        # A plain (non-OTA) job on the gateway's own thing is ours: refused with the reason.
        cloud.create_job("it-gw", "job-plain", {"operation": "reboot"})
        st = final("it-gw", "job-plain", 20)
        reason = (cloud.updates("it-gw", "job-plain") or [("", "", "", {})])[-1][3].get("reason",
                                                                                        "")
        check(st == "FAILED" and "not an OTA job document" in reason,
              f"a plain job on the gateway's thing: FAILED, not an OTA job document ({reason})")
        time.sleep(2)
        for thing, job, _ in foreign:
            check(cloud.execution(thing, job)["status"] == "QUEUED" and
                  not cloud.updates(thing, job) and not rejected_for(thing),
                  f"{thing}: its execution untouched, nothing published on its topics")
        check(not any(r["_thing"] != "it-gw" and not r["_thing"].startswith("it-gw-j-")
                      for r in cloud.requests), "no stream request on another thing's topics")
        check(not os.path.exists(os.path.join(slots, "j-0000.slot")),
              "no byte of another thing's job reached our MCU")
        ev = [x for x in audit() if x["event"] == "ota.foreign_thing"]
        subjects = sorted(x["subject"] for x in ev)
        check(subjects == sorted(["other-gw-j-0000", "other-gw", "it-gw-nosuch"]),
              f"each foreign thing audited once ({subjects})")
        cl = d.ctl_json("status")["ota"]["cloud"]
        check(cl["foreign_messages"] >= 3, f"foreign messages counted ({cl['foreign_messages']})")

        # --- Targeting=gateway: only the gateway's own thing -----------------------------------
        d.stop()
        d.write_config(config.replace("Targeting=thing-per-device", "Targeting=gateway"))
        d.start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected" and
                       devices()["j-0000"].get("connected"), 20),
              "restarted with Targeting=gateway")
        cloud.create_job("other-gw", "job-f4", job_document("AFR_OTA-a", len(data), sig,
                                                            ["j-0000"]))
        cloud.create_job("it-gw-j-0000", "job-f5", job_document("AFR_OTA-a", len(data), sig))
        cloud.create_job("it-gw", "job-gw", job_document("AFR_OTA-a", len(data), sig,
                                                         ["j-0002"]))
        st = final("it-gw", "job-gw")
        check(st == "SUCCEEDED", f"Targeting=gateway: the gateway's own job SUCCEEDED ({st})")
        for thing, job in (("other-gw", "job-f4"), ("it-gw-j-0000", "job-f5")):
            check(cloud.execution(thing, job)["status"] == "QUEUED" and
                  not cloud.updates(thing, job),
                  f"Targeting=gateway: {thing}'s execution untouched")
        check(devices()["j-0000"]["fw_version"] == "1.0.0", "j-0000 keeps its firmware")
        d.stop()
        d.write_config(config)
        d.start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "back to Targeting=thing-per-device")
        # The part below uses j-0000 and j-0001; the foreign executions are done with.
        for thing, job in (("other-gw-j-0000", "job-f1"), ("it-gw-j-0000", "job-f5")):
            cloud.cancel_job(thing, job, force=True)

        # @@MORE@@

        check(json.loads(d.ctl("audit", "verify", json_out=True).stdout)["ok"],
              "audit chain verifies")
        for sm in sims:
            sm.stop()
        rc = d.stop()
        check(rc == 0, f"mcugwd exits 0 on SIGTERM ({rc})")
        logs = d.read_log()
        check("ERROR: AddressSanitizer" not in logs and "runtime error" not in logs,
              "no sanitizer reports from the daemon")
    finally:
        for s in sims:
            s.stop()
        if cloud:
            cloud.close()
        if d:
            d.stop()
        broker.stop()
        if "--keep" in sys.argv:
            print("kept", tmp.path)
        else:
            tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
