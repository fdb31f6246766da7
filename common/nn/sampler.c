#include "common/nn/sampler.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/log.h"

int sampler_config_validate(const SamplerConfig *cfg, char *why, size_t why_len)
{
    CHECK(cfg);
    if (!isfinite(cfg->temperature) || cfg->temperature < 0.0f) {
        err_why(why, why_len, "sampler: temperature %g, expected finite and >= 0",
                (double)cfg->temperature);
        return ERR_RANGE;
    }
    if (cfg->top_k < 0) {
        err_why(why, why_len, "sampler: top_k %d, expected >= 0 (0 = off)", cfg->top_k);
        return ERR_RANGE;
    }
    /* Written so that NaN fails too. */
    if (!(cfg->top_p > 0.0f && cfg->top_p <= 1.0f)) {
        err_why(why, why_len, "sampler: top_p %g, expected in (0, 1] (1 = off)",
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
