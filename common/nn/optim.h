/* optim: AdamW with decoupled weight decay, global-norm gradient clipping
 * and a warmup + cosine learning-rate schedule, over one flat parameter
 * block (such as model_params / model_grads).
 *
 * Update number t (t = 1, 2, ...; the step count after the update) with
 * gradient g, after clipping g to global L2 norm grad_clip, is
 *   m <- beta1 m + (1 - beta1) g          v <- beta2 v + (1 - beta2) g^2
 *   p <- p - lr_t (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 *        - lr_t weight_decay p            (decoupled, only where masked in)
 * with lr_t = optim_lr_at(cfg, t) and both terms using p before the update.
 *
 * Ownership: optim_new's caller owns the Optim, which owns its two moment
 * buffers (one allocation). Parameters, gradients and the decay mask stay the
 * caller's; gradients are never modified (clipping scales them on the fly).
 * Pointers from optim_state_m/v are borrowed for the Optim's lifetime.
 * Threading: an Optim belongs to one thread. Errors: config validation
 * returns ERR_RANGE with a reason; a non-finite gradient norm returns
 * ERR_NONFINITE and changes nothing. An invalid config given to optim_new or
 * a size mismatch is a CHECK. */
#ifndef RLHF_OPTIM_H
#define RLHF_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    float   lr_peak;         /* learning rate at the end of warmup, >= 0 */
    float   lr_min;          /* reached at lr_total_steps and held after; in [0, lr_peak] */
    int64_t lr_warmup_steps; /* linear ramp from 0 to lr_peak over this many steps, >= 0 */
    int64_t lr_total_steps;  /* cosine decay ends here, >= lr_warmup_steps */
    float   beta1;           /* first-moment decay, in [0, 1), e.g. 0.9 */
    float   beta2;           /* second-moment decay, in [0, 1), e.g. 0.95 or 0.999 */
    float   eps;             /* added to sqrt(v hat), > 0, e.g. 1e-8 */
    float   weight_decay;    /* decoupled decay per unit lr, >= 0; 0 = off */
    float   grad_clip;       /* max global L2 norm of the gradient, >= 0; 0 = off */
} OptimConfig;

typedef struct Optim Optim;

/* Checks every field against the ranges above (all must be finite). Returns
 * 0, or ERR_RANGE with a reason written to why (if non-NULL, truncated to
 * why_len). */
int optim_config_validate(const OptimConfig *cfg, char *why, size_t why_len);

/* The learning rate of update number step (step count after the update):
 * lr_peak * step / lr_warmup_steps while step < lr_warmup_steps (so 0 at
 * step 0), then cosine from lr_peak at lr_warmup_steps down to lr_min at
 * lr_total_steps, lr_min from there on. Computed in double. */
double optim_lr_at(const OptimConfig *cfg, int64_t step);

/* The global L2 norm of grads (n), accumulated in double, written to *norm.
 * Returns 0, or ERR_NONFINITE if a gradient is NaN or infinite (then *norm
 * is NaN or +inf). Squares of finite floats cannot overflow a double sum, so
 * a finite norm means finite gradients. */
int optim_grad_norm(const float *grads, size_t n, double *norm);

/* An optimizer for n > 0 parameters with zero moments and step count 0.
 * CHECKs that cfg is valid (validate outside input first); the config is
 * copied. Caller owns. */
Optim *optim_new(const OptimConfig *cfg, size_t n);
/* Releases o and sets *o to NULL; no-op on NULL. */
void optim_free(Optim **o);

/* One AdamW update of params (n) from grads (n), as in the header comment.
 * decay_mask (n) is optional: where it is 0 the parameter gets no weight
 * decay (norm gains, biases); NULL decays every parameter. Writes the
 * gradient norm before clipping to *grad_norm and the learning rate of this
 * update to *lr (both optional, written on every return).
 * Returns 0, or ERR_NONFINITE if the gradient norm is not finite: then params,
 * moments and the step count are left untouched (the caller skips the batch). */
int optim_step(Optim *o, float *params, const float *grads, const uint8_t *decay_mask,
               double *grad_norm, double *lr);

const OptimConfig *optim_config(const Optim *o);
/* Number of parameters, fixed at optim_new. */
size_t optim_n(const Optim *o);

/* Checkpoint state: the step count (updates applied so far) and the first
 * and second moments, optim_n floats each, borrowed and writable so a loader
 * can copy saved moments in. */
int64_t optim_step_count(const Optim *o);
void    optim_set_step_count(Optim *o, int64_t step);
float  *optim_state_m(Optim *o);
float  *optim_state_v(Optim *o);

#endif
