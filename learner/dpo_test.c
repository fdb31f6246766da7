/* dpo's self-test: the DPO gradient through the whole model (every tensor,
 * by finite differences along random directions) against a reference that
 * differs from the policy, on pairs, a margin and a ranking of three; a
 * policy equal to its reference (loss log 2, accuracy 0, the sequence
 * log-probs as the model's per-token ones summed); and a small policy
 * learning its training pairs, implicit-reward accuracy rising to 1. */
#include "learner/dpo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

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
    const double      *ref;
    float              beta;
} LossCtx;

static double dpo_loss(void *p)
{
    LossCtx *c = p;
    DpoStats st;
    CHECK(dpo_eval(c->m, c->recs, c->n, c->ref, c->beta, 0.0f, &st) == 0);
    return st.loss;
}

static void test_grad(const Tok *tok, bool verbose)
{
    ModelConfig c = fixture_model_config(16, 2, 2, 1, 32, tok_vocab_size(tok), 24);
    Model      *m = model_new(&c), *ref_model = model_new(&c);
    model_init_random(m, 3, 0.3f);
    model_init_random(ref_model, 4, 0.3f);
    const char *a[] = {"12", "13"}, *b[] = {"7", "-1"}, *r3[] = {"6", "60", "5"};
    PrefsRecord recs[3] = {make_record(tok, "5+7=", a, 2, 0.0f),
                           make_record(tok, "3-4=", b, 2, 0.5f),
                           make_record(tok, "2*3=", r3, 3, 0.0f)};
    double      ref[7];
    CHECK(dpo_seq_logps(ref_model, recs, 3, ref) == 0);
    LossCtx  ctx = {m, recs, 3, ref, 0.5f};
    DpoStats st;
    CHECK(dpo_grad(m, recs, 3, ref, 0.5f, 0.0f, &st) == 0);
    EXPECT(st.pairs == 5 && st.rows == 7 && st.records == 3 && st.accuracy > 0.0 &&
               st.accuracy < 1.0,
           "batch: %d pairs, %d rows; accuracy %.2f should be between 0 and 1 against another "
           "model",
           st.pairs, st.rows, st.accuracy);
    Rng rng;
    rng_seed(&rng, 7);
    size_t np = model_num_params(m);
    float *dir = xmalloc(np * sizeof(float)), *g = xmalloc(np * sizeof(float));
    memcpy(g, model_grads(m), np * sizeof(float));
    double worst = 0.0;
    for (int t = 0; t < model_num_tensors(m); t++) {
        ModelTensor ti;
        model_tensor(m, t, &ti);
        const float *gt = g + (ti.grad - model_grads(m));
        double num, analytic = numcheck_slope(dpo_loss, &ctx, ti.data, gt, ti.numel, dir, &rng,
                                              1e-3f, &num);
        /* The loss is a float forward: each evaluation carries rounding of
         * about 1e-7 of its ~0.7, which the 2e-3 step turns into ~1e-4 of
         * noise in the numeric slope. A slope below 0.05 (lm_head's is about
         * 0.02 on some machines' kernels) is judged against 0.05, so that
         * noise stays under the tolerance; the larger slopes are relative. */
        double err = numcheck_rel_diff(analytic, num, 5e-2);
        worst = fmax(worst, err);
        EXPECT(err <= 3e-3, "dpo grad: %s analytic %.6g numeric %.6g rel err %.3g > 3e-3", ti.name,
               analytic, num, err);
        if (verbose && t < 3)
            printf("  dpo grad %-34s analytic %+.6f numeric %+.6f\n", ti.name, analytic, num);
    }
    if (verbose)
        printf("  dpo grad: %d tensors, worst rel err %.2e (tol 3e-3)\n", model_num_tensors(m),
               worst);

    /* The policy as its own reference: log 2 for every pair without a margin, accuracy 0
     * (ties), and a sequence log-prob is the per-token ones summed. */
    double self[7];
    CHECK(dpo_seq_logps(m, recs, 3, self) == 0);
    CHECK(dpo_eval(m, recs, 3, self, 0.5f, 0.0f, &st) == 0);
    /* z = -margin: log 2 for the two records without one, log(1 + e^0.5)
     * for the one with margin 0.5 (to 1e-7: the ranking's weights of 1/3
     * are floats). */
    EXPECT_NEAR(st.loss, (2.0 * log(2.0) + log1p(exp(0.5))) / 3.0, 1e-7,
                "dpo loss of a policy equal to its reference");
    EXPECT(st.accuracy == 0.0 && st.margin_mean == 0.0,
           "policy = reference: accuracy %.3f margin %g, expected 0 (ties)", st.accuracy,
           st.margin_mean);
    int tokens[8], targets[8];
    int n = 0;
    for (int t = 0; t < recs[0].n_prompt; t++) tokens[n++] = recs[0].prompt[t];
    for (int t = 0; t < recs[0].n_comp[0]; t++) tokens[n++] = recs[0].comp[0][t];
    for (int t = 0; t + 1 < n; t++) targets[t] = tokens[t + 1];
    float logp[8];
    model_forward(m, tokens, targets, NULL, 1, n - 1, logp, NULL, NULL);
    double sum = 0.0;
    for (int t = recs[0].n_prompt - 1; t < n - 1; t++) sum += logp[t];
    EXPECT_NEAR(self[0], sum, 1e-5, "sequence log-prob = sum of the completion's token log-probs");
    free(dir);
    free(g);
    for (int i = 0; i < 3; i++) prefs_record_free(&recs[i]);
    model_free(&m);
    model_free(&ref_model);
}

/* 16 pairs (the right sum over a wrong one): implicit-reward accuracy from
 * 0 (the policy is its reference) to 1, the chosen's log-prob rising. */
static void test_learn(const Tok *tok, bool verbose)
{
    ModelConfig c = fixture_model_config(32, 2, 4, 2, 64, tok_vocab_size(tok), 24);
    c.tie_embeddings = true;
    Model *m = model_new(&c);
    model_init_random(m, 5, 0.05f);
    enum { N = 16 };
    PrefsRecord recs[N];
    for (int i = 0; i < N; i++) {
        char prompt[16], right[8], wrong[8];
        int  x = 3 + 7 * i % 40, y = 1 + 5 * i % 30;
        snprintf(prompt, sizeof prompt, "%d+%d=", x, y);
        snprintf(right, sizeof right, "%d", x + y);
        snprintf(wrong, sizeof wrong, "%d", x + y + 1 + i % 3);
        const char *comps[2] = {right, wrong};
        recs[i] = make_record(tok, prompt, comps, 2, 0.0f);
    }
    double ref[2 * N];
    CHECK(dpo_seq_logps(m, recs, N, ref) == 0);
    OptimConfig oc = fixture_optim_config(3e-3f, 3e-4f, 5, 100);
    oc.grad_clip = 1.0f;
    Optim   *opt = optim_new(&oc, model_num_params(m));
    DpoStats st0, st;
    CHECK(dpo_eval(m, recs, N, ref, 0.1f, 0.0f, &st0) == 0);
    for (int s = 0; s < 100; s++) CHECK(dpo_step(m, opt, recs, N, ref, 0.1f, 0.0f, &st) == 0);
    CHECK(dpo_eval(m, recs, N, ref, 0.1f, 0.0f, &st) == 0);
    if (verbose)
        printf("  dpo learns 16 pairs: loss %.4f -> %.4f, accuracy %.3f -> %.3f, chosen reward "
               "%+.3f rejected %+.3f\n",
               st0.loss, st.loss, st0.accuracy, st.accuracy, st.chosen_reward, st.rejected_reward);
    EXPECT(st0.accuracy == 0.0 && st.accuracy == 1.0 && st.loss < 0.3 && st.margin_mean > 0.0,
           "dpo: accuracy %.3f -> %.3f, loss %.4f; expected 0 -> 1 and below 0.3", st0.accuracy,
           st.accuracy, st.loss);
    for (int i = 0; i < N; i++) prefs_record_free(&recs[i]);
    optim_free(&opt);
    model_free(&m);
}

int dpo_selftest(bool verbose)
{
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    test_grad(tok, verbose);
    test_learn(tok, verbose);
    tok_free(&tok);
    return expect_end();
}
