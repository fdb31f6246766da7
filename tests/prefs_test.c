/* rlhf-rm and rlhf-dpo end to end with the built-in char model: an rlhf-sft
 * warm start on one-digit sums and differences (with sloppy
 * demonstrations), a generated preference file that prefers the right
 * answer over a wrong one (six wrong answers a prompt, one of each held out
 * in a file of its own; one bad line, named by file:line), then
 *   - rlhf-rm: held-out pair accuracy from chance to well above it, the
 *     rewards normalised (mean reference reward within 1e-4 of 0), and the
 *     saved checkpoint loaded back here, scoring the held-out pairs to the
 *     summary's accuracy;
 *   - rlhf-dpo: held-out implicit-reward accuracy from 0 (the policy is its
 *     reference) to well above chance, saved as a policy checkpoint;
 *   - a mostly bad file refused, and no start without a model. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/tasks/prefs_data.h"
#include "learner/rm.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define RUN_TIMEOUT_S 240.0

static char g_build[PATH_MAX], g_tmp[256];
static bool g_verbose;

static ProcResult run(const char *const *argv)
{
    char       path[PATH_MAX + 32];
    ProcResult r;
    testfs_path(path, sizeof path, "%s/%s", g_build, argv[0]);
    int rc = proc_run(path, argv, NULL, RUN_TIMEOUT_S, &r);
    EXPECT_RUN(rc == 0 && r.signal == 0, &r, "'%s' did not run to its end", r.cmd);
    if (g_verbose) printf("  prefs: exit %d in %.1fs: %s\n", r.status, r.seconds, r.cmd);
    return r;
}

/* Every one-digit a+b= and a-b= with its right answer over six wrong ones
 * (off by -3..3): five pairs of each prompt to train (a bad line after the
 * first), the sixth, drawn at random, held out. Returns the pairs of
 * train. */
static int write_pairs(const char *train, const char *eval)
{
    FILE *ft = fopen(train, "w"), *fe = fopen(eval, "w");
    int   n = 0;
    if (ft && fe) {
        Rng rng;
        rng_seed(&rng, 5);
        static const int offs[6] = {-3, -2, -1, 1, 2, 3};
        for (int a = 0; a < 10; a++)
            for (int b = 0; b < 10; b++)
                for (int op = 0; op < 2; op++) {
                    int ans = op ? a - b : a + b, out = (int)rng_below(&rng, 6);
                    for (int k = 0; k < 6; k++) {
                        fprintf(k == out ? fe : ft,
                                "{\"prompt\": \"%d%c%d=\", \"chosen\": \"%d\", \"rejected\": "
                                "\"%d\"}\n",
                                a, op ? '-' : '+', b, ans, ans + offs[k]);
                        if (k != out && ++n == 1)
                            fprintf(ft, "{\"prompt\": \"1+1=\", \"chosen\": \"2\"}\n");
                    }
                }
    }
    if (ft) fclose(ft);
    if (fe) fclose(fe);
    return n;
}

static json_t *load_json(const char *path)
{
    json_error_t e;
    json_t      *o = json_load_file(path, 0, &e);
    EXPECT(o != NULL, "'%s': %s", path, o ? "" : e.text);
    return o;
}

static double jnum(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b) v = json_object_get(v, b);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* The held-out pair accuracy of the reward model saved at dir, computed
 * here from the checkpoint. */
static double reloaded_accuracy(const char *dir, const char *eval)
{
    ModelConfig c;
    Tok        *tok = NULL;
    Prefs      *p = NULL;
    double      acc = NAN;
    if (!EXPECT(ckpt_load_config(dir, &c) == 0 && c.has_value_head && ckpt_load_tok(dir, &tok) == 0,
                "'%s' does not load as a reward model", dir))
        return acc;
    Model    *m = model_new(&c);
    PrefsOpts o = {.tok = tok, .max_ids = c.max_seq_len, .max_bad_percent = 0};
    if (EXPECT(ckpt_load(dir, m) == 0 && prefs_open(eval, &o, &p) == 0, "loading '%s'", dir)) {
        int right = 0, n = (int)prefs_size(p);
        for (int i = 0; i < n; i++) {
            PrefsRecord rec;
            double      r[2];
            CHECK(prefs_read(p, (uint64_t)i, &rec) == 0 && rm_score(m, &rec, 1, r) == 0);
            right += r[0] > r[1];
            prefs_record_free(&rec);
        }
        acc = (double)right / n;
    }
    prefs_free(&p);
    model_free(&m);
    tok_free(&tok);
    return acc;
}

int prefs_cli_selftest(bool verbose)
{
    g_verbose = verbose;
    proc_build_dir(g_build, sizeof g_build);
    if (!EXPECT(testfs_tmpdir_new("prefs_cli", g_tmp, sizeof g_tmp) == 0, "no temp directory"))
        return expect_end();
    char sft[512], train[512], eval[512], rm[512], dpo[512], sum_rm[512], sum_dpo[512];
    testfs_path(sft, sizeof sft, "%s/sft", g_tmp);
    testfs_path(train, sizeof train, "%s/train.jsonl", g_tmp);
    testfs_path(eval, sizeof eval, "%s/eval.jsonl", g_tmp);
    testfs_path(rm, sizeof rm, "%s/rm", g_tmp);
    testfs_path(dpo, sizeof dpo, "%s/dpo", g_tmp);
    testfs_path(sum_rm, sizeof sum_rm, "%s/rm.json", g_tmp);
    testfs_path(sum_dpo, sizeof sum_dpo, "%s/dpo.json", g_tmp);
    int n_train = write_pairs(train, eval);
    EXPECT(n_train == 1000, "%d training pairs, expected 1000 (and 200 held out)", n_train);

    /* A warm start that answers about a quarter right, its slips one too high. */
    char o_sft[600];
    snprintf(o_sft, sizeof o_sft, "--out=%s", sft);
    const char *a_sft[] = {"rlhf-sft",       o_sft,        "--steps=600",       "--batch=32",
                           "--dim=64",       "--layers=2", "--hidden=128",      "--max-digits=1",
                           "--eval-every=0", "--seed=1",   "--label-noise=0.6", NULL};
    ProcResult  r = run(a_sft);
    bool        ok = EXPECT_RUN(r.status == 0, &r, "rlhf-sft: exit %d", r.status);
    proc_result_free(&r);
    if (!ok) goto done;

    char f_init[600], f_data[600], f_eval[600], f_out[600], f_sum[600];
    snprintf(f_init, sizeof f_init, "--init=%s", sft);
    snprintf(f_data, sizeof f_data, "--data=%s", train);
    snprintf(f_eval, sizeof f_eval, "--eval-data=%s", eval);
    snprintf(f_out, sizeof f_out, "--out=%s", rm);
    snprintf(f_sum, sizeof f_sum, "--summary=%s", sum_rm);
    const char *a_rm[] = {"rlhf-rm",     f_init,      f_data,       f_eval,     f_out, f_sum,
                          "--epochs=10", "--lr=1e-3", "--batch=16", "--seed=3", NULL};
    r = run(a_rm);
    char want[700];
    snprintf(want, sizeof want, "%s:2: missing member: no \"rejected\"", train);
    EXPECT_RUN(r.status == 0 && strstr(r.err, want) && strstr(r.err, "1 of "), &r,
               "rlhf-rm: exit %d; the bad line 2 of the training file must be named", r.status);
    json_t *s = load_json(sum_rm);
    double  before = jnum(s, "eval_before", "pair_accuracy");
    double  after = jnum(s, "eval_after", "pair_accuracy");
    double  mean = jnum(json_object_get(s, "normalisation"), "mean_after", NULL);
    if (verbose)
        printf("  rlhf-rm: held-out pair accuracy %.3f -> %.3f (%g pairs), reference mean after "
               "normalising %.2e, %.1f s\n",
               before, after, jnum(s, "eval_after", "pairs"), mean, jnum(s, "seconds", NULL));
    EXPECT_RUN(after >= 0.75 && after >= before + 0.2, &r,
               "rlhf-rm: held-out pair accuracy %.3f -> %.3f, expected >= 0.75 and up by 0.2",
               before, after);
    EXPECT(fabs(mean) < 1e-4, "rlhf-rm: mean reference reward %g after normalising", mean);
    /* The checkpoint as saved: it scores the held-out pairs as the run did. */
    double again = reloaded_accuracy(rm, eval);
    EXPECT(fabs(again - after) < 1e-9,
           "the reloaded reward model's held-out accuracy %.4f, the "
           "run's %.4f",
           again, after);
    json_decref(s);
    proc_result_free(&r);

    snprintf(f_out, sizeof f_out, "--out=%s", dpo);
    snprintf(f_sum, sizeof f_sum, "--summary=%s", sum_dpo);
    const char *a_dpo[] = {"rlhf-dpo",   f_init,      f_data,       f_eval,       f_out, f_sum,
                           "--epochs=3", "--lr=1e-3", "--batch=16", "--beta=0.1", NULL};
    r = run(a_dpo);
    EXPECT_RUN(r.status == 0, &r, "rlhf-dpo: exit %d", r.status);
    s = load_json(sum_dpo);
    before = jnum(s, "eval_before", "implicit_reward_accuracy");
    after = jnum(s, "eval_after", "implicit_reward_accuracy");
    double margin = jnum(s, "eval_after", "reward_margin");
    if (verbose)
        printf("  rlhf-dpo: held-out implicit-reward accuracy %.3f -> %.3f, margin %+.3f, %.1f s\n",
               before, after, margin, jnum(s, "seconds", NULL));
    EXPECT_RUN(before == 0.0 && after >= 0.75 && margin > 0.0, &r,
               "rlhf-dpo: held-out implicit-reward accuracy %.3f -> %.3f, margin %g; expected 0 "
               "-> >= 0.75",
               before, after, margin);
    ModelConfig pc;
    EXPECT(ckpt_load_config(dpo, &pc) == 0 && !pc.has_value_head,
           "rlhf-dpo's checkpoint is not a policy checkpoint");
    json_decref(s);
    proc_result_free(&r);

    /* Refusals: a mostly bad file; no model to start from. */
    char hostile[512], f_bad[600];
    testfs_path(hostile, sizeof hostile, "%s/hostile.jsonl", g_tmp);
    const char *text =
        "{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\"}\n"
        "{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"2\"}\n"
        "{\"prompt\": \"1+1=\", \"completions\": [\"2\", \"3\"], \"ranking\": [0, 0]}\n";
    testfs_write(hostile, text, strlen(text));
    snprintf(f_bad, sizeof f_bad, "--data=%s", hostile);
    const char *a_bad[] = {"rlhf-rm", f_init, f_bad, "--steps=1", NULL};
    r = run(a_bad);
    EXPECT_RUN(r.status == 1 && strstr(r.err, "hostile.jsonl:2: tie") &&
                   strstr(r.err, "hostile.jsonl:3: bad ranking") &&
                   strstr(r.err, "refusing the file"),
               &r, "a mostly bad file: exit %d, expected 1 with each bad line named", r.status);
    proc_result_free(&r);
    const char *a_none[] = {"rlhf-dpo", f_data, NULL};
    r = run(a_none);
    EXPECT_RUN(r.status == 2 && strstr(r.err, "--init"), &r,
               "rlhf-dpo without a model: exit %d, expected 2", r.status);
    proc_result_free(&r);
done:
    testfs_tmpdir_remove(g_tmp);
    return expect_end();
}
