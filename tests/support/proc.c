#include "tests/support/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/progress.h"

extern char **environ;

struct Proc {
    char  *name;
    char  *path; /* the file executed */
    char **argv; /* argc entries and a NULL */
    int    argc;
    int    argv_cap;
    char **env; /* "NAME=value", n_env entries */
    int    n_env;
    char  *log_path; /* NULL: captured or discarded */
    bool   is_quiet;
    int    out_fd; /* memfds holding the captured output, or -1 */
    int    err_fd;
    char   cmd[1024];
    pid_t  pid;    /* valid once started, until reaped */
    int    status; /* waitpid status once reaped */
    bool   is_started;
    bool   is_reaped;
    bool   is_lost; /* reaped by someone else: no status */
};

static volatile sig_atomic_t g_interrupted;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Rebuilds p->cmd: argv[0], then each argument quoted. */
static void format_cmd(Proc *p)
{
    size_t at = 0;
    p->cmd[0] = '\0';
    for (int i = 0; i < p->argc && at < sizeof p->cmd; i++) {
        int n = snprintf(p->cmd + at, sizeof p->cmd - at, i ? " '%s'" : "%s", p->argv[i]);
        if (n < 0) break;
        at += (size_t)n;
    }
}

static void add_arg(Proc *p, const char *arg)
{
    if (p->argc + 2 > p->argv_cap) {
        p->argv_cap = p->argv_cap ? 2 * p->argv_cap : 16;
        p->argv = xrealloc(p->argv, (size_t)p->argv_cap * sizeof *p->argv);
    }
    p->argv[p->argc++] = xstrdup(arg);
    p->argv[p->argc] = NULL;
    format_cmd(p);
}

static int new_capture(const char *what)
{
    int fd = memfd_create(what, MFD_CLOEXEC);
    CHECK(fd >= 0); /* out of memory or file descriptors: the test cannot go on */
    return fd;
}

static Proc *proc_alloc(const char *path, const char *name, const char *log_path, bool is_quiet)
{
    CHECK(path && *path);
    Proc *p = xcalloc(1, sizeof *p);
    p->path = xstrdup(path);
    if (!name) {
        const char *slash = strrchr(path, '/');
        name = slash ? slash + 1 : path;
    }
    p->name = xstrdup(name);
    p->log_path = log_path ? xstrdup(log_path) : NULL;
    p->is_quiet = !log_path && is_quiet;
    p->out_fd = p->err_fd = -1;
    if (!p->log_path && !p->is_quiet) {
        p->out_fd = new_capture("proc-stdout");
        p->err_fd = new_capture("proc-stderr");
    }
    return p;
}

static void add_env(Proc *p, const char *kv)
{
    CHECK(strchr(kv, '='));
    p->env = xrealloc(p->env, (size_t)(p->n_env + 1) * sizeof *p->env);
    p->env[p->n_env++] = xstrdup(kv);
}

Proc *proc_new(const char *path, const char *const *argv, const ProcOpts *opts)
{
    ProcOpts none = {0};
    if (!opts) opts = &none;
    Proc *p = proc_alloc(path, opts->name, opts->log_path, opts->is_quiet);
    for (int i = 0; argv && argv[i]; i++) add_arg(p, argv[i]);
    for (int i = 0; opts->env && opts->env[i]; i++) add_env(p, opts->env[i]);
    return p;
}

Proc *proc_clone(const Proc *src, const char *name, const char *log_path)
{
    Proc *p = proc_alloc(src->path, name, log_path, src->is_quiet);
    for (int i = 0; i < src->argc; i++) add_arg(p, src->argv[i]);
    for (int i = 0; i < src->n_env; i++) add_env(p, src->env[i]);
    return p;
}

void proc_free(Proc **pp)
{
    Proc *p = pp ? *pp : NULL;
    if (!p) return;
    proc_kill(p);
    for (int i = 0; i < p->argc; i++) free(p->argv[i]);
    free(p->argv);
    for (int i = 0; i < p->n_env; i++) free(p->env[i]);
    free(p->env);
    if (p->out_fd >= 0) close(p->out_fd);
    if (p->err_fd >= 0) close(p->err_fd);
    free(p->log_path);
    free(p->name);
    free(p->path);
    free(p);
    *pp = NULL;
}

void proc_arg(Proc *p, const char *fmt, ...)
{
    CHECK(!p->is_started || p->is_reaped);
    char    buf[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof buf);
    add_arg(p, buf);
}

/* The environment for the child: environ with p's variables in place of
 * those of their names (caller frees the array, not the strings). */
static char **child_env(const Proc *p)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = xcalloc(n + (size_t)p->n_env + 1, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool is_replaced = false;
        for (int j = 0; j < p->n_env && !is_replaced; j++) {
            size_t name_len = strcspn(p->env[j], "=");
            is_replaced = !strncmp(environ[i], p->env[j], name_len + 1);
        }
        if (!is_replaced) envp[k++] = environ[i];
    }
    for (int j = 0; j < p->n_env; j++) envp[k++] = p->env[j];
    return envp;
}

static void write_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

int proc_start(Proc *p)
{
    CHECK(p->argc > 0);
    CHECK(!proc_is_running(p));
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = -1, err = -1;
    if (p->log_path)
        out = err = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    else if (p->is_quiet)
        out = err = open("/dev/null", O_WRONLY | O_CLOEXEC);
    else
        out = p->out_fd, err = p->err_fd;
    if (in < 0 || out < 0) {
        fprintf(stderr, "proc_start: %s: open '%s': %s\n", p->name,
                in < 0        ? "/dev/null"
                : p->log_path ? p->log_path
                              : "/dev/null",
                strerror(errno));
        if (in >= 0) close(in);
        return ERR_IO;
    }
    char **envp = child_env(p);
    char   why[PATH_MAX + 64];
    snprintf(why, sizeof why, "proc: execve '%s': ", p->path);
    fflush(NULL); /* or buffered output would be written twice */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec: the test may
         * have other threads. The death signal is tied to the thread that
         * forked, so a Proc is started from the test's own thread. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(126); /* the test died before prctl */
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
        execve(p->path, p->argv, envp);
        int e = errno;
        write_all(2, why);
        write_all(2, strerrordesc_np(e));
        write_all(2, "\n");
        _exit(127);
    }
    int fork_errno = errno;
    close(in);
    if (out != p->out_fd) close(out);
    free(envp);
    if (pid < 0) {
        fprintf(stderr, "proc_start: %s: fork: %s\n", p->name, strerror(fork_errno));
        return ERR_IO;
    }
    /* Both sides set the group, so it exists before either can signal it;
     * EACCES here only means the child has exec'd already (and set it). */
    setpgid(pid, pid);
    p->pid = pid;
    p->status = 0;
    p->is_started = true;
    p->is_reaped = false;
    p->is_lost = false;
    return 0;
}

bool proc_is_running(Proc *p)
{
    if (!p->is_started || p->is_reaped) return false;
    int   st = 0;
    pid_t w = waitpid(p->pid, &st, WNOHANG);
    if (w == p->pid) {
        p->status = st;
        p->is_reaped = true;
        return false;
    }
    if (w < 0 && errno == ECHILD) {
        p->is_reaped = p->is_lost = true;
        return false;
    }
    return true;
}

int proc_wait(Proc *p, double timeout_s)
{
    if (!p->is_started) return ERR_ARG;
    double t0 = progress_now();
    int    nap_ms = 1;
    while (proc_is_running(p)) {
        if (progress_now() - t0 > timeout_s || g_interrupted) return ERR_TIMEOUT;
        sleep_ms(nap_ms);
        if (nap_ms < 20) nap_ms = nap_ms * 2 > 20 ? 20 : nap_ms * 2;
    }
    return 0;
}

void proc_signal(Proc *p, int sig)
{
    if (proc_is_running(p)) kill(-p->pid, sig);
}

void proc_kill(Proc *p)
{
    if (!proc_is_running(p)) return;
    kill(-p->pid, SIGKILL);
    int   st = 0;
    pid_t w;
    while ((w = waitpid(p->pid, &st, 0)) < 0 && errno == EINTR) {
    }
    p->status = st;
    p->is_reaped = true;
    p->is_lost = w < 0;
}

int proc_pause(Proc *p, double timeout_s)
{
    if (!proc_is_running(p)) return ERR_NOTFOUND;
    kill(-p->pid, SIGSTOP);
    double t0 = progress_now();
    for (;;) {
        int   st = 0;
        pid_t w = waitpid(p->pid, &st, WUNTRACED | WNOHANG);
        if (w == p->pid && WIFSTOPPED(st)) return 0;
        if (w == p->pid) {
            p->status = st;
            p->is_reaped = true;
            return ERR_NOTFOUND;
        }
        if (progress_now() - t0 > timeout_s) return ERR_TIMEOUT;
        sleep_ms(1);
    }
}

static bool has_status(const Proc *p)
{
    return p->is_started && p->is_reaped && !p->is_lost;
}

bool proc_exited_ok(const Proc *p)
{
    return has_status(p) && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

int proc_exit_code(const Proc *p)
{
    return has_status(p) && WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
}

int proc_term_signal(const Proc *p)
{
    return has_status(p) && WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0;
}

pid_t proc_pid(const Proc *p)
{
    return p->is_started ? p->pid : -1;
}

const char *proc_describe(const Proc *p, char *buf, size_t cap)
{
    if (!p->is_started)
        snprintf(buf, cap, "not started");
    else if (!p->is_reaped)
        snprintf(buf, cap, "running");
    else if (p->is_lost)
        snprintf(buf, cap, "exited, status unknown");
    else if (WIFEXITED(p->status))
        snprintf(buf, cap, "exit %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(buf, cap, "signal %d", WTERMSIG(p->status));
    else
        snprintf(buf, cap, "status 0x%x", p->status);
    return buf;
}

const char *proc_name(const Proc *p)
{
    return p->name;
}

const char *proc_log_path(const Proc *p)
{
    return p->log_path;
}

const char *proc_cmd(const Proc *p)
{
    return p->cmd;
}

/* The whole of a capture file, NUL-terminated. Returns 0, ERR_RANGE past
 * PROC_OUTPUT_MAX or ERR_IO (both printed). */
static int read_fd(const Proc *p, int fd, char **text)
{
    *text = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        fprintf(stderr, "proc: %s: fstat of its output: %s\n", p->name, strerror(errno));
        return ERR_IO;
    }
    if ((uint64_t)sb.st_size > PROC_OUTPUT_MAX) {
        fprintf(stderr, "proc: %s: %lld bytes of output, more than the %zu allowed\n", p->name,
                (long long)sb.st_size, PROC_OUTPUT_MAX);
        return ERR_RANGE;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char  *buf = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* shorter than it was: take what is there */
        got += (size_t)r;
    }
    buf[got] = '\0';
    *text = buf;
    return 0;
}

/* One stream of p's output (the log for either). Returns 0, ERR_NOTFOUND
 * when there is none, or the read error. */
static int read_stream(const Proc *p, bool is_err, char **text)
{
    *text = NULL;
    if (p->log_path) {
        /* The log of a running program grows while it is read: take what
         * it holds now (read_fd), not fileio_read_all, which refuses a file
         * that grows under it. */
        int fd = open(p->log_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
        int rc = read_fd(p, fd, text);
        close(fd);
        return rc;
    }
    if (p->is_quiet) return ERR_NOTFOUND;
    return read_fd(p, is_err ? p->err_fd : p->out_fd, text);
}

char *proc_read_out(const Proc *p)
{
    char *text;
    read_stream(p, false, &text);
    return text;
}

char *proc_read_err(const Proc *p)
{
    char *text;
    read_stream(p, true, &text);
    return text;
}

bool proc_output_has(const Proc *p, const char *needle)
{
    char *text = proc_read_out(p);
    bool  found = text && strstr(text, needle);
    free(text);
    if (!found && !p->log_path) {
        text = proc_read_err(p);
        found = text && strstr(text, needle);
        free(text);
    }
    return found;
}

bool proc_wait_output(Proc *p, const char *needle, double timeout_s)
{
    double t0 = progress_now();
    for (;;) {
        if (proc_output_has(p, needle)) return true;
        if (!proc_is_running(p) || progress_now() - t0 > timeout_s || g_interrupted) return false;
        sleep_ms(20);
    }
}

/* The start of text's last `lines` lines. */
static const char *tail_of(const char *text, int lines)
{
    size_t len = strlen(text), at = len;
    int    n = 0;
    while (at > 0 && n < lines) {
        at--;
        if (text[at] == '\n' && at + 1 < len) n++;
    }
    if (n == lines) at++;
    return text + at;
}

static void print_tail(const char *head, const char *text, int tail_lines)
{
    const char *tail = tail_of(text, tail_lines);
    size_t      len = strlen(tail);
    fprintf(stderr, "%s%s%s", head, tail, len && tail[len - 1] != '\n' ? "\n" : "");
}

void proc_report(const Proc *p, int tail_lines)
{
    char st[64], head[PATH_MAX + 256];
    proc_describe(p, st, sizeof st);
    for (int k = 0; k < (p->log_path ? 1 : 2); k++) {
        char *text = NULL;
        read_stream(p, k == 1, &text);
        if (!text) continue;
        if (p->log_path)
            snprintf(head, sizeof head, "  ---- %s (%s, %s), last lines:\n", p->name, p->log_path,
                     st);
        else
            snprintf(head, sizeof head, "  ---- %s %s (%s), last lines:\n", p->name,
                     k ? "stderr" : "stdout", st);
        print_tail(head, text, tail_lines);
        free(text);
    }
}

int proc_run(const char *path, const char *const *argv, const ProcOpts *opts, double timeout_s,
             ProcResult *r)
{
    memset(r, 0, sizeof *r);
    r->status = -1;
    Proc *p = proc_new(path, argv, opts);
    snprintf(r->cmd, sizeof r->cmd, "%s", p->cmd);
    double t0 = progress_now();
    int    rc = proc_start(p);
    if (rc == 0 && proc_wait(p, timeout_s) != 0) {
        proc_kill(p);
        r->is_timeout = true;
        rc = ERR_TIMEOUT;
    }
    r->seconds = progress_now() - t0;
    r->status = proc_exit_code(p);
    r->signal = proc_term_signal(p);
    if (!p->is_quiet) {
        int rc_out = read_stream(p, false, &r->out);
        int rc_err = read_stream(p, true, &r->err);
        /* A log not yet created is empty output, not a failure. */
        if (rc == 0 && rc_out != 0 && rc_out != ERR_NOTFOUND) rc = rc_out;
        if (rc == 0 && rc_err != 0 && rc_err != ERR_NOTFOUND) rc = rc_err;
    }
    if (!r->out) r->out = xstrdup("");
    if (!r->err) r->err = xstrdup("");
    proc_free(&p);
    return rc;
}

void proc_result_free(ProcResult *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

void proc_result_report(const ProcResult *r, int tail_lines)
{
    if (!r) return;
    char status[64];
    if (r->is_timeout)
        snprintf(status, sizeof status, "killed after %.1f s", r->seconds);
    else if (r->signal)
        snprintf(status, sizeof status, "signal %d", r->signal);
    else
        snprintf(status, sizeof status, "%d", r->status);
    fprintf(stderr, "    command: %s\n    exit: %s\n", r->cmd, status);
    print_tail("    stdout, last lines:\n", r->out ? r->out : "", tail_lines);
    print_tail("    stderr, last lines:\n", r->err ? r->err : "", tail_lines);
}

static void on_interrupt(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

int proc_catch_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "proc_catch_interrupts: sigaction: %s\n", strerror(errno));
        return ERR_IO;
    }
    return 0;
}

bool proc_interrupted(void)
{
    return g_interrupted;
}

void proc_build_dir(char *out, size_t cap)
{
    CHECK(cap > 1);
    const char *env = getenv("RLHF_BUILD_DIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    /* The runner lives in the build directory next to the programs. */
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(out, cap, "build");
}
