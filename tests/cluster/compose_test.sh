#!/bin/sh
# make cluster-test: the compose cluster (deploy/docker-compose.yml) with real
# containers, 3 actors and 2 reward servers on the built-in task (a tiny
# model: 1-digit operands), faults on the way, figures to build/cluster-test.json.
#
#   1. docker kill an actor holding leases     -> its groups re-issued
#   2. docker network disconnect an actor 20 s -> it rejoins; duplicates counted, not trained
#   3. docker pause, then kill a reward server -> its groups re-issued, training goes on
#   4. clients with a wrong key and with none  -> refused (unauthorized) on the learner's
#                                                 and a reward server's sockets
#   5. scale actors 1 -> 4 -> 2, each capped   -> samples/s rises with 4, the job
#      at 0.05 CPU (its own small machine)        goes on with 2
#   6. Prometheus's HTTP API: rlhf_learner_step and the reward at that step
#                                              == the record of metrics.jsonl
#   7. docker kill the learner container       -> resumes from the volume, a new epoch,
#                                                 actors follow the new epoch
# and at the end summary.json: accounting_ok, accuracy_after >= TARGET and a
# gain of at least GAIN over the warm start (accuracy_before: the run's first
# evaluation, kept across the learner's restart). The warm start imitates a
# careless labeller (60% of its demonstrations one too high), so it scores
# well below the target and RL has to do the correcting through the faults.
# Every container, network and volume of the project is removed on exit.
set -eu
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
P=rlhfct$$
DC="docker-compose -p $P -f deploy/docker-compose.yml"
OUT=build/cluster-test.json
TARGET=${TARGET:-0.8}
GAIN=${GAIN:-0.2}
T0=$(date +%s)
mkdir -p build
export RLHF_BASE=rlhf-base:bookworm RLHF_SFT_STEPS=300 RLHF_MAX_DIGITS=1 RLHF_LABEL_NOISE=0.6 \
    RLHF_STEPS=100000 RLHF_BATCH_GROUPS=8 RLHF_EVAL_N=200 RLHF_LR=0.00005 \
    RLHF_SFT_ARGS="--dim 128 --layers 2 --hidden 256 --eval-n 100" \
    RLHF_LEARNER_ARGS="--lease-timeout-ms 3000 --max-staleness 50 --ckpt-every 20 --status-every 2" \
    RLHF_ACTOR_ARGS="--batch 16" RLHF_REWARD_RESOLVE_MS=1000 \
    RLHF_PROMETHEUS_PORT=127.0.0.1:0

cleanup() {
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "cluster-test: FAILED (rc $rc); last learner log:"
        $DC logs --no-color --tail 30 learner 2>/dev/null || true
    fi
    docker rm -f "$P-intruder" "$P-plain" >/dev/null 2>&1 || true
    $DC down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "cluster-test [$(($(date +%s) - T0))s]: $*"; }
die() { say "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
# lm METRIC_LINE_PREFIX: a learner metric's value (empty when unreachable)
lm() { $DC exec -T learner curl -fsS 127.0.0.1:9100/metrics 2>/dev/null |
    awk -v k="$1" 'index($0, k " ") == 1 { print $2; exit }'; }
# cm CONTAINER PREFIX: a metric of any container
cm() { docker exec "$1" curl -fsS 127.0.0.1:9100/metrics 2>/dev/null |
    awk -v k="$2" 'index($0, k " ") == 1 { print $2; exit }'; }
# running SERVICE: the ids of the service's running containers
running() { docker ps -q --filter "label=com.docker.compose.project=$P" \
    --filter "label=com.docker.compose.service=$1"; }
num() { printf '%.0f' "${1:-0}"; }
# wait_until SECONDS CMD...: polls CMD every 0.5 s
wait_until() { lim=$1; shift; end=$(($(date +%s) + lim))
    while ! "$@"; do [ "$(date +%s)" -lt $end ] || return 1; sleep 0.5; done; }
step() { num "$(lm rlhf_learner_step)"; }
step_past() { [ "$(step)" -gt "$1" ]; }
metric_gt() { [ "$(num "$(lm "$1")")" -gt "$2" ]; }

say "building the images offline (base rlhf-base:bookworm)"
./deploy/make-base-image.sh rlhf-base:bookworm >/dev/null
$DC build -q >/dev/null
say "up: 3 actors, 2 reward servers"
$DC up -d --scale actor=3 --scale reward=2 >/dev/null
wait_until 240 step_past 3 || die "the learner made no steps"
NET=$(docker network ls -q -f "name=${P}_rlhf" | head -n 1)
say "training (step $(step))"

# 1. kill an actor holding leases: one whose metrics say it is sampling (a
# lease in hand); an actor between leases would leave nothing to re-issue.
sampling_actor() {
    for c in $(running actor); do
        if [ "$(num "$(cm "$c" 'rlhf_actor_state{state="sampling"}')")" -eq 1 ]; then
            A1=$c
            return 0
        fi
    done
    return 1
}
# The metric is read a moment before the kill, and at thousands of samples a
# second an actor may have pushed every group of its leases in between (its
# groups then reach the learner through the reward server: nothing to
# re-issue). A kill after which no lease expires within 5 lease timeouts is
# such a case, and another sampling actor is killed, up to three in all.
kills=0
while :; do
    A1=""
    wait_until 60 sampling_actor || die "no actor was seen holding a lease"
    re0=$(num "$(lm rlhf_learner_leases_expired_total)")
    docker kill "$A1" >/dev/null
    t=$(now_ms)
    kills=$((kills + 1))
    wait_until 15 metric_gt rlhf_learner_leases_expired_total "$re0" && break
    [ "$kills" -lt 3 ] || die "the killed actors' groups were not re-issued ($kills actors killed)"
    say "the killed actor held no groups in flight (all pushed before the kill); killing another"
done
s0=$(step)
wait_until 60 step_past "$s0" || die "no step after the actor was killed"
REC_ACTOR=$(($(now_ms) - t))
say "actor killed: groups re-issued, training on after ${REC_ACTOR} ms"

# 2. cut an actor off the network for 20 s
A2=$(running actor | head -n 1)
dup0=$(num "$(lm 'rlhf_learner_groups_total{state="duplicates"}')")
docker network disconnect "$NET" "$A2"
sleep 20
docker network connect --alias actor "$NET" "$A2"
t=$(now_ms)
g0=$(num "$(cm "$A2" rlhf_actor_groups_total)")
actor_moved() { [ "$(num "$(cm "$A2" rlhf_actor_groups_total)")" -gt "$g0" ]; }
wait_until 90 actor_moved || die "the reconnected actor pushed nothing"
REC_NET=$(($(now_ms) - t))
DUPS=$(($(num "$(lm 'rlhf_learner_groups_total{state="duplicates"}')") - dup0))
say "actor reconnected: pushing again after ${REC_NET} ms, duplicates counted (not trained): $DUPS"

# 3. kill a reward server holding groups: paused first (a hung server) for
# 3 s, so the actors' pushes pile up in it, then killed with them
R1=$(running reward | head -n 1)
re0=$(num "$(lm 'rlhf_learner_groups_total{state="reissued"}')")
ex0=$(num "$(lm rlhf_learner_leases_expired_total)")
docker pause "$R1" >/dev/null
sleep 3
docker kill "$R1" >/dev/null
t=$(now_ms)
s0=$(step)
wait_until 90 step_past $((s0 + 2)) || die "training stopped after a reward server was killed"
REC_REWARD=$(($(now_ms) - t))
reissued() { [ "$(num "$(lm 'rlhf_learner_groups_total{state="reissued"}')")" -gt "$re0" ]; }
wait_until 30 reissued || die "nothing re-issued after a reward server died holding groups"
RE_REWARD=$(($(num "$(lm 'rlhf_learner_groups_total{state="reissued"}')") - re0))
EX_REWARD=$(($(num "$(lm rlhf_learner_leases_expired_total)") - ex0))
say "reward server hung 3 s then killed: training on after ${REC_REWARD} ms, groups re-issued since: $RE_REWARD, leases expired: $EX_REWARD"

# 4. a client with a key not on the allow-list, and one with no key at all
unauth() { $DC exec -T learner curl -fsS 127.0.0.1:9100/metrics 2>/dev/null |
    awk '/^rlhf_learner_rejects_total/ && /unauthorized/ { s += $2 } END { printf "%d", s }'; }
runauth() { docker exec "$(running reward | head -n 1)" curl -fsS 127.0.0.1:9100/metrics 2>/dev/null |
    awk '/^rlhf_reward_rejects_total/ && /unauthorized/ { s += $2 } END { printf "%d", s }'; }
u0=$(unauth)
tr0=$(num "$(lm 'rlhf_learner_groups_total{state="trained"}')")
IMG=${RLHF_IMAGE:-rlhf:latest}
docker run -d --name "$P-intruder" --network "$NET" -v "${P}_keys:/keys:ro" "$IMG" sh -c '
    rlhf-keygen --dir /tmp/k --name intruder >/dev/null && cp /keys/learner.pub /keys/reward.pub /tmp/k/ &&
    exec rlhf-actor --keys /tmp/k --key-name intruder --id intruder --lease tcp://learner:5555 \
        --weights tcp://learner:5556 --snapshot tcp://learner:5559 --reward tcp://reward:5557 \
        --reward-resolve-ms 1000' >/dev/null
docker run -d --name "$P-plain" --network "$NET" "$IMG" rlhf-actor --id plain \
    --lease tcp://learner:5555 --weights tcp://learner:5556 --snapshot tcp://learner:5559 \
    --reward tcp://reward:5557 --reward-resolve-ms 1000 >/dev/null
sleep 12
REFUSED=$(($(unauth) - u0))
REFUSED_REWARD=$(runauth)
in_has_weights=$(num "$(cm "$P-intruder" rlhf_actor_has_weights)")
pl_has_weights=$(num "$(cm "$P-plain" rlhf_actor_has_weights)")
in_groups=$(num "$(cm "$P-intruder" rlhf_actor_groups_total)")
docker rm -f "$P-intruder" "$P-plain" >/dev/null
[ "$REFUSED" -gt 0 ] || die "no refusal counted by the learner"
[ "$in_has_weights" = 0 ] && [ "$pl_has_weights" = 0 ] && [ "$in_groups" = 0 ] ||
    die "an unauthorized client got weights or pushed groups"
say "wrong key and no key: $REFUSED refusals at the learner, $REFUSED_REWARD at a reward server; no weights, no groups"

# 5. scale actors 1 -> 4 -> 2, samples/s over a window after each change.
# Every actor is capped at ACTOR_CPUS of a core (docker update --cpus), as if
# each ran on a small machine of its own: on this host all containers share
# its cores, and uncapped actors only take cycles from the learner.
ACTOR_CPUS=${ACTOR_CPUS:-0.05}
cap_actors() { for c in $(running actor); do docker update --cpus "$ACTOR_CPUS" "$c" >/dev/null; done; }
rate() { # samples trained per second over 15 s (the learner's counter)
    a=$(num "$(lm rlhf_learner_samples_total)"); ta=$(now_ms); sleep 15
    b=$(num "$(lm rlhf_learner_samples_total)"); tb=$(now_ms)
    awk -v a="$a" -v b="$b" -v ta="$ta" -v tb="$tb" 'BEGIN { printf "%.1f", (b - a) * 1000 / (tb - ta) }'; }
$DC up -d --no-recreate --scale actor=1 --scale reward=2 >/dev/null 2>&1
cap_actors
sleep 5
SPS1=$(rate)
$DC up -d --no-recreate --scale actor=4 --scale reward=2 >/dev/null 2>&1
cap_actors
sleep 8
SPS4=$(rate)
$DC up -d --no-recreate --scale actor=2 --scale reward=2 >/dev/null 2>&1
sleep 5
SPS2=$(rate)
say "samples/s with actors capped at $ACTOR_CPUS CPU: 1 actor $SPS1, 4 actors $SPS4, back to 2 actors $SPS2"
# actors added mid-run raise the rate, removed ones lower it and the job goes on
awk -v a="$SPS1" -v b="$SPS4" 'BEGIN { exit !(b > 1.5 * a) }' ||
    die "samples/s did not rise with 4 actors ($SPS1 -> $SPS4)"
[ "$(num "$SPS2")" -gt 0 ] || die "no samples trained after scaling down to 2 actors"
for c in $(running actor); do docker update --cpus 0 "$c" >/dev/null; done

# 6. Prometheus's view of the learner against metrics.jsonl
PROM=$($DC port prometheus 9090 | tail -n 1)
q() { curl -fsS "http://$PROM/api/v1/query" --data-urlencode "query=$1" |
    sed -n 's/.*"value":\[[0-9.]*,"\([^"]*\)"\].*/\1/p'; }
prom_has_step() { [ -n "$(q 'rlhf_learner_step{job="learner"}')" ]; }
wait_until 30 prom_has_step || die "Prometheus has no rlhf_learner_step"
PSTEP=$(q 'rlhf_learner_step{job="learner"}')
PREW=$(q 'rlhf_learner_reward_mean{job="learner"}')
JREW=$($DC exec -T learner sh -c "grep -E '\"step\": ?$PSTEP[,}]' /data/run/metrics.jsonl | tail -n 1" |
    sed -n 's/.*"reward_mean": \{0,1\}\([-0-9.eE+]*\).*/\1/p')
PROM_OK=$(awk -v a="$PREW" -v b="$JREW" 'BEGIN { d = a - b; if (d < 0) d = -d; print (b != "" && d < 1e-3) ? "true" : "false" }')
say "Prometheus: rlhf_learner_step $PSTEP, reward_mean $PREW; metrics.jsonl at that step: $JREW ($PROM_OK)"
[ "$PROM_OK" = true ] || die "Prometheus and metrics.jsonl disagree"

# 7. kill the learner container (SIGKILL, no clean save): it resumes from the
# last checkpoint in the volume in a new epoch (more restarts in the epoch's
# high 32 bits, random low bits: learner/epoch.h) and the actors follow
E0=$(num "$(lm rlhf_learner_epoch)")
S0=$(step)
$DC kill learner >/dev/null 2>&1
t=$(now_ms)
RLHF_STEPS=$((S0 + 40)) $DC up -d --no-deps learner >/dev/null 2>&1
new_epoch() { e=$(lm rlhf_learner_epoch); [ -n "$e" ] && [ "$(num "$e")" -ne "$E0" ]; }
wait_until 120 new_epoch || die "the restarted learner did not come up"
S1=$(step)
wait_until 120 step_past "$S1" || die "the restarted learner made no steps"
REC_LEARNER=$(($(now_ms) - t))
E1=$(num "$(lm rlhf_learner_epoch)")
[ $((E1 >> 32)) -gt $((E0 >> 32)) ] && [ "$E1" -ne "$E0" ] ||
    die "epoch $E1 after the restart, expected more restarts than in $E0"
A=$(running actor | head -n 1)
follows() { [ "$(num "$(cm "$A" rlhf_actor_epoch)")" -eq "$E1" ]; }
wait_until 60 follows || die "the actors did not follow epoch $E1"
say "learner killed at step $S0: up again as epoch $E1 (step $S1 when first read), training after ${REC_LEARNER} ms, actors follow"

# the end: every lease accounted for, accuracy
LC=$($DC ps -q learner)
docker wait "$LC" >/dev/null
SUM=$(docker run --rm -v "${P}_data:/data" "$IMG" cat /data/run/summary.json)
echo "$SUM" | grep -q '"accounting_ok": true' || die "accounting_ok is not true: $SUM"
ACC=$(echo "$SUM" | sed -n 's/.*"accuracy_after": \([0-9.]*\).*/\1/p' | head -n 1)
ACC0=$(echo "$SUM" | sed -n 's/.*"accuracy_start": \([0-9.]*\).*/\1/p' | head -n 1)
ACCB=$(echo "$SUM" | sed -n 's/.*"accuracy_before": \([0-9.]*\).*/\1/p' | head -n 1)
[ -n "$ACC" ] && [ -n "$ACCB" ] || die "no accuracy_before/accuracy_after in the summary: $SUM"
awk -v a="$ACC" -v t="$TARGET" 'BEGIN { exit !(a >= t) }' || die "accuracy $ACC < target $TARGET"
awk -v a="$ACC" -v b="$ACCB" -v g="$GAIN" 'BEGIN { exit !(a - b >= g) }' ||
    die "accuracy $ACCB (warm start) -> $ACC: less than the gain $GAIN"
TOTAL=$(($(date +%s) - T0))
cat >"$OUT" <<JSON
{
  "actors": 3, "reward_servers": 2, "seconds": $TOTAL,
  "recover_ms": {"actor_killed": $REC_ACTOR, "actor_disconnected_20s": $REC_NET,
                 "reward_killed": $REC_REWARD, "learner_restarted": $REC_LEARNER},
  "reissued_after_reward_kill": $RE_REWARD, "leases_expired_after_reward_kill": $EX_REWARD, "duplicates_after_disconnect": $DUPS,
  "refusals": {"learner_unauthorized": $REFUSED, "reward_unauthorized": $REFUSED_REWARD},
  "actor_cpus": $ACTOR_CPUS, "samples_per_s": {"actors_1": $SPS1, "actors_4": $SPS4, "actors_2": $SPS2},
  "learner_killed": {"step": $S0, "step_first_read_after": $S1, "epoch_before": $E0, "epoch_after": $E1},
  "prometheus": {"rlhf_learner_step": $PSTEP, "reward_mean": $PREW, "jsonl_reward_mean": $JREW},
  "accuracy_before": $ACCB, "accuracy_start": ${ACC0:-null}, "accuracy_after": $ACC,
  "accuracy_target": $TARGET, "accuracy_gain_min": $GAIN,
  "accounting_ok": true
}
JSON
say "PASS in ${TOTAL}s: accuracy $ACCB (warm start) -> $ACC (target $TARGET, gain >= $GAIN), accounting_ok; figures in $OUT"
