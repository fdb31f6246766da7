#include "common/nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/base/views.h"
#include "common/nn/lora.h"
#include "common/nn/model_int.h"
#include "common/nn/tensor.h"

ModelConfig model_config_llama(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                               int vocab_size, int max_seq_len)
{
    ModelConfig c;
    /* Padding too: model_copy_params compares configs with memcmp. */
    memset(&c, 0, sizeof c);
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.dim = dim;
    c.n_layers = n_layers;
    c.n_heads = n_heads;
    c.n_kv_heads = n_kv_heads;
    c.hidden_dim = hidden_dim;
    c.vocab_size = vocab_size;
    c.max_seq_len = max_seq_len;
    return c;
}

int model_config_validate(const ModelConfig *c, char *why, size_t why_len)
{
    const char *bad = NULL;
    char        buf[160];
    if (c->dim <= 0 || c->dim > 65536)
        bad = "dim must be in 1..65536";
    else if (c->n_layers <= 0 || c->n_layers > 1024)
        bad = "n_layers must be in 1..1024";
    else if (c->n_heads <= 0 || c->dim % c->n_heads != 0)
        bad = "n_heads must divide dim";
    else if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads != 0)
        bad = "n_kv_heads must divide n_heads";
    else if (head_size(c) % 2 != 0 || head_size(c) > 1024)
        bad = "head size (dim/n_heads) must be even and at most 1024";
    else if (c->hidden_dim <= 0 || c->hidden_dim > (1 << 20))
        bad = "hidden_dim must be in 1..2^20";
    else if (c->vocab_size <= 0 || c->vocab_size > (1 << 22))
        bad = "vocab_size must be in 1..2^22";
    else if (c->max_seq_len <= 0 || c->max_seq_len > (1 << 20))
        bad = "max_seq_len must be in 1..2^20";
    else if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        bad = "rope_theta must be > 0";
    else if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f))
        bad = "norm_eps must be in (0,1)";
    if (!bad) {
        /* Parameters above 2^34 floats (64 GiB) cannot be meant for this machine. */
        double C = c->dim, HS = head_size(c), H = c->hidden_dim, V = c->vocab_size;
        double layer = 2 * C + 2 * C * c->n_heads * HS + 2 * C * c->n_kv_heads * HS + 3 * C * H;
        double total = c->n_layers * layer + V * C * (c->tie_embeddings ? 1 : 2) + C;
        if (total > 17179869184.0) {
            snprintf(buf, sizeof buf, "%.3g parameters is more than 2^34", total);
            bad = buf;
        }
    }
    if (!bad) return 0;
    err_why(why, why_len, "%s", bad);
    return ERR_RANGE;
}

/* Lays the tensors out in the block. With bind false it only counts; with
 * bind true it records the table and points the weight and gradient views. */
static void add_tensor(Model *m, bool bind, size_t *off, float **wv, float **gv, const char *name,
                       int ndim, int64_t r, int64_t c)
{
    size_t numel = (size_t)r * (size_t)(ndim == 2 ? c : 1);
    if (bind) {
        TensorInfo *t = &m->tensors[m->n_tensors];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->offset = *off;
        t->ndim = ndim;
        t->shape[0] = r;
        t->shape[1] = ndim == 2 ? c : 0;
        t->numel = numel;
        *wv = m->params + *off;
        *gv = m->grads ? m->grads + *off : NULL;
    }
    m->n_tensors++;
    *off += numel;
}

static size_t layout(Model *m, bool bind)
{
    const ModelConfig *c = &m->cfg;
    int                C = c->dim, HS = head_size(c), QD = c->n_heads * HS, KD = c->n_kv_heads * HS;
    size_t             off = 0;
    char               name[80];
    m->n_tensors = 0;
    add_tensor(m, bind, &off, &m->w.embed, &m->g.embed, "model.embed_tokens.weight", 2,
               c->vocab_size, C);
    LayerWeights count_only[2]; /* targets of the views while counting */
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *w = bind ? &m->w.layers[l] : &count_only[0];
        LayerWeights *g = bind ? &m->g.layers[l] : &count_only[1];
#define LAYER(field, suffix, nd, r, cc)                                                            \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                                  \
    add_tensor(m, bind, &off, &w->field, &g->field, name, nd, r, cc)
        LAYER(attn_norm, "input_layernorm.weight", 1, C, 0);
        LAYER(wq, "self_attn.q_proj.weight", 2, QD, C);
        LAYER(wk, "self_attn.k_proj.weight", 2, KD, C);
        LAYER(wv, "self_attn.v_proj.weight", 2, KD, C);
        LAYER(wo, "self_attn.o_proj.weight", 2, C, QD);
        LAYER(mlp_norm, "post_attention_layernorm.weight", 1, C, 0);
        LAYER(w_gate, "mlp.gate_proj.weight", 2, c->hidden_dim, C);
        LAYER(w_up, "mlp.up_proj.weight", 2, c->hidden_dim, C);
        LAYER(w_down, "mlp.down_proj.weight", 2, C, c->hidden_dim);
#undef LAYER
    }
    add_tensor(m, bind, &off, &m->w.norm, &m->g.norm, "model.norm.weight", 1, C, 0);
    if (c->tie_embeddings) {
        m->w.lm_head = m->w.embed;
        m->g.lm_head = m->g.embed;
    } else {
        add_tensor(m, bind, &off, &m->w.lm_head, &m->g.lm_head, "lm_head.weight", 2, c->vocab_size,
                   C);
    }
    m->w.score_w = m->g.score_w = m->w.score_b = m->g.score_b = NULL;
    if (c->has_value_head) {
        add_tensor(m, bind, &off, &m->w.score_w, &m->g.score_w, "score.weight", 2, 1, C);
        add_tensor(m, bind, &off, &m->w.score_b, &m->g.score_b, "score.bias", 1, 1, 0);
    }
    return off;
}

bool model_config_equal(const ModelConfig *x, const ModelConfig *y)
{
    return x->dim == y->dim && x->n_layers == y->n_layers && x->n_heads == y->n_heads &&
           x->n_kv_heads == y->n_kv_heads && x->hidden_dim == y->hidden_dim &&
           x->vocab_size == y->vocab_size && x->max_seq_len == y->max_seq_len &&
           x->rope_theta == y->rope_theta && x->norm_eps == y->norm_eps &&
           x->tie_embeddings == y->tie_embeddings && x->has_value_head == y->has_value_head;
}

size_t model_config_num_params(const ModelConfig *cfg)
{
    char why[160];
    CHECK(model_config_validate(cfg, why, sizeof why) == 0);
    Model m = {.cfg = *cfg};
    return layout(&m, false);
}

Model *model_new(const ModelConfig *cfg)
{
    char why[160];
    CHECK(model_config_validate(cfg, why, sizeof why) == 0);
    Model *m = xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->n_params = layout(m, false);
    size_t L = (size_t)cfg->n_layers, rope = (size_t)cfg->max_seq_len * (head_size(cfg) / 2);
    View   views[] = {VIEW(&m->params, m->n_params), VIEW(&m->w.layers, L),
                      VIEW(&m->g.layers, L),         VIEW(&m->tensors, m->n_tensors),
                      VIEW(&m->rope_cos, rope),      VIEW(&m->rope_sin, rope)};
    m->block = views_alloc(views, sizeof views / sizeof views[0]);
    /* The gradients have a block of their own: adapters free it. */
    m->grads = xmalloc(m->n_params * sizeof(float));
    memset(m->params, 0, m->n_params * sizeof(float));
    memset(m->grads, 0, m->n_params * sizeof(float));
    layout(m, true); /* fills the layer views and the tensor table */
    for (int l = 0; l < cfg->n_layers; l++) {
        for (int c = 0; c < cfg->dim; c++) {
            m->w.layers[l].attn_norm[c] = 1.0f;
            m->w.layers[l].mlp_norm[c] = 1.0f;
        }
    }
    for (int c = 0; c < cfg->dim; c++) m->w.norm[c] = 1.0f;
    m->temperature = 1.0f;
    tensor_rope_table(m->rope_cos, m->rope_sin, cfg->max_seq_len, head_size(cfg), cfg->rope_theta);
    return m;
}

void model_free(Model **pm)
{
    Model *m = *pm;
    if (!m) return;
    free(m->a.block);
    free(m->dec_block);
    lora_free(&m->lora);
    free(m->grads);
    free(m->block);
    free(m);
    *pm = NULL;
}

const ModelConfig *model_config(const Model *m)
{
    return &m->cfg;
}

size_t model_num_params(const Model *m)
{
    return m->n_params;
}

float *model_params(Model *m)
{
    return m->params;
}

float *model_grads(Model *m)
{
    return m->grads;
}

void model_zero_grad(Model *m)
{
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
    if (m->lora) lora_zero_grad(m->lora);
}

void model_attach_lora(Model *m, Lora **lo)
{
    CHECK(!m->lora && *lo);
    CHECK(model_config_equal(&m->cfg, lora_model_config(*lo)));
    m->lora = *lo;
    *lo = NULL;
    free(m->grads);
    m->grads = NULL;
    layout(m, true); /* the gradient views become NULL */
}

Lora *model_lora(const Model *m)
{
    return m->lora;
}

float *model_train_params(Model *m)
{
    return m->lora ? lora_params(m->lora) : m->params;
}

float *model_train_grads(Model *m)
{
    return m->lora ? lora_grads(m->lora) : m->grads;
}

size_t model_num_train_params(const Model *m)
{
    return m->lora ? lora_num_params(m->lora) : m->n_params;
}

void model_memory(const Model *m, ModelMemory *out)
{
    out->params_bytes = m->n_params * sizeof(float);
    out->grads_bytes = m->grads ? m->n_params * sizeof(float) : 0;
    out->acts_bytes = m->a.block_bytes;
    out->adapter_bytes = out->adapter_acts_bytes = 0;
    if (m->lora) {
        out->adapter_bytes = lora_num_params(m->lora) * sizeof(float);
        out->grads_bytes += lora_num_params(m->lora) * sizeof(float);
        out->adapter_acts_bytes = lora_act_bytes(m->lora);
    }
}

void model_init_random(Model *m, uint64_t seed, float std)
{
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        TensorInfo *t = &m->tensors[i];
        float      *p = m->params + t->offset;
        bool        is_norm = t->ndim == 1 && strstr(t->name, "norm");
        for (size_t j = 0; j < t->numel; j++) p[j] = is_norm ? 1.0f : std * rng_normal(&r);
        if (!strcmp(t->name, "score.bias")) p[0] = 0.0f;
    }
}

void model_copy_params(Model *dst, const Model *src)
{
    CHECK(memcmp(&dst->cfg, &src->cfg, sizeof dst->cfg) == 0);
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
}

int model_num_tensors(const Model *m)
{
    return m->n_tensors;
}

void model_tensor(Model *m, int i, ModelTensor *out)
{
    CHECK(i >= 0 && i < m->n_tensors);
    TensorInfo *t = &m->tensors[i];
    snprintf(out->name, sizeof out->name, "%s", t->name);
    out->data = m->params + t->offset;
    out->grad = m->grads ? m->grads + t->offset : NULL;
    out->ndim = t->ndim;
    out->shape[0] = t->shape[0];
    out->shape[1] = t->shape[1];
    out->numel = t->numel;
}

int model_find_tensor(Model *m, const char *name, ModelTensor *out)
{
    for (int i = 0; i < m->n_tensors; i++) {
        if (!strcmp(m->tensors[i].name, name)) {
            model_tensor(m, i, out);
            return 0;
        }
    }
    return ERR_NOTFOUND;
}

/* Carves the activation block for a (B, T) batch with M active rows,
 * growing it when needed. */
static void acts_prepare(Model *m, int B, int T, int M)
{
    const ModelConfig *c = &m->cfg;
    Acts              *a = &m->a;
    size_t             N = (size_t)B * T, L = (size_t)c->n_layers, C = (size_t)c->dim;
    size_t             HS = (size_t)head_size(c), QD = c->n_heads * HS, KD = c->n_kv_heads * HS;
    size_t             H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size, Mz = (size_t)M;
    size_t             att = (size_t)B * c->n_heads * T * T;
    size_t             NC = N * C, NQ = N * QD, NK = N * KD, NH_ = N * H, MC = Mz * C, MV = Mz * V;

    /* Each view starts on a 64-byte boundary for the BLAS kernels. */
    View views[] = {VIEW(&a->resid, (L + 1) * NC),
                    VIEW(&a->resid_mid, L * NC),
                    VIEW(&a->ln1, L * NC),
                    VIEW(&a->ln2, L * NC),
                    VIEW(&a->rstd1, L * N),
                    VIEW(&a->rstd2, L * N),
                    VIEW(&a->q, L * NQ),
                    VIEW(&a->atty, L * NQ),
                    VIEW(&a->k, L * NK),
                    VIEW(&a->v, L * NK),
                    VIEW(&a->att, L * att),
                    VIEW(&a->gate, L * NH_),
                    VIEW(&a->up, L * NH_),
                    VIEW(&a->act, L * NH_),
                    VIEW(&a->lnf, NC),
                    VIEW(&a->rstdf, N),
                    VIEW(&a->lnf_act, MC),
                    VIEW(&a->logits, MV),
                    VIEW(&a->lse, Mz),
                    VIEW(&a->logp_act, Mz),
                    VIEW(&a->ent_act, Mz),
                    VIEW(&a->dresid, NC),
                    VIEW(&a->dln, NC),
                    VIEW(&a->dlnf, NC),
                    VIEW(&a->dq, NQ),
                    VIEW(&a->datty, NQ),
                    VIEW(&a->dk, NK),
                    VIEW(&a->dv, NK),
                    VIEW(&a->dgate, NH_),
                    VIEW(&a->dup, NH_),
                    VIEW(&a->dact, NH_),
                    VIEW(&a->datt, att),
                    VIEW(&a->dlogits, MV),
                    VIEW(&a->dlnf_act, MC),
                    VIEW(&a->dlogp_act, Mz),
                    VIEW(&a->dent_act, Mz),
                    VIEW(&a->tokens, N),
                    VIEW(&a->pos, N),
                    VIEW(&a->targets_act, Mz),
                    VIEW(&a->rows, Mz)};
    views_reserve(&a->block, &a->block_bytes, views, sizeof views / sizeof views[0]);
    a->B = B;
    a->T = T;
    a->N = (int)N;
    a->M = M;
}

void model_set_temperature(Model *m, float T)
{
    CHECK(isfinite(T) && T > 0.0f);
    m->temperature = T;
}

float model_temperature(const Model *m)
{
    return m->temperature;
}

static void scale_floats(float *x, size_t n, float k)
{
    for (size_t i = 0; i < n; i++) x[i] *= k;
}

/* One layer's slices of the activation block, as the forward pass writes
 * them and the backward pass reads them. */
typedef struct {
    float *x, *xnext, *mid; /* (N, C) layer input, output, after attention */
    float *ln1, *ln2;       /* (N, C) normed inputs of attention and MLP */
    float *rstd1, *rstd2;   /* (N) */
    float *q, *atty;        /* (N, NH*HS) */
    float *k, *v;           /* (N, KVH*HS) */
    float *att;             /* (B, NH, T, T) */
    float *gate, *up, *act; /* (N, H) */
} LayerActs;

static LayerActs layer_acts(const Model *m, int l)
{
    const ModelConfig *c = &m->cfg;
    const Acts        *a = &m->a;
    size_t             N = (size_t)a->N, HS = (size_t)head_size(c);
    size_t             NC = N * c->dim, NQ = N * c->n_heads * HS, NK = N * c->n_kv_heads * HS;
    size_t             NH_ = N * c->hidden_dim, L = (size_t)l;
    LayerActs          la = {
                 .x = a->resid + L * NC,
                 .xnext = a->resid + (L + 1) * NC,
                 .mid = a->resid_mid + L * NC,
                 .ln1 = a->ln1 + L * NC,
                 .ln2 = a->ln2 + L * NC,
                 .rstd1 = a->rstd1 + L * N,
                 .rstd2 = a->rstd2 + L * N,
                 .q = a->q + L * NQ,
                 .atty = a->atty + L * NQ,
                 .k = a->k + L * NK,
                 .v = a->v + L * NK,
                 .att = a->att + L * a->B * c->n_heads * a->T * a->T,
                 .gate = a->gate + L * NH_,
                 .up = a->up + L * NH_,
                 .act = a->act + L * NH_,
    };
    return la;
}

/* The adapters' share of a projection, when adapters are attached: out
 * (N, OUT) += their update of inp (N, IN), and its backward. */
static void adapter_forward(Model *m, int l, LoraTarget t, float *out, const float *inp, int N)
{
    if (m->lora) lora_forward(m->lora, l, t, out, inp, N);
}

static void adapter_backward(Model *m, int l, LoraTarget t, float *dinp, const float *dout,
                             const float *inp, int N)
{
    if (m->lora) lora_backward(m->lora, l, t, dinp, dout, inp, N);
}

void model_forward(Model *m, const int *tokens, const int *targets, const float *mask, int B, int T,
                   float *logp, float *entropy, float *value)
{
    const ModelConfig *c = &m->cfg;
    CHECK(B > 0 && T > 0 && T <= c->max_seq_len);
    CHECK(!value || c->has_value_head);
    int N = B * T, M = 0;
    for (int n = 0; n < N; n++) M += !mask || mask[n] != 0.0f;
    acts_prepare(m, B, T, M);
    if (m->lora) lora_prepare(m->lora, N);
    Acts  *a = &m->a;
    int    C = c->dim, HS = head_size(c), NH = c->n_heads, KVH = c->n_kv_heads;
    int    QD = NH * HS, KD = KVH * HS, H = c->hidden_dim, V = c->vocab_size;
    size_t NC = (size_t)N * C;

    for (int n = 0, i = 0; n < N; n++) {
        CHECK(tokens[n] >= 0 && tokens[n] < V);
        a->tokens[n] = tokens[n];
        a->pos[n] = n % T;
        if (!mask || mask[n] != 0.0f) {
            CHECK(targets[n] >= 0 && targets[n] < V);
            a->rows[i] = n;
            a->targets_act[i++] = targets[n];
        }
    }
    for (int n = 0; n < N; n++)
        memcpy(a->resid + (size_t)n * C, m->w.embed + (size_t)tokens[n] * C, C * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        LayerActs           la = layer_acts(m, l);
        size_t              NH_ = (size_t)N * H;

        tensor_rmsnorm_forward(la.ln1, la.rstd1, la.x, w->attn_norm, N, C, c->norm_eps);
        tensor_linear_forward(la.q, la.ln1, w->wq, N, C, QD);
        adapter_forward(m, l, LORA_Q, la.q, la.ln1, N);
        tensor_linear_forward(la.k, la.ln1, w->wk, N, C, KD);
        adapter_forward(m, l, LORA_K, la.k, la.ln1, N);
        tensor_linear_forward(la.v, la.ln1, w->wv, N, C, KD);
        adapter_forward(m, l, LORA_V, la.v, la.ln1, N);
        tensor_rope_forward(la.q, a->pos, N, NH, HS, m->rope_cos, m->rope_sin);
        tensor_rope_forward(la.k, a->pos, N, KVH, HS, m->rope_cos, m->rope_sin);
        tensor_attention_forward(la.atty, la.att, la.q, la.k, la.v, B, T, NH, KVH, HS);
        memcpy(la.mid, la.x, NC * sizeof(float));
        tensor_gemm(false, true, N, C, QD, 1.0f, la.atty, QD, w->wo, QD, 1.0f, la.mid, C);
        adapter_forward(m, l, LORA_O, la.mid, la.atty, N);
        tensor_rmsnorm_forward(la.ln2, la.rstd2, la.mid, w->mlp_norm, N, C, c->norm_eps);
        tensor_linear_forward(la.gate, la.ln2, w->w_gate, N, C, H);
        adapter_forward(m, l, LORA_GATE, la.gate, la.ln2, N);
        tensor_linear_forward(la.up, la.ln2, w->w_up, N, C, H);
        adapter_forward(m, l, LORA_UP, la.up, la.ln2, N);
        tensor_swiglu_forward(la.act, la.gate, la.up, NH_);
        memcpy(la.xnext, la.mid, NC * sizeof(float));
        tensor_gemm(false, true, N, C, H, 1.0f, la.act, H, w->w_down, H, 1.0f, la.xnext, C);
        adapter_forward(m, l, LORA_DOWN, la.xnext, la.act, N);
    }
    float *xf = a->resid + (size_t)c->n_layers * NC;
    tensor_rmsnorm_forward(a->lnf, a->rstdf, xf, m->w.norm, N, C, c->norm_eps);
    /* The vocabulary work runs only over the active rows. */
    for (int i = 0; i < M; i++)
        memcpy(a->lnf_act + (size_t)i * C, a->lnf + (size_t)a->rows[i] * C, C * sizeof(float));
    tensor_linear_forward(a->logits, a->lnf_act, m->w.lm_head, M, C, V);
    if (m->temperature != 1.0f) scale_floats(a->logits, (size_t)M * V, 1.0f / m->temperature);
    tensor_logp_forward(a->logp_act, a->ent_act, a->lse, a->logits, a->targets_act, M, V);
    if (logp) memset(logp, 0, (size_t)N * sizeof(float));
    if (entropy) memset(entropy, 0, (size_t)N * sizeof(float));
    for (int i = 0; i < M; i++) {
        if (logp) logp[a->rows[i]] = a->logp_act[i];
        if (entropy) entropy[a->rows[i]] = a->ent_act[i];
    }
    if (value) {
        for (int n = 0; n < N; n++) {
            const float *h = a->lnf + (size_t)n * C;
            double       s = m->w.score_b[0];
            for (int i = 0; i < C; i++) s += (double)h[i] * m->w.score_w[i];
            value[n] = (float)s;
        }
    }
    m->has_forward = true;
}

void model_backward(Model *m, const float *dlogp, const float *dentropy, const float *dvalue)
{
    CHECK(m->has_forward);
    const ModelConfig *c = &m->cfg;
    Acts              *a = &m->a;
    int                B = a->B, T = a->T, N = a->N, M = a->M;
    int                C = c->dim, HS = head_size(c), NH = c->n_heads, KVH = c->n_kv_heads;
    int                QD = NH * HS, KD = KVH * HS, H = c->hidden_dim, V = c->vocab_size;
    size_t             NC = (size_t)N * C;

    memset(a->dlnf, 0, NC * sizeof(float));
    bool any_vocab = false;
    for (int i = 0; i < M; i++) {
        a->dlogp_act[i] = dlogp ? dlogp[a->rows[i]] : 0.0f;
        a->dent_act[i] = dentropy ? dentropy[a->rows[i]] : 0.0f;
        any_vocab |= a->dlogp_act[i] != 0.0f || a->dent_act[i] != 0.0f;
    }
    if (any_vocab) {
        memset(a->dlogits, 0, (size_t)M * V * sizeof(float));
        tensor_logp_backward(a->dlogits, a->dlogp_act, a->dent_act, a->logits, a->lse, a->ent_act,
                             a->targets_act, M, V);
        /* logits / T: the chain rule scales the gradient by 1 / T. */
        if (m->temperature != 1.0f) scale_floats(a->dlogits, (size_t)M * V, 1.0f / m->temperature);
        memset(a->dlnf_act, 0, (size_t)M * C * sizeof(float));
        tensor_linear_backward(a->dlnf_act, m->g.lm_head, a->dlogits, a->lnf_act, m->w.lm_head, M,
                               C, V);
        for (int i = 0; i < M; i++)
            memcpy(a->dlnf + (size_t)a->rows[i] * C, a->dlnf_act + (size_t)i * C,
                   C * sizeof(float));
    }
    if (dvalue) {
        CHECK(c->has_value_head);
        for (int n = 0; n < N; n++) {
            float        dv = dvalue[n];
            const float *h = a->lnf + (size_t)n * C;
            float       *dh = a->dlnf + (size_t)n * C;
            if (dv == 0.0f) continue;
            for (int i = 0; i < C; i++) dh[i] += dv * m->w.score_w[i];
            if (!m->grads) continue; /* a frozen base */
            for (int i = 0; i < C; i++) m->g.score_w[i] += dv * h[i];
            m->g.score_b[0] += dv;
        }
    }
    float *xf = a->resid + (size_t)c->n_layers * NC;
    memset(a->dresid, 0, NC * sizeof(float));
    tensor_rmsnorm_backward(a->dresid, m->g.norm, a->dlnf, xf, m->w.norm, a->rstdf, N, C);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerWeights *w = &m->w.layers[l];
        LayerWeights       *g = &m->g.layers[l];
        LayerActs           la = layer_acts(m, l);
        size_t              NH_ = (size_t)N * H;

        /* MLP: xnext = mid + act w_down^T; dresid is d xnext and stays the identity path. */
        memset(a->dact, 0, NH_ * sizeof(float));
        tensor_linear_backward(a->dact, g->w_down, a->dresid, la.act, w->w_down, N, H, C);
        adapter_backward(m, l, LORA_DOWN, a->dact, a->dresid, la.act, N);
        memset(a->dgate, 0, NH_ * sizeof(float));
        memset(a->dup, 0, NH_ * sizeof(float));
        tensor_swiglu_backward(a->dgate, a->dup, a->dact, la.gate, la.up, NH_);
        memset(a->dln, 0, NC * sizeof(float));
        tensor_linear_backward(a->dln, g->w_gate, a->dgate, la.ln2, w->w_gate, N, C, H);
        adapter_backward(m, l, LORA_GATE, a->dln, a->dgate, la.ln2, N);
        tensor_linear_backward(a->dln, g->w_up, a->dup, la.ln2, w->w_up, N, C, H);
        adapter_backward(m, l, LORA_UP, a->dln, a->dup, la.ln2, N);
        tensor_rmsnorm_backward(a->dresid, g->mlp_norm, a->dln, la.mid, w->mlp_norm, la.rstd2, N,
                                C);
        /* Attention: mid = x + atty wo^T; dresid is now d mid. */
        memset(a->datty, 0, (size_t)N * QD * sizeof(float));
        tensor_linear_backward(a->datty, g->wo, a->dresid, la.atty, w->wo, N, QD, C);
        adapter_backward(m, l, LORA_O, a->datty, a->dresid, la.atty, N);
        memset(a->dq, 0, (size_t)N * QD * sizeof(float));
        memset(a->dk, 0, (size_t)N * KD * sizeof(float));
        memset(a->dv, 0, (size_t)N * KD * sizeof(float));
        tensor_attention_backward(a->dq, a->dk, a->dv, a->datt, a->datty, la.att, la.q, la.k, la.v,
                                  B, T, NH, KVH, HS);
        tensor_rope_backward(a->dq, a->pos, N, NH, HS, m->rope_cos, m->rope_sin);
        tensor_rope_backward(a->dk, a->pos, N, KVH, HS, m->rope_cos, m->rope_sin);
        memset(a->dln, 0, NC * sizeof(float));
        tensor_linear_backward(a->dln, g->wq, a->dq, la.ln1, w->wq, N, C, QD);
        adapter_backward(m, l, LORA_Q, a->dln, a->dq, la.ln1, N);
        tensor_linear_backward(a->dln, g->wk, a->dk, la.ln1, w->wk, N, C, KD);
        adapter_backward(m, l, LORA_K, a->dln, a->dk, la.ln1, N);
        tensor_linear_backward(a->dln, g->wv, a->dv, la.ln1, w->wv, N, C, KD);
        adapter_backward(m, l, LORA_V, a->dln, a->dv, la.ln1, N);
        tensor_rmsnorm_backward(a->dresid, g->attn_norm, a->dln, la.x, w->attn_norm, la.rstd1, N,
                                C);
    }
    for (int n = 0; n < N && m->grads; n++) {
        float       *ge = m->g.embed + (size_t)a->tokens[n] * C;
        const float *d = a->dresid + (size_t)n * C;
        for (int i = 0; i < C; i++) ge[i] += d[i];
    }
}

const float *model_last_logits(const Model *m, int *n_active)
{
    CHECK(m->has_forward);
    if (n_active) *n_active = m->a.M;
    return m->a.logits;
}

double model_train_flops(const ModelConfig *c, int B, int T)
{
    double C = c->dim, HS = head_size(c), QD = c->n_heads * HS, KD = c->n_kv_heads * HS;
    double H = c->hidden_dim, V = c->vocab_size, L = c->n_layers, tokens = (double)B * T;
    /* Matmul parameters: every projection plus the LM head (the embedding
     * lookup is not a product). Attention: QK^T and PV over the full T x T
     * square as computed, 2 products x 2 flops forward, x3 with backward. */
    double matmul_params = L * (2 * C * QD + 2 * C * KD + 3 * C * H) + V * C;
    double attention = 12.0 * L * B * (double)T * T * QD;
    return 6.0 * matmul_params * tokens + attention;
}
