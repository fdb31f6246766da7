/* eval's self-test on a small random char model: an untrained model
 * answers nothing right and the greedy evaluation does not depend on the
 * batch size; eval_run's samples, each from a generator of its own, are
 * the same whatever the batch and the first k of n are those of a run with
 * n = k; stop strings cut a completion exactly where the same sample
 * without them first shows the string; the callback sees every prompt once,
 * in order, with the scorer's answers and correctness consistent with the
 * text; a scorer that refuses counts samples as not scored; records whose
 * scorer runs only in the reward server are skipped; a callback's error
 * ends the run. */
#include "common/tasks/eval.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define MAX_P 12
#define MAX_N 6
#define MAX_TEXT 64

/* Everything a run handed to its callback. */
typedef struct {
    int        n_prompts;
    uint64_t   index[MAX_P];
    char       label[MAX_P][64];
    EvalSample s[MAX_P][MAX_N];
    char       text[MAX_P][MAX_N][MAX_TEXT];
    int        stop_after; /* > 0: return ERR_IO after this many prompts */
} Seen;

static int collect(void *ctx, const EvalPrompt *p)
{
    Seen *v = ctx;
    CHECK(v->n_prompts < MAX_P && p->n_samples <= MAX_N);
    int k = v->n_prompts++;
    v->index[k] = p->index;
    snprintf(v->label[k], sizeof v->label[k], "%s", p->label);
    for (int j = 0; j < p->n_samples; j++) {
        v->s[k][j] = p->samples[j];
        v->s[k][j].text = NULL;
        snprintf(v->text[k][j], MAX_TEXT, "%s", p->samples[j].text ? p->samples[j].text : "");
    }
    return v->stop_after && v->n_prompts >= v->stop_after ? ERR_IO : 0;
}

static EvalConfig sampled(int n, int batch)
{
    return (EvalConfig){.n_samples = n,
                        .sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                        .max_new = 12,
                        .batch = batch,
                        .seed = 9,
                        .score_threads = 2,
                        .is_keep_text = true};
}

static bool same_samples(const Seen *a, int pa, int ja, const Seen *b, int pb, int jb)
{
    const EvalSample *x = &a->s[pa][ja], *y = &b->s[pb][jb];
    return x->n_tokens == y->n_tokens && x->finish == y->finish && x->reward == y->reward &&
           !strcmp(a->text[pa][ja], b->text[pb][jb]);
}

static void test_greedy(Model *m, const Tok *tok, bool verbose)
{
    TaskConfig tc = TASK_DEFAULTS;
    EvalResult a, b;
    CHECK(eval_arith(m, tok, &tc, 1, 50, 16, &a) == 0);
    CHECK(eval_arith(m, tok, &tc, 1, 50, 7, &b) == 0);
    EXPECT(a.accuracy == b.accuracy && a.format == b.format && a.n == 50,
           "batches of 16 and 7: accuracy %g and %g, format %g and %g, n %d; expected the same "
           "results of 50 problems",
           a.accuracy, b.accuracy, a.format, b.format, a.n);
    EXPECT(a.accuracy <= 0.05, "a random model's accuracy %g, expected at most 0.05", a.accuracy);
    if (verbose) printf("  eval: random model accuracy %.2f format %.2f\n", a.accuracy, a.format);
}

static void test_samples(Model *m, const Tok *tok, bool verbose)
{
    TaskConfig tc = TASK_DEFAULTS;
    tc.max_digits = 1;
    EvalSource  src = {.kind = EVAL_SRC_ARITH, .task = &tc, .task_seed = 4, .n = 5};
    static Seen a, b, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    EvalConfig ca = sampled(4, 3), cb = sampled(4, 7), cc = sampled(2, 5);
    EvalStats  st;
    CHECK(eval_run(m, tok, NULL, &src, &ca, collect, &a, &st) == 0);
    CHECK(eval_run(m, tok, NULL, &src, &cb, collect, &b, NULL) == 0);
    CHECK(eval_run(m, tok, NULL, &src, &cc, collect, &c, NULL) == 0);
    EXPECT(a.n_prompts == 5 && st.prompts == 5 && st.samples == 20 && st.skipped == 0 &&
               st.unscored == 0,
           "5 prompts x 4: %d prompts seen, stats %" PRIu64 " prompts %" PRIu64 " samples",
           a.n_prompts, st.prompts, st.samples);
    int differ = 0, distinct = 0;
    for (int i = 0; i < a.n_prompts; i++) {
        char want[32];
        snprintf(want, sizeof want, "arith:%d", i);
        EXPECT(a.index[i] == (uint64_t)i && !strcmp(a.label[i], want),
               "prompt %d came as index %" PRIu64 " '%s'", i, a.index[i], a.label[i]);
        for (int j = 0; j < 4; j++) {
            differ += !same_samples(&a, i, j, &b, i, j);
            if (j < 2) differ += !same_samples(&a, i, j, &c, i, j);
            distinct += j > 0 && strcmp(a.text[i][j], a.text[i][0]);
            const EvalSample *s = &a.s[i][j];
            /* The arith scorer reads the whole completion, unless truncated. */
            EXPECT(s->is_scored && s->has_answer == (s->finish != GEN_FINISH_LENGTH) &&
                       (!s->has_answer || !strcmp(s->answer, a.text[i][j])) &&
                       s->reward == (float)s->is_correct,
                   "prompt %d sample %d: '%s' finish %d answer %d '%s' reward %g correct %d", i, j,
                   a.text[i][j], s->finish, s->has_answer, s->answer, s->reward, s->is_correct);
        }
    }
    EXPECT(differ == 0,
           "%d samples differ between batches of 3 and 7, or between the first 2 of 4 and a "
           "run of 2",
           differ);
    EXPECT(distinct > 0, "every sample of every prompt is the same text at temperature 1");
    if (verbose)
        printf("  eval: 5 prompts x 4 samples alike in batches of 3 and 7 and as 2 of 4; e.g. "
               "'%s', '%s'\n",
               a.text[0][0], a.text[0][1]);
}

static void test_stops(Model *m, const Tok *tok, bool verbose)
{
    TaskConfig  tc = TASK_DEFAULTS;
    EvalSource  src = {.kind = EVAL_SRC_ARITH, .task = &tc, .task_seed = 2, .n = 6};
    static Seen plain, cut;
    memset(&plain, 0, sizeof plain);
    memset(&cut, 0, sizeof cut);
    EvalConfig  cp = sampled(3, 8), cs = sampled(3, 8);
    const char *stops[] = {"5", "a"};
    cs.stops = stops;
    cs.n_stops = 2;
    CHECK(eval_run(m, tok, NULL, &src, &cp, collect, &plain, NULL) == 0);
    CHECK(eval_run(m, tok, NULL, &src, &cs, collect, &cut, NULL) == 0);
    int n_cut = 0;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++) {
            const char *full = plain.text[i][j], *got = cut.text[i][j];
            size_t      at = strcspn(full, "5a");
            bool        has = full[at] != '\0';
            n_cut += has;
            /* With stops the sample is the same up to the first stop, cut there. */
            EXPECT(has ? strlen(got) == at && !strncmp(got, full, at) &&
                             cut.s[i][j].finish == GEN_FINISH_CALLER
                       : !strcmp(got, full) && cut.s[i][j].finish == plain.s[i][j].finish,
                   "prompt %d sample %d: '%s' without stops, '%s' (finish %d) with \"5\" and "
                   "\"a\"",
                   i, j, full, got, cut.s[i][j].finish);
        }
    EXPECT(n_cut > 0, "no sample of 18 held a stop string: the test checks nothing");
    if (verbose) printf("  eval: %d of 18 samples cut at a stop string, as without stops\n", n_cut);
}

static int refuse(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                  size_t why_len)
{
    snprintf(why, why_len, "refused on purpose");
    return ERR_ARG;
}

static void test_refusals(Model *m, const Tok *tok, bool verbose)
{
    TaskConfig tc = TASK_DEFAULTS;
    EvalSource src = {.kind = EVAL_SRC_ARITH, .task = &tc, .task_seed = 2, .n = 4};
    ScoreDef   bad = {"refuse", refuse, NULL, NULL, "refuses everything", NULL};
    ScoreSpec  spec = {.n_terms = 1, .is_bare = true, .terms = {{&bad, 1.0f}}};
    EvalConfig cfg = sampled(2, 3);
    cfg.spec = &spec;
    static Seen v;
    memset(&v, 0, sizeof v);
    EvalStats st;
    /* The warning is what is checked: logged whatever the runner's level. */
    log_init("eval", verbose ? LOG_DEBUG : LOG_WARN);
    fileio_capture_begin();
    int   rc = eval_run(m, tok, NULL, &src, &cfg, collect, &v, &st);
    char *log = fileio_capture_end(verbose);
    EXPECT(rc == 0 && st.unscored == 8 && v.n_prompts == 4 && !v.s[0][0].is_scored &&
               v.s[0][0].reward == 0 && !v.s[0][0].has_answer &&
               strstr(log, "arith:0: sample 0 not scored, counted as 0 (refused on purpose)"),
           "a refusing scorer: rc %d, %" PRIu64 " not scored of 8; log '%s'", rc, st.unscored, log);
    free(log);
    /* A callback's error ends the run with it. */
    memset(&v, 0, sizeof v);
    v.stop_after = 2;
    cfg = sampled(2, 3);
    rc = eval_run(m, tok, NULL, &src, &cfg, collect, &v, &st);
    EXPECT(rc == ERR_IO && v.n_prompts == 2, "a callback failing at prompt 2: rc %d after %d", rc,
           v.n_prompts);
    /* Bad configs are refused with a reason. */
    char        why[200];
    const char *empty[] = {""};
    cfg = sampled(2, 3);
    cfg.stops = empty;
    cfg.n_stops = 1;
    EXPECT(eval_config_check(&cfg, why, sizeof why) == ERR_ARG && strstr(why, "stop string 1"),
           "an empty stop string: '%s'", why);
    cfg = sampled(0, 3);
    EXPECT(eval_config_check(&cfg, why, sizeof why) == ERR_ARG, "0 samples per prompt accepted");
    cfg = sampled(2, 3);
    cfg.sampler.top_p = 0;
    EXPECT(eval_config_check(&cfg, why, sizeof why) == ERR_ARG && strstr(why, "top_p"),
           "top_p 0: '%s'", why);
}

/* A JSONL dataset: arith records scored here, a code record skipped (its
 * scorer runs only in the reward server). */
static void test_dataset(Model *m, const Tok *tok, bool verbose)
{
    char dir[512], path[600];
    CHECK(testfs_tmpdir_new("eval", dir, sizeof dir) == 0);
    testfs_path(path, sizeof path, "%s/d.jsonl", dir);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": \"arith\"}\n"
                       "{\"prompt\": \"2+2=\", \"task\": \"code\", \"meta\": {\"tests\": [\"assert "
                       "True\"]}}\n"
                       "{\"prompt\": \"3+4=\", \"answer\": \"7\", \"task\": \"arith\"}\n";
    testfs_write(path, text, strlen(text));
    DatasetOpts o = {.tok = tok, .max_prompt_ids = 32, .max_bad_percent = 0};
    Dataset    *d = NULL;
    fileio_capture_begin();
    int rc = dataset_open(path, &o, &d);
    free(fileio_capture_end(verbose));
    if (!EXPECT(rc == 0, "dataset_open: %s", err_str(rc))) return;
    EvalSource  src = {.kind = EVAL_SRC_DATASET, .data = d, .n = 10};
    static Seen v;
    memset(&v, 0, sizeof v);
    EvalConfig cfg = sampled(2, 4);
    EvalStats  st;
    rc = eval_run(m, tok, NULL, &src, &cfg, collect, &v, &st);
    EXPECT(rc == 0 && v.n_prompts == 2 && st.skipped == 1 && v.index[0] == 0 && v.index[1] == 2 &&
               strstr(v.label[1], "d.jsonl:3"),
           "2 arith records and a code one: rc %d, %d prompts (%" PRIu64 " skipped), second '%s'",
           rc, v.n_prompts, st.skipped, v.label[1]);
    EvalResult r;
    rc = eval_dataset(m, tok, NULL, d, 10, 2, 8, &r);
    EXPECT(rc == 0 && r.n == 2 && r.skipped == 1, "eval_dataset: rc %d n %d skipped %d", rc, r.n,
           r.skipped);
    dataset_free(&d);
    testfs_tmpdir_remove(dir);
}

int eval_selftest(bool verbose)
{
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    ModelConfig c = fixture_model_config(32, 1, 2, 1, 64, tok_vocab_size(tok), 64);
    c.tie_embeddings = true;
    Model *m = model_new(&c);
    model_init_random(m, 2, 0.02f);
    test_greedy(m, tok, verbose);
    /* Sharper logits, so samples end (EOS) and differ at temperature 1. */
    model_init_random(m, 3, 0.3f);
    test_samples(m, tok, verbose);
    test_stops(m, tok, verbose);
    test_refusals(m, tok, verbose);
    test_dataset(m, tok, verbose);
    model_free(&m);
    tok_free(&tok);
    return expect_end();
}
