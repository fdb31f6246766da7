/* learner_task's self-test, on real learners in this process (random-init
 * char models, sockets on loopback, checkpoints in a temp directory):
 *   - a --data run: each epoch of prompt ids visits every record once, in
 *     an order of its own; leases carry each record's task and meta; the
 *     learner's correctness check runs the record's scorer;
 *   - save and resume: a learner that leased prompts and checkpointed is
 *     dropped without a final save (as a kill would), and its successor, even
 *     started with another --seed, maps prompt ids to the same records,
 *     grants the leased-but-untrained prompts first and then the next fresh
 *     one: the data neither starts over nor skips a part;
 *   - refusals: the data file changed, --data dropped, --data added to a
 *     run of the built-in task;
 *   - --eval-data: the held-out evaluation on the file, with a record whose
 *     scorer runs only in the reward server skipped and counted. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "learner/learner_int.h"
#include "learner/learner_record.h"
#include "learner/learner_task.h"
#include "learner/lease.h"
#include "tests/support/expect.h"
#include "tests/support/learner_feed.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

enum { N_REC = 8 };

/* Record k: "k+1=" -> k+1; record 3 carries its own task and meta, record
 * 7 is scored by the reward server alone ("code"). */
static void write_data(const char *path, int changed_record)
{
    char   buf[2048];
    size_t n = 0;
    for (int k = 0; k < N_REC; k++) {
        if (k == 7)
            n += (size_t)snprintf(buf + n, sizeof buf - n,
                                  "{\"prompt\": \"7+1=\", \"answer\": \"8\", \"task\": "
                                  "\"code\", \"meta\": {\"tests\": \"assert f() == 8\"}}\n");
        else if (k == 3)
            n += (size_t)snprintf(buf + n, sizeof buf - n,
                                  "{\"prompt\": \"3+1=\", \"answer\": \"4\", \"task\": "
                                  "\"number:1,regex:0.5\", \"meta\": {\"regex\": \"^4$\"}}\n");
        else
            n += (size_t)snprintf(buf + n, sizeof buf - n,
                                  "{\"prompt\": \"%d+1=\", \"answer\": \"%d\"}\n", k,
                                  k == changed_record ? 99 : k + 1);
    }
    testfs_write(path, buf, n);
}

static LearnerConfig config(const char *dir, char *paths, const char *data, uint64_t seed)
{
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    snprintf(paths, 512, "%s/ckpt", dir);
    c.ckpt_dir = paths;
    c.metrics_path = c.summary_path = NULL;
    c.data_path = data;
    c.data_task = "arith";
    c.seed = seed;
    c.steps = 100;
    c.batch_groups = 8;
    c.group_size = 2;
    c.lease_prompts = 3;
    c.eval_n = 0;
    c.status_every_s = 0;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.hidden_dim = 64;
    return c;
}

/* The answer of train prompt id. */
static int answer_of(Learner *l, uint64_t id)
{
    int  ids[LEARNER_PROMPT_IDS_MAX];
    char answer[LEARNER_ANSWER_MAX];
    learner_task_prompt(l, id, ids, answer);
    return atoi(answer);
}

static Learner *start(const LearnerConfig *c, bool verbose, char **log)
{
    fileio_capture_begin();
    Learner *l = learner_new(c);
    char    *out = fileio_capture_end(verbose);
    if (log)
        *log = out;
    else
        free(out);
    return l;
}

static void test_epochs(Learner *l, int order[2][N_REC], bool verbose)
{
    bool same = true;
    for (int e = 0; e < 2; e++) {
        int seen[N_REC + 1] = {0};
        for (int i = 0; i < N_REC; i++) {
            int a = answer_of(l, (uint64_t)(e * N_REC + i));
            order[e][i] = a;
            if (a >= 1 && a <= N_REC) seen[a]++;
            if (e == 1 && a != order[0][i]) same = false;
        }
        for (int a = 1; a <= N_REC; a++)
            EXPECT(seen[a] == 1, "epoch %d: record with answer %d visited %d times", e, a, seen[a]);
        if (verbose) {
            printf("  epoch %d order:", e);
            for (int i = 0; i < N_REC; i++) printf(" %d", order[e][i]);
            printf("\n");
        }
    }
    EXPECT(!same, "epoch 1 visits the records in epoch 0's order");
    /* The wire prompt of the record with its own task and meta. */
    for (uint64_t p = 0; p < N_REC; p++) {
        if (answer_of(l, p) != 4) continue;
        Rlhf__Prompt pr = RLHF__PROMPT__INIT;
        learner_task_wire_prompt(l, p, 5, &pr);
        EXPECT(pr.prompt_id == p && !strcmp(pr.task, "number:1,regex:0.5") &&
                   !strcmp(pr.meta_json, "{\"regex\":\"^4$\"}") && !strcmp(pr.answer, "4") &&
                   pr.n_tokens == 5,
               "wire prompt %" PRIu64 ": task '%s' meta '%s' answer '%s' %zu ids", p, pr.task,
               pr.meta_json, pr.answer, pr.n_tokens);
        /* "4" then EOS: number 1 + regex 0.5 -> correct; "5": neither. */
        int32_t          toks[2] = {tok_id(l->tok, '4'), TOK_EOS};
        Rlhf__Completion cp = RLHF__COMPLETION__INIT;
        cp.tokens = toks;
        cp.n_tokens = 2;
        bool right = learner_task_is_correct(l, p, &cp, NULL);
        toks[0] = tok_id(l->tok, '5');
        bool wrong = learner_task_is_correct(l, p, &cp, NULL);
        EXPECT(right && !wrong, "is_correct by the record's scorer: '4' %d, '5' %d", right, wrong);
    }
    /* The reward server's verdict for the record it alone scores. */
    for (uint64_t p = 0; p < N_REC; p++) {
        if (answer_of(l, p) != 8) continue;
        int32_t               toks[1] = {TOK_EOS};
        Rlhf__Completion      cp = RLHF__COMPLETION__INIT;
        Rlhf__RewardComponent comp = RLHF__REWARD_COMPONENT__INIT, *cpp = &comp;
        Rlhf__Score           sc = RLHF__SCORE__INIT;
        cp.tokens = toks;
        cp.n_tokens = 1;
        comp.name = (char *)"correct";
        comp.value = 1.0f;
        sc.components = &cpp;
        sc.n_components = 1;
        bool yes = learner_task_is_correct(l, p, &cp, &sc);
        comp.value = 0.0f;
        sc.reward = 1.0f; /* the component decides, not the reward */
        bool no = learner_task_is_correct(l, p, &cp, &sc);
        sc.n_components = 0;
        bool by_reward = learner_task_is_correct(l, p, &cp, &sc);
        EXPECT(yes && !no && by_reward && !learner_task_is_correct(l, p, &cp, NULL),
               "a code record's correctness from its score: correct=1 %d, correct=0 %d, reward 1 "
               "%d",
               yes, no, by_reward);
    }
    Rlhf__Prompt pr = RLHF__PROMPT__INIT;
    learner_task_wire_prompt(l, 0, 0, &pr);
    EXPECT(!strcmp(pr.task, "arith") || !strcmp(pr.task, "number:1,regex:0.5") ||
               !strcmp(pr.task, "code"),
           "a record without a task has --task's: '%s'", pr.task);
    EXPECT(!strcmp(learner_task_name(l), "data"), "task name '%s'", learner_task_name(l));
}

static void test_resume(const char *dir, const char *data, bool verbose)
{
    char          paths[512];
    LearnerConfig c = config(dir, paths, data, 1);
    Learner      *a = start(&c, verbose, NULL);
    if (!EXPECT(a != NULL, "learner with --data did not start")) return;
    int order[2][N_REC];
    test_epochs(a, order, verbose);
    /* Three prompts leased and buffered (not trained), then a checkpoint;
     * then the learner is gone without a final save. */
    int fed = learner_feed(a, 3, 1.0f);
    EXPECT(fed == 3, "fed %d groups, expected 3", fed);
    fileio_capture_begin();
    EXPECT(learner_record_ckpt(a, false) == 0, "checkpoint");
    learner_free(&a);
    free(fileio_capture_end(verbose));

    char ts_path[600];
    testfs_path(ts_path, sizeof ts_path, "%s/ckpt/trainer_state.json", dir);
    char *ts = testfs_read(ts_path, 1 << 20);
    EXPECT(ts && strstr(ts, "\"data\"") && strstr(ts, "\"records\": 8") &&
               strstr(ts, "\"epoch\": 0") && strstr(ts, "\"position\": 3"),
           "trainer_state.json has no data position 0/3: %s", ts ? ts : "(missing)");
    free(ts);

    /* Another --seed: the order is the checkpoint's. */
    c = config(dir, paths, data, 99);
    char    *log = NULL;
    Learner *b = start(&c, verbose, &log);
    if (EXPECT(b != NULL, "resume with --data failed: %s", log)) {
        EXPECT(strstr(log, "resuming the data") && strstr(log, "epoch 0, record 3 of 8"),
               "no resume line in '%s'", log);
        bool same = true;
        for (int e = 0; e < 2; e++)
            for (int i = 0; i < N_REC; i++)
                if (answer_of(b, (uint64_t)(e * N_REC + i)) != order[e][i]) same = false;
        EXPECT(same, "the resumed learner maps prompt ids to other records");
        uint64_t        lease_id;
        const uint64_t *ids;
        int             n = lease_grant(b->leases, 3, learner_mono_ms(), &lease_id, &ids);
        EXPECT(n == 3 && ids[0] == 0 && ids[1] == 1 && ids[2] == 2,
               "first grant after the resume: %d prompts %" PRIu64 " %" PRIu64 " %" PRIu64
               ", expected 0 1 2 (leased, untrained)",
               n, n > 0 ? ids[0] : 0, n > 1 ? ids[1] : 0, n > 2 ? ids[2] : 0);
        n = lease_grant(b->leases, 1, learner_mono_ms(), &lease_id, &ids);
        EXPECT(n == 1 && ids[0] == 3,
               "second grant: %d prompts, %" PRIu64 ", expected 3 (the next)", n,
               n > 0 ? ids[0] : 0);
    }
    free(log);
    learner_free(&b);

    /* The data changed: refused. */
    write_data(data, 5);
    b = start(&c, verbose, &log);
    EXPECT(!b && strstr(log, "is not the data the checkpoint trained on"),
           "a changed data file was resumed: %s", log);
    free(log);
    learner_free(&b);
    write_data(data, -1);
    /* --data dropped: refused. */
    c.data_path = NULL;
    b = start(&c, verbose, &log);
    EXPECT(!b && strstr(log, "give it again to resume"), "a resume without --data: %s", log);
    free(log);
    learner_free(&b);
}

/* A run of the built-in task cannot be resumed on data. */
static void test_switch(const char *dir, const char *data, bool verbose)
{
    char sub[400], paths[512];
    testfs_path(sub, sizeof sub, "%s/builtin", dir);
    LearnerConfig c = config(sub, paths, NULL, 1);
    Learner      *a = start(&c, verbose, NULL);
    EXPECT(a && !strcmp(learner_task_name(a), "arith"), "built-in learner");
    learner_free(&a);
    c.data_path = data;
    char *log = NULL;
    a = start(&c, verbose, &log);
    EXPECT(!a && strstr(log, "trained on the built-in task"), "built-in run resumed on data: %s",
           log);
    free(log);
    learner_free(&a);
}

/* --eval-data: evaluated with the records' scorers; "code" is skipped. */
static void test_eval(const char *dir, const char *data, bool verbose)
{
    char evalp[400], paths[512], sub[400];
    testfs_path(evalp, sizeof evalp, "%s/eval.jsonl", dir);
    const char *text = "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"
                       "{\"prompt\": \"2+1=\", \"answer\": \"3\", \"task\": \"exact\"}\n"
                       "{\"prompt\": \"f=\", \"task\": \"code\", \"meta\": {\"tests\": \"x\"}}\n";
    testfs_write(evalp, text, strlen(text));
    testfs_path(sub, sizeof sub, "%s/eval", dir);
    LearnerConfig c = config(sub, paths, data, 1);
    c.eval_data_path = evalp;
    c.eval_n = 50;
    Learner *l = start(&c, verbose, NULL);
    if (!EXPECT(l != NULL, "learner with --eval-data did not start")) return;
    EvalResult r;
    int        rc = learner_task_evaluate(l, &r);
    EXPECT(rc == 0 && r.n == 2 && r.skipped == 1 && r.accuracy >= 0 && r.accuracy <= 1,
           "evaluation: rc %d, n %d, skipped %d, accuracy %g", rc, r.n, r.skipped, r.accuracy);
    learner_free(&l);
    /* --data without --eval-data: nothing to evaluate. */
    c.eval_data_path = NULL;
    testfs_path(sub, sizeof sub, "%s/eval2", dir);
    c = config(sub, paths, data, 1);
    c.eval_n = 50;
    l = start(&c, verbose, NULL);
    rc = l ? learner_task_evaluate(l, &r) : ERR_ARG;
    EXPECT(rc == 0 && r.n == 0, "a --data run without --eval-data evaluated %d", r.n);
    learner_free(&l);
}

int learner_task_selftest(bool verbose)
{
    char dir[256], data[400];
    if (!EXPECT(testfs_tmpdir_new("learner-task", dir, sizeof dir) == 0, "no temp directory"))
        return expect_end();
    int level = log_level(); /* the resume lines are checked */
    log_init("learner", level > LOG_INFO ? level : LOG_INFO);
    testfs_path(data, sizeof data, "%s/train.jsonl", dir);
    write_data(data, -1);
    test_resume(dir, data, verbose);
    test_switch(dir, data, verbose);
    test_eval(dir, data, verbose);
    log_init("learner", level);
    testfs_tmpdir_remove(dir);
    return expect_end();
}
