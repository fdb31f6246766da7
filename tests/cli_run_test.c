/* cli_run_test: `rlhf run`'s flags reach the programs it starts.
 *
 * --dry-run prints every child's command line: the data, model and scorer
 * flags, --model's preset, the pass-through flags and the --algo names must
 * be on the right program's line, and nothing the user did not ask for on
 * the others. The defaults --help states for the flags rlhf run passes on
 * only when given must be rlhf-learner's own. Then a real run of the char
 * model on a JSONL file (a tiny rlhf-sft warm start, 2 GRPO steps) shows the
 * learner and the reward server took them, and a learner flag that the
 * learner refuses ends the run at once instead of restarting it.
 *
 * Programs come from RLHF_BUILD_DIR (make test sets it) or beside the test
 * binary; each check names the command line and its output on failure. */
#include "tests/test_list.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "learner/algo/algo.h"
#include "tests/support/expect.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"

#define RUN_TIMEOUT_S 180.0

static char g_build[PATH_MAX]; /* where the programs are */
static char g_tmp[PATH_MAX];   /* this test's temp directory */
static bool g_verbose;

/* Runs build/argv[0] to its end with output captured. */
static ProcResult run(const char *const *argv, double timeout_s)
{
    char       path[PATH_MAX];
    ProcResult r;
    testfs_path(path, sizeof path, "%s/%s", g_build, argv[0]);
    int rc = proc_run(path, argv, NULL, timeout_s, &r);
    EXPECT_RUN(rc == 0 && r.signal == 0, &r, "'%s' %s", r.cmd,
               rc == ERR_TIMEOUT ? "ran longer than the timeout and was killed"
               : rc              ? "could not be run or its output not read"
                                 : "died of a signal");
    if (g_verbose) printf("  cli_run: exit %d in %.2fs: %s\n", r.status, r.seconds, r.cmd);
    return r;
}

/* The line of --dry-run's output for child name ("learner", "reward-1"),
 * copied into line; false if there is none. */
static bool child_line(const char *out, const char *name, char *line, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) || p[n] != ':') continue;
        const char *end = strchr(p, '\n');
        size_t      len = end ? (size_t)(end - p) : strlen(p);
        snprintf(line, cap, "%.*s", (int)len, p);
        return true;
    }
    return false;
}

/* Whether line holds " flag value " as two whole words (value NULL: the
 * flag alone). */
static bool has_arg(const char *line, const char *flag, const char *value)
{
    char want[512];
    snprintf(want, sizeof want, " %s%s%s", flag, value ? " " : "", value ? value : "");
    size_t n = strlen(want);
    for (const char *p = strstr(line, want); p; p = strstr(p + 1, want))
        if (p[n] == ' ' || p[n] == '\0') return true;
    return false;
}

/* `rlhf run --algo` takes every name rlhf-learner's --algo takes (deploy/
 * keeps its own list: it may not include learner/), and no other. */
static void test_run_algos(void)
{
    for (int i = 0; algo_kind_names[i]; i++) {
        const char *argv[] = {"rlhf", "run", "--algo", algo_kind_names[i], "--help", NULL};
        ProcResult  r = run(argv, 30);
        EXPECT_RUN(r.status == 0, &r,
                   "rlhf run --algo %s: exit %d, expected 0 (a learner name rlhf run refuses)",
                   algo_kind_names[i], r.status);
        proc_result_free(&r);
    }
    const char *bad[] = {"rlhf", "run", "--algo", "no_such_algo", "--help", NULL};
    ProcResult  r = run(bad, 30);
    EXPECT_RUN(r.status == 2, &r, "rlhf run --algo no_such_algo: exit %d, expected 2", r.status);
    proc_result_free(&r);
}

/* Checks that each {flag, value} of want is (or, with is_absent, is not) on
 * the line of child name. */
typedef struct {
    const char *flag, *value;
} Arg;

static void expect_args(const ProcResult *r, const char *name, const Arg *want, int n,
                        bool is_absent)
{
    char line[8192];
    if (!EXPECT_RUN(child_line(r->out, name, line, sizeof line), r,
                    "--dry-run printed no line for %s", name))
        return;
    for (int i = 0; i < n; i++) {
        bool has = has_arg(line, want[i].flag, want[i].value);
        EXPECT_RUN(has != is_absent, r, "%s's command line %s '%s%s%s': %s", name,
                   is_absent ? "holds" : "lacks", want[i].flag, want[i].value ? " " : "",
                   want[i].value ? want[i].value : "", line);
    }
}

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_dry_run(void)
{
    /* A pretrained model with a user's data: everything on its program. */
    const char *argv[] = {"rlhf",
                          "run",
                          "--dry-run",
                          "--model",
                          "m/Model.gguf",
                          "--data",
                          "d/train.jsonl",
                          "--eval-data",
                          "d/eval.jsonl",
                          "--task",
                          "number:0.8,format_answer_tag:0.2",
                          "--scorer",
                          "code",
                          "--rewards",
                          "2",
                          "--actors",
                          "2",
                          "--temperature",
                          "0.9",
                          "--data-max-bad",
                          "20",
                          "--learner-flags",
                          "--max-staleness 7  --epochs 2",
                          "--reward-flags",
                          "--code-all-or-nothing --threads 3",
                          "--actor-flags",
                          "--batch 5",
                          NULL};
    ProcResult  r = run(argv, 30);
    EXPECT_RUN(r.status == 0, &r, "rlhf run --dry-run with --model and --data: exit %d", r.status);
    const Arg learner[] = {
        {"--model", "m/Model.gguf"},
        {"--data", "d/train.jsonl"},
        {"--eval-data", "d/eval.jsonl"},
        {"--task", "number:0.8,format_answer_tag:0.2"},
        {"--data-max-bad", "20"},
        {"--temperature", "0.9"}, /* given: not the preset's 0.7 */
        /* --model's preset for what was not given: */
        {"--steps", "40"},
        {"--lr", "2e-05"},
        {"--batch-groups", "4"},
        {"--eval-n", "96"},
        {"--group", "4"},
        {"--max-new-tokens", "16"},
        {"--kl-beta", "0.01"},
        {"--lease-prompts", "2"},
        {"--lease-timeout-ms", "120000"},
        {"--warmup", "2"},
        {"--ckpt-every", "0"},
        {"--max-staleness", "7"},
        {"--epochs", "2"},
    };
    expect_args(&r, "learner", learner, N_OF(learner), false);
    const Arg not_learner[] = {{"--init", NULL}, {"--scorer", NULL}, {"--temperature", "0.7"}};
    expect_args(&r, "learner", not_learner, N_OF(not_learner), true);
    const Arg reward[] = {{"--model", "m/Model.gguf"},
                          {"--scorer", "code"},
                          {"--code-all-or-nothing", NULL},
                          {"--threads", "3"}};
    const Arg not_reward[] = {{"--data", NULL}, {"--task", NULL}, {"--batch", NULL}};
    const Arg actor[] = {{"--batch", "5"}};
    const Arg not_actor[] = {{"--model", NULL}, {"--scorer", NULL}, {"--epochs", NULL}};
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "reward-%d", i);
        expect_args(&r, name, reward, N_OF(reward), false);
        expect_args(&r, name, not_reward, N_OF(not_reward), true);
        snprintf(name, sizeof name, "actor-%d", i);
        expect_args(&r, name, actor, N_OF(actor), false);
        expect_args(&r, name, not_actor, N_OF(not_actor), true);
    }
    EXPECT_RUN(!strstr(r.out, "sft:"), &r, "--model still runs the SFT warm start");
    proc_result_free(&r);

    /* The char model: a warm start to make, nothing passed that was not given. */
    char init[PATH_MAX];
    testfs_path(init, sizeof init, "%s/no-such-ckpt", g_tmp);
    const char *plain[] = {"rlhf",    "run", "--dry-run", "--init", init,
                           "--group", "6",   "--scorer",  "number", NULL};
    r = run(plain, 30);
    EXPECT_RUN(r.status == 0, &r, "rlhf run --dry-run with the char model: exit %d", r.status);
    const Arg plain_l[] = {{"--init", init}, {"--group", "6"}, {"--steps", "400"}};
    expect_args(&r, "learner", plain_l, N_OF(plain_l), false);
    const Arg plain_not[] = {{"--model", NULL},          {"--temperature", NULL},
                             {"--max-new-tokens", NULL}, {"--kl-beta", NULL},
                             {"--data", NULL},           {"--ckpt-every", NULL}};
    expect_args(&r, "learner", plain_not, N_OF(plain_not), true);
    const Arg plain_r[] = {{"--scorer", "number"}};
    expect_args(&r, "reward-0", plain_r, N_OF(plain_r), false);
    char line[8192];
    EXPECT_RUN(child_line(r.out, "sft", line, sizeof line) && has_arg(line, "--out", init), &r,
               "no SFT warm start into '%s' before the cluster", init);
    proc_result_free(&r);

    /* Combinations refused with the reason, exit 2. */
    const char *both[] = {"rlhf", "run", "--dry-run", "--model", "m.gguf", "--init", "x", NULL};
    r = run(both, 30);
    EXPECT_RUN(r.status == 2 && strstr(r.err, "--model and --init"), &r,
               "--model with --init: exit %d, expected 2 naming both", r.status);
    proc_result_free(&r);
    const char *eval_only[] = {"rlhf", "run", "--dry-run", "--eval-data", "e.jsonl", NULL};
    r = run(eval_only, 30);
    EXPECT_RUN(r.status == 2 && strstr(r.err, "--eval-data goes with --data"), &r,
               "--eval-data without --data: exit %d, expected 2", r.status);
    proc_result_free(&r);
}

/* The text of "(default ...)" of flag name in a --help text, into out. */
static bool help_default(const char *help, const char *name, char *out, size_t cap)
{
    char want[64];
    snprintf(want, sizeof want, "\n  --%s ", name);
    const char *p = strstr(help, want);
    if (!p) return false;
    const char *next = strstr(p + 1, "\n  --");
    const char *d = strstr(p, "(default ");
    if (!d || (next && d > next)) return false;
    d += strlen("(default ");
    const char *end = strchr(d, ')');
    if (!end) return false;
    snprintf(out, cap, "%.*s", (int)(end - d), d);
    return true;
}

/* rlhf run states rlhf-learner's defaults for the flags it passes on only
 * when given ("rlhf-learner's, 8; 4 with --model"): they must be the
 * learner's own, and the grpo preset's KL beta. */
static void test_learner_defaults(void)
{
    const char        *rh[] = {"rlhf", "run", "--help", NULL};
    const char        *lh[] = {"rlhf-learner", "--help", NULL};
    ProcResult         r = run(rh, 30), l = run(lh, 30);
    static const char *k_flags[] = {"group",         "max-new-tokens",   "temperature",
                                    "lease-prompts", "lease-timeout-ms", "warmup",
                                    "ckpt-every",    "eval-every",       "data-max-bad"};
    for (int i = 0; i < N_OF(k_flags); i++) {
        char mine[128] = "", theirs[128] = "";
        bool ok = help_default(r.out, k_flags[i], mine, sizeof mine) &&
                  help_default(l.out, k_flags[i], theirs, sizeof theirs);
        const char *pre = "rlhf-learner's, ";
        size_t      n = strlen(theirs);
        EXPECT_RUN(ok && !strncmp(mine, pre, strlen(pre)) &&
                       !strncmp(mine + strlen(pre), theirs, n) &&
                       (mine[strlen(pre) + n] == '\0' || mine[strlen(pre) + n] == ';'),
                   &r, "rlhf run --%s says (default %s); rlhf-learner's is (default %s)",
                   k_flags[i], mine, theirs);
    }
    char kl[128] = "";
    EXPECT_RUN(help_default(l.out, "kl-beta", kl, sizeof kl) && !strcmp(kl, "0.04"), &l,
               "rlhf-learner --kl-beta (grpo's preset) is (default %s); rlhf run's --help and "
               "its config line say 0.04",
               kl);
    proc_result_free(&r);
    proc_result_free(&l);
}

/* Writes n records "a+b=" of the arith task without a "task" member. */
static bool write_data(const char *path, int n, int first)
{
    FILE *f = fopen(path, "w");
    if (!EXPECT(f, "cannot write '%s'", path)) return false;
    for (int i = first; i < first + n; i++)
        fprintf(f, "{\"prompt\": \"%d+%d=\", \"answer\": \"%d\"}\n", i % 10, i / 10,
                i % 10 + i / 10);
    return EXPECT(fclose(f) == 0, "cannot write '%s'", path);
}

/* A real run: the char model on a JSONL file, 2 steps. */
static void test_real_run(void)
{
    char ck[PATH_MAX], train[PATH_MAX], eval[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 32];
    testfs_path(ck, sizeof ck, "%s/ck", g_tmp);
    testfs_path(train, sizeof train, "%s/train.jsonl", g_tmp);
    testfs_path(eval, sizeof eval, "%s/eval.jsonl", g_tmp);
    testfs_path(dir, sizeof dir, "%s/run", g_tmp);
    const char *sft[] = {"rlhf-sft", "--out",        ck,  "--steps",    "20", "--eval-n",
                         "10",       "--eval-every", "0", "--dim",      "32", "--layers",
                         "1",        "--heads",      "2", "--kv-heads", "1",  "--hidden",
                         "64",       "--seed",       "3", NULL};
    ProcResult  r = run(sft, 120);
    bool        ok = EXPECT_RUN(r.status == 0, &r, "rlhf-sft warm start: exit %d", r.status);
    proc_result_free(&r);
    if (!ok || !write_data(train, 30, 0) || !write_data(eval, 6, 50)) return;
    int port = ports_pick(12, 20000, 40000);
    if (!EXPECT(port > 0, "no 12 free ports")) return;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    const char *argv[] = {"rlhf",
                          "run",
                          "--init",
                          ck,
                          "--data",
                          train,
                          "--eval-data",
                          eval,
                          "--task",
                          "arith",
                          "--scorer",
                          "exact",
                          "--steps",
                          "2",
                          "--actors",
                          "1",
                          "--batch-groups",
                          "2",
                          "--group",
                          "4",
                          "--max-new-tokens",
                          "4",
                          "--eval-n",
                          "6",
                          "--lease-prompts",
                          "2",
                          "--run-dir",
                          dir,
                          "--port-base",
                          port_s,
                          "--learner-flags",
                          "--status-every 1",
                          NULL};
    r = run(argv, RUN_TIMEOUT_S);
    EXPECT_RUN(r.status == 0, &r, "rlhf run on a JSONL file: exit %d", r.status);
    proc_result_free(&r);
    testfs_path(path, sizeof path, "%s/logs/learner.log", dir);
    char *log = testfs_read(path, 64u << 20);
    char  want[PATH_MAX + 64];
    snprintf(want, sizeof want, "dataset: '%s': 30 records", train);
    EXPECT(log && strstr(log, want), "'%s' lacks \"%s\": the learner did not train on --data", path,
           want);
    snprintf(want, sizeof want, "dataset: '%s': 6 records", eval);
    EXPECT(log && strstr(log, want), "'%s' lacks \"%s\": no --eval-data", path, want);
    static const char *k_cfg[] = {" task=arith ", " group=4 ", " max-new-tokens=4 ",
                                  " lease-prompts=2 "};
    for (int i = 0; i < N_OF(k_cfg); i++)
        EXPECT(log && strstr(log, k_cfg[i]), "the learner's config line lacks '%s' ('%s')",
               k_cfg[i], path);
    free(log);
    testfs_path(path, sizeof path, "%s/logs/reward-0.log", dir);
    log = testfs_read(path, 64u << 20);
    EXPECT(log && strstr(log, " scorer=exact "),
           "the reward server's config line lacks "
           "'scorer=exact' ('%s')",
           path);
    free(log);
    testfs_path(path, sizeof path, "%s/summary.json", dir);
    char *sum = testfs_read(path, 1u << 20);
    EXPECT(sum && strstr(sum, "\"steps\": 2"), "'%s' does not report 2 steps: %s", path,
           sum ? sum : "(missing)");
    free(sum);

    /* A learner flag the learner refuses: the run ends at once, no restarts. */
    const char *bad[] = {
        "rlhf",      "run",   "--init",      ck,     "--data",          train,
        "--task",    "arith", "--steps",     "2",    "--actors",        "1",
        "--run-dir", dir,     "--port-base", port_s, "--learner-flags", "--no-such-learner-flag",
        NULL};
    r = run(bad, 60);
    EXPECT_RUN(r.status == 1 && r.seconds < 30 && strstr(r.err, "refused its command line"), &r,
               "a learner flag the learner refuses: exit %d after %.1f s, expected 1 at once "
               "with the reason",
               r.status, r.seconds);
    proc_result_free(&r);
}

int cli_run_selftest(bool verbose)
{
    g_verbose = verbose;
    proc_build_dir(g_build, sizeof g_build);
    if (!EXPECT(testfs_tmpdir_new("cli-run", g_tmp, sizeof g_tmp) == 0, "temp directory")) return 1;
    test_run_algos();
    test_dry_run();
    test_learner_defaults();
    test_real_run();
    EXPECT(testfs_tmpdir_remove(g_tmp) == 0, "cannot remove '%s'", g_tmp);
    return expect_end();
}
