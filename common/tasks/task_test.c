/* task's self-test: problems are deterministic and right, the splits are
 * disjoint, and the scorer on worked examples. */
#include "common/tasks/task.h"

#include <stdio.h>
#include <string.h>

#include "tests/support/expect.h"
#include "tests/test_list.h"

static void expect_score(const char *completion, const char *answer, float correct, float format)
{
    TaskScore s;
    task_score(completion, answer, &s);
    EXPECT(s.correct == correct && s.format == format,
           "task_score('%s', '%s'): correct %g format %g, expected %g %g", completion, answer,
           s.correct, s.format, correct, format);
}

int task_selftest(bool verbose)
{
    TaskConfig  cfg = TASK_DEFAULTS;
    TaskProblem p, q;
    /* Determinism, and the answer matches the prompt's arithmetic. */
    for (uint64_t i = 0; i < 2000; i++) {
        for (int split = 0; split < 2; split++) {
            task_problem(&cfg, 5, i, split, &p);
            task_problem(&cfg, 5, i, split, &q);
            EXPECT(!strcmp(p.prompt, q.prompt) && !strcmp(p.answer, q.answer),
                   "problem %llu split %d: '%s%s' then '%s%s', expected the same twice",
                   (unsigned long long)i, split, p.prompt, p.answer, q.prompt, q.answer);
            long long a, b;
            char      op;
            if (!EXPECT(sscanf(p.prompt, "%lld%c%lld=", &a, &op, &b) == 3,
                        "problem %llu split %d: prompt '%s' is not 'a+b=' or 'a-b='",
                        (unsigned long long)i, split, p.prompt))
                continue;
            long long want = op == '+' ? a + b : a - b;
            char      buf[32];
            snprintf(buf, sizeof buf, "%lld", want);
            EXPECT(!strcmp(buf, p.answer), "prompt '%s': answer '%s', expected '%s'", p.prompt,
                   p.answer, buf);
            EXPECT(a <= 999 && b <= 999, "prompt '%s': an operand over 3 digits", p.prompt);
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
    EXPECT(overlap == 0, "%d held-out prompts among the train prompts, expected 0", overlap);
    expect_score("82", "82", 1.0f, 1.0f);
    expect_score("-2", "-2", 1.0f, 1.0f);
    expect_score("83", "82", 0.0f, 1.0f);
    expect_score("8a", "82", 0.0f, 0.0f);
    expect_score("", "0", 0.0f, 0.0f);
    TaskScore s;
    task_score("-", "0", &s);
    EXPECT(s.format == 0.0f, "task_score('-', '0'): format %g, expected 0", s.format);
    if (verbose) {
        task_problem(&cfg, 1, 0, false, &p);
        task_problem(&cfg, 1, 0, true, &q);
        printf("  task: train[0] %s%s, eval[0] %s%s, split overlap %d\n", p.prompt, p.answer,
               q.prompt, q.answer, overlap);
    }
    return expect_end();
}
