#!/bin/sh
# Makes the Python environment of the Python reward server (reward_server/python,
# README "A reward server in Python") under the build directory: a venv at
# BUILD/pyenv holding pinned pyzmq and protobuf and the rlhf-reward package
# built from this tree, its message classes generated from proto/rlhf.proto by
# protoc. `make test` runs it (the pyreward test uses the venv), so a fresh
# machine needs nothing typed by hand.
#
#   deploy/install-pydeps.sh [BUILD]        (default build)
#
# Debian packages it needs are installed when missing (as root, or through
# sudo): python3, python3-venv, protobuf-compiler. The Python packages come
# from PyPI. Where PyPI cannot be reached (no route, or a TLS certificate this
# machine's pip does not trust, as in a bare container behind an intercepting
# proxy), it says so and falls back to Debian's python3-zmq and
# python3-protobuf, seen through a venv with the system's site packages.
#
# Idempotent: a venv whose stamp matches the pins, the package's sources and
# the schema is kept as it is. Prints the venv's python on success.
set -eu

cd "$(dirname "$0")/.."
BUILD=${1:-build}
VENV=$BUILD/pyenv
SRC=$BUILD/pyreward-src
# protobuf 4.21.12 is the Python runtime of protobuf 3.21.12, the protoc of
# Debian 12 (bookworm); the generated code imports with it (and with newer
# runtimes). pyzmq's wheels bundle a libzmq with CURVE.
PIN_ZMQ=pyzmq==26.4.0
PIN_PROTOBUF=protobuf==4.21.12
PIN_WHEEL=wheel==0.42.0

say() { echo "install-pydeps: $*" >&2; }

apt_install() {
    missing=""
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $p"
        fi
    done
    [ -z "$missing" ] && return 0
    say "installing Debian packages:$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
}

if command -v dpkg-query >/dev/null 2>&1; then
    apt_install python3 python3-venv protobuf-compiler
fi
# Debian's interpreter when there is one: the fallback's packages are its own.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# The stamp: the pins, the package's sources and the schema.
stamp=$(
    {
        echo "$PIN_ZMQ $PIN_PROTOBUF $PIN_WHEEL $PY"
        find reward_server/python -type f \( -name '*.py' -o -name '*.toml' \) \
            ! -path '*/build/*' ! -name 'rlhf_pb2.py' | LC_ALL=C sort | xargs cat
        cat proto/rlhf.proto
    } | sha256sum | cut -d' ' -f1
)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ] &&
    "$VENV/bin/python" -c 'import rlhf_reward.rlhf_pb2, zmq' 2>/dev/null; then
    echo "$VENV/bin/python"
    exit 0
fi

rm -rf "$VENV" "$SRC"
mkdir -p "$BUILD"
say "making $VENV with $PY ($("$PY" --version 2>&1))"
"$PY" -m venv "$VENV"
mode=pypi
if ! "$VENV/bin/pip" install --quiet --retries 2 --timeout 30 --disable-pip-version-check \
    "$PIN_ZMQ" "$PIN_PROTOBUF" "$PIN_WHEEL" >&2; then
    say "PyPI cannot be reached from here (above); falling back to Debian's python3-zmq and" \
        "python3-protobuf"
    mode=debian
    apt_install python3-zmq python3-protobuf python3-wheel
    rm -rf "$VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi

# The package builds from a copy laid out as the tree is (python/ two levels
# below proto/), so the source tree gets no build files.
mkdir -p "$SRC/reward_server" "$SRC/proto"
cp -r reward_server/python "$SRC/reward_server/python"
rm -rf "$SRC/reward_server/python/build" "$SRC/reward_server/python/"*.egg-info
cp proto/rlhf.proto "$SRC/proto/"
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation --disable-pip-version-check \
    "$SRC/reward_server/python" >&2

"$VENV/bin/python" - <<'EOF' >&2
import google.protobuf, zmq
from rlhf_reward import rlhf_pb2
assert zmq.has("curve"), "this libzmq has no CURVE"
g = rlhf_pb2.ScoredGroup(version=1, run_id="r")
assert rlhf_pb2.ScoredGroup.FromString(g.SerializeToString()).run_id == "r"
print(f"install-pydeps: pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}, CURVE), "
      f"protobuf {google.protobuf.__version__}; rlhf_pb2 imports")
EOF
echo "$stamp" >"$VENV/.stamp"
say "ready ($mode): $VENV"
echo "$VENV/bin/python"
