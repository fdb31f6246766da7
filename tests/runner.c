/* The test runner: every module's self-test, each in its own child process so
 * that a crash or failed CHECK counts as one failure instead of ending the run.
 *
 *   rlhf-test            run all
 *   rlhf-test NAME...    run the named ones (substring match)
 *   rlhf-test -v ...     verbose: self-tests print their measurements
 *
 * The last line is always "N passed, M failed". */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/ckpt.h"
#include "common/err.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/par.h"
#include "common/flags.h"
#include "deploy/launch.h"
#include "common/safetensors.h"
#include "common/gguf.h"
#include "tests/gguf_test.h"
#include "common/export.h"
#include "tests/export_test.h"
#include "common/sampler.h"
#include "common/optim.h"
#include "common/tensor.h"
#include "common/model.h"
#include "common/gen.h"
#include "common/task.h"
#include "common/chat_task.h"
#include "common/progress.h"
#include "learner/eval.h"
#include "learner/lease.h"
#include "learner/learner.h"
#include "learner/sft.h"
#include "learner/algo.h"
#include "common/rl.h"
#include "common/tok.h"
#include "common/bpe.h"
#include "tests/bpe_test.h"
#include "tests/chat_test.h"
#include "common/wire.h"
#include "actor/actor.h"
#include "reward_server/reward.h"
#include "reward_server/scorer.h"
#include "tests/cluster_test.h"
#include "tests/cli_test.h"

typedef struct {
    const char *name;
    int (*fn)(bool verbose);
} TestCase;

/* Every self-test of the tree, in dependency order. */
static const TestCase k_tests[] = {
    {"err", err_selftest},
    {"log", log_selftest},
    {"rng", rng_selftest},
    {"par", par_selftest},
    {"flags", flags_selftest},
    {"launch", launch_selftest},
    {"fileio", fileio_selftest},
    {"tok", tok_selftest},
    {"bpe", bpe_selftest},
    {"bpe_smollm2", bpe_smollm2_selftest},
    {"safetensors", st_selftest},
    {"sampler", sampler_selftest},
    {"optim", optim_selftest},
    {"tensor", tensor_selftest},
    {"model", model_selftest},
    {"gguf", gguf_selftest},
    {"gguf_smollm2", gguf_smollm2_selftest},
    {"ckpt", ckpt_selftest},
    {"export", export_selftest},
    {"export_smollm2", export_smollm2_selftest},
    {"gen", gen_selftest},
    {"task", task_selftest},
    {"chat_task", chat_task_selftest},
    {"progress", progress_selftest},
    {"eval", eval_selftest},
    {"sft", sft_selftest},
    {"rl", rl_selftest},
    {"wire", wire_selftest},
    {"actor", actor_selftest},
    {"scorer", scorer_selftest},
    {"reward", reward_selftest},
    {"lease", lease_selftest},
    {"learner", learner_selftest},
    {"chat_smollm2", chat_smollm2_selftest},
    {"algo", algo_selftest},
    {"fault_actor", cluster_fault_actor_selftest},
    {"fault_learner", cluster_fault_learner_selftest},
    {"fault_reward", cluster_fault_reward_selftest},
    {"hostile", cluster_hostile_selftest},
    {"cli", cli_selftest},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool selected(const char *name, int argc, char **argv)
{
    bool any = false;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        any = true;
        if (strstr(name, argv[i])) return true;
    }
    return !any;
}

int main(int argc, char **argv)
{
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) verbose = true;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: %s [-v] [NAME...]\n"
                   "  -v      verbose: print each self-test's measurements\n"
                   "  NAME    run only tests whose name contains NAME (default: all)\n",
                   argv[0]);
            return 0;
        }
    }
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof k_tests / sizeof k_tests[0]; i++) {
        const TestCase *t = &k_tests[i];
        if (!selected(t->name, argc, argv)) continue;
        fflush(stdout);
        double t0 = now_s();
        pid_t  pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            log_init(t->name, verbose ? -1 : LOG_ERROR);
            int rc = t->fn(verbose);
            fflush(stdout);
            _exit(rc == 0 ? 0 : 1);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
        }
        double dt = now_s() - t0;
        bool   ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (ok) {
            passed++;
            printf("PASS %-24s %7.2fs\n", t->name, dt);
        } else {
            failed++;
            if (WIFSIGNALED(status))
                printf("FAIL %-24s %7.2fs (signal %d)\n", t->name, dt, WTERMSIG(status));
            else
                printf("FAIL %-24s %7.2fs\n", t->name, dt);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
