# SPDX-License-Identifier: Apache-2.0
"""Just-in-time onboarding: a device unknown to the registry that presents its manufacturer's
attestation (ECDSA P-256 over its id and key, in handshake message 1) is enrolled as pending or
active per [Onboarding] Policy=; `mcugwctl device approve` completes a pending one. Unsigned,
tampered, untrusted and revoked-manufacturer attestations are refused and audited."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mcugwtest import (MCUGWD, Daemon, Sim, TempDir, base_config, check, finish,  # noqa: E402
                       wait_for)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def manufacturer(tmp, name):
    priv, pub = tmp.join(f"{name}.key"), tmp.join(f"{name}.pub")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", priv)
    os.chmod(priv, 0o600)
    openssl("ec", "-in", priv, "-pubout", "-out", pub)
    return priv, pub


def reasons(d, dev_id):
    return [r["details"].get("reason") for r in d.ctl_json("audit", "tail", "-n", "500")
            if r["event"] == "auth.failed" and r["details"].get("device_id") == dev_id]


def main():
    tmp = TempDir()
    d = None
    sims = []
    try:
        acme_priv, acme_pub = manufacturer(tmp, "acme")
        old_priv, old_pub = manufacturer(tmp, "oldline")
        rogue_priv, _ = manufacturer(tmp, "rogue")
        sock = tmp.join("link.sock")
        onboarding = (f"[Onboarding]\nPolicy=pending\nManufacturerKey=acme:{acme_pub}\n"
                      f"ManufacturerKey=oldline:{old_pub}\nRevokedManufacturerKey=oldline\n"
                      f"[Link]\nListenStream=unix:{sock}\nHandshakeRatePerLink=50\n")
        config = base_config(tmp, onboarding)

        # A bad manufacturer key path is a configuration error.
        bad = tmp.join("bad.conf")
        with open(bad, "w") as f:
            f.write(base_config(tmp, "[Onboarding]\nManufacturerKey=x:/nonexistent.pem\n"
                                     "ManufacturerKey=nocolon\n"))
        r = subprocess.run([MCUGWD, "--check-config", "--config", bad], capture_output=True,
                           text=True)
        check(r.returncode != 0 and "/nonexistent.pem" in r.stderr and "nocolon" in r.stderr,
              "--check-config reports bad manufacturer keys")

        d = Daemon(tmp, config).start()
        gw = d.ctl_json("status")["link"]["public_key"]
        base = ["--gateway-key", gw, "--connect", f"unix:{sock}", "--rate", "20",
                "--messages", "0", "--duration", "60"]

        # 1. Attested by a trusted manufacturer: enrolled as pending, refused until approved.
        s1 = Sim(tmp, "acme", [*base, "--seed", "acme", "--id-prefix", "acme-",
                               "--attest-key", acme_priv, "--attest-key-id", "acme"])
        sims.append(s1)
        dev = wait_for(lambda: {x["id"]: x for x in d.ctl_json("devices")}.get("acme-0000"),
                       timeout=15)
        check(dev and dev["state"] == "pending" and dev["source"] == "onboarding",
              "attested device enrolled as pending")
        check("pending approval" in reasons(d, "acme-0000"), "pending device refused until approved")
        ev = [r for r in d.ctl_json("audit", "tail", "-n", "200")
              if r["event"] == "device.onboarded"]
        check(ev and ev[0]["details"]["manufacturer_key"] == "acme",
              "onboarding audited with the manufacturer key")
        check(d.ctl("device", "approve", "acme-0000").returncode == 0, "approve the onboarded device")
        ok = wait_for(lambda: d.ctl_json("device", "show", "acme-0000").get("connected"),
                      timeout=40)
        check(ok, "approved device authenticates (the device retries its handshake)")

        # 2. Refusals: no attestation, tampered (wrong signer under a trusted id), revoked line.
        cases = [("plain", [], "unknown key"),
                 ("forged", ["--attest-key", rogue_priv, "--attest-key-id", "acme"],
                  "attestation signature does not verify"),
                 ("old", ["--attest-key", old_priv, "--attest-key-id", "oldline"],
                  "attestation by a revoked manufacturer key"),
                 ("stranger", ["--attest-key", rogue_priv, "--attest-key-id", "rogue"],
                  "attestation by an untrusted manufacturer key")]
        for name, extra, why in cases:
            sims.append(Sim(tmp, name, [*base, "--seed", name, "--id-prefix", f"{name}-",
                                        "--duration", "5", *extra]))
        for name, extra, why in cases:
            got = wait_for(lambda: why in reasons(d, f"{name}-0000"), timeout=15)
            check(got, f"{name}: refused and audited ({why})")
            check(d.ctl("device", "show", f"{name}-0000").returncode != 0,
                  f"{name}: not enrolled")

        # 3. Policy=active: onboarded and admitted at first contact.
        d.write_config(config.replace("Policy=pending", "Policy=active"))
        check(d.ctl("reload").returncode == 0, "reload with Policy=active")
        sims.append(Sim(tmp, "auto", [*base, "--seed", "auto", "--id-prefix", "auto-",
                                      "--attest-key", acme_priv, "--attest-key-id", "acme"]))
        ok = wait_for(lambda: d.ctl_json("devices", "--state", "active") and
                      any(x["id"] == "auto-0000" and x["connected"]
                          for x in d.ctl_json("devices")), timeout=20)
        check(ok, "Policy=active: attested device admitted at first contact")
        check(d.ctl("audit", "verify").returncode == 0, "audit chain intact")
    finally:
        for s in sims:
            s.stop()
        if d:
            d.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
