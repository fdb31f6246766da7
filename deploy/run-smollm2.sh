#!/bin/sh
# A GRPO run of the cluster on SmolLM2-135M-Instruct and the built-in chat
# arithmetic task (arith_chat): `rlhf run --model` with one learner, one
# reward server and ACTORS actors on loopback, each a separate process; the
# learner evaluates the held-out set before and after and writes
# RUN_DIR/summary.json (logs in RUN_DIR/logs).
#
#   deploy/run-smollm2.sh [BUILD_DIR]     (make run-smollm2 does `make model` first)
#
# Environment (defaults in brackets): RUN_DIR [runs/smollm2-grpo], STEPS [40],
# ACTORS [1], PORT_BASE [7755], MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf],
# LR [2e-5], KL_BETA [0.01], TEMPERATURE [0.7], EVAL_N [96], MAX_NEW [16],
# GROUP [4], BATCH_GROUPS [4]. Any other `rlhf run` flag (--data, --task,
# --scorer, ...: build/rlhf run --help) goes in RUN_ARGS; extra learner
# flags in LEARNER_ARGS.
set -eu
BIN=${1:-build}
RUN_DIR=${RUN_DIR:-runs/smollm2-grpo}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

[ -f "$MODEL" ] || { echo "run-smollm2: no $MODEL; run make model" >&2; exit 1; }
# A fresh run each time: the checkpoint of a finished run is not resumed anyway.
rm -rf "$RUN_DIR/ckpt"
# shellcheck disable=SC2086 # RUN_ARGS is a list of flags
exec "$BIN/rlhf" run --model "$MODEL" --run-dir "$RUN_DIR" --steps "${STEPS:-40}" \
    --actors "${ACTORS:-1}" --port-base "${PORT_BASE:-7755}" --lr "${LR:-2e-5}" \
    --kl-beta "${KL_BETA:-0.01}" --temperature "${TEMPERATURE:-0.7}" --eval-n "${EVAL_N:-96}" \
    --max-new-tokens "${MAX_NEW:-16}" --group "${GROUP:-4}" --batch-groups "${BATCH_GROUPS:-4}" \
    ${LEARNER_ARGS:+--learner-flags "$LEARNER_ARGS"} ${RUN_ARGS:-}
