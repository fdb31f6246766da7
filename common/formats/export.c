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
#include "common/formats/gguf_llama.h"
#include "common/formats/gguf_buf.h"
#include "common/base/log.h"
#include "common/formats/safetensors.h"
#include "common/nn/half.h"

#define EXPORT_ALIGNMENT GGUF_DEFAULT_ALIGNMENT
#define EXPORT_F16_CHUNK 65536 /* elements converted per write */

/* llama.cpp's general.file_type values (enum llama_ftype). */
#define EXPORT_FTYPE_ALL_F32 0
#define EXPORT_FTYPE_MOSTLY_F16 1

/* An optional special id: written only when the vocabulary has one. */
static void kv_id(GgufBuf *m, const char *key, int id)
{
    if (id >= 0) gguf_buf_kv_u32(m, key, (uint32_t)id);
}

static void tokenizer_meta(GgufBuf *m, const Bpe *b)
{
    int n = bpe_vocab_size(b), n_merges = bpe_merge_count(b);
    gguf_buf_kv_str(m, "tokenizer.ggml.model", "gpt2");
    gguf_buf_kv_str(m, "tokenizer.ggml.pre", bpe_pre_name(b));
    gguf_buf_kv_array(m, "tokenizer.ggml.tokens", GGUF_VAL_STRING, (uint64_t)n);
    for (int i = 0; i < n; i++) gguf_buf_str(m, bpe_token_text(b, i));
    gguf_buf_kv_array(m, "tokenizer.ggml.token_type", GGUF_VAL_INT32, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        int32_t t = bpe_token_type(b, i);
        gguf_buf_put(m, &t, 4);
    }
    gguf_buf_kv_array(m, "tokenizer.ggml.merges", GGUF_VAL_STRING, (uint64_t)n_merges);
    for (int r = 0; r < n_merges; r++) {
        int l, rr;
        bpe_merge_at(b, r, &l, &rr);
        const char *ls = bpe_token_text(b, l), *rs = bpe_token_text(b, rr);
        size_t      ll = strlen(ls), rl = strlen(rs);
        gguf_buf_u64(m, ll + 1 + rl);
        gguf_buf_put(m, ls, ll);
        gguf_buf_put(m, " ", 1);
        gguf_buf_put(m, rs, rl);
    }
    kv_id(m, "tokenizer.ggml.bos_token_id", bpe_bos_id(b));
    kv_id(m, "tokenizer.ggml.eos_token_id", bpe_eos_id(b));
    kv_id(m, "tokenizer.ggml.unknown_token_id", bpe_unk_id(b));
    kv_id(m, "tokenizer.ggml.padding_token_id", bpe_pad_id(b));
    gguf_buf_kv_bool(m, "tokenizer.ggml.add_bos_token", bpe_add_bos(b));
    if (bpe_chat_template(b)) gguf_buf_kv_str(m, "tokenizer.chat_template", bpe_chat_template(b));
}

static void model_meta(GgufBuf *m, const ModelConfig *c, int type)
{
    gguf_buf_kv_str(m, "general.architecture", "llama");
    gguf_buf_kv_str(m, "general.name", "rlhf.c export");
    gguf_buf_kv_u32(m, "general.file_type",
                    type == EXPORT_F16 ? EXPORT_FTYPE_MOSTLY_F16 : EXPORT_FTYPE_ALL_F32);
    gguf_buf_kv_u32(m, "general.alignment", EXPORT_ALIGNMENT);
    gguf_buf_kv_u32(m, "llama.vocab_size", (uint32_t)c->vocab_size);
    gguf_buf_kv_u32(m, "llama.context_length", (uint32_t)c->max_seq_len);
    gguf_buf_kv_u32(m, "llama.embedding_length", (uint32_t)c->dim);
    gguf_buf_kv_u32(m, "llama.block_count", (uint32_t)c->n_layers);
    gguf_buf_kv_u32(m, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    gguf_buf_kv_u32(m, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads));
    gguf_buf_kv_u32(m, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_buf_kv_u32(m, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_buf_kv_f32(m, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    gguf_buf_kv_f32(m, "llama.rope.freq_base", c->rope_theta);
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
    GgufBuf meta = {0};
    model_meta(&meta, c, type);
    if (b) tokenizer_meta(&meta, b);

    int        nt = model_num_tensors(m), n_out = 0;
    OutTensor *out = xcalloc((size_t)nt, sizeof *out);
    GgufBuf    dir = {0};
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
        gguf_buf_str(&dir, o->name);
        gguf_buf_u32(&dir, (uint32_t)mt.ndim);
        if (mt.ndim == 2) {
            gguf_buf_u64(&dir, (uint64_t)mt.shape[1]);
            gguf_buf_u64(&dir, (uint64_t)mt.shape[0]);
        } else {
            gguf_buf_u64(&dir, (uint64_t)mt.shape[0]);
        }
        gguf_buf_u32(&dir, o->is_f16 ? GGUF_TYPE_F16 : GGUF_TYPE_F32);
        gguf_buf_u64(&dir, o->offset);
        n_out++;
    }
    GgufBuf head = {0};
    gguf_buf_put(&head, "GGUF", 4);
    gguf_buf_u32(&head, 3);
    gguf_buf_u64(&head, (uint64_t)n_out);
    gguf_buf_u64(&head, meta.n_kv);
    gguf_buf_put(&head, meta.p, meta.n);
    gguf_buf_put(&head, dir.p, dir.n);

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
    gguf_buf_free(&head);
    gguf_buf_free(&dir);
    gguf_buf_free(&meta);
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
