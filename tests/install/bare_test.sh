#!/bin/sh
# The README's two commands on a machine with nothing installed: a clean
# clone of this repository's HEAD in a container of the bare Debian 12 base
# (deploy/make-base-image.sh: debootstrap minbase, no compiler, no make, none
# of our libraries). Inside, as a newcomer would: install make (the README's
# one prerequisite), then `make test` must pass at the first try, and a short
# `make run` must finish and print its summary. Nothing is pulled from a
# registry; the container reaches Debian's archive for apt-get.
#
#   tests/install/bare_test.sh [BASE_TAG]    (default rlhf-base:bookworm)
#
# Writes the container's whole output to build/bare-test.log; the last line
# printed is "bare-test: N passed, M failed" (the runner's own count).
set -eu

cd "$(dirname "$0")/../.."
TAG=${1:-rlhf-base:bookworm}
./deploy/make-base-image.sh "$TAG"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-bare.XXXXXX")
NAME="rlhf-bare-$$"
cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
git clone --quiet . "$TMP/src"
echo "bare-test: $(git -C "$TMP/src" log -1 --format='%h %s' | cut -c1-72)"

mkdir -p build
LOG=build/bare-test.log
# -e CI: the tests see the same environment as on the host; seccomp is the
# default profile, the container is not privileged.
set +e
docker run --name "$NAME" -v "$TMP/src:/src" -w /src "$TAG" sh -c '
    set -e
    export DEBIAN_FRONTEND=noninteractive
    echo "== machine: $(. /etc/os-release; echo $PRETTY_NAME); gcc: $(command -v gcc || echo none); make: $(command -v make || echo none)"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends make >/dev/null
    echo "== make test (first try)"
    make test
    echo "== make run (short)"
    make run RUN_ARGS="--steps 20 --sft-steps 300 --eval-n 64 --run-dir runs/bare --init runs/bare-sft"
    test -s runs/bare/summary.json
    echo "== summary"; cat runs/bare/summary.json
' >"$LOG" 2>&1
rc=$?
set -e
tail -n 25 "$LOG"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -n 1)
if [ $rc -ne 0 ] || [ -z "$line" ]; then
    # what failed, from the whole log: the FAIL lines and the failed checks
    # (test: file:line: message), so a CI page that shows only the tail says why
    grep -E '^FAIL |^[a-z0-9_]+: [A-Za-z0-9_/.]+\.c:[0-9]+: |ERROR' "$LOG" | tail -n 40 || true
    echo "bare-test: FAILED (container exit $rc; whole log in $LOG)"
    exit 1
fi
echo "bare-test: $line"
