#include "actor/actor.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "actor/actor_dns.h"
#include "actor/actor_int.h"
#include "actor/actor_metrics.h"
#include "actor/actor_weights.h"
#include "actor/actor_work.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/net/reactor.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/net/snapshot.h"

_Static_assert(ACTOR_MAX_RUN_ID == WIRE_MAX_NAME + 1, "a run id holds WIRE_MAX_NAME bytes");

/* Largest parameter block the actor accepts from a snapshot (16 GiB). */
#define ACTOR_MAX_SNAPSHOT_BYTES ((size_t)16 << 30)
/* Back-off before the first fetch attempt's retry (actor_weights doubles it). */
#define ACTOR_FETCH_FIRST_MS 100

void actor_copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

uint64_t actor_fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

bool actor_is_stopped(const Actor *a)
{
    return atomic_load(a->stop) != 0;
}

bool actor_has_weights(const Actor *a)
{
    /* install_snapshot sets the model and the held identity together. */
    return a->model != NULL;
}

/* ---- Receiving -------------------------------------------------------- */

int actor_recv(Actor *a, WireSock *s, int timeout_ms, const ProtobufCMessageDescriptor *desc,
               ProtobufCMessage **out)
{
    *out = NULL;
    WireMsg m;
    int     rc = wire_recv(s, timeout_ms, &m);
    if (rc) return rc; /* a malformed frame is already counted and logged by wire_recv */
    WireReject rej;
    rc = wire_decode(desc, wire_msg_data(&m), wire_msg_size(&m), NULL, out, &rej);
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

void actor_refuse(Actor *a, const char *what, WireReason reason, const char *fmt, ...)
{
    WireReject rej = {.reason = reason};
    va_list    ap;
    va_start(ap, fmt);
    vsnprintf(rej.why, sizeof rej.why, fmt, ap);
    va_end(ap);
    wire_reject_note(&a->local, a->id, what, &rej);
}

/* ---- Status ----------------------------------------------------------- */

static void status_line(Actor *a)
{
    double     t = progress_now(), dt = t - a->t_status;
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
    if (actor_has_weights(a)) actor_weights_format(&a->held, w, sizeof w);
    double   gps = dt > 0 ? (double)(s.groups_sent - a->st_last.groups_sent) / dt : 0.0;
    double   tps = dt > 0 ? (double)(s.tokens_generated - a->st_last.tokens_generated) / dt : 0.0;
    uint64_t slots = s.slot_steps - a->st_last.slot_steps;
    double   used =
        slots ? 100.0 * (double)(s.slot_rows_used - a->st_last.slot_rows_used) / slots : 0.0;
    log_info("actor %s: leases %llu done, %llu refused, %llu abandoned, %llu stale, %llu joined; "
             "groups %llu "
             "(%.2f/s); tokens %llu (%.0f/s); slots %.0f%% used; weights %s (%llu snapshots); "
             "rejects %llu (%s); error replies %llu",
             a->id, (unsigned long long)s.leases_done, (unsigned long long)s.leases_refused,
             (unsigned long long)s.leases_abandoned, (unsigned long long)s.leases_stale,
             (unsigned long long)s.leases_joined, (unsigned long long)s.groups_sent, gps,
             (unsigned long long)s.tokens_generated, tps, used, w, (unsigned long long)s.snapshots,
             (unsigned long long)s.rejects, rej, (unsigned long long)s.error_replies);
    a->st_last = s;
    a->t_status = t;
}

static int on_dns_timer(Reactor *r, void *arg)
{
    (void)r;
    Actor *a = arg;
    actor_dns_refresh(a->dns, a->auth, a->push, a->cfg.reward_eps, a->cfg.n_reward);
    return 0; /* a failed connect is retried at the next refresh */
}

static int on_status_timer(Reactor *r, void *arg)
{
    Actor *a = arg;
    /* Quiet until the first snapshot, as while the first fetch blocked. */
    if (actor_has_weights(a)) status_line(a);
    return 0;
}

/* ---- State ------------------------------------------------------------ */

static const char *const state_names[] = {
    [ACTOR_WAITING_WEIGHTS] = "waiting for weights",
    [ACTOR_FETCHING] = "fetching",
    [ACTOR_IDLE] = "idle",
    [ACTOR_REQUESTING] = "requesting",
    [ACTOR_SAMPLING] = "sampling",
};

void actor_set_state(Actor *a, ActorState to, int delay_ms)
{
    ActorState from = a->state;
    a->state = to;
    if (from != to)
        log_debug("actor %s: %s -> %s (%d ms)", a->id, state_names[from], state_names[to],
                  delay_ms);
    Reactor *r = a->reactor;
    switch (to) {
    case ACTOR_WAITING_WEIGHTS:
        /* Grants and announces wait in their queues until weights are held. */
        CHECK(reactor_watch_socket(r, wire_sock_zmq(a->lease), false) == 0);
        CHECK(reactor_watch_socket(r, wire_sock_zmq(a->sub), false) == 0);
        CHECK(reactor_set_timer(r, ACTOR_TIMER_LEASE, -1) == 0);
        CHECK(reactor_set_timer(r, ACTOR_TIMER_FETCH, delay_ms) == 0);
        break;
    case ACTOR_IDLE:
    case ACTOR_REQUESTING:
        CHECK(reactor_watch_socket(r, wire_sock_zmq(a->lease), true) == 0);
        CHECK(reactor_watch_socket(r, wire_sock_zmq(a->sub), true) == 0);
        if (to == ACTOR_REQUESTING && from != ACTOR_FETCHING) delay_ms = a->cfg.reply_timeout_ms;
        if (delay_ms != ACTOR_KEEP_TIMER)
            CHECK(reactor_set_timer(r, ACTOR_TIMER_LEASE, delay_ms) == 0);
        break;
    case ACTOR_FETCHING:
    case ACTOR_SAMPLING:
        /* Blocking calls: no timer fires until they return. */
        break;
    }
}

void actor_want_fetch(Actor *a)
{
    a->is_fetch_due = true;
    CHECK(reactor_set_timer(a->reactor, ACTOR_TIMER_FETCH, 0) == 0);
}

/* The fetch timer: one attempt (FETCHING), then back to where the actor
 * was; after a failure the timer is set for the back-off. Without weights
 * the actor waits in WAITING_WEIGHTS; with them it keeps serving leases
 * while the back-off runs. */
static int on_fetch_timer(Reactor *r, void *arg)
{
    Actor     *a = arg;
    ActorState back = a->state;
    if (back != ACTOR_WAITING_WEIGHTS && !a->is_fetch_due) {
        CHECK(reactor_set_timer(r, ACTOR_TIMER_FETCH, -1) == 0);
        return 0;
    }
    actor_set_state(a, ACTOR_FETCHING, 0);
    int retry_ms = 0;
    int rc = actor_fetch_attempt(a, &retry_ms);
    if (rc == ACTOR_STOPPED) {
        reactor_stop(r);
        return 0;
    }
    if (rc == ERR_IO) return rc;
    if (rc == 0) {
        CHECK(reactor_set_timer(r, ACTOR_TIMER_FETCH, -1) == 0);
        /* The first weights, or new ones while idle after an empty grant
         * (a learner that leases only at its current version, as in the
         * synchronous mode, has work again): ask for work now, not after
         * the retry delay. */
        if (back == ACTOR_WAITING_WEIGHTS || back == ACTOR_IDLE)
            actor_set_state(a, ACTOR_IDLE, 0);
        else
            actor_set_state(a, back, ACTOR_KEEP_TIMER);
        return 0;
    }
    if (back == ACTOR_WAITING_WEIGHTS) {
        actor_set_state(a, ACTOR_WAITING_WEIGHTS, retry_ms);
    } else {
        actor_set_state(a, back, ACTOR_KEEP_TIMER);
        CHECK(reactor_set_timer(r, ACTOR_TIMER_FETCH, retry_ms) == 0);
    }
    return 0;
}

/* ---- Messages --------------------------------------------------------- */

/* What each socket the loop reads carries, and who handles it. One rule
 * for who frees: the dispatcher unpacked the message, so it frees it after
 * the handler returns; handlers borrow it (const) and copy what they keep.
 * (Snapshot chunks are read inside the blocking fetch, see actor_weights.h.) */
typedef struct {
    const char                       *socket; /* the socket's name */
    const ProtobufCMessageDescriptor *desc;   /* the message expected on it */
    int (*on_msg)(Actor *a, const ProtobufCMessage *m);
    int (*on_error_reply)(Actor *a); /* an ErrorReply instead; NULL: counted and logged only */
} ActorRoute;

enum { ROUTE_WEIGHTS, ROUTE_LEASE };
static const ActorRoute routes[] = {
    [ROUTE_WEIGHTS] = {"weights", &rlhf__weight_announce__descriptor, actor_on_announce, NULL},
    [ROUTE_LEASE] = {"lease", &rlhf__lease_grant__descriptor, actor_on_grant,
                     actor_on_lease_refused},
};

/* A socket of the loop with its route: the reactor handler's argument. */
typedef struct {
    Actor            *a;
    WireSock         *sock;
    const ActorRoute *route;
} ActorInbox;

/* Takes one frame from s without waiting and hands it to its route.
 * Returns 1 after a frame (handled or refused), 0 when none waits (or the
 * handler saw the stop flag: the loop is told to end), or a negative code. */
static int dispatch(Actor *a, WireSock *s, const ActorRoute *route)
{
    ProtobufCMessage *m = NULL;
    int               rc = actor_recv(a, s, 0, route->desc, &m);
    if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return 0;
    if (rc == ERR_IO) return rc;
    if (rc == 1)
        rc = route->on_error_reply ? route->on_error_reply(a) : 0;
    else if (rc < 0)
        return 1; /* refused: counted and logged by actor_recv */
    else {
        rc = route->on_msg(a, m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (rc == ACTOR_STOPPED) {
        reactor_stop(a->reactor);
        return 0;
    }
    return rc < 0 ? rc : 1;
}

static int on_readable(Reactor *r, void *arg)
{
    ActorInbox *in = arg;
    return dispatch(in->a, in->sock, in->route);
}

int actor_read_announces(Actor *a)
{
    int rc;
    while ((rc = dispatch(a, a->sub, &routes[ROUTE_WEIGHTS])) == 1) {
    }
    return rc;
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
    if (auth_connect(a->auth, s, ep, AUTH_LEARNER) != 0) wire_sock_free(&s);
    return s;
}

Actor *actor_new(const ActorConfig *cfg)
{
    CHECK(cfg && cfg->batch >= 1 && cfg->n_reward >= 1 && cfg->n_reward <= ACTOR_MAX_REWARD);
    CHECK(cfg->lease_ep && cfg->weights_ep && cfg->snapshot_ep && cfg->poll_ms > 0);
    CHECK(cfg->decode_weights >= KERN_F32 && cfg->decode_weights <= KERN_F16);
    Actor *a = xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    if (cfg->id && (strlen(cfg->id) == 0 || strlen(cfg->id) >= ACTOR_MAX_ID)) {
        log_error("actor_new: id '%.80s' has %zu bytes, expected 1..%d", cfg->id, strlen(cfg->id),
                  ACTOR_MAX_ID - 1);
        free(a);
        return NULL;
    }
    if (cfg->id)
        actor_copy_str(a->id, sizeof a->id, cfg->id);
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
    a->seed = cfg->seed ? cfg->seed : actor_fnv1a(a->id);
    a->backoff_ms = ACTOR_FETCH_FIRST_MS;
    a->rx = wire_snap_rx_new(NULL, ACTOR_MAX_SNAPSHOT_BYTES);
    a->zctx = zmq_ctx_new();
    if (!a->zctx) {
        log_error("actor_new: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        actor_free(&a);
        return NULL;
    }
    a->auth = auth_new(a->zctx, &cfg->auth, "actor", false);
    a->lease = a->auth ? sock_connect(a, ZMQ_DEALER, "lease", a->cfg.lease_ep) : NULL;
    a->sub = a->lease ? sock_connect(a, ZMQ_SUB, "weights", a->cfg.weights_ep) : NULL;
    a->snap = a->sub ? sock_connect(a, ZMQ_DEALER, "snapshot", a->cfg.snapshot_ep) : NULL;
    if (a->snap) a->push = wire_sock_new(a->zctx, ZMQ_PUSH, "samples", NULL);
    if (a->push && cfg->reward_resolve_ms > 0) {
        a->dns = actor_dns_new();
        if (actor_dns_refresh(a->dns, a->auth, a->push, a->cfg.reward_eps, cfg->n_reward) < 0)
            wire_sock_free(&a->push);
    }
    for (int i = 0; a->push && !a->dns && i < cfg->n_reward; i++)
        if (auth_connect(a->auth, a->push, a->cfg.reward_eps[i], AUTH_REWARD) != 0)
            wire_sock_free(&a->push);
    if (!a->push || actor_metrics_open(a) != 0) {
        actor_free(&a);
        return NULL;
    }
    return a;
}

void actor_free(Actor **pa)
{
    if (!pa || !*pa) return;
    Actor *a = *pa;
    actor_metrics_close(a); /* its server reads the actor's counters' copies: first */
    /* Sockets first (each lingers at most its short linger), then the context. */
    wire_sock_free(&a->push);
    actor_dns_free(&a->dns);
    wire_sock_free(&a->snap);
    wire_sock_free(&a->sub);
    wire_sock_free(&a->lease);
    auth_free(&a->auth);
    if (a->zctx) {
        while (zmq_ctx_term(a->zctx) != 0 && zmq_errno() == EINTR) {
        }
    }
    gen_free(&a->gen);
    model_free(&a->model);
    free(a->base);
    lora_free(&a->lora);
    wire_snap_rx_free(&a->rx);
    free(a->buf_block);
    for (int i = 0; i < 3 + ACTOR_MAX_REWARD; i++) free(a->ep_copies[i]);
    free(a);
    *pa = NULL;
}

void actor_stats(const Actor *a, ActorStats *out)
{
    *out = a->st;
    Actor *m = (Actor *)a; /* the reject counters are only read */
    out->rejects = rejects_total(m);
    out->has_weights = actor_has_weights(a);
    actor_copy_str(out->run_id, sizeof out->run_id, a->held.run_id);
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
             "batch %d%s, seed %llu, decoding in %s (%s kernels)",
             a->id, a->cfg.lease_ep, a->cfg.weights_ep, a->cfg.snapshot_ep, a->cfg.n_reward,
             a->cfg.reward_eps[0], a->cfg.batch, a->cfg.cross_lease ? " across leases" : "",
             (unsigned long long)a->seed, kern_type_names[a->cfg.decode_weights],
             kern_variant_name());
    a->t_status = progress_now();
    a->stop = stop;
    a->reactor = reactor_new("actor", a->cfg.poll_ms);
    ActorInbox weights = {a, a->sub, &routes[ROUTE_WEIGHTS]};
    ActorInbox lease = {a, a->lease, &routes[ROUTE_LEASE]};
    /* Announces first, every one queued, then one grant per pass: a grant
     * is served (blocking) with the newest weights the actor knows of. */
    int     rc = reactor_add_socket(a->reactor, wire_sock_zmq(a->sub), routes[ROUTE_WEIGHTS].socket,
                                    on_readable, &weights, INT_MAX);
    int64_t status_ms = (int64_t)(a->cfg.status_every_s * 1000.0);
    if (a->cfg.status_every_s > 0 && status_ms < 1) status_ms = 1;
    /* Timers run in this order within a pass: status, then a due fetch,
     * then the lease request that may name the fetched version. */
    if (!rc)
        rc = reactor_add_socket(a->reactor, wire_sock_zmq(a->lease), routes[ROUTE_LEASE].socket,
                                on_readable, &lease, 1);
    if (!rc) rc = reactor_add_timer(a->reactor, "status", status_ms, false, on_status_timer, a);
    if (!rc && a->dns)
        rc = reactor_add_timer(a->reactor, "reward-dns", a->cfg.reward_resolve_ms, false,
                               on_dns_timer, a);
    if (!rc && a->http_metrics)
        rc = reactor_add_timer(a->reactor, "metrics", ACTOR_METRICS_TICK_MS, true,
                               actor_metrics_on_timer, a);
    if (!rc)
        rc = reactor_add_timer(a->reactor, ACTOR_TIMER_FETCH, a->cfg.snapshot_timeout_ms, false,
                               on_fetch_timer, a);
    if (!rc)
        rc = reactor_add_timer(a->reactor, ACTOR_TIMER_LEASE, a->cfg.reply_timeout_ms, false,
                               actor_on_lease_timer, a);
    if (!rc) {
        a->state = ACTOR_WAITING_WEIGHTS;
        actor_set_state(a, ACTOR_WAITING_WEIGHTS, 0); /* the first attempt at once */
        rc = reactor_run(a->reactor, stop);
    }
    reactor_free(&a->reactor);
    if (rc < 0) return rc;
    status_line(a);
    return 0;
}
