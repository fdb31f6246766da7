#include "common/base/par.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define PAR_MAX_THREADS 64

static struct {
    pthread_once_t  once;
    pthread_mutex_t busy; /* held by the caller of a parallel par_for */
    pthread_mutex_t mu;
    pthread_cond_t  wake, done;
    int             n_threads;
    unsigned long   generation; /* bumped for each job */
    int             pending;    /* worker ranges not yet finished */
    ParFn           fn;
    void           *ctx;
    size_t          n;
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

static void *worker(void *arg)
{
    int           id = (int)(size_t)arg;
    unsigned long seen = 0;
    t_in_worker = true;
    pthread_mutex_lock(&g_pool.mu);
    for (;;) {
        while (g_pool.generation == seen) pthread_cond_wait(&g_pool.wake, &g_pool.mu);
        seen = g_pool.generation;
        ParFn  fn = g_pool.fn;
        void  *ctx = g_pool.ctx;
        size_t b, e;
        range_of(g_pool.n, g_pool.n_threads, id, &b, &e);
        pthread_mutex_unlock(&g_pool.mu);
        if (b < e) fn(ctx, b, e);
        pthread_mutex_lock(&g_pool.mu);
        if (--g_pool.pending == 0) pthread_cond_signal(&g_pool.done);
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

void par_for(size_t n, size_t min_parallel, ParFn fn, void *ctx)
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
    g_pool.pending = nt - 1;
    g_pool.generation++;
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.mu);
    size_t b, e;
    range_of(n, nt, 0, &b, &e);
    fn(ctx, b, e);
    pthread_mutex_lock(&g_pool.mu);
    while (g_pool.pending > 0) pthread_cond_wait(&g_pool.done, &g_pool.mu);
    pthread_mutex_unlock(&g_pool.mu);
    pthread_mutex_unlock(&g_pool.busy);
}
