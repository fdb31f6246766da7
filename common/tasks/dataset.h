/* dataset: prompt datasets in JSONL files (one JSON object a line), indexed
 * in one pass and read back a record at a time, and the shuffled order of a
 * training stream over them.
 *
 * A record:
 *   "prompt"    string: the user's text; for a chat model one user message
 *               rendered with its chat template (and default system prompt),
 *               or with is_raw the text itself (a completion prompt: code to
 *               continue); for the char model the text itself, BOS first
 *   "messages"  or [{"role": "system"|"user"|"assistant", "content": string},
 *               ...], the last one the user's: a conversation for a chat model
 *   "answer"    optional string or number (a number is written out: 82, 0.5)
 *   "task"      optional scorer spec (common/tasks/score.h), e.g. "number" or
 *               "boxed:0.9,format_answer_tag:0.1"; default DatasetOpts.default_task
 *   "meta"      optional JSON object handed to the scorer as text (e.g. the
 *               unit tests of a code task: {"tests": "...", "entry_point": "f"})
 * Other members are ignored; blank lines are skipped; a UTF-8 byte-order mark
 * and CRLF line ends are accepted.
 *
 * A bad record is skipped, counted by problem (DatasetProblem) and logged as
 * "FILE:LINE: problem: detail" (the first DATASET_LOG_BAD; then a count by
 * problem): a line that is not JSON or not an object, longer than
 * DATASET_MAX_LINE; no prompt or messages (or both); a member of the wrong
 * type; an empty prompt; a prompt longer than max_prompt_ids once rendered and
 * tokenised, an answer over DATASET_MAX_ANSWER or meta over DATASET_MAX_META
 * bytes; text the tokenizer cannot take (a character the char tokenizer lacks,
 * a byte the BPE has no token for: common/tasks/render.h); an unknown or malformed task, or
 * none; a record its scorer cannot score (a "number" answer that is not a
 * number: score_spec_check_record). The whole file is refused when more than
 * max_bad_percent of its records are bad, or none is good.
 *
 * The file's lines, its indexing and reading back are common/tasks/jsonl's:
 * opening reads the file once in blocks, checking every record, and keeps 16
 * bytes per good record (offset, length, line); dataset_read reads one record
 * back with pread and renders it again. The file stays open, so a file
 * replaced (renamed over) or removed during a run is not seen; one edited in
 * place is (a record that no longer parses is an error; dataset_fingerprint
 * changes, which a resumed learner checks).
 *
 * Ownership: dataset_open's caller owns the Dataset; the tokenizer and the
 * lookup context in DatasetOpts are borrowed and must outlive it; a
 * DatasetRecord owns its strings and ids (dataset_record_free). Threading:
 * one thread per Dataset (dataset_read shares a scratch buffer).
 * Errors: dataset_open logs and returns ERR_NOTFOUND / ERR_IO (the file),
 * ERR_FORMAT (mostly bad, or no good record) or ERR_ARG (options);
 * dataset_read logs and returns ERR_IO or ERR_FORMAT (edited in place). */
#ifndef RLHF_DATASET_H
#define RLHF_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/tasks/jsonl.h"
#include "common/tasks/render.h"
#include "common/tasks/score.h"

#define DATASET_MAX_LINE JSONL_MAX_LINE /* bytes of one record's line */
#define DATASET_MAX_ANSWER 4096     /* bytes of an answer, NUL included (the wire's text bound) */
#define DATASET_MAX_META (64 << 10) /* bytes of meta as compact JSON, NUL included */
#define DATASET_MAX_MESSAGES RENDER_MAX_MESSAGES /* messages of one record */
#define DATASET_MAX_RECORDS JSONL_MAX_RECORDS    /* good records of one file */
#define DATASET_LOG_BAD JSONL_LOG_BAD            /* bad records logged one by one */

typedef enum {
    DATASET_OK = 0,
    DATASET_BAD_JSON,      /* not JSON */
    DATASET_BAD_OBJECT,    /* JSON, but not an object */
    DATASET_BAD_LINE,      /* longer than DATASET_MAX_LINE */
    DATASET_BAD_NO_PROMPT, /* neither prompt nor messages, or both */
    DATASET_BAD_TYPE,      /* a member of the wrong type */
    DATASET_BAD_EMPTY,     /* an empty prompt or user message */
    DATASET_BAD_TOO_LONG,  /* the rendered prompt, the answer or meta too long */
    DATASET_BAD_CHARS,     /* text the tokenizer cannot take */
    DATASET_BAD_TASK,      /* no task, or an unknown or malformed one */
    DATASET_BAD_SCORER,    /* the task's scorer cannot score the record */
    DATASET_N_PROBLEMS
} DatasetProblem;

/* "not JSON", "missing prompt", ...: for logs and tests. */
const char *dataset_problem_name(DatasetProblem p);

typedef struct {
    const Tok    *tok;             /* the char tokenizer: plain prompts, BOS first; or */
    const Bpe    *bpe;             /* a BPE with a ChatML template: chat prompts (one of the two) */
    int           max_prompt_ids;  /* a longer rendered prompt is a bad record, >= 1 */
    const char   *default_task;    /* task of records without one; NULL = such records are bad */
    ScoreLookupFn lookup;          /* resolves task specs; NULL = score_builtin */
    const void   *lookup_ctx;      /* lookup's context */
    int           max_bad_percent; /* refuse the file above this share of bad records, 0..100 */

    /* With bpe: a "prompt" tokenised as it is, without the template (BOS
     * when the model adds one; no special tokens read from the text);
     * "messages" records are bad. */
    bool is_raw;
} DatasetOpts;

typedef struct {
    uint64_t lines; /* lines read, blank ones included */
    uint64_t blank; /* blank lines skipped */
    uint64_t good;  /* records kept */
    uint64_t bad;   /* records refused */
    uint64_t bad_by[DATASET_N_PROBLEMS];
    uint64_t bytes; /* size of the file */
} DatasetStats;

/* One record, rendered. */
typedef struct {
    uint64_t  line; /* 1-based line in the file */
    int      *ids;  /* (n_ids) the rendered prompt's token ids */
    int       n_ids;
    char     *answer; /* "" when none */
    char     *task;   /* the record's task, or the default */
    char     *meta;   /* compact JSON object, "" when none */
    ScoreSpec spec;   /* task, parsed */
} DatasetRecord;

typedef struct Dataset Dataset;

/* Indexes path as described at the top; 0 with *out (caller owns), or an
 * error with *out NULL (logged). */
int  dataset_open(const char *path, const DatasetOpts *opts, Dataset **out);
void dataset_free(Dataset **d);

/* Good records (N). */
uint64_t    dataset_size(const Dataset *d);
const char *dataset_path(const Dataset *d);
void        dataset_stats(const Dataset *d, DatasetStats *out);
/* XXH3-64 of the file's bytes as indexed. */
uint64_t dataset_fingerprint(const Dataset *d);
/* The longest rendered prompt, in ids. */
int dataset_max_ids(const Dataset *d);

/* Reads and renders record k (0 <= k < N, in file order) into *rec, which
 * the caller frees with dataset_record_free (also after a failure). Returns
 * 0, or ERR_IO / ERR_FORMAT (logged with file:line) when it cannot be read
 * or no longer parses. */
int  dataset_read(Dataset *d, uint64_t k, DatasetRecord *rec);
void dataset_record_free(DatasetRecord *rec);

/* The record of position i of a training stream over n records shuffled
 * with seed: epoch i / n visits every record once, in an order of its own (a
 * keyed pseudo-random permutation of 0..n-1, computed without a table, so
 * any position can be asked for at any time). n >= 1. */
uint64_t dataset_shuffle(uint64_t n, uint64_t seed, uint64_t i);

#endif
