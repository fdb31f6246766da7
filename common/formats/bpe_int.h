/* bpe_int: the inside of a Bpe, private to bpe.c (building the vocabulary
 * and merge tables, lookups, decoding) and bpe_encode.c (bpe_encode), which
 * reads the same tables. Not for other modules: they go through bpe.h. Same
 * ownership, threading and error conventions as bpe.h. */
#ifndef RLHF_BPE_INT_H
#define RLHF_BPE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_pre.h"

typedef struct {
    uint64_t key;    /* left id << 32 | right id; 0 marks an empty slot (pairs are offset by 1) */
    int32_t  rank;   /* merge priority, lower first */
    int32_t  result; /* the merged token id */
} BpeMergeSlot;

typedef struct {
    int32_t id;  /* a special token matched in text */
    size_t  len; /* its byte length */
} BpeSpecial;

typedef enum { BPE_CHAT_NONE = 0, BPE_CHAT_CHATML = 1 } BpeChatStyle;

struct Bpe {
    int           n_tokens;
    char         *text;      /* stored spellings, NUL-separated */
    size_t       *text_off;  /* (n_tokens+1) offsets into text */
    uint8_t      *bytes;     /* decoded bytes, concatenated */
    size_t       *bytes_off; /* (n_tokens+1) offsets into bytes */
    uint8_t      *type;      /* (n_tokens) BPE_TOKEN_* */
    int32_t      *tok_hash;  /* (tok_hash_cap) token ids by spelling, -1 empty */
    size_t        tok_hash_cap;
    BpeMergeSlot *merge; /* (merge_cap) merge table */
    size_t        merge_cap;
    int32_t       byte_id[256]; /* the token of each lone byte, or -1 */
    BpeSpecial   *special;      /* (n_special) matched in text, longest first */
    int           n_special;
    bool          special_first[256]; /* whether some special token starts with this byte */
    size_t        max_token_bytes;
    BpePre        pre;
    char         *pre_name;
    int32_t       bos_id, eos_id, unk_id, pad_id, eot_id;
    BpeChatStyle  chat;
    char         *chat_default_system; /* NULL if none */
    bool          add_bos;             /* GGUF tokenizer.ggml.add_bos_token */
    char         *chat_template;       /* the template text as given, NULL if none */
    int32_t      *merge_pair;          /* (n_merges, 2) left and right ids in rank order */
    int           n_merges;
    atomic_bool   warned_drop;
};

/* The merge table's hash of a (left, right) key. */
static inline uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

#endif
