/* views' self-test: sizes, alignment, order and regrowth of a carved group. */
#include "common/base/views.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

static bool aligned(const void *p)
{
    return (uintptr_t)p % 64 == 0;
}

int views_selftest(bool verbose)
{
    float    *a = NULL, *c = NULL;
    int      *b = NULL;
    uint64_t *d = NULL;
    /* 3 floats -> 64, 20 ints -> 128, 0 floats -> 0, 5 u64 -> 64 bytes. */
    View   g[] = {VIEW(&a, 3), VIEW(&b, 20), VIEW(&c, 0), VIEW(&d, 5)};
    size_t bytes = views_bytes(g, 4);
    EXPECT(bytes == 256, "views_bytes %zu, expected 256", bytes);
    char *block = views_alloc(g, 4);
    EXPECT((char *)a == block, "first view at +%td, expected +0", (char *)a - block);
    EXPECT((char *)b == block + 64, "int view at +%td, expected +64", (char *)b - block);
    EXPECT((char *)c == block + 192, "empty view at +%td, expected +192", (char *)c - block);
    EXPECT((char *)d == block + 192, "u64 view at +%td, expected +192", (char *)d - block);
    EXPECT(aligned(a) && aligned(b) && aligned(c) && aligned(d), "a view is not 64-byte aligned");
    /* Every byte of every view is usable without touching its neighbours. */
    memset(a, 1, 3 * sizeof *a);
    memset(b, 2, 20 * sizeof *b);
    memset(d, 3, 5 * sizeof *d);
    EXPECT(((unsigned char *)a)[11] == 1 && ((unsigned char *)b)[0] == 2 &&
               ((unsigned char *)b)[79] == 2 && ((unsigned char *)d)[0] == 3,
           "views overlap");
    free(block);

    /* Reserve grows only when the group no longer fits, and recarves each time. */
    void  *rb = NULL;
    size_t cap = 0;
    View   small[] = {VIEW(&a, 16), VIEW(&b, 16)};
    views_reserve(&rb, &cap, small, 2);
    EXPECT(rb && cap == 128, "first reserve: cap %zu, expected 128", cap);
    void *first = rb;
    View  smaller[] = {VIEW(&a, 1), VIEW(&b, 1)};
    views_reserve(&rb, &cap, smaller, 2);
    EXPECT(rb == first && cap == 128 && (char *)b == (char *)rb + 64,
           "a smaller group moved the block or kept the old carving (cap %zu)", cap);
    View big[] = {VIEW(&a, 100), VIEW(&b, 100)};
    views_reserve(&rb, &cap, big, 2);
    EXPECT(cap == 896 && aligned(rb) && (char *)b == (char *)rb + 448,
           "grown reserve: cap %zu, int view at +%td, expected 896 and +448", cap,
           (char *)b - (char *)rb);
    free(rb);
    return expect_end();
}
