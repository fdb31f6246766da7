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
/* After this long blocked on the reward servers, say so (once per stall). */
#define ACTOR_PUSH_WARN_S 2.0

/* Sends a LeaseRequest for as many prompts as --batch holds groups of the
 * last grant's size. Returns 0 or ERR_IO. */
static int send_request(Actor *a, bool is_resend)
{
    int                G = a->group_guess > 0 ? a->group_guess : ACTOR_GROUP_GUESS;
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.run_id = a->held.run_id;
    req.actor_id = a->id;
    req.max_prompts = a->cfg.batch / G > 0 ? a->cfg.batch / G : 1;
    if (req.max_prompts > WIRE_MAX_PROMPTS) req.max_prompts = WIRE_MAX_PROMPTS;
    req.policy_version = a->held.version;
    req.epoch = a->held.epoch;
    int rc = wire_send(a->lease, &req.base, ZMQ_DONTWAIT);
    if (rc == ERR_AGAIN) { /* no learner connected: ask again soon */
        actor_set_state(a, ACTOR_IDLE, ACTOR_NO_PEER_MS);
        return 0;
    }
    if (rc) {
        /* Not sent: the lease timer tries again on the next turn. */
        reactor_set_timer(a->reactor, ACTOR_TIMER_LEASE, a->cfg.poll_ms);
        return rc == ERR_IO ? rc : 0;
    }
    a->st.requests_sent++;
    if (is_resend) a->st.requests_resent++;
    log_debug("actor %s: lease request for %d prompts%s", a->id, req.max_prompts,
              is_resend ? " (re-sent: no reply)" : "");
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

/* Carves the generation buffers of a lease of N sequences in groups of G
 * (P = N / G), W tokens each, from one block, growing it when needed; the
 * old contents are not kept. */
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
 * (p*G .. p*G+G-1 of the lease) and pushes it. */
static int send_group(Actor *a, const Rlhf__LeaseGrant *g, int p, int W)
{
    int                G = g->group_size;
    Rlhf__Completion  *comp = xmalloc((size_t)G * sizeof *comp);
    Rlhf__Completion **compp = xmalloc((size_t)G * sizeof *compp);
    uint64_t           tokens = 0;
    for (int c = 0; c < G; c++) {
        int    i = p * G + c, k = a->out_n[i];
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

/* Seeds the N sequences' sampling streams from the actor seed and the
 * lease's identity, one stream per sequence, so a seed fixes each lease's
 * samples whatever the order and whenever a sequence gets a slot. */
static void seed_lease(Actor *a, const Rlhf__LeaseGrant *g, int N)
{
    uint64_t s = a->seed ^ (g->lease_id * 0x9E3779B97F4A7C15ULL) ^ (g->epoch << 48) ^
                 actor_fnv1a(g->run_id ? g->run_id : "");
    Rng lease;
    rng_seed(&lease, s);
    for (int i = 0; i < N; i++) rng_seed(&a->rngs[i], rng_u64(&lease));
}

/* One lease being generated: gen's on_done context. */
typedef struct {
    Actor                  *a;
    const Rlhf__LeaseGrant *g;
    int                     W;
    int                     push_rc; /* send_group's failure that ended the run, 0 = none */
} LeaseRun;

/* gen's on_done: sequence i of the lease is finished; once all G of its
 * group are, the group is pushed. Returns 0, or send_group's failure. */
static int on_sequence_done(void *ctx, int i)
{
    LeaseRun *r = ctx;
    Actor    *a = r->a;
    int       G = r->g->group_size, p = i / G;
    a->seq_version[i] = a->held.version;
    if (++a->group_done[p] < G) return 0;
    r->push_rc = send_group(a, r->g, p, r->W);
    return r->push_rc;
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

/* Between two generation steps of lease lid: a stop, or newer weights of
 * the same learner. Weights are swapped only when no sequence is running
 * (the KV cache holds no old-weights state and every completion is made
 * by one version): while a fetch is due, *is_admit is cleared so the
 * running sequences finish and no waiting prompt starts, then the fetch
 * is tried once and prompts start again whatever it did (as between the
 * --batch chunks before continuous batching). Returns 0, ACTOR_STOPPED or
 * ERR_IO; sets *is_dropped when the learner now serves other weights and
 * the rest of the lease must be dropped. */
static int between_steps(Actor *a, const Rlhf__LeaseGrant *g, int max_len, bool *is_admit,
                         bool *is_dropped)
{
    unsigned long long lid = (unsigned long long)g->lease_id;
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
    if (!actor_held_matches(a, g->run_id, g->epoch)) {
        log_warn("actor %s: the learner restarted (now run '%s' epoch %llu) during lease %llu: "
                 "rest of the lease dropped",
                 a->id, a->held.run_id, (unsigned long long)a->held.epoch, lid);
        *is_dropped = true;
    } else if (max_len > model_config(a->model)->max_seq_len || !a->gen) {
        log_warn("actor %s: the model changed shape during lease %llu: rest of the lease dropped",
                 a->id, lid);
        *is_dropped = true;
    }
    return 0;
}

/* Serves one grant with prompts: weights first if needed, then all its
 * P x G sequences in one continuous generation through --batch slots,
 * pushing each group as soon as its G completions are done. Returns 0,
 * ACTOR_STOPPED or ERR_IO. */
static int serve_grant(Actor *a, const Rlhf__LeaseGrant *g)
{
    unsigned long long lid = (unsigned long long)g->lease_id;
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
    const ModelConfig *mc = model_config(a->model);
    int                G = g->group_size, P = (int)g->n_prompts, N = P * G;
    int                W = g->sampling->max_new_tokens, maxp = 0;
    for (int p = 0; p < P; p++)
        if ((int)g->prompts[p]->n_tokens > maxp) maxp = (int)g->prompts[p]->n_tokens;
    int max_len = maxp + W < mc->max_seq_len ? maxp + W : mc->max_seq_len;
    if (!a->gen || max_len > a->gen_max_len) {
        gen_free(&a->gen);
        a->gen = gen_new(a->model, a->cfg.batch, max_len);
        a->gen_max_len = max_len;
    }
    ensure_buffers(a, N, G, W);
    for (int i = 0; i < N; i++) {
        a->prompts[i] = (const int *)g->prompts[i / G]->tokens;
        a->plens[i] = (int)g->prompts[i / G]->n_tokens;
    }
    memset(a->group_done, 0, sizeof(int) * (size_t)P);
    seed_lease(a, g, N);
    LeaseRun  run = {a, g, W, 0};
    GenConfig gc = {.sampler = {g->sampling->temperature, g->sampling->top_k, g->sampling->top_p},
                    .max_new = W,
                    .stop_id = a->eos_id,
                    .is_rng_each = true,
                    .on_done = on_sequence_done,
                    .done_ctx = &run};
    GenOutput out = {a->out_tok, a->out_lps, a->out_lpf, a->out_n, a->out_fin};
    log_debug("actor %s: lease %llu: %d prompts x %d, max_new %d, T %g, with v%llu", a->id, lid, P,
              G, W, (double)g->sampling->temperature, (unsigned long long)a->held.version);
    int      rc = gen_start(a->gen, &gc, N, a->prompts, a->plens, a->rngs, &out);
    GenStats last;
    gen_stats(a->gen, &last);
    for (bool is_first = true; rc == 0 && gen_pending(a->gen) > 0; is_first = false) {
        actor_metrics_tick(a); /* the loop is alive while a long lease is served */
        bool is_admit = true, is_dropped = false;
        if (!is_first) {
            rc = between_steps(a, g, max_len, &is_admit, &is_dropped);
            if (rc == ACTOR_STOPPED) a->st.leases_abandoned++;
            if (rc) return rc;
            if (is_dropped) {
                a->st.leases_abandoned++;
                return 0;
            }
        }
        rc = gen_step(a->gen, is_admit);
        count_slots(a, &last);
    }
    if (run.push_rc == ACTOR_STOPPED || run.push_rc == ERR_RANGE) {
        /* Stopped while no reward server took a group, or a group too big
         * for one frame (logged by wire): the rest is dropped. */
        a->st.leases_abandoned++;
        return run.push_rc == ACTOR_STOPPED ? ACTOR_STOPPED : 0;
    }
    if (run.push_rc) return run.push_rc;
    if (rc != 0) {
        /* Validated prompts cannot fail; non-finite logits mean broken weights. */
        actor_refuse(a, "snapshot", WIRE_REJ_NONFINITE,
                     "lease %llu: generation failed (%s) with %s v%llu", lid, err_str(rc),
                     a->held.run_id, (unsigned long long)a->held.version);
        a->st.leases_abandoned++;
        return 0;
    }
    a->st.leases_done++;
    log_debug("actor %s: lease %llu done", a->id, lid);
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
    int rc = serve_grant(a, g);
    actor_set_state(a, ACTOR_IDLE, 0);
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
