/* tensor: the numeric kernels of the model, over flat row-major float
 * buffers, each forward next to its backward.
 *
 * Legend for every shape comment in the codebase:
 *   B batch, T sequence, C channels, V vocab, L layers, NH heads,
 *   KVH key/value heads, HS head size, H MLP hidden width, OC output
 *   channels, N rows (usually B*T).
 *
 * Argument order: forward (outputs, values saved for backward, inputs,
 * parameters, sizes); backward (input gradients, parameter gradients,
 * upstream gradient, saved tensors, sizes). Backward kernels ACCUMULATE into
 * every gradient they write (+=); zeroing is the caller's step. Kernels never
 * allocate: scratch comes from the caller. Misuse is a CHECK. Threading:
 * kernels are reentrant and split their work over the par pool. */
#ifndef RLHF_TENSOR_H
#define RLHF_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

/* The one matrix product of the codebase, row-major:
 *   C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
 * op(A) = A (M,K) with row stride lda, or A^T where A is stored (K,M) with
 * stride lda when trans_a; likewise B is (K,N) stride ldb, or stored (N,K)
 * when trans_b. ldc is C's row stride. Strides allow strided head views. */
void tensor_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Threads of one tensor_gemm. OpenBLAS itself runs single-threaded (its
 * idle threads spin in sched_yield and took a core from the pool's kernels
 * between products); a product of at least 2^18 multiply-adds is split
 * into one sgemm per pool thread over disjoint rows (or columns) of C, so
 * the split changes no element's summation. A call made inside a pool task
 * or while the pool is busy runs whole in its caller. n = 1 makes every
 * product serial, process-wide: a process that runs several products at
 * once on threads of its own (the reward model's streams) sets it, so the
 * products never wait on each other; any other n means the pool. */
void tensor_set_blas_threads(int n);
int  tensor_blas_threads(void);
/* The name of the OpenBLAS kernels this process runs (e.g. "SkylakeX"). */
const char *tensor_blas_kernels(void);
/* The $OPENBLAS_CORETYPE worth asking for on this CPU when OpenBLAS runs
 * kernels `corename`, or NULL when those are the best it has: "SKYLAKEX"
 * (or "COOPERLAKE" with AVX512-BF16) on an AVX-512 CPU that OpenBLAS took
 * for an AVX2-or-older model (logged by the first product). */
const char *tensor_blas_better_kernels(const char *corename);
/* Whether `corename` names kernels older than AVX2 ("Prescott", ...): on a
 * CPU that has better ones, a CPU the library does not know, and the
 * program re-executes itself with them before main (gemm.c). */
bool tensor_blas_kernels_generic(const char *corename);
/* The same contract with plain loops in double, for tests. */
void tensor_gemm_naive(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Linear layer without bias: out (N,OC) = inp (N,C) @ w^T, w (OC,C). For
 * few rows (decoding) a weight-streaming kernel reads w once across all rows
 * and splits OC over threads; otherwise one sgemm. */
void tensor_linear_forward(float *out, const float *inp, const float *w, int N, int C, int OC);
/* The same product added to out: out (N,OC) += inp (N,C) @ w^T. */
void tensor_linear_forward_add(float *out, const float *inp, const float *w, int N, int C, int OC);
/* dinp (N,C) += dout @ w; dw (OC,C) += dout^T @ inp; either skipped when NULL. */
void tensor_linear_backward(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC);

/* RMSNorm: out (N,C) = inp * rstd * w, rstd (N) = 1/sqrt(mean(inp^2) + eps). */
void tensor_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                            float eps);
/* dinp (N,C) += the input gradient; dw (C) += the gain gradient, skipped when NULL. */
void tensor_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int N, int C);

/* Rotary position embedding in place on x (N,NH,HS), row n at position
 * pos[n], rotating pairs (i, i+HS/2) by angle pos * theta^(-2i/HS) (the
 * Hugging Face Llama "rotate half" layout). The angles come from tables
 * cos_tab, sin_tab (max_pos, HS/2) made once by tensor_rope_table; every
 * pos[n] must be below max_pos. Backward rotates the gradient back by the
 * same angle, in place. */
void tensor_rope_table(float *cos_tab, float *sin_tab, int max_pos, int HS, float theta);
void tensor_rope_forward(float *x, const int *pos, int N, int NH, int HS, const float *cos_tab,
                         const float *sin_tab);
void tensor_rope_backward(float *dx, const int *pos, int N, int NH, int HS, const float *cos_tab,
                          const float *sin_tab);

/* SwiGLU gate: out (n) = silu(gate) * up, elementwise over n values. */
void tensor_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void tensor_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n);

/* Causal grouped-query attention, scale 1/sqrt(HS).
 *   q (B,T,NH,HS), k v (B,T,KVH,HS); query head h reads kv head h/(NH/KVH)
 *   att (B,NH,T,T) saved probabilities (zero above the diagonal)
 *   out (B,T,NH,HS) */
void tensor_attention_forward(float *out, float *att, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int KVH, int HS);
/* scratch (B,NH,T,T) floats. */
void tensor_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int KVH, int HS);

/* Per row of logits (N,V): logp (N) = log softmax(logits)[targets], entropy
 * (N) of the softmax, lse (N) the log-sum-exp saved for backward. */
void tensor_logp_forward(float *logp, float *entropy, float *lse, const float *logits,
                         const int *targets, int N, int V);
/* dlogits (N,V) += d(dlogp*logp + dentropy*entropy)/dlogits; dlogp or
 * dentropy may be NULL (zero). */
void tensor_logp_backward(float *dlogits, const float *dlogp, const float *dentropy,
                          const float *logits, const float *lse, const float *entropy,
                          const int *targets, int N, int V);

/* e^x in float with a relative error below 2e-7 for x in [-87, 88] (inputs
 * are clamped to that range), written without branches or calls so loops
 * over it vectorise: the exponentials of softmax and SiLU dominate the
 * non-matmul time otherwise. */
static inline float tensor_exp(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* e^x = 2^k e^r with k = round(x / ln 2) and |r| <= ln(2)/2; ln 2 is split
     * in a high part exact in float and a low part, so r is accurate. Adding
     * and subtracting 1.5 * 2^23 rounds to the nearest integer (|x / ln 2| <
     * 2^22) with plain additions, which vectorise; floorf does not unless
     * floating-point traps are off (-fno-trapping-math). */
    float k = (x * 1.44269504089f + 12582912.0f) - 12582912.0f;
    float r = x - k * 0.693145752f - k * 1.42860682e-6f;
    /* Taylor series to r^7: the next term is below 1e-8 on |r| <= 0.347. */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int   i;
        float f;
    } two_k = {.i = ((int)k + 127) << 23};
    return p * two_k.f;
}

/* Softmax of one row in place at the given temperature (> 0), with
 * max-subtraction; returns the log-sum-exp of logits/temperature. */
float tensor_softmax_row(float *x, int V, float temperature);

#endif
