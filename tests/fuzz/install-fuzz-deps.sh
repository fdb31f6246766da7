#!/bin/sh
# Installs what `make fuzz` needs beyond deploy/install-deps.sh, only those
# missing: clang, its sanitizer and libFuzzer runtime (libclang-rt-N-dev,
# which clang only recommends) and llvm-symbolizer for readable reports.
# Only the fuzz targets call this, so a normal build never pulls in clang.
# Runs apt-get as root, or through sudo.
set -eu

missing_of() {
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            printf ' %s' "$p"
        fi
    done
}

install() {
    echo "install-fuzz-deps: installing:$1"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $1
}

missing="$(missing_of clang llvm)"
if [ -n "$missing" ]; then
    install "$missing"
fi
# The runtime's package carries clang's major version (14 on Debian 12).
major="$(clang -dumpversion | cut -d. -f1)"
missing="$(missing_of "libclang-rt-$major-dev")"
if [ -n "$missing" ]; then
    install "$missing"
fi
