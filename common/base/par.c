#include "common/base/par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PAR_MAX_THREADS 64

static struct {
    pthread_once_t  once;
    pthread_mutex_t busy; /* held by the caller of a parallel par_for */
    pthread_mutex_t mu;
    pthread_cond_t  wake, done;
    int             n_threads;
    /* Bumped (under mu, after the job's fields are set) for each job; read
     * without the lock by spinning workers. */
    atomic_ulong generation;
    atomic_int   pending; /* worker ranges not yet finished */
    ParFn        fn;
    void        *ctx;
    size_t       n;
    bool         is_hot; /* the job's workers spin afterwards (par_for_hot) */
} g_pool = {.once = PTHREAD_ONCE_INIT,
            .busy = PTHREAD_MUTEX_INITIALIZER,
            .mu = PTHREAD_MUTEX_INITIALIZER,
            .wake = PTHREAD_COND_INITIALIZER,
            .done = PTHREAD_COND_INITIALIZER};

static __thread bool t_in_worker;

static void range_of(size_t n, int parts, int i, size_t *b, size_t *e)
{
    *b = n * (size_t)i / (size_t)parts;
    *e = n * (size_t)(i + 1) / (size_t)parts;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Spinning pays only while every thread of the pool has a core. When a
 * spinner finds it was descheduled (a gap in its own clock), or the caller
 * finds a worker that is neither asleep nor started on its share, other
 * work is competing for the cores: hot calls then stop spinning for
 * PAR_BACKOFF_US, so the pool does not take that work's time. The
 * thresholds leave room for a virtual machine's own jitter: at 50 us (gap)
 * and 20 us (start) they fired without any competing work on a 2-vCPU
 * machine and kept the pool off its spin for a second at a time, and
 * SmolLM2 decoding ran at 76-88 tokens/s at batch 1 instead of 125-175. */
#define PAR_BACKOFF_US 100000
#define PAR_GAP_US 200            /* a pause in a spin loop this long means it was descheduled */
#define PAR_START_US 200          /* a runnable worker starts a job within this */
static atomic_llong g_calm_until; /* now_us() before which hot calls do not spin */
static atomic_int   g_started;    /* workers that took the current job */
static atomic_int   g_sleepers;   /* workers blocked on the condition variable */

static bool spin_allowed(void)
{
    return now_us() >= atomic_load_explicit(&g_calm_until, memory_order_relaxed);
}

static void back_off(int64_t t)
{
    atomic_store_explicit(&g_calm_until, t + PAR_BACKOFF_US, memory_order_relaxed);
}

/* Spins (with the CPU's pause hint) until the job's generation differs from
 * seen (is_caller false: a worker waiting for the next job) or every worker
 * has finished (is_caller true), for at most PAR_HOT_US. Returns whether
 * that happened; false after a timeout or a sign of contention. */
static bool spin_wait(bool is_caller, unsigned long seen, int n_workers)
{
    int64_t t0 = now_us(), last = t0;
    for (unsigned i = 1;; i++) {
        if (is_caller ? atomic_load_explicit(&g_pool.pending, memory_order_acquire) == 0
                      : atomic_load_explicit(&g_pool.generation, memory_order_acquire) != seen)
            return true;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i % 32 != 0) continue;
        int64_t t = now_us();
        bool    is_stalled = is_caller && t - t0 > PAR_START_US &&
                          atomic_load(&g_started) < n_workers && atomic_load(&g_sleepers) == 0;
        if (t - last > PAR_GAP_US || is_stalled) {
            back_off(t);
            return false;
        }
        if (t - t0 > PAR_HOT_US) return false;
        last = t;
    }
}

static void *worker(void *arg)
{
    int           id = (int)(size_t)arg;
    unsigned long seen = 0;
    bool          was_hot = false;
    t_in_worker = true;
    for (;;) {
        /* After a hot job, watch for the next one before going to sleep. */
        if (!was_hot || !spin_allowed() || !spin_wait(false, seen, 0)) {
            pthread_mutex_lock(&g_pool.mu);
            atomic_fetch_add(&g_sleepers, 1);
            while (atomic_load(&g_pool.generation) == seen)
                pthread_cond_wait(&g_pool.wake, &g_pool.mu);
            atomic_fetch_sub(&g_sleepers, 1);
            pthread_mutex_unlock(&g_pool.mu);
        }
        /* The fields were written before the generation was bumped and stay
         * until every worker has counted itself out of pending. */
        seen = atomic_load_explicit(&g_pool.generation, memory_order_acquire);
        atomic_fetch_add(&g_started, 1);
        ParFn  fn = g_pool.fn;
        void  *ctx = g_pool.ctx;
        size_t b, e;
        range_of(g_pool.n, g_pool.n_threads, id, &b, &e);
        was_hot = g_pool.is_hot;
        if (b < e) fn(ctx, b, e);
        if (atomic_fetch_sub_explicit(&g_pool.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&g_pool.mu);
            pthread_cond_signal(&g_pool.done);
            pthread_mutex_unlock(&g_pool.mu);
        }
    }
    return NULL;
}

static void pool_start(void)
{
    long        cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("RLHF_THREADS");
    int         n = cpus > 0 ? (int)cpus : 1;
    if (env && atoi(env) > 0) n = atoi(env);
    if (n > PAR_MAX_THREADS) n = PAR_MAX_THREADS;
    g_pool.n_threads = 1;
    for (int i = 1; i < n; i++) {
        pthread_t      th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* A thread that cannot start just leaves the pool smaller. */
        int rc = pthread_create(&th, &attr, worker, (void *)(size_t)i);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_pool.n_threads = i + 1;
    }
}

int par_threads(void)
{
    pthread_once(&g_pool.once, pool_start);
    return g_pool.n_threads;
}

static void run(size_t n, size_t min_parallel, ParFn fn, void *ctx, bool is_hot)
{
    if (n == 0) return;
    int nt = par_threads();
    if (nt == 1 || n < min_parallel || n < (size_t)nt || t_in_worker ||
        pthread_mutex_trylock(&g_pool.busy) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&g_pool.mu);
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.n = n;
    g_pool.is_hot = is_hot && spin_allowed();
    atomic_store(&g_started, 0);
    atomic_store(&g_pool.pending, nt - 1);
    atomic_fetch_add_explicit(&g_pool.generation, 1, memory_order_release);
    /* Spinning workers see the generation; sleeping ones need the signal. */
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.mu);
    size_t b, e;
    range_of(n, nt, 0, &b, &e);
    fn(ctx, b, e);
    if (!g_pool.is_hot || !spin_wait(true, 0, nt - 1)) {
        pthread_mutex_lock(&g_pool.mu);
        while (atomic_load(&g_pool.pending) > 0) pthread_cond_wait(&g_pool.done, &g_pool.mu);
        pthread_mutex_unlock(&g_pool.mu);
    }
    pthread_mutex_unlock(&g_pool.busy);
}

void par_for(size_t n, size_t min_parallel, ParFn fn, void *ctx)
{
    run(n, min_parallel, fn, ctx, false);
}

void par_for_hot(size_t n, size_t min_parallel, ParFn fn, void *ctx)
{
    run(n, min_parallel, fn, ctx, true);
}
