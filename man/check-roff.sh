#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Formats a generated man page and fails on any warning from groff or man.
# Usage: check-roff.sh MAN PAGE
set -eu
out=$(LC_ALL=C.UTF-8 MANWIDTH=80 "$1" --warnings -E UTF-8 -l "$2" 2>&1 >/dev/null)
if [ -n "$out" ]; then
        printf '%s\n' "$out"
        exit 1
fi
echo "PASS: $2"
