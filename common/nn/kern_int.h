/* kern_int: the kernel variants behind kern_linear, private to the kern_*.c
 * files, their test (which calls every variant the CPU supports, not only
 * the one kern_linear picks) and the kernel benchmark.
 *
 * A variant computes whole groups of up to KERN_GROUP blocks for every row
 * of a job; the shared epilogue (kern_epilogue) turns the accumulated block
 * values into outputs, so variants differ only in the loop over C. */
#ifndef RLHF_KERN_INT_H
#define RLHF_KERN_INT_H

#include <stdbool.h>

#include "common/nn/kern.h"

/* Blocks one pass over C computes at most (4 x 16 outputs). */
#define KERN_GROUP 4
/* Rows one pass over C computes at most: the epilogue buffer's height. */
#define KERN_MAX_TILE_ROWS 8

typedef struct {
    float *const  *outs;
    const float   *inp; /* (N, C) */
    const KernMat *w;
    int            N;
    KernOut        mode;
} KernJob;

/* res (nt, nb, 16): the block sums of rows n0..n0+nt-1 and blocks
 * blk..blk+nb-1, written to the outputs as the job's mode says. */
void kern_epilogue(const KernJob *j, int blk, int n0, int nt, int nb, const float *res);

/* Blocks [b0, b1) of the job, every row (b0, b1 multiples of 2 in SwiGLU
 * mode, where a pair is never split). */
typedef void (*KernRangeFn)(const KernJob *j, int b0, int b1);

typedef struct {
    const char *name;
    bool (*is_supported)(void); /* whether this CPU (and OS) runs it */
    KernRangeFn bf16, f16;
    bool        is_bf16_input; /* BF16 products round the input to bf16 too */
} KernVariant;

/* Best first; the last is portable C and always supported. */
extern const KernVariant kern_variants[];
extern const int         kern_n_variants;

/* kern_linear with a given variant (threaded the same way). */
void kern_linear_variant(const KernVariant *v, float *const *outs, const float *inp,
                         const KernMat *w, int N, KernOut mode);
/* The variant kern_linear uses. */
const KernVariant *kern_variant(void);
/* Makes kern_linear use v from now on (tests and benchmarks; not while
 * another thread decodes). v must be supported. */
void kern_set_variant(const KernVariant *v);
/* The variant named name, or NULL. */
const KernVariant *kern_variant_by_name(const char *name);

/* Input width up to which the AVX512_BF16 kernel converts rows on its
 * stack (8 rows x C/2 pairs); wider inputs take the AVX-512 kernel. */
#define KERN_BF16DOT_MAX_C 8192

/* The variants, one file each (kern_avx512bf16.c, kern_avx512.c,
 * kern_avx2.c, kern.c). */
bool kern_avx512bf16_supported(void);
void kern_avx512bf16_bf16(const KernJob *j, int b0, int b1);
bool kern_avx512_supported(void);
void kern_avx512_bf16(const KernJob *j, int b0, int b1);
void kern_avx512_f16(const KernJob *j, int b0, int b1);
bool kern_avx2_supported(void);
void kern_avx2_bf16(const KernJob *j, int b0, int b1);
void kern_avx2_f16(const KernJob *j, int b0, int b1);

#endif
