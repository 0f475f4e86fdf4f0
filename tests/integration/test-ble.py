# SPDX-License-Identifier: Apache-2.0
"""The BLE carrier end to end, without Bluetooth hardware: a private dbus-daemon, the BlueZ
stand-in (python-dbusmock's bluez5 template plus GATT peripherals, bluez_standin.py) whose
characteristics are wired to simulated MCUs on the real device SDK, and the real daemon pointed
at that bus with [BLE] BusAddress=.

Checks: allow-listed peripherals are connected and their MCUs authenticate over GATT, one
through AcquireWrite/AcquireNotify sockets, one through WriteValue(type=command) + StartNotify
+ PropertiesChanged with the smallest MTU (23: 20-byte writes, fragmentation); telemetry flows
up and acks down; nothing the gateway writes is longer than one ATT packet or not a write
command; RSSI reaches `devices`; a peripheral not on the allow-list is ignored and audited once;
a peripheral flooding notifications is rate-limited, counted and disconnected while the others
keep flowing; a link loss is audited and reconnected with backoff; bluetoothd restarting is
survived; SIGTERM disconnects the peripherals and exits cleanly."""

import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWD, Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       check_no_sanitizer_reports, enroll_file, sim_keys, wait_for)
from broker import Broker, Subscriber  # noqa: E402

try:
    import dbus  # python3-dbus, a dependency of python3-dbusmock
    import dbusmock  # noqa: F401
    import shutil
    if not shutil.which("dbus-daemon"):
        raise ImportError("dbus-daemon not found")
except ImportError as e:
    # Without them the test cannot run: skip (exit 77) on a developer box, fail in CI.
    print(f"cannot run the BLE test: {e}; install dbus-daemon and python3-dbusmock", flush=True)
    sys.exit(1 if os.environ.get("CI") else 77)

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bluez_standin.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

A = "AA:00:00:00:00:01"  # AcquireWrite/AcquireNotify
B = "AA:00:00:00:00:02"  # WriteValue + StartNotify, MTU 23
F = "AA:00:00:00:00:03"  # floods notifications (PropertiesChanged)
G = "AA:00:00:00:00:04"  # floods notifications (AcquireNotify socket)
U = "AA:00:00:00:00:05"  # allow-listed, but its MCU's key is not enrolled
X = "CC:00:00:00:00:09"  # not on the allow-list

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>mcugw-test</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_message_unix_fds">16</limit>
</busconfig>
"""


class PrivateBus:
    def __init__(self, tmp):
        self.conf = tmp.join("bus.conf")
        path = tmp.join("bus.sock")
        with open(self.conf, "w") as f:
            f.write(BUS_CONF.format(path=path))
        self.proc = subprocess.Popen(["dbus-daemon", "--config-file", self.conf, "--nofork",
                                      "--print-address=1"], stdout=subprocess.PIPE, text=True)
        printed = self.proc.stdout.readline().strip()
        assert printed.startswith("unix:"), printed
        # Without the guid: a restarted bus on the same path is the same address.
        self.address = f"unix:path={path}"
        self.conn = dbus.bus.BusConnection(self.address)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Standin:
    def __init__(self, tmp, bus, name="standin"):
        self.bus = bus
        self.log_path = tmp.join(f"{name}.log")
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        self.proc = subprocess.Popen([PYTHON, "-m", "dbusmock", "--system", "--template",
                                      STANDIN, "-l", self.log_path], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log_path + ".err", "w"))
        ok = wait_for(lambda: bus.conn.name_has_owner("org.bluez"), timeout=20)
        if not ok:
            raise RuntimeError("the BlueZ stand-in did not appear on the bus")
        self.mock = dbus.Interface(bus.conn.get_object("org.bluez", "/"), "org.bluez.Mock")

    def stats(self, addr):
        return {str(k): (bool(v) if isinstance(v, dbus.Boolean) else int(v))
                for k, v in self.mock.PeripheralStats(addr).items()}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def ble_status(d):
    return d.ctl_json("status")["ble"]


def peer(d, addr):
    for p in ble_status(d)["devices"]:
        if p["address"] == addr:
            return p
    return {}


def audit(d, n=3000):
    return d.ctl_json("audit", "tail", "-n", str(n))


def telemetry(d, dev_id):
    return devices(d).get(dev_id, {}).get("link_stats", {}).get("telemetry", 0)


def cloud_checks(d, sub):
    """BLE telemetry reaches the broker by the same path as any link's, and a cloud command
    reaches the BLE MCU (the sim echoes it as the result)."""
    check(wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("submitted", 0) > 0,
                   timeout=10), "BLE link telemetry is handed to the relay")

    def ble_entries():
        out = set()
        for t, p, *_ in sub.snapshot():
            if t == "mcugw/it-gw/batch":
                out |= {m["d"] for m in json.loads(p)["msgs"]}
            elif t.startswith("mcugw/it-gw/dev/"):
                out.add(t.split("/")[3])
        return out
    check(wait_for(lambda: {"ble-0000", "ble-0001"} <= ble_entries(), timeout=20),
          "telemetry of both BLE MCUs reaches the MQTT broker")
    sub.publish("mcugw/it-gw/cmd/ble-0001", b"blink-ble")

    def result():
        for t, p, *_ in sub.snapshot():
            if t == "mcugw/it-gw/cmd-result/ble-0001":
                return json.loads(p)
        return None
    r = wait_for(result, timeout=15)
    check(r is not None and r.get("status") == 0 and
          base64.b64decode(r.get("p", "")) == b"blink-ble",
          f"a cloud command goes down to the BLE MCU and its result comes back ({r})")


def main():
    tmp = TempDir("mcugw-ble-")
    bus = standin = d = broker = sub = None
    sims = []
    try:
        bus = PrivateBus(tmp)
        standin = Standin(tmp, bus)
        mock = standin.mock
        mock.AddAdapter("hci0", "mcugw-test")

        # Malformed [BLE] values are configuration errors with file:line.
        bad = tmp.join("bad-ble.conf")
        with open(bad, "w") as f:
            f.write("[BLE]\nDevice=AA:BB:CC:DD:EE\nServiceUUID=1234\nAdapter=hci0/x\n")
        r = subprocess.run([MCUGWD, "--check-config", "--config", bad], capture_output=True,
                           text=True, timeout=20)
        check(r.returncode != 0 and f"{bad}:2:" in r.stderr and f"{bad}:3:" in r.stderr and
              f"{bad}:4:" in r.stderr,
              "--check-config rejects a bad Device= address, UUID and adapter with file:line")

        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        keys = sim_keys(2, "ble", "ble-")
        enroll_file(devdir, "ble.conf", keys)

        socks = {a: tmp.join(f"radio-{i}.sock") for i, a in enumerate((A, B, F, G, U, X))}
        # A and B exist before the daemon starts (found by GetManagedObjects)...
        mock.AddGattPeripheral("hci0", A, socks[A], {"acquire": True, "mtu": dbus.UInt16(185)})
        mock.AddGattPeripheral("hci0", B, socks[B], {"acquire": False, "mtu": dbus.UInt16(23)})

        # The cloud: a real Mosquitto with mutual TLS, as in test-mqtt.
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        sub = Subscriber(broker, ["mcugw/#"], name="sub-ble", clean=True)

        config = base_config(tmp, broker.mqtt_config(*cert) + f"""
[BLE]
BusAddress={bus.address}
Adapter=hci0
Device={A}
Device={B.lower()}
Device={F}
Device={G}
Device={U}
ReconnectMin=200ms
ReconnectMax=2s
NotifyRateLimit=16K

[Link]
HandshakeTimeout=2s
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        st = d.ctl_json("status")
        gw_key = st["link"]["public_key"]
        check(st["ble"]["enabled"] and st["ble"]["peripherals"] == 5,
              "status has a ble object with the 5 allow-listed peripherals")
        check(wait_for(lambda: ble_status(d)["bluez"] and ble_status(d)["adapter"] ==
                       "/org/bluez/hci0", timeout=10),
              "the daemon found BlueZ and adapter hci0 on the private bus")

        # ... F and X appear later (InterfacesAdded).
        mock.AddGattPeripheral("hci0", X, socks[X], {})
        base = ["--gateway-key", gw_key, "--seed", "ble", "--id-prefix", "ble-", "--messages",
                "0", "--rate", "20", "--size", "48"]
        sims.append(Sim(tmp, "a", [*base, "--connect", f"unix:{socks[A]}", "--first-index", "0"]))
        sims.append(Sim(tmp, "b", [*base, "--connect", f"unix:{socks[B]}", "--first-index", "1"]))

        def both_connected():
            ds = devices(d)
            return all(ds.get(k["id"], {}).get("connected") for k in keys)
        check(wait_for(both_connected, timeout=30),
              "both BLE MCUs authenticated over GATT (devices --json: connected)")
        ds = devices(d)
        check(ds["ble-0000"]["link_stats"]["link"] == f"ble:{A}" and
              ds["ble-0001"]["link_stats"]["link"] == f"ble:{B}",
              "their links are named ble:ADDRESS")
        out = d.ctl("status").stdout
        check("BLE:" in out and "of 5 peripheral(s) connected; adapter /org/bluez/hci0" in out,
              "mcugwctl status shows a BLE line")
        pa, pb = peer(d, A), peer(d, B)
        check(pa.get("write") == "acquired" and pa.get("notify") == "acquired",
              f"peripheral A uses the AcquireWrite/AcquireNotify sockets ({pa.get('write')}, "
              f"{pa.get('notify')})")
        check(pb.get("write") == "value" and pb.get("notify") == "signal",
              "peripheral B (no Acquire*) uses WriteValue type=command and StartNotify")
        check(wait_for(lambda: telemetry(d, "ble-0000") >= 20 and telemetry(d, "ble-0001") >= 20,
                       timeout=20),
              "telemetry flows up from both (counted by the link)")
        cloud_checks(d, sub)
        sa, sb = standin.stats(A), standin.stats(B)
        check(sa["acquire_write"] >= 1 and sa["acquire_notify"] >= 1 and sa["writes"] > 0,
              f"stand-in: A was written through the acquired socket ({sa['writes']} packets)")
        check(sb["start_notify"] >= 1 and sb["writes"] > 10,
              f"stand-in: B got {sb['writes']} WriteValue commands")
        check(sa["oversize"] == 0 and sb["oversize"] == 0 and sb["bad_type"] == 0 and
              sa["write_value_locked"] == 0,
              "every write fits one ATT packet (20 bytes at MTU 23) and is a write command")
        check(sb["write_bytes"] > 20 * 5 and sb["writes"] * 20 >= sb["write_bytes"],
              "the downlink to B was fragmented into 20-byte packets")

        # RSSI into the device metrics.
        mock.SetRSSI(A, dbus.Int16(-42))
        check(wait_for(lambda: devices(d)["ble-0000"].get("ble", {}).get("rssi") == -42,
                       timeout=5),
              "RSSI of the peripheral shows in devices --json (ble.rssi)")

        # Not on the allow-list: never connected, audited once.
        check(wait_for(lambda: ble_status(d)["ignored"] >= 1, timeout=5),
              "a peripheral not on the allow-list is counted as ignored")
        ign = [r for r in audit(d) if r["event"] == "ble.ignored"]
        check(len(ign) == 1 and ign[0]["subject"] == X, "ble.ignored audited once for it")
        check(standin.stats(X)["connects"] == 0, "and it was never connected")
        conn = [r for r in audit(d) if r["event"] == "ble.connected"]
        check({r["subject"] for r in conn} >= {A, B}, "ble.connected audited for A and B")

        # Allow-listed is not enough: an MCU with an unknown key is refused by the link, which
        # gives up on it after HandshakeTimeout; the peripheral is then let go and retried later.
        mock.AddGattPeripheral("hci0", U, socks[U], {})
        sims.append(Sim(tmp, "u", ["--gateway-key", gw_key, "--unknown", "--messages", "0",
                                   "--connect", f"unix:{socks[U]}"]))

        def refused_on_u():
            return [r for r in audit(d) if r["event"] == "auth.failed" and
                    r["details"].get("link") == f"ble:{U}"]
        check(wait_for(refused_on_u, timeout=15),
              "an unknown MCU behind an allow-listed address is refused (auth.failed on ble:U)")

        def u_let_go():
            return any(r["event"] == "ble.disconnected" and r["subject"] == U and
                       r["details"].get("reason") == "link closed by the gateway"
                       for r in audit(d))
        check(wait_for(u_let_go, timeout=15),
              "the link gives up on it and the peripheral is disconnected")
        check(wait_for(lambda: standin.stats(U)["connects"] >= 2, timeout=15),
              "and retried with backoff")
        check(not any(v.get("link_stats", {}).get("link") == f"ble:{U}"
                      for v in devices(d).values()),
              "no device authenticated over it")

        # --- the flood ------------------------------------------------------------------
        t0 = {i: telemetry(d, i) for i in ("ble-0000", "ble-0001")}
        mock.AddGattPeripheral("hci0", F, socks[F], {"acquire": False, "flood": True,
                                                     "mtu": dbus.UInt16(247)})
        mock.AddGattPeripheral("hci0", G, socks[G], {"acquire": True, "flood": True,
                                                     "mtu": dbus.UInt16(247)})
        check(wait_for(lambda: all(peer(d, x).get("counters", {}).get("rx_dropped", 0) > 0
                                   for x in (F, G)), timeout=15),
              "two flooding peripherals (signals, socket): excess notifications dropped, counted")

        def flood_cut(x):
            return any(r["event"] == "ble.disconnected" and r["subject"] == x and
                       r["details"].get("reason") == "notification flood" for r in audit(d))
        check(wait_for(lambda: flood_cut(F) and flood_cut(G), timeout=20),
              "and they are disconnected for a notification flood (audited)")
        check(all(peer(d, x)["counters"]["flood_disconnects"] >= 1 for x in (F, G)),
              "flood_disconnects counted")
        check(all(peer(d, x)["rx_queued"] <= 8192 if "rx_queued" in peer(d, x) else True
                  for x in (F, G)), "their queues stay within 8 KiB")
        t1 = {i: telemetry(d, i) for i in ("ble-0000", "ble-0001")}
        check(all(t1[i] >= t0[i] + 20 for i in t0),
              f"A and B kept flowing during the flood ({t0} -> {t1})")
        rss = 0
        with open(f"/proc/{d.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        check(0 < rss < 200 * 1024, f"daemon memory stays bounded ({rss} KiB RSS)")

        # --- link loss and reconnection ---------------------------------------------------
        before = peer(d, A)["counters"]["connects"]
        mock.DropConnection(A)

        def a_dropped():
            return any(r["event"] == "ble.disconnected" and r["subject"] == A for r in audit(d))
        check(wait_for(a_dropped, timeout=10), "a link loss of A is audited as ble.disconnected")
        check(wait_for(lambda: peer(d, A).get("counters", {}).get("connects", 0) > before and
                       devices(d)["ble-0000"]["connected"], timeout=30),
              "A is reconnected and its MCU authenticates again")
        n = telemetry(d, "ble-0000")
        check(wait_for(lambda: telemetry(d, "ble-0000") >= n + 10, timeout=15),
              "telemetry from A flows again after the reconnection")

        # --- bluetoothd restarts ------------------------------------------------------------
        standin.stop()
        check(wait_for(lambda: not ble_status(d)["bluez"] and ble_status(d)["peripherals_connected"] == 0,
                       timeout=10),
              "bluetoothd going away takes the BLE links down")
        standin = Standin(tmp, bus, "standin2")
        mock = standin.mock
        mock.AddAdapter("hci0", "mcugw-test")
        mock.AddGattPeripheral("hci0", A, socks[A], {"acquire": True})
        check(wait_for(lambda: devices(d).get("ble-0000", {}).get("connected"), timeout=30),
              "after bluetoothd comes back, A is reconnected and authenticated")

        # --- the system bus itself restarts ---------------------------------------------------
        standin.stop()
        bus.stop()
        check(wait_for(lambda: not ble_status(d)["bus_connected"], timeout=10),
              "losing the D-Bus connection is noticed (status ble.bus_connected false)")
        bus = PrivateBus(tmp)
        standin = Standin(tmp, bus, "standin3")
        mock = standin.mock
        mock.AddAdapter("hci0", "mcugw-test")
        mock.AddGattPeripheral("hci0", A, socks[A], {"acquire": True})
        check(wait_for(lambda: ble_status(d)["bus_connected"] and
                       devices(d).get("ble-0000", {}).get("connected"), timeout=30),
              "the daemon reconnects to the new bus and A authenticates again")

        # --- shutdown ------------------------------------------------------------------------
        rc = d.stop()
        check(rc == 0, f"mcugwd exits 0 on SIGTERM ({rc})")
        check(wait_for(lambda: not standin.stats(A)["connected"], timeout=5),
              "the daemon disconnected its peripherals when stopping")
        check_no_sanitizer_reports(d)
        results = [s.stop() for s in sims]
        sims = []
        results = results[:2]  # A and B (U never authenticates)
        check(all(r.get("acked", 0) > 0 for r in results),
              f"the MCUs got their acks down over GATT ({[r.get('acked') for r in results]})")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
        if standin:
            standin.stop()
        if sub:
            sub.close()
        if broker:
            broker.stop()
        if bus:
            bus.stop()
        if os.environ.get("KEEP_TMP"):
            print(f"kept {tmp.path}")
        else:
            tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
