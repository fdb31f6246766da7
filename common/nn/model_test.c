/* model_selftest: config validation, the gradient of every tensor against
 * finite differences (tied and untied embeddings, value head, MHA, GQA, MQA,
 * a temperature), the KV-cache path against the full forward, and the
 * temperature of the reported log-probabilities. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/rng.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/numcheck.h"
#include "tests/test_list.h"

typedef struct {
    Model *m;
    int    B, T;
    int   *tokens, *targets;
    float *mask, *wl, *we, *wv; /* (B,T) loss weights on logp, entropy, value */
    float *logp, *ent, *val;
} GradCase;

/* loss = sum(wl*logp + we*entropy + wv*value), in double. */
static double case_loss(void *p)
{
    GradCase *g = p;
    Model    *m = g->m;
    bool      vh = model_config(m)->has_value_head;
    model_forward(m, g->tokens, g->targets, g->mask, g->B, g->T, g->logp, g->ent,
                  vh ? g->val : NULL);
    double s = 0.0;
    for (int n = 0; n < g->B * g->T; n++) {
        s += (double)g->wl[n] * g->logp[n] + (double)g->we[n] * g->ent[n];
        if (vh) s += (double)g->wv[n] * g->val[n];
    }
    return s;
}

/* Per tensor, compares the analytic directional derivative g.d along a
 * random direction d with (L(p + h d) - L(p - h d)) / 2h. */
static void grad_check(const ModelConfig *cfg, const char *label, float temperature, bool verbose)
{
    Model *m = model_new(cfg);
    model_init_random(m, 11, 0.3f);
    model_set_temperature(m, temperature);
    Rng r;
    rng_seed(&r, 5);
    GradCase g = {.m = m, .B = 2, .T = 6};
    int      N = g.B * g.T;
    g.tokens = xmalloc(N * sizeof(int));
    g.targets = xmalloc(N * sizeof(int));
    float *f = xcalloc((size_t)N * 7, sizeof(float));
    g.mask = f;
    g.wl = f + N;
    g.we = f + 2 * N;
    g.wv = f + 3 * N;
    g.logp = f + 4 * N;
    g.ent = f + 5 * N;
    g.val = f + 6 * N;
    for (int n = 0; n < N; n++) {
        g.tokens[n] = (int)rng_below(&r, (uint32_t)cfg->vocab_size);
        g.targets[n] = (int)rng_below(&r, (uint32_t)cfg->vocab_size);
        g.mask[n] = (n % 5 == 3) ? 0.0f : 1.0f; /* a few positions masked out */
        g.wl[n] = rng_normal(&r);
        g.we[n] = rng_normal(&r);
        g.wv[n] = rng_normal(&r);
    }
    model_zero_grad(m);
    case_loss(&g);
    model_backward(m, g.wl, g.we, cfg->has_value_head ? g.wv : NULL);

    double worst = 0.0;
    int    n_tensors = model_num_tensors(m);
    float *dir = xmalloc(model_num_params(m) * sizeof(float));
    for (int t = 0; t < n_tensors; t++) {
        ModelTensor ti;
        model_tensor(m, t, &ti);
        double num, analytic = numcheck_slope(case_loss, &g, ti.data, ti.grad, ti.numel, dir, &r,
                                              1e-3f, &num);
        double err = numcheck_rel_diff(analytic, num, 1.0);
        worst = fmax(worst, err);
        EXPECT(err <= 2e-3, "grad check (%s): %s analytic %.6g numeric %.6g err %.3g > tol 2e-3",
               label, ti.name, analytic, num, err);
    }
    if (verbose)
        printf("  grad check %-28s %3d tensors, max rel err %.2e (tol 2e-3)\n", label, n_tensors,
               worst);
    free(dir);
    free(f);
    free(g.tokens);
    free(g.targets);
    model_free(&m);
}

/* Rounds every matrix of m to type t in place (norm gains stay). */
static void round_matrices(Model *m, KernType t)
{
    for (int i = 0; i < model_num_tensors(m); i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        if (mt.ndim != 2) continue;
        for (size_t k = 0; k < mt.numel; k++) mt.data[k] = kern_round(t, mt.data[k]);
    }
}

/* Logits from the KV-cache path equal the full forward's on a batch of
 * sequences of different lengths, fed as a mix of prefills and decode steps.
 * With t BF16 or F16 the weights are first rounded to t, so the half-
 * precision decode (packed, fused matrices) and the fp32 forward multiply
 * the same numbers and differ only in the order of the sums. */
static void kv_check(const ModelConfig *cfg, KernType wt, bool verbose)
{
    Model *m = model_new(cfg);
    model_init_random(m, 3, 0.3f);
    if (wt != KERN_F32) {
        round_matrices(m, wt);
        CHECK(model_set_decode_type(m, wt) == 0);
    }
    Rng r;
    rng_seed(&r, 9);
    enum { B = 3, T = 9 };
    int   lens[B] = {5, 9, 7}, tokens[B * T], targets[B * T] = {0};
    float mask[B * T];
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            tokens[b * T + t] = (int)rng_below(&r, (uint32_t)cfg->vocab_size);
            mask[b * T + t] = t < lens[b] ? 1.0f : 0.0f;
        }
    }
    model_forward(m, tokens, targets, mask, B, T, NULL, NULL, NULL);
    int          n_act;
    const float *full = model_last_logits(m, &n_act);
    int          V = cfg->vocab_size, row_of[B][T];
    for (int i = 0, n = 0; n < B * T; n++)
        if (mask[n] != 0.0f) row_of[n / T][n % T] = i++;
    double maxref = 0.0;
    for (size_t i = 0; i < (size_t)n_act * V; i++) maxref = fmax(maxref, fabs(full[i]));

    KVCache *kv = kv_new(m, B, T);
    float   *lg = xmalloc((size_t)B * T * V * sizeof(float));
    double   worst = 0.0;
    int      done[B] = {0};
    /* Prefill: 3 tokens of seq 0, then 2 of seq 1 and 4 of seq 2 in one call. */
    int seqs[16], toks[16], outs[16], n = 0;
    int plan[B] = {3, 2, 4};
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < plan[b]; i++) {
            seqs[n] = b;
            toks[n] = tokens[b * T + done[b] + i];
            outs[n] = n;
            n++;
        }
        if (b == 0) {
            CHECK(model_step(m, kv, n, seqs, toks, n, outs, lg) == 0);
            for (int i = 0; i < n; i++) {
                const float *ref = full + (size_t)row_of[0][i] * V;
                for (int v = 0; v < V; v++) worst = fmax(worst, fabs(lg[i * V + v] - ref[v]));
            }
            done[0] = n;
            n = 0;
        }
    }
    CHECK(model_step(m, kv, n, seqs, toks, n, outs, lg) == 0);
    for (int i = 0; i < n; i++) {
        int          b = seqs[i], t = done[b]++;
        const float *ref = full + (size_t)row_of[b][t] * V;
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(lg[i * V + v] - ref[v]));
    }
    /* Decode: one row per unfinished sequence until all reach their length. */
    for (;;) {
        n = 0;
        for (int b = 0; b < B; b++) {
            if (done[b] >= lens[b]) continue;
            seqs[n] = b;
            toks[n] = tokens[b * T + done[b]];
            outs[n] = n;
            n++;
        }
        if (!n) break;
        CHECK(model_step(m, kv, n, seqs, toks, n, outs, lg) == 0);
        for (int i = 0; i < n; i++) {
            int          b = seqs[i], t = done[b]++;
            const float *ref = full + (size_t)row_of[b][t] * V;
            for (int v = 0; v < V; v++) worst = fmax(worst, fabs(lg[i * V + v] - ref[v]));
        }
    }
    for (int b = 0; b < B; b++)
        EXPECT(kv_len(kv, b) == lens[b], "kv_len of seq %d is %d after decoding, expected %d", b,
               kv_len(kv, b), lens[b]);
    /* A bad token id and an overlong sequence are refused without appending. */
    int bad = V, s0 = 0, rc = model_step(m, kv, 1, &s0, &bad, 0, NULL, NULL);
    EXPECT(rc == ERR_RANGE, "model_step with token id %d (V %d) returned %d, expected ERR_RANGE",
           bad, V, rc);
    int s1 = 1, tk = 0;
    rc = model_step(m, kv, 1, &s1, &tk, 0, NULL, NULL); /* seq 1 is full */
    EXPECT(rc == ERR_RANGE, "model_step past max_len returned %d, expected ERR_RANGE", rc);
    EXPECT(kv_len(kv, 0) == lens[0], "kv_len of seq 0 is %d after a refused step, expected %d",
           kv_len(kv, 0), lens[0]);
    double rel = worst / fmax(maxref, 1e-30);
    if (verbose)
        printf("  kv cache (%s weights) vs full forward: max rel diff %.2e (tol 1e-5)\n",
               kern_type_names[wt], rel);
    EXPECT(rel <= 1e-5, "kv cache (%s weights) vs full forward: rel diff %.3g > 1e-5",
           kern_type_names[wt], rel);
    free(lg);
    kv_free(&kv);
    model_free(&m);
}

/* Decoding the same fp32 model with its matrices in BF16 and F16: logits
 * near the fp32 decode's and the same greedy continuation; a weight F16
 * cannot hold is refused and the model keeps decoding in fp32. Per matrix
 * the rounding moves an output by at most u_h S (kern.h); through the
 * layers the largest logit difference measured about 6 u_h of the largest
 * logit on this model, and the check allows 16 u_h. */
static void half_vs_fp32_check(const ModelConfig *cfg, bool verbose)
{
    enum { P = 6, NEW = 8 };
    Model *m = model_new(cfg);
    model_init_random(m, 21, 0.3f);
    int    V = cfg->vocab_size, prompt[P] = {1, 5, 2, 7, 3, 4};
    float *lg[3];
    int    greedy[3][NEW];
    for (KernType t = KERN_F32; t <= KERN_F16; t++) {
        CHECK(model_set_decode_type(m, t) == 0);
        EXPECT(model_decode_type(m) == t, "decode type %d after setting %d", model_decode_type(m),
               t);
        lg[t] = xmalloc(sizeof(float) * (size_t)V * (P + NEW));
        KVCache *kv = kv_new(m, 1, P + NEW);
        int      seq[P] = {0}, outs[P] = {0, 1, 2, 3, 4, 5};
        CHECK(model_step(m, kv, P, seq, prompt, P, outs, lg[t]) == 0);
        for (int k = 0; k < NEW; k++) {
            const float *row = lg[t] + (size_t)(P - 1 + k) * V;
            int          best = 0;
            for (int v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
            greedy[t][k] = best;
            int zero = 0, out = 0;
            CHECK(model_step(m, kv, 1, &zero, &best, 1, &out, lg[t] + (size_t)(P + k) * V) == 0);
        }
        kv_free(&kv);
    }
    for (KernType t = KERN_BF16; t <= KERN_F16; t++) {
        double worst = 0, maxref = 0, uh = t == KERN_BF16 ? 0x1p-8 : 0x1p-11;
        for (size_t i = 0; i < (size_t)V * (P + NEW - 1); i++) {
            worst = fmax(worst, fabs(lg[t][i] - lg[KERN_F32][i]));
            maxref = fmax(maxref, fabs(lg[KERN_F32][i]));
        }
        int agree = 0;
        while (agree < NEW && greedy[t][agree] == greedy[KERN_F32][agree]) agree++;
        double rel = worst / maxref;
        if (verbose)
            printf("  %s decode vs fp32 decode: max logit diff %.3g of max |logit| %.3g (rel "
                   "%.2e, tol %.2e); greedy agrees on %d of %d tokens\n",
                   kern_type_names[t], worst, maxref, rel, 16 * uh, agree, NEW);
        EXPECT(rel <= 16 * uh, "%s decode vs fp32: rel logit diff %.3g > %.3g", kern_type_names[t],
               rel, 16 * uh);
        EXPECT(agree == NEW, "%s decode: greedy continuation departs from fp32's at token %d",
               kern_type_names[t], agree);
    }
    for (int t = 0; t < 3; t++) free(lg[t]);
    /* 1e5 does not fit F16: refused, and decoding falls back to fp32. */
    ModelTensor up;
    CHECK(model_find_tensor(m, "model.layers.1.mlp.up_proj.weight", &up) == 0);
    up.data[3] = 1e5f;
    fileio_capture_begin();
    int   rc = model_set_decode_type(m, KERN_F16);
    char *log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_RANGE && strstr(log, "does not fit fp16"),
           "a weight of 1e5 in F16: returned %d, log '%s'", rc, log);
    free(log);
    EXPECT(model_decode_type(m) == KERN_F32, "after a refused F16 copy the decode type is %d",
           model_decode_type(m));
    model_free(&m);
}

/* A sequence longer than attention's chunk of positions (256): prefilled in
 * one step, every row's logits match the full forward's. */
static void long_check(const ModelConfig *cfg, KernType wt, bool verbose)
{
    enum { T = 300 };
    Model *m = model_new(cfg);
    model_init_random(m, 4, 0.3f);
    if (wt != KERN_F32) {
        round_matrices(m, wt);
        CHECK(model_set_decode_type(m, wt) == 0);
    }
    int  V = cfg->vocab_size, *tokens = xmalloc(sizeof(int) * T), *seq = xcalloc(T, sizeof(int));
    int *targets = xcalloc(T, sizeof(int)), *outs = xmalloc(sizeof(int) * T);
    for (int i = 0; i < T; i++) {
        tokens[i] = (i * 7 + 3) % V;
        outs[i] = i;
    }
    model_forward(m, tokens, targets, NULL, 1, T, NULL, NULL, NULL);
    const float *full = model_last_logits(m, NULL);
    float       *lg = xmalloc(sizeof(float) * (size_t)T * V);
    KVCache     *kv = kv_new(m, 1, T);
    CHECK(model_step(m, kv, T, seq, tokens, T, outs, lg) == 0);
    double worst = 0, maxref = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        worst = fmax(worst, fabs(lg[i] - full[i]));
        maxref = fmax(maxref, fabs(full[i]));
    }
    if (verbose)
        printf("  %d positions (%s weights): kv cache vs full forward max rel diff %.2e (tol "
               "1e-5)\n",
               T, kern_type_names[wt], worst / maxref);
    EXPECT(worst / maxref <= 1e-5, "%d positions (%s weights): rel diff %.3g > 1e-5", T,
           kern_type_names[wt], worst / maxref);
    kv_free(&kv);
    free(lg);
    free(tokens);
    free(seq);
    free(targets);
    free(outs);
    model_free(&m);
}

/* model_score over a prefix shared by tails of different lengths (one
 * empty, one crossing key tiles, the prefix ending inside a tile) equals
 * model_forward's value at each sequence's last token, one sequence at a
 * time; scoring the tails together equals scoring each alone; a bad id or
 * an overlong tail is refused. */
static void score_check(const ModelConfig *base, bool verbose)
{
    enum { P = 19, S = 4, W = 30 };
    ModelConfig cfg = *base;
    cfg.has_value_head = true;
    if (cfg.max_seq_len < P + W) cfg.max_seq_len = P + W;
    Model *m = model_new(&cfg);
    model_init_random(m, 11, 0.3f);
    int lens[S] = {7, 0, 30, 1}, V = cfg.vocab_size, prefix[P], tails[S][W];
    Rng r;
    rng_seed(&r, 5);
    for (int t = 0; t < P; t++) prefix[t] = (int)rng_below(&r, (uint32_t)V);
    for (int i = 0; i < S; i++)
        for (int t = 0; t < W; t++) tails[i][t] = (int)rng_below(&r, (uint32_t)V);
    const int *tp[S] = {tails[0], tails[1], tails[2], tails[3]};
    KVCache   *kv = kv_new_once(m, S, P + W);
    float      got[S], alone[S];
    CHECK(model_score(m, kv, prefix, P, S, tp, lens, got) == 0);
    double worst = 0, worst_alone = 0;
    for (int i = 0; i < S; i++) {
        int   T = P + lens[i], seq[P + W], tg[P + W] = {0};
        float mask[P + W] = {0}, value[P + W];
        memcpy(seq, prefix, sizeof prefix);
        memcpy(seq + P, tails[i], sizeof(int) * (size_t)lens[i]);
        model_forward(m, seq, tg, mask, 1, T, NULL, NULL, value);
        worst = fmax(worst, fabs(got[i] - value[T - 1]) / fmax(fabs(value[T - 1]), 1.0));
        CHECK(model_score(m, kv, prefix, P, 1, &tp[i], &lens[i], &alone[i]) == 0);
        worst_alone = fmax(worst_alone, fabs(got[i] - alone[i]) / fmax(fabs(alone[i]), 1.0));
    }
    if (verbose)
        printf("  score of %d tails after a shared prefix vs full forward: max rel diff %.2e (tol "
               "1e-5); together vs alone %.2e (tol 1e-5)\n",
               S, worst, worst_alone);
    EXPECT(worst <= 1e-5, "model_score vs model_forward's value: rel diff %.3g > 1e-5", worst);
    EXPECT(worst_alone <= 1e-5, "model_score of tails together vs alone: rel diff %.3g > 1e-5",
           worst_alone);
    int bad_lens[S] = {7, 0, 30, 1};
    int keep = tails[2][29];
    tails[2][29] = V;
    EXPECT(model_score(m, kv, prefix, P, S, tp, bad_lens, got) == ERR_RANGE,
           "model_score with id %d (V %d) in a tail: expected ERR_RANGE", V, V);
    tails[2][29] = keep;
    KVCache *small = kv_new_once(m, S, P + 29);
    EXPECT(model_score(m, small, prefix, P, S, tp, bad_lens, got) == ERR_RANGE,
           "model_score of %d tokens with room for %d: expected ERR_RANGE", P + 30, P + 29);
    /* The refusals left nothing behind: the same call scores the same. */
    CHECK(model_score(m, kv, prefix, P, S, tp, lens, alone) == 0);
    for (int i = 0; i < S; i++)
        EXPECT(alone[i] == got[i], "model_score after refusals: seq %d %.9g, before %.9g", i,
               alone[i], got[i]);
    kv_free(&small);
    kv_free(&kv);
    model_free(&m);
}

/* At temperature T the reported log-probs are log softmax(raw logits / T). */
static void temperature_check(const ModelConfig *cfg, bool verbose)
{
    Model *m = model_new(cfg);
    model_init_random(m, 8, 0.5f);
    int    tokens[6] = {1, 4, 2, 7, 3, 5}, targets[6] = {4, 2, 7, 3, 5, 0}, V = cfg->vocab_size;
    float  lp[6], lpT[6];
    float *raw = xmalloc(sizeof(float) * 6 * V);
    model_forward(m, tokens, targets, NULL, 1, 6, lp, NULL, NULL);
    memcpy(raw, model_last_logits(m, NULL), sizeof(float) * 6 * V);
    model_set_temperature(m, 0.5f);
    model_forward(m, tokens, targets, NULL, 1, 6, lpT, NULL, NULL);
    double worst = 0.0;
    for (int t = 0; t < 6; t++) {
        double mx = -1e30, sum = 0.0;
        for (int v = 0; v < V; v++) mx = fmax(mx, raw[t * V + v] / 0.5);
        for (int v = 0; v < V; v++) sum += exp(raw[t * V + v] / 0.5 - mx);
        double want = raw[t * V + targets[t]] / 0.5 - mx - log(sum);
        worst = fmax(worst, fabs(want - lpT[t]));
    }
    if (verbose)
        printf("  temperature 0.5: logp vs log softmax(raw/T) max diff %.2e (tol 1e-5)\n", worst);
    EXPECT(worst <= 1e-5, "temperature 0.5: logp vs log softmax(raw/T) max diff %.3g > 1e-5",
           worst);
    free(raw);
    model_free(&m);
}

int model_selftest(bool verbose)
{
    ModelConfig base = fixture_model_config(16, 2, 4, 2, 24, 13, 16);
    char        why[160];
    ModelConfig bad = base;
    bad.n_kv_heads = 3;
    EXPECT(model_config_validate(&bad, why, sizeof why) == ERR_RANGE,
           "n_heads 4 with n_kv_heads 3 accepted, expected ERR_RANGE");
    bad = base;
    bad.dim = 0;
    EXPECT(model_config_validate(&bad, why, sizeof why) == ERR_RANGE,
           "dim 0 accepted, expected ERR_RANGE");

    ModelConfig c = base;
    c.tie_embeddings = true;
    grad_check(&c, "tied, no value head", 1.0f, verbose);
    grad_check(&c, "tied, temperature 0.7", 0.7f, verbose);
    c.tie_embeddings = false;
    c.has_value_head = true;
    grad_check(&c, "untied, value head", 1.0f, verbose);
    c.tie_embeddings = true;
    c.n_kv_heads = 4;
    grad_check(&c, "tied, value head, MHA", 1.0f, verbose);
    c.has_value_head = false;
    c.tie_embeddings = false;
    c.n_kv_heads = 1;
    grad_check(&c, "untied, MQA", 1.0f, verbose);

    for (KernType t = KERN_F32; t <= KERN_F16; t++) kv_check(&base, t, verbose);
    temperature_check(&base, verbose);
    c = base;
    c.tie_embeddings = true;
    c.dim = 32;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    for (KernType t = KERN_F32; t <= KERN_F16; t++) kv_check(&c, t, verbose);
    /* Shapes that are not multiples of the kernels' blocks (C 40, KD 20, H
     * 75, V 37). */
    ModelConfig odd = fixture_model_config(40, 2, 4, 2, 75, 37, 320);
    for (KernType t = KERN_F32; t <= KERN_F16; t++) kv_check(&odd, t, verbose);
    half_vs_fp32_check(&odd, verbose);
    for (KernType t = KERN_F32; t <= KERN_F16; t++) long_check(&odd, t, verbose);
    score_check(&odd, verbose);
    score_check(&base, verbose);
    return expect_end();
}
