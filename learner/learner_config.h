/* learner_config: what the learner derives from its LearnerConfig, for the
 * learner itself and for whoever reproduces its loop (the in-process side
 * of tests/bench/bench_cluster.c). Pure functions of the config; no
 * ownership, any thread. */
#ifndef RLHF_LEARNER_CONFIG_H
#define RLHF_LEARNER_CONFIG_H

#include "common/nn/optim.h"
#include "learner/learner.h"

/* The policy's optimizer settings: AdamW at a constant rate c->lr after
 * c->lr_warmup_steps of linear warmup, global norm clip c->grad_clip. */
OptimConfig learner_optim_config(const LearnerConfig *c);

#endif
