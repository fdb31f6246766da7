/* --data end to end with the real programs: the built-in arithmetic task
 * written out as JSONL (train and held-out splits, one bad line among them)
 * and learned by a char model warm-started with rlhf-sft, through
 * rlhf-learner, rlhf-reward and rlhf-actor processes, with --eval-data as
 * the held-out set; a kill -9 of the learner past a checkpoint and a
 * restart that resumes the data where the checkpoint left it; and files
 * the learner refuses (mostly bad, a bad --task), with file:line. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/tasks/task.h"
#include "tests/support/expect.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* Writes the distinct problems of one split (operands of one digit) as
 * JSONL records of the "arith" task, with a bad line after the first
 * record when asked; returns how many records. */
static int write_split(const char *path, bool held_out, bool with_bad_line)
{
    TaskConfig tc = TASK_DEFAULTS;
    tc.max_digits = 1;
    char(*seen)[TASK_TEXT_MAX] = calloc(400, TASK_TEXT_MAX);
    int   n = 0;
    FILE *f = fopen(path, "w");
    if (!f || !seen) {
        free(seen);
        if (f) fclose(f);
        return 0;
    }
    for (uint64_t i = 0; i < 4000 && n < 400; i++) {
        TaskProblem p;
        task_problem(&tc, 5, i, held_out, &p);
        bool dup = false;
        for (int k = 0; k < n && !dup; k++) dup = !strcmp(seen[k], p.prompt);
        if (dup) continue;
        snprintf(seen[n++], TASK_TEXT_MAX, "%s", p.prompt);
        fprintf(f, "{\"prompt\": \"%s\", \"answer\": \"%s\", \"task\": \"arith\"}\n", p.prompt,
                p.answer);
        if (with_bad_line && n == 1) fprintf(f, "{\"prompt\": \"1+1=\", \"answer\": \n");
    }
    fclose(f);
    free(seen);
    return n;
}

static double summary_num(TestCl *c, const char *key)
{
    json_error_t e;
    json_t      *o = json_load_file(c->summary, 0, &e);
    json_t      *v = json_object_get(o, key);
    double       x = json_is_number(v) ? json_number_value(v) : -1;
    json_decref(o);
    return x;
}

/* The data position and the lease's next prompt of the checkpoint. */
typedef struct {
    int64_t step, epoch, position, next_prompt, records;
} DataPos;

static bool read_pos(TestCl *c, DataPos *d)
{
    char path[PATH_MAX + 64];
    testfs_path(path, sizeof path, "%s/trainer_state.json", c->ckpt);
    json_error_t e;
    json_t      *o = json_load_file(path, 0, &e);
    json_t      *x = json_object_get(o, "extra");
    json_t      *data = json_object_get(x, "data");
    *d = (DataPos){
        testcl_jint(o, "step"), testcl_jint(data, "epoch"), testcl_jint(data, "position"),
        testcl_jint(json_object_get(x, "lease"), "next_prompt"), testcl_jint(data, "records")};
    json_decref(o);
    return EXPECT(d->records > 0 && d->next_prompt >= 0,
                  "'%s' holds no data position (records %" PRId64 ", next prompt %" PRId64 ")",
                  path, d->records, d->next_prompt);
}

/* Runs rlhf-learner with a bad --data or --task to its end. */
static void test_refusals(TestCl *c)
{
    char hostile[PATH_MAX + 32], learner[PATH_MAX + 32];
    testfs_path(hostile, sizeof hostile, "%s/hostile.jsonl", c->tmp);
    testfs_path(learner, sizeof learner, "%s/rlhf-learner", c->build);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\", \"task\": \"arith\"}\n"
                       "not json\n"
                       "{\"prompt\": 7}\n"
                       "{\"prompt\": \"1+1=\", \"task\": \"nope\"}\n";
    testfs_write(hostile, text, strlen(text));
    char data_flag[PATH_MAX + 64];
    snprintf(data_flag, sizeof data_flag, "--data=%s", hostile);
    const char *argv[] = {"rlhf-learner",
                          data_flag,
                          "--steps=1",
                          "--ckpt-dir=",
                          "--metrics=",
                          "--summary=",
                          "--eval-n=0",
                          "--lease=tcp://127.0.0.1:*",
                          "--results=tcp://127.0.0.1:*",
                          "--weights=tcp://127.0.0.1:*",
                          "--snapshot=tcp://127.0.0.1:*",
                          NULL};
    ProcResult  r;
    int         rc = proc_run(learner, argv, NULL, 60.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 1 && strstr(r.err, "hostile.jsonl:2: not JSON") &&
                   strstr(r.err, "hostile.jsonl:3: wrong type: \"prompt\" is a number") &&
                   strstr(r.err, "hostile.jsonl:4: bad task") &&
                   strstr(r.err, "3 of 4 records are bad") && strstr(r.err, "refusing the file"),
               &r, "a mostly bad --data: exit %d, expected 1 with every bad line named", r.status);
    proc_result_free(&r);
    const char *argv2[] = {"rlhf-learner", data_flag, "--task=boxed:2,nope", NULL};
    rc = proc_run(learner, argv2, NULL, 30.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 2 && strstr(r.err, "unknown scorer 'nope'"), &r,
               "--task boxed:2,nope: exit %d, expected 2 (bad usage)", r.status);
    proc_result_free(&r);
}

int data_char_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "data_char", verbose, 300.0)) return testcl_finish(&c);
    test_refusals(&c);

    /* A warm start that answers one-digit sums about a quarter right: most
     * demonstrations carry a slip (one too high). */
    char sft[PATH_MAX + 32], train[PATH_MAX + 32], eval[PATH_MAX + 32];
    testfs_path(sft, sizeof sft, "%s/sft", c.tmp);
    testfs_path(train, sizeof train, "%s/train.jsonl", c.tmp);
    testfs_path(eval, sizeof eval, "%s/eval.jsonl", c.tmp);
    Proc *s = testcl_proc(&c, "sft", "rlhf-sft", NULL, NULL);
    proc_arg(s, "--out=%s", sft);
    const char *sft_args[] = {"--steps=600",       "--batch=32",     "--dim=64",
                              "--layers=2",        "--hidden=128",   "--max-digits=1",
                              "--label-noise=0.6", "--eval-every=0", "--seed=1"};
    for (size_t i = 0; i < sizeof sft_args / sizeof sft_args[0]; i++)
        proc_arg(s, "%s", sft_args[i]);
    if (!testcl_start(&c, s)) return testcl_finish(&c);
    int rc = proc_wait(s, testcl_budget(&c, 120.0));
    if (!EXPECT(rc == 0 && proc_exited_ok(s), "rlhf-sft did not finish")) return testcl_finish(&c);

    int n_train = write_split(train, false, true), n_eval = write_split(eval, true, false);
    testcl_note(&c, "JSONL: %d train records (and a bad line), %d held-out", n_train, n_eval);
    EXPECT(n_train > 100 && n_eval > 5, "%d train and %d held-out problems", n_train, n_eval);

    char f_init[PATH_MAX + 64], f_data[PATH_MAX + 64], f_eval[PATH_MAX + 64];
    snprintf(f_init, sizeof f_init, "--init=%s", sft);
    snprintf(f_data, sizeof f_data, "--data=%s", train);
    snprintf(f_eval, sizeof f_eval, "--eval-data=%s", eval);
    TestClRun o = {.steps = 40,
                   .batch_groups = 8,
                   .max_staleness = 2,
                   .lease_prompts = 4,
                   .eval_n = 1000,
                   .extra = {f_init, f_data, f_eval, "--lr=1e-4", NULL}};
    Proc     *learner, *reward;
    if (!testcl_start_core(&c, &o, &learner, &reward)) return testcl_finish(&c);
    Proc *actor = testcl_actor(&c, "actor", 32, false);
    if (!testcl_start(&c, actor)) return testcl_finish(&c);
    rc = proc_wait(learner, testcl_budget(&c, 120.0));
    EXPECT(rc == 0 && proc_exited_ok(learner), "the learner did not finish its 40 steps");
    EXPECT(proc_output_has(learner, "train.jsonl:2: not JSON") &&
               proc_output_has(learner, "1 of ") && proc_output_has(learner, "skipped as bad"),
           "the bad line of train.jsonl was not named");
    double before = summary_num(&c, "accuracy_before"), after = summary_num(&c, "accuracy_after");
    testcl_note(&c, "held-out accuracy on eval.jsonl: %.3f -> %.3f", before, after);
    EXPECT(before >= 0 && after >= before + 0.2,
           "held-out accuracy %.3f -> %.3f: the run did not learn the JSONL task", before, after);

    /* Kill -9 past a checkpoint, restart: the data resumes where the
     * checkpoint says, not from the start. */
    testcl_end(&c, actor);
    fileio_remove_tree(c.ckpt);
    unlink(c.metrics);
    TestClRun o2 = o;
    o2.steps = 60;
    o2.ckpt_every = 5;
    o2.eval_n = -1;
    o2.extra[2] = "--lr=1e-4";
    o2.extra[3] = NULL;
    Proc *l2 = testcl_learner(&c, "learner-2", &o2);
    Proc *a2 = testcl_actor(&c, "actor-2", 32, false);
    if (!testcl_start(&c, l2) || !testcl_start(&c, a2)) return testcl_finish(&c);
    if (!testcl_wait_step(&c, l2, 12, 60.0)) return testcl_finish(&c);
    DataPos at_kill;
    double  t0 = testcl_now();
    while (testcl_now() - t0 < 10.0 && read_pos(&c, &at_kill) && at_kill.step < 10)
        testcl_sleep_ms(20);
    proc_kill(l2);
    if (!read_pos(&c, &at_kill)) return testcl_finish(&c);
    testcl_note(&c,
                "kill -9 of the learner; its checkpoint: step %" PRId64 ", data epoch %" PRId64
                " record %" PRId64 " of %" PRId64 " (next prompt %" PRId64 ")",
                at_kill.step, at_kill.epoch, at_kill.position, at_kill.records,
                at_kill.next_prompt);
    EXPECT(at_kill.step >= 10 && at_kill.next_prompt > 0 &&
               at_kill.epoch == at_kill.next_prompt / at_kill.records &&
               at_kill.position == at_kill.next_prompt % at_kill.records,
           "checkpoint's data position %" PRId64 "/%" PRId64 " is not its next prompt %" PRId64
           " over %" PRId64 " records",
           at_kill.epoch, at_kill.position, at_kill.next_prompt, at_kill.records);
    Proc *l3 = testcl_proc(&c, "learner-3", NULL, NULL, l2);
    if (!testcl_start(&c, l3)) return testcl_finish(&c);
    char resumed[128];
    snprintf(resumed, sizeof resumed, "at epoch %" PRId64 ", record %" PRId64 " of %" PRId64,
             at_kill.epoch, at_kill.position, at_kill.records);
    EXPECT(testcl_wait_log(&c, l3, resumed, 30.0), "learner-3 did not resume the data %s", resumed);
    rc = proc_wait(l3, testcl_budget(&c, 120.0));
    EXPECT(rc == 0 && proc_exited_ok(l3), "the restarted learner did not finish");
    DataPos end;
    if (read_pos(&c, &end)) {
        testcl_note(&c,
                    "finished: step %" PRId64 ", next prompt %" PRId64 " (%" PRId64
                    " epochs of the data and %" PRId64 " records)",
                    end.step, end.next_prompt, end.epoch, end.position);
        EXPECT(end.step == 60 && end.next_prompt > at_kill.next_prompt,
               "after the restart: step %" PRId64 ", next prompt %" PRId64 " (at the kill %" PRId64
               ")",
               end.step, end.next_prompt, at_kill.next_prompt);
    }
    testcl_end(&c, a2);
    testcl_end(&c, reward);
    return testcl_finish(&c);
}
