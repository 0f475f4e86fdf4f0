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
requests per stream.

Device shadows (device-shadow-mqtt, device-shadow-document, device-shadow-data-flow): classic
(`$aws/things/T/shadow/…`) and named (`…/shadow/name/N/…`) shadows answer `get` on get/accepted
(state desired/reported/delta, metadata, version, timestamp) or get/rejected 404, `update` on
update/accepted (the request's state, the metadata of what it changed, the new version),
update/documents (previous/current) and, when the request had a desired state and desired and
reported differ, update/delta (only the differing desired keys, with metadata); `delete`.
Updates merge into the document; null deletes a key (or a whole section); arrays are replaced.
Errors as AWS names them: 400 (not JSON, no state, a section that is not an object, nesting
deeper than 6), 404 (no such shadow), 409 (the request's version is not the current one), 413
(the state over 8 KB). Operator side: shadow_update() (as UpdateThingShadow), shadow_get();
shadow_delete(); every request of the gateway is in shadow_requests; fault injection: shadow_fail_next[key] =
code answers the next update of that shadow with that error, shadow_before_update[key] = fn
runs once before the next update that carries a version (a concurrent writer)."""

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


# ---- device shadows ----------------------------------------------------------------------------

SHADOW_MAX = 8192
SHADOW_DEPTH = 6


def _depth(v):
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


def _merge(doc, upd, meta, ts):
    """Merge upd into doc (null deletes), recording {"timestamp"} in meta for what changed."""
    for k, v in upd.items():
        if v is None:
            doc.pop(k, None)
            meta.pop(k, None)
        elif isinstance(v, dict) and v:
            sub = doc.get(k) if isinstance(doc.get(k), dict) else {}
            m = meta.get(k) if isinstance(meta.get(k), dict) and "timestamp" not in meta.get(k) \
                else {}
            _merge(sub, v, m, ts)
            doc[k], meta[k] = sub, m
        else:
            doc[k] = v
            meta[k] = [{"timestamp": ts} for _ in v] if isinstance(v, list) else {"timestamp": ts}


def _stamps(v, ts):
    if isinstance(v, dict):
        return {k: _stamps(x, ts) for k, x in v.items()}
    return {"timestamp": ts}


def shadow_delta(desired, reported):
    """The desired keys whose value differs from reported (objects compared key by key)."""
    out = {}
    for k, v in desired.items():
        r = reported.get(k)
        if isinstance(v, dict) and isinstance(r, dict):
            sub = shadow_delta(v, r)
            if sub:
                out[k] = sub
        elif v != r:
            out[k] = v
    return out


def _shadow_prefix(thing, name):
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")



class ShadowService:
    """The Device Shadow service of AwsCloud (see the module's docstring)."""

    def _shadow_update(self, key, req, token=None):
        """One UpdateThingShadow: (None, accepted, documents, delta) or (code, message)."""
        ts = int(time.time())
        if not isinstance(req, dict) or not isinstance(req.get("state"), dict):
            return 400, "Missing required node: state"
        st = req["state"]
        for sec in ("desired", "reported"):
            if sec in st and st[sec] is not None and not isinstance(st[sec], dict):
                return 400, f"Invalid JSON: {sec} must be an object"
            if sec in st and _depth(st[sec]) > SHADOW_DEPTH:
                return 400, "JSON contains too many levels of nesting; maximum is 6"
        with self.lock:
            cur = self.shadows.get(key)
            if "version" in req and req["version"] != (cur["version"] if cur else 0):
                return 409, "Version conflict"
            prev = json.loads(json.dumps(cur)) if cur else None
            doc = json.loads(json.dumps(cur)) if cur else {
                "state": {}, "metadata": {}, "version": 0}
            changed_meta = {}
            for sec in ("desired", "reported"):
                if sec not in st:
                    continue
                if st[sec] is None:
                    doc["state"].pop(sec, None)
                    doc["metadata"].pop(sec, None)
                    continue
                d = doc["state"].setdefault(sec, {})
                m = doc["metadata"].setdefault(sec, {})
                _merge(d, st[sec], m, ts)
                changed_meta[sec] = _stamps(st[sec], ts)
            size = len(json.dumps({k: v for k, v in doc["state"].items()},
                                  separators=(",", ":")))
            if size > SHADOW_MAX:
                return 413, "The payload exceeds the maximum size allowed"
            doc["version"] += 1
            doc["timestamp"] = ts
            self.shadows[key] = doc
            accepted = {"state": st, "metadata": changed_meta, "version": doc["version"],
                        "timestamp": ts}
            if token:
                accepted["clientToken"] = token
            documents = {"previous": prev, "current": json.loads(json.dumps(doc)), "timestamp": ts}
            delta = None
            if "desired" in st:
                dl = shadow_delta(doc["state"].get("desired", {}), doc["state"].get("reported", {}))
                if dl:
                    delta = {"version": doc["version"], "timestamp": ts, "state": dl,
                             "metadata": {k: doc["metadata"]["desired"].get(k) for k in dl}}
                    if token:
                        delta["clientToken"] = token
        return None, accepted, documents, delta


    def _shadow_publish_update(self, key, res):
        base = _shadow_prefix(*key)
        _, accepted, documents, delta = res
        self._pub(base + "/update/accepted", accepted)
        self._pub(base + "/update/documents", documents)
        if delta:
            self._pub(base + "/update/delta", delta)


    def shadow_get_doc(self, thing, name=None):
        """GetThingShadow: the document with its delta, or None."""
        with self.lock:
            cur = self.shadows.get((thing, name))
            if not cur:
                return None
            doc = json.loads(json.dumps(cur))
        dl = shadow_delta(doc["state"].get("desired", {}), doc["state"].get("reported", {}))
        if dl:
            doc["state"]["delta"] = dl
        return doc


    def shadow_update(self, thing, state, name=None, version=None):
        """UpdateThingShadow by the operator: returns the accepted document, or (code, message)."""
        req = {"state": state}
        if version is not None:
            req["version"] = version
        res = self._shadow_update((thing, name), req)
        if res[0] is not None:
            return res
        self._shadow_publish_update((thing, name), res)
        return res[1]


    def shadow_delete(self, thing, name=None):
        """DeleteThingShadow by the operator."""
        with self.lock:
            return self.shadows.pop((thing, name), None) is not None

    def _shadow_request(self, thing, name, verb, topic, payload):
        key = (thing, name)
        base = _shadow_prefix(thing, name)
        try:
            req = json.loads(payload) if payload else {}
        except ValueError:
            req = None
        token = req.get("clientToken") if isinstance(req, dict) else None
        with self.lock:
            self.shadow_requests.append((time.time(), topic, req))

        def reject(op, code, message):
            e = {"code": code, "message": message, "timestamp": int(time.time())}
            if token:
                e["clientToken"] = token
            self._pub(f"{base}/{op}/rejected", e)

        if verb == "get":
            doc = self.shadow_get_doc(thing, name)
            if not doc:
                reject("get", 404, f"No shadow exists with name: '{name or thing}'")
                return
            if token:
                doc["clientToken"] = token
            doc["timestamp"] = int(time.time())
            self._pub(base + "/get/accepted", doc)
            return
        if verb == "delete":
            with self.lock:
                cur = self.shadows.pop(key, None)
            if not cur:
                reject("delete", 404, f"No shadow exists with name: '{name or thing}'")
                return
            self._pub(base + "/delete/accepted", {"version": cur["version"],
                                                  "timestamp": int(time.time())})
            return
        if verb != "update":
            return
        if req is None:
            reject("update", 400, "Invalid JSON")
            return
        with self.lock:
            code = self.shadow_fail_next.pop(key, None)
            hook = self.shadow_before_update.pop(key, None) if "version" in req else None
        if code:
            reject("update", code, {400: "Bad Request", 409: "Version conflict",
                                    413: "The payload exceeds the maximum size allowed"}.get(
                                        code, "error"))
            return
        if hook:
            hook()
        res = self._shadow_update(key, req, token)
        if res[0] is not None:
            reject("update", res[0], res[1])
            return
        self._shadow_publish_update(key, res)


    def shadow_updates(self, thing, name=None, gateway_only=True):
        """The update requests received for one shadow."""
        suffix = _shadow_prefix(thing, name) + "/update"
        with self.lock:
            return [r for _, t, r in self.shadow_requests if t == suffix]


class AwsCloud(ShadowService):
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
        self.shadows = {}               # (thing, name or None) -> document
        self.shadow_requests = []       # (time, topic, request) of every get/update received
        self.shadow_fail_next = {}      # (thing, name) -> error code for the next update
        self.shadow_before_update = {}  # (thing, name) -> fn, before the next versioned update
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
                      "$aws/things/+/streams/+/get/cbor",
                      "$aws/things/+/shadow/get", "$aws/things/+/shadow/update",
                      "$aws/things/+/shadow/delete", "$aws/things/+/shadow/name/+/get",
                      "$aws/things/+/shadow/name/+/update",
                      "$aws/things/+/shadow/name/+/delete"):
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
            elif parts[3] == "shadow":
                name = parts[5] if len(parts) == 7 and parts[4] == "name" else None
                self._shadow_request(parts[2], name, parts[-1], msg.topic, msg.payload)
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

