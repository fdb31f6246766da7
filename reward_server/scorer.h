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
 * reward_new (the sandboxed "code" scorer). A scorer registered under the
 * name of a built-in that has no function here (e.g. "code", run in a
 * sandbox) takes over that name and keeps the built-in's record check.
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

ScorerRegistry *scorer_registry_new(void);
void            scorer_registry_free(ScorerRegistry **r);

/* Adds fn under name (1..SCORER_NAME_MAX-1 bytes of [a-z0-9_-]). Returns 0,
 * or ERR_ARG (logged) for a bad or duplicate name or a full registry. */
int scorer_register(ScorerRegistry *r, const char *name, ScorerFn fn, const void *opts);
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
