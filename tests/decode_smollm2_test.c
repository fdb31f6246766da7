/* decode_smollm2_test: SmolLM2-135M-Instruct decoded with its matrices in
 * bf16 and fp16 (model_set_decode_type, what actors use) against the same
 * model decoded in fp32, on the prompts of tests/fixtures/logits_smollm2.json;
 * also bf16 through the AVX512_BF16 kernel where the CPU has it (its inputs
 * are rounded to bf16 too, so its tolerances are doubled).
 *
 * Per prompt: the fp32 greedy continuation of NEW tokens; then each type
 * reads the prompt and that continuation in one prefill (teacher forcing,
 * so every type sees the same text) and its logits at the NEW positions are
 * compared with fp32's: the largest difference relative to the largest
 * logit, the top-1 agreement, KL(p_fp32 || p_half) of the next-token
 * distributions, and |logp_fp32 - logp_half| of the tokens (the gap between
 * an actor's behaviour log-prob and the learner's). Free-running greedy
 * continuations are compared too (tokens agreeing before the first
 * difference). Checked: the relative logit difference stays within 4 u_h
 * (u_h = 2^-8 bf16, 2^-11 fp16; measured about 1.7 u_h for both), the first
 * generated token agrees, and the mean log-prob gap is below 8 u_h nats
 * (measured 0.7-1.5 u_h for bf16, up to 2.8 u_h for fp16). Skipped,
 * passing, without the model file (`make model`). */
#include "tests/support/fixtures.h"
#include "tests/test_list.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/kern.h"
#include "common/nn/kern_int.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"

#define LOGITS_FIXTURE "tests/fixtures/logits_smollm2.json"
#define MAX_IDS 256
#define NEW 32

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* log softmax of row x (V) at id, and KL(softmax p || softmax q). */
static double log_softmax_at(const float *x, int V, int id)
{
    double mx = x[argmax(x, V)], s = 0;
    for (int i = 0; i < V; i++) s += exp(x[i] - mx);
    return x[id] - mx - log(s);
}

static double kl(const float *p, const float *q, int V)
{
    double mp = p[argmax(p, V)], mq = q[argmax(q, V)], sp = 0, sq = 0;
    for (int i = 0; i < V; i++) {
        sp += exp(p[i] - mp);
        sq += exp(q[i] - mq);
    }
    double lzp = mp + log(sp), lzq = mq + log(sq), k = 0;
    for (int i = 0; i < V; i++) {
        double lp = p[i] - lzp;
        k += exp(lp) * (lp - (q[i] - lzq));
    }
    return k;
}

/* Greedy continuation of ids (n) for NEW tokens into out. */
static void greedy(Model *m, const int *ids, int n, int *out, float *logits)
{
    int      V = model_config(m)->vocab_size;
    KVCache *kv = kv_new(m, 1, n + NEW);
    int     *seq = xcalloc((size_t)n, sizeof(int)), last = n - 1, zero = 0;
    CHECK(model_step(m, kv, n, seq, ids, 1, &last, logits) == 0);
    for (int k = 0; k < NEW; k++) {
        out[k] = argmax(logits, V);
        if (k + 1 < NEW) CHECK(model_step(m, kv, 1, &zero, &out[k], 1, &zero, logits) == 0);
    }
    free(seq);
    kv_free(&kv);
}

/* Logits (NEW, V) at the positions predicting text[n..n+NEW) from one
 * prefill of text (n + NEW - 1 ids). */
static void teacher_forced(Model *m, const int *text, int n, float *logits)
{
    int      T = n + NEW - 1;
    KVCache *kv = kv_new(m, 1, T);
    int     *seq = xcalloc((size_t)T, sizeof(int)), outs[NEW];
    for (int k = 0; k < NEW; k++) outs[k] = n - 1 + k;
    CHECK(model_step(m, kv, T, seq, text, NEW, outs, logits) == 0);
    free(seq);
    kv_free(&kv);
}

int decode_smollm2_selftest(bool verbose)
{
    expect_begin("decode_smollm2", verbose);
    const char *path = fixture_smollm2_path("decode_smollm2");
    if (!path) return expect_end();
    json_error_t jerr;
    json_t      *doc = json_load_file(LOGITS_FIXTURE, 0, &jerr);
    json_t      *cases = doc ? json_object_get(doc, "cases") : NULL;
    if (!EXPECT(json_is_array(cases) && json_array_size(cases) > 0, "%s: %s", LOGITS_FIXTURE,
                doc ? "no \"cases\" array" : jerr.text)) {
        json_decref(doc);
        return expect_end();
    }
    Model *m = NULL;
    if (!EXPECT(gguf_load(path, MAX_IDS + NEW, &m) == 0, "loading %s", path)) {
        json_decref(doc);
        return expect_end();
    }
    /* fp32, bf16, fp16 with the kernel kern_linear picks, and bf16 with the
     * AVX512_BF16 kernel (which rounds the inputs too) where the CPU has it. */
    const KernVariant *auto_v = kern_variant(), *dot = kern_variant_by_name("avx512bf16");
    bool               has_dot = dot && dot->is_supported();
    enum { N_CFG = 4 };
    static const KernType types[N_CFG] = {KERN_F32, KERN_BF16, KERN_F16, KERN_BF16};
    int                   V = model_config(m)->vocab_size;
    float                *lg[N_CFG], *step = xmalloc(sizeof(float) * (size_t)V);
    for (int k = 0; k < N_CFG; k++) lg[k] = xmalloc(sizeof(float) * (size_t)NEW * V);
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *ja = json_object_get(json_array_get(cases, ci), "ids");
        int     n = (int)json_array_size(ja), text[MAX_IDS + NEW], gr[N_CFG][NEW];
        if (!EXPECT(n > 0 && n <= MAX_IDS, "case %zu: %d ids", ci, n)) continue;
        for (int i = 0; i < n; i++)
            text[i] = (int)json_integer_value(json_array_get(ja, (size_t)i));
        int n_cfg = has_dot ? N_CFG : N_CFG - 1;
        for (int k = 0; k < n_cfg; k++) {
            kern_set_variant(k == 3 ? dot : auto_v);
            CHECK(model_set_decode_type(m, types[k]) == 0);
            greedy(m, text, n, gr[k], step);
            if (k == 0) memcpy(text + n, gr[k], sizeof(int) * (NEW - 1));
            teacher_forced(m, text, n, lg[k]);
        }
        kern_set_variant(auto_v);
        for (int k = 1; k < n_cfg; k++) {
            KernType t = types[k];
            /* The dot kernel's inputs are rounded too: twice the error. */
            double uh = (t == KERN_BF16 ? 0x1p-8 : 0x1p-11) * (k == 3 ? 2 : 1);
            double worst = 0, maxref = 0;
            char   name[40];
            snprintf(name, sizeof name, "%s%s", kern_type_names[t], k == 3 ? " (avx512bf16)" : "");
            double kl_sum = 0, kl_max = 0, gap_sum = 0, gap_max = 0;
            int    top1 = 0, agree = 0;
            for (int p = 0; p < NEW; p++) {
                const float *a = lg[0] + (size_t)p * V, *b = lg[k] + (size_t)p * V;
                for (int i = 0; i < V; i++) {
                    worst = fmax(worst, fabs(a[i] - b[i]));
                    maxref = fmax(maxref, fabs(a[i]));
                }
                top1 += argmax(a, V) == argmax(b, V);
                double d = kl(a, b, V);
                kl_sum += d;
                kl_max = fmax(kl_max, d);
                /* The continuation's token at this position (the fp32 greedy one). */
                double gap = fabs(log_softmax_at(a, V, gr[0][p]) - log_softmax_at(b, V, gr[0][p]));
                gap_sum += gap;
                gap_max = fmax(gap_max, gap);
            }
            while (agree < NEW && gr[k][agree] == gr[0][agree]) agree++;
            double rel = worst / maxref;
            printf("decode_smollm2: case %zu (%d ids) %s vs fp32: max |logit diff| %.3g of %.3g "
                   "(rel %.2e, tol %.2e); top-1 same at %d/%d positions; KL mean %.2e max %.2e; "
                   "|logp diff| of the tokens mean %.2e max %.2e (tol mean %.2e); free-running "
                   "greedy agrees on %d/%d tokens\n",
                   ci, n, name, worst, maxref, rel, 4 * uh, top1, NEW, kl_sum / NEW, kl_max,
                   gap_sum / NEW, gap_max, 8 * uh, agree, NEW);
            EXPECT(rel <= 4 * uh, "case %zu %s: relative logit difference %.3g > %.3g", ci, name,
                   rel, 4 * uh);
            EXPECT(agree >= 1, "case %zu %s: the first generated token differs from fp32's", ci,
                   name);
            EXPECT(gap_sum / NEW <= 8 * uh, "case %zu %s: mean |logp diff| %.3g > %.3g", ci, name,
                   gap_sum / NEW, 8 * uh);
        }
    }
    for (int k = 0; k < N_CFG; k++) free(lg[k]);
    free(step);
    model_free(&m);
    json_decref(doc);
    return expect_end();
}
