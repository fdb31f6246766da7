#include "common/formats/gguf_type.h"

#include <string.h>

#include "common/base/err.h"
#include "common/nn/half.h"

/* Tensor bytes go from disk to memory without swapping. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_type.c assumes a little-endian host"
#endif

/* The ggml types whose block layout is known here. Ids missing from this
 * table were never assigned, were removed from ggml, or belong to newer
 * formats (the IQ and ternary quantisations); a file using one is refused at
 * open, since without the block size its byte ranges cannot be checked. */
static const GgufType k_types[] = {
    {0, "F32", 1, 4, true},        {1, "F16", 1, 2, true},        {2, "Q4_0", 32, 18, true},
    {3, "Q4_1", 32, 20, true},     {6, "Q5_0", 32, 22, false},    {7, "Q5_1", 32, 24, false},
    {8, "Q8_0", 32, 34, true},     {9, "Q8_1", 32, 36, false},    {10, "Q2_K", 256, 84, false},
    {11, "Q3_K", 256, 110, false}, {12, "Q4_K", 256, 144, false}, {13, "Q5_K", 256, 176, false},
    {14, "Q6_K", 256, 210, false}, {15, "Q8_K", 256, 292, false}, {24, "I8", 1, 1, false},
    {25, "I16", 1, 2, false},      {26, "I32", 1, 4, false},      {27, "I64", 1, 8, false},
    {28, "F64", 1, 8, false},      {30, "BF16", 1, 2, true},
};

const GgufType *gguf_type_find(uint32_t id)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if ((uint32_t)k_types[i].id == id) return &k_types[i];
    return NULL;
}

bool gguf_type_is_reserved(uint32_t id)
{
    return (id >= 16 && id <= 23) || id == 29 || (id >= 31 && id <= 39);
}

bool gguf_type_is_supported(int type)
{
    const GgufType *t = type >= 0 ? gguf_type_find((uint32_t)type) : NULL;
    return t && t->supported;
}

static float half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return half_f16_to_f32(h);
}

void gguf_type_dequant(const GgufType *t, const uint8_t *src, float *dst, size_t nb)
{
    switch (t->id) {
    case GGUF_TYPE_F32:
        memcpy(dst, src, nb * 4);
        break;
    case GGUF_TYPE_F16:
        for (size_t i = 0; i < nb; i++) dst[i] = half(src + 2 * i);
        break;
    case GGUF_TYPE_BF16:
        for (size_t i = 0; i < nb; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = half_bf16_to_f32(h);
        }
        break;
    case GGUF_TYPE_Q8_0:
        for (size_t b = 0; b < nb; b++, src += 34, dst += 32) {
            float d = half(src);
            for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)src[2 + j] * d;
        }
        break;
    case GGUF_TYPE_Q4_0:
        for (size_t b = 0; b < nb; b++, src += 18, dst += 32) {
            float d = half(src);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                dst[j + 16] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case GGUF_TYPE_Q4_1:
        for (size_t b = 0; b < nb; b++, src += 20, dst += 32) {
            float d = half(src), m = half(src + 2);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(src[4 + j] & 0x0f) * d + m;
                dst[j + 16] = (float)(src[4 + j] >> 4) * d + m;
            }
        }
        break;
    default:
        CHECK(!"dequant: unsupported type");
    }
}
