#!/bin/sh
# The image of deploy/Dockerfile, checked as an operator would use it: `make
# image` builds it offline (local debootstrapped base, nothing pulled); then
# every program answers --help as the container's command, the container runs
# as a non-root user in /data with no compiler inside, the binaries are the
# portable build (no AVX outside the run-time clones), and a tiny local
# cluster (SFT warm start, learner, reward server, actors) trains to a summary
# with every lease accounted for.
#
#   tests/install/image_test.sh [IMAGE]     (default rlhf:latest; make image-test)
#
# Prints one line per check and "image-test: N passed, M failed" last; exits 1
# on any failure.
set -eu

cd "$(dirname "$0")/../.."
IMAGE=${1:-rlhf:latest}
make image IMAGE="$IMAGE"

pass=0
fail=0
check() { # check NAME COMMAND...: runs COMMAND, counts and reports it
    name=$1
    shift
    if out=$("$@" 2>&1); then
        pass=$((pass + 1))
        echo "ok   $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name"
        echo "$out" | tail -n 15 | sed 's/^/     /'
    fi
}

for p in rlhf rlhf-learner rlhf-actor rlhf-reward rlhf-sft rlhf-gen rlhf-gguf rlhf-export; do
    check "$p --help" docker run --rm "$IMAGE" "$p" --help
done
check "non-root user, WORKDIR /data" docker run --rm "$IMAGE" sh -c \
    'test "$(id -u)" != 0 && test "$(pwd)" = /data && touch /data/w'
check "no compiler in the runtime image" docker run --rm "$IMAGE" sh -c \
    '! command -v gcc && ! command -v cc && ! command -v make'
check "size: $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes" true

# Portable: outside the load-time clones (*.arch_x86_64_v3/v4) no function
# uses a VEX/EVEX instruction (AVX and later), which an x86-64-v2 CPU lacks.
vex_outside_clones() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-image.XXXXXX")
    cid=$(docker create "$IMAGE")
    docker cp -q "$cid:/usr/local/bin/rlhf-learner" "$tmp/bin"
    docker rm "$cid" >/dev/null
    bad=$(objdump -d --no-show-raw-insn "$tmp/bin" | awk '
        /^[0-9a-f]+ <.*>:$/ { fn = $2; next }
        fn !~ /arch_x86_64_v[34]/ && $2 ~ /^v[a-z]/ { print fn }' | sort -u)
    clones=$(objdump -t "$tmp/bin" | grep -c 'arch_x86_64_v4' || true)
    rm -rf "$tmp"
    echo "clones for x86-64-v4: $clones; functions with AVX outside them: ${bad:-none}"
    [ -z "$bad" ] && [ "$clones" -gt 0 ]
}
if command -v objdump >/dev/null 2>&1; then
    check "portable binaries (x86-64-v2 + clones)" vex_outside_clones
fi

# A tiny cluster in one container: the warm start, then 5 GRPO steps.
check "tiny cluster (rlhf run) in one container" docker run --rm "$IMAGE" sh -c '
    rlhf run --steps 5 --sft-steps 50 --eval-n 16 --run-dir /tmp/r --init /tmp/sft >/tmp/log 2>&1 ||
        { tail -n 20 /tmp/log; exit 1; }
    grep -q "\"accounting_ok\": true" /tmp/r/summary.json && grep -q "\"steps\": 5" /tmp/r/summary.json'

echo "image-test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
