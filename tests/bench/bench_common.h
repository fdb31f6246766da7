/* bench_common: the machine ceilings the model benchmarks measure themselves
 * against, shared so that every figure is set beside the same measurement:
 * the practical sgemm GFLOP/s and the memcpy bandwidth. Header-only (each
 * benchmark is one program); the functions allocate their own buffers. */
#ifndef RLHF_BENCH_COMMON_H
#define RLHF_BENCH_COMMON_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/nn/tensor.h"

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of several runs of a 2048^3 sgemm: the machine's practical peak. */
static inline double bench_sgemm_gflops(void)
{
    int    n = 2048;
    float *a = xmalloc_aligned(sizeof(float) * n * n), *b = xmalloc_aligned(sizeof(float) * n * n);
    float *c = xmalloc_aligned(sizeof(float) * n * n);
    Rng    r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = rng_uniform(&r) - 0.5f;
        b[i] = rng_uniform(&r) - 0.5f;
    }
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now_s();
        tensor_gemm(false, true, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = bench_now_s() - t0;
        best = fmax(best, 2.0 * n * n * (double)n / dt / 1e9);
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Best of several 512 MiB memcpys, in GB/s of bytes copied. */
static inline double bench_memcpy_gbs(void)
{
    size_t n = (size_t)512 << 20;
    char  *src = xmalloc_aligned(n), *dst = xmalloc_aligned(n);
    memset(src, 1, n);
    memset(dst, 2, n);
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now_s();
        memcpy(dst, src, n);
        double dt = bench_now_s() - t0;
        best = fmax(best, (double)n / dt / 1e9);
    }
    if (dst[n / 2] != 1) abort(); /* keeps the copy from being optimised away */
    free(src);
    free(dst);
    return best;
}

#endif
