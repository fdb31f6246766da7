/* bpe_pre: the text side of byte-level BPE: UTF-8 decoding and encoding,
 * GPT-2's byte alphabet (each byte spelled as one printable code point, so
 * a space is "Ġ") and the pre-tokenizer that splits text into the pieces
 * merges run on (the GPT-2 regex, after isolating every numeric character
 * for "smollm"; see bpe.h). Unicode classes follow Unicode 14.0
 * (bpe_unicode.inc, generated).
 *
 * Ownership: buffers are the caller's. Threading: pure functions. Errors:
 * none; invalid UTF-8 decodes byte by byte (see bpe_pre_utf8_next). */
#ifndef RLHF_BPE_PRE_H
#define RLHF_BPE_PRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The pre-tokenizers (GGUF tokenizer.ggml.pre). */
typedef enum { BPE_PRE_GPT2 = 0, BPE_PRE_SMOLLM = 1 } BpePre;

/* Decodes the code point at s[p] (p < end) into *cp and returns its length.
 * Invalid UTF-8 (stray continuation bytes, overlong forms, surrogates, values
 * above U+10FFFF, truncated sequences) yields 0xFFFFFFFF and length 1, so
 * every byte still belongs to exactly one piece. */
size_t bpe_pre_utf8_next(const uint8_t *s, size_t p, size_t end, uint32_t *cp);
/* Encodes cp (<= U+10FFFF) into out (4 bytes of room); returns the length. */
size_t bpe_pre_utf8_put(uint32_t cp, uint8_t *out);
/* Whether s[0..n) is valid UTF-8 (every character decodes). */
bool bpe_pre_utf8_valid(const uint8_t *s, size_t n);

/* GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand for
 * themselves; the other 68 (0x00..0x20, 0x7f..0xa0 and the soft hyphen 0xad)
 * for U+0100 onwards in byte order. */
uint32_t bpe_pre_byte_to_cp(uint8_t c);
/* The inverse: a byte, or -1 for code points outside the alphabet. */
int bpe_pre_cp_to_byte(uint32_t cp);

/* Called with each piece: its bytes s[0..len) and its offset at in the
 * text. A non-zero return stops the split and is returned by it. */
typedef int (*BpePieceFn)(void *ctx, const uint8_t *s, size_t len, size_t at);

/* Splits s[start, end) (no special tokens inside) into pieces with pre and
 * calls fn on each, in order; every byte belongs to exactly one piece.
 * Returns 0, or the first non-zero value fn returned. */
int bpe_pre_split(BpePre pre, const uint8_t *s, size_t start, size_t end, BpePieceFn fn, void *ctx);

#endif
