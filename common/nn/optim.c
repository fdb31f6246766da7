#include "tests/test_list.h"
#include "common/nn/optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/rng.h"

struct Optim {
    OptimConfig cfg;
    size_t      n;     /* parameters */
    int64_t     step;  /* updates applied so far */
    float      *m;     /* (n) first moment, view into block */
    float      *v;     /* (n) second moment, view into block */
    float      *block; /* (2n) the one allocation behind m and v */
};

static void set_why(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

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
            set_why(why, why_len, "optim: %s %g, expected finite", floats[i].name,
                    (double)floats[i].value);
            return ERR_RANGE;
        }
    if (cfg->lr_peak < 0.0f) {
        set_why(why, why_len, "optim: lr_peak %g, expected >= 0", (double)cfg->lr_peak);
        return ERR_RANGE;
    }
    if (cfg->lr_min < 0.0f || cfg->lr_min > cfg->lr_peak) {
        set_why(why, why_len, "optim: lr_min %g, expected in [0, lr_peak = %g]",
                (double)cfg->lr_min, (double)cfg->lr_peak);
        return ERR_RANGE;
    }
    if (cfg->lr_warmup_steps < 0) {
        set_why(why, why_len, "optim: lr_warmup_steps %" PRId64 ", expected >= 0",
                cfg->lr_warmup_steps);
        return ERR_RANGE;
    }
    if (cfg->lr_total_steps < cfg->lr_warmup_steps) {
        set_why(why, why_len,
                "optim: lr_total_steps %" PRId64 ", expected >= lr_warmup_steps = %" PRId64,
                cfg->lr_total_steps, cfg->lr_warmup_steps);
        return ERR_RANGE;
    }
    if (cfg->beta1 < 0.0f || cfg->beta1 >= 1.0f) {
        set_why(why, why_len, "optim: beta1 %g, expected in [0, 1)", (double)cfg->beta1);
        return ERR_RANGE;
    }
    if (cfg->beta2 < 0.0f || cfg->beta2 >= 1.0f) {
        set_why(why, why_len, "optim: beta2 %g, expected in [0, 1)", (double)cfg->beta2);
        return ERR_RANGE;
    }
    if (cfg->eps <= 0.0f) {
        set_why(why, why_len, "optim: eps %g, expected > 0", (double)cfg->eps);
        return ERR_RANGE;
    }
    if (cfg->weight_decay < 0.0f) {
        set_why(why, why_len, "optim: weight_decay %g, expected >= 0 (0 = off)",
                (double)cfg->weight_decay);
        return ERR_RANGE;
    }
    if (cfg->grad_clip < 0.0f) {
        set_why(why, why_len, "optim: grad_clip %g, expected >= 0 (0 = off)",
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

int optim_grad_norm(const float *grads, size_t n, double *norm)
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
    float  b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    float  one_b1 = 1.0f - b1, one_b2 = 1.0f - b2;
    float *m = o->m, *v = o->v;
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

/* ---- self-test ---------------------------------------------------------- */

/* Passes when |got - want| <= tol * max(|want|, floor): relative, except
 * near zero. */
static bool close_to(double got, double want, double tol, const char *what, bool verbose)
{
    double floor = 1e-3;
    bool   ok = fabs(got - want) <= tol * fmax(fabs(want), floor);
    if (!ok || verbose)
        printf("  optim: %-28s %.10f want %.10f (|diff| %.1e, rel tol %.0e)%s\n", what, got, want,
               fabs(got - want), tol, ok ? "" : "  FAIL");
    return ok;
}

/* Three updates of a 3-vector, checked against numbers worked out by hand
 * (derivation in the comments). lr follows warmup 2, total 4: 0.05, 0.1,
 * 0.055; beta1 0.9, beta2 0.999, eps 1e-3 (large so that its place in the
 * formula shows), weight decay 0.1 except on the masked-out third entry. */
static int test_worked_example(bool verbose)
{
    OptimConfig cfg = {.lr_peak = 0.1f,
                       .lr_min = 0.01f,
                       .lr_warmup_steps = 2,
                       .lr_total_steps = 4,
                       .beta1 = 0.9f,
                       .beta2 = 0.999f,
                       .eps = 1e-3f,
                       .weight_decay = 0.1f,
                       .grad_clip = 0.0f};
    Optim      *o = optim_new(&cfg, 3);
    float       p[3] = {1.0f, -2.0f, 0.5f};
    uint8_t     mask[3] = {1, 1, 0};
    const float g[3][3] = {{0.1f, -0.2f, 0.0f}, {0.3f, 0.1f, -0.5f}, {-0.2f, 0.0f, 0.4f}};
    /* Update 1 (lr 0.05): m = 0.1 g, v = 0.001 g^2, so m hat = g and
     * v hat = g^2 and the step is g / (|g| + eps):
     *   p0 = 1 - 0.05 * 0.1 / 0.101 - 0.05 * 0.1 * 1   = 0.9454950495
     *   p1 = -2 + 0.05 * 0.2 / 0.201 + 0.05 * 0.1 * 2 = -1.9402487562
     *   p2 = 0.5 (zero gradient gives m = v = 0 and a zero step; no decay).
     * Update 2 (lr 0.1, bc1 = 0.19, bc2 = 0.001999):
     *   m = (0.039, -0.008, -0.05), v = (9.999e-5, 4.996e-5, 2.5e-4);
     *   p0 = 0.94549505 * 0.99 - 0.1 * (0.039 / 0.19) / (sqrt(9.999e-5 / 0.001999) + 1e-3)
     *      = 0.9360401 - 0.1 * 0.2052632 / 0.2246515 = 0.8446705225
     *   p2 = 0.5 + 0.1 * (0.05 / 0.19) / (sqrt(2.5e-4 / 0.001999) + 1e-3) = 0.5742038546.
     * Update 3 (lr 0.055, bc1 = 0.271, bc2 = 0.002997001):
     *   m = (0.0151, -0.0072, -0.005), v = (1.3989001e-4, 4.991004e-5, 4.0975e-4).
     * The config holds floats: 0.1f is 0.1 + 1.5e-9 and 1 - 0.999f is 0.001 -
     * 1.3e-8, so the learning rates match to 1e-7 and the second moments only to
     * 1e-4 (relative); the parameters, where these cancel, to 1e-6. */
    const double want_p[3][3] = {{0.9454950495, -1.9402487562, 0.5000000000},
                                 {0.8446705225, -1.8943799773, 0.5742038546},
                                 {0.8259054783, -1.8727245966, 0.5769408522}};
    const double want_m[3] = {0.0151, -0.0072, -0.005};
    const double want_v[3] = {1.3989001e-4, 4.991004e-5, 4.0975e-4};
    const double want_lr[3] = {0.05, 0.1, 0.055};
    bool         ok = true;
    char         what[64];
    for (int s = 0; s < 3; s++) {
        double norm, lr;
        if (optim_step(o, p, g[s], mask, &norm, &lr) != 0) ok = false;
        snprintf(what, sizeof what, "update %d lr", s + 1);
        ok &= close_to(lr, want_lr[s], 1e-7, what, verbose);
        for (int i = 0; i < 3; i++) {
            snprintf(what, sizeof what, "update %d p[%d]", s + 1, i);
            ok &= close_to(p[i], want_p[s][i], 1e-6, what, verbose);
        }
    }
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "m[%d] after 3", i);
        ok &= close_to(optim_state_m(o)[i], want_m[i], 1e-6, what, verbose);
        snprintf(what, sizeof what, "v[%d] after 3", i);
        ok &= close_to(optim_state_v(o)[i], want_v[i], 1e-4, what, verbose);
    }
    ok &= optim_step_count(o) == 3;

    /* Decay is decoupled: a zero gradient leaves the Adam step at 0 and
     * shrinks every parameter (NULL mask) by exactly 1 - lr * wd. */
    Optim *z = optim_new(&cfg, 3);
    float  q[3] = {1.0f, -2.0f, 0.5f}, zero[3] = {0};
    double lr;
    optim_set_step_count(z, 1); /* the next update uses lr_at(2) = 0.1 */
    if (optim_step(z, q, zero, NULL, NULL, &lr) != 0) ok = false;
    ok &= close_to(q[2], 0.5 * (1.0 - 0.1 * 0.1), 1e-7, "decay only, NULL mask", verbose);
    ok &= q[0] == 1.0f * (1.0f - 0.01f) && q[1] == -2.0f * (1.0f - 0.01f);
    optim_free(&z);
    optim_free(&o);
    ok &= o == NULL;
    optim_free(&o); /* no-op on NULL */
    return ok ? 0 : 1;
}

static int test_schedule(bool verbose)
{
    OptimConfig cfg = {.lr_peak = 1e-3f,
                       .lr_min = 1e-4f,
                       .lr_warmup_steps = 100,
                       .lr_total_steps = 1100,
                       .beta1 = 0.9f,
                       .beta2 = 0.95f,
                       .eps = 1e-8f};
    double      peak = cfg.lr_peak, lo = cfg.lr_min;
    const struct {
        int64_t step;
        double  want;
    } pts[] = {
        {0, 0.0},
        {50, 0.5 * peak},
        {100, peak},                                       /* end of warmup */
        {350, lo + 0.5 * (peak - lo) * (1.0 + sqrt(0.5))}, /* cos(pi / 4) */
        {600, 0.5 * (peak + lo)},                          /* middle of the cosine */
        {1100, lo},                                        /* end */
        {5000, lo},                                        /* held after */
    };
    bool ok = true;
    char what[64];
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        snprintf(what, sizeof what, "lr_at(%" PRId64 ")", pts[i].step);
        ok &= close_to(optim_lr_at(&cfg, pts[i].step), pts[i].want, 1e-12, what, verbose);
    }
    /* Monotone after warmup; no warmup starts at the peak. */
    for (int64_t s = 101; s <= 1100; s++) ok &= optim_lr_at(&cfg, s) <= optim_lr_at(&cfg, s - 1);
    cfg.lr_warmup_steps = 0;
    ok &= optim_lr_at(&cfg, 0) == peak;

    /* Validation names the field. */
    const OptimConfig good = {1e-3f, 1e-4f, 10, 100, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    char              why[128];
    ok &= optim_config_validate(&good, why, sizeof why) == 0;
    OptimConfig bad[9];
    for (int i = 0; i < 9; i++) bad[i] = good;
    bad[0].lr_peak = NAN;
    bad[1].lr_min = 2e-3f;
    bad[2].lr_warmup_steps = -1;
    bad[3].lr_total_steps = 5;
    bad[4].beta1 = 1.0f;
    bad[5].beta2 = -0.1f;
    bad[6].eps = 0.0f;
    bad[7].weight_decay = -1.0f;
    bad[8].grad_clip = INFINITY;
    for (int i = 0; i < 9; i++) {
        why[0] = '\0';
        if (optim_config_validate(&bad[i], why, sizeof why) != ERR_RANGE || !why[0]) {
            printf("  optim: bad config %d accepted\n", i);
            ok = false;
        } else if (verbose && i == 3) {
            printf("  optim: rejects bad configs, e.g. \"%s\"\n", why);
        }
    }
    return ok ? 0 : 1;
}

/* Gradient (3, 4) has norm 5; with grad_clip 1 the optimizer must act as if
 * the gradient were (0.6, 0.8). lr 1 constant, no decay, eps 1e-3 so the
 * first Adam step g / (|g| + eps) depends on the scale of g. */
static int test_clip_and_nonfinite(bool verbose)
{
    OptimConfig cfg = {.lr_peak = 1.0f,
                       .lr_min = 1.0f,
                       .beta1 = 0.9f,
                       .beta2 = 0.999f,
                       .eps = 1e-3f,
                       .grad_clip = 1.0f};
    bool        ok = true;
    float       g[2] = {3.0f, 4.0f};
    for (int clipped = 1; clipped >= 0; clipped--) {
        cfg.grad_clip = clipped ? 1.0f : 10.0f;
        Optim *o = optim_new(&cfg, 2);
        float  p[2] = {0.0f, 0.0f};
        double norm;
        if (optim_step(o, p, g, NULL, &norm, NULL) != 0) ok = false;
        double s = clipped ? 0.2 : 1.0;
        ok &= close_to(norm, 5.0, 1e-12, clipped ? "norm before clip" : "norm, no clip", verbose);
        ok &= close_to(optim_state_m(o)[1], 0.1 * 4.0 * s, 1e-6,
                       clipped ? "m[1] clipped" : "m[1] unclipped", verbose);
        ok &= close_to(optim_state_v(o)[1], 0.001 * 16.0 * s * s, 1e-4,
                       clipped ? "v[1] clipped" : "v[1] unclipped", verbose);
        ok &= close_to(p[1], -(4.0 * s) / (4.0 * s + 1e-3), 1e-6,
                       clipped ? "p[1] clipped step" : "p[1] unclipped step", verbose);
        ok &= g[0] == 3.0f && g[1] == 4.0f; /* gradients are not modified */
        optim_free(&o);
    }

    /* The norm is accumulated in double: these squares overflow a float. */
    const float big[2] = {1e30f, 1e30f};
    double      norm;
    ok &= optim_grad_norm(big, 2, &norm) == 0 && fabs(norm / (sqrt(2.0) * 1e30) - 1.0) < 1e-6;
    ok &= optim_grad_norm(g, 2, &norm) == 0 && norm == 5.0;

    /* A NaN or infinite gradient is refused and changes nothing. */
    Optim *o = optim_new(&cfg, 2);
    float  p[2] = {1.0f, 2.0f};
    if (optim_step(o, p, g, NULL, NULL, NULL) != 0) ok = false;
    float p_before[2], m_before[2], v_before[2];
    memcpy(p_before, p, sizeof p);
    memcpy(m_before, optim_state_m(o), sizeof m_before);
    memcpy(v_before, optim_state_v(o), sizeof v_before);
    const float bad[2][2] = {{1.0f, NAN}, {INFINITY, 1.0f}};
    for (int b = 0; b < 2; b++) {
        double gn = 0.0;
        int    rc = optim_step(o, p, bad[b], NULL, &gn, NULL);
        bool   same = !memcmp(p, p_before, sizeof p) &&
                    !memcmp(optim_state_m(o), m_before, sizeof m_before) &&
                    !memcmp(optim_state_v(o), v_before, sizeof v_before) &&
                    optim_step_count(o) == 1;
        if (rc != ERR_NONFINITE || !same || isfinite(gn)) {
            printf("  optim: non-finite gradient %d: rc %d, state unchanged %d, norm %g\n", b, rc,
                   same, gn);
            ok = false;
        }
    }
    if (verbose) printf("  optim: NaN and inf gradients refused, state unchanged\n");
    optim_free(&o);
    return ok ? 0 : 1;
}

/* Minimises f(x) = 1/2 sum a_i (x_i - c_i)^2 with curvatures a_i spread over
 * two decades, clipping active early on, and checks convergence. Halfway, the
 * moments and step count are copied into a fresh Optim (a checkpoint round
 * trip) that then runs alongside on a copy of x; both must end bit for bit
 * equal. */
static int test_convergence(bool verbose)
{
    enum { N = 64, STEPS = 3000 };
    OptimConfig cfg = {.lr_peak = 0.1f,
                       .lr_min = 1e-4f,
                       .lr_warmup_steps = 50,
                       .lr_total_steps = STEPS,
                       .beta1 = 0.9f,
                       .beta2 = 0.999f,
                       .eps = 1e-8f,
                       .weight_decay = 0.0f,
                       .grad_clip = 1.0f};
    float       a[N], c[N], x[N], xr[N], g[N], gr[N];
    Rng         rng;
    rng_seed(&rng, 8);
    for (int i = 0; i < N; i++) {
        a[i] = powf(10.0f, -1.0f + 2.0f * (float)i / (N - 1));
        c[i] = 2.0f * rng_normal(&rng);
        x[i] = 0.0f;
    }
    Optim *o = optim_new(&cfg, N), *r = NULL;
    double f0 = 0.0, f = 0.0, max_err = 0.0;
    for (int i = 0; i < N; i++) f0 += 0.5 * a[i] * c[i] * c[i];
    bool ok = true;
    for (int s = 0; s < STEPS; s++) {
        if (s == STEPS / 2) {
            r = optim_new(&cfg, N);
            memcpy(optim_state_m(r), optim_state_m(o), N * sizeof(float));
            memcpy(optim_state_v(r), optim_state_v(o), N * sizeof(float));
            optim_set_step_count(r, optim_step_count(o));
            memcpy(xr, x, sizeof x);
        }
        for (int i = 0; i < N; i++) g[i] = a[i] * (x[i] - c[i]);
        if (optim_step(o, x, g, NULL, NULL, NULL) != 0) ok = false;
        if (r) {
            for (int i = 0; i < N; i++) gr[i] = a[i] * (xr[i] - c[i]);
            if (optim_step(r, xr, gr, NULL, NULL, NULL) != 0) ok = false;
        }
    }
    if (!r || memcmp(x, xr, sizeof x) != 0 || optim_step_count(r) != STEPS || optim_n(r) != N ||
        optim_config(r)->lr_peak != cfg.lr_peak) {
        printf("  optim: restored state did not continue identically\n");
        ok = false;
    } else if (verbose) {
        printf("  optim: checkpoint round trip at step %d continued bit for bit\n", STEPS / 2);
    }
    for (int i = 0; i < N; i++) {
        f += 0.5 * a[i] * (x[i] - c[i]) * (x[i] - c[i]);
        max_err = fmax(max_err, fabs(x[i] - c[i]));
    }
    bool conv = f < 1e-6 * f0 && max_err < 1e-2;
    if (verbose || !conv)
        printf("  optim: quadratic, %d params, %d steps: f %.3e -> %.3e, max |x - x*| %.2e "
               "(want f < 1e-6 f0, |x - x*| < 1e-2)\n",
               N, STEPS, f0, f, max_err);
    optim_free(&r);
    optim_free(&o);
    return ok && conv ? 0 : 1;
}

/* Throughput of one update on a few million parameters, for the record. */
static void bench_step(bool verbose)
{
    if (!verbose) return;
    size_t      n = (size_t)1 << 22;
    OptimConfig cfg = {1e-3f, 1e-4f, 10, 100, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    Optim      *o = optim_new(&cfg, n);
    float      *p = xmalloc_aligned(n * sizeof(float));
    float      *g = xmalloc_aligned(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        p[i] = 0.01f * (float)(i % 97);
        g[i] = 1e-3f * (float)(i % 89) - 0.04f;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int reps = 5;
    for (int r = 0; r < reps; r++) CHECK(optim_step(o, p, g, NULL, NULL, NULL) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("  optim: step over %zu params: %.2f ms (%.2f ns/param)\n", n, 1e3 * s / reps,
           1e9 * s / reps / (double)n);
    free(g);
    free(p);
    optim_free(&o);
}

int optim_selftest(bool verbose)
{
    int fails = 0;
    fails += test_worked_example(verbose);
    fails += test_schedule(verbose);
    fails += test_clip_and_nonfinite(verbose);
    fails += test_convergence(verbose);
    bench_step(verbose);
    return fails ? 1 : 0;
}
