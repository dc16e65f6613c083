#!/bin/sh
# Checks the systemd units in examples/systemd/ with systemd-analyze (which
# needs no running systemd): "verify" on copies whose ExecStart is the binary
# given as $1 (verify insists that it exists) and whose Documentation= man
# pages are found in man/, and "security --offline" so that the sandbox does
# not silently erode (exposure at most 2.0 of 10).
# Usage: tests/check-systemd.sh /abs/path/to/rathole
set -u
cd "$(dirname "$0")/.."
bin=${1:?usage: $0 /path/to/rathole}
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "check-systemd: SKIPPED: systemd-analyze is not installed (apt-get install systemd)"
	exit 0
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/units" "$tmp/man/man1" "$tmp/man/man5"
cp man/rathole.1 "$tmp/man/man1/"
cp man/rathole.toml.5 "$tmp/man/man5/"
for f in examples/systemd/*.service; do
	sed "s|/usr/bin/rathole|$bin|g" "$f" > "$tmp/units/$(basename "$f")"
done
man=no
command -v man >/dev/null 2>&1 && man=yes
pass=0; fail=0
for u in "$tmp"/units/*.service; do
	name=$(basename "$u")
	if ! out=$(MANPATH="$tmp/man" systemd-analyze verify --man=$man "$u" 2>&1) || [ -n "$out" ]; then
		echo "check-systemd: $name: systemd-analyze verify:"; echo "$out"
		fail=$((fail + 1)); continue
	fi
	if ! out=$(systemd-analyze security --offline=yes --threshold=20 "$u" 2>&1); then
		echo "check-systemd: $name: exposure above 2.0:"; echo "$out" | grep -v '✓'
		fail=$((fail + 1)); continue
	fi
	pass=$((pass + 1))
done
echo "check-systemd: $pass units verified, $fail failed"
[ $fail -eq 0 ]
