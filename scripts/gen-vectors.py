#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Independent Python model of the mcugw v3 link protocol (Noise IK + framing).

It cross-checks the C core: it reproduces the official cacophony vector for
Noise_IK_25519_ChaChaPoly_SHA256, prints the mcugw test vectors of docs/protocol.md
(--print), and writes the fuzz seed corpora (--corpus DIR, run from the repo root by default).

Only needs python3-cryptography (Debian: python3-cryptography).
"""
import argparse
import hashlib
import hmac
import os
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTO = b"Noise_IK_25519_ChaChaPoly_SHA256"
PROLOGUE = b"mcugw-link/v3"


def pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def dh(priv, peer):
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(peer))


def hkdf2(ck, ikm):
    prk = hmac.new(ck, ikm, hashlib.sha256).digest()
    o1 = hmac.new(prk, b"\x01", hashlib.sha256).digest()
    o2 = hmac.new(prk, o1 + b"\x02", hashlib.sha256).digest()
    return o1, o2


def nonce(n):
    return b"\0" * 4 + struct.pack("<Q", n)


class Sym:
    def __init__(self, prologue, rs):
        self.h = PROTO  # exactly 32 bytes
        self.ck = self.h
        self.k = None
        self.n = 0
        self.mix_hash(prologue)
        self.mix_hash(rs)

    def mix_hash(self, d):
        self.h = hashlib.sha256(self.h + d).digest()

    def mix_key(self, ikm):
        self.ck, self.k = hkdf2(self.ck, ikm)
        self.n = 0

    def enc(self, p):
        c = ChaCha20Poly1305(self.k).encrypt(nonce(self.n), p, self.h) if self.k else p
        self.n += 1
        self.mix_hash(c)
        return c

    def dec(self, c):
        p = ChaCha20Poly1305(self.k).decrypt(nonce(self.n), c, self.h) if self.k else c
        self.n += 1
        self.mix_hash(c)
        return p

    def split(self):
        return hkdf2(self.ck, b"")


def handshake(prologue, i_s, r_s, i_e, r_e, p1, p2):
    """Run IK with fixed keys; returns msg1, msg2, (k_i2r, k_r2i), h."""
    rs = pub(r_s)
    ini, resp = Sym(prologue, rs), Sym(prologue, rs)
    # -> e, es, s, ss
    e = pub(i_e)
    ini.mix_hash(e)
    ini.mix_key(dh(i_e, rs))
    m1 = e + ini.enc(pub(i_s))
    ini.mix_key(dh(i_s, rs))
    m1 += ini.enc(p1)
    # responder reads
    re = m1[:32]
    resp.mix_hash(re)
    resp.mix_key(dh(r_s, re))
    i_spub = resp.dec(m1[32:80])
    resp.mix_key(dh(r_s, i_spub))
    assert resp.dec(m1[80:]) == p1
    # <- e, ee, se
    e2 = pub(r_e)
    resp.mix_hash(e2)
    resp.mix_key(dh(r_e, re))
    resp.mix_key(dh(r_e, i_spub))
    m2 = e2 + resp.enc(p2)
    ini.mix_hash(m2[:32])
    ini.mix_key(dh(i_e, m2[:32]))
    ini.mix_key(dh(i_s, m2[:32]))
    assert ini.dec(m2[32:]) == p2
    assert ini.h == resp.h and ini.split() == resp.split()
    return m1, m2, ini.split(), ini.h


H = bytes.fromhex
CA = dict(
    prologue=H("4a6f686e2047616c74"),
    i_s=H("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"),
    r_s=H("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"),
    i_e=H("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"),
    r_e=H("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"),
    m1="ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253e39987f18146e8cd0873654207148333479d4d16c289f0294b29960a72f48e0b7bba2e89083169825e59642148d492020664ccf7",
    m2="95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088435361e70b2ed446e6c9ec387d1d6b3b840f194e373979d241b203c4acafccf5",
    h="0b0f68fb0c27e03ce9b97565995ed4838cc0581b762ef72b062f6a546419fad7",
)


def check_cacophony():
    m1, m2, (k1, k2), h = handshake(CA["prologue"], CA["i_s"], CA["r_s"], CA["i_e"], CA["r_e"],
                                    b"Ludwig von Mises", b"Murray Rothbard")
    assert m1.hex() == CA["m1"], "cacophony msg1 mismatch"
    assert m2.hex() == CA["m2"], "cacophony msg2 mismatch"
    t = ChaCha20Poly1305(k1).encrypt(nonce(0), b"F. A. Hayek", b"")
    assert t.hex() == "050e9f3c8fac16b68dbce8f8c4bfbf6617c897f9ada4aa29aa19c8"
    assert h.hex() == CA["h"], "cacophony handshake_hash mismatch"
    return h


# ---- mcugw framing ----------------------------------------------------------------------

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def cobs(data):
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    # a trailing full block needs no extra 0x01 (matches the C encoder)
    if data and data[-1] != 0 and len(block) == 0 and out[-1] == 1 and len(data) % 254 == 0:
        out = out[:-1]
    return bytes(out)


def wire(frame):
    return cobs(frame + struct.pack("<I", crc32c(frame))) + b"\x00"


VERSION = 3


def hdr(t):
    return bytes([VERSION, t, 0, 0])


DEV_ID = b"sensor-0001"
SID = 0x12345678
TIMESTAMP = 1
COOKIE = b"\x11" * 16
COOKIE_NONCE = b"\x42" * 24


def mac16(key, data):
    return hmac.new(key.ljust(32, b"\0"), data, hashlib.sha256).digest()[:16]


def flood_keys(gw_pub):
    return hashlib.sha256(b"mac1----" + gw_pub).digest(), hashlib.sha256(b"cookie--" + gw_pub).digest()


def hs1_frame(m1, gw_pub, cookie=None):
    """Header, Noise message 1, mac1, mac2 (zero without a cookie)."""
    f = hdr(1) + m1
    f += mac16(flood_keys(gw_pub)[0], f)
    return f + (mac16(cookie, f) if cookie else b"\0" * 16)


def cookie_reply(gw_pub, hs1, cookie, nonce_):
    key = hmac.new(flood_keys(gw_pub)[1], nonce_, hashlib.sha256).digest()
    mac1 = hs1[-32:-16]
    return hdr(5) + nonce_ + ChaCha20Poly1305(key).encrypt(b"\0" * 12, cookie, mac1)


def mcugw_vectors():
    hs1_payload = bytes([VERSION, 0]) + struct.pack("<HQ", 256, TIMESTAMP) + \
        bytes([len(DEV_ID)]) + DEV_ID + struct.pack("<H", 0)
    hs2_payload = bytes([VERSION, 0]) + struct.pack("<HI", 1024, SID)
    m1, m2, (k1, k2), h = handshake(PROLOGUE, CA["i_s"], CA["r_s"], CA["i_e"], CA["r_e"],
                                    hs1_payload, hs2_payload)
    v = {}
    gw_pub = pub(CA["r_s"])
    v["MV_HS1"] = hs1_frame(m1, gw_pub)
    v["MV_HS1_WIRE"] = wire(v["MV_HS1"])
    v["MV_COOKIE"] = cookie_reply(gw_pub, v["MV_HS1"], COOKIE, COOKIE_NONCE)
    v["MV_HS1_MAC2"] = hs1_frame(m1, gw_pub, COOKIE)
    v["MV_HS2"] = hdr(2) + m2

    def data(key, ctr, msg):
        h16 = hdr(3) + struct.pack("<IQ", SID, ctr)
        return h16 + ChaCha20Poly1305(key).encrypt(nonce(ctr), msg, h16)

    v["MV_DATA_PING"] = data(k1, 0, bytes([3]) + struct.pack("<I", 0))
    v["MV_DATA_TELEMETRY"] = data(k1, 1, bytes([1]) + struct.pack("<HIB", 1, 1, 1) + b"21.5C")
    v["MV_DATA_ACK"] = data(k2, 0, bytes([2]) + struct.pack("<HIBB", 1, 1, 1, 0))
    v["_keys"] = (k1, k2, h)
    return v


def write_corpus(root):
    v = mcugw_vectors()
    k1, k2, _ = v["_keys"]

    def data(key, ctr, msg):
        h16 = hdr(3) + struct.pack("<IQ", SID, ctr)
        return h16 + ChaCha20Poly1305(key).encrypt(nonce(ctr), msg, h16)

    msgs = {
        "telemetry": bytes([1]) + struct.pack("<HIB", 7, 42, 1) + b"{\"t\":21.5}",
        "ack": bytes([2]) + struct.pack("<HIBB", 1, 9, 1, 0),
        "ping": bytes([3]) + struct.pack("<I", 7),
        "pong": bytes([4]) + struct.pack("<I", 7),
        "status": bytes([5]) + struct.pack("<IIBBB", 12, 3600, 3, 1, 5) + b"1.2.3",
        "error": bytes([6]) + struct.pack("<HB", 4, 4) + b"oops",
        "command": bytes([7]) + struct.pack("<I", 99) + b"reboot",
        "result": bytes([8]) + struct.pack("<Ih", 99, -2) + b"no",
        "ota": bytes([0x21]) + b"\x00" * 8,
    }
    frame_dir = os.path.join(root, "frame")
    hs_dir = os.path.join(root, "handshake")
    os.makedirs(frame_dir, exist_ok=True)
    os.makedirs(hs_dir, exist_ok=True)
    files = {}
    # frame corpus: wire bytes of frames whose bodies are plaintext messages (the frame
    # fuzzer deframes, then decodes every body as a message and as a DATA frame header).
    for name, m in msgs.items():
        files[os.path.join(frame_dir, "msg-" + name)] = b"\x00" + wire(hdr(3) + m)
    files[os.path.join(frame_dir, "hs1")] = v["MV_HS1_WIRE"]
    files[os.path.join(frame_dir, "nosession")] = wire(hdr(4) + struct.pack("<I", SID))
    files[os.path.join(frame_dir, "cookie")] = wire(v["MV_COOKIE"])
    # cookie corpus (fuzz-cookie: the device's COOKIE frame parser, and mac checks)
    ck_dir = os.path.join(root, "cookie")
    os.makedirs(ck_dir, exist_ok=True)
    files[os.path.join(ck_dir, "cookie")] = v["MV_COOKIE"]
    files[os.path.join(ck_dir, "cookie-short")] = v["MV_COOKIE"][:-1]
    files[os.path.join(ck_dir, "cookie-v2")] = bytes([2]) + v["MV_COOKIE"][1:]
    files[os.path.join(ck_dir, "hs1-mac2")] = v["MV_HS1_MAC2"]
    files[os.path.join(ck_dir, "hs1")] = v["MV_HS1"]
    files[os.path.join(frame_dir, "garbage-then-frame")] = b"\x13\x37\xff" + b"\x00" + \
        wire(hdr(3) + msgs["ping"])
    # handshake corpus: a full valid session as the responder sees it (fixed keys in the fuzz
    # target), then variations: duplicate msg1, replayed data, truncated and flipped frames.
    s = v["MV_HS1_WIRE"]
    ping = data(k1, 0, msgs["ping"])
    tel = data(k1, 1, msgs["telemetry"])
    files[os.path.join(hs_dir, "session")] = s + wire(ping) + wire(tel)
    files[os.path.join(hs_dir, "dup-msg1")] = s + s + wire(ping)
    files[os.path.join(hs_dir, "replay")] = s + wire(ping) + wire(ping) + wire(tel) + wire(tel)
    files[os.path.join(hs_dir, "truncated")] = s + wire(tel[:-3]) + wire(ping)
    flipped = bytearray(tel)
    flipped[20] ^= 1
    files[os.path.join(hs_dir, "bitflip")] = s + wire(ping) + wire(bytes(flipped))
    files[os.path.join(hs_dir, "msg1-only")] = s
    files[os.path.join(hs_dir, "msg1-mac2")] = wire(v["MV_HS1_MAC2"]) + wire(ping)
    junk = bytearray(v["MV_HS1"])
    junk[-20] ^= 1
    files[os.path.join(hs_dir, "msg1-bad-mac1")] = wire(bytes(junk)) + s
    for path, content in sorted(files.items()):
        with open(path, "wb") as f:
            f.write(content)
    return sorted(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--print", action="store_true", help="print the mcugw vectors as hex")
    ap.add_argument("--corpus", metavar="DIR", help="write fuzz seed corpora under DIR")
    a = ap.parse_args()
    h = check_cacophony()
    print("cacophony IK vector: messages and transport OK; handshake hash", h.hex())
    v = mcugw_vectors()
    if a.print:
        for k, val in v.items():
            if not k.startswith("_"):
                print(k, val.hex())
        print("k_i2r", v["_keys"][0].hex())
        print("k_r2i", v["_keys"][1].hex())
        print("handshake_hash", v["_keys"][2].hex())
    if a.corpus:
        for p in write_corpus(a.corpus):
            print("wrote", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
