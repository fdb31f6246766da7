#include "actor/actor_work.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor_metrics.h"
#include "actor/actor_weights.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/base/views.h"

/* Prompt ids arrive as int32 and gen takes int: the same type here. */
_Static_assert(sizeof(int) == sizeof(int32_t), "int is 32 bits");

/* Until a grant tells the group size, credit is asked as if G were this. */
#define ACTOR_GROUP_GUESS 8
/* A learner's retry_after_ms is obeyed up to this. */
#define ACTOR_RETRY_MAX_MS 10000
/* Wait after a LeaseRequest could not be queued (no learner connected). */
#define ACTOR_NO_PEER_MS 100
/* Wait after the learner refused a request (an ErrorReply). */
#define ACTOR_REFUSED_MS 500
/* Fetch attempts made for one grant whose run or epoch differs from ours. */
#define ACTOR_GRANT_FETCHES 3
/* Answers without work to early requests in a row double the wait up to 2^this times. */
#define ACTOR_EARLY_BACKOFF 4
/* After this long blocked on the reward servers, say so (once per stall). */
#define ACTOR_PUSH_WARN_S 2.0

/* Prompts asked for per lease: as many as --batch holds groups of G. */
static int request_prompts(const Actor *a, int G)
{
    int n = a->cfg.batch / G > 0 ? a->cfg.batch / G : 1;
    return n > WIRE_MAX_PROMPTS ? WIRE_MAX_PROMPTS : n;
}

/* Queues a LeaseRequest for as many prompts as --batch holds groups of the
 * last grant's size, without changing state. Returns 0, ERR_AGAIN (no
 * learner connected), or wire_send's error. */
static int post_request(Actor *a, bool is_resend)
{
    int                G = a->group_guess > 0 ? a->group_guess : ACTOR_GROUP_GUESS;
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.run_id = a->held.run_id;
    req.actor_id = a->id;
    req.max_prompts = request_prompts(a, G);
    req.policy_version = a->held.version;
    req.epoch = a->held.epoch;
    int rc = wire_send(a->lease, &req.base, ZMQ_DONTWAIT);
    if (rc) return rc;
    a->st.requests_sent++;
    if (is_resend) a->st.requests_resent++;
    log_debug("actor %s: lease request for %d prompts%s", a->id, req.max_prompts,
              is_resend ? " (re-sent: no reply)" : "");
    return 0;
}

/* Sends a LeaseRequest and waits for its reply (REQUESTING). Returns 0 or
 * ERR_IO. */
static int send_request(Actor *a, bool is_resend)
{
    int rc = post_request(a, is_resend);
    if (rc == ERR_AGAIN) { /* no learner connected: ask again soon */
        actor_set_state(a, ACTOR_IDLE, ACTOR_NO_PEER_MS);
        return 0;
    }
    if (rc) {
        /* Not sent: the lease timer tries again on the next turn. */
        reactor_set_timer(a->reactor, ACTOR_TIMER_LEASE, a->cfg.poll_ms);
        return rc == ERR_IO ? rc : 0;
    }
    actor_set_state(a, ACTOR_REQUESTING, 0);
    return 0;
}

static bool lease_seen(Actor *a, const Rlhf__LeaseGrant *g)
{
    for (int i = 0; i < a->n_seen; i++) {
        const LeaseSeen *s = &a->seen[i];
        if (s->lease_id == g->lease_id && s->epoch == g->epoch && !strcmp(s->run_id, g->run_id))
            return true;
    }
    LeaseSeen *s = &a->seen[a->seen_at];
    actor_copy_str(s->run_id, sizeof s->run_id, g->run_id);
    s->epoch = g->epoch;
    s->lease_id = g->lease_id;
    a->seen_at = (a->seen_at + 1) % ACTOR_RECENT_LEASES;
    if (a->n_seen < ACTOR_RECENT_LEASES) a->n_seen++;
    return false;
}

/* Carves the generation buffers of N sequence places in groups of G
 * (N / G groups), W tokens each, from one block, growing it when needed;
 * the old contents are not kept. */
static void ensure_buffers(Actor *a, int N, int G, int W)
{
    size_t NW = (size_t)N * W, GW = (size_t)G * W, P = (size_t)(N / G);
    View   views[] = {VIEW(&a->prompts, N),    VIEW(&a->plens, N),    VIEW(&a->out_tok, NW),
                      VIEW(&a->out_lps, NW),   VIEW(&a->out_lpf, NW), VIEW(&a->out_n, N),
                      VIEW(&a->out_fin, N),    VIEW(&a->rngs, N),     VIEW(&a->seq_version, N),
                      VIEW(&a->group_done, P), VIEW(&a->gb_pv, GW)};
    views_reserve(&a->buf_block, &a->buf_bytes, views, sizeof views / sizeof views[0]);
}

/* Pushes one group, waiting (poll_ms at a time) while no reward server can
 * take it. Returns 0, ACTOR_STOPPED, or ERR_IO / ERR_RANGE (logged). */
static int push_group(Actor *a, const Rlhf__SampledGroup *g)
{
    double t0 = progress_now();
    for (;;) {
        int rc = wire_send(a->push, &g->base, ZMQ_DONTWAIT);
        if (rc == 0) {
            if (a->is_push_warned) log_info("actor %s: a reward server takes groups again", a->id);
            a->is_push_warned = false;
            return 0;
        }
        if (rc != ERR_AGAIN) return rc;
        if (actor_is_stopped(a)) return ACTOR_STOPPED;
        if (!a->is_push_warned && progress_now() - t0 > ACTOR_PUSH_WARN_S) {
            log_warn("actor %s: no reward server takes groups (%d endpoint(s), first %s); waiting",
                     a->id, a->cfg.n_reward, a->cfg.reward_eps[0]);
            a->is_push_warned = true;
        }
        zmq_pollitem_t it = {.socket = wire_sock_zmq(a->push), .events = ZMQ_POLLOUT};
        if (zmq_poll(&it, 1, a->cfg.poll_ms) < 0 && zmq_errno() != EINTR) {
            log_error("actor %s: zmq_poll on the reward socket: %s", a->id,
                      zmq_strerror(zmq_errno()));
            return ERR_IO;
        }
    }
}

/* Builds the SampledGroup of prompt p from its G finished sequences
 * (places first + p*G .. first + p*G+G-1) and pushes it. */
static int send_group(Actor *a, const Rlhf__LeaseGrant *g, int first, int p, int W)
{
    int                G = g->group_size;
    Rlhf__Completion  *comp = xmalloc((size_t)G * sizeof *comp);
    Rlhf__Completion **compp = xmalloc((size_t)G * sizeof *compp);
    uint64_t           tokens = 0;
    for (int c = 0; c < G; c++) {
        int    i = first + p * G + c, k = a->out_n[i];
        size_t at = (size_t)i * W;
        rlhf__completion__init(&comp[c]);
        /* Weights change only while no sequence runs: one version per completion. */
        for (int t = 0; t < k; t++) a->gb_pv[(size_t)c * W + t] = a->seq_version[i];
        comp[c].n_tokens = comp[c].n_logp_behaviour = comp[c].n_logp_sampled =
            comp[c].n_policy_version = (size_t)k;
        comp[c].tokens = a->out_tok + at;
        comp[c].logp_behaviour = a->out_lpf + at;
        comp[c].logp_sampled = a->out_lps + at;
        comp[c].policy_version = a->gb_pv + (size_t)c * W;
        comp[c].finish = a->out_fin[i] == GEN_FINISH_STOP ? RLHF__COMPLETION__FINISH__FINISH_STOP
                                                          : RLHF__COMPLETION__FINISH__FINISH_LENGTH;
        compp[c] = &comp[c];
        tokens += (uint64_t)k;
    }
    Rlhf__SampledGroup sg = RLHF__SAMPLED_GROUP__INIT;
    sg.version = WIRE_PROTOCOL_VERSION;
    sg.run_id = g->run_id;
    sg.epoch = g->epoch;
    sg.lease_id = g->lease_id;
    sg.actor_id = a->id;
    sg.prompt = g->prompts[p]; /* borrowed: packing only reads it */
    sg.completions = compp;
    sg.n_completions = (size_t)G;
    sg.sampling = g->sampling;
    sg.group_index = p;
    sg.group_count = (int32_t)g->n_prompts;
    int rc = push_group(a, &sg);
    free(compp);
    free(comp);
    if (rc == 0) {
        a->st.groups_sent++;
        a->st.completions_sent += (uint64_t)G;
        a->st.tokens_generated += tokens;
    }
    return rc;
}

/* Checks a grant's prompts and sampling against the held model. Returns
 * true if it can be served; a refusal is counted and logged. */
static bool grant_usable(Actor *a, const Rlhf__LeaseGrant *g)
{
    const ModelConfig *mc = model_config(a->model);
    char               why[160];
    SamplerConfig      sc = {g->sampling->temperature, g->sampling->top_k, g->sampling->top_p};
    if (sampler_config_validate(&sc, why, sizeof why) != 0) {
        actor_refuse(a, "LeaseGrant", WIRE_REJ_BAD_VALUE, "lease %llu: sampling: %s",
                     (unsigned long long)g->lease_id, why);
        return false;
    }
    for (size_t p = 0; p < g->n_prompts; p++) {
        const Rlhf__Prompt *pr = g->prompts[p];
        if (pr->n_tokens + 1 > (size_t)mc->max_seq_len) {
            actor_refuse(a, "LeaseGrant", WIRE_REJ_BAD_SHAPE,
                         "lease %llu prompt %zu: %zu tokens, the model takes at most %d with one "
                         "generated",
                         (unsigned long long)g->lease_id, p, pr->n_tokens, mc->max_seq_len - 1);
            return false;
        }
        for (size_t t = 0; t < pr->n_tokens; t++) {
            if (pr->tokens[t] < 0 || pr->tokens[t] >= mc->vocab_size) {
                actor_refuse(a, "LeaseGrant", WIRE_REJ_BAD_TOKENS,
                             "lease %llu prompt %zu token %zu: id %d, expected 0..%d",
                             (unsigned long long)g->lease_id, p, t, pr->tokens[t],
                             mc->vocab_size - 1);
                return false;
            }
        }
    }
    return true;
}

/* Seeds the sampling streams of places first..first+N-1 from the actor
 * seed and the lease's identity, one stream per sequence, so a seed fixes
 * each lease's samples whatever the order, whichever places it took and
 * whenever a sequence gets a slot. */
static void seed_lease(Actor *a, const Rlhf__LeaseGrant *g, int first, int N)
{
    uint64_t s = a->seed ^ (g->lease_id * 0x9E3779B97F4A7C15ULL) ^ (g->epoch << 48) ^
                 actor_fnv1a(g->run_id ? g->run_id : "");
    Rng lease;
    rng_seed(&lease, s);
    for (int i = 0; i < N; i++) rng_seed(&a->rngs[first + i], rng_u64(&lease));
}

/* The longest sequence a grant needs (prompt + max new tokens, at most the
 * model's context). */
static int grant_max_len(const Actor *a, const Rlhf__LeaseGrant *g)
{
    int maxp = 0, W = g->sampling->max_new_tokens, ctx = model_config(a->model)->max_seq_len;
    for (size_t p = 0; p < g->n_prompts; p++)
        if ((int)g->prompts[p]->n_tokens > maxp) maxp = (int)g->prompts[p]->n_tokens;
    return maxp + W < ctx ? maxp + W : ctx;
}

/* One lease of a generation run: its grant and the places it holds. */
typedef struct {
    const Rlhf__LeaseGrant *g;           /* NULL: the half is free */
    Rlhf__LeaseGrant       *owned;       /* g when the run read it itself (freed when done) */
    int                     first;       /* its first place */
    int                     groups_left; /* groups not pushed yet */
} RunLease;

/* One generation run: a first lease and, with --cross-lease, the leases
 * joined into it while it runs, at most two in flight, each in a half of
 * the places (H each). Every lease of a run shares the first one's run,
 * epoch, group size and sampling (gen's GenConfig). gen's on_done context. */
typedef struct {
    Actor                  *a;
    const Rlhf__LeaseGrant *first; /* the grant the run started with (its sampling is the run's) */
    int                     G, W, H, n_halves;
    RunLease                half[2];
    int                     push_rc;     /* send_group's failure that ended the run, 0 = none */
    bool                    is_asked;    /* an early LeaseRequest awaits its reply */
    double                  t_asked;     /* when it was sent */
    double                  t_ask_after; /* no early request before this (a retry or refusal) */
    int                     n_empty;     /* answers without work in a row to early requests */
    Rlhf__LeaseGrant       *next;        /* a grant that cannot join: served once the run drains */
} Run;

/* gen's on_done: the sequence at place i is finished; once all G of its
 * group are, the group is pushed, and once all groups of its lease are,
 * the lease is done and its half free. Returns 0, or send_group's failure. */
static int on_sequence_done(void *ctx, int i)
{
    Run      *r = ctx;
    Actor    *a = r->a;
    RunLease *l = &r->half[i / r->H];
    a->seq_version[i] = a->held.version;
    if (++a->group_done[i / r->G] < r->G) return 0;
    r->push_rc = send_group(a, l->g, l->first, (i - l->first) / r->G, r->W);
    if (r->push_rc) return r->push_rc;
    if (--l->groups_left > 0) return 0;
    a->st.leases_done++;
    log_debug("actor %s: lease %llu done", a->id, (unsigned long long)l->g->lease_id);
    if (l->owned) protobuf_c_message_free_unpacked(&l->owned->base, NULL);
    *l = (RunLease){0};
    return 0;
}

/* Leases of the run still in flight, counted as abandoned and released
 * (a stop, a restarted learner, a failed push or generation). */
static void run_abandon(Run *r)
{
    for (int h = 0; h < 2; h++) {
        RunLease *l = &r->half[h];
        if (!l->g) continue;
        r->a->st.leases_abandoned++;
        if (l->owned) protobuf_c_message_free_unpacked(&l->owned->base, NULL);
        *l = (RunLease){0};
    }
}

/* Puts lease g into free half h: its places' prompts and streams, then
 * gen_add. Returns 0 or gen_add's ERR_RANGE (grant_usable checked it). */
static int run_seed(Run *r, int h, const Rlhf__LeaseGrant *g, Rlhf__LeaseGrant *owned)
{
    Actor *a = r->a;
    int    P = (int)g->n_prompts, N = P * r->G, first = h * r->H;
    for (int i = 0; i < N; i++) {
        a->prompts[first + i] = (const int *)g->prompts[i / r->G]->tokens;
        a->plens[first + i] = (int)g->prompts[i / r->G]->n_tokens;
    }
    memset(a->group_done + first / r->G, 0, sizeof(int) * (size_t)P);
    seed_lease(a, g, first, N);
    r->half[h] = (RunLease){g, owned, first, P};
    log_debug("actor %s: lease %llu: %d prompts x %d into places %d..%d, max_new %d, T %g, with "
              "v%llu",
              a->id, (unsigned long long)g->lease_id, P, r->G, first, first + N - 1, r->W,
              (double)g->sampling->temperature, (unsigned long long)a->held.version);
    return gen_add(a->gen, first, N);
}

/* Whether grant g can join the run: the held weights and the run's run,
 * epoch, group size and sampling, a lease that fits a half, prompts that
 * fit the generator. */
static bool run_joinable(const Run *r, const Rlhf__LeaseGrant *g)
{
    const Actor                *a = r->a;
    const Rlhf__SamplingParams *s = g->sampling, *rs = r->first->sampling;
    return actor_held_matches(a, g->run_id, g->epoch) && !strcmp(g->run_id, r->first->run_id) &&
           g->epoch == r->first->epoch && a->held.version >= g->min_policy_version &&
           g->group_size == r->G && (int)g->n_prompts * r->G <= r->H &&
           s->temperature == rs->temperature && s->top_k == rs->top_k && s->top_p == rs->top_p &&
           s->max_new_tokens == rs->max_new_tokens && grant_max_len(a, g) <= a->gen_max_len;
}

/* The reply to the run's early request, if one waits. A grant that joins
 * goes into the free half; one that cannot is kept as r->next. Returns 0
 * or ERR_IO. */
static int run_read_reply(Run *r)
{
    Actor            *a = r->a;
    ProtobufCMessage *m = NULL;
    int               rc = actor_recv(a, a->lease, 0, &rlhf__lease_grant__descriptor, &m);
    if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return 0;
    if (rc == ERR_IO) return rc;
    if (rc == 1) { /* an ErrorReply (counted and logged): ask again after a pause */
        r->is_asked = false;
        r->t_ask_after = progress_now() + ACTOR_REFUSED_MS / 1000.0;
        return 0;
    }
    if (rc < 0) return 0; /* refused, counted and logged: the request may still be answered */
    Rlhf__LeaseGrant *g = (Rlhf__LeaseGrant *)m;
    r->is_asked = false;
    if (g->n_prompts == 0) {
        /* No work now, or this actor holds its credit (the learner's
         * grants_credit, until the running lease's groups reach it): ask
         * again after the time it says, doubled for each such answer in a
         * row during the run, quietly. */
        a->st.retries++;
        int ms = g->retry_after_ms > 0 ? g->retry_after_ms : a->cfg.poll_ms;
        ms <<= r->n_empty < ACTOR_EARLY_BACKOFF ? r->n_empty : ACTOR_EARLY_BACKOFF;
        if (ms > ACTOR_RETRY_MAX_MS) ms = ACTOR_RETRY_MAX_MS;
        r->n_empty++;
        r->t_ask_after = progress_now() + ms / 1000.0;
        if (!actor_held_matches(a, g->run_id, g->epoch) && g->run_id[0] && !a->is_fetch_due)
            actor_want_fetch(a);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    if (lease_seen(a, g)) {
        log_info("actor %s: lease %llu granted twice; the duplicate is ignored", a->id,
                 (unsigned long long)g->lease_id);
        a->st.leases_stale++;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    a->group_guess = g->group_size;
    r->n_empty = 0;
    int h = !r->half[0].g ? 0 : 1;
    if (r->half[h].g || !run_joinable(r, g)) {
        log_debug("actor %s: lease %llu waits for the running generation to end", a->id,
                  (unsigned long long)g->lease_id);
        r->next = g;
        return 0;
    }
    if (!grant_usable(a, g)) {
        a->st.leases_refused++;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    if (run_seed(r, h, g, g) != 0) { /* prompts checked by grant_usable: not expected */
        a->st.leases_refused++;
        protobuf_c_message_free_unpacked(m, NULL);
        r->half[h] = (RunLease){0};
        return 0;
    }
    a->st.leases_joined++;
    return 0;
}

/* With --cross-lease, between steps: once every sequence of the run holds
 * a slot or is done (none waits) and a half is free, the next lease is
 * asked for; its reply is read without waiting. No request goes while a
 * fetch is due, a grant waits for the run to end, or a retry delay runs.
 * Returns 0 or ERR_IO. */
static int run_cross(Run *r)
{
    Actor *a = r->a;
    if (r->n_halves < 2) return 0;
    bool is_resend = false;
    if (r->is_asked) {
        int rc = run_read_reply(r);
        if (rc) return rc;
        if (r->is_asked) {
            if (progress_now() - r->t_asked <= a->cfg.reply_timeout_ms / 1000.0) return 0;
            log_info("actor %s: no lease reply in %d ms; asking again", a->id,
                     a->cfg.reply_timeout_ms);
            r->is_asked = false;
            is_resend = true;
        }
    }
    double now = progress_now();
    if (a->is_fetch_due || r->next || (r->half[0].g && r->half[1].g) || gen_waiting(a->gen) > 0 ||
        now < r->t_ask_after)
        return 0;
    int rc = post_request(a, is_resend);
    if (rc == ERR_AGAIN) { /* no learner connected */
        r->t_ask_after = now + ACTOR_NO_PEER_MS / 1000.0;
        return 0;
    }
    if (rc) return rc == ERR_IO ? rc : 0;
    r->is_asked = true;
    r->t_asked = now;
    return 0;
}

/* Adds the generator's slot use since *last to the actor's counters. */
static void count_slots(Actor *a, GenStats *last)
{
    GenStats now;
    gen_stats(a->gen, &now);
    a->st.slot_steps += now.slot_steps - last->slot_steps;
    a->st.slot_rows_used += now.rows_used - last->rows_used;
    *last = now;
}

/* Between two generation steps: a stop, or newer weights of the same
 * learner. Weights are swapped only when no sequence is running (the KV
 * cache holds no old-weights state and every completion is made by one
 * version): while a fetch is due, *is_admit is cleared so the running
 * sequences finish and no waiting prompt starts, then the fetch is tried
 * once and prompts start again whatever it did. Returns 0, ACTOR_STOPPED
 * or ERR_IO; sets *is_dropped when the learner now serves other weights
 * and the leases in flight must be dropped. */
static int between_steps(Run *r, bool *is_admit, bool *is_dropped)
{
    Actor *a = r->a;
    *is_admit = true;
    if (actor_is_stopped(a)) return ACTOR_STOPPED;
    if (actor_read_announces(a)) return ERR_IO;
    if (!a->is_fetch_due) return 0;
    if (gen_running(a->gen) > 0) {
        *is_admit = false;
        return 0;
    }
    int rc = actor_fetch(a, 1);
    if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
    if (!actor_held_matches(a, r->first->run_id, r->first->epoch)) {
        log_warn("actor %s: the learner restarted (now run '%s' epoch %llu) during the "
                 "generation of lease %llu: the leases in flight dropped",
                 a->id, a->held.run_id, (unsigned long long)a->held.epoch,
                 (unsigned long long)r->first->lease_id);
        *is_dropped = true;
    } else if (a->gen_max_len > model_config(a->model)->max_seq_len || !a->gen) {
        log_warn("actor %s: the model changed shape during lease %llu: the leases in flight "
                 "dropped",
                 a->id, (unsigned long long)r->first->lease_id);
        *is_dropped = true;
    }
    return 0;
}

/* Serves one grant with prompts: weights first if needed, then a
 * continuous generation through --batch slots of its P x G sequences and,
 * with --cross-lease, of the leases that join it, pushing each group as
 * soon as its G completions are done. A grant read meanwhile that cannot
 * join is returned in *next (caller owns) to be served after. *is_asked
 * tells whether an early request is still unanswered. Returns 0,
 * ACTOR_STOPPED or ERR_IO. */
static int serve_grant(Actor *a, const Rlhf__LeaseGrant *g, Rlhf__LeaseGrant **next, bool *is_asked,
                       double *t_ask_after)
{
    unsigned long long lid = (unsigned long long)g->lease_id;
    *next = NULL;
    *is_asked = false;
    *t_ask_after = 0;
    if (!actor_held_matches(a, g->run_id, g->epoch) || a->held.version < g->min_policy_version) {
        /* The learner's run or epoch differs (it restarted, maybe behind
         * us) or it wants a newer version: its weights first. */
        int rc = actor_fetch(a, ACTOR_GRANT_FETCHES);
        if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
        if (!actor_held_matches(a, g->run_id, g->epoch)) {
            char w[200];
            actor_weights_format(&a->held, w, sizeof w);
            log_warn("actor %s: lease %llu of run '%s' epoch %llu, but the learner serves %s: "
                     "lease dropped",
                     a->id, lid, g->run_id, (unsigned long long)g->epoch, w);
            a->st.leases_abandoned++;
            return 0;
        }
        if (a->held.version < g->min_policy_version)
            log_warn("actor %s: lease %llu wants v%llu, the learner's snapshot is v%llu: serving "
                     "it with v%llu",
                     a->id, lid, (unsigned long long)g->min_policy_version,
                     (unsigned long long)a->held.version, (unsigned long long)a->held.version);
    }
    if (!grant_usable(a, g)) {
        a->st.leases_refused++;
        return 0;
    }
    int G = g->group_size, P = (int)g->n_prompts, W = g->sampling->max_new_tokens;
    int max_len = grant_max_len(a, g), ctx = model_config(a->model)->max_seq_len;
    /* Two halves of places, each a whole lease of this size; the generator
     * gets room for prompts up to twice the longest of this one, so the
     * next lease's usually fit. A larger max_len changes no completion: a
     * sequence still stops at its max_new tokens or the model's context. */
    int H = (P > request_prompts(a, G) ? P : request_prompts(a, G)) * G;
    int n_halves = a->cfg.cross_lease ? 2 : 1;
    if (a->cfg.cross_lease) {
        int maxp = 0;
        for (int p = 0; p < P; p++)
            if ((int)g->prompts[p]->n_tokens > maxp) maxp = (int)g->prompts[p]->n_tokens;
        int64_t room = 2 * (int64_t)maxp + W;
        if (room > ctx) room = ctx;
        if (room > max_len) max_len = (int)room;
    } else {
        H = P * G;
    }
    if (!a->gen || max_len > a->gen_max_len) {
        gen_free(&a->gen);
        a->gen = gen_new(a->model, a->cfg.batch, max_len);
        a->gen_max_len = max_len;
    }
    ensure_buffers(a, n_halves * H, G, W);
    Run       run = {.a = a, .first = g, .G = G, .W = W, .H = H, .n_halves = n_halves};
    GenConfig gc = {.sampler = {g->sampling->temperature, g->sampling->top_k, g->sampling->top_p},
                    .max_new = W,
                    .stop_id = a->eos_id,
                    .is_rng_each = true,
                    .on_done = on_sequence_done,
                    .done_ctx = &run};
    GenOutput out = {a->out_tok, a->out_lps, a->out_lpf, a->out_n, a->out_fin};
    int       rc = gen_open(a->gen, &gc, n_halves * H, a->prompts, a->plens, a->rngs, &out);
    if (rc == 0) rc = run_seed(&run, 0, g, NULL);
    GenStats last;
    gen_stats(a->gen, &last);
    for (bool is_first = true; rc == 0 && gen_pending(a->gen) > 0; is_first = false) {
        actor_metrics_tick(a); /* the loop is alive while a long run is served */
        bool is_admit = true, is_dropped = false;
        if (!is_first) {
            rc = between_steps(&run, &is_admit, &is_dropped);
            if (rc == 0 && !is_dropped) rc = run_cross(&run);
            if (rc || is_dropped) {
                run_abandon(&run);
                break;
            }
        }
        rc = gen_step(a->gen, is_admit);
        count_slots(a, &last);
    }
    *next = run.next;
    *is_asked = run.is_asked;
    *t_ask_after = run.t_ask_after;
    if (run.push_rc) {
        /* Stopped while no reward server took a group, or a group too big
         * for one frame (logged by wire): the rest is dropped. */
        run_abandon(&run);
        if (run.push_rc == ERR_RANGE) return 0;
        return run.push_rc;
    }
    if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc; /* in flight already abandoned */
    if (rc != 0) {
        /* Validated prompts cannot fail; non-finite logits mean broken weights. */
        actor_refuse(a, "snapshot", WIRE_REJ_NONFINITE,
                     "lease %llu: generation failed (%s) with %s v%llu", lid, err_str(rc),
                     a->held.run_id, (unsigned long long)a->held.version);
        run_abandon(&run);
    }
    return 0;
}

int actor_on_grant(Actor *a, const ProtobufCMessage *msg)
{
    const Rlhf__LeaseGrant *g = (const Rlhf__LeaseGrant *)msg;
    if (g->n_prompts == 0) {
        a->st.retries++;
        int ms = g->retry_after_ms > 0 ? g->retry_after_ms : a->cfg.poll_ms;
        if (ms > ACTOR_RETRY_MAX_MS) ms = ACTOR_RETRY_MAX_MS;
        actor_set_state(a, ACTOR_IDLE, ms);
        /* An idle learner of another run or epoch, higher or lower (epochs
         * are never compared for order: learner/epoch.h), still tells us
         * to follow it. */
        if (!actor_held_matches(a, g->run_id, g->epoch) && g->run_id[0] && !a->is_fetch_due)
            actor_want_fetch(a);
        return 0;
    }
    /* Any grant answers the request: the next one may go at once. A grant
     * of another epoch is served after a fetch (serve_grant), or dropped
     * if the learner turns out to serve other weights. */
    actor_set_state(a, ACTOR_IDLE, 0);
    if (lease_seen(a, g)) {
        log_info("actor %s: lease %llu granted twice; the duplicate is ignored", a->id,
                 (unsigned long long)g->lease_id);
        a->st.leases_stale++;
        return 0;
    }
    a->group_guess = g->group_size;
    actor_set_state(a, ACTOR_SAMPLING, 0);
    /* A grant read during the run that could not join it is served next
     * (after a fetch if one is due); the run owns it from then on. */
    int               rc = 0;
    bool              is_asked = false;
    double            t_ask_after = 0;
    Rlhf__LeaseGrant *owned = NULL, *next = NULL;
    for (;;) {
        rc = serve_grant(a, g, &next, &is_asked, &t_ask_after);
        if (owned) protobuf_c_message_free_unpacked(&owned->base, NULL);
        owned = next;
        g = next;
        if (!g || rc) break;
        if (a->is_fetch_due) {
            rc = actor_fetch(a, 1);
            if (rc == ACTOR_STOPPED || rc == ERR_IO) break;
            rc = 0;
        }
    }
    if (owned) {
        /* Not served (a stop or a failure): the learner re-issues it at its deadline. */
        a->st.leases_abandoned++;
        protobuf_c_message_free_unpacked(&owned->base, NULL);
    }
    if (is_asked) {
        actor_set_state(a, ACTOR_REQUESTING, 0); /* its reply comes through the loop */
    } else {
        double wait_s = t_ask_after - progress_now();
        actor_set_state(a, ACTOR_IDLE, wait_s > 0 ? (int)(wait_s * 1000.0) + 1 : 0);
    }
    return rc;
}

int actor_on_lease_refused(Actor *a)
{
    actor_set_state(a, ACTOR_IDLE, ACTOR_REFUSED_MS);
    return 0;
}

int actor_on_lease_timer(Reactor *r, void *arg)
{
    Actor *a = arg;
    if (a->state == ACTOR_REQUESTING) {
        /* The learner may have restarted and lost the request; a DEALER
         * may simply ask again. A late reply to the first is still work;
         * a duplicate grant is recognised by its lease id. */
        log_info("actor %s: no lease reply in %d ms; asking again", a->id, a->cfg.reply_timeout_ms);
        return send_request(a, true);
    }
    if (a->state == ACTOR_IDLE) return send_request(a, false);
    return 0;
}
