/* sampler_selftest: config validation, empirical distributions of every
 * filter combination against a reference written the obvious way (chi-square
 * and log-probabilities), greedy and its equivalents, reproducibility by
 * seed, refused rows that define no distribution, and a full-size
 * vocabulary against a qsort-based reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/nn/sampler.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

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
 * reference's to 1e-5. */
static void check_dist(const char *name, const SamplerConfig *cfg, const float *logits, int V,
                       uint64_t seed, int n, bool verbose)
{
    double q[64], p_full[64];
    long   counts[64] = {0};
    char   scratch[64 * (sizeof(float) + sizeof(int))];
    CHECK(V <= 64 && sampler_scratch_bytes(V) <= sizeof scratch);
    double margin = ref_dist(cfg, logits, V, q, p_full);
    if (!EXPECT(margin >= 1e-3, "sampler %s: top_p %g within %g of a cumulative mass; pick another",
                name, (double)cfg->top_p, margin))
        return;
    Rng rng;
    rng_seed(&rng, seed);
    double max_err_s = 0.0, max_err_f = 0.0;
    int    d, rc = 0, tok = -1;
    for (d = 0; d < n; d++) {
        float ls, lf;
        rc = sampler_sample(cfg, logits, V, &rng, scratch, &tok, &ls, &lf);
        if (rc != 0 || tok < 0 || tok >= V || q[tok] == 0.0) break;
        counts[tok]++;
        max_err_s = fmax(max_err_s, fabs(ls - log(q[tok])));
        max_err_f = fmax(max_err_f, fabs(lf - log(p_full[tok])));
    }
    if (!EXPECT(rc == 0, "sampler %s: draw %d of %d returned %d, expected 0", name, d, n, rc) ||
        !EXPECT(d == n, "sampler %s: draw %d of %d: token %d outside the kept set", name, d, n,
                tok))
        return;
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
    EXPECT(ok,
           "sampler %s T=%.2f k=%d p=%.2f: support %d, chi2 %.2f (bound %.2f), "
           "|logp_sampled err| %.1e, |logp_full err| %.1e (tol 1e-5)",
           name, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, support, chi2, bound,
           max_err_s, max_err_f);
    if (verbose)
        printf("  sampler %-14s T=%.2f k=%d p=%.2f: support %d, chi2 %.2f (bound %.2f), "
               "|logp_sampled err| %.1e, |logp_full err| %.1e (tol 1e-5)\n",
               name, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, support, chi2, bound,
               max_err_s, max_err_f);
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
static void check_large(const SamplerConfig *cfg, const float *logits, int V, void *scratch,
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
    int d, rc = 0, tok = -1;
    for (d = 0; d < n; d++) {
        float ls, lf;
        rc = sampler_sample(cfg, logits, V, &rng, scratch, &tok, &ls, &lf);
        if (rc != 0 || tok < 0 || tok >= V || q[tok] == 0.0) break;
        double s = (logits[tok] - m) / T;
        max_err_s = fmax(max_err_s, fabs(ls - (s - log(zkeep))));
        max_err_f = fmax(max_err_f, fabs(lf - (s - log(z))));
    }
    if (!EXPECT(rc == 0, "sampler large: draw %d of %d returned %d, expected 0", d, n, rc) ||
        !EXPECT(d == n, "sampler large: draw %d of %d: token %d outside the kept set", d, n, tok))
        return;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = 1e6 * ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    EXPECT(max_err_s <= 1e-5 && max_err_f <= 1e-5,
           "sampler V=%d T=%.2f k=%d p=%.2f: |logp_sampled err| %.1e, |logp_full err| %.1e, "
           "expected <= 1e-5",
           V, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, max_err_s, max_err_f);
    if (verbose)
        printf("  sampler V=%d T=%.2f k=%d p=%.2f: kept %d, |logp_sampled err| %.1e, "
               "|logp_full err| %.1e (tol 1e-5), %.1f us/sample\n",
               V, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p, keep, max_err_s,
               max_err_f, us / n);
}

int sampler_selftest(bool verbose)
{
    char why[128];

    /* Config validation. */
    const SamplerConfig bad[] = {
        {-1.0f, 0, 1.0f}, {NAN, 0, 1.0f},  {INFINITY, 0, 1.0f}, {1.0f, -1, 1.0f},
        {1.0f, 0, 0.0f},  {1.0f, 0, 1.5f}, {1.0f, 0, NAN},      {1.0f, 0, -0.5f},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        int rc = sampler_config_validate(&bad[i], why, sizeof why);
        EXPECT(rc == ERR_RANGE && why[0],
               "bad config %zu: returned %d with reason '%s', expected ERR_RANGE and a reason", i,
               rc, why);
        if (verbose && i == 0) printf("  sampler: rejects bad configs, e.g. \"%s\"\n", why);
    }
    const SamplerConfig good[] = {{0.0f, 0, 1.0f}, {1.0f, 50, 0.9f}, {0.7f, 1, 1e-6f}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        EXPECT(sampler_config_validate(&good[i], why, sizeof why) == 0,
               "good config %zu rejected: %s", i, why);

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
        check_dist(names[i], &dists[i], lg, 8, 1000 + i, ndraw, verbose);
    /* A tie that top-k cuts through: the lower ids win. */
    const float         tie[5] = {0.0f, 1.0f, 1.0f, 1.0f, 0.0f};
    const SamplerConfig k2 = {1.0f, 2, 1.0f};
    check_dist("tie at k", &k2, tie, 5, 7, ndraw, verbose);

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
        int           rc = sampler_sample(&g, lg, 8, &rng, scratch, &tok, &ls, &lf);
        EXPECT(rc == 0, "greedy draw returned %d, expected 0", rc);
        double z = 0;
        for (int i = 0; i < 8; i++) z += exp(lg[i] - 2.5);
        EXPECT(tok == 1 && ls == 0.0f && fabs(lf - (0.0 - log(z))) <= 1e-6 &&
                   memcmp(&before, &rng, sizeof rng) == 0,
               "greedy gave %d (want 1), logp_sampled %g (want 0), logp_full %g (want %g), rng "
               "%s (want untouched)",
               tok, (double)ls, (double)lf, -log(z),
               memcmp(&before, &rng, sizeof rng) ? "advanced" : "untouched");
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
                EXPECT(false, "greedy trial %d: a draw failed", t);
                break;
            }
            agree += tg == tk && tg == tp && tg == tkp && lsk == 0.0f && lsp == 0.0f;
        }
        if (verbose)
            printf("  sampler: greedy == top-k 1 == top-p 1e-6 in %d/%d trials\n", agree, trials);
        EXPECT(agree == trials, "greedy == top-k 1 == top-p 1e-6 in %d/%d trials, expected all",
               agree, trials);
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
        EXPECT(same && differs, "same seed same sequence %d, other seed differs %d; expected both",
               same, differs);
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
            int rs = sampler_sample(&c, rows[r], 4, &rng, scratch, &tok, NULL, NULL);
            int rg = sampler_sample(&g, rows[r], 4, &rng, scratch, &tok, NULL, NULL);
            EXPECT(rs == ERR_NONFINITE && rg == ERR_NONFINITE && tok == -7,
                   "non-finite row %d: sampled %d, greedy %d, token %d; expected ERR_NONFINITE "
                   "twice and the token untouched",
                   r, rs, rg, tok);
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
            check_large(&big[i], logits, V, scratch, ranked, q, verbose);
        free(q);
        free(ranked);
        free(scratch);
        free(logits);
    }
    return expect_end();
}
