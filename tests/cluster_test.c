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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/formats/tok.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/net/snapshot.h"

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

/* Set by SIGINT or SIGTERM (Ctrl-C on make test): every wait then ends,
 * so the test still kills its processes and removes its files. */
static volatile sig_atomic_t g_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static bool out_of_time(Cluster *c)
{
    return g_interrupted || now_s() > c->deadline;
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
        if (!g_interrupted) fail(c, "%s did not exit within 10 s of SIGTERM", p->name);
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
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        fail(c, "sigaction: %s", strerror(errno));
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
    if (g_interrupted) fail(c, "interrupted by a signal");
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
            EXPECT(c, rc == 0, "%s frame '%s' does not decode (%s)", s->socket, f->what, rej.why);
        else
            EXPECT(c, rc != 0 && rej.reason == f->reason,
                   "%s frame '%s': wire_decode gives %s, the test expects %s", s->socket, f->what,
                   rc ? wire_reason_name(rej.reason) : "success", wire_reason_name(f->reason));
        if (m) protobuf_c_message_free_unpacked(m, NULL);
        if (!is_actor) continue;
        m = NULL;
        rc = wire_decode(&rlhf__error_reply__descriptor, f->data, f->len, NULL, &m, &rej);
        const Rlhf__ErrorReply *er = (const Rlhf__ErrorReply *)m;
        EXPECT(c, rc != 0 || (er->code == 0 && !er->reason[0]),
               "%s frame '%s' reads as an ErrorReply", s->socket, f->what);
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
        rlhf__completion__init(&g->comp[i]);
        g->comp[i].tokens = g->tok[i];
        g->comp[i].logp_behaviour = g->lpb[i];
        g->comp[i].logp_sampled = g->lps[i];
        g->comp[i].policy_version = g->pv[i];
        g->comp[i].n_tokens = g->comp[i].n_logp_behaviour = g->comp[i].n_logp_sampled =
            g->comp[i].n_policy_version = 2;
        g->comp[i].finish = RLHF__COMPLETION__FINISH__FINISH_STOP;
        g->comp_p[i] = &g->comp[i];
        rlhf__score__init(&g->score[i]);
        g->score_p[i] = &g->score[i];
    }
    rlhf__sampled_group__init(&g->group);
    g->group.version = WIRE_PROTOCOL_VERSION;
    g->group.run_id = (char *)run_id;
    g->group.epoch = epoch;
    g->group.lease_id = 0x7fff0001;
    g->group.actor_id = HOSTILE_ID;
    g->group.prompt = &g->prompt;
    g->group.completions = g->comp_p;
    g->group.n_completions = CL_GROUP;
    g->group.sampling = &g->sampling;
    g->group.group_index = 0;
    g->group.group_count = 1;
    rlhf__scored_group__init(&g->scored);
    g->scored.version = WIRE_PROTOCOL_VERSION;
    g->scored.run_id = (char *)run_id;
    g->scored.group = &g->group;
    g->scored.scores = g->score_p;
    g->scored.n_scores = CL_GROUP;
    g->scored.scorer_id = "hostile";
}

/* The learner's lease ROUTER: LeaseRequest has no token ids or floats, so
 * out-of-range means a negative credit. */
static void frames_lease_request(FrameSet *s)
{
    s->socket = "learner lease";
    frame_garbage(s);
    Rlhf__LeaseRequest r = RLHF__LEASE_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = HOSTILE_ID; /* the last field packed: cutting a byte truncates it */
    frame_msg(s, "truncated", &r.base, 1, WIRE_REJ_GARBAGE);
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
    s->socket = "learner snapshot";
    frame_garbage(s);
    Rlhf__SnapshotRequest r = RLHF__SNAPSHOT_REQUEST__INIT;
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = HOSTILE_ID;
    frame_msg(s, "truncated", &r.base, 1, WIRE_REJ_GARBAGE);
    r.version = 0;
    frame_msg(s, "wrong version", &r.base, 0, WIRE_REJ_BAD_VERSION);
    r.version = WIRE_PROTOCOL_VERSION;
    r.actor_id = "";
    frame_msg(s, "no actor id", &r.base, 0, WIRE_REJ_BAD_SHAPE);
    frame_oversized(s);
}

/* The learner's results PULL: ScoredGroups of the right run. */
static void frames_scored_group(FrameSet *s, const char *run_id, uint64_t epoch)
{
    s->socket = "learner results";
    Group g;
    frame_garbage(s);
    Rlhf__ScoredGroup t = RLHF__SCORED_GROUP__INIT;
    t.version = WIRE_PROTOCOL_VERSION;
    t.run_id = (char *)run_id;
    frame_msg(s, "truncated", &t.base, 1, WIRE_REJ_GARBAGE);
    group_init(&g, run_id, epoch);
    g.scored.version = 3;
    frame_msg(s, "wrong version", &g.scored.base, 0, WIRE_REJ_BAD_VERSION);
    group_init(&g, run_id, epoch);
    g.tok[1][0] = 5000;
    frame_msg(s, "completion token 5000", &g.scored.base, 0, WIRE_REJ_BAD_TOKENS);
    group_init(&g, run_id, epoch);
    g.prompt_tok[2] = -1;
    frame_msg(s, "prompt token -1", &g.scored.base, 0, WIRE_REJ_BAD_TOKENS);
    group_init(&g, run_id, epoch);
    g.score[2].reward = NAN;
    frame_msg(s, "NaN reward", &g.scored.base, 0, WIRE_REJ_NONFINITE);
    group_init(&g, run_id, epoch);
    g.lpb[3][1] = INFINITY;
    frame_msg(s, "infinite log-prob", &g.scored.base, 0, WIRE_REJ_NONFINITE);
    group_init(&g, run_id, epoch);
    g.scored.run_id = g.group.run_id = "not-this-run";
    frame_msg(s, "another run", &g.scored.base, 0, WIRE_REJ_BAD_RUN);
    frame_oversized(s);
}

/* The reward server's samples PULL: SampledGroups. */
static void frames_sampled_group(FrameSet *s, const char *run_id, uint64_t epoch)
{
    s->socket = "reward samples";
    Group g;
    frame_garbage(s);
    Rlhf__SampledGroup t = RLHF__SAMPLED_GROUP__INIT;
    t.version = WIRE_PROTOCOL_VERSION;
    t.run_id = (char *)run_id;
    frame_msg(s, "truncated", &t.base, 1, WIRE_REJ_GARBAGE);
    group_init(&g, run_id, epoch);
    g.group.version = 2;
    frame_msg(s, "wrong version", &g.group.base, 0, WIRE_REJ_BAD_VERSION);
    group_init(&g, run_id, epoch);
    g.tok[0][0] = 5000;
    frame_msg(s, "completion token 5000", &g.group.base, 0, WIRE_REJ_BAD_TOKENS);
    group_init(&g, run_id, epoch);
    g.lps[2][0] = NAN;
    frame_msg(s, "NaN log-prob", &g.group.base, 0, WIRE_REJ_NONFINITE);
    frame_oversized(s);
}

/* The actor's SUB: WeightAnnounces. */
static void frames_announce(FrameSet *s, const char *run_id, uint64_t epoch)
{
    s->socket = "actor weights";
    frame_garbage(s);
    Rlhf__WeightAnnounce w = RLHF__WEIGHT_ANNOUNCE__INIT;
    w.version = WIRE_PROTOCOL_VERSION;
    w.run_id = (char *)run_id; /* also what keeps these from reading as an ErrorReply */
    frame_msg(s, "truncated", &w.base, 1, WIRE_REJ_GARBAGE);
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
    s->socket = "actor lease";
    frame_garbage(s);
    Rlhf__LeaseGrant g = RLHF__LEASE_GRANT__INIT;
    g.version = WIRE_PROTOCOL_VERSION;
    g.run_id = (char *)run_id;
    frame_msg(s, "truncated", &g.base, 1, WIRE_REJ_GARBAGE);
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
    s->socket = "actor snapshot";
    frame_garbage(s);
    Rlhf__WeightChunk w = RLHF__WEIGHT_CHUNK__INIT;
    w.version = WIRE_PROTOCOL_VERSION;
    w.run_id = (char *)run_id;
    frame_msg(s, "truncated", &w.base, 1, WIRE_REJ_GARBAGE);
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
    char *text = read_text(p->log);
    if (!text) return false;
    const char *last = NULL;
    for (const char *q = strstr(text, "| rejects lease "); q; q = strstr(q + 1, "| rejects lease "))
        last = q;
    bool ok = last && sscanf(last, "| rejects lease %lld results %lld snapshot %lld", lease,
                             results, snapshot) == 3;
    free(text);
    return ok;
}

/* The reasons of the actor's last status line ("rejects N (reasons)"). */
static bool actor_rejects(const Proc *p, long long *total, char *reasons, size_t cap)
{
    char *text = read_text(p->log);
    if (!text) return false;
    const char *last = NULL;
    for (const char *q = strstr(text, "; rejects "); q; q = strstr(q + 1, "; rejects ")) last = q;
    char buf[256] = "";
    bool ok = last && sscanf(last, "; rejects %lld (%255[^)])", total, buf) == 2;
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
                EXPECT(c, er->code < 0 && strstr(er->reason, "refused"),
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
            fail(c, "the learner's snapshot chunk is refused: %s", rej.why);
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
        EXPECT(c, log_has(p, want), "%s's log lacks \"%s\" (%s frame '%s')", p->name, want,
               s->socket, s->f[i].what);
    }
}

int cluster_hostile_selftest(bool verbose)
{
    Cluster c;
    if (!cl_init(&c, "hostile", verbose)) return cl_finish(&c);
    const RunOpts o = {.steps = 40,
                       .ckpt_every = 0,
                       .lease_timeout_ms = 1000,
                       .max_staleness = 2,
                       .batch_groups = 4,
                       .lease_prompts = 2};
    Proc         *learner, *reward;
    if (!start_core(&c, &o, &learner, &reward)) return cl_finish(&c);

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
    if (!t_lease || !t_snap || !t_results || !t_samples || !tok ||
        wire_connect(t_lease, c.ep_lease) || wire_connect(t_snap, c.ep_snap) ||
        wire_connect(t_results, c.ep_results) || wire_connect(t_samples, c.ep_samples)) {
        fail(&c, "the test's sockets");
        goto out;
    }

    /* The run's identity, from a snapshot fetched the way an actor does. */
    if (!fetch_snapshot(&c, t_snap, rx, &errs_snap)) {
        fail(&c, "no snapshot from the learner");
        goto out;
    }
    snprintf(run_id, sizeof run_id, "%s", wire_snap_rx_run_id(rx));
    uint64_t epoch = wire_snap_rx_epoch(rx);

    /* Every socket of the learner and the reward server gets its frames. */
    frames_lease_request(&f_lease);
    frames_snapshot_request(&f_snap);
    frames_scored_group(&f_results, run_id, epoch);
    frames_sampled_group(&f_samples, run_id, epoch);
    WireLimits lim_req = {.vocab_size = tok_vocab_size(tok)};
    WireLimits lim_results = {.vocab_size = tok_vocab_size(tok), .run_id = run_id};
    frames_check(&c, &f_lease, &rlhf__lease_request__descriptor, &lim_req, false);
    frames_check(&c, &f_snap, &rlhf__snapshot_request__descriptor, &lim_req, false);
    frames_check(&c, &f_results, &rlhf__scored_group__descriptor, &lim_results, false);
    frames_check(&c, &f_samples, &rlhf__sampled_group__descriptor, &lim_req, false);
    Group g;
    group_init(&g, run_id, epoch);
    ProtobufCMessage *ok_msg = NULL;
    size_t            ok_len = protobuf_c_message_get_packed_size(&g.scored.base);
    uint8_t          *ok_buf = xmalloc(ok_len);
    protobuf_c_message_pack(&g.scored.base, ok_buf);
    EXPECT(&c,
           wire_decode(&rlhf__scored_group__descriptor, ok_buf, ok_len, &lim_results, &ok_msg,
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
    EXPECT(&c, !send_error[0], "%s", send_error);
    note(&c, "sent %d + %d + %d frames to the learner, %d to the reward server", f_lease.n,
         f_snap.n, f_results.n, f_samples.n);

    /* Each refused request is answered with an ErrorReply, and the next good
     * one is served as before. */
    Rlhf__LeaseRequest req = RLHF__LEASE_REQUEST__INIT;
    req.version = WIRE_PROTOCOL_VERSION;
    req.actor_id = HOSTILE_ID;
    req.max_prompts = 0; /* a keep-alive: an answer without work */
    EXPECT(&c, wire_send(t_lease, &req.base, 0) == 0, "lease request not sent");
    Rlhf__LeaseGrant *grant = (Rlhf__LeaseGrant *)recv_after_errors(
        &c, t_lease, &rlhf__lease_grant__descriptor, 15.0, &errs_lease);
    EXPECT(&c, grant && grant->n_prompts == 0 && !strcmp(grant->run_id, run_id),
           "no lease grant after the hostile lease requests");
    if (grant) protobuf_c_message_free_unpacked(&grant->base, NULL);
    int errs0 = errs_snap;
    EXPECT(&c, fetch_snapshot(&c, t_snap, rx, &errs_snap),
           "no snapshot after the hostile snapshot requests");
    errs_snap -= errs0;
    EXPECT(&c, errs_lease == f_lease.n - 1 && errs_snap == f_snap.n - 1,
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
    EXPECT(&c, l == (long long)n_lease && r == (long long)n_results && sn == (long long)n_snap,
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
    EXPECT(&c, !strcmp(reasons, want_samples) && scored == 0,
           "reward status line: scored %lld, rejects '%s', expected 0 and '%s'", scored, reasons,
           want_samples);
    note(&c, "learner counts lease %lld, results %lld, snapshot %lld; reward: %s", l, r, sn,
         reasons);

    /* Now the actor, behind the proxy, and a run to the end. */
    if (pthread_create(&px.thread, NULL, proxy_main, &px) != 0) {
        fail(&c, "pthread_create");
        goto out;
    }
    is_proxy = true;
    while (atomic_load(&px.is_ready) == 0) sleep_ms(5);
    if (atomic_load(&px.is_ready) < 0) {
        fail(&c, "%s", px.error);
        goto out;
    }
    Proc *actor = actor_proc(&c, "actor-1", 8, true, false);
    if (!proc_start(&c, actor)) goto out;
    if (!wait_step(&c, learner, 2, 40.0)) goto out;
    atomic_store(&px.want_inject, 1);
    t0 = now_s();
    while (!atomic_load(&px.is_nan_sent) && proc_running(learner) && now_s() - t0 < 20.0)
        sleep_ms(20);
    EXPECT(&c, atomic_load(&px.is_injected) && atomic_load(&px.is_nan_sent),
           "the proxy did not get to send its frames (injected %d, NaN snapshot %d)",
           atomic_load(&px.is_injected), atomic_load(&px.is_nan_sent));
    int64_t step_injected = metrics_step(&c);
    wait_learner_done(&c, learner, 60.0);
    EXPECT(&c, step_injected < o.steps, "the run was over before the actor's frames");

    /* The run completed with every count in place. */
    json_t  *metrics = check_metrics(&c);
    Counters k;
    json_t  *sum = check_summary(&c, o.steps, &k);
    if (sum) {
        EXPECT(&c,
               jint(sum, "rejects_lease") == (int64_t)n_lease &&
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
        EXPECT(&c, got && !strcmp(got, per[i].want),
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
    EXPECT(&c,
           reward_last_status(reward, &scored, &received, reasons, sizeof reasons) &&
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
    EXPECT(&c, !px.error[0], "%s", px.error);
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
        EXPECT(&c,
               actor_rejects(actor, &got_total, got_actor, sizeof got_actor) &&
                   got_total == (long long)n_actor && !strcmp(got_actor, want_actor),
               "actor's last status line: rejects %lld (%s), expected %" PRIu64 " (%s)", got_total,
               got_actor, n_actor, want_actor);
        note(&c, "actor: rejects %lld (%s); %d frames forwarded by the proxy", got_total, got_actor,
             atomic_load(&px.forwarded));
        expect_logged(&c, actor, &px.sub, "WeightAnnounce");
        expect_logged(&c, actor, &px.lease, "LeaseGrant");
        expect_logged(&c, actor, &px.snap, "WeightChunk");
        EXPECT(&c, log_has(actor, "rejected LeaseGrant: bad_tokens: "),
               "the actor's log lacks the grant of token 100000");
        EXPECT(&c, log_has(actor, "rejected snapshot: nonfinite: "),
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
    if (zmq_ctx_term(zctx) != 0) fail(&c, "zmq_ctx_term: %s", zmq_strerror(zmq_errno()));
    return cl_finish(&c);
}
