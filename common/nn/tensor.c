#include "common/nn/tensor.h"
#include "common/nn/tensor_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/par.h"
#include "common/base/rng.h"
#include "common/nn/cpu.h"

/* Rows at or below this count take the weight-streaming kernel: with few
 * rows the product is bound by reading w, and sgemm's packing of w costs an
 * extra pass over it. */
#define SMALL_ROWS 16

/* out (N,OC) (+)= inp (N,C) @ w^T for N <= SMALL_ROWS: each weight row is read
 * once and dotted with every input row while it sits in L1. */
typedef struct {
    float       *out;
    const float *inp, *w;
    int          N, C, OC;
    bool         add;
} SmallCtx;

static RLHF_HOT void linear_small_range(void *p, size_t o0, size_t o1)
{
    const SmallCtx *s = p;
    const float    *inp = s->inp, *w = s->w;
    float          *out = s->out;
    int             N = s->N, C = s->C, OC = s->OC;
    bool            add = s->add;
    int             o = (int)o0;
    /* Four weight rows at a time: each input element loaded feeds four FMAs. */
    for (; o + 4 <= (int)o1; o += 4) {
        const float *w0 = w + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float        a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
            for (int c = 0; c < C; c++) {
                a0 += w0[c] * x[c];
                a1 += w1[c] * x[c];
                a2 += w2[c] * x[c];
                a3 += w3[c] * x[c];
            }
            float *y = out + (size_t)n * OC + o;
            if (add) {
                y[0] += a0;
                y[1] += a1;
                y[2] += a2;
                y[3] += a3;
            } else {
                y[0] = a0;
                y[1] = a1;
                y[2] = a2;
                y[3] = a3;
            }
        }
    }
    for (; o < (int)o1; o++) {
        const float *w_o = w + (size_t)o * C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float        acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int c = 0; c < C; c++) acc += w_o[c] * x[c];
            float *y = out + (size_t)n * OC + o;
            *y = add ? *y + acc : acc;
        }
    }
}

static void linear_small(float *out, const float *inp, const float *w, int N, int C, int OC,
                         bool add)
{
    SmallCtx s = {out, inp, w, N, C, OC, add};
    /* Worth two threads once w is past a few L2-sized blocks. Few rows mean
     * decoding, whose calls come in quick succession: the pool stays hot. */
    par_for_hot((size_t)OC, 2 * 65536 / (size_t)(C > 0 ? C : 1), linear_small_range, &s);
}

void tensor_linear_forward(float *out, const float *inp, const float *w, int N, int C, int OC)
{
    if (N <= SMALL_ROWS)
        linear_small(out, inp, w, N, C, OC, false);
    else
        tensor_gemm(false, true, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
}

void tensor_linear_forward_add(float *out, const float *inp, const float *w, int N, int C, int OC)
{
    if (N <= SMALL_ROWS)
        linear_small(out, inp, w, N, C, OC, true);
    else
        tensor_gemm(false, true, N, OC, C, 1.0f, inp, C, w, C, 1.0f, out, OC);
}

void tensor_linear_backward(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC)
{
    if (dinp) tensor_gemm(false, false, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) tensor_gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
}

typedef struct {
    float       *out, *rstd, *dinp, *dw;
    const float *inp, *w, *dout, *rstd_in;
    int          N, C;
    float        eps;
} NormCtx;

static RLHF_HOT void rmsnorm_fwd_range(void *p, size_t n0, size_t n1)
{
    const NormCtx *a = p;
    float         *out = a->out, *rstd = a->rstd;
    const float   *inp = a->inp, *w = a->w;
    int            C = a->C;
    float          eps = a->eps;
    for (int n = (int)n0; n < (int)n1; n++) {
        const float *inp_n = inp + (size_t)n * C;
        float       *out_n = out + (size_t)n * C;
        double       ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)inp_n[c] * inp_n[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) out_n[c] = inp_n[c] * r * w[c];
    }
}

void tensor_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                            float eps)
{
    NormCtx a = {.out = out, .rstd = rstd, .inp = inp, .w = w, .N = N, .C = C, .eps = eps};
    par_for((size_t)N, (size_t)(65536 / C + 1), rmsnorm_fwd_range, &a);
}

static RLHF_HOT void rmsnorm_bwd_rows(void *p, size_t n0, size_t n1)
{
    /* y_c = x_c r w_c with r = (mean x^2 + eps)^-1/2, so
     * dx_c = r (g_c w_c) - x_c r^3 / C * sum_k g_k w_k x_k. */
    const NormCtx *a = p;
    int            C = a->C;
    const float   *w = a->w;
    for (int n = (int)n0; n < (int)n1; n++) {
        const float *x = a->inp + (size_t)n * C;
        const float *g = a->dout + (size_t)n * C;
        float       *dx = a->dinp + (size_t)n * C;
        float        r = a->rstd_in[n];
        float        dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < C; c++) dot += g[c] * w[c] * x[c];
        float k = dot * r * r * r / (float)C;
        for (int c = 0; c < C; c++) dx[c] += g[c] * w[c] * r - x[c] * k;
    }
}

static RLHF_HOT void rmsnorm_bwd_cols(void *p, size_t c0, size_t c1)
{
    /* The weight gradient sums over rows; columns are split so no two
     * threads write the same dw[c]. */
    const NormCtx *a = p;
    int            C = a->C;
    for (int n = 0; n < a->N; n++) {
        const float *x = a->inp + (size_t)n * C;
        const float *g = a->dout + (size_t)n * C;
        float        r = a->rstd_in[n];
        for (size_t c = c0; c < c1; c++) a->dw[c] += g[c] * x[c] * r;
    }
}

void tensor_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int N, int C)
{
    NormCtx a = {
        .dinp = dinp, .dw = dw, .dout = dout, .inp = inp, .w = w, .rstd_in = rstd, .N = N, .C = C};
    par_for((size_t)N, (size_t)(65536 / C + 1), rmsnorm_bwd_rows, &a);
    if (dw) par_for((size_t)C, (size_t)(N > 64 ? 0 : C + 1), rmsnorm_bwd_cols, &a);
}

void tensor_rope_table(float *cos_tab, float *sin_tab, int max_pos, int HS, float theta)
{
    CHECK(HS % 2 == 0 && max_pos > 0);
    int half = HS / 2;
    for (int p = 0; p < max_pos; p++) {
        for (int i = 0; i < half; i++) {
            /* Angles in double: pos * freq reaches thousands of radians. */
            double angle = p * pow((double)theta, -2.0 * i / HS);
            cos_tab[(size_t)p * half + i] = (float)cos(angle);
            sin_tab[(size_t)p * half + i] = (float)sin(angle);
        }
    }
}

typedef struct {
    float       *x;
    const int   *pos;
    int          NH, HS;
    const float *cos_tab, *sin_tab;
    float        sign;
} RopeCtx;

static RLHF_HOT void rope_range(void *p, size_t n0, size_t n1)
{
    const RopeCtx *a = p;
    int            NH = a->NH, HS = a->HS, half = HS / 2;
    float         *x = a->x, sign = a->sign;
    const float   *cos_tab = a->cos_tab, *sin_tab = a->sin_tab;
    const int     *pos = a->pos;
    for (int n = (int)n0; n < (int)n1; n++) {
        const float *cs = cos_tab + (size_t)pos[n] * half, *sn = sin_tab + (size_t)pos[n] * half;
        for (int h = 0; h < NH; h++) {
            float *x_nh = x + ((size_t)n * NH + h) * HS;
            for (int i = 0; i < half; i++) {
                float x0 = x_nh[i], x1 = x_nh[i + half], s = sign * sn[i];
                x_nh[i] = x0 * cs[i] - x1 * s;
                x_nh[i + half] = x0 * s + x1 * cs[i];
            }
        }
    }
}

static void rope_apply(float *x, const int *pos, int N, int NH, int HS, const float *cos_tab,
                       const float *sin_tab, float sign)
{
    CHECK(HS % 2 == 0);
    RopeCtx a = {x, pos, NH, HS, cos_tab, sin_tab, sign};
    par_for((size_t)N, (size_t)(65536 / (NH * HS) + 1), rope_range, &a);
}

void tensor_rope_forward(float *x, const int *pos, int N, int NH, int HS, const float *cos_tab,
                         const float *sin_tab)
{
    rope_apply(x, pos, N, NH, HS, cos_tab, sin_tab, 1.0f);
}

void tensor_rope_backward(float *dx, const int *pos, int N, int NH, int HS, const float *cos_tab,
                          const float *sin_tab)
{
    /* A rotation's transpose is the rotation by the opposite angle. */
    rope_apply(dx, pos, N, NH, HS, cos_tab, sin_tab, -1.0f);
}

typedef struct {
    float       *out, *dgate, *dup;
    const float *gate, *up, *dout;
} SwigluCtx;

static RLHF_HOT void swiglu_fwd_range(void *p, size_t i0, size_t i1)
{
    const SwigluCtx *a = p;
    float           *out = a->out;
    const float     *gate = a->gate, *up = a->up;
#pragma omp simd
    for (size_t i = i0; i < i1; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + tensor_exp(-g)) * up[i];
    }
}

void tensor_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
    SwigluCtx a = {.out = out, .gate = gate, .up = up};
    par_for(n, 32768, swiglu_fwd_range, &a);
}

static RLHF_HOT void swiglu_bwd_range(void *p, size_t i0, size_t i1)
{
    const SwigluCtx *a = p;
    float           *dgate = a->dgate, *dup = a->dup;
    const float     *gate = a->gate, *up = a->up, *dout = a->dout;
#pragma omp simd
    for (size_t i = i0; i < i1; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + tensor_exp(-g));
        dup[i] += dout[i] * g * s;
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void tensor_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n)
{
    SwigluCtx a = {.dgate = dgate, .dup = dup, .gate = gate, .up = up, .dout = dout};
    par_for(n, 32768, swiglu_bwd_range, &a);
}

/* Causal softmax of each row t of a (T,T) block over columns 0..t, zero
 * beyond. Max-subtraction keeps exp from overflowing. */
typedef struct {
    float       *att, *d;
    const float *p;
    int          T;
} AttCtx;

static RLHF_HOT void causal_softmax_range(void *ctx, size_t r0, size_t r1)
{
    const AttCtx *a = ctx;
    float        *att = a->att;
    int           T = a->T;
    for (size_t rb = r0; rb < r1; rb++) {
        int    t = (int)(rb % (size_t)T);
        float *row = att + rb * (size_t)T;
        float  mx = row[0];
        for (int j = 1; j <= t; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= t; j++) {
            row[j] = tensor_exp(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++) row[j] *= inv;
        for (int j = t + 1; j < T; j++) row[j] = 0.0f;
    }
}

static void causal_softmax_rows(float *att, size_t n_blocks, int T)
{
    AttCtx a = {.att = att, .T = T};
    par_for(n_blocks * (size_t)T, (size_t)(65536 / T + 1), causal_softmax_range, &a);
}

static RLHF_HOT void softmax_bwd_range(void *ctx, size_t r0, size_t r1)
{
    /* dS = P * (dP - sum_j dP_j P_j); zero where masked. */
    const AttCtx *a = ctx;
    int           T = a->T;
    for (size_t rb = r0; rb < r1; rb++) {
        int          t = (int)(rb % (size_t)T);
        const float *p = a->p + rb * (size_t)T;
        float       *d = a->d + rb * (size_t)T;
        float        dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j <= t; j++) dot += d[j] * p[j];
        for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
        for (int j = t + 1; j < T; j++) d[j] = 0.0f;
    }
}

/* The arguments of both attention paths' tasks (forward: out, att, q, k,
 * v; backward: the gradients, scratch, dout, att_in, q, k, v). */
typedef struct {
    float       *out, *att, *dq, *dk, *dv, *scratch;
    const float *q, *k, *v, *dout, *att_in;
    int          T, NH, KVH, HS;
} AttHeadsCtx;

static AttHeadsCtx att_bwd_ctx(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int T, int NH, int KVH, int HS)
{
    return (AttHeadsCtx){.dq = dq,
                         .dk = dk,
                         .dv = dv,
                         .scratch = scratch,
                         .dout = dout,
                         .att_in = att,
                         .q = q,
                         .k = k,
                         .v = v,
                         .T = T,
                         .NH = NH,
                         .KVH = KVH,
                         .HS = HS};
}

/* The long-sequence attention: per (batch, head) sgemm calls, the heads
 * spread over the pool (each call single-threaded inside a worker), a
 * three-phase split so the softmax runs over all heads at once. The full
 * T x T products waste the upper triangle but keep the work in sgemm. */

/* Offsets of (b, h)'s query rows and its key/value rows. */
static void att_offsets(const AttHeadsCtx *a, size_t i, size_t *qo, size_t *ko, size_t *po)
{
    int b = (int)(i / (size_t)a->NH), h = (int)(i % (size_t)a->NH);
    *qo = (size_t)b * a->T * a->NH * a->HS + (size_t)h * a->HS;
    *ko = (size_t)b * a->T * a->KVH * a->HS + (size_t)(h / (a->NH / a->KVH)) * a->HS;
    *po = i * a->T * a->T;
}

static void att_scores_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, qs = a->NH * a->HS, ks = a->KVH * a->HS;
    for (size_t i = i0; i < i1; i++) {
        size_t qo, ko, po;
        att_offsets(a, i, &qo, &ko, &po);
        tensor_gemm(false, true, T, T, a->HS, 1.0f / sqrtf((float)a->HS), a->q + qo, qs, a->k + ko,
                    ks, 0.0f, a->att + po, T);
    }
}

static void att_values_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, qs = a->NH * a->HS, ks = a->KVH * a->HS;
    for (size_t i = i0; i < i1; i++) {
        size_t qo, ko, po;
        att_offsets(a, i, &qo, &ko, &po);
        tensor_gemm(false, false, T, a->HS, T, 1.0f, a->att + po, T, a->v + ko, ks, 0.0f,
                    a->out + qo, qs);
    }
}

void tensor_attention_forward_gemm(float *out, float *att, const float *q, const float *k,
                                   const float *v, int B, int T, int NH, int KVH, int HS)
{
    CHECK(NH % KVH == 0);
    AttHeadsCtx a = {
        .out = out, .att = att, .q = q, .k = k, .v = v, .T = T, .NH = NH, .KVH = KVH, .HS = HS};
    par_for((size_t)B * NH, 2, att_scores_range, &a);
    causal_softmax_rows(att, (size_t)B * NH, T);
    par_for((size_t)B * NH, 2, att_values_range, &a);
}

/* dv and dk are shared by the query heads of one kv head: a task owns a
 * kv head (b, g) and runs its group's heads in turn, so each has one writer. */
static void att_bwd_dp_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, qs = a->NH * a->HS, ks = a->KVH * a->HS, group = a->NH / a->KVH;
    for (size_t g = i0; g < i1; g++) {
        for (size_t i = g * group; i < (g + 1) * group; i++) {
            size_t qo, ko, po;
            att_offsets(a, i, &qo, &ko, &po);
            /* dP = dout V^T; dV += P^T dout. */
            tensor_gemm(false, true, T, T, a->HS, 1.0f, a->dout + qo, qs, a->v + ko, ks, 0.0f,
                        a->scratch + po, T);
            tensor_gemm(true, false, T, a->HS, T, 1.0f, a->att_in + po, T, a->dout + qo, qs, 1.0f,
                        a->dv + ko, ks);
        }
    }
}

static void att_bwd_dqk_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, qs = a->NH * a->HS, ks = a->KVH * a->HS, group = a->NH / a->KVH;
    float              scale = 1.0f / sqrtf((float)a->HS);
    for (size_t g = i0; g < i1; g++) {
        for (size_t i = g * group; i < (g + 1) * group; i++) {
            size_t qo, ko, po;
            att_offsets(a, i, &qo, &ko, &po);
            /* S = scale Q K^T: dQ += scale dS K; dK += scale dS^T Q. */
            tensor_gemm(false, false, T, a->HS, T, scale, a->scratch + po, T, a->k + ko, ks, 1.0f,
                        a->dq + qo, qs);
            tensor_gemm(true, false, T, a->HS, T, scale, a->scratch + po, T, a->q + qo, qs, 1.0f,
                        a->dk + ko, ks);
        }
    }
}

void tensor_attention_backward_gemm(float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *att, const float *q,
                                    const float *k, const float *v, int B, int T, int NH, int KVH,
                                    int HS)
{
    AttHeadsCtx a = att_bwd_ctx(dq, dk, dv, scratch, dout, att, q, k, v, T, NH, KVH, HS);
    par_for((size_t)B * KVH, 2, att_bwd_dp_range, &a);
    AttCtx sb = {.d = scratch, .p = att, .T = T};
    par_for((size_t)B * NH * T, (size_t)(65536 / T + 1), softmax_bwd_range, &sb);
    par_for((size_t)B * KVH, 2, att_bwd_dqk_range, &a);
}

/* Short sequences: per-head sgemm calls cost more in overhead than in
 * arithmetic, so loops over (b, kv head) tasks run instead, each task
 * owning every query head of its group so dk and dv have one writer.
 *
 * Every product runs as blocks of VEC_F lanes with the block's sums held
 * in registers: a score row is q_t against the keys stored transposed (so
 * the lanes run over key positions), a weighted sum of rows (P V, dS K,
 * P^T dout, dS^T Q) runs its lanes over the head's channels. */
#define ATT_LOOP_MAX_T 64
#define ATT_TP(T) (((T) + VEC_F - 1) / VEC_F * VEC_F)

/* mt (HS, TP) = the T rows of m (row stride ld) transposed, columns T..TP zero. */
static void att_transpose(float *mt, const float *m, int ld, int T, int HS)
{
    int TP = ATT_TP(T);
    for (int c = 0; c < HS; c++) {
        for (int j = 0; j < T; j++) mt[(size_t)c * TP + j] = m[(size_t)j * ld + c];
        for (int j = T; j < TP; j++) mt[(size_t)c * TP + j] = 0.0f;
    }
}

/* dst[j] = scale * sum_c a[c] mt[c][j] for j < n rounded up to VEC_F (mt's
 * row stride TP >= that). */
static inline void att_row_dot(float *dst, const float *a, const float *mt, int TP, int n, int HS,
                               float scale)
{
    for (int j = 0; j < n; j += VEC_F) {
        VecF acc = {0};
        for (int c = 0; c < HS; c++) acc += a[c] * *(const VecF *)(mt + (size_t)c * TP + j);
        *(VecF *)(dst + j) = scale * acc;
    }
}

/* out[c] += sum_{i in [i0, i1)} wt[i * ws] m[i * ld + c] for c < HS. */
static inline void att_rows_sum(float *out, const float *wt, int ws, const float *m, int ld, int i0,
                                int i1, int HS)
{
    int c = 0;
    for (; c + VEC_F <= HS; c += VEC_F) {
        VecF acc = *(const VecF *)(out + c);
        for (int i = i0; i < i1; i++)
            acc += wt[(size_t)i * ws] * *(const VecF *)(m + (size_t)i * ld + c);
        *(VecF *)(out + c) = acc;
    }
    for (; c < HS; c++) {
        float sum = 0.0f;
        for (int i = i0; i < i1; i++) sum += wt[(size_t)i * ws] * m[(size_t)i * ld + c];
        out[c] += sum;
    }
}

/* row[0..n) = softmax(s[0..n)), row[n..T) = 0. */
static inline void att_softmax_row(float *row, const float *s, int n, int T)
{
    float mx = s[0], sum = 0.0f;
    for (int j = 1; j < n; j++) mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        row[j] = tensor_exp(s[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    for (int j = n; j < T; j++) row[j] = 0.0f;
}

static RLHF_HOT void att_loop_fwd_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, NH = a->NH, KVH = a->KVH, HS = a->HS, group = NH / KVH;
    int                qs = NH * HS, ks = KVH * HS, TP = ATT_TP(T);
    float              scale = 1.0f / sqrtf((float)HS);
    float             *kt = xmalloc(sizeof(float) * (size_t)(HS + 1) * TP), *srow = kt + HS * TP;
    for (size_t i = i0; i < i1; i++) {
        int          b = (int)(i / (size_t)KVH), g = (int)(i % (size_t)KVH);
        const float *v_b = a->v + (size_t)b * T * ks + (size_t)g * HS;
        att_transpose(kt, a->k + (size_t)b * T * ks + (size_t)g * HS, ks, T, HS);
        for (int h = g * group; h < (g + 1) * group; h++) {
            float *att_bh = a->att + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                size_t qo = ((size_t)b * T + t) * qs + (size_t)h * HS;
                float *row = att_bh + (size_t)t * T;
                att_row_dot(srow, a->q + qo, kt, TP, t + 1, HS, scale);
                att_softmax_row(row, srow, t + 1, T);
                float *o = a->out + qo;
                for (int c = 0; c < HS; c++) o[c] = 0.0f;
                att_rows_sum(o, row, 1, v_b, ks, 0, t + 1, HS);
            }
        }
    }
    free(kt);
}

/* Per head, two passes: over query rows t (dP = dout V^T by the transposed
 * V, the softmax backward into dS, dQ += scale dS K), then over key rows j
 * (dV += P^T dout, dK += scale dS^T Q: column j of P and dS weighting the
 * rows t >= j). */
static RLHF_HOT void att_loop_bwd_range(void *ctx, size_t i0, size_t i1)
{
    const AttHeadsCtx *a = ctx;
    int                T = a->T, NH = a->NH, KVH = a->KVH, HS = a->HS, group = NH / KVH;
    int                qs = NH * HS, ks = KVH * HS, TP = ATT_TP(T);
    float              scale = 1.0f / sqrtf((float)HS);
    float             *vt = xmalloc(sizeof(float) * (size_t)(HS + 1) * TP), *drow = vt + HS * TP;
    for (size_t i = i0; i < i1; i++) {
        int          b = (int)(i / (size_t)KVH), g = (int)(i % (size_t)KVH);
        size_t       kb = (size_t)b * T * ks + (size_t)g * HS;
        const float *k_b = a->k + kb;
        att_transpose(vt, a->v + kb, ks, T, HS);
        for (int h = g * group; h < (g + 1) * group; h++) {
            size_t       qb = (size_t)b * T * qs + (size_t)h * HS;
            const float *p = a->att_in + ((size_t)b * NH + h) * T * T;
            float       *ds = a->scratch + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                const float *p_t = p + (size_t)t * T;
                float       *ds_t = ds + (size_t)t * T, dot = 0.0f;
                att_row_dot(drow, a->dout + qb + (size_t)t * qs, vt, TP, t + 1, HS, 1.0f);
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j <= t; j++) dot += drow[j] * p_t[j];
#pragma omp simd
                for (int j = 0; j <= t; j++) ds_t[j] = p_t[j] * (drow[j] - dot) * scale;
                att_rows_sum(a->dq + qb + (size_t)t * qs, ds_t, 1, k_b, ks, 0, t + 1, HS);
            }
            for (int j = 0; j < T; j++) {
                att_rows_sum(a->dv + kb + (size_t)j * ks, p + j, T, a->dout + qb, qs, j, T, HS);
                att_rows_sum(a->dk + kb + (size_t)j * ks, ds + j, T, a->q + qb, qs, j, T, HS);
            }
        }
    }
    free(vt);
}

void tensor_attention_forward_loop(float *out, float *att, const float *q, const float *k,
                                   const float *v, int B, int T, int NH, int KVH, int HS)
{
    AttHeadsCtx a = {
        .out = out, .att = att, .q = q, .k = k, .v = v, .T = T, .NH = NH, .KVH = KVH, .HS = HS};
    par_for((size_t)B * KVH, 2, att_loop_fwd_range, &a);
}

void tensor_attention_backward_loop(float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *att, const float *q,
                                    const float *k, const float *v, int B, int T, int NH, int KVH,
                                    int HS)
{
    AttHeadsCtx a = att_bwd_ctx(dq, dk, dv, scratch, dout, att, q, k, v, T, NH, KVH, HS);
    par_for((size_t)B * KVH, 2, att_loop_bwd_range, &a);
}

void tensor_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int KVH, int HS)
{
    CHECK(NH % KVH == 0);
    if (T > ATT_LOOP_MAX_T)
        tensor_attention_forward_gemm(out, att, q, k, v, B, T, NH, KVH, HS);
    else
        tensor_attention_forward_loop(out, att, q, k, v, B, T, NH, KVH, HS);
}

void tensor_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int KVH, int HS)
{
    if (T > ATT_LOOP_MAX_T)
        tensor_attention_backward_gemm(dq, dk, dv, scratch, dout, att, q, k, v, B, T, NH, KVH, HS);
    else
        tensor_attention_backward_loop(dq, dk, dv, scratch, dout, att, q, k, v, B, T, NH, KVH, HS);
}

typedef struct {
    float       *logp, *entropy, *lse, *dlogits;
    const float *logits, *dlogp, *dentropy, *lse_in, *entropy_in;
    const int   *targets;
    int          V;
} LogpCtx;

static RLHF_HOT void logp_fwd_range(void *p, size_t n0, size_t n1)
{
    const LogpCtx *a = p;
    float         *logp = a->logp, *entropy = a->entropy, *lse = a->lse;
    const float   *logits = a->logits;
    const int     *targets = a->targets;
    int            V = a->V;
    for (int n = (int)n0; n < (int)n1; n++) {
        const float *z = logits + (size_t)n * V;
        float        mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        float sum = 0.0f, sum_pz = 0.0f;
#pragma omp simd reduction(+ : sum, sum_pz)
        for (int i = 0; i < V; i++) {
            float e = tensor_exp(z[i] - mx);
            sum += e;
            sum_pz += e * (z[i] - mx);
        }
        float l = logf(sum); /* log-sum-exp minus mx */
        lse[n] = mx + l;
        if (logp) logp[n] = (z[targets[n]] - mx) - l;
        /* H = lse - E_p[z], both taken relative to mx for precision. */
        if (entropy) entropy[n] = l - sum_pz / sum;
    }
}

void tensor_logp_forward(float *logp, float *entropy, float *lse, const float *logits,
                         const int *targets, int N, int V)
{
    LogpCtx a = {
        .logp = logp, .entropy = entropy, .lse = lse, .logits = logits, .targets = targets, .V = V};
    par_for((size_t)N, (size_t)(65536 / V + 1), logp_fwd_range, &a);
}

static RLHF_HOT void logp_bwd_range(void *ctx, size_t n0, size_t n1)
{
    /* d logp_y / dz_j = [j = y] - p_j; dH/dz_j = -p_j (log p_j + H). */
    const LogpCtx *a = ctx;
    float         *dlogits = a->dlogits;
    const float   *dlogp = a->dlogp, *dentropy = a->dentropy, *logits = a->logits;
    const float   *lse = a->lse_in, *entropy = a->entropy_in;
    const int     *targets = a->targets;
    int            V = a->V;
    for (int n = (int)n0; n < (int)n1; n++) {
        const float *z = logits + (size_t)n * V;
        float       *dz = dlogits + (size_t)n * V;
        float        gl = dlogp ? dlogp[n] : 0.0f;
        float        ge = dentropy ? dentropy[n] : 0.0f;
        float        H = ge != 0.0f ? entropy[n] : 0.0f;
        float        l = lse[n];
        if (gl == 0.0f && ge == 0.0f) continue;
#pragma omp simd
        for (int i = 0; i < V; i++) {
            float lp = z[i] - l;
            float p = tensor_exp(lp);
            dz[i] += -gl * p - ge * p * (lp + H);
        }
        dz[targets[n]] += gl;
    }
}

void tensor_logp_backward(float *dlogits, const float *dlogp, const float *dentropy,
                          const float *logits, const float *lse, const float *entropy,
                          const int *targets, int N, int V)
{
    LogpCtx a = {.dlogits = dlogits,
                 .dlogp = dlogp,
                 .dentropy = dentropy,
                 .logits = logits,
                 .lse_in = lse,
                 .entropy_in = entropy,
                 .targets = targets,
                 .V = V};
    par_for((size_t)N, (size_t)(65536 / V + 1), logp_bwd_range, &a);
}

RLHF_HOT float tensor_softmax_row(float *x, int V, float temperature)
{
    CHECK(temperature > 0.0f);
    float inv_t = 1.0f / temperature;
    float mx = x[0] * inv_t;
    for (int i = 1; i < V; i++) mx = x[i] * inv_t > mx ? x[i] * inv_t : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) {
        x[i] = tensor_exp(x[i] * inv_t - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) x[i] *= inv;
    return mx + (float)log(sum);
}
