/* sandbox: a pool that runs untrusted Python programs against their tests,
 * concurrently, each in a sandbox, on a libuv loop of its own thread.
 *
 * A job is a program (for HumanEval: prompt + completion + "\n" + test +
 * "\n" + "check(entry_point)") and optionally a list of test snippets run
 * one by one after it, in its namespace. Each run is a python3 process under
 * rlhf-sandbox-exec (reward_server/sandbox/sandbox_exec.h: namespaces or seccomp,
 * landlock, CPU, memory, file, process and fd limits), started by uv_spawn in
 * a new session with a private mkdtemp directory (removed after), stdout and
 * stderr captured through libuv pipes and capped, and a wall-clock timeout
 * that kills the whole process group. A small runner (python, passed with -c)
 * reads the job from stdin and reports on fd 3, every line prefixed by a
 * random nonce of the run: "R" (running), "S 1" or "S 0 Exception" (the
 * program ran / raised), "T i 1" or "T i 0 Exception" per test, "D" (done).
 * A program that exits early (os._exit, sys.exit) never says "D", so it
 * cannot pass by ending. At most `workers` runs at once; the rest queue.
 *
 * sandbox_new probes the isolation the machine allows (rlhf-sandbox-exec
 * --probe; with SANDBOX_ISO_AUTO the strongest that works), logs it (a
 * warning when the network is not isolated) and runs one known job, so a
 * missing interpreter or a broken sandbox fails at start, not per run.
 *
 * Ownership: sandbox_new's caller owns the Sandbox; config strings are
 * copied; a job is copied at submission. Threading: sandbox_submit,
 * sandbox_run, sandbox_stats and sandbox_stop may be called from any thread;
 * done callbacks run on the pool's thread and must not block.
 * sandbox_free from the thread that made it. Errors: sandbox_new logs and
 * returns NULL; a run that cannot start ends with SANDBOX_SETUP_FAILED and
 * the reason in why (logged once per distinct failure). */
#ifndef RLHF_SANDBOX_H
#define RLHF_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reward_server/sandbox/sandbox_exec.h"

#define SANDBOX_PYTHON "/usr/bin/python3"
#define SANDBOX_MAX_WORKERS 256
#define SANDBOX_MAX_TESTS 1024                  /* test snippets of one job */
#define SANDBOX_MAX_JOB_BYTES ((size_t)4 << 20) /* program and tests of one job */

typedef struct {
    const char *python;     /* the interpreter (SANDBOX_PYTHON) */
    const char *exec_path;  /* rlhf-sandbox-exec; NULL = beside the running program */
    const char *tmp_dir;    /* where run directories are made; NULL = $TMPDIR or /tmp */
    const char *hide;       /* comma-separated paths hidden from programs; NULL = none */
    int         workers;    /* runs at once, 1..SANDBOX_MAX_WORKERS */
    int         isolation;  /* SandboxIsolation; AUTO probes */
    int         timeout_ms; /* wall clock of one run, start to kill */
    int         cpu_s;      /* CPU seconds of one run */
    int         mem_mb;     /* address space, MiB */
    int         file_mb;    /* largest file, MiB */
    int         nproc;      /* processes and threads at once */
    int         nofile;     /* open files */
    int         uid, gid;   /* the ids programs run as when the pool runs as root */
    size_t      output_cap; /* bytes kept of stdout and of stderr, each */
} SandboxConfig;

#define SANDBOX_DEFAULTS                                                                           \
    ((SandboxConfig){.python = SANDBOX_PYTHON,                                                     \
                     .exec_path = NULL,                                                            \
                     .tmp_dir = NULL,                                                              \
                     .hide = NULL,                                                                 \
                     .workers = 2,                                                                 \
                     .isolation = SANDBOX_ISO_AUTO,                                                \
                     .timeout_ms = 10000,                                                          \
                     .cpu_s = 5,                                                                   \
                     .mem_mb = 512,                                                                \
                     .file_mb = 16,                                                                \
                     .nproc = 32,                                                                  \
                     .nofile = 64,                                                                 \
                     .uid = 65534,                                                                 \
                     .gid = 65534,                                                                 \
                     .output_cap = 64 << 10})

typedef struct {
    const char        *code;    /* the program, run first */
    const char *const *tests;   /* n_tests snippets run after it, each on its own */
    int                n_tests; /* 0: the program is the whole test (HumanEval's check) */
} SandboxJob;

/* How a run ended. Appended only (metrics labels). */
typedef enum {
    SANDBOX_PASSED,       /* ran to the end, every test passed */
    SANDBOX_FAILED,       /* ran to the end, some test failed */
    SANDBOX_ERROR,        /* the program itself raised (SyntaxError, NameError, MemoryError, ...) */
    SANDBOX_TIMEOUT,      /* still running at the wall-clock timeout: the group was killed */
    SANDBOX_CPU_LIMIT,    /* killed for its CPU time (SIGXCPU) */
    SANDBOX_KILLED,       /* ended by another signal */
    SANDBOX_EXITED,       /* exited before the runner finished (os._exit, a crash) */
    SANDBOX_SETUP_FAILED, /* the sandbox or the interpreter could not start: not the program's fault
                           */
    SANDBOX_VERDICT_COUNT,
} SandboxVerdict;

const char *sandbox_verdict_name(SandboxVerdict v);

typedef struct {
    SandboxVerdict verdict;
    int            n_tests;     /* max(1, the job's n_tests) */
    int            n_passed;    /* tests that passed (HumanEval: 1 when the program ran through) */
    bool           is_done;     /* the runner reached its end */
    int            exit_status; /* the program's, -1 when a signal ended it or unknown */
    int            term_signal; /* the signal that ended it, 0 if none */
    bool           is_output_capped;         /* stdout or stderr went past output_cap */
    uint64_t       out_dropped, err_dropped; /* bytes beyond the cap, read and dropped */
    double         seconds;                  /* spawn to the end */
    char           error[48]; /* the first exception's class ("AssertionError"), or "" */
    char           why[256];  /* SANDBOX_SETUP_FAILED: what failed */
    char          *out, *err; /* captured stdout and stderr, NUL-terminated, owned by the result */
} SandboxResult;

/* Releases out and err; no-op on NULL. */
void sandbox_result_free(SandboxResult *r);

/* Called on the pool's thread when a run ends; res is the callee's (it
 * frees it with sandbox_result_free, or steals out and err). */
typedef void (*SandboxDoneFn)(SandboxResult *res, void *arg);

typedef struct Sandbox Sandbox;

/* Checks cfg, finds rlhf-sandbox-exec and the interpreter, probes the
 * isolation, starts the loop thread and runs a known job. Returns NULL after
 * logging why. Caller owns. */
Sandbox *sandbox_new(const SandboxConfig *cfg);
/* Kills every run, fails the queued ones, joins the thread, removes the
 * directories and frees. No-op on NULL. */
void sandbox_free(Sandbox **sb);
/* Kills the runs and fails everything queued or submitted from now on
 * (SANDBOX_SETUP_FAILED, "stopping"), without waiting: waiters in
 * sandbox_run return soon. Thread-safe. */
void sandbox_stop(Sandbox *sb);

/* Queues a copy of job; done(res, arg) follows on the pool's thread (at
 * once on the caller's, with SANDBOX_SETUP_FAILED, after sandbox_stop).
 * Returns 0, or ERR_RANGE (nothing queued, done not called) for a job over
 * SANDBOX_MAX_TESTS tests or SANDBOX_MAX_JOB_BYTES bytes. */
int sandbox_submit(Sandbox *sb, const SandboxJob *job, SandboxDoneFn done, void *arg);
/* sandbox_submit, then waits for the result into *out (caller frees it
 * with sandbox_result_free). Returns 0 or sandbox_submit's error. */
int sandbox_run(Sandbox *sb, const SandboxJob *job, SandboxResult *out);

/* The isolation in force, and the probe's line describing it (borrowed). */
SandboxIsolation sandbox_isolation(const Sandbox *sb);
const char      *sandbox_isolation_detail(const Sandbox *sb);
/* True when programs cannot reach the network (namespaces or seccomp). */
bool sandbox_is_network_isolated(const Sandbox *sb);
int  sandbox_workers(const Sandbox *sb);

typedef struct {
    uint64_t runs;                            /* finished runs */
    uint64_t verdicts[SANDBOX_VERDICT_COUNT]; /* finished runs by verdict */
    uint64_t output_capped;                   /* runs whose output went past the cap */
    uint64_t queued, running;                 /* now */
    double   run_seconds;                     /* spawn to end, summed */
} SandboxStats;

/* Counters so far (each consistent, not across counters). */
void sandbox_stats(const Sandbox *sb, SandboxStats *out);

#endif
