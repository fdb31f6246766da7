/* cluster_auth_test: CURVE authentication of a running cluster, with real
 * processes on real sockets (tests/support/testcl.h). A learner, a reward
 * server and an actor with keys from rlhf-keygen train; a client with a key
 * not on the allow-list and a plaintext client are refused on every server
 * socket (lease, results, snapshot, weights, samples), counted per socket,
 * and nothing they send reaches a decoder or the training; a keyed but
 * hostile client is refused frame by frame (tests/support/frames.h); a
 * non-loopback bind without keys is refused.
 *
 * Returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/net/auth.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "tests/support/expect.h"
#include "tests/support/frames.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"

/* A test still running after this long fails, and its processes are killed. */
#define AUTH_BUDGET_S 100.0
/* The port of the reward server without keys on 0.0.0.0: below testcl's
 * ports, and never bound (it is refused before binding). */
#define AUTH_OPEN_PORT 19999

/* The server sockets of a cluster, in the order of the counts below. */
enum { AU_LEASE, AU_RESULTS, AU_SNAP, AU_WEIGHTS, AU_SAMPLES, AU_N };
static const char *const k_au_names[AU_N] = {"lease", "results", "snapshot", "weights", "samples"};

/* The sum of the counts of a reasons string ("garbage=1 unauthorized=3"),
 * with skip's count left out when skip is given. */
static long long reasons_total(const char *reasons, const char *skip)
{
    long long n = 0, v;
    char      name[64];
    for (const char *p = reasons; p && *p;) {
        int used = 0;
        if (sscanf(p, " %63[a-z_]=%lld%n", name, &v, &used) == 2) {
            if (!skip || strcmp(name, skip)) n += v;
            p += used;
        } else {
            break;
        }
    }
    return n;
}

/* Rejects so far per server socket, every reason: the learner's newest
 * metrics record (lease, results, snapshot, weights; its status lines are
 * rare while it trains flat out) and the reward server's last status line
 * (samples; into samples_other, when given, all but "unauthorized"); -1
 * where not known yet. */
static void auth_counts(TestCl *c, const Proc *reward, long long n[AU_N], long long *samples_other)
{
    for (int i = 0; i < AU_N; i++) n[i] = -1;
    json_t *arr = testcl_metrics(c);
    size_t  n_rec = json_array_size(arr);
    json_t *rej = n_rec ? json_object_get(json_array_get(arr, n_rec - 1), "rejects") : NULL;
    for (int i = 0; rej && i < AU_SAMPLES; i++)
        n[i] = testcl_jint(json_object_get(rej, k_au_names[i]), "total");
    json_decref(arr);
    long long scored, received;
    char      reasons[256];
    if (testcl_reward_status(reward, &scored, &received, reasons, sizeof reasons)) {
        n[AU_SAMPLES] = reasons_total(reasons, NULL);
        if (samples_other) *samples_other = reasons_total(reasons, "unauthorized");
    }
}

/* A client of every server socket holding the key pair keys/actor.key
 * (keys NULL: plaintext). */
typedef struct {
    void     *zctx; /* its own, as a separate process would have */
    Auth     *auth;
    WireSock *s[AU_N];
} AuClient;

static bool au_open(TestCl *c, AuClient *k, const char *keys)
{
    static const int types[AU_N] = {ZMQ_DEALER, ZMQ_PUSH, ZMQ_DEALER, ZMQ_SUB, ZMQ_PUSH};
    const char  *eps[AU_N] = {c->ep_lease, c->ep_results, c->ep_snap, c->ep_weights, c->ep_samples};
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false; /* queue until connected: refused clients never are */
    so.sndtimeo_ms = 5000;
    AuthConfig cfg = {.keys_dir = keys, .key_name = "actor"};
    memset(k, 0, sizeof *k);
    k->zctx = zmq_ctx_new();
    k->auth = k->zctx ? auth_new(k->zctx, &cfg, "actor", false) : NULL;
    bool ok = k->auth != NULL;
    for (int i = 0; ok && i < AU_N; i++) {
        char name[32];
        snprintf(name, sizeof name, "test-%s", k_au_names[i]);
        k->s[i] = wire_sock_new(k->zctx, types[i], name, &so);
        ok = k->s[i] && auth_connect(k->auth, k->s[i], eps[i],
                                     i == AU_SAMPLES ? AUTH_REWARD : AUTH_LEARNER) == 0;
    }
    return EXPECT(ok, "the test's %s client", keys ? keys : "plaintext");
}

static void au_close(AuClient *k)
{
    for (int i = 0; i < AU_N; i++) wire_sock_free(&k->s[i]);
    auth_free(&k->auth);
    if (k->zctx) EXPECT(zmq_ctx_term(k->zctx) == 0, "zmq_ctx_term: %s", zmq_strerror(zmq_errno()));
    k->zctx = NULL;
}

/* What a refused client tries: a lease, a snapshot, a well-formed scored
 * group of this run (which the learner would take if it got in), a sampled
 * group, and listening to the announcements. Waits until every server
 * socket counted a refusal more than in before[], then checks nothing came
 * back. */
static void au_refused(TestCl *c, AuClient *k, const Proc *reward, const char *run_id,
                       uint64_t epoch, const long long before[AU_N], long long after[AU_N],
                       const char *who)
{
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = WIRE_PROTOCOL_VERSION;
    lr.actor_id = FRAMES_ID;
    lr.max_prompts = 1;
    Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
    sr.version = WIRE_PROTOCOL_VERSION;
    sr.actor_id = FRAMES_ID;
    FramesGroup g;
    frames_group_init(&g, run_id, epoch);
    /* Whether libzmq queues them (no connection is ever made) does not matter. */
    (void)wire_send(k->s[AU_LEASE], &lr.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_SNAP], &sr.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_RESULTS], &g.scored.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_SAMPLES], &g.group.base, ZMQ_DONTWAIT);
    double t0 = testcl_now();
    bool   all = false;
    while (!all && testcl_now() - t0 < 20.0 && !testcl_out_of_time(c)) {
        auth_counts(c, reward, after, NULL);
        all = true;
        for (int i = 0; i < AU_N; i++) all = all && after[i] > before[i];
        if (!all) testcl_sleep_ms(50);
    }
    for (int i = 0; i < AU_N; i++)
        EXPECT(after[i] > before[i], "%s: %s refusals %lld, expected more than %lld", who,
               k_au_names[i], after[i], before[i]);
    for (int i = 0; i < AU_N; i++) {
        if (i == AU_RESULTS || i == AU_SAMPLES) continue; /* PUSH: nothing comes back */
        WireMsg m;
        int     rc = wire_recv(k->s[i], 200, &m);
        if (rc == 0) wire_msg_close(&m);
        EXPECT(rc == ERR_TIMEOUT, "%s: the %s socket answered (%d)", who, k_au_names[i], rc);
    }
    testcl_note(
        c, "%s: refused on lease %lld, results %lld, snapshot %lld, weights %lld, samples %lld",
        who, after[0], after[1], after[2], after[3], after[4]);
}

/* Copies src into dir (same base name). */
static bool copy_into(const char *src, const char *dir, const char *name)
{
    char *text = testfs_read(src, 1 << 16), path[PATH_MAX + 64];
    testfs_path(path, sizeof path, "%s/%s", dir, name);
    bool ok = text && testfs_write(path, text, strlen(text)) == 0;
    free(text);
    return ok;
}

int cluster_auth_selftest(bool verbose)
{
    /* A run longer than the test: the learner is stopped once all is seen.
     * Its rejects are counted exactly, so a lone actor running ahead of its
     * reward server must never be refused as over its lease credit. */
    const TestClRun o = {.steps = 1000000,
                         .ckpt_every = 0,
                         .max_staleness = 2,
                         .batch_groups = 4,
                         .extra = {"--lease-credit=1000"}};
    TestCl          c;
    Proc           *learner = NULL, *reward = NULL, *actor = NULL;
    AuClient        rogue = {0}, plain = {0}, hostile = {0};
    FrameSet        f_lease = {0}, f_snap = {0}, f_results = {0}, f_samples = {0};
    WireSnapRx     *rx = wire_snap_rx_new(NULL, (size_t)1 << 26);
    if (!testcl_init(&c, "auth", verbose, AUTH_BUDGET_S)) goto out;

    /* The deployment's keys, and a rogue's: a key pair of its own (not in
     * the allow-list) and the servers' public keys, which are no secret. */
    char rogue_dir[PATH_MAX + 16], path[PATH_MAX + 64];
    testfs_path(c.keys, sizeof c.keys, "%s/keys", c.tmp);
    testfs_path(rogue_dir, sizeof rogue_dir, "%s/rogue", c.tmp);
    if (!testcl_keygen(&c, c.keys, NULL) || !testcl_keygen_unlisted(&c, rogue_dir, "actor"))
        goto out;
    testfs_path(path, sizeof path, "%s/learner.pub", c.keys);
    EXPECT(copy_into(path, rogue_dir, "learner.pub"), "copy learner.pub");
    testfs_path(path, sizeof path, "%s/reward.pub", c.keys);
    EXPECT(copy_into(path, rogue_dir, "reward.pub"), "copy reward.pub");

    /* No keys and a non-loopback bind: refused, naming the endpoint. */
    Proc *open = testcl_proc(&c, "reward-open", "rlhf-reward", NULL, NULL);
    proc_arg(open, "--samples=tcp://0.0.0.0:%d", AUTH_OPEN_PORT);
    if (testcl_start(&c, open) && proc_wait(open, testcl_budget(&c, 10.0)) == 0)
        EXPECT(!proc_exited_ok(open) && proc_output_has(open, "tcp://0.0.0.0:") &&
                   proc_output_has(open, "--insecure"),
               "a reward server binding 0.0.0.0 without keys was not refused with a clear error");

    if (!testcl_start_core(&c, &o, &learner, &reward)) goto out;
    actor = testcl_actor(&c, "actor-1", 8, false);
    if (!testcl_start(&c, actor) || !testcl_wait_step(&c, learner, 3, 40.0)) goto out;
    testcl_note(&c, "a learner, a reward server and an actor with keys took 3 steps");

    /* The run's identity, fetched the way an actor does, by a keyed client. */
    if (!au_open(&c, &hostile, c.keys)) goto out;
    int errs = 0;
    if (!EXPECT(frames_fetch_snapshot(&c, hostile.s[AU_SNAP], rx, &errs), "no snapshot with keys"))
        goto out;
    char run_id[WIRE_MAX_NAME + 1];
    snprintf(run_id, sizeof run_id, "%s", wire_snap_rx_run_id(rx));
    uint64_t epoch = wire_snap_rx_epoch(rx);

    /* A wrong key, then no key at all: refused on every server socket.
     * Only refusals may be counted: the learner's metrics show their reasons
     * at the end. */
    long long zero[AU_N], after_rogue[AU_N], after_plain[AU_N], samples_other = -1;
    double    t_known = testcl_now();
    bool      is_known = false;
    while (!is_known && testcl_now() - t_known < 10.0 && !testcl_out_of_time(&c)) {
        auth_counts(&c, reward, zero, NULL);
        is_known = true;
        for (int i = 0; i < AU_N; i++) is_known = is_known && zero[i] >= 0;
        if (!is_known) testcl_sleep_ms(50);
    }
    for (int i = 0; i < AU_N; i++)
        EXPECT(zero[i] == 0, "%s: %lld rejects before any hostile client", k_au_names[i], zero[i]);
    if (!au_open(&c, &rogue, rogue_dir)) goto out;
    au_refused(&c, &rogue, reward, run_id, epoch, zero, after_rogue, "a wrong key");
    au_close(&rogue);
    testcl_sleep_ms(300); /* the last refusals of the closed client, still in flight */
    auth_counts(&c, reward, after_rogue, NULL);
    if (!au_open(&c, &plain, NULL)) goto out;
    au_refused(&c, &plain, reward, run_id, epoch, after_rogue, after_plain, "no key");
    au_close(&plain);
    testcl_sleep_ms(300); /* the last refusals of closed clients, still in flight */
    auth_counts(&c, reward, after_plain, &samples_other);
    EXPECT(samples_other == 0, "samples: %lld frames of refused clients reached the reward server",
           samples_other);

    /* An authenticated but hostile client is still refused frame by frame. */
    frames_lease_request(&f_lease);
    frames_snapshot_request(&f_snap);
    frames_group(&f_results, run_id, epoch, true);
    frames_group(&f_samples, run_id, epoch, false);
    char     want[AU_N][256] = {""};
    uint64_t n_want[AU_N] = {0};
    n_want[AU_LEASE] = frames_expected((const FrameSet *[]){&f_lease}, 1, 0, want[AU_LEASE], 256);
    n_want[AU_RESULTS] =
        frames_expected((const FrameSet *[]){&f_results}, 1, 0, want[AU_RESULTS], 256);
    n_want[AU_SNAP] = frames_expected((const FrameSet *[]){&f_snap}, 1, 0, want[AU_SNAP], 256);
    n_want[AU_SAMPLES] =
        frames_expected((const FrameSet *[]){&f_samples}, 1, 0, want[AU_SAMPLES], 256);
    char send_error[256] = "";
    frames_send(hostile.s[AU_LEASE], NULL, 0, &f_lease, send_error, sizeof send_error);
    frames_send(hostile.s[AU_RESULTS], NULL, 0, &f_results, send_error, sizeof send_error);
    frames_send(hostile.s[AU_SNAP], NULL, 0, &f_snap, send_error, sizeof send_error);
    frames_send(hostile.s[AU_SAMPLES], NULL, 0, &f_samples, send_error, sizeof send_error);
    EXPECT(!send_error[0], "%s", send_error);
    long long now[AU_N];
    bool      done = false;
    double    t0 = testcl_now();
    while (!done && testcl_now() - t0 < 20.0 && !testcl_out_of_time(&c)) {
        auth_counts(&c, reward, now, NULL);
        done = true;
        for (int i = 0; i < AU_N; i++)
            done = done && now[i] - after_plain[i] == (long long)n_want[i];
        if (!done) testcl_sleep_ms(50);
    }
    for (int i = 0; i < AU_N; i++)
        EXPECT(now[i] - after_plain[i] == (long long)n_want[i],
               "keyed hostile client: %s counted %lld more rejects, expected %" PRIu64 " (%s)",
               k_au_names[i], now[i] - after_plain[i], n_want[i], want[i]);
    testcl_note(&c,
                "a keyed hostile client: rejects lease +%lld, results +%lld, snapshot +%lld, "
                "samples +%lld",
                now[AU_LEASE] - after_plain[AU_LEASE], now[AU_RESULTS] - after_plain[AU_RESULTS],
                now[AU_SNAP] - after_plain[AU_SNAP], now[AU_SAMPLES] - after_plain[AU_SAMPLES]);

    /* Stopped, the learner's last record and summary hold it all; nothing
     * of the refused clients was trained. */
    testcl_end(&c, actor);
    testcl_end(&c, learner);
    json_t *metrics = testcl_metrics(&c);
    size_t  n_rec = json_array_size(metrics);
    json_t *rej = n_rec ? json_object_get(json_array_get(metrics, n_rec - 1), "rejects") : NULL;
    for (int i = 0; i < AU_SAMPLES; i++) {
        const char *why =
            json_string_value(json_object_get(json_object_get(rej, k_au_names[i]), "reasons"));
        long long unauth = why ? reasons_total(why, NULL) - reasons_total(why, "unauthorized") : -1;
        EXPECT(why && reasons_total(why, "unauthorized") == (long long)n_want[i] &&
                   unauth >= after_plain[i],
               "last metrics record: %s rejects '%s', expected %" PRIu64 " of the keyed hostile "
               "client ('%s') and at least %lld unauthorized",
               k_au_names[i], why ? why : "(none)", n_want[i], want[i], after_plain[i]);
    }
    json_decref(metrics);
    json_t *sum = json_load_file(c.summary, 0, NULL);
    if (EXPECT(sum, "no summary at %s", c.summary)) {
        long long refused = 0;
        for (int i = 0; i < AU_SAMPLES; i++) refused += after_plain[i];
        EXPECT(json_is_true(json_object_get(sum, "accounting_ok")) &&
                   testcl_jint(sum, "duplicates") == 0 &&
                   testcl_jint(sum, "refused_auth") >= refused,
               "summary: accounting_ok %s, duplicates %" PRId64 ", refused_auth %" PRId64
               " (expected true, 0 and >= %lld)",
               json_is_true(json_object_get(sum, "accounting_ok")) ? "true" : "false",
               testcl_jint(sum, "duplicates"), testcl_jint(sum, "refused_auth"), refused);
        testcl_note(&c, "summary: trained %" PRId64 ", refused_auth %" PRId64,
                    testcl_jint(sum, "trained"), testcl_jint(sum, "refused_auth"));
        json_decref(sum);
    }
    EXPECT(proc_output_has(learner, "not in the allow-list") &&
               proc_output_has(learner, "handshake failed") &&
               proc_output_has(reward, "rejected connection on 'samples'"),
           "the refusals are not logged");
    testcl_end(&c, reward);

out:
    au_close(&rogue);
    au_close(&plain);
    au_close(&hostile);
    frames_free(&f_lease);
    frames_free(&f_snap);
    frames_free(&f_results);
    frames_free(&f_samples);
    wire_snap_rx_free(&rx);
    return testcl_finish(&c);
}
