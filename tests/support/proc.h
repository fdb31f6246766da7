/* proc: the one helper tests use to start a program and reap it.
 *
 * A Proc is one program with its command line, extra environment and where
 * its output goes: appended to a log file, or captured in memory (stdout
 * and stderr apart), or discarded. proc_start runs it with stdin from
 * /dev/null, in a process group of its own, with SIGKILL as its
 * parent-death signal, so that nothing it starts outlives the test even if
 * the test crashes; proc_signal and proc_kill reach the whole group. A Proc
 * can be started again once it has exited (its output is appended).
 * proc_run is the one-shot form: start, wait with a timeout, collect the
 * output and the exit status.
 *
 * Waits poll (about every 20 ms at most) and end early once
 * proc_catch_interrupts has seen SIGINT or SIGTERM, so a test interrupted
 * by Ctrl-C still kills its children and removes its files.
 *
 * Ownership: proc_new returns an object the caller frees with proc_free,
 * which kills the group if the program still runs. Strings passed in are
 * copied; texts returned by proc_read_out/proc_read_err are the caller's.
 * Errors: functions that can fail return 0 or a negative ERR_* code and
 * print why on stderr. Not thread-safe: use a Proc from one thread (other
 * threads may run meanwhile: nothing between fork and exec allocates). */
#ifndef RLHF_TEST_PROC_H
#define RLHF_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tests/support/expect.h"

/* Captured output beyond this is an error (ERR_RANGE). */
#define PROC_OUTPUT_MAX ((size_t)64 << 20)

typedef struct Proc Proc;

typedef struct {
    const char *name; /* for messages; default: the program's file name */
    /* "NAME=value" strings, NULL-terminated, each put in place of the
     * variable it names; NULL: the environment as it is. */
    const char *const *env;
    /* Where stdout and stderr go: both appended to log_path (created 0644)
     * when set; else to /dev/null when is_quiet; else each captured in
     * memory for proc_read_out and proc_read_err. */
    const char *log_path;
    bool        is_quiet;
} ProcOpts;

/* A program to run: path is the file executed, argv its arguments
 * (NULL-terminated, argv[0] included; NULL: none yet, add them with
 * proc_arg). opts may be NULL (capture, inherited environment). */
Proc *proc_new(const char *path, const char *const *argv, const ProcOpts *opts);
/* A new Proc with src's program, arguments and environment, named name,
 * with its output to log_path (NULL: captured, or discarded as src's). */
Proc *proc_clone(const Proc *src, const char *name, const char *log_path);
/* Kills the process group if the program still runs, reaps it, releases
 * everything and sets *p to NULL. No-op on NULL. */
void proc_free(Proc **p);

/* Appends one printf-formatted argument. Not while running. */
void proc_arg(Proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts the program (again, if it ran before and has exited). Returns 0,
 * or ERR_IO if the log cannot be opened or fork fails (printed on stderr).
 * A program that cannot be executed exits 127 with the reason in its
 * output. */
int proc_start(Proc *p);
/* True while the program runs (or is stopped); reaps it once it exited. */
bool proc_is_running(Proc *p);
/* Waits up to timeout_s for the program to exit and reaps it. Returns 0
 * once it has exited (at once if it had), ERR_TIMEOUT if it still runs
 * after timeout_s or an interrupt (see proc_catch_interrupts), ERR_ARG if
 * it was never started. */
int proc_wait(Proc *p, double timeout_s);
/* Sends sig to the program's process group if it runs. Not checked: once
 * the program is known to run, the only failure left is a group that has
 * just exited, which the next look at it reports. */
void proc_signal(Proc *p, int sig);
/* kill -9 of the process group, then reaps the program (blocking). */
void proc_kill(Proc *p);
/* SIGSTOP to the group; returns 0 once the program is stopped (so nothing
 * it does races with what the test reads next), ERR_NOTFOUND if it exited
 * instead, ERR_TIMEOUT if not stopped within timeout_s. SIGCONT resumes. */
int proc_pause(Proc *p, double timeout_s);

/* The state of the last start: whether it exited with status 0, its exit
 * status (-1 if it did not exit normally or still runs), the signal that
 * ended it (0 if none), its pid (valid from the start until reaped). */
bool  proc_exited_ok(const Proc *p);
int   proc_exit_code(const Proc *p);
int   proc_term_signal(const Proc *p);
pid_t proc_pid(const Proc *p);
/* "running", "exit N", "signal N" or "not started", for messages. */
const char *proc_describe(const Proc *p, char *buf, size_t cap);
const char *proc_name(const Proc *p);
/* The log file, or NULL when the output is captured or discarded. */
const char *proc_log_path(const Proc *p);
/* The command line, arguments quoted, for messages. */
const char *proc_cmd(const Proc *p);

/* Everything the program wrote so far to stdout (proc_read_out) or stderr
 * (proc_read_err), NUL-terminated (caller frees); with a log, both give the
 * whole log. NULL if there is none (not started, discarded, no log yet) or
 * it cannot be read or exceeds PROC_OUTPUT_MAX. */
char *proc_read_out(const Proc *p);
char *proc_read_err(const Proc *p);
/* True if the output (stdout or stderr) holds needle. */
bool proc_output_has(const Proc *p, const char *needle);
/* Waits until the output holds needle: true then; false if the program
 * exits first, timeout_s passes or an interrupt arrives. */
bool proc_wait_output(Proc *p, const char *needle, double timeout_s);
/* Prints, for a failed test, "---- NAME (LOG; STATUS), last lines:" and
 * the last tail_lines lines of its output (of stdout and of stderr when
 * captured) on stderr. */
void proc_report(const Proc *p, int tail_lines);

/* The outcome of proc_run. */
typedef struct {
    int    status;     /* exit status; -1 if it did not exit normally or never ran */
    int    signal;     /* the signal that ended it, else 0 */
    bool   is_timeout; /* killed after running past its timeout */
    double seconds;    /* from start to reaping */
    char  *out;        /* stdout (the log with ProcOpts.log_path), NUL-terminated, never NULL */
    char  *err;        /* stderr (the log with ProcOpts.log_path), never NULL */
    char   cmd[1024];  /* the command line, for messages */
} ProcResult;

/* Runs path with argv to its end: waits up to timeout_s, then kills its
 * group. Fills r (release with proc_result_free) and returns 0 if it ran
 * to its end and its output was read; ERR_TIMEOUT if it was killed for
 * running too long (or an interrupt came); ERR_IO if it could not be
 * started, ERR_RANGE (or another read error) if its output could not be
 * read (r->out and r->err are then "" or what could be read). */
int  proc_run(const char *path, const char *const *argv, const ProcOpts *opts, double timeout_s,
              ProcResult *r);
void proc_result_free(ProcResult *r);
/* Prints r's command, exit status and output (the last tail_lines lines of
 * each stream) on stderr. No-op on NULL. */
void proc_result_report(const ProcResult *r, int tail_lines);

/* EXPECT that also reports the run r (a ProcResult *, may be NULL) when
 * the check fails: its command, exit status and last 40 lines of output.
 * An expression, true when cond holds. */
#define EXPECT_RUN(cond, r, ...)                                                                   \
    (expect_check((cond), __FILE__, __LINE__, __VA_ARGS__) || (proc_result_report((r), 40), false))

/* Installs handlers that make SIGINT and SIGTERM end every wait of this
 * module early (instead of killing the test before its clean-up). Returns
 * 0 or ERR_IO. */
int proc_catch_interrupts(void);
/* True once one of those signals has arrived. */
bool proc_interrupted(void);

/* Where the programs are: $RLHF_BUILD_DIR (set by make test), else the
 * directory of the running test binary, else "build". */
void proc_build_dir(char *out, size_t cap);

#endif
