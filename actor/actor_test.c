/* actor's self-test: an actor in a thread against a fake learner and a fake
 * reward server on tcp loopback, and the rlhf-actor program under SIGTERM. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actor/actor.h"
#include "actor/actor_fake_test.h"
#include "actor/actor_int.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/formats/tok.h"
#include "common/nn/model.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/test_list.h"

/* The snapshot config parser and the size it implies, against model.h. */
static void st_config(bool verbose)
{
    ModelConfig base = model_config_llama(32, 2, 4, 2, 48, 40, 64);
    for (int v = 0; v < 4; v++) {
        ModelConfig c = base;
        c.tie_embeddings = v & 1;
        c.has_value_head = (v >> 1) & 1;
        Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
        char       *js = ckpt_config_to_json(&c, tok);
        ModelConfig got;
        int         eos = -1;
        int         rc = ckpt_config_from_json("test config", js, &got, &eos);
        tok_free(&tok);
        EXPECT(rc == 0 && model_config_equal(&got, &c) && eos == TOK_EOS,
               "config round trip (tie %d, value head %d): rc %d, eos %d, expected 0 and %d",
               c.tie_embeddings, c.has_value_head, rc, eos, TOK_EOS);
        Model *m = model_new(&c);
        EXPECT(model_num_params(m) == model_config_num_params(&c),
               "parameter count: model %zu, config implies %llu", model_num_params(m),
               (unsigned long long)model_config_num_params(&c));
        model_free(&m);
        free(js);
    }
    static const char *bad[] = {
        "not json",
        "[1]",
        "{\"model_type\":\"gpt2\",\"hidden_size\":32}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":5,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5,\"rope_scaling\":{\"type\":\"linear\"}}",
        "{\"hidden_size\":32,\"intermediate_size\":48,\"num_attention_heads\":4,"
        "\"num_hidden_layers\":2,\"vocab_size\":40,\"max_position_embeddings\":64,"
        "\"rms_norm_eps\":1e-5,\"eos_token_id\":40}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ModelConfig got;
        int         eos;
        int         rc = ckpt_config_from_json("bad test config", bad[i], &got, &eos);
        EXPECT(rc != 0, "bad config %zu refused: rc %d, expected an error", i, rc);
    }
}

/* Checks the groups of one lease: shapes, versions, and the log-prob
 * contract: logp_behaviour equals the training forward's log-prob of each
 * token under the served model (temperature 1), within 1e-4. */
static int st_check_groups(StLearner *L, uint64_t lease_id, int n, int G, uint64_t version,
                           Model *m_old, uint64_t v_old, const char *actor, double *worst,
                           bool verbose)
{
    int                fails = 0;
    const ModelConfig *mc = model_config(L->m);
    WireLimits         lim = {.vocab_size = mc->vocab_size};
    fails += !EXPECT(L->n_groups == n, "lease %llu: %d groups, expected %d",
                     (unsigned long long)lease_id, L->n_groups, n);
    bool     seen[4] = {false};
    uint64_t seq_version[16]; /* version of sequence group_index * G + c */
    int      n_old = 0;
    CHECK(n <= 4 && n * G <= 16);
    for (int i = 0; i < L->n_groups; i++) {
        const Rlhf__SampledGroup *g = L->groups[i];
        WireReject                rej;
        fails += !EXPECT(wire_check_sampled_group(g, &lim, &rej) == 0, "group passes wire checks");
        fails += !EXPECT(g->lease_id == lease_id && !strcmp(g->run_id, L->run_id) &&
                             g->epoch == L->epoch && !strcmp(g->actor_id, actor),
                         "group identity");
        fails += !EXPECT(g->group_count == n && g->group_index >= 0 && g->group_index < n &&
                             !seen[g->group_index],
                         "group index");
        if (g->group_index >= 0 && g->group_index < 4) seen[g->group_index] = true;
        fails += !EXPECT(g->n_completions == (size_t)G, "completions per group");
        fails +=
            !EXPECT(g->prompt && g->prompt->prompt_id == 100 * lease_id + (uint64_t)g->group_index,
                    "prompt echoed");
        for (size_t c = 0; c < g->n_completions && g->prompt; c++) {
            const Rlhf__Completion *cp = g->completions[c];
            int  P = (int)g->prompt->n_tokens, K = (int)cp->n_tokens, T = P + K - 1;
            bool ok = K >= 1 && K <= 12;
            /* A completion is made by one batch, so by one version: the
             * served one, or with m_old the one before a mid-lease swap. */
            uint64_t v = K >= 1 ? cp->policy_version[0] : 0;
            ok = ok && (v == version || (m_old && v == v_old));
            Model *m = v == version ? L->m : m_old;
            if (ok && g->group_index >= 0 && g->group_index < n)
                seq_version[g->group_index * G + (int)c] = v;
            n_old += ok && v != version;
            for (int k = 0; k < K; k++) {
                ok = ok && cp->tokens[k] >= 0 && cp->tokens[k] < mc->vocab_size;
                ok = ok && cp->policy_version[k] == v;
                /* Truncation only raises a kept token's probability. */
                ok = ok && cp->logp_sampled[k] >= cp->logp_behaviour[k] - 1e-5f;
            }
            bool is_stop = cp->tokens[K - 1] == TOK_EOS;
            ok = ok && (cp->finish == RLHF__COMPLETION__FINISH__FINISH_STOP) == is_stop;
            fails += !EXPECT(ok, "completion tokens, versions and finish");
            if (!ok) continue;
            int   seq[64], tgt[64];
            float mask[64], lp[64];
            for (int t = 0; t < P; t++) seq[t] = g->prompt->tokens[t];
            for (int k = 0; k < K; k++) seq[P + k] = cp->tokens[k];
            for (int t = 0; t < T; t++) {
                tgt[t] = seq[t + 1];
                mask[t] = t >= P - 1 ? 1.0f : 0.0f;
            }
            model_forward(m, seq, tgt, mask, 1, T, lp, NULL, NULL);
            for (int k = 0; k < K; k++) {
                double d = fabs((double)lp[P - 1 + k] - (double)cp->logp_behaviour[k]);
                if (d > *worst) *worst = d;
            }
        }
    }
    /* Weights only ever move forward inside a lease, in sequence order. */
    for (int q = 1; fails == 0 && q < n * G; q++)
        fails += !EXPECT(seq_version[q] >= seq_version[q - 1], "versions in sequence order");
    if (verbose)
        printf("  actor: lease %llu: %d groups x %d; %d completions v%llu, %d v%llu (before a "
               "mid-lease swap); logp_behaviour vs model_forward of the token's version max diff "
               "%.2e (tol 1e-4)\n",
               (unsigned long long)lease_id, L->n_groups, G, n * G - n_old,
               (unsigned long long)version, n_old, (unsigned long long)(m_old ? v_old : version),
               *worst);
    fails += !EXPECT(*worst <= 1e-4,
                     "log-prob contract: logp_behaviour vs model_forward max diff %.2e, tol 1e-4",
                     *worst);
    return fails;
}

/* Sends raw bytes to the actor over each of its sockets. */
static void st_hostile(StLearner *L)
{
    static const uint8_t garbage[] = {0xff, 0x01, 0x02, 0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    /* SUB: garbage, a wrong protocol version, a truncated announce. */
    wire_send_raw(L->pub, NULL, 0, garbage, sizeof garbage, 0);
    actor_fake_announce(L, L->epoch, L->version + 1, 7);
    Rlhf__WeightAnnounce w = RLHF__WEIGHT_ANNOUNCE__INIT;
    w.version = 1;
    w.run_id = (char *)L->run_id;
    w.policy_version = 12345;
    uint8_t buf[256];
    size_t  len = protobuf_c_message_pack(&w.base, buf);
    wire_send_raw(L->pub, NULL, 0, buf, len - 1, 0);
    /* DEALER (lease): garbage, a grant of a wrong protocol version, a grant
     * with a NaN temperature, a grant with a token id the model lacks. */
    wire_send_raw(L->lease, L->peer, L->peer_len, garbage, sizeof garbage, 0);
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = 3;
    g.run_id = (char *)L->run_id;
    g.epoch = L->epoch;
    g.retry_after_ms = 5;
    wire_send_to(L->lease, L->peer, L->peer_len, &g.base, 0);
    actor_fake_grant(L, 90, L->epoch, 1, 2, 0, 0, NAN);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    actor_fake_grant(L, 91, L->epoch, 2, 2, 0, 5000, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    /* A grant of another epoch (a learner that is gone: the actor asks for
     * the snapshot, finds epoch 1 served and drops the lease), and lease 1
     * granted a second time. */
    actor_fake_grant(L, 92, L->epoch - 1, 1, 2, 0, 0, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    actor_fake_grant(L, 1, L->epoch, 2, 4, 0, 0, 1.0f);
    wire_send_raw(L->lease, L->peer, L->peer_len, L->pending, L->pending_len, 0);
    free(L->pending);
    L->pending = NULL;
    /* DEALER (snapshot): garbage nobody asked for, then a bogus announce of
     * a version the learner does not have, so the actor fetches (and reads
     * the garbage) and keeps what the learner serves. */
    wire_send_raw(L->snap, L->snap_peer, L->snap_peer_len, garbage, sizeof garbage, 0);
    actor_fake_announce(L, L->epoch, 999, WIRE_PROTOCOL_VERSION);
}

/* The fake learner restarts (same endpoints, new sockets) at epoch and
 * version with new weights; the actor, holding held_epoch v held_version,
 * must ask for the snapshot and serve lease lease_id of the new
 * incarnation with its weights. */
static void st_restart(StLearner *L, uint64_t epoch, uint64_t version, uint64_t seed,
                       uint64_t lease_id, uint64_t held_epoch, uint64_t held_version, bool verbose)
{
    actor_fake_learner_down(L);
    usleep(100 * 1000);
    L->epoch = epoch;
    L->version = version;
    actor_fake_new_weights(L, seed);
    if (actor_fake_learner_up(L, true)) {
        EXPECT(false, "fake learner rebinds");
        return;
    }
    int snaps = L->n_snap_requests, reqs = L->n_requests;
    L->is_announcing = true;
    EXPECT(actor_fake_wait_snap_requests(L, snaps + 1, 8000),
           "restarted learner (epoch %llu v%llu) -> snapshot request", (unsigned long long)epoch,
           (unsigned long long)version);
    L->is_announcing = false;
    EXPECT(L->snap_have_epoch == held_epoch && L->snap_have_version == held_version,
           "snapshot request names epoch %llu v%llu, expected the held epoch %llu v%llu",
           (unsigned long long)L->snap_have_epoch, (unsigned long long)L->snap_have_version,
           (unsigned long long)held_epoch, (unsigned long long)held_version);
    double end = progress_now() + 5.0;
    while (L->n_requests == reqs && progress_now() < end) actor_fake_pump(L, 20);
    actor_fake_grant(L, lease_id, epoch, 2, 4, version, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(L, 2, 8000),
           "groups after the learner restarted at epoch %llu v%llu", (unsigned long long)epoch,
           (unsigned long long)version);
    double worst = 0.0;
    st_check_groups(L, lease_id, 2, 4, version, NULL, 0, "actor-st", &worst, verbose);
    EXPECT(L->req_epoch == epoch && L->req_version == version,
           "requests name epoch %llu v%llu, expected %llu v%llu", (unsigned long long)L->req_epoch,
           (unsigned long long)L->req_version, (unsigned long long)epoch,
           (unsigned long long)version);
    actor_fake_clear_groups(L);
}

/* The real program: with no learner anywhere it waits, and SIGTERM ends it
 * with status 0 promptly (bounds generous enough for a loaded machine: the
 * signal must not arrive before the handler is installed). Skipped when the
 * program is not built (tests/support/proc.h says where it is looked for). */
static void st_program(bool verbose)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    proc_build_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/rlhf-actor", dir);
    if (access(path, X_OK) != 0) {
        if (verbose) printf("  actor: %s not found: skipped\n", path);
        return;
    }
    const char *const argv[] = {path,
                                "--lease",
                                "tcp://127.0.0.1:9",
                                "--weights",
                                "tcp://127.0.0.1:9",
                                "--snapshot",
                                "tcp://127.0.0.1:9",
                                "--reward",
                                "tcp://127.0.0.1:9,tcp://127.0.0.1:9",
                                "--id",
                                "st-proc",
                                NULL};
    Proc             *p = proc_new(path, argv, NULL);
    if (!EXPECT(proc_start(p) == 0, "rlhf-actor: cannot be started")) {
        proc_free(&p);
        return;
    }
    usleep(1000 * 1000);
    double t0 = progress_now();
    proc_signal(p, SIGTERM);
    int    rc = proc_wait(p, 10.0);
    double dt = progress_now() - t0;
    char   st[64];
    if (!EXPECT(rc == 0 && proc_exited_ok(p) && dt < 5.0,
                "rlhf-actor on SIGTERM: %s after %.3f s, expected exit 0 within 5 s",
                proc_describe(p, st, sizeof st), dt))
        proc_report(p, 40);
    if (verbose) printf("  actor: rlhf-actor stopped by SIGTERM in %.3f s\n", dt);
    proc_free(&p);
}

int actor_selftest(bool verbose)
{
    st_config(verbose);
    st_program(verbose);

    ModelConfig mc = {.dim = 32,
                      .n_layers = 2,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .hidden_dim = 48,
                      .vocab_size = TOK_N_SPECIAL + (int)strlen(TOK_CHARSET_DEFAULT),
                      .max_seq_len = 64,
                      .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f};
    StLearner   L;
    memset(&L, 0, sizeof L);
    L.zctx = zmq_ctx_new();
    CHECK(L.zctx);
    L.run_id = "run-st";
    L.epoch = 1;
    L.version = 5;
    L.m = model_new(&mc);
    actor_fake_new_weights(&L, 11);
    Tok *cfg_tok = tok_new(TOK_CHARSET_DEFAULT);
    L.config = ckpt_config_to_json(&mc, cfg_tok);
    tok_free(&cfg_tok);
    L.pull = actor_fake_bind(L.zctx, ZMQ_PULL, "fake-reward", "tcp://127.0.0.1:*", L.ep_pull);
    if (!EXPECT(L.pull && actor_fake_learner_up(&L, false) == 0, "fake learner sockets bound"))
        return expect_end();

    StActor *T = xcalloc(1, sizeof *T);
    T->cfg = ACTOR_DEFAULTS;
    T->cfg.lease_ep = L.ep_lease;
    T->cfg.weights_ep = L.ep_pub;
    T->cfg.snapshot_ep = L.ep_snap;
    T->cfg.reward_eps[0] = L.ep_pull;
    T->cfg.n_reward = 1;
    T->cfg.id = "actor-st";
    T->cfg.batch = 3; /* 2 prompts x 4 = 8 sequences through 3 slots */
    T->cfg.seed = 5;
    T->cfg.reply_timeout_ms = 400;
    T->cfg.snapshot_timeout_ms = 1000;
    T->cfg.status_every_s = 0;
    /* The contract is checked exactly: decode the fp32 snapshot as sent. */
    T->cfg.decode_weights = KERN_F32;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, actor_fake_actor_thread, T) == 0);
    double t_begin = progress_now();
    double worst = 0.0;

    /* 1. Start-up: the learner answers only later; the actor fetches v5. */
    usleep(200 * 1000);
    EXPECT(actor_fake_wait_snap_requests(&L, 1, 5000), "first snapshot request");
    actor_fake_pump(&L, 100);
    actor_fake_grant(&L, 1, 1, 2, 4, 5, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(&L, 2, 8000), "groups of lease 1 arrive");
    st_check_groups(&L, 1, 2, 4, 5, NULL, 0, "actor-st", &worst, verbose);
    EXPECT(!strcmp(L.req_actor, "actor-st") && !strcmp(L.req_run, "run-st") && L.req_epoch == 1 &&
               L.req_version == 5 && L.req_max_prompts >= 1,
           "lease request: actor '%s' run '%s' epoch %llu v%llu max_prompts %d, expected "
           "actor-st, run-st, epoch 1, v5, >= 1",
           L.req_actor, L.req_run, (unsigned long long)L.req_epoch,
           (unsigned long long)L.req_version, L.req_max_prompts);
    actor_fake_clear_groups(&L);

    /* 2. A new version announced: the actor refetches it and later tokens carry it. */
    L.version = 6;
    actor_fake_new_weights(&L, 12);
    int snaps = L.n_snap_requests;
    L.is_announcing = true;
    EXPECT(actor_fake_wait_snap_requests(&L, snaps + 1, 5000), "announce -> snapshot request");
    L.is_announcing = false;
    actor_fake_pump(&L, 50);
    actor_fake_grant(&L, 2, 1, 2, 4, 5, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(&L, 2, 8000), "groups of lease 2 arrive");
    worst = 0.0;
    st_check_groups(&L, 2, 2, 4, 6, NULL, 0, "actor-st", &worst, verbose);
    actor_fake_clear_groups(&L);

    /* 3. A grant asking for a version the actor lacks (no announce): fetched first. */
    L.version = 7;
    actor_fake_new_weights(&L, 13);
    actor_fake_grant(&L, 3, 1, 2, 4, 7, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(&L, 2, 8000), "groups of lease 3 arrive");
    worst = 0.0;
    st_check_groups(&L, 3, 2, 4, 7, NULL, 0, "actor-st", &worst, verbose);
    actor_fake_clear_groups(&L);

    /* 3b. v8 announced just as a lease of 4 prompts x 4 (16 sequences
     * through 3 slots) is granted: the actor may swap only when no
     * sequence is running, never inside a completion, and every token
     * names the weights that made it. */
    Model *m7 = model_new(&mc);
    model_copy_params(m7, L.m);
    L.version = 8;
    actor_fake_new_weights(&L, 15);
    actor_fake_grant(&L, 5, 1, 4, 4, 7, 0, 1.0f);
    L.is_announce_after_grant = true;
    EXPECT(actor_fake_wait_groups(&L, 4, 8000), "groups of lease 5 arrive");
    worst = 0.0;
    st_check_groups(&L, 5, 4, 4, 8, m7, 7, "actor-st", &worst, verbose);
    actor_fake_clear_groups(&L);
    model_free(&m7);

    /* 4. Hostile frames on every socket, then a normal lease still works. */
    snaps = L.n_snap_requests;
    st_hostile(&L);
    /* Each asks for a snapshot; when both frames are read before the
     * first fetch is sent (a slow, sanitizer build), one fetch answers
     * both. Never none, never more than one each. */
    for (int t = 0; t < 50 && L.n_snap_requests < snaps + 2; t++) actor_fake_pump(&L, 100);
    actor_fake_pump(&L, 300);
    EXPECT(L.n_snap_requests >= snaps + 1 && L.n_snap_requests <= snaps + 2,
           "another epoch's grant and a bogus announce: %d snapshot requests, expected 1 or 2",
           L.n_snap_requests - snaps);
    actor_fake_clear_groups(&L); /* lease 91 is refused, 92 dropped, the second lease 1 ignored */
    actor_fake_grant(&L, 4, 1, 2, 4, 8, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(&L, 2, 8000), "groups of lease 4 after hostile input");
    worst = 0.0;
    st_check_groups(&L, 4, 2, 4, 8, NULL, 0, "actor-st", &worst, verbose);
    actor_fake_clear_groups(&L);

    /* 4b. Broken snapshots of v9 (a NaN weight, a block too short for its
     * config, a bad checksum) are refused and v8 kept; then v9 is installed. */
    L.version = 9;
    actor_fake_new_weights(&L, 16);
    L.bad_snaps[0] = ST_SNAP_CHECKSUM;
    L.bad_snaps[1] = ST_SNAP_SHORT;
    L.bad_snaps[2] = ST_SNAP_NAN;
    L.n_bad_snaps = 3;
    snaps = L.n_snap_requests;
    L.is_announcing = true;
    EXPECT(actor_fake_wait_snap_requests(&L, snaps + 4, 8000), "broken snapshots asked again");
    L.is_announcing = false;
    actor_fake_pump(&L, 50);
    actor_fake_grant(&L, 6, 1, 2, 4, 9, 0, 1.0f);
    EXPECT(actor_fake_wait_groups(&L, 2, 8000), "groups of lease 6 after broken snapshots");
    worst = 0.0;
    st_check_groups(&L, 6, 2, 4, 9, NULL, 0, "actor-st", &worst, verbose);
    actor_fake_clear_groups(&L);

    /* 5. The learner restarts from an older checkpoint: epoch 2, version 3,
     * behind the actor's v9. Same endpoints, new sockets. */
    st_restart(&L, 2, 3, 14, 1, 1, 9, verbose);
    /* 5b. A copy of an older checkpoint restored: a lower epoch (epochs
     * never repeat but are not ordered) and version 2, behind the held
     * epoch 2 v3: the actor follows it all the same. */
    st_restart(&L, 0, 2, 17, 2, 2, 3, verbose);
    /* 5c. A learner that reused the epoch (as learners before issue 8 did
     * after a restore) at version 1, behind the held v2: announced again
     * and again, it is followed too. */
    st_restart(&L, 0, 1, 18, 3, 0, 2, verbose);

    /* 6. Stop: prompt, clean, status 0. */
    double t_stop = progress_now();
    atomic_store(&T->stop, 1);
    pthread_join(th, NULL);
    double dt_stop = progress_now() - t_stop;
    EXPECT(T->is_made && T->rc == 0, "actor_run on stop: made %d, returned %d, expected 0",
           T->is_made, T->rc);
    EXPECT(dt_stop < 1.0, "actor stopped in %.3f s, expected within a second", dt_stop);
    const ActorStats *s = &T->stats;
    EXPECT(s->leases_done == 9, "%llu leases done, expected 9", (unsigned long long)s->leases_done);
    EXPECT(s->leases_refused == 1, "%llu leases refused, expected 1 (the bad token)",
           (unsigned long long)s->leases_refused);
    EXPECT(s->leases_stale >= 1 && s->leases_abandoned >= 1,
           "%llu stale grants and %llu abandoned, expected >= 1 (the duplicate) and >= 1 (another "
           "epoch's)",
           (unsigned long long)s->leases_stale, (unsigned long long)s->leases_abandoned);
    EXPECT(s->rejects >= 11, "%llu rejects, expected >= 11 (hostile frames and snapshots)",
           (unsigned long long)s->rejects);
    EXPECT(s->snapshots >= 6 && s->has_weights && s->epoch == 0 && s->policy_version == 1 &&
               !strcmp(s->run_id, "run-st"),
           "final weights: %llu snapshots, run '%s' epoch %llu v%llu, expected >= 6, "
           "run-st epoch 0 v1",
           (unsigned long long)s->snapshots, s->run_id, (unsigned long long)s->epoch,
           (unsigned long long)s->policy_version);
    /* One row per sampled token, every step offering --batch slots; pushed
     * tokens are a subset (abandoned leases sampled some not pushed). */
    EXPECT(s->slot_rows_used >= s->tokens_generated && s->slot_rows_used <= s->slot_steps &&
               s->slot_steps % 3 == 0 && s->slot_steps > 0,
           "slot use: %llu of %llu slots used for %llu tokens pushed; expected tokens <= used <= "
           "slots, slots a multiple of --batch 3",
           (unsigned long long)s->slot_rows_used, (unsigned long long)s->slot_steps,
           (unsigned long long)s->tokens_generated);
    if (verbose)
        printf("  actor: slots %llu of %llu used (%.1f%%, --batch 3)\n",
               (unsigned long long)s->slot_rows_used, (unsigned long long)s->slot_steps,
               s->slot_steps ? 100.0 * (double)s->slot_rows_used / (double)s->slot_steps : 0.0);
    if (verbose)
        printf("  actor: leases done %llu refused %llu stale %llu; groups %llu, tokens %llu; "
               "snapshots %llu (failed fetches %llu); requests %llu (re-sent %llu); rejects %llu; "
               "stopped in %.3f s; total %.2f s\n",
               (unsigned long long)s->leases_done, (unsigned long long)s->leases_refused,
               (unsigned long long)s->leases_stale, (unsigned long long)s->groups_sent,
               (unsigned long long)s->tokens_generated, (unsigned long long)s->snapshots,
               (unsigned long long)s->snapshot_failures, (unsigned long long)s->requests_sent,
               (unsigned long long)s->requests_resent, (unsigned long long)s->rejects, dt_stop,
               progress_now() - t_begin);
    free(T);
    actor_fake_clear_groups(&L);
    actor_cross_check(&L, verbose);
    free(L.pending);
    actor_fake_learner_down(&L);
    wire_sock_free(&L.pull);
    zmq_ctx_term(L.zctx);
    model_free(&L.m);
    free(L.config);
    return expect_end();
}
