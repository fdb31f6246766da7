#include "common/base/prog.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* The one stop flag (see prog.h for why an atomic_int). */
static atomic_int g_stop;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag is set from a signal handler");

int prog_start(FlagsSpec *spec, int argc, char **argv, const char *log_role, const int *log_level)
{
    int rc = flags_parse(spec, argc, argv);
    if (rc == FLAGS_HELP) return PROG_EXIT_OK;
    if (rc) return PROG_EXIT_USAGE;
    log_init(log_role, log_level ? *log_level : -1);
    char cfg[4096];
    flags_format_config(spec, cfg, sizeof cfg);
    log_info("config: %s", cfg);
    return PROG_RUN;
}

int prog_start_stoppable(FlagsSpec *spec, int argc, char **argv, const char *log_role,
                         const int *log_level)
{
    int rc = prog_start(spec, argc, argv, log_role, log_level);
    if (rc != PROG_RUN) return rc;
    return prog_catch_signals() ? PROG_EXIT_FAIL : PROG_RUN;
}

void prog_stop(void)
{
    atomic_store(&g_stop, 1);
}

static void on_signal(int sig)
{
    (void)sig;
    if (atomic_load(&g_stop)) _exit(PROG_EXIT_SIGNAL); /* the second signal: now */
    prog_stop();
}

int prog_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL) ||
        signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_error("prog_catch_signals: %s", strerror(errno));
        return ERR_IO;
    }
    return 0;
}

atomic_int *prog_stop_atomic(void)
{
    return &g_stop;
}
