#include "tests/support/numcheck.h"

#include <math.h>
#include <stdio.h>

#include "tests/support/expect.h"

double numcheck_rel_diff(double got, double want, double floor)
{
    return fabs(got - want) / fmax(fabs(want), floor);
}

double numcheck_partial(NumcheckLoss f, void *ctx, float *x, float h)
{
    float x0 = *x;
    *x = x0 + h;
    double xp = *x, lp = f(ctx);
    *x = x0 - h;
    double xm = *x, lm = f(ctx);
    *x = x0;
    return (lp - lm) / (xp - xm);
}

double numcheck_directional(NumcheckLoss f, void *ctx, float *x, const float *dir, size_t n,
                            float h)
{
    for (size_t i = 0; i < n; i++) x[i] += h * dir[i];
    double lp = f(ctx);
    for (size_t i = 0; i < n; i++) x[i] -= 2 * h * dir[i];
    double lm = f(ctx);
    for (size_t i = 0; i < n; i++) x[i] += h * dir[i];
    return (lp - lm) / (2.0 * h);
}

double numcheck_slope(NumcheckLoss f, void *ctx, float *x, const float *g, size_t n, float *dir,
                      Rng *r, float h, double *numeric)
{
    double analytic = 0.0;
    for (size_t i = 0; i < n; i++) {
        dir[i] = rng_normal(r);
        analytic += (double)g[i] * dir[i];
    }
    *numeric = numcheck_directional(f, ctx, x, dir, n, h);
    return analytic;
}

NumcheckGrad numcheck_grad(NumcheckLoss f, void *ctx, float *x, const float *g, const float *mask,
                           int n)
{
    NumcheckGrad res = {0};
    double       gmax = 0.0;
    for (int i = 0; i < n; i++)
        if (!mask || mask[i] != 0.0f) gmax = fmax(gmax, fabs((double)g[i]));
    for (int i = 0; i < n; i++) {
        if (mask && mask[i] == 0.0f) {
            res.bad_masked += g[i] != 0.0f;
            continue;
        }
        double fd = numcheck_partial(f, ctx, &x[i], 1e-4f * fmaxf(1.0f, fabsf(x[i])));
        double err = fabs(fd - g[i]);
        double ref = fmax(fmax(fabs(fd), fabs((double)g[i])), 1e-3 * gmax);
        res.worst_abs = fmax(res.worst_abs, err);
        res.worst_rel = fmax(res.worst_rel, ref > 0.0 ? err / ref : err);
        res.checked++;
    }
    return res;
}

bool numcheck_expect_grad(const char *file, int line, const char *name, NumcheckLoss f, void *ctx,
                          float *x, const float *g, const float *mask, int n, double tol)
{
    NumcheckGrad r = numcheck_grad(f, ctx, x, g, mask, n);
    if (expect_verbose())
        printf("  fd %-16s max abs %.2e  max rel %.2e  over %3d  (tol rel %.0e)\n", name,
               r.worst_abs, r.worst_rel, r.checked, tol);
    return expect_check(r.worst_rel <= tol && r.checked > 0 && !r.bad_masked, file, line,
                        "fd %s: max rel err %.3g (tol %.3g), abs %.3g, %d checked, %d masked "
                        "gradients nonzero",
                        name, r.worst_rel, tol, r.worst_abs, r.checked, r.bad_masked);
}

void numcheck_random_mask(Rng *rng, float *mask, int n)
{
    for (int i = 0; i < n; i++) mask[i] = rng_uniform(rng) < 0.2f ? 0.0f : 1.0f;
    mask[0] = 1.0f;
}

float numcheck_sum(const float *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    return (float)s;
}

bool numcheck_expect_rel(double got, double want, double tol, double floor, const char *file,
                         int line, const char *what)
{
    double rel = numcheck_rel_diff(got, want, floor);
    bool   ok = isfinite(got) && isfinite(want) && rel <= tol;
    if (expect_verbose())
        printf("  %s: %.10g vs %.10g, rel diff %.3g (tol %.3g)\n", what, got, want, rel, tol);
    return expect_check(ok, file, line, "%s: got %.10g, expected %.10g, rel diff %.3g > tol %.3g",
                        what, got, want, rel, tol);
}
