/* chaos_check's self-test: the soak's invariants on records made by hand,
 * each violation the soak looks for written once and caught (a group
 * trained twice, a prompt twice in the final model's lineage, a step with
 * too few groups, a resume from a step never trained, counters that break
 * the lease identity or fall, a version that goes backwards at the learner
 * or at an actor), and the clean records passing, with the numbers behind
 * them; then the trained log of a real learner (two updates through
 * learner_train_step) read by the same check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "learner/learner.h"
#include "learner/learner_int.h"
#include "learner/learner_train.h"
#include "tests/chaos/chaos_check.h"
#include "tests/support/expect.h"
#include "tests/support/learner_feed.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

static char g_dir[512];

static const char *put(const char *name, const char *text)
{
    static char path[8][600];
    static int  k;
    char       *p = path[k++ % 8];
    snprintf(p, 600, "%s/%s", g_dir, name);
    CHECK(testfs_write(p, text, strlen(text)) == 0);
    return p;
}

static int64_t num(const json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

/* The lineage of a learner killed after step 2 that resumed from step 1:
 * the step-2 groups of epoch 0 are lost, epoch 9's step 2 counts. */
static const char k_trained_ok[] = "# run r1 epoch 0 step 0\n"
                                   "1 0 0000000000000001 0 0\n"
                                   "1 0 0000000000000001 1 1\n"
                                   "2 0 0000000000000002 0 2\n"
                                   "2 0 0000000000000002 1 3\n"
                                   "# run r1 epoch 9 step 1\n"
                                   "2 9 0000000900000001 0 2\n"
                                   "2 9 0000000900000001 1 3\n";

static void test_trained(bool verbose)
{
    json_t *sum = json_pack("{s:i, s:i}", "steps", 2, "trained", 4), *o = NULL;
    bool    ok = chaos_check_trained(put("t1", k_trained_ok), 2, sum, &o);
    EXPECT(ok && num(o, "groups_logged") == 6 && num(o, "lineage_groups") == 4 &&
               num(o, "groups_lost_with_a_killed_learner") == 2 && num(o, "incarnations") == 2,
           "a clean lineage across a restart passes: 6 logged, 4 in the lineage, 2 lost");
    if (verbose) {
        char *t = json_dumps(o, JSON_COMPACT);
        printf("  clean: %s\n", t);
        free(t);
    }
    json_decref(o);

    /* The same group (epoch, lease, slot) trained by two steps. */
    char buf[1024];
    snprintf(buf, sizeof buf, "%s3 9 0000000900000001 1 4\n3 9 0000000900000002 0 5\n",
             k_trained_ok);
    json_t *sum3 = json_pack("{s:i, s:i}", "steps", 3, "trained", 6);
    ok = chaos_check_trained(put("t2", buf), 2, sum3, &o);
    EXPECT(!ok && num(o, "groups_repeated") == 1, "a group trained twice is caught");
    json_decref(o);

    /* A prompt the lineage already holds trained again under a new lease. */
    snprintf(buf, sizeof buf, "%s3 9 0000000900000002 0 4\n3 9 0000000900000002 1 0\n",
             k_trained_ok);
    ok = chaos_check_trained(put("t3", buf), 2, sum3, &o);
    EXPECT(!ok && num(o, "lineage_prompts_repeated") == 1 && num(o, "groups_repeated") == 0,
           "a prompt trained twice in the lineage is caught");
    json_decref(o);

    /* A step of one group where the batch is two. */
    snprintf(buf, sizeof buf, "%s3 9 0000000900000002 0 4\n", k_trained_ok);
    json_t *sum25 = json_pack("{s:i, s:i}", "steps", 3, "trained", 5);
    ok = chaos_check_trained(put("t4", buf), 2, sum25, &o);
    EXPECT(!ok && num(o, "lineage_steps_not_batch_groups") == 1, "a short step is caught");
    json_decref(o);

    /* An incarnation resuming from a step nobody trained. */
    ok = chaos_check_trained(put("t5", "# run r1 epoch 0 step 0\n1 0 0000000000000001 0 0\n"
                                       "1 0 0000000000000001 1 1\n# run r1 epoch 4 step 5\n"),
                             2, json_pack("{s:i, s:i}", "steps", 1, "trained", 2), &o);
    EXPECT(!ok, "a resume beyond the lineage is caught");
    json_decref(o);

    /* The summary's count disagreeing with the lineage. */
    json_t *sum_bad = json_pack("{s:i, s:i}", "steps", 2, "trained", 6);
    ok = chaos_check_trained(put("t6", k_trained_ok), 2, sum_bad, &o);
    EXPECT(!ok, "a summary that counts the lost groups as trained is caught");
    json_decref(o);
    json_decref(sum_bad);
    json_decref(sum);
    json_decref(sum3);
    json_decref(sum25);
}

#define REC(step, epoch, issued, trained, reissued, inflight)                                      \
    "{\"step\":" #step ",\"version\":" #step ",\"epoch\":" #epoch ",\"issued\":" #issued           \
    ",\"trained\":" #trained ",\"dropped_stale\":0,\"reissued\":" #reissued                        \
    ",\"failed\":0,\"in_flight\":" #inflight ",\"buffered\":0}\n"

static void test_accounting_versions(void)
{
    json_t     *sum = json_pack("{s:b}", "accounting_ok", 1), *o = NULL;
    const char *good = put("m1", REC(1, 0, 10, 8, 0, 2) REC(2, 0, 20, 16, 1, 3)
                                     REC(2, 7, 20, 16, 4, 0) REC(3, 7, 28, 24, 4, 0));
    EXPECT(chaos_check_accounting(good, sum, &o) && num(o, "records_checked") == 4 &&
               num(o, "epochs") == 2,
           "clean records across a restart pass the accounting");
    json_decref(o);
    const char *broken = put("m2", REC(1, 0, 10, 8, 0, 2) REC(2, 0, 21, 16, 1, 3));
    EXPECT(!chaos_check_accounting(broken, sum, &o) && num(o, "violations") == 1,
           "a record that breaks the identity is caught");
    json_decref(o);
    const char *fell = put("m3", REC(1, 0, 10, 8, 0, 2) REC(2, 0, 9, 8, 0, 1));
    EXPECT(!chaos_check_accounting(fell, sum, &o), "a counter falling within an epoch is caught");
    json_decref(o);
    EXPECT(!chaos_check_accounting(good, NULL, &o), "no summary is a violation");
    json_decref(o);

    const char *actor = put("a1", "x: actor a: weights run 'r1' epoch 0 v1 installed (9 bytes)\n"
                                  "x: actor a: weights run 'r1' epoch 0 v2 installed (9 bytes)\n"
                                  "x: actor a: weights run 'r1' epoch 7 v2 installed (9 bytes)\n"
                                  "x: actor a: weights run 'r1' epoch 7 v2 installed (9 bytes)\n");
    EXPECT(chaos_check_versions(good, &actor, 1, &o) && num(o, "actor_installs") == 4 &&
               num(o, "learner_records") == 4,
           "rising versions pass (an actor restarted may install its version again)");
    json_decref(o);
    const char *back = put("a2", "x: actor a: weights run 'r1' epoch 7 v5 installed (9 bytes)\n"
                                 "x: actor a: weights run 'r1' epoch 0 v9 installed (9 bytes)\n"
                                 "x: actor a: weights run 'r1' epoch 7 v4 installed (9 bytes)\n");
    EXPECT(!chaos_check_versions(good, &back, 1, &o) && num(o, "actor_backward") == 1,
           "an actor going back within an epoch is caught (another epoch in between or not)");
    json_decref(o);
    const char *lback =
        put("m4", REC(1, 0, 10, 8, 0, 2) REC(2, 0, 20, 16, 1, 3) REC(2, 0, 20, 16, 1, 3));
    EXPECT(!chaos_check_versions(lback, &actor, 1, &o) && num(o, "learner_backward") == 1,
           "a learner version repeated within an epoch is caught");
    json_decref(o);
    json_decref(sum);
}

/* A real learner's trained log: two updates, then the check on it. */
static void test_learner_log(bool verbose)
{
    char path[600];
    snprintf(path, sizeof path, "%s/learner-trained.log", g_dir);
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    c.ckpt_dir = c.metrics_path = c.summary_path = NULL;
    c.trained_log_path = path;
    c.batch_groups = 2;
    c.group_size = 4;
    c.lease_prompts = 2;
    c.lease_timeout_ms = 60000;
    c.eval_n = 0;
    c.status_every_s = 0;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.hidden_dim = 64;
    Learner *l = learner_new(&c);
    EXPECT(l != NULL, "a small learner starts");
    if (!l) return;
    int steps = 0;
    for (int i = 0; i < 2; i++) {
        learner_feed(l, 2, 1.0f);
        steps += learner_train_step(l);
    }
    char run[40];
    snprintf(run, sizeof run, "%s", l->run_id);
    LeaseCounters lc;
    lease_counters(l->leases, &lc);
    learner_free(&l);
    EXPECT(steps == 2 && lc.trained == 4, "two updates of two groups (%d steps, %llu trained)",
           steps, (unsigned long long)lc.trained);
    char *text = testfs_read(path, 1 << 20);
    char  head[80];
    snprintf(head, sizeof head, "# run %s epoch 0 step 0\n1 0 ", run);
    EXPECT(text && !strncmp(text, head, strlen(head)),
           "the log opens with the incarnation's header, then step 1 of epoch 0: '%.60s'",
           text ? text : "(none)");
    if (verbose && text) printf("  trained log:\n%s", text);
    free(text);
    json_t *sum = json_pack("{s:i, s:I}", "steps", 2, "trained", (json_int_t)lc.trained), *o;
    EXPECT(chaos_check_trained(path, 2, sum, &o) && num(o, "groups_logged") == 4 &&
               num(o, "lineage_steps") == 2,
           "the learner's log passes the check: 4 groups, 2 steps");
    json_decref(o);
    json_decref(sum);
}

int chaos_check_selftest(bool verbose)
{
    expect_begin("chaos_check", verbose);
    if (testfs_tmpdir_new("chaos_check", g_dir, sizeof g_dir) != 0) {
        EXPECT(false, "a temp directory");
        return expect_end();
    }
    test_trained(verbose);
    test_accounting_versions();
    test_learner_log(verbose);
    testfs_tmpdir_remove(g_dir);
    return expect_end();
}
