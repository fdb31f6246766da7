/* kern_avx512: the AVX-512 variant of kern_linear (kern_int.h). Compiled for
 * AVX-512F whatever the build's -march (function target attributes), and
 * only called after kern_avx512_supported said yes.
 *
 * A tile is nt <= 4 rows x the 4 blocks of a group (64 outputs): nt*4 zmm
 * accumulators, each widened weight vector feeding nt multiply-adds, the
 * input element broadcast from memory. That fits the 32 registers, gives at
 * least 4 independent chains of fused multiply-adds (enough to hide their
 * latency) and reads the group's weights as one stream, prefetched
 * KERN_PREFETCH steps ahead. More rows take more passes, the group's
 * weights then coming from L2. */
#include "common/nn/kern_int.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <stdint.h>

#define K512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

bool kern_avx512_supported(void)
{
    __builtin_cpu_init();
    /* libgcc also checks that the OS saves the zmm state (XCR0). */
    return __builtin_cpu_supports("avx512f");
}

/* res[n][b_off + b] for n < nt, b < ob: blocks blk + b_off + b (one group)
 * of rows n0... */
static K512 INL void tile_bf16(const KernJob *j, int blk, int n0, const int nt, const int ob,
                               float *res, int nb, int b_off)
{
    const KernMat  *w = j->w;
    const int       C = w->C, C2 = C / 2;
    size_t          stride;
    const uint32_t *wp = (const uint32_t *)kern_block_at(w, blk + b_off, &stride);
    const float    *x = j->inp + (size_t)n0 * C;
    const __m512i   hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512          acc[KERN_TILE_ROWS][KERN_GROUP];
    stride /= 2; /* in 32-bit pairs */
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) acc[n][b] = _mm512_setzero_ps();
    for (int c2 = 0; c2 < C2; c2++) {
        /* A 32-bit lane holds (column 2c2, column 2c2+1) of one output row:
         * the low half shifted up and the high half masked are both floats. */
        const uint32_t *step = wp + (size_t)c2 * stride;
        __m512          we[KERN_GROUP], wo[KERN_GROUP];
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            _mm_prefetch((const char *)(step + KERN_PREFETCH * stride + b * KERN_BLOCK),
                         _MM_HINT_T0);
            __m512i v = _mm512_loadu_si512(step + b * KERN_BLOCK);
            we[b] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            wo[b] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
        }
#pragma GCC unroll 4
        for (int n = 0; n < nt; n++) {
            __m512 xe = _mm512_set1_ps(x[(size_t)n * C + 2 * c2]);
            __m512 xo = _mm512_set1_ps(x[(size_t)n * C + 2 * c2 + 1]);
#pragma GCC unroll 4
            for (int b = 0; b < ob; b++) {
                acc[n][b] = _mm512_fmadd_ps(we[b], xe, acc[n][b]);
                acc[n][b] = _mm512_fmadd_ps(wo[b], xo, acc[n][b]);
            }
        }
    }
    if (C & 1) { /* the last column, paired with a zero one */
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            __m512i v = _mm512_loadu_si512(wp + (size_t)C2 * stride + b * KERN_BLOCK);
            __m512  we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
#pragma GCC unroll 4
            for (int n = 0; n < nt; n++)
                acc[n][b] =
                    _mm512_fmadd_ps(we, _mm512_set1_ps(x[(size_t)n * C + C - 1]), acc[n][b]);
        }
    }
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++)
            _mm512_storeu_ps(res + ((size_t)n * nb + b_off + b) * KERN_BLOCK, acc[n][b]);
}

static K512 INL void tile_f16(const KernJob *j, int blk, int n0, const int nt, const int ob,
                              float *res, int nb, int b_off)
{
    const KernMat  *w = j->w;
    const int       C = w->C;
    size_t          stride;
    const uint16_t *wp = kern_block_at(w, blk + b_off, &stride);
    const float    *x = j->inp + (size_t)n0 * C;
    __m512          acc[KERN_TILE_ROWS][KERN_GROUP];
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) acc[n][b] = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        const uint16_t *step = wp + (size_t)c * stride;
        __m512          wv[KERN_GROUP];
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            _mm_prefetch((const char *)(step + 2 * KERN_PREFETCH * stride + b * KERN_BLOCK),
                         _MM_HINT_T0);
            wv[b] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(step + b * KERN_BLOCK)));
        }
#pragma GCC unroll 4
        for (int n = 0; n < nt; n++) {
            __m512 xv = _mm512_set1_ps(x[(size_t)n * C + c]);
#pragma GCC unroll 4
            for (int b = 0; b < ob; b++) acc[n][b] = _mm512_fmadd_ps(wv[b], xv, acc[n][b]);
        }
    }
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++)
            _mm512_storeu_ps(res + ((size_t)n * nb + b_off + b) * KERN_BLOCK, acc[n][b]);
}

/* nt rows over the nb blocks of a piece of one group: the whole group in
 * one pass, a partial group block by block. */
#define ROWS(TILE, NT)                                                                             \
    case NT:                                                                                       \
        if (nb == KERN_GROUP)                                                                      \
            TILE(j, g, n0, NT, KERN_GROUP, res, nb, 0);                                            \
        else                                                                                       \
            for (int b = 0; b < nb; b++) TILE(j, g, n0, NT, 1, res, nb, b);                        \
        break
#define RANGE(NAME, TILE)                                                                          \
    K512 void NAME(const KernJob *j, int b0, int b1)                                               \
    {                                                                                              \
        float res[KERN_TILE_ROWS * KERN_GROUP * KERN_BLOCK] __attribute__((aligned(64)));          \
        for (int g = b0, ge; g < b1; g = ge) {                                                     \
            ge = kern_piece_end(g, b1);                                                            \
            int nb = ge - g;                                                                       \
            for (int n0 = 0; n0 < j->N; n0 += KERN_TILE_ROWS) {                                    \
                int nt = j->N - n0 < KERN_TILE_ROWS ? j->N - n0 : KERN_TILE_ROWS;                  \
                switch (nt) {                                                                      \
                    ROWS(TILE, 1);                                                                 \
                    ROWS(TILE, 2);                                                                 \
                    ROWS(TILE, 3);                                                                 \
                    ROWS(TILE, 4);                                                                 \
                }                                                                                  \
                kern_epilogue(j, g, n0, nt, nb, res);                                              \
            }                                                                                      \
        }                                                                                          \
    }

RANGE(kern_avx512_bf16, tile_bf16)
RANGE(kern_avx512_f16, tile_f16)

#endif
