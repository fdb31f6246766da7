/* gguf_test: SmolLM2-135M-Instruct loaded from its real GGUF file: the config
 * and the time to load, and logit agreement with Hugging Face transformers
 * against tests/fixtures/logits_smollm2.json (written by
 * tests/reference/make_logits_fixture.py): final-position logits within
 * 1e-3 of the largest absolute reference logit, identical 20-token greedy
 * continuations. Skipped, passing, when models/SmolLM2-135M-Instruct.Q4_1.gguf
 * is absent (`make model` fetches it); RLHF_SMOLLM2_GGUF overrides the path. */
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/model.h"

#define LOGITS_FIXTURE "tests/fixtures/logits_smollm2.json"
#define MAX_IDS 256 /* longest fixture prompt accepted */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Reads an array of integers in [0, hi) into out (at most cap). */
static bool get_ids(const json_t *a, int hi, int *out, int cap, int *n)
{
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > (size_t)cap)
        return false;
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= hi)
            return false;
        out[i] = (int)json_integer_value(v);
    }
    return true;
}

/* Compares one fixture case with our model. Returns the number of failures. */
static int check_case(Model *m, const json_t *c, int idx, bool verbose, double *worst_ratio)
{
    int         V = model_config(m)->vocab_size;
    int         ids[MAX_IDS + 32], n = 0, greedy_ref[32], n_greedy = 0;
    const char *text = json_string_value(json_object_get(c, "text"));
    json_t     *top = json_object_get(c, "top"), *strided = json_object_get(c, "strided");
    double      max_abs = json_number_value(json_object_get(c, "max_abs"));
    json_int_t  stride = json_integer_value(json_object_get(c, "stride"));
    if (!get_ids(json_object_get(c, "ids"), V, ids, MAX_IDS, &n) ||
        !get_ids(json_object_get(c, "greedy"), V, greedy_ref, 32, &n_greedy) ||
        json_integer_value(json_object_get(c, "vocab_size")) != V || !json_is_array(top) ||
        !json_is_array(strided) || stride <= 0 || !(max_abs > 0)) {
        fprintf(stderr, "gguf_smollm2: %s: case %d is malformed or for another vocabulary\n",
                LOGITS_FIXTURE, idx);
        return 1;
    }
    float   *logits = xmalloc(sizeof(float) * (size_t)V);
    float   *fwd = xmalloc(sizeof(float) * (size_t)V);
    KVCache *kv = kv_new(m, 1, n + n_greedy + 1);
    int     *seq = xcalloc((size_t)n, sizeof(int)), last = n - 1, fails = 0;
    /* The decode path the actors use: one prefill of all the ids. */
    CHECK(model_step(m, kv, n, seq, ids, 1, &last, logits) == 0);
    /* The training path the learner uses, on the same ids. */
    int *targets = xcalloc((size_t)n, sizeof(int));
    model_forward(m, ids, targets, NULL, 1, n, NULL, NULL, NULL);
    int          n_act = 0;
    const float *lg = model_last_logits(m, &n_act);
    CHECK(n_act == n);
    memcpy(fwd, lg + (size_t)(n - 1) * V, sizeof(float) * (size_t)V);
    double diff = 0, diff_fwd = 0, sum = 0, sum_sq = 0;
    size_t n_cmp = 0;
    for (size_t k = 0; k < json_array_size(top); k++) {
        json_t *pair = json_array_get(top, k);
        int     id = (int)json_integer_value(json_array_get(pair, 0));
        double  ref = json_number_value(json_array_get(pair, 1));
        if (id < 0 || id >= V) continue;
        diff = fmax(diff, fabs(logits[id] - ref));
        diff_fwd = fmax(diff_fwd, fabs(fwd[id] - ref));
        n_cmp++;
    }
    for (size_t k = 0; k < json_array_size(strided); k++) {
        size_t id = k * (size_t)stride;
        double ref = json_number_value(json_array_get(strided, k));
        if (id >= (size_t)V) break;
        diff = fmax(diff, fabs(logits[id] - ref));
        diff_fwd = fmax(diff_fwd, fabs(fwd[id] - ref));
        n_cmp++;
    }
    for (int i = 0; i < V; i++) sum += logits[i], sum_sq += (double)logits[i] * logits[i];
    double tol = 1e-3 * max_abs, ratio = fmax(diff, diff_fwd) / max_abs;
    *worst_ratio = fmax(*worst_ratio, ratio);
    /* Greedy continuation through the cache, argmax at each step. */
    int greedy[32];
    for (int k = 0; k < n_greedy; k++) {
        greedy[k] = argmax(logits, V);
        int zero = 0, row = 0;
        CHECK(model_step(m, kv, 1, &zero, &greedy[k], 1, &row, logits) == 0);
    }
    bool same_greedy = !memcmp(greedy, greedy_ref, sizeof(int) * (size_t)n_greedy);
    if (verbose || diff > tol || diff_fwd > tol || !same_greedy) {
        printf("gguf_smollm2: case %d (%d ids, \"%.24s...\"): max |diff| over %zu logits: decode "
               "%.3g, forward %.3g = %.2e of max |ref| %.3f (tolerance 1e-3); sum %.2f vs %.2f, "
               "sum_sq %.1f vs %.1f; greedy %s\n",
               idx, n, text ? text : "", n_cmp, diff, diff_fwd, ratio, max_abs, sum,
               json_number_value(json_object_get(c, "sum")), sum_sq,
               json_number_value(json_object_get(c, "sum_sq")),
               same_greedy ? "identical" : "DIFFERS");
    }
    if (diff > tol || diff_fwd > tol) fails++;
    if (!same_greedy) {
        fprintf(stderr, "gguf_smollm2: case %d: greedy ours", idx);
        for (int k = 0; k < n_greedy; k++) fprintf(stderr, " %d", greedy[k]);
        fprintf(stderr, "\n  reference");
        for (int k = 0; k < n_greedy; k++) fprintf(stderr, " %d", greedy_ref[k]);
        fprintf(stderr, "\n");
        fails++;
    }
    free(targets);
    free(seq);
    kv_free(&kv);
    free(fwd);
    free(logits);
    return fails;
}

int gguf_smollm2_selftest(bool verbose)
{
    const char *path = fixture_smollm2_path("gguf_smollm2");
    if (!path) return 0;
    json_error_t jerr;
    json_t      *doc = json_load_file(LOGITS_FIXTURE, 0, &jerr);
    json_t      *cases = doc ? json_object_get(doc, "cases") : NULL;
    if (!json_is_array(cases) || json_array_size(cases) == 0) {
        fprintf(stderr, "gguf_smollm2: %s: %s\n", LOGITS_FIXTURE,
                doc ? "no \"cases\" array" : jerr.text);
        json_decref(doc);
        return 1;
    }
    double t0 = now_s();
    Model *m = NULL;
    /* The fixture's prompts and continuations are short: no need for the
     * model's 8192 positions. */
    int    rc = gguf_load(path, MAX_IDS + 32, &m);
    double t_load = now_s() - t0;
    if (rc != 0) {
        fprintf(stderr, "gguf_smollm2: loading %s failed: %s\n", path, err_str(rc));
        json_decref(doc);
        return 1;
    }
    const ModelConfig *c = model_config(m);
    printf("gguf_smollm2: %s: dim %d layers %d heads %d/%d hidden %d vocab %d tied %d rope_theta "
           "%g norm_eps %g, %.1fM parameters, loaded in %.2f s\n",
           path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size,
           c->tie_embeddings, c->rope_theta, c->norm_eps, 1e-6 * (double)model_num_params(m),
           t_load);
    int    fails = 0;
    double worst = 0;
    for (size_t i = 0; i < json_array_size(cases); i++)
        fails += check_case(m, json_array_get(cases, i), (int)i, verbose, &worst);
    printf("gguf_smollm2: %zu prompts vs transformers: worst max |diff| / max |ref logit| = %.2e "
           "(tolerance 1e-3), %s\n",
           json_array_size(cases), worst, fails ? "FAILED" : "greedy continuations identical");
    model_free(&m);
    json_decref(doc);
    return fails ? 1 : 0;
}
