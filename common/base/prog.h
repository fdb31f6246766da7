/* prog: the one shape of a program's main.
 *
 *     int main(int argc, char **argv)
 *     {
 *         Config cfg = CONFIG_DEFAULTS;
 *         Flag   flags[] = {FLAG_INT("steps", &cfg.steps, ...), ..., FLAGS_END};
 *         FlagsSpec spec = {.prog = "rlhf-x", .flags = flags, ...};
 *         int rc = prog_start_stoppable(&spec, argc, argv, "x", &cfg.log_level);
 *         if (rc != PROG_RUN) return rc;
 *         ... x_new(&cfg), x_run(x, prog_stop_atomic()), x_free(&x) ...
 *     }
 *
 * Exit statuses, the same in every program: 0 done (and after --help), 1
 * failed, 2 bad command line, PROG_EXIT_SIGNAL when a second SIGINT or
 * SIGTERM ends a program that was already stopping. Programs with a loop
 * that looks at the stop flag (the daemons, the trainers) start with
 * prog_start_stoppable, which catches those signals; one-shot tools start
 * with prog_start and keep the default dispositions, so Ctrl-C ends them
 * at once. Main thread only, except the stop flag, which any thread may
 * read.
 *
 * The stop flag is one atomic_int, the type every x_run takes: a signal
 * handler may store to it because it is lock-free (C11 7.14.1.1, checked
 * at compile time in prog.c), and unlike a volatile sig_atomic_t it may
 * also be read from other threads without a data race. */
#ifndef RLHF_PROG_H
#define RLHF_PROG_H

#include <signal.h>
#include <stdatomic.h>

#include "common/base/flags.h"

enum {
    PROG_EXIT_OK = 0,
    PROG_EXIT_FAIL = 1,
    PROG_EXIT_USAGE = 2,
    PROG_EXIT_SIGNAL = 130, /* a second signal while stopping: 128 + SIGINT, as shells report */
};
#define PROG_RUN (-1) /* prog_start: go on */

/* Parses the command line (flags_parse), then starts logging with role
 * log_role at *log_level as parsed (NULL or < 0: $RLHF_LOG, else info) and
 * logs the effective
 * config ("config: name=value ..."). Returns PROG_RUN, or the status main
 * returns at once: PROG_EXIT_OK after --help, PROG_EXIT_USAGE after a bad
 * command line (already explained on stderr). */
int prog_start(FlagsSpec *spec, int argc, char **argv, const char *log_role, const int *log_level);

/* prog_start, then prog_catch_signals: the start of a program that runs
 * until the stop flag. Returns PROG_RUN, prog_start's status, or
 * PROG_EXIT_FAIL when the handlers could not be installed. */
int prog_start_stoppable(FlagsSpec *spec, int argc, char **argv, const char *log_role,
                         const int *log_level);

/* SIGINT and SIGTERM set the stop flag; a second one exits at once with
 * PROG_EXIT_SIGNAL. SIGPIPE is ignored: a vanished peer shows up as a send
 * error, not a dead process. Returns 0, or ERR_IO after logging. */
int prog_catch_signals(void);

/* The stop flag, set by the handlers (and by prog_stop): 0 until then. */
atomic_int *prog_stop_atomic(void);
/* Sets the stop flag, as a signal would. */
void prog_stop(void);

#endif
