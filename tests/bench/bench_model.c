/* bench_model: the model core against this machine's own ceilings.
 *
 * Prints, in one run: the sgemm GFLOP/s, memcpy GB/s and read-only
 * streaming GB/s measured here; for each shape the training step (forward +
 * backward + AdamW) in tokens/s and GFLOP/s as a share of the sgemm figure,
 * and KV-cache decoding with fp32 and bf16 weights in tokens/s next to the
 * rate the read bandwidth allows (weight bytes per step against the read
 * rate). Writes the figures under "model" in the JSON file
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
#include "common/nn/kern.h"
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

static json_t *bench_shape(const Shape *s, double sgemm_gflops, double read_gbs)
{
    Model *m = model_new(&s->cfg);
    model_init_random(m, 1, 0.02f);
    size_t      P = model_num_params(m);
    OptimConfig oc = fixture_optim_config(1e-4f, 1e-5f, 0, 1000);
    oc.weight_decay = 0.1f;
    oc.grad_clip = 1.0f;
    int  N = s->B * s->T, V = s->cfg.vocab_size, DB = s->dec_B;
    int *tokens = xmalloc(sizeof(int) * N), *targets = xmalloc(sizeof(int) * N);
    int *prompts = xmalloc(sizeof(int) * DB * s->dec_prompt);
    Rng  r;
    rng_seed(&r, 2);
    for (int i = 0; i < N; i++) {
        tokens[i] = (int)rng_below(&r, (uint32_t)V);
        targets[i] = (int)rng_below(&r, (uint32_t)V);
    }
    for (int i = 0; i < DB * s->dec_prompt; i++) prompts[i] = (int)rng_below(&r, (uint32_t)V);
    printf("%s: %.1fM parameters, train batch %dx%d\n", s->name, P / 1e6, s->B, s->T);
    double best =
        bench_train_best_s(m, &oc, tokens, targets, s->B, s->T, s->train_steps, true, false);
    double flops = model_train_flops(&s->cfg, s->B, s->T);
    double gflops = flops / best / 1e9;
    double train_tps = N / best;
    printf("  train step   %8.3f s  %9.0f tokens/s  %7.1f GFLOP/s = %5.1f%% of sgemm %.1f\n", best,
           train_tps, gflops, 100.0 * gflops / sgemm_gflops, sgemm_gflops);

    json_t *o = json_pack("{s:f, s:f, s:f, s:f, s:f}", "params_m", P / 1e6, "train_step_s", best,
                          "train_tokens_per_s", train_tps, "train_gflops", gflops,
                          "train_pct_sgemm", 100.0 * gflops / sgemm_gflops);
    /* Decode: prefill each prompt, then dec_new greedy steps for the batch,
     * with fp32 weights (keys decode_*) and bf16 (decode_bf16_*). */
    for (KernType t = KERN_F32; t <= KERN_BF16; t++) {
        CHECK(model_set_decode_type(m, t) == 0);
        double prefill, dec = bench_decode_s(m, prompts, DB, s->dec_prompt, s->dec_new, &prefill);
        double dec_tps = (double)DB * s->dec_new / dec;
        double weight_bytes = bench_decode_weight_bytes(m, t);
        double bound_steps = read_gbs * 1e9 / weight_bytes;
        double steps_per_s = s->dec_new / dec;
        printf("  decode %s  batch %d: %8.1f tokens/s, %6.2f steps/s; read bound %6.2f "
               "steps/s (%.1f MB weights at %.1f GB/s) = %5.1f%% of bound; prefill %d x %d "
               "in %.3f s\n",
               kern_type_names[t], DB, dec_tps, steps_per_s, bound_steps, weight_bytes / 1e6,
               read_gbs, 100.0 * steps_per_s / bound_steps, DB, s->dec_prompt, prefill);
        char        key[64];
        const char *pre = t == KERN_F32 ? "decode" : "decode_bf16";
        snprintf(key, sizeof key, "%s_tokens_per_s", pre);
        json_object_set_new(o, key, json_real(dec_tps));
        snprintf(key, sizeof key, "%s_steps_per_s", pre);
        json_object_set_new(o, key, json_real(steps_per_s));
        snprintf(key, sizeof key, "%s_bound_steps_per_s", pre);
        json_object_set_new(o, key, json_real(bound_steps));
        snprintf(key, sizeof key, "%s_pct_bound", pre);
        json_object_set_new(o, key, json_real(100.0 * steps_per_s / bound_steps));
    }
    free(tokens);
    free(targets);
    free(prompts);
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
    double rd = bench_read_gbs(true), rd1 = bench_read_gbs(false), read_bound = fmax(rd, rd1);
    printf("machine: sgemm %.1f GFLOP/s (2048^3, best of 5, OpenBLAS's %s kernels), memcpy %.2f "
           "GB/s (512 MiB, best of 5), read %.2f GB/s with %d threads, %.2f GB/s with 1 (512 MiB "
           "sum, best of 5)\n",
           sg, tensor_blas_kernels(), bw, rd, par_threads(), rd1);
    Shape shapes[] = {
        {"tiny", fixture_model_config(128, 4, 4, 4, 512, 64, 128), 64, 64, 16, 8, 32, 5},
        {"smollm2-135m-shape", bench_smollm2_config(), 8, 256, 8, 32, 64, 2},
    };
    json_t *res =
        json_pack("{s:f, s:s, s:f, s:f, s:f}", "sgemm_gflops", sg, "blas_kernels",
                  tensor_blas_kernels(), "memcpy_gbs", bw, "read_gbs", rd, "read_gbs_1thread", rd1);
    for (size_t i = 0; i < (quick ? 1 : sizeof shapes / sizeof shapes[0]); i++)
        json_object_set_new(res, shapes[i].name, bench_shape(&shapes[i], sg, read_bound));
    bench_json_write("bench_model", out, "model", res);
    return 0;
}
