#include "tests/test_list.h"
#include "learner/sft.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/formats/tok.h"

typedef struct {
    int   *tokens, *targets;    /* (n, T) */
    float *mask, *logp, *dlogp; /* (n, T) */
    int    n_tokens;
} Batch;

static int pack(const SftExample *ex, int n, int T, int pad_id, Batch *b)
{
    size_t NT = (size_t)n * T;
    b->tokens = xmalloc(NT * sizeof(int));
    b->targets = xmalloc(NT * sizeof(int));
    b->mask = xcalloc(NT * 3, sizeof(float));
    b->logp = b->mask + NT;
    b->dlogp = b->mask + 2 * NT;
    b->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        const SftExample *e = &ex[i];
        int               len = e->prompt_len + e->completion_len;
        if (e->prompt_len < 1 || e->completion_len < 1 || len > T + 1) {
            log_error("sft: example %d: prompt %d + completion %d tokens does not fit T=%d", i,
                      e->prompt_len, e->completion_len, T);
            free(b->tokens);
            free(b->targets);
            free(b->mask);
            return ERR_RANGE;
        }
        int *tok = b->tokens + (size_t)i * T, *tgt = b->targets + (size_t)i * T;
        for (int t = 0; t < T; t++) {
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
                b->mask[(size_t)i * T + t] = 1.0f;
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

static void forward_stats(Model *m, Batch *b, int n, int T, SftStats *st)
{
    model_forward(m, b->tokens, b->targets, b->mask, n, T, b->logp, NULL, NULL);
    int          n_act, V = model_config(m)->vocab_size;
    const float *lg = model_last_logits(m, &n_act);
    double       loss = 0.0;
    int          correct = 0;
    for (size_t i = 0, a = 0; i < (size_t)n * T; i++) {
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
}

int sft_eval(Model *m, const SftExample *ex, int n, int T, int pad_id, SftStats *st)
{
    Batch b;
    int   rc = pack(ex, n, T, pad_id, &b);
    if (rc) return rc;
    memset(st, 0, sizeof *st);
    forward_stats(m, &b, n, T, st);
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
    forward_stats(m, &b, n, T, st);
    /* loss = -sum(mask * logp) / n_tokens. */
    for (size_t i = 0; i < (size_t)n * T; i++) b.dlogp[i] = -b.mask[i] / b.n_tokens;
    model_backward(m, b.dlogp, NULL, NULL);
    rc = optim_step(opt, model_params(m), model_grads(m), NULL, &st->grad_norm, &st->lr);
    if (rc) log_error("sft_step: gradient norm %g is not finite; step skipped", st->grad_norm);
    unpack(&b);
    return rc;
}

int sft_selftest(bool verbose)
{
    /* Overfit: a small model memorises 8 arithmetic facts; greedy decoding
     * then reproduces every answer exactly. */
    static const char *prompts[] = {
        "12+34=", "7+8=", "99-9=", "5-7=", "31+31=", "60-17=", "8+80=", "100-1="};
    static const char *answers[] = {"46", "15", "90", "-2", "62", "43", "88", "99"};
    enum { NX = 8, T = 12 };
    Tok *tok = tok_new(TOK_CHARSET_DEFAULT);
    CHECK(tok);
    ModelConfig c = {.dim = 64,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .hidden_dim = 128,
                     .vocab_size = tok_vocab_size(tok),
                     .max_seq_len = T + 4,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tie_embeddings = true};
    Model      *m = model_new(&c);
    model_init_random(m, 1, 0.05f);
    OptimConfig oc = {.lr_peak = 3e-3f,
                      .lr_min = 3e-4f,
                      .lr_warmup_steps = 20,
                      .lr_total_steps = 400,
                      .beta1 = 0.9f,
                      .beta2 = 0.98f,
                      .eps = 1e-8f,
                      .weight_decay = 0.0f,
                      .grad_clip = 1.0f};
    Optim      *opt = optim_new(&oc, model_num_params(m));
    int         pbuf[NX][T], cbuf[NX][T];
    SftExample  ex[NX];
    for (int i = 0; i < NX; i++) {
        int np = 0, nc = 0;
        CHECK(tok_encode(tok, prompts[i], strlen(prompts[i]), TOK_ENC_BOS, pbuf[i], T, &np) == 0);
        CHECK(tok_encode(tok, answers[i], strlen(answers[i]), TOK_ENC_EOS, cbuf[i], T, &nc) == 0);
        ex[i] = (SftExample){pbuf[i], np, cbuf[i], nc};
    }
    SftStats st = {0};
    int      fails = 0, steps = 400;
    double   first = 0.0;
    for (int s = 0; s < steps; s++) {
        CHECK(sft_step(m, opt, ex, NX, T, TOK_PAD, &st) == 0);
        if (s == 0) first = st.loss;
    }
    CHECK(sft_eval(m, ex, NX, T, TOK_PAD, &st) == 0);
    if (verbose)
        printf("  sft overfit: loss %.4f -> %.5f after %d steps, token acc %.3f\n", first, st.loss,
               steps, st.token_acc);
    if (!(st.loss < 0.01)) fails++;

    Generator *g = gen_new(m, NX, T + 4);
    const int *pp[NX];
    int        pl[NX], gt[NX * 8], gn[NX], gf[NX];
    float      l1[NX * 8], l2[NX * 8];
    for (int i = 0; i < NX; i++) {
        pp[i] = ex[i].prompt;
        pl[i] = ex[i].prompt_len;
    }
    GenConfig gc = {.sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                    .max_new = 8,
                    .stop_id = TOK_EOS};
    GenOutput out = {gt, l1, l2, gn, gf};
    Rng       rng;
    rng_seed(&rng, 3);
    CHECK(gen_run(g, &gc, NX, pp, pl, &rng, &out) == 0);
    int exact = 0;
    for (int i = 0; i < NX; i++) {
        char text[32];
        int  n_text = gn[i] - (gf[i] == GEN_FINISH_STOP);
        CHECK(tok_decode(tok, gt + i * 8, n_text, 0, text, sizeof text, NULL) == 0);
        exact += !strcmp(text, answers[i]) && gf[i] == GEN_FINISH_STOP;
        if (verbose && strcmp(text, answers[i]))
            printf("  sft overfit: %s gave '%s', want '%s'\n", prompts[i], text, answers[i]);
    }
    if (verbose) printf("  sft overfit: greedy reproduces %d/%d answers\n", exact, NX);
    if (exact != NX) fails++;
    gen_free(&g);
    optim_free(&opt);
    model_free(&m);
    tok_free(&tok);
    return fails ? 1 : 0;
}
