/* bpe: the byte-level BPE tokenizer of GPT-2-style pretrained models (GGUF
 * tokenizer.ggml.model "gpt2", as SmolLM2 uses), and their ChatML chat
 * template.
 *
 * The vocabulary comes from plain arrays (BpeVocab): token strings in the
 * byte-level spelling of GPT-2 (each byte shown as one printable code point,
 * so a space is "Ġ"), merges "left right" in rank order, GGUF token types,
 * the special token ids, the pre-tokenizer name and the chat template.
 * bpe_new copies all of it, so the arrays may be freed afterwards; a GGUF
 * file's tokenizer.ggml.* metadata maps onto BpeVocab one to one (bpe_gguf.h).
 * The pre-tokenizer lives in bpe_pre.h, the chat template in bpe_chat.h.
 *
 * Encoding follows Hugging Face tokenizers as SmolLM2's tokenizer.json
 * configures them (and llama.cpp for tokenizer.ggml.pre "smollm"): special
 * tokens are cut out of the text first, the text between them is split by the
 * pre-tokenizer (the GPT-2 regex, after isolating every numeric character for
 * "smollm"), each piece's bytes become byte tokens, and merges are applied
 * lowest rank first, leftmost first among equal ranks. A byte that has no
 * token in the vocabulary (SmolLM2 lacks 21 of the 256, such as 0x04 and
 * 0xff) is dropped, as both reference implementations do, unless
 * BPE_ENC_STRICT asks for an error. Invalid UTF-8 is split as single
 * non-letter bytes and still encoded byte by byte, so decode(encode(s)) == s
 * whenever every byte of s has a token.
 *
 * Ownership: bpe_new's caller owns the Bpe; strings and byte spans returned by
 * the accessors are borrowed and live as long as the Bpe. Output buffers are
 * the caller's. Threading: a Bpe is immutable after bpe_new (apart from a
 * warn-once flag kept atomic), so any number of threads may use one
 * concurrently. Errors: functions that can fail return 0 or a negative ERR_*
 * code and log the reason once. */
#ifndef RLHF_BPE_H
#define RLHF_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Token types as GGUF stores them in tokenizer.ggml.token_type (llama.cpp's
 * numbering; values reach disk, so only ever append). */
enum {
    BPE_TOKEN_NORMAL = 1,
    BPE_TOKEN_UNKNOWN = 2,
    BPE_TOKEN_CONTROL = 3,      /* special: <|im_start|>, <|endoftext|> */
    BPE_TOKEN_USER_DEFINED = 4, /* added token, always matched whole in text */
    BPE_TOKEN_UNUSED = 5,
    BPE_TOKEN_BYTE = 6,
};

/* Limits on an untrusted vocabulary. */
#define BPE_MAX_TOKENS (1 << 22)
#define BPE_MAX_TOKEN_BYTES 1024

/* The vocabulary handed to bpe_new. Arrays are borrowed for the call only. */
typedef struct {
    int                n_tokens;      /* 1..BPE_MAX_TOKENS */
    const char *const *tokens;        /* n_tokens strings, id order */
    const size_t      *token_lens;    /* n_tokens byte lengths, or NULL: NUL-terminated */
    const int32_t     *token_types;   /* n_tokens BPE_TOKEN_*, or NULL: all normal */
    int                n_merges;      /* 0.. */
    const char *const *merges;        /* n_merges "left right", rank = index */
    const size_t      *merge_lens;    /* n_merges byte lengths, or NULL: NUL-terminated */
    const char        *pre;           /* pre-tokenizer: "smollm" or "gpt2" */
    int32_t            bos_id;        /* -1 if none */
    int32_t            eos_id;        /* -1 if none */
    int32_t            unk_id;        /* -1 if none */
    int32_t            pad_id;        /* -1 if none */
    const char        *chat_template; /* Jinja text, or NULL */
    bool               add_bos;       /* whether the model expects BOS first (bpe_add_bos) */
} BpeVocab;

/* bpe_encode flags. */
enum {
    BPE_ENC_SPECIAL = 1 << 0, /* match CONTROL tokens (<|im_start|>...) in the text */
    BPE_ENC_BOS = 1 << 1,     /* prepend bos_id (ERR_ARG if the vocabulary has none) */
    BPE_ENC_STRICT = 1 << 2,  /* a byte without a token is ERR_RANGE instead of dropped */
};

/* bpe_decode flags. Without BPE_DEC_SPECIAL, CONTROL and UNKNOWN ids are skipped. */
enum {
    BPE_DEC_SPECIAL = 1 << 0, /* render CONTROL ids as their text */
};

/* Ids bpe_encode may produce for len bytes: at most one per byte, plus BOS. */
#define BPE_ENCODE_MAX_IDS(len) ((size_t)(len) + 1)

typedef struct Bpe Bpe;

/* A tokenizer over the vocabulary v (copied). Returns NULL, after logging the
 * reason, if v is malformed: counts out of range, a NULL or over-long token,
 * a token or merge that is not valid UTF-8, a merge that is not two tokens of
 * the vocabulary joined by one space or whose concatenation is not a token, a
 * special id out of range, or a pre-tokenizer other than "smollm" and
 * "gpt2". Caller owns. */
Bpe *bpe_new(const BpeVocab *v);
void bpe_free(Bpe **b);

int bpe_vocab_size(const Bpe *b);
/* Special ids from the vocabulary, or -1. */
int bpe_bos_id(const Bpe *b);
int bpe_eos_id(const Bpe *b);
int bpe_pad_id(const Bpe *b);
/* The end-of-turn id generation stops at: <|im_end|> for a ChatML template,
 * else eos_id (-1 if neither). */
int bpe_eot_id(const Bpe *b);
/* Whether the model expects BOS first (GGUF tokenizer.ggml.add_bos_token;
 * false for SmolLM2): pass BPE_ENC_BOS to bpe_encode when true. */
bool bpe_add_bos(const Bpe *b);
/* The pre-tokenizer name as given. */
const char *bpe_pre_name(const Bpe *b);
/* The unknown-token id from the vocabulary, or -1. */
int bpe_unk_id(const Bpe *b);
/* The chat template text as given (NUL-terminated, borrowed), or NULL. */
const char *bpe_chat_template(const Bpe *b);
/* The merges as given, duplicates included, for writing the vocabulary out
 * again: bpe_merge_at sets the ids of the left and right token of the merge
 * of rank 0..bpe_merge_count-1 (CHECKed). */
int  bpe_merge_count(const Bpe *b);
void bpe_merge_at(const Bpe *b, int rank, int *left, int *right);

/* The id whose stored spelling is text[0..len), or ERR_NOTFOUND. Special
 * tokens are spelled as their text ("<|im_end|>"), others in the byte-level
 * spelling ("Ġthe"). A lookup, so nothing is logged. */
int bpe_token_id(const Bpe *b, const char *text, size_t len);
/* The stored spelling of id (NUL-terminated), or NULL if id is out of range. */
const char *bpe_token_text(const Bpe *b, int id);
/* The bytes id decodes to, with their count in *len (non-NULL), for
 * streaming decode; NULL (and *len = 0) if id is out of range. Not
 * NUL-terminated: a token may decode to a part of a UTF-8 character. */
const uint8_t *bpe_token_bytes(const Bpe *b, int id, size_t *len);
/* BPE_TOKEN_* of id, or 0 if id is out of range. */
int bpe_token_type(const Bpe *b, int id);
/* Whether byte c has a token, i.e. survives bpe_encode. */
bool bpe_byte_encodable(const Bpe *b, uint8_t c);

/* Encodes len bytes of text (any bytes; need not be NUL-terminated) into ids.
 * *n_ids (non-NULL) is set to the number of ids the encoding takes, even when
 * they do not fit, so a caller can size its buffer; BPE_ENCODE_MAX_IDS(len)
 * always suffices. Returns 0; ERR_RANGE if the ids do not fit in cap, or with
 * BPE_ENC_STRICT for a byte without a token (logged with its position);
 * ERR_ARG for BPE_ENC_BOS without a bos id. On error the contents of ids are
 * unspecified. */
int bpe_encode(const Bpe *b, const char *text, size_t len, int flags, int *ids, int cap,
               int *n_ids);

/* Bytes bpe_decode may need for n ids, including the terminating NUL. */
size_t bpe_decode_max_bytes(const Bpe *b, int n);

/* Decodes n ids into out: the tokens' bytes concatenated and a NUL after
 * them, at most cap bytes in all; bpe_decode_max_bytes always suffices. The
 * bytes may contain NUL (token "Ā" is byte 0), so use *len_out (may be NULL)
 * for the length. CONTROL and UNKNOWN ids are skipped unless BPE_DEC_SPECIAL.
 * Returns 0; ERR_RANGE for an id outside [0, vocab size) (logged with the id
 * and its index) or if out is too small (logged). On error out holds an empty
 * string if cap > 0. */
int bpe_decode(const Bpe *b, const int *ids, int n, int flags, char *out, size_t cap,
               size_t *len_out);

/* Whether the vocabulary's chat template is one bpe_chat_format renders
 * (ChatML: <|im_start|>role\ncontent<|im_end|>\n per message). */
bool bpe_chat_supported(const Bpe *b);
/* The system prompt the template inserts when the first message is not a
 * system message, or NULL if it inserts none. SmolLM2-Instruct's is "You are
 * a helpful AI assistant named SmolLM, trained by Hugging Face". */
const char *bpe_chat_default_system(const Bpe *b);

#endif
