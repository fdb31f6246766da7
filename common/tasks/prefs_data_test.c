/* prefs_data's self-test: a hostile file table (every kind of bad record
 * counted under its problem and logged with file:line and its reason, the
 * good ones read back as exact ids, rankings reordered best first), the
 * mostly-bad rule, reference-completion files, and chat records (explicit
 * prompt, messages repeating the prompt, the implicit-prompt form) with a
 * hand-made ChatML vocabulary. */
#include "common/tasks/prefs_data.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/bpe_gguf.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define U(c) "{\"role\": \"user\", \"content\": \"" c "\"}"
#define A(c) "{\"role\": \"assistant\", \"content\": \"" c "\"}"

typedef struct {
    const char  *line;
    PrefsProblem problem;
    const char  *why; /* a part of the logged reason */
} Row;

static const Row k_rows[] = {
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_OK, NULL},
    {"{\"prompt\": \"2+2=\", \"chosen\": \"4\", \"rejected\": \"5\", \"margin\": 1.5}", PREFS_OK,
     NULL},
    {"{\"prompt\": \"3+3=\", \"completions\": [\"7\", \"6\", \"5\"], \"ranking\": [1, 0, 2]}",
     PREFS_OK, NULL},
    {"not json", PREFS_BAD_JSON, "column"},
    {"[1, 2]", PREFS_BAD_OBJECT, "an array"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\"}", PREFS_BAD_MISSING, "no \"rejected\""},
    {"{\"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_BAD_MISSING, "no \"prompt\""},
    {"{\"prompt\": \"1+1=\", \"completion\": \"2\"}", PREFS_BAD_MISSING, "no \"chosen\""},
    {"{\"prompt\": 5, \"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_BAD_TYPE,
     "\"prompt\" is a number"},
    {"{\"prompt\": \"1+1=\", \"chosen\": 2, \"rejected\": \"3\"}", PREFS_BAD_TYPE,
     "\"chosen\" is a number"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"2\"}", PREFS_BAD_TIE,
     "the chosen and the rejected are the same text"},
    {"{\"prompt\": \"  \", \"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_BAD_EMPTY,
     "\"prompt\" is empty"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"\", \"rejected\": \"\"}", PREFS_BAD_TIE,
     "the chosen and the rejected are the same text"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"1\", \"2\", \"3\"], \"ranking\": [0, 0, 1]}",
     PREFS_BAD_RANKING, "not a permutation of 0..2 (repeated)"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"1\", \"2\", \"3\"], \"ranking\": [0, 1, 3]}",
     PREFS_BAD_RANKING, "(out of range)"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"1\", \"2\", \"3\"], \"ranking\": [0, 1]}",
     PREFS_BAD_RANKING, "2 entries for 3 completions"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"2\"], \"ranking\": [0]}", PREFS_BAD_RANKING,
     "1 completions, expected 2..16"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"2\", \"3\", \"2\"], \"ranking\": [2, 1, 0]}",
     PREFS_BAD_TIE, "the completion 2 and the completion 0 are the same text"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"2\", \"3\"], \"ranking\": [\"0\", \"1\"]}",
     PREFS_BAD_TYPE, "ranking entry 0 is a string"},
    {"{\"prompt\": \"1+1=\", \"completions\": [\"2\", \"3\"]}", PREFS_BAD_MISSING,
     "a ranking without \"ranking\""},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"tw\\to\", \"rejected\": \"3\"}", PREFS_BAD_CHARS,
     "byte 0x09 (byte 2 of the chosen)"},
    {"{\"prompt\": \"12345678901234567890\", \"chosen\": \"1234\", \"rejected\": \"3\"}",
     PREFS_BAD_TOO_LONG, "prompt 21 + chosen 5 ids, the model takes 24"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\", \"margin\": -1}",
     PREFS_BAD_MARGIN, "\"margin\" is -1"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\", \"margin\": \"big\"}",
     PREFS_BAD_TYPE, "\"margin\" is a string"},
    {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\", \"completions\": [\"4\"]}",
     PREFS_BAD_TYPE, "give one"},
    {"{\"prompt\": [" U("1+1=") "], \"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_OK, NULL},
    {"{\"prompt\": [{\"role\": \"system\", \"content\": \"s\"}, " U(
         "1+1=") "], \"chosen\": \"2\", \"rejected\": \"3\"}",
     PREFS_BAD_TYPE, "needs a chat model"},
    {"{\"prompt\": \"1+1=\", \"chosen\": [" U("2+2=") ", " A("4") "], \"rejected\": \"3\"}",
     PREFS_BAD_PROMPT, "the 1 message before the chosen's reply is not the prompt's 1"},
    {"{\"prompt\": \"1+1=\", \"chosen\": [" U("1+1=") ", " A("2") "], \"rejected\": [" A("3") "]}",
     PREFS_OK, NULL},
    {"{\"chosen\": [" U("5+5=") ", " A("10") "], \"rejected\": [" U("5+5=") ", " A("11") "]}",
     PREFS_OK, NULL},
    {"{\"chosen\": [" U("5+5=") ", " A("10") "], \"rejected\": [" U("5+6=") ", " A("11") "]}",
     PREFS_BAD_PROMPT, "the 1 message before the rejected's reply is not the prompt's 1"},
    {"{\"chosen\": [" A("10") "], \"rejected\": [" A("11") "]}", PREFS_BAD_MISSING,
     "holds only the assistant's reply"},
    {"{\"prompt\": \"1+1=\", \"chosen\": [" U("1+1=") "], \"rejected\": \"3\"}", PREFS_BAD_TYPE,
     "the last message is the user's, expected the assistant's"},
    {"{\"prompt\": \"1+1=\", \"prompt\": \"x\", \"chosen\": \"2\", \"rejected\": \"3\"}",
     PREFS_BAD_JSON, "duplicate"},
    {"", PREFS_OK, NULL},
    {"{\"prompt\": \"9-1=\", \"rejected\": \"7\", \"chosen\": \"8\", \"id\": 12}\r", PREFS_OK,
     NULL},
};

/* The good records of k_rows: prompt text and completions best first. */
static const struct {
    const char *prompt;
    const char *comp[3];
    int         k;
    float       margin;
    bool        ranking;
} k_good[] = {
    {"1+1=", {"2", "3"}, 2, 0.0f, false},     {"2+2=", {"4", "5"}, 2, 1.5f, false},
    {"3+3=", {"6", "7", "5"}, 3, 0.0f, true}, {"1+1=", {"2", "3"}, 2, 0.0f, false},
    {"1+1=", {"2", "3"}, 2, 0.0f, false},     {"5+5=", {"10", "11"}, 2, 0.0f, false},
    {"9-1=", {"8", "7"}, 2, 0.0f, false},
};

static void write_rows(const char *path, const Row *rows, size_t n)
{
    size_t cap = 1 << 16, len = 0;
    char  *buf = xmalloc(cap);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s\n", rows[i].line);
    CHECK(len < cap);
    EXPECT(testfs_write(path, buf, len) == 0, "cannot write '%s'", path);
    free(buf);
}

static bool ids_are(const Tok *tok, const int *ids, int n, const char *text, int flags)
{
    int want[64], nw = 0;
    CHECK(tok_encode(tok, text, strlen(text), flags, want, 64, &nw) == 0);
    return n == nw && !memcmp(ids, want, sizeof(int) * (size_t)n);
}

static void test_hostile(const char *dir, const Tok *tok, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/hostile.jsonl", dir);
    write_rows(path, k_rows, N_OF(k_rows));
    uint64_t want_by[PREFS_N_PROBLEMS] = {0}, want_bad = 0;
    for (size_t i = 0; i < N_OF(k_rows); i++) {
        want_by[k_rows[i].problem]++;
        want_bad += k_rows[i].problem != PREFS_OK;
    }
    PrefsOpts o = {.tok = tok, .max_ids = 24, .max_bad_percent = 100};
    Prefs    *p = NULL;
    fileio_capture_begin();
    int   rc = prefs_open(path, &o, &p);
    char *log = fileio_capture_end(verbose);
    if (!EXPECT(rc == 0 && p, "prefs_open of the hostile table: %s", err_str(rc))) {
        free(log);
        return;
    }
    PrefsStats st;
    prefs_stats(p, &st);
    EXPECT(st.file.good == N_OF(k_good) && st.file.bad == want_bad && st.file.blank == 1 &&
               st.pairs == N_OF(k_good) - 1 + 3 && st.ranked == 1 && st.max_k == 3 &&
               st.max_ids == 8,
           "stats: %" PRIu64 " good, %" PRIu64 " bad, %" PRIu64 " pairs, %" PRIu64
           " rankings, max k %d, max ids %d",
           st.file.good, st.file.bad, st.pairs, st.ranked, st.max_k, st.max_ids);
    for (int pb = 1; pb < PREFS_N_PROBLEMS; pb++)
        EXPECT(st.file.bad_by[pb] == want_by[pb],
               "problem '%s': %" PRIu64 " records, expected %" PRIu64,
               prefs_problem_name((PrefsProblem)pb), st.file.bad_by[pb], want_by[pb]);
    EXPECT(strstr(log, "records skipped as bad") != NULL, "no summary of the bad records");
    free(log);
    for (uint64_t k = 0; k < prefs_size(p) && k < N_OF(k_good); k++) {
        PrefsRecord rec;
        rc = prefs_read(p, k, &rec);
        bool ok = rc == 0 && rec.k == k_good[k].k && rec.margin == k_good[k].margin &&
                  rec.is_ranking == k_good[k].ranking &&
                  ids_are(tok, rec.prompt, rec.n_prompt, k_good[k].prompt, TOK_ENC_BOS);
        for (int i = 0; ok && i < rec.k; i++)
            ok = ids_are(tok, rec.comp[i], rec.n_comp[i], k_good[k].comp[i], TOK_ENC_EOS);
        EXPECT(ok, "record %" PRIu64 " (line %" PRIu64 "): rc %d, k %d, margin %g", k, rec.line, rc,
               rec.k, rec.margin);
        prefs_record_free(&rec);
    }
    prefs_free(&p);
    EXPECT(!p, "prefs_free left the pointer");
    /* Each bad row alone after a good one: logged as FILE:2 with its reason
     * (the table's file logs only its first JSONL_LOG_BAD). */
    char one[512];
    testfs_path(one, sizeof one, "%s/one.jsonl", dir);
    for (size_t i = 0; i < N_OF(k_rows); i++) {
        const Row *r = &k_rows[i];
        if (r->problem == PREFS_OK) continue;
        Row two[2] = {k_rows[0], *r};
        write_rows(one, two, 2);
        fileio_capture_begin();
        rc = prefs_open(one, &o, &p);
        log = fileio_capture_end(false);
        char head[600];
        snprintf(head, sizeof head, "%s:2: %s: ", one, prefs_problem_name(r->problem));
        char *at = strstr(log, head);
        char *eol = at ? strchr(at, '\n') : NULL;
        bool  ok = rc == 0 && at && (!r->why || (strstr(at, r->why) && strstr(at, r->why) < eol));
        if (verbose && at && eol)
            printf("  line %2zu: %.*s\n", i + 1, (int)(eol - at - strlen(one) - 4),
                   at + strlen(one) + 4);
        EXPECT(ok, "line %zu alone: no log line '%s...%s' in '%s'", i + 1, head,
               r->why ? r->why : "", log);
        free(log);
        prefs_free(&p);
    }
    /* Mostly bad: refused whole at the usual limit. */
    o.max_bad_percent = 50;
    EXPECT_REFUSED(prefs_open(path, &o, &p), ERR_FORMAT, "refusing the file",
                   "the hostile table at 50%");
    EXPECT(!p, "a refused file left a Prefs");
}

static void test_reference(const char *dir, const Tok *tok, bool verbose)
{
    char path[512];
    testfs_path(path, sizeof path, "%s/ref.jsonl", dir);
    const Row rows[] = {
        {"{\"prompt\": \"1+1=\", \"completion\": \"2\"}", PREFS_OK, NULL},
        {"{\"prompt\": \"1+1=\", \"completion\": \"11\"}", PREFS_OK, NULL},
        {"{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\"}", PREFS_BAD_MISSING,
         "no \"completion\""},
    };
    write_rows(path, rows, N_OF(rows));
    PrefsOpts o = {.tok = tok, .max_ids = 24, .max_bad_percent = 50, .reference = true};
    Prefs    *p = NULL;
    fileio_capture_begin();
    int   rc = prefs_open(path, &o, &p);
    char *log = fileio_capture_end(verbose);
    char  want[600];
    snprintf(want, sizeof want, "%s:3: missing member: no \"completion\"", path);
    EXPECT(rc == 0 && prefs_size(p) == 2 && strstr(log, want), "reference file: %s, log '%s'",
           err_str(rc), log);
    free(log);
    PrefsRecord rec;
    rc = p ? prefs_read(p, 1, &rec) : ERR_ARG;
    EXPECT(rc == 0 && rec.k == 1 && ids_are(tok, rec.comp[0], rec.n_comp[0], "11", TOK_ENC_EOS),
           "reference record 1: rc %d, k %d", rc, rec.k);
    prefs_record_free(&rec);
    prefs_free(&p);
}

/* Three special tokens and every byte but 0x04, no merges. */
static Bpe *tiny_chat_bpe(void)
{
    FixtureVocab fv = {0};
    fixture_vocab_add(&fv, "<|endoftext|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_start|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add(&fv, "<|im_end|>", BPE_TOKEN_CONTROL);
    fixture_vocab_add_bytes(&fv, "\x04");
    const char *tpl = "{% for message in messages %}{% if loop.first and message['role'] != "
                      "'system' %}{{ '<|im_start|>system\nBe exact.<|im_end|>\n' }}{% endif "
                      "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                      "'<|im_start|>assistant\\n' }}{% endif %}";
    Bpe        *b = fixture_vocab_bpe(&fv, NULL, 0, tpl);
    fixture_vocab_free(&fv);
    return b;
}

static void test_chat(const char *dir, bool verbose)
{
    Bpe *b = tiny_chat_bpe();
    if (!EXPECT(b, "the hand-made ChatML vocabulary")) return;
    char path[512];
    testfs_path(path, sizeof path, "%s/chat.jsonl", dir);
    const Row rows[] = {
        {"{\"prompt\": \"Hi?\", \"chosen\": \"Hello.\", \"rejected\": \"Go away.\"}", PREFS_OK,
         NULL},
        {"{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, " U(
             "Hi?") "], \"chosen\": [" A("Hello.") "], \"rejected\": [" A("Go away.") "]}",
         PREFS_OK, NULL},
        {"{\"chosen\": [" U("Hi?") ", " A("Hello.") "], \"rejected\": [" U("Hi?") ", " A(
             "Go away.") "]}",
         PREFS_OK, NULL},
        {"{\"prompt\": \"Hi?\", \"chosen\": \"a\\u0004\", \"rejected\": \"b\"}", PREFS_BAD_CHARS,
         "byte 0x04 (byte 1 of the chosen)"},
    };
    write_rows(path, rows, N_OF(rows));
    PrefsOpts o = {.bpe = b, .max_ids = 200, .max_bad_percent = 50};
    Prefs    *p = NULL;
    fileio_capture_begin();
    int   rc = prefs_open(path, &o, &p);
    char *log = fileio_capture_end(verbose);
    char  want[600];
    snprintf(want, sizeof want, "%s:4: characters not in the tokenizer: byte 0x04", path);
    EXPECT(rc == 0 && prefs_size(p) == 3 && strstr(log, want), "chat file: %s, log '%s'",
           err_str(rc), log);
    free(log);
    const char *want_prompt[3] = {
        "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>"
        "assistant\n",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>"
        "assistant\n",
        "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>"
        "assistant\n"};
    for (uint64_t k = 0; p && k < 3; k++) {
        PrefsRecord rec;
        char        text[512], c0[64], c1[64];
        rc = prefs_read(p, k, &rec);
        if (rc == 0) {
            bpe_decode(b, rec.prompt, rec.n_prompt, BPE_DEC_SPECIAL, text, sizeof text, NULL);
            bpe_decode(b, rec.comp[0], rec.n_comp[0], BPE_DEC_SPECIAL, c0, sizeof c0, NULL);
            bpe_decode(b, rec.comp[1], rec.n_comp[1], BPE_DEC_SPECIAL, c1, sizeof c1, NULL);
        }
        EXPECT(rc == 0 && !strcmp(text, want_prompt[k]) && !strcmp(c0, "Hello.<|im_end|>") &&
                   !strcmp(c1, "Go away.<|im_end|>"),
               "chat record %" PRIu64 ": rc %d, prompt '%s', chosen '%s', rejected '%s'", k, rc,
               rc == 0 ? text : "", rc == 0 ? c0 : "", rc == 0 ? c1 : "");
        prefs_record_free(&rec);
    }
    prefs_free(&p);
    bpe_free(&b);
}

/* The shipped examples load whole with the model they are for. */
static void test_examples(bool verbose)
{
    const char *gguf = fixture_smollm2_path("prefs_data (shipped examples)");
    if (!gguf) return;
    Bpe *b = NULL;
    if (!EXPECT(bpe_load(gguf, &b) == 0, "bpe_load '%s'", gguf)) return;
    const char *files[] = {"examples/prefs-chat/train.jsonl", "examples/prefs-chat/eval.jsonl",
                           "examples/prefs-chat/ranking.jsonl",
                           "examples/prefs-chat/reference.jsonl"};
    for (size_t i = 0; i < N_OF(files); i++) {
        PrefsOpts o = {.bpe = b, .max_ids = 512, .reference = strstr(files[i], "reference")};
        Prefs    *p = NULL;
        fileio_capture_begin();
        int rc = prefs_open(files[i], &o, &p);
        free(fileio_capture_end(verbose));
        PrefsStats st = {0};
        if (p) prefs_stats(p, &st);
        EXPECT(rc == 0 && st.file.bad == 0 && st.file.good == (i == 0 ? 256u : 64u),
               "'%s': %s, %" PRIu64 " good, %" PRIu64 " bad", files[i], err_str(rc), st.file.good,
               st.file.bad);
        if (verbose)
            printf("  %s: %" PRIu64 " records, %" PRIu64 " pairs, up to %d ids\n", files[i],
                   st.file.good, st.pairs, st.max_ids);
        prefs_free(&p);
    }
    bpe_free(&b);
}

int prefs_data_selftest(bool verbose)
{
    char dir[256];
    if (!EXPECT(testfs_tmpdir_new("prefs_data", dir, sizeof dir) == 0, "no temp directory"))
        return expect_end();
    int level = log_level(); /* the warnings naming bad records are what is checked */
    log_init("prefs_data", level > LOG_WARN ? level : LOG_WARN);
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    test_hostile(dir, tok, verbose);
    test_reference(dir, tok, verbose);
    test_chat(dir, verbose);
    test_examples(verbose);
    tok_free(&tok);
    log_init("prefs_data", level);
    testfs_tmpdir_remove(dir);
    return expect_end();
}
