/* export: hands a model (trained here or imported) back in the formats other
 * tools read: a GGUF file for llama.cpp-compatible runtimes and a Hugging Face
 * directory for transformers.
 *
 * GGUF (export_gguf): version 3, general.architecture "llama", the llama.*
 * hyperparameter keys with the value types llama.cpp's loader insists on
 * (UINT32 sizes, FLOAT32 rope base and epsilon), the tokenizer.ggml.* keys and
 * tokenizer.chat_template rebuilt from the Bpe (so a file made by bpe_from_gguf
 * reads back the same), general.alignment 32. Tensors carry GGUF names
 * (gguf_tensor_name), dims innermost first, query and key rows permuted back
 * to llama.cpp's interleaved RoPE layout (gguf_permute_qk). F32 writes every
 * tensor as F32; F16 writes the matrices as F16 (round to nearest even,
 * overflow to infinity) and keeps the norm gains F32, as llama.cpp's
 * converter does. The value head has no GGUF name and is left out (logged).
 *
 * Hugging Face (export_hf): a directory holding model.safetensors and
 * config.json exactly as ckpt_save writes them (so ckpt_load reads it back),
 * with bos/eos/pad token ids added to config.json, plus tokenizer.json (a
 * tokenizers BPE model with the byte-level pre-tokenizer and decoder, the
 * digit splitting of the "smollm" pre-tokenizer, added_tokens for the special
 * tokens), tokenizer_config.json (special tokens, chat_template),
 * special_tokens_map.json and generation_config.json, so
 * AutoTokenizer.from_pretrained and AutoModelForCausalLM.from_pretrained load it.
 *
 * Ownership: inputs are borrowed; returned strings are the caller's (free()).
 * Threading: no shared state. Errors: 0 or a negative ERR_* code, each failure
 * logged once naming the function, the path and the problem. Files are
 * written atomically (fileio), so a failed export never leaves a half file
 * under the target's name. */
#ifndef RLHF_EXPORT_H
#define RLHF_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/nn/model.h"

/* Tensor types of an exported GGUF file (values are ours, not ggml's). */
enum {
    EXPORT_F32 = 0,
    EXPORT_F16 = 1,
};

/* Writes m (and the tokenizer b, when non-NULL) as a GGUF file at path,
 * replacing it atomically. type is EXPORT_F32 or EXPORT_F16 (CHECKed). m is
 * only read (non-const because model_tensor takes a Model *). Without a
 * tokenizer the file loads with gguf_load but not in llama.cpp (a warning is
 * logged). Returns 0; ERR_MISMATCH if b's vocabulary size differs from the
 * model's (llama.cpp requires them equal); ERR_IO if writing fails (target
 * untouched). */
int export_gguf(const char *path, Model *m, const Bpe *b, int type);

/* Writes m (and the tokenizer b, when non-NULL) as a Hugging Face model
 * directory dir (see the header comment). The parent must exist; dir must
 * not exist yet or be a checkpoint directory ckpt_save may replace (one
 * holding tokenizer files is refused: export to a new path). Returns 0;
 * ERR_ARG if dir exists and is not a checkpoint; ERR_MISMATCH if b's
 * vocabulary is larger than the model's; ERR_IO. */
int export_hf(const char *dir, Model *m, const Bpe *b);

/* The tokenizer.json text for b (a tokenizers library BPE model). Caller
 * frees. */
char *export_tokenizer_json(const Bpe *b);
/* The tokenizer_config.json text for b; model_max_length is the model's
 * context. Caller frees. */
char *export_tokenizer_config_json(const Bpe *b, int model_max_length);

#endif
