#!/bin/sh
# Makes a local Debian 12 (bookworm) base image with debootstrap and
# `docker import`, for machines that cannot pull from a registry. The image
# holds nothing but Debian's minimal base (no compiler, no make), which is
# what a newcomer's fresh machine looks like; deploy/Dockerfile and
# tests/install/bare_test.sh build on it with --build-arg BASE=<tag>.
#
#   deploy/make-base-image.sh [TAG]     (default rlhf-base:bookworm)
#
# Environment: MIRROR (default: the first deb.debian.org-style URI of this
# machine's apt sources, else http://deb.debian.org/debian). Skips the work
# when the tag already exists; REBUILD=1 makes it again. Needs root (or
# sudo) for debootstrap; installs debootstrap when missing.
set -eu

TAG=${1:-rlhf-base:bookworm}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "make-base-image: $TAG exists (REBUILD=1 makes it again)"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "make-base-image: installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends debootstrap
fi

if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -h -o -E 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        head -n 1 | tr -d ' ')
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-base.XXXXXX")
trap '$SUDO rm -rf "$ROOT"' EXIT INT TERM
echo "make-base-image: debootstrap bookworm from $MIRROR"
$SUDO debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    tail -n 20 "$ROOT.log"
    rm -f "$ROOT.log"
    exit 1
}
rm -f "$ROOT.log"
# The security and updates suites, as a Debian install has them.
cat >"$ROOT/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian*}/debian-security bookworm-security main
SRC
$SUDO rm -rf "$ROOT/var/cache/apt/archives"/*.deb "$ROOT/var/lib/apt/lists"/*
$SUDO tar -C "$ROOT" -c . | docker import - "$TAG" >/dev/null
echo "make-base-image: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
