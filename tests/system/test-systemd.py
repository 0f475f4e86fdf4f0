#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The packages as deployed: installed with dpkg into a Debian 12 tree booted by a real systemd
(PID 1 of a systemd-nspawn container), checked the way an operator would check them.

    tests/system/test-systemd.py DEBDIR
    tests/system/test-systemd.py --installed     (autopkgtest: debian/tests/system)

DEBDIR holds the built mcugw_*.deb and mcugw-tools_*.deb (scripts/package-test leaves them in
build-test/debs when MCUGW_DEBS_OUT is set). The container tree is made once with mmdebstrap
(a few minutes) and cached in MCUGW_SYSTEST_CACHE (default /var/cache/mcugw-systest); every run
boots a fresh copy. The container shares the host's network namespace, so the daemon reaches a
Mosquitto (mutual TLS) that this script starts on the host's loopback. Needs root,
systemd-container and mmdebstrap (scripts/install-deps installs them).

What it checks, in order: both units active after install (the socket unit first); `systemctl
restart` returns with the unit active (Type=notify) and a Status: line; the journal has one
CODE_FILE per entry and DEVICE_ID on device messages; `systemctl reload` succeeds for a valid
configuration and fails (keeping the old one) for a broken drop-in; the watchdog restarts a
stopped daemon; `mcugwctl status` starts a stopped service through the socket; the sandbox,
probed from inside the service (read-only /etc /usr /var/lib /run, no /home, AF_PACKET and
AF_NETLINK refused, a filtered syscall refused, no capabilities, a pty and a USB serial node
usable); mutual-TLS MQTT to the host's broker and Defender's network metrics under
ProcSubset=pid; `systemd-analyze security` on the running unit; the purge leaves nothing.

With --installed the same checks run on this machine itself, where the packages are already
installed and systemd is PID 1: that is the autopkgtest (debian/tests/control, needs-root,
isolation-container, breaks-testbed: it ends by purging the packages).
"""

import ast
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from broker import Broker  # noqa: E402
from mcugwtest import check, finish, skip, wait_for  # noqa: E402

# What the tree has before our packages: systemd, and the packages' run-time dependencies (so
# that dpkg -i needs no network), plus tools the checks use.
PACKAGES = ["systemd", "systemd-sysv", "dbus", "libuv1", "libmosquitto1", "libssl3",
            "libjansson4", "libsqlite3-0", "libinih1", "libcbor0.8", "libsystemd0", "openssl",
            "procps", "python3-minimal", "socat", "util-linux"]
CACHE = os.environ.get("MCUGW_SYSTEST_CACHE", "/var/cache/mcugw-systest")
SOURCES = "/etc/apt/sources.list.d/debian.sources"
MAX_EXPOSURE = 2.0


def log(msg):
    print(f"# {msg}", flush=True)


def ensure_tree():
    key = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:12]
    tree = os.path.join(CACHE, f"bookworm-{key}")
    if os.path.isdir(os.path.join(tree, "usr", "lib", "systemd")):
        log(f"container tree: {tree} (cached)")
        return tree
    os.makedirs(CACHE, exist_ok=True)
    tmp = tree + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"container tree: making {tree} with mmdebstrap (once)")
    t0 = time.monotonic()
    subprocess.run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                    "bookworm", tmp, SOURCES], check=True, stdout=subprocess.DEVNULL)
    os.rename(tmp, tree)
    log(f"container tree made in {time.monotonic() - t0:.0f} s")
    return tree


class Container:
    """A fresh copy of the tree booted by systemd-nspawn; commands run in it with nsenter."""

    def __init__(self, tree, work, binds):
        self.root = os.path.join(work, "root")
        subprocess.run(["cp", "-a", "--reflink=auto", tree, self.root], check=True)
        self.log = open(os.path.join(work, "nspawn.log"), "w")
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        args = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                "--system-call-filter=bpf", "--console=passive", "-D", self.root,
                "-M", "mcugw-systest"]
        args += [f"--bind-ro={src}:{dst}" for src, dst in binds]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.leader = wait_for(self._find_leader, timeout=30, interval=0.1)
        if not self.leader:
            raise RuntimeError("the container's systemd did not start: " + self.read_log())

    def _find_leader(self):
        if self.proc.poll() is not None:
            raise RuntimeError("systemd-nspawn exited: " + self.read_log())
        r = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"],
                           capture_output=True, text=True)
        return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None

    def read_log(self):
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def run(self, *cmd, timeout=60, input=None):
        full = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "--",
                "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"] + list(cmd)
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(full, 124, e.stdout or "", "timed out")

    def sh(self, script, timeout=60):
        return self.run("sh", "-c", script, timeout=timeout)

    def write(self, path, text, mode=0o644):
        p = self.root + path
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)

    def stop(self):
        if self.proc.poll() is None:
            # SIGTERM to nspawn asks the container's systemd for a clean shutdown.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        remove_empty_cgroups()


class Host:
    """This machine, for --installed: the same interface as Container, with no root prefix."""

    root = ""

    def run(self, *cmd, timeout=60, input=None):
        full = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"] + list(cmd)
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(full, 124, e.stdout or "", "timed out")

    sh = Container.sh
    write = Container.write

    def stop(self):
        pass


def remove_empty_cgroups():
    """nspawn --keep-unit without machined leaves its payload cgroups under ours."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = f.read().strip().split("::", 1)[-1]
    except OSError:
        return
    base = "/sys/fs/cgroup" + rel
    for d in sorted(glob.glob(base + "/**/", recursive=True), key=len, reverse=True):
        if d.rstrip("/") != base.rstrip("/"):
            try:
                os.rmdir(d)
            except OSError:
                pass


def active(c, unit):
    return c.run("systemctl", "is-active", unit).stdout.strip()


def ctl_json(c, *args):
    r = c.run("mcugwctl", "--json", *args)
    try:
        return json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        return {}


def main_pid(c):
    r = c.run("systemctl", "show", "-p", "MainPID", "--value", "mcugwd.service")
    return int(r.stdout.strip() or 0)


def journal(c, since_cursor=None):
    args = ["journalctl", "-u", "mcugwd.service", "-o", "json", "--no-pager"]
    r = c.run(*args)
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_install(c, debs):
    if debs:
        names = sorted(os.path.basename(p) for p in
                       glob.glob(os.path.join(debs, "mcugw_*.deb")) +
                       glob.glob(os.path.join(debs, "mcugw-tools_*.deb")))
        r = c.run("dpkg", "-i", *[f"/debs/{n}" for n in names], timeout=180)
        check(r.returncode == 0, f"dpkg -i {' '.join(names)}" + (
            "" if r.returncode == 0 else ": " + r.stdout[-800:] + r.stderr))
    check(wait_for(lambda: active(c, "mcugwd.socket") == "active", timeout=20),
          "mcugwd.socket is active after the install")
    check(wait_for(lambda: active(c, "mcugwd.service") == "active", timeout=20),
          "mcugwd.service is active after the install")
    st = c.run("stat", "-c", "%U:%G %a", "/run/mcugw/control.sock").stdout.strip()
    check(st == "root:mcugw 660", f"the control socket is systemd's, root:mcugw 0660 ({st})")
    r = c.run("systemctl", "show", "-p", "TriggeredBy", "--value", "mcugwd.service")
    check("mcugwd.socket" in r.stdout, "the service is triggered by its socket")


def test_restart_status(c):
    r = c.run("systemctl", "restart", "mcugwd.service", timeout=90)
    check(r.returncode == 0, "systemctl restart returns 0 " + r.stderr.strip())
    check(active(c, "mcugwd.service") == "active",
          "the unit is active when restart returns (Type=notify: READY=1)")
    status = c.run("systemctl", "status", "--no-pager", "mcugwd.service").stdout
    check("Status: \"" in status, "systemctl status shows the daemon's Status: line")
    st = c.run("stat", "-c", "%U:%G", "/run/mcugw/control.sock").stdout.strip()
    check(st == "root:mcugw", f"the socket keeps its owner across restarts ({st})")


def test_journal(c):
    c.run("mcugwctl", "device", "add", "systest-dev",
          "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    c.run("mcugwctl", "device", "quarantine", "systest-dev")
    entries = wait_for(lambda: [e for e in journal(c) if e.get("DEVICE_ID") == "systest-dev"]
                       and journal(c), timeout=10)
    entries = entries or []
    check(len(entries) > 0, f"journalctl -u mcugwd -o json has entries ({len(entries)})")
    dup = [e for e in entries if isinstance(e.get("CODE_FILE"), list)]
    check(not dup, f"one CODE_FILE per journal entry ({len(dup)} with several)")
    # Lines the daemon logged through the journal API (--check-config's stdout has no CODE_*).
    ours = [e for e in entries if e.get("_COMM") == "mcugwd" and "CODE_FILE" in e]
    files = {str(e.get("CODE_FILE")) for e in ours}
    check(ours and not any(f.endswith("basic/log.c") or "src/" not in f for f in files),
          f"CODE_FILE names the caller's source file, never the logging helper ({len(files)})")
    check(any(e.get("DEVICE_ID") == "systest-dev" for e in entries),
          "device messages carry DEVICE_ID=")


def test_reload(c):
    before = ctl_json(c, "status").get("config_hash")
    c.write("/etc/mcugw/mcugw.conf.d/60-systest.conf", "[Gateway]\nLogLevel=info\n")
    r = c.run("systemctl", "reload", "mcugwd.service", timeout=60)
    after = ctl_json(c, "status").get("config_hash")
    check(r.returncode == 0 and after and after != before,
          "systemctl reload applies a valid drop-in and returns 0")
    c.write("/etc/mcugw/mcugw.conf.d/61-broken.conf", "[Gateway]\nLogLevel=chatty\n")
    r = c.run("systemctl", "reload", "mcugwd.service", timeout=60)
    check(r.returncode != 0, f"systemctl reload fails for a broken drop-in (exit {r.returncode})")
    check(active(c, "mcugwd.service") == "active", "the daemon keeps running")
    check(ctl_json(c, "status").get("config_hash") == after,
          "the daemon keeps the configuration it had")
    os.unlink(c.root + "/etc/mcugw/mcugw.conf.d/61-broken.conf")
    os.unlink(c.root + "/etc/mcugw/mcugw.conf.d/60-systest.conf")
    check(c.run("systemctl", "reload", "mcugwd.service").returncode == 0,
          "reload after removing the broken drop-in succeeds")


def test_watchdog(c):
    c.write("/etc/systemd/system/mcugwd.service.d/50-watchdog.conf",
            "[Service]\nWatchdogSec=3s\nRestartSec=1s\n")
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "restart", "mcugwd.service", timeout=90)
    pid = main_pid(c)
    n0 = int(c.run("systemctl", "show", "-p", "NRestarts", "--value",
                   "mcugwd.service").stdout.strip() or 0)
    # Alive for longer than the watchdog period: the daemon pings it.
    time.sleep(5)
    check(main_pid(c) == pid, "a healthy daemon is not killed by the watchdog (3 s)")
    c.run("kill", "-STOP", str(pid))
    restarted = wait_for(lambda: main_pid(c) not in (0, pid) and
                         active(c, "mcugwd.service") == "active", timeout=30, interval=0.5)
    n1 = int(c.run("systemctl", "show", "-p", "NRestarts", "--value",
                   "mcugwd.service").stdout.strip() or 0)
    check(restarted and n1 > n0, "a stopped daemon (kill -STOP) is restarted by the watchdog")
    os.unlink(c.root + "/etc/systemd/system/mcugwd.service.d/50-watchdog.conf")
    c.run("systemctl", "daemon-reload")


def test_socket_activation(c):
    c.run("systemctl", "stop", "mcugwd.service", timeout=60)
    check(active(c, "mcugwd.service") != "active" and active(c, "mcugwd.socket") == "active",
          "service stopped, socket still listening")
    r = c.run("mcugwctl", "status", timeout=60)
    check(r.returncode == 0, "mcugwctl status answers through the socket")
    check(active(c, "mcugwd.service") == "active", "... and that started the service")


def test_sandbox(c):
    c.write("/usr/local/lib/mcugw-probe.py", open(os.path.join(HERE, "probe.py")).read(), 0o755)
    c.write("/etc/systemd/system/mcugwd.service.d/50-probe.conf",
            "[Service]\nExecStartPost=/usr/bin/python3 /usr/local/lib/mcugw-probe.py\n")
    # USB serial adapters: a node of the usbserial major (188) and of cdc_acm (166).
    c.run("mknod", "-m", "0660", "/dev/ttyUSB9", "c", "188", "9")
    c.run("mknod", "-m", "0660", "/dev/ttyACM9", "c", "166", "9")
    c.run("chgrp", "dialout", "/dev/ttyUSB9", "/dev/ttyACM9")
    c.run("rm", "-f", "/run/mcugw/probe.txt")
    c.run("systemctl", "daemon-reload")
    r = c.run("systemctl", "restart", "mcugwd.service", timeout=90)
    check(r.returncode == 0, "the service starts with the probe as ExecStartPost=")
    p = {}
    r = c.run("cat", "/run/mcugw/probe.txt")
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        p[k] = ast.literal_eval(v)
    log(f"probe: {json.dumps(p, sort_keys=True)}")
    check(bool(p), "the probe ran inside the unit")
    for path in ("/etc", "/etc/mcugw", "/usr", "/var/lib", "/run"):
        check(p.get("readonly:" + path) is True, f"{path} is read-only inside the unit")
    for path in ("/var/lib/mcugw", "/run/mcugw"):
        check(p.get("readonly:" + path) is False, f"{path} is writable inside the unit")
    check(p.get("home") in ([], "EACCES", "ENOENT"), f"/home is empty or inaccessible ({p.get('home')})")
    check(p.get("socket:AF_PACKET") == "EAFNOSUPPORT", "AF_PACKET sockets are refused")
    check(p.get("socket:AF_NETLINK") == "EAFNOSUPPORT", "AF_NETLINK sockets are refused")
    check(p.get("socket:AF_INET") == "ok" and p.get("socket:AF_UNIX") == "ok",
          "AF_INET and AF_UNIX sockets work")
    check(p.get("setpriority") == "EPERM", "a filtered system call (setpriority) is refused")
    check(p.get("NoNewPrivs") == "1" and p.get("Seccomp") == "2",
          "no_new_privs and a seccomp filter")
    check(p.get("CapEff") == "0000000000000000" and p.get("CapBnd") == "0000000000000000",
          "no capabilities, none in the bounding set")
    check(p.get("pty") == "ok", f"a pseudo-terminal opens and carries data ({p.get('pty')})")
    check(c.run("grep", "-qx", "usbserial", "/usr/lib/modules-load.d/mcugw.conf").returncode == 0,
          "the package loads the USB serial drivers at boot (modules-load.d)")
    with open("/proc/devices") as f:
        drivers = f.read().split()
    for node, driver in (("/dev/ttyUSB9", "ttyUSB"), ("/dev/ttyACM9", "ttyACM")):
        v = p.get("open:" + node)
        if driver not in drivers:
            # DeviceAllow=char-ttyUSB resolves through /proc/devices; a kernel without the
            # driver (this one cannot load modules) has no such device to allow or to open.
            log(f"{node}: this kernel has no {driver} driver; not testable here (open: {v})")
            continue
        check(v in ("ENXIO", "ENODEV", "EIO", "ok"),
              f"{node} passes the device policy (open: {v}; EPERM would be the policy)")
    check(isinstance(p.get("read:/proc/self/net/dev"), int) and p["read:/proc/self/net/dev"] > 0,
          "/proc/self/net is readable (Defender's network metrics)")
    check(p.get("read:/proc/net/dev") == "ENOENT", "/proc/net itself is hidden (ProcSubset=pid)")
    os.unlink(c.root + "/etc/systemd/system/mcugwd.service.d/50-probe.conf")
    c.run("systemctl", "daemon-reload")


def test_mqtt(c, broker):
    cert, key = broker.certs.client("systest")
    pki = "/etc/mcugw/pki"
    os.makedirs(c.root + pki, exist_ok=True)
    for src, name, mode in ((broker.certs.ca, "ca.crt", 0o644), (cert, "gw.crt", 0o644),
                            (key, "gw.key", 0o600)):
        shutil.copy(src, c.root + f"{pki}/{name}")
        os.chmod(c.root + f"{pki}/{name}", mode)
    c.run("chown", "-R", "mcugw:mcugw", pki)
    c.write("/etc/mcugw/mcugw.conf.d/50-systest.conf",
            "[Gateway]\nName=systest\n" +
            broker.mqtt_config(f"{pki}/gw.crt", f"{pki}/gw.key").replace(
                f"CAFile={broker.certs.ca}", f"CAFile={pki}/ca.crt"))
    r = c.run("mcugwd", "--check-config")
    check(r.returncode == 0, "mcugwd --check-config accepts the broker drop-in " + r.stderr[-300:])
    c.run("systemctl", "restart", "mcugwd.service", timeout=90)
    up = wait_for(lambda: ctl_json(c, "status").get("mqtt", {}).get("state") == "connected",
                  timeout=30, interval=0.5)
    check(up, "mutual-TLS MQTT session to the host's broker from inside the unit")
    r = c.run("mcugwctl", "--json", "defender", "send")
    rep = {}
    try:
        rep = json.loads(r.stdout).get("last_report") or {}
    except ValueError:
        pass
    metrics = rep.get("metrics", {})
    ports = json.dumps(metrics.get("listening_tcp_ports", {}))
    check(str(broker.port) in ports,
          f"Defender sees listening TCP ports under ProcSubset=pid (broker port {broker.port})")
    stats = metrics.get("network_stats", {})
    check(bool(stats) and json.dumps(stats) != "{}", "Defender network_stats are not empty")


def test_security(c):
    r = c.run("systemd-analyze", "security", "--no-pager", "mcugwd.service")
    last = [l for l in r.stdout.splitlines() if "Overall exposure level" in l]
    level = None
    if last:
        try:
            level = float(last[-1].split(":", 1)[1].split()[0])
        except (ValueError, IndexError):
            pass
    log(last[-1] if last else r.stdout[-400:] + r.stderr[-400:])
    check(level is not None and level <= MAX_EXPOSURE,
          f"systemd-analyze security on the running unit: exposure {level} <= {MAX_EXPOSURE}")


def test_purge(c):
    owned = c.run("dpkg", "-L", "mcugw", "mcugw-tools").stdout.split()
    owned += ["/var/lib/mcugw", "/run/mcugw", "/etc/mcugw"]
    c.run("rm", "-rf", "/etc/mcugw/pki", "/etc/mcugw/mcugw.conf.d/50-systest.conf")
    r = c.run("dpkg", "--purge", "mcugw-tools", "mcugw", timeout=120)
    check(r.returncode == 0, "dpkg --purge mcugw-tools mcugw " + r.stderr[-300:])
    left = []
    for p in sorted(set(owned)):
        if p in ("/.", "/") or not p.startswith("/"):
            continue
        if c.run("test", "-e", p).returncode != 0 and c.run("test", "-L", p).returncode != 0:
            continue
        if c.run("test", "-d", p).returncode == 0 and c.run("dpkg-query", "-S", p).returncode == 0:
            continue  # a directory another package ships too
        left.append(p)
    check(not left, f"nothing of the packages is left after the purge {left}")
    check(active(c, "mcugwd.service") != "active" and active(c, "mcugwd.socket") != "active",
          "no unit left running")


def run_checks(c, debs, broker):
    test_install(c, debs)
    test_restart_status(c)
    test_journal(c)
    test_reload(c)
    test_watchdog(c)
    test_socket_activation(c)
    test_sandbox(c)
    test_mqtt(c, broker)
    test_security(c)
    test_purge(c)


def main_installed():
    """autopkgtest: the packages are installed here and systemd is PID 1."""
    if os.geteuid() != 0 or not os.path.isdir("/run/systemd/system"):
        skip("needs root on a machine booted with systemd (autopkgtest isolation-container)")
    work = tempfile.mkdtemp(prefix="mcugw-autopkgtest-", dir="/var/tmp")
    broker = None
    try:
        broker = Broker(os.path.join(work, "broker")).start()
        run_checks(Host(), None, broker)
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    finish()


def main():
    if sys.argv[1:2] == ["--installed"]:
        return main_installed()
    if len(sys.argv) != 2:
        sys.exit("usage: test-systemd.py DEBDIR | --installed")
    debs = os.path.abspath(sys.argv[1])
    missing = [t for t in ("systemd-nspawn", "mmdebstrap", "nsenter", "mosquitto") if
               not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        # CI runs as root with every tool installed; a developer box may lack them.
        skip(f"needs root and {' '.join(missing) or 'nothing else'}")
    tree = ensure_tree()
    work = tempfile.mkdtemp(prefix="mcugw-systest-", dir="/var/tmp")
    c = broker = None
    try:
        broker = Broker(os.path.join(work, "broker")).start()
        t0 = time.monotonic()
        c = Container(tree, work, [(debs, "/debs")])
        # Until the manager's bus is up, systemctl cannot even ask.
        state = wait_for(lambda: c.run("systemctl", "is-system-running", "--wait",
                                       timeout=90).stdout.strip(), timeout=60, interval=0.5)
        log(f"container booted in {time.monotonic() - t0:.1f} s: {state}")
        check(state in ("running", "degraded"), f"the container's systemd is up ({state})")
        run_checks(c, debs, broker)
    finally:
        if c:
            if "--verbose" in sys.argv or os.environ.get("MCUGW_TEST_VERBOSE"):
                print(c.run("journalctl", "--no-pager", "-n", "200").stdout)
            c.stop()
        if broker:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
