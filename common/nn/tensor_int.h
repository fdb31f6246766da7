/* tensor_int: the two implementations behind tensor_attention_forward and
 * tensor_attention_backward, private to tensor.c and tensor_test.c so the
 * test can compare them on both sides of the length threshold at which the
 * public kernels switch from one to the other. Same shapes and contracts as
 * the public kernels in tensor.h. */
#ifndef RLHF_TENSOR_INT_H
#define RLHF_TENSOR_INT_H

/* Per-head sgemm calls: the path for long sequences. */
void tensor_attention_forward_gemm(float *out, float *att, const float *q, const float *k,
                                   const float *v, int B, int T, int NH, int KVH, int HS);
void tensor_attention_backward_gemm(float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *att, const float *q,
                                    const float *k, const float *v, int B, int T, int NH, int KVH,
                                    int HS);

/* Plain loops, one task per (batch, kv head): the path for short sequences. */
void tensor_attention_forward_loop(float *out, float *att, const float *q, const float *k,
                                   const float *v, int B, int T, int NH, int KVH, int HS);
void tensor_attention_backward_loop(float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *att, const float *q,
                                    const float *k, const float *v, int B, int T, int NH, int KVH,
                                    int HS);

#endif
