#!/bin/sh
# Runs each libFuzzer target given (build/fuzz/fuzz_NAME) for FUZZ_SECONDS,
# starting from its seed corpus tests/fuzz/corpus/NAME, the regression inputs
# tests/fuzz/regress/NAME and, for the TOML and config targets, the toml-test
# files in $TESTDATA. New interesting inputs go to build/fuzz/work/NAME (not
# into the repository); a crash leaves build/fuzz/artifacts/NAME-crash-*
# and fails the run: copy that file to tests/fuzz/regress/NAME/ with the fix.
here=$(dirname "$0")
secs=${FUZZ_SECONDS:-30}
out=build/fuzz
pass=0; fail=0; failed=""
for bin in "$@"; do
	name=$(basename "$bin"); name=${name#fuzz_}
	work=$out/work/$name
	mkdir -p "$work" "$out/artifacts"
	seeds="$here/corpus/$name"
	[ -d "$here/regress/$name" ] && seeds="$seeds $here/regress/$name"
	case $name in
	toml|config)
		[ -d "$TESTDATA/toml-test/valid" ] && seeds="$seeds $TESTDATA/toml-test/valid $TESTDATA/toml-test/invalid";;
	esac
	# -rss_limit_mb bounds memory; -max_len keeps inputs (and runs) small;
	# the time limit per input catches hangs in the loops of the targets
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
		-artifact_prefix="$out/artifacts/$name-" -print_final_stats=0 \
		"$work" $seeds >"$out/$name.log" 2>&1; then
		pass=$((pass + 1))
		printf '%-14s ok   %s\n' "$name" "$(grep -o 'cov: [0-9]*' "$out/$name.log" | tail -1), $(grep -c '' "$out/$name.log") log lines"
	else
		fail=$((fail + 1)); failed="$failed $name"
		printf '%-14s FAILED (see %s)\n' "$name" "$out/$name.log"
		grep -A40 'ERROR\|==ERROR\|runtime error\|deadly signal\|timeout' "$out/$name.log" | head -60
	fi
done
echo "fuzz: $pass passed, $fail failed${failed:+ (}${failed# }${failed:+)}"
[ $fail -eq 0 ]
