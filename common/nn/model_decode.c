/* The decoding half of model.h: the KV cache (kv_*) and model_step, which
 * feeds new tokens through the weights of model.c one position at a time
 * with the same kernels as model_forward (model_test compares the two). The
 * Model's inside comes from model_int.h. */
#include "common/nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/par.h"
#include "common/base/views.h"
#include "common/nn/cpu.h"
#include "common/nn/kern.h"
#include "common/nn/model_int.h"
#include "common/nn/tensor.h"

/* Positions per tile of the key cache: one vector of scores. */
#define KV_TILE 16

struct KVCache {
    int  L, n_seq, max_len, KD;
    int  max_pad; /* max_len rounded up to a whole tile */
    int  L_store; /* layers the store holds: L, or 1 for a one-pass cache (kv_new_once) */
    bool is_once; /* kv_new_once's: model_score only */
    /* model_score's shared prefix: keys and values of sequence 0's positions
     * below fan_len are stored in sequences 0..fan_seqs-1 alike. */
    int fan_len, fan_seqs;
    /* Per layer and sequence, each kv head's keys and values contiguous, so
     * attending to a sequence reads them as streams. Keys go in tiles of
     * KV_TILE positions stored channel-major (HS, KV_TILE): the scores of a
     * tile's positions are one vector multiply-add per channel. */
    float *k;     /* (L_store, n_seq, KVH, max_pad / KV_TILE, HS, KV_TILE) */
    float *v;     /* (L_store, n_seq, KVH, max_pad, HS) */
    int   *len;   /* (n_seq) */
    int   *count; /* (n_seq) scratch for model_step */
    void  *block; /* k, v, len, count */
    /* per-call row scratch, grown on demand */
    int    cap;
    float *x, *xn, *rstd, *q, *kk, *vv, *atty, *gate, *up;
    int   *pos;
    void  *rows_block; /* the row scratch */
    size_t rows_bytes;
    /* model_score's rows: sequence and id of each, grown on demand */
    int  *row_seq, *row_tok;
    int   tok_cap;
    void *tok_block;
};

/* ---- KV cache ------------------------------------------------------------ */

static KVCache *cache_new(const Model *m, int n_seq, int max_len, bool is_once)
{
    const ModelConfig *c = &m->cfg;
    /* Positions index the RoPE tables, which end at max_seq_len. */
    CHECK(n_seq > 0 && max_len > 0 && max_len <= c->max_seq_len);
    KVCache *kv = xcalloc(1, sizeof *kv);
    kv->L = c->n_layers;
    kv->L_store = is_once ? 1 : kv->L;
    kv->is_once = is_once;
    kv->n_seq = n_seq;
    kv->max_len = max_len;
    kv->KD = c->n_kv_heads * head_size(c);
    kv->max_pad = (max_len + KV_TILE - 1) / KV_TILE * KV_TILE;
    size_t n = (size_t)kv->L_store * n_seq * kv->max_pad * kv->KD;
    View   views[] = {VIEW(&kv->k, n), VIEW(&kv->v, n), VIEW(&kv->len, n_seq),
                      VIEW(&kv->count, n_seq)};
    kv->block = views_alloc(views, sizeof views / sizeof views[0]);
    memset(kv->len, 0, (size_t)n_seq * sizeof(int));
    memset(kv->count, 0, (size_t)n_seq * sizeof(int));
    return kv;
}

KVCache *kv_new(const Model *m, int n_seq, int max_len)
{
    return cache_new(m, n_seq, max_len, false);
}

KVCache *kv_new_once(const Model *m, int n_seq, int max_len)
{
    return cache_new(m, n_seq, max_len, true);
}

void kv_free(KVCache **pkv)
{
    KVCache *kv = *pkv;
    if (!kv) return;
    free(kv->block);
    free(kv->rows_block);
    free(kv->tok_block);
    free(kv);
    *pkv = NULL;
}

void kv_reset(KVCache *kv, int seq)
{
    CHECK(seq >= 0 && seq < kv->n_seq);
    kv->len[seq] = 0;
}

int kv_len(const KVCache *kv, int seq)
{
    CHECK(seq >= 0 && seq < kv->n_seq);
    return kv->len[seq];
}

int kv_n_seq(const KVCache *kv)
{
    return kv->n_seq;
}

static void kv_reserve(KVCache *kv, const ModelConfig *c, int n)
{
    if (n <= kv->cap) return;
    size_t C = (size_t)c->dim, QD = C, KD = (size_t)kv->KD, H = (size_t)c->hidden_dim;
    size_t rows = (size_t)n;
    View   views[] = {VIEW(&kv->x, rows * C),     VIEW(&kv->xn, rows * C),   VIEW(&kv->rstd, rows),
                      VIEW(&kv->q, rows * QD),    VIEW(&kv->kk, rows * KD),  VIEW(&kv->vv, rows * KD),
                      VIEW(&kv->atty, rows * QD), VIEW(&kv->gate, rows * H), VIEW(&kv->up, rows * H),
                      VIEW(&kv->pos, rows)};
    views_reserve(&kv->rows_block, &kv->rows_bytes, views, sizeof views / sizeof views[0]);
    kv->cap = n;
}

/* ---- half-precision weights ----------------------------------------------- */

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* One matrix of pack_all: packs parts ws at mem + *at (unless mem is NULL)
 * and advances *at. Returns 0 or ERR_RANGE (logged with what). */
static int pack_one(KernMat *km, char *mem, size_t *at, KernType t, int n_part,
                    const float *const *ws, const int *rows, int C, bool is_swiglu,
                    const char *what)
{
    size_t bytes = kern_mat_bytes(t, n_part, rows, C);
    if (mem && kern_mat_pack(km, mem + *at, t, n_part, ws, rows, C, is_swiglu, what) != 0)
        return ERR_RANGE;
    *at += align64(bytes);
    return 0;
}

/* Packs (or, with mem NULL, only sizes) every matrix of m for type t into
 * mem: the LayerKern table, then each layer's matrices, then the LM head.
 * Writes the bytes used to *bytes. Returns 0 or ERR_RANGE (logged). */
static int pack_all(Model *m, KernType t, char *mem, size_t *bytes)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim, QD = c->n_heads * head_size(c), H = c->hidden_dim;
    int                KD = c->n_kv_heads * head_size(c), V = c->vocab_size;
    size_t             at = align64(sizeof(LayerKern) * (size_t)c->n_layers);
    LayerKern          unused;
    int                rc = 0;
    for (int l = 0; l < c->n_layers && rc == 0; l++) {
        const LayerWeights *w = &m->w.layers[l];
        LayerKern          *k = mem ? &m->dec_layers[l] : &unused;
        const float        *qkv[3] = {w->wq, w->wk, w->wv}, *gu[2] = {w->w_gate, w->w_up};
        const float        *wo[1] = {w->wo}, *down[1] = {w->w_down};
        int                 r_qkv[3] = {QD, KD, KD}, r_c[1] = {C}, r_h[2] = {H, H};
        char                what[4][64];
        snprintf(what[0], sizeof what[0], "layer %d q/k/v_proj", l);
        snprintf(what[1], sizeof what[1], "layer %d o_proj", l);
        snprintf(what[2], sizeof what[2], "layer %d gate/up_proj", l);
        snprintf(what[3], sizeof what[3], "layer %d down_proj", l);
        rc = pack_one(&k->qkv, mem, &at, t, 3, qkv, r_qkv, C, false, what[0]);
        if (!rc) rc = pack_one(&k->wo, mem, &at, t, 1, wo, r_c, QD, false, what[1]);
        if (!rc) rc = pack_one(&k->gate_up, mem, &at, t, 2, gu, r_h, C, true, what[2]);
        if (!rc) rc = pack_one(&k->down, mem, &at, t, 1, down, r_c, H, false, what[3]);
    }
    const float *head[1] = {m->w.lm_head};
    int          r_v[1] = {V};
    if (!rc) rc = pack_one(&m->dec_lm_head, mem, &at, t, 1, head, r_v, C, false, "lm_head");
    *bytes = at;
    return rc;
}

int model_set_decode_type(Model *m, KernType t)
{
    CHECK(t == KERN_F32 || t == KERN_BF16 || t == KERN_F16);
    m->dec_type = KERN_F32;
    if (t == KERN_F32) {
        free(m->dec_block);
        m->dec_block = NULL;
        m->dec_bytes = 0;
        return 0;
    }
    size_t bytes = 0;
    pack_all(m, t, NULL, &bytes);
    /* A new version of the same model reuses the block. */
    if (bytes != m->dec_bytes) {
        free(m->dec_block);
        m->dec_block = xmalloc_aligned(bytes);
        m->dec_bytes = bytes;
    }
    m->dec_layers = m->dec_block;
    if (pack_all(m, t, m->dec_block, &bytes) != 0) {
        log_error("model_set_decode_type: the weights do not fit %s; decoding in fp32",
                  kern_type_names[t]);
        return ERR_RANGE;
    }
    m->dec_type = t;
    return 0;
}

KernType model_decode_type(const Model *m)
{
    return m->dec_type;
}

/* ---- attention over the cache -------------------------------------------- */

/* Positions whose scores one pass keeps (on the stack). */
#define ATT_CHUNK 256

typedef struct {
    float       *atty;      /* (n, NH*HS) */
    const float *q;         /* (n, NH*HS) */
    const float *kc, *vc;   /* the layer's caches, as in KVCache */
    const int   *seq, *pos; /* (n) */
    int          NH, KVH, HS, max_pad;
    float        scale;
} AttendCtx;

/* Items i = r * NH + h, row r and query head h (reading kv head h / group):
 * y_h = softmax_j(q_h . k_j * scale) v_j over positions 0..pos[r] of the
 * row's sequence. Positions go in chunks with a running maximum (the sum
 * and y are rescaled when it grows), which is the plain max-subtracted
 * softmax when the sequence fits one chunk. */
static RLHF_HOT void attend_range(void *p, size_t i0, size_t i1)
{
    const AttendCtx *a = p;
    int              HS = a->HS, group = a->NH / a->KVH;
    size_t           head_stride = (size_t)a->max_pad * HS; /* floats per (seq, kv head) */
    float            sc[ATT_CHUNK] __attribute__((aligned(64)));
    for (size_t i = i0; i < i1; i++) {
        int          r = (int)(i / (size_t)a->NH), h = (int)(i % (size_t)a->NH), g = h / group;
        int          len = a->pos[r] + 1;
        size_t       sg = (size_t)a->seq[r] * a->KVH + (size_t)g;
        const float *kt = a->kc + sg * head_stride, *vh = a->vc + sg * head_stride;
        const float *q_h = a->q + (size_t)r * a->NH * HS + (size_t)h * HS;
        float       *y_h = a->atty + (size_t)r * a->NH * HS + (size_t)h * HS;
        float        mx = -INFINITY, sum = 0.0f;
        for (int c = 0; c < HS; c++) y_h[c] = 0.0f;
        for (int j0 = 0; j0 < len; j0 += ATT_CHUNK) {
            int nj = len - j0 < ATT_CHUNK ? len - j0 : ATT_CHUNK;
            /* A tile's positions at once, each lane summing its q . k_j over
             * the channels in a register. The last tile's lanes past len
             * hold zeros or an earlier sequence's keys: computed, unused. */
            for (int jt = 0; jt < nj; jt += KV_TILE) {
                const float *tile = kt + (size_t)(j0 + jt) * HS; /* (HS, KV_TILE) */
                VecF         acc = {0};
                for (int c = 0; c < HS; c++) acc += q_h[c] * *(const VecF *)(tile + c * KV_TILE);
                *(VecF *)(sc + jt) = acc;
            }
            float cmx = mx;
            for (int j = 0; j < nj; j++) {
                sc[j] *= a->scale;
                cmx = sc[j] > cmx ? sc[j] : cmx;
            }
            if (cmx > mx && j0 > 0) { /* rescale what the earlier chunks summed */
                float f = tensor_exp(mx - cmx);
                sum *= f;
                for (int c = 0; c < HS; c++) y_h[c] *= f;
            }
            mx = cmx;
            for (int j = 0; j < nj; j++) {
                sc[j] = tensor_exp(sc[j] - mx);
                sum += sc[j];
            }
            /* 16 channels at a time, each lane summing e_j v_j over the
             * positions in a register. */
            const float *v0 = vh + (size_t)j0 * HS;
            int          cv = 0;
            for (; cv + VEC_F <= HS; cv += VEC_F) {
                VecF acc = *(const VecF *)(y_h + cv);
                for (int j = 0; j < nj; j++)
                    acc += sc[j] * *(const VecF *)(v0 + (size_t)j * HS + cv);
                *(VecF *)(y_h + cv) = acc;
            }
            for (; cv < HS; cv++) {
                float acc = y_h[cv];
                for (int j = 0; j < nj; j++) acc += sc[j] * v0[(size_t)j * HS + cv];
                y_h[cv] = acc;
            }
        }
        float inv = 1.0f / sum;
        for (int c = 0; c < HS; c++) y_h[c] *= inv;
    }
}

static void attend(float *atty, const float *q, const float *kc, const float *vc, const int *seq,
                   const int *pos, int n, int max_pad, const ModelConfig *c)
{
    int       HS = head_size(c);
    AttendCtx a = {.atty = atty,
                   .q = q,
                   .kc = kc,
                   .vc = vc,
                   .seq = seq,
                   .pos = pos,
                   .NH = c->n_heads,
                   .KVH = c->n_kv_heads,
                   .HS = HS,
                   .max_pad = max_pad,
                   .scale = 1.0f / sqrtf((float)HS)};
    /* Two threads once the multiply-adds pass a wake-up's worth. */
    double work = 0;
    for (int r = 0; r < n; r++) work += 2.0 * (pos[r] + 1) * c->n_heads * HS;
    size_t items = (size_t)n * c->n_heads;
    par_for_hot(items, work >= 65536.0 ? 1 : items + 1, attend_range, &a);
}

/* Checks n rows of tokens for sequences seq against the vocabulary and
 * kv's room, then gives each row its position (kv->pos). Returns 0, or
 * ERR_RANGE with nothing changed. */
static int place_rows(const Model *m, KVCache *kv, int n, const int *seq, const int *tokens)
{
    int V = m->cfg.vocab_size;
    for (int r = 0; r < n; r++) {
        CHECK(seq[r] >= 0 && seq[r] < kv->n_seq);
        if (tokens[r] < 0 || tokens[r] >= V) return ERR_RANGE;
    }
    memset(kv->count, 0, (size_t)kv->n_seq * sizeof(int));
    for (int r = 0; r < n; r++)
        if (kv->len[seq[r]] + ++kv->count[seq[r]] > kv->max_len) return ERR_RANGE;
    kv_reserve(kv, &m->cfg, n);
    memset(kv->count, 0, (size_t)kv->n_seq * sizeof(int));
    for (int r = 0; r < n; r++) kv->pos[r] = kv->len[seq[r]] + kv->count[seq[r]]++;
    return 0;
}

/* Stores row r's key and value (k_r, v_r: (KD)) at position p of sequence
 * s in a layer's caches kc_l, vc_l. */
static void store_kv(KVCache *kv, const ModelConfig *c, float *kc_l, float *vc_l, int s, int p,
                     const float *k_r, const float *v_r)
{
    int    HS = head_size(c), KD = kv->KD;
    size_t seq_stride = (size_t)kv->max_pad * KD, head_stride = (size_t)kv->max_pad * HS;
    for (int g = 0; g < c->n_kv_heads; g++) {
        float       *kt = kc_l + (size_t)s * seq_stride + (size_t)g * head_stride;
        float       *tile = kt + (size_t)(p / KV_TILE * KV_TILE) * HS;
        const float *k_g = k_r + (size_t)g * HS;
        /* A new tile starts zeroed: its unused lanes are then
         * initialised (attention computes them and drops them). */
        if (p % KV_TILE == 0) memset(tile, 0, sizeof(float) * KV_TILE * HS);
        for (int i = 0; i < HS; i++) tile[(size_t)i * KV_TILE + p % KV_TILE] = k_g[i];
        memcpy(vc_l + (size_t)s * seq_stride + (size_t)g * head_stride + (size_t)p * HS,
               v_r + (size_t)g * HS, HS * sizeof(float));
    }
}

/* Feeds the n placed rows through every layer, leaving the final residual
 * stream in kv->x (n, C) and each row's key and value in the cache; with
 * is_half the matrices are the packed half-precision copies. */
static void forward_rows(Model *m, KVCache *kv, int n, const int *seq, const int *tokens,
                         bool is_half)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim, HS = head_size(c), NH = c->n_heads, KVH = c->n_kv_heads;
    int                QD = NH * HS, KD = KVH * HS, H = c->hidden_dim;
    KernType           t = m->dec_type;
    for (int r = 0; r < n; r++) {
        const float *e = m->w.embed + (size_t)tokens[r] * C;
        float       *x_r = kv->x + (size_t)r * C;
        if (is_half) /* the row the tied LM head holds, too */
            for (int i = 0; i < C; i++) x_r[i] = kern_round(t, e[i]);
        else
            memcpy(x_r, e, C * sizeof(float));
    }
    size_t layer_stride = (size_t)kv->n_seq * kv->max_pad * KD;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        const LayerKern    *d = is_half ? &m->dec_layers[l] : NULL;
        /* A one-pass cache reuses its one layer: this layer's keys replace
         * the previous layer's, which no row reads again. */
        size_t at = kv->L_store == 1 ? 0 : (size_t)l * layer_stride;
        float *kc_l = kv->k + at, *vc_l = kv->v + at;
        tensor_rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->attn_norm, n, C, c->norm_eps);
        if (is_half) {
            float *qkv[3] = {kv->q, kv->kk, kv->vv};
            kern_linear(qkv, kv->xn, &d->qkv, n, KERN_OUT_STORE);
        } else {
            tensor_linear_forward(kv->q, kv->xn, w->wq, n, C, QD);
            tensor_linear_forward(kv->kk, kv->xn, w->wk, n, C, KD);
            tensor_linear_forward(kv->vv, kv->xn, w->wv, n, C, KD);
        }
        tensor_rope_forward(kv->q, kv->pos, n, NH, HS, m->rope_cos, m->rope_sin);
        tensor_rope_forward(kv->kk, kv->pos, n, KVH, HS, m->rope_cos, m->rope_sin);
        /* Every row's key and value goes in before any row attends, so rows
         * later in the call can see earlier rows of their sequence; a row of
         * a shared prefix goes into every sequence that shares it. */
        for (int r = 0; r < n; r++) {
            int          p = kv->pos[r];
            const float *k_r = kv->kk + (size_t)r * KD, *v_r = kv->vv + (size_t)r * KD;
            bool         is_shared = seq[r] == 0 && p < kv->fan_len;
            for (int s = seq[r]; s < (is_shared ? kv->fan_seqs : seq[r] + 1); s++)
                store_kv(kv, c, kc_l, vc_l, s, p, k_r, v_r);
        }
        attend(kv->atty, kv->q, kc_l, vc_l, seq, kv->pos, n, kv->max_pad, c);
        // attention output projection, into the residual
        if (is_half)
            kern_linear(&kv->x, kv->atty, &d->wo, n, KERN_OUT_ADD);
        else
            tensor_linear_forward_add(kv->x, kv->atty, w->wo, n, QD, C);
        // MLP: rmsnorm, silu(gate) * up, down projection into the residual
        tensor_rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->mlp_norm, n, C, c->norm_eps);
        if (is_half) {
            kern_linear(&kv->gate, kv->xn, &d->gate_up, n, KERN_OUT_SWIGLU);
            kern_linear(&kv->x, kv->gate, &d->down, n, KERN_OUT_ADD);
        } else {
            tensor_linear_forward(kv->gate, kv->xn, w->w_gate, n, C, H);
            tensor_linear_forward(kv->up, kv->xn, w->w_up, n, C, H);
            tensor_swiglu_forward(kv->gate, kv->gate, kv->up, (size_t)n * H);
            tensor_linear_forward_add(kv->x, kv->gate, w->w_down, n, H, C);
        }
    }
    // final norm: the wanted rows are normed by the caller
}

int model_step(Model *m, KVCache *kv, int n, const int *seq, const int *tokens, int n_out,
               const int *out_rows, float *logits)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim, V = c->vocab_size;
    CHECK(!kv->is_once && !m->lora);
    CHECK(n > 0 && n_out >= 0 && n_out <= n);
    for (int o = 0; o < n_out; o++) CHECK(out_rows[o] >= 0 && out_rows[o] < n);
    int rc = place_rows(m, kv, n, seq, tokens);
    if (rc) return rc;
    bool is_half = m->dec_type != KERN_F32;
    forward_rows(m, kv, n, seq, tokens, is_half);
    if (n_out > 0) {
        /* Final norm for the wanted rows only, packed into xn. */
        for (int o = 0; o < n_out; o++)
            tensor_rmsnorm_forward(kv->xn + (size_t)o * C, kv->rstd + o,
                                   kv->x + (size_t)out_rows[o] * C, m->w.norm, 1, C, c->norm_eps);
        if (is_half)
            kern_linear(&logits, kv->xn, &m->dec_lm_head, n_out, KERN_OUT_STORE);
        else
            tensor_linear_forward(logits, kv->xn, m->w.lm_head, n_out, C, V);
    }
    for (int r = 0; r < n; r++)
        kv->len[seq[r]] = kv->pos[r] + 1 > kv->len[seq[r]] ? kv->pos[r] + 1 : kv->len[seq[r]];
    return 0;
}

int model_score(Model *m, KVCache *kv, const int *prefix, int n_prefix, int n_seq,
                const int *const *tails, const int *tail_lens, float *value)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim;
    CHECK(kv->is_once && c->has_value_head && !m->lora);
    CHECK(n_prefix >= 1 && n_seq >= 1 && n_seq <= kv->n_seq);
    size_t total = (size_t)n_prefix;
    for (int i = 0; i < n_seq; i++) {
        CHECK(tail_lens[i] >= 0);
        if (n_prefix + tail_lens[i] > kv->max_len) return ERR_RANGE;
        total += (size_t)tail_lens[i];
    }
    CHECK(total <= (size_t)INT32_MAX / 2);
    int n = (int)total;
    /* The rows: the prefix once, as sequence 0's, then every tail, each
     * placed after the prefix in its own sequence. */
    if (n > kv->tok_cap) {
        free(kv->tok_block);
        View v[] = {VIEW(&kv->row_seq, n), VIEW(&kv->row_tok, n)};
        kv->tok_block = views_alloc(v, 2);
        kv->tok_cap = n;
    }
    int r = 0;
    for (int t = 0; t < n_prefix; t++, r++) {
        kv->row_seq[r] = 0;
        kv->row_tok[r] = prefix[t];
    }
    for (int i = 0; i < n_seq; i++) {
        for (int t = 0; t < tail_lens[i]; t++, r++) {
            kv->row_seq[r] = i;
            kv->row_tok[r] = tails[i][t];
        }
    }
    for (int i = 0; i < kv->n_seq; i++) kv->len[i] = i == 0 || i >= n_seq ? 0 : n_prefix;
    int rc = place_rows(m, kv, n, kv->row_seq, kv->row_tok);
    if (rc == 0) {
        kv->fan_len = n_prefix;
        kv->fan_seqs = n_seq;
        forward_rows(m, kv, n, kv->row_seq, kv->row_tok, false);
        /* Each sequence's last row: its tail's last, or the prefix's. */
        for (int i = 0, end = n_prefix; i < n_seq; i++) {
            end += tail_lens[i];
            int          last = tail_lens[i] > 0 ? end - 1 : n_prefix - 1;
            float       *h = kv->xn;
            const float *w = m->w.score_w;
            tensor_rmsnorm_forward(h, kv->rstd, kv->x + (size_t)last * C, m->w.norm, 1, C,
                                   c->norm_eps);
            /* In double, as model_forward sums the head. */
            double s = m->w.score_b[0];
            for (int k = 0; k < C; k++) s += (double)h[k] * w[k];
            value[i] = (float)s;
        }
    }
    kv->fan_len = kv->fan_seqs = 0;
    for (int i = 0; i < kv->n_seq; i++) kv->len[i] = 0;
    return rc;
}
