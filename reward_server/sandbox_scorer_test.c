/* sandbox_scorer's self-test: the program built from a completion and its
 * metadata (a table of cases, HumanEval's shape first, and every kind of bad
 * metadata refused with its reason), then the "code" scorer on a real pool:
 * the fraction, all-or-nothing, and a stopped sandbox reported as an error
 * rather than a zero. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "reward_server/sandbox_scorer.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

typedef struct {
    const char *what;
    const char *prompt, *completion, *meta;
    const char *code;    /* the program expected */
    int         n_tests; /* tests expected */
} SsCase;

static const SsCase ss_cases[] = {
    {"HumanEval: prompt + completion + test + check", "def f(x):\n", "    return x\n",
     "{\"tests\": \"def check(c):\\n    assert c(1) == 1\\n\", \"entry_point\": \"f\"}",
     "def f(x):\n    return x\n\ndef check(c):\n    assert c(1) == 1\n\ncheck(f)\n", 0},
    {"string tests without an entry point", "def f(x):\n", "    return x\n",
     "{\"tests\": \"assert f(2) == 2\"}", "def f(x):\n    return x\n\nassert f(2) == 2\n", 0},
    {"array tests, empty prefix", "Write f.", "def f(x): return x",
     "{\"tests\": [\"assert f(1) == 1\", \"assert f(2) == 2\"], \"prefix\": \"\"}",
     "def f(x): return x", 2},
    {"a prefix given", "chat text", "def f(): return 1",
     "{\"tests\": [\"assert f() == 1\"], \"prefix\": \"import math\\n\"}",
     "import math\ndef f(): return 1", 1},
    {"cut at the earliest stop string", "def f(x):\n", "    return x\nprint(f(1))\ndef g(:\n",
     "{\"tests\": [\"assert f(1) == 1\"], \"stop\": [\"\\ndef\", \"\\nprint\"]}",
     "def f(x):\n    return x", 1},
    {"a stop string not present", "", "x = 1\n",
     "{\"tests\": [\"assert x\"], \"stop\": [\"\\nif\"]}", "x = 1\n", 1},
    {"a fenced block, language named", "ignored",
     "Sure:\n```python\ndef f():\n    return 2\n```\nDone.",
     "{\"tests\": [\"assert f() == 2\"], \"prefix\": \"\"}", "def f():\n    return 2\n", 1},
    {"an unclosed fence", "", "```\nx = 3\n", "{\"tests\": [\"assert x == 3\"]}", "x = 3\n", 1},
    {"a fence with nothing after it", "", "text ```", "{\"tests\": [\"assert 0\"]}", "", 1},
    {"the stop string cuts before the fence", "", "y = 1\n# end\n```\nz = 2\n```",
     "{\"tests\": [\"assert y\"], \"stop\": [\"# end\"]}", "y = 1\n", 1},
    {"an empty completion (a bare prompt)", "def f():\n    \"\"\"doc\"\"\"\n", "",
     "{\"tests\": \"def check(c):\\n    assert c() == 1\\n\", \"entry_point\": \"f\"}",
     "def f():\n    \"\"\"doc\"\"\"\n\ndef check(c):\n    assert c() == 1\n\ncheck(f)\n", 0},
};

typedef struct {
    const char *meta;
    const char *why; /* a piece of the reason */
} SsBad;

static const SsBad ss_bad[] = {
    {"", "no metadata"},
    {NULL, "no metadata"},
    {"{\"tests\": ", "not JSON"},
    {"[\"assert 1\"]", "not a JSON object"},
    {"{}", "\"tests\" is missing"},
    {"{\"tests\": 5}", "\"tests\" is of another type"},
    {"{\"tests\": []}", "has 0 tests"},
    {"{\"tests\": [\"assert 1\", 2]}", "\"tests\" item 1 is not a string"},
    {"{\"tests\": \"x\", \"entry_point\": \"a b\"}", "\"entry_point\" must be a Python name"},
    {"{\"tests\": \"x\", \"entry_point\": \"9f\"}", "\"entry_point\" must be a Python name"},
    {"{\"tests\": \"x\", \"entry_point\": 7}", "\"entry_point\" must be a Python name"},
    {"{\"tests\": [\"x\"], \"entry_point\": \"f\"}", "goes with string \"tests\""},
    {"{\"tests\": \"x\", \"prefix\": 3}", "\"prefix\" is not a string"},
    {"{\"tests\": \"x\", \"stop\": \"\\n\"}", "\"stop\" is not an array"},
    {"{\"tests\": \"x\", \"stop\": [\"a\", null]}", "\"stop\" item 1 is not a string"},
    {"{\"tests\": \"x\", \"tests\": \"y\"}", "not JSON"},
};

static void ss_build_cases(void)
{
    for (size_t i = 0; i < sizeof ss_cases / sizeof ss_cases[0]; i++) {
        const SsCase  *c = &ss_cases[i];
        SandboxProgram p;
        char           why[256] = "";
        int rc = sandbox_program_build(c->prompt, c->completion, c->meta, &p, why, sizeof why);
        if (!EXPECT(rc == 0, "%s: %s (%s)", c->what, err_str(rc), why)) continue;
        EXPECT(!strcmp(p.code, c->code) && p.n_tests == c->n_tests,
               "%s: program '%s' with %d tests, expected '%s' with %d", c->what, p.code, p.n_tests,
               c->code, c->n_tests);
        sandbox_program_free(&p);
    }
    for (size_t i = 0; i < sizeof ss_bad / sizeof ss_bad[0]; i++) {
        SandboxProgram p;
        char           why[256] = "";
        int            rc = sandbox_program_build("", "x", ss_bad[i].meta, &p, why, sizeof why);
        EXPECT(rc == ERR_FORMAT && strstr(why, ss_bad[i].why) && !p.code,
               "meta '%s': %s, why '%s', expected ERR_FORMAT and '%s'",
               ss_bad[i].meta ? ss_bad[i].meta : "(null)", err_str(rc), why, ss_bad[i].why);
    }
    /* One test more than a job may hold. */
    size_t cap = 16 + (size_t)(SANDBOX_MAX_TESTS + 1) * 4;
    char  *big = xmalloc(cap);
    size_t at = (size_t)snprintf(big, cap, "{\"tests\": [");
    for (int i = 0; i <= SANDBOX_MAX_TESTS; i++)
        at += (size_t)snprintf(big + at, cap - at, "%s\"1\"", i ? "," : "");
    snprintf(big + at, cap - at, "]}");
    SandboxProgram p;
    char           why[256] = "";
    EXPECT(sandbox_program_build("", "x", big, &p, why, sizeof why) == ERR_FORMAT &&
               strstr(why, "expected 1..1024"),
           "1025 tests: why '%s'", why);
    free(big);
}

static void ss_score(const SandboxScorer *s, const char *completion, const char *meta, float reward,
                     float pass_rate, float all_pass, const char *what)
{
    ScorerInput  in = {.prompt = "", .completion = completion, .answer = "", .meta_json = meta};
    ScorerResult out = {0};
    char         why[256] = "";
    int          rc = sandbox_scorer_run(&in, s, &out, why, sizeof why);
    if (!EXPECT(rc == 0, "%s: %s (%s)", what, err_str(rc), why)) return;
    EXPECT(out.n_components == 2 && !strcmp(out.components[0].name, "pass_rate") &&
               !strcmp(out.components[1].name, "all_pass"),
           "%s: components", what);
    EXPECT_NEAR(out.reward, reward, 1e-6, what);
    EXPECT_NEAR(out.components[0].value, pass_rate, 1e-6, what);
    EXPECT_NEAR(out.components[1].value, all_pass, 1e-6, what);
}

int sandbox_scorer_selftest(bool verbose)
{
    expect_begin("sandbox_scorer", verbose);
    ss_build_cases();

    char tmp[256];
    if (testfs_tmpdir_new("sandbox-scorer", tmp, sizeof tmp) != 0) return expect_end() + 1;
    SandboxScorerConfig cfg = {.sandbox = SANDBOX_DEFAULTS};
    cfg.sandbox.tmp_dir = tmp;
    SandboxScorer *frac = sandbox_scorer_new(&cfg, NULL);
    cfg.is_all_or_nothing = true;
    SandboxScorer *all = sandbox_scorer_new(&cfg, tmp); /* tmp hidden too: it must still run */
    if (EXPECT(frac && all, "sandbox_scorer_new")) {
        const char *meta = "{\"tests\": [\"assert f(1) == 2\", \"assert f(2) == 3\", "
                           "\"assert f(3) == 5\"], \"prefix\": \"\"}";
        const char *f = "def f(x):\n    return x + 1\n";
        ss_score(frac, f, meta, 2.0f / 3.0f, 2.0f / 3.0f, 0, "2 of 3, the fraction");
        ss_score(all, f, meta, 0, 2.0f / 3.0f, 0, "2 of 3, all-or-nothing");
        const char *meta2 = "{\"tests\": [\"assert f(1) == 2\"], \"prefix\": \"\"}";
        ss_score(frac, f, meta2, 1, 1, 1, "1 of 1, the fraction");
        ss_score(all, f, meta2, 1, 1, 1, "1 of 1, all-or-nothing");
        ss_score(frac, "def f(x:\n", meta, 0, 0, 0, "syntax error");
        const char *he = "{\"tests\": \"def check(c):\\n    assert c(1) == 2\\n\", "
                         "\"entry_point\": \"f\", \"prefix\": \"\"}";
        ss_score(frac, f, he, 1, 1, 1, "HumanEval-style check passes");
        ss_score(frac, "def f(x):\n    return x\n", he, 0, 0, 0, "HumanEval-style check fails");

        /* Bad metadata is the scorer's error, with its reason. */
        ScorerInput  in = {.prompt = "", .completion = f, .meta_json = "{\"tests\": 1}"};
        ScorerResult out = {0};
        char         why[256] = "";
        int          rc = sandbox_scorer_run(&in, frac, &out, why, sizeof why);
        EXPECT(rc == ERR_FORMAT && strstr(why, "\"tests\""), "bad metadata: %s (%s)", err_str(rc),
               why);
        /* A sandbox that cannot run (here: stopped) is an error, never a zero reward. */
        sandbox_scorer_stop(frac);
        in.meta_json = meta;
        rc = sandbox_scorer_run(&in, frac, &out, why, sizeof why);
        EXPECT(rc == ERR_IO && strstr(why, "stopping"), "stopped sandbox: %s (%s)", err_str(rc),
               why);
    }
    sandbox_scorer_free(&frac);
    sandbox_scorer_free(&all);
    testfs_tmpdir_remove(tmp);
    return expect_end();
}
