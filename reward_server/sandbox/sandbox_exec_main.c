/* rlhf-sandbox-exec: runs one program in a sandbox (reward_server/sandbox/sandbox_exec.h):
 * namespaces or a seccomp filter, landlock file rules, resource limits. The
 * reward server starts it through libuv for every run of untrusted code;
 * by hand it shows what this machine allows:
 *
 *   rlhf-sandbox-exec --probe
 *   rlhf-sandbox-exec --cpu-s 2 -- python3 -c 'import socket; socket.create_connection(("1.1.1.1",
 * 80))'
 */
#include "common/base/log.h"
#include "common/base/prog.h"
#include "reward_server/sandbox/sandbox_exec.h"

#define SANDBOX_EXEC_MAX_ARGS 64

int main(int argc, char **argv)
{
    SandboxExecConfig cfg = SANDBOX_EXEC_DEFAULTS;
    int               level = LOG_WARN;
    const char       *args[SANDBOX_EXEC_MAX_ARGS + 1] = {0};

    Flag flags[] = {
        FLAG_CHOICE("isolation", &cfg.isolation, sandbox_iso_names, "MODE",
                    "namespaces, seccomp, rlimits, or auto: the first that works"),
        FLAG_INT("cpu-s", &cfg.cpu_s, 1, 3600, "S", "CPU seconds (SIGXCPU, SIGKILL 1 s later)"),
        FLAG_INT("mem-mb", &cfg.mem_mb, 16, 1 << 20, "MB", "address space (RLIMIT_AS)"),
        FLAG_INT("file-mb", &cfg.file_mb, 0, 1 << 20, "MB", "largest file written (RLIMIT_FSIZE)"),
        FLAG_INT("tmp-mb", &cfg.tmp_mb, 1, 1 << 16, "MB",
                 "size of the private /tmp and /dev/shm (namespaces)"),
        FLAG_INT("nproc", &cfg.nproc, 1, 1 << 16, "N", "processes and threads at once"),
        FLAG_INT("nofile", &cfg.nofile, 8, 1 << 20, "N", "open files (RLIMIT_NOFILE)"),
        FLAG_INT("uid", &cfg.uid, 1, 0x7ffffffe, "UID",
                 "the uid the program runs as when started as root"),
        FLAG_INT("gid", &cfg.gid, 1, 0x7ffffffe, "GID",
                 "the gid the program runs as when started as root"),
        FLAG_STRING("hide", &cfg.hide, "PATHS",
                    "comma-separated paths covered by empty mounts (namespaces)", .def = "none"),
        FLAG_INT("status-fd", &cfg.status_fd, -1, 1 << 20, "FD",
                 "write \"exit N\", \"signal N\" or \"setup WHY\" here; -1 = none"),
        FLAG_BOOL("hold", &cfg.is_hold,
                  "after the status line, wait to be killed (the caller kills the group)"),
        FLAG_BOOL("probe", &cfg.is_probe,
                  "set everything up, print \"isolation MODE (...)\" and exit"),
        FLAG_LOG_LEVEL(&level),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-sandbox-exec",
        .synopsis = "[FLAGS] -- PROGRAM [ARGS...]\n[FLAGS] --probe",
        .about = "Runs PROGRAM in a sandbox: new namespaces (or a seccomp filter where they are\n"
                 "refused), landlock file rules, CPU, memory, file, process and fd limits.\n"
                 "The reward server runs untrusted code through it.\n",
        .flags = flags,
        .args = args,
        .n_args_max = SANDBOX_EXEC_MAX_ARGS,
    };
    int rc = prog_start(&spec, argc, argv, "sandbox", &level);
    if (rc != PROG_RUN) return rc;
    if (!args[0] && !cfg.is_probe) {
        log_error("rlhf-sandbox-exec: no program given (see --help)");
        return PROG_EXIT_USAGE;
    }
    return sandbox_exec_run(&cfg, (char *const *)args);
}
