/* bon: best-of-n (rejection sampling). n completions of one prompt are
 * sampled from a policy (common/nn/gen, the one sampling path), each is
 * scored by a reward model through the reward server's "rm" scorer
 * (reward_server/rm_scorer.h: the same ids, the same head at the stop
 * token, the same pass the server runs), and the best is picked.
 *
 * Only completions that ended at the stop token can be picked: one cut by
 * the length cap is scored like any other but is not an answer to keep. The
 * pick among the first k completions (bon_argmax) is the highest score,
 * the lowest index on a tie; so one draw of n samples gives best-of-k for
 * every k <= n (the first k of n independent samples are k independent
 * samples), the usual way a best-of-n curve is measured.
 *
 * Ownership: the policy and the scorer are borrowed and must outlive the
 * Bon; the Bon owns its Generator and buffers; bon_samples' arrays are the
 * Bon's, valid until the next bon_run. Threading: one thread (the policy's
 * Generator). Errors: bon_new logs and returns NULL (bad config, a scorer
 * whose vocabulary is not the policy's); bon_run returns gen_run's error
 * (ERR_RANGE for a prompt too long or with a bad id, ERR_NONFINITE) or the
 * scorer's (logged with its reason). */
#ifndef RLHF_BON_H
#define RLHF_BON_H

#include <stdbool.h>

#include "common/base/rng.h"
#include "common/nn/model.h"
#include "reward_server/rm_scorer.h"

#define BON_MAX_N 1024

typedef struct {
    int   n;           /* completions per prompt, 1..BON_MAX_N */
    float temperature; /* sampling temperature, > 0 */
    int   max_new;     /* tokens per completion at most, stop token included, >= 1 */
    int   stop_id;     /* the token that ends a completion, >= 0 */
} BonConfig;

typedef struct {
    int           n, max_new;
    const int    *tokens;   /* (n, max_new) sampled ids, stop token included */
    const int    *n_tokens; /* (n) */
    const bool   *stopped;  /* (n) ended at the stop token: may be picked */
    const double *score;    /* (n) the reward model's score */
    int           best;     /* bon_argmax over all n; -1 when none stopped */
} BonSamples;

typedef struct Bon Bon;

Bon *bon_new(Model *policy, RmScorer *rm, const BonConfig *cfg);
void bon_free(Bon **b);

/* Samples cfg.n completions of prompt (n_prompt ids, BOS first) with rng,
 * scores them and picks the best. Returns 0 or an error as above. */
int               bon_run(Bon *b, const int *prompt, int n_prompt, Rng *rng);
const BonSamples *bon_samples(const Bon *b);

/* The index of the highest score among the first k entries whose eligible
 * flag is set (the lowest index on a tie), or -1 when none is. Scores must
 * be finite (CHECK). */
int bon_argmax(const double *score, const bool *eligible, int k);

#endif
