/* bench_common: what the model benchmarks share. The machine ceilings every
 * figure is set beside (the practical sgemm GFLOP/s, the memcpy bandwidth
 * and the read-only streaming rate that bounds a weight-streaming decode),
 * the timed training step and greedy KV-cache decoding they measure, the
 * SmolLM2-135M shape, and the merge of a result into the JSON file. Header-only (each benchmark is
 * one program, linked with tests/support/fixtures.o); the functions allocate their own buffers and
 * CHECK what cannot fail on a working machine.
 */
#ifndef RLHF_BENCH_COMMON_H
#define RLHF_BENCH_COMMON_H

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/par.h"
#include "common/base/rng.h"
#include "common/nn/cpu.h"
#include "common/nn/kern.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/nn/tensor.h"
#include "tests/support/fixtures.h"

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of several runs of a 2048^3 sgemm: the machine's practical peak. */
static inline double bench_sgemm_gflops(void)
{
    int    n = 2048;
    float *a = xmalloc_aligned(sizeof(float) * n * n), *b = xmalloc_aligned(sizeof(float) * n * n);
    float *c = xmalloc_aligned(sizeof(float) * n * n);
    Rng    r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = rng_uniform(&r) - 0.5f;
        b[i] = rng_uniform(&r) - 0.5f;
    }
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now_s();
        tensor_gemm(false, true, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = bench_now_s() - t0;
        best = fmax(best, 2.0 * n * n * (double)n / dt / 1e9);
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Best of 5 memcpys of n bytes, in seconds. */
static inline double bench_memcpy_best_s(size_t n)
{
    char *src = xmalloc_aligned(n), *dst = xmalloc_aligned(n);
    memset(src, 1, n);
    memset(dst, 2, n);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now_s();
        memcpy(dst, src, n);
        best = fmin(best, bench_now_s() - t0);
    }
    if (dst[n / 2] != 1) abort(); /* keeps the copy from being optimised away */
    free(src);
    free(dst);
    return best;
}

/* Best of several 512 MiB memcpys, in GB/s of bytes copied. */
static inline double bench_memcpy_gbs(void)
{
    size_t n = (size_t)512 << 20;
    return (double)n / bench_memcpy_best_s(n) / 1e9;
}

/* The read-only streaming rate: a vectorised sum over a buffer much larger
 * than the caches, split over the thread pool the way decoding splits the
 * weights (one contiguous range per thread). This, not memcpy (which moves
 * every byte twice), is the ceiling of a decode step that reads each weight
 * once. */
typedef struct {
    const float *p;
    size_t       chunk; /* floats per item */
    double      *sums;  /* one per item */
} BenchRead;

static RLHF_HOT void bench_read_range(void *ctx, size_t k0, size_t k1)
{
    const BenchRead *r = ctx;
    for (size_t k = k0; k < k1; k++) {
        const float *p = r->p + k * r->chunk;
        /* 64 partial sums: several vector accumulators, so the loop waits on
         * memory, not on the latency of one chain of adds. */
        float acc[64] = {0};
        for (size_t i = 0; i < r->chunk; i += 64) {
#pragma omp simd
            for (int j = 0; j < 64; j++) acc[j] += p[i + j];
        }
        double s = 0.0;
        for (int j = 0; j < 64; j++) s += acc[j];
        r->sums[k] = s;
    }
}

/* Best of passes over 512 MiB (MiB sized by mib for a quick run), in GB/s,
 * with the pool (threaded) or on the calling thread alone. */
static inline double bench_read_gbs_n(size_t mib, int passes, bool threaded)
{
    size_t    n = mib << 18, chunk = (size_t)1 << 16; /* floats; 256 KiB items */
    float    *p = xmalloc_aligned(n * sizeof(float));
    size_t    items = n / chunk;
    BenchRead r = {p, chunk, xcalloc(items, sizeof(double))};
    for (size_t i = 0; i < n; i++) p[i] = 1.0f;
    double best = 1e30;
    for (int rep = 0; rep < passes; rep++) {
        double t0 = bench_now_s();
        if (threaded)
            par_for(items, 1, bench_read_range, &r);
        else
            bench_read_range(&r, 0, items);
        best = fmin(best, bench_now_s() - t0);
    }
    double total = 0.0;
    for (size_t k = 0; k < items; k++) total += r.sums[k];
    if (total != (double)n) abort(); /* every float was read */
    free(p);
    free(r.sums);
    return (double)n * sizeof(float) / best / 1e9;
}

static inline double bench_read_gbs(bool threaded)
{
    return bench_read_gbs_n(512, 5, threaded);
}

/* The shape of SmolLM2-135M (random weights time it as well as real ones). */
static inline ModelConfig bench_smollm2_config(void)
{
    ModelConfig c = fixture_model_config(576, 30, 9, 3, 1536, 49152, 2048);
    c.rope_theta = 100000.0f;
    c.tie_embeddings = true;
    return c;
}

/* The best time in seconds of steps training steps (forward, backward and
 * an AdamW update with oc) on B x T tokens and targets, after one warm-up
 * step that grows the activation block. The loss is the mean -log p; with
 * with_entropy the forward also computes the entropy, with print_steps each
 * step's time is printed. */
static inline double bench_train_best_s(Model *m, const OptimConfig *oc, const int *tokens,
                                        const int *targets, int B, int T, int steps,
                                        bool with_entropy, bool print_steps)
{
    Optim *opt = optim_new(oc, model_num_params(m));
    int    N = B * T;
    float *logp = xmalloc(sizeof(float) * N), *dlogp = xmalloc(sizeof(float) * N);
    float *ent = with_entropy ? xmalloc(sizeof(float) * N) : NULL;
    for (int i = 0; i < N; i++) dlogp[i] = -1.0f / N;
    double best = 1e30;
    for (int step = 0; step <= steps; step++) {
        double t0 = bench_now_s();
        model_zero_grad(m);
        model_forward(m, tokens, targets, NULL, B, T, logp, ent, NULL);
        model_backward(m, dlogp, NULL, NULL);
        double gn, lr;
        CHECK(optim_step(opt, model_params(m), model_grads(m), NULL, &gn, &lr) == 0);
        double dt = bench_now_s() - t0;
        if (step > 0) best = fmin(best, dt);
        if (print_steps) printf("  train step %d%s: %.2f s\n", step, step ? "" : " (warm-up)", dt);
    }
    free(logp);
    free(dlogp);
    free(ent);
    optim_free(&opt);
    return best;
}

/* Greedy KV-cache decoding of DB sequences: one prefill of each sequence's
 * n_prompt tokens from prompts (DB, n_prompt), then n_new greedy steps for
 * the batch. Writes the prefill time to *prefill_s; returns the time of the
 * n_new steps in seconds. */
static inline double bench_decode_s(Model *m, const int *prompts, int DB, int n_prompt, int n_new,
                                    double *prefill_s)
{
    int      V = model_config(m)->vocab_size;
    KVCache *kv = kv_new(m, DB, n_prompt + n_new);
    int   *seq = xmalloc(sizeof(int) * DB * n_prompt), *tok = xmalloc(sizeof(int) * DB * n_prompt);
    int   *outs = xmalloc(sizeof(int) * DB);
    float *logits = xmalloc(sizeof(float) * (size_t)DB * V);
    for (int b = 0; b < DB; b++) {
        for (int t = 0; t < n_prompt; t++) {
            seq[b * n_prompt + t] = b;
            tok[b * n_prompt + t] = prompts[b * n_prompt + t];
        }
        outs[b] = b * n_prompt + n_prompt - 1;
    }
    double t0 = bench_now_s();
    CHECK(model_step(m, kv, DB * n_prompt, seq, tok, DB, outs, logits) == 0);
    *prefill_s = bench_now_s() - t0;
    for (int b = 0; b < DB; b++) seq[b] = outs[b] = b;
    t0 = bench_now_s();
    for (int step = 0; step < n_new; step++) {
        for (int b = 0; b < DB; b++) {
            const float *row = logits + (size_t)b * V;
            int          best = 0;
            for (int v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
            tok[b] = best;
        }
        CHECK(model_step(m, kv, DB, seq, tok, DB, outs, logits) == 0);
    }
    double dec = bench_now_s() - t0;
    free(seq);
    free(tok);
    free(outs);
    free(logits);
    kv_free(&kv);
    return dec;
}

/* The weight bytes one decoding step reads: every weight once (a tied
 * embedding as the LM head; an untied one only as the few looked-up rows),
 * the matrices in type t and the norm gains in fp32. */
static inline double bench_decode_weight_bytes(const Model *m, KernType t)
{
    const ModelConfig *c = model_config(m);
    size_t             P = model_num_params(m);
    double streamed = (double)(P - (c->tie_embeddings ? 0 : (size_t)c->vocab_size * c->dim));
    double norms = (2.0 * c->n_layers + 1) * c->dim;
    return (t == KERN_F32 ? 4.0 : 2.0) * (streamed - norms) + 4.0 * norms;
}

/* Sets res (taken) under key in the JSON file out, keeping the file's other
 * keys, and says where it wrote. Returns 0, or -1 (logged as prog) when the
 * file cannot be written. */
static inline int bench_json_write(const char *prog, const char *out, const char *key, json_t *res)
{
    json_t *root = json_load_file(out, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_object_set_new(root, key, res);
    int rc = json_dump_file(root, out, JSON_INDENT(2));
    if (rc != 0)
        fprintf(stderr, "%s: cannot write %s\n", prog, out);
    else
        printf("wrote %s\n", out);
    json_decref(root);
    return rc != 0 ? -1 : 0;
}

#endif
