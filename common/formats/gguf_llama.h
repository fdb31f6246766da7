/* gguf_llama: Llama-family models from GGUF files (general.architecture
 * "llama"): the config from the llama.* metadata, the tensors by their GGUF
 * names, dequantised into our Model, and the name and row-order mapping
 * export_gguf uses to write them back.
 *
 * llama.cpp's converter permutes the rows of the query and key projections
 * of each head from the Hugging Face rotate-half RoPE layout (pairs
 * (i, i + HS/2)) to interleaved pairs (2i, 2i + 1). Our model uses the HF
 * layout, so gguf_load_model undoes that permutation.
 *
 * Ownership: the GgufFile and the Model are borrowed; gguf_load's Model is
 * the caller's. Threading: one thread per GgufFile and Model. Errors: 0 or a
 * negative ERR_* code, each failure logged once naming the file, the tensor
 * or key and the bad vs expected value. */
#ifndef RLHF_GGUF_LLAMA_H
#define RLHF_GGUF_LLAMA_H

#include <stdbool.h>
#include <stddef.h>

#include "common/formats/gguf.h"
#include "common/nn/model.h"

/* Fills cfg from the metadata of a "llama" architecture file:
 * llama.embedding_length, .block_count, .attention.head_count,
 * .attention.head_count_kv (default head_count), .feed_forward_length,
 * .rope.freq_base (default 10000), .attention.layer_norm_rms_epsilon,
 * .context_length (as max_seq_len; lower it before model_new if less is
 * needed), and the vocabulary size from token_embd.weight; tie_embeddings
 * when output.weight is absent; no value head. Returns 0; ERR_NOTFOUND for a
 * missing key or token_embd.weight; ERR_MISMATCH for a value of another
 * type; ERR_UNSUPPORTED for another architecture or a feature this model
 * lacks (RoPE scaling, a rope dimension other than the head size, experts);
 * ERR_RANGE for a value model_config_validate refuses. All logged. */
int gguf_model_config(const GgufFile *f, ModelConfig *cfg);

/* Fills every tensor of m from f, mapping GGUF names (token_embd.weight,
 * blk.N.attn_norm.weight, blk.N.attn_{q,k,v,output}.weight,
 * blk.N.ffn_norm.weight, blk.N.ffn_{gate,up,down}.weight, output_norm.weight,
 * output.weight when untied) to ours, checking shapes, dequantising, and
 * un-permuting the query and key rows (see the header comment). m's config
 * should come from gguf_model_config (any max_seq_len). Checks before
 * touching m that every tensor exists with the right shape and a supported
 * type and that the file holds no tensor the model lacks. Returns 0;
 * ERR_NOTFOUND for a missing tensor; ERR_MISMATCH for a wrong shape, a tied
 * model given output.weight (or the reverse), or an unknown tensor;
 * ERR_UNSUPPORTED for a type that cannot be dequantised; ERR_NONFINITE for a
 * NaN or infinite weight; ERR_IO. All logged, naming the tensor. After a
 * validation error m is untouched; after ERR_NONFINITE or ERR_IO its
 * parameters are unspecified. Time: one pass over the file. */
int gguf_load_model(GgufFile *f, Model *m);

/* Convenience: gguf_open + gguf_model_config (max_seq_len capped at
 * max_seq_len when > 0) + model_new + gguf_load_model + gguf_close.
 * Returns 0 with *out set (caller owns) or an error of those functions.
 * Before the model is allocated, every tensor it needs must be in the file
 * (else ERR_NOTFOUND) and the file's tensors must hold at least its
 * parameter count (else ERR_MISMATCH), so that metadata claiming a model
 * far larger than the file is refused, not allocated. Logged. */
int gguf_load(const char *path, int max_seq_len, Model **out);

/* The GGUF name (e.g. blk.3.attn_q.weight) of our tensor called ours (e.g.
 * model.layers.3.self_attn.q_proj.weight) into out (cap bytes), as
 * gguf_load_model maps them. Returns false for a tensor GGUF files do not
 * hold (the value head). *qk_heads is set to the head count to permute with
 * (gguf_permute_qk) for a query or key matrix, else 0. */
bool gguf_tensor_name(const char *ours, const ModelConfig *c, char *out, size_t cap, int *qk_heads);

/* The row permutation of llama.cpp's converter for a query or key matrix of
 * n_heads heads of rows/n_heads rows each (even), cols columns:
 * gguf_permute_qk maps the HF layout to the GGUF one, gguf_unpermute_qk the
 * GGUF layout back to HF. In head h, HF row h*HS + j*HS/2 + i (j in {0,1})
 * is GGUF row h*HS + 2*i + j. dst and src must not overlap (CHECK). */
void gguf_permute_qk(float *dst, const float *src, int n_heads, int rows, int cols);
void gguf_unpermute_qk(float *dst, const float *src, int n_heads, int rows, int cols);

#endif
