/* jsonl: what every reader of JSONL input shares (prompt datasets, preference
 * data): a file indexed in one pass, each record checked by the reader's own
 * function and kept as 16 bytes (offset, length, line), bad records counted
 * by problem and named by file:line, a mostly-bad file refused whole, and a
 * record read back with pread and parsed again.
 *
 * Lines: '\n' ends a line and a '\r' before it is dropped; a UTF-8
 * byte-order mark opening the file is skipped; a line of only spaces and
 * tabs is blank, counted and skipped; a last line without '\n' is a line.
 * Every other line is a record: it must be JSON (duplicate keys and NUL in
 * strings refused) whose top level is an object, at most JSONL_MAX_LINE - 1
 * bytes; then the reader's check function (JsonlCheckFn) decides.
 *
 * A bad record is skipped, counted under its problem and logged as
 * "FILE:LINE: problem: detail" (the first JSONL_LOG_BAD of a file, then a
 * count by problem). jsonl_open refuses the whole file when more than
 * max_bad_percent of its records are bad, or none is good.
 *
 * Memory: opening reads the file in blocks of 2 * JSONL_MAX_LINE bytes and
 * keeps 16 bytes per good record. The file stays open, so a file replaced
 * (renamed over) or removed during a run is not seen; one edited in place
 * is (a record that no longer parses is an error, and jsonl_fingerprint
 * differs).
 *
 * Ownership: jsonl_open's caller owns the Jsonl; the options' tables and
 * context are borrowed and must outlive it; jsonl_read's object is the
 * caller's (json_decref). Threading: one thread per Jsonl (jsonl_read uses
 * one line buffer). Errors: jsonl_open logs and returns ERR_NOTFOUND /
 * ERR_IO (the file), ERR_FORMAT (mostly bad, or no good record) or ERR_ARG
 * (options); jsonl_read logs and returns ERR_IO or ERR_FORMAT. */
#ifndef RLHF_JSONL_H
#define RLHF_JSONL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSONL_MAX_LINE (1 << 20)     /* bytes of one record's line */
#define JSONL_MAX_RECORDS (1u << 31) /* good records of one file */
#define JSONL_LOG_BAD 20             /* bad records of a file logged one by one */
#define JSONL_MAX_PROBLEMS 24        /* problem codes a reader may have, ok included */

/* The problems of every reader; a reader's own codes follow from
 * JSONL_N_COMMON, and its names table starts with these four. */
enum {
    JSONL_OK = 0,
    JSONL_BAD_JSON,   /* not JSON */
    JSONL_BAD_OBJECT, /* JSON, but not an object */
    JSONL_BAD_LINE,   /* longer than JSONL_MAX_LINE */
    JSONL_N_COMMON
};

/* Checks one record (a JSON object): returns 0, or a problem code in
 * JSONL_N_COMMON..n_problems-1 with the detail written to why. */
typedef int (*JsonlCheckFn)(void *ctx, const json_t *obj, char *why, size_t why_len);

typedef struct {
    const char        *what;          /* the reader, first word of its logs: "dataset" */
    const char *const *problem_names; /* (n_problems) by code; [0..3] the common ones */
    int                n_problems;    /* JSONL_N_COMMON..JSONL_MAX_PROBLEMS */
    int                too_many;      /* problem of a record beyond what one file may hold */
    int          max_bad_percent;     /* refuse the file above this share of bad records, 0..100 */
    JsonlCheckFn check;               /* called once per record while indexing */
    void        *check_ctx;
} JsonlOpts;

typedef struct {
    uint64_t lines; /* lines read, blank ones included */
    uint64_t blank; /* blank lines skipped */
    uint64_t good;  /* records kept */
    uint64_t bad;   /* records refused */
    uint64_t bad_by[JSONL_MAX_PROBLEMS];
    uint64_t bytes; /* size of the file */
} JsonlStats;

typedef struct Jsonl Jsonl;

/* The names of the common problems ("not JSON", ...), for readers' tables. */
extern const char *const jsonl_common_names[JSONL_N_COMMON];

/* Indexes path as described at the top; 0 with *out (caller owns), or an
 * error with *out NULL (logged). Logs a warning with the count of bad
 * records by problem when some were skipped; the reader logs its own line
 * on success. */
int  jsonl_open(const char *path, const JsonlOpts *opts, Jsonl **out);
void jsonl_free(Jsonl **j);

uint64_t    jsonl_size(const Jsonl *j); /* good records (N) */
const char *jsonl_path(const Jsonl *j);
void        jsonl_stats(const Jsonl *j, JsonlStats *out);
/* XXH3-64 of the file's bytes as indexed. */
uint64_t jsonl_fingerprint(const Jsonl *j);
/* The 1-based line of good record k (0 <= k < N). */
uint64_t jsonl_line(const Jsonl *j, uint64_t k);
/* "not JSON", ...: the name of problem code p in the reader's table. */
const char *jsonl_problem_name(const Jsonl *j, int p);
/* A summary "name count, ..." of the bad records by problem into buf. */
void jsonl_problems_summary(const Jsonl *j, char *buf, size_t cap);

/* Reads good record k (0 <= k < N, in file order) again with pread and
 * parses it into *obj (caller decrefs). Returns 0, or ERR_IO / ERR_FORMAT
 * (logged with file:line: a record edited in place since indexing). */
int jsonl_read(Jsonl *j, uint64_t k, json_t **obj);

/* Logs that record k no longer passes the reader's check (problem p,
 * detail why): the file changed since it was indexed. Returns ERR_FORMAT. */
int jsonl_changed(const Jsonl *j, uint64_t k, int p, const char *why);

/* "an object", "a string", ...: the JSON type of v, for messages. */
const char *jsonl_type_name(const json_t *v);

/* Whether s holds only spaces, tabs and line ends. */
bool jsonl_is_blank(const char *s);

#endif
