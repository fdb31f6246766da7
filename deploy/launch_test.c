/* launch's self-test, with real processes through /bin/sh: restarts with
 * back-off, a clean stop of the others when the main child ends, SIGKILL
 * after the grace period, the status callback, a program that cannot be
 * spawned, and one that refuses its command line. */
#include "deploy/launch.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/progress.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

typedef struct {
    int calls;
} StatusCount;

static void count_status(void *ctx, double elapsed)
{
    ((StatusCount *)ctx)->calls++;
}

int launch_selftest(bool verbose)
{
    char dir[] = "/tmp/rlhf-launch-XXXXXX";
    if (!EXPECT(mkdtemp(dir) != NULL, "mkdtemp('%s') failed", dir)) return expect_end();
    char counter[64], cmd_flaky[512], logp[64];
    snprintf(counter, sizeof counter, "%s/count", dir);
    snprintf(logp, sizeof logp, "%s/flaky.log", dir);
    /* Crashes on its first two starts, then runs until terminated. */
    snprintf(cmd_flaky, sizeof cmd_flaky,
             "n=$(cat %s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s; echo start $n; "
             "if [ $n -le 2 ]; then exit 3; fi; exec sleep 30",
             counter, counter);
    char        *flaky[] = {"/bin/sh", "-c", cmd_flaky, NULL};
    char        *mainp[] = {"/bin/sh", "-c", "sleep 2.5; exit 0", NULL};
    char        *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; sleep 30", NULL};
    LaunchChild  kids[] = {{"main", mainp, NULL, true},
                           {"flaky", flaky, logp, false},
                           {"stubborn", stubborn, NULL, false}};
    StatusCount  sc = {0};
    LaunchConfig cfg = {.max_restarts = 5,
                        .grace_s = 0.5,
                        .status_every_s = 0.5,
                        .status = count_status,
                        .status_ctx = &sc};
    LaunchReport rep;
    int          rc = launch_run(&cfg, kids, 3, &rep);
    EXPECT(rc == 0, "launch_run: %d (%s), expected 0", rc, err_str(rc));
    EXPECT(rep.restarts[1] == 2, "flaky restarted %d times, expected 2 (two crashes)",
           rep.restarts[1]);
    EXPECT(rep.last_status[1] == 128 + SIGTERM,
           "flaky's last status %d, expected %d (stopped cleanly at the end)", rep.last_status[1],
           128 + SIGTERM);
    EXPECT(rep.last_status[2] == 128 + SIGKILL,
           "stubborn's last status %d, expected %d (ignored TERM, killed after grace)",
           rep.last_status[2], 128 + SIGKILL);
    EXPECT(sc.calls >= 3, "status called %d times, expected at least 3", sc.calls);
    if (verbose)
        printf("  launch: rc %d, flaky restarts %d (want 2), statuses %d %d %d, status calls %d\n",
               rc, rep.restarts[1], rep.last_status[0], rep.last_status[1], rep.last_status[2],
               sc.calls);
    /* A program that cannot be spawned is reported, not hung on. */
    char       *missing[] = {"/nonexistent/rlhf-nothing", NULL};
    LaunchChild bad[] = {{"missing", missing, NULL, true}};
    cfg.status = NULL;
    rc = launch_run(&cfg, bad, 1, &rep);
    EXPECT(rc == ERR_IO, "launch_run of a missing program: %d (%s), expected ERR_IO", rc,
           err_str(rc));
    /* A child that refuses its command line (status 2) is not restarted:
     * the run ends at once with ERR_ARG. */
    char       *usage[] = {"/bin/sh", "-c", "exit 2", NULL};
    char       *idle[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    LaunchChild refused[] = {{"main", idle, NULL, true}, {"refused", usage, NULL, false}};
    double      t0 = progress_now();
    rc = launch_run(&cfg, refused, 2, &rep);
    double took = progress_now() - t0;
    EXPECT(rc == ERR_ARG && rep.restarts[1] == 0 && took < 10.0,
           "a child exiting with status 2: launch_run %d (%s), %d restarts, %.1f s; expected "
           "ERR_ARG, none, at once",
           rc, err_str(rc), rep.restarts[1], took);
    unlink(counter);
    unlink(logp);
    rmdir(dir);
    return expect_end();
}
