#!/bin/sh
# make stack-test: deploy/docker-stack.yml on a one-node Docker swarm, the
# way an operator deploys it on many: keys from rlhf-keygen turned into swarm
# secrets, the learner placed on the node labelled rlhf.learner=true, reward
# servers and actors as replicated services on an overlay network.
#
#   1. deploy with 2 actors and 2 reward servers     -> the learner trains
#   2. docker service scale actor=4                  -> the new tasks fetch
#                                                       weights and push groups
#   3. docker kill the learner's container           -> swarm restarts the task,
#                                                       it resumes from its volume
#                                                       and the actors follow it
#   4. the run ends: summary.json says accounting_ok
#
# Needs the image (make image). When the daemon is not in a swarm the test
# makes a one-node swarm and leaves it at the end; a daemon already in a swarm
# is used as it is (its node gets the label for the test's duration). The
# stack, its volume and the key set are removed on exit, failed or not.
# Figures go to build/stack-test.json.
set -eu
cd "$(dirname "$0")/../.."
P=rlhfst$$
IMG=${RLHF_IMAGE:-rlhf:latest}
OUT=build/stack-test.json
T0=$(date +%s)
mkdir -p build
KEYS=$(mktemp -d)
INITED=0
NODE=""

say() { echo "stack-test [$(($(date +%s) - T0))s]: $*"; }
die() { say "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
num() { printf '%.0f' "${1:-0}"; }
wait_until() { lim=$1; shift; end=$(($(date +%s) + lim))
    while ! "$@"; do [ "$(date +%s)" -lt $end ] || return 1; sleep 1; done; }
# tasks SERVICE: the ids of the service's running containers on this node
tasks() { docker ps -q --filter "label=com.docker.swarm.service.name=${P}_$1"; }
# cm CONTAINER METRIC: a metric of a container's daemon (empty when unreachable)
cm() { docker exec "$1" curl -fsS 127.0.0.1:9100/metrics 2>/dev/null |
    awk -v k="$2" 'index($0, k " ") == 1 { print $2; exit }'; }
lm() { c=$(tasks learner | head -n 1); [ -n "$c" ] && cm "$c" "$1"; }
step() { num "$(lm rlhf_learner_step)"; }
step_past() { [ "$(step)" -gt "$1" ]; }

cleanup() {
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "stack-test: FAILED (rc $rc); last learner log:"
        docker service logs --tail 30 "${P}_learner" 2>/dev/null || true
    fi
    docker stack rm "$P" >/dev/null 2>&1 || true
    # the stack's containers go asynchronously; the volume only after them
    i=0
    while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$P")" ] && [ $i -lt 60 ]; do
        sleep 1; i=$((i + 1))
    done
    docker volume rm "${P}_data" >/dev/null 2>&1 || true
    i=0
    while docker network inspect "${P}_rlhf" >/dev/null 2>&1 && [ $i -lt 30 ]; do
        sleep 1; i=$((i + 1))
    done
    if [ -n "$NODE" ] && [ $INITED -eq 0 ]; then
        docker node update --label-rm rlhf.learner "$NODE" >/dev/null 2>&1 || true
    fi
    if [ $INITED -eq 1 ]; then
        docker swarm leave --force >/dev/null 2>&1 || true
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
    rm -rf "$KEYS"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

docker image inspect "$IMG" >/dev/null 2>&1 || die "no image $IMG: run make image first"

if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
    # a host with several addresses needs one named: the default route's
    ADDR=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    docker swarm init ${ADDR:+--advertise-addr "$ADDR"} >/dev/null ||
        die "docker swarm init failed"
    INITED=1
    say "made a one-node swarm${ADDR:+ on $ADDR}"
fi
NODE=$(docker info -f '{{.Swarm.NodeID}}')
docker node update --label-add rlhf.learner=true "$NODE" >/dev/null

# keys at deploy time, as the operator makes them: rlhf-keygen in the image
chmod 0777 "$KEYS"
docker run --rm -v "$KEYS:/keys" "$IMG" rlhf-keygen --log-level warn --dir /keys/set >/dev/null
docker run --rm -v "$KEYS:/keys" --user 0 "$IMG" chmod -R a+rX /keys/set

say "deploying the stack: 2 actors, 2 reward servers"
# Steps enough that the run outlasts the scale-up and the learner's restart
# below (the tiny model makes about 6 steps a second; 120 were over before
# the two new actors had started).
RLHF_IMAGE=$IMG RLHF_KEYS=$KEYS/set RLHF_ACTORS=2 RLHF_REWARDS=2 \
    RLHF_SFT_STEPS=300 RLHF_MAX_DIGITS=1 RLHF_LABEL_NOISE=0 RLHF_STEPS=${STACK_STEPS:-600} \
    RLHF_BATCH_GROUPS=8 RLHF_EVAL_N=100 RLHF_LR=0.00005 \
    RLHF_SFT_ARGS="--dim 128 --layers 2 --hidden 256 --eval-n 100" \
    RLHF_LEARNER_ARGS="--lease-timeout-ms 3000 --max-staleness 50 --ckpt-every 10 --status-every 2" \
    RLHF_ACTOR_ARGS="--batch 16" RLHF_REWARD_RESOLVE_MS=1000 \
    docker stack deploy -c deploy/docker-stack.yml "$P" >/dev/null
wait_until 300 step_past 3 || die "the learner made no steps"
say "training (step $(step))"

# 2. scale the actors up mid-run: every task fetches weights and pushes groups
docker service scale -d "${P}_actor=4" >/dev/null
four_actors() { [ "$(tasks actor | wc -l)" -eq 4 ]; }
wait_until 120 four_actors || die "the actor service did not reach 4 tasks"
all_push() { for c in $(tasks actor); do
        [ "$(num "$(cm "$c" rlhf_actor_groups_total)")" -gt 0 ] || return 1; done; }
t=$(now_ms)
wait_until 120 all_push || die "not every actor of the 4 pushed a group"
JOIN_MS=$(($(now_ms) - t))
say "scaled to 4 actors: every one pushing groups (${JOIN_MS} ms after the last task ran)"

# 3. kill the learner's container: swarm restarts the task on the same node,
# the task resumes from the checkpoint in its volume and the actors follow
E0=$(num "$(lm rlhf_learner_epoch)")
S0=$(step)
OLD=$(tasks learner)
docker kill "$OLD" >/dev/null
t=$(now_ms)
new_learner() { c=$(tasks learner); [ -n "$c" ] && [ "$c" != "$OLD" ]; }
wait_until 120 new_learner || die "swarm did not restart the learner"
resumed() { [ "$(num "$(lm rlhf_learner_epoch)")" -ne "$E0" ] && step_past 0; }
wait_until 120 resumed || die "the restarted learner did not resume"
REC_LEARNER=$(($(now_ms) - t))
E1=$(num "$(lm rlhf_learner_epoch)")
S1=$(step)
A=$(tasks actor | head -n 1)
follows() { [ "$(num "$(cm "$A" rlhf_actor_epoch)")" -eq "$E1" ]; }
wait_until 60 follows || die "the actors did not follow the learner's epoch $E1"
say "learner killed at step $S0 (epoch $E0): resumed as epoch $E1 at step $S1 after ${REC_LEARNER} ms, actors follow"

# 4. the end of the run: every lease accounted for
# (a learner that finished exits 0 and is not restarted: read its volume)
summary() { docker run --rm -v "${P}_data:/data" "$IMG" cat /data/run/summary.json 2>/dev/null; }
done_run() { summary >/dev/null; }
wait_until 600 done_run || die "the run did not finish"
SUM=$(summary)
echo "$SUM" | grep -q '"accounting_ok": true' || die "accounting_ok is not true: $SUM"
ACC=$(echo "$SUM" | sed -n 's/.*"accuracy_after": \([0-9.]*\).*/\1/p' | head -n 1)
TOTAL=$(($(date +%s) - T0))
cat >"$OUT" <<JSON
{
  "swarm_nodes": 1, "actors": "2 -> 4", "reward_servers": 2, "seconds": $TOTAL,
  "scaled_actors_all_pushing_ms": $JOIN_MS,
  "learner_killed": {"step": $S0, "epoch_before": $E0, "epoch_after": $E1, "resumed_at_step": $S1,
                     "recover_ms": $REC_LEARNER},
  "accuracy_after": ${ACC:-null}, "accounting_ok": true
}
JSON
say "PASS in ${TOTAL}s: accounting_ok, accuracy ${ACC:-?}; figures in $OUT"
