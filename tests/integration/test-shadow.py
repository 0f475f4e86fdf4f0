# SPDX-License-Identifier: Apache-2.0
"""Device shadows (docs/shadow.md) against the scripted cloud's shadow service (aws_cloud.py: merge,
null deletes, metadata, versions, deltas, 400/404/409/413), over a real Mosquitto with mutual TLS,
the real daemon and simulated MCUs.

Covered, thing-per-device: the scripted service itself (merge, null deletes, metadata, version,
delta, 409, 413, 400); reported state of enrolled devices when the session starts, after connect,
OTA (a deleted shadow: the read is answered 404, the update creates it), disconnect and quarantine
(also of a device that is away); a desired change reaches the MCU as CONFIG and the delta clears;
a key the MCU refuses stays in the delta and is audited, one not in AllowedDesired= never reaches
it; a desired change made while the MCU is offline reaches it when it is back; a version conflict
(409) is resolved by reading the shadow again; a rejected update (400) is audited and not sent
again; a desired state too large for CONFIG is refused; `mcugwctl shadow get` and `device show`.
Then the same daemon in gateway mode: a named shadow per MCU on the gateway's thing."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (OTA_SIGN, Daemon, Sim, TempDir, base_config, check,  # noqa: E402
                       enroll_file, finish, make_signed_image, run, sim_keys, wait_for)
from broker import Broker  # noqa: E402
from aws_cloud import AwsCloud  # noqa: E402

THING0, THING1, THING2 = "it-gw-s-0000", "it-gw-s-0001", "it-gw-s-0002"


def reported(cloud, thing, name=None):
    doc = cloud.shadow_get_doc(thing, name) or {}
    return doc.get("state", {}).get("reported", {})


def delta(cloud, thing, name=None):
    doc = cloud.shadow_get_doc(thing, name) or {}
    return doc.get("state", {}).get("delta", {})


def check_cloud_api(cloud):
    """The scripted shadow service as the AWS pages describe it."""
    a = cloud.shadow_update("api", {"desired": {"a": 1, "b": {"c": 2, "d": 3}}})
    check(a["version"] == 1 and "timestamp" in a["metadata"]["desired"]["b"]["c"],
          "cloud: an update is accepted with version 1 and per-leaf metadata")
    cloud.shadow_update("api", {"reported": {"a": 1, "b": {"c": 2}}})
    doc = cloud.shadow_get_doc("api")
    check(doc["version"] == 2 and doc["state"]["delta"] == {"b": {"d": 3}},
          "cloud: reported merges, the delta is what desired still differs in")
    cloud.shadow_update("api", {"desired": {"a": None}})
    doc = cloud.shadow_get_doc("api")
    check("a" not in doc["state"]["desired"] and "a" not in doc["metadata"]["desired"],
          "cloud: null deletes a key and its metadata")
    check(cloud.shadow_update("api", {"desired": {"x": 1}}, version=1) ==
          (409, "Version conflict"), "cloud: a stale version is a 409")
    check(cloud.shadow_update("api", {"desired": {"x": "y" * 9000}})[0] == 413,
          "cloud: a document over 8 KB is a 413")
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}
    check(cloud.shadow_update("api", {"desired": deep})[0] == 400,
          "cloud: nesting deeper than 6 is a 400")
    check(cloud.shadow_get_doc("nothing") is None, "cloud: no such shadow")


def main():
    tmp = TempDir("mcugw-shadow-")
    broker = cloud = d = None
    sims = {}
    try:
        broker = Broker(tmp.path).start()
        cloud = AwsCloud(broker)
        check_cloud_api(cloud)
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "s.conf", sim_keys(3, "shadow", "s-"))
        link_sock = tmp.join("run", "link.sock")
        gw_cert = broker.certs.client("it-gw")
        keys = tmp.join("signing")
        run(OTA_SIGN, "keygen", keys)
        signer, signer_cert = os.path.join(keys, "signer.key"), os.path.join(keys, "signer.crt")
        slots = tmp.join("slots")
        os.makedirs(slots)

        def config(mode):
            return (base_config(tmp) + broker.mqtt_config(*gw_cert) + f"""
[Link]
ListenStream=unix:{link_sock}
IdleTimeout=0

[OTA]
CodeSigningCertificate={signer_cert}

[Shadow]
Mode={mode}
AllowedDesired=interval mode
AllowedDesired=label
UpdateInterval=100ms
UpdatesPerInterval=5
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")

        d = Daemon(tmp, config("thing-per-device")).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "the gateway's MQTT session is up")
        gw_key = d.ctl_json("status")["link"]["public_key"]

        def start_sim(i, extra=()):
            sims[i] = Sim(tmp, f"s{i}-{time.monotonic_ns()}",
                          ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}", "--seed",
                           "shadow", "--id-prefix", "s-", "--first-index", str(i), "--messages",
                           "0", "--rate", "1", *extra])

        def audit(event, subject):
            return [x for x in d.ctl_json("audit", "tail", "-n", "5000")
                    if x["event"] == event and x["subject"] == subject]

        ota_args = ["--ota-dir", slots, "--ota-cert", signer_cert, "--fw-version", "1.0.0"]
        start_sim(0, ota_args)
        start_sim(1, ["--config-refuse", "mode"])

        # Reported state after connect.
        check(wait_for(lambda: reported(cloud, THING0).get("connected") is True and
                       reported(cloud, THING0).get("firmware") == "1.0.0", 20),
              "s-0000's shadow reports it connected, with its firmware")
        r0 = reported(cloud, THING0)
        check(r0.get("state") == "active" and isinstance(r0.get("boot"), int) and
              isinstance(r0.get("reset"), str) and isinstance(r0.get("since"), int) and
              "counters" in r0 and "ota" not in r0,
              f"the reported fields are there: {sorted(r0)}")
        check(wait_for(lambda: reported(cloud, THING2).get("connected") is False, 10),
              "s-0002, enrolled but never connected, is reported disconnected")
        check(cloud.shadow_delete(THING2), "the operator deletes s-0002's shadow")
        start_sim(2)
        check(wait_for(lambda: reported(cloud, THING2).get("connected") is True, 20),
              "s-0002 connects: its shadow is created again")
        check(any(t == f"$aws/things/{THING2}/shadow/get/rejected" and c == 404
                  for t, c in cloud.rejected),
              "the read at connect of a shadow that does not exist was answered 404")
        sims[2].stop()

        # A desired change reaches the MCU, and the delta clears.
        cloud.shadow_update(THING0, {"desired": {"interval": 30}})
        check(wait_for(lambda: reported(cloud, THING0).get("interval") == 30 and
                       not delta(cloud, THING0), 15),
              "desired interval=30 reached s-0000, was reported back, the delta cleared")
        check(any(a["details"].get("keys") == ["interval"] for a in audit("shadow.applied",
                                                                          "s-0000")),
              "audited as shadow.applied")

        # A key the MCU refuses, one the gateway does not allow.
        cloud.shadow_update(THING1, {"desired": {"interval": 5, "mode": "eco", "secret": 1}})
        check(wait_for(lambda: reported(cloud, THING1).get("interval") == 5, 15),
              "s-0001 applied interval=5")
        dl = delta(cloud, THING1)
        check(dl == {"mode": "eco", "secret": 1},
              f"the refused and the unknown key stay in the delta: {dl}")
        rej = audit("shadow.rejected", "s-0001")
        check(any(a["details"].get("keys") == ["mode"] and "refused" in a["details"]["reason"]
                  for a in rej), "the key the MCU refused is audited")
        check(any(a["details"].get("keys") == ["secret"] and
                  a["details"]["reason"] == "key not allowed" for a in rej),
              "the key not in AllowedDesired= is audited and not sent")

        # Disconnect, then a desired change while the MCU is away.
        sims[0].stop()
        check(wait_for(lambda: reported(cloud, THING0).get("connected") is False, 15),
              "s-0000 reported disconnected")
        cloud.shadow_update(THING0, {"desired": {"interval": 45}})
        time.sleep(0.5)
        check(reported(cloud, THING0).get("interval") == 30,
              "nothing is reported applied while s-0000 is away")
        start_sim(0, ota_args)
        check(wait_for(lambda: reported(cloud, THING0).get("interval") == 45 and
                       reported(cloud, THING0).get("connected") is True and
                       not delta(cloud, THING0), 20),
              "the change made while s-0000 was offline reached it on reconnect")

        # Quarantine.
        check(d.ctl("device", "quarantine", "s-0001", "--reason", "test").returncode == 0,
              "quarantine s-0001")
        check(wait_for(lambda: reported(cloud, THING1).get("state") == "quarantined" and
                       reported(cloud, THING1).get("connected") is False, 15),
              "s-0001's shadow reports it quarantined and disconnected")

        # A quarantine while the device is away, and its release.
        check(d.ctl("device", "quarantine", "s-0002", "--reason", "test").returncode == 0,
              "quarantine s-0002, which is not connected")
        check(wait_for(lambda: reported(cloud, THING2).get("state") == "quarantined", 15),
              "s-0002's shadow reports it quarantined")
        check(d.ctl("device", "restore", "s-0002").returncode == 0, "restore s-0002")
        check(wait_for(lambda: reported(cloud, THING2).get("state") == "active", 15),
              "s-0002's shadow reports it active again")

        # 409: another writer changes desired between the read and the report.
        cloud.shadow_before_update[(THING0, None)] = \
            lambda: cloud.shadow_update(THING0, {"desired": {"interval": 60}})
        conflicts0 = d.ctl_json("status")["shadow"]["conflicts"]
        cloud.shadow_update(THING0, {"desired": {"interval": 50}})
        check(wait_for(lambda: reported(cloud, THING0).get("interval") == 60 and
                       not delta(cloud, THING0), 20),
              "after a version conflict the shadow was read again and interval=60 applied")
        check(d.ctl_json("status")["shadow"]["conflicts"] > conflicts0, "the 409 was counted")
        check(any(t == f"$aws/things/{THING0}/shadow/update/rejected" and c == 409
                  for t, c in cloud.rejected), "the cloud did answer 409")

        # 400: audited, not sent again.
        cloud.shadow_fail_next[(THING0, None)] = 400
        cloud.shadow_update(THING0, {"desired": {"interval": 70}})
        check(wait_for(lambda: any(a["details"].get("code") == 400
                                   for a in audit("shadow.rejected", "s-0000")), 15),
              "a rejected update (400) is audited as shadow.rejected")
        time.sleep(1.5)  # 15 pacing intervals: time enough to retry, were it to
        sent = [u for u in cloud.shadow_updates(THING0)
                if u.get("state", {}).get("reported", {}).get("interval") == 70]
        check(len(sent) == 1, f"the rejected update was sent once, not retried ({len(sent)})")
        check(delta(cloud, THING0) == {"interval": 70}, "its delta stays")

        # A desired state too large for a CONFIG message (but within the 8 KB shadow).
        cloud.shadow_update(THING0, {"desired": {"label": "x" * 1500}})
        check(wait_for(lambda: any("CONFIG" in a["details"].get("reason", "")
                                   for a in audit("shadow.rejected", "s-0000")), 15),
              "a desired state larger than CONFIG is refused and audited")

        # OTA: the new firmware, and the reset that installed it, reach the shadow.
        img = make_signed_image(tmp, "fw-1.1.0", "1.1.0", 8 * 1024, signer)[0] and \
            tmp.join("fw-1.1.0.img")
        check(d.ctl("ota", "start", img, "--device", "s-0000", "--wait").returncode == 0,
              "OTA to s-0000")
        check(wait_for(lambda: reported(cloud, THING0).get("firmware") == "1.1.0" and
                       reported(cloud, THING0).get("reset") == "ota" and
                       "ota" not in reported(cloud, THING0), 20),
              f"after the OTA the shadow reports firmware 1.1.0, reset cause ota, no transfer "
              f"({reported(cloud, THING0)})")
        during = [u["state"]["reported"]["ota"] for u in cloud.shadow_updates(THING0)
                  if isinstance(u.get("state", {}).get("reported", {}).get("ota"), dict)]
        check(any(x.get("job", "").startswith("local-") and x.get("state") for x in during),
              f"while it ran, the transfer was reported: {during[-1:] or 'never'}")

        # mcugwctl
        g = d.ctl_json("shadow", "get", "s-0000")
        check(g["name"] == THING0 and g["version"] > 0 and g["reported"]["connected"] is True,
              "mcugwctl shadow get shows the document the gateway last saw")
        sh = d.ctl_json("device", "show", "s-0000").get("shadow", {})
        check(sh.get("name") == THING0 and sh.get("version", 0) > 0 and
              sh.get("configs_applied", 0) >= 3, f"device show has the shadow fields: {sh}")
        check(d.ctl("shadow", "get", "nobody").returncode != 0, "shadow get of an unknown id")

        for s in sims.values():
            s.stop()
        check(d.stop() == 0, "daemon exits 0")

        # Gateway mode: a named shadow per MCU on the gateway's thing.
        d.write_config(config("gateway"))
        d.start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", 20),
              "gateway mode: session up")
        start_sim(2)
        check(wait_for(lambda: reported(cloud, "it-gw", "s-0002").get("connected") is True,
                       20), "gateway mode: the named shadow s-0002 of thing it-gw reports it")
        cloud.shadow_update("it-gw", {"desired": {"interval": 12}}, name="s-0002")
        check(wait_for(lambda: reported(cloud, "it-gw", "s-0002").get("interval") == 12 and
                       not delta(cloud, "it-gw", "s-0002"), 15),
              "gateway mode: desired reached the MCU and the delta cleared")
        check(d.ctl_json("device", "show", "s-0002")["shadow"]["name"] == "s-0002",
              "gateway mode: device show names the shadow")
        sims[2].stop()
        check(d.stop() == 0, "daemon exits 0")
    finally:
        for s in sims.values():
            s.stop()
        if d:
            d.stop()
        if cloud:
            cloud.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
