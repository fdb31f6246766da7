#include "learner/algo/advantage.h"

#include <math.h>

#include "common/base/err.h"
#include "learner/algo/agg.h"

/* Mask-weighted mean and population standard deviation of x (n) over the
 * entries with mask > 0. Returns false when nothing counts or every counted
 * value is equal: then there is no spread to normalise, and the caller
 * writes exact zeros rather than trusting mean == x to the last bit. */
static bool moments(double *mean, double *std, const float *x, const float *mask, int n)
{
    double wsum = 0.0, sum = 0.0, first = 0.0;
    bool   spread = false;
    for (int i = 0; i < n; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        if (wsum == 0.0)
            first = x[i];
        else if ((double)x[i] != first)
            spread = true;
        wsum += m;
        sum += m * x[i];
    }
    if (!spread) return false;
    *mean = sum / wsum;
    /* Two passes: the sum of squares minus the squared mean would cancel. */
    double var = 0.0;
    for (int i = 0; i < n; i++) {
        double m = agg_weight(mask, i);
        if (m == 0.0) continue;
        double d = x[i] - *mean;
        var += m * d * d;
    }
    *std = sqrt(var / wsum);
    return true;
}

void adv_group(float *adv, const float *rewards, bool divide_std, int n_groups, int G)
{
    CHECK(n_groups >= 0 && G >= 1 && adv && rewards);
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * G;
        float       *out = adv + (size_t)g * G;
        double       mean, std;
        if (!moments(&mean, &std, r, NULL, G)) {
            for (int i = 0; i < G; i++) out[i] = 0.0f;
            continue;
        }
        double scale = divide_std ? 1.0 / (std + ADV_STD_EPS) : 1.0;
        for (int i = 0; i < G; i++) out[i] = (float)((r[i] - mean) * scale);
    }
}

void adv_whiten(float *out, const float *x, const float *mask, int N)
{
    CHECK(N >= 0 && out && x);
    double mean, std;
    if (!moments(&mean, &std, x, mask, N)) {
        for (int i = 0; i < N; i++) out[i] = 0.0f;
        return;
    }
    double scale = 1.0 / (std + ADV_STD_EPS);
    for (int i = 0; i < N; i++)
        out[i] = agg_weight(mask, i) > 0.0 ? (float)((x[i] - mean) * scale) : 0.0f;
}

void adv_rloo(float *adv, const float *rewards, int n_groups, int G)
{
    CHECK(n_groups >= 0 && G >= 1 && adv && rewards);
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * G;
        float       *out = adv + (size_t)g * G;
        if (G == 1 || adv_group_is_flat(r, G)) {
            for (int i = 0; i < G; i++) out[i] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int i = 0; i < G; i++) sum += r[i];
        /* r_i - (sum - r_i) / (G - 1), computed per completion: out may
         * alias r, and r[i] is read before out[i] is written. */
        for (int i = 0; i < G; i++) out[i] = (float)(r[i] - (sum - r[i]) / (G - 1));
    }
}

void adv_reinforce(float *adv, const float *rewards, double *baseline, bool *has_baseline,
                   float decay, int n)
{
    CHECK(n >= 1 && adv && rewards && baseline && has_baseline && decay >= 0.0f && decay < 1.0f);
    double mean = 0.0;
    for (int i = 0; i < n; i++) mean += rewards[i];
    mean /= n;
    if (!*has_baseline) {
        *baseline = mean;
        *has_baseline = true;
    }
    double b = *baseline;
    for (int i = 0; i < n; i++) adv[i] = (float)(rewards[i] - b);
    *baseline = decay * b + (1.0 - decay) * mean;
}

float adv_overlong_penalty(int len, int max_len, int buffer, float coef)
{
    if (buffer == 0) return 0.0f;
    CHECK(buffer >= 1 && buffer <= max_len && len >= 0);
    int free_len = max_len - buffer;
    if (len <= free_len) return 0.0f;
    if (len > max_len) return -coef;
    return (float)((double)coef * (free_len - len) / buffer);
}

bool adv_group_is_flat(const float *rewards, int G)
{
    CHECK(G >= 1 && rewards);
    for (int i = 1; i < G; i++)
        if (rewards[i] != rewards[0]) return false;
    return true;
}
