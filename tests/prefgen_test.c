/* prefgen: the built-in preference task end to end. A small SFT warm start
 * is trained with the real rlhf-sft, then rlhf-prefgen samples and labels
 * pairs from it; the files are read back and checked against the judge
 * (common/tasks/gold.h): every pair differs in text and gold, the gold
 * rewards recorded are the judge's, the labels disagree with the judge about
 * as often as the calibrated coin says, and the ceiling reported is the one
 * the held-out gaps give. With --pick widest and the same seed (the same
 * samples), every pair's gold gap is at least the first pair's. With
 * --form rankings and the same seed, eval.jsonl is the same file and the
 * pairs move to train-pairs.jsonl unchanged; every ranking is a permutation
 * of distinct completions whose recorded gold is the judge's, its pairs
 * ordered against the judge as often as the coin says, and the reward-model
 * trainer takes the file. Then
 * best-of-n on top: a reward model trained a few steps on the pairs,
 * rlhf-bon picks among 4 samples per prompt (every kept completion's gold
 * is the judge's, the curve starts at best-of-1 and the oracle is never
 * below the pick), rlhf-sft --data trains on its output, and rlhf-bon
 * refuses a policy as its reward model and a bad --n. On SmolLM2 (when
 * models/ has it), the chat variant: rlhf-prefgen --model writes the chat
 * task's questions with answers whose recorded gold is gold_chat's, rlhf-rm
 * starts a reward model from the GGUF on them and rlhf-bon --model picks
 * with it. Bad flags are refused by name. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/tasks/gold.h"
#include "tests/support/fixtures.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* Reads a JSONL file of pairs; checks each record and fills the gold gaps
 * and how many labels go against the judge. Returns the record count. */
static int read_pairs(const char *path, double *dg, int cap, int *against);

/* Runs prog with args (NULL-terminated, after the program's name) to
 * completion within budget seconds; true when it exited 0. */
static bool run_ok(TestCl *c, const char *name, const char *prog, const char *const *args,
                   double budget)
{
    Proc *p = testcl_proc(c, name, prog, NULL, NULL);
    for (int i = 0; args[i]; i++) proc_arg(p, "%s", args[i]);
    if (!testcl_start(c, p)) return false;
    int rc = proc_wait(p, testcl_budget(c, budget));
    return EXPECT(rc == 0 && proc_exited_ok(p), "%s did not finish", prog);
}

/* The --pick widest file beside the first-pick one (same seed, so the same
 * samples per prompt): every pair's gap at least the first pair's. */
static void check_widest(TestCl *c, const char *sft, const char *out, const double *dg_first,
                         int n_first)
{
    char out_w[PATH_MAX + 40], path[PATH_MAX + 64], a1[2 * PATH_MAX], a2[2 * PATH_MAX];
    testfs_path(out_w, sizeof out_w, "%s-widest", out);
    snprintf(a1, sizeof a1, "--ckpt=%s", sft);
    snprintf(a2, sizeof a2, "--out=%s", out_w);
    const char *args[] = {a1,
                          a2,
                          "--pairs=1500",
                          "--eval-pairs=600",
                          "--refs=200",
                          "--max-digits=2",
                          "--pick=widest",
                          NULL};
    if (!run_ok(c, "prefgen-widest", "rlhf-prefgen", args, 120.0)) return;
    static double dg[1500];
    int           against = 0, narrower = 0;
    double        sum_w = 0, sum_f = 0;
    testfs_path(path, sizeof path, "%s/train.jsonl", out_w);
    int n = read_pairs(path, dg, 1500, &against);
    EXPECT(n == n_first, "%d widest pairs, %d first pairs", n, n_first);
    for (int i = 0; i < n && i < n_first; i++) {
        narrower += fabs(dg[i]) + 1e-12 < fabs(dg_first[i]);
        sum_w += fabs(dg[i]);
        sum_f += fabs(dg_first[i]);
    }
    EXPECT(narrower == 0,
           "%d widest pairs have a narrower gap than the first pair of the same "
           "samples",
           narrower);
    EXPECT(sum_w > sum_f, "mean gap widest %g, first %g: expected wider", sum_w / n,
           sum_f / n_first);
    testcl_note(c, "mean gold gap: first pair %.4f, widest pair %.4f", sum_f / n_first, sum_w / n);
}

/* Reads rankings: checks each record against the judge; counts its pairs
 * and the pairs ordered against the judge, and the expected number of
 * those at tau. Returns the record count. */
static int read_rankings(const char *path, double tau, long *pairs, long *against, double *expect)
{
    char *text = testfs_read(path, 64u << 20);
    if (!EXPECT(text != NULL, "cannot read '%s'", path)) return 0;
    int n = 0, bad = 0;
    *pairs = *against = 0;
    *expect = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_t     *j = json_loads(line, 0, NULL), *cs = NULL, *rk = NULL, *gs = NULL;
        const char *ans = NULL;
        if (!EXPECT(j && json_unpack(j, "{s:s, s:o, s:o, s:{s:s, s:o}}", "prompt",
                                     &(const char *){0}, "completions", &cs, "ranking", &rk, "meta",
                                     "answer", &ans, "gold", &gs) == 0,
                    "%s:%d: not a ranking record: %s", path, n + 1, line)) {
            json_decref(j);
            break;
        }
        size_t k = json_array_size(cs);
        int    seen[16] = {0}, order[16];
        double g[16];
        bad += k < 2 || k > 16 || json_array_size(rk) != k || json_array_size(gs) != k;
        for (size_t i = 0; i < k && i < 16; i++) {
            const char *t = json_string_value(json_array_get(cs, i));
            g[i] = json_real_value(json_array_get(gs, i));
            bad += !t || fabs(gold_arith(t, ans) - g[i]) > 1e-9;
            for (size_t l = 0; l < i && t; l++) {
                const char *u = json_string_value(json_array_get(cs, l));
                bad += !u || !strcmp(t, u) || fabs(g[i] - g[l]) < 1e-9;
            }
            json_int_t o = json_integer_value(json_array_get(rk, i));
            bad += o < 0 || o >= (json_int_t)k || seen[o]++;
            order[i] = (int)(o >= 0 && o < (json_int_t)k ? o : 0);
        }
        for (size_t i = 0; i < k && i < 16; i++)
            for (size_t l = i + 1; l < k && l < 16; l++) {
                double dg = g[order[i]] - g[order[l]];
                *against += dg < 0;
                *expect += gold_mean_flip(&dg, 1, tau);
                (*pairs)++;
            }
        json_decref(j);
    }
    EXPECT(bad == 0,
           "%s: %d problems in %d rankings (not a permutation, a repeated or "
           "tied completion, a gold that is not the judge's)",
           path, bad, n);
    free(text);
    return n;
}

/* --form rankings with the first run's seed: the same held-out file, the
 * same pairs beside the rankings, rankings as the judge's coin orders them,
 * and rlhf-rm trains on them. */
static void check_rankings(TestCl *c, const char *sft, const char *out, int n_first)
{
    char out_r[PATH_MAX + 40], a1[2 * PATH_MAX], a2[2 * PATH_MAX], p1[PATH_MAX + 80],
        p2[PATH_MAX + 80];
    testfs_path(out_r, sizeof out_r, "%s-rankings", out);
    snprintf(a1, sizeof a1, "--ckpt=%s", sft);
    snprintf(a2, sizeof a2, "--out=%s", out_r);
    const char *same[] = {a1,
                          a2,
                          "--pairs=1500",
                          "--eval-pairs=600",
                          "--refs=200",
                          "--max-digits=2",
                          "--form=rankings",
                          NULL};
    if (!run_ok(c, "prefgen-rankings", "rlhf-prefgen", same, 120.0)) return;
    const char *files[][2] = {{"eval.jsonl", "eval.jsonl"},
                              {"train.jsonl", "train-pairs.jsonl"},
                              {"ref.jsonl", "ref.jsonl"}};
    for (int i = 0; i < 3; i++) {
        snprintf(p1, sizeof p1, "%s/%s", out, files[i][0]);
        snprintf(p2, sizeof p2, "%s/%s", out_r, files[i][1]);
        char *x = testfs_read(p1, 64u << 20), *y = testfs_read(p2, 64u << 20);
        EXPECT(x && y && !strcmp(x, y), "%s differs from the pairs run's %s", p2, p1);
        free(x);
        free(y);
    }
    snprintf(p1, sizeof p1, "%s/labeller.json", out_r);
    json_t    *lab = json_load_file(p1, 0, NULL);
    double     tau = 0, flip_t = -1, ceil_t = -1;
    json_int_t ranked = -1;
    if (!EXPECT(lab && json_unpack(lab, "{s:F, s:F, s:F, s:I}", "tau", &tau, "flip_drawn_train",
                                   &flip_t, "ceiling_train", &ceil_t, "ranked_pairs", &ranked) == 0,
                "%s: fields missing", p1)) {
        json_decref(lab);
        return;
    }
    json_decref(lab);
    long   pairs = 0, against = 0;
    double expect = 0;
    snprintf(p2, sizeof p2, "%s/train.jsonl", out_r);
    int    n = read_rankings(p2, tau, &pairs, &against, &expect);
    double pe = pairs ? expect / (double)pairs : 0, sd = pairs ? sqrt(pe * (1 - pe) / pairs) : 1;
    EXPECT(n == n_first && pairs == ranked && pairs >= n,
           "%d rankings (%ld pairs, labeller says "
           "%lld), expected %d",
           n, pairs, (long long)ranked, n_first);
    EXPECT_NEAR((double)against / (double)pairs, pe, 5 * sd, "ranked pairs against the judge");
    EXPECT_NEAR(flip_t, (double)against / (double)pairs, 1e-12, "flip_drawn_train as counted");
    EXPECT_NEAR(ceil_t, 1 - pe, 1e-9, "ceiling_train over the ranked pairs");
    testcl_note(c, "rankings: %ld pairs in %d rankings, %.3f against the judge (coin %.3f)", pairs,
                n, (double)against / (double)pairs, pe);
    /* The reward-model trainer takes the rankings. */
    char rm[PATH_MAX + 40], b1[2 * PATH_MAX], b2[2 * PATH_MAX], b3[2 * PATH_MAX];
    testfs_path(rm, sizeof rm, "%s/rm-rankings", c->tmp);
    snprintf(b1, sizeof b1, "--init=%s", sft);
    snprintf(b2, sizeof b2, "--data=%s", p2);
    snprintf(b3, sizeof b3, "--out=%s", rm);
    const char *rm_args[] = {b1, b2, b3, "--steps=5", "--eval-frac=0.1", NULL};
    run_ok(c, "rm-rankings", "rlhf-rm", rm_args, 120.0);
}

/* rlhf-rm for a few steps, rlhf-bon on it, rlhf-sft --data on the picks. */
static void check_bon(TestCl *c, const char *sft, const char *out)
{
    char        rm[PATH_MAX + 40], bon[PATH_MAX + 40], sum[PATH_MAX + 40], sft2[PATH_MAX + 40];
    static char a[6][2 * PATH_MAX];
    testfs_path(rm, sizeof rm, "%s/rm", c->tmp);
    testfs_path(bon, sizeof bon, "%s/bon.jsonl", c->tmp);
    testfs_path(sum, sizeof sum, "%s/bon.json", c->tmp);
    testfs_path(sft2, sizeof sft2, "%s/sft-bon", c->tmp);
    snprintf(a[0], sizeof a[0], "--init=%s", sft);
    snprintf(a[1], sizeof a[1], "--data=%s/train.jsonl", out);
    snprintf(a[2], sizeof a[2], "--out=%s", rm);
    const char *rm_args[] = {a[0], a[1], a[2], "--steps=10", "--eval-frac=0.1", NULL};
    if (!run_ok(c, "rm", "rlhf-rm", rm_args, 120.0)) return;
    snprintf(a[0], sizeof a[0], "--policy=%s", sft);
    snprintf(a[1], sizeof a[1], "--reward-model=%s", rm);
    snprintf(a[2], sizeof a[2], "--out=%s", bon);
    snprintf(a[3], sizeof a[3], "--summary=%s", sum);
    const char *bon_args[] = {a[0], a[1], a[2], a[3], "--n=4", "--prompts=40", "--max-digits=2",
                              NULL};
    if (!run_ok(c, "bon", "rlhf-bon", bon_args, 120.0)) return;
    /* Every kept completion's gold is the judge's. */
    char *text = testfs_read(bon, 1u << 20);
    int   kept = 0, wrong = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t     *j = json_loads(line, 0, NULL);
        const char *comp = NULL, *ans = NULL;
        double      g = 0, sc = 0;
        int         n = 0;
        if (!EXPECT(j &&
                        json_unpack(j, "{s:s, s:{s:s, s:F, s:F, s:i}}", "completion", &comp, "meta",
                                    "answer", &ans, "gold", &g, "score", &sc, "n", &n) == 0,
                    "bon.jsonl:%d: not a kept record: %s", kept + 1, line)) {
            json_decref(j);
            break;
        }
        wrong += fabs(gold_arith(comp, ans) - g) > 1e-9 || n != 4;
        kept++;
        json_decref(j);
    }
    free(text);
    json_t *s = json_load_file(sum, 0, NULL);
    json_t *cv = s ? json_object_get(s, "curve") : NULL;
    int     kept_sum = -1;
    json_unpack(s, "{s:i}", "kept", &kept_sum);
    EXPECT(kept == kept_sum && kept > 30 && wrong == 0,
           "bon.jsonl: %d records (summary says %d), %d with a gold that is not the judge's", kept,
           kept_sum, wrong);
    EXPECT(json_array_size(cv) == 3, "the curve has %zu points, expected n = 1, 2, 4",
           json_array_size(cv));
    for (size_t i = 0; i < json_array_size(cv); i++) {
        int    n = 0;
        double g = 0, o = 0, gain = 0;
        json_unpack(json_array_get(cv, i), "{s:i, s:F, s:F, s:F}", "n", &n, "gold", &g,
                    "gold_oracle", &o, "gain_vs_1", &gain);
        EXPECT(n == 1 << i && o >= g - 1e-12 && (i > 0 || (gain == 0 && fabs(o - g) < 1e-12)),
               "curve point %zu: n %d gold %g oracle %g gain %g", i, n, g, o, gain);
    }
    json_decref(s);
    snprintf(a[0], sizeof a[0], "--init=%s", sft);
    snprintf(a[1], sizeof a[1], "--data=%s", bon);
    snprintf(a[2], sizeof a[2], "--out=%s", sft2);
    const char *sft_args[] = {
        a[0], a[1], a[2], "--steps=5", "--batch=8", "--eval-n=20", "--max-digits=2", NULL};
    run_ok(c, "sft-bon", "rlhf-sft", sft_args, 60.0);
    /* Refusals: a policy is not a reward model; --n 0. */
    char       prog[PATH_MAX + 32];
    ProcResult r;
    snprintf(prog, sizeof prog, "%s/rlhf-bon", c->build);
    snprintf(a[0], sizeof a[0], "--policy=%s", sft);
    snprintf(a[1], sizeof a[1], "--reward-model=%s", sft);
    const char *no_head[] = {"rlhf-bon", a[0], a[1], NULL};
    int         rc = proc_run(prog, no_head, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 1 && strstr(r.err, sft), &r,
               "a policy as --reward-model: exit %d, expected 1 naming it", r.status);
    proc_result_free(&r);
    const char *n0[] = {"rlhf-bon", a[0], "--reward-model=/x", "--n=0", NULL};
    rc = proc_run(prog, n0, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "--n"), &r,
               "--n 0: exit %d, expected 2 naming the flag", r.status);
    proc_result_free(&r);
}

/* The chat variant on SmolLM2: a few pairs, a reward model of two steps
 * from the GGUF, best-of-2 with it. */
static void check_chat(TestCl *c)
{
    const char *gguf = fixture_smollm2_path("prefgen");
    if (!gguf) return;
    char        out[PATH_MAX + 40], rm[PATH_MAX + 40], path[PATH_MAX + 80];
    static char a[5][2 * PATH_MAX];
    testfs_path(out, sizeof out, "%s/chat", c->tmp);
    testfs_path(rm, sizeof rm, "%s/rm-chat", c->tmp);
    snprintf(a[0], sizeof a[0], "--model=%s", gguf);
    snprintf(a[1], sizeof a[1], "--out=%s", out);
    const char *args[] = {a[0],
                          a[1],
                          "--pairs=6",
                          "--eval-pairs=4",
                          "--refs=4",
                          "--max-new=24",
                          "--decode-weights=bf16",
                          "--batch=16",
                          NULL};
    if (!run_ok(c, "prefgen-chat", "rlhf-prefgen", args, 240.0)) return;
    snprintf(path, sizeof path, "%s/train.jsonl", out);
    char *text = testfs_read(path, 1u << 20);
    int   n = 0, bad = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n"), n++) {
        json_t     *j = json_loads(line, 0, NULL);
        const char *q = NULL, *ch = NULL, *rj = NULL, *ans = NULL;
        double      gc = 0, gr = 0;
        if (!j || json_unpack(j, "{s:s, s:s, s:s, s:{s:s, s:F, s:F}}", "prompt", &q, "chosen", &ch,
                              "rejected", &rj, "meta", "answer", &ans, "gold_chosen", &gc,
                              "gold_rejected", &gr) != 0) {
            bad++;
        } else {
            bad += strncmp(q, "What is ", 8) != 0 || fabs(gold_chat(ch, ans) - gc) > 1e-9 ||
                   fabs(gold_chat(rj, ans) - gr) > 1e-9 || !strcmp(ch, rj);
        }
        json_decref(j);
    }
    free(text);
    EXPECT(n == 6 && bad == 0,
           "chat train.jsonl: %d pairs, %d not questions with gold_chat's "
           "gold and two answers",
           n, bad);
    snprintf(a[1], sizeof a[1], "--data=%s/train.jsonl", out);
    snprintf(a[2], sizeof a[2], "--out=%s", rm);
    snprintf(a[3], sizeof a[3], "--eval-data=%s/eval.jsonl", out);
    const char *rm_args[] = {a[0], a[1], a[2], a[3], "--steps=1", "--batch=2", "--max-len=256",
                             NULL};
    if (!run_ok(c, "rm-chat", "rlhf-rm", rm_args, 240.0)) return;
    snprintf(a[1], sizeof a[1], "--reward-model=%s", rm);
    snprintf(a[2], sizeof a[2], "--summary=%s/bon.json", out);
    const char *bon_args[] = {a[0],          a[1],         a[2],           "--n=2",
                              "--prompts=2", "--held-out", "--max-new=24", "--decode-weights=bf16",
                              NULL};
    if (!run_ok(c, "bon-chat", "rlhf-bon", bon_args, 240.0)) return;
    snprintf(path, sizeof path, "%s/bon.json", out);
    json_t *s = json_load_file(path, 0, NULL);
    int     np = 0;
    double  g1 = -9, o = -9;
    json_unpack(json_array_get(json_object_get(s, "curve"), 1), "{s:F, s:F}", "gold", &g1,
                "gold_oracle", &o);
    json_unpack(s, "{s:i}", "prompts", &np);
    EXPECT(np == 2 && g1 >= -1 && g1 <= 1 && o >= g1 - 1e-12,
           "chat best-of-2: %d prompts, gold %g, oracle %g", np, g1, o);
    testcl_note(c, "chat: best-of-2 gold %.3f (oracle %.3f)", g1, o);
    json_decref(s);
}

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
    check_widest(&c, sft, out, dg_t, n_t);
    check_rankings(&c, sft, out, n_t);
    check_bon(&c, sft, out);
    check_chat(&c);

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
