#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The layering of src/, checked on every #include "dir/file.h" (docs/architecture.md).

- The daemon library lives in one folder per layer; a layer may include its own headers and
  those of the layers it is declared to use (LAYERS below), never anything above it.
- basic/ may be included by everything; the protocol core (proto/, include/mcugw/) by the device
  SDK and the link; ctl/ (the control socket) by nothing but the daemon and mcugwctl; daemon/ (the
  gateway that wires everything) by nothing but main.c.
- No include cycles between modules (foo.c includes bar.h while bar.c includes foo.h).
- Every include of a project header names its folder, so a reader sees the dependency.

EXCEPTIONS lists the edges that are known debts with the issue that removes them; an exception
that is no longer needed is an error too, so the list can only shrink.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")

# layer -> the layers it may use (besides itself and basic)
LAYERS = {
    "basic": set(),
    "proto": set(),
    "device": {"proto"},
    "store": set(),
    "audit": {"store"},
    "devices": {"store", "audit"},
    "link": {"store", "audit", "devices", "proto", "device"},
    "cloud": {"store", "audit", "devices"},
    "ota": {"store", "audit", "devices", "link", "cloud"},
    "monitor": {"store", "audit", "devices", "link", "cloud", "ota"},
    "ctl": {"store", "audit"},
    "daemon": {"store", "audit", "devices", "link", "cloud", "ota", "monitor", "ctl"},
    # front ends
    "mcugwctl": {"ctl", "devices", "cloud"},
    "sim": {"device", "proto", "devices", "cloud"},
}

# (file, included header) -> why it is still allowed
EXCEPTIONS = {
    ("ota/ota.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("ota/ota.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("ota/ota.c", "ctl/ctlproto.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("ota/ota_jobs.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("link/ble.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("link/link.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("monitor/baseline.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("monitor/baseline.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/baseline.c", "ctl/ctlproto.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/defender.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/metrics.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/remedy.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("monitor/remedy.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/remedy.c", "ctl/ctlproto.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("monitor/rules.h", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("store/db.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("cloud/auditexport.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("cloud/provision.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("cloud/provision.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("cloud/provision.c", "ctl/ctlproto.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("cloud/relay.c", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("devices/enroll.h", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("devices/onboard.h", "daemon/conf.h"):
        "modules take the whole struct conf; per-module options (#12.1)",
    ("devices/registry.c", "ctl/control.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
    ("devices/registry.c", "ctl/ctlproto.h"):
        "the domain registers its own control commands; *-ctl.c files (#12.3)",
}
# module cycles that are known debts
CYCLE_EXCEPTIONS = {
    ("cloud/provision", "cloud/relay"):
        "relay is the hub of the cloud session; one session owner (#12.2)",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SYSTEM_LOCAL = {"config.h"}  # generated by meson


def sources():
    for dirpath, _, names in os.walk(SRC):
        for n in sorted(names):
            if n.endswith((".c", ".h")):
                yield os.path.relpath(os.path.join(dirpath, n), SRC)


def main():
    errors = []
    used = set()
    used_cycles = set()
    deps = {}  # module (layer/name) -> set of modules whose header it includes
    for path in sources():
        layer = path.split(os.sep)[0]
        if layer not in LAYERS:
            errors.append(f"src/{path}: folder {layer}/ is not a declared layer")
            continue
        module = os.path.splitext(path)[0]
        text = open(os.path.join(SRC, path), encoding="utf-8").read()
        for inc in INCLUDE.findall(text):
            if inc in SYSTEM_LOCAL or inc.startswith("mcugw/"):
                if inc.startswith("mcugw/") and layer not in ("proto", "device", "link", "sim",
                                                              "daemon", "ota"):
                    if (path, inc) in EXCEPTIONS:
                        used.add((path, inc))
                    else:
                        errors.append(f"src/{path}: includes the wire protocol header {inc}")
                continue
            parts = inc.split("/")
            if len(parts) != 2:
                # a header beside the file in the same folder (the C99 core and the ports)
                if layer in ("proto", "device") and os.path.exists(
                        os.path.join(SRC, os.path.dirname(path), inc)):
                    continue
                if layer in ("link", "sim", "device") and inc in (
                        "posix_openssl.h", "psa_mbedtls.h", "proto_internal.h"):
                    continue
                errors.append(f'src/{path}: #include "{inc}" must name its folder')
                continue
            target = parts[0]
            if not os.path.exists(os.path.join(SRC, inc)):
                errors.append(f'src/{path}: #include "{inc}": no such header')
                continue
            deps.setdefault(module, set()).add(os.path.splitext(inc)[0])
            if target in ("basic", layer) or target in LAYERS[layer]:
                continue
            if (path, inc) in EXCEPTIONS:
                used.add((path, inc))
                continue
            errors.append(f"src/{path}: layer {layer}/ must not include {inc}")
    # module-level cycles
    for a, targets in deps.items():
        for b in targets:
            if b != a and a in deps.get(b, set()) and a < b:
                if (a, b) in CYCLE_EXCEPTIONS:
                    used_cycles.add((a, b))
                else:
                    errors.append(f"include cycle: {a}.[ch] and {b}.[ch] include each other")
    for key, why in CYCLE_EXCEPTIONS.items():
        if key not in used_cycles:
            errors.append(f"cycle exception no longer needed, remove it: {key} ({why})")
    for key, why in EXCEPTIONS.items():
        if key not in used:
            errors.append(f"exception no longer needed, remove it: {key[0]} -> {key[1]} ({why})")
    for e in errors:
        print(e)
    print(f"check-layers: {len(errors)} problem(s), {len(used)} known exception(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
