#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The hardening budget of mcugwd.service: `systemd-analyze security --offline=yes` must report an
# overall exposure at or below the limit (PRODUCT.md C7: 2.0).
#
# Usage: test-unit-security.sh UNIT-FILE [LIMIT]
# --offline=yes (systemd >= 250) scores the unit file itself, without a running systemd, so this
# works in containers and CI. Older systemd-analyze cannot do that: the test is then skipped
# (exit 77), never passed on a guess.
set -euo pipefail

unit=${1:?usage: test-unit-security.sh UNIT-FILE [LIMIT]}
limit=${2:-2.0}
analyze=${SYSTEMD_ANALYZE:-systemd-analyze}

if ! command -v "$analyze" >/dev/null; then
        echo "SKIP: systemd-analyze not found"
        exit 77
fi
if ! "$analyze" security --help 2>/dev/null | grep -q -- '--offline'; then
        echo "SKIP: $("$analyze" --version | head -1) has no 'security --offline'"
        exit 77
fi

# systemd-analyze names the unit after the file; give it the right name even when the build
# passes a copy. The exit status is not the verdict (it is non-zero above --threshold only), the
# printed figure is.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$unit" "$tmp/mcugwd.service"
out=$(cd "$tmp" && SYSTEMD_COLORS=0 "$analyze" security --offline=yes --no-pager \
        mcugwd.service 2>&1) || true
line=$(grep -E 'Overall exposure level for' <<<"$out" || true)
if [[ -z $line ]]; then
        echo "FAIL: no exposure figure in the output of systemd-analyze:"
        echo "$out"
        exit 1
fi
figure=$(sed -E 's/.*: ([0-9]+(\.[0-9]+)?).*/\1/' <<<"$line")
if ! [[ $figure =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
        echo "FAIL: cannot read the figure in: $line"
        exit 1
fi
# Show what still counts against the unit, for whoever has to bring the figure down.
grep -E '^✗' <<<"$out" | sed -E 's/ {2,}/  /g' || true
echo "$line"
if awk -v f="$figure" -v l="$limit" 'BEGIN { exit !(f <= l) }'; then
        echo "PASS: exposure $figure <= $limit"
        exit 0
fi
echo "FAIL: exposure $figure > $limit"
exit 1
