# SPDX-License-Identifier: Apache-2.0
"""OTA from the cloud: AWS IoT Jobs + MQTT file streams (CBOR) played by a scripted cloud
(aws_cloud.py) over a real Mosquitto with generated certificates (broker.py); the real daemon
with Targeting=thing-per-device; simulated MCUs on the real device SDK (OTA receiver, flash slot
in a file, signature checked on the MCU too).

A job published on the broker updates an MCU end to end and ends SUCCEEDED with the stock
statusDetails (receive n/m, self_test ready/active, updatedBy, reason); a bad signature ends
FAILED with the reason, audited, no byte to the MCU; truncated, duplicated and out-of-order
blocks are survived; two MCUs needing the same image share one download; a daemon killed
mid-download resumes from the persisted block bitmap; a failing self-test ends FAILED and the
device stays on its old firmware."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (OTA_SIGN, SIM, Daemon, Sim, TempDir, base_config, check, finish,  # noqa
                       check_no_sanitizer_reports, make_signed_image, run, wait_for)
from broker import Broker  # noqa
from aws_cloud import AwsCloud, ota_job_document  # noqa


def main():
    tmp = TempDir()
    broker = Broker(tmp.path).start()
    cloud = None
    d = None
    sims = []
    try:
        cloud = AwsCloud(broker)
        keys = tmp.join("keys")
        run(OTA_SIGN, "keygen", keys)
        run(OTA_SIGN, "keygen", tmp.join("evil"))
        signer, cert = os.path.join(keys, "signer.key"), os.path.join(keys, "signer.crt")
        devs = json.loads(run(SIM, "keys", "--count", "6", "--seed", "cloud", "--id-prefix",
                              "c-", "--json"))
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        with open(os.path.join(devdir, "c.conf"), "w") as f:
            for i, x in enumerate(devs):
                grp = "Groups=line-a\n" if i in (2, 3) else ""
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n"
                        f"{grp}\n")
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
ThingNameTemplate={{gateway}}-{{device}}
DownloadBlockSize=4K
AbortAfterFailures=0
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "the gateway's MQTT session is up")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        for i in range(6):
            extra = ["--ota-fail-self-test"] if i == 5 else []
            sims.append(Sim(tmp, f"c{i}", ["--gateway-key", gw_key, "--connect",
                                           f"unix:{link_sock}", "--seed", "cloud",
                                           "--id-prefix", "c-", "--first-index", str(i),
                                           "--messages", "0", "--rate", "1", "--ota-dir", slots,
                                           "--ota-cert", cert, "--fw-version", "1.0.0",
                                           *extra]))

        def devices():
            return {x["id"]: x for x in d.ctl_json("devices")}
        check(wait_for(lambda: all(devices().get(x["id"], {}).get("connected") for x in devs),
                       20), "six simulated MCUs connected")

        def final(thing, job, timeout=60):
            ok = wait_for(lambda: (cloud.execution(thing, job) or {}).get("status")
                          in ("SUCCEEDED", "FAILED"), timeout, 0.2)
            return (cloud.execution(thing, job) or {}).get("status") if ok else None

        def audit():
            return d.ctl_json("audit", "tail", "-n", "5000")

        # --- happy path ---------------------------------------------------------------------
        data, sig = make_signed_image(tmp, "fw-2.0.0", "2.0.0", 100000, signer)
        cloud.create_stream("AFR_OTA-happy", {0: data})
        cloud.create_job("it-gw-c-0000", "job-happy", ota_job_document("AFR_OTA-happy", len(data),
                                                                   sig))
        st = final("it-gw-c-0000", "job-happy")
        check(st == "SUCCEEDED", f"a job published on the broker ends SUCCEEDED ({st})")
        hist = cloud.updates("it-gw-c-0000", "job-happy")
        details = [h[3] for h in hist]
        check(all(all(isinstance(v, str) for v in x.values()) for x in details),
              "statusDetails is always a flat map of strings")
        check(any(h[2] == "IN_PROGRESS" and "/" in h[3].get("receive", "") and
                  h[3]["receive"].split("/")[0] == h[3]["receive"].split("/")[1] and
                  h[3]["receive"] != "0/1" for h in hist),
              "IN_PROGRESS with receive n/m reaching m/m")
        check([x.get("self_test") for x in details if x.get("self_test")] == ["ready", "active"],
              f"self_test ready then active ({[x.get('self_test') for x in details]})")
        # The stock FreeRTOS agent (ota_mqtt.c) puts updatedBy, the running firmware's version,
        # next to self_test; "receive" stands alone.
        check(all(x.get("updatedBy") for x in details if "self_test" in x),
              "updatedBy reported")
        check(hist and hist[-1][2] == "SUCCEEDED" and "reason" in hist[-1][3],
              f"final SUCCEEDED with a reason ({hist[-1] if hist else None})")
        check(wait_for(lambda: devices()["c-0000"]["fw_version"] == "2.0.0", 10),
              "the MCU runs 2.0.0")
        ev = audit()
        check(any(x["event"] == "ota.job_received" and x["details"].get("source") == "cloud"
                  for x in ev), "ota.job_received (cloud) audited")
        check(any(x["event"] == "ota.signature_ok" for x in ev), "ota.signature_ok audited")
        check(any(x["event"] == "ota.download_done" for x in ev), "ota.download_done audited")

        # --- bad signature ------------------------------------------------------------------
        slot = os.path.join(slots, "c-0001.slot")
        bad, _ = make_signed_image(tmp, "fw-bad", "2.0.0", 20000, signer)
        _, evil_sig = make_signed_image(tmp, "fw-evil", "2.0.0", 20000, os.path.join(tmp.join("evil"),
                                                                              "signer.key"))
        cloud.create_stream("AFR_OTA-bad", {0: bad})
        cloud.create_job("it-gw-c-0001", "job-bad", ota_job_document("AFR_OTA-bad", len(bad),
                                                                 evil_sig))
        st = final("it-gw-c-0001", "job-bad")
        last = cloud.updates("it-gw-c-0001", "job-bad")[-1]
        check(st == "FAILED" and "signature" in last[3].get("reason", ""),
              f"bad signature: job FAILED with the reason ({last})")
        check(any(x["event"] == "ota.signature_failed" for x in audit()),
              "ota.signature_failed audited")
        check(not os.path.exists(slot), "no byte went to the MCU")
        check(devices()["c-0001"]["fw_version"] == "1.0.0", "the MCU keeps its firmware")

        # --- truncated, duplicated, out-of-order blocks --------------------------------------
        cloud.faults = {"truncate", "duplicate", "reorder"}
        data3, sig3 = make_signed_image(tmp, "fw-2.0.1", "2.0.1", 60000, signer)
        cloud.create_stream("AFR_OTA-faults", {0: data3})
        cloud.create_job("it-gw-c-0001", "job-faults", ota_job_document("AFR_OTA-faults",
                                                                    len(data3), sig3))
        st = final("it-gw-c-0001", "job-faults")
        cloud.faults = set()
        check(st == "SUCCEEDED", f"truncated/duplicated/out-of-order blocks: SUCCEEDED ({st})")
        done = [x["details"] for x in audit() if x["event"] == "ota.download_done" and
                x["subject"] == "AFR_OTA-faults"]
        check(done and done[-1]["bad"] > 0 and done[-1]["duplicates"] > 0,
              f"truncated blocks counted as bad, duplicates counted ({done[-1] if done else None})")
        with open(slot, "rb") as f:
            check(f.read() == data3, "the MCU got exactly the image")

        # --- two MCUs share one download -----------------------------------------------------
        data4, sig4 = make_signed_image(tmp, "fw-2.0.2", "2.0.2", 80000, signer)
        cloud.create_stream("AFR_OTA-shared", {0: data4})
        doc = ota_job_document("AFR_OTA-shared", len(data4), sig4)
        cloud.create_job("it-gw-c-0002", "job-shared", doc)
        cloud.create_job("it-gw-c-0003", "job-shared", doc)
        s2, s3 = final("it-gw-c-0002", "job-shared"), final("it-gw-c-0003", "job-shared")
        blocks = (len(data4) + 4095) // 4096
        served = cloud.served.get("AFR_OTA-shared", 0)
        check(s2 == "SUCCEEDED" and s3 == "SUCCEEDED", f"both MCUs updated ({s2}, {s3})")
        check(served <= blocks + 2, f"one download served both ({served} blocks for {blocks})")

        # --- daemon killed mid-download: resume from the bitmap -------------------------------
        cloud.delay = 0.03
        data5, sig5 = make_signed_image(tmp, "fw-2.0.3", "2.0.3", 240000, signer)
        cloud.create_stream("AFR_OTA-kill", {0: data5})
        cloud.create_job("it-gw-c-0004", "job-kill", ota_job_document("AFR_OTA-kill", len(data5),
                                                                  sig5))
        blocks = (len(data5) + 4095) // 4096
        check(wait_for(lambda: cloud.served.get("AFR_OTA-kill", 0) >= blocks // 2, 30, 0.02),
              "download half way")
        time.sleep(0.3)  # let a group commit or two pass
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        before = cloud.served.get("AFR_OTA-kill", 0)
        cloud.delay = 0.0
        d.start()
        st = final("it-gw-c-0004", "job-kill", 90)
        check(st == "SUCCEEDED", f"after kill -9 mid-download the job SUCCEEDED ({st})")
        res = [x["details"] for x in audit() if x["event"] == "ota.download_resume"]
        check(res and res[-1]["have"] > 0, f"the download resumed from the bitmap ({res[-1:]})")
        after = cloud.served.get("AFR_OTA-kill", 0) - before
        check(after < blocks, f"only missing blocks fetched after the restart ({after} of {blocks})")

        # --- the self-test fails -----------------------------------------------------------
        cloud.create_job("it-gw-c-0005", "job-selftest", ota_job_document("AFR_OTA-happy",
                                                                      len(data), sig))
        st = final("it-gw-c-0005", "job-selftest")
        last = cloud.updates("it-gw-c-0005", "job-selftest")[-1]
        check(st == "FAILED" and "self-test" in last[3].get("reason", ""),
              f"self-test failure: FAILED with the reason ({last})")
        check(wait_for(lambda: devices()["c-0005"]["fw_version"] == "1.0.0", 10),
              "the device stays on its old firmware")

        rej = d.ctl_json("status")["ota"]["cloud"]["updates_rejected"]
        check(rej == 0, f"the cloud accepted every job update (none after a final one): {rej}")

        # --- Targeting=gateway: one job on the gateway's thing names a group ----------------
        d.stop()
        d.write_config(config.replace("Targeting=thing-per-device", "Targeting=gateway"))
        d.start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected" and
                       devices()["c-0002"].get("connected") and
                       devices()["c-0003"].get("connected"), 20),
              "restarted with Targeting=gateway")
        data6, sig6 = make_signed_image(tmp, "fw-2.0.5", "2.0.5", 30000, signer)
        cloud.create_stream("AFR_OTA-group", {0: data6})
        doc = ota_job_document("AFR_OTA-group", len(data6), sig6)
        doc["mcugw"] = {"groups": ["line-a"]}
        cloud.create_job("it-gw", "job-group", doc)
        st = final("it-gw", "job-group")
        check(st == "SUCCEEDED", f"a gateway-thing job naming a group SUCCEEDED ({st})")
        check(any(h[3].get("device") in ("c-0002", "c-0003")
                  for h in cloud.updates("it-gw", "job-group")),
              "progress names the device in statusDetails")
        check(wait_for(lambda: devices()["c-0002"]["fw_version"] == "2.0.5" and
                       devices()["c-0003"]["fw_version"] == "2.0.5", 10),
              "both devices of the group run 2.0.5")
        nodoc = ota_job_document("AFR_OTA-group", len(data6), sig6)
        cloud.create_job("it-gw", "job-notargets", nodoc)
        st = final("it-gw", "job-notargets")
        check(st == "FAILED" and "devices or groups" in
              cloud.updates("it-gw", "job-notargets")[-1][3].get("reason", ""),
              "a gateway-thing job without targets FAILED with the reason")
        check(json.loads(d.ctl("audit", "verify", json_out=True).stdout)["ok"],
              "audit chain verifies")
        for sm in sims:
            sm.stop()
        rc = d.stop()
        check(rc == 0, f"mcugwd exits 0 on SIGTERM ({rc})")
        check_no_sanitizer_reports(d, tmp)
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
