/* cluster_test: fault and hostile-input tests of the cluster with real
 * processes on real sockets: rlhf-learner, rlhf-reward and rlhf-actor
 * started from the build directory, talking over tcp loopback, killed with
 * SIGKILL and restarted mid-run, and fed malformed frames from ZeroMQ sockets
 * of the test process.
 *
 * The programs are looked up in RLHF_BUILD_DIR (set by `make test`), else
 * beside the running test binary. Each test picks a random block of free
 * loopback ports in 20000..31999 (avoiding 27000..28099, which other local
 * clusters use) and starts over on fresh ports if a daemon cannot bind one.
 * The model is a tiny random-init policy (--dim 32 --layers 1), so a run of
 * a few dozen steps takes seconds.
 *
 * Every child runs in its own process group with SIGKILL as its parent-death
 * signal; each test kills the groups of whatever is still running and
 * removes its temp directory (under $TMPDIR, default /tmp) whatever the
 * outcome. Failures are reported on stderr with the tail of every daemon's
 * log. Each function returns the number of failed checks (0 = pass). */
#ifndef RLHF_CLUSTER_TEST_H
#define RLHF_CLUSTER_TEST_H

#include <stdbool.h>

/* kill -9 of one of two actors while it holds a lease: the lease is
 * re-issued after its deadline, the other actor finishes every step, and
 * the accounting identity holds in every metrics record and the summary. */
int cluster_fault_actor_selftest(bool verbose);

/* kill -9 of the learner after a checkpoint, then a restart with the same
 * flags: it resumes from the checkpoint (same run id, epoch + 1, version and
 * step of the checkpoint), the running actors follow it without a restart,
 * and the run completes with consistent counters. */
int cluster_fault_learner_selftest(bool verbose);

/* kill -9 of the reward server while groups wait in it, then a restart on
 * the same port: the lost groups come back as re-issued leases and the run
 * completes with the identity intact. */
int cluster_fault_reward_selftest(bool verbose);

/* Garbage, truncated protobufs, oversized frames (WIRE_MAX_FRAME + 1), a
 * wrong protocol version, out-of-range token ids and numbers, NaN and
 * infinite values, sent from the test's own DEALER and PUSH sockets to the
 * learner's lease ROUTER, snapshot ROUTER and results PULL and the reward
 * server's samples PULL, and to the actor (which binds nothing) through a
 * proxy between it and the learner that forwards its traffic and slips in
 * bad announces, grants and chunks and one NaN-holding snapshot. Each daemon
 * counts every frame under the expected reason (status lines, the learner's
 * metrics and summary), logs it, answers refused requests with an
 * ErrorReply (learner), keeps serving, and the run completes. */
int cluster_hostile_selftest(bool verbose);

#endif
