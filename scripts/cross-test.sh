#!/bin/sh
# Cross-builds rathole for 64-bit and 32-bit ARM with Debian's cross compilers
# and runs the unit tests of those builds under qemu-user: the code must stay
# portable to 32-bit targets (size_t, time_t, alignment) that routers use.
#
# Usage: scripts/cross-test.sh [--tools] [aarch64] [armhf]   (default: both)
# Installs what it needs (Debian/Ubuntu, as root or with sudo): the cross
# compilers, qemu-user, and OpenSSL for the target architectures (multiarch).
# --tools: only that (.ci/run, for the multi-architecture container images).
set -eu
cd "$(dirname "$0")/.."
tools_only=0
if [ "${1:-}" = --tools ]; then
	tools_only=1
	shift
fi
arches=${*:-aarch64 armhf}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# another apt or dpkg running holds the dpkg lock: wait up to 10 minutes for it
apt_lock="-o DPkg::Lock::Timeout=600"
apt_install() {
	DEBIAN_FRONTEND=noninteractive $sudo apt-get $apt_lock install -y -qq "$@"
}
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
# libssl-dev is Multi-Arch: same, so every architecture needs the very same
# version. When a mirror has a newer one for the host than for the targets
# (a security update not yet built or synced everywhere), pick the newest
# version that all of them have.
install_libssl() {
	if apt_install libssl-dev $foreign_ssl; then
		return 0
	fi
	echo "== libssl-dev: versions differ between architectures; looking for a common one"
	common=""
	for v in $(apt-cache madison libssl-dev | awk '{print $3}'); do
		ok=1
		for a in $debarches; do
			apt-cache madison "libssl-dev:$a" | awk '{print $3}' | grep -qxF "$v" || ok=0
		done
		[ $ok -eq 1 ] && { common=$v; break; }
	done
	[ -n "$common" ] || { echo "no libssl-dev version is available for amd64 and $debarches"; return 1; }
	pkgs="libssl-dev=$common libssl3=$common"
	for a in $debarches; do
		pkgs="$pkgs libssl-dev:$a=$common libssl3:$a=$common"
	done
	apt_install --allow-downgrades $pkgs
}

pkgs="qemu-user make"; debarches=""; foreign_ssl=""
for arch in $arches; do
	case $arch in
	aarch64) pkgs="$pkgs gcc-aarch64-linux-gnu"; debarch=arm64 ;;
	armhf) pkgs="$pkgs gcc-arm-linux-gnueabihf"; debarch=armhf ;;
	*) echo "unknown architecture $arch: use aarch64 or armhf"; exit 2 ;;
	esac
	debarches="$debarches $debarch"
	foreign_ssl="$foreign_ssl libssl-dev:$debarch"
done
missing=""
for p in $pkgs $foreign_ssl; do
	installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "== installing:$missing"
	for a in $debarches; do
		dpkg --print-foreign-architectures | grep -qx "$a" || $sudo dpkg --add-architecture "$a"
	done
	# a mirror in the middle of a sync may fail an index: go on with the rest
	$sudo apt-get $apt_lock update -qq || true
	apt_install $pkgs
	install_libssl
fi
if [ $tools_only -eq 1 ]; then
	echo "== cross-test: tools installed ($arches)"
	exit 0
fi

jobs=$(nproc 2>/dev/null || echo 2)
rc=0
for arch in $arches; do
	echo "== $arch: cross build and unit tests under qemu-user"
	make -j"$jobs" cross-test ARCH="$arch" || rc=1
done
[ $rc -eq 0 ] && echo "== cross-test: all passed ($arches)" || echo "== cross-test: FAILED"
exit $rc
