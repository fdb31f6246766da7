/* eval: rlhf-eval end to end on a small warm start trained here with the
 * real rlhf-sft. The JSON report is read back and checked against itself
 * and the estimator: pass@k for every k <= n, pass@1 the share of correct
 * samples over the per-prompt counts, pass@n the share of prompts with one
 * correct sample, pass@k rising with k, the majority vote a share; the
 * built-in task with the gold judge as the scorer; the code scorer through
 * the sandbox (no vote); refusals that name the input. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/tasks/passk.h"
#include "common/tasks/task.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

enum { N_SAMPLES = 4, N_PROMPTS = 40 };

/* Runs rlhf-eval with args (NULL-terminated after the program name), expects
 * a clean exit, and returns the report at out (caller frees), or NULL. */
static json_t *run_eval(TestCl *c, const char *name, const char *out, const char *const *args)
{
    Proc *p = testcl_proc(c, name, "rlhf-eval", NULL, NULL);
    for (int i = 0; args[i]; i++) proc_arg(p, "%s", args[i]);
    proc_arg(p, "--out=%s", out);
    if (!testcl_start(c, p)) return NULL;
    int rc = proc_wait(p, testcl_budget(c, 120.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(p), "%s: rlhf-eval did not finish cleanly", name))
        return NULL;
    json_error_t e;
    json_t      *j = json_load_file(out, 0, &e);
    EXPECT(j != NULL, "%s: report '%s': %s", name, out, e.text);
    return j;
}

/* The report's figures against each other and the estimator. */
static void check_report(const char *what, json_t *j, int n, int prompts)
{
    json_t *pk = json_object_get(j, "pass_at_k"), *per = json_object_get(j, "per_prompt");
    if (!EXPECT(json_is_object(pk) && json_is_array(per), "%s: pass_at_k or per_prompt missing",
                what))
        return;
    EXPECT((int)json_object_size(pk) == n && (int)json_array_size(per) == prompts,
           "%s: %zu pass@k figures and %zu prompts, expected %d and %d", what,
           json_object_size(pk), json_array_size(per), n, prompts);
    double mean_c = 0, any = 0, prev = -1;
    for (size_t i = 0; i < json_array_size(per); i++) {
        int ci = (int)json_integer_value(json_object_get(json_array_get(per, i), "correct"));
        EXPECT(ci >= 0 && ci <= n, "%s: prompt %zu has %d correct of %d", what, i, ci, n);
        mean_c += ci;
        any += ci > 0;
    }
    mean_c /= (double)prompts * n;
    any /= prompts;
    for (int k = 1; k <= n; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        double v = json_real_value(json_object_get(pk, key));
        /* The mean over prompts of the estimator from the per-prompt counts. */
        double want = 0;
        for (size_t i = 0; i < json_array_size(per); i++)
            want += passk_estimate(
                n, (int)json_integer_value(json_object_get(json_array_get(per, i), "correct")),
                k);
        want /= prompts;
        EXPECT_NEAR(v, want, 1e-9, "pass@k from the per-prompt counts");
        EXPECT(v >= prev - 1e-12, "%s: pass@%d %.4f below pass@%d %.4f", what, k, v, k - 1, prev);
        prev = v;
    }
    EXPECT_NEAR(json_real_value(json_object_get(pk, "1")), mean_c, 1e-9,
                "pass@1 = share of correct samples");
    char key[16];
    snprintf(key, sizeof key, "%d", n);
    EXPECT_NEAR(json_real_value(json_object_get(pk, key)), any, 1e-9,
                "pass@n = share of prompts with a correct sample");
}

int eval_cmd_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "eval_cmd", verbose, 300.0)) return testcl_finish(&c);
    char sft[PATH_MAX + 32], data[PATH_MAX + 32], code[PATH_MAX + 32], out[PATH_MAX + 32];
    testfs_path(sft, sizeof sft, "%s/sft", c.tmp);
    testfs_path(data, sizeof data, "%s/arith.jsonl", c.tmp);
    testfs_path(code, sizeof code, "%s/code.jsonl", c.tmp);
    Proc *s = testcl_proc(&c, "sft", "rlhf-sft", NULL, NULL);
    proc_arg(s, "--out=%s", sft);
    const char *sft_args[] = {"--steps=300",       "--batch=32",     "--dim=32",
                              "--layers=1",        "--hidden=64",    "--max-digits=1",
                              "--label-noise=0.5", "--eval-every=0", "--seed=1"};
    for (size_t i = 0; i < sizeof sft_args / sizeof sft_args[0]; i++)
        proc_arg(s, "%s", sft_args[i]);
    if (!testcl_start(&c, s)) return testcl_finish(&c);
    int rc = proc_wait(s, testcl_budget(&c, 120.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(s), "rlhf-sft did not finish")) return testcl_finish(&c);

    /* The held-out problems as a user's JSONL. */
    FILE      *f = fopen(data, "w");
    TaskConfig tc = TASK_DEFAULTS;
    tc.max_digits = 1;
    for (int i = 0; f && i < N_PROMPTS; i++) {
        TaskProblem p;
        task_problem(&tc, 9, (uint64_t)i, true, &p);
        fprintf(f, "{\"prompt\": \"%s\", \"answer\": \"%s\", \"task\": \"arith\"}\n", p.prompt,
                p.answer);
    }
    if (!EXPECT(f && fclose(f) == 0, "cannot write '%s'", data)) return testcl_finish(&c);

    char f_ckpt[PATH_MAX + 64], f_data[PATH_MAX + 64], f_code[PATH_MAX + 64];
    snprintf(f_ckpt, sizeof f_ckpt, "--ckpt=%s", sft);
    snprintf(f_data, sizeof f_data, "--data=%s", data);
    snprintf(f_code, sizeof f_code, "--data=%s", code);
    testfs_path(out, sizeof out, "%s/jsonl.json", c.tmp);
    const char *a1[] = {f_ckpt, f_data, "--n=4", "--temperature=1", "--max-new=6", NULL};
    json_t     *j = run_eval(&c, "eval-jsonl", out, a1);
    if (j) {
        check_report("jsonl", j, N_SAMPLES, N_PROMPTS);
        double mv = json_real_value(json_object_get(j, "majority_vote"));
        EXPECT(json_is_real(json_object_get(j, "majority_vote")) && mv >= 0 && mv <= 1,
               "jsonl: majority vote %g, expected a share", mv);
        testcl_note(&c, "jsonl: pass@1 %.3f pass@4 %.3f vote %.3f",
                    json_real_value(json_object_get(json_object_get(j, "pass_at_k"), "1")),
                    json_real_value(json_object_get(json_object_get(j, "pass_at_k"), "4")), mv);
        json_decref(j);
    }

    /* The built-in task with the gold judge: rewards are gold rewards. */
    testfs_path(out, sizeof out, "%s/gold.json", c.tmp);
    const char *a2[] = {f_ckpt,       "--builtin=30",  "--task=gold_arith", "--n=3",
                        "--max-new=6", "--max-digits=1", "--temperature=1", NULL};
    j = run_eval(&c, "eval-gold", out, a2);
    if (j) {
        check_report("gold", j, 3, 30);
        double r = json_real_value(json_object_get(j, "reward_mean"));
        EXPECT(r >= -1 && r <= 1, "gold: mean reward %g outside the judge's [-1, 1]", r);
        json_decref(j);
    }

    /* The code scorer runs in the sandbox: a char model's answers fail the
     * tests; no vote is taken. */
    f = fopen(code, "w");
    if (f)
        fprintf(f, "{\"prompt\": \"1+1=\", \"task\": \"code\", \"meta\": {\"tests\": "
                   "[\"assert 1 + 1 == 2\"], \"prefix\": \"\"}}\n"
                   "{\"prompt\": \"2+2=\", \"task\": \"code\", \"meta\": {\"tests\": "
                   "[\"assert two == 2\"], \"prefix\": \"two = 2\\n\"}}\n");
    if (!EXPECT(f && fclose(f) == 0, "cannot write '%s'", code)) return testcl_finish(&c);
    testfs_path(out, sizeof out, "%s/code.json", c.tmp);
    const char *a3[] = {f_ckpt, f_code, "--n=2", "--temperature=1", "--max-new=4", NULL};
    j = run_eval(&c, "eval-code", out, a3);
    if (j) {
        check_report("code", j, 2, 2);
        EXPECT(json_is_null(json_object_get(j, "majority_vote")),
               "code: a majority vote was taken");
        json_decref(j);
    }

    /* Refusals name the input. */
    char       prog[PATH_MAX + 32];
    ProcResult r;
    snprintf(prog, sizeof prog, "%s/rlhf-eval", c.build);
    const char *missing[] = {"rlhf-eval", f_ckpt, "--data=/nonexistent/x.jsonl", NULL};
    rc = proc_run(prog, missing, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 1 && strstr(r.err, "/nonexistent/x.jsonl"), &r,
               "a missing --data: exit %d, expected 1 naming it", r.status);
    proc_result_free(&r);
    const char *both[] = {"rlhf-eval", f_ckpt, "--model=m.gguf", "--builtin=3", NULL};
    rc = proc_run(prog, both, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "one of --ckpt DIR or --model"), &r,
               "--ckpt with --model: exit %d, expected 2", r.status);
    proc_result_free(&r);
    const char *badtask[] = {"rlhf-eval", f_ckpt, "--builtin=3", "--task=nope", NULL};
    rc = proc_run(prog, badtask, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 1 && strstr(r.err, "unknown scorer 'nope'"), &r,
               "--task nope: exit %d, expected 1 naming the scorer", r.status);
    proc_result_free(&r);
    return testcl_finish(&c);
}
