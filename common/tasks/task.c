#include "common/tasks/task.h"

#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/rng.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static int32_t draw_operand(Rng *r, int max_digits)
{
    /* Digits first, then the value, so short operands are as common as long ones. */
    int     digits = 1 + (int)rng_below(r, (uint32_t)max_digits);
    int32_t lo = 1, hi = 10;
    for (int i = 1; i < digits; i++) {
        lo *= 10;
        hi *= 10;
    }
    if (digits == 1) lo = 0;
    return lo + (int32_t)rng_below(r, (uint32_t)(hi - lo));
}

static bool is_held_out(const TaskConfig *cfg, int64_t a, int op, int64_t b)
{
    uint64_t h = mix((uint64_t)a * 1000003ULL ^ mix((uint64_t)b + 7919ULL * (uint64_t)op));
    return h % (uint64_t)cfg->eval_every == 0;
}

void task_problem(const TaskConfig *cfg, uint64_t seed, uint64_t index, bool held_out,
                  TaskProblem *out)
{
    CHECK(cfg->max_digits >= 1 && cfg->max_digits <= 6 && cfg->eval_every >= 2);
    Rng r;
    rng_seed(&r, mix(seed * 0x9e3779b97f4a7c15ULL + index) ^ (held_out ? 0xabcdefULL : 0));
    /* Rejection: draw until the problem lands in the wanted split. */
    for (;;) {
        int32_t a = draw_operand(&r, cfg->max_digits), b = draw_operand(&r, cfg->max_digits);
        int     op = (int)rng_below(&r, 2);
        if (is_held_out(cfg, a, op, b) != held_out) continue;
        snprintf(out->prompt, sizeof out->prompt, "%d%c%d=", a, op ? '-' : '+', b);
        snprintf(out->answer, sizeof out->answer, "%d", op ? a - b : a + b);
        return;
    }
}

void task_score(const char *completion, const char *answer, TaskScore *out)
{
    const char *p = completion;
    if (*p == '-') p++;
    bool digits = *p != '\0';
    for (; *p; p++) digits &= *p >= '0' && *p <= '9';
    out->format = digits ? 1.0f : 0.0f;
    out->correct = strcmp(completion, answer) == 0 ? 1.0f : 0.0f;
}
