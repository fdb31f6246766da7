#include "learner/rm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "learner/algo/prefs.h"
#include "learner/prefs_batch.h"

/* The head at each row's last position: r (B). value (B,T) is scratch. */
static void rewards(Model *m, const PrefsBatch *b, float *value, double *r)
{
    /* A mask of zeros: the head reads the final hidden states, so no row
     * needs the vocabulary's work. */
    model_forward(m, b->tokens, b->targets, b->no_mask, b->B, b->T, NULL, NULL, value);
    for (int i = 0; i < b->B; i++) r[i] = value[(size_t)i * b->T + b->last[i]];
}

/* Forward (and with grad, backward) over n records. */
static int run(Model *m, const PrefsRecord *recs, int n, float margin, bool grad, RmStats *st)
{
    CHECK(model_config(m)->has_value_head);
    memset(st, 0, sizeof *st);
    PrefsBatch b;
    int        rc = prefs_batch_pack(&b, recs, n, model_config(m)->max_seq_len, margin);
    if (rc) return rc;
    size_t         NT = (size_t)b.B * b.T;
    float         *value = xcalloc(2 * NT, sizeof(float)), *dvalue = value + NT;
    double        *r = xmalloc((size_t)b.B * sizeof(double));
    float         *dr = xcalloc((size_t)b.B, sizeof(float));
    PrefsPairStats ps;
    if (grad) model_zero_grad(m);
    rewards(m, &b, value, r);
    /* D = the records: a ranking's pairs weigh 1/C(K,2) in all, a pair 1. */
    st->loss = prefs_pairs_loss(grad ? dr : NULL, &ps, r, b.pairs, b.P, 1.0, (double)n);
    if (grad) {
        for (int i = 0; i < b.B; i++) dvalue[(size_t)i * b.T + b.last[i]] = dr[i];
        model_backward(m, NULL, NULL, dvalue);
    }
    st->accuracy = ps.accuracy;
    st->chosen_mean = ps.chosen_mean;
    st->rejected_mean = ps.rejected_mean;
    st->margin_mean = ps.margin_mean;
    st->records = n;
    st->pairs = b.P;
    st->rows = b.B;
    st->seq_len = b.T;
    free(value);
    free(r);
    free(dr);
    prefs_batch_free(&b);
    return 0;
}

int rm_eval(Model *m, const PrefsRecord *recs, int n, float margin, RmStats *st)
{
    return run(m, recs, n, margin, false, st);
}

int rm_grad(Model *m, const PrefsRecord *recs, int n, float margin, RmStats *st)
{
    return run(m, recs, n, margin, true, st);
}

int rm_step(Model *m, Optim *opt, const PrefsRecord *recs, int n, float margin, RmStats *st)
{
    int rc = rm_grad(m, recs, n, margin, st);
    if (rc) return rc;
    rc = optim_step(opt, model_params(m), model_grads(m), NULL, &st->grad_norm, &st->lr);
    if (rc) log_error("rm_step: gradient norm %g is not finite; step skipped", st->grad_norm);
    return rc;
}

int rm_score(Model *m, const PrefsRecord *recs, int n, double *out)
{
    CHECK(model_config(m)->has_value_head);
    PrefsBatch b;
    int        rc = prefs_batch_pack(&b, recs, n, model_config(m)->max_seq_len, 0.0f);
    if (rc) return rc;
    float *value = xmalloc((size_t)b.B * b.T * sizeof(float));
    rewards(m, &b, value, out);
    free(value);
    prefs_batch_free(&b);
    return 0;
}

static float *bias_of(Model *m)
{
    ModelTensor t;
    CHECK(model_find_tensor(m, "score.bias", &t) == 0);
    return t.data;
}

void rm_shift_bias(Model *m, double delta)
{
    float *b = bias_of(m);
    b[0] = (float)((double)b[0] + delta);
}

float rm_bias(Model *m)
{
    return bias_of(m)[0];
}

Model *rm_from_policy(Model *policy, uint64_t seed, float std)
{
    ModelConfig c = *model_config(policy);
    c.has_value_head = true;
    Model *rm = model_new(&c);
    Rng    rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < model_num_tensors(rm); i++) {
        ModelTensor t, p;
        model_tensor(rm, i, &t);
        if (model_find_tensor(policy, t.name, &p) == 0) {
            CHECK(p.numel == t.numel);
            memcpy(t.data, p.data, t.numel * sizeof(float));
        } else if (!strcmp(t.name, "score.weight")) {
            for (size_t j = 0; j < t.numel; j++) t.data[j] = std * rng_normal(&rng);
        } else {
            CHECK(!strcmp(t.name, "score.bias"));
            t.data[0] = 0.0f;
        }
    }
    return rm;
}
