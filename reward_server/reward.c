#include "reward_server/reward.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/base/views.h"
#include "common/net/zsock.h"
#include "common/formats/bpe_gguf.h"
#include "common/net/reactor.h"
#include "common/nn/tensor.h"
#include "common/tasks/task.h"
#include "reward_server/reward_metrics.h"
#include "reward_server/sandbox_scorer.h"
#include "reward_server/scorer.h"

/* How long a loop's wait or a blocking send lasts before the stop flag is
 * looked at again; bounds how long shutdown takes. */
#define REWARD_POLL_MS 100

/* Per-worker buffers, sized once for the largest group the wire allows so
 * that scoring never allocates. */
typedef struct {
    char         *prompt_text; /* prompt_cap bytes: the longest prompt decoded */
    char         *text;        /* text_cap bytes: the longest completion decoded */
    size_t        prompt_cap, text_cap;
    ScorerResult *results; /* (WIRE_MAX_GROUP) */
    /* Group scorers' results, term k's for completion i at k * WIRE_MAX_GROUP + i
     * (SCORE_MAX_TERMS * WIRE_MAX_GROUP, or none without group scorers), and
     * the group as they see it. */
    ScorerResult           *group_res;
    const int32_t         **group_ids;  /* (WIRE_MAX_GROUP) */
    size_t                 *group_n;    /* (WIRE_MAX_GROUP) */
    bool                   *group_cut;  /* (WIRE_MAX_GROUP) */
    Rlhf__Score            *scores;     /* (WIRE_MAX_GROUP) */
    Rlhf__Score           **score_ptrs; /* (WIRE_MAX_GROUP) */
    Rlhf__RewardComponent  *comps;      /* (WIRE_MAX_GROUP, SCORER_MAX_COMPONENTS) */
    Rlhf__RewardComponent **comp_ptrs;  /* (WIRE_MAX_GROUP, SCORER_MAX_COMPONENTS) */
    void                   *block;      /* the one allocation the views above are carved from */
} Scratch;

typedef struct {
    Reward     *r;
    int         index;
    pthread_t   thread;
    bool        is_running;
    WireRejects rejects; /* this worker's refused groups; atomics, read by reward_stats */
} Worker;

struct Reward {
    char   samples[256];    /* as configured */
    char   samples_ep[256]; /* as bound (port filled in) */
    char   results[256];
    char   id[WIRE_MAX_NAME + 1];
    char   work_ep[64]; /* inproc endpoint between the front and the workers */
    int    n_workers;
    double status_every_s;

    void           *zctx;
    Auth           *auth; /* CURVE keys and ZAP of the sockets (plaintext without keys) */
    Tok            *tok;  /* the char tokenizer, or NULL with bpe */
    Bpe            *bpe;  /* a GGUF model's tokenizer (cfg.model_path) */
    ScorerRegistry *scorers;
    ScorerArithOpts arith;
    SandboxScorer  *code; /* the "code" scorer's sandbox pool, NULL when off */
    RmScorer       *rm;   /* the "rm" scorer's reward model, NULL when off */

    bool      has_forced; /* --scorer: one spec for every group, whatever its task */
    ScoreSpec forced;     /* resolved against scorers */
    char      forced_text[SCORE_SPEC_MAX];

    pthread_t   front;
    bool        is_front_running;
    WireRejects front_rejects; /* frame-level rejects on the samples socket */
    Worker     *workers;       /* (n_workers) */

    /* Start-up handshake: each thread reports once whether its sockets are up. */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             n_reported;
    int             start_rc;

    atomic_int       is_stopping; /* threads exit */
    atomic_int       is_run_done; /* reward_run returns */
    int              wake[2];     /* pipe: reward_stop writes a byte, reward_run wakes */
    _Atomic uint64_t groups_received, groups_scored, completions_scored, groups_unsent;
    _Atomic uint64_t score_ns;     /* time spent in score_group, every worker */
    RewardMetrics   *http_metrics; /* the Prometheus endpoint, NULL when off */

    double   t_last_status; /* reward_status_line's previous call */
    uint64_t scored_last_status;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool stopping(const Reward *r)
{
    return atomic_load(&((Reward *)r)->is_stopping) != 0;
}

static void report_started(Reward *r, int rc)
{
    pthread_mutex_lock(&r->mu);
    r->n_reported++;
    if (rc && !r->start_rc) r->start_rc = rc;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Waits until n threads have reported; returns the first failure or 0. */
static int wait_started(Reward *r, int n)
{
    pthread_mutex_lock(&r->mu);
    while (r->n_reported < n) pthread_cond_wait(&r->cv, &r->mu);
    int rc = r->start_rc;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static WireSockOpts sock_opts(void)
{
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    /* Short send timeouts so a blocked send notices the stop flag quickly. */
    o.sndtimeo_ms = REWARD_POLL_MS;
    return o;
}

/* The front thread's reactor handler: moves one frame from the samples
 * socket to the workers, blocking (in bounded steps) while every worker is
 * busy: back-pressure. */
typedef struct {
    Reward   *r;
    WireSock *in, *out;
} Front;

/* Runs one reactor over one socket until the server stops: the loop of the
 * front thread and of each worker. */
static void serve_socket(Reward *r, const char *name, WireSock *s, const char *what,
                         ReactorReadFn fn, void *arg, int burst)
{
    Reactor *rx = reactor_new(name, REWARD_POLL_MS);
    if (reactor_add_socket(rx, wire_sock_zmq(s), what, fn, arg, burst) == 0)
        reactor_run(rx, &r->is_stopping); /* its handler never fails */
    reactor_free(&rx);
}

static int front_on_sample(Reactor *rx, void *arg)
{
    Front  *f = arg;
    Reward *r = f->r;
    WireMsg m;
    int     got = wire_recv(f->in, 0, &m);
    if (got == ERR_TIMEOUT || got == ERR_AGAIN || got == ERR_IO) return 0; /* IO: logged */
    atomic_fetch_add(&r->groups_received, 1);
    if (got) return 1; /* a bad frame, counted and logged by wire_recv */
    while (wire_send_msg(f->out, NULL, 0, &m, 0) == ERR_AGAIN && !stopping(r)) {
    }
    wire_msg_close(&m);
    return 1;
}

/* The front thread: binds the samples and work sockets, then runs its
 * reactor until the threads are told to stop. */
static void *front_main(void *arg)
{
    Reward      *r = arg;
    WireSockOpts o = sock_opts();
    Front        f = {r, wire_sock_new(r->zctx, ZMQ_PULL, "samples", &o),
                      wire_sock_new(r->zctx, ZMQ_PUSH, "work", &o)};
    int          rc = f.in && f.out ? 0 : ERR_IO;
    if (!rc) {
        wire_sock_use_rejects(f.in, &r->front_rejects);
        if ((rc = auth_bind(r->auth, f.in, r->samples)) == 0)
            rc = wire_last_endpoint(f.in, r->samples_ep, sizeof r->samples_ep);
    }
    if (!rc) rc = wire_bind(f.out, r->work_ep);
    report_started(r, rc);
    if (!rc) serve_socket(r, "reward front", f.in, "samples", front_on_sample, &f, 64);
    wire_sock_free(&f.out);
    wire_sock_free(&f.in);
    return NULL;
}

static void scratch_init(Scratch *s, const Reward *r)
{
    s->prompt_cap = r->bpe ? bpe_decode_max_bytes(r->bpe, WIRE_MAX_PROMPT_TOKENS)
                           : TOK_DECODE_MAX_BYTES(WIRE_MAX_PROMPT_TOKENS);
    s->text_cap = r->bpe ? bpe_decode_max_bytes(r->bpe, WIRE_MAX_TOKENS)
                         : TOK_DECODE_MAX_BYTES(WIRE_MAX_TOKENS);
    const size_t n_comps = (size_t)WIRE_MAX_GROUP * SCORER_MAX_COMPONENTS;
    const size_t n_group = r->rm ? (size_t)SCORE_MAX_TERMS * WIRE_MAX_GROUP : 0;
    const View   v[] = {VIEW(&s->prompt_text, s->prompt_cap), VIEW(&s->text, s->text_cap),
                        VIEW(&s->results, WIRE_MAX_GROUP),    VIEW(&s->scores, WIRE_MAX_GROUP),
                        VIEW(&s->score_ptrs, WIRE_MAX_GROUP), VIEW(&s->comps, n_comps),
                        VIEW(&s->comp_ptrs, n_comps),         VIEW(&s->group_res, n_group),
                        VIEW(&s->group_ids, WIRE_MAX_GROUP),  VIEW(&s->group_n, WIRE_MAX_GROUP),
                        VIEW(&s->group_cut, WIRE_MAX_GROUP)};
    const int    n = (int)(sizeof v / sizeof v[0]);
    s->block = views_alloc(v, n);
    /* The protobuf structs are initialised per group; zero the rest once as calloc did. */
    memset(s->block, 0, views_bytes(v, n));
}

static void scratch_free(Scratch *s)
{
    free(s->block);
    s->block = NULL;
}

int reward_completion_text(const Tok *tok, const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    while (k < n && ids[k] != TOK_EOS) k++;
    CHECK(k <= (size_t)INT_MAX);
    _Static_assert(sizeof(int32_t) == sizeof(int), "tok_decode takes int ids");
    return tok_decode(tok, (const int *)ids, (int)k, 0, out, cap, NULL);
}

int reward_completion_text_bpe(const Bpe *b, const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    int    eot = bpe_eot_id(b);
    while (k < n && ids[k] != eot) k++;
    CHECK(k <= (size_t)INT_MAX);
    _Static_assert(sizeof(int32_t) == sizeof(int), "bpe_decode takes int ids");
    return bpe_decode(b, (const int *)ids, (int)k, 0, out, cap, NULL);
}

/* Runs the spec's group scorers (the reward model) once over g, term k's
 * results into s->group_res + k * WIRE_MAX_GROUP and given[k] pointing
 * there (NULL for the other terms). Returns 0 or an error with rej filled. */
static int score_group_terms(Reward *r, Scratch *s, const ScoreSpec *spec,
                             const Rlhf__SampledGroup *g,
                             const ScorerResult *given[SCORE_MAX_TERMS], WireReject *rej)
{
    ScorerGroup sg = {.prompt = g->prompt->tokens,
                      .n_prompt = g->prompt->n_tokens,
                      .n = (int)g->n_completions,
                      .completions = s->group_ids,
                      .n_tokens = s->group_n,
                      .is_truncated = s->group_cut,
                      .stop_id = r->bpe ? bpe_eot_id(r->bpe) : TOK_EOS};
    bool        has_ids = false;
    for (int k = 0; k < spec->n_terms; k++) {
        const void   *opts = NULL;
        ScorerGroupFn fn = scorer_group_fn(r->scorers, spec->terms[k].def, &opts);
        given[k] = NULL;
        if (!fn) continue;
        for (size_t i = 0; i < g->n_completions && !has_ids; i++) {
            const Rlhf__Completion *c = g->completions[i];
            s->group_ids[i] = c->tokens;
            s->group_n[i] = c->n_tokens;
            s->group_cut[i] = c->finish == RLHF__COMPLETION__FINISH__FINISH_LENGTH;
        }
        has_ids = true;
        ScorerResult *res = s->group_res + (size_t)k * WIRE_MAX_GROUP;
        memset(res, 0, sizeof *res * g->n_completions);
        char why[200] = "";
        int  bad = -1;
        int  rc = fn(&sg, opts, res, &bad, why, sizeof why);
        if (rc) {
            rej->reason = rc == ERR_NONFINITE ? WIRE_REJ_NONFINITE : WIRE_REJ_BAD_VALUE;
            snprintf(rej->why, sizeof rej->why, "lease %llu group %d: %.150s",
                     (unsigned long long)g->lease_id, g->group_index, why);
            return rc;
        }
        given[k] = res;
    }
    return 0;
}

/* Scores every completion of g (already validated) into out, which points
 * into s and at g. Returns 0 or an error with rej filled. */
static int score_group(Reward *r, Scratch *s, Rlhf__SampledGroup *g, Rlhf__ScoredGroup *out,
                       WireReject *rej)
{
    /* The server's --scorer, else the prompt's task: a name or a spec. */
    ScoreSpec   spec_task;
    const char *task = r->has_forced ? r->forced_text : g->prompt->task;
    if (!r->has_forced) {
        char why[200];
        if (scorer_resolve(r->scorers, task, &spec_task, why, sizeof why)) {
            rej->reason = WIRE_REJ_UNKNOWN;
            snprintf(rej->why, sizeof rej->why, "lease %llu group %d: task '%.40s': %.120s",
                     (unsigned long long)g->lease_id, g->group_index, task, why);
            return ERR_NOTFOUND;
        }
    }
    const ScoreSpec *spec = r->has_forced ? &r->forced : &spec_task;
    /* Terms scored a group at once, first: given[k][i] is term k's result
     * for completion i. */
    const ScorerResult *given[SCORE_MAX_TERMS];
    int                 rc = r->rm ? score_group_terms(r, s, spec, g, given, rej) : 0;
    if (rc) return rc;
    /* The wire checks bounded the prompt to WIRE_MAX_PROMPT_TOKENS ids of the vocab. */
    rc = r->bpe ? bpe_decode(r->bpe, (const int *)g->prompt->tokens, (int)g->prompt->n_tokens, 0,
                             s->prompt_text, s->prompt_cap, NULL)
                : tok_decode(r->tok, (const int *)g->prompt->tokens, (int)g->prompt->n_tokens, 0,
                             s->prompt_text, s->prompt_cap, NULL);
    for (size_t i = 0; i < g->n_completions && !rc; i++) {
        const Rlhf__Completion *c = g->completions[i];
        rc = r->bpe
                 ? reward_completion_text_bpe(r->bpe, c->tokens, c->n_tokens, s->text, s->text_cap)
                 : reward_completion_text(r->tok, c->tokens, c->n_tokens, s->text, s->text_cap);
        if (rc) break;
        ScorerInput         in = {.prompt = s->prompt_text,
                                  .completion = s->text,
                                  .answer = g->prompt->answer,
                                  .meta_json = g->prompt->meta_json,
                                  .is_truncated = c->finish == RLHF__COMPLETION__FINISH__FINISH_LENGTH};
        char                why[160];
        const ScorerResult *given_i[SCORE_MAX_TERMS];
        for (int k = 0; k < spec->n_terms; k++)
            given_i[k] = r->rm && given[k] ? given[k] + i : NULL;
        rc = score_spec_run_given(spec, &in, given_i, &s->results[i], why, sizeof why);
        if (rc) {
            rej->reason = rc == ERR_NONFINITE ? WIRE_REJ_NONFINITE : WIRE_REJ_BAD_VALUE;
            snprintf(rej->why, sizeof rej->why, "lease %llu group %d completion %zu: %.100s",
                     (unsigned long long)g->lease_id, g->group_index, i, why);
            return rc;
        }
        const ScorerResult     *res = &s->results[i];
        Rlhf__Score            *score = &s->scores[i];
        Rlhf__RewardComponent  *comps = s->comps + i * SCORER_MAX_COMPONENTS;
        Rlhf__RewardComponent **cptrs = s->comp_ptrs + i * SCORER_MAX_COMPONENTS;
        rlhf__score__init(score);
        score->reward = res->reward;
        for (int j = 0; j < res->n_components; j++) {
            rlhf__reward_component__init(&comps[j]);
            /* Points into s->results[i], which lives until the next group. */
            comps[j].name = (char *)res->components[j].name;
            comps[j].value = res->components[j].value;
            cptrs[j] = &comps[j];
        }
        score->components = cptrs;
        score->n_components = (size_t)res->n_components;
        s->score_ptrs[i] = score;
    }
    if (rc) {
        /* Unreachable after the wire checks bounded every id; tok_decode logged it. */
        rej->reason = WIRE_REJ_BAD_TOKENS;
        snprintf(rej->why, sizeof rej->why, "lease %llu group %d: ids do not decode",
                 (unsigned long long)g->lease_id, g->group_index);
        return rc;
    }
    rlhf__scored_group__init(out);
    out->version = WIRE_PROTOCOL_VERSION;
    out->run_id = g->run_id;
    out->group = g;
    out->scores = s->score_ptrs;
    out->n_scores = g->n_completions;
    out->scorer_id = (char *)task; /* lives as long as g or the server */
    return 0;
}

/* A worker's reactor handler: decodes and validates one group, scores it
 * and forwards it, blocking (in bounded steps) while the learner is slow. */
typedef struct {
    Worker    *w;
    WireSock  *in, *out;
    Scratch    s;
    WireLimits lim;
} WorkerLoop;

static int worker_on_group(Reactor *rx, void *arg)
{
    WorkerLoop         *k = arg;
    Reward             *r = k->w->r;
    WireMsg             m;
    Rlhf__SampledGroup *g = NULL;
    WireReject          rej;
    int got = wire_recv_decode(k->in, 0, &rlhf__sampled_group__descriptor, &k->lim, &m,
                               (ProtobufCMessage **)&g, &rej);
    if (got == ERR_TIMEOUT || got == ERR_AGAIN || got == ERR_IO) return 0;
    if (got) return 1; /* refused (counted and logged) */
    Rlhf__ScoredGroup sg;
    double            t0 = now_s();
    int               scored = score_group(r, &k->s, g, &sg, &rej);
    atomic_fetch_add(&r->score_ns, (uint64_t)((now_s() - t0) * 1e9));
    if (scored == 0) {
        int sent;
        while ((sent = wire_send(k->out, &sg.base, 0)) == ERR_AGAIN && !stopping(r)) {
        }
        if (sent == 0) {
            atomic_fetch_add(&r->groups_scored, 1);
            atomic_fetch_add(&r->completions_scored, g->n_completions);
        } else {
            atomic_fetch_add(&r->groups_unsent, 1);
        }
    } else {
        wire_reject_note(&k->w->rejects, r->id, "SampledGroup", &rej);
    }
    protobuf_c_message_free_unpacked(&g->base, NULL);
    wire_msg_close(&m);
    return 1;
}

static void *worker_main(void *arg)
{
    Worker      *w = arg;
    Reward      *r = w->r;
    WireSockOpts o = sock_opts();
    WorkerLoop   k = {.w = w,
                      .in = wire_sock_new(r->zctx, ZMQ_PULL, "samples", &o),
                      .out = wire_sock_new(r->zctx, ZMQ_PUSH, "results", &o)};
    int          rc = k.in && k.out ? 0 : ERR_IO;
    if (!rc) {
        wire_sock_use_rejects(k.in, &w->rejects);
        rc = wire_connect(k.in, r->work_ep);
    }
    if (!rc) rc = auth_connect(r->auth, k.out, r->results, AUTH_LEARNER);
    report_started(r, rc);
    scratch_init(&k.s, r);
    k.lim = (WireLimits){.vocab_size = r->bpe ? bpe_vocab_size(r->bpe) : tok_vocab_size(r->tok)};
    if (!rc) serve_socket(r, "reward worker", k.in, "work", worker_on_group, &k, 16);
    scratch_free(&k.s);
    wire_sock_free(&k.out);
    wire_sock_free(&k.in);
    return NULL;
}

static int check_endpoint(const char *flag, const char *ep)
{
    if (!ep || !ep[0] || strlen(ep) >= 256) {
        log_error("reward_new: %s endpoint '%s': expected 1..255 bytes", flag, ep ? ep : "(null)");
        return ERR_ARG;
    }
    return 0;
}

/* Starts the front, then the workers; 0 once all sockets are up. */
static int start_threads(Reward *r)
{
    /* The front binds the work endpoint before any worker connects to it. */
    int rc = pthread_create(&r->front, NULL, front_main, r);
    if (rc) {
        log_error("reward_new: pthread_create (front): %s", strerror(rc));
        return ERR_IO;
    }
    r->is_front_running = true;
    if ((rc = wait_started(r, 1))) return rc;
    for (int i = 0; i < r->n_workers; i++) {
        Worker *w = &r->workers[i];
        w->r = r;
        w->index = i;
        if ((rc = pthread_create(&w->thread, NULL, worker_main, w))) {
            log_error("reward_new: pthread_create (worker %d): %s", i, strerror(rc));
            return ERR_IO;
        }
        w->is_running = true;
    }
    return wait_started(r, 1 + r->n_workers);
}

/* Stops and joins whatever threads run, then frees. */
void reward_free(Reward **rp)
{
    if (!rp || !*rp) return;
    Reward *r = *rp;
    reward_metrics_close(&r->http_metrics);
    atomic_store(&r->is_stopping, 1);
    atomic_store(&r->is_run_done, 1);
    /* Workers blocked in a sandboxed run return at once. */
    sandbox_scorer_stop(r->code);
    for (int i = 0; i < r->n_workers; i++)
        if (r->workers[i].is_running) pthread_join(r->workers[i].thread, NULL);
    if (r->is_front_running) pthread_join(r->front, NULL);
    auth_free(&r->auth);
    for (int i = 0; i < 2; i++)
        if (r->wake[i] >= 0) close(r->wake[i]);
    /* All sockets are closed by their threads, so this returns after their linger. */
    if (r->zctx) {
        while (zmq_ctx_term(r->zctx) != 0 && zmq_errno() == EINTR) {
        }
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->workers);
    scorer_registry_free(&r->scorers);
    sandbox_scorer_free(&r->code);
    rm_scorer_free(&r->rm);
    tok_free(&r->tok);
    bpe_free(&r->bpe);
    free(r);
    *rp = NULL;
}

Reward *reward_new(const RewardConfig *cfg)
{
    if (check_endpoint("samples", cfg->samples) || check_endpoint("results", cfg->results))
        return NULL;
    char why[384];
    if (auth_check_bind(&cfg->auth, cfg->samples, why, sizeof why)) {
        log_error("reward_new: samples: %s", why);
        return NULL;
    }
    if (cfg->threads < 1 || cfg->threads > REWARD_MAX_THREADS) {
        log_error("reward_new: threads %d, expected 1..%d", cfg->threads, REWARD_MAX_THREADS);
        return NULL;
    }
    if (!cfg->id || !cfg->id[0] || strlen(cfg->id) > WIRE_MAX_NAME) {
        log_error("reward_new: id '%s', expected 1..%d bytes", cfg->id ? cfg->id : "(null)",
                  WIRE_MAX_NAME);
        return NULL;
    }
    if (!(cfg->format_bonus >= 0.0f && cfg->format_bonus <= 1.0f)) {
        log_error("reward_new: format bonus %g, expected [0, 1]", cfg->format_bonus);
        return NULL;
    }
    if (!(cfg->status_every_s >= 0.0 && cfg->status_every_s < 1e6)) {
        log_error("reward_new: status interval %g s, expected [0, 1e6)", cfg->status_every_s);
        return NULL;
    }
    Reward *r = xcalloc(1, sizeof *r);
    r->wake[0] = r->wake[1] = -1;
    snprintf(r->samples, sizeof r->samples, "%s", cfg->samples);
    snprintf(r->results, sizeof r->results, "%s", cfg->results);
    snprintf(r->id, sizeof r->id, "%s", cfg->id);
    /* Unique per context, so several servers can live in one process (tests). */
    snprintf(r->work_ep, sizeof r->work_ep, "inproc://reward-work-%p", (void *)r);
    r->n_workers = cfg->threads;
    r->status_every_s = cfg->status_every_s;
    r->arith = (ScorerArithOpts){.format_bonus = cfg->format_bonus};
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    wire_rejects_init(&r->front_rejects);
    r->workers = xcalloc((size_t)r->n_workers, sizeof *r->workers);
    for (int i = 0; i < r->n_workers; i++) wire_rejects_init(&r->workers[i].rejects);
    r->t_last_status = now_s();

    if (cfg->model_path) {
        if (bpe_load(cfg->model_path, &r->bpe)) goto fail;
    } else {
        r->tok = tok_new(TOK_CHARSET_DEFAULT);
        if (!r->tok) goto fail;
    }
    if (pipe2(r->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_error("reward_new: pipe2: %s", strerror(errno));
        r->wake[0] = r->wake[1] = -1;
        goto fail;
    }
    r->scorers = scorer_registry_new();
    if (scorer_register_builtins(r->scorers, &r->arith)) goto fail;
    if (cfg->code.sandbox.workers > 0) {
        char keys[PATH_MAX] = "";
        if (cfg->auth.keys_dir && !realpath(cfg->auth.keys_dir, keys)) keys[0] = '\0';
        r->code = sandbox_scorer_new(&cfg->code, keys);
        if (!r->code && cfg->code.is_required) goto fail;
        if (!r->code)
            log_warn("%s: no \"code\" scorer: its sandbox did not start (above)", cfg->id);
        else if (scorer_register(r->scorers, SANDBOX_SCORER_NAME, sandbox_scorer_run, r->code))
            goto fail;
        /* A scoring thread waits for its run: fewer threads than workers leave workers idle. */
        if (r->code && cfg->threads < cfg->code.sandbox.workers)
            log_warn("%s: %d scoring threads for %d sandbox workers: at most %d code runs at "
                     "once (raise --threads)",
                     cfg->id, cfg->threads, cfg->code.sandbox.workers, cfg->threads);
    }
    if (cfg->reward_model && cfg->reward_model[0]) {
        RmScorerConfig rc_ = {.dir = cfg->reward_model,
                              .max_tokens = cfg->rm_max_tokens > 0 ? cfg->rm_max_tokens
                                                                   : RM_DEFAULT_MAX_TOKENS,
                              .streams = cfg->rm_streams > 0 ? cfg->rm_streams : 1,
                              .tok = r->tok,
                              .bpe = r->bpe};
        r->rm = rm_scorer_new(&rc_);
        if (!r->rm || scorer_register_group(r->scorers, RM_SCORER_NAME, rm_scorer_run, r->rm))
            goto fail;
        /* Streams are the parallelism: each pass on one core, none waiting
         * on another's BLAS threads (measured faster for both shapes of
         * tests/bench/bench_rm.c). Nothing else here multiplies matrices. */
        if (rc_.streams > 1) tensor_set_blas_threads(1);
        if (cfg->threads < rc_.streams)
            log_warn("%s: %d scoring threads for %d reward-model streams: at most %d passes at "
                     "once (raise --threads)",
                     cfg->id, cfg->threads, rc_.streams, cfg->threads);
    }
    if (cfg->scorer && cfg->scorer[0]) {
        char swhy[400];
        if (scorer_resolve(r->scorers, cfg->scorer, &r->forced, swhy, sizeof swhy)) {
            log_error("reward_new: --scorer: %s", swhy);
            goto fail;
        }
        snprintf(r->forced_text, sizeof r->forced_text, "%s", cfg->scorer);
        r->has_forced = true;
    }
    r->zctx = zmq_ctx_new();
    if (!r->zctx) {
        log_error("reward_new: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    r->auth = auth_new(r->zctx, &cfg->auth, AUTH_REWARD, true);
    if (!r->auth) goto fail;
    /* The threads start with SIGINT and SIGTERM blocked (they inherit the
     * mask), so signals reach the caller's thread and its stop flag. */
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    int rc = start_threads(r);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (rc) goto fail;
    if (reward_metrics_open(cfg, &r->http_metrics)) goto fail;
    char names[256];
    scorer_list(r->scorers, names, sizeof names);
    log_info("%s: samples bound at %s, results to %s, %d scoring threads, scorers %s (arith "
             "format bonus %g)%s%s",
             r->id, r->samples_ep, r->results, r->n_workers, names, r->arith.format_bonus,
             r->has_forced ? "; every group scored with " : "", r->forced_text);
    return r;
fail:
    reward_free(&r);
    return NULL;
}

const char *reward_samples_endpoint(const Reward *r)
{
    return r->samples_ep;
}

void reward_stop(Reward *r)
{
    atomic_store(&r->is_run_done, 1);
    /* write is async-signal-safe; a full pipe already holds a wake-up. */
    ssize_t n = write(r->wake[1], "x", 1);
    (void)n;
}

void reward_stats(const Reward *r, RewardStats *out)
{
    Reward *m = (Reward *)r; /* atomics are read only */
    memset(out, 0, sizeof *out);
    out->groups_received = atomic_load(&m->groups_received);
    out->groups_scored = atomic_load(&m->groups_scored);
    out->completions_scored = atomic_load(&m->completions_scored);
    out->groups_unsent = atomic_load(&m->groups_unsent);
    out->score_seconds = (double)atomic_load(&m->score_ns) * 1e-9;
    for (int k = 0; k < WIRE_REJ_COUNT; k++) {
        uint64_t n = wire_rejects_get(&r->front_rejects, (WireReason)k);
        for (int i = 0; i < r->n_workers; i++)
            n += wire_rejects_get(&r->workers[i].rejects, (WireReason)k);
        out->rejects[k] = n;
        out->rejects_total += n;
    }
    out->refused_auth = auth_refused(r->auth);
    if (r->code) {
        const Sandbox *sb = sandbox_scorer_sandbox(r->code);
        out->has_code = true;
        out->code_isolation = (int)sandbox_isolation(sb);
        out->is_code_net_isolated = sandbox_is_network_isolated(sb);
        sandbox_stats(sb, &out->code);
    }
    if (r->rm) {
        out->has_rm = true;
        rm_scorer_stats(r->rm, &out->rm);
    }
}

void reward_status_line(Reward *r, char *buf, size_t cap)
{
    RewardStats st;
    reward_stats(r, &st);
    WireRejects all;
    wire_rejects_init(&all);
    wire_rejects_add(&all, &r->front_rejects);
    for (int i = 0; i < r->n_workers; i++) wire_rejects_add(&all, &r->workers[i].rejects);
    char rej[256];
    wire_rejects_format(&all, rej, sizeof rej);
    double t = now_s(), dt = t - r->t_last_status;
    double rate = dt > 0 ? (double)(st.groups_scored - r->scored_last_status) / dt : 0.0;
    char   rm[96] = "";
    if (st.has_rm)
        snprintf(rm, sizeof rm, "rm %llu completions in %.1f s, ",
                 (unsigned long long)st.rm.completions, st.rm.seconds);
    snprintf(buf, cap,
             "scored %llu groups (%llu completions), %.1f groups/s, %sreceived %llu, rejects: %s%s",
             (unsigned long long)st.groups_scored, (unsigned long long)st.completions_scored, rate,
             rm, (unsigned long long)st.groups_received, rej,
             st.groups_unsent ? ", unsent at shutdown" : "");
    r->t_last_status = t;
    r->scored_last_status = st.groups_scored;
}

/* reward_run's loop: the wake pipe, the status timer, and the caller's
 * stop flag, looked at after every wake-up (at least every
 * REWARD_POLL_MS). */
typedef struct {
    Reward           *r;
    const atomic_int *stop;
} RunLoop;

static int run_on_wake(Reactor *rx, void *arg)
{
    RunLoop *l = arg;
    char     buf[64];
    /* Drained so the level-triggered poll does not report it again. */
    while (read(l->r->wake[0], buf, sizeof buf) > 0) {
    }
    reactor_stop(rx);
    return 0;
}

static int run_on_status(Reactor *rx, void *arg)
{
    RunLoop *l = arg;
    char     line[512];
    reward_status_line(l->r, line, sizeof line);
    log_info("%s: %s", l->r->id, line);
    return 0;
}

static int run_on_metrics(Reactor *rx, void *arg)
{
    RunLoop *l = arg;
    reward_metrics_tick(l->r->http_metrics, l->r);
    return 0;
}

static int run_on_pass(Reactor *rx, void *arg)
{
    RunLoop *l = arg;
    if (l->stop && atomic_load(l->stop)) reactor_stop(rx);
    return 0;
}

int reward_run(Reward *r, atomic_int *stop)
{
    RunLoop  l = {r, stop};
    Reactor *rx = reactor_new(r->id, REWARD_POLL_MS);
    int64_t  status_ms = (int64_t)(r->status_every_s * 1000.0);
    if (r->status_every_s > 0 && status_ms < 1) status_ms = 1;
    /* Neither registration can fail: the tables hold eight entries each. */
    CHECK(reactor_add_fd(rx, r->wake[0], "wake", run_on_wake, &l, 1) == 0);
    CHECK(reactor_add_timer(rx, "status", status_ms, false, run_on_status, &l) == 0);
    if (r->http_metrics) {
        reward_metrics_tick(r->http_metrics, r);
        CHECK(reactor_add_timer(rx, "metrics", REWARD_METRICS_TICK_MS, false, run_on_metrics, &l) ==
              0);
    }
    reactor_set_idle(rx, run_on_pass, &l);
    /* The reactor's callbacks here never fail. */
    if (!(stop && atomic_load(stop))) reactor_run(rx, &r->is_run_done);
    reactor_free(&rx);
    char line[512];
    reward_status_line(r, line, sizeof line);
    log_info("%s: stopping: %s", r->id, line);
    return 0;
}
