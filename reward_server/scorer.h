/* scorer: the reward server's registry of scorers, looked up by name (a
 * prompt's `task`), and the built-in ones.
 *
 * A scorer turns one completion, as text, into a total reward and a few
 * named components (e.g. correct, format). It sees the prompt text, the
 * completion text without the stop token, the reference answer and whether
 * the completion was cut off by the length cap.
 *
 * Ownership: scorer_registry_new's caller owns the registry; names are
 * copied, opts are borrowed and must outlive the registry. Scorer pointers
 * from scorer_find are borrowed from the registry. Threading: register
 * everything first; after that the registry is read-only and any number of
 * threads may look up and run scorers concurrently, so a ScorerFn must be
 * thread-safe (pure, or locking on its own). Errors: registration errors
 * return ERR_ARG and are logged; scorer_run returns the scorer's error with
 * the reason in why and logs nothing, since the input came from a peer. */
#ifndef RLHF_SCORER_H
#define RLHF_SCORER_H

#include <stdbool.h>
#include <stddef.h>

#define SCORER_NAME_MAX 32      /* bytes of a scorer or component name, NUL included */
#define SCORER_MAX_COMPONENTS 8 /* named components one result may carry */
#define SCORER_MAX 16           /* scorers in one registry */

typedef struct {
    const char *prompt;       /* prompt text, special tokens removed */
    const char *completion;   /* completion text, stop token and anything after it removed */
    const char *answer;       /* reference answer carried by the prompt ("" if none) */
    const char *meta_json;    /* the prompt's metadata, a JSON object ("" or NULL if none) */
    bool        is_truncated; /* the completion hit the length cap (finish LENGTH) */
} ScorerInput;

typedef struct {
    char  name[SCORER_NAME_MAX];
    float value;
} ScorerComponent;

typedef struct {
    float           reward; /* total reward, finite */
    int             n_components;
    ScorerComponent components[SCORER_MAX_COMPONENTS];
} ScorerResult;

/* Scores in into out (which the caller zeroed). opts is what was given to
 * scorer_register. Returns 0, or a negative ERR_* with a reason in why
 * (why_len bytes) when the input cannot be scored (e.g. no answer). */
typedef int (*ScorerFn)(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                        size_t why_len);

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

/* Runs s on in. Clears out first; after the scorer returns 0 checks that the
 * reward and every component are finite and the components are named
 * (ERR_NONFINITE / ERR_FORMAT otherwise, a bug of the scorer reported like
 * bad input so that one scorer cannot take the server down). */
int scorer_run(const Scorer *s, const ScorerInput *in, ScorerResult *out, char *why,
               size_t why_len);

/* Options of the built-in "arith" scorer (common/tasks/task.h's arithmetic). */
typedef struct {
    float format_bonus; /* added to the reward when the completion is an integer, >= 0 */
} ScorerArithOpts;

#define SCORER_ARITH_DEFAULTS ((ScorerArithOpts){.format_bonus = 0.0f})

/* The "arith" scorer: components correct (the completion is exactly the
 * answer) and format (the completion is an optional '-' then digits), both
 * from task_score; reward = correct + format_bonus * format. A truncated
 * completion never finished its answer, so it gets 0 for both. An empty
 * answer is ERR_ARG (the prompt cannot be verified). opts: ScorerArithOpts,
 * NULL = defaults. */
int scorer_arith(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                 size_t why_len);

/* The "arith_chat" scorer (common/tasks/chat_task.h, for instruct models):
 * components correct (the last integer of the completion is the answer,
 * surrounding words allowed) and format (the completion is just the number);
 * reward = correct + CHAT_TASK_FORMAT_BONUS * format. Unlike "arith", a
 * truncated completion can still be correct (never well-formed): see
 * chat_task_score. An empty answer is ERR_ARG. opts unused. */
int scorer_arith_chat(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                      size_t why_len);

/* Registers every built-in scorer: "arith" with arith_opts (borrowed, NULL =
 * defaults) and "arith_chat". Returns 0 or scorer_register's error. */
int scorer_register_builtins(ScorerRegistry *r, const ScorerArithOpts *arith_opts);

#endif
