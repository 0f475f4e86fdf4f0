# SPDX-License-Identifier: Apache-2.0
"""The cloud side of OTA against a scripted cloud that behaves as AWS IoT documents it
(aws_cloud.py: notify/notify-next shapes, seconds timestamps, versionNumber, terminal-state
rejections, 128 KB per stream request, ResourceNotFound, CancelJob --force), over a real
Mosquitto with mutual TLS and the real daemon.

Covered: executions of other things are never acted on nor answered (both targetings); the
status sequence of the stock FreeRTOS agent; a job cancelled mid-download installs nothing and
gets no further update, one cancelled mid-transfer is aborted on the MCU; a missing stream, a
stream deleted mid-download and a silent stream end FAILED with the precise reason within the
retry budget and with a bounded number of requests; a broker restart mid-download costs no try;
stream requests stay within 128 KB; thing-per-device polling reaches the 900th of 1,000
devices."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (OTA_SIGN, SIM, Daemon, Sim, TempDir, base_config, check, finish,  # noqa
                       check_no_sanitizer_reports, enroll_file, make_signed_image, run, wait_for)
from broker import Broker  # noqa
from aws_cloud import AwsCloud, ota_job_document  # noqa


def kick_session(broker, client_id):
    """Take over client_id's session: the broker disconnects the gateway, which reconnects."""
    import paho.mqtt.client as mqtt
    up = []
    cert = broker.certs.client("kicker")
    k = mqtt.Client(client_id=client_id, clean_session=True)
    k.tls_set(ca_certs=broker.certs.ca, certfile=cert[0], keyfile=cert[1])
    k.on_connect = lambda c, ud, flags, rc: up.append(rc)
    k.connect("127.0.0.1", broker.port, keepalive=30)
    k.loop_start()
    wait_for(lambda: up, 10)
    k.disconnect()
    k.loop_stop()


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
        signer, cert = os.path.join(keys, "signer.key"), os.path.join(keys, "signer.crt")
        devs = json.loads(run(SIM, "keys", "--count", "4", "--seed", "jobs", "--id-prefix",
                              "j-", "--json"))
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "j.conf", devs)
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
            slow = ["--baud", "38400"] if i == 2 else []  # j-0002: a slow line
            sims.append(Sim(tmp, f"j{i}", slow + ["--gateway-key", gw_key, "--connect",
                                           f"unix:{link_sock}", "--seed", "jobs",
                                           "--id-prefix", "j-", "--first-index", str(i),
                                           "--messages", "0", "--rate", "1", "--ota-dir", slots,
                                           "--ota-cert", cert, "--fw-version", "1.0.0"]))

        def devices():
            return {x["id"]: x for x in d.ctl_json("devices")}
        check(wait_for(lambda: all(devices().get(x["id"], {}).get("connected")
                                   for x in devs[:3]), 20),
              "three simulated MCUs connected (j-0003 stays away)")

        def final(thing, job, timeout=60):
            ok = wait_for(lambda: (cloud.execution(thing, job) or {}).get("status")
                          in ("SUCCEEDED", "FAILED"), timeout, 0.2)
            return (cloud.execution(thing, job) or {}).get("status") if ok else None

        def audit():
            return d.ctl_json("audit", "tail", "-n", "5000")

        def rejected_for(thing):
            return [r for r in cloud.rejected if r[0].startswith(f"$aws/things/{thing}/")]

        data, sig = make_signed_image(tmp, "fw-2.0.0", "2.0.0", 40000, signer)
        cloud.create_stream("AFR_OTA-a", {0: data})

        # --- other things' jobs: never acted on, never answered --------------------------------
        foreign = [("other-gw-j-0000", "job-f1", ota_job_document("AFR_OTA-a", len(data), sig)),
                   ("other-gw", "job-f2", ota_job_document("AFR_OTA-a", len(data), sig, ["j-0000"])),
                   ("it-gw-nosuch", "job-f3", ota_job_document("AFR_OTA-a", len(data), sig))]
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
        cloud.create_job("other-gw", "job-f4", ota_job_document("AFR_OTA-a", len(data), sig,
                                                            ["j-0000"]))
        cloud.create_job("it-gw-j-0000", "job-f5", ota_job_document("AFR_OTA-a", len(data), sig))
        cloud.create_job("it-gw", "job-gw", ota_job_document("AFR_OTA-a", len(data), sig,
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


        # --- silence: a stream that never answers (runs while the rest goes on) ---------------
        cloud.create_stream("AFR_OTA-silent", {0: data})
        cloud.silent_streams.add("AFR_OTA-silent")
        t_silent = time.monotonic()
        cloud.create_job("it-gw-j-0003", "job-silent", ota_job_document("AFR_OTA-silent", len(data),
                                                                    sig))

        # --- the status sequence of the stock FreeRTOS agent (ota_mqtt.c) ----------------------
        # receive "k/N" (blocks of the file) at the start and every 64 blocks; self_test "ready"
        # then "active" with updatedBy, the running firmware's version as 0xMMmmbbbb; SUCCEEDED
        # with reason "accepted vM.m.b".
        data64, sig64 = make_signed_image(tmp, "fw-2.0.0-64", "2.0.0", 64 * 4096 - 200, signer)
        n = (len(data64) + 4095) // 4096
        check(n == 64, f"a 64-block image ({n})")
        cloud.create_stream("AFR_OTA-stock", {0: data64})
        cloud.create_job("it-gw-j-0000", "job-stock", ota_job_document("AFR_OTA-stock", len(data64),
                                                                   sig64))
        st = final("it-gw-j-0000", "job-stock")
        seq = [(h[2], h[3]) for h in cloud.updates("it-gw-j-0000", "job-stock")]
        want = [("IN_PROGRESS", {"receive": "0/64"}), ("IN_PROGRESS", {"receive": "64/64"}),
                ("IN_PROGRESS", {"self_test": "ready", "updatedBy": "0x1000000"}),
                ("IN_PROGRESS", {"self_test": "active", "updatedBy": "0x2000000"}),
                ("SUCCEEDED", {"reason": "accepted v2.0.0"})]
        check(st == "SUCCEEDED" and seq == want, f"the stock agent's status sequence ({seq})")
        ex = cloud.execution("it-gw-j-0000", "job-stock")
        check(ex["versionNumber"] == 1 + len(want), f"versionNumber counts the updates ({ex})")

        # --- a missing stream: FAILED with the precise reason, within the retry budget --------
        t0 = time.monotonic()
        cloud.create_job("it-gw-j-0001", "job-missing", ota_job_document("AFR_OTA-missing",
                                                                     len(data), sig))
        st = final("it-gw-j-0001", "job-missing", 40)
        took = time.monotonic() - t0
        reason = cloud.updates("it-gw-j-0001", "job-missing")[-1][3].get("reason", "")
        nreq = len([q for q in cloud.requests if q["_stream"] == "AFR_OTA-missing"])
        check(st == "FAILED" and "stream AFR_OTA-missing not found (ResourceNotFound)" in reason,
              f"missing stream: FAILED, {reason!r}")
        check(took <= 15.5 + 5, f"missing stream: the end within the retry budget ({took:.1f} s)")
        check(nreq <= 6, f"missing stream: at most 6 requests ({nreq})")

        # --- cancelled mid-download (CancelJob --force at 30 %) --------------------------------
        big, bsig = make_signed_image(tmp, "fw-2.1.0", "2.1.0", 240000, signer)
        nb = (len(big) + 4095) // 4096
        cloud.create_stream("AFR_OTA-cancel", {0: big})
        cloud.delay = 0.02
        cloud.create_job("it-gw-j-0001", "job-cancel", ota_job_document("AFR_OTA-cancel", len(big),
                                                                    bsig))
        check(wait_for(lambda: cloud.served.get("AFR_OTA-cancel", 0) >= nb * 3 // 10, 30, 0.01),
              "download at 30 %")
        check(cloud.cancel_job("it-gw-j-0001", "job-cancel", force=True), "CancelJob --force")
        t_cancel = time.time()
        n_upd = len(cloud.updates("it-gw-j-0001", "job-cancel"))
        check(wait_for(lambda: any(x["event"] == "ota.job_cancelled" and
                                   x["subject"] == "job-cancel" for x in audit()), 10),
              "ota.job_cancelled audited")
        time.sleep(max(0, nb * cloud.delay - (time.time() - t_cancel)) + 2)
        cloud.delay = 0.0
        check(len(cloud.updates("it-gw-j-0001", "job-cancel")) == n_upd and
              not rejected_for("it-gw-j-0001/jobs/job-cancel"),
              "no update after the cancel, none rejected")
        late = [q for q in cloud.requests if q["_stream"] == "AFR_OTA-cancel" and
                q["_t"] > t_cancel + 0.5]
        check(not late, f"no stream request after the cancel ({len(late)})")
        check(not os.path.exists(os.path.join(slots, "j-0001.slot")) and
              devices()["j-0001"]["fw_version"] == "1.0.0", "the cancelled image is not installed")
        cl = d.ctl_json("status")["ota"]["cloud"]
        check(not any(x["stream"] == "AFR_OTA-cancel" for x in cl["downloads"]),
              "the download stopped")

        # --- the stream deleted mid-download ---------------------------------------------------
        cloud.create_stream("AFR_OTA-del", {0: big})
        cloud.delay = 0.02
        cloud.create_job("it-gw-j-0001", "job-del", ota_job_document("AFR_OTA-del", len(big), bsig))
        check(wait_for(lambda: cloud.served.get("AFR_OTA-del", 0) >= nb * 3 // 10, 30, 0.01),
              "download at 30 %")
        cloud.delete_stream("AFR_OTA-del")
        t_del = time.time()
        cloud.delay = 0.0
        st = final("it-gw-j-0001", "job-del", 40)
        reason = cloud.updates("it-gw-j-0001", "job-del")[-1][3].get("reason", "")
        after = [q for q in cloud.requests if q["_stream"] == "AFR_OTA-del" and q["_t"] > t_del]
        check(st == "FAILED" and "stream AFR_OTA-del not found (ResourceNotFound)" in reason,
              f"stream deleted mid-download: FAILED, {reason!r}")
        check(len(after) <= 4 + 6, f"a bounded number of requests after the deletion "
              f"({len(after)})")

        # --- cancelled while the MCU receives: the transfer is aborted --------------------------
        mid, msig = make_signed_image(tmp, "fw-2.2.0", "2.2.0", 60000, signer)
        cloud.create_stream("AFR_OTA-xfer", {0: mid})
        cloud.create_job("it-gw-j-0002", "job-xfer", ota_job_document("AFR_OTA-xfer", len(mid),
                                                                  msig))
        check(wait_for(lambda: any(x["event"] == "ota.transfer_start" and
                                   x["subject"] == "j-0002" and
                                   x["details"].get("version") == "2.2.0"
                                   for x in audit()), 30),
              "the transfer to j-0002 started")
        time.sleep(1)
        cloud.cancel_job("it-gw-j-0002", "job-xfer", force=True)
        n_upd = len(cloud.updates("it-gw-j-0002", "job-xfer"))
        check(wait_for(lambda: any(x["event"] == "ota.job_cancelled" and
                                   x["subject"] == "job-xfer" and
                                   x["details"].get("stage") == "transfer" for x in audit()), 10),
              "ota.job_cancelled (stage transfer) audited")
        check(wait_for(lambda: any(x["event"] == "ota.job_aborted" for x in audit()), 10),
              "the engine aborted the transfer")
        time.sleep(15)  # what the slow line would have needed to finish
        check(devices()["j-0002"]["fw_version"] != "2.2.0",
              "the MCU does not boot the cancelled image")
        check(len(cloud.updates("it-gw-j-0002", "job-xfer")) == n_upd and
              not rejected_for("it-gw-j-0002/jobs/job-xfer"), "no update after the cancel")

        # --- silence ends FAILED within its budget ---------------------------------------------
        st = final("it-gw-j-0003", "job-silent", max(1, 45.5 + 10 - (time.monotonic() -
                                                                    t_silent)))
        reason = (cloud.updates("it-gw-j-0003", "job-silent") or [(0, 0, 0, {})])[-1][3].get(
            "reason", "")
        nreq = len([q for q in cloud.requests if q["_stream"] == "AFR_OTA-silent"])
        ev = {x["event"]: x["ts_us"] / 1e6 for x in audit() if x["subject"] in
              ("job-silent", "AFR_OTA-silent")}
        took = ev.get("ota.download_failed", 1e12) - ev.get("ota.download_start", 0)
        check(st == "FAILED" and "no block" in reason,
              f"a silent stream: FAILED, {reason!r}")
        check(took <= 45.5 + 1, f"a silent stream: given up within the budget ({took:.1f} s)")
        check(nreq <= 6, f"a silent stream: at most 6 requests ({nreq})")

        # --- the session drops mid-download: no try lost, the download carries on -------------
        cloud.create_stream("AFR_OTA-drop", {0: big})
        cloud.delay = 0.02
        cloud.create_job("it-gw-j-0000", "job-drop", ota_job_document("AFR_OTA-drop", len(big), bsig))
        check(wait_for(lambda: cloud.served.get("AFR_OTA-drop", 0) >= nb * 3 // 10, 30, 0.01),
              "download at 30 %")
        drops = d.ctl_json("status")["mqtt"]["disconnects"]
        kick_session(broker, "it-gw")  # the broker drops the gateway's session (takeover)
        cloud.delay = 0.0
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["disconnects"] > drops, 10),
              "the gateway's session dropped mid-download")
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 30),
              "the gateway is back after the disconnect")
        st = final("it-gw-j-0000", "job-drop", 90)
        check(st == "SUCCEEDED", f"a download interrupted by a disconnect SUCCEEDED ({st})")
        dl = [x["details"] for x in audit() if x["event"] == "ota.download_done" and
              x["subject"] == "AFR_OTA-drop"]
        check(dl and dl[-1]["blocks"] <= nb, f"no block fetched twice into the cache "
              f"({dl[-1] if dl else None})")

        # --- every stream request within what AWS serves ---------------------------------------
        sizes = [q["n"] * q["l"] for q in cloud.requests]
        check(all(s <= 131072 for s in sizes) and all(q["n"] <= 98 for q in cloud.requests),
              f"every stream request asks for at most 128 KB and 98 blocks (max {max(sizes)})")

        # --- 1,000 devices; a job queued for the 900th while the gateway was down --------------
        d.stop()
        many = json.loads(run(SIM, "keys", "--count", "1000", "--seed", "many", "--id-prefix",
                              "m-", "--json"))
        enroll_file(devdir, "m.conf", many)
        cloud.create_job("it-gw-m-0899", "job-900th", ota_job_document("AFR_OTA-a", len(data), sig),
                         notify=False)
        t0 = time.monotonic()
        d.start()
        ok = wait_for(lambda: cloud.execution("it-gw-m-0899", "job-900th")["status"] !=
                      "QUEUED", 60, 0.2)
        check(ok, f"the 900th device's job was picked up after the start "
              f"({time.monotonic() - t0:.0f} s)")
        cl = d.ctl_json("status")["ota"]["cloud"]
        check(cl["polls_sent"] >= 900, f"one $next/get per device thing ({cl['polls_sent']})")
        cloud.cancel_job("it-gw-m-0899", "job-900th", force=True)

        check(json.loads(d.ctl("audit", "verify", json_out=True).stdout)["ok"],
              "audit chain verifies")
        for sm in sims:
            sm.stop()
        rc = d.stop()
        check(rc == 0, f"mcugwd exits 0 on SIGTERM ({rc})")
        check_no_sanitizer_reports(d)
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
