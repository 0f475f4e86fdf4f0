# SPDX-License-Identifier: Apache-2.0
"""Fleet provisioning by claim and certificate rotation against a real Mosquitto with a scripted
AWS IoT side (the fleet provisioning MQTT API as AWS documents it): create-from-csr signs the CSR
with the test CA (`openssl x509 -req`), the template answers with a thingName. The gateway starts
with only a claim certificate and must end on its own key and certificate; the cloud can reject,
hold an answer (the daemon is killed meanwhile) or sign with a rogue CA (rotation must fall
back to the old certificate). A Mosquitto ACL lets the claim use the provisioning topics only."""

import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker  # noqa: E402
from mcugwtest import Daemon, TempDir, base_config, check, finish, wait_for  # noqa: E402
from aws_cloud import cbor_dumps, cbor_loads  # noqa: E402

TEMPLATE = "mcugw-fleet"
CSR_TOPIC = "$aws/certificates/create-from-csr/json"
REG_TOPIC = f"$aws/provisioning-templates/{TEMPLATE}/provision/json"
CSR_CBOR = "$aws/certificates/create-from-csr/cbor"
REG_CBOR = f"$aws/provisioning-templates/{TEMPLATE}/provision/cbor"


class ProvisioningCloud:
    """The AWS side of fleet provisioning, as a paho client with its own certificate."""

    def __init__(self, broker, tmp):
        import paho.mqtt.client as mqtt
        self.broker = broker
        self.dir = tmp.join("cloud")
        os.makedirs(self.dir, exist_ok=True)
        self.lock = threading.Lock()
        self.seen = []          # (topic, payload) of every request
        self.jobs_things = []   # thing names of the gateway's $next/get
        self.cbor_requests = 0
        self.cbor_answers = 0
        self.csrs = []          # CSR PEMs
        self.registrations = []  # provision requests (parsed)
        self.tokens = {}
        self.reject_csr = 0     # reject this many CSRs
        self.reject_register = 0
        self.hold_register = False
        self.held = []
        self.rogue = False      # sign with the rogue CA
        self.n = 0
        cert = broker.certs.client("aws-cloud")
        self.c = mqtt.Client(client_id="aws-cloud", clean_session=True)
        self.c.tls_set(ca_certs=broker.certs.ca, certfile=cert[0], keyfile=cert[1])
        self.connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("cloud could not connect")
        time.sleep(0.3)

    def _on_connect(self, c, ud, flags, rc):
        c.subscribe(CSR_TOPIC, qos=1)
        c.subscribe("$aws/provisioning-templates/+/provision/json", qos=1)
        c.subscribe(CSR_CBOR, qos=1)  # the CBOR flavour of the same API
        c.subscribe("$aws/provisioning-templates/+/provision/cbor", qos=1)
        c.subscribe("$aws/things/+/jobs/$next/get", qos=1)  # which thing the gateway is
        self.connected.set()

    def _reply(self, topic, obj):
        cbor = topic.split("/")[-2] == "cbor"  # …/cbor/accepted
        if cbor:
            self.cbor_answers += 1
        self.c.publish(topic, cbor_dumps(obj) if cbor else json.dumps(obj), qos=1)

    def _sign(self, csr_pem):
        with self.lock:
            self.n += 1
            n = self.n
        csr = os.path.join(self.dir, f"req{n}.csr")
        crt = os.path.join(self.dir, f"req{n}.crt")
        ext = os.path.join(self.dir, "client.ext")
        with open(csr, "w") as f:
            f.write(csr_pem)
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        ca = "rogue-ca" if self.rogue else "ca"
        certs = self.broker.certs
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs.path(ca + ".crt"),
                        "-CAkey", certs.path(ca + ".key"), "-CAcreateserial", "-out", crt,
                        "-days", "2", "-extfile", ext], check=True, capture_output=True)
        with open(crt) as f:
            return f.read()

    def _on_message(self, c, ud, msg):
        payload = bytes(msg.payload)
        with self.lock:
            self.seen.append((msg.topic, payload))
            if msg.topic.endswith("/jobs/$next/get"):
                self.jobs_things.append(msg.topic.split("/")[2])
                return
        try:
            if msg.topic.endswith("/cbor"):
                req = cbor_loads(payload)
                self.cbor_requests += 1
            else:
                req = json.loads(payload)
        except ValueError:
            return
        if msg.topic in (CSR_TOPIC, CSR_CBOR):
            self.csrs.append(req.get("certificateSigningRequest", ""))
            if self.reject_csr > 0:
                self.reject_csr -= 1
                self._reply(msg.topic + "/rejected", {"statusCode": 400, "errorCode": "InvalidCSR",
                                                      "errorMessage": "scripted rejection"})
                return
            pem = self._sign(req["certificateSigningRequest"])
            der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=pem.encode(),
                                 capture_output=True, check=True).stdout
            cid = hashlib.sha256(der).hexdigest()
            token = secrets.token_hex(32)
            self.tokens[token] = cid
            self._reply(msg.topic + "/accepted", {"certificateId": cid, "certificatePem": pem,
                                                  "certificateOwnershipToken": token})
        elif msg.topic.startswith("$aws/provisioning-templates/") and \
                msg.topic.endswith(("/json", "/cbor")):
            self.registrations.append(req)
            if self.hold_register:
                self.held.append(req)
                return
            self._answer_register(msg.topic, req)

    def _answer_register(self, topic, req):
        if self.reject_register > 0:
            self.reject_register -= 1
            self._reply(topic + "/rejected", {"statusCode": 400, "errorCode": "InvalidParameters",
                                              "errorMessage": "scripted rejection"})
            return
        if req.get("certificateOwnershipToken") not in self.tokens:
            self._reply(topic + "/rejected", {"statusCode": 403, "errorCode": "Unauthorized",
                                              "errorMessage": "unknown ownership token"})
            return
        serial = req.get("parameters", {}).get("SerialNumber", "")
        self._reply(topic + "/accepted", {"thingName": f"gw-{serial}",
                                          "deviceConfiguration": {"fleet": "test"}})

    def payloads(self):
        with self.lock:
            return b"".join(p for _, p in self.seen)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def audit_events(d, n=500):
    r = d.ctl("audit", "tail", "-n", str(n), json_out=True)
    if r.returncode != 0:
        return []
    data = json.loads(r.stdout)
    recs = data.get("records", data) if isinstance(data, dict) else data
    return recs


def events(d, name):
    return [e for e in audit_events(d) if e.get("event") == name]


def status(d):
    try:
        return d.ctl_json("status")
    except (RuntimeError, ValueError):
        return {}


def prov(d):
    try:
        return d.ctl_json("status").get("provisioning", {})
    except RuntimeError:
        return {}


def cert_cn(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-issuer",
                        "-fingerprint", "-sha256"], capture_output=True, text=True)
    return r.stdout


def fingerprint(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"],
                       capture_output=True, text=True)
    return r.stdout.strip().split("=", 1)[-1]


def pubkey_of_key(path):
    return subprocess.run(["openssl", "pkey", "-in", path, "-pubout"], capture_output=True,
                          text=True).stdout


def pubkey_of_cert(path):
    return subprocess.run(["openssl", "x509", "-in", path, "-noout", "-pubkey"],
                          capture_output=True, text=True).stdout


def main():
    tmp = TempDir()
    d = broker = cloud = None
    try:
        broker = Broker(tmp.path)
        certs = broker.certs
        claim = certs.client("claim", cn="claim-mcugw")
        # The claim may only provision (AWS gives it a policy like this); the others may do
        # anything. Mosquitto's ACL grants add up, so every client is listed by its CN.
        acl = os.path.join(broker.dir, "acl")
        with open(acl, "w") as f:
            for cn in ("it-gw", "aws-cloud", "probe"):
                f.write(f"user {cn}\ntopic readwrite #\ntopic readwrite $aws/#\n")
            f.write("user claim-mcugw\n"
                    f"topic write {CSR_TOPIC}\ntopic read {CSR_TOPIC}/+\n"
                    f"topic write {REG_TOPIC}\ntopic read {REG_TOPIC}/+\n"
                    f"topic write {CSR_CBOR}\ntopic read {CSR_CBOR}/+\n"
                    f"topic write {REG_CBOR}\ntopic read {REG_CBOR}/+\n")
        with open(broker.conf, "a") as f:
            f.write(f"acl_file {acl}\n")
        broker.start()
        cloud = ProvisioningCloud(broker, tmp)

        gwdir = tmp.join("gw")
        os.makedirs(gwdir)
        gw_cert, gw_key = os.path.join(gwdir, "mqtt.crt"), os.path.join(gwdir, "mqtt.key")
        prov_conf = f"""
[Provisioning]
ClaimCertificateFile={claim[0]}
ClaimKeyFile={claim[1]}
Template={TEMPLATE}
Parameters=SerialNumber=SN-0001
Parameters=Model=mcugw-it
"""
        config = base_config(tmp, broker.mqtt_config(gw_cert, gw_key) + prov_conf)

        # ---- 1. The cloud rejects the first CSR: clear error, audited, retried with backoff;
        #         the registration is held and the daemon killed meanwhile.
        cloud.reject_csr = 1
        cloud.hold_register = True
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: len(events(d, "provision.failed")) >= 1, timeout=20),
              "rejected CSR: provision.failed audited")
        f = events(d, "provision.failed")
        reason = json.dumps(f[0].get("details", f[0])) if f else ""
        check("InvalidCSR" in reason and "rejected" in reason,
              f"rejected CSR: the reason names the cloud's error ({reason[:160]})")
        st = prov(d)
        check(st.get("mode") == "provisioning" and not st.get("complete"),
              "rejected CSR: status says provisioning is not complete")
        check(wait_for(lambda: len(cloud.registrations) >= 1, timeout=20),
              "after the retry the CSR is accepted and the registration sent")
        csr_times = [e.get("ts_us", 0) for e in events(d, "provision.csr_sent")]
        check(len(csr_times) >= 2 and csr_times[1] - csr_times[0] >= 1_500_000,
              "the retry waited (backoff, not a tight loop)")
        check(cloud.registrations[0].get("parameters") == {"SerialNumber": "SN-0001",
                                                           "Model": "mcugw-it"},
              "RegisterThing carries the configured parameters")
        check(len(events(d, "provision.certificate_received")) >= 1,
              "provision.certificate_received audited")

        # Killed between create-from-csr and RegisterThing.
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        check(not os.path.exists(gw_cert), "killed mid-provisioning: no certificate left behind")
        check(not os.path.exists(gw_cert + ".new"), "killed mid-provisioning: no half-written "
              "certificate")

        # ---- 2. Restart: provisioning starts over cleanly and completes.
        cloud.hold_register = False
        n_csr = len(cloud.csrs)
        d = Daemon(tmp, config).start()
        done = wait_for(lambda: prov(d).get("complete"), timeout=40)
        check(done, "restarted: provisioning completes")
        check(len(cloud.csrs) > n_csr, "restarted: a fresh CSR (new key) was sent")
        # RegisterThing named the thing gw-SN-0001: the gateway restarts itself under it.
        check(wait_for(lambda: status(d).get("gateway") == "gw-SN-0001", timeout=30),
              "the gateway's name is the registered thing's (mcugwctl status)")
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", timeout=20),
              "connected on the new certificate")
        check(len(events(d, "provision.thing_name")) == 1, "provision.thing_name audited")
        with open(tmp.join("state", "thing-name")) as f:
            check(f.read() == "gw-SN-0001", "the thing name is kept in StateDirectory/thing-name")
        n_things = len(cloud.jobs_things)
        check(wait_for(lambda: "gw-SN-0001" in cloud.jobs_things[n_things - 1:], timeout=20),
              "Jobs requests go to the registered thing")
        check("as gw-SN-0001 " in broker.read_log(), "the client id is the thing name")
        st = prov(d)
        check(st.get("state") == "complete" and st.get("thing_name") == "gw-SN-0001",
              f"status: provisioning complete, thing gw-SN-0001 ({st})")
        check(os.path.exists(gw_cert) and "CN = it-gw" in cert_cn(gw_cert),
              "the issued certificate is stored, CN = gateway name")
        check(os.path.exists(gw_key) and stat.S_IMODE(os.stat(gw_key).st_mode) == 0o600,
              "the new key file is 0600")
        check(pubkey_of_key(gw_key) == pubkey_of_cert(gw_cert) and pubkey_of_key(gw_key),
              "the certificate is for the key generated on the gateway")
        with open(gw_key, "rb") as fk:
            keypem = fk.read()
        body = b"".join(keypem.split(b"\n")[1:-2])
        check(b"PRIVATE KEY" not in cloud.payloads() and body[:40] not in cloud.payloads(),
              "the private key never left the gateway")
        check(not os.path.exists(gw_cert + ".new") and not os.path.exists(gw_key + ".new"),
              "no .new files left")
        for ev in ("provision.csr_sent", "provision.certificate_received",
                   "provision.registered", "provision.complete"):
            check(len(events(d, ev)) >= 1, f"{ev} audited")
        log = broker.read_log()
        check("u'it-gw'" in log, "the broker saw the gateway's own certificate (CN it-gw)")
        last_claim = log.rfind("u'claim-mcugw'")
        check(last_claim >= 0 and log.rfind("u'it-gw'") > last_claim,
              "after the switch the claim is no longer used")
        d.stop()

        # A second start uses the new certificate directly: no claim, no CSR.
        n_csr = len(cloud.csrs)
        size = len(broker.read_log())
        d = Daemon(tmp, config).start()
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", timeout=20),
              "second start: connected")
        time.sleep(1)
        newlog = broker.read_log()[size:]
        check("u'it-gw'" in newlog and "claim-mcugw" not in newlog,
              "second start: the new CN connects, the claim is not used")
        check(len(cloud.csrs) == n_csr and prov(d).get("mode") == "none",
              "second start: no provisioning")
        check(status(d).get("gateway") == "gw-SN-0001" and
              "as gw-SN-0001 " in newlog and "as it-gw " not in newlog,
              "second start: still the registered thing (client id, status)")

        # ---- 3. cert show
        r = d.ctl("cert", "show")
        check(r.returncode == 0 and "CN=it-gw" in r.stdout and "days left" in r.stdout,
              "mcugwctl cert show prints subject and days left")
        info = d.ctl_json("cert", "show")
        old_fp = info.get("certificate", {}).get("fingerprint_sha256", "")
        check(old_fp and old_fp == fingerprint(gw_cert),
              "cert show --json: the SHA-256 fingerprint of the file")

        # ---- 4. Rotation: the old certificate stays until the new one has connected.
        cloud.hold_register = False
        r = d.ctl("cert", "rotate")
        check(r.returncode == 0, f"mcugwctl cert rotate accepted ({r.stderr.strip()})")
        ok = wait_for(lambda: len(events(d, "cert.rotated")) >= 1, timeout=30)
        check(ok, "cert.rotated audited")
        new_fp = fingerprint(gw_cert)
        check(new_fp and new_fp != old_fp, "a new certificate is current after rotation")
        check(pubkey_of_key(gw_key) == pubkey_of_cert(gw_cert), "new key and certificate match")
        check(stat.S_IMODE(os.stat(gw_key).st_mode) == 0o600, "the rotated key file is 0600")
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", timeout=20),
              "connected after rotation")
        check(d.ctl_json("cert", "show")["certificate"]["fingerprint_sha256"] == new_fp,
              "cert show reports the new certificate")
        rs = events(d, "cert.rotate_start")
        rd = events(d, "cert.rotated")
        check(rs and rd and rs[-1].get("seq", 0) < rd[-1].get("seq", 1), "rotate_start before "
              "rotated in the audit trail")

        # A rotation whose new certificate is refused by the broker (rogue CA): back to the old.
        cloud.rogue = True
        cur_fp = fingerprint(gw_cert)
        r = d.ctl("cert", "rotate")
        check(r.returncode == 0, "second rotation started")
        ok = wait_for(lambda: len(events(d, "cert.rotate_failed")) >= 1, timeout=40)
        check(ok, "bad new certificate: cert.rotate_failed audited")
        check(fingerprint(gw_cert) == cur_fp, "bad new certificate: the old one stays current")
        check(not os.path.exists(gw_cert + ".new"), "bad new certificate: discarded")
        check(wait_for(lambda: d.ctl_json("status")["mqtt"]["state"] == "connected", timeout=20),
              "bad new certificate: connected again on the old one")
        st = d.ctl_json("cert", "show").get("provisioning", {})
        check("did not connect" in st.get("last_error", ""),
              f"bad new certificate: reported ({st.get('last_error', '')})")
        cloud.rogue = False

        d.stop()
        d = None

        # ---- 5. Automatic rotation before expiry (the test certificates live 2-3 days).
        d = Daemon(tmp, config + "RotateBeforeExpiry=30d\n").start()
        ok = wait_for(lambda: any(e.get("actor") == "daemon" for e in events(d, "cert.rotated")),
                      timeout=30)
        check(ok, "RotateBeforeExpiry: rotated automatically")
        # Credential hygiene: a claim key others may read is flagged by `audit config`.
        os.chmod(claim[1], 0o644)
        r = d.ctl("audit", "config", json_out=True)
        check("provisioning claim key" in r.stdout, "audit config flags a readable claim key")
        os.chmod(claim[1], 0o600)
        check(d.stop() == 0, "clean exit")
        d = None

        # ---- 6. [Provisioning] Format=cbor: the same flow on the …/cbor topics.
        tmp2 = TempDir()
        try:
            gwdir2 = tmp2.join("gw")
            os.makedirs(gwdir2)
            cert2, key2 = os.path.join(gwdir2, "mqtt.crt"), os.path.join(gwdir2, "mqtt.key")
            n_cbor = cloud.cbor_requests
            conf2 = base_config(tmp2, broker.mqtt_config(cert2, key2) + prov_conf.replace(
                "SN-0001", "SN-0002") + "Format=cbor\n")
            d = Daemon(tmp2, conf2).start()
            check(wait_for(lambda: status(d).get("gateway") == "gw-SN-0002", timeout=40),
                  "Format=cbor: provisioned, the gateway is thing gw-SN-0002")
            check(cloud.cbor_requests - n_cbor >= 2 and cloud.cbor_answers >= 2,
                  f"Format=cbor: CreateCertificateFromCsr and RegisterThing in CBOR "
                  f"({cloud.cbor_requests - n_cbor} requests)")
            check(wait_for(lambda: status(d).get("mqtt", {}).get("state") == "connected", 20) and
                  pubkey_of_key(key2) == pubkey_of_cert(cert2),
                  "Format=cbor: connected on its own key and certificate")
            check(d.stop() == 0, "Format=cbor: clean exit")
            d = None
        finally:
            tmp2.cleanup()
    finally:
        if d:
            d.stop()
        if cloud:
            cloud.close()
        if broker:
            broker.stop()
        tmp.cleanup()
    finish()


if __name__ == "__main__":
    main()
