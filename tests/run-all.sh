#!/bin/sh
# Runs every unit test binary given as an argument, then the integration suite,
# and prints one closing summary line. Exit status is non-zero if anything failed.
here=$(dirname "$0")
start=$(date +%s)
"$here/run-unit.sh" "$@"
unit_rc=$?
# --durations: the slowest tests are listed with their time on every run
${PYTHON:-/usr/bin/python3} -m pytest -q -p no:cacheprovider --durations=12 "$here/integration" $PYTEST_ARGS
int_rc=$?
secs=$(( $(date +%s) - start ))
if [ $unit_rc -eq 0 ] && [ $int_rc -eq 0 ]; then
	echo "== make test: PASSED (unit and integration) in ${secs}s =="
	exit 0
fi
echo "== make test: FAILED (unit rc=$unit_rc, integration rc=$int_rc) in ${secs}s =="
exit 1
