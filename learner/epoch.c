#include "learner/epoch.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/rng.h"

uint32_t epoch_nonce(void)
{
    uint32_t n = 0;
    if (getrandom(&n, sizeof n, 0) != (ssize_t)sizeof n) {
        /* No entropy source: the clock and pid still differ between starts. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        Rng r;
        rng_seed(&r, ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
                         ((uint64_t)getpid() << 40));
        n = (uint32_t)rng_u64(&r);
    }
    return n ? n : 1;
}

uint64_t epoch_next(uint64_t saved, uint32_t nonce)
{
    CHECK(nonce != 0);
    uint32_t r = epoch_restarts(saved);
    uint64_t restarts = r >= EPOCH_MAX_RESTARTS ? EPOCH_MAX_RESTARTS : (uint64_t)r + 1;
    return restarts << 32 | nonce;
}

uint32_t epoch_restarts(uint64_t epoch)
{
    return (uint32_t)(epoch >> 32);
}

uint64_t epoch_first_lease_id(uint64_t epoch)
{
    return (epoch & 0xffffffffull) << 32 | 1;
}
