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

/* The loss aggregation modes: how a minibatch's per-token terms l_bt become
 * one loss, as the weights w and divisor D of the convention above
 * (loss = sum w_bt * l_bt / D). With |y_b| the tokens of row b, B the rows
 * and L the completion length cap, the weight each token gets is:
 *   AGG_TOKEN_MEAN  1 / sum_b |y_b|    every token of the minibatch alike, so
 *                                      a long sequence's share of the gradient
 *                                      grows with its length (DAPO's
 *                                      token-level loss; our default)
 *   AGG_SEQ_MEAN    1 / (B * |y_b|)    the mean over sequences of each
 *                                      sequence's token mean (the original
 *                                      GRPO): every sequence counts the same,
 *                                      so a long sequence's tokens each count
 *                                      less
 *   AGG_CONSTANT    1 / (B * L)        a constant divisor (Dr. GRPO): no
 *                                      length normalisation at all; a token
 *                                      counts the same whatever the length of
 *                                      its sequence or of the others
 * Example, one sequence of 4 tokens and one of 1, L = 8: token-mean gives
 * each token 1/5 (the long sequence 4/5 of the total), seq-mean 1/8 to each
 * long token and 1/2 to the short one (1/2 each in total), constant 1/16 to
 * every token (4/16 and 1/16). */
typedef enum {
    AGG_TOKEN_MEAN = 0,
    AGG_SEQ_MEAN = 1,
    AGG_CONSTANT = 2,
} AggMode;

/* Writes the weights w (B,T) of mode from the 0/1 mask (B,T) (NULL: all
 * positions count) and returns the norm to pass with them to every loss:
 * token-mean w = mask and 0 (the mask sum), seq-mean the weights of
 * agg_seq_mean_weights and 0 (they sum to 1), constant w = mask and B * L
 * with L = const_len, which must then be >= 1 (CHECK). */
float agg_weights(float *w, AggMode mode, const float *mask, int const_len, int B, int T);

/* The name of mode as flags and metrics spell it ("token-mean",
 * "seq-mean", "constant"); agg_mode_names lists them in enum order,
 * NULL-terminated. */
extern const char *const agg_mode_names[];

#endif
