/* rng's self-test: determinism and the moments of each distribution. */
#include "common/base/rng.h"

#include <math.h>
#include <stdio.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

int rng_selftest(bool verbose)
{
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    int differ = 0;
    for (int i = 0; i < 100; i++) differ += rng_u64(&a) != rng_u64(&b);
    EXPECT(differ == 0, "two generators seeded 42 differ in %d of 100 draws, expected 0", differ);
    /* Moments of the uniform and normal draws over 200k samples. */
    double su = 0, sn = 0, sn2 = 0;
    int    n = 200000, counts[7] = {0}, out_of_range = 0;
    for (int i = 0; i < n; i++) {
        float u = rng_uniform(&a);
        out_of_range += u < 0.0f || u >= 1.0f;
        su += u;
        double z = rng_normal(&a);
        sn += z;
        sn2 += z * z;
        counts[rng_below(&a, 7)]++;
    }
    EXPECT(out_of_range == 0, "%d of %d uniform draws outside [0, 1)", out_of_range, n);
    double mu = su / n, mn = sn / n, vn = sn2 / n - mn * mn;
    if (verbose)
        printf("  rng: uniform mean %.4f (0.5), normal mean %.4f var %.4f (0, 1)\n", mu, mn, vn);
    EXPECT_NEAR(mu, 0.5, 0.01, "uniform mean");
    EXPECT_NEAR(mn, 0.0, 0.01, "normal mean");
    EXPECT_NEAR(vn, 1.0, 0.02, "normal variance");
    for (int k = 0; k < 7; k++) {
        char what[48];
        snprintf(what, sizeof what, "rng_below(7) frequency of %d", k);
        EXPECT_NEAR(counts[k] / (double)n, 1.0 / 7, 0.005, what);
    }
    return expect_end();
}
