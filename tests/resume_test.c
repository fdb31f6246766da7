/* resume_test: the careless operator and the learner's checkpoints (issue 8,
 * findings 4 and 7), with the real rlhf-learner program.
 *
 * Damage: three checkpoints of one run are made by training a learner in
 * this process (steps 0, 1 and 2; the last three are kept), then 4096
 * floats of the newest model.safetensors are set to 1000.0, as in the
 * finding. rlhf-learner started on that directory must refuse the damaged
 * checkpoint with an error naming the file and the tensor, set it aside,
 * say loudly that it resumes from the previous one, and resume step 1 with
 * step 1's weights bit for bit. Damaged optimizer moments are refused the
 * same way. When every checkpoint is damaged it must refuse to start,
 * leaving them all where they are.
 *
 * PPO: the critic resumed is the one saved with the resumed policy's step,
 * found in the critic's own history; without a good one a new critic
 * starts (logged).
 *
 * Symbolic link: a checkpoint directory that is a link to one elsewhere
 * resumes and then saves through the link (the save failed before), the
 * link staying a link and the kept predecessor beside the target. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "learner/epoch.h"
#include "learner/learner.h"
#include "learner/learner_int.h"
#include "learner/learner_record.h"
#include "learner/learner_train.h"
#include "tests/support/expect.h"
#include "tests/support/learner_feed.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define RT_TIMEOUT_S 30.0

static char g_prog[PATH_MAX + 16]; /* rlhf-learner */

/* The learner both this process and the program run: a tiny random-init
 * model, nothing evaluated, ephemeral ports. */
static LearnerConfig rt_config(const char *ckpt)
{
    LearnerConfig c = LEARNER_DEFAULTS;
    c.lease_ep = c.results_ep = c.weights_ep = c.snapshot_ep = "tcp://127.0.0.1:*";
    c.ckpt_dir = ckpt;
    c.metrics_path = c.summary_path = NULL;
    c.batch_groups = 2;
    c.group_size = 4;
    c.lease_prompts = 2;
    c.lr = 1e-3f;
    c.lr_warmup_steps = 0;
    c.eval_n = 0;
    c.status_every_s = 0;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.hidden_dim = 64;
    return c;
}

/* rlhf-learner on ckpt with rt_config's settings (its output captured). */
static Proc *rt_program(const char *ckpt)
{
    const char *const argv[] = {"rlhf-learner",
                                "--lease",
                                "tcp://127.0.0.1:*",
                                "--results",
                                "tcp://127.0.0.1:*",
                                "--weights",
                                "tcp://127.0.0.1:*",
                                "--snapshot",
                                "tcp://127.0.0.1:*",
                                "--ckpt-dir",
                                ckpt,
                                "--metrics",
                                "",
                                "--summary",
                                "",
                                "--batch-groups",
                                "2",
                                "--group",
                                "4",
                                "--lease-prompts",
                                "2",
                                "--eval-n",
                                "0",
                                "--dim",
                                "32",
                                "--layers",
                                "1",
                                "--heads",
                                "2",
                                "--hidden",
                                "64",
                                "--status-every",
                                "0",
                                "--log-level",
                                "info",
                                NULL};
    return proc_new(g_prog, argv, NULL);
}

/* Runs p until it serves (its start line is logged), then SIGTERM. Returns
 * its exit status, -1 if it did not exit in time. */
static int rt_run(Proc *p)
{
    if (proc_start(p) != 0) return -1;
    if (proc_wait_output(p, "leases of", RT_TIMEOUT_S)) proc_signal(p, SIGTERM);
    if (proc_wait(p, RT_TIMEOUT_S) != 0) {
        proc_kill(p);
        return -1;
    }
    return proc_exit_code(p);
}

/* Overwrites n floats of dir/file's data region from float at with value
 * (the finding's damage). */
static int damage_file(const char *dir, const char *file, size_t at, size_t n, float value)
{
    char   path[PATH_MAX];
    char  *raw = NULL;
    size_t len = 0;
    if (!testfs_path(path, sizeof path, "%s/%s", dir, file)) return ERR_RANGE;
    int rc = fileio_read_all(path, 1 << 26, false, &raw, &len);
    if (rc) return rc;
    uint64_t hlen = 0;
    memcpy(&hlen, raw, 8);
    size_t off = 8 + hlen + at * sizeof(float);
    if (off + n * sizeof(float) > len) rc = ERR_RANGE;
    for (size_t i = 0; rc == 0 && i < n; i++)
        memcpy(raw + off + i * sizeof(float), &value, sizeof value);
    if (rc == 0) rc = fileio_write_atomic(path, raw, len);
    free(raw);
    return rc;
}

/* The same in dir/model.safetensors. */
static int damage(const char *dir, size_t at, size_t n, float value)
{
    return damage_file(dir, CKPT_MODEL_FILE, at, n, value);
}

/* The policy's weights saved in dir, in a new buffer of *n floats (caller
 * frees), or NULL if they do not load. */
static float *saved_weights(const char *dir, size_t *n)
{
    ModelConfig mc;
    if (ckpt_load_config(dir, &mc) != 0) return NULL;
    Model *m = model_new(&mc);
    float *w = NULL;
    fileio_capture_begin();
    int rc = ckpt_load(dir, m);
    free(fileio_capture_end(false));
    if (rc == 0) {
        *n = model_num_params(m);
        w = xmalloc(*n * sizeof(float));
        memcpy(w, model_params(m), *n * sizeof(float));
    }
    model_free(&m);
    return w;
}

/* Prints the program's output lines that hold a or b (for -v). */
static void print_lines(const Proc *p, const char *a, const char *b)
{
    char *out = proc_read_err(p);
    for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n"))
        if (strstr(line, a) || strstr(line, b)) printf("  resume: | %s\n", line);
    free(out);
}

static int64_t saved_step(const char *dir)
{
    CkptTrainerState ts;
    if (ckpt_load_trainer_state(dir, &ts) != 0) return -1;
    json_decref(ts.extra);
    return ts.step;
}

/* Trains a learner in this process to step 2, checkpointing at 0, 1 and 2;
 * returns step 1's weights (caller frees), n floats. */
static float *make_history(const char *ckpt, size_t *n)
{
    LearnerConfig c = rt_config(ckpt);
    Learner      *l = learner_new(&c); /* saves step 0 */
    float        *w1 = NULL;
    if (!EXPECT(l != NULL, "learner_new on '%s'", ckpt)) return NULL;
    for (int s = 1; s <= 2; s++) {
        bool ok = learner_feed(l, 2, 1.0f) == 2 && learner_train_step(l) == 1 &&
                  learner_record_ckpt(l, false) == 0;
        EXPECT(ok, "training step %d and its checkpoint", s);
        if (s == 1) {
            *n = model_num_params(l->policy);
            w1 = xmalloc(*n * sizeof(float));
            memcpy(w1, model_params(l->policy), *n * sizeof(float));
        }
    }
    learner_free(&l);
    return w1;
}

static void test_damaged(const char *tmp)
{
    char ckpt[PATH_MAX], prev1[PATH_MAX], prev2[PATH_MAX], aside[PATH_MAX];
    testfs_path(ckpt, sizeof ckpt, "%s/ckpt", tmp);
    testfs_path(prev1, sizeof prev1, "%s/ckpt%s1", tmp, CKPT_PREV_TAG);
    testfs_path(prev2, sizeof prev2, "%s/ckpt%s2", tmp, CKPT_PREV_TAG);
    testfs_path(aside, sizeof aside, "%s/ckpt%s1", tmp, CKPT_DAMAGED_TAG);
    size_t n = 0;
    float *w1 = make_history(ckpt, &n);
    if (!w1) return;
    EXPECT(saved_step(ckpt) == 2 && saved_step(prev2) == 1 && saved_step(prev1) == 0,
           "three checkpoints kept: ckpt at step %lld, .prev-2 at %lld, .prev-1 at %lld "
           "(expected 2, 1, 0)",
           (long long)saved_step(ckpt), (long long)saved_step(prev2), (long long)saved_step(prev1));
    EXPECT(n > 1024 + 4096 && damage(ckpt, 1024, 4096, 1000.0f) == 0,
           "4096 floats of the newest model.safetensors (of %zu) set to 1000.0", n);

    Proc *p = rt_program(ckpt);
    int   rc = rt_run(p);
    char  want_file[PATH_MAX + 64], want_ck[PATH_MAX + 64], want_from[PATH_MAX + 64],
        want_aside[2 * PATH_MAX + 64];
    snprintf(want_file, sizeof want_file, "'%s/%s': tensor '", ckpt, CKPT_MODEL_FILE);
    snprintf(want_ck, sizeof want_ck, "checkpoint '%s' is damaged", ckpt);
    snprintf(want_from, sizeof want_from, "RESUMING FROM AN OLDER CHECKPOINT: '%s' (step 1,",
             prev2);
    snprintf(want_aside, sizeof want_aside, "'%s' set aside as '%s'", ckpt, aside);
    bool named = proc_output_has(p, want_file) && proc_output_has(p, "is damaged: its");
    bool ok = EXPECT(rc == 0, "rlhf-learner on a damaged checkpoint: exit %d, expected 0", rc);
    ok &= EXPECT(named, "the refusal names the file and the tensor (\"%s<name>' is damaged\")",
                 want_file);
    ok &= EXPECT(proc_output_has(p, want_ck) && proc_output_has(p, want_from) &&
                     proc_output_has(p, want_aside),
                 "the fallback is logged: damaged, set aside, RESUMING FROM AN OLDER "
                 "CHECKPOINT '%s'",
                 prev2);
    if (!ok) proc_report(p, 40);
    if (expect_verbose()) print_lines(p, "damaged", "RESUMING");
    proc_free(&p);

    /* What it resumed: step 1's weights, bit for bit, now the newest. */
    size_t m = 0;
    float *now = saved_weights(ckpt, &m);
    EXPECT(now && m == n && !memcmp(now, w1, n * sizeof(float)) && saved_step(ckpt) == 1,
           "the resumed checkpoint holds step %lld with %s weights (expected step 1's)",
           (long long)saved_step(ckpt),
           !now                                              ? "unloadable"
           : (m == n && !memcmp(now, w1, n * sizeof(float))) ? "step 1's"
                                                             : "other");
    free(now);
    float  got = 0;
    char   bad_file[PATH_MAX + 32];
    char  *raw = NULL;
    size_t len = 0;
    testfs_path(bad_file, sizeof bad_file, "%s/%s", aside, CKPT_MODEL_FILE);
    if (fileio_read_all(bad_file, 1 << 26, false, &raw, &len) == 0 && len > 8) {
        uint64_t hlen;
        memcpy(&hlen, raw, 8);
        if (8 + hlen + 2048 * sizeof(float) <= len)
            memcpy(&got, raw + 8 + hlen + 2048 * sizeof(float), sizeof got);
    }
    free(raw);
    EXPECT(got == 1000.0f, "the damaged checkpoint is kept, set aside, for inspection: %s",
           bad_file);
    CkptHistory h;
    EXPECT(ckpt_history(ckpt, &h) == 0 && h.n == 3, "history after the fallback: %d, expected 3",
           h.n);
    ckpt_history_free(&h);

    /* Damaged optimizer state makes the checkpoint as unusable as damaged
     * weights: the previous one is resumed (in this process, faster). */
    EXPECT(damage_file(ckpt, CKPT_OPTIM_FILE, 10, 1, 1000.0f) == 0, "%s",
           "one moment of the newest optimizer.safetensors damaged");
    LearnerConfig c = rt_config(ckpt);
    int           level = log_level();
    log_init("resume", level > LOG_WARN ? level : LOG_WARN);
    fileio_capture_begin();
    Learner *l = learner_new(&c);
    char    *log = fileio_capture_end(expect_verbose());
    log_init("resume", level);
    snprintf(want_file, sizeof want_file, "'%s/%s': tensor 'exp_avg' is damaged", ckpt,
             CKPT_OPTIM_FILE);
    EXPECT(l && l->step == 1 && strstr(log, want_file) && strstr(log, "RESUMING FROM AN OLDER"),
           "damaged moments: refused (\"%s\") and the previous checkpoint resumed at step %lld",
           want_file, l ? (long long)l->step : -1LL);
    free(log);
    learner_free(&l);

    /* Every checkpoint damaged: the start is refused and nothing is moved. */
    EXPECT(damage(ckpt, 1024, 4096, 1000.0f) == 0 && damage(prev2, 1024, 4096, 1000.0f) == 0 &&
               damage(prev1, 1024, 4096, 1000.0f) == 0,
           "%s", "all three damaged");
    p = rt_program(ckpt);
    rc = rt_run(p);
    if (!EXPECT(rc == 1 && proc_output_has(p, "none of the 3 checkpoints") && ckpt_exists(ckpt) &&
                    ckpt_exists(prev1) && ckpt_exists(prev2),
                "all damaged: exit %d (expected 1) with 'none of the 3 checkpoints', all "
                "left in place",
                rc))
        proc_report(p, 40);
    if (expect_verbose()) print_lines(p, "none of", "none of");
    proc_free(&p);
    free(w1);
}

/* PPO: the critic follows the policy back. The newest policy checkpoint is
 * damaged, so step 1 is resumed; the critic must be step 1's too (matched
 * by run, step and version), not the newest. With step 1's critic damaged
 * as well, a new critic starts from the policy (logged), nothing crashes. */
static void test_ppo_critic(const char *tmp)
{
    char ckpt[PATH_MAX], critic[PATH_MAX], critic_prev2[PATH_MAX];
    testfs_path(ckpt, sizeof ckpt, "%s/ppo", tmp);
    testfs_path(critic, sizeof critic, "%s/ppo-critic", tmp);
    testfs_path(critic_prev2, sizeof critic_prev2, "%s/ppo-critic%s2", tmp, CKPT_PREV_TAG);
    LearnerConfig c = rt_config(ckpt);
    c.algo.kind = ALGO_PPO;
    Learner *l = learner_new(&c);
    if (!EXPECT(l != NULL, "a PPO learner on '%s'", ckpt)) return;
    size_t n = model_num_params(l->critic);
    float *c1 = xmalloc(n * sizeof(float));
    for (int s = 1; s <= 2; s++) {
        EXPECT(learner_feed(l, 2, 1.0f) == 2 && learner_train_step(l) == 1 &&
                   learner_record_ckpt(l, false) == 0,
               "PPO step %d and its checkpoint", s);
        if (s == 1) memcpy(c1, model_params(l->critic), n * sizeof(float));
    }
    learner_free(&l);
    EXPECT(damage(ckpt, 1024, 4096, 1000.0f) == 0 && saved_step(critic_prev2) == 1, "%s",
           "the newest policy damaged; step 1's critic kept as .prev-2");
    fileio_capture_begin();
    l = learner_new(&c);
    free(fileio_capture_end(false));
    EXPECT(l && l->step == 1 && !memcmp(model_params(l->critic), c1, n * sizeof(float)),
           "resumed at step %lld with step 1's critic (expected step 1 and its critic)",
           l ? (long long)l->step : -1LL);
    learner_free(&l);

    /* Step 1's critics damaged as well: the one kept (.prev-2) and the one
     * the resume above saved (the newest); the newest policy, step 1's
     * from that save, damaged again. */
    EXPECT(damage(ckpt, 1024, 4096, 1000.0f) == 0 && damage(critic, 0, 1024, 1000.0f) == 0 &&
               damage(critic_prev2, 0, 1024, 1000.0f) == 0 && saved_step(critic) == 1,
           "%s", "the newest policy and both step-1 critics damaged");
    int level = log_level();
    log_init("resume", level > LOG_ERROR ? level : LOG_ERROR);
    fileio_capture_begin();
    l = learner_new(&c);
    char *log = fileio_capture_end(expect_verbose());
    log_init("resume", level);
    bool fresh = l && l->critic;
    for (size_t i = 0; fresh && i < n; i++) fresh = model_params(l->critic)[i] != 1000.0f;
    EXPECT(l && l->step == 1 && fresh && strstr(log, "critic checkpoint") &&
               strstr(log, "a new critic starts from the policy"),
           "with no good critic of step 1 a new critic starts (logged): learner %s, step %lld",
           l ? "up" : "NULL", l ? (long long)l->step : -1LL);
    free(log);
    learner_free(&l);
    free(c1);
}

static void test_symlink(const char *tmp)
{
    char disk[PATH_MAX], real[PATH_MAX], link[PATH_MAX], kept[PATH_MAX];
    testfs_path(disk, sizeof disk, "%s/disk", tmp);
    testfs_path(real, sizeof real, "%s/disk/ckpt", tmp);
    testfs_path(link, sizeof link, "%s/ckpt-link", tmp);
    testfs_path(kept, sizeof kept, "%s/disk/ckpt%s1", tmp, CKPT_PREV_TAG);
    if (!EXPECT(mkdir(disk, 0755) == 0 && symlink("disk/ckpt", link) == 0, "%s",
                "a directory elsewhere and a link to it"))
        return;
    LearnerConfig c = rt_config(real);
    Learner      *l = learner_new(&c); /* epoch 0's checkpoint, in the real directory */
    EXPECT(l != NULL, "a checkpoint at '%s'", real);
    learner_free(&l);

    Proc *p = rt_program(link);
    int   rc = rt_run(p);
    if (!EXPECT(rc == 0 && proc_output_has(p, "resumed run"),
                "rlhf-learner --ckpt-dir <a symbolic link>: exit %d, expected a resume and a "
                "clean stop (exit 0)",
                rc))
        proc_report(p, 40);
    proc_free(&p);
    struct stat      st;
    CkptTrainerState ts = {0};
    bool             loaded = ckpt_load_trainer_state(link, &ts) == 0;
    json_t          *ep = loaded ? json_object_get(ts.extra, "epoch") : NULL;
    EXPECT(lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && loaded && json_is_integer(ep) &&
               epoch_restarts((uint64_t)json_integer_value(ep)) == 1 && ckpt_exists(kept),
           "the save went through the link: still a link, epoch %lld (one restart) saved in the "
           "target, the "
           "previous kept beside it at '%s'",
           json_is_integer(ep) ? (long long)json_integer_value(ep) : -1LL, kept);
    json_decref(ts.extra);
}

int resume_selftest(bool verbose)
{
    char build[PATH_MAX], tmp[PATH_MAX];
    proc_build_dir(build, sizeof build);
    testfs_path(g_prog, sizeof g_prog, "%s/rlhf-learner", build);
    if (!EXPECT(access(g_prog, X_OK) == 0,
                "'%s' not found: build the programs first (make test sets RLHF_BUILD_DIR)", g_prog))
        return expect_end();
    if (!EXPECT(proc_catch_interrupts() == 0 && testfs_tmpdir_new("resume", tmp, sizeof tmp) == 0,
                "%s", "temp directory"))
        return expect_end();
    if (verbose) printf("  resume: '%s', files in '%s'\n", g_prog, tmp);
    test_damaged(tmp);
    test_ppo_critic(tmp);
    test_symlink(tmp);
    EXPECT(testfs_tmpdir_remove(tmp) == 0, "removing '%s'", tmp);
    return expect_end();
}
