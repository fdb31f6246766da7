#include "learner/dpo.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "learner/algo/prefs.h"
#include "learner/prefs_batch.h"

/* The rows' sequence log-probs: logp (B,T) scratch, out (B). */
static void seq_logps(Model *m, const PrefsBatch *b, float *logp, double *out)
{
    model_forward(m, b->tokens, b->targets, b->comp_mask, b->B, b->T, logp, NULL, NULL);
    prefs_batch_seq_logp(b, logp, out);
}

int dpo_seq_logps(Model *m, const PrefsRecord *recs, int n, double *out)
{
    PrefsBatch b;
    int        rc = prefs_batch_pack(&b, recs, n, model_config(m)->max_seq_len, 0.0f);
    if (rc) return rc;
    float *logp = xmalloc((size_t)b.B * b.T * sizeof(float));
    seq_logps(m, &b, logp, out);
    free(logp);
    prefs_batch_free(&b);
    return 0;
}

static int run(Model *m, const PrefsRecord *recs, int n, const double *ref, float beta,
               float margin, bool grad, DpoStats *st)
{
    CHECK(beta > 0.0f);
    memset(st, 0, sizeof *st);
    PrefsBatch b;
    int        rc = prefs_batch_pack(&b, recs, n, model_config(m)->max_seq_len, margin);
    if (rc) return rc;
    size_t  NT = (size_t)b.B * b.T;
    float  *logp = xcalloc(2 * NT, sizeof(float)), *dlogp = logp + NT;
    double *lr = xmalloc((size_t)b.B * sizeof(double));
    float  *dlr = xcalloc((size_t)b.B, sizeof(float));
    if (grad) model_zero_grad(m);
    seq_logps(m, &b, logp, lr);
    /* The log-ratio of each completion, in double: a policy equal to its
     * reference gives exactly 0. */
    for (int i = 0; i < b.B; i++) lr[i] -= ref[i];
    PrefsPairStats ps;
    st->loss = prefs_pairs_loss(grad ? dlr : NULL, &ps, lr, b.pairs, b.P, beta, (double)n);
    if (grad) {
        /* d seq_logp / d logp[t] = comp_mask[t]. */
        for (int i = 0; i < b.B; i++)
            for (int t = 0; t < b.T; t++)
                dlogp[(size_t)i * b.T + t] = dlr[i] * b.comp_mask[(size_t)i * b.T + t];
        model_backward(m, dlogp, NULL, NULL);
    }
    st->accuracy = ps.accuracy;
    st->chosen_reward = ps.chosen_mean;
    st->rejected_reward = ps.rejected_mean;
    st->margin_mean = ps.margin_mean;
    st->records = n;
    st->pairs = b.P;
    st->rows = b.B;
    st->seq_len = b.T;
    free(logp);
    free(lr);
    free(dlr);
    prefs_batch_free(&b);
    return 0;
}

int dpo_eval(Model *m, const PrefsRecord *recs, int n, const double *ref, float beta, float margin,
             DpoStats *st)
{
    return run(m, recs, n, ref, beta, margin, false, st);
}

int dpo_grad(Model *m, const PrefsRecord *recs, int n, const double *ref, float beta, float margin,
             DpoStats *st)
{
    return run(m, recs, n, ref, beta, margin, true, st);
}

int dpo_step(Model *m, Optim *opt, const PrefsRecord *recs, int n, const double *ref, float beta,
             float margin, DpoStats *st)
{
    int rc = dpo_grad(m, recs, n, ref, beta, margin, st);
    if (rc) return rc;
    rc = optim_step(opt, model_params(m), model_grads(m), NULL, &st->grad_norm, &st->lr);
    if (rc) log_error("dpo_step: gradient norm %g is not finite; step skipped", st->grad_norm);
    return rc;
}
