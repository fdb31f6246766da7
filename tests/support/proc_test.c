/* proc_test: the spawning helper on real programs (/bin/sh -c, sleep): exit
 * status and captured output, added environment, timeouts, signals to the
 * whole process group, pause, the parent-death signal, output logs and
 * waits on them, restarts and clones; then testfs and ports. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

#define SH "/bin/sh"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* True once pid is gone or a zombie (reaped by whoever inherited it). */
static bool is_gone(pid_t pid, double timeout_s)
{
    for (int i = 0; i < (int)(timeout_s * 100); i++) {
        char path[64], stat[256] = "";
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) return true;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *paren = strrchr(stat, ')');
        if (paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X')) return true;
        sleep_ms(10);
    }
    return false;
}

/* The number a program wrote first in p's output, or -1. */
static pid_t first_pid(Proc *p, double timeout_s)
{
    long n = -1;
    for (int i = 0; i < (int)(timeout_s * 100) && n < 0; i++) {
        char *out = proc_read_out(p);
        if (!out || sscanf(out, "%ld", &n) != 1) n = -1;
        free(out);
        if (n < 0) sleep_ms(10);
    }
    return (pid_t)n;
}

static void test_run(void)
{
    ProcResult  r;
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    int         rc = proc_run(SH, argv, NULL, 10.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 3 && r.signal == 0 && !r.is_timeout, &r,
               "sh exit 3: rc %d status %d signal %d, expected 0, 3, 0", rc, r.status, r.signal);
    EXPECT_RUN(!strcmp(r.out, "out\n") && !strcmp(r.err, "err\n"), &r,
               "captured stdout '%s' stderr '%s', expected 'out\\n' and 'err\\n'", r.out, r.err);
    EXPECT(!strcmp(r.cmd, "sh '-c' 'echo out; echo err >&2; exit 3'"), "command line '%s'", r.cmd);
    proc_result_free(&r);

    /* Added variables, one of them replacing the test's own. */
    setenv("PROC_TEST_OLD", "before", 1);
    const char *env[] = {"PROC_TEST_NEW=added", "PROC_TEST_OLD=after", NULL};
    const char *show[] = {"sh", "-c",
                          "echo $PROC_TEST_NEW $PROC_TEST_OLD; env | grep -c PROC_TEST_OLD", NULL};
    rc = proc_run(SH, show, &(ProcOpts){.env = env}, 10.0, &r);
    EXPECT_RUN(rc == 0 && !strcmp(r.out, "added after\n1\n"), &r,
               "environment: '%s', expected 'added after\\n1\\n'", r.out);
    proc_result_free(&r);

    /* Discarded output reads as empty. */
    rc = proc_run(SH, argv, &(ProcOpts){.is_quiet = true}, 10.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 3 && !r.out[0] && !r.err[0], &r,
               "quiet run: rc %d status %d, output '%s' '%s'", rc, r.status, r.out, r.err);
    proc_result_free(&r);

    /* A program that runs too long is killed. */
    const char *slow[] = {"sleep", "30", NULL};
    rc = proc_run("/bin/sleep", slow, NULL, 0.2, &r);
    EXPECT_RUN(rc == ERR_TIMEOUT && r.is_timeout && r.status == -1 && r.signal == SIGKILL &&
                   r.seconds < 10.0,
               &r, "sleep 30 with a 0.2 s timeout: rc %d, killed %d, signal %d after %.2f s", rc,
               r.is_timeout, r.signal, r.seconds);
    proc_result_free(&r);

    /* A program that cannot be executed: exit 127 and the reason. */
    const char *none[] = {"nope", NULL};
    rc = proc_run("/nonexistent/nope", none, NULL, 10.0, &r);
    EXPECT_RUN(rc == 0 && r.status == 127 && strstr(r.err, "'/nonexistent/nope'") &&
                   strstr(r.err, "No such file"),
               &r, "a missing program: status %d, stderr '%s'", r.status, r.err);
    proc_result_free(&r);
    if (expect_verbose()) printf("  proc: proc_run: status, output, environment, timeout\n");
}

static void test_group(const char *dir)
{
    char log[4096];
    testfs_path(log, sizeof log, "%s/group.log", dir);
    /* A shell with a child of its own: the kill reaches both. */
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $!; echo ready; wait", NULL};
    Proc       *p = proc_new(SH, argv, &(ProcOpts){.name = "group", .log_path = log});
    EXPECT(!strcmp(proc_name(p), "group") && !strcmp(proc_log_path(p), log), "name '%s' log '%s'",
           proc_name(p), proc_log_path(p));
    EXPECT(proc_start(p) == 0, "proc_start");
    EXPECT(proc_wait_output(p, "ready", 10.0), "'ready' not in the log");
    EXPECT(proc_output_has(p, "ready") && !proc_output_has(p, "absent"), "proc_output_has");
    pid_t child = first_pid(p, 5.0);
    EXPECT(child > 0 && proc_is_running(p), "the shell's child pid %d", (int)child);
    EXPECT(proc_wait(p, 0.05) == ERR_TIMEOUT, "proc_wait of a running shell");
    EXPECT(proc_pause(p, 5.0) == 0, "proc_pause");
    proc_signal(p, SIGCONT);
    proc_kill(p);
    char st[64];
    EXPECT(!proc_is_running(p) && proc_term_signal(p) == SIGKILL && proc_exit_code(p) == -1 &&
               !strcmp(proc_describe(p, st, sizeof st), "signal 9"),
           "after proc_kill: %s", proc_describe(p, st, sizeof st));
    EXPECT(child > 0 && is_gone(child, 5.0), "the shell's child %d outlived proc_kill", (int)child);

    /* Started again: the log grows. SIGTERM to the group ends it. */
    EXPECT(proc_start(p) == 0, "second proc_start");
    int n = 0;
    for (int i = 0; i < 1000 && n < 2; i++) {
        char *text = proc_read_out(p);
        n = 0;
        for (const char *q = text ? strstr(text, "ready") : NULL; q; q = strstr(q + 1, "ready"))
            n++;
        free(text);
        if (n < 2) sleep_ms(10);
    }
    EXPECT(n == 2, "%d 'ready' lines in the log, expected 2 (appended)", n);
    proc_signal(p, SIGTERM);
    EXPECT(proc_wait(p, 10.0) == 0 && proc_term_signal(p) == SIGTERM, "SIGTERM to the group: %s",
           proc_describe(p, st, sizeof st));

    /* A clone runs the same command line; it ends before printing "done". */
    Proc *c = proc_clone(p, "clone", NULL);
    EXPECT(!strcmp(proc_cmd(c), proc_cmd(p)), "clone's command '%s', expected '%s'", proc_cmd(c),
           proc_cmd(p));
    EXPECT(proc_start(c) == 0 && proc_wait_output(c, "ready", 10.0), "the clone did not start");
    EXPECT(!proc_wait_output(c, "done", 0.1), "proc_wait_output found what is not there");
    pid_t grandchild = first_pid(c, 5.0);
    proc_free(&c);
    EXPECT(c == NULL && grandchild > 0 && is_gone(grandchild, 5.0),
           "the clone's child %d outlived proc_free", (int)grandchild);
    proc_free(&p);
    proc_free(&p); /* a no-op on NULL */

    /* An exiting program ends a wait for output. */
    const char *quick[] = {"sh", "-c", "echo bye", NULL};
    p = proc_new(SH, quick, NULL);
    EXPECT(proc_start(p) == 0 && !proc_wait_output(p, "never", 10.0) && proc_exited_ok(p),
           "a wait for output that never comes");
    char *text = proc_read_out(p);
    EXPECT(text && !strcmp(text, "bye\n"), "captured '%s'", text ? text : "(none)");
    free(text);
    EXPECT(proc_start(p) == 0 && proc_wait(p, 10.0) == 0, "a restart of a captured program");
    text = proc_read_out(p);
    EXPECT(text && !strcmp(text, "bye\nbye\n"), "captured after a restart '%s'",
           text ? text : "(none)");
    free(text);
    proc_free(&p);
}

/* The parent-death signal: a child started by a process that dies is
 * killed with it. */
static void test_pdeathsig(void)
{
    int fds[2];
    if (!EXPECT(pipe(fds) == 0, "pipe: %s", strerror(errno))) return;
    fflush(NULL);
    pid_t mid = fork();
    if (mid == 0) {
        close(fds[0]);
        const char *argv[] = {"sleep", "30", NULL};
        Proc       *p = proc_new("/bin/sleep", argv, &(ProcOpts){.is_quiet = true});
        pid_t       pid = proc_start(p) == 0 ? proc_pid(p) : -1;
        if (write(fds[1], &pid, sizeof pid) != sizeof pid) _exit(1);
        _exit(0); /* without killing it */
    }
    close(fds[1]);
    pid_t pid = -1;
    bool  got = mid > 0 && read(fds[0], &pid, sizeof pid) == sizeof pid;
    close(fds[0]);
    int st = 0;
    if (mid > 0) waitpid(mid, &st, 0);
    EXPECT(got && pid > 0, "no pid from the middle process");
    EXPECT(pid > 0 && is_gone(pid, 5.0), "sleep %d outlived the process that started it", (int)pid);
}

/* After SIGINT, every wait ends at once. */
static void test_interrupt(void)
{
    const char *argv[] = {"sleep", "30", NULL};
    Proc       *p = proc_new("/bin/sleep", argv, NULL);
    EXPECT(proc_catch_interrupts() == 0, "proc_catch_interrupts");
    EXPECT(!proc_interrupted(), "interrupted before any signal");
    EXPECT(proc_start(p) == 0, "proc_start");
    raise(SIGINT);
    EXPECT(proc_interrupted(), "SIGINT not seen");
    EXPECT(proc_wait(p, 30.0) == ERR_TIMEOUT && proc_is_running(p),
           "proc_wait did not end on the interrupt");
    pid_t pid = proc_pid(p);
    proc_free(&p);
    EXPECT(is_gone(pid, 5.0), "sleep outlived proc_free");
}

static void test_testfs_ports(void)
{
    char dir[4096], path[4096];
    EXPECT(testfs_tmpdir_new("proc-x", dir, sizeof dir) == 0, "testfs_tmpdir_new");
    struct stat sb;
    EXPECT(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && strstr(dir, "/rlhf-proc-x-"),
           "temp directory '%s'", dir);
    EXPECT(testfs_path(path, sizeof path, "%s/f.txt", dir), "testfs_path");
    EXPECT(testfs_write(path, "abc", 3) == 0, "testfs_write");
    char *text = testfs_read(path, 16);
    EXPECT(text && !strcmp(text, "abc"), "testfs_read '%s'", text ? text : "(none)");
    free(text);
    EXPECT(testfs_read(path, 2) == NULL, "a file over max_len was read");
    testfs_path(path, sizeof path, "%s/missing", dir);
    EXPECT(testfs_read(path, 16) == NULL, "a missing file was read");
    char small[8];
    EXPECT_REFUSED(testfs_tmpdir_new("x", small, sizeof small), ERR_RANGE, "is too long",
                   "a temp path too long");
    EXPECT(testfs_tmpdir_remove(dir) == 0 && stat(dir, &sb) != 0, "'%s' not removed", dir);

    int base = ports_pick(4, 20000, 32000);
    EXPECT(base >= 20000 && base + 4 <= 32000 && (base - 20000) % 10 == 0 &&
               !(base < 28100 && base + 4 > 27000),
           "ports_pick gave %d", base);
    for (int i = 0; base > 0 && i < 4; i++)
        EXPECT(ports_is_free(base + i), "port %d is taken", base + i);
    EXPECT(ports_pick(4, 27000, 28100) == -1, "ports_pick inside the reserved range");

    char build[4096];
    proc_build_dir(build, sizeof build);
    EXPECT(build[0] != '\0', "proc_build_dir is empty");
    if (expect_verbose()) printf("  proc: ports %d.., programs in '%s'\n", base, build);
}

int proc_selftest(bool verbose)
{
    char dir[4096];
    if (!EXPECT(testfs_tmpdir_new("proc", dir, sizeof dir) == 0, "temp directory")) return 1;
    test_run();
    test_group(dir);
    test_pdeathsig();
    test_testfs_ports();
    test_interrupt(); /* last: the interrupt stays */
    EXPECT(testfs_tmpdir_remove(dir) == 0, "cannot remove '%s'", dir);
    return expect_end();
}
