/* model: a Llama-family decoder-only transformer for training and sampling.
 *
 * Token embedding, per layer RMSNorm -> grouped-query attention with rotary
 * positions and a causal mask -> residual -> RMSNorm -> SwiGLU MLP ->
 * residual, then a final RMSNorm and an LM head tied or untied to the
 * embedding, plus an optional scalar head on every final hidden state (a PPO
 * critic or a reward model).
 *
 * The model is split three ways: the config (plain data, from a checkpoint
 * header), the weights (named views into one contiguous parameter block with
 * a matching gradient block) and the run state (activations for one training
 * batch, grown on demand; decode state lives in a KVCache).
 *
 * Batches are right-padded: sequence b of length n_b occupies positions
 * 0..n_b-1 of its row and the causal mask keeps padding from reaching real
 * tokens. The mask given to model_forward marks which positions count.
 *
 * Ownership: model_new's caller owns the model; pointers returned by
 * model_params/model_grads and tensor views are borrowed and live as long as
 * the model. Threading: a Model and a KVCache each belong to one thread;
 * OpenBLAS threads inside the matrix products. Errors: only config
 * validation and model_step (token ids) report errors; misuse is a CHECK. */
#ifndef RLHF_MODEL_H
#define RLHF_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/nn/kern.h"

typedef struct {
    int   dim;            /* C, model width */
    int   n_layers;       /* L */
    int   n_heads;        /* NH query heads; HS = C / NH */
    int   n_kv_heads;     /* KVH key/value heads, divides NH */
    int   hidden_dim;     /* H, SwiGLU inner width */
    int   vocab_size;     /* V */
    int   max_seq_len;    /* longest sequence the model is used with */
    float rope_theta;     /* RoPE base, e.g. 10000 */
    float norm_eps;       /* RMSNorm epsilon, e.g. 1e-5 */
    bool  tie_embeddings; /* LM head shares the embedding matrix */
    bool  has_value_head; /* scalar head on every final hidden state */
} ModelConfig;

typedef struct Model Model;

/* A Llama-style config with the usual defaults: rope_theta 10000, norm_eps
 * 1e-5, an untied LM head and no value head. Set other fields after the
 * call. Not validated: pass it to model_config_validate if it comes from
 * outside. */
ModelConfig model_config_llama(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                               int vocab_size, int max_seq_len);

/* Checks a config for sizes that cannot work (non-positive, NH % KVH != 0,
 * C % NH != 0, odd head size, absurd sizes). Returns 0, or ERR_RANGE with a
 * reason written to why (if non-NULL). */
int model_config_validate(const ModelConfig *cfg, char *why, size_t why_len);

/* The parameters a model of cfg has (model_num_params of model_new(cfg)),
 * counted without allocating it, so a loader can weigh a config from a file
 * against the file before building the model. CHECKs the config is valid. */
size_t model_config_num_params(const ModelConfig *cfg);
/* Whether two configs describe the same model (every field). */
bool model_config_equal(const ModelConfig *x, const ModelConfig *y);

/* A model with all parameters zero and RMSNorm gains one. CHECKs the config
 * is valid (validate outside input first). Caller owns. */
Model *model_new(const ModelConfig *cfg);
void   model_free(Model **m);

const ModelConfig *model_config(const Model *m);
size_t             model_num_params(const Model *m);
/* The whole parameter / gradient block, model_num_params floats each. */
float *model_params(Model *m);
float *model_grads(Model *m);
void   model_zero_grad(Model *m);
/* Normal(0, std) weights from seed; norms one; value head zero-mean small. */
void model_init_random(Model *m, uint64_t seed, float std);
/* Copies parameters (not gradients) from src; configs must match (CHECK). */
void model_copy_params(Model *dst, const Model *src);

/* A named view of one parameter tensor, with Hugging Face Llama names:
 * model.embed_tokens.weight, model.layers.N.{input_layernorm,
 * post_attention_layernorm}.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight,
 * model.layers.N.mlp.{gate,up,down}_proj.weight, model.norm.weight,
 * lm_head.weight (untied only), and for the scalar head score.weight (1,C)
 * and score.bias (1). Shapes are row-major [rows, cols] as in PyTorch. */
typedef struct {
    char    name[80];
    float  *data;     /* borrowed view into the parameter block */
    float  *grad;     /* the matching view into the gradient block */
    int     ndim;     /* 1 or 2 */
    int64_t shape[2]; /* shape[1] unused when ndim == 1 */
    size_t  numel;
} ModelTensor;

int model_num_tensors(const Model *m);
/* Fills out for tensor i in 0..model_num_tensors-1 (CHECKed). */
void model_tensor(Model *m, int i, ModelTensor *out);
/* Looks a tensor up by name; ERR_NOTFOUND if absent. */
int model_find_tensor(Model *m, const char *name, ModelTensor *out);

/* Low-rank adapters (common/nn/lora.h). model_attach_lora takes *lo (set
 * to NULL) and freezes the base: the model's gradient block is released
 * (model_grads returns NULL and ModelTensor.grad is NULL), model_forward
 * adds the adapters and model_backward fills only their gradients.
 * model_step and model_score refuse a model with adapters (CHECK): decode
 * from a copy with the adapters merged (lora_merge). CHECKs that no
 * adapters are attached yet and that the configs are equal. */
typedef struct Lora Lora;
void                model_attach_lora(Model *m, Lora **lo);
Lora               *model_lora(const Model *m); /* borrowed, or NULL */
/* What an optimizer trains: the adapters' block when attached, else the
 * whole parameter block (and the matching gradients). */
float *model_train_params(Model *m);
float *model_train_grads(Model *m);
size_t model_num_train_params(const Model *m);

/* Bytes a model holds for training, as allocated now (activations grow
 * with the largest batch seen). */
typedef struct {
    size_t params_bytes;       /* the base parameters */
    size_t adapter_bytes;      /* the adapters' parameters, 0 without */
    size_t grads_bytes;        /* gradients of what is trained */
    size_t acts_bytes;         /* training activations of the base */
    size_t adapter_acts_bytes; /* what the adapters keep for the backward pass */
} ModelMemory;
void model_memory(const Model *m, ModelMemory *out);

/* Training forward over a right-padded batch.
 *   tokens  (B,T) input ids, each in [0,V)
 *   targets (B,T) id whose log-probability is wanted at each position
 *   mask    (B,T) 1 where the position counts, 0 where not; NULL = all count
 * Outputs (each may be NULL): logp (B,T) log p(target | prefix), entropy (B,T)
 * of the next-token distribution, value (B,T) the scalar head (requires
 * has_value_head). Masked-out positions get 0 and skip the vocabulary work.
 * Saves what model_backward needs; B*T may change between calls. */
void model_forward(Model *m, const int *tokens, const int *targets, const float *mask, int B, int T,
                   float *logp, float *entropy, float *value);

/* Sets the temperature T of the distributions model_forward reports: logp and
 * entropy become those of softmax(logits / T) (what an actor sampling at T
 * records), model_last_logits returns logits / T, and model_backward follows.
 * Default 1. T must be finite and > 0 (CHECK). model_step is not affected:
 * samplers apply their own temperature to its raw logits. */
void  model_set_temperature(Model *m, float T);
float model_temperature(const Model *m);

/* Backward of the last model_forward. Upstream gradients (B,T), any may be
 * NULL (meaning zero): dlogp of the loss w.r.t. logp, dentropy w.r.t.
 * entropy, dvalue w.r.t. value. Accumulates into the gradient block. */
void model_backward(Model *m, const float *dlogp, const float *dentropy, const float *dvalue);

/* Logits of the last model_forward, one row per unmasked position in
 * row-major (b,t) order: (n_active, V), with n_active written if non-NULL.
 * Borrowed until the next forward. */
const float *model_last_logits(const Model *m, int *n_active);

/* Key/value cache for incremental decoding of n_seq sequences of different
 * lengths, each up to max_len tokens. Caller owns. */
typedef struct KVCache KVCache;

KVCache *kv_new(const Model *m, int n_seq, int max_len);
void     kv_free(KVCache **kv);
/* Forgets sequence seq (its length becomes 0). */
void kv_reset(KVCache *kv, int seq);
int  kv_len(const KVCache *kv, int seq);
int  kv_n_seq(const KVCache *kv);

/* Feeds n new tokens through the model with the cache. Row r appends
 * tokens[r] to sequence seq[r] at position kv_len(seq[r]); rows of one
 * sequence must appear in order, and each row attends to its sequence's
 * cache including rows earlier in the same call. A prefill of one sequence
 * is n rows of the same seq; a decode step is one row per active sequence.
 * For the n_out rows listed in out_rows (ascending), writes logits (n_out,V).
 * Returns 0, ERR_RANGE for a token id out of [0,V), or ERR_RANGE if a
 * sequence would exceed max_len; on error nothing is appended. */
int model_step(Model *m, KVCache *kv, int n, const int *seq, const int *tokens, int n_out,
               const int *out_rows, float *logits);

/* A cache for model_score: n_seq sequences of up to max_len tokens, holding
 * one layer's keys and values (a single pass needs no more: each layer's
 * replace the previous layer's). Its contents last for one call only;
 * model_step refuses it (CHECK). Caller owns; kv_free. */
KVCache *kv_new_once(const Model *m, int n_seq, int max_len);

/* The scalar head of n_seq sequences that share a prefix, in one forward
 * pass (a reward model scoring the completions of one prompt): value[i] is
 * the head on the final normed hidden state at the last token of prefix ++
 * tails[i] (at the prefix's last token when tail_lens[i] is 0), as
 * model_forward's value at that position. The prefix goes through the model
 * once and each tail attends to it; the rows of all tails go through every
 * matrix product together. Same kernels as model_step, in fp32 whatever
 * model_set_decode_type chose (a pass over many rows is a matrix product,
 * not a weight stream). kv: from kv_new_once with n_seq and max_len at
 * least this call's; it is reset by the call. CHECKs has_value_head,
 * n_prefix >= 1, n_seq >= 1 and tail_lens[i] >= 0. Returns 0, or ERR_RANGE
 * for an id outside [0,V) or a sequence longer than kv's max_len (nothing
 * computed). */
int model_score(Model *m, KVCache *kv, const int *prefix, int n_prefix, int n_seq,
                const int *const *tails, const int *tail_lens, float *value);

/* The precision model_step decodes with. KERN_F32 (the default) reads the
 * parameters themselves. KERN_BF16 and KERN_F16 make a copy of every weight
 * matrix rounded to that type and packed for kern_linear (q, k and v fused,
 * gate and up fused with the SwiGLU), and model_step then reads half the
 * bytes per token; the embedding rows are rounded the same way as they are
 * looked up, and the norm gains stay fp32, so the result is the model with
 * its matrices rounded to 16 bits. The copy is of the parameters as they are
 * at the call: call again after changing them. model_forward and
 * model_backward always use the fp32 parameters. Returns 0, or ERR_RANGE
 * (logged, naming the tensor) when a parameter does not fit the type; the
 * model then decodes in fp32. */
int      model_set_decode_type(Model *m, KernType t);
KernType model_decode_type(const Model *m);

/* Floating-point operations of one training step (forward + backward) over
 * B*T tokens: 6 * matmul parameters * tokens plus the attention term. */
double model_train_flops(const ModelConfig *cfg, int B, int T);

#endif
