#!/bin/sh
# "make install" into a staging directory (DESTDIR) puts every file where the
# packaging expects it, the installed binary runs, the units name it, and
# "make uninstall" takes everything away again.
# Usage: tests/check-install.sh MAKE /abs/path/to/the/built/rathole
set -u
cd "$(dirname "$0")/.."
make=${1:?usage: $0 MAKE BIN}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
problem() { echo "check-install: $*"; fail=$((fail + 1)); }

if ! $make --no-print-directory -s install DESTDIR="$tmp" PREFIX=/opt/rh >"$tmp.log" 2>&1; then
	cat "$tmp.log"; rm -f "$tmp.log"
	echo "check-install: make install failed"; exit 1
fi
rm -f "$tmp.log"
root="$tmp/opt/rh"
for f in bin/rathole share/man/man1/rathole.1 share/man/man5/rathole.toml.5 \
	lib/systemd/system/ratholes.service lib/systemd/system/ratholec.service \
	lib/systemd/system/ratholes@.service lib/systemd/system/ratholec@.service \
	lib/sysusers.d/rathole.conf lib/tmpfiles.d/rathole.conf \
	share/doc/rathole/examples/minimal/server.toml \
	share/doc/rathole/examples/systemd/README.md; do
	[ -f "$root/$f" ] || problem "missing $f"
done
[ -x "$root/share/doc/rathole/examples/tls/create_self_signed_cert.sh" ] ||
	problem "examples/tls/create_self_signed_cert.sh lost its execute bit"
out=$("$root/bin/rathole" --version 2>&1) || problem "installed binary: --version failed: $out"
case $out in "rathole "*) ;; *) problem "installed binary: --version printed \"$out\"" ;; esac
grep -q "^ExecStart=/opt/rh/bin/rathole --server /etc/rathole/server.toml$" \
	"$root/lib/systemd/system/ratholes.service" || problem "ratholes.service: ExecStart not rewritten to PREFIX"
stray=$(find "$tmp" -type f ! -path "$root/*")
[ -z "$stray" ] || problem "files outside PREFIX: $stray"

$make --no-print-directory -s uninstall DESTDIR="$tmp" PREFIX=/opt/rh >/dev/null 2>&1 || problem "make uninstall failed"
left=$(find "$tmp" -type f)
[ -z "$left" ] || problem "left after uninstall: $left"

if [ $fail -eq 0 ]; then
	echo "check-install: make install / uninstall OK ($(echo "$out" | head -1))"
else
	echo "check-install: $fail problems"
fi
[ $fail -eq 0 ]
