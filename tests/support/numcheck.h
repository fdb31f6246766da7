/* numcheck: the numeric comparisons the tests share, written once: central
 * finite differences of a scalar loss (one entry at a time, along a
 * direction, or over a whole masked array) and relative differences with a
 * floor.
 *
 * A loss is a NumcheckLoss over a caller's context; the helpers perturb the
 * caller's float array in place and always put back the value they found
 * (the directional check restores it the way it moved it, see there). They
 * allocate nothing and are not thread-safe only in that they write the
 * caller's array. EXPECT_REL counts one check through tests/support/expect.h. */
#ifndef RLHF_NUMCHECK_H
#define RLHF_NUMCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "common/base/rng.h"

/* The scalar being differentiated, evaluated at the current inputs. */
typedef double (*NumcheckLoss)(void *ctx);

/* |got - want| / max(|want|, floor): relative, except that near zero the
 * floor makes it absolute (floor 1 compares relative to max(1, |want|)). */
double numcheck_rel_diff(double got, double want, double floor);

/* d f / d x at the entry *x by central differences with step h:
 * (f(x + h) - f(x - h)) divided by the distance between the two float
 * values actually represented. *x is put back exactly. */
double numcheck_partial(NumcheckLoss f, void *ctx, float *x, float h);

/* The derivative of f along dir (n) at x (n): (f(x + h dir) - f(x - h dir))
 * / 2h. x moves by +h dir, then -2h dir, then +h dir, so it is back where it
 * was up to float rounding of those steps. */
double numcheck_directional(NumcheckLoss f, void *ctx, float *x, const float *dir, size_t n,
                            float h);

/* A gradient g (n) checked along a random direction: fills dir (n) with
 * standard normals from r, returns the analytic slope g . dir and sets
 * *numeric to numcheck_directional's slope with step h. */
double numcheck_slope(NumcheckLoss f, void *ctx, float *x, const float *g, size_t n, float *dir,
                      Rng *r, float h, double *numeric);

/* numcheck_grad's measurements. */
typedef struct {
    double worst_abs;  /* max |fd - g| */
    double worst_rel;  /* max |fd - g| / max(|fd|, |g|, 1e-3 * max|g|) */
    int    checked;    /* entries compared */
    int    bad_masked; /* masked entries with a nonzero gradient */
} NumcheckGrad;

/* Central differences of f w.r.t. x (n) against the analytic gradient g (n)
 * at every entry with mask != 0 (mask NULL: all), each with numcheck_partial
 * and a step of 1e-4 * max(1, |x_i|). Entries with mask 0 must have exactly
 * zero gradient; they are not perturbed (they may hold NaN). What is left
 * is the O(h^2) truncation plus the float rounding of g. The relative
 * error's floor of 1e-3 * max|g| means a gradient that should be zero (a
 * clipped token) must come out zero in absolute terms. */
NumcheckGrad numcheck_grad(NumcheckLoss f, void *ctx, float *x, const float *g, const float *mask,
                           int n);

/* One check of numcheck_grad: fails when the worst relative error exceeds
 * tol, nothing was checked, or a masked entry has a gradient; the message
 * names the loss. Verbose runs print the measurements either way. */
bool numcheck_expect_grad(const char *file, int line, const char *name, NumcheckLoss f, void *ctx,
                          float *x, const float *g, const float *mask, int n, double tol);
#define EXPECT_GRAD(name, f, ctx, x, g, mask, n, tol)                                              \
    numcheck_expect_grad(__FILE__, __LINE__, (name), (f), (ctx), (x), (g), (mask), (n), (tol))

/* A random 0/1 token mask (n) with about a fifth of the entries 0; entry 0
 * is always 1, so something counts. */
void numcheck_random_mask(Rng *rng, float *mask, int n);
/* The sum of x (n), accumulated in double. */
float numcheck_sum(const float *x, int n);

/* One check: numcheck_rel_diff(got, want, floor) <= tol, both finite; the
 * message names what, both values and the tolerance. Verbose runs print the
 * difference either way. */
bool numcheck_expect_rel(double got, double want, double tol, double floor, const char *file,
                         int line, const char *what);
#define EXPECT_REL(got, want, tol, floor, what)                                                    \
    numcheck_expect_rel((got), (want), (tol), (floor), __FILE__, __LINE__, (what))

#endif
