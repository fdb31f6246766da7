#include "common/tensor.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/rng.h"

void tensor_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    CHECK(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tensor_gemm_naive(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int p = 0; p < K; p++) {
                float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            /* beta == 0 must ignore C, which may hold garbage, as BLAS does. */
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
    }
}

void tensor_linear_forward(float *out, const float *inp, const float *w, int N, int C, int OC)
{
    tensor_gemm(false, true, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
}

void tensor_linear_backward(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC)
{
    if (dinp) tensor_gemm(false, false, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    tensor_gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
}

void tensor_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                            float eps)
{
    for (int n = 0; n < N; n++) {
        const float *inp_n = inp + (size_t)n * C;
        float       *out_n = out + (size_t)n * C;
        double       ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)inp_n[c] * inp_n[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) out_n[c] = inp_n[c] * r * w[c];
    }
}

void tensor_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int N, int C)
{
    /* y_c = x_c r w_c with r = (mean x^2 + eps)^-1/2, so
     * dx_c = r (g_c w_c) - x_c r^3 / C * sum_k g_k w_k x_k. */
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float       *dx = dinp + (size_t)n * C;
        float        r = rstd[n];
        double       dot = 0.0;
        for (int c = 0; c < C; c++) {
            dot += (double)g[c] * w[c] * x[c];
            dw[c] += g[c] * x[c] * r;
        }
        float k = (float)(dot * r * r * r / C);
        for (int c = 0; c < C; c++) dx[c] += g[c] * w[c] * r - x[c] * k;
    }
}

static void rope_apply(float *x, const int *pos, int N, int NH, int HS, float theta, float sign)
{
    CHECK(HS % 2 == 0 && HS <= 1024);
    int   half = HS / 2;
    float cs[512], sn[512];
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < half; i++) {
            /* Angles in double: pos * freq reaches thousands of radians. */
            double angle = pos[n] * pow((double)theta, -2.0 * i / HS);
            cs[i] = (float)cos(angle);
            sn[i] = sign * (float)sin(angle);
        }
        for (int h = 0; h < NH; h++) {
            float *x_nh = x + ((size_t)n * NH + h) * HS;
            for (int i = 0; i < half; i++) {
                float x0 = x_nh[i], x1 = x_nh[i + half];
                x_nh[i] = x0 * cs[i] - x1 * sn[i];
                x_nh[i + half] = x0 * sn[i] + x1 * cs[i];
            }
        }
    }
}

void tensor_rope_forward(float *x, const int *pos, int N, int NH, int HS, float theta)
{
    rope_apply(x, pos, N, NH, HS, theta, 1.0f);
}

void tensor_rope_backward(float *dx, const int *pos, int N, int NH, int HS, float theta)
{
    /* A rotation's transpose is the rotation by the opposite angle. */
    rope_apply(dx, pos, N, NH, HS, theta, -1.0f);
}

void tensor_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void tensor_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + expf(-g));
        dup[i] += dout[i] * g * s;
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void tensor_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int KVH, int HS)
{
    CHECK(NH % KVH == 0);
    int   group = NH / KVH;
    int   qs = NH * HS, ks = KVH * HS; /* row strides of q and k/v */
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *q_bh = q + (size_t)b * T * qs + (size_t)h * HS;
            const float *k_bh = k + (size_t)b * T * ks + (size_t)(h / group) * HS;
            const float *v_bh = v + (size_t)b * T * ks + (size_t)(h / group) * HS;
            float       *att_bh = att + ((size_t)b * NH + h) * T * T;
            /* The full T x T product wastes the upper triangle but keeps the
             * work in one sgemm; the mask is applied in the softmax. */
            tensor_gemm(false, true, T, T, HS, scale, q_bh, qs, k_bh, ks, 0.0f, att_bh, T);
            for (int t = 0; t < T; t++) {
                float *row = att_bh + (size_t)t * T;
                float  mx = row[0];
                for (int j = 1; j <= t; j++) mx = row[j] > mx ? row[j] : mx;
                /* Max-subtraction keeps exp from overflowing. */
                double sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= t; j++) row[j] *= inv;
                for (int j = t + 1; j < T; j++) row[j] = 0.0f;
            }
            float *out_bh = out + (size_t)b * T * qs + (size_t)h * HS;
            tensor_gemm(false, false, T, HS, T, 1.0f, att_bh, T, v_bh, ks, 0.0f, out_bh, qs);
        }
    }
}

void tensor_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int KVH, int HS)
{
    int   group = NH / KVH;
    int   qs = NH * HS, ks = KVH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t       qo = (size_t)b * T * qs + (size_t)h * HS;
            size_t       ko = (size_t)b * T * ks + (size_t)(h / group) * HS;
            const float *att_bh = att + ((size_t)b * NH + h) * T * T;
            float       *dp = scratch;
            /* dP = dout V^T; dV += P^T dout. */
            tensor_gemm(false, true, T, T, HS, 1.0f, dout + qo, qs, v + ko, ks, 0.0f, dp, T);
            tensor_gemm(true, false, T, HS, T, 1.0f, att_bh, T, dout + qo, qs, 1.0f, dv + ko, ks);
            /* Softmax backward: dS = P * (dP - sum_j dP_j P_j); zero where masked. */
            for (int t = 0; t < T; t++) {
                const float *p = att_bh + (size_t)t * T;
                float       *d = dp + (size_t)t * T;
                double       dot = 0.0;
                for (int j = 0; j <= t; j++) dot += (double)d[j] * p[j];
                for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - (float)dot);
                for (int j = t + 1; j < T; j++) d[j] = 0.0f;
            }
            /* S = scale Q K^T: dQ += scale dS K; dK += scale dS^T Q. */
            tensor_gemm(false, false, T, HS, T, scale, dp, T, k + ko, ks, 1.0f, dq + qo, qs);
            tensor_gemm(true, false, T, HS, T, scale, dp, T, q + qo, qs, 1.0f, dk + ko, ks);
        }
    }
}

void tensor_logp_forward(float *logp, float *entropy, float *lse, const float *logits,
                         const int *targets, int N, int V)
{
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        float        mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        double sum = 0.0, sum_pz = 0.0;
        for (int i = 0; i < V; i++) {
            double e = exp((double)(z[i] - mx));
            sum += e;
            sum_pz += e * (z[i] - mx);
        }
        double l = log(sum); /* log-sum-exp minus mx */
        lse[n] = (float)(mx + l);
        if (logp) logp[n] = (float)((z[targets[n]] - mx) - l);
        /* H = lse - E_p[z], both taken relative to mx for precision. */
        if (entropy) entropy[n] = (float)(l - sum_pz / sum);
    }
}

void tensor_logp_backward(float *dlogits, const float *dlogp, const float *dentropy,
                          const float *logits, const float *lse, const float *entropy,
                          const int *targets, int N, int V)
{
    /* d logp_y / dz_j = [j = y] - p_j; dH/dz_j = -p_j (log p_j + H). */
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        float       *dz = dlogits + (size_t)n * V;
        float        gl = dlogp ? dlogp[n] : 0.0f;
        float        ge = dentropy ? dentropy[n] : 0.0f;
        float        H = ge != 0.0f ? entropy[n] : 0.0f;
        float        l = lse[n];
        if (gl == 0.0f && ge == 0.0f) continue;
        for (int i = 0; i < V; i++) {
            float lp = z[i] - l;
            float p = expf(lp);
            dz[i] += -gl * p - ge * p * (lp + H);
        }
        dz[targets[n]] += gl;
    }
}

float tensor_softmax_row(float *x, int V, float temperature)
{
    CHECK(temperature > 0.0f);
    float inv_t = 1.0f / temperature;
    float mx = x[0] * inv_t;
    for (int i = 1; i < V; i++) mx = x[i] * inv_t > mx ? x[i] * inv_t : mx;
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        x[i] = expf(x[i] * inv_t - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) x[i] *= inv;
    return mx + (float)log(sum);
}

/* ---- self-test ---------------------------------------------------------- */

static void fill_normal(float *x, size_t n, Rng *r, float std)
{
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
}

static int check_close(const char *what, double got, double want, double tol, double *worst)
{
    double err = fabs(got - want) / (fabs(want) > 1.0 ? fabs(want) : 1.0);
    if (err > *worst) *worst = err;
    if (err > tol) {
        fprintf(stderr, "tensor_selftest: %s: got %.8g want %.8g (err %.3g > tol %.3g)\n", what,
                got, want, err, tol);
        return 1;
    }
    return 0;
}

static int test_gemm(bool verbose)
{
    Rng r;
    rng_seed(&r, 1);
    int    M = 7, N = 5, K = 9, pad = 3;
    float *A = xmalloc(sizeof(float) * 20 * 20), *Bm = xmalloc(sizeof(float) * 20 * 20);
    float *C1 = xmalloc(sizeof(float) * 20 * 20), *C2 = xmalloc(sizeof(float) * 20 * 20);
    double worst = 0.0;
    int    fails = 0;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            fill_normal(A, 400, &r, 1.0f);
            fill_normal(Bm, 400, &r, 1.0f);
            fill_normal(C1, 400, &r, 1.0f);
            memcpy(C2, C1, sizeof(float) * 400);
            int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            tensor_gemm(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C1, ldc);
            tensor_gemm_naive(ta, tb, M, N, K, 0.7f, A, lda, Bm, ldb, 0.3f, C2, ldc);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    fails += check_close("gemm", C1[i * ldc + j], C2[i * ldc + j], 1e-5, &worst);
        }
    }
    if (verbose) printf("  gemm vs naive: max err %.2e (tol 1e-5)\n", worst);
    free(A);
    free(Bm);
    free(C1);
    free(C2);
    return fails;
}

/* Finite-difference check of one op: loss = sum(w_out * out(x)); compares the
 * analytic gradient of every input element with central differences in
 * float, a step of 1e-3 and a tolerance relative to max(1, |g|). */
typedef void (*FwdFn)(float *out, float *const *in, void *ctx);

static int fd_check(const char *name, FwdFn fwd, void *ctx, float *const *in, const size_t *in_n,
                    int n_in, float *const *grad, size_t out_n, const float *w_out, double tol,
                    bool verbose)
{
    float *out = xmalloc(sizeof(float) * out_n);
    double worst = 0.0;
    int    fails = 0;
    for (int a = 0; a < n_in; a++) {
        for (size_t i = 0; i < in_n[a]; i++) {
            float  saved = in[a][i], h = 1e-3f;
            double lp = 0.0, lm = 0.0;
            in[a][i] = saved + h;
            fwd(out, in, ctx);
            for (size_t o = 0; o < out_n; o++) lp += (double)w_out[o] * out[o];
            in[a][i] = saved - h;
            fwd(out, in, ctx);
            for (size_t o = 0; o < out_n; o++) lm += (double)w_out[o] * out[o];
            in[a][i] = saved;
            double num = (lp - lm) / (2.0 * h);
            if (check_close(name, grad[a][i], num, tol, &worst) && ++fails > 5) goto done;
        }
    }
done:
    if (verbose) printf("  %-10s fd max err %.2e (tol %.0e)\n", name, worst, tol);
    free(out);
    return fails;
}

typedef struct {
    int   N, C, OC, NH, KVH, HS, B, T, V;
    float eps;
    int  *pos, *targets;
    float *scratch;
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
    tensor_rope_forward(out, c->pos, c->N, c->NH, c->HS, 10000.0f);
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

static int test_ops(bool verbose)
{
    Rng r;
    rng_seed(&r, 7);
    int   fails = 0;
    OpCtx c = {.N = 6, .C = 8, .OC = 5, .eps = 1e-5f};
    float x[512], w[512], g0[512], g1[512], g2[512], wo[4096], big[4096];
    float *const in2[2] = {x, w};
    float *const gr2[2] = {g0, g1};

    fill_normal(x, 512, &r, 1.0f);
    fill_normal(w, 512, &r, 1.0f);
    fill_normal(wo, 4096, &r, 1.0f);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_linear_backward(g0, g1, wo, x, w, c.N, c.C, c.OC);
    size_t nl[2] = {(size_t)c.N * c.C, (size_t)c.OC * c.C};
    fails += fd_check("linear", fwd_linear, &c, in2, nl, 2, gr2, (size_t)c.N * c.OC, wo, 2e-3,
                      verbose);

    float rstd[64], outn[512];
    c.scratch = big;
    tensor_rmsnorm_forward(outn, rstd, x, w, c.N, c.C, c.eps);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_rmsnorm_backward(g0, g1, wo, x, w, rstd, c.N, c.C);
    size_t nr[2] = {(size_t)c.N * c.C, (size_t)c.C};
    fails += fd_check("rmsnorm", fwd_rmsnorm, &c, in2, nr, 2, gr2, (size_t)c.N * c.C, wo, 2e-3,
                      verbose);

    int pos[6] = {0, 1, 5, 17, 100, 3000};
    c.pos = pos;
    c.NH = 2;
    c.HS = 8;
    memcpy(g0, wo, sizeof(float) * 96);
    tensor_rope_backward(g0, pos, c.N, c.NH, c.HS, 10000.0f);
    float *const in1[1] = {x};
    float *const gr1[1] = {g0};
    size_t       nrope = 96;
    fails += fd_check("rope", fwd_rope, &c, in1, &nrope, 1, gr1, 96, wo, 2e-3, verbose);

    c.N = 40;
    fill_normal(x, 40, &r, 2.0f);
    memset(g0, 0, sizeof g0);
    memset(g1, 0, sizeof g1);
    tensor_swiglu_backward(g0, g1, wo, x, w, 40);
    size_t ns[2] = {40, 40};
    fails += fd_check("swiglu", fwd_swiglu, &c, in2, ns, 2, gr2, 40, wo, 2e-3, verbose);

    /* Attention with GQA: B 2, T 5, NH 4, KVH 2, HS 4. */
    c.B = 2;
    c.T = 5;
    c.NH = 4;
    c.KVH = 2;
    c.HS = 4;
    size_t nq = 2 * 5 * 4 * 4, nk = 2 * 5 * 2 * 4;
    float  q[160], k[80], v[80], att[200], outa[160], tt[25];
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
    fails += fd_check("attention", fwd_attention, &c, in3, na, 3, gr3, nq, wo, 2e-3, verbose);
    /* Causality: the first position's output is exactly its own value row. */
    for (int i = 0; i < 4; i++)
        if (fabsf(outa[i] - v[i]) > 1e-6f) fails++;

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
    fails += fd_check("logp", fwd_logp, &c, inl, &nlg, 1, gr1, 8, wo, 2e-3, verbose);
    /* Worked example: uniform logits over V give logp -log V and entropy log V. */
    float zero[11] = {0}, l1, e1, s1;
    int   t0 = 2;
    tensor_logp_forward(&l1, &e1, &s1, zero, &t0, 1, 11);
    if (fabsf(l1 + logf(11.0f)) > 1e-6f || fabsf(e1 - logf(11.0f)) > 1e-6f) {
        fprintf(stderr, "tensor_selftest: uniform logp %g entropy %g, want %g\n", l1, e1,
                logf(11.0f));
        fails++;
    }
    return fails;
}

int tensor_selftest(bool verbose)
{
    int fails = test_gemm(verbose);
    fails += test_ops(verbose);
    return fails ? 1 : 0;
}
