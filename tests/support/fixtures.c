#include "tests/support/fixtures.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"

void fixture_logits(Model *m, float *out, int T)
{
    int tokens[16], targets[16];
    CHECK(T <= 16);
    for (int i = 0; i < T; i++)
        tokens[i] = (i * 7 + 3) % model_config(m)->vocab_size, targets[i] = 0;
    model_forward(m, tokens, targets, NULL, 1, T, NULL, NULL, NULL);
    int          n = 0;
    const float *lg = model_last_logits(m, &n);
    CHECK(n == T);
    memcpy(out, lg, sizeof(float) * (size_t)T * model_config(m)->vocab_size);
}

float fixture_max_abs_diff(const float *a, const float *b, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

/* The old file is unlinked first because rewriting a truncated file makes
 * ext4 flush it on close (auto_da_alloc), which costs milliseconds per file. */
int fixture_write_file(const char *path, const void *p, size_t n)
{
    if (unlink(path) != 0 && errno != ENOENT) return ERR_IO;
    FILE *fp = fopen(path, "wb");
    if (!fp) return ERR_IO;
    size_t w = fwrite(p, 1, n, fp);
    return fclose(fp) == 0 && w == n ? 0 : ERR_IO;
}
