/* bench_model: the model core against this machine's own ceilings.
 *
 * Prints, in one run: the sgemm GFLOP/s and memcpy GB/s measured here; for
 * each shape the training step (forward + backward + AdamW) in tokens/s and
 * GFLOP/s as a share of the sgemm figure, and KV-cache decoding in tokens/s
 * next to the rate the memory bandwidth allows (weight bytes per step against
 * the memcpy bandwidth). Writes the figures under "model" in the JSON file
 * given as the first argument (default build/bench.json), keeping other keys.
 *
 *   bench_model [OUT.json] [--quick]     --quick: tiny shape only */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/base/rng.h"
#include "common/nn/tensor.h"
#include "tests/bench/bench_common.h"

typedef struct {
    const char *name;
    ModelConfig cfg;
    int         B, T; /* training batch */
    int         dec_B, dec_prompt, dec_new;
    int         train_steps;
} Shape;

static json_t *bench_shape(const Shape *s, double sgemm_gflops, double memcpy_gbs)
{
    Model *m = model_new(&s->cfg);
    model_init_random(m, 1, 0.02f);
    size_t      P = model_num_params(m);
    OptimConfig oc = {.lr_peak = 1e-4f,
                      .lr_min = 1e-5f,
                      .lr_warmup_steps = 0,
                      .lr_total_steps = 1000,
                      .beta1 = 0.9f,
                      .beta2 = 0.95f,
                      .eps = 1e-8f,
                      .weight_decay = 0.1f,
                      .grad_clip = 1.0f};
    Optim      *opt = optim_new(&oc, P);
    int         N = s->B * s->T, V = s->cfg.vocab_size;
    int        *tokens = xmalloc(sizeof(int) * N), *targets = xmalloc(sizeof(int) * N);
    float      *logp = xmalloc(sizeof(float) * N), *ent = xmalloc(sizeof(float) * N);
    float      *dlogp = xmalloc(sizeof(float) * N);
    Rng         r;
    rng_seed(&r, 2);
    for (int i = 0; i < N; i++) {
        tokens[i] = (int)rng_below(&r, (uint32_t)V);
        targets[i] = (int)rng_below(&r, (uint32_t)V);
        dlogp[i] = -1.0f / N;
    }
    printf("%s: %.1fM parameters, train batch %dx%d\n", s->name, P / 1e6, s->B, s->T);
    /* One warm-up step grows the activation block; the timed steps reuse it. */
    double best = 1e30;
    for (int step = 0; step <= s->train_steps; step++) {
        double t0 = bench_now_s();
        model_zero_grad(m);
        model_forward(m, tokens, targets, NULL, s->B, s->T, logp, ent, NULL);
        model_backward(m, dlogp, NULL, NULL);
        double gn, lr;
        CHECK(optim_step(opt, model_params(m), model_grads(m), NULL, &gn, &lr) == 0);
        double dt = bench_now_s() - t0;
        if (step > 0) best = fmin(best, dt);
    }
    double flops = model_train_flops(&s->cfg, s->B, s->T);
    double gflops = flops / best / 1e9;
    double train_tps = N / best;
    printf("  train step   %8.3f s  %9.0f tokens/s  %7.1f GFLOP/s = %5.1f%% of sgemm %.1f\n", best,
           train_tps, gflops, 100.0 * gflops / sgemm_gflops, sgemm_gflops);

    /* Decode: prefill each prompt, then dec_new greedy steps for the batch. */
    int      DB = s->dec_B;
    KVCache *kv = kv_new(m, DB, s->dec_prompt + s->dec_new);
    int     *seq = xmalloc(sizeof(int) * DB * s->dec_prompt),
        *tok = xmalloc(sizeof(int) * DB * s->dec_prompt);
    int   *outs = xmalloc(sizeof(int) * DB);
    float *logits = xmalloc(sizeof(float) * (size_t)DB * V);
    for (int b = 0; b < DB; b++) {
        for (int t = 0; t < s->dec_prompt; t++) {
            seq[b * s->dec_prompt + t] = b;
            tok[b * s->dec_prompt + t] = (int)rng_below(&r, (uint32_t)V);
        }
        outs[b] = b * s->dec_prompt + s->dec_prompt - 1;
    }
    double t0 = bench_now_s();
    CHECK(model_step(m, kv, DB * s->dec_prompt, seq, tok, DB, outs, logits) == 0);
    double prefill = bench_now_s() - t0;
    for (int b = 0; b < DB; b++) {
        seq[b] = b;
        outs[b] = b;
    }
    t0 = bench_now_s();
    for (int step = 0; step < s->dec_new; step++) {
        for (int b = 0; b < DB; b++) {
            const float *row = logits + (size_t)b * V;
            int          best_id = 0;
            for (int v = 1; v < V; v++) best_id = row[v] > row[best_id] ? v : best_id;
            tok[b] = best_id;
        }
        CHECK(model_step(m, kv, DB, seq, tok, DB, outs, logits) == 0);
    }
    double dec = bench_now_s() - t0;
    double dec_tps = (double)DB * s->dec_new / dec;
    /* Each decode step reads every weight once (the embedding only as the LM
     * head when tied; the untied embedding lookup reads B rows). */
    double weight_bytes = 4.0 * (double)(P - (s->cfg.tie_embeddings ? 0 : (size_t)V * s->cfg.dim));
    double bound_steps = memcpy_gbs * 1e9 / weight_bytes;
    double steps_per_s = s->dec_new / dec;
    printf("  decode       batch %d: %8.1f tokens/s, %6.2f steps/s; bandwidth bound %6.2f "
           "steps/s (%.0f MB weights at memcpy %.1f GB/s) = %5.1f%% of bound; prefill %d x %d "
           "in %.3f s\n",
           DB, dec_tps, steps_per_s, bound_steps, weight_bytes / 1e6, memcpy_gbs,
           100.0 * steps_per_s / bound_steps, DB, s->dec_prompt, prefill);

    json_t *o =
        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "params_m", P / 1e6,
                  "train_step_s", best, "train_tokens_per_s", train_tps, "train_gflops", gflops,
                  "train_pct_sgemm", 100.0 * gflops / sgemm_gflops, "decode_tokens_per_s", dec_tps,
                  "decode_steps_per_s", steps_per_s, "decode_bound_steps_per_s", bound_steps,
                  "decode_pct_bound", 100.0 * steps_per_s / bound_steps);
    free(seq);
    free(tok);
    free(outs);
    free(logits);
    kv_free(&kv);
    free(tokens);
    free(targets);
    free(logp);
    free(ent);
    free(dlogp);
    optim_free(&opt);
    model_free(&m);
    return o;
}

int main(int argc, char **argv)
{
    const char *out = "build/bench.json";
    bool        quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [OUT.json (default build/bench.json)] [--quick (tiny shape only)]\n",
                   argv[0]);
            return 0;
        } else
            out = argv[i];
    }
    double sg = bench_sgemm_gflops();
    double bw = bench_memcpy_gbs();
    printf(
        "machine: sgemm %.1f GFLOP/s (2048^3, best of 5), memcpy %.2f GB/s (512 MiB, best of 5)\n",
        sg, bw);
    Shape shapes[] = {
        {"tiny",
         {.dim = 128,
          .n_layers = 4,
          .n_heads = 4,
          .n_kv_heads = 4,
          .hidden_dim = 512,
          .vocab_size = 64,
          .max_seq_len = 128,
          .rope_theta = 10000.0f,
          .norm_eps = 1e-5f},
         64,
         64,
         16,
         8,
         32,
         5},
        {"smollm2-135m-shape",
         {.dim = 576,
          .n_layers = 30,
          .n_heads = 9,
          .n_kv_heads = 3,
          .hidden_dim = 1536,
          .vocab_size = 49152,
          .max_seq_len = 2048,
          .rope_theta = 100000.0f,
          .norm_eps = 1e-5f,
          .tie_embeddings = true},
         8,
         256,
         8,
         32,
         64,
         2},
    };
    json_t *root = json_load_file(out, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_t *res = json_pack("{s:f, s:f}", "sgemm_gflops", sg, "memcpy_gbs", bw);
    for (size_t i = 0; i < (quick ? 1 : sizeof shapes / sizeof shapes[0]); i++)
        json_object_set_new(res, shapes[i].name, bench_shape(&shapes[i], sg, bw));
    json_object_set_new(root, "model", res);
    if (json_dump_file(root, out, JSON_INDENT(2)) != 0)
        fprintf(stderr, "bench_model: cannot write %s\n", out);
    else
        printf("wrote %s\n", out);
    json_decref(root);
    return 0;
}
