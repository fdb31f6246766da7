/* kern_int: the kernel variants behind kern_linear, private to the kern_*.c
 * files, their test (which calls every variant the CPU supports, not only
 * the one kern_linear picks) and the kernel benchmark.
 *
 * A variant computes blocks for every row of a job, a group of up to
 * KERN_GROUP blocks and KERN_TILE_ROWS rows per pass over C; the shared
 * epilogue (kern_epilogue) turns the accumulated block values into outputs,
 * so variants differ only in the loop over C.
 *
 * The packed layout: blocks go in groups of KERN_GROUP (the last group may
 * be smaller), and inside a group the blocks' steps (a column pair of 16
 * rows for BF16, 64 bytes; a column for F16, 32 bytes) are interleaved, so a
 * pass over a whole group reads one contiguous stream. */
#ifndef RLHF_KERN_INT_H
#define RLHF_KERN_INT_H

#include <stdbool.h>

#include "common/nn/kern.h"

/* Blocks one pass over C computes at most (4 x 16 outputs). */
#define KERN_GROUP 4
/* Rows one pass over C computes at most: the epilogue buffer's height. */
#define KERN_TILE_ROWS 4

/* Steps of a group the vector kernels prefetch ahead (4 KiB for BF16). */
#define KERN_PREFETCH 16

/* Steps over C of a block, and 16-bit values per step. */
static inline int kern_steps(const KernMat *m)
{
    return m->type == KERN_BF16 ? (m->C + 1) / 2 : m->C;
}

static inline int kern_step_elems(const KernMat *m)
{
    return m->type == KERN_BF16 ? 2 * KERN_BLOCK : KERN_BLOCK;
}

static inline int kern_blocks(const KernMat *m)
{
    return m->block0[m->n_part];
}

/* The first value of block blk; *stride is the distance from one of its
 * steps to the next (the steps of its group's blocks sit in between), and
 * block blk + 1 of the same group starts kern_step_elems later. */
static inline uint16_t *kern_block_at(const KernMat *m, int blk, size_t *stride)
{
    int g0 = blk / KERN_GROUP * KERN_GROUP, n = kern_blocks(m) - g0;
    *stride = (size_t)(n < KERN_GROUP ? n : KERN_GROUP) * (size_t)kern_step_elems(m);
    return m->data + (size_t)g0 * m->block_elems + (size_t)(blk - g0) * kern_step_elems(m);
}

/* The end of the piece of [blk, b1) that lies in blk's group. */
static inline int kern_piece_end(int blk, int b1)
{
    int ge = (blk / KERN_GROUP + 1) * KERN_GROUP;
    return ge < b1 ? ge : b1;
}

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
 * stack (KERN_TILE_ROWS x C/2 pairs); wider inputs take the AVX-512 kernel. */
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
