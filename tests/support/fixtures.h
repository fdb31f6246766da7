/* fixtures: small helpers the tests and benchmarks share: the configs of
 * small models and optimizers, logits of a fixed token sequence, the largest
 * difference of two float arrays, and a quick unsynced file write for
 * hand-made files.
 *
 * Ownership: buffers are the caller's. Threading: one thread per call.
 * Errors: fixture_write_file returns 0 or ERR_IO; misuse is a CHECK. */
#ifndef RLHF_FIXTURES_H
#define RLHF_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"

/* model_config_llama under the fixtures' name: the given sizes with RoPE
 * base 10000, RMSNorm epsilon 1e-5, untied embeddings and no value head (set
 * those fields on the result where a test wants otherwise). */
ModelConfig fixture_model_config(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                                 int vocab_size, int max_seq_len);

/* Saves to checkpoint dir a char-model reward model (dim 32, one layer, a
 * scalar head) set by hand to score +1 when a completion's last id is the
 * stop token (it ended) and -1 otherwise (the length cap cut it off): a
 * preference a random policy can learn, with rewards checkable exactly.
 * Returns whether the save succeeded. */
bool fixture_save_stop_rm(const char *dir);

/* An AdamW config with the given learning-rate schedule, beta1 0.9, beta2
 * 0.95, eps 1e-8, no weight decay and no clipping (set those fields on the
 * result where a test wants otherwise). */
OptimConfig fixture_optim_config(float lr_peak, float lr_min, int64_t lr_warmup_steps,
                                 int64_t lr_total_steps);

/* A hand-made byte-level vocabulary for tokenizer tests: tokens (owned
 * copies) and their BPE_TOKEN_* types, in id order. Start from {0}; release
 * with fixture_vocab_free. */
#define FIXTURE_VOCAB_MAX 300
typedef struct {
    char   *tok[FIXTURE_VOCAB_MAX];
    int32_t type[FIXTURE_VOCAB_MAX];
    int     n;
} FixtureVocab;

/* Appends a copy of token t of the given type; returns its id. */
int fixture_vocab_add(FixtureVocab *fv, const char *t, int32_t type);
/* Appends GPT-2's 256 byte tokens in byte order, less the bytes in drop
 * (byte 0 always stays), as SmolLM2 lacks a few. */
void fixture_vocab_add_bytes(FixtureVocab *fv, const char *drop);
/* A tokenizer over fv with SmolLM2's pre-tokenizer, BOS and EOS id 0, no
 * unknown or padding token, the given merges and chat template (NULL: none).
 * NULL when bpe_new refuses the vocabulary. Caller owns. */
Bpe *fixture_vocab_bpe(const FixtureVocab *fv, const char *const *merges, int n_merges,
                       const char *tpl);
void fixture_vocab_free(FixtureVocab *fv);

/* The SmolLM2-135M-Instruct GGUF that `make model` fetches. */
#define FIXTURE_SMOLLM2_GGUF "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* The path of the SmolLM2 GGUF for test: $RLHF_SMOLLM2_GGUF if set and
 * non-empty, else FIXTURE_SMOLLM2_GGUF. NULL, after printing "TEST:
 * skipped: run make model (no PATH)", when the file cannot be read. */
const char *fixture_smollm2_path(const char *test);

/* Logits of every position of a fixed sequence of T <= 16 tokens (token i is
 * (7i + 3) mod V), (T, V) into out. */
void fixture_logits(Model *m, float *out, int T);

/* max |a[i] - b[i]| over n floats. */
float fixture_max_abs_diff(const float *a, const float *b, size_t n);

/* Writes n bytes to path without fsync: fuzz loops write thousands of
 * files. Returns 0 or ERR_IO. */
int fixture_write_file(const char *path, const void *p, size_t n);

#endif
