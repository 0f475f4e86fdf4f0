#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Keeps the documentation in step with the code it describes.

- every key of conf_keys[] (src/daemon/conf.c) is described in mcugw.conf.5.scd under its section,
  with its default, and says "Needs a restart" exactly when the table says so;
- etc/mcugw/mcugw.conf lists every key, commented out at its default;
- every verb of verbs[] (src/mcugwctl/mcugwctl.c) is described in mcugwctl.1.scd and completed by
  completion/mcugwctl;
- every long option of mcugw-sim (src/sim/mcugw-sim.c, once it exists) is in mcugw-sim.1.scd.

Usage: check-man.py SOURCE-ROOT
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
failures = []


def read(*p):
    with open(os.path.join(root, *p), encoding="utf-8") as f:
        return f.read()


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


# --- configuration keys ---------------------------------------------------------------------
conf_c = read("src", "daemon", "conf.c")
table = re.search(r"conf_keys\[\]\s*=\s*\{(.*?)\n\};", conf_c, re.S)
if not table:
    fail("cannot find conf_keys[] in src/daemon/conf.c")
    keys = []
else:
    body = re.sub(r"/\*.*?\*/", "", table.group(1), flags=re.S)
    keys = re.findall(r'\{\s*"(\w+)"\s*,\s*"(\w+)"\s*,\s*\w+\s*,\s*\w+\s*,\s*F\(\s*[\w.]+\s*\)\s*,'
                      r'\s*(.*?)\s*,\s*(true|false)\s*\}', body, re.S)
    if len(keys) != body.count("F("):
        fail("could not read every entry of conf_keys[] (read %d of %d); update check-man.py"
             % (len(keys), body.count("F(")))

# String macros a default may use (#define NAME "value" in the headers); MCUGW_SYSCONFDIR is
# /etc in packages.
macros = {"MCUGW_SYSCONFDIR": "/etc"}
for d in ("include", "src"):
    for dirpath, _, files in os.walk(os.path.join(root, d)):
        for f in files:
            if f.endswith(".h"):
                with open(os.path.join(dirpath, f), encoding="utf-8", errors="replace") as h:
                    for name, value in re.findall(r'^#define\s+(\w+)\s+"([^"]*)"\s*$', h.read(),
                                                  re.M):
                        macros.setdefault(name, value)


def default_value(expr):
    """The string a C default expression (string literals and macros) stands for."""
    return "".join(lit if not mac else macros.get(mac, "?" + mac)
                   for lit, mac in re.findall(r'"((?:[^"\\]|\\.)*)"|([A-Z_][A-Z0-9_]*)', expr))


page = read("man", "mcugw.conf.5.scd")
# Split the page into sections: "# [Name] SECTION" headings.
sections = {}
for m in re.finditer(r"^# \[(\w+)\] SECTION\n(.*?)(?=^# |\Z)", page, re.S | re.M):
    sections[m.group(1)] = m.group(2)

for section, key, default, restart in keys:
    text = sections.get(section)
    if text is None:
        fail("mcugw.conf(5) has no '# [%s] SECTION' (key %s=)" % (section, key))
        continue
    m = re.search(r"^\*%s=\*\n(.*?)(?=^\*\w+=\*$|\Z)" % re.escape(key), text, re.S | re.M)
    if not m:
        fail("mcugw.conf(5) does not describe [%s] %s=" % (section, key))
        continue
    para = re.sub(r"\s+", " ", m.group(1))
    if default != "NULL":
        value = default_value(default)
        if not re.search(r"Default: [*_]?%s[*_]?\." % re.escape(value), para):
            fail("mcugw.conf(5): [%s] %s= should say 'Default: %s.'" % (section, key, value))
    says_restart = "Needs a restart." in para
    if says_restart != (restart == "true"):
        fail("mcugw.conf(5): [%s] %s= %s say 'Needs a restart.'"
             % (section, key, "should" if restart == "true" else "should not"))

# The shipped configuration lists every key, commented out at its default, in its section.
shipped = read("etc", "mcugw", "mcugw.conf")
shipped_sections = {}
for m in re.finditer(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", shipped, re.S | re.M):
    shipped_sections[m.group(1)] = m.group(2)
for section, key, default, restart in keys:
    value = "" if default == "NULL" else default_value(default)
    line = "#%s=%s" % (key, value)
    if not re.search(r"^%s$" % re.escape(line), shipped_sections.get(section, ""), re.M):
        fail("etc/mcugw/mcugw.conf: [%s] lacks the line '%s'" % (section, line))

# --- mcugwctl verbs --------------------------------------------------------------------------
ctl_c = read("src", "mcugwctl", "mcugwctl.c")
vt = re.search(r"struct verb verbs\[\]\s*=\s*\{(.*?)\n\};", ctl_c, re.S)
verbs = []
if not vt:
    fail("cannot find verbs[] in src/mcugwctl/mcugwctl.c")
else:
    for group, name in re.findall(r'\{\s*(NULL|"[\w-]+")\s*,\s*"([\w-]+)"\s*,', vt.group(1)):
        verbs.append((None if group == "NULL" else group.strip('"'), name))
    if not verbs:
        fail("no verbs read from verbs[]; update check-man.py")

page = read("man", "mcugwctl.1.scd")
commands = re.search(r"^# COMMANDS\n(.*?)(?=^# |\Z)", page, re.S | re.M)
commands = commands.group(1) if commands else ""
completion = read("completion", "mcugwctl")
for group, name in verbs:
    full = "%s %s" % (group, name) if group else name
    if not re.search(r"^\*%s\*" % re.escape(full), commands, re.M):
        fail("mcugwctl(1) COMMANDS does not describe '%s'" % full)
    for word in filter(None, (group, name)):
        if not re.search(r"\b%s\b" % re.escape(word), completion):
            fail("completion/mcugwctl does not complete '%s'" % word)

# --- mcugw-sim options ----------------------------------------------------------------------
n_sim = 0
if os.path.exists(os.path.join(root, "src", "sim", "mcugw-sim.c")):
    sim_c = read("src", "sim", "mcugw-sim.c")
    ot = re.search(r"struct option opts\[\]\s*=\s*\{(.*?)\n\s*\};", sim_c, re.S)
    page = read("man", "mcugw-sim.1.scd")
    if not ot:
        fail("cannot find opts[] in src/sim/mcugw-sim.c")
    else:
        for name in re.findall(r'\{\s*"([\w-]+)"\s*,', ot.group(1)):
            n_sim += 1
            if not re.search(r"^\*(?:-\w\*, \*)?--%s\*" % re.escape(name), page, re.M):
                fail("mcugw-sim(1) does not describe --%s" % name)

print("%d keys, %d verbs, %d simulator options checked" % (len(keys), len(verbs), n_sim))
if failures:
    sys.exit(1)
print("PASS")
