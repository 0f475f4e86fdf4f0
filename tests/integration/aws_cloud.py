# SPDX-License-Identifier: Apache-2.0
"""A scripted AWS IoT cloud for the OTA tests, over the real Mosquitto (broker.py): the Jobs MQTT
API and MQTT-based file delivery (CBOR) as the AWS documentation describes them.

Jobs (per thing, developer guide pages jobs-mqtt-api, jobs-comm-notifications,
iot-jobs-lifecycle): create_job() queues an execution and publishes `…/jobs/notify` ({"timestamp",
"jobs": {"QUEUED": […], "IN_PROGRESS": […]}} summaries) and, when the next pending execution
changed, `…/jobs/notify-next` ({"timestamp", "execution"} or no execution). Answers
`$aws/things/T/jobs/$next/get` on …/$next/get/accepted ({"execution": …} or no execution),
`…/jobs/ID/get` on …/get/accepted or /rejected (ResourceNotFound), `…/jobs/ID/update` on
…/update/accepted or /rejected: an execution in a terminal state (SUCCEEDED, FAILED, REJECTED,
CANCELED, REMOVED…) gives InvalidStateTransition, one whose job was cancelled or deleted
TerminalStateReached; statusDetails must be a flat map of strings. Timestamps are in seconds,
every accepted update increments versionNumber. cancel_job(thing, id, force) is CancelJob
(--force cancels IN_PROGRESS executions too). Every update is kept in `history`, every rejection
in `rejected`.

Streams (mqtt-based-file-delivery-in-devices): answers `$aws/things/T/streams/S/get/cbor` ({c,
f, l, o, b, n}) with one `…/data/cbor` message ({f, i, l, p}) per requested block, at most
128 KB of blocks per request (the rest of a larger request is not served), or `…/rejected/cbor`
(ResourceNotFound for a missing or deleted stream or file, BlockSizeOutOfBounds, InvalidRequest).
Fault injection for the tests: truncate (the first copy of every block cut short), duplicate
(every block twice), reorder (blocks of a request in reverse order), drop (the first copy of
every 3rd block lost), silent (requests are not answered at all; also per stream in
silent_streams). Counts blocks served and
requests per stream."""

import json
import struct
import threading
import time

# ---- a minimal CBOR codec: what the stream protocol uses (maps, text, bytes, uints) ---------



def ota_job_document(stream, size, sig, devices=None):
    """What AWS CreateOTAUpdate puts into the job for an MQTT OTA with code signing; with
    `devices`, the `mcugw` object of a gateway-targeted job (docs/ota.md)."""
    doc = {"afr_ota": {"protocols": ["MQTT"], "streamname": stream,
                       "files": [{"filepath": "/firmware.bin", "filesize": size, "fileid": 0,
                                  "certfile": "ecdsasigner.crt", "update_data_url": None,
                                  "auth_scheme": None, "sig-sha256-ecdsa": sig}]}}
    if devices:
        doc["mcugw"] = {"devices": devices}
    return doc

def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + struct.pack(">I", n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)


def cbor_dumps(v):
    if isinstance(v, bool) or v is None:
        raise TypeError("not needed")
    if isinstance(v, int):
        return _head(0, v)
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(cbor_dumps(k) + cbor_dumps(x) for k, x in v.items())
    raise TypeError(type(v))


def cbor_loads(b):
    def item(i):
        ib = b[i]
        major, info = ib >> 5, ib & 31
        i += 1
        if info < 24:
            n = info
        elif info == 24:
            n = b[i]; i += 1
        elif info == 25:
            n = struct.unpack(">H", b[i:i + 2])[0]; i += 2
        elif info == 26:
            n = struct.unpack(">I", b[i:i + 4])[0]; i += 4
        elif info == 27:
            n = struct.unpack(">Q", b[i:i + 8])[0]; i += 8
        else:
            raise ValueError("indefinite lengths not supported")
        if major == 0:
            return n, i
        if major in (2, 3):
            s = b[i:i + n]
            if len(s) != n:
                raise ValueError("truncated")
            return (s if major == 2 else s.decode()), i + n
        if major == 5:
            d = {}
            for _ in range(n):
                k, i = item(i)
                d[k], i = item(i)
            return d, i
        raise ValueError(f"major type {major} not supported")
    v, end = item(0)
    if end != len(b):
        raise ValueError("trailing bytes")
    return v


class AwsCloud:
    def __init__(self, broker, name="aws-cloud"):
        import paho.mqtt.client as mqtt
        self.lock = threading.RLock()
        self.jobs = {}      # thing -> [execution dicts] in queue order
        self.streams = {}   # stream -> {fileid: bytes}
        self.history = []   # (thing, jobId, status, statusDetails)
        self.served = {}    # stream -> blocks published
        self.requests = []  # decoded stream requests (with "_stream", "_thing", "_t")
        self.rejected = []  # (topic, code) of every rejection sent
        self.faults = set()
        self.silent_streams = set()  # requests for these are never answered
        self.delay = 0.0    # seconds per block served (slow cloud)
        self._seen = set()
        self.connected = threading.Event()
        cert = broker.certs.client(name)
        self.c = mqtt.Client(client_id=name, clean_session=True)
        self.c.tls_set(ca_certs=broker.certs.ca, certfile=cert[0], keyfile=cert[1])
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("the cloud could not connect")
        time.sleep(0.2)

    def _on_connect(self, c, ud, flags, rc):
        if rc == 0:
            for t in ("$aws/things/+/jobs/+/get", "$aws/things/+/jobs/+/update",
                      "$aws/things/+/streams/+/get/cbor"):
                c.subscribe(t, qos=1)
            self.connected.set()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()

    def _pub(self, topic, payload):
        if "/rejected" in topic:
            code = (payload.get("code") if isinstance(payload, dict)
                    else cbor_loads(payload).get("o"))
            with self.lock:
                self.rejected.append((topic, code))
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        self.c.publish(topic, payload, qos=1)

    # ---- the operator's side -----------------------------------------------------------------

    def create_stream(self, stream, files):
        with self.lock:
            self.streams[stream] = dict(files)

    def delete_stream(self, stream):
        with self.lock:
            self.streams.pop(stream, None)

    def create_job(self, thing, job_id, document, notify=True):
        """CreateJob for one thing (notify=False: queued while the thing is not listening)."""
        now = int(time.time())
        ex = {"jobId": job_id, "status": "QUEUED", "queuedAt": now, "lastUpdatedAt": now,
              "versionNumber": 1, "executionNumber": 1, "jobDocument": document,
              "statusDetails": {}}
        with self.lock:
            before = self._next(thing)
            self.jobs.setdefault(thing, []).append(ex)
        if notify:
            self._notify(thing, before)

    def cancel_job(self, thing, job_id, force=False):
        """CancelJob: QUEUED executions are CANCELED; IN_PROGRESS ones only with force."""
        with self.lock:
            before = self._next(thing)
            ex = next((e for e in self.jobs.get(thing, []) if e["jobId"] == job_id), None)
            if not ex or ex["status"] not in ("QUEUED", "IN_PROGRESS"):
                return False
            if ex["status"] == "IN_PROGRESS" and not force:
                return False
            ex["status"] = "CANCELED"
            ex["job_canceled"] = True
            ex["versionNumber"] += 1
            ex["lastUpdatedAt"] = int(time.time())
        self._notify(thing, before)
        return True

    def _notify(self, thing, before):
        """jobs/notify on every change of the pending list, notify-next when the next changed."""
        now = int(time.time())
        with self.lock:
            pending = {}
            for e in self.jobs.get(thing, []):
                if e["status"] in ("QUEUED", "IN_PROGRESS"):
                    pending.setdefault(e["status"], []).append(
                        {k: e[k] for k in ("jobId", "queuedAt", "lastUpdatedAt",
                                           "executionNumber", "versionNumber")})
            nxt = self._next(thing)
        self._pub(f"$aws/things/{thing}/jobs/notify", {"timestamp": now, "jobs": pending})
        if nxt is not before:
            self._pub(f"$aws/things/{thing}/jobs/notify-next",
                      {"timestamp": now, **({"execution": self._view(nxt)} if nxt else {})})

    def execution(self, thing, job_id):
        with self.lock:
            for ex in self.jobs.get(thing, []):
                if ex["jobId"] == job_id:
                    return json.loads(json.dumps(ex))
        return None

    def updates(self, thing, job_id):
        with self.lock:
            return [h for h in self.history if h[0] == thing and h[1] == job_id]

    # ---- Jobs API ------------------------------------------------------------------------------

    def _next(self, thing):
        """The next pending execution: IN_PROGRESS ones first, then QUEUED, in queue order."""
        for want in ("IN_PROGRESS", "QUEUED"):
            for ex in self.jobs.get(thing, []):
                if ex["status"] == want:
                    return ex
        return None

    @staticmethod
    def _view(ex):
        return {k: ex[k] for k in ("jobId", "status", "queuedAt", "lastUpdatedAt",
                                   "versionNumber", "executionNumber", "jobDocument",
                                   "statusDetails")}

    def _on_message(self, c, ud, msg):
        parts = msg.topic.split("/")
        try:
            if parts[3] == "jobs":
                self._jobs(parts[2], parts[4], "/".join(parts[5:]), msg.payload)
            elif parts[3] == "streams":
                self._stream(parts[2], parts[4], msg.payload)
        except Exception as e:  # a scripted cloud must not die on bad input
            print(f"aws_cloud: {msg.topic}: {e}", flush=True)

    def _jobs(self, thing, job_id, verb, payload):
        try:
            req = json.loads(payload or b"{}")
        except ValueError:
            req = None
        base = f"$aws/things/{thing}/jobs/{job_id}"
        token = req.get("clientToken") if isinstance(req, dict) else None
        if not isinstance(req, dict):
            self._pub(base + f"/{verb}/rejected", {"code": "InvalidJson",
                                                  "message": "payload is not JSON"})
            return
        with self.lock:
            if job_id == "$next":
                ex = self._next(thing)
            else:
                ex = next((e for e in self.jobs.get(thing, []) if e["jobId"] == job_id), None)
            if verb == "get":
                out = {"timestamp": int(time.time())}
                if token:
                    out["clientToken"] = token
                if ex:
                    out["execution"] = self._view(ex)
                elif job_id != "$next":
                    self._pub(base + "/get/rejected", {"code": "ResourceNotFound",
                                                       "message": "no such job",
                                                       "clientToken": token})
                    return
                self._pub(base + "/get/accepted", out)
                return
            if verb != "update":
                return
            err = None
            st = req.get("status")
            details = req.get("statusDetails", {})
            before = self._next(thing)
            if not ex:
                err = ("ResourceNotFound", "no such job")
            elif ex.get("job_canceled"):
                err = ("TerminalStateReached", f"job execution is {ex['status']}")
            elif ex["status"] not in ("QUEUED", "IN_PROGRESS"):
                err = ("InvalidStateTransition", f"job execution is {ex['status']}")
            elif st not in ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"):
                err = ("InvalidRequest", f"bad status {st}")
            elif not isinstance(details, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in details.items()):
                err = ("InvalidRequest", "statusDetails must be a map of strings")
            if err:
                self._pub(base + "/update/rejected", {"code": err[0], "message": err[1],
                                                      "clientToken": token})
                return
            ex["status"] = st
            ex["statusDetails"] = details
            ex["versionNumber"] += 1
            ex["lastUpdatedAt"] = int(time.time())
            self.history.append((thing, job_id, st, dict(details)))
            terminal = st != "IN_PROGRESS"
        self._pub(base + "/update/accepted", {"timestamp": int(time.time()),
                                              "clientToken": token})
        if terminal or before is not self._next(thing):
            self._notify(thing, before)

    # ---- streams (CBOR) ------------------------------------------------------------------------

    def _stream(self, thing, stream, payload):
        base = f"$aws/things/{thing}/streams/{stream}"
        try:
            q = cbor_loads(bytes(payload))
            c, f, bs, o, n = q["c"], q["f"], q["l"], q["o"], q["n"]
        except (ValueError, KeyError, IndexError, TypeError):
            self._pub(base + "/rejected/cbor", cbor_dumps({"o": "InvalidRequest",
                                                           "m": "malformed request"}))
            return
        with self.lock:
            self.requests.append(dict(q, _stream=stream, _thing=thing, _t=time.time()))
            data = self.streams.get(stream, {}).get(f)
            silent = "silent" in self.faults or stream in self.silent_streams
        if silent:
            return
        if data is None:
            self._pub(base + "/rejected/cbor", cbor_dumps({"o": "ResourceNotFound",
                                                           "m": "no such stream or file",
                                                           "c": c}))
            return
        if not (256 <= bs <= 131072) or not (1 <= n <= 98):
            self._pub(base + "/rejected/cbor", cbor_dumps({"o": "BlockSizeOutOfBounds",
                                                           "m": "bad block size", "c": c}))
            return
        total = (len(data) + bs - 1) // bs
        if "b" in q:
            bm = q["b"]
            blocks = [o + k for k in range(len(bm) * 8) if bm[k // 8] >> (k % 8) & 1]
        else:
            blocks = list(range(o, o + n))
        # At most 128 KB of blocks per request: the rest is simply not served.
        blocks = [i for i in blocks if i < total][:min(n, max(1, 131072 // bs))]
        if "reorder" in self.faults:
            blocks.reverse()
        for i in blocks:
            if self.delay:
                time.sleep(self.delay)
            p = data[i * bs:(i + 1) * bs]
            key = (stream, i)
            first = key not in self._seen
            self._seen.add(key)
            if "drop" in self.faults and first and i % 3 == 1:
                continue
            if "truncate" in self.faults and first:
                msg = cbor_dumps({"f": f, "i": i, "l": len(p), "p": p})
                self._pub(base + "/data/cbor", msg[:len(msg) // 2])
            else:
                self._pub(base + "/data/cbor", cbor_dumps({"f": f, "i": i, "l": len(p), "p": p}))
                if "duplicate" in self.faults:
                    self._pub(base + "/data/cbor",
                              cbor_dumps({"f": f, "i": i, "l": len(p), "p": p}))
            with self.lock:
                self.served[stream] = self.served.get(stream, 0) + 1
