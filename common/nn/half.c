#include "common/nn/half.h"

#include <math.h>
#include <string.h>

float half_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in float. */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or NaN keeping its payload */
    else
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float half_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t half_f32_to_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00; /* NaN stays NaN (quiet) */
    /* 65520 is halfway between the largest half (65504, odd mantissa) and
     * the next power of two, so it and everything above round to infinity. */
    if (a >= 0x477ff000u) return sign | 0x7c00;
    if (a >= 0x38800000u) { /* normal half: |x| >= 2^-14 */
        /* Rebias the exponent from 127 to 15 and keep the top 10 mantissa
         * bits; a carry out of the mantissa correctly bumps the exponent. */
        uint32_t h = (a - 0x38000000u) >> 13, rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    /* Subnormal half: units of 2^-24. Scaling by a power of two is exact, and
     * nearbyintf rounds to nearest even in the default rounding mode. */
    float f;
    memcpy(&f, &a, sizeof f);
    return (uint16_t)(sign | (uint16_t)nearbyintf(f * 16777216.0f));
}

uint16_t half_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040); /* quiet NaN */
    /* Adding 0x7fff plus the lowest kept bit rounds the dropped 16 bits to
     * nearest with ties to even; a carry propagates into the exponent, which
     * is how the largest floats overflow to infinity. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
