/* sandbox_exec: the inside of rlhf-sandbox-exec, the small program the
 * sandbox pool (reward_server/sandbox/sandbox.h) starts through libuv for every run
 * of untrusted code. libuv's uv_spawn has no hook between fork and exec, so
 * the limits and namespaces are applied here, in a process of our own, which
 * then runs the program as its child:
 *
 *   reward server --uv_spawn (new session)--> rlhf-sandbox-exec (H)
 *       H --fork--> C: limits, then exec python3
 *   with namespaces:
 *       H --fork--> U: unshare --fork--> C, pid 1: mounts, limits --fork--> exec python3
 *
 * H stays the leader of the process group the pool kills, waits for C,
 * writes "exit N" or "signal N" on the status fd and, with hold, waits to be
 * killed: the group's id stays taken until the pool has killed the whole
 * group, so that kill can never reach a stranger that reused the number.
 *
 * Isolation, strongest first (SANDBOX_ISO_AUTO takes the first that works):
 *  - namespaces: C is pid 1 of new user, pid, network, mount, IPC and UTS
 *    namespaces. The network namespace has only a loopback that is down. The
 *    whole file system is read-only except a private tmpfs on /tmp (C's
 *    working directory and HOME) and on /dev/shm; the hide paths are covered
 *    by empty read-only mounts; /proc shows only the sandbox's processes.
 *    When H runs as root C runs as uid/gid (65534, nobody, by default), mapped
 *    into the new user namespace; otherwise as the caller's own uid. When C
 *    ends, the kernel kills everything left in its pid namespace.
 *  - seccomp: for machines where namespaces are refused (Docker's default
 *    seccomp profile refuses them even to root). A seccomp filter refuses
 *    sockets other than AF_UNIX (so no network), signals to any process but
 *    C itself or its own group, ptrace and process_vm_*, pidfd signalling,
 *    io_uring and leaving the process group (setsid, setpgid), so that the
 *    pool's kill of the group reaches every process C made. The program runs
 *    in the caller's working directory (the pool's private mkdtemp one).
 *  - rlimits: the limits alone (and the uid drop as root). The network is not
 *    isolated and a program may signal processes of the same uid.
 * In every mode: RLIMIT_CPU (SIGXCPU, then SIGKILL a second later),
 * RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE 0, no new
 * privileges, SIGKILL when H dies (H itself dies with the thread that spawned
 * it), every fd but 0-3 closed, and a scrubbed environment (PATH, HOME,
 * TMPDIR, LANG, PYTHONHASHSEED=0, PYTHONDONTWRITEBYTECODE=1,
 * PYTHONIOENCODING=utf-8).
 *
 * RLIMIT_NPROC counts processes per user: with namespaces, per (user
 * namespace, uid) since Linux 5.14, so each run has its own count; without
 * them the limit is set to the tasks that uid runs now plus nproc.
 *
 * Ownership: the config is borrowed. Threading: a whole process, single
 * threaded. Errors: a setup failure is written to stderr and, as "setup
 * REASON", to the status fd; the exit status is then SANDBOX_EXEC_SETUP_FAILED. */
#ifndef RLHF_SANDBOX_EXEC_H
#define RLHF_SANDBOX_EXEC_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    SANDBOX_ISO_AUTO = 0,   /* the first of the three below that works here */
    SANDBOX_ISO_NAMESPACES, /* user, pid, net, mount, ipc, uts namespaces */
    SANDBOX_ISO_SECCOMP,    /* no namespaces; a seccomp filter instead */
    SANDBOX_ISO_RLIMITS,    /* limits only: network not isolated */
    SANDBOX_ISO_COUNT,
} SandboxIsolation;

/* The names of the modes in SandboxIsolation order, NULL-terminated (a flag's choices). */
extern const char *const sandbox_iso_names[];

/* Exit status of H when the sandbox could not be set up (C never ran the program). */
#define SANDBOX_EXEC_SETUP_FAILED 125
/* The fd C keeps open beside 0-2: the program's side channel to the pool. */
#define SANDBOX_EXEC_SIDE_FD 3

typedef struct {
    int         isolation; /* SandboxIsolation */
    int         cpu_s;     /* RLIMIT_CPU soft limit, seconds; the hard limit is one more */
    int         mem_mb;    /* RLIMIT_AS, MiB */
    int         file_mb;   /* RLIMIT_FSIZE, MiB */
    int         tmp_mb;    /* size of the private /tmp and /dev/shm (namespaces), MiB */
    int         nproc;     /* processes (threads included) the program may run at once */
    int         nofile;    /* RLIMIT_NOFILE */
    int         uid, gid;  /* the ids C runs as when H runs as root */
    const char *hide;      /* comma-separated paths covered by empty mounts; NULL = none */
    int         status_fd; /* where "exit N" / "signal N" / "setup WHY" lines go; -1 = none */
    bool        is_hold;   /* after reporting, wait to be killed instead of exiting */
    bool        is_probe;  /* set everything up, print "isolation MODE ..." and exit 0 */
} SandboxExecConfig;

#define SANDBOX_EXEC_DEFAULTS                                                                      \
    ((SandboxExecConfig){.isolation = SANDBOX_ISO_AUTO,                                            \
                         .cpu_s = 10,                                                              \
                         .mem_mb = 512,                                                            \
                         .file_mb = 16,                                                            \
                         .tmp_mb = 32,                                                             \
                         .nproc = 32,                                                              \
                         .nofile = 64,                                                             \
                         .uid = 65534,                                                             \
                         .gid = 65534,                                                             \
                         .hide = NULL,                                                             \
                         .status_fd = -1,                                                          \
                         .is_hold = false,                                                         \
                         .is_probe = false})

/* Runs argv (argv[0] a path, or a name looked up in /usr/local/bin:/usr/bin:/bin)
 * in the sandbox cfg describes and returns the exit status for H: C's
 * exit status, 128 + the signal that ended it, or SANDBOX_EXEC_SETUP_FAILED.
 * With is_hold it never returns once C has run. With is_probe, argv may be
 * empty: C stops just before exec, and "isolation MODE (details)" goes to
 * stdout. Must be called in a single-threaded process. */
int sandbox_exec_run(const SandboxExecConfig *cfg, char *const *argv);

/* The isolation a probe printed ("isolation seccomp (...)") as a
 * SandboxIsolation, or -1 when line is not a probe line. */
int sandbox_exec_parse_probe(const char *line);

#endif
