#include "reward_server/rm_scorer.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/nn/model.h"
#include "common/tasks/score.h"

const char *const rm_refusal_names[RM_REFUSED_COUNT] = {"empty", "too_long", "bad_token"};

/* One stream: the cache and row tables of one forward pass at a time. */
typedef struct {
    KVCache    *kv; /* kv_new_once, grown on demand */
    int         kv_seq, kv_len;
    bool        is_busy;
    const int **tails;     /* (WIRE-sized: n of the largest group seen) */
    int        *tail_lens; /* (same) */
    float      *values;    /* (same) */
    int         cap;
} Stream;

struct RmScorer {
    Model           *m;
    bool             is_borrowed; /* rm_scorer_borrow's: not freed here */
    int              max_tokens;
    int              n_streams;
    Stream           streams[RM_MAX_STREAMS];
    pthread_mutex_t  mu;
    pthread_cond_t   cv;
    _Atomic uint64_t groups, completions, empty, passes, rows, ns;
    _Atomic uint64_t refused[RM_REFUSED_COUNT];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether the model reads the server's ids: the charset it was saved with
 * must be the server's char tokenizer's. */
static int check_tokenizer(const RmScorerConfig *cfg, const ModelConfig *mc)
{
    char path[PATH_MAX];
    int  n = snprintf(path, sizeof path, "%s/%s", cfg->dir, CKPT_CONFIG_FILE);
    CHECK(n > 0 && (size_t)n < sizeof path); /* ckpt_load_config read it */
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    bool    has_charset = json_object_get(o, "rlhf_tokenizer_charset") != NULL;
    json_decref(o);
    Tok *own = NULL;
    int  rc = has_charset ? ckpt_load_tok(cfg->dir, &own) : ERR_NOTFOUND;
    if (rc == 0) {
        const char *want = cfg->tok ? tok_charset(cfg->tok) : NULL;
        bool        same = want && !strcmp(tok_charset(own), want);
        if (!same)
            log_error("rm_scorer: '%s' was saved with the char tokenizer '%.60s', but the server "
                      "decodes with %s%.60s%s: its ids would mean other text",
                      cfg->dir, tok_charset(own), want ? "the char tokenizer '" : "a BPE (--model)",
                      want ? want : "", want ? "'" : "");
        tok_free(&own);
        return same ? 0 : ERR_MISMATCH;
    }
    if (rc != ERR_NOTFOUND) return rc;
    /* No charset (a transformers model, say): the ids can only be checked
     * against the vocabulary's size. */
    int server_v = cfg->bpe ? bpe_vocab_size(cfg->bpe) : tok_vocab_size(cfg->tok);
    if (mc->vocab_size < server_v)
        log_warn("rm_scorer: '%s' has a vocabulary of %d ids, the server's tokenizer %d: "
                 "completions with ids past %d will be refused (bad_token)",
                 cfg->dir, mc->vocab_size, server_v, mc->vocab_size - 1);
    return 0;
}

void rm_scorer_free(RmScorer **ps)
{
    RmScorer *s = *ps;
    if (!s) return;
    for (int i = 0; i < s->n_streams; i++) {
        kv_free(&s->streams[i].kv);
        free(s->streams[i].tails);
        free(s->streams[i].tail_lens);
        free(s->streams[i].values);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    if (!s->is_borrowed) model_free(&s->m);
    free(s);
    *ps = NULL;
}

static bool config_ok(const RmScorerConfig *cfg)
{
    if (cfg->max_tokens >= 1 && cfg->streams >= 1 && cfg->streams <= RM_MAX_STREAMS) return true;
    log_error("rm_scorer: max tokens %d (expected >= 1), streams %d (expected 1..%d)",
              cfg->max_tokens, cfg->streams, RM_MAX_STREAMS);
    return false;
}

/* A scorer around m (owned or not), its streams empty. */
static RmScorer *scorer_alloc(Model *m, const RmScorerConfig *cfg, bool is_borrowed)
{
    RmScorer *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->max_tokens = cfg->max_tokens;
    s->n_streams = cfg->streams;
    s->m = m;
    s->is_borrowed = is_borrowed;
    return s;
}

RmScorer *rm_scorer_borrow(Model *m, const RmScorerConfig *cfg)
{
    CHECK(m && cfg && model_config(m)->has_value_head);
    return config_ok(cfg) ? scorer_alloc(m, cfg, true) : NULL;
}

RmScorer *rm_scorer_new(const RmScorerConfig *cfg)
{
    CHECK(cfg && cfg->dir && (cfg->tok != NULL) != (cfg->bpe != NULL));
    if (!config_ok(cfg)) return NULL;
    ModelConfig mc;
    if (ckpt_load_config(cfg->dir, &mc)) return NULL;
    if (!mc.has_value_head) {
        log_error("rm_scorer: '%s' is not a reward model: no scalar head (score.weight; expected "
                  "%s with one label, or rlhf_has_value_head)",
                  cfg->dir, CKPT_ARCH_CLASSIFIER);
        return NULL;
    }
    if (check_tokenizer(cfg, &mc)) return NULL;
    RmScorer *s = scorer_alloc(model_new(&mc), cfg, false);
    int       rc = ckpt_load(cfg->dir, s->m);
    if (rc == ERR_AGAIN) rc = ckpt_load(cfg->dir, s->m); /* replaced while loading: once more */
    if (rc) {
        log_error("rm_scorer: cannot load the reward model '%s': %s", cfg->dir, err_str(rc));
        rm_scorer_free(&s);
        return NULL;
    }
    ModelTensor b;
    CHECK(model_find_tensor(s->m, "score.bias", &b) == 0);
    log_info("rm_scorer: reward model '%s': %zu parameters, %d layers, width %d, vocabulary %d, "
             "context %d, head bias %g; %d rows per pass at most, %d stream%s",
             cfg->dir, model_num_params(s->m), mc.n_layers, mc.dim, mc.vocab_size, mc.max_seq_len,
             (double)b.data[0], s->max_tokens, s->n_streams, s->n_streams > 1 ? "s" : "");
    return s;
}

const Model *rm_scorer_model(const RmScorer *s)
{
    return s->m;
}

void rm_scorer_stats(const RmScorer *s, RmStats *out)
{
    RmScorer *m = (RmScorer *)s; /* atomics are only read */
    memset(out, 0, sizeof *out);
    out->groups = atomic_load(&m->groups);
    out->completions = atomic_load(&m->completions);
    out->empty = atomic_load(&m->empty);
    out->passes = atomic_load(&m->passes);
    out->rows = atomic_load(&m->rows);
    out->seconds = (double)atomic_load(&m->ns) * 1e-9;
    for (int k = 0; k < RM_REFUSED_COUNT; k++) out->refused[k] = atomic_load(&m->refused[k]);
}

/* The ids of completion i the model reads: up to and including the first
 * stop id. */
static int kept_len(const ScorerGroup *g, int i)
{
    size_t n = g->n_tokens[i];
    for (size_t t = 0; t < n; t++)
        if (g->completions[i][t] == g->stop_id) return (int)(t + 1);
    return (int)n;
}

/* Checks the group before any pass: returns 0, or ERR_RANGE with *bad,
 * *reason and why filled. */
static int check_group(const RmScorer *s, const ScorerGroup *g, int *bad, RmRefusal *reason,
                       char *why, size_t why_len)
{
    const ModelConfig *c = model_config(s->m);
    int                V = c->vocab_size, ctx = c->max_seq_len;
    *bad = -1;
    for (size_t t = 0; t < g->n_prompt; t++) {
        if (g->prompt[t] < 0 || g->prompt[t] >= V) {
            *reason = RM_REFUSED_BAD_TOKEN;
            snprintf(why, why_len,
                     "rm: prompt id %zu is %d, the reward model's vocabulary is 0..%d", t,
                     (int)g->prompt[t], V - 1);
            return ERR_RANGE;
        }
    }
    for (int i = 0; i < g->n; i++) {
        int n = kept_len(g, i);
        *bad = i;
        if (n == 0) {
            *reason = RM_REFUSED_EMPTY;
            snprintf(why, why_len, "rm: completion %d has no ids", i);
            return ERR_RANGE;
        }
        if ((size_t)n + g->n_prompt > (size_t)ctx) {
            *reason = RM_REFUSED_TOO_LONG;
            snprintf(why, why_len,
                     "rm: completion %d: prompt %zu + completion %d ids, the reward model's "
                     "context is %d",
                     i, g->n_prompt, n, ctx);
            return ERR_RANGE;
        }
        for (int t = 0; t < n; t++) {
            int32_t id = g->completions[i][t];
            if (id < 0 || id >= V) {
                *reason = RM_REFUSED_BAD_TOKEN;
                snprintf(why, why_len,
                         "rm: completion %d id %d is %d, the reward model's vocabulary is 0..%d", i,
                         t, (int)id, V - 1);
                return ERR_RANGE;
            }
        }
    }
    *bad = -1;
    return 0;
}

static Stream *stream_take(RmScorer *s)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < s->n_streams; i++) {
            if (!s->streams[i].is_busy) {
                s->streams[i].is_busy = true;
                pthread_mutex_unlock(&s->mu);
                return &s->streams[i];
            }
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static void stream_give(RmScorer *s, Stream *st)
{
    pthread_mutex_lock(&s->mu);
    st->is_busy = false;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Positions a pass's cache may hold (sequences x the longest): twice the
 * rows of a pass, or one sequence as long as the context. A pass is planned
 * within it, so a stream's memory stays bounded whatever the groups. */
static size_t kv_positions_max(const RmScorer *s)
{
    size_t rows = 2 * (size_t)s->max_tokens, ctx = (size_t)model_config(s->m)->max_seq_len;
    return rows > ctx ? rows : ctx;
}

/* Room for n completions of up to len ids each (prompt included). */
static void stream_reserve(RmScorer *s, Stream *st, int n, int len)
{
    if (n > st->cap) {
        st->tails = xrealloc(st->tails, sizeof *st->tails * (size_t)n);
        st->tail_lens = xrealloc(st->tail_lens, sizeof *st->tail_lens * (size_t)n);
        st->values = xrealloc(st->values, sizeof *st->values * (size_t)n);
        st->cap = n;
    }
    if (!st->kv || n > st->kv_seq || len > st->kv_len) {
        /* Grown to the largest shape seen, so it settles after a few
         * groups, unless that shape would hold more positions than a pass
         * may use (many short completions once, one long one another time):
         * then just this pass's shape. */
        int    gn = n > st->kv_seq ? n : st->kv_seq, gl = len > st->kv_len ? len : st->kv_len;
        size_t cap = kv_positions_max(s);
        bool   is_grown = (size_t)gn * (size_t)gl <= cap;
        st->kv_seq = is_grown ? gn : n;
        st->kv_len = is_grown ? gl : len;
        kv_free(&st->kv);
        st->kv = kv_new_once(s->m, st->kv_seq, st->kv_len);
    }
}

int rm_scorer_run(const ScorerGroup *g, const void *opts, ScorerResult *out, int *bad, char *why,
                  size_t why_len)
{
    RmScorer *s = (RmScorer *)opts; /* its counters and streams are thread-safe */
    CHECK(g->n >= 1 && g->n_prompt >= 1);
    RmRefusal reason;
    int       rc = check_group(s, g, bad, &reason, why, why_len);
    if (rc) {
        atomic_fetch_add(&s->refused[reason], 1);
        return rc;
    }
    _Static_assert(sizeof(int32_t) == sizeof(int), "model_score takes int ids");
    const int *prompt = (const int *)g->prompt;
    int        P = (int)g->n_prompt;
    uint64_t   t0 = now_ns(), rows = 0, passes = 0, empty = 0;
    Stream    *st = stream_take(s);
    for (int i0 = 0; i0 < g->n && rc == 0;) {
        /* A pass: completions i0..i1-1, the prompt once, within max_tokens rows. */
        int i1 = i0, total = P, longest = 0;
        while (i1 < g->n) {
            int    n = kept_len(g, i1), lo = n > longest ? n : longest;
            size_t kv_pos = (size_t)(i1 - i0 + 1) * (size_t)(P + lo);
            if (i1 > i0 && (total + n > s->max_tokens || kv_pos > 2 * (size_t)s->max_tokens)) break;
            total += n;
            longest = lo;
            i1++;
        }
        stream_reserve(s, st, i1 - i0, P + longest);
        for (int i = i0; i < i1; i++) {
            st->tails[i - i0] = (const int *)g->completions[i];
            st->tail_lens[i - i0] = kept_len(g, i);
            empty += st->tail_lens[i - i0] == 1 && g->completions[i][0] == g->stop_id;
        }
        /* Ids and lengths were checked above; the cache fits the pass. */
        rc = model_score(s->m, st->kv, prompt, P, i1 - i0, st->tails, st->tail_lens, st->values);
        CHECK(rc == 0);
        for (int i = i0; i < i1; i++) {
            float v = st->values[i - i0];
            out[i].reward = v;
            out[i].n_components = 1;
            snprintf(out[i].components[0].name, sizeof out[i].components[0].name, "%s",
                     RM_SCORER_NAME);
            out[i].components[0].value = v;
        }
        rows += (uint64_t)total;
        passes++;
        i0 = i1;
    }
    stream_give(s, st);
    atomic_fetch_add(&s->ns, now_ns() - t0);
    atomic_fetch_add(&s->rows, rows);
    atomic_fetch_add(&s->passes, passes);
    atomic_fetch_add(&s->empty, empty);
    atomic_fetch_add(&s->completions, (uint64_t)g->n);
    atomic_fetch_add(&s->groups, 1);
    return 0;
}
