#include "tests/support/testcl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/support/ports.h"
#include "tests/support/testfs.h"

/* Below the kernel's ephemeral range (32768..), where connecting sockets
 * take their local ports, and away from the ports other clusters use. */
#define TESTCL_PORT_LO 20000
#define TESTCL_PORT_HI 32000
#define TESTCL_START_TRIES 6
#define TESTCL_LOG_MAX ((size_t)64 << 20)

double testcl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void testcl_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void testcl_note(TestCl *c, const char *fmt, ...)
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

bool testcl_out_of_time(TestCl *c)
{
    return proc_interrupted() || testcl_now() > c->deadline;
}

double testcl_budget(TestCl *c, double timeout_s)
{
    return fmin(timeout_s, c->deadline - testcl_now());
}

bool testcl_init(TestCl *c, const char *test, bool verbose, double budget_s)
{
    memset(c, 0, sizeof *c);
    c->test = test;
    c->verbose = verbose;
    c->deadline = testcl_now() + budget_s;
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
    testcl_note(c, "programs in '%s', files in '%s'", c->build, c->tmp);
    return true;
}

int testcl_finish(TestCl *c)
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
    testcl_note(c, "%d failed checks", expect_fails());
    return expect_end();
}

Proc *testcl_proc(TestCl *c, const char *name, const char *prog, const char *const *env,
                  const Proc *clone_of)
{
    CHECK(c->n_procs < TESTCL_MAX_PROCS);
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

Proc *testcl_proc_at(TestCl *c, const char *name, const char *path, const char *const *env)
{
    CHECK(c->n_procs < TESTCL_MAX_PROCS);
    char log[PATH_MAX + 64];
    testfs_path(log, sizeof log, "%s/%s.log", c->tmp, name);
    Proc *p = proc_new(path, NULL, &(ProcOpts){.name = name, .env = env, .log_path = log});
    /* The whole path as argv[0]: an interpreter finds its venv from it. */
    proc_arg(p, "%s", path);
    c->procs[c->n_procs++] = p;
    return p;
}

bool testcl_start(TestCl *c, Proc *p)
{
    if (!EXPECT(proc_start(p) == 0, "%s did not start", proc_name(p))) return false;
    testcl_note(c, "started %s (pid %d): %s", proc_name(p), (int)proc_pid(p), proc_cmd(p));
    return true;
}

bool testcl_wait_log(TestCl *c, Proc *p, const char *needle, double timeout_s)
{
    return proc_wait_output(p, needle, testcl_budget(c, timeout_s));
}

void testcl_end(TestCl *c, Proc *p)
{
    char st[64];
    if (!EXPECT(proc_is_running(p), "%s is no longer running (%s) before its shutdown",
                proc_name(p), proc_describe(p, st, sizeof st)))
        return;
    proc_signal(p, SIGTERM);
    if (proc_wait(p, testcl_budget(c, 10.0)) != 0) {
        if (!proc_interrupted())
            EXPECT(false, "%s did not exit within 10 s of SIGTERM", proc_name(p));
        proc_kill(p);
        return;
    }
    EXPECT(proc_exited_ok(p), "%s after SIGTERM: %s, expected exit 0", proc_name(p),
           proc_describe(p, st, sizeof st));
}

bool testcl_pause(Proc *p)
{
    int rc = proc_pause(p, 5.0);
    EXPECT(rc != ERR_TIMEOUT, "%s did not stop within 5 s of SIGSTOP", proc_name(p));
    return rc == 0;
}

void testcl_wait_done(TestCl *c, Proc *learner, double timeout_s)
{
    if (proc_wait(learner, testcl_budget(c, timeout_s)) != 0) {
        EXPECT(false, "%s still running after %.0f s (at step %lld)", proc_name(learner), timeout_s,
               (long long)testcl_step(c));
        return;
    }
    char st[64];
    EXPECT(proc_exited_ok(learner), "%s: %s, expected exit 0", proc_name(learner),
           proc_describe(learner, st, sizeof st));
}

static bool pick_ports(TestCl *c)
{
    int base = ports_pick(TESTCL_PORTS, TESTCL_PORT_LO, TESTCL_PORT_HI);
    if (!EXPECT(base > 0, "no block of %d free ports in %d..%d", TESTCL_PORTS, TESTCL_PORT_LO,
                TESTCL_PORT_HI))
        return false;
    c->port = base;
    snprintf(c->ep_lease, sizeof c->ep_lease, "tcp://127.0.0.1:%d", base);
    snprintf(c->ep_weights, sizeof c->ep_weights, "tcp://127.0.0.1:%d", base + 1);
    snprintf(c->ep_snap, sizeof c->ep_snap, "tcp://127.0.0.1:%d", base + 2);
    snprintf(c->ep_results, sizeof c->ep_results, "tcp://127.0.0.1:%d", base + 3);
    snprintf(c->ep_samples, sizeof c->ep_samples, "tcp://127.0.0.1:%d", base + 4);
    testcl_note(c, "ports %d..%d", base, base + TESTCL_PORTS - 1);
    return true;
}

Proc *testcl_learner(TestCl *c, const char *name, const TestClRun *o)
{
    static const char *const debug[] = {"RLHF_LOG=debug", NULL};
    Proc *p = testcl_proc(c, name, "rlhf-learner", o->is_debug ? debug : NULL, NULL);
    proc_arg(p, "--lease=%s", c->ep_lease);
    proc_arg(p, "--weights=%s", c->ep_weights);
    proc_arg(p, "--snapshot=%s", c->ep_snap);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--ckpt-dir=%s", c->ckpt);
    proc_arg(p, "--metrics=%s", c->metrics);
    proc_arg(p, "--summary=%s", c->summary);
    proc_arg(p, "--steps=%d", o->steps);
    proc_arg(p, "--ckpt-every=%d", o->ckpt_every);
    proc_arg(p, "--lease-timeout-ms=%d", o->lease_timeout_ms > 0 ? o->lease_timeout_ms : 1000);
    proc_arg(p, "--batch-groups=%d", o->batch_groups);
    proc_arg(p, "--group=%d", TESTCL_GROUP);
    proc_arg(p, "--lease-prompts=%d", o->lease_prompts > 0 ? o->lease_prompts : 2);
    proc_arg(p, "--max-staleness=%d", o->max_staleness);
    proc_arg(p, "--eval-n=%d", o->eval_n == 0 ? 10 : o->eval_n < 0 ? 0 : o->eval_n);
    proc_arg(p, "--seed=7");
    proc_arg(p, "--dim=%d", o->dim > 0 ? o->dim : 32);
    proc_arg(p, "--layers=%d", o->layers > 0 ? o->layers : 1);
    proc_arg(p, "--heads=2");
    proc_arg(p, "--hidden=%d", o->hidden > 0 ? o->hidden : 64);
    proc_arg(p, "--poll-ms=20");
    proc_arg(p, "--status-every=0.25");
    if (o->is_metrics) proc_arg(p, "--metrics-addr=127.0.0.1:%d", c->port + TESTCL_PORT_HTTP);
    for (int i = 0; i < 8 && o->extra[i]; i++) proc_arg(p, "%s", o->extra[i]);
    if (c->keys[0]) proc_arg(p, "--keys=%s", c->keys);
    return p;
}

static Proc *reward_proc(TestCl *c, const char *name)
{
    Proc *p = testcl_proc(c, name, "rlhf-reward", NULL, NULL);
    proc_arg(p, "--samples=%s", c->ep_samples);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--threads=1");
    proc_arg(p, "--id=%s", name);
    proc_arg(p, "--status-every=0.25");
    if (c->keys[0]) proc_arg(p, "--keys=%s", c->keys);
    return p;
}

Proc *testcl_actor(TestCl *c, const char *name, int batch, bool is_debug)
{
    return testcl_actor_via(c, name, batch, is_debug, c->ep_lease, c->ep_weights, c->ep_snap);
}

Proc *testcl_actor_via(TestCl *c, const char *name, int batch, bool is_debug, const char *ep_lease,
                       const char *ep_weights, const char *ep_snap)
{
    Proc *p = testcl_proc(c, name, "rlhf-actor", NULL, NULL);
    proc_arg(p, "--lease=%s", ep_lease);
    proc_arg(p, "--weights=%s", ep_weights);
    proc_arg(p, "--snapshot=%s", ep_snap);
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

static bool keygen(TestCl *c, const char *dir, const char *name, bool is_listed)
{
    char pname[64];
    snprintf(pname, sizeof pname, "keygen-%s", name ? name : "all");
    Proc *p = testcl_proc(c, pname, "rlhf-keygen", NULL, NULL);
    proc_arg(p, "--dir=%s", dir);
    if (name) proc_arg(p, "--name=%s", name);
    if (!is_listed) proc_arg(p, "--no-authorize");
    char st[64];
    return testcl_start(c, p) &&
           EXPECT(proc_wait(p, testcl_budget(c, 10.0)) == 0 && proc_exited_ok(p),
                  "rlhf-keygen --dir %s%s%s: %s", dir, name ? " --name " : "", name ? name : "",
                  proc_describe(p, st, sizeof st));
}

bool testcl_keygen(TestCl *c, const char *dir, const char *name)
{
    return keygen(c, dir, name, true);
}

bool testcl_keygen_unlisted(TestCl *c, const char *dir, const char *name)
{
    return keygen(c, dir, name, false);
}

/* Picks ports and starts the learner (named name) and, when reward is non-NULL, a
 * reward server; starts over on other ports if one was taken meanwhile. */
static bool start_core(TestCl *c, const TestClRun *o, const char *name, Proc **learner,
                       Proc **reward)
{
    for (int attempt = 0; attempt < TESTCL_START_TRIES && !testcl_out_of_time(c); attempt++) {
        if (!pick_ports(c)) return false;
        int   n0 = c->n_procs;
        Proc *l = testcl_learner(c, name, o);
        Proc *r = reward ? reward_proc(c, "reward") : NULL;
        if (r && o->is_reward_metrics)
            proc_arg(r, "--metrics-addr=127.0.0.1:%d", c->port + TESTCL_PORT_HTTP_REWARD);
        for (int i = 0; i < 8 && o->reward_extra[i]; i++) proc_arg(r, "%s", o->reward_extra[i]);
        /* " params, " ends the learner's start-up line, logged once bound. */
        bool ok = testcl_start(c, l) && testcl_wait_log(c, l, " params, ", 30.0);
        ok = ok && (!r || (testcl_start(c, r) && testcl_wait_log(c, r, "samples bound at", 15.0)));
        if (ok) {
            *learner = l;
            if (reward) *reward = r;
            return true;
        }
        bool is_busy = proc_output_has(l, "Address already in use") ||
                       (r && proc_output_has(r, "Address already in use"));
        if (!EXPECT(is_busy, "the learner or the reward server did not start")) return false;
        testcl_note(c, "a port of %d..%d was taken meanwhile; starting over on others", c->port,
                    c->port + TESTCL_PORTS - 1);
        /* The learner checkpoints its new epoch before binding: forget it. */
        fileio_remove_tree(c->ckpt);
        unlink(c->metrics);
        unlink(proc_log_path(l));
        if (r) unlink(proc_log_path(r));
        for (int i = c->n_procs - 1; i >= n0; i--) proc_free(&c->procs[i]);
        c->n_procs = n0;
    }
    EXPECT(false, "no free ports after %d attempts", TESTCL_START_TRIES);
    return false;
}

bool testcl_start_core(TestCl *c, const TestClRun *o, Proc **learner, Proc **reward)
{
    return start_core(c, o, "learner", learner, reward);
}

bool testcl_start_learner(TestCl *c, const TestClRun *o, const char *name, Proc **learner)
{
    return start_core(c, o, name, learner, NULL);
}

int testcl_ports(TestCl *c, int n)
{
    int base = ports_pick(n, TESTCL_PORT_LO, TESTCL_PORT_HI);
    if (base <= 0) {
        EXPECT(false, "no block of %d free ports in %d..%d", n, TESTCL_PORT_LO, TESTCL_PORT_HI);
        return 0;
    }
    testcl_note(c, "ports %d..%d for the test", base, base + n - 1);
    return base;
}

json_t *testcl_metrics(TestCl *c)
{
    json_t *arr = json_array();
    char   *text = testfs_read(c->metrics, TESTCL_LOG_MAX);
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

int64_t testcl_jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

int64_t testcl_step(TestCl *c)
{
    json_t *arr = testcl_metrics(c);
    size_t  n = json_array_size(arr);
    int64_t step = n ? testcl_jint(json_array_get(arr, n - 1), "step") : 0;
    json_decref(arr);
    return step;
}

bool testcl_wait_step(TestCl *c, Proc *learner, int64_t step, double timeout_s)
{
    double t0 = testcl_now();
    for (;;) {
        if (testcl_step(c) >= step) return true;
        if (!proc_is_running(learner)) {
            EXPECT(false, "%s exited before step %lld", proc_name(learner), (long long)step);
            return false;
        }
        if (testcl_now() - t0 > timeout_s || testcl_out_of_time(c)) {
            EXPECT(false, "step %lld not reached in %.0f s (at %lld)", (long long)step, timeout_s,
                   (long long)testcl_step(c));
            return false;
        }
        testcl_sleep_ms(20);
    }
}

static bool counters_of(const json_t *o, const char *where, TestClCounters *k)
{
    static const char *keys[] = {"issued", "trained",   "dropped_stale", "reissued",
                                 "failed", "in_flight", "buffered",      "duplicates"};
    int64_t           *vals[] = {&k->issued, &k->trained,   &k->dropped_stale, &k->reissued,
                                 &k->failed, &k->in_flight, &k->buffered,      &k->duplicates};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        *vals[i] = testcl_jint(o, keys[i]);
        if (*vals[i] < 0) {
            EXPECT(false, "%s: no non-negative integer '%s'", where, keys[i]);
            return false;
        }
    }
    return true;
}

bool testcl_identity(const json_t *o, const char *where, TestClCounters *k)
{
    TestClCounters local;
    if (!k) k = &local;
    if (!counters_of(o, where, k)) return false;
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

json_t *testcl_check_metrics(TestCl *c)
{
    json_t *arr = testcl_metrics(c);
    size_t  i;
    json_t *o;
    int     bad = 0;
    json_array_foreach(arr, i, o)
    {
        char where[64];
        snprintf(where, sizeof where, "metrics record %zu", i + 1);
        if (!testcl_identity(o, where, NULL) && ++bad >= 3) break;
    }
    return arr;
}

json_t *testcl_check_summary(TestCl *c, int steps, TestClCounters *k)
{
    json_error_t err;
    json_t      *s = json_load_file(c->summary, 0, &err);
    if (!json_is_object(s)) {
        EXPECT(false, "summary '%s': %s", c->summary, err.text);
        json_decref(s);
        return NULL;
    }
    EXPECT(testcl_jint(s, "steps") == steps, "summary: steps %" PRId64 ", expected %d",
           testcl_jint(s, "steps"), steps);
    EXPECT(testcl_jint(s, "version") == steps, "summary: version %" PRId64 ", expected %d",
           testcl_jint(s, "version"), steps);
    EXPECT(json_is_false(json_object_get(s, "stopped_early")), "summary: stopped_early");
    EXPECT(json_is_true(json_object_get(s, "accounting_ok")), "summary: accounting_ok is not true");
    testcl_identity(s, "summary", k);
    return s;
}

void testcl_note_counters(TestCl *c, const TestClCounters *k)
{
    testcl_note(c,
                "summary: issued %" PRId64 " = trained %" PRId64 " + dropped_stale %" PRId64
                " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64
                " + buffered %" PRId64 "; duplicates %" PRId64,
                k->issued, k->trained, k->dropped_stale, k->reissued, k->failed, k->in_flight,
                k->buffered, k->duplicates);
}

int testcl_count(const Proc *p, const char *needle)
{
    char *text = proc_read_out(p);
    int   n = 0;
    for (const char *q = text ? strstr(text, needle) : NULL; q; q = strstr(q + 1, needle)) n++;
    free(text);
    return n;
}

const char *testcl_find_last(const char *text, const char *needle)
{
    const char *last = NULL;
    for (const char *q = text ? strstr(text, needle) : NULL; q; q = strstr(q + 1, needle)) last = q;
    return last;
}

bool testcl_reward_status(const Proc *p, long long *scored, long long *received, char *rejects,
                          size_t cap)
{
    char *text = proc_read_out(p);
    if (!text) return false;
    const char *last = testcl_find_last(text, ": scored ");
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

long testcl_status_kb(int pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    /* Plain stdio: a /proc file reports size 0, so it is read line by line. */
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char   line[256];
    long   kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            if (sscanf(line + n + 1, "%ld", &kb) != 1) kb = -1;
            break;
        }
    fclose(f);
    return kb;
}
