/* dataset's self-test: a hostile file table (every kind of bad record, each
 * counted under its problem and logged with file:line, the good ones among
 * them read back exactly), the mostly-bad rule at its boundary, files that
 * are missing, empty or not files, a 40 MB file indexed in blocks without
 * holding it in memory, a file edited in place or replaced under an open
 * dataset, chat prompts with SmolLM2's template (skipped without `make
 * model`), and the shuffled order (a permutation per epoch, its own order
 * each epoch and seed). */
#include "common/tasks/dataset.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/bpe_gguf.h"
#include "common/tasks/chat_task.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static DatasetOpts char_opts(const Tok *tok, int max_bad)
{
    return (DatasetOpts){
        .tok = tok, .max_prompt_ids = 64, .default_task = "arith", .max_bad_percent = max_bad};
}

typedef struct {
    const char    *line; /* NULL: built by the test (long lines) */
    DatasetProblem problem;
    const char    *why; /* a word of the logged reason */
} Row;

/* One file of every kind of record. Good rows read back as (prompt ids,
 * answer, task, meta) checked below. */
static const Row k_rows[] = {
    {"\xEF\xBB\xBF{\"prompt\": \"1+1=\", \"answer\": \"2\"}", DATASET_OK, NULL},
    {"not json", DATASET_BAD_JSON, "column"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"2\"", DATASET_BAD_JSON, NULL},
    {"[1, 2]", DATASET_BAD_OBJECT, "an array"},
    {"\"just a string\"", DATASET_BAD_OBJECT, "a string"},
    {"{\"answer\": \"2\"}", DATASET_BAD_NO_PROMPT, "no \"prompt\""},
    {"{\"prompt\": \"1+1=\", \"messages\": []}", DATASET_BAD_NO_PROMPT, "both"},
    {"{\"prompt\": 5}", DATASET_BAD_TYPE, "\"prompt\" is a number"},
    {"{\"prompt\": \"1+1=\", \"answer\": true}", DATASET_BAD_TYPE, "\"answer\" is a boolean"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"2\", \"meta\": [1]}", DATASET_BAD_TYPE,
     "\"meta\" is an array"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": 7}", DATASET_BAD_TYPE, "\"task\""},
    {"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", DATASET_BAD_TYPE, "chat model"},
    {"{\"prompt\": \"   \"}", DATASET_BAD_EMPTY, "empty"},
    {"{\"prompt\": \"\"}", DATASET_BAD_EMPTY, "empty"},
    {NULL, DATASET_BAD_TOO_LONG, "at most 64"},           /* a 100-character prompt */
    {NULL, DATASET_BAD_TOO_LONG, "answer of 5000 bytes"}, /* a 5000-byte answer */
    {"{\"prompt\": \"h\\u00e9llo\", \"answer\": \"x\"}", DATASET_BAD_CHARS, "byte 0xc3"},
    {"{\"prompt\": \"a\\tb\", \"answer\": \"x\"}", DATASET_BAD_CHARS, "byte 0x09"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": \"nope\"}", DATASET_BAD_TASK,
     "unknown scorer 'nope'"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": \"exact,exact\"}", DATASET_BAD_TASK,
     "twice"},
    {"{\"prompt\": \"1+1=\", \"answer\": \"two\", \"task\": \"number\"}", DATASET_BAD_SCORER,
     "not a number"},
    {"{\"prompt\": \"1+1=\", \"task\": \"code\"}", DATASET_BAD_SCORER, "tests"},
    {"{\"prompt\": \"1+1=\", \"prompt\": \"x\"}", DATASET_BAD_JSON, "duplicate"},
    {"{\"prompt\": \"a\\u0000b\"}", DATASET_BAD_JSON, NULL},
    {"{\"prompt\": \"\xff\xfe\"}", DATASET_BAD_JSON, NULL},
    {NULL, DATASET_BAD_LINE, "longer than"}, /* 1.5 MiB on one line */
    {"", DATASET_OK, NULL},                  /* blank: skipped, not a record */
    {"   \t", DATASET_OK, NULL},             /* blank */
    {"{\"prompt\": \"2+2=\", \"answer\": 4, \"task\": \"number\", \"id\": \"extra\"}\r", DATASET_OK,
     NULL},
    {"{\"prompt\": \"What is 0.5?\", \"answer\": 0.5, \"task\": \"number:1,regex:0.5\", "
     "\"meta\": {\"regex\": \"[0-9]\", \"rel_tol\": 0.01}}",
     DATASET_OK, NULL},
    {"{\"prompt\": \"Say yes.\", \"answer\": null, \"task\": \"format_answer_tag\"}", DATASET_OK,
     NULL},
};

/* The good records of k_rows, in order. */
static const struct {
    const char *prompt, *answer, *task, *meta;
} k_good[] = {
    {"1+1=", "2", "arith", ""},
    {"2+2=", "4", "number", ""},
    {"What is 0.5?", "0.5", "number:1,regex:0.5", "{\"regex\":\"[0-9]\",\"rel_tol\":0.01}"},
    {"Say yes.", "", "format_answer_tag", ""},
};

static bool is_blank_row(const Row *r)
{
    return r->line && r->problem == DATASET_OK && strspn(r->line, " \t") == strlen(r->line);
}

/* Writes k_rows to path; returns the file's bytes (caller frees). */
static char *write_rows(const char *path, size_t *len)
{
    size_t cap = 4 << 20, n = 0;
    char  *buf = xmalloc(cap);
    int    long_k = 0;
    for (size_t i = 0; i < N_OF(k_rows); i++) {
        if (k_rows[i].line) {
            n += (size_t)snprintf(buf + n, cap - n, "%s\n", k_rows[i].line);
            continue;
        }
        /* The three built rows, in table order. */
        if (long_k == 0) {
            n += (size_t)snprintf(buf + n, cap - n, "{\"prompt\": \"%0100d\", \"answer\": \"1\"}\n",
                                  7);
        } else if (long_k == 1) {
            n += (size_t)snprintf(buf + n, cap - n, "{\"prompt\": \"1+1=\", \"answer\": \"");
            memset(buf + n, 'x', 5000);
            n += 5000;
            n += (size_t)snprintf(buf + n, cap - n, "\"}\n");
        } else {
            size_t big = 3 * (size_t)DATASET_MAX_LINE / 2;
            memcpy(buf + n, "{\"prompt\": \"", 12);
            memset(buf + n + 12, 'a', big);
            n += 12 + big;
            n += (size_t)snprintf(buf + n, cap - n, "\"}\n");
        }
        long_k++;
    }
    CHECK(n < cap);
    EXPECT(testfs_write(path, buf, n) == 0, "cannot write '%s'", path);
    *len = n;
    return buf;
}

static void test_hostile_table(const char *dir, const Tok *tok, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/hostile.jsonl", dir);
    size_t len;
    free(write_rows(path, &len));
    uint64_t want_by[DATASET_N_PROBLEMS] = {0}, want_bad = 0, want_blank = 0;
    for (size_t i = 0; i < N_OF(k_rows); i++) {
        want_by[k_rows[i].problem]++;
        want_bad += k_rows[i].problem != DATASET_OK;
        want_blank += is_blank_row(&k_rows[i]);
    }
    DatasetOpts o = char_opts(tok, 100);
    Dataset    *d = NULL;
    fileio_capture_begin();
    int   rc = dataset_open(path, &o, &d);
    char *log = fileio_capture_end(verbose);
    if (!EXPECT(rc == 0 && d, "dataset_open of the hostile table: %s", err_str(rc))) {
        free(log);
        return;
    }
    DatasetStats st;
    dataset_stats(d, &st);
    EXPECT(st.good == N_OF(k_good) && st.bad == want_bad && st.blank == want_blank &&
               st.lines == N_OF(k_rows) && st.bytes == len,
           "stats: %" PRIu64 " good, %" PRIu64 " bad, %" PRIu64 " blank, %" PRIu64
           " lines, %" PRIu64 " bytes; expected %zu, %" PRIu64 ", %" PRIu64 ", %zu, %zu",
           st.good, st.bad, st.blank, st.lines, st.bytes, N_OF(k_good), want_bad, want_blank,
           N_OF(k_rows), len);
    for (int p = 1; p < DATASET_N_PROBLEMS; p++)
        EXPECT(st.bad_by[p] == want_by[p], "problem '%s': %" PRIu64 " records, expected %" PRIu64,
               dataset_problem_name((DatasetProblem)p), st.bad_by[p], want_by[p]);
    /* Each bad record logged as FILE:LINE: problem: reason (up to DATASET_LOG_BAD). */
    int logged = 0;
    for (size_t i = 0; i < N_OF(k_rows); i++) {
        const Row *r = &k_rows[i];
        if (r->problem == DATASET_OK || ++logged > DATASET_LOG_BAD) continue;
        char head[600];
        snprintf(head, sizeof head, "%s:%zu: %s: ", path, i + 1, dataset_problem_name(r->problem));
        char *at = strstr(log, head);
        char *eol = at ? strchr(at, '\n') : NULL;
        bool  ok = at && (!r->why || (strstr(at, r->why) && strstr(at, r->why) < eol));
        if (verbose)
            printf("  line %2zu: %-26s %s\n", i + 1, dataset_problem_name(r->problem),
                   ok ? "logged" : "NOT LOGGED");
        EXPECT(ok, "line %zu: no log line '%s...%s'", i + 1, head, r->why ? r->why : "");
    }
    EXPECT(strstr(log, "records skipped as bad") != NULL, "no summary of the bad records");
    free(log);
    /* The good records, read back. */
    for (uint64_t k = 0; k < dataset_size(d) && k < N_OF(k_good); k++) {
        DatasetRecord rec;
        rc = dataset_read(d, k, &rec);
        int want_ids[128], nw = 0;
        tok_encode(tok, k_good[k].prompt, strlen(k_good[k].prompt), TOK_ENC_BOS, want_ids, 128,
                   &nw);
        bool ok = rc == 0 && rec.n_ids == nw && !memcmp(rec.ids, want_ids, sizeof(int) * nw) &&
                  !strcmp(rec.answer, k_good[k].answer) && !strcmp(rec.task, k_good[k].task) &&
                  !strcmp(rec.meta, k_good[k].meta);
        EXPECT(ok, "record %" PRIu64 ": rc %d, %d ids (want %d), answer '%s', task '%s', meta '%s'",
               k, rc, rec.n_ids, nw, rec.answer ? rec.answer : "", rec.task ? rec.task : "",
               rec.meta ? rec.meta : "");
        dataset_record_free(&rec);
    }
    EXPECT(dataset_max_ids(d) == 13, "longest prompt %d ids, expected 13 ('What is 0.5?' + BOS)",
           dataset_max_ids(d));
    dataset_free(&d);
    EXPECT(!d, "dataset_free left the pointer");

    /* The same file with the default at 50%: 25 bad of 29 records refused. */
    o.max_bad_percent = 50;
    fileio_capture_begin();
    rc = dataset_open(path, &o, &d);
    log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_FORMAT && !d && strstr(log, "refusing the file") && strstr(log, "not JSON 5"),
           "a mostly bad file: rc %s, log '%s'", err_str(rc), log);
    free(log);
}

/* good + bad records; opened with max_bad; returns dataset_open's rc. */
static int open_mix(const char *dir, const Tok *tok, int good, int bad, int max_bad, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/mix-%d-%d.jsonl", dir, good, bad);
    char   buf[4096];
    size_t n = 0;
    for (int i = 0; i < good + bad; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\n",
                              i < bad ? "oops" : "{\"prompt\": \"2+2=\", \"answer\": \"4\"}");
    testfs_write(path, buf, n);
    DatasetOpts o = char_opts(tok, max_bad);
    Dataset    *d = NULL;
    fileio_capture_begin();
    int rc = dataset_open(path, &o, &d);
    free(fileio_capture_end(verbose));
    dataset_free(&d);
    return rc;
}

static void test_mostly_bad(const char *dir, const Tok *tok, bool verbose)
{
    struct {
        int good, bad, max_bad, rc;
    } ex[] = {
        {2, 2, 50, 0},                                                /* exactly half: allowed */
        {3, 4, 50, ERR_FORMAT},                                       /* 57% */
        {3, 4, 60, 0},           {1, 0, 0, 0}, {4, 1, 0, ERR_FORMAT}, /* none allowed */
        {0, 3, 100, ERR_FORMAT},                                      /* no good record at all */
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        int rc = open_mix(dir, tok, ex[i].good, ex[i].bad, ex[i].max_bad, verbose);
        EXPECT(rc == ex[i].rc, "%d good + %d bad at --data-max-bad %d: %s, expected %s", ex[i].good,
               ex[i].bad, ex[i].max_bad, err_str(rc), err_str(ex[i].rc));
    }
}

static void test_bad_files(const char *dir, const Tok *tok, bool verbose)
{
    DatasetOpts o = char_opts(tok, 50);
    Dataset    *d = NULL;
    char        path[512];
    struct {
        const char *name, *content, *log;
        int         rc;
    } ex[] = {
        {"missing.jsonl", NULL, "missing.jsonl", ERR_NOTFOUND},
        {"empty.jsonl", "", "no usable record", ERR_FORMAT},
        {"blank.jsonl", "\n\n  \n", "no usable record", ERR_FORMAT},
        {".", NULL, "not a regular file", ERR_IO},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        testfs_path(path, sizeof path, "%s/%s", dir, ex[i].name);
        if (ex[i].content) testfs_write(path, ex[i].content, strlen(ex[i].content));
        fileio_capture_begin();
        int   rc = dataset_open(path, &o, &d);
        char *log = fileio_capture_end(verbose);
        EXPECT(rc == ex[i].rc && !d && strstr(log, ex[i].log),
               "'%s': %s, log '%s'; expected %s and '%s'", ex[i].name, err_str(rc), log,
               err_str(ex[i].rc), ex[i].log);
        free(log);
    }
    /* No newline after the last record: it is a record all the same. */
    testfs_path(path, sizeof path, "%s/nonl.jsonl", dir);
    const char *nonl =
        "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"2+2=\", \"answer\": \"4\"}";
    testfs_write(path, nonl, strlen(nonl));
    fileio_capture_begin();
    int rc0 = dataset_open(path, &o, &d);
    free(fileio_capture_end(verbose));
    DatasetRecord last = {0};
    EXPECT(rc0 == 0 && dataset_size(d) == 2 && dataset_read(d, 1, &last) == 0 &&
               !strcmp(last.answer, "4"),
           "a last line without a newline: %s, %" PRIu64 " records", err_str(rc0),
           d ? dataset_size(d) : 0);
    dataset_record_free(&last);
    dataset_free(&d);
    /* Options: a bad default task, two tokenizers. */
    testfs_path(path, sizeof path, "%s/one.jsonl", dir);
    testfs_write(path, "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n", 34);
    o.default_task = "nope";
    fileio_capture_begin();
    int   rc = dataset_open(path, &o, &d);
    char *log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_ARG && strstr(log, "default task") && strstr(log, "unknown scorer 'nope'"),
           "default task 'nope': %s, log '%s'", err_str(rc), log);
    free(log);
    /* No default task: a record without one is bad. */
    o.default_task = NULL;
    o.max_bad_percent = 100;
    fileio_capture_begin();
    rc = dataset_open(path, &o, &d);
    log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_FORMAT && strstr(log, "no default task"),
           "a record without a task and no default: %s, log '%s'", err_str(rc), log);
    free(log);
}

/* 100000 records of about 400 bytes (40 MB): indexed in blocks, memory grows
 * by far less than the file, records read back by index. */
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    long  kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static void test_large(const char *dir, const Tok *tok, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/large.jsonl", dir);
    FILE *f = fopen(path, "w");
    if (!EXPECT(f, "cannot write '%s'", path)) return;
    const int N = 100000;
    char      pad[321];
    memset(pad, 'p', 320);
    pad[320] = '\0';
    for (int i = 0; i < N; i++)
        fprintf(f, "{\"prompt\": \"%d+%d=\", \"answer\": \"%d\", \"meta\": {\"pad\": \"%s\"}}\n", i,
                i % 7, i + i % 7, pad);
    fclose(f);
    DatasetOpts  o = char_opts(tok, 50);
    Dataset     *d = NULL;
    long         before = rss_kb();
    int          rc = dataset_open(path, &o, &d);
    long         grew = rss_kb() - before;
    DatasetStats st = {0};
    if (d) dataset_stats(d, &st);
    if (verbose)
        printf("  large: %" PRIu64 " records, %.1f MB file, resident memory +%ld kB\n", st.good,
               (double)st.bytes / 1e6, grew);
    EXPECT(rc == 0 && st.good == (uint64_t)N, "large file: %s, %" PRIu64 " records", err_str(rc),
           st.good);
    /* The index is 16 bytes a record (1.6 MB) and the block buffer 2 MiB.
     * AddressSanitizer's quarantine and shadow make resident memory say
     * nothing about the code, so its build skips the bound. */
#ifdef __SANITIZE_ADDRESS__
    grew = 0;
#endif
    EXPECT(before > 0 && grew * 1024 < (long)(st.bytes / 4),
           "indexing a %" PRIu64 "-byte file grew resident memory by %ld kB", st.bytes, grew);
    for (int k = 0; d && k < N; k += 9973) {
        DatasetRecord rec;
        rc = dataset_read(d, (uint64_t)k, &rec);
        char want[32];
        snprintf(want, sizeof want, "%d", k + k % 7);
        EXPECT(rc == 0 && !strcmp(rec.answer, want) && rec.line == (uint64_t)k + 1,
               "large record %d: rc %d answer '%s' line %" PRIu64, k, rc,
               rec.answer ? rec.answer : "", rec.line);
        dataset_record_free(&rec);
    }
    dataset_free(&d);
    unlink(path);
}

/* Edited in place: a record that no longer parses is an error naming the
 * line; replaced by rename: the open dataset still reads what it indexed. */
static void test_changed(const char *dir, const Tok *tok, bool verbose)
{
    char path[512], tmp[512];
    testfs_path(path, sizeof path, "%s/changed.jsonl", dir);
    testfs_path(tmp, sizeof tmp, "%s/changed.tmp", dir);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"
                       "{\"prompt\": \"3+4=\", \"answer\": \"7\"}\n";
    testfs_write(path, text, strlen(text));
    DatasetOpts o = char_opts(tok, 50);
    Dataset    *d = NULL;
    fileio_capture_begin();
    int rc = dataset_open(path, &o, &d);
    free(fileio_capture_end(verbose));
    if (!EXPECT(rc == 0, "changed.jsonl: %s", err_str(rc))) return;
    uint64_t fp = dataset_fingerprint(d);
    /* Replaced: the open file is the old one. */
    testfs_write(tmp, "{\"prompt\": \"9+9=\", \"answer\": \"18\"}\n", 36);
    rename(tmp, path);
    DatasetRecord rec;
    rc = dataset_read(d, 1, &rec);
    EXPECT(rc == 0 && !strcmp(rec.answer, "7"), "after a rename over it: rc %d answer '%s'", rc,
           rec.answer ? rec.answer : "");
    dataset_record_free(&rec);
    dataset_free(&d);
    /* Edited in place. */
    testfs_write(path, text, strlen(text));
    fileio_capture_begin();
    rc = dataset_open(path, &o, &d);
    free(fileio_capture_end(verbose));
    EXPECT(rc == 0 && dataset_fingerprint(d) == fp, "same bytes, another fingerprint");
    FILE *f = fopen(path, "r+");
    if (f) {
        fseek(f, 36, SEEK_SET);
        fputs("garbage", f);
        fclose(f);
    }
    fileio_capture_begin();
    rc = d ? dataset_read(d, 1, &rec) : ERR_ARG;
    char *log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_FORMAT && strstr(log, "changed.jsonl:2: not JSON") &&
               strstr(log, "changed since"),
           "a record edited in place: %s, log '%s'", err_str(rc), log);
    free(log);
    dataset_record_free(&rec);
    dataset_free(&d);
}

/* Chat prompts with SmolLM2's template: a "prompt" renders as the chat task
 * renders its questions; messages with a system prompt; the limits; raw
 * prompts (no template). */
static void test_chat(const char *dir, bool verbose)
{
    const char *gguf = fixture_smollm2_path("dataset (chat part)");
    if (!gguf) return;
    Bpe *bpe = NULL;
    if (!EXPECT(bpe_load(gguf, &bpe) == 0, "bpe_load '%s'", gguf)) return;
    char path[512];
    testfs_path(path, sizeof path, "%s/chat.jsonl", dir);
    const char *text =
        "{\"prompt\": \"What is 3 + 4? Reply with the number only.\", \"answer\": \"7\"}\n"
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
        "\"user\", \"content\": \"Capital of France?\"}], \"answer\": \"Paris\", \"task\": "
        "\"exact\"}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
        "\"content\": \"hello\"}]}\n"
        "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}\n"
        "{\"messages\": []}\n";
    testfs_write(path, text, strlen(text));
    DatasetOpts o = {
        .bpe = bpe, .max_prompt_ids = 160, .default_task = CHAT_TASK_NAME, .max_bad_percent = 100};
    Dataset *d = NULL;
    fileio_capture_begin();
    int          rc = dataset_open(path, &o, &d);
    char        *log = fileio_capture_end(verbose);
    DatasetStats st = {0};
    if (d) dataset_stats(d, &st);
    EXPECT(rc == 0 && st.good == 2 && st.bad_by[DATASET_BAD_TYPE] == 2 &&
               st.bad_by[DATASET_BAD_EMPTY] == 1 &&
               strstr(log, "chat.jsonl:3: wrong type: the "
                           "last message is the assistant's"),
           "chat file: %s, %" PRIu64 " good; log '%s'", err_str(rc), st.good, log);
    free(log);
    int want[CHAT_TASK_PROMPT_MAX_IDS], nw = 0;
    chat_task_prompt_ids(bpe, "What is 3 + 4? Reply with the number only.", want,
                         CHAT_TASK_PROMPT_MAX_IDS, &nw);
    DatasetRecord rec = {0};
    rc = d ? dataset_read(d, 0, &rec) : ERR_ARG;
    EXPECT(rc == 0 && rec.n_ids == nw && !memcmp(rec.ids, want, sizeof(int) * (size_t)nw),
           "a chat prompt: %d ids, the chat task's %d", rec.n_ids, nw);
    dataset_record_free(&rec);
    rc = d ? dataset_read(d, 1, &rec) : ERR_ARG;
    size_t n = bpe_decode_max_bytes(bpe, rec.n_ids);
    char  *back = xmalloc(n);
    bpe_decode(bpe, rec.ids, rec.n_ids, BPE_DEC_SPECIAL, back, n, NULL);
    EXPECT(rc == 0 && strstr(back, "<|im_start|>system\nBe brief.<|im_end|>") &&
               strstr(back, "Capital of France?<|im_end|>\n<|im_start|>assistant\n"),
           "messages rendered as '%s'", back);
    if (verbose) printf("  chat record 2 renders as %d ids: %s\n", rec.n_ids, back);
    free(back);
    dataset_record_free(&rec);
    dataset_free(&d);
    /* Too long for the model's context. */
    o.max_prompt_ids = nw - 1;
    o.max_bad_percent = 0;
    fileio_capture_begin();
    rc = dataset_open(path, &o, &d);
    log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_FORMAT && strstr(log, "chat.jsonl:1: too long"),
           "prompts over %d ids: %s, log '%s'", nw - 1, err_str(rc), log);
    free(log);
    /* Raw prompts: the text as it is, no template, control tokens in the
     * text read as plain bytes; "messages" refused. */
    const char *raw = "{\"prompt\": \"def f(x):\\n    \\\"<|im_start|>\\\"\\n\", \"task\": "
                      "\"code\", \"meta\": {\"tests\": \"assert f(1)\"}}\n"
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n";
    testfs_path(path, sizeof path, "%s/raw.jsonl", dir);
    testfs_write(path, raw, strlen(raw));
    o = (DatasetOpts){.bpe = bpe, .is_raw = true, .max_prompt_ids = 64, .max_bad_percent = 50};
    fileio_capture_begin();
    rc = dataset_open(path, &o, &d);
    log = fileio_capture_end(verbose);
    EXPECT(rc == 0 && strstr(log, "raw.jsonl:2: wrong type: \"messages\" needs the chat template"),
           "raw prompts: %s, log '%s'", err_str(rc), log);
    free(log);
    const char *code = "def f(x):\n    \"<|im_start|>\"\n";
    int         raw_ids[64], nr = 0;
    CHECK(bpe_encode(bpe, code, strlen(code), 0, raw_ids, 64, &nr) == 0);
    rc = d ? dataset_read(d, 0, &rec) : ERR_ARG;
    back = xmalloc(bpe_decode_max_bytes(bpe, 64));
    if (rc == 0)
        bpe_decode(bpe, rec.ids, rec.n_ids, BPE_DEC_SPECIAL, back, bpe_decode_max_bytes(bpe, 64),
                   NULL);
    EXPECT(rc == 0 && rec.n_ids == nr && !memcmp(rec.ids, raw_ids, sizeof(int) * (size_t)nr) &&
               !strcmp(back, code),
           "a raw prompt: %d ids, expected %d; decodes as '%s'", rec.n_ids, nr,
           rc == 0 ? back : "");
    free(back);
    dataset_record_free(&rec);
    dataset_free(&d);
    /* The shipped examples load whole with the model they are for. */
    const char *examples[] = {"examples/arith-chat/train.jsonl", "examples/arith-chat/eval.jsonl",
                              "examples/code/train.jsonl", "examples/code/eval.jsonl",
                              "examples/formats/train.jsonl"};
    o = (DatasetOpts){.bpe = bpe, .max_prompt_ids = 200, .default_task = "number"};
    for (size_t i = 0; i < N_OF(examples); i++) {
        fileio_capture_begin();
        rc = dataset_open(examples[i], &o, &d);
        free(fileio_capture_end(verbose));
        DatasetStats es = {0};
        if (d) dataset_stats(d, &es);
        EXPECT(rc == 0 && es.bad == 0 && es.good > 0, "'%s': %s, %" PRIu64 " bad records",
               examples[i], err_str(rc), es.bad);
        dataset_free(&d);
    }
    bpe_free(&bpe);
}

static void test_shuffle(bool verbose)
{
    const uint64_t ns[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097};
    for (size_t t = 0; t < N_OF(ns); t++) {
        uint64_t n = ns[t];
        char    *seen = xcalloc(n, 1);
        bool     perm = true, differs = false, seed_differs = false;
        for (int epoch = 0; epoch < 3; epoch++) {
            memset(seen, 0, n);
            for (uint64_t i = 0; i < n; i++) {
                uint64_t k = dataset_shuffle(n, 42, (uint64_t)epoch * n + i);
                if (k >= n || seen[k]) perm = false;
                if (k < n) seen[k] = 1;
                if (epoch == 1 && k != dataset_shuffle(n, 42, i)) differs = true;
                if (epoch == 0 && k != dataset_shuffle(n, 43, i)) seed_differs = true;
                if (k != dataset_shuffle(n, 42, (uint64_t)epoch * n + i)) perm = false;
            }
        }
        free(seen);
        if (verbose)
            printf("  shuffle n=%-5" PRIu64 " permutation %d, epochs differ %d, seeds differ %d\n",
                   n, perm, differs, seed_differs);
        EXPECT(perm, "dataset_shuffle(%" PRIu64 ", ...) is not a permutation per epoch", n);
        if (n >= 5)
            EXPECT(differs && seed_differs,
                   "n=%" PRIu64 ": epoch 1 same order as epoch 0 (%d) or seed 43 as 42 (%d)", n,
                   !differs, !seed_differs);
    }
    uint64_t big = (uint64_t)1 << 40;
    EXPECT(dataset_shuffle(big, 1, 12345) < big && dataset_shuffle(3, 1, 1000000007) < 3,
           "dataset_shuffle out of range for large n or i");
}

/* Found by the jsonl fuzz harness: a reason quotes the record's text (a
 * JSON error "near '...'", a task name, a role), so a raw control byte of
 * the file reached the log: a carriage return or an escape sequence could
 * rewrite the terminal and a newline (a JSON "\n" in a quoted name) forge a
 * "FILE:LINE" line. Each record is one line, its control bytes escaped. */
static void test_log_controls(const char *dir, const Tok *tok, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/controls.jsonl", dir);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"
                       "{\x1b[2J\x03\rFORGED}\n"
                       "{\"prompt\": \"1+1=\", \"task\": \"no\\u001b[2K\\npe\"}\n";
    EXPECT(testfs_write(path, text, strlen(text)) == 0, "cannot write '%s'", path);
    DatasetOpts o = char_opts(tok, 100);
    Dataset    *d = NULL;
    fileio_capture_begin();
    int   rc = dataset_open(path, &o, &d);
    char *log = fileio_capture_end(verbose);
    int   controls = 0, records = 0;
    for (const char *c = log; *c; c++) controls += (unsigned char)*c < 0x20 && *c != '\n';
    for (const char *c = strstr(log, "controls.jsonl:"); c; c = strstr(c + 1, "controls.jsonl:"))
        records++;
    char head2[600], head3[600];
    snprintf(head2, sizeof head2, "%s:2: not JSON: string or '}' expected near '\\x1b'", path);
    snprintf(head3, sizeof head3, "%s:3: bad task: scorer spec 'no\\x1b[2K\\npe'", path);
    EXPECT(rc == 0 && records == 2 && controls == 0 && strstr(log, head2) && strstr(log, head3),
           "records quoting control bytes: rc %d, %d record lines (want 2), %d raw control "
           "bytes (want 0), log:\n%s",
           rc, records, controls, log);
    if (verbose) printf("  controls: %d record lines, control bytes escaped\n", records);
    free(log);
    dataset_free(&d);
}

int dataset_selftest(bool verbose)
{
    char dir[256];
    if (!EXPECT(testfs_tmpdir_new("dataset", dir, sizeof dir) == 0, "no temp directory"))
        return expect_end();
    int level = log_level(); /* the warnings naming bad records are what is checked */
    log_init("dataset", level > LOG_WARN ? level : LOG_WARN);
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    test_hostile_table(dir, tok, verbose);
    test_log_controls(dir, tok, verbose);
    test_mostly_bad(dir, tok, verbose);
    test_bad_files(dir, tok, verbose);
    test_large(dir, tok, verbose);
    test_changed(dir, tok, verbose);
    test_chat(dir, verbose);
    test_shuffle(verbose);
    tok_free(&tok);
    log_init("dataset", level);
    testfs_tmpdir_remove(dir);
    return expect_end();
}
