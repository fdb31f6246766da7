/* tok: a character-level tokenizer for the built-in tasks.
 *
 * Ids 0, 1 and 2 are the special tokens PAD, BOS and EOS; then comes one id per
 * character of the charset given at creation, in charset order, so the vocab
 * size is TOK_N_SPECIAL + strlen(charset). A charset is printable ASCII
 * (0x20..0x7e) without duplicates. The charset is the whole tokenizer: saving
 * it (ckpt stores it in config.json) and passing it back to tok_new recreates
 * the same ids.
 *
 * Ownership: tok_new's caller owns the Tok; tok_charset's string is borrowed
 * and lives as long as the Tok. Threading: a Tok is immutable after tok_new,
 * so any number of threads may use one concurrently. Errors: functions that
 * can fail return 0 or a negative ERR_* code and log the reason once. */
#ifndef RLHF_TOK_H
#define RLHF_TOK_H

#include <stdbool.h>
#include <stddef.h>

enum {
    TOK_PAD = 0,       /* padding; never produced by tok_encode */
    TOK_BOS = 1,       /* beginning of sequence */
    TOK_EOS = 2,       /* end of sequence */
    TOK_N_SPECIAL = 3, /* the first character id */
};

/* Longest possible charset: every printable ASCII character once. */
#define TOK_CHARSET_MAX 95

/* The default charset for arithmetic and simple text. Ids of existing
 * characters must never change, so only ever append to it. */
#define TOK_CHARSET_DEFAULT                                                                        \
    " 0123456789+-*/=<>()[].,:;!?'\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* tok_encode flags. */
enum {
    TOK_ENC_BOS = 1 << 0, /* prepend TOK_BOS */
    TOK_ENC_EOS = 1 << 1, /* append TOK_EOS */
};

/* tok_decode flags. Without TOK_DEC_SPECIAL, special ids are skipped. */
enum {
    TOK_DEC_SPECIAL = 1 << 0, /* render special ids as <pad>, <bos>, <eos> */
};

/* Bytes tok_decode may need for n ids, including the terminating NUL: each id
 * renders as at most 5 characters ("<bos>"). */
#define TOK_DECODE_MAX_BYTES(n) ((size_t)(n)*5 + 1)

typedef struct Tok Tok;

/* Checks a charset: non-NULL, 1..TOK_CHARSET_MAX characters, each printable
 * ASCII, none repeated. Returns 0, or ERR_ARG with the reason written to why
 * (if non-NULL). Does not log, so callers can probe outside input. */
int tok_charset_validate(const char *charset, char *why, size_t why_len);

/* A tokenizer over charset (copied). Returns NULL, after logging the reason,
 * if tok_charset_validate refuses the charset. Caller owns. */
Tok *tok_new(const char *charset);
void tok_free(Tok **t);

/* TOK_N_SPECIAL + the number of characters. */
int tok_vocab_size(const Tok *t);
/* The charset given to tok_new; borrowed. */
const char *tok_charset(const Tok *t);

/* The id of character c, or ERR_NOTFOUND (negative) if c is not in the
 * vocabulary. A lookup, so nothing is logged. */
int tok_id(const Tok *t, char c);
/* The character of id, or '\0' for special ids and ids out of range. */
char tok_char(const Tok *t, int id);

/* Encodes len bytes of text (need not be NUL-terminated) into ids, with BOS
 * and EOS added as flags ask. *n_ids (non-NULL) is set to the number of ids
 * the encoding takes, len + 1 per added special, even on failure so a caller
 * can size its buffer. Returns 0; ERR_RANGE if a character is not in the
 * vocabulary (logged with the character and its byte position); ERR_RANGE if
 * the ids do not fit in cap (logged). On error the contents of ids are
 * unspecified. */
int tok_encode(const Tok *t, const char *text, size_t len, int flags, int *ids, int cap,
               int *n_ids);

/* Decodes n ids into out as a NUL-terminated string of at most cap bytes
 * including the NUL; TOK_DECODE_MAX_BYTES(n) always suffices. Special ids are
 * skipped, or rendered as <pad>/<bos>/<eos> with TOK_DEC_SPECIAL. *len_out
 * (may be NULL) gets the string length. Returns 0; ERR_RANGE for an id
 * outside [0, vocab size) (logged with the id and its index) or if out is too
 * small (logged). On error out holds an empty string if cap > 0. */
int tok_decode(const Tok *t, const int *ids, int n, int flags, char *out, size_t cap,
               size_t *len_out);

#endif
