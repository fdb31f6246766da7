/* kern_avx2: the AVX2 + FMA + F16C variant of kern_linear (kern_int.h), for
 * x86-64 CPUs without AVX-512. Compiled for those extensions whatever the
 * build's -march (function target attributes), and only called after
 * kern_avx2_supported said yes.
 *
 * (In the default -march=native build the attribute only adds to what the
 * build machine has, so on an AVX-512 machine the compiler may use its extra
 * registers here; the portable build compiles this file as plain AVX2.)
 *
 * A block of 16 outputs is two ymm accumulators. With 16 registers a tile
 * is nt rows x ob blocks with nt * ob <= 4: (1 x 4), (2 x 2), (3 x 1) and
 * (4 x 1), each block's weights widened once and used for nt rows. */
#include "common/nn/kern_int.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include "common/nn/cpu.h"
#include <immintrin.h>
#include <stdint.h>

#define KAVX2 __attribute__((target("avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

bool kern_avx2_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}

static KAVX2 INL void tile_bf16(const KernJob *j, int blk, int n0, const int nt, const int ob,
                                float *res, int nb, int b_off)
{
    const KernMat  *w = j->w;
    const int       C = w->C, C2 = C / 2;
    size_t          stride;
    const uint32_t *wp = (const uint32_t *)kern_block_at(w, blk + b_off, &stride);
    const float    *x = j->inp + (size_t)n0 * C;
    const __m256i   hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256          acc[KERN_TILE_ROWS][KERN_GROUP][2];
    stride /= 2; /* in 32-bit pairs */
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) acc[n][b][0] = acc[n][b][1] = _mm256_setzero_ps();
    for (int c2 = 0; c2 < C2; c2++) {
        const uint32_t *step = wp + (size_t)c2 * stride;
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            const uint32_t *p = step + b * KERN_BLOCK;
            _mm_prefetch((const char *)(p + KERN_PREFETCH * stride), _MM_HINT_T0);
            __m256i lo = _mm256_loadu_si256((const __m256i *)p);
            __m256i up = _mm256_loadu_si256((const __m256i *)(p + 8));
            __m256  e0 = _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16));
            __m256  o0 = _mm256_castsi256_ps(_mm256_and_si256(lo, hi));
            __m256  e1 = _mm256_castsi256_ps(_mm256_slli_epi32(up, 16));
            __m256  o1 = _mm256_castsi256_ps(_mm256_and_si256(up, hi));
#pragma GCC unroll 4
            for (int n = 0; n < nt; n++) {
                __m256 xe = _mm256_broadcast_ss(x + (size_t)n * C + 2 * c2);
                __m256 xo = _mm256_broadcast_ss(x + (size_t)n * C + 2 * c2 + 1);
                acc[n][b][0] = _mm256_fmadd_ps(e0, xe, acc[n][b][0]);
                acc[n][b][1] = _mm256_fmadd_ps(e1, xe, acc[n][b][1]);
                acc[n][b][0] = _mm256_fmadd_ps(o0, xo, acc[n][b][0]);
                acc[n][b][1] = _mm256_fmadd_ps(o1, xo, acc[n][b][1]);
            }
        }
    }
    if (C & 1) {
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            const uint32_t *p = wp + (size_t)C2 * stride + b * KERN_BLOCK;
            __m256          e0 =
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)p), 16));
            __m256 e1 = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(p + 8)), 16));
#pragma GCC unroll 4
            for (int n = 0; n < nt; n++) {
                __m256 xe = _mm256_broadcast_ss(x + (size_t)n * C + C - 1);
                acc[n][b][0] = _mm256_fmadd_ps(e0, xe, acc[n][b][0]);
                acc[n][b][1] = _mm256_fmadd_ps(e1, xe, acc[n][b][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++) {
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            float *r = res + ((size_t)n * nb + b_off + b) * KERN_BLOCK;
            _mm256_storeu_ps(r, acc[n][b][0]);
            _mm256_storeu_ps(r + 8, acc[n][b][1]);
        }
    }
}

static KAVX2 INL void tile_f16(const KernJob *j, int blk, int n0, const int nt, const int ob,
                               float *res, int nb, int b_off)
{
    const KernMat  *w = j->w;
    const int       C = w->C;
    size_t          stride;
    const uint16_t *wp = kern_block_at(w, blk + b_off, &stride);
    const float    *x = j->inp + (size_t)n0 * C;
    __m256          acc[KERN_TILE_ROWS][KERN_GROUP][2];
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++)
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) acc[n][b][0] = acc[n][b][1] = _mm256_setzero_ps();
    for (int c = 0; c < C; c++) {
        const uint16_t *step = wp + (size_t)c * stride;
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            const uint16_t *p = step + b * KERN_BLOCK;
            _mm_prefetch((const char *)(p + 2 * KERN_PREFETCH * stride), _MM_HINT_T0);
            __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
            __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
#pragma GCC unroll 4
            for (int n = 0; n < nt; n++) {
                __m256 xv = _mm256_broadcast_ss(x + (size_t)n * C + c);
                acc[n][b][0] = _mm256_fmadd_ps(w0, xv, acc[n][b][0]);
                acc[n][b][1] = _mm256_fmadd_ps(w1, xv, acc[n][b][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int n = 0; n < nt; n++) {
#pragma GCC unroll 4
        for (int b = 0; b < ob; b++) {
            float *r = res + ((size_t)n * nb + b_off + b) * KERN_BLOCK;
            _mm256_storeu_ps(r, acc[n][b][0]);
            _mm256_storeu_ps(r + 8, acc[n][b][1]);
        }
    }
}

/* nt rows over the nb blocks of a piece of one group, as tiles of constant
 * shape (nt x OB, whole tiles, then single blocks). */
#define SPLIT(TILE, NT, OB)                                                                        \
    case NT: {                                                                                     \
        int b = 0;                                                                                 \
        for (; b + (OB) <= nb; b += (OB)) TILE(j, g, n0, NT, OB, res, nb, b);                      \
        for (; b < nb; b++) TILE(j, g, n0, NT, 1, res, nb, b);                                     \
        break;                                                                                     \
    }
#define RANGE(NAME, TILE)                                                                          \
    KAVX2 void NAME(const KernJob *j, int b0, int b1)                                              \
    {                                                                                              \
        float res[KERN_TILE_ROWS * KERN_GROUP * KERN_BLOCK] __attribute__((aligned(32)));          \
        for (int g = b0, ge; g < b1; g = ge) {                                                     \
            ge = kern_piece_end(g, b1);                                                            \
            int nb = ge - g;                                                                       \
            for (int n0 = 0; n0 < j->N; n0 += KERN_TILE_ROWS) {                                    \
                int nt = j->N - n0 < KERN_TILE_ROWS ? j->N - n0 : KERN_TILE_ROWS;                  \
                switch (nt) {                                                                      \
                    SPLIT(TILE, 1, 4)                                                              \
                    SPLIT(TILE, 2, 2)                                                              \
                    SPLIT(TILE, 3, 1)                                                              \
                    SPLIT(TILE, 4, 1)                                                              \
                }                                                                                  \
                kern_epilogue(j, g, n0, nt, nb, res);                                              \
            }                                                                                      \
        }                                                                                          \
    }

RANGE(kern_avx2_bf16, tile_bf16)
RANGE(kern_avx2_f16, tile_f16)

#endif
