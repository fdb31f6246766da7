/* agg: how every loss in learner/algo turns per-token (or per-sequence)
 * terms into one number: the token weights, the divisor of a masked mean,
 * and the reductions between tokens and sequences.
 *
 * Shapes: N tokens (a (B,T) batch flattened row-major works as N = B*T),
 * T steps of one sequence, G completions of one group, P preference pairs.
 *
 * Conventions shared by every loss in learner/algo (pg, kl, ppo, prefs):
 *   - A loss is to be minimised. It is returned as a double; the arithmetic
 *     inside runs in double, so finite differences in the self-test are exact
 *     to rounding and the returned value is good for logging.
 *   - Gradients ACCUMULATE (+=) into the d* arrays, like the backward kernels
 *     in tensor.h, so the policy, KL and entropy terms can be summed into one
 *     dlogp (B,T) for model_backward. Any d* pointer may be NULL to skip it.
 *   - mask (N) holds nonnegative token weights: normally the 0/1 mask given
 *     to model_forward; NULL means every token counts with weight 1. Entries
 *     with weight 0 are never read (padding may hold anything, even NaN) and
 *     get no gradient.
 *   - Aggregation: loss = sum_i mask_i * l_i / D. With norm == 0, D is the
 *     sum of the mask, the token mean over the mask. With norm > 0, D = norm:
 *     pass the mask sum of the whole batch when it is split into
 *     micro-batches, or a constant such as B * T_max (the "Dr. GRPO"
 *     normaliser). For the mean over sequences of per-sequence token means
 *     (the original GRPO aggregation), pass the weights from
 *     agg_seq_mean_weights as the mask with norm 0. If D is 0 (nothing
 *     counts), the loss is 0 and no gradient is written.
 *   - Inputs must be finite where they count; non-finite values flow through
 *     to the loss, which the caller checks. Outside data such as rewards is
 *     validated where it enters the process, not here.
 * Misuse (negative sizes, a NULL required array, a negative mask weight, a
 * parameter out of range) fails a CHECK. Nothing here allocates or fails
 * otherwise; every function is reentrant. */
#ifndef RLHF_AGG_H
#define RLHF_AGG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/base/err.h"

/* Weight of token i; a NULL mask weighs every token 1. The CHECK also
 * rejects NaN weights. Inline: every loss calls it once per token. */
static inline double agg_weight(const float *mask, size_t i)
{
    if (!mask) return 1.0;
    CHECK(mask[i] >= 0.0f);
    return mask[i];
}

/* The divisor D of every masked mean: norm if > 0, else the sum of the
 * mask over n tokens (n with a NULL mask). norm < 0 is a CHECK. */
double agg_denominator(const float *mask, float norm, int n);

/* out (B) = sum over t of mask (B,T) * x (B,T); positions with mask 0 are
 * not read. With x the token log-probs this is the sequence log-prob. */
void agg_seq_sum(float *out, const float *x, const float *mask, int B, int T);

/* The backward of agg_seq_sum: dx (B,T) += dout (B) * mask (B,T). Into a
 * zeroed dx it broadcasts a per-sequence value (a GRPO advantage) to the
 * sequence's tokens. */
void agg_seq_sum_backward(float *dx, const float *dout, const float *mask, int B, int T);

/* Writes w (B,T) = mask / (tokens of the row) / (rows with tokens), 0 where
 * the mask is 0, so sum w = 1 (or all 0 if no row has tokens). Used as the
 * mask of a loss with norm 0, it gives the mean over sequences of each
 * sequence's token mean. mask NULL means every position counts. */
void agg_seq_mean_weights(float *w, const float *mask, int B, int T);

#endif
