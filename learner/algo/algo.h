/* algo: the learner's RL update step over one batch of scored trajectories:
 * GRPO, PPO and their relatives (REINFORCE, RLOO, Dr. GRPO, DAPO, GSPO; see
 * AlgoKind). It knows nothing of sockets: the learner daemon collects
 * scored groups, drops what is too stale, and hands the rest to algo_step.
 *
 * Every algorithm is the same step with different pieces, each a field of
 * AlgoConfig: the advantage estimator (the kind), the loss aggregation
 * (agg), where the importance ratio lives (ratio_level), the clip bounds,
 * where the KL to the reference goes (kl_place) and whether its coefficient
 * adapts (kl_target), and the reward shaping (overlong_*). algo_preset sets
 * the pieces that define each named algorithm; any of them can be changed
 * after. The order within a step:
 *   1. rewards: r_i + overlong penalty (advantage.h), then optional
 *      whitening over the batch;
 *   2. KL in the reward: critic-free kinds subtract beta * the sequence's
 *      summed per-token estimate (k1 unless kl_kind says) from r_i, PPO
 *      subtracts beta * k_t per token;
 *   3. advantages by kind (advantage.h, ppo.h);
 *   4. per minibatch: the weights and divisor of agg (agg.h), the surrogate
 *      (pg_ppo_loss per token or pg_gspo_loss per sequence, pg.h), plus
 *      beta * KL as a loss when it is not in the reward (k3 unless kl_kind
 *      says), minus the entropy bonus, all aggregated alike;
 *   5. with kl_target > 0, beta moves by the adaptive controller
 *      (kl_adaptive_beta in kl.h) from the KL measured before the update.
 *
 * One call to algo_step is one batch: it packs the trajectories into a
 * right-padded (B,T) batch, computes advantages once, then runs `epochs`
 * passes over minibatches of `minibatch_size` trajectories (shuffled each
 * epoch when there are several), each minibatch one optimizer step, so a
 * call takes epochs * ceil(n / minibatch_size) optimizer steps, reported in
 * AlgoStats.n_opt_steps. The
 * daemon bumps the policy version once per algo_step call, not once per
 * optimizer step: every token of the next batch that was sampled with the
 * weights this call produces carries that one new version.
 *
 * Packing follows learner/sft.h: row b holds prompt ++ completion, position t
 * predicts token t+1, and the mask covers the positions whose target is a
 * completion token, so completion token k of a trajectory with a prompt of p
 * tokens sits at position p - 1 + k.
 *
 * With the default aggregation (AGG_TOKEN_MEAN) losses are token means over
 * the minibatch's completion tokens, so on-policy (all ratios 1) the policy
 * gradient of a minibatch is d loss / d logp = -A * mask / N with N its
 * completion tokens; the other modes change only the weights (agg.h).
 *
 * Temperature: the behaviour log-probs are log softmax(logits / T) of the
 * actor's sampling temperature T, and the learner computes the same quantity:
 * algo_step sets the policy's and reference's model temperature to the
 * config's (model_set_temperature), and refuses a trajectory sampled at any
 * other temperature with ERR_UNSUPPORTED. top-k/top-p truncation must be off
 * (logp_behaviour is the untruncated log-prob, sampler.h's logp_full).
 *
 * Ownership: algo_new borrows the models and optimizers, which must outlive
 * the Algo; the Algo owns its scratch (grown on demand to the largest batch
 * seen, then reused). Trajectory arrays are borrowed for the call only.
 * Threading: an Algo, its models and optimizers belong to one thread.
 * Errors: trajectories are outside input (from actors via reward servers)
 * and are validated: ERR_RANGE for an empty prompt or completion, a token id
 * out of range, a sequence longer than the model's max_seq_len + 1, a
 * negative token version or one newer than the learner's, or a behaviour
 * log-prob above 0 (beyond rounding); ERR_NONFINITE for a non-finite reward
 * or behaviour log-prob; ERR_UNSUPPORTED for a temperature other than the
 * config's. Each is logged with the trajectory index; nothing is changed.
 * ERR_NONFINITE from an optimizer step (non-finite gradient) stops the call:
 * earlier minibatches' updates stay applied, n_opt_steps says how many. An
 * invalid config or a missing model given to algo_new is a CHECK. */
#ifndef RLHF_ALGO_H
#define RLHF_ALGO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "learner/algo/agg.h"
#include "learner/algo/kl.h"
#include "learner/algo/pg.h"

/* The advantage estimator, and through algo_preset the named algorithm.
 * Values are appended only (they index algo_kind_names, the --algo names). */
typedef enum {
    ALGO_GRPO = 0,      /* (r - group mean) / group std; KL (k3) in the loss */
    ALGO_PPO = 1,       /* critic + GAE; KL (k1) folded into the per-token reward */
    ALGO_REINFORCE = 2, /* r - running mean of past batches' rewards (adv_reinforce) */
    ALGO_RLOO = 3,      /* r - mean of the other completions of the group (adv_rloo) */
    ALGO_DR_GRPO = 4,   /* GRPO without the std division and with a constant divisor */
    ALGO_DAPO = 5,      /* GRPO with clip-higher, dynamic sampling, token-level loss,
                           overlong penalty, no KL */
    ALGO_GSPO = 6,      /* GRPO advantages, one length-normalised ratio per sequence */
} AlgoKind;

enum { ALGO_N_KINDS = 7 };

/* Where the KL to the reference goes. */
typedef enum {
    ALGO_KL_AUTO = 0,   /* in the reward for PPO, in the loss for the others */
    ALGO_KL_LOSS = 1,   /* beta * KL as a loss term (GRPO's), k3 by default */
    ALGO_KL_REWARD = 2, /* reward -= beta * KL (PPO-RLHF's), k1 by default */
} AlgoKlPlace;

/* The update's settings; ALGO_DEFAULTS below gives the default of each. */
typedef struct {
    AlgoKind kind; /* the advantage estimator (and the name in the metrics) */
    /* Group-relative advantages (GRPO, Dr. GRPO, DAPO, GSPO): (r - mean) /
     * (std + eps) if true, else r - mean (Dr. GRPO). */
    bool adv_divide_std;
    /* KL to the reference, >= 0, 0 = off; the initial coefficient when
     * kl_target > 0. In the loss: beta * KL is added to it. In the reward:
     * PPO's reward_t -= beta * kl_t per token, a critic-free kind's
     * r -= beta * sum_t kl_t per completion (the tokens were drawn from the
     * behaviour policy, so kl_t uses its log-probs). */
    float       kl_beta;
    KlKind      kl_kind;  /* estimator; 0 = k3 in the loss, k1 in the reward */
    AlgoKlPlace kl_place; /* loss or reward; 0 = by kind (see AlgoKlPlace) */
    /* Adaptive KL coefficient (kl_adaptive_beta): the target KL in nats
     * per completion (the mean over the batch of the summed per-token
     * estimate, of the policy before the update), 0 = a fixed beta; the
     * horizon in samples (completions), > 0; the gain K_beta, >= 0. */
    float        kl_target;
    float        kl_horizon;
    float        kl_gain;
    AggMode      agg;         /* loss aggregation (agg.h) */
    PgRatioLevel ratio_level; /* per token (pg_ppo_loss) or per sequence (GSPO) */
    /* The completion length cap the actors sample with (the learner's
     * max_new_tokens): AGG_CONSTANT's divisor is rows * max_new_tokens, and
     * the overlong penalty's L_max. 0 = unknown (then neither may be used). */
    int max_new_tokens;
    /* DAPO's soft overlong penalty (adv_overlong_penalty): the buffer
     * before the cap in tokens, 0 = off, else <= max_new_tokens; its scale. */
    int   overlong_buffer;
    float overlong_coef;
    /* DAPO's dynamic sampling: groups whose rewards (after the overlong
     * penalty) are all equal are dropped before they reach a batch and more
     * prompts are leased in their place. The learner's intake does this
     * (learner_intake.h); algo_step takes whatever it is given. */
    bool  dynamic_sampling;
    float baseline_decay; /* REINFORCE's running mean, in [0, 1) */
    float clip_low;       /* eps_low in [0,1): the ratio floor is 1 - clip_low */
    float clip_high;      /* eps_high >= 0: the ratio ceiling is 1 + clip_high */
    /* Truncated importance sampling of the ratio for A < 0 (the dual clip:
     * the term stops growing past the cap); 0 = off, else > 1 + clip_high. */
    float ratio_cap;
    /* Decoupled objective: recompute the learner's log-probs before the
     * update (the proximal policy), clip the ratio against those and weight
     * each token by w = min(pi_prox / pi_behaviour, is_weight_cap). */
    bool     decoupled;
    float    is_weight_cap;     /* cap on w, >= 0; 0 = no cap; decoupled only */
    int      epochs;            /* passes over the batch, >= 1 */
    int      minibatch_size;    /* trajectories per optimizer step, >= 0; 0 = the whole batch */
    float    entropy_coef;      /* >= 0; the loss gets -entropy_coef * mean entropy */
    float    gamma;             /* PPO discount in [0,1] */
    float    lambda;            /* PPO GAE lambda in [0,1] */
    float    value_clip;        /* PPO value clip around the pre-update values, >= 0; 0 = off */
    float    value_coef;        /* PPO scale of the value loss (the critic's gradient), > 0 */
    bool     whiten_rewards;    /* whiten the scalar rewards over the batch before anything else */
    bool     whiten_advantages; /* PPO: whiten the advantages over the batch's tokens */
    float    temperature;       /* sampling temperature of the batches (see top) */
    uint64_t seed;              /* minibatch shuffling */
} AlgoConfig;

#define ALGO_DEFAULTS                                                                              \
    ((AlgoConfig){.kind = ALGO_GRPO,                                                               \
                  .adv_divide_std = true,                                                          \
                  .kl_beta = 0.04f,                                                                \
                  .kl_kind = 0,                                                                    \
                  .kl_place = ALGO_KL_AUTO,                                                        \
                  .kl_target = 0.0f,                                                               \
                  .kl_horizon = 1000.0f,                                                           \
                  .kl_gain = 0.1f,                                                                 \
                  .agg = AGG_TOKEN_MEAN,                                                           \
                  .ratio_level = PG_RATIO_TOKEN,                                                   \
                  .max_new_tokens = 0,                                                             \
                  .overlong_buffer = 0,                                                            \
                  .overlong_coef = 1.0f,                                                           \
                  .dynamic_sampling = false,                                                       \
                  .baseline_decay = 0.9f,                                                          \
                  .clip_low = 0.2f,                                                                \
                  .clip_high = 0.2f,                                                               \
                  .ratio_cap = 3.0f,                                                               \
                  .decoupled = false,                                                              \
                  .is_weight_cap = 2.0f,                                                           \
                  .epochs = 1,                                                                     \
                  .minibatch_size = 0,                                                             \
                  .entropy_coef = 0.0f,                                                            \
                  .gamma = 1.0f,                                                                   \
                  .lambda = 0.95f,                                                                 \
                  .value_clip = 0.2f,                                                              \
                  .value_coef = 0.5f,                                                              \
                  .whiten_rewards = false,                                                         \
                  .whiten_advantages = true,                                                       \
                  .temperature = 1.0f,                                                             \
                  .seed = 1})

/* One scored completion. All arrays are borrowed for the call. */
typedef struct {
    const int *prompt;     /* (prompt_len) ids, usually BOS first */
    int        prompt_len; /* >= 1 */
    /* The sampled ids, the stop token included if one was generated. */
    const int *completion;     /* (completion_len) */
    int        completion_len; /* >= 1 */
    /* log pi_behaviour(token) under softmax(logits / temperature),
     * untruncated (sampler.h's logp_full). */
    const float   *logp_behaviour; /* (completion_len) */
    const int64_t *version;        /* (completion_len) policy version that sampled each token */
    int64_t        group_id;       /* completions of one prompt share it */
    float          reward;         /* scalar score of the whole completion */
    float          temperature;    /* the actor's sampling temperature */
} AlgoTrajectory;

enum { ALGO_STALENESS_BUCKETS = 5 }; /* staleness 0, 1, 2, 3, 4 or more */

/* Statistics of one algo_step. Token means are over completion tokens;
 * "over all steps" means over every token of every optimizer step. */
typedef struct {
    int n_traj;      /* trajectories in the batch */
    int n_tokens;    /* completion tokens in the batch */
    int n_opt_steps; /* optimizer steps taken (per model) */
    /* Policy + KL + entropy losses, plus value_coef * value loss for PPO. */
    double loss;        /* mean over steps */
    double policy_loss; /* clipped surrogate, mean over steps */
    /* The policy before the update against the reference (0 without one). */
    double kl_ref_k1; /* mean k1 = logp - logp_ref */
    double kl_ref_k3; /* mean k3 */
    /* The mean over completions of the summed per-token estimate (the
     * estimator of the KL term): what the adaptive controller steers. */
    double kl_ref_seq;
    double kl_beta;       /* the KL coefficient this step used */
    double kl_beta_next;  /* the coefficient for the next step (== kl_beta unless adaptive) */
    double baseline;      /* REINFORCE: the baseline subtracted this step */
    double overlong_frac; /* completions the overlong penalty reached (< 0 added) */
    double entropy;       /* mean next-token entropy of the policy before the update */
    /* The surrogate, over all steps; q = prox if decoupled, else behaviour. */
    double clip_frac;          /* tokens whose gradient a clip bound zeroed (low + high) */
    double clip_low_frac;      /* A < 0 and r < 1 - clip_low */
    double clip_high_frac;     /* A > 0 and r > 1 + clip_high */
    double cap_frac;           /* A < 0 and r > ratio_cap: zeroed by the ratio cap */
    double ratio_mean;         /* r = pi_theta / pi_q */
    double ratio_min;          /* over all steps */
    double ratio_max;          /* over all steps */
    double is_weight_mean;     /* decoupled w = min(pi_prox / pi_behaviour, cap); else 1 */
    double is_weight_cap_frac; /* tokens whose w was capped */
    double grad_norm;          /* policy gradient norm before clipping, mean over steps */
    double grad_norm_max;      /* over steps */
    double lr;                 /* policy learning rate of the last step */
    /* PPO only. The explained variance means nothing when the returns
     * barely vary (a batch of all-equal rewards). */
    double value_loss;       /* unscaled value loss, mean over steps */
    double value_clip_frac;  /* tokens where the clipped value term won, over all steps */
    double value_mean;       /* mean critic value before the update */
    double explained_var;    /* 1 - Var(returns - values) / Var(returns), before the update */
    double critic_grad_norm; /* mean over steps */
    /* The batch. */
    double  reward_mean;         /* raw scalar rewards over the trajectories */
    double  reward_std;          /* population standard deviation */
    double  adv_abs_mean;        /* mean |advantage| as used in the loss */
    double  zero_adv_group_frac; /* GRPO: groups whose rewards were all equal (no signal) */
    int64_t staleness_hist[ALGO_STALENESS_BUCKETS]; /* tokens by learner version - version */
    /* Mismatch telemetry over the "fresh" tokens (version == the learner's
     * version before the update): the learner's log-probs before the update
     * against the actor's. The same weights through the same kernels (the
     * actor's KV-cache path differs only in rounding), so these should be
     * ~1e-7; a large value means the actor and learner disagree
     * (temperature, truncation, a bug in either path). */
    int    n_fresh;      /* fresh tokens */
    double mismatch_abs; /* mean |logp_learner - logp_behaviour| */
    double mismatch_k1;  /* mean logp_behaviour - logp_learner, k1 of KL(behaviour || learner) */
    double mismatch_k3;  /* mean k3 of KL(behaviour || learner) */
} AlgoStats;

typedef struct Algo Algo;

/* Checks every field (ranges above, finite, and the combinations: a
 * sequence-level ratio needs a critic-free kind, AGG_CONSTANT and the
 * overlong penalty need max_new_tokens, an adaptive beta a nonzero one).
 * Returns 0, or ERR_RANGE with the reason written to why (if non-NULL). */
int algo_config_validate(const AlgoConfig *cfg, char *why, size_t why_len);

/* The --algo names, in AlgoKind order, NULL-terminated ("grpo", "ppo",
 * "reinforce", "rloo", "dr_grpo", "dapo", "gspo"). */
extern const char *const algo_kind_names[];
/* The name of kind; "?" for a value out of range. */
const char *algo_kind_name(AlgoKind kind);

/* The fields algo_preset sets, as bits of its keep mask. */
typedef enum {
    ALGO_PRESET_ADV_STD = 1 << 0,     /* adv_divide_std */
    ALGO_PRESET_AGG = 1 << 1,         /* agg */
    ALGO_PRESET_RATIO_LEVEL = 1 << 2, /* ratio_level */
    ALGO_PRESET_CLIP_LOW = 1 << 3,    /* clip_low */
    ALGO_PRESET_CLIP_HIGH = 1 << 4,   /* clip_high */
    ALGO_PRESET_KL_BETA = 1 << 5,     /* kl_beta */
    ALGO_PRESET_DYNAMIC = 1 << 6,     /* dynamic_sampling */
    ALGO_PRESET_OVERLONG = 1 << 7,    /* overlong_buffer */
} AlgoPresetField;

/* Makes cfg the named algorithm kind: sets cfg->kind and, except the
 * fields in keep (a mask of AlgoPresetField, for settings the user gave
 * explicitly), the fields that define it; everything else is left alone.
 * Starting from ALGO_DEFAULTS' values of those fields (GRPO's: std
 * division, token-mean, per-token ratio, clip 0.2/0.2, beta 0.04, no
 * dynamic sampling, no overlong penalty):
 *   grpo, ppo, reinforce, rloo  nothing else (their difference is the
 *                               advantage estimator itself)
 *   dr_grpo  no std division; AGG_CONSTANT (needs max_new_tokens)
 *   dapo     clip 0.2 / 0.28 (clip-higher); dynamic sampling; token-mean;
 *            overlong buffer ceil(max_new_tokens / 5) (DAPO's 4096 of
 *            20480; off while max_new_tokens is 0); kl_beta 0
 *   gspo     per-sequence ratio; clip 3e-4 / 4e-4 (the paper's); AGG_SEQ_MEAN
 * Set max_new_tokens before calling it. */
void algo_preset(AlgoConfig *cfg, AlgoKind kind, unsigned keep);

/* An update step over borrowed components:
 *   policy, policy_opt  the trainable policy and its optimizer (required)
 *   ref                 the frozen reference policy, same config as policy;
 *                       required when kl_beta > 0, else may be NULL (then the
 *                       KL statistics are 0 and no reference forward runs)
 *   critic, critic_opt  PPO only (NULL for GRPO): a model with
 *                       has_value_head and the same vocabulary and
 *                       max_seq_len as the policy, and its own optimizer
 * CHECKs the config (validate first) and these requirements. Caller owns. */
Algo *algo_new(const AlgoConfig *cfg, Model *policy, Optim *policy_opt, Model *ref, Model *critic,
               Optim *critic_opt);
/* Releases a and sets *a to NULL; no-op on NULL. The borrowed models stay. */
void algo_free(Algo **a);

const AlgoConfig *algo_config(const Algo *a);

/* The KL coefficient the next algo_step will use: cfg.kl_beta, moved by
 * the adaptive controller after each step when kl_target > 0. */
double algo_kl_beta(const Algo *a);

/* What one update carries to the next: the adaptive KL coefficient and
 * REINFORCE's running baseline. A checkpoint saves it (trainer state
 * "algo_state") so a resumed run goes on from where it was rather than from
 * the configured start. */
typedef struct {
    double kl_beta;      /* the coefficient the next step will use, >= 0 */
    double baseline;     /* REINFORCE's running mean of rewards */
    bool   has_baseline; /* false until the first REINFORCE batch */
} AlgoCarry;

void algo_carry_get(const Algo *a, AlgoCarry *out);
/* Restores c (from algo_carry_get of an earlier run). The coefficient is
 * taken only when it adapts (kl_target > 0): a fixed one is the config's,
 * which the operator may have changed for the resumed run; the baseline
 * only for REINFORCE. Returns 0, or ERR_ARG (nothing changed) for a value
 * that is not finite or a negative coefficient. */
int algo_carry_set(Algo *a, const AlgoCarry *c);

/* One update over n >= 1 trajectories (n <= 0 or traj NULL is a CHECK).
 * Cost: a forward of the reference (if any), of the critic (PPO), and with
 * decoupled or more than one minibatch a forward of the policy before the
 * update (with a single minibatch its first training forward serves), then
 * a forward and backward per minibatch per epoch of the policy (and critic).
 * Trajectories are not reordered for one minibatch; with several, each
 * epoch shuffles them with the config's seed.
 * learner_version is the policy version of the weights before this update
 * (the one fresh tokens carry). Fills *st (required) on success and on
 * ERR_NONFINITE from an optimizer step; returns 0 or an error as at the top.
 * The policy's (and critic's) gradient block holds the last minibatch's
 * gradient afterwards. */
int algo_step(Algo *a, const AlgoTrajectory *traj, int n, int64_t learner_version, AlgoStats *st);

/* A critic for PPO built from a policy: the policy's config with
 * has_value_head = true, every tensor the two share copied by name, and the
 * value head (score.weight, score.bias) initialised as model_init_random
 * does with seed and std (a policy that already has a value head gives its
 * own). Caller owns. */
Model *algo_critic_from_policy(Model *policy, uint64_t seed, float std);

#endif
