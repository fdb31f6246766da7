#include "learner/algo/algo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "learner/algo/advantage.h"
#include "learner/algo/agg.h"
#include "learner/algo/algo_int.h"
#include "learner/algo/pg.h"
#include "learner/algo/ppo.h"

/* A trajectory's group id next to its index, sorted to find the groups. */
typedef struct {
    int64_t gid;
    int     idx;
} GroupKey;

/* Scratch for one batch of n trajectories packed to (n, T). The minibatch
 * views hold rows gathered from the batch views; before the minibatch loop
 * the PPO advantage stage borrows four of them for the compact per-step
 * arrays (n, Tc) with Tc <= T. */
typedef struct {
    int   *tokens;  /* (n,T) input ids */
    int   *targets; /* (n,T) next ids */
    float *mask;    /* (n,T) 1 where the target is a completion token */
    float *beh;     /* (n,T) behaviour log-probs */
    float *ref;     /* (n,T) reference log-probs */
    float *prox;    /* (n,T) the learner's log-probs before the update */
    float *ent;     /* (n,T) the learner's entropies before the update */
    float *adv;     /* (n,T) advantages */
    float *ret;     /* (n,T) PPO value targets */
    float *vold;    /* (n,T) PPO critic values before the update */
    float *fresh;   /* (n,T) 1 on completion tokens sampled at the learner's version */
    float *tmp;     /* (n,T) per-token KL and the like */

    int   *m_tokens, *m_targets;                                     /* (mb,T) */
    float *m_mask, *m_beh, *m_prox, *m_ref, *m_adv, *m_ret, *m_vold; /* (mb,T) gathered */
    /* m_tmp: PPO's compact rewards before the minibatch loop, the
     * aggregation weights within it. */
    float *m_logp, *m_ent, *m_val, *m_dlogp, *m_dent, *m_dval, *m_tmp; /* (mb,T) */

    int      *perm;    /* (n) trajectory order of this epoch */
    int      *lens;    /* (n) completion lengths */
    float    *reward;  /* (n) rewards after optional whitening */
    float    *seq_adv; /* (n) GRPO advantage of each trajectory */
    float    *g_r;     /* (n) one group's rewards */
    float    *g_adv;   /* (n) one group's advantages */
    GroupKey *keys;    /* (n) */
} Scratch;

struct Algo {
    AlgoConfig cfg;
    Model     *policy, *ref, *critic;
    Optim     *opt, *critic_opt;
    Rng        rng;
    Scratch    s;
    int        cap_n;  /* trajectories the scratch holds */
    size_t     cap_nt; /* (n,T) entries per view */
    float     *fblock;
    int       *iblock;
    double     beta;         /* the KL coefficient of the next step */
    double     baseline;     /* REINFORCE's running mean of rewards */
    bool       has_baseline; /* false until the first REINFORCE batch */
};

/* How many views of each size the scratch blocks are carved into. */
enum { N_FLOAT_NT = 24, N_INT_NT = 4, N_FLOAT_N = 4, N_INT_N = 2 };

/* Lets a behaviour log-prob computed with a different summation order sit
 * just above 0 without being refused. */
#define ALGO_LOGP_SLACK 1e-4f

static void why_set(char *why, size_t why_len, const char *msg)
{
    if (why && why_len) snprintf(why, why_len, "%s", msg);
}

static bool finite_in(float x, float lo, float hi)
{
    return isfinite(x) && x >= lo && x <= hi;
}

int algo_config_validate(const AlgoConfig *c, char *why, size_t why_len)
{
    const char *bad = NULL;
    if ((int)c->kind < 0 || (int)c->kind >= ALGO_N_KINDS)
        bad = "kind must be one of AlgoKind";
    else if (!finite_in(c->kl_beta, 0.0f, INFINITY))
        bad = "kl_beta must be finite and >= 0";
    else if (c->kl_kind != 0 && c->kl_kind != KL_K1 && c->kl_kind != KL_K2 && c->kl_kind != KL_K3)
        bad = "kl_kind must be 0, KL_K1, KL_K2 or KL_K3";
    else if (!(isfinite(c->clip_low) && c->clip_low >= 0.0f && c->clip_low < 1.0f))
        bad = "clip_low must be in [0, 1)";
    else if (!finite_in(c->clip_high, 0.0f, INFINITY))
        bad = "clip_high must be finite and >= 0";
    else if (!(c->ratio_cap == 0.0f ||
               (isfinite(c->ratio_cap) && c->ratio_cap > 1.0f + c->clip_high)))
        bad = "ratio_cap must be 0 (off) or finite and > 1 + clip_high";
    else if (!finite_in(c->is_weight_cap, 0.0f, INFINITY))
        bad = "is_weight_cap must be finite and >= 0";
    else if (c->epochs < 1 || c->epochs > 1000)
        bad = "epochs must be in 1..1000";
    else if (c->minibatch_size < 0)
        bad = "minibatch_size must be >= 0";
    else if (!finite_in(c->entropy_coef, 0.0f, INFINITY))
        bad = "entropy_coef must be finite and >= 0";
    else if (!finite_in(c->gamma, 0.0f, 1.0f))
        bad = "gamma must be in [0, 1]";
    else if (!finite_in(c->lambda, 0.0f, 1.0f))
        bad = "lambda must be in [0, 1]";
    else if (!finite_in(c->value_clip, 0.0f, INFINITY))
        bad = "value_clip must be finite and >= 0";
    else if (!(isfinite(c->value_coef) && c->value_coef > 0.0f))
        bad = "value_coef must be finite and > 0";
    else if (!(isfinite(c->temperature) && c->temperature > 0.0f))
        bad = "temperature must be finite and > 0";
    else if (c->kl_place != ALGO_KL_AUTO && c->kl_place != ALGO_KL_LOSS &&
             c->kl_place != ALGO_KL_REWARD)
        bad = "kl_place must be ALGO_KL_AUTO, ALGO_KL_LOSS or ALGO_KL_REWARD";
    else if (!finite_in(c->kl_target, 0.0f, INFINITY))
        bad = "kl_target must be finite and >= 0";
    else if (c->kl_target > 0.0f && c->kl_beta == 0.0f)
        bad = "an adaptive KL coefficient (kl_target > 0) needs kl_beta > 0 to start from";
    else if (!(isfinite(c->kl_horizon) && c->kl_horizon > 0.0f))
        bad = "kl_horizon must be finite and > 0";
    else if (!finite_in(c->kl_gain, 0.0f, INFINITY))
        bad = "kl_gain must be finite and >= 0";
    else if (c->agg != AGG_TOKEN_MEAN && c->agg != AGG_SEQ_MEAN && c->agg != AGG_CONSTANT)
        bad = "agg must be AGG_TOKEN_MEAN, AGG_SEQ_MEAN or AGG_CONSTANT";
    else if (c->ratio_level != PG_RATIO_TOKEN && c->ratio_level != PG_RATIO_SEQUENCE)
        bad = "ratio_level must be PG_RATIO_TOKEN or PG_RATIO_SEQUENCE";
    else if (c->ratio_level == PG_RATIO_SEQUENCE && c->kind == ALGO_PPO)
        bad = "a sequence-level ratio needs one advantage per sequence: not with PPO's GAE";
    else if (c->max_new_tokens < 0)
        bad = "max_new_tokens must be >= 0";
    else if (c->agg == AGG_CONSTANT && c->max_new_tokens == 0)
        bad = "AGG_CONSTANT divides by max_new_tokens, which is 0 (unknown)";
    else if (c->overlong_buffer < 0 || c->overlong_buffer > c->max_new_tokens)
        bad = "overlong_buffer must be in 0..max_new_tokens";
    else if (!finite_in(c->overlong_coef, 0.0f, INFINITY))
        bad = "overlong_coef must be finite and >= 0";
    else if (!(isfinite(c->baseline_decay) && c->baseline_decay >= 0.0f &&
               c->baseline_decay < 1.0f))
        bad = "baseline_decay must be in [0, 1)";
    if (bad) {
        why_set(why, why_len, bad);
        return ERR_RANGE;
    }
    return 0;
}

Algo *algo_new(const AlgoConfig *cfg, Model *policy, Optim *policy_opt, Model *ref, Model *critic,
               Optim *critic_opt)
{
    char why[160];
    if (algo_config_validate(cfg, why, sizeof why)) {
        log_error("algo_new: %s", why);
        CHECK(!"algo_new: invalid config");
    }
    CHECK(policy && policy_opt);
    CHECK(optim_n(policy_opt) == model_num_train_params(policy));
    const ModelConfig *pc = model_config(policy);
    CHECK(ref || cfg->kl_beta == 0.0f);
    if (ref) CHECK(memcmp(model_config(ref), pc, sizeof *pc) == 0);
    if (cfg->kind == ALGO_PPO) {
        CHECK(critic && critic_opt);
        CHECK(optim_n(critic_opt) == model_num_params(critic));
        const ModelConfig *cc = model_config(critic);
        CHECK(cc->has_value_head);
        CHECK(cc->vocab_size == pc->vocab_size && cc->max_seq_len >= pc->max_seq_len);
    } else {
        CHECK(!critic && !critic_opt);
    }
    Algo *a = xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    a->policy = policy;
    a->opt = policy_opt;
    a->ref = ref;
    a->critic = critic;
    a->critic_opt = critic_opt;
    rng_seed(&a->rng, cfg->seed);
    a->beta = cfg->kl_beta;
    return a;
}

void algo_free(Algo **a)
{
    if (!a || !*a) return;
    free((*a)->fblock);
    free((*a)->iblock);
    free((*a)->s.keys);
    free(*a);
    *a = NULL;
}

const AlgoConfig *algo_config(const Algo *a)
{
    return &a->cfg;
}

double algo_kl_beta(const Algo *a)
{
    return a->beta;
}

void algo_carry_get(const Algo *a, AlgoCarry *out)
{
    *out =
        (AlgoCarry){.kl_beta = a->beta, .baseline = a->baseline, .has_baseline = a->has_baseline};
}

int algo_carry_set(Algo *a, const AlgoCarry *c)
{
    if (!isfinite(c->kl_beta) || c->kl_beta < 0 || !isfinite(c->baseline)) return ERR_ARG;
    if (a->cfg.kl_target > 0.0f) a->beta = c->kl_beta;
    if (a->cfg.kind == ALGO_REINFORCE) {
        a->baseline = c->baseline;
        a->has_baseline = c->has_baseline;
    }
    return 0;
}

const char *const algo_kind_names[] = {"grpo",    "ppo",  "reinforce", "rloo",
                                       "dr_grpo", "dapo", "gspo",      NULL};
_Static_assert(sizeof algo_kind_names / sizeof algo_kind_names[0] == ALGO_N_KINDS + 1,
               "one name per AlgoKind");

const char *algo_kind_name(AlgoKind kind)
{
    return (int)kind >= 0 && (int)kind < ALGO_N_KINDS ? algo_kind_names[kind] : "?";
}

void algo_preset(AlgoConfig *cfg, AlgoKind kind, unsigned keep)
{
    CHECK(cfg && (int)kind >= 0 && (int)kind < ALGO_N_KINDS);
    const AlgoConfig d = ALGO_DEFAULTS;
    AlgoConfig       p = *cfg;
    p.kind = kind;
    p.adv_divide_std = d.adv_divide_std;
    p.agg = d.agg;
    p.ratio_level = d.ratio_level;
    p.clip_low = d.clip_low;
    p.clip_high = d.clip_high;
    p.kl_beta = d.kl_beta;
    p.dynamic_sampling = d.dynamic_sampling;
    p.overlong_buffer = d.overlong_buffer;
    switch (kind) {
    case ALGO_GRPO:
    case ALGO_PPO:
    case ALGO_REINFORCE:
    case ALGO_RLOO:
        break;
    case ALGO_DR_GRPO:
        p.adv_divide_std = false;
        p.agg = AGG_CONSTANT;
        break;
    case ALGO_DAPO:
        p.clip_low = 0.2f;
        p.clip_high = 0.28f;
        p.dynamic_sampling = true;
        p.agg = AGG_TOKEN_MEAN;
        p.overlong_buffer = (cfg->max_new_tokens + 4) / 5;
        p.kl_beta = 0.0f;
        break;
    case ALGO_GSPO:
        p.ratio_level = PG_RATIO_SEQUENCE;
        p.clip_low = 3e-4f;
        p.clip_high = 4e-4f;
        p.agg = AGG_SEQ_MEAN;
        break;
    }
    cfg->kind = kind;
#define TAKE(bit, field)                                                                           \
    if (!(keep & (bit))) cfg->field = p.field
    TAKE(ALGO_PRESET_ADV_STD, adv_divide_std);
    TAKE(ALGO_PRESET_AGG, agg);
    TAKE(ALGO_PRESET_RATIO_LEVEL, ratio_level);
    TAKE(ALGO_PRESET_CLIP_LOW, clip_low);
    TAKE(ALGO_PRESET_CLIP_HIGH, clip_high);
    TAKE(ALGO_PRESET_KL_BETA, kl_beta);
    TAKE(ALGO_PRESET_DYNAMIC, dynamic_sampling);
    TAKE(ALGO_PRESET_OVERLONG, overlong_buffer);
#undef TAKE
}

/* Makes the scratch hold n trajectories of (n, T) entries, reallocating
 * only when the batch outgrows it. */
static void scratch_reserve(Algo *a, int n, int T)
{
    size_t nt = (size_t)n * T;
    if (n <= a->cap_n && nt <= a->cap_nt) return;
    int    cn = n > a->cap_n ? n : a->cap_n;
    size_t cnt = nt > a->cap_nt ? nt : a->cap_nt;
    free(a->fblock);
    free(a->iblock);
    free(a->s.keys);
    a->fblock = xmalloc_aligned((N_FLOAT_NT * cnt + N_FLOAT_N * (size_t)cn) * sizeof(float));
    a->iblock = xmalloc((N_INT_NT * cnt + N_INT_N * (size_t)cn) * sizeof(int));
    Scratch *s = &a->s;
    s->keys = xmalloc((size_t)cn * sizeof(GroupKey));
    float  *f = a->fblock;
    float **fv[N_FLOAT_NT] = {&s->ent,     &s->mask,   &s->beh,    &s->ref,   &s->prox,
                              &s->adv,     &s->ret,    &s->vold,   &s->fresh, &s->tmp,
                              &s->m_mask,  &s->m_beh,  &s->m_prox, &s->m_ref, &s->m_adv,
                              &s->m_ret,   &s->m_vold, &s->m_logp, &s->m_ent, &s->m_val,
                              &s->m_dlogp, &s->m_dent, &s->m_dval, &s->m_tmp};
    for (int i = 0; i < N_FLOAT_NT; i++, f += cnt) *fv[i] = f;
    float **fn[N_FLOAT_N] = {&s->reward, &s->seq_adv, &s->g_r, &s->g_adv};
    for (int i = 0; i < N_FLOAT_N; i++, f += cn) *fn[i] = f;
    int  *p = a->iblock;
    int **iv[N_INT_NT] = {&s->tokens, &s->targets, &s->m_tokens, &s->m_targets};
    for (int i = 0; i < N_INT_NT; i++, p += cnt) *iv[i] = p;
    s->perm = p;
    s->lens = p + cn;
    a->cap_n = cn;
    a->cap_nt = cnt;
}

/* Validates trajectory i against the model and the learner's version.
 * Returns 0 or an error as described in algo.h, logged once. */
static int check_traj(const Algo *a, const AlgoTrajectory *tr, int i, int64_t learner_version)
{
    const ModelConfig *mc = model_config(a->policy);
    int                V = mc->vocab_size;
    if (tr->prompt_len < 1 || tr->completion_len < 1 || !tr->prompt || !tr->completion ||
        !tr->logp_behaviour || !tr->version) {
        log_error("algo_step: trajectory %d: prompt of %d and completion of %d tokens, "
                  "expected at least 1 each with all arrays present",
                  i, tr->prompt_len, tr->completion_len);
        return ERR_RANGE;
    }
    if (tr->prompt_len > mc->max_seq_len + 1 - tr->completion_len) {
        log_error("algo_step: trajectory %d: prompt %d + completion %d tokens, expected at most "
                  "max_seq_len + 1 = %d",
                  i, tr->prompt_len, tr->completion_len, mc->max_seq_len + 1);
        return ERR_RANGE;
    }
    if (tr->temperature != a->cfg.temperature) {
        log_error("algo_step: trajectory %d: sampled at temperature %g, expected %g (the "
                  "learner computes log-probs at the configured temperature)",
                  i, (double)tr->temperature, (double)a->cfg.temperature);
        return ERR_UNSUPPORTED;
    }
    if (!isfinite(tr->reward)) {
        log_error("algo_step: trajectory %d: reward %g is not finite", i, (double)tr->reward);
        return ERR_NONFINITE;
    }
    for (int k = 0; k < tr->prompt_len + tr->completion_len; k++) {
        int id = k < tr->prompt_len ? tr->prompt[k] : tr->completion[k - tr->prompt_len];
        if (id < 0 || id >= V) {
            log_error("algo_step: trajectory %d: token %d is id %d, expected [0, %d)", i, k, id, V);
            return ERR_RANGE;
        }
    }
    for (int k = 0; k < tr->completion_len; k++) {
        float lp = tr->logp_behaviour[k];
        if (!isfinite(lp)) {
            log_error("algo_step: trajectory %d: behaviour log-prob %d is %g, not finite", i, k,
                      (double)lp);
            return ERR_NONFINITE;
        }
        if (lp > ALGO_LOGP_SLACK) {
            log_error("algo_step: trajectory %d: behaviour log-prob %d is %g, expected <= 0", i, k,
                      (double)lp);
            return ERR_RANGE;
        }
        int64_t v = tr->version[k];
        if (v < 0 || v > learner_version) {
            log_error("algo_step: trajectory %d: token %d has policy version %lld, expected "
                      "0..%lld (the learner's)",
                      i, k, (long long)v, (long long)learner_version);
            return ERR_RANGE;
        }
    }
    return 0;
}

/* Packs the batch as learner/sft.h does: row i is prompt ++ completion,
 * position t predicts token t+1, and completion token k sits at position
 * prompt_len - 1 + k. Also fills the staleness histogram. */
static void pack(Algo *a, const AlgoTrajectory *traj, int n, int T, int64_t learner_version,
                 AlgoStats *st)
{
    Scratch *s = &a->s;
    size_t   NT = (size_t)n * T;
    memset(s->mask, 0, NT * sizeof(float));
    memset(s->beh, 0, NT * sizeof(float));
    memset(s->fresh, 0, NT * sizeof(float));
    for (int i = 0; i < n; i++) {
        const AlgoTrajectory *tr = &traj[i];
        int                   p = tr->prompt_len, L = p + tr->completion_len;
        int                  *tok = s->tokens + (size_t)i * T, *tgt = s->targets + (size_t)i * T;
        for (int t = 0; t < T; t++) {
            /* Padding is id 0; masked positions never reach real ones (causal). */
            tok[t] = t < p ? tr->prompt[t] : t < L ? tr->completion[t - p] : 0;
            tgt[t] = t + 1 < p ? tr->prompt[t + 1] : t + 1 < L ? tr->completion[t + 1 - p] : 0;
        }
        for (int k = 0; k < tr->completion_len; k++) {
            size_t  at = (size_t)i * T + (size_t)(p - 1 + k);
            int64_t stale = learner_version - tr->version[k];
            s->mask[at] = 1.0f;
            s->beh[at] = tr->logp_behaviour[k];
            s->fresh[at] = stale == 0 ? 1.0f : 0.0f;
            st->staleness_hist[stale < ALGO_STALENESS_BUCKETS - 1 ? stale
                                                                  : ALGO_STALENESS_BUCKETS - 1]++;
        }
        s->lens[i] = tr->completion_len;
        st->n_tokens += tr->completion_len;
    }
}

static int key_cmp(const void *x, const void *y)
{
    const GroupKey *a = x, *b = y;
    if (a->gid != b->gid) return a->gid < b->gid ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* The critic-free kinds: one advantage per trajectory from s->reward,
 * spread over its tokens. Group estimators (GRPO's, RLOO's) run per group
 * (groups may differ in size and come in any order); REINFORCE's baseline
 * spans the batch. */
static void seq_advantages(Algo *a, const AlgoTrajectory *traj, int n, int T, AlgoStats *st)
{
    Scratch *s = &a->s;
    for (int i = 0; i < n; i++) s->keys[i] = (GroupKey){traj[i].group_id, i};
    qsort(s->keys, (size_t)n, sizeof *s->keys, key_cmp);
    int n_groups = 0, n_flat = 0;
    for (int g0 = 0, g1; g0 < n; g0 = g1) {
        for (g1 = g0; g1 < n && s->keys[g1].gid == s->keys[g0].gid; g1++)
            s->g_r[g1 - g0] = s->reward[s->keys[g1].idx];
        int G = g1 - g0;
        if (a->cfg.kind == ALGO_RLOO)
            adv_rloo(s->g_adv, s->g_r, 1, G);
        else
            adv_group(s->g_adv, s->g_r, a->cfg.adv_divide_std, 1, G);
        for (int k = 0; k < G; k++) s->seq_adv[s->keys[g0 + k].idx] = s->g_adv[k];
        n_groups++;
        n_flat += adv_group_is_flat(s->g_r, G);
    }
    st->zero_adv_group_frac = (double)n_flat / n_groups;
    if (a->cfg.kind == ALGO_REINFORCE) {
        double before = a->baseline;
        bool   had = a->has_baseline;
        adv_reinforce(s->seq_adv, s->reward, &a->baseline, &a->has_baseline, a->cfg.baseline_decay,
                      n);
        /* A first batch used its own mean, which is also the updated value. */
        st->baseline = had ? before : a->baseline;
    }
    memset(s->adv, 0, (size_t)n * T * sizeof(float));
    agg_seq_sum_backward(s->adv, s->seq_adv, s->mask, n, T);
}

/* Whether the KL to the reference goes into the reward (else the loss). */
static bool kl_in_reward(const AlgoConfig *c)
{
    return c->kl_place == ALGO_KL_REWARD || (c->kl_place == ALGO_KL_AUTO && c->kind == ALGO_PPO);
}

/* The estimator of the KL term: the configured one, else k1 in the reward
 * (unbiased for the value) and k3 in the loss (its gradient is that of a KL;
 * k1's is zero in expectation, see kl.h). */
static KlKind kl_kind_of(const AlgoConfig *c)
{
    return c->kl_kind ? c->kl_kind : kl_in_reward(c) ? KL_K1 : KL_K3;
}

/* PPO: per-step rewards (-beta * kl per token when the KL goes in the
 * reward, plus the scalar reward at the last completion token), critic
 * values before the update, GAE over each completion, returns as value
 * targets, optional whitening. Every completion is treated as ended after
 * its last token (bootstrap 0), including those cut at the length limit:
 * their score already judges them as they are. */
static void ppo_advantages(Algo *a, const AlgoTrajectory *traj, int n, int T, double beta,
                           AlgoStats *st)
{
    Scratch          *s = &a->s;
    const AlgoConfig *c = &a->cfg;
    size_t            NT = (size_t)n * T;
    model_forward(a->critic, s->tokens, s->targets, s->mask, n, T, NULL, NULL, s->vold);
    for (size_t i = 0; i < NT; i++) s->vold[i] *= s->mask[i] != 0.0f;
    memset(s->tmp, 0, NT * sizeof(float));
    if (beta > 0.0 && kl_in_reward(c)) {
        /* The tokens were drawn from the behaviour policy, so its log-probs
         * are the ones the per-token estimator is unbiased for. */
        kl_estimate(s->tmp, NULL, s->beh, s->ref, s->mask, kl_kind_of(c), (int)NT);
    }
    int Tc = 0;
    for (int i = 0; i < n; i++) Tc = s->lens[i] > Tc ? s->lens[i] : Tc;
    /* Compact (n, Tc) arrays: step k of row i is completion token k. */
    float *rew_c = s->m_tmp, *val_c = s->m_vold, *adv_c = s->m_adv, *ret_c = s->m_ret;
    memset(rew_c, 0, (size_t)n * Tc * sizeof(float));
    memset(val_c, 0, (size_t)n * Tc * sizeof(float));
    for (int i = 0; i < n; i++) {
        int p = traj[i].prompt_len;
        for (int k = 0; k < s->lens[i]; k++) {
            size_t at = (size_t)i * T + (size_t)(p - 1 + k);
            rew_c[(size_t)i * Tc + k] = (float)(-beta * s->tmp[at]);
            val_c[(size_t)i * Tc + k] = s->vold[at];
        }
        rew_c[(size_t)i * Tc + s->lens[i] - 1] += s->reward[i];
    }
    ppo_gae_batch(adv_c, ret_c, rew_c, val_c, NULL, s->lens, c->gamma, c->lambda, n, Tc);
    memset(s->adv, 0, NT * sizeof(float));
    memset(s->ret, 0, NT * sizeof(float));
    for (int i = 0; i < n; i++) {
        int p = traj[i].prompt_len;
        for (int k = 0; k < s->lens[i]; k++) {
            size_t at = (size_t)i * T + (size_t)(p - 1 + k);
            s->adv[at] = adv_c[(size_t)i * Tc + k];
            s->ret[at] = ret_c[(size_t)i * Tc + k];
        }
    }
    /* Explained variance of the pre-update values against the returns. */
    double sr = 0, srr = 0, se = 0, see = 0, sv = 0, cnt = 0;
    for (size_t i = 0; i < NT; i++) {
        if (s->mask[i] == 0.0f) continue;
        double r = s->ret[i], e = r - s->vold[i];
        sr += r;
        srr += r * r;
        se += e;
        see += e * e;
        sv += s->vold[i];
        cnt += 1;
    }
    double var_r = srr / cnt - (sr / cnt) * (sr / cnt);
    double var_e = see / cnt - (se / cnt) * (se / cnt);
    st->explained_var = var_r > 0.0 ? 1.0 - var_e / var_r : 0.0;
    st->value_mean = sv / cnt;
    if (c->whiten_advantages) adv_whiten(s->adv, s->adv, s->mask, (int)NT);
}

/* Copies the rows of the batch listed in rows (m of them) into the
 * minibatch views. */
static void gather(Scratch *s, const int *rows, int m, int T, bool ppo)
{
    size_t rb = (size_t)T;
#define GATHER(dst, src)                                                                           \
    for (int r = 0; r < m; r++)                                                                    \
        memcpy((dst) + r * rb, (src) + (size_t)rows[r] * rb, rb * sizeof *(dst));
    GATHER(s->m_tokens, s->tokens);
    GATHER(s->m_targets, s->targets);
    GATHER(s->m_mask, s->mask);
    GATHER(s->m_beh, s->beh);
    GATHER(s->m_prox, s->prox);
    GATHER(s->m_ref, s->ref);
    GATHER(s->m_adv, s->adv);
    if (ppo) {
        GATHER(s->m_ret, s->ret);
        GATHER(s->m_vold, s->vold);
    }
#undef GATHER
}

/* Mean |d|, k1 and k3 of KL(behaviour || learner) over the fresh tokens,
 * with d = logp_learner - logp_behaviour. */
static void mismatch_stats(const float *learner, const float *beh, const float *fresh, size_t N,
                           AlgoStats *st)
{
    double sa = 0, s1 = 0, s3 = 0;
    int    cnt = 0;
    for (size_t i = 0; i < N; i++) {
        if (fresh[i] == 0.0f) continue;
        double d = (double)learner[i] - beh[i];
        sa += fabs(d);
        s1 += -d;
        /* r - 1 - log r with r = e^d; expm1 keeps it exact for tiny d. */
        s3 += expm1(d) - d;
        cnt++;
    }
    st->n_fresh = cnt;
    if (cnt) {
        st->mismatch_abs = sa / cnt;
        st->mismatch_k1 = s1 / cnt;
        st->mismatch_k3 = s3 / cnt;
    }
}

static double sum_masked(const float *x, const float *mask, size_t N)
{
    double s = 0.0;
    for (size_t i = 0; i < N; i++)
        if (mask[i] != 0.0f) s += x[i];
    return s;
}

/* Statistics of the policy before the update, from s->prox and s->ent:
 * KL to the reference, entropy and the mismatch telemetry. */
static void pre_update_stats(Algo *a, size_t NT, AlgoStats *st)
{
    Scratch *s = &a->s;
    double   N = st->n_tokens;
    if (a->ref) {
        kl_estimate(s->tmp, NULL, s->prox, s->ref, s->mask, KL_K1, (int)NT);
        st->kl_ref_k1 = sum_masked(s->tmp, s->mask, NT) / N;
        kl_estimate(s->tmp, NULL, s->prox, s->ref, s->mask, KL_K3, (int)NT);
        st->kl_ref_k3 = sum_masked(s->tmp, s->mask, NT) / N;
        kl_estimate(s->tmp, NULL, s->prox, s->ref, s->mask, kl_kind_of(&a->cfg), (int)NT);
        st->kl_ref_seq = sum_masked(s->tmp, s->mask, NT) / st->n_traj;
    }
    st->entropy = sum_masked(s->ent, s->mask, NT) / N;
    mismatch_stats(s->prox, s->beh, s->fresh, NT, st);
}

double algo_policy_loss(float *dlogp, float *dent, float *w, PgPpoStats *ps, double *policy_loss,
                        const AlgoConfig *c, double beta, const AlgoLossIn *in, int B, int T)
{
    const int   N = B * T;
    PgPpoConfig pc = {.clip_low = c->clip_low,
                      .clip_high = c->clip_high,
                      .ratio_cap = c->ratio_cap,
                      .prox_weight_cap = c->is_weight_cap};
    float       norm = agg_weights(w, c->agg, in->mask, c->max_new_tokens, B, T);
    double      pl;
    if (c->ratio_level == PG_RATIO_SEQUENCE)
        pl = pg_gspo_loss(dlogp, ps, in->logp, in->beh, in->prox, in->adv, w, &pc, norm, B, T);
    else
        pl = pg_ppo_loss(dlogp, ps, in->logp, in->beh, in->prox, in->adv, w, &pc, norm, N);
    double loss = pl;
    if (beta > 0.0 && !kl_in_reward(c))
        loss += kl_loss(dlogp, in->logp, in->ref, w, kl_kind_of(c), (float)beta, norm, N);
    if (c->entropy_coef > 0.0f) loss += pg_entropy_loss(dent, in->ent, w, c->entropy_coef, norm, N);
    *policy_loss = pl;
    return loss;
}

int algo_step(Algo *a, const AlgoTrajectory *traj, int n, int64_t learner_version, AlgoStats *st)
{
    CHECK(a && traj && n > 0 && st);
    const AlgoConfig *c = &a->cfg;
    const bool        ppo = c->kind == ALGO_PPO;
    memset(st, 0, sizeof *st);
    int T = 1;
    for (int i = 0; i < n; i++) {
        int rc = check_traj(a, &traj[i], i, learner_version);
        if (rc) return rc;
        int len = traj[i].prompt_len + traj[i].completion_len - 1;
        T = len > T ? len : T;
    }
    scratch_reserve(a, n, T);
    Scratch *s = &a->s;
    size_t   NT = (size_t)n * T;
    st->n_traj = n;
    /* The log-probs must be those of the distribution the actors sampled
     * from, softmax(logits / T); the critic's value head is unaffected. */
    model_set_temperature(a->policy, c->temperature);
    if (a->ref) model_set_temperature(a->ref, c->temperature);
    pack(a, traj, n, T, learner_version, st);

    double rs = 0, rss = 0;
    int    n_long = 0;
    for (int i = 0; i < n; i++) {
        rs += traj[i].reward;
        rss += (double)traj[i].reward * traj[i].reward;
        float pen = adv_overlong_penalty(traj[i].completion_len, c->max_new_tokens,
                                         c->overlong_buffer, c->overlong_coef);
        n_long += pen < 0.0f;
        s->reward[i] = traj[i].reward + pen;
    }
    st->reward_mean = rs / n;
    st->reward_std = sqrt(fmax(0.0, rss / n - st->reward_mean * st->reward_mean));
    st->overlong_frac = (double)n_long / n;
    if (c->whiten_rewards) adv_whiten(s->reward, s->reward, NULL, n);

    memset(s->ref, 0, NT * sizeof(float));
    if (a->ref) model_forward(a->ref, s->tokens, s->targets, s->mask, n, T, s->ref, NULL, NULL);
    const double beta = a->ref ? a->beta : 0.0;
    st->kl_beta = st->kl_beta_next = beta;
    if (!ppo && beta > 0.0 && kl_in_reward(c)) {
        /* r -= beta * the completion's summed per-token estimate, from the
         * behaviour log-probs the tokens were drawn with (as PPO's). */
        kl_estimate(s->tmp, NULL, s->beh, s->ref, s->mask, kl_kind_of(c), (int)NT);
        for (int i = 0; i < n; i++) {
            double kl = 0.0;
            for (int t = 0; t < T; t++)
                if (s->mask[(size_t)i * T + t] != 0.0f) kl += s->tmp[(size_t)i * T + t];
            s->reward[i] = (float)(s->reward[i] - beta * kl);
        }
    }

    int mb = c->minibatch_size > 0 && c->minibatch_size < n ? c->minibatch_size : n;
    int n_mb = (n + mb - 1) / mb;
    /* The pre-update log-probs are the proximal policy and the base of the
     * KL, entropy and mismatch statistics. With a single minibatch the first
     * training forward is over the same batch in the same row order (it is
     * not shuffled), so it gives them bit for bit without an extra pass. */
    bool pre = c->decoupled || n_mb > 1;
    memset(s->prox, 0, NT * sizeof(float));
    if (pre) model_forward(a->policy, s->tokens, s->targets, s->mask, n, T, s->prox, s->ent, NULL);

    if (ppo)
        ppo_advantages(a, traj, n, T, beta, st);
    else
        seq_advantages(a, traj, n, T, st);
    st->adv_abs_mean = 0.0;
    for (size_t i = 0; i < NT; i++) st->adv_abs_mean += fabs(s->adv[i]) * (s->mask[i] != 0.0f);
    st->adv_abs_mean /= st->n_tokens;

    double w_all = 0, vclip = 0;
    int    rc = 0;
    st->ratio_min = INFINITY;
    st->ratio_max = -INFINITY;
    for (int i = 0; i < n; i++) s->perm[i] = i;
    for (int e = 0; e < c->epochs && !rc; e++) {
        /* One minibatch keeps the batch order: the gradient is the same, and
         * the forward then reproduces the reference forward's rounding. */
        for (int i = n - 1; i > 0 && n_mb > 1; i--) {
            int j = (int)rng_below(&a->rng, (uint32_t)i + 1), t = s->perm[i];
            s->perm[i] = s->perm[j];
            s->perm[j] = t;
        }
        for (int b = 0; b < n_mb && !rc; b++) {
            const int *rows = s->perm + (size_t)b * mb;
            int        m = b == n_mb - 1 ? n - b * mb : mb, N = m * T;
            gather(s, rows, m, T, ppo);
            Model *pm = a->policy;
            model_zero_grad(pm);
            model_forward(pm, s->m_tokens, s->m_targets, s->m_mask, m, T, s->m_logp, s->m_ent,
                          NULL);
            memset(s->m_dlogp, 0, (size_t)N * sizeof(float));
            memset(s->m_dent, 0, (size_t)N * sizeof(float));
            PgPpoStats       ps;
            double           pl;
            const AlgoLossIn in = {.logp = s->m_logp,
                                   .ent = s->m_ent,
                                   .beh = s->m_beh,
                                   .prox = c->decoupled ? s->m_prox : NULL,
                                   .ref = s->m_ref,
                                   .adv = s->m_adv,
                                   .mask = s->m_mask};
            double           loss =
                algo_policy_loss(s->m_dlogp, s->m_dent, s->m_tmp, &ps, &pl, c, beta, &in, m, T);
            if (e == 0 && !pre) {
                /* One minibatch in batch order: this forward is pre-update. */
                memcpy(s->prox, s->m_logp, NT * sizeof(float));
                memcpy(s->ent, s->m_ent, NT * sizeof(float));
            }
            if (e == 0 && b == 0) pre_update_stats(a, NT, st);
            model_backward(pm, s->m_dlogp, c->entropy_coef > 0.0f ? s->m_dent : NULL, NULL);
            double gn = 0, lr = 0;
            rc = optim_step(a->opt, model_train_params(pm), model_train_grads(pm), NULL, &gn, &lr);
            if (rc) {
                log_error("algo_step: policy gradient norm %g is not finite at epoch %d "
                          "minibatch %d; stopping after %d optimizer steps",
                          gn, e, b, st->n_opt_steps);
                break;
            }
            st->n_opt_steps++;
            st->loss += loss;
            st->policy_loss += pl;
            st->grad_norm += gn;
            st->grad_norm_max = fmax(st->grad_norm_max, gn);
            st->lr = lr;
            w_all += ps.n_tokens;
            st->clip_frac += ps.clip_frac * ps.n_tokens;
            st->clip_low_frac += ps.clip_low_frac * ps.n_tokens;
            st->clip_high_frac += ps.clip_high_frac * ps.n_tokens;
            st->cap_frac += ps.cap_frac * ps.n_tokens;
            st->ratio_mean += ps.ratio_mean * ps.n_tokens;
            st->ratio_min = fmin(st->ratio_min, ps.ratio_min);
            st->ratio_max = fmax(st->ratio_max, ps.ratio_max);
            st->is_weight_mean += ps.weight_mean * ps.n_tokens;
            st->is_weight_cap_frac += ps.weight_cap_frac * ps.n_tokens;

            if (ppo) {
                Model *cm = a->critic;
                double vcf = 0;
                model_zero_grad(cm);
                model_forward(cm, s->m_tokens, s->m_targets, s->m_mask, m, T, NULL, NULL, s->m_val);
                memset(s->m_dval, 0, (size_t)N * sizeof(float));
                double vl = ppo_value_loss(s->m_dval, &vcf, s->m_val, s->m_vold, s->m_ret,
                                           s->m_mask, c->value_clip, 0.0f, N);
                for (int i = 0; i < N; i++) s->m_dval[i] *= c->value_coef;
                model_backward(cm, NULL, NULL, s->m_dval);
                rc = optim_step(a->critic_opt, model_params(cm), model_grads(cm), NULL, &gn, NULL);
                if (rc) {
                    log_error("algo_step: critic gradient norm %g is not finite at epoch %d "
                              "minibatch %d; stopping",
                              gn, e, b);
                    break;
                }
                st->value_loss += vl;
                st->loss += c->value_coef * vl;
                vclip += vcf * ps.n_tokens;
                st->critic_grad_norm += gn;
            }
        }
    }
    int k = st->n_opt_steps;
    if (k) {
        st->loss /= k;
        st->policy_loss /= k;
        st->grad_norm /= k;
        st->value_loss /= k;
        st->critic_grad_norm /= k;
    }
    if (w_all > 0) {
        st->clip_frac /= w_all;
        st->clip_low_frac /= w_all;
        st->clip_high_frac /= w_all;
        st->cap_frac /= w_all;
        st->ratio_mean /= w_all;
        st->is_weight_mean /= w_all;
        st->is_weight_cap_frac /= w_all;
        st->value_clip_frac = vclip / w_all;
    } else {
        st->ratio_min = st->ratio_max = 0.0;
    }
    if (c->kl_target > 0.0f && k > 0 && a->ref) {
        a->beta =
            kl_adaptive_beta(a->beta, st->kl_ref_seq, c->kl_target, c->kl_gain, n, c->kl_horizon);
        st->kl_beta_next = a->beta;
    }
    return rc;
}

Model *algo_critic_from_policy(Model *policy, uint64_t seed, float std)
{
    ModelConfig cc = *model_config(policy);
    cc.has_value_head = true;
    Model *critic = model_new(&cc);
    model_init_random(critic, seed, std);
    for (int i = 0; i < model_num_tensors(critic); i++) {
        ModelTensor ct, pt;
        model_tensor(critic, i, &ct);
        if (model_find_tensor(policy, ct.name, &pt)) continue;
        CHECK(pt.numel == ct.numel);
        memcpy(ct.data, pt.data, ct.numel * sizeof(float));
    }
    return critic;
}
