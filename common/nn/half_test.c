/* half_selftest: fp32 -> bfloat16 rounding on hand-picked values (ties to
 * even, carries into the exponent, overflow, subnormals, NaN), every bf16
 * value round-tripping, and for a million random floats that the result is
 * the nearest bf16 within the 2^-8 relative bound. (F16 is tested with the
 * exporter that writes it, in export_test.c.) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/base/rng.h"
#include "common/nn/half.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int half_selftest(bool verbose)
{
    expect_begin("half", verbose);
    static const struct {
        float    x;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3f80},
        {-2.0f, 0xc000},
        {0.15625f, 0x3e20},
        {1.0f + 1.0f / 256, 0x3f80},                /* tie between 1 and 1+2^-7: even (1) wins */
        {1.0f + 3.0f / 256, 0x3f82},                /* tie between 1+2^-7 and 1+2^-6: even wins */
        {1.0f + 1.0f / 256 + 1.0f / 65536, 0x3f81}, /* just above the tie */
        {1.0f + 1.0f / 512, 0x3f80},                /* below the tie */
        {1.99999f, 0x4000},                         /* carries into the exponent */
        {3.3895313892515355e38f, 0x7f7f},           /* the largest bf16 */
        {3.4028234663852886e38f, 0x7f80},           /* FLT_MAX is past the last tie: infinity */
        {1e-40f, 0x0001},                           /* a subnormal float keeps its top bits */
        {INFINITY, 0x7f80},
        {-INFINITY, 0xff80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = half_f32_to_bf16(cases[i].x);
        EXPECT(h == cases[i].h, "bf16(%.9g) = 0x%04x, expected 0x%04x", (double)cases[i].x, h,
               cases[i].h);
    }
    EXPECT(isnan(half_bf16_to_f32(half_f32_to_bf16(NAN))), "NaN did not stay NaN");
    /* A signalling NaN whose payload lives only in the dropped bits. */
    EXPECT(isnan(half_bf16_to_f32(half_f32_to_bf16(from_bits(0x7f800001u)))),
           "NaN with a low payload became 0x%04x", half_f32_to_bf16(from_bits(0x7f800001u)));

    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = half_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && half_f32_to_bf16(f) != h) bad++;
    }
    EXPECT(bad == 0, "%d bf16 values do not round-trip", bad);

    /* Random bit patterns (finite, below the overflow point): the result is
     * one of the two bf16 neighbours of x, the nearer (the even on a tie),
     * and within 2^-8 |x| (normal) or 2^-134 (subnormal) of it. */
    Rng r;
    rng_seed(&r, 17);
    int    wrong = 0;
    double worst = 0.0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)rng_below(&r, 0x7f7f0000u) | (rng_below(&r, 2) ? 0x80000000u : 0);
        float    x = from_bits(u);
        uint16_t h = half_f32_to_bf16(x);
        float    lo = from_bits(u & 0xffff0000u), hi = from_bits((u & 0xffff0000u) + 0x10000u);
        double   dlo = fabs((double)x - lo), dhi = fabs((double)x - hi);
        uint16_t want = (uint16_t)(u >> 16);
        if (dhi < dlo || (dhi == dlo && (want & 1))) want++;
        if (h != want) wrong++;
        double err = fabs((double)half_bf16_to_f32(h) - x);
        if (fabs(x) >= 0x1p-126)
            worst = fmax(worst, err / fabs(x));
        else if (err > 0x1p-134)
            wrong++;
    }
    if (verbose)
        printf("  bf16: 1e6 random floats, worst relative error %.3g (bound 2^-8 = %.3g)\n", worst,
               0x1p-8);
    EXPECT(wrong == 0, "%d of 1e6 random floats rounded to the wrong bf16", wrong);
    EXPECT(worst <= 0x1p-8, "bf16 relative rounding error %.3g > 2^-8", worst);
    return expect_end();
}
