/* ckpt_int: what the files of the checkpoint module (ckpt.c, ckpt_config.c)
 * and its self-test share, and nothing else includes: the save id, the
 * JSON file helpers, config.json's writer and parser, and the self-test's
 * hook. Conventions as in ckpt.h: paths borrowed, 0 or a negative ERR_*
 * code, each failure logged once naming the function (fn) and the file. */
#ifndef RLHF_CKPT_INT_H
#define RLHF_CKPT_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/formats/safetensors.h"
#include "common/formats/tok.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"

/* config.json and trainer_state.json larger than this are not ours. */
#define CKPT_JSON_MAX_BYTES (16u << 20)
/* Every file of one save carries its random id under this key. */
#define CKPT_SAVE_ID_KEY "rlhf_save_id"
#define CKPT_SAVE_ID_LEN 16 /* hex digits */

/* Self-test hook: makes ckpt_save fail just before the swap, as a crash or a
 * full disk would, to show the old checkpoint survives. */
extern bool ckpt_fail_before_swap;

/* dir + "/" + name into out (PATH_MAX bytes); the length is CHECKed, so dir
 * must be bounded (by ckpt_save's path checks or a temp name). */
void ckpt_join(char *out, const char *dir, const char *name);

/* Reads and parses dir/file, a JSON object of at most CKPT_JSON_MAX_BYTES,
 * into *out (new reference) and its path into path (PATH_MAX bytes).
 * quiet_missing: ERR_NOTFOUND is only logged at info level. ERR_FORMAT for
 * invalid JSON or another top-level type. */
int ckpt_read_json(const char *fn, const char *dir, const char *file, bool quiet_missing,
                   json_t **out, char *path);
/* Writes root dumped with flags, plus a newline, atomically to path.
 * ERR_ARG if JSON cannot represent a value; ERR_IO. */
int ckpt_write_json(const char *path, json_t *root, size_t flags);
/* Integer field of o in [lo, hi]; a missing (or null) key takes def unless
 * required (then ERR_FORMAT). ERR_FORMAT for a non-integer, ERR_RANGE out
 * of range. */
int ckpt_get_int(const char *fn, const char *path, const json_t *o, const char *key, bool required,
                 long long def, long long lo, long long hi, long long *out);
/* A string field's value (borrowed from o), or NULL after logging when it
 * is missing or not a string. */
const char *ckpt_get_string(const char *fn, const char *path, const json_t *o, const char *key);

/* Writes m's adapters to path (adapter_model.safetensors) with the save id. */
int ckpt_lora_write(const char *path, Lora *lo, const char *save_id);
/* Reads every tensor of lo from f (the adapter file at path): ERR_MISMATCH
 * for another tensor count, st_read_f32's errors, ERR_NONFINITE; logged. */
int ckpt_lora_read(const char *path, StFile *f, Lora *lo);

/* Writes config.json for c (and tok, when non-NULL) with the save id. */
int ckpt_config_write(const char *path, const ModelConfig *c, const Tok *tok, const char *save_id);
/* config.json's object -> cfg, validated; errors as ckpt_load_config. */
int ckpt_config_parse(const char *fn, const char *path, const json_t *o, ModelConfig *cfg);
/* Whether config.json's "architectures" names CKPT_ARCH_CLASSIFIER. */
bool ckpt_config_is_classifier(const json_t *o);

#endif
