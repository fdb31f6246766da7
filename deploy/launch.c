#include "deploy/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/err.h"
#include "common/base/log.h"

#define LAUNCH_MAX 64

typedef struct Launch Launch;

typedef struct {
    Launch      *l;
    int          index;
    uv_process_t proc;
    uv_timer_t   restart_timer;
    bool         running;
    bool         proc_open;  /* proc handle needs closing */
    double       started_at; /* loop time in s */
    double       backoff_s;
    int          log_fd;
} Child;

struct Launch {
    uv_loop_t           loop;
    const LaunchConfig *cfg;
    LaunchChild        *spec;
    int                 n;
    Child               child[LAUNCH_MAX];
    uv_signal_t         sigint, sigterm;
    uv_timer_t          status_timer, kill_timer;
    bool                stopping;
    int                 n_signals;
    int                 result;
    double              t0;
    LaunchReport       *report;
};

static double loop_s(Launch *l)
{
    return (double)uv_now(&l->loop) / 1000.0;
}

static void spawn_child(Child *c);

static void on_proc_closed(uv_handle_t *h)
{
    Child *c = h->data;
    c->proc_open = false;
}

static void stop_all(Launch *l, int sig)
{
    for (int i = 0; i < l->n; i++) {
        Child *c = &l->child[i];
        uv_timer_stop(&c->restart_timer);
        if (c->running) {
            int rc = uv_process_kill(&c->proc, sig);
            if (rc != 0 && rc != UV_ESRCH)
                log_warn("launch: kill %s: %s", l->spec[i].name, uv_strerror(rc));
        }
    }
}

static bool any_running(Launch *l)
{
    for (int i = 0; i < l->n; i++)
        if (l->child[i].running) return true;
    return false;
}

static void close_loop_handles(Launch *l)
{
    uv_signal_stop(&l->sigint);
    uv_signal_stop(&l->sigterm);
    uv_timer_stop(&l->status_timer);
    uv_timer_stop(&l->kill_timer);
    uv_close((uv_handle_t *)&l->sigint, NULL);
    uv_close((uv_handle_t *)&l->sigterm, NULL);
    uv_close((uv_handle_t *)&l->status_timer, NULL);
    uv_close((uv_handle_t *)&l->kill_timer, NULL);
    for (int i = 0; i < l->n; i++) {
        uv_timer_stop(&l->child[i].restart_timer);
        uv_close((uv_handle_t *)&l->child[i].restart_timer, NULL);
    }
}

static void on_kill_timer(uv_timer_t *t)
{
    Launch *l = t->data;
    log_warn("launch: children still running after %.1f s; sending SIGKILL", l->cfg->grace_s);
    stop_all(l, SIGKILL);
}

static void begin_shutdown(Launch *l, int result)
{
    if (l->stopping) return;
    l->stopping = true;
    l->result = result;
    stop_all(l, SIGTERM);
    if (any_running(l))
        uv_timer_start(&l->kill_timer, on_kill_timer, (uint64_t)(l->cfg->grace_s * 1000), 0);
    else
        close_loop_handles(l);
}

static void on_restart_timer(uv_timer_t *t)
{
    Child *c = t->data;
    if (!c->l->stopping) spawn_child(c);
}

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal)
{
    Child       *c = p->data;
    Launch      *l = c->l;
    LaunchChild *s = &l->spec[c->index];
    c->running = false;
    uv_close((uv_handle_t *)p, on_proc_closed);
    int code = term_signal ? 128 + term_signal : (int)status;
    l->report->last_status[c->index] = code;
    double lived = loop_s(l) - c->started_at;
    if (l->stopping) {
        if (!any_running(l)) close_loop_handles(l);
        return;
    }
    if (code == 0 && s->is_main) {
        log_info("launch: %s finished", s->name);
        begin_shutdown(l, 0);
        return;
    }
    if (!term_signal && code == LAUNCH_EXIT_USAGE) {
        /* The same command line would be refused again: no restart. */
        log_error("launch: %s refused its command line (status %d); not restarting it", s->name,
                  code);
        begin_shutdown(l, ERR_ARG);
        return;
    }
    if (term_signal)
        log_warn("launch: %s killed by signal %d after %.1f s", s->name, term_signal, lived);
    else
        log_warn("launch: %s exited with status %d after %.1f s", s->name, code, lived);
    if (l->report->restarts[c->index] >= l->cfg->max_restarts) {
        log_error("launch: %s failed %d times; giving up", s->name,
                  l->report->restarts[c->index] + 1);
        begin_shutdown(l, ERR_RANGE);
        return;
    }
    /* Back-off doubles per quick crash and resets after a long life. */
    c->backoff_s = lived > 30.0 ? 0.5 : (c->backoff_s < 0.5 ? 0.5 : c->backoff_s * 2);
    if (c->backoff_s > 8.0) c->backoff_s = 8.0;
    l->report->restarts[c->index]++;
    log_info("launch: restarting %s in %.1f s (restart %d)", s->name, c->backoff_s,
             l->report->restarts[c->index]);
    uv_timer_start(&c->restart_timer, on_restart_timer, (uint64_t)(c->backoff_s * 1000), 0);
}

static void spawn_child(Child *c)
{
    Launch              *l = c->l;
    LaunchChild         *s = &l->spec[c->index];
    uv_process_options_t o;
    uv_stdio_container_t io[3];
    memset(&o, 0, sizeof o);
    io[0].flags = UV_IGNORE;
    if (c->log_fd >= 0) {
        io[1].flags = UV_INHERIT_FD;
        io[1].data.fd = c->log_fd;
        io[2].flags = UV_INHERIT_FD;
        io[2].data.fd = c->log_fd;
    } else {
        io[1].flags = UV_INHERIT_FD;
        io[1].data.fd = 1;
        io[2].flags = UV_INHERIT_FD;
        io[2].data.fd = 2;
    }
    o.file = s->argv[0];
    o.args = s->argv;
    o.exit_cb = on_child_exit;
    o.stdio = io;
    o.stdio_count = 3;
    /* The process must have finished closing from a previous run. */
    if (c->proc_open) {
        uv_timer_start(&c->restart_timer, on_restart_timer, 50, 0);
        return;
    }
    c->proc.data = c;
    int rc = uv_spawn(&l->loop, &c->proc, &o);
    if (rc != 0) {
        log_error("launch: spawn %s (%s): %s", s->name, s->argv[0], uv_strerror(rc));
        c->proc_open = true;
        uv_close((uv_handle_t *)&c->proc, on_proc_closed);
        begin_shutdown(l, ERR_IO);
        return;
    }
    c->proc_open = true;
    c->running = true;
    c->started_at = loop_s(l);
    log_info("launch: started %s (pid %d)", s->name, c->proc.pid);
}

static void on_signal(uv_signal_t *h, int signum)
{
    Launch *l = h->data;
    if (++l->n_signals > 1) {
        log_warn("launch: second signal; killing every child");
        stop_all(l, SIGKILL);
        return;
    }
    log_info("launch: signal %d; shutting down the cluster", signum);
    begin_shutdown(l, ERR_AGAIN);
}

static void on_status(uv_timer_t *t)
{
    Launch *l = t->data;
    if (l->cfg->status) l->cfg->status(l->cfg->status_ctx, loop_s(l) - l->t0);
}

int launch_run(const LaunchConfig *cfg, LaunchChild *children, int n, LaunchReport *report)
{
    CHECK(n > 0 && n <= LAUNCH_MAX);
    Launch *l = xcalloc(1, sizeof *l);
    memset(report, 0, sizeof *report);
    l->cfg = cfg;
    l->spec = children;
    l->n = n;
    l->report = report;
    int rc = uv_loop_init(&l->loop);
    if (rc) {
        log_error("launch: uv_loop_init: %s", uv_strerror(rc));
        free(l);
        return ERR_IO;
    }
    uv_signal_init(&l->loop, &l->sigint);
    uv_signal_init(&l->loop, &l->sigterm);
    l->sigint.data = l->sigterm.data = l;
    uv_signal_start(&l->sigint, on_signal, SIGINT);
    uv_signal_start(&l->sigterm, on_signal, SIGTERM);
    uv_timer_init(&l->loop, &l->status_timer);
    uv_timer_init(&l->loop, &l->kill_timer);
    l->status_timer.data = l->kill_timer.data = l;
    l->t0 = loop_s(l);
    for (int i = 0; i < n; i++) {
        Child *c = &l->child[i];
        c->l = l;
        c->index = i;
        c->log_fd = -1;
        uv_timer_init(&l->loop, &c->restart_timer);
        c->restart_timer.data = c;
        if (children[i].log_path) {
            c->log_fd = open(children[i].log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (c->log_fd < 0) {
                log_error("launch: log file '%s' for %s: %s", children[i].log_path,
                          children[i].name, strerror(errno));
                l->result = ERR_IO;
            }
        }
    }
    if (l->result == 0) {
        for (int i = 0; i < n && !l->stopping; i++) spawn_child(&l->child[i]);
        if (cfg->status_every_s > 0)
            uv_timer_start(&l->status_timer, on_status, 100,
                           (uint64_t)(cfg->status_every_s * 1000));
    } else {
        close_loop_handles(l);
    }
    uv_run(&l->loop, UV_RUN_DEFAULT);
    int result = l->result;
    for (int i = 0; i < n; i++)
        if (l->child[i].log_fd >= 0) close(l->child[i].log_fd);
    if (uv_loop_close(&l->loop) != 0) log_warn("launch: loop closed with handles open");
    free(l);
    return result;
}
