/* A reward model served end to end: rlhf-reward --reward-model hosting a
 * char-model reward model, with --scorer rm:1,arith:0.5, between a real
 * rlhf-learner and rlhf-actor on the built-in task.
 *
 * The reward model is set by hand (fixture_save_stop_rm) so that its
 * scores mean something that can be checked exactly: it reads +1 on
 * completions that end (the last id is the stop token) and -1 on
 * completions the length cap cut off, a preference the random policy can
 * learn. So every rm component is +1 or -1: each
 * step's mean times its samples, (rm + 1) / 2 x n, is a whole number of
 * stopped completions; reward_mean = rm + 0.5 x arith in every record
 * (metrics.jsonl components); the policy learns to stop (rm's mean
 * rises); the reward server's reward model scored every completion it
 * passed on; and the run completes with the lease accounting intact. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/formats/ckpt.h"
#include "common/nn/model.h"
#include "tests/support/expect.h"
#include "tests/support/fixtures.h"
#include "tests/support/testcl.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

/* The reward server's last status line: completions scored, and those its
 * reward model scored ("rm N completions in"). */
static bool rm_counts(const Proc *p, long long *scored, long long *by_rm)
{
    char       *text = proc_read_out(p);
    const char *last = testcl_find_last(text, ": scored ");
    const char *rm = last ? strstr(last, "rm ") : NULL;
    bool ok = last && rm && sscanf(last, ": scored %*d groups (%lld completions)", scored) == 1 &&
              sscanf(rm, "rm %lld completions", by_rm) == 1;
    free(text);
    return ok;
}

int rm_serve_selftest(bool verbose)
{
    TestCl c;
    if (!testcl_init(&c, "rm_serve", verbose, 300.0)) return testcl_finish(&c);
    char rm_dir[PATH_MAX + 16], f_rm[PATH_MAX + 32];
    testfs_path(rm_dir, sizeof rm_dir, "%s/rm", c.tmp);
    snprintf(f_rm, sizeof f_rm, "--reward-model=%s", rm_dir);
    if (!EXPECT(fixture_save_stop_rm(rm_dir), "cannot save the reward model to %s", rm_dir))
        return testcl_finish(&c);
    enum { STEPS = 40 };
    TestClRun o = {.steps = STEPS,
                   .batch_groups = 4,
                   .max_staleness = 2,
                   .lease_prompts = 2,
                   .eval_n = -1,
                   .extra = {"--lr=3e-3", NULL},
                   .reward_extra = {f_rm, "--scorer=rm:1,arith:0.5", "--threads=2", NULL}};
    Proc     *learner, *reward;
    if (!testcl_start_core(&c, &o, &learner, &reward)) return testcl_finish(&c);
    EXPECT(proc_output_has(reward, "rm_scorer: reward model") &&
               proc_output_has(reward, "every group scored with rm:1,arith:0.5"),
           "%s", "the reward server did not say it hosts the reward model");
    Proc *actor = testcl_actor(&c, "actor", 8, false);
    if (!testcl_start(&c, actor)) return testcl_finish(&c);
    testcl_wait_done(&c, learner, 200.0);

    TestClCounters k;
    json_t        *sum = testcl_check_summary(&c, STEPS, &k);
    testcl_note_counters(&c, &k);
    json_decref(sum);
    json_t *recs = testcl_check_metrics(&c);
    size_t  n_recs = json_array_size(recs);
    int     bad_sum = 0, bad_two = 0, missing = 0;
    double  first = 0, last = 0;
    int     n_first = 0, n_last = 0;
    for (size_t i = 0; i < n_recs; i++) {
        const json_t *r = json_array_get(recs, i);
        const json_t *comps = json_object_get(r, "components");
        const json_t *rm = json_object_get(comps, "rm"), *ar = json_object_get(comps, "arith");
        double        mean = json_number_value(json_object_get(r, "reward_mean"));
        int64_t       n = testcl_jint(r, "samples");
        if (!json_is_number(rm) || !json_is_number(ar) || n <= 0) {
            missing++;
            continue;
        }
        double vrm = json_number_value(rm), var = json_number_value(ar);
        bad_sum += fabs(mean - (vrm + 0.5 * var)) > 1e-5;
        /* Each rm is +1 or -1: the stopped completions are a whole number. */
        double stopped = (vrm + 1) / 2 * (double)n;
        bad_two += fabs(stopped - round(stopped)) > 1e-3 || vrm < -1 - 1e-6 || vrm > 1 + 1e-6;
        if (i < 5) first += vrm, n_first++;
        if (i + 5 >= n_recs) last += vrm, n_last++;
        if (verbose && (i < 3 || i + 3 >= n_recs))
            printf("  step %" PRId64 ": reward %.4f = rm %.4f + 0.5 x arith %.4f, %" PRId64
                   " samples\n",
                   testcl_jint(r, "step"), mean, vrm, var, n);
    }
    EXPECT(n_recs == STEPS && missing == 0, "%zu records, %d without rm and arith components",
           n_recs, missing);
    EXPECT(bad_sum == 0, "%d records whose reward_mean is not rm + 0.5 x arith", bad_sum);
    EXPECT(bad_two == 0, "%d records whose rm mean is not of rewards +-1", bad_two);
    first /= n_first ? n_first : 1;
    last /= n_last ? n_last : 1;
    testcl_note(&c, "rm's mean (2 x stopped fraction - 1): first 5 steps %.3f, last 5 %.3f", first,
                last);
    EXPECT(last >= first + 0.3,
           "the policy did not learn the reward model's preference: rm %.3f -> %.3f", first, last);
    json_decref(recs);

    testcl_end(&c, actor);
    testcl_end(&c, reward);
    long long scored = -1, by_rm = -1;
    EXPECT(rm_counts(reward, &scored, &by_rm) && scored > 0 && by_rm == scored,
           "reward server: %lld completions scored, %lld by the reward model (expected all)",
           scored, by_rm);
    testcl_note(&c, "reward server: %lld completions scored, %lld by the reward model", scored,
                by_rm);
    return testcl_finish(&c);
}
