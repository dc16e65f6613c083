#!/bin/sh
# Builds the Debian package (dpkg-buildpackage -us -uc -b) from a copy of the
# tree, so that the build leaves the work tree and its parent alone, then
# checks it: its file list, and that the packaged binary runs.
# Usage: scripts/build-deb.sh [OUTDIR]   (default build/deb; needs debhelper)
set -eu
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-build/deb}" && cd "${1:-build/deb}" && pwd)
for tool in dpkg-buildpackage dh; do
	command -v $tool >/dev/null 2>&1 ||
		{ echo "build-deb: $tool is missing: apt-get install dpkg-dev debhelper"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/rathole"
# the sources only: no build products, no git metadata
tar --exclude=./build --exclude=./.git --exclude=./rathole --exclude=./rathole-static \
	--exclude='*.o' --exclude=__pycache__ -cf - . | tar -xf - -C "$tmp/rathole"
echo "== building the package in $tmp"
(cd "$tmp/rathole" && dpkg-buildpackage -us -uc -b -j"$(nproc 2>/dev/null || echo 2)") \
	>"$tmp/build.log" 2>&1 || { tail -50 "$tmp/build.log"; echo "build-deb: dpkg-buildpackage failed"; exit 1; }
deb=$(ls "$tmp"/rathole_*.deb)
cp "$deb" "$out/"
deb="$out/$(basename "$deb")"

# the contents
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$tmp/files"
fail=0
for f in /usr/bin/rathole /usr/share/man/man1/rathole.1.gz /usr/share/man/man5/rathole.toml.5.gz \
	/lib/systemd/system/ratholes.service /lib/systemd/system/ratholec.service \
	/lib/systemd/system/ratholes@.service /lib/systemd/system/ratholec@.service \
	/usr/lib/sysusers.d/rathole.conf /usr/lib/tmpfiles.d/rathole.conf \
	/usr/share/doc/rathole/examples/minimal/server.toml /usr/share/doc/rathole/README.md.gz; do
	grep -qx "$f" "$tmp/files" || { echo "build-deb: the package lacks $f"; fail=1; }
done
# the packaged binary runs and says the changelog's version
dpkg-deb -x "$deb" "$tmp/root"
version=$("$tmp/root/usr/bin/rathole" --version) || { echo "build-deb: the packaged binary does not run"; exit 1; }
want=$(cd "$tmp/rathole" && dpkg-parsechangelog -S Version)
[ "$version" = "rathole $want" ] ||
	{ echo "build-deb: the binary says \"$version\", debian/changelog says $want"; fail=1; }
grep -q "^ExecStart=/usr/bin/rathole " "$tmp/root/lib/systemd/system/ratholes.service" ||
	{ echo "build-deb: ratholes.service does not run /usr/bin/rathole"; fail=1; }
# OpenSSL is dlopen()ed, so the dependency on it is ours to declare
dpkg-deb -f "$deb" Depends | grep -q "libssl3" ||
	{ echo "build-deb: the package does not depend on OpenSSL (libssl3)"; fail=1; }
[ $fail -eq 0 ] || exit 1
echo "== $(basename "$deb"): $(wc -l < "$tmp/files") entries, $(du -k "$deb" | cut -f1) KiB; packaged binary: $version"
echo "   Depends: $(dpkg-deb -f "$deb" Depends)"
