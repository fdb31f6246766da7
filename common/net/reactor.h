/* reactor: the one event loop of the three services (learner, actor, reward
 * server). A service registers its ZeroMQ sockets, each with a handler called
 * when that socket is readable, and its timers (announce, status, lease
 * expiry, heartbeat), each with a period, then runs the loop until its stop
 * flag is set or a handler calls reactor_stop.
 *
 * The loop is zmq_poll over the registered sockets, so it is level-triggered:
 * a handler that leaves messages queued is called again on the next pass
 * (ZeroMQ's own file descriptors are edge-triggered, which is why the
 * services do not put them in libuv). Per pass, each ready socket's handler
 * is called until it reports no more messages or its burst limit is reached,
 * so one busy socket cannot starve the others. After the sockets, due timers
 * run, then the idle hook (the learner's training step): while the idle hook
 * reports more work, polling does not wait.
 *
 * Ownership: the reactor borrows sockets and handler arguments; it owns only
 * its tables. One thread: a reactor and its sockets belong to the thread that
 * runs it. Errors: a handler, timer or idle hook that returns a negative code
 * ends the loop and reactor_run returns that code; a failed zmq_poll (other
 * than EINTR, which only means "look at the stop flag") ends it with ERR_IO. */
#ifndef RLHF_REACTOR_H
#define RLHF_REACTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct Reactor Reactor;

/* Called when the socket is readable. Returns 1 after handling a message
 * (it may be called again at once), 0 when nothing more is waiting, or a
 * negative error code that ends the loop. */
typedef int (*ReactorReadFn)(Reactor *r, void *arg);
/* Called when a timer is due, and by the idle hook each pass. Returns 0, or
 * a negative error code that ends the loop. The idle hook returns 1 when it
 * has more work at once (the next poll does not wait). */
typedef int (*ReactorTimerFn)(Reactor *r, void *arg);
typedef int (*ReactorIdleFn)(Reactor *r, void *arg);

/* A ready reactor, or NULL (logged). poll_ms bounds every wait, so the stop
 * flag is seen within it. */
Reactor *reactor_new(const char *name, int poll_ms);
void     reactor_free(Reactor **r);

/* Registers zsock (a libzmq socket handle, borrowed) with its handler, called
 * at most burst times (>= 1) per pass. Returns 0, or ERR_RANGE when the table
 * is full. */
int reactor_add_socket(Reactor *r, void *zsock, const char *what, ReactorReadFn fn, void *arg,
                       int burst);
/* Registers a timer that first fires period_ms after the loop starts (or
 * now, when fire_now), then every period_ms after it last ran (no catch-up
 * bursts after a long pass). period_ms <= 0 registers nothing and returns
 * 0 (a disabled timer). Returns 0 or ERR_RANGE. */
int reactor_add_timer(Reactor *r, const char *what, int64_t period_ms, bool fire_now,
                      ReactorTimerFn fn, void *arg);
/* Registers a file descriptor (a pipe's read end, say; borrowed) like a
 * socket: fn is called when it is readable. Returns 0 or ERR_RANGE. */
int reactor_add_fd(Reactor *r, int fd, const char *what, ReactorReadFn fn, void *arg, int burst);
/* Re-arms the timer registered as what: it next fires delay_ms from now (0:
 * on the current or next pass), then every period_ms again; delay_ms < 0
 * disarms it until it is set again. Callable before reactor_run (which then
 * keeps the setting) and from any callback, the timer's own included (the
 * setting then wins over the period). Returns 0, or ERR_NOTFOUND (logged)
 * when no timer has that name. */
int reactor_set_timer(Reactor *r, const char *what, int64_t delay_ms);
/* Stops (is_on false) or resumes polling a registered socket: a paused
 * socket's messages wait in its queue. Returns 0 or ERR_NOTFOUND (logged). */
int reactor_watch_socket(Reactor *r, void *zsock, bool is_on);
/* The hook run once per pass after sockets and timers. */
void reactor_set_idle(Reactor *r, ReactorIdleFn fn, void *arg);

/* Runs until *stop is nonzero (a lock-free atomic_int: a signal handler may
 * store to it, and so may another thread) or reactor_stop is called.
 * Returns 0 or the first error as above. */
int reactor_run(Reactor *r, const atomic_int *stop);
/* Ends the loop after the current callback returns (from a callback). */
void reactor_stop(Reactor *r);

/* Milliseconds of a monotonic clock (the one the timers use). */
int64_t reactor_now_ms(void);

#endif
