/* kern: the decoding matmul over weights held in half precision (bfloat16
 * or IEEE half), for the few-row case where a step streams every weight once
 * and the time is the time to read them.
 *
 * A KernMat is one or more weight matrices w_p (rows_p, C) that share their
 * input, converted once (kern_mat_pack) into a layout made for the vector
 * units: blocks of 16 output rows, each stored column by column so that one
 * vector load holds one input column of 16 outputs. A product then needs no
 * horizontal sums: lane i of an accumulator is output row i of its block,
 * the input element is broadcast, and the weights are widened to fp32 in
 * registers and multiplied in fp32 (so the only error beyond fp32 rounding
 * is the weights' own rounding to 16 bits). Each part starts on a block
 * boundary (rows padded with zeros to a multiple of 16). BF16 blocks hold
 * columns in pairs, (16 rows x 2 columns) per 64 bytes, so that a 32-bit
 * lane holds both halves of a pair: shifting and masking widen them. F16
 * blocks hold one column per 32 bytes for the hardware conversion. Blocks
 * go in groups of 4 whose steps are interleaved (kern_int.h), so the kernel
 * reads a group of 64 outputs as one contiguous stream.
 *
 * Several parts fuse the matrices that read the same input into one threaded
 * pass (q, k and v of attention), and a SwiGLU pair (gate and up, blocks
 * interleaved) writes silu(gate) * up directly. kern_linear splits the
 * output blocks over the thread pool (common/base/par.h) and runs the best
 * kernel this CPU has, chosen once at run time (AVX-512, AVX2 with F16C, or
 * portable C), so one binary runs everywhere; RLHF_KERNEL=name forces one
 * (kern_int.h lists them).
 *
 * Accuracy: with u_h the unit roundoff of the weights (2^-8 for BF16, 2^-11
 * for F16 normals), each output y = sum_c w_c x_c comes out within
 * u_h * S + (C + 2) * 2^-24 * (1 + u_h) * S of the exact fp32-weight value,
 * S = sum_c |w_c x_c| (kern_test checks this bound).
 *
 * Ownership: a KernMat's data lives in memory the caller provides and owns
 * (kern_mat_bytes says how much). Threading: kern_linear uses the process's
 * pool; a KernMat is read-only after packing and may be shared. Errors:
 * kern_mat_pack refuses a value that does not fit the type (ERR_RANGE,
 * logged naming the matrix); misuse is a CHECK. Kernels never allocate. */
#ifndef RLHF_KERN_H
#define RLHF_KERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Element types of decode weights; the order is that of kern_type_names
 * (flag choices index it). */
typedef enum { KERN_F32 = 0, KERN_BF16 = 1, KERN_F16 = 2 } KernType;

/* "fp32", "bf16", "fp16", NULL-terminated: the names flags and logs use. */
extern const char *const kern_type_names[];

/* Output rows per block: one 512-bit vector of fp32 accumulators. */
#define KERN_BLOCK 16
#define KERN_MAX_PARTS 3

typedef struct {
    KernType  type;                       /* KERN_BF16 or KERN_F16 */
    int       C;                          /* input width */
    int       n_part;                     /* 1..KERN_MAX_PARTS matrices */
    int       rows[KERN_MAX_PARTS];       /* output rows of each part */
    int       block0[KERN_MAX_PARTS + 1]; /* first block of each part; [n_part] = all blocks */
    bool      is_swiglu;                  /* parts gate, up with blocks interleaved */
    size_t    block_elems;                /* 16-bit values per block */
    uint16_t *data;                       /* blocks * block_elems values, groups interleaved */
} KernMat;

/* Bytes the packed form of n_part matrices of rows[p] x C takes. */
size_t kern_mat_bytes(KernType t, int n_part, const int *rows, int C);

/* Packs w[p] (rows[p], C) row-major into m, with its data at mem (at least
 * kern_mat_bytes, 64-byte aligned for the fastest loads). With is_swiglu,
 * n_part is 2 and both parts have the same rows: kern_linear then writes
 * silu(w[0] x) * (w[1] x). Values are rounded to nearest, ties to even.
 * Returns 0, or ERR_RANGE (logged with name and the index) when a finite
 * value overflows the type (|w| >= 65520 for F16) or a value is not finite. */
int kern_mat_pack(KernMat *m, void *mem, KernType t, int n_part, const float *const *w,
                  const int *rows, int C, bool is_swiglu, const char *name);

/* What kern_linear does with the products y_p (N, rows[p]) = inp (N, C) @ w_p^T. */
typedef enum {
    KERN_OUT_STORE, /* outs[p] = y_p */
    KERN_OUT_ADD,   /* outs[p] += y_p (a residual) */
    KERN_OUT_SWIGLU /* outs[0] (N, rows[0]) = silu(y_0) * y_1, for a SwiGLU pair */
} KernOut;

/* The product above for any N (the weights are read once per 8 rows, so it
 * suits decoding and prefills of a few hundred rows alike). outs[p] are
 * row-major (N, rows[p]) buffers; inp is (N, C) row-major. */
void kern_linear(float *const *outs, const float *inp, const KernMat *w, int N, KernOut mode);

/* x rounded to type t and widened back: what a weight becomes when packed
 * (x itself for KERN_F32). */
float kern_round(KernType t, float x);

/* The name of the kernel kern_linear runs on this CPU ("avx512", ...). */
const char *kern_variant_name(void);

#endif
