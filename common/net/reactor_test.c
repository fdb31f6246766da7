#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/net/reactor.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    void   *rx;
    int     calls;    /* handler calls */
    int     received; /* messages taken */
    int     per_pass_max;
    int     this_pass;
    int     ticks;
    int     idle_calls;
    int     idle_work; /* passes the idle hook still reports work for */
    int     stop_after;
    int     fail_after;
    int64_t first_tick_ms;
} Probe;

static int on_read(Reactor *r, void *arg)
{
    Probe *p = arg;
    p->calls++;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, p->rx, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    zmq_msg_close(&m);
    p->received++;
    p->this_pass++;
    if (p->this_pass > p->per_pass_max) p->per_pass_max = p->this_pass;
    if (p->stop_after && p->received == p->stop_after) reactor_stop(r);
    if (p->fail_after && p->received == p->fail_after) return ERR_FORMAT;
    return 1;
}

static int on_tick(Reactor *r, void *arg)
{
    Probe *p = arg;
    if (p->ticks++ == 0) p->first_tick_ms = reactor_now_ms();
    return 0;
}

/* Re-arms itself 30 ms ahead twice, then disarms itself. */
static int on_rearm(Reactor *r, void *arg)
{
    Probe *p = arg;
    if (p->ticks++ == 0) p->first_tick_ms = reactor_now_ms();
    CHECK(reactor_set_timer(r, "rearm", p->ticks < 3 ? 30 : -1) == 0);
    return 0;
}

static int on_idle(Reactor *r, void *arg)
{
    Probe *p = arg;
    p->idle_calls++;
    p->this_pass = 0;
    if (p->idle_work > 0) {
        p->idle_work--;
        return 1;
    }
    return 0;
}

static int on_pipe(Reactor *r, void *arg)
{
    const int *fds = arg;
    char       c;
    CHECK(read(fds[0], &c, 1) == 1);
    reactor_stop(r);
    return 0;
}

static void *pipe_writer(void *arg)
{
    const int *fds = arg;
    usleep(50 * 1000);
    CHECK(write(fds[1], "x", 1) == 1);
    return NULL;
}

typedef struct {
    atomic_int *stop;
    int         after_ms;
} Stopper;

static void *stopper(void *arg)
{
    Stopper *s = arg;
    usleep((useconds_t)s->after_ms * 1000);
    atomic_store(s->stop, 1);
    return NULL;
}

/* Runs r with *stop cleared and set again by another thread after_ms
 * later; writes the start time to *t0 and the run's length to *dt.
 * Returns what reactor_run returned. */
static int run_stopped_after(Reactor *r, atomic_int *stop, int after_ms, int64_t *t0, int64_t *dt)
{
    atomic_store(stop, 0);
    Stopper   s = {stop, after_ms};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, stopper, &s) == 0);
    *t0 = reactor_now_ms();
    int rc = reactor_run(r, stop);
    *dt = reactor_now_ms() - *t0;
    pthread_join(th, NULL);
    return rc;
}

static void send_n(void *tx, int n)
{
    for (int i = 0; i < n; i++) CHECK(zmq_send(tx, "x", 1, 0) == 1);
}

int reactor_selftest(bool verbose)
{
    void *ctx = zmq_ctx_new();
    void *rx = zmq_socket(ctx, ZMQ_PAIR), *tx = zmq_socket(ctx, ZMQ_PAIR);
    CHECK(zmq_bind(rx, "inproc://reactor-test") == 0);
    CHECK(zmq_connect(tx, "inproc://reactor-test") == 0);
    atomic_int stop = 0;

    /* Bursts: 7 queued messages, at most 3 per pass, all taken; reactor_stop
     * from the handler ends the loop at once. */
    {
        Probe    p = {.rx = rx, .stop_after = 7};
        Reactor *r = reactor_new("reactor_test", 50);
        EXPECT(reactor_add_socket(r, rx, "rx", on_read, &p, 3) == 0, "add_socket");
        reactor_set_idle(r, on_idle, &p);
        send_n(tx, 7);
        int rc = reactor_run(r, &stop);
        EXPECT(rc == 0, "run returned %d (%s), expected 0", rc, err_str(rc));
        EXPECT(p.received == 7, "received %d, expected 7", p.received);
        EXPECT(p.per_pass_max == 3, "at most %d per pass, expected the burst limit 3",
               p.per_pass_max);
        EXPECT(p.idle_calls >= 2, "idle hook ran %d times, expected >= 2 (once per pass)",
               p.idle_calls);
        reactor_free(&r);
        EXPECT(r == NULL, "reactor_free sets the pointer to NULL");
        reactor_free(&r);
    }
    /* Timers: a 40 ms timer over 330 ms fires 8 times (+-2) and first after
     * its period; a fire_now timer fires at once; a disabled one never; the
     * stop flag set by another thread ends the loop within poll_ms. */
    {
        Probe    p = {.rx = rx}, q = {.rx = rx}, z = {.rx = rx};
        Reactor *r = reactor_new("reactor_test", 20);
        EXPECT(reactor_add_socket(r, rx, "rx", on_read, &p, 4) == 0, "add_socket");
        EXPECT(reactor_add_timer(r, "tick", 40, false, on_tick, &p) == 0, "add_timer");
        EXPECT(reactor_add_timer(r, "now", 1000, true, on_tick, &q) == 0, "add_timer now");
        EXPECT(reactor_add_timer(r, "off", 0, true, on_tick, &z) == 0, "add_timer disabled");
        int64_t t0, dt;
        int     rc = run_stopped_after(r, &stop, 330, &t0, &dt);
        EXPECT(rc == 0, "run returned %d", rc);
        EXPECT(p.ticks >= 6 && p.ticks <= 9, "40 ms timer fired %d times in %lld ms, expected 6..9",
               p.ticks, (long long)dt);
        EXPECT(p.first_tick_ms - t0 >= 38, "first tick after %lld ms, expected >= its period",
               (long long)(p.first_tick_ms - t0));
        EXPECT(q.ticks == 1, "fire_now timer fired %d times, expected 1", q.ticks);
        EXPECT(z.ticks == 0, "disabled timer fired %d times", z.ticks);
        EXPECT(dt >= 330 && dt < 330 + 200, "loop ended %lld ms after start, stop set at 330",
               (long long)dt);
        if (verbose) printf("  timer: %d ticks in %lld ms\n", p.ticks, (long long)dt);
        reactor_free(&r);
    }
    /* Idle work: while the hook reports work the poll does not wait (50
     * passes in far less than 50 x poll_ms); a handler error ends the loop
     * with that error. */
    {
        Probe    p = {.rx = rx, .idle_work = 50, .fail_after = 2};
        Reactor *r = reactor_new("reactor_test", 100);
        reactor_set_idle(r, on_idle, &p);
        int64_t t0, dt;
        int     rc = run_stopped_after(r, &stop, 400, &t0, &dt);
        EXPECT(rc == 0, "run returned %d", rc);
        EXPECT(p.idle_calls >= 51 && p.idle_calls <= 51 + 6,
               "idle ran %d times in %lld ms: 51 busy passes, then one per 100 ms wait",
               p.idle_calls, (long long)dt);
        EXPECT(reactor_add_socket(r, rx, "rx", on_read, &p, 8) == 0, "add_socket");
        atomic_store(&stop, 0);
        send_n(tx, 3);
        rc = reactor_run(r, &stop);
        EXPECT(rc == ERR_FORMAT, "handler error: run returned %d, expected ERR_FORMAT", rc);
        EXPECT(p.received == 2, "loop ended after message %d, expected 2", p.received);
        reactor_free(&r);
    }
    /* reactor_set_timer: a setting made before the run is kept (fires at
     * once, not after its 1000 ms period); a callback re-arming its own timer
     * wins over the period; a disarmed timer stays quiet. A paused socket is
     * not read; resumed, its queued messages are. */
    {
        Probe    p = {.rx = rx}, q = {.rx = rx};
        Reactor *r = reactor_new("reactor_test", 20);
        EXPECT(reactor_add_socket(r, rx, "rx", on_read, &q, 8) == 0, "add_socket");
        EXPECT(reactor_add_timer(r, "rearm", 1000, false, on_rearm, &p) == 0, "add_timer");
        EXPECT(reactor_set_timer(r, "rearm", 0) == 0, "set_timer before the run");
        EXPECT(reactor_set_timer(r, "missing", 0) == ERR_NOTFOUND,
               "set_timer of an unknown timer: expected ERR_NOTFOUND");
        EXPECT(reactor_watch_socket(r, rx, false) == 0, "pause the socket");
        send_n(tx, 2);
        int64_t t0, dt;
        int     rc = run_stopped_after(r, &stop, 250, &t0, &dt);
        EXPECT(rc == 0, "run returned %d", rc);
        EXPECT(p.first_tick_ms - t0 < 20, "first tick after %lld ms, expected at once (set to 0)",
               (long long)(p.first_tick_ms - t0));
        EXPECT(p.ticks == 3, "re-armed timer fired %d times in 250 ms, expected 3 (then disarmed)",
               p.ticks);
        EXPECT(q.received == 0, "paused socket: %d messages taken, expected 0", q.received);
        EXPECT(reactor_watch_socket(r, rx, true) == 0, "resume the socket");
        q.stop_after = 2;
        atomic_store(&stop, 0);
        rc = reactor_run(r, &stop);
        EXPECT(rc == 0 && q.received == 2, "resumed socket: %d messages taken, expected 2",
               q.received);
        reactor_free(&r);
    }
    /* A pipe registered with reactor_add_fd: a byte written by another
     * thread wakes the loop at once (poll_ms is 5 s) and its handler ends it. */
    {
        int fds[2];
        CHECK(pipe(fds) == 0);
        Reactor *r = reactor_new("reactor_test", 5000);
        EXPECT(reactor_add_fd(r, fds[0], "pipe", on_pipe, fds, 1) == 0, "add_fd");
        atomic_store(&stop, 0);
        pthread_t th;
        CHECK(pthread_create(&th, NULL, pipe_writer, fds) == 0);
        int64_t t0 = reactor_now_ms();
        int     rc = reactor_run(r, &stop);
        int64_t dt = reactor_now_ms() - t0;
        pthread_join(th, NULL);
        EXPECT(rc == 0 && dt < 2000, "pipe: run returned %d after %lld ms, expected 0 after ~50",
               rc, (long long)dt);
        reactor_free(&r);
        close(fds[0]);
        close(fds[1]);
    }
    /* A full table is refused with ERR_RANGE. */
    {
        Probe    p = {.rx = rx};
        Reactor *r = reactor_new("reactor_test", 10);
        int      rc = 0, n = 0;
        fileio_capture_begin();
        while (rc == 0 && n < 64) {
            rc = reactor_add_timer(r, "t", 10, false, on_tick, &p);
            n++;
        }
        char *log = fileio_capture_end(verbose);
        EXPECT(rc == ERR_RANGE && n > 1, "timer %d refused with %d, expected ERR_RANGE", n, rc);
        EXPECT(strstr(log, "timer 't': table full") != NULL, "the refusal is logged: '%s'", log);
        free(log);
        reactor_free(&r);
    }
    zmq_close(tx);
    zmq_close(rx);
    zmq_ctx_term(ctx);
    return expect_end();
}
