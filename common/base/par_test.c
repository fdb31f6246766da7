/* par's self-test: every index of a par_for is visited exactly once, also
 * when a par_for runs inside a worker. */
#include "common/base/par.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    int *hits;
} CountCtx;

static void count_fn(void *p, size_t b, size_t e)
{
    CountCtx *c = p;
    for (size_t i = b; i < e; i++) c->hits[i]++;
}

static void nested_fn(void *p, size_t b, size_t e)
{
    /* A par_for inside a worker runs serially and must still cover its range. */
    CountCtx *c = p;
    for (size_t i = b; i < e; i++) par_for(1, 0, count_fn, &(CountCtx){c->hits + i});
}

int par_selftest(bool verbose)
{
    for (size_t n = 1; n < 300; n += 37) {
        int     *hits = xcalloc(n, sizeof(int));
        CountCtx c = {hits};
        for (int rep = 0; rep < 50; rep++) par_for(n, 0, count_fn, &c);
        par_for(n, 0, nested_fn, &c);
        for (size_t i = 0; i < n; i++)
            EXPECT(hits[i] == 51, "n %zu: index %zu visited %d times, expected 51", n, i, hits[i]);
        free(hits);
    }
    if (verbose)
        printf("  par: %d threads, every index visited exactly once per call\n", par_threads());
    return expect_end();
}
