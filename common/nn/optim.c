#include "common/nn/optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/nn/cpu.h"

struct Optim {
    OptimConfig cfg;
    size_t      n;     /* parameters */
    int64_t     step;  /* updates applied so far */
    float      *m;     /* (n) first moment, view into block */
    float      *v;     /* (n) second moment, view into block */
    float      *block; /* (2n) the one allocation behind m and v */
};

int optim_config_validate(const OptimConfig *cfg, char *why, size_t why_len)
{
    CHECK(cfg);
    const struct {
        const char *name;
        float       value;
    } floats[] = {
        {"lr_peak", cfg->lr_peak},     {"lr_min", cfg->lr_min}, {"beta1", cfg->beta1},
        {"beta2", cfg->beta2},         {"eps", cfg->eps},       {"weight_decay", cfg->weight_decay},
        {"grad_clip", cfg->grad_clip},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        if (!isfinite(floats[i].value)) {
            err_why(why, why_len, "optim: %s %g, expected finite", floats[i].name,
                    (double)floats[i].value);
            return ERR_RANGE;
        }
    if (cfg->lr_peak < 0.0f) {
        err_why(why, why_len, "optim: lr_peak %g, expected >= 0", (double)cfg->lr_peak);
        return ERR_RANGE;
    }
    if (cfg->lr_min < 0.0f || cfg->lr_min > cfg->lr_peak) {
        err_why(why, why_len, "optim: lr_min %g, expected in [0, lr_peak = %g]",
                (double)cfg->lr_min, (double)cfg->lr_peak);
        return ERR_RANGE;
    }
    if (cfg->lr_warmup_steps < 0) {
        err_why(why, why_len, "optim: lr_warmup_steps %" PRId64 ", expected >= 0",
                cfg->lr_warmup_steps);
        return ERR_RANGE;
    }
    if (cfg->lr_total_steps < cfg->lr_warmup_steps) {
        err_why(why, why_len,
                "optim: lr_total_steps %" PRId64 ", expected >= lr_warmup_steps = %" PRId64,
                cfg->lr_total_steps, cfg->lr_warmup_steps);
        return ERR_RANGE;
    }
    if (cfg->beta1 < 0.0f || cfg->beta1 >= 1.0f) {
        err_why(why, why_len, "optim: beta1 %g, expected in [0, 1)", (double)cfg->beta1);
        return ERR_RANGE;
    }
    if (cfg->beta2 < 0.0f || cfg->beta2 >= 1.0f) {
        err_why(why, why_len, "optim: beta2 %g, expected in [0, 1)", (double)cfg->beta2);
        return ERR_RANGE;
    }
    if (cfg->eps <= 0.0f) {
        err_why(why, why_len, "optim: eps %g, expected > 0", (double)cfg->eps);
        return ERR_RANGE;
    }
    if (cfg->weight_decay < 0.0f) {
        err_why(why, why_len, "optim: weight_decay %g, expected >= 0 (0 = off)",
                (double)cfg->weight_decay);
        return ERR_RANGE;
    }
    if (cfg->grad_clip < 0.0f) {
        err_why(why, why_len, "optim: grad_clip %g, expected >= 0 (0 = off)",
                (double)cfg->grad_clip);
        return ERR_RANGE;
    }
    if (why && why_len) why[0] = '\0';
    return 0;
}

double optim_lr_at(const OptimConfig *cfg, int64_t step)
{
    CHECK(cfg && step >= 0);
    double  peak = cfg->lr_peak, lo = cfg->lr_min;
    int64_t warm = cfg->lr_warmup_steps, total = cfg->lr_total_steps;
    if (step < warm) return peak * (double)step / (double)warm;
    if (step >= total) return lo;
    /* Here warm <= step < total, so the division is safe. */
    double progress = (double)(step - warm) / (double)(total - warm);
    return lo + 0.5 * (peak - lo) * (1.0 + cos(M_PI * progress));
}

RLHF_HOT int optim_grad_norm(const float *grads, size_t n, double *norm)
{
    CHECK(grads && norm);
    /* Four independent double sums: float would overflow above ~1.8e19 per
     * element squared sum, and one long chain of additions is latency bound. */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double a = grads[i], b = grads[i + 1], c = grads[i + 2], d = grads[i + 3];
        s0 += a * a;
        s1 += b * b;
        s2 += c * c;
        s3 += d * d;
    }
    for (; i < n; i++) s0 += (double)grads[i] * grads[i];
    *norm = sqrt((s0 + s1) + (s2 + s3));
    return isfinite(*norm) ? 0 : ERR_NONFINITE;
}

Optim *optim_new(const OptimConfig *cfg, size_t n)
{
    CHECK(cfg && n > 0 && n <= SIZE_MAX / (2 * sizeof(float)));
    CHECK(optim_config_validate(cfg, NULL, 0) == 0);
    Optim *o = xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->block = xmalloc_aligned(2 * n * sizeof(float));
    memset(o->block, 0, 2 * n * sizeof(float));
    o->m = o->block;
    o->v = o->block + n;
    return o;
}

void optim_free(Optim **o)
{
    if (!o || !*o) return;
    free((*o)->block);
    free(*o);
    *o = NULL;
}

/* The AdamW update of every parameter, with the step's constants folded in
 * by optim_step. */
static RLHF_HOT void adamw_update(Optim *o, float *params, const float *grads,
                                  const uint8_t *decay_mask, float scale, float step_size,
                                  float inv_sqrt_bc2, float decay)
{
    const OptimConfig *c = &o->cfg;
    float              b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    float              one_b1 = 1.0f - b1, one_b2 = 1.0f - b2;
    float             *m = o->m, *v = o->v;
    for (size_t i = 0; i < o->n; i++) {
        float g = grads[i] * scale;
        m[i] = b1 * m[i] + one_b1 * g;
        v[i] = b2 * v[i] + one_b2 * g * g;
        float d = (!decay_mask || decay_mask[i]) ? decay : 0.0f;
        float p = params[i];
        /* Decoupled decay: shrinks p by lr * wd directly instead of adding
         * wd * p to the gradient, so Adam's scaling does not touch it. */
        params[i] = p - d * p - step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

int optim_step(Optim *o, float *params, const float *grads, const uint8_t *decay_mask,
               double *grad_norm, double *lr)
{
    CHECK(o && params && grads);
    const OptimConfig *c = &o->cfg;
    int64_t            t = o->step + 1;
    double             lr_t = optim_lr_at(c, t);
    double             norm;
    int                rc = optim_grad_norm(grads, o->n, &norm);
    if (grad_norm) *grad_norm = norm;
    if (lr) *lr = lr_t;
    if (rc != 0) {
        log_warn("optim_step: update %" PRId64 ": gradient norm %g, expected finite; skipped", t,
                 norm);
        return rc;
    }

    float scale = 1.0f;
    if (c->grad_clip > 0.0f && norm > c->grad_clip) scale = (float)(c->grad_clip / norm);

    /* Bias corrections in double: 1 - beta^t cancels badly in float for
     * beta2 near 1 and small t. Folding them into two constants keeps the
     * loop to float multiply-adds and one square root per parameter. */
    double bc1 = 1.0 - pow(c->beta1, (double)t);
    double bc2 = 1.0 - pow(c->beta2, (double)t);
    float  step_size = (float)(lr_t / bc1);
    float  inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    float  decay = (float)(lr_t * c->weight_decay);
    adamw_update(o, params, grads, decay_mask, scale, step_size, inv_sqrt_bc2, decay);
    o->step = t;
    return 0;
}

const OptimConfig *optim_config(const Optim *o)
{
    CHECK(o);
    return &o->cfg;
}

size_t optim_n(const Optim *o)
{
    CHECK(o);
    return o->n;
}

int64_t optim_step_count(const Optim *o)
{
    CHECK(o);
    return o->step;
}

void optim_set_step_count(Optim *o, int64_t step)
{
    CHECK(o && step >= 0);
    o->step = step;
}

float *optim_state_m(Optim *o)
{
    CHECK(o);
    return o->m;
}

float *optim_state_v(Optim *o)
{
    CHECK(o);
    return o->v;
}
