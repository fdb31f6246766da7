/* bench_slots: the share of wasted decode slots, before and after
 * continuous batching, on SmolLM2-135M-Instruct and the chat arithmetic
 * task the SmolLM2 run trains on.
 *
 * The same sequences are generated three times, each with its own sampling
 * stream so every way draws the same completions: in chunks of one lease
 * (--lease-prompts x --group sequences, the learner's default 4 x 4) through
 * --batch slots, each running until its longest completion ends (what an
 * actor does, before and after continuous batching, when a lease holds no
 * more sequences than --batch); in chunks of --batch sequences (the same
 * with leases that fill the slots); and all at once through --batch slots
 * with gen's continuous batching (a finished sequence's slot goes at once
 * to the next waiting prompt: what an actor does within a lease of more
 * sequences than slots); and a fourth time as leases joining one running
 * generation (gen_add), two in flight at most, the next queued once the
 * current one's sequences all hold slots (what an actor filling its slots
 * across leases does when each grant arrives at once). Slot use is
 * counted, not timed (gen_stats), so the figures do not depend on how busy
 * the machine is. Writes them under "slots" in the JSON file given as the
 * first argument (default build/bench.json), keeping other keys. Without the
 * model file it prints "skipped: run make model" and exits 0.
 *
 *   bench_slots [OUT.json] [--model PATH.gguf] [--prompts N] [--group G]
 *               [--lease-prompts L] [--batch B] [--new W] [--temperature T]
 *               [--seed S] */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/formats/bpe.h"
#include "common/formats/bpe_gguf.h"
#include "common/formats/gguf_llama.h"
#include "common/nn/gen.h"
#include "common/nn/model.h"
#include "common/tasks/chat_task.h"
#include "tests/bench/bench_common.h"

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

typedef struct {
    const char *out;
    const char *model;
    int         prompts;     /* chat problems */
    int         group;       /* completions per problem */
    int         lease;       /* problems per lease */
    int         batch;       /* slots */
    int         n_new;       /* max new tokens per completion */
    double      temperature; /* sampling temperature */
    long        seed;        /* problems and sampling streams */
} Args;

/* Progress over the completions of one way of generating. */
typedef struct {
    Progress p;
    int      done;
} Count;

static int count_done(void *ctx, int seq)
{
    (void)seq;
    Count *c = ctx;
    progress_update(&c->p, ++c->done, NULL, false);
    return 0;
}

/* Generates the N sequences in runs of chunk (N: all at once, continuous)
 * with fresh per-sequence streams; returns the slot counters spent. */
static GenStats run(Generator *g, const GenConfig *base, int N, int chunk, const char *label,
                    const int *const *prompts, const int *lens, Rng *rngs, uint64_t seed,
                    GenOutput *out)
{
    Count     c = {.done = 0};
    GenConfig cfg = *base;
    cfg.on_done = count_done;
    cfg.done_ctx = &c;
    for (int i = 0; i < N; i++) rng_seed(&rngs[i], seed * 1000003u + (uint64_t)i);
    progress_start(&c.p, label, "completion", N);
    GenStats a, b;
    gen_stats(g, &a);
    for (int s0 = 0; s0 < N; s0 += chunk) {
        int       n = N - s0 < chunk ? N - s0 : chunk;
        GenOutput o = {
            out->tokens + (size_t)s0 * cfg.max_new, out->logp_sampled + (size_t)s0 * cfg.max_new,
            out->logp_full + (size_t)s0 * cfg.max_new, out->n_tokens + s0, out->finish + s0};
        CHECK(gen_run(g, &cfg, n, prompts + s0, lens + s0, rngs + s0, &o) == 0);
    }
    progress_update(&c.p, c.done, NULL, true);
    progress_end(&c.p);
    gen_stats(g, &b);
    return (GenStats){b.steps - a.steps, b.slot_steps - a.slot_steps, b.rows_used - a.rows_used,
                      b.prefill_rows - a.prefill_rows};
}

/* Across leases: on_done's context counts each lease's unfinished sequences. */
typedef struct {
    Count c;
    int   L;    /* sequences per lease */
    int  *left; /* (leases) sequences not finished */
} Across;

static int across_done(void *ctx, int seq)
{
    Across *x = ctx;
    x->left[seq / x->L]--;
    return count_done(&x->c, seq);
}

/* Generates the N sequences as leases of L joining one running run (what
 * an actor that fills its slots across leases does, with the next grant
 * arriving at once): lease k is queued as soon as every sequence of lease
 * k-1 holds a slot and lease k-2 is finished, so at most two leases are in
 * flight. Returns the slot counters spent. */
static GenStats run_across(Generator *g, const GenConfig *base, int N, int L,
                           const int *const *prompts, const int *lens, Rng *rngs, uint64_t seed,
                           GenOutput *out)
{
    int       n_leases = (N + L - 1) / L;
    Across    x = {.c = {.done = 0}, .L = L, .left = xmalloc(sizeof(int) * (size_t)n_leases)};
    GenConfig cfg = *base;
    cfg.on_done = across_done;
    cfg.done_ctx = &x;
    for (int i = 0; i < N; i++) rng_seed(&rngs[i], seed * 1000003u + (uint64_t)i);
    for (int k = 0; k < n_leases; k++) x.left[k] = N - k * L < L ? N - k * L : L;
    progress_start(&x.c.p, "across leases", "completion", N);
    GenStats a, b;
    gen_stats(g, &a);
    CHECK(gen_open(g, &cfg, N, prompts, lens, rngs, out) == 0);
    int next = 0; /* the next lease to queue */
    while (next < n_leases || gen_pending(g) > 0) {
        if (next < n_leases && gen_waiting(g) == 0 && (next < 2 || x.left[next - 2] == 0)) {
            CHECK(gen_add(g, next * L, x.left[next]) == 0);
            next++;
        }
        CHECK(gen_step(g, true) == 0);
    }
    progress_update(&x.c.p, x.c.done, NULL, true);
    progress_end(&x.c.p);
    gen_stats(g, &b);
    free(x.left);
    return (GenStats){b.steps - a.steps, b.slot_steps - a.slot_steps, b.rows_used - a.rows_used,
                      b.prefill_rows - a.prefill_rows};
}

static json_t *report(const char *label, const GenStats *s)
{
    double used = s->slot_steps ? (double)s->rows_used / (double)s->slot_steps : 0.0;
    printf("%-22s %6llu steps, %7llu slot steps, %7llu used: %5.1f%% used, %5.1f%% wasted\n", label,
           (unsigned long long)s->steps, (unsigned long long)s->slot_steps,
           (unsigned long long)s->rows_used, 100.0 * used, 100.0 * (1.0 - used));
    return json_pack("{s:I, s:I, s:I, s:I, s:f}", "steps", (json_int_t)s->steps, "slot_steps",
                     (json_int_t)s->slot_steps, "rows_used", (json_int_t)s->rows_used,
                     "prefill_rows", (json_int_t)s->prefill_rows, "pct_wasted",
                     100.0 * (1.0 - used));
}

static int parse_args(int argc, char **argv, Args *a)
{
    *a = (Args){.out = "build/bench.json",
                .model = DEFAULT_MODEL,
                .prompts = 32,
                .group = 4,
                .lease = 4,
                .batch = 32,
                .n_new = 16,
                .temperature = 0.7,
                .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            printf(
                "usage: %s [OUT.json] [--model PATH] [--prompts N] [--group G] "
                "[--lease-prompts L] [--batch B] [--new W] [--temperature T] [--seed S]\n"
                "  OUT.json           results file, other keys kept (default build/bench.json)\n"
                "  --model PATH       GGUF file (default %s)\n"
                "  --prompts N        chat arithmetic problems (default 32)\n"
                "  --group G          completions per problem (default 4, the SmolLM2 run's)\n"
                "  --lease-prompts L  problems per lease (default 4, the learner's)\n"
                "  --batch B          slots, the actor's --batch (default 32, its default)\n"
                "  --new W            new tokens per completion at most (default 16, the run's)\n"
                "  --temperature T    sampling temperature (default 0.7, the run's)\n"
                "  --seed S           problems and sampling streams (default 1)\n",
                argv[0], DEFAULT_MODEL);
            return 1;
        }
        if (s[0] != '-') {
            a->out = s;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_slots: %s needs a value (see --help)\n", s);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(s, "--model")) {
            a->model = v;
            continue;
        }
        char  *end;
        double x = strtod(v, &end);
        bool   is_int = x == floor(x) && x >= 1 && x <= 4096;
        if (*end) is_int = false;
        if (!strcmp(s, "--temperature") && !*end && x > 0 && x <= 10)
            a->temperature = x;
        else if (!strcmp(s, "--prompts") && is_int)
            a->prompts = (int)x;
        else if (!strcmp(s, "--group") && is_int)
            a->group = (int)x;
        else if (!strcmp(s, "--lease-prompts") && is_int)
            a->lease = (int)x;
        else if (!strcmp(s, "--batch") && is_int)
            a->batch = (int)x;
        else if (!strcmp(s, "--new") && is_int)
            a->n_new = (int)x;
        else if (!strcmp(s, "--seed") && is_int)
            a->seed = (long)x;
        else {
            fprintf(stderr,
                    "bench_slots: %s '%s': unknown flag or bad value (integers 1..4096; "
                    "temperature in (0, 10])\n",
                    s, v);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    Args a;
    int  rc = parse_args(argc, argv, &a);
    if (rc) return rc > 0 ? 0 : 2;
    log_init("bench_slots", LOG_WARN);
    if (access(a.model, R_OK) != 0) {
        printf("bench_slots: skipped: run make model (no %s)\n", a.model);
        return 0;
    }
    Model *m = NULL;
    Bpe   *bpe = NULL;
    if (gguf_load(a.model, CHAT_TASK_PROMPT_MAX_IDS + a.n_new, &m) != 0) return 1;
    if (bpe_load(a.model, &bpe) != 0) return 1;
    /* The actor's default decode precision: counts do not depend on it,
     * only the time the smoke run takes. */
    CHECK(model_set_decode_type(m, KERN_BF16) == 0);
    int            N = a.prompts * a.group, W = a.n_new, max_len = 0;
    int           *ids = xmalloc(sizeof(int) * (size_t)a.prompts * CHAT_TASK_PROMPT_MAX_IDS);
    const int    **prompts = xmalloc(sizeof *prompts * (size_t)N);
    int           *lens = xmalloc(sizeof(int) * (size_t)N);
    ChatTaskConfig tc = CHAT_TASK_DEFAULTS;
    for (int p = 0; p < a.prompts; p++) {
        ChatTaskProblem pr;
        int            *at = ids + (size_t)p * CHAT_TASK_PROMPT_MAX_IDS, n = 0;
        chat_task_problem(&tc, (uint64_t)a.seed, (uint64_t)p, false, &pr);
        CHECK(chat_task_prompt_ids(bpe, pr.question, at, CHAT_TASK_PROMPT_MAX_IDS, &n) == 0);
        for (int c = 0; c < a.group; c++) {
            prompts[p * a.group + c] = at;
            lens[p * a.group + c] = n;
        }
        if (n + W > max_len) max_len = n + W;
    }
    Generator *g = gen_new(m, a.batch, max_len);
    GenConfig  gc = {.sampler = {.temperature = (float)a.temperature, .top_k = 0, .top_p = 1.0f},
                     .max_new = W,
                     .stop_id = bpe_eot_id(bpe),
                     .is_rng_each = true};
    size_t     NW = (size_t)N * W;
    GenOutput  o[2];
    for (int k = 0; k < 2; k++)
        o[k] = (GenOutput){xmalloc(sizeof(int) * NW), xmalloc(sizeof(float) * NW),
                           xmalloc(sizeof(float) * NW), xmalloc(sizeof(int) * (size_t)N),
                           xmalloc(sizeof(int) * (size_t)N)};
    Rng *rngs = xmalloc(sizeof(Rng) * (size_t)N);
    printf("slots: %d chat problems x %d completions = %d sequences, %d slots, at most %d new "
           "tokens, T %.2f, stop at id %d\n",
           a.prompts, a.group, N, a.batch, W, a.temperature, gc.stop_id);
    fflush(stdout); /* before the progress lines on stderr */
    int      L = a.lease * a.group < N ? a.lease * a.group : N;
    uint64_t sd = (uint64_t)a.seed;
    GenStats lease = run(g, &gc, N, L, "per lease", prompts, lens, rngs, sd, &o[0]);
    GenStats chunk = run(g, &gc, N, a.batch, "chunked", prompts, lens, rngs, sd, &o[0]);
    GenStats after = run(g, &gc, N, N, "continuous", prompts, lens, rngs, sd, &o[1]);
    /* The ways drew from the same streams: the same completions, up to the
     * batched arithmetic's rounding flipping a draw (the chunked run's
     * against the continuous one's). */
    int n_same = 0, n_stop = 0, n_len = 0;
    for (int i = 0; i < N; i++) {
        n_same += o[0].n_tokens[i] == o[1].n_tokens[i] &&
                  !memcmp(o[0].tokens + (size_t)i * W, o[1].tokens + (size_t)i * W,
                          sizeof(int) * (size_t)o[0].n_tokens[i]);
        n_stop += o[1].finish[i] == GEN_FINISH_STOP;
        n_len += o[1].finish[i] == GEN_FINISH_LENGTH;
    }
    /* Across leases, into the chunked run's outputs (compared above). */
    GenStats across = run_across(g, &gc, N, L, prompts, lens, rngs, sd, &o[0]);
    int      n_same_across = 0;
    for (int i = 0; i < N; i++)
        n_same_across += o[0].n_tokens[i] == o[1].n_tokens[i] &&
                         !memcmp(o[0].tokens + (size_t)i * W, o[1].tokens + (size_t)i * W,
                                 sizeof(int) * (size_t)o[0].n_tokens[i]);
    printf("completions: %llu tokens, %d stopped by themselves, %d at %d tokens; %d of %d the "
           "same chunked and continuous, %d across leases and continuous\n",
           (unsigned long long)after.rows_used, n_stop, n_len, W, n_same, N, n_same_across);
    json_t *res =
        json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:i}", "file", a.model,
                  "sequences", N, "group", a.group, "lease_sequences", L, "slots", a.batch,
                  "max_new", W, "temperature", a.temperature, "finished_by_stop", n_stop,
                  "same_completions", n_same, "same_completions_across", n_same_across);
    char what[64];
    snprintf(what, sizeof what, "leases of %d", L);
    json_object_set_new(res, "per_lease", report(what, &lease));
    snprintf(what, sizeof what, "chunks of %d", a.batch);
    json_object_set_new(res, "chunked", report(what, &chunk));
    snprintf(what, sizeof what, "leases of %d across", L);
    json_object_set_new(res, "across_leases", report(what, &across));
    json_object_set_new(res, "continuous", report("continuous", &after));
    rc = bench_json_write("bench_slots", a.out, "slots", res);
    for (int k = 0; k < 2; k++) {
        free(o[k].tokens);
        free(o[k].logp_sampled);
        free(o[k].logp_full);
        free(o[k].n_tokens);
        free(o[k].finish);
    }
    free(rngs);
    free(lens);
    free(prompts);
    free(ids);
    gen_free(&g);
    bpe_free(&bpe);
    model_free(&m);
    return rc ? 1 : 0;
}
