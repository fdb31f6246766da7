/* bench_kern: the decode kernels one by one, on SmolLM2-135M's shapes.
 *
 * Prints, in one run: the read-only streaming rate (the ceiling of a
 * weight-streaming kernel) and the cost of one empty par_for (a wake-up of
 * the pool); then for every kernel variant this CPU runs (kern_int.h), BF16
 * and F16 weights, and N = 1, 8 and 16 rows, the best time of each matrix
 * of a layer (q/k/v fused, o, gate/up with the SwiGLU, down) and of the LM
 * head, in GB/s of weights read and GFLOP/s, beside the fp32 few-row kernel
 * (tensor_linear_forward) on the same matrices. Writes the figures under
 * "kern" in the JSON file given as the first argument (default
 * build/bench.json), keeping other keys.
 *
 *   bench_kern [OUT.json] [--quick]     --quick: fewer repetitions, N = 1 and 8 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/par.h"
#include "common/base/rng.h"
#include "common/nn/kern.h"
#include "common/nn/kern_int.h"
#include "common/nn/tensor.h"
#include "tests/bench/bench_common.h"

typedef struct {
    const char *name;
    int         n_part, rows[KERN_MAX_PARTS], C;
    bool        is_swiglu;
} Mat;

/* SmolLM2-135M: C 576, 9 heads of 64 (3 kv heads), H 1536, V 49152. */
static const Mat k_mats[] = {
    {"qkv", 3, {576, 192, 192}, 576, false}, {"o", 1, {576}, 576, false},
    {"gate_up", 2, {1536, 1536}, 576, true}, {"down", 1, {576}, 1536, false},
    {"lm_head", 1, {49152}, 576, false},
};

static void nop_range(void *ctx, size_t b, size_t e)
{
    (void)ctx;
    (void)b;
    (void)e;
}

/* Best seconds of one call of the product of mat on N rows over reps. */
static double time_half(const KernVariant *v, const KernMat *km, float *const *outs, const float *x,
                        int N, int reps)
{
    double  best = 1e30;
    KernOut mode = km->is_swiglu ? KERN_OUT_SWIGLU : KERN_OUT_STORE;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s();
        kern_linear_variant(v, outs, x, km, N, mode);
        best = fmin(best, bench_now_s() - t0);
    }
    return best;
}

static double time_f32(float *const *w, const Mat *mt, float *const *outs, const float *x, int N,
                       int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s();
        for (int p = 0; p < mt->n_part; p++)
            tensor_linear_forward(outs[p], x, w[p], N, mt->C, mt->rows[p]);
        best = fmin(best, bench_now_s() - t0);
    }
    return best;
}

int main(int argc, char **argv)
{
    const char *out = "build/bench.json";
    bool        quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [OUT.json (default build/bench.json)] [--quick (fewer "
                   "repetitions, N = 1 and 8)]\n",
                   argv[0]);
            return 0;
        } else
            out = argv[i];
    }
    double rd = quick ? bench_read_gbs_n(256, 2, true) : bench_read_gbs(true);
    double rd1 = quick ? bench_read_gbs_n(256, 2, false) : bench_read_gbs(false);
    double par_us = 1e30;
    for (int r = 0; r < 20; r++) {
        double t0 = bench_now_s();
        for (int k = 0; k < 100; k++) par_for(64, 1, nop_range, NULL);
        par_us = fmin(par_us, (bench_now_s() - t0) / 100 * 1e6);
    }
    printf("machine: read %.2f GB/s with %d threads, %.2f GB/s with 1; empty par_for %.1f us; "
           "kern_linear uses %s\n",
           rd, par_threads(), rd1, par_us, kern_variant_name());
    json_t *res =
        json_pack("{s:f, s:f, s:i, s:f, s:s}", "read_gbs", rd, "read_gbs_1thread", rd1, "threads",
                  par_threads(), "par_for_us", par_us, "kernel", kern_variant_name());
    json_t          *rows = json_array();
    static const int k_ns[] = {1, 8, 16};
    int              n_ns = quick ? 2 : 3, reps = quick ? 5 : 30;
    Rng              rng;
    rng_seed(&rng, 1);
    for (size_t mi = 0; mi < sizeof k_mats / sizeof k_mats[0]; mi++) {
        const Mat *mt = &k_mats[mi];
        float     *w[KERN_MAX_PARTS], *outs[KERN_MAX_PARTS];
        size_t     n_w = 0;
        for (int p = 0; p < mt->n_part; p++) {
            w[p] = xmalloc_aligned(sizeof(float) * (size_t)mt->rows[p] * mt->C);
            outs[p] = xmalloc_aligned(sizeof(float) * 16 * (size_t)mt->rows[p]);
            for (size_t i = 0; i < (size_t)mt->rows[p] * mt->C; i++)
                w[p][i] = 0.05f * rng_normal(&rng);
            n_w += (size_t)mt->rows[p] * mt->C;
        }
        float *x = xmalloc_aligned(sizeof(float) * 16 * mt->C);
        for (int i = 0; i < 16 * mt->C; i++) x[i] = rng_normal(&rng);
        for (int ni = 0; ni < n_ns; ni++) {
            int    N = k_ns[ni];
            double flop = 2.0 * N * (double)n_w;
            double t32 = time_f32(w, mt, outs, x, N, reps);
            printf("%-8s N=%-2d fp32 %-7s %8.1f us  %6.1f GB/s  %6.1f GFLOP/s\n", mt->name, N,
                   "tensor", t32 * 1e6, 4.0 * n_w / t32 / 1e9, flop / t32 / 1e9);
            json_array_append_new(
                rows, json_pack("{s:s, s:i, s:s, s:s, s:f, s:f, s:f}", "matrix", mt->name, "N", N,
                                "weights", "fp32", "kernel", "tensor", "us", t32 * 1e6, "gbs",
                                4.0 * n_w / t32 / 1e9, "gflops", flop / t32 / 1e9));
            for (KernType t = KERN_BF16; t <= KERN_F16; t++) {
                void   *mem = xmalloc_aligned(kern_mat_bytes(t, mt->n_part, mt->rows, mt->C));
                KernMat km;
                CHECK(kern_mat_pack(&km, mem, t, mt->n_part, (const float *const *)w, mt->rows,
                                    mt->C, mt->is_swiglu, mt->name) == 0);
                for (int vi = 0; vi < kern_n_variants; vi++) {
                    const KernVariant *v = &kern_variants[vi];
                    /* The portable C kernel is a fallback: timed at N = 1 only. */
                    if (!v->is_supported() || (!strcmp(v->name, "c") && N > 1)) continue;
                    double th = time_half(v, &km, outs, x, N, reps);
                    printf("%-8s N=%-2d %s %-7s %8.1f us  %6.1f GB/s  %6.1f GFLOP/s  (%.2fx "
                           "fp32)\n",
                           mt->name, N, kern_type_names[t], v->name, th * 1e6, 2.0 * n_w / th / 1e9,
                           flop / th / 1e9, t32 / th);
                    json_array_append_new(
                        rows,
                        json_pack("{s:s, s:i, s:s, s:s, s:f, s:f, s:f}", "matrix", mt->name, "N", N,
                                  "weights", kern_type_names[t], "kernel", v->name, "us", th * 1e6,
                                  "gbs", 2.0 * n_w / th / 1e9, "gflops", flop / th / 1e9));
                }
                free(mem);
            }
        }
        for (int p = 0; p < mt->n_part; p++) {
            free(w[p]);
            free(outs[p]);
        }
        free(x);
    }
    json_object_set_new(res, "matrices", rows);
    return bench_json_write("bench_kern", out, "kern", res) ? 1 : 0;
}
