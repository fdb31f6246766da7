#include "tests/test_list.h"
#include "common/net/zsock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/wire_fixture.h"

enum { N = WIRE_FIXTURE_N, T = WIRE_FIXTURE_T, VOCAB = WIRE_FIXTURE_VOCAB };

/* Sends m on tx, receives it on rx as its own type, and checks it decodes to the same bytes. */
static void roundtrip_one(WireSock *tx, WireSock *rx, const ProtobufCMessage *m,
                          const WireLimits *lim)
{
    const char *name = m->descriptor->short_name;
    int         rc = wire_send(tx, m, 0);
    if (!EXPECT(rc == 0, "round trip %s: send returned %d (%s), expected 0", name, rc, err_str(rc)))
        return;
    WireMsg           msg;
    ProtobufCMessage *got = NULL;
    WireReject        rej;
    rc = wire_recv_decode(rx, 2000, m->descriptor, lim, &msg, &got, &rej);
    if (!EXPECT(rc == 0, "round trip %s: receive returned %s (%s), expected 0", name, err_str(rc),
                rc == ERR_TIMEOUT ? "" : rej.why))
        return;
    EXPECT(wire_fixture_same(m, got), "round trip %s: received message packs to other bytes", name);
    protobuf_c_message_free_unpacked(got, NULL);
    wire_msg_close(&msg);
}

/* Every message type through a PUSH/PULL pair at endpoint (bound by the PULL). */
static void test_roundtrips(void *zctx, const char *endpoint, bool verbose)
{
    WireSock *pull, *push;
    char      ep[256];
    if (!EXPECT(wire_fixture_pair(zctx, endpoint, ZMQ_PULL, "rt-pull", &pull, ZMQ_PUSH, "rt-push",
                                  &push, ep, sizeof ep) == 0,
                "round trip sockets at %s", endpoint))
        return;
    if (verbose) printf("  round trips over %s\n", ep);
    WireLimits       lim = {.vocab_size = VOCAB, .run_id = "run-a"};
    WireFixtureGroup t;
    wire_fixture_group_init(&t);

    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.run_id = (char *)"run-a";
    lr.actor_id = (char *)"actor-0";
    lr.max_prompts = 8;
    lr.policy_version = 3;
    lr.epoch = 2;
    roundtrip_one(push, pull, &lr.base, &lim);

    Rlhf__Prompt    *prompts[2] = {&t.prompt, &t.prompt};
    Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
    lg.version = 1;
    lg.run_id = (char *)"run-a";
    lg.epoch = 2;
    lg.lease_id = 77;
    lg.deadline_unix_ms = 1700000000000;
    lg.min_policy_version = 3;
    lg.group_size = 4;
    lg.sampling = &t.sp;
    lg.prompts = prompts;
    lg.n_prompts = 2;
    roundtrip_one(push, pull, &lg.base, &lim);

    roundtrip_one(push, pull, &t.g.base, &lim);

    t.component.name = (char *)"format";
    t.component.value = 0.5f;
    for (int i = 0; i < N; i++) t.scores[i].reward = (float)i;
    roundtrip_one(push, pull, &t.scored.base, &lim);

    Rlhf__WeightAnnounce wa = RLHF__WEIGHT_ANNOUNCE__INIT;
    wa.version = 1;
    wa.run_id = (char *)"run-a";
    wa.epoch = 2;
    wa.policy_version = 5;
    wa.total_bytes = 4096;
    roundtrip_one(push, pull, &wa.base, &lim);

    Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
    sr.version = 1;
    sr.run_id = (char *)"run-a";
    sr.actor_id = (char *)"actor-0";
    sr.have_policy_version = 4;
    sr.have_epoch = 2;
    roundtrip_one(push, pull, &sr.base, &lim);

    float             w[4] = {1, 2, 3, 4};
    Rlhf__WeightChunk wc = RLHF__WEIGHT_CHUNK__INIT;
    wc.version = 1;
    wc.run_id = (char *)"run-a";
    wc.chunk_count = 1;
    wc.total_bytes = sizeof w;
    wc.data.data = (uint8_t *)w;
    wc.data.len = sizeof w;
    wc.config_json = (char *)"{\"dim\": 8}";
    wc.checksum = 0x0123456789abcdefull; /* any value: only the snapshot receiver checks it */
    roundtrip_one(push, pull, &wc.base, &lim);

    Rlhf__Heartbeat hb = RLHF__HEARTBEAT__INIT;
    hb.version = 1;
    hb.run_id = (char *)"run-a";
    hb.sender = (char *)"reward-0";
    hb.unix_ms = 123;
    roundtrip_one(push, pull, &hb.base, &lim);

    Rlhf__ErrorReply er = RLHF__ERROR_REPLY__INIT;
    er.version = 1;
    er.code = ERR_RANGE;
    er.reason = (char *)"no";
    roundtrip_one(push, pull, &er.base, &lim);

    uint64_t n_rej = wire_rejects_total(wire_sock_rejects(pull));
    EXPECT(n_rej == 0, "round trips over %s: %llu rejects, expected none", ep,
           (unsigned long long)n_rej);
    wire_sock_free(&push);
    wire_sock_free(&pull);
}

/* ROUTER/DEALER over tcp: the routing id comes back, replies reach the
 * sender, and an unknown peer is ERR_NOTFOUND. */
static void test_router(void *zctx, bool verbose)
{
    WireSock *router, *dealer;
    char      ep[256];
    if (!EXPECT(wire_fixture_pair(zctx, "tcp://127.0.0.1:*", ZMQ_ROUTER, "lease", &router,
                                  ZMQ_DEALER, "actor", &dealer, ep, sizeof ep) == 0,
                "router sockets"))
        return;
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = 1;
    lr.actor_id = (char *)"actor-7";
    lr.max_prompts = 2;
    EXPECT(wire_send(dealer, &lr.base, 0) == 0, "dealer send failed");
    WireMsg             m;
    Rlhf__LeaseRequest *got = NULL;
    int rc = wire_recv_decode(router, 2000, &rlhf__lease_request__descriptor, NULL, &m,
                              (ProtobufCMessage **)&got, NULL);
    EXPECT(rc == 0 && m.peer_len > 0 && got && !strcmp(got->actor_id, "actor-7"),
           "router receive: rc %d, peer id of %zu bytes, actor '%s', expected 0, > 0 and actor-7",
           rc, rc == 0 ? m.peer_len : 0, got ? got->actor_id : "(none)");
    if (rc == 0) {
        Rlhf__LeaseGrant lg = RLHF__LEASE_GRANT__INIT;
        lg.version = 1;
        lg.lease_id = 5;
        lg.retry_after_ms = 50;
        EXPECT(wire_send_to(router, m.peer, m.peer_len, &lg.base, 0) == 0, "reply failed");
        WireMsg           r;
        Rlhf__LeaseGrant *g = NULL;
        rc = wire_recv_decode(dealer, 2000, &rlhf__lease_grant__descriptor, NULL, &r,
                              (ProtobufCMessage **)&g, NULL);
        EXPECT(rc == 0 && g && g->lease_id == 5 && g->retry_after_ms == 50,
               "dealer gets the reply: rc %d, expected 0 with lease 5 and retry 50 ms", rc);
        if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
        wire_msg_close(&r);
        protobuf_c_message_free_unpacked(&got->base, NULL);
        wire_msg_close(&m);
    }
    rc = wire_send_to(router, "nobody", 6, &lr.base, 0);
    EXPECT(rc == ERR_NOTFOUND, "send to an unknown peer: %d, expected ERR_NOTFOUND", rc);
    WireMsg idle;
    rc = wire_recv(dealer, 10, &idle);
    EXPECT(rc == ERR_TIMEOUT, "receive when idle: %d, expected ERR_TIMEOUT", rc);
    if (verbose) printf("  router/dealer over %s ok\n", ep);
    wire_sock_free(&dealer);
    wire_sock_free(&router);
}

/* Over tcp a frame just over WIRE_MAX_FRAME reaches wire_recv, which refuses
 * and counts it; one over WIRE_MAX_FRAME_RECV is dropped by libzmq
 * (ZMQ_MAXMSGSIZE) with the connection and never reaches it; the sender
 * reconnects and later frames pass. */
static void test_rejects_tcp(void *zctx, const uint8_t *good, size_t len, const WireLimits *lim)
{
    WireSock *tpull, *tpush;
    if (!EXPECT(wire_fixture_pair(zctx, "tcp://127.0.0.1:*", ZMQ_PULL, "tcp-samples", &tpull,
                                  ZMQ_PUSH, "tcp-actor", &tpush, NULL, 0) == 0,
                "tcp reject sockets"))
        return;
    size_t   big_len = WIRE_MAX_FRAME + 1;
    uint8_t *big = xcalloc(big_len, 1);
    EXPECT(wire_send_raw(tpush, NULL, 0, big, big_len, 0) == 0, "tcp big send failed");
    free(big);
    WireMsg m;
    int     rc = wire_recv(tpull, 10000, &m);
    EXPECT(rc == ERR_RANGE && wire_rejects_get(wire_sock_rejects(tpull), WIRE_REJ_OVERSIZED) == 1,
           "tcp oversized frame: rc %d, expected ERR_RANGE and one oversized reject", rc);
    wire_msg_close(&m);
    size_t huge_len = WIRE_MAX_FRAME_RECV + 1;
    big = xcalloc(huge_len, 1);
    EXPECT(wire_send_raw(tpush, NULL, 0, big, huge_len, 0) == 0, "tcp huge send failed");
    free(big);
    rc = wire_recv(tpull, 300, &m);
    EXPECT(rc == ERR_TIMEOUT,
           "tcp frame over WIRE_MAX_FRAME_RECV: rc %d, expected ERR_TIMEOUT (dropped by libzmq)",
           rc);
    wire_msg_close(&m);
    rc = ERR_AGAIN;
    for (int tries = 0; tries < 20 && rc; tries++) rc = wire_send_raw(tpush, NULL, 0, good, len, 0);
    Rlhf__SampledGroup *g = NULL;
    rc = wire_recv_decode(tpull, 3000, &rlhf__sampled_group__descriptor, lim, &m,
                          (ProtobufCMessage **)&g, NULL);
    EXPECT(rc == 0, "tcp good frame after oversized: rc %d, expected 0", rc);
    if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
    wire_msg_close(&m);
    wire_sock_free(&tpush);
    wire_sock_free(&tpull);
}

/* Every kind of bad frame is refused with its counter, and good frames still
 * get through afterwards. */
static void test_rejects(void *zctx, bool verbose)
{
    WireSock *pull, *push;
    if (!EXPECT(wire_fixture_pair(zctx, "inproc://wire-rejects", ZMQ_PULL, "samples", &pull,
                                  ZMQ_PUSH, "actor", &push, NULL, 0) == 0,
                "reject sockets"))
        return;
    WireLimits       lim = {.vocab_size = VOCAB, .run_id = "run-a"};
    WireFixtureGroup t;
    size_t           len;
    uint8_t         *good;
    wire_fixture_group_init(&t);
    good = wire_fixture_pack(&t.g.base, &len);

    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof garbage);
    wire_send_raw(push, NULL, 0, garbage, sizeof garbage, 0);
    wire_send_raw(push, NULL, 0, good, len / 2, 0); /* truncated */
    size_t   big_len = WIRE_MAX_FRAME + 1;
    uint8_t *big = xcalloc(big_len, 1);
    wire_send_raw(push, NULL, 0, big, big_len, 0);
    free(big);
    zmq_send(wire_sock_zmq(push), "a", 1, ZMQ_SNDMORE); /* two frames */
    zmq_send(wire_sock_zmq(push), "b", 1, 0);
    t.g.version = 7;
    wire_send(push, &t.g.base, 0);
    wire_fixture_group_init(&t);
    t.toks[0][0] = VOCAB + 5;
    wire_send(push, &t.g.base, 0);
    wire_fixture_group_init(&t);
    t.lb[2][3] = NAN;
    wire_send(push, &t.g.base, 0);
    wire_fixture_group_init(&t);
    t.comp[0].n_policy_version = 2;
    wire_send(push, &t.g.base, 0);
    wire_fixture_group_init(&t);
    t.g.run_id = (char *)"run-z";
    wire_send(push, &t.g.base, 0);
    wire_fixture_group_init(&t);
    t.ls[1][0] = 3.0f;
    wire_send(push, &t.g.base, 0);
    wire_send_raw(push, NULL, 0, good, len, 0);

    int want_ok = 1, got_ok = 0, got_bad = 0;
    for (int i = 0; i < 11; i++) {
        WireMsg             m;
        Rlhf__SampledGroup *g = NULL;
        int rc = wire_recv_decode(pull, 2000, &rlhf__sampled_group__descriptor, &lim, &m,
                                  (ProtobufCMessage **)&g, NULL);
        if (rc == ERR_TIMEOUT) break;
        if (rc == 0) {
            got_ok++;
            EXPECT(g->n_completions == N && g->completions[1]->n_tokens == T,
                   "good group after bad ones: %zu completions, %zu tokens, expected %d and %d",
                   g->n_completions, g->completions[1]->n_tokens, N, T);
            protobuf_c_message_free_unpacked(&g->base, NULL);
            wire_msg_close(&m);
        } else {
            got_bad++;
        }
    }
    const WireRejects *c = wire_sock_rejects(pull);
    char               line[256];
    wire_rejects_format(c, line, sizeof line);
    if (verbose) printf("  rejects: %s (%d bad, %d good)\n", line, got_bad, got_ok);
    EXPECT(got_ok == want_ok && got_bad == 10, "%d bad frames and %d good, expected 10 and 1",
           got_bad, got_ok);
    static const WireReason want[] = {WIRE_REJ_OVERSIZED,  WIRE_REJ_UNKNOWN,   WIRE_REJ_BAD_VERSION,
                                      WIRE_REJ_BAD_TOKENS, WIRE_REJ_NONFINITE, WIRE_REJ_BAD_SHAPE,
                                      WIRE_REJ_BAD_RUN,    WIRE_REJ_BAD_VALUE};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        EXPECT(wire_rejects_get(c, want[i]) == 1, "%s counted %llu times, expected once",
               wire_reason_name(want[i]), (unsigned long long)wire_rejects_get(c, want[i]));
    EXPECT(wire_rejects_get(c, WIRE_REJ_GARBAGE) == 2, "garbage and truncated: %llu, expected 2",
           (unsigned long long)wire_rejects_get(c, WIRE_REJ_GARBAGE));
    EXPECT(wire_rejects_total(c) == 10, "%llu rejects in all, expected 10",
           (unsigned long long)wire_rejects_total(c));
    EXPECT(strstr(line, "garbage=2") && strstr(line, "bad_tokens=1"),
           "format line '%s', expected garbage=2 and bad_tokens=1", line);

    test_rejects_tcp(zctx, good, len, &lim);
    free(good);
    wire_sock_free(&push);
    wire_sock_free(&pull);
}

/* wire_send_msg forwards a received frame untouched, and a socket can count
 * into counters the caller owns. */
static void test_forward(void *zctx, bool verbose)
{
    WireSock   *in_push = NULL, *in_pull = NULL, *out_push = NULL, *out_pull = NULL;
    WireRejects ext;
    wire_rejects_init(&ext);
    if (!EXPECT(wire_fixture_pair(zctx, "inproc://fw-in", ZMQ_PULL, "fw-in-pull", &in_pull,
                                  ZMQ_PUSH, "fw-in-push", &in_push, NULL, 0) == 0 &&
                    wire_fixture_pair(zctx, "inproc://fw-out", ZMQ_PULL, "fw-out-pull", &out_pull,
                                      ZMQ_PUSH, "fw-out-push", &out_push, NULL, 0) == 0,
                "forward sockets"))
        goto out;
    wire_sock_use_rejects(in_pull, &ext);
    EXPECT(wire_sock_rejects(in_pull) == &ext, "wire_sock_rejects ignores external counters");
    WireFixtureGroup t;
    wire_fixture_group_init(&t);
    uint8_t junk[3] = {0xff, 0xff, 0xff};
    wire_send_raw(in_push, NULL, 0, junk, sizeof junk, 0);
    wire_send(in_push, &t.g.base, 0);
    WireMsg           m;
    ProtobufCMessage *got = NULL;
    int               rc =
        wire_recv_decode(in_pull, 2000, &rlhf__sampled_group__descriptor, NULL, &m, &got, NULL);
    EXPECT(rc == ERR_FORMAT && wire_rejects_get(&ext, WIRE_REJ_GARBAGE) == 1,
           "junk: rc %d, %llu garbage in external counters, expected ERR_FORMAT and 1", rc,
           (unsigned long long)wire_rejects_get(&ext, WIRE_REJ_GARBAGE));
    rc = wire_recv(in_pull, 2000, &m);
    EXPECT(rc == 0, "receive to forward: rc %d, expected 0", rc);
    if (rc == 0) {
        EXPECT(wire_send_msg(out_push, NULL, 0, &m, 0) == 0 && !m.is_open,
               "forward failed or left the message open");
        wire_msg_close(&m); /* a no-op: already closed */
        rc = wire_recv_decode(out_pull, 2000, &rlhf__sampled_group__descriptor, NULL, &m, &got,
                              NULL);
        EXPECT(rc == 0 && got && wire_fixture_same(got, &t.g.base),
               "forwarded group: rc %d, expected 0 and the same bytes", rc);
        if (got) protobuf_c_message_free_unpacked(got, NULL);
        wire_msg_close(&m);
    }
    if (verbose) printf("  forward and external counters ok\n");
out:
    wire_sock_free(&in_push);
    wire_sock_free(&in_pull);
    wire_sock_free(&out_push);
    wire_sock_free(&out_pull);
}

int zsock_selftest(bool verbose)
{
    void *zctx = zmq_ctx_new();
    if (!EXPECT(zctx != NULL, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()))) return expect_end();
    test_roundtrips(zctx, "inproc://wire-rt", verbose);
    test_roundtrips(zctx, "tcp://127.0.0.1:*", verbose);
    test_router(zctx, verbose);
    test_rejects(zctx, verbose);
    test_forward(zctx, verbose);
    zmq_ctx_term(zctx);
    return expect_end();
}
