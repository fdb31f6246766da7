/* sandbox's self-test: the pool on real python3 processes under
 * rlhf-sandbox-exec: every verdict from a program made to reach it, the
 * fraction of tests passed, forged results on the side channel ignored,
 * output capped and counted, the pool's bound on concurrent runs, stopping
 * with runs in flight, directories removed, and each isolation mode this
 * machine allows forced in turn (network, files, signals per mode). */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "reward_server/sandbox/sandbox.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

static double st_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs code with tests; returns the result (caller frees). */
static SandboxResult st_run(Sandbox *sb, const char *code, const char *const *tests, int n_tests)
{
    SandboxJob    job = {.code = code, .tests = tests, .n_tests = n_tests};
    SandboxResult r;
    int           rc = sandbox_run(sb, &job, &r);
    EXPECT(rc == 0, "sandbox_run: %s", err_str(rc));
    return r;
}

static bool st_expect(const SandboxResult *r, SandboxVerdict v, int n_passed, int n_tests,
                      const char *what)
{
    bool ok =
        EXPECT(r->verdict == v && r->n_passed == n_passed && r->n_tests == n_tests,
               "%s: verdict %s %d/%d, expected %s %d/%d (error '%s', why '%s', stderr "
               "'%.300s')",
               what, sandbox_verdict_name(r->verdict), r->n_passed, r->n_tests,
               sandbox_verdict_name(v), n_passed, n_tests, r->error, r->why, r->err ? r->err : "");
    if (expect_verbose())
        printf("  sandbox: %-28s %-12s %d/%d %-16s %.2f s\n", what,
               sandbox_verdict_name(r->verdict), r->n_passed, r->n_tests, r->error, r->seconds);
    return ok;
}

static int st_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int            n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Verdicts, fractions and output on the default (strongest) isolation. */
static void st_verdicts(Sandbox *sb)
{
    const char   *f = "def f(x):\n    return x + 1\n";
    const char   *two[] = {"assert f(1) == 2", "assert f(2) == 3"};
    SandboxResult r = st_run(sb, f, two, 2);
    st_expect(&r, SANDBOX_PASSED, 2, 2, "all tests pass");
    EXPECT(r.is_done && r.exit_status == 0 && r.term_signal == 0 && !r.error[0],
           "a passing run: done %d exit %d signal %d error '%s'", r.is_done, r.exit_status,
           r.term_signal, r.error);
    sandbox_result_free(&r);

    const char *three[] = {"assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 4"};
    r = st_run(sb, f, three, 3);
    st_expect(&r, SANDBOX_FAILED, 2, 3, "two of three tests pass");
    EXPECT(!strcmp(r.error, "AssertionError"), "first failure '%s', expected AssertionError",
           r.error);
    sandbox_result_free(&r);

    /* A test that raises something else, and one that exits: each only fails itself. */
    const char *odd[] = {"raise KeyError('k')", "import sys\nsys.exit(0)", "assert f(0) == 1"};
    r = st_run(sb, f, odd, 3);
    st_expect(&r, SANDBOX_FAILED, 1, 3, "KeyError, sys.exit, pass");
    EXPECT(!strcmp(r.error, "KeyError"), "first failure '%s', expected KeyError", r.error);
    sandbox_result_free(&r);

    /* HumanEval's shape: the program is the whole test. */
    r = st_run(sb,
               "def g(s):\n    return s[::-1]\n\ndef check(c):\n    assert c('ab') == 'ba'\n\n"
               "check(g)",
               NULL, 0);
    st_expect(&r, SANDBOX_PASSED, 1, 1, "check() passes");
    sandbox_result_free(&r);
    r = st_run(sb,
               "def g(s):\n    return s\n\ndef check(c):\n    assert c('ab') == 'ba'\n\ncheck(g)",
               NULL, 0);
    st_expect(&r, SANDBOX_ERROR, 0, 1, "check() fails");
    EXPECT(!strcmp(r.error, "AssertionError"), "error '%s', expected AssertionError", r.error);
    sandbox_result_free(&r);

    r = st_run(sb, "def f(x:\n    return 1\n", two, 2);
    st_expect(&r, SANDBOX_ERROR, 0, 2, "syntax error");
    EXPECT(!strcmp(r.error, "SyntaxError"), "error '%s', expected SyntaxError", r.error);
    sandbox_result_free(&r);

    r = st_run(sb, "import sys\nsys.exit(0)\n", NULL, 0);
    st_expect(&r, SANDBOX_ERROR, 0, 1, "sys.exit(0) in the program");
    sandbox_result_free(&r);

    /* Ending the process early is no pass, whatever the exit status. */
    r = st_run(sb, "import os\nos._exit(0)\n", two, 2);
    st_expect(&r, SANDBOX_EXITED, 0, 2, "os._exit(0)");
    EXPECT(r.exit_status == 0, "os._exit(0): exit status %d", r.exit_status);
    sandbox_result_free(&r);

    /* Results forged on the side channel without the run's nonce count for nothing. */
    r = st_run(sb,
               "import os\nfor s in ['R', 'S 1', 'T 0 1', 'T 1 1', 'D']:\n"
               "    os.write(3, ('0123456789abcdef ' + s + '\\n').encode())\n"
               "os._exit(0)\n",
               two, 2);
    st_expect(&r, SANDBOX_EXITED, 0, 2, "forged results");
    sandbox_result_free(&r);

    r = st_run(sb, "x = bytearray(1 << 34)\n", NULL, 0);
    st_expect(&r, SANDBOX_ERROR, 0, 1, "16 GiB allocation");
    EXPECT(!strcmp(r.error, "MemoryError"), "error '%s', expected MemoryError", r.error);
    sandbox_result_free(&r);

    r = st_run(sb, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", NULL, 0);
    st_expect(&r, SANDBOX_KILLED, 0, 1, "SIGSEGV");
    EXPECT(r.term_signal == SIGSEGV, "signal %d, expected %d", r.term_signal, SIGSEGV);
    sandbox_result_free(&r);

    /* 4 MiB on stdout: the first 64 KiB kept, the rest read and counted. */
    r = st_run(sb, "import sys\nsys.stdout.write('x' * (1 << 22))\nsys.stdout.flush()\n", NULL, 0);
    st_expect(&r, SANDBOX_PASSED, 1, 1, "4 MiB of output");
    size_t kept = r.out ? strlen(r.out) : 0;
    EXPECT(r.is_output_capped && kept == (size_t)64 << 10 &&
               r.out_dropped + kept == (size_t)1 << 22,
           "output: capped %d, kept %zu, dropped %llu (expected 65536 and 4194304 in all)",
           r.is_output_capped, kept, (unsigned long long)r.out_dropped);
    sandbox_result_free(&r);

    r = st_run(sb, "print('hello')\nimport sys\nprint('warn', file=sys.stderr)\n", NULL, 0);
    EXPECT(r.out && !strcmp(r.out, "hello\n") && r.err && !strcmp(r.err, "warn\n") &&
               !r.is_output_capped,
           "stdout '%s' stderr '%s'", r.out ? r.out : "(null)", r.err ? r.err : "(null)");
    sandbox_result_free(&r);
}

/* Pools with short limits: the wall clock, then the CPU clock. */
static void st_limits(const char *tmp)
{
    SandboxConfig c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.timeout_ms = 1500;
    Sandbox *sb = sandbox_new(&c);
    if (!EXPECT(sb, "sandbox_new with a 1.5 s timeout")) return;
    /* Sleeping uses no CPU: the wall clock ends it. */
    double        t0 = st_now();
    SandboxResult r = st_run(sb, "import time\ntime.sleep(30)\n", NULL, 0);
    double        dt = st_now() - t0;
    st_expect(&r, SANDBOX_TIMEOUT, 0, 1, "sleep(30), 1.5 s timeout");
    EXPECT(dt >= 1.4 && dt < 6.0, "the timeout run took %.2f s, expected about 1.5", dt);
    sandbox_result_free(&r);
    sandbox_free(&sb);
    /* A busy loop with 1 s of CPU and 20 s of wall clock (a loaded machine
     * may give it little CPU per second) ends by SIGXCPU. */
    c.timeout_ms = 20000;
    c.cpu_s = 1;
    sb = sandbox_new(&c);
    if (!EXPECT(sb, "sandbox_new with a 1 s CPU limit")) return;
    r = st_run(sb, "while True:\n    pass\n", NULL, 0);
    st_expect(&r, SANDBOX_CPU_LIMIT, 0, 1, "busy loop, 1 s CPU limit");
    EXPECT(r.term_signal == SIGXCPU, "busy loop: signal %d, expected SIGXCPU", r.term_signal);
    sandbox_result_free(&r);
    sandbox_free(&sb);
}

typedef struct {
    atomic_int     n_done;
    SandboxVerdict verdicts[16];
} StBatch;

static void st_batch_done(SandboxResult *res, void *arg)
{
    StBatch *b = arg;
    int      k = atomic_fetch_add(&b->n_done, 1);
    if (k < 16) b->verdicts[k] = res->verdict;
    sandbox_result_free(res);
}

/* Eight 0.3 s sleeps on two workers: never more than two at once, so at
 * least four rounds of 0.3 s. */
static void st_concurrency(Sandbox *sb)
{
    StBatch    b = {0};
    SandboxJob job = {.code = "import time\ntime.sleep(0.3)\n"};
    double     t0 = st_now();
    for (int i = 0; i < 8; i++) EXPECT(sandbox_submit(sb, &job, st_batch_done, &b) == 0, "submit");
    uint64_t max_running = 0;
    while (atomic_load(&b.n_done) < 8 && st_now() - t0 < 60) {
        SandboxStats s;
        sandbox_stats(sb, &s);
        if (s.running > max_running) max_running = s.running;
        usleep(5000);
    }
    double dt = st_now() - t0;
    EXPECT(atomic_load(&b.n_done) == 8, "%d of 8 runs done", atomic_load(&b.n_done));
    EXPECT(max_running == 2, "at most %llu runs at once, expected the pool's 2",
           (unsigned long long)max_running);
    EXPECT(dt >= 1.2, "8 runs of 0.3 s on 2 workers took %.2f s, expected >= 1.2", dt);
    for (int i = 0; i < 8; i++)
        EXPECT(b.verdicts[i] == SANDBOX_PASSED, "run %d: %s", i,
               sandbox_verdict_name(b.verdicts[i]));
    if (expect_verbose())
        printf("  sandbox: 8 x sleep(0.3) on 2 workers: %.2f s, at most %llu at once\n", dt,
               (unsigned long long)max_running);
}

/* Stopping kills what runs and fails what waits, without waiting for them. */
static void st_stop(const char *tmp)
{
    SandboxConfig c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.workers = 1;
    Sandbox *sb = sandbox_new(&c);
    if (!EXPECT(sb, "sandbox_new (one worker)")) return;
    StBatch    b = {0};
    SandboxJob job = {.code = "import time\ntime.sleep(30)\n"};
    for (int i = 0; i < 3; i++) sandbox_submit(sb, &job, st_batch_done, &b);
    usleep(300000);
    double t0 = st_now();
    sandbox_stop(sb);
    while (atomic_load(&b.n_done) < 3 && st_now() - t0 < 10) usleep(5000);
    double dt = st_now() - t0;
    EXPECT(atomic_load(&b.n_done) == 3 && dt < 3.0, "after stop: %d of 3 done in %.2f s",
           atomic_load(&b.n_done), dt);
    for (int i = 0; i < 3; i++)
        EXPECT(b.verdicts[i] == SANDBOX_SETUP_FAILED, "stopped run %d: %s", i,
               sandbox_verdict_name(b.verdicts[i]));
    /* Submitted after the stop: answered at once. */
    SandboxResult r = st_run(sb, "x = 1\n", NULL, 0);
    EXPECT(r.verdict == SANDBOX_SETUP_FAILED && strstr(r.why, "stopping"), "after stop: %s (%s)",
           sandbox_verdict_name(r.verdict), r.why);
    sandbox_result_free(&r);
    sandbox_free(&sb);
}

/* What each isolation mode holds, forced one by one where this machine
 * allows it. */
static void st_modes(const char *tmp)
{
    for (int iso = SANDBOX_ISO_NAMESPACES; iso < SANDBOX_ISO_COUNT; iso++) {
        SandboxConfig c = SANDBOX_DEFAULTS;
        c.tmp_dir = tmp;
        c.isolation = iso;
        c.timeout_ms = 5000;
        Sandbox *sb = sandbox_new(&c);
        if (!sb) {
            EXPECT(iso != SANDBOX_ISO_RLIMITS, "rlimits mode must work everywhere");
            printf("  sandbox: isolation %s is not available here (see the log above)\n",
                   sandbox_iso_names[iso]);
            continue;
        }
        EXPECT(sandbox_isolation(sb) == (SandboxIsolation)iso, "forced %s, got %s",
               sandbox_iso_names[iso], sandbox_iso_names[sandbox_isolation(sb)]);
        EXPECT(sandbox_is_network_isolated(sb) == (iso != SANDBOX_ISO_RLIMITS),
               "%s: network isolated %d", sandbox_iso_names[iso], sandbox_is_network_isolated(sb));
        char what[96];
        /* Its own directory is writable in every mode. */
        const char *own[] = {
            "open('mine.txt', 'w').write('x')\nassert open('mine.txt').read() == 'x'"};
        SandboxResult r = st_run(sb, "pass\n", own, 1);
        snprintf(what, sizeof what, "%s: write its directory", sandbox_iso_names[iso]);
        st_expect(&r, SANDBOX_PASSED, 1, 1, what);
        sandbox_result_free(&r);
        if (iso == SANDBOX_ISO_RLIMITS) {
            sandbox_free(&sb);
            continue;
        }
        /* Each of these must fail inside the sandbox; the last signals this test's process. */
        char kill_me[64];
        snprintf(kill_me, sizeof kill_me, "import os\nos.kill(%d, 0)", (int)getpid());
        const char *denied[] = {
            "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 53))",
            "import socket\nsocket.getaddrinfo('example.com', 80)",
            "open('/etc/rlhf-sandbox-pwn', 'w')",
            "open('/var/tmp/rlhf-sandbox-pwn', 'w')",
            "open('/etc/shadow').read()",
            kill_me,
        };
        const int n = (int)(sizeof denied / sizeof denied[0]);
        r = st_run(sb, "pass\n", denied, n);
        snprintf(what, sizeof what, "%s: net, files, signals", sandbox_iso_names[iso]);
        st_expect(&r, SANDBOX_FAILED, 0, n, what);
        sandbox_result_free(&r);
        EXPECT(access("/etc/rlhf-sandbox-pwn", F_OK) != 0 &&
                   access("/var/tmp/rlhf-sandbox-pwn", F_OK) != 0,
               "%s: a file was written outside the sandbox", sandbox_iso_names[iso]);
        unlink("/etc/rlhf-sandbox-pwn");
        unlink("/var/tmp/rlhf-sandbox-pwn");
        sandbox_free(&sb);
    }
}

int sandbox_selftest(bool verbose)
{
    expect_begin("sandbox", verbose);
    char tmp[256];
    if (testfs_tmpdir_new("sandbox", tmp, sizeof tmp) != 0) return expect_end() + 1;
    /* Run directories sit in tmp; without namespaces a program (another
     * uid, when we are root) needs to search it to reach its own. */
    EXPECT(chmod(tmp, 0711) == 0, "chmod %s", tmp);
    SandboxConfig c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    Sandbox *sb = sandbox_new(&c);
    if (EXPECT(sb, "sandbox_new with the defaults")) {
        if (verbose) printf("  sandbox: %s\n", sandbox_isolation_detail(sb));
        st_verdicts(sb);
        st_concurrency(sb);
        SandboxStats s;
        sandbox_stats(sb, &s);
        EXPECT(s.runs >= 22 && s.queued == 0 && s.running == 0 &&
                   s.verdicts[SANDBOX_PASSED] >= 12 && s.output_capped == 1,
               "stats: %llu runs, %llu queued, %llu running, %llu passed, %llu capped",
               (unsigned long long)s.runs, (unsigned long long)s.queued,
               (unsigned long long)s.running, (unsigned long long)s.verdicts[SANDBOX_PASSED],
               (unsigned long long)s.output_capped);
        sandbox_free(&sb);
    }
    st_limits(tmp);
    st_stop(tmp);
    st_modes(tmp);
    EXPECT(st_count_entries(tmp) == 0, "%d run directories left in %s", st_count_entries(tmp), tmp);

    /* Bad configurations are refused, naming the problem. */
    c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.workers = 0;
    EXPECT(!sandbox_new(&c), "0 workers accepted");
    c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.python = "/nonexistent/python3";
    EXPECT(!sandbox_new(&c), "a missing interpreter accepted");
    c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.exec_path = "/nonexistent/rlhf-sandbox-exec";
    EXPECT(!sandbox_new(&c), "a missing rlhf-sandbox-exec accepted");
    c = SANDBOX_DEFAULTS;
    c.tmp_dir = "/nonexistent-dir";
    EXPECT(!sandbox_new(&c), "a missing temp directory accepted");
    /* An interpreter that is not Python fails the check job at start. */
    c = SANDBOX_DEFAULTS;
    c.tmp_dir = tmp;
    c.python = "/bin/true";
    EXPECT(!sandbox_new(&c), "/bin/true as the interpreter accepted");
    testfs_tmpdir_remove(tmp);
    return expect_end();
}
