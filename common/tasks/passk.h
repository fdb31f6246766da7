/* passk: the figures of an evaluation with n samples per prompt.
 *
 * pass@k, unbiased (the estimator of the HumanEval paper): with n samples of
 * a prompt of which c are correct, the chance that k of them drawn without
 * replacement hold at least one correct one,
 *   pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{j = n-c+1}^{n} (1 - k / j),
 * computed as that product (no factorials, exact to rounding for any n);
 * 1 when n - c < k. Averaged over prompts by the caller.
 *
 * Majority vote: each sample's answer reduced to a key (passk_vote_key: the
 * answer text, its last <answer> block when there is one, as a number when it
 * holds one, else normalised as exact match normalises), the most frequent
 * key wins; a tie goes to the key sampled first; samples without an answer
 * (empty key) do not vote.
 *
 * Pure functions; thread-safe; no allocation. */
#ifndef RLHF_PASSK_H
#define RLHF_PASSK_H

#include <stdbool.h>
#include <stddef.h>

/* pass@k for n samples with c correct; 0 <= c <= n, 1 <= k <= n (CHECK). */
double passk_estimate(int n, int c, int k);

/* The voting key of a completion into out (cap bytes, > 0): "" when it has
 * no answer. Numbers compare by value ("82", "82.0" and "the answer is 82"
 * give the same key). */
void passk_vote_key(const char *completion, char *out, size_t cap);

/* The winner of a vote among n keys (NULL or "" do not vote): the index of
 * the first sample with the most frequent key, or -1 when none votes. */
int passk_vote(const char *const *keys, int n);

#endif
