/* kern: packing, the shared epilogue, the portable C variant, the run-time
 * choice of variant and the threading; the vector variants are in
 * kern_avx512.c and kern_avx2.c. */
#include "common/nn/kern.h"
#include "common/nn/kern_int.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/par.h"
#include "common/nn/cpu.h"
#include "common/nn/half.h"
#include "common/nn/tensor.h"

const char *const kern_type_names[] = {"fp32", "bf16", "fp16", NULL};

static int blocks_of(int rows)
{
    return (rows + KERN_BLOCK - 1) / KERN_BLOCK;
}

static size_t block_elems(KernType t, int C)
{
    /* BF16 stores columns in pairs: an odd C gets a zero column. */
    return t == KERN_BF16 ? (size_t)(C + 1) / 2 * 2 * KERN_BLOCK : (size_t)C * KERN_BLOCK;
}

size_t kern_mat_bytes(KernType t, int n_part, const int *rows, int C)
{
    CHECK(t == KERN_BF16 || t == KERN_F16);
    CHECK(n_part >= 1 && n_part <= KERN_MAX_PARTS && C > 0);
    size_t blocks = 0;
    for (int p = 0; p < n_part; p++) blocks += (size_t)blocks_of(rows[p]);
    return blocks * block_elems(t, C) * sizeof(uint16_t);
}

static uint16_t narrow(KernType t, float x)
{
    return t == KERN_BF16 ? half_f32_to_bf16(x) : half_f32_to_f16(x);
}

static float widen(KernType t, uint16_t h)
{
    return t == KERN_BF16 ? half_bf16_to_f32(h) : half_f16_to_f32(h);
}

float kern_round(KernType t, float x)
{
    return t == KERN_F32 ? x : widen(t, narrow(t, x));
}

/* The part a block belongs to and the part's first row in it. */
static void part_of_block(const KernMat *m, int blk, int *p, int *r0)
{
    if (m->is_swiglu) {
        *p = blk % 2;
        *r0 = blk / 2 * KERN_BLOCK;
        return;
    }
    int q = 0;
    while (q + 1 < m->n_part && m->block0[q + 1] <= blk) q++;
    *p = q;
    *r0 = (blk - m->block0[q]) * KERN_BLOCK;
}

/* Columns packing narrows at once (even, so BF16 pairs stay whole). */
#define PACK_CHUNK 512

typedef struct {
    const KernMat      *m;
    const float *const *w;
    atomic_int          bad_block; /* a block holding a value that does not fit, or -1 */
} PackCtx;

/* Packs blocks [b0, b1): row by row, a chunk of columns narrowed at once
 * into tmp (a loop that vectorises), then spread to the row's lane of each
 * step. Zeros go where padding is (a part's last block, the partner of an
 * odd last column); every other value is written once. A value that rounds
 * to infinity or NaN marks its block bad. */
static RLHF_HOT void pack_range(void *p, size_t b0, size_t b1)
{
    PackCtx       *pc = p;
    const KernMat *m = pc->m;
    int            C = m->C, steps = kern_steps(m), se = kern_step_elems(m);
    uint16_t       tmp[PACK_CHUNK];
    for (size_t blk = b0; blk < b1; blk++) {
        int part, r0;
        part_of_block(m, (int)blk, &part, &r0);
        int       n = m->rows[part] - r0 < KERN_BLOCK ? m->rows[part] - r0 : KERN_BLOCK;
        size_t    stride;
        uint16_t *dst = kern_block_at(m, (int)blk, &stride);
        unsigned  bad = 0;
        if (n < KERN_BLOCK || (m->type == KERN_BF16 && C % 2))
            for (int k = 0; k < steps; k++) memset(dst + (size_t)k * stride, 0, (size_t)se * 2);
        for (int i = 0; i < n; i++) {
            const float *w_r = pc->w[part] + (size_t)(r0 + i) * C;
            for (int c0 = 0; c0 < C; c0 += PACK_CHUNK) {
                int k = C - c0 < PACK_CHUNK ? C - c0 : PACK_CHUNK;
                if (m->type == KERN_BF16) {
#pragma omp simd reduction(| : bad)
                    for (int j = 0; j < k; j++) {
                        uint16_t h = half_f32_to_bf16(w_r[c0 + j]);
                        bad |= (h & 0x7f80u) == 0x7f80u;
                        tmp[j] = h;
                    }
                    /* Lane i of a step holds (even column, odd column) of row
                     * i: one 4-byte copy per pair (c0 is even). */
                    uint16_t *d = dst + 2 * i + (size_t)(c0 / 2) * stride;
                    for (int j = 0; j + 1 < k; j += 2)
                        memcpy(d + (size_t)(j / 2) * stride, tmp + j, 2 * sizeof(uint16_t));
                    if (k % 2) d[(size_t)(k / 2) * stride] = tmp[k - 1];
                } else {
                    for (int j = 0; j < k; j++) {
                        uint16_t h = half_f32_to_f16(w_r[c0 + j]);
                        bad |= (h & 0x7c00u) == 0x7c00u;
                        tmp[j] = h;
                    }
                    uint16_t *d = dst + i + (size_t)c0 * stride;
                    for (int j = 0; j < k; j++) d[(size_t)j * stride] = tmp[j];
                }
            }
        }
        if (bad) {
            int none = -1;
            atomic_compare_exchange_strong(&pc->bad_block, &none, (int)blk);
        }
    }
}

int kern_mat_pack(KernMat *m, void *mem, KernType t, int n_part, const float *const *w,
                  const int *rows, int C, bool is_swiglu, const char *name)
{
    CHECK(!is_swiglu || (n_part == 2 && rows[0] == rows[1]));
    CHECK(t == KERN_BF16 || t == KERN_F16);
    CHECK(n_part >= 1 && n_part <= KERN_MAX_PARTS && C > 0);
    memset(m, 0, sizeof *m);
    m->type = t;
    m->C = C;
    m->n_part = n_part;
    m->is_swiglu = is_swiglu;
    m->block_elems = block_elems(t, C);
    m->data = mem;
    for (int p = 0; p < n_part; p++) {
        CHECK(rows[p] > 0);
        m->rows[p] = rows[p];
        m->block0[p + 1] = m->block0[p] + blocks_of(rows[p]);
    }
    PackCtx pc = {.m = m, .w = w};
    atomic_init(&pc.bad_block, -1);
    par_for((size_t)m->block0[n_part], 16, pack_range, &pc);
    int blk = atomic_load(&pc.bad_block);
    if (blk < 0) return 0;
    /* Name the first value of that block that does not fit. */
    int p, r0;
    part_of_block(m, blk, &p, &r0);
    for (int r = r0; r < rows[p] && r < r0 + KERN_BLOCK; r++) {
        for (int c = 0; c < C; c++) {
            float x = w[p][(size_t)r * C + c];
            if (!isfinite(widen(t, narrow(t, x)))) {
                log_error("kern_mat_pack: %s part %d: w[%d][%d] = %g does not fit %s", name, p, r,
                          c, (double)x, kern_type_names[t]);
                return ERR_RANGE;
            }
        }
    }
    CHECK(false); /* the block had such a value */
    return ERR_RANGE;
}

RLHF_HOT void kern_epilogue(const KernJob *j, int blk, int n0, int nt, int nb, const float *res)
{
    const KernMat *w = j->w;
    if (j->mode == KERN_OUT_SWIGLU) {
        /* Blocks come as (gate k, up k) pairs; the product is the one
         * tensor_swiglu_forward computes. */
        int H = w->rows[0];
        for (int n = 0; n < nt; n++) {
            float *out = j->outs[0] + (size_t)(n0 + n) * H;
            for (int b = 0; b < nb; b += 2) {
                const float *g = res + ((size_t)n * nb + b) * KERN_BLOCK, *u = g + KERN_BLOCK;
                int          r0 = (blk + b) / 2 * KERN_BLOCK;
                int          cnt = H - r0 < KERN_BLOCK ? H - r0 : KERN_BLOCK;
#pragma omp simd
                for (int i = 0; i < cnt; i++)
                    out[r0 + i] = g[i] / (1.0f + tensor_exp(-g[i])) * u[i];
            }
        }
        return;
    }
    for (int b = 0; b < nb; b++) {
        int p, r0;
        part_of_block(w, blk + b, &p, &r0);
        int R = w->rows[p], cnt = R - r0 < KERN_BLOCK ? R - r0 : KERN_BLOCK;
        for (int n = 0; n < nt; n++) {
            const float *v = res + ((size_t)n * nb + b) * KERN_BLOCK;
            float       *out = j->outs[p] + (size_t)(n0 + n) * R + r0;
            if (j->mode == KERN_OUT_ADD) {
#pragma omp simd
                for (int i = 0; i < cnt; i++) out[i] += v[i];
            } else {
#pragma omp simd
                for (int i = 0; i < cnt; i++) out[i] = v[i];
            }
        }
    }
}

/* ---- the portable variant ------------------------------------------------ */

static bool ref_supported(void)
{
    return true;
}

/* Plain loops in the layout's order: each output is summed over c in order,
 * like the vector variants (which fuse each multiply-add). */
static void ref_range(const KernJob *j, int b0, int b1)
{
    const KernMat *w = j->w;
    KernType       t = w->type;
    int            C = w->C;
    float          res[KERN_TILE_ROWS * KERN_GROUP * KERN_BLOCK];
    float          col[KERN_BLOCK];
    for (int g = b0, ge; g < b1; g = ge) {
        ge = kern_piece_end(g, b1);
        int nb = ge - g;
        for (int n0 = 0; n0 < j->N; n0 += KERN_TILE_ROWS) {
            int nt = j->N - n0 < KERN_TILE_ROWS ? j->N - n0 : KERN_TILE_ROWS;
            memset(res, 0, sizeof res);
            for (int b = 0; b < nb; b++) {
                size_t          stride;
                const uint16_t *blk = kern_block_at(w, g + b, &stride);
                for (int c = 0; c < C; c++) {
                    for (int i = 0; i < KERN_BLOCK; i++) {
                        size_t at = t == KERN_BF16 ? (size_t)(c / 2) * stride + 2 * i + c % 2
                                                   : (size_t)c * stride + i;
                        col[i] = widen(t, blk[at]);
                    }
                    for (int n = 0; n < nt; n++) {
                        float  xc = j->inp[(size_t)(n0 + n) * C + c];
                        float *acc = res + ((size_t)n * nb + b) * KERN_BLOCK;
                        for (int i = 0; i < KERN_BLOCK; i++) acc[i] += col[i] * xc;
                    }
                }
            }
            kern_epilogue(j, g, n0, nt, nb, res);
        }
    }
}

const KernVariant kern_variants[] = {
#if defined(__x86_64__) && defined(__GNUC__)
    {"avx512bf16", kern_avx512bf16_supported, kern_avx512bf16_bf16, kern_avx512_f16, true},
    {"avx512", kern_avx512_supported, kern_avx512_bf16, kern_avx512_f16, false},
    {"avx2", kern_avx2_supported, kern_avx2_bf16, kern_avx2_f16, false},
#endif
    {"c", ref_supported, ref_range, ref_range, false},
};
const int kern_n_variants = (int)(sizeof kern_variants / sizeof kern_variants[0]);

/* ---- choice and threading ------------------------------------------------ */

static pthread_once_t     g_once = PTHREAD_ONCE_INIT;
static const KernVariant *g_variant;

static void pick_variant(void)
{
    const char *want = getenv("RLHF_KERNEL");
    for (int i = 0; i < kern_n_variants && want && *want; i++) {
        if (strcmp(kern_variants[i].name, want) != 0) continue;
        if (kern_variants[i].is_supported()) {
            g_variant = &kern_variants[i];
            return;
        }
        log_warn("RLHF_KERNEL=%s: this CPU cannot run it; choosing the best it can", want);
    }
    if (want && *want && !g_variant) {
        bool known = false;
        for (int i = 0; i < kern_n_variants; i++)
            known = known || !strcmp(kern_variants[i].name, want);
        if (!known)
            log_warn("RLHF_KERNEL=%s: no such kernel; choosing the best this CPU runs", want);
    }
    /* Automatically only a kernel that keeps the input in fp32: the model
     * is then exactly its weights rounded (RLHF_KERNEL=avx512bf16 trades
     * that for arithmetic speed). */
    for (int i = 0; i < kern_n_variants; i++) {
        if (!kern_variants[i].is_bf16_input && kern_variants[i].is_supported()) {
            g_variant = &kern_variants[i];
            return;
        }
    }
}

const KernVariant *kern_variant(void)
{
    pthread_once(&g_once, pick_variant);
    return g_variant;
}

void kern_set_variant(const KernVariant *v)
{
    CHECK(v && v->is_supported());
    kern_variant(); /* the automatic choice is made once, before */
    g_variant = v;
}

const KernVariant *kern_variant_by_name(const char *name)
{
    for (int i = 0; i < kern_n_variants; i++)
        if (!strcmp(kern_variants[i].name, name)) return &kern_variants[i];
    return NULL;
}

const char *kern_variant_name(void)
{
    return kern_variant()->name;
}

typedef struct {
    KernJob     job;
    KernRangeFn fn;
    int         per_unit; /* blocks per unit of the split: 2 keeps SwiGLU pairs whole */
} ParJob;

static void par_range(void *ctx, size_t u0, size_t u1)
{
    const ParJob *p = ctx;
    p->fn(&p->job, (int)u0 * p->per_unit, (int)u1 * p->per_unit);
}

void kern_linear_variant(const KernVariant *v, float *const *outs, const float *inp,
                         const KernMat *w, int N, KernOut mode)
{
    CHECK(N >= 0 && (w->type == KERN_BF16 || w->type == KERN_F16));
    CHECK(mode != KERN_OUT_SWIGLU || w->is_swiglu);
    if (N == 0) return;
    ParJob p = {.job = {.outs = outs, .inp = inp, .w = w, .N = N, .mode = mode},
                .fn = w->type == KERN_BF16 ? v->bf16 : v->f16,
                .per_unit = w->is_swiglu ? 2 : 1};
    size_t units = (size_t)w->block0[w->n_part] / (size_t)p.per_unit;
    /* A wake-up of the pool costs about as much as streaming 256 KiB of
     * weights or a million multiply-adds: below that, one thread. */
    size_t unit_elems = (size_t)p.per_unit * w->block_elems;
    size_t work = unit_elems * (size_t)(N + 8) / 8, min_work = (size_t)1 << 17;
    par_for_hot(units, work ? (min_work + work - 1) / work : 1, par_range, &p);
}

void kern_linear(float *const *outs, const float *inp, const KernMat *w, int N, KernOut mode)
{
    kern_linear_variant(kern_variant(), outs, inp, w, N, mode);
}
