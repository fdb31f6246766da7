#include "tests/test_list.h"
#include "common/net/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/support/wire_fixture.h"

/* A block of n floats with a recognisable pattern. */
static float *make_block(size_t n, uint32_t seed)
{
    float *b = xmalloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = (float)((i * 2654435761u + seed) % 100003) * 1e-3f;
    return b;
}

/* Feeds c to rx; a refusal is counted in counts (as a daemon would) and the rc returned. */
static int accept_counted(WireSnapRx *rx, Rlhf__WeightChunk *c, WireRejects *counts,
                          WireReject *rej)
{
    int rc = wire_snap_rx_accept(rx, c, rej);
    if (rc < 0) wire_reject_note(counts, "snapshot_test", "WeightChunk", rej);
    return rc;
}

/* Expects a refusal with rc want_rc and reason want. */
static void expect_refused(int rc, const WireReject *rej, int want_rc, WireReason want,
                           const char *what)
{
    EXPECT(rc == want_rc && rej->reason == want, "%s: rc %d reason %s (%s), expected %d %s", what,
           rc, rc < 0 ? wire_reason_name(rej->reason) : "-", rc < 0 ? rej->why : "", want_rc,
           wire_reason_name(want));
}

/* Snapshot in memory: chunks out of order, duplicates, strays, corruption. */
static void test_rx(void *zctx, bool verbose)
{
    WireSock *pull, *push;
    if (!EXPECT(wire_fixture_pair(zctx, "inproc://wire-snap", ZMQ_PULL, "snap-pull", &pull,
                                  ZMQ_PUSH, "snap-push", &push, NULL, 0) == 0,
                "snapshot sockets"))
        return;
    enum { N_FLOATS = 250000 + 3, CHUNK = 256 << 10 }; /* 4 chunks, the last one short */
    size_t       bytes = (size_t)N_FLOATS * 4;
    float       *block = make_block(N_FLOATS, 1);
    WireSnapMeta meta = {
        .run_id = "run-a", .epoch = 1, .policy_version = 9, .config_json = "{\"dim\": 64}"};
    uint32_t count = wire_snap_chunk_count(bytes, CHUNK);
    EXPECT(count == 4, "chunk count %u, expected 4", count);
    int rc = wire_snap_send(push, NULL, 0, &meta, block, bytes, CHUNK);
    EXPECT(rc == 0, "snapshot send: rc %d, expected 0", rc);
    Rlhf__WeightChunk *ch[4] = {0};
    WireMsg            m;
    for (uint32_t i = 0; i < count && i < 4; i++) {
        rc = wire_recv_decode(pull, 2000, &rlhf__weight_chunk__descriptor, NULL, &m,
                              (ProtobufCMessage **)&ch[i], NULL);
        wire_msg_close(&m);
        if (!EXPECT(rc == 0, "receive chunk %u: rc %d, expected 0", i, rc)) goto out;
    }
    WireRejects rej_counts;
    wire_rejects_init(&rej_counts);
    WireSnapRx *rx = wire_snap_rx_new(NULL, bytes);
    WireReject  rej;
    /* Out of order: 3, 1, 0, 2. */
    int order[4] = {3, 1, 0, 2}, last = -99;
    for (int k = 0; k < 4; k++) last = wire_snap_rx_accept(rx, ch[order[k]], &rej);
    size_t      got_bytes = 0;
    const void *got = wire_snap_rx_data(rx, &got_bytes);
    EXPECT(last == 1 && got && got_bytes == bytes && !memcmp(got, block, bytes),
           "out-of-order snapshot: last rc %d, %zu bytes, expected 1 and %zu identical bytes", last,
           got_bytes, bytes);
    EXPECT(!strcmp(wire_snap_rx_config(rx), "{\"dim\": 64}") &&
               wire_snap_rx_policy_version(rx) == 9 && wire_snap_rx_epoch(rx) == 1 &&
               !strcmp(wire_snap_rx_run_id(rx), "run-a"),
           "snapshot meta: config '%s' v%llu epoch %llu run '%s', expected {\"dim\": 64} v9 "
           "epoch 1 run-a",
           wire_snap_rx_config(rx), (unsigned long long)wire_snap_rx_policy_version(rx),
           (unsigned long long)wire_snap_rx_epoch(rx), wire_snap_rx_run_id(rx));
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    expect_refused(rc, &rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "chunk after done");
    size_t taken_bytes;
    void  *taken = wire_snap_rx_take(rx, &taken_bytes);
    EXPECT(taken && taken_bytes == bytes && !memcmp(taken, block, bytes),
           "take: %zu bytes, expected the %zu of the block", taken ? taken_bytes : 0, bytes);
    free(taken);

    /* Duplicate, another version, a shifted offset. */
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    EXPECT(rc == 0, "first chunk: rc %d, expected 0", rc);
    rc = accept_counted(rx, ch[0], &rej_counts, &rej);
    expect_refused(rc, &rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "duplicate");
    ch[1]->policy_version = 10;
    rc = accept_counted(rx, ch[1], &rej_counts, &rej);
    expect_refused(rc, &rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "other version");
    ch[1]->policy_version = 9;
    ch[1]->offset += 4;
    rc = accept_counted(rx, ch[1], &rej_counts, &rej);
    expect_refused(rc, &rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "shifted offset");
    ch[1]->offset -= 4;
    uint32_t have, cnt;
    wire_snap_rx_progress(rx, &have, &cnt);
    EXPECT(have == 1 && cnt == 4, "progress after rejects %u/%u, expected 1/4", have, cnt);

    /* A corrupted byte: every chunk fits, the checksum refuses the block. */
    ch[2]->data.data[100] ^= 0x40;
    rc = 0;
    for (int k = 1; k < 4 && rc >= 0; k++) rc = accept_counted(rx, ch[k], &rej_counts, &rej);
    expect_refused(rc, &rej, ERR_MISMATCH, WIRE_REJ_CHECKSUM, "corrupt chunk");
    wire_snap_rx_progress(rx, &have, &cnt);
    EXPECT(have == 0 && !wire_snap_rx_is_complete(rx) && wire_snap_rx_data(rx, NULL) == NULL,
           "after a checksum failure %u chunks held, expected a reset receiver", have);
    ch[2]->data.data[100] ^= 0x40;
    EXPECT(wire_rejects_get(&rej_counts, WIRE_REJ_BAD_CHUNK) == 3 &&
               wire_rejects_get(&rej_counts, WIRE_REJ_CHECKSUM) == 1,
           "snapshot reject counters bad_chunk %llu checksum %llu, expected 3 and 1",
           (unsigned long long)wire_rejects_get(&rej_counts, WIRE_REJ_BAD_CHUNK),
           (unsigned long long)wire_rejects_get(&rej_counts, WIRE_REJ_CHECKSUM));

    /* Too big for the receiver's buffer. */
    WireSnapRx *small = wire_snap_rx_new(NULL, bytes - 4);
    rc = wire_snap_rx_accept(small, ch[0], &rej);
    expect_refused(rc, &rej, ERR_RANGE, WIRE_REJ_BAD_CHUNK, "over capacity");
    wire_snap_rx_free(&small);
    if (verbose) printf("  snapshot rx: out-of-order, duplicate, stray, corrupt, capacity ok\n");
    wire_snap_rx_free(&rx);
out:
    for (int i = 0; i < 4; i++)
        if (ch[i]) protobuf_c_message_free_unpacked(&ch[i]->base, NULL);
    free(block);
    wire_sock_free(&push);
    wire_sock_free(&pull);
}

/* A bf16 block: an odd count of 2-byte elements (not a multiple of 4 bytes),
 * its dtype carried by every chunk and checked across them; an unknown
 * dtype, and f32 blocks that are not whole floats, refused. */
static void test_bf16(void *zctx, bool verbose)
{
    WireSock *pull, *push;
    if (!EXPECT(wire_fixture_pair(zctx, "inproc://wire-snap-bf16", ZMQ_PULL, "bf16-pull", &pull,
                                  ZMQ_PUSH, "bf16-push", &push, NULL, 0) == 0,
                "bf16 snapshot sockets"))
        return;
    enum { N = 3001, CHUNK = 2048 }; /* 6002 bytes: 3 chunks, the last one short */
    uint16_t block[N];
    for (int i = 0; i < N; i++) block[i] = (uint16_t)(i * 40503u);
    WireSnapMeta meta = {.run_id = "run-h", .epoch = 2, .policy_version = 5, .dtype = 1};
    int          rc = wire_snap_send(push, NULL, 0, &meta, block, sizeof block, CHUNK);
    EXPECT(rc == 0, "bf16 snapshot send: rc %d, expected 0", rc);
    Rlhf__WeightChunk *ch[3] = {0};
    WireMsg            m;
    for (int i = 0; i < 3; i++) {
        rc = wire_recv_decode(pull, 2000, &rlhf__weight_chunk__descriptor, NULL, &m,
                              (ProtobufCMessage **)&ch[i], NULL);
        wire_msg_close(&m);
        if (!EXPECT(rc == 0, "receive bf16 chunk %d: rc %d", i, rc)) goto out;
    }
    WireSnapRx *rx = wire_snap_rx_new(NULL, sizeof block);
    WireReject  rej;
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    /* A chunk claiming another dtype does not join the snapshot. */
    ch[1]->dtype = RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_F32;
    int rc_mixed = wire_snap_rx_accept(rx, ch[1], &rej);
    expect_refused(rc_mixed, &rej, ERR_RANGE, WIRE_REJ_BAD_VALUE,
                   "an f32 chunk of 6002 bytes (not whole floats)");
    ch[1]->dtype = RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16;
    for (int k = 1; k < 3 && rc >= 0; k++) rc = wire_snap_rx_accept(rx, ch[k], &rej);
    size_t      got_bytes = 0;
    const void *got = wire_snap_rx_data(rx, &got_bytes);
    EXPECT(rc == 1 && got && got_bytes == sizeof block && !memcmp(got, block, sizeof block) &&
               wire_snap_rx_dtype(rx) == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16,
           "bf16 snapshot: rc %d, %zu bytes, dtype %d; expected 1, %zu identical bytes, bf16", rc,
           got_bytes, wire_snap_rx_dtype(rx), sizeof block);
    /* Another dtype of the same size mid-assembly is refused as another snapshot. */
    wire_snap_rx_reset(rx);
    ch[0]->total_bytes = ch[1]->total_bytes = 6000; /* whole floats now */
    ch[2]->data.len -= 2;
    rc = wire_snap_rx_accept(rx, ch[0], &rej);
    ch[1]->dtype = RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_F32;
    rc_mixed = wire_snap_rx_accept(rx, ch[1], &rej);
    expect_refused(rc_mixed, &rej, ERR_MISMATCH, WIRE_REJ_BAD_CHUNK, "a chunk of another dtype");
    /* Unknown dtypes are refused by the wire check. */
    ch[1]->dtype = (Rlhf__WeightDtype)7;
    rc = wire_check_weight_chunk(ch[1], NULL, &rej);
    expect_refused(rc, &rej, ERR_RANGE, WIRE_REJ_BAD_VALUE, "dtype 7");
    EXPECT(strstr(rej.why, "dtype 7") != NULL, "the refusal names the dtype: '%s'", rej.why);
    /* The sender refuses an f32 block that is not whole floats. */
    meta.dtype = RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_F32;
    rc = wire_snap_send(push, NULL, 0, &meta, block, sizeof block, CHUNK);
    EXPECT(rc == ERR_ARG, "an f32 send of %zu bytes: rc %d, expected ERR_ARG", sizeof block, rc);
    if (verbose) printf("  bf16 snapshot: %zu bytes in 3 chunks, dtype checked\n", sizeof block);
    wire_snap_rx_free(&rx);
out:
    for (int i = 0; i < 3; i++)
        if (ch[i]) protobuf_c_message_free_unpacked(&ch[i]->base, NULL);
    wire_sock_free(&pull);
    wire_sock_free(&push);
}

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return 1e3 * (double)(t1.tv_sec - t0->tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* A 20 MB snapshot from a ROUTER to a DEALER over tcp, the clone pattern's fetch. */
static void test_tcp(void *zctx, bool verbose)
{
    WireSock *router, *dealer;
    char      ep[256];
    if (!EXPECT(wire_fixture_pair(zctx, "tcp://127.0.0.1:*", ZMQ_ROUTER, "snapshot", &router,
                                  ZMQ_DEALER, "follower", &dealer, ep, sizeof ep) == 0,
                "snapshot tcp sockets"))
        return;
    size_t n = 5 * 1000 * 1000, bytes = n * 4;
    float *block = make_block(n, 7);
    float *dest = xmalloc(bytes);
    for (int round = 0; round < 2; round++) {
        /* Round 0: 4 MiB chunks into an owned block; round 1: default chunks into dest. */
        size_t                chunk = round == 0 ? (size_t)4 << 20 : 0;
        Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
        sr.version = 1;
        sr.actor_id = (char *)"actor-1";
        EXPECT(wire_send(dealer, &sr.base, 0) == 0, "snapshot request send failed");
        WireMsg                m;
        Rlhf__SnapshotRequest *req = NULL;
        int rc = wire_recv_decode(router, 2000, &rlhf__snapshot_request__descriptor, NULL, &m,
                                  (ProtobufCMessage **)&req, NULL);
        if (!EXPECT(rc == 0, "router gets snapshot request: rc %d, expected 0", rc)) break;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        WireSnapMeta meta = {
            .run_id = "run-a", .epoch = 3, .policy_version = 40 + round, .config_json = "{}"};
        rc = wire_snap_send(router, m.peer, m.peer_len, &meta, block, bytes, chunk);
        EXPECT(rc == 0, "snapshot send: rc %d, expected 0", rc);
        protobuf_c_message_free_unpacked(&req->base, NULL);
        wire_msg_close(&m);
        WireSnapRx *rx =
            round == 0 ? wire_snap_rx_new(NULL, (size_t)64 << 20) : wire_snap_rx_new(dest, bytes);
        int chunks = 0;
        rc = 0;
        while (rc == 0) {
            Rlhf__WeightChunk *c = NULL;
            WireReject         rej;
            rc = wire_recv_decode(dealer, 3000, &rlhf__weight_chunk__descriptor, NULL, &m,
                                  (ProtobufCMessage **)&c, &rej);
            if (rc) break;
            chunks++;
            rc = wire_snap_rx_accept(rx, c, &rej);
            EXPECT(rc >= 0, "chunk %d refused: %s", chunks, rej.why);
            protobuf_c_message_free_unpacked(&c->base, NULL);
            wire_msg_close(&m);
        }
        size_t      got_bytes = 0;
        const void *got = wire_snap_rx_data(rx, &got_bytes);
        EXPECT(rc == 1 && got_bytes == bytes && !memcmp(got, block, bytes) &&
                   wire_snap_rx_policy_version(rx) == (uint64_t)(40 + round),
               "20 MB snapshot round %d: rc %d, %zu bytes v%llu, expected 1, %zu identical "
               "bytes v%d",
               round, rc, got_bytes, (unsigned long long)wire_snap_rx_policy_version(rx), bytes,
               40 + round);
        EXPECT(round == 0 || got == dest, "round %d: caller's buffer not used", round);
        if (verbose)
            printf("  snapshot %zu bytes in %d chunks over %s: %.1f ms\n", bytes, chunks, ep,
                   elapsed_ms(&t0));
        wire_snap_rx_free(&rx);
    }
    free(dest);
    free(block);
    wire_sock_free(&dealer);
    wire_sock_free(&router);
}

/* A DEALER of test_out connected to ep that has said hello, so the ROUTER
 * knows its routing id (into peer, *peer_len). */
static WireSock *out_peer(void *zctx, WireSock *router, const char *ep, const char *name,
                          uint8_t *peer, size_t *peer_len)
{
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    WireSock *d = wire_sock_new(zctx, ZMQ_DEALER, name, &o);
    if (!EXPECT(d && wire_connect(d, ep) == 0 && wire_send_raw(d, NULL, 0, "hi", 2, 0) == 0,
                "%s connects and says hello", name))
        return d;
    WireMsg m;
    if (EXPECT(wire_recv(router, 2000, &m) == 0, "the router hears %s", name)) {
        memcpy(peer, m.peer, m.peer_len);
        *peer_len = m.peer_len;
        wire_msg_close(&m);
    }
    return d;
}

/* Reads every chunk d has been sent into rx. Returns the last accept rc. */
static int out_read_all(WireSock *d, WireSnapRx *rx)
{
    int rc = 0;
    while (rc == 0) {
        Rlhf__WeightChunk *c = NULL;
        WireMsg            m;
        WireReject         rej;
        if (wire_recv_decode(d, 1000, &rlhf__weight_chunk__descriptor, NULL, &m,
                             (ProtobufCMessage **)&c, &rej))
            return -1;
        rc = wire_snap_rx_accept(rx, c, &rej);
        protobuf_c_message_free_unpacked(&c->base, NULL);
        wire_msg_close(&m); /* the last reference: ZeroMQ releases the frame */
    }
    return rc;
}

/* Queued output: frames tracked until ZeroMQ lets go of them, one transfer
 * per peer, a budget over all peers, the memory released when a peer goes.
 * Over inproc, a frame is released only when its receiver closes it, so
 * what is "queued" is exactly what the peer has not read. */
static void test_out(void *zctx, bool verbose)
{
    WireSock   *router = wire_sock_new(zctx, ZMQ_ROUTER, "snapshot", NULL);
    const char *ep = "inproc://wire-snap-out";
    if (!EXPECT(router && wire_bind(router, ep) == 0, "router bound at %s", ep)) {
        wire_sock_free(&router);
        return;
    }
    enum { N_FLOATS = 100003, CHUNK = 64 << 10 }; /* 7 chunks */
    size_t       bytes = (size_t)N_FLOATS * 4;
    float       *block = make_block(N_FLOATS, 3);
    WireSnapMeta meta = {.run_id = "run-o", .epoch = 5, .policy_version = 2, .config_json = "{}"};
    size_t       bound = wire_snap_packed_bytes(&meta, bytes, CHUNK);
    meta.checksum = wire_snap_checksum(block, bytes);
    meta.has_checksum = true;
    size_t packed = wire_snap_packed_bytes(&meta, bytes, CHUNK);
    EXPECT(bound >= packed, "without the checksum the size %zu is a bound of %zu", bound, packed);
    EXPECT(packed > bytes && packed < bytes + 7 * 128,
           "packed size %zu of a %zu-byte block in 7 chunks: the data plus a header per chunk",
           packed, bytes);
    WireSnapOut *out = wire_snap_out_new(packed * 5 / 2); /* room for two transfers */
    uint8_t      pa[WIRE_MAX_IDENTITY], pb[WIRE_MAX_IDENTITY], pc[WIRE_MAX_IDENTITY];
    size_t       la = 0, lb = 0, lc = 0;
    WireSock    *a = out_peer(zctx, router, ep, "peer-a", pa, &la);
    WireSock    *b = out_peer(zctx, router, ep, "peer-b", pb, &lb);
    WireSock    *c = out_peer(zctx, router, ep, "peer-c", pc, &lc);
    WireReject   rej;
    int          rc = wire_snap_out_admit(out, pa, la, packed, &rej);
    EXPECT(rc == 0, "a first transfer to a is admitted: rc %d (%s)", rc, rej.why);
    rc = wire_snap_out_send(out, router, pa, la, &meta, block, bytes, CHUNK);
    EXPECT(rc == 0 && wire_snap_out_queued(out) == packed && wire_snap_out_transfers(out) == 1,
           "sent to a: rc %d, %zu bytes queued in %d transfer(s), expected 0, %zu, 1", rc,
           wire_snap_out_queued(out), wire_snap_out_transfers(out), packed);
    rc = wire_snap_out_admit(out, pa, la, packed, &rej);
    expect_refused(rc, &rej, ERR_AGAIN, WIRE_REJ_BUSY,
                   "a second transfer to a while one is queued");
    if (verbose) printf("  refused: %s\n", rej.why);
    EXPECT(wire_snap_out_admit(out, pb, lb, packed, &rej) == 0 &&
               wire_snap_out_send(out, router, pb, lb, &meta, block, bytes, CHUNK) == 0,
           "b gets the second transfer the budget holds");
    rc = wire_snap_out_admit(out, pc, lc, packed, &rej);
    expect_refused(rc, &rej, ERR_RANGE, WIRE_REJ_OVER_BUDGET, "a third transfer over the budget");
    if (verbose) printf("  refused: %s\n", rej.why);

    /* a reads its snapshot: the bytes are released, the data is right, and
     * a may ask again. */
    WireSnapRx *rx = wire_snap_rx_new(NULL, bytes);
    rc = out_read_all(a, rx);
    size_t      got_bytes = 0;
    const void *got = wire_snap_rx_data(rx, &got_bytes);
    EXPECT(rc == 1 && got_bytes == bytes && !memcmp(got, block, bytes),
           "a assembled the tracked snapshot: rc %d, %zu bytes", rc, got_bytes);
    EXPECT(wire_snap_out_queued(out) == packed && wire_snap_out_transfers(out) == 1 &&
               wire_snap_out_admit(out, pa, la, packed, &rej) == 0,
           "after a read: %zu bytes in %d transfer(s) queued, expected %zu in 1 (b's); a may "
           "ask again",
           wire_snap_out_queued(out), wire_snap_out_transfers(out), packed);
    /* b hangs up without reading: its frames are dropped and released. */
    wire_sock_free(&b);
    for (int i = 0; i < 200 && wire_snap_out_queued(out) > 0; i++) {
        WireMsg m;
        if (wire_recv(router, 10, &m) == 0)
            wire_msg_close(&m); /* lets the router see the hang-up */
    }
    EXPECT(wire_snap_out_queued(out) == 0 && wire_snap_out_transfers(out) == 0,
           "b hung up: %zu bytes in %d transfer(s) still queued, expected none",
           wire_snap_out_queued(out), wire_snap_out_transfers(out));
    EXPECT(wire_snap_out_admit(out, pc, lc, packed, &rej) == 0, "c fits the budget now");
    wire_snap_rx_free(&rx);
    wire_sock_free(&a);
    wire_sock_free(&c);
    wire_sock_free(&router);
    wire_snap_out_free(&out);
    EXPECT(out == NULL, "wire_snap_out_free clears the pointer");
    free(block);
}

int snapshot_selftest(bool verbose)
{
    void *zctx = zmq_ctx_new();
    if (!EXPECT(zctx != NULL, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()))) return expect_end();
    test_rx(zctx, verbose);
    test_bf16(zctx, verbose);
    test_tcp(zctx, verbose);
    test_out(zctx, verbose);
    zmq_ctx_term(zctx);
    return expect_end();
}
