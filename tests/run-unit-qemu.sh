#!/bin/sh
# Runs the unit tests of a cross build under qemu-user, and the binary's
# --version. QEMU_LD_PREFIX tells qemu where the target's dynamic loader and
# libraries are: "/" for Debian's multiarch packages (libc6:arm64, libssl3:arm64),
# see cross-test in the Makefile.
# Usage: QEMU_LD_PREFIX=/ tests/run-unit-qemu.sh qemu-aarch64 build/aarch64-linux-gnu-release
set -u
qemu=${1:?usage: $0 QEMU BUILDDIR}
dir=${2:?usage: $0 QEMU BUILDDIR}
command -v "$qemu" >/dev/null 2>&1 ||
	{ echo "$qemu is missing: apt-get install qemu-user (or run scripts/cross-test.sh)"; exit 1; }
: "${QEMU_LD_PREFIX:?set QEMU_LD_PREFIX to the target's library root, e.g. / (multiarch)}"
export QEMU_LD_PREFIX
pass=0; fail=0; failed=""
if v=$("$qemu" "$dir/rathole" --version 2>&1); then
	echo "$dir/rathole --version under $qemu: $v"
else
	echo "$dir/rathole --version under $qemu failed: $v"; fail=1; failed=" rathole--version"
fi
for t in "$dir"/tests/test_*; do
	case $t in *.o|*.d) continue ;; esac
	[ -x "$t" ] || continue
	if "$qemu" "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed $(basename "$t")"; fi
done
echo "unit under $qemu: $pass passed, $fail failed${failed:+ (}${failed# }${failed:+)}"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
