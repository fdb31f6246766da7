/* bench_gguf: SmolLM2-135M-Instruct's real figures, from its GGUF file.
 *
 * Prints, in one run: the sgemm GFLOP/s, memcpy GB/s and read-only
 * streaming GB/s measured here; the time to load the GGUF (open, validate,
 * dequantise Q4_1 into the fp32 Model); the learner's training step
 * (forward + backward + AdamW) on the real weights in tokens/s and GFLOP/s
 * as a share of the sgemm figure; and the actor's KV-cache decoding at batch
 * 1 and batch 8 (a chat prompt from the model's own tokenizer, then greedy
 * tokens) with fp32, bf16 and fp16 weights, each in tokens/s next to the
 * rate the read bandwidth allows (the weights read once per step). Writes
 * the figures under "smollm2" in the JSON file given as the first argument
 * (default build/bench.json), keeping other keys. Without the model file it
 * prints "skipped: run make model" and exits 0.
 *
 *   bench_gguf [OUT.json] [--model PATH.gguf] [--train-T N] [--steps N]
 *              [--new N] [--decode-only] */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/formats/bpe.h"
#include "common/formats/bpe_chat.h"
#include "common/formats/bpe_gguf.h"
#include "common/base/err.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/base/log.h"
#include "common/nn/kern.h"
#include "common/nn/kern_int.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/base/rng.h"
#include "tests/bench/bench_common.h"

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define TRAIN_B 8
#define DEC_PROMPT 32
#define DEC_NEW 64
#define N_DEC_TYPES 3 /* fp32, bf16, fp16 */

typedef struct {
    const char *out;
    const char *model;
    int         train_T; /* training sequence length (batch TRAIN_B) */
    int         steps;   /* timed training steps after one warm-up */
    int         n_new;   /* greedy tokens decoded per sequence */
    bool        is_decode_only;
} Args;

/* The best of steps training steps on TRAIN_B x T tokens of real text ids. */
static json_t *bench_train(Model *m, const int *ids, int n_ids, int T, int steps, double sgemm)
{
    OptimConfig oc = fixture_optim_config(1e-5f, 1e-6f, 0, 1000);
    oc.grad_clip = 1.0f;
    int  N = TRAIN_B * T;
    int *tokens = xmalloc(sizeof(int) * N), *targets = xmalloc(sizeof(int) * N);
    /* Next-token targets over the prompt ids repeated: real text statistics. */
    for (int i = 0; i < N; i++) {
        tokens[i] = ids[i % n_ids];
        targets[i] = ids[(i + 1) % n_ids];
    }
    double best = bench_train_best_s(m, &oc, tokens, targets, TRAIN_B, T, steps, false, true);
    double gflops = model_train_flops(model_config(m), TRAIN_B, T) / best / 1e9;
    printf("train %dx%d: %.2f s/step, %.0f tokens/s, %.1f GFLOP/s = %.1f%% of sgemm %.1f\n",
           TRAIN_B, T, best, N / best, gflops, 100.0 * gflops / sgemm, sgemm);
    json_t *o =
        json_pack("{s:i, s:i, s:f, s:f, s:f, s:f}", "B", TRAIN_B, "T", T, "step_s", best,
                  "tokens_per_s", N / best, "gflops", gflops, "pct_sgemm", 100.0 * gflops / sgemm);
    free(tokens);
    free(targets);
    return o;
}

/* Prefill DB copies of the prompt, then n_new greedy steps for all, with
 * the weights in type t; the bound is the read rate over the bytes of
 * weights one step streams. */
static json_t *bench_decode(Model *m, const int *prompt, int DB, int n_new, KernType t,
                            const char *label, double read_gbs)
{
    CHECK(model_set_decode_type(m, t) == 0);
    int *prompts = xmalloc(sizeof(int) * DB * DEC_PROMPT);
    for (int b = 0; b < DB; b++) memcpy(prompts + b * DEC_PROMPT, prompt, sizeof(int) * DEC_PROMPT);
    double prefill, dec = bench_decode_s(m, prompts, DB, DEC_PROMPT, n_new, &prefill);
    double weight_bytes = bench_decode_weight_bytes(m, t);
    double bound = read_gbs * 1e9 / weight_bytes, steps_per_s = n_new / dec;
    double tps = (double)DB * n_new / dec;
    printf("decode %s batch %d: %.1f tokens/s, %.2f steps/s; read bound %.2f steps/s (%.0f MB "
           "of weights at %.1f GB/s) = %.1f%% of bound; prefill %d x %d in %.3f s\n",
           label, DB, tps, steps_per_s, bound, weight_bytes / 1e6, read_gbs,
           100.0 * steps_per_s / bound, DB, DEC_PROMPT, prefill);
    json_t *o = json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "weights", kern_type_names[t],
        "kernel", t == KERN_F32 ? "tensor" : kern_variant_name(), "batch", DB, "prompt", DEC_PROMPT,
        "new_tokens", n_new, "tokens_per_s", tps, "steps_per_s", steps_per_s, "weight_mb_per_step",
        weight_bytes / 1e6, "bound_steps_per_s", bound, "pct_bound", 100.0 * steps_per_s / bound,
        "prefill_s", prefill);
    free(prompts);
    CHECK(model_set_decode_type(m, KERN_F32) == 0);
    return o;
}

static int parse_args(int argc, char **argv, Args *a)
{
    *a = (Args){.out = "build/bench.json",
                .model = DEFAULT_MODEL,
                .train_T = 128,
                .steps = 2,
                .n_new = DEC_NEW};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            printf("usage: %s [OUT.json] [--model PATH] [--train-T N] [--steps N] [--new N] "
                   "[--decode-only]\n"
                   "  OUT.json       results file, other keys kept (default build/bench.json)\n"
                   "  --model PATH   GGUF file (default %s)\n"
                   "  --train-T N    training sequence length, batch %d (default 128)\n"
                   "  --steps N      timed training steps after one warm-up (default 2)\n"
                   "  --new N        greedy tokens decoded per sequence (default %d)\n"
                   "  --decode-only  skip the sgemm figure and the training step\n",
                   argv[0], DEFAULT_MODEL, TRAIN_B, DEC_NEW);
            return 1;
        }
        if (!strcmp(s, "--decode-only")) {
            a->is_decode_only = true;
            continue;
        }
        if ((!strcmp(s, "--model") || !strcmp(s, "--train-T") || !strcmp(s, "--steps") ||
             !strcmp(s, "--new")) &&
            i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(s, "--model")) {
                a->model = v;
                continue;
            }
            char *end;
            long  x = strtol(v, &end, 10);
            if (*end || x < 1 || x > 4096) {
                fprintf(stderr, "bench_gguf: %s '%s': expected 1..4096\n", s, v);
                return -1;
            }
            if (!strcmp(s, "--train-T"))
                a->train_T = (int)x;
            else if (!strcmp(s, "--new"))
                a->n_new = (int)x;
            else
                a->steps = (int)x;
        } else if (s[0] == '-') {
            fprintf(stderr, "bench_gguf: unknown flag '%s' (see --help)\n", s);
            return -1;
        } else {
            a->out = s;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    Args a;
    int  rc = parse_args(argc, argv, &a);
    if (rc) return rc > 0 ? 0 : 2;
    log_init("bench_gguf", LOG_WARN);
    if (access(a.model, R_OK) != 0) {
        printf("bench_gguf: skipped: run make model (no %s)\n", a.model);
        return 0;
    }
    /* Other work on the machine moves every figure: record how busy it was. */
    double load_avg = -1;
    if (getloadavg(&load_avg, 1) != 1) load_avg = -1;
    printf("machine: %ld cores, load average %.2f at the start\n", sysconf(_SC_NPROCESSORS_ONLN),
           load_avg);
    double sg = a.is_decode_only ? 0.0 : bench_sgemm_gflops(), bw = bench_memcpy_gbs();
    double rd1 = bench_read_gbs(false), rd = bench_read_gbs(true);
    /* The bound is the best read rate seen: with the pool when the cores
     * share the memory well, one thread when another load contends. */
    double read_bound = fmax(rd, rd1);
    printf("machine: sgemm %.1f GFLOP/s (2048^3, best of 5), memcpy %.2f GB/s (512 MiB, best of "
           "5), read %.2f GB/s with %d threads, %.2f GB/s with 1 (512 MiB sum, best of 5); "
           "decode kernel %s\n",
           sg, bw, rd, par_threads(), rd1, kern_variant_name());
    int dec_len = DEC_PROMPT + a.n_new;
    int max_seq = a.train_T > dec_len ? a.train_T : dec_len;
    /* Load twice: the first pays for the page cache if the file is cold. */
    double load[2];
    Model *m = NULL;
    for (int i = 0; i < 2; i++) {
        model_free(&m);
        double t0 = bench_now_s();
        if (gguf_load(a.model, max_seq, &m) != 0) return 1;
        load[i] = bench_now_s() - t0;
    }
    Bpe *bpe = NULL;
    if (bpe_load(a.model, &bpe) != 0) return 1;
    printf("load %s: %.2f s first, %.2f s second (%.1fM parameters dequantised to fp32)\n", a.model,
           load[0], load[1], model_num_params(m) / 1e6);
    /* A real chat prompt, at least DEC_PROMPT ids (the default system prompt
     * makes it so). */
    BpeChatMessage msg = {"user", "What is 37 + 45? Reply with the number only, please. Then "
                                  "explain how you added the two numbers step by step."};
    char           chat[2048];
    int            ids[512], n = 0;
    CHECK(bpe_chat_format(bpe, &msg, 1, true, chat, sizeof chat, NULL) == 0);
    CHECK(bpe_encode(bpe, chat, strlen(chat), BPE_ENC_SPECIAL, ids, 512, &n) == 0);
    CHECK(n >= DEC_PROMPT);

    json_t *res =
        json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:i, s:s, s:f, s:f, s:I, s:f}", "file", a.model,
                  "params_m", model_num_params(m) / 1e6, "sgemm_gflops", sg, "memcpy_gbs", bw,
                  "read_gbs", rd, "read_gbs_1thread", rd1, "threads", par_threads(),
                  "decode_kernel", kern_variant_name(), "load_s", load[0], "load_s_warm", load[1],
                  "cores", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "loadavg_start", load_avg);
    json_t *dec = json_object();
    for (KernType t = KERN_F32; t < N_DEC_TYPES; t++) {
        json_t     *o = json_object();
        const char *name = kern_type_names[t];
        json_object_set_new(o, "b1", bench_decode(m, ids, 1, a.n_new, t, name, read_bound));
        json_object_set_new(o, "b8", bench_decode(m, ids, 8, a.n_new, t, name, read_bound));
        json_object_set_new(dec, name, o);
    }
    /* bf16 through the AVX512_BF16 dot kernel too, where the CPU has it: the
     * inputs rounded to bf16 as well, twice the arithmetic rate. */
    const KernVariant *auto_v = kern_variant(), *dot = kern_variant_by_name("avx512bf16");
    if (dot && dot->is_supported()) {
        kern_set_variant(dot);
        json_t     *o = json_object();
        const char *name = "bf16 (avx512bf16 kernel)";
        json_object_set_new(o, "b1", bench_decode(m, ids, 1, a.n_new, KERN_BF16, name, read_bound));
        json_object_set_new(o, "b8", bench_decode(m, ids, 8, a.n_new, KERN_BF16, name, read_bound));
        json_object_set_new(dec, "bf16_avx512bf16", o);
        kern_set_variant(auto_v);
    }
    /* The fp32 figures under their earlier names too. */
    json_object_set(res, "decode_b1", json_object_get(json_object_get(dec, "fp32"), "b1"));
    json_object_set(res, "decode_b8", json_object_get(json_object_get(dec, "fp32"), "b8"));
    json_object_set_new(res, "decode", dec);
    if (!a.is_decode_only)
        json_object_set_new(res, "train", bench_train(m, ids, n, a.train_T, a.steps, sg));

    rc = bench_json_write("bench_gguf", a.out, "smollm2", res);
    bpe_free(&bpe);
    model_free(&m);
    return rc ? 1 : 0;
}
