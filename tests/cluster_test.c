/* cluster_test: fault and hostile-input tests of the cluster with real
 * processes on real sockets: rlhf-learner, rlhf-reward and rlhf-actor
 * started from the build directory, talking over tcp loopback, killed with
 * SIGKILL and restarted mid-run, and fed malformed frames from ZeroMQ sockets
 * of the test process.
 *
 * The programs are looked up in RLHF_BUILD_DIR (set by `make test`), else
 * beside the running test binary. Each test picks a random block of free
 * loopback ports in 20000..31999 (avoiding 27000..28099, which other local
 * clusters use) and starts over on fresh ports if a daemon cannot bind one.
 * The model is a tiny random-init policy (--dim 32 --layers 1), so a run of
 * a few dozen steps takes seconds.
 *
 * Every child runs in its own process group with SIGKILL as its parent-death
 * signal; each test kills the groups of whatever is still running and
 * removes its temp directory (under $TMPDIR, default /tmp) whatever the
 * outcome. Failures are reported on stderr with the tail of every daemon's
 * log. Each function returns the number of failed checks (0 = pass). */
#include "tests/test_list.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/tok.h"
#include "common/net/auth.h"
#include "common/net/wire.h"
#include "common/net/snapshot.h"
#include "common/net/zsock.h"
#include "tests/support/expect.h"
#include "tests/support/http.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/support/wire_fixture.h"

/* A test still running after this long fails, and its processes are killed. */
#define CL_BUDGET_S 100.0
#define CL_MAX_PROCS 10
#define CL_LOG_MAX ((size_t)64 << 20)
/* Ports per test: learner lease, weights, snapshot, results; reward samples;
 * the hostile test's proxy lease, weights, snapshot; the metrics test's
 * HTTP endpoints of the learner, the reward server and the actor. */
#define CL_PORTS 11
#define CL_PORT_HTTP 8 /* offset of the first HTTP port */
/* Below the kernel's ephemeral range (32768..), where connecting sockets
 * take their local ports, and away from the ports other clusters use. */
#define CL_PORT_LO 20000
#define CL_PORT_HI 32000
#define CL_START_TRIES 6
#define CL_GROUP 4 /* completions per prompt */
#define CL_LEASE_PROMPTS 2
#define CL_LEASE_TIMEOUT_MS 1000

typedef struct {
    const char *test;
    bool        verbose;
    char        build[PATH_MAX];
    char        tmp[PATH_MAX];
    char        ckpt[PATH_MAX + 16];    /* the learner's --ckpt-dir */
    char        metrics[PATH_MAX + 16]; /* --metrics */
    char        summary[PATH_MAX + 16]; /* --summary */
    double      deadline;               /* monotonic seconds */
    int         port;                   /* first of CL_PORTS free ports */
    char        ep_lease[64], ep_weights[64], ep_snap[64], ep_results[64], ep_samples[64];
    char        ep_px_lease[64], ep_px_weights[64], ep_px_snap[64];
    Proc       *procs[CL_MAX_PROCS]; /* owned; each logs to tmp/NAME.log */
    int         n_procs;
    char        keys[PATH_MAX + 16]; /* --keys of every daemon; "" = none (plaintext) */
} Cluster;

/* The learner's flags that differ between tests. */
typedef struct {
    int steps;
    int ckpt_every;
    /* 0 makes the learner's capacity one batch: a step then needs every
     * group out, so a lost group stalls the run until its lease expires. */
    int  max_staleness;
    int  batch_groups; /* groups per step */
    bool is_debug;     /* the learner logs at debug level: every grant */
    bool is_metrics;   /* the learner and the reward server serve /metrics */
    /* --lease-credit; 0 = the default. Tests that count every reject of the
     * lease socket exactly set it high: a lone actor that runs ahead of its
     * reward server is refused now and then as over its credit (counted as
     * a reject; tests/hostile_peer_test.c tests the credit). */
    int lease_credit;
} RunOpts;

/* ---- Reporting -------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void note(Cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(Cluster *c, const char *fmt, ...)
{
    if (!c->verbose) return;
    va_list ap;
    va_start(ap, fmt);
    printf("  %s: ", c->test);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* Ctrl-C on make test (SIGINT or SIGTERM, see proc_catch_interrupts) ends
 * every wait, so the test still kills its processes and removes its files. */
static bool out_of_time(Cluster *c)
{
    return proc_interrupted() || now_s() > c->deadline;
}

/* timeout_s, cut to what is left of the test's budget. */
static double budget(Cluster *c, double timeout_s)
{
    return fmin(timeout_s, c->deadline - now_s());
}

/* The whole file, NUL-terminated (caller frees), or NULL if missing. */
static char *read_text(const char *path)
{
    return testfs_read(path, CL_LOG_MAX);
}

/* The last occurrence of needle in text, or NULL. */
static const char *find_last(const char *text, const char *needle)
{
    const char *last = NULL;
    for (const char *q = text ? strstr(text, needle) : NULL; q; q = strstr(q + 1, needle)) last = q;
    return last;
}

/* ---- Processes -------------------------------------------------------- */

/* A daemon of the test: build/prog with its output appended to tmp/NAME.log,
 * with env ("NAME=value" strings) added; clone_of, when given, supplies the
 * command line instead. Killed (if need be) and freed by cl_finish. */
static Proc *cl_proc(Cluster *c, const char *name, const char *prog, const char *const *env,
                     const Proc *clone_of)
{
    CHECK(c->n_procs < CL_MAX_PROCS);
    char log[PATH_MAX + 64];
    testfs_path(log, sizeof log, "%s/%s.log", c->tmp, name);
    Proc *p;
    if (clone_of) {
        p = proc_clone(clone_of, name, log);
    } else {
        char path[PATH_MAX + 64];
        testfs_path(path, sizeof path, "%s/%s", c->build, prog);
        p = proc_new(path, NULL, &(ProcOpts){.name = name, .env = env, .log_path = log});
        proc_arg(p, "%s", prog);
    }
    c->procs[c->n_procs++] = p;
    return p;
}

/* Starts p (in its own process group, dying with the test: see proc.h). */
static bool cl_start(Cluster *c, Proc *p)
{
    if (!EXPECT(proc_start(p) == 0, "%s did not start", proc_name(p))) return false;
    note(c, "started %s (pid %d): %s", proc_name(p), (int)proc_pid(p), proc_cmd(p));
    return true;
}

/* SIGSTOP to p's group, returning once p is stopped (so nothing it does
 * races with what the test reads next). */
static bool cl_pause(Proc *p)
{
    int rc = proc_pause(p, 5.0);
    EXPECT(rc != ERR_TIMEOUT, "%s did not stop within 5 s of SIGSTOP", proc_name(p));
    return rc == 0;
}

/* Waits until p's log holds needle; false if p exits or time runs out. */
static bool wait_log(Cluster *c, Proc *p, const char *needle, double timeout_s)
{
    return proc_wait_output(p, needle, budget(c, timeout_s));
}

/* Waits up to timeout_s (and the test's budget) for p to exit, then
 * expects exit 0 ("NAME<how>: STATUS, expected exit 0"). False if p still
 * runs. */
static bool expect_exit_ok(Cluster *c, Proc *p, double timeout_s, const char *how)
{
    if (proc_wait(p, budget(c, timeout_s)) != 0) return false;
    char st[64];
    EXPECT(proc_exited_ok(p), "%s%s: %s, expected exit 0", proc_name(p), how,
           proc_describe(p, st, sizeof st));
    return true;
}

/* A clean shutdown: SIGTERM, then exit status 0 within 10 s. */
static void proc_end(Cluster *c, Proc *p)
{
    char st[64];
    if (!EXPECT(proc_is_running(p), "%s is no longer running (%s) before its shutdown",
                proc_name(p), proc_describe(p, st, sizeof st)))
        return;
    proc_signal(p, SIGTERM);
    if (!expect_exit_ok(c, p, 10.0, " after SIGTERM")) {
        if (!proc_interrupted())
            EXPECT(false, "%s did not exit within 10 s of SIGTERM", proc_name(p));
        proc_kill(p);
    }
}

/* ---- Set-up and clean-up ---------------------------------------------- */

static bool cl_init(Cluster *c, const char *test, bool verbose)
{
    memset(c, 0, sizeof *c);
    c->test = test;
    c->verbose = verbose;
    c->deadline = now_s() + CL_BUDGET_S;
    EXPECT(proc_catch_interrupts() == 0, "SIGINT and SIGTERM handlers");
    proc_build_dir(c->build, sizeof c->build);
    char path[PATH_MAX + 16];
    testfs_path(path, sizeof path, "%s/rlhf-learner", c->build);
    if (!EXPECT(access(path, X_OK) == 0,
                "'%s' not found: build the programs first (make test sets RLHF_BUILD_DIR)", path))
        return false;
    if (!EXPECT(testfs_tmpdir_new(test, c->tmp, sizeof c->tmp) == 0, "temp directory")) {
        c->tmp[0] = '\0';
        return false;
    }
    testfs_path(c->ckpt, sizeof c->ckpt, "%s/ckpt", c->tmp);
    testfs_path(c->metrics, sizeof c->metrics, "%s/metrics.jsonl", c->tmp);
    testfs_path(c->summary, sizeof c->summary, "%s/summary.json", c->tmp);
    note(c, "programs in '%s', files in '%s'", c->build, c->tmp);
    return true;
}

/* Kills whatever still runs, reports the logs if a check failed, removes
 * the temp directory. Returns the number of failed checks. */
static int cl_finish(Cluster *c)
{
    if (proc_interrupted()) EXPECT(false, "interrupted by a signal");
    for (int i = 0; i < c->n_procs; i++) {
        Proc *p = c->procs[i];
        if (proc_is_running(p)) {
            if (expect_fails() == 0) EXPECT(false, "%s still running at the end", proc_name(p));
            proc_kill(p);
        }
    }
    if (expect_fails())
        for (int i = 0; i < c->n_procs; i++) proc_report(c->procs[i], 30);
    for (int i = 0; i < c->n_procs; i++) proc_free(&c->procs[i]);
    if (c->tmp[0]) EXPECT(testfs_tmpdir_remove(c->tmp) == 0, "cannot remove '%s'", c->tmp);
    note(c, "%d failed checks", expect_fails());
    return expect_end();
}

/* Picks CL_PORTS consecutive ports that are free right now. Another process
 * may still take one before a daemon binds it: start_core then retries. */
static bool pick_ports(Cluster *c)
{
    int base = ports_pick(CL_PORTS, CL_PORT_LO, CL_PORT_HI);
    if (!EXPECT(base > 0, "no block of %d free ports in %d..%d", CL_PORTS, CL_PORT_LO, CL_PORT_HI))
        return false;
    c->port = base;
    snprintf(c->ep_lease, sizeof c->ep_lease, "tcp://127.0.0.1:%d", base);
    snprintf(c->ep_weights, sizeof c->ep_weights, "tcp://127.0.0.1:%d", base + 1);
    snprintf(c->ep_snap, sizeof c->ep_snap, "tcp://127.0.0.1:%d", base + 2);
    snprintf(c->ep_results, sizeof c->ep_results, "tcp://127.0.0.1:%d", base + 3);
    snprintf(c->ep_samples, sizeof c->ep_samples, "tcp://127.0.0.1:%d", base + 4);
    snprintf(c->ep_px_lease, sizeof c->ep_px_lease, "tcp://127.0.0.1:%d", base + 5);
    snprintf(c->ep_px_weights, sizeof c->ep_px_weights, "tcp://127.0.0.1:%d", base + 6);
    snprintf(c->ep_px_snap, sizeof c->ep_px_snap, "tcp://127.0.0.1:%d", base + 7);
    note(c, "ports %d..%d", base, base + CL_PORTS - 1);
    return true;
}

static Proc *learner_proc(Cluster *c, const char *name, const RunOpts *o)
{
    static const char *const debug[] = {"RLHF_LOG=debug", NULL};
    Proc                    *p = cl_proc(c, name, "rlhf-learner", o->is_debug ? debug : NULL, NULL);
    proc_arg(p, "--lease=%s", c->ep_lease);
    proc_arg(p, "--weights=%s", c->ep_weights);
    proc_arg(p, "--snapshot=%s", c->ep_snap);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--ckpt-dir=%s", c->ckpt);
    proc_arg(p, "--metrics=%s", c->metrics);
    proc_arg(p, "--summary=%s", c->summary);
    proc_arg(p, "--steps=%d", o->steps);
    proc_arg(p, "--ckpt-every=%d", o->ckpt_every);
    proc_arg(p, "--lease-timeout-ms=%d", CL_LEASE_TIMEOUT_MS);
    proc_arg(p, "--batch-groups=%d", o->batch_groups);
    proc_arg(p, "--group=%d", CL_GROUP);
    proc_arg(p, "--lease-prompts=%d", CL_LEASE_PROMPTS);
    proc_arg(p, "--max-staleness=%d", o->max_staleness);
    proc_arg(p, "--eval-n=10");
    proc_arg(p, "--seed=7");
    proc_arg(p, "--dim=32");
    proc_arg(p, "--layers=1");
    proc_arg(p, "--heads=2");
    proc_arg(p, "--hidden=64");
    proc_arg(p, "--poll-ms=20");
    proc_arg(p, "--status-every=0.25");
    if (o->is_metrics) proc_arg(p, "--metrics-addr=127.0.0.1:%d", c->port + CL_PORT_HTTP);
    if (o->lease_credit) proc_arg(p, "--lease-credit=%d", o->lease_credit);
    if (c->keys[0]) proc_arg(p, "--keys=%s", c->keys);
    return p;
}

static Proc *reward_proc(Cluster *c, const char *name)
{
    Proc *p = cl_proc(c, name, "rlhf-reward", NULL, NULL);
    proc_arg(p, "--samples=%s", c->ep_samples);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--threads=1");
    proc_arg(p, "--id=%s", name);
    proc_arg(p, "--status-every=0.25");
    if (c->keys[0]) proc_arg(p, "--keys=%s", c->keys);
    return p;
}

/* An actor of the cluster generating batch sequences at a time; through the
 * test's proxy if via_proxy. */
static Proc *actor_proc(Cluster *c, const char *name, int batch, bool via_proxy, bool is_debug)
{
    Proc *p = cl_proc(c, name, "rlhf-actor", NULL, NULL);
    proc_arg(p, "--lease=%s", via_proxy ? c->ep_px_lease : c->ep_lease);
    proc_arg(p, "--weights=%s", via_proxy ? c->ep_px_weights : c->ep_weights);
    proc_arg(p, "--snapshot=%s", via_proxy ? c->ep_px_snap : c->ep_snap);
    proc_arg(p, "--reward=%s", c->ep_samples);
    proc_arg(p, "--id=%s", name);
    proc_arg(p, "--batch=%d", batch);
    proc_arg(p, "--status-every=0.25");
    proc_arg(p, "--reply-timeout-ms=1000");
    proc_arg(p, "--snapshot-timeout-ms=1000");
    if (is_debug) proc_arg(p, "--log-level=debug");
    if (c->keys[0]) proc_arg(p, "--keys=%s", c->keys);
    return p;
}

/* Starts the learner and the reward server on a fresh block of ports, over
 * again on another block if one of them finds a port taken meanwhile. */
static bool start_core(Cluster *c, const RunOpts *o, Proc **learner, Proc **reward)
{
    for (int attempt = 0; attempt < CL_START_TRIES && !out_of_time(c); attempt++) {
        if (!pick_ports(c)) return false;
        int   n0 = c->n_procs;
        Proc *l = learner_proc(c, "learner", o);
        Proc *r = reward_proc(c, "reward");
        if (o->is_metrics) proc_arg(r, "--metrics-addr=127.0.0.1:%d", c->port + CL_PORT_HTTP + 1);
        /* " params, " ends the learner's start-up line, logged once bound. */
        bool ok = cl_start(c, l) && wait_log(c, l, " params, ", 30.0);
        ok = ok && cl_start(c, r) && wait_log(c, r, "samples bound at", 15.0);
        if (ok) {
            *learner = l;
            *reward = r;
            return true;
        }
        bool is_busy = proc_output_has(l, "Address already in use") ||
                       proc_output_has(r, "Address already in use");
        if (!EXPECT(is_busy, "the learner or the reward server did not start")) return false;
        note(c, "a port of %d..%d was taken meanwhile; starting over on others", c->port,
             c->port + CL_PORTS - 1);
        /* The learner checkpoints its new epoch before binding: forget it. */
        fileio_remove_tree(c->ckpt);
        unlink(c->metrics);
        unlink(proc_log_path(l));
        unlink(proc_log_path(r));
        proc_free(&c->procs[n0]);
        proc_free(&c->procs[n0 + 1]);
        c->n_procs = n0;
    }
    EXPECT(false, "no free ports after %d attempts", CL_START_TRIES);
    return false;
}

/* The start of a fault test: cl_init, the learner and the reward server
 * (start_core), then n_actors actors named actor-1.. generating 8
 * sequences at a time, the first logging at debug level if is_first_debug.
 * False after a failed check. */
static bool cl_start_run(Cluster *c, const char *test, bool verbose, const RunOpts *o,
                         Proc **learner, Proc **reward, Proc **actors, int n_actors,
                         bool is_first_debug)
{
    if (!cl_init(c, test, verbose) || !start_core(c, o, learner, reward)) return false;
    for (int a = 0; a < n_actors; a++) {
        char name[32];
        snprintf(name, sizeof name, "actor-%d", a + 1);
        actors[a] = actor_proc(c, name, 8, false, a == 0 && is_first_debug);
    }
    for (int a = 0; a < n_actors; a++)
        if (!cl_start(c, actors[a])) return false;
    return true;
}

/* ---- Metrics and summary ---------------------------------------------- */

/* The complete lines of the metrics file, as a JSON array (caller owns). */
static json_t *read_metrics(Cluster *c)
{
    json_t *arr = json_array();
    char   *text = read_text(c->metrics);
    if (!text) return arr;
    char *line = text;
    for (char *nl = strchr(line, '\n'); nl; line = nl + 1, nl = strchr(line, '\n')) {
        *nl = '\0';
        json_error_t err;
        json_t      *o = json_loads(line, 0, &err);
        if (!json_is_object(o)) {
            EXPECT(false, "metrics line %zu is not a JSON object: %s", json_array_size(arr) + 1,
                   err.text);
            json_decref(o);
            continue;
        }
        json_array_append_new(arr, o);
    }
    free(text);
    return arr;
}

static int64_t jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* The step of the newest metrics record, 0 before the first. */
static int64_t metrics_step(Cluster *c)
{
    json_t *arr = read_metrics(c);
    size_t  n = json_array_size(arr);
    int64_t step = n ? jint(json_array_get(arr, n - 1), "step") : 0;
    json_decref(arr);
    return step;
}

/* Waits until the learner has logged step `step`; false if it exits first. */
static bool wait_step(Cluster *c, Proc *learner, int64_t step, double timeout_s)
{
    double t0 = now_s();
    for (;;) {
        if (metrics_step(c) >= step) return true;
        if (!proc_is_running(learner)) {
            EXPECT(false, "%s exited before step %" PRId64, proc_name(learner), step);
            return false;
        }
        if (now_s() - t0 > timeout_s || out_of_time(c)) {
            EXPECT(false, "step %" PRId64 " not reached in %.0f s (at %" PRId64 ")", step,
                   timeout_s, metrics_step(c));
            return false;
        }
        sleep_ms(20);
    }
}

/* The lease counters of a metrics record or the summary. */
typedef struct {
    int64_t issued, trained, dropped_stale, reissued, failed, in_flight, buffered, duplicates;
} Counters;

static bool counters_of(Cluster *c, const json_t *o, const char *where, Counters *k)
{
    static const char *keys[] = {"issued", "trained",   "dropped_stale", "reissued",
                                 "failed", "in_flight", "buffered",      "duplicates"};
    int64_t           *vals[] = {&k->issued, &k->trained,   &k->dropped_stale, &k->reissued,
                                 &k->failed, &k->in_flight, &k->buffered,      &k->duplicates};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        *vals[i] = jint(o, keys[i]);
        if (*vals[i] < 0) {
            EXPECT(false, "%s: no non-negative integer '%s'", where, keys[i]);
            return false;
        }
    }
    return true;
}

/* The accounting identity, recomputed: every issued group is trained,
 * dropped as stale, re-issued, failed, in flight or buffered. */
static bool identity_holds(Cluster *c, const json_t *o, const char *where, Counters *k)
{
    Counters local;
    if (!k) k = &local;
    if (!counters_of(c, o, where, k)) return false;
    int64_t sum =
        k->trained + k->dropped_stale + k->reissued + k->failed + k->in_flight + k->buffered;
    if (k->issued != sum) {
        EXPECT(false,
               "%s: issued %" PRId64 " != trained %" PRId64 " + dropped_stale %" PRId64
               " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64
               " + buffered %" PRId64 " = %" PRId64,
               where, k->issued, k->trained, k->dropped_stale, k->reissued, k->failed, k->in_flight,
               k->buffered, sum);
        return false;
    }
    return true;
}

/* Checks the identity in every metrics record; returns the records. */
static json_t *check_metrics(Cluster *c)
{
    json_t *arr = read_metrics(c);
    size_t  i;
    json_t *o;
    int     bad = 0;
    json_array_foreach(arr, i, o)
    {
        char where[64];
        snprintf(where, sizeof where, "metrics record %zu", i + 1);
        if (!identity_holds(c, o, where, NULL) && ++bad >= 3) break;
    }
    return arr;
}

/* Loads the summary and checks what every run must show: all steps taken,
 * not stopped early, accounting_ok, and the identity recomputed. */
static json_t *check_summary(Cluster *c, int steps, Counters *k)
{
    json_error_t err;
    json_t      *s = json_load_file(c->summary, 0, &err);
    if (!json_is_object(s)) {
        EXPECT(false, "summary '%s': %s", c->summary, err.text);
        json_decref(s);
        return NULL;
    }
    EXPECT(jint(s, "steps") == steps, "summary: steps %" PRId64 ", expected %d", jint(s, "steps"),
           steps);
    EXPECT(jint(s, "version") == steps, "summary: version %" PRId64 ", expected %d",
           jint(s, "version"), steps);
    EXPECT(json_is_false(json_object_get(s, "stopped_early")), "summary: stopped_early");
    EXPECT(json_is_true(json_object_get(s, "accounting_ok")), "summary: accounting_ok is not true");
    identity_holds(c, s, "summary", k);
    return s;
}

/* Waits for the learner to finish the run and exit 0. */
static void wait_learner_done(Cluster *c, Proc *learner, double timeout_s)
{
    if (!expect_exit_ok(c, learner, timeout_s, ""))
        EXPECT(false, "%s still running after %.0f s (at step %" PRId64 ")", proc_name(learner),
               timeout_s, metrics_step(c));
}

/* The counters of the summary, in a verbose run. */
static void note_counters(Cluster *c, const Counters *k)
{
    note(c,
         "summary: issued %" PRId64 " = trained %" PRId64 " + dropped_stale %" PRId64
         " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64 " + buffered %" PRId64
         "; duplicates %" PRId64,
         k->issued, k->trained, k->dropped_stale, k->reissued, k->failed, k->in_flight, k->buffered,
         k->duplicates);
}

/* ---- fault_actor ------------------------------------------------------ */

/* Lines of p's log holding needle. */
static int count_lines(const Proc *p, const char *needle)
{
    char *text = proc_read_out(p);
    int   n = 0;
    for (const char *q = text ? strstr(text, needle) : NULL; q; q = strstr(q + 1, needle)) n++;
    free(text);
    return n;
}

/* True if the actor's debug log ends waiting for a lease: a "lease request"
 * line with no grant served after it. */
static bool is_requesting(const char *log)
{
    const char *last = find_last(log, "lease request for");
    return last && !strstr(last, " prompts x ");
}

/* A lease the learner logged as granted to `actor` ("lease ID: N prompts
 * to 'actor'", ID in hex) that the actor's debug log does not show served
 * ("lease ID: N prompts x G", ID in decimal). Returns its prompts (0 if
 * there is none) and its id. */
static int grant_unserved(const Proc *learner, const Proc *actor, uint64_t *id)
{
    char *ltext = proc_read_out(learner);
    char *atext = proc_read_out(actor);
    int   n = 0;
    char  want[96];
    snprintf(want, sizeof want, " prompts to '%s'", proc_name(actor));
    for (const char *p = ltext ? strstr(ltext, "learner: lease ") : NULL; p && !n;
         p = strstr(p + 1, "learner: lease ")) {
        unsigned long long lid = 0;
        int                k = 0, used = 0;
        if (sscanf(p, "learner: lease %llx: %d%n", &lid, &k, &used) != 2 || k <= 0 ||
            strncmp(p + used, want, strlen(want)))
            continue;
        char served[64];
        snprintf(served, sizeof served, ": lease %llu: %d prompts x ", lid, k);
        if (atext && strstr(atext, served)) continue;
        n = k;
        *id = lid;
    }
    free(ltext);
    free(atext);
    return n;
}

int cluster_fault_actor_selftest(bool verbose)
{
    /* A step takes four leases, so actor-1 often gets one; without its
     * lease no step can be completed, so the run waits for the re-issue. */
    const RunOpts o = {
        .steps = 30, .ckpt_every = 0, .max_staleness = 0, .batch_groups = 8, .is_debug = true};
    Cluster c;
    Proc   *learner, *reward, *actors[2];
    if (!cl_start_run(&c, "fault_actor", verbose, &o, &learner, &reward, actors, 2, true))
        return cl_finish(&c);
    Proc *victim = actors[0], *other = actors[1];
    if (!wait_step(&c, learner, 3, 40.0)) return cl_finish(&c);

    /* Catch the victim waiting for a lease and freeze it; if the learner
     * grants it one it has not served, the lease is the victim's and not one
     * of its groups can have left: kill -9 it there. Otherwise (the learner
     * had no work for it) let it go on and try again. */
    uint64_t lease = 0;
    int      n_prompts = 0, looks = 0, requests_seen = 0;
    double   t0 = now_s();
    while (!n_prompts && now_s() - t0 < 30.0 && !out_of_time(&c) && proc_is_running(learner)) {
        /* A fresh request: its answer is yet to come. */
        int n_requests = count_lines(victim, "lease request for");
        if (n_requests == requests_seen) {
            sleep_ms(1);
            continue;
        }
        requests_seen = n_requests;
        if (!cl_pause(victim)) break;
        looks++;
        char *text = proc_read_out(victim);
        bool  is_waiting = text && is_requesting(text);
        free(text);
        for (double t1 = now_s(); is_waiting && !n_prompts && now_s() - t1 < 0.1;) {
            n_prompts = grant_unserved(learner, victim, &lease);
            if (!n_prompts) sleep_ms(5);
        }
        if (!n_prompts) proc_signal(victim, SIGCONT);
    }
    int64_t step_at_kill = metrics_step(&c);
    proc_kill(victim);
    if (!EXPECT(n_prompts > 0, "actor-1 never seen granted a lease while frozen (%d tries)", looks))
        return cl_finish(&c);
    note(&c,
         "kill -9 of actor-1 holding lease %" PRIx64 " (%d prompts, none served) at step %" PRId64
         " (try %d)",
         lease, n_prompts, step_at_kill, looks);

    wait_learner_done(&c, learner, 60.0);
    json_t  *metrics = check_metrics(&c);
    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(k.reissued >= n_prompts,
               "summary: reissued %" PRId64 ", expected >= %d (the dead actor's lease)", k.reissued,
               n_prompts);
        note_counters(&c, &k);
    }
    size_t  n = json_array_size(metrics);
    json_t *last = n ? json_array_get(metrics, n - 1) : NULL;
    EXPECT(n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(last && jint(last, "leases_expired") >= 1,
           "metrics: leases_expired %" PRId64 ", expected >= 1",
           last ? jint(last, "leases_expired") : -1);
    /* Every step after the kill was served by the other actor alone. */
    EXPECT(proc_is_running(other), "actor-2 died");
    EXPECT(step_at_kill < o.steps, "the run had finished before the kill");
    json_decref(metrics);
    json_decref(sum);
    proc_end(&c, other);
    proc_end(&c, reward);
    return cl_finish(&c);
}

/* ---- fault_learner ---------------------------------------------------- */

/* The checkpoint's trainer state: step, version, run id, epoch and lease
 * counters, as the restarted learner will find them. */
typedef struct {
    int64_t step, version, epoch, in_flight, buffered, reissued;
    char    run_id[64];
} CkptState;

static bool read_ckpt_state(Cluster *c, CkptState *s)
{
    char path[PATH_MAX + 32];
    testfs_path(path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_error_t err;
    json_t      *o = json_load_file(path, 0, &err);
    json_t      *x = json_object_get(o, "extra");
    json_t      *ls = json_object_get(x, "lease");
    const char  *run = json_string_value(json_object_get(o, "run_id"));
    bool         ok = json_is_object(ls) && run;
    if (ok) {
        s->step = jint(o, "step");
        s->version = jint(o, "policy_version");
        s->epoch = jint(x, "epoch");
        s->in_flight = jint(ls, "in_flight");
        s->buffered = jint(ls, "buffered");
        s->reissued = jint(ls, "reissued");
        snprintf(s->run_id, sizeof s->run_id, "%s", run);
        ok = s->step >= 0 && s->version >= 0 && s->epoch >= 0 && s->in_flight >= 0 &&
             s->buffered >= 0 && s->reissued >= 0;
    }
    EXPECT(ok, "checkpoint state '%s' unreadable or incomplete (%s)", path, err.text);
    json_decref(o);
    return ok;
}

/* The step of the newest checkpoint, -1 before the first. */
static int64_t ckpt_step(Cluster *c)
{
    char path[PATH_MAX + 32];
    testfs_path(path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_t *o = json_load_file(path, 0, NULL);
    int64_t step = o ? jint(o, "step") : -1;
    json_decref(o);
    return step;
}

/* The actor's last status line's weights, "run 'R' epoch E vV". */
static bool actor_holds(const Proc *p, const char *run_id, int64_t epoch)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    char want[128];
    snprintf(want, sizeof want, "weights run '%s' epoch %" PRId64 " v", run_id, epoch);
    const char *last = find_last(text, "weights run '");
    bool        ok = last && !strncmp(last, want, strlen(want));
    free(text);
    return ok;
}

/* The groups an actor's status lines count ("; groups N (") in the last
 * line before the first occurrence of mark, and in its last line. */
static bool actor_groups_around(const Proc *p, const char *mark, long long *before,
                                long long *after)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *at = strstr(text, mark);
    bool        ok = at != NULL;
    *before = *after = 0;
    for (const char *q = strstr(text, "; groups "); q; q = strstr(q + 1, "; groups ")) {
        long long n;
        if (sscanf(q, "; groups %lld (", &n) != 1) continue;
        if (at && q < at) *before = n;
        *after = n;
    }
    free(text);
    return ok;
}

int cluster_fault_learner_selftest(bool verbose)
{
    /* Four leases a step and no staleness: both actors take part in every
     * step, and the steps are paced by their requests, slow enough for both
     * to find the restarted learner before the run ends. */
    const RunOpts o = {
        .steps = 60, .ckpt_every = 4, .max_staleness = 0, .batch_groups = 8, .is_debug = true};
    Cluster c;
    Proc   *learner, *reward, *actors[2];
    if (!cl_start_run(&c, "fault_learner", verbose, &o, &learner, &reward, actors, 2, false))
        return cl_finish(&c);
    pid_t pids[2] = {proc_pid(actors[0]), proc_pid(actors[1])};

    /* Kill it past a checkpoint, so the restart goes back to an older
     * version, once both actors work for it. */
    for (int a = 0; a < 2; a++)
        if (!EXPECT(wait_log(&c, actors[a], "weights run '", 30.0), "%s never installed weights",
                    proc_name(actors[a])))
            return cl_finish(&c);
    if (!wait_step(&c, learner, 6, 40.0)) return cl_finish(&c);
    double t0 = now_s();
    while (ckpt_step(&c) < 4 && now_s() - t0 < 10.0) sleep_ms(20);
    proc_kill(learner);
    int64_t   step_at_kill = metrics_step(&c);
    CkptState ck;
    if (!read_ckpt_state(&c, &ck)) return cl_finish(&c);
    note(&c,
         "kill -9 of the learner at step %" PRId64 "; checkpoint: run %s epoch %" PRId64
         " step %" PRId64 " version %" PRId64 ", %" PRId64 " groups in flight",
         step_at_kill, ck.run_id, ck.epoch, ck.step, ck.version, ck.in_flight);
    EXPECT(ck.epoch == 0 && ck.step >= 4 && ck.step <= step_at_kill && ck.version == ck.step,
           "checkpoint at kill: epoch %" PRId64 " step %" PRId64 " version %" PRId64
           ", expected epoch 0, step 4..%" PRId64,
           ck.epoch, ck.step, ck.version, step_at_kill);

    /* Down for a second: the actors' requests go unanswered and time out. */
    sleep_ms(1000);
    Proc *again = cl_proc(&c, "learner-2", NULL, NULL, learner);
    if (!cl_start(&c, again)) return cl_finish(&c);
    char resumed[PATH_MAX + 256];
    snprintf(resumed, sizeof resumed,
             "resumed run %s from '%s': step %" PRId64 " version %" PRId64 " epoch ", ck.run_id,
             c.ckpt, ck.step, ck.version);
    EXPECT(wait_log(&c, again, resumed, 30.0), "learner-2 did not log \"%s\"", resumed);
    /* The new epoch: one restart more in its high half, a random low half
     * (learner/epoch.h); learner-2 has written it to the checkpoint. */
    CkptState ck2 = {0};
    int64_t   e1 = -1;
    if (wait_log(&c, again, " params, ", 30.0) && read_ckpt_state(&c, &ck2)) e1 = ck2.epoch;
    EXPECT(e1 >> 32 == 1 && (e1 & 0xffffffff) != 0,
           "learner-2's epoch %#" PRIx64 ", expected one restart and a nonce", e1);
    wait_learner_done(&c, again, 60.0);

    /* The metrics go on where the checkpoint left off, in the new epoch. */
    json_t *metrics = check_metrics(&c);
    size_t  i;
    json_t *m, *first1 = NULL, *last = NULL;
    int64_t n0 = 0, n1 = 0, last0 = 0;
    json_array_foreach(metrics, i, m)
    {
        if (jint(m, "epoch") == 0) {
            n0++;
            last0 = jint(m, "step");
        } else if (jint(m, "epoch") == e1) {
            if (!first1) first1 = m;
            n1++;
        }
        last = m;
    }
    note(&c,
         "metrics: %" PRId64 " records of epoch 0 (last step %" PRId64 "), %" PRId64
         " of the new epoch (first step %" PRId64 " version %" PRId64 ")",
         n0, last0, n1, first1 ? jint(first1, "step") : -1, first1 ? jint(first1, "version") : -1);
    EXPECT(n0 + n1 == (int64_t)json_array_size(metrics), "metrics records of another epoch");
    EXPECT(first1 && jint(first1, "step") == ck.step + 1 &&
               jint(first1, "version") == ck.version + 1,
           "the first step after the restart is step %" PRId64 " version %" PRId64
           ", expected %" PRId64 " (the checkpoint's + 1)",
           first1 ? jint(first1, "step") : -1, first1 ? jint(first1, "version") : -1, ck.step + 1);
    EXPECT(last && jint(last, "epoch") == e1 && jint(last, "step") == o.steps,
           "the last metrics record is not the new epoch's step %d", o.steps);
    EXPECT(n1 == o.steps - ck.step, "%" PRId64 " steps in the new epoch, expected %" PRId64, n1,
           o.steps - ck.step);

    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        const char *run = json_string_value(json_object_get(sum, "run_id"));
        EXPECT(run && !strcmp(run, ck.run_id), "summary run id '%s', expected '%s'", run ? run : "",
               ck.run_id);
        EXPECT(jint(sum, "epoch") == e1, "summary epoch %" PRId64 ", expected %" PRId64,
               jint(sum, "epoch"), e1);
        /* The groups out or buffered at the checkpoint died with the old
         * learner: the new one counts them as re-issued. */
        EXPECT(k.reissued >= ck.reissued + ck.in_flight + ck.buffered,
               "summary: reissued %" PRId64 ", expected >= %" PRId64 " + %" PRId64 " + %" PRId64
               " (the checkpoint's re-issued, in flight and buffered)",
               k.reissued, ck.reissued, ck.in_flight, ck.buffered);
        note_counters(&c, &k);
    }

    /* The same actor processes followed the new incarnation: each got
     * leases from it, installed its weights and sent groups with them. */
    char installed[160];
    snprintf(installed, sizeof installed, "weights run '%s' epoch %" PRId64 " v", ck.run_id, e1);
    for (int a = 0; a < 2; a++) {
        EXPECT(proc_is_running(actors[a]) && proc_pid(actors[a]) == pids[a],
               "%s (pid %d) did not survive the learner's restart", proc_name(actors[a]),
               (int)pids[a]);
        char granted[96];
        snprintf(granted, sizeof granted, " prompts to '%s'", proc_name(actors[a]));
        int n_grants = count_lines(again, granted);
        EXPECT(n_grants > 0, "learner-2 granted %s no lease", proc_name(actors[a]));
        EXPECT(proc_output_has(actors[a], installed), "%s never installed weights of the new epoch",
               proc_name(actors[a]));
        note(&c, "%s (pid %d, never restarted): %d leases from learner-2", proc_name(actors[a]),
             (int)pids[a], n_grants);
    }
    json_decref(metrics);
    json_decref(sum);
    for (int a = 0; a < 2; a++) {
        proc_end(&c, actors[a]);
        /* Its final status line: groups sent since it took the new epoch's weights. */
        long long before = 0, after = 0;
        bool      ok = actor_groups_around(actors[a], installed, &before, &after);
        EXPECT(ok && after > before,
               "%s sent no groups with the new epoch's weights (%lld before, %lld at the end)",
               proc_name(actors[a]), before, after);
        EXPECT(actor_holds(actors[a], ck.run_id, e1),
               "%s's last status line does not hold the new epoch's weights", proc_name(actors[a]));
        note(&c, "%s: %lld groups sent before the new epoch's weights, %lld at the end",
             proc_name(actors[a]), before, after);
    }
    proc_end(&c, reward);
    return cl_finish(&c);
}

/* ---- fault_reward ----------------------------------------------------- */

/* The numbers of the reward server's last status line ("scored N groups
 * (...), ..., received M, rejects: ..."). */
static bool reward_last_status(const Proc *p, long long *scored, long long *received, char *rejects,
                               size_t cap)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = find_last(text, ": scored ");
    bool        ok = false;
    if (last) {
        const char *rcv = strstr(last, "received ");
        const char *rej = strstr(last, "rejects: ");
        ok = sscanf(last, ": scored %lld groups", scored) == 1 && rcv &&
             sscanf(rcv, "received %lld", received) == 1 && rej;
        if (ok && rejects) {
            /* The reasons end the line, unless ", unsent at shutdown" follows. */
            rej += strlen("rejects: ");
            size_t n = strcspn(rej, ",\n");
            snprintf(rejects, cap, "%.*s", (int)n, rej);
        }
    }
    free(text);
    return ok;
}

int cluster_fault_reward_selftest(bool verbose)
{
    const RunOpts o = {.steps = 30, .ckpt_every = 0, .max_staleness = 0, .batch_groups = 4};
    Cluster       c;
    Proc         *learner, *reward, *actors[2];
    if (!cl_start_run(&c, "fault_reward", verbose, &o, &learner, &reward, actors, 2, false))
        return cl_finish(&c);
    if (!wait_step(&c, learner, 4, 40.0)) return cl_finish(&c);

    /* Frozen, the server takes groups into its socket buffers and queues
     * without scoring them; kill -9 then loses them. */
    if (!cl_pause(reward)) return cl_finish(&c);
    sleep_ms(600);
    int64_t step_at_kill = metrics_step(&c);
    proc_kill(reward);
    note(&c, "kill -9 of the reward server at step %" PRId64, step_at_kill);
    sleep_ms(500);
    Proc *again = cl_proc(&c, "reward-2", NULL, NULL, reward);
    bool  up = false;
    /* Its port was ours a moment ago; give the kernel a few tries. */
    for (int tries = 0; tries < 10 && !up && !out_of_time(&c); tries++) {
        if (tries) {
            note(&c, "reward-2 could not bind yet; again");
            sleep_ms(300);
        }
        if (!cl_start(&c, again)) break;
        up = wait_log(&c, again, "samples bound at", 15.0);
        if (!up) proc_kill(again);
    }
    EXPECT(up, "reward-2 did not start on the same port");
    wait_learner_done(&c, learner, 60.0);

    json_t  *metrics = check_metrics(&c);
    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(k.reissued >= 1,
               "summary: reissued %" PRId64 ", expected >= 1 (groups lost with the server)",
               k.reissued);
        note_counters(&c, &k);
    }
    size_t n = json_array_size(metrics);
    EXPECT(n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(step_at_kill + 1 < o.steps, "the run was almost over at the kill (step %" PRId64 ")",
           step_at_kill);
    json_decref(metrics);
    json_decref(sum);
    proc_end(&c, actors[0]);
    proc_end(&c, actors[1]);
    if (up) {
        proc_end(&c, again);
        long long scored = 0, received = 0;
        EXPECT(reward_last_status(again, &scored, &received, NULL, 0) && scored > 0,
               "reward-2 scored no groups (%lld received)", received);
        note(&c, "reward-2 scored %lld groups of %lld received", scored, received);
    }
    return cl_finish(&c);
}

/* ---- hostile ---------------------------------------------------------- */

#define HOSTILE_ID "hostile-test"
#define HOSTILE_MAX_FRAMES 12

/* One hostile frame and the reason its receiver must count it under. */
typedef struct {
    const char *what;
    uint8_t    *data; /* owned; NULL: len zero bytes, made at send time */
    size_t      len;
    WireReason  reason;
    bool        is_semantic; /* decodes fine; refused by what the receiver knows */
} Frame;

/* The hostile frames for one socket. */
typedef struct {
    const char *socket;
    Frame       f[HOSTILE_MAX_FRAMES];
    int         n;
} FrameSet;

static Frame *frame_add(FrameSet *s, const char *what, WireReason reason)
{
    CHECK(s->n < HOSTILE_MAX_FRAMES);
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

static void frames_free(FrameSet *s)
{
    for (int i = 0; i < s->n; i++) free(s->f[i].data);
    s->n = 0;
}

/* "garbage=2 oversized=1 ..." for the frames of the sets, as
 * wire_rejects_format writes the counters a receiver should end with. */
static uint64_t frames_expected(const FrameSet *const *sets, int n_sets, int extra_nonfinite,
                                char *buf, size_t cap)
{
    WireRejects w;
    wire_rejects_init(&w);
    for (int k = 0; k < n_sets; k++)
        for (int i = 0; i < sets[k]->n; i++) atomic_fetch_add(&w.n[sets[k]->f[i].reason], 1);
    atomic_fetch_add(&w.n[WIRE_REJ_NONFINITE], (uint64_t)extra_nonfinite);
    wire_rejects_format(&w, buf, cap);
    return wire_rejects_total(&w);
}

/* The test's own check of its frames: each is refused by wire_decode as
 * desc under lim for the reason it names (or decodes, if semantic). With
 * is_actor, none may decode as an ErrorReply either: the actor would count
 * it as an error reply instead. */
static void frames_check(Cluster *c, const FrameSet *s, const ProtobufCMessageDescriptor *desc,
                         const WireLimits *lim, bool is_actor)
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

/* Sends every frame of s (to peer on ROUTER sockets). Returns the number sent. */
static int frames_send(WireSock *sock, const void *peer, size_t peer_len, const FrameSet *s,
                       char *error, size_t cap)
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

/* A group of G completions of prompt 0 that passes every wire check, to
 * spoil one field at a time. */
typedef struct {
    int32_t              prompt_tok[4];
    int32_t              tok[CL_GROUP][2];
    float                lpb[CL_GROUP][2], lps[CL_GROUP][2];
    uint64_t             pv[CL_GROUP][2];
    Rlhf__Prompt         prompt;
    Rlhf__SamplingParams sampling;
    Rlhf__Completion     comp[CL_GROUP];
    Rlhf__Completion    *comp_p[CL_GROUP];
    Rlhf__SampledGroup   group;
    Rlhf__Score          score[CL_GROUP];
    Rlhf__Score         *score_p[CL_GROUP];
    Rlhf__ScoredGroup    scored;
} Group;

static void group_init(Group *g, const char *run_id, uint64_t epoch)
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
    for (int i = 0; i < CL_GROUP; i++) {
        g->tok[i][0] = 20;
        g->tok[i][1] = TOK_EOS;
        for (int t = 0; t < 2; t++) g->lpb[i][t] = g->lps[i][t] = -1.0f;
        wire_fixture_completion_init(&g->comp[i], g->tok[i], g->lpb[i], g->lps[i], g->pv[i], 2);
        g->comp_p[i] = &g->comp[i];
        rlhf__score__init(&g->score[i]);
        g->score_p[i] = &g->score[i];
    }
    wire_fixture_sampled_init(&g->group, run_id, epoch, &g->prompt, &g->sampling, g->comp_p,
                              CL_GROUP);
    g->group.lease_id = 0x7fff0001;
    g->group.actor_id = HOSTILE_ID;
    g->group.group_index = 0;
    g->group.group_count = 1;
    wire_fixture_scored_init(&g->scored, &g->group, g->score_p, CL_GROUP, "hostile");
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

/* The learner's lease ROUTER: LeaseRequest has no token ids or floats, so
 * out-of-range means a negative credit. */
static void frames_lease_request(FrameSet *s)
{
    Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = HOSTILE_ID;
    frames_start(s, "learner lease", &r.base);
    r.version = WIRE_PROTOCOL_VERSION + 1;
    r.max_prompts = 1;
    frame_msg(s, "wrong version", &r.base, 0, WIRE_REJ_BAD_VERSION);
    r.version = WIRE_PROTOCOL_VERSION;
    r.max_prompts = -1;
    frame_msg(s, "negative max_prompts", &r.base, 0, WIRE_REJ_BAD_VALUE);
    frame_oversized(s);
}

/* The learner's snapshot ROUTER: no token ids or floats either. */
static void frames_snapshot_request(FrameSet *s)
{
    Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = HOSTILE_ID;
    frames_start(s, "learner snapshot", &r.base);
    r.version = 0;
    frame_msg(s, "wrong version", &r.base, 0, WIRE_REJ_BAD_VERSION);
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = "";
    frame_msg(s, "no actor id", &r.base, 0, WIRE_REJ_BAD_SHAPE);
    frame_oversized(s);
}

/* Groups of the right run, spoilt one field at a time: ScoredGroups for
 * the learner's results PULL (is_scored), else SampledGroups for the
 * reward server's samples PULL. */
static void frames_group(FrameSet *s, const char *run_id, uint64_t epoch, bool is_scored)
{
    Rlhf__ScoredGroup  ts = RLHF__SCORED_GROUP__INIT;
    Rlhf__SampledGroup tg = RLHF__SAMPLED_GROUP__INIT;
    ts.version = tg.version = WIRE_PROTOCOL_VERSION;
    ts.run_id = tg.run_id = (char *)run_id;
    frames_start(s, is_scored ? "learner results" : "reward samples",
                 is_scored ? &ts.base : &tg.base);
    Group                   g;
    const ProtobufCMessage *m = is_scored ? &g.scored.base : &g.group.base;
    group_init(&g, run_id, epoch);
    if (is_scored)
        g.scored.version = 3;
    else
        g.group.version = 2;
    frame_msg(s, "wrong version", m, 0, WIRE_REJ_BAD_VERSION);
    group_init(&g, run_id, epoch);
    g.tok[is_scored ? 1 : 0][0] = 5000;
    frame_msg(s, "completion token 5000", m, 0, WIRE_REJ_BAD_TOKENS);
    if (is_scored) {
        group_init(&g, run_id, epoch);
        g.prompt_tok[2] = -1;
        frame_msg(s, "prompt token -1", m, 0, WIRE_REJ_BAD_TOKENS);
        group_init(&g, run_id, epoch);
        g.score[2].reward = NAN;
        frame_msg(s, "NaN reward", m, 0, WIRE_REJ_NONFINITE);
        group_init(&g, run_id, epoch);
        g.lpb[3][1] = INFINITY;
        frame_msg(s, "infinite log-prob", m, 0, WIRE_REJ_NONFINITE);
        group_init(&g, run_id, epoch);
        g.scored.run_id = g.group.run_id = "not-this-run";
        frame_msg(s, "another run", m, 0, WIRE_REJ_BAD_RUN);
    } else {
        group_init(&g, run_id, epoch);
        g.lps[2][0] = NAN;
        frame_msg(s, "NaN log-prob", m, 0, WIRE_REJ_NONFINITE);
    }
    frame_oversized(s);
}

/* The actor's SUB: WeightAnnounces. */
static void frames_announce(FrameSet *s, const char *run_id, uint64_t epoch)
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
    w.total_bytes = 6;
    frame_msg(s, "total_bytes 6", &w.base, 0, WIRE_REJ_BAD_VALUE);
    frame_oversized(s);
}

/* The actor's lease DEALER: LeaseGrants of the right run and epoch. */
static void frames_grant(FrameSet *s, const char *run_id, uint64_t epoch)
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
    g.group_size = CL_GROUP;
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

/* The actor's snapshot DEALER: WeightChunks nobody asked for. */
static void frames_chunk(FrameSet *s, const char *run_id, uint64_t epoch)
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

/* A forwarding proxy between the actor and the learner, on the test's
 * thread of its own: it binds what the actor connects to (lease ROUTER,
 * weights PUB, snapshot ROUTER), passes every frame on to the learner and
 * back, and on request slips the actor hostile frames on all three, then
 * answers one snapshot request itself with a complete, correctly
 * checksummed snapshot holding a NaN. It learns the actor's routing ids,
 * the run and the snapshot's config from the traffic. */
typedef struct {
    void       *zctx;
    const char *ep_lease, *ep_weights, *ep_snap;       /* bound, for the actor */
    const char *ep_l_lease, *ep_l_weights, *ep_l_snap; /* the learner's */
    pthread_t   thread;
    atomic_int  is_ready;    /* 1 sockets up, -1 failed */
    atomic_int  stop;        /* set by the test thread */
    atomic_int  want_inject; /* set by the test thread */
    atomic_int  is_injected; /* the frames went out */
    atomic_int  is_nan_sent; /* the NaN snapshot went out */
    atomic_int  forwarded;   /* frames passed on, both ways */
    /* Owned by the proxy thread until it is joined. */
    WireSock *a_lease, *a_pub, *a_snap, *l_lease, *l_sub, *l_snap;
    uint8_t   lease_peer[WIRE_MAX_IDENTITY];
    size_t    lease_peer_len;
    uint8_t   snap_peer[WIRE_MAX_IDENTITY];
    size_t    snap_peer_len;
    char      run_id[WIRE_MAX_NAME + 1];
    uint64_t  epoch;
    char     *config_json; /* from a chunk 0 the learner sent */
    uint64_t  total_bytes;
    bool      is_nan_armed;
    FrameSet  sub, lease, snap;
    char      error[256];
} Proxy;

static void proxy_error(Proxy *px, const char *what, int rc)
{
    if (!px->error[0]) snprintf(px->error, sizeof px->error, "proxy: %s: %s", what, err_str(rc));
}

/* Forwards m to dst (to peer on ROUTER sockets); a vanished peer is fine. */
static void proxy_forward(Proxy *px, WireSock *dst, const void *peer, size_t peer_len, WireMsg *m)
{
    int rc = wire_send_msg(dst, peer, peer_len, m, 0);
    wire_msg_close(m);
    if (rc == 0) atomic_fetch_add(&px->forwarded, 1);
}

static void proxy_send_nan_snapshot(Proxy *px, const Rlhf__SnapshotRequest *req)
{
    size_t n = (size_t)(px->total_bytes / 4);
    float *block = xcalloc(n, sizeof *block);
    block[n / 2] = NAN;
    /* One version past what the actor holds, so it is not taken for the
     * snapshot it has; the checksum is right, so only the NaN can fail it. */
    WireSnapMeta meta = {.run_id = req->run_id,
                         .epoch = req->have_epoch,
                         .policy_version = req->have_policy_version + 1,
                         .config_json = px->config_json,
                         .has_checksum = false};
    int          rc = wire_snap_send(px->a_snap, px->snap_peer, px->snap_peer_len, &meta, block,
                                     n * sizeof *block, 0);
    free(block);
    if (rc) proxy_error(px, "NaN snapshot", rc);
    atomic_store(&px->is_nan_sent, 1);
}

static void proxy_inject(Proxy *px)
{
    frames_announce(&px->sub, px->run_id, px->epoch);
    frames_grant(&px->lease, px->run_id, px->epoch);
    frames_chunk(&px->snap, px->run_id, px->epoch);
    frames_send(px->a_pub, NULL, 0, &px->sub, px->error, sizeof px->error);
    frames_send(px->a_lease, px->lease_peer, px->lease_peer_len, &px->lease, px->error,
                sizeof px->error);
    frames_send(px->a_snap, px->snap_peer, px->snap_peer_len, &px->snap, px->error,
                sizeof px->error);
    px->is_nan_armed = true;
    atomic_store(&px->is_injected, 1);
}

/* Takes what waits on one socket and passes it on. */
static void proxy_pump(Proxy *px, WireSock *from)
{
    for (int i = 0; i < 64; i++) {
        WireMsg m;
        int     rc = wire_recv(from, 0, &m);
        if (rc == ERR_TIMEOUT || rc == ERR_AGAIN) return;
        if (rc) {
            if (rc == ERR_IO) proxy_error(px, wire_sock_name(from), rc);
            continue;
        }
        const void *data = wire_msg_data(&m);
        size_t      len = wire_msg_size(&m);
        if (from == px->a_lease) {
            memcpy(px->lease_peer, m.peer, m.peer_len);
            px->lease_peer_len = m.peer_len;
            proxy_forward(px, px->l_lease, NULL, 0, &m);
        } else if (from == px->a_snap) {
            memcpy(px->snap_peer, m.peer, m.peer_len);
            px->snap_peer_len = m.peer_len;
            Rlhf__SnapshotRequest *req = NULL;
            if (px->is_nan_armed && wire_decode(&rlhf__snapshot_request__descriptor, data, len,
                                                NULL, (ProtobufCMessage **)&req, NULL) == 0) {
                px->is_nan_armed = false;
                proxy_send_nan_snapshot(px, req);
                protobuf_c_message_free_unpacked(&req->base, NULL);
                wire_msg_close(&m);
            } else {
                proxy_forward(px, px->l_snap, NULL, 0, &m);
            }
        } else if (from == px->l_lease) {
            Rlhf__LeaseGrant *g = NULL;
            if (wire_decode(&rlhf__lease_grant__descriptor, data, len, NULL,
                            (ProtobufCMessage **)&g, NULL) == 0) {
                snprintf(px->run_id, sizeof px->run_id, "%s", g->run_id);
                px->epoch = g->epoch;
                protobuf_c_message_free_unpacked(&g->base, NULL);
            }
            proxy_forward(px, px->a_lease, px->lease_peer, px->lease_peer_len, &m);
        } else if (from == px->l_snap) {
            Rlhf__WeightChunk *ch = NULL;
            if (wire_decode(&rlhf__weight_chunk__descriptor, data, len, NULL,
                            (ProtobufCMessage **)&ch, NULL) == 0) {
                if (ch->chunk_index == 0 && ch->config_json[0] && !px->config_json) {
                    px->config_json = xstrdup(ch->config_json);
                    px->total_bytes = ch->total_bytes;
                }
                protobuf_c_message_free_unpacked(&ch->base, NULL);
            }
            proxy_forward(px, px->a_snap, px->snap_peer, px->snap_peer_len, &m);
        } else {
            proxy_forward(px, px->a_pub, NULL, 0, &m);
        }
    }
}

static void *proxy_main(void *arg)
{
    Proxy       *px = arg;
    WireSockOpts o = WIRE_SOCK_DEFAULTS;
    o.linger_ms = 0;
    o.immediate = false;
    o.sndtimeo_ms = 2000;
    px->a_lease = wire_sock_new(px->zctx, ZMQ_ROUTER, "proxy-lease", &o);
    px->a_pub = wire_sock_new(px->zctx, ZMQ_PUB, "proxy-weights", &o);
    px->a_snap = wire_sock_new(px->zctx, ZMQ_ROUTER, "proxy-snapshot", &o);
    px->l_lease = wire_sock_new(px->zctx, ZMQ_DEALER, "proxy-l-lease", &o);
    px->l_sub = wire_sock_new(px->zctx, ZMQ_SUB, "proxy-l-weights", &o);
    px->l_snap = wire_sock_new(px->zctx, ZMQ_DEALER, "proxy-l-snapshot", &o);
    int rc = px->a_lease && px->a_pub && px->a_snap && px->l_lease && px->l_sub && px->l_snap
                 ? 0
                 : ERR_IO;
    if (!rc) rc = wire_bind(px->a_lease, px->ep_lease);
    if (!rc) rc = wire_bind(px->a_pub, px->ep_weights);
    if (!rc) rc = wire_bind(px->a_snap, px->ep_snap);
    if (!rc) rc = wire_connect(px->l_lease, px->ep_l_lease);
    if (!rc) rc = wire_connect(px->l_sub, px->ep_l_weights);
    if (!rc) rc = wire_connect(px->l_snap, px->ep_l_snap);
    if (rc) proxy_error(px, "sockets", rc);
    atomic_store(&px->is_ready, rc ? -1 : 1);
    WireSock *in[5] = {px->a_lease, px->a_snap, px->l_lease, px->l_snap, px->l_sub};
    while (!rc && !atomic_load(&px->stop)) {
        zmq_pollitem_t items[5];
        for (int i = 0; i < 5; i++)
            items[i] = (zmq_pollitem_t){.socket = wire_sock_zmq(in[i]), .events = ZMQ_POLLIN};
        if (zmq_poll(items, 5, 10) < 0 && zmq_errno() != EINTR) {
            proxy_error(px, "zmq_poll", ERR_IO);
            break;
        }
        for (int i = 0; i < 5; i++)
            if (items[i].revents & ZMQ_POLLIN) proxy_pump(px, in[i]);
        if (atomic_load(&px->want_inject) && !atomic_load(&px->is_injected) && px->lease_peer_len &&
            px->snap_peer_len && px->config_json && px->run_id[0])
            proxy_inject(px);
    }
    WireSock **all[6] = {&px->a_lease, &px->a_pub, &px->a_snap,
                         &px->l_lease, &px->l_sub, &px->l_snap};
    for (int i = 0; i < 6; i++) wire_sock_free(all[i]);
    return NULL;
}

/* The totals of the learner's last status line ("| rejects lease L results
 * R snapshot S"); false before the first. */
static bool learner_rejects(const Proc *p, long long *lease, long long *results,
                            long long *snapshot)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = find_last(text, "| rejects lease ");
    bool        ok = last && sscanf(last, "| rejects lease %lld results %lld snapshot %lld", lease,
                                    results, snapshot) == 3;
    free(text);
    return ok;
}

/* The reasons of the actor's last status line ("rejects N (reasons)"). */
static bool actor_rejects(const Proc *p, long long *total, char *reasons, size_t cap)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = find_last(text, "; rejects ");
    char        buf[256] = "";
    bool        ok = last && sscanf(last, "; rejects %lld (%255[^)])", total, buf) == 2;
    if (ok) snprintf(reasons, cap, "%s", buf);
    free(text);
    return ok;
}

/* Receives on s until a message of type desc arrives (returned, caller
 * frees) or timeout_s passes, counting the ErrorReplies on the way and
 * checking each names one of the refusal reasons. */
static ProtobufCMessage *recv_after_errors(Cluster *c, WireSock *s,
                                           const ProtobufCMessageDescriptor *desc, double timeout_s,
                                           int *n_errors)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
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
                note(c, "ErrorReply on %s: %d %s", wire_sock_name(s), er->code, er->reason);
                protobuf_c_message_free_unpacked(&er->base, NULL);
            }
        }
        wire_msg_close(&m);
        if (out) return out;
    }
    return NULL;
}

/* Fetches the learner's snapshot through s into rx. */
static bool fetch_snapshot(Cluster *c, WireSock *s, WireSnapRx *rx, int *n_errors)
{
    Rlhf__SnapshotRequest req = RLHF__SNAPSHOT_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.actor_id = HOSTILE_ID;
    wire_snap_rx_reset(rx);
    if (wire_send(s, &req.base, 0) != 0) return false;
    for (;;) {
        Rlhf__WeightChunk *ch = (Rlhf__WeightChunk *)recv_after_errors(
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

/* Checks that p's log holds "rejected WHAT: REASON" for every frame of s
 * (WHAT is "frame" for the oversized ones wire_recv refuses). */
static void expect_logged(Cluster *c, const Proc *p, const FrameSet *s, const char *what)
{
    for (int i = 0; i < s->n; i++) {
        char want[128];
        snprintf(want, sizeof want, "rejected %s: %s: ", s->f[i].data ? what : "frame",
                 wire_reason_name(s->f[i].reason));
        if (s->f[i].is_semantic) continue; /* logged under its own name, checked by the caller */
        EXPECT(proc_output_has(p, want), "%s's log lacks \"%s\" (%s frame '%s')", proc_name(p),
               want, s->socket, s->f[i].what);
    }
}

int cluster_hostile_selftest(bool verbose)
{
    const RunOpts o = {
        .steps = 40, .ckpt_every = 0, .max_staleness = 2, .batch_groups = 4, .lease_credit = 1000};
    Cluster c;
    Proc   *learner, *reward;
    if (!cl_start_run(&c, "hostile", verbose, &o, &learner, &reward, NULL, 0, false))
        return cl_finish(&c);

    void        *zctx = zmq_ctx_new();
    WireSockOpts so = WIRE_SOCK_DEFAULTS;
    so.linger_ms = 0;
    so.immediate = false; /* queue until connected */
    so.sndtimeo_ms = 5000;
    WireSock   *t_lease = wire_sock_new(zctx, ZMQ_DEALER, "test-lease", &so);
    WireSock   *t_snap = wire_sock_new(zctx, ZMQ_DEALER, "test-snapshot", &so);
    WireSock   *t_results = wire_sock_new(zctx, ZMQ_PUSH, "test-results", &so);
    WireSock   *t_samples = wire_sock_new(zctx, ZMQ_PUSH, "test-samples", &so);
    WireSnapRx *rx = wire_snap_rx_new(NULL, (size_t)1 << 26);
    Tok        *tok = tok_new(TOK_CHARSET_DEFAULT);
    Proxy       px = {.zctx = zctx,
                      .ep_lease = c.ep_px_lease,
                      .ep_weights = c.ep_px_weights,
                      .ep_snap = c.ep_px_snap,
                      .ep_l_lease = c.ep_lease,
                      .ep_l_weights = c.ep_weights,
                      .ep_l_snap = c.ep_snap};
    bool        is_proxy = false;
    FrameSet    f_lease = {0}, f_snap = {0}, f_results = {0}, f_samples = {0};
    char        run_id[WIRE_MAX_NAME + 1] = "";
    int         errs_lease = 0, errs_snap = 0;
    if (!EXPECT(t_lease && t_snap && t_results && t_samples && tok &&
                    !wire_connect(t_lease, c.ep_lease) && !wire_connect(t_snap, c.ep_snap) &&
                    !wire_connect(t_results, c.ep_results) &&
                    !wire_connect(t_samples, c.ep_samples),
                "the test's sockets"))
        goto out;

    /* The run's identity, from a snapshot fetched the way an actor does. */
    if (!EXPECT(fetch_snapshot(&c, t_snap, rx, &errs_snap), "no snapshot from the learner"))
        goto out;
    snprintf(run_id, sizeof run_id, "%s", wire_snap_rx_run_id(rx));
    uint64_t epoch = wire_snap_rx_epoch(rx);

    /* Every socket of the learner and the reward server gets its frames. */
    frames_lease_request(&f_lease);
    frames_snapshot_request(&f_snap);
    frames_group(&f_results, run_id, epoch, true);
    frames_group(&f_samples, run_id, epoch, false);
    WireLimits lim_req = {.vocab_size = tok_vocab_size(tok)};
    WireLimits lim_results = {.vocab_size = tok_vocab_size(tok), .run_id = run_id};
    frames_check(&c, &f_lease, &rlhf__lease_request__descriptor, &lim_req, false);
    frames_check(&c, &f_snap, &rlhf__snapshot_request__descriptor, &lim_req, false);
    frames_check(&c, &f_results, &rlhf__scored_group__descriptor, &lim_results, false);
    frames_check(&c, &f_samples, &rlhf__sampled_group__descriptor, &lim_req, false);
    Group g;
    group_init(&g, run_id, epoch);
    ProtobufCMessage *ok_msg = NULL;
    size_t            ok_len;
    uint8_t          *ok_buf = wire_fixture_pack(&g.scored.base, &ok_len);
    EXPECT(wire_decode(&rlhf__scored_group__descriptor, ok_buf, ok_len, &lim_results, &ok_msg,
                       NULL) == 0,
           "the unspoilt group does not pass the wire checks");
    if (ok_msg) protobuf_c_message_free_unpacked(ok_msg, NULL);
    free(ok_buf);
    char     want_lease[256], want_snap[256], want_results[256], want_samples[256];
    uint64_t n_lease = frames_expected((const FrameSet *[]){&f_lease}, 1, 0, want_lease, 256);
    uint64_t n_snap = frames_expected((const FrameSet *[]){&f_snap}, 1, 0, want_snap, 256);
    uint64_t n_results = frames_expected((const FrameSet *[]){&f_results}, 1, 0, want_results, 256);
    frames_expected((const FrameSet *[]){&f_samples}, 1, 0, want_samples, 256);
    char send_error[256] = "";
    frames_send(t_lease, NULL, 0, &f_lease, send_error, sizeof send_error);
    frames_send(t_snap, NULL, 0, &f_snap, send_error, sizeof send_error);
    frames_send(t_results, NULL, 0, &f_results, send_error, sizeof send_error);
    frames_send(t_samples, NULL, 0, &f_samples, send_error, sizeof send_error);
    EXPECT(!send_error[0], "%s", send_error);
    note(&c, "sent %d + %d + %d frames to the learner, %d to the reward server", f_lease.n,
         f_snap.n, f_results.n, f_samples.n);

    /* Each refused request is answered with an ErrorReply, and the next good
     * one is served as before. */
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.actor_id = HOSTILE_ID;
    req.max_prompts = 0; /* a keep-alive: an answer without work */
    EXPECT(wire_send(t_lease, &req.base, 0) == 0, "lease request not sent");
    Rlhf__LeaseGrant *grant = (Rlhf__LeaseGrant *)recv_after_errors(
        &c, t_lease, &rlhf__lease_grant__descriptor, 15.0, &errs_lease);
    EXPECT(grant && grant->n_prompts == 0 && !strcmp(grant->run_id, run_id),
           "no lease grant after the hostile lease requests");
    if (grant) protobuf_c_message_free_unpacked(&grant->base, NULL);
    int errs0 = errs_snap;
    EXPECT(fetch_snapshot(&c, t_snap, rx, &errs_snap),
           "no snapshot after the hostile snapshot requests");
    errs_snap -= errs0;
    EXPECT(errs_lease == f_lease.n - 1 && errs_snap == f_snap.n - 1,
           "ErrorReplies: %d on lease, %d on snapshot, expected %d and %d (all but the "
           "oversized frame, which never reaches the decoder)",
           errs_lease, errs_snap, f_lease.n - 1, f_snap.n - 1);

    /* The daemons' own counts, from their status lines. */
    long long l = -1, r = -1, sn = -1;
    double    t0 = now_s();
    while (!(learner_rejects(learner, &l, &r, &sn) && l == (long long)n_lease &&
             r == (long long)n_results && sn == (long long)n_snap) &&
           now_s() - t0 < 20.0 && !out_of_time(&c))
        sleep_ms(50);
    EXPECT(l == (long long)n_lease && r == (long long)n_results && sn == (long long)n_snap,
           "learner status line: rejects lease %lld results %lld snapshot %lld, expected "
           "%" PRIu64 " %" PRIu64 " %" PRIu64,
           l, r, sn, n_lease, n_results, n_snap);
    long long scored = -1, received = -1;
    char      reasons[256] = "";
    t0 = now_s();
    while (!(reward_last_status(reward, &scored, &received, reasons, sizeof reasons) &&
             !strcmp(reasons, want_samples)) &&
           now_s() - t0 < 20.0 && !out_of_time(&c))
        sleep_ms(50);
    EXPECT(!strcmp(reasons, want_samples) && scored == 0,
           "reward status line: scored %lld, rejects '%s', expected 0 and '%s'", scored, reasons,
           want_samples);
    note(&c, "learner counts lease %lld, results %lld, snapshot %lld; reward: %s", l, r, sn,
         reasons);

    /* Now the actor, behind the proxy, and a run to the end. */
    if (!EXPECT(pthread_create(&px.thread, NULL, proxy_main, &px) == 0, "pthread_create")) goto out;
    is_proxy = true;
    while (atomic_load(&px.is_ready) == 0) sleep_ms(5);
    if (!EXPECT(atomic_load(&px.is_ready) > 0, "%s", px.error)) goto out;
    Proc *actor = actor_proc(&c, "actor-1", 8, true, false);
    if (!cl_start(&c, actor)) goto out;
    if (!wait_step(&c, learner, 2, 40.0)) goto out;
    atomic_store(&px.want_inject, 1);
    t0 = now_s();
    while (!atomic_load(&px.is_nan_sent) && proc_is_running(learner) && now_s() - t0 < 20.0)
        sleep_ms(20);
    EXPECT(atomic_load(&px.is_injected) && atomic_load(&px.is_nan_sent),
           "the proxy did not get to send its frames (injected %d, NaN snapshot %d)",
           atomic_load(&px.is_injected), atomic_load(&px.is_nan_sent));
    int64_t step_injected = metrics_step(&c);
    wait_learner_done(&c, learner, 60.0);
    EXPECT(step_injected < o.steps, "the run was over before the actor's frames");

    /* The run completed with every count in place. */
    json_t  *metrics = check_metrics(&c);
    Counters k;
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(jint(sum, "rejects_lease") == (int64_t)n_lease &&
                   jint(sum, "rejects_results") == (int64_t)n_results &&
                   jint(sum, "rejects_snapshot") == (int64_t)n_snap,
               "summary: rejects lease %" PRId64 " results %" PRId64 " snapshot %" PRId64
               ", expected %" PRIu64 " %" PRIu64 " %" PRIu64,
               jint(sum, "rejects_lease"), jint(sum, "rejects_results"),
               jint(sum, "rejects_snapshot"), n_lease, n_results, n_snap);
    }
    size_t  n = json_array_size(metrics);
    json_t *rej = n ? json_object_get(json_array_get(metrics, n - 1), "rejects") : NULL;
    struct {
        const char *sock, *want;
    } per[3] = {{"lease", want_lease}, {"results", want_results}, {"snapshot", want_snap}};
    for (int i = 0; i < 3; i++) {
        const char *got =
            json_string_value(json_object_get(json_object_get(rej, per[i].sock), "reasons"));
        EXPECT(got && !strcmp(got, per[i].want),
               "last metrics record: %s rejects '%s', expected '%s'", per[i].sock,
               got ? got : "(none)", per[i].want);
        note(&c, "learner %s rejects: %s", per[i].sock, got ? got : "(none)");
    }
    json_decref(metrics);
    json_decref(sum);
    expect_logged(&c, learner, &f_lease, "LeaseRequest");
    expect_logged(&c, learner, &f_snap, "SnapshotRequest");
    expect_logged(&c, learner, &f_results, "ScoredGroup");

    proc_end(&c, reward);
    EXPECT(reward_last_status(reward, &scored, &received, reasons, sizeof reasons) &&
               !strcmp(reasons, want_samples) && scored > 0,
           "reward's last status line: scored %lld, rejects '%s', expected some and '%s'", scored,
           reasons, want_samples);
    note(&c, "reward server: scored %lld groups of %lld frames received, rejects %s", scored,
         received, reasons);
    expect_logged(&c, reward, &f_samples, "SampledGroup");

    /* The actor, still serving until told to stop, counted all of its frames. */
    atomic_store(&px.stop, 1);
    pthread_join(px.thread, NULL);
    is_proxy = false;
    EXPECT(!px.error[0], "%s", px.error);
    proc_end(&c, actor);
    if (atomic_load(&px.is_injected)) {
        WireLimits no_lim = {0};
        frames_check(&c, &px.sub, &rlhf__weight_announce__descriptor, &no_lim, true);
        frames_check(&c, &px.lease, &rlhf__lease_grant__descriptor, &no_lim, true);
        frames_check(&c, &px.snap, &rlhf__weight_chunk__descriptor, &no_lim, true);
        char      want_actor[256], got_actor[256] = "";
        long long got_total = -1;
        uint64_t n_actor = frames_expected((const FrameSet *[]){&px.sub, &px.lease, &px.snap}, 3, 1,
                                           want_actor, sizeof want_actor);
        EXPECT(actor_rejects(actor, &got_total, got_actor, sizeof got_actor) &&
                   got_total == (long long)n_actor && !strcmp(got_actor, want_actor),
               "actor's last status line: rejects %lld (%s), expected %" PRIu64 " (%s)", got_total,
               got_actor, n_actor, want_actor);
        note(&c, "actor: rejects %lld (%s); %d frames forwarded by the proxy", got_total, got_actor,
             atomic_load(&px.forwarded));
        expect_logged(&c, actor, &px.sub, "WeightAnnounce");
        expect_logged(&c, actor, &px.lease, "LeaseGrant");
        expect_logged(&c, actor, &px.snap, "WeightChunk");
        EXPECT(proc_output_has(actor, "rejected LeaseGrant: bad_tokens: "),
               "the actor's log lacks the grant of token 100000");
        EXPECT(proc_output_has(actor, "rejected snapshot: nonfinite: "),
               "the actor's log lacks the NaN snapshot");
    }

out:
    if (is_proxy) {
        atomic_store(&px.stop, 1);
        pthread_join(px.thread, NULL);
    }
    frames_free(&px.sub);
    frames_free(&px.lease);
    frames_free(&px.snap);
    free(px.config_json);
    frames_free(&f_lease);
    frames_free(&f_snap);
    frames_free(&f_results);
    frames_free(&f_samples);
    tok_free(&tok);
    wire_snap_rx_free(&rx);
    wire_sock_free(&t_lease);
    wire_sock_free(&t_snap);
    wire_sock_free(&t_results);
    wire_sock_free(&t_samples);
    EXPECT(zmq_ctx_term(zctx) == 0, "zmq_ctx_term: %s", zmq_strerror(zmq_errno()));
    return cl_finish(&c);
}

/* ---- metrics_cluster -------------------------------------------------- */

/* GET /metrics of the daemon on port: the body (caller frees) or NULL. */
static char *scrape(int port, const char *who)
{
    HttpReply r;
    int       rc = http_request(port, "GET", "/metrics", NULL, 5.0, false, &r);
    if (rc) {
        EXPECT(false, "%s: GET /metrics on port %d: %s", who, port, err_str(rc));
        return NULL;
    }
    char *body = r.body;
    r.body = NULL;
    bool ok = EXPECT(r.status == 200, "%s: GET /metrics: status %d", who, r.status);
    http_reply_free(&r);
    if (!ok) free(body);
    return ok ? body : NULL;
}

/* A scrape of the daemon on port once its sample series is above 0: the
 * daemons copy their counters into the registry a few times a second. */
static char *scrape_when_positive(Cluster *c, int port, const char *who, const char *series)
{
    for (double t0 = now_s(); now_s() - t0 < 10.0 && !out_of_time(c);) {
        char  *text = scrape(port, who);
        double v = 0;
        if (!text || (http_prom_value(text, series, &v) && v > 0)) return text;
        free(text);
        sleep_ms(50);
    }
    return scrape(port, who);
}

/* The value of one sample of a scrape (NaN, after a failed check, if it is missing). */
static double sample(const char *text, const char *series, const char *who)
{
    double v = NAN;
    EXPECT(text && http_prom_value(text, series, &v), "%s: no sample '%s'", who, series);
    return v;
}

static void expect_status(int port, const char *path, int status, const char *who)
{
    HttpReply r;
    int       rc = http_request(port, "GET", path, NULL, 5.0, false, &r);
    if (!EXPECT(rc == 0, "%s: GET %s: %s", who, path, err_str(rc))) return;
    EXPECT(r.status == status, "%s: GET %s: status %d, expected %d (%s)", who, path, r.status,
           status, r.body);
    http_reply_free(&r);
}

/* The scraped learner against a metrics record: the step, the version and
 * every lease counter exactly, the per-step statistics to the record's
 * six significant digits. */
static void expect_agrees(const char *text, const json_t *rec)
{
    static const struct {
        const char *key, *series;
    } exact[] = {
        {"step", "rlhf_learner_step"},
        {"version", "rlhf_learner_policy_version"},
        {"epoch", "rlhf_learner_epoch"},
        {"issued", "rlhf_learner_groups_total{state=\"issued\"}"},
        {"trained", "rlhf_learner_groups_total{state=\"trained\"}"},
        {"dropped_stale", "rlhf_learner_groups_total{state=\"dropped_stale\"}"},
        {"reissued", "rlhf_learner_groups_total{state=\"reissued\"}"},
        {"failed", "rlhf_learner_groups_total{state=\"failed\"}"},
        {"duplicates", "rlhf_learner_groups_total{state=\"duplicates\"}"},
        {"in_flight", "rlhf_learner_groups{state=\"in_flight\"}"},
        {"buffered", "rlhf_learner_groups{state=\"buffered\"}"},
        {"leases", "rlhf_learner_leases_total"},
        {"leases_expired", "rlhf_learner_leases_expired_total"},
        {"staleness_max", "rlhf_learner_staleness_max"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        double got = sample(text, exact[i].series, "learner");
        EXPECT(got == (double)jint(rec, exact[i].key),
               "learner: /metrics %s = %.17g, metrics.jsonl %s = %" PRId64, exact[i].series, got,
               exact[i].key, jint(rec, exact[i].key));
    }
    static const struct {
        const char *key, *series;
    } reals[] = {
        {"samples_per_s", "rlhf_learner_samples_per_second"},
        {"reward_mean", "rlhf_learner_reward_mean"},
        {"accuracy", "rlhf_learner_accuracy"},
        {"kl_ref", "rlhf_learner_kl_ref"},
        {"staleness_mean", "rlhf_learner_staleness_mean"},
        {"step_s", "rlhf_learner_step_seconds"},
        {"entropy", "rlhf_learner_entropy"},
        {"lr", "rlhf_learner_lr"},
    };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        double got = sample(text, reals[i].series, "learner");
        double want = json_number_value(json_object_get(rec, reals[i].key));
        EXPECT(fabs(got - want) <= 1e-5 * fabs(want) + 1e-9,
               "learner: /metrics %s = %.9g, metrics.jsonl %s = %.9g", reals[i].series, got,
               reals[i].key, want);
    }
    /* The accounting identity, in the scraped values alone. */
    double issued = sample(text, "rlhf_learner_groups_total{state=\"issued\"}", "learner");
    double sum = 0;
    static const char *const parts[] = {
        "rlhf_learner_groups_total{state=\"trained\"}",
        "rlhf_learner_groups_total{state=\"dropped_stale\"}",
        "rlhf_learner_groups_total{state=\"reissued\"}",
        "rlhf_learner_groups_total{state=\"failed\"}",
        "rlhf_learner_groups{state=\"in_flight\"}",
        "rlhf_learner_groups{state=\"buffered\"}",
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        sum += sample(text, parts[i], "learner");
    EXPECT(issued == sum && issued > 0,
           "learner: scraped issued %g != trained + dropped_stale + reissued + failed + "
           "in_flight + buffered = %g",
           issued, sum);
}

/* The last metrics record with the scraped step: the actor is frozen, so
 * the learner soon stops stepping and a scrape and the file's last record
 * describe the same step. Returns the scrape (caller frees) and the record
 * (a new reference), or NULL. */
static char *scrape_at_record(Cluster *c, int port, json_t **rec)
{
    *rec = NULL;
    for (int tries = 0; tries < 50 && !out_of_time(c); tries++) {
        char *text = scrape(port, "learner");
        if (!text) return NULL;
        json_t *arr = read_metrics(c);
        size_t  n = json_array_size(arr);
        json_t *last = n ? json_array_get(arr, n - 1) : NULL;
        double  step = NAN;
        http_prom_value(text, "rlhf_learner_step", &step);
        if (last && step == (double)jint(last, "step")) {
            *rec = json_incref(last);
            json_decref(arr);
            return text;
        }
        json_decref(arr);
        free(text);
        sleep_ms(100);
    }
    EXPECT(false, "the learner's scraped step never matched the last metrics record");
    return NULL;
}

int cluster_metrics_selftest(bool verbose)
{
    const RunOpts o = {
        .steps = 10000, .ckpt_every = 0, .max_staleness = 1, .batch_groups = 4, .is_metrics = true};
    Cluster c;
    Proc   *learner, *reward;
    if (!cl_init(&c, "metrics_cluster", verbose) || !start_core(&c, &o, &learner, &reward))
        return cl_finish(&c);
    int   http_l = c.port + CL_PORT_HTTP, http_r = http_l + 1, http_a = http_l + 2;
    Proc *actor = actor_proc(&c, "actor-1", 8, false, false);
    proc_arg(actor, "--metrics-addr=127.0.0.1:%d", http_a);
    if (!cl_start(&c, actor) || !wait_log(&c, actor, "metrics: serving", 15.0) ||
        !wait_step(&c, learner, 3, 60.0))
        return cl_finish(&c);
    note(&c, "HTTP ports: learner %d, reward %d, actor %d", http_l, http_r, http_a);
    expect_status(http_l, "/healthz", 200, "learner");
    expect_status(http_r, "/healthz", 200, "reward");
    expect_status(http_a, "/healthz", 200, "actor");
    expect_status(http_l, "/nope", 404, "learner");

    char *ta = scrape_when_positive(&c, http_a, "actor", "rlhf_actor_groups_total");
    if (ta) {
        double groups = sample(ta, "rlhf_actor_groups_total", "actor");
        double samples = sample(ta, "rlhf_actor_samples_total", "actor");
        EXPECT(groups > 0 && samples == groups * CL_GROUP,
               "actor: groups %g and samples %g, expected > 0 and %d per group", groups, samples,
               CL_GROUP);
        EXPECT(sample(ta, "rlhf_actor_has_weights", "actor") == 1 &&
                   sample(ta, "rlhf_actor_snapshot_fetches_total", "actor") >= 1 &&
                   sample(ta, "rlhf_actor_snapshot_bytes_total", "actor") > 0,
               "actor: no snapshot counted");
        static const char *const states[] = {"waiting_weights", "fetching", "idle", "requesting",
                                             "sampling"};
        double                   n_on = 0;
        for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
            char series[64];
            snprintf(series, sizeof series, "rlhf_actor_state{state=\"%s\"}", states[i]);
            n_on += sample(ta, series, "actor");
        }
        EXPECT(n_on == 1, "actor: %g states at 1, expected one", n_on);
        EXPECT(sample(ta, "rlhf_actor_rejects_total{socket=\"lease\",reason=\"garbage\"}",
                      "actor") == 0,
               "actor: rejects counted in a clean run");
        free(ta);
    }
    char *tr = scrape_when_positive(&c, http_r, "reward", "rlhf_reward_groups_scored_total");
    if (tr) {
        double scored = sample(tr, "rlhf_reward_groups_scored_total", "reward");
        double score_s = sample(tr, "rlhf_reward_score_seconds_total", "reward");
        EXPECT(scored > 0 && score_s > 0, "reward: %g groups scored in %g s, expected > 0 both",
               scored, score_s);
        EXPECT(sample(tr, "rlhf_reward_rejects_total{reason=\"garbage\"}", "reward") == 0,
               "reward: rejects counted in a clean run");
        free(tr);
    }

    /* Freeze the actor: the learner's step settles, and its scrape must
     * equal the last record of metrics.jsonl. */
    if (!cl_pause(actor)) return cl_finish(&c);
    sleep_ms(500);
    json_t *rec = NULL;
    char   *tl = scrape_at_record(&c, http_l, &rec);
    if (tl) {
        note(&c, "learner scraped at step %" PRId64 " (issued %" PRId64 ", trained %" PRId64 ")",
             jint(rec, "step"), jint(rec, "issued"), jint(rec, "trained"));
        expect_agrees(tl, rec);
        EXPECT(sample(tl, "rlhf_learner_snapshots_served_total", "learner") >= 1 &&
                   sample(tl, "rlhf_learner_snapshot_sent_bytes_total", "learner") > 0,
               "learner: no snapshot counted");
    }
    int64_t step = rec ? jint(rec, "step") : 0;
    free(tl);
    json_decref(rec);

    /* Going on: the scraped step moves with the run. */
    proc_signal(actor, SIGCONT);
    if (wait_step(&c, learner, step + 2, 60.0)) {
        char *t2 = scrape(http_l, "learner");
        EXPECT(t2 && sample(t2, "rlhf_learner_step", "learner") >= (double)(step + 1),
               "learner: the scraped step did not move past %" PRId64, step);
        free(t2);
    }
    proc_end(&c, actor);
    proc_end(&c, reward);
    proc_end(&c, learner);
    return cl_finish(&c);
}

/* ---- auth ------------------------------------------------------------- */

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
static void auth_counts(Cluster *c, const Proc *reward, long long n[AU_N], long long *samples_other)
{
    for (int i = 0; i < AU_N; i++) n[i] = -1;
    json_t *arr = read_metrics(c);
    size_t  n_rec = json_array_size(arr);
    json_t *rej = n_rec ? json_object_get(json_array_get(arr, n_rec - 1), "rejects") : NULL;
    for (int i = 0; rej && i < AU_SAMPLES; i++)
        n[i] = jint(json_object_get(rej, k_au_names[i]), "total");
    json_decref(arr);
    long long scored, received;
    char      reasons[256];
    if (reward_last_status(reward, &scored, &received, reasons, sizeof reasons)) {
        n[AU_SAMPLES] = reasons_total(reasons, NULL);
        if (samples_other) *samples_other = reasons_total(reasons, "unauthorized");
    }
}

/* Runs rlhf-keygen --dir dir [--name name --no-authorize]. */
static bool keygen(Cluster *c, const char *dir, const char *name)
{
    Proc *p = cl_proc(c, name ? "keygen-rogue" : "keygen", "rlhf-keygen", NULL, NULL);
    proc_arg(p, "--dir=%s", dir);
    if (name) {
        proc_arg(p, "--name=%s", name);
        proc_arg(p, "--no-authorize");
    }
    return cl_start(c, p) && expect_exit_ok(c, p, 10.0, "");
}

/* A client of every server socket holding the key pair keys/actor.key
 * (keys NULL: plaintext). */
typedef struct {
    void     *zctx; /* its own, as a separate process would have */
    Auth     *auth;
    WireSock *s[AU_N];
} AuClient;

static bool au_open(Cluster *c, AuClient *k, const char *keys)
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
static void au_refused(Cluster *c, AuClient *k, const Proc *reward, const char *run_id,
                       uint64_t epoch, const long long before[AU_N], long long after[AU_N],
                       const char *who)
{
    Rlhf__LeaseRequest lr = RLHF__LEASE_REQUEST__INIT;
    lr.version = WIRE_PROTOCOL_VERSION;
    lr.actor_id = HOSTILE_ID;
    lr.max_prompts = 1;
    Rlhf__SnapshotRequest sr = RLHF__SNAPSHOT_REQUEST__INIT;
    sr.version = WIRE_PROTOCOL_VERSION;
    sr.actor_id = HOSTILE_ID;
    Group g;
    group_init(&g, run_id, epoch);
    /* Whether libzmq queues them (no connection is ever made) does not matter. */
    (void)wire_send(k->s[AU_LEASE], &lr.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_SNAP], &sr.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_RESULTS], &g.scored.base, ZMQ_DONTWAIT);
    (void)wire_send(k->s[AU_SAMPLES], &g.group.base, ZMQ_DONTWAIT);
    double t0 = now_s();
    bool   all = false;
    while (!all && now_s() - t0 < 20.0 && !out_of_time(c)) {
        auth_counts(c, reward, after, NULL);
        all = true;
        for (int i = 0; i < AU_N; i++) all = all && after[i] > before[i];
        if (!all) sleep_ms(50);
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
    note(c, "%s: refused on lease %lld, results %lld, snapshot %lld, weights %lld, samples %lld",
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
    /* A run longer than the test: the learner is stopped once all is seen. */
    const RunOpts o = {.steps = 1000000,
                       .ckpt_every = 0,
                       .max_staleness = 2,
                       .batch_groups = 4,
                       .lease_credit = 1000};
    Cluster       c;
    Proc         *learner = NULL, *reward = NULL, *actor = NULL;
    AuClient      rogue = {0}, plain = {0}, hostile = {0};
    FrameSet      f_lease = {0}, f_snap = {0}, f_results = {0}, f_samples = {0};
    WireSnapRx   *rx = wire_snap_rx_new(NULL, (size_t)1 << 26);
    if (!cl_init(&c, "auth", verbose)) goto out;

    /* The deployment's keys, and a rogue's: a key pair of its own (not in
     * the allow-list) and the servers' public keys, which are no secret. */
    char rogue_dir[PATH_MAX + 16], path[PATH_MAX + 64];
    testfs_path(c.keys, sizeof c.keys, "%s/keys", c.tmp);
    testfs_path(rogue_dir, sizeof rogue_dir, "%s/rogue", c.tmp);
    if (!keygen(&c, c.keys, NULL) || !keygen(&c, rogue_dir, "actor")) goto out;
    testfs_path(path, sizeof path, "%s/learner.pub", c.keys);
    EXPECT(copy_into(path, rogue_dir, "learner.pub"), "copy learner.pub");
    testfs_path(path, sizeof path, "%s/reward.pub", c.keys);
    EXPECT(copy_into(path, rogue_dir, "reward.pub"), "copy reward.pub");

    /* No keys and a non-loopback bind: refused, naming the endpoint. */
    Proc *open = cl_proc(&c, "reward-open", "rlhf-reward", NULL, NULL);
    proc_arg(open, "--samples=tcp://0.0.0.0:%d", CL_PORT_LO - 1);
    if (cl_start(&c, open) && proc_wait(open, budget(&c, 10.0)) == 0)
        EXPECT(!proc_exited_ok(open) && proc_output_has(open, "tcp://0.0.0.0:") &&
                   proc_output_has(open, "--insecure"),
               "a reward server binding 0.0.0.0 without keys was not refused with a clear error");

    if (!start_core(&c, &o, &learner, &reward)) goto out;
    actor = actor_proc(&c, "actor-1", 8, false, false);
    if (!cl_start(&c, actor) || !wait_step(&c, learner, 3, 40.0)) goto out;
    note(&c, "a learner, a reward server and an actor with keys took 3 steps");

    /* The run's identity, fetched the way an actor does, by a keyed client. */
    if (!au_open(&c, &hostile, c.keys)) goto out;
    int errs = 0;
    if (!EXPECT(fetch_snapshot(&c, hostile.s[AU_SNAP], rx, &errs), "no snapshot with keys"))
        goto out;
    char run_id[WIRE_MAX_NAME + 1];
    snprintf(run_id, sizeof run_id, "%s", wire_snap_rx_run_id(rx));
    uint64_t epoch = wire_snap_rx_epoch(rx);

    /* A wrong key, then no key at all: refused on every server socket.
     * Only refusals may be counted: the learner's metrics show their reasons
     * at the end. */
    long long zero[AU_N], after_rogue[AU_N], after_plain[AU_N], samples_other = -1;
    double    t_known = now_s();
    bool      is_known = false;
    while (!is_known && now_s() - t_known < 10.0 && !out_of_time(&c)) {
        auth_counts(&c, reward, zero, NULL);
        is_known = true;
        for (int i = 0; i < AU_N; i++) is_known = is_known && zero[i] >= 0;
        if (!is_known) sleep_ms(50);
    }
    for (int i = 0; i < AU_N; i++)
        EXPECT(zero[i] == 0, "%s: %lld rejects before any hostile client", k_au_names[i], zero[i]);
    if (!au_open(&c, &rogue, rogue_dir)) goto out;
    au_refused(&c, &rogue, reward, run_id, epoch, zero, after_rogue, "a wrong key");
    au_close(&rogue);
    sleep_ms(300); /* the last refusals of the closed client, still in flight */
    auth_counts(&c, reward, after_rogue, NULL);
    if (!au_open(&c, &plain, NULL)) goto out;
    au_refused(&c, &plain, reward, run_id, epoch, after_rogue, after_plain, "no key");
    au_close(&plain);
    sleep_ms(300); /* the last refusals of closed clients, still in flight */
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
    double    t0 = now_s();
    while (!done && now_s() - t0 < 20.0 && !out_of_time(&c)) {
        auth_counts(&c, reward, now, NULL);
        done = true;
        for (int i = 0; i < AU_N; i++)
            done = done && now[i] - after_plain[i] == (long long)n_want[i];
        if (!done) sleep_ms(50);
    }
    for (int i = 0; i < AU_N; i++)
        EXPECT(now[i] - after_plain[i] == (long long)n_want[i],
               "keyed hostile client: %s counted %lld more rejects, expected %" PRIu64 " (%s)",
               k_au_names[i], now[i] - after_plain[i], n_want[i], want[i]);
    note(&c,
         "a keyed hostile client: rejects lease +%lld, results +%lld, snapshot +%lld, "
         "samples +%lld",
         now[AU_LEASE] - after_plain[AU_LEASE], now[AU_RESULTS] - after_plain[AU_RESULTS],
         now[AU_SNAP] - after_plain[AU_SNAP], now[AU_SAMPLES] - after_plain[AU_SAMPLES]);

    /* Stopped, the learner's last record and summary hold it all; nothing
     * of the refused clients was trained. */
    proc_end(&c, actor);
    proc_end(&c, learner);
    json_t *metrics = read_metrics(&c);
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
                   jint(sum, "duplicates") == 0 && jint(sum, "refused_auth") >= refused,
               "summary: accounting_ok %s, duplicates %" PRId64 ", refused_auth %" PRId64
               " (expected true, 0 and >= %lld)",
               json_is_true(json_object_get(sum, "accounting_ok")) ? "true" : "false",
               jint(sum, "duplicates"), jint(sum, "refused_auth"), refused);
        note(&c, "summary: trained %" PRId64 ", refused_auth %" PRId64, jint(sum, "trained"),
             jint(sum, "refused_auth"));
        json_decref(sum);
    }
    EXPECT(proc_output_has(learner, "not in the allow-list") &&
               proc_output_has(learner, "handshake failed") &&
               proc_output_has(reward, "rejected connection on 'samples'"),
           "the refusals are not logged");
    proc_end(&c, reward);

out:
    au_close(&rogue);
    au_close(&plain);
    au_close(&hostile);
    frames_free(&f_lease);
    frames_free(&f_snap);
    frames_free(&f_results);
    frames_free(&f_samples);
    wire_snap_rx_free(&rx);
    return cl_finish(&c);
}
