/* rng: a small, fast, seedable random number generator (xoshiro256**,
 * seeded through splitmix64) so that every run is reproducible from explicit
 * seeds. Plain-data state; each Rng belongs to one thread. No errors. */
#ifndef RLHF_RNG_H
#define RLHF_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

/* Seeds the state; distinct seeds give independent-looking streams. */
void     rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
/* Uniform in [0, 1) with 24 random bits, so never exactly 1. */
float rng_uniform(Rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint32_t rng_below(Rng *r, uint32_t n);
/* Standard normal (Box-Muller). */
float rng_normal(Rng *r);

#endif
