#include "tests/test_list.h"
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

int task_selftest(bool verbose)
{
    TaskConfig  cfg = TASK_DEFAULTS;
    TaskProblem p, q;
    int         fails = 0;
    /* Determinism, and the answer matches the prompt's arithmetic. */
    for (uint64_t i = 0; i < 2000; i++) {
        for (int split = 0; split < 2; split++) {
            task_problem(&cfg, 5, i, split, &p);
            task_problem(&cfg, 5, i, split, &q);
            if (strcmp(p.prompt, q.prompt) || strcmp(p.answer, q.answer)) fails++;
            long long a, b;
            char      op;
            if (sscanf(p.prompt, "%lld%c%lld=", &a, &op, &b) != 3) {
                fails++;
                continue;
            }
            long long want = op == '+' ? a + b : a - b;
            char      buf[32];
            snprintf(buf, sizeof buf, "%lld", want);
            if (strcmp(buf, p.answer)) fails++;
            if (a > 999 || b > 999) fails++;
        }
    }
    /* The splits are disjoint: no held-out prompt appears among train prompts. */
    int overlap = 0;
    for (uint64_t i = 0; i < 300; i++) {
        task_problem(&cfg, 1, i, true, &p);
        for (uint64_t j = 0; j < 3000; j++) {
            task_problem(&cfg, 2, j, false, &q);
            overlap += !strcmp(p.prompt, q.prompt);
        }
    }
    if (overlap) fails++;
    TaskScore s;
    task_score("82", "82", &s);
    if (s.correct != 1.0f || s.format != 1.0f) fails++;
    task_score("-2", "-2", &s);
    if (s.correct != 1.0f || s.format != 1.0f) fails++;
    task_score("83", "82", &s);
    if (s.correct != 0.0f || s.format != 1.0f) fails++;
    task_score("8a", "82", &s);
    if (s.correct != 0.0f || s.format != 0.0f) fails++;
    task_score("", "0", &s);
    if (s.correct != 0.0f || s.format != 0.0f) fails++;
    task_score("-", "0", &s);
    if (s.format != 0.0f) fails++;
    if (verbose) {
        task_problem(&cfg, 1, 0, false, &p);
        task_problem(&cfg, 1, 0, true, &q);
        printf("  task: train[0] %s%s, eval[0] %s%s, split overlap %d\n", p.prompt, p.answer,
               q.prompt, q.answer, overlap);
    }
    return fails ? 1 : 0;
}
