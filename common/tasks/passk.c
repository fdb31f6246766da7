#include "common/tasks/passk.h"

#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/tasks/verify.h"

double passk_estimate(int n, int c, int k)
{
    CHECK(n >= 1 && c >= 0 && c <= n && k >= 1 && k <= n);
    if (n - c < k) return 1.0;
    double miss = 1.0; /* C(n-c, k) / C(n, k) */
    for (int j = n - c + 1; j <= n; j++) miss *= 1.0 - (double)k / j;
    return 1.0 - miss;
}

void passk_vote_key(const char *completion, char *out, size_t cap)
{
    CHECK(cap > 0);
    out[0] = '\0';
    if (!completion) return;
    size_t n = strlen(completion), st, len;
    verify_answer_span(completion, n, &st, &len);
    double v;
    if (verify_last_number(completion + st, len, &v)) {
        snprintf(out, cap, "%.15g", v == 0 ? 0.0 : v); /* -0 votes with 0 */
        return;
    }
    verify_normalize(completion + st, len, out, cap);
}

int passk_vote(const char *const *keys, int n)
{
    int best = -1, best_count = 0;
    for (int i = 0; i < n; i++) {
        if (!keys[i] || !keys[i][0]) continue;
        /* Counted once, at its first sample. */
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = keys[j] && !strcmp(keys[j], keys[i]);
        if (seen) continue;
        int count = 0;
        for (int j = i; j < n; j++) count += keys[j] && !strcmp(keys[j], keys[i]);
        if (count > best_count) best = i, best_count = count;
    }
    return best;
}
