/* gen: batched autoregressive generation with the KV cache, the one sampling
 * path of the codebase (actors, evaluation and the rlhf-gen command all use
 * it), recording for every generated token the log-probabilities the RL
 * learner needs.
 *
 * A Generator owns a KV cache of max_batch slots of up to max_len tokens
 * (prompt + completion) each, and its scratch; the Model is borrowed and
 * must outlive it. Generation is continuous batching: a run of any number n
 * of sequences goes through the max_batch slots, each step one model_step
 * call; when a sequence finishes, the next waiting prompt takes its slot at
 * once and its prefill rows go into the same call as the other slots'
 * decode rows, and no row is ever spent on a finished sequence. gen_run does
 * a whole run; gen_start and gen_step let the caller act between steps (the
 * actor swaps weights only when no sequence is running); gen_open and
 * gen_add let it queue more sequences into a running run, so work that
 * arrives later (the actor's next lease) takes slots as they free instead
 * of after the run drains. Ownership: the
 * caller owns the GenOutput arrays. Threading: a Generator and its Model
 * belong to one thread. Errors: ERR_RANGE for a prompt that is empty, too
 * long or holds an out-of-range id (naming the sequence in the log);
 * ERR_NONFINITE if the model produced non-finite logits. */
#ifndef RLHF_GEN_H
#define RLHF_GEN_H

#include <stdbool.h>

#include "common/nn/model.h"
#include "common/base/rng.h"
#include "common/nn/sampler.h"

/* How a completion ended: at stop_id (kept in the output), at max_new or
 * max_len, or when the caller's stop test (GenConfig.is_stop) said so. */
enum { GEN_FINISH_STOP = 1, GEN_FINISH_LENGTH = 2, GEN_FINISH_CALLER = 3 };

/* The caller's stop test, asked after every generated token other than
 * stop_id: sequence seq (0..n-1 of the run) holds the n_tokens ids tokens
 * so far, the newest last. Returning true ends it there (finish
 * GEN_FINISH_CALLER, the token kept). Runs on the generator's thread. */
typedef bool (*GenStopFn)(void *ctx, int seq, const int *tokens, int n_tokens);

/* Called once per sequence, as soon as it finishes, in the order sequences
 * finish (within one step in slot order): its tokens, log-probs, count and
 * finish reason are final in the run's GenOutput. Returning non-zero ends
 * the run at once (the sequences still running or waiting are dropped) and
 * gen_step or gen_run returns that value. */
typedef int (*GenDoneFn)(void *ctx, int seq);

typedef struct {
    SamplerConfig sampler;
    int           max_new;     /* tokens generated at most per sequence, > 0 */
    int           stop_id;     /* token that ends a completion (kept in the output), -1 = none */
    GenStopFn     is_stop;     /* the caller's stop test (e.g. stop strings), NULL = none */
    void         *stop_ctx;    /* is_stop's context */
    bool          is_rng_each; /* the run's rng is an array: sequence i draws from rng[i] */
    GenDoneFn     on_done;     /* told when a sequence finishes, NULL = none */
    void         *done_ctx;    /* on_done's context */
} GenConfig;

/* Caller-allocated results for n sequences. */
typedef struct {
    int   *tokens;       /* (n, max_new) generated ids, stop token included */
    float *logp_sampled; /* (n, max_new) log-prob under the distribution drawn from */
    float *logp_full;    /* (n, max_new) log-prob under softmax(logits / temperature) */
    int   *n_tokens;     /* (n) how many ids each completion holds */
    int   *finish;       /* (n) GEN_FINISH_STOP, GEN_FINISH_LENGTH or GEN_FINISH_CALLER */
} GenOutput;

/* Slot use, counted since gen_new. A step is one model_step call; each
 * step the max_batch slots could each have produced one token, and
 * rows_used of them did (one per running sequence, a slot whose prompt was
 * prefilled in that step included). slot_steps - rows_used are wasted
 * slots: steps on which a slot held no sequence. */
typedef struct {
    uint64_t steps;        /* model_step calls */
    uint64_t slot_steps;   /* max_batch x steps */
    uint64_t rows_used;    /* tokens sampled, one per running slot per step */
    uint64_t prefill_rows; /* prompt tokens fed */
} GenStats;

typedef struct Generator Generator;

Generator *gen_new(Model *m, int max_batch, int max_len);
void       gen_free(Generator **g);

/* Generates a completion for each of n >= 1 prompts (prompts[i] of
 * prompt_lens[i] ids), n of any size: gen_start, then gen_step admitting
 * prompts until none is pending. A completion stops at stop_id, at max_new
 * tokens, or when prompt + completion reaches max_len (finish = LENGTH), or
 * when cfg->is_stop says so. Prompts take free slots in order 0..n-1, so
 * with n <= max_batch all start together. Randomness comes only from rng:
 * one generator the running sequences draw from in turn (slot order), or
 * with cfg->is_rng_each n of them, one per sequence, so that a sequence's
 * completion does not depend on the others in the run or on when it got a
 * slot (up to the batched arithmetic's rounding). Returns 0, an error as
 * above, or cfg->on_done's non-zero value. */
int gen_run(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
            const int *prompt_lens, Rng *rng, GenOutput *out);

/* Starts a run of n >= 1 sequences (arguments as gen_run's) without
 * stepping it: gen_open with cap n, then gen_add of all n (ERR_RANGE as
 * above, and then nothing is queued). cfg, prompts, prompt_lens, rng and out are
 * borrowed until the run ends. A run still going is dropped. */
int gen_start(Generator *g, const GenConfig *cfg, int n, const int *const *prompts,
              const int *prompt_lens, Rng *rng, GenOutput *out);

/* Opens a run over caller arrays of cap sequence places: prompts and
 * prompt_lens of cap entries, rng of cap generators when cfg->is_rng_each,
 * out sized for cap sequences; nothing is queued yet (gen_add). Sequence
 * numbers given to cfg->is_stop and cfg->on_done are places 0..cap-1. All
 * arguments are borrowed until the run ends; a run still going is
 * dropped. Every sequence of the run shares cfg (sampler, max_new, stop).
 * Returns 0. */
int gen_open(Generator *g, const GenConfig *cfg, int cap, const int *const *prompts,
             const int *prompt_lens, Rng *rng, GenOutput *out);

/* Queues places first..first+n-1 of the open run behind the waiting ones
 * (they take free slots in queue order at the next admitting gen_step).
 * The caller has filled their prompts, prompt_lens and rng; their outputs
 * are reset. A place may be queued again once its sequence is done (its
 * on_done told), so a caller can recycle a bounded set of places; queueing
 * a place still pending, or beyond cap, is a programming error (CHECK).
 * May be called between steps or from cfg->on_done. Returns 0, or
 * ERR_RANGE for a bad prompt (logged) and then none of the n is queued. */
int gen_add(Generator *g, int first, int n);

/* One step of the run: if is_admit, waiting prompts first take the free
 * slots (in prompt order); then one model_step feeds each new prompt's
 * rows and each running sequence's last token, and a token is sampled for
 * every occupied slot; finished sequences free their slot and are told to
 * cfg->on_done. With nothing running and is_admit false, or no run, does
 * nothing. Returns 0, ERR_NONFINITE (the run ends), or on_done's non-zero
 * value (the run ends). */
int gen_step(Generator *g, bool is_admit);

/* Sequences of the current run holding a slot. */
int gen_running(const Generator *g);
/* Sequences of the current run not finished yet: running or waiting. */
int gen_pending(const Generator *g);
/* Sequences of the current run queued but not holding a slot yet. */
int gen_waiting(const Generator *g);
/* Slots holding no sequence (max_batch - gen_running). */
int gen_free_slots(const Generator *g);

/* Slot-use counters since gen_new (see GenStats). */
void gen_stats(const Generator *g, GenStats *out);

#endif
