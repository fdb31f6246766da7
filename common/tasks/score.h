/* score: how one completion is scored, shared by the reward server (which
 * adds its own scorers, e.g. sandboxed code, in reward_server/scorer.h) and
 * the learner's held-out evaluation: the input and result of a scorer, the
 * table of built-in scorers, and scorer specs: a weighted sum of scorers,
 * named by a prompt's task or a run's flag.
 *
 * Built-in scorers (score_builtin; each reward is 0 or 1 unless said):
 *   arith              the char task: the completion is exactly the answer
 *                      (components correct, format; + format_bonus * format)
 *   arith_chat         the chat task: the last integer is the answer,
 *                      * (1 + 0.2 format) (common/tasks/chat_task.h)
 *   gold_arith         the preference task's hidden judge (common/tasks/gold.h):
 *                      exp(-|x - a| / (1 + |a|/10)) for an integer x, else -1
 *                      (components correct, gold)
 *   exact              the answer text (the last <answer> block, else the
 *                      whole completion) equals the answer after
 *                      verify_normalize (case, whitespace, punctuation)
 *   number             the answer text's last number is the answer's within
 *                      rel_tol / abs_tol (meta "rel_tol", "abs_tol"; default
 *                      1e-6 / 1e-9)
 *   choice             the letter chosen (verify_choice) is the answer's, A-E
 *   boxed              the last \boxed{...} matches the answer (verify_boxed_match)
 *   regex              the completion contains a match of meta "regex", else of
 *                      the answer, a POSIX extended regular expression
 *   format_answer_tag  one <answer>...</answer> block, nothing after it
 *   format_think       <think>...</think> then <answer>...</answer>, nothing else
 *   code               the record's unit tests in a sandbox: run by the reward
 *                      server only (no function here); records need meta "tests"
 *                      as reward_server/sandbox_scorer.h reads it (checked here)
 *   rm                 a learned reward model's score of prompt + completion,
 *                      any real number: run by the reward server only, from
 *                      the token ids (reward_server/rm_scorer.h); component rm
 * The answer scorers report one component, correct; the format ones one,
 * format; a truncated completion (hit the length cap) never has the format.
 *
 * Answers for majority voting (ScoreDef.extract, score_spec_extract): the
 * answer a scorer reads, as a key that is equal for answers it reads alike:
 *   arith       the completion (none when truncated)
 *   arith_chat  the last integer, in decimal
 *   exact       the answer text after verify_normalize (none when empty)
 *   number      the answer text's last number, printed with %.17g
 *               (numbers within the tolerance but not equal are different keys)
 *   choice      the letter chosen
 *   boxed       the last \boxed{...} content without whitespace
 * The format scorers, regex and code read no answer.
 *
 * Spec syntax:  spec = term *("," term);  term = name [":" weight]
 * with optional spaces around names and weights; a weight is a finite
 * decimal number, |w| <= SCORE_WEIGHT_MAX (negative: a penalty; 0: a
 * monitor, reported as its component but adding nothing, e.g. a hidden gold
 * reward beside the learned one; not every weight 0); at most
 * SCORE_MAX_TERMS terms, each scorer once. A bare name ("boxed") is
 * that scorer as it is: its reward and its components. Anything else
 * ("boxed:0.9,format_answer_tag:0.1", or "boxed:1") is the weighted sum of
 * the terms' rewards, with one component per term, named for its scorer, the
 * term's unweighted reward.
 *
 * A completion is counted correct (accuracy) when its component "correct" is
 * >= 0.5, or without one when its first component is: for a sum, the first
 * term.
 *
 * Ownership: ScoreDefs are borrowed (the built-in table is static); a
 * ScoreSpec points at the defs its lookup returned, which must outlive it.
 * Threading: everything is thread-safe (scorers are pure; regex keeps one
 * compiled pattern per thread). Errors: functions return 0 or a negative
 * ERR_* with the reason in why and log nothing, since the text may come from
 * a peer or a user's file. */
#ifndef RLHF_SCORE_H
#define RLHF_SCORE_H

#include <stdbool.h>
#include <stddef.h>

#define SCORE_NAME_MAX 32       /* bytes of a scorer or component name, NUL included */
#define SCORE_MAX_COMPONENTS 8  /* named components one result may carry */
#define SCORE_MAX_TERMS 8       /* terms of a spec (one component each) */
#define SCORE_SPEC_MAX 128      /* bytes of a spec, NUL included (a task on the wire) */
#define SCORE_WEIGHT_MAX 1000.0 /* |weight| of a term at most */

typedef struct {
    const char *prompt;       /* prompt text, special tokens removed */
    const char *completion;   /* completion text, stop token and anything after it removed */
    const char *answer;       /* reference answer carried by the prompt ("" if none) */
    const char *meta_json;    /* the record's metadata, a JSON object as text ("" or NULL: none) */
    bool        is_truncated; /* the completion hit the length cap (finish LENGTH) */
} ScoreInput;

typedef struct {
    char  name[SCORE_NAME_MAX];
    float value;
} ScoreComponent;

typedef struct {
    float          reward; /* total reward, finite */
    int            n_components;
    ScoreComponent components[SCORE_MAX_COMPONENTS];
} ScoreResult;

/* Scores in into out (which the caller zeroed). opts is the def's. Returns
 * 0, or a negative ERR_* with a reason in why (why_len bytes) when the input
 * cannot be scored (e.g. no answer). */
typedef int (*ScoreFn)(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                       size_t why_len);
/* Whether a dataset record (its answer, "" if none; its meta, "" if none)
 * can be scored; 0 or ERR_ARG with the reason in why. */
typedef int (*ScoreCheckFn)(const char *answer, const char *meta, char *why, size_t why_len);
/* The answer the scorer reads from in's completion, as a voting key (see
 * the top): writes it NUL-terminated into out (cap > 0 bytes, cut to
 * cap - 1) and returns true, or returns false when the completion holds
 * none. Pure. */
typedef bool (*ScoreExtractFn)(const ScoreInput *in, char *out, size_t cap);

typedef struct {
    const char  *name;  /* [a-z0-9_-], 1..SCORE_NAME_MAX-1 bytes */
    ScoreFn      fn;    /* NULL: only the reward server runs it (score_spec_is_local) */
    const void  *opts;  /* fn's options, NULL = defaults */
    ScoreCheckFn check; /* what a record needs, NULL = nothing */
    const char  *about; /* one line for --help and logs */

    /* The answer it reads, for voting; NULL = none (format, regex, code). */
    ScoreExtractFn extract;
} ScoreDef;

/* Finds a scorer by name: ctx is the lookup's own (a registry). */
typedef const ScoreDef *(*ScoreLookupFn)(const void *ctx, const char *name);

/* The names of the built-in rule scorers, in the table's order, for the
 * --help of every program that takes a spec ("rm", the hosted reward model,
 * is the table's last entry, named where a program can host or pass it).
 * The self-test keeps this list and the table the same. */
#define SCORE_RULE_NAMES                                                                           \
    "arith, arith_chat, exact, number, choice, boxed,\nregex, format_answer_tag, format_think, "   \
    "code, gold_arith, gold_chat"

/* The built-in table: score_builtin_count entries, score_builtin_at(i). */
int             score_builtin_count(void);
const ScoreDef *score_builtin_at(int i);
/* The built-in named name, or NULL; a ScoreLookupFn (ctx unused). */
const ScoreDef *score_builtin(const void *ctx, const char *name);

/* Whether name is 1..SCORE_NAME_MAX-1 bytes of [a-z0-9_-]. */
bool score_name_ok(const char *name);

typedef struct {
    const ScoreDef *def;
    float           weight;
} ScoreTerm;

typedef struct {
    int       n_terms;
    bool      is_bare; /* one scorer, no weight: its own reward and components */
    ScoreTerm terms[SCORE_MAX_TERMS];
} ScoreSpec;

/* Parses spec text (syntax at the top), resolving each name with lookup.
 * Returns 0, or ERR_ARG with why naming the problem (syntax, an unknown
 * scorer with the ones lookup knows when it is score_builtin, a bad or
 * repeated term). */
int score_spec_parse(const char *text, ScoreLookupFn lookup, const void *ctx, ScoreSpec *out,
                     char *why, size_t why_len);
/* Whether every term has a function here (else the reward server alone can
 * score it). */
bool score_spec_is_local(const ScoreSpec *s);
/* Every term's record check; 0 or the first failure (why names the term). */
int score_spec_check_record(const ScoreSpec *s, const char *answer, const char *meta, char *why,
                            size_t why_len);
/* Runs one scorer: clears out, runs def->fn, then checks that the reward and
 * every component are finite and the components named (ERR_NONFINITE /
 * ERR_FORMAT otherwise: a bug of the scorer reported like bad input, so that
 * one scorer cannot take a server down). ERR_UNSUPPORTED for a def without a
 * function. */
int score_run(const ScoreDef *def, const ScoreInput *in, ScoreResult *out, char *why,
              size_t why_len);
/* Runs a spec (see the top): 0 or the first term's error. */
int score_spec_run(const ScoreSpec *s, const ScoreInput *in, ScoreResult *out, char *why,
                   size_t why_len);
/* score_spec_run where some terms were scored already (by a scorer that
 * takes a whole group at once, such as the reward model): given[k], when
 * given and non-NULL, is term k's result, checked as score_run checks a
 * scorer's instead of running the term. */
int score_spec_run_given(const ScoreSpec *s, const ScoreInput *in, const ScoreResult *const *given,
                         ScoreResult *out, char *why, size_t why_len);
/* Whether a result counts as correct (see the top). */
bool score_is_correct(const ScoreResult *r);
/* The first term of s whose scorer reads an answer (has extract), or NULL
 * when none does: what majority voting over s compares. */
const ScoreDef *score_spec_extractor(const ScoreSpec *s);
/* The answer of in by score_spec_extractor(s) into out (as ScoreExtractFn);
 * false when s has no extractor or the completion holds no answer. */
bool score_spec_extract(const ScoreSpec *s, const ScoreInput *in, char *out, size_t cap);

/* Options of the built-in "arith" scorer. */
typedef struct {
    float format_bonus; /* added to the reward when the completion is an integer, >= 0 */
} ScoreArithOpts;

#define SCORE_ARITH_DEFAULTS ((ScoreArithOpts){.format_bonus = 0.0f})

/* The "arith" scorer: components correct (the completion is exactly the
 * answer) and format (an optional '-' then digits), both from task_score;
 * reward = correct + format_bonus * format. A truncated completion never
 * finished its answer: 0 for both. opts: ScoreArithOpts, NULL = defaults. */
int score_arith(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                size_t why_len);
/* The "arith_chat" scorer: chat_task_score's correct and format, reward
 * chat_task_reward. opts unused. */
int score_arith_chat(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                     size_t why_len);

#endif
