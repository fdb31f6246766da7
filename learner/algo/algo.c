#include "tests/test_list.h"
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

    int   *m_tokens, *m_targets;                                       /* (mb,T) */
    float *m_mask, *m_beh, *m_prox, *m_ref, *m_adv, *m_ret, *m_vold;   /* (mb,T) gathered */
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
    if (c->kind != ALGO_GRPO && c->kind != ALGO_PPO)
        bad = "kind must be ALGO_GRPO or ALGO_PPO";
    else if (!finite_in(c->kl_beta, 0.0f, INFINITY))
        bad = "kl_beta must be finite and >= 0";
    else if (c->kl_kind != 0 && c->kl_kind != RL_KL_K1 && c->kl_kind != RL_KL_K2 &&
             c->kl_kind != RL_KL_K3)
        bad = "kl_kind must be 0, RL_KL_K1, RL_KL_K2 or RL_KL_K3";
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
    CHECK(optim_n(policy_opt) == model_num_params(policy));
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

/* GRPO: rl_group_advantages per group (groups may differ in size and come
 * in any order), each trajectory's advantage spread over its tokens. */
static void grpo_advantages(Algo *a, const AlgoTrajectory *traj, int n, int T, AlgoStats *st)
{
    Scratch *s = &a->s;
    for (int i = 0; i < n; i++) s->keys[i] = (GroupKey){traj[i].group_id, i};
    qsort(s->keys, (size_t)n, sizeof *s->keys, key_cmp);
    int n_groups = 0, n_flat = 0;
    for (int g0 = 0, g1; g0 < n; g0 = g1) {
        for (g1 = g0; g1 < n && s->keys[g1].gid == s->keys[g0].gid; g1++)
            s->g_r[g1 - g0] = s->reward[s->keys[g1].idx];
        int G = g1 - g0;
        rl_group_advantages(s->g_adv, s->g_r, a->cfg.adv_divide_std, 1, G);
        bool flat = true;
        for (int k = 0; k < G; k++) {
            s->seq_adv[s->keys[g0 + k].idx] = s->g_adv[k];
            flat = flat && s->g_r[k] == s->g_r[0];
        }
        n_groups++;
        n_flat += flat;
    }
    st->zero_adv_group_frac = (double)n_flat / n_groups;
    memset(s->adv, 0, (size_t)n * T * sizeof(float));
    rl_seq_sum_backward(s->adv, s->seq_adv, s->mask, n, T);
}

/* PPO: per-step rewards (-kl_beta * kl per token, plus the scalar reward at
 * the last completion token), critic values before the update, GAE over each
 * completion, returns as value targets, optional whitening. Every completion
 * is treated as ended after its last token (bootstrap 0), including those
 * cut at the length limit: their score already judges them as they are. */
static void ppo_advantages(Algo *a, const AlgoTrajectory *traj, int n, int T, AlgoStats *st)
{
    Scratch          *s = &a->s;
    const AlgoConfig *c = &a->cfg;
    size_t            NT = (size_t)n * T;
    model_forward(a->critic, s->tokens, s->targets, s->mask, n, T, NULL, NULL, s->vold);
    for (size_t i = 0; i < NT; i++) s->vold[i] *= s->mask[i] != 0.0f;
    memset(s->tmp, 0, NT * sizeof(float));
    if (c->kl_beta > 0.0f) {
        RlKl kind = c->kl_kind ? c->kl_kind : RL_KL_K1;
        /* The tokens were drawn from the behaviour policy, so its log-probs
         * are the ones the per-token estimator is unbiased for. */
        rl_kl(s->tmp, NULL, s->beh, s->ref, s->mask, kind, (int)NT);
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
            rew_c[(size_t)i * Tc + k] = -c->kl_beta * s->tmp[at];
            val_c[(size_t)i * Tc + k] = s->vold[at];
        }
        rew_c[(size_t)i * Tc + s->lens[i] - 1] += s->reward[i];
    }
    rl_gae_batch(adv_c, ret_c, rew_c, val_c, NULL, s->lens, c->gamma, c->lambda, n, Tc);
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
    if (c->whiten_advantages) rl_whiten(s->adv, s->adv, s->mask, (int)NT);
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
        rl_kl(s->tmp, NULL, s->prox, s->ref, s->mask, RL_KL_K1, (int)NT);
        st->kl_ref_k1 = sum_masked(s->tmp, s->mask, NT) / N;
        rl_kl(s->tmp, NULL, s->prox, s->ref, s->mask, RL_KL_K3, (int)NT);
        st->kl_ref_k3 = sum_masked(s->tmp, s->mask, NT) / N;
    }
    st->entropy = sum_masked(s->ent, s->mask, NT) / N;
    mismatch_stats(s->prox, s->beh, s->fresh, NT, st);
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
    for (int i = 0; i < n; i++) {
        rs += traj[i].reward;
        rss += (double)traj[i].reward * traj[i].reward;
        s->reward[i] = traj[i].reward;
    }
    st->reward_mean = rs / n;
    st->reward_std = sqrt(fmax(0.0, rss / n - st->reward_mean * st->reward_mean));
    if (c->whiten_rewards) rl_whiten(s->reward, s->reward, NULL, n);

    memset(s->ref, 0, NT * sizeof(float));
    if (a->ref) model_forward(a->ref, s->tokens, s->targets, s->mask, n, T, s->ref, NULL, NULL);

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
        ppo_advantages(a, traj, n, T, st);
    else
        grpo_advantages(a, traj, n, T, st);
    st->adv_abs_mean = 0.0;
    for (size_t i = 0; i < NT; i++) st->adv_abs_mean += fabs(s->adv[i]) * (s->mask[i] != 0.0f);
    st->adv_abs_mean /= st->n_tokens;

    RlPpoConfig pc = {.clip_low = c->clip_low,
                      .clip_high = c->clip_high,
                      .ratio_cap = c->ratio_cap,
                      .prox_weight_cap = c->is_weight_cap};
    RlKl        kl_kind = c->kl_kind ? c->kl_kind : RL_KL_K3;
    double      w_all = 0, vclip = 0;
    int         rc = 0;
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
            RlPpoStats ps;
            double     pl =
                rl_ppo_loss(s->m_dlogp, &ps, s->m_logp, s->m_beh, c->decoupled ? s->m_prox : NULL,
                            s->m_adv, s->m_mask, &pc, 0.0f, N);
            double loss = pl;
            if (!ppo && c->kl_beta > 0.0f)
                loss += rl_kl_loss(s->m_dlogp, s->m_logp, s->m_ref, s->m_mask, kl_kind, c->kl_beta,
                                   0.0f, N);
            if (c->entropy_coef > 0.0f)
                loss += rl_entropy_loss(s->m_dent, s->m_ent, s->m_mask, c->entropy_coef, 0.0f, N);
            if (e == 0 && !pre) {
                /* One minibatch in batch order: this forward is pre-update. */
                memcpy(s->prox, s->m_logp, NT * sizeof(float));
                memcpy(s->ent, s->m_ent, NT * sizeof(float));
            }
            if (e == 0 && b == 0) pre_update_stats(a, NT, st);
            model_backward(pm, s->m_dlogp, c->entropy_coef > 0.0f ? s->m_dent : NULL, NULL);
            double gn = 0, lr = 0;
            rc = optim_step(a->opt, model_params(pm), model_grads(pm), NULL, &gn, &lr);
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
                double vl = rl_value_loss(s->m_dval, &vcf, s->m_val, s->m_vold, s->m_ret, s->m_mask,
                                          c->value_clip, 0.0f, N);
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

/* ---- Self-test ------------------------------------------------------------- */

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
        adv[i] = (ts->tr[i].reward - mean) / (sd + RL_STD_EPS);
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
    return (OptimConfig){.lr_peak = lr,
                         .lr_min = lr,
                         .lr_warmup_steps = 0,
                         .lr_total_steps = 0,
                         .beta1 = 0.9f,
                         .beta2 = 0.99f,
                         .eps = 1e-8f,
                         .weight_decay = 0.0f,
                         .grad_clip = 0.0f};
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

/* Test 1: behaviour == current policy gives ratios of exactly 1 and the
 * on-policy policy gradient -A * mask / N. */
static int test_on_policy(bool verbose)
{
    int    fails = 0, n = 8;
    Rng    r;
    Model *p = model_new(&k_tiny), *p0 = model_new(&k_tiny);
    model_init_random(p, 3, 0.2f);
    model_copy_params(p0, p);
    rng_seed(&r, 4);
    TestSet ts;
    ts_init(&ts, n);
    ts_random(&ts, &r, 4, k_tiny.vocab_size, 7);
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
    fails += !ratio_ok;
    fails += !(scale > 1e-4 && d <= 1e-5 * scale);
    fails += st.n_opt_steps != 1 || st.n_tokens != N || st.n_fresh != N;
    fails += st.staleness_hist[0] != N || !(st.mismatch_abs <= 1e-6);
    ts_free(&ts);
    model_free(&p);
    model_free(&p0);
    return fails;
}

/* Test 2: stale behaviour log-probs; clipped tokens contribute no gradient,
 * the ratio cap zeroes A < 0 tokens above it, the IS weight cap scales. */
static int test_clipping(bool verbose)
{
    int    fails = 0, n = 8;
    Rng    r;
    Model *p = model_new(&k_tiny), *p0 = model_new(&k_tiny);
    model_init_random(p, 3, 0.2f);
    model_copy_params(p0, p);
    rng_seed(&r, 5);
    TestSet ts;
    ts_init(&ts, n);
    ts_random(&ts, &r, 4, k_tiny.vocab_size, 0);
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
    fails += !frac_ok || !hist_ok || n_low == 0 || n_high == 0 || n_cap == 0;
    fails += !(scale > 1e-5 && d <= 1e-5 * scale);
    fails += st.n_fresh != n_fresh || !(fabs(st.mismatch_abs - fresh_abs / n_fresh) < 1e-5);
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
        fails += !ok;
        if (c == 0) fails += st.clip_frac != 1.0 || st.cap_frac != 0.0;
        if (c == 1) fails += st.clip_frac != 0.5 || st.cap_frac != 0.5;
        if (c == 2) fails += st.clip_frac != 0.5 || st.cap_frac != 0.0;
        if (c == 3) fails += st.is_weight_cap_frac != 1.0 || fabs(st.is_weight_mean - 2) > 1e-6;
        if (c >= 3) fails += fabs(st.ratio_min - 1) > 1e-6 || fabs(st.ratio_max - 1) > 1e-6;
        if (c == 4)
            fails += st.is_weight_cap_frac != 0.0 || fabs(st.is_weight_mean - exp(2)) > 1e-3;
    }
    ts_free(&one);
    model_free(&p);
    model_free(&p0);
    return fails;
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
static int test_learning(bool verbose)
{
    int        fails = 0, steps = 40;
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
    fails += !(g0.reward_after >= 0.8 && g0.reward_after > g0.reward_before + 0.4);
    fails += !(pp.reward_after >= 0.8 && pp.reward_after > pp.reward_before + 0.4);
    fails += !(g0.kl_first_k1 == 0.0 && g0.kl_first_k3 == 0.0 && gb.kl_first_k3 == 0.0 &&
               pp.kl_first_k3 == 0.0);
    fails += !(pp.vloss_last < 0.25 * pp.vloss_first && fabs(pp.value_gap) < 0.1);
    fails += !(g0.kl_last_k3 > 0.1 && gb.kl_last_k3 < 0.5 * g0.kl_last_k3);
    fails += !(g0.mismatch_max < 1e-4 && pp.mismatch_max < 1e-4 && gb.mismatch_max < 1e-4);
    return fails;
}

/* Test 5: the decoupled objective with prox == behaviour is the standard
 * one exactly, over several minibatches and epochs with KL and entropy. */
static int test_decoupled(bool verbose)
{
    int    fails = 0, n = 8;
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
    fails += !(d == 0.0 && sa.loss == sb.loss && sa.clip_frac == sb.clip_frac);
    fails += sa.n_opt_steps != 6 || sb.is_weight_mean != 1.0 || !(moved > 0.0);
    algo_free(&a);
    algo_free(&b);
    optim_free(&oa);
    optim_free(&ob);
    ts_free(&ts);
    model_free(&pa);
    model_free(&pb);
    model_free(&ref);
    return fails;
}

/* Runs algo_step with stderr captured and expects want and a log line
 * containing needle; the parameters must not change. */
static int expect_refusal(Algo *a, Model *p, const TestSet *ts, int64_t lv, int want,
                          const char *needle, bool verbose)
{
    size_t n = model_num_params(p);
    float *before = xmalloc(n * sizeof(float));
    memcpy(before, model_params(p), n * sizeof(float));
    AlgoStats st;
    fileio_capture_begin();
    int   rc = algo_step(a, ts->tr, ts->n, lv, &st);
    char *log = fileio_capture_end(verbose);
    bool  ok = rc == want && strstr(log, needle) &&
              memcmp(before, model_params(p), n * sizeof(float)) == 0;
    if (!ok)
        printf("  refusal: got %d (%s), want %d; log '%s', want '%s'\n", rc, err_str(rc), want, log,
               needle);
    free(log);
    free(before);
    return !ok;
}

/* Refused inputs and configs, and the critic helper. */
static int test_inputs(bool verbose)
{
    int    fails = 0;
    Rng    r;
    char   why[200];
    Model *p = model_new(&k_tiny);
    model_init_random(p, 3, 0.2f);
    AlgoConfig ac = ALGO_DEFAULTS;
    ac.temperature = 0.7f;
    fails += algo_config_validate(&ac, why, sizeof why) != 0;
    ac = ALGO_DEFAULTS;
    ac.ratio_cap = 1.1f;
    fails += algo_config_validate(&ac, why, sizeof why) != ERR_RANGE;
    ac = ALGO_DEFAULTS;
    ac.clip_low = 1.0f;
    fails += algo_config_validate(&ac, why, sizeof why) != ERR_RANGE;
    ac = ALGO_DEFAULTS;
    fails += algo_config_validate(&ac, NULL, 0) != 0;

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
    fails += expect_refusal(a, p, &ts, 2, ERR_UNSUPPORTED, "trajectory 1: sampled at temperature",
                            verbose);
    ts.tr[1].temperature = 1.0f;
    fails += expect_refusal(a, p, &ts, 1, ERR_RANGE, "policy version 2, expected 0..1", verbose);
    ts.comp[2 * TS_MAXC] = k_tiny.vocab_size;
    fails += expect_refusal(a, p, &ts, 2, ERR_RANGE, "trajectory 2: token", verbose);
    ts.comp[2 * TS_MAXC] = TOK_EOS;
    ts.tr[3].reward = NAN;
    fails += expect_refusal(a, p, &ts, 2, ERR_NONFINITE, "trajectory 3: reward", verbose);
    ts.tr[3].reward = 0.5f;
    ts.beh[0] = 0.5f;
    fails += expect_refusal(a, p, &ts, 2, ERR_RANGE, "expected <= 0", verbose);
    ts.beh[0] = -1.0f;
    ts.tr[0].completion_len = k_tiny.max_seq_len;
    fails += expect_refusal(a, p, &ts, 2, ERR_RANGE, "max_seq_len + 1", verbose);
    ts.tr[0].completion_len = 1;
    AlgoStats st;
    fails += algo_step(a, ts.tr, ts.n, 2, &st) != 0;

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
    fails += differ != 0 || !head || model_num_tensors(critic) != shared + 2;
    model_free(&critic);
    algo_free(&a);
    optim_free(&o);
    ts_free(&ts);
    model_free(&p);
    return fails;
}

int algo_selftest(bool verbose)
{
    int fails = 0;
    fails += test_on_policy(verbose);
    fails += test_clipping(verbose);
    fails += test_decoupled(verbose);
    fails += test_inputs(verbose);
    fails += test_learning(verbose);
    if (verbose) printf("  algo: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
