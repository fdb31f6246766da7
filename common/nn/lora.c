#include "common/nn/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/base/views.h"
#include "common/nn/tensor.h"

static const char *const TARGET_WORD[LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const TARGET_NAME[LORA_N_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* Where one adapter lives: offsets in floats from the start of the block. */
typedef struct {
    size_t a_off, b_off; /* A (r, IN), B (OUT, r) */
    size_t u_off;        /* saved x A^T (N, r) in the activation block, in rows of r */
    int    in, out;      /* IN, OUT */
} Slot;

struct Lora {
    LoraConfig  cfg;
    ModelConfig mc;
    float       scale; /* alpha / r */
    size_t      n_params;
    int         n_slots; /* targets per layer times layers */
    int         per_layer;
    int         slot_of[LORA_N_TARGETS]; /* index within a layer, -1 when not a target */
    Slot       *slots;                   /* (L, per_layer) */
    float      *params, *grads;
    void       *block;
    /* Saved for the backward pass, sized by lora_prepare: */
    int    N;         /* rows prepared for */
    float *u;         /* (L, per_layer, N, r) x A^T of each forward */
    float *du;        /* (N, r) backward scratch */
    void  *act_block; /* u and du */
    size_t act_bytes;
};

int lora_parse_targets(const char *s, unsigned *targets, char *why, size_t why_len)
{
    unsigned t = 0;
    char     word[32];
    if (!s || !*s) {
        err_why(why, why_len, "empty target list (want some of q,k,v,o,gate,up,down,attn,mlp,all)");
        return ERR_RANGE;
    }
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 0 || n >= sizeof word) {
            err_why(why, why_len, "empty or overlong target in the list");
            return ERR_RANGE;
        }
        memcpy(word, s, n);
        word[n] = '\0';
        s += n + (s[n] == ',');
        if (!strcmp(word, "all")) {
            t |= LORA_TARGETS_ALL;
            continue;
        }
        if (!strcmp(word, "attn")) {
            t |= LORA_TARGETS_ATTN;
            continue;
        }
        if (!strcmp(word, "mlp")) {
            t |= LORA_TARGETS_MLP;
            continue;
        }
        int k = 0;
        while (k < LORA_N_TARGETS && strcmp(word, TARGET_WORD[k])) k++;
        if (k == LORA_N_TARGETS) {
            err_why(why, why_len,
                    "unknown target '%s' (want some of q,k,v,o,gate,up,down,attn,mlp,all)", word);
            return ERR_RANGE;
        }
        t |= 1u << k;
    }
    *targets = t;
    return 0;
}

void lora_format_targets(unsigned targets, char *out, size_t out_len)
{
    size_t at = 0;
    CHECK(out_len > 0);
    out[0] = '\0';
    for (int k = 0; k < LORA_N_TARGETS; k++) {
        if (!(targets & (1u << k))) continue;
        int n = snprintf(out + at, out_len - at, "%s%s", at ? "," : "", TARGET_WORD[k]);
        if (n < 0 || (size_t)n >= out_len - at) return;
        at += (size_t)n;
    }
}

/* IN and OUT of target t on a model of shape c. */
static void target_shape(const ModelConfig *c, int t, int *in, int *out)
{
    int C = c->dim, HS = c->dim / c->n_heads, QD = c->n_heads * HS, KD = c->n_kv_heads * HS;
    int H = c->hidden_dim;
    static const int IS_IN_C[LORA_N_TARGETS] = {1, 1, 1, 0, 1, 1, 0};
    int              outs[LORA_N_TARGETS] = {QD, KD, KD, C, H, H, C};
    *in = IS_IN_C[t] ? C : (t == LORA_O ? QD : H);
    *out = outs[t];
}

int lora_config_validate(const LoraConfig *lc, const ModelConfig *mc, char *why, size_t why_len)
{
    if (lc->rank < 1 || lc->rank > LORA_MAX_RANK) {
        err_why(why, why_len, "rank %d is outside 1..%d", lc->rank, LORA_MAX_RANK);
        return ERR_RANGE;
    }
    if (!isfinite(lc->alpha) || !(lc->alpha > 0.0f)) {
        err_why(why, why_len, "alpha %g must be finite and > 0", (double)lc->alpha);
        return ERR_RANGE;
    }
    if (lc->targets == 0 || (lc->targets & ~LORA_TARGETS_ALL)) {
        err_why(why, why_len, "targets 0x%x must be a non-empty set of q,k,v,o,gate,up,down",
                lc->targets);
        return ERR_RANGE;
    }
    for (int t = 0; t < LORA_N_TARGETS; t++) {
        int in, out;
        if (!(lc->targets & (1u << t))) continue;
        target_shape(mc, t, &in, &out);
        if (lc->rank > in || lc->rank > out) {
            err_why(why, why_len, "rank %d exceeds the %s projection's smaller side (%d x %d)",
                    lc->rank, TARGET_WORD[t], out, in);
            return ERR_RANGE;
        }
    }
    return 0;
}

/* Fills the slot table when lo->slots is set; returns the block size. */
static size_t layout(Lora *lo)
{
    size_t off = 0, u_off = 0, r = (size_t)lo->cfg.rank;
    lo->per_layer = 0;
    for (int t = 0; t < LORA_N_TARGETS; t++)
        lo->slot_of[t] = lo->cfg.targets & (1u << t) ? lo->per_layer++ : -1;
    lo->n_slots = lo->mc.n_layers * lo->per_layer;
    for (int l = 0; l < lo->mc.n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (lo->slot_of[t] < 0) continue;
            int in, out;
            target_shape(&lo->mc, t, &in, &out);
            if (lo->slots) {
                Slot *s = &lo->slots[l * lo->per_layer + lo->slot_of[t]];
                s->in = in;
                s->out = out;
                s->a_off = off;
                s->b_off = off + r * (size_t)in;
                s->u_off = u_off;
            }
            off += r * ((size_t)in + (size_t)out);
            u_off++;
        }
    }
    return off;
}

size_t lora_config_num_params(const LoraConfig *lc, const ModelConfig *mc)
{
    Lora lo = {.cfg = *lc, .mc = *mc};
    return layout(&lo);
}

Lora *lora_new(const LoraConfig *lc, const ModelConfig *mc)
{
    char why[160];
    CHECK(lora_config_validate(lc, mc, why, sizeof why) == 0);
    Lora *lo = xcalloc(1, sizeof *lo);
    lo->cfg = *lc;
    lo->mc = *mc;
    lo->scale = lc->alpha / (float)lc->rank;
    lo->n_params = layout(lo);
    View views[] = {VIEW(&lo->params, lo->n_params), VIEW(&lo->grads, lo->n_params),
                    VIEW(&lo->slots, lo->n_slots)};
    lo->block = views_alloc(views, sizeof views / sizeof views[0]);
    memset(lo->params, 0, lo->n_params * sizeof(float));
    memset(lo->grads, 0, lo->n_params * sizeof(float));
    layout(lo);
    return lo;
}

void lora_free(Lora **plo)
{
    Lora *lo = *plo;
    if (!lo) return;
    free(lo->act_block);
    free(lo->block);
    free(lo);
    *plo = NULL;
}

const LoraConfig *lora_config(const Lora *lo)
{
    return &lo->cfg;
}

const ModelConfig *lora_model_config(const Lora *lo)
{
    return &lo->mc;
}

float lora_scale(const Lora *lo)
{
    return lo->scale;
}

size_t lora_num_params(const Lora *lo)
{
    return lo->n_params;
}

float *lora_params(Lora *lo)
{
    return lo->params;
}

float *lora_grads(Lora *lo)
{
    return lo->grads;
}

void lora_zero_grad(Lora *lo)
{
    memset(lo->grads, 0, lo->n_params * sizeof(float));
}

size_t lora_act_bytes(const Lora *lo)
{
    return lo->act_bytes;
}

void lora_init_random(Lora *lo, uint64_t seed)
{
    Rng g;
    rng_seed(&g, seed);
    size_t r = (size_t)lo->cfg.rank;
    for (int i = 0; i < lo->n_slots; i++) {
        const Slot *s = &lo->slots[i];
        float       bound = 1.0f / sqrtf((float)s->in);
        float      *A = lo->params + s->a_off;
        for (size_t j = 0; j < r * (size_t)s->in; j++)
            A[j] = bound * (2.0f * rng_uniform(&g) - 1.0f);
        memset(lo->params + s->b_off, 0, (size_t)s->out * r * sizeof(float));
    }
}

int lora_num_tensors(const Lora *lo)
{
    return 2 * lo->n_slots;
}

void lora_tensor(Lora *lo, int i, ModelTensor *out)
{
    CHECK(i >= 0 && i < 2 * lo->n_slots);
    int         si = i / 2, l = si / lo->per_layer, k = si % lo->per_layer, t = 0;
    const Slot *s = &lo->slots[si];
    bool        is_b = i % 2 == 1;
    while (lo->slot_of[t] != k) t++;
    size_t off = is_b ? s->b_off : s->a_off;
    snprintf(out->name, sizeof out->name, "model.layers.%d.%s.lora_%c.weight", l, TARGET_NAME[t],
             is_b ? 'B' : 'A');
    out->data = lo->params + off;
    out->grad = lo->grads + off;
    out->ndim = 2;
    out->shape[0] = is_b ? s->out : lo->cfg.rank;
    out->shape[1] = is_b ? lo->cfg.rank : s->in;
    out->numel = (size_t)out->shape[0] * (size_t)out->shape[1];
}

void lora_prepare(Lora *lo, int N)
{
    CHECK(N > 0);
    size_t r = (size_t)lo->cfg.rank, Nz = (size_t)N;
    View   views[] = {VIEW(&lo->u, (size_t)lo->n_slots * Nz * r), VIEW(&lo->du, Nz * r)};
    views_reserve(&lo->act_block, &lo->act_bytes, views, sizeof views / sizeof views[0]);
    lo->N = N;
}

static const Slot *slot(const Lora *lo, int layer, LoraTarget t)
{
    CHECK(layer >= 0 && layer < lo->mc.n_layers && (int)t >= 0 && t < LORA_N_TARGETS);
    int k = lo->slot_of[t];
    return k < 0 ? NULL : &lo->slots[layer * lo->per_layer + k];
}

void lora_forward(Lora *lo, int layer, LoraTarget t, float *out, const float *inp, int N)
{
    const Slot *s = slot(lo, layer, t);
    if (!s) return;
    CHECK(N == lo->N);
    int          r = lo->cfg.rank, IN = s->in, OUT = s->out;
    const float *A = lo->params + s->a_off, *B = lo->params + s->b_off;
    float       *u = lo->u + s->u_off * (size_t)N * r;
    /* u (N,r) = inp (N,IN) A^T; out (N,OUT) += scale u B^T. */
    tensor_gemm(false, true, N, r, IN, 1.0f, inp, IN, A, IN, 0.0f, u, r);
    tensor_gemm(false, true, N, OUT, r, lo->scale, u, r, B, r, 1.0f, out, OUT);
}

void lora_backward(Lora *lo, int layer, LoraTarget t, float *dinp, const float *dout,
                   const float *inp, int N)
{
    const Slot *s = slot(lo, layer, t);
    if (!s) return;
    CHECK(N == lo->N);
    int          r = lo->cfg.rank, IN = s->in, OUT = s->out;
    const float *A = lo->params + s->a_off, *B = lo->params + s->b_off;
    float       *dA = lo->grads + s->a_off, *dB = lo->grads + s->b_off;
    const float *u = lo->u + s->u_off * (size_t)N * r;
    /* dB (OUT,r) += scale dout^T u; du (N,r) = scale dout B;
     * dA (r,IN) += du^T inp; dinp (N,IN) += du A. */
    tensor_gemm(true, false, OUT, r, N, lo->scale, dout, OUT, u, r, 1.0f, dB, r);
    tensor_gemm(false, false, N, r, OUT, lo->scale, dout, OUT, B, r, 0.0f, lo->du, r);
    tensor_gemm(true, false, r, IN, N, 1.0f, lo->du, r, inp, IN, 1.0f, dA, IN);
    if (dinp) tensor_gemm(false, false, N, IN, r, 1.0f, lo->du, r, A, IN, 1.0f, dinp, IN);
}

void lora_merge(const Lora *lo, Model *m)
{
    CHECK(model_config_equal(model_config(m), &lo->mc));
    CHECK(!model_lora(m));
    char name[96];
    int  r = lo->cfg.rank;
    for (int l = 0; l < lo->mc.n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const Slot *s = slot(lo, l, (LoraTarget)t);
            if (!s) continue;
            ModelTensor w;
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, TARGET_NAME[t]);
            CHECK(model_find_tensor(m, name, &w) == 0);
            CHECK(w.shape[0] == s->out && w.shape[1] == s->in);
            /* W (OUT,IN) += scale B (OUT,r) A (r,IN). */
            tensor_gemm(false, false, s->out, s->in, r, lo->scale, lo->params + s->b_off, r,
                        lo->params + s->a_off, s->in, 1.0f, w.data, s->in);
        }
    }
}
