#!/bin/sh
# RLHF from preferences on the built-in preference task, every stage a
# separate process: SFT warm start -> pairs labelled by the hidden gold judge
# (rlhf-prefgen) -> a reward model (rlhf-rm) -> a reward server hosting it ->
# PPO on the cluster against the learned reward, the critic started from the
# reward model, a k1 KL penalty in the reward; the gold reward is watched
# beside the proxy (a weight-0 term) and measured before and after with
# rlhf-eval. Beside PPO, the offline alternatives on the same pairs: DPO
# from the SFT policy (rlhf-dpo) and best-of-n for n = 1, 2, 4, 8, 16 with
# the same reward model (rlhf-bon), each measured by the gold judge on the
# same held-out problems. Writes RUN_DIR/summary.json with the gold figures.
#
# With MODEL=FILE.gguf, the same on a chat model (make run-prefs-smollm2):
# no SFT stage (the instruct model is the policy), the chat arithmetic task
# in its chat template, the judge gold_chat (right arithmetic in a one-line
# answer), the reward model and DPO started from the GGUF, the RL runs on it,
# sampling at TEMPERATURE; the defaults in braces below apply.
#
#   deploy/run-prefs.sh [BUILD_DIR]        (make run-prefs)
#
# Environment (defaults in brackets): RUN_DIR [runs/prefs], SFT [runs/sft-prefs],
# SFT_STEPS [1500], PAIRS [40000], EVAL_PAIRS [500], PICK [widest: the pair of
# the K samples with the widest gold gap; or first], FORM [pairs; or rankings: the
# reward model trains on each prompt's K samples ranked, DPO on the pairs], RM_SFT_STEPS [3000: the
# reward model's warm start is the SFT trained this much longer, into RM_INIT
# [$SFT-long], cached; 0 = start it from $SFT], RM_EPOCHS [5], RM_LR [1e-4], STEPS [400],
# BATCH_GROUPS [16: groups of 8 per RL step]; REUSE [0; 1 keeps RUN_DIR's pairs, reward model
# and SFT gold], KL_BETA [0.2], LR [1e-4], ACTORS [2], PORT_BASE [7855], EVAL_N [500],
# SEED [1], RL_ALGOS [ppo grpo: one RL run each, in RUN_DIR/ALGO], DPO_EPOCHS [1; 0 skips DPO], DPO_LR [1e-5], DPO_BETA [0.1], BON_N [16; 0 skips best-of-n].
# Extra learner flags go in LEARNER_ARGS. MODEL [none]; with it: RUN_DIR
# {runs/prefs-smollm2}, PAIRS {400}, EVAL_PAIRS {300}, RM_EPOCHS {1}, RM_LR
# {2e-5}, RM_BATCH {8; else 16: records a step of the reward model and DPO}, STEPS {40}, BATCH_GROUPS {4}, GROUP {4}, LR {2e-5}, KL_BETA {0.05},
# EVAL_N {200}, TEMPERATURE {0.7}, MAX_NEW {32}, DPO_LR {1e-5}, BON_N {8},
# ACTORS {1}, DECODE {bf16: the precision sampling decodes in}.
set -eu
BIN=${1:-build}
MODEL=${MODEL:-}
if [ -n "$MODEL" ]; then
    [ -f "$MODEL" ] || { echo "run-prefs: no $MODEL (make model)" >&2; exit 1; }
    RUN_DIR=${RUN_DIR:-runs/prefs-smollm2}
    PAIRS=${PAIRS:-400} EVAL_PAIRS=${EVAL_PAIRS:-300} RM_EPOCHS=${RM_EPOCHS:-1}
    RM_LR=${RM_LR:-2e-5} STEPS=${STEPS:-40} BATCH_GROUPS=${BATCH_GROUPS:-4} LR=${LR:-2e-5}
    KL_BETA=${KL_BETA:-0.05} EVAL_N=${EVAL_N:-200} DPO_LR=${DPO_LR:-1e-5} BON_N=${BON_N:-8}
    ACTORS=${ACTORS:-1} RM_BATCH=${RM_BATCH:-8}
fi
RM_BATCH=${RM_BATCH:-16}
TEMPERATURE=${TEMPERATURE:-$([ -n "$MODEL" ] && echo 0.7 || echo 1)}
MAX_NEW=${MAX_NEW:-$([ -n "$MODEL" ] && echo 32 || echo 8)}
GROUP=${GROUP:-$([ -n "$MODEL" ] && echo 4 || echo 8)}
DECODE=${DECODE:-$([ -n "$MODEL" ] && echo bf16 || echo fp32)}
JUDGE=$([ -n "$MODEL" ] && echo gold_chat || echo gold_arith)
RUN_DIR=${RUN_DIR:-runs/prefs}
SFT=${SFT:-runs/sft-prefs}
SFT_STEPS=${SFT_STEPS:-1500}
PAIRS=${PAIRS:-40000}
EVAL_PAIRS=${EVAL_PAIRS:-500}
PICK=${PICK:-widest}
FORM=${FORM:-pairs}
RM_SFT_STEPS=${RM_SFT_STEPS:-3000}
RM_INIT=${RM_INIT:-$SFT-long}
[ "$RM_SFT_STEPS" -gt 0 ] || RM_INIT=$SFT
RM_EPOCHS=${RM_EPOCHS:-5}
RM_LR=${RM_LR:-1e-4}
STEPS=${STEPS:-400}
BATCH_GROUPS=${BATCH_GROUPS:-16}
KL_BETA=${KL_BETA:-0.2}
LR=${LR:-1e-4}
ACTORS=${ACTORS:-2}
P=${PORT_BASE:-7855}
EVAL_N=${EVAL_N:-500}
SEED=${SEED:-1}
RL_ALGOS=${RL_ALGOS:-ppo grpo}
DPO_EPOCHS=${DPO_EPOCHS:-1}
DPO_LR=${DPO_LR:-1e-5}
DPO_BETA=${DPO_BETA:-0.1}
BON_N=${BON_N:-16}
say() { echo "run-prefs: $*" >&2; }

mkdir -p "$RUN_DIR"
# The policy's flags for each program: the SFT checkpoint and the char
# task's 3 digits, or the GGUF and the chat task's own.
if [ -n "$MODEL" ]; then
    SFT=$MODEL
    POLICY="--model $MODEL"      # rlhf-prefgen, rlhf-bon, rlhf-eval, rlhf-rm, rlhf-dpo
    LEARNER_POLICY="--model $MODEL"
    DIGITS=""
    say "1/7 the policy: $MODEL (an instruct model: no SFT stage)"
elif [ ! -f "$SFT/config.json" ]; then
    say "1/7 SFT warm start ($SFT_STEPS steps) into $SFT"
    "$BIN/rlhf-sft" --out "$SFT" --steps "$SFT_STEPS" --max-digits 3 --seed "$SEED" \
        --eval-every 0 >"$RUN_DIR/sft.log" 2>&1
else
    say "1/7 SFT warm start: $SFT (cached)"
fi
if [ -z "$MODEL" ]; then
    POLICY="--ckpt $SFT"
    LEARNER_POLICY="--init $SFT --max-digits 3"
    DIGITS="--max-digits 3"
fi
if [ -z "$MODEL" ] && [ ! -f "$RM_INIT/config.json" ]; then
    say "1/7 the reward model's warm start: $SFT trained $RM_SFT_STEPS steps more into $RM_INIT"
    "$BIN/rlhf-sft" --init "$SFT" --out "$RM_INIT" --steps "$RM_SFT_STEPS" --lr 1e-3 \
        --max-digits 3 --seed $((SEED + 1)) --eval-every 0 >"$RUN_DIR/sft-rm.log" 2>&1
fi
# With REUSE=1 the preference data, the reward model and the SFT policy's
# gold reward already in RUN_DIR are kept (to rerun the later stages).
reused() { [ "${REUSE:-0}" = 1 ] && [ -f "$1" ] && say "   reusing $1"; }
say "2/7 preference data from the policy, labelled by the gold judge ($JUDGE)"
# shellcheck disable=SC2086 # POLICY and DIGITS are lists of flags
reused "$RUN_DIR/prefs/labeller.json" ||
    "$BIN/rlhf-prefgen" $POLICY $DIGITS --out "$RUN_DIR/prefs" --pairs "$PAIRS" \
        --eval-pairs "$EVAL_PAIRS" --pick "$PICK" --form "$FORM" --temperature "$TEMPERATURE" \
        --max-new "$MAX_NEW" --decode-weights "$DECODE" --seed $((SEED + 3000)) \
        >"$RUN_DIR/prefgen.log" 2>&1
say "3/7 reward model ($RM_EPOCHS epochs, Bradley-Terry, centred on the policy's own samples)"
RM_FROM="--init $RM_INIT"
[ -z "$MODEL" ] || RM_FROM="--model $MODEL"
# shellcheck disable=SC2086 # RM_FROM is a list of flags
reused "$RUN_DIR/rm-summary.json" ||
    "$BIN/rlhf-rm" $RM_FROM --data "$RUN_DIR/prefs/train.jsonl" \
        --eval-data "$RUN_DIR/prefs/eval.jsonl" --norm-data "$RUN_DIR/prefs/ref.jsonl" \
        --epochs "$RM_EPOCHS" --lr "$RM_LR" --batch "$RM_BATCH" --out "$RUN_DIR/rm" \
        --summary "$RUN_DIR/rm-summary.json" --seed "$SEED" >"$RUN_DIR/rm.log" 2>&1

gold() { # gold reward of a policy on held-out problems, 4 samples each at TEMPERATURE
    if [ -n "$MODEL" ]; then
        G="--model $MODEL"
        [ "$1" = "$MODEL" ] || G="$G --ckpt $1"
    else
        G="--ckpt $1 --arith-digits 3"
    fi
    # shellcheck disable=SC2086 # G is a list of flags
    "$BIN/rlhf-eval" $G --arith "$EVAL_N" --scorer "$JUDGE" --n 4 --temperature "$TEMPERATURE" \
        --max-new "$MAX_NEW" --decode-weights "$DECODE" --seed $((SEED + 7)) --out "$2" \
        >>"$RUN_DIR/eval.log" 2>&1
}
say "4/7 gold reward of the SFT policy"
reused "$RUN_DIR/gold-sft.json" || gold "$SFT" "$RUN_DIR/gold-sft.json"

LEASE=tcp://127.0.0.1:$P
WEIGHTS=tcp://127.0.0.1:$((P + 1))
SAMPLES=tcp://127.0.0.1:$((P + 2))
RESULTS=tcp://127.0.0.1:$((P + 3))
SNAP=tcp://127.0.0.1:$((P + 4))
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    PIDS=""
}
trap cleanup EXIT INT TERM
# One RL run against the reward model on the cluster, in RUN_DIR/ALGO: a
# reward server hosting it (the gold judge a weight-0 monitor beside it),
# ACTORS actors and the learner (PPO's critic starts from the reward model).
rl() {
    D="$RUN_DIR/$1"
    rm -rf "$D"
    mkdir -p "$D"
    # shellcheck disable=SC2086 # MODEL_FLAG is a list of flags
    "$BIN/rlhf-reward" --samples "$SAMPLES" --results "$RESULTS" --reward-model "$RUN_DIR/rm" \
        ${MODEL:+--model "$MODEL"} --scorer "rm:1,$JUDGE:0" >"$D/reward.log" 2>&1 &
    PIDS="$PIDS $!"
    i=0
    while [ "$i" -lt "$ACTORS" ]; do
        OPENBLAS_NUM_THREADS=1 "$BIN/rlhf-actor" --lease "$LEASE" --weights "$WEIGHTS" \
            --snapshot "$SNAP" --reward "$SAMPLES" --id "actor-$i" --seed $((SEED + i + 1)) \
            >"$D/actor-$i.log" 2>&1 &
        PIDS="$PIDS $!"
        i=$((i + 1))
    done
    CRITIC=""
    [ "$1" = ppo ] && CRITIC="--critic-init $RUN_DIR/rm"
    # shellcheck disable=SC2086 # CRITIC and LEARNER_ARGS are lists of flags
    "$BIN/rlhf-learner" --algo "$1" $LEARNER_POLICY $CRITIC --kl-place reward \
        --kl-beta "$KL_BETA" --group "$GROUP" --max-new-tokens "$MAX_NEW" \
        --temperature "$TEMPERATURE" --lease "$LEASE" --weights "$WEIGHTS" \
        --results "$RESULTS" --snapshot "$SNAP" --ckpt-dir "$D/ckpt" --ckpt-every 0 \
        --metrics "$D/metrics.jsonl" --summary "$D/summary.json" --steps "$STEPS" \
        --batch-groups "$BATCH_GROUPS" --lr "$LR" --eval-n 0 --seed "$SEED" ${LEARNER_ARGS:-} >"$D/learner.log" 2>&1
    cleanup
    gold "$D/ckpt" "$RUN_DIR/gold-$1.json"
}
for A in $RL_ALGOS; do
    say "5/7 $A against the reward model on the cluster ($STEPS steps) into $RUN_DIR/$A"
    rl "$A"
done

rm -f "$RUN_DIR/gold-dpo.json" "$RUN_DIR/bon.json"
if [ "$DPO_EPOCHS" -gt 0 ]; then
    say "6/7 DPO from the SFT policy on the same pairs ($DPO_EPOCHS epochs, beta $DPO_BETA)"
    DPO_FROM="--init $SFT"
    [ -z "$MODEL" ] || DPO_FROM="--model $MODEL"
    DPO_DATA=$RUN_DIR/prefs/train.jsonl
    [ "$FORM" = pairs ] || DPO_DATA=$RUN_DIR/prefs/train-pairs.jsonl
    # shellcheck disable=SC2086 # DPO_FROM is a list of flags
    "$BIN/rlhf-dpo" $DPO_FROM --data "$DPO_DATA" \
        --eval-data "$RUN_DIR/prefs/eval.jsonl" --epochs "$DPO_EPOCHS" --lr "$DPO_LR" --batch "$RM_BATCH" \
        --beta "$DPO_BETA" --out "$RUN_DIR/dpo" --summary "$RUN_DIR/dpo-summary.json" \
        --seed "$SEED" >"$RUN_DIR/dpo.log" 2>&1
    gold "$RUN_DIR/dpo" "$RUN_DIR/gold-dpo.json"
else
    say "6/7 DPO: skipped (DPO_EPOCHS=0)"
fi

if [ "$BON_N" -gt 0 ]; then
    say "7/7 best-of-n (n = 1..$BON_N) from the SFT policy, picked by the reward model"
    BON_POLICY="--policy $SFT"
    [ -z "$MODEL" ] || BON_POLICY="--model $MODEL"
    # shellcheck disable=SC2086 # BON_POLICY and DIGITS are lists of flags
    "$BIN/rlhf-bon" $BON_POLICY --reward-model "$RUN_DIR/rm" --n "$BON_N" --prompts "$EVAL_N" \
        --held-out $DIGITS --temperature "$TEMPERATURE" --max-new "$MAX_NEW" \
        --decode-weights "$DECODE" --seed $((SEED + 7)) \
        --summary "$RUN_DIR/bon.json" >"$RUN_DIR/bon.log" 2>&1
else
    say "7/7 best-of-n: skipped (BON_N=0)"
fi

# The summary: the gold judge's view of every stage, and the proxy's.
python3 - "$RUN_DIR" "$JUDGE" $RL_ALGOS <<'EOF'
import json, math, os, sys
d, judge, algos = sys.argv[1], sys.argv[2], sys.argv[3:]
load = lambda f: json.load(open(f"{d}/{f}")) if os.path.exists(f"{d}/{f}") else None
lab, rm, g0 = load("prefs/labeller.json"), load("rm-summary.json"), load("gold-sft.json")
gd, dpo, bon = load("gold-dpo.json"), load("dpo-summary.json"), load("bon.json")
def sd(g):  # standard error of the mean gold reward over prompts
    xs = [p["mean_reward"] for p in g["prompts"]]
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
def gain(a, b):  # mean and paired standard error of b - a over the same prompts
    ds = [y["mean_reward"] - x["mean_reward"] for x, y in zip(a["prompts"], b["prompts"])]
    m = sum(ds) / len(ds)
    return m, math.sqrt(sum((x - m) ** 2 for x in ds) / (len(ds) - 1) / len(ds))
comp = lambda r, k: r.get("components", {}).get(k)
out = {
    "labeller_ceiling": lab["ceiling_eval"], "flip_drawn": lab["flip_drawn_train"],
    "rm_pair_accuracy": rm["eval_after"]["pair_accuracy"],
    "rm_pair_accuracy_before": rm["eval_before"]["pair_accuracy"],
    "gold_sft": g0["results"]["mean_reward"], "gold_sft_se": sd(g0),
    "exact_sft": g0["results"]["pass_at_k"]["1"],
}
for a in algos:  # each RL run: gold after, its paired gain, the curve of KL, proxy, gold
    g = json.load(open(f"{d}/gold-{a}.json"))
    recs = [json.loads(l) for l in open(f"{d}/{a}/metrics.jsonl") if l.strip()]
    out[a] = {"gold": g["results"]["mean_reward"], "gold_se": sd(g),
              "gold_gain": gain(g0, g)[0], "gold_gain_se": gain(g0, g)[1],
              "exact": g["results"]["pass_at_k"]["1"], "steps": len(recs),
              "curve": [{"step": r["step"], "kl_ref": r["kl_ref"], "proxy": comp(r, "rm"),
                         "gold": comp(r, judge)} for r in recs]}
if gd:  # DPO_EPOCHS=0 skips it
    out["dpo"] = {"gold": gd["results"]["mean_reward"], "gold_se": sd(gd),
                  "gold_gain": gain(g0, gd)[0], "gold_gain_se": gain(g0, gd)[1],
                  "exact": gd["results"]["pass_at_k"]["1"],
                  "implicit_reward_accuracy": dpo["eval_after"]["implicit_reward_accuracy"]}
out["best_of_n"] = [{k: c[k] for k in ("n", "gold", "gold_se", "gain_vs_1", "gain_vs_1_se",
                                       "rm", "gold_oracle")} for c in (bon or {}).get("curve", [])]
json.dump(out, open(f"{d}/summary.json", "w"), indent=1)
brief = {k: ({kk: vv for kk, vv in v.items() if kk != "curve"} if isinstance(v, dict) else v)
         for k, v in out.items() if k != "best_of_n"}
brief["best_of_n"] = {c["n"]: round(c["gold"], 4) for c in out["best_of_n"]}
print(json.dumps(brief, indent=1))
EOF
