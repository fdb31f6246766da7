/* tensor_selftest: every kernel against a naive version or finite
 * differences, the attention loop and sgemm paths against each other, and
 * tensor_exp against exp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/nn/tensor.h"
#include "common/nn/tensor_int.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

static void fill_normal(float *x, size_t n, Rng *r, float std)
{
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
}

/* Checks got against want to tol relative to max(1, |want|) and keeps the
 * worst difference for the summary line. */
#define EXPECT_CLOSE(what, got, want, tol, worst)                                                  \
    do {                                                                                           \
        double got_ = (got), want_ = (want), err_ = numcheck_rel_diff(got_, want_, 1.0);           \
        if (err_ > *(worst)) *(worst) = err_;                                                      \
        EXPECT(err_ <= (tol), "%s: got %.8g want %.8g (err %.3g > tol %.3g)", (what), got_, want_, \
               err_, (double)(tol));                                                               \
    } while (0)

/* tensor_gemm against the naive loops, every transpose and padded strides,
 * on a product too small to split and on two the pool splits (by rows of
 * C, by columns), each also with the products made serial. */
static void test_gemm(bool verbose)
{
    /* Not the generic kernels where the CPU has better ones (unless the
     * user asked for them): the program re-executed itself with them. */
    const char *core = tensor_blas_kernels(), *forced = getenv("OPENBLAS_CORETYPE");
    EXPECT(!tensor_blas_kernels_generic(core) || !tensor_blas_better_kernels(core) ||
               (forced && tensor_blas_kernels_generic(forced)),
           "OpenBLAS runs its %s kernels on a CPU that has %s", core,
           tensor_blas_better_kernels(core));
    EXPECT(tensor_blas_kernels_generic("Prescott") && !tensor_blas_kernels_generic("SkylakeX") &&
               !tensor_blas_kernels_generic("Haswell") && !tensor_blas_kernels_generic(NULL),
           "which kernel names are generic");
    if (verbose) printf("  OpenBLAS kernels: %s\n", core);
    Rng r;
    rng_seed(&r, 1);
    static const int shapes[3][3] = {{7, 5, 9}, {150, 70, 40}, {40, 150, 70}};
    int              pad = 3, cap = (150 + pad) * (150 + pad);
    float           *A = xmalloc(sizeof(float) * cap), *Bm = xmalloc(sizeof(float) * cap);
    float           *C1 = xmalloc(sizeof(float) * cap), *C2 = xmalloc(sizeof(float) * cap);
    double           worst = 0.0;
    for (int si = 0; si < 3; si++) {
        int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int serial = 0; serial < 2; serial++) {
            tensor_set_blas_threads(serial ? 1 : 2);
            for (int ta = 0; ta < 2; ta++) {
                for (int tb = 0; tb < 2; tb++) {
                    fill_normal(A, cap, &r, 1.0f);
                    fill_normal(Bm, cap, &r, 1.0f);
                    fill_normal(C1, cap, &r, 1.0f);
                    memcpy(C2, C1, sizeof(float) * cap);
                    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
                    tensor_gemm(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C1, ldc);
                    tensor_gemm_naive(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C2, ldc);
                    /* The padding between rows stays untouched. */
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < ldc && i * ldc + j < cap; j++)
                            EXPECT_CLOSE("gemm", C1[i * ldc + j], C2[i * ldc + j], 1e-4, &worst);
                }
            }
        }
    }
    tensor_set_blas_threads(2);
    if (verbose) printf("  gemm vs naive: max err %.2e (tol 1e-4)\n", worst);
    free(A);
    free(Bm);
    free(C1);
    free(C2);
}

/* The loop and sgemm paths agree, forward and backward, on both sides of
 * the length threshold. */
static void test_attention_paths(bool verbose)
{
    Rng r;
    rng_seed(&r, 21);
    double worst = 0.0;
    /* Head sizes below, across and on the loops' 16 lanes; sequences of
     * under one block of lanes, across blocks, and past the loop path's 64. */
    int Ts[3] = {7, 33, 70}, HSs[3] = {8, 20, 32};
    for (int ti = 0; ti < 9; ti++) {
        int    B = 2, T = Ts[ti % 3], NH = 4, KVH = 2, HS = HSs[ti / 3];
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS;
        size_t na = (size_t)B * NH * T * T;
        float *buf = xcalloc(4 * nq + 6 * nk + 4 * na, sizeof(float));
        float *q = buf, *dout = q + nq, *o1 = dout + nq, *o2 = o1 + nq;
        float *k = o2 + nq, *v = k + nk, *dk1 = v + nk, *dk2 = dk1 + nk, *dv1 = dk2 + nk,
              *dv2 = dv1 + nk;
        float *a1 = dv2 + nk, *a2 = a1 + na, *s1 = a2 + na, *s2 = s1 + na;
        float *dq1 = xcalloc(2 * nq, sizeof(float)), *dq2 = dq1 + nq;
        for (size_t i = 0; i < nq; i++) {
            q[i] = rng_normal(&r);
            dout[i] = rng_normal(&r);
        }
        for (size_t i = 0; i < nk; i++) {
            k[i] = rng_normal(&r);
            v[i] = rng_normal(&r);
        }
        tensor_attention_forward_loop(o1, a1, q, k, v, B, T, NH, KVH, HS);
        tensor_attention_forward_gemm(o2, a2, q, k, v, B, T, NH, KVH, HS);
        tensor_attention_backward_loop(dq1, dk1, dv1, s1, dout, a1, q, k, v, B, T, NH, KVH, HS);
        tensor_attention_backward_gemm(dq2, dk2, dv2, s2, dout, a2, q, k, v, B, T, NH, KVH, HS);
        for (size_t i = 0; i < nq; i++) {
            EXPECT_CLOSE("attention paths out", o1[i], o2[i], 1e-5, &worst);
            EXPECT_CLOSE("attention paths dq", dq1[i], dq2[i], 1e-5, &worst);
        }
        for (size_t i = 0; i < nk; i++) {
            EXPECT_CLOSE("attention paths dk", dk1[i], dk2[i], 1e-5, &worst);
            EXPECT_CLOSE("attention paths dv", dv1[i], dv2[i], 1e-5, &worst);
        }
        free(buf);
        free(dq1);
    }
    if (verbose) printf("  attention loop vs sgemm paths: max err %.2e (tol 1e-5)\n", worst);
}

/* An op under test: out = op(in), with its sizes in an OpCtx. */
typedef void (*FwdFn)(float *out, float *const *in, void *ctx);

/* loss = sum(w_out * out(in)), the scalar whose gradient the backward
 * kernels give when w_out is the upstream gradient. */
typedef struct {
    FwdFn         fwd;
    void         *ctx;
    float *const *in;
    float        *out;
    const float  *w_out;
    size_t        out_n;
} OpLoss;

static double op_loss(void *p)
{
    OpLoss *l = p;
    double  s = 0.0;
    l->fwd(l->out, l->in, l->ctx);
    for (size_t o = 0; o < l->out_n; o++) s += (double)l->w_out[o] * l->out[o];
    return s;
}

/* Finite-difference check of one op: compares the analytic gradient of
 * every input element with central differences in float, a step of 1e-3 and
 * a tolerance relative to max(1, |fd|). Stops after 5 failures of the op. */
static void fd_check(const char *name, FwdFn fwd, void *ctx, float *const *in, const size_t *in_n,
                     int n_in, float *const *grad, size_t out_n, const float *w_out, double tol,
                     bool verbose)
{
    OpLoss l = {fwd, ctx, in, xmalloc(sizeof(float) * out_n), w_out, out_n};
    double worst = 0.0;
    int    fails = 0;
    for (int a = 0; a < n_in && fails <= 5; a++) {
        for (size_t i = 0; i < in_n[a] && fails <= 5; i++) {
            double num = numcheck_partial(op_loss, &l, &in[a][i], 1e-3f);
            double err = numcheck_rel_diff(grad[a][i], num, 1.0);
            worst = fmax(worst, err);
            fails += !EXPECT(err <= tol,
                             "%s: input %d entry %zu: analytic %.8g, fd %.8g (err %.3g > tol %.3g)",
                             name, a, i, (double)grad[a][i], num, err, tol);
        }
    }
    if (verbose) printf("  %-10s fd max err %.2e (tol %.0e)\n", name, worst, tol);
    free(l.out);
}

typedef struct {
    int    N, C, OC, NH, KVH, HS, B, T, V;
    float  eps;
    int   *pos, *targets;
    float *scratch;
    float *cos_tab, *sin_tab;
} OpCtx;

static void fwd_linear(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    tensor_linear_forward(out, in[0], in[1], c->N, c->C, c->OC);
}

static void fwd_rmsnorm(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    tensor_rmsnorm_forward(out, c->scratch, in[0], in[1], c->N, c->C, c->eps);
}

static void fwd_rope(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    memcpy(out, in[0], sizeof(float) * (size_t)c->N * c->NH * c->HS);
    tensor_rope_forward(out, c->pos, c->N, c->NH, c->HS, c->cos_tab, c->sin_tab);
}

static void fwd_swiglu(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    tensor_swiglu_forward(out, in[0], in[1], (size_t)c->N);
}

static void fwd_attention(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    tensor_attention_forward(out, c->scratch, in[0], in[1], in[2], c->B, c->T, c->NH, c->KVH,
                             c->HS);
}

/* Output layout for the logp op: logp (N) then entropy (N). */
static void fwd_logp(float *out, float *const *in, void *p)
{
    OpCtx *c = p;
    tensor_logp_forward(out, out + c->N, c->scratch, in[0], c->targets, c->N, c->V);
}

static void test_ops(bool verbose)
{
    Rng r;
    rng_seed(&r, 7);
    OpCtx        c = {.N = 6, .C = 8, .OC = 5, .eps = 1e-5f};
    float        x[512], w[512], g0[512], g1[512], g2[512], wo[4096], big[4096];
    float *const in2[2] = {x, w};
    float *const gr2[2] = {g0, g1};

    fill_normal(x, 512, &r, 1.0f);
    fill_normal(w, 512, &r, 1.0f);
    fill_normal(wo, 4096, &r, 1.0f);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_linear_backward(g0, g1, wo, x, w, c.N, c.C, c.OC);
    size_t nl[2] = {(size_t)c.N * c.C, (size_t)c.OC * c.C};
    fd_check("linear", fwd_linear, &c, in2, nl, 2, gr2, (size_t)c.N * c.OC, wo, 2e-3, verbose);

    float rstd[64], outn[512];
    c.scratch = big;
    tensor_rmsnorm_forward(outn, rstd, x, w, c.N, c.C, c.eps);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_rmsnorm_backward(g0, g1, wo, x, w, rstd, c.N, c.C);
    size_t nr[2] = {(size_t)c.N * c.C, (size_t)c.C};
    fd_check("rmsnorm", fwd_rmsnorm, &c, in2, nr, 2, gr2, (size_t)c.N * c.C, wo, 2e-3, verbose);

    int pos[6] = {0, 1, 5, 17, 100, 3000};
    c.pos = pos;
    c.NH = 2;
    c.HS = 8;
    memcpy(g0, wo, sizeof(float) * 96);
    float *cos_tab = xmalloc(sizeof(float) * 3001 * 4),
          *sin_tab = xmalloc(sizeof(float) * 3001 * 4);
    tensor_rope_table(cos_tab, sin_tab, 3001, c.HS, 10000.0f);
    c.cos_tab = cos_tab;
    c.sin_tab = sin_tab;
    tensor_rope_backward(g0, pos, c.N, c.NH, c.HS, cos_tab, sin_tab);
    float *const in1[1] = {x};
    float *const gr1[1] = {g0};
    size_t       nrope = 96;
    fd_check("rope", fwd_rope, &c, in1, &nrope, 1, gr1, 96, wo, 2e-3, verbose);
    /* Worked example: position 1, pair 0 rotates by exactly 1 radian. */
    float xr[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    int   p1 = 1;
    tensor_rope_forward(xr, &p1, 1, 1, 8, cos_tab, sin_tab);
    EXPECT(fabsf(xr[0] - cosf(1.0f)) <= 1e-6f && fabsf(xr[4] - sinf(1.0f)) <= 1e-6f,
           "rope of (1, 0) at position 1: (%.8g, %.8g), expected (cos 1, sin 1) = (%.8g, %.8g) "
           "to 1e-6",
           (double)xr[0], (double)xr[4], (double)cosf(1.0f), (double)sinf(1.0f));
    free(cos_tab);
    free(sin_tab);

    c.N = 40;
    fill_normal(x, 40, &r, 2.0f);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_swiglu_backward(g0, g1, wo, x, w, 40);
    size_t ns[2] = {40, 40};
    fd_check("swiglu", fwd_swiglu, &c, in2, ns, 2, gr2, 40, wo, 2e-3, verbose);

    /* Attention with GQA: B 2, T 5, NH 4, KVH 2, HS 4. */
    c.B = 2;
    c.T = 5;
    c.NH = 4;
    c.KVH = 2;
    c.HS = 4;
    size_t nq = 2 * 5 * 4 * 4, nk = 2 * 5 * 2 * 4;
    float  q[160], k[80], v[80], att[200], outa[160], tt[200];
    fill_normal(q, nq, &r, 1.0f);
    fill_normal(k, nk, &r, 1.0f);
    fill_normal(v, nk, &r, 1.0f);
    tensor_attention_forward(outa, att, q, k, v, c.B, c.T, c.NH, c.KVH, c.HS);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    memset(g2, 0, sizeof g2);
    tensor_attention_backward(g0, g1, g2, tt, wo, att, q, k, v, c.B, c.T, c.NH, c.KVH, c.HS);
    float *const in3[3] = {q, k, v};
    float *const gr3[3] = {g0, g1, g2};
    size_t       na[3] = {nq, nk, nk};
    fd_check("attention", fwd_attention, &c, in3, na, 3, gr3, nq, wo, 2e-3, verbose);
    /* Causality: the first position's output is exactly its own value row. */
    for (int i = 0; i < 4; i++)
        EXPECT(fabsf(outa[i] - v[i]) <= 1e-6f,
               "attention causality: out[%d] %.8g, expected its own value %.8g to 1e-6", i,
               (double)outa[i], (double)v[i]);

    /* logp + entropy with both upstream gradients. */
    c.N = 4;
    c.V = 11;
    int targets[4] = {0, 3, 10, 5};
    c.targets = targets;
    float logits[44], lse[4], lp[4], ent[4];
    fill_normal(logits, 44, &r, 2.0f);
    tensor_logp_forward(lp, ent, lse, logits, targets, 4, 11);
    memset(g0, 0, sizeof g0);
    tensor_logp_backward(g0, wo, wo + 4, logits, lse, ent, targets, 4, 11);
    float *const inl[1] = {logits};
    size_t       nlg = 44;
    fd_check("logp", fwd_logp, &c, inl, &nlg, 1, gr1, 8, wo, 2e-3, verbose);
    /* Worked example: uniform logits over V give logp -log V and entropy log V. */
    float zero[11] = {0}, l1, e1, s1;
    int   t0 = 2;
    tensor_logp_forward(&l1, &e1, &s1, zero, &t0, 1, 11);
    EXPECT(fabsf(l1 + logf(11.0f)) <= 1e-6f && fabsf(e1 - logf(11.0f)) <= 1e-6f,
           "uniform logits over 11: logp %g entropy %g, expected -%g and %g to 1e-6", (double)l1,
           (double)e1, (double)logf(11.0f), (double)logf(11.0f));
}

/* The streaming kernel for few rows against sgemm, and tensor_exp against exp. */
static void test_small_and_exp(bool verbose)
{
    Rng r;
    rng_seed(&r, 3);
    int    N = 5, C = 37, OC = 29;
    float *x = xmalloc(sizeof(float) * N * C), *w = xmalloc(sizeof(float) * OC * C);
    float *y1 = xmalloc(sizeof(float) * N * OC), *y2 = xmalloc(sizeof(float) * N * OC);
    fill_normal(x, (size_t)N * C, &r, 1.0f);
    fill_normal(w, (size_t)OC * C, &r, 1.0f);
    fill_normal(y1, (size_t)N * OC, &r, 1.0f);
    memcpy(y2, y1, sizeof(float) * N * OC);
    tensor_linear_forward_add(y1, x, w, N, C, OC);
    tensor_gemm_naive(false, true, N, OC, C, 1.0f, x, C, w, C, 1.0f, y2, OC);
    double worst = 0.0;
    for (int i = 0; i < N * OC; i++) EXPECT_CLOSE("linear_small add", y1[i], y2[i], 1e-5, &worst);
    tensor_linear_forward(y1, x, w, N, C, OC);
    tensor_gemm_naive(false, true, N, OC, C, 1.0f, x, C, w, C, 0.0f, y2, OC);
    for (int i = 0; i < N * OC; i++) EXPECT_CLOSE("linear_small", y1[i], y2[i], 1e-5, &worst);
    double werr = 0.0;
    for (float t = -87.0f; t <= 88.0f; t += 0.001953125f) {
        double want = exp((double)t), got = tensor_exp(t);
        werr = fmax(werr, fabs(got - want) / want);
    }
    EXPECT(werr <= 2e-7, "tensor_exp on [-87, 88]: max rel err %.3g, expected <= 2e-7", werr);
    if (verbose)
        printf("  linear small-rows vs naive: max err %.2e (tol 1e-5); tensor_exp max rel err "
               "%.2e (tol 2e-7)\n",
               worst, werr);
    free(x);
    free(w);
    free(y1);
    free(y2);
}

int tensor_selftest(bool verbose)
{
    test_gemm(verbose);
    test_small_and_exp(verbose);
    test_attention_paths(verbose);
    test_ops(verbose);
    return expect_end();
}
