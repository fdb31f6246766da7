/* model_int: the inside of a Model, private to model.c (construction, the
 * training forward and backward) and model_decode.c (the KV cache and
 * model_step), which read the same weights and RoPE tables. Not for other
 * modules: they go through model.h. Same ownership, threading and error
 * conventions as model.h. */
#ifndef RLHF_MODEL_INT_H
#define RLHF_MODEL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/nn/kern.h"
#include "common/nn/model.h"

typedef struct {
    float *attn_norm; /* (C) */
    float *wq;        /* (NH*HS, C) */
    float *wk;        /* (KVH*HS, C) */
    float *wv;        /* (KVH*HS, C) */
    float *wo;        /* (C, NH*HS) */
    float *mlp_norm;  /* (C) */
    float *w_gate;    /* (H, C) */
    float *w_up;      /* (H, C) */
    float *w_down;    /* (C, H) */
} LayerWeights;

/* A layer's matrices packed for kern_linear (model_set_decode_type). */
typedef struct {
    KernMat qkv;     /* parts wq (NH*HS, C), wk, wv (KVH*HS, C) */
    KernMat wo;      /* (C, NH*HS) */
    KernMat gate_up; /* SwiGLU pair w_gate, w_up (H, C) */
    KernMat down;    /* (C, H) */
} LayerKern;

/* Views into the parameter block (or, with the same offsets, the gradients). */
typedef struct {
    float        *embed;   /* (V, C) */
    LayerWeights *layers;  /* L entries */
    float        *norm;    /* (C) */
    float        *lm_head; /* (V, C); the embed view when tied */
    float        *score_w; /* (C), or NULL without a value head */
    float        *score_b; /* (1), or NULL */
} Weights;

typedef struct {
    char    name[80];
    size_t  offset; /* floats from the start of the block */
    int     ndim;
    int64_t shape[2];
    size_t  numel;
} TensorInfo;

/* Activations of one training batch, carved from one block per forward. */
typedef struct {
    int    B, T, N, M;         /* batch, sequence, rows B*T, active (unmasked) rows */
    float *resid;              /* (L+1, N, C) residual stream at each layer input, last = final */
    float *resid_mid;          /* (L, N, C) after attention */
    float *ln1, *ln2;          /* (L, N, C) normed inputs of attention and MLP */
    float *rstd1, *rstd2;      /* (L, N) */
    float *q, *atty;           /* (L, N, NH*HS) post-RoPE queries, attention outputs */
    float *k, *v;              /* (L, N, KVH*HS) post-RoPE keys, values */
    float *att;                /* (L, B, NH, T, T) attention probabilities */
    float *gate, *up, *act;    /* (L, N, H) */
    float *lnf;                /* (N, C) final normed hidden */
    float *rstdf;              /* (N) */
    float *lnf_act;            /* (M, C) lnf rows of active positions */
    float *logits;             /* (M, V) */
    float *lse;                /* (M) */
    float *logp_act, *ent_act; /* (M) */
    /* backward scratch */
    float *dresid, *dln, *dlnf;               /* (N, C) */
    float *dq, *datty;                        /* (N, NH*HS) */
    float *dk, *dv;                           /* (N, KVH*HS) */
    float *dgate, *dup, *dact;                /* (N, H) */
    float *datt;                              /* (B, NH, T, T) */
    float *dlogits;                           /* (M, V) */
    float *dlnf_act;                          /* (M, C) */
    float *dlogp_act, *dent_act;              /* (M) */
    int   *tokens, *targets_act, *pos, *rows; /* (N), (M), (N), (M) active row -> n */
    void  *block;                             /* all of the above */
    size_t block_bytes;
} Acts;

struct Model {
    ModelConfig cfg;
    size_t      n_params;
    float      *params;
    float      *grads; /* own allocation; NULL with adapters attached */
    Weights     w, g;
    int         n_tensors;
    TensorInfo *tensors;
    float      *rope_cos, *rope_sin; /* (max_seq_len, HS/2) */
    void       *block;               /* params, grads, w.layers, g.layers, tensors, rope */
    float       temperature;         /* of the distributions model_forward reports */
    Acts        a;
    Lora       *lora;        /* attached adapters (owned), or NULL; then grads is NULL */
    bool        has_forward; /* a forward ran since the last resize */
    /* Decoding in half precision (model_decode.c): */
    KernType   dec_type;    /* what model_step reads: KERN_F32 = the parameters */
    LayerKern *dec_layers;  /* L entries, in dec_block */
    KernMat    dec_lm_head; /* (V, C) */
    void      *dec_block;   /* dec_layers and every packed matrix */
    size_t     dec_bytes;
};

static inline int head_size(const ModelConfig *c)
{
    return c->dim / c->n_heads;
}

#endif
