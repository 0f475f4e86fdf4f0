# SPDX-License-Identifier: Apache-2.0
"""A cut-off audit tail is noticed (issue 13, finding 4). The daemon keeps the chain head in
meta.audit_head and in a head file in the state directory; at start the database must still reach
that head. Three ways to lose the tail are each detected and refuse the start: records deleted
while the daemon was stopped (trigger dropped), a WAL truncated after kill -9, and a wiped
database. `mcugwd --accept-audit-truncation` records the operator's decision in the chain, after
which the daemon starts and `audit verify` passes with that record present. A kill -9 alone and
a missing head file (first start of this version) are not false alarms."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import MCUGWD, Daemon, TempDir, base_config, check, finish, wait_for  # noqa

TIMEOUT = 20


def head_file(t):
    return t.join("state", "audit.head")


def read_head(t):
    """(seq, hash) from the head file, or None."""
    try:
        with open(head_file(t)) as f:
            parts = f.read().split()
    except FileNotFoundError:
        return None
    kv = dict(p.split("=", 1) for p in parts[1:])
    return int(kv["seq"]), kv["hash"]


def db_rows(d):
    c = sqlite3.connect(d.db_path())
    rows = c.execute("SELECT seq, event, details, hex(hash) FROM audit ORDER BY seq").fetchall()
    c.close()
    return rows


def make_records(d, n=3):
    for _ in range(n):
        d.ctl("reload")


def start_refused(d, what, expect):
    """Start the daemon expecting it to refuse (promptly, non-zero, with a message)."""
    try:
        r = subprocess.run([MCUGWD, "--config", d.config], capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        check(False, f"{what}: the daemon refused to start (it started and kept running)")
        return
    out = r.stdout + r.stderr
    check(r.returncode != 0, f"{what}: the daemon refuses to start")
    check(expect in out, f"{what}: says '{expect}' (got: {out.strip()[-400:]!r})")
    check("--accept-audit-truncation" in out, f"{what}: names the way out")


def accept(d, what):
    r = subprocess.run([MCUGWD, "--accept-audit-truncation", "--config", d.config],
                       capture_output=True, text=True, timeout=TIMEOUT)
    check(r.returncode == 0 and "audit.truncation_accepted" in r.stdout,
          f"{what}: --accept-audit-truncation records the decision ({r.stdout.strip()!r} "
          f"{r.stderr.strip()[-300:]!r})")
    return r


def after_accept(d, what, lost_from, lost_through):
    d.start()
    r = d.ctl("audit", "verify")
    check(r.returncode == 0 and "intact" in r.stdout, f"{what}: audit verify passes afterwards")
    d.stop()
    recs = [json.loads(det) for _, ev, det, _ in db_rows(d) if ev == "audit.truncation_accepted"]
    check(len(recs) == 1, f"{what}: one audit.truncation_accepted record in the chain")
    if recs:
        check(recs[0].get("lost_from") == lost_from and recs[0].get("lost_through") == lost_through,
              f"{what}: it names the lost range {lost_from}..{lost_through} (got {recs[0]})")
        check(recs[0].get("source") == "head file" or "meta" in recs[0].get("source", ""),
              f"{what}: it says which stored head disagreed")
    # And the next start is clean again.
    d.start()
    check(d.ctl("audit", "verify").returncode == 0, f"{what}: a later restart is clean")
    d.stop()


def test_restarts_are_clean():
    t = TempDir()
    try:
        d = Daemon(t, base_config(t))
        d.start()
        make_records(d)
        d.stop()
        rows = db_rows(d)
        head = read_head(t)
        check(head is not None and head[0] == rows[-1][0] and head[1].lower() == rows[-1][3].lower(),
              "head file holds the last record's seq and hash after a clean stop")
        d.start()
        check(d.ctl("audit", "verify").returncode == 0, "restart with an intact chain")
        # kill -9 after the last commit: the head file may lag behind, never run ahead.
        make_records(d)
        seq = d.ctl_json("status")["audit"]["head_seq"]
        wait_for(lambda: (read_head(t) or (0,))[0] >= seq, timeout=5)
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        d.proc = None
        d.start()
        check(d.ctl("audit", "verify").returncode == 0, "restart after kill -9 is not an alarm")
        d.stop()
        # No head file yet (first start of this version, or deleted): started, and noted.
        os.unlink(head_file(t))
        d.start()
        d.stop()
        events = [ev for _, ev, _, _ in db_rows(d)]
        check("audit.head_file_created" in events,
              "a missing head file is recreated and that is an audit record")
        check(read_head(t) is not None, "the head file exists again")
    finally:
        t.cleanup()


def test_deleted_tail():
    what = "tail deleted while stopped"
    t = TempDir()
    try:
        d = Daemon(t, base_config(t))
        d.start()
        make_records(d, 4)
        d.stop()
        last = db_rows(d)[-1][0]
        cut = last - 3
        c = sqlite3.connect(d.db_path())
        c.executescript(f"DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > {cut};")
        c.commit()
        c.close()
        start_refused(d, what, f"head file says seq {last} hash ")
        start_refused(d, what + " (meta kept)", f"meta.audit_head says seq {last}")
        # The thorough attacker also rewrites meta.audit_head: the head file still tells.
        c = sqlite3.connect(d.db_path())
        h = c.execute(f"SELECT hash FROM audit WHERE seq = {cut}").fetchone()[0]
        c.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'",
                  (cut.to_bytes(8, "big") + h,))
        c.commit()
        c.close()
        start_refused(d, what + " (meta rewritten)", f"database ends at seq {cut}")
        accept(d, what)
        after_accept(d, what, cut + 1, last)
    finally:
        t.cleanup()


def test_truncated_wal():
    what = "WAL truncated after kill -9"
    t = TempDir()
    try:
        d = Daemon(t, base_config(t))
        d.start()
        make_records(d, 2)
        # Move what is there so far into the main file, so that the database keeps a prefix.
        c = sqlite3.connect(d.db_path())
        c.execute("PRAGMA wal_checkpoint(PASSIVE)")
        c.close()
        kept = d.ctl_json("status")["audit"]["head_seq"]
        make_records(d, 3)
        seq = d.ctl_json("status")["audit"]["head_seq"]
        check(wait_for(lambda: (read_head(t) or (0,))[0] >= seq, timeout=5),
              f"{what}: head file follows the commits")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        d.proc = None
        wal = d.db_path() + "-wal"
        check(os.path.getsize(wal) > 0, f"{what}: there is a WAL to truncate")
        os.truncate(wal, 0)
        c = sqlite3.connect(d.db_path())
        ends = c.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
        c.close()
        check(ends < seq, f"{what}: the database lost its last records ({ends} < {seq})")
        check(ends >= kept - 1 or ends == 0, f"{what}: the checkpointed prefix is (mostly) kept")
        head = read_head(t)[0]
        start_refused(d, what, f"head file says seq {head}")
        accept(d, what)
        after_accept(d, what, ends + 1, head)
    finally:
        t.cleanup()


def test_wiped_database():
    what = "database wiped"
    t = TempDir()
    try:
        d = Daemon(t, base_config(t))
        d.start()
        make_records(d, 2)
        d.stop()
        last = read_head(t)[0]
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(d.db_path() + suffix)
            except FileNotFoundError:
                pass
        start_refused(d, what, f"head file says seq {last} hash ")
        start_refused(d, what, "database ends at seq 0")
        accept(d, what)
        after_accept(d, what, 1, last)
        rows = db_rows(d)
        check(rows[0][1] == "audit.truncation_accepted",
              f"{what}: the new chain starts with the accepted truncation")
    finally:
        t.cleanup()


def test_accept_when_intact():
    t = TempDir()
    try:
        d = Daemon(t, base_config(t))
        d.start()
        d.stop()
        n = len(db_rows(d))
        r = subprocess.run([MCUGWD, "--accept-audit-truncation", "--config", d.config],
                           capture_output=True, text=True, timeout=TIMEOUT)
        check(r.returncode == 0 and "nothing to accept" in r.stdout,
              "--accept-audit-truncation on an intact log changes nothing")
        check(len(db_rows(d)) == n, "no record appended when there is nothing to accept")
        # A head file that is not ours (a FIFO here) is refused, promptly.
        os.unlink(head_file(t))
        os.mkfifo(head_file(t))
        start_refused(d, "head file is a FIFO", "audit.head: not a regular file (a FIFO)")
    finally:
        t.cleanup()


def main():
    for t in (test_restarts_are_clean, test_deleted_tail, test_truncated_wal, test_wiped_database,
              test_accept_when_intact):
        try:
            t()
        except Exception as e:  # one scenario's surprise must not hide the others' verdicts
            check(False, f"{t.__name__}: raised {e!r}")
    finish()


if __name__ == "__main__":
    main()
