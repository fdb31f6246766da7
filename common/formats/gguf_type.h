/* gguf_type: the ggml tensor types a GGUF file may name (their block layout:
 * elements and bytes per block) and the dequantisation of whole blocks of
 * the supported ones to fp32. gguf.h uses it to check a tensor directory and
 * to read tensors; the table is the one place a new ggml type joins.
 *
 * Ownership: the table is static; the GgufType pointers returned are valid
 * for the life of the process. Threading: everything here is pure and
 * thread-safe. Errors: none reported; gguf_type_find returns NULL for an id
 * it does not know and gguf_type_dequant CHECKs that its type is supported. */
#ifndef RLHF_GGUF_TYPE_H
#define RLHF_GGUF_TYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml tensor types that this reader can dequantise (ids as in the file). */
enum {
    GGUF_TYPE_F32 = 0,
    GGUF_TYPE_F16 = 1,
    GGUF_TYPE_Q4_0 = 2, /* blocks of 32: fp16 d, 16 bytes of nibbles; x = (q - 8) * d */
    GGUF_TYPE_Q4_1 = 3, /* blocks of 32: fp16 d, fp16 m, 16 bytes of nibbles; x = q * d + m */
    GGUF_TYPE_Q8_0 = 8, /* blocks of 32: fp16 d, 32 int8; x = q * d */
    GGUF_TYPE_BF16 = 30,
};

/* The names of the types gguf_type_dequant handles, for messages. */
#define GGUF_TYPE_SUPPORTED_NAMES "F32, F16, BF16, Q8_0, Q4_0, Q4_1"

/* One ggml type whose block layout is known. */
typedef struct {
    int         id;        /* ggml type id, as in the file */
    const char *name;      /* e.g. "Q4_1" */
    int         block;     /* elements per block */
    int         size;      /* bytes per block */
    bool        supported; /* gguf_type_dequant can dequantise it */
} GgufType;

/* The type with ggml id id, or NULL if its block layout is not known here
 * (never assigned, removed from ggml, or a newer format such as the IQ and
 * ternary quantisations). */
const GgufType *gguf_type_find(uint32_t id);
/* True for an id that ggml assigns to a format whose block layout is not
 * known here (16-23, 29, 31-39): unsupported rather than malformed. */
bool gguf_type_is_reserved(uint32_t id);
/* True when ggml type id type can be dequantised by gguf_type_dequant (and so
 * read by gguf_read_f32). */
bool gguf_type_is_supported(int type);

/* Dequantises nb blocks of type t (supported, CHECKed) from src
 * (nb * t->size bytes) into dst (nb * t->block floats). Element j of a block
 * comes out at dst[j]: the 4-bit formats keep element j in the low nibble of
 * byte j and element j + 16 in the high nibble (not interleaved). */
void gguf_type_dequant(const GgufType *t, const uint8_t *src, float *dst, size_t nb);

#endif
