/* score's self-test: the spec syntax (a table of good and bad specs), each
 * built-in scorer through a spec on worked examples (with meta tolerances,
 * a meta regex, truncation), weighted sums with their components and hand
 * computed rewards, the record checks a dataset runs, the remote "code"
 * scorer, a scorer that misbehaves, and the answers each scorer reads for
 * majority voting (a table: equal keys for answers read alike, none where
 * a scorer reads no answer). */
#include "common/tasks/score.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_parse(bool verbose)
{
    struct {
        const char *text;
        int         n_terms; /* 0: refused */
        bool        is_bare;
        const char *why; /* a word of the refusal */
    } ex[] = {
        {"boxed", 1, true, NULL},
        {"boxed:0.9,format_answer_tag:0.1", 2, false, NULL},
        {" exact : 2 , regex:-1", 2, false, NULL},
        {"number:1e-1", 1, false, NULL},
        {"arith_chat", 1, true, NULL},
        {"code:0.8,format_think:0.2", 2, false, NULL},
        {"", 0, false, "0 bytes"},
        {"nope", 0, false, "unknown scorer 'nope'"},
        {"boxed,boxed", 0, false, "twice"},
        {"boxed:0", 0, false, "every weight is 0"},
        {"boxed:1,gold_arith:0", 2, false, NULL},
        {"boxed:abc", 0, false, "weight 'abc'"},
        {"boxed:", 0, false, "weight ''"},
        {",boxed", 0, false, "not a scorer name"},
        {"boxed,", 0, false, "ends with ','"},
        {"Boxed", 0, false, "not a scorer name"},
        {"boxed:1e9", 0, false, "within"},
        {"boxed:nan", 0, false, "expected a number"},
        {"boxed:inf", 0, false, "expected a number"},
        {"boxed:1:2", 0, false, "weight '1:2'"},
        {"exact,number,choice,boxed,regex,format_think,format_answer_tag,arith,arith_chat", 0,
         false, "more than 8"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        ScoreSpec s;
        char      why[400] = "";
        int       rc = score_spec_parse(ex[i].text, score_builtin, NULL, &s, why, sizeof why);
        bool      ok = ex[i].n_terms
                           ? rc == 0 && s.n_terms == ex[i].n_terms && s.is_bare == ex[i].is_bare
                           : rc == ERR_ARG && strstr(why, ex[i].why);
        if (verbose)
            printf("  spec %-34.34s -> %s %s%s\n", ex[i].text, rc ? "refused" : "ok",
                   ok ? "ok" : "WRONG", rc ? why : "");
        EXPECT(ok, "score_spec_parse('%s'): rc %d, %d terms, why '%s'; expected %d terms%s%s",
               ex[i].text, rc, rc ? 0 : s.n_terms, why, ex[i].n_terms,
               ex[i].why ? ", why with " : "", ex[i].why ? ex[i].why : "");
    }
    /* The longest spec the wire's task carries, and one byte more. */
    char long_spec[SCORE_SPEC_MAX + 1];
    memset(long_spec, ' ', sizeof long_spec);
    memcpy(long_spec, "boxed", 5);
    long_spec[SCORE_SPEC_MAX - 1] = '\0';
    ScoreSpec s;
    char      why[200];
    EXPECT(score_spec_parse(long_spec, score_builtin, NULL, &s, why, sizeof why) == 0,
           "a %d-byte spec was refused: %s", SCORE_SPEC_MAX - 1, why);
    long_spec[SCORE_SPEC_MAX - 1] = ' ';
    long_spec[SCORE_SPEC_MAX] = '\0';
    EXPECT(score_spec_parse(long_spec, score_builtin, NULL, &s, why, sizeof why) == ERR_ARG,
           "a %d-byte spec was accepted", SCORE_SPEC_MAX);
}

typedef struct {
    const char *spec, *completion, *answer, *meta;
    bool        is_truncated;
    int         rc;
    float       reward;
    bool        is_correct;
} RunCase;

static void run_cases(const RunCase *ex, size_t n, bool verbose)
{
    for (size_t i = 0; i < n; i++) {
        ScoreSpec s;
        char      why[200] = "";
        int       rc = score_spec_parse(ex[i].spec, score_builtin, NULL, &s, why, sizeof why);
        if (!EXPECT(rc == 0, "spec '%s': %s", ex[i].spec, why)) continue;
        ScoreInput  in = {.prompt = "p",
                          .completion = ex[i].completion,
                          .answer = ex[i].answer,
                          .meta_json = ex[i].meta,
                          .is_truncated = ex[i].is_truncated};
        ScoreResult res;
        rc = score_spec_run(&s, &in, &res, why, sizeof why);
        bool ok = rc == ex[i].rc && (rc || (fabsf(res.reward - ex[i].reward) < 1e-6f &&
                                            score_is_correct(&res) == ex[i].is_correct));
        if (verbose)
            printf("  %-31.31s %-32.32s ans %-6.6s -> rc %d reward %.2f %s%s%s\n", ex[i].spec,
                   ex[i].completion, ex[i].answer, rc, rc ? 0.0 : res.reward, ok ? "ok" : "WRONG",
                   rc ? ": " : "", rc ? why : "");
        EXPECT(ok,
               "'%s' on '%s' (answer '%s', meta '%s'%s): rc %d (%s) reward %.3f correct %d; "
               "expected rc %d reward %.3f correct %d",
               ex[i].spec, ex[i].completion, ex[i].answer, ex[i].meta ? ex[i].meta : "",
               ex[i].is_truncated ? ", truncated" : "", rc, why, rc ? 0.0 : res.reward,
               rc ? 0 : score_is_correct(&res), ex[i].rc, ex[i].reward, ex[i].is_correct);
    }
}

static void test_builtins(bool verbose)
{
    static const RunCase ex[] = {
        /* gold_arith: exp(-|x-a|/(1+|a|/10)); a monitor term (weight 0) adds nothing. */
        {"gold_arith", "82", "82", "", false, 0, 1, true},
        {"gold_arith", "80", "82", "", false, 0, 0.80461506f, false},
        {"gold_arith", "82", "82", "", true, 0, -1, false},
        {"gold_arith", "eighty", "82", "", false, 0, -1, false},
        {"gold_arith", "82", "", "", false, ERR_ARG, 0, false},
        {"arith:1,gold_arith:0", "80", "82", "", false, 0, 0, false},
        {"gold_arith:0,arith:1", "82", "82", "", false, 0, 1, true},
        /* exact: normalised, the <answer> block when there is one. */
        {"exact", "Paris.", "paris", "", false, 0, 1, true},
        {"exact", "It is Paris", "paris", "", false, 0, 0, false},
        {"exact", "I think... <answer> PARIS </answer>", "Paris", "", false, 0, 1, true},
        {"exact", "x", "", "", false, ERR_ARG, 0, false},
        /* number: the last number of the answer text, within tolerance. */
        {"number", "37 + 45 = 82", "82", "", false, 0, 1, true},
        {"number", "about 3.1416", "3.14159", "", false, 0, 0, false},
        {"number", "about 3.1416", "3.14159", "{\"rel_tol\": 0.001}", false, 0, 1, true},
        {"number", "0.3334", "1/3", "{\"abs_tol\": 0.001}", false, 0, 1, true},
        {"number", "<answer>7</answer> (not 8)", "7", "", false, 0, 1, true},
        {"number", "82", "82", "{\"rel_tol\": -1}", false, ERR_ARG, 0, false},
        {"number", "82", "82", "[1]", false, ERR_ARG, 0, false},
        {"number", "82", "eighty-two", "", false, ERR_ARG, 0, false},
        {"number", "no number", "82", "", false, 0, 0, false},
        {"number", "82", "82", "", true, 0, 1, true}, /* cut off after the answer: still right */
        /* choice */
        {"choice", "The answer is (B).", "B", "", false, 0, 1, true},
        {"choice", "The answer is (B).", "(c)", "", false, 0, 0, false},
        {"choice", "B", "G", "", false, ERR_ARG, 0, false},
        /* boxed */
        {"boxed", "so \\boxed{\\frac{1}{2}}", "0.5", "", false, 0, 1, true},
        {"boxed", "so \\boxed{2} no \\boxed{3}", "2", "", false, 0, 0, false},
        /* regex: the meta pattern, else the answer as the pattern */
        {"regex", "yes", "^(yes|no)$", "", false, 0, 1, true},
        {"regex", "42", "ignored", "{\"regex\": \"^[0-9]+$\"}", false, 0, 1, true},
        {"regex", "42", "x", "{\"regex\": \"(a)\\\\1\"}", false, ERR_ARG, 0, false},
        {"regex", "42", "x", "{\"regex\": 5}", false, ERR_ARG, 0, false},
        /* formats: never for a truncated completion */
        {"format_answer_tag", "<answer>1</answer>", "", "", false, 0, 1, true},
        {"format_answer_tag", "<answer>1</answer>", "", "", true, 0, 0, false},
        {"format_think", "<think>t</think><answer>1</answer>", "", "", false, 0, 1, true},
        /* the built-in tasks, as before */
        {"arith", "82", "82", "", false, 0, 1, true},
        {"arith_chat", "82", "82", "", false, 0, 1.2f, true},
        {"arith_chat", "The answer is 82.", "82", "", false, 0, 1.0f, true},
        /* weighted sums: sum of weight x reward, correct = the first term */
        {"boxed:0.9,format_answer_tag:0.1", "<answer>\\boxed{42}</answer>", "42", "", false, 0,
         1.0f, true},
        {"boxed:0.9,format_answer_tag:0.1", "\\boxed{42}", "42", "", false, 0, 0.9f, true},
        {"boxed:0.9,format_answer_tag:0.1", "<answer>\\boxed{41}</answer>", "42", "", false, 0,
         0.1f, false},
        {"format_answer_tag:0.1,boxed:0.9", "<answer>\\boxed{41}</answer>", "42", "", false, 0,
         0.1f, true},
        {"number:2,regex:-0.5", "82 82", "82", "{\"regex\": \"82 82\"}", false, 0, 1.5f, true},
        {"arith_chat:1", "82", "82", "", false, 0, 1.2f, true},
        {"boxed:1,exact:1", "\\boxed{5}", "", "", false, ERR_ARG, 0, false},
        /* code: only the reward server runs it */
        {"code", "def f(): pass", "", "{\"tests\": \"assert f() is None\"}", false, ERR_UNSUPPORTED,
         0, false},
    };
    run_cases(ex, N_OF(ex), verbose);

    /* Components of a sum: one per term, unweighted. */
    ScoreSpec s;
    char      why[200];
    score_spec_parse("boxed:0.9,format_answer_tag:0.1", score_builtin, NULL, &s, why, sizeof why);
    ScoreInput  in = {.prompt = "p", .completion = "\\boxed{42}", .answer = "42", .meta_json = ""};
    ScoreResult r;
    int         rc = score_spec_run(&s, &in, &r, why, sizeof why);
    EXPECT(rc == 0 && r.n_components == 2 && !strcmp(r.components[0].name, "boxed") &&
               r.components[0].value == 1.0f &&
               !strcmp(r.components[1].name, "format_answer_tag") && r.components[1].value == 0.0f,
           "components of boxed:0.9,format_answer_tag:0.1: rc %d, %d: %s=%g %s=%g", rc,
           r.n_components, r.components[0].name, r.components[0].value, r.components[1].name,
           r.components[1].value);
    /* A bare scorer keeps its own components. */
    score_spec_parse("arith_chat", score_builtin, NULL, &s, why, sizeof why);
    in = (ScoreInput){.prompt = "p", .completion = "82", .answer = "82"};
    rc = score_spec_run(&s, &in, &r, why, sizeof why);
    EXPECT(rc == 0 && r.n_components == 2 && !strcmp(r.components[0].name, "correct") &&
               !strcmp(r.components[1].name, "format"),
           "bare arith_chat: rc %d, components %d (%s, %s)", rc, r.n_components,
           r.components[0].name, r.components[1].name);
    EXPECT(score_spec_is_local(&s), "arith_chat is not local");
    score_spec_parse("code:1,format_think:0.1", score_builtin, NULL, &s, why, sizeof why);
    EXPECT(!score_spec_is_local(&s), "a spec with code is local");
}

static void test_record_checks(bool verbose)
{
    struct {
        const char *spec, *answer, *meta, *why; /* why NULL: accepted */
    } ex[] = {
        {"number", "82", "", NULL},
        {"number", "x", "", "'x' is not a number"},
        {"number", "82", "{\"rel_tol\": \"big\"}", "rel_tol"},
        {"choice", "B", "", NULL},
        {"choice", "G", "", "not a letter"},
        {"regex", "^(a|b)$", "", NULL},
        {"regex", "(", "", "does not compile"},
        {"regex", "", "{\"regex\": \"^x$\"}", NULL},
        {"exact", "  ", "", "no answer"},
        {"boxed:1,format_think:0.1", "", "", "scorer 'boxed': no answer"},
        {"format_think", "", "", NULL},
        {"arith_chat", "8.5", "", "not an integer"},
        {"code", "", "{\"tests\": \"assert f(1) == 2\", \"entry_point\": \"f\"}", NULL},
        {"code", "", "{\"tests\": [\"assert f(1) == 2\", \"assert f(0) == 1\"], \"prefix\": \"\"}",
         NULL},
        {"code", "", "{\"entry_point\": \"f\"}", "no \"tests\""},
        {"code", "", "{\"tests\": \"x\", \"entry_point\": 3}", "entry_point"},
        {"code", "", "{\"tests\": [\"x\"], \"entry_point\": \"f\"}", "entry_point"},
        {"code", "", "{\"tests\": []}", "no tests"},
        {"code", "", "{\"tests\": [\"x\", 3]}", "non-string"},
        {"code", "", "{\"tests\": \"x\", \"prefix\": 1}", "prefix"},
        {"code", "", "{\"tests\": \"x\", \"stop\": \"def\"}", "stop"},
        {"code", "", "not json", "not a JSON object"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        ScoreSpec s;
        char      why[300] = "";
        int       rc = score_spec_parse(ex[i].spec, score_builtin, NULL, &s, why, sizeof why);
        if (rc == 0) rc = score_spec_check_record(&s, ex[i].answer, ex[i].meta, why, sizeof why);
        bool ok = ex[i].why ? rc == ERR_ARG && strstr(why, ex[i].why) : rc == 0;
        if (verbose)
            printf("  check %-26s answer %-8s -> %s%s\n", ex[i].spec, ex[i].answer,
                   rc ? why : "accepted", ok ? "" : "  WRONG");
        EXPECT(ok, "record check of '%s' answer '%s' meta '%s': rc %d '%s', expected %s",
               ex[i].spec, ex[i].answer, ex[i].meta, rc, why, ex[i].why ? ex[i].why : "accepted");
    }
}

/* A scorer with a bug: its non-finite reward or nameless component is
 * reported as an error, not passed on. */
static int bad_scorer(const ScoreInput *in, const void *opts, ScoreResult *out, char *why,
                      size_t why_len)
{
    out->reward = *(const float *)opts;
    out->n_components = 1; /* a component without a name */
    return 0;
}

static void test_misbehaving(void)
{
    float       nan_v = NAN, one = 1.0f;
    ScoreDef    d1 = {"bad", bad_scorer, &nan_v, NULL, "NaN", NULL};
    ScoreDef    d2 = {"bad2", bad_scorer, &one, NULL, "no name", NULL};
    ScoreInput  in = {.completion = "x", .answer = "1"};
    ScoreResult r;
    char        why[160] = "";
    int         rc = score_run(&d1, &in, &r, why, sizeof why);
    EXPECT(rc == ERR_NONFINITE && strstr(why, "'bad'"), "a NaN reward: rc %d '%s'", rc, why);
    rc = score_run(&d2, &in, &r, why, sizeof why);
    EXPECT(rc == ERR_FORMAT && strstr(why, "no name"), "a nameless component: rc %d '%s'", rc, why);
    const ScoreDef *code = score_builtin(NULL, "code");
    rc = score_run(code, &in, &r, why, sizeof why);
    EXPECT(rc == ERR_UNSUPPORTED && strstr(why, "reward server"), "code here: rc %d '%s'", rc, why);
}

/* Terms scored elsewhere (the reward model scores a group at once): their
 * results enter the weighted sum as given, checked like a scorer's; a term
 * given none runs, and "rm" cannot run here. */
static void test_given(bool verbose)
{
    ScoreSpec   s;
    char        why[200] = "";
    ScoreInput  in = {.completion = "<answer>Paris</answer>", .answer = "paris"};
    ScoreResult rm = {.reward = -0.75f, .n_components = 1, .components = {{"rm", -0.75f}}}, out;
    EXPECT(score_spec_parse("rm:2,exact:0.5", score_builtin, NULL, &s, why, sizeof why) == 0 &&
               !score_spec_is_local(&s),
           "rm:2,exact:0.5: '%s', or local", why);
    const ScoreResult *given[2] = {&rm, NULL};
    int                rc = score_spec_run_given(&s, &in, given, &out, why, sizeof why);
    /* 2 * -0.75 + 0.5 * 1 = -1 */
    EXPECT(rc == 0 && out.reward == -1.0f && out.n_components == 2 &&
               !strcmp(out.components[0].name, "rm") && out.components[0].value == -0.75f &&
               !strcmp(out.components[1].name, "exact") && out.components[1].value == 1.0f,
           "rm:2,exact:0.5 given rm -0.75: rc %d '%s' reward %g (expected -1)", rc, why,
           out.reward);
    if (verbose) printf("  rm:2,exact:0.5 with rm given -0.75 -> reward %g\n", out.reward);
    rc = score_spec_run(&s, &in, &out, why, sizeof why);
    EXPECT(rc == ERR_UNSUPPORTED && strstr(why, "'rm' runs only in the reward server"),
           "rm without a given result: rc %d '%s'", rc, why);
    rm.reward = NAN;
    rc = score_spec_run_given(&s, &in, given, &out, why, sizeof why);
    EXPECT(rc == ERR_NONFINITE && strstr(why, "'rm'"), "a given NaN: rc %d '%s'", rc, why);
    rm.reward = 0.5f;
    EXPECT(score_spec_parse("rm", score_builtin, NULL, &s, why, sizeof why) == 0 && s.is_bare,
           "bare rm: '%s'", why);
    rc = score_spec_run_given(&s, &in, given, &out, why, sizeof why);
    EXPECT(rc == 0 && out.reward == 0.5f && out.n_components == 1, "bare rm given 0.5: rc %d %g",
           rc, out.reward);
}

/* The voting key of each scorer on worked completions. */
static void test_extract(bool verbose)
{
    static const struct {
        const char *spec, *completion;
        bool        is_truncated;
        const char *key; /* NULL: no answer */
    } ex[] = {
        {"arith", "42", false, "42"},
        {"arith", "42", true, NULL},
        {"arith_chat", "So 3 + 4 = 7.", false, "7"},
        {"arith_chat", "no idea", false, NULL},
        {"exact", "The  Answer: Paris!", false, "the answer paris"},
        {"exact", "thinking <answer> PARIS </answer>", false, "paris"},
        {"exact", " ?! ", false, NULL},
        {"number", "about 1,000.50 apples", false, "1000.5"},
        {"number", "it is 3/4", false, "0.75"},
        {"number", "-0", false, "0"},
        {"number", "no digits", false, NULL},
        {"choice", "The answer is (c)", false, "C"},
        {"choice", "hmm", false, NULL},
        {"boxed", "so \\boxed{ \\frac{1}{2} }", false, "\\frac{1}{2}"},
        {"boxed", "no box", false, NULL},
        /* A sum votes on its first term that reads an answer. */
        {"format_answer_tag:0.1,boxed:0.9", "<answer>\\boxed{4}</answer>", false, "4"},
        {"format_think", "<think>a</think><answer>b</answer>", false, NULL},
        {"regex", "abc", false, NULL},
        {"code", "def f(): pass", false, NULL},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        ScoreSpec s;
        char      why[200] = "", key[64];
        if (!EXPECT(score_spec_parse(ex[i].spec, score_builtin, NULL, &s, why, sizeof why) == 0,
                    "spec '%s': %s", ex[i].spec, why))
            continue;
        ScoreInput in = {.completion = ex[i].completion, .is_truncated = ex[i].is_truncated};
        bool       got = score_spec_extract(&s, &in, key, sizeof key);
        if (verbose)
            printf("  extract %-31.31s %-36.36s -> %s\n", ex[i].spec, ex[i].completion,
                   got ? key : "(none)");
        EXPECT(got == (ex[i].key != NULL) && (!got || !strcmp(key, ex[i].key)),
               "%s reads '%s'%s as %s'%s', expected %s'%s'", ex[i].spec, ex[i].completion,
               ex[i].is_truncated ? " (truncated)" : "", got ? "" : "no answer ", got ? key : "",
               ex[i].key ? "" : "no answer ", ex[i].key ? ex[i].key : "");
    }
    /* A key is cut to the buffer. */
    ScoreSpec s;
    char      why[80], key[4];
    CHECK(score_spec_parse("exact", score_builtin, NULL, &s, why, sizeof why) == 0);
    ScoreInput in = {.completion = "abcdef"};
    EXPECT(score_spec_extract(&s, &in, key, sizeof key) && !strcmp(key, "abc"),
           "'abcdef' into 4 bytes: '%s', expected 'abc'", key);
}

int score_selftest(bool verbose)
{
    EXPECT(score_builtin_count() == 13, "%d built-in scorers, expected 13", score_builtin_count());
    for (int i = 0; i < score_builtin_count(); i++) {
        const ScoreDef *d = score_builtin_at(i);
        EXPECT(score_name_ok(d->name) && score_builtin(NULL, d->name) == d && d->about,
               "built-in %d '%s' is not well named or not found", i, d->name);
    }
    /* SCORE_RULE_NAMES + ", rm" lists the table, in order. */
    char names[512] = "";
    for (int i = 0; i < score_builtin_count(); i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                 score_builtin_at(i)->name);
    }
    char   listed[512];
    size_t k = 0;
    for (const char *p = SCORE_RULE_NAMES ", rm"; *p && k + 1 < sizeof listed; p++)
        listed[k++] = *p == '\n' ? ' ' : *p; /* a line break stands for a space */
    listed[k] = '\0';
    EXPECT(!strcmp(names, listed), "SCORE_RULE_NAMES + rm '%s', the table '%s'", listed, names);
    test_parse(verbose);
    test_builtins(verbose);
    test_record_checks(verbose);
    test_misbehaving();
    test_given(verbose);
    test_extract(verbose);
    return expect_end();
}
