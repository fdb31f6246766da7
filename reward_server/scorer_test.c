/* scorer's self-test: the built-in arith and arith_chat scorers on worked
 * examples (with and without a format bonus), a prompt without an answer,
 * and the registry's rules (names, duplicates, capacity, the list). */
#include "reward_server/scorer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/tasks/chat_task.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

/* Worked examples: completion, answer, truncated -> reward, correct, format
 * without and with a 0.1 format bonus. */
static void test_arith(const Scorer *s, const Scorer *sb, bool verbose)
{
    struct {
        const char *completion, *answer;
        bool        is_truncated;
        float       reward, correct, format, reward_bonus;
    } ex[] = {
        {"82", "82", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* right */
        {"83", "82", false, 0.0f, 0.0f, 1.0f, 0.1f},  /* wrong but an integer */
        {"-2", "-2", false, 1.0f, 1.0f, 1.0f, 1.1f},  /* negative answer */
        {"8a", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},  /* not an integer */
        {"", "82", false, 0.0f, 0.0f, 0.0f, 0.0f},    /* stopped at once */
        {"82", "82", true, 0.0f, 0.0f, 0.0f, 0.0f},   /* cut off by the length cap */
        {"820", "82", false, 0.0f, 0.0f, 1.0f, 0.1f}, /* a prefix is not enough */
        {" 82", "82", false, 0.0f, 0.0f, 0.0f, 0.0f}, /* exact match, no trimming */
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        ScorerInput  in = {.prompt = "40+42=",
                           .completion = ex[i].completion,
                           .answer = ex[i].answer,
                           .is_truncated = ex[i].is_truncated};
        ScorerResult res, resb;
        char         why[128];
        int          rc = scorer_run(s, &in, &res, why, sizeof why);
        int          rcb = scorer_run(sb, &in, &resb, why, sizeof why);
        bool ok = rc == 0 && rcb == 0 && res.n_components == 2 && res.reward == ex[i].reward &&
                  !strcmp(res.components[0].name, "correct") &&
                  res.components[0].value == ex[i].correct &&
                  !strcmp(res.components[1].name, "format") &&
                  res.components[1].value == ex[i].format &&
                  fabsf(resb.reward - ex[i].reward_bonus) < 1e-6f;
        if (verbose)
            printf("  arith %-5s answer %-3s %-9s -> reward %.2f (bonus %.2f) correct %.0f "
                   "format %.0f %s\n",
                   ex[i].completion, ex[i].answer, ex[i].is_truncated ? "truncated" : "stopped",
                   res.reward, resb.reward, res.components[0].value, res.components[1].value,
                   ok ? "ok" : "WRONG");
        EXPECT(ok,
               "arith '%s' answer '%s' %s: rc %d/%d, reward %.2f (bonus %.2f) correct %.0f format "
               "%.0f; expected 0/0, %.2f (%.2f) %.0f %.0f",
               ex[i].completion, ex[i].answer, ex[i].is_truncated ? "truncated" : "stopped", rc,
               rcb, res.reward, resb.reward, res.components[0].value, res.components[1].value,
               ex[i].reward, ex[i].reward_bonus, ex[i].correct, ex[i].format);
    }
}

/* arith_chat: tolerant of surrounding words; form earns only with the answer. */
static void test_arith_chat(const Scorer *sc, bool verbose)
{
    struct {
        const char *completion;
        bool        is_truncated;
        float       reward, correct, format;
    } cx[] = {
        {"82", false, 1.2f, 1, 1},  {"The answer is 82.", false, 1.0f, 1, 0},
        {"83.", false, 0.0f, 0, 1}, {"I think 37 + 45 is", false, 0.0f, 0, 0},
        {"82", true, 1.0f, 1, 0},   {"82 + 1 = 83 and", true, 0.0f, 0, 0},
    };
    for (size_t i = 0; i < sizeof cx / sizeof cx[0]; i++) {
        ScorerInput  in = {.prompt = "What is 37 + 45? Reply with the number only.",
                           .completion = cx[i].completion,
                           .answer = "82",
                           .is_truncated = cx[i].is_truncated};
        ScorerResult res;
        char         why[128];
        int          rc = scorer_run(sc, &in, &res, why, sizeof why);
        bool ok = rc == 0 && res.n_components == 2 && fabsf(res.reward - cx[i].reward) < 1e-6f &&
                  !strcmp(res.components[0].name, "correct") &&
                  res.components[0].value == cx[i].correct &&
                  !strcmp(res.components[1].name, "format") &&
                  res.components[1].value == cx[i].format;
        if (verbose)
            printf("  arith_chat %-20s %-9s -> reward %.2f %s\n", cx[i].completion,
                   cx[i].is_truncated ? "truncated" : "stopped", res.reward, ok ? "ok" : "WRONG");
        EXPECT(ok,
               "arith_chat '%s' %s: rc %d, reward %.2f correct %.0f format %.0f; expected 0, %.2f "
               "%.0f %.0f",
               cx[i].completion, cx[i].is_truncated ? "truncated" : "stopped", rc, res.reward,
               res.components[0].value, res.components[1].value, cx[i].reward, cx[i].correct,
               cx[i].format);
    }
}

/* Registry rules; the refusals are logged, which the capture checks. */
static void test_registry(ScorerRegistry *r, const ScorerArithOpts *bonus, bool verbose)
{
    fileio_capture_begin();
    EXPECT(scorer_find(r, "nope") == NULL, "scorer_find found 'nope'");
    EXPECT(scorer_register(r, "arith", scorer_arith, NULL) == ERR_ARG,
           "a second 'arith' was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "Bad Name", scorer_arith, NULL) == ERR_ARG,
           "'Bad Name' was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "", scorer_arith, NULL) == ERR_ARG,
           "an empty name was registered, expected ERR_ARG");
    EXPECT(scorer_register(r, "arith-2", scorer_arith, bonus) == 0, "'arith-2' was refused");
    for (int i = 3; i < SCORER_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        EXPECT(scorer_register(r, name, scorer_arith, NULL) == 0,
               "'%s' was refused with %d of %d scorers registered", name, i, SCORER_MAX);
    }
    EXPECT(scorer_register(r, "one-too-many", scorer_arith, NULL) == ERR_ARG,
           "a scorer beyond SCORER_MAX (%d) was registered, expected ERR_ARG", SCORER_MAX);
    char *log = fileio_capture_end(verbose);
    EXPECT(strstr(log, "'arith' is already registered") && strstr(log, "registry full"),
           "the refusals logged '%s', expected \"'arith' is already registered\" and "
           "\"registry full\"",
           log);
    free(log);
    char list[512];
    scorer_list(r, list, sizeof list);
    EXPECT(strncmp(list, "arith,arith_chat,arith-2,s3", 27) == 0,
           "scorer_list gave '%s', expected it to start 'arith,arith_chat,arith-2,s3'", list);
    if (verbose) printf("  scorers: %s\n", list);
}

int scorer_selftest(bool verbose)
{
    ScorerArithOpts bonus = {.format_bonus = 0.1f};
    ScorerRegistry *r = scorer_registry_new();
    ScorerRegistry *rb = scorer_registry_new();
    int             rc = scorer_register_builtins(r, NULL);
    int             rcb = scorer_register_builtins(rb, &bonus);
    EXPECT(rc == 0 && rcb == 0, "scorer_register_builtins: %s and %s (bonus), expected ok",
           err_str(rc), err_str(rcb));

    const Scorer *s = scorer_find(r, "arith"), *sb = scorer_find(rb, "arith");
    if (EXPECT(s && sb && !scorer_find(r, "") && !scorer_find(r, NULL),
               "arith not found, or an empty name found a scorer (there is no default)")) {
        test_arith(s, sb, verbose);
        const Scorer *sc = scorer_find(r, CHAT_TASK_NAME);
        if (EXPECT(sc != NULL, "scorer '%s' not found", CHAT_TASK_NAME))
            test_arith_chat(sc, verbose);
        /* No answer: the prompt cannot be verified. */
        ScorerInput  in = {.prompt = "1+1=", .completion = "2", .answer = ""};
        ScorerResult res;
        char         why[128] = "";
        rc = scorer_run(s, &in, &res, why, sizeof why);
        EXPECT(rc == ERR_ARG && strstr(why, "no reference"),
               "a prompt without an answer: rc %d, why '%s'; expected ERR_ARG and 'no reference'",
               rc, why);
        test_registry(r, &bonus, verbose);
    }
    scorer_registry_free(&r);
    scorer_registry_free(&rb);
    EXPECT(!r && !rb, "scorer_registry_free left a pointer set");
    return expect_end();
}
