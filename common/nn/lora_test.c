/* lora_selftest: target parsing and config ranges, the parameter count of a
 * worked example, the gradient of every adapter tensor through the whole
 * model against finite differences (MHA and GQA, every target and a subset,
 * a temperature, a value head), a frozen base (no gradient block, untouched
 * by the backward pass), fresh adapters leaving the model unchanged, and
 * merged weights (W + scale B A) giving the adapter forward's logits, in the
 * training forward and in the KV-cache decode an actor runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

static void parse_checks(void)
{
    unsigned t = 0;
    char     why[160], out[64];
    EXPECT(lora_parse_targets("q,v", &t, why, sizeof why) == 0 &&
               t == ((1u << LORA_Q) | (1u << LORA_V)),
           "targets 'q,v' parsed to 0x%x", t);
    EXPECT(lora_parse_targets("all", &t, why, sizeof why) == 0 && t == LORA_TARGETS_ALL,
           "targets 'all' parsed to 0x%x", t);
    EXPECT(lora_parse_targets("attn,down", &t, why, sizeof why) == 0 &&
               t == (LORA_TARGETS_ATTN | (1u << LORA_DOWN)),
           "targets 'attn,down' parsed to 0x%x", t);
    lora_format_targets(LORA_TARGETS_MLP | (1u << LORA_K), out, sizeof out);
    EXPECT(!strcmp(out, "k,gate,up,down"), "formatted targets '%s', expected 'k,gate,up,down'",
           out);
    int rc = lora_parse_targets("q,bogus", &t, why, sizeof why);
    EXPECT(rc == ERR_RANGE && strstr(why, "'bogus'"), "bad target: rc %d why '%s'", rc, why);
    EXPECT(lora_parse_targets("", &t, why, sizeof why) == ERR_RANGE, "empty targets accepted");
    EXPECT(lora_parse_targets("q,,v", &t, why, sizeof why) == ERR_RANGE, "'q,,v' accepted");

    ModelConfig mc = model_config_llama(8, 2, 2, 1, 12, 11, 16);
    LoraConfig  lc = {.rank = 2, .alpha = 4.0f, .targets = (1u << LORA_Q) | (1u << LORA_K)};
    EXPECT(lora_config_validate(&lc, &mc, why, sizeof why) == 0, "valid config refused: %s", why);
    /* q: A (2,8) + B (8,2) = 32; k (KD = 1 head of 4): A (2,8) + B (4,2) = 24; two layers. */
    size_t n = lora_config_num_params(&lc, &mc);
    EXPECT(n == 2 * (32 + 24), "parameters %zu, expected %d", n, 2 * (32 + 24));
    LoraConfig bad = lc;
    bad.rank = 0;
    EXPECT(lora_config_validate(&bad, &mc, why, sizeof why) == ERR_RANGE, "rank 0 accepted");
    bad.rank = 5; /* k's output side is 4 */
    rc = lora_config_validate(&bad, &mc, why, sizeof why);
    EXPECT(rc == ERR_RANGE && strstr(why, "k projection"), "rank 5 on k (4 x 8): rc %d why '%s'",
           rc, why);
    bad = lc;
    bad.alpha = NAN;
    EXPECT(lora_config_validate(&bad, &mc, why, sizeof why) == ERR_RANGE, "alpha NaN accepted");
    bad.alpha = 1.0f;
    bad.targets = 0;
    EXPECT(lora_config_validate(&bad, &mc, why, sizeof why) == ERR_RANGE, "no targets accepted");
}

typedef struct {
    Model *m;
    int    B, T;
    int   *tokens, *targets;
    float *mask, *wl, *we, *wv; /* (B,T) loss weights on logp, entropy, value */
    float *logp, *ent, *val;
} Case;

static double case_loss(void *p)
{
    Case  *g = p;
    bool   vh = model_config(g->m)->has_value_head;
    double s = 0.0;
    model_forward(g->m, g->tokens, g->targets, g->mask, g->B, g->T, g->logp, g->ent,
                  vh ? g->val : NULL);
    for (int n = 0; n < g->B * g->T; n++) {
        s += (double)g->wl[n] * g->logp[n] + (double)g->we[n] * g->ent[n];
        if (vh) s += (double)g->wv[n] * g->val[n];
    }
    return s;
}

static void case_init(Case *g, Model *m, Rng *r, int B, int T)
{
    int N = B * T, V = model_config(m)->vocab_size;
    *g = (Case){.m = m, .B = B, .T = T};
    g->tokens = xmalloc((size_t)N * sizeof(int));
    g->targets = xmalloc((size_t)N * sizeof(int));
    g->mask = xcalloc((size_t)N * 7, sizeof(float));
    g->wl = g->mask + N;
    g->we = g->mask + 2 * N;
    g->wv = g->mask + 3 * N;
    g->logp = g->mask + 4 * N;
    g->ent = g->mask + 5 * N;
    g->val = g->mask + 6 * N;
    for (int n = 0; n < N; n++) {
        g->tokens[n] = (int)rng_below(r, (uint32_t)V);
        g->targets[n] = (int)rng_below(r, (uint32_t)V);
        g->mask[n] = n % 5 == 3 ? 0.0f : 1.0f;
        g->wl[n] = rng_normal(r);
        g->we[n] = rng_normal(r);
        g->wv[n] = rng_normal(r);
    }
}

static void case_free(Case *g)
{
    free(g->tokens);
    free(g->targets);
    free(g->mask);
}

/* A model of cfg with random weights and adapters of lc whose B is random
 * too (a fresh B is zero, and then A's gradient is zero as well). */
static Model *adapted_model(const ModelConfig *cfg, const LoraConfig *lc, uint64_t seed)
{
    Model *m = model_new(cfg);
    model_init_random(m, seed, 0.3f);
    Lora *lo = lora_new(lc, cfg);
    lora_init_random(lo, seed + 1);
    Rng r;
    rng_seed(&r, seed + 2);
    for (int i = 0; i < lora_num_tensors(lo); i++) {
        ModelTensor t;
        lora_tensor(lo, i, &t);
        if (strstr(t.name, "lora_B"))
            for (size_t k = 0; k < t.numel; k++) t.data[k] = 0.3f * rng_normal(&r);
    }
    model_attach_lora(m, &lo);
    CHECK(lo == NULL);
    return m;
}

/* Each adapter tensor's gradient along a random direction against central
 * differences of the loss through the whole model; the base stays frozen. */
static void grad_check(const ModelConfig *cfg, const LoraConfig *lc, float temperature,
                       const char *label, bool verbose)
{
    Model *m = adapted_model(cfg, lc, 21);
    model_set_temperature(m, temperature);
    EXPECT(model_grads(m) == NULL, "%s: the base still has a gradient block", label);
    size_t np = model_num_params(m);
    float *base = xmalloc(np * sizeof(float));
    memcpy(base, model_params(m), np * sizeof(float));
    Rng r;
    rng_seed(&r, 7);
    Case g;
    case_init(&g, m, &r, 2, 6);
    model_zero_grad(m);
    case_loss(&g);
    model_backward(m, g.wl, g.we, cfg->has_value_head ? g.wv : NULL);

    Lora  *lo = model_lora(m);
    double worst = 0.0;
    int    nt = lora_num_tensors(lo);
    float *dir = xmalloc(lora_num_params(lo) * sizeof(float));
    for (int i = 0; i < nt; i++) {
        ModelTensor t;
        lora_tensor(lo, i, &t);
        double num,
            analytic = numcheck_slope(case_loss, &g, t.data, t.grad, t.numel, dir, &r, 1e-3f, &num);
        /* The loss is a float forward: central differences at h 1e-3 carry
         * ~1e-3 of rounding in the numeric slope (1.85e-3 worst here on an
         * AVX2 machine; other kernels round differently), while a wrong
         * gradient term is off by O(1): 5e-3 tells the two apart. */
        double err = numcheck_rel_diff(analytic, num, 1.0);
        worst = fmax(worst, err);
        EXPECT(err <= 5e-3, "lora grad check (%s): %s analytic %.6g numeric %.6g err %.3g > 5e-3",
               label, t.name, analytic, num, err);
    }
    EXPECT(!memcmp(base, model_params(m), np * sizeof(float)),
           "%s: the frozen base changed during forward/backward", label);
    EXPECT(model_train_params(m) == lora_params(lo) &&
               model_num_train_params(m) == lora_num_params(lo),
           "%s: the trained block is not the adapters'", label);
    if (verbose)
        printf("  lora grad check %-22s %3d tensors, max rel err %.2e (tol 5e-3)\n", label, nt,
               worst);
    free(dir);
    free(base);
    case_free(&g);
    model_free(&m);
}

/* Merged weights give the adapter forward's log-probs and logits, in the
 * training forward and in model_step; fresh adapters change nothing. */
static void merge_check(const ModelConfig *cfg, const LoraConfig *lc, bool verbose)
{
    Model *m = adapted_model(cfg, lc, 31);
    Model *merged = model_new(cfg);
    model_copy_params(merged, m);
    lora_merge(model_lora(m), merged);
    Rng r;
    rng_seed(&r, 3);
    enum { B = 2, T = 7 };
    Case g;
    case_init(&g, m, &r, B, T);
    for (int n = 0; n < B * T; n++) g.mask[n] = 1.0f;
    float lp_merged[B * T];
    model_forward(merged, g.tokens, g.targets, g.mask, B, T, lp_merged, NULL, NULL);
    model_forward(m, g.tokens, g.targets, g.mask, B, T, g.logp, NULL, NULL);
    int          M, V = cfg->vocab_size;
    const float *la = model_last_logits(m, &M);
    const float *lm = model_last_logits(merged, NULL);
    double       worst_logit = 0.0, worst_lp = 0.0, base_gap = 0.0;
    for (size_t i = 0; i < (size_t)M * V; i++) worst_logit = fmax(worst_logit, fabs(la[i] - lm[i]));
    for (int n = 0; n < B * T; n++) worst_lp = fmax(worst_lp, fabs(g.logp[n] - lp_merged[n]));
    EXPECT(worst_logit <= 1e-5 && worst_lp <= 1e-5,
           "merged forward: max |logit diff| %.3g, |logp diff| %.3g > 1e-5", worst_logit, worst_lp);

    /* The actor's path: decode of the merged model, one sequence. */
    KVCache *kv = kv_new(merged, 1, T);
    int      seq[T] = {0}, rows[T];
    float   *lg = xmalloc((size_t)T * V * sizeof(float));
    for (int t = 0; t < T; t++) rows[t] = t;
    CHECK(model_step(merged, kv, T, seq, g.tokens, T, rows, lg) == 0);
    double worst_step = 0.0;
    for (size_t i = 0; i < (size_t)T * V; i++) worst_step = fmax(worst_step, fabs(lg[i] - la[i]));
    EXPECT(worst_step <= 1e-4, "merged decode vs adapter forward: max |logit diff| %.3g > 1e-4",
           worst_step);

    /* A base model (no merge) differs: the adapters did something. */
    Model *plain = model_new(cfg);
    model_copy_params(plain, m);
    model_forward(plain, g.tokens, g.targets, g.mask, B, T, lp_merged, NULL, NULL);
    for (int n = 0; n < B * T; n++) base_gap = fmax(base_gap, fabs(g.logp[n] - lp_merged[n]));
    EXPECT(base_gap > 1e-3, "adapters changed the log-probs by only %.3g", base_gap);

    /* Fresh adapters (B zero) leave the model exactly as it was. */
    Lora *fresh = lora_new(lc, cfg);
    lora_init_random(fresh, 5);
    model_attach_lora(plain, &fresh);
    model_forward(plain, g.tokens, g.targets, g.mask, B, T, g.logp, NULL, NULL);
    Model *plain2 = model_new(cfg);
    model_copy_params(plain2, m);
    float lp_plain[B * T];
    model_forward(plain2, g.tokens, g.targets, g.mask, B, T, lp_plain, NULL, NULL);
    EXPECT(!memcmp(g.logp, lp_plain, sizeof lp_plain),
           "fresh adapters changed the model's log-probs");
    if (verbose)
        printf("  lora merge: |logit diff| forward %.2e, decode %.2e (tol 1e-5, 1e-4); "
               "adapters move logp by %.3g\n",
               worst_logit, worst_step, base_gap);
    free(lg);
    kv_free(&kv);
    case_free(&g);
    model_free(&plain2);
    model_free(&plain);
    model_free(&merged);
    model_free(&m);
}

/* Training memory: the base keeps no gradient block and the adapters' own
 * gradient block is what model_memory reports. */
static void memory_check(void)
{
    ModelConfig mc = model_config_llama(16, 2, 4, 2, 24, 13, 8);
    LoraConfig  lc = {.rank = 2, .alpha = 2.0f, .targets = LORA_TARGETS_ALL};
    Model      *full = model_new(&mc);
    Model      *m = adapted_model(&mc, &lc, 41);
    ModelMemory a, b;
    model_memory(full, &a);
    model_memory(m, &b);
    size_t P = model_num_params(full) * sizeof(float), A = lora_num_params(model_lora(m)) * 4;
    EXPECT(a.params_bytes == P && a.grads_bytes == P && a.adapter_bytes == 0,
           "full fine-tuning memory: params %zu grads %zu adapters %zu, expected %zu %zu 0",
           a.params_bytes, a.grads_bytes, a.adapter_bytes, P, P);
    EXPECT(b.params_bytes == P && b.grads_bytes == A && b.adapter_bytes == A,
           "adapter memory: params %zu grads %zu adapters %zu, expected %zu %zu %zu",
           b.params_bytes, b.grads_bytes, b.adapter_bytes, P, A, A);
    model_free(&full);
    model_free(&m);
}

int lora_selftest(bool verbose)
{
    expect_begin("lora", verbose);
    parse_checks();
    ModelConfig mha = model_config_llama(16, 2, 4, 4, 24, 13, 16);
    ModelConfig gqa = model_config_llama(16, 2, 4, 2, 24, 13, 16);
    ModelConfig vh = gqa;
    vh.has_value_head = true;
    vh.tie_embeddings = true;
    LoraConfig all = {.rank = 3, .alpha = 6.0f, .targets = LORA_TARGETS_ALL};
    LoraConfig some = {.rank = 2, .alpha = 1.0f, .targets = (1u << LORA_V) | (1u << LORA_DOWN)};
    grad_check(&mha, &all, 1.0f, "MHA all targets", verbose);
    grad_check(&gqa, &all, 0.7f, "GQA all, T 0.7", verbose);
    grad_check(&gqa, &some, 1.0f, "GQA v,down", verbose);
    grad_check(&vh, &all, 1.0f, "value head, tied", verbose);
    merge_check(&gqa, &all, verbose);
    merge_check(&mha, &some, verbose);
    memory_check();
    return expect_end();
}
