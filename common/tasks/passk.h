/* passk: what n samples of one prompt say about a model: the unbiased
 * pass@k estimator of Chen et al. (2021, "Evaluating Large Language Models
 * Trained on Code", the HumanEval paper) and the majority vote over the
 * samples' answers.
 *
 * Pure functions of their arguments; no allocation, no errors (arguments
 * out of range are bugs: CHECK). Thread-safe. */
#ifndef RLHF_PASSK_H
#define RLHF_PASSK_H

/* The probability that at least one of k samples, drawn without
 * replacement from n of which c are correct, is correct:
 * 1 - C(n-c, k) / C(n, k), for 0 <= c <= n and 1 <= k <= n. Computed as
 * 1 - prod_{i = n-c+1..n} (1 - k/i), a product of c factors in [0, 1) that
 * never forms a binomial coefficient, so it neither overflows nor cancels
 * for large n; exactly 1 when n - c < k (every draw holds a correct one)
 * and exactly 0 when c = 0. pass@1 is c / n. Averaged over prompts it is
 * the benchmark's pass@k. */
double passk_estimate(int n, int c, int k);

/* The majority vote over n answers (answers[j] NULL: sample j has none):
 * the answer given most often (equal strings are the same answer), ties
 * going to the one given first, i.e. by the lowest sample index. Returns
 * the index of the first sample that gave the winning answer, with *count
 * (may be NULL) the number that gave it; -1 and 0 when no sample has an
 * answer. O(n^2) comparisons. */
int passk_vote(const char *const *answers, int n, int *count);

#endif
