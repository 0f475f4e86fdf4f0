# SPDX-License-Identifier: Apache-2.0
"""Hostile files named by the configuration (issue 13, finding 6): a drop-in, device or rule file
that is a link to /dev/zero or /dev/urandom, a FIFO, a directory, a file with NUL bytes, or a FIFO
as PrivateKeyFile= or KeyFile=. `mcugwd --check-config` must exit non-zero promptly with a
message naming the file (every run has a timeout, so the old behaviour - looping or blocking
forever - fails the test), the daemon must refuse to start on them, and a running daemon's reload
must keep the old configuration and stay responsive."""

import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWD, MCUGWCTL, Daemon, TempDir, base_config, check,  # noqa
                       finish)

TIMEOUT = 15  # seconds; the checks take milliseconds, a hang is what fails


def run_timed(cmd, what):
    """Run cmd; a timeout is a failure of the check `what` (returns None)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        check(False, f"{what}: finished within {TIMEOUT}s (it hung)")
        return None


def config_text(tmp, extra=""):
    return base_config(tmp, f"""
[Paths]
DevicesDirectory={tmp.join('devices.d')}

[Monitor]
RulesDirectory={tmp.join('rules.d')}
{extra}""")


def check_config(tmp, cfg, what, expect):
    r = run_timed([MCUGWD, "--check-config", "--config", cfg], what)
    if r is None:
        return
    check(r.returncode != 0, f"{what}: --check-config exits non-zero")
    check(expect in r.stderr, f"{what}: message '{expect}' (got: {r.stderr.strip()!r})")


def test_check_config(tmp):
    cfg = tmp.join("mcugw.conf")
    for d in ("mcugw.conf.d", "devices.d", "rules.d"):
        os.makedirs(tmp.join(d), exist_ok=True)
    with open(cfg, "w") as f:
        f.write(config_text(tmp))
    r = run_timed([MCUGWD, "--check-config", "--config", cfg], "baseline config")
    check(r is not None and r.returncode == 0, "the config without hostile files is valid")

    cases = [
        ("drop-in -> /dev/zero", "mcugw.conf.d/50-zero.conf", "symlink", "/dev/zero",
         "50-zero.conf: not a regular file (a character device)"),
        ("drop-in -> /dev/urandom", "mcugw.conf.d/50-random.conf", "symlink", "/dev/urandom",
         "50-random.conf: not a regular file (a character device)"),
        ("devices.d file -> /dev/zero", "devices.d/zero.conf", "symlink", "/dev/zero",
         "devices.d/zero.conf: not a regular file"),
        ("devices.d file -> /dev/urandom", "devices.d/random.conf", "symlink", "/dev/urandom",
         "devices.d/random.conf: not a regular file"),
        ("rules.d file -> /dev/zero", "rules.d/zero.conf", "symlink", "/dev/zero",
         "rules.d/zero.conf: not a regular file"),
        ("FIFO drop-in", "mcugw.conf.d/50-fifo.conf", "fifo", None,
         "50-fifo.conf: not a regular file (a FIFO)"),
        ("FIFO in devices.d", "devices.d/fifo.conf", "fifo", None,
         "devices.d/fifo.conf: not a regular file (a FIFO)"),
        ("directory named x.conf", "mcugw.conf.d/x.conf", "dir", None,
         "x.conf: not a regular file (a directory)"),
        ("directory in devices.d", "devices.d/x.conf", "dir", None,
         "devices.d/x.conf: not a regular file (a directory)"),
        ("NUL bytes in a drop-in", "mcugw.conf.d/50-nul.conf", "nul", None,
         "50-nul.conf:2: NUL byte"),
    ]
    for what, rel, kind, target, expect in cases:
        p = tmp.join(rel)
        if kind == "symlink":
            os.symlink(target, p)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            os.mkdir(p)
        else:
            with open(p, "wb") as f:
                f.write(b"[Gateway]\nLogLevel=debug\x00\x00\n")
        try:
            check_config(tmp, cfg, what, expect)
        finally:
            if kind == "dir":
                os.rmdir(p)
            else:
                os.unlink(p)

    fifo = tmp.join("key.fifo")
    os.mkfifo(fifo)
    for section, key in (("Link", "PrivateKeyFile"), ("MQTT", "KeyFile"), ("MQTT", "CAFile")):
        with open(cfg, "w") as f:
            f.write(config_text(tmp, f"[{section}]\n{key}={fifo}\n"))
        check_config(tmp, cfg, f"FIFO as {key}=", f"[{section}] {key}= {fifo}: not a regular "
                     "file (a FIFO)")

    # The daemon itself refuses to start on it (it used to hang in open()).
    with open(cfg, "w") as f:
        f.write(config_text(tmp, f"[Link]\nPrivateKeyFile={fifo}\n"))
    r = run_timed([MCUGWD, "--config", cfg], "start with a FIFO as PrivateKeyFile=")
    if r is not None:
        check(r.returncode != 0, "start with a FIFO as PrivateKeyFile=: exits non-zero")
        check("key.fifo: not a regular file (a FIFO)" in r.stderr + r.stdout,
              "start with a FIFO as PrivateKeyFile=: says why")
    os.unlink(fifo)
    with open(cfg, "w") as f:
        f.write(config_text(tmp))


def test_reload(tmp):
    t = TempDir()
    d = None
    try:
        for sub in ("mcugw.conf.d", "devices.d", "rules.d"):
            os.makedirs(t.join(sub), exist_ok=True)
        d = Daemon(t, config_text(t)).start()
        before = d.ctl_json("status")
        hash_before = before.get("config_hash")
        hostile = [
            ("link to /dev/zero", t.join("mcugw.conf.d", "50-zero.conf"), "symlink"),
            ("FIFO", t.join("mcugw.conf.d", "50-fifo.conf"), "fifo"),
            ("link to /dev/urandom in devices.d", t.join("devices.d", "r.conf"), "random"),
            ("directory x.conf", t.join("mcugw.conf.d", "x.conf"), "dir"),
        ]
        for what, p, kind in hostile:
            if kind == "symlink":
                os.symlink("/dev/zero", p)
            elif kind == "random":
                os.symlink("/dev/urandom", p)
            elif kind == "fifo":
                os.mkfifo(p)
            else:
                os.mkdir(p)
            try:
                r = d.ctl("reload", timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                r = None
            check(r is not None and r.returncode != 0,
                  f"reload with a drop-in that is a {what}: refused promptly")
            check(r is not None and os.path.basename(p) in r.stderr,
                  f"reload with a {what}: the error names the file")
            try:
                st = d.ctl_json("status")
            except (RuntimeError, subprocess.TimeoutExpired):
                st = {}
            check(st.get("pid") == before.get("pid"), f"after a {what}: daemon still answers")
            check(st.get("config_hash") == hash_before,
                  f"after a {what}: the old configuration is kept")
            if kind == "dir":
                os.rmdir(p)
            else:
                os.unlink(p)

        # SIGHUP takes the same path: a FIFO drop-in must not freeze the loop.
        p = t.join("mcugw.conf.d", "60-fifo.conf")
        os.mkfifo(p)
        failures_before = d.ctl_json("status")["reloads"]["failed"]
        d.signal(1)  # SIGHUP
        ok = False
        for _ in range(100):
            try:
                st = d.ctl_json("status")
            except (RuntimeError, subprocess.TimeoutExpired):
                break
            if st["reloads"]["failed"] > failures_before:
                ok = True
                break
            time.sleep(0.1)
        check(ok, "SIGHUP with a FIFO drop-in: reload fails, the daemon keeps answering")
        os.unlink(p)

        r = d.ctl("reload", timeout=TIMEOUT)
        check(r.returncode == 0, "reload succeeds once the hostile files are gone")
        d.stop()
        c = sqlite3.connect(d.db_path())
        rows = c.execute("SELECT details FROM audit WHERE event = 'config.reload_failed'"
                         ).fetchall()
        c.close()
        errs = [e for (det,) in rows for e in json.loads(det).get("errors", [])]
        check(any("50-fifo.conf: not a regular file (a FIFO)" in e for e in errs),
              "config.reload_failed audit record names the FIFO")
    finally:
        if d:
            d.stop()
        t.cleanup()


def test_import(tmp):
    fifo = tmp.join("import.fifo")
    os.mkfifo(fifo)
    r = run_timed([MCUGWCTL, "--socket", tmp.join("nosuch.sock"), "device", "import", fifo],
                  "mcugwctl device import FIFO")
    if r is not None:
        check(r.returncode != 0 and "not a regular file (a FIFO)" in r.stderr,
              "mcugwctl device import of a FIFO: refused with a message")
    os.unlink(fifo)


def main():
    tmp = TempDir()
    try:
        test_check_config(tmp)
        test_reload(tmp)
        test_import(tmp)
    finally:
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
