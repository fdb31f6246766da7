#include "learner/learner_serve.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "learner/learner_config.h"
#include "learner/learner_intake.h"
#include "learner/learner_publish.h"
#include "learner/learner_task.h"

#define RETRY_AFTER_MS 200 /* what an actor is told to wait when no work is free */
/* ... and when it holds its credit: its groups are on their way back */
#define RETRY_OVER_CREDIT_MS 50

int learner_serve_open(Learner *l)
{
    l->zctx = zmq_ctx_new();
    if (!l->zctx) {
        log_error("learner: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        return ERR_IO;
    }
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    /* Replies go to whoever asked; a peer that vanished must not stall the loop. */
    o.sndtimeo_ms = 0;
    o.immediate = false;
    WireSockOpts snap = o;
    snap.sndtimeo_ms = 2000; /* chunks of one snapshot may fill the pipe for a moment */
    l->s_lease = wire_sock_new(l->zctx, ZMQ_ROUTER, "lease", &o);
    l->s_results = wire_sock_new(l->zctx, ZMQ_PULL, "results", &o);
    l->s_weights = wire_sock_new(l->zctx, ZMQ_PUB, "weights", &o);
    l->s_snap = wire_sock_new(l->zctx, ZMQ_ROUTER, "snapshot", &snap);
    if (!l->s_lease || !l->s_results || !l->s_weights || !l->s_snap) return ERR_IO;
    l->auth = auth_new(l->zctx, &l->cfg.auth, AUTH_LEARNER, true);
    if (!l->auth) return ERR_ARG;
    int rc;
    if ((rc = auth_bind(l->auth, l->s_lease, l->cfg.lease_ep)) ||
        (rc = auth_bind(l->auth, l->s_results, l->cfg.results_ep)) ||
        (rc = auth_bind(l->auth, l->s_weights, l->cfg.weights_ep)) ||
        (rc = auth_bind(l->auth, l->s_snap, l->cfg.snapshot_ep)))
        return rc;
    /* The per-peer limits (learner.h, "Per-peer limits"). */
    l->lease_credit = learner_lease_credit(&l->cfg);
    size_t       bytes = learner_publish_bytes(l);
    WireSnapMeta meta = {
        .run_id = l->run_id, .config_json = l->config_json, .dtype = l->cfg.snapshot_dtype};
    size_t frames = wire_snap_packed_bytes(&meta, bytes, (size_t)l->cfg.chunk_bytes);
    size_t budget = learner_snapshot_budget(&l->cfg, bytes);
    if (frames == 0 || budget < frames) {
        log_error("learner: --snapshot-queue-mb %d (%zu bytes) does not hold one snapshot of "
                  "%zu bytes; give at least --snapshot-queue-mb %zu",
                  l->cfg.snapshot_queue_mb, budget, frames, (frames >> 20) + 1);
        return ERR_ARG;
    }
    l->snap_out = wire_snap_out_new(budget);
    log_info("learner: per peer: %d groups in flight (lease credit%s), one snapshot queued; "
             "snapshots queued in all: %.1f MiB (%zu snapshots of %.1f MiB)",
             l->lease_credit,
             l->cfg.lease_credit_key > 0 && auth_has_keys(l->auth) ? ", and per client key" : "",
             (double)budget / (1 << 20), budget / frames, (double)frames / (1 << 20));
    return 0;
}

void learner_serve_close(Learner *l)
{
    auth_free(&l->auth); /* its ZAP thread counts into the sockets' rejects: first */
    wire_sock_free(&l->s_lease);
    wire_sock_free(&l->s_results);
    wire_sock_free(&l->s_weights);
    wire_sock_free(&l->s_snap);
    if (l->zctx) zmq_ctx_term(l->zctx);
    l->zctx = NULL;
    /* After the context: ZeroMQ has released every queued frame by now. */
    wire_snap_out_free(&l->snap_out);
}

void learner_serve_refuse(WireSock *s, const WireMsg *m, const char *what, int code,
                          const WireReject *rej)
{
    wire_reject_note(wire_sock_rejects(s), "learner", what, rej);
    char reason[256];
    snprintf(reason, sizeof reason, "%s refused: %s: %s", what, wire_reason_name(rej->reason),
             rej->why);
    Rlhf__ErrorReply er = RLHF__ERROR_REPLY__INIT;
    er.version = WIRE_PROTOCOL_VERSION;
    er.code = code;
    er.reason = reason;
    /* Best effort: a peer that is refused may be gone or not reading. */
    (void)wire_send_to(s, m->peer, m->peer_len, &er.base, ZMQ_DONTWAIT);
}

static Rlhf__SamplingParams sampling_of(const Learner *l)
{
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    sp.temperature = l->cfg.algo.temperature;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.max_new_tokens = l->cfg.max_new_tokens;
    return sp;
}

static int64_t min_version(const Learner *l)
{
    int64_t v = l->version - l->cfg.max_staleness;
    return v < 0 ? 0 : v;
}

/* Up to 8 bytes of a routing id in hex, for log lines. */
static void peer_hex(const WireMsg *m, char out[20])
{
    size_t n = m->peer_len < 8 ? m->peer_len : 8;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", m->peer[i]);
    if (m->peer_len > 8) snprintf(out + 16, 4, "..");
}

/* The accounts a request from m is charged to (learner.h, "Per-peer
 * limits"): its connection, named by the routing id; and with CURVE and
 * --lease-credit-key, the client key ZAP let it in with (ZeroMQ's User-Id
 * of the frame: the allow-list name of the key), over all connections of
 * that key. The names point into conn and key. Returns how many. */
static int peer_accounts(Learner *l, const WireMsg *m, LeaseAccount acct[LEASE_MAX_ACCOUNTS],
                         uint8_t conn[LEASE_ACCOUNT_MAX_ID], char key[LEASE_ACCOUNT_MAX_ID])
{
    conn[0] = 'c';
    memcpy(conn + 1, m->peer, m->peer_len);
    acct[0] = (LeaseAccount){conn, m->peer_len + 1, l->lease_credit};
    if (l->cfg.lease_credit_key <= 0 || !auth_has_keys(l->auth)) return 1;
    /* zmq_msg_gets only reads the frame's metadata. */
    const char *uid = zmq_msg_gets((zmq_msg_t *)&m->frame, "User-Id");
    if (!uid || !uid[0]) return 1;
    snprintf(key, LEASE_ACCOUNT_MAX_ID, "k%s", uid);
    acct[1] = (LeaseAccount){key, strlen(key), l->cfg.lease_credit_key};
    return 2;
}

/* The dispatch table's handler of a LeaseRequest: a grant of up to
 * max_prompts prompts, or none with a retry delay; never keeps the message.
 * A peer that already holds its credit gets none and is told to ask again
 * soon: flow control, counted in grants_credit (an actor faster than the
 * learner holds its credit most of the time), not a reject. */
static void grant_lease(Learner *l, const WireMsg *m, ProtobufCMessage **msg)
{
    const Rlhf__LeaseRequest *req = (const Rlhf__LeaseRequest *)*msg;
    /* Expire first, so a dead lease's prompts can go to this request. */
    lease_expire(l->leases, learner_mono_ms());
    uint64_t        lease_id = 0;
    const uint64_t *ids = NULL;
    LeaseAccount    acct[LEASE_MAX_ACCOUNTS];
    uint8_t         conn[LEASE_ACCOUNT_MAX_ID];
    char            key[LEASE_ACCOUNT_MAX_ID];
    int             n_acct = peer_accounts(l, m, acct, conn, key);
    int             n = 0;
    bool            is_over = req->max_prompts > 0 && lease_capacity(l->leases) > 0 &&
                   lease_credit_left(l->leases, acct, n_acct) == 0;
    if (is_over) {
        l->grants_credit++;
        if (log_level() >= LOG_DEBUG) {
            char hex[20];
            peer_hex(m, hex);
            if (lease_credit_left(l->leases, acct, 1) == 0)
                log_debug("lease: peer %s ('%.64s') holds its credit of %d groups in flight", hex,
                          req->actor_id, l->lease_credit);
            else
                log_debug("lease: peer %s ('%.64s'): its key '%.64s' holds the key's credit of "
                          "%d groups in flight",
                          hex, req->actor_id, key + 1, l->cfg.lease_credit_key);
        }
    } else {
        n = lease_grant_to(l->leases, req->max_prompts, learner_mono_ms(), acct, n_acct, &lease_id,
                           &ids);
    }

    Rlhf__SamplingParams sp = sampling_of(l);
    Rlhf__LeaseGrant     g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = l->run_id;
    g.epoch = l->epoch;
    g.min_policy_version = (uint64_t)min_version(l);
    Rlhf__Prompt  pr[LEARNER_MAX_LEASE_PROMPTS];
    Rlhf__Prompt *pp[LEARNER_MAX_LEASE_PROMPTS];
    CHECK(n <= LEARNER_MAX_LEASE_PROMPTS);
    if (n > 0) {
        g.lease_id = lease_id;
        g.deadline_unix_ms = learner_wall_ms() + l->cfg.lease_timeout_ms;
        g.group_size = l->cfg.group_size;
        g.sampling = &sp;
        for (int i = 0; i < n; i++) {
            pr[i] = (Rlhf__Prompt)RLHF__PROMPT__INIT;
            learner_task_wire_prompt(l, ids[i], i, &pr[i]); /* ids, answer, task, meta */
            pp[i] = &pr[i];
        }
        g.n_prompts = (size_t)n;
        g.prompts = pp;
    } else {
        l->grants_empty++;
        g.retry_after_ms = req->max_prompts <= 0 ? 0
                           : is_over             ? RETRY_OVER_CREDIT_MS
                                                 : RETRY_AFTER_MS;
    }
    int rc = wire_send_to(l->s_lease, m->peer, m->peer_len, &g.base, ZMQ_DONTWAIT);
    if (rc) /* The lease stays in the table and is re-issued at its deadline. */
        log_warn("lease: reply to '%.64s' not sent (%s)%s", req->actor_id, err_str(rc),
                 n ? "; its lease will expire" : "");
    else if (n)
        log_debug("lease %" PRIx64 ": %d prompts to '%.64s' (holds version %" PRIu64 ")", lease_id,
                  n, req->actor_id, req->policy_version);
}

/* Receives one request from a ROUTER socket and decodes it. A frame that
 * decodes badly is counted, logged (rate-limited) and answered with an
 * ErrorReply naming the reason, so the peer need not wait for a timeout.
 * Returns 0 with *out (caller frees) and m open; otherwise wire_recv's or
 * wire_decode's error with m closed. */
static int recv_request(WireSock *s, const ProtobufCMessageDescriptor *desc, const WireLimits *lim,
                        WireMsg *m, ProtobufCMessage **out)
{
    *out = NULL;
    int rc = wire_recv(s, 0, m);
    if (rc) return rc; /* nothing, or a malformed frame wire_recv counted and logged */
    WireReject rej;
    rc = wire_decode(desc, wire_msg_data(m), wire_msg_size(m), lim, out, &rej);
    if (rc == 0) return 0;
    learner_serve_refuse(s, m, desc->short_name, rc, &rej);
    wire_msg_close(m);
    return rc;
}

/* The reactor's read handler of every row: one message received, decoded
 * and handed to the row's handler; then the one rule of who frees it.
 * Returns 1 when a frame was taken (handled, or refused and counted), 0 when
 * nothing is waiting, ERR_IO when the socket failed for good. */
static int on_readable(Reactor *r, void *arg)
{
    const LearnerRoute *rt = arg;
    WireMsg             m = {0};
    ProtobufCMessage   *msg = NULL;
    int                 rc;
    if (wire_sock_type(rt->sock) == ZMQ_ROUTER)
        rc = recv_request(rt->sock, rt->desc, rt->lim, &m, &msg);
    else /* a PULL cannot answer: the refusal is counted and logged only */
        rc = wire_recv_decode(rt->sock, 0, rt->desc, rt->lim, &m, &msg, NULL);
    if (rc == 0) {
        rt->handler(rt->l, &m, &msg);
        CHECK(msg || rt->frees == LEARNER_HANDLER_MAY_KEEP);
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
    }
    wire_msg_close(&m);
    if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return 0;
    if (rc == ERR_IO) return rc;
    return 1;
}

void learner_serve_register(Learner *l, Reactor *r, int burst)
{
    /* The dispatch table, one row per readable socket, served in this order
     * each pass. */
    // clang-format off
    const LearnerRoute table[LEARNER_N_ROUTES] = {
        /*   socket        message                              limits           handler                   who frees */
        {l, l->s_results, &rlhf__scored_group__descriptor,     &l->lim_results, learner_intake_group,     LEARNER_HANDLER_MAY_KEEP},
        {l, l->s_lease,   &rlhf__lease_request__descriptor,    &l->lim_req,     grant_lease,              LEARNER_DISPATCH_FREES},
        {l, l->s_snap,    &rlhf__snapshot_request__descriptor, &l->lim_req,     learner_publish_snapshot, LEARNER_DISPATCH_FREES},
    };
    // clang-format on
    for (int i = 0; i < LEARNER_N_ROUTES; i++) {
        l->routes[i] = table[i];
        /* A fixed three of the reactor's eight: a failure is a bug. */
        CHECK(reactor_add_socket(r, wire_sock_zmq(table[i].sock), wire_sock_name(table[i].sock),
                                 on_readable, &l->routes[i], burst) == 0);
    }
}
