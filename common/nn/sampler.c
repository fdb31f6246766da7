#include "tests/test_list.h"
#include "common/nn/sampler.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/log.h"

static void set_why(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

int sampler_config_validate(const SamplerConfig *cfg, char *why, size_t why_len)
{
    CHECK(cfg);
    if (!isfinite(cfg->temperature) || cfg->temperature < 0.0f) {
        set_why(why, why_len, "sampler: temperature %g, expected finite and >= 0",
                (double)cfg->temperature);
        return ERR_RANGE;
    }
    if (cfg->top_k < 0) {
        set_why(why, why_len, "sampler: top_k %d, expected >= 0 (0 = off)", cfg->top_k);
        return ERR_RANGE;
    }
    /* Written so that NaN fails too. */
    if (!(cfg->top_p > 0.0f && cfg->top_p <= 1.0f)) {
        set_why(why, why_len, "sampler: top_p %g, expected in (0, 1] (1 = off)",
                (double)cfg->top_p);
        return ERR_RANGE;
    }
    if (why && why_len) why[0] = '\0';
    return 0;
}

size_t sampler_scratch_bytes(int V)
{
    CHECK(V > 0);
    return (size_t)V * (sizeof(float) + sizeof(int));
}

/* The total order every filter uses: higher logit first, lower id on ties. */
static bool ranks_above(const float *logits, int a, int b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* Restores the heap property below heap[i] of heap[0..n), a heap with the
 * lowest-ranked id at the root. */
static void sift_down_worst(int *heap, int n, int i, const float *logits)
{
    int top = heap[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ranks_above(logits, heap[c], heap[c + 1])) c++;
        if (ranks_above(logits, heap[c], top)) break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = top;
}

/* Writes the k highest-ranked ids of logits (V), best first, to ids[0..k),
 * 0 < k < V. A worst-on-top heap of the best k so far costs one well
 * predicted comparison per id that does not get in, so this is O(V) plus
 * O(log k) per entry, instead of a sort of all V. */
static void top_k_sorted(int *ids, const float *logits, int V, int k)
{
    for (int i = 0; i < k; i++) ids[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down_worst(ids, k, i, logits);
    for (int i = k; i < V; i++) {
        /* Every id in the heap is below i, so on equal logits i ranks lower
         * and stays out: a strict > is the whole ranks_above test here. */
        if (logits[i] > logits[ids[0]]) {
            ids[0] = i;
            sift_down_worst(ids, k, 0, logits);
        }
    }
    /* Heapsort: moving the root (the worst) to the end leaves best first. */
    for (int n = k - 1; n > 0; n--) {
        int worst = ids[0];
        ids[0] = ids[n];
        ids[n] = worst;
        sift_down_worst(ids, n, 0, logits);
    }
}

/* Reorders ids[0..n) so that its first c entries are the nucleus: the
 * shortest best-first prefix of the ranking whose weight reaches stop, and
 * returns c (n if the total falls short). The nucleus comes out unordered,
 * which is all sampling needs, so a weighted quickselect finds it in
 * expected O(n) where a best-first heap would pay O(log n) per kept token.
 * Pivots come from a fixed-seed generator: deterministic, and no structure
 * in the ids or logits can make every pivot bad. */
static int nucleus_select(int *ids, int n, const float *logits, const float *w, double stop)
{
    /* Invariant: ids[0..lo) rank above ids[lo..n) and weigh acc < stop;
     * ids[0..hi) weigh at least stop (or hi = n). */
    int      lo = 0, hi = n;
    double   acc = 0.0;
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    while (hi - lo > 1) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int   piv_at = lo + (int)(x % (uint64_t)(hi - lo));
        int   piv = ids[piv_at];
        float pl = logits[piv];
        ids[piv_at] = ids[hi - 1];
        ids[hi - 1] = piv;
        /* Move what ranks above the pivot to the front of ids[lo..hi-1). */
        int    i = lo;
        double above = 0.0;
        for (int j = lo; j < hi - 1; j++) {
            /* Branch-free: the comparison is a coin flip for the predictor.
             * Swapping two ids that both rank below is harmless. */
            int  id = ids[j];
            bool up = logits[id] > pl || (logits[id] == pl && id < piv);
            ids[j] = ids[i];
            ids[i] = id;
            i += up;
            above += up ? w[id] : 0.0f;
        }
        ids[hi - 1] = ids[i];
        ids[i] = piv;
        if (acc + above >= stop) {
            hi = i; /* the boundary is strictly above the pivot */
        } else if (acc + above + w[piv] >= stop) {
            return i + 1; /* the pivot is the boundary */
        } else {
            acc += above + w[piv];
            lo = i + 1;
        }
    }
    return hi;
}

/* Uniform in [0, 1) with 53 random bits: 24 bits would starve tokens whose
 * probability is below 2^-24, which a 49152-token vocabulary has plenty of. */
static double uniform53(Rng *rng)
{
    return (double)(rng_u64(rng) >> 11) * 0x1p-53;
}

int sampler_sample(const SamplerConfig *cfg, const float *logits, int V, Rng *rng, void *scratch,
                   int *token, float *logp_sampled, float *logp_full)
{
    CHECK(cfg && logits && token && V > 0 && V <= INT_MAX / 2);
    CHECK(sampler_config_validate(cfg, NULL, 0) == 0);

    /* One pass finds the maximum (lowest id on ties) and rejects rows that
     * do not define a distribution. */
    int   amax = -1;
    float m = -INFINITY;
    for (int i = 0; i < V; i++) {
        float x = logits[i];
        if (!(x < INFINITY)) { /* NaN or +inf */
            log_warn("sampler_sample: logit[%d] = %g, expected finite or -inf", i, (double)x);
            return ERR_NONFINITE;
        }
        if (x > m) {
            m = x;
            amax = i;
        }
    }
    if (amax < 0) {
        log_warn("sampler_sample: all %d logits are -inf, expected at least one finite", V);
        return ERR_NONFINITE;
    }

    if (cfg->temperature == 0.0f) {
        /* Greedy: certain choice, so logp_sampled = 0; logp_full is the
         * temperature-1 log-softmax. Subtracting the max keeps exp <= 1. */
        if (logp_full) {
            double z = 0.0;
            for (int i = 0; i < V; i++) z += expf(logits[i] - m);
            *logp_full = (float)-log(z);
        }
        if (logp_sampled) *logp_sampled = 0.0f;
        *token = amax;
        return 0;
    }

    CHECK(rng && scratch);
    float *w = scratch;          /* (V) unnormalised weights exp((logit - max) / T) */
    int   *ids = (int *)(w + V); /* (V) token ids of the candidates */
    float  T = cfg->temperature;
    float  inv_t = 1.0f / T;

    /* Max-subtraction keeps every weight in [0, 1] with the argmax at exactly
     * 1, so the sums below are at least 1 and never overflow; they run in
     * double because V small terms add up. -inf logits get weight 0. The
     * select keeps a subnormal T (inv_t = inf) from making 0 * inf = NaN. */
    double z_full = 0.0;
    for (int i = 0; i < V; i++) {
        float d = logits[i] - m;
        w[i] = expf(d < 0.0f ? d * inv_t : 0.0f);
        z_full += w[i];
    }

    int    k = (cfg->top_k > 0 && cfg->top_k < V) ? cfg->top_k : V;
    bool   use_p = cfg->top_p < 1.0f;
    double u = uniform53(rng);
    double z_kept = 0.0;
    int    tok = -1;

    if (k == V && !use_p) {
        /* No truncation: draw by inverse CDF in id order. The running sum
         * repeats the one that made z_full, so it reaches z_full exactly. */
        double target = u * z_full, cum = 0.0;
        for (int i = 0; i < V; i++) {
            if (w[i] <= 0.0f) continue;
            cum += w[i];
            tok = i;
            if (cum > target) break;
        }
        z_kept = z_full;
    } else {
        int c = 0; /* the kept ids are ids[0..c) */
        if (k < V) {
            top_k_sorted(ids, logits, V, k);
            /* Top-p applies to the renormalised top k, whose mass is only
             * known once all k are in. */
            double z_k = 0.0;
            for (int i = 0; i < k; i++) z_k += w[ids[i]];
            double stop = use_p ? (double)cfg->top_p * z_k : INFINITY;
            while (c < k) {
                z_kept += w[ids[c++]];
                if (z_kept >= stop) break;
            }
        } else {
            /* Top-p alone. Tokens with weight below tau = (1 - p) z / 2V hold
             * less than (1 - p) z / 2 together, so the rest is a prefix of
             * the ranking (cut by logit, ties kept whole) with mass above
             * p z: it contains the nucleus with room to spare for rounding,
             * and only it needs searching. */
            double tau = (1.0 - (double)cfg->top_p) * z_full / (2.0 * V);
            double cut = (double)m + (double)T * log(tau);
            int    n = 0;
            for (int i = 0; i < V; i++) {
                ids[n] = i; /* branch-free; overwritten unless it passes */
                n += (double)logits[i] >= cut;
            }
            c = nucleus_select(ids, n, logits, w, (double)cfg->top_p * z_full);
            for (int i = 0; i < c; i++) z_kept += w[ids[i]];
        }
        /* Same order and the same additions as z_kept, so the running sum
         * ends exactly at z_kept. */
        double target = u * z_kept, cum = 0.0;
        for (int i = 0; i < c; i++) {
            int id = ids[i];
            if (w[id] <= 0.0f) continue;
            cum += w[id];
            tok = id;
            if (cum > target) break;
        }
    }
    /* u * z can round up to z itself; the loops above then end on the last
     * token with positive weight, which is the right answer. The argmax has
     * weight 1 and is always kept, so some token was found. */
    CHECK(tok >= 0);

    /* The log-probabilities come from the logit in double rather than from
     * log(w[tok]): a float weight loses precision deep in the tail. */
    double s = ((double)logits[tok] - (double)m) / (double)T;
    if (logp_sampled) *logp_sampled = (float)(s - log(z_kept));
    if (logp_full) *logp_full = (float)(s - log(z_full));
    *token = tok;
    return 0;
}

/* ---- self-test ---------------------------------------------------------- */

/* Reference for a small V, written the obvious way in double: full softmax,
 * an insertion sort by the same total order, then the filters. Writes the
 * kept distribution q (zero outside the kept set) and the full one. Returns
 * the distance between top_p and the nearest cumulative mass, so a test
 * whose top_p sits on a boundary (where rounding decides) can be rejected. */
static double ref_dist(const SamplerConfig *cfg, const float *logits, int V, double *q,
                       double *p_full)
{
    int    order[64];
    double T = cfg->temperature, m = -INFINITY, z = 0.0;
    CHECK(V <= 64 && T > 0);
    for (int i = 0; i < V; i++)
        if (logits[i] > m) m = logits[i];
    for (int i = 0; i < V; i++) z += exp(((double)logits[i] - m) / T);
    for (int i = 0; i < V; i++) p_full[i] = exp(((double)logits[i] - m) / T) / z;
    for (int i = 0; i < V; i++) {
        int j = i;
        while (j > 0 && (logits[order[j - 1]] < logits[i] ||
                         (logits[order[j - 1]] == logits[i] && order[j - 1] > i))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    int    k = (cfg->top_k > 0 && cfg->top_k < V) ? cfg->top_k : V;
    double zk = 0.0;
    for (int j = 0; j < k; j++) zk += p_full[order[j]];
    int    keep = k;
    double margin = INFINITY;
    if (cfg->top_p < 1.0f) {
        double cum = 0.0;
        for (int j = 0; j < k; j++) {
            cum += p_full[order[j]] / zk;
            margin = fmin(margin, fabs(cum - cfg->top_p));
            if (cum >= cfg->top_p) {
                keep = j + 1;
                break;
            }
        }
    }
    double zkeep = 0.0;
    for (int j = 0; j < keep; j++) zkeep += p_full[order[j]];
    for (int i = 0; i < V; i++) q[i] = 0.0;
    for (int j = 0; j < keep; j++) q[order[j]] = p_full[order[j]] / zkeep;
    return margin;
}

/* Draws n tokens and compares the histogram with the reference by a
 * chi-square statistic, and every draw's log-probabilities with the
 * reference's to 1e-5. Returns 0 on success. */
static int check_dist(const char *name, const SamplerConfig *cfg, const float *logits, int V,
                      uint64_t seed, int n, bool verbose)
{
    double q[64], p_full[64];
    long   counts[64] = {0};
    char   scratch[64 * (sizeof(float) + sizeof(int))];
    CHECK(V <= 64 && sampler_scratch_bytes(V) <= sizeof scratch);
    double margin = ref_dist(cfg, logits, V, q, p_full);
    if (margin < 1e-3) {
        printf("  sampler %s: top_p %g within %g of a cumulative mass; pick another\n", name,
               (double)cfg->top_p, margin);
        return 1;
    }
    Rng rng;
    rng_seed(&rng, seed);
    double max_err_s = 0.0, max_err_f = 0.0;
    for (int d = 0; d < n; d++) {
        int   tok = -1;
        float ls, lf;
        if (sampler_sample(cfg, logits, V, &rng, scratch, &tok, &ls, &lf) != 0) return 1;
        if (tok < 0 || tok >= V || q[tok] == 0.0) {
            printf("  sampler %s: drew token %d outside the kept set\n", name, tok);
            return 1;
        }
        counts[tok]++;
        max_err_s = fmax(max_err_s, fabs(ls - log(q[tok])));
        max_err_f = fmax(max_err_f, fabs(lf - log(p_full[tok])));
    }
    double chi2 = 0.0;
    int    support = 0;
    for (int i = 0; i < V; i++) {
        if (q[i] == 0.0) continue;
        double e = n * q[i];
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        support++;
    }
    /* About a 1e-5 tail for the degrees of freedom used here; the seeds are
     * fixed, so this is a bound on a bug, not a flaky statistic. */
    int    df = support - 1;
    double bound = df + 5.0 * sqrt(2.0 * df) + 5.0;
    bool   ok = chi2 <= bound && max_err_s <= 1e-5 && max_err_f <= 1e-5;
    if (verbose || !ok)
        printf("  sampler %-14s T=%.2f k=%d p=%.2f: support %d, chi2 %.2f (bound %.2f), "
               "|logp_sampled err| %.1e, |logp_full err| %.1e (tol 1e-5)\n",
               name, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, support, chi2, bound,
               max_err_s, max_err_f);
    return ok ? 0 : 1;
}

typedef struct {
    float l;
    int   i;
} RankedLogit;

static int cmp_ranked(const void *pa, const void *pb)
{
    const RankedLogit *a = pa, *b = pb;
    if (a->l != b->l) return a->l > b->l ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* A full-size vocabulary with masked tokens: every draw must land in the
 * kept set of a qsort-based reference and carry its log-probabilities. */
static int check_large(const SamplerConfig *cfg, const float *logits, int V, void *scratch,
                       RankedLogit *ranked, double *q, bool verbose)
{
    double m = -INFINITY, z = 0.0, T = cfg->temperature;
    for (int i = 0; i < V; i++) m = fmax(m, logits[i]);
    for (int i = 0; i < V; i++) z += exp((logits[i] - m) / T);
    for (int i = 0; i < V; i++) ranked[i] = (RankedLogit){logits[i], i};
    qsort(ranked, (size_t)V, sizeof *ranked, cmp_ranked);
    int    k = (cfg->top_k > 0 && cfg->top_k < V) ? cfg->top_k : V;
    double zk = 0.0;
    for (int j = 0; j < k; j++) zk += exp((ranked[j].l - m) / T);
    int keep = k;
    if (cfg->top_p < 1.0f) {
        double cum = 0.0;
        for (int j = 0; j < k; j++) {
            cum += exp((ranked[j].l - m) / T) / zk;
            if (cum >= cfg->top_p) {
                keep = j + 1;
                break;
            }
        }
    }
    double zkeep = 0.0;
    for (int j = 0; j < keep; j++) zkeep += exp((ranked[j].l - m) / T);
    for (int i = 0; i < V; i++) q[i] = 0.0;
    for (int j = 0; j < keep; j++) q[ranked[j].i] = exp((ranked[j].l - m) / T) / zkeep;

    Rng rng;
    rng_seed(&rng, 99);
    int             n = 150;
    double          max_err_s = 0.0, max_err_f = 0.0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int d = 0; d < n; d++) {
        int   tok = -1;
        float ls, lf;
        if (sampler_sample(cfg, logits, V, &rng, scratch, &tok, &ls, &lf) != 0) return 1;
        if (tok < 0 || tok >= V || q[tok] == 0.0) {
            printf("  sampler large: drew token %d outside the kept set\n", tok);
            return 1;
        }
        double s = (logits[tok] - m) / T;
        max_err_s = fmax(max_err_s, fabs(ls - (s - log(zkeep))));
        max_err_f = fmax(max_err_f, fabs(lf - (s - log(z))));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = 1e6 * ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    bool   ok = max_err_s <= 1e-5 && max_err_f <= 1e-5;
    if (verbose || !ok)
        printf("  sampler V=%d T=%.2f k=%d p=%.2f: kept %d, |logp_sampled err| %.1e, "
               "|logp_full err| %.1e (tol 1e-5), %.1f us/sample\n",
               V, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, keep, max_err_s,
               max_err_f, us / n);
    return ok ? 0 : 1;
}

int sampler_selftest(bool verbose)
{
    int  fails = 0;
    char why[128];

    /* Config validation. */
    const SamplerConfig bad[] = {
        {-1.0f, 0, 1.0f}, {NAN, 0, 1.0f},  {INFINITY, 0, 1.0f}, {1.0f, -1, 1.0f},
        {1.0f, 0, 0.0f},  {1.0f, 0, 1.5f}, {1.0f, 0, NAN},      {1.0f, 0, -0.5f},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        if (sampler_config_validate(&bad[i], why, sizeof why) != ERR_RANGE || !why[0]) {
            printf("  sampler: bad config %zu accepted\n", i);
            fails++;
        } else if (verbose && i == 0) {
            printf("  sampler: rejects bad configs, e.g. \"%s\"\n", why);
        }
    }
    const SamplerConfig good[] = {{0.0f, 0, 1.0f}, {1.0f, 50, 0.9f}, {0.7f, 1, 1e-6f}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (sampler_config_validate(&good[i], why, sizeof why) != 0) {
            printf("  sampler: good config %zu rejected: %s\n", i, why);
            fails++;
        }

    /* Empirical distributions on a small vocabulary with a tie at the top
     * (ids 1 and 3) and a masked token (id 5). Top-p values were chosen away
     * from every cumulative mass (ref_dist reports the margin). */
    const float         lg[8] = {1.0f, 2.5f, -0.5f, 2.5f, 0.3f, -INFINITY, 1.7f, 0.9f};
    const int           ndraw = 100000;
    const SamplerConfig dists[] = {
        {1.0f, 0, 1.0f},  {0.7f, 0, 1.0f},  {1.6f, 0, 1.0f},  {1.0f, 3, 1.0f},
        {1.0f, 1, 1.0f},  {1.0f, 0, 0.8f},  {2.0f, 0, 0.6f},  {0.8f, 5, 0.85f},
        {1.3f, 4, 0.55f}, {1.0f, 20, 1.0f}, {0.5f, 6, 0.99f}, {1.0f, 2, 1.0f},
    };
    const char *names[] = {"plain",  "temp 0.7", "temp 1.6", "top-k 3", "top-k 1",  "top-p",
                           "temp+p", "temp+k+p", "temp+k+p", "k > V",   "temp+k+p", "k cuts tie"};
    for (size_t i = 0; i < sizeof dists / sizeof dists[0]; i++)
        fails += check_dist(names[i], &dists[i], lg, 8, 1000 + i, ndraw, verbose);
    /* A tie that top-k cuts through: the lower ids win. */
    const float         tie[5] = {0.0f, 1.0f, 1.0f, 1.0f, 0.0f};
    const SamplerConfig k2 = {1.0f, 2, 1.0f};
    fails += check_dist("tie at k", &k2, tie, 5, 7, ndraw, verbose);

    /* Greedy, top-k 1 and a tiny top-p all pick the argmax (lowest id on a
     * tie); greedy reports logp_sampled 0 and the temperature-1 log-softmax. */
    {
        char  scratch[8 * (sizeof(float) + sizeof(int))];
        Rng   rng;
        int   tok = -1;
        float ls = -1, lf = 0;
        rng_seed(&rng, 3);
        SamplerConfig g = {0.0f, 0, 1.0f};
        Rng           before = rng;
        if (sampler_sample(&g, lg, 8, &rng, scratch, &tok, &ls, &lf) != 0) fails++;
        double z = 0;
        for (int i = 0; i < 8; i++) z += exp(lg[i] - 2.5);
        if (tok != 1 || ls != 0.0f || fabs(lf - (0.0 - log(z))) > 1e-6 ||
            memcmp(&before, &rng, sizeof rng) != 0) {
            printf("  sampler: greedy gave %d (want 1), logp_sampled %g, logp_full %g (want %g)\n",
                   tok, (double)ls, (double)lf, -log(z));
            fails++;
        }
    }
    {
        enum { NV = 1000 };
        static float logits[NV];
        static char  scratch[NV * (sizeof(float) + sizeof(int))];
        Rng          rng, lrng;
        rng_seed(&rng, 11);
        rng_seed(&lrng, 12);
        int agree = 0, trials = 200;
        for (int t = 0; t < trials; t++) {
            for (int i = 0; i < NV; i++) logits[i] = 2.0f * rng_normal(&lrng);
            float         T = 0.25f + 0.5f * (float)(t % 5);
            SamplerConfig g = {0.0f, 0, 1.0f}, k1 = {T, 1, 1.0f}, p0 = {T, 0, 1e-6f};
            SamplerConfig kp = {T, 1, 0.5f};
            int           tg, tk, tp, tkp;
            float         lsk, lsp, lfg, lfk;
            if (sampler_sample(&g, logits, NV, &rng, scratch, &tg, NULL, &lfg) ||
                sampler_sample(&k1, logits, NV, &rng, scratch, &tk, &lsk, &lfk) ||
                sampler_sample(&p0, logits, NV, &rng, scratch, &tp, &lsp, NULL) ||
                sampler_sample(&kp, logits, NV, &rng, scratch, &tkp, NULL, NULL)) {
                fails++;
                break;
            }
            agree += tg == tk && tg == tp && tg == tkp && lsk == 0.0f && lsp == 0.0f;
        }
        if (verbose || agree != trials)
            printf("  sampler: greedy == top-k 1 == top-p 1e-6 in %d/%d trials\n", agree, trials);
        if (agree != trials) fails++;
    }

    /* The same seed gives the same sequence; another seed does not. */
    {
        char          s1[8 * (sizeof(float) + sizeof(int))], s2[sizeof s1];
        SamplerConfig c = {0.9f, 5, 0.95f};
        Rng           a, b, o;
        rng_seed(&a, 21);
        rng_seed(&b, 21);
        rng_seed(&o, 22);
        int same = 1, differs = 0;
        for (int d = 0; d < 1000; d++) {
            int ta, tb, to;
            if (sampler_sample(&c, lg, 8, &a, s1, &ta, NULL, NULL) ||
                sampler_sample(&c, lg, 8, &b, s2, &tb, NULL, NULL) ||
                sampler_sample(&c, lg, 8, &o, s2, &to, NULL, NULL)) {
                same = 0;
                break;
            }
            same &= ta == tb;
            differs |= ta != to;
        }
        if (!same || !differs) {
            printf("  sampler: same seed same sequence %d, other seed differs %d\n", same, differs);
            fails++;
        }
    }

    /* Rows that do not define a distribution are refused, untouched. */
    {
        char          scratch[4 * (sizeof(float) + sizeof(int))];
        SamplerConfig c = {1.0f, 0, 1.0f}, g = {0.0f, 0, 1.0f};
        const float   rows[3][4] = {{0.0f, NAN, 1.0f, 2.0f},
                                    {0.0f, 1.0f, INFINITY, 2.0f},
                                    {-INFINITY, -INFINITY, -INFINITY, -INFINITY}};
        Rng           rng;
        rng_seed(&rng, 5);
        for (int r = 0; r < 3; r++) {
            int tok = -7;
            if (sampler_sample(&c, rows[r], 4, &rng, scratch, &tok, NULL, NULL) != ERR_NONFINITE ||
                sampler_sample(&g, rows[r], 4, &rng, scratch, &tok, NULL, NULL) != ERR_NONFINITE ||
                tok != -7) {
                printf("  sampler: non-finite row %d not refused\n", r);
                fails++;
            }
        }
    }

    /* A SmolLM-size vocabulary with every 7th token masked. */
    {
        int          V = 49152;
        float       *logits = xmalloc((size_t)V * sizeof(float));
        void        *scratch = xmalloc(sampler_scratch_bytes(V));
        RankedLogit *ranked = xmalloc((size_t)V * sizeof(RankedLogit));
        double      *q = xmalloc((size_t)V * sizeof(double));
        Rng          lrng;
        rng_seed(&lrng, 77);
        for (int i = 0; i < V; i++) logits[i] = i % 7 == 3 ? -INFINITY : 2.5f * rng_normal(&lrng);
        const SamplerConfig big[] = {
            {1.0f, 0, 1.0f}, {0.7f, 50, 1.0f}, {1.0f, 0, 0.9f}, {0.8f, 40, 0.95f}, {1.2f, 0, 0.5f},
        };
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
            fails += check_large(&big[i], logits, V, scratch, ranked, q, verbose);
        free(q);
        free(ranked);
        free(scratch);
        free(logits);
    }
    return fails ? 1 : 0;
}
