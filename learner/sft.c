#include "learner/sft.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

typedef struct {
    int   *tokens, *targets;    /* (n, T) */
    float *mask, *logp, *dlogp; /* (n, T) */
    int    T;                   /* positions per row: the longest example's, not the caller's cap */
    int    n_tokens;
} Batch;

/* Checks every example against the cap T and packs the batch to the length
 * its longest example needs (prompt + completion - 1 positions: the last
 * token is only a target). Right padding is causal-masked away, so a
 * shorter row gives the same losses and gradients and skips the padding's
 * work: the arithmetic task's examples need 6..10 positions of a cap of 13. */
static int pack(const SftExample *ex, int n, int T, int pad_id, Batch *b)
{
    int Tb = 1;
    for (int i = 0; i < n; i++) {
        const SftExample *e = &ex[i];
        int               len = e->prompt_len + e->completion_len;
        if (e->prompt_len < 1 || e->completion_len < 1 || len > T + 1) {
            log_error("sft: example %d: prompt %d + completion %d tokens does not fit T=%d", i,
                      e->prompt_len, e->completion_len, T);
            return ERR_RANGE;
        }
        Tb = len - 1 > Tb ? len - 1 : Tb;
    }
    size_t NT = (size_t)n * Tb;
    b->T = Tb;
    b->tokens = xmalloc(NT * sizeof(int));
    b->targets = xmalloc(NT * sizeof(int));
    b->mask = xcalloc(NT * 3, sizeof(float));
    b->logp = b->mask + NT;
    b->dlogp = b->mask + 2 * NT;
    b->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        const SftExample *e = &ex[i];
        int               len = e->prompt_len + e->completion_len;
        int              *tok = b->tokens + (size_t)i * Tb, *tgt = b->targets + (size_t)i * Tb;
        for (int t = 0; t < Tb; t++) {
            int cur = t < e->prompt_len ? e->prompt[t]
                      : t < len         ? e->completion[t - e->prompt_len]
                                        : pad_id;
            int nxt = t + 1 < e->prompt_len ? e->prompt[t + 1]
                      : t + 1 < len         ? e->completion[t + 1 - e->prompt_len]
                                            : pad_id;
            tok[t] = cur;
            tgt[t] = nxt;
            /* Position t predicts token t+1: count it when that is a completion token. */
            if (t + 1 >= e->prompt_len && t + 1 < len) {
                b->mask[(size_t)i * Tb + t] = 1.0f;
                b->n_tokens++;
            }
        }
    }
    return 0;
}

static void unpack(Batch *b)
{
    free(b->tokens);
    free(b->targets);
    free(b->mask);
}

static void forward_stats(Model *m, Batch *b, int n, SftStats *st)
{
    model_forward(m, b->tokens, b->targets, b->mask, n, b->T, b->logp, NULL, NULL);
    int          n_act, V = model_config(m)->vocab_size;
    const float *lg = model_last_logits(m, &n_act);
    double       loss = 0.0;
    int          correct = 0;
    for (size_t i = 0, a = 0; i < (size_t)n * b->T; i++) {
        if (b->mask[i] == 0.0f) continue;
        loss -= b->logp[i];
        const float *row = lg + a++ * V;
        int          best = 0;
        for (int v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
        correct += best == b->targets[i];
    }
    st->loss = loss / b->n_tokens;
    st->token_acc = (double)correct / b->n_tokens;
    st->n_tokens = b->n_tokens;
    st->seq_len = b->T;
}

int sft_eval(Model *m, const SftExample *ex, int n, int T, int pad_id, SftStats *st)
{
    Batch b;
    int   rc = pack(ex, n, T, pad_id, &b);
    if (rc) return rc;
    memset(st, 0, sizeof *st);
    forward_stats(m, &b, n, st);
    unpack(&b);
    return 0;
}

int sft_step(Model *m, Optim *opt, const SftExample *ex, int n, int T, int pad_id, SftStats *st)
{
    Batch b;
    int   rc = pack(ex, n, T, pad_id, &b);
    if (rc) return rc;
    memset(st, 0, sizeof *st);
    model_zero_grad(m);
    forward_stats(m, &b, n, st);
    /* loss = -sum(mask * logp) / n_tokens. */
    for (size_t i = 0; i < (size_t)n * b.T; i++) b.dlogp[i] = -b.mask[i] / b.n_tokens;
    model_backward(m, b.dlogp, NULL, NULL);
    rc = optim_step(opt, model_params(m), model_grads(m), NULL, &st->grad_norm, &st->lr);
    if (rc) log_error("sft_step: gradient norm %g is not finite; step skipped", st->grad_norm);
    unpack(&b);
    return rc;
}

ModelConfig sft_model_config(int dim, int n_layers, int n_heads, int n_kv_heads, int hidden_dim,
                             int vocab_size)
{
    ModelConfig c =
        model_config_llama(dim, n_layers, n_heads, n_kv_heads, hidden_dim, vocab_size, 64);
    c.tie_embeddings = true;
    return c;
}
