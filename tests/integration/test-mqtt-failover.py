# SPDX-License-Identifier: Apache-2.0
"""Host= failover between two Mosquittos (docs/mqtt.md): with the first Host= down the gateway
connects to the second in the same round, and status says which one is in use; when the first
comes back the gateway stays where it is (no fail-back while connected); when the second goes
away the next round starts from the first again. Each Host= has its own port and the name its
certificate is checked against (an address for the first, localhost for the second).

Also a broker that closes the connection on an MQTT 5 CONNECT without a CONNACK (as a 3.1.1-only
parser may): the gateway says the broker refused MQTT 5 and what to set."""

import os
import re
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker, Certs, Subscriber  # noqa: E402
from mcugwtest import Daemon, TempDir, base_config, check, finish, wait_for  # noqa: E402


def mqtt_status(d):
    return d.ctl_json("status").get("mqtt", {})


class CloseOnConnect:
    """Mutual TLS like the brokers, then reads the CONNECT and closes without a CONNACK."""

    def __init__(self, certs):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*certs.server)
        self.ctx.load_verify_locations(certs.ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.versions = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(c, server_side=True) as t:
                    t.settimeout(5)
                    pkt = t.recv(4096)
                    # CONNECT: type, remaining length, "\0\4MQTT", protocol level.
                    if pkt[:1] == b"\x10" and b"MQTT" in pkt:
                        self.versions.append(pkt[pkt.index(b"MQTT") + 4])
            except (OSError, ssl.SSLError):
                pass
            finally:
                c.close()

    def close(self):
        self.sock.close()


def test_v5_closed(tmp, certs, cert):
    srv = CloseOnConnect(certs)
    d = Daemon(tmp, base_config(tmp) + f"""
[MQTT]
Host=127.0.0.1:{srv.port}
ProtocolVersion=5
CAFile={certs.ca}
CertificateFile={cert[0]}
KeyFile={cert[1]}
ReconnectMin=1s
ReconnectMax=2s
""", name="v5.conf")
    d.log_path = tmp.join("v5.log")
    try:
        d.start()
        want = "the broker refused MQTT 5 (ProtocolVersion=5); set ProtocolVersion=3.1.1 (4)"
        ok = wait_for(lambda: want in mqtt_status(d).get("last_error", ""), timeout=15)
        err = mqtt_status(d).get("last_error")
        check(ok and "right after our MQTT 5 CONNECT" in err,
              f"a broker that closes on a v5 CONNECT: status says MQTT 5 was refused ({err!r})")
        check(srv.versions and set(srv.versions) == {5}, f"CONNECTs were v5 ({srv.versions})")
        check(want in d.read_log(), "and so does the log")
        check(d.stop() == 0, "daemon exits 0")
    finally:
        d.stop()
        srv.close()


def main():
    tmp = TempDir("mcugw-failover-")
    a = b = d = sub = None
    try:
        certs = Certs(tmp.join("certs"))
        a = Broker(tmp.join("a"), certs)
        b = Broker(tmp.join("b"), certs).start()
        cert = certs.client("it-gw")
        first, second = f"127.0.0.1:{a.port}", f"localhost:{b.port}"
        d = Daemon(tmp, base_config(tmp) + f"""
[MQTT]
Host={first}
Host={second}
Port=1
CAFile={certs.ca}
CertificateFile={cert[0]}
KeyFile={cert[1]}
ReconnectMin=1s
ReconnectMax=2s
""")
        d.start()
        ok = wait_for(lambda: mqtt_status(d).get("state") == "connected", timeout=15)
        st = mqtt_status(d)
        check(ok and st["server"] == second and st["server_index"] == 2 and
              st["servers"] == [first, second],
              f"first Host= down: connected to the second ({st.get('server')}, "
              f"{st.get('last_error')})")
        log = d.read_log()
        check(re.search(rf"cannot connect to 127\.0\.0\.1:{a.port}: .*; trying "
                        rf"localhost:{b.port} next", log),
              "the log says the first failed and the second is next")
        out = d.ctl("status").stdout
        check(f"connected to {second} (Host= 2 of 2)" in out,
              f"mcugwctl status shows which broker is in use:\n{out}")

        # The first comes back: the session stays on the second.
        connects = st["connects"]
        a.start()
        sub = Subscriber(a, ["mcugw/it-gw/status"], name="sub-a", clean=True)
        time.sleep(4)
        st = mqtt_status(d)
        check(st["state"] == "connected" and st["server"] == second and
              st["connects"] == connects,
              f"the first Host= is back: no fail-back while connected ({st['server']})")

        # The second goes away: the next round starts from the first.
        b.stop()
        ok = wait_for(lambda: mqtt_status(d).get("server") == first and
                      mqtt_status(d).get("state") == "connected", timeout=20)
        st = mqtt_status(d)
        check(ok and st["server_index"] == 1 and st["connects"] == connects + 1,
              f"the second lost: reconnected to the first ({st['server']}, {st['state']})")
        ok = wait_for(lambda: any(p == b"online" for _, p, _, _ in sub.snapshot()), timeout=10)
        check(ok, "and said online there")
        check(d.stop() == 0, "daemon exits 0")

        test_v5_closed(tmp, certs, cert)
    finally:
        if d:
            d.stop()
        if sub:
            sub.close()
        for x in (a, b):
            if x:
                x.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
