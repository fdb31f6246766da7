/* scorer's self-test: the built-in arith and arith_chat scorers on worked
 * examples (with and without a format bonus), a prompt without an answer,
 * specs resolved against the registry (a server scorer summed with
 * built-ins, meta passed through, a "code" scorer taking over the remote
 * built-in's name and record check, unknown names listed), and the
 * registry's rules (names, duplicates, capacity, the list). */
#include "reward_server/scorer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/tasks/chat_task.h"
#include "reward_server/sandbox_scorer.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* Worked examples: completion, answer, truncated -> reward, correct, format
 * without and with a 0.1 format bonus. */
static void test_arith(const Scorer *s, const Scorer *sb, bool verbose)
{
    struct {
        const char *completion, *answer;
        bool        is_truncated;
        float       reward, correct, format, reward_bonus;
    } ex[] = {
        {"82", "82", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* right */
        {"83", "82", false, 0.0f, 0.0f, 1.0f, 0.1f},  /* wrong but an integer */
        {"-2", "-2", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* negative answer */
        {"8a", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},  /* not an integer */
        {"", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},    /* stopped at once */
        {"82", "82", true, 0.0f, 0.0f, 0.0f, 0.0f},   /* cut off by the length cap */
        {"820", "82", false, 0.0f, 0.0f, 1.0f, 0.1f}, /* a prefix is not enough */
        {" 82", "82", false, 0.0f, 0.0f, 0.0f, 0.0f}, /* exact match, no trimming */
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        ScorerInput  in = {.prompt = "40+42=",
                           .completion = ex[i].completion,
                           .answer = ex[i].answer,
                           .is_truncated = ex[i].is_truncated};
        ScorerResult res, resb;
        char         why[128];
        int          rc = scorer_run(s, &in, &res, why, sizeof why);
        int          rcb = scorer_run(sb, &in, &resb, why, sizeof why);
        bool ok = rc == 0 && rcb == 0 && res.n_components == 2 && res.reward == ex[i].reward &&
                  !strcmp(res.components[0].name, "correct") &&
                  res.components[0].value == ex[i].correct &&
                  !strcmp(res.components[1].name, "format") &&
                  res.components[1].value == ex[i].format &&
                  fabsf(resb.reward - ex[i].reward_bonus) < 1e-6f;
        if (verbose)
            printf("  arith %-5s answer %-3s %-9s -> reward %.2f (bonus %.2f) correct %.0f "
                   "format %.0f %s\n",
                   ex[i].completion, ex[i].answer, ex[i].is_truncated ? "truncated" : "stopped",
                   res.reward, resb.reward, res.components[0].value, res.components[1].value,
                   ok ? "ok" : "WRONG");
        EXPECT(ok,
               "arith '%s' answer '%s' %s: rc %d/%d, reward %.2f (bonus %.2f) correct %.0f format "
               "%.0f; expected 0/0, %.2f (%.2f) %.0f %.0f",
               ex[i].completion, ex[i].answer, ex[i].is_truncated ? "truncated" : "stopped", rc,
               rcb, res.reward, resb.reward, res.components[0].value, res.components[1].value,
               ex[i].reward, ex[i].reward_bonus, ex[i].correct, ex[i].format);
    }
}

/* arith_chat: tolerant of surrounding words; form earns only with the answer. */
static void test_arith_chat(const Scorer *sc, bool verbose)
{
    struct {
        const char *completion;
        bool        is_truncated;
        float       reward, correct, format;
    } cx[] = {
        {"82", false, 1.2f, 1, 1},  {"The answer is 82.", false, 1.0f, 1, 0},
        {"83.", false, 0.0f, 0, 1}, {"I think 37 + 45 is", false, 0.0f, 0, 0},
        {"82", true, 1.0f, 1, 0},   {"82 + 1 = 83 and", true, 0.0f, 0, 0},
    };
    for (size_t i = 0; i < sizeof cx / sizeof cx[0]; i++) {
        ScorerInput  in = {.prompt = "What is 37 + 45? Reply with the number only.",
                           .completion = cx[i].completion,
                           .answer = "82",
                           .is_truncated = cx[i].is_truncated};
        ScorerResult res;
        char         why[128];
        int          rc = scorer_run(sc, &in, &res, why, sizeof why);
        bool ok = rc == 0 && res.n_components == 2 && fabsf(res.reward - cx[i].reward) < 1e-6f &&
                  !strcmp(res.components[0].name, "correct") &&
                  res.components[0].value == cx[i].correct &&
                  !strcmp(res.components[1].name, "format") &&
                  res.components[1].value == cx[i].format;
        if (verbose)
            printf("  arith_chat %-20s %-9s -> reward %.2f %s\n", cx[i].completion,
                   cx[i].is_truncated ? "truncated" : "stopped", res.reward, ok ? "ok" : "WRONG");
        EXPECT(ok,
               "arith_chat '%s' %s: rc %d, reward %.2f correct %.0f format %.0f; expected 0, %.2f "
               "%.0f %.0f",
               cx[i].completion, cx[i].is_truncated ? "truncated" : "stopped", rc, res.reward,
               res.components[0].value, res.components[1].value, cx[i].reward, cx[i].correct,
               cx[i].format);
    }
}

/* A server scorer for the spec tests: reward = bytes of meta / 10, one
 * component "meta_bytes". */
static int meta_len_scorer(const ScorerInput *in, const void *opts, ScorerResult *out, char *why,
                           size_t why_len)
{
    size_t n = in->meta_json ? strlen(in->meta_json) : 0;
    snprintf(out->components[0].name, sizeof out->components[0].name, "meta_bytes");
    out->components[0].value = (float)n;
    out->n_components = 1;
    out->reward = (float)n / 10.0f;
    return 0;
}

static void test_specs(ScorerRegistry *r, bool verbose)
{
    EXPECT(scorer_register(r, "metalen", meta_len_scorer, NULL) == 0, "'metalen' refused");
    /* "code" is a built-in without a function here: a server scorer takes it over. */
    EXPECT(scorer_register(r, "code", meta_len_scorer, NULL) == 0, "'code' refused");
    ScoreSpec    spec;
    char         why[400] = "";
    int          rc = scorer_resolve(r, "metalen:0.5,exact:2", &spec, why, sizeof why);
    ScorerInput  in = {.prompt = "Capital of France?",
                       .completion = "Paris",
                       .answer = "paris",
                       .meta_json = "{\"k\":1}"};
    ScorerResult res;
    if (EXPECT(rc == 0, "scorer_resolve('metalen:0.5,exact:2'): %s", why)) {
        rc = score_spec_run(&spec, &in, &res, why, sizeof why);
        /* 0.5 * 7/10 + 2 * 1 = 2.35 */
        EXPECT(rc == 0 && fabsf(res.reward - 2.35f) < 1e-6f && res.n_components == 2 &&
                   !strcmp(res.components[0].name, "metalen") && res.components[0].value == 0.7f &&
                   !strcmp(res.components[1].name, "exact") && res.components[1].value == 1.0f,
               "metalen:0.5,exact:2: rc %d reward %g (expected 2.35), components %d", rc,
               res.reward, res.n_components);
        if (verbose) printf("  metalen:0.5,exact:2 -> reward %.2f\n", res.reward);
    }
    rc = scorer_resolve(r, "code", &spec, why, sizeof why);
    char cwhy[200] = "";
    EXPECT(rc == 0 && score_spec_is_local(&spec) &&
               score_spec_check_record(&spec, "", "{}", cwhy, sizeof cwhy) == ERR_ARG &&
               strstr(cwhy, "tests"),
           "a server 'code' scorer: rc %d, local %d, record check '%s' (expected the built-in's)",
           rc, rc ? -1 : score_spec_is_local(&spec), cwhy);
    rc = scorer_resolve(r, "boxed:1,nope", &spec, why, sizeof why);
    EXPECT(rc == ERR_ARG && strstr(why, "unknown scorer 'nope'") && strstr(why, "have arith,"),
           "an unknown scorer: rc %d why '%s'", rc, why);
    rc = scorer_resolve(r, "", &spec, why, sizeof why);
    EXPECT(rc == ERR_ARG, "an empty task resolved (there is no default)");
}

/* Registry rules; the refusals are logged, which the capture checks. */
static void test_registry(ScorerRegistry *r, const ScorerArithOpts *bonus, bool verbose)
{
    fileio_capture_begin();
    EXPECT(scorer_find(r, "nope") == NULL, "scorer_find found 'nope'");
    EXPECT(scorer_register(r, "arith", score_arith, NULL) == ERR_ARG,
           "a second 'arith' was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "Bad Name", score_arith, NULL) == ERR_ARG,
           "'Bad Name' was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "", score_arith, NULL) == ERR_ARG,
           "an empty name was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "arith-2", score_arith, bonus) == 0, "'arith-2' was refused");
    int n = 0;
    for (int i = 0; i < 2 * SCORER_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        if (scorer_register(r, name, score_arith, NULL) != 0) break;
        n++;
    }
    char list[1024];
    scorer_list(r, list, sizeof list);
    int listed = 1;
    for (const char *p = list; *p; p++) listed += *p == ',';
    EXPECT(listed == SCORER_MAX, "the registry took %d scorers, expected SCORER_MAX = %d", listed,
           SCORER_MAX);
    char *log = fileio_capture_end(verbose);
    EXPECT(strstr(log, "'arith' is already registered") && strstr(log, "registry full"),
           "the refusals logged '%s', expected \"'arith' is already registered\" and "
           "\"registry full\"",
           log);
    free(log);
    const char *want = "arith,arith_chat,exact,number,choice,boxed,regex,format_answer_tag,"
                       "format_think,gold_arith,gold_chat,metalen,code,arith-2,s0";
    EXPECT(strncmp(list, want, strlen(want)) == 0,
           "scorer_list gave '%s', expected it to start '%s'", list, want);
    if (verbose) printf("  scorers: %s\n", list);
}

/* The first record of the shipped examples/code/train.jsonl ("add_k(x)
 * returns x plus 2", three asserts) through a registry whose "code" is the
 * real sandboxed scorer: a fenced chat answer that is right passes all,
 * one that returns 2 passes one of three. */
static void test_code_example(bool verbose)
{
    FILE *f = fopen("examples/code/train.jsonl", "r");
    char  line[4096] = "";
    if (!EXPECT(f && fgets(line, sizeof line, f), "cannot read examples/code/train.jsonl")) {
        if (f) fclose(f);
        return;
    }
    fclose(f);
    json_error_t    e;
    json_t         *rec = json_loads(line, 0, &e);
    char           *meta = json_dumps(json_object_get(rec, "meta"), JSON_COMPACT);
    const char     *task = json_string_value(json_object_get(rec, "task"));
    char            tmp[256];
    SandboxScorer  *sb = NULL;
    ScorerRegistry *r = scorer_registry_new();
    if (EXPECT(meta && task && testfs_tmpdir_new("scorer-code", tmp, sizeof tmp) == 0,
               "examples/code/train.jsonl line 1 has no task or meta")) {
        SandboxScorerConfig cfg = {.sandbox = SANDBOX_DEFAULTS};
        cfg.sandbox.tmp_dir = tmp;
        cfg.sandbox.workers = 1;
        sb = sandbox_scorer_new(&cfg, NULL);
        ScoreSpec spec;
        char      why[300] = "";
        int       rc = -1;
        if (EXPECT(sb && scorer_register_builtins(r, NULL) == 0 &&
                       scorer_register(r, SANDBOX_SCORER_NAME, sandbox_scorer_run, sb) == 0,
                   "no sandboxed code scorer"))
            rc = scorer_resolve(r, task, &spec, why, sizeof why);
        const char *answers[2] = {"```python\ndef add_k(x):\n    return x + 2\n```",
                                  "```python\ndef add_k(x):\n    return 2\n```"};
        const float want[2] = {1.0f, 1.0f / 3.0f};
        for (int i = 0; i < 2 && rc == 0; i++) {
            ScorerInput  in = {.prompt = json_string_value(json_object_get(rec, "prompt")),
                               .completion = answers[i],
                               .answer = "",
                               .meta_json = meta};
            ScorerResult res;
            int          src = score_spec_run(&spec, &in, &res, why, sizeof why);
            if (verbose) printf("  examples/code line 1, answer %d: reward %.3f\n", i, res.reward);
            EXPECT(src == 0 && fabsf(res.reward - want[i]) < 1e-5f,
                   "examples/code line 1, answer %d: rc %d (%s) reward %g, expected %g", i, src,
                   why, src ? 0.0 : res.reward, (double)want[i]);
        }
        EXPECT(rc == 0, "task '%s' did not resolve: %s", task ? task : "", why);
        sandbox_scorer_free(&sb);
        testfs_tmpdir_remove(tmp);
    }
    scorer_registry_free(&r);
    free(meta);
    json_decref(rec);
}

int scorer_selftest(bool verbose)
{
    ScorerArithOpts bonus = {.format_bonus = 0.1f};
    ScorerRegistry *r = scorer_registry_new();
    ScorerRegistry *rb = scorer_registry_new();
    int             rc = scorer_register_builtins(r, NULL);
    int             rcb = scorer_register_builtins(rb, &bonus);
    EXPECT(rc == 0 && rcb == 0, "scorer_register_builtins: %s and %s (bonus), expected ok",
           err_str(rc), err_str(rcb));

    const Scorer *s = scorer_find(r, "arith"), *sb = scorer_find(rb, "arith");
    if (EXPECT(s && sb && !scorer_find(r, "") && !scorer_find(r, NULL),
               "arith not found, or an empty name found a scorer (there is no default)")) {
        test_arith(s, sb, verbose);
        const Scorer *sc = scorer_find(r, CHAT_TASK_NAME);
        if (EXPECT(sc != NULL, "scorer '%s' not found", CHAT_TASK_NAME))
            test_arith_chat(sc, verbose);
        /* No answer: the prompt cannot be verified. */
        ScorerInput  in = {.prompt = "1+1=", .completion = "2", .answer = ""};
        ScorerResult res;
        char         why[128] = "";
        rc = scorer_run(s, &in, &res, why, sizeof why);
        EXPECT(rc == ERR_ARG && strstr(why, "no reference"),
               "a prompt without an answer: rc %d, why '%s'; expected ERR_ARG and 'no reference'",
               rc, why);
        test_specs(r, verbose);
        test_registry(r, &bonus, verbose);
    }
    scorer_registry_free(&r);
    scorer_registry_free(&rb);
    test_code_example(verbose);
    EXPECT(!r && !rb, "scorer_registry_free left a pointer set");
    return expect_end();
}
