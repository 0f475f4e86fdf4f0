# SPDX-License-Identifier: Apache-2.0
"""The device registry through the real daemon: enrollment files, mcugwctl device add/
quarantine/restore/revoke/import, keygen, and reload revoking devices removed from the files."""

import json
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import MCUGWD, Daemon, TempDir, base_config, check, finish  # noqa: E402

MCUGWCTL = os.environ.get("MCUGWCTL", "mcugwctl")


def keygen(tmp, name):
    path = tmp.join(name + ".key")
    r = subprocess.run([MCUGWCTL, "keygen", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    tmp = TempDir()
    d = None
    try:
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        config = base_config(tmp, "") .replace(
            "[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")

        path, pub1 = keygen(tmp, "dev1")
        check(len(pub1) == 44, "keygen prints a 44-character public key")
        check(stat.S_IMODE(os.stat(path).st_mode) == 0o600, "keygen writes the private key 0600")
        r = subprocess.run([MCUGWCTL, "keygen", path], capture_output=True, text=True)
        check(r.returncode != 0 and "refusing to overwrite" in r.stderr,
              "keygen refuses to overwrite a key")
        with open(path) as f:
            r = subprocess.run([MCUGWCTL, "pubkey"], stdin=f, capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.strip() == pub1,
              "mcugwctl pubkey < key prints the key's public key, as keygen did")
        r = subprocess.run([MCUGWCTL, "pubkey"], input="not a key\n", capture_output=True,
                           text=True)
        check(r.returncode != 0 and "44 characters of base64" in r.stderr,
              "pubkey refuses what is not a private key")
        _, pub2 = keygen(tmp, "dev2")
        _, pub3 = keygen(tmp, "dev3")
        _, pub4 = keygen(tmp, "dev4")

        write(os.path.join(devdir, "10-floor.conf"),
              f"[Device]\nId=sensor-1\nPublicKey={pub1}\nGroups=floor1\n\n"
              f"[Device]\nId=sensor-2\nPublicKey={pub2}\nState=pending\n")

        # A broken enrollment file is a configuration error with file:line.
        write(os.path.join(devdir, "90-bad.conf"), "[Device]\nId=x y\nPublicKey=nope\n")
        cfg = tmp.join("mcugw.conf")
        write(cfg, config)
        r = subprocess.run([MCUGWD, "--check-config", "--config", cfg], capture_output=True,
                           text=True)
        check(r.returncode != 0 and "90-bad.conf:2: Id=x y" in r.stderr
              and "90-bad.conf:3: PublicKey=nope" in r.stderr,
              "--check-config reports enrollment file errors with file:line")
        os.unlink(os.path.join(devdir, "90-bad.conf"))

        d = Daemon(tmp, config).start()
        devs = {x["id"]: x for x in d.ctl_json("devices")}
        check(set(devs) == {"sensor-1", "sensor-2"}, "devices from DevicesDirectory enrolled")
        check(devs["sensor-1"]["state"] == "active" and devs["sensor-1"]["groups"] == ["floor1"]
              and devs["sensor-1"]["public_key"] == pub1, "state, groups and key as in the file")
        check(devs["sensor-2"]["state"] == "pending", "State=pending honoured")

        r = d.ctl("device", "add", "cli-1", pub3, "--groups", "lab")
        check(r.returncode == 0, "device add")
        r = d.ctl("device", "add", "cli-2", pub3)
        check(r.returncode != 0 and "already enrolled as cli-1" in r.stderr,
              "a key can be enrolled only once")
        r = d.ctl("device", "add", "cli-1", pub4)
        check(r.returncode != 0 and "already enrolled" in r.stderr, "ids are unique")
        r = d.ctl("device", "add", "bad id", pub4)
        check(r.returncode != 0 and "device id" in r.stderr, "bad id refused")
        r = d.ctl("device", "add", "cli-3", "AAAA")
        check(r.returncode != 0 and "base64" in r.stderr, "bad key refused")

        check(d.ctl("device", "approve", "sensor-2").returncode == 0, "approve a pending device")
        r = d.ctl("device", "approve", "sensor-1")
        check(r.returncode != 0 and "not pending" in r.stderr, "approve only pending devices")
        check(d.ctl("device", "quarantine", "cli-1", "--reason", "test").returncode == 0,
              "quarantine")
        check(d.ctl_json("device", "show", "cli-1")["state"] == "quarantined",
              "device show reports quarantined")
        check(d.ctl("device", "restore", "cli-1").returncode == 0, "restore")
        check(d.ctl("device", "revoke", "cli-1").returncode == 0, "revoke")
        r = d.ctl("device", "restore", "cli-1")
        check(r.returncode != 0, "a revoked device cannot be restored")
        r = d.ctl("device", "show", "ghost")
        check(r.returncode != 0 and "no device ghost" in r.stderr, "unknown device: clear error")

        # Bulk import: all or nothing, errors with line numbers.
        keys = [keygen(tmp, f"imp{i}")[1] for i in range(3)]
        bad = tmp.join("bad.csv")
        write(bad, "id,public_key,groups\n"
                   f"imp-0,{keys[0]},a\n"
                   f"imp-1,{keys[1]},b\n"
                   f"sensor-1,{keys[2]},c\n")
        r = d.ctl("device", "import", bad)
        check(r.returncode != 0 and "line 4" in r.stderr and "nothing imported" in r.stderr,
              "import with a conflict fails naming the line")
        check(d.ctl("device", "show", "imp-0").returncode != 0, "nothing imported on error")
        good = tmp.join("good.json")
        write(good, json.dumps([{"id": f"imp-{i}", "public_key": k, "groups": ["bulk"]}
                                for i, k in enumerate(keys)]))
        r = d.ctl("device", "import", good, json_out=True)
        check(r.returncode == 0 and json.loads(r.stdout)["imported"] == 3, "JSON import")
        check(len(d.ctl_json("devices", "--group", "bulk")) == 3, "filter devices by group")
        check(len(d.ctl_json("devices", "--state", "revoked")) == 1, "filter devices by state")

        # Removing a device from the files revokes it on reload.
        write(os.path.join(devdir, "10-floor.conf"),
              f"[Device]\nId=sensor-1\nPublicKey={pub1}\nGroups=floor1\n")
        check(d.ctl("reload").returncode == 0, "reload with a device removed")
        check(d.ctl_json("device", "show", "sensor-2")["state"] == "revoked",
              "device removed from DevicesDirectory is revoked")

        # A broken enrollment file makes the reload fail and keeps everything.
        write(os.path.join(devdir, "20-x.conf"), "[Device]\nId=z\n")
        r = d.ctl("reload")
        check(r.returncode != 0 and "20-x.conf" in r.stderr, "reload refuses a bad enrollment file")
        os.unlink(os.path.join(devdir, "20-x.conf"))

        # Completion asks the daemon for device ids (completion/mcugwctl).
        bc = "/usr/share/bash-completion/bash_completion"
        if os.path.exists(bc):
            src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                               "completion", "mcugwctl")
            script = (f"source {bc}; source {src}; COMP_WORDS=(mcugwctl device show sen); "
                      "COMP_CWORD=3; COMP_LINE='mcugwctl device show sen'; COMP_POINT=24; "
                      "_mcugwctl; echo \"${COMPREPLY[*]}\"")
            env = dict(os.environ, MCUGW_SOCKET=d.socket,
                       PATH=os.path.dirname(os.path.abspath(MCUGWCTL)) + ":" + os.environ["PATH"])
            r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
            check(set(r.stdout.split()) == {"sensor-1", "sensor-2"},
                  f"completion offers the daemon's device ids ({r.stdout.strip()}{r.stderr})")

        ev = [x["event"] for x in d.ctl_json("audit", "tail", "-n", "200")]
        for e in ["device.added", "device.state", "device.import", "device.import_failed"]:
            check(e in ev, f"audit has {e}")
        st = d.ctl_json("status")
        check(st["devices"]["total"] == 6 and st["devices"]["revoked"] == 2,
              "status counts devices by state")
        check(d.ctl("audit", "verify").returncode == 0, "audit chain intact")

        # Factory batch: key pairs plus an import file.
        fac = tmp.join("factory")
        r = subprocess.run([MCUGWCTL, "factory-keys", fac, "--count", "5", "--prefix", "line7",
                            "--groups", "batch-42"], capture_output=True, text=True)
        check(r.returncode == 0 and len([f for f in os.listdir(fac) if f.endswith(".key")]) == 5,
              "factory-keys writes the key pairs")
        check(all(stat.S_IMODE(os.stat(os.path.join(fac, f)).st_mode) == 0o600
                  for f in os.listdir(fac) if f.endswith(".key")), "factory keys are 0600")
        r = d.ctl("device", "import", os.path.join(fac, "import.csv"))
        check(r.returncode == 0 and "imported 5" in r.stdout, "factory import file imports")
        check(len(d.ctl_json("devices", "--group", "batch-42")) == 5, "factory devices grouped")

        # Export in the import format and rebuild another gateway from it.
        r = d.ctl("device", "export")
        check(r.returncode == 0 and r.stdout.startswith("id,public_key,groups,state\n"),
              "device export writes CSV")
        exported = tmp.join("export.csv")
        write(exported, r.stdout)
        t2 = TempDir()
        try:
            d2 = Daemon(t2, base_config(t2)).start()
            r = d2.ctl("device", "import", exported)
            check(r.returncode == 0, "export re-imports into a fresh gateway")
            a = {x["id"]: (x["public_key"], x["state"], x["groups"]) for x in d.ctl_json("devices")}
            b = {x["id"]: (x["public_key"], x["state"], x["groups"]) for x in d2.ctl_json("devices")}
            check(a == b, "the rebuilt registry is identical")
            d2.stop()
        finally:
            t2.cleanup()

        # The registry survives a restart.
        d.stop()
        d = Daemon(tmp, config).start()
        check(d.ctl_json("device", "show", "imp-2")["groups"] == ["bulk"], "registry persisted")
    finally:
        if d:
            d.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
