/* safetensors: a file as st_open reads it (through a memfd, so the real
 * open/fstat/pread path runs), then everything a loader asks of it: every
 * tensor's info, looked up by name, read as F32 with its own shape (and
 * with a wrong one), and every metadata entry.
 *
 * Input: the file. Properties: what st_open accepted is self-consistent
 * (numel times the dtype's size is the byte count, names find their index,
 * metadata keys their values), F32/F16/BF16 tensors read back and other
 * dtypes are refused with ERR_MISMATCH, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/safetensors.h"
#include "tests/fuzz/fuzz.h"

#define MAX_READ ((size_t)1 << 20) /* floats read from one tensor at most */

static float *g_buf;

static int dtype_size(const char *d)
{
    static const struct {
        const char *name;
        int         size;
    } k[] = {{"F64", 8}, {"I64", 8}, {"U64", 8},  {"F32", 4},     {"I32", 4},
             {"U32", 4}, {"F16", 2}, {"BF16", 2}, {"I16", 2},     {"U16", 2},
             {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(k[i].name, d)) return k[i].size;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile *f = NULL;
    int     rc = st_open(fuzz_memfd_path(data, size), &f);
    if (rc) {
        FUZZ_CHECK(f == NULL && rc < 0, "st_open: rc %d with a file", rc);
        return 0;
    }
    for (int i = 0; i < st_count(f); i++) {
        StInfo in;
        st_info_at(f, i, &in);
        int es = dtype_size(in.dtype);
        FUZZ_CHECK(es > 0, "tensor '%s': dtype '%s' accepted", in.name, in.dtype);
        FUZZ_CHECK(in.ndim >= 0 && in.ndim <= ST_MAX_NDIM, "ndim %d", in.ndim);
        size_t numel = 1;
        for (int d = 0; d < in.ndim; d++) numel *= (size_t)in.shape[d];
        FUZZ_CHECK(numel == in.numel && in.numel * (size_t)es == in.nbytes && in.nbytes <= size,
                   "tensor '%s': numel %zu (shape says %zu), %zu bytes in a %zu-byte file", in.name,
                   in.numel, numel, in.nbytes, size);
        FUZZ_CHECK(st_find(f, in.name) == i, "'%s' found at %d, is %d", in.name,
                   st_find(f, in.name), i);
        if (in.numel > MAX_READ) continue;
        bool is_float =
            !strcmp(in.dtype, "F32") || !strcmp(in.dtype, "F16") || !strcmp(in.dtype, "BF16");
        /* A float tensor reads, unless the file records its checksum and
         * the bytes do not match it (the mutator rarely keeps both whole). */
        bool has_sum = st_has_checksums(f); /* then every tensor has one */
        rc = st_read_f32(f, in.name, g_buf, in.ndim, in.shape);
        FUZZ_CHECK(is_float ? rc == 0 || (rc == ERR_FORMAT && has_sum) : rc == ERR_MISMATCH,
                   "tensor '%s' (%s): read rc %d", in.name, in.dtype, rc);
        /* The wrong shape: one more dimension of 1 is refused, not read. */
        if (in.ndim < ST_MAX_NDIM) {
            int64_t sh[ST_MAX_NDIM];
            memcpy(sh, in.shape, sizeof sh);
            sh[in.ndim] = 1;
            FUZZ_CHECK(st_read_f32(f, in.name, g_buf, in.ndim + 1, sh) == ERR_MISMATCH,
                       "tensor '%s' read with ndim %d", in.name, in.ndim + 1);
        }
    }
    FUZZ_CHECK(st_find(f, "") == ERR_NOTFOUND, "an empty name was found");
    for (int i = 0; i < st_meta_count(f); i++) {
        const char *k, *v;
        st_meta_at(f, i, &k, &v);
        FUZZ_CHECK(k && v && st_meta_get(f, k) == v, "metadata '%s'", k ? k : "(null)");
    }
    st_close(&f);
    FUZZ_CHECK(f == NULL, "st_close left the pointer");
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

/* A file of the given header (padded to 8 bytes) and data region. */
static void seed_raw(const char *dir, const char *name, const char *header, const void *d, size_t n)
{
    size_t   h = strlen(header), pad = (8 - h % 8) % 8;
    size_t   total = 8 + h + pad + n;
    uint8_t *p = xmalloc(total);
    uint64_t hl = h + pad;
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(hl >> (8 * i));
    memcpy(p + 8, header, h);
    memset(p + 8 + h, ' ', pad);
    if (n) memcpy(p + 8 + h + pad, d, n);
    fuzz_seed(dir, name, p, total);
    free(p);
}

static void seeds(const char *dir)
{
    /* Written by st_write: three F32 tensors of 2, 1 and 0 dims, metadata. */
    float    w[6] = {1, -2, 0.5f, 3, 0, -0.25f}, b[3] = {0.125f, 4, -8}, s[1] = {7};
    StTensor t[3] = {{"model.w", w, 2, {2, 3}}, {"model.b", b, 1, {3}}, {"scale", s, 0, {0}}};
    StMeta   meta[2] = {{"format", "pt"}, {"rlhf_save_id", "0123456789abcdef"}};
    char     path[4096];
    snprintf(path, sizeof path, "%s/st-write", dir);
    CHECK(st_write(path, t, 3, meta, 2) == 0);
    snprintf(path, sizeof path, "%s/st-write-empty", dir);
    CHECK(st_write(path, NULL, 0, NULL, 0) == 0);
    /* What st_write never makes: half floats, integers, a zero-size tensor. */
    uint16_t half[4] = {0x3c00, 0xc000, 0x3f80, 0x7c00}; /* F16 1, -2; BF16 1; F16 inf */
    seed_raw(dir, "f16-bf16",
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[4,8]}}",
             half, sizeof half);
    int64_t ints[2] = {-1, 1LL << 40};
    seed_raw(dir, "i64-empty",
             "{\"__metadata__\":{\"k\":\"v\"},\"i\":{\"dtype\":\"I64\",\"shape\":[2],"
             "\"data_offsets\":[0,16]},\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],"
             "\"data_offsets\":[16,16]}}",
             ints, sizeof ints);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("safetensors", seeds);
    g_buf = xmalloc(MAX_READ * sizeof(float));
    return 0;
}
