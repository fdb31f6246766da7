/* half: the one conversion between fp32 and the 16-bit float formats, IEEE
 * half (F16) and bfloat16 (BF16), that the file readers (safetensors, GGUF),
 * the GGUF exporter and the half-precision decode weights (kern.h) use.
 *
 * Widening is exact: every F16 and BF16 value is a float. Narrowing rounds
 * to nearest, ties to even, overflows to infinity and keeps NaN a (quiet)
 * NaN. BF16 keeps float's exponent range and 8 significant bits (relative
 * rounding error at most 2^-8 for every finite float that does not
 * overflow); F16 has 11 significant bits (2^-11) for |x| in [2^-14, 65504],
 * subnormals below that and infinity from 65520 up.
 *
 * Ownership: plain values in and out. Threading: pure functions. Errors: none
 * (every bit pattern has a result). */
#ifndef RLHF_HALF_H
#define RLHF_HALF_H

#include <stdint.h>
#include <string.h>

/* F16 / BF16 bit patterns to F32 (exact). */
float half_f16_to_f32(uint16_t h);

static inline float half_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &bits, 4);
    return f;
}

/* x rounded to the nearest IEEE half (ties to even), with overflow to
 * infinity and NaN kept NaN: the bit pattern an F16 tensor stores. Inline
 * and written as selects, so loops over it vectorise. */
static inline uint16_t half_f32_to_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    /* Normal half (|x| >= 2^-14): rebias the exponent from 127 to 15 and
     * keep the top 10 mantissa bits; a carry out of the mantissa correctly
     * bumps the exponent. */
    uint32_t h = (a - 0x38000000u) >> 13, rem = a & 0x1fffu;
    h += (rem > 0x1000u) | ((rem == 0x1000u) & (h & 1u));
    /* Subnormal half (E <= 112): |x| = M 2^(E-150) is M >> (126 - E) units
     * of 2^-24, rounded to nearest even by hand; a shift past 31 leaves 0
     * either way. The shift is kept in 14..31 for every x, as the result is
     * computed (and dropped) for normal x too. */
    uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t sh = e > 112 ? 14 : 126 - e < 31 ? 126 - e : 31;
    uint32_t sub = mant >> sh, srem = mant & ((1u << sh) - 1), half = 1u << (sh - 1);
    sub += (srem > half) | ((srem == half) & (sub & 1u));
    uint32_t r = a >= 0x38800000u ? h : sub;
    /* 65520 is halfway between the largest half (65504, odd mantissa) and
     * the next power of two, so it and everything above round to infinity. */
    r = a >= 0x477ff000u ? 0x7c00u : r;
    r = a > 0x7f800000u ? 0x7e00u : r; /* NaN stays NaN (quiet) */
    return (uint16_t)(sign | r);
}
/* x rounded to the nearest bfloat16 (ties to even), with overflow to
 * infinity (from 0x1.ff8p127 up) and NaN kept NaN: the bit pattern a BF16
 * tensor stores. Subnormal floats round like any other (no flush to zero).
 * Inline and branch-free but for NaN, so loops over it vectorise. */
static inline uint16_t half_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    /* Adding 0x7fff plus the lowest kept bit rounds the dropped 16 bits to
     * nearest with ties to even; a carry propagates into the exponent, which
     * is how the largest floats overflow to infinity. A NaN is made quiet
     * instead, so a payload only in the dropped bits cannot become infinity. */
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u), quiet = u | 0x00400000u;
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded) >> 16);
}

#endif
