/* actor_lora_selftest: how an actor follows a LoRA run's snapshots, against
 * a fake snapshot ROUTER on tcp loopback, one fetch at a time in a thread:
 * adapters alone for a base it does not hold are refused (nothing
 * installed, no crash) and the next request says it lacks the base; the
 * base and adapters install as base + merge, bit for bit; adapters alone
 * then replace the previous merge (not stack on it); adapters of another
 * learner epoch are refused and the base forgotten; and the same in bf16
 * (the learner's default wire type). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actor/actor.h"
#include "actor/actor_int.h"
#include "actor/actor_weights.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/net/snapshot.h"
#include "common/nn/half.h"
#include "common/nn/lora.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    Actor *a;
    int    rc;
} Fetch;

static void *fetch_thread(void *p)
{
    Fetch *f = p;
    int    retry_ms = 0;
    /* ERR_TIMEOUT: the socket is not connected yet (the request could not
     * go out); anything else is the answer's outcome. */
    for (int k = 0; k < 50; k++) {
        f->rc = actor_fetch_attempt(f->a, &retry_ms);
        if (f->rc != ERR_TIMEOUT) break;
        usleep(50 * 1000);
    }
    return NULL;
}

/* What the fake learner serves for one request. */
typedef struct {
    uint64_t    epoch, version;
    int         kind, dtype;
    const void *block;
    size_t      bytes;
} Serve;

/* Runs one fetch of a against ROUTER snap, answering its request with s.
 * Returns the fetch's result; *have_base gets the request's flag. */
static int one_fetch(Actor *a, WireSock *snap, const char *config, const Serve *s, bool *have_base)
{
    Fetch     f = {.a = a, .rc = -999};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fetch_thread, &f) == 0);
    WireMsg           m;
    ProtobufCMessage *msg = NULL;
    int               rc = ERR_TIMEOUT;
    for (int k = 0; k < 300 && rc; k++)
        rc = wire_recv_decode(snap, 20, &rlhf__snapshot_request__descriptor, NULL, &m, &msg, NULL);
    if (EXPECT(rc == 0, "no SnapshotRequest came (%s)", err_str(rc))) {
        *have_base = ((Rlhf__SnapshotRequest *)msg)->have_base;
        WireSnapMeta meta = {.run_id = "run-lora",
                             .epoch = s->epoch,
                             .policy_version = s->version,
                             .config_json = config,
                             .dtype = s->dtype,
                             .kind = s->kind};
        EXPECT(wire_snap_send(snap, m.peer, m.peer_len, &meta, s->block, s->bytes, 4096) == 0, "%s",
               "snapshot not sent");
        protobuf_c_message_free_unpacked(msg, NULL);
        wire_msg_close(&m);
    }
    pthread_join(th, NULL);
    return f.rc;
}

/* Random adapters with a random B too (a fresh B is zero). */
static void fill_adapters(Lora *lo, uint64_t seed)
{
    lora_init_random(lo, seed);
    Rng r;
    rng_seed(&r, seed + 1);
    float *p = lora_params(lo);
    for (size_t i = 0; i < lora_num_params(lo); i++)
        if (p[i] == 0.0f) p[i] = 0.2f * rng_normal(&r);
}

/* Whether a's parameters are base + lo merged, bit for bit. */
static bool holds_merge(Actor *a, const Model *base, const Lora *lo)
{
    Model *want = model_new(model_config(base));
    model_copy_params(want, base);
    lora_merge(lo, want);
    bool ok = a->model && !memcmp(model_params(a->model), model_params(want),
                                  model_num_params(want) * sizeof(float));
    model_free(&want);
    return ok;
}

int actor_lora_selftest(bool verbose)
{
    expect_begin("actor_lora", verbose);
    void     *zctx = zmq_ctx_new();
    char      ep[256];
    WireSock *snap = wire_sock_new(zctx, ZMQ_ROUTER, "fake-snap", NULL);
    CHECK(snap && zmq_bind(wire_sock_zmq(snap), "tcp://127.0.0.1:*") == 0 &&
          wire_last_endpoint(snap, ep, sizeof ep) == 0);
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    ModelConfig mc = model_config_llama(16, 1, 2, 1, 24, tok_vocab_size(tok), 32);
    LoraConfig  lc = {.rank = 2, .alpha = 4.0f, .targets = LORA_TARGETS_ALL};
    Model      *base = model_new(&mc);
    model_init_random(base, 3, 0.2f);
    Lora *lo = lora_new(&lc, &mc);
    fill_adapters(lo, 5);
    char   *cfg_text = ckpt_config_to_json(&mc, tok);
    json_t *o = json_loads(cfg_text, 0, NULL);
    CHECK(o);
    ckpt_lora_config_to_json(o, &lc);
    char *config = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    free(cfg_text);
    size_t n = model_num_params(base), na = lora_num_params(lo);
    float *block = xmalloc((n + na) * sizeof(float));
    memcpy(block, model_params(base), n * sizeof(float));
    memcpy(block + n, lora_params(lo), na * sizeof(float));

    ActorConfig cfg = ACTOR_DEFAULTS;
    cfg.snapshot_ep = ep;
    cfg.id = "actor-lora";
    cfg.snapshot_timeout_ms = 2000;
    cfg.status_every_s = 0;
    cfg.decode_weights = KERN_F32;
    Actor *a = actor_new(&cfg);
    CHECK(a);
    static atomic_int no_stop; /* actor_run sets the flag; fetches alone read it */
    a->stop = &no_stop;
    bool have_base = true;

    /* 1. Adapters alone to an actor without the base: refused. */
    Serve s = {.epoch = 1, .version = 1, .kind = 2, .block = block + n, .bytes = na * 4};
    int   rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(!have_base && rc == ERR_MISMATCH && !actor_has_weights(a) && !a->base,
           "adapters without the base: have_base %d, rc %d, weights %d; expected 0, "
           "ERR_MISMATCH, none",
           have_base, rc, actor_has_weights(a));
    /* 2. The base and adapters: base + merge. */
    s = (Serve){.epoch = 1, .version = 1, .kind = 1, .block = block, .bytes = (n + na) * 4};
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == 0 && !have_base && a->base && holds_merge(a, base, lo),
           "base and adapters: rc %d, have_base %d; expected 0, 0 and base + merge", rc, have_base);
    /* 3. New adapters alone: they replace the previous merge. */
    fill_adapters(lo, 9);
    memcpy(block + n, lora_params(lo), na * sizeof(float));
    s = (Serve){.epoch = 1, .version = 2, .kind = 2, .block = block + n, .bytes = na * 4};
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == 0 && have_base && holds_merge(a, base, lo) && a->held.version == 2,
           "adapters alone: rc %d, have_base %d, version %llu; expected 0, 1, v2 = base + the "
           "new merge",
           rc, have_base, (unsigned long long)a->held.version);
    /* 4. Adapters of another epoch (a restarted learner): refused, base forgotten. */
    s.epoch = 2;
    s.version = 3;
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == ERR_MISMATCH && !a->base && a->held.version == 2,
           "adapters of another epoch: rc %d, base %s, held v%llu; expected ERR_MISMATCH, "
           "dropped, v2 kept",
           rc, a->base ? "kept" : "dropped", (unsigned long long)a->held.version);
    s = (Serve){.epoch = 2, .version = 3, .kind = 1, .block = block, .bytes = (n + na) * 4};
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == 0 && !have_base && holds_merge(a, base, lo),
           "after the refusal: rc %d, have_base %d; expected the base asked for and installed", rc,
           have_base);
    /* 5. bf16 on the wire (the learner's default): the base and adapters
     * widen exactly, so the actor holds bf16(base) + merge(bf16(adapters)). */
    uint16_t *half = xmalloc((n + na) * sizeof(uint16_t));
    for (size_t i = 0; i < n + na; i++) half[i] = half_f32_to_bf16(block[i]);
    Model *rbase = model_new(&mc);
    Lora  *rlo = lora_new(&lc, &mc);
    for (size_t i = 0; i < n; i++) model_params(rbase)[i] = half_bf16_to_f32(half[i]);
    for (size_t i = 0; i < na; i++) lora_params(rlo)[i] = half_bf16_to_f32(half[n + i]);
    s = (Serve){
        .epoch = 3, .version = 4, .kind = 1, .dtype = 1, .block = half, .bytes = (n + na) * 2};
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == 0 && holds_merge(a, rbase, rlo), "bf16 base and adapters: rc %d", rc);
    s = (Serve){
        .epoch = 3, .version = 5, .kind = 2, .dtype = 1, .block = half + n, .bytes = na * 2};
    rc = one_fetch(a, snap, config, &s, &have_base);
    EXPECT(rc == 0 && have_base && holds_merge(a, rbase, rlo) && a->held.version == 5,
           "bf16 adapters alone: rc %d, have_base %d", rc, have_base);
    free(half);
    lora_free(&rlo);
    model_free(&rbase);

    actor_free(&a);
    free(block);
    free(config);
    lora_free(&lo);
    model_free(&base);
    tok_free(&tok);
    wire_sock_free(&snap);
    zmq_ctx_term(zctx);
    return expect_end();
}
