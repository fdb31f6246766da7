/* rlhf-gguf: looks inside a GGUF model file and runs it on token ids, to
 * check by hand that a pretrained model loads and predicts sensibly.
 *
 *   rlhf-gguf --model PATH.gguf                       metadata and tensors
 *   rlhf-gguf --model PATH.gguf --ids 1,2,3 [--greedy N] [--top K] [--decode-weights T]
 *
 * With --ids the model is loaded (time reported), the ids are fed through
 * the decode path the actors use (model_step with a KV cache), and the top K
 * next-token logits and N greedy continuation ids are printed. Token ids are
 * given directly: text goes through the tokenizer module, not this tool.
 * Results go to stdout, logs to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/formats/gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/base/log.h"
#include "common/nn/model.h"

#define MAX_IDS 4096

typedef struct {
    const char *model;          /* GGUF file, required */
    const char *ids;            /* comma-separated prompt ids; NULL = only describe the file */
    int         greedy;         /* greedy continuation length */
    int         top;            /* next-token logits shown */
    int         decode_weights; /* KernType the decode runs in */
} GgufArgs;

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const GgufArgs *a = ctx;
    if (!a->model) {
        fprintf(stderr, "rlhf-gguf: --model PATH.gguf is required\n");
        return ERR_ARG;
    }
    return 0;
}

/* Parses "1,2,3" into ids (at most MAX_IDS), each in [0, V). */
static int parse_ids(const char *s, int V, int *ids, int *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long  v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v >= V || *n >= MAX_IDS) {
            log_error("--ids '%s': expected up to %d comma-separated ids in 0..%d", s, MAX_IDS,
                      V - 1);
            return ERR_ARG;
        }
        ids[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        log_error("--ids: no ids given");
        return ERR_ARG;
    }
    return 0;
}

static void describe(const GgufFile *f)
{
    printf("file %s version %u alignment %zu tensors %d metadata %d\n", gguf_path(f),
           gguf_version(f), gguf_alignment(f), gguf_tensor_count(f), gguf_kv_count(f));
    for (int i = 0; i < gguf_kv_count(f); i++) {
        const char *key;
        int         type, et;
        size_t      n;
        gguf_kv_at(f, i, &key, &type, &et, &n);
        int64_t iv;
        double  dv;
        bool    bv;
        GgufStr sv;
        if (type == GGUF_VAL_ARRAY)
            printf("  %-44s array of %zu (type %d)\n", key, n, et);
        else if (type == GGUF_VAL_STRING && gguf_get_str(f, key, &sv) == 0)
            printf("  %-44s \"%.60s\"%s\n", key, sv.s, sv.len > 60 ? "..." : "");
        else if (type == GGUF_VAL_BOOL && gguf_get_bool(f, key, &bv) == 0)
            printf("  %-44s %s\n", key, bv ? "true" : "false");
        else if ((type == GGUF_VAL_FLOAT32 || type == GGUF_VAL_FLOAT64) &&
                 gguf_get_float(f, key, &dv) == 0)
            printf("  %-44s %g\n", key, dv);
        else if (gguf_get_int(f, key, &iv) == 0)
            printf("  %-44s %lld\n", key, (long long)iv);
    }
    for (int i = 0; i < gguf_tensor_count(f); i++) {
        GgufTensorInfo t;
        gguf_tensor_info(f, i, &t);
        printf("  tensor %-28s %-5s ne [%lld", t.name, t.type_name, (long long)t.ne[0]);
        for (int d = 1; d < t.n_dims; d++) printf(", %lld", (long long)t.ne[d]);
        printf("] %zu bytes at %llu\n", t.nbytes, (unsigned long long)t.offset);
    }
}

/* Index of the largest logit (the first on ties). */
static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int run(const GgufArgs *a)
{
    double t0 = progress_now();
    Model *m = NULL;
    /* Enough positions for the prompt and the continuation, not the model's
     * whole context: the RoPE tables and KV cache scale with it. */
    int rc = gguf_load(a->model, MAX_IDS + a->greedy, &m);
    if (rc) return rc;
    const ModelConfig *c = model_config(m);
    printf("loaded %s in %.2f s: dim %d layers %d heads %d/%d hidden %d vocab %d tied %d "
           "rope_theta %g norm_eps %g\n",
           a->model, progress_now() - t0, c->dim, c->n_layers, c->n_heads, c->n_kv_heads,
           c->hidden_dim, c->vocab_size, c->tie_embeddings, c->rope_theta, c->norm_eps);
    int   *ids = xmalloc(sizeof(int) * (MAX_IDS + (size_t)a->greedy + 1));
    int    n = 0, V = c->vocab_size;
    float *logits = xmalloc(sizeof(float) * (size_t)V);
    if ((rc = parse_ids(a->ids, V, ids, &n)) != 0) goto free_bufs;
    t0 = progress_now();
    if ((rc = model_set_decode_type(m, (KernType)a->decode_weights)) != 0) goto free_bufs;
    if (a->decode_weights != KERN_F32)
        printf("weights converted to %s in %.2f s (%s kernels)\n",
               kern_type_names[a->decode_weights], progress_now() - t0, kern_variant_name());
    KVCache *kv = kv_new(m, 1, n + a->greedy + 1);
    int     *seq = xcalloc((size_t)n, sizeof(int));
    int      last = n - 1;
    t0 = progress_now();
    rc = model_step(m, kv, n, seq, ids, 1, &last, logits);
    free(seq);
    if (rc) goto free_kv;
    printf("prefill of %d ids: %.1f ms\n", n, 1e3 * (progress_now() - t0));
    int *order = xmalloc(sizeof(int) * (size_t)a->top);
    for (int k = 0; k < a->top && k < V; k++) {
        /* Selection by repeated scan: K is small. */
        int best = -1;
        for (int i = 0; i < V; i++) {
            bool used = false;
            for (int j = 0; j < k; j++) used = used || order[j] == i;
            if (!used && (best < 0 || logits[i] > logits[best])) best = i;
        }
        order[k] = best;
        printf("  top %2d: id %6d logit %9.4f\n", k, best, logits[best]);
    }
    free(order);
    printf("greedy:");
    t0 = progress_now();
    for (int k = 0; k < a->greedy && rc == 0; k++) {
        int next = argmax(logits, V), zero = 0, row = 0;
        printf(" %d", next);
        rc = model_step(m, kv, 1, &zero, &next, 1, &row, logits);
    }
    printf("\n");
    if (rc == 0 && a->greedy > 0)
        printf("decode: %.1f ms per token\n", 1e3 * (progress_now() - t0) / a->greedy);
free_kv:
    kv_free(&kv);
free_bufs:
    free(logits);
    free(ids);
    model_free(&m);
    return rc;
}

int main(int argc, char **argv)
{
    GgufArgs a = {.model = NULL, .ids = NULL, .greedy = 20, .top = 10, .decode_weights = KERN_F32};

    Flag flags[] = {
        FLAG_STRING("model", &a.model, "PATH", "GGUF file", .def = "(required)"),
        FLAG_STRING("ids", &a.ids, "LIST", "comma-separated prompt token ids",
                    .def = "none: describe only"),
        FLAG_INT("greedy", &a.greedy, 0, 1 << 16, "N", "greedy continuation length"),
        FLAG_INT("top", &a.top, 0, 1000, "K", "next-token logits to show"),
        FLAG_CHOICE("decode-weights", &a.decode_weights, kern_type_names, "T",
                    "precision of the weights the decode reads: fp32, or bf16 /\n"
                    "fp16 as the actors use"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-gguf",
        .synopsis = "--model PATH.gguf [--ids I,J,... [--greedy N] [--top K] [--decode-weights T]]",
        .about = "Describes a GGUF model file, or loads it and runs it on token ids.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "gguf", NULL);
    if (rc != PROG_RUN) return rc;
    if (!a.ids) {
        GgufFile *f = NULL;
        if (gguf_open(a.model, &f) != 0) return PROG_EXIT_FAIL;
        describe(f);
        gguf_close(&f);
    } else if (run(&a) != 0) {
        return PROG_EXIT_FAIL;
    }
    if (fflush(stdout) != 0) return PROG_EXIT_FAIL;
    return PROG_EXIT_OK;
}
