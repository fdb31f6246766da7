/* bench_rm: the reward model's scoring rate next to an actor's generation
 * rate, measured in one run on the same model, lengths and group sizes.
 *
 * For each shape (the learner's default char model; SmolLM2-135M's shape
 * with a scalar head, random weights: the time does not depend on them),
 * each group size G the cluster uses and each completion length W:
 *   actor   gen_run (common/nn/gen, the actors' path) on a batch of the
 *           actor's size (--batch: 32 for the char model, 8 in
 *           deploy/run-smollm2.sh), G samples per prompt, decoding with
 *           bf16 weights (the actors' default), exactly W new tokens each
 *           (no stop token), in samples/s;
 *   rm      rm_scorer_run (the reward server's "rm" path) on the groups the
 *           actor just sampled, in completions/s: one stream whose products
 *           use every OpenBLAS thread; one stream per CPU fed by as many
 *           threads, one BLAS thread each (the reward server's default); and
 *           the latter with one completion per pass (the prompt again for
 *           each: what batching saves);
 *   ratio   rm (the faster stream setting) / actor. One reward server per
 *           two actors keeps up when the ratio is at least 2.
 * The prompt of the char model is the built-in task's (BOS + "123+45="),
 * SmolLM2's the chat task's rendered by its template (its real length when
 * models/ holds the GGUF, else 48 ids). Every process here uses all cores
 * (OpenBLAS's threads and the par pool), as one actor or one reward server
 * alone on a machine would.
 *
 *   bench_rm [OUT.json] [--quick] [--only char|smollm2]
 *       --quick: 0.5 s per figure instead of 3 (a smoke run)
 * Writes the figures under "rm" in OUT.json (default build/bench.json). */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/par.h"
#include "common/base/rng.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/tok.h"
#include "common/nn/gen.h"
#include "common/nn/model.h"
#include "common/nn/tensor.h"
#include "common/tasks/chat_task.h"
#include "common/tasks/task.h"
#include "reward_server/rm_scorer.h"
#include "tests/bench/bench_common.h"

typedef struct {
    const char *name;
    ModelConfig cfg;
    int         batch;  /* the actor's --batch */
    int         Gs[2];  /* group sizes */
    int         Ws[2];  /* completion lengths */
    int        *prompt; /* (P) one prompt's ids */
    int         P;
} RmShape;

static bool g_quick;
static int  g_blas; /* OpenBLAS's threads at start */
static int  g_cpus; /* streams of the reward server's default */

/* Seconds a measurement repeats for at least. */
static double min_time(void)
{
    return g_quick ? 0.5 : 3.0;
}

/* The actor's batch: batch / G prompts, each G times. Fills out (tokens
 * of every sample) and returns samples/s. */
static double actor_rate(Model *m, const RmShape *s, int G, int W, GenOutput *out)
{
    int        B = s->batch, P = s->P;
    Generator *g = gen_new(m, B, P + W);
    const int *prompts[4096];
    int        lens[4096];
    for (int i = 0; i < B; i++) prompts[i] = s->prompt, lens[i] = P;
    GenConfig gc = {
        .sampler = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f}, .max_new = W, .stop_id = -1};
    Rng rng;
    rng_seed(&rng, 3);
    CHECK(gen_run(g, &gc, B, prompts, lens, &rng, out) == 0); /* warm-up */
    int    reps = 0;
    double t0 = bench_now_s(), dt;
    do {
        CHECK(gen_run(g, &gc, B, prompts, lens, &rng, out) == 0);
        reps++;
        dt = bench_now_s() - t0;
    } while (dt < min_time());
    gen_free(&g);
    (void)G;
    return (double)B * reps / dt;
}

/* The groups of one actor batch as the reward server sees them. */
typedef struct {
    int            n_groups, G;
    int32_t       *prompt; /* (P) */
    const int32_t *ptrs[4096];
    size_t         n[4096];
    bool           cut[4096];
    ScorerGroup    g[512];
} RmBatch;

static void rm_batch(RmBatch *b, const RmShape *s, int G, int W, const GenOutput *out)
{
    b->G = G;
    b->n_groups = s->batch / G;
    b->prompt = xmalloc(sizeof(int32_t) * (size_t)s->P);
    for (int t = 0; t < s->P; t++) b->prompt[t] = s->prompt[t];
    for (int i = 0; i < s->batch; i++) {
        b->ptrs[i] = (const int32_t *)out->tokens + (size_t)i * W;
        b->n[i] = (size_t)out->n_tokens[i];
        b->cut[i] = true;
    }
    for (int k = 0; k < b->n_groups; k++)
        b->g[k] = (ScorerGroup){.prompt = b->prompt,
                                .n_prompt = (size_t)s->P,
                                .n = G,
                                .completions = b->ptrs + (size_t)k * G,
                                .n_tokens = b->n + (size_t)k * G,
                                .is_truncated = b->cut + (size_t)k * G,
                                .stop_id = -1};
}

typedef struct {
    RmScorer      *s;
    const RmBatch *b;
    int            k0, k1; /* groups of this thread */
    int            one_at_a_time;
    double         end_s; /* run until then (or once) */
    long           done;  /* completions scored */
    pthread_t      th;
} RmWork;

static void *rm_work(void *arg)
{
    RmWork      *w = arg;
    ScorerResult res[256];
    char         why[200];
    int          bad;
    do {
        for (int k = w->k0; k < w->k1; k++) {
            const ScorerGroup *g = &w->b->g[k];
            if (w->one_at_a_time) {
                for (int i = 0; i < g->n; i++) {
                    ScorerGroup one = *g;
                    one.n = 1;
                    one.completions += i;
                    one.n_tokens += i;
                    one.is_truncated += i;
                    memset(res, 0, sizeof res[0]);
                    CHECK(rm_scorer_run(&one, w->s, res, &bad, why, sizeof why) == 0);
                }
            } else {
                memset(res, 0, sizeof res[0] * (size_t)g->n);
                CHECK(rm_scorer_run(g, w->s, res, &bad, why, sizeof why) == 0);
            }
            w->done += g->n;
        }
    } while (bench_now_s() < w->end_s);
    return NULL;
}

/* Completions/s of the reward model over b with `streams` streams, each
 * fed by a thread of its own, and blas threads per product. */
static double rm_rate(Model *m, const RmBatch *b, int streams, int blas, bool one_at_a_time)
{
    int            n_threads = streams;
    RmScorerConfig c = {.max_tokens = RM_DEFAULT_MAX_TOKENS, .streams = streams};
    tensor_set_blas_threads(blas);
    RmScorer *s = rm_scorer_borrow(m, &c);
    RmWork    warm = {.s = s, .b = b, .k0 = 0, .k1 = b->n_groups, .end_s = 0};
    rm_work(&warm); /* caches sized */
    RmWork w[RM_MAX_STREAMS];
    double t0 = bench_now_s();
    for (int i = 0; i < n_threads; i++) {
        w[i] = (RmWork){.s = s,
                        .b = b,
                        .k0 = b->n_groups * i / n_threads,
                        .k1 = b->n_groups * (i + 1) / n_threads,
                        .one_at_a_time = one_at_a_time,
                        .end_s = t0 + min_time()};
        CHECK(pthread_create(&w[i].th, NULL, rm_work, &w[i]) == 0);
    }
    long done = 0;
    for (int i = 0; i < n_threads; i++) {
        pthread_join(w[i].th, NULL);
        done += w[i].done;
    }
    double dt = bench_now_s() - t0;
    rm_scorer_free(&s);
    tensor_set_blas_threads(g_blas);
    return (double)done / dt;
}

static json_t *bench_shape(const RmShape *s)
{
    Model *m = model_new(&s->cfg);
    model_init_random(m, 1, 0.02f);
    CHECK(model_set_decode_type(m, KERN_BF16) == 0); /* the actors' default */
    printf("%s: %.1fM parameters, actor batch %d, prompt %d ids\n", s->name,
           model_num_params(m) / 1e6, s->batch, s->P);
    char h1[32], h2[32];
    snprintf(h1, sizeof h1, "rm 1 x %d BLAS", g_blas);
    snprintf(h2, sizeof h2, "rm %d x 1 BLAS", g_cpus);
    printf("  %3s %4s %4s | %15s | %14s %14s %14s | %s\n", "G", "P", "W", "actor samples/s", h1, h2,
           "rm one/pass", "rm / actor");
    json_t   *rows = json_array();
    int       Wmax = s->Ws[0] > s->Ws[1] ? s->Ws[0] : s->Ws[1];
    size_t    cap = (size_t)s->batch * Wmax;
    GenOutput out = {xmalloc(sizeof(int) * cap), xmalloc(sizeof(float) * cap),
                     xmalloc(sizeof(float) * cap), xmalloc(sizeof(int) * (size_t)s->batch),
                     xmalloc(sizeof(int) * (size_t)s->batch)};
    RmBatch  *b = xmalloc(sizeof *b);
    for (int gi = 0; gi < 2; gi++) {
        for (int wi = 0; wi < 2; wi++) {
            int    G = s->Gs[gi], W = s->Ws[wi];
            double actor = actor_rate(m, s, G, W, &out);
            rm_batch(b, s, G, W, &out);
            double rm1 = rm_rate(m, b, 1, g_blas, false);
            double rm2 = rm_rate(m, b, g_cpus, 1, false);
            double rm_one = rm_rate(m, b, g_cpus, 1, true);
            double best = fmax(rm1, rm2), ratio = best / actor;
            printf("  %3d %4d %4d | %15.1f | %14.1f %14.1f %14.1f | %5.2f %s\n", G, s->P, W, actor,
                   rm1, rm2, rm_one, ratio,
                   ratio >= 2 ? "(keeps up with 2 actors)" : "(the bottleneck at 2 actors)");
            json_array_append_new(
                rows, json_pack("{s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "G", G, "P", s->P, "W",
                                W, "actor_samples_per_s", actor, "rm_per_s_1_stream_all_blas", rm1,
                                "rm_per_s_streams_per_cpu", rm2, "rm_per_s_one_per_pass", rm_one,
                                "rm_over_actor", ratio));
            free(b->prompt);
        }
    }
    free(b);
    free(out.tokens);
    free(out.logp_sampled);
    free(out.logp_full);
    free(out.n_tokens);
    free(out.finish);
    model_free(&m);
    return rows;
}

/* SmolLM2's chat-task prompt: its real ids when the GGUF is there. */
static int *smollm2_prompt(int *P)
{
    static int ids[CHAT_TASK_PROMPT_MAX_IDS];
    Bpe       *b = NULL;
    if (bpe_load(FIXTURE_SMOLLM2_GGUF, &b) == 0) {
        ChatTaskProblem p;
        ChatTaskConfig  tc = CHAT_TASK_DEFAULTS;
        chat_task_problem(&tc, 1, 0, false, &p);
        if (chat_task_prompt_ids(b, p.question, ids, CHAT_TASK_PROMPT_MAX_IDS, P) == 0) {
            bpe_free(&b);
            return ids;
        }
        bpe_free(&b);
    }
    *P = 48;
    for (int i = 0; i < *P; i++) ids[i] = (i * 97 + 13) % 49152;
    return ids;
}

int main(int argc, char **argv)
{
    const char *out = "build/bench.json", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            g_quick = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [OUT.json (default build/bench.json)] [--quick (0.5 s per figure)] "
                   "[--only char|smollm2]\n",
                   argv[0]);
            return 0;
        } else
            out = argv[i];
    }
    log_init("bench_rm", LOG_WARN);
    g_blas = tensor_blas_threads();
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g_cpus = (int)(cpus < 1 ? 1 : cpus > RM_MAX_STREAMS ? RM_MAX_STREAMS : cpus);
    /* The char model: the learner's defaults and the built-in task. */
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig tiny = fixture_model_config(64, 2, 4, 4, 128, tok_vocab_size(tok), 64);
    tiny.has_value_head = true;
    static int char_prompt[32];
    int        cP = 0;
    CHECK(tok_encode(tok, "123+45=", 7, TOK_ENC_BOS, char_prompt, 32, &cP) == 0);
    ModelConfig smol = bench_smollm2_config();
    smol.has_value_head = true;
    int     sP = 0;
    int    *sp = smollm2_prompt(&sP);
    RmShape shapes[] = {
        {"char model (learner defaults)", tiny, 32, {8, 4}, {8, 16}, char_prompt, cP},
        {"smollm2-135m-shape", smol, 8, {4, 8}, {16, 64}, sp, sP},
    };
    printf("threads: par pool %d, OpenBLAS %d, %d CPUs%s\n", par_threads(), g_blas, g_cpus,
           g_quick ? "; --quick: 0.5 s per figure, a smoke run" : "");
    json_t *res = json_object();
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const char *key = i ? "smollm2" : "char";
        if (!only || !strcmp(only, key)) json_object_set_new(res, key, bench_shape(&shapes[i]));
    }
    tok_free(&tok);
    return bench_json_write("bench_rm", out, "rm", res) ? 1 : 0;
}
