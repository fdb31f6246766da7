/* actor_wire: the frames an actor receives, decoded and handled as actor.c,
 * actor_weights.c and actor_work.c do:
 *   lease DEALER     LeaseGrant      wire_decode, else an ErrorReply (actor_recv's
 *                                    fallback); a grant with prompts is checked
 *                                    against the held model (sampler_config_validate,
 *                                    prompt length and ids) and its sampling
 *                                    parameters drive sampler_sample
 *   weights SUB      WeightAnnounce  wire_decode
 *   snapshot DEALER  WeightChunk     wire_decode (or an ErrorReply), assembled by a
 *                                    WireSnapRx (a chunk 0 while assembling starts
 *                                    over, as fetch_once does); a complete snapshot
 *                                    is installed as install_snapshot does: its
 *                                    config.json through ckpt_config_from_json, its
 *                                    size against model_config_num_params, every
 *                                    parameter finite, then model_new
 *
 * Input: records of [socket byte][u16 length][frame]; socket 3 resets the
 * receiver (a new fetch). Properties: a sampled token lies in the vocabulary
 * with finite log-probabilities <= WIRE_LOGP_EPS (what the reward server's
 * wire check demands of the group the actor sends next), and a model built
 * from an accepted snapshot has exactly the parameters the actor counted. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor_int.h"
#include "common/base/err.h"
#include "common/base/rng.h"
#include "common/formats/ckpt_config.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/nn/model.h"
#include "common/nn/sampler.h"
#include "tests/fuzz/fuzz.h"
#include "tests/support/fixtures.h"
#include "tests/support/wire_fixture.h"

#define SNAP_CAP ((size_t)256 << 10) /* largest snapshot accepted: 64K parameters */
#define V_LOGITS 64                  /* the logits row the grants' sampling is tried on */
/* A context longer than this is not built: RoPE tables of up to 2^20
 * positions (model_config_validate's bound) are legitimate but slow here. */
#define MAX_BUILD_SEQ 4096

typedef struct {
    WireSnapRx *rx;
    WireRejects rejects;
    ModelConfig held; /* the config of the last installed snapshot */
    float       logits[V_LOGITS];
    void       *scratch;
} Peer;

static Peer g_a;

static void note(Peer *a, const char *what, int rc, const ProtobufCMessage *m,
                 const WireReject *rej)
{
    FUZZ_CHECK(rc < 0 && m == NULL, "%s: rc %d with message %p", what, rc, (const void *)m);
    FUZZ_CHECK(rej->reason >= 0 && rej->reason < WIRE_REJ_COUNT, "%s: reason %d", what,
               (int)rej->reason);
    FUZZ_CHECK(memchr(rej->why, '\0', sizeof rej->why) != NULL, "%s: why not terminated", what);
    wire_reject_note(&a->rejects, "actor", what, rej);
}

/* actor_recv: the expected type, else an ErrorReply, else a counted refusal. */
static ProtobufCMessage *recv_as(Peer *a, const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                                 size_t n)
{
    ProtobufCMessage *m = NULL;
    WireReject        rej;
    int               rc = wire_decode(desc, p, n, NULL, &m, &rej);
    if (rc == 0) return m;
    ProtobufCMessage *er = NULL;
    WireReject        rej2;
    if (wire_decode(&rlhf__error_reply__descriptor, p, n, NULL, &er, &rej2) == 0) {
        const Rlhf__ErrorReply *e = (const Rlhf__ErrorReply *)er;
        FUZZ_CHECK(strlen(e->reason) <= WIRE_MAX_TEXT, "error reply of %zu bytes",
                   strlen(e->reason));
        (void)err_str(e->code); /* the actor logs it by name */
        protobuf_c_message_free_unpacked(er, NULL);
        return NULL;
    }
    note(a, desc->short_name, rc, m, &rej);
    return NULL;
}

static void on_grant(Peer *a, const uint8_t *p, size_t n)
{
    Rlhf__LeaseGrant *g = (Rlhf__LeaseGrant *)recv_as(a, &rlhf__lease_grant__descriptor, p, n);
    if (!g) return;
    if (g->n_prompts == 0) goto done;
    /* grant_usable: the sampling, then every prompt against the held model. */
    SamplerConfig sc = {g->sampling->temperature, g->sampling->top_k, g->sampling->top_p};
    char          why[160];
    if (sampler_config_validate(&sc, why, sizeof why) != 0) goto done;
    for (size_t i = 0; i < g->n_prompts; i++) {
        const Rlhf__Prompt *pr = g->prompts[i];
        if (pr->n_tokens + 1 > (size_t)a->held.max_seq_len) goto done;
        for (size_t t = 0; t < pr->n_tokens; t++)
            if (pr->tokens[t] < 0 || pr->tokens[t] >= a->held.vocab_size) goto done;
    }
    Rng rng;
    rng_seed(&rng, g->lease_id);
    for (int k = 0; k < 4; k++) {
        int   tok = -1;
        float lps = NAN, lpf = NAN;
        int   rc = sampler_sample(&sc, a->logits, V_LOGITS, &rng, a->scratch, &tok, &lps, &lpf);
        FUZZ_CHECK(rc == 0, "sampler_sample: %d on finite logits", rc);
        FUZZ_CHECK(tok >= 0 && tok < V_LOGITS, "token %d", tok);
        FUZZ_CHECK(isfinite(lps) && isfinite(lpf) && lps <= WIRE_LOGP_EPS && lpf <= WIRE_LOGP_EPS,
                   "T %g top_k %d top_p %g: logp_sampled %g logp_full %g", (double)sc.temperature,
                   sc.top_k, (double)sc.top_p, (double)lps, (double)lpf);
    }
done:
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

static void on_announce(Peer *a, const uint8_t *p, size_t n)
{
    ProtobufCMessage *m = NULL;
    WireReject        rej;
    int               rc = wire_decode(&rlhf__weight_announce__descriptor, p, n, NULL, &m, &rej);
    if (rc) {
        note(a, "WeightAnnounce", rc, m, &rej);
        return;
    }
    const Rlhf__WeightAnnounce *w = (const Rlhf__WeightAnnounce *)m;
    /* An fp32 or a bf16 snapshot: a whole number of 2-byte elements. */
    FUZZ_CHECK(w->total_bytes % 2 == 0, "announce of %llu bytes",
               (unsigned long long)w->total_bytes);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* install_snapshot's checks; builds the model when they pass. */
static void install(Peer *a)
{
    size_t      bytes = 0;
    const void *data = wire_snap_rx_data(a->rx, &bytes);
    size_t      elem = wire_snap_rx_dtype(a->rx) == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16 ? 2 : 4;
    FUZZ_CHECK(data && bytes > 0 && bytes <= SNAP_CAP && bytes % elem == 0,
               "complete: %zu bytes of %zu-byte elements", bytes, elem);
    if (elem != 4) return; /* the fp32 install path is the one built below */
    ModelConfig mc;
    int         eos = -1;
    if (ckpt_config_from_json("snapshot", wire_snap_rx_config(a->rx), &mc, &eos) != 0) return;
    FUZZ_CHECK(eos >= 0 && eos < mc.vocab_size, "eos %d of vocab %d", eos, mc.vocab_size);
    uint64_t np = model_config_num_params(&mc);
    if (np * 4 != bytes) return;
    const float *w = data;
    for (size_t i = 0; i < bytes / 4; i++)
        if (!isfinite(w[i])) return;
    if (mc.max_seq_len > MAX_BUILD_SEQ) return;
    Model *m = model_new(&mc);
    FUZZ_CHECK(model_num_params(m) == np, "model_new made %zu parameters, the actor counted %llu",
               model_num_params(m), (unsigned long long)np);
    memcpy(model_params(m), data, bytes);
    model_free(&m);
    a->held = mc;
}

static void on_chunk(Peer *a, const uint8_t *p, size_t n)
{
    Rlhf__WeightChunk *c = (Rlhf__WeightChunk *)recv_as(a, &rlhf__weight_chunk__descriptor, p, n);
    if (!c) return;
    uint32_t   have, count;
    WireReject rej;
    wire_snap_rx_progress(a->rx, &have, &count);
    int rc = wire_snap_rx_accept(a->rx, c, &rej);
    if (rc < 0 && rej.reason == WIRE_REJ_BAD_CHUNK && c->chunk_index == 0 && have > 0) {
        wire_snap_rx_reset(a->rx);
        rc = wire_snap_rx_accept(a->rx, c, &rej);
    }
    protobuf_c_message_free_unpacked(&c->base, NULL);
    if (rc < 0) {
        note(a, "WeightChunk", rc, NULL, &rej);
        return;
    }
    if (rc == 1) {
        install(a);
        wire_snap_rx_reset(a->rx);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Peer *a = &g_a;
    a->held = fixture_model_config(8, 1, 2, 1, 16, 32, 64);
    wire_snap_rx_reset(a->rx);
    FuzzIn in = {data, size};
    while (in.n > 0) {
        int            sock = fuzz_u8(&in) % 4;
        const uint8_t *p;
        size_t         n;
        if (sock == 3) {
            wire_snap_rx_reset(a->rx);
            continue;
        }
        if (!fuzz_frame(&in, &p, &n)) break;
        if (sock == 0) on_grant(a, p, n);
        if (sock == 1) on_announce(a, p, n);
        if (sock == 2) on_chunk(a, p, n);
    }
    return 0;
}

/* ---- seeds ---------------------------------------------------------------- */

static void put_sock(uint8_t **buf, size_t *len, int sock)
{
    *buf = xrealloc(*buf, *len + 1);
    (*buf)[(*len)++] = (uint8_t)sock;
}

/* The frames of a real snapshot: a model, its config JSON and parameters
 * sent by wire_snap_send over an inproc pair and received as the actor
 * would, each appended as a snapshot-socket record. */
static void put_snapshot(uint8_t **buf, size_t *len, const ModelConfig *mc, size_t chunk_bytes)
{
    Model *m = model_new(mc);
    model_init_random(m, 7, 0.02f);
    char        *cfg = ckpt_config_to_json(mc, NULL);
    void        *zctx = zmq_ctx_new();
    WireSock    *tx = NULL, *rx = NULL;
    WireSnapMeta meta = {.run_id = "run-a", .epoch = 2, .policy_version = 5, .config_json = cfg};
    CHECK(wire_fixture_pair(zctx, "inproc://fuzz-seed", ZMQ_PULL, "rx", &rx, ZMQ_PUSH, "tx", &tx,
                            NULL, 0) == 0);
    size_t bytes = model_num_params(m) * sizeof(float);
    CHECK(wire_snap_send(tx, NULL, 0, &meta, model_params(m), bytes, chunk_bytes) == 0);
    for (uint32_t i = 0; i < wire_snap_chunk_count(bytes, chunk_bytes); i++) {
        WireMsg f;
        CHECK(wire_recv(rx, 1000, &f) == 0);
        put_sock(buf, len, 2);
        fuzz_frame_put(buf, len, wire_msg_data(&f), wire_msg_size(&f));
        wire_msg_close(&f);
    }
    wire_sock_free(&tx);
    wire_sock_free(&rx);
    zmq_ctx_term(zctx);
    free(cfg);
    model_free(&m);
}

static void seeds(const char *dir)
{
    uint8_t *buf = NULL;
    size_t   len = 0;
    /* A snapshot in 5 chunks, the same model's in one, a tied model with a
     * value head. */
    ModelConfig mc = fixture_model_config(8, 1, 2, 1, 16, 32, 64);
    put_snapshot(&buf, &len, &mc, 1024);
    fuzz_seed(dir, "snapshot-chunks", buf, len);
    len = 0;
    put_snapshot(&buf, &len, &mc, 0);
    fuzz_seed(dir, "snapshot-one-chunk", buf, len);
    len = 0;
    mc.tie_embeddings = true;
    mc.has_value_head = true;
    put_snapshot(&buf, &len, &mc, 2048);
    fuzz_seed(dir, "snapshot-tied-value-head", buf, len);

    /* A grant of two prompts, an empty one that says retry, an announce, an
     * error reply in place of a grant. */
    int32_t              toks[2][3] = {{1, 5, 6}, {1, 7, 8}};
    Rlhf__Prompt         pr[2], *pp[2] = {&pr[0], &pr[1]};
    Rlhf__SamplingParams sp = RLHF__SAMPLING_PARAMS__INIT;
    sp.temperature = 1.0f;
    sp.top_k = 5;
    sp.top_p = 0.9f;
    sp.max_new_tokens = 8;
    for (int i = 0; i < 2; i++) {
        rlhf__prompt__init(&pr[i]);
        pr[i].prompt_id = (uint64_t)i;
        pr[i].tokens = toks[i];
        pr[i].n_tokens = 3;
        pr[i].answer = (char *)"13";
        pr[i].task = (char *)"arith";
    }
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = (char *)"run-a";
    g.epoch = 2;
    g.lease_id = ((uint64_t)2 << 32) | 1;
    g.deadline_unix_ms = 1700000000000;
    g.min_policy_version = 4;
    g.group_size = 4;
    g.sampling = &sp;
    g.prompts = pp;
    g.n_prompts = 2;
    Rlhf__LeaseGrant empty = RLHF__LEASE_GRANT__INIT;
    empty.version = WIRE_PROTOCOL_VERSION;
    empty.run_id = (char *)"run-a";
    empty.epoch = 2;
    empty.retry_after_ms = 200;
    Rlhf__WeightAnnounce an = RLHF__WEIGHT_ANNOUNCE__INIT;
    an.version = WIRE_PROTOCOL_VERSION;
    an.run_id = (char *)"run-a";
    an.epoch = 2;
    an.policy_version = 6;
    an.total_bytes = 4 * 1024;
    Rlhf__ErrorReply er = RLHF__ERROR_REPLY__INIT;
    er.version = WIRE_PROTOCOL_VERSION;
    er.code = ERR_FORMAT;
    er.reason = (char *)"LeaseRequest refused: bad_shape: LeaseRequest.actor_id is empty";
    len = 0;
    put_sock(&buf, &len, 0);
    fuzz_frame_put_msg(&buf, &len, &g.base);
    put_sock(&buf, &len, 0);
    fuzz_frame_put_msg(&buf, &len, &empty.base);
    put_sock(&buf, &len, 1);
    fuzz_frame_put_msg(&buf, &len, &an.base);
    put_sock(&buf, &len, 0);
    fuzz_frame_put_msg(&buf, &len, &er.base);
    fuzz_seed(dir, "grant-announce-error", buf, len);
    /* Greedy and top-p-only sampling. */
    sp.temperature = 0.0f;
    len = 0;
    put_sock(&buf, &len, 0);
    fuzz_frame_put_msg(&buf, &len, &g.base);
    sp.temperature = 0.7f;
    sp.top_k = 0;
    sp.top_p = 0.5f;
    put_sock(&buf, &len, 0);
    fuzz_frame_put_msg(&buf, &len, &g.base);
    fuzz_seed(dir, "grant-greedy-top-p", buf, len);
    free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init("actor_wire", seeds);
    g_a.rx = wire_snap_rx_new(NULL, SNAP_CAP);
    g_a.scratch = xmalloc(sampler_scratch_bytes(V_LOGITS));
    /* A row with a wide spread, ties and a masked token, as real logits have. */
    for (int i = 0; i < V_LOGITS; i++) g_a.logits[i] = (float)((i * 37) % 23) * 1.5f - 12.0f;
    g_a.logits[V_LOGITS - 1] = -INFINITY;
    return 0;
}
