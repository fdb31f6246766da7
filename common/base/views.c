#include "common/base/views.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"

static size_t row_bytes(const View *r)
{
    CHECK(r->size == 0 || r->count <= (SIZE_MAX - 63) / r->size);
    return (r->size * r->count + 63) & ~(size_t)63;
}

size_t views_bytes(const View *v, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t b = row_bytes(&v[i]);
        CHECK(total <= SIZE_MAX - b);
        total += b;
    }
    return total;
}

void views_carve(void *block, const View *v, int n)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        void *p = (char *)block + off;
        /* The caller's pointer may be a float * or an int *: its bytes are
         * copied in rather than written through a void ** of another type. */
        memcpy(v[i].view, &p, sizeof p);
        off += row_bytes(&v[i]);
    }
}

void *views_alloc(const View *v, int n)
{
    void *block = xmalloc_aligned(views_bytes(v, n));
    views_carve(block, v, n);
    return block;
}

void views_reserve(void **block, size_t *bytes, const View *v, int n)
{
    size_t need = views_bytes(v, n);
    if (need > *bytes || !*block) {
        free(*block);
        *block = xmalloc_aligned(need);
        *bytes = need;
    }
    views_carve(*block, v, n);
}
