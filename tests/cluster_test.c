#include "tests/cluster_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fileio.h"
#include "common/tok.h"
#include "common/wire.h"

extern char **environ;

/* A test still running after this long fails, and its processes are killed. */
#define CL_BUDGET_S 100.0
#define CL_MAX_PROCS 10
#define CL_MAX_ARGS 64
#define CL_LOG_MAX ((size_t)64 << 20)
/* Ports per test: learner lease, weights, snapshot, results; reward samples;
 * the hostile test's proxy lease, weights, snapshot. */
#define CL_PORTS 8
/* Below the kernel's ephemeral range (32768..), where connecting sockets
 * take their local ports, and away from the ports other clusters use. */
#define CL_PORT_LO 20000
#define CL_PORT_HI 32000
#define CL_START_TRIES 6
#define CL_GROUP 4 /* completions per prompt */

typedef struct {
    char  name[32];
    char  log[PATH_MAX];
    char *argv[CL_MAX_ARGS + 1]; /* owned; argv[0] is the program's name in the build dir */
    int   argc;
    char  env[64]; /* "NAME=value" added to the environment, or "" */
    pid_t pid;     /* valid once started, until reaped */
    int   status;  /* waitpid status once reaped */
    bool  is_started;
    bool  is_reaped;
} Proc;

typedef struct {
    const char *test;
    bool        verbose;
    int         fails;
    char        build[PATH_MAX];
    char        tmp[PATH_MAX];
    char        ckpt[PATH_MAX + 16];    /* the learner's --ckpt-dir */
    char        metrics[PATH_MAX + 16]; /* --metrics */
    char        summary[PATH_MAX + 16]; /* --summary */
    double      deadline;               /* monotonic seconds */
    uint64_t    rng;
    int         port; /* first of CL_PORTS free ports */
    char        ep_lease[64], ep_weights[64], ep_snap[64], ep_results[64], ep_samples[64];
    char        ep_px_lease[64], ep_px_weights[64], ep_px_snap[64];
    Proc        procs[CL_MAX_PROCS];
    int         n_procs;
} Cluster;

/* The learner's flags that differ between tests. */
typedef struct {
    int steps;
    int ckpt_every;
    int lease_timeout_ms;
    /* 0 makes the learner's capacity one batch: a step then needs every
     * group out, so a lost group stalls the run until its lease expires. */
    int  max_staleness;
    int  batch_groups;  /* groups per step */
    int  lease_prompts; /* prompts per lease */
    bool is_debug;      /* the learner logs at debug level: every grant */
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

static void fail(Cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(Cluster *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  %s: FAIL: ", c->test);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    c->fails++;
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

#define EXPECT(c, cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) fail((c), __VA_ARGS__);                                                       \
    } while (0)

static void pathf(Cluster *c, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void pathf(Cluster *c, char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) fail(c, "path too long: '%s...'", out);
}

static uint64_t rand_next(Cluster *c)
{
    /* xorshift64*: only port choices and pauses depend on it. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545F4914F6CDD1DULL;
}

static bool out_of_time(Cluster *c)
{
    return now_s() > c->deadline;
}

/* The whole file, NUL-terminated (caller frees), or NULL if missing. */
static char *read_text(const char *path)
{
    char  *buf = NULL;
    size_t len = 0;
    if (fileio_read_all(path, CL_LOG_MAX, true, &buf, &len) != 0) return NULL;
    return buf;
}

/* ---- Processes -------------------------------------------------------- */

static Proc *proc_new(Cluster *c, const char *name)
{
    CHECK(c->n_procs < CL_MAX_PROCS);
    Proc *p = &c->procs[c->n_procs++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    pathf(c, p->log, sizeof p->log, "%s/%s.log", c->tmp, name);
    return p;
}

static void proc_arg(Proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void proc_arg(Proc *p, const char *fmt, ...)
{
    CHECK(p->argc < CL_MAX_ARGS);
    char    buf[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    p->argv[p->argc++] = xstrdup(buf);
    p->argv[p->argc] = NULL;
}

/* A new process with src's command line and its own log. */
static Proc *proc_clone(Cluster *c, const Proc *src, const char *name)
{
    Proc *p = proc_new(c, name);
    for (int i = 0; i < src->argc; i++) proc_arg(p, "%s", src->argv[i]);
    snprintf(p->env, sizeof p->env, "%s", src->env);
    return p;
}

static void proc_free_args(Proc *p)
{
    for (int i = 0; i < p->argc; i++) free(p->argv[i]);
    p->argc = 0;
    p->argv[0] = NULL;
}

/* Starts p in its own process group with stdout and stderr appended to its
 * log. The child dies with the test process (PR_SET_PDEATHSIG), so a
 * crashed test cannot leave daemons behind. */
static bool proc_start(Cluster *c, Proc *p)
{
    char path[PATH_MAX];
    pathf(c, path, sizeof path, "%s/%s", c->build, p->argv[0]);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fail(c, "open '%s': %s", p->log, strerror(errno));
        return false;
    }
    /* The environment, with p->env in place of any variable of its name. */
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = xcalloc(n_env + 2, sizeof *envp);
    size_t k = 0, name_len = strcspn(p->env, "=");
    for (size_t i = 0; i < n_env; i++)
        if (!p->env[0] || strncmp(environ[i], p->env, name_len + 1)) envp[k++] = environ[i];
    if (p->env[0]) envp[k++] = p->env;
    fflush(NULL); /* or buffered output would be written twice */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(126); /* the test died before prctl */
        int in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
        execve(path, p->argv, envp);
        dprintf(2, "cluster_test: execv '%s': %s\n", path, strerror(errno));
        _exit(127);
    }
    close(fd);
    free(envp);
    if (pid < 0) {
        fail(c, "fork: %s", strerror(errno));
        return false;
    }
    /* Both sides set the group, so it exists before either can signal it;
     * EACCES here only means the child has exec'd already (and set it). */
    setpgid(pid, pid);
    p->pid = pid;
    p->is_started = true;
    p->is_reaped = false;
    p->status = 0;
    if (c->verbose) {
        char   cmd[2048];
        size_t at = 0;
        for (int i = 0; i < p->argc && at < sizeof cmd; i++) {
            int n = snprintf(cmd + at, sizeof cmd - at, i ? " %s" : "%s", p->argv[i]);
            if (n < 0) break;
            at += (size_t)n;
        }
        note(c, "started %s (pid %d): %s", p->name, (int)pid, cmd);
    }
    return true;
}

/* True while p runs (or is stopped); reaps it once it has exited. */
static bool proc_running(Proc *p)
{
    if (!p->is_started || p->is_reaped) return false;
    int   st = 0;
    pid_t w = waitpid(p->pid, &st, WNOHANG);
    if (w == p->pid) {
        p->status = st;
        p->is_reaped = true;
        return false;
    }
    return true;
}

/* Signals p's process group. Not checked: the only failure left once p is
 * known to run is a group that has just exited, which the next look at p
 * reports. */
static void proc_signal(Proc *p, int sig)
{
    if (proc_running(p)) kill(-p->pid, sig);
}

/* kill -9 of p's process group, then reaps it. */
static void proc_kill(Proc *p)
{
    if (!proc_running(p)) return;
    kill(-p->pid, SIGKILL);
    int st = 0;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
    }
    p->status = st;
    p->is_reaped = true;
}

/* SIGSTOP to p's group, returning once p is stopped (so nothing it does
 * races with what the test reads next). */
static bool proc_stop(Cluster *c, Proc *p)
{
    if (!proc_running(p)) return false;
    kill(-p->pid, SIGSTOP);
    double t0 = now_s();
    for (;;) {
        int   st = 0;
        pid_t w = waitpid(p->pid, &st, WUNTRACED | WNOHANG);
        if (w == p->pid && WIFSTOPPED(st)) return true;
        if (w == p->pid) {
            p->status = st;
            p->is_reaped = true;
            return false;
        }
        if (now_s() - t0 > 5.0) {
            fail(c, "%s did not stop within 5 s of SIGSTOP", p->name);
            return false;
        }
        sleep_ms(1);
    }
}

/* Waits up to timeout_s (and the test's budget) for p to exit. */
static bool proc_wait_exit(Cluster *c, Proc *p, double timeout_s)
{
    double t0 = now_s();
    while (proc_running(p)) {
        if (now_s() - t0 > timeout_s || out_of_time(c)) return false;
        sleep_ms(20);
    }
    return true;
}

static bool exited_ok(const Proc *p)
{
    return p->is_reaped && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

static void describe_status(const Proc *p, char *buf, size_t cap)
{
    if (!p->is_reaped)
        snprintf(buf, cap, "running");
    else if (WIFEXITED(p->status))
        snprintf(buf, cap, "exit %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(buf, cap, "signal %d", WTERMSIG(p->status));
    else
        snprintf(buf, cap, "status 0x%x", p->status);
}

/* A clean shutdown: SIGTERM, then exit status 0 within 10 s. */
static void proc_end(Cluster *c, Proc *p)
{
    if (!proc_running(p)) {
        char st[64];
        describe_status(p, st, sizeof st);
        fail(c, "%s is no longer running (%s) before its shutdown", p->name, st);
        return;
    }
    proc_signal(p, SIGTERM);
    if (!proc_wait_exit(c, p, 10.0)) {
        fail(c, "%s did not exit within 10 s of SIGTERM", p->name);
        proc_kill(p);
        return;
    }
    char st[64];
    describe_status(p, st, sizeof st);
    EXPECT(c, exited_ok(p), "%s after SIGTERM: %s, expected exit 0", p->name, st);
}

/* True if p's log holds needle. */
static bool log_has(const Proc *p, const char *needle)
{
    char *text = read_text(p->log);
    bool  found = text && strstr(text, needle);
    free(text);
    return found;
}

/* Waits until p's log holds needle; false if p exits or time runs out. */
static bool wait_log(Cluster *c, Proc *p, const char *needle, double timeout_s)
{
    double t0 = now_s();
    for (;;) {
        if (log_has(p, needle)) return true;
        if (!proc_running(p) || now_s() - t0 > timeout_s || out_of_time(c)) return false;
        sleep_ms(20);
    }
}

/* Prints the last lines of every log, for a failed test. */
static void dump_logs(Cluster *c)
{
    for (int i = 0; i < c->n_procs; i++) {
        char *text = read_text(c->procs[i].log);
        if (!text) continue;
        size_t len = strlen(text);
        int    lines = 0;
        size_t at = len;
        while (at > 0 && lines < 30) {
            at--;
            if (text[at] == '\n' && at + 1 < len) lines++;
        }
        if (lines == 30) at++;
        fprintf(stderr, "  ---- %s (%s), last lines:\n%s", c->procs[i].name, c->procs[i].log,
                text + at);
        free(text);
    }
}

/* ---- Set-up and clean-up ---------------------------------------------- */

static void find_build(Cluster *c)
{
    const char *env = getenv("RLHF_BUILD_DIR");
    if (env && *env) {
        snprintf(c->build, sizeof c->build, "%s", env);
        return;
    }
    /* The runner lives in the build directory next to the programs. */
    ssize_t n = readlink("/proc/self/exe", c->build, sizeof c->build - 1);
    c->build[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(c->build, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(c->build, sizeof c->build, "build");
}

static bool cl_init(Cluster *c, const char *test, bool verbose)
{
    memset(c, 0, sizeof *c);
    c->test = test;
    c->verbose = verbose;
    c->deadline = now_s() + CL_BUDGET_S;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
             0x9E3779B97F4A7C15ULL;
    find_build(c);
    char path[PATH_MAX];
    pathf(c, path, sizeof path, "%s/rlhf-learner", c->build);
    if (access(path, X_OK) != 0) {
        fail(c, "'%s' not found: build the programs first (make test sets RLHF_BUILD_DIR)", path);
        return false;
    }
    const char *tmp = getenv("TMPDIR");
    pathf(c, c->tmp, sizeof c->tmp, "%s/rlhf-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", test);
    if (!mkdtemp(c->tmp)) {
        fail(c, "mkdtemp '%s': %s", c->tmp, strerror(errno));
        return false;
    }
    pathf(c, c->ckpt, sizeof c->ckpt, "%s/ckpt", c->tmp);
    pathf(c, c->metrics, sizeof c->metrics, "%s/metrics.jsonl", c->tmp);
    pathf(c, c->summary, sizeof c->summary, "%s/summary.json", c->tmp);
    note(c, "programs in '%s', files in '%s'", c->build, c->tmp);
    return true;
}

/* Kills whatever still runs, reports the logs if a check failed, removes
 * the temp directory. Returns the number of failed checks. */
static int cl_finish(Cluster *c)
{
    for (int i = 0; i < c->n_procs; i++) {
        Proc *p = &c->procs[i];
        if (proc_running(p)) {
            if (c->fails == 0) fail(c, "%s still running at the end", p->name);
            proc_kill(p);
        }
    }
    if (c->fails) dump_logs(c);
    for (int i = 0; i < c->n_procs; i++) proc_free_args(&c->procs[i]);
    const char *keep = getenv("RLHF_TEST_KEEP");
    if (keep && *keep)
        fprintf(stderr, "  %s: RLHF_TEST_KEEP: logs left in '%s'\n", c->test, c->tmp);
    else if (c->tmp[0] && fileio_remove_tree(c->tmp) != 0)
        fail(c, "cannot remove '%s'", c->tmp);
    note(c, "%d failed checks", c->fails);
    return c->fails;
}

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static bool overlaps(int lo, int hi, int a, int b)
{
    return lo < b && a < hi;
}

/* Picks CL_PORTS consecutive ports that are free right now. Another process
 * may still take one before a daemon binds it: start_core then retries. */
static bool pick_ports(Cluster *c)
{
    for (int tries = 0; tries < 500; tries++) {
        int base =
            CL_PORT_LO + (int)(rand_next(c) % (uint64_t)((CL_PORT_HI - CL_PORT_LO) / 10)) * 10;
        if (base + CL_PORTS > CL_PORT_HI || overlaps(base, base + CL_PORTS, 27000, 28100) ||
            overlaps(base, base + CL_PORTS, 5550, 5610))
            continue;
        bool ok = true;
        for (int i = 0; i < CL_PORTS && ok; i++) ok = port_free(base + i);
        if (!ok) continue;
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
    fail(c, "no block of %d free ports in %d..%d", CL_PORTS, CL_PORT_LO, CL_PORT_HI);
    return false;
}

static Proc *learner_proc(Cluster *c, const char *name, const RunOpts *o)
{
    Proc *p = proc_new(c, name);
    proc_arg(p, "rlhf-learner");
    proc_arg(p, "--lease=%s", c->ep_lease);
    proc_arg(p, "--weights=%s", c->ep_weights);
    proc_arg(p, "--snapshot=%s", c->ep_snap);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--ckpt-dir=%s", c->ckpt);
    proc_arg(p, "--metrics=%s", c->metrics);
    proc_arg(p, "--summary=%s", c->summary);
    proc_arg(p, "--steps=%d", o->steps);
    proc_arg(p, "--ckpt-every=%d", o->ckpt_every);
    proc_arg(p, "--lease-timeout-ms=%d", o->lease_timeout_ms);
    proc_arg(p, "--batch-groups=%d", o->batch_groups);
    proc_arg(p, "--group=%d", CL_GROUP);
    proc_arg(p, "--lease-prompts=%d", o->lease_prompts);
    proc_arg(p, "--max-staleness=%d", o->max_staleness);
    proc_arg(p, "--eval-n=10");
    proc_arg(p, "--seed=7");
    proc_arg(p, "--dim=32");
    proc_arg(p, "--layers=1");
    proc_arg(p, "--heads=2");
    proc_arg(p, "--hidden=64");
    proc_arg(p, "--poll-ms=20");
    proc_arg(p, "--status-every=0.25");
    if (o->is_debug) snprintf(p->env, sizeof p->env, "RLHF_LOG=debug");
    return p;
}

static Proc *reward_proc(Cluster *c, const char *name)
{
    Proc *p = proc_new(c, name);
    proc_arg(p, "rlhf-reward");
    proc_arg(p, "--samples=%s", c->ep_samples);
    proc_arg(p, "--results=%s", c->ep_results);
    proc_arg(p, "--threads=1");
    proc_arg(p, "--id=%s", name);
    proc_arg(p, "--status-every=0.25");
    return p;
}

/* An actor of the cluster generating batch sequences at a time; through the
 * test's proxy if via_proxy. */
static Proc *actor_proc(Cluster *c, const char *name, int batch, bool via_proxy, bool is_debug)
{
    Proc *p = proc_new(c, name);
    proc_arg(p, "rlhf-actor");
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
        /* " params, " ends the learner's start-up line, logged once bound. */
        bool ok = proc_start(c, l) && wait_log(c, l, " params, ", 30.0);
        ok = ok && proc_start(c, r) && wait_log(c, r, "samples bound at", 15.0);
        if (ok) {
            *learner = l;
            *reward = r;
            return true;
        }
        bool is_busy = log_has(l, "Address already in use") || log_has(r, "Address already in use");
        proc_kill(l);
        proc_kill(r);
        if (!is_busy) {
            fail(c, "the learner or the reward server did not start");
            return false;
        }
        note(c, "a port of %d..%d was taken meanwhile; starting over on others", c->port,
             c->port + CL_PORTS - 1);
        /* The learner checkpoints its new epoch before binding: forget it. */
        fileio_remove_tree(c->ckpt);
        unlink(c->metrics);
        unlink(l->log);
        unlink(r->log);
        proc_free_args(l);
        proc_free_args(r);
        c->n_procs = n0;
    }
    fail(c, "no free ports after %d attempts", CL_START_TRIES);
    return false;
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
            fail(c, "metrics line %zu is not a JSON object: %s", json_array_size(arr) + 1,
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
        if (!proc_running(learner)) {
            fail(c, "%s exited before step %" PRId64, learner->name, step);
            return false;
        }
        if (now_s() - t0 > timeout_s || out_of_time(c)) {
            fail(c, "step %" PRId64 " not reached in %.0f s (at %" PRId64 ")", step, timeout_s,
                 metrics_step(c));
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
            fail(c, "%s: no non-negative integer '%s'", where, keys[i]);
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
        fail(c,
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
        fail(c, "summary '%s': %s", c->summary, err.text);
        json_decref(s);
        return NULL;
    }
    EXPECT(c, jint(s, "steps") == steps, "summary: steps %" PRId64 ", expected %d",
           jint(s, "steps"), steps);
    EXPECT(c, jint(s, "version") == steps, "summary: version %" PRId64 ", expected %d",
           jint(s, "version"), steps);
    EXPECT(c, json_is_false(json_object_get(s, "stopped_early")), "summary: stopped_early");
    EXPECT(c, json_is_true(json_object_get(s, "accounting_ok")),
           "summary: accounting_ok is not true");
    identity_holds(c, s, "summary", k);
    return s;
}

/* Waits for the learner to finish the run and exit 0. */
static void wait_learner_done(Cluster *c, Proc *learner, double timeout_s)
{
    if (!proc_wait_exit(c, learner, timeout_s)) {
        fail(c, "%s still running after %.0f s (at step %" PRId64 ")", learner->name, timeout_s,
             metrics_step(c));
        return;
    }
    char st[64];
    describe_status(learner, st, sizeof st);
    EXPECT(c, exited_ok(learner), "%s: %s, expected exit 0", learner->name, st);
}

/* ---- fault_actor ------------------------------------------------------ */

/* Lines of p's log holding needle. */
static int count_lines(const Proc *p, const char *needle)
{
    char *text = read_text(p->log);
    int   n = 0;
    for (const char *q = text ? strstr(text, needle) : NULL; q; q = strstr(q + 1, needle)) n++;
    free(text);
    return n;
}

/* True if the actor's debug log ends waiting for a lease: a "lease request"
 * line with no grant served after it. */
static bool is_requesting(const char *log)
{
    const char *last = NULL;
    for (const char *p = strstr(log, "lease request for"); p;
         p = strstr(p + 1, "lease request for"))
        last = p;
    return last && !strstr(last, " prompts x ");
}

/* A lease the learner logged as granted to `actor` ("lease ID: N prompts
 * to 'actor'", ID in hex) that the actor's debug log does not show served
 * ("lease ID: N prompts x G", ID in decimal). Returns its prompts (0 if
 * there is none) and its id. */
static int grant_unserved(const Proc *learner, const Proc *actor, uint64_t *id)
{
    char *ltext = read_text(learner->log);
    char *atext = read_text(actor->log);
    int   n = 0;
    char  want[96];
    snprintf(want, sizeof want, " prompts to '%s'", actor->name);
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
    Cluster c;
    if (!cl_init(&c, "fault_actor", verbose)) return cl_finish(&c);
    /* A step takes four leases, so actor-1 often gets one; without its
     * lease no step can be completed, so the run waits for the re-issue. */
    const RunOpts o = {.steps = 30,
                       .ckpt_every = 0,
                       .lease_timeout_ms = 1000,
                       .max_staleness = 0,
                       .batch_groups = 8,
                       .lease_prompts = 2,
                       .is_debug = true};
    Proc         *learner, *reward;
    if (!start_core(&c, &o, &learner, &reward)) return cl_finish(&c);
    Proc *victim = actor_proc(&c, "actor-1", 8, false, true);
    Proc *other = actor_proc(&c, "actor-2", 8, false, false);
    if (!proc_start(&c, victim) || !proc_start(&c, other)) return cl_finish(&c);
    if (!wait_step(&c, learner, 3, 40.0)) return cl_finish(&c);

    /* Catch the victim waiting for a lease and freeze it; if the learner
     * grants it one it has not served, the lease is the victim's and not one
     * of its groups can have left: kill -9 it there. Otherwise (the learner
     * had no work for it) let it go on and try again. */
    uint64_t lease = 0;
    int      n_prompts = 0, looks = 0, requests_seen = 0;
    double   t0 = now_s();
    while (!n_prompts && now_s() - t0 < 30.0 && !out_of_time(&c) && proc_running(learner)) {
        /* A fresh request: its answer is yet to come. */
        int n_requests = count_lines(victim, "lease request for");
        if (n_requests == requests_seen) {
            sleep_ms(1);
            continue;
        }
        requests_seen = n_requests;
        if (!proc_stop(&c, victim)) break;
        looks++;
        char *text = read_text(victim->log);
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
    if (!n_prompts) {
        fail(&c, "actor-1 never seen granted a lease while frozen (%d tries)", looks);
        return cl_finish(&c);
    }
    note(&c,
         "kill -9 of actor-1 holding lease %" PRIx64 " (%d prompts, none served) at step %" PRId64
         " (try %d)",
         lease, n_prompts, step_at_kill, looks);

    wait_learner_done(&c, learner, 60.0);
    json_t  *metrics = check_metrics(&c);
    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(&c, k.reissued >= n_prompts,
               "summary: reissued %" PRId64 ", expected >= %d (the dead actor's lease)", k.reissued,
               n_prompts);
        note(&c,
             "summary: issued %" PRId64 " = trained %" PRId64 " + dropped_stale %" PRId64
             " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64
             " + buffered %" PRId64 "; duplicates %" PRId64,
             k.issued, k.trained, k.dropped_stale, k.reissued, k.failed, k.in_flight, k.buffered,
             k.duplicates);
    }
    size_t  n = json_array_size(metrics);
    json_t *last = n ? json_array_get(metrics, n - 1) : NULL;
    EXPECT(&c, n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(&c, last && jint(last, "leases_expired") >= 1,
           "metrics: leases_expired %" PRId64 ", expected >= 1",
           last ? jint(last, "leases_expired") : -1);
    /* Every step after the kill was served by the other actor alone. */
    EXPECT(&c, proc_running(other), "actor-2 died");
    EXPECT(&c, step_at_kill < o.steps, "the run had finished before the kill");
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
    pathf(c, path, sizeof path, "%s/trainer_state.json", c->ckpt);
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
    if (!ok) fail(c, "checkpoint state '%s' unreadable or incomplete (%s)", path, err.text);
    json_decref(o);
    return ok;
}

/* The step of the newest checkpoint, -1 before the first. */
static int64_t ckpt_step(Cluster *c)
{
    char path[PATH_MAX + 32];
    pathf(c, path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_t *o = json_load_file(path, 0, NULL);
    int64_t step = o ? jint(o, "step") : -1;
    json_decref(o);
    return step;
}

/* The actor's last status line's weights, "run 'R' epoch E vV". */
static bool actor_holds(const Proc *p, const char *run_id, int64_t epoch)
{
    char *text = read_text(p->log);
    if (!text) return false;
    char want[128];
    snprintf(want, sizeof want, "weights run '%s' epoch %" PRId64 " v", run_id, epoch);
    const char *last = NULL;
    for (const char *q = strstr(text, "weights run '"); q; q = strstr(q + 1, "weights run '"))
        last = q;
    bool ok = last && !strncmp(last, want, strlen(want));
    free(text);
    return ok;
}

/* The groups an actor's status lines count ("; groups N (") in the last
 * line before the first occurrence of mark, and in its last line. */
static bool actor_groups_around(const Proc *p, const char *mark, long long *before,
                                long long *after)
{
    char *text = read_text(p->log);
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
    Cluster c;
    if (!cl_init(&c, "fault_learner", verbose)) return cl_finish(&c);
    /* Four leases a step and no staleness: both actors take part in every
     * step, and the steps are paced by their requests, slow enough for both
     * to find the restarted learner before the run ends. */
    const RunOpts o = {.steps = 60,
                       .ckpt_every = 4,
                       .lease_timeout_ms = 1000,
                       .max_staleness = 0,
                       .batch_groups = 8,
                       .lease_prompts = 2,
                       .is_debug = true};
    Proc         *learner, *reward;
    if (!start_core(&c, &o, &learner, &reward)) return cl_finish(&c);
    Proc *actors[2] = {actor_proc(&c, "actor-1", 8, false, false),
                       actor_proc(&c, "actor-2", 8, false, false)};
    if (!proc_start(&c, actors[0]) || !proc_start(&c, actors[1])) return cl_finish(&c);
    pid_t pids[2] = {actors[0]->pid, actors[1]->pid};

    /* Kill it past a checkpoint, so the restart goes back to an older
     * version, once both actors work for it. */
    for (int a = 0; a < 2; a++)
        if (!wait_log(&c, actors[a], "weights run '", 30.0)) {
            fail(&c, "%s never installed weights", actors[a]->name);
            return cl_finish(&c);
        }
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
    EXPECT(&c, ck.epoch == 0 && ck.step >= 4 && ck.step <= step_at_kill && ck.version == ck.step,
           "checkpoint at kill: epoch %" PRId64 " step %" PRId64 " version %" PRId64
           ", expected epoch 0, step 4..%" PRId64,
           ck.epoch, ck.step, ck.version, step_at_kill);

    /* Down for a second: the actors' requests go unanswered and time out. */
    sleep_ms(1000);
    Proc *again = proc_clone(&c, learner, "learner-2");
    if (!proc_start(&c, again)) return cl_finish(&c);
    char resumed[PATH_MAX + 256];
    snprintf(resumed, sizeof resumed,
             "resumed run %s from '%s': step %" PRId64 " version %" PRId64 " epoch 1", ck.run_id,
             c.ckpt, ck.step, ck.version);
    EXPECT(&c, wait_log(&c, again, resumed, 30.0), "learner-2 did not log \"%s\"", resumed);
    wait_learner_done(&c, again, 60.0);

    /* The metrics go on where the checkpoint left off, in epoch 1. */
    json_t *metrics = check_metrics(&c);
    size_t  i;
    json_t *m, *first1 = NULL, *last = NULL;
    int64_t n0 = 0, n1 = 0, last0 = 0;
    json_array_foreach(metrics, i, m)
    {
        if (jint(m, "epoch") == 0) {
            n0++;
            last0 = jint(m, "step");
        } else if (jint(m, "epoch") == 1) {
            if (!first1) first1 = m;
            n1++;
        }
        last = m;
    }
    note(&c,
         "metrics: %" PRId64 " records of epoch 0 (last step %" PRId64 "), %" PRId64
         " of epoch 1 (first step %" PRId64 " version %" PRId64 ")",
         n0, last0, n1, first1 ? jint(first1, "step") : -1, first1 ? jint(first1, "version") : -1);
    EXPECT(&c, n0 + n1 == (int64_t)json_array_size(metrics), "metrics records of another epoch");
    EXPECT(&c,
           first1 && jint(first1, "step") == ck.step + 1 &&
               jint(first1, "version") == ck.version + 1,
           "the first step after the restart is step %" PRId64 " version %" PRId64
           ", expected %" PRId64 " (the checkpoint's + 1)",
           first1 ? jint(first1, "step") : -1, first1 ? jint(first1, "version") : -1, ck.step + 1);
    EXPECT(&c, last && jint(last, "epoch") == 1 && jint(last, "step") == o.steps,
           "the last metrics record is not epoch 1 step %d", o.steps);
    EXPECT(&c, n1 == o.steps - ck.step, "%" PRId64 " steps in epoch 1, expected %" PRId64, n1,
           o.steps - ck.step);

    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        const char *run = json_string_value(json_object_get(sum, "run_id"));
        EXPECT(&c, run && !strcmp(run, ck.run_id), "summary run id '%s', expected '%s'",
               run ? run : "", ck.run_id);
        EXPECT(&c, jint(sum, "epoch") == 1, "summary epoch %" PRId64 ", expected 1",
               jint(sum, "epoch"));
        /* The groups out or buffered at the checkpoint died with the old
         * learner: the new one counts them as re-issued. */
        EXPECT(&c, k.reissued >= ck.reissued + ck.in_flight + ck.buffered,
               "summary: reissued %" PRId64 ", expected >= %" PRId64 " + %" PRId64 " + %" PRId64
               " (the checkpoint's re-issued, in flight and buffered)",
               k.reissued, ck.reissued, ck.in_flight, ck.buffered);
        note(&c,
             "summary: issued %" PRId64 " = trained %" PRId64 " + dropped_stale %" PRId64
             " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64
             " + buffered %" PRId64 "; duplicates %" PRId64,
             k.issued, k.trained, k.dropped_stale, k.reissued, k.failed, k.in_flight, k.buffered,
             k.duplicates);
    }

    /* The same actor processes followed the new incarnation: each got
     * leases from it, installed its weights and sent groups with them. */
    char installed[160];
    snprintf(installed, sizeof installed, "weights run '%s' epoch 1 v", ck.run_id);
    for (int a = 0; a < 2; a++) {
        EXPECT(&c, proc_running(actors[a]) && actors[a]->pid == pids[a],
               "%s (pid %d) did not survive the learner's restart", actors[a]->name, (int)pids[a]);
        char granted[96];
        snprintf(granted, sizeof granted, " prompts to '%s'", actors[a]->name);
        int n_grants = count_lines(again, granted);
        EXPECT(&c, n_grants > 0, "learner-2 granted %s no lease", actors[a]->name);
        EXPECT(&c, log_has(actors[a], installed), "%s never installed weights of epoch 1",
               actors[a]->name);
        note(&c, "%s (pid %d, never restarted): %d leases from learner-2", actors[a]->name,
             (int)pids[a], n_grants);
    }
    json_decref(metrics);
    json_decref(sum);
    for (int a = 0; a < 2; a++) {
        proc_end(&c, actors[a]);
        /* Its final status line: groups sent since it took epoch 1's weights. */
        long long before = 0, after = 0;
        bool      ok = actor_groups_around(actors[a], installed, &before, &after);
        EXPECT(&c, ok && after > before,
               "%s sent no groups with epoch 1's weights (%lld before, %lld at the end)",
               actors[a]->name, before, after);
        EXPECT(&c, actor_holds(actors[a], ck.run_id, 1),
               "%s's last status line does not hold epoch 1 weights", actors[a]->name);
        note(&c, "%s: %lld groups sent before epoch 1's weights, %lld at the end", actors[a]->name,
             before, after);
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
    char *text = read_text(p->log);
    if (!text) return false;
    const char *last = NULL;
    for (const char *q = strstr(text, ": scored "); q; q = strstr(q + 1, ": scored ")) last = q;
    bool ok = false;
    if (last) {
        const char *rcv = strstr(last, "received ");
        const char *rej = strstr(last, "rejects: ");
        ok = sscanf(last, ": scored %lld groups", scored) == 1 && rcv &&
             sscanf(rcv, "received %lld", received) == 1 && rej;
        if (ok && rejects) {
            rej += strlen("rejects: ");
            size_t n = strcspn(rej, "\n");
            snprintf(rejects, cap, "%.*s", (int)n, rej);
        }
    }
    free(text);
    return ok;
}

int cluster_fault_reward_selftest(bool verbose)
{
    Cluster c;
    if (!cl_init(&c, "fault_reward", verbose)) return cl_finish(&c);
    const RunOpts o = {.steps = 30,
                       .ckpt_every = 0,
                       .lease_timeout_ms = 1000,
                       .max_staleness = 0,
                       .batch_groups = 4,
                       .lease_prompts = 2};
    Proc         *learner, *reward;
    if (!start_core(&c, &o, &learner, &reward)) return cl_finish(&c);
    Proc *actors[2] = {actor_proc(&c, "actor-1", 8, false, false),
                       actor_proc(&c, "actor-2", 8, false, false)};
    if (!proc_start(&c, actors[0]) || !proc_start(&c, actors[1])) return cl_finish(&c);
    if (!wait_step(&c, learner, 4, 40.0)) return cl_finish(&c);

    /* Frozen, the server takes groups into its socket buffers and queues
     * without scoring them; kill -9 then loses them. */
    if (!proc_stop(&c, reward)) return cl_finish(&c);
    sleep_ms(600);
    int64_t step_at_kill = metrics_step(&c);
    proc_kill(reward);
    note(&c, "kill -9 of the reward server at step %" PRId64, step_at_kill);
    sleep_ms(500);
    Proc *again = proc_clone(&c, reward, "reward-2");
    bool  up = false;
    /* Its port was ours a moment ago; give the kernel a few tries. */
    for (int tries = 0; tries < 10 && !up && !out_of_time(&c); tries++) {
        if (tries) {
            note(&c, "reward-2 could not bind yet; again");
            sleep_ms(300);
        }
        if (!proc_start(&c, again)) break;
        up = wait_log(&c, again, "samples bound at", 15.0);
        if (!up) proc_kill(again);
    }
    EXPECT(&c, up, "reward-2 did not start on the same port");
    wait_learner_done(&c, learner, 60.0);

    json_t  *metrics = check_metrics(&c);
    Counters k = {0};
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(&c, k.reissued >= 1,
               "summary: reissued %" PRId64 ", expected >= 1 (groups lost with the server)",
               k.reissued);
        note(&c,
             "summary: issued %" PRId64 " = trained %" PRId64 " + dropped_stale %" PRId64
             " + reissued %" PRId64 " + failed %" PRId64 " + in_flight %" PRId64
             " + buffered %" PRId64 "; duplicates %" PRId64,
             k.issued, k.trained, k.dropped_stale, k.reissued, k.failed, k.in_flight, k.buffered,
             k.duplicates);
    }
    size_t n = json_array_size(metrics);
    EXPECT(&c, n == (size_t)o.steps, "%zu metrics records, expected %d", n, o.steps);
    EXPECT(&c, step_at_kill + 1 < o.steps, "the run was almost over at the kill (step %" PRId64 ")",
           step_at_kill);
    json_decref(metrics);
    json_decref(sum);
    proc_end(&c, actors[0]);
    proc_end(&c, actors[1]);
    if (up) {
        proc_end(&c, again);
        long long scored = 0, received = 0;
        EXPECT(&c, reward_last_status(again, &scored, &received, NULL, 0) && scored > 0,
               "reward-2 scored no groups (%lld received)", received);
        note(&c, "reward-2 scored %lld groups of %lld received", scored, received);
    }
    return cl_finish(&c);
}
