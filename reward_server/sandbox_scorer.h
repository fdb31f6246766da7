/* sandbox_scorer: the "code" scorer. A completion is a program; the
 * prompt's metadata (Prompt.meta_json, a JSON object) carries its tests;
 * the reward is the fraction of tests that pass in the sandbox
 * (reward_server/sandbox/sandbox.h), or 1/0 when all-or-nothing.
 *
 * The metadata:
 *   "tests"        required. A string: test code run after the program, as
 *                  HumanEval's `test` (which defines check(candidate));
 *                  passing means the whole program runs through, so it is
 *                  all-or-nothing by nature. Or an array of strings: each
 *                  snippet (asserts, usually) run on its own in the
 *                  program's namespace, each passing or failing by itself.
 *   "entry_point"  with string tests: the function handed to check(), as
 *                  HumanEval does ("check(" entry_point ")" is appended).
 *   "prefix"       code put before the completion; default the prompt text,
 *                  which is HumanEval's convention (the prompt is the
 *                  function's signature and docstring, the completion its
 *                  body). A chat-formatted prompt is not code: give "" (or
 *                  the imports the tests need).
 *   "stop"         strings at which the completion is cut (HumanEval's
 *                  "\ndef", "\nclass", "\nif", "\nprint" for base models).
 * A completion that holds a ``` fence is replaced by the inside of its
 * first fenced block (chat models answer in markdown). The program is then
 * prefix + completion [+ "\n" + tests + "\n" + "check(entry_point)"].
 *
 * Components: pass_rate (the fraction of tests passed) and all_pass (1 when
 * every test passed and the run finished). Reward: pass_rate, or all_pass
 * when all-or-nothing. A program that times out, runs out of memory or is
 * killed has passed what it passed before that (usually nothing). A run the
 * sandbox could not start is an error of the scorer (ERR_IO), not a zero.
 *
 * Ownership: sandbox_scorer_new's caller owns the SandboxScorer (the pool
 * with it). Threading: sandbox_scorer_run may be called from any number of
 * threads at once; each call blocks its thread until its run ends (at most
 * the sandbox's timeout), while the pool runs up to its workers at once.
 * Errors: as scorer.h says for a ScorerFn; sandbox_scorer_new logs and
 * returns NULL. */
#ifndef RLHF_SANDBOX_SCORER_H
#define RLHF_SANDBOX_SCORER_H

#include <stdbool.h>
#include <stddef.h>

#include "reward_server/sandbox/sandbox.h"
#include "reward_server/scorer.h"

#define SANDBOX_SCORER_NAME "code"

typedef struct {
    SandboxConfig sandbox;           /* the pool; sandbox.workers 0 = no code scorer */
    bool          is_all_or_nothing; /* reward = all_pass instead of pass_rate */
    bool          is_required;       /* a pool that cannot start fails the server's start */
} SandboxScorerConfig;

typedef struct SandboxScorer SandboxScorer;

/* Starts the pool (sandbox_new); hide is added to cfg's hidden paths (the
 * reward server's keys directory; NULL = none). NULL after logging. */
SandboxScorer *sandbox_scorer_new(const SandboxScorerConfig *cfg, const char *hide);
/* Stops the pool (runs in flight end as errors at once), for a server
 * shutting down with scoring threads blocked in runs. */
void sandbox_scorer_stop(SandboxScorer *s);
void sandbox_scorer_free(SandboxScorer **s);
/* The pool (borrowed), for its isolation and counters. */
const Sandbox *sandbox_scorer_sandbox(const SandboxScorer *s);

/* The ScorerFn of "code"; opts is the SandboxScorer. */
int sandbox_scorer_run(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                       size_t why_len);

/* A job built from a completion and its metadata. */
typedef struct {
    char  *code;    /* the program */
    char **tests;   /* (n_tests) snippets, for array tests */
    int    n_tests; /* 0 for string tests */
} SandboxProgram;

/* Builds the program of completion as the header says (prompt: the prompt
 * text, the default prefix). Returns 0, or ERR_FORMAT with the reason in
 * why for metadata that is not as described (bad JSON, no tests, a test or
 * entry point of the wrong type, an entry point that is not a name, more
 * than SANDBOX_MAX_TESTS tests). Caller frees out with sandbox_program_free. */
int  sandbox_program_build(const char *prompt, const char *completion, const char *meta_json,
                           SandboxProgram *out, char *why, size_t why_len);
void sandbox_program_free(SandboxProgram *p);

#endif
