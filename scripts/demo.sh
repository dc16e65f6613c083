#!/bin/sh
# Exposes a local web page through the tunnel, all on this machine:
#   a web server on 127.0.0.1:8080  <-  rathole client  ==tunnel==  rathole server  <-  you, on 127.0.0.1:5202
# using examples/unified/config.toml. Stops everything on Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
bin=${RATHOLE:-./rathole}
cfg=examples/unified/config.toml
dir=$(mktemp -d)
mkdir "$dir/www"
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

echo "<h1>Hello from behind the NAT</h1>" > "$dir/www/index.html"
# configs hold tokens: rathole warns about files others can read
install -m 600 "$cfg" "$dir/config.toml"
cfg=$dir/config.toml
fetch() {
	python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())' "$1"
}
# wait up to 10 s for each of: the local web server, then the tunnel
wait_for() {
	i=0
	until page=$(fetch "$1" 2>/dev/null); do
		i=$((i + 1))
		[ $i -lt 50 ] || { echo "demo: $2" >&2; exit 1; }
		sleep 0.2
	done
}

python3 -m http.server 8080 --bind 127.0.0.1 --directory "$dir/www" >/dev/null 2>&1 &
pids="$pids $!"
wait_for http://127.0.0.1:8080/ "the local web server did not start (is 127.0.0.1:8080 taken?)"
"$bin" --server "$cfg" & pids="$pids $!"
"$bin" --client "$cfg" & pids="$pids $!"
wait_for http://127.0.0.1:5202/ "the tunnel did not come up"
echo
echo "demo: http://127.0.0.1:5202/ (the server's service port) answered through the tunnel:"
echo "  $page"
echo "demo: the tunnel stays up; press Ctrl-C to stop."
wait
