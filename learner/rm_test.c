/* rm's self-test: the Bradley-Terry gradient through the whole model
 * (every tensor, by finite differences along random directions) on pairs,
 * a margin and a ranking of three; the head's bias untouched by the loss; a
 * small reward model learning its training pairs; the bias normalisation
 * (the mean reward of a reference set within 1e-4 of 0, differences kept);
 * and the checkpoint round trip in the Hugging Face sequence-classification
 * layout (config.json, score.weight (1, C), equal rewards after reload). */
#include "learner/rm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/safetensors.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/numcheck.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* A record of a prompt and k completions, best first, from text. */
static PrefsRecord make_record(const Tok *tok, const char *prompt, const char *const *comps, int k,
                               float margin)
{
    PrefsRecord r = {.k = k, .margin = margin, .has_margin = margin > 0.0f, .is_ranking = k > 2};
    size_t      n = strlen(prompt);
    r.prompt = xmalloc((n + 1) * sizeof(int));
    CHECK(tok_encode(tok, prompt, n, TOK_ENC_BOS, r.prompt, (int)n + 1, &r.n_prompt) == 0);
    for (int i = 0; i < k; i++) {
        size_t m = strlen(comps[i]);
        r.comp[i] = xmalloc((m + 1) * sizeof(int));
        CHECK(tok_encode(tok, comps[i], m, TOK_ENC_EOS, r.comp[i], (int)m + 1, &r.n_comp[i]) == 0);
    }
    return r;
}

typedef struct {
    Model             *m;
    const PrefsRecord *recs;
    int                n;
} LossCtx;

static double rm_loss(void *p)
{
    LossCtx *c = p;
    RmStats  st;
    CHECK(rm_eval(c->m, c->recs, c->n, 0.0f, &st) == 0);
    return st.loss;
}

static void test_grad(const Tok *tok, bool verbose)
{
    ModelConfig c = fixture_model_config(16, 2, 2, 1, 32, tok_vocab_size(tok), 24);
    c.has_value_head = true;
    Model *m = model_new(&c);
    model_init_random(m, 3, 0.3f);
    const char *a[] = {"12", "13"}, *b[] = {"7", "-1"}, *r3[] = {"6", "60", "5"};
    PrefsRecord recs[3] = {make_record(tok, "5+7=", a, 2, 0.0f),
                           make_record(tok, "3-4=", b, 2, 0.5f),
                           make_record(tok, "2*3=", r3, 3, 0.0f)};
    LossCtx     ctx = {m, recs, 3};
    RmStats     st;
    CHECK(rm_grad(m, recs, 3, 0.0f, &st) == 0);
    EXPECT(st.pairs == 5 && st.rows == 7 && st.records == 3 && st.seq_len == 8,
           "batch: %d pairs, %d rows, %d records, %d positions; expected 5, 7, 3, 8", st.pairs,
           st.rows, st.records, st.seq_len);
    Rng rng;
    rng_seed(&rng, 7);
    float *dir = xmalloc(model_num_params(m) * sizeof(float));
    float *g = xmalloc(model_num_params(m) * sizeof(float));
    memcpy(g, model_grads(m), model_num_params(m) * sizeof(float));
    double worst = 0.0;
    for (int t = 0; t < model_num_tensors(m); t++) {
        ModelTensor ti;
        model_tensor(m, t, &ti);
        const float *gt = g + (ti.grad - model_grads(m));
        double       num,
            analytic = numcheck_slope(rm_loss, &ctx, ti.data, gt, ti.numel, dir, &rng, 1e-3f, &num);
        double err = numcheck_rel_diff(analytic, num, 1e-2);
        worst = fmax(worst, err);
        EXPECT(err <= 3e-3, "rm grad: %s analytic %.6g numeric %.6g rel err %.3g > 3e-3", ti.name,
               analytic, num, err);
        if (verbose && (t < 2 || !strncmp(ti.name, "score", 5)))
            printf("  rm grad %-34s analytic %+.6f numeric %+.6f\n", ti.name, analytic, num);
    }
    ModelTensor bias;
    CHECK(model_find_tensor(m, "score.bias", &bias) == 0);
    float gb = g[bias.grad - model_grads(m)];
    EXPECT(fabsf(gb) < 1e-6f, "the loss moved score.bias: gradient %g, expected 0", (double)gb);
    if (verbose)
        printf("  rm grad: %d tensors, worst rel err %.2e (tol 3e-3), d/d bias %.1e\n",
               model_num_tensors(m), worst, (double)gb);
    free(dir);
    free(g);
    for (int i = 0; i < 3; i++) prefs_record_free(&recs[i]);
    model_free(&m);
}

/* A small reward model from a random policy learns its 16 training pairs
 * (the right sum over a wrong one); its rewards are then normalised on a
 * reference set, and saved and loaded back. */
static void test_learn_normalise_save(const Tok *tok, bool verbose)
{
    ModelConfig c = fixture_model_config(32, 2, 4, 2, 64, tok_vocab_size(tok), 24);
    c.tie_embeddings = true;
    Model *policy = model_new(&c);
    model_init_random(policy, 5, 0.05f);
    Model *m = rm_from_policy(policy, 9, 0.02f);
    EXPECT(model_config(m)->has_value_head &&
               model_num_params(m) == model_num_params(policy) + c.dim + 1,
           "rm_from_policy: %zu parameters, the policy's %zu + C + 1", model_num_params(m),
           model_num_params(policy));
    ModelTensor pe, me;
    CHECK(model_find_tensor(policy, "model.embed_tokens.weight", &pe) == 0);
    CHECK(model_find_tensor(m, "model.embed_tokens.weight", &me) == 0);
    EXPECT(!memcmp(pe.data, me.data, pe.numel * sizeof(float)) && rm_bias(m) == 0.0f,
           "rm_from_policy: the body is not the policy's, or the bias is not 0");
    enum { N = 16 };
    PrefsRecord recs[N];
    char        prompts[N][16], right[N][8], wrong[N][8];
    for (int i = 0; i < N; i++) {
        int x = 3 + 7 * i % 40, y = 1 + 5 * i % 30;
        snprintf(prompts[i], sizeof prompts[i], "%d+%d=", x, y);
        snprintf(right[i], sizeof right[i], "%d", x + y);
        snprintf(wrong[i], sizeof wrong[i], "%d", x + y + 1 + i % 3);
        const char *comps[2] = {right[i], wrong[i]};
        recs[i] = make_record(tok, prompts[i], comps, 2, 0.0f);
    }
    OptimConfig oc = fixture_optim_config(3e-3f, 3e-4f, 5, 150);
    oc.grad_clip = 1.0f;
    Optim  *opt = optim_new(&oc, model_num_params(m));
    RmStats st0, st;
    CHECK(rm_eval(m, recs, N, 0.0f, &st0) == 0);
    for (int s = 0; s < 150; s++) CHECK(rm_step(m, opt, recs, N, 0.0f, &st) == 0);
    CHECK(rm_eval(m, recs, N, 0.0f, &st) == 0);
    if (verbose)
        printf("  rm learns 16 pairs: loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", st0.loss,
               st.loss, st0.accuracy, st.accuracy);
    EXPECT(st.accuracy == 1.0 && st.loss < 0.2 && st.loss < st0.loss,
           "after 150 steps: accuracy %.3f loss %.4f (from %.4f); expected 1 and below 0.2",
           st.accuracy, st.loss, st0.loss);

    /* Normalisation on a reference set of 12 completions (k = 1 each). */
    PrefsRecord ref[12];
    for (int i = 0; i < 12; i++) {
        char        ans[8];
        const char *one[1] = {ans};
        snprintf(ans, sizeof ans, "%d", 10 + 3 * i);
        ref[i] = make_record(tok, prompts[i], one, 1, 0.0f);
    }
    double before[12], after[12], mean = 0.0;
    CHECK(rm_score(m, ref, 12, before) == 0);
    for (int i = 0; i < 12; i++) mean += before[i] / 12;
    rm_shift_bias(m, -mean);
    CHECK(rm_score(m, ref, 12, after) == 0);
    double mean_after = 0.0, worst_diff = 0.0;
    for (int i = 0; i < 12; i++) {
        mean_after += after[i] / 12;
        worst_diff = fmax(worst_diff, fabs((after[i] - after[0]) - (before[i] - before[0])));
    }
    if (verbose)
        printf("  rm normalise: reference mean %+.6f -> %+.2e, bias %+.6f\n", mean, mean_after,
               (double)rm_bias(m));
    EXPECT(fabs(mean_after) < 1e-4,
           "mean reference reward after normalising: %g, expected |.| < 1e-4", mean_after);
    EXPECT(worst_diff < 1e-5, "normalising changed reward differences by %g", worst_diff);

    /* Save and load: the HF sequence-classification layout, equal rewards. */
    char dir[256], ck[512], cfg[600];
    CHECK(testfs_tmpdir_new("rm", dir, sizeof dir) == 0);
    testfs_path(ck, sizeof ck, "%s/rm", dir);
    EXPECT(ckpt_save(ck, m, tok, NULL, NULL) == 0, "ckpt_save of the reward model");
    testfs_path(cfg, sizeof cfg, "%s/config.json", ck);
    char  *text = NULL;
    size_t len = 0;
    CHECK(fileio_read_all(cfg, 1 << 20, true, &text, &len) == 0);
    EXPECT(strstr(text, "\"LlamaForSequenceClassification\"") &&
               strstr(text, "\"num_labels\": 1") && strstr(text, "\"rlhf_has_value_head\": true"),
           "config.json of a reward model:\n%s", text);
    free(text);
    testfs_path(cfg, sizeof cfg, "%s/model.safetensors", ck);
    StFile *f = NULL;
    CHECK(st_open(cfg, &f) == 0);
    int    w = st_find(f, "score.weight"), bb = st_find(f, "score.bias");
    StInfo wi = {0};
    if (w >= 0) st_info_at(f, w, &wi);
    EXPECT(w >= 0 && bb >= 0 && wi.ndim == 2 && wi.shape[0] == 1 && wi.shape[1] == c.dim,
           "model.safetensors: score.weight %s shape (%lld, %lld), score.bias %s",
           w >= 0 ? "found" : "missing", (long long)wi.shape[0], (long long)wi.shape[1],
           bb >= 0 ? "found" : "missing");
    st_close(&f);
    ModelConfig lc;
    Model      *back = NULL;
    double      again[12];
    if (EXPECT(ckpt_load_config(ck, &lc) == 0 && lc.has_value_head, "the config reads back")) {
        back = model_new(&lc);
        EXPECT(ckpt_load(ck, back) == 0, "ckpt_load of the reward model");
        CHECK(rm_score(back, ref, 12, again) == 0);
        EXPECT(!memcmp(again, after, sizeof again) && rm_bias(back) == rm_bias(m),
               "rewards after the round trip differ: %.9g vs %.9g", again[0], after[0]);
    }
    model_free(&back);
    testfs_tmpdir_remove(dir);
    for (int i = 0; i < N; i++) prefs_record_free(&recs[i]);
    for (int i = 0; i < 12; i++) prefs_record_free(&ref[i]);
    optim_free(&opt);
    model_free(&m);
    model_free(&policy);
}

int rm_selftest(bool verbose)
{
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    test_grad(tok, verbose);
    test_learn_normalise_save(tok, verbose);
    tok_free(&tok);
    return expect_end();
}
