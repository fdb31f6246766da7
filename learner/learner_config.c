#include "learner/learner_config.h"

OptimConfig learner_optim_config(const LearnerConfig *c)
{
    /* Constant rate after a short warmup: RL runs are short and the
     * schedule counts optimizer steps, which depend on epochs/minibatches. */
    return (OptimConfig){.lr_peak = c->lr,
                         .lr_min = c->lr,
                         .lr_warmup_steps = c->lr_warmup_steps,
                         .lr_total_steps = c->lr_warmup_steps,
                         .beta1 = 0.9f,
                         .beta2 = 0.99f,
                         .eps = 1e-8f,
                         .weight_decay = 0.0f,
                         .grad_clip = c->grad_clip};
}

int learner_lease_credit(const LearnerConfig *c)
{
    if (c->lease_credit > 0) return c->lease_credit;
    int64_t cap = (int64_t)(c->max_staleness + 1) * c->batch_groups;
    int64_t credit = c->batch_groups < cap / 2 ? c->batch_groups : cap / 2;
    if (credit < c->lease_prompts) credit = c->lease_prompts;
    return (int)credit;
}

size_t learner_snapshot_budget(const LearnerConfig *c, size_t snapshot_bytes)
{
    if (c->snapshot_queue_mb > 0) return (size_t)c->snapshot_queue_mb << 20;
    size_t four = 4 * snapshot_bytes, floor_bytes = (size_t)256 << 20;
    return four > floor_bytes ? four : floor_bytes;
}
