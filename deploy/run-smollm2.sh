#!/bin/sh
# A GRPO run of the cluster on SmolLM2-135M-Instruct and the built-in chat
# arithmetic task (arith_chat): one learner, one reward server and ACTORS
# actors on loopback, each a separate process; the learner evaluates the
# held-out set before and after and writes RUN_DIR/summary.json.
#
#   deploy/run-smollm2.sh [BUILD_DIR]     (make run-smollm2 does `make model` first)
#
# Environment (defaults in brackets): RUN_DIR [runs/smollm2-grpo], STEPS [40],
# ACTORS [1], PORT_BASE [7755], MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf],
# LR [2e-5], KL_BETA [0.01], TEMPERATURE [0.7], EVAL_N [96], MAX_NEW [16],
# GROUP [4], BATCH_GROUPS [4]. Extra learner flags go in LEARNER_ARGS.
set -eu
BIN=${1:-build}
RUN_DIR=${RUN_DIR:-runs/smollm2-grpo}
STEPS=${STEPS:-40}
ACTORS=${ACTORS:-1}
P=${PORT_BASE:-7755}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
LR=${LR:-2e-5}
KL_BETA=${KL_BETA:-0.01}
EVAL_N=${EVAL_N:-96}
MAX_NEW=${MAX_NEW:-16}
TEMPERATURE=${TEMPERATURE:-0.7}
GROUP=${GROUP:-4}
BATCH_GROUPS=${BATCH_GROUPS:-4}

[ -f "$MODEL" ] || { echo "run-smollm2: no $MODEL; run make model" >&2; exit 1; }
mkdir -p "$RUN_DIR"
LEASE=tcp://127.0.0.1:$P
WEIGHTS=tcp://127.0.0.1:$((P + 1))
SAMPLES=tcp://127.0.0.1:$((P + 2))
RESULTS=tcp://127.0.0.1:$((P + 3))
SNAP=tcp://127.0.0.1:$((P + 4))

PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# A fresh run each time: the checkpoint of a finished run is not resumed anyway.
rm -rf "$RUN_DIR/ckpt"
"$BIN/rlhf-reward" --samples "$SAMPLES" --results "$RESULTS" --model "$MODEL" --threads 1 \
    >"$RUN_DIR/reward.log" 2>&1 &
PIDS="$PIDS $!"
i=0
while [ "$i" -lt "$ACTORS" ]; do
    # One BLAS thread per actor: the learner's update wants the cores.
    OPENBLAS_NUM_THREADS=1 "$BIN/rlhf-actor" --lease "$LEASE" --weights "$WEIGHTS" \
        --snapshot "$SNAP" --reward "$SAMPLES" --id "actor-$i" --batch 8 --seed $((i + 1)) \
        >"$RUN_DIR/actor-$i.log" 2>&1 &
    PIDS="$PIDS $!"
    i=$((i + 1))
done
# shellcheck disable=SC2086 # LEARNER_ARGS is a list of flags
"$BIN/rlhf-learner" --model "$MODEL" --lease "$LEASE" --weights "$WEIGHTS" --results "$RESULTS" \
    --snapshot "$SNAP" --ckpt-dir "$RUN_DIR/ckpt" --ckpt-every 0 \
    --metrics "$RUN_DIR/metrics.jsonl" --summary "$RUN_DIR/summary.json" --steps "$STEPS" \
    --batch-groups "$BATCH_GROUPS" --group "$GROUP" --lease-prompts 2 --max-new-tokens "$MAX_NEW" \
    --lr "$LR" --warmup 2 --kl-beta "$KL_BETA" --temperature "$TEMPERATURE" --eval-n "$EVAL_N" --lease-timeout-ms 120000 \
    ${LEARNER_ARGS:-} 2>&1 | tee "$RUN_DIR/learner.log"
cat "$RUN_DIR/summary.json"
