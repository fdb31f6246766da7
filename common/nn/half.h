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

/* F16 / BF16 bit patterns to F32 (exact). */
float half_f16_to_f32(uint16_t h);
float half_bf16_to_f32(uint16_t h);

/* x rounded to the nearest IEEE half (ties to even), with overflow to
 * infinity and NaN kept NaN: the bit pattern an F16 tensor stores. */
uint16_t half_f32_to_f16(float x);
/* x rounded to the nearest bfloat16 (ties to even), with overflow to
 * infinity (from 0x1.ff8p127 up) and NaN kept NaN: the bit pattern a BF16
 * tensor stores. Subnormal floats round like any other (no flush to zero). */
uint16_t half_f32_to_bf16(float x);

#endif
