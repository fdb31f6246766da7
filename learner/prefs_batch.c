#include "learner/prefs_batch.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

void prefs_batch_free(PrefsBatch *b)
{
    free(b->tokens);
    free(b->comp_mask);
    free(b->last);
    free(b->pairs);
    memset(b, 0, sizeof *b);
}

int prefs_batch_pack(PrefsBatch *b, const PrefsRecord *recs, int n, int T_cap, float margin_default)
{
    CHECK(n >= 1 && T_cap >= 1 && margin_default >= 0.0f);
    memset(b, 0, sizeof *b);
    int B = 0, T = 1, P = 0;
    for (int i = 0; i < n; i++) {
        const PrefsRecord *r = &recs[i];
        CHECK(r->k >= 1 && r->k <= PREFS_MAX_K && r->n_prompt >= 1);
        for (int j = 0; j < r->k; j++) {
            int len = r->n_prompt + r->n_comp[j];
            if (len > T_cap) {
                log_error("prefs_batch: the record of line %" PRIu64 ": prompt %d + completion %d "
                          "ids do not fit %d positions",
                          r->line, r->n_prompt, r->n_comp[j], T_cap);
                return ERR_RANGE;
            }
            T = len > T ? len : T;
        }
        B += r->k;
        P += r->k * (r->k - 1) / 2;
    }
    size_t NT = (size_t)B * T;
    b->B = B;
    b->T = T;
    b->n_records = n;
    b->tokens = xmalloc(2 * NT * sizeof(int));
    b->targets = b->tokens + NT;
    b->comp_mask = xcalloc(2 * NT, sizeof(float));
    b->no_mask = b->comp_mask + NT;
    b->last = xmalloc(3 * (size_t)B * sizeof(int));
    b->record = b->last + B;
    b->rank = b->last + 2 * B;
    b->pairs = xmalloc((size_t)(P > 0 ? P : 1) * sizeof(PrefsPair));
    int row = 0;
    for (int i = 0; i < n; i++) {
        const PrefsRecord *r = &recs[i];
        if (r->k >= 2)
            b->P += prefs_ranking_pairs(b->pairs + b->P, row, r->k,
                                        r->has_margin ? r->margin : margin_default);
        for (int j = 0; j < r->k; j++, row++) {
            int  np = r->n_prompt, len = np + r->n_comp[j];
            int *tok = b->tokens + (size_t)row * T, *tgt = b->targets + (size_t)row * T;
            for (int t = 0; t < T; t++) {
                tok[t] = t < np ? r->prompt[t] : t < len ? r->comp[j][t - np] : 0;
                tgt[t] = 0;
            }
            for (int t = 0; t + 1 < len; t++) {
                tgt[t] = tok[t + 1];
                /* Position t predicts token t+1: a completion token from t+1 = np on. */
                if (t + 1 >= np) b->comp_mask[(size_t)row * T + t] = 1.0f;
            }
            b->last[row] = len - 1;
            b->record[row] = i;
            b->rank[row] = j;
        }
    }
    CHECK(row == B && b->P == P);
    return 0;
}

void prefs_batch_seq_logp(const PrefsBatch *b, const float *logp, double *out)
{
    for (int r = 0; r < b->B; r++) {
        double       s = 0.0;
        const float *m = b->comp_mask + (size_t)r * b->T, *lp = logp + (size_t)r * b->T;
        for (int t = 0; t < b->T; t++)
            if (m[t] != 0.0f) s += lp[t];
        out[r] = s;
    }
}
