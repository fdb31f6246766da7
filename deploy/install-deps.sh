#!/bin/sh
# Installs the Debian packages rlhf.c builds against, only those missing.
# Used by `make` (via the `deps` target) and by .ci/run, so a fresh machine
# needs nothing typed by hand. Runs apt-get as root, or through sudo.
set -eu

PKGS="build-essential pkg-config libzmq3-dev libprotobuf-c-dev protobuf-c-compiler \
libopenblas-dev libuv1-dev libjansson-dev libxxhash-dev libmicrohttpd-dev python3"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
