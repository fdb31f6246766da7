/* The decoding half of model.h: the KV cache (kv_*) and model_step, which
 * feeds new tokens through the weights of model.c one position at a time
 * with the same kernels as model_forward (model_test compares the two). The
 * Model's inside comes from model_int.h. */
#include "common/nn/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/views.h"
#include "common/nn/cpu.h"
#include "common/nn/model_int.h"
#include "common/nn/tensor.h"

struct KVCache {
    int    L, n_seq, max_len, KD;
    float *k, *v; /* (L, n_seq, max_len, KVH*HS) */
    int   *len;   /* (n_seq) */
    int   *count; /* (n_seq) scratch for model_step */
    void  *block; /* k, v, len, count */
    /* per-call row scratch, grown on demand */
    int    cap;
    float *x, *xn, *rstd, *q, *kk, *vv, *atty, *gate, *up, *scores;
    int   *pos;
    void  *rows_block; /* the row scratch */
    size_t rows_bytes;
};

/* ---- KV cache ------------------------------------------------------------ */

KVCache *kv_new(const Model *m, int n_seq, int max_len)
{
    const ModelConfig *c = &m->cfg;
    /* Positions index the RoPE tables, which end at max_seq_len. */
    CHECK(n_seq > 0 && max_len > 0 && max_len <= c->max_seq_len);
    KVCache *kv = xcalloc(1, sizeof *kv);
    kv->L = c->n_layers;
    kv->n_seq = n_seq;
    kv->max_len = max_len;
    kv->KD = c->n_kv_heads * head_size(c);
    size_t n = (size_t)kv->L * n_seq * max_len * kv->KD;
    View   views[] = {VIEW(&kv->k, n), VIEW(&kv->v, n), VIEW(&kv->len, n_seq),
                      VIEW(&kv->count, n_seq)};
    kv->block = views_alloc(views, sizeof views / sizeof views[0]);
    memset(kv->len, 0, (size_t)n_seq * sizeof(int));
    memset(kv->count, 0, (size_t)n_seq * sizeof(int));
    return kv;
}

void kv_free(KVCache **pkv)
{
    KVCache *kv = *pkv;
    if (!kv) return;
    free(kv->block);
    free(kv->rows_block);
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
    View   views[] = {
          VIEW(&kv->x, rows * C),         VIEW(&kv->xn, rows * C),   VIEW(&kv->rstd, rows),
          VIEW(&kv->q, rows * QD),        VIEW(&kv->kk, rows * KD),  VIEW(&kv->vv, rows * KD),
          VIEW(&kv->atty, rows * QD),     VIEW(&kv->gate, rows * H), VIEW(&kv->up, rows * H),
          VIEW(&kv->scores, kv->max_len), VIEW(&kv->pos, rows)};
    views_reserve(&kv->rows_block, &kv->rows_bytes, views, sizeof views / sizeof views[0]);
    kv->cap = n;
}

/* One row's attention, every head: y_h = softmax_j(q_h . k_j * scale) v_j
 * over the first len positions of its sequence's cache (kc, vc: rows of KD
 * floats, query head h reading kv head h / group). scores holds len floats. */
static RLHF_HOT void attend_row(float *y, float *scores, const float *q, const float *kc,
                                const float *vc, int len, int NH, int group, int HS, int KD,
                                float scale)
{
    for (int h = 0; h < NH; h++) {
        const float *q_h = q + (size_t)h * HS;
        float       *y_h = y + (size_t)h * HS;
        size_t       ko = (size_t)(h / group) * HS;
        float        mx = -INFINITY;
        for (int j = 0; j < len; j++) {
            const float *k_j = kc + (size_t)j * KD + ko;
            float        s = 0.0f;
            for (int i = 0; i < HS; i++) s += q_h[i] * k_j[i];
            scores[j] = s * scale;
            mx = scores[j] > mx ? scores[j] : mx;
        }
        double sum = 0.0;
        for (int j = 0; j < len; j++) {
            scores[j] = expf(scores[j] - mx);
            sum += scores[j];
        }
        float inv = (float)(1.0 / sum);
        memset(y_h, 0, HS * sizeof(float));
        for (int j = 0; j < len; j++) {
            const float *v_j = vc + (size_t)j * KD + ko;
            float        p = scores[j] * inv;
            for (int i = 0; i < HS; i++) y_h[i] += p * v_j[i];
        }
    }
}

int model_step(Model *m, KVCache *kv, int n, const int *seq, const int *tokens, int n_out,
               const int *out_rows, float *logits)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim, HS = head_size(c), NH = c->n_heads, KVH = c->n_kv_heads;
    int                QD = NH * HS, KD = KVH * HS, H = c->hidden_dim, V = c->vocab_size;
    int                group = NH / KVH;
    CHECK(n > 0 && n_out >= 0 && n_out <= n);
    for (int r = 0; r < n; r++) {
        CHECK(seq[r] >= 0 && seq[r] < kv->n_seq);
        if (tokens[r] < 0 || tokens[r] >= V) return ERR_RANGE;
    }
    for (int o = 0; o < n_out; o++) CHECK(out_rows[o] >= 0 && out_rows[o] < n);
    memset(kv->count, 0, (size_t)kv->n_seq * sizeof(int));
    for (int r = 0; r < n; r++)
        if (kv->len[seq[r]] + ++kv->count[seq[r]] > kv->max_len) return ERR_RANGE;
    kv_reserve(kv, c, n);
    memset(kv->count, 0, (size_t)kv->n_seq * sizeof(int));
    for (int r = 0; r < n; r++) kv->pos[r] = kv->len[seq[r]] + kv->count[seq[r]]++;

    for (int r = 0; r < n; r++)
        memcpy(kv->x + (size_t)r * C, m->w.embed + (size_t)tokens[r] * C, C * sizeof(float));
    float  scale = 1.0f / sqrtf((float)HS);
    size_t seq_stride = (size_t)kv->max_len * KD;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        float              *kc_l = kv->k + (size_t)l * kv->n_seq * seq_stride;
        float              *vc_l = kv->v + (size_t)l * kv->n_seq * seq_stride;
        tensor_rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->attn_norm, n, C, c->norm_eps);
        tensor_linear_forward(kv->q, kv->xn, w->wq, n, C, QD);
        tensor_linear_forward(kv->kk, kv->xn, w->wk, n, C, KD);
        tensor_linear_forward(kv->vv, kv->xn, w->wv, n, C, KD);
        tensor_rope_forward(kv->q, kv->pos, n, NH, HS, m->rope_cos, m->rope_sin);
        tensor_rope_forward(kv->kk, kv->pos, n, KVH, HS, m->rope_cos, m->rope_sin);
        /* Every row's key and value goes in before any row attends, so rows
         * later in the call can see earlier rows of their sequence. */
        for (int r = 0; r < n; r++) {
            size_t at = (size_t)seq[r] * seq_stride + (size_t)kv->pos[r] * KD;
            memcpy(kc_l + at, kv->kk + (size_t)r * KD, KD * sizeof(float));
            memcpy(vc_l + at, kv->vv + (size_t)r * KD, KD * sizeof(float));
        }
        for (int r = 0; r < n; r++)
            attend_row(kv->atty + (size_t)r * QD, kv->scores, kv->q + (size_t)r * QD,
                       kc_l + (size_t)seq[r] * seq_stride, vc_l + (size_t)seq[r] * seq_stride,
                       kv->pos[r] + 1, NH, group, HS, KD, scale);
        tensor_linear_forward_add(kv->x, kv->atty, w->wo, n, QD, C);
        tensor_rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->mlp_norm, n, C, c->norm_eps);
        tensor_linear_forward(kv->gate, kv->xn, w->w_gate, n, C, H);
        tensor_linear_forward(kv->up, kv->xn, w->w_up, n, C, H);
        tensor_swiglu_forward(kv->gate, kv->gate, kv->up, (size_t)n * H);
        tensor_linear_forward_add(kv->x, kv->gate, w->w_down, n, H, C);
    }
    if (n_out > 0) {
        /* Final norm for the wanted rows only, packed into xn. */
        for (int o = 0; o < n_out; o++)
            tensor_rmsnorm_forward(kv->xn + (size_t)o * C, kv->rstd + o,
                                   kv->x + (size_t)out_rows[o] * C, m->w.norm, 1, C, c->norm_eps);
        tensor_linear_forward(logits, kv->xn, m->w.lm_head, n_out, C, V);
    }
    for (int r = 0; r < n; r++)
        kv->len[seq[r]] = kv->pos[r] + 1 > kv->len[seq[r]] ? kv->pos[r] + 1 : kv->len[seq[r]];
    return 0;
}
