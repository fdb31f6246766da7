#include "common/formats/ckpt_config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_int.h"
#include "common/formats/safetensors.h"
#include "common/nn/model.h"

/* The decimal form of x with the fewest digits that reads back as x, so
 * config.json says 1e-05 rather than 9.99999975e-06. */
static double shortest_decimal(float x)
{
    char buf[32];
    for (int p = 1; p < 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if ((float)strtod(buf, NULL) == x) return strtod(buf, NULL);
    }
    snprintf(buf, sizeof buf, "%.9g", (double)x);
    return strtod(buf, NULL);
}

int ckpt_write_json(const char *path, json_t *root, size_t flags)
{
    char *text = json_dumps(root, flags);
    if (!text) {
        log_error("ckpt_save: '%s': JSON cannot represent a value (NaN or infinity?)", path);
        return ERR_ARG;
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    text[n + 1] = '\0';
    int rc = fileio_write_atomic(path, text, n + 1);
    free(text);
    return rc;
}

/* The config.json object of a model, without the save id. */
static json_t *config_object(const ModelConfig *c, const Tok *tok)
{
    json_t *o = json_object();
    CHECK(o);
    /* A scalar head makes the model what transformers calls a sequence
     * classifier with one label (a reward model, or PPO's critic): its
     * "score" Linear reads the last token's final hidden state. */
    json_object_set_new(o, "architectures",
                        json_pack("[s]", c->has_value_head ? "LlamaForSequenceClassification"
                                                           : "LlamaForCausalLM"));
    if (c->has_value_head) {
        json_object_set_new(o, "num_labels", json_integer(1));
        json_object_set_new(o, "id2label", json_pack("{s:s}", "0", "LABEL_0"));
        json_object_set_new(o, "label2id", json_pack("{s:i}", "LABEL_0", 0));
    }
    json_object_set_new(o, "model_type", json_string("llama"));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->dim / c->n_heads));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_real(shortest_decimal(c->norm_eps)));
    json_object_set_new(o, "rope_theta", json_real(shortest_decimal(c->rope_theta)));
    json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "mlp_bias", json_false());
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    if (tok) {
        json_object_set_new(o, "bos_token_id", json_integer(TOK_BOS));
        json_object_set_new(o, "eos_token_id", json_integer(TOK_EOS));
        json_object_set_new(o, "pad_token_id", json_integer(TOK_PAD));
        json_object_set_new(o, "rlhf_tokenizer", json_string("char"));
        json_object_set_new(o, "rlhf_tokenizer_charset", json_string(tok_charset(tok)));
    }
    json_object_set_new(o, "rlhf_has_value_head", json_boolean(c->has_value_head));
    json_object_set_new(o, "rlhf_format_version", json_integer(CKPT_FORMAT_VERSION));
    return o;
}

/* Nine significant digits always reproduce a float; shortest_decimal has
 * already picked the shortest of those forms. */
#define CONFIG_JSON_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9))

int ckpt_config_write(const char *path, const ModelConfig *c, const Tok *tok, const char *save_id)
{
    json_t *o = config_object(c, tok);
    json_object_set_new(o, CKPT_SAVE_ID_KEY, json_string(save_id));
    int rc = ckpt_write_json(path, o, CONFIG_JSON_FLAGS);
    json_decref(o);
    return rc;
}

char *ckpt_config_to_json(const ModelConfig *c, const Tok *tok)
{
    json_t *o = config_object(c, tok);
    char   *text = json_dumps(o, CONFIG_JSON_FLAGS);
    json_decref(o);
    CHECK(text); /* only fails when out of memory */
    return text;
}

int ckpt_read_json(const char *fn, const char *dir, const char *file, bool quiet_missing,
                   json_t **out, char *path)
{
    *out = NULL;
    int n = snprintf(path, PATH_MAX, "%s/%s", dir, file);
    if (n < 0 || n >= PATH_MAX) {
        log_error("%s: checkpoint path '%.200s...' too long", fn, dir);
        return ERR_ARG;
    }
    char  *text = NULL;
    size_t len = 0;
    int    rc = fileio_read_all(path, CKPT_JSON_MAX_BYTES, true, &text, &len);
    if (rc == ERR_NOTFOUND) {
        if (quiet_missing)
            log_info("%s: '%s' has no %s", fn, dir, file);
        else
            log_error("%s: '%s' does not exist", fn, path);
        return rc;
    }
    if (rc != 0) return rc;
    json_error_t jerr;
    json_t      *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root || !json_is_object(root)) {
        if (root)
            log_error("%s: '%s': top level is not a JSON object", fn, path);
        else
            log_error("%s: '%s': invalid JSON (line %d, column %d): %s", fn, path, jerr.line,
                      jerr.column, jerr.text);
        json_decref(root);
        return ERR_FORMAT;
    }
    *out = root;
    return 0;
}

/* The value of key in *v, or NULL when it is absent or null; ERR_FORMAT
 * (logged) when it is absent and required. */
static int get_field(const char *fn, const char *path, const json_t *o, const char *key,
                     bool required, const json_t **v)
{
    *v = json_object_get(o, key);
    if (*v && !json_is_null(*v)) return 0;
    *v = NULL;
    if (!required) return 0;
    log_error("%s: '%s': missing key '%s'", fn, path, key);
    return ERR_FORMAT;
}

int ckpt_get_int(const char *fn, const char *path, const json_t *o, const char *key, bool required,
                 long long def, long long lo, long long hi, long long *out)
{
    const json_t *v;
    int           rc = get_field(fn, path, o, key, required, &v);
    if (rc != 0 || !v) {
        if (rc == 0) *out = def;
        return rc;
    }
    if (!json_is_integer(v)) {
        log_error("%s: '%s': '%s' is not an integer", fn, path, key);
        return ERR_FORMAT;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        log_error("%s: '%s': '%s' is %lld, expected %lld..%lld", fn, path, key, x, lo, hi);
        return ERR_RANGE;
    }
    *out = x;
    return 0;
}

static int get_float(const char *fn, const char *path, const json_t *o, const char *key,
                     bool required, float def, float *out)
{
    const json_t *v;
    int           rc = get_field(fn, path, o, key, required, &v);
    if (rc != 0 || !v) {
        if (rc == 0) *out = def;
        return rc;
    }
    if (!json_is_number(v)) {
        log_error("%s: '%s': '%s' is not a number", fn, path, key);
        return ERR_FORMAT;
    }
    double x = json_number_value(v);
    if (!isfinite(x) || fabs(x) > 3.0e38) {
        log_error("%s: '%s': '%s' is %g, expected a finite float", fn, path, key, x);
        return ERR_RANGE;
    }
    *out = (float)x;
    return 0;
}

static int get_bool(const char *fn, const char *path, const json_t *o, const char *key, bool def,
                    bool *out)
{
    const json_t *v;
    get_field(fn, path, o, key, false, &v); /* cannot fail when not required */
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        log_error("%s: '%s': '%s' is not true or false", fn, path, key);
        return ERR_FORMAT;
    }
    *out = json_is_true(v);
    return 0;
}

const char *ckpt_get_string(const char *fn, const char *path, const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) {
        log_error("%s: '%s': '%s' is %s, expected a string", fn, path, key,
                  v ? "not a string" : "missing");
        return NULL;
    }
    return json_string_value(v);
}

/* Refuses configs asking for features the model lacks. */
static int check_supported(const char *fn, const char *path, const json_t *o)
{
    const char *type = ckpt_get_string(fn, path, o, "model_type");
    if (!type) return ERR_FORMAT;
    if (strcmp(type, "llama") != 0) {
        log_error("%s: '%s': model_type '%.64s', expected 'llama'", fn, path, type);
        return ERR_UNSUPPORTED;
    }
    const json_t *act = json_object_get(o, "hidden_act");
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
        log_error("%s: '%s': hidden_act is not 'silu'", fn, path);
        return ERR_UNSUPPORTED;
    }
    const json_t *scaling = json_object_get(o, "rope_scaling");
    if (scaling && !json_is_null(scaling)) {
        log_error("%s: '%s': rope_scaling is set; only plain RoPE is supported", fn, path);
        return ERR_UNSUPPORTED;
    }
    const char *biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        bool b = false;
        int  rc = get_bool(fn, path, o, biases[i], false, &b);
        if (rc != 0) return rc;
        if (b) {
            log_error("%s: '%s': %s is true; the model has no biases", fn, path, biases[i]);
            return ERR_UNSUPPORTED;
        }
    }
    long long version = 0;
    int rc = ckpt_get_int(fn, path, o, "rlhf_format_version", false, 0, 0, LLONG_MAX, &version);
    if (rc != 0) return rc;
    if (version > CKPT_FORMAT_VERSION) {
        log_error("%s: '%s': rlhf_format_version %lld, this build reads up to %d", fn, path,
                  version, CKPT_FORMAT_VERSION);
        return ERR_UNSUPPORTED;
    }
    return 0;
}

bool ckpt_config_is_classifier(const json_t *o)
{
    const json_t *a = json_object_get(o, "architectures");
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++) {
        const json_t *s = json_array_get(a, i);
        if (json_is_string(s) && !strcmp(json_string_value(s), CKPT_ARCH_CLASSIFIER)) return true;
    }
    return false;
}

/* A sequence classifier (a reward model) has the scalar head: one label,
 * as transformers counts them (num_labels, else the entries of id2label,
 * else its default of 2). Sets *has_head; refuses more labels, or a config
 * that names the architecture and denies the head. */
static int classifier_head(const char *fn, const char *path, const json_t *o, bool *has_head)
{
    if (!ckpt_config_is_classifier(o)) return 0;
    long long     labels = 2;
    const json_t *id2label = json_object_get(o, "id2label");
    if (json_is_object(id2label)) labels = (long long)json_object_size(id2label);
    int rc = ckpt_get_int(fn, path, o, "num_labels", false, labels, 1, INT_MAX, &labels);
    if (rc) return rc;
    if (labels != 1) {
        log_error("%s: '%s': %s with %lld labels; a reward model has one (num_labels 1)", fn, path,
                  CKPT_ARCH_CLASSIFIER, labels);
        return ERR_UNSUPPORTED;
    }
    const json_t *v = json_object_get(o, "rlhf_has_value_head");
    if (json_is_false(v)) {
        log_error("%s: '%s': %s but rlhf_has_value_head is false", fn, path, CKPT_ARCH_CLASSIFIER);
        return ERR_FORMAT;
    }
    *has_head = true;
    return 0;
}

int ckpt_config_parse(const char *fn, const char *path, const json_t *o, ModelConfig *cfg)
{
    int rc = check_supported(fn, path, o);
    if (rc != 0) return rc;
    long long dim, hidden, heads, layers, kv, vocab, seq;
    if ((rc = ckpt_get_int(fn, path, o, "hidden_size", true, 0, 1, INT_MAX, &dim)) ||
        (rc = ckpt_get_int(fn, path, o, "intermediate_size", true, 0, 1, INT_MAX, &hidden)) ||
        (rc = ckpt_get_int(fn, path, o, "num_attention_heads", true, 0, 1, INT_MAX, &heads)) ||
        (rc = ckpt_get_int(fn, path, o, "num_hidden_layers", true, 0, 1, INT_MAX, &layers)) ||
        (rc = ckpt_get_int(fn, path, o, "num_key_value_heads", false, heads, 1, INT_MAX, &kv)) ||
        (rc = ckpt_get_int(fn, path, o, "vocab_size", true, 0, 1, INT_MAX, &vocab)) ||
        (rc = ckpt_get_int(fn, path, o, "max_position_embeddings", true, 0, 1, INT_MAX, &seq)))
        return rc;
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = (int)dim;
    cfg->hidden_dim = (int)hidden;
    cfg->n_heads = (int)heads;
    cfg->n_layers = (int)layers;
    cfg->n_kv_heads = (int)kv;
    cfg->vocab_size = (int)vocab;
    cfg->max_seq_len = (int)seq;
    if ((rc = get_float(fn, path, o, "rms_norm_eps", true, 0, &cfg->norm_eps)) ||
        (rc = get_float(fn, path, o, "rope_theta", false, 10000.0f, &cfg->rope_theta)) ||
        (rc = get_bool(fn, path, o, "tie_word_embeddings", false, &cfg->tie_embeddings)) ||
        (rc = get_bool(fn, path, o, "rlhf_has_value_head", false, &cfg->has_value_head)) ||
        (rc = classifier_head(fn, path, o, &cfg->has_value_head)))
        return rc;
    char why[160];
    if (model_config_validate(cfg, why, sizeof why) != 0) {
        log_error("%s: '%s': config refused: %s", fn, path, why);
        return ERR_RANGE;
    }
    /* Checked after validation, which guarantees heads divides dim. */
    long long head_dim;
    rc = ckpt_get_int(fn, path, o, "head_dim", false, dim / heads, 1, INT_MAX, &head_dim);
    if (rc != 0) return rc;
    if (head_dim != dim / heads) {
        log_error("%s: '%s': head_dim %lld, expected hidden_size / num_attention_heads = %lld", fn,
                  path, head_dim, dim / heads);
        return ERR_UNSUPPORTED;
    }
    return 0;
}

int ckpt_config_from_json(const char *what, const char *text, ModelConfig *cfg, int *eos_id)
{
    CHECK(what && text && cfg);
    json_error_t jerr;
    json_t      *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!o || !json_is_object(o)) {
        if (o)
            log_error("ckpt_config_from_json: %s: top level is not a JSON object", what);
        else
            log_error("ckpt_config_from_json: %s: invalid JSON (line %d, column %d): %s", what,
                      jerr.line, jerr.column, jerr.text);
        json_decref(o);
        return ERR_FORMAT;
    }
    int rc = ckpt_config_parse("ckpt_config_from_json", what, o, cfg);
    if (rc == 0 && eos_id) {
        long long eos;
        rc = ckpt_get_int("ckpt_config_from_json", what, o, "eos_token_id", false, TOK_EOS, 0,
                          cfg->vocab_size - 1, &eos);
        if (rc == 0) *eos_id = (int)eos;
    }
    json_decref(o);
    return rc;
}

/* Whether dir's weights file can hold a model of cfg: a config.json that
 * claims a far larger model than the weights beside it (damage, or a
 * hostile file) is refused here, before any caller allocates that model.
 * No weights file: nothing to weigh (the load that follows says so). */
static int check_weights_hold(const char *dir, const char *cpath, const ModelConfig *cfg)
{
    char wpath[PATH_MAX];
    ckpt_join(wpath, dir, CKPT_MODEL_FILE);
    StFile *f = NULL;
    int     rc = st_open(wpath, &f);
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    size_t have = 0;
    for (int i = 0; i < st_count(f); i++) {
        StInfo in;
        st_info_at(f, i, &in);
        have += in.numel;
    }
    /* transformers' classifier has no score.bias (ckpt_load takes it as 0). */
    bool no_bias = cfg->has_value_head && st_find(f, "score.bias") < 0;
    st_close(&f);
    size_t want = model_config_num_params(cfg) - (no_bias ? 1 : 0);
    if (have < want) {
        log_error("ckpt_load_config: '%s' describes a model of %zu parameters, but '%s' holds %zu "
                  "values",
                  cpath, want, wpath, have);
        return ERR_MISMATCH;
    }
    return 0;
}

int ckpt_load_config(const char *dir, ModelConfig *cfg)
{
    CHECK(dir && cfg);
    char    path[PATH_MAX];
    json_t *o = NULL;
    int     rc = ckpt_read_json("ckpt_load_config", dir, CKPT_CONFIG_FILE, false, &o, path);
    if (rc != 0) return rc;
    rc = ckpt_config_parse("ckpt_load_config", path, o, cfg);
    json_decref(o);
    return rc ? rc : check_weights_hold(dir, path, cfg);
}

int ckpt_load_tok(const char *dir, Tok **out)
{
    CHECK(dir && out);
    *out = NULL;
    const char *fn = "ckpt_load_tok";
    char        path[PATH_MAX];
    json_t     *o = NULL;
    int         rc = ckpt_read_json(fn, dir, CKPT_CONFIG_FILE, false, &o, path);
    if (rc != 0) return rc;
    const json_t *cs = json_object_get(o, "rlhf_tokenizer_charset");
    const json_t *kind = json_object_get(o, "rlhf_tokenizer");
    long long     vocab = 0, ids[3];
    const char   *id_keys[3] = {"pad_token_id", "bos_token_id", "eos_token_id"};
    char          why[160];
    if (!cs) {
        log_error("%s: '%s': no rlhf_tokenizer_charset (not saved by rlhf.c?)", fn, path);
        rc = ERR_NOTFOUND;
        goto done;
    }
    if (kind && !(json_is_string(kind) && !strcmp(json_string_value(kind), "char"))) {
        log_error("%s: '%s': rlhf_tokenizer is not 'char'", fn, path);
        rc = ERR_UNSUPPORTED;
        goto done;
    }
    if (!json_is_string(cs) || tok_charset_validate(json_string_value(cs), why, sizeof why) != 0) {
        log_error("%s: '%s': rlhf_tokenizer_charset: %s", fn, path,
                  json_is_string(cs) ? why : "not a string");
        rc = ERR_FORMAT;
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        if ((rc = ckpt_get_int(fn, path, o, id_keys[i], false, i, 0, INT_MAX, &ids[i])) != 0)
            goto done;
        if (ids[i] != i) { /* TOK_PAD, TOK_BOS, TOK_EOS are 0, 1, 2 */
            log_error("%s: '%s': %s is %lld, the character tokenizer's is %d", fn, path, id_keys[i],
                      ids[i], i);
            rc = ERR_FORMAT;
            goto done;
        }
    }
    if ((rc = ckpt_get_int(fn, path, o, "vocab_size", true, 0, 1, INT_MAX, &vocab)) != 0) goto done;
    Tok *t = tok_new(json_string_value(cs));
    CHECK(t); /* the charset was validated above */
    if (tok_vocab_size(t) > vocab) {
        log_error("%s: '%s': tokenizer vocabulary %d exceeds vocab_size %lld", fn, path,
                  tok_vocab_size(t), vocab);
        tok_free(&t);
        rc = ERR_MISMATCH;
        goto done;
    }
    *out = t;
done:
    json_decref(o);
    return rc;
}
