#include "actor/actor.h"
#include "actor/actor_int.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/nn/model.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"

_Static_assert(ACTOR_MAX_RUN_ID == WIRE_MAX_NAME + 1, "a run id holds WIRE_MAX_NAME bytes");
/* Prompt ids arrive as int32 and gen_run takes int: the same type here. */
_Static_assert(sizeof(int) == sizeof(int32_t), "int is 32 bits");

/* Until a grant tells the group size, credit is asked as if G were this. */
#define ACTOR_GROUP_GUESS 8
/* Largest parameter block the actor accepts from a snapshot (16 GiB). */
#define ACTOR_MAX_SNAPSHOT_BYTES ((size_t)16 << 30)
/* A learner's retry_after_ms is obeyed up to this. */
#define ACTOR_RETRY_MAX_MS 10000
/* Wait after a LeaseRequest could not be queued (no learner connected). */
#define ACTOR_NO_PEER_MS 100
/* Back-off between failed snapshot fetches, doubling from MIN to MAX. */
#define ACTOR_BACKOFF_MIN_MS 100
#define ACTOR_BACKOFF_MAX_MS 2000
/* Seconds between log lines while snapshot fetches keep failing. */
#define ACTOR_FETCH_LOG_S 10.0
/* Fetch attempts made for one grant whose run or epoch differs from ours. */
#define ACTOR_GRANT_FETCHES 3
/* Recently served leases remembered to drop duplicate grants. */
#define ACTOR_RECENT_LEASES 64
/* After this long blocked on the reward servers, say so (once per stall). */
#define ACTOR_PUSH_WARN_S 2.0

/* Internal result: the stop flag was seen. */
#define ACTOR_STOPPED 1

/* The name of one set of weights. */
typedef struct {
    char     run_id[ACTOR_MAX_RUN_ID];
    uint64_t epoch;
    uint64_t version;
} WeightsId;

typedef struct {
    char     run_id[ACTOR_MAX_RUN_ID];
    uint64_t epoch;
    uint64_t lease_id;
} LeaseSeen;

struct Actor {
    ActorConfig cfg; /* strings point into the copies below */
    char        id[ACTOR_MAX_ID];
    char       *ep_copies[3 + ACTOR_MAX_REWARD];
    uint64_t    seed; /* effective sampling seed */
    void       *zctx;
    WireSock   *lease; /* DEALER -> learner lease ROUTER */
    WireSock   *sub;   /* SUB <- learner PUB */
    WireSock   *snap;  /* DEALER -> learner snapshot ROUTER */
    WireSock   *push;  /* PUSH -> reward servers */
    WireRejects local; /* refusals found after decoding (prompts vs model, snapshots) */

    /* Weights. */
    Model      *model;  /* NULL before the first snapshot */
    int         eos_id; /* stop token of the held model */
    bool        has_weights;
    WeightsId   held;          /* identity of the weights in model */
    bool        want_fetch;    /* an announce says the learner has other weights */
    WeightsId   announced;     /* the newest announce that asked for a fetch */
    WireSnapRx *rx;            /* assembles snapshots in its own (spare) buffer */
    int         backoff_ms;    /* wait before the next fetch attempt */
    int         n_fetch_fails; /* failed attempts since the last success */
    double      t_fetch_log;   /* when the last such failure was logged */
    Generator  *gen;
    int         gen_max_len;

    /* Leases. */
    bool      is_outstanding; /* a LeaseRequest awaits its reply */
    double    t_request;      /* when it was sent */
    double    t_next_request; /* do not ask before this */
    int       group_guess;    /* G of the last grant */
    LeaseSeen seen[ACTOR_RECENT_LEASES];
    int       n_seen, seen_at;

    /* Generation buffers, grown on demand. */
    int        *out_tok;           /* (batch, W) */
    float      *out_lps, *out_lpf; /* (batch, W) */
    int        *out_n, *out_fin;   /* (batch) */
    size_t      out_cap;           /* floats in out_lps etc. */
    const int **prompts;           /* (batch) */
    int        *plens;             /* (batch) */
    int32_t    *gb_tok;            /* (G, W) one group being assembled */
    float      *gb_lb, *gb_ls;     /* (G, W) */
    uint64_t   *gb_pv;             /* (G, W) */
    int        *gb_n, *gb_fin;     /* (G) */
    size_t      gb_cap;            /* entries in gb_tok etc. */
    int         gb_g_cap;          /* entries in gb_n, gb_fin */

    ActorStats st;
    double     t_status; /* monotonic time of the last status line */
    ActorStats st_last;  /* counters at the last status line */
    bool       is_push_warned;
};

static double now_s(void)
{
    return progress_now();
}

static bool is_stopped(atomic_int *stop)
{
    return atomic_load(stop) != 0;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    /* An interrupted sleep is fine: the caller looks at the stop flag. */
    nanosleep(&ts, NULL);
}

/* Waits ms, looking at the stop flag every poll_ms. Returns ACTOR_STOPPED or 0. */
static int wait_ms(Actor *a, atomic_int *stop, int ms)
{
    double end = now_s() + ms / 1000.0;
    while (!is_stopped(stop)) {
        double left = end - now_s();
        if (left <= 0) return 0;
        int step = (int)(left * 1000.0) + 1;
        sleep_ms(step < a->cfg.poll_ms ? step : a->cfg.poll_ms);
    }
    return ACTOR_STOPPED;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* ---- Snapshot config -------------------------------------------------- */

/* Parameters a config implies, in the model's layout (model.h): what the
 * snapshot's size is checked against before any model is built from it, so
 * a peer cannot make the actor allocate for a config it did not send. */
uint64_t actor_config_num_params(const ModelConfig *c)
{
    uint64_t C = (uint64_t)c->dim, HS = C / (uint64_t)c->n_heads;
    uint64_t kvd = (uint64_t)c->n_kv_heads * HS, H = (uint64_t)c->hidden_dim;
    uint64_t layer = 2 * C + 2 * C * C + 2 * kvd * C + 3 * H * C;
    uint64_t n = (uint64_t)c->vocab_size * C + (uint64_t)c->n_layers * layer + C;
    if (!c->tie_embeddings) n += (uint64_t)c->vocab_size * C;
    if (c->has_value_head) n += C + 1;
    return n;
}

bool actor_config_equal(const ModelConfig *x, const ModelConfig *y)
{
    return x->dim == y->dim && x->n_layers == y->n_layers && x->n_heads == y->n_heads &&
           x->n_kv_heads == y->n_kv_heads && x->hidden_dim == y->hidden_dim &&
           x->vocab_size == y->vocab_size && x->max_seq_len == y->max_seq_len &&
           x->rope_theta == y->rope_theta && x->norm_eps == y->norm_eps &&
           x->tie_embeddings == y->tie_embeddings && x->has_value_head == y->has_value_head;
}

/* ---- Receiving -------------------------------------------------------- */

/* Receives one message of type desc from s, waiting up to timeout_ms.
 * Returns 0 with *out (caller frees); 1 if the frame was an ErrorReply
 * (logged and counted); ERR_TIMEOUT, ERR_AGAIN (EINTR) or ERR_IO from
 * wire_recv; or a negative code for a frame that was refused (counted in
 * the socket's rejects and logged by wire, rate-limited). */
static int recv_msg(Actor *a, WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
                    const WireLimits *lim, ProtobufCMessage **out)
{
    *out = NULL;
    WireMsg m;
    int     rc = wire_recv(s, timeout_ms, &m);
    if (rc) return rc; /* a malformed frame is already counted and logged by wire_recv */
    WireReject rej;
    rc = wire_decode(desc, wire_msg_data(&m), wire_msg_size(&m), lim, out, &rej);
    if (rc == 0) {
        wire_msg_close(&m);
        return 0;
    }
    /* The learner answers a request it refuses with an ErrorReply, which
     * never decodes as a chunk or a grant (its field 2 is a varint where
     * theirs is a string), so it is only tried once the expected type failed. */
    Rlhf__ErrorReply *er = NULL;
    WireReject        rej2;
    if (wire_decode(&rlhf__error_reply__descriptor, wire_msg_data(&m), wire_msg_size(&m), NULL,
                    (ProtobufCMessage **)&er, &rej2) == 0 &&
        (er->code != 0 || (er->reason && er->reason[0]))) {
        a->st.error_replies++;
        log_warn("actor %s: socket '%s': error reply %d (%s): %.200s", a->id, wire_sock_name(s),
                 er->code, err_str(er->code), er->reason ? er->reason : "");
        protobuf_c_message_free_unpacked(&er->base, NULL);
        wire_msg_close(&m);
        return 1;
    }
    if (er) protobuf_c_message_free_unpacked(&er->base, NULL);
    wire_reject_note(wire_sock_rejects(s), wire_sock_name(s), desc->short_name, &rej);
    wire_msg_close(&m);
    return rc;
}

static uint64_t rejects_total(Actor *a)
{
    return wire_rejects_total(wire_sock_rejects(a->lease)) +
           wire_rejects_total(wire_sock_rejects(a->sub)) +
           wire_rejects_total(wire_sock_rejects(a->snap)) + wire_rejects_total(&a->local);
}

/* Counts and logs a refusal found after decoding. */
static void refuse(Actor *a, const char *what, WireReason reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(Actor *a, const char *what, WireReason reason, const char *fmt, ...)
{
    WireReject rej = {.reason = reason};
    va_list    ap;
    va_start(ap, fmt);
    vsnprintf(rej.why, sizeof rej.why, fmt, ap);
    va_end(ap);
    wire_reject_note(&a->local, a->id, what, &rej);
}

/* ---- Weights ---------------------------------------------------------- */

static void weights_id_format(const WeightsId *w, char *buf, size_t cap)
{
    snprintf(buf, cap, "run '%s' epoch %llu v%llu", w->run_id, (unsigned long long)w->epoch,
             (unsigned long long)w->version);
}

/* Makes the complete snapshot in a->rx the held weights: checks its config,
 * size and values, then copies the whole block over the parameters (or
 * builds a new model when the config changed). Returns 0 or ERR_FORMAT
 * (refusal counted and logged). */
static int install_snapshot(Actor *a)
{
    size_t      bytes = 0;
    const void *data = wire_snap_rx_data(a->rx, &bytes);
    CHECK(data);
    WeightsId id;
    copy_str(id.run_id, sizeof id.run_id, wire_snap_rx_run_id(a->rx));
    id.epoch = wire_snap_rx_epoch(a->rx);
    id.version = wire_snap_rx_policy_version(a->rx);
    char name[200];
    weights_id_format(&id, name, sizeof name);
    if (a->has_weights && !strcmp(id.run_id, a->held.run_id) && id.epoch == a->held.epoch &&
        id.version == a->held.version) {
        log_debug("actor %s: snapshot %s is the one held", a->id, name);
        return 0;
    }
    ModelConfig mc;
    int         eos = TOK_EOS;
    /* The same rules as a checkpoint's config.json; the reason is logged there. */
    if (ckpt_config_from_json(name, wire_snap_rx_config(a->rx), &mc, &eos) != 0) {
        refuse(a, "snapshot", WIRE_REJ_BAD_VALUE, "%s: config refused", name);
        return ERR_FORMAT;
    }
    uint64_t n = actor_config_num_params(&mc);
    if (n * 4 != bytes) {
        refuse(a, "snapshot", WIRE_REJ_BAD_SHAPE,
               "%s: %zu bytes, but its config implies %llu parameters (%llu bytes)", name, bytes,
               (unsigned long long)n, (unsigned long long)n * 4);
        return ERR_FORMAT;
    }
    const float *w = data;
    for (size_t i = 0; i < bytes / 4; i++) {
        if (!isfinite(w[i])) {
            refuse(a, "snapshot", WIRE_REJ_NONFINITE, "%s: parameter %zu is %g", name, i,
                   (double)w[i]);
            return ERR_FORMAT;
        }
    }
    if (!a->model || !actor_config_equal(model_config(a->model), &mc)) {
        Model *m = model_new(&mc);
        if (model_num_params(m) != n) {
            /* config_num_params disagrees with model.h's layout: a bug here. */
            refuse(a, "snapshot", WIRE_REJ_BAD_SHAPE, "%s: model has %zu parameters, expected %llu",
                   name, model_num_params(m), (unsigned long long)n);
            model_free(&m);
            return ERR_FORMAT;
        }
        gen_free(&a->gen);
        a->gen_max_len = 0;
        model_free(&a->model);
        a->model = m;
        log_info("actor %s: model: dim %d, %d layers, %d heads (%d kv), hidden %d, vocab %d, "
                 "max_seq_len %d, %zu parameters",
                 a->id, mc.dim, mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.hidden_dim,
                 mc.vocab_size, mc.max_seq_len, model_num_params(m));
    }
    /* The swap: whole, between batches (this runs only outside gen_run). */
    memcpy(model_params(a->model), data, bytes);
    /* A new version of the same run and epoch is routine; anything else is news. */
    bool is_routine =
        a->has_weights && !strcmp(id.run_id, a->held.run_id) && id.epoch == a->held.epoch;
    a->eos_id = eos;
    a->held = id;
    a->has_weights = true;
    a->st.snapshots++;
    log_msg(is_routine ? LOG_DEBUG : LOG_INFO, "actor %s: weights %s installed (%zu bytes)", a->id,
            name, bytes);
    return 0;
}

/* Reads and discards frames left on the snapshot socket by an earlier
 * request (the rest of an answer that came too late), validating each. */
static void drain_snapshot(Actor *a)
{
    for (;;) {
        ProtobufCMessage *m = NULL;
        int               rc = recv_msg(a, a->snap, 0, &rlhf__weight_chunk__descriptor, NULL, &m);
        if (m) protobuf_c_message_free_unpacked(m, NULL);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN || rc == ERR_IO) return;
    }
}

/* One fetch: SnapshotRequest, then chunks until the snapshot is complete
 * and installed. Returns 0, ACTOR_STOPPED, or a negative code when this
 * attempt failed (no learner, silence, a refused snapshot). */
static int fetch_once(Actor *a, atomic_int *stop)
{
    drain_snapshot(a);
    wire_snap_rx_reset(a->rx);
    Rlhf__SnapshotRequest req = RLHF__SNAPSHOT_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.run_id = a->held.run_id;
    req.actor_id = a->id;
    req.have_policy_version = a->held.version;
    req.have_epoch = a->held.epoch;
    int rc = wire_send(a->snap, &req.base, ZMQ_DONTWAIT);
    if (rc == ERR_AGAIN) return ERR_TIMEOUT; /* no learner connected yet */
    if (rc) return rc;
    double t_last = now_s();
    while (!is_stopped(stop)) {
        Rlhf__WeightChunk *c = NULL;
        rc = recv_msg(a, a->snap, a->cfg.poll_ms, &rlhf__weight_chunk__descriptor, NULL,
                      (ProtobufCMessage **)&c);
        if (rc == 1) return ERR_UNSUPPORTED; /* the learner refused: try again later */
        if (rc == ERR_IO) return rc;
        if (rc) { /* nothing yet, EINTR, or a refused frame */
            if (now_s() - t_last > a->cfg.snapshot_timeout_ms / 1000.0) {
                uint32_t have, count;
                wire_snap_rx_progress(a->rx, &have, &count);
                log_warn("actor %s: snapshot: no chunk for %d ms (%u of %u received); asking "
                         "again",
                         a->id, a->cfg.snapshot_timeout_ms, have, count);
                return ERR_TIMEOUT;
            }
            continue;
        }
        t_last = now_s();
        WireReject rej;
        uint32_t   have, count;
        wire_snap_rx_progress(a->rx, &have, &count);
        rc = wire_snap_rx_accept(a->rx, c, &rej);
        if (rc < 0 && rej.reason == WIRE_REJ_BAD_CHUNK && c->chunk_index == 0 && have > 0) {
            /* A whole new answer began (an earlier request's, or the same
             * snapshot sent again): assemble that one instead. */
            wire_snap_rx_reset(a->rx);
            rc = wire_snap_rx_accept(a->rx, c, &rej);
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
        if (rc < 0) {
            wire_reject_note(wire_sock_rejects(a->snap), wire_sock_name(a->snap), "WeightChunk",
                             &rej);
            if (rej.reason == WIRE_REJ_CHECKSUM) return ERR_MISMATCH;
            continue;
        }
        if (rc == 1) return install_snapshot(a);
    }
    return ACTOR_STOPPED;
}

/* Fetches until a snapshot is installed, with back-off between attempts,
 * or up to max_attempts (0 = no limit). Returns 0, ACTOR_STOPPED, or the
 * last attempt's error. */
static int fetch(Actor *a, atomic_int *stop, int max_attempts)
{
    double t0 = now_s();
    for (int k = 0; max_attempts == 0 || k < max_attempts; k++) {
        int rc = fetch_once(a, stop);
        if (rc == 0) {
            if (a->n_fetch_fails > 0)
                log_info("actor %s: snapshot received after %d failed attempt(s)", a->id,
                         a->n_fetch_fails);
            a->want_fetch = false;
            a->backoff_ms = ACTOR_BACKOFF_MIN_MS;
            a->n_fetch_fails = 0;
            log_debug("actor %s: snapshot fetched in %.3f s", a->id, now_s() - t0);
            return 0;
        }
        if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
        a->st.snapshot_failures++;
        /* Once when the learner goes missing, then every few seconds. */
        if (a->n_fetch_fails++ == 0 || now_s() - a->t_fetch_log > ACTOR_FETCH_LOG_S) {
            log_info("actor %s: waiting for the learner's snapshot at %s (%s; %d attempt(s))",
                     a->id, a->cfg.snapshot_ep,
                     rc == ERR_TIMEOUT ? "no learner or no answer" : err_str(rc), a->n_fetch_fails);
            a->t_fetch_log = now_s();
        }
        if (wait_ms(a, stop, a->backoff_ms)) return ACTOR_STOPPED;
        a->backoff_ms =
            a->backoff_ms * 2 > ACTOR_BACKOFF_MAX_MS ? ACTOR_BACKOFF_MAX_MS : a->backoff_ms * 2;
        if (k + 1 == max_attempts) return rc;
    }
    return ERR_TIMEOUT;
}

/* Whether an announce names weights other than (and not older than) ours. */
static void on_announce(Actor *a, const Rlhf__WeightAnnounce *w)
{
    const char *run = w->run_id ? w->run_id : "";
    if (!a->has_weights) return; /* the first fetch is under way anyway */
    bool is_newer = strcmp(run, a->held.run_id) != 0 || w->epoch > a->held.epoch ||
                    (w->epoch == a->held.epoch && w->policy_version > a->held.version);
    if (!is_newer) return;
    /* The same announcement twice (or a bogus one the learner's snapshot
     * did not confirm) triggers one fetch, not one per repeat. */
    if (!strcmp(run, a->announced.run_id) && w->epoch == a->announced.epoch &&
        w->policy_version == a->announced.version)
        return;
    copy_str(a->announced.run_id, sizeof a->announced.run_id, run);
    a->announced.epoch = w->epoch;
    a->announced.version = w->policy_version;
    a->want_fetch = true;
    log_debug("actor %s: announce run '%s' epoch %llu v%llu", a->id, run,
              (unsigned long long)w->epoch, (unsigned long long)w->policy_version);
}

/* Handles every announce queued on the SUB without waiting. */
static int drain_announces(Actor *a)
{
    for (;;) {
        Rlhf__WeightAnnounce *w = NULL;
        int                   rc = recv_msg(a, a->sub, 0, &rlhf__weight_announce__descriptor, NULL,
                                            (ProtobufCMessage **)&w);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return 0;
        if (rc == ERR_IO) return rc;
        if (rc == 0) {
            on_announce(a, w);
            protobuf_c_message_free_unpacked(&w->base, NULL);
        }
    }
}

/* ---- Status ----------------------------------------------------------- */

static void status_line(Actor *a, bool force)
{
    double t = now_s(), dt = t - a->t_status;
    if (!force && (a->cfg.status_every_s <= 0 || dt < a->cfg.status_every_s)) return;
    ActorStats s;
    actor_stats(a, &s);
    char        rej[256], w[200] = "none";
    WireRejects all;
    memset(&all, 0, sizeof all);
    wire_rejects_add(&all, wire_sock_rejects(a->lease));
    wire_rejects_add(&all, wire_sock_rejects(a->sub));
    wire_rejects_add(&all, wire_sock_rejects(a->snap));
    wire_rejects_add(&all, &a->local);
    wire_rejects_format(&all, rej, sizeof rej);
    if (a->has_weights) weights_id_format(&a->held, w, sizeof w);
    double gps = dt > 0 ? (double)(s.groups_sent - a->st_last.groups_sent) / dt : 0.0;
    double tps = dt > 0 ? (double)(s.tokens_generated - a->st_last.tokens_generated) / dt : 0.0;
    log_info("actor %s: leases %llu done, %llu refused, %llu abandoned, %llu stale; groups %llu "
             "(%.2f/s); tokens %llu (%.0f/s); weights %s (%llu snapshots); rejects %llu (%s); "
             "error replies %llu",
             a->id, (unsigned long long)s.leases_done, (unsigned long long)s.leases_refused,
             (unsigned long long)s.leases_abandoned, (unsigned long long)s.leases_stale,
             (unsigned long long)s.groups_sent, gps, (unsigned long long)s.tokens_generated, tps, w,
             (unsigned long long)s.snapshots, (unsigned long long)s.rejects, rej,
             (unsigned long long)s.error_replies);
    a->st_last = s;
    a->t_status = t;
}

/* ---- Leases ----------------------------------------------------------- */

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
        a->is_outstanding = false;
        a->t_next_request = now_s() + ACTOR_NO_PEER_MS / 1000.0;
        return 0;
    }
    if (rc) return rc == ERR_IO ? rc : 0;
    a->is_outstanding = true;
    a->t_request = now_s();
    a->st.requests_sent++;
    if (is_resend) a->st.requests_resent++;
    log_debug("actor %s: lease request for %d prompts%s", a->id, req.max_prompts,
              is_resend ? " (re-sent: no reply)" : "");
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
    copy_str(s->run_id, sizeof s->run_id, g->run_id);
    s->epoch = g->epoch;
    s->lease_id = g->lease_id;
    a->seen_at = (a->seen_at + 1) % ACTOR_RECENT_LEASES;
    if (a->n_seen < ACTOR_RECENT_LEASES) a->n_seen++;
    return false;
}

static bool held_matches(const Actor *a, const char *run_id, uint64_t epoch)
{
    return a->has_weights && !strcmp(a->held.run_id, run_id) && a->held.epoch == epoch;
}

/* Grows the generation and group buffers for batch x W and G x W. */
static void ensure_buffers(Actor *a, int G, int W)
{
    size_t need = (size_t)a->cfg.batch * W;
    if (need > a->out_cap) {
        free(a->out_tok);
        free(a->out_lps);
        free(a->out_lpf);
        a->out_tok = xmalloc(need * sizeof(int));
        a->out_lps = xmalloc(need * sizeof(float));
        a->out_lpf = xmalloc(need * sizeof(float));
        a->out_cap = need;
    }
    need = (size_t)G * W;
    if (need > a->gb_cap) {
        free(a->gb_tok);
        free(a->gb_lb);
        free(a->gb_ls);
        free(a->gb_pv);
        a->gb_tok = xmalloc(need * sizeof(int32_t));
        a->gb_lb = xmalloc(need * sizeof(float));
        a->gb_ls = xmalloc(need * sizeof(float));
        a->gb_pv = xmalloc(need * sizeof(uint64_t));
        a->gb_cap = need;
    }
    if (G > a->gb_g_cap) {
        free(a->gb_n);
        free(a->gb_fin);
        a->gb_n = xmalloc((size_t)G * sizeof(int));
        a->gb_fin = xmalloc((size_t)G * sizeof(int));
        a->gb_g_cap = G;
    }
}

/* Pushes one group, waiting (poll_ms at a time) while no reward server can
 * take it. Returns 0, ACTOR_STOPPED, or ERR_IO / ERR_RANGE (logged). */
static int push_group(Actor *a, const Rlhf__SampledGroup *g, atomic_int *stop)
{
    double t0 = now_s();
    for (;;) {
        int rc = wire_send(a->push, &g->base, ZMQ_DONTWAIT);
        if (rc == 0) {
            if (a->is_push_warned) log_info("actor %s: a reward server takes groups again", a->id);
            a->is_push_warned = false;
            return 0;
        }
        if (rc != ERR_AGAIN) return rc;
        if (is_stopped(stop)) return ACTOR_STOPPED;
        if (!a->is_push_warned && now_s() - t0 > ACTOR_PUSH_WARN_S) {
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

/* Builds the SampledGroup of prompt p from the group buffer and pushes it. */
static int send_group(Actor *a, const Rlhf__LeaseGrant *g, int p, int W, atomic_int *stop)
{
    int                G = g->group_size;
    Rlhf__Completion  *comp = xmalloc((size_t)G * sizeof *comp);
    Rlhf__Completion **compp = xmalloc((size_t)G * sizeof *compp);
    uint64_t           tokens = 0;
    for (int c = 0; c < G; c++) {
        rlhf__completion__init(&comp[c]);
        size_t at = (size_t)c * W;
        comp[c].n_tokens = comp[c].n_logp_behaviour = comp[c].n_logp_sampled =
            comp[c].n_policy_version = (size_t)a->gb_n[c];
        comp[c].tokens = a->gb_tok + at;
        comp[c].logp_behaviour = a->gb_lb + at;
        comp[c].logp_sampled = a->gb_ls + at;
        comp[c].policy_version = a->gb_pv + at;
        comp[c].finish = a->gb_fin[c] == GEN_FINISH_STOP ? RLHF__COMPLETION__FINISH__FINISH_STOP
                                                         : RLHF__COMPLETION__FINISH__FINISH_LENGTH;
        compp[c] = &comp[c];
        tokens += (uint64_t)a->gb_n[c];
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
    int rc = push_group(a, &sg, stop);
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
        refuse(a, "LeaseGrant", WIRE_REJ_BAD_VALUE, "lease %llu: sampling: %s",
               (unsigned long long)g->lease_id, why);
        return false;
    }
    for (size_t p = 0; p < g->n_prompts; p++) {
        const Rlhf__Prompt *pr = g->prompts[p];
        if (pr->n_tokens + 1 > (size_t)mc->max_seq_len) {
            refuse(a, "LeaseGrant", WIRE_REJ_BAD_SHAPE,
                   "lease %llu prompt %zu: %zu tokens, the model takes at most %d with one "
                   "generated",
                   (unsigned long long)g->lease_id, p, pr->n_tokens, mc->max_seq_len - 1);
            return false;
        }
        for (size_t t = 0; t < pr->n_tokens; t++) {
            if (pr->tokens[t] < 0 || pr->tokens[t] >= mc->vocab_size) {
                refuse(a, "LeaseGrant", WIRE_REJ_BAD_TOKENS,
                       "lease %llu prompt %zu token %zu: id %d, expected 0..%d",
                       (unsigned long long)g->lease_id, p, t, pr->tokens[t], mc->vocab_size - 1);
                return false;
            }
        }
    }
    return true;
}

/* Seeds the lease's sampling stream from the actor seed and the lease's
 * identity, so a seed fixes each lease's samples whatever the order. */
static void seed_lease(Actor *a, const Rlhf__LeaseGrant *g, Rng *rng)
{
    uint64_t s = a->seed ^ (g->lease_id * 0x9E3779B97F4A7C15ULL) ^ (g->epoch << 48) ^
                 fnv1a(g->run_id ? g->run_id : "");
    rng_seed(rng, s);
}

/* Serves one grant with prompts: weights first if needed, then
 * generation in chunks of --batch sequences, pushing each group as soon as
 * its G completions are done. Returns 0, ACTOR_STOPPED or ERR_IO. */
static int serve_grant(Actor *a, const Rlhf__LeaseGrant *g, atomic_int *stop)
{
    unsigned long long lid = (unsigned long long)g->lease_id;
    if (!held_matches(a, g->run_id, g->epoch) || a->held.version < g->min_policy_version) {
        /* The learner's run or epoch differs (it restarted, maybe behind
         * us) or it wants a newer version: its weights first. */
        int rc = fetch(a, stop, ACTOR_GRANT_FETCHES);
        if (rc == ACTOR_STOPPED || rc == ERR_IO) return rc;
        if (!held_matches(a, g->run_id, g->epoch)) {
            char w[200];
            weights_id_format(&a->held, w, sizeof w);
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
    int                G = g->group_size, P = (int)g->n_prompts;
    int                W = g->sampling->max_new_tokens, maxp = 0;
    for (int p = 0; p < P; p++)
        if ((int)g->prompts[p]->n_tokens > maxp) maxp = (int)g->prompts[p]->n_tokens;
    int max_len = maxp + W < mc->max_seq_len ? maxp + W : mc->max_seq_len;
    if (!a->gen || max_len > a->gen_max_len) {
        gen_free(&a->gen);
        a->gen = gen_new(a->model, a->cfg.batch, max_len);
        a->gen_max_len = max_len;
    }
    ensure_buffers(a, G, W);
    GenConfig gc = {.sampler = {g->sampling->temperature, g->sampling->top_k, g->sampling->top_p},
                    .max_new = W,
                    .stop_id = a->eos_id};
    GenOutput out = {a->out_tok, a->out_lps, a->out_lpf, a->out_n, a->out_fin};
    Rng       rng;
    seed_lease(a, g, &rng);
    log_debug("actor %s: lease %llu: %d prompts x %d, max_new %d, T %g, with v%llu", a->id, lid, P,
              G, W, (double)g->sampling->temperature, (unsigned long long)a->held.version);
    long total = (long)P * G;
    for (long s0 = 0; s0 < total; s0 += a->cfg.batch) {
        if (s0 > 0) {
            /* Between batches: a stop, or newer weights of the same learner. */
            if (is_stopped(stop)) {
                a->st.leases_abandoned++;
                return ACTOR_STOPPED;
            }
            if (drain_announces(a)) return ERR_IO;
            if (a->want_fetch) {
                int rc = fetch(a, stop, 1);
                if (rc == ACTOR_STOPPED || rc == ERR_IO) {
                    if (rc == ACTOR_STOPPED) a->st.leases_abandoned++;
                    return rc;
                }
                if (!held_matches(a, g->run_id, g->epoch)) {
                    log_warn("actor %s: the learner restarted (now run '%s' epoch %llu) during "
                             "lease %llu: rest of the lease dropped",
                             a->id, a->held.run_id, (unsigned long long)a->held.epoch, lid);
                    a->st.leases_abandoned++;
                    return 0;
                }
                mc = model_config(a->model);
                if (max_len > mc->max_seq_len || !a->gen) {
                    log_warn("actor %s: the model changed shape during lease %llu: rest of the "
                             "lease dropped",
                             a->id, lid);
                    a->st.leases_abandoned++;
                    return 0;
                }
            }
        }
        int n = total - s0 < a->cfg.batch ? (int)(total - s0) : a->cfg.batch;
        for (int i = 0; i < n; i++) {
            const Rlhf__Prompt *pr = g->prompts[(s0 + i) / G];
            a->prompts[i] = (const int *)pr->tokens;
            a->plens[i] = (int)pr->n_tokens;
        }
        uint64_t version = a->held.version;
        int      rc = gen_run(a->gen, &gc, n, a->prompts, a->plens, &rng, &out);
        if (rc != 0) {
            /* Validated prompts cannot fail; non-finite logits mean broken weights. */
            refuse(a, "snapshot", WIRE_REJ_NONFINITE,
                   "lease %llu: generation failed (%s) with %s v%llu", lid, err_str(rc),
                   a->held.run_id, (unsigned long long)version);
            a->st.leases_abandoned++;
            return 0;
        }
        for (int i = 0; i < n; i++) {
            long   s = s0 + i;
            int    p = (int)(s / G), c = (int)(s % G), k = out.n_tokens[i];
            size_t from = (size_t)i * W, to = (size_t)c * W;
            for (int t = 0; t < k; t++) {
                a->gb_tok[to + t] = out.tokens[from + t];
                a->gb_lb[to + t] = out.logp_full[from + t];
                a->gb_ls[to + t] = out.logp_sampled[from + t];
                a->gb_pv[to + t] = version;
            }
            a->gb_n[c] = k;
            a->gb_fin[c] = out.finish[i];
            if (c + 1 < G) continue;
            rc = send_group(a, g, p, W, stop);
            if (rc == ACTOR_STOPPED) {
                a->st.leases_abandoned++;
                return rc;
            }
            if (rc == ERR_RANGE) { /* too big for one frame: logged by wire */
                a->st.leases_abandoned++;
                return 0;
            }
            if (rc) return rc;
        }
    }
    a->st.leases_done++;
    log_debug("actor %s: lease %llu done", a->id, lid);
    return 0;
}

static int on_grant(Actor *a, const Rlhf__LeaseGrant *g, atomic_int *stop)
{
    a->is_outstanding = false;
    a->t_next_request = now_s();
    if (g->n_prompts == 0) {
        a->st.retries++;
        int ms = g->retry_after_ms > 0 ? g->retry_after_ms : a->cfg.poll_ms;
        if (ms > ACTOR_RETRY_MAX_MS) ms = ACTOR_RETRY_MAX_MS;
        a->t_next_request = now_s() + ms / 1000.0;
        /* An idle learner of another run or epoch still tells us to follow it. */
        if (!held_matches(a, g->run_id, g->epoch) && g->run_id[0] && !a->want_fetch) {
            bool is_older =
                a->has_weights && !strcmp(g->run_id, a->held.run_id) && g->epoch < a->held.epoch;
            if (!is_older) a->want_fetch = true;
        }
        return 0;
    }
    if (a->has_weights && !strcmp(g->run_id, a->held.run_id) && g->epoch < a->held.epoch) {
        log_info("actor %s: lease %llu of epoch %llu ignored: the learner is at epoch %llu", a->id,
                 (unsigned long long)g->lease_id, (unsigned long long)g->epoch,
                 (unsigned long long)a->held.epoch);
        a->st.leases_stale++;
        return 0;
    }
    if (lease_seen(a, g)) {
        log_info("actor %s: lease %llu granted twice; the duplicate is ignored", a->id,
                 (unsigned long long)g->lease_id);
        a->st.leases_stale++;
        return 0;
    }
    a->group_guess = g->group_size;
    return serve_grant(a, g, stop);
}

/* ---- Life cycle ------------------------------------------------------- */

static char *keep(Actor *a, int slot, const char *s)
{
    a->ep_copies[slot] = xstrdup(s);
    return a->ep_copies[slot];
}

static WireSock *sock_connect(Actor *a, int type, const char *name, const char *ep)
{
    WireSock *s = wire_sock_new(a->zctx, type, name, NULL);
    if (!s) return NULL;
    if (wire_connect(s, ep) != 0) wire_sock_free(&s);
    return s;
}

Actor *actor_new(const ActorConfig *cfg)
{
    CHECK(cfg && cfg->batch >= 1 && cfg->n_reward >= 1 && cfg->n_reward <= ACTOR_MAX_REWARD);
    CHECK(cfg->lease_ep && cfg->weights_ep && cfg->snapshot_ep && cfg->poll_ms > 0);
    Actor *a = xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    if (cfg->id && (strlen(cfg->id) == 0 || strlen(cfg->id) >= ACTOR_MAX_ID)) {
        log_error("actor_new: id '%.80s' has %zu bytes, expected 1..%d", cfg->id, strlen(cfg->id),
                  ACTOR_MAX_ID - 1);
        free(a);
        return NULL;
    }
    if (cfg->id)
        copy_str(a->id, sizeof a->id, cfg->id);
    else
        snprintf(a->id, sizeof a->id, "actor-%ld", (long)getpid());
    a->cfg.id = a->id;
    a->cfg.lease_ep = keep(a, 0, cfg->lease_ep);
    a->cfg.weights_ep = keep(a, 1, cfg->weights_ep);
    a->cfg.snapshot_ep = keep(a, 2, cfg->snapshot_ep);
    for (int i = 0; i < cfg->n_reward; i++) {
        CHECK(cfg->reward_eps[i]);
        a->cfg.reward_eps[i] = keep(a, 3 + i, cfg->reward_eps[i]);
    }
    a->seed = cfg->seed ? cfg->seed : fnv1a(a->id);
    a->backoff_ms = ACTOR_BACKOFF_MIN_MS;
    a->rx = wire_snap_rx_new(NULL, ACTOR_MAX_SNAPSHOT_BYTES);
    a->prompts = xmalloc((size_t)cfg->batch * sizeof *a->prompts);
    a->plens = xmalloc((size_t)cfg->batch * sizeof *a->plens);
    a->out_n = xmalloc((size_t)cfg->batch * sizeof *a->out_n);
    a->out_fin = xmalloc((size_t)cfg->batch * sizeof *a->out_fin);
    a->zctx = zmq_ctx_new();
    if (!a->zctx) {
        log_error("actor_new: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        actor_free(&a);
        return NULL;
    }
    a->lease = sock_connect(a, ZMQ_DEALER, "lease", a->cfg.lease_ep);
    a->sub = a->lease ? sock_connect(a, ZMQ_SUB, "weights", a->cfg.weights_ep) : NULL;
    a->snap = a->sub ? sock_connect(a, ZMQ_DEALER, "snapshot", a->cfg.snapshot_ep) : NULL;
    if (a->snap) a->push = wire_sock_new(a->zctx, ZMQ_PUSH, "samples", NULL);
    for (int i = 0; a->push && i < cfg->n_reward; i++)
        if (wire_connect(a->push, a->cfg.reward_eps[i]) != 0) wire_sock_free(&a->push);
    if (!a->push) {
        actor_free(&a);
        return NULL;
    }
    return a;
}

void actor_free(Actor **pa)
{
    if (!pa || !*pa) return;
    Actor *a = *pa;
    /* Sockets first (each lingers at most its short linger), then the context. */
    wire_sock_free(&a->push);
    wire_sock_free(&a->snap);
    wire_sock_free(&a->sub);
    wire_sock_free(&a->lease);
    if (a->zctx) {
        while (zmq_ctx_term(a->zctx) != 0 && zmq_errno() == EINTR) {
        }
    }
    gen_free(&a->gen);
    model_free(&a->model);
    wire_snap_rx_free(&a->rx);
    free(a->out_tok);
    free(a->out_lps);
    free(a->out_lpf);
    free(a->out_n);
    free(a->out_fin);
    free(a->prompts);
    free(a->plens);
    free(a->gb_tok);
    free(a->gb_lb);
    free(a->gb_ls);
    free(a->gb_pv);
    free(a->gb_n);
    free(a->gb_fin);
    for (int i = 0; i < 3 + ACTOR_MAX_REWARD; i++) free(a->ep_copies[i]);
    free(a);
    *pa = NULL;
}

void actor_stats(const Actor *a, ActorStats *out)
{
    *out = a->st;
    Actor *m = (Actor *)a; /* the reject counters are only read */
    out->rejects = rejects_total(m);
    out->has_weights = a->has_weights;
    copy_str(out->run_id, sizeof out->run_id, a->held.run_id);
    out->epoch = a->held.epoch;
    out->policy_version = a->held.version;
}

const char *actor_id(const Actor *a)
{
    return a->id;
}

int actor_run(Actor *a, atomic_int *stop)
{
    log_info("actor %s: lease %s, weights %s, snapshot %s, %d reward endpoint(s) (first %s), "
             "batch %d, seed %llu",
             a->id, a->cfg.lease_ep, a->cfg.weights_ep, a->cfg.snapshot_ep, a->cfg.n_reward,
             a->cfg.reward_eps[0], a->cfg.batch, (unsigned long long)a->seed);
    a->t_status = now_s();
    a->t_next_request = 0;
    int rc = 0;
    while (!is_stopped(stop)) {
        status_line(a, false);
        if (!a->has_weights || a->want_fetch) {
            /* Without weights, wait for the learner as long as it takes; with
             * them, one attempt per turn so leases keep being served. */
            rc = fetch(a, stop, a->has_weights ? 1 : 0);
            if (rc == ACTOR_STOPPED) break;
            if (rc == ERR_IO) return rc;
            if (!a->has_weights) continue;
        }
        double t = now_s();
        if (!a->is_outstanding && t >= a->t_next_request) {
            if ((rc = send_request(a, false))) return rc;
        } else if (a->is_outstanding && t - a->t_request > a->cfg.reply_timeout_ms / 1000.0) {
            /* The learner may have restarted and lost the request; a DEALER
             * may simply ask again. A late reply to the first is still
             * work; a duplicate grant is recognised by its lease id. */
            log_info("actor %s: no lease reply in %d ms; asking again", a->id,
                     a->cfg.reply_timeout_ms);
            if ((rc = send_request(a, true))) return rc;
        }
        zmq_pollitem_t items[2] = {
            {.socket = wire_sock_zmq(a->lease), .events = ZMQ_POLLIN},
            {.socket = wire_sock_zmq(a->sub), .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 2, a->cfg.poll_ms) < 0) {
            if (zmq_errno() == EINTR) continue;
            log_error("actor %s: zmq_poll: %s", a->id, zmq_strerror(zmq_errno()));
            return ERR_IO;
        }
        if ((rc = drain_announces(a))) return rc;
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        Rlhf__LeaseGrant *g = NULL;
        rc =
            recv_msg(a, a->lease, 0, &rlhf__lease_grant__descriptor, NULL, (ProtobufCMessage **)&g);
        if (rc == 1) { /* refused: ask again after a pause */
            a->is_outstanding = false;
            a->t_next_request = now_s() + 0.5;
            continue;
        }
        if (rc == ERR_IO) return rc;
        if (rc) continue;
        rc = on_grant(a, g, stop);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        if (rc == ACTOR_STOPPED) break;
        if (rc) return rc;
    }
    status_line(a, true);
    return 0;
}
