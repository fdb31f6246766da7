/* cluster_hostile_test: hostile frames against every socket of a running
 * cluster, with real processes on real sockets (tests/support/testcl.h):
 * garbage, truncated protobufs, oversized frames, a wrong protocol version,
 * out-of-range token ids and numbers, NaN and infinite values
 * (tests/support/frames.h), sent from the test's own DEALER and PUSH
 * sockets to the learner's lease ROUTER, snapshot ROUTER and results PULL
 * and the reward server's samples PULL, and to the actor (which binds
 * nothing) through a proxy between it and the learner that forwards its
 * traffic and slips in bad announces, grants and chunks and one
 * NaN-holding snapshot. Each daemon must count every frame under the
 * expected reason, log it, answer refused requests with an ErrorReply
 * (learner) and keep serving, and the run must complete.
 *
 * Returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/tok.h"
#include "common/net/snapshot.h"
#include "common/nn/half.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "tests/support/expect.h"
#include "tests/support/frames.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/wire_fixture.h"

/* A test still running after this long fails, and its processes are killed. */
#define HOSTILE_BUDGET_S 100.0

/* A forwarding proxy between the actor and the learner, on the test's
 * thread of its own: it binds what the actor connects to (lease ROUTER,
 * weights PUB, snapshot ROUTER), passes every frame on to the learner and
 * back, and on request slips the actor hostile frames on all three, then
 * answers one snapshot request itself with a complete, correctly
 * checksummed snapshot holding a NaN. It learns the actor's routing ids,
 * the run and the snapshot's config from the traffic. */
typedef struct {
    void       *zctx;
    const char *ep_lease, *ep_weights, *ep_snap;       /* bound, for the actor */
    const char *ep_l_lease, *ep_l_weights, *ep_l_snap; /* the learner's */
    pthread_t   thread;
    atomic_int  is_ready;    /* 1 sockets up, -1 failed */
    atomic_int  stop;        /* set by the test thread */
    atomic_int  want_inject; /* set by the test thread */
    atomic_int  is_injected; /* the frames went out */
    atomic_int  is_nan_sent; /* the NaN snapshot went out */
    atomic_int  forwarded;   /* frames passed on, both ways */
    /* Owned by the proxy thread until it is joined. */
    WireSock *a_lease, *a_pub, *a_snap, *l_lease, *l_sub, *l_snap;
    uint8_t   lease_peer[WIRE_MAX_IDENTITY];
    size_t    lease_peer_len;
    uint8_t   snap_peer[WIRE_MAX_IDENTITY];
    size_t    snap_peer_len;
    char      run_id[WIRE_MAX_NAME + 1];
    uint64_t  epoch;
    char     *config_json; /* from a chunk 0 the learner sent */
    uint64_t  total_bytes;
    bool      is_nan_armed;
    FrameSet  sub, lease, snap;
    char      error[256];
} Proxy;

static void proxy_error(Proxy *px, const char *what, int rc)
{
    if (!px->error[0]) snprintf(px->error, sizeof px->error, "proxy: %s: %s", what, err_str(rc));
}

/* Forwards m to dst (to peer on ROUTER sockets); a vanished peer is fine. */
static void proxy_forward(Proxy *px, WireSock *dst, const void *peer, size_t peer_len, WireMsg *m)
{
    int rc = wire_send_msg(dst, peer, peer_len, m, 0);
    wire_msg_close(m);
    if (rc == 0) atomic_fetch_add(&px->forwarded, 1);
}

static void proxy_send_nan_snapshot(Proxy *px, const Rlhf__SnapshotRequest *req)
{
    /* The learner's snapshots are bf16 (its default): one NaN among zeros. */
    size_t    n = (size_t)(px->total_bytes / 2);
    uint16_t *block = xcalloc(n, sizeof *block);
    block[n / 2] = half_f32_to_bf16(NAN);
    /* One version past what the actor holds, so it is not taken for the
     * snapshot it has; the checksum is right, so only the NaN can fail it. */
    WireSnapMeta meta = {.run_id = req->run_id,
                         .epoch = req->have_epoch,
                         .policy_version = req->have_policy_version + 1,
                         .config_json = px->config_json,
                         .has_checksum = false,
                         .dtype = RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16};
    int          rc = wire_snap_send(px->a_snap, px->snap_peer, px->snap_peer_len, &meta, block,
                                     n * sizeof *block, 0);
    free(block);
    if (rc) proxy_error(px, "NaN snapshot", rc);
    atomic_store(&px->is_nan_sent, 1);
}

static void proxy_inject(Proxy *px)
{
    frames_announce(&px->sub, px->run_id, px->epoch);
    frames_grant(&px->lease, px->run_id, px->epoch);
    frames_chunk(&px->snap, px->run_id, px->epoch);
    frames_send(px->a_pub, NULL, 0, &px->sub, px->error, sizeof px->error);
    frames_send(px->a_lease, px->lease_peer, px->lease_peer_len, &px->lease, px->error,
                sizeof px->error);
    frames_send(px->a_snap, px->snap_peer, px->snap_peer_len, &px->snap, px->error,
                sizeof px->error);
    px->is_nan_armed = true;
    atomic_store(&px->is_injected, 1);
}

/* Takes what waits on one socket and passes it on. */
static void proxy_pump(Proxy *px, WireSock *from)
{
    for (int i = 0; i < 64; i++) {
        WireMsg m;
        int     rc = wire_recv(from, 0, &m);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return;
        if (rc) {
            if (rc == ERR_IO) proxy_error(px, wire_sock_name(from), rc);
            continue;
        }
        const void *data = wire_msg_data(&m);
        size_t      len = wire_msg_size(&m);
        if (from == px->a_lease) {
            memcpy(px->lease_peer, m.peer, m.peer_len);
            px->lease_peer_len = m.peer_len;
            proxy_forward(px, px->l_lease, NULL, 0, &m);
        } else if (from == px->a_snap) {
            memcpy(px->snap_peer, m.peer, m.peer_len);
            px->snap_peer_len = m.peer_len;
            Rlhf__SnapshotRequest *req = NULL;
            if (px->is_nan_armed && wire_decode(&rlhf__snapshot_request__descriptor, data, len,
                                                NULL, (ProtobufCMessage **)&req, NULL) == 0) {
                px->is_nan_armed = false;
                proxy_send_nan_snapshot(px, req);
                protobuf_c_message_free_unpacked(&req->base, NULL);
                wire_msg_close(&m);
            } else {
                proxy_forward(px, px->l_snap, NULL, 0, &m);
            }
        } else if (from == px->l_lease) {
            Rlhf__LeaseGrant *g = NULL;
            if (wire_decode(&rlhf__lease_grant__descriptor, data, len, NULL,
                            (ProtobufCMessage **)&g, NULL) == 0) {
                snprintf(px->run_id, sizeof px->run_id, "%s", g->run_id);
                px->epoch = g->epoch;
                protobuf_c_message_free_unpacked(&g->base, NULL);
            }
            proxy_forward(px, px->a_lease, px->lease_peer, px->lease_peer_len, &m);
        } else if (from == px->l_snap) {
            Rlhf__WeightChunk *ch = NULL;
            if (wire_decode(&rlhf__weight_chunk__descriptor, data, len, NULL,
                            (ProtobufCMessage **)&ch, NULL) == 0) {
                if (ch->chunk_index == 0 && ch->config_json[0] && !px->config_json) {
                    px->config_json = xstrdup(ch->config_json);
                    px->total_bytes = ch->total_bytes;
                }
                protobuf_c_message_free_unpacked(&ch->base, NULL);
            }
            proxy_forward(px, px->a_snap, px->snap_peer, px->snap_peer_len, &m);
        } else {
            proxy_forward(px, px->a_pub, NULL, 0, &m);
        }
    }
}

static void *proxy_main(void *arg)
{
    Proxy       *px = arg;
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    o.immediate = false;
    o.sndtimeo_ms = 2000;
    px->a_lease = wire_sock_new(px->zctx, ZMQ_ROUTER, "proxy-lease", &o);
    px->a_pub = wire_sock_new(px->zctx, ZMQ_PUB, "proxy-weights", &o);
    px->a_snap = wire_sock_new(px->zctx, ZMQ_ROUTER, "proxy-snapshot", &o);
    px->l_lease = wire_sock_new(px->zctx, ZMQ_DEALER, "proxy-l-lease", &o);
    px->l_sub = wire_sock_new(px->zctx, ZMQ_SUB, "proxy-l-weights", &o);
    px->l_snap = wire_sock_new(px->zctx, ZMQ_DEALER, "proxy-l-snapshot", &o);
    int rc = px->a_lease && px->a_pub && px->a_snap && px->l_lease && px->l_sub && px->l_snap
                 ? 0
                 : ERR_IO;
    if (!rc) rc = wire_bind(px->a_lease, px->ep_lease);
    if (!rc) rc = wire_bind(px->a_pub, px->ep_weights);
    if (!rc) rc = wire_bind(px->a_snap, px->ep_snap);
    if (!rc) rc = wire_connect(px->l_lease, px->ep_l_lease);
    if (!rc) rc = wire_connect(px->l_sub, px->ep_l_weights);
    if (!rc) rc = wire_connect(px->l_snap, px->ep_l_snap);
    if (rc) proxy_error(px, "sockets", rc);
    atomic_store(&px->is_ready, rc ? -1 : 1);
    WireSock *in[5] = {px->a_lease, px->a_snap, px->l_lease, px->l_snap, px->l_sub};
    while (!rc && !atomic_load(&px->stop)) {
        zmq_pollitem_t items[5];
        for (int i = 0; i < 5; i++)
            items[i] = (zmq_pollitem_t){.socket = wire_sock_zmq(in[i]), .events = ZMQ_POLLIN};
        if (zmq_poll(items, 5, 10) < 0 && zmq_errno() != EINTR) {
            proxy_error(px, "zmq_poll", ERR_IO);
            break;
        }
        for (int i = 0; i < 5; i++)
            if (items[i].revents & ZMQ_POLLIN) proxy_pump(px, in[i]);
        if (atomic_load(&px->want_inject) && !atomic_load(&px->is_injected) && px->lease_peer_len &&
            px->snap_peer_len && px->config_json && px->run_id[0])
            proxy_inject(px);
    }
    WireSock **all[6] = {&px->a_lease, &px->a_pub, &px->a_snap,
                         &px->l_lease, &px->l_sub, &px->l_snap};
    for (int i = 0; i < 6; i++) wire_sock_free(all[i]);
    return NULL;
}

/* The totals of the learner's last status line ("| rejects lease L results
 * R snapshot S"); false before the first. */
static bool learner_rejects(const Proc *p, long long *lease, long long *results,
                            long long *snapshot)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = testcl_find_last(text, "| rejects lease ");
    bool        ok = last && sscanf(last, "| rejects lease %lld results %lld snapshot %lld", lease,
                                    results, snapshot) == 3;
    free(text);
    return ok;
}

/* The reasons of the actor's last status line ("rejects N (reasons)"). */
static bool actor_rejects(const Proc *p, long long *total, char *reasons, size_t cap)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = testcl_find_last(text, "; rejects ");
    char        buf[256] = "";
    bool        ok = last && sscanf(last, "; rejects %lld (%255[^)])", total, buf) == 2;
    if (ok) snprintf(reasons, cap, "%s", buf);
    free(text);
    return ok;
}

/* Checks that p's log holds "rejected WHAT: REASON" for every frame of s
 * (WHAT is "frame" for the oversized ones wire_recv refuses). */
static void expect_logged(TestCl *c, const Proc *p, const FrameSet *s, const char *what)
{
    for (int i = 0; i < s->n; i++) {
        char want[128];
        snprintf(want, sizeof want, "rejected %s: %s: ", s->f[i].data ? what : "frame",
                 wire_reason_name(s->f[i].reason));
        if (s->f[i].is_semantic) continue; /* logged under its own name, checked by the caller */
        EXPECT(proc_output_has(p, want), "%s's log lacks \"%s\" (%s frame '%s')", proc_name(p),
               want, s->socket, s->f[i].what);
    }
}

int cluster_hostile_selftest(bool verbose)
{
    /* A lone actor that runs ahead of its reward server is refused now and
     * then as over its lease credit, a reject of the lease socket: counting
     * every reject exactly needs a credit it never reaches
     * (tests/hostile_peer_test.c tests the credit). */
    const TestClRun o = {.steps = 40,
                         .ckpt_every = 0,
                         .max_staleness = 2,
                         .batch_groups = 4,
                         .extra = {"--lease-credit=1000"}};
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "hostile", verbose, HOSTILE_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);
    /* The proxy's lease, weights and snapshot sockets, for the actor. */
    int px_port = testcl_ports(&c, 3);
    if (!px_port) return testcl_finish(&c);
    char ep_px[3][64];
    for (int i = 0; i < 3; i++)
        snprintf(ep_px[i], sizeof ep_px[i], "tcp://127.0.0.1:%d", px_port + i);

    void        *zctx = zmq_ctx_new();
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false; /* queue until connected */
    so.sndtimeo_ms = 5000;
    WireSock   *t_lease = wire_sock_new(zctx, ZMQ_DEALER, "test-lease", &so);
    WireSock   *t_snap = wire_sock_new(zctx, ZMQ_DEALER, "test-snapshot", &so);
    WireSock   *t_results = wire_sock_new(zctx, ZMQ_PUSH, "test-results", &so);
    WireSock   *t_samples = wire_sock_new(zctx, ZMQ_PUSH, "test-samples", &so);
    WireSnapRx *rx = wire_snap_rx_new(NULL, (size_t)1 << 26);
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    Proxy       px = {.zctx = zctx,
                      .ep_lease = ep_px[0],
                      .ep_weights = ep_px[1],
                      .ep_snap = ep_px[2],
                      .ep_l_lease = c.ep_lease,
                      .ep_l_weights = c.ep_weights,
                      .ep_l_snap = c.ep_snap};
    bool        is_proxy = false;
    FrameSet    f_lease = {0}, f_snap = {0}, f_results = {0}, f_samples = {0};
    char        run_id[WIRE_MAX_NAME + 1] = "";
    int         errs_lease = 0, errs_snap = 0;
    if (!EXPECT(t_lease && t_snap && t_results && t_samples && tok &&
                    !wire_connect(t_lease, c.ep_lease) && !wire_connect(t_snap, c.ep_snap) &&
                    !wire_connect(t_results, c.ep_results) &&
                    !wire_connect(t_samples, c.ep_samples),
                "the test's sockets"))
        goto out;

    /* The run's identity, from a snapshot fetched the way an actor does. */
    if (!EXPECT(frames_fetch_snapshot(&c, t_snap, rx, &errs_snap), "no snapshot from the learner"))
        goto out;
    snprintf(run_id, sizeof run_id, "%s", wire_snap_rx_run_id(rx));
    uint64_t epoch = wire_snap_rx_epoch(rx);

    /* Every socket of the learner and the reward server gets its frames. */
    frames_lease_request(&f_lease);
    frames_snapshot_request(&f_snap);
    frames_group(&f_results, run_id, epoch, true);
    frames_group(&f_samples, run_id, epoch, false);
    WireLimits lim_req = {.vocab_size = tok_vocab_size(tok)};
    WireLimits lim_results = {.vocab_size = tok_vocab_size(tok), .run_id = run_id};
    frames_check(&f_lease, &rlhf__lease_request__descriptor, &lim_req, false);
    frames_check(&f_snap, &rlhf__snapshot_request__descriptor, &lim_req, false);
    frames_check(&f_results, &rlhf__scored_group__descriptor, &lim_results, false);
    frames_check(&f_samples, &rlhf__sampled_group__descriptor, &lim_req, false);
    FramesGroup g;
    frames_group_init(&g, run_id, epoch);
    ProtobufCMessage *ok_msg = NULL;
    size_t            ok_len;
    uint8_t          *ok_buf = wire_fixture_pack(&g.scored.base, &ok_len);
    EXPECT(wire_decode(&rlhf__scored_group__descriptor, ok_buf, ok_len, &lim_results, &ok_msg,
                       NULL) == 0,
           "the unspoilt group does not pass the wire checks");
    if (ok_msg) protobuf_c_message_free_unpacked(ok_msg, NULL);
    free(ok_buf);
    char     want_lease[256], want_snap[256], want_results[256], want_samples[256];
    uint64_t n_lease = frames_expected((const FrameSet *[]){&f_lease}, 1, 0, want_lease, 256);
    uint64_t n_snap = frames_expected((const FrameSet *[]){&f_snap}, 1, 0, want_snap, 256);
    uint64_t n_results = frames_expected((const FrameSet *[]){&f_results}, 1, 0, want_results, 256);
    frames_expected((const FrameSet *[]){&f_samples}, 1, 0, want_samples, 256);
    char send_error[256] = "";
    frames_send(t_lease, NULL, 0, &f_lease, send_error, sizeof send_error);
    frames_send(t_snap, NULL, 0, &f_snap, send_error, sizeof send_error);
    frames_send(t_results, NULL, 0, &f_results, send_error, sizeof send_error);
    frames_send(t_samples, NULL, 0, &f_samples, send_error, sizeof send_error);
    EXPECT(!send_error[0], "%s", send_error);
    testcl_note(&c, "sent %d + %d + %d frames to the learner, %d to the reward server", f_lease.n,
                f_snap.n, f_results.n, f_samples.n);

    /* Each refused request is answered with an ErrorReply, and the next good
     * one is served as before. */
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.actor_id = FRAMES_ID;
    req.max_prompts = 0; /* a keep-alive: an answer without work */
    EXPECT(wire_send(t_lease, &req.base, 0) == 0, "lease request not sent");
    Rlhf__LeaseGrant *grant = (Rlhf__LeaseGrant *)frames_recv_after_errors(
        &c, t_lease, &rlhf__lease_grant__descriptor, 15.0, &errs_lease);
    EXPECT(grant && grant->n_prompts == 0 && !strcmp(grant->run_id, run_id),
           "no lease grant after the hostile lease requests");
    if (grant) protobuf_c_message_free_unpacked(&grant->base, NULL);
    int errs0 = errs_snap;
    EXPECT(frames_fetch_snapshot(&c, t_snap, rx, &errs_snap),
           "no snapshot after the hostile snapshot requests");
    errs_snap -= errs0;
    EXPECT(errs_lease == f_lease.n - 1 && errs_snap == f_snap.n - 1,
           "ErrorReplies: %d on lease, %d on snapshot, expected %d and %d (all but the "
           "oversized frame, which never reaches the decoder)",
           errs_lease, errs_snap, f_lease.n - 1, f_snap.n - 1);

    /* The daemons' own counts, from their status lines. */
    long long l = -1, r = -1, sn = -1;
    double    t0 = testcl_now();
    while (!(learner_rejects(learner, &l, &r, &sn) && l == (long long)n_lease &&
             r == (long long)n_results && sn == (long long)n_snap) &&
           testcl_now() - t0 < 20.0 && !testcl_out_of_time(&c))
        testcl_sleep_ms(50);
    EXPECT(l == (long long)n_lease && r == (long long)n_results && sn == (long long)n_snap,
           "learner status line: rejects lease %lld results %lld snapshot %lld, expected "
           "%" PRIu64 " %" PRIu64 " %" PRIu64,
           l, r, sn, n_lease, n_results, n_snap);
    long long scored = -1, received = -1;
    char      reasons[256] = "";
    t0 = testcl_now();
    while (!(testcl_reward_status(reward, &scored, &received, reasons, sizeof reasons) &&
             !strcmp(reasons, want_samples)) &&
           testcl_now() - t0 < 20.0 && !testcl_out_of_time(&c))
        testcl_sleep_ms(50);
    EXPECT(!strcmp(reasons, want_samples) && scored == 0,
           "reward status line: scored %lld, rejects '%s', expected 0 and '%s'", scored, reasons,
           want_samples);
    testcl_note(&c, "learner counts lease %lld, results %lld, snapshot %lld; reward: %s", l, r, sn,
                reasons);

    /* Now the actor, behind the proxy, and a run to the end. */
    if (!EXPECT(pthread_create(&px.thread, NULL, proxy_main, &px) == 0, "pthread_create")) goto out;
    is_proxy = true;
    while (atomic_load(&px.is_ready) == 0) testcl_sleep_ms(5);
    if (!EXPECT(atomic_load(&px.is_ready) > 0, "%s", px.error)) goto out;
    Proc *actor = testcl_actor_via(&c, "actor-1", 8, false, ep_px[0], ep_px[1], ep_px[2]);
    if (!testcl_start(&c, actor)) goto out;
    if (!testcl_wait_step(&c, learner, 2, 40.0)) goto out;
    atomic_store(&px.want_inject, 1);
    t0 = testcl_now();
    while (!atomic_load(&px.is_nan_sent) && proc_is_running(learner) && testcl_now() - t0 < 20.0)
        testcl_sleep_ms(20);
    EXPECT(atomic_load(&px.is_injected) && atomic_load(&px.is_nan_sent),
           "the proxy did not get to send its frames (injected %d, NaN snapshot %d)",
           atomic_load(&px.is_injected), atomic_load(&px.is_nan_sent));
    int64_t step_injected = testcl_step(&c);
    testcl_wait_done(&c, learner, 60.0);
    EXPECT(step_injected < o.steps, "the run was over before the actor's frames");

    /* The run completed with every count in place. */
    json_t        *metrics = testcl_check_metrics(&c);
    TestClCounters k;
    json_t        *sum = testcl_check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(testcl_jint(sum, "rejects_lease") == (int64_t)n_lease &&
                   testcl_jint(sum, "rejects_results") == (int64_t)n_results &&
                   testcl_jint(sum, "rejects_snapshot") == (int64_t)n_snap,
               "summary: rejects lease %" PRId64 " results %" PRId64 " snapshot %" PRId64
               ", expected %" PRIu64 " %" PRIu64 " %" PRIu64,
               testcl_jint(sum, "rejects_lease"), testcl_jint(sum, "rejects_results"),
               testcl_jint(sum, "rejects_snapshot"), n_lease, n_results, n_snap);
    }
    size_t  n = json_array_size(metrics);
    json_t *rej = n ? json_object_get(json_array_get(metrics, n - 1), "rejects") : NULL;
    struct {
        const char *sock, *want;
    } per[3] = {{"lease", want_lease}, {"results", want_results}, {"snapshot", want_snap}};
    for (int i = 0; i < 3; i++) {
        const char *got =
            json_string_value(json_object_get(json_object_get(rej, per[i].sock), "reasons"));
        EXPECT(got && !strcmp(got, per[i].want),
               "last metrics record: %s rejects '%s', expected '%s'", per[i].sock,
               got ? got : "(none)", per[i].want);
        testcl_note(&c, "learner %s rejects: %s", per[i].sock, got ? got : "(none)");
    }
    json_decref(metrics);
    json_decref(sum);
    expect_logged(&c, learner, &f_lease, "LeaseRequest");
    expect_logged(&c, learner, &f_snap, "SnapshotRequest");
    expect_logged(&c, learner, &f_results, "ScoredGroup");

    testcl_end(&c, reward);
    EXPECT(testcl_reward_status(reward, &scored, &received, reasons, sizeof reasons) &&
               !strcmp(reasons, want_samples) && scored > 0,
           "reward's last status line: scored %lld, rejects '%s', expected some and '%s'", scored,
           reasons, want_samples);
    testcl_note(&c, "reward server: scored %lld groups of %lld frames received, rejects %s", scored,
                received, reasons);
    expect_logged(&c, reward, &f_samples, "SampledGroup");

    /* The actor, still serving until told to stop, counted all of its frames. */
    atomic_store(&px.stop, 1);
    pthread_join(px.thread, NULL);
    is_proxy = false;
    EXPECT(!px.error[0], "%s", px.error);
    testcl_end(&c, actor);
    if (atomic_load(&px.is_injected)) {
        WireLimits no_lim = {0};
        frames_check(&px.sub, &rlhf__weight_announce__descriptor, &no_lim, true);
        frames_check(&px.lease, &rlhf__lease_grant__descriptor, &no_lim, true);
        frames_check(&px.snap, &rlhf__weight_chunk__descriptor, &no_lim, true);
        char      want_actor[256], got_actor[256] = "";
        long long got_total = -1;
        uint64_t n_actor = frames_expected((const FrameSet *[]){&px.sub, &px.lease, &px.snap}, 3, 1,
                                           want_actor, sizeof want_actor);
        EXPECT(actor_rejects(actor, &got_total, got_actor, sizeof got_actor) &&
                   got_total == (long long)n_actor && !strcmp(got_actor, want_actor),
               "actor's last status line: rejects %lld (%s), expected %" PRIu64 " (%s)", got_total,
               got_actor, n_actor, want_actor);
        testcl_note(&c, "actor: rejects %lld (%s); %d frames forwarded by the proxy", got_total,
                    got_actor, atomic_load(&px.forwarded));
        expect_logged(&c, actor, &px.sub, "WeightAnnounce");
        expect_logged(&c, actor, &px.lease, "LeaseGrant");
        expect_logged(&c, actor, &px.snap, "WeightChunk");
        EXPECT(proc_output_has(actor, "rejected LeaseGrant: bad_tokens: "),
               "the actor's log lacks the grant of token 100000");
        EXPECT(proc_output_has(actor, "rejected snapshot: nonfinite: "),
               "the actor's log lacks the NaN snapshot");
    }

out:
    if (is_proxy) {
        atomic_store(&px.stop, 1);
        pthread_join(px.thread, NULL);
    }
    frames_free(&px.sub);
    frames_free(&px.lease);
    frames_free(&px.snap);
    free(px.config_json);
    frames_free(&f_lease);
    frames_free(&f_snap);
    frames_free(&f_results);
    frames_free(&f_samples);
    tok_free(&tok);
    wire_snap_rx_free(&rx);
    wire_sock_free(&t_lease);
    wire_sock_free(&t_snap);
    wire_sock_free(&t_results);
    wire_sock_free(&t_samples);
    EXPECT(zmq_ctx_term(zctx) == 0, "zmq_ctx_term: %s", zmq_strerror(zmq_errno()));
    return testcl_finish(&c);
}
