/* eval_report's self-test: a report over three hand-made prompts of five
 * samples, with every figure worked out by hand: pass@k averaged over the
 * prompts, the majority vote (a tie going to the answer given first), a
 * prompt whose scorer reads no answer (code: no vote, and the report says
 * why), mean reward and accuracy, finish counts; the same figures in the
 * JSON and the table. */
#include "reward_server/eval_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/nn/gen.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

#define N 5

static void fill(EvalSample *s, const int *correct, const char *const *answers, const int *finish)
{
    for (int j = 0; j < N; j++) {
        s[j] = (EvalSample){.reward = (float)correct[j],
                            .is_correct = correct[j],
                            .is_scored = true,
                            .has_answer = answers && answers[j],
                            .n_tokens = 10 + j,
                            .finish = finish[j]};
        if (answers && answers[j]) snprintf(s[j].answer, sizeof s[j].answer, "%s", answers[j]);
    }
}

static double jnum(json_t *o, const char *path)
{
    char  buf[128];
    char *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
        o = json_is_array(o) ? json_array_get(o, (size_t)atoi(k)) : json_object_get(o, k);
    return json_is_number(o) ? json_number_value(o) : NAN;
}

int eval_report_selftest(bool verbose)
{
    char      why[200];
    ScoreSpec exact, code;
    CHECK(score_spec_parse("exact", score_builtin, NULL, &exact, why, sizeof why) == 0);
    CHECK(score_spec_parse("code", score_builtin, NULL, &code, why, sizeof why) == 0);
    /* Finishes: end token 3 + 4, stop string 1 + 5, length cap 1 + 1. */
    const int  S = GEN_FINISH_STOP, L = GEN_FINISH_LENGTH, C = GEN_FINISH_CALLER;
    EvalSample a[N], b[N], c[N];
    /* A: 2 of 5 correct; "7" twice (samples 0 and 2, correct) wins the vote. */
    const char *aa[N] = {"7", "5", "7", "x", NULL};
    fill(a, (int[]){1, 0, 1, 0, 0}, aa, (int[]){S, S, C, L, S});
    /* B: none correct; "5" and "3" twice each: "5", given first, wins (wrong). */
    const char *ba[N] = {"5", "5", "3", "3", "4"};
    fill(b, (int[]){0, 0, 0, 0, 0}, ba, (int[]){S, S, S, S, L});
    /* C: code, all correct, no answer to vote on. */
    fill(c, (int[]){1, 1, 1, 1, 1}, NULL, (int[]){C, C, C, C, C});
    EvalPrompt ps[3] = {
        {.index = 0, .label = "d:1", .answer = "7", .task = "exact", .spec = &exact, .samples = a},
        {.index = 1, .label = "d:2", .answer = "4", .task = "exact", .spec = &exact, .samples = b},
        {.index = 2, .label = "d:3", .answer = "", .task = "code", .spec = &code, .samples = c},
    };
    EvalReport *r = eval_report_new(N);
    for (int i = 0; i < 3; i++) {
        ps[i].n_samples = N;
        CHECK(eval_report_add(r, &ps[i]) == 0);
    }
    /* pass@k per prompt: A 1 - C(3,k)/C(5,k) = 0.4, 0.7, 0.9, 1, 1; B 0; C 1. */
    const double want_pass[N] = {1.4 / 3, 1.7 / 3, 1.9 / 3, 2.0 / 3, 2.0 / 3};
    for (int k = 1; k <= N; k++)
        EXPECT(fabs(eval_report_pass_at(r, k) - want_pass[k - 1]) < 1e-12,
               "pass@%d %.15g, by hand %.15g", k, eval_report_pass_at(r, k), want_pass[k - 1]);
    EvalSummary s;
    eval_report_summary(r, &s);
    EXPECT(s.n_prompts == 3 && s.samples == 15 && fabs(s.mean_reward - 7.0 / 15) < 1e-12 &&
               fabs(s.accuracy - eval_report_pass_at(r, 1)) < 1e-12 && s.vote_prompts == 2 &&
               s.vote_correct == 1 && s.vote_accuracy == 0.5 && s.finish_stop == 7 &&
               s.finish_length == 2 && s.finish_stop_string == 6 && s.tokens == 3 * 60,
           "summary: %d prompts, %llu samples, reward %g, accuracy %g, vote %d/%d, finish "
           "%llu/%llu/%llu, tokens %llu",
           s.n_prompts, (unsigned long long)s.samples, s.mean_reward, s.accuracy, s.vote_correct,
           s.vote_prompts, (unsigned long long)s.finish_stop,
           (unsigned long long)s.finish_stop_string, (unsigned long long)s.finish_length,
           (unsigned long long)s.tokens);
    json_t     *j = eval_report_json(r);
    json_t     *res = json_object_get(j, "results");
    json_t     *vote = json_object_get(res, "majority_vote");
    json_t     *p = json_object_get(j, "prompts");
    const char *note = json_string_value(json_object_get(vote, "note"));
    EXPECT(fabs(jnum(res, "pass_at_k.2") - 1.7 / 3) < 1e-12 &&
               fabs(jnum(res, "pass_at_k.5") - 2.0 / 3) < 1e-12 && jnum(vote, "accuracy") == 0.5 &&
               note && strstr(note, "scorer code") && json_array_size(p) == 3 &&
               jnum(p, "0.correct") == 2 &&
               !strcmp(json_string_value(json_object_get(
                           json_object_get(json_array_get(p, 1), "vote"), "answer")),
                       "5") &&
               jnum(p, "1.vote.count") == 2 &&
               json_is_false(
                   json_object_get(json_object_get(json_array_get(p, 1), "vote"), "correct")) &&
               json_is_null(json_object_get(json_array_get(p, 2), "vote")),
           "the JSON report disagrees with the hand-made prompts");
    if (verbose) {
        char *text = json_dumps(res, JSON_COMPACT);
        printf("  eval_report: %s\n", text);
        free(text);
    }
    json_decref(j);
    /* The table. */
    char  *buf = NULL;
    size_t len = 0;
    FILE  *f = open_memstream(&buf, &len);
    CHECK(f);
    eval_report_print(r, f);
    fclose(f);
    EXPECT(strstr(buf, "pass@1    0.4667") && strstr(buf, "pass@2    0.5667") &&
               strstr(buf, "pass@5    0.6667") && !strstr(buf, "pass@3") &&
               strstr(buf, "majority vote 0.5000 (1 of 2 prompts)") &&
               strstr(buf, "none for 1 prompts: scorer code reads no answer"),
           "the table:\n%s", buf);
    if (verbose) printf("%s", buf);
    free(buf);
    eval_report_free(&r);
    EXPECT(r == NULL, "eval_report_free leaves the pointer set");
    return expect_end();
}
