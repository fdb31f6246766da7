#include "reward_server/sandbox/sandbox.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* The runner every run executes with `python3 -c`: reads the job from stdin
 * (records "<length>\n<bytes>": the nonce, the program, then each test),
 * runs the program, then each test in the program's namespace, and reports
 * on fd 3 (see the header). Exceptions are caught as BaseException, so
 * SystemExit and KeyboardInterrupt count as failures, not as an end. Only
 * the process it started in reports: a program that forks must not have
 * its copies of the runner report too. */
static const char RUNNER[] =
    "import os, sys\n"
    "def _rlhf_runner():\n"
    "    data = sys.stdin.buffer.read()\n"
    "    sys.stdin.close()\n"
    "    sys.stdin = open(os.devnull)\n"
    "    recs, i = [], 0\n"
    "    while i < len(data):\n"
    "        j = data.index(b'\\n', i)\n"
    "        n = int(data[i:j])\n"
    "        recs.append(data[j + 1:j + 1 + n].decode('utf-8', 'replace'))\n"
    "        i = j + 1 + n\n"
    "    nonce, code, tests = recs[0], recs[1], recs[2:]\n"
    "    side = open(3, 'w', buffering=1)\n"
    "    me = os.getpid()\n"
    "    def say(s):\n"
    "        if os.getpid() != me:\n"
    "            return\n"
    "        side.write(nonce + ' ' + s + '\\n')\n"
    "        side.flush()\n"
    "    def name(e):\n"
    "        try:\n"
    "            sys.stderr.write('%s: %s\\n' % (type(e).__name__, str(e)[:300]))\n"
    "        except BaseException:\n"
    "            pass\n"
    "        return type(e).__name__\n"
    "    say('R')\n"
    "    g = {'__name__': '__solution__'}\n"
    "    try:\n"
    "        exec(compile(code, 'solution.py', 'exec'), g)\n"
    "        say('S 1')\n"
    "    except BaseException as e:\n"
    "        say('S 0 ' + name(e))\n"
    "        say('D')\n"
    "        return\n"
    "    for k, t in enumerate(tests):\n"
    "        try:\n"
    "            exec(compile(t, 'test_%d.py' % k, 'exec'), g)\n"
    "            say('T %d 1' % k)\n"
    "        except BaseException as e:\n"
    "            say('T %d 0 %s' % (k, name(e)))\n"
    "    say('D')\n"
    "_rlhf_runner()\n";

/* The pipes of a run, by the fd the program sees. */
enum { P_IN = 0, P_OUT = 1, P_ERR = 2, P_SIDE = SANDBOX_EXEC_SIDE_FD, P_STATUS = 4, P_COUNT = 5 };

#define SIDE_CAP ((size_t)256 << 10) /* bytes of the side channel kept */
#define STATUS_CAP ((size_t)4 << 10)
/* Past this many dropped bytes a pipe is closed: the writer gets EPIPE. */
#define DROP_MAX ((uint64_t)16 << 20)
/* After the monitor exits, how long the pipes may take to reach EOF. */
#define DRAIN_MS 250

static const char *const verdict_names[SANDBOX_VERDICT_COUNT] = {
    "passed", "failed", "error", "timeout", "cpu_limit", "killed", "exited", "setup_failed"};

const char *sandbox_verdict_name(SandboxVerdict v)
{
    return (unsigned)v < SANDBOX_VERDICT_COUNT ? verdict_names[v] : "?";
}

typedef struct {
    char    *buf; /* cap + 1 bytes */
    size_t   n, cap;
    uint64_t dropped;
} Capture;

typedef struct Job Job;
struct Job {
    Job          *next;
    Sandbox      *sb;
    SandboxDoneFn done;
    void         *arg;
    char         *payload; /* the framed job, written to stdin */
    size_t        payload_len;
    char          nonce[24];
    int           n_tests;

    uv_process_t    proc;
    uv_pipe_t       pipes[P_COUNT];
    Capture         caps[P_COUNT]; /* P_OUT, P_ERR, P_SIDE, P_STATUS */
    uv_timer_t      timer;
    uv_write_t      wr;
    int             n_open;       /* handles not yet closed */
    int             n_pipes_open; /* of those, pipes */
    bool            is_spawned, has_exited, is_group_killed, is_timeout, is_cancelled;
    bool            has_status;
    int             status_exit, status_signal; /* from the monitor's status line */
    char            setup_why[256];             /* "setup ..." status, or a failure to start */
    char            dir[PATH_MAX];
    struct timespec t0;
    SandboxResult   res;
};

struct Sandbox {
    SandboxConfig    cfg;
    char            *python, *exec_path, *tmp_dir, *hide; /* owned copies */
    SandboxIsolation iso;
    char             iso_detail[512];
    char            *argv[48];     /* rlhf-sandbox-exec's command line, built once */
    char             nums[16][16]; /* the numbers in argv */
    bool             is_root;

    uv_loop_t   loop;
    uv_async_t  async;
    uv_thread_t thread;
    bool        is_loop_init, is_thread_running;
    char        scratch[64 << 10]; /* read buffer of the loop thread */

    pthread_mutex_t mu; /* guards the queue and is_stopping */
    Job            *q_head, *q_tail;
    bool            is_stopping;
    int             n_running;           /* loop thread only */
    Job            *running;             /* loop thread only: runs started, linked by next */
    char            last_setup_why[256]; /* loop thread only: logged once */

    _Atomic uint64_t st_runs, st_capped, st_queued, st_running, st_run_ns;
    _Atomic uint64_t st_verdicts[SANDBOX_VERDICT_COUNT];
};

void sandbox_result_free(SandboxResult *r)
{
    if (!r) return;
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* ---- captures -------------------------------------------------------------------------------- */

static void cap_init(Capture *c, size_t cap)
{
    c->buf = xmalloc(cap + 1);
    c->buf[0] = '\0';
    c->n = 0;
    c->cap = cap;
    c->dropped = 0;
}

static void cap_add(Capture *c, const char *p, size_t n)
{
    size_t room = c->cap - c->n, k = n < room ? n : room;
    memcpy(c->buf + c->n, p, k);
    c->n += k;
    c->buf[c->n] = '\0';
    c->dropped += n - k;
}

/* ---- the job's stdin ------------------------------------------------------------------------- */

static void frame(char *out, size_t *at, const char *s, size_t n)
{
    *at += (size_t)sprintf(out + *at, "%zu\n", n);
    memcpy(out + *at, s, n);
    *at += n;
}

static void make_nonce(char out[24])
{
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* Not a secret the kernel must vouch for: a program has to guess it to forge its results.
         */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        memcpy(r, &v, sizeof r);
    }
    for (int i = 0; i < 8; i++) sprintf(out + 2 * i, "%02x", r[i]);
}

static Job *job_new(Sandbox *sb, const SandboxJob *job, SandboxDoneFn done, void *arg)
{
    Job *j = xcalloc(1, sizeof *j);
    j->sb = sb;
    j->done = done;
    j->arg = arg;
    j->n_tests = job->n_tests;
    make_nonce(j->nonce);
    size_t total = 32 + strlen(j->nonce) + 32 + strlen(job->code);
    for (int i = 0; i < job->n_tests; i++) total += 32 + strlen(job->tests[i]);
    j->payload = xmalloc(total);
    size_t at = 0;
    frame(j->payload, &at, j->nonce, strlen(j->nonce));
    frame(j->payload, &at, job->code, strlen(job->code));
    for (int i = 0; i < job->n_tests; i++)
        frame(j->payload, &at, job->tests[i], strlen(job->tests[i]));
    j->payload_len = at;
    return j;
}

static void job_free(Job *j)
{
    for (int i = 0; i < P_COUNT; i++) free(j->caps[i].buf);
    free(j->payload);
    free(j);
}

/* ---- results --------------------------------------------------------------------------------- */

/* Reads the runner's lines (those carrying this run's nonce) into res. */
static void parse_side(Job *j, bool *is_up, int *setup, bool *is_done)
{
    SandboxResult *r = &j->res;
    const size_t   nl = strlen(j->nonce);
    if (!j->caps[P_SIDE].buf) return; /* never started */
    bool *passed = xcalloc((size_t)(j->n_tests > 0 ? j->n_tests : 1), sizeof *passed);
    char *save = NULL;
    for (char *line = strtok_r(j->caps[P_SIDE].buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, j->nonce, nl) || line[nl] != ' ') continue;
        const char *m = line + nl + 1;
        char        kind[48] = "";
        int         k = -1, ok = -1;
        if (!strcmp(m, "R")) {
            *is_up = true;
        } else if (!strcmp(m, "D")) {
            *is_done = true;
        } else if (sscanf(m, "S %d %47s", &ok, kind) >= 1) {
            *setup = ok;
        } else if (sscanf(m, "T %d %d %47s", &k, &ok, kind) >= 2 && k >= 0 && k < j->n_tests) {
            passed[k] = ok == 1;
        }
        if (ok == 0 && !r->error[0]) snprintf(r->error, sizeof r->error, "%s", kind);
    }
    if (j->n_tests == 0) {
        r->n_passed = *setup == 1 && *is_done ? 1 : 0;
    } else {
        for (int i = 0; i < j->n_tests; i++) r->n_passed += *setup == 1 && passed[i];
    }
    free(passed);
}

static void make_result(Job *j)
{
    SandboxResult *r = &j->res;
    bool           is_up = false, is_done = false;
    int            setup = -1;
    r->n_tests = j->n_tests > 0 ? j->n_tests : 1;
    r->exit_status = -1;
    if (j->has_status) {
        r->exit_status = j->status_exit;
        r->term_signal = j->status_signal;
    }
    parse_side(j, &is_up, &setup, &is_done);
    r->is_done = is_done;
    r->out_dropped = j->caps[P_OUT].dropped;
    r->err_dropped = j->caps[P_ERR].dropped;
    r->is_output_capped = r->out_dropped || r->err_dropped;
    if (j->is_cancelled) {
        r->verdict = SANDBOX_SETUP_FAILED;
        snprintf(r->why, sizeof r->why, "sandbox stopping");
    } else if (j->setup_why[0]) {
        r->verdict = SANDBOX_SETUP_FAILED;
        snprintf(r->why, sizeof r->why, "%s", j->setup_why);
    } else if (!is_up) {
        /* The runner never started: the interpreter (or its limits) is the problem, unless the
         * machine was too slow to start it before the timeout. */
        r->verdict = j->is_timeout ? SANDBOX_TIMEOUT : SANDBOX_SETUP_FAILED;
        const char *e = j->caps[P_ERR].buf ? j->caps[P_ERR].buf : "";
        char        st[48];
        if (!j->has_status)
            snprintf(st, sizeof st, "no status");
        else if (j->status_signal)
            snprintf(st, sizeof st, "signal %d", j->status_signal);
        else
            snprintf(st, sizeof st, "exit %d", j->status_exit);
        snprintf(r->why, sizeof r->why, "the interpreter did not run the job (%s; stderr: %.*s)",
                 st, (int)strcspn(e, "\n"), e);
    } else if (setup == 0) {
        r->verdict = SANDBOX_ERROR;
    } else if (is_done) {
        r->verdict = r->n_passed == r->n_tests ? SANDBOX_PASSED : SANDBOX_FAILED;
    } else if (j->is_timeout) {
        r->verdict = SANDBOX_TIMEOUT;
    } else if (r->term_signal == SIGXCPU) {
        r->verdict = SANDBOX_CPU_LIMIT;
    } else if (r->term_signal || !j->has_status) {
        r->verdict = SANDBOX_KILLED;
    } else {
        r->verdict = SANDBOX_EXITED;
    }
    r->out = j->caps[P_OUT].buf;
    r->err = j->caps[P_ERR].buf;
    j->caps[P_OUT].buf = j->caps[P_ERR].buf = NULL;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->seconds = (double)(t1.tv_sec - j->t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - j->t0.tv_nsec);
}

/* ---- directories ----------------------------------------------------------------------------- */

static int rm_open_cb(const char *path, const struct stat *st, int type, struct FTW *f)
{
    /* A program may leave a directory it made unreadable; its owner (or
     * root) opens it again so the removal can descend. */
    if (type == FTW_D || type == FTW_DNR) chmod(path, 0700);
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int type, struct FTW *f)
{
    if (remove(path) != 0 && errno != ENOENT)
        log_warn("sandbox: remove %s: %s", path, strerror(errno));
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, rm_open_cb, 16, FTW_PHYS);
    nftw(dir, rm_cb, 16, FTW_PHYS | FTW_DEPTH);
}

/* ---- the loop thread ------------------------------------------------------------------------- */

static void pump(Sandbox *sb);

/* Ends j: its result to its callback, its directory removed. The caller
 * starts what waits (pump). */
static void finish(Job *j)
{
    Sandbox *sb = j->sb;
    make_result(j);
    if (j->dir[0]) remove_tree(j->dir);
    SandboxResult *r = &j->res;
    if (r->verdict == SANDBOX_SETUP_FAILED && !j->is_cancelled &&
        strcmp(sb->last_setup_why, r->why)) {
        log_error("sandbox: a run could not start: %s", r->why);
        snprintf(sb->last_setup_why, sizeof sb->last_setup_why, "%s", r->why);
    }
    atomic_fetch_add(&sb->st_runs, 1);
    atomic_fetch_add(&sb->st_verdicts[r->verdict], 1);
    if (r->is_output_capped) atomic_fetch_add(&sb->st_capped, 1);
    atomic_fetch_add(&sb->st_run_ns, (uint64_t)(r->seconds * 1e9));
    if (j->is_spawned) {
        for (Job **p = &sb->running; *p; p = &(*p)->next)
            if (*p == j) {
                *p = j->next;
                break;
            }
        sb->n_running--;
        atomic_fetch_sub(&sb->st_running, 1);
    }
    j->done(r, j->arg);
    job_free(j);
}

static void on_close(uv_handle_t *h)
{
    Job *j = h->data;
    if (h->type == UV_NAMED_PIPE) j->n_pipes_open--;
    /* Every pipe at EOF after the monitor's exit: nothing is left to drain. */
    if (j->has_exited && j->n_pipes_open == 0 && !uv_is_closing((uv_handle_t *)&j->timer))
        uv_close((uv_handle_t *)&j->timer, on_close);
    if (--j->n_open == 0) {
        Sandbox *sb = j->sb;
        finish(j);
        pump(sb);
    }
}

static void close_handle(Job *j, uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, on_close);
}

/* Kills the whole process group while its leader, the monitor, still
 * holds the group's id (it waits to be killed), so the signal cannot reach
 * a process that reused the number. */
static void kill_group(Job *j)
{
    if (j->is_group_killed || !j->is_spawned) return;
    j->is_group_killed = true;
    if (kill(-j->proc.pid, SIGKILL) != 0 && errno != ESRCH)
        log_warn("sandbox: kill group %d: %s", (int)j->proc.pid, strerror(errno));
}

static void on_status(Job *j)
{
    Capture *c = &j->caps[P_STATUS];
    if (j->has_status || j->setup_why[0] || !memchr(c->buf, '\n', c->n)) return;
    int v = 0;
    if (!strncmp(c->buf, "setup ", 6)) {
        snprintf(j->setup_why, sizeof j->setup_why, "%.*s", (int)strcspn(c->buf + 6, "\n"),
                 c->buf + 6);
    } else if (sscanf(c->buf, "exit %d", &v) == 1) {
        j->has_status = true;
        j->status_exit = v;
    } else if (sscanf(c->buf, "signal %d", &v) == 1) {
        j->has_status = true;
        j->status_exit = -1;
        j->status_signal = v;
    } else {
        snprintf(j->setup_why, sizeof j->setup_why, "monitor said '%.*s'",
                 (int)strcspn(c->buf, "\n"), c->buf);
    }
    /* The program has ended: whatever it started goes with the group. */
    kill_group(j);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    Job *j = h->data;
    *buf = uv_buf_init(j->sb->scratch, sizeof j->sb->scratch);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    Job *j = s->data;
    int  k = (int)((uv_pipe_t *)s - j->pipes);
    if (nread > 0) {
        Capture *c = &j->caps[k];
        cap_add(c, buf->base, (size_t)nread);
        if (k == P_STATUS) on_status(j);
        /* A program that floods its output is cut off (it then gets EPIPE)
         * once enough has been counted. */
        if (c->dropped > DROP_MAX) close_handle(j, (uv_handle_t *)s);
    } else if (nread < 0) {
        close_handle(j, (uv_handle_t *)s); /* EOF, or the pipe failed */
    }
}

static void on_write(uv_write_t *w, int status)
{
    Job *j = w->data;
    /* EPIPE: the program never read its job (it died first); the verdict says so. */
    close_handle(j, (uv_handle_t *)&j->pipes[P_IN]);
}

static void on_drain(uv_timer_t *t)
{
    Job *j = t->data;
    /* Whatever still holds a pipe outlived the group kill (possible only
     * without namespaces or seccomp): stop waiting for it. */
    for (int i = 0; i < P_COUNT; i++) close_handle(j, (uv_handle_t *)&j->pipes[i]);
    close_handle(j, (uv_handle_t *)t);
}

static void on_timeout(uv_timer_t *t)
{
    Job *j = t->data;
    j->is_timeout = true;
    kill_group(j);
}

static void on_proc_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    Job *j = p->data;
    j->has_exited = true;
    /* The monitor exits only when we kill it, or when the program killed it
     * (possible only in rlimits mode). In the second case the group may
     * hold the program still, and its members keep the id from being
     * reused, so the kill below is still ours. */
    kill_group(j);
    close_handle(j, (uv_handle_t *)p);
    if (j->n_pipes_open == 0) {
        close_handle(j, (uv_handle_t *)&j->timer);
    } else {
        uv_timer_stop(&j->timer);
        uv_timer_start(&j->timer, on_drain, DRAIN_MS, 0);
    }
}

/* Starts j; on failure it finishes with SANDBOX_SETUP_FAILED (at once, or
 * once its handles are closed). */
static void start(Sandbox *sb, Job *j)
{
    clock_gettime(CLOCK_MONOTONIC, &j->t0);
    j->is_spawned = false;
    snprintf(j->dir, sizeof j->dir, "%s/rlhf-sandbox-XXXXXX", sb->tmp_dir);
    if (!mkdtemp(j->dir)) {
        snprintf(j->setup_why, sizeof j->setup_why, "mkdtemp in %.150s: %s", sb->tmp_dir,
                 strerror(errno));
        j->dir[0] = '\0';
        finish(j);
        return;
    }
    /* The program runs as cfg.uid when we are root; its directory is its own. */
    if (sb->is_root && chown(j->dir, (uid_t)sb->cfg.uid, (gid_t)sb->cfg.gid) != 0) {
        snprintf(j->setup_why, sizeof j->setup_why, "chown %.150s: %s", j->dir, strerror(errno));
        finish(j);
        return;
    }
    const size_t caps[P_COUNT] = {0, sb->cfg.output_cap, sb->cfg.output_cap, SIDE_CAP, STATUS_CAP};
    for (int i = 1; i < P_COUNT; i++) cap_init(&j->caps[i], caps[i]);
    uv_stdio_container_t io[P_COUNT];
    for (int i = 0; i < P_COUNT; i++) {
        CHECK(uv_pipe_init(&sb->loop, &j->pipes[i], 0) == 0);
        j->pipes[i].data = j;
        io[i].flags = UV_CREATE_PIPE | (i == P_IN ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
        io[i].data.stream = (uv_stream_t *)&j->pipes[i];
    }
    CHECK(uv_timer_init(&sb->loop, &j->timer) == 0);
    j->timer.data = j;
    /* The pipes, the timer and the process handle, which needs closing
     * even when uv_spawn fails. */
    j->n_open = P_COUNT + 2;
    j->n_pipes_open = P_COUNT;
    char                *env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};
    uv_process_options_t o = {.exit_cb = on_proc_exit,
                              .file = sb->exec_path,
                              .args = sb->argv,
                              .env = env,
                              .cwd = j->dir,
                              /* A new session: the group the timeout kills. */
                              .flags = UV_PROCESS_DETACHED,
                              .stdio_count = P_COUNT,
                              .stdio = io};
    j->proc.data = j;
    int rc = uv_spawn(&sb->loop, &j->proc, &o);
    if (rc != 0) {
        snprintf(j->setup_why, sizeof j->setup_why, "uv_spawn %.150s: %s", sb->exec_path,
                 uv_strerror(rc));
        j->has_exited = true;
        close_handle(j, (uv_handle_t *)&j->proc);
        for (int i = 0; i < P_COUNT; i++) close_handle(j, (uv_handle_t *)&j->pipes[i]);
        return;
    }
    j->is_spawned = true;
    j->next = sb->running;
    sb->running = j;
    sb->n_running++;
    atomic_fetch_add(&sb->st_running, 1);
    uv_buf_t b = uv_buf_init(j->payload, (unsigned)j->payload_len);
    j->wr.data = j;
    if (uv_write(&j->wr, (uv_stream_t *)&j->pipes[P_IN], &b, 1, on_write) != 0)
        close_handle(j, (uv_handle_t *)&j->pipes[P_IN]);
    for (int i = 1; i < P_COUNT; i++)
        if (uv_read_start((uv_stream_t *)&j->pipes[i], on_alloc, on_read) != 0)
            close_handle(j, (uv_handle_t *)&j->pipes[i]);
    uv_timer_start(&j->timer, on_timeout, (uint64_t)sb->cfg.timeout_ms, 0);
}

/* Starts queued jobs while there is room; when stopping, fails them all. */
static void pump(Sandbox *sb)
{
    for (;;) {
        pthread_mutex_lock(&sb->mu);
        bool is_stopping = sb->is_stopping;
        Job *j = NULL;
        if (sb->q_head && (is_stopping || sb->n_running < sb->cfg.workers)) {
            j = sb->q_head;
            sb->q_head = j->next;
            if (!sb->q_head) sb->q_tail = NULL;
            j->next = NULL;
        }
        /* Closed under the lock: a submitter sends to the handle only while
         * holding it and seeing no stop, so never to a closed handle. */
        if (!j && is_stopping && sb->n_running == 0 && !uv_is_closing((uv_handle_t *)&sb->async))
            uv_close((uv_handle_t *)&sb->async, NULL);
        pthread_mutex_unlock(&sb->mu);
        if (!j) return;
        atomic_fetch_sub(&sb->st_queued, 1);
        if (is_stopping) {
            j->is_cancelled = true;
            finish(j);
        } else {
            start(sb, j);
        }
    }
}

static void on_async(uv_async_t *a)
{
    Sandbox *sb = a->data;
    pthread_mutex_lock(&sb->mu);
    bool is_stopping = sb->is_stopping;
    pthread_mutex_unlock(&sb->mu);
    if (is_stopping)
        for (Job *j = sb->running; j; j = j->next) {
            j->is_cancelled = true;
            kill_group(j);
        }
    pump(sb);
}

static void loop_main(void *arg)
{
    Sandbox *sb = arg;
    /* SIGPIPE from writing a job to a program that died first stays with
     * this thread (write returns EPIPE); SIGINT and SIGTERM are the
     * program's main thread's business. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* The loop runs until sandbox_stop closes the async handle. */
    uv_run(&sb->loop, UV_RUN_DEFAULT);
}

/* ---- the API --------------------------------------------------------------------------------- */

int sandbox_submit(Sandbox *sb, const SandboxJob *job, SandboxDoneFn done, void *arg)
{
    CHECK(sb && job && job->code && done && job->n_tests >= 0);
    if (job->n_tests > SANDBOX_MAX_TESTS) return ERR_RANGE;
    size_t bytes = strlen(job->code);
    for (int i = 0; i < job->n_tests; i++) bytes += strlen(job->tests[i]);
    if (bytes > SANDBOX_MAX_JOB_BYTES) return ERR_RANGE;
    Job *j = job_new(sb, job, done, arg);
    pthread_mutex_lock(&sb->mu);
    bool is_stopping = sb->is_stopping;
    if (!is_stopping) {
        if (sb->q_tail)
            sb->q_tail->next = j;
        else
            sb->q_head = j;
        sb->q_tail = j;
        atomic_fetch_add(&sb->st_queued, 1);
        uv_async_send(&sb->async); /* under the lock: see pump */
    }
    pthread_mutex_unlock(&sb->mu);
    if (is_stopping) {
        /* The loop may be gone: the caller hears at once, on its own thread. */
        j->is_cancelled = true;
        clock_gettime(CLOCK_MONOTONIC, &j->t0);
        make_result(j);
        done(&j->res, arg);
        job_free(j);
    }
    return 0;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    bool            is_done;
    SandboxResult  *out;
} Waiter;

static void on_waited(SandboxResult *res, void *arg)
{
    Waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    *w->out = *res; /* out and err move to the waiter */
    w->is_done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int sandbox_run(Sandbox *sb, const SandboxJob *job, SandboxResult *out)
{
    memset(out, 0, sizeof *out);
    Waiter w = {.out = out};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = sandbox_submit(sb, job, on_waited, &w);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.is_done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

void sandbox_stop(Sandbox *sb)
{
    if (!sb) return;
    pthread_mutex_lock(&sb->mu);
    if (!sb->is_stopping && sb->is_thread_running) uv_async_send(&sb->async);
    sb->is_stopping = true;
    pthread_mutex_unlock(&sb->mu);
}

void sandbox_free(Sandbox **sbp)
{
    if (!sbp || !*sbp) return;
    Sandbox *sb = *sbp;
    sandbox_stop(sb);
    if (sb->is_thread_running) uv_thread_join(&sb->thread);
    if (sb->is_loop_init) {
        if (!sb->is_thread_running) uv_close((uv_handle_t *)&sb->async, NULL);
        uv_run(&sb->loop, UV_RUN_DEFAULT); /* close callbacks still due */
        if (uv_loop_close(&sb->loop) != 0) log_warn("sandbox: the loop still has handles");
    }
    pthread_mutex_destroy(&sb->mu);
    free(sb->python);
    free(sb->exec_path);
    free(sb->tmp_dir);
    free(sb->hide);
    free(sb);
    *sbp = NULL;
}

SandboxIsolation sandbox_isolation(const Sandbox *sb)
{
    return sb->iso;
}

const char *sandbox_isolation_detail(const Sandbox *sb)
{
    return sb->iso_detail;
}

bool sandbox_is_network_isolated(const Sandbox *sb)
{
    return sb->iso == SANDBOX_ISO_NAMESPACES || sb->iso == SANDBOX_ISO_SECCOMP;
}

int sandbox_workers(const Sandbox *sb)
{
    return sb->cfg.workers;
}

void sandbox_stats(const Sandbox *sb, SandboxStats *out)
{
    Sandbox *m = (Sandbox *)sb; /* atomics are only read */
    memset(out, 0, sizeof *out);
    out->runs = atomic_load(&m->st_runs);
    for (int i = 0; i < SANDBOX_VERDICT_COUNT; i++)
        out->verdicts[i] = atomic_load(&m->st_verdicts[i]);
    out->output_capped = atomic_load(&m->st_capped);
    out->queued = atomic_load(&m->st_queued);
    out->running = atomic_load(&m->st_running);
    out->run_seconds = (double)atomic_load(&m->st_run_ns) * 1e-9;
}

/* ---- start-up -------------------------------------------------------------------------------- */

static char *num(Sandbox *sb, int *k, long v)
{
    CHECK(*k < (int)(sizeof sb->nums / sizeof sb->nums[0]));
    snprintf(sb->nums[*k], sizeof sb->nums[*k], "%ld", v);
    return sb->nums[(*k)++];
}

/* rlhf-sandbox-exec's flags for mode iso; probe: --probe instead of the program. */
static void build_argv(Sandbox *sb, int iso, bool is_probe)
{
    const SandboxConfig *c = &sb->cfg;
    int                  n = 0, k = 0;
    char               **a = sb->argv;
    a[n++] = sb->exec_path;
    a[n++] = "--isolation";
    a[n++] = (char *)sandbox_iso_names[iso];
    a[n++] = "--cpu-s";
    a[n++] = num(sb, &k, c->cpu_s);
    a[n++] = "--mem-mb";
    a[n++] = num(sb, &k, c->mem_mb);
    a[n++] = "--file-mb";
    a[n++] = num(sb, &k, c->file_mb);
    a[n++] = "--tmp-mb";
    a[n++] = num(sb, &k, c->file_mb * 2 > 16 ? c->file_mb * 2 : 16);
    a[n++] = "--nproc";
    a[n++] = num(sb, &k, c->nproc);
    a[n++] = "--nofile";
    a[n++] = num(sb, &k, c->nofile);
    a[n++] = "--uid";
    a[n++] = num(sb, &k, c->uid);
    a[n++] = "--gid";
    a[n++] = num(sb, &k, c->gid);
    if (sb->hide) {
        a[n++] = "--hide";
        a[n++] = sb->hide;
    }
    if (is_probe) {
        a[n++] = "--probe";
    } else {
        a[n++] = "--status-fd";
        a[n++] = num(sb, &k, P_STATUS);
        a[n++] = "--hold";
        a[n++] = "--";
        a[n++] = sb->python;
        a[n++] = "-s"; /* no user site directory */
        a[n++] = "-B"; /* no .pyc files */
        a[n++] = "-c";
        a[n++] = (char *)RUNNER;
    }
    a[n] = NULL;
    CHECK(n < (int)(sizeof sb->argv / sizeof sb->argv[0]));
}

typedef struct {
    Capture out;
    int64_t exit_status;
    int     term_signal;
    int     n_open;
} Probe;

static void probe_close(uv_handle_t *h)
{
    ((Probe *)h->data)->n_open--;
}

static void probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[4096]; /* sandbox_new runs one probe at a time, before any thread */
    *buf = uv_buf_init(b, sizeof b);
}

static void probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    Probe *p = s->data;
    if (nread > 0) cap_add(&p->out, buf->base, (size_t)nread);
    if (nread < 0 && !uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, probe_close);
}

static void probe_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    Probe *p = proc->data;
    p->exit_status = exit_status;
    p->term_signal = term_signal;
    uv_close((uv_handle_t *)proc, probe_close);
}

/* Runs rlhf-sandbox-exec --probe on a loop of its own; fills sb->iso. */
static int probe(Sandbox *sb)
{
    build_argv(sb, sb->cfg.isolation, true);
    uv_loop_t    loop;
    uv_process_t proc;
    uv_pipe_t    out;
    Probe        p = {.n_open = 2};
    cap_init(&p.out, 4096);
    CHECK(uv_loop_init(&loop) == 0);
    CHECK(uv_pipe_init(&loop, &out, 0) == 0);
    out.data = proc.data = &p;
    uv_stdio_container_t io[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&out},
        {.flags = UV_INHERIT_FD, .data.fd = STDERR_FILENO}};
    char                *env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};
    uv_process_options_t o = {.exit_cb = probe_exit,
                              .file = sb->exec_path,
                              .args = sb->argv,
                              .env = env,
                              .cwd = sb->tmp_dir,
                              .flags = UV_PROCESS_DETACHED,
                              .stdio_count = 3,
                              .stdio = io};
    int                  rc = uv_spawn(&loop, &proc, &o);
    if (rc != 0) {
        log_error("sandbox: uv_spawn %s: %s", sb->exec_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&proc, probe_close);
        uv_close((uv_handle_t *)&out, probe_close);
    } else {
        CHECK(uv_read_start((uv_stream_t *)&out, probe_alloc, probe_read) == 0);
    }
    while (p.n_open > 0) uv_run(&loop, UV_RUN_ONCE);
    CHECK(uv_loop_close(&loop) == 0);
    int iso = sandbox_exec_parse_probe(p.out.buf);
    if (rc == 0 && (p.exit_status != 0 || p.term_signal || iso < 0)) {
        log_error("sandbox: %s --probe (isolation %s): exit %lld signal %d, said '%.200s'",
                  sb->exec_path, sandbox_iso_names[sb->cfg.isolation], (long long)p.exit_status,
                  p.term_signal, p.out.buf);
        rc = ERR_UNSUPPORTED;
    }
    if (rc == 0) {
        sb->iso = (SandboxIsolation)iso;
        snprintf(sb->iso_detail, sizeof sb->iso_detail, "%.*s", (int)strcspn(p.out.buf, "\n"),
                 p.out.buf);
    }
    free(p.out.buf);
    return rc ? ERR_UNSUPPORTED : 0;
}

static char *beside_self(const char *name)
{
    char    self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return NULL;
    *slash = '\0';
    size_t len = strlen(self) + 1 + strlen(name) + 1;
    char  *out = xmalloc(len);
    snprintf(out, len, "%s/%s", self, name);
    return out;
}

static int check_config(const SandboxConfig *c)
{
    struct {
        const char *name;
        long        v, lo, hi;
    } r[] = {{"workers", c->workers, 1, SANDBOX_MAX_WORKERS},
             {"timeout_ms", c->timeout_ms, 10, 3600000},
             {"cpu_s", c->cpu_s, 1, 3600},
             {"mem_mb", c->mem_mb, 16, 1 << 20},
             {"file_mb", c->file_mb, 0, 1 << 20},
             {"nproc", c->nproc, 1, 1 << 16},
             {"nofile", c->nofile, 8, 1 << 20},
             {"uid", c->uid, 1, 0x7ffffffe},
             {"gid", c->gid, 1, 0x7ffffffe},
             {"output_cap", (long)c->output_cap, 1, 1 << 30},
             {"isolation", c->isolation, 0, SANDBOX_ISO_COUNT - 1}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi) {
            log_error("sandbox_new: %s %ld, expected %ld..%ld", r[i].name, r[i].v, r[i].lo,
                      r[i].hi);
            return ERR_ARG;
        }
    if (c->hide && strchr(c->hide, '\n')) {
        log_error("sandbox_new: hide paths hold a newline");
        return ERR_ARG;
    }
    return 0;
}

Sandbox *sandbox_new(const SandboxConfig *cfg)
{
    if (check_config(cfg)) return NULL;
    Sandbox *sb = xcalloc(1, sizeof *sb);
    sb->cfg = *cfg;
    pthread_mutex_init(&sb->mu, NULL);
    sb->is_root = geteuid() == 0;
    sb->python = xstrdup(cfg->python && cfg->python[0] ? cfg->python : SANDBOX_PYTHON);
    sb->exec_path = cfg->exec_path && cfg->exec_path[0] ? xstrdup(cfg->exec_path)
                                                        : beside_self("rlhf-sandbox-exec");
    const char *tmp = cfg->tmp_dir && cfg->tmp_dir[0] ? cfg->tmp_dir : getenv("TMPDIR");
    sb->tmp_dir = xstrdup(tmp && tmp[0] ? tmp : "/tmp");
    sb->hide = cfg->hide && cfg->hide[0] ? xstrdup(cfg->hide) : NULL;
    sb->cfg.python = sb->python;
    sb->cfg.exec_path = sb->exec_path;
    sb->cfg.tmp_dir = sb->tmp_dir;
    sb->cfg.hide = sb->hide;
    if (!sb->exec_path || access(sb->exec_path, X_OK) != 0) {
        log_error("sandbox_new: the sandbox program '%s' cannot be run (%s): it is built as "
                  "rlhf-sandbox-exec beside rlhf-reward",
                  sb->exec_path ? sb->exec_path : "rlhf-sandbox-exec", strerror(errno));
        goto fail;
    }
    if (access(sb->python, X_OK) != 0) {
        log_error("sandbox_new: interpreter '%s': %s (install python3: "
                  "deploy/install-deps.sh does)",
                  sb->python, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (stat(sb->tmp_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("sandbox_new: temporary directory '%s' is not a directory", sb->tmp_dir);
        goto fail;
    }
    if (probe(sb)) goto fail;
    build_argv(sb, sb->iso, false);
    if (sandbox_is_network_isolated(sb))
        log_info("sandbox: %d workers, %s", cfg->workers, sb->iso_detail);
    else
        log_warn("sandbox: network not isolated: %s", sb->iso_detail);
    CHECK(uv_loop_init(&sb->loop) == 0);
    sb->is_loop_init = true;
    CHECK(uv_async_init(&sb->loop, &sb->async, on_async) == 0);
    sb->async.data = sb;
    int rc = uv_thread_create(&sb->thread, loop_main, sb);
    if (rc != 0) {
        log_error("sandbox_new: uv_thread_create: %s", uv_strerror(rc));
        goto fail;
    }
    sb->is_thread_running = true;
    /* One known job: a missing module, a read-only temp dir or limits too
     * tight for the interpreter show up now, once, not as a zero reward per run. */
    const char   *tests[] = {"assert x == 42"};
    SandboxJob    job = {.code = "x = 6 * 7\n", .tests = tests, .n_tests = 1};
    SandboxResult res;
    sandbox_run(sb, &job, &res);
    bool ok = res.verdict == SANDBOX_PASSED && res.n_passed == 1;
    if (!ok)
        log_error("sandbox_new: the check job ended %s (%s; stderr: %.300s)",
                  sandbox_verdict_name(res.verdict), res.why, res.err ? res.err : "");
    sandbox_result_free(&res);
    if (!ok) goto fail;
    return sb;
fail:
    sandbox_free(&sb);
    return NULL;
}
