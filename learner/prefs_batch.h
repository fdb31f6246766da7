/* prefs_batch: preference records packed into one right-padded batch, the
 * layout the reward-model and DPO trainers share: one row per completion
 * (prompt ++ completion), the pairs between rows, and what each trainer
 * reads from a forward pass over it.
 *
 * Row layout: positions 0..len-1 hold prompt ++ completion (len =
 * n_prompt + n_comp, the completion closed by its end token), then
 * padding (id 0, never seen by real positions under the causal mask). T is
 * the longest row's len. Position t predicts token t+1: targets[t] is the
 * next id and comp_mask[t] is 1 where that id is a completion token, so the
 * row's sequence log-prob is the sum of logp over comp_mask (DPO). A reward
 * model reads its scalar head at the row's last position, last[b] = len-1,
 * the completion's end token (where an actor's stopped sample ends too).
 *
 * Pairs: a record of K completions (best first) gives rows r0..r0+K-1 and
 * its C(K,2) pairs (prefs_ranking_pairs: weight 1/C(K,2), so every record
 * counts once); a pair's margin is its record's, or the default when the
 * record gives none.
 *
 * Ownership: records are borrowed for the call; the batch owns its arrays
 * (prefs_batch_free). Threading: none. Errors: ERR_RANGE (logged, naming
 * the record's line) for a row longer than T_cap. */
#ifndef RLHF_PREFS_BATCH_H
#define RLHF_PREFS_BATCH_H

#include "common/tasks/prefs_data.h"
#include "learner/algo/prefs.h"

typedef struct {
    int        B, T;      /* rows, positions per row */
    int        n_records; /* records packed */
    int       *tokens;    /* (B,T) */
    int       *targets;   /* (B,T) */
    float     *comp_mask; /* (B,T) 1 where the target is a completion token */
    float     *no_mask;   /* (B,T) zeros: a forward with no vocabulary work (reward model) */
    int       *last;      /* (B) the row's last position */
    int       *record;    /* (B) the record a row belongs to, 0..n_records-1 */
    int       *rank;      /* (B) its place among the record's completions, 0 = best */
    PrefsPair *pairs;     /* (P) */
    int        P;
} PrefsBatch;

/* Packs n records (each with k >= 1 completions) into b; margin_default is
 * the margin of pairs whose record gives none (>= 0). Returns 0, or
 * ERR_RANGE for a row longer than T_cap (b left empty). */
int  prefs_batch_pack(PrefsBatch *b, const PrefsRecord *recs, int n, int T_cap,
                      float margin_default);
void prefs_batch_free(PrefsBatch *b);

/* The sequence log-probs of the rows: out[b] = sum_t comp_mask[b,t] *
 * logp[b,t] in double, from logp (B,T) of a forward over tokens/targets. */
void prefs_batch_seq_logp(const PrefsBatch *b, const float *logp, double *out);

#endif
