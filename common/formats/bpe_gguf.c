#include "common/formats/bpe_gguf.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* An optional special id: -1 when absent, else the value if it fits int32. */
static int gguf_id(const GgufFile *f, const char *key, int32_t *out)
{
    int64_t v;
    int     rc = gguf_get_int(f, key, &v);
    *out = -1;
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    if (v < 0 || v > INT32_MAX) {
        log_error("bpe_from_gguf: %s: %s = %lld, expected 0..%d", gguf_path(f), key, (long long)v,
                  INT32_MAX);
        return ERR_RANGE;
    }
    *out = (int32_t)v;
    return 0;
}

/* A string of the file, NUL-terminated (GgufStr guarantees the NUL), or NULL
 * when absent. */
static int gguf_opt_str(const GgufFile *f, const char *key, const char **out)
{
    GgufStr s;
    int     rc = gguf_get_str(f, key, &s);
    *out = NULL;
    if (rc == ERR_NOTFOUND) return 0;
    if (rc) return rc;
    if (strlen(s.s) != s.len) {
        log_error("bpe_from_gguf: %s: %s contains a NUL byte", gguf_path(f), key);
        return ERR_FORMAT;
    }
    *out = s.s;
    return 0;
}

int bpe_from_gguf(const GgufFile *f, Bpe **out)
{
    CHECK(f && out);
    *out = NULL;
    const char *path = gguf_path(f), *model = NULL;
    BpeVocab    v = {0};
    int         rc = gguf_opt_str(f, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (!model || strcmp(model, "gpt2") != 0) {
        log_error("bpe_from_gguf: %s: tokenizer.ggml.model '%s', expected 'gpt2' (byte-level BPE)",
                  path, model ? model : "(missing)");
        return ERR_UNSUPPORTED;
    }
    const GgufStr *toks, *merges;
    size_t         n_toks, n_merges;
    rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &n_toks);
    if (rc == 0) rc = gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &n_merges);
    if (rc) {
        if (rc == ERR_NOTFOUND)
            log_error("bpe_from_gguf: %s: tokenizer.ggml.tokens or .merges missing", path);
        return rc;
    }
    if (n_toks == 0 || n_toks > BPE_MAX_TOKENS || n_merges > BPE_MAX_TOKENS) {
        log_error("bpe_from_gguf: %s: %zu tokens and %zu merges, expected 1..%d of each", path,
                  n_toks, n_merges, BPE_MAX_TOKENS);
        return ERR_RANGE;
    }
    const void *types = NULL;
    int         type_elem = 0;
    size_t      n_types = 0;
    rc = gguf_get_array(f, "tokenizer.ggml.token_type", &type_elem, &types, &n_types);
    if (rc == ERR_NOTFOUND) {
        types = NULL;
    } else if (rc) {
        return rc;
    } else if (type_elem != GGUF_VAL_INT32 || n_types != n_toks) {
        log_error("bpe_from_gguf: %s: tokenizer.ggml.token_type has %zu elements of type %d, "
                  "expected %zu INT32",
                  path, n_types, type_elem, n_toks);
        return ERR_MISMATCH;
    }
    if ((rc = gguf_opt_str(f, "tokenizer.ggml.pre", &v.pre)) != 0) return rc;
    if (!v.pre) {
        log_warn("bpe_from_gguf: %s: no tokenizer.ggml.pre; using the GPT-2 split", path);
        v.pre = "gpt2";
    }
    if ((rc = gguf_opt_str(f, "tokenizer.chat_template", &v.chat_template)) != 0) return rc;
    if ((rc = gguf_id(f, "tokenizer.ggml.bos_token_id", &v.bos_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.eos_token_id", &v.eos_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.unknown_token_id", &v.unk_id)) != 0 ||
        (rc = gguf_id(f, "tokenizer.ggml.padding_token_id", &v.pad_id)) != 0)
        return rc;
    rc = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v.add_bos);
    if (rc == ERR_NOTFOUND)
        v.add_bos = false;
    else if (rc)
        return rc;

    const char **tok_p = xmalloc(n_toks * sizeof *tok_p);
    size_t      *tok_l = xmalloc(n_toks * sizeof *tok_l);
    const char **mer_p = xmalloc((n_merges + 1) * sizeof *mer_p);
    size_t      *mer_l = xmalloc((n_merges + 1) * sizeof *mer_l);
    for (size_t i = 0; i < n_toks; i++) tok_p[i] = toks[i].s, tok_l[i] = toks[i].len;
    for (size_t i = 0; i < n_merges; i++) mer_p[i] = merges[i].s, mer_l[i] = merges[i].len;
    v.n_tokens = (int)n_toks;
    v.tokens = tok_p;
    v.token_lens = tok_l;
    v.token_types = types;
    v.n_merges = (int)n_merges;
    v.merges = mer_p;
    v.merge_lens = mer_l;
    *out = bpe_new(&v);
    free(tok_p);
    free(tok_l);
    free(mer_p);
    free(mer_l);
    if (!*out) {
        log_error("bpe_from_gguf: %s: the tokenizer metadata was refused (see above)", path);
        return ERR_FORMAT;
    }
    return 0;
}

int bpe_load(const char *path, Bpe **out)
{
    CHECK(path && out);
    *out = NULL;
    GgufFile *f = NULL;
    int       rc = gguf_open(path, &f);
    if (rc) return rc;
    rc = bpe_from_gguf(f, out);
    gguf_close(&f);
    return rc;
}
