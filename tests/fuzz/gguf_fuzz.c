/* gguf: a GGUF file (through a memfd, the real open/pread path) as the
 * programs use one: gguf_open; every metadata entry through the typed
 * getter of its type (and a wrong one); every tensor's info, looked up by
 * name and dequantised when small; gguf_model_config; the tokenizer
 * (bpe_from_gguf, then an encode and decode); and gguf_load, which the
 * actor, rlhf-gen and rlhf-gguf call to build a model from the file.
 *
 * Input: the file. Properties: an entry's getter agrees with its type, a
 * supported tensor gguf_open accepted dequantises, names find their index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/export.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_buf.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/model.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/fixtures.h"

#define MAX_READ ((size_t)1 << 20) /* elements dequantised from one tensor at most */
#define MAX_SEQ 64                 /* the context gguf_load is asked for */

static float *g_buf;

static bool is_int_type(int t)
{
    return t == GGUF_VAL_UINT8 || t == GGUF_VAL_INT8 || t == GGUF_VAL_UINT16 ||
           t == GGUF_VAL_INT16 || t == GGUF_VAL_UINT32 || t == GGUF_VAL_INT32 ||
           t == GGUF_VAL_UINT64 || t == GGUF_VAL_INT64;
}

static void walk_metadata(const GgufFile *f)
{
    for (int i = 0; i < gguf_kv_count(f); i++) {
        const char *key;
        int         type, elem;
        size_t      n;
        gguf_kv_at(f, i, &key, &type, &elem, &n);
        int at = gguf_find_key(f, key);
        FUZZ_CHECK(at >= 0 && at <= i, "key '%s' (entry %d) found at %d", key, i, at);
        if (at != i) continue; /* a repeated key: the getters see the first */
        int64_t     iv;
        double      fv;
        bool        bv;
        GgufStr     sv;
        const void *data;
        int         et;
        size_t      an;
        int         rc_int = gguf_get_int(f, key, &iv);
        int         rc_float = gguf_get_float(f, key, &fv);
        int         rc_bool = gguf_get_bool(f, key, &bv);
        int         rc_str = gguf_get_str(f, key, &sv);
        int         rc_array = gguf_get_array(f, key, &et, &data, &an);
        FUZZ_CHECK(is_int_type(type) ? rc_int == 0 || rc_int == ERR_RANGE : rc_int == ERR_MISMATCH,
                   "'%s' of type %d: gguf_get_int %d", key, type, rc_int);
        FUZZ_CHECK((rc_float == 0) == (type == GGUF_VAL_FLOAT32 || type == GGUF_VAL_FLOAT64),
                   "'%s' of type %d: gguf_get_float %d", key, type, rc_float);
        FUZZ_CHECK((rc_bool == 0) == (type == GGUF_VAL_BOOL), "'%s' of type %d: gguf_get_bool %d",
                   key, type, rc_bool);
        FUZZ_CHECK((rc_str == 0) == (type == GGUF_VAL_STRING), "'%s' of type %d: gguf_get_str %d",
                   key, type, rc_str);
        if (rc_str == 0) FUZZ_CHECK(sv.s[sv.len] == '\0', "'%s': string not terminated", key);
        if (type == GGUF_VAL_ARRAY && elem == GGUF_VAL_STRING) {
            const GgufStr *strs;
            size_t         ns;
            FUZZ_CHECK(gguf_get_str_array(f, key, &strs, &ns) == 0 && ns == n,
                       "'%s': string array of %zu", key, n);
            for (size_t k = 0; k < ns; k++)
                FUZZ_CHECK(strs[k].s[strs[k].len] == '\0', "'%s'[%zu] not terminated", key, k);
        } else if (type == GGUF_VAL_ARRAY) {
            FUZZ_CHECK(rc_array == 0 && an == n && et == elem, "'%s': array of %zu (%d): rc %d",
                       key, n, elem, rc_array);
        } else {
            FUZZ_CHECK(rc_array != 0, "'%s' of type %d read as an array", key, type);
        }
    }
}

static void walk_tensors(GgufFile *f)
{
    for (int i = 0; i < gguf_tensor_count(f); i++) {
        GgufTensorInfo in;
        gguf_tensor_info(f, i, &in);
        FUZZ_CHECK(in.n_dims >= 1 && in.n_dims <= GGUF_MAX_DIMS, "'%s': %d dims", in.name,
                   in.n_dims);
        int at = gguf_find_tensor(f, in.name);
        FUZZ_CHECK(at == i, "tensor '%s' (%d) found at %d", in.name, i, at);
        if (!gguf_type_is_supported(in.type) || in.numel > MAX_READ) continue;
        int rc = gguf_read_f32(f, i, g_buf, in.numel);
        FUZZ_CHECK(rc == 0, "tensor '%s' (%s, %zu elements) accepted but not read: %d", in.name,
                   in.type_name, in.numel, rc);
    }
}

static void try_tokenizer(const GgufFile *f)
{
    Bpe *b = NULL;
    if (bpe_from_gguf(f, &b) != 0) {
        FUZZ_CHECK(b == NULL, "bpe_from_gguf failed but made a tokenizer");
        return;
    }
    static const char text[] = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n\xff a";
    int               ids[sizeof text + 1], n = 0;
    if (bpe_encode(b, text, sizeof text - 1, BPE_ENC_SPECIAL, ids, (int)sizeof text + 1, &n) == 0) {
        char out[1 << 12];
        /* Byte tokens may be at most BPE_MAX_TOKEN_BYTES, so it may not fit: never a crash. */
        (void)bpe_decode(b, ids, n, BPE_DEC_SPECIAL, out, sizeof out, NULL);
    }
    (void)bpe_chat_supported(b);
    bpe_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_memfd_path(data, size);
    GgufFile   *f = NULL;
    int         rc = gguf_open(path, &f);
    if (rc) {
        FUZZ_CHECK(f == NULL && rc < 0, "gguf_open: rc %d with a file", rc);
        return 0;
    }
    walk_metadata(f);
    walk_tensors(f);
    ModelConfig cfg;
    (void)gguf_model_config(f, &cfg);
    try_tokenizer(f);
    gguf_close(&f);
    Model *m = NULL;
    if (gguf_load(path, MAX_SEQ, &m) == 0) {
        FUZZ_CHECK(m && model_config(m)->max_seq_len <= MAX_SEQ, "gguf_load's model");
        model_free(&m);
    }
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void seed_export(const char *dir, const char *name, const ModelConfig *mc, const Bpe *b,
                        int type)
{
    Model *m = model_new(mc);
    model_init_random(m, 3, 0.5f);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(export_gguf(path, m, b, type) == 0);
    model_free(&m);
}

/* What export_gguf never writes: one tensor of each quantised type (one
 * block of 32), a BF16 one, every scalar metadata type and arrays, by hand
 * with gguf_buf as the format's header comment lays it out. */
static void seed_quantised(const char *dir)
{
    static const struct {
        const char *name;
        int         type, bytes;
    } t[] = {{"q8", GGUF_TYPE_Q8_0, 34},
             {"q40", GGUF_TYPE_Q4_0, 18},
             {"q41", GGUF_TYPE_Q4_1, 20},
             {"bf", GGUF_TYPE_BF16, 64}};
    enum { N_T = 4, ALIGN = 32 };
    GgufBuf  kv = {0}, out = {0};
    uint8_t  u8 = 200;
    int16_t  i16 = -300;
    int64_t  i64 = -5;
    double   f64 = 0.25;
    uint64_t u64 = (uint64_t)1 << 63;
    gguf_buf_kv_str(&kv, "general.architecture", "llama");
    gguf_buf_kv_u32(&kv, "general.alignment", ALIGN);
    gguf_buf_kv_scalar(&kv, "t.u8", GGUF_VAL_UINT8, &u8);
    gguf_buf_kv_scalar(&kv, "t.i16", GGUF_VAL_INT16, &i16);
    gguf_buf_kv_scalar(&kv, "t.i64", GGUF_VAL_INT64, &i64);
    gguf_buf_kv_scalar(&kv, "t.u64", GGUF_VAL_UINT64, &u64);
    gguf_buf_kv_scalar(&kv, "t.f64", GGUF_VAL_FLOAT64, &f64);
    gguf_buf_kv_f32(&kv, "t.f32", 1.5f);
    gguf_buf_kv_bool(&kv, "t.bool", true);
    gguf_buf_kv_array(&kv, "t.ints", GGUF_VAL_INT32, 3);
    for (int32_t v = -1; v < 2; v++) gguf_buf_put(&kv, &v, 4);
    gguf_buf_kv_array(&kv, "t.strs", GGUF_VAL_STRING, 2);
    gguf_buf_str(&kv, "a b");
    gguf_buf_strn(&kv, "nul\0in", 6);
    gguf_buf_put(&out, "GGUF", 4);
    gguf_buf_u32(&out, 3);
    gguf_buf_u64(&out, N_T);
    gguf_buf_u64(&out, kv.n_kv);
    gguf_buf_put(&out, kv.p, kv.n);
    uint64_t off = 0;
    for (int i = 0; i < N_T; i++) {
        gguf_buf_str(&out, t[i].name);
        gguf_buf_u32(&out, 1);
        gguf_buf_u64(&out, 32);
        gguf_buf_u32(&out, (uint32_t)t[i].type);
        gguf_buf_u64(&out, off);
        off += (uint64_t)(t[i].bytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    static const uint8_t zeros[ALIGN];
    gguf_buf_put(&out, zeros, (ALIGN - out.n % ALIGN) % ALIGN);
    for (int i = 0; i < N_T; i++) {
        uint8_t block[64];
        for (int k = 0; k < t[i].bytes; k++) block[k] = (uint8_t)(k * 29 + i);
        block[1] = 0x3c; /* an fp16 scale near 1 */
        gguf_buf_put(&out, block, (size_t)t[i].bytes);
        gguf_buf_put(&out, zeros, (ALIGN - (size_t)t[i].bytes % ALIGN) % ALIGN);
    }
    fuzz_seed(dir, "quantised-by-hand", out.p, out.n);
    gguf_buf_free(&kv);
    gguf_buf_free(&out);
}

static void seeds(const char *dir)
{
    seed_quantised(dir);
    /* A model without a tokenizer, F32 and F16, tied and not. */
    ModelConfig mc = fixture_model_config(4, 1, 2, 1, 8, 8, 16);
    seed_export(dir, "model-f32", &mc, NULL, EXPORT_F32);
    mc.tie_embeddings = true;
    seed_export(dir, "model-tied-f16", &mc, NULL, EXPORT_F16);
    /* With the small hand-made tokenizer and its chat template. */
    Bpe *b = fuzz_bpe_small();
    mc = fixture_model_config(4, 1, 2, 2, 8, bpe_vocab_size(b), 16);
    mc.tie_embeddings = true;
    seed_export(dir, "model-tokenizer-f16", &mc, b, EXPORT_F16);
    bpe_free(&b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("gguf", seeds);
    g_buf = xmalloc(MAX_READ * sizeof(float));
    return 0;
}
