#include "tests/support/fixtures.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/formats/bpe_pre.h"
#include "common/formats/ckpt.h"
#include "common/formats/tok.h"

ModelConfig fixture_model_config(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                                 int vocab_size, int max_seq_len)
{
    return model_config_llama(dim, n_layers, n_heads, n_kv_heads, hidden_dim, vocab_size,
                              max_seq_len);
}

OptimConfig fixture_optim_config(float lr_peak, float lr_min, int64_t lr_warmup_steps,
                                 int64_t lr_total_steps)
{
    return (OptimConfig){.lr_peak = lr_peak,
                         .lr_min = lr_min,
                         .lr_warmup_steps = lr_warmup_steps,
                         .lr_total_steps = lr_total_steps,
                         .beta1 = 0.9f,
                         .beta2 = 0.95f,
                         .eps = 1e-8f,
                         .weight_decay = 0.0f,
                         .grad_clip = 0.0f};
}

void fixture_logits(Model *m, float *out, int T)
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

float fixture_max_abs_diff(const float *a, const float *b, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

/* The old file is unlinked first because rewriting a truncated file makes
 * ext4 flush it on close (auto_da_alloc), which costs milliseconds per file. */
const char *fixture_smollm2_path(const char *test)
{
    const char *path = getenv("RLHF_SMOLLM2_GGUF");
    if (!path || !*path) path = FIXTURE_SMOLLM2_GGUF;
    if (access(path, R_OK) != 0) {
        printf("%s: skipped: run make model (no %s)\n", test, path);
        return NULL;
    }
    return path;
}

int fixture_write_file(const char *path, const void *p, size_t n)
{
    if (unlink(path) != 0 && errno != ENOENT) return ERR_IO;
    FILE *fp = fopen(path, "wb");
    if (!fp) return ERR_IO;
    size_t w = fwrite(p, 1, n, fp);
    return fclose(fp) == 0 && w == n ? 0 : ERR_IO;
}

int fixture_vocab_add(FixtureVocab *fv, const char *t, int32_t type)
{
    CHECK(fv->n < FIXTURE_VOCAB_MAX);
    fv->tok[fv->n] = xstrdup(t);
    fv->type[fv->n] = type;
    return fv->n++;
}

void fixture_vocab_add_bytes(FixtureVocab *fv, const char *drop)
{
    for (int c = 0; c < 256; c++) {
        if (c && strchr(drop, c)) continue;
        uint8_t u[5];
        u[bpe_pre_utf8_put(bpe_pre_byte_to_cp((uint8_t)c), u)] = 0;
        fixture_vocab_add(fv, (const char *)u, BPE_TOKEN_NORMAL);
    }
}

Bpe *fixture_vocab_bpe(const FixtureVocab *fv, const char *const *merges, int n_merges,
                       const char *tpl)
{
    BpeVocab v = {.n_tokens = fv->n,
                  .tokens = (const char *const *)fv->tok,
                  .token_types = fv->type,
                  .n_merges = n_merges,
                  .merges = merges,
                  .pre = "smollm",
                  .bos_id = 0,
                  .eos_id = 0,
                  .unk_id = -1,
                  .pad_id = -1,
                  .chat_template = tpl};
    return bpe_new(&v);
}

void fixture_vocab_free(FixtureVocab *fv)
{
    for (int i = 0; i < fv->n; i++) free(fv->tok[i]);
    fv->n = 0;
}

enum { STOP_RM_C = 32 };

/* Its layers are zero, so the final hidden state is the last id's
 * embedding; the embedding gives the stop token one direction and every
 * other id another, and the head reads +1 on the first and -1 on the
 * second. */
bool fixture_save_stop_rm(const char *dir)
{
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig c = fixture_model_config(STOP_RM_C, 1, 2, 2, 64, tok_vocab_size(tok), 64);
    c.has_value_head = true;
    Model      *m = model_new(&c); /* every weight 0, norm gains 1 */
    ModelTensor e, w;
    CHECK(model_find_tensor(m, "model.embed_tokens.weight", &e) == 0 &&
          model_find_tensor(m, "score.weight", &w) == 0);
    for (int v = 0; v < c.vocab_size; v++)
        e.data[(size_t)v * STOP_RM_C + (v == TOK_EOS ? 0 : 1)] = 1.0f;
    /* RMSNorm maps a unit vector e_k to e_k / sqrt(1/C + eps): a head of
     * sqrt(1/C + eps) reads exactly +-1. */
    float k = sqrtf(1.0f / STOP_RM_C + c.norm_eps);
    w.data[0] = k;
    w.data[1] = -k;
    bool ok = ckpt_save(dir, m, tok, NULL, NULL) == 0;
    model_free(&m);
    tok_free(&tok);
    return ok;
}
