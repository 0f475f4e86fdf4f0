#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Keeps the documentation in step with the code it describes.

- every key of conf_keys[] (src/daemon/conf.c) is described in mcugw.conf.5.scd under its section,
  with its default, and says "Needs a restart" exactly when the table says so;
- etc/mcugw/mcugw.conf lists every key, commented out at its default;
- every verb of verbs[] (src/mcugwctl/) is described in mcugwctl.1.scd, with each of its options,
  and completed by completion/mcugwctl: the command word in its toplevel or groups list, each of
  its options in the command's arm of `case "$cmd $sub"`, every global option in its opts;
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
    if msg in failures:
        return
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

# --- mcugwctl verbs ---------------------------------------------------------------------------
# The client may be split into several files (src/mcugwctl/*.c) around one verb table.
ctl_dir = os.path.join(root, "src", "mcugwctl")
ctl_c = "\n".join(read("src", "mcugwctl", f) for f in sorted(os.listdir(ctl_dir))
                  if f.endswith((".c", ".h")))
vt = re.search(r"struct verb verbs\[\]\s*=\s*\{(.*?)\n\};", ctl_c, re.S)
verbs = []    # (group or None, name, options table name or None)
if not vt:
    fail("cannot find verbs[] in src/mcugwctl/")
else:
    for group, name, opts in re.findall(
            r'\{\s*(NULL|"[\w-]+")\s*,\s*"([\w-]+)"\s*,\s*\w+\s*,\s*(?:"(?:[^"\\]|\\.)*"\s*)+,'
            r'\s*(NULL|\w+)\s*\}', vt.group(1)):
        verbs.append((None if group == "NULL" else group.strip('"'), name,
                      None if opts == "NULL" else opts))
    if len(verbs) != len(re.findall(r'\{\s*(?:NULL|"[\w-]+")\s*,\s*"[\w-]+"\s*,', vt.group(1))):
        fail("could not read every entry of verbs[] (group, name, fn, help, opts); "
             "update check-man.py")
    if not verbs:
        fail("no verbs read from verbs[]; update check-man.py")


def option_names(table):
    """The long option names of `static const struct option TABLE[] = {…}`."""
    m = re.search(r"struct option %s\[\]\s*=\s*\{(.*?)\};" % re.escape(table), ctl_c, re.S)
    if not m:
        fail("cannot find the option table %s in src/mcugwctl/" % table)
        return []
    return re.findall(r'\{\s*"([\w-]+)"\s*,', m.group(1))


page = read("man", "mcugwctl.1.scd")
commands = re.search(r"^# COMMANDS\n(.*?)(?=^# |\Z)", page, re.S | re.M)
commands = commands.group(1) if commands else ""
options = re.search(r"^# OPTIONS\n(.*?)(?=^# |\Z)", page, re.S | re.M)
options = options.group(1) if options else ""

# The completion: the top-level words, the groups' words, the arms of `case "$cmd $sub"`.
completion = read("completion", "mcugwctl")
m = re.search(r'local toplevel="([^"]*)"', completion)
toplevel = set(m.group(1).split()) if m else set()
if not m:
    fail("completion/mcugwctl: no 'local toplevel=\"…\"'")
groups = {g: set(w.split()) for g, w in re.findall(r'\[([\w-]+)\]="([^"]*)"', completion)}
m = re.search(r'local opts="([^"]*)"', completion)
global_words = set(m.group(1).split()) if m else set()
arms = []     # ([patterns], body)
m = re.search(r'case "\$cmd \$sub" in\n(.*?)\n\s*esac', completion, re.S)
if not m:
    fail('completion/mcugwctl: no case "$cmd $sub" in … esac')
else:
    for pats, body in re.findall(r'^\s*((?:"[^"]*"\*?\|?)+)\)\n(.*?);;', m.group(1), re.S | re.M):
        arms.append((re.findall(r'"([^"]*)"(\*?)', pats), body))


def arm_for(word):
    for pats, body in arms:
        for text, star in pats:
            if word == text or (star and word.startswith(text)):
                return body
    return None


for group, name, opts in verbs:
    full = "%s %s" % (group, name) if group else name
    if not re.search(r"^\*%s\*" % re.escape(full), commands, re.M):
        fail("mcugwctl(1) COMMANDS does not describe '%s'" % full)
    if group:
        if group not in toplevel:
            fail("completion/mcugwctl: the group '%s' is not in toplevel" % group)
        if name not in groups.get(group, set()):
            fail("completion/mcugwctl: '%s' is not in groups[%s]" % (name, group))
    elif name not in toplevel:
        fail("completion/mcugwctl: '%s' is not in toplevel" % name)
    for opt in option_names(opts) if opts else []:
        para = re.search(r"^\*%s\*(.*?)(?=^\*|\Z)" % re.escape(full), commands, re.S | re.M)
        if para and "--" + opt not in para.group(0):
            fail("mcugwctl(1) does not mention --%s of '%s'" % (opt, full))
        body = arm_for("%s %s" % (group, name) if group else name + " ")
        if body is None or not re.search(r"(?<![\w-])--%s(?![\w-])" % re.escape(opt), body):
            fail("completion/mcugwctl does not offer --%s for '%s'" % (opt, full))

for opt in option_names("global_opts"):
    if "--" + opt not in global_words:
        fail("completion/mcugwctl: the global option --%s is not in opts" % opt)
    if not re.search(r"\*--%s\*" % re.escape(opt), options):
        fail("mcugwctl(1) OPTIONS does not describe --%s" % opt)

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
