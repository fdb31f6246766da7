/* gguf: reading GGUF model files (llama.cpp's format); gguf_llama.h loads
 * Llama-family models from them into our Model.
 *
 * Layout (little-endian): magic "GGUF", version (u32, 2 or 3 accepted),
 * tensor count (u64), metadata count (u64); then the metadata, each a key
 * (string) + value type (u32) + value, where a string is a u64 byte length
 * followed by the bytes (no NUL) and an array is an element type (u32) + a
 * u64 count + the elements; then one directory entry per tensor: name
 * (string), n_dims (u32), ne[n_dims] (u64 each, innermost first: ne[0] is
 * the number of columns of a row-major matrix), ggml type (u32) and offset
 * (u64, relative to the data region). The data region starts at the first
 * multiple of the alignment (metadata "general.alignment", default 32) after
 * the directory, and every tensor offset is a multiple of it.
 *
 * Reading treats the file as untrusted: gguf_open validates the header, every
 * metadata count and string length (against the bytes left in the file and
 * hard limits), every tensor's name, dimensions (overflow, limits, whole
 * quantisation blocks), type and byte range (aligned, inside the file, not
 * overlapping another tensor) before anything is used, and refuses a bad file
 * with an error naming the file, the tensor or key and the problem. The file
 * is read with pread through a small buffer, never mapped, so memory stays
 * bounded by the metadata plus what the caller asks for, and a file
 * truncated underneath becomes ERR_IO rather than a crash.
 *
 * Tensor types F32, F16, BF16, Q8_0, Q4_0 and Q4_1 can be dequantised to
 * fp32; other known ggml types are accepted in the directory (so the file can
 * be inspected) but refused when read. gguf_type.h holds the type table and
 * the dequantisation.
 *
 * Ownership: gguf_open's caller owns the GgufFile; every string, array and
 * info it returns is borrowed until gguf_close. Threading: one thread per
 * GgufFile. Errors: 0 or a negative ERR_* code; each failure is logged once
 * naming the function, the file, the tensor or key and the bad vs expected
 * value. Lookups that merely find nothing (ERR_NOTFOUND) are not logged. */
#ifndef RLHF_GGUF_H
#define RLHF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/formats/gguf_type.h"

#define GGUF_MAX_DIMS 4                      /* ggml tensors have at most 4 dims */
#define GGUF_MAX_NAME 255                    /* longest tensor name or key, bytes */
#define GGUF_MAX_STRING ((uint64_t)64 << 20) /* longest metadata string, bytes */
#define GGUF_MAX_ARRAY ((uint64_t)1 << 24)   /* most array elements in one file */
#define GGUF_MAX_COUNT ((uint64_t)1 << 20)   /* most tensors, most metadata keys */
#define GGUF_MAX_DIM ((int64_t)INT32_MAX)    /* largest single dimension */
#define GGUF_MAX_NUMEL ((int64_t)1 << 40)    /* most elements of one tensor */
#define GGUF_MAX_ALIGNMENT 65536             /* largest general.alignment accepted */
#define GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, as stored in the file. */
enum {
    GGUF_VAL_UINT8 = 0,
    GGUF_VAL_INT8 = 1,
    GGUF_VAL_UINT16 = 2,
    GGUF_VAL_INT16 = 3,
    GGUF_VAL_UINT32 = 4,
    GGUF_VAL_INT32 = 5,
    GGUF_VAL_FLOAT32 = 6,
    GGUF_VAL_BOOL = 7,
    GGUF_VAL_STRING = 8,
    GGUF_VAL_ARRAY = 9,
    GGUF_VAL_UINT64 = 10,
    GGUF_VAL_INT64 = 11,
    GGUF_VAL_FLOAT64 = 12,
};

typedef struct GgufFile GgufFile;

/* A string from the file: s is NUL-terminated for convenience, but len is
 * authoritative (GGUF strings may contain NUL bytes). */
typedef struct {
    const char *s;   /* borrowed */
    size_t      len; /* bytes, excluding the added NUL */
} GgufStr;

/* What the directory says about one tensor. */
typedef struct {
    const char *name;              /* borrowed */
    int         type;              /* ggml type id */
    const char *type_name;         /* borrowed, e.g. "Q4_1" */
    int         n_dims;            /* 1..GGUF_MAX_DIMS */
    int64_t     ne[GGUF_MAX_DIMS]; /* innermost first; entries past n_dims are 1 */
    size_t      numel;             /* product of ne */
    size_t      nbytes;            /* bytes in the file */
    uint64_t    offset;            /* absolute file offset of the first byte */
} GgufTensorInfo;

/* Opens and validates path (see the header comment). Returns 0 with *out
 * set; ERR_NOTFOUND if the file does not exist; ERR_IO if it cannot be read;
 * ERR_FORMAT for a malformed or inconsistent file (wrong magic, truncated,
 * bad counts, lengths, dimensions or offsets, unknown types); ERR_UNSUPPORTED
 * for a version other than 2 or 3, a big-endian file, or a known ggml type
 * whose block size this reader does not know. Logged with the problem.
 * Caller owns *out. */
int  gguf_open(const char *path, GgufFile **out);
void gguf_close(GgufFile **f);

const char *gguf_path(const GgufFile *f);
uint32_t    gguf_version(const GgufFile *f);
/* The alignment of the tensor data in bytes. */
size_t gguf_alignment(const GgufFile *f);

/* ---- metadata ---------------------------------------------------------- */

int gguf_kv_count(const GgufFile *f);
/* Index of key, or ERR_NOTFOUND (negative, not logged). */
int gguf_find_key(const GgufFile *f, const char *key);
/* Key, value type (GGUF_VAL_*) and, for arrays, element type and count of
 * entry i in 0..gguf_kv_count-1 (CHECKed). Any out pointer may be NULL. */
void gguf_kv_at(const GgufFile *f, int i, const char **key, int *type, int *elem_type, size_t *n);

/* Typed getters. Each returns 0; ERR_NOTFOUND if key is absent (not
 * logged); ERR_MISMATCH if the value has another type (logged with both);
 * gguf_get_int also ERR_RANGE for an unsigned value above INT64_MAX.
 * gguf_get_int takes any integer type, gguf_get_float FLOAT32 or FLOAT64. */
int gguf_get_int(const GgufFile *f, const char *key, int64_t *out);
int gguf_get_float(const GgufFile *f, const char *key, double *out);
int gguf_get_bool(const GgufFile *f, const char *key, bool *out);
int gguf_get_str(const GgufFile *f, const char *key, GgufStr *out);
/* An array of strings, e.g. tokenizer.ggml.tokens or tokenizer.ggml.merges:
 * *out points at n entries, borrowed. */
int gguf_get_str_array(const GgufFile *f, const char *key, const GgufStr **out, size_t *n);
/* An array of numbers or bools, e.g. tokenizer.ggml.token_type (INT32) or
 * tokenizer.ggml.scores (FLOAT32): *data points at n packed elements of
 * *elem_type (GGUF_VAL_*), in host order and aligned for their type, borrowed.
 * ERR_MISMATCH for an array of strings. */
int gguf_get_array(const GgufFile *f, const char *key, int *elem_type, const void **data,
                   size_t *n);

/* ---- tensors ----------------------------------------------------------- */

int gguf_tensor_count(const GgufFile *f);
/* Info for tensor i in 0..gguf_tensor_count-1 (CHECKed), in directory order. */
void gguf_tensor_info(const GgufFile *f, int i, GgufTensorInfo *out);
/* Index of the tensor called name, or ERR_NOTFOUND (negative, not logged). */
int gguf_find_tensor(const GgufFile *f, const char *name);
/* True when ggml type id type can be dequantised by gguf_read_f32. */
bool gguf_type_is_supported(int type);

/* Dequantises tensor i (numel elements, innermost dimension fastest, so a
 * matrix comes out row-major [ne[1], ne[0]]) into dst as fp32. n must equal
 * the tensor's numel (CHECKed). Returns 0; ERR_UNSUPPORTED for a type that
 * cannot be dequantised; ERR_IO if the read fails (for example the file
 * shrank after gguf_open). Logged. dst is unspecified on error. Uses a fixed
 * 16 KiB stack buffer, no allocation. */
int gguf_read_f32(GgufFile *f, int i, float *dst, size_t n);

#endif
