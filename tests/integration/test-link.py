# SPDX-License-Identifier: Apache-2.0
"""The MCU link end to end: the real daemon with stream listeners and a serial port (a real
pseudo-terminal made by mcugw-sim), simulated devices on the real device SDK. Devices
authenticate over a Unix socket, TCP on loopback and a pty; unknown, wrong-key, revoked and
pending devices are refused and audited with the reason and never get telemetry through; a
replayed, bit-flipped, truncated frame, garbage, a handshake flood and a slowloris are each
rejected and counted while the good devices keep flowing; quarantining a connected device drops
it at once; unplugging the pty (the sim exits) and plugging a new one at the same path recovers.
Also: the gateway key file is created 0600 and a group-readable key is refused."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWD, SIM, Daemon, Sim, TempDir, base_config, check, finish,  # noqa
                       check_no_sanitizer_reports, free_port, sim_keys, wait_for)

def devices(d):
    return {x["id"]: x for x in d.ctl_json("devices")}


def stats(d, dev_id):
    return devices(d).get(dev_id, {}).get("link_stats", {})


def audit(d, n=2000):
    return d.ctl_json("audit", "tail", "-n", str(n))


def failed_reasons(d, dev_id):
    return [r["details"].get("reason") for r in audit(d)
            if r["event"] == "auth.failed" and r["details"].get("device_id") == dev_id]


def test_key_permissions(tmp):
    key = tmp.join("bad-link.key")
    with open(key, "w") as f:
        f.write("2CeQ3vO5rZ6u5QYb0a5o5wG6xgNHPWZ0nH1z1b0cXl4=\n")
    os.chmod(key, 0o640)
    cfg = tmp.join("perm.conf")
    with open(cfg, "w") as f:
        f.write(base_config(tmp).replace("StateDirectory=" + tmp.join("state"),
                                         "StateDirectory=" + tmp.join("state-perm"))
                .replace(tmp.join("run"), tmp.join("run-perm"))
                + f"\n[Link]\nPrivateKeyFile={key}\n")
    r = subprocess.run([MCUGWD, "--config", cfg], capture_output=True, text=True, timeout=20)
    check(r.returncode != 0 and key in r.stderr and "0640" in r.stderr,
          "a group-readable link key is refused with the file and its mode")


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        test_key_permissions(tmp)

        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        good = sim_keys(4, "good", "sim-")
        tcp = sim_keys(2, "tcp", "tcp-")
        pty = sim_keys(1, "pty", "pty-")
        bad = sim_keys(8, "bad", "bad-")
        rev = sim_keys(1, "rev", "rev-")
        pend = sim_keys(1, "pend", "pend-")
        with open(os.path.join(devdir, "sim.conf"), "w") as f:
            for group, state in ((good, "active"), (tcp, "active"), (pty, "active"),
                                 (bad, "active"), (rev, "revoked"), (pend, "pending")):
                for x in group:
                    f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\n"
                            f"State={state}\n\n")

        link_sock = tmp.join("run", "link.sock")
        port = free_port()
        tty = tmp.join("tty0")
        config = base_config(tmp, f"""
[Link]
ListenStream=unix:{link_sock}
ListenStream=tcp:127.0.0.1:{port}
SerialPort={tty}:115200
HandshakeTimeout=2s
IdleTimeout=3s
MaxConnections=64
HandshakeRatePerLink=2
AuditFailuresPerMinute=5
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")

        d = Daemon(tmp, config).start()
        st = d.ctl_json("status")
        gw_key = st["link"]["public_key"]
        keyfile = tmp.join("state", "link.key")
        check(len(gw_key) == 44, "status shows link.public_key")
        check(gw_key in d.ctl("status").stdout, "mcugwctl status prints the link public key")
        check(stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600,
              "the gateway link key is generated with mode 0600")
        with open(keyfile) as f:
            check(len(f.read().strip()) == 44, "key file holds base64 of 32 bytes")
        check(any(x["address"] == f"unix:{link_sock}" for x in st["link"]["listeners"]) and
              any(x["address"] == f"tcp:127.0.0.1:{port}" for x in st["link"]["listeners"]),
              "status lists both stream listeners")

        base = ["--gateway-key", gw_key]
        # The pty device first: the daemon opens the serial port with backoff once it exists.
        sims.append(Sim(tmp, "pty", [*base, "--connect", f"pty:{tty}", "--seed", "pty",
                                     "--id-prefix", "pty-", "--messages", "0", "--rate", "20",
                                     "--baud", "115200"]))
        good_sim = Sim(tmp, "good", [*base, "--connect", f"unix:{link_sock}", "--count", "4",
                                     "--seed", "good", "--messages", "0", "--rate", "50"])
        sims.append(good_sim)
        tcp_sim = Sim(tmp, "tcp", [*base, "--connect", f"tcp:127.0.0.1:{port}", "--count", "2",
                                   "--seed", "tcp", "--id-prefix", "tcp-", "--messages", "40",
                                   "--rate", "100"])
        want = {x["id"] for x in good + pty}

        def all_connected():
            ds = devices(d)
            return all(ds.get(i, {}).get("connected") for i in want)
        check(wait_for(all_connected, timeout=20),
              "4 socket devices and the pty device authenticated (devices --json: connected)")
        r = tcp_sim.wait(20)
        check(r.get("authenticated") == 2 and r.get("sent") == 80 and r.get("acked") == 80,
              f"2 devices over TCP on loopback: 80 messages sent and acked ({r})")
        ds = devices(d)
        check(ds["pty-0000"]["link"].startswith("serial:") and
              ds["pty-0000"]["fw_version"] == "sim-1.0.0",
              "the pty device is on the serial link and reported its status")
        check(wait_for(lambda: stats(d, "pty-0000").get("telemetry", 0) >= 5, timeout=10),
              "telemetry flows over the pty")
        ok_recs = [r for r in audit(d) if r["event"] == "auth.ok"]
        check({r["subject"] for r in ok_recs} >= want, "auth.ok audited for every device")
        check(any(r["event"] == "link.up" and r["subject"] == f"serial:{tty}" for r in audit(d)),
              "serial link.up audited")

        # A device enrolled with mcugwctl from a keygen key pair.
        kf = tmp.join("kf-1.key")
        r = subprocess.run([os.environ.get("MCUGWCTL", "mcugwctl"), "keygen", kf],
                           capture_output=True, text=True)
        check(r.returncode == 0 and d.ctl("device", "add", "kf-1", r.stdout.strip()).returncode
              == 0, "mcugwctl keygen + device add")
        r = Sim(tmp, "keyfile", [*base, "--connect", f"unix:{link_sock}", "--key-file", kf,
                                 "--id", "kf-1", "--messages", "5"]).wait(15)
        check(r.get("authenticated") == 1 and r.get("acked") == 5,
              "a device enrolled with mcugwctl device add authenticates (sim --key-file)")

        # --- lifecycle: a wrong key named, device set-key, device remove --------------------
        ctl = os.environ.get("MCUGWCTL", "mcugwctl")
        kf2 = tmp.join("kf-2.key")
        pub2 = subprocess.run([ctl, "keygen", kf2], capture_output=True,
                              text=True).stdout.strip()
        r = Sim(tmp, "kf-typo", [*base, "--connect", f"unix:{link_sock}", "--key-file", kf2,
                                 "--id", "kf-1", "--messages", "1", "--duration", "3"]).wait(15)
        check(r.get("authenticated") == 0, "a key other than the enrolled one is refused")
        check("key does not match the enrolled key for kf-1" in failed_reasons(d, "kf-1"),
              "auth.failed says: key does not match the enrolled key for kf-1")
        check("key does not match the enrolled key for kf-1" in d.read_log(),
              "the journal says it too")
        old_holder = Sim(tmp, "kf-old", [*base, "--connect", f"unix:{link_sock}", "--key-file",
                                         kf, "--id", "kf-1", "--messages", "0", "--rate", "5"])
        check(wait_for(lambda: devices(d).get("kf-1", {}).get("connected"), timeout=10),
              "kf-1 connected with its enrolled key")
        r = d.ctl("device", "set-key", "kf-1", pub2)
        check(r.returncode == 0, f"device set-key ({r.stderr.strip()})")
        check(d.ctl_json("device", "show", "kf-1")["public_key"] == pub2 and
              devices(d)["kf-1"]["state"] == "active", "the new key is enrolled, state kept")
        check(wait_for(lambda: not devices(d)["kf-1"]["connected"], timeout=5),
              "set-key dropped the session under the old key")
        old_holder.stop()
        check(any(x["event"] == "device.key_changed" and x["subject"] == "kf-1" and
                  x["details"]["public_key"] == pub2 for x in audit(d)),
              "set-key audited as device.key_changed")
        r = d.ctl("device", "set-key", "kf-1", good[0]["public_key"])
        check(r.returncode != 0 and "already enrolled as sim-0000" in r.stderr,
              "set-key refuses a key enrolled as another device")
        new_holder = Sim(tmp, "kf-new", [*base, "--connect", f"unix:{link_sock}", "--key-file",
                                         kf2, "--id", "kf-1", "--messages", "0", "--rate", "5"])
        check(wait_for(lambda: devices(d).get("kf-1", {}).get("connected"), timeout=10),
              "the device with the corrected key authenticates")
        r = d.ctl("device", "remove", "kf-1")
        check(r.returncode != 0 and "connected" in r.stderr and "--force" in r.stderr,
              "device remove refuses a connected device without --force")
        r = d.ctl("device", "remove", "kf-1", "--force", "--reason", "test")
        check(r.returncode == 0 and "kf-1" not in devices(d),
              "device remove --force removes a connected device")
        new_holder.stop()
        ev = [x["event"] for x in audit(d) if x["subject"] == "kf-1"]
        check("device.added" in ev and "device.key_changed" in ev and "device.removed" in ev,
              f"the audit history of the removed id is kept ({sorted(set(ev))})")
        r = d.ctl("device", "remove", "kf-1")
        check(r.returncode != 0 and "no device kf-1" in r.stderr, "removing twice: no device")
        check(d.ctl("device", "add", "kf-1", pub2).returncode == 0 and
              d.ctl("device", "revoke", "kf-1").returncode == 0, "re-enrolled, then revoked")
        check(d.ctl("device", "remove", "kf-1").returncode == 0 and
              d.ctl("device", "add", "kf-1", pub2).returncode == 0,
              "a revoked id is enrolled again after device remove")
        r = Sim(tmp, "kf-back", [*base, "--connect", f"unix:{link_sock}", "--key-file", kf2,
                                 "--id", "kf-1", "--messages", "3"]).wait(15)
        check(r.get("authenticated") == 1 and r.get("acked") == 3,
              "the re-enrolled device authenticates and is acked")
        r = d.ctl("device", "remove", pty[0]["id"])
        check(r.returncode != 0 and "DevicesDirectory" in r.stderr,
              "a device from DevicesDirectory is removed in its file, not with device remove")

        # --- refusals ---------------------------------------------------------------------
        before = {i: stats(d, i).get("telemetry", 0) for i in ("sim-0000", "sim-0001")}
        tot_before = d.ctl_json("status")["link"]["counters"]["telemetry"]
        refused = {
            "unknown": Sim(tmp, "unknown", [*base, "--connect", f"unix:{link_sock}", "--unknown",
                                            "--duration", "3"]),
            "wrongkey": Sim(tmp, "wrongkey", [*base, "--connect", f"unix:{link_sock}",
                                              "--seed", "bad", "--id-prefix", "bad-",
                                              "--wrong-key", "--duration", "3"]),
            "revoked": Sim(tmp, "revoked", [*base, "--connect", f"unix:{link_sock}", "--seed",
                                            "rev", "--id-prefix", "rev-", "--duration", "3"]),
            "pending": Sim(tmp, "pending", [*base, "--connect", f"unix:{link_sock}", "--seed",
                                            "pend", "--id-prefix", "pend-", "--duration", "3"]),
            "wronggw": Sim(tmp, "wronggw", [*base, "--connect", f"unix:{link_sock}", "--seed",
                                            "bad", "--id-prefix", "bad-", "--first-index", "7",
                                            "--wrong-gateway-key", "--duration", "3"]),
        }
        res = {k: s.wait(15) for k, s in refused.items()}
        for k, r in res.items():
            check(r.get("authenticated") == 0 and r.get("sent") == 0,
                  f"{k}: never authenticated, no telemetry sent ({r})")
        recs = audit(d)
        fails = [x for x in recs if x["event"] == "auth.failed"]
        check(any(x["details"]["reason"] == "unknown key" and
                  x["details"]["device_id"] == "unknown-0000" for x in fails),
              "unknown device refused and audited: auth.failed reason 'unknown key'")
        check("key does not match the enrolled key for bad-0000" in failed_reasons(d, "bad-0000"),
              "wrong key for an enrolled id refused and audited")
        check("revoked" in failed_reasons(d, "rev-0000"), "revoked device refused: 'revoked'")
        check("pending approval" in failed_reasons(d, "pend-0000"),
              "pending device refused: 'pending approval'")
        check(any("wrong gateway key" in x["details"]["reason"] for x in fails),
              "a device pinning another gateway key fails the handshake, audited")
        check("unknown-0000" not in devices(d), "the unknown device is not in the registry")
        # A wrong key claiming an enrolled id is a stranger's attempt: it is audited with the
        # claimed id but never counted against that device (else anyone could get it
        # quarantined by the rules); the device's own key refused (revoked) does count.
        check(stats(d, "bad-0000").get("auth_failures", 0) == 0 and
              stats(d, "bad-0000").get("telemetry", 0) == 0 and
              d.ctl_json("status")["link"]["counters"]["auth_failures"] >= 1,
              "wrong-key failures counted gateway-wide, not against the claimed id; no telemetry")
        check(stats(d, "rev-0000").get("auth_failures", 0) >= 1,
              "failures with a device's own (revoked) key count against it")
        check(stats(d, "rev-0000").get("telemetry", 0) == 0, "no telemetry from the revoked one")
        n_fail_unknown = sum(1 for x in fails if x["details"]["device_id"] == "unknown-0000")
        check(n_fail_unknown <= 5, f"auth.failed audit rate-limited per link ({n_fail_unknown})")
        after = {i: stats(d, i).get("telemetry", 0) for i in before}
        check(all(after[i] > before[i] for i in before),
              f"good devices kept flowing during the refusals ({before} -> {after})")

        # --- misbehaving authenticated devices ----------------------------------------------
        before = {i: stats(d, i).get("telemetry", 0) for i in ("sim-0000", "sim-0002")}
        args = ["--connect", f"unix:{link_sock}", "--seed", "bad", "--id-prefix", "bad-",
                "--messages", "30", "--rate", "50", "--duration", "4", "--every", "5"]
        mis = {
            "replay": (1, Sim(tmp, "replay", [*base, *args, "--first-index", "1", "--replay"])),
            "bitflip": (2, Sim(tmp, "bitflip", [*base, *args, "--first-index", "2",
                                                "--bitflip"])),
            "truncate": (3, Sim(tmp, "truncate", [*base, *args, "--first-index", "3",
                                                  "--truncate"])),
            "garbage": (4, Sim(tmp, "garbage", [*base, *args, "--first-index", "4",
                                                "--garbage"])),
            "flood": (5, Sim(tmp, "flood", [*base, *args, "--first-index", "5", "--flood"])),
            "slowloris": (6, Sim(tmp, "slowloris", [*base, *args, "--first-index", "6",
                                                    "--slowloris"])),
        }
        mres = {k: (i, s.wait(20)) for k, (i, s) in mis.items()}
        st = {k: stats(d, f"bad-000{i}") for k, (i, _) in mres.items()}
        check(st["replay"].get("dup", 0) >= 1 and st["replay"].get("replays", 0) == 0,
              f"duplicated frame dropped and counted as dup, not as a replay "
              f"({st['replay'].get('dup')} dup, {st['replay'].get('replays')} replays)")
        check(st["bitflip"].get("mac_errors", 0) >= 1,
              f"bit-flipped frame rejected as bad MAC ({st['bitflip'].get('mac_errors')})")
        check(st["truncate"].get("truncated", 0) >= 1,
              f"truncated frame rejected and counted ({st['truncate'].get('truncated')})")
        check(st["garbage"].get("crc_errors", 0) + st["garbage"].get("cobs_errors", 0) >= 1,
              "garbage on the line counted as CRC/COBS errors")
        for k in ("replay", "garbage"):
            r = mres[k][1]
            check(r.get("acked") == r.get("sent") and r.get("sent", 0) > 0,
                  f"{k}: every genuine message still acked ({r.get('acked')}/{r.get('sent')})")
        for k in ("bitflip", "truncate"):
            r = mres[k][1]
            check(r.get("acked", 0) + r.get("corrupted", 0) == r.get("sent") and
                  st[k].get("telemetry") == r.get("acked"),
                  f"{k}: corrupted frames never counted as telemetry "
                  f"({st[k].get('telemetry')} counted, {r.get('acked')} acked)")
        rej = [x for x in audit(d) if x["event"] == "link.frame_rejected"]
        check({x["details"]["reason"] for x in rej} >= {"bad MAC", "truncated"},
              "rejected frames audited with the reason")
        check(not any(x["details"]["reason"] == "duplicate" for x in rej),
              "duplicates (harmless) are not audited")
        lk = d.ctl_json("status")["link"]
        check(lk["counters"]["hs_throttled"] >= 1,
              f"handshake flood throttled ({lk['counters']['hs_throttled']} dropped)")
        check(lk["handshake_timeouts"] >= 1, "slowloris connection closed at the handshake timeout")
        after = {i: stats(d, i).get("telemetry", 0) for i in before}
        check(all(after[i] > before[i] for i in before) and all_connected(),
              f"good devices kept flowing and connected throughout ({before} -> {after})")

        # --- connection limit and idle timeout ---------------------------------------------
        refused0 = d.ctl_json("status")["link"]["connections_refused"]
        socks = []
        for _ in range(80):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(link_sock)
            socks.append(s)
        check(wait_for(lambda: d.ctl_json("status")["link"]["connections_refused"] - refused0
                       >= 80 - 64, timeout=5),
              "MaxConnections: connections beyond the limit are refused")
        for s in socks:
            s.close()
        check(all_connected(), "the authenticated devices were not disturbed by the limit")
        idle = Sim(tmp, "idle", [*base, "--connect", f"unix:{link_sock}", "--seed", "bad",
                                 "--id-prefix", "bad-", "--first-index", "1", "--messages", "1",
                                 "--linger", "12"])
        check(wait_for(lambda: stats(d, "bad-0001").get("telemetry", 0) >= 31, timeout=5),
              "idle device connected and sent its one message")
        time.sleep(3.5)
        check(devices(d)["bad-0001"]["connected"] and
              stats(d, "bad-0001").get("keepalives", 0) >= 1,
              "a quiet device is kept by the keepalive PING it answers (IdleTimeout=3s)")
        idle.proc.send_signal(signal.SIGSTOP)  # a device that hangs: no more answers
        check(wait_for(lambda: not devices(d)["bad-0001"]["connected"], timeout=8),
              "a device that stops answering is dropped after IdleTimeout")
        idle.proc.send_signal(signal.SIGCONT)
        check(d.ctl_json("status")["link"]["idle_timeouts"] >= 1, "idle timeout counted")
        r = idle.wait(20)
        check(r.get("disconnects", 0) >= 1 and r.get("handshakes", 0) >= 2,
              f"the device noticed and authenticated again ({r.get('handshakes')} handshakes)")

        # --- quarantine of a connected device ----------------------------------------------
        r = d.ctl("device", "quarantine", "sim-0003")
        check(r.returncode == 0, "mcugwctl device quarantine")
        check(wait_for(lambda: not devices(d)["sim-0003"]["connected"], timeout=3),
              "quarantined device disconnected immediately")
        recs = audit(d)
        check(any(x["event"] == "link.down" and x["subject"] == "sim-0003" and
                  x["details"]["reason"] == "quarantined" for x in recs),
              "disconnect of the quarantined device audited")
        check(wait_for(lambda: "quarantined" in failed_reasons(d, "sim-0003"), timeout=5),
              "its reconnection attempts are refused: 'quarantined'")
        t0 = stats(d, "sim-0003").get("telemetry", 0)
        time.sleep(1.0)
        check(stats(d, "sim-0003").get("telemetry", 0) == t0,
              "no telemetry counted from the quarantined device")

        # --- serial unplug / replug ----------------------------------------------------------
        pty_sim = sims[0]
        pty_sim.stop()
        check(wait_for(lambda: not devices(d)["pty-0000"]["connected"], timeout=5),
              "pty unplugged: device disconnected")
        check(wait_for(lambda: any(x["event"] == "link.down" and x["subject"] == f"serial:{tty}"
                                   for x in audit(d)), timeout=5),
              "serial link.down audited")
        downs = [x for x in audit(d) if x["event"] == "link.down" and
                 x["subject"] == f"serial:{tty}"]
        check(downs and "bad file descriptor" not in json.dumps(downs[-1]) and
              "bad file descriptor" not in d.read_log(),
              f"the unplug is told as such, not as a bad descriptor ({downs[-1:]})")
        time.sleep(1.0)
        sims[0] = Sim(tmp, "pty2", [*base, "--connect", f"pty:{tty}", "--seed", "pty",
                                    "--id-prefix", "pty-", "--messages", "0", "--rate", "20"])
        check(wait_for(lambda: devices(d)["pty-0000"]["connected"], timeout=20),
              "replugged pty reopened and the device re-authenticated")
        ups = [x for x in audit(d) if x["event"] == "link.up" and x["subject"] == f"serial:{tty}"]
        check(len(ups) >= 2, f"serial link.up audited again ({len(ups)})")
        t0 = stats(d, "pty-0000").get("telemetry", 0)
        check(wait_for(lambda: stats(d, "pty-0000").get("telemetry", 0) > t0, timeout=10),
              "telemetry flows again after the replug")

        # --- the good devices' view -----------------------------------------------------------
        r = good_sim.stop()
        check(r.get("authenticated") == 4 and r.get("sent", 0) > 100 and r.get("errors") == 0,
              f"good sim: {r.get('sent')} sent, {r.get('acked')} acked, no errors")
        check(r.get("sent", 0) - r.get("acked", 0) <= 4 * 32,
              "good sim: everything but the in-flight window acked")
        for s in sims:
            s.stop()
        sims = []
        check_no_sanitizer_reports(tmp=tmp)
        check(d.ctl("audit", "verify").returncode == 0, "audit chain intact")
        rc = d.stop()
        check(rc == 0, "daemon exits 0 with links open")
        check("handles left open" not in d.read_log(), "no libuv handle left open at exit")
        check(not os.path.exists(link_sock), "link socket removed at exit")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
            if "--verbose" in sys.argv or os.environ.get("MCUGW_TEST_VERBOSE"):
                print(d.read_log())
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
