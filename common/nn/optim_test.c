/* optim_selftest: AdamW against updates worked out by hand, the learning
 * rate schedule, config validation, gradient clipping, refused non-finite
 * gradients, and convergence on a quadratic across a checkpoint round trip
 * of the optimizer state. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/nn/optim.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

/* Three updates of a 3-vector, checked against numbers worked out by hand
 * (derivation in the comments). lr follows warmup 2, total 4: 0.05, 0.1,
 * 0.055; beta1 0.9, beta2 0.999, eps 1e-3 (large so that its place in the
 * formula shows), weight decay 0.1 except on the masked-out third entry. */
static void test_worked_example(void)
{
    OptimConfig cfg = fixture_optim_config(0.1f, 0.01f, 2, 4);
    cfg.beta2 = 0.999f;
    cfg.eps = 1e-3f;
    cfg.weight_decay = 0.1f;
    Optim      *o = optim_new(&cfg, 3);
    float       p[3] = {1.0f, -2.0f, 0.5f};
    uint8_t     mask[3] = {1, 1, 0};
    const float g[3][3] = {{0.1f, -0.2f, 0.0f}, {0.3f, 0.1f, -0.5f}, {-0.2f, 0.0f, 0.4f}};
    /* Update 1 (lr 0.05): m = 0.1 g, v = 0.001 g^2, so m hat = g and
     * v hat = g^2 and the step is g / (|g| + eps):
     *   p0 = 1 - 0.05 * 0.1 / 0.101 - 0.05 * 0.1 * 1   = 0.9454950495
     *   p1 = -2 + 0.05 * 0.2 / 0.201 + 0.05 * 0.1 * 2 = -1.9402487562
     *   p2 = 0.5 (zero gradient gives m = v = 0 and a zero step; no decay).
     * Update 2 (lr 0.1, bc1 = 0.19, bc2 = 0.001999):
     *   m = (0.039, -0.008, -0.05), v = (9.999e-5, 4.996e-5, 2.5e-4);
     *   p0 = 0.94549505 * 0.99 - 0.1 * (0.039 / 0.19) / (sqrt(9.999e-5 / 0.001999) + 1e-3)
     *      = 0.9360401 - 0.1 * 0.2052632 / 0.2246515 = 0.8446705225
     *   p2 = 0.5 + 0.1 * (0.05 / 0.19) / (sqrt(2.5e-4 / 0.001999) + 1e-3) = 0.5742038546.
     * Update 3 (lr 0.055, bc1 = 0.271, bc2 = 0.002997001):
     *   m = (0.0151, -0.0072, -0.005), v = (1.3989001e-4, 4.991004e-5, 4.0975e-4).
     * The config holds floats: 0.1f is 0.1 + 1.5e-9 and 1 - 0.999f is 0.001 -
     * 1.3e-8, so the learning rates match to 1e-7 and the second moments only to
     * 1e-4 (relative); the parameters, where these cancel, to 1e-6. */
    const double want_p[3][3] = {{0.9454950495, -1.9402487562, 0.5000000000},
                                 {0.8446705225, -1.8943799773, 0.5742038546},
                                 {0.8259054783, -1.8727245966, 0.5769408522}};
    const double want_m[3] = {0.0151, -0.0072, -0.005};
    const double want_v[3] = {1.3989001e-4, 4.991004e-5, 4.0975e-4};
    const double want_lr[3] = {0.05, 0.1, 0.055};
    char         what[64];
    for (int s = 0; s < 3; s++) {
        double norm, lr;
        int    rc = optim_step(o, p, g[s], mask, &norm, &lr);
        EXPECT(rc == 0, "update %d returned %d, expected 0", s + 1, rc);
        snprintf(what, sizeof what, "optim: update %d lr", s + 1);
        EXPECT_REL(lr, want_lr[s], 1e-7, 1e-3, what);
        for (int i = 0; i < 3; i++) {
            snprintf(what, sizeof what, "optim: update %d p[%d]", s + 1, i);
            EXPECT_REL(p[i], want_p[s][i], 1e-6, 1e-3, what);
        }
    }
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "optim: m[%d] after 3", i);
        EXPECT_REL(optim_state_m(o)[i], want_m[i], 1e-6, 1e-3, what);
        snprintf(what, sizeof what, "optim: v[%d] after 3", i);
        EXPECT_REL(optim_state_v(o)[i], want_v[i], 1e-4, 1e-3, what);
    }
    EXPECT(optim_step_count(o) == 3, "step count %lld after 3 updates, expected 3",
           (long long)optim_step_count(o));

    /* Decay is decoupled: a zero gradient leaves the Adam step at 0 and
     * shrinks every parameter (NULL mask) by exactly 1 - lr * wd. */
    Optim *z = optim_new(&cfg, 3);
    float  q[3] = {1.0f, -2.0f, 0.5f}, zero[3] = {0};
    double lr;
    optim_set_step_count(z, 1); /* the next update uses lr_at(2) = 0.1 */
    int rc = optim_step(z, q, zero, NULL, NULL, &lr);
    EXPECT(rc == 0, "decay-only update returned %d, expected 0", rc);
    EXPECT_REL(q[2], 0.5 * (1.0 - 0.1 * 0.1), 1e-7, 1e-3, "optim: decay only, NULL mask");
    EXPECT(q[0] == 1.0f * (1.0f - 0.01f) && q[1] == -2.0f * (1.0f - 0.01f),
           "decay only: p %.9g %.9g, expected exactly 0.99 and -1.98 of the start", (double)q[0],
           (double)q[1]);
    optim_free(&z);
    optim_free(&o);
    EXPECT(o == NULL, "optim_free left the pointer set");
    optim_free(&o); /* no-op on NULL */
}

static void test_schedule(bool verbose)
{
    OptimConfig cfg = fixture_optim_config(1e-3f, 1e-4f, 100, 1100);
    double      peak = cfg.lr_peak, lo = cfg.lr_min;
    const struct {
        int64_t step;
        double  want;
    } pts[] = {
        {0, 0.0},
        {50, 0.5 * peak},
        {100, peak},                                       /* end of warmup */
        {350, lo + 0.5 * (peak - lo) * (1.0 + sqrt(0.5))}, /* cos(pi / 4) */
        {600, 0.5 * (peak + lo)},                          /* middle of the cosine */
        {1100, lo},                                        /* end */
        {5000, lo},                                        /* held after */
    };
    char what[64];
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        snprintf(what, sizeof what, "optim: lr_at(%" PRId64 ")", pts[i].step);
        EXPECT_REL(optim_lr_at(&cfg, pts[i].step), pts[i].want, 1e-12, 1e-3, what);
    }
    /* Monotone after warmup; no warmup starts at the peak. */
    for (int64_t s = 101; s <= 1100; s++)
        EXPECT(optim_lr_at(&cfg, s) <= optim_lr_at(&cfg, s - 1),
               "lr_at(%" PRId64 ") %g > lr_at(%" PRId64
               ") %g, expected non-increasing after warmup",
               s, optim_lr_at(&cfg, s), s - 1, optim_lr_at(&cfg, s - 1));
    cfg.lr_warmup_steps = 0;
    EXPECT(optim_lr_at(&cfg, 0) == peak, "lr_at(0) without warmup %g, expected the peak %g",
           optim_lr_at(&cfg, 0), peak);

    /* Validation names the field. */
    const OptimConfig good = {1e-3f, 1e-4f, 10, 100, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    char              why[128];
    EXPECT(optim_config_validate(&good, why, sizeof why) == 0, "good config refused: %s", why);
    OptimConfig bad[9];
    for (int i = 0; i < 9; i++) bad[i] = good;
    bad[0].lr_peak = NAN;
    bad[1].lr_min = 2e-3f;
    bad[2].lr_warmup_steps = -1;
    bad[3].lr_total_steps = 5;
    bad[4].beta1 = 1.0f;
    bad[5].beta2 = -0.1f;
    bad[6].eps = 0.0f;
    bad[7].weight_decay = -1.0f;
    bad[8].grad_clip = INFINITY;
    for (int i = 0; i < 9; i++) {
        why[0] = '\0';
        int rc = optim_config_validate(&bad[i], why, sizeof why);
        EXPECT(rc == ERR_RANGE && why[0],
               "bad config %d: returned %d with reason '%s', expected "
               "ERR_RANGE and a reason",
               i, rc, why);
        if (verbose && i == 3) printf("  optim: rejects bad configs, e.g. \"%s\"\n", why);
    }
}

/* Gradient (3, 4) has norm 5; with grad_clip 1 the optimizer must act as if
 * the gradient were (0.6, 0.8). lr 1 constant, no decay, eps 1e-3 so the
 * first Adam step g / (|g| + eps) depends on the scale of g. */
static void test_clip_and_nonfinite(void)
{
    OptimConfig cfg = fixture_optim_config(1.0f, 1.0f, 0, 0);
    cfg.beta2 = 0.999f;
    cfg.eps = 1e-3f;
    cfg.grad_clip = 1.0f;
    float g[2] = {3.0f, 4.0f};
    for (int clipped = 1; clipped >= 0; clipped--) {
        cfg.grad_clip = clipped ? 1.0f : 10.0f;
        Optim *o = optim_new(&cfg, 2);
        float  p[2] = {0.0f, 0.0f};
        double norm;
        int    rc = optim_step(o, p, g, NULL, &norm, NULL);
        EXPECT(rc == 0, "update with grad_clip %g returned %d, expected 0", (double)cfg.grad_clip,
               rc);
        double s = clipped ? 0.2 : 1.0;
        EXPECT_REL(norm, 5.0, 1e-12, 1e-3,
                   clipped ? "optim: norm before clip" : "optim: norm, no clip");
        EXPECT_REL(optim_state_m(o)[1], 0.1 * 4.0 * s, 1e-6, 1e-3,
                   clipped ? "optim: m[1] clipped" : "optim: m[1] unclipped");
        EXPECT_REL(optim_state_v(o)[1], 0.001 * 16.0 * s * s, 1e-4, 1e-3,
                   clipped ? "optim: v[1] clipped" : "optim: v[1] unclipped");
        EXPECT_REL(p[1], -(4.0 * s) / (4.0 * s + 1e-3), 1e-6, 1e-3,
                   clipped ? "optim: p[1] clipped step" : "optim: p[1] unclipped step");
        EXPECT(g[0] == 3.0f && g[1] == 4.0f,
               "gradient changed to (%g, %g), expected (3, 4) untouched", (double)g[0],
               (double)g[1]);
        optim_free(&o);
    }

    /* The norm is accumulated in double: these squares overflow a float. */
    const float big[2] = {1e30f, 1e30f};
    double      norm;
    int         rc = optim_grad_norm(big, 2, &norm);
    EXPECT(rc == 0 && fabs(norm / (sqrt(2.0) * 1e30) - 1.0) < 1e-6,
           "norm of (1e30, 1e30): returned %d, %g, expected 0 and sqrt(2) * 1e30 to 1e-6", rc,
           norm);
    rc = optim_grad_norm(g, 2, &norm);
    EXPECT(rc == 0 && norm == 5.0, "norm of (3, 4): returned %d, %g, expected 0 and exactly 5", rc,
           norm);

    /* A NaN or infinite gradient is refused and changes nothing. */
    Optim *o = optim_new(&cfg, 2);
    float  p[2] = {1.0f, 2.0f};
    rc = optim_step(o, p, g, NULL, NULL, NULL);
    EXPECT(rc == 0, "finite update returned %d, expected 0", rc);
    float p_before[2], m_before[2], v_before[2];
    memcpy(p_before, p, sizeof p);
    memcpy(m_before, optim_state_m(o), sizeof m_before);
    memcpy(v_before, optim_state_v(o), sizeof v_before);
    const float bad[2][2] = {{1.0f, NAN}, {INFINITY, 1.0f}};
    for (int b = 0; b < 2; b++) {
        double gn = 0.0;
        rc = optim_step(o, p, bad[b], NULL, &gn, NULL);
        bool same = !memcmp(p, p_before, sizeof p) &&
                    !memcmp(optim_state_m(o), m_before, sizeof m_before) &&
                    !memcmp(optim_state_v(o), v_before, sizeof v_before) &&
                    optim_step_count(o) == 1;
        EXPECT(rc == ERR_NONFINITE && same && !isfinite(gn),
               "non-finite gradient %d: rc %d, state unchanged %d, norm %g; expected "
               "ERR_NONFINITE, the state unchanged and a non-finite norm",
               b, rc, same, gn);
    }
    if (expect_verbose()) printf("  optim: NaN and inf gradients refused, state unchanged\n");
    optim_free(&o);
}

/* Minimises f(x) = 1/2 sum a_i (x_i - c_i)^2 with curvatures a_i spread over
 * two decades, clipping active early on, and checks convergence. Halfway, the
 * moments and step count are copied into a fresh Optim (a checkpoint round
 * trip) that then runs alongside on a copy of x; both must end bit for bit
 * equal. */
static void test_convergence(bool verbose)
{
    enum { N = 64, STEPS = 3000 };
    OptimConfig cfg = fixture_optim_config(0.1f, 1e-4f, 50, STEPS);
    cfg.beta2 = 0.999f;
    cfg.grad_clip = 1.0f;
    float a[N], c[N], x[N], xr[N], g[N], gr[N];
    Rng   rng;
    rng_seed(&rng, 8);
    for (int i = 0; i < N; i++) {
        a[i] = powf(10.0f, -1.0f + 2.0f * (float)i / (N - 1));
        c[i] = 2.0f * rng_normal(&rng);
        x[i] = 0.0f;
    }
    Optim *o = optim_new(&cfg, N), *r = NULL;
    double f0 = 0.0, f = 0.0, max_err = 0.0;
    for (int i = 0; i < N; i++) f0 += 0.5 * a[i] * c[i] * c[i];
    for (int s = 0; s < STEPS; s++) {
        if (s == STEPS / 2) {
            r = optim_new(&cfg, N);
            memcpy(optim_state_m(r), optim_state_m(o), N * sizeof(float));
            memcpy(optim_state_v(r), optim_state_v(o), N * sizeof(float));
            optim_set_step_count(r, optim_step_count(o));
            memcpy(xr, x, sizeof x);
        }
        for (int i = 0; i < N; i++) g[i] = a[i] * (x[i] - c[i]);
        int rc = optim_step(o, x, g, NULL, NULL, NULL);
        EXPECT(rc == 0, "quadratic step %d returned %d, expected 0", s, rc);
        if (r) {
            for (int i = 0; i < N; i++) gr[i] = a[i] * (xr[i] - c[i]);
            rc = optim_step(r, xr, gr, NULL, NULL, NULL);
            EXPECT(rc == 0, "restored optimizer's step %d returned %d, expected 0", s, rc);
        }
    }
    bool same = r && memcmp(x, xr, sizeof x) == 0 && optim_step_count(r) == STEPS &&
                optim_n(r) == N && optim_config(r)->lr_peak == cfg.lr_peak;
    EXPECT(same, "restored state did not continue identically (bit for bit, step count %d)", STEPS);
    if (same && verbose)
        printf("  optim: checkpoint round trip at step %d continued bit for bit\n", STEPS / 2);
    for (int i = 0; i < N; i++) {
        f += 0.5 * a[i] * (x[i] - c[i]) * (x[i] - c[i]);
        max_err = fmax(max_err, fabs(x[i] - c[i]));
    }
    bool conv = f < 1e-6 * f0 && max_err < 1e-2;
    EXPECT(conv, "quadratic did not converge: f %.3e -> %.3e, max |x - x*| %.2e", f0, f, max_err);
    if (verbose)
        printf("  optim: quadratic, %d params, %d steps: f %.3e -> %.3e, max |x - x*| %.2e "
               "(want f < 1e-6 f0, |x - x*| < 1e-2)\n",
               N, STEPS, f0, f, max_err);
    optim_free(&r);
    optim_free(&o);
}

/* Throughput of one update on a few million parameters, for the record. */
static void bench_step(bool verbose)
{
    if (!verbose) return;
    size_t      n = (size_t)1 << 22;
    OptimConfig cfg = {1e-3f, 1e-4f, 10, 100, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    Optim      *o = optim_new(&cfg, n);
    float      *p = xmalloc_aligned(n * sizeof(float));
    float      *g = xmalloc_aligned(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        p[i] = 0.01f * (float)(i % 97);
        g[i] = 1e-3f * (float)(i % 89) - 0.04f;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int reps = 5;
    for (int r = 0; r < reps; r++) CHECK(optim_step(o, p, g, NULL, NULL, NULL) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("  optim: step over %zu params: %.2f ms (%.2f ns/param)\n", n, 1e3 * s / reps,
           1e9 * s / reps / (double)n);
    free(g);
    free(p);
    optim_free(&o);
}

int optim_selftest(bool verbose)
{
    test_worked_example();
    test_schedule(verbose);
    test_clip_and_nonfinite();
    test_convergence(verbose);
    bench_step(verbose);
    return expect_end();
}
