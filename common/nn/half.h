/* half: the one conversion between fp32 and the 16-bit float formats, IEEE
 * half (F16) and bfloat16 (BF16), that the file readers (safetensors, GGUF)
 * and the GGUF exporter use.
 *
 * Widening is exact: every F16 and BF16 value is a float. Narrowing to F16
 * rounds to nearest, ties to even, overflows to infinity and keeps NaN a
 * (quiet) NaN.
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

#endif
