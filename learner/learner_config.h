/* learner_config: what the learner derives from its LearnerConfig, for the
 * learner itself and for whoever reproduces its loop (the in-process side
 * of tests/bench/bench_cluster.c). Pure functions of the config; no
 * ownership, any thread. */
#ifndef RLHF_LEARNER_CONFIG_H
#define RLHF_LEARNER_CONFIG_H

#include <stddef.h>

#include "common/nn/optim.h"
#include "learner/learner.h"

/* The policy's optimizer settings: AdamW at a constant rate c->lr after
 * c->lr_warmup_steps of linear warmup, global norm clip c->grad_clip. */
OptimConfig learner_optim_config(const LearnerConfig *c);

/* The groups one peer may hold in flight (learner/lease.h, Credit):
 * c->lease_credit, or by default one batch but at most half the lease
 * table's capacity ((max_staleness + 1) * batch_groups), so that a peer
 * that never answers leaves the other half to the rest; never less than
 * one lease (lease_prompts). */
int learner_lease_credit(const LearnerConfig *c);

/* Bytes of weight snapshots the snapshot socket may hold queued for its
 * peers at once: c->snapshot_queue_mb MiB, or by default the larger of
 * 256 MiB and four snapshots of snapshot_bytes (what four actors fetching
 * together need). */
size_t learner_snapshot_budget(const LearnerConfig *c, size_t snapshot_bytes);

#endif
