#include "common/net/reactor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/base/err.h"
#include "common/base/log.h"

enum { REACTOR_MAX_SOCKETS = 8, REACTOR_MAX_TIMERS = 8 };
/* The due time of a disarmed timer. */
#define REACTOR_NEVER INT64_MAX

typedef struct {
    const char   *what;
    ReactorReadFn fn;
    void         *arg;
    int           burst;
} ReactorSocket;

typedef struct {
    const char    *what;
    ReactorTimerFn fn;
    void          *arg;
    int64_t        period_ms;
    int64_t        due_ms; /* on reactor_now_ms's clock; set when the loop starts */
    bool           fire_now;
    bool           is_set; /* due_ms set by reactor_set_timer since the loop or callback began */
} ReactorTimer;

struct Reactor {
    const char    *name;
    int            poll_ms;
    zmq_pollitem_t items[REACTOR_MAX_SOCKETS];
    ReactorSocket  socks[REACTOR_MAX_SOCKETS];
    int            n_socks;
    ReactorTimer   timers[REACTOR_MAX_TIMERS];
    int            n_timers;
    ReactorIdleFn  idle;
    void          *idle_arg;
    bool           stopping;
};

int64_t reactor_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Reactor *reactor_new(const char *name, int poll_ms)
{
    CHECK(name && poll_ms > 0);
    Reactor *r = xcalloc(1, sizeof *r);
    r->name = name;
    r->poll_ms = poll_ms;
    return r;
}

void reactor_free(Reactor **r)
{
    if (!r || !*r) return;
    free(*r);
    *r = NULL;
}

int reactor_add_socket(Reactor *r, void *zsock, const char *what, ReactorReadFn fn, void *arg,
                       int burst)
{
    CHECK(r && zsock && what && fn && burst >= 1);
    if (r->n_socks == REACTOR_MAX_SOCKETS) {
        log_error("%s: reactor: socket '%s': table full (%d)", r->name, what, REACTOR_MAX_SOCKETS);
        return ERR_RANGE;
    }
    r->items[r->n_socks] = (zmq_pollitem_t){.socket = zsock, .events = ZMQ_POLLIN};
    r->socks[r->n_socks++] = (ReactorSocket){what, fn, arg, burst};
    return 0;
}

int reactor_add_fd(Reactor *r, int fd, const char *what, ReactorReadFn fn, void *arg, int burst)
{
    CHECK(r && fd >= 0 && what && fn && burst >= 1);
    if (r->n_socks == REACTOR_MAX_SOCKETS) {
        log_error("%s: reactor: fd '%s': table full (%d)", r->name, what, REACTOR_MAX_SOCKETS);
        return ERR_RANGE;
    }
    r->items[r->n_socks] = (zmq_pollitem_t){.socket = NULL, .fd = fd, .events = ZMQ_POLLIN};
    r->socks[r->n_socks++] = (ReactorSocket){what, fn, arg, burst};
    return 0;
}

int reactor_add_timer(Reactor *r, const char *what, int64_t period_ms, bool fire_now,
                      ReactorTimerFn fn, void *arg)
{
    CHECK(r && what && fn);
    if (period_ms <= 0) return 0;
    if (r->n_timers == REACTOR_MAX_TIMERS) {
        log_error("%s: reactor: timer '%s': table full (%d)", r->name, what, REACTOR_MAX_TIMERS);
        return ERR_RANGE;
    }
    r->timers[r->n_timers++] = (ReactorTimer){
        .what = what, .fn = fn, .arg = arg, .period_ms = period_ms, .fire_now = fire_now};
    return 0;
}

int reactor_set_timer(Reactor *r, const char *what, int64_t delay_ms)
{
    CHECK(r && what);
    for (int i = 0; i < r->n_timers; i++) {
        ReactorTimer *t = &r->timers[i];
        if (strcmp(t->what, what) != 0) continue;
        t->due_ms = delay_ms < 0 ? REACTOR_NEVER : reactor_now_ms() + delay_ms;
        t->is_set = true;
        return 0;
    }
    log_error("%s: reactor_set_timer: no timer '%s'", r->name, what);
    return ERR_NOTFOUND;
}

int reactor_watch_socket(Reactor *r, void *zsock, bool is_on)
{
    CHECK(r && zsock);
    for (int i = 0; i < r->n_socks; i++) {
        if (r->items[i].socket != zsock) continue;
        r->items[i].events = is_on ? ZMQ_POLLIN : 0;
        r->items[i].revents = 0;
        return 0;
    }
    log_error("%s: reactor_watch_socket: socket not registered", r->name);
    return ERR_NOTFOUND;
}

void reactor_set_idle(Reactor *r, ReactorIdleFn fn, void *arg)
{
    CHECK(r);
    r->idle = fn;
    r->idle_arg = arg;
}

void reactor_stop(Reactor *r)
{
    CHECK(r);
    r->stopping = true;
}

/* How long the next poll may wait: until the earliest timer, at most
 * poll_ms, and not at all when the idle hook has more work. */
static long wait_ms(const Reactor *r, bool busy, int64_t now)
{
    if (busy) return 0;
    int64_t wait = r->poll_ms;
    for (int i = 0; i < r->n_timers; i++) {
        int64_t until = r->timers[i].due_ms - now;
        if (until < wait) wait = until < 0 ? 0 : until;
    }
    return (long)wait;
}

static int run_sockets(Reactor *r)
{
    for (int i = 0; i < r->n_socks && !r->stopping; i++) {
        if (!(r->items[i].revents & ZMQ_POLLIN)) continue;
        for (int k = 0; k < r->socks[i].burst && !r->stopping; k++) {
            int rc = r->socks[i].fn(r, r->socks[i].arg);
            if (rc < 0) return rc;
            if (rc == 0) break;
        }
    }
    return 0;
}

static int run_timers(Reactor *r)
{
    for (int i = 0; i < r->n_timers && !r->stopping; i++) {
        ReactorTimer *t = &r->timers[i];
        int64_t       now = reactor_now_ms();
        if (now < t->due_ms) continue;
        t->is_set = false;
        int rc = t->fn(r, t->arg);
        /* Measured after the callback, so a slow one does not fire again at
         * once; a callback that set its own timer keeps that setting. */
        if (!t->is_set) t->due_ms = reactor_now_ms() + t->period_ms;
        if (rc < 0) return rc;
    }
    return 0;
}

int reactor_run(Reactor *r, const atomic_int *stop)
{
    CHECK(r && stop);
    r->stopping = false;
    int64_t start = reactor_now_ms();
    for (int i = 0; i < r->n_timers; i++) {
        ReactorTimer *t = &r->timers[i];
        if (!t->is_set) t->due_ms = t->fire_now ? start : start + t->period_ms;
        t->is_set = false;
    }
    bool busy = false;
    int  rc = 0;
    while (rc == 0 && !r->stopping && !atomic_load(stop)) {
        if (zmq_poll(r->items, r->n_socks, wait_ms(r, busy, reactor_now_ms())) < 0) {
            if (zmq_errno() == EINTR) continue; /* a signal: look at the stop flag */
            log_error("%s: zmq_poll: %s", r->name, zmq_strerror(zmq_errno()));
            return ERR_IO;
        }
        if ((rc = run_sockets(r))) break;
        if ((rc = run_timers(r))) break;
        busy = false;
        if (r->idle && !r->stopping) {
            rc = r->idle(r, r->idle_arg);
            busy = rc > 0;
            if (rc > 0) rc = 0;
        }
    }
    return rc;
}
