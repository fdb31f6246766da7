/* launch: runs a local cluster as child processes on one libuv loop.
 *
 * Each child has a name, an argv and a log file; its stdout and stderr go to
 * the log so the terminal keeps one live status line. A child that crashes
 * (non-zero exit or a signal) while the run is going is restarted with
 * exponential back-off (0.5 s doubling to 8 s, reset once it has lived
 * 30 s); one that exits with LAUNCH_EXIT_USAGE (a bad command line, which
 * would be refused again) ends the run instead. When the main child (the learner) exits 0 the run
 * is over: the others get SIGTERM, then SIGKILL after a grace period. SIGINT or SIGTERM to the
 * launcher does the same (a clean shutdown of every child); a second one kills them at once. Every
 * second the status callback may print a line (it gets the elapsed time).
 *
 * Ownership: the caller owns the LaunchChild array and its strings for the
 * duration of launch_run. Threading: one thread. Errors: launch_run returns
 * 0 when the main child finished with status 0, ERR_IO if a child could not
 * be spawned at all (logged), ERR_AGAIN if the run was interrupted,
 * ERR_RANGE if a child failed more than max_restarts times, or ERR_ARG if
 * one refused its command line. */
#ifndef RLHF_LAUNCH_H
#define RLHF_LAUNCH_H

#include <stdbool.h>

/* The exit status of a program given a bad command line (common/base/prog.h's
 * PROG_EXIT_USAGE). */
#define LAUNCH_EXIT_USAGE 2

typedef struct {
    const char *name;     /* e.g. "learner", "actor-1" */
    char      **argv;     /* NULL-terminated; argv[0] is the program path */
    const char *log_path; /* stdout+stderr appended here; NULL = inherit */
    bool        is_main;  /* its exit 0 ends the run */
} LaunchChild;

typedef struct {
    int    max_restarts;   /* per child; beyond it a crash ends the run */
    double grace_s;        /* SIGTERM -> SIGKILL delay at shutdown */
    double status_every_s; /* status callback period; 0 = never */
    void (*status)(void *ctx, double elapsed_s);
    void *status_ctx;
} LaunchConfig;

/* Counters of one finished run, per child index. */
typedef struct {
    int restarts[64];
    int last_status[64]; /* exit status, or 128 + signal */
} LaunchReport;

int launch_run(const LaunchConfig *cfg, LaunchChild *children, int n, LaunchReport *report);

#endif
