/* rm_scorer: the "rm" scorer, a learned reward model hosted by the reward
 * server (rlhf-reward --reward-model DIR).
 *
 * A reward model is a checkpoint directory (common/formats/ckpt.h: one of
 * ours, or transformers' LlamaForSequenceClassification with one label) of
 * a model with the scalar head (score.weight, score.bias). The reward of a
 * completion is the head's value at the last token of prompt ++ completion
 * (model_score), where prompt is the prompt's ids as the actor fed them and
 * completion the ids it sampled, up to and including the stop token: the
 * ids the reward-model trainer reads too (a completion closed by its end
 * token, learner/rm.h), with nothing decoded and encoded again. A
 * completion cut off by the length cap has no stop token and is scored at
 * its last sampled token; one that is only the stop token (the policy
 * stopped at once) is scored like any other and counted as empty. The
 * result has one component, "rm", equal to the reward.
 *
 * Batching: the completions of a group go through the model together, the
 * prompt once (model_score): as many completions per forward pass as keep
 * its rows (prompt + their ids) within max_tokens and its cache (their
 * count x the longest prompt + completion) within 2 max_tokens positions,
 * which bounds the memory of a pass (a single completion longer than that
 * still goes alone, up to the model's context): a stream holds at most
 * max(max_tokens, context) rows of activations and max(2 max_tokens,
 * context) positions of one layer's keys and values.
 *
 * Threads: rm_scorer_run may be called from any number of threads (the
 * reward server's scoring workers); at most `streams` forward passes run at
 * once, each on a cache of its own, and the others wait. A pass's matrix
 * products are split over the pool unless tensor_set_blas_threads(1) made
 * them serial. The reward server runs one stream per CPU with serial
 * products (tensor_set_blas_threads(1)):
 * passes side by side never wait on each other's threads, which measured
 * faster than one pass at a time on every core, most of all for small
 * models (tests/bench/bench_rm.c); each stream costs a cache and up to
 * max_tokens rows of activations.
 *
 * Refusals: a completion that cannot be scored fails the group (the
 * learner needs a reward for every completion, so the lease is re-issued):
 * no ids at all ("empty"), prompt + completion longer than the model's
 * context ("too_long"), or an id outside the model's vocabulary
 * ("bad_token", possible when the reward model's vocabulary is smaller than
 * the server's tokenizer's). The reason names the completion and the
 * numbers, and each is counted (RmStats.refused).
 *
 * Ownership: rm_scorer_new's caller owns the RmScorer (the model with it);
 * the tokenizers in the config are borrowed for the call. Errors:
 * rm_scorer_new logs and returns NULL; rm_scorer_run follows
 * reward_server/scorer.h (ScorerGroupFn: nothing logged). */
#ifndef RLHF_RM_SCORER_H
#define RLHF_RM_SCORER_H

#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "reward_server/scorer.h"

#define RM_SCORER_NAME "rm"
#define RM_MAX_STREAMS 16
#define RM_DEFAULT_MAX_TOKENS 4096

typedef enum {
    RM_REFUSED_EMPTY = 0,
    RM_REFUSED_TOO_LONG,
    RM_REFUSED_BAD_TOKEN,
    RM_REFUSED_COUNT
} RmRefusal;

extern const char *const rm_refusal_names[RM_REFUSED_COUNT]; /* "empty", "too_long", "bad_token" */

typedef struct {
    const char *dir;        /* the reward model's checkpoint directory */
    int         max_tokens; /* rows of one forward pass at most (memory), >= 1 */
    int         streams;    /* forward passes at once, 1..RM_MAX_STREAMS */
    /* The server's tokenizer (one of the two), to check the reward model
     * reads the same ids: a model saved with a char tokenizer must have the
     * server's charset; a BPE server cannot host one. */
    const Tok *tok;
    const Bpe *bpe;
} RmScorerConfig;

typedef struct {
    uint64_t groups;                    /* groups scored whole */
    uint64_t completions;               /* completions scored */
    uint64_t empty;                     /* of those, only a stop token */
    uint64_t passes;                    /* forward passes */
    uint64_t rows;                      /* ids through the model (each prompt once per pass) */
    double   seconds;                   /* wall time of the passes, every stream summed */
    uint64_t refused[RM_REFUSED_COUNT]; /* groups refused, by the first bad completion's reason */
} RmStats;

typedef struct RmScorer RmScorer;

/* Loads the reward model (refusing a model without the scalar head, or
 * whose tokenizer is not the server's) and makes the streams' caches. NULL
 * after logging. */
RmScorer *rm_scorer_new(const RmScorerConfig *cfg);
/* A scorer over a model already in memory (benchmarks, a trainer scoring
 * its own samples): m is borrowed, must have the scalar head (CHECK) and
 * outlive the scorer, and must not change while rm_scorer_run runs. cfg's
 * dir and tokenizers are not used. */
RmScorer *rm_scorer_borrow(Model *m, const RmScorerConfig *cfg);
void      rm_scorer_free(RmScorer **s);

/* The model (borrowed), e.g. for its config. */
const Model *rm_scorer_model(const RmScorer *s);
/* Counters so far (each consistent, not across). Thread-safe. */
void rm_scorer_stats(const RmScorer *s, RmStats *out);

/* The ScorerGroupFn of "rm"; opts is the RmScorer. */
int rm_scorer_run(const ScorerGroup *g, const void *opts, ScorerResult *out, int *bad, char *why,
                  size_t why_len);

#endif
