/* sampler: draws one token from one row of next-token logits, with greedy,
 * temperature, top-k and top-p (nucleus) sampling, and reports the
 * log-probabilities an RL learner needs for the drawn token.
 *
 * The filters compose in the usual order: logits are divided by the
 * temperature, top-k keeps the k most likely tokens, top-p keeps the smallest
 * prefix of those (most likely first) whose renormalised mass reaches top_p,
 * and the token is drawn from what is left, renormalised. Ties in a logit
 * are broken by the lower token id, so the kept set is always well defined.
 *
 * Ownership: the caller owns the logits, the Rng and the scratch; nothing is
 * allocated here (sampling runs once per token per sequence). Threading: pure
 * functions; concurrent calls need their own Rng and scratch. Errors: config
 * validation returns ERR_RANGE with a reason; a logits row that contains NaN
 * or +inf, or only -inf, returns ERR_NONFINITE. Passing an invalid config to
 * sampler_sample is a CHECK (validate outside input first). */
#ifndef RLHF_SAMPLER_H
#define RLHF_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/base/rng.h"

typedef struct {
    float temperature; /* >= 0; 0 = greedy (argmax), 1 = the model's distribution */
    int   top_k;       /* >= 0; keep the k most likely tokens; 0 (or >= V) = off */
    float top_p;       /* in (0, 1]; keep the smallest set with mass >= top_p; 1 = off */
} SamplerConfig;

/* Checks temperature (finite, >= 0), top_k (>= 0) and top_p (in (0, 1]).
 * Returns 0, or ERR_RANGE with a reason written to why (if non-NULL,
 * truncated to why_len). */
int sampler_config_validate(const SamplerConfig *cfg, char *why, size_t why_len);

/* Bytes of scratch sampler_sample needs for a vocabulary of V tokens
 * (currently V floats and V ints). Any allocation from malloc is suitably
 * aligned; the same scratch may be reused for every call with that V. */
size_t sampler_scratch_bytes(int V);

/* Draws one token from logits (V), V > 0.
 *
 * Writes the token id in [0, V) to *token and, through the optional (NULL =
 * not wanted) out-params:
 *   logp_sampled  log-probability of the token under the distribution it was
 *                 actually drawn from: after temperature, top-k and top-p
 *                 truncation and renormalisation. It is what the sampler
 *                 "believed"; with no truncation it equals logp_full.
 *   logp_full     log-probability of the token under softmax(logits / T)
 *                 without truncation. This is what the learner recomputes
 *                 from the same logits, so the RL importance ratio uses it.
 *
 * Greedy (temperature 0) ignores top_k and top_p (the argmax survives every
 * filter), consumes no randomness, and defines logp_sampled = 0 (the choice
 * is certain) and logp_full = log softmax(logits) at temperature 1 of the
 * argmax, the lowest id among equal maxima.
 *
 * Otherwise exactly one rng_u64 is drawn per call, so a seed fixes the token
 * sequence. Tokens whose logit is -inf are never drawn (use it as a mask).
 * scratch holds sampler_scratch_bytes(V) bytes; its contents are clobbered.
 * Cost: O(V) with V exponentials; top-k adds O(log k) per token that enters
 * the running best k and O(k log k) to order them; top-p alone adds an
 * expected O(V) selection. Nothing is a full sort of V.
 *
 * Returns 0, or ERR_NONFINITE if a logit is NaN or +inf or all are -inf
 * (nothing is written then). */
int sampler_sample(const SamplerConfig *cfg, const float *logits, int V, Rng *rng, void *scratch,
                   int *token, float *logp_sampled, float *logp_full);

#endif
