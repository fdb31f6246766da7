/* pg_selftest: the PPO clipped surrogate on worked examples (clip,
 * asymmetric clip, dual clip, on-policy), on random tokens against the
 * textbook formula and finite differences (plain and decoupled, with a
 * negative control), its normaliser and sequence-mean weights; GSPO's
 * sequence-level surrogate on worked examples against the per-token one,
 * on-policy, and against finite differences (plain and decoupled); and the
 * entropy bonus. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "learner/algo/agg.h"
#include "learner/algo/pg.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

#define FD_TOL 1e-5
#define TN 200 /* tokens in the random tests */

typedef struct {
    float      *logp;
    float      *logp_old;
    float      *logp_prox;
    float      *adv;
    float      *mask;
    PgPpoConfig cfg;
    float       norm;
    int         n;
} PpoCtx;

static double eval_ppo(void *p)
{
    PpoCtx *c = p;
    return pg_ppo_loss(NULL, NULL, c->logp, c->logp_old, c->logp_prox, c->adv, c->mask, &c->cfg,
                       c->norm, c->n);
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
    return pg_entropy_loss(NULL, c->entropy, c->mask, c->coef, c->norm, c->n);
}

/* The textbook clipped objective min(ru * A, rc * A) of one token, written
 * directly from the definition as a reference for the case analysis. */
static double ppo_objective_ref(double r, double a, const PgPpoConfig *cfg)
{
    double rc = fmin(fmax(r, 1.0 - (double)cfg->clip_low), 1.0 + (double)cfg->clip_high);
    double ru = cfg->ratio_cap > 0.0f ? fmin(r, (double)cfg->ratio_cap) : r;
    return fmin(ru * a, rc * a);
}

static void test_ppo_examples(bool verbose)
{
    PgPpoConfig cfg = {.clip_low = 0.2f, .clip_high = 0.2f};
    PgPpoStats  st;

    /* Ratio 0.75 / 0.60 = 1.25 with A = 3.5 is clipped to 1.2: objective
     * 1.2 * 3.5 = 4.2, loss -4.2, no gradient. */
    float  lp = logf(0.75f), lo = logf(0.60f), a = 3.5f, g = 0.0f;
    double loss = pg_ppo_loss(&g, &st, &lp, &lo, NULL, &a, NULL, &cfg, 0.0f, 1);
    EXPECT_NEAR(loss, -4.2, 1e-6, "ppo 1.25 clipped loss");
    EXPECT_NEAR(st.ratio_max, 1.25, 1e-6, "ppo 1.25 ratio");
    EXPECT(g == 0.0f, "ppo 1.25 clipped gradient is 0");
    EXPECT_NEAR(st.clip_frac, 1.0, 0.0, "ppo 1.25 clip frac");
    if (verbose) printf("  ppo: r %.7f A 3.5 eps 0.2 -> loss %.7f (-4.2)\n", st.ratio_max, loss);
    /* The same ratio with A = -3.5 is on the unclipped side: loss 1.25 * 3.5,
     * gradient -A * r = 4.375. */
    a = -3.5f;
    loss = pg_ppo_loss(&g, &st, &lp, &lo, NULL, &a, NULL, &cfg, 0.0f, 1);
    EXPECT_NEAR(loss, 4.375, 1e-6, "ppo 1.25 A<0 loss");
    EXPECT_NEAR(g, 4.375, 1e-5, "ppo 1.25 A<0 gradient");
    EXPECT_NEAR(st.clip_frac, 0.0, 0.0, "ppo 1.25 A<0 clip frac");

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
    loss = pg_ppo_loss(grad, &st, logp, logp, NULL, adv, NULL, &cfg, 0.0f, NP);
    int exact = 0;
    for (int i = 0; i < NP; i++) exact += grad[i] == (float)(-(double)adv[i] / NP);
    EXPECT(exact == NP, "ppo on-policy gradient == -A/N exactly");
    EXPECT_NEAR(loss, -(double)numcheck_sum(adv, NP) / NP, 1e-6, "ppo on-policy loss");
    EXPECT(st.ratio_min == 1.0 && st.ratio_max == 1.0 && st.ratio_mean == 1.0,
           "ppo on-policy ratio exactly 1");
    EXPECT(st.clip_frac == 0.0 && st.cap_frac == 0.0 && st.approx_kl == 0.0,
           "ppo on-policy clip frac 0 and kl 0");
    EXPECT(st.n_tokens == NP, "ppo on-policy n_tokens");

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
    PgPpoConfig cfg2 = {.clip_low = 0.2f, .clip_high = 0.28f, .ratio_cap = 3.0f};
    float       kl[NK], ko[NK], ka[NK], kg[NK] = {0};
    double      want = 0.0;
    for (int i = 0; i < NK; i++) {
        ko[i] = -1.0f;
        kl[i] = (float)(-1.0 + log(k_tok[i].r));
        ka[i] = (float)k_tok[i].a;
        want -= ppo_objective_ref(exp((double)kl[i] - ko[i]), ka[i], &cfg2) / NK;
    }
    loss = pg_ppo_loss(kg, &st, kl, ko, NULL, ka, NULL, &cfg2, 0.0f, NK);
    EXPECT_NEAR(loss, want, 1e-12, "ppo stale loss vs textbook");
    for (int i = 0; i < NK; i++) {
        double r = exp((double)kl[i] - ko[i]);
        double gw = k_tok[i].flows ? -(double)ka[i] * r / NK : 0.0;
        char   what[64];
        snprintf(what, sizeof what, "ppo stale gradient token %d (r %.2f A %+.0f)", i, k_tok[i].r,
                 k_tok[i].a);
        EXPECT_NEAR(kg[i], gw, 1e-6, what);
        if (!k_tok[i].flows) EXPECT(kg[i] == 0.0f, "%s", what);
    }
    EXPECT_NEAR(st.clip_high_frac, 2.0 / NK, 1e-12, "ppo stale clip_high_frac");
    EXPECT_NEAR(st.clip_low_frac, 2.0 / NK, 1e-12, "ppo stale clip_low_frac");
    EXPECT_NEAR(st.cap_frac, 1.0 / NK, 1e-12, "ppo stale cap_frac");
    /* The capped token contributes -(3 * -1) = 3, not the uncapped 5. */
    float one_l = kl[6], one_o = ko[6], one_a = ka[6], one_g = 0.0f;
    loss = pg_ppo_loss(&one_g, NULL, &one_l, &one_o, NULL, &one_a, NULL, &cfg2, 0.0f, 1);
    EXPECT_NEAR(loss, 3.0, 1e-6, "ppo cap 3 bounds the loss at 3");
    EXPECT(one_g == 0.0f, "ppo capped gradient is 0");
    cfg2.ratio_cap = 0.0f;
    loss = pg_ppo_loss(&one_g, NULL, &one_l, &one_o, NULL, &one_a, NULL, &cfg2, 0.0f, 1);
    EXPECT_NEAR(loss, 5.0, 1e-5, "ppo without cap the loss is r = 5");
    EXPECT_NEAR(one_g, 5.0, 1e-5, "ppo without cap the gradient is -A r");
}

/* Random tokens: the loss against the textbook formula, the decoupled
 * variant against its definition, the normaliser and finite differences. */
static void test_ppo_random(bool verbose)
{
    Rng   rng;
    float logp[TN], old[TN], prox[TN], adv[TN], mask[TN], grad[TN];
    rng_seed(&rng, 11);
    numcheck_random_mask(&rng, mask, TN);
    PgPpoConfig cfg = {
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

    PgPpoStats st;
    for (int pass = 0; pass < 2; pass++) {
        bool   decoupled = pass == 1;
        float *lp = decoupled ? logp : logp_b;
        memset(grad, 0, sizeof grad);
        double loss =
            pg_ppo_loss(grad, &st, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, 0.0f, TN);
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
        EXPECT_NEAR(loss, want, 1e-9,
                    decoupled ? "ppo decoupled loss vs definition" : "ppo loss vs textbook");
        EXPECT(st.clip_low_frac > 0 && st.clip_high_frac > 0 && st.cap_frac > 0 &&
                   st.clip_frac < 0.9,
               "ppo random: every branch taken");
        EXPECT(isfinite(st.approx_kl) && st.approx_kl > 0 && st.ratio_min <= st.ratio_mean &&
                   st.ratio_mean <= st.ratio_max,
               "ppo stats finite and ordered");
        if (decoupled)
            EXPECT(st.weight_cap_frac > 0 && st.weight_mean <= 1.3,
                   "ppo decoupled weight capped somewhere");
        if (verbose)
            printf("  ppo %s: clip low %.3f high %.3f cap %.3f ratio [%.3f %.3f] mean %.3f kl %.4f "
                   "w %.3f\n",
                   decoupled ? "decoupled" : "plain    ", st.clip_low_frac, st.clip_high_frac,
                   st.cap_frac, st.ratio_min, st.ratio_max, st.ratio_mean, st.approx_kl,
                   st.weight_mean);
        PpoCtx c = {lp, old, decoupled ? prox : NULL, adv, mask, cfg, 0.0f, TN};
        EXPECT_GRAD(decoupled ? "ppo decoupled" : "ppo", eval_ppo, &c, lp, grad, mask, TN, FD_TOL);

        /* The checker must catch a plausible bug: one clipped token given
         * the unclipped gradient -w A r / N. */
        float bad[TN];
        memcpy(bad, grad, sizeof bad);
        for (int i = 0; i < TN; i++) {
            if (mask[i] == 0.0f || bad[i] != 0.0f) continue;
            double w =
                decoupled ? fmin(exp((double)prox[i] - old[i]), (double)cfg.prox_weight_cap) : 1.0;
            double logq = decoupled ? prox[i] : old[i];
            bad[i] = (float)(-w * adv[i] * exp((double)lp[i] - logq) / numcheck_sum(mask, TN));
            break;
        }
        NumcheckGrad neg = numcheck_grad(eval_ppo, &c, lp, bad, mask, TN);
        EXPECT(neg.worst_rel > 100 * FD_TOL, "fd check catches a gradient that ignores the clip");
        if (verbose)
            printf("  fd negative control: ignoring one clip gives rel err %.2f\n", neg.worst_rel);

        /* Gradients accumulate: a second call doubles them. */
        float twice[TN];
        memcpy(twice, grad, sizeof twice);
        pg_ppo_loss(twice, NULL, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, 0.0f, TN);
        int doubled = 0;
        for (int i = 0; i < TN; i++) doubled += twice[i] == 2.0f * grad[i];
        EXPECT(doubled == TN, "ppo gradients accumulate");

        /* An explicit normaliser: twice the token count halves everything. */
        float  grad2[TN] = {0};
        float  norm = 2.0f * numcheck_sum(mask, TN);
        double loss2 =
            pg_ppo_loss(grad2, NULL, lp, old, decoupled ? prox : NULL, adv, mask, &cfg, norm, TN);
        EXPECT_NEAR(loss2, 0.5 * loss, 1e-12, "ppo norm halves the loss");
        int halved = 0;
        for (int i = 0; i < TN; i++) halved += fabsf(grad2[i] - 0.5f * grad[i]) <= 1e-7f;
        EXPECT(halved == TN, "ppo norm halves the gradient");
    }
    /* prox == old is the plain objective. */
    double l_plain = pg_ppo_loss(NULL, NULL, logp_b, old, NULL, adv, mask, &cfg, 0.0f, TN);
    double l_same = pg_ppo_loss(NULL, NULL, logp_b, old, old, adv, mask, &cfg, 0.0f, TN);
    EXPECT_NEAR(l_same, l_plain, 1e-12, "ppo prox == old equals plain");

    /* Sequence-mean weights: the loss becomes the mean over rows of each
     * row's token mean. */
    enum { SB = 8, ST = TN / SB };
    float w[TN];
    agg_seq_mean_weights(w, mask, SB, ST);
    EXPECT_NEAR(numcheck_sum(w, TN), 1.0, 1e-6, "seq mean weights sum to 1");
    double l_seq = pg_ppo_loss(NULL, NULL, logp_b, old, NULL, adv, w, &cfg, 0.0f, TN);
    double want_seq = 0.0;
    for (int b = 0; b < SB; b++) {
        const float *mb = mask + b * ST;
        want_seq += pg_ppo_loss(NULL, NULL, logp_b + b * ST, old + b * ST, NULL, adv + b * ST, mb,
                                &cfg, 0.0f, ST) /
                    SB;
    }
    EXPECT_NEAR(l_seq, want_seq, 1e-6, "ppo with seq-mean weights");

    /* Nothing counts: zero loss, zero stats, no gradient. */
    float  zero_mask[4] = {0}, g4[4] = {0};
    double l0 = pg_ppo_loss(g4, &st, logp, old, NULL, adv, zero_mask, &cfg, 0.0f, 4);
    EXPECT(l0 == 0.0 && st.n_tokens == 0 && st.ratio_max == 0.0 && g4[0] == 0.0f, "ppo empty mask");
}

typedef struct {
    float      *logp, *old, *prox, *adv, *mask;
    PgPpoConfig cfg;
    float       norm;
    int         B, T;
} GspoCtx;

static double eval_gspo(void *p)
{
    GspoCtx *c = p;
    return pg_gspo_loss(NULL, NULL, c->logp, c->old, c->prox, c->adv, c->mask, &c->cfg, c->norm,
                        c->B, c->T);
}

/* GSPO against the per-token ratio, by hand. One sequence of two tokens
 * with log-ratios 0.1 and 0.3, clip 0.2 / 0.2:
 *   GSPO  s = exp((0.1 + 0.3) / 2) = e^0.2 = 1.2214028
 *         A = +1: s > 1.2, clipped: loss = -1.2, no gradient at all
 *         A = -1: the unclipped side: loss = s = 1.2214028, and each token
 *                 gets -A s / n = 1.2214028 / 2 = 0.6107014
 *   PPO   r = e^0.1 = 1.1051709 (kept), e^0.3 = 1.3498588 (clipped to 1.2)
 *         A = +1: loss = -(1.1051709 + 1.2) / 2 = -1.1525855; token 0 gets
 *                 -r / 2 = -0.5525855, token 1 nothing
 * GSPO keeps or drops the sequence whole; PPO keeps the token that stayed
 * close and drops the one that moved. A second row of three tokens with
 * log-ratios -0.05, 0.02, 0.06 has s = e^0.01 = 1.0100502, inside the
 * band: with A = 2 its loss is -2.0201003 and each token gets
 * -2 * 1.0100502 / 3 = -0.6733668. */
static void test_gspo_examples(bool verbose)
{
    PgPpoConfig cfg = {.clip_low = 0.2f, .clip_high = 0.2f};
    PgPpoStats  st;
    float       old[2] = {-1.0f, -2.0f}, lp[2] = {-0.9f, -1.7f}, adv[2] = {1, 1}, g[2] = {0};
    double      loss = pg_gspo_loss(g, &st, lp, old, NULL, adv, NULL, &cfg, 0.0f, 1, 2);
    EXPECT_NEAR(loss, -1.2, 1e-6, "gspo A=+1 s=e^0.2 clipped: loss -1.2");
    EXPECT(g[0] == 0.0f && g[1] == 0.0f, "gspo clipped sequence: no gradient on any token");
    EXPECT_NEAR(st.ratio_max, 1.2214028, 1e-6, "gspo sequence ratio e^0.2");
    EXPECT(st.clip_high_frac == 1.0 && st.n_tokens == 2, "gspo both tokens counted clipped");
    double lt = pg_ppo_loss(g, NULL, lp, old, NULL, adv, NULL, &cfg, 0.0f, 2);
    EXPECT_NEAR(lt, -1.1525855, 1e-6, "per-token ratio: loss -(e^0.1 + 1.2) / 2");
    EXPECT_NEAR(g[0], -0.5525855, 1e-6, "per-token ratio: token 0 kept, -e^0.1 / 2");
    EXPECT(g[1] == 0.0f, "per-token ratio: token 1 clipped");
    if (verbose)
        printf("  gspo vs token ratio, A = +1: gspo loss %.7f (no gradient), per token %.7f "
               "(token 0 gets %.7f)\n",
               loss, lt, g[0]);
    adv[0] = adv[1] = -1.0f;
    g[0] = g[1] = 0.0f;
    loss = pg_gspo_loss(g, &st, lp, old, NULL, adv, NULL, &cfg, 0.0f, 1, 2);
    EXPECT_NEAR(loss, 1.2214028, 1e-6, "gspo A=-1: loss s");
    EXPECT_NEAR(g[0], 0.6107014, 1e-6, "gspo A=-1: token 0 gets s/2");
    EXPECT_NEAR(g[1], 0.6107014, 1e-6, "gspo A=-1: token 1 gets s/2");
    EXPECT(st.clip_frac == 0.0, "gspo A=-1 unclipped");

    float old3[3] = {-1, -1, -1}, lp3[3] = {-1.05f, -0.98f, -0.94f}, a3[3] = {2, 2, 2};
    float g3[3] = {0};
    loss = pg_gspo_loss(g3, &st, lp3, old3, NULL, a3, NULL, &cfg, 0.0f, 1, 3);
    EXPECT_NEAR(loss, -2.0201003, 1e-6, "gspo 3 tokens, s = e^0.01, A = 2");
    for (int t = 0; t < 3; t++) EXPECT_NEAR(g3[t], -0.6733668, 1e-6, "gspo 3 tokens gradient");

    /* On-policy every sequence ratio is exactly 1 and the gradient is the
     * per-token one: -A * w / D for 0/1 or sequence-mean weights. */
    enum { B = 4, T = 6 };
    Rng   rng;
    float m[B * T] = {0}, w[B * T], l[B * T], a[B * T], gs[B * T] = {0}, gp[B * T] = {0};
    rng_seed(&rng, 19);
    for (int b = 0; b < B; b++) {
        int   len = 1 + (int)rng_below(&rng, T);
        float ab = rng_normal(&rng);
        for (int t = 0; t < T; t++) {
            m[b * T + t] = t < len;
            l[b * T + t] = -0.1f - rng_uniform(&rng);
            a[b * T + t] = ab;
        }
    }
    agg_seq_mean_weights(w, m, B, T);
    double ls = pg_gspo_loss(gs, &st, l, l, NULL, a, w, &cfg, 0.0f, B, T);
    double lq = pg_ppo_loss(gp, NULL, l, l, NULL, a, w, &cfg, 0.0f, B * T);
    int    same = 0;
    for (int i = 0; i < B * T; i++) same += fabsf(gs[i] - gp[i]) <= 1e-7f;
    EXPECT(same == B * T && fabs(ls - lq) < 1e-7 && st.ratio_min == 1.0 && st.ratio_max == 1.0,
           "gspo on-policy: ratio 1 and the per-token gradient");
}

/* Random sequences of random lengths with stale log-probs: the loss
 * against its definition, finite differences (plain and decoupled, 0/1 mask
 * and sequence-mean weights), and clipping both ways. */
static void test_gspo_random(bool verbose)
{
    enum { B = 10, T = 20, N = B * T };
    Rng   rng;
    float logp[N], old[N], prox[N], adv[N], mask[N] = {0}, w[N];
    rng_seed(&rng, 23);
    PgPpoConfig cfg = {
        .clip_low = 0.2f, .clip_high = 0.28f, .ratio_cap = 3.0f, .prox_weight_cap = 1.3f};
    const double kinks[3] = {log(0.8), log(1.28), log(3.0)};
    for (int b = 0; b < B; b++) {
        int len = 1 + (int)rng_below(&rng, T);
        /* A row's mean log-ratio to prox, kept 0.02 from every kink; the
         * tokens scatter around it with zero mean. */
        double mu;
        bool   near;
        do {
            mu = 0.6 * rng_normal(&rng);
            near = false;
            for (int k = 0; k < 3; k++) near |= fabs(mu - kinks[k]) < 0.02;
        } while (near);
        float  ab = rng_normal(&rng), dev[T];
        double dsum = 0.0;
        for (int t = 0; t < len; t++) dsum += dev[t] = 0.3f * rng_normal(&rng);
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (t >= len) {
                logp[i] = old[i] = prox[i] = adv[i] = NAN; /* never read */
                continue;
            }
            mask[i] = 1.0f;
            old[i] = -0.05f - 3.0f * rng_uniform(&rng);
            prox[i] = old[i] + 0.2f * rng_normal(&rng);
            logp[i] = prox[i] + (float)(mu + dev[t] - dsum / len);
            adv[i] = ab;
        }
    }
    for (int pass = 0; pass < 4; pass++) {
        bool   decoupled = pass & 1, seq_mean = pass & 2;
        float *wt = mask;
        if (seq_mean) {
            agg_seq_mean_weights(w, mask, B, T);
            wt = w;
        }
        float *q = decoupled ? prox : old;
        /* Plain runs measure the ratio against old: shift logp so the rows
         * keep their distance from the kinks. */
        float lp[N];
        for (int i = 0; i < N; i++) lp[i] = mask[i] != 0.0f ? logp[i] - prox[i] + q[i] : NAN;
        float      g[N] = {0};
        PgPpoStats st;
        double     loss =
            pg_gspo_loss(g, &st, lp, old, decoupled ? prox : NULL, adv, wt, &cfg, 0.0f, B, T);
        double want = 0.0, D = 0.0;
        for (int b = 0; b < B; b++) {
            double n = 0, W = 0, lr = 0, lw = 0;
            for (int t = 0; t < T; t++) {
                size_t i = (size_t)b * T + t;
                if (mask[i] == 0.0f) continue;
                n += 1;
                W += wt[i];
                lr += (double)lp[i] - q[i];
                lw += (double)prox[i] - old[i];
            }
            double ww = decoupled ? fmin(exp(lw / n), 1.3) : 1.0;
            want -= W * ww * ppo_objective_ref(exp(lr / n), adv[(size_t)b * T], &cfg);
            D += W;
        }
        want /= D;
        char name[64];
        snprintf(name, sizeof name, "gspo%s%s", decoupled ? " decoupled" : "",
                 seq_mean ? " seq-mean" : "");
        EXPECT_NEAR(loss, want, 1e-9, name);
        EXPECT(st.clip_high_frac > 0 && st.clip_low_frac > 0 && st.clip_frac < 0.9,
               "%s: both clip bounds bind on some rows", name);
        GspoCtx c = {lp, old, decoupled ? prox : NULL, adv, wt, cfg, 0.0f, B, T};
        EXPECT_GRAD(name, eval_gspo, &c, lp, g, mask, N, FD_TOL);
        if (verbose)
            printf("  %-24s clip low %.3f high %.3f, ratio [%.3f %.3f], w %.3f\n", name,
                   st.clip_low_frac, st.clip_high_frac, st.ratio_min, st.ratio_max, st.weight_mean);
    }
}

static void test_entropy(bool verbose)
{
    Rng   rng;
    float ent[TN], mask[TN], grad[TN] = {0};
    rng_seed(&rng, 17);
    numcheck_random_mask(&rng, mask, TN);
    for (int i = 0; i < TN; i++) ent[i] = mask[i] != 0.0f ? 3.0f * rng_uniform(&rng) : NAN;
    float  norm = 123.0f;
    double loss = pg_entropy_loss(grad, ent, mask, 0.01f, norm, TN);
    double want = 0.0;
    for (int i = 0; i < TN; i++)
        if (mask[i] != 0.0f) want -= 0.01 * ent[i] / norm;
    EXPECT_NEAR(loss, want, 1e-9, "entropy loss");
    EntCtx ce = {ent, mask, 0.01f, norm, TN};
    EXPECT_GRAD("entropy", eval_entropy, &ce, ent, grad, mask, TN, FD_TOL);
}

int pg_selftest(bool verbose)
{
    test_ppo_examples(verbose);
    test_ppo_random(verbose);
    test_gspo_examples(verbose);
    test_gspo_random(verbose);
    test_entropy(verbose);
    return expect_end();
}
