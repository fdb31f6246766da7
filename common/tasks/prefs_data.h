/* prefs_data: preference data in JSONL files, in the conventions of the
 * usual tools (pairs, chat pairs, rankings of K completions), indexed in one
 * pass by common/tasks/jsonl and read back a record at a time as token ids
 * for a reward model or DPO; and files of reference completions (a prompt
 * and one completion a line) in the same forms.
 *
 * A record is one of
 *   {"prompt": P, "chosen": C, "rejected": R}                 a pair
 *   {"chosen": [...], "rejected": [...]}                     a pair whose two
 *       conversations share every message but the last, the assistant's
 *       (the shared messages are the prompt)
 *   {"prompt": P, "completions": [C1, ..., CK], "ranking": [i1, ..., iK]}
 *       K completions ranked: ranking lists indices into completions from
 *       the best to the worst (a permutation of 0..K-1), 2 <= K <=
 *       PREFS_MAX_K
 *   {"prompt": P, "completion": C}                            a reference
 *       completion (only in a file opened with PrefsOpts.reference)
 * where P is a string (the user's message) or a list of {"role", "content"}
 * messages ending with the user's, and each completion is a string (the
 * assistant's reply) or a list of messages ending with exactly one
 * assistant message; messages before that one, if any, must be the prompt's
 * own (datasets that repeat the prompt in every conversation). A pair may
 * have "margin": a number >= 0 by which chosen should beat rejected (Llama
 * 2's margin loss); the margin of a ranking's pairs is 0. Other members are
 * ignored.
 *
 * Token ids are common/tasks/render.h's: the prompt as the model sees it
 * (BOS + text for the char model; the chat template with the assistant's
 * generation prompt for a chat model), each completion encoded on its own
 * and closed by the end token (EOS; <|im_end|> for a chat model), the ids an
 * actor samples when it stops. A reward model scores prompt ++ completion at
 * its last id.
 *
 * A bad record is skipped, counted under its problem and logged as
 * "FILE:LINE: problem: detail" (jsonl.h): no prompt, chosen, rejected,
 * completions or ranking (or completion); a member of the wrong type; an
 * empty prompt or completion; a tie (two completions of one record with the
 * same text); a ranking that is not a permutation of 0..K-1, or K out of
 * range; text the tokenizer cannot take; prompt + completion longer than
 * max_ids; a margin that is negative or not finite; messages before a
 * completion that are not the prompt's. A file with more than
 * max_bad_percent bad records, or none good, is refused.
 *
 * Ownership: prefs_open's caller owns the Prefs; the tokenizer in PrefsOpts
 * is borrowed and must outlive it; a PrefsRecord owns its ids
 * (prefs_record_free). Threading: one thread per Prefs. Errors:
 * prefs_open logs and returns jsonl_open's errors, ERR_UNSUPPORTED (a BPE
 * without a ChatML template) or ERR_ARG (options); prefs_read logs and
 * returns ERR_IO or ERR_FORMAT (a file edited in place). */
#ifndef RLHF_PREFS_DATA_H
#define RLHF_PREFS_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/tasks/jsonl.h"

#define PREFS_MAX_K 16 /* completions of one ranking */

typedef enum {
    PREFS_OK = 0,
    PREFS_BAD_JSON = JSONL_BAD_JSON,
    PREFS_BAD_OBJECT = JSONL_BAD_OBJECT,
    PREFS_BAD_LINE = JSONL_BAD_LINE,
    PREFS_BAD_MISSING = JSONL_N_COMMON, /* no prompt, chosen, rejected, ... */
    PREFS_BAD_TYPE,                     /* a member of the wrong type */
    PREFS_BAD_EMPTY,                    /* an empty prompt or completion */
    PREFS_BAD_TIE,                      /* two completions with the same text */
    PREFS_BAD_RANKING,                  /* not a permutation of 0..K-1, or K out of range */
    PREFS_BAD_CHARS,                    /* text the tokenizer cannot take */
    PREFS_BAD_TOO_LONG,                 /* prompt + completion over max_ids, or too many messages */
    PREFS_BAD_MARGIN,                   /* a margin < 0 or not finite */
    PREFS_BAD_PROMPT,                   /* a completion's leading messages are not the prompt */
    PREFS_N_PROBLEMS
} PrefsProblem;

/* "missing member", "tie", ...: for logs and tests. */
const char *prefs_problem_name(PrefsProblem p);

typedef struct {
    const Tok *tok;             /* the char tokenizer; or */
    const Bpe *bpe;             /* a BPE with a ChatML template (one of the two) */
    int        max_ids;         /* prompt + each completion at most, >= 2 */
    int        max_bad_percent; /* refuse the file above this share of bad records, 0..100 */
    bool       reference;       /* records are {"prompt", "completion"}: reference completions */
} PrefsOpts;

typedef struct {
    JsonlStats file;    /* lines, good and bad records, by problem */
    uint64_t   pairs;   /* pairs in the good records: sum of C(K,2) */
    uint64_t   ranked;  /* good records that are rankings (K completions) */
    int        max_k;   /* most completions of one record */
    int        max_ids; /* longest prompt + completion */
} PrefsStats;

/* One record: a prompt and its completions, best first. */
typedef struct {
    uint64_t line;   /* 1-based line in the file */
    int     *prompt; /* (n_prompt) */
    int      n_prompt;
    int      k;                 /* completions: 2..PREFS_MAX_K, 1 for a reference */
    int     *comp[PREFS_MAX_K]; /* (n_comp[i]) completion i's ids, end token last */
    int      n_comp[PREFS_MAX_K];
    float    margin;     /* of a pair that gives one, else 0 */
    bool     has_margin; /* the record gave "margin" */
    bool     is_ranking; /* from "completions" and "ranking" */
} PrefsRecord;

typedef struct Prefs Prefs;

/* Indexes path as described at the top; 0 with *out (caller owns), or an
 * error with *out NULL (logged). */
int  prefs_open(const char *path, const PrefsOpts *opts, Prefs **out);
void prefs_free(Prefs **p);

uint64_t    prefs_size(const Prefs *p); /* good records (N) */
const char *prefs_path(const Prefs *p);
void        prefs_stats(const Prefs *p, PrefsStats *out);
/* XXH3-64 of the file's bytes as indexed. */
uint64_t prefs_fingerprint(const Prefs *p);

/* Reads record k (0 <= k < N, in file order) into *rec, which the caller
 * frees with prefs_record_free (also after a failure). Returns 0, or ERR_IO
 * / ERR_FORMAT (logged with file:line). */
int  prefs_read(Prefs *p, uint64_t k, PrefsRecord *rec);
void prefs_record_free(PrefsRecord *rec);

#endif
