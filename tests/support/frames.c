#include "tests/support/frames.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/tok.h"
#include "common/net/reject.h"
#include "tests/support/expect.h"
#include "tests/support/wire_fixture.h"

static Frame *frame_add(FrameSet *s, const char *what, WireReason reason)
{
    CHECK(s->n < FRAMES_MAX);
    Frame *f = &s->f[s->n++];
    memset(f, 0, sizeof *f);
    f->what = what;
    f->reason = reason;
    return f;
}

static void frame_garbage(FrameSet *s)
{
    /* 0xff... is a varint tag of wire type 7, which no protobuf has. */
    static const char junk[] = "\xff\xff\xff hostile garbage \x01\x02";
    Frame            *f = frame_add(s, "garbage", WIRE_REJ_GARBAGE);
    f->data = xmalloc(sizeof junk);
    memcpy(f->data, junk, sizeof junk);
    f->len = sizeof junk;
}

static void frame_oversized(FrameSet *s)
{
    frame_add(s, "oversized", WIRE_REJ_OVERSIZED)->len = WIRE_MAX_FRAME + 1;
}

/* m packed, less its last `cut` bytes. */
static Frame *frame_msg(FrameSet *s, const char *what, const ProtobufCMessage *m, size_t cut,
                        WireReason reason)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    CHECK(cut < n);
    Frame *f = frame_add(s, what, reason);
    f->data = xmalloc(n);
    CHECK(protobuf_c_message_pack(m, f->data) == n);
    f->len = n - cut;
    return f;
}

void frames_free(FrameSet *s)
{
    for (int i = 0; i < s->n; i++) free(s->f[i].data);
    s->n = 0;
}

uint64_t frames_expected(const FrameSet *const *sets, int n_sets, int extra_nonfinite, char *buf,
                         size_t cap)
{
    WireRejects w;
    wire_rejects_init(&w);
    for (int k = 0; k < n_sets; k++)
        for (int i = 0; i < sets[k]->n; i++) atomic_fetch_add(&w.n[sets[k]->f[i].reason], 1);
    atomic_fetch_add(&w.n[WIRE_REJ_NONFINITE], (uint64_t)extra_nonfinite);
    wire_rejects_format(&w, buf, cap);
    return wire_rejects_total(&w);
}

void frames_check(const FrameSet *s, const ProtobufCMessageDescriptor *desc, const WireLimits *lim,
                  bool is_actor)
{
    for (int i = 0; i < s->n; i++) {
        const Frame *f = &s->f[i];
        if (!f->data) continue; /* oversized: refused before decoding */
        ProtobufCMessage *m = NULL;
        WireReject        rej = {.reason = WIRE_REJ_COUNT};
        int               rc = wire_decode(desc, f->data, f->len, lim, &m, &rej);
        if (f->is_semantic)
            EXPECT(rc == 0, "%s frame '%s' does not decode (%s)", s->socket, f->what, rej.why);
        else
            EXPECT(rc != 0 && rej.reason == f->reason,
                   "%s frame '%s': wire_decode gives %s, the test expects %s", s->socket, f->what,
                   rc ? wire_reason_name(rej.reason) : "success", wire_reason_name(f->reason));
        if (m) protobuf_c_message_free_unpacked(m, NULL);
        if (!is_actor) continue;
        m = NULL;
        rc = wire_decode(&rlhf__error_reply__descriptor, f->data, f->len, NULL, &m, &rej);
        const Rlhf__ErrorReply *er = (const Rlhf__ErrorReply *)m;
        EXPECT(rc != 0 || (er->code == 0 && !er->reason[0]), "%s frame '%s' reads as an ErrorReply",
               s->socket, f->what);
        if (m) protobuf_c_message_free_unpacked(m, NULL);
    }
}

int frames_send(WireSock *sock, const void *peer, size_t peer_len, const FrameSet *s, char *error,
                size_t cap)
{
    int sent = 0;
    for (int i = 0; i < s->n; i++) {
        const Frame *f = &s->f[i];
        uint8_t     *zeros = f->data ? NULL : xcalloc(f->len, 1);
        int          rc = wire_send_raw(sock, peer, peer_len, f->data ? f->data : zeros, f->len, 0);
        free(zeros);
        if (rc == 0)
            sent++;
        else if (error && !error[0])
            snprintf(error, cap, "%s: frame '%s' not sent: %s", s->socket, f->what, err_str(rc));
    }
    return sent;
}

void frames_group_init(FramesGroup *g, const char *run_id, uint64_t epoch)
{
    memset(g, 0, sizeof *g);
    const int32_t prompt[4] = {TOK_BOS, 20, 21, 22};
    memcpy(g->prompt_tok, prompt, sizeof prompt);
    rlhf__prompt__init(&g->prompt);
    g->prompt.prompt_id = 0;
    g->prompt.tokens = g->prompt_tok;
    g->prompt.n_tokens = 4;
    g->prompt.answer = "3";
    g->prompt.task = "arith";
    rlhf__sampling_params__init(&g->sampling);
    g->sampling.temperature = 1.0f;
    g->sampling.top_p = 1.0f;
    g->sampling.max_new_tokens = 8;
    for (int i = 0; i < TESTCL_GROUP; i++) {
        g->tok[i][0] = 20;
        g->tok[i][1] = TOK_EOS;
        for (int t = 0; t < 2; t++) g->lpb[i][t] = g->lps[i][t] = -1.0f;
        wire_fixture_completion_init(&g->comp[i], g->tok[i], g->lpb[i], g->lps[i], g->pv[i], 2);
        g->comp_p[i] = &g->comp[i];
        rlhf__score__init(&g->score[i]);
        g->score_p[i] = &g->score[i];
    }
    wire_fixture_sampled_init(&g->group, run_id, epoch, &g->prompt, &g->sampling, g->comp_p,
                              TESTCL_GROUP);
    g->group.lease_id = 0x7fff0001;
    g->group.actor_id = FRAMES_ID;
    g->group.group_index = 0;
    g->group.group_count = 1;
    wire_fixture_scored_init(&g->scored, &g->group, g->score_p, TESTCL_GROUP, "hostile");
}

/* The frames every socket gets first: garbage, then m (of the socket's
 * type, with its version and a string that is the last field packed, so
 * that cutting a byte truncates it) less its last byte. */
static void frames_start(FrameSet *s, const char *socket, const ProtobufCMessage *m)
{
    s->socket = socket;
    frame_garbage(s);
    frame_msg(s, "truncated", m, 1, WIRE_REJ_GARBAGE);
}

void frames_lease_request(FrameSet *s)
{
    Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = FRAMES_ID;
    frames_start(s, "learner lease", &r.base);
    r.version = WIRE_PROTOCOL_VERSION + 1;
    r.max_prompts = 1;
    frame_msg(s, "wrong version", &r.base, 0, WIRE_REJ_BAD_VERSION);
    r.version = WIRE_PROTOCOL_VERSION;
    r.max_prompts = -1;
    frame_msg(s, "negative max_prompts", &r.base, 0, WIRE_REJ_BAD_VALUE);
    frame_oversized(s);
}

void frames_snapshot_request(FrameSet *s)
{
    Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = FRAMES_ID;
    frames_start(s, "learner snapshot", &r.base);
    r.version = 0;
    frame_msg(s, "wrong version", &r.base, 0, WIRE_REJ_BAD_VERSION);
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = "";
    frame_msg(s, "no actor id", &r.base, 0, WIRE_REJ_BAD_SHAPE);
    frame_oversized(s);
}

void frames_group(FrameSet *s, const char *run_id, uint64_t epoch, bool is_scored)
{
    Rlhf__ScoredGroup  ts = RLHF__SCORED_GROUP__INIT;
    Rlhf__SampledGroup tg = RLHF__SAMPLED_GROUP__INIT;
    ts.version = tg.version = WIRE_PROTOCOL_VERSION;
    ts.run_id = tg.run_id = (char *)run_id;
    frames_start(s, is_scored ? "learner results" : "reward samples",
                 is_scored ? &ts.base : &tg.base);
    FramesGroup             g;
    const ProtobufCMessage *m = is_scored ? &g.scored.base : &g.group.base;
    frames_group_init(&g, run_id, epoch);
    if (is_scored)
        g.scored.version = 3;
    else
        g.group.version = 2;
    frame_msg(s, "wrong version", m, 0, WIRE_REJ_BAD_VERSION);
    frames_group_init(&g, run_id, epoch);
    g.tok[is_scored ? 1 : 0][0] = 5000;
    frame_msg(s, "completion token 5000", m, 0, WIRE_REJ_BAD_TOKENS);
    if (is_scored) {
        frames_group_init(&g, run_id, epoch);
        g.prompt_tok[2] = -1;
        frame_msg(s, "prompt token -1", m, 0, WIRE_REJ_BAD_TOKENS);
        frames_group_init(&g, run_id, epoch);
        g.score[2].reward = NAN;
        frame_msg(s, "NaN reward", m, 0, WIRE_REJ_NONFINITE);
        frames_group_init(&g, run_id, epoch);
        g.lpb[3][1] = INFINITY;
        frame_msg(s, "infinite log-prob", m, 0, WIRE_REJ_NONFINITE);
        frames_group_init(&g, run_id, epoch);
        g.scored.run_id = g.group.run_id = "not-this-run";
        frame_msg(s, "another run", m, 0, WIRE_REJ_BAD_RUN);
    } else {
        frames_group_init(&g, run_id, epoch);
        g.lps[2][0] = NAN;
        frame_msg(s, "NaN log-prob", m, 0, WIRE_REJ_NONFINITE);
    }
    frame_oversized(s);
}

void frames_announce(FrameSet *s, const char *run_id, uint64_t epoch)
{
    Rlhf__WeightAnnounce w = RLHF__WEIGHT_ANNOUNCE__INIT;
    w.version = WIRE_PROTOCOL_VERSION;
    w.run_id = (char *)run_id; /* also what keeps these from reading as an ErrorReply */
    frames_start(s, "actor weights", &w.base);
    w.epoch = epoch;
    w.policy_version = 999;
    w.total_bytes = 4;
    w.version = 4;
    frame_msg(s, "wrong version", &w.base, 0, WIRE_REJ_BAD_VERSION);
    w.version = WIRE_PROTOCOL_VERSION;
    w.total_bytes = 7; /* no whole number of elements of any dtype */
    frame_msg(s, "total_bytes 7", &w.base, 0, WIRE_REJ_BAD_VALUE);
    frame_oversized(s);
}

void frames_grant(FrameSet *s, const char *run_id, uint64_t epoch)
{
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = (char *)run_id;
    frames_start(s, "actor lease", &g.base);
    g.epoch = epoch;
    g.retry_after_ms = 5;
    g.version = 2;
    frame_msg(s, "wrong version", &g.base, 0, WIRE_REJ_BAD_VERSION);
    int32_t              tokens[3] = {TOK_BOS, 20, 21};
    Rlhf__Prompt         pr = RLHF__PROMPT__INIT;
    Rlhf__Prompt        *pp = &pr;
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    pr.prompt_id = 1;
    pr.tokens = tokens;
    pr.n_tokens = 3;
    pr.task = "arith";
    sp.temperature = NAN;
    sp.top_p = 1.0f;
    sp.max_new_tokens = 8;
    g.version = WIRE_PROTOCOL_VERSION;
    g.retry_after_ms = 0;
    g.lease_id = 0x7fffff01;
    g.group_size = TESTCL_GROUP;
    g.sampling = &sp;
    g.prompts = &pp;
    g.n_prompts = 1;
    frame_msg(s, "NaN temperature", &g.base, 0, WIRE_REJ_NONFINITE);
    /* Within the wire bound, beyond the model's vocabulary: the actor's own
     * check of a grant against its model refuses it. */
    sp.temperature = 1.0f;
    tokens[2] = 100000;
    g.lease_id = 0x7fffff02;
    frame_msg(s, "prompt token 100000", &g.base, 0, WIRE_REJ_BAD_TOKENS)->is_semantic = true;
    frame_oversized(s);
}

void frames_chunk(FrameSet *s, const char *run_id, uint64_t epoch)
{
    Rlhf__WeightChunk w = RLHF__WEIGHT_CHUNK__INIT;
    w.version = WIRE_PROTOCOL_VERSION;
    w.run_id = (char *)run_id;
    frames_start(s, "actor snapshot", &w.base);
    uint8_t data[4] = {0};
    w.version = 7;
    w.epoch = epoch;
    w.policy_version = 1;
    w.chunk_count = 1;
    w.total_bytes = 4;
    w.data.data = data;
    w.data.len = 4;
    frame_msg(s, "wrong version", &w.base, 0, WIRE_REJ_BAD_VERSION);
    frame_oversized(s);
}

ProtobufCMessage *frames_recv_after_errors(TestCl *c, WireSock *s,
                                           const ProtobufCMessageDescriptor *desc, double timeout_s,
                                           int *n_errors)
{
    double t0 = testcl_now();
    while (testcl_now() - t0 < timeout_s) {
        WireMsg m;
        if (wire_recv(s, 100, &m) != 0) continue;
        ProtobufCMessage *out = NULL;
        int rc = wire_decode(desc, wire_msg_data(&m), wire_msg_size(&m), NULL, &out, NULL);
        if (rc != 0) {
            Rlhf__ErrorReply *er = NULL;
            if (wire_decode(&rlhf__error_reply__descriptor, wire_msg_data(&m), wire_msg_size(&m),
                            NULL, (ProtobufCMessage **)&er, NULL) == 0) {
                (*n_errors)++;
                EXPECT(er->code < 0 && strstr(er->reason, "refused"),
                       "ErrorReply %d '%s' does not say what was refused", er->code, er->reason);
                testcl_note(c, "ErrorReply on %s: %d %s", wire_sock_name(s), er->code, er->reason);
                protobuf_c_message_free_unpacked(&er->base, NULL);
            }
        }
        wire_msg_close(&m);
        if (out) return out;
    }
    return NULL;
}

bool frames_fetch_snapshot(TestCl *c, WireSock *s, WireSnapRx *rx, int *n_errors)
{
    Rlhf__SnapshotRequest req = RLHF__SNAPSHOT_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.actor_id = FRAMES_ID;
    wire_snap_rx_reset(rx);
    if (wire_send(s, &req.base, 0) != 0) return false;
    for (;;) {
        Rlhf__WeightChunk *ch = (Rlhf__WeightChunk *)frames_recv_after_errors(
            c, s, &rlhf__weight_chunk__descriptor, 10.0, n_errors);
        if (!ch) return false;
        WireReject rej;
        int        rc = wire_snap_rx_accept(rx, ch, &rej);
        protobuf_c_message_free_unpacked(&ch->base, NULL);
        if (rc < 0) {
            EXPECT(false, "the learner's snapshot chunk is refused: %s", rej.why);
            return false;
        }
        if (rc == 1) return true;
    }
}
