/* The ggml type table's self-test: lookups of known, reserved and unknown
 * ids, the supported set, and the dequantisation of hand-built blocks of
 * every supported type against values worked out by hand (exact: every
 * scale and offset is a power of two or a small integer). */
#include <stdlib.h>
#include <string.h>

#include "common/formats/gguf_type.h"
#include "common/nn/half.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

static void put_half(uint8_t *p, float x)
{
    uint16_t h = half_f32_to_f16(x);
    memcpy(p, &h, 2);
}

static bool same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static void test_table(void)
{
    const GgufType *q41 = gguf_type_find(GGUF_TYPE_Q4_1), *q4k = gguf_type_find(12);
    EXPECT(q41 && !strcmp(q41->name, "Q4_1") && q41->block == 32 && q41->size == 20 &&
               q41->supported,
           "Q4_1 entry wrong");
    EXPECT(q4k && !strcmp(q4k->name, "Q4_K") && q4k->block == 256 && q4k->size == 144 &&
               !q4k->supported,
           "Q4_K entry wrong");
    EXPECT(!gguf_type_find(4) && !gguf_type_find(16) && !gguf_type_find(99),
           "removed, reserved and unknown ids are not in the table");
    EXPECT(gguf_type_is_reserved(16) && gguf_type_is_reserved(29) && gguf_type_is_reserved(39) &&
               !gguf_type_is_reserved(4) && !gguf_type_is_reserved(40) &&
               !gguf_type_is_reserved(GGUF_TYPE_Q8_0),
           "gguf_type_is_reserved");
    EXPECT(!gguf_type_is_supported(12) && gguf_type_is_supported(GGUF_TYPE_Q4_1) &&
               !gguf_type_is_supported(-1) && !gguf_type_is_supported(99),
           "gguf_type_is_supported");
}

static void test_dequant(void)
{
    float got[64], want[64];

    float f32[3] = {1.5f, -2.0f, 0.25f};
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_F32), (const uint8_t *)f32, got, 3);
    EXPECT(same_floats(got, f32, 3), "F32 dequantised wrong");

    uint8_t f16[6];
    put_half(f16, 1.5f);
    put_half(f16 + 2, -2.0f);
    put_half(f16 + 4, 0.25f);
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_F16), f16, got, 3);
    EXPECT(same_floats(got, f32, 3), "F16 dequantised wrong");

    /* bf16 is the top half of the fp32 bits. */
    uint8_t bf16[6];
    for (int i = 0; i < 3; i++) {
        uint32_t u;
        memcpy(&u, &f32[i], 4);
        uint16_t h = (uint16_t)(u >> 16);
        memcpy(bf16 + 2 * i, &h, 2);
    }
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_BF16), bf16, got, 3);
    EXPECT(same_floats(got, f32, 3), "BF16 dequantised wrong");

    /* Two Q8_0 blocks: d = 0.5 then 2, q = j - 16 then 16 - j. */
    uint8_t q8[68];
    put_half(q8, 0.5f);
    put_half(q8 + 34, 2.0f);
    for (int j = 0; j < 32; j++) {
        q8[2 + j] = (uint8_t)(int8_t)(j - 16);
        q8[36 + j] = (uint8_t)(int8_t)(16 - j);
        want[j] = (float)(j - 16) * 0.5f;
        want[32 + j] = (float)(16 - j) * 2.0f;
    }
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_Q8_0), q8, got, 2);
    EXPECT(same_floats(got, want, 64), "Q8_0 dequantised wrong");

    /* Q4_0, d = 0.25: byte j holds element j (low nibble) and j + 16 (high). */
    uint8_t q40[18];
    put_half(q40, 0.25f);
    for (int j = 0; j < 16; j++) {
        int lo = j, hi = 15 - j;
        q40[2 + j] = (uint8_t)(lo | hi << 4);
        want[j] = (float)(lo - 8) * 0.25f;
        want[j + 16] = (float)(hi - 8) * 0.25f;
    }
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_Q4_0), q40, got, 1);
    EXPECT(same_floats(got, want, 32), "Q4_0 dequantised wrong");

    /* Q4_1, d = 0.5, m = -1: x = q * d + m. */
    uint8_t q41[20];
    put_half(q41, 0.5f);
    put_half(q41 + 2, -1.0f);
    for (int j = 0; j < 16; j++) {
        int lo = (3 * j) & 15, hi = (5 * j + 1) & 15;
        q41[4 + j] = (uint8_t)(lo | hi << 4);
        want[j] = (float)lo * 0.5f - 1.0f;
        want[j + 16] = (float)hi * 0.5f - 1.0f;
    }
    gguf_type_dequant(gguf_type_find(GGUF_TYPE_Q4_1), q41, got, 1);
    EXPECT(same_floats(got, want, 32), "Q4_1 dequantised wrong");
}

int gguf_type_selftest(bool verbose)
{
    expect_begin("gguf_type", verbose);
    test_table();
    test_dequant();
    return expect_end();
}
