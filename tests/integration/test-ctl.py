# SPDX-License-Identifier: Apache-2.0
"""mcugwctl as an operator reads it, against the real daemon with simulated devices: sizes,
times and reset causes in words, who quarantined a device and why, tables that stay aligned
with long ids and link names; `top` in a real terminal (tmux) 80 columns wide: nothing wraps,
the alternate screen, help and sort keys; bulk import run twice (--skip-existing, --update): no error, and only what changed is
changed (and audited); `tail` showing the relayed telemetry; "disconnected from" the broker."""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWCTL, Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       sim_keys, skip, wait_for)

LONG = "pump-station-north-annex-"  # + 4 digits: 29 characters, more than top shows


def human_checks(d, devs):
    st = d.ctl("status").stdout
    outbox = [x for x in st.splitlines() if x.startswith("Outbox:")]
    check(outbox and "GiB" in outbox[0] and "4294967296" not in outbox[0],
          f"status: the outbox quota in GiB, not bytes ({outbox})")

    quarantined = devs[1]["id"]
    r = d.ctl("device", "quarantine", quarantined, "--reason", "too chatty")
    check(r.returncode == 0, f"device quarantine ({r.stderr.strip()})")
    show = d.ctl("device", "show", quarantined).stdout
    check(re.search(r"changed by cli:uid=\d+ on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\): "
                    r"too chatty", show) is not None,
          f"device show: who quarantined the device, when and why: {show!r}")
    check(re.search(r"Last seen:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)", show)
          is not None, "device show: last seen as ISO 8601 and an age")
    check("last reset: power-on" in show, "device show: the reset cause by name (power-on)")
    check("last_seen_us" not in show and "reset_cause" not in show,
          "device show: no raw microseconds or cause codes in the human output")
    stats = show[show.index("Link stats:"):].splitlines()[1:] if "Link stats:" in show else []
    check(stats and re.search(r"frames_in\s+\d+", stats[0]) is not None and
          all(len(x) == len(stats[0]) for x in stats[:-1]),
          f"device show: the link counters as an aligned table: {stats}")
    sc = d.ctl_json("device", "show", quarantined).get("state_change", {})
    check(sc.get("actor", "").startswith("cli:") and sc.get("reason") == "too chatty" and
          sc.get("from") == "active" and sc.get("ts_us", 0) > 0,
          f"device show --json: state_change with actor, reason, from, ts_us ({sc})")
    check("state_change" not in d.ctl_json("device", "show", devs[0]["id"]),
          "an active device has no state_change")
    import datetime

    def iso(us):
        return datetime.datetime.fromtimestamp(us // 1000000, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S") + f".{us // 1000 % 1000:03d}Z"
    js = d.ctl_json("device", "show", quarantined)
    check(js.get("last_seen") == iso(js["last_seen_us"]) and
          js["state_change"].get("ts") == iso(js["state_change"]["ts_us"]),
          f"JSON: instants as *_us and as ISO 8601 ({js.get('last_seen')}, "
          f"{js['state_change'].get('ts')})")
    check(all(x.get("last_seen") == iso(x["last_seen_us"]) for x in d.ctl_json("devices")),
          "devices --json: last_seen as ISO 8601 too")

    out = d.ctl("devices").stdout.splitlines()
    head = out[0]
    pos = {h: head.index(h) for h in ("STATE", "CONN", "FIRMWARE", "LAST SEEN", "GROUPS",
                                       "LINK")}
    rows = [x for x in out[1:] if x.startswith(LONG)]
    check(len(rows) == len(devs) and
          all(x[pos["STATE"]:].split()[0] in ("active", "quarantined") and
              x[pos["CONN"]:].split()[0] in ("yes", "no") and
              x[pos["LINK"]:].startswith("unix:") for x in rows),
          f"devices: every column starts under its header with long ids and links: {out}")
    check(all(re.match(r"\d+s ago", x[pos["LAST SEEN"]:]) for x in rows),
          "devices: last seen as an age")

    m = d.ctl("metrics").stdout.splitlines()
    mh = [x for x in m if x.startswith("ID ")]
    mrows = [x for x in m if x.startswith(LONG)]
    check(mh and mrows and all(x[mh[0].index("STATE"):].split()[0] in ("active", "quarantined")
                               for x in mrows),
          "metrics: the device table stays aligned with long ids")


def import_checks(d, tmp):
    keys = [d.ctl("keygen", tmp.join(f"imp-{i}.key")).stdout.strip() for i in range(4)]
    path = tmp.join("batch.csv")

    def write(rows):
        with open(path, "w") as f:
            f.write("id,public_key,groups,state\n")
            for i, k, g, st in rows:
                f.write(f'{i},{k},"{g}",{st}\n')

    write([("imp-0", keys[0], "a", "active"), ("imp-1", keys[1], "a", "active")])
    r = d.ctl("device", "import", path)
    check(r.returncode == 0 and "imported 2 device(s)" in r.stdout, f"import ({r.stdout})")
    r = d.ctl("device", "import", path)
    check(r.returncode != 0 and "already enrolled" in r.stderr and "--skip-existing" in r.stderr,
          f"the same file again is refused, naming the way out: {r.stderr.strip()}")
    r = d.ctl("device", "import", path, "--skip-existing")
    check(r.returncode == 0 and "imported 0 device(s), skipped 2 already enrolled" in r.stdout,
          f"--skip-existing: the same file twice is no error ({r.stdout.strip()})")

    # A new device, a new key for imp-0, new groups for imp-1: --skip-existing adds only the
    # new one; --update changes the others too.
    write([("imp-0", keys[2], "a", "active"), ("imp-1", keys[1], "a,b", "active"),
           ("imp-3", keys[3], "a", "active")])
    r = d.ctl_json("device", "import", path, "--skip-existing")
    check(r == {"imported": 1, "updated": 0, "skipped": 2, "unchanged": 0},
          f"--skip-existing adds the new device and leaves the others ({r})")
    check(d.ctl_json("device", "show", "imp-0")["public_key"] == keys[0],
          "... imp-0 keeps its key")
    r = d.ctl("device", "import", path, "--update")
    check(r.returncode == 0 and "imported 0 device(s), updated 2, 1 unchanged" in r.stdout,
          f"--update: two changed, one unchanged ({r.stdout.strip()})")
    check(d.ctl_json("device", "show", "imp-0")["public_key"] == keys[2] and
          d.ctl_json("device", "show", "imp-1")["groups"] == ["a", "b"],
          "--update gave imp-0 its new key and imp-1 its new groups")
    ev = [(x["event"], x["subject"]) for x in d.ctl_json("audit", "tail", "-n", "50")]
    check(("device.key_changed", "imp-0") in ev and ("device.groups", "imp-1") in ev,
          "the key and group changes are audited")
    # --update is still all or nothing: a key that belongs to another device refuses the file.
    write([("imp-1", keys[3], "a", "active"), ("imp-4", keys[2], "a", "active")])
    r = d.ctl("device", "import", path, "--update")
    check(r.returncode != 0 and "line 2" in r.stderr and "already enrolled as imp-3" in r.stderr
          and "line 3" in r.stderr and "already enrolled as imp-0" in r.stderr and
          d.ctl("device", "show", "imp-4").returncode != 0 and
          d.ctl_json("device", "show", "imp-1")["public_key"] == keys[1],
          f"--update refuses a file with a taken key, every error at once, nothing done: "
          f"{r.stderr.strip()}")
    r = d.ctl("device", "import", path, "--update", "--skip-existing")
    check(r.returncode != 0 and "exclude each other" in r.stderr,
          "--update and --skip-existing together are refused")


def mqtt_wording_check(tmp):
    """A gateway whose broker is down: `status` says "disconnected from HOST"."""
    from broker import Certs, free_port
    certs = Certs(tmp.join("certs"))
    cert, key = certs.client("gw")
    t2 = TempDir()
    d2 = None
    try:
        d2 = Daemon(t2, base_config(t2, f"""
[MQTT]
Host=127.0.0.1
Port={free_port()}
CAFile={certs.ca}
CertificateFile={cert}
KeyFile={key}
ReconnectMin=30s
ReconnectMax=60s
""")).start()
        wait_for(lambda: d2.ctl_json("status")["mqtt"]["state"] == "disconnected", 10)
        line = [x for x in d2.ctl("status").stdout.splitlines() if x.startswith("MQTT:")]
        check(line and line[0].startswith("MQTT:      disconnected from 127.0.0.1"),
              f"status: 'disconnected from' the broker, not 'disconnected to' ({line})")
    finally:
        if d2:
            d2.stop()
        t2.cleanup()


def tail_checks(d, devs):
    """`mcugwctl tail`: the relayed telemetry, of one device or all, without a broker."""
    one = devs[2]["id"]
    r = d.ctl("tail", "--device", one, "--count", "2", json_out=True, timeout=30)
    msgs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    check(r.returncode == 0 and len(msgs) == 2 and all(m["device"] == one for m in msgs),
          f"tail --device: two messages of that device, as JSON lines ({r.stderr.strip()})")
    check(all(m["bytes"] > 0 and ("payload" in m or "payload_base64" in m) and m["ts_us"] > 0
              for m in msgs) and msgs[0]["seq"] < msgs[1]["seq"],
          f"... each with its size, payload, time and a growing seq ({msgs})")
    r = d.ctl("tail", "--count", "4", timeout=30)
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and len(lines) == 4 and
          all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ " + LONG + r"\d{4} stream \d+ seq "
                       r"\d+ \d+ B ", x) for x in lines),
          f"tail: one readable line per message of any device: {lines}")


def tmux(sock, *args):
    return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True,
                          timeout=10)


def top_checks(d, tmp, devs):
    if subprocess.run(["sh", "-c", "command -v tmux"], capture_output=True).returncode != 0:
        skip("tmux is not installed (apt-get install tmux)")
    sock = tmp.join("tmux.sock")
    cmd = f"{MCUGWCTL} --socket {d.socket} top --interval 0.3; sleep 30"
    r = tmux(sock, "-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "80", "-y", "24",
             cmd)
    check(r.returncode == 0, f"tmux runs top in an 80x24 terminal ({r.stderr.strip()})")

    def screen():
        return tmux(sock, "capture-pane", "-p", "-J", "-t", "top").stdout.splitlines()

    try:
        check(wait_for(lambda: any(x.startswith("ID ") for x in screen()), 10),
              "top draws its device table")
        s = screen()
        check(all(len(x) <= 80 for x in s),
              f"top: no line is wider than 80 columns: {[x for x in s if len(x) > 80]}")
        table = [x for x in s if x.startswith(LONG[:10])]
        check(len(table) == len(devs) and all("~" in x.split()[0] for x in table) and
              len({x.split()[0] for x in table}) == len(devs) and
              all(x.split()[0].endswith("-000" + str(i)) for i, x in
                  enumerate(sorted(table, key=lambda x: x.split()[0]))),
              f"top: every device on one line, a long id cut in the middle (its end kept): "
              f"{table}")
        head = [x for x in s if x.startswith("ID ")][0]
        check("STATE" in head and "MSGS/S" in head and "FIRMWARE" not in head,
              f"top: the columns that fit 80 columns: {head!r}")
        alt = tmux(sock, "display-message", "-p", "-t", "top", "#{alternate_on}").stdout.strip()
        check(alt == "1", "top uses the alternate screen")

        tmux(sock, "send-keys", "-t", "top", "h")
        check(wait_for(lambda: any("sort by id" in x for x in screen()), 5),
              "top: h shows the keys")
        tmux(sock, "send-keys", "-t", "top", "i")
        check(wait_for(lambda: any(", by id" in x for x in screen()), 5),
              "top: i sorts by id")
        ids = [x.split()[0] for x in screen() if x.startswith(LONG[:10])]
        check(len(ids) == len(devs) and ids == sorted(ids), f"... in id order ({ids})")
        tmux(sock, "send-keys", "-t", "top", "q")
        check(wait_for(lambda: tmux(sock, "display-message", "-p", "-t", "top",
                                    "#{alternate_on}").stdout.strip() == "0", 5),
              "top: q leaves the alternate screen")
        r = d.ctl("top", "--once")
        check("FIRMWARE" in r.stdout and "\033[" not in r.stdout,
              "top --once into a pipe: every column, no terminal codes")
    finally:
        tmux(sock, "kill-server")


def main():
    tmp = TempDir()
    d = None
    sim = None
    try:
        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        devs = sim_keys(3, "ctl", LONG)
        with open(os.path.join(devdir, "ctl.conf"), "w") as f:
            for x in devs:
                f.write(f"[Device]\nId={x['id']}\nPublicKey={x['public_key']}\nState=active\n"
                        f"Groups=north,pumps\n\n")
        link_sock = tmp.join("run", "link.sock")
        config = base_config(tmp, f"\n[Link]\nListenStream=unix:{link_sock}\n").replace(
            "[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        d = Daemon(tmp, config).start()
        gw_key = d.ctl_json("status")["link"]["public_key"]
        sim = Sim(tmp, "s", ["--gateway-key", gw_key, "--connect", f"unix:{link_sock}",
                             "--seed", "ctl", "--id-prefix", LONG, "--count", str(len(devs)),
                             "--messages", "0", "--rate", "1"])
        check(wait_for(lambda: all(x["connected"] for x in d.ctl_json("devices")), 20),
              "the simulated devices are connected")
        human_checks(d, devs)
        tail_checks(d, devs)
        import_checks(d, tmp)
        mqtt_wording_check(tmp)
        top_checks(d, tmp, devs)
    finally:
        if sim:
            sim.stop()
        if d:
            d.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
