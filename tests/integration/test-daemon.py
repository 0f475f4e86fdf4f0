# SPDX-License-Identifier: Apache-2.0
"""The gateway core end to end: --check-config, the control socket and mcugwctl, reload keeping the
old configuration on error and restart-only keys until a restart, the audit chain and its tamper detection, peer-credential tiers,
malformed and oversized requests, clean shutdown."""

import grp
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWD, Daemon, TempDir, base_config, check, finish, raw_request,  # noqa
                       wait_for)

IS_ROOT = os.geteuid() == 0


def test_check_config(tmp):
    bad = tmp.join("bad.conf")
    with open(bad, "w") as f:
        f.write("[Gateway]\nLogLevel=chatty\n\n[Paths]\nStateDirectory=/tmp/x\nFrobnicate=yes\n")
    r = subprocess.run([MCUGWD, "--check-config", "--config", bad], capture_output=True,
                       text=True)
    check(r.returncode != 0, "--check-config exits non-zero on a bad config")
    check(f"{bad}:2: LogLevel=chatty" in r.stderr, "bad value reported with file:line")
    check(f"{bad}:6: unknown key 'Frobnicate' in section [Paths]" in r.stderr,
          "unknown key reported with file:line")

    os.makedirs(bad + ".d", exist_ok=True)
    with open(os.path.join(bad + ".d", "50-x.conf"), "w") as f:
        f.write("[Control]\nSocketMode=rw\n")
    r = subprocess.run([MCUGWD, "--check-config", "--config", bad], capture_output=True,
                       text=True)
    check(f"{bad}.d/50-x.conf:2: SocketMode=rw" in r.stderr, "drop-in errors name the drop-in")

    good = tmp.join("good.conf")
    with open(good, "w") as f:
        f.write(base_config(tmp))
    r = subprocess.run([MCUGWD, "--check-config", "--config", good], capture_output=True,
                       text=True)
    check(r.returncode == 0 and "OK" in r.stdout, "--check-config exits 0 on a valid config")

    r = subprocess.run([MCUGWD, "--check-config", "--config", tmp.join("missing.conf")],
                       capture_output=True, text=True)
    check(r.returncode != 0 and "cannot open" in r.stderr, "a missing file is an error")

    # The daemon itself refuses to start on a bad config, with the same messages.
    r = subprocess.run([MCUGWD, "--config", bad], capture_output=True, text=True, timeout=10)
    check(r.returncode != 0 and "LogLevel=chatty" in r.stderr, "daemon refuses a bad config")


def audit_events(d, n=200):
    return [r["event"] for r in d.ctl_json("audit", "tail", "-n", str(n))]


def test_status_reload(tmp, d, config_ok):
    st = d.ctl_json("status")
    check(st["gateway"] == "it-gw" and st["version"], "status --json answers")
    check(len(st["config_hash"]) == 64, "status shows the config hash")
    first_hash = st["config_hash"]

    env = dict(os.environ, MCUGW_SOCKET=d.socket)
    r = subprocess.run([os.environ.get("MCUGWCTL", "mcugwctl"), "status"], capture_output=True,
                       text=True, env=env)
    check(r.returncode == 0 and "it-gw" in r.stdout, "MCUGW_SOCKET selects the socket")

    # Follow the audit log while reloading.
    follow = subprocess.Popen([os.environ["MCUGWCTL"], "--socket", d.socket, "--json", "audit",
                               "tail", "-n", "0", "--follow"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)

    # A broken config on SIGHUP: keep serving with the old one, say why, audit it.
    d.write_config(config_ok + "\n[Gateway]\nBogusKey=1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.ctl_json("status")["reloads"]["failed"] >= 1, timeout=10)
    st = d.ctl_json("status")
    check(st["reloads"]["failed"] == 1, "SIGHUP with a broken config counted as failed")
    check(st["config_hash"] == first_hash, "old config still active after the failed reload")
    check("BogusKey" in st["last_error"], "status shows why the reload failed")
    check("config.reload_failed" in audit_events(d), "failed reload audited")
    check("unknown key 'BogusKey'" in d.read_log(), "failed reload logged with the reason")

    r = d.ctl("reload")
    check(r.returncode != 0 and "BogusKey" in r.stderr and r.stderr.count("\n") == 1,
          "mcugwctl reload fails with a one-line reason")

    # A valid change applies.
    d.write_config(config_ok.replace("LogLevel=debug", "LogLevel=info"))
    r = d.ctl("reload")
    check(r.returncode == 0, "mcugwctl reload of a valid config succeeds")
    st = d.ctl_json("status")
    check(st["config_hash"] != first_hash, "new config hash after reload")
    ev = audit_events(d)
    check("config.reload" in ev, "successful reload audited")

    line = None
    deadline = time.time() + 5
    seen = []
    while time.time() < deadline:
        line = follow.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line)["event"])
        if "config.reload" in seen:
            break
    follow.terminate()
    follow.wait()
    check("config.reload_failed" in seen and "config.reload" in seen,
          "audit tail --follow streams new records")


def test_restart_pending(tmp, d, config_ok):
    """A reload applies live keys at once; a changed restart-only key keeps its running value
    (everything, the baseline included, sees the value in effect) and status lists it."""
    st = d.ctl_json("status")
    check(st["restart_pending"] == [], "nothing waits for a restart after a plain reload")
    # A new link key that the baseline would flag (readable by others) if it looked at it.
    new_key = tmp.join("new-link.key")
    with open(new_key, "w") as f:
        f.write("2CeQ3vO5rZ6u5QYb0a5o5wG6xgNHPWZ0nH1z1b0cXl4=\n")
    os.chmod(new_key, 0o644)
    d.write_config(config_ok + f"\n[Link]\nPrivateKeyFile={new_key}\n"
                   "[Monitor]\nCloudCommands=quarantine\n")
    r = d.ctl("reload")
    check(r.returncode == 0, f"reload with a restart-only change succeeds ({r.stderr.strip()})")
    check("waiting for a restart: Link.PrivateKeyFile" in r.stdout,
          f"mcugwctl reload names the key that waits for a restart ({r.stdout.strip()})")
    st = d.ctl_json("status")
    check(st["restart_pending"] == ["Link.PrivateKeyFile"],
          f"status lists only the restart-only key as pending ({st['restart_pending']})")
    r = d.ctl("status")
    check("Link.PrivateKeyFile" in r.stdout, "mcugwctl status shows the pending key")
    check("Restart:   pending for Link.PrivateKeyFile (" in r.stdout,
          "on its Restart: line")
    r = d.ctl("reload", json_out=True)
    check(r.returncode == 0 and json.loads(r.stdout)["restart_pending"] == ["Link.PrivateKeyFile"],
          "reload --json: restart_pending")
    check(wait_for(lambda: "Link.PrivateKeyFile changed" in d.read_log(), timeout=5),
          "the reload warns about the key that waits for a restart")
    rep = json.loads(d.ctl("audit", "config", json_out=True).stdout)
    checks = {x["check"] for x in rep["findings"]}
    check("remedy.cloud_commands" in checks, "the live key ([Monitor] CloudCommands=) took effect")
    check(not any(x["subject"] == new_key for x in rep["findings"]),
          "the baseline checks the link key in use, not the one waiting for a restart")
    # Back to the running value: nothing pending any more.
    d.write_config(config_ok)
    r = d.ctl("reload")
    check("waiting for a restart" not in r.stdout, "reload: nothing waits any more")
    check(r.returncode == 0 and d.ctl_json("status")["restart_pending"] == [],
          "reverting the key clears the pending list")


def test_cli_ergonomics(d):
    """Options anywhere, bare groups, valid values named, no command is status (#17.12)."""
    ctl = os.environ.get("MCUGWCTL", "mcugwctl")

    def run(*args, env=None):
        return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=30, env=env)

    r = run("status", "--json", "--socket", d.socket)
    check(r.returncode == 0 and json.loads(r.stdout)["pid"] == d.proc.pid,
          "mcugwctl status --json --socket S: options after the command")
    r = run("status", f"--socket={d.socket}", "-j")
    check(r.returncode == 0 and "pid" in json.loads(r.stdout), "--socket=S and -j after it too")
    r = run("audit", "tail", "-n", "2", "--json", "-s", d.socket)
    check(r.returncode == 0 and len(json.loads(r.stdout)) == 2,
          "a command's own options mixed with the global ones")
    r = run("devices", "-s", "active", "--socket", d.socket)
    check(r.returncode == 0 and "device(s)" in r.stdout,
          "a command's own short option wins (devices -s is --state)")
    r = run(env=dict(os.environ, MCUGW_SOCKET=d.socket))
    check(r.returncode == 0 and "Gateway:" in r.stdout, "mcugwctl without a command shows status")
    for group, sub in (("device", "set-key"), ("ota", "start"), ("audit", "verify")):
        r = run(group)
        check(r.returncode == 0 and sub in r.stdout and "Usage: mcugwctl " + group in r.stdout,
              f"a bare 'mcugwctl {group}' lists its subcommands")
    r = run("device", "frobnicate")
    check(r.returncode != 0 and "unknown command 'device frobnicate'" in r.stderr and
          "set-key" in r.stderr, "an unknown subcommand lists the group's subcommands")
    r = run("frobnicate")
    check(r.returncode != 0 and "commands: status" in r.stderr and "ota" in r.stderr,
          "an unknown command lists the commands")
    r = run("devices", "--state", "bogus", "--socket", d.socket)
    check(r.returncode != 0 and "valid: pending, active, quarantined, revoked" in r.stderr,
          "a bad --state lists the valid ones")
    r = run("device", "export", "--format", "xml", "--socket", d.socket)
    check(r.returncode != 0 and "valid: csv, json" in r.stderr, "a bad --format lists them")
    r = run("device", "add", "--help")
    check(r.returncode == 0 and "PUBLIC_KEY" in r.stdout, "COMMAND --help shows its usage")


def test_permissions(tmp, d):
    if not IS_ROOT:
        print("note - not root: the SO_PEERCRED tier checks need setpriv to another uid and "
              "are not run here (CI runs them as root)")
        return
    ro_gid = grp.getgrnam("daemon").gr_gid
    admin_gid = grp.getgrnam("bin").gr_gid
    nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]
    r = d.ctl("status", user=nobody)
    check(r.returncode != 0 and "permission denied" in r.stderr and
          "the group bin (admin) or daemon (read-only)" in r.stderr,
          f"unprivileged uid refused by SO_PEERCRED, naming the groups: {r.stderr.strip()}")
    check(r.stderr.count("\n") == 1, "refusal is a one-line error")

    reader = ["--reuid=65534", f"--regid={ro_gid}", "--clear-groups"]
    r = d.ctl("status", user=reader)
    check(r.returncode == 0, "read-only group may query")
    r = d.ctl("reload", user=reader)
    check(r.returncode != 0 and "needs root or the group bin" in r.stderr,
          f"read-only group may not reload; the error names the group: {r.stderr.strip()}")

    admin = ["--reuid=65534", "--regid=65534", f"--groups={admin_gid}"]
    r = d.ctl("reload", user=admin)
    check(r.returncode == 0, "supplementary admin group may reload")

    recs = d.ctl_json("audit", "tail", "-n", "50")
    check(any(x["event"] == "ctl.refused" and x["actor"] == "cli:uid=65534" for x in recs),
          "refused peer audited with its uid")
    check(any(x["event"] == "ctl.denied" and x["subject"] == "reload" for x in recs),
          "denied admin command audited")

    # A local user cannot flood the audit log with denials: RefusalsPerMinute (30) a minute.
    for _ in range(40):
        d.ctl("reload", user=reader)
    recs = d.ctl_json("audit", "tail", "-n", "500")
    n = sum(1 for x in recs if x["event"] in ("ctl.denied", "ctl.refused"))
    check(n <= 30, f"denials are audited at most 30 times a minute ({n})")


def test_bad_requests(d):
    out = raw_request(d.socket, b"this is not json\n")
    check(b'"ok":false' in out and b"EBADMSG" in out, "malformed request gets a clear error")

    out = raw_request(d.socket, b'{"cmd":"nope"}\n{"cmd":"status"}\n')
    lines = out.splitlines()
    check(len(lines) == 2 and b"unknown command" in lines[0] and b'"ok":true' in lines[1],
          "connection stays usable after an error")

    out = raw_request(d.socket, b"{" + b" " * (200 * 1024))
    check(b"E2BIG" in out, "oversized request refused")

    out = raw_request(d.socket, b'{"cmd":"audit.tail","args":{"n":"many"}}\n')
    check(b"EINVAL" in out, "bad argument type refused")

    check(d.proc.poll() is None and d.ctl("status").returncode == 0,
          "daemon still serving after bad input")


def tamper(db, sql):
    c = sqlite3.connect(db)
    c.executescript(sql)
    c.commit()
    c.close()


def test_audit_tamper(tmp, d):
    r = d.ctl("audit", "verify")
    check(r.returncode == 0 and "intact" in r.stdout, "audit verify passes on an honest log")
    tamper(d.db_path(), "DROP TRIGGER audit_no_update; "
                        "UPDATE audit SET actor='cli:uid=0' WHERE seq=2;")
    r = d.ctl("audit", "verify")
    check(r.returncode != 0 and "record 2" in r.stderr, "audit verify fails after a row is edited")
    r = d.ctl("--json", "audit", "verify") if False else d.ctl("audit", "verify", json_out=True)
    check(r.returncode != 0 and json.loads(r.stdout)["first_bad_seq"] == 2,
          "audit verify --json names the first bad record")


def test_audit_delete(tmp):
    t2 = TempDir()
    try:
        d = Daemon(t2, base_config(t2)).start()
        d.ctl("status")
        d.ctl("reload")
        d.ctl("reload")
        check(d.ctl("audit", "verify").returncode == 0, "fresh log verifies")
        tamper(d.db_path(), "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=3;")
        r = d.ctl("audit", "verify")
        check(r.returncode != 0 and "record 3 missing" in r.stderr,
              "audit verify fails after a row is deleted")
        d.stop()
    finally:
        t2.cleanup()


def test_shutdown(d):
    rc = d.stop()
    check(rc == 0, "SIGTERM: clean exit 0")
    check(not os.path.exists(d.socket), "control socket removed at exit")
    c = sqlite3.connect(d.db_path())
    last = c.execute("SELECT event FROM audit ORDER BY seq DESC LIMIT 1").fetchone()[0]
    mode = c.execute("PRAGMA journal_mode").fetchone()[0]
    c.close()
    check(last == "daemon.stop", "daemon.stop is the last audit record")
    check(mode == "wal", "state database in WAL mode")
    check("handles left open" not in d.read_log(), "no libuv handle left open at exit")


def test_sd_notify_and_socket_activation():
    """READY/STATUS/WATCHDOG/RELOADING/STOPPING over a private NOTIFY_SOCKET, and the control
    socket handed over by "systemd" (LISTEN_FDS) instead of created by the daemon."""
    tmp = TempDir()
    try:
        notify_path = tmp.join("notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(0.2)

        ctl_path = tmp.join("activated.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(ctl_path)
        listener.listen(8)
        os.chmod(ctl_path, 0o660)

        cfg = tmp.join("mcugw.conf")
        with open(cfg, "w") as f:
            f.write(base_config(tmp))
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000", LISTEN_FDS="1")
        fd = listener.fileno()

        # The socket goes to fd 3 (SD_LISTEN_FDS_START), and sd_listen_fds() wants LISTEN_PID to
        # be the daemon's own pid: the shell sets both just before exec.
        proc = subprocess.Popen(["/bin/sh", "-c", 'eval "exec 3<&$2"; LISTEN_PID=$$ exec "$0" '
                                 '--config "$1"', MCUGWD, cfg, str(fd)], env=env, pass_fds=(fd,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        msgs = []

        def drain(until, timeout=5):
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    msgs.extend(notify.recv(4096).decode().split("\n"))
                except socket.timeout:
                    pass
                if until():
                    return True
            return False

        check(drain(lambda: "READY=1" in msgs), "READY=1 sent to NOTIFY_SOCKET")
        check(drain(lambda: any(m.startswith("STATUS=gateway") for m in msgs)),
              "STATUS= line sent")
        msgs.clear()
        check(drain(lambda: msgs.count("WATCHDOG=1") >= 3, timeout=3),
              "watchdog pinged at half of WATCHDOG_USEC")

        r = subprocess.run([os.environ["MCUGWCTL"], "--socket", ctl_path, "--json", "status"],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 0 and json.loads(r.stdout)["pid"] == proc.pid,
              "control socket received through socket activation answers")
        check(not os.path.exists(tmp.join("run", "control.sock")),
              "no socket of its own when activated")

        proc.send_signal(signal.SIGHUP)
        check(drain(lambda: "RELOADING=1" in msgs), "RELOADING=1 on SIGHUP")
        proc.send_signal(signal.SIGTERM)
        check(drain(lambda: "STOPPING=1" in msgs), "STOPPING=1 on SIGTERM")
        check(proc.wait(10) == 0, "activated daemon exits cleanly")
        listener.close()
        notify.close()
    finally:
        tmp.cleanup()


def test_second_daemon(d):
    """A second mcugwd on the same state directory refuses to start and names the first."""
    before = audit_events(d)
    r = subprocess.run([MCUGWD, "--config", d.config], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    check(r.returncode != 0, f"a second daemon on the same state directory exits (rc {r.returncode})")
    check(f"in use by another mcugwd (PID {d.proc.pid})" in r.stderr,
          "the refusal names the PID holding the state directory")
    check(d.ctl("status").returncode == 0, "the first daemon still answers on its socket")
    check(audit_events(d) == before, "the second daemon wrote nothing to the audit log")
    check(d.ctl("audit", "verify").returncode == 0, "the audit chain is intact")


def main():
    tmp = TempDir()
    d = None
    try:
        test_check_config(tmp)
        extra = ("[Control]\nSocketMode=0666\nAdminGroup=bin\nReadOnlyGroup=daemon\n"
                 "MaxRequestSize=64K\n")
        config_ok = base_config(tmp, extra)
        d = Daemon(tmp, config_ok).start()
        check(oct(os.stat(d.socket).st_mode & 0o777) == "0o666", "socket mode from config")
        test_second_daemon(d)
        test_status_reload(tmp, d, config_ok)
        test_restart_pending(tmp, d, config_ok)
        test_cli_ergonomics(d)
        test_permissions(tmp, d)
        test_bad_requests(d)
        test_audit_tamper(tmp, d)
        test_shutdown(d)
        test_audit_delete(tmp)
        test_sd_notify_and_socket_activation()
    finally:
        if d:
            d.stop()
            if "--verbose" in sys.argv or os.environ.get("MCUGW_TEST_VERBOSE"):
                print(d.read_log())
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
