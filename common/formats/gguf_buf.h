/* gguf_buf: GGUF bytes built in memory: a growable buffer, the
 * little-endian integers and length-prefixed strings of the format, and
 * metadata entries (key, value type, value). export_gguf builds its header
 * with it, and the tests build hand-made (and deliberately broken) files.
 *
 * Ownership: a GgufBuf starts zeroed ({0}) and owns its bytes; release them
 * with gguf_buf_free. Growth aborts on allocation failure (xrealloc), so
 * nothing here fails. Threading: one thread per GgufBuf. */
#ifndef RLHF_GGUF_BUF_H
#define RLHF_GGUF_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *p;    /* (n) the bytes so far, owned */
    size_t   n;    /* bytes used */
    size_t   cap;  /* bytes allocated */
    uint64_t n_kv; /* metadata entries added by gguf_buf_kv_* */
} GgufBuf;

void gguf_buf_free(GgufBuf *b);

/* Appends n bytes (d may be NULL when n is 0). */
void gguf_buf_put(GgufBuf *b, const void *d, size_t n);
/* Little-endian integers, as every GGUF field is stored. */
void gguf_buf_u32(GgufBuf *b, uint32_t v);
void gguf_buf_u64(GgufBuf *b, uint64_t v);
/* A GGUF string: a u64 byte length, then the bytes (no NUL). */
void gguf_buf_strn(GgufBuf *b, const char *s, size_t n);
void gguf_buf_str(GgufBuf *b, const char *s);

/* Metadata entries: the key, the value type (GGUF_VAL_*) and the value.
 * Each counts one entry in n_kv and returns the offset of its value in b
 * (for tests that patch it afterwards). gguf_buf_kv_scalar copies the
 * value's bytes for a scalar type (CHECKed); gguf_buf_kv_array writes the
 * array's element type and count, and the caller appends the n elements. */
size_t gguf_buf_kv_scalar(GgufBuf *b, const char *key, int type, const void *v);
size_t gguf_buf_kv_u32(GgufBuf *b, const char *key, uint32_t v);
size_t gguf_buf_kv_f32(GgufBuf *b, const char *key, float v);
size_t gguf_buf_kv_bool(GgufBuf *b, const char *key, bool v);
size_t gguf_buf_kv_str(GgufBuf *b, const char *key, const char *v);
size_t gguf_buf_kv_array(GgufBuf *b, const char *key, int elem_type, uint64_t n);

#endif
