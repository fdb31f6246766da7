/* learner_train's self-test (issue 8, finding 5: rewards were trusted
 * whole). A reward of 3e38 sent over a real results socket is refused,
 * counted under bad_value, and its lease slot stays accounted for; a reward
 * on the bound is taken. With the range opened wide, the same reward under
 * PPO drives the critic's gradient to infinity after the policy's step: the
 * update (learner_train_step, called directly) then takes no step at all
 * (policy, critic, both optimizers' moments and step counts bit-identical,
 * the version unchanged) and its groups count as failed, with the lease
 * identity intact; the next good batch trains. The update's carried state
 * (REINFORCE's baseline, an adaptive KL coefficient) survives a resume. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/progress.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "learner/learner.h"
#include "learner/learner_int.h"
#include "learner/learner_record.h"
#include "learner/learner_train.h"
#include "tests/support/testfs.h"
#include "tests/support/expect.h"
#include "tests/support/learner_feed.h"
#include "tests/test_list.h"

static LearnerConfig small_config(AlgoKind kind)
{
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    c.ckpt_dir = c.metrics_path = c.summary_path = NULL;
    c.steps = 100;
    c.batch_groups = 2;
    c.group_size = 4;
    c.lease_prompts = 2;
    c.lease_timeout_ms = 60000; /* nothing expires during the test */
    c.max_staleness = 1;
    c.lr = 1e-3f;
    c.lr_warmup_steps = 0;
    c.eval_n = 0;
    c.poll_ms = 10;
    c.status_every_s = 0;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.hidden_dim = 64;
    c.algo.kind = kind;
    return c;
}

static bool identity_holds(const LeaseCounters *c)
{
    return c->issued ==
           c->trained + c->dropped_stale + c->reissued + c->failed + c->in_flight + c->buffered;
}

/* Everything an update may change, copied. */
typedef struct {
    float  *p[2], *m[2], *v[2];
    size_t  n[2];
    int64_t steps[2];
} State;

static void state_take(Learner *l, State *s)
{
    Model *mods[2] = {l->policy, l->critic};
    Optim *opts[2] = {l->opt, l->critic_opt};
    for (int i = 0; i < 2; i++) {
        s->n[i] = model_num_params(mods[i]);
        size_t b = s->n[i] * sizeof(float);
        s->p[i] = xmalloc(b);
        s->m[i] = xmalloc(b);
        s->v[i] = xmalloc(b);
        memcpy(s->p[i], model_params(mods[i]), b);
        memcpy(s->m[i], optim_state_m(opts[i]), b);
        memcpy(s->v[i], optim_state_v(opts[i]), b);
        s->steps[i] = optim_step_count(opts[i]);
    }
}

/* Which of the 8 pieces (params, m, v, step count of policy and critic)
 * differ from s, as a bit mask. */
static int state_diff(Learner *l, const State *s)
{
    Model *mods[2] = {l->policy, l->critic};
    Optim *opts[2] = {l->opt, l->critic_opt};
    int    diff = 0;
    for (int i = 0; i < 2; i++) {
        size_t b = s->n[i] * sizeof(float);
        diff |= (memcmp(s->p[i], model_params(mods[i]), b) != 0) << (4 * i);
        diff |= (memcmp(s->m[i], optim_state_m(opts[i]), b) != 0) << (4 * i + 1);
        diff |= (memcmp(s->v[i], optim_state_v(opts[i]), b) != 0) << (4 * i + 2);
        diff |= (s->steps[i] != optim_step_count(opts[i])) << (4 * i + 3);
    }
    return diff;
}

static void state_free(State *s)
{
    for (int i = 0; i < 2; i++) {
        free(s->p[i]);
        free(s->m[i]);
        free(s->v[i]);
    }
}

/* PPO, reward 3e38 let through: the update fails and changes nothing. */
static void test_nonfinite_update(bool verbose)
{
    LearnerConfig c = small_config(ALGO_PPO);
    c.reward_min = -FLT_MAX;
    c.reward_max = FLT_MAX;
    Learner *l = learner_new(&c);
    if (!EXPECT(l != NULL, "learner_new (PPO, the reward range opened wide)")) return;
    State before;
    state_take(l, &before);
    int kept = learner_feed(l, 2, 3e38f);
    EXPECT(kept == 2, "both groups with a reward of 3e38 accepted into the batch: %d", kept);
    fileio_capture_begin();
    int           stepped = learner_train_step(l);
    char         *log = fileio_capture_end(verbose);
    int           diff = state_diff(l, &before);
    LeaseCounters lc;
    lease_counters(l->leases, &lc);
    if (verbose) printf("  train: failed update: state diff mask 0x%02x; %s", diff, log);
    EXPECT(stepped == 0 && l->version == 0 && l->step == 0,
           "the failed update took no step: returned %d, version %lld, step %lld (expected 0, "
           "0, 0)",
           stepped, (long long)l->version, (long long)l->step);
    EXPECT(diff == 0,
           "policy, critic, both optimizers' moments and step counts unchanged: diff mask 0x%02x "
           "(bit 0 policy params, 1 m, 2 v, 3 steps; 4-7 the critic's)",
           diff);
    EXPECT(strstr(log, "failed") && strstr(log, "restored"),
           "the failure is logged with what was restored");
    free(log);
    EXPECT(lc.failed == 2 && lc.trained == 0 && lc.buffered == 0 && identity_holds(&lc),
           "its groups count as failed: failed %llu trained %llu buffered %llu (expected 2, 0, "
           "0), identity %s",
           (unsigned long long)lc.failed, (unsigned long long)lc.trained,
           (unsigned long long)lc.buffered, identity_holds(&lc) ? "holds" : "BROKEN");

    /* The learner is not wedged: a good batch trains from the same state. */
    kept = learner_feed(l, 2, 1.0f);
    stepped = learner_train_step(l);
    diff = state_diff(l, &before);
    lease_counters(l->leases, &lc);
    EXPECT(kept == 2 && stepped == 1 && l->version == 1 && (diff & 0x1) && (diff & 0x10) &&
               lc.trained == 2 && lc.failed == 2 && identity_holds(&lc),
           "the next good batch trains: kept %d, stepped %d, version %lld, policy %s, critic %s, "
           "trained %llu failed %llu",
           kept, stepped, (long long)l->version, diff & 0x1 ? "moved" : "still",
           diff & 0x10 ? "moved" : "still", (unsigned long long)lc.trained,
           (unsigned long long)lc.failed);
    state_free(&before);
    learner_free(&l);
}

/* The update's carried state survives a restart: REINFORCE's baseline and
 * an adaptive KL coefficient, moved by two steps, are saved with the
 * checkpoint and the resumed learner starts from them, not from the
 * configured start (0 baseline, --kl-beta). */
static void test_carry_resume(void)
{
    char tmp[PATH_MAX], dir[PATH_MAX + 8];
    if (!EXPECT(testfs_tmpdir_new("carry", tmp, sizeof tmp) == 0, "a temp dir")) return;
    snprintf(dir, sizeof dir, "%s/ckpt", tmp);
    LearnerConfig c = small_config(ALGO_REINFORCE);
    c.ckpt_dir = dir;
    c.algo.kl_beta = 0.05f;
    c.algo.kl_target = 1e-6f;  /* far below the KL of two steps at lr 1e-3 */
    c.algo.kl_horizon = 10.0f; /* a short horizon: beta moves in two steps */
    Learner *l = learner_new(&c);
    if (!EXPECT(l != NULL, "learner_new (REINFORCE, adaptive KL)")) goto out;
    for (int i = 0; i < 2; i++) {
        learner_feed(l, 2, 1.0f);
        learner_train_step(l);
    }
    AlgoCarry was;
    algo_carry_get(l->algo, &was);
    EXPECT(learner_record_ckpt(l, false) == 0, "checkpoint saved");
    learner_free(&l);
    EXPECT(was.has_baseline && was.baseline != 0.0 && fabs(was.kl_beta - 0.05) > 1e-6,
           "two steps moved the state: baseline %g (has %d), KL coefficient %g (from 0.05)",
           was.baseline, was.has_baseline, was.kl_beta);
    l = learner_new(&c);
    if (!EXPECT(l != NULL, "learner_new resuming '%s'", dir)) goto out;
    AlgoCarry now;
    algo_carry_get(l->algo, &now);
    EXPECT(now.has_baseline == was.has_baseline && fabs(now.baseline - was.baseline) < 1e-9 &&
               fabs(now.kl_beta - was.kl_beta) < 1e-9,
           "resumed: baseline %g (saved %g), KL coefficient %g (saved %g)", now.baseline,
           was.baseline, now.kl_beta, was.kl_beta);
    learner_free(&l);
    /* A fixed coefficient is the config's: the operator's new --kl-beta wins. */
    c.algo.kl_target = 0.0f;
    c.algo.kl_beta = 0.2f;
    l = learner_new(&c);
    if (EXPECT(l != NULL, "learner_new resuming with a fixed coefficient")) {
        algo_carry_get(l->algo, &now);
        EXPECT(fabs(now.kl_beta - 0.2) < 1e-7 && fabs(now.baseline - was.baseline) < 1e-9,
               "fixed KL coefficient %g (the config's 0.2), baseline %g (saved %g)", now.kl_beta,
               now.baseline, was.baseline);
    }
    learner_free(&l);
out:
    testfs_tmpdir_remove(tmp);
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

/* Receives one message of type desc within 5 s (caller frees), or NULL. */
static ProtobufCMessage *recv_one(WireSock *s, const ProtobufCMessageDescriptor *desc)
{
    double end = progress_now() + 5.0;
    while (progress_now() < end) {
        WireMsg           m = {0};
        ProtobufCMessage *out = NULL;
        int               rc = wire_recv_decode(s, 100, desc, NULL, &m, &out, NULL);
        wire_msg_close(&m);
        if (rc == 0) return out;
    }
    return NULL;
}

/* Sends the scored group of prompt pi of grant g: the first two of its G
 * completions are the answer with reward `reward`, the others wrong (0). */
static int send_group(WireSock *s, const Tok *tok, const Rlhf__LeaseGrant *g, int pi, float reward)
{
    const Rlhf__Prompt *p = g->prompts[pi];
    enum { G = 4, T = 16 };
    CHECK(g->group_size == G);
    Rlhf__Completion comp[G], *cp[G];
    Rlhf__Score      score[G], *sp[G];
    int32_t          toks[G][T];
    float            logp[G][T];
    uint64_t         ver[G][T];
    for (int c = 0; c < G; c++) {
        char text[T];
        snprintf(text, sizeof text, "%s%s", p->answer, c < 2 ? "" : "1");
        int n = 0;
        for (; text[n]; n++) toks[c][n] = tok_id(tok, text[n]);
        toks[c][n++] = TOK_EOS;
        for (int k = 0; k < n; k++) {
            logp[c][k] = -0.5f;
            ver[c][k] = 0;
        }
        rlhf__completion__init(&comp[c]);
        comp[c].n_tokens = comp[c].n_logp_behaviour = comp[c].n_logp_sampled =
            comp[c].n_policy_version = (size_t)n;
        comp[c].tokens = toks[c];
        comp[c].logp_behaviour = comp[c].logp_sampled = logp[c];
        comp[c].policy_version = ver[c];
        comp[c].finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
        cp[c] = &comp[c];
        rlhf__score__init(&score[c]);
        score[c].reward = c < 2 ? reward : 0.0f;
        sp[c] = &score[c];
    }
    Rlhf__SampledGroup sg = RLHF__SAMPLED_GROUP__INIT;
    sg.version = WIRE_PROTOCOL_VERSION;
    sg.run_id = g->run_id;
    sg.epoch = g->epoch;
    sg.lease_id = g->lease_id;
    sg.actor_id = (char *)"train-test";
    sg.prompt = (Rlhf__Prompt *)p;
    sg.n_completions = G;
    sg.completions = cp;
    sg.sampling = g->sampling;
    sg.group_index = pi;
    sg.group_count = (int32_t)g->n_prompts;
    Rlhf__ScoredGroup sc = RLHF__SCORED_GROUP__INIT;
    sc.version = WIRE_PROTOCOL_VERSION;
    sc.run_id = g->run_id;
    sc.group = &sg;
    sc.n_scores = G;
    sc.scores = sp;
    sc.scorer_id = (char *)"train-test";
    return wire_send(s, &sc.base, 0);
}

/* The default range over real sockets: 3e38 refused and counted, 1e4 (the
 * bound) taken. */
static void test_reward_range(void)
{
    LearnerConfig c = small_config(ALGO_GRPO);
    Learner      *l = learner_new(&c);
    if (!EXPECT(l != NULL, "learner_new (GRPO, the default reward range)")) return;
    void        *zctx = zmq_ctx_new();
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    WireSock   *lease = wire_sock_new(zctx, ZMQ_DEALER, "test-lease", &o);
    WireSock   *weights = wire_sock_new(zctx, ZMQ_SUB, "test-weights", &o);
    WireSock   *results = wire_sock_new(zctx, ZMQ_PUSH, "test-results", &o);
    const char *names[3] = {"lease", "weights", "results"};
    WireSock   *socks[3] = {lease, weights, results};
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    for (int i = 0; i < 3; i++) {
        char ep[256];
        CHECK(socks[i] && learner_endpoint(l, names[i], ep, sizeof ep) == 0 &&
              wire_connect(socks[i], ep) == 0);
    }
    RunArg    arg = {.l = l};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, run_thread, &arg) == 0);

    Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = (char *)"train-test";
    r.max_prompts = 2;
    Rlhf__LeaseGrant *g = NULL;
    if (wire_send(lease, &r.base, 0) == 0)
        g = (Rlhf__LeaseGrant *)recv_one(lease, &rlhf__lease_grant__descriptor);
    int64_t version = -1;
    if (EXPECT(g && g->n_prompts == 2, "a lease of 2 prompts")) {
        send_group(results, tok, g, 0, 3e38f); /* refused: the slot stays in flight */
        send_group(results, tok, g, 0, 1e4f);  /* on the bound: taken */
        send_group(results, tok, g, 1, 1.0f);
        /* Two groups make a batch: wait for the version it makes. */
        double end = progress_now() + 10.0;
        while (version < 1 && progress_now() < end) {
            Rlhf__WeightAnnounce *a =
                (Rlhf__WeightAnnounce *)recv_one(weights, &rlhf__weight_announce__descriptor);
            if (a) version = (int64_t)a->policy_version;
            if (a) protobuf_c_message_free_unpacked(&a->base, NULL);
        }
    }
    atomic_store(&arg.stop, 1);
    pthread_join(th, NULL);
    LearnerStatus st;
    learner_status(l, &st);
    const WireRejects *rej = wire_sock_rejects(l->s_results);
    EXPECT(version == 1 && st.version == 1,
           "the groups within range trained: announced version %lld, learner at %lld, expected 1",
           (long long)version, (long long)st.version);
    EXPECT(wire_rejects_get(rej, WIRE_REJ_BAD_VALUE) == 1 && wire_rejects_total(rej) == 1,
           "the 3e38 reward refused and counted: bad_value %llu of %llu rejects, expected 1 of 1",
           (unsigned long long)wire_rejects_get(rej, WIRE_REJ_BAD_VALUE),
           (unsigned long long)wire_rejects_total(rej));
    EXPECT(st.lease.issued == 2 && st.lease.trained == 2 && st.lease.failed == 0 &&
               st.lease.duplicates == 0 && identity_holds(&st.lease),
           "lease counters: issued %llu trained %llu failed %llu duplicates %llu (expected 2, "
           "2, 0, 0: the refused group did not take the slot)",
           (unsigned long long)st.lease.issued, (unsigned long long)st.lease.trained,
           (unsigned long long)st.lease.failed, (unsigned long long)st.lease.duplicates);
    if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
    tok_free(&tok);
    for (int i = 0; i < 3; i++) wire_sock_free(&socks[i]);
    zmq_ctx_term(zctx);
    learner_free(&l);
}

/* The flags' bounds: an empty or non-finite range is a bad config. */
static void test_config_checks(void)
{
    LearnerConfig c = small_config(ALGO_GRPO);
    char          why[200] = "";
    EXPECT(c.reward_min == -1e4f && c.reward_max == 1e4f && c.ckpt_keep == 3 &&
               learner_config_validate(&c, why, sizeof why) == 0,
           "defaults: reward range [-1e4, 1e4], 3 checkpoints kept");
    c.reward_min = 2.0f;
    c.reward_max = 1.0f;
    EXPECT(learner_config_validate(&c, why, sizeof why) == ERR_ARG && strstr(why, "reward_min"),
           "reward_min above reward_max refused: '%s'", why);
    c.reward_min = -INFINITY;
    EXPECT(learner_config_validate(&c, why, sizeof why) == ERR_ARG, "%s",
           "an infinite bound refused");
    c = small_config(ALGO_GRPO);
    c.ckpt_keep = 0;
    EXPECT(learner_config_validate(&c, why, sizeof why) == ERR_ARG && strstr(why, "ckpt_keep"),
           "ckpt_keep 0 refused: '%s'", why);
}

int learner_train_selftest(bool verbose)
{
    test_config_checks();
    test_reward_range();
    test_nonfinite_update(verbose);
    test_carry_resume();
    return expect_end();
}
