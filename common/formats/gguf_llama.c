#include "common/formats/gguf_llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* Moves each row between the HF layout (row h*HS + j*HS/2 + i of head h) and
 * the GGUF one (row h*HS + 2*i + j), either way. */
static void permute_rows(float *dst, const float *src, int n_heads, int rows, int cols,
                         bool to_gguf)
{
    CHECK(n_heads > 0 && rows % n_heads == 0 && (rows / n_heads) % 2 == 0 && cols >= 0);
    CHECK(dst + (size_t)rows * cols <= src || src + (size_t)rows * cols <= dst);
    int HS = rows / n_heads, half_hs = HS / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half_hs; i++) {
                size_t hf = (size_t)h * HS + j * half_hs + i, gg = (size_t)h * HS + 2 * i + j;
                memcpy(dst + (to_gguf ? gg : hf) * cols, src + (to_gguf ? hf : gg) * cols,
                       sizeof(float) * cols);
            }
}

void gguf_permute_qk(float *dst, const float *src, int n_heads, int rows, int cols)
{
    permute_rows(dst, src, n_heads, rows, cols, true);
}

void gguf_unpermute_qk(float *dst, const float *src, int n_heads, int rows, int cols)
{
    permute_rows(dst, src, n_heads, rows, cols, false);
}

/* What the lookup of a config key returned (rc) means: 0 to use the value
 * read, 1 to use the default (the key is absent and has one), or the error,
 * logged when the key is missing. */
static int cfg_found(const GgufFile *f, const char *key, int rc, bool has_default)
{
    if (rc != ERR_NOTFOUND) return rc;
    if (has_default) return 1;
    log_error("gguf_model_config: '%s': missing key '%s'", gguf_path(f), key);
    return rc;
}

/* A required positive integer key that must fit in an int. */
static int cfg_int(const GgufFile *f, const char *key, int64_t dflt, int *out)
{
    int64_t v;
    int     rc = cfg_found(f, key, gguf_get_int(f, key, &v), dflt > 0);
    if (rc < 0) return rc;
    if (rc == 1) v = dflt;
    if (v < 1 || v > INT32_MAX) {
        log_error("gguf_model_config: '%s': %s = %lld, expected 1..%d", gguf_path(f), key,
                  (long long)v, INT32_MAX);
        return ERR_RANGE;
    }
    *out = (int)v;
    return 0;
}

static int cfg_float(const GgufFile *f, const char *key, double dflt, float *out)
{
    double v;
    int    rc = cfg_found(f, key, gguf_get_float(f, key, &v), dflt > 0);
    if (rc < 0) return rc;
    if (rc == 1) v = dflt;
    if (!(v > 0.0) || !(v < 1e30)) {
        log_error("gguf_model_config: '%s': %s = %g, expected a positive finite number",
                  gguf_path(f), key, v);
        return ERR_RANGE;
    }
    *out = (float)v;
    return 0;
}

int gguf_model_config(const GgufFile *f, ModelConfig *cfg)
{
    const char *fn = "gguf_model_config";
    GgufStr     arch;
    int         rc = gguf_get_str(f, "general.architecture", &arch);
    if (rc == ERR_NOTFOUND)
        log_error("%s: '%s': missing key 'general.architecture'", fn, gguf_path(f));
    if (rc) return rc;
    if (strcmp(arch.s, "llama") != 0) {
        log_error("%s: '%s': general.architecture '%.64s', expected 'llama'", fn, gguf_path(f),
                  arch.s);
        return ERR_UNSUPPORTED;
    }
    memset(cfg, 0, sizeof *cfg);
    if ((rc = cfg_int(f, "llama.embedding_length", 0, &cfg->dim)) ||
        (rc = cfg_int(f, "llama.block_count", 0, &cfg->n_layers)) ||
        (rc = cfg_int(f, "llama.attention.head_count", 0, &cfg->n_heads)) ||
        (rc = cfg_int(f, "llama.attention.head_count_kv", cfg->n_heads, &cfg->n_kv_heads)) ||
        (rc = cfg_int(f, "llama.feed_forward_length", 0, &cfg->hidden_dim)) ||
        (rc = cfg_int(f, "llama.context_length", 0, &cfg->max_seq_len)) ||
        (rc = cfg_float(f, "llama.rope.freq_base", 10000.0, &cfg->rope_theta)) ||
        (rc = cfg_float(f, "llama.attention.layer_norm_rms_epsilon", 0, &cfg->norm_eps)))
        return rc;
    int64_t v;
    if (gguf_get_int(f, "llama.expert_count", &v) == 0 && v > 0) {
        log_error("%s: '%s': llama.expert_count %lld: mixture-of-experts models are not supported",
                  fn, gguf_path(f), (long long)v);
        return ERR_UNSUPPORTED;
    }
    GgufStr scaling;
    if (gguf_get_str(f, "llama.rope.scaling.type", &scaling) == 0 &&
        strcmp(scaling.s, "none") != 0) {
        log_error("%s: '%s': llama.rope.scaling.type '%.32s': RoPE scaling is not supported", fn,
                  gguf_path(f), scaling.s);
        return ERR_UNSUPPORTED;
    }
    if (gguf_find_tensor(f, "rope_freqs.weight") >= 0) {
        log_error("%s: '%s': tensor rope_freqs.weight: RoPE frequency factors are not supported",
                  fn, gguf_path(f));
        return ERR_UNSUPPORTED;
    }
    if (cfg->n_heads > 0 && cfg->dim % cfg->n_heads == 0 &&
        gguf_get_int(f, "llama.rope.dimension_count", &v) == 0 && v != cfg->dim / cfg->n_heads) {
        log_error("%s: '%s': llama.rope.dimension_count %lld, expected the head size %d (partial "
                  "rotary embeddings are not supported)",
                  fn, gguf_path(f), (long long)v, cfg->dim / cfg->n_heads);
        return ERR_UNSUPPORTED;
    }
    int emb = gguf_find_tensor(f, "token_embd.weight");
    if (emb < 0) {
        log_error("%s: '%s': no tensor 'token_embd.weight'", fn, gguf_path(f));
        return ERR_NOTFOUND;
    }
    GgufTensorInfo te;
    gguf_tensor_info(f, emb, &te);
    if (te.n_dims != 2 || te.ne[1] > INT32_MAX) {
        log_error("%s: '%s': tensor 'token_embd.weight' has %d dims, expected 2", fn, gguf_path(f),
                  te.n_dims);
        return ERR_MISMATCH;
    }
    cfg->vocab_size = (int)te.ne[1];
    if (gguf_get_int(f, "llama.vocab_size", &v) == 0 && v != cfg->vocab_size) {
        log_error("%s: '%s': llama.vocab_size %lld but token_embd.weight has %d rows", fn,
                  gguf_path(f), (long long)v, cfg->vocab_size);
        return ERR_MISMATCH;
    }
    cfg->tie_embeddings = gguf_find_tensor(f, "output.weight") < 0;
    cfg->has_value_head = false;
    char why[160];
    if (model_config_validate(cfg, why, sizeof why) != 0) {
        log_error("%s: '%s': the model's config is not usable: %s", fn, gguf_path(f), why);
        return ERR_RANGE;
    }
    return 0;
}

/* Our name for each GGUF name: per layer suffixes, then global ones. */
static const char *const k_layer_names[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};
static const char *const k_global_names[][2] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

bool gguf_tensor_name(const char *ours, const ModelConfig *c, char *out, size_t cap, int *qk_heads)
{
    *qk_heads = 0;
    for (size_t i = 0; i < sizeof k_global_names / sizeof k_global_names[0]; i++)
        if (!strcmp(ours, k_global_names[i][1])) {
            snprintf(out, cap, "%s", k_global_names[i][0]);
            return true;
        }
    int l, used = 0;
    if (sscanf(ours, "model.layers.%d.%n", &l, &used) != 1 || used == 0) return false;
    for (size_t i = 0; i < sizeof k_layer_names / sizeof k_layer_names[0]; i++)
        if (!strcmp(ours + used, k_layer_names[i][1])) {
            snprintf(out, cap, "blk.%d.%s", l, k_layer_names[i][0]);
            if (i == 1) *qk_heads = c->n_heads;
            if (i == 2) *qk_heads = c->n_kv_heads;
            return true;
        }
    return false;
}

static void ne_str(const int64_t *ne, int n, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < n && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, "%s%lld", d ? ", " : "", (long long)ne[d]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

int gguf_load_model(GgufFile *f, Model *m)
{
    const char        *fn = "gguf_load_model";
    const ModelConfig *c = model_config(m);
    int                nt = model_num_tensors(m), rc = 0;
    int               *src = xmalloc(sizeof(int) * (size_t)nt);
    int                n_file = gguf_tensor_count(f);
    bool              *used = xcalloc((size_t)(n_file ? n_file : 1), sizeof(bool));
    float             *scratch = NULL;
    size_t             scratch_len = 0;
    /* Pass 1: everything checked before m is touched. */
    for (int i = 0; i < nt && rc == 0; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        char name[GGUF_MAX_NAME + 1];
        int  qk;
        src[i] = -1;
        if (!gguf_tensor_name(mt.name, c, name, sizeof name, &qk)) continue; /* value head */
        int j = gguf_find_tensor(f, name);
        if (j < 0) {
            log_error("%s: '%s': no tensor '%s' (for %s)", fn, gguf_path(f), name, mt.name);
            rc = ERR_NOTFOUND;
            break;
        }
        GgufTensorInfo t;
        gguf_tensor_info(f, j, &t);
        /* GGUF lists dims innermost first: ours [rows, cols] is ne [cols, rows]. */
        int64_t want[GGUF_MAX_DIMS] = {1, 1, 1, 1};
        if (mt.ndim == 2) {
            want[0] = mt.shape[1];
            want[1] = mt.shape[0];
        } else {
            want[0] = mt.shape[0];
        }
        if (memcmp(want, t.ne, sizeof want) != 0) {
            char got_s[96], want_s[96];
            ne_str(t.ne, t.n_dims, got_s, sizeof got_s);
            ne_str(want, mt.ndim, want_s, sizeof want_s);
            log_error("%s: '%s': tensor '%s' has ne %s, expected %s for the config (%s)", fn,
                      gguf_path(f), name, got_s, want_s, mt.name);
            rc = ERR_MISMATCH;
            break;
        }
        if (!gguf_type_is_supported(t.type)) {
            log_error("%s: '%s': tensor '%s' has type %s, which cannot be dequantised (supported: "
                      "F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                      fn, gguf_path(f), name, t.type_name);
            rc = ERR_UNSUPPORTED;
            break;
        }
        if (qk && mt.numel > scratch_len) scratch_len = mt.numel;
        src[i] = j;
        used[j] = true;
    }
    for (int j = 0; j < n_file && rc == 0; j++) {
        if (used[j]) continue;
        GgufTensorInfo t;
        gguf_tensor_info(f, j, &t);
        const char *name = t.name;
        if (!strcmp(name, "output.weight"))
            log_error("%s: '%s': tensor 'output.weight' is present but the model's config ties the "
                      "LM head to the embedding",
                      fn, gguf_path(f));
        else
            log_error("%s: '%s': tensor '%s' is not part of a Llama model of this config (%d "
                      "layers)",
                      fn, gguf_path(f), name, c->n_layers);
        rc = ERR_MISMATCH;
    }
    if (rc) goto done;
    /* Pass 2: dequantise straight into the parameter views. */
    if (scratch_len) scratch = xmalloc(sizeof(float) * scratch_len);
    for (int i = 0; i < nt && rc == 0; i++) {
        if (src[i] < 0) continue;
        ModelTensor mt;
        model_tensor(m, i, &mt);
        char name[GGUF_MAX_NAME + 1];
        int  qk;
        CHECK(gguf_tensor_name(mt.name, c, name, sizeof name, &qk));
        if (qk) {
            if ((rc = gguf_read_f32(f, src[i], scratch, mt.numel)) != 0) break;
            gguf_unpermute_qk(mt.data, scratch, qk, (int)mt.shape[0], (int)mt.shape[1]);
        } else if ((rc = gguf_read_f32(f, src[i], mt.data, mt.numel)) != 0) {
            break;
        }
        for (size_t k = 0; k < mt.numel; k++) {
            if (!isfinite(mt.data[k])) {
                log_error("%s: '%s': tensor '%s': element %zu is %g, expected a finite weight", fn,
                          gguf_path(f), name, k, (double)mt.data[k]);
                rc = ERR_NONFINITE;
                break;
            }
        }
    }
done:
    free(scratch);
    free(used);
    free(src);
    return rc;
}

/* Whether f holds a tensor called name; logs it missing otherwise. */
static bool has_tensor(const GgufFile *f, const char *name, const ModelConfig *c)
{
    if (gguf_find_tensor(f, name) >= 0) return true;
    log_error("gguf_load: '%s': no tensor '%s' (the metadata describes %d layers)", gguf_path(f),
              name, c->n_layers);
    return false;
}

/* Checks, before a model of c is allocated, that f holds a tensor of every
 * GGUF name it needs (in the order gguf_load_model looks for them, so the
 * same tensor is reported missing) and that its tensors, which gguf_open
 * bounded by the file, hold at least the model's parameter count: the
 * metadata alone sets the model's size, and a small file that claims a
 * huge model must be refused here, not by an allocation of the size it
 * claims. gguf_load_model then checks each tensor's shape and type. */
static int check_holds(const GgufFile *f, const ModelConfig *c)
{
    char name[GGUF_MAX_NAME + 1];
    if (!has_tensor(f, "token_embd.weight", c)) return ERR_NOTFOUND;
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t i = 0; i < sizeof k_layer_names / sizeof k_layer_names[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, k_layer_names[i][0]);
            if (!has_tensor(f, name, c)) return ERR_NOTFOUND;
        }
    }
    if (!has_tensor(f, "output_norm.weight", c) ||
        (!c->tie_embeddings && !has_tensor(f, "output.weight", c)))
        return ERR_NOTFOUND;
    uint64_t have = 0;
    for (int i = 0; i < gguf_tensor_count(f); i++) {
        GgufTensorInfo t;
        gguf_tensor_info(f, i, &t);
        have += t.numel;
    }
    size_t want = model_config_num_params(c);
    if (have < want) {
        log_error("gguf_load: '%s': the metadata describes a model of %zu parameters (%d layers, "
                  "dim %d, hidden %d, vocab %d), but the file's %d tensors hold %llu values",
                  gguf_path(f), want, c->n_layers, c->dim, c->hidden_dim, c->vocab_size,
                  gguf_tensor_count(f), (unsigned long long)have);
        return ERR_MISMATCH;
    }
    return 0;
}

int gguf_load(const char *path, int max_seq_len, Model **out)
{
    CHECK(path && out);
    *out = NULL;
    GgufFile *f = NULL;
    int       rc = gguf_open(path, &f);
    if (rc) return rc;
    ModelConfig cfg;
    if ((rc = gguf_model_config(f, &cfg)) != 0) goto close;
    if (max_seq_len > 0 && max_seq_len < cfg.max_seq_len) cfg.max_seq_len = max_seq_len;
    if ((rc = check_holds(f, &cfg)) != 0) goto close;
    Model *m = model_new(&cfg);
    if ((rc = gguf_load_model(f, m)) != 0) {
        model_free(&m);
        goto close;
    }
    *out = m;
close:
    gguf_close(&f);
    return rc;
}
