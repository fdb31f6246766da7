#include "tests/test_list.h"
#include "learner/algo/rl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"

/* ---- Shared helpers -------------------------------------------------------- */

/* Weight of token i; a NULL mask weighs every token 1. The CHECK also
 * rejects NaN weights. */
static double weight_at(const float *mask, size_t i)
{
    if (!mask) return 1.0;
    CHECK(mask[i] >= 0.0f);
    return mask[i];
}

/* The divisor D of every masked mean: norm if given, else the mask's sum. */
static double denominator(const float *mask, float norm, int n)
{
    CHECK(norm >= 0.0f);
    if (norm > 0.0f) return norm;
    double d = 0.0;
    for (int i = 0; i < n; i++) d += weight_at(mask, i);
    return d;
}

/* log(1 + e^x) without overflow: for large x, e^x is not formed. */
static double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

/* 1 / (1 + e^-x), forming only e^-|x| so neither tail overflows. */
static double sigmoid(double x)
{
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* e^x - 1 - x, which is r - 1 - log r for x = log r. For small x the
 * difference expm1(x) - x cancels away most digits and could even round
 * below zero, so there the Taylor series x^2/2 + x^3/6 + ... is summed. */
static double k3_of(double x)
{
    if (fabs(x) < 1e-2)
        return x * x * (0.5 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x / 720))));
    return expm1(x) - x;
}

/* Mask-weighted mean and population standard deviation of x (n) over the
 * entries with mask > 0. Returns false when nothing counts or every counted
 * value is equal: then there is no spread to normalise, and the caller
 * writes exact zeros rather than trusting mean == x to the last bit. */
static bool moments(double *mean, double *std, const float *x, const float *mask, int n)
{
    double wsum = 0.0, sum = 0.0, first = 0.0;
    bool   spread = false;
    for (int i = 0; i < n; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        if (wsum == 0.0)
            first = x[i];
        else if ((double)x[i] != first)
            spread = true;
        wsum += m;
        sum += m * x[i];
    }
    if (!spread) return false;
    *mean = sum / wsum;
    /* Two passes: the sum of squares minus the squared mean would cancel. */
    double var = 0.0;
    for (int i = 0; i < n; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        double d = x[i] - *mean;
        var += m * d * d;
    }
    *std = sqrt(var / wsum);
    return true;
}

/* ---- PPO ------------------------------------------------------------------- */

double rl_ppo_loss(float *dlogp, RlPpoStats *stats, const float *logp, const float *logp_old,
                   const float *logp_prox, const float *adv, const float *mask,
                   const RlPpoConfig *cfg, float norm, int N)
{
    CHECK(N >= 0 && logp && logp_old && adv && cfg);
    CHECK(cfg->clip_low >= 0.0f && cfg->clip_low < 1.0f && cfg->clip_high >= 0.0f);
    CHECK(cfg->ratio_cap == 0.0f || cfg->ratio_cap > 1.0f + cfg->clip_high);
    CHECK(cfg->prox_weight_cap >= 0.0f);
    const double lo = 1.0 - (double)cfg->clip_low;
    const double hi = 1.0 + (double)cfg->clip_high;
    const double cap = cfg->ratio_cap;
    const double wcap = cfg->prox_weight_cap;
    const double D = denominator(mask, norm, N);

    RlPpoStats st;
    memset(&st, 0, sizeof st);
    st.ratio_min = INFINITY;
    st.ratio_max = -INFINITY;
    double wsum = 0.0, loss = 0.0;
    for (int i = 0; i < N; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        double logq = logp_prox ? logp_prox[i] : logp_old[i];
        double logr = (double)logp[i] - logq;
        double r = exp(logr);
        double a = adv[i];
        double w = 1.0;
        if (logp_prox) {
            w = exp(logq - (double)logp_old[i]);
            if (wcap > 0.0 && w > wcap) {
                w = wcap;
                st.weight_cap_frac += m;
            }
        }
        /* min(ru * A, rc * A) case by case. For A > 0 only the ceiling can
         * be the smaller term (the cap exceeds it); for A < 0 the floor or,
         * above the cap, the cap. In each clipped case the chosen term is a
         * constant, so the gradient is zero. */
        double eff = r;
        bool   flows = true;
        if (a > 0.0 && r > hi) {
            eff = hi;
            flows = false;
            st.clip_high_frac += m;
        } else if (a < 0.0 && r < lo) {
            eff = lo;
            flows = false;
            st.clip_low_frac += m;
        } else if (a < 0.0 && cap > 0.0 && r > cap) {
            eff = cap;
            flows = false;
            st.cap_frac += m;
        }
        loss -= m * w * eff * a;
        /* d(r)/d(logp) = r. */
        if (dlogp && flows) dlogp[i] += (float)(-m * w * a * r / D);

        wsum += m;
        st.n_tokens++;
        st.ratio_mean += m * r;
        st.ratio_min = fmin(st.ratio_min, r);
        st.ratio_max = fmax(st.ratio_max, r);
        st.approx_kl += m * k3_of(logr);
        st.weight_mean += m * w;
    }
    if (stats) {
        if (wsum > 0.0) {
            st.clip_low_frac /= wsum;
            st.clip_high_frac /= wsum;
            st.clip_frac = st.clip_low_frac + st.clip_high_frac;
            st.cap_frac /= wsum;
            st.ratio_mean /= wsum;
            st.approx_kl /= wsum;
            st.weight_mean /= wsum;
            st.weight_cap_frac /= wsum;
        } else {
            st.ratio_min = st.ratio_max = 0.0;
        }
        *stats = st;
    }
    return D > 0.0 ? loss / D : 0.0;
}

/* ---- Advantages ------------------------------------------------------------ */

void rl_gae(float *adv, float *ret, const float *rewards, const float *values, float bootstrap,
            float gamma, float lambda, int T)
{
    CHECK(T >= 0 && adv && rewards && values);
    CHECK(gamma >= 0.0f && gamma <= 1.0f && lambda >= 0.0f && lambda <= 1.0f);
    const double gl = (double)gamma * lambda;
    double       next_v = bootstrap, a = 0.0;
    for (int t = T - 1; t >= 0; t--) {
        /* Read both inputs before writing, so the outputs may alias them. */
        double r = rewards[t], v = values[t];
        double delta = r + gamma * next_v - v;
        a = delta + gl * a;
        adv[t] = (float)a;
        if (ret) ret[t] = (float)(a + v);
        next_v = v;
    }
}

void rl_gae_batch(float *adv, float *ret, const float *rewards, const float *values,
                  const float *bootstrap, const int *lens, float gamma, float lambda, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && lens);
    for (int b = 0; b < B; b++) {
        CHECK(lens[b] >= 0 && lens[b] <= T);
        size_t off = (size_t)b * T;
        rl_gae(adv + off, ret ? ret + off : NULL, rewards + off, values + off,
               bootstrap ? bootstrap[b] : 0.0f, gamma, lambda, lens[b]);
        for (int t = lens[b]; t < T; t++) {
            adv[off + t] = 0.0f;
            if (ret) ret[off + t] = 0.0f;
        }
    }
}

void rl_group_advantages(float *adv, const float *rewards, bool divide_std, int n_groups, int G)
{
    CHECK(n_groups >= 0 && G >= 1 && adv && rewards);
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * G;
        float       *out = adv + (size_t)g * G;
        double       mean, std;
        if (!moments(&mean, &std, r, NULL, G)) {
            for (int i = 0; i < G; i++) out[i] = 0.0f;
            continue;
        }
        double scale = divide_std ? 1.0 / (std + RL_STD_EPS) : 1.0;
        for (int i = 0; i < G; i++) out[i] = (float)((r[i] - mean) * scale);
    }
}

void rl_whiten(float *out, const float *x, const float *mask, int N)
{
    CHECK(N >= 0 && out && x);
    double mean, std;
    if (!moments(&mean, &std, x, mask, N)) {
        for (int i = 0; i < N; i++) out[i] = 0.0f;
        return;
    }
    double scale = 1.0 / (std + RL_STD_EPS);
    for (int i = 0; i < N; i++)
        out[i] = weight_at(mask, i) > 0.0 ? (float)((x[i] - mean) * scale) : 0.0f;
}

/* ---- KL -------------------------------------------------------------------- */

/* The estimator for d = logp - logp_ref, and its derivative w.r.t. logp. */
static double kl_of(RlKl kind, double d, double *deriv)
{
    switch (kind) {
    case RL_KL_K1:
        *deriv = 1.0;
        return d;
    case RL_KL_K2:
        *deriv = d;
        return 0.5 * d * d;
    case RL_KL_K3:
        /* log r = -d; d/dlogp of (r - log r - 1) is 1 - r = -expm1(-d),
         * which keeps its digits for small d. */
        *deriv = -expm1(-d);
        return k3_of(-d);
    }
    CHECK(!"unknown RlKl");
    return 0.0;
}

void rl_kl(float *kl, float *dkl, const float *logp, const float *logp_ref, const float *mask,
           RlKl kind, int N)
{
    CHECK(N >= 0 && kl && logp && logp_ref);
    for (int i = 0; i < N; i++) {
        double deriv = 0.0, v = 0.0;
        if (weight_at(mask, i) > 0.0) v = kl_of(kind, (double)logp[i] - logp_ref[i], &deriv);
        kl[i] = (float)v;
        if (dkl) dkl[i] = (float)deriv;
    }
}

double rl_kl_loss(float *dlogp, const float *logp, const float *logp_ref, const float *mask,
                  RlKl kind, float beta, float norm, int N)
{
    CHECK(N >= 0 && logp && logp_ref);
    const double D = denominator(mask, norm, N);
    double       sum = 0.0;
    for (int i = 0; i < N; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        double deriv;
        sum += m * kl_of(kind, (double)logp[i] - logp_ref[i], &deriv);
        if (dlogp) dlogp[i] += (float)(beta * m * deriv / D);
    }
    return D > 0.0 ? beta * sum / D : 0.0;
}

/* ---- Entropy and value ----------------------------------------------------- */

double rl_entropy_loss(float *dentropy, const float *entropy, const float *mask, float coef,
                       float norm, int N)
{
    CHECK(N >= 0 && entropy);
    const double D = denominator(mask, norm, N);
    double       sum = 0.0;
    for (int i = 0; i < N; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        sum += m * entropy[i];
        if (dentropy) dentropy[i] += (float)(-(double)coef * m / D);
    }
    return D > 0.0 ? -(double)coef * sum / D : 0.0;
}

double rl_value_loss(float *dvalue, double *clip_frac, const float *values, const float *values_old,
                     const float *returns, const float *mask, float clip, float norm, int N)
{
    CHECK(N >= 0 && values && returns && clip >= 0.0f && (clip == 0.0f || values_old));
    const double D = denominator(mask, norm, N);
    double       sum = 0.0, wsum = 0.0, clipped_w = 0.0;
    for (int i = 0; i < N; i++) {
        double m = weight_at(mask, i);
        if (m == 0.0) continue;
        double v = values[i], R = returns[i];
        double lu = (v - R) * (v - R), l = lu;
        bool   clipped = false;
        if (clip > 0.0f) {
            double vo = values_old[i];
            double vc = fmin(fmax(v, vo - clip), vo + clip);
            double lc = (vc - R) * (vc - R);
            /* The clipped term can only win strictly when v is outside the
             * band, where vc is a constant: then no gradient. */
            if (lc > lu) {
                l = lc;
                clipped = true;
                clipped_w += m;
            }
        }
        sum += m * 0.5 * l;
        wsum += m;
        if (dvalue && !clipped) dvalue[i] += (float)(m * (v - R) / D);
    }
    if (clip_frac) *clip_frac = wsum > 0.0 ? clipped_w / wsum : 0.0;
    return D > 0.0 ? sum / D : 0.0;
}

/* ---- Pairwise preferences -------------------------------------------------- */

/* One pair of Bradley-Terry (scale 1) or DPO (scale beta, margins of
 * log-ratios): returns -log sigmoid(scale * margin), accumulates its
 * gradient divided by D w.r.t. chosen (+margin) and rejected (-margin), and
 * adds the pair's rewards to the running sums in *sums. */
static double pair_term(float *dchosen, float *drejected, RlPairStats *sums, double margin,
                        double scale, double reward_chosen, double reward_rejected, double D)
{
    double z = scale * margin;
    /* d softplus(-z) / dz = -sigmoid(-z). */
    double g = -scale * sigmoid(-z) / D;
    if (dchosen) *dchosen += (float)g;
    if (drejected) *drejected -= (float)g;
    sums->accuracy += reward_chosen > reward_rejected;
    sums->chosen_mean += reward_chosen;
    sums->rejected_mean += reward_rejected;
    sums->margin_mean += reward_chosen - reward_rejected;
    return softplus(-z);
}

static void pair_means(RlPairStats *stats, const RlPairStats *sums, int P)
{
    if (!stats) return;
    double inv = P > 0 ? 1.0 / P : 0.0;
    stats->accuracy = sums->accuracy * inv;
    stats->chosen_mean = sums->chosen_mean * inv;
    stats->rejected_mean = sums->rejected_mean * inv;
    stats->margin_mean = sums->margin_mean * inv;
}

double rl_bt_loss(float *dchosen, float *drejected, RlPairStats *stats, const float *r_chosen,
                  const float *r_rejected, float norm, int P)
{
    CHECK(P >= 0 && r_chosen && r_rejected && norm >= 0.0f);
    const double D = norm > 0.0f ? norm : P;
    RlPairStats  sums = {0};
    double       sum = 0.0;
    for (int p = 0; p < P; p++) {
        double c = r_chosen[p], r = r_rejected[p];
        sum += pair_term(dchosen ? dchosen + p : NULL, drejected ? drejected + p : NULL, &sums,
                         c - r, 1.0, c, r, D);
    }
    pair_means(stats, &sums, P);
    return D > 0.0 ? sum / D : 0.0;
}

double rl_dpo_loss(float *dchosen, float *drejected, RlPairStats *stats, const float *logp_chosen,
                   const float *logp_rejected, const float *ref_chosen, const float *ref_rejected,
                   float beta, float norm, int P)
{
    CHECK(P >= 0 && logp_chosen && logp_rejected && ref_chosen && ref_rejected);
    CHECK(beta > 0.0f && norm >= 0.0f);
    const double D = norm > 0.0f ? norm : P;
    RlPairStats  sums = {0};
    double       sum = 0.0;
    for (int p = 0; p < P; p++) {
        /* Log-ratios against the reference, formed in double so a policy
         * equal to the reference gives exactly zero. */
        double lc = (double)logp_chosen[p] - ref_chosen[p];
        double lr = (double)logp_rejected[p] - ref_rejected[p];
        sum += pair_term(dchosen ? dchosen + p : NULL, drejected ? drejected + p : NULL, &sums,
                         lc - lr, beta, beta * lc, beta * lr, D);
    }
    pair_means(stats, &sums, P);
    return D > 0.0 ? sum / D : 0.0;
}

/* ---- Tokens and sequences -------------------------------------------------- */

void rl_seq_sum(float *out, const float *x, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && out && x);
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            double m = weight_at(mask, bt);
            if (m > 0.0) s += m * x[bt];
        }
        out[b] = (float)s;
    }
}

void rl_seq_sum_backward(float *dx, const float *dout, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && dx && dout);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            dx[bt] += (float)(dout[b] * weight_at(mask, bt));
        }
}

void rl_seq_mean_weights(float *w, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && w);
    int rows = 0;
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) s += weight_at(mask, (size_t)b * T + t);
        rows += s > 0.0;
    }
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) s += weight_at(mask, (size_t)b * T + t);
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            double m = weight_at(mask, bt);
            w[bt] = m > 0.0 ? (float)(m / s / rows) : 0.0f;
        }
    }
}

/* ---- Self-test ------------------------------------------------------------- */

/* Reports a failed expectation with the values involved; returns 1 so that
 * callers can count failures. */
static int expect_near(const char *what, double got, double want, double tol)
{
    if (fabs(got - want) <= tol) return 0;
    fprintf(stderr, "rl_selftest: %s: got %.10g want %.10g (err %.3g > tol %.3g)\n", what, got,
            want, fabs(got - want), tol);
    return 1;
}

static int expect_true(const char *what, bool ok)
{
    if (ok) return 0;
    fprintf(stderr, "rl_selftest: %s\n", what);
    return 1;
}

/* ---- Finite differences. Each loss is wrapped in an evaluator over a
 * context holding its inputs; the checker perturbs one float input in place
 * and compares central differences with the analytic gradient. */

typedef double (*EvalFn)(void *ctx);

typedef struct {
    double worst_abs;  /* max |fd - g| */
    double worst_rel;  /* max |fd - g| / max(|fd|, |g|, 1e-3 * max|g|) */
    int    checked;    /* entries compared */
    int    bad_masked; /* masked entries with a nonzero gradient */
} FdResult;

/* Central differences of f w.r.t. x (n) against the analytic gradient g (n)
 * at every entry with mask != 0. Entries with mask 0 must have exactly zero
 * gradient; they are not perturbed (they may hold NaN). The step is taken in
 * float and the quotient divides by the step actually represented, so what
 * is left is the O(h^2) truncation plus the float rounding of g. The
 * relative error's floor of 1e-3 * max|g| means a gradient that should be
 * zero (a clipped token) must come out zero in absolute terms. */
static FdResult fd_measure(EvalFn f, void *ctx, float *x, const float *g, const float *mask, int n)
{
    FdResult res = {0};
    double   gmax = 0.0;
    for (int i = 0; i < n; i++)
        if (!mask || mask[i] != 0.0f) gmax = fmax(gmax, fabs((double)g[i]));
    for (int i = 0; i < n; i++) {
        if (mask && mask[i] == 0.0f) {
            res.bad_masked += g[i] != 0.0f;
            continue;
        }
        float x0 = x[i];
        float h = 1e-4f * fmaxf(1.0f, fabsf(x0));
        x[i] = x0 + h;
        double xp = x[i], lp = f(ctx);
        x[i] = x0 - h;
        double xm = x[i], lm = f(ctx);
        x[i] = x0;
        double fd = (lp - lm) / (xp - xm);
        double err = fabs(fd - g[i]);
        double ref = fmax(fmax(fabs(fd), fabs((double)g[i])), 1e-3 * gmax);
        res.worst_abs = fmax(res.worst_abs, err);
        res.worst_rel = fmax(res.worst_rel, ref > 0.0 ? err / ref : err);
        res.checked++;
    }
    return res;
}

/* fd_measure with a verdict: fails (returns 1) and reports when the worst
 * relative error exceeds tol, nothing was checked, or a masked entry has a
 * gradient. */
static int fd_check(const char *name, EvalFn f, void *ctx, float *x, const float *g,
                    const float *mask, int n, double tol, bool verbose)
{
    FdResult r = fd_measure(f, ctx, x, g, mask, n);
    if (verbose)
        printf("  fd %-16s max abs %.2e  max rel %.2e  over %3d  (tol rel %.0e)\n", name,
               r.worst_abs, r.worst_rel, r.checked, tol);
    if (!(r.worst_rel <= tol) || r.checked == 0 || r.bad_masked) {
        fprintf(stderr,
                "rl_selftest: fd %s: max rel err %.3g (tol %.3g), abs %.3g, %d checked, %d "
                "masked gradients nonzero\n",
                name, r.worst_rel, tol, r.worst_abs, r.checked, r.bad_masked);
        return 1;
    }
    return 0;
}

#define FD_TOL 1e-5
#define TN 200 /* tokens in the random tests */
#define TP 40  /* pairs in the random tests */

typedef struct {
    float      *logp;
    float      *logp_old;
    float      *logp_prox;
    float      *adv;
    float      *mask;
    RlPpoConfig cfg;
    float       norm;
    int         n;
} PpoCtx;

static double eval_ppo(void *p)
{
    PpoCtx *c = p;
    return rl_ppo_loss(NULL, NULL, c->logp, c->logp_old, c->logp_prox, c->adv, c->mask, &c->cfg,
                       c->norm, c->n);
}

typedef struct {
    float *logp;
    float *logp_ref;
    float *mask;
    RlKl   kind;
    float  beta;
    float  norm;
    int    n;
} KlCtx;

static double eval_kl(void *p)
{
    KlCtx *c = p;
    return rl_kl_loss(NULL, c->logp, c->logp_ref, c->mask, c->kind, c->beta, c->norm, c->n);
}

typedef struct {
    float *entropy;
    float *mask;
    float  coef;
    float  norm;
    int    n;
} EntCtx;

static double eval_entropy(void *p)
{
    EntCtx *c = p;
    return rl_entropy_loss(NULL, c->entropy, c->mask, c->coef, c->norm, c->n);
}

typedef struct {
    float *values;
    float *values_old;
    float *returns;
    float *mask;
    float  clip;
    float  norm;
    int    n;
} ValCtx;

static double eval_value(void *p)
{
    ValCtx *c = p;
    return rl_value_loss(NULL, NULL, c->values, c->values_old, c->returns, c->mask, c->clip,
                         c->norm, c->n);
}

typedef struct {
    float *chosen;   /* BT reward or DPO policy log-prob */
    float *rejected; /* likewise */
    float *ref_chosen;
    float *ref_rejected;
    float  beta;
    float  norm;
    int    n;
    bool   is_dpo;
} PairCtx;

static double eval_pair(void *p)
{
    PairCtx *c = p;
    if (c->is_dpo)
        return rl_dpo_loss(NULL, NULL, NULL, c->chosen, c->rejected, c->ref_chosen, c->ref_rejected,
                           c->beta, c->norm, c->n);
    return rl_bt_loss(NULL, NULL, NULL, c->chosen, c->rejected, c->norm, c->n);
}

/* A random 0/1 mask with about a fifth of the tokens off (never all off). */
static void random_mask(Rng *rng, float *mask, int n)
{
    for (int i = 0; i < n; i++) mask[i] = rng_uniform(rng) < 0.2f ? 0.0f : 1.0f;
    mask[0] = 1.0f;
}

static float sum_of(const float *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    return (float)s;
}

/* The textbook clipped objective min(ru * A, rc * A) of one token, written
 * directly from the definition as a reference for the case analysis. */
static double ppo_objective_ref(double r, double a, const RlPpoConfig *cfg)
{
    double rc = fmin(fmax(r, 1.0 - (double)cfg->clip_low), 1.0 + (double)cfg->clip_high);
    double ru = cfg->ratio_cap > 0.0f ? fmin(r, (double)cfg->ratio_cap) : r;
    return fmin(ru * a, rc * a);
}

static int test_ppo_examples(bool verbose)
{
    int         fails = 0;
    RlPpoConfig cfg = {.clip_low = 0.2f, .clip_high = 0.2f};
    RlPpoStats  st;

    /* Ratio 0.75 / 0.60 = 1.25 with A = 3.5 is clipped to 1.2: objective
     * 1.2 * 3.5 = 4.2, loss -4.2, no gradient. */
    float  lp = logf(0.75f), lo = logf(0.60f), a = 3.5f, g = 0.0f;
    double loss = rl_ppo_loss(&g, &st, &lp, &lo, NULL, &a, NULL, &cfg, 0.0f, 1);
    fails += expect_near("ppo 1.25 clipped loss", loss, -4.2, 1e-6);
    fails += expect_near("ppo 1.25 ratio", st.ratio_max, 1.25, 1e-6);
    fails += expect_true("ppo 1.25 clipped gradient is 0", g == 0.0f);
    fails += expect_near("ppo 1.25 clip frac", st.clip_frac, 1.0, 0.0);
    if (verbose) printf("  ppo: r %.7f A 3.5 eps 0.2 -> loss %.7f (-4.2)\n", st.ratio_max, loss);
    /* The same ratio with A = -3.5 is on the unclipped side: loss 1.25 * 3.5,
     * gradient -A * r = 4.375. */
    a = -3.5f;
    loss = rl_ppo_loss(&g, &st, &lp, &lo, NULL, &a, NULL, &cfg, 0.0f, 1);
    fails += expect_near("ppo 1.25 A<0 loss", loss, 4.375, 1e-6);
    fails += expect_near("ppo 1.25 A<0 gradient", g, 4.375, 1e-5);
    fails += expect_near("ppo 1.25 A<0 clip frac", st.clip_frac, 0.0, 0.0);

    /* On-policy: logp_old == logp gives r = 1 exactly, nothing clipped, and
     * the gradient is the plain policy gradient -A / N per token. */
    enum { NP = 50 };
    Rng rng;
    rng_seed(&rng, 7);
    float logp[NP], adv[NP], grad[NP] = {0};
    for (int i = 0; i < NP; i++) {
        logp[i] = -3.0f * rng_uniform(&rng) - 0.01f;
        adv[i] = rng_normal(&rng);
    }
    loss = rl_ppo_loss(grad, &st, logp, logp, NULL, adv, NULL, &cfg, 0.0f, NP);
    int exact = 0;
    for (int i = 0; i < NP; i++) exact += grad[i] == (float)(-(double)adv[i] / NP);
    fails += expect_true("ppo on-policy gradient == -A/N exactly", exact == NP);
    fails += expect_near("ppo on-policy loss", loss, -(double)sum_of(adv, NP) / NP, 1e-6);
    fails += expect_true("ppo on-policy ratio exactly 1",
                         st.ratio_min == 1.0 && st.ratio_max == 1.0 && st.ratio_mean == 1.0);
    fails += expect_true("ppo on-policy clip frac 0 and kl 0",
                         st.clip_frac == 0.0 && st.cap_frac == 0.0 && st.approx_kl == 0.0);
    fails += expect_true("ppo on-policy n_tokens", st.n_tokens == NP);

    /* Stale behaviour log-probs, asymmetric clip [0.8, 1.28] and cap 3.
     * Tokens: (ratio, A, gradient flows?). */
    static const struct {
        double r, a;
        bool   flows;
    } k_tok[] = {
        {1.5, 1.0, false},   /* above the ceiling, A > 0: clipped */
        {1.5, -1.0, true},   /* above the ceiling, A < 0: unclipped side */
        {0.5, -1.0, false},  /* below the floor, A < 0: clipped */
        {0.5, 1.0, true},    /* below the floor, A > 0: unclipped side */
        {1.25, 2.0, true},   /* inside the asymmetric band (1.25 < 1.28) */
        {0.75, -2.0, false}, /* below 0.8 */
        {5.0, -1.0, false},  /* above the cap, A < 0: dual clip */
        {5.0, 1.0, false},   /* above the cap, A > 0: ceiling */
        {2.0, -1.0, true},   /* above the ceiling, below the cap, A < 0 */
    };
    enum { NK = sizeof k_tok / sizeof k_tok[0] };
    RlPpoConfig cfg2 = {.clip_low = 0.2f, .clip_high = 0.28f, .ratio_cap = 3.0f};
    float       kl[NK], ko[NK], ka[NK], kg[NK] = {0};
    double      want = 0.0;
    for (int i = 0; i < NK; i++) {
        ko[i] = -1.0f;
        kl[i] = (float)(-1.0 + log(k_tok[i].r));
        ka[i] = (float)k_tok[i].a;
        want -= ppo_objective_ref(exp((double)kl[i] - ko[i]), ka[i], &cfg2) / NK;
    }
    loss = rl_ppo_loss(kg, &st, kl, ko, NULL, ka, NULL, &cfg2, 0.0f, NK);
    fails += expect_near("ppo stale loss vs textbook", loss, want, 1e-12);
    for (int i = 0; i < NK; i++) {
        double r = exp((double)kl[i] - ko[i]);
        double gw = k_tok[i].flows ? -(double)ka[i] * r / NK : 0.0;
        char   what[64];
        snprintf(what, sizeof what, "ppo stale gradient token %d (r %.2f A %+.0f)", i, k_tok[i].r,
                 k_tok[i].a);
        fails += expect_near(what, kg[i], gw, 1e-6);
        if (!k_tok[i].flows) fails += expect_true(what, kg[i] == 0.0f);
    }
    fails += expect_near("ppo stale clip_high_frac", st.clip_high_frac, 2.0 / NK, 1e-12);
    fails += expect_near("ppo stale clip_low_frac", st.clip_low_frac, 2.0 / NK, 1e-12);
    fails += expect_near("ppo stale cap_frac", st.cap_frac, 1.0 / NK, 1e-12);
    /* The capped token contributes -(3 * -1) = 3, not the uncapped 5. */
    float one_l = kl[6], one_o = ko[6], one_a = ka[6], one_g = 0.0f;
    loss = rl_ppo_loss(&one_g, NULL, &one_l, &one_o, NULL, &one_a, NULL, &cfg2, 0.0f, 1);
    fails += expect_near("ppo cap 3 bounds the loss at 3", loss, 3.0, 1e-6);
    fails += expect_true("ppo capped gradient is 0", one_g == 0.0f);
    cfg2.ratio_cap = 0.0f;
    loss = rl_ppo_loss(&one_g, NULL, &one_l, &one_o, NULL, &one_a, NULL, &cfg2, 0.0f, 1);
    fails += expect_near("ppo without cap the loss is r = 5", loss, 5.0, 1e-5);
    fails += expect_near("ppo without cap the gradient is -A r", one_g, 5.0, 1e-5);
    return fails;
}

/* Random tokens: the loss against the textbook formula, the decoupled
 * variant against its definition, the normaliser and finite differences. */
static int test_ppo_random(bool verbose)
{
    int   fails = 0;
    Rng   rng;
    float logp[TN], old[TN], prox[TN], adv[TN], mask[TN], grad[TN];
    rng_seed(&rng, 11);
    random_mask(&rng, mask, TN);
    RlPpoConfig cfg = {
        .clip_low = 0.2f, .clip_high = 0.28f, .ratio_cap = 3.0f, .prox_weight_cap = 1.3f};
    const double kinks[3] = {log(0.8), log(1.28), log(3.0)};
    for (int i = 0; i < TN; i++) {
        old[i] = -0.05f - 3.0f * rng_uniform(&rng);
        prox[i] = old[i] + 0.3f * rng_normal(&rng);
        adv[i] = rng_normal(&rng);
        /* Log-ratios to the proximal policy, kept 0.02 away from every clip
         * edge so central differences never straddle a kink. */
        double d;
        bool   near_kink;
        do {
            d = 0.7 * rng_normal(&rng);
            near_kink = false;
            for (int k = 0; k < 3; k++) near_kink |= fabs(d - kinks[k]) < 0.02;
        } while (near_kink);
        logp[i] = prox[i] + (float)d;
        if (mask[i] == 0.0f) old[i] = prox[i] = adv[i] = logp[i] = NAN; /* never read */
    }
    /* Without a proximal policy the ratio is to the behaviour policy, so the
     * random tokens are re-centred on old for that run. */
    float logp_b[TN];
    for (int i = 0; i < TN; i++) logp_b[i] = mask[i] != 0.0f ? old[i] + (logp[i] - prox[i]) : NAN;

    RlPpoStats st;
    for (int pass = 0; pass < 2; pass++) {
        bool   decoupled = pass == 1;
        float *lp = decoupled ? logp : logp_b;
        memset(grad, 0, sizeof grad);
        double loss =
            rl_ppo_loss(grad, &st, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, 0.0f, TN);
        double want = 0.0, cnt = 0.0;
        for (int i = 0; i < TN; i++) {
            if (mask[i] == 0.0f) continue;
            double logq = decoupled ? prox[i] : old[i];
            double w =
                decoupled ? fmin(exp((double)prox[i] - old[i]), (double)cfg.prox_weight_cap) : 1.0;
            want -= w * ppo_objective_ref(exp((double)lp[i] - logq), adv[i], &cfg);
            cnt += 1.0;
        }
        want /= cnt;
        fails +=
            expect_near(decoupled ? "ppo decoupled loss vs definition" : "ppo loss vs textbook",
                        loss, want, 1e-9);
        fails += expect_true("ppo random: every branch taken",
                             st.clip_low_frac > 0 && st.clip_high_frac > 0 && st.cap_frac > 0 &&
                                 st.clip_frac < 0.9);
        fails += expect_true("ppo stats finite and ordered",
                             isfinite(st.approx_kl) && st.approx_kl > 0 &&
                                 st.ratio_min <= st.ratio_mean && st.ratio_mean <= st.ratio_max);
        if (decoupled)
            fails += expect_true("ppo decoupled weight capped somewhere",
                                 st.weight_cap_frac > 0 && st.weight_mean <= 1.3);
        if (verbose)
            printf("  ppo %s: clip low %.3f high %.3f cap %.3f ratio [%.3f %.3f] mean %.3f kl %.4f "
                   "w %.3f\n",
                   decoupled ? "decoupled" : "plain    ", st.clip_low_frac, st.clip_high_frac,
                   st.cap_frac, st.ratio_min, st.ratio_max, st.ratio_mean, st.approx_kl,
                   st.weight_mean);
        PpoCtx c = {lp, old, decoupled ? prox : NULL, adv, mask, cfg, 0.0f, TN};
        fails += fd_check(decoupled ? "ppo decoupled" : "ppo", eval_ppo, &c, lp, grad, mask, TN,
                          FD_TOL, verbose);

        /* The checker must catch a plausible bug: one clipped token given
         * the unclipped gradient -w A r / N. */
        float bad[TN];
        memcpy(bad, grad, sizeof bad);
        for (int i = 0; i < TN; i++) {
            if (mask[i] == 0.0f || bad[i] != 0.0f) continue;
            double w =
                decoupled ? fmin(exp((double)prox[i] - old[i]), (double)cfg.prox_weight_cap) : 1.0;
            double logq = decoupled ? prox[i] : old[i];
            bad[i] = (float)(-w * adv[i] * exp((double)lp[i] - logq) / sum_of(mask, TN));
            break;
        }
        FdResult neg = fd_measure(eval_ppo, &c, lp, bad, mask, TN);
        fails += expect_true("fd check catches a gradient that ignores the clip",
                             neg.worst_rel > 100 * FD_TOL);
        if (verbose)
            printf("  fd negative control: ignoring one clip gives rel err %.2f\n", neg.worst_rel);

        /* Gradients accumulate: a second call doubles them. */
        float twice[TN];
        memcpy(twice, grad, sizeof twice);
        rl_ppo_loss(twice, NULL, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, 0.0f, TN);
        int doubled = 0;
        for (int i = 0; i < TN; i++) doubled += twice[i] == 2.0f * grad[i];
        fails += expect_true("ppo gradients accumulate", doubled == TN);

        /* An explicit normaliser: twice the token count halves everything. */
        float  grad2[TN] = {0};
        float  norm = 2.0f * sum_of(mask, TN);
        double loss2 =
            rl_ppo_loss(grad2, NULL, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, norm, TN);
        fails += expect_near("ppo norm halves the loss", loss2, 0.5 * loss, 1e-12);
        int halved = 0;
        for (int i = 0; i < TN; i++) halved += fabsf(grad2[i] - 0.5f * grad[i]) <= 1e-7f;
        fails += expect_true("ppo norm halves the gradient", halved == TN);
    }
    /* prox == old is the plain objective. */
    double l_plain = rl_ppo_loss(NULL, NULL, logp_b, old, NULL, adv, mask, &cfg, 0.0f, TN);
    double l_same = rl_ppo_loss(NULL, NULL, logp_b, old, old, adv, mask, &cfg, 0.0f, TN);
    fails += expect_near("ppo prox == old equals plain", l_same, l_plain, 1e-12);

    /* Sequence-mean weights: the loss becomes the mean over rows of each
     * row's token mean. */
    enum { SB = 8, ST = TN / SB };
    float w[TN];
    rl_seq_mean_weights(w, mask, SB, ST);
    fails += expect_near("seq mean weights sum to 1", sum_of(w, TN), 1.0, 1e-6);
    double l_seq = rl_ppo_loss(NULL, NULL, logp_b, old, NULL, adv, w, &cfg, 0.0f, TN);
    double want_seq = 0.0;
    for (int b = 0; b < SB; b++) {
        const float *mb = mask + b * ST;
        want_seq += rl_ppo_loss(NULL, NULL, logp_b + b * ST, old + b * ST, NULL, adv + b * ST, mb,
                                &cfg, 0.0f, ST) /
                    SB;
    }
    fails += expect_near("ppo with seq-mean weights", l_seq, want_seq, 1e-6);

    /* Nothing counts: zero loss, zero stats, no gradient. */
    float  zero_mask[4] = {0}, g4[4] = {0};
    double l0 = rl_ppo_loss(g4, &st, logp, old, NULL, adv, zero_mask, &cfg, 0.0f, 4);
    fails += expect_true("ppo empty mask",
                         l0 == 0.0 && st.n_tokens == 0 && st.ratio_max == 0.0 && g4[0] == 0.0f);
    return fails;
}

static int test_gae(bool verbose)
{
    int fails = 0;
    /* One-step TD: 5 + 0.9 * 0 - 1.5 = 3.5 for any lambda. */
    for (int k = 0; k < 3; k++) {
        float r = 5.0f, v = 1.5f, adv, ret;
        rl_gae(&adv, &ret, &r, &v, 0.0f, 0.9f, 0.5f * (float)k, 1);
        fails += expect_true("gae T=1 advantage is exactly 3.5", adv == 3.5f);
        fails += expect_true("gae T=1 return is exactly 5", ret == 5.0f);
    }
    /* Three steps, gamma = lambda = 1/2 (exact in binary), terminal:
     *   delta = (1 + .5*1 - .5, 0 + .5*1.5 - 1, 2 + 0 - 1.5) = (1, -.25, .5)
     *   A2 = .5, A1 = -.25 + .25*.5 = -.125, A0 = 1 + .25*(-.125) = .96875 */
    {
        float r[3] = {1, 0, 2}, v[3] = {0.5f, 1.0f, 1.5f}, adv[3], ret[3];
        rl_gae(adv, ret, r, v, 0.0f, 0.5f, 0.5f, 3);
        fails += expect_true("gae 3-step advantages",
                             adv[0] == 0.96875f && adv[1] == -0.125f && adv[2] == 0.5f);
        fails += expect_true("gae 3-step returns",
                             ret[0] == 1.46875f && ret[1] == 0.875f && ret[2] == 2.0f);
        /* Truncated instead of terminal: bootstrap 2 adds gamma*2 = 1 to
         * delta2, which reaches A1 times .25 and A0 times .0625. */
        rl_gae(adv, ret, r, v, 2.0f, 0.5f, 0.5f, 3);
        fails += expect_true("gae 3-step bootstrap",
                             adv[2] == 1.5f && adv[1] == 0.125f && adv[0] == 1.03125f);
        if (verbose) printf("  gae: 3-step (0.96875, -0.125, 0.5) and TD(0) 3.5 exact\n");
    }
    /* lambda = 1: A_t = discounted return - V_t; lambda = 0: A_t = delta_t.
     * Outputs written over the inputs (aliasing) must give the same. */
    enum { GT = 17 };
    Rng   rng;
    float r[GT], v[GT], adv[GT], ret[GT];
    rng_seed(&rng, 3);
    for (int t = 0; t < GT; t++) {
        r[t] = rng_normal(&rng);
        v[t] = rng_normal(&rng);
    }
    const float gamma = 0.9f, boot = 0.7f;
    rl_gae(adv, ret, r, v, boot, gamma, 1.0f, GT);
    double G = boot, worst = 0.0;
    for (int t = GT - 1; t >= 0; t--) {
        G = r[t] + gamma * G;
        worst = fmax(worst, fabs(adv[t] - (G - v[t])));
        worst = fmax(worst, fabs(ret[t] - G));
    }
    fails += expect_near("gae lambda 1 is Monte Carlo", worst, 0.0, 1e-5);
    rl_gae(adv, NULL, r, v, boot, gamma, 0.0f, GT);
    worst = 0.0;
    for (int t = 0; t < GT; t++) {
        double next = t + 1 < GT ? v[t + 1] : boot;
        worst = fmax(worst, fabs(adv[t] - (r[t] + gamma * next - v[t])));
    }
    fails += expect_near("gae lambda 0 is TD(0)", worst, 0.0, 1e-6);
    float ra[GT], va[GT];
    memcpy(ra, r, sizeof r);
    memcpy(va, v, sizeof v);
    rl_gae(adv, ret, r, v, boot, gamma, 0.95f, GT);
    rl_gae(ra, va, ra, va, boot, gamma, 0.95f, GT);
    fails += expect_true("gae aliased outputs",
                         !memcmp(ra, adv, sizeof adv) && !memcmp(va, ret, sizeof ret));

    /* Batch: rows of lengths 17, 0, 5 agree with rl_gae; padding is 0. */
    enum { BB = 3 };
    float br[BB * GT], bv[BB * GT], ba[BB * GT], bret[BB * GT], boots[BB] = {0.7f, 1.0f, 0.0f};
    int   lens[BB] = {GT, 0, 5};
    for (int i = 0; i < BB * GT; i++) {
        br[i] = rng_normal(&rng);
        bv[i] = rng_normal(&rng);
        ba[i] = bret[i] = 99.0f;
    }
    rl_gae_batch(ba, bret, br, bv, boots, lens, gamma, 0.95f, BB, GT);
    int bad = 0;
    for (int b = 0; b < BB; b++) {
        float ra1[GT], rr1[GT];
        rl_gae(ra1, rr1, br + b * GT, bv + b * GT, boots[b], gamma, 0.95f, lens[b]);
        for (int t = 0; t < GT; t++) {
            float wa = t < lens[b] ? ra1[t] : 0.0f, wr = t < lens[b] ? rr1[t] : 0.0f;
            bad += ba[b * GT + t] != wa || bret[b * GT + t] != wr;
        }
    }
    fails += expect_true("gae batch rows and padding", bad == 0);
    return fails;
}

static int test_advantages(bool verbose)
{
    int fails = 0;
    /* Hand example: {1, 0, 0, 1} has mean .5 and population std .5. */
    float r4[4] = {1, 0, 0, 1}, a4[4];
    rl_group_advantages(a4, r4, true, 1, 4);
    double s = 0.5 / (0.5 + RL_STD_EPS);
    fails += expect_near("grpo {1,0,0,1} -> +1", a4[0], s, 1e-7);
    fails += expect_near("grpo {1,0,0,1} -> -1", a4[1], -s, 1e-7);
    rl_group_advantages(a4, r4, false, 1, 4);
    fails += expect_true("grpo mean-only {1,0,0,1}", a4[0] == 0.5f && a4[1] == -0.5f);

    /* Random groups, one constant group and in-place use. */
    enum { NG = 6, G = 16 };
    Rng   rng;
    float r[NG * G], a[NG * G], m[NG * G];
    rng_seed(&rng, 5);
    for (int i = 0; i < NG * G; i++) r[i] = 2.0f + 3.0f * rng_normal(&rng);
    for (int i = 0; i < G; i++) r[2 * G + i] = 0.3f; /* constant group */
    r[5 * G + 3] = 7.0f;                             /* an outlier */
    for (int pass = 0; pass < 2; pass++) {
        bool divide = pass == 0;
        rl_group_advantages(a, r, divide, NG, G);
        double worst_mean = 0.0, worst_std = 0.0;
        for (int g = 0; g < NG; g++) {
            const float *ag = a + g * G;
            const float *rg = r + g * G;
            double       mean = 0.0, var = 0.0, rm = 0.0, rv = 0.0;
            for (int i = 0; i < G; i++) {
                mean += ag[i] / G;
                rm += rg[i] / (double)G;
            }
            for (int i = 0; i < G; i++) {
                var += (ag[i] - mean) * (ag[i] - mean) / G;
                rv += (rg[i] - rm) * (rg[i] - rm) / G;
            }
            if (g == 2) {
                int zeros = 0;
                for (int i = 0; i < G; i++) zeros += ag[i] == 0.0f;
                fails += expect_true("grpo constant group gives exact zeros", zeros == G);
                continue;
            }
            worst_mean = fmax(worst_mean, fabs(mean));
            /* With the epsilon the std is s / (s + eps), within 1e-4 of 1. */
            double want = divide ? sqrt(rv) / (sqrt(rv) + RL_STD_EPS) : sqrt(rv);
            worst_std = fmax(worst_std, fabs(sqrt(var) - want));
            if (divide) fails += expect_near("grpo unit std", sqrt(var), 1.0, 2e-4);
        }
        fails += expect_near(divide ? "grpo zero mean" : "grpo mean-only zero mean", worst_mean,
                             0.0, 1e-6);
        fails += expect_near("grpo std as specified", worst_std, 0.0, 1e-5);
        if (verbose)
            printf("  grpo %s: max |mean| %.1e, max std err %.1e\n",
                   divide ? "normalised" : "mean-only ", worst_mean, worst_std);
    }
    float one = 4.0f, a1;
    rl_group_advantages(&a1, &one, true, 1, 1);
    fails += expect_true("grpo G=1 gives 0", a1 == 0.0f);
    memcpy(a, r, sizeof r);
    rl_group_advantages(a, a, true, NG, G);
    float b[NG * G];
    rl_group_advantages(b, r, true, NG, G);
    fails += expect_true("grpo in place", !memcmp(a, b, sizeof a));

    /* Whitening over a mask: counted entries get mean 0 and std 1, the
     * others 0, and garbage under the mask is not read. */
    random_mask(&rng, m, NG * G);
    for (int i = 0; i < NG * G; i++) {
        r[i] = 2.0f + 3.0f * rng_normal(&rng);
        if (m[i] == 0.0f) r[i] = NAN;
    }
    rl_whiten(r, r, m, NG * G);
    double mean = 0.0, var = 0.0, cnt = sum_of(m, NG * G);
    int    pad_ok = 0;
    for (int i = 0; i < NG * G; i++) {
        if (m[i] == 0.0f)
            pad_ok += r[i] == 0.0f;
        else
            mean += r[i] / cnt;
    }
    for (int i = 0; i < NG * G; i++)
        if (m[i] != 0.0f) var += (r[i] - mean) * (r[i] - mean) / cnt;
    fails += expect_near("whiten mean", mean, 0.0, 1e-6);
    fails += expect_near("whiten std", sqrt(var), 1.0, 1e-4);
    fails += expect_true("whiten padding is 0", pad_ok == NG * G - (int)cnt);
    float c3[3] = {2, 2, 2};
    rl_whiten(c3, c3, NULL, 3);
    fails += expect_true("whiten constant gives 0", c3[0] == 0 && c3[1] == 0 && c3[2] == 0);
    return fails;
}

static int test_kl(bool verbose)
{
    int         fails = 0;
    const RlKl  kinds[3] = {RL_KL_K1, RL_KL_K2, RL_KL_K3};
    const char *names[3] = {"kl k1", "kl k2", "kl k3"};
    Rng         rng;
    rng_seed(&rng, 13);

    /* Equal policies: every estimator is 0; derivatives 1, 0, 0. */
    float lp[TN], ref[TN], mask[TN], kl[TN], dkl[TN], grad[TN];
    for (int i = 0; i < TN; i++) lp[i] = ref[i] = -5.0f * rng_uniform(&rng);
    for (int k = 0; k < 3; k++) {
        rl_kl(kl, dkl, lp, ref, NULL, kinds[k], TN);
        int ok = 0;
        for (int i = 0; i < TN; i++) ok += kl[i] == 0.0f && dkl[i] == (k == 0 ? 1.0f : 0.0f);
        fails += expect_true("kl of equal policies is 0", ok == TN);
    }
    /* k3 >= 0 over a wide range of differences, tiny ones included, and
     * accurate where the naive formula would cancel. */
    int neg = 0;
    for (int i = 0; i < TN; i++) {
        double scale = pow(10.0, -7.0 + 8.0 * rng_uniform(&rng)); /* 1e-7 .. 10 */
        ref[i] = -3.0f;
        lp[i] = (float)(-3.0 + scale * rng_normal(&rng));
    }
    rl_kl(kl, dkl, lp, ref, NULL, RL_KL_K3, TN);
    double worst = 0.0;
    for (int i = 0; i < TN; i++) {
        neg += kl[i] < 0.0f;
        double d = (double)lp[i] - ref[i];
        /* Reference in long double, accurate enough in both regimes. */
        long double x = -(long double)d;
        long double want =
            fabsl(x) < 1e-3L ? x * x / 2 + x * x * x / 6 + x * x * x * x / 24 : expm1l(x) - x;
        if (want > 0) worst = fmax(worst, (double)fabsl((kl[i] - want) / want));
    }
    fails += expect_true("k3 never negative", neg == 0);
    fails += expect_near("k3 relative accuracy", worst, 0.0, 1e-6);
    if (verbose) printf("  kl: k3 >= 0 on %d draws, max rel err vs long double %.1e\n", TN, worst);

    /* Finite differences of each estimator as a loss. */
    random_mask(&rng, mask, TN);
    for (int i = 0; i < TN; i++) {
        lp[i] = -0.1f - 4.0f * rng_uniform(&rng);
        ref[i] = lp[i] + rng_normal(&rng);
        if (mask[i] == 0.0f) lp[i] = ref[i] = NAN;
    }
    for (int k = 0; k < 3; k++) {
        memset(grad, 0, sizeof grad);
        double loss = rl_kl_loss(grad, lp, ref, mask, kinds[k], 0.05f, 0.0f, TN);
        rl_kl(kl, NULL, lp, ref, mask, kinds[k], TN);
        double mean = 0.0;
        for (int i = 0; i < TN; i++) mean += kl[i];
        mean /= sum_of(mask, TN);
        fails += expect_near("kl loss is beta * masked mean", loss, 0.05 * mean, 1e-7);
        KlCtx c = {lp, ref, mask, kinds[k], 0.05f, 0.0f, TN};
        fails += fd_check(names[k], eval_kl, &c, lp, grad, mask, TN, FD_TOL, verbose);
    }
    return fails;
}

static int test_entropy_value(bool verbose)
{
    int   fails = 0;
    Rng   rng;
    float ent[TN], mask[TN], grad[TN] = {0};
    rng_seed(&rng, 17);
    random_mask(&rng, mask, TN);
    for (int i = 0; i < TN; i++) ent[i] = mask[i] != 0.0f ? 3.0f * rng_uniform(&rng) : NAN;
    float  norm = 123.0f;
    double loss = rl_entropy_loss(grad, ent, mask, 0.01f, norm, TN);
    double want = 0.0;
    for (int i = 0; i < TN; i++)
        if (mask[i] != 0.0f) want -= 0.01 * ent[i] / norm;
    fails += expect_near("entropy loss", loss, want, 1e-9);
    EntCtx ce = {ent, mask, 0.01f, norm, TN};
    fails += fd_check("entropy", eval_entropy, &ce, ent, grad, mask, TN, FD_TOL, verbose);

    /* Worked examples, clip 0.5 around v_old = 1:
     *   v 2, R 3: max(1, (1.5-3)^2 = 2.25) -> clipped, loss 1.125, grad 0
     *   v 2, R 0: max(4, 2.25) -> unclipped, loss 2, grad v - R = 2 */
    float  v = 2.0f, vo = 1.0f, R = 3.0f, g = 0.0f;
    double cf;
    loss = rl_value_loss(&g, &cf, &v, &vo, &R, NULL, 0.5f, 0.0f, 1);
    fails += expect_near("value clipped loss", loss, 1.125, 1e-12);
    fails += expect_true("value clipped gradient 0", g == 0.0f && cf == 1.0);
    R = 0.0f;
    loss = rl_value_loss(&g, &cf, &v, &vo, &R, NULL, 0.5f, 0.0f, 1);
    fails += expect_near("value unclipped loss", loss, 2.0, 1e-12);
    fails += expect_true("value unclipped gradient", g == 2.0f && cf == 0.0);
    loss = rl_value_loss(NULL, NULL, &v, NULL, &R, NULL, 0.0f, 0.0f, 1);
    fails += expect_near("value without clip", loss, 2.0, 1e-12);

    /* Random values away from the kinks (|v - v_old| = clip, and where the
     * two squared errors are equal). */
    float       vals[TN], olds[TN], rets[TN];
    const float clip = 0.2f;
    memset(grad, 0, sizeof grad);
    for (int i = 0; i < TN; i++) {
        for (;;) {
            olds[i] = rng_normal(&rng);
            vals[i] = olds[i] + 0.5f * rng_normal(&rng);
            rets[i] = olds[i] + rng_normal(&rng);
            double vv = vals[i],
                   vc = fmin(fmax(vv, olds[i] - (double)clip), olds[i] + (double)clip);
            if (fabs(fabs(vv - olds[i]) - clip) < 0.01) continue;
            if (fabs(fabs(vv - rets[i]) - fabs(vc - rets[i])) < 0.01 && vv != vc) continue;
            break;
        }
        if (mask[i] == 0.0f) vals[i] = olds[i] = rets[i] = NAN;
    }
    loss = rl_value_loss(grad, &cf, vals, olds, rets, mask, clip, 0.0f, TN);
    fails += expect_true("value: both branches taken", cf > 0.05 && cf < 0.95);
    if (verbose) printf("  value: loss %.4f clip frac %.3f\n", loss, cf);
    ValCtx cv = {vals, olds, rets, mask, clip, 0.0f, TN};
    fails += fd_check("value clipped", eval_value, &cv, vals, grad, mask, TN, FD_TOL, verbose);
    memset(grad, 0, sizeof grad);
    rl_value_loss(grad, NULL, vals, olds, rets, mask, 0.0f, 0.0f, TN);
    cv.clip = 0.0f;
    fails += fd_check("value plain", eval_value, &cv, vals, grad, mask, TN, FD_TOL, verbose);
    return fails;
}

static int test_pairs(bool verbose)
{
    int         fails = 0;
    RlPairStats st;
    const float ln2 = (float)log(2.0);

    /* Bradley-Terry: equal rewards give log 2 and gradients -+1/(2P). */
    float c[TP], r[TP], dc[TP] = {0}, dr[TP] = {0};
    for (int p = 0; p < TP; p++) c[p] = r[p] = 0.1f * p - 1.0f;
    double loss = rl_bt_loss(dc, dr, &st, c, r, 0.0f, TP);
    fails += expect_near("bt equal rewards = log 2", loss, log(2.0), 1e-12);
    fails += expect_near("bt equal rewards dchosen", dc[0], -0.5 / TP, 1e-9);
    fails += expect_near("bt equal rewards drejected", dr[TP - 1], 0.5 / TP, 1e-9);
    fails += expect_true("bt ties count as wrong", st.accuracy == 0.0 && st.margin_mean == 0.0);
    /* Extreme margins stay finite: softplus(-200) ~ e^-200, softplus(200) ~ 200. */
    float big_c[2] = {100.0f, -100.0f}, big_r[2] = {-100.0f, 100.0f}, bdc[2] = {0}, bdr[2] = {0};
    loss = rl_bt_loss(bdc, bdr, &st, big_c, big_r, 0.0f, 2);
    fails += expect_near("bt extreme margins", loss, 100.0, 1e-9);
    fails += expect_true("bt extreme gradients finite",
                         bdc[0] > -1e-30f && bdc[1] == -0.5f && bdr[1] == 0.5f);
    fails += expect_near("bt accuracy", st.accuracy, 0.5, 0.0);

    /* DPO: policy == reference gives log 2 and gradients -+beta/(2P). */
    float pc[TP], pr[TP], rc[TP], rr[TP];
    Rng   rng;
    rng_seed(&rng, 19);
    for (int p = 0; p < TP; p++) {
        pc[p] = rc[p] = -30.0f * rng_uniform(&rng) - 1.0f;
        pr[p] = rr[p] = -30.0f * rng_uniform(&rng) - 1.0f;
    }
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    loss = rl_dpo_loss(dc, dr, &st, pc, pr, rc, rr, 0.1f, 0.0f, TP);
    fails += expect_near("dpo policy == reference = log 2", loss, ln2, 1e-7);
    fails += expect_near("dpo policy == reference dchosen", dc[3], -0.1f * 0.5 / TP, 1e-9);
    fails += expect_near("dpo policy == reference drejected", dr[3], 0.1f * 0.5 / TP, 1e-9);
    /* Known value: beta .1, log-ratios +2 and -3: z = .5, loss log(1+e^-.5). */
    float kc = -10.0f, kr = -20.0f, krc = -12.0f, krr = -17.0f;
    loss = rl_dpo_loss(NULL, NULL, &st, &kc, &kr, &krc, &krr, 0.1f, 0.0f, 1);
    fails += expect_near("dpo known value", loss, log1p(exp(-0.5)), 1e-7);
    fails += expect_near("dpo chosen reward", st.chosen_mean, 0.2, 1e-7);
    fails += expect_near("dpo rejected reward", st.rejected_mean, -0.3, 1e-7);
    fails += expect_near("dpo margin", st.margin_mean, 0.5, 1e-7);
    fails += expect_true("dpo accuracy", st.accuracy == 1.0);

    /* Finite differences: Bradley-Terry w.r.t. both rewards, DPO w.r.t.
     * both policy sums, at random points. */
    for (int p = 0; p < TP; p++) {
        c[p] = 2.0f * rng_normal(&rng);
        r[p] = 2.0f * rng_normal(&rng);
        pc[p] = rc[p] + 5.0f * rng_normal(&rng);
        pr[p] = rr[p] + 5.0f * rng_normal(&rng);
    }
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    rl_bt_loss(dc, dr, &st, c, r, 0.0f, TP);
    PairCtx cb = {c, r, NULL, NULL, 0.0f, 0.0f, TP, false};
    fails += fd_check("bt chosen", eval_pair, &cb, c, dc, NULL, TP, FD_TOL, verbose);
    fails += fd_check("bt rejected", eval_pair, &cb, r, dr, NULL, TP, FD_TOL, verbose);
    if (verbose) printf("  bt: accuracy %.3f margin %.3f\n", st.accuracy, st.margin_mean);
    memset(dc, 0, sizeof dc);
    memset(dr, 0, sizeof dr);
    rl_dpo_loss(dc, dr, &st, pc, pr, rc, rr, 0.1f, 50.0f, TP);
    PairCtx cd = {pc, pr, rc, rr, 0.1f, 50.0f, TP, true};
    fails += fd_check("dpo chosen", eval_pair, &cd, pc, dc, NULL, TP, FD_TOL, verbose);
    fails += fd_check("dpo rejected", eval_pair, &cd, pr, dr, NULL, TP, FD_TOL, verbose);
    if (verbose) printf("  dpo: accuracy %.3f margin %.3f\n", st.accuracy, st.margin_mean);
    return fails;
}

static int test_seq(bool verbose)
{
    int   fails = 0;
    float x[6] = {1, 2, 3, 4, 5, NAN}, m[6] = {1, 1, 0, 1, 1, 0}, out[2];
    rl_seq_sum(out, x, m, 2, 3);
    fails += expect_true("seq sum", out[0] == 3.0f && out[1] == 9.0f);
    float dx[6] = {0}, dout[2] = {0.5f, -2.0f};
    rl_seq_sum_backward(dx, dout, m, 2, 3);
    fails += expect_true("seq sum backward", dx[0] == 0.5f && dx[1] == 0.5f && dx[2] == 0.0f &&
                                                 dx[3] == -2.0f && dx[5] == 0.0f);
    float w[6], m2[6] = {1, 1, 0, 0, 0, 0};
    rl_seq_mean_weights(w, m, 2, 3);
    fails += expect_true("seq mean weights", w[0] == 0.25f && w[4] == 0.25f && w[2] == 0.0f);
    rl_seq_mean_weights(w, m2, 2, 3); /* an empty row does not count */
    fails += expect_true("seq mean weights, empty row", w[0] == 0.5f && w[3] == 0.0f);
    return fails;
}

int rl_selftest(bool verbose)
{
    int fails = 0;
    fails += test_ppo_examples(verbose);
    fails += test_ppo_random(verbose);
    fails += test_gae(verbose);
    fails += test_advantages(verbose);
    fails += test_kl(verbose);
    fails += test_entropy_value(verbose);
    fails += test_pairs(verbose);
    fails += test_seq(verbose);
    if (verbose || fails) printf("  rl: %d failed checks\n", fails);
    return fails ? 1 : 0;
}
