#include "learner/algo/agg.h"

#include "common/base/err.h"

double agg_denominator(const float *mask, float norm, int n)
{
    CHECK(norm >= 0.0f);
    if (norm > 0.0f) return norm;
    double d = 0.0;
    for (int i = 0; i < n; i++) d += agg_weight(mask, i);
    return d;
}

void agg_seq_sum(float *out, const float *x, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && out && x);
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            double m = agg_weight(mask, bt);
            if (m > 0.0) s += m * x[bt];
        }
        out[b] = (float)s;
    }
}

void agg_seq_sum_backward(float *dx, const float *dout, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && dx && dout);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            dx[bt] += (float)(dout[b] * agg_weight(mask, bt));
        }
}

void agg_seq_mean_weights(float *w, const float *mask, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && w);
    int rows = 0;
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) s += agg_weight(mask, (size_t)b * T + t);
        rows += s > 0.0;
    }
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) s += agg_weight(mask, (size_t)b * T + t);
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            double m = agg_weight(mask, bt);
            w[bt] = m > 0.0 ? (float)(m / s / rows) : 0.0f;
        }
    }
}

const char *const agg_mode_names[] = {"token-mean", "seq-mean", "constant", NULL};

float agg_weights(float *w, AggMode mode, const float *mask, int const_len, int B, int T)
{
    CHECK(B >= 0 && T >= 0 && w);
    size_t N = (size_t)B * T;
    switch (mode) {
    case AGG_TOKEN_MEAN:
        for (size_t i = 0; i < N; i++) w[i] = (float)agg_weight(mask, i);
        return 0.0f;
    case AGG_SEQ_MEAN:
        agg_seq_mean_weights(w, mask, B, T);
        return 0.0f;
    case AGG_CONSTANT:
        CHECK(const_len >= 1);
        for (size_t i = 0; i < N; i++) w[i] = (float)agg_weight(mask, i);
        return (float)B * (float)const_len;
    }
    CHECK(!"unknown AggMode");
    return 0.0f;
}
