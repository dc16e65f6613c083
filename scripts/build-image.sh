#!/bin/sh
# Builds the container image (Containerfile) from a static binary, or the
# manifest list of several architectures. Called by "make image" and
# "make images", which build the static binaries first.
#
# Usage: scripts/build-image.sh build ARCH BINARY
#        scripts/build-image.sh manifest ARCH...
# ARCH: amd64, aarch64 (arm64) or armhf. Environment:
#   ENGINE     the engine command, global options included ("podman --root DIR");
#              default podman, else docker
#   IMAGE      the image name (rathole); tags are IMAGE:VERSION-ARCH, IMAGE:latest
#              for the build host's architecture, and IMAGE:VERSION for the list
#   VERSION    the version label and tag (the Makefile's)
#   CA_BUNDLE  the CA certificates to copy in (/etc/ssl/certs/ca-certificates.crt)
#   IMAGE_SOURCE  the source label (default: the git remote "origin", if https)
set -eu
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-rathole}
VERSION=${VERSION:?VERSION is not set (make image sets it)}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -z "${ENGINE:-}" ]; then
	if command -v podman >/dev/null 2>&1; then ENGINE=podman
	elif command -v docker >/dev/null 2>&1; then ENGINE=docker
	else echo "build-image: neither podman nor docker is installed (apt-get install podman)" >&2; exit 1
	fi
fi
# the engine's own name, without its options
engine_name=$(basename "${ENGINE%% *}")

# An architecture's tag suffix and OCI platform, in $tag and $platform.
set_arch() {
	case $1 in
	amd64|x86_64) tag=amd64 platform=linux/amd64 ;;
	aarch64|arm64) tag=arm64 platform=linux/arm64 ;;
	armhf|arm) tag=armhf platform=linux/arm/v7 ;;	# Debian armhf: ARMv7, hard float
	*) echo "build-image: unknown architecture $1 (amd64, aarch64 or armhf)" >&2; exit 2 ;;
	esac
}

host_tag() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	armv7l|armv8l) echo armhf ;;
	*) uname -m ;;
	esac
}

# The https address of the git remote, without credentials; nothing otherwise.
source_url() {
	if [ -n "${IMAGE_SOURCE:-}" ]; then
		echo "$IMAGE_SOURCE"
		return
	fi
	url=$(git remote get-url origin 2>/dev/null) || return 0
	case $url in
	https://*) echo "$url" | sed 's|^https://[^/@]*@|https://|' ;;
	esac
}

# The passwd, group and nsswitch.conf of the image.
write_etc() {
	cat >"$1/passwd" <<-EOF
	root:x:0:0:root:/root:/sbin/nologin
	rathole:x:10001:10001:rathole:/nonexistent:/sbin/nologin
	EOF
	cat >"$1/group" <<-EOF
	root:x:0:
	rathole:x:10001:
	EOF
	cat >"$1/nsswitch.conf" <<-EOF
	passwd: files
	group: files
	hosts: files dns
	EOF
}

build() {
	bin=$2
	set_arch "$1"
	[ -f "$bin" ] || { echo "build-image: $bin is missing (make static)" >&2; exit 1; }
	[ -s "$CA_BUNDLE" ] || { echo "build-image: no CA bundle at $CA_BUNDLE" \
		"(apt-get install ca-certificates, or set CA_BUNDLE)" >&2; exit 1; }
	ctx=build/image/$(basename "$IMAGE")-$tag
	rm -rf "$ctx"
	mkdir -p "$ctx/config"
	install -m 0755 "$bin" "$ctx/rathole"
	install -m 0644 "$CA_BUNDLE" "$ctx/ca-certificates.crt"
	write_etc "$ctx"
	chmod 0644 "$ctx/passwd" "$ctx/group" "$ctx/nsswitch.conf"

	# labels that depend on where it is built: only when they are known
	set -- --build-arg "VERSION=$VERSION"
	rev=$(git rev-parse HEAD 2>/dev/null) && set -- "$@" --label "org.opencontainers.image.revision=$rev"
	src=$(source_url)
	[ -n "$src" ] && set -- "$@" --label "org.opencontainers.image.source=$src"
	set -- "$@" -t "$IMAGE:$VERSION-$tag"
	[ "$tag" = "$(host_tag)" ] && set -- "$@" -t "$IMAGE:latest"

	echo "== $IMAGE:$VERSION-$tag ($platform) from $bin, with $engine_name"
	# shellcheck disable=SC2086 # ENGINE carries the engine's global options
	$ENGINE build --platform "$platform" -f Containerfile "$@" "$ctx"
	size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE:$VERSION-$tag")
	echo "== $IMAGE:$VERSION-$tag: $size bytes"
}

# The manifest list IMAGE:VERSION of the images IMAGE:VERSION-<arch>, and a
# copy of it as an OCI image layout (an image index) in build/image/, which
# skopeo or "podman manifest push" take to any registry.
manifest() {
	list=$IMAGE:$VERSION
	if [ "$engine_name" != podman ]; then
		echo "build-image: the images are built; a manifest list of local images needs podman" \
			"($engine_name manifest create takes only pushed images: push" \
			"$IMAGE:$VERSION-<arch> first, then $engine_name manifest create $list ...)" >&2
		exit 1
	fi
	# a list of the same name from an earlier run goes first
	if $ENGINE manifest exists "$list" 2>/dev/null; then
		$ENGINE manifest rm "$list" >/dev/null
	fi
	$ENGINE manifest create "$list" >/dev/null
	for arch in "$@"; do
		set_arch "$arch"
		# by ID: an unqualified name would be looked up as docker.io/library/...
		id=$($ENGINE image inspect --format '{{.Id}}' "$IMAGE:$VERSION-$tag")
		$ENGINE manifest add "$list" "containers-storage:$id" >/dev/null
		echo "== manifest list $list: + $IMAGE:$VERSION-$tag ($platform)"
	done
	layout=build/image/$(basename "$IMAGE")-$VERSION.oci
	rm -rf "$layout"
	$ENGINE manifest push --quiet --all --format oci "$list" "oci:$layout"
	echo "== $list as an OCI image index: $layout ($(du -sk "$layout" | cut -f1) KiB)"
	echo "== to publish it: podman manifest push --all --format oci $list docker://REGISTRY/rathole:$VERSION"
}

case ${1:-} in
build) [ $# -eq 3 ] || { echo "usage: $0 build ARCH BINARY" >&2; exit 2; }; build "$2" "$3" ;;
manifest) shift; [ $# -ge 1 ] || { echo "usage: $0 manifest ARCH..." >&2; exit 2; }; manifest "$@" ;;
*) echo "usage: $0 build ARCH BINARY | manifest ARCH..." >&2; exit 2 ;;
esac
