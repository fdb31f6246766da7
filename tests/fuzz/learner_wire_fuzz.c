/* learner_wire: the frames a learner receives, on its three sockets, decoded
 * and handled as learner_serve and learner_intake do, against a real lease
 * table:
 *   lease ROUTER     LeaseRequest   wire_decode, then lease_expire + lease_grant
 *   results PULL     ScoredGroup    wire_decode with the run id and vocab, the
 *                                   lease terms learner_intake checks, lease_arrive;
 *                                   accepted groups are kept and settled in batches
 *   snapshot ROUTER  SnapshotRequest wire_decode
 * A refused frame goes through wire_reject_note as the daemon counts it.
 *
 * Input: records of [socket byte][u16 length][frame]; socket 3 is a clock
 * tick of the u16 in milliseconds (then leases expire). One input is one
 * learner life: the table starts fresh and everything is freed at the end,
 * so a leak of a kept message is found. Properties: the table's own CHECKs
 * (its accounting identity after every change), a decoded message is
 * returned only with rc 0, a refusal names a reason in range. */
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/net/reject.h"
#include "common/net/wire.h"
#include "learner/lease.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/wire_fixture.h"

/* The learner the frames meet: the fixture group's run, epoch and shape. */
enum {
    L_EPOCH = 2,
    L_VERSION = 7,
    L_GROUP = WIRE_FIXTURE_N,
    L_MAX_NEW = 8,
    L_BATCH = 2,
    L_MAX_SEQ = 32,
    L_VOCAB = WIRE_FIXTURE_VOCAB,
};
#define L_RUN "run-a"
#define L_FIRST_LEASE (((uint64_t)L_EPOCH << 32) | 1)

static const LeaseConfig k_lease = {
    .lease_prompts = 4, .timeout_ms = 1000, .max_staleness = 1, .batch_groups = L_BATCH};

typedef struct {
    Rlhf__ScoredGroup *msg;
    uint64_t           lease_id;
    int                group_index;
} Pending;

typedef struct {
    LeaseTable *leases;
    WireRejects rejects;
    int64_t     now_ms;
    int64_t     version;
    Pending     pend[L_BATCH];
    int         n_pend;
} Learner;

static void note(Learner *l, const char *what, int rc, const ProtobufCMessage *m,
                 const WireReject *rej)
{
    FUZZ_CHECK(rc < 0 && m == NULL, "%s: rc %d with message %p", what, rc, (const void *)m);
    FUZZ_CHECK(rej->reason >= 0 && rej->reason < WIRE_REJ_COUNT, "%s: reason %d", what,
               (int)rej->reason);
    FUZZ_CHECK(memchr(rej->why, '\0', sizeof rej->why) != NULL, "%s: why not terminated", what);
    wire_reject_note(&l->rejects, "learner", what, rej);
}

static void on_lease_request(Learner *l, const uint8_t *p, size_t n)
{
    const WireLimits  lim = {.vocab_size = L_VOCAB};
    ProtobufCMessage *m = NULL;
    WireReject        rej;
    int               rc = wire_decode(&rlhf__lease_request__descriptor, p, n, &lim, &m, &rej);
    if (rc) {
        note(l, "LeaseRequest", rc, m, &rej);
        return;
    }
    const Rlhf__LeaseRequest *req = (const Rlhf__LeaseRequest *)m;
    lease_expire(l->leases, l->now_ms);
    uint64_t        id = 0;
    const uint64_t *ids = NULL;
    int             got = lease_grant(l->leases, req->max_prompts, l->now_ms, &id, &ids);
    FUZZ_CHECK(got >= 0 && got <= req->max_prompts && got <= k_lease.lease_prompts,
               "granted %d prompts for max_prompts %d", got, req->max_prompts);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* What learner_intake checks beyond the wire: the epoch, the lease's
 * group size and sampling, the model's context, versions not from the
 * future. Returns the oldest token version, or -1. */
static int64_t lease_terms(const Learner *l, const Rlhf__ScoredGroup *sg)
{
    const Rlhf__SampledGroup   *g = sg->group;
    const Rlhf__SamplingParams *s = g->sampling;
    if (g->epoch != L_EPOCH || g->n_completions != L_GROUP) return -1;
    if (s->temperature != 1.0f || s->top_k != 0 || s->top_p != 1.0f ||
        s->max_new_tokens != L_MAX_NEW)
        return -1;
    int64_t oldest = INT64_MAX;
    for (size_t c = 0; c < g->n_completions; c++) {
        const Rlhf__Completion *cp = g->completions[c];
        if (g->prompt->n_tokens + cp->n_tokens > L_MAX_SEQ + 1) return -1;
        for (size_t t = 0; t < cp->n_tokens; t++) {
            if (cp->policy_version[t] > (uint64_t)l->version) return -1;
            if ((int64_t)cp->policy_version[t] < oldest) oldest = (int64_t)cp->policy_version[t];
        }
    }
    return oldest;
}

/* A batch is complete: every kept group is trained, the version moves on. */
static void settle(Learner *l, LeaseOutcome out)
{
    for (int i = 0; i < l->n_pend; i++) {
        lease_settle(l->leases, l->pend[i].lease_id, l->pend[i].group_index, out);
        protobuf_c_message_free_unpacked(&l->pend[i].msg->base, NULL);
    }
    l->n_pend = 0;
}

static void on_scored_group(Learner *l, const uint8_t *p, size_t n)
{
    const WireLimits  lim = {.vocab_size = L_VOCAB, .run_id = L_RUN};
    ProtobufCMessage *m = NULL;
    WireReject        rej;
    int               rc = wire_decode(&rlhf__scored_group__descriptor, p, n, &lim, &m, &rej);
    if (rc) {
        note(l, "ScoredGroup", rc, m, &rej);
        return;
    }
    Rlhf__ScoredGroup        *sg = (Rlhf__ScoredGroup *)m;
    const Rlhf__SampledGroup *g = sg->group;
    FUZZ_CHECK(!strcmp(sg->run_id, L_RUN) && !strcmp(g->run_id, L_RUN), "run '%s' / '%s'",
               sg->run_id, g->run_id);
    FUZZ_CHECK(sg->n_scores == g->n_completions, "%zu scores, %zu completions", sg->n_scores,
               g->n_completions);
    int64_t oldest = lease_terms(l, sg);
    if (oldest < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    LeaseArrival a = lease_arrive(l->leases, g->lease_id, g->group_index, g->group_count,
                                  g->prompt->prompt_id, oldest, l->version);
    if (a != LEASE_ACCEPTED) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    l->pend[l->n_pend++] = (Pending){sg, g->lease_id, g->group_index};
    if (l->n_pend == L_BATCH) {
        settle(l, LEASE_OUT_TRAINED);
        l->version++;
    }
}

static void on_snapshot_request(Learner *l, const uint8_t *p, size_t n)
{
    const WireLimits  lim = {.vocab_size = L_VOCAB};
    ProtobufCMessage *m = NULL;
    WireReject        rej;
    int               rc = wire_decode(&rlhf__snapshot_request__descriptor, p, n, &lim, &m, &rej);
    if (rc) {
        note(l, "SnapshotRequest", rc, m, &rej);
        return;
    }
    const Rlhf__SnapshotRequest *req = (const Rlhf__SnapshotRequest *)m;
    FUZZ_CHECK(req->actor_id[0] != '\0', "a SnapshotRequest without an actor id was accepted");
    protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Learner l = {.version = L_VERSION};
    l.leases = lease_new(&k_lease, L_FIRST_LEASE, 0);
    FuzzIn in = {data, size};
    while (in.n > 0) {
        int            sock = fuzz_u8(&in) % 4;
        const uint8_t *p;
        size_t         n;
        if (sock == 3) {
            l.now_ms += fuzz_u16(&in);
            lease_expire(l.leases, l.now_ms);
            continue;
        }
        if (!fuzz_frame(&in, &p, &n)) break;
        if (sock == 0) on_lease_request(&l, p, n);
        if (sock == 1) on_scored_group(&l, p, n);
        if (sock == 2) on_snapshot_request(&l, p, n);
    }
    settle(&l, LEASE_OUT_FAILED);
    LeaseCounters c;
    lease_counters(l.leases, &c);
    FUZZ_CHECK(c.buffered == 0, "%llu groups still buffered", (unsigned long long)c.buffered);
    lease_free(&l.leases);
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void put(uint8_t **buf, size_t *len, int sock, const ProtobufCMessage *m)
{
    *buf = xrealloc(*buf, *len + 1);
    (*buf)[(*len)++] = (uint8_t)sock;
    fuzz_frame_put_msg(buf, len, m);
}

static void seeds(const char *dir)
{
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.run_id = (char *)L_RUN;
    req.actor_id = (char *)"actor-0";
    req.max_prompts = 2;
    req.epoch = L_EPOCH;
    Rlhf__SnapshotRequest snap = RLHF__SNAPSHOT_REQUEST__INIT;
    snap.version = WIRE_PROTOCOL_VERSION;
    snap.run_id = (char *)L_RUN;
    snap.actor_id = (char *)"actor-0";
    snap.have_epoch = L_EPOCH;
    snap.have_policy_version = 3;
    WireFixtureGroup *t = xmalloc(sizeof *t);
    wire_fixture_group_init(t);
    t->g.lease_id = L_FIRST_LEASE;
    t->g.group_count = 2;

    uint8_t *buf = NULL;
    size_t   len = 0;
    /* A request, both groups of the lease it gets (prompts 0 and 1), a
     * snapshot request: the whole path to a trained batch. */
    put(&buf, &len, 0, &req.base);
    for (int i = 0; i < 2; i++) {
        t->g.group_index = i;
        t->prompt.prompt_id = (uint64_t)i;
        put(&buf, &len, 1, &t->scored.base);
    }
    put(&buf, &len, 2, &snap.base);
    fuzz_seed(dir, "lease-groups-snapshot", buf, len);

    /* A request, a tick past the deadline, the late group, a second request. */
    len = 0;
    put(&buf, &len, 0, &req.base);
    uint8_t tick[3] = {3, 0xe8, 0x07}; /* 2024 ms */
    buf = xrealloc(buf, len + sizeof tick);
    memcpy(buf + len, tick, sizeof tick);
    len += sizeof tick;
    t->g.group_index = 0;
    t->prompt.prompt_id = 0;
    put(&buf, &len, 1, &t->scored.base);
    put(&buf, &len, 0, &req.base);
    fuzz_seed(dir, "lease-expired", buf, len);

    /* Each message alone. */
    len = 0;
    put(&buf, &len, 0, &req.base);
    fuzz_seed(dir, "lease-request", buf, len);
    len = 0;
    put(&buf, &len, 1, &t->scored.base);
    fuzz_seed(dir, "scored-group", buf, len);
    len = 0;
    put(&buf, &len, 2, &snap.base);
    fuzz_seed(dir, "snapshot-request", buf, len);
    free(buf);
    free(t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("learner_wire", seeds);
    return 0;
}
