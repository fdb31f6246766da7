#include "tests/test_list.h"
#include "common/base/rng.h"

#include <math.h>
#include <stdio.h>

#include "common/base/err.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void rng_seed(Rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t rng_u64(Rng *r)
{
    uint64_t *s = r->s;
    uint64_t  result = rotl(s[1] * 5, 7) * 9;
    uint64_t  t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(Rng *r)
{
    return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

uint32_t rng_below(Rng *r, uint32_t n)
{
    CHECK(n > 0);
    /* Rejection keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_u64(r);
    while (x >= limit);
    return (uint32_t)(x % n);
}

float rng_normal(Rng *r)
{
    /* 1 - u is in (0, 1], so the log is finite. */
    double u1 = 1.0 - (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int rng_selftest(bool verbose)
{
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        if (rng_u64(&a) != rng_u64(&b)) return 1;
    /* Moments of the uniform and normal draws over 200k samples. */
    double su = 0, sn = 0, sn2 = 0;
    int    n = 200000, counts[7] = {0};
    for (int i = 0; i < n; i++) {
        float u = rng_uniform(&a);
        if (u < 0.0f || u >= 1.0f) return 1;
        su += u;
        double z = rng_normal(&a);
        sn += z;
        sn2 += z * z;
        counts[rng_below(&a, 7)]++;
    }
    double mu = su / n, mn = sn / n, vn = sn2 / n - mn * mn;
    if (verbose)
        printf("  rng: uniform mean %.4f (0.5), normal mean %.4f var %.4f (0, 1)\n", mu, mn, vn);
    if (fabs(mu - 0.5) > 0.01 || fabs(mn) > 0.01 || fabs(vn - 1.0) > 0.02) return 1;
    for (int k = 0; k < 7; k++)
        if (fabs(counts[k] / (double)n - 1.0 / 7) > 0.005) return 1;
    return 0;
}
