/* prefgen: the built-in preference task end to end. A small SFT warm start
 * is trained with the real rlhf-sft, then rlhf-prefgen samples and labels
 * pairs from it; the files are read back and checked against the judge
 * (common/tasks/gold.h): every pair differs in text and gold, the gold
 * rewards recorded are the judge's, the labels disagree with the judge about
 * as often as the calibrated coin says, and the ceiling reported is the one
 * the held-out gaps give. Bad flags are refused by name. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/tasks/gold.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* Reads a JSONL file of pairs; checks each record and fills the gold gaps
 * and how many labels go against the judge. Returns the record count. */
static int read_pairs(const char *path, double *dg, int cap, int *against)
{
    char *text = testfs_read(path, 64u << 20);
    if (!EXPECT(text != NULL, "cannot read '%s'", path)) return 0;
    int n = 0;
    *against = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t e;
        json_t      *j = json_loads(line, 0, &e);
        const char  *prompt = NULL, *ch = NULL, *rj = NULL, *ans = NULL;
        double       gc = 0, gr = 0, pc = 0;
        if (!EXPECT(j &&
                        json_unpack(j, "{s:s, s:s, s:s, s:{s:s, s:F, s:F, s:F}}", "prompt", &prompt,
                                    "chosen", &ch, "rejected", &rj, "meta", "answer", &ans,
                                    "gold_chosen", &gc, "gold_rejected", &gr, "p_chosen", &pc) == 0,
                    "%s:%d: not a pair record: %s", path, n + 1, line)) {
            json_decref(j);
            break;
        }
        EXPECT(strcmp(ch, rj) != 0, "%s:%d: chosen equals rejected ('%s')", path, n + 1, ch);
        EXPECT(fabs(gold_arith(ch, ans) - gc) < 1e-9 && fabs(gold_arith(rj, ans) - gr) < 1e-9,
               "%s:%d: recorded gold %g / %g, the judge says %g / %g", path, n + 1, gc, gr,
               gold_arith(ch, ans), gold_arith(rj, ans));
        EXPECT(fabs(gc - gr) > 1e-9, "%s:%d: a gold tie was kept", path, n + 1);
        if (gc < gr) (*against)++;
        if (n < cap) dg[n] = gc - gr;
        n++;
        json_decref(j);
    }
    free(text);
    return n;
}

int prefgen_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "prefgen", verbose, 240.0)) return testcl_finish(&c);
    char sft[PATH_MAX + 32], out[PATH_MAX + 32], path[PATH_MAX + 64];
    testfs_path(sft, sizeof sft, "%s/sft", c.tmp);
    testfs_path(out, sizeof out, "%s/prefs", c.tmp);
    Proc *s = testcl_proc(&c, "sft", "rlhf-sft", NULL, NULL);
    proc_arg(s, "--out=%s", sft);
    const char *sft_args[] = {"--steps=300",       "--batch=32",     "--dim=32",
                              "--layers=1",        "--hidden=64",    "--max-digits=2",
                              "--label-noise=0.6", "--eval-every=0", "--seed=1"};
    for (size_t i = 0; i < sizeof sft_args / sizeof sft_args[0]; i++)
        proc_arg(s, "%s", sft_args[i]);
    if (!testcl_start(&c, s)) return testcl_finish(&c);
    int rc = proc_wait(s, testcl_budget(&c, 120.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(s), "rlhf-sft did not finish")) return testcl_finish(&c);

    enum { PAIRS = 1500, EVAL = 600 };
    Proc *g = testcl_proc(&c, "prefgen", "rlhf-prefgen", NULL, NULL);
    proc_arg(g, "--ckpt=%s", sft);
    proc_arg(g, "--out=%s", out);
    proc_arg(g, "--pairs=%d", PAIRS);
    proc_arg(g, "--eval-pairs=%d", EVAL);
    proc_arg(g, "--refs=200");
    proc_arg(g, "--max-digits=2");
    if (!testcl_start(&c, g)) return testcl_finish(&c);
    rc = proc_wait(g, testcl_budget(&c, 120.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(g), "rlhf-prefgen did not finish"))
        return testcl_finish(&c);

    static double dg_t[PAIRS], dg_e[EVAL];
    int           against_t = 0, against_e = 0;
    testfs_path(path, sizeof path, "%s/train.jsonl", out);
    int n_t = read_pairs(path, dg_t, PAIRS, &against_t);
    testfs_path(path, sizeof path, "%s/eval.jsonl", out);
    int n_e = read_pairs(path, dg_e, EVAL, &against_e);
    EXPECT(n_t == PAIRS && n_e == EVAL, "%d train and %d held-out pairs, expected %d and %d", n_t,
           n_e, PAIRS, EVAL);

    testfs_path(path, sizeof path, "%s/labeller.json", out);
    json_error_t e;
    json_t      *lab = json_load_file(path, 0, &e);
    double       tau = 0, ceil_e = 0, flip_t = -1;
    if (EXPECT(lab && json_unpack(lab, "{s:F, s:F, s:F}", "tau", &tau, "ceiling_eval", &ceil_e,
                                  "flip_drawn_train", &flip_t) == 0,
               "labeller.json: %s", lab ? "fields missing" : e.text)) {
        /* tau makes the train pairs' mean flip chance 25%. */
        EXPECT_NEAR(gold_mean_flip(dg_t, PAIRS, tau), 0.25, 1e-6, "mean flip at tau");
        /* The ceiling is 1 - the held-out mean flip chance. */
        EXPECT_NEAR(ceil_e, 1.0 - gold_mean_flip(dg_e, EVAL, tau), 1e-9, "held-out ceiling");
        /* The labels drawn disagree with the judge as often as the coin says
         * (binomial, 5 standard deviations). */
        double sd = sqrt(0.25 * 0.75 / PAIRS);
        EXPECT_NEAR((double)against_t / PAIRS, 0.25, 5 * sd, "train labels against the judge");
        EXPECT_NEAR(flip_t, (double)against_t / PAIRS, 1e-12, "flip_drawn_train as counted");
        double pe = gold_mean_flip(dg_e, EVAL, tau), sde = sqrt(pe * (1 - pe) / EVAL);
        EXPECT_NEAR((double)against_e / EVAL, pe, 5 * sde, "held-out labels against the judge");
        testcl_note(&c,
                    "tau %.4f, labels against the judge %.3f (train) %.3f (held out), "
                    "ceiling %.4f",
                    tau, (double)against_t / PAIRS, (double)against_e / EVAL, ceil_e);
    }
    json_decref(lab);

    /* Refusals name the flag. */
    char       prog[PATH_MAX + 32], f_ckpt[PATH_MAX + 64];
    ProcResult r;
    snprintf(prog, sizeof prog, "%s/rlhf-prefgen", c.build);
    snprintf(f_ckpt, sizeof f_ckpt, "--ckpt=%s", sft);
    const char *bad_flip[] = {"rlhf-prefgen", f_ckpt, "--out=/tmp/x", "--flip=0.6", NULL};
    rc = proc_run(prog, bad_flip, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "--flip 0.6"), &r,
               "--flip 0.6: exit %d, expected 2 naming the flag", r.status);
    proc_result_free(&r);
    const char *no_ckpt[] = {"rlhf-prefgen", "--ckpt=/nonexistent/sft", "--out=/tmp/x", NULL};
    rc = proc_run(prog, no_ckpt, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 1 && strstr(r.err, "/nonexistent/sft"), &r,
               "a missing --ckpt: exit %d, expected 1 naming it", r.status);
    proc_result_free(&r);
    return testcl_finish(&c);
}
