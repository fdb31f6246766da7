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

#include "common/base/log.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    const char *name;
    int (*fn)(bool verbose);
} TestCase;

/* Every test of the tree, in the order tests/test_list.h gives. */
#define TEST_ROW(name, fn) {#name, fn},
static const TestCase k_tests[] = {TEST_LIST(TEST_ROW)};
#undef TEST_ROW

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
    /* The names of the failed tests, repeated just above the last line so a
     * log's tail (all a CI page may show) says which ones. */
    char failed_names[1024] = "";
    expect_share();
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
            expect_begin(t->name, verbose);
            int rc = t->fn(verbose);
            /* A check that failed fails the test whatever it returned. */
            if (expect_fails() > 0) rc = 1;
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
            size_t used = strlen(failed_names);
            snprintf(failed_names + used, sizeof failed_names - used, " %s", t->name);
            if (WIFSIGNALED(status))
                printf("FAIL %-24s %7.2fs (signal %d)\n", t->name, dt, WTERMSIG(status));
            else
                printf("FAIL %-24s %7.2fs\n", t->name, dt);
        }
    }
    printf("%llu checks made through tests/support/expect.h\n",
           (unsigned long long)expect_shared_checks());
    if (failed) printf("failed:%s\n", failed_names);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
