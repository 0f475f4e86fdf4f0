# SPDX-License-Identifier: Apache-2.0
"""Disk full, then freed, then kill -9: nothing the gateway acked is lost (issue 13, finding 1).

The state directory is an 8 MiB tmpfs, the outbox quota 4M and there is no cloud session, so
telemetry piles up in the outbox. Simulated MCUs (mcugw-sim) send over the link while the file
system is filled to the last byte for 15 s and then freed; 2,000 more messages follow. Every ack
the devices receive is logged. Then mcugwd is killed with SIGKILL, restarted with a session to a
real Mosquitto and drained: every message a device saw acked OK must reach the subscriber.

Along the way: the outbox's figures equal what SQLite holds, nothing was dropped for the quota
(the real queue never reached it), the refusals are counted, `status` and `audit config` say when
the quota does not fit into the free space, and the failing commits are not logged one line each.

Needs a small real file system: as root (CI) the tmpfs is mounted directly; otherwise the test
re-runs itself in a user and mount namespace (unshare --user --map-root-user --mount). Where
neither is possible it is skipped (exit 77) — never as root."""

import errno
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, Subscriber, free_port  # noqa: E402
from mcugwtest import (Daemon, Sim, TempDir, base_config, check, finish, skip,  # noqa: E402
                       batch_entries, enroll_file, sim_keys, wait_for)

FS_SIZE = "8m"
PAYLOAD = 800
RATE = 40            # per device and second
DEVICES = 4
BEFORE_S, FULL_S, AFTER_S = 4, 15, 4
MORE = 2000          # messages after the space came back, as in the report


def enter_namespace_if_needed():
    """Root mounts directly. Anyone else re-runs this script as root of a new user namespace."""
    if os.geteuid() == 0:
        return
    if os.environ.get("MCUGW_DISKFULL_NS"):
        print("FAIL - still not root inside the user namespace", flush=True)
        sys.exit(1)
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        skip("not root and no unprivileged user namespaces: "
             f"{probe.stderr.decode(errors='replace').strip()}")
    env = dict(os.environ, MCUGW_DISKFULL_NS="1")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable,
                        os.path.abspath(__file__)], env=env)
    sys.exit(r.returncode)


def acks(path):
    """{(device, seq)} acked OK, and the number of other acks (retry, dropped)."""
    ok, other = set(), 0
    try:
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # being written
                dev, _stream, seq, status = line.split()
                if status == "0":
                    ok.add((dev, int(seq)))
                else:
                    other += 1
    except FileNotFoundError:
        pass
    return ok, other


def table_figures(db_path):
    """(rows, bytes) of the outbox table as committed, by the outbox's own measure."""
    c = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return c.execute("SELECT count(*), coalesce(sum(length(payload) + length(device) + 64), 0)"
                         " FROM outbox").fetchone()
    finally:
        c.close()


def fill(path):
    """Write until the file system is full; the size written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    # The last partial pages too.
    with open(path + ".tail", "wb", buffering=0) as f:
        try:
            while True:
                n += f.write(b"\0" * 512)
        except OSError:
            pass
    return n


def main():
    enter_namespace_if_needed()
    tmp = TempDir("mcugw-diskfull-")
    state = tmp.join("state")
    os.makedirs(state)
    mounted = False
    broker = d = sub = None
    sims = []
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs",
                            state], capture_output=True, text=True)
        if not check(r.returncode == 0, f"a {FS_SIZE} tmpfs as the state directory"):
            print(r.stderr, flush=True)
            return
        mounted = True
        filler = os.path.join(state, "filler")

        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        sub = Subscriber(broker, ["mcugw/it-gw/batch"], name="sub-diskfull", clean=True)

        devdir = tmp.join("devices.d")
        os.makedirs(devdir)
        enroll_file(devdir, "sim.conf", sim_keys(DEVICES, "df-a", "a-") + sim_keys(DEVICES, "df-c", "c-"))
        port = free_port()
        config = base_config(tmp, f"""
[Link]
ListenStream=tcp:127.0.0.1:{port}

[Outbox]
MaxBytes=4M

[Relay]
BatchWindow=20ms
""").replace("[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n")
        # First no cloud session: everything stays in the outbox.
        d = Daemon(tmp, config).start()
        st = d.ctl_json("status")
        space = st["outbox"].get("space", {})
        check(space.get("quota_fits") is True and space.get("fs_size", 0) > 0,
              f"status: the 4M quota fits into the {FS_SIZE} file system ({space})")
        gw_key = st["link"]["public_key"]
        base = ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}", "--size",
                str(PAYLOAD), "--rate", str(RATE), "--count", str(DEVICES)]

        a_log = tmp.join("acks-a.log")
        sims.append(Sim(tmp, "a", [*base, "--seed", "df-a", "--id-prefix", "a-", "--messages",
                                   "0", "--duration", str(BEFORE_S + FULL_S + AFTER_S),
                                   "--ack-log", a_log]))
        time.sleep(BEFORE_S)
        ok_before, _ = acks(a_log)
        check(len(ok_before) > 0, f"{len(ok_before)} message(s) acked before the disk is full")

        filled = fill(filler)
        print(f"# filled {filled} bytes at {time.strftime('%T')}", flush=True)
        t_full = time.monotonic()
        # The outbox notices: the quota no longer fits, status and audit config say so.
        ok = wait_for(lambda: d.ctl_json("status")["outbox"].get("space", {}).get(
            "quota_fits") is False, timeout=FULL_S - 5)
        check(ok, "status: the quota no longer fits into the free space "
              f"({d.ctl_json('status')['outbox'].get('space')})")
        r = d.ctl("audit", "config", json_out=True)
        findings = json.loads(r.stdout).get("findings", []) if r.stdout.startswith("{") else []
        if not check(any(x["check"] == "outbox.quota_exceeds_space" for x in findings),
                     "audit config: the quota exceeds the space of the state directory's file "
                     "system"):
            print(f"# audit config: rc={r.returncode} {r.stdout[:2000]} {r.stderr[:500]}")
        time.sleep(max(0.0, FULL_S - (time.monotonic() - t_full)))
        st_full = d.ctl_json("status")["outbox"]
        _, retried = acks(a_log)
        check(retried > 0 and st_full.get("refused", 0) > 0,
              f"while full, messages are refused ({retried} retry acks, "
              f"refused={st_full.get('refused')})")
        os.unlink(filler)
        os.unlink(filler + ".tail")
        print(f"# freed at {time.strftime('%T')}", flush=True)
        ok_at_free, _ = acks(a_log)

        c_log = tmp.join("acks-c.log")
        sims.append(Sim(tmp, "c", [*base, "--seed", "df-c", "--id-prefix", "c-", "--messages",
                                   str(MORE // DEVICES), "--linger", "0.5", "--ack-log", c_log]))
        ra = sims[0].wait(BEFORE_S + FULL_S + AFTER_S + 30)
        rc = sims[1].wait(MORE // (RATE * DEVICES) + 60)
        ok_a, _ = acks(a_log)
        ok_c, _ = acks(c_log)
        after = len(ok_a - ok_at_free) + len(ok_c)
        print(f"# sim a: {ra}\n# sim c: {rc}", flush=True)
        check(len(ok_c) >= MORE * 0.95, f"{len(ok_c)} of {MORE} messages acked after the space "
              "came back")
        check(len(ok_a - ok_at_free) > 0, "the devices that saw the disk full are acked again")

        # Quiet now: the outbox's figures are what SQLite holds.
        time.sleep(0.5)
        st = d.ctl_json("status")["outbox"]
        rows, nbytes = table_figures(d.db_path())
        check((st["rows"], st["bytes"]) == (rows, nbytes),
              f"outbox figures ({st['rows']} rows, {st['bytes']} bytes) = the table "
              f"({rows} rows, {nbytes} bytes)")
        check(st["dropped"] == 0, f"nothing dropped for the quota (dropped={st['dropped']}): "
              "the real queue never reached it")
        check(st.get("space", {}).get("quota_fits") is True, "status: the quota fits again")
        log = d.read_log()
        kinds = {}
        for x in log.splitlines():
            k = re.sub(r"[0-9]+", "N", x)[:90]
            kinds[k] = kinds.get(k, 0) + 1
        for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            if "error" in k or "warning" in k or "notice" in k:
                print(f"# log {n:6d}× {k}", flush=True)
        commit_lines = [x for x in log.splitlines() if "commit" in x and "fail" in x]
        append_lines = [x for x in log.splitlines() if "cannot append" in x]
        check(0 < len(commit_lines) <= 10,
              f"failed commits are logged rate-limited ({len(commit_lines)} line(s))")
        check(len(append_lines) <= 10, f"failed appends too ({len(append_lines)} line(s))")

        # kill -9, then drain into a real broker.
        d.signal(signal.SIGKILL)
        d.proc.wait(10)
        d.log.close()
        d.write_config(config + broker.mqtt_config(*cert, ""))
        d.start()
        acked = ok_a | ok_c
        ok = wait_for(lambda: d.ctl_json("status")["outbox"]["rows"] == 0, timeout=90)
        check(ok, "the outbox drained after the restart")
        wait_for(lambda: acked <= set(batch_entries(sub)), timeout=30)
        got = set(batch_entries(sub))
        lost = acked - got
        lost_after = {x for x in lost if x not in ok_before and x not in ok_at_free}
        check(not lost, f"every message acked OK arrived: {len(acked)} acked, {len(lost)} lost "
              f"({len(lost_after)} of them acked after the space came back), "
              f"{after} acked after")
        rc = d.stop()
        check(rc == 0, "daemon exits 0")

        # The default quota (4G) on this small file system: said at start, in status and in
        # audit config.
        d.write_config(config.replace("MaxBytes=4M", ""))
        d.start()
        sp = d.ctl_json("status")["outbox"].get("space", {})
        check(sp.get("quota_fits") is False and sp.get("needed", 0) > 4 << 30,
              f"status: the default 4G quota does not fit ({sp})")
        check("MaxBytes=4.0 GiB needs" in d.read_log(), "a warning at start says so")
        check("the outbox quota does not fit" in d.ctl("status").stdout,
              "so does the human `mcugwctl status`")
        r = d.ctl("audit", "config", json_out=True)
        check(any(x["check"] == "outbox.quota_exceeds_space"
                  for x in json.loads(r.stdout).get("findings", [])),
              "and audit config")
        check(d.stop() == 0, "daemon exits 0")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
        if sub:
            sub.close()
        if broker:
            broker.stop()
        if mounted:
            subprocess.run(["umount", "-l", state])
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
