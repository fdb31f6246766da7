#include "common/tasks/gold.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "common/base/err.h"
#include "common/tasks/chat_task.h"

/* Parses '-'? digits (1..GOLD_DIGITS_MAX) filling all of s; false otherwise. */
static int parse_int(const char *s, double *out)
{
    size_t n = s ? strlen(s) : 0, i = 0;
    int    neg = 0;
    if (n > 0 && s[0] == '-') neg = 1, i = 1;
    if (n == i || n - i > GOLD_DIGITS_MAX) return 0;
    double v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

double gold_arith(const char *completion, const char *answer)
{
    double x, a;
    if (!parse_int(completion, &x) || !parse_int(answer, &a)) return -1.0;
    return exp(-fabs(x - a) / (1.0 + fabs(a) / 10.0));
}

double gold_chat(const char *completion, const char *answer)
{
    double    a;
    long long x;
    if (!parse_int(answer, &a) || !completion || !chat_task_extract(completion, &x)) return -1.0;
    double g = exp(-fabs((double)x - a) / (1.0 + fabs(a) / 10.0));
    size_t lo = 0, hi = strlen(completion);
    while (lo < hi && isspace((unsigned char)completion[lo])) lo++;
    while (hi > lo && isspace((unsigned char)completion[hi - 1])) hi--;
    return memchr(completion + lo, '\n', hi - lo) ? 0.5 * g : g;
}

static double sigmoid(double z)
{
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

double gold_prefer_prob(double g1, double g2, double tau)
{
    CHECK(tau > 0);
    return sigmoid((g1 - g2) / tau);
}

double gold_mean_flip(const double *dg, size_t n, double tau)
{
    CHECK(tau > 0);
    if (n == 0) return 0.0;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += sigmoid(-fabs(dg[i]) / tau);
    return s / (double)n;
}

double gold_calibrate_tau(const double *dg, size_t n, double flip)
{
    if (n == 0 || !(flip > 0 && flip < 0.5)) return 0.0;
    double lo = log(1e-6), hi = log(1e6);
    if (gold_mean_flip(dg, n, exp(lo)) > flip || gold_mean_flip(dg, n, exp(hi)) < flip) return 0.0;
    for (int it = 0; it < 200 && hi - lo > 1e-12; it++) {
        double mid = 0.5 * (lo + hi);
        if (gold_mean_flip(dg, n, exp(mid)) < flip)
            lo = mid;
        else
            hi = mid;
    }
    return exp(0.5 * (lo + hi));
}

int gold_label(double g1, double g2, double tau, double u)
{
    return u < gold_prefer_prob(g1, g2, tau) ? 1 : 0;
}

void gold_rank(const double *g, const double *u, int n, double tau, int *order)
{
    CHECK(tau > 0 && n >= 0 && n <= GOLD_RANK_MAX);
    double key[GOLD_RANK_MAX];
    for (int i = 0; i < n; i++) {
        double ui = u[i] > 0 ? u[i] : 1e-300; /* Gumbel: -log(-log u) */
        key[i] = g[i] / tau - log(-log(ui < 1 ? ui : 1 - 1e-16));
        order[i] = i;
    }
    for (int i = 1; i < n; i++) { /* insertion sort, descending key */
        int j = i, o = order[i];
        for (; j > 0 && key[order[j - 1]] < key[o]; j--) order[j] = order[j - 1];
        order[j] = o;
    }
}
