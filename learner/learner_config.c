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
