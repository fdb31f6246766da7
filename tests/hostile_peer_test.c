/* hostile_peer_test: the learner against peers that take more than their
 * share, and against an operator who restores an old checkpoint, with real
 * processes on real sockets (tests/support/testcl.h):
 *
 *   peer_hoard           a client that asks for leases as fast as they are
 *                        granted and never answers, beside an honest actor:
 *                        the hoarder holds at most its credit, the honest
 *                        actor gets work and the run goes on; the refusals
 *                        are counted (metrics.jsonl, /metrics).
 *   peer_hoard_keyed     the same with a CURVE key on three connections, an
 *                        honest actor with a key of its own: the key holds
 *                        at most --lease-credit-key over all connections.
 *   peer_snapshot_flood  clients that send SnapshotRequests and never read:
 *                        the learner's resident memory stays bounded (one
 *                        transfer queued per peer, a budget over all of
 *                        them), the refusals are counted, an honest fetch
 *                        still works, and the memory comes back when the
 *                        flooders disconnect.
 *   peer_epoch_restore   kill the learner, restart it, kill it again,
 *                        restore a copy of an older checkpoint directory
 *                        and start it: it must not reuse an epoch, the
 *                        actor (never restarted) must refetch and the run
 *                        must go on.
 *
 * Each function returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/net/auth.h"
#include "common/net/snapshot.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "tests/support/expect.h"
#include "tests/support/http.h"
#include "tests/support/proc.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"

#define PEER_BUDGET_S 120.0

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A DEALER of the test's own, connected to ep; rcvhwm > 0 sets a receive
 * high-water mark, a small kernel buffer and no heartbeats (a peer that
 * soon stops taking what it is sent and never hangs up by itself). NULL
 * after a failed check. */
static WireSock *dealer(void *zctx, const char *name, const char *ep, int rcvhwm)
{
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    if (rcvhwm > 0) {
        o.rcvhwm = rcvhwm;
        o.heartbeat_ms = 0;
    }
    WireSock *s = wire_sock_new(zctx, ZMQ_DEALER, name, &o);
    if (s && rcvhwm > 0) {
        int buf = 4096;
        EXPECT(zmq_setsockopt(wire_sock_zmq(s), ZMQ_RCVBUF, &buf, sizeof buf) == 0,
               "%s: ZMQ_RCVBUF", name);
    }
    if (!EXPECT(s && wire_connect(s, ep) == 0, "%s: connect to %s", name, ep)) {
        wire_sock_free(&s);
        return NULL;
    }
    return s;
}

/* A scrape of the learner's /metrics (caller frees), NULL after a failed check. */
static char *scrape(TestCl *c)
{
    HttpReply r;
    int rc = http_request(c->port + TESTCL_PORT_HTTP, "GET", "/metrics", NULL, 5.0, false, &r);
    if (!EXPECT(rc == 0 && r.status == 200, "learner /metrics: %s, status %d", err_str(rc),
                rc == 0 ? r.status : 0)) {
        if (rc == 0) http_reply_free(&r);
        return NULL;
    }
    char *body = r.body;
    r.body = NULL;
    http_reply_free(&r);
    return body;
}

/* The value of one series of a scrape, NaN if it is missing. */
static double prom(const char *text, const char *series)
{
    double v = NAN;
    if (!text || !http_prom_value(text, series, &v)) return NAN;
    return v;
}

/* The numbers of an actor's last status line: groups sent and their rate. */
static bool actor_groups(const Proc *p, long long *groups)
{
    char *text = proc_read_out(p);
    *groups = 0;
    bool ok = false;
    for (const char *q = text ? strstr(text, "; groups ") : NULL; q; q = strstr(q + 1, "; groups "))
        ok = sscanf(q, "; groups %lld (", groups) == 1;
    free(text);
    return ok;
}

/* ---- peer_hoard --------------------------------------------------------- */

/* The hoarding client, on a thread of its own: asks for as many prompts as
 * a request may name, again as soon as a grant comes (5 ms after an empty
 * one), and never sends a group back; over n_conn connections in turn,
 * each a CURVE client with keys/<key_name>.key when keys is set. It tracks
 * what it holds from the grants' deadlines. */
enum { HOARD_MAX = 4096, HOARD_MAX_CONN = 4 };

typedef struct {
    char             ep[64];
    const char      *keys;     /* keys directory, NULL = plaintext */
    const char      *key_name; /* its key pair */
    int              n_conn;   /* connections, 1..HOARD_MAX_CONN */
    atomic_int       stop;
    _Atomic uint64_t grants, prompts, empties, held_max;
} Hoarder;

static void *hoard_main(void *arg)
{
    Hoarder   *h = arg;
    void      *zctx = zmq_ctx_new();
    AuthConfig cfg = {.keys_dir = h->keys, .key_name = h->key_name};
    Auth      *auth = auth_new(zctx, &cfg, "actor", false);
    WireSock  *s[HOARD_MAX_CONN] = {NULL};
    int        n_conn = h->n_conn < 1 ? 1 : h->n_conn > HOARD_MAX_CONN ? HOARD_MAX_CONN : h->n_conn;
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    bool ok = auth != NULL;
    for (int i = 0; ok && i < n_conn; i++) {
        char name[32];
        snprintf(name, sizeof name, "hoarder-%d", i);
        s[i] = wire_sock_new(zctx, ZMQ_DEALER, name, &o);
        ok = s[i] && auth_connect(auth, s[i], h->ep, AUTH_LEARNER) == 0;
    }
    int64_t *deadline = calloc(HOARD_MAX, sizeof *deadline);
    int     *n_held = calloc(HOARD_MAX, sizeof *n_held);
    int      n = 0;
    for (int turn = 0; ok && !atomic_load(&h->stop); turn++) {
        WireSock          *sock = s[turn % n_conn];
        Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
        r.version = WIRE_PROTOCOL_VERSION;
        r.run_id = "";
        r.actor_id = "hoarder";
        r.max_prompts = WIRE_MAX_PROMPTS;
        if (wire_send(sock, &r.base, 0) != 0) {
            usleep(5000);
            continue;
        }
        WireMsg           m = {0};
        ProtobufCMessage *out = NULL;
        int rc = wire_recv_decode(sock, 1000, &rlhf__lease_grant__descriptor, NULL, &m, &out, NULL);
        wire_msg_close(&m);
        if (rc) continue;
        const Rlhf__LeaseGrant *g = (const Rlhf__LeaseGrant *)out;
        int64_t                 now = wall_ms();
        if (g->n_prompts > 0) {
            atomic_fetch_add(&h->grants, 1);
            atomic_fetch_add(&h->prompts, g->n_prompts);
            /* Forget leases past their deadline, then count this one. */
            int k = 0;
            for (int i = 0; i < n; i++)
                if (deadline[i] > now) {
                    deadline[k] = deadline[i];
                    n_held[k++] = n_held[i];
                }
            n = k;
            if (n < HOARD_MAX) {
                deadline[n] = g->deadline_unix_ms;
                n_held[n++] = (int)g->n_prompts;
            }
            uint64_t held = 0;
            for (int i = 0; i < n; i++) held += (uint64_t)n_held[i];
            if (held > atomic_load(&h->held_max)) atomic_store(&h->held_max, held);
        } else {
            atomic_fetch_add(&h->empties, 1);
            usleep(5000);
        }
        protobuf_c_message_free_unpacked(out, NULL);
    }
    free(deadline);
    free(n_held);
    for (int i = 0; i < n_conn; i++) wire_sock_free(&s[i]);
    auth_free(&auth);
    zmq_ctx_term(zctx);
    return NULL;
}

int peer_hoard_selftest(bool verbose)
{
    /* Capacity (max_staleness + 1) * batch_groups = 8 groups; the default
     * credit of one peer is min(batch, capacity / 2) = 4 of them. */
    /* Leases expire every second: the hoarder takes its credit again and
     * again over the run, never more. */
    const TestClRun o = {.steps = 40,
                         .max_staleness = 1,
                         .batch_groups = 4,
                         .lease_prompts = 2,
                         .lease_timeout_ms = 1000,
                         .is_metrics = true};
    const int       credit = 4, capacity = 8;
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "peer_hoard", verbose, PEER_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);

    /* The hoarder first, so it has taken what it can before the honest
     * actor asks. */
    Hoarder h = {0};
    snprintf(h.ep, sizeof h.ep, "%s", c.ep_lease);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, hoard_main, &h) == 0);
    double t0 = testcl_now();
    while (atomic_load(&h.grants) == 0 && testcl_now() - t0 < 10.0 && !testcl_out_of_time(&c))
        testcl_sleep_ms(10);
    testcl_sleep_ms(300);
    EXPECT(atomic_load(&h.grants) > 0, "the hoarder got no lease at all");
    testcl_note(&c, "hoarder holds %llu groups before the actor starts",
                (unsigned long long)atomic_load(&h.held_max));

    Proc     *actor = testcl_actor(&c, "actor-1", 8, false);
    double    t_actor = testcl_now();
    bool      ok = testcl_start(&c, actor) && testcl_wait_step(&c, learner, 10, 30.0);
    double    dt = testcl_now() - t_actor;
    long long groups = 0;
    actor_groups(actor, &groups);
    testcl_note(
        &c,
        "with the hoarder: step %" PRId64 " after %.1f s; the honest actor sent %lld "
        "groups (%.2f/s); the hoarder got %llu grants (%llu prompts), %llu empty, held "
        "at most %llu groups",
        testcl_step(&c), dt, groups, dt > 0 ? groups / dt : 0.0,
        (unsigned long long)atomic_load(&h.grants), (unsigned long long)atomic_load(&h.prompts),
        (unsigned long long)atomic_load(&h.empties), (unsigned long long)atomic_load(&h.held_max));
    if (ok) {
        /* The requests held back by the credit, on the endpoint while the
         * learner runs: flow control, not rejects. */
        char  *text = scrape(&c);
        double over = prom(text, "rlhf_learner_grants_credit_total");
        double rej = prom(text, "rlhf_learner_rejects_total{socket=\"lease\",reason=\"garbage\"}");
        EXPECT(over > 0 && rej == 0,
               "/metrics: rlhf_learner_grants_credit_total is %g, expected > 0; lease garbage "
               "rejects %g, expected 0",
               over, rej);
        testcl_note(&c, "/metrics: %g lease requests held back by the credit", over);
        free(text);
        ok = testcl_wait_step(&c, learner, o.steps, 60.0);
    }
    atomic_store(&h.stop, 1);
    pthread_join(th, NULL);
    uint64_t held_max = atomic_load(&h.held_max);
    testcl_note(&c,
                "over the run (%.1f s): the hoarder got %llu grants (%llu prompts, taken again "
                "as they expired), held at most %llu groups at once",
                testcl_now() - t_actor, (unsigned long long)atomic_load(&h.grants),
                (unsigned long long)atomic_load(&h.prompts), (unsigned long long)held_max);
    EXPECT(held_max <= (uint64_t)credit,
           "the hoarder held up to %llu groups at once, its credit is %d (capacity %d)",
           (unsigned long long)held_max, credit, capacity);
    if (ok) {
        EXPECT(proc_wait(learner, testcl_budget(&c, 20.0)) == 0 && proc_exited_ok(learner),
               "the learner did not finish its %d steps cleanly", o.steps);
        json_t   *recs = testcl_metrics(&c);
        size_t    n = json_array_size(recs);
        json_t   *last = n ? json_array_get(recs, n - 1) : NULL;
        json_t   *jc = last ? json_object_get(last, "grants_credit") : NULL;
        long long over = json_is_integer(jc) ? (long long)json_integer_value(jc) : -1;
        EXPECT(n == (size_t)o.steps && over > 0,
               "metrics.jsonl: %zu records, the last counts %lld requests held back by the "
               "credit (grants_credit); expected %d records and > 0",
               n, over, o.steps);
        json_decref(recs);
    }
    /* Its count is in the status line it prints on exit (a run shorter than
     * the status interval prints no other). */
    testcl_end(&c, actor);
    if (ok)
        EXPECT(actor_groups(actor, &groups) && groups >= o.steps * o.batch_groups / 2,
               "the honest actor sent %lld groups, expected at least %d", groups,
               o.steps * o.batch_groups / 2);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}

/* The same hoarder with a client key and three connections, beside an
 * honest actor with a key of its own: --lease-credit-key bounds what the
 * key holds over all its connections (a new connection is no new credit). */
int peer_hoard_keyed_selftest(bool verbose)
{
    const TestClRun o = {.steps = 30,
                         .max_staleness = 1,
                         .batch_groups = 4,
                         .lease_prompts = 2,
                         .lease_timeout_ms = 1000,
                         .extra = {"--lease-credit-key=2", NULL}};
    const int       key_credit = 2;
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "peer_hoard_keyed", verbose, PEER_BUDGET_S)) return testcl_finish(&c);
    testfs_path(c.keys, sizeof c.keys, "%s/keys", c.tmp);
    if (!testcl_keygen(&c, c.keys, NULL) || !testcl_keygen(&c, c.keys, "actor-2") ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);
    Hoarder h = {.keys = c.keys, .key_name = "actor", .n_conn = 3};
    snprintf(h.ep, sizeof h.ep, "%s", c.ep_lease);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, hoard_main, &h) == 0);
    double t0 = testcl_now();
    while (atomic_load(&h.grants) == 0 && testcl_now() - t0 < 10.0 && !testcl_out_of_time(&c))
        testcl_sleep_ms(10);
    testcl_sleep_ms(300);
    Proc *actor = testcl_actor(&c, "actor-2", 8, false);
    proc_arg(actor, "--key-name=actor-2");
    double t_actor = testcl_now();
    bool   ok = testcl_start(&c, actor) && testcl_wait_step(&c, learner, o.steps, 60.0);
    atomic_store(&h.stop, 1);
    pthread_join(th, NULL);
    uint64_t held_max = atomic_load(&h.held_max);
    testcl_note(&c,
                "%d steps in %.1f s beside a hoarder on 3 connections of one key: it got %llu "
                "grants (%llu prompts), held at most %llu groups at once (key credit %d)",
                o.steps, testcl_now() - t_actor, (unsigned long long)atomic_load(&h.grants),
                (unsigned long long)atomic_load(&h.prompts), (unsigned long long)held_max,
                key_credit);
    EXPECT(atomic_load(&h.grants) > 0 && held_max <= (uint64_t)key_credit,
           "the hoarder's key held up to %llu groups over its 3 connections, the key's credit "
           "is %d",
           (unsigned long long)held_max, key_credit);
    if (ok) {
        EXPECT(proc_wait(learner, testcl_budget(&c, 20.0)) == 0 && proc_exited_ok(learner),
               "the learner did not finish its %d steps cleanly", o.steps);
        /* The key's connections were held back by its credit: flow control. */
        json_t   *summ = json_load_file(c.summary, 0, NULL);
        json_t   *jc = summ ? json_object_get(summ, "grants_credit") : NULL;
        long long held_back = json_is_integer(jc) ? (long long)json_integer_value(jc) : -1;
        EXPECT(held_back > 0, "summary %s: grants_credit %lld, expected > 0", c.summary, held_back);
        testcl_note(&c, "lease requests held back by a credit: %lld", held_back);
        json_decref(summ);
    }
    testcl_end(&c, actor);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}

/* ---- peer_snapshot_flood ------------------------------------------------ */

/* Sends n SnapshotRequests on s without reading anything. */
static void flood(WireSock *s, int n)
{
    for (int i = 0; i < n; i++) {
        Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
        r.version = WIRE_PROTOCOL_VERSION;
        r.run_id = "";
        r.actor_id = "flooder";
        EXPECT(wire_send(s, &r.base, 0) == 0, "flood: request %d not sent", i);
    }
}

/* An honest fetch: one request, chunks until the snapshot is complete
 * (ErrorReplies are counted in *refused and the request made again).
 * Returns the snapshot's bytes, 0 after timeout_s. */
static size_t fetch(void *zctx, const char *ep, double timeout_s, int *refused)
{
    WireSock   *s = dealer(zctx, "honest", ep, 0);
    WireSnapRx *rx = wire_snap_rx_new(NULL, (size_t)1 << 30);
    size_t      bytes = 0;
    double      t0 = testcl_now();
    bool        is_asked = false;
    while (s && !bytes && testcl_now() - t0 < timeout_s) {
        if (!is_asked) {
            Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
            r.version = WIRE_PROTOCOL_VERSION;
            r.run_id = "";
            r.actor_id = "honest";
            is_asked = wire_send(s, &r.base, 0) == 0;
        }
        WireMsg m = {0};
        if (wire_recv(s, 200, &m) != 0) continue;
        ProtobufCMessage *out = NULL;
        if (wire_decode(&rlhf__weight_chunk__descriptor, wire_msg_data(&m), wire_msg_size(&m), NULL,
                        &out, NULL) == 0) {
            WireReject rej;
            if (wire_snap_rx_accept(rx, (const Rlhf__WeightChunk *)out, &rej) == 1)
                wire_snap_rx_data(rx, &bytes);
            protobuf_c_message_free_unpacked(out, NULL);
        } else {
            (*refused)++;
            is_asked = false;
            testcl_sleep_ms(100);
        }
        wire_msg_close(&m);
    }
    wire_snap_rx_free(&rx);
    wire_sock_free(&s);
    return bytes;
}

/* Waits for a scrape whose series satisfies v >= lo (or v <= hi when lo is
 * NaN); returns its value (NaN if never seen). */
static double wait_prom(TestCl *c, const char *series, double lo, double hi, double timeout_s)
{
    double t0 = testcl_now(), v = NAN;
    while (testcl_now() - t0 < timeout_s && !testcl_out_of_time(c)) {
        char *text = scrape(c);
        v = prom(text, series);
        free(text);
        if (isnan(lo) ? v <= hi : v >= lo) break;
        testcl_sleep_ms(100);
    }
    return v;
}

int peer_snapshot_flood_selftest(bool verbose)
{
    /* A model of about 4 MB, no actors: the learner only serves snapshots.
     * The budget holds two snapshots and a half. */
    const TestClRun o = {.steps = 1000,
                         .batch_groups = 4,
                         .eval_n = -1,
                         .dim = 128,
                         .layers = 4,
                         .hidden = 512,
                         .is_metrics = true,
                         .extra = {"--snapshot-queue-mb=11", "--snapshot-dtype=fp32", NULL}};
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "peer_snapshot_flood", verbose, PEER_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);
    enum { N_REQ = 200, N_MORE = 40, N_FLOODERS = 4 };
    WireSock *fl[N_FLOODERS] = {NULL};
    int       pid = (int)proc_pid(learner);
    void     *zctx = zmq_ctx_new();
    int       refused = 0;
    size_t    snap = fetch(zctx, c.ep_snap, 10.0, &refused);
    if (!EXPECT(snap > 3000000, "a first fetch: %zu bytes, expected the ~4 MB snapshot", snap))
        goto out;
    testcl_sleep_ms(500);
    long rss0 = testcl_status_kb(pid, "VmRSS");

    /* One connection, 200 requests, nothing read: each one is served or
     * refused as busy. Usually one is served and 199 refused; when the
     * kernel's loopback buffers take a whole snapshot, the first transfer
     * ends while requests are still arriving and a second one is served. */
    const char *busy_series = "rlhf_learner_rejects_total{socket=\"snapshot\",reason=\"busy\"}";
    char       *text_pre = scrape(&c);
    double      served_pre = prom(text_pre, "rlhf_learner_snapshots_served_total");
    free(text_pre);
    fl[0] = dealer(zctx, "flooder-0", c.ep_snap, 1);
    if (!fl[0]) goto out;
    flood(fl[0], N_REQ);
    double busy = NAN, served1 = NAN, t_wait = testcl_now();
    while (testcl_now() - t_wait < 10.0 && !testcl_out_of_time(&c)) {
        char *text = scrape(&c);
        busy = prom(text, busy_series);
        served1 = prom(text, "rlhf_learner_snapshots_served_total") - served_pre;
        free(text);
        if (busy + served1 >= N_REQ) break;
        testcl_sleep_ms(100);
    }
    testcl_sleep_ms(500);
    long rss1 = testcl_status_kb(pid, "VmRSS"), hwm1 = testcl_status_kb(pid, "VmHWM");
    testcl_note(&c,
                "snapshot %zu bytes; RSS %ld kB before, %ld kB after %d requests on one "
                "connection (peak %ld kB); %g refused as busy, %g served",
                snap, rss0, rss1, N_REQ, hwm1, busy, served1);
    long bound_kb = (long)(3 * snap / 1024) + 48 * 1024;
    EXPECT(rss1 >= 0 && rss1 - rss0 <= bound_kb && hwm1 - rss0 <= bound_kb,
           "one flooding connection: RSS %ld -> %ld kB (peak %ld), expected growth <= %ld kB "
           "(one snapshot queued for it)",
           rss0, rss1, hwm1, bound_kb);
    EXPECT(busy + served1 >= N_REQ && busy >= N_REQ - 2,
           "/metrics: %g snapshot requests refused as busy and %g served of %d, expected each "
           "served or refused, at most 2 served",
           busy, served1, N_REQ);
    /* The flooder holds one transfer; an honest peer is still served. */
    refused = 0;
    size_t got = fetch(zctx, c.ep_snap, 10.0, &refused);
    EXPECT(got == snap, "an honest fetch during the flood: %zu bytes, expected %zu", got, snap);

    /* Three more connections at once: at most one more transfer fits the
     * budget (two, if the learner's heartbeat has meanwhile hung up on the
     * first flooder, which stopped taking frames), the rest is refused as
     * over budget. */
    char  *text0 = scrape(&c);
    double served0 = prom(text0, "rlhf_learner_snapshots_served_total");
    free(text0);
    for (int i = 1; i < N_FLOODERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "flooder-%d", i);
        fl[i] = dealer(zctx, name, c.ep_snap, 1);
        if (!fl[i]) goto out;
        flood(fl[i], N_MORE);
    }
    double over =
        wait_prom(&c, "rlhf_learner_rejects_total{socket=\"snapshot\",reason=\"over_budget\"}",
                  N_MORE, 0, 10.0);
    testcl_sleep_ms(500);
    long   rss2 = testcl_status_kb(pid, "VmRSS"), hwm2 = testcl_status_kb(pid, "VmHWM");
    char  *text = scrape(&c);
    double queued = prom(text, "rlhf_learner_snapshot_queued_bytes");
    double served = prom(text, "rlhf_learner_snapshots_served_total") - served0;
    double budget = prom(text, "rlhf_learner_snapshot_queue_budget_bytes");
    free(text);
    testcl_note(&c,
                "%d flooding connections: RSS %ld kB (peak %ld kB); %g bytes queued of a budget "
                "of %g; %g refused as over budget",
                N_FLOODERS, rss2, hwm2, queued, budget, over);
    /* Refused over budget, unless every new connection got its transfer
     * because the earlier ones had drained into socket buffers (loopback
     * TCP takes megabytes on some machines): then nothing was over it. */
    EXPECT(over >= N_MORE || served >= N_FLOODERS - 1,
           "/metrics: %g refused as over_budget, expected >= %d (or all %d served: %g)", over,
           N_MORE, N_FLOODERS - 1, served);
    EXPECT(queued <= budget && budget == 11.0 * 1024 * 1024,
           "/metrics: %g bytes queued, budget %g, expected <= budget = 11 MiB", queued, budget);
    long bound2_kb = (long)(11 * 1024) + 48 * 1024;
    EXPECT(rss2 - rss0 <= bound2_kb && hwm2 - rss0 <= bound2_kb,
           "%d flooding connections: RSS %ld -> %ld kB (peak %ld), expected growth <= %ld kB",
           N_FLOODERS, rss0, rss2, hwm2, bound2_kb);

    /* They hang up: what was queued for them is released, and a fetch works. */
    for (int i = 0; i < N_FLOODERS; i++) wire_sock_free(&fl[i]);
    double left = wait_prom(&c, "rlhf_learner_snapshot_queued_bytes", NAN, 0, 10.0);
    EXPECT(left == 0, "/metrics: %g bytes still queued after the flooders hung up", left);
    refused = 0;
    got = fetch(zctx, c.ep_snap, 10.0, &refused);
    EXPECT(got == snap, "a fetch after the flood: %zu bytes, expected %zu (%d refusals)", got, snap,
           refused);
    EXPECT(proc_is_running(learner), "the learner died");
    testcl_end(&c, learner);

    /* A budget that cannot hold one snapshot is refused at start, by name. */
    char ckpt2[PATH_MAX + 16];
    testfs_path(ckpt2, sizeof ckpt2, "%s/ckpt-small", c.tmp);
    char prog[PATH_MAX + 32], ck_arg[PATH_MAX + 32];
    testfs_path(prog, sizeof prog, "%s/rlhf-learner", c.build);
    testfs_path(ck_arg, sizeof ck_arg, "--ckpt-dir=%s", ckpt2);
    const char *const argv[] = {"rlhf-learner",
                                ck_arg,
                                "--lease=tcp://127.0.0.1:*",
                                "--results=tcp://127.0.0.1:*",
                                "--weights=tcp://127.0.0.1:*",
                                "--snapshot=tcp://127.0.0.1:*",
                                "--metrics=",
                                "--summary=",
                                "--eval-n=0",
                                "--dim=128",
                                "--layers=4",
                                "--heads=2",
                                "--hidden=512",
                                "--snapshot-queue-mb=1",
                                NULL};
    ProcResult        pr;
    int               prc = proc_run(prog, argv, NULL, 30.0, &pr);
    EXPECT_RUN(prc == 0 && pr.status == 1 && strstr(pr.err, "--snapshot-queue-mb 1") &&
                   strstr(pr.err, "does not hold one snapshot"),
               &pr,
               "--snapshot-queue-mb=1 for a ~4 MB snapshot: exit %d, expected 1 naming the flag",
               pr.status);
    proc_result_free(&pr);
out:
    for (int i = 0; i < N_FLOODERS; i++) wire_sock_free(&fl[i]);
    zmq_ctx_term(zctx);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}

/* ---- peer_epoch_restore ------------------------------------------------- */

/* The trainer state of a checkpoint directory: step, version, epoch, run id. */
typedef struct {
    int64_t step, version, epoch;
    char    run_id[64];
} CkState;

static bool ck_state(const char *dir, CkState *s)
{
    char path[PATH_MAX + 32];
    testfs_path(path, sizeof path, "%s/trainer_state.json", dir);
    json_t     *o = json_load_file(path, 0, NULL);
    const char *run = json_string_value(json_object_get(o, "run_id"));
    json_t     *ep = json_object_get(json_object_get(o, "extra"), "epoch");
    bool        ok = run && json_is_integer(ep);
    if (ok) {
        s->step = testcl_jint(o, "step");
        s->version = testcl_jint(o, "policy_version");
        s->epoch = (int64_t)json_integer_value(ep);
        snprintf(s->run_id, sizeof s->run_id, "%s", run);
    }
    json_decref(o);
    return ok;
}

/* The version of the weights the actor's last status line names, if they
 * are run's of epoch; -1 otherwise. */
static int64_t actor_version(const Proc *p, const char *run, int64_t epoch)
{
    char *text = proc_read_out(p);
    char  want[160];
    snprintf(want, sizeof want, "weights run '%s' epoch %" PRId64 " v", run, epoch);
    const char *last = NULL;
    for (const char *q = text ? strstr(text, "; weights run '") : NULL; q;
         q = strstr(q + 1, "; weights run '"))
        last = q + 2;
    long long v = -1;
    if (!last || strncmp(last, want, strlen(want)) || sscanf(last + strlen(want), "%lld", &v) != 1)
        v = -1;
    free(text);
    return v;
}

/* Metrics records in the file now. */
static size_t n_records(TestCl *c)
{
    json_t *recs = testcl_metrics(c);
    size_t  n = json_array_size(recs);
    json_decref(recs);
    return n;
}

/* Waits until a record after the first `skip` (those of earlier learners)
 * reaches step; false (a failed check) if p exits or timeout_s passes. The
 * newest such step goes to *at. */
static bool wait_own_step(TestCl *c, Proc *p, size_t skip, int64_t step, double timeout_s,
                          int64_t *at)
{
    double t0 = testcl_now();
    *at = -1;
    for (;;) {
        json_t *recs = testcl_metrics(c);
        size_t  n = json_array_size(recs);
        if (n > skip) *at = testcl_jint(json_array_get(recs, n - 1), "step");
        json_decref(recs);
        if (*at >= step) return true;
        if (!proc_is_running(p) || testcl_now() - t0 > timeout_s || testcl_out_of_time(c)) {
            EXPECT(false, "%s: step %" PRId64 " not reached in %.0f s (its last: %" PRId64 ")",
                   proc_name(p), step, timeout_s, *at);
            return false;
        }
        testcl_sleep_ms(20);
    }
}

static bool copy_dir(const char *from, const char *to)
{
    const char *const argv[] = {"cp", "-a", from, to, NULL};
    ProcResult        r;
    int               rc = proc_run("/bin/cp", argv, NULL, 30.0, &r);
    bool ok = EXPECT_RUN(rc == 0 && r.status == 0, &r, "cp -a '%s' '%s' failed", from, to);
    proc_result_free(&r);
    return ok;
}

int peer_epoch_restore_selftest(bool verbose)
{
    /* No staleness and eight groups a step: the steps are paced by the
     * actor's requests, slow enough to stop the learner where we want. */
    const TestClRun o = {.steps = 80, .ckpt_every = 2, .max_staleness = 0, .batch_groups = 8};
    TestCl          c;
    Proc           *learner, *reward;
    if (!testcl_init(&c, "peer_epoch_restore", verbose, PEER_BUDGET_S) ||
        !testcl_start_core(&c, &o, &learner, &reward))
        return testcl_finish(&c);
    Proc *actor = testcl_actor(&c, "actor-1", 8, false);
    if (!testcl_start(&c, actor)) return testcl_finish(&c);
    pid_t actor_pid = proc_pid(actor);

    /* 1. A backup of the checkpoint directory, taken with the learner
     * frozen so that no save is half copied. */
    char backup[PATH_MAX + 32];
    testfs_path(backup, sizeof backup, "%s/ckpt-backup", c.tmp);
    if (!testcl_wait_step(&c, learner, 4, 40.0)) return testcl_finish(&c);
    if (!EXPECT(proc_pause(learner, 5.0) == 0, "learner not stopped by SIGSTOP"))
        return testcl_finish(&c);
    bool    copied = copy_dir(c.ckpt, backup);
    CkState bk = {0};
    proc_signal(learner, SIGCONT);
    if (!copied || !EXPECT(ck_state(backup, &bk), "the backup has no trainer state"))
        return testcl_finish(&c);
    testcl_note(&c, "backup: run %s epoch %" PRId64 " step %" PRId64 " version %" PRId64, bk.run_id,
                bk.epoch, bk.step, bk.version);

    /* 2. Run on, kill -9, restart: the restart trains well past the backup,
     * and the actor follows it. */
    if (!testcl_wait_step(&c, learner, bk.step + 4, 40.0)) return testcl_finish(&c);
    proc_kill(learner);
    Proc *second = testcl_proc(&c, "learner-2", NULL, NULL, learner);
    if (!testcl_start(&c, second) ||
        !EXPECT(testcl_wait_log(&c, second, " params, ", 30.0), "learner-2 did not start"))
        return testcl_finish(&c);
    CkState b = {0};
    if (!EXPECT(ck_state(c.ckpt, &b), "learner-2 wrote no trainer state")) return testcl_finish(&c);
    int64_t held = -1;
    double  t0 = testcl_now();
    while ((held = actor_version(actor, b.run_id, b.epoch)) < bk.version + 4 &&
           testcl_now() - t0 < 40.0 && !testcl_out_of_time(&c) && proc_is_running(second))
        testcl_sleep_ms(50);
    if (!EXPECT(held >= bk.version + 4,
                "the actor never held learner-2's weights (epoch %" PRId64 ") of version >= "
                "%" PRId64 " (holds %" PRId64 ")",
                b.epoch, bk.version + 4, held))
        return testcl_finish(&c);
    testcl_note(&c, "learner-2: epoch %" PRId64 "; the actor holds its version %" PRId64, b.epoch,
                held);

    /* 3. kill -9, the backup restored over the checkpoint directory, start. */
    proc_kill(second);
    EXPECT(fileio_remove_tree(c.ckpt) == 0, "cannot remove '%s'", c.ckpt);
    if (!copy_dir(backup, c.ckpt)) return testcl_finish(&c);
    size_t skip = n_records(&c);
    Proc  *third = testcl_proc(&c, "learner-3", NULL, NULL, learner);
    char   resumed[PATH_MAX + 128];
    snprintf(resumed, sizeof resumed, "resumed run %s from '%s': step %" PRId64, bk.run_id, c.ckpt,
             bk.step);
    if (!testcl_start(&c, third) ||
        !EXPECT(testcl_wait_log(&c, third, " params, ", 30.0) && proc_output_has(third, resumed),
                "learner-3 did not log \"%s\"", resumed))
        return testcl_finish(&c);
    CkState r = {0};
    bool    has_r = ck_state(c.ckpt, &r);
    EXPECT(has_r && r.epoch != b.epoch && r.epoch != bk.epoch,
           "learner-3 runs epoch %" PRId64 ", learner-2 ran %" PRId64 " and the backup %" PRId64
           ": an epoch must never repeat",
           r.epoch, b.epoch, bk.epoch);
    testcl_note(&c, "learner-3: epoch %" PRId64 " from step %" PRId64, r.epoch, bk.step);

    /* The actor, never restarted, refetches and the run goes on. */
    double  t3 = testcl_now();
    int64_t at = -1;
    bool    ok = wait_own_step(&c, third, skip, bk.step + 6, 30.0, &at);
    testcl_note(&c, "learner-3 at step %" PRId64 " %.1f s after its start", at, testcl_now() - t3);
    char installed[160];
    snprintf(installed, sizeof installed, "weights run '%s' epoch %" PRId64 " v", r.run_id,
             r.epoch);
    EXPECT(proc_output_has(actor, installed), "the actor never installed learner-3's weights (%s)",
           installed);
    int newer = testcl_count(third, "is newer than the learner's");
    int twice = testcl_count(actor, "granted twice");
    EXPECT(newer == 0, "learner-3 refused %d groups as newer than its version", newer);
    EXPECT(twice == 0, "the actor saw %d lease ids granted twice", twice);
    if (ok) {
        EXPECT(proc_wait(third, testcl_budget(&c, 60.0)) == 0 && proc_exited_ok(third),
               "learner-3 did not finish its %d steps cleanly", o.steps);
        json_t *recs = testcl_metrics(&c);
        size_t  n = json_array_size(recs);
        json_t *last = n ? json_array_get(recs, n - 1) : NULL;
        EXPECT(
            last && testcl_jint(last, "step") == o.steps && testcl_jint(last, "epoch") == r.epoch,
            "the last metrics record: step %" PRId64 " epoch %" PRId64 ", expected %d and %" PRId64,
            last ? testcl_jint(last, "step") : -1, last ? testcl_jint(last, "epoch") : -1, o.steps,
            r.epoch);
        json_decref(recs);
    }
    EXPECT(proc_is_running(actor) && proc_pid(actor) == actor_pid,
           "the actor did not survive the restarts");
    testcl_end(&c, actor);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}
