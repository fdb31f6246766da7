/* gold: the hidden judge of the built-in preference task. Preference
 * training is judged against this gold reward, never against the learned
 * (proxy) reward that it stands in for: pairs of completions are labelled by
 * a noisy Bradley-Terry coin on the gold reward, as human annotators who
 * disagree would label them, so the best held-out pair accuracy any reward
 * model can reach (the labeller's ceiling) is known exactly.
 *
 * The gold reward of a completion of the arithmetic task (common/tasks/task.h):
 *   -1                            when it is not an integer ('-'? digits, at
 *                                 most GOLD_DIGITS_MAX digits);
 *   exp(-|x - a| / (1 + |a|/10))  for an integer x, answer a: 1 when right,
 *                                 falling smoothly with the relative error.
 * It is graded rather than right/wrong so that pairs of two wrong answers
 * still carry a preference, and a policy can move it a little at a time.
 *
 * The gold reward of a chat model's answer to the chat arithmetic task
 * (common/tasks/chat_task.h: "What is 37 + 45? ..."), its judge asking for
 * right arithmetic in a one-line answer:
 *   -1                            when it holds no integer (chat_task_extract);
 *   exp(-|x - a| / (1 + |a|/10))  for its last integer x, when the answer is
 *                                 one line (no line break once the
 *                                 surrounding whitespace is trimmed);
 *   half that                     when it runs over more than one line.
 *
 * The labeller: for completions with gold rewards g1, g2 the first is
 * preferred with probability sigmoid((g1 - g2) / tau). The chance that a
 * label disagrees with the gold order is sigmoid(-|g1 - g2| / tau); tau is
 * calibrated on the pairs themselves so that the mean of that chance is the
 * flip rate asked for (25% by default). The ceiling is 1 - that mean: the
 * Bayes classifier that knows g picks the gold-better completion and is
 * right with probability max(p, 1 - p) on each pair.
 *
 * A ranking of K completions by the same labeller (gold_rank) sorts them
 * by g / tau plus independent standard Gumbel noise: a Plackett-Luce draw
 * whose every pair is ordered exactly as the pair coin would order it
 * (the difference of two Gumbels is logistic), so the annotator is the same
 * whether asked for a pair or a ranking.
 *
 * Pure functions; thread-safe; no allocation. */
#ifndef RLHF_GOLD_H
#define RLHF_GOLD_H

#include <stddef.h>
#include <stdint.h>

#define GOLD_DIGITS_MAX 12
#define GOLD_FLIP_DEFAULT 0.25

/* The gold reward of completion (text after the prompt, no stop token) for
 * the integer answer text answer; -1 also when answer is not an integer. */
double gold_arith(const char *completion, const char *answer);

/* The gold reward of a chat completion (text without the end-of-turn
 * token) for the integer answer text answer; -1 also when answer is not an
 * integer. */
double gold_chat(const char *completion, const char *answer);

/* P(first preferred) = sigmoid((g1 - g2) / tau), tau > 0. */
double gold_prefer_prob(double g1, double g2, double tau);

/* Mean over n gold gaps |dg[i]| of sigmoid(-|dg| / tau): the expected share
 * of labels against the gold order. */
double gold_mean_flip(const double *dg, size_t n, double tau);

/* The tau in [1e-6, 1e6] whose gold_mean_flip over dg is flip (0 < flip <
 * 0.5), by bisection on log tau (the mean rises with tau). Every |dg| must be
 * > 0. Returns the tau, or 0 when flip is out of range or n == 0. */
double gold_calibrate_tau(const double *dg, size_t n, double flip);

/* Draws the label of one pair: 1 when the first completion is preferred,
 * given a uniform u in [0, 1) (the caller's Rng). */
int gold_label(double g1, double g2, double tau, double u);

/* Draws the ranking of n <= GOLD_RANK_MAX completions with gold rewards g:
 * order[0..n) lists their indices from the preferred to the least, given n
 * uniforms u[i] in [0, 1) (the caller's Rng). */
#define GOLD_RANK_MAX 64
void gold_rank(const double *g, const double *u, int n, double tau, int *order);

#endif
