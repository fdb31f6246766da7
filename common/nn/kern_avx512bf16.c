/* kern_avx512bf16: the BF16 product with the AVX512_BF16 dot instruction
 * (vdpbf16ps: 32 multiply-adds of bf16 pairs into 16 fp32 sums), for CPUs
 * that have it (kern_int.h). It multiplies bf16 by bf16, so the input rows
 * are rounded to bf16 too (another 2^-8 relative error per element, and
 * values below 2^-126 count as zero): twice the arithmetic rate of widening
 * the weights, which pays where the product is bound by arithmetic rather
 * than by reading the weights (several rows at once, prefills). F16 weights
 * use the AVX-512 kernel.
 *
 * The packed BF16 layout is already what the instruction wants: a 32-bit
 * lane holds columns (2c, 2c+1) of one output row. Each pass converts its
 * rows of the input to bf16 pairs once (vcvtne2ps2bf16 into a stack
 * buffer) and broadcasts one pair per row and column pair. */
#include "common/nn/kern_int.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include "common/nn/cpu.h"
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define KBF __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define INL __attribute__((always_inline)) inline

bool kern_avx512bf16_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           cpu_has_avx512bf16();
}

/* xb (nt, C2p) 32-bit bf16 pairs of rows n0.. of the input, the odd
 * column of an odd C paired with zero. */
static KBF void convert_rows(const KernJob *j, int n0, int nt, uint32_t *xb, int C2p)
{
    int C = j->w->C;
    for (int n = 0; n < nt; n++) {
        const float *x = j->inp + (size_t)(n0 + n) * C;
        uint32_t    *d = xb + (size_t)n * C2p;
        int          c = 0;
        for (; c + 32 <= C; c += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c));
            _mm512_storeu_si512(d + c / 2, (__m512i)v);
        }
        if (c < C) { /* the rest, through a zero-padded copy */
            float tail[32] __attribute__((aligned(64)));
            memset(tail, 0, sizeof tail);
            memcpy(tail, x + c, (size_t)(C - c) * sizeof(float));
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_load_ps(tail + 16), _mm512_load_ps(tail));
            uint32_t w[16] __attribute__((aligned(64)));
            _mm512_store_si512(w, (__m512i)v);
            memcpy(d + c / 2, w, (size_t)(C2p - c / 2) * sizeof(uint32_t));
        }
    }
}

static KBF INL void tile(const KernJob *j, int blk, const uint32_t *xb, int C2p, const int nt,
                         const int ob, float *res, int nb, int b_off)
{
    size_t          stride;
    const uint32_t *wp = (const uint32_t *)kern_block_at(j->w, blk + b_off, &stride);
    __m512          acc[KERN_TILE_ROWS][KERN_GROUP];
    stride /= 2; /* in 32-bit pairs */
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) acc[n][b] = _mm512_setzero_ps();
    for (int c2 = 0; c2 < C2p; c2++) {
        const uint32_t *step = wp + (size_t)c2 * stride;
        __m512bh        wv[KERN_GROUP];
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            _mm_prefetch((const char *)(step + KERN_PREFETCH * stride + b * KERN_BLOCK),
                         _MM_HINT_T0);
            wv[b] = (__m512bh)_mm512_loadu_si512(step + b * KERN_BLOCK);
        }
#pragma GCC unroll 4
        for (int n = 0; n < nt; n++) {
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xb[(size_t)n * C2p + c2]);
#pragma GCC unroll 4
            for (int b = 0; b < ob; b++) acc[n][b] = _mm512_dpbf16_ps(acc[n][b], wv[b], xv);
        }
    }
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++)
            _mm512_storeu_ps(res + ((size_t)n * nb + b_off + b) * KERN_BLOCK, acc[n][b]);
}

#define ROWS(NT)                                                                                   \
    case NT:                                                                                       \
        if (nb == KERN_GROUP)                                                                      \
            tile(j, g, xb, C2p, NT, KERN_GROUP, res, nb, 0);                                       \
        else                                                                                       \
            for (int b = 0; b < nb; b++) tile(j, g, xb, C2p, NT, 1, res, nb, b);                   \
        break

KBF void kern_avx512bf16_bf16(const KernJob *j, int b0, int b1)
{
    int C2p = (j->w->C + 1) / 2;
    if (C2p > KERN_BF16DOT_MAX_C / 2) { /* the input would not fit the stack buffer */
        kern_avx512_bf16(j, b0, b1);
        return;
    }
    uint32_t xb[KERN_TILE_ROWS * (KERN_BF16DOT_MAX_C / 2)] __attribute__((aligned(64)));
    float    res[KERN_TILE_ROWS * KERN_GROUP * KERN_BLOCK] __attribute__((aligned(64)));
    /* Groups outside, so a group's weights are read from memory once for
     * all rows; the rows are converted again for each group, which costs
     * about 1/64 of the group's dot products. */
    for (int g = b0, ge; g < b1; g = ge) {
        ge = kern_piece_end(g, b1);
        int nb = ge - g;
        for (int n0 = 0; n0 < j->N; n0 += KERN_TILE_ROWS) {
            int nt = j->N - n0 < KERN_TILE_ROWS ? j->N - n0 : KERN_TILE_ROWS;
            convert_rows(j, n0, nt, xb, C2p);
            switch (nt) {
                ROWS(1);
                ROWS(2);
                ROWS(3);
                ROWS(4);
            }
            kern_epilogue(j, g, n0, nt, nb, res);
        }
    }
}

#endif
