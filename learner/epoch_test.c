/* epoch's self-test: worked examples of the epoch of each start, the
 * restore of an older checkpoint (the same saved epoch twice), legacy
 * epochs, saturation, lease id ranges and the nonce source. */
#include "learner/epoch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int epoch_selftest(bool verbose)
{
    /* A fresh run is epoch 0; its first restart has restarts 1. */
    uint64_t e1 = epoch_next(0, 0x1234);
    EXPECT(e1 == (1ull << 32 | 0x1234) && epoch_restarts(e1) == 1,
           "epoch_next(0, 0x1234) = %#" PRIx64 ", expected 0x100001234", e1);
    uint64_t e2 = epoch_next(e1, 7);
    EXPECT(e2 == (2ull << 32 | 7) && e2 > e1, "the next start: %#" PRIx64 ", expected 0x200000007",
           e2);
    /* The restore: a copy of the fresh run's checkpoint (epoch 0) started
     * again after e1 ran. The restarts repeat, the nonce does not: another
     * epoch, whichever is larger. */
    uint64_t e1b = epoch_next(0, 0xfeed);
    EXPECT(e1b != e1 && epoch_restarts(e1b) == epoch_restarts(e1),
           "restored start %#" PRIx64 " vs the earlier %#" PRIx64 ": same restarts, other epoch",
           e1b, e1);
    /* A checkpoint of the old rule (a small counter) has restarts 0. */
    uint64_t legacy = epoch_next(3, 9);
    EXPECT(legacy == (1ull << 32 | 9) && legacy > 3,
           "after a legacy epoch 3: %#" PRIx64 ", expected 0x100000009", legacy);
    /* Saturation keeps an epoch a positive int64 (a JSON integer). */
    uint64_t top = (uint64_t)EPOCH_MAX_RESTARTS << 32 | 5;
    uint64_t sat = epoch_next(top, 6);
    EXPECT(epoch_restarts(sat) == EPOCH_MAX_RESTARTS && (sat & 0xffffffffu) == 6 &&
               (int64_t)sat > 0,
           "saturated: %#" PRIx64 ", expected 0x7fffffff00000006", sat);
    /* Lease ids: a range of 2^32 per nonce; a fresh run starts at 1. */
    EXPECT(epoch_first_lease_id(0) == 1 && epoch_first_lease_id(e1) == (0x1234ull << 32 | 1) &&
               epoch_first_lease_id(e1b) == (0xfeedull << 32 | 1),
           "first lease ids %#" PRIx64 " %#" PRIx64 " %#" PRIx64 ", expected 0x1, "
           "0x123400000001, 0xfeed00000001",
           epoch_first_lease_id(0), epoch_first_lease_id(e1), epoch_first_lease_id(e1b));
    /* The nonce: never 0, and 4096 draws of 32 bits are distinct but for
     * a chance of about 4096^2 / 2^33 = 0.2 % of one repeat. */
    enum { N = 4096 };
    uint32_t *d = malloc(N * sizeof *d);
    int       zeros = 0, repeats = 0;
    for (int i = 0; i < N; i++) zeros += (d[i] = epoch_nonce()) == 0;
    qsort(d, N, sizeof *d, cmp_u32);
    for (int i = 1; i < N; i++) repeats += d[i] == d[i - 1];
    EXPECT(zeros == 0 && repeats <= 1, "%d zero nonces and %d repeats in %d draws", zeros, repeats,
           N);
    if (verbose)
        printf("  epochs: fresh 0, restart %#" PRIx64 ", restored %#" PRIx64 "\n", e1, e1b);
    free(d);
    return expect_end();
}
