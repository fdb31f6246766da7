#include "common/tasks/passk.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "common/base/err.h"

double passk_estimate(int n, int c, int k)
{
    CHECK(n >= 1 && c >= 0 && c <= n && k >= 1 && k <= n);
    if (n - c < k) return 1.0;
    /* C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (i - k) / i: each factor is a
     * ratio of nearby integers, so the product only ever shrinks toward 0. */
    double fail = 1.0;
    for (int i = n - c + 1; i <= n; i++) fail *= 1.0 - (double)k / (double)i;
    return 1.0 - fail;
}

int passk_vote(const char *const *answers, int n, int *count)
{
    CHECK(n >= 0 && (answers || n == 0));
    int best = -1, best_count = 0;
    for (int j = 0; j < n; j++) {
        if (!answers[j]) continue;
        bool seen = false; /* counted already, at its first sample */
        for (int i = 0; i < j && !seen; i++) seen = answers[i] && !strcmp(answers[i], answers[j]);
        if (seen) continue;
        int c = 1;
        for (int i = j + 1; i < n; i++) c += answers[i] && !strcmp(answers[i], answers[j]);
        /* Strictly more: among equal counts the earlier first sample stays. */
        if (c > best_count) best = j, best_count = c;
    }
    if (count) *count = best_count;
    return best;
}
