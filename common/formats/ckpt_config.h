/* ckpt_config: a checkpoint's config.json, the Hugging Face LlamaConfig
 * keys plus our "rlhf_*" keys (see ckpt.h for the directory it lives in):
 * written from a ModelConfig (and a character tokenizer), read back and
 * validated, from a checkpoint directory or from text a learner sent.
 *
 * Ownership: inputs are borrowed; returned strings and tokenizers are the
 * caller's. Threading: no shared state. Errors: 0 or a negative ERR_* code,
 * each failure logged once naming the function, the file (or what the text
 * came from), the key and the bad vs expected value. */
#ifndef RLHF_CKPT_CONFIG_H
#define RLHF_CKPT_CONFIG_H

#include "common/formats/tok.h"
#include "common/nn/model.h"

/* Reads dir/config.json into cfg and checks it with model_config_validate.
 * Accepts plain HF Llama configs too (defaults as in HF: num_key_value_heads
 * = num_attention_heads, rope_theta 10000, tie_word_embeddings false, no
 * value head), and "architectures" CKPT_ARCH_CLASSIFIER with one label
 * (num_labels, else id2label's entries, else 2 as in transformers) as a
 * model with the scalar head (ERR_UNSUPPORTED for more labels, ERR_FORMAT
 * with rlhf_has_value_head false). Returns 0; ERR_NOTFOUND if there is no config.json; ERR_FORMAT
 * for invalid JSON or a missing or ill-typed key; ERR_RANGE for a value out
 * of range or a config model_config_validate refuses; ERR_UNSUPPORTED for a
 * model type or feature this model lacks (rope_scaling, biases, another
 * activation, a newer rlhf_format_version); ERR_MISMATCH when dir's
 * model.safetensors holds fewer values than the config's model has
 * parameters (so no caller allocates a model the weights cannot fill). cfg
 * is unspecified on error. */
int ckpt_load_config(const char *dir, ModelConfig *cfg);

/* The config.json text of a model in the layout of ckpt.h (with tok's keys when
 * non-NULL), without the save id: what a learner sends with a weight
 * snapshot. Caller frees with free(). */
char *ckpt_config_to_json(const ModelConfig *c, const Tok *tok);
/* Parses config JSON text from another source (what names it in the log,
 * e.g. "snapshot v12") with exactly the rules of ckpt_load_config, and the
 * stop token (eos_token_id, default TOK_EOS, must be < vocab_size) into
 * *eos_id when non-NULL. Returns 0 or an error as ckpt_load_config, logged. */
int ckpt_config_from_json(const char *what, const char *text, ModelConfig *cfg, int *eos_id);

/* A tokenizer from the charset in dir/config.json (caller owns *out).
 * Returns 0; ERR_NOTFOUND if the config names no charset (for example an
 * imported HF model); ERR_FORMAT if the charset is invalid or the config's
 * bos/eos/pad ids differ from TOK_BOS/TOK_EOS/TOK_PAD; ERR_MISMATCH if the
 * vocabulary is larger than the config's vocab_size; errors of
 * ckpt_load_config's kind for the file itself. */
int ckpt_load_tok(const char *dir, Tok **out);

#endif
