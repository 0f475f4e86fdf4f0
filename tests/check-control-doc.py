#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""docs/control-protocol.md documents every control command with its tier.

The command tables are read from the C sources (every `struct control_command NAME[] = {…}` in
src/); the documentation's table is the one under "## Commands", one row per command:
| `name` | read or admin | args | data |
Fails when the document lacks a command, lists one that does not exist, or states another tier.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
DOC = os.path.join(ROOT, "docs", "control-protocol.md")

TABLE = re.compile(r"struct\s+control_command\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\};", re.S)
ENTRY = re.compile(r'\{\s*"([^"]+)"\s*,\s*CONTROL_(\w+)\s*,')
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([^|]*?)\s*\|")
TIERS = {"READ": "read", "ADMIN": "admin"}


def code_commands(errors):
    cmds = {}
    for dirpath, _, names in os.walk(SRC):
        for n in sorted(names):
            if not n.endswith(".c"):
                continue
            path = os.path.join(dirpath, n)
            rel = os.path.relpath(path, ROOT)
            text = open(path, encoding="utf-8").read()
            for table in TABLE.findall(text):
                for name, level in ENTRY.findall(table):
                    tier = TIERS.get(level)
                    if tier is None:
                        errors.append(f"{rel}: {name}: unexpected tier CONTROL_{level}")
                        continue
                    if name in cmds:
                        errors.append(f"{rel}: {name} registered twice (also {cmds[name][1]})")
                    cmds[name] = (tier, rel)
    return cmds


def doc_commands(errors):
    cmds = {}
    section = None
    for i, line in enumerate(open(DOC, encoding="utf-8"), 1):
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        if section != "Commands":
            continue
        m = ROW.match(line)
        if not m:
            continue
        name, tier = m.group(1), m.group(2)
        where = f"docs/control-protocol.md:{i}"
        if name in cmds:
            errors.append(f"{where}: {name} documented twice")
        cmds[name] = (tier, where)
    return cmds


def main():
    errors = []
    code = code_commands(errors)
    doc = doc_commands(errors)
    if not code:
        errors.append("no command table found in src/")
    for name, (tier, where) in sorted(code.items()):
        if name not in doc:
            errors.append(f"{where}: {name} ({tier}) is not documented in docs/control-protocol.md")
        elif doc[name][0] != tier:
            errors.append(f"{doc[name][1]}: {name} is documented as '{doc[name][0]}', "
                          f"but {where} registers it as {tier}")
    for name, (tier, where) in sorted(doc.items()):
        if name not in code:
            errors.append(f"{where}: {name} is documented but no such command is registered")
    for e in errors:
        print(e)
    print(f"check-control-doc: {len(code)} command(s), {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
