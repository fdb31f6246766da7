/* kern_selftest: every kernel variant this CPU supports (called one by one,
 * not only the one kern_linear picks), for BF16 and F16 weights, against
 * sums in double, on shapes that are not multiples of the vector widths
 * (rows not a multiple of 16, odd C, N not a multiple of the tile height,
 * several fused parts, SwiGLU pairs), in all three output modes.
 *
 * Two bounds per output, with u = 2^-24 (fp32) and S = sum_c |w_c x_c|:
 *   against the exact product with the packed (rounded) weights w':
 *     |y - sum w'_c x_c| <= (C + 2) u sum |w'_c x_c|   (fp32 accumulation)
 *   against the exact product with the fp32 weights:
 *     |y - sum w_c x_c| <= u_h S + a_h sum |x_c| + (C + 2) u (1 + u_h) S
 * with u_h = 2^-8, a_h = 0 for BF16 and u_h = 2^-11, a_h = 2^-25 (the
 * absolute error of F16's subnormals) for F16. The AVX512_BF16 kernel also
 * rounds the input to bf16 (u_x = 2^-8), which adds u_x sum |w'_c x_c| to
 * the first bound and (u_h + u_x + u_h u_x) S to the second. The worst ratio of error to
 * bound is printed. Also: the threaded call equals one thread's result
 * bit for bit, nothing past an output is written, and a weight F16 cannot
 * hold is refused naming the matrix. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/par.h"
#include "common/base/rng.h"
#include "common/nn/half.h"
#include "common/nn/kern.h"
#include "common/nn/kern_int.h"
#include "common/nn/tensor.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

#define CANARY 1234.5f
#define PAD 16 /* canary floats after each output */

typedef struct {
    int  N, C, n_part, rows[KERN_MAX_PARTS];
    bool is_swiglu;
} Shape;

typedef struct {
    double worst_packed, worst_fp32; /* error / bound */
    int    fails;
} Tally;

static float *alloc_out(size_t n)
{
    float *o = xmalloc((n + PAD) * sizeof(float));
    for (size_t i = 0; i < n + PAD; i++) o[i] = CANARY;
    return o;
}

/* Checks one shape with variant v and type t in the three modes. */
static void check_shape(const KernVariant *v, KernType t, const Shape *s, Rng *r, Tally *tl)
{
    int    N = s->N, C = s->C, P = s->n_part;
    float *w[KERN_MAX_PARTS];
    float *x = xmalloc(sizeof(float) * (size_t)N * C);
    for (int i = 0; i < N * C; i++) x[i] = rng_normal(r);
    for (int p = 0; p < P; p++) {
        w[p] = xmalloc(sizeof(float) * (size_t)s->rows[p] * C);
        for (int i = 0; i < s->rows[p] * C; i++) {
            /* Mostly N(0, 0.1), with values across the exponent range mixed
             * in (F16 subnormals included). */
            float z = 0.1f * rng_normal(r);
            int   k = (int)rng_below(r, 16);
            w[p][i] = k == 0 ? z * 1e-4f : k == 1 ? z * 100.0f : z;
        }
    }
    size_t  bytes = kern_mat_bytes(t, P, s->rows, C);
    void   *mem = xmalloc_aligned(bytes);
    KernMat m;
    int     rc =
        kern_mat_pack(&m, mem, t, P, (const float *const *)w, s->rows, C, s->is_swiglu, "test");
    EXPECT(rc == 0, "kern_mat_pack returned %d", rc);
    double u = 0x1p-24, uh = t == KERN_BF16 ? 0x1p-8 : 0x1p-11, ah = t == KERN_BF16 ? 0 : 0x1p-25;
    /* A kernel that rounds the input to bf16 adds that rounding (ux). */
    double ux = t == KERN_BF16 && v->is_bf16_input ? 0x1p-8 : 0;
    /* Reference products and their bounds. */
    double *yp[KERN_MAX_PARTS], *bp[KERN_MAX_PARTS], *yf[KERN_MAX_PARTS], *bf[KERN_MAX_PARTS];
    for (int p = 0; p < P; p++) {
        size_t n = (size_t)N * s->rows[p];
        yp[p] = xmalloc(n * sizeof(double));
        bp[p] = xmalloc(n * sizeof(double));
        yf[p] = xmalloc(n * sizeof(double));
        bf[p] = xmalloc(n * sizeof(double));
        for (int i = 0; i < N; i++) {
            for (int o = 0; o < s->rows[p]; o++) {
                double sp = 0, ap = 0, sf = 0, af = 0, ax = 0;
                for (int c = 0; c < C; c++) {
                    double wf = w[p][(size_t)o * C + c], wr = kern_round(t, (float)wf);
                    double xc = x[(size_t)i * C + c];
                    sp += wr * xc;
                    ap += fabs(wr * xc);
                    sf += wf * xc;
                    af += fabs(wf * xc);
                    ax += fabs(xc);
                }
                size_t at = (size_t)i * s->rows[p] + o;
                yp[p][at] = sp;
                bp[p][at] = ux * ap + (C + 2) * u * (1 + ux) * ap;
                yf[p][at] = sf;
                bf[p][at] =
                    (uh + ux + uh * ux) * af + ah * ax + (C + 2) * u * (1 + uh) * (1 + ux) * af;
            }
        }
    }
    float *out[KERN_MAX_PARTS], *one[KERN_MAX_PARTS];
    for (int p = 0; p < P; p++) {
        out[p] = alloc_out((size_t)N * s->rows[p]);
        one[p] = alloc_out((size_t)N * s->rows[p]);
    }
    /* STORE: both bounds; the threaded call equals one thread's. */
    kern_linear_variant(v, out, x, &m, N, KERN_OUT_STORE);
    KernJob     job = {.outs = one, .inp = x, .w = &m, .N = N, .mode = KERN_OUT_STORE};
    KernRangeFn fn = t == KERN_BF16 ? v->bf16 : v->f16;
    fn(&job, 0, m.block0[P] > 0 ? m.block0[P] : 0);
    for (int p = 0; p < P; p++) {
        size_t n = (size_t)N * s->rows[p];
        for (size_t i = 0; i < n; i++) {
            double ep = fabs(out[p][i] - yp[p][i]), ef = fabs(out[p][i] - yf[p][i]);
            double rp = ep / fmax(bp[p][i], 1e-300), rf = ef / fmax(bf[p][i], 1e-300);
            tl->worst_packed = fmax(tl->worst_packed, ep == 0 ? 0 : rp);
            tl->worst_fp32 = fmax(tl->worst_fp32, ef == 0 ? 0 : rf);
            if ((ep > 0 && rp > 1) || (ef > 0 && rf > 1) || out[p][i] != one[p][i]) tl->fails++;
        }
        for (int i = 0; i < PAD; i++)
            if (out[p][n + i] != CANARY || one[p][n + i] != CANARY) tl->fails++;
    }
    /* ADD: on top of a residual, one more rounding. */
    for (int p = 0; p < P; p++)
        for (int i = 0; i < N * s->rows[p]; i++) out[p][i] = (float)(i % 7) - 3.0f;
    kern_linear_variant(v, out, x, &m, N, KERN_OUT_ADD);
    for (int p = 0; p < P; p++) {
        size_t n = (size_t)N * s->rows[p];
        for (size_t i = 0; i < n; i++) {
            double want = (double)(i % 7) - 3.0 + yp[p][i];
            if (fabs(out[p][i] - want) > bp[p][i] + u * fabs(want) * 2) tl->fails++;
        }
        for (int i = 0; i < PAD; i++)
            if (out[p][n + i] != CANARY) tl->fails++;
    }
    /* SWIGLU: silu(gate) * up of the STORE products, as tensor_swiglu_forward has it. */
    if (s->is_swiglu) {
        int    H = s->rows[0];
        float *act = alloc_out((size_t)N * H), *want = xmalloc(sizeof(float) * (size_t)N * H);
        kern_linear_variant(v, &act, x, &m, N, KERN_OUT_SWIGLU);
        tensor_swiglu_forward(want, one[0], one[1], (size_t)N * H);
        for (int i = 0; i < N * H; i++)
            if (fabs(act[i] - want[i]) > 1e-6 * fabs(want[i])) tl->fails++;
        for (int i = 0; i < PAD; i++)
            if (act[N * H + i] != CANARY) tl->fails++;
        free(act);
        free(want);
    }
    for (int p = 0; p < P; p++) {
        free(w[p]);
        free(yp[p]);
        free(bp[p]);
        free(yf[p]);
        free(bf[p]);
        free(out[p]);
        free(one[p]);
    }
    free(x);
    free(mem);
}

int kern_selftest(bool verbose)
{
    expect_begin("kern", verbose);
    static const Shape shapes[] = {
        {1, 64, 1, {16}, false},
        {1, 1, 1, {1}, false},
        {3, 45, 1, {37}, false},
        {2, 7, 3, {5, 19, 33}, false},
        {5, 33, 2, {40, 40}, true},
        {8, 130, 1, {64}, false},
        {9, 96, 1, {200}, false},
        {17, 31, 2, {24, 24}, true},
        {4, 576, 3, {576, 192, 192}, false},
        {16, 576, 1, {576}, false},
        {7, 100, 1, {83}, false},
        {12, 257, 2, {48, 48}, true},
        {2, KERN_BF16DOT_MAX_C + 3, 1, {20}, false},
    };
    int n_tested = 0;
    for (int vi = 0; vi < kern_n_variants; vi++) {
        const KernVariant *v = &kern_variants[vi];
        if (!v->is_supported()) {
            printf("  kern: variant %s: not supported by this CPU, skipped\n", v->name);
            continue;
        }
        n_tested++;
        for (KernType t = KERN_BF16; t <= KERN_F16; t++) {
            Rng r;
            rng_seed(&r, 100 + (uint64_t)t);
            Tally tl = {0};
            for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
                check_shape(v, t, &shapes[i], &r, &tl);
            if (verbose)
                printf("  kern %s %s: worst error/bound %.3f (packed weights), %.3f (fp32 "
                       "weights), %d failures\n",
                       v->name, kern_type_names[t], tl.worst_packed, tl.worst_fp32, tl.fails);
            EXPECT(tl.fails == 0,
                   "variant %s %s: %d outputs outside their bound, differing between threaded "
                   "and single-thread calls, or written out of range",
                   v->name, kern_type_names[t], tl.fails);
        }
    }
    EXPECT(n_tested >= 1, "no kernel variant is supported");
    if (verbose)
        printf("  kern: %d of %d variants tested, kern_linear uses %s, %d threads\n", n_tested,
               kern_n_variants, kern_variant_name(), par_threads());

    /* Hand-computed: w = [[1, 2^-9, -3], [0.5, 1 + 2^-8, 2]] in BF16 rounds
     * to [[1, 2^-9, -3], [0.5, 1, 2]] (1 + 2^-8 is a tie, even wins), so with
     * x = [2, 512, 1] the outputs are 2 + 1 - 3 = 0 and 1 + 512 + 2 = 515. */
    {
        float        w0[6] = {1.0f, 0x1p-9f, -3.0f, 0.5f, 1.0f + 0x1p-8f, 2.0f}, x[3] = {2, 512, 1};
        const float *wp[1] = {w0};
        int          rows[1] = {2};
        uint16_t     mem[64] __attribute__((aligned(64)));
        KernMat      m;
        EXPECT(kern_mat_bytes(KERN_BF16, 1, rows, 3) == sizeof mem,
               "bf16 2x3 packs into %zu bytes, expected %zu", kern_mat_bytes(KERN_BF16, 1, rows, 3),
               sizeof mem);
        CHECK(kern_mat_pack(&m, mem, KERN_BF16, 1, wp, rows, 3, false, "hand") == 0);
        for (int vi = 0; vi < kern_n_variants; vi++) {
            if (!kern_variants[vi].is_supported()) continue;
            float  y[2] = {-1, -1};
            float *outs[1] = {y};
            kern_linear_variant(&kern_variants[vi], outs, x, &m, 1, KERN_OUT_STORE);
            EXPECT(y[0] == 0.0f && y[1] == 515.0f,
                   "%s: hand-computed case gave [%g, %g], expected [0, 515]",
                   kern_variants[vi].name, (double)y[0], (double)y[1]);
        }
    }
    /* F16 cannot hold 70000: refused, naming the matrix and the element. */
    {
        float        w0[4] = {1, 2, 70000, 3};
        const float *wp[1] = {w0};
        int          rows[1] = {2};
        void        *mem = xmalloc_aligned(kern_mat_bytes(KERN_F16, 1, rows, 2));
        KernMat      m;
        EXPECT_REFUSED(kern_mat_pack(&m, mem, KERN_F16, 1, wp, rows, 2, false, "layer3.w_up"),
                       ERR_RANGE, "layer3.w_up part 0: w[1][0] = 70000", "F16 overflow");
        EXPECT(kern_mat_pack(&m, mem, KERN_BF16, 1, wp, rows, 2, false, "layer3.w_up") == 0,
               "BF16 refused 70000");
        free(mem);
    }
    return expect_end();
}
