/* algo_int: the one piece of algo_step its self-test reaches inside: the
 * policy loss of one minibatch, as a function of the policy's log-probs,
 * so the loss of every algorithm (AlgoConfig) can be checked against
 * finite differences without a model. Used by learner/algo/algo.c and
 * learner/algo/algo_test.c only.
 *
 * Conventions of learner/algo/agg.h: gradients accumulate, nothing
 * allocates, misuse is a CHECK. */
#ifndef RLHF_ALGO_INT_H
#define RLHF_ALGO_INT_H

#include "learner/algo/algo.h"
#include "learner/algo/pg.h"

/* One minibatch of B rows of T positions; every array (B,T). */
typedef struct {
    const float *logp; /* log pi_theta, the variable */
    const float *ent;  /* the policy's entropies; read only with entropy_coef > 0 */
    const float *beh;  /* behaviour log-probs */
    const float *prox; /* proximal log-probs (the decoupled objective), or NULL */
    const float *ref;  /* reference log-probs; read only when a KL term is in the loss */
    const float *adv;  /* advantages */
    const float *mask; /* 0/1: the completion tokens */
} AlgoLossIn;

/* The minibatch loss of config c with KL coefficient beta:
 *   loss = surrogate + [beta * KL, unless the KL goes in the reward]
 *          - entropy_coef * entropy,
 * every term aggregated with the weights and divisor of c->agg (written to
 * the scratch w (B,T)); the surrogate is pg_ppo_loss per token or
 * pg_gspo_loss per sequence (c->ratio_level), clipped with c's bounds.
 * Accumulates d loss / d logp into dlogp and d loss / d entropy into dent
 * (B,T); fills ps with the surrogate's stats and *policy_loss with its
 * value; returns the loss. */
double algo_policy_loss(float *dlogp, float *dent, float *w, PgPpoStats *ps, double *policy_loss,
                        const AlgoConfig *c, double beta, const AlgoLossIn *in, int B, int T);

#endif
