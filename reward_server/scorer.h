/* scorer: the reward server's registry of scorers, looked up by name, and
 * the scorer specs a prompt's task (or the server's --scorer) names:
 * "boxed", or a weighted sum such as "boxed:0.9,format_answer_tag:0.1"
 * (syntax, built-ins and the meaning of components in common/tasks/score.h).
 *
 * A scorer turns one completion, as text, into a total reward and a few
 * named components (e.g. correct, format). It sees the prompt text, the
 * completion text without the stop token, the reference answer, the
 * record's metadata (JSON text, e.g. unit tests) and whether the completion
 * was cut off by the length cap.
 *
 * The registry holds every built-in scorer that runs in-process
 * (scorer_register_builtins) and the reward server's own, registered by
 * reward_new (the sandboxed "code" scorer, the reward model "rm"). A scorer
 * registered under the name of a built-in that has no function here (e.g.
 * "code", run in a sandbox) takes over that name and keeps the built-in's
 * record check.
 *
 * A group scorer (scorer_register_group: the reward model) scores all the
 * completions of a group at once from their token ids, not one text at a
 * time: the reward server runs it once per group for the term of the spec
 * that names it and passes its results to score_spec_run_given.
 *
 * Ownership: scorer_registry_new's caller owns the registry; names are
 * copied, opts are borrowed and must outlive the registry. Scorer pointers
 * from scorer_find and specs from scorer_resolve point into the registry.
 * Threading: register everything first; after that the registry is
 * read-only and any number of threads may resolve and run scorers
 * concurrently, so a ScorerFn must be thread-safe (pure, or locking on its
 * own). Errors: registration errors return ERR_ARG and are logged;
 * scorer_resolve and the runs return the error with the reason in why and
 * log nothing, since the input came from a peer. */
#ifndef RLHF_SCORER_H
#define RLHF_SCORER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tasks/score.h"

#define SCORER_NAME_MAX SCORE_NAME_MAX             /* bytes of a name, NUL included */
#define SCORER_MAX_COMPONENTS SCORE_MAX_COMPONENTS /* named components one result may carry */
#define SCORER_MAX 32                              /* scorers in one registry */

typedef ScoreInput     ScorerInput;
typedef ScoreComponent ScorerComponent;
typedef ScoreResult    ScorerResult;
/* Scores in into out (which the caller zeroed). opts is what was given to
 * scorer_register. Returns 0, or a negative ERR_* with a reason in why
 * (why_len bytes) when the input cannot be scored (e.g. no answer). */
typedef ScoreFn ScorerFn;

typedef struct ScorerRegistry ScorerRegistry;
typedef struct Scorer         Scorer;

/* A group as a group scorer sees it: ids as the actor fed and sampled them. */
typedef struct {
    const int32_t        *prompt;       /* (n_prompt) the prompt's ids, BOS first */
    size_t                n_prompt;     /* >= 1 */
    int                   n;            /* completions, >= 1 */
    const int32_t *const *completions;  /* (n) each completion's ids as sampled */
    const size_t         *n_tokens;     /* (n) */
    const bool           *is_truncated; /* (n) the completion hit the length cap */
    int                   stop_id;      /* the id that ends a completion (-1: none) */
} ScorerGroup;

/* Scores the n completions of g into out[0..n) (zeroed by the caller).
 * opts is what was given to scorer_register_group. Returns 0, or a negative
 * ERR_* with the reason in why when a completion cannot be scored: then
 * *bad is its index (or -1 when the group as a whole cannot be). Must be
 * thread-safe. */
typedef int (*ScorerGroupFn)(const ScorerGroup *g, const void *opts, ScorerResult *out, int *bad,
                             char *why, size_t why_len);

ScorerRegistry *scorer_registry_new(void);
void            scorer_registry_free(ScorerRegistry **r);

/* Adds fn under name (1..SCORER_NAME_MAX-1 bytes of [a-z0-9_-]). Returns 0,
 * or ERR_ARG (logged) for a bad or duplicate name or a full registry. */
int scorer_register(ScorerRegistry *r, const char *name, ScorerFn fn, const void *opts);
/* Adds a group scorer under name, as scorer_register. */
int scorer_register_group(ScorerRegistry *r, const char *name, ScorerGroupFn fn, const void *opts);
/* The group function of the scorer whose def d is (a term of a spec that
 * scorer_resolve resolved against r), with its opts into *opts; NULL for a
 * scorer of one completion. */
ScorerGroupFn scorer_group_fn(const ScorerRegistry *r, const ScoreDef *d, const void **opts);
/* The scorer of that name, or NULL (also for an empty name: a prompt
 * must name its task; none is scored by a default). */
const Scorer *scorer_find(const ScorerRegistry *r, const char *name);
const char   *scorer_name(const Scorer *s);
/* Writes the registered names, comma-separated, into buf. */
void scorer_list(const ScorerRegistry *r, char *buf, size_t cap);

/* Runs s on in (score_run: clears out first; a non-finite reward or
 * component, or a nameless component, is ERR_NONFINITE / ERR_FORMAT). */
int scorer_run(const Scorer *s, const ScorerInput *in, ScorerResult *out, char *why,
               size_t why_len);

/* A ScoreLookupFn over a registry (ctx: the ScorerRegistry). */
const ScoreDef *scorer_lookup(const void *ctx, const char *name);
/* Parses a task (a scorer name or a spec) against the registry into spec.
 * Returns 0 or ERR_ARG with why (naming the registered scorers when a name
 * is unknown). */
int scorer_resolve(const ScorerRegistry *r, const char *task, ScoreSpec *spec, char *why,
                   size_t why_len);

typedef ScoreArithOpts ScorerArithOpts;
#define SCORER_ARITH_DEFAULTS SCORE_ARITH_DEFAULTS

/* Registers every built-in scorer that runs here ("arith" with arith_opts,
 * borrowed, NULL = defaults). Returns 0 or scorer_register's error. */
int scorer_register_builtins(ScorerRegistry *r, const ScorerArithOpts *arith_opts);

#endif
