#include "common/tasks/eval.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/nn/gen.h"

/* Longest arithmetic completion worth waiting for: the answer, a sign and EOS. */
#define EVAL_MAX_NEW 10
#define EVAL_WHY_MAX 200

/* One prompt in flight: its rendered ids, what its scorer needs, and its
 * samples as their batches finish. */
typedef struct {
    bool        is_used;
    uint64_t    index;
    char       *label;
    int        *ids; /* (n_ids) */
    int         n_ids;
    char       *prompt; /* its text without special tokens (the scorer's ScoreInput.prompt) */
    char       *answer, *meta, *task;
    ScoreSpec   spec;
    EvalSample *samples; /* (n_samples) */
    char      **texts;   /* (n_samples) with is_keep_text */
    int         n_done;
} Item;

typedef struct Run Run;

/* A source of prompts: how many it holds, the longest prompt in ids, and
 * prompt i read into an item (label, ids, prompt text, answer, meta, task,
 * spec). */
typedef struct {
    uint64_t (*size)(const Run *r);
    int (*max_ids)(const Run *r);
    int (*read)(Run *r, uint64_t i, Item *it);
} SourceOps;

struct Run {
    Model            *m;
    const Tok        *tok;
    const Bpe        *bpe;
    const EvalSource *src;
    const EvalConfig *cfg;
    const SourceOps  *ops;
    int               B, W; /* batch rows, max_new */
    Generator        *g;
    GenConfig         gc;
    GenOutput         go;         /* (B, W) ids and log-probs, (B) counts and finish reasons */
    const int       **pp;         /* (B) prompts of the rows */
    int              *plen;       /* (B) */
    Rng              *rngs;       /* (B) each row's sample's generator */
    int              *row_item;   /* (B) the item of each row */
    int              *row_sample; /* (B) the sample of its item */
    char             *rtext;      /* (B, tcap) each row's completion text */
    size_t           *rlen;       /* (B) bytes in rtext while generating */
    size_t            tcap;
    char             *rwhy;  /* (B, EVAL_WHY_MAX) why a row was not scored, "" if it was */
    Item             *items; /* (B + 1) */
    int              *order; /* (B + 1) items in flight, in prompt order */
    int               n_order;
    EvalStats         st;
};

/* ---- sources ------------------------------------------------------------ */

static char *label_of(const char *fmt, const char *a, uint64_t b)
{
    int   n = snprintf(NULL, 0, fmt, a, b);
    char *s = xmalloc((size_t)n + 1);
    snprintf(s, (size_t)n + 1, fmt, a, b);
    return s;
}

/* Decodes ids without special tokens (caller frees). */
static char *decode_text(const Run *r, const int *ids, int n)
{
    size_t cap = r->bpe ? bpe_decode_max_bytes(r->bpe, n) : TOK_DECODE_MAX_BYTES(n);
    char  *s = xmalloc(cap);
    int    rc = r->bpe ? bpe_decode(r->bpe, ids, n, 0, s, cap, NULL)
                       : tok_decode(r->tok, ids, n, 0, s, cap, NULL);
    if (rc) s[0] = '\0';
    return s;
}

static uint64_t data_size(const Run *r)
{
    return dataset_size(r->src->data);
}

static int data_max_ids(const Run *r)
{
    return dataset_max_ids(r->src->data);
}

static int data_read(Run *r, uint64_t i, Item *it)
{
    DatasetRecord rec = {0};
    int           rc = dataset_read(r->src->data, i, &rec);
    if (rc == 0) {
        it->label = label_of("%s:%" PRIu64, dataset_path(r->src->data), rec.line);
        it->ids = rec.ids;
        it->n_ids = rec.n_ids;
        it->answer = rec.answer;
        it->meta = rec.meta;
        it->task = rec.task;
        it->spec = rec.spec;
        it->prompt = decode_text(r, it->ids, it->n_ids);
        rec = (DatasetRecord){0}; /* the item owns its strings and ids now */
    }
    dataset_record_free(&rec);
    return rc;
}

static uint64_t task_size(const Run *r)
{
    return r->src->n;
}

/* Fills the scorer part of a built-in task's item. */
static void task_item(Item *it, const char *task, const char *answer, const char *prompt)
{
    char why[EVAL_WHY_MAX];
    it->task = xstrdup(task);
    it->answer = xstrdup(answer);
    it->meta = xstrdup("");
    it->prompt = xstrdup(prompt);
    CHECK(score_spec_parse(task, score_builtin, NULL, &it->spec, why, sizeof why) == 0);
}

static int arith_max_ids(const Run *r)
{
    return TASK_TEXT_MAX;
}

static int arith_read(Run *r, uint64_t i, Item *it)
{
    TaskProblem p;
    task_problem(r->src->task, r->src->task_seed, i, !r->src->is_train, &p);
    it->ids = xmalloc(sizeof(int) * TASK_TEXT_MAX);
    int rc = tok_encode(r->tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS, it->ids, TASK_TEXT_MAX,
                        &it->n_ids);
    if (rc) return rc;
    it->label = label_of("%s:%" PRIu64, "arith", i);
    task_item(it, "arith", p.answer, p.prompt);
    return 0;
}

static int chat_max_ids(const Run *r)
{
    return CHAT_TASK_PROMPT_MAX_IDS;
}

static int chat_read(Run *r, uint64_t i, Item *it)
{
    ChatTaskProblem p;
    chat_task_problem(r->src->task, r->src->task_seed, i, !r->src->is_train, &p);
    it->ids = xmalloc(sizeof(int) * CHAT_TASK_PROMPT_MAX_IDS);
    int rc =
        chat_task_prompt_ids(r->bpe, p.question, it->ids, CHAT_TASK_PROMPT_MAX_IDS, &it->n_ids);
    if (rc) return rc;
    it->label = label_of("%s:%" PRIu64, CHAT_TASK_NAME, i);
    task_item(it, CHAT_TASK_NAME, p.answer, p.question);
    return 0;
}

static const SourceOps k_sources[] = {
    [EVAL_SRC_DATASET] = {data_size, data_max_ids, data_read},
    [EVAL_SRC_ARITH] = {task_size, arith_max_ids, arith_read},
    [EVAL_SRC_CHAT] = {task_size, chat_max_ids, chat_read},
};

/* ---- items -------------------------------------------------------------- */

static void item_free(Item *it, int n_samples)
{
    if (it->texts)
        for (int j = 0; j < n_samples; j++) free(it->texts[j]);
    free(it->texts);
    free(it->samples);
    free(it->label);
    free(it->ids);
    free(it->prompt);
    free(it->answer);
    free(it->meta);
    free(it->task);
    memset(it, 0, sizeof *it);
}

/* Reads prompt i into a free item; *slot is -1 when its scorer runs only
 * in the reward server (skipped). */
static int item_read(Run *r, uint64_t i, int *slot)
{
    int k = 0;
    while (r->items[k].is_used) k++;
    CHECK(k <= r->B); /* at most B + 1 prompts are ever in flight */
    Item *it = &r->items[k];
    memset(it, 0, sizeof *it);
    it->is_used = true;
    it->index = i;
    int rc = r->ops->read(r, i, it);
    if (rc == 0 && !score_spec_is_local(r->cfg->spec ? r->cfg->spec : &it->spec)) {
        r->st.skipped++;
        item_free(it, r->cfg->n_samples);
        *slot = -1;
        return 0;
    }
    if (rc) {
        item_free(it, r->cfg->n_samples);
        return rc;
    }
    int n = r->cfg->n_samples;
    it->samples = xcalloc((size_t)n, sizeof *it->samples);
    if (r->cfg->is_keep_text) it->texts = xcalloc((size_t)n, sizeof *it->texts);
    r->order[r->n_order++] = k;
    *slot = k;
    return 0;
}

/* Hands the finished prompts at the front of the queue to the callback. */
static int items_report(Run *r, EvalPromptFn fn, void *ctx)
{
    int n = r->cfg->n_samples, rc = 0;
    while (r->n_order > 0 && r->items[r->order[0]].n_done == n) {
        Item *it = &r->items[r->order[0]];
        for (int j = 0; j < n && it->texts; j++) it->samples[j].text = it->texts[j];
        EvalPrompt p = {.index = it->index,
                        .label = it->label,
                        .prompt = it->prompt,
                        .answer = it->answer,
                        .task = it->task,
                        .spec = r->cfg->spec ? r->cfg->spec : &it->spec,
                        .samples = it->samples,
                        .n_samples = n};
        r->st.prompts++;
        if (fn && rc == 0) rc = fn(ctx, &p);
        item_free(it, n);
        memmove(r->order, r->order + 1, sizeof(int) * (size_t)--r->n_order);
        if (rc) break;
    }
    return rc;
}

/* ---- generation --------------------------------------------------------- */

/* Sample j of prompt i's generator seed: splitmix64 steps over both. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t sample_seed(uint64_t seed, uint64_t i, int j)
{
    return mix64(mix64(seed ^ mix64(i)) + (uint64_t)j);
}

/* The first stop string in text[from..n), or NULL. */
static const char *find_stop(const EvalConfig *cfg, const char *text, size_t n, size_t from)
{
    const char *best = NULL;
    for (int s = 0; s < cfg->n_stops; s++) {
        size_t      ls = strlen(cfg->stops[s]);
        size_t      at = from >= ls ? from - ls + 1 : 0;
        const char *hit = at < n ? memmem(text + at, n - at, cfg->stops[s], ls) : NULL;
        if (hit && (!best || hit < best)) best = hit;
    }
    return best;
}

/* gen_run's stop test: appends the newest token's bytes to the row's text
 * and looks for a stop string in the bytes it may complete. */
static bool stop_test(void *ctx, int row, const int *tokens, int n_tokens)
{
    Run   *r = ctx;
    int    id = tokens[n_tokens - 1];
    char  *t = r->rtext + (size_t)row * r->tcap;
    size_t len = r->rlen[row], add = 0;
    if (r->bpe) {
        /* Ids past the vocabulary (a model may have more) decode to nothing. */
        if (id >= 0 && id < bpe_vocab_size(r->bpe) &&
            bpe_decode(r->bpe, &id, 1, 0, t + len, r->tcap - len, &add))
            add = 0;
    } else {
        char c = tok_char(r->tok, id);
        if (c) t[len] = c, add = 1;
    }
    r->rlen[row] = len + add;
    return add > 0 && find_stop(r->cfg, t, len + add, len) != NULL;
}

/* ---- scoring ------------------------------------------------------------ */

/* The value of the first component named format*, or 0. */
static float format_of(const ScoreResult *res)
{
    for (int i = 0; i < res->n_components; i++)
        if (!strncmp(res->components[i].name, "format", 6)) return res->components[i].value;
    return 0.0f;
}

static void score_row(Run *r, int row)
{
    Item            *it = &r->items[r->row_item[row]];
    EvalSample      *s = &it->samples[r->row_sample[row]];
    const char      *text = r->rtext + (size_t)row * r->tcap;
    char            *why = r->rwhy + (size_t)row * EVAL_WHY_MAX;
    const ScoreSpec *spec = r->cfg->spec ? r->cfg->spec : &it->spec;
    ScoreInput       in = {.prompt = it->prompt,
                           .completion = text,
                           .answer = it->answer,
                           .meta_json = it->meta,
                           .is_truncated = r->go.finish[row] == GEN_FINISH_LENGTH};
    ScoreResult      res;
    why[0] = '\0';
    s->n_tokens = r->go.n_tokens[row];
    s->finish = r->go.finish[row];
    s->is_scored = score_spec_run(spec, &in, &res, why, EVAL_WHY_MAX) == 0;
    if (!why[0] && !s->is_scored) snprintf(why, EVAL_WHY_MAX, "refused by its scorer");
    if (s->is_scored) {
        s->reward = res.reward;
        s->format = format_of(&res);
        s->is_correct = score_is_correct(&res);
    }
    s->has_answer = score_spec_extract(spec, &in, s->answer, sizeof s->answer);
}

typedef struct {
    Run       *r;
    int        n;
    atomic_int next;
} ScoreJob;

static void *score_worker(void *arg)
{
    ScoreJob *j = arg;
    for (int k; (k = atomic_fetch_add(&j->next, 1)) < j->n;) score_row(j->r, k);
    return NULL;
}

/* Scores rows 0..nb-1 on up to score_threads threads (the caller's among
 * them); a thread that cannot start leaves its share to the others. */
static void score_rows(Run *r, int nb)
{
    ScoreJob  job = {.r = r, .n = nb};
    int       nt = r->cfg->score_threads < nb ? r->cfg->score_threads : nb, started = 0;
    pthread_t th[64];
    atomic_init(&job.next, 0);
    if (nt > 64) nt = 64;
    for (int t = 1; t < nt; t++)
        if (pthread_create(&th[started], NULL, score_worker, &job) == 0) started++;
    score_worker(&job);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
}

/* Decodes each row's completion (without its end token), cuts it at the
 * first stop string and scores it; records the samples in their items. */
static void finish_rows(Run *r, int nb)
{
    for (int k = 0; k < nb; k++) {
        int        f = r->go.finish[k], nt = r->go.n_tokens[k] - (f == GEN_FINISH_STOP);
        const int *ct = r->go.tokens + (size_t)k * (size_t)r->W;
        char      *t = r->rtext + (size_t)k * r->tcap;
        size_t     len = 0;
        /* Special ids are skipped, so control tokens cannot fake an answer. */
        int drc = r->bpe ? bpe_decode(r->bpe, ct, nt, 0, t, r->tcap, &len)
                         : tok_decode(r->tok, ct, nt, 0, t, r->tcap, &len);
        if (drc) t[0] = '\0', len = 0;
        const char *cut = find_stop(r->cfg, t, len, 0);
        if (cut) *(char *)cut = '\0';
        r->st.tokens += (uint64_t)r->go.n_tokens[k];
    }
    score_rows(r, nb);
    for (int k = 0; k < nb; k++) {
        Item       *it = &r->items[r->row_item[k]];
        int         j = r->row_sample[k];
        const char *why = r->rwhy + (size_t)k * EVAL_WHY_MAX;
        if (!it->samples[j].is_scored && r->st.unscored++ == 0)
            log_warn("eval: %s: sample %d not scored, counted as 0 (%s)", it->label, j, why);
        if (it->texts) it->texts[j] = xstrdup(r->rtext + (size_t)k * r->tcap);
        it->n_done++;
        r->st.samples++;
    }
}

/* ---- the run ------------------------------------------------------------ */

int eval_config_check(const EvalConfig *cfg, char *why, size_t why_len)
{
    if (cfg->n_samples < 1 || cfg->max_new < 1 || cfg->batch < 1 || cfg->score_threads < 1) {
        snprintf(why, why_len, "n_samples, max_new, batch and score_threads must be >= 1");
        return ERR_ARG;
    }
    if (sampler_config_validate(&cfg->sampler, why, why_len)) return ERR_ARG;
    if (cfg->n_stops < 0 || cfg->n_stops > EVAL_MAX_STOPS) {
        snprintf(why, why_len, "%d stop strings, at most %d", cfg->n_stops, EVAL_MAX_STOPS);
        return ERR_ARG;
    }
    for (int s = 0; s < cfg->n_stops; s++) {
        size_t n = strlen(cfg->stops[s]);
        if (n == 0 || n >= EVAL_STOP_MAX) {
            snprintf(why, why_len, "stop string %d has %zu bytes, expected 1..%d", s + 1, n,
                     EVAL_STOP_MAX - 1);
            return ERR_ARG;
        }
    }
    return 0;
}

static void run_alloc(Run *r)
{
    int B = r->B, W = r->W;
    r->pp = xcalloc((size_t)B, sizeof *r->pp);
    r->plen = xcalloc((size_t)B, sizeof *r->plen);
    r->rngs = xcalloc((size_t)B, sizeof *r->rngs);
    r->row_item = xcalloc((size_t)B, sizeof *r->row_item);
    r->row_sample = xcalloc((size_t)B, sizeof *r->row_sample);
    r->tcap = r->bpe ? bpe_decode_max_bytes(r->bpe, W) : TOK_DECODE_MAX_BYTES(W);
    r->rtext = xmalloc(r->tcap * (size_t)B);
    r->rlen = xcalloc((size_t)B, sizeof *r->rlen);
    r->rwhy = xmalloc((size_t)EVAL_WHY_MAX * (size_t)B);
    r->items = xcalloc((size_t)B + 1, sizeof *r->items);
    r->order = xcalloc((size_t)B + 1, sizeof *r->order);
    r->go = (GenOutput){.tokens = xmalloc(sizeof(int) * (size_t)B * (size_t)W),
                        .logp_sampled = xmalloc(sizeof(float) * (size_t)B * (size_t)W),
                        .logp_full = xmalloc(sizeof(float) * (size_t)B * (size_t)W),
                        .n_tokens = xmalloc(sizeof(int) * (size_t)B),
                        .finish = xmalloc(sizeof(int) * (size_t)B)};
}

static void run_free(Run *r)
{
    for (int k = 0; k <= r->B; k++)
        if (r->items[k].is_used) item_free(&r->items[k], r->cfg->n_samples);
    free(r->go.finish);
    free(r->go.n_tokens);
    free(r->go.logp_full);
    free(r->go.logp_sampled);
    free(r->go.tokens);
    free(r->order);
    free(r->items);
    free(r->rwhy);
    free(r->rlen);
    free(r->rtext);
    free(r->row_sample);
    free(r->row_item);
    free(r->rngs);
    free(r->plen);
    free(r->pp);
    gen_free(&r->g);
}

int eval_run(Model *m, const Tok *tok, const Bpe *bpe, const EvalSource *src, const EvalConfig *cfg,
             EvalPromptFn fn, void *ctx, EvalStats *stats)
{
    char why[EVAL_WHY_MAX];
    CHECK(!tok != !bpe && (src->kind != EVAL_SRC_ARITH || tok) &&
          (src->kind != EVAL_SRC_CHAT || bpe) && (src->kind != EVAL_SRC_DATASET || src->data));
    CHECK(eval_config_check(cfg, why, sizeof why) == 0); /* the caller checked outside input */
    Run r = {.m = m, .tok = tok, .bpe = bpe, .src = src, .cfg = cfg, .ops = &k_sources[src->kind]};
    r.B = cfg->batch;
    r.W = cfg->max_new;
    uint64_t N = src->n < r.ops->size(&r) ? src->n : r.ops->size(&r);
    int      T = r.ops->max_ids(&r) + r.W + 1;
    if (T > model_config(m)->max_seq_len) T = model_config(m)->max_seq_len;
    run_alloc(&r);
    r.g = gen_new(m, r.B, T);
    r.gc = (GenConfig){.sampler = cfg->sampler,
                       .max_new = r.W,
                       .stop_id = bpe ? bpe_eot_id(bpe) : TOK_EOS,
                       .is_stop = cfg->n_stops > 0 ? stop_test : NULL,
                       .stop_ctx = &r,
                       .is_rng_each = true};
    int      rc = 0, cur = -1, cur_j = 0;
    uint64_t next = 0;
    while (rc == 0) {
        int nb = 0;
        while (nb < r.B && rc == 0) {
            if (cur < 0) {
                if (next >= N) break;
                rc = item_read(&r, next++, &cur);
                cur_j = 0;
                continue;
            }
            Item *it = &r.items[cur];
            r.pp[nb] = it->ids;
            r.plen[nb] = it->n_ids;
            r.row_item[nb] = cur;
            r.row_sample[nb] = cur_j;
            r.rlen[nb] = 0;
            rng_seed(&r.rngs[nb], sample_seed(cfg->seed, it->index, cur_j));
            nb++;
            if (++cur_j == cfg->n_samples) cur = -1;
        }
        if (rc || nb == 0) break;
        if ((rc = gen_run(r.g, &r.gc, nb, r.pp, r.plen, r.rngs, &r.go))) break;
        finish_rows(&r, nb);
        rc = items_report(&r, fn, ctx);
    }
    if (stats) *stats = r.st;
    run_free(&r);
    return rc;
}

/* ---- the greedy held-out evaluations ------------------------------------ */

typedef struct {
    double correct, format, reward;
    int    n;
} Tally;

static int tally(void *ctx, const EvalPrompt *p)
{
    Tally            *t = ctx;
    const EvalSample *s = &p->samples[0];
    t->correct += s->is_correct;
    t->format += s->format;
    t->reward += s->reward;
    t->n++;
    if (t->n <= 3)
        log_debug("eval: %s -> reward %.3f (answer '%.40s')", p->label, s->reward, p->answer);
    return 0;
}

static EvalConfig greedy_config(int batch, int max_new)
{
    return (EvalConfig){.n_samples = 1,
                        .sampler = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
                        .max_new = max_new,
                        .batch = batch,
                        .seed = 1, /* greedy draws nothing */
                        .score_threads = 1};
}

int eval_arith(Model *m, const Tok *tok, const TaskConfig *task, uint64_t seed, int n, int batch,
               EvalResult *out)
{
    CHECK(n > 0 && batch > 0);
    EvalSource src = {.kind = EVAL_SRC_ARITH, .task = task, .task_seed = seed, .n = (uint64_t)n};
    EvalConfig cfg = greedy_config(batch, EVAL_MAX_NEW);
    Tally      t = {0};
    int        rc = eval_run(m, tok, NULL, &src, &cfg, tally, &t, NULL);
    *out = (EvalResult){.accuracy = t.correct / n, .format = t.format / n, .n = n};
    out->reward = out->accuracy;
    return rc;
}

int eval_chat(Model *m, const Bpe *bpe, const ChatTaskConfig *task, uint64_t seed, int n, int batch,
              int max_new, EvalResult *out)
{
    CHECK(n > 0 && batch > 0 && max_new > 0);
    EvalSource src = {.kind = EVAL_SRC_CHAT, .task = task, .task_seed = seed, .n = (uint64_t)n};
    EvalConfig cfg = greedy_config(batch, max_new);
    Tally      t = {0};
    int        rc = eval_run(m, NULL, bpe, &src, &cfg, tally, &t, NULL);
    *out = (EvalResult){
        .accuracy = t.correct / n, .format = t.format / n, .reward = t.reward / n, .n = n};
    return rc;
}

int eval_dataset(Model *m, const Tok *tok, const Bpe *bpe, Dataset *d, int n, int batch,
                 int max_new, EvalResult *out)
{
    CHECK(n > 0 && batch > 0 && max_new > 0 && !tok != !bpe);
    EvalSource src = {.kind = EVAL_SRC_DATASET, .data = d, .n = (uint64_t)n};
    EvalConfig cfg = greedy_config(batch, max_new);
    Tally      t = {0};
    EvalStats  st;
    int        rc = eval_run(m, tok, bpe, &src, &cfg, tally, &t, &st);
    *out = (EvalResult){.n = t.n,
                        .skipped = (int)st.skipped,
                        .accuracy = t.n ? t.correct / t.n : NAN,
                        .reward = t.n ? t.reward / t.n : NAN,
                        .format = t.n ? t.format / t.n : NAN};
    return rc;
}
