# SPDX-License-Identifier: Apache-2.0
"""The gateway's cloud key inside a PKCS#11 token: a real SoftHSM2 token initialised here holds
the client key (the PEM copy is deleted), the daemon loads it through OpenSSL's pkcs11 engine and
connects to a real Mosquitto with mutual TLS. A wrong PIN is a clear error, not a crash."""

import os
import subprocess
import time
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker  # noqa: E402
from mcugwtest import MCUGWD, Daemon, TempDir, base_config, check, finish, wait_for  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def main():
    tmp = TempDir()
    d = broker = None
    try:
        os.makedirs(tmp.join("tokens"))
        conf = tmp.join("softhsm2.conf")
        with open(conf, "w") as f:
            f.write(f"directories.tokendir = {tmp.join('tokens')}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
        env = dict(os.environ, SOFTHSM2_CONF=conf)
        broker = Broker(tmp.path).start()
        cert, key = broker.certs.client("gateway")
        p8 = tmp.join("gw.p8")
        subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", key, "-out", p8],
                       check=True)
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "mcugw", "--pin",
                        "s3cret-pin", "--so-pin", "5678-so"], check=True, env=env, capture_output=True)
        subprocess.run(["softhsm2-util", "--import", p8, "--token", "mcugw", "--label", "gwkey",
                        "--id", "01", "--pin", "s3cret-pin"], check=True, env=env, capture_output=True)
        os.unlink(p8)
        os.unlink(key)
        check(not os.path.exists(key), "the private key exists only inside the token")

        # The PIN comes from a file (pin-source), not the URI: libp11 prints URIs it cannot
        # resolve on stderr, and a pin-value= would end up in the journal with them.
        pin = tmp.join("pin")
        with open(pin, "w") as f:
            f.write("s3cret-pin")
        os.chmod(pin, 0o600)
        uri = f"pkcs11:token=mcugw;object=gwkey;type=private?pin-source=file:{pin}"
        mqtt = broker.mqtt_config(cert, uri, f"PKCS11Module={MODULE}\n")
        config = base_config(tmp, mqtt)
        cfg = tmp.join("mcugw.conf")
        with open(cfg, "w") as f:
            f.write(config)
        r = subprocess.run([MCUGWD, "--check-config", "--config", cfg], capture_output=True,
                           text=True)
        check(r.returncode == 0, "a pkcs11: URI is a valid KeyFile=")

        d = Daemon(tmp, config).start(env=env)
        up = wait_for(lambda: d.ctl_json("status").get("mqtt", {}).get("state") == "connected",
                      timeout=20)
        check(up, "mutual TLS to Mosquitto with the key in the SoftHSM2 token")
        # use_identity_as_username: the broker names the client by its certificate's CN.
        check(wait_for(lambda: "u'gateway'" in broker.read_log(), timeout=5),
              "the broker accepted the client certificate (CN gateway)")
        d.stop()
        d = None

        # Wrong PIN: a clear error naming the problem, no crash, no prompt; the daemon runs on
        # without the cloud (#17.4) and does not try the PIN again on its own.
        with open(pin, "w") as f:
            f.write("wr0ng-pin")
        d = Daemon(tmp, config, name="wrong-pin.conf")
        d.log_path = tmp.join("wrong-pin.log")
        d.start(env=env)
        err = d.ctl_json("status")["mqtt"]["last_error"]
        time.sleep(3)
        out = d.read_log()
        check(d.proc.poll() is None, "wrong PIN: no crash, the daemon runs on")
        check("wrong PIN" in err and "wrong PIN" in out, f"wrong PIN: the error says so ({err})")
        check(out.count("wrong PIN") == 1 and d.ctl_json("status")["mqtt"]["attempts"] == 0,
              "a wrong PIN is not tried again by the backoff (a token may lock itself)")
        check("wr0ng-pin" not in out, "the PIN is not logged")
        check(d.stop() == 0, "wrong PIN: clean exit")
        d = None
    finally:
        if d:
            d.stop()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
