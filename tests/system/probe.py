#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Runs inside mcugwd.service's sandbox (an ExecStartPost= of a test drop-in, so it gets the
unit's user, namespaces, seccomp filter and device policy) and writes what it could and could
not do to /run/mcugw/probe.txt, one `key=value` a line (the container has python3-minimal: no
json). Always exits 0: the test reads the file and judges."""

import errno
import os
import signal
import socket

signal.alarm(20)  # never hold up the unit's start for long

out = {}


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def readonly(path):
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError as e:
        return err_name(e)


for p in ("/etc", "/etc/mcugw", "/usr", "/var/lib", "/run", "/var/lib/mcugw", "/run/mcugw"):
    out["readonly:" + p] = readonly(p)
try:
    out["home"] = os.listdir("/home")
except OSError as e:
    out["home"] = err_name(e)

for name, fam, typ, proto in (("AF_PACKET", socket.AF_PACKET, socket.SOCK_RAW, 0),
                              ("AF_NETLINK", socket.AF_NETLINK, socket.SOCK_RAW, 0),
                              ("AF_INET", socket.AF_INET, socket.SOCK_STREAM, 0),
                              ("AF_UNIX", socket.AF_UNIX, socket.SOCK_STREAM, 0)):
    try:
        socket.socket(fam, typ, proto).close()
        out["socket:" + name] = "ok"
    except OSError as e:
        out["socket:" + name] = err_name(e)

# setpriority() to a lower priority is allowed to any user: only the seccomp filter
# (~@resources) refuses it.
try:
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    out["setpriority"] = "ok"
except OSError as e:
    out["setpriority"] = err_name(e)

# A pseudo-terminal, as a serial port (SerialPort=/dev/pts/N) under DevicePolicy=closed.
try:
    m, s = os.openpty()
    os.write(m, b"x\n")  # the slave is in canonical mode: a line
    out["pty"] = "ok" if os.read(s, 16).startswith(b"x") else "no data"
    os.close(m)
    os.close(s)
except OSError as e:
    out["pty"] = err_name(e)

# A USB serial node (major 188) the test created: EPERM means the device cgroup refused it;
# ENXIO/ENODEV mean the policy let us through to a driver with no such device.
for node in ("/dev/ttyUSB9", "/dev/ttyACM9"):
    if os.path.exists(node):
        try:
            os.close(os.open(node, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
            out["open:" + node] = "ok"
        except OSError as e:
            out["open:" + node] = err_name(e)

for p in ("/proc/self/net/dev", "/proc/net/dev"):
    try:
        with open(p) as f:
            out["read:" + p] = len(f.read())
    except OSError as e:
        out["read:" + p] = err_name(e)

with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        if k in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "Uid"):
            out[k] = v.strip()

with open("/run/mcugw/probe.txt.tmp", "w") as f:
    for k, v in out.items():
        f.write(f"{k}={v!r}\n")
os.rename("/run/mcugw/probe.txt.tmp", "/run/mcugw/probe.txt")
