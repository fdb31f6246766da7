/* testcl: a local cluster of real daemons for end-to-end tests:
 * rlhf-learner, rlhf-reward and rlhf-actor started from the build
 * directory on a random block of free loopback ports, each logging to a
 * file in the test's temp directory, and the readers of what they write
 * (metrics.jsonl records, status lines, /proc/PID/status).
 *
 * A test calls testcl_init, starts the learner and a reward server with
 * testcl_start_core (which starts over on fresh ports when one was taken
 * meanwhile), adds actors and other programs with testcl_proc or
 * testcl_actor, and ends with `return testcl_finish(&c);`, which kills
 * whatever still runs, prints the tail of every log if a check failed and
 * removes the temp directory. Every wait is cut to the test's budget and
 * ends early on Ctrl-C (tests/support/proc.h). A run that should be
 * complete is checked with testcl_wait_done, testcl_check_metrics and
 * testcl_check_summary (the accounting identity in every record).
 *
 * The model is a tiny random-init policy (--dim 32 --layers 1) unless the
 * run options ask for another shape, so a run of a few dozen steps takes
 * seconds.
 *
 * Ownership: a TestCl owns its Procs (freed by testcl_finish); JSON
 * returned is the caller's (json_decref). Threading: one thread (the
 * checks of tests/support/expect.h are not thread-safe). Errors: the
 * functions that can fail make a failed check (EXPECT) naming what went
 * wrong and return false or NULL. */
#ifndef RLHF_TEST_TESTCL_H
#define RLHF_TEST_TESTCL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/support/proc.h"

#define TESTCL_MAX_PROCS 12
/* Ports of a test: learner lease, weights, snapshot, results; the reward
 * server's samples; the learner's and the reward server's /metrics. */
#define TESTCL_PORTS 7
#define TESTCL_PORT_HTTP 5        /* offset of the learner's /metrics port */
#define TESTCL_PORT_HTTP_REWARD 6 /* offset of the reward server's /metrics port */

typedef struct {
    const char *test;
    bool        verbose;
    char        build[PATH_MAX];
    char        tmp[PATH_MAX];
    char        ckpt[PATH_MAX + 16];    /* the learner's --ckpt-dir */
    char        metrics[PATH_MAX + 16]; /* --metrics */
    char        summary[PATH_MAX + 16]; /* --summary */
    double      deadline;               /* monotonic seconds */
    int         port;                   /* first of TESTCL_PORTS free ports */
    char        ep_lease[64], ep_weights[64], ep_snap[64], ep_results[64], ep_samples[64];
    Proc       *procs[TESTCL_MAX_PROCS]; /* owned; each logs to tmp/NAME.log */
    int         n_procs;
    char        keys[PATH_MAX + 16]; /* --keys of every daemon; "" = none (plaintext) */
} TestCl;

/* The learner's flags that differ between tests; 0 fields take the
 * defaults noted. */
typedef struct {
    int         steps;               /* --steps */
    int         ckpt_every;          /* --ckpt-every (0 = only at the end) */
    int         max_staleness;       /* --max-staleness */
    int         batch_groups;        /* --batch-groups */
    int         lease_prompts;       /* --lease-prompts; 0 = 2 */
    int         lease_timeout_ms;    /* --lease-timeout-ms; 0 = 1000 */
    int         eval_n;              /* --eval-n; 0 = 10, < 0 = 0 (none) */
    int         dim, layers, hidden; /* the model's shape; 0 = 32, 1, 64 */
    bool        is_debug;            /* RLHF_LOG=debug: every grant logged */
    bool        is_metrics;          /* --metrics-addr on port + TESTCL_PORT_HTTP */
    const char *extra[8];            /* more learner flags, NULL-terminated */
    bool        is_reward_metrics;   /* the reward server's --metrics-addr on
                                      * port + TESTCL_PORT_HTTP_REWARD */
    const char *reward_extra[8];     /* more reward server flags, NULL-terminated */
} TestClRun;

#define TESTCL_GROUP 4 /* completions per prompt (--group) */

/* Monotonic seconds; a sleep that resumes after signals. */
double testcl_now(void);
void   testcl_sleep_ms(int ms);
/* A line on stdout in verbose runs, "  TEST: ...". */
void testcl_note(TestCl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True once the budget is spent or an interrupt came. */
bool testcl_out_of_time(TestCl *c);
/* timeout_s cut to what is left of the budget. */
double testcl_budget(TestCl *c, double timeout_s);

/* Sets c up for test (names its temp directory) with budget_s seconds in
 * all. False after a failed check (programs not built, no temp dir). */
bool testcl_init(TestCl *c, const char *test, bool verbose, double budget_s);
/* Kills what still runs, reports the logs if a check failed, removes the
 * temp directory. Returns the number of failed checks. */
int testcl_finish(TestCl *c);

/* A program of the test, build/prog, logging to tmp/NAME.log, with env
 * ("NAME=value", NULL-terminated, may be NULL) added; clone_of, when given,
 * supplies the program and command line instead (a restart). */
Proc *testcl_proc(TestCl *c, const char *name, const char *prog, const char *const *env,
                  const Proc *clone_of);
/* The same for a program outside the build directory, at path (also its
 * argv[0]). */
Proc *testcl_proc_at(TestCl *c, const char *name, const char *path, const char *const *env);
/* Starts p; false after a failed check. */
bool testcl_start(TestCl *c, Proc *p);
/* Waits until p's log holds needle; false if p exits or time runs out. */
bool testcl_wait_log(TestCl *c, Proc *p, const char *needle, double timeout_s);
/* SIGTERM, then expects exit 0 within 10 s (else kills it). */
void testcl_end(TestCl *c, Proc *p);
/* SIGSTOP to p's group, returning once p is stopped (so nothing it does
 * races with what the test reads next); false (a failed check if it did
 * not stop within 5 s) otherwise. SIGCONT resumes it. */
bool testcl_pause(Proc *p);
/* Waits for the learner to finish its run and expects exit 0; a failed
 * check naming the step reached if it still runs after timeout_s. */
void testcl_wait_done(TestCl *c, Proc *learner, double timeout_s);

/* The learner's command line for o (not started). */
Proc *testcl_learner(TestCl *c, const char *name, const TestClRun *o);
/* An actor generating batch sequences at a time, debug-logging if asked
 * (with keys: its key pair is keys/actor.key; add --key-name for another). */
Proc *testcl_actor(TestCl *c, const char *name, int batch, bool is_debug);
/* testcl_actor, connecting to the learner's lease, weights and snapshot
 * sockets at other endpoints (a proxy of the test's in between). */
Proc *testcl_actor_via(TestCl *c, const char *name, int batch, bool is_debug, const char *ep_lease,
                       const char *ep_weights, const char *ep_snap);
/* Picks ports, starts the learner and a reward server and waits until both
 * are bound; starts over on other ports if one was taken meanwhile. */
bool testcl_start_core(TestCl *c, const TestClRun *o, Proc **learner, Proc **reward);
/* The same with the learner alone, named name (the test brings its own
 * reward server to c->ep_samples). */
bool testcl_start_learner(TestCl *c, const TestClRun *o, const char *name, Proc **learner);
/* The first of n more consecutive ports, free right now, in the range the
 * cluster's come from: for what the test binds itself or adds to a
 * program (a proxy, an actor's /metrics). 0 after a failed check. */
int testcl_ports(TestCl *c, int n);

/* The complete records of the metrics file, as a JSON array (caller owns). */
json_t *testcl_metrics(TestCl *c);
/* An integer member of o, -1 if missing. */
int64_t testcl_jint(const json_t *o, const char *key);
/* The step of the newest metrics record, 0 before the first. */
int64_t testcl_step(TestCl *c);
/* Waits until the learner has recorded step; false (a failed check) if it
 * exits first or timeout_s passes. */
bool testcl_wait_step(TestCl *c, Proc *learner, int64_t step, double timeout_s);

/* The lease counters of a metrics record or the summary. */
typedef struct {
    int64_t issued, trained, dropped_stale, reissued, failed, in_flight, buffered, duplicates;
} TestClCounters;

/* The accounting identity of o, recomputed: every issued group is trained,
 * dropped as stale, re-issued, failed, in flight or buffered. Fills k (may
 * be NULL); false after a failed check naming where (and each number). */
bool testcl_identity(const json_t *o, const char *where, TestClCounters *k);
/* The metrics records, with the identity checked in each (up to three
 * failures reported); caller owns. */
json_t *testcl_check_metrics(TestCl *c);
/* The summary (caller owns; NULL after a failed check), checked for what
 * every completed run shows: steps and version equal to steps, not stopped
 * early, accounting_ok, and the identity recomputed into k. */
json_t *testcl_check_summary(TestCl *c, int steps, TestClCounters *k);
/* k on one line, in verbose runs. */
void testcl_note_counters(TestCl *c, const TestClCounters *k);
/* Runs rlhf-keygen --dir dir [--name name] to its end; false after a
 * failed check. */
bool testcl_keygen(TestCl *c, const char *dir, const char *name);
/* The same with --no-authorize: a key pair left off dir's allow-list. */
bool testcl_keygen_unlisted(TestCl *c, const char *dir, const char *name);
/* Lines of p's log holding needle. */
int testcl_count(const Proc *p, const char *needle);
/* The last occurrence of needle in text (may be NULL), or NULL. */
const char *testcl_find_last(const char *text, const char *needle);
/* The numbers of a reward server's last status line ("scored N groups
 * (...), ..., received M, rejects: REASONS"), the reasons into rejects
 * (cap bytes, may be NULL); false before the first such line. */
bool testcl_reward_status(const Proc *p, long long *scored, long long *received, char *rejects,
                          size_t cap);

/* Kilobytes of a field of /proc/PID/status ("VmRSS", "VmHWM"), -1 if
 * unreadable. */
long testcl_status_kb(int pid, const char *field);

#endif
