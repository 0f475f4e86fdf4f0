# SPDX-License-Identifier: Apache-2.0
"""How mcugwd connects to its broker, with the real daemon and a real Mosquitto (broker.py).

Why a connection fails, in the log and in `mcugwctl status`: a hostname mismatch names the
certificate's names and the expected one; a server certificate from a CA not in CAFile= says
"unknown CA" with the issuer; a TLS tarpit (a TCP listener that never answers the ClientHello)
says the handshake timed out. SNI carries ServerName= and never an IP address.

As root, in a network namespace of its own (unshare --net --mount: only `lo`, and a resolv.conf,
hosts and nsswitch.conf bind-mounted over /etc): with name servers that swallow every query, the
daemon keeps answering `mcugwctl status` within a second or two and keeps acking link devices
(mcugw-sim) while its lookups time out and are retried, and it stops at once; a name from
/etc/hosts connects with the certificate checked against that name, every address of the name is
tried in order, a name the certificate does not carry is refused with the hostname reason, and
ServerName= checks another name than the one connected to. Without root that part is skipped."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, free_port  # noqa: E402
from mcugwtest import (MCUGWCTL, Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       enroll_file, in_ci, sim_keys, wait_for)

CONNECT_TIMEOUT_S = 15  # MQTT_CONNECT_TIMEOUT_MS_DEFAULT
RESOLVE_TIMEOUT_S = 10  # MQTT_RESOLVE_TIMEOUT_MS_DEFAULT


def mqtt_section(host, port, ca, cert, key, extra=""):
    return f"""
[MQTT]
Host={host}
Port={port}
CAFile={ca}
CertificateFile={cert}
KeyFile={key}
ReconnectMin=1s
ReconnectMax=2s
{extra}
"""


def mqtt_status(d):
    return d.ctl_json("status").get("mqtt", {})


def wait_error(d, pattern, timeout):
    """The session's last_error once it matches pattern (or the last one seen)."""
    seen = [""]

    def pred():
        seen[0] = mqtt_status(d).get("last_error", "")
        return re.search(pattern, seen[0]) is not None
    wait_for(pred, timeout=timeout, interval=0.2)
    return seen[0]


class Tarpit:
    """Accepts TCP connections, keeps what the client sends (the ClientHello), never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.hellos = []
        self.conns = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        data = b""
        c.settimeout(0.5)
        while not self.stopped:
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            data += d
            with self.lock:
                if data and (not self.hellos or self.hellos[-1][0] is not c):
                    self.hellos.append((c, data))
                else:
                    self.hellos[-1] = (c, data)

    def hello(self, n):
        with self.lock:
            return self.hellos[n][1] if len(self.hellos) > n else b""

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_reasons(tmp, broker, cert):
    c = broker.certs
    # ServerName= that the broker's certificate (localhost, 127.0.0.1) does not carry.
    d = Daemon(tmp, base_config(tmp) + mqtt_section(
        "127.0.0.1", broker.port, c.ca, *cert, "ServerName=mqtt.wrong.test"), name="host.conf")
    try:
        d.start()
        err = wait_error(d, "hostname mismatch", 10)
        check("hostname mismatch" in err and "localhost" in err and "127.0.0.1," in err and
              "not mqtt.wrong.test" in err,
              f"wrong host name: the reason names the certificate's names and ours ({err})")
        check(re.search(r"warning: mqtt: cannot connect to 127\.0\.0\.1:\d+: hostname mismatch",
                        d.read_log()) is not None, "and the log says so, once per attempt")
        check(mqtt_status(d)["connects"] == 0, "never connected")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    # A CAFile= that did not issue the broker's certificate.
    d = Daemon(tmp, base_config(tmp) + mqtt_section(
        "127.0.0.1", broker.port, c.path("rogue-ca.crt"), *cert), name="ca.conf")
    try:
        d.log_path = tmp.join("ca.log")
        d.start()
        err = wait_error(d, "unknown CA", 10)
        check(err.startswith("unknown CA") and "(CN=localhost)" in err and
              "chains to CN=mcugw test CA" in err and "CAFile=" + c.path("rogue-ca.crt") in err,
              f"wrong CA: the reason says unknown CA, with the issuer and CAFile= ({err})")
        check("A TLS error occurred" not in d.read_log(), "no bare 'A TLS error occurred'")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    # A listener that takes the connection and never answers the ClientHello.
    tp = Tarpit()
    d = Daemon(tmp, base_config(tmp) + mqtt_section(
        "127.0.0.1", tp.port, c.ca, *cert, "ServerName=mqtt.sni.test"), name="tarpit.conf")
    try:
        d.log_path = tmp.join("tarpit.log")
        d.start()
        ok = wait_for(lambda: len(tp.hello(0)) > 5, timeout=10)
        check(ok and tp.hello(0)[0] == 0x16, "the tarpit got a TLS ClientHello")
        check(b"mqtt.sni.test" in tp.hello(0), "SNI carries ServerName=")
        t0 = time.monotonic()
        err = wait_error(d, "timed out", CONNECT_TIMEOUT_S + 10)
        check(f"TLS handshake timed out after {CONNECT_TIMEOUT_S} s" in err and
              "never answered the ClientHello" in err,
              f"TLS tarpit: the reason says the handshake timed out ({err})")
        check("Unknown error" not in d.read_log(), "no 'Unknown error'")
        check(time.monotonic() - t0 < CONNECT_TIMEOUT_S + 5, "and says so after the timeout")
        check(d.ctl("status", timeout=5).returncode == 0, "status answers meanwhile")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    d = Daemon(tmp, base_config(tmp) + mqtt_section("127.0.0.1", tp.port, c.ca, *cert),
               name="tarpit-ip.conf")
    try:
        d.log_path = tmp.join("tarpit-ip.log")
        n = len(tp.hellos)
        d.start()
        ok = wait_for(lambda: len(tp.hello(n)) > 5, timeout=10)
        check(ok and b"127.0.0.1" not in tp.hello(n), "no SNI for Host= an IP address")
    finally:
        check(d.stop() == 0, "daemon exits 0")
        tp.close()


def test_bad_credentials(tmp, broker, cert):
    """Broker credentials that do not load stop the cloud side only: the link still acks the
    devices, status, the journal and audit config say why, and a fixed file plus a reload
    connects (the backoff is a minute, so only the reload can have done it)."""
    c = broker.certs
    other = c.client("other-gw")
    key = tmp.join("creds-gw.key")
    shutil.copyfile(other[1], key)  # a key that does not match the certificate
    os.chmod(key, 0o600)
    bad_ca = tmp.join("creds-ca.crt")
    with open(bad_ca, "w") as f:
        f.write("not a certificate\n")
    devdir = tmp.join("creds-devices.d")
    os.makedirs(devdir, exist_ok=True)
    dev = sim_keys(1, "creds", "creds-")
    with open(os.path.join(devdir, "sim.conf"), "w") as f:
        f.write(f"[Device]\nId={dev[0]['id']}\nPublicKey={dev[0]['public_key']}\n")
    link = tmp.join("creds-link.sock")

    def config(ca, key):
        return base_config(tmp, f"[Link]\nListenStream=unix:{link}\n").replace(
            "[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + mqtt_section(
            "127.0.0.1", broker.port, ca, cert[0], key,
            "").replace("ReconnectMin=1s\nReconnectMax=2s", "ReconnectMin=60s\nReconnectMax=60s")

    # A CA file with no certificate in it: the daemon runs, the cloud says why.
    d = Daemon(tmp, config(bad_ca, cert[1]), name="creds-ca.conf")
    try:
        d.log_path = tmp.join("creds-ca.log")
        d.start()
        err = mqtt_status(d).get("last_error", "")
        check("CAFile" in err and mqtt_status(d)["state"] != "connected",
              f"a bad CAFile= does not stop the daemon; status says why ({err})")
        # The backoff is a minute: status says when the next attempt is, reconnect tries now.
        st = mqtt_status(d)
        check(30000 <= st.get("next_attempt_ms", 0) <= 60000,
              f"status --json: next_attempt_ms while waiting ({st.get('next_attempt_ms')})")
        check(re.search(r"next attempt in \d+ s", d.ctl("status").stdout) is not None,
              "mcugwctl status: 'next attempt in N s'")
        shutil.copyfile(c.ca, bad_ca)
        r = d.ctl("reconnect")
        check(r.returncode == 0 and "connecting to 127.0.0.1" in r.stdout,
              f"mcugwctl reconnect ({r.stdout.strip()}{r.stderr.strip()})")
        check(wait_for(lambda: mqtt_status(d)["state"] == "connected", timeout=10),
              "reconnect: the fixed CA file connects now, not after the backoff")
        check("next_attempt_ms" not in mqtt_status(d), "no next attempt once connected")
        r = d.ctl("reconnect")
        check(r.returncode != 0 and "is connected" in r.stderr,
              "reconnect while connected says so")
        check(any(x["event"] == "mqtt.reconnect" for x in d.ctl_json("audit", "tail")),
              "reconnect audited")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    d = Daemon(tmp, config(c.ca, key), name="creds.conf")
    try:
        d.log_path = tmp.join("creds.log")
        d.start()
        st = mqtt_status(d)
        check(st["state"] != "connected" and "does not match CertificateFile" in
              st.get("last_error", ""),
              f"a key that does not match its certificate: the daemon runs, status says why "
              f"({st.get('last_error')})")
        check("does not match CertificateFile" in d.ctl("status").stdout,
              "mcugwctl status prints the reason")
        check("waits for usable credentials" in d.read_log(), "the journal says so")
        findings = json.loads(d.ctl("audit", "config", json_out=True).stdout)["findings"]
        check(any(f["check"] == "mqtt.credentials" and "does not match" in f["message"]
                  for f in findings), "audit config reports the credential problem")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        r = Sim(tmp, "creds", ["--gateway-key", gw_key, "--connect", f"unix:{link}", "--seed",
                               "creds", "--id-prefix", "creds-", "--messages", "5"]).wait(20)
        check(r.get("authenticated") == 1 and r.get("acked") == 5,
              f"the local side runs: the MCU's telemetry is acked ({r})")
        shutil.copyfile(cert[1], key)
        check(d.ctl("reload").returncode == 0, "reload after fixing the key file")
        check(wait_for(lambda: mqtt_status(d)["state"] == "connected", timeout=10),
              "the fixed credentials connect after the reload")
        findings = json.loads(d.ctl("audit", "config", json_out=True).stdout)["findings"]
        check(not any(f["check"] == "mqtt.credentials" for f in findings),
              "audit config no longer reports it")
    finally:
        check(d.stop() == 0, "daemon exits 0")


# ---- in a network namespace of our own -------------------------------------------------------

class Dropper:
    """UDP "name servers" that read every query and never answer."""

    def __init__(self, addrs):
        self.socks = []
        for a in addrs:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((a, 53))
            self.socks.append(s)
        self.queries = 0
        for s in self.socks:
            threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        while True:
            try:
                s.recvfrom(4096)
            except OSError:
                return
            self.queries += 1

    def close(self):
        for s in self.socks:
            s.close()


def netns_setup(tmp):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    files = {
        "/etc/resolv.conf": "nameserver 127.0.0.53\nnameserver 127.0.0.54\n"
                            "options timeout:5 attempts:2\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 mqtt.wrong.test\n",
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    }
    for target, text in files.items():
        src = tmp.join(os.path.basename(target))
        with open(src, "w") as f:
            f.write(text)
        os.chmod(src, 0o644)
        subprocess.run(["mount", "--bind", src, target], check=True)


def test_dns_blackhole(tmp, broker, cert):
    c = broker.certs
    devdir = tmp.join("devices.d")
    os.makedirs(devdir)
    keys = sim_keys(2, "dns", "dns-")
    enroll_file(devdir, "sim.conf", keys)
    port = free_port()
    config = base_config(tmp, f"\n[Link]\nListenStream=tcp:127.0.0.1:{port}\n").replace(
        "[Paths]\n", f"[Paths]\nDevicesDirectory={devdir}\n") + mqtt_section(
        "mqtt.blackhole.test", broker.port, c.ca, *cert)
    d = Daemon(tmp, config, name="blackhole.conf")
    sim = None
    try:
        t = time.monotonic()
        d.start()
        check(time.monotonic() - t < 5, "the daemon starts without waiting for the resolver")
        gw_key = d.ctl_json("status")["link"]["public_key"]
        duration, rate = 26, 10
        sim = Sim(tmp, "dns", ["--gateway-key", gw_key, "--connect", f"tcp:127.0.0.1:{port}",
                               "--count", "2", "--seed", "dns", "--id-prefix", "dns-",
                               "--rate", str(rate), "--messages", "0",
                               "--duration", str(duration)])
        worst, n = 0.0, 0
        end = time.monotonic() + duration
        while time.monotonic() < end:
            t = time.monotonic()
            r = subprocess.run([MCUGWCTL, "--socket", d.socket, "status"], capture_output=True,
                               timeout=60)
            worst = max(worst, time.monotonic() - t)
            n += 1 if r.returncode == 0 else 0
            time.sleep(0.25)
        check(worst < 2.0, f"mcugwctl status answered within {worst:.2f} s every time ({n} runs)")
        res = sim.wait(20)
        want = 2 * rate * duration
        check(res.get("acked", 0) >= 0.8 * want,
              f"link devices kept getting acks ({res.get('acked')} of ~{want})")
        st = mqtt_status(d)
        log = d.read_log()
        timeouts = log.count(f"cannot resolve mqtt.blackhole.test: no answer from the DNS "
                             f"resolver within {RESOLVE_TIMEOUT_S} s")
        check(timeouts >= 1, f"lookups time out with a clear log line ({timeouts})")
        check(st["lookups"] >= 2 and st["attempts"] == 0 and st["state"] != "connected",
              f"and are retried ({st['lookups']} lookups, {st['attempts']} connects)")
        check("cannot resolve mqtt.blackhole.test" in st["last_error"],
              f"status says why ({st['last_error']})")
        t = time.monotonic()
        rc = d.stop()
        check(rc == 0 and time.monotonic() - t < 5,
              f"stops at once with a lookup pending, exit {rc}, "
              f"{time.monotonic() - t:.1f} s")
        check("handles left open" not in d.read_log(), "no handle left open")
    finally:
        if sim:
            sim.stop()
        d.stop()


def test_hosts_names(tmp, broker, cert):
    c = broker.certs
    order = [a[4][0] for a in socket.getaddrinfo("localhost", broker.port, 0,
                                                 socket.SOCK_STREAM)]
    d = Daemon(tmp, base_config(tmp) + mqtt_section("localhost", broker.port, c.ca, *cert),
               name="localhost.conf")
    try:
        d.log_path = tmp.join("localhost.log")
        d.start()
        ok = wait_for(lambda: mqtt_status(d).get("state") == "connected", timeout=15)
        st = mqtt_status(d)
        check(ok and st["address"] == "127.0.0.1",
              f"Host=localhost from /etc/hosts connects, certificate checked against the name "
              f"({st['state']} at {st['address']})")
        log = d.read_log()
        check(re.search(rf"connected to localhost:{broker.port} at 127\.0\.0\.1", log),
              "the log says which address")
        if order and order[0] == "::1":
            check(re.search(rf"cannot connect to localhost:{broker.port} at ::1: .*; trying the "
                            r"next address", log) is not None,
                  "::1 (nothing listens) failed first, then the next address")
        else:
            print(f"# address order {order}: the walk from a dead address is not exercised")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    d = Daemon(tmp, base_config(tmp) + mqtt_section("mqtt.wrong.test", broker.port, c.ca,
                                                    *cert), name="wrong.conf")
    try:
        d.log_path = tmp.join("wrong.log")
        d.start()
        err = wait_error(d, "hostname mismatch", 10)
        check("hostname mismatch" in err and "not mqtt.wrong.test" in err,
              f"a name the certificate does not carry is refused ({err})")
        check(re.search(r"cannot connect to mqtt\.wrong\.test:\d+ at 127\.0\.0\.1: hostname "
                        r"mismatch: the broker's certificate is for [^,]+, [^,]+, not "
                        r"mqtt\.wrong\.test",
                        d.read_log()) is not None, "with the hostname reason in the log")
        check(mqtt_status(d)["connects"] == 0, "never connected")
    finally:
        check(d.stop() == 0, "daemon exits 0")

    d = Daemon(tmp, base_config(tmp) + mqtt_section("mqtt.wrong.test", broker.port, c.ca,
                                                    *cert, "ServerName=localhost"),
               name="servername.conf")
    try:
        d.log_path = tmp.join("servername.log")
        d.start()
        ok = wait_for(lambda: mqtt_status(d).get("state") == "connected", timeout=15)
        check(ok, "Host=mqtt.wrong.test with ServerName=localhost connects (the address from "
                  "Host=, the name checked from ServerName=)")
    finally:
        check(d.stop() == 0, "daemon exits 0")


def netns_main():
    missing = [f for f in ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")
               if not os.path.exists(f)]
    if missing:
        # Bind mounts need a file to cover; creating one would change the host's /etc.
        check(not in_ci(), f"CI has {', '.join(missing)} to cover in the namespace")
        print(f"# skip: no {', '.join(missing)} to cover in the namespace", flush=True)
        finish()
    tmp = TempDir("mcugw-mqtt-netns-")
    broker = dropper = None
    try:
        netns_setup(tmp)
        dropper = Dropper(["127.0.0.53", "127.0.0.54"])
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        for name, fn in [("dns-blackhole", test_dns_blackhole), ("hosts", test_hosts_names)]:
            print(f"# {name}", flush=True)
            t = time.monotonic()
            sub = TempDir(f"mcugw-mqtt-{name}-")
            try:
                fn(sub, broker, cert)
            finally:
                if not os.environ.get("MCUGW_TEST_KEEP"):
                    sub.cleanup()
            print(f"# {name}: {time.monotonic() - t:.1f}s", flush=True)
        if dropper:
            check(dropper.queries > 0, f"the name servers were asked ({dropper.queries})")
    finally:
        if broker:
            broker.stop()
        if dropper:
            dropper.close()
        tmp.cleanup()
    finish()


def main():
    if sys.argv[1:] == ["--netns"]:
        netns_main()
        return
    tmp = TempDir("mcugw-mqtt-connect-")
    broker = None
    try:
        broker = Broker(tmp.path).start()
        cert = broker.certs.client("it-gw")
        print("# reasons", flush=True)
        test_reasons(tmp, broker, cert)
        print("# bad credentials", flush=True)
        test_bad_credentials(tmp, broker, cert)
    finally:
        if broker:
            broker.stop()
        if not os.environ.get("MCUGW_TEST_KEEP"):
            tmp.cleanup()
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        check(not in_ci(), "the network namespace tests need root, unshare and ip (CI has them)")
        print("# skip: the network namespace tests need root, unshare and ip", flush=True)
    else:
        probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
        if probe.returncode != 0:
            check(not in_ci(), f"unshare works ({probe.stderr.decode().strip()})")
            print(f"# skip: cannot unshare here: {probe.stderr.decode().strip()}", flush=True)
        else:
            r = subprocess.run(["unshare", "--net", "--mount", "--", sys.executable,
                                os.path.abspath(__file__), "--netns"])
            check(r.returncode == 0, "the network namespace tests passed")
    finish()


if __name__ == "__main__":
    main()
