/* rlhf-eval end to end, as a child process: a char model trained a little
 * with rlhf-sft (1-digit sums, so that some samples are right and some
 * wrong) evaluated on a small JSONL (arithmetic records, and two code
 * records scored by the real sandbox in-process: a "# " prefix makes any
 * completion a comment, so one record's test always passes and the
 * other's always fails). The JSON report is checked against the
 * completions file: every prompt's correct count, pass@k for every k
 * recomputed with exact binomial coefficients, pass@1 equal to the mean
 * per-sample accuracy, the majority votes recomputed with the stated tie
 * rule (the answer given first), no vote for code, the settings and the
 * wall time. A second run with another batch size gives the same report;
 * --arith runs the built-in task. Bad input (a missing file or
 * checkpoint, bad flag values, a mostly bad file, an unknown scorer, an
 * unwritable report) ends with a clear error naming it. With
 * data/humaneval/HumanEval.jsonl (make humaneval; skipped without it),
 * deploy/humaneval_jsonl.py's records build, for every canonical solution,
 * exactly HumanEval's program (prompt + completion + "\n" + test + "\n" +
 * "check(entry_point)"), in both forms, and load whole with SmolLM2's
 * tokenizer (raw and chat). */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/bpe_gguf.h"
#include "common/tasks/dataset.h"
#include "reward_server/sandbox_scorer.h"
#include "tests/support/fixtures.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define EC_TIMEOUT_S 300.0
#define EC_N 6      /* samples per prompt */
#define EC_ARITH 12 /* arithmetic records */
#define EC_PROMPTS (EC_ARITH + 2)

static char g_build[PATH_MAX], g_tmp[PATH_MAX];
static bool g_verbose;

static ProcResult run(const char *const *argv)
{
    char       path[PATH_MAX + 32];
    ProcResult r;
    testfs_path(path, sizeof path, "%s/%s", g_build, argv[0]);
    int rc = proc_run(path, argv, NULL, EC_TIMEOUT_S, &r);
    EXPECT_RUN(rc == 0 && r.signal == 0, &r, "'%s' did not run to its end", r.cmd);
    if (g_verbose) printf("  eval_cli: exit %d in %.2fs: %s\n", r.status, r.seconds, r.cmd);
    return r;
}

/* The data: 1-digit sums as "arith" records, then the two code records. */
static void write_data(const char *path)
{
    FILE *f = fopen(path, "w");
    CHECK(f);
    for (int i = 0; i < EC_ARITH; i++) {
        int a = (i * 7 + 3) % 10, b = (i * 3 + 1) % 10;
        fprintf(f, "{\"prompt\": \"%d+%d=\", \"answer\": \"%d\", \"task\": \"arith\"}\n", a, b,
                a + b);
    }
    fprintf(f, "{\"prompt\": \"1+1=\", \"task\": \"code\", \"meta\": {\"prefix\": \"# \", "
               "\"tests\": [\"assert 1 == 1\"]}}\n");
    fprintf(f, "{\"prompt\": \"2+2=\", \"task\": \"code\", \"meta\": {\"prefix\": \"# \", "
               "\"tests\": [\"assert 1 == 2\"]}}\n");
    CHECK(fclose(f) == 0);
}

static json_t *load(const char *path)
{
    json_error_t e;
    json_t      *o = json_load_file(path, 0, &e);
    EXPECT(o != NULL, "'%s': %s (line %d)", path, e.text, e.line);
    return o;
}

static double num(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* One prompt's samples as the completions file has them. */
typedef struct {
    char id[256];
    int  n, correct;
    char answers[EC_N][64];
    bool has[EC_N], is_correct[EC_N];
} Samples;

static int read_completions(const char *path, Samples *p, int max)
{
    char *text = testfs_read(path, 16u << 20);
    int   n = 0;
    if (!EXPECT(text, "no '%s'", path)) return 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t      *o = json_loads(line, 0, &e);
        const char  *id = json_string_value(json_object_get(o, "id"));
        int          j = (int)num(o, "sample");
        if (!EXPECT(o && id && j >= 0 && j < EC_N, "'%s': a bad line '%s'", path, line)) {
            json_decref(o);
            break;
        }
        if (j == 0 && n < max) snprintf(p[n++].id, sizeof p[0].id, "%s", id);
        Samples *s = &p[n - 1];
        EXPECT(!strcmp(s->id, id) && s->n == j, "'%s': sample %d of '%s' out of order", path, j,
               id);
        json_t *a = json_object_get(o, "answer");
        s->has[j] = json_is_string(a);
        snprintf(s->answers[j], sizeof s->answers[j], "%s", s->has[j] ? json_string_value(a) : "");
        s->is_correct[j] = json_is_true(json_object_get(o, "correct"));
        s->correct += s->is_correct[j];
        s->n++;
        json_decref(o);
    }
    free(text);
    return n;
}

/* 1 - C(n-c,k)/C(n,k) with exact coefficients (n <= 30). */
static double pass_exact(int n, int c, int k)
{
    double C[31][31] = {{0}};
    for (int i = 0; i <= n; i++) {
        C[i][0] = 1;
        for (int j = 1; j <= i; j++) C[i][j] = C[i - 1][j - 1] + (j < i ? C[i - 1][j] : 0);
    }
    return 1.0 - (n - c >= k ? C[n - c][k] / C[n][k] : 0.0);
}

/* The report against the completions. */
static void check_report(const char *report, const char *completions)
{
    json_t *r = load(report);
    if (!r) return;
    json_t *res = json_object_get(r, "results"), *set = json_object_get(r, "settings");
    json_t *samp = json_object_get(set, "sampling"), *prompts = json_object_get(r, "prompts");
    json_t *pass = json_object_get(res, "pass_at_k"), *vote = json_object_get(res, "majority_vote");
    EXPECT(num(res, "prompts") == EC_PROMPTS && num(res, "samples") == EC_PROMPTS * EC_N &&
               num(res, "samples_per_prompt") == EC_N && num(res, "unscored") == 0 &&
               json_array_size(prompts) == EC_PROMPTS,
           "report: %g prompts, %g samples (%g not scored), expected %d x %d", num(res, "prompts"),
           num(res, "samples"), num(res, "unscored"), EC_PROMPTS, EC_N);
    EXPECT(num(samp, "n") == EC_N && num(samp, "temperature") == 1.0 && num(samp, "top_p") == 1.0 &&
               num(samp, "max_new") == 8 && num(samp, "seed") == 5 &&
               json_array_size(json_object_get(samp, "stop")) == 1 &&
               !strcmp(json_string_value(json_array_get(json_object_get(samp, "stop"), 0)), "=") &&
               num(set, "wall_seconds") > 0 && json_is_string(json_object_get(set, "date")) &&
               json_is_string(json_object_get(set, "data")),
           "report settings are not the run's");
    static Samples s[EC_PROMPTS + 1];
    memset(s, 0, sizeof s);
    int np = read_completions(completions, s, EC_PROMPTS + 1);
    EXPECT(np == EC_PROMPTS, "'%s': %d prompts, expected %d", completions, np, EC_PROMPTS);
    double total = 0, pass_k[EC_N + 1] = {0};
    int    vote_right = 0, mixed = 0;
    for (int i = 0; i < np && i < (int)json_array_size(prompts); i++) {
        json_t *p = json_array_get(prompts, (size_t)i);
        int     c = (int)num(p, "correct");
        EXPECT(c == s[i].correct && !strcmp(json_string_value(json_object_get(p, "id")), s[i].id),
               "prompt %d '%s': %d correct in the report, %d in the completions", i, s[i].id, c,
               s[i].correct);
        total += c;
        mixed += c > 0 && c < EC_N;
        for (int k = 1; k <= EC_N; k++) pass_k[k] += pass_exact(EC_N, c, k) / np;
        json_t *v = json_object_get(p, "vote");
        if (i >= EC_ARITH) {
            EXPECT(json_is_null(v) && c == (i == EC_ARITH ? EC_N : 0),
                   "code prompt %d: %d correct (expected %d) and a vote", i, c,
                   i == EC_ARITH ? EC_N : 0);
            continue;
        }
        /* The vote by hand: the most frequent answer, ties to the one given first. */
        int best = -1, best_n = 0;
        for (int j = 0; j < EC_N; j++) {
            if (!s[i].has[j]) continue;
            int cnt = 0, first = j;
            for (int q = 0; q < EC_N; q++)
                if (s[i].has[q] && !strcmp(s[i].answers[q], s[i].answers[j])) {
                    cnt++;
                    if (q < first) first = q;
                }
            if (first == j && cnt > best_n) best = j, best_n = cnt;
        }
        if (best < 0) {
            EXPECT(json_is_null(v), "prompt %d: a vote without any answer", i);
            continue;
        }
        vote_right += s[i].is_correct[best];
        EXPECT(json_is_object(v) &&
                   !strcmp(json_string_value(json_object_get(v, "answer")), s[i].answers[best]) &&
                   num(v, "count") == best_n &&
                   json_is_true(json_object_get(v, "correct")) == s[i].is_correct[best],
               "prompt %d: the vote is not '%s' x%d (correct %d)", i, s[i].answers[best], best_n,
               s[i].is_correct[best]);
    }
    double acc = total / (EC_PROMPTS * EC_N);
    EXPECT(fabs(num(pass, "1") - num(res, "accuracy")) < 1e-12 &&
               fabs(num(pass, "1") - acc) < 1e-12,
           "pass@1 %.15g, accuracy %.15g, per-sample accuracy of the completions %.15g",
           num(pass, "1"), num(res, "accuracy"), acc);
    for (int k = 1; k <= EC_N; k++) {
        char key[8];
        snprintf(key, sizeof key, "%d", k);
        EXPECT(fabs(num(pass, key) - pass_k[k]) < 1e-12, "pass@%d %.15g, by exact binomials %.15g",
               k, num(pass, key), pass_k[k]);
    }
    const char *note = json_string_value(json_object_get(vote, "note"));
    EXPECT(num(vote, "prompts") == EC_ARITH && num(vote, "correct") == vote_right && note &&
               strstr(note, "scorer code reads no answer"),
           "majority vote: %g of %g, by hand %d of %d; note '%s'", num(vote, "correct"),
           num(vote, "prompts"), vote_right, EC_ARITH, note ? note : "");
    EXPECT(mixed > 0, "no prompt has both right and wrong samples: pass@k checks little");
    if (g_verbose)
        printf("  eval_cli: pass@1 %.4f pass@%d %.4f vote %g/%d; %d prompts mixed\n",
               num(pass, "1"), EC_N, pass_k[EC_N], num(vote, "correct"), EC_ARITH, mixed);
    json_decref(r);
}

/* The report minus its settings (which name the batch and the time). */
static json_t *results_of(const char *path)
{
    json_t *r = load(path);
    if (r) json_object_del(r, "settings");
    return r;
}

static void test_bad_input(const char *ck, const char *data)
{
    char bad[PATH_MAX + 32], nosuch[PATH_MAX + 32], out_bad[PATH_MAX + 64];
    testfs_path(bad, sizeof bad, "%s/bad.jsonl", g_tmp);
    testfs_path(nosuch, sizeof nosuch, "%s/nosuch.jsonl", g_tmp);
    testfs_path(out_bad, sizeof out_bad, "%s/no/such/dir/r.json", g_tmp);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": \"arith\"}\n"
                       "not json\n"
                       "{\"prompt\": \"1+1=\", \"task\": \"nope\"}\n";
    testfs_write(bad, text, strlen(text));
    static const struct {
        const char *args[6];
        int         status;
        const char *says;
    } cases[] = {
        {{"--data", "@nosuch"}, 1, "nosuch.jsonl"},
        {{"--data", "@bad"}, 1, "bad.jsonl:2: not JSON"},
        {{"--data", "@data", "--n", "0"}, 2, "--n '0'"},
        {{"--data", "@data", "--top-p", "1.5"}, 2, "--top-p '1.5'"},
        {{"--data", "@data", "--temperature", "-1"}, 2, "--temperature '-1'"},
        {{"--data", "@data", "--stop", "\\q"}, 2, "unknown escape"},
        {{"--data", "@data", "--arith", "5"}, 2, "--data FILE.jsonl or --arith N"},
        {{"--data", "@data", "--scorer", "nope"}, 1, "unknown scorer 'nope'"},
        {{"--data", "@data", "--out", "@out_bad"}, 1, "r.json"},
        {{"--arith", "5", "--template", "raw"}, 2, "--template applies to --data only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[12] = {"rlhf-eval", "--ckpt", ck};
        int         n = 3;
        for (int k = 0; k < 6 && cases[i].args[k]; k++) {
            const char *a = cases[i].args[k];
            argv[n++] = !strcmp(a, "@nosuch")    ? nosuch
                        : !strcmp(a, "@bad")     ? bad
                        : !strcmp(a, "@data")    ? data
                        : !strcmp(a, "@out_bad") ? out_bad
                                                 : a;
        }
        ProcResult r = run(argv);
        EXPECT_RUN(r.status == cases[i].status && strstr(r.err, cases[i].says), &r,
                   "case %zu: exit %d, expected %d with '%s' on stderr", i, r.status,
                   cases[i].status, cases[i].says);
        proc_result_free(&r);
    }
    /* No policy; a checkpoint that is not there. */
    const char *none[] = {"rlhf-eval", "--data", data, NULL};
    ProcResult  r = run(none);
    EXPECT_RUN(r.status == 2 && strstr(r.err, "give the policy"), &r, "no policy: exit %d",
               r.status);
    proc_result_free(&r);
    const char *gone[] = {"rlhf-eval", "--ckpt", nosuch, "--data", data, NULL};
    r = run(gone);
    EXPECT_RUN(r.status == 1 && strstr(r.err, "nosuch.jsonl': No such file"), &r,
               "a missing checkpoint: exit %d", r.status);
    proc_result_free(&r);
}

/* Reads the n-th line of a JSONL file already split into lines. */
static json_t *line_json(char **lines, int i)
{
    json_error_t e;
    return json_loads(lines[i], 0, &e);
}

static int split(char *text, char **lines, int max)
{
    int   n = 0;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    return n;
}

/* Every converted record builds HumanEval's own program around the
 * canonical solution; the files load whole. */
static void check_converted(const char *he, const char *conv, bool is_instruct)
{
    char *orig = testfs_read(he, 16u << 20), *text = testfs_read(conv, 16u << 20);
    if (!EXPECT(orig && text, "cannot read '%s' or '%s'", he, conv)) {
        free(orig);
        free(text);
        return;
    }
    static char *lo[200], *lc[200];
    int          no = split(orig, lo, 200), nc = split(text, lc, 200), same = 0;
    EXPECT(no == 164 && nc == 164, "%d problems, %d records", no, nc);
    for (int i = 0; i < no && i < nc; i++) {
        json_t     *p = line_json(lo, i), *r = line_json(lc, i);
        const char *prompt = json_string_value(json_object_get(p, "prompt"));
        const char *canon = json_string_value(json_object_get(p, "canonical_solution"));
        const char *test = json_string_value(json_object_get(p, "test"));
        const char *ep = json_string_value(json_object_get(p, "entry_point"));
        char       *meta = json_dumps(json_object_get(r, "meta"), JSON_COMPACT);
        /* A chat model answers with the whole function in a fence. */
        size_t cap = strlen(prompt) + strlen(canon) + 32;
        char  *completion = xmalloc(cap);
        snprintf(completion, cap, is_instruct ? "```python\n%s%s```\n" : "%s%s",
                 is_instruct ? prompt : "", canon);
        size_t wcap = 2 * strlen(prompt) + strlen(canon) + strlen(test) + strlen(ep) + 32;
        char  *want = xmalloc(wcap);
        snprintf(want, wcap, "%s%s%s\n%s\ncheck(%s)\n", prompt, is_instruct ? prompt : "", canon,
                 test, ep);
        SandboxProgram prog;
        char           why[200];
        /* The prompt given to the builder is not the prefix: meta's is used. */
        int rc = sandbox_program_build("(not this)", completion, meta, &prog, why, sizeof why);
        same += rc == 0 && !strcmp(prog.code, want) &&
                !strcmp(json_string_value(json_object_get(r, "task")), "code") &&
                strstr(json_string_value(json_object_get(r, "prompt")), prompt);
        if (rc == 0) sandbox_program_free(&prog);
        free(want);
        free(completion);
        free(meta);
        json_decref(p);
        json_decref(r);
    }
    EXPECT(same == 164, "%s: %d of 164 records build HumanEval's program", conv, same);
    free(orig);
    free(text);
    const char *gguf = fixture_smollm2_path("eval_cli (HumanEval records)");
    Bpe        *bpe = NULL;
    if (!gguf || bpe_load(gguf, &bpe)) return;
    DatasetOpts o = {.bpe = bpe, .is_raw = !is_instruct, .max_prompt_ids = 2048};
    Dataset    *d = NULL;
    fileio_capture_begin();
    int rc = dataset_open(conv, &o, &d);
    free(fileio_capture_end(g_verbose));
    DatasetStats st = {0};
    if (d) dataset_stats(d, &st);
    EXPECT(rc == 0 && st.good == 164 && st.bad == 0, "'%s' as %s prompts: %s, %llu good", conv,
           is_instruct ? "chat" : "raw", err_str(rc), (unsigned long long)st.good);
    if (g_verbose && d)
        printf("  eval_cli: %s: 164 records build HumanEval's programs; prompts of up to %d ids\n",
               conv, dataset_max_ids(d));
    dataset_free(&d);
    bpe_free(&bpe);
}

static void test_humaneval_records(void)
{
    const char *he = "data/humaneval/HumanEval.jsonl";
    if (access(he, R_OK) != 0) {
        printf("eval_cli (HumanEval records): skipped: run make humaneval (no %s)\n", he);
        return;
    }
    for (int k = 0; k < 2; k++) {
        char out[PATH_MAX + 32];
        testfs_path(out, sizeof out, "%s/he-%d.jsonl", g_tmp, k);
        const char *argv[] = {"python3", "deploy/humaneval_jsonl.py", he,
                              out,       k ? "--instruct" : NULL,     NULL};
        ProcResult  r;
        int         rc = proc_run("/usr/bin/python3", argv, NULL, EC_TIMEOUT_S, &r);
        bool        ok = EXPECT_RUN(rc == 0 && r.status == 0 && strstr(r.err, "164 problems"), &r,
                                    "humaneval_jsonl.py: exit %d", r.status);
        proc_result_free(&r);
        if (ok) check_converted(he, out, k == 1);
    }
}

int eval_cli_selftest(bool verbose)
{
    g_verbose = verbose;
    proc_build_dir(g_build, sizeof g_build);
    if (!EXPECT(testfs_tmpdir_new("eval-cli", g_tmp, sizeof g_tmp) == 0, "temp directory"))
        return expect_end();
    char ck[PATH_MAX + 8], data[PATH_MAX + 16], rep[PATH_MAX + 16], comp[PATH_MAX + 16],
        rep2[PATH_MAX + 16], rep3[PATH_MAX + 16];
    testfs_path(ck, sizeof ck, "%s/ck", g_tmp);
    testfs_path(data, sizeof data, "%s/data.jsonl", g_tmp);
    testfs_path(rep, sizeof rep, "%s/r.json", g_tmp);
    testfs_path(comp, sizeof comp, "%s/c.jsonl", g_tmp);
    testfs_path(rep2, sizeof rep2, "%s/r2.json", g_tmp);
    testfs_path(rep3, sizeof rep3, "%s/r3.json", g_tmp);
    write_data(data);
    /* A little training: 1-digit sums are right about half the time. */
    const char *sft[] = {"rlhf-sft", "--out",      ck,   "--steps",  "200", "--max-digits",
                         "1",        "--dim",      "64", "--layers", "2",   "--heads",
                         "4",        "--kv-heads", "2",  "--hidden", "128", "--batch",
                         "32",       "--seed",     "3",  "--eval-n", "20",  "--eval-every",
                         "0",        NULL};
    ProcResult  r = run(sft);
    bool        ok = EXPECT_RUN(r.status == 0, &r, "rlhf-sft: exit %d", r.status);
    proc_result_free(&r);
    if (!ok) goto out;
    /* The stop "=" never shows in a sum's answer: a real stop string that cuts nothing right. */
    const char *ev[] = {"rlhf-eval", "--ckpt",        ck,   "--data",    data, "--n",
                        "6",         "--temperature", "1",  "--max-new", "8",  "--seed",
                        "5",         "--batch",       "5",  "--stop",    "=",  "--out",
                        rep,         "--completions", comp, NULL};
    r = run(ev);
    ok = EXPECT_RUN(r.status == 0 && strstr(r.out, "pass@1") && strstr(r.out, "pass@6") &&
                        strstr(r.out, "majority vote") && strstr(r.out, "wall time") &&
                        strstr(r.err, "eval ") && strstr(r.err, "sample/s"),
                    &r, "rlhf-eval: exit %d, expected 0 with the table and a progress line",
                    r.status);
    proc_result_free(&r);
    if (ok) check_report(rep, comp);
    /* Same seed, another batch size: the same report. */
    ev[14] = "3";
    ev[17] = "--out";
    ev[18] = rep2;
    ev[19] = NULL;
    r = run(ev);
    EXPECT_RUN(r.status == 0, &r, "rlhf-eval --batch 3: exit %d", r.status);
    proc_result_free(&r);
    json_t *a = results_of(rep), *b = results_of(rep2);
    EXPECT(a && b && json_equal(a, b), "batches of 5 and 3 with seed 5 give different reports");
    json_decref(a);
    json_decref(b);
    /* The built-in task. */
    const char *ar[] = {"rlhf-eval", "--ckpt", ck,  "--arith",       "20",  "--arith-digits",
                        "1",         "--n",    "2", "--temperature", "0.5", "--out",
                        rep3,        NULL};
    r = run(ar);
    EXPECT_RUN(r.status == 0, &r, "rlhf-eval --arith: exit %d", r.status);
    proc_result_free(&r);
    json_t *c = load(rep3);
    json_t *bi = json_object_get(json_object_get(c, "settings"), "builtin");
    EXPECT(c && num(json_object_get(c, "results"), "prompts") == 20 && bi &&
               !strcmp(json_string_value(json_object_get(bi, "task")), "arith") &&
               num(json_object_get(json_object_get(c, "results"), "majority_vote"), "prompts") ==
                   20,
           "--arith 20: not a report of 20 arithmetic problems with votes");
    json_decref(c);
    test_bad_input(ck, data);
    test_humaneval_records();
out:
    EXPECT(testfs_tmpdir_remove(g_tmp) == 0, "cannot remove '%s'", g_tmp);
    return expect_end();
}
