/* lora: low-rank adapters on a model's projections, trained with the base frozen.
 *
 * An adapter on projection W (OUT, IN) of a layer is a pair A (r, IN),
 * B (OUT, r); the adapted projection is y = x W^T + (alpha / r) (x A^T) B^T,
 * that is W + (alpha / r) B A merged. B starts at zero, so an adapter fresh
 * from lora_init_random leaves the model unchanged, and A starts small and
 * random so B's gradient is not zero. Targets are any of the attention
 * projections q, k, v, o and the MLP's gate, up, down, the same set in every
 * layer.
 *
 * A Lora is one parameter block (every A and B, in layer order, then target
 * order, A before B) with a matching gradient block, named like the model's
 * tensors ("model.layers.N.self_attn.q_proj.lora_A.weight"), plus the values
 * its backward pass needs. Attached to a Model (model_attach_lora), the
 * model's training forward adds the adapters and its backward fills only the
 * adapters' gradients: the base has no gradient block. Decoding reads merged
 * weights instead (lora_merge into a copy of the base).
 *
 * Ownership: lora_new's caller owns the Lora until model_attach_lora takes
 * it; views are borrowed for its lifetime. Threading: a Lora belongs to the
 * thread of its model. Errors: config and targets parsing report ERR_RANGE
 * with a reason; misuse (a layer or target out of range, an unprepared
 * forward) is a CHECK. */
#ifndef RLHF_LORA_H
#define RLHF_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/nn/model.h"

/* Only appended to: target bits reach checkpoints. */
typedef enum {
    LORA_Q,
    LORA_K,
    LORA_V,
    LORA_O,
    LORA_GATE,
    LORA_UP,
    LORA_DOWN,
    LORA_N_TARGETS
} LoraTarget;

#define LORA_TARGETS_ATTN ((1u << LORA_Q) | (1u << LORA_K) | (1u << LORA_V) | (1u << LORA_O))
#define LORA_TARGETS_MLP ((1u << LORA_GATE) | (1u << LORA_UP) | (1u << LORA_DOWN))
#define LORA_TARGETS_ALL (LORA_TARGETS_ATTN | LORA_TARGETS_MLP)
#define LORA_MAX_RANK 4096

typedef struct {
    int      rank;    /* r, in 1..LORA_MAX_RANK and at most the smaller side of every target */
    float    alpha;   /* the update is scaled by alpha / r; finite and > 0 */
    unsigned targets; /* bit set of 1 << LoraTarget, non-empty, within LORA_TARGETS_ALL */
} LoraConfig;

typedef struct Lora Lora;

/* Parses a comma-separated list of targets: q, k, v, o, gate, up, down, or
 * the groups attn (q,k,v,o), mlp (gate,up,down) and all. Returns 0, or
 * ERR_RANGE naming the unknown word in why. */
int lora_parse_targets(const char *s, unsigned *targets, char *why, size_t why_len);
/* Writes the canonical comma list of targets to out ("q,k,v,o,gate,up,down"). */
void lora_format_targets(unsigned targets, char *out, size_t out_len);

/* Checks lc against the ranges above for a model of shape mc. Returns 0 or
 * ERR_RANGE with a reason in why. */
int lora_config_validate(const LoraConfig *lc, const ModelConfig *mc, char *why, size_t why_len);
/* Adapter parameters of lc on a model of shape mc, without allocating. */
size_t lora_config_num_params(const LoraConfig *lc, const ModelConfig *mc);

/* Adapters with all parameters zero for a model of shape mc. CHECKs that
 * lora_config_validate passes. Caller owns. */
Lora *lora_new(const LoraConfig *lc, const ModelConfig *mc);
void  lora_free(Lora **lo);

const LoraConfig  *lora_config(const Lora *lo);
const ModelConfig *lora_model_config(const Lora *lo);
float              lora_scale(const Lora *lo); /* alpha / r */
size_t             lora_num_params(const Lora *lo);
/* The parameter / gradient block, lora_num_params floats each. */
float *lora_params(Lora *lo);
float *lora_grads(Lora *lo);
void   lora_zero_grad(Lora *lo);
/* Every A uniform in +-1/sqrt(IN) from seed (the usual Kaiming-uniform
 * bound), every B zero. */
void lora_init_random(Lora *lo, uint64_t seed);
/* Bytes of the values kept for the backward pass (grown by lora_prepare). */
size_t lora_act_bytes(const Lora *lo);

/* Tensors in block order, 2 per (layer, target): A then B, named as the
 * header says, with data and grad views. */
int  lora_num_tensors(const Lora *lo);
void lora_tensor(Lora *lo, int i, ModelTensor *out);

/* The training forward and backward, called by the model between its own
 * steps (model.c). lora_prepare readies the saved values for N rows; then
 * lora_forward adds the adapter of (layer, t) to out (N, OUT) from
 * inp (N, IN) and saves x A^T. lora_backward, after that forward and with
 * the same inp, accumulates into the gradients of A and B from dout (N, OUT)
 * and adds the input gradient to dinp (N, IN). A target not in the config
 * is a no-op. */
void lora_prepare(Lora *lo, int N);
void lora_forward(Lora *lo, int layer, LoraTarget t, float *out, const float *inp, int N);
void lora_backward(Lora *lo, int layer, LoraTarget t, float *dinp, const float *dout,
                   const float *inp, int N);

/* Adds the adapters to m's weights: W += (alpha / r) B A for every target of
 * every layer. m's config must equal the adapters' (CHECK); m must not have
 * adapters attached (CHECK). Merging into a copy of the base and keeping the
 * base gives the adapted model; merging twice adds twice. */
void lora_merge(const Lora *lo, Model *m);

#endif
