#include "tests/test_list.h"
#include "actor/actor.h"

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
#include "common/formats/ckpt_config.h"
#include "common/base/err.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/nn/model.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/net/snapshot.h"

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
static uint64_t config_num_params(const ModelConfig *c)
{
    uint64_t C = (uint64_t)c->dim, HS = C / (uint64_t)c->n_heads;
    uint64_t kvd = (uint64_t)c->n_kv_heads * HS, H = (uint64_t)c->hidden_dim;
    uint64_t layer = 2 * C + 2 * C * C + 2 * kvd * C + 3 * H * C;
    uint64_t n = (uint64_t)c->vocab_size * C + (uint64_t)c->n_layers * layer + C;
    if (!c->tie_embeddings) n += (uint64_t)c->vocab_size * C;
    if (c->has_value_head) n += C + 1;
    return n;
}

static bool config_equal(const ModelConfig *x, const ModelConfig *y)
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
    uint64_t n = config_num_params(&mc);
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
    if (!a->model || !config_equal(model_config(a->model), &mc)) {
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

/* ---- Self-test -------------------------------------------------------- */

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static int st_fail(bool ok, const char *what)
{
    if (!ok) fprintf(stderr, "  actor_selftest: FAIL: %s\n", what);
    return ok ? 0 : 1;
}

/* The snapshot config parser and the size it implies, against model.h. */
static int st_config(bool verbose)
{
    int         fails = 0;
    ModelConfig base = {.dim = 32,
                        .n_layers = 2,
                        .n_heads = 4,
                        .n_kv_heads = 2,
                        .hidden_dim = 48,
                        .vocab_size = 40,
                        .max_seq_len = 64,
                        .rope_theta = 10000.0f,
                        .norm_eps = 1e-5f};
    for (int v = 0; v < 4; v++) {
        ModelConfig c = base;
        c.tie_embeddings = v & 1;
        c.has_value_head = (v >> 1) & 1;
        Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
        char       *js = ckpt_config_to_json(&c, tok);
        ModelConfig got;
        int         eos = -1;
        int         rc = ckpt_config_from_json("test config", js, &got, &eos);
        tok_free(&tok);
        fails += st_fail(rc == 0 && config_equal(&got, &c) && eos == TOK_EOS, "config round trip");
        Model *m = model_new(&c);
        fails += st_fail(model_num_params(m) == config_num_params(&c), "parameter count");
        model_free(&m);
        free(js);
    }
    static const char *bad[] = {
        "not json",
        "[1]",
        "{\"model_type\":\"gpt2\",\"hidden_size\":32}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":5,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5,\"rope_scaling\":{\"type\":\"linear\"}}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5,\"eos_token_id\":40}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ModelConfig got;
        int         eos;
        int         rc = ckpt_config_from_json("bad test config", bad[i], &got, &eos);
        fails += st_fail(rc != 0, "bad config refused");
    }
    return fails;
}

enum { ST_SNAP_GOOD, ST_SNAP_NAN, ST_SNAP_SHORT, ST_SNAP_CHECKSUM };

/* A fake learner (lease ROUTER, PUB, snapshot ROUTER) and a fake reward
 * server (PULL), all real sockets on tcp loopback. */
#define ST_MAX_GROUPS 16
typedef struct {
    void       *zctx;
    WireSock   *lease, *pub, *snap, *pull;
    char        ep_lease[256], ep_pub[256], ep_snap[256], ep_pull[256];
    const char *run_id;
    uint64_t    epoch, version;
    Model      *m; /* the weights served */
    char       *config;
    /* What the actor sent. */
    unsigned char peer[WIRE_MAX_IDENTITY], snap_peer[WIRE_MAX_IDENTITY];
    size_t        peer_len, snap_peer_len;
    int           n_requests, n_snap_requests;
    char          req_run[ACTOR_MAX_RUN_ID], req_actor[ACTOR_MAX_ID];
    uint64_t      req_epoch, req_version, snap_have_epoch, snap_have_version;
    int           req_max_prompts;
    /* The grant for the next request (packed), else a retry. */
    uint8_t            *pending;
    size_t              pending_len;
    Rlhf__SampledGroup *groups[ST_MAX_GROUPS];
    int                 n_groups;
    double              t_announce;
    bool                is_announcing;
    bool                is_announce_after_grant; /* announce right behind the next grant */
    int                 bad_snaps[4];            /* ST_SNAP_* served next, last first */
    int                 n_bad_snaps;
} StLearner;

static WireSock *st_bind(void *zctx, int type, const char *name, const char *ep, char *out)
{
    WireSock *s = wire_sock_new(zctx, type, name, NULL);
    if (!s) return NULL;
    /* Rebinding a port just closed may fail for a moment: retry briefly. */
    for (int k = 0; k < 40; k++) {
        if (zmq_bind(wire_sock_zmq(s), ep) == 0) {
            if (out && wire_last_endpoint(s, out, 256) != 0) break;
            return s;
        }
        sleep_ms(25);
    }
    log_error("actor_selftest: bind '%s': %s", ep, zmq_strerror(zmq_errno()));
    wire_sock_free(&s);
    return NULL;
}

/* Binds the learner's sockets: on ephemeral ports the first time, on the
 * same endpoints again after a restart. */
static int st_learner_up(StLearner *L, bool again)
{
    L->lease = st_bind(L->zctx, ZMQ_ROUTER, "fake-lease", again ? L->ep_lease : "tcp://127.0.0.1:*",
                       L->ep_lease);
    L->pub =
        st_bind(L->zctx, ZMQ_PUB, "fake-pub", again ? L->ep_pub : "tcp://127.0.0.1:*", L->ep_pub);
    L->snap = st_bind(L->zctx, ZMQ_ROUTER, "fake-snap", again ? L->ep_snap : "tcp://127.0.0.1:*",
                      L->ep_snap);
    return L->lease && L->pub && L->snap ? 0 : ERR_IO;
}

static void st_learner_down(StLearner *L)
{
    wire_sock_free(&L->lease);
    wire_sock_free(&L->pub);
    wire_sock_free(&L->snap);
}

/* Serves the current weights with small chunks, so a snapshot is many frames. */
static void st_serve_snapshot(StLearner *L, const unsigned char *peer, size_t peer_len)
{
    WireSnapMeta meta = {.run_id = L->run_id,
                         .epoch = L->epoch,
                         .policy_version = L->version,
                         .config_json = L->config};
    size_t       bytes = model_num_params(L->m) * sizeof(float);
    float       *block = xmalloc(bytes);
    memcpy(block, model_params(L->m), bytes);
    /* Broken snapshots first, one per request, while any are queued. */
    int bad = L->n_bad_snaps > 0 ? L->bad_snaps[--L->n_bad_snaps] : ST_SNAP_GOOD;
    if (bad == ST_SNAP_NAN) block[bytes / 8] = NAN;
    if (bad == ST_SNAP_SHORT) bytes -= 4 * 16;
    if (bad == ST_SNAP_CHECKSUM) {
        meta.checksum = wire_snap_checksum(block, bytes) ^ 1;
        meta.has_checksum = true;
    }
    int rc = wire_snap_send(L->snap, peer, peer_len, &meta, block, bytes, 8192);
    if (rc) log_error("actor_selftest: snapshot send: %s", err_str(rc));
    free(block);
}

static void st_announce(StLearner *L, uint64_t epoch, uint64_t version, uint32_t proto)
{
    Rlhf__WeightAnnounce w = RLHF__WEIGHT_ANNOUNCE__INIT;
    w.version = proto;
    w.run_id = (char *)L->run_id;
    w.epoch = epoch;
    w.policy_version = version;
    w.total_bytes = model_num_params(L->m) * sizeof(float);
    CHECK(wire_send(L->pub, &w.base, 0) == 0 || true); /* PUB drops without subscribers */
}

/* Handles everything the actor sends for up to ms. */
static void st_pump(StLearner *L, int ms)
{
    double end = now_s() + ms / 1000.0;
    do {
        if (L->is_announcing && now_s() - L->t_announce > 0.1) {
            st_announce(L, L->epoch, L->version, WIRE_PROTOCOL_VERSION);
            L->t_announce = now_s();
        }
        zmq_pollitem_t it[3] = {{.socket = wire_sock_zmq(L->lease), .events = ZMQ_POLLIN},
                                {.socket = wire_sock_zmq(L->snap), .events = ZMQ_POLLIN},
                                {.socket = wire_sock_zmq(L->pull), .events = ZMQ_POLLIN}};
        if (zmq_poll(it, 3, 10) <= 0) continue;
        WireMsg           m;
        ProtobufCMessage *msg;
        if ((it[0].revents & ZMQ_POLLIN) &&
            wire_recv_decode(L->lease, 0, &rlhf__lease_request__descriptor, NULL, &m, &msg, NULL) ==
                0) {
            Rlhf__LeaseRequest *r = (Rlhf__LeaseRequest *)msg;
            memcpy(L->peer, m.peer, m.peer_len);
            L->peer_len = m.peer_len;
            L->n_requests++;
            copy_str(L->req_run, sizeof L->req_run, r->run_id);
            copy_str(L->req_actor, sizeof L->req_actor, r->actor_id);
            L->req_epoch = r->epoch;
            L->req_version = r->policy_version;
            L->req_max_prompts = r->max_prompts;
            protobuf_c_message_free_unpacked(msg, NULL);
            wire_msg_close(&m);
            if (L->pending) {
                wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
                free(L->pending);
                L->pending = NULL;
                if (L->is_announce_after_grant)
                    st_announce(L, L->epoch, L->version, WIRE_PROTOCOL_VERSION);
                L->is_announce_after_grant = false;
            } else {
                Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
                g.version = WIRE_PROTOCOL_VERSION;
                g.run_id = (char *)L->run_id;
                g.epoch = L->epoch;
                g.retry_after_ms = 30;
                wire_send_to(L->lease, L->peer, L->peer_len, &g.base, 0);
            }
        }
        if ((it[1].revents & ZMQ_POLLIN) &&
            wire_recv_decode(L->snap, 0, &rlhf__snapshot_request__descriptor, NULL, &m, &msg,
                             NULL) == 0) {
            Rlhf__SnapshotRequest *r = (Rlhf__SnapshotRequest *)msg;
            L->n_snap_requests++;
            L->snap_have_epoch = r->have_epoch;
            L->snap_have_version = r->have_policy_version;
            memcpy(L->snap_peer, m.peer, m.peer_len);
            L->snap_peer_len = m.peer_len;
            protobuf_c_message_free_unpacked(msg, NULL);
            wire_msg_close(&m);
            st_serve_snapshot(L, L->snap_peer, L->snap_peer_len);
        }
        if (it[2].revents & ZMQ_POLLIN) {
            WireLimits lim = {.vocab_size = model_config(L->m)->vocab_size};
            if (wire_recv_decode(L->pull, 0, &rlhf__sampled_group__descriptor, &lim, &m, &msg,
                                 NULL) == 0) {
                wire_msg_close(&m);
                if (L->n_groups < ST_MAX_GROUPS)
                    L->groups[L->n_groups++] = (Rlhf__SampledGroup *)msg;
                else
                    protobuf_c_message_free_unpacked(msg, NULL);
            }
        }
    } while (now_s() < end);
}

static void st_clear_groups(StLearner *L)
{
    for (int i = 0; i < L->n_groups; i++)
        protobuf_c_message_free_unpacked(&L->groups[i]->base, NULL);
    L->n_groups = 0;
}

/* Pumps until at least n groups arrived or timeout_ms passed. */
static bool st_wait_groups(StLearner *L, int n, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (L->n_groups < n && now_s() < end) st_pump(L, 20);
    return L->n_groups >= n;
}

static bool st_wait_snap_requests(StLearner *L, int n, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (L->n_snap_requests < n && now_s() < end) st_pump(L, 20);
    return L->n_snap_requests >= n;
}

/* A grant of n prompts x G, packed, to be sent at the next request. */
static void st_grant(StLearner *L, uint64_t lease_id, uint64_t epoch, int n, int G, uint64_t min_v,
                     int bad_token, float temperature)
{
    Tok                 *tok = tok_new(TOK_CHARSET_DEFAULT);
    static const char   *texts[] = {"12+34=", "7-5=", "99+1=", "3+3="};
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    sp.temperature = temperature;
    sp.top_k = 20; /* truncated: logp_sampled differs from logp_behaviour */
    sp.top_p = 1.0f;
    sp.max_new_tokens = 12;
    Rlhf__Prompt pr[4], *prp[4];
    int32_t      toks[4][16];
    char         answers[4][8];
    for (int i = 0; i < n; i++) {
        int nt = 0;
        CHECK(tok_encode(tok, texts[i], strlen(texts[i]), TOK_ENC_BOS, toks[i], 16, &nt) == 0);
        if (bad_token && i == n - 1) toks[i][1] = bad_token;
        rlhf__prompt__init(&pr[i]);
        pr[i].prompt_id = 100 * lease_id + (uint64_t)i;
        pr[i].tokens = toks[i];
        pr[i].n_tokens = (size_t)nt;
        snprintf(answers[i], sizeof answers[i], "%d", i);
        pr[i].answer = answers[i];
        pr[i].task = (char *)"arith";
        prp[i] = &pr[i];
    }
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = (char *)L->run_id;
    g.epoch = epoch;
    g.lease_id = lease_id;
    g.deadline_unix_ms = 0;
    g.min_policy_version = min_v;
    g.group_size = G;
    g.sampling = &sp;
    g.prompts = prp;
    g.n_prompts = (size_t)n;
    free(L->pending);
    L->pending_len = protobuf_c_message_get_packed_size(&g.base);
    L->pending = xmalloc(L->pending_len);
    protobuf_c_message_pack(&g.base, L->pending);
    tok_free(&tok);
}

/* Checks the groups of one lease: shapes, versions, and the log-prob
 * contract: logp_behaviour equals the training forward's log-prob of each
 * token under the served model (temperature 1), within 1e-4. */
static int st_check_groups(StLearner *L, uint64_t lease_id, int n, int G, uint64_t version,
                           Model *m_old, uint64_t v_old, const char *actor, double *worst,
                           bool verbose)
{
    int                fails = 0;
    const ModelConfig *mc = model_config(L->m);
    WireLimits         lim = {.vocab_size = mc->vocab_size};
    fails += st_fail(L->n_groups == n, "number of groups");
    bool     seen[4] = {false};
    uint64_t seq_version[16]; /* version of sequence group_index * G + c */
    int      n_old = 0;
    CHECK(n <= 4 && n * G <= 16);
    for (int i = 0; i < L->n_groups; i++) {
        const Rlhf__SampledGroup *g = L->groups[i];
        WireReject                rej;
        fails += st_fail(wire_check_sampled_group(g, &lim, &rej) == 0, "group passes wire checks");
        fails += st_fail(g->lease_id == lease_id && !strcmp(g->run_id, L->run_id) &&
                             g->epoch == L->epoch && !strcmp(g->actor_id, actor),
                         "group identity");
        fails += st_fail(g->group_count == n && g->group_index >= 0 && g->group_index < n &&
                             !seen[g->group_index],
                         "group index");
        if (g->group_index >= 0 && g->group_index < 4) seen[g->group_index] = true;
        fails += st_fail(g->n_completions == (size_t)G, "completions per group");
        fails +=
            st_fail(g->prompt && g->prompt->prompt_id == 100 * lease_id + (uint64_t)g->group_index,
                    "prompt echoed");
        for (size_t c = 0; c < g->n_completions && g->prompt; c++) {
            const Rlhf__Completion *cp = g->completions[c];
            int  P = (int)g->prompt->n_tokens, K = (int)cp->n_tokens, T = P + K - 1;
            bool ok = K >= 1 && K <= 12;
            /* A completion is made by one batch, so by one version: the
             * served one, or with m_old the one before a mid-lease swap. */
            uint64_t v = K >= 1 ? cp->policy_version[0] : 0;
            ok = ok && (v == version || (m_old && v == v_old));
            Model *m = v == version ? L->m : m_old;
            if (ok && g->group_index >= 0 && g->group_index < n)
                seq_version[g->group_index * G + (int)c] = v;
            n_old += ok && v != version;
            for (int k = 0; k < K; k++) {
                ok = ok && cp->tokens[k] >= 0 && cp->tokens[k] < mc->vocab_size;
                ok = ok && cp->policy_version[k] == v;
                /* Truncation only raises a kept token's probability. */
                ok = ok && cp->logp_sampled[k] >= cp->logp_behaviour[k] - 1e-5f;
            }
            bool is_stop = cp->tokens[K - 1] == TOK_EOS;
            ok = ok && (cp->finish == RLHF__COMPLETION__FINISH__FINISH_STOP) == is_stop;
            fails += st_fail(ok, "completion tokens, versions and finish");
            if (!ok) continue;
            int   seq[64], tgt[64];
            float mask[64], lp[64];
            for (int t = 0; t < P; t++) seq[t] = g->prompt->tokens[t];
            for (int k = 0; k < K; k++) seq[P + k] = cp->tokens[k];
            for (int t = 0; t < T; t++) {
                tgt[t] = seq[t + 1];
                mask[t] = t >= P - 1 ? 1.0f : 0.0f;
            }
            model_forward(m, seq, tgt, mask, 1, T, lp, NULL, NULL);
            for (int k = 0; k < K; k++) {
                double d = fabs((double)lp[P - 1 + k] - (double)cp->logp_behaviour[k]);
                if (d > *worst) *worst = d;
            }
        }
    }
    /* Weights only ever move forward inside a lease, in sequence order. */
    for (int q = 1; fails == 0 && q < n * G; q++)
        fails += st_fail(seq_version[q] >= seq_version[q - 1], "versions in sequence order");
    if (verbose)
        printf("  actor: lease %llu: %d groups x %d; %d completions v%llu, %d v%llu (before a "
               "mid-lease swap); logp_behaviour vs model_forward of the token's version max diff "
               "%.2e (tol 1e-4)\n",
               (unsigned long long)lease_id, L->n_groups, G, n * G - n_old,
               (unsigned long long)version, n_old, (unsigned long long)(m_old ? v_old : version),
               *worst);
    fails += st_fail(*worst <= 1e-4, "log-prob contract (logp_behaviour == model_forward)");
    return fails;
}

typedef struct {
    ActorConfig cfg;
    atomic_int  stop;
    int         rc;
    ActorStats  stats;
    bool        is_made;
} StActor;

static void *st_actor_thread(void *p)
{
    StActor *t = p;
    Actor   *a = actor_new(&t->cfg);
    if (!a) {
        t->rc = ERR_IO;
        return NULL;
    }
    t->is_made = true;
    t->rc = actor_run(a, &t->stop);
    actor_stats(a, &t->stats);
    actor_free(&a);
    return NULL;
}

static void st_new_weights(StLearner *L, uint64_t seed)
{
    model_init_random(L->m, seed, 0.3f);
}

/* Sends raw bytes to the actor over each of its sockets. */
static void st_hostile(StLearner *L)
{
    static const uint8_t garbage[] = {0xff, 0x01, 0x02, 0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    /* SUB: garbage, a wrong protocol version, a truncated announce. */
    wire_send_raw(L->pub, NULL, 0, garbage, sizeof garbage, 0);
    st_announce(L, L->epoch, L->version + 1, 7);
    Rlhf__WeightAnnounce w = RLHF__WEIGHT_ANNOUNCE__INIT;
    w.version = 1;
    w.run_id = (char *)L->run_id;
    w.policy_version = 12345;
    uint8_t buf[256];
    size_t  len = protobuf_c_message_pack(&w.base, buf);
    wire_send_raw(L->pub, NULL, 0, buf, len - 1, 0);
    /* DEALER (lease): garbage, a grant of a wrong protocol version, a grant
     * with a NaN temperature, a grant with a token id the model lacks. */
    wire_send_raw(L->lease, L->peer, L->peer_len, garbage, sizeof garbage, 0);
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = 3;
    g.run_id = (char *)L->run_id;
    g.epoch = L->epoch;
    g.retry_after_ms = 5;
    wire_send_to(L->lease, L->peer, L->peer_len, &g.base, 0);
    st_grant(L, 90, L->epoch, 1, 2, 0, 0, NAN);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    st_grant(L, 91, L->epoch, 2, 2, 0, 5000, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    /* An old epoch's grant, and lease 1 granted a second time. */
    st_grant(L, 92, L->epoch - 1, 1, 2, 0, 0, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    st_grant(L, 1, L->epoch, 2, 4, 0, 0, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    free(L->pending);
    L->pending = NULL;
    /* DEALER (snapshot): garbage nobody asked for, then a bogus announce of
     * a version the learner does not have, so the actor fetches (and reads
     * the garbage) and keeps what the learner serves. */
    wire_send_raw(L->snap, L->snap_peer, L->snap_peer_len, garbage, sizeof garbage, 0);
    st_announce(L, L->epoch, 999, WIRE_PROTOCOL_VERSION);
}

/* The real program: with no learner anywhere it waits, and SIGTERM ends it
 * with status 0 promptly (bounds generous enough for a loaded machine: the
 * signal must not arrive before the handler is installed). Skipped without
 * RLHF_BUILD_DIR. */
static int st_program(bool verbose)
{
    const char *dir = getenv("RLHF_BUILD_DIR");
    char        path[4096];
    if (!dir || snprintf(path, sizeof path, "%s/rlhf-actor", dir) >= (int)sizeof path ||
        access(path, X_OK) != 0) {
        if (verbose) printf("  actor: rlhf-actor not found (RLHF_BUILD_DIR unset): skipped\n");
        return 0;
    }
    pid_t pid = fork();
    if (pid < 0) return st_fail(false, "fork");
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(path, path, "--lease", "tcp://127.0.0.1:9", "--weights", "tcp://127.0.0.1:9",
              "--snapshot", "tcp://127.0.0.1:9", "--reward", "tcp://127.0.0.1:9,tcp://127.0.0.1:9",
              "--id", "st-proc", (char *)NULL);
        _exit(127);
    }
    sleep_ms(1000);
    double t0 = now_s();
    kill(pid, SIGTERM);
    int   status = -1;
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_s() - t0 < 10.0) sleep_ms(10);
    double dt = now_s() - t0;
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    int fails = st_fail(w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 && dt < 5.0,
                        "rlhf-actor exits 0 promptly on SIGTERM");
    if (verbose) printf("  actor: rlhf-actor stopped by SIGTERM in %.3f s\n", dt);
    return fails;
}

int actor_selftest(bool verbose)
{
    int fails = st_config(verbose);
    fails += st_program(verbose);

    ModelConfig mc = {.dim = 32,
                      .n_layers = 2,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .hidden_dim = 48,
                      .vocab_size = TOK_N_SPECIAL + (int)strlen(TOK_CHARSET_DEFAULT),
                      .max_seq_len = 64,
                      .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f};
    StLearner   L;
    memset(&L, 0, sizeof L);
    L.zctx = zmq_ctx_new();
    CHECK(L.zctx);
    L.run_id = "run-st";
    L.epoch = 1;
    L.version = 5;
    L.m = model_new(&mc);
    st_new_weights(&L, 11);
    Tok *cfg_tok = tok_new(TOK_CHARSET_DEFAULT);
    L.config = ckpt_config_to_json(&mc, cfg_tok);
    tok_free(&cfg_tok);
    L.pull = st_bind(L.zctx, ZMQ_PULL, "fake-reward", "tcp://127.0.0.1:*", L.ep_pull);
    if (!L.pull || st_learner_up(&L, false)) return st_fail(false, "fake learner sockets");

    StActor *T = xcalloc(1, sizeof *T);
    T->cfg = ACTOR_DEFAULTS;
    T->cfg.lease_ep = L.ep_lease;
    T->cfg.weights_ep = L.ep_pub;
    T->cfg.snapshot_ep = L.ep_snap;
    T->cfg.reward_eps[0] = L.ep_pull;
    T->cfg.n_reward = 1;
    T->cfg.id = "actor-st";
    T->cfg.batch = 3; /* 2 prompts x 4 = 8 sequences: three batches, groups across batches */
    T->cfg.seed = 5;
    T->cfg.reply_timeout_ms = 400;
    T->cfg.snapshot_timeout_ms = 1000;
    T->cfg.status_every_s = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, st_actor_thread, T) == 0);
    double t_begin = now_s();
    double worst = 0.0;

    /* 1. Start-up: the learner answers only later; the actor fetches v5. */
    sleep_ms(200);
    fails += st_fail(st_wait_snap_requests(&L, 1, 5000), "first snapshot request");
    st_pump(&L, 100);
    st_grant(&L, 1, 1, 2, 4, 5, 0, 1.0f);
    fails += st_fail(st_wait_groups(&L, 2, 8000), "groups of lease 1 arrive");
    fails += st_check_groups(&L, 1, 2, 4, 5, NULL, 0, "actor-st", &worst, verbose);
    fails += st_fail(!strcmp(L.req_actor, "actor-st") && !strcmp(L.req_run, "run-st") &&
                         L.req_epoch == 1 && L.req_version == 5 && L.req_max_prompts >= 1,
                     "lease request fields");
    st_clear_groups(&L);

    /* 2. A new version announced: the actor refetches it and later tokens carry it. */
    L.version = 6;
    st_new_weights(&L, 12);
    int snaps = L.n_snap_requests;
    L.is_announcing = true;
    fails += st_fail(st_wait_snap_requests(&L, snaps + 1, 5000), "announce -> snapshot request");
    L.is_announcing = false;
    st_pump(&L, 50);
    st_grant(&L, 2, 1, 2, 4, 5, 0, 1.0f);
    fails += st_fail(st_wait_groups(&L, 2, 8000), "groups of lease 2 arrive");
    worst = 0.0;
    fails += st_check_groups(&L, 2, 2, 4, 6, NULL, 0, "actor-st", &worst, verbose);
    st_clear_groups(&L);

    /* 3. A grant asking for a version the actor lacks (no announce): fetched first. */
    L.version = 7;
    st_new_weights(&L, 13);
    st_grant(&L, 3, 1, 2, 4, 7, 0, 1.0f);
    fails += st_fail(st_wait_groups(&L, 2, 8000), "groups of lease 3 arrive");
    worst = 0.0;
    fails += st_check_groups(&L, 3, 2, 4, 7, NULL, 0, "actor-st", &worst, verbose);
    st_clear_groups(&L);

    /* 3b. v8 announced just as a lease of 4 prompts x 4 (6 batches of 3) is
     * granted: the actor may swap at any batch boundary, never inside one,
     * and every token names the weights that made it. */
    Model *m7 = model_new(&mc);
    model_copy_params(m7, L.m);
    L.version = 8;
    st_new_weights(&L, 15);
    st_grant(&L, 5, 1, 4, 4, 7, 0, 1.0f);
    L.is_announce_after_grant = true;
    fails += st_fail(st_wait_groups(&L, 4, 8000), "groups of lease 5 arrive");
    worst = 0.0;
    fails += st_check_groups(&L, 5, 4, 4, 8, m7, 7, "actor-st", &worst, verbose);
    st_clear_groups(&L);
    model_free(&m7);

    /* 4. Hostile frames on every socket, then a normal lease still works. */
    snaps = L.n_snap_requests;
    st_hostile(&L);
    st_pump(&L, 300);
    fails += st_fail(L.n_snap_requests == snaps + 1, "a bogus announce costs one fetch");
    st_clear_groups(&L); /* lease 91 is refused, 92 and the second lease 1 ignored */
    st_grant(&L, 4, 1, 2, 4, 8, 0, 1.0f);
    fails += st_fail(st_wait_groups(&L, 2, 8000), "groups of lease 4 after hostile input");
    worst = 0.0;
    fails += st_check_groups(&L, 4, 2, 4, 8, NULL, 0, "actor-st", &worst, verbose);
    st_clear_groups(&L);

    /* 4b. Broken snapshots of v9 (a NaN weight, a block too short for its
     * config, a bad checksum) are refused and v8 kept; then v9 is installed. */
    L.version = 9;
    st_new_weights(&L, 16);
    L.bad_snaps[0] = ST_SNAP_CHECKSUM;
    L.bad_snaps[1] = ST_SNAP_SHORT;
    L.bad_snaps[2] = ST_SNAP_NAN;
    L.n_bad_snaps = 3;
    snaps = L.n_snap_requests;
    L.is_announcing = true;
    fails += st_fail(st_wait_snap_requests(&L, snaps + 4, 8000), "broken snapshots asked again");
    L.is_announcing = false;
    st_pump(&L, 50);
    st_grant(&L, 6, 1, 2, 4, 9, 0, 1.0f);
    fails += st_fail(st_wait_groups(&L, 2, 8000), "groups of lease 6 after broken snapshots");
    worst = 0.0;
    fails += st_check_groups(&L, 6, 2, 4, 9, NULL, 0, "actor-st", &worst, verbose);
    st_clear_groups(&L);

    /* 5. The learner restarts from an older checkpoint: epoch 2, version 3,
     * behind the actor's v7. Same endpoints, new sockets. */
    st_learner_down(&L);
    sleep_ms(100);
    L.epoch = 2;
    L.version = 3;
    st_new_weights(&L, 14);
    if (st_learner_up(&L, true)) {
        fails += st_fail(false, "fake learner rebinds");
    } else {
        snaps = L.n_snap_requests;
        int reqs = L.n_requests;
        L.is_announcing = true;
        fails += st_fail(st_wait_snap_requests(&L, snaps + 1, 8000),
                         "restarted learner -> snapshot request");
        L.is_announcing = false;
        fails += st_fail(L.snap_have_epoch == 1 && L.snap_have_version == 9,
                         "snapshot request names the held epoch 1 v9");
        double end = now_s() + 5.0;
        while (L.n_requests == reqs && now_s() < end) st_pump(&L, 20);
        st_grant(&L, 1, 2, 2, 4, 3, 0, 1.0f); /* lease ids start again in a new epoch */
        fails += st_fail(st_wait_groups(&L, 2, 8000), "groups after the learner restarted");
        worst = 0.0;
        fails += st_check_groups(&L, 1, 2, 4, 3, NULL, 0, "actor-st", &worst, verbose);
        fails += st_fail(L.req_epoch == 2 && L.req_version == 3, "requests name epoch 2 v3");
        st_clear_groups(&L);
    }

    /* 6. Stop: prompt, clean, status 0. */
    double t_stop = now_s();
    atomic_store(&T->stop, 1);
    pthread_join(th, NULL);
    double dt_stop = now_s() - t_stop;
    fails += st_fail(T->is_made && T->rc == 0, "actor_run returns 0 on stop");
    fails += st_fail(dt_stop < 1.0, "actor stops within a second");
    const ActorStats *s = &T->stats;
    fails += st_fail(s->leases_done == 7, "7 leases done");
    fails += st_fail(s->leases_refused == 1, "the lease with a bad token refused");
    fails += st_fail(s->leases_stale >= 2, "old-epoch and duplicate grants ignored");
    fails += st_fail(s->rejects >= 11, "hostile frames and snapshots rejected and counted");
    fails += st_fail(s->snapshots >= 4 && s->has_weights && s->epoch == 2 &&
                         s->policy_version == 3 && !strcmp(s->run_id, "run-st"),
                     "final weights epoch 2 v3");
    if (verbose)
        printf("  actor: leases done %llu refused %llu stale %llu; groups %llu, tokens %llu; "
               "snapshots %llu (failed fetches %llu); requests %llu (re-sent %llu); rejects %llu; "
               "stopped in %.3f s; total %.2f s\n",
               (unsigned long long)s->leases_done, (unsigned long long)s->leases_refused,
               (unsigned long long)s->leases_stale, (unsigned long long)s->groups_sent,
               (unsigned long long)s->tokens_generated, (unsigned long long)s->snapshots,
               (unsigned long long)s->snapshot_failures, (unsigned long long)s->requests_sent,
               (unsigned long long)s->requests_resent, (unsigned long long)s->rejects, dt_stop,
               now_s() - t_begin);
    free(T);
    st_clear_groups(&L);
    free(L.pending);
    st_learner_down(&L);
    wire_sock_free(&L.pull);
    zmq_ctx_term(L.zctx);
    model_free(&L.m);
    free(L.config);
    return fails ? 1 : 0;
}
