/* par: a small fork-join thread pool for the loops of the numeric kernels
 * that OpenBLAS does not cover (softmax, SiLU, norms, the few-row matmul).
 *
 * Why not OpenMP: libgomp's idle threads spin after each parallel region,
 * and the spinning takes the cores OpenBLAS's threads need for the next
 * sgemm (measured: the SFT self-test 1.1 s -> 6.6 s); its wait policy can
 * only be set from the environment. These workers block on a condition
 * variable as soon as their share is done.
 *
 * One process-wide pool, started on first use with one thread per online
 * CPU (RLHF_THREADS overrides, 1 = serial). par_for may be called from any
 * thread; a call made while another is running (or from inside a worker)
 * runs serially in the caller, so nesting and concurrency are safe. fn must
 * not call exit or longjmp. No errors: failure to start threads means
 * serial execution. */
#ifndef RLHF_PAR_H
#define RLHF_PAR_H

#include <stdbool.h>
#include <stddef.h>

/* Work on items [begin, end) of the loop. */
typedef void (*ParFn)(void *ctx, size_t begin, size_t end);

/* Runs fn over [0, n) split into one contiguous range per thread, or
 * serially when n < min_parallel (too little work to pay for a wake-up).
 * Returns when every range is done. */
void par_for(size_t n, size_t min_parallel, ParFn fn, void *ctx);

/* par_for for calls that come in quick succession (the kernels of one
 * decoding step): after its share of the loop each worker spins, for up to
 * PAR_HOT_US, waiting for the next call instead of going to sleep, and the
 * caller spins for the workers to finish, so a call costs well under a
 * microsecond of hand-over instead of a futex wake-up each way (~10 us,
 * more on a busy machine). Plain par_for calls never spin: the training
 * path leaves the cores to OpenBLAS as before. */
#define PAR_HOT_US 100
void par_for_hot(size_t n, size_t min_parallel, ParFn fn, void *ctx);

/* Threads the pool uses (1 when serial). */
int par_threads(void);

#endif
