/* The learner's self-test: a fake actor and reward server in one (real
 * sockets on tcp loopback) drives a learner on a thread through snapshots,
 * leases, expiry, hostile frames on every socket, staleness, a stop and two
 * restarts; then the real rlhf-learner program is run when it is built. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/nn/half.h"
#include "common/base/fileio.h"
#include "common/base/progress.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "common/net/snapshot.h"
#include "common/net/zsock.h"
#include "common/tasks/task.h"
#include "learner/epoch.h"
#include "learner/learner.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/test_list.h"
/* The model width the snapshot's config names, -1 if it does not parse. */
static int snapshot_dim(const WireSnapRx *rx)
{
    ModelConfig mc;
    return ckpt_config_from_json("snapshot", wire_snap_rx_config(rx), &mc, NULL) ? -1 : mc.dim;
}

/* A fake actor and reward server in one: real sockets on tcp loopback. */
typedef struct {
    void     *zctx;
    WireSock *lease, *weights, *snap, *results;
    Tok      *tok;
    char      run_id[64];
    uint64_t  epoch;
    int64_t   version; /* the announced version last seen */
    int       error_replies;
} Fake;

static int fake_open(Fake *f, Learner *l)
{
    memset(f, 0, sizeof *f);
    f->zctx = zmq_ctx_new();
    f->tok = tok_new(TOK_CHARSET_DEFAULT);
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    f->lease = wire_sock_new(f->zctx, ZMQ_DEALER, "fake-lease", &o);
    f->weights = wire_sock_new(f->zctx, ZMQ_SUB, "fake-weights", &o);
    f->snap = wire_sock_new(f->zctx, ZMQ_DEALER, "fake-snapshot", &o);
    f->results = wire_sock_new(f->zctx, ZMQ_PUSH, "fake-results", &o);
    const char *names[4] = {"lease", "weights", "snapshot", "results"};
    WireSock   *socks[4] = {f->lease, f->weights, f->snap, f->results};
    for (int i = 0; i < 4; i++) {
        char ep[256];
        if (!socks[i] || learner_endpoint(l, names[i], ep, sizeof ep) || wire_connect(socks[i], ep))
            return ERR_IO;
    }
    return 0;
}

static void fake_close(Fake *f)
{
    wire_sock_free(&f->lease);
    wire_sock_free(&f->weights);
    wire_sock_free(&f->snap);
    wire_sock_free(&f->results);
    if (f->zctx) zmq_ctx_term(f->zctx);
    tok_free(&f->tok);
}

/* Receives a desc message (0, *out caller frees) or an ErrorReply (1,
 * counted) within 5 s; otherwise an error. */
static int fake_recv(Fake *f, WireSock *s, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out)
{
    WireMsg m = {0};
    int     rc = wire_recv(s, 5000, &m);
    if (rc) return rc;
    rc = wire_decode(desc, wire_msg_data(&m), wire_msg_size(&m), NULL, out, NULL);
    if (rc) {
        ProtobufCMessage *er = NULL;
        if (wire_decode(&rlhf__error_reply__descriptor, wire_msg_data(&m), wire_msg_size(&m), NULL,
                        &er, NULL) == 0) {
            f->error_replies++;
            protobuf_c_message_free_unpacked(er, NULL);
            rc = 1;
        }
    }
    wire_msg_close(&m);
    return rc;
}

/* Sends a LeaseRequest and waits for the grant (caller frees), NULL on timeout. */
static Rlhf__LeaseGrant *fake_lease(Fake *f, int max_prompts)
{
    Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.run_id = f->run_id;
    r.actor_id = "fake";
    r.max_prompts = max_prompts;
    r.policy_version = (uint64_t)f->version;
    r.epoch = f->epoch;
    if (wire_send(f->lease, &r.base, 0)) return NULL;
    for (;;) {
        ProtobufCMessage *out = NULL;
        int               rc = fake_recv(f, f->lease, &rlhf__lease_grant__descriptor, &out);
        if (rc == 1) continue;
        return rc == 0 ? (Rlhf__LeaseGrant *)out : NULL;
    }
}

/* Fetches the current snapshot into rx. Returns 0 when complete. */
static int fake_snapshot(Fake *f, WireSnapRx *rx)
{
    wire_snap_rx_reset(rx);
    Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = "fake";
    if (wire_send(f->snap, &r.base, 0)) return ERR_IO;
    for (;;) {
        ProtobufCMessage *out = NULL;
        int               rc = fake_recv(f, f->snap, &rlhf__weight_chunk__descriptor, &out);
        if (rc == 1) continue;
        if (rc) return rc;
        WireReject rej;
        rc = wire_snap_rx_accept(rx, (Rlhf__WeightChunk *)out, &rej);
        protobuf_c_message_free_unpacked(out, NULL);
        if (rc < 0) return rc;
        if (rc == 1) return 0;
    }
}

/* Waits for an announce of at least version want; returns the version seen or -1. */
static int64_t fake_wait_version(Fake *f, int64_t want, int timeout_ms)
{
    double end = progress_now() + timeout_ms / 1000.0;
    while (progress_now() < end) {
        WireMsg           m = {0};
        ProtobufCMessage *out = NULL;
        int rc = wire_recv_decode(f->weights, 100, &rlhf__weight_announce__descriptor, NULL, &m,
                                  &out, NULL);
        wire_msg_close(&m);
        if (rc) continue;
        Rlhf__WeightAnnounce *a = (Rlhf__WeightAnnounce *)out;
        f->version = (int64_t)a->policy_version;
        snprintf(f->run_id, sizeof f->run_id, "%s", a->run_id);
        f->epoch = a->epoch;
        protobuf_c_message_free_unpacked(out, NULL);
        if (f->version >= want) return f->version;
    }
    return -1;
}

typedef enum {
    FAKE_OK = 0,
    FAKE_BAD_TOKEN,   /* a token id outside the vocabulary */
    FAKE_NAN_REWARD,  /* a NaN reward */
    FAKE_BAD_VERSION, /* protocol version 2 */
    FAKE_WRONG_G,     /* one completion too few */
    FAKE_BAD_PROMPT,  /* prompt tokens that are not the lease's */
    FAKE_OTHER_EPOCH, /* an epoch the learner is not in */
    FAKE_TRUNCATED,   /* the packed frame cut in half */
} FakeMutation;

/* Scores prompt pi of grant g: the first n_correct completions give the
 * answer (reward 1), the others a wrong number (reward 0); every token
 * claims version `version`. */
static int fake_send_group(Fake *f, const Rlhf__LeaseGrant *g, int pi, int n_correct,
                           uint64_t version, FakeMutation mut)
{
    const Rlhf__Prompt *p = g->prompts[pi];
    int                 G = g->group_size - (mut == FAKE_WRONG_G);
    Rlhf__Completion    comp[16], *cp[16];
    Rlhf__Score         score[16], *sp[16];
    /* Every score carries a monitored component, averaged by the metrics. */
    Rlhf__RewardComponent gold = RLHF__REWARD_COMPONENT__INIT, *gold_p = &gold;
    gold.name = "gold";
    gold.value = 0.25f;
    int32_t  toks[16][16];
    float    logp[16][16];
    uint64_t ver[16][16];
    CHECK(G <= 16);
    for (int c = 0; c < G; c++) {
        char text[24];
        snprintf(text, sizeof text, "%s%s", p->answer, c < n_correct ? "" : "1");
        int n = 0;
        for (; text[n]; n++) toks[c][n] = tok_id(f->tok, text[n]);
        toks[c][n++] = TOK_EOS;
        if (mut == FAKE_BAD_TOKEN && c == 0) toks[c][0] = 100000;
        for (int k = 0; k < n; k++) {
            logp[c][k] = -0.5f;
            ver[c][k] = version;
        }
        comp[c] = (Rlhf__Completion)RLHF__COMPLETION__INIT;
        comp[c].n_tokens = comp[c].n_logp_behaviour = comp[c].n_logp_sampled =
            comp[c].n_policy_version = (size_t)n;
        comp[c].tokens = toks[c];
        comp[c].logp_behaviour = comp[c].logp_sampled = logp[c];
        comp[c].policy_version = ver[c];
        comp[c].finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
        cp[c] = &comp[c];
        score[c] = (Rlhf__Score)RLHF__SCORE__INIT;
        score[c].reward = c < n_correct ? 1.0f : 0.0f;
        score[c].n_components = 1;
        score[c].components = &gold_p;
        if (mut == FAKE_NAN_REWARD && c == 0) score[c].reward = NAN;
        sp[c] = &score[c];
    }
    Rlhf__Prompt prompt = *p;
    int32_t      ptoks[TASK_TEXT_MAX];
    if (mut == FAKE_BAD_PROMPT) {
        memcpy(ptoks, p->tokens, sizeof(int32_t) * p->n_tokens);
        ptoks[1] = ptoks[1] == tok_id(f->tok, '1') ? tok_id(f->tok, '2') : tok_id(f->tok, '1');
        prompt.tokens = ptoks;
    }
    Rlhf__SampledGroup sg = RLHF__SAMPLED_GROUP__INIT;
    sg.version = WIRE_PROTOCOL_VERSION;
    sg.run_id = g->run_id;
    sg.epoch = g->epoch + (mut == FAKE_OTHER_EPOCH);
    sg.lease_id = g->lease_id;
    sg.actor_id = "fake";
    sg.prompt = &prompt;
    sg.n_completions = (size_t)G;
    sg.completions = cp;
    sg.sampling = g->sampling;
    sg.group_index = pi;
    sg.group_count = (int32_t)g->n_prompts;
    Rlhf__ScoredGroup s = RLHF__SCORED_GROUP__INIT;
    s.version = mut == FAKE_BAD_VERSION ? 2 : WIRE_PROTOCOL_VERSION;
    s.run_id = g->run_id;
    s.group = &sg;
    s.n_scores = (size_t)G;
    s.scores = sp;
    s.scorer_id = "fake";
    if (mut != FAKE_TRUNCATED) return wire_send(f->results, &s.base, 0);
    size_t   len = protobuf_c_message_get_packed_size(&s.base);
    uint8_t *buf = xmalloc(len);
    protobuf_c_message_pack(&s.base, buf);
    int rc = wire_send_raw(f->results, NULL, 0, buf, len / 2, 0);
    free(buf);
    return rc;
}

typedef struct {
    Learner   *l;
    atomic_int stop;
    int        rc;
} RunArg;

static void *run_thread(void *p)
{
    RunArg *a = p;
    a->rc = learner_run(a->l, &a->stop);
    return NULL;
}

static LearnerConfig test_config(const char *dir, char *paths, size_t cap)
{
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    snprintf(paths, cap, "%s/ckpt", dir);
    snprintf(paths + 512, cap - 512, "%s/metrics.jsonl", dir);
    snprintf(paths + 1024, cap - 1024, "%s/summary.json", dir);
    c.ckpt_dir = paths;
    c.metrics_path = paths + 512;
    c.summary_path = paths + 1024;
    c.steps = 100; /* the test stops the learner itself */
    c.batch_groups = 2;
    c.group_size = 4;
    c.lease_prompts = 2;
    c.lease_timeout_ms = 400;
    c.max_staleness = 1;
    c.lr = 1e-3f;
    c.lr_warmup_steps = 0;
    c.eval_n = 16;
    c.ckpt_every = 0;
    c.poll_ms = 10;
    c.status_every_s = 0;
    c.chunk_bytes = 4096; /* several chunks even for the tiny model */
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.hidden_dim = 64;
    return c;
}

static void test_cluster(const char *dir)
{
    char          paths[1536];
    LearnerConfig cfg = test_config(dir, paths, sizeof paths);
    Learner      *l = learner_new(&cfg);
    EXPECT(l != NULL, "learner_new on ephemeral tcp ports");
    if (!l) return;
    Fake f;
    EXPECT(fake_open(&f, l) == 0, "fake actor connects to all four sockets");
    RunArg            arg = {.l = l};
    pthread_t         th;
    Rlhf__LeaseGrant *g1 = NULL, *g2 = NULL, *g3 = NULL, *g4 = NULL;
    CHECK(pthread_create(&th, NULL, run_thread, &arg) == 0);

    /* Clone pattern: the first snapshot is version 0 of a new run. */
    WireSnapRx *rx = wire_snap_rx_new(NULL, (size_t)1 << 24);
    EXPECT(fake_snapshot(&f, rx) == 0, "snapshot of version 0 fetched in chunks");
    uint32_t have = 0, count = 0;
    wire_snap_rx_progress(rx, &have, &count);
    EXPECT(count > 1 && wire_snap_rx_policy_version(rx) == 0 && wire_snap_rx_epoch(rx) == 0 &&
               strlen(wire_snap_rx_run_id(rx)) == 32 && snapshot_dim(rx) == 32,
           "snapshot: several chunks, version 0, epoch 0, a 32-hex run id, the config");
    snprintf(f.run_id, sizeof f.run_id, "%s", wire_snap_rx_run_id(rx));

    /* Two leases make a batch of 2 groups: one update, one new version. */
    g1 = fake_lease(&f, 5);
    EXPECT(g1 && g1->n_prompts == 2 && g1->group_size == 4 && !strcmp(g1->run_id, f.run_id) &&
               g1->min_policy_version == 0 && g1->sampling && g1->sampling->temperature == 1.0f &&
               g1->sampling->max_new_tokens == 8,
           "a lease of lease_prompts prompts, G, sampling and run id");
    if (!g1) goto out;
    fake_send_group(&f, g1, 0, 1, 0, FAKE_OK);
    fake_send_group(&f, g1, 1, 3, 0, FAKE_OK);
    int64_t seen = fake_wait_version(&f, 1, 10000);
    EXPECT(seen == 1, "one batch makes version 1, announced: saw %lld", (long long)seen);
    fake_send_group(&f, g1, 1, 3, 0, FAKE_OK); /* again: a duplicate */

    /* Expiry: a lease left unanswered is re-issued under a new id. */
    g2 = fake_lease(&f, 2);
    EXPECT(g2 && g2->n_prompts == 2 && g2->min_policy_version == 0,
           "a second lease (min version = version - max_staleness, floored at 0)");
    if (!g2) goto out;
    usleep(600 * 1000);
    g3 = fake_lease(&f, 2);
    EXPECT(g3 && g3->n_prompts == 2 && g3->lease_id != g2->lease_id &&
               g3->prompts[0]->prompt_id == g2->prompts[0]->prompt_id &&
               g3->prompts[1]->prompt_id == g2->prompts[1]->prompt_id,
           "after the deadline the same prompts come back under a new lease id");
    if (!g3) goto out;
    fake_send_group(&f, g2, 0, 2, 1, FAKE_OK); /* late: a duplicate */

    /* Hostile input on every socket, then the same valid work still trains. */
    const char junk[] = "\xff\xff\xff garbage \x01\x02";
    wire_send_raw(f.lease, NULL, 0, junk, sizeof junk, 0);
    wire_send_raw(f.snap, NULL, 0, junk, sizeof junk, 0);
    wire_send_raw(f.results, NULL, 0, junk, sizeof junk, 0);
    Rlhf__LeaseRequest bad = RLHF__LEASE_REQUEST__INIT;
    bad.version = 7;
    bad.max_prompts = 1;
    wire_send(f.lease, &bad.base, 0);
    Rlhf__SnapshotRequest badsnap = RLHF__SNAPSHOT_REQUEST__INIT;
    badsnap.version = 0;
    wire_send(f.snap, &badsnap.base, 0);
    const FakeMutation muts[] = {FAKE_BAD_TOKEN, FAKE_NAN_REWARD, FAKE_BAD_VERSION,
                                 FAKE_WRONG_G,   FAKE_BAD_PROMPT, FAKE_TRUNCATED};
    for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++)
        fake_send_group(&f, g3, 0, 1, 1, muts[i]);
    fake_send_group(&f, g3, 0, 1, 1, FAKE_OTHER_EPOCH);
    fake_send_group(&f, g3, 0, 2, 1, FAKE_OK);
    fake_send_group(&f, g3, 1, 2, 1, FAKE_OK);
    seen = fake_wait_version(&f, 2, 10000);
    EXPECT(seen == 2,
           "after garbage on every socket the learner still trains: saw version %lld, expected 2",
           (long long)seen);

    /* Staleness: version 2, max_staleness 1: tokens of version 0 are dropped. */
    g4 = fake_lease(&f, 2);
    EXPECT(g4 && g4->min_policy_version == 1, "min_policy_version = 2 - 1");
    if (!g4) goto out;
    fake_send_group(&f, g4, 0, 2, 0, FAKE_OK);
    /* The snapshot equals the learner's weights (compared after the stop). */
    EXPECT(fake_snapshot(&f, rx) == 0 && wire_snap_rx_policy_version(rx) == 2,
           "a garbage snapshot request did not stop the snapshot service (version 2)");
    EXPECT(f.error_replies == 4,
           "each refused lease or snapshot request was answered with an ErrorReply: %d, expected 4",
           f.error_replies);
    usleep(300 * 1000); /* let the last frames land before stopping */
out:
    atomic_store(&arg.stop, 1);
    pthread_join(th, NULL);
    EXPECT(arg.rc == 0, "learner_run returned %d (%s) when stopped, expected 0", arg.rc,
           err_str(arg.rc));

    LearnerStatus st;
    learner_status(l, &st);
    const LeaseCounters *c = &st.lease;
    if (expect_verbose())
        printf("  issued %llu trained %llu stale %llu reissued %llu dup %llu (epoch %llu) "
               "in flight %llu buffered %llu; rejects lease %llu results %llu snapshot %llu\n",
               (unsigned long long)c->issued, (unsigned long long)c->trained,
               (unsigned long long)c->dropped_stale, (unsigned long long)c->reissued,
               (unsigned long long)c->duplicates, (unsigned long long)st.dup_epoch,
               (unsigned long long)c->in_flight, (unsigned long long)c->buffered,
               (unsigned long long)st.rejects_lease, (unsigned long long)st.rejects_results,
               (unsigned long long)st.rejects_snapshot);
    EXPECT(st.version == 2 && st.step == 2, "two updates: version %lld step %lld, expected 2 and 2",
           (long long)st.version, (long long)st.step);
    EXPECT(c->issued == 8 && c->trained == 4 && c->reissued == 2 && c->dropped_stale == 1 &&
               c->in_flight == 1 && c->buffered == 0,
           "lease counters: %llu issued = %llu trained + %llu re-issued + %llu stale + %llu in "
           "flight + %llu buffered, expected 8 = 4 + 2 + 1 + 1 + 0",
           (unsigned long long)c->issued, (unsigned long long)c->trained,
           (unsigned long long)c->reissued, (unsigned long long)c->dropped_stale,
           (unsigned long long)c->in_flight, (unsigned long long)c->buffered);
    EXPECT(c->issued ==
               c->trained + c->dropped_stale + c->reissued + c->failed + c->in_flight + c->buffered,
           "the accounting identity holds");
    EXPECT(c->duplicates == 3 && st.dup_epoch == 1,
           "duplicates %llu (epoch %llu), expected 3 (1): a repeat, a late group of an expired "
           "lease, another epoch",
           (unsigned long long)c->duplicates, (unsigned long long)st.dup_epoch);
    EXPECT(st.rejects_lease == 2 && st.rejects_snapshot == 2 && st.rejects_results == 7,
           "rejections per socket: lease %llu snapshot %llu results %llu, expected 2, 2, 7",
           (unsigned long long)st.rejects_lease, (unsigned long long)st.rejects_snapshot,
           (unsigned long long)st.rejects_results);
    size_t      bytes = 0;
    const void *snap = wire_snap_rx_data(rx, &bytes);
    Model      *pol = learner_policy(l);
    /* Snapshots go out in bf16 by default: the fp32 masters rounded once. */
    size_t n_par = model_num_params(pol), n_diff = 0;
    bool   is_bf16 = wire_snap_rx_dtype(rx) == RLHF__WEIGHT_DTYPE__WEIGHT_DTYPE_BF16;
    for (size_t i = 0; snap && is_bf16 && bytes == n_par * 2 && i < n_par; i++)
        n_diff += ((const uint16_t *)snap)[i] != half_f32_to_bf16(model_params(pol)[i]);
    EXPECT(snap && is_bf16 && bytes == n_par * 2 && n_diff == 0,
           "the fetched snapshot (%zu bytes, dtype %d, %zu values differ) is the learner's "
           "weights rounded to bf16 (%zu bytes)",
           bytes, wire_snap_rx_dtype(rx), n_diff, n_par * 2);
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char  *text = NULL;
    size_t len = 0;
    int    lines = 0;
    if (fileio_read_all(path, 1 << 20, false, &text, &len) == 0)
        for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    EXPECT(lines == 2 && text && strstr(text, "\"reward_mean\"") && strstr(text, "\"kl_ref\"") &&
               strstr(text, "\"staleness_hist\"") && strstr(text, "\"dropped_stale\"") &&
               strstr(text, "\"components\":{\"gold\":0.25}"),
           "%d metrics records, expected 2 (one per step) with reward, KL, staleness, lease "
           "counters and the mean of each reward component",
           lines);
    free(text);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *sum = json_load_file(path, 0, NULL);
    EXPECT(sum && json_integer_value(json_object_get(sum, "steps")) == 2 &&
               json_is_true(json_object_get(sum, "stopped_early")) &&
               json_is_true(json_object_get(sum, "accounting_ok")) &&
               json_object_get(sum, "accuracy_before") && json_object_get(sum, "accuracy_after") &&
               json_integer_value(json_object_get(sum, "in_flight")) == 1,
           "summary written on stop with steps, accuracies and counters");
    json_decref(sum);
    char run_id[33];
    snprintf(run_id, sizeof run_id, "%s", st.run_id);
    if (g1) protobuf_c_message_free_unpacked(&g1->base, NULL);
    if (g2) protobuf_c_message_free_unpacked(&g2->base, NULL);
    if (g3) protobuf_c_message_free_unpacked(&g3->base, NULL);
    if (g4) protobuf_c_message_free_unpacked(&g4->base, NULL);
    wire_snap_rx_free(&rx);
    fake_close(&f);
    learner_free(&l);

    /* Restart: same run id, a new epoch (one restart more, and a random
     * half: learner/epoch.h), the checkpoint's version; the unfinished
     * groups count as re-issued. */
    l = learner_new(&cfg);
    EXPECT(l != NULL, "a second learner resumes from the checkpoint");
    if (!l) return;
    learner_status(l, &st);
    uint64_t epoch1 = st.epoch;
    EXPECT(!strcmp(st.run_id, run_id) && epoch_restarts(st.epoch) == 1 &&
               (st.epoch & 0xffffffffu) != 0 && st.version == 2 && st.step == 2,
           "resumed: run id %s epoch %#llx version %lld step %lld, expected %s, 0x1........ "
           "(one restart, a nonce), 2, 2",
           st.run_id, (unsigned long long)st.epoch, (long long)st.version, (long long)st.step,
           run_id);
    EXPECT(st.lease.issued == 8 && st.lease.reissued == 3 && st.lease.in_flight == 0,
           "resumed lease counters: issued %llu reissued %llu in flight %llu, expected 8, 3, 0 "
           "(the group in flight counts as re-issued)",
           (unsigned long long)st.lease.issued, (unsigned long long)st.lease.reissued,
           (unsigned long long)st.lease.in_flight);
    learner_free(&l);
    l = learner_new(&cfg);
    learner_status(l, &st);
    EXPECT(l && epoch_restarts(st.epoch) == 2 && st.epoch != epoch1,
           "every start takes a new epoch, even without a step: %#llx after %#llx",
           (unsigned long long)st.epoch, (unsigned long long)epoch1);
    learner_free(&l);
}

/* A lease with prompts in it: asks again (up to 5 s) while the learner
 * answers with an empty grant, as it does when a request overtakes the
 * group that frees a place (they come on different sockets). */
static Rlhf__LeaseGrant *fake_lease_some(Fake *f, int max_prompts)
{
    for (int i = 0; i < 100; i++) {
        Rlhf__LeaseGrant *g = fake_lease(f, max_prompts);
        if (!g || g->n_prompts > 0) return g;
        protobuf_c_message_free_unpacked(&g->base, NULL);
        usleep(50 * 1000);
    }
    return NULL;
}

/* DAPO's dynamic sampling in the synchronous mode (max staleness 0): a
 * group whose rewards are all equal is dropped on arrival and counted, its
 * place goes to a newly leased prompt, and the batch is made of groups with
 * signal only. Staleness 0 leases exactly one batch at a time, each at the
 * current version. */
static void test_dynamic_sampling(const char *dir)
{
    char sub[256], paths[1536];
    snprintf(sub, sizeof sub, "%s/dyn", dir);
    LearnerConfig cfg = test_config(sub, paths, sizeof paths);
    cfg.max_staleness = 0;
    cfg.lease_timeout_ms = 10000;
    cfg.algo.dynamic_sampling = true;
    Learner *l = learner_new(&cfg);
    EXPECT(l != NULL, "learner_new with dynamic sampling");
    if (!l) return;
    Fake f;
    EXPECT(fake_open(&f, l) == 0, "fake actor connects");
    RunArg            arg = {.l = l};
    pthread_t         th;
    Rlhf__LeaseGrant *g[4] = {NULL};
    WireSnapRx       *rx = wire_snap_rx_new(NULL, (size_t)1 << 24);
    CHECK(pthread_create(&th, NULL, run_thread, &arg) == 0);
    if (fake_snapshot(&f, rx) != 0) goto out;
    snprintf(f.run_id, sizeof f.run_id, "%s", wire_snap_rx_run_id(rx));

    /* Staleness 0: one batch (2 groups) out at a time. */
    g[0] = fake_lease(&f, 4);
    EXPECT(g[0] && g[0]->n_prompts == 2 && g[0]->min_policy_version == 0,
           "sync: a lease of the whole batch at version 0");
    if (!g[0]) goto out;
    fake_send_group(&f, g[0], 0, 4, 0, FAKE_OK); /* all right: no signal, dropped */
    fake_send_group(&f, g[0], 1, 2, 0, FAKE_OK); /* kept */
    /* The dropped group's place is leased again (only that one place). */
    g[1] = fake_lease_some(&f, 4);
    EXPECT(g[1] && g[1]->n_prompts == 1,
           "the flat group's place is leased: %d prompt(s), expected 1",
           g[1] ? (int)g[1]->n_prompts : -1);
    if (!g[1]) goto out;
    fake_send_group(&f, g[1], 0, 0, 0, FAKE_OK); /* all wrong: dropped too */
    g[2] = fake_lease_some(&f, 4);
    EXPECT(g[2] && g[2]->n_prompts == 1, "and again");
    if (!g[2]) goto out;
    fake_send_group(&f, g[2], 0, 1, 0, FAKE_OK); /* kept: the batch is full */
    int64_t seen = fake_wait_version(&f, 1, 10000);
    EXPECT(seen == 1, "two groups with signal make version 1: saw %lld", (long long)seen);
    g[3] = fake_lease_some(&f, 4);
    EXPECT(g[3] && g[3]->n_prompts == 2 && g[3]->min_policy_version == 1,
           "sync: the next batch is leased at the new version only");
    usleep(200 * 1000);
out:
    atomic_store(&arg.stop, 1);
    pthread_join(th, NULL);
    LearnerStatus st;
    learner_status(l, &st);
    const LeaseCounters *c = &st.lease;
    if (expect_verbose())
        printf("  dynamic sampling: issued %llu trained %llu in flight %llu buffered %llu, "
               "version %lld\n",
               (unsigned long long)c->issued, (unsigned long long)c->trained,
               (unsigned long long)c->in_flight, (unsigned long long)c->buffered,
               (long long)st.version);
    EXPECT(c->issued == 6 && c->trained == 4 && c->in_flight == 2 && c->buffered == 0 &&
               c->issued == c->trained + c->dropped_stale + c->reissued + c->failed + c->in_flight +
                                c->buffered,
           "counters: issued %llu = trained %llu (2 dropped flat + 2 in the batch) + in flight "
           "%llu, expected 6 = 4 + 2",
           (unsigned long long)c->issued, (unsigned long long)c->trained,
           (unsigned long long)c->in_flight);
    char path[700];
    snprintf(path, sizeof path, "%s/summary.json", sub);
    json_t *sum = json_load_file(path, 0, NULL);
    snprintf(path, sizeof path, "%s/metrics.jsonl", sub);
    json_t *rec = json_load_file(path, JSON_DISABLE_EOF_CHECK, NULL);
    EXPECT(sum && json_integer_value(json_object_get(sum, "groups_flat")) == 2 && rec &&
               json_integer_value(json_object_get(rec, "groups_flat")) == 2 &&
               json_integer_value(json_object_get(rec, "groups")) == 2,
           "metrics and summary count the 2 dropped groups; the step trained 2");
    json_decref(sum);
    json_decref(rec);
    for (int i = 0; i < 4; i++)
        if (g[i]) protobuf_c_message_free_unpacked(&g[i]->base, NULL);
    wire_snap_rx_free(&rx);
    fake_close(&f);
    learner_free(&l);
}

/* Runs the program p and, when term_after_file is set, sends SIGTERM once
 * that file exists. Returns the exit status, or -1 if it could not be
 * started, died of a signal or ran over 20 s (then it is killed). */
static int run_learner(Proc *p, const char *term_after_file)
{
    double t0 = progress_now();
    if (proc_start(p) != 0) return -1;
    if (term_after_file) {
        while (access(term_after_file, F_OK) != 0 && proc_is_running(p) &&
               progress_now() - t0 <= 20.0)
            usleep(10 * 1000);
        if (access(term_after_file, F_OK) == 0) {
            usleep(200 * 1000); /* the sockets open right after the first checkpoint */
            proc_signal(p, SIGTERM);
        }
    }
    if (proc_wait(p, 20.0 - (progress_now() - t0)) != 0) {
        proc_kill(p);
        return -1;
    }
    return proc_exit_code(p);
}

/* The real program, when it is built (tests/support/proc.h says where it
 * is looked for): SIGTERM is a clean shutdown with a checkpoint and a
 * summary, exit 0; a bad flag is exit 2. */
static void test_binary(const char *dir)
{
    char build[PATH_MAX], prog[PATH_MAX + 16];
    proc_build_dir(build, sizeof build);
    snprintf(prog, sizeof prog, "%s/rlhf-learner", build);
    if (access(prog, X_OK) != 0) {
        if (expect_verbose()) printf("  skipped: the program (no %s)\n", prog);
        return;
    }
    char ck[600], metrics[600], summary[600], cfg_file[640];
    snprintf(ck, sizeof ck, "%s/bin-ckpt", dir);
    snprintf(metrics, sizeof metrics, "%s/bin-metrics.jsonl", dir);
    snprintf(summary, sizeof summary, "%s/bin-summary.json", dir);
    snprintf(cfg_file, sizeof cfg_file, "%s/config.json", ck);
    const char *const argv[] = {"rlhf-learner",
                                "--lease",
                                "tcp://127.0.0.1:*",
                                "--results",
                                "tcp://127.0.0.1:*",
                                "--weights",
                                "tcp://127.0.0.1:*",
                                "--snapshot",
                                "tcp://127.0.0.1:*",
                                "--ckpt-dir",
                                ck,
                                "--metrics",
                                metrics,
                                "--summary",
                                summary,
                                "--eval-n",
                                "8",
                                "--dim",
                                "32",
                                "--layers",
                                "1",
                                "--heads",
                                "2",
                                "--hidden",
                                "64",
                                "--status-every",
                                "0",
                                NULL};
    Proc             *p = proc_new(prog, argv, NULL);
    int               rc = run_learner(p, cfg_file);
    json_t           *sum = json_load_file(summary, 0, NULL);
    if (!EXPECT(rc == 0 && sum && json_is_true(json_object_get(sum, "stopped_early")) &&
                    json_integer_value(json_object_get(sum, "steps")) == 0 && ckpt_exists(ck),
                "rlhf-learner: SIGTERM: exit %d, expected a clean stop (exit 0, checkpoint, "
                "summary with steps 0 and stopped_early)",
                rc))
        proc_report(p, 40);
    json_decref(sum);
    proc_free(&p);
    const char *const bad[] = {"rlhf-learner", "--max-staleness", "-1", NULL};
    p = proc_new(prog, bad, NULL);
    rc = run_learner(p, NULL);
    if (!EXPECT(rc == 2, "rlhf-learner: a bad flag value: exit %d, expected 2", rc))
        proc_report(p, 40);
    proc_free(&p);
}

int learner_selftest(bool verbose)
{
    (void)verbose; /* the runner passed it to expect_begin: see expect_verbose */
    char dir[] = "/tmp/rlhf-learner-test-XXXXXX";
    CHECK(mkdtemp(dir));
    test_cluster(dir);
    test_dynamic_sampling(dir);
    test_binary(dir);
    fileio_remove_tree(dir);
    return expect_end();
}
