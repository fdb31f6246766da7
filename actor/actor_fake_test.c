#include "actor/actor_fake_test.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/formats/tok.h"
#include "common/net/snapshot.h"

WireSock *actor_fake_bind(void *zctx, int type, const char *name, const char *ep, char *out)
{
    WireSock *s = wire_sock_new(zctx, type, name, NULL);
    if (!s) return NULL;
    /* Rebinding a port just closed may fail for a moment: retry briefly. */
    for (int k = 0; k < 40; k++) {
        if (zmq_bind(wire_sock_zmq(s), ep) == 0) {
            if (out && wire_last_endpoint(s, out, 256) != 0) break;
            return s;
        }
        usleep(25 * 1000);
    }
    log_error("actor_selftest: bind '%s': %s", ep, zmq_strerror(zmq_errno()));
    wire_sock_free(&s);
    return NULL;
}

/* Binds the learner's sockets: on ephemeral ports the first time, on the
 * same endpoints again after a restart. */
int actor_fake_learner_up(StLearner *L, bool again)
{
    L->lease = actor_fake_bind(L->zctx, ZMQ_ROUTER, "fake-lease",
                               again ? L->ep_lease : "tcp://127.0.0.1:*", L->ep_lease);
    L->pub = actor_fake_bind(L->zctx, ZMQ_PUB, "fake-pub", again ? L->ep_pub : "tcp://127.0.0.1:*",
                             L->ep_pub);
    L->snap = actor_fake_bind(L->zctx, ZMQ_ROUTER, "fake-snap",
                              again ? L->ep_snap : "tcp://127.0.0.1:*", L->ep_snap);
    return L->lease && L->pub && L->snap ? 0 : ERR_IO;
}

void actor_fake_learner_down(StLearner *L)
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

void actor_fake_announce(StLearner *L, uint64_t epoch, uint64_t version, uint32_t proto)
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
void actor_fake_pump(StLearner *L, int ms)
{
    double end = progress_now() + ms / 1000.0;
    do {
        if (L->is_announcing && progress_now() - L->t_announce > 0.1) {
            actor_fake_announce(L, L->epoch, L->version, WIRE_PROTOCOL_VERSION);
            L->t_announce = progress_now();
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
            snprintf(L->req_run, sizeof L->req_run, "%s", r->run_id ? r->run_id : "");
            snprintf(L->req_actor, sizeof L->req_actor, "%s", r->actor_id ? r->actor_id : "");
            L->req_epoch = r->epoch;
            L->req_version = r->policy_version;
            L->req_max_prompts = r->max_prompts;
            protobuf_c_message_free_unpacked(msg, NULL);
            wire_msg_close(&m);
            if (L->pending) {
                wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
                free(L->pending);
                L->pending = L->queued;
                L->pending_len = L->queued_len;
                L->queued = NULL;
                if (L->is_announce_after_grant)
                    actor_fake_announce(L, L->epoch, L->version, WIRE_PROTOCOL_VERSION);
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
    } while (progress_now() < end);
}

void actor_fake_clear_groups(StLearner *L)
{
    for (int i = 0; i < L->n_groups; i++)
        protobuf_c_message_free_unpacked(&L->groups[i]->base, NULL);
    L->n_groups = 0;
}

/* Pumps until at least n groups arrived or timeout_ms passed. */
bool actor_fake_wait_groups(StLearner *L, int n, int timeout_ms)
{
    double end = progress_now() + timeout_ms / 1000.0;
    while (L->n_groups < n && progress_now() < end) actor_fake_pump(L, 20);
    return L->n_groups >= n;
}

bool actor_fake_wait_snap_requests(StLearner *L, int n, int timeout_ms)
{
    double end = progress_now() + timeout_ms / 1000.0;
    while (L->n_snap_requests < n && progress_now() < end) actor_fake_pump(L, 20);
    return L->n_snap_requests >= n;
}

/* A grant of n prompts x G, packed, to be sent at the next request. */
void actor_fake_grant(StLearner *L, uint64_t lease_id, uint64_t epoch, int n, int G, uint64_t min_v,
                      int bad_token, float temperature)
{
    Tok                 *tok = tok_new(TOK_CHARSET_DEFAULT);
    static const char   *texts[] = {"12+34=", "7-5=", "99+1=", "3+3="};
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    sp.temperature = temperature;
    sp.top_k = 20; /* truncated: logp_sampled differs from logp_behaviour */
    sp.top_p = 1.0f;
    sp.max_new_tokens = L->max_new > 0 ? L->max_new : 12;
    Rlhf__Prompt pr[4], *prp[4];
    int32_t      toks[4][16];
    char         answers[4][12];
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

void *actor_fake_actor_thread(void *p)
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

void actor_fake_new_weights(StLearner *L, uint64_t seed)
{
    model_init_random(L->m, seed, 0.3f);
}
