/* policy.h: load the model a program samples from or trains, named the way
 * every program names it:
 *
 *   --ckpt DIR (or --init)  an rlhf checkpoint directory, with the char
 *                           tokenizer saved beside it (rlhf-sft's);
 *   --model FILE.gguf       a GGUF model with its BPE tokenizer and chat
 *                           template (SmolLM2-135M-Instruct);
 *   both                    a checkpoint trained from that GGUF: the weights
 *                           from the directory, the tokenizer from the GGUF.
 *
 * One place checks what a user can get wrong here (a path that is not a
 * checkpoint directory, a checkpoint without a char tokenizer and no GGUF, a
 * tokenizer larger than the model's vocabulary, a chat template we cannot
 * render) and names the flag in the message. */
#ifndef RLHF_POLICY_H
#define RLHF_POLICY_H

#include <stdbool.h>

#include "common/formats/bpe.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"

typedef struct {
    const char *ckpt;        /* checkpoint directory, or NULL */
    const char *model;       /* GGUF file, or NULL; at least one of the two */
    int         max_seq_len; /* positions a GGUF's model is built with, 0 = the file's */
    bool        need_chat;   /* refuse a GGUF whose chat template bpe cannot render */
    const char *ckpt_flag;   /* the checkpoint's flag in messages, NULL = "--ckpt" */
} PolicySpec;

typedef struct {
    Model *m;   /* owned */
    Tok   *tok; /* the checkpoint's char tokenizer, or NULL (then bpe is set) */
    Bpe   *bpe; /* the GGUF's tokenizer, or NULL */
} Policy;

/* Fills *out (zeroed first) from s. Returns 0; ERR_ARG when neither path is
 * given; ERR_NOTFOUND for a checkpoint path that is missing or not a
 * directory, or a checkpoint without a char tokenizer and no GGUF; ERR_FORMAT
 * for a chat template bpe cannot render (need_chat); ERR_MISMATCH for a
 * tokenizer with more ids than the model's vocabulary; what ckpt_load,
 * gguf_load and bpe_load return. Every error is logged, naming the flag and
 * the path. On error *out holds nothing (all freed). */
int policy_load(const PolicySpec *s, Policy *out);

/* Frees what policy_load filled; safe on a zeroed or already freed Policy. */
void policy_free(Policy *p);

/* Builds the model of checkpoint dir's config.json and loads its weights
 * into *out, reading again (up to three times) when a save replaced the
 * directory between the config and the weights (ckpt_load's ERR_AGAIN).
 * Returns 0 or ckpt_load_config's / ckpt_load's error; *out is NULL on error. */
int policy_ckpt_model(const char *dir, Model **out);

#endif
