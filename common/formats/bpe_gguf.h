/* bpe_gguf: the byte-level BPE tokenizer of a GGUF file: its tokenizer.ggml.*
 * metadata and tokenizer.chat_template mapped onto a BpeVocab for bpe_new.
 *
 * Ownership: the GgufFile is borrowed; the Bpe returned is the caller's.
 * Threading: one thread per GgufFile. Errors: 0 or a negative ERR_* code,
 * logged once naming the file and the key. */
#ifndef RLHF_BPE_GGUF_H
#define RLHF_BPE_GGUF_H

#include "common/formats/bpe.h"
#include "common/formats/gguf.h"

/* The adapter from a GGUF file's metadata: tokenizer.ggml.model (must be
 * "gpt2"), .tokens, .merges, .token_type (optional, INT32), .pre (default
 * "gpt2" with a warning when absent), .bos/.eos/.unknown/.padding_token_id
 * (optional), .add_bos_token (optional, default false) and
 * tokenizer.chat_template (optional) become a BpeVocab for bpe_new. Returns 0
 * with *out set (caller owns); ERR_UNSUPPORTED for another tokenizer model;
 * ERR_NOTFOUND for missing tokens or merges; ERR_MISMATCH for a value of the
 * wrong type or a token_type count that differs from the token count;
 * ERR_RANGE for an id outside int32; ERR_FORMAT if bpe_new refuses the
 * vocabulary. Logged, naming the file and key. */
int bpe_from_gguf(const GgufFile *f, Bpe **out);
/* gguf_open + bpe_from_gguf + gguf_close; errors of either, logged. */
int bpe_load(const char *path, Bpe **out);

#endif
