#include "tests/test_list.h"
#include "common/formats/export.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/gguf.h"
#include "common/base/log.h"
#include "common/formats/safetensors.h"
#include "common/nn/half.h"

#define EXPORT_ALIGNMENT GGUF_DEFAULT_ALIGNMENT
#define EXPORT_F16_CHUNK 65536 /* elements converted per write */

/* llama.cpp's general.file_type values (enum llama_ftype). */
#define EXPORT_FTYPE_ALL_F32 0
#define EXPORT_FTYPE_MOSTLY_F16 1

/* ---- GGUF header buffer -------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t   n, cap;
} Buf;

static void put(Buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* GGUF is little-endian; so is every host this builds for (x86-64, arm64). */
static void put_u32(Buf *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put_u64(Buf *b, uint64_t v)
{
    put(b, &v, 8);
}
static void put_strn(Buf *b, const char *s, size_t n)
{
    put_u64(b, n);
    put(b, s, n);
}
static void put_str(Buf *b, const char *s)
{
    put_strn(b, s, strlen(s));
}

typedef struct {
    Buf      kv;
    uint64_t n_kv;
} Meta;

static void kv_u32(Meta *m, const char *key, uint32_t v)
{
    put_str(&m->kv, key);
    put_u32(&m->kv, GGUF_VAL_UINT32);
    put_u32(&m->kv, v);
    m->n_kv++;
}
static void kv_f32(Meta *m, const char *key, float v)
{
    put_str(&m->kv, key);
    put_u32(&m->kv, GGUF_VAL_FLOAT32);
    put(&m->kv, &v, 4);
    m->n_kv++;
}
static void kv_bool(Meta *m, const char *key, bool v)
{
    uint8_t x = v ? 1 : 0;
    put_str(&m->kv, key);
    put_u32(&m->kv, GGUF_VAL_BOOL);
    put(&m->kv, &x, 1);
    m->n_kv++;
}
static void kv_str(Meta *m, const char *key, const char *v)
{
    put_str(&m->kv, key);
    put_u32(&m->kv, GGUF_VAL_STRING);
    put_str(&m->kv, v);
    m->n_kv++;
}
/* Opens an array of n elements of elem_type; the caller puts the elements. */
static void kv_array(Meta *m, const char *key, uint32_t elem_type, uint64_t n)
{
    put_str(&m->kv, key);
    put_u32(&m->kv, GGUF_VAL_ARRAY);
    put_u32(&m->kv, elem_type);
    put_u64(&m->kv, n);
    m->n_kv++;
}

/* An optional special id: written only when the vocabulary has one. */
static void kv_id(Meta *m, const char *key, int id)
{
    if (id >= 0) kv_u32(m, key, (uint32_t)id);
}

static void tokenizer_meta(Meta *m, const Bpe *b)
{
    int n = bpe_vocab_size(b), n_merges = bpe_merge_count(b);
    kv_str(m, "tokenizer.ggml.model", "gpt2");
    kv_str(m, "tokenizer.ggml.pre", bpe_pre_name(b));
    kv_array(m, "tokenizer.ggml.tokens", GGUF_VAL_STRING, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(&m->kv, bpe_token_text(b, i));
    kv_array(m, "tokenizer.ggml.token_type", GGUF_VAL_INT32, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        int32_t t = bpe_token_type(b, i);
        put(&m->kv, &t, 4);
    }
    kv_array(m, "tokenizer.ggml.merges", GGUF_VAL_STRING, (uint64_t)n_merges);
    for (int r = 0; r < n_merges; r++) {
        int l, rr;
        bpe_merge_at(b, r, &l, &rr);
        const char *ls = bpe_token_text(b, l), *rs = bpe_token_text(b, rr);
        size_t      ll = strlen(ls), rl = strlen(rs);
        put_u64(&m->kv, ll + 1 + rl);
        put(&m->kv, ls, ll);
        put(&m->kv, " ", 1);
        put(&m->kv, rs, rl);
    }
    kv_id(m, "tokenizer.ggml.bos_token_id", bpe_bos_id(b));
    kv_id(m, "tokenizer.ggml.eos_token_id", bpe_eos_id(b));
    kv_id(m, "tokenizer.ggml.unknown_token_id", bpe_unk_id(b));
    kv_id(m, "tokenizer.ggml.padding_token_id", bpe_pad_id(b));
    kv_bool(m, "tokenizer.ggml.add_bos_token", bpe_add_bos(b));
    if (bpe_chat_template(b)) kv_str(m, "tokenizer.chat_template", bpe_chat_template(b));
}

static void model_meta(Meta *m, const ModelConfig *c, int type)
{
    kv_str(m, "general.architecture", "llama");
    kv_str(m, "general.name", "rlhf.c export");
    kv_u32(m, "general.file_type",
           type == EXPORT_F16 ? EXPORT_FTYPE_MOSTLY_F16 : EXPORT_FTYPE_ALL_F32);
    kv_u32(m, "general.alignment", EXPORT_ALIGNMENT);
    kv_u32(m, "llama.vocab_size", (uint32_t)c->vocab_size);
    kv_u32(m, "llama.context_length", (uint32_t)c->max_seq_len);
    kv_u32(m, "llama.embedding_length", (uint32_t)c->dim);
    kv_u32(m, "llama.block_count", (uint32_t)c->n_layers);
    kv_u32(m, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    kv_u32(m, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads));
    kv_u32(m, "llama.attention.head_count", (uint32_t)c->n_heads);
    kv_u32(m, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_f32(m, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    kv_f32(m, "llama.rope.freq_base", c->rope_theta);
}

/* One tensor of the file, in directory order. */
typedef struct {
    int      index; /* model_tensor index */
    char     name[GGUF_MAX_NAME + 1];
    int      qk_heads; /* > 0: permute rows with this head count */
    bool     is_f16;   /* stored as F16 */
    uint64_t offset;   /* relative to the data region */
    size_t   nbytes;
} OutTensor;

static size_t align_up(size_t n)
{
    return (n + EXPORT_ALIGNMENT - 1) / EXPORT_ALIGNMENT * EXPORT_ALIGNMENT;
}

static int write_zeros(AtomicFile *af, size_t n)
{
    static const uint8_t zeros[EXPORT_ALIGNMENT];
    return n ? fileio_atomic_write(af, zeros, n) : 0;
}

/* Writes the data of one tensor (already permuted into src when needed). */
static int write_tensor_data(AtomicFile *af, const float *src, size_t numel, bool is_f16,
                             uint16_t *half)
{
    if (!is_f16) return fileio_atomic_write(af, src, numel * sizeof(float));
    for (size_t done = 0; done < numel;) {
        size_t k = numel - done < EXPORT_F16_CHUNK ? numel - done : EXPORT_F16_CHUNK;
        for (size_t i = 0; i < k; i++) half[i] = half_f32_to_f16(src[done + i]);
        int rc = fileio_atomic_write(af, half, k * sizeof(uint16_t));
        if (rc) return rc;
        done += k;
    }
    return 0;
}

int export_gguf(const char *path, Model *m, const Bpe *b, int type)
{
    CHECK(path && m && (type == EXPORT_F32 || type == EXPORT_F16));
    const char        *fn = "export_gguf";
    const ModelConfig *c = model_config(m);
    if (b && bpe_vocab_size(b) != c->vocab_size) {
        log_error("%s: '%s': the tokenizer has %d tokens but the model's vocabulary is %d "
                  "(llama.cpp requires them equal)",
                  fn, path, bpe_vocab_size(b), c->vocab_size);
        return ERR_MISMATCH;
    }
    if (!b)
        log_warn("%s: '%s': no tokenizer given: the file has no tokenizer.ggml.* keys, which "
                 "llama.cpp needs",
                 fn, path);
    Meta meta = {0};
    model_meta(&meta, c, type);
    if (b) tokenizer_meta(&meta, b);

    int        nt = model_num_tensors(m), n_out = 0;
    OutTensor *out = xcalloc((size_t)nt, sizeof *out);
    Buf        dir = {0};
    uint64_t   off = 0;
    size_t     scratch_len = 0;
    for (int i = 0; i < nt; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        OutTensor *o = &out[n_out];
        if (!gguf_tensor_name(mt.name, c, o->name, sizeof o->name, &o->qk_heads)) {
            log_warn("%s: '%s': tensor '%s' has no GGUF name and is left out", fn, path, mt.name);
            continue;
        }
        o->index = i;
        /* llama.cpp's converter keeps 1-D tensors (norm gains) in F32. */
        o->is_f16 = type == EXPORT_F16 && mt.ndim == 2;
        o->nbytes = mt.numel * (o->is_f16 ? 2 : 4);
        o->offset = off;
        off += align_up(o->nbytes);
        if (o->qk_heads && mt.numel > scratch_len) scratch_len = mt.numel;
        /* Directory entry: dims innermost first, so [rows, cols] is ne [cols, rows]. */
        put_str(&dir, o->name);
        put_u32(&dir, (uint32_t)mt.ndim);
        if (mt.ndim == 2) {
            put_u64(&dir, (uint64_t)mt.shape[1]);
            put_u64(&dir, (uint64_t)mt.shape[0]);
        } else {
            put_u64(&dir, (uint64_t)mt.shape[0]);
        }
        put_u32(&dir, o->is_f16 ? GGUF_TYPE_F16 : GGUF_TYPE_F32);
        put_u64(&dir, o->offset);
        n_out++;
    }
    Buf head = {0};
    put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)n_out);
    put_u64(&head, meta.n_kv);
    put(&head, meta.kv.p, meta.kv.n);
    put(&head, dir.p, dir.n);

    float      *scratch = scratch_len ? xmalloc(scratch_len * sizeof(float)) : NULL;
    uint16_t   *half = type == EXPORT_F16 ? xmalloc(EXPORT_F16_CHUNK * sizeof(uint16_t)) : NULL;
    AtomicFile *af = NULL;
    int         rc = fileio_atomic_open(path, &af);
    if (rc) goto free_bufs;
    rc = fileio_atomic_write(af, head.p, head.n);
    if (rc == 0) rc = write_zeros(af, align_up(head.n) - head.n);
    for (int k = 0; k < n_out && rc == 0; k++) {
        ModelTensor mt;
        model_tensor(m, out[k].index, &mt);
        const float *src = mt.data;
        if (out[k].qk_heads) {
            gguf_permute_qk(scratch, mt.data, out[k].qk_heads, (int)mt.shape[0], (int)mt.shape[1]);
            src = scratch;
        }
        rc = write_tensor_data(af, src, mt.numel, out[k].is_f16, half);
        if (rc == 0) rc = write_zeros(af, align_up(out[k].nbytes) - out[k].nbytes);
    }
    if (rc == 0)
        rc = fileio_atomic_commit(&af);
    else
        fileio_atomic_abort(&af);
    if (rc)
        log_error("%s: '%s': writing the file failed: %s", fn, path, err_str(rc));
    else
        log_info("%s: wrote '%s' (%s, %d tensors, %llu bytes of tensor data)", fn, path,
                 type == EXPORT_F16 ? "F16" : "F32", n_out, (unsigned long long)off);
free_bufs:
    free(half);
    free(scratch);
    free(head.p);
    free(dir.p);
    free(meta.kv.p);
    free(out);
    return rc;
}

/* ---- Hugging Face directory --------------------------------------------- */

/* Whether id is one of the tokens tokenizers keeps as an added token. */
static bool is_added(const Bpe *b, int id)
{
    int t = bpe_token_type(b, id);
    return t == BPE_TOKEN_CONTROL || t == BPE_TOKEN_USER_DEFINED || t == BPE_TOKEN_UNKNOWN;
}

static json_t *added_token(const Bpe *b, int id, bool with_id)
{
    json_t *o = json_object();
    if (with_id) json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "content", json_string(bpe_token_text(b, id)));
    json_object_set_new(o, "single_word", json_false());
    json_object_set_new(o, "lstrip", json_false());
    json_object_set_new(o, "rstrip", json_false());
    json_object_set_new(o, "normalized", json_false());
    json_object_set_new(o, "special",
                        json_boolean(bpe_token_type(b, id) != BPE_TOKEN_USER_DEFINED));
    return o;
}

static json_t *byte_level(bool add_prefix_space, bool trim_offsets)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                     add_prefix_space, "trim_offsets", trim_offsets, "use_regex", 1);
}

/* Without BOS the GPT-2 post-processor (a no-op for ids); with it, a template
 * that puts BOS before each sequence, as add_bos_token asks. */
static json_t *post_processor(const Bpe *b)
{
    if (!bpe_add_bos(b) || bpe_bos_id(b) < 0) return byte_level(true, false);
    const char *bos = bpe_token_text(b, bpe_bos_id(b));
    json_t     *single = json_pack("[{s:{s:s, s:i}}, {s:{s:s, s:i}}]", "SpecialToken", "id", bos,
                                   "type_id", 0, "Sequence", "id", "A", "type_id", 0);
    json_t     *pair =
        json_pack("[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}]",
                  "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                  "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id", 1);
    json_t *specials = json_object();
    json_object_set_new(
        specials, bos,
        json_pack("{s:s, s:[i], s:[s]}", "id", bos, "ids", bpe_bos_id(b), "tokens", bos));
    CHECK(single && pair);
    return json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single, "pair",
                     pair, "special_tokens", specials);
}

char *export_tokenizer_json(const Bpe *b)
{
    CHECK(b);
    int     n = bpe_vocab_size(b), n_merges = bpe_merge_count(b);
    json_t *root = json_object(), *added = json_array(), *vocab = json_object();
    json_t *merges = json_array();
    for (int i = 0; i < n; i++) {
        json_object_set_new(vocab, bpe_token_text(b, i), json_integer(i));
        if (is_added(b, i)) json_array_append_new(added, added_token(b, i, true));
    }
    char *buf = xmalloc(2 * BPE_MAX_TOKEN_BYTES + 2);
    for (int r = 0; r < n_merges; r++) {
        int l, rr;
        bpe_merge_at(b, r, &l, &rr);
        snprintf(buf, 2 * BPE_MAX_TOKEN_BYTES + 2, "%s %s", bpe_token_text(b, l),
                 bpe_token_text(b, rr));
        json_array_append_new(merges, json_string(buf));
    }
    free(buf);
    json_t *pre;
    if (strcmp(bpe_pre_name(b), "smollm") == 0)
        /* SmolLM2's tokenizer.json: every digit is its own piece before the
         * GPT-2 split. */
        pre = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                        "Digits", "individual_digits", 1, byte_level(false, true));
    else
        pre = byte_level(false, true);
    json_t *model =
        json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                  "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                  "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    CHECK(root && pre && model);
    if (bpe_unk_id(b) >= 0)
        json_object_set_new(model, "unk_token", json_string(bpe_token_text(b, bpe_unk_id(b))));
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", pre);
    json_object_set_new(root, "post_processor", post_processor(b));
    json_object_set_new(root, "decoder", byte_level(true, true));
    json_object_set_new(root, "model", model);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    CHECK(text); /* only fails when out of memory */
    return text;
}

static json_t *token_or_null(const Bpe *b, int id)
{
    return id >= 0 ? json_string(bpe_token_text(b, id)) : json_null();
}

char *export_tokenizer_config_json(const Bpe *b, int model_max_length)
{
    CHECK(b);
    json_t *o = json_object(), *dec = json_object();
    for (int i = 0; i < bpe_vocab_size(b); i++) {
        if (!is_added(b, i)) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        json_object_set_new(dec, key, added_token(b, i, false));
    }
    json_object_set_new(o, "add_bos_token", json_boolean(bpe_add_bos(b)));
    json_object_set_new(o, "add_prefix_space", json_false());
    json_object_set_new(o, "added_tokens_decoder", dec);
    json_object_set_new(o, "bos_token", token_or_null(b, bpe_bos_id(b)));
    json_object_set_new(o, "eos_token", token_or_null(b, bpe_eos_id(b)));
    json_object_set_new(o, "pad_token", token_or_null(b, bpe_pad_id(b)));
    json_object_set_new(o, "unk_token", token_or_null(b, bpe_unk_id(b)));
    if (bpe_chat_template(b))
        json_object_set_new(o, "chat_template", json_string(bpe_chat_template(b)));
    json_object_set_new(o, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(o, "model_max_length", json_integer(model_max_length));
    json_object_set_new(o, "tokenizer_class", json_string("GPT2Tokenizer"));
    json_object_set_new(o, "vocab_size", json_integer(bpe_vocab_size(b)));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    CHECK(text);
    return text;
}

/* Writes text plus a newline to dir/name atomically; frees text. */
static int write_text(const char *dir, const char *name, char *text)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        log_error("export_hf: '%s/%s': path too long", dir, name);
        free(text);
        return ERR_ARG;
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    int rc = fileio_write_atomic(path, text, n + 1);
    free(text);
    return rc;
}

static char *dump(json_t *o)
{
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    CHECK(text);
    return text;
}

/* Adds the tokenizer's special ids to the config.json ckpt_save wrote,
 * keeping everything else (the save id included) as it is. */
static int patch_config(const char *dir, const Bpe *b)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    json_error_t err;
    json_t      *o = json_load_file(path, 0, &err);
    if (!o) {
        log_error("export_hf: '%s': reading back the config failed: %s", path, err.text);
        return ERR_IO;
    }
    if (bpe_bos_id(b) >= 0) json_object_set_new(o, "bos_token_id", json_integer(bpe_bos_id(b)));
    if (bpe_eos_id(b) >= 0) json_object_set_new(o, "eos_token_id", json_integer(bpe_eos_id(b)));
    if (bpe_pad_id(b) >= 0) json_object_set_new(o, "pad_token_id", json_integer(bpe_pad_id(b)));
    /* The same flags as ckpt's writer: nine significant digits reproduce a float. */
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(o);
    CHECK(text);
    return write_text(dir, CKPT_CONFIG_FILE, text);
}

int export_hf(const char *dir, Model *m, const Bpe *b)
{
    CHECK(dir && m);
    const ModelConfig *c = model_config(m);
    if (b && bpe_vocab_size(b) > c->vocab_size) {
        log_error("export_hf: '%s': the tokenizer has %d tokens, more than the model's vocabulary "
                  "of %d",
                  dir, bpe_vocab_size(b), c->vocab_size);
        return ERR_MISMATCH;
    }
    int rc = ckpt_save(dir, m, NULL, NULL, NULL);
    if (rc) return rc;
    if (!b) {
        log_warn("export_hf: '%s': no tokenizer given: no tokenizer files written", dir);
        return 0;
    }
    if ((rc = patch_config(dir, b)) != 0) return rc;
    if ((rc = write_text(dir, "tokenizer.json", export_tokenizer_json(b))) != 0) return rc;
    rc = write_text(dir, "tokenizer_config.json", export_tokenizer_config_json(b, c->max_seq_len));
    if (rc) return rc;
    json_t *st = json_object();
    json_object_set_new(st, "bos_token", token_or_null(b, bpe_bos_id(b)));
    json_object_set_new(st, "eos_token", token_or_null(b, bpe_eos_id(b)));
    json_object_set_new(st, "pad_token", token_or_null(b, bpe_pad_id(b)));
    json_object_set_new(st, "unk_token", token_or_null(b, bpe_unk_id(b)));
    if ((rc = write_text(dir, "special_tokens_map.json", dump(st))) != 0) return rc;
    /* Generation stops at the end-of-turn token (<|im_end|> for ChatML) as
     * well as at EOS. */
    json_t *gen = json_object();
    if (bpe_bos_id(b) >= 0) json_object_set_new(gen, "bos_token_id", json_integer(bpe_bos_id(b)));
    int eos = bpe_eos_id(b), eot = bpe_eot_id(b);
    if (eos >= 0 && eot >= 0 && eot != eos)
        json_object_set_new(gen, "eos_token_id", json_pack("[i, i]", eos, eot));
    else if (eos >= 0 || eot >= 0)
        json_object_set_new(gen, "eos_token_id", json_integer(eos >= 0 ? eos : eot));
    if (bpe_pad_id(b) >= 0) json_object_set_new(gen, "pad_token_id", json_integer(bpe_pad_id(b)));
    json_object_set_new(gen, "transformers_version", json_string("4.40.0"));
    if ((rc = write_text(dir, "generation_config.json", dump(gen))) != 0) return rc;
    log_info("export_hf: wrote '%s' (model, config and tokenizer files)", dir);
    return 0;
}

/* ---- self-test ----------------------------------------------------------- */

typedef struct {
    bool verbose;
    int  checks, fails;
    char dir[64];
} Ctx;

#define EXPECT(t, cond, ...)                                                                       \
    do {                                                                                           \
        (t)->checks++;                                                                             \
        if (!(cond)) {                                                                             \
            (t)->fails++;                                                                          \
            fprintf(stderr, "export_selftest: %s:%d: ", __FILE__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

static void test_f16(Ctx *t)
{
    static const struct {
        float    x;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.5f, 0x3800},
        {65504.0f, 0x7bff},
        {65519.0f, 0x7bff},                 /* below the halfway point: stays finite */
        {65520.0f, 0x7c00},                 /* halfway, odd mantissa: rounds to infinity */
        {1e6f, 0x7c00},                     /* overflow */
        {1.0f + 1.0f / 2048, 0x3c00},       /* tie between 1 and 1+2^-10: even wins */
        {1.0f + 3.0f / 2048, 0x3c02},       /* tie, rounds up to even */
        {1.0f + 1.0f / 4096, 0x3c00},       /* below the tie */
        {6.103515625e-05f, 0x0400},         /* 2^-14, the smallest normal */
        {5.9604644775390625e-08f, 0x0001},  /* 2^-24, the smallest subnormal */
        {2.98023223876953125e-08f, 0x0000}, /* 2^-25: a tie, rounds to even 0 */
        {3.0e-08f, 0x0001},                 /* just above the tie */
        {6.0975e-05f, 0x03ff},              /* the largest subnormal */
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = half_f32_to_f16(cases[i].x);
        EXPECT(t, h == cases[i].h, "f16(%.9g) = 0x%04x, expected 0x%04x", (double)cases[i].x, h,
               cases[i].h);
    }
    EXPECT(t, isnan(half_f16_to_f32(half_f32_to_f16(NAN))), "NaN did not stay NaN");
    /* Every half value converts back to itself. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = half_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (half_f32_to_f16(f) != h) bad++;
    }
    EXPECT(t, bad == 0, "%d half values do not round-trip", bad);
}

/* A small byte-level vocabulary with ChatML specials. */
static Bpe *test_bpe(void)
{
    static const char *const tokens[] = {
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "a",
        "b",
        "c",
        "Ġ",
        "1",
        "2",
        "ab",
        "Ġa",
        "abc",
        "Ġab",
        "Ċ",
        "s",
        "y",
        "t",
        "e",
        "m",
        "<tool>",
    };
    static const int32_t     types[] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4};
    static const char *const merges[] = {"a b", "Ġ a", "ab c", "Ġ ab"};
    BpeVocab                 v = {
                        .n_tokens = (int)(sizeof tokens / sizeof tokens[0]),
                        .tokens = tokens,
                        .token_types = types,
                        .n_merges = 4,
                        .merges = merges,
                        .pre = "smollm",
                        .bos_id = 1,
                        .eos_id = 2,
                        .unk_id = 0,
                        .pad_id = 2,
                        .chat_template = "{% for message in messages %}{{'<|im_start|>' + "
                                                         "message['role'] + '\\n' + message['content'] + "
                                                         "'<|im_end|>' + '\\n'}}{% endfor %}",
                        .add_bos = false,
    };
    Bpe *b = bpe_new(&v);
    CHECK(b);
    return b;
}

static void logits_of(Model *m, float *out, int T)
{
    int tokens[16], targets[16];
    CHECK(T <= 16);
    for (int i = 0; i < T; i++)
        tokens[i] = (i * 7 + 3) % model_config(m)->vocab_size, targets[i] = 0;
    model_forward(m, tokens, targets, NULL, 1, T, NULL, NULL, NULL);
    int          n = 0;
    const float *lg = model_last_logits(m, &n);
    CHECK(n == T);
    memcpy(out, lg, sizeof(float) * (size_t)T * model_config(m)->vocab_size);
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static void check_tokenizer(Ctx *t, const Bpe *a, const Bpe *b)
{
    int n = bpe_vocab_size(a), diff = 0;
    EXPECT(t, bpe_vocab_size(b) == n, "vocab %d, expected %d", bpe_vocab_size(b), n);
    if (bpe_vocab_size(b) != n) return;
    for (int i = 0; i < n; i++)
        diff += strcmp(bpe_token_text(a, i), bpe_token_text(b, i)) != 0 ||
                bpe_token_type(a, i) != bpe_token_type(b, i);
    EXPECT(t, diff == 0, "%d tokens differ", diff);
    EXPECT(t, bpe_merge_count(a) == bpe_merge_count(b), "merges %d, expected %d",
           bpe_merge_count(b), bpe_merge_count(a));
    for (int r = 0; r < bpe_merge_count(a) && r < bpe_merge_count(b); r++) {
        int l1, r1, l2, r2;
        bpe_merge_at(a, r, &l1, &r1);
        bpe_merge_at(b, r, &l2, &r2);
        EXPECT(t, l1 == l2 && r1 == r2, "merge %d differs", r);
    }
    EXPECT(t,
           bpe_bos_id(a) == bpe_bos_id(b) && bpe_eos_id(a) == bpe_eos_id(b) &&
               bpe_unk_id(a) == bpe_unk_id(b) && bpe_pad_id(a) == bpe_pad_id(b) &&
               bpe_eot_id(a) == bpe_eot_id(b) && bpe_add_bos(a) == bpe_add_bos(b),
           "special ids differ");
    EXPECT(t, strcmp(bpe_pre_name(a), bpe_pre_name(b)) == 0, "pre '%s', expected '%s'",
           bpe_pre_name(b), bpe_pre_name(a));
    const char *ta = bpe_chat_template(a), *tb = bpe_chat_template(b);
    EXPECT(t, (!ta && !tb) || (ta && tb && strcmp(ta, tb) == 0), "chat template differs");
}

/* GGUF F32 and F16 and the HF directory, each loaded back, for a tied and an
 * untied model. */
static void test_round_trip(Ctx *t, const Bpe *bpe)
{
    int V = bpe_vocab_size(bpe), T = 12;
    for (int tied = 0; tied < 2; tied++) {
        ModelConfig cfg = {.dim = 32,
                           .n_layers = 2,
                           .n_heads = 4,
                           .n_kv_heads = 2,
                           .hidden_dim = 40,
                           .vocab_size = V,
                           .max_seq_len = 64,
                           .rope_theta = 10000.0f,
                           .norm_eps = 1e-5f,
                           .tie_embeddings = tied};
        Model      *m = model_new(&cfg), *back = NULL;
        model_init_random(m, 11 + (uint64_t)tied, 0.3f);
        /* Norm gains away from one, so a transposed or skipped gain shows. */
        float *p = model_params(m);
        for (size_t i = 0; i < model_num_params(m); i += 7) p[i] *= 1.25f;
        size_t nl = (size_t)T * V;
        float *want = xmalloc(sizeof(float) * nl), *got = xmalloc(sizeof(float) * nl);
        logits_of(m, want, T);
        char path[128];
        snprintf(path, sizeof path, "%s/m.gguf", t->dir);

        /* F32: bit-identical logits and the same tokenizer. */
        EXPECT(t, export_gguf(path, m, bpe, EXPORT_F32) == 0, "export_gguf F32 failed");
        EXPECT(t, gguf_load(path, 0, &back) == 0, "gguf_load of the F32 export failed");
        if (back) {
            const ModelConfig *bc = model_config(back);
            EXPECT(t, memcmp(bc, &cfg, sizeof cfg) == 0, "config differs after the round trip");
            logits_of(back, got, T);
            EXPECT(t, memcmp(want, got, sizeof(float) * nl) == 0,
                   "F32 GGUF logits differ (tied %d): max |diff| %g", tied,
                   (double)max_abs_diff(want, got, nl));
            EXPECT(t,
                   memcmp(model_params(back), model_params(m),
                          sizeof(float) * model_num_params(m)) == 0,
                   "F32 GGUF weights differ");
            model_free(&back);
        }
        Bpe *b2 = NULL;
        EXPECT(t, bpe_load(path, &b2) == 0, "bpe_load of the export failed");
        if (b2) check_tokenizer(t, bpe, b2);
        bpe_free(&b2);
        GgufFile *f = NULL;
        if (gguf_open(path, &f) == 0) {
            EXPECT(t, gguf_version(f) == 3 && gguf_alignment(f) == 32, "version %u alignment %zu",
                   gguf_version(f), gguf_alignment(f));
            int64_t v = 0;
            EXPECT(t, gguf_get_int(f, "llama.vocab_size", &v) == 0 && v == V, "llama.vocab_size");
            EXPECT(t, (gguf_find_tensor(f, "output.weight") < 0) == (bool)tied,
                   "output.weight presence wrong for tied %d", tied);
            gguf_close(&f);
        }

        /* F16: identical to the model with its matrices rounded to half. */
        EXPECT(t, export_gguf(path, m, bpe, EXPORT_F16) == 0, "export_gguf F16 failed");
        Model *r16 = model_new(&cfg);
        model_copy_params(r16, m);
        for (int i = 0; i < model_num_tensors(r16); i++) {
            ModelTensor mt;
            model_tensor(r16, i, &mt);
            if (mt.ndim != 2) continue;
            for (size_t k = 0; k < mt.numel; k++)
                mt.data[k] = half_f16_to_f32(half_f32_to_f16(mt.data[k]));
        }
        float *want16 = xmalloc(sizeof(float) * nl);
        logits_of(r16, want16, T);
        EXPECT(t, gguf_load(path, 0, &back) == 0, "gguf_load of the F16 export failed");
        if (back) {
            logits_of(back, got, T);
            float d = max_abs_diff(want16, got, nl), d_orig = max_abs_diff(want, got, nl);
            float scale = 0;
            for (size_t k = 0; k < nl; k++) scale = fmaxf(scale, fabsf(want[k]));
            EXPECT(t, d == 0.0f, "F16 GGUF logits differ from the rounded model: %g", (double)d);
            /* Half precision keeps 11 significant bits: the logits move by
             * about 2^-11 of their size through a few layers. */
            EXPECT(t, d_orig <= 1e-2f * scale, "F16 logits off by %g (largest logit %g)",
                   (double)d_orig, (double)scale);
            if (t->verbose)
                printf("export: tied %d: F16 GGUF max |logit diff| %.3g vs F32 (largest %.3g, "
                       "tolerance 1e-2 of it)\n",
                       tied, (double)d_orig, (double)scale);
            model_free(&back);
        }
        free(want16);
        model_free(&r16);

        /* Hugging Face directory: ckpt_load gives identical logits. */
        char dir[128];
        snprintf(dir, sizeof dir, "%s/hf%d", t->dir, tied);
        EXPECT(t, export_hf(dir, m, bpe) == 0, "export_hf failed");
        Model *h = model_new(&cfg);
        EXPECT(t, ckpt_load(dir, h) == 0, "ckpt_load of the HF export failed");
        logits_of(h, got, T);
        EXPECT(t, memcmp(want, got, sizeof(float) * nl) == 0, "HF logits differ: %g",
               (double)max_abs_diff(want, got, nl));
        model_free(&h);
        ModelConfig hc;
        EXPECT(t, ckpt_load_config(dir, &hc) == 0, "config.json of the export refused");
        char         fpath[256];
        json_error_t err;
        snprintf(fpath, sizeof fpath, "%s/tokenizer.json", dir);
        json_t *tj = json_load_file(fpath, 0, &err);
        EXPECT(t, tj != NULL, "tokenizer.json: %s", err.text);
        if (tj) {
            json_t *model = json_object_get(tj, "model");
            EXPECT(t, json_object_size(json_object_get(model, "vocab")) == (size_t)V,
                   "tokenizer.json vocab size");
            EXPECT(
                t,
                json_array_size(json_object_get(model, "merges")) == 4 &&
                    !strcmp(json_string_value(json_array_get(json_object_get(model, "merges"), 3)),
                            "Ġ ab"),
                "tokenizer.json merges");
            EXPECT(t, json_array_size(json_object_get(tj, "added_tokens")) == 4,
                   "tokenizer.json added tokens: %zu",
                   json_array_size(json_object_get(tj, "added_tokens")));
            json_decref(tj);
        }
        snprintf(fpath, sizeof fpath, "%s/tokenizer_config.json", dir);
        json_t *tc = json_load_file(fpath, 0, &err);
        EXPECT(t,
               tc && !strcmp(json_string_value(json_object_get(tc, "eos_token")), "<|im_end|>") &&
                   !strcmp(json_string_value(json_object_get(tc, "chat_template")),
                           bpe_chat_template(bpe)),
               "tokenizer_config.json");
        json_decref(tc);
        /* A second export over a directory with tokenizer files is refused. */
        fileio_capture_begin();
        int rc = export_hf(dir, m, bpe);
        free(fileio_capture_end(t->verbose));
        EXPECT(t, rc == ERR_ARG, "export_hf over an export: %d, expected ERR_ARG", rc);

        free(want);
        free(got);
        model_free(&m);
    }
}

static void test_refused(Ctx *t, const Bpe *bpe)
{
    ModelConfig cfg = {.dim = 16,
                       .n_layers = 1,
                       .n_heads = 2,
                       .n_kv_heads = 1,
                       .hidden_dim = 16,
                       .vocab_size = bpe_vocab_size(bpe) + 3,
                       .max_seq_len = 16,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .has_value_head = true};
    Model      *m = model_new(&cfg);
    model_init_random(m, 3, 0.2f);
    char path[128];
    snprintf(path, sizeof path, "%s/v.gguf", t->dir);
    fileio_capture_begin();
    int   rc = export_gguf(path, m, bpe, EXPORT_F32);
    char *log = fileio_capture_end(t->verbose);
    EXPECT(t, rc == ERR_MISMATCH && strstr(log, "llama.cpp requires them equal"),
           "vocabulary mismatch: %d", rc);
    free(log);
    EXPECT(t, access(path, F_OK) != 0, "a refused export left a file");
    /* Without a tokenizer the file still loads here; the value head is left out. */
    fileio_capture_begin();
    rc = export_gguf(path, m, NULL, EXPORT_F32);
    log = fileio_capture_end(t->verbose);
    EXPECT(t, rc == 0, "export without tokenizer: %d", rc);
    free(log);
    Model *back = NULL;
    EXPECT(t, gguf_load(path, 0, &back) == 0, "reload without tokenizer");
    if (back) {
        float *a = xmalloc(sizeof(float) * 4 * (size_t)cfg.vocab_size);
        float *b = xmalloc(sizeof(float) * 4 * (size_t)cfg.vocab_size);
        logits_of(m, a, 4);
        logits_of(back, b, 4);
        EXPECT(t, memcmp(a, b, sizeof(float) * 4 * (size_t)cfg.vocab_size) == 0,
               "logits of a value-head model differ");
        free(a);
        free(b);
    }
    model_free(&back);
    model_free(&m);
}

int export_selftest(bool verbose)
{
    Ctx t = {.verbose = verbose};
    snprintf(t.dir, sizeof t.dir, "/tmp/rlhf-export-XXXXXX");
    if (!mkdtemp(t.dir)) return 1;
    test_f16(&t);
    Bpe *bpe = test_bpe();
    test_round_trip(&t, bpe);
    test_refused(&t, bpe);
    bpe_free(&bpe);
    fileio_remove_tree(t.dir);
    if (verbose) printf("export: %d checks, %d failed\n", t.checks, t.fails);
    return t.fails ? 1 : 0;
}
