/* The GGUF reader's self-test: every metadata and tensor type of a
 * hand-made file, hostile files (each refused with its own message, every
 * truncation, random header corruption), the query/key permutation and Llama
 * models written as llama.cpp's converter does, loaded back bit for bit. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/formats/gguf_buf.h"
#include "common/nn/half.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

/* One tensor to write. */
typedef struct {
    const char *name;
    uint32_t    type;
    int         n_dims;
    int64_t     ne[GGUF_MAX_DIMS];
    const void *data;
    size_t      nbytes;
} WTensor;

#define W_MAX 8 /* tensors whose field positions are recorded */

/* Where the fields a hostile test patches ended up in the file. */
typedef struct {
    size_t counts;        /* the tensor count; the metadata count follows */
    size_t kv;            /* the first metadata entry */
    size_t n_dims[W_MAX]; /* per tensor: n_dims, ne[0], type, offset */
    size_t ne[W_MAX];
    size_t type[W_MAX];
    size_t offset[W_MAX];
    size_t data_start;
    size_t rel[W_MAX]; /* offsets written, relative to the data region */
} Where;

/* A whole file: header, metadata kv (n_kv entries), directory, data at
 * multiples of align (which must match general.alignment in kv if set). */
static void build_file(GgufBuf *out, uint32_t version, const GgufBuf *kv, uint64_t n_kv,
                       const WTensor *t, int n_t, size_t align, Where *w)
{
    Where dummy;
    if (!w) w = &dummy;
    out->n = 0;
    gguf_buf_put(out, "GGUF", 4);
    gguf_buf_u32(out, version);
    w->counts = out->n;
    gguf_buf_u64(out, (uint64_t)n_t);
    gguf_buf_u64(out, n_kv);
    w->kv = out->n;
    gguf_buf_put(out, kv->p, kv->n);
    size_t rel = 0;
    for (int i = 0; i < n_t; i++) {
        gguf_buf_str(out, t[i].name);
        if (i < W_MAX) w->n_dims[i] = out->n;
        gguf_buf_u32(out, (uint32_t)t[i].n_dims);
        if (i < W_MAX) w->ne[i] = out->n;
        for (int d = 0; d < t[i].n_dims; d++) gguf_buf_u64(out, (uint64_t)t[i].ne[d]);
        if (i < W_MAX) w->type[i] = out->n;
        gguf_buf_u32(out, t[i].type);
        if (i < W_MAX) w->offset[i] = out->n, w->rel[i] = rel;
        gguf_buf_u64(out, rel);
        rel = (rel + t[i].nbytes + align - 1) / align * align;
    }
    static const uint8_t zeros[GGUF_MAX_ALIGNMENT];
    gguf_buf_put(out, zeros, (align - out->n % align) % align);
    w->data_start = out->n;
    for (int i = 0; i < n_t; i++) {
        gguf_buf_put(out, t[i].data, t[i].nbytes);
        /* No padding after the last tensor: then every cut of the file
         * loses data. */
        if (i + 1 < n_t)
            gguf_buf_put(out, zeros, (align - (out->n - w->data_start) % align) % align);
    }
}

static void patch_u32(GgufBuf *b, size_t at, uint32_t v)
{
    memcpy(b->p + at, &v, 4);
}

static void patch_u64(GgufBuf *b, size_t at, uint64_t v)
{
    memcpy(b->p + at, &v, 8);
}

typedef struct {
    bool        verbose;
    const char *dir;
    char        path[PATH_MAX];
} Ctx;

/* Writes b as a file and expects gguf_open to refuse it with code want and
 * a log line containing expect (and the file name). */
static void expect_refused(Ctx *t, const GgufBuf *b, int want, const char *expect, const char *what)
{
    CHECK(fixture_write_file(t->path, b->p, b->n) == 0);
    GgufFile *f = NULL;
    fileio_capture_begin();
    int   rc = gguf_open(t->path, &f);
    char *log = fileio_capture_end(t->verbose);
    bool  logged = strstr(log, expect) && strstr(log, t->path);
    EXPECT(rc == want && !f && logged, "%s: gguf_open returned %d (%s), expected %d; log %s '%s'",
           what, rc, err_str(rc), want, logged ? "has" : "lacks", expect);
    free(log);
    gguf_close(&f);
}

/* The hand-made test file: every metadata type and every tensor type. */
typedef struct {
    GgufBuf  file;
    Where    w;
    size_t   pos_arch, pos_tokens_count, pos_tokens_type, pos_align, pos_first_type;
    uint16_t f16[4], bf16[4];
    uint8_t  q8[2 * 34], q40[18], q41[2 * 20], q4k[144];
    float    f32[4];
    float    want_q8[64], want_q40[32], want_q41[64];
} TestFile;

static void make_test_file(TestFile *tf, uint32_t version, uint32_t align)
{
    GgufBuf kv = {0};
    tf->pos_arch = gguf_buf_kv_str(&kv, "general.architecture", "llama");
    uint8_t  u8 = 200;
    int8_t   i8 = -5;
    uint16_t u16 = 60000;
    int16_t  i16 = -30000;
    int32_t  i32 = -2000000000;
    uint64_t u64 = (uint64_t)1 << 40, big = ((uint64_t)1 << 63) + 1;
    int64_t  i64 = -((int64_t)1 << 40);
    double   f64 = 0.1;
    uint8_t  yes = 1;
    tf->pos_first_type = kv.n;
    gguf_buf_kv_scalar(&kv, "t.u8", GGUF_VAL_UINT8, &u8);
    gguf_buf_kv_scalar(&kv, "t.i8", GGUF_VAL_INT8, &i8);
    gguf_buf_kv_scalar(&kv, "t.u16", GGUF_VAL_UINT16, &u16);
    gguf_buf_kv_scalar(&kv, "t.i16", GGUF_VAL_INT16, &i16);
    gguf_buf_kv_u32(&kv, "t.u32", 4000000000u);
    gguf_buf_kv_scalar(&kv, "t.i32", GGUF_VAL_INT32, &i32);
    gguf_buf_kv_f32(&kv, "t.f32", 0.5f);
    gguf_buf_kv_scalar(&kv, "t.bool", GGUF_VAL_BOOL, &yes);
    gguf_buf_kv_scalar(&kv, "t.u64", GGUF_VAL_UINT64, &u64);
    gguf_buf_kv_scalar(&kv, "t.i64", GGUF_VAL_INT64, &i64);
    gguf_buf_kv_scalar(&kv, "t.f64", GGUF_VAL_FLOAT64, &f64);
    gguf_buf_kv_scalar(&kv, "t.big", GGUF_VAL_UINT64, &big);
    /* Strings with an empty one, an embedded NUL and UTF-8. */
    tf->pos_tokens_type = gguf_buf_kv_array(&kv, "tokenizer.ggml.tokens", GGUF_VAL_STRING, 4);
    tf->pos_tokens_count = tf->pos_tokens_type + 4; /* after the u32 element type */
    gguf_buf_str(&kv, "a");
    gguf_buf_str(&kv, "");
    gguf_buf_strn(&kv, "h\0i", 3);
    gguf_buf_str(&kv, "h\xc3\xa9llo");
    int32_t types[4] = {1, 2, 3, 6};
    gguf_buf_kv_array(&kv, "tokenizer.ggml.token_type", GGUF_VAL_INT32, 4);
    gguf_buf_put(&kv, types, sizeof types);
    float scores[3] = {0.0f, -1.5f, 2.0f};
    gguf_buf_kv_array(&kv, "tokenizer.ggml.scores", GGUF_VAL_FLOAT32, 3);
    gguf_buf_put(&kv, scores, sizeof scores);
    tf->pos_align = 0;
    if (align != GGUF_DEFAULT_ALIGNMENT)
        tf->pos_align = gguf_buf_kv_u32(&kv, "general.alignment", align);

    float f32[4] = {1.5f, -2.0f, 0.0f, 3.25f};
    memcpy(tf->f32, f32, sizeof f32);
    uint16_t f16[4] = {0x3C00, 0xC000, 0x3800, 0x0001};  /* 1, -2, 0.5, 2^-24 */
    uint16_t bf16[4] = {0x3F80, 0xC040, 0x4049, 0x8000}; /* 1, -3, 3.140625, -0 */
    memcpy(tf->f16, f16, sizeof f16);
    memcpy(tf->bf16, bf16, sizeof bf16);
    /* Q8_0: row 0 scale 0.5, q = j - 16; row 1 scale 2, q = +-4j, ends 127 and -128. */
    for (int r = 0; r < 2; r++) {
        uint8_t *blk = tf->q8 + 34 * r;
        uint16_t d = half_f32_to_f16(r ? 2.0f : 0.5f);
        memcpy(blk, &d, 2);
        for (int j = 0; j < 32; j++) {
            int q = r == 0 ? j - 16 : (j % 2 ? -4 * j : 4 * j);
            if (r == 1 && j == 30) q = 127;
            if (r == 1 && j == 31) q = -128;
            blk[2 + j] = (uint8_t)(int8_t)q;
            tf->want_q8[32 * r + j] = (float)q * (r ? 2.0f : 0.5f);
        }
    }
    /* Q4_0: scale 0.5, byte j holds j (low) and 15 - j (high). */
    uint16_t d = half_f32_to_f16(0.5f);
    memcpy(tf->q40, &d, 2);
    for (int j = 0; j < 16; j++) {
        tf->q40[2 + j] = (uint8_t)(j | (15 - j) << 4);
        tf->want_q40[j] = (float)(j - 8) * 0.5f;
        tf->want_q40[j + 16] = (float)(15 - j - 8) * 0.5f;
    }
    /* Q4_1: block 0 d 0.25, m -1; block 1 d 2, m 1; same nibbles as above. */
    for (int b = 0; b < 2; b++) {
        uint8_t *blk = tf->q41 + 20 * b;
        float    dd = b ? 2.0f : 0.25f, mm = b ? 1.0f : -1.0f;
        uint16_t hd = half_f32_to_f16(dd), hm = half_f32_to_f16(mm);
        memcpy(blk, &hd, 2);
        memcpy(blk + 2, &hm, 2);
        for (int j = 0; j < 16; j++) {
            blk[4 + j] = (uint8_t)(j | (15 - j) << 4);
            tf->want_q41[32 * b + j] = (float)j * dd + mm;
            tf->want_q41[32 * b + j + 16] = (float)(15 - j) * dd + mm;
        }
    }
    memset(tf->q4k, 0, sizeof tf->q4k);
    WTensor t[7] = {
        {"f32", GGUF_TYPE_F32, 1, {4}, tf->f32, 16},
        {"f16", GGUF_TYPE_F16, 2, {2, 2}, tf->f16, 8},
        {"bf16", GGUF_TYPE_BF16, 1, {4}, tf->bf16, 8},
        {"q8_0", GGUF_TYPE_Q8_0, 2, {32, 2}, tf->q8, sizeof tf->q8},
        {"q4_0", GGUF_TYPE_Q4_0, 1, {32}, tf->q40, sizeof tf->q40},
        {"q4_1", GGUF_TYPE_Q4_1, 2, {64, 1}, tf->q41, sizeof tf->q41},
        {"q4_k", 12, 1, {256}, tf->q4k, sizeof tf->q4k},
    };
    tf->file = (GgufBuf){0};
    build_file(&tf->file, version, &kv, kv.n_kv, t, 7, align, &tf->w);
    /* Positions in kv become positions in the file. */
    tf->pos_arch += tf->w.kv;
    tf->pos_first_type += tf->w.kv;
    tf->pos_tokens_type += tf->w.kv;
    tf->pos_tokens_count += tf->w.kv;
    if (tf->pos_align) tf->pos_align += tf->w.kv;
    free(kv.p);
}

static bool same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t x, y;
        memcpy(&x, &a[i], 4);
        memcpy(&y, &b[i], 4);
        if (x != y) return false;
    }
    return true;
}

/* Opens the valid file and checks every value against the hand-computed one. */
static void test_valid(Ctx *t, uint32_t version, uint32_t align)
{
    TestFile tf;
    make_test_file(&tf, version, align);
    CHECK(fixture_write_file(t->path, tf.file.p, tf.file.n) == 0);
    GgufFile *f = NULL;
    int       rc = gguf_open(t->path, &f);
    EXPECT(rc == 0, "v%u align %u: valid file refused (%d)", version, align, rc);
    if (rc) goto done;
    EXPECT(gguf_version(f) == version && gguf_alignment(f) == align && gguf_tensor_count(f) == 7,
           "v%u: version %u alignment %zu count %d", version, gguf_version(f), gguf_alignment(f),
           gguf_tensor_count(f));
    int64_t     iv[12];
    const char *ikeys[] = {"t.u8", "t.i8", "t.u16", "t.i16", "t.u32", "t.i32", "t.u64", "t.i64"};
    int64_t     iwant[] = {
            200, -5, 60000, -30000, 4000000000LL, -2000000000, (int64_t)1 << 40, -((int64_t)1 << 40)};
    for (int i = 0; i < 8; i++) {
        rc = gguf_get_int(f, ikeys[i], &iv[i]);
        EXPECT(rc == 0 && iv[i] == iwant[i], "%s: rc %d value %lld, expected %lld", ikeys[i], rc,
               (long long)iv[i], (long long)iwant[i]);
    }
    double fv = 0;
    bool   bv = false;
    EXPECT(gguf_get_float(f, "t.f32", &fv) == 0 && fv == 0.5, "t.f32 = %g", fv);
    EXPECT(gguf_get_float(f, "t.f64", &fv) == 0 && fv == 0.1, "t.f64 = %g", fv);
    EXPECT(gguf_get_bool(f, "t.bool", &bv) == 0 && bv, "t.bool");
    GgufStr s;
    EXPECT(gguf_get_str(f, "general.architecture", &s) == 0 && s.len == 5 && !strcmp(s.s, "llama"),
           "general.architecture");
    EXPECT(gguf_get_int(f, "nope", &iv[0]) == ERR_NOTFOUND, "missing key not ERR_NOTFOUND");
    fileio_capture_begin();
    int rc_type = gguf_get_int(f, "t.f32", &iv[0]);
    int rc_big = gguf_get_int(f, "t.big", &iv[0]);
    int rc_sarr =
        gguf_get_str_array(f, "tokenizer.ggml.scores", &(const GgufStr *){NULL}, &(size_t){0});
    char *log = fileio_capture_end(t->verbose);
    EXPECT(rc_type == ERR_MISMATCH && rc_big == ERR_RANGE && rc_sarr == ERR_MISMATCH &&
               strstr(log, "key 't.f32' has type FLOAT32, expected an integer"),
           "typed getters: %d %d %d; log '%s'", rc_type, rc_big, rc_sarr, log);
    free(log);
    const GgufStr *toks = NULL;
    size_t         n = 0;
    rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &n);
    EXPECT(rc == 0 && n == 4 && toks[0].len == 1 && !strcmp(toks[0].s, "a") && toks[1].len == 0 &&
               toks[1].s[0] == 0 && toks[2].len == 3 && !memcmp(toks[2].s, "h\0i", 4) &&
               !strcmp(toks[3].s, "h\xc3\xa9llo"),
           "tokenizer.ggml.tokens read wrong");
    int         et = -1;
    const void *data = NULL;
    rc = gguf_get_array(f, "tokenizer.ggml.token_type", &et, &data, &n);
    EXPECT(rc == 0 && et == GGUF_VAL_INT32 && n == 4 && ((const int32_t *)data)[3] == 6,
           "tokenizer.ggml.token_type read wrong");
    rc = gguf_get_array(f, "tokenizer.ggml.scores", &et, &data, &n);
    EXPECT(rc == 0 && et == GGUF_VAL_FLOAT32 && n == 3 && ((const float *)data)[1] == -1.5f,
           "tokenizer.ggml.scores read wrong");

    /* Dequantisation against the hand-computed values, bit for bit. */
    float got[64];
    struct {
        const char  *name;
        const float *want;
        size_t       n;
    } cases[] = {
        {"f32", tf.f32, 4},
        {"q8_0", tf.want_q8, 64},
        {"q4_0", tf.want_q40, 32},
        {"q4_1", tf.want_q41, 64},
    };
    float want_f16[4] = {1.0f, -2.0f, 0.5f, 0x1p-24f},
          want_bf16[4] = {1.0f, -3.0f, 3.140625f, -0.0f};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int i = gguf_find_tensor(f, cases[c].name);
        rc = i >= 0 ? gguf_read_f32(f, i, got, cases[c].n) : i;
        EXPECT(rc == 0 && same_floats(got, cases[c].want, cases[c].n), "%s dequantised wrong",
               cases[c].name);
    }
    int i = gguf_find_tensor(f, "f16");
    EXPECT(i >= 0 && gguf_read_f32(f, i, got, 4) == 0 && same_floats(got, want_f16, 4),
           "f16 dequantised wrong");
    i = gguf_find_tensor(f, "bf16");
    EXPECT(i >= 0 && gguf_read_f32(f, i, got, 4) == 0 && same_floats(got, want_bf16, 4),
           "bf16 dequantised wrong");
    GgufTensorInfo info;
    i = gguf_find_tensor(f, "q8_0");
    gguf_tensor_info(f, i, &info);
    EXPECT(!strcmp(info.type_name, "Q8_0") && info.n_dims == 2 && info.ne[0] == 32 &&
               info.ne[1] == 2 && info.ne[2] == 1 && info.numel == 64 && info.nbytes == 68 &&
               info.offset % align == 0,
           "q8_0 info wrong");
    /* A known type without a dequantiser opens but is refused when read. */
    i = gguf_find_tensor(f, "q4_k");
    float *big = xmalloc(256 * sizeof(float));
    fileio_capture_begin();
    rc = i >= 0 ? gguf_read_f32(f, i, big, 256) : i;
    log = fileio_capture_end(t->verbose);
    EXPECT(rc == ERR_UNSUPPORTED && strstr(log, "tensor 'q4_k' has type Q4_K"),
           "Q4_K read: rc %d, log '%s'", rc, log);
    free(log);
    free(big);
    /* A file that shrinks after open: reading fails cleanly. */
    i = gguf_find_tensor(f, "q4_1");
    gguf_tensor_info(f, i, &info);
    CHECK(truncate(t->path, (off_t)info.offset + 10) == 0);
    fileio_capture_begin();
    rc = gguf_read_f32(f, i, got, 64);
    log = fileio_capture_end(t->verbose);
    EXPECT(rc == ERR_IO && strstr(log, "tensor 'q4_1'"), "read after shrink: rc %d", rc);
    free(log);
done:
    gguf_close(&f);
    free(tf.file.p);
}

/* Every kind of hostile file, each refused with its own message. */
static void test_hostile(Ctx *t)
{
    TestFile tf;
    make_test_file(&tf, 3, 64);
    GgufBuf v = tf.file, b = {0};
    Where  *w = &tf.w;
#define FRESH() (b.n = 0, gguf_buf_put(&b, v.p, v.n))
    FRESH(), memcpy(b.p, "GGML", 4);
    expect_refused(t, &b, ERR_FORMAT, "magic 0x4c4d4747, expected 0x46554747", "wrong magic");
    FRESH(), patch_u32(&b, 4, 1);
    expect_refused(t, &b, ERR_UNSUPPORTED, "version 1, expected 2 or 3", "version 1");
    FRESH(), patch_u32(&b, 4, 4);
    expect_refused(t, &b, ERR_UNSUPPORTED, "version 4, expected 2 or 3", "version 4");
    FRESH(), patch_u32(&b, 4, 0x03000000u);
    expect_refused(t, &b, ERR_UNSUPPORTED, "big-endian", "big-endian");
    FRESH(), patch_u64(&b, w->counts, (uint64_t)1 << 40);
    expect_refused(t, &b, ERR_FORMAT, "tensor count 1099511627776 is absurd", "tensor count");
    FRESH(), patch_u64(&b, w->counts, 100000);
    expect_refused(t, &b, ERR_FORMAT, "truncated: 100000 tensors and",
                   "tensor count past the file");
    FRESH(), patch_u64(&b, w->counts + 8, (uint64_t)1 << 40);
    expect_refused(t, &b, ERR_FORMAT, "metadata count 1099511627776 is absurd", "metadata count");
    FRESH(), patch_u64(&b, w->kv, 100000);
    expect_refused(t, &b, ERR_FORMAT, "string length 100000 at offset 24 exceeds the limit of 255",
                   "absurd key length");
    FRESH(), patch_u64(&b, tf.pos_arch, (uint64_t)1 << 62);
    expect_refused(t, &b, ERR_FORMAT, "the value of key 'general.architecture': string length",
                   "absurd string length");
    FRESH(), patch_u64(&b, tf.pos_arch, GGUF_MAX_STRING);
    expect_refused(t, &b, ERR_FORMAT, "truncated: the value of key 'general.architecture'",
                   "string longer than the file");
    FRESH(), patch_u64(&b, tf.pos_tokens_count, (uint64_t)1 << 62);
    expect_refused(t, &b, ERR_FORMAT,
                   "key 'tokenizer.ggml.tokens': array count 4611686018427387904",
                   "absurd array count");
    FRESH(), patch_u64(&b, tf.pos_tokens_count, 1000000);
    expect_refused(t, &b, ERR_FORMAT,
                   "truncated: key 'tokenizer.ggml.tokens': array of 1000000 STRING",
                   "array longer than the file");
    FRESH(), patch_u32(&b, tf.pos_tokens_type, 13);
    expect_refused(t, &b, ERR_FORMAT, "array element type 13", "unknown element type");
    FRESH(), patch_u32(&b, tf.pos_tokens_type, GGUF_VAL_ARRAY);
    expect_refused(t, &b, ERR_UNSUPPORTED, "arrays of arrays", "nested array");
    FRESH(), patch_u32(&b, tf.pos_first_type + 8 + 4, 13); /* after the key "t.u8" */
    expect_refused(t, &b, ERR_FORMAT, "key 't.u8': value type 13", "unknown value type");
    FRESH(), patch_u32(&b, tf.pos_align, 48);
    expect_refused(t, &b, ERR_FORMAT, "general.alignment 48, expected a power of two", "alignment");
    FRESH(), patch_u32(&b, tf.pos_align, 0);
    expect_refused(t, &b, ERR_FORMAT, "general.alignment 0", "zero alignment");
    FRESH(), patch_u64(&b, w->offset[1], w->rel[1] + 4);
    expect_refused(t, &b, ERR_FORMAT,
                   "tensor 'f16': offset 68 is not a multiple of the alignment 64",
                   "misaligned offset");
    FRESH(), patch_u64(&b, w->offset[2], w->rel[1]);
    expect_refused(t, &b, ERR_FORMAT, "overlaps tensor", "overlapping tensors");
    FRESH(), patch_u64(&b, w->offset[6], (uint64_t)1 << 40);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'q4_k': data [1099511627776, ",
                   "offset out of bounds");
    FRESH(), patch_u64(&b, w->offset[6], UINT64_MAX - 63);
    expect_refused(t, &b, ERR_FORMAT, "extends past the end of the file", "offset near 2^64");
    FRESH(), patch_u64(&b, w->ne[0], (uint64_t)1 << 40);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': dimension ne[0] = 1099511627776", "huge dim");
    FRESH(), patch_u64(&b, w->ne[0], 0);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': dimension ne[0] = 0", "zero dim");
    FRESH(), patch_u64(&b, w->ne[1], INT32_MAX), patch_u64(&b, w->ne[1] + 8, INT32_MAX);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f16': more than 1099511627776 elements", "numel");
    FRESH(), patch_u64(&b, w->ne[3] + 8, 3000);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'q8_0': data [", "shape larger than its data");
    FRESH(), patch_u32(&b, w->n_dims[0], 5);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': n_dims 5, expected 1..4", "n_dims 5");
    FRESH(), patch_u32(&b, w->n_dims[0], 0);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': n_dims 0", "n_dims 0");
    FRESH(), patch_u32(&b, w->type[0], 99);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': unknown tensor type 99", "unknown type 99");
    FRESH(), patch_u32(&b, w->type[0], 4);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'f32': unknown tensor type 4", "removed type 4");
    FRESH(), patch_u32(&b, w->type[4], 20);
    expect_refused(t, &b, ERR_UNSUPPORTED, "tensor 'q4_0': unsupported tensor type 20",
                   "unsupported type");
    FRESH(), patch_u64(&b, w->ne[4], 16);
    expect_refused(t, &b, ERR_FORMAT, "ne[0] = 16 is not a multiple of the Q4_0 block size 32",
                   "partial block");
#undef FRESH
    /* Duplicates need files of their own. */
    GgufBuf kv = {0};
    float   one = 1.0f;
    WTensor two[2] = {{"w", GGUF_TYPE_F32, 1, {1}, &one, 4}, {"w", GGUF_TYPE_F32, 1, {1}, &one, 4}};
    build_file(&b, 3, &kv, 0, two, 2, 32, NULL);
    expect_refused(t, &b, ERR_FORMAT, "tensor 'w' appears twice", "duplicate tensor");
    gguf_buf_kv_u32(&kv, "k", 1);
    gguf_buf_kv_u32(&kv, "k", 2);
    build_file(&b, 3, &kv, 2, two, 1, 32, NULL);
    expect_refused(t, &b, ERR_FORMAT, "metadata key 'k' appears twice", "duplicate key");
    kv.n = 0;
    uint64_t a64 = 64;
    gguf_buf_kv_scalar(&kv, "general.alignment", GGUF_VAL_UINT64, &a64);
    build_file(&b, 3, &kv, 1, two, 1, 64, NULL);
    expect_refused(t, &b, ERR_FORMAT, "general.alignment has type UINT64, expected UINT32",
                   "alignment type");
    free(kv.p);
    /* An empty file and a missing one. */
    b.n = 0;
    expect_refused(t, &b, ERR_FORMAT, "truncated: reading the magic", "empty file");
    GgufFile *f = NULL;
    fileio_capture_begin();
    int rc = gguf_open("/nonexistent/dir/x.gguf", &f);
    free(fileio_capture_end(t->verbose));
    EXPECT(rc == ERR_NOTFOUND && !f, "missing file: %d", rc);

    /* Truncation at every byte: each refused, as truncated. */
    int n_bad = 0;
    for (size_t cut = 0; cut < v.n; cut++) {
        CHECK(fixture_write_file(t->path, v.p, cut) == 0);
        fileio_capture_begin();
        rc = gguf_open(t->path, &f);
        char *log = fileio_capture_end(false);
        if ((rc != ERR_FORMAT || f || !strstr(log, "truncated")) && n_bad++ < 3)
            fprintf(stderr, "gguf_selftest: cut at %zu of %zu: rc %d, log '%s'\n", cut, v.n, rc,
                    log);
        free(log);
        gguf_close(&f);
    }
    EXPECT(n_bad == 0, "%d of %zu truncated files not refused as truncated", n_bad, v.n);

    /* Random corruption of the header: refused or opened, never a crash,
     * and whatever opens can be read. */
    Rng rng;
    rng_seed(&rng, 11);
    int    opened = 0, refused = 0;
    float *buf = xmalloc(sizeof(float) * 4096);
    fileio_capture_begin();
    for (int it = 0; it < 2000; it++) {
        b.n = 0;
        gguf_buf_put(&b, v.p, v.n);
        int flips = 1 + (int)(rng_u64(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(rng_u64(&rng) % w->data_start);
            b.p[at] = (uint8_t)rng_u64(&rng);
        }
        CHECK(fixture_write_file(t->path, b.p, b.n) == 0);
        if (gguf_open(t->path, &f) != 0) {
            refused++;
            continue;
        }
        opened++;
        for (int i = 0; i < gguf_tensor_count(f); i++) {
            GgufTensorInfo info;
            gguf_tensor_info(f, i, &info);
            if (info.numel <= 4096 && gguf_type_is_supported(info.type))
                CHECK(gguf_read_f32(f, i, buf, info.numel) == 0);
        }
        gguf_close(&f);
    }
    free(fileio_capture_end(false));
    free(buf);
    if (t->verbose)
        printf("gguf: fuzz: 2000 corrupted headers, %d opened, %d refused\n", opened, refused);
    free(b.p);
    free(v.p);
}

static void test_permute(Ctx *t)
{
    /* One head of 4 rows: GGUF rows are HF rows 0, 2, 1, 3. */
    float hf[8] = {0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f}, g[8], back[8];
    gguf_permute_qk(g, hf, 1, 4, 2);
    float want[8] = {0, 0.5f, 2, 2.5f, 1, 1.5f, 3, 3.5f};
    EXPECT(same_floats(g, want, 8), "permute of one head of 4 rows");
    gguf_unpermute_qk(back, g, 1, 4, 2);
    EXPECT(same_floats(back, hf, 8), "unpermute of one head");
    /* Round trip for several head counts and sizes. */
    Rng rng;
    rng_seed(&rng, 3);
    int shapes[][3] = {{9, 576, 5}, {3, 192, 7}, {2, 8, 1}, {4, 32, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int    nh = shapes[s][0], rows = shapes[s][1], cols = shapes[s][2];
        size_t n = (size_t)rows * cols;
        float *a = xmalloc(n * sizeof(float)), *p = xmalloc(n * sizeof(float)),
              *u = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) a[i] = rng_normal(&rng);
        gguf_permute_qk(p, a, nh, rows, cols);
        gguf_unpermute_qk(u, p, nh, rows, cols);
        EXPECT(same_floats(u, a, n) && !same_floats(p, a, n), "permute round trip %d heads %d x %d",
               nh, rows, cols);
        free(a);
        free(p);
        free(u);
    }
}

enum {
    MW_OK,
    MW_NO_PERMUTE, /* forget the converter's permutation */
    MW_DROP,       /* leave out blk.1.ffn_up.weight */
    MW_EXTRA,      /* add blk.2.attn_q.weight */
    MW_BAD_SHAPE,  /* ffn_down with its dims swapped */
    MW_NAN,        /* a NaN weight */
    MW_NO_KEY,     /* no llama.feed_forward_length */
    MW_ARCH,       /* general.architecture "gpt2" */
    MW_F16,        /* all matrices stored as F16 */
    MW_HUGE,       /* metadata claims HUGE_LAYERS layers of hidden size 2^18 (~51 GB),
                      the layers past the model's present as 1-element tensors */
};
#define HUGE_LAYERS 1024

/* Writes m as llama.cpp's converter would: GGUF names, reversed dims,
 * permuted query and key rows, F32 (or F16 matrices), default alignment. */
static void write_model(Ctx *t, Model *m, int mode)
{
    const ModelConfig *c = model_config(m);
    GgufBuf            kv = {0}, out = {0};
    gguf_buf_kv_str(&kv, "general.architecture", mode == MW_ARCH ? "gpt2" : "llama");
    gguf_buf_kv_u32(&kv, "llama.embedding_length", (uint32_t)c->dim);
    gguf_buf_kv_u32(&kv, "llama.block_count",
                    mode == MW_HUGE ? HUGE_LAYERS : (uint32_t)c->n_layers);
    gguf_buf_kv_u32(&kv, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_buf_kv_u32(&kv, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    if (mode != MW_NO_KEY)
        gguf_buf_kv_u32(&kv, "llama.feed_forward_length",
                        mode == MW_HUGE ? 1u << 18 : (uint32_t)c->hidden_dim);
    gguf_buf_kv_u32(&kv, "llama.context_length", (uint32_t)c->max_seq_len);
    gguf_buf_kv_u32(&kv, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads));
    gguf_buf_kv_f32(&kv, "llama.rope.freq_base", c->rope_theta);
    gguf_buf_kv_f32(&kv, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    int      nt = model_num_tensors(m);
    size_t   cap = (size_t)nt + 1 + (mode == MW_HUGE ? 9 * (size_t)HUGE_LAYERS : 0);
    WTensor *wt = xcalloc(cap, sizeof *wt);
    void   **bufs = xcalloc(cap, sizeof *bufs);
    char(*names)[GGUF_MAX_NAME + 1] = xcalloc(cap, sizeof *names);
    int n = 0;
    for (int i = 0; i < nt; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        int qk;
        CHECK(gguf_tensor_name(mt.name, c, names[n], sizeof names[n], &qk));
        if (mode == MW_DROP && !strcmp(names[n], "blk.1.ffn_up.weight")) continue;
        float *data = xmalloc(mt.numel * sizeof(float));
        if (qk && mode != MW_NO_PERMUTE)
            gguf_permute_qk(data, mt.data, qk, (int)mt.shape[0], (int)mt.shape[1]);
        else
            memcpy(data, mt.data, mt.numel * sizeof(float));
        if (mode == MW_NAN && !strcmp(names[n], "blk.0.ffn_gate.weight")) data[5] = NAN;
        wt[n] = (WTensor){
            names[n], GGUF_TYPE_F32,
            mt.ndim,  {mt.ndim == 2 ? mt.shape[1] : mt.shape[0], mt.ndim == 2 ? mt.shape[0] : 1},
            data,     mt.numel * sizeof(float)};
        if (mode == MW_BAD_SHAPE && strstr(names[n], "ffn_down")) {
            int64_t x = wt[n].ne[0];
            wt[n].ne[0] = wt[n].ne[1];
            wt[n].ne[1] = x;
        }
        if (mode == MW_F16 && mt.ndim == 2) {
            uint16_t *h = xmalloc(mt.numel * 2);
            for (size_t k = 0; k < mt.numel; k++) {
                /* Round to a value F16 holds exactly so the check stays exact:
                 * 10 mantissa bits, exponents well inside the normal range. */
                float v = ldexpf(roundf(ldexpf(data[k], 10)), -10);
                data[k] = v;
                h[k] = half_f32_to_f16(v);
            }
            free(data);
            data = NULL;
            wt[n].type = GGUF_TYPE_F16;
            wt[n].data = h;
            wt[n].nbytes = mt.numel * 2;
            bufs[n] = h;
        } else {
            bufs[n] = data;
        }
        n++;
    }
    if (mode == MW_EXTRA) {
        snprintf(names[n], sizeof names[n], "blk.%d.attn_q.weight", c->n_layers);
        wt[n] = wt[1];
        wt[n].name = names[n];
        n++;
    }
    if (mode == MW_HUGE) {
        static const float one_value = 0.0f;
        int                n_model = n;
        for (int l = c->n_layers; l < HUGE_LAYERS; l++) {
            for (int i = 0; i < n_model; i++) {
                if (strncmp(names[i], "blk.0.", 6) != 0) continue;
                snprintf(names[n], sizeof names[n], "blk.%d.%s", l, names[i] + 6);
                wt[n] = (WTensor){names[n], GGUF_TYPE_F32, 1, {1, 1}, &one_value, sizeof(float)};
                n++;
            }
        }
    }
    build_file(&out, 3, &kv, kv.n_kv, wt, n, GGUF_DEFAULT_ALIGNMENT, NULL);
    CHECK(fixture_write_file(t->path, out.p, out.n) == 0);
    for (int i = 0; i < nt; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(wt);
    free(out.p);
    free(kv.p);
}

static void test_model(Ctx *t)
{
    for (int tied = 0; tied < 2; tied++) {
        ModelConfig cfg = fixture_model_config(16, 2, 4, 2, 24, 19, 16);
        cfg.tie_embeddings = tied;
        Model *m = model_new(&cfg), *m2 = NULL;
        model_init_random(m, 5 + (uint64_t)tied, 0.3f);
        /* Norm gains away from one so a swapped norm would show. */
        ModelTensor nt;
        CHECK(model_find_tensor(m, "model.layers.1.input_layernorm.weight", &nt) == 0);
        for (size_t k = 0; k < nt.numel; k++) nt.data[k] = 1.0f + 0.1f * (float)k;
        enum { TT = 8 };
        float *ref = xmalloc(sizeof(float) * TT * 19), *got = xmalloc(sizeof(float) * TT * 19);
        fixture_logits(m, ref, TT);

        write_model(t, m, MW_OK);
        int rc = gguf_load(t->path, 0, &m2);
        EXPECT(rc == 0, "tied %d: model round trip load failed (%d)", tied, rc);
        if (rc == 0) {
            const ModelConfig *c2 = model_config(m2);
            EXPECT(c2->dim == 16 && c2->n_layers == 2 && c2->n_heads == 4 && c2->n_kv_heads == 2 &&
                       c2->hidden_dim == 24 && c2->vocab_size == 19 && c2->max_seq_len == 16 &&
                       c2->tie_embeddings == (bool)tied && c2->norm_eps == 1e-5f,
                   "tied %d: config read back wrong", tied);
            EXPECT(model_num_params(m2) == model_num_params(m) &&
                       same_floats(model_params(m2), model_params(m), model_num_params(m)),
                   "tied %d: parameters differ after the round trip", tied);
            fixture_logits(m2, got, TT);
            float d = fixture_max_abs_diff(ref, got, (size_t)TT * 19);
            if (t->verbose)
                printf("gguf: tied %d: logits after GGUF round trip: max diff %g (tolerance 0)\n",
                       tied, d);
            EXPECT(d == 0.0f, "tied %d: logits differ by %g", tied, d);
        }
        model_free(&m2);

        /* Without the permutation the weights land in the wrong rows: the
         * check above would see it. */
        write_model(t, m, MW_NO_PERMUTE);
        rc = gguf_load(t->path, 0, &m2);
        if (rc == 0) {
            fixture_logits(m2, got, TT);
            float d = fixture_max_abs_diff(ref, got, (size_t)TT * 19);
            EXPECT(d > 1e-3f, "tied %d: unpermuted file gives the same logits (%g)", tied, d);
        }
        model_free(&m2);

        /* F16 matrices: the file holds each weight rounded to 2^-10. */
        write_model(t, m, MW_F16);
        rc = gguf_load(t->path, 4, &m2);
        EXPECT(rc == 0 && model_config(m2)->max_seq_len == 4, "tied %d: F16 model load (%d)", tied,
               rc);
        if (rc == 0) {
            float d = fixture_max_abs_diff(model_params(m2), model_params(m), model_num_params(m));
            EXPECT(d <= 0x1p-11f, "tied %d: F16 weights differ by %g, expected <= 2^-11", tied, d);
        }
        model_free(&m2);

        struct {
            int         mode;
            int         want;
            const char *expect;
        } bad_cases[] = {
            {MW_DROP, ERR_NOTFOUND, "no tensor 'blk.1.ffn_up.weight'"},
            {MW_EXTRA, ERR_MISMATCH, "tensor 'blk.2.attn_q.weight' is not part of"},
            {MW_BAD_SHAPE, ERR_MISMATCH,
             "tensor 'blk.0.ffn_down.weight' has ne [16, 24], expected [24, 16]"},
            {MW_NAN, ERR_NONFINITE, "tensor 'blk.0.ffn_gate.weight': element 5 is nan"},
            {MW_NO_KEY, ERR_NOTFOUND, "missing key 'llama.feed_forward_length'"},
            {MW_ARCH, ERR_UNSUPPORTED, "general.architecture 'gpt2', expected 'llama'"},
            /* Found with the gguf fuzz harness: the model was allocated at
             * the size the metadata claims (about 100 GB with gradients)
             * before any tensor was checked, so a file under 1 MB
             * aborted the loader. */
            {MW_HUGE, ERR_MISMATCH, "the metadata describes a model of"},
        };
        for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
            write_model(t, m, bad_cases[k].mode);
            fileio_capture_begin();
            rc = gguf_load(t->path, 0, &m2);
            char *log = fileio_capture_end(t->verbose);
            bool  logged = strstr(log, bad_cases[k].expect) && strstr(log, t->path);
            EXPECT(rc == bad_cases[k].want && !m2 && logged,
                   "tied %d: bad model %d: rc %d, expected %d; log %s '%s'", tied,
                   bad_cases[k].mode, rc, bad_cases[k].want, logged ? "has" : "lacks",
                   bad_cases[k].expect);
            free(log);
            model_free(&m2);
        }
        free(ref);
        free(got);
        model_free(&m);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gguf_selftest(bool verbose)
{
    char dir[] = "/tmp/rlhf-gguf-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    Ctx t = {.verbose = verbose, .dir = dir};
    snprintf(t.path, sizeof t.path, "%s/t.gguf", dir);
    test_valid(&t, 3, 64);
    test_valid(&t, 2, GGUF_DEFAULT_ALIGNMENT);
    double t0 = now_s();
    test_hostile(&t);
    if (verbose) printf("gguf: hostile files %.2fs\n", now_s() - t0);
    test_permute(&t);
    test_model(&t);
    fileio_remove_tree(dir);
    return expect_end();
}
