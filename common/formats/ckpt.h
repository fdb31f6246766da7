/* ckpt: model checkpoints in a directory, in the Hugging Face Llama layout.
 *
 * A checkpoint directory holds
 *   config.json            HF LlamaConfig keys (architectures, model_type,
 *                          hidden_size, ..., torch_dtype "float32") plus our
 *                          own "rlhf_*" keys: format version, value head,
 *                          tokenizer kind and charset, so the directory is
 *                          self-contained; a model with the scalar head is
 *                          "LlamaForSequenceClassification" with num_labels
 *                          1 (score.weight (1, C) as transformers names it;
 *                          score.bias beside it, which transformers' Llama
 *                          classifier lacks and leaves unused);
 *   model.safetensors      every model tensor under its HF name (F32);
 *   adapter_model.safetensors  optional: LoRA adapters trained on the frozen
 *                          base of model.safetensors (common/nn/lora.h), the
 *                          tensors named as lora_tensor names them, rank,
 *                          alpha and targets in metadata; a plain loader
 *                          (ckpt_load) reads only the base and warns, and
 *                          rlhf-export merges the two into one model;
 *   optimizer.safetensors  optional: flat "exp_avg" and "exp_avg_sq", the
 *                          step count in metadata (of the adapters when the
 *                          checkpoint has them);
 *   trainer_state.json     optional: step, policy version, run id and a
 *                          free-form JSON object from the caller.
 *
 * Atomicity: ckpt_save writes everything into a fresh hidden directory
 * beside the target (".<name>.tmp-XXXXXX", each file temp + fsync + rename,
 * the directory fsynced), then swaps it with the target in one
 * renameat2(RENAME_EXCHANGE) and fsyncs the parent, then deletes the old
 * files. So the target path always names one complete checkpoint, old or
 * new, never a mix: no half-written file, and no optimizer state left over
 * from an older save. A crash leaves at worst a stale ".<name>.tmp-*"
 * directory, which loaders never look at. On filesystems without
 * RENAME_EXCHANGE the old directory is first renamed aside, which leaves a
 * short window in which the target does not exist (logged as a warning).
 * A target that exists must look like a checkpoint (only the files above),
 * so a wrong path can never delete unrelated data.
 *
 * Integrity: the tensors of model.safetensors and optimizer.safetensors
 * carry XXH3-64 checksums in the files' metadata (common/formats/
 * safetensors.h), verified as they are read: a damaged tensor is refused
 * with ERR_FORMAT naming the file and the tensor. A checkpoint saved before
 * the checksums existed loads unverified, with a warning.
 *
 * History (ckpt_save_keep): instead of deleting the checkpoint it replaces,
 * a save may keep it beside the new one as "<dir>.prev-<n>", n one more than
 * any kept before, and drop the oldest beyond the last `keep` checkpoints
 * (the new one included). ckpt_history lists the checkpoint and its kept
 * predecessors newest first, for a loader that falls back when the newest
 * is damaged; ckpt_set_aside renames a damaged one to "<dir>.damaged-<n>",
 * where neither loaders nor the pruning look, so it stays for inspection;
 * ckpt_restore puts a kept one back at dir, setting aside the damaged one
 * there in the same atomic exchange, so dir never goes missing.
 *
 * Symbolic links: a dir that is a symbolic link (to a directory, or to a
 * path that does not exist yet) is followed, so saves replace, keep and set
 * aside at the link's target, beside it, and the link keeps naming the
 * newest checkpoint.
 *
 * Each loader opens its file once, so it reads one consistent version even
 * while a save replaces the directory. Every save draws a random save id
 * and writes it into config.json ("rlhf_save_id") and into the metadata of
 * each safetensors file; ckpt_load refuses a config and weights whose ids
 * differ with ERR_AGAIN (a save replaced the directory between the two
 * reads: retry), so files of two saves are never mixed silently. Optimizer
 * and trainer state are for the writer's own resume and are not cross-checked.
 *
 * Ownership: paths and inputs are borrowed; outputs documented per function.
 * Threading: no shared state; concurrent saves to the same path are not
 * supported. Errors: 0 or a negative ERR_* code, each failure logged once
 * naming the function, the file and the bad vs expected value. */
#ifndef RLHF_CKPT_H
#define RLHF_CKPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/nn/lora.h"
#include "common/nn/model.h"
#include "common/formats/tok.h"

#define CKPT_CONFIG_FILE "config.json"
#define CKPT_MODEL_FILE "model.safetensors"
#define CKPT_OPTIM_FILE "optimizer.safetensors"
#define CKPT_ADAPTER_FILE "adapter_model.safetensors"
/* Metadata keys of the adapter file. */
#define CKPT_LORA_RANK_KEY "rlhf_lora_rank"
#define CKPT_LORA_ALPHA_KEY "rlhf_lora_alpha"
#define CKPT_LORA_TARGETS_KEY "rlhf_lora_targets"
#define CKPT_STATE_FILE "trainer_state.json"
/* Written as "rlhf_format_version"; loaders refuse newer versions. */
#define CKPT_FORMAT_VERSION 1
#define CKPT_RUN_ID_MAX 64           /* bytes of CkptTrainerState.run_id, NUL included */
#define CKPT_KEEP_MAX 1000           /* checkpoints ckpt_save_keep may keep */
#define CKPT_PREV_TAG ".prev-"       /* "<dir>.prev-<n>": a kept predecessor */
#define CKPT_DAMAGED_TAG ".damaged-" /* "<dir>.damaged-<n>": set aside by ckpt_set_aside */
/* transformers' name for a model with the scalar head on the last token (a
 * reward model): read as has_value_head when it has one label; its
 * score.bias may be absent (transformers has none), which loads as 0. */
#define CKPT_ARCH_CLASSIFIER "LlamaForSequenceClassification"

/* Optimizer moments parallel to model_params, borrowed. */
typedef struct {
    const float *exp_avg;    /* (n) first moments */
    const float *exp_avg_sq; /* (n) second moments, each >= 0 */
    size_t       n;          /* floats in each; must equal model_num_train_params */
    int64_t      step;       /* updates applied so far (for bias correction), >= 0 */
} CkptOptim;

typedef struct {
    int64_t step;                    /* trainer steps completed, >= 0 */
    int64_t policy_version;          /* version of the saved weights, >= 0 */
    char    run_id[CKPT_RUN_ID_MAX]; /* NUL-terminated, may be empty */
    json_t *extra;                   /* a JSON object or NULL; see the functions */
} CkptTrainerState;

/* Saves model m (its adapters too when it has them attached, and, when
 * non-NULL, the tokenizer's charset, the optimizer state and the trainer
 * state) as checkpoint directory dir, replacing any
 * checkpoint there atomically as described above. The parent directory must
 * exist. m is only read (non-const because model_tensor takes a Model *);
 * ts->extra is borrowed. Returns 0; ERR_ARG if dir exists but is not a
 * checkpoint directory, if opt->n differs from the model's parameter count,
 * or if the tokenizer's vocabulary exceeds the model's, or ts->extra is not
 * an object (all logged); ERR_IO if writing fails (the old checkpoint is left
 * in place and the temp directory removed) or if only the final fsync of the
 * parent directory fails (the new checkpoint is in place but may not survive
 * a crash). */
int ckpt_save(const char *dir, Model *m, const Tok *tok, const CkptOptim *opt,
              const CkptTrainerState *ts);

/* ckpt_save that keeps the replaced checkpoint as "<dir>.prev-<n>" and
 * deletes the oldest kept ones beyond the last `keep` checkpoints, the new
 * one included (1..CKPT_KEEP_MAX; 1 keeps only the new one and removes every
 * predecessor). Kept ones are renamed, never copied. Errors as ckpt_save,
 * plus ERR_ARG for keep out of range; a failure to keep or to drop an old
 * one is logged as a warning and does not fail the save. */
int ckpt_save_keep(const char *dir, int keep, Model *m, const Tok *tok, const CkptOptim *opt,
                   const CkptTrainerState *ts);

/* Checkpoint directories of dir, newest first: dir itself if it holds a
 * checkpoint, then its kept predecessors by decreasing n (symbolic links
 * followed as described at the top). */
typedef struct {
    char **dirs; /* (n) paths, owned */
    int    n;
} CkptHistory;

/* Fills h (release with ckpt_history_free); an empty list is not an error.
 * Returns 0; ERR_ARG for a bad dir; ERR_IO if its parent cannot be read. */
int  ckpt_history(const char *dir, CkptHistory *h);
void ckpt_history_free(CkptHistory *h);

/* Renames checkpoint directory dir (one of ckpt_history's) to
 * "<dir>.damaged-<n>" (n one more than any there), writing the new path into
 * out (PATH_MAX bytes). Returns 0, or ERR_ARG / ERR_IO (logged). */
int ckpt_set_aside(const char *dir, char *out);

/* Makes from, a kept predecessor of dir (one of ckpt_history's), the
 * checkpoint at dir again. The checkpoint at dir (a damaged one) is set
 * aside as by ckpt_set_aside, its new path written into aside (PATH_MAX
 * bytes; "" when dir held none): the two trade places in one
 * renameat2(RENAME_EXCHANGE), so dir always names a checkpoint (without
 * RENAME_EXCHANGE, two renames). Returns 0, or ERR_ARG / ERR_IO (logged). */
int ckpt_restore(const char *dir, const char *from, char *aside);

/* True when dir holds a config.json (a checkpoint may be there). */
bool ckpt_exists(const char *dir);

/* Loads the weights of dir into m. First checks, before touching m, that
 * config.json agrees with model_config(m) (every field but max_seq_len) and
 * that model.safetensors holds exactly the model's tensors with the model's
 * shapes and a float dtype (F32, or F16/BF16 converted). Returns 0;
 * ERR_AGAIN if config.json and model.safetensors carry different save ids
 * (see above; m untouched, retry); ERR_MISMATCH for a config field, shape or dtype that differs, or
 * a tensor the model does not have (naming them); ERR_NOTFOUND for a missing file or a model tensor
 * the file lacks (naming it); ERR_FORMAT for a malformed file or a tensor whose bytes do not
 * match their checksum (naming file and tensor); ERR_NONFINITE for a NaN or infinite
 * weight; ERR_IO. After a validation error m is untouched; after a damaged tensor (ERR_FORMAT),
 * ERR_NONFINITE or ERR_IO during the copy its parameters are unspecified.
 * With LoRA adapters attached to m (shaped from ckpt_load_lora), their values
 * are read again from adapter_model.safetensors in the same pass, which must
 * carry config.json's save id (else ERR_AGAIN: retry), so base and adapters
 * are always of one save; ERR_NOTFOUND if the file is missing, ERR_MISMATCH
 * for tensors that do not fit the attached adapters. */
int ckpt_load(const char *dir, Model *m);

/* Loads the adapters of checkpoint dir for a model of shape mc into *out
 * (caller owns; attach with model_attach_lora). Returns 0; ERR_NOTFOUND,
 * logged at info level, when dir has none; ERR_FORMAT for a malformed file,
 * bad rank, alpha or targets in its metadata, or a damaged tensor;
 * ERR_MISMATCH for tensors that do not fit mc; ERR_NONFINITE; ERR_IO. *out
 * is NULL on error. */
int ckpt_load_lora(const char *dir, const ModelConfig *mc, Lora **out);

/* The adapters' rank, alpha and targets as config JSON keys (the metadata
 * keys above), added to object o: how a snapshot's config names them. */
void ckpt_lora_config_to_json(json_t *o, const LoraConfig *lc);
/* Reads them back from config JSON text for a model of shape mc. Returns 0
 * with *lc filled; ERR_NOTFOUND (not logged) when the text has none;
 * ERR_FORMAT, logged naming name, for bad values or a config that does not
 * fit mc. */
int ckpt_lora_config_from_json(const char *name, const char *text, const ModelConfig *mc,
                               LoraConfig *lc);

/* Loads optimizer state into exp_avg and exp_avg_sq (n floats each) and the
 * step count into *step. Returns 0; ERR_NOTFOUND, logged only at info level,
 * if the checkpoint has no optimizer state (normal for an inference
 * checkpoint); ERR_MISMATCH if the saved size is not n; ERR_FORMAT for a
 * malformed file or step, or moments whose checksum does not match (naming
 * file and tensor); ERR_NONFINITE for a non-finite moment; ERR_RANGE for a
 * negative second moment; ERR_IO. Outputs unspecified on error. */
int ckpt_load_optim(const char *dir, float *exp_avg, float *exp_avg_sq, size_t n, int64_t *step);

/* Loads trainer_state.json into out; out->extra is a new reference the
 * caller must json_decref (NULL when none was saved). Returns 0;
 * ERR_NOTFOUND, logged only at info level, if there is no trainer state;
 * ERR_FORMAT for invalid JSON or a missing or ill-typed field; ERR_IO. On
 * error out->extra is NULL. */
int ckpt_load_trainer_state(const char *dir, CkptTrainerState *out);

#endif
