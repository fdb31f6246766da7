#include "common/formats/gguf_buf.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/gguf.h"

/* Integers are appended in host order. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_buf.c assumes a little-endian host"
#endif

void gguf_buf_free(GgufBuf *b)
{
    free(b->p);
    *b = (GgufBuf){0};
}

void gguf_buf_put(GgufBuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

void gguf_buf_u32(GgufBuf *b, uint32_t v)
{
    gguf_buf_put(b, &v, 4);
}

void gguf_buf_u64(GgufBuf *b, uint64_t v)
{
    gguf_buf_put(b, &v, 8);
}

void gguf_buf_strn(GgufBuf *b, const char *s, size_t n)
{
    gguf_buf_u64(b, n);
    gguf_buf_put(b, s, n);
}

void gguf_buf_str(GgufBuf *b, const char *s)
{
    gguf_buf_strn(b, s, strlen(s));
}

/* The key and the value type; returns where the value starts. */
static size_t kv_head(GgufBuf *b, const char *key, int type)
{
    gguf_buf_str(b, key);
    gguf_buf_u32(b, (uint32_t)type);
    b->n_kv++;
    return b->n;
}

size_t gguf_buf_kv_scalar(GgufBuf *b, const char *key, int type, const void *v)
{
    /* Bytes of each scalar type, GGUF_VAL_UINT8..GGUF_VAL_FLOAT64; 0 for
     * STRING and ARRAY, which are not scalars. */
    static const int k_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    CHECK(type >= 0 && type < (int)(sizeof k_size / sizeof k_size[0]) && k_size[type] > 0);
    size_t at = kv_head(b, key, type);
    gguf_buf_put(b, v, (size_t)k_size[type]);
    return at;
}

size_t gguf_buf_kv_u32(GgufBuf *b, const char *key, uint32_t v)
{
    return gguf_buf_kv_scalar(b, key, GGUF_VAL_UINT32, &v);
}

size_t gguf_buf_kv_f32(GgufBuf *b, const char *key, float v)
{
    return gguf_buf_kv_scalar(b, key, GGUF_VAL_FLOAT32, &v);
}

size_t gguf_buf_kv_bool(GgufBuf *b, const char *key, bool v)
{
    uint8_t x = v ? 1 : 0;
    return gguf_buf_kv_scalar(b, key, GGUF_VAL_BOOL, &x);
}

size_t gguf_buf_kv_str(GgufBuf *b, const char *key, const char *v)
{
    size_t at = kv_head(b, key, GGUF_VAL_STRING);
    gguf_buf_str(b, v);
    return at;
}

size_t gguf_buf_kv_array(GgufBuf *b, const char *key, int elem_type, uint64_t n)
{
    size_t at = kv_head(b, key, GGUF_VAL_ARRAY);
    gguf_buf_u32(b, (uint32_t)elem_type);
    gguf_buf_u64(b, n);
    return at;
}
