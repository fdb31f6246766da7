/* algo_selftest: algo_step on a tiny model: the on-policy gradient, clipping
 * and capping against a reference computed by the test's own packing, the
 * decoupled objective, refused inputs and configs, the critic helper, and
 * GRPO and PPO learning a toy task. For every algorithm of the family
 * (REINFORCE, RLOO, Dr. GRPO, DAPO, GSPO): the on-policy gradient against
 * its own advantages and aggregation, computed here by hand; finite
 * differences of its minibatch loss (algo_int.h) with stale log-probs, KL
 * and entropy; the KL in the reward and the adaptive coefficient; its
 * preset; and learning the toy task. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "learner/algo/advantage.h"
#include "learner/algo/algo.h"
#include "learner/algo/algo_int.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

enum { TS_MAXP = 4, TS_MAXC = 6 };

/* n trajectories with their own storage. */
typedef struct {
    int             n;
    int            *prompt; /* (n, TS_MAXP) */
    int            *comp;   /* (n, TS_MAXC) */
    float          *beh;    /* (n, TS_MAXC) */
    int64_t        *ver;    /* (n, TS_MAXC) */
    AlgoTrajectory *tr;     /* (n) */
} TestSet;

static void ts_init(TestSet *ts, int n)
{
    ts->n = n;
    ts->prompt = xcalloc((size_t)n * TS_MAXP, sizeof(int));
    ts->comp = xcalloc((size_t)n * TS_MAXC, sizeof(int));
    ts->beh = xcalloc((size_t)n * TS_MAXC, sizeof(float));
    ts->ver = xcalloc((size_t)n * TS_MAXC, sizeof(int64_t));
    ts->tr = xcalloc((size_t)n, sizeof(AlgoTrajectory));
    for (int i = 0; i < n; i++)
        ts->tr[i] = (AlgoTrajectory){.prompt = ts->prompt + i * TS_MAXP,
                                     .completion = ts->comp + i * TS_MAXC,
                                     .logp_behaviour = ts->beh + i * TS_MAXC,
                                     .version = ts->ver + i * TS_MAXC,
                                     .temperature = 1.0f};
}

static void ts_free(TestSet *ts)
{
    free(ts->prompt);
    free(ts->comp);
    free(ts->beh);
    free(ts->ver);
    free(ts->tr);
}

/* Random prompts (BOS + 0..2 characters) and completions (1..5 ids), groups
 * of G consecutive trajectories, uniform rewards, every token at version. */
static void ts_random(TestSet *ts, Rng *r, int G, int V, int64_t version)
{
    for (int i = 0; i < ts->n; i++) {
        AlgoTrajectory *t = &ts->tr[i];
        int            *p = ts->prompt + i * TS_MAXP, *c = ts->comp + i * TS_MAXC;
        t->prompt_len = 1 + (int)rng_below(r, 3);
        p[0] = TOK_BOS;
        for (int k = 1; k < t->prompt_len; k++)
            p[k] = TOK_N_SPECIAL + (int)rng_below(r, (uint32_t)(V - TOK_N_SPECIAL));
        t->completion_len = 1 + (int)rng_below(r, 5);
        for (int k = 0; k < t->completion_len; k++) {
            c[k] = TOK_EOS + (int)rng_below(r, (uint32_t)(V - TOK_EOS));
            ts->ver[i * TS_MAXC + k] = version;
        }
        t->group_id = 100 - i / G; /* descending, so the groups must be sorted */
        t->reward = rng_uniform(r);
    }
}

/* The test's own packing: a training forward of m over the trajectories,
 * writing each completion token's log-prob to logp (n, TS_MAXC); with dl
 * (n, TS_MAXC) non-NULL, also a backward of the upstream gradient dl into
 * zeroed gradients. */
static void ts_forward(Model *m, const TestSet *ts, float *logp, const float *dl)
{
    int n = ts->n, T = 1;
    for (int i = 0; i < n; i++) {
        int len = ts->tr[i].prompt_len + ts->tr[i].completion_len - 1;
        T = len > T ? len : T;
    }
    int   *tok = xcalloc((size_t)n * T * 2, sizeof(int)), *tgt = tok + (size_t)n * T;
    float *f = xcalloc((size_t)n * T * 3, sizeof(float));
    float *mask = f, *lp = f + (size_t)n * T, *dlogp = f + 2 * (size_t)n * T;
    for (int i = 0; i < n; i++) {
        const AlgoTrajectory *t = &ts->tr[i];
        int                   seq[TS_MAXP + TS_MAXC], L = t->prompt_len + t->completion_len;
        memcpy(seq, t->prompt, (size_t)t->prompt_len * sizeof(int));
        memcpy(seq + t->prompt_len, t->completion, (size_t)t->completion_len * sizeof(int));
        for (int j = 0; j < L - 1; j++) {
            tok[i * T + j] = seq[j];
            tgt[i * T + j] = seq[j + 1];
        }
        for (int k = 0; k < t->completion_len; k++) {
            mask[i * T + t->prompt_len - 1 + k] = 1.0f;
            if (dl) dlogp[i * T + t->prompt_len - 1 + k] = dl[i * TS_MAXC + k];
        }
    }
    model_zero_grad(m);
    model_forward(m, tok, tgt, mask, n, T, lp, NULL, NULL);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ts->tr[i].completion_len; k++)
            logp[i * TS_MAXC + k] = lp[i * T + ts->tr[i].prompt_len - 1 + k];
    if (dl) model_backward(m, dlogp, NULL, NULL);
    free(tok);
    free(f);
}

/* GRPO advantages by hand, in double: (r - mean) / (std + eps) per group. */
static void ts_group_adv(const TestSet *ts, double *adv)
{
    for (int i = 0; i < ts->n; i++) {
        double s = 0, ss = 0;
        int    G = 0;
        for (int j = 0; j < ts->n; j++) {
            if (ts->tr[j].group_id != ts->tr[i].group_id) continue;
            s += ts->tr[j].reward;
            ss += (double)ts->tr[j].reward * ts->tr[j].reward;
            G++;
        }
        double mean = s / G, sd = sqrt(fmax(0.0, ss / G - mean * mean));
        adv[i] = (ts->tr[i].reward - mean) / (sd + ADV_STD_EPS);
    }
}

static int ts_tokens(const TestSet *ts)
{
    int N = 0;
    for (int i = 0; i < ts->n; i++) N += ts->tr[i].completion_len;
    return N;
}

static double max_abs_diff(const float *x, const float *y, size_t n, double *scale)
{
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)x[i] - y[i]));
        s = fmax(s, fabs((double)y[i]));
    }
    if (scale) *scale = s;
    return d;
}

static const ModelConfig k_tiny = {.dim = 32,
                                   .n_layers = 1,
                                   .n_heads = 4,
                                   .n_kv_heads = 2,
                                   .hidden_dim = 64,
                                   .vocab_size = TOK_N_SPECIAL + 4,
                                   .max_seq_len = 12,
                                   .rope_theta = 10000.0f,
                                   .norm_eps = 1e-5f,
                                   .tie_embeddings = true};

static OptimConfig test_optim(float lr)
{
    OptimConfig c = fixture_optim_config(lr, lr, 0, 0);
    c.beta2 = 0.99f;
    return c;
}

/* Runs one algo_step of cfg on a fresh Algo over p and returns its stats;
 * p's gradient block then holds the step's gradient. */
static int one_step(const AlgoConfig *cfg, Model *p, Model *ref, const TestSet *ts, int64_t ver,
                    AlgoStats *st)
{
    OptimConfig oc = test_optim(1e-3f);
    Optim      *o = optim_new(&oc, model_num_params(p));
    Algo       *a = algo_new(cfg, p, o, ref, NULL, NULL);
    int         rc = algo_step(a, ts->tr, ts->n, ver, st);
    algo_free(&a);
    optim_free(&o);
    return rc;
}

/* A policy p and an identical copy p0 (the test's reference for the
 * gradient), and n random trajectories in groups of 4 drawn with seed,
 * every token at version. */
static void twin_setup(Model **p, Model **p0, TestSet *ts, int n, uint64_t seed, int64_t version)
{
    Rng r;
    *p = model_new(&k_tiny);
    *p0 = model_new(&k_tiny);
    model_init_random(*p, 3, 0.2f);
    model_copy_params(*p0, *p);
    rng_seed(&r, seed);
    ts_init(ts, n);
    ts_random(ts, &r, 4, k_tiny.vocab_size, version);
}

/* Test 1: behaviour == current policy gives ratios of exactly 1 and the
 * on-policy policy gradient -A * mask / N. */
static void test_on_policy(bool verbose)
{
    int     n = 8;
    Model  *p, *p0;
    TestSet ts;
    twin_setup(&p, &p0, &ts, n, 4, 7);
    ts_forward(p, &ts, ts.beh, NULL);
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.kl_beta = 0.0f;
    AlgoStats st;
    CHECK(one_step(&ac, p, NULL, &ts, 7, &st) == 0);

    int    N = ts_tokens(&ts);
    double adv[8];
    float  dl[8 * TS_MAXC] = {0}, lp[8 * TS_MAXC];
    ts_group_adv(&ts, adv);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ts.tr[i].completion_len; k++)
            dl[i * TS_MAXC + k] = (float)(-adv[i] / N);
    ts_forward(p0, &ts, lp, dl);
    double scale, d = max_abs_diff(model_grads(p), model_grads(p0), model_num_params(p), &scale);
    bool   ratio_ok = fabs(st.ratio_mean - 1) <= 1e-6 && fabs(st.ratio_min - 1) <= 1e-6 &&
                    fabs(st.ratio_max - 1) <= 1e-6 && st.clip_frac == 0.0;
    if (verbose)
        printf("  on-policy: ratio mean %.9f min %.9f max %.9f, clip %.3f; grad vs -A*mask/N: max "
               "diff %.3g (max |g| %.3g), %d opt step(s), fresh %d/%d, mismatch %.3g\n",
               st.ratio_mean, st.ratio_min, st.ratio_max, st.clip_frac, d, scale, st.n_opt_steps,
               st.n_fresh, N, st.mismatch_abs);
    EXPECT(
        ratio_ok,
        "on-policy ratio mean %.9f min %.9f max %.9f clip %.3f, expected 1, 1, 1 (to 1e-6) and 0",
        st.ratio_mean, st.ratio_min, st.ratio_max, st.clip_frac);
    EXPECT(scale > 1e-4 && d <= 1e-5 * scale, "expected scale > 1e-4 && d <= 1e-5 * scale");
    EXPECT(!(st.n_opt_steps != 1 || st.n_tokens != N || st.n_fresh != N),
           "expected !(st.n_opt_steps != 1 || st.n_tokens != N || st.n_fresh != N)");
    EXPECT(!(st.staleness_hist[0] != N || !(st.mismatch_abs <= 1e-6)),
           "expected !(st.staleness_hist[0] != N || !(st.mismatch_abs <= 1e-6))");
    ts_free(&ts);
    model_free(&p);
    model_free(&p0);
}

/* Test 2: stale behaviour log-probs; clipped tokens contribute no gradient,
 * the ratio cap zeroes A < 0 tokens above it, the IS weight cap scales. */
static void test_clipping(bool verbose)
{
    int     n = 8;
    Model  *p, *p0;
    TestSet ts;
    twin_setup(&p, &p0, &ts, n, 5, 0);
    float cur[8 * TS_MAXC], dl[8 * TS_MAXC] = {0};
    ts_forward(p0, &ts, cur, NULL);
    /* Ratios r = exp(-delta): 1, 0.61, 1.65, 4.95, 0.90, far from every bound. */
    static const float deltas[] = {0.0f, 0.5f, -0.5f, -1.6f, 0.1f};
    const int64_t      lv = 7;
    double             adv[8], lo = 0.8, hi = 1.2, cap = 3.0;
    int64_t            hist[ALGO_STALENESS_BUCKETS] = {0};
    int                N = ts_tokens(&ts), n_low = 0, n_high = 0, n_cap = 0, n_fresh = 0;
    double             fresh_abs = 0;
    ts_group_adv(&ts, adv);
    for (int i = 0, j = 0; i < n; i++) {
        for (int k = 0; k < ts.tr[i].completion_len; k++, j++) {
            int   at = i * TS_MAXC + k;
            float delta = deltas[j % 5];
            int   stale = (i + k) % 6;
            ts.beh[at] = fminf(0.0f, cur[at] + delta);
            ts.ver[at] = lv - stale;
            hist[stale < 4 ? stale : 4]++;
            if (stale == 0) {
                n_fresh++;
                fresh_abs += fabs((double)cur[at] - ts.beh[at]);
            }
            double ratio = exp((double)cur[at] - ts.beh[at]), a = adv[i];
            bool   flows = true;
            if (a > 0 && ratio > hi)
                flows = false, n_high++;
            else if (a < 0 && ratio < lo)
                flows = false, n_low++;
            else if (a < 0 && ratio > cap)
                flows = false, n_cap++;
            dl[at] = flows ? (float)(-a * ratio / N) : 0.0f;
        }
    }
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.kl_beta = 0.0f;
    ac.ratio_cap = (float)cap;
    AlgoStats st;
    CHECK(one_step(&ac, p, NULL, &ts, lv, &st) == 0);
    ts_forward(p0, &ts, cur, dl);
    double scale, d = max_abs_diff(model_grads(p), model_grads(p0), model_num_params(p), &scale);
    bool   frac_ok = fabs(st.clip_low_frac - (double)n_low / N) < 1e-9 &&
                   fabs(st.clip_high_frac - (double)n_high / N) < 1e-9 &&
                   fabs(st.cap_frac - (double)n_cap / N) < 1e-9;
    bool hist_ok = memcmp(hist, st.staleness_hist, sizeof hist) == 0;
    if (verbose)
        printf("  stale: clip low %.3f (want %.3f) high %.3f (%.3f) cap %.3f (%.3f), ratio "
               "%.3f..%.3f; grad vs masked reference: max diff %.3g (max |g| %.3g); staleness "
               "%lld/%lld/%lld/%lld/%lld; fresh %d mismatch %.4f (want %.4f)\n",
               st.clip_low_frac, (double)n_low / N, st.clip_high_frac, (double)n_high / N,
               st.cap_frac, (double)n_cap / N, st.ratio_min, st.ratio_max, d, scale,
               (long long)st.staleness_hist[0], (long long)st.staleness_hist[1],
               (long long)st.staleness_hist[2], (long long)st.staleness_hist[3],
               (long long)st.staleness_hist[4], st.n_fresh, st.mismatch_abs, fresh_abs / n_fresh);
    EXPECT(!(!frac_ok || !hist_ok || n_low == 0 || n_high == 0 || n_cap == 0),
           "expected !(!frac_ok || !hist_ok || n_low == 0 || n_high == 0 || n_cap == 0)");
    EXPECT(scale > 1e-5 && d <= 1e-5 * scale, "expected scale > 1e-5 && d <= 1e-5 * scale");
    EXPECT(!(st.n_fresh != n_fresh || !(fabs(st.mismatch_abs - fresh_abs / n_fresh) < 1e-5)),
           "expected !(st.n_fresh != n_fresh || !(fabs(st.mismatch_abs - fresh_abs / n_fresh) < "
           "1e-5))");
    ts_free(&ts);

    /* Single-token cases: one group of two one-token completions with
     * rewards 1 and 0, so A = +a and -a. */
    TestSet one;
    ts_init(&one, 2);
    for (int i = 0; i < 2; i++) {
        one.tr[i].prompt_len = 2;
        one.prompt[i * TS_MAXP] = TOK_BOS;
        one.prompt[i * TS_MAXP + 1] = TOK_N_SPECIAL;
        one.tr[i].completion_len = 1;
        one.comp[i * TS_MAXC] = TOK_N_SPECIAL + 1 + i;
        one.tr[i].reward = i == 0 ? 1.0f : 0.0f;
        one.ver[i * TS_MAXC] = 0;
    }
    float  c1[2 * TS_MAXC];
    double a1[2];
    ts_group_adv(&one, a1);
    ts_forward(p0, &one, c1, NULL);
    struct {
        const char *what;
        float       delta[2];  /* behaviour = current + delta */
        float       ratio_cap; /* 0 = off */
        bool        decoupled;
        float       wcap;
        double      want[2]; /* gradient multiplier of -A/N per token; < 0 means "r" */
    } cases[] = {
        {"both clipped (high, low)", {-0.5f, 0.7f}, 3.0f, false, 0.0f, {0, 0}},
        {"clipped high + capped", {-0.5f, -1.4f}, 3.0f, false, 0.0f, {0, 0}},
        {"clipped high + cap off", {-0.5f, -1.4f}, 0.0f, false, 0.0f, {0, -1}},
        {"decoupled, w capped at 2", {-2.0f, -2.0f}, 3.0f, true, 2.0f, {2, 2}},
        {"decoupled, w uncapped", {-2.0f, -2.0f}, 3.0f, true, 0.0f, {-2, -2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float dl1[2 * TS_MAXC] = {0};
        for (int i = 0; i < 2; i++) {
            one.beh[i * TS_MAXC] = c1[i * TS_MAXC] + cases[c].delta[i];
            double w = cases[c].want[i];
            double rr = exp((double)c1[i * TS_MAXC] - one.beh[i * TS_MAXC]);
            if (w == -1) w = rr; /* unclipped: the ratio itself */
            if (w == -2) w = rr; /* decoupled, ratio 1 against prox: the weight */
            dl1[i * TS_MAXC] = (float)(-a1[i] * w / 2);
        }
        model_copy_params(p, p0);
        ac = ALGO_DEFAULTS;
        ac.kl_beta = 0.0f;
        ac.ratio_cap = cases[c].ratio_cap;
        ac.decoupled = cases[c].decoupled;
        ac.is_weight_cap = cases[c].wcap;
        CHECK(one_step(&ac, p, NULL, &one, 0, &st) == 0);
        ts_forward(p0, &one, c1, dl1);
        d = max_abs_diff(model_grads(p), model_grads(p0), model_num_params(p), &scale);
        bool zero = cases[c].want[0] == 0 && cases[c].want[1] == 0;
        bool ok = zero ? d == 0.0 && scale == 0.0 : scale > 1e-5 && d <= 1e-5 * scale;
        if (verbose)
            printf("  single-token %-26s clip %.2f cap %.2f ratio %.3f..%.3f w %.3f (capped "
                   "%.2f): grad max diff %.3g (max |g| %.3g)\n",
                   cases[c].what, st.clip_frac, st.cap_frac, st.ratio_min, st.ratio_max,
                   st.is_weight_mean, st.is_weight_cap_frac, d, scale);
        EXPECT(ok, "single-token %s: grad max diff %.3g (max |g| %.3g), expected %s", cases[c].what,
               d, scale, zero ? "both 0" : "max diff <= 1e-5 * max |g|");
        if (c == 0)
            EXPECT(!(st.clip_frac != 1.0 || st.cap_frac != 0.0),
                   "case %zu: expected !(st.clip_frac != 1.0 || st.cap_frac != 0.0)", c);
        if (c == 1)
            EXPECT(!(st.clip_frac != 0.5 || st.cap_frac != 0.5),
                   "case %zu: expected !(st.clip_frac != 0.5 || st.cap_frac != 0.5)", c);
        if (c == 2)
            EXPECT(!(st.clip_frac != 0.5 || st.cap_frac != 0.0),
                   "case %zu: expected !(st.clip_frac != 0.5 || st.cap_frac != 0.0)", c);
        if (c == 3)
            EXPECT(!(st.is_weight_cap_frac != 1.0 || fabs(st.is_weight_mean - 2) > 1e-6),
                   "case %zu: expected !(st.is_weight_cap_frac != 1.0 || fabs(st.is_weight_mean - "
                   "2) > 1e-6)",
                   c);
        if (c >= 3)
            EXPECT(!(fabs(st.ratio_min - 1) > 1e-6 || fabs(st.ratio_max - 1) > 1e-6),
                   "case %zu: expected !(fabs(st.ratio_min - 1) > 1e-6 || fabs(st.ratio_max - 1) > "
                   "1e-6)",
                   c);
        if (c == 4)
            EXPECT(!(st.is_weight_cap_frac != 0.0 || fabs(st.is_weight_mean - exp(2)) > 1e-3),
                   "expected !(st.is_weight_cap_frac != 0.0 || fabs(st.is_weight_mean - exp(2)) > "
                   "1e-3)");
    }
    ts_free(&one);
    model_free(&p);
    model_free(&p0);
}

/* What a learning run reports. */
typedef struct {
    double reward_before; /* mean reward of the first batch (the initial policy) */
    double reward_after;  /* mean reward of the last 5 batches */
    double kl_first_k1, kl_first_k3;
    double kl_last_k3; /* mean over the last 5 batches */
    double mismatch_max;
    double ev_early;                /* PPO explained variance, mean of the first 5 batches */
    double vloss_first, vloss_last; /* PPO value loss of the first and last batch */
    double value_gap;               /* PPO mean value - mean reward, last 5 batches */
    int    opt_steps;
} RunResult;

/* The toy verifiable task: the prompt is BOS and one of four characters;
 * the reward is 1 if the completion starts with that same character. 8
 * prompts x G = 8 samples per batch at temperature 1, synchronous (every
 * token is fresh), for `steps` algo_step calls. */
static void run_learning(const AlgoConfig *ac, int steps, float lr, RunResult *res)
{
    enum { NP = 8, G = 8, NB = NP * G, MAXNEW = 3 };
    Model *p = model_new(&k_tiny), *ref = model_new(&k_tiny), *critic = NULL;
    model_init_random(p, 21, 0.1f);
    model_copy_params(ref, p);
    OptimConfig oc = test_optim(lr), occ = test_optim(1e-2f);
    Optim      *o = optim_new(&oc, model_num_params(p)), *co = NULL;
    if (ac->kind == ALGO_PPO) {
        critic = algo_critic_from_policy(p, 22, 0.02f);
        co = optim_new(&occ, model_num_params(critic));
    }
    Algo          *a = algo_new(ac, p, o, ref, critic, co);
    Generator     *g = gen_new(p, NB, 2 + MAXNEW);
    GenConfig      gc = {.sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                         .max_new = MAXNEW,
                         .stop_id = TOK_EOS};
    int            toks[NB * MAXNEW], ntok[NB], fin[NB], prompts[NB][2], plens[NB];
    float          lps[NB * MAXNEW], lpf[NB * MAXNEW];
    int64_t        vers[NB * MAXNEW];
    const int     *pp[NB];
    GenOutput      out = {toks, lps, lpf, ntok, fin};
    AlgoTrajectory tr[NB];
    Rng            rng;
    rng_seed(&rng, 23);
    memset(res, 0, sizeof *res);
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < NB; i++) {
            prompts[i][0] = TOK_BOS;
            prompts[i][1] = TOK_N_SPECIAL + (i / G) % 4;
            pp[i] = prompts[i];
            plens[i] = 2;
        }
        CHECK(gen_run(g, &gc, NB, pp, plens, &rng, &out) == 0);
        for (int i = 0; i < NB * MAXNEW; i++) vers[i] = s;
        for (int i = 0; i < NB; i++)
            tr[i] = (AlgoTrajectory){.prompt = prompts[i],
                                     .prompt_len = 2,
                                     .completion = toks + i * MAXNEW,
                                     .completion_len = ntok[i],
                                     .logp_behaviour = lpf + i * MAXNEW,
                                     .version = vers + i * MAXNEW,
                                     .group_id = i / G,
                                     .reward = toks[i * MAXNEW] == prompts[i][1] ? 1.0f : 0.0f,
                                     .temperature = 1.0f};
        AlgoStats st;
        CHECK(algo_step(a, tr, NB, s, &st) == 0);
        if (s == 0) {
            res->reward_before = st.reward_mean;
            res->kl_first_k1 = st.kl_ref_k1;
            res->kl_first_k3 = st.kl_ref_k3;
        }
        if (s >= steps - 5) {
            res->reward_after += st.reward_mean / 5;
            res->kl_last_k3 += st.kl_ref_k3 / 5;
        }
        res->mismatch_max = fmax(res->mismatch_max, st.mismatch_abs);
        CHECK(st.n_fresh ==
              st.n_tokens); /* Later batches are nearly all reward 1, where the returns barely
                             * vary and the explained variance means nothing. */
        if (s < 5) res->ev_early += st.explained_var / 5;
        if (s >= steps - 5) res->value_gap += (st.value_mean - st.reward_mean) / 5;
        if (s == 0) res->vloss_first = st.value_loss;
        res->vloss_last = st.value_loss;
        res->opt_steps += st.n_opt_steps;
    }
    gen_free(&g);
    algo_free(&a);
    optim_free(&o);
    optim_free(&co);
    model_free(&critic);
    model_free(&ref);
    model_free(&p);
}

/* Tests 3 and 4: GRPO and PPO learn the toy task; KL to the reference starts
 * at 0, grows, and grows less with a large kl_beta. */
static void test_learning(bool verbose)
{
    int        steps = 40;
    RunResult  g0, gb, pp;
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.kl_beta = 0.0f;
    run_learning(&ac, steps, 1e-2f, &g0);
    ac.kl_beta = 1.0f;
    run_learning(&ac, steps, 1e-2f, &gb);
    ac = ALGO_DEFAULTS;
    ac.kind = ALGO_PPO;
    ac.kl_beta = 0.0f;
    ac.epochs = 2;
    ac.minibatch_size = 32;
    /* Four optimizer steps per batch: a smaller rate keeps it from collapsing
     * a prompt onto a wrong answer before the critic can tell. */
    run_learning(&ac, steps, 3e-3f, &pp);
    if (verbose) {
        RunResult  *r[] = {&g0, &gb, &pp};
        const char *name[] = {"GRPO beta 0", "GRPO beta 1", "PPO"};
        for (int i = 0; i < 3; i++)
            printf("  %-11s reward %.3f -> %.3f over %d steps (%d opt steps); KL to ref k1 %.2g "
                   "k3 %.2g at start, k3 %.4f at end; max mismatch %.2g\n",
                   name[i], r[i]->reward_before, r[i]->reward_after, steps, r[i]->opt_steps,
                   r[i]->kl_first_k1, r[i]->kl_first_k3, r[i]->kl_last_k3, r[i]->mismatch_max);
        printf("  PPO critic: value loss %.4f -> %.4f, mean value - mean reward %.3f at the end, "
               "explained variance %.3f over the first 5 batches\n",
               pp.vloss_first, pp.vloss_last, pp.value_gap, pp.ev_early);
    }
    EXPECT(g0.reward_after >= 0.8 && g0.reward_after > g0.reward_before + 0.4,
           "expected g0.reward_after >= 0.8 && g0.reward_after > g0.reward_before + 0.4");
    EXPECT(pp.reward_after >= 0.8 && pp.reward_after > pp.reward_before + 0.4,
           "expected pp.reward_after >= 0.8 && pp.reward_after > pp.reward_before + 0.4");
    EXPECT(g0.kl_first_k1 == 0.0 && g0.kl_first_k3 == 0.0 && gb.kl_first_k3 == 0.0 &&
               pp.kl_first_k3 == 0.0,
           "expected g0.kl_first_k1 == 0.0 && g0.kl_first_k3 == 0.0 && gb.kl_first_k3 == 0.0 && "
           "pp.kl_first_k3 == 0.0");
    EXPECT(pp.vloss_last < 0.25 * pp.vloss_first && fabs(pp.value_gap) < 0.1,
           "expected pp.vloss_last < 0.25 * pp.vloss_first && fabs(pp.value_gap) < 0.1");
    EXPECT(g0.kl_last_k3 > 0.1 && gb.kl_last_k3 < 0.5 * g0.kl_last_k3,
           "expected g0.kl_last_k3 > 0.1 && gb.kl_last_k3 < 0.5 * g0.kl_last_k3");
    EXPECT(g0.mismatch_max < 1e-4 && pp.mismatch_max < 1e-4 && gb.mismatch_max < 1e-4,
           "expected g0.mismatch_max < 1e-4 && pp.mismatch_max < 1e-4 && gb.mismatch_max < 1e-4");
}

/* Test 5: the decoupled objective with prox == behaviour is the standard
 * one exactly, over several minibatches and epochs with KL and entropy. */
static void test_decoupled(bool verbose)
{
    int    n = 8;
    Rng    r;
    Model *pa = model_new(&k_tiny), *pb = model_new(&k_tiny), *ref = model_new(&k_tiny);
    model_init_random(pa, 8, 0.2f);
    model_copy_params(ref, pa);
    model_init_random(pa, 9, 0.2f); /* the policy has moved away from the reference */
    model_copy_params(pb, pa);
    rng_seed(&r, 10);
    TestSet ts;
    ts_init(&ts, n);
    ts_random(&ts, &r, 4, k_tiny.vocab_size, 3);
    ts_forward(pa, &ts, ts.beh, NULL);
    OptimConfig oc = test_optim(1e-2f);
    Optim *oa = optim_new(&oc, model_num_params(pa)), *ob = optim_new(&oc, model_num_params(pb));
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.epochs = 2;
    ac.minibatch_size = 3;
    ac.entropy_coef = 0.01f;
    ac.kl_beta = 0.1f;
    Algo *a = algo_new(&ac, pa, oa, ref, NULL, NULL);
    ac.decoupled = true;
    Algo     *b = algo_new(&ac, pb, ob, ref, NULL, NULL);
    AlgoStats sa, sb;
    CHECK(algo_step(a, ts.tr, n, 5, &sa) == 0);
    CHECK(algo_step(b, ts.tr, n, 5, &sb) == 0);
    double scale,
        d = max_abs_diff(model_params(pb), model_params(pa), model_num_params(pa), &scale);
    double moved = max_abs_diff(model_params(pa), model_params(ref), model_num_params(pa), NULL);
    if (verbose)
        printf("  decoupled (prox == behaviour) vs standard: %d opt steps each, params max diff "
               "%.3g, loss %.9f vs %.9f, clip %.3f vs %.3f, w %.6f\n",
               sa.n_opt_steps, d, sa.loss, sb.loss, sa.clip_frac, sb.clip_frac, sb.is_weight_mean);
    EXPECT(d == 0.0 && sa.loss == sb.loss && sa.clip_frac == sb.clip_frac,
           "expected d == 0.0 && sa.loss == sb.loss && sa.clip_frac == sb.clip_frac");
    EXPECT(!(sa.n_opt_steps != 6 || sb.is_weight_mean != 1.0 || !(moved > 0.0)),
           "expected !(sa.n_opt_steps != 6 || sb.is_weight_mean != 1.0 || !(moved > 0.0))");
    algo_free(&a);
    algo_free(&b);
    optim_free(&oa);
    optim_free(&ob);
    ts_free(&ts);
    model_free(&pa);
    model_free(&pb);
    model_free(&ref);
}

/* Runs algo_step with stderr captured and expects want and a log line
 * containing needle; the parameters must not change. */
static void expect_refusal(Algo *a, Model *p, const TestSet *ts, int64_t lv, int want,
                           const char *needle)
{
    size_t n = model_num_params(p);
    float *before = xmalloc(n * sizeof(float));
    memcpy(before, model_params(p), n * sizeof(float));
    AlgoStats st;
    EXPECT_REFUSED(algo_step(a, ts->tr, ts->n, lv, &st), want, needle, needle);
    EXPECT(memcmp(before, model_params(p), n * sizeof(float)) == 0,
           "refused step ('%s') changed the parameters, expected them untouched", needle);
    free(before);
}

/* Refused inputs and configs, and the critic helper. */
static void test_inputs(bool verbose)
{
    Rng    r;
    char   why[200];
    Model *p = model_new(&k_tiny);
    model_init_random(p, 3, 0.2f);
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.temperature = 0.7f;
    EXPECT(!(algo_config_validate(&ac, why, sizeof why) != 0),
           "expected !(algo_config_validate(&ac, why, sizeof why) != 0)");
    ac = ALGO_DEFAULTS;
    ac.ratio_cap = 1.1f;
    EXPECT(!(algo_config_validate(&ac, why, sizeof why) != ERR_RANGE),
           "expected !(algo_config_validate(&ac, why, sizeof why) != ERR_RANGE)");
    ac = ALGO_DEFAULTS;
    ac.clip_low = 1.0f;
    EXPECT(!(algo_config_validate(&ac, why, sizeof why) != ERR_RANGE),
           "expected !(algo_config_validate(&ac, why, sizeof why) != ERR_RANGE)");
    ac = ALGO_DEFAULTS;
    EXPECT(!(algo_config_validate(&ac, NULL, 0) != 0),
           "expected !(algo_config_validate(&ac, NULL, 0) != 0)");

    ac = ALGO_DEFAULTS;
    ac.kl_beta = 0.0f;
    OptimConfig oc = test_optim(1e-2f);
    Optim      *o = optim_new(&oc, model_num_params(p));
    Algo       *a = algo_new(&ac, p, o, NULL, NULL, NULL);
    TestSet     ts;
    ts_init(&ts, 4);
    rng_seed(&r, 11);
    ts_random(&ts, &r, 2, k_tiny.vocab_size, 2);
    ts_forward(p, &ts, ts.beh, NULL);
    ts.tr[1].temperature = 0.7f;
    expect_refusal(a, p, &ts, 2, ERR_UNSUPPORTED, "trajectory 1: sampled at temperature");
    ts.tr[1].temperature = 1.0f;
    expect_refusal(a, p, &ts, 1, ERR_RANGE, "policy version 2, expected 0..1");
    ts.comp[2 * TS_MAXC] = k_tiny.vocab_size;
    expect_refusal(a, p, &ts, 2, ERR_RANGE, "trajectory 2: token");
    ts.comp[2 * TS_MAXC] = TOK_EOS;
    ts.tr[3].reward = NAN;
    expect_refusal(a, p, &ts, 2, ERR_NONFINITE, "trajectory 3: reward");
    ts.tr[3].reward = 0.5f;
    ts.beh[0] = 0.5f;
    expect_refusal(a, p, &ts, 2, ERR_RANGE, "expected <= 0");
    ts.beh[0] = -1.0f;
    ts.tr[0].completion_len = k_tiny.max_seq_len;
    expect_refusal(a, p, &ts, 2, ERR_RANGE, "max_seq_len + 1");
    ts.tr[0].completion_len = 1;
    AlgoStats st;
    EXPECT(!(algo_step(a, ts.tr, ts.n, 2, &st) != 0),
           "expected !(algo_step(a, ts.tr, ts.n, 2, &st) != 0)");

    Model *critic = algo_critic_from_policy(p, 5, 0.02f);
    int    shared = 0, differ = 0;
    for (int i = 0; i < model_num_tensors(p); i++) {
        ModelTensor pt, ct;
        model_tensor(p, i, &pt);
        CHECK(model_find_tensor(critic, pt.name, &ct) == 0);
        shared++;
        differ += memcmp(pt.data, ct.data, pt.numel * sizeof(float)) != 0;
    }
    ModelTensor sw;
    bool        head = model_config(critic)->has_value_head &&
                model_find_tensor(critic, "score.weight", &sw) == 0 && sw.data[0] != 0.0f;
    if (verbose)
        printf("  critic from policy: %d shared tensors, %d differ; value head %s\n", shared,
               differ, head ? "present" : "MISSING");
    EXPECT(!(differ != 0 || !head || model_num_tensors(critic) != shared + 2),
           "expected !(differ != 0 || !head || model_num_tensors(critic) != shared + 2)");
    model_free(&critic);
    algo_free(&a);
    optim_free(&o);
    ts_free(&ts);
    model_free(&p);
}

/* The family's kinds, each from its preset. */
static const AlgoKind k_family[] = {ALGO_GRPO,    ALGO_REINFORCE, ALGO_RLOO,
                                    ALGO_DR_GRPO, ALGO_DAPO,      ALGO_GSPO};
enum { N_FAMILY = sizeof k_family / sizeof k_family[0] };

/* cfg for kind: ALGO_DEFAULTS, the preset, completions capped at max_new. */
static AlgoConfig family_config(AlgoKind kind, int max_new)
{
    AlgoConfig c = ALGO_DEFAULTS;
    c.max_new_tokens = max_new;
    algo_preset(&c, kind, 0);
    return c;
}

/* Each trajectory's advantage as the kind defines it, by hand in double
 * from the rewards plus the overlong penalty: the group's (r - mean) /
 * (std + eps) or r - mean, RLOO's r - mean of the others, REINFORCE's
 * r - the batch mean (a first batch is its own baseline). */
static void ts_kind_adv(const TestSet *ts, const AlgoConfig *c, double *adv)
{
    double r[64], bmean = 0.0;
    CHECK(ts->n <= 64);
    for (int i = 0; i < ts->n; i++) {
        double pen = 0.0;
        int    len = ts->tr[i].completion_len, buf = c->overlong_buffer, L = c->max_new_tokens;
        if (buf > 0 && len > L - buf) pen = len > L ? -1.0 : (double)(L - buf - len) / buf;
        r[i] = ts->tr[i].reward + c->overlong_coef * pen;
        bmean += r[i] / ts->n;
    }
    for (int i = 0; i < ts->n; i++) {
        double s = 0, ss = 0;
        int    G = 0;
        for (int j = 0; j < ts->n; j++) {
            if (ts->tr[j].group_id != ts->tr[i].group_id) continue;
            s += r[j];
            ss += r[j] * r[j];
            G++;
        }
        double mean = s / G, sd = sqrt(fmax(0.0, ss / G - mean * mean));
        if (c->kind == ALGO_REINFORCE)
            adv[i] = r[i] - bmean;
        else if (c->kind == ALGO_RLOO)
            adv[i] = G > 1 ? r[i] - (s - r[i]) / (G - 1) : 0.0;
        else
            adv[i] = c->adv_divide_std ? (r[i] - mean) / (sd + ADV_STD_EPS) : r[i] - mean;
    }
}

/* The weight of each of trajectory i's tokens in the loss, by hand:
 * token-mean 1 / N, seq-mean 1 / (n |y_i|), constant 1 / (n L). */
static double ts_kind_weight(const TestSet *ts, const AlgoConfig *c, int i)
{
    switch (c->agg) {
    case AGG_TOKEN_MEAN:
        return 1.0 / ts_tokens(ts);
    case AGG_SEQ_MEAN:
        return 1.0 / ((double)ts->n * ts->tr[i].completion_len);
    case AGG_CONSTANT:
        return 1.0 / ((double)ts->n * c->max_new_tokens);
    }
    return NAN;
}

/* On-policy, one step of each kind: the gradient is -A_i * weight_i on
 * every token of trajectory i (every ratio, token or sequence, is 1), with
 * A and the weights computed by hand above. The completions are 1..5
 * tokens under a cap of 5, so DAPO's overlong buffer (ceil(5/5) = 1)
 * penalises the 5-token ones. Then the KL in the reward (GRPO's advantages
 * of r - beta * sum_t (logp_beh - logp_ref)), and the adaptive coefficient
 * over two steps. */
static void test_family_on_policy(bool verbose)
{
    int     n = 16;
    Model  *p, *p0;
    TestSet ts;
    twin_setup(&p, &p0, &ts, n, 6, 4);
    ts_forward(p, &ts, ts.beh, NULL);
    for (int k = 0; k < N_FAMILY; k++) {
        AlgoConfig ac = family_config(k_family[k], 5);
        ac.kl_beta = 0.0f;
        model_copy_params(p, p0);
        AlgoStats st;
        CHECK(one_step(&ac, p, NULL, &ts, 4, &st) == 0);
        double adv[16];
        float  dl[16 * TS_MAXC] = {0}, lp[16 * TS_MAXC];
        ts_kind_adv(&ts, &ac, adv);
        int n_long = 0;
        for (int i = 0; i < n; i++) {
            n_long += ac.overlong_buffer > 0 && ts.tr[i].completion_len == 5;
            for (int k2 = 0; k2 < ts.tr[i].completion_len; k2++)
                dl[i * TS_MAXC + k2] = (float)(-adv[i] * ts_kind_weight(&ts, &ac, i));
        }
        ts_forward(p0, &ts, lp, dl);
        double scale,
            d = max_abs_diff(model_grads(p), model_grads(p0), model_num_params(p), &scale);
        if (verbose)
            printf("  %-9s on-policy: grad vs -A*w by hand: max diff %.3g (max |g| %.3g); agg %s, "
                   "ratio %s, overlong %.3f (want %.3f), ratio %.6f..%.6f\n",
                   algo_kind_name(ac.kind), d, scale, agg_mode_names[ac.agg],
                   ac.ratio_level == PG_RATIO_SEQUENCE ? "sequence" : "token", st.overlong_frac,
                   (double)n_long / n, st.ratio_min, st.ratio_max);
        EXPECT(scale > 1e-5 && d <= 1e-5 * scale,
               "%s on-policy gradient: max diff %.3g (max |g| %.3g), expected <= 1e-5 of it",
               algo_kind_name(ac.kind), d, scale);
        EXPECT(fabs(st.overlong_frac - (double)n_long / n) < 1e-12 &&
                   (ac.kind != ALGO_DAPO || n_long > 0),
               "%s: overlong fraction %.3f, expected %.3f", algo_kind_name(ac.kind),
               st.overlong_frac, (double)n_long / n);
    }

    /* KL in the reward, critic-free: a reference that differs. */
    Model *ref = model_new(&k_tiny);
    model_init_random(ref, 77, 0.2f);
    float lref[16 * TS_MAXC];
    ts_forward(ref, &ts, lref, NULL);
    AlgoConfig ac = family_config(ALGO_GRPO, 5);
    ac.kl_beta = 0.5f;
    ac.kl_place = ALGO_KL_REWARD;
    model_copy_params(p, p0);
    AlgoStats st;
    CHECK(one_step(&ac, p, ref, &ts, 4, &st) == 0);
    TestSet        shaped = ts; /* the same arrays, its own trajectory table */
    AlgoTrajectory tr2[16];
    memcpy(tr2, ts.tr, sizeof tr2);
    shaped.tr = tr2;
    double kl_seq_k3 = 0.0;
    for (int i = 0; i < n; i++) {
        double k1 = 0.0;
        for (int k2 = 0; k2 < ts.tr[i].completion_len; k2++) {
            int at = i * TS_MAXC + k2;
            k1 += (double)ts.beh[at] - lref[at];
            kl_seq_k3 += kl_k3((double)lref[at] - ts.beh[at]) / n;
        }
        tr2[i].reward = (float)(ts.tr[i].reward - 0.5 * k1);
    }
    double adv[16];
    float  dl[16 * TS_MAXC] = {0}, lp[16 * TS_MAXC];
    ts_group_adv(&shaped, adv);
    for (int i = 0; i < n; i++)
        for (int k2 = 0; k2 < ts.tr[i].completion_len; k2++)
            dl[i * TS_MAXC + k2] = (float)(-adv[i] / ts_tokens(&ts));
    ts_forward(p0, &ts, lp, dl);
    double scale, d = max_abs_diff(model_grads(p), model_grads(p0), model_num_params(p), &scale);
    if (verbose)
        printf("  grpo, k1 in the reward (beta 0.5): grad vs advantages of r - beta*sum k1: max "
               "diff %.3g (max |g| %.3g)\n",
               d, scale);
    EXPECT(scale > 1e-5 && d <= 1e-4 * scale,
           "KL in the reward: gradient max diff %.3g (max |g| %.3g)", d, scale);

    /* Adaptive: the KL the controller sees is the mean summed k3 (KL in
     * the loss), and beta moves by kl_adaptive_beta after each step. */
    ac = family_config(ALGO_GRPO, 5);
    ac.kl_beta = 0.1f;
    ac.kl_target = 0.05f; /* far below the measured KL: beta must rise */
    ac.kl_horizon = 16.0f;
    ac.kl_gain = 1.0f;
    model_copy_params(p, p0);
    OptimConfig oc = test_optim(1e-3f);
    Optim      *o = optim_new(&oc, model_num_params(p));
    Algo       *a = algo_new(&ac, p, o, ref, NULL, NULL);
    AlgoStats   s1, s2;
    CHECK(algo_step(a, ts.tr, n, 4, &s1) == 0);
    double want1 = kl_adaptive_beta(0.1f, s1.kl_ref_seq, 0.05, 1.0, n, 16.0);
    CHECK(algo_step(a, ts.tr, n, 4, &s2) == 0);
    if (verbose)
        printf("  adaptive KL: seq KL %.4f (by hand %.4f) vs target 0.05: beta %.4f -> %.4f -> "
               "%.4f\n",
               s1.kl_ref_seq, kl_seq_k3, s1.kl_beta, s1.kl_beta_next, s2.kl_beta_next);
    EXPECT_NEAR(s1.kl_ref_seq, kl_seq_k3, 1e-5 * kl_seq_k3, "controller's KL = mean summed k3");
    EXPECT(s1.kl_beta == (double)0.1f && s1.kl_beta_next == want1 && s2.kl_beta == want1 &&
               want1 > s1.kl_beta && s2.kl_beta_next > s2.kl_beta &&
               algo_kl_beta(a) == s2.kl_beta_next,
           "adaptive beta: %.6f -> %.6f (want %.6f) -> %.6f", s1.kl_beta, s1.kl_beta_next, want1,
           s2.kl_beta_next);
    algo_free(&a);
    optim_free(&o);
    model_free(&ref);
    ts_free(&ts);
    model_free(&p);
    model_free(&p0);
}

/* The minibatch loss of one kind as a function of logp (or entropy). */
typedef struct {
    const AlgoConfig *cfg;
    double            beta;
    AlgoLossIn        in;
    float            *w;
    int               B, T;
} FamCtx;

static double eval_family(void *p)
{
    FamCtx    *c = p;
    float      g[16 * 8], ge[16 * 8];
    PgPpoStats ps;
    double     pl;
    CHECK(c->B * c->T <= 16 * 8);
    return algo_policy_loss(g, ge, c->w, &ps, &pl, c->cfg, c->beta, &c->in, c->B, c->T);
}

/* Finite differences of every kind's minibatch loss w.r.t. the policy's
 * log-probs and entropies: stale behaviour log-probs (clipping active on
 * both sides), rows of 1..8 tokens, a KL term where the kind has one, an
 * entropy bonus; plain and decoupled. */
static void test_family_fd(bool verbose)
{
    enum { B = 16, T = 8, N = B * T };
    Rng   rng;
    float mask[N] = {0}, logp[N], ent[N], beh[N], prox[N], ref[N], adv[N], w[N];
    rng_seed(&rng, 33);
    for (int b = 0; b < B; b++) {
        int   len = 1 + (int)rng_below(&rng, T);
        float ab = rng_normal(&rng);
        /* A row's mean log-ratio, away from the clip edges of every kind
         * (0.2, 0.28, GSPO's 3e-4 / 4e-4) so differences never straddle
         * a kink; per-token ratios scatter around it. */
        double mu;
        do mu = 0.5 * rng_normal(&rng);
        while (fabs(mu) < 0.02 || fabs(mu - log(0.8)) < 0.02 || fabs(mu - log(1.2)) < 0.02 ||
               fabs(mu - log(1.28)) < 0.02 || fabs(mu - log(3.0)) < 0.02);
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            mask[i] = t < len;
            beh[i] = -0.05f - 2.5f * rng_uniform(&rng);
            prox[i] = beh[i] + 0.2f * rng_normal(&rng);
            double d;
            do d = mu + 0.15 * rng_normal(&rng);
            while (fabs(d - log(0.8)) < 0.01 || fabs(d - log(1.2)) < 0.01 ||
                   fabs(d - log(1.28)) < 0.01 || fabs(d - log(3.0)) < 0.01);
            logp[i] = prox[i] + (float)d;
            ref[i] = logp[i] + 0.5f * rng_normal(&rng);
            ent[i] = 2.0f * rng_uniform(&rng);
            adv[i] = ab;
        }
    }
    for (int k = 0; k < N_FAMILY; k++) {
        for (int dec = 0; dec < 2; dec++) {
            AlgoConfig ac = family_config(k_family[k], T);
            ac.entropy_coef = 0.01f;
            ac.decoupled = dec;
            float *lp = logp, lpb[N];
            if (!dec) { /* ratios against behaviour: keep the rows' distances */
                for (int i = 0; i < N; i++) lpb[i] = logp[i] - prox[i] + beh[i];
                lp = lpb;
            }
            FamCtx     c = {&ac, ac.kl_beta, {lp, ent, beh, dec ? prox : NULL, ref, adv, mask},
                            w,   B,          T};
            float      g[N] = {0}, ge[N] = {0};
            PgPpoStats ps;
            double     pl, loss = algo_policy_loss(g, ge, w, &ps, &pl, &ac, c.beta, &c.in, B, T);
            char       name[64];
            snprintf(name, sizeof name, "%s%s loss d/dlogp", algo_kind_name(ac.kind),
                     dec ? " decoupled" : "");
            EXPECT_GRAD(name, eval_family, &c, lp, g, mask, N, 1e-5);
            snprintf(name, sizeof name, "%s%s loss d/dentropy", algo_kind_name(ac.kind),
                     dec ? " decoupled" : "");
            EXPECT_GRAD(name, eval_family, &c, ent, ge, mask, N, 1e-5);
            /* The same loss without the KL term differs iff the kind has one. */
            float  g0[N] = {0}, ge0[N] = {0};
            double pl0, loss0 = algo_policy_loss(g0, ge0, w, &ps, &pl0, &ac, 0.0, &c.in, B, T);
            EXPECT(ps.clip_low_frac > 0 && ps.clip_high_frac > 0 && isfinite(loss),
                   "%s: both clip bounds bind somewhere (low %.3f high %.3f)",
                   algo_kind_name(ac.kind), ps.clip_low_frac, ps.clip_high_frac);
            EXPECT((ac.kl_beta > 0) == (loss != loss0) && pl0 == pl,
                   "%s: a KL term (%.3g) iff beta %g > 0", algo_kind_name(ac.kind), loss - loss0,
                   (double)ac.kl_beta);
            if (verbose && !dec)
                printf("  %-9s loss %.5f (surrogate %.5f), clip low %.2f high %.2f\n",
                       algo_kind_name(ac.kind), loss, pl, ps.clip_low_frac, ps.clip_high_frac);
        }
    }
}

/* The presets and the new configs' validation. */
static void test_family_configs(bool verbose)
{
    AlgoConfig c = family_config(ALGO_DAPO, 8);
    EXPECT(c.kind == ALGO_DAPO && c.clip_low == 0.2f && c.clip_high == 0.28f &&
               c.dynamic_sampling && c.agg == AGG_TOKEN_MEAN && c.overlong_buffer == 2 &&
               c.kl_beta == 0.0f && c.adv_divide_std,
           "dapo preset: clip 0.2/0.28, dynamic sampling, token-mean, buffer ceil(8/5) = 2, no KL");
    c = family_config(ALGO_DR_GRPO, 8);
    EXPECT(!c.adv_divide_std && c.agg == AGG_CONSTANT && c.kl_beta == 0.04f,
           "dr_grpo preset: no std, constant divisor");
    c = family_config(ALGO_GSPO, 8);
    EXPECT(c.ratio_level == PG_RATIO_SEQUENCE && c.agg == AGG_SEQ_MEAN && c.clip_low == 3e-4f &&
               c.clip_high == 4e-4f,
           "gspo preset: sequence ratio, seq-mean, clip 3e-4/4e-4");
    /* A preset back to GRPO undoes DAPO's pieces; keep holds the user's. */
    c = family_config(ALGO_DAPO, 8);
    c.clip_high = 0.3f;
    algo_preset(&c, ALGO_GRPO, ALGO_PRESET_CLIP_HIGH);
    EXPECT(c.kind == ALGO_GRPO && c.clip_high == 0.3f && !c.dynamic_sampling &&
               c.overlong_buffer == 0 && c.kl_beta == 0.04f,
           "grpo preset over dapo's, keeping clip_high");
    for (int k = 0; k < ALGO_N_KINDS; k++) {
        c = family_config((AlgoKind)k, 8);
        EXPECT(algo_config_validate(&c, NULL, 0) == 0 &&
                   !strcmp(algo_kind_names[k], algo_kind_name((AlgoKind)k)),
               "preset %s validates", algo_kind_names[k]);
    }
    EXPECT(!strcmp(algo_kind_name((AlgoKind)99), "?"), "an unknown kind's name");
    static const struct {
        const char *what;
        AlgoConfig  cfg;
    } k_bad[] = {
        {"gspo ratio with ppo", {.kind = ALGO_PPO, .ratio_level = PG_RATIO_SEQUENCE}},
        {"constant without max_new_tokens", {.agg = AGG_CONSTANT}},
        {"overlong buffer above the cap", {.max_new_tokens = 4, .overlong_buffer = 5}},
        {"kl target without beta", {.kl_target = 1.0f, .kl_beta = 0.0f}},
        {"baseline decay 1", {.baseline_decay = 1.0f}},
        {"kind 7", {.kind = (AlgoKind)7}},
    };
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        AlgoConfig        b = ALGO_DEFAULTS;
        const AlgoConfig *x = &k_bad[i].cfg;
        b.kind = x->kind;
        b.ratio_level = x->ratio_level;
        b.agg = x->agg;
        if (x->max_new_tokens) b.max_new_tokens = x->max_new_tokens;
        b.overlong_buffer = x->overlong_buffer;
        if (x->kl_target > 0.0f) b.kl_target = x->kl_target, b.kl_beta = x->kl_beta;
        if (x->baseline_decay > 0.0f) b.baseline_decay = x->baseline_decay;
        char why[200] = "";
        EXPECT(algo_config_validate(&b, why, sizeof why) == ERR_RANGE && why[0], "refused: %s (%s)",
               k_bad[i].what, why);
        if (verbose) printf("  refused %-32s %s\n", k_bad[i].what, why);
    }
}

/* Every kind of the family learns the toy task from its preset. */
static void test_family_learning(bool verbose)
{
    for (int k = 1; k < N_FAMILY; k++) {
        AlgoConfig ac = family_config(k_family[k], 3);
        ac.kl_beta = 0.0f;
        /* The toy's completions are 1..3 tokens under a cap of 3 and its
         * reward reads only the first, so DAPO's overlong penalty (on the
         * 3-token ones) fights the reward: the policy learns to stop at once
         * (measured: reward 0.28 -> 0.45 in 40 steps, 0.50 in 100). The
         * penalty is tested on the built-in task, whose answers end well
         * before the cap. */
        if (ac.kind == ALGO_DAPO) ac.overlong_buffer = 0;
        RunResult r;
        run_learning(&ac, 40, 1e-2f, &r);
        if (verbose)
            printf("  %-9s reward %.3f -> %.3f over 40 steps; KL to ref k3 %.4f at the end\n",
                   algo_kind_name(ac.kind), r.reward_before, r.reward_after, r.kl_last_k3);
        EXPECT(r.reward_after >= 0.8 && r.reward_after > r.reward_before + 0.4,
               "%s learns the toy task: reward %.3f -> %.3f, expected >= 0.8 and +0.4",
               algo_kind_name(ac.kind), r.reward_before, r.reward_after);
    }
}

int algo_selftest(bool verbose)
{
    test_on_policy(verbose);
    test_clipping(verbose);
    test_decoupled(verbose);
    test_inputs(verbose);
    test_learning(verbose);
    test_family_on_policy(verbose);
    test_family_fd(verbose);
    test_family_configs(verbose);
    test_family_learning(verbose);
    return expect_end();
}
