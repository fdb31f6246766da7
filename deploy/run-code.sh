#!/bin/sh
# A code-task GRPO run: SmolLM2-135M-Instruct writes the small Python
# functions of examples/code (make_examples.py), the reward server runs each
# completion against its record's unit tests in the sandbox (scorer "code",
# reward = fraction of tests passed), and rlhf-eval measures the held-out
# set before and after with the same sampler: pass@k at temperature T and
# greedy accuracy. `rlhf run --model --data` does the training; this script
# only picks the knobs and runs the two evaluations.
#
#   deploy/run-code.sh [BUILD_DIR]        (make run-code does `make model` first)
#
# Environment (defaults in brackets): RUN_DIR [runs/code-grpo], STEPS [30],
# MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf], LR [2e-5], KL_BETA [0.01],
# GROUP [8], BATCH_GROUPS [2], MAX_NEW [96], TEMPERATURE [0.7], EVAL_SAMPLES
# [8] (samples per held-out prompt), PORT_BASE [7855], DATA [examples/code].
# Greedy accuracy (one sample at temperature 0) is measured the same way.
# Writes RUN_DIR/eval-*.json (rlhf-eval's reports),
# their completions and RUN_DIR/code-summary.txt.
set -eu
BIN=${1:-build}
RUN_DIR=${RUN_DIR:-runs/code-grpo}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-examples/code}
MAX_NEW=${MAX_NEW:-96}
TEMPERATURE=${TEMPERATURE:-0.7}
EVAL_SAMPLES=${EVAL_SAMPLES:-8}

[ -f "$MODEL" ] || { echo "run-code: no $MODEL; run make model" >&2; exit 1; }
mkdir -p "$RUN_DIR"
rm -rf "$RUN_DIR/ckpt"

# evaluate NAME N TEMP [--ckpt DIR]: the held-out set, N samples a prompt.
evaluate() {
    name=$1 n=$2 temp=$3
    shift 3
    "$BIN/rlhf-eval" --model "$MODEL" "$@" --data "$DATA/eval.jsonl" --n "$n" \
        --temperature "$temp" --max-new "$MAX_NEW" --decode-weights bf16 \
        --out "$RUN_DIR/$name.json" --completions "$RUN_DIR/$name-completions.jsonl" \
        > "$RUN_DIR/$name.txt"
    tail -n 12 "$RUN_DIR/$name.txt"
}

echo "run-code: held-out set before training"
evaluate eval-before "$EVAL_SAMPLES" "$TEMPERATURE"
evaluate eval-greedy-before 1 0

"$BIN/rlhf" run --model "$MODEL" --run-dir "$RUN_DIR" --steps "${STEPS:-30}" \
    --data "$DATA/train.jsonl" \
    --actors 1 --port-base "${PORT_BASE:-7855}" --lr "${LR:-2e-5}" \
    --kl-beta "${KL_BETA:-0.01}" --temperature "$TEMPERATURE" \
    --max-new-tokens "$MAX_NEW" --group "${GROUP:-8}" --batch-groups "${BATCH_GROUPS:-2}" \
    --lease-prompts 1 --actor-flags '--decode-weights bf16' ${RUN_ARGS:-}

echo "run-code: held-out set after training"
evaluate eval-after "$EVAL_SAMPLES" "$TEMPERATURE" --ckpt "$RUN_DIR/ckpt"
evaluate eval-greedy-after 1 0 --ckpt "$RUN_DIR/ckpt"

{
    for f in eval-before eval-after eval-greedy-before eval-greedy-after; do
        printf '%-20s' "$f"
        grep -E '^  pass@[0-9]+ ' "$RUN_DIR/$f.txt" | tr -s ' ' | tr '\n' ' '
        echo
    done
} | tee "$RUN_DIR/code-summary.txt"
