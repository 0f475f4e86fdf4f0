#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The mcugw demo (run through scripts/demo, which builds first)."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build-demo")
os.environ.setdefault("MCUGWD", os.path.join(BUILD, "src/mcugwd"))
os.environ.setdefault("MCUGWCTL", os.path.join(BUILD, "src/mcugwctl/mcugwctl"))
os.environ.setdefault("MCUGW_SIM", os.path.join(BUILD, "src/sim/mcugw-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))

from aws_cloud import AwsCloud  # noqa: E402
from broker import Broker  # noqa: E402
from mcugwtest import Daemon, Sim, TempDir, base_config, sim_keys, wait_for  # noqa: E402

CTL = os.environ["MCUGWCTL"]
SIGN = os.path.join(ROOT, "scripts/ota-sign")


def step(title):
    if sys.stdout.isatty():
        print(f"\n\033[1m== {title}\033[0m", flush=True)
    else:
        print(f"\n== {title}", flush=True)


def show(d, *args):
    print(f"$ mcugwctl {' '.join(args)}", flush=True)
    r = d.ctl(*args)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stdout.write(r.stderr)
    sys.stdout.flush()
    return r


def run(*args):
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL)


def main():
    keep = "--keep" in sys.argv
    tmp = TempDir("mcugw-demo-")
    procs, sims, d, broker, cloud = [], [], None, None, None
    try:
        step("1. A local Mosquitto with a generated CA, mutual TLS, on 127.0.0.1")
        broker = Broker(tmp.path).start()
        gw_cert = broker.certs.client("gateway")
        sub_cert = broker.certs.client("demo-viewer")
        print(f"broker on 127.0.0.1:{broker.port}, certificates in {broker.certs.dir}")
        # The device shadow service: AWS IoT's, scripted (tests/integration/aws_cloud.py).
        cloud = AwsCloud(broker, "demo-cloud")

        step("2. Enroll five MCUs (public keys only) and start mcugwd")
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        devs = sim_keys(5, "demo", "sensor-")
        with open(os.path.join(devdir, "demo.conf"), "w") as f:
            for x in devs:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nGroups=demo\n\n")
        keys = tmp.join("signing")
        run(SIGN, "keygen", keys)
        cert = os.path.join(keys, "signer.crt")
        link = tmp.join("run", "link.sock")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link}
[OTA]
CodeSigningCertificate={cert}
[Relay]
BatchWindow=200ms
[Shadow]
Mode=thing-per-device
AllowedDesired=interval
UpdateInterval=200ms
""" + broker.mqtt_config(*gw_cert)).replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        config = config.replace("LogLevel=debug", "LogLevel=notice")
        # The tests' name would read as if the demo were a test: call it what it is.
        config = config.replace("Name=it-gw", "Name=demo-gw")
        d = Daemon(tmp, config).start()
        wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("state") == "connected", 15)
        show(d, "status")

        step("3. mosquitto_sub (its own client certificate) shows what the gateway publishes")
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                                "--cafile", broker.certs.ca, "--cert", sub_cert[0], "--key",
                                sub_cert[1], "-t", "mcugw/#", "-v", "-C", "4"],
                               stdout=subprocess.PIPE, text=True)
        procs.append(sub)
        time.sleep(0.5)

        step("4. Five simulated MCUs authenticate (Noise IK) and send telemetry")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        slots = tmp.join("slots")
        os.makedirs(slots)
        sims.append(Sim(tmp, "fleet", ["--gateway-key", gw_key, "--connect", f"unix:{link}",
                                       "--seed", "demo", "--id-prefix", "sensor-", "--count",
                                       "5", "--rate", "5", "--messages", "0", "--ota-dir", slots,
                                       "--ota-cert", cert, "--fw-version", "1.0.0"]))
        wait_for(lambda: sum(x["connected"] for x in d.ctl_json("devices")) == 5, 15)
        try:
            out, _ = sub.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            sub.kill()
            out, _ = sub.communicate()
        for line in out.splitlines():
            topic, _, payload = line.partition(" ")
            print(f"  {topic}  {payload[:150]}{'…' if len(payload) > 150 else ''}")
        show(d, "devices")

        step("5. An impostor with an unknown key is refused and audited")
        imp = Sim(tmp, "impostor", ["--gateway-key", gw_key, "--connect", f"unix:{link}",
                                    "--unknown", "--count", "1", "--duration", "3"])
        imp.wait(20)
        recs = [r for r in d.ctl_json("audit", "tail", "-n", "50") if r["event"] == "auth.failed"]
        for r in recs[-1:]:
            print(f"  auth.failed: {r['subject']}: {r['details'].get('reason')}")

        step("6. A signed firmware image (MCUboot format), verified, then pushed to sensor-0000")
        raw = tmp.join("fw.bin")
        with open(raw, "wb") as f:
            f.write(os.urandom(48 * 1024))
        img = tmp.join("fw-1.1.0.img")
        run(SIGN, "mcuboot", raw, img, "--version", "1.1.0", "--security-counter", "2")
        run(SIGN, "sign", os.path.join(keys, "signer.key"), img)
        show(d, "ota", "start", img, "--device", "sensor-0000", "--wait")
        wait_for(lambda: {x["id"]: x for x in d.ctl_json("devices")}["sensor-0000"]
                 ["fw_version"] == "1.1.0", 15)
        show(d, "device", "show", "sensor-0000")

        step("7. A desired change in sensor-0001's device shadow reaches the MCU, the delta clears")
        thing = "it-gw-sensor-0001"
        wait_for(lambda: (cloud.shadow_get_doc(thing) or {}).get("state", {}).get(
            "reported", {}).get("connected"), 15)
        print(f"operator: UpdateThingShadow {thing} {{\"state\": {{\"desired\": "
              f"{{\"interval\": 30}}}}}}")
        cloud.shadow_update(thing, {"desired": {"interval": 30}})
        wait_for(lambda: not (cloud.shadow_get_doc(thing) or {}).get("state", {}).get("delta")
                 and (cloud.shadow_get_doc(thing) or {})["state"]["reported"].get("interval"), 15)
        doc = cloud.shadow_get_doc(thing)
        print(f"  shadow v{doc['version']}: reported {json.dumps(doc['state']['reported'])}")
        print(f"  delta: {doc['state'].get('delta', 'none (cleared)')}")
        recs = [r for r in d.ctl_json("audit", "tail", "-n", "50")
                if r["event"] == "shadow.applied"]
        for r in recs[-1:]:
            print(f"  shadow.applied: {r['subject']}: {r['details']}")

        step("8. Quarantine a device: relaying stops at once, the audit log records who did it")
        show(d, "device", "quarantine", "sensor-0004", "--reason", "demo")
        show(d, "devices", "--state", "quarantined")

        step("9. The hash-chained audit trail")
        show(d, "audit", "tail", "-n", "15")
        show(d, "audit", "verify")

        if keep:
            step(f"running; try: MCUGW_SOCKET={d.socket} {CTL} status   (Ctrl-C to stop)")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for s in sims:
            s.stop()
        if d:
            d.stop()
        if cloud:
            cloud.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    print("\ndemo finished")


if __name__ == "__main__":
    main()
