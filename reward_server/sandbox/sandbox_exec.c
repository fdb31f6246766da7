#include "reward_server/sandbox/sandbox_exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const sandbox_iso_names[] = {"auto", "namespaces", "seccomp", "rlimits", NULL};

/* The program's PATH, and where a bare program name is looked up. */
#define SBX_PATH "/usr/local/bin:/usr/bin:/bin"

/* What the child tells H on the ready pipe before it execs (the pipe closes
 * on a successful exec, so an empty read means the program runs). */
enum {
    SBX_MSG_UNSUPPORTED = 'U', /* this isolation cannot be set up here: try the next */
    SBX_MSG_ERROR = 'E',       /* a failure no other mode would fix */
    SBX_MSG_PROBED = 'P',      /* probe: everything set up */
    SBX_MSG_UNSHARED = 'N',    /* namespaces made: H writes the id maps, then says go */
};

/* The namespaces of SANDBOX_ISO_NAMESPACES. */
#define SBX_NS_FLAGS                                                                               \
    (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |     \
     CLONE_NEWCGROUP)

typedef struct {
    const SandboxExecConfig *cfg;
    int                      iso;         /* the mode being set up */
    bool                     is_root;     /* H runs as uid 0 */
    uid_t                    uid, uid_in; /* C's uid outside and inside its user namespace */
    gid_t                    gid, gid_in;
    pid_t                    h_pid;    /* H, C's parent */
    int                      go[2];    /* H -> C: maps written; EOF: H is gone */
    int                      ready[2]; /* C -> H: a SBX_MSG_* line, or EOF after exec */
    int                      init[2]; /* namespaces: C, the init, -> H: the program's wait status */
    const char              *path;    /* the program, resolved */
    char                     prefix[PATH_MAX]; /* the program's installation prefix (landlock) */
    char                     path_buf[PATH_MAX];
    bool                     has_landlock; /* set in C when the landlock rules took hold */
    char                     detail[256];  /* what the mode did, for the probe line */
} Ctx;

/* ---- messages -------------------------------------------------------------------------------- */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char    line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dprintf(STDERR_FILENO, "rlhf-sandbox-exec: %s\n", line);
}

/* In C: tells H why setup stopped (kind SBX_MSG_*) and exits. */
static _Noreturn void child_fail(const Ctx *x, char kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static _Noreturn void child_fail(const Ctx *x, char kind, const char *fmt, ...)
{
    char    line[400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + 1, sizeof line - 1, fmt, ap);
    va_end(ap);
    line[0] = kind;
    size_t  len = 1 + (n < 0 ? 0 : (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2);
    ssize_t w = write(x->ready[1], line, len);
    (void)w; /* H sees EOF without a message and reports that instead */
    _exit(SANDBOX_EXEC_SETUP_FAILED);
}

static void status_line(const SandboxExecConfig *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void status_line(const SandboxExecConfig *cfg, const char *fmt, ...)
{
    if (cfg->status_fd < 0) return;
    char    line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write of a short line to a pipe is atomic; a failure leaves the
     * pool without a status, which it reports as the run being killed. */
    ssize_t w = write(cfg->status_fd, line, (size_t)n);
    (void)w;
}

/* ---- small system helpers -------------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t  n = strlen(text);
    ssize_t w = write(fd, text, n);
    int     e = w == (ssize_t)n ? 0 : (w < 0 ? -errno : -EIO);
    close(fd);
    return e;
}

/* Closes every fd from lo up, except keep. */
static void close_from(int lo, int keep)
{
    if (keep >= lo) {
        if (keep > lo && close_range((unsigned)lo, (unsigned)keep - 1, 0) != 0)
            for (int fd = lo; fd < keep; fd++) close(fd);
        lo = keep + 1;
    }
    if (close_range((unsigned)lo, ~0U, 0) != 0) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = lo; fd < (max > 0 ? max : 1024); fd++) close((int)fd);
    }
}

/* argv[0] as a path: as given when it holds a '/', else the first
 * executable of that name in SBX_PATH. */
static int resolve_program(Ctx *x, const char *name)
{
    if (strchr(name, '/')) {
        snprintf(x->path_buf, sizeof x->path_buf, "%s", name);
    } else {
        bool  found = false;
        char  dirs[] = SBX_PATH;
        char *save = NULL;
        for (char *d = strtok_r(dirs, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
            snprintf(x->path_buf, sizeof x->path_buf, "%s/%s", d, name);
            found = access(x->path_buf, X_OK) == 0;
        }
        if (!found) {
            say("program '%s': not found in %s", name, SBX_PATH);
            return -ENOENT;
        }
    }
    x->path = x->path_buf;
    /* The prefix the program is installed under (/usr for /usr/bin/python3,
     * the version directory of a pyenv interpreter): landlock lets the
     * program read there, since its libraries live beside it. */
    char real[PATH_MAX];
    if (!realpath(x->path, real)) {
        say("program '%s': %s", x->path, strerror(errno));
        return -errno;
    }
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(real, '/');
        if (slash && slash != real) *slash = '\0';
    }
    snprintf(x->prefix, sizeof x->prefix, "%s", real);
    return 0;
}

/* Tasks (threads included) the real uid runs now, from /proc: the base
 * RLIMIT_NPROC must add to, since without a user namespace the kernel counts
 * every process of the uid. */
static long count_tasks(uid_t uid)
{
    DIR *d = opendir("/proc");
    if (!d) return -1;
    long           n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[64], buf[2048];
        snprintf(path, sizeof path, "/proc/%.20s/status", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got <= 0) continue;
        buf[got] = '\0';
        const char *u = strstr(buf, "\nUid:");
        const char *t = strstr(buf, "\nThreads:");
        if (!u || !t || strtoul(u + 5, NULL, 10) != uid) continue;
        n += strtol(t + 9, NULL, 10);
    }
    closedir(d);
    return n;
}

/* ---- namespaces ------------------------------------------------------------------------------ */

/* In H: the uid and gid maps of C's new user namespace. As root, C's uid
 * and gid map to themselves (C then switches to them); otherwise the
 * caller's own ids map to themselves, the one mapping an unprivileged
 * process may write. */
static int write_id_maps(const Ctx *x, pid_t pid, char *why, size_t why_len)
{
    char path[64], map[64];
    int  e;
    if (!x->is_root) {
        snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
        if ((e = write_file(path, "deny")) != 0) {
            snprintf(why, why_len, "write %s: %s", path, strerror(-e));
            return e;
        }
    }
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)x->uid_in, (unsigned)x->uid);
    if ((e = write_file(path, map)) != 0) {
        snprintf(why, why_len, "write %s: %s", path, strerror(-e));
        return e;
    }
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)x->gid_in, (unsigned)x->gid);
    if ((e = write_file(path, map)) != 0) {
        snprintf(why, why_len, "write %s: %s", path, strerror(-e));
        return e;
    }
    return 0;
}

/* In C, with every capability in its new user namespace: the mounts. */
static void setup_mounts(Ctx *x)
{
    const SandboxExecConfig *cfg = x->cfg;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        child_fail(x, SBX_MSG_UNSUPPORTED, "mount --make-rprivate /: %s", strerror(errno));
    /* Everything read-only and set-uid-free, at once (Linux 5.12). nodev
     * would break /dev/null, which the program needs. */
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID};
    if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) != 0)
        child_fail(x, SBX_MSG_UNSUPPORTED, "mount_setattr / read-only: %s", strerror(errno));
    char opts[160];
    snprintf(opts, sizeof opts, "size=%dm,nr_inodes=4096,mode=0700,uid=%u,gid=%u", cfg->tmp_mb,
             (unsigned)x->uid_in, (unsigned)x->gid_in);
    const char *tmps[] = {"/tmp", "/dev/shm"};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (i > 0 && (stat(tmps[i], &st) != 0 || !S_ISDIR(st.st_mode))) continue;
        if (mount("tmpfs", tmps[i], "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0)
            child_fail(x, SBX_MSG_UNSUPPORTED, "mount tmpfs on %s: %s", tmps[i], strerror(errno));
    }
    if (cfg->hide && cfg->hide[0]) {
        char  list[4096];
        char *save = NULL;
        snprintf(list, sizeof list, "%s", cfg->hide);
        for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
            struct stat st;
            if (!p[0] || stat(p, &st) != 0) continue; /* nothing there to hide */
            int rc = S_ISDIR(st.st_mode)
                         ? mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                 "size=4k,nr_inodes=2,mode=0500")
                         : mount("/dev/null", p, NULL, MS_BIND, NULL);
            if (rc != 0) child_fail(x, SBX_MSG_ERROR, "hide %s: %s", p, strerror(errno));
        }
    }
    /* /proc of the new pid namespace: the sandbox sees only its own
     * processes. A kernel that refuses (a /proc partly covered, as in
     * containers) gets an empty read-only /proc instead. */
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 &&
        mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,nr_inodes=2,mode=0555") != 0)
        child_fail(x, SBX_MSG_UNSUPPORTED, "mount /proc: %s", strerror(errno));
}

/* ---- seccomp --------------------------------------------------------------------------------- */

#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef SBX_AUDIT_ARCH
/* The low 32 bits of argument i (pids and socket domains are ints). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SBX_ARG_LO(i) ((uint32_t)offsetof(struct seccomp_data, args[i]))
#else
#define SBX_ARG_LO(i) ((uint32_t)offsetof(struct seccomp_data, args[i]) + 4)
#endif
#define SBX_LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define SBX_RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define SBX_DENY(e) SBX_RET(SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

typedef struct {
    struct sock_filter f[160];
    int                n;
} Bpf;

static void bpf_put(Bpf *b, struct sock_filter s)
{
    if (b->n < (int)(sizeof b->f / sizeof b->f[0])) b->f[b->n] = s;
    b->n++;
}

/* nr -> return e. */
static void bpf_deny(Bpf *b, long nr, int e)
{
    bpf_put(b, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1));
    bpf_put(b, (struct sock_filter)SBX_DENY(e));
}

/* nr allowed when argument arg equals one of the n values, else error e. */
static void bpf_allow_arg(Bpf *b, long nr, int arg, const uint32_t *v, int n, int e)
{
    /* jeq nr (else skip the block: A still holds nr); ld arg; jeq v0 -> allow; ...; deny; allow. */
    bpf_put(b, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0,
                                            (uint8_t)(n + 3)));
    bpf_put(b, (struct sock_filter)SBX_LD(SBX_ARG_LO(arg)));
    for (int i = 0; i < n; i++)
        bpf_put(b,
                (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, v[i], (uint8_t)(n - i), 0));
    bpf_put(b, (struct sock_filter)SBX_DENY(e));
    bpf_put(b, (struct sock_filter)SBX_RET(SECCOMP_RET_ALLOW));
}

/* The filter: see the header. self is C's pid, which exec keeps. */
static int install_seccomp(pid_t self, char *why, size_t why_len)
{
    Bpf b = {.n = 0};
    bpf_put(&b, (struct sock_filter)SBX_LD((uint32_t)offsetof(struct seccomp_data, arch)));
    bpf_put(&b, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0));
    bpf_put(&b, (struct sock_filter)SBX_RET(SECCOMP_RET_KILL_PROCESS));
    bpf_put(&b, (struct sock_filter)SBX_LD((uint32_t)offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    /* The x32 ABI's numbers (bit 30) would slip past every test below. */
    bpf_put(&b, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1));
    bpf_put(&b, (struct sock_filter)SBX_DENY(ENOSYS));
#endif
    const uint32_t unix_only[] = {AF_UNIX};
    bpf_allow_arg(&b, SYS_socket, 0, unix_only, 1, EACCES);
    bpf_allow_arg(&b, SYS_socketpair, 0, unix_only, 1, EACCES);
    /* Signals: to the program itself or its own group (pid 0) only. */
    const uint32_t self_or_group[] = {0u, (uint32_t)self};
    const uint32_t self_only[] = {(uint32_t)self};
    bpf_allow_arg(&b, SYS_kill, 0, self_or_group, 2, EPERM);
    bpf_allow_arg(&b, SYS_tgkill, 0, self_only, 1, EPERM);
    bpf_allow_arg(&b, SYS_rt_sigqueueinfo, 0, self_only, 1, EPERM);
    bpf_allow_arg(&b, SYS_rt_tgsigqueueinfo, 0, self_only, 1, EPERM);
    const long denied[] = {
        SYS_tkill,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_setsid,
        SYS_setpgid,
#ifdef SYS_pidfd_open
        SYS_pidfd_open,
#endif
#ifdef SYS_pidfd_send_signal
        SYS_pidfd_send_signal,
#endif
#ifdef SYS_pidfd_getfd
        SYS_pidfd_getfd,
#endif
#ifdef SYS_io_uring_setup
        SYS_io_uring_setup,
#endif
    };
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) bpf_deny(&b, denied[i], EPERM);
    bpf_put(&b, (struct sock_filter)SBX_RET(SECCOMP_RET_ALLOW));
    if (b.n > (int)(sizeof b.f / sizeof b.f[0])) {
        snprintf(why, why_len, "seccomp filter of %d instructions overflows", b.n);
        return -1;
    }
    struct sock_fprog prog = {.len = (unsigned short)b.n, .filter = b.f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        snprintf(why, why_len, "seccomp filter: %s", strerror(errno));
        return -1;
    }
    return 0;
}
#else
static int install_seccomp(pid_t self, char *why, size_t why_len)
{
    snprintf(why, why_len, "seccomp: no filter for this architecture");
    return -1;
}
#endif

/* ---- landlock -------------------------------------------------------------------------------- */

/* Rights of landlock ABI 1 (Linux 5.13) and TRUNCATE (ABI 3), which older
 * headers lack. */
#define SBX_LL_TRUNCATE (1ULL << 14)
#define SBX_LL_READ                                                                                \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define SBX_LL_ABI1_ALL ((1ULL << 13) - 1)

static int ll_add(int ruleset, const char *path, uint64_t access)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return 0; /* nothing there: nothing to allow */
    struct stat st;
    /* Rights on a file are the file-applicable subset only. */
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
        access &= LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                  LANDLOCK_ACCESS_FS_READ_FILE | SBX_LL_TRUNCATE;
    struct landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = fd};
    long rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    int  e = rc == 0 ? 0 : -errno;
    close(fd);
    return e;
}

/* The file system the program may touch, where the kernel has landlock:
 * read and run beneath the system directories and the program's prefix,
 * read and write beneath the working directory (and /dev/shm, a private tmpfs with
 * namespaces), /dev/null and the random devices. Everything else (home
 * directories, the reward server's keys and runs) is refused. Returns 1 when
 * the rules hold, 0 when the kernel has no landlock, or a negative errno. */
static int install_landlock(const Ctx *x)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1) return 0;
    uint64_t                     handled = SBX_LL_ABI1_ALL | (abi >= 3 ? SBX_LL_TRUNCATE : 0);
    struct landlock_ruleset_attr attr = {.handled_access_fs = handled};
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (rs < 0) return -errno;
    const char *const read_dirs[] = {"/usr",  "/lib", "/lib32", "/lib64", "/bin",
                                     "/sbin", "/etc", "/opt",   x->prefix};
    int               e = 0;
    for (size_t i = 0; i < sizeof read_dirs / sizeof read_dirs[0] && !e; i++)
        e = ll_add(rs, read_dirs[i], SBX_LL_READ);
    /* "." is workdir (C is in it): by path, a parent C may not search would hide it. */
    if (!e) e = ll_add(rs, ".", handled);
    if (!e && x->iso == SANDBOX_ISO_NAMESPACES) e = ll_add(rs, "/dev/shm", handled);
    const char *const devs[] = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0] && !e; i++)
        e = ll_add(rs, devs[i], LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE);
    if (!e && syscall(SYS_landlock_restrict_self, rs, 0) != 0) e = -errno;
    close(rs);
    return e ? e : 1;
}

/* ---- the child ------------------------------------------------------------------------------- */

static void set_limit(const Ctx *x, int res, const char *name, rlim_t soft, rlim_t hard)
{
    struct rlimit rl = {soft, hard};
    if (setrlimit(res, &rl) != 0)
        child_fail(x, SBX_MSG_ERROR, "setrlimit %s %llu: %s", name, (unsigned long long)soft,
                   strerror(errno));
}

/* H is gone (it holds go[1] until it exits): nothing would wait for us. */
static bool parent_gone(const Ctx *x)
{
    struct pollfd p = {.fd = x->go[0], .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* With namespaces C is pid 1 of the new pid namespace, and the program
 * its child: the kernel drops signals to an init that has no handler for
 * them when they come from inside (a program's kill of its parent, and
 * SIGXCPU too, would be lost on the program itself as pid 1). C reaps
 * whatever is reparented to it until the program ends, hands the program's
 * wait status to H and exits, which kills everything left in the namespace. */
static _Noreturn void run_init(Ctx *x, char *const *argv, char *const *env)
{
    pid_t p = fork();
    if (p < 0) child_fail(x, SBX_MSG_ERROR, "fork the program: %s", strerror(errno));
    if (p == 0) {
        close(x->init[1]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != 1)
            child_fail(x, SBX_MSG_ERROR, "PR_SET_PDEATHSIG: %s", strerror(errno));
        execve(x->path, argv, env);
        child_fail(x, SBX_MSG_ERROR, "exec %s: %s", x->path, strerror(errno));
    }
    close(x->ready[1]); /* the program's copy closes on exec: H's EOF */
    int st = 0;
    for (;;) {
        int   s2 = 0;
        pid_t w = waitpid(-1, &s2, __WALL);
        if (w == p) {
            st = s2;
            break;
        }
        if (w < 0 && errno != EINTR) _exit(SANDBOX_EXEC_SETUP_FAILED);
    }
    ssize_t n = write(x->init[1], &st, sizeof st);
    _exit(n == (ssize_t)sizeof st ? 0 : SANDBOX_EXEC_SETUP_FAILED);
}

/* Closes H's ends of the pipes and the status fd in a child of H. */
static void close_h_ends(const Ctx *x)
{
    close(x->go[1]);
    close(x->ready[0]);
    if (x->init[0] >= 0) close(x->init[0]);
    if (x->cfg->status_fd >= 0) close(x->cfg->status_fd);
}

/* C: the sandbox set up around itself, then the program (with namespaces:
 * as pid 1 of the new pid namespace, the program's init; see run_init). */
static _Noreturn void run_child(Ctx *x, char *const *argv)
{
    const SandboxExecConfig *cfg = x->cfg;
    const bool               is_ns = x->iso == SANDBOX_ISO_NAMESPACES;
    if (!is_ns) close_h_ends(x);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        child_fail(x, SBX_MSG_ERROR, "PR_SET_PDEATHSIG: %s", strerror(errno));
    if (is_ns)
        setup_mounts(x);
    else if (getppid() != x->h_pid)
        _exit(SANDBOX_EXEC_SETUP_FAILED);
    if (x->is_root) {
        if (setgroups(0, NULL) != 0 || setresgid(x->gid_in, x->gid_in, x->gid_in) != 0 ||
            setresuid(x->uid_in, x->uid_in, x->uid_in) != 0)
            child_fail(x, SBX_MSG_ERROR, "switch to uid %u gid %u: %s", (unsigned)x->uid,
                       (unsigned)x->gid, strerror(errno));
        /* The switch cleared the parent-death signal. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            child_fail(x, SBX_MSG_ERROR, "PR_SET_PDEATHSIG: %s", strerror(errno));
    }
    if (parent_gone(x)) _exit(SANDBOX_EXEC_SETUP_FAILED);

    /* RLIMIT_NPROC: a user namespace has its own count (the unsharer and the
     * init may be among them); otherwise the uid's tasks everywhere count, so the program gets
     * nproc more than now. */
    rlim_t nproc = (rlim_t)cfg->nproc + (is_ns ? 2 : 0);
    if (!is_ns) {
        long now = count_tasks(x->uid);
        if (now < 0) child_fail(x, SBX_MSG_ERROR, "count tasks of uid %u: /proc", (unsigned)x->uid);
        nproc += (rlim_t)now;
    }
    const rlim_t mib = 1024 * 1024;
    set_limit(x, RLIMIT_CPU, "CPU", (rlim_t)cfg->cpu_s, (rlim_t)cfg->cpu_s + 1);
    set_limit(x, RLIMIT_AS, "AS", (rlim_t)cfg->mem_mb * mib, (rlim_t)cfg->mem_mb * mib);
    set_limit(x, RLIMIT_FSIZE, "FSIZE", (rlim_t)cfg->file_mb * mib, (rlim_t)cfg->file_mb * mib);
    set_limit(x, RLIMIT_NPROC, "NPROC", nproc, nproc);
    set_limit(x, RLIMIT_NOFILE, "NOFILE", (rlim_t)cfg->nofile, (rlim_t)cfg->nofile);
    set_limit(x, RLIMIT_CORE, "CORE", 0, 0);
    set_limit(x, RLIMIT_MEMLOCK, "MEMLOCK", 0, 0);

    /* Without namespaces the program stays where H was started (the pool's
     * private directory), which C holds already: a chdir by path could fail
     * on a parent the uid may not search. */
    char workdir[PATH_MAX];
    if (is_ns) {
        snprintf(workdir, sizeof workdir, "/tmp");
        if (chdir(workdir) != 0)
            child_fail(x, SBX_MSG_ERROR, "chdir %s: %s", workdir, strerror(errno));
    } else if (!getcwd(workdir, sizeof workdir)) {
        child_fail(x, SBX_MSG_ERROR, "getcwd: %s", strerror(errno));
    }

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail(x, SBX_MSG_ERROR, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    if (x->iso != SANDBOX_ISO_RLIMITS) {
        int ll = install_landlock(x);
        if (ll < 0) child_fail(x, SBX_MSG_UNSUPPORTED, "landlock: %s", strerror(-ll));
        x->has_landlock = ll == 1;
    }
    if (x->iso == SANDBOX_ISO_SECCOMP) {
        char why[160];
        if (install_seccomp(getpid(), why, sizeof why) != 0)
            child_fail(x, SBX_MSG_UNSUPPORTED, "%s", why);
    }

    char env_home[PATH_MAX + 8], env_tmp[PATH_MAX + 8];
    snprintf(env_home, sizeof env_home, "HOME=%s", workdir);
    snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", workdir);
    char *const env[] = {"PATH=" SBX_PATH,
                         env_home,
                         env_tmp,
                         "LANG=C.UTF-8",
                         "LC_ALL=C.UTF-8",
                         "PYTHONHASHSEED=0",
                         "PYTHONDONTWRITEBYTECODE=1",
                         "PYTHONIOENCODING=utf-8",
                         NULL};
    if (cfg->is_probe) {
        char    msg[8];
        int     n = snprintf(msg, sizeof msg, "%c%c", SBX_MSG_PROBED, x->has_landlock ? 'L' : '-');
        ssize_t w = write(x->ready[1], msg, (size_t)n);
        (void)w;
        _exit(0);
    }
    if (is_ns) run_init(x, argv, env);
    execve(x->path, argv, env);
    child_fail(x, SBX_MSG_ERROR, "exec %s: %s", x->path, strerror(errno));
}

/* With namespaces, H's child U makes them (unshare, in a process that
 * fork left single threaded, as CLONE_NEWUSER requires: a sanitizer's
 * threads in H do not come along), waits while H writes its uid and gid
 * maps, and forks C, the first process of the new pid namespace. U stays
 * outside it, waits for C and ends as C ended. fork and unshare rather
 * than one raw clone: glibc's fork keeps the C library (and a sanitizer's
 * allocator) consistent in the child. */
static _Noreturn void run_unsharer(Ctx *x, char *const *argv)
{
    close_h_ends(x);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        child_fail(x, SBX_MSG_ERROR, "PR_SET_PDEATHSIG: %s", strerror(errno));
    if (unshare(SBX_NS_FLAGS) != 0)
        child_fail(x, SBX_MSG_UNSUPPORTED, "unshare (new namespaces): %s", strerror(errno));
    char    c = SBX_MSG_UNSHARED;
    ssize_t got = write(x->ready[1], &c, 1);
    while (got == 1 && (got = read(x->go[0], &c, 1)) < 0 && errno == EINTR) {
    }
    if (got != 1) _exit(SANDBOX_EXEC_SETUP_FAILED); /* H failed and says why */
    pid_t pid = fork();
    if (pid < 0)
        child_fail(x, SBX_MSG_ERROR, "fork into the new pid namespace: %s", strerror(errno));
    if (pid == 0) run_child(x, argv);
    close(x->ready[1]);
    close(x->init[1]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) _exit(SANDBOX_EXEC_SETUP_FAILED);
    }
    if (WIFSIGNALED(st)) {
        signal(WTERMSIG(st), SIG_DFL);
        kill(getpid(), WTERMSIG(st));
    }
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : SANDBOX_EXEC_SETUP_FAILED);
}

/* ---- H --------------------------------------------------------------------------------------- */

typedef struct {
    bool is_unsupported; /* this mode cannot be set up here */
    bool is_failed;      /* setup failed for good */
    bool has_landlock;
    int  wait_status; /* C's, when it ran */
    char why[400];
} Attempt;

/* Reads C's message from the ready pipe until EOF (C's exec closes it);
 * first, when not 0, is its first byte, already read. */
static void read_ready(const Ctx *x, Attempt *a, char first)
{
    char   buf[400];
    size_t n = 0;
    if (first) buf[n++] = first;
    for (;;) {
        ssize_t got = read(x->ready[0], buf + n, sizeof buf - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
        if (n == sizeof buf - 1) break;
    }
    buf[n] = '\0';
    if (n == 0) return;
    if (buf[0] == SBX_MSG_PROBED) {
        a->has_landlock = buf[1] == 'L';
        return;
    }
    a->is_unsupported = buf[0] == SBX_MSG_UNSUPPORTED;
    a->is_failed = !a->is_unsupported;
    snprintf(a->why, sizeof a->why, "%s", buf + 1);
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, __WALL) < 0) {
        if (errno != EINTR) return -1;
    }
    return st;
}

/* Starts C in mode x->iso and waits for it. */
static void attempt(Ctx *x, char *const *argv, Attempt *a)
{
    memset(a, 0, sizeof *a);
    const bool is_ns = x->iso == SANDBOX_ISO_NAMESPACES;
    x->init[0] = x->init[1] = -1;
    if (pipe2(x->go, O_CLOEXEC) != 0 || pipe2(x->ready, O_CLOEXEC) != 0 ||
        (is_ns && pipe2(x->init, O_CLOEXEC) != 0)) {
        a->is_failed = true;
        snprintf(a->why, sizeof a->why, "pipe2: %s", strerror(errno));
        return;
    }
    x->h_pid = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (is_ns) run_unsharer(x, argv);
        run_child(x, argv);
    }
    close(x->go[0]);
    close(x->ready[1]);
    if (is_ns) close(x->init[1]);
    if (pid < 0) {
        a->is_failed = true;
        snprintf(a->why, sizeof a->why, "fork: %s", strerror(errno));
        close(x->go[1]);
        close(x->ready[0]);
        if (is_ns) close(x->init[0]);
        return;
    }
    char first = 0;
    if (is_ns) {
        ssize_t got;
        while ((got = read(x->ready[0], &first, 1)) < 0 && errno == EINTR) {
        }
        if (got == 1 && first == SBX_MSG_UNSHARED) {
            first = 0;
            char why[200];
            int  e = write_id_maps(x, pid, why, sizeof why);
            if (e == 0 && write(x->go[1], "g", 1) != 1) e = -errno;
            if (e != 0) {
                kill(pid, SIGKILL);
                wait_child(pid);
                a->is_unsupported = true;
                snprintf(a->why, sizeof a->why, "%s", why);
                close(x->go[1]);
                close(x->ready[0]);
                close(x->init[0]);
                return;
            }
        } else if (got != 1) {
            first = 0;
        }
    }
    read_ready(x, a, first);
    close(x->ready[0]);
    a->wait_status = wait_child(pid);
    if (is_ns) {
        /* The program's status from the init; without it (the init was
         * killed) the init's own. */
        int     st;
        ssize_t n;
        while ((n = read(x->init[0], &st, sizeof st)) < 0 && errno == EINTR) {
        }
        if (n == (ssize_t)sizeof st && !a->is_unsupported && !a->is_failed) a->wait_status = st;
        close(x->init[0]);
    }
    /* go[1] stays open until H exits: C (and nothing after its exec) reads it. */
}

static void describe(const Ctx *x, const Attempt *a, char *out, size_t cap)
{
    const char *ll = a->has_landlock ? "landlock file rules" : "no landlock";
    if (x->iso == SANDBOX_ISO_NAMESPACES)
        snprintf(out, cap,
                 "user, pid, net, mount, ipc namespaces; read-only root, private /tmp; %s; uid %u",
                 ll, (unsigned)x->uid);
    else if (x->iso == SANDBOX_ISO_SECCOMP)
        snprintf(out, cap,
                 "seccomp: no inet sockets, signals to itself only, no setsid; %s; uid %u; "
                 "no namespaces",
                 ll, (unsigned)x->uid);
    else
        snprintf(out, cap, "limits only: network not isolated; uid %u", (unsigned)x->uid);
}

int sandbox_exec_parse_probe(const char *line)
{
    const char *pre = "isolation ";
    if (!line || strncmp(line, pre, strlen(pre))) return -1;
    const char *m = line + strlen(pre);
    for (int i = SANDBOX_ISO_NAMESPACES; i < SANDBOX_ISO_COUNT; i++) {
        size_t n = strlen(sandbox_iso_names[i]);
        if (!strncmp(m, sandbox_iso_names[i], n) && (m[n] == ' ' || m[n] == '\n' || !m[n]))
            return i;
    }
    return -1;
}

/* H's exit status for C's wait status: its exit status, or 128 + signal. */
static int mirror_status(int st)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return SANDBOX_EXEC_SETUP_FAILED;
}

static _Noreturn void hold(void)
{
    /* The pool kills the group (this process included) once it has read the
     * status; until then the group's id cannot be reused. */
    for (;;) pause();
}

int sandbox_exec_run(const SandboxExecConfig *cfg, char *const *argv)
{
    /* H dies with the pool's thread, and C with H. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) say("PR_SET_PDEATHSIG: %s", strerror(errno));
    if (cfg->status_fd >= 0) {
        if (fcntl(cfg->status_fd, F_SETFD, FD_CLOEXEC) != 0) {
            say("status fd %d: %s", cfg->status_fd, strerror(errno));
            return SANDBOX_EXEC_SETUP_FAILED;
        }
    }
    close_from(SANDBOX_EXEC_SIDE_FD + 1, cfg->status_fd);
    Ctx x = {.cfg = cfg, .is_root = geteuid() == 0};
    x.uid = x.is_root ? (uid_t)cfg->uid : getuid();
    x.gid = x.is_root ? (gid_t)cfg->gid : getgid();
    x.uid_in = x.uid;
    x.gid_in = x.gid;
    if (argv && argv[0]) {
        if (resolve_program(&x, argv[0]) != 0) {
            status_line(cfg, "setup program '%s' not found", argv[0]);
            return SANDBOX_EXEC_SETUP_FAILED;
        }
    } else if (!cfg->is_probe) {
        say("no program given (after --)");
        return SANDBOX_EXEC_SETUP_FAILED;
    } else {
        snprintf(x.prefix, sizeof x.prefix, "/usr");
    }
    bool is_auto = cfg->isolation == SANDBOX_ISO_AUTO;
    int  first = is_auto ? SANDBOX_ISO_NAMESPACES : cfg->isolation;
    int  last = is_auto ? SANDBOX_ISO_RLIMITS : cfg->isolation;
    char skipped[800] = "";
    for (int iso = first; iso <= last; iso++) {
        x.iso = iso;
        Attempt a;
        attempt(&x, argv, &a);
        if (a.is_unsupported && iso < last) {
            size_t k = strlen(skipped);
            snprintf(skipped + k, sizeof skipped - k, "%s%s: %s", k ? "; " : "",
                     sandbox_iso_names[iso], a.why);
            continue;
        }
        if (a.is_unsupported || a.is_failed) {
            say("%s: %s", sandbox_iso_names[iso], a.why);
            status_line(cfg, "setup %s: %s", sandbox_iso_names[iso], a.why);
            return SANDBOX_EXEC_SETUP_FAILED;
        }
        if (cfg->is_probe) {
            char d[400];
            describe(&x, &a, d, sizeof d);
            printf("isolation %s (%s)%s%s\n", sandbox_iso_names[iso], d, skipped[0] ? "; not " : "",
                   skipped);
            fflush(stdout);
            return 0;
        }
        int st = a.wait_status;
        if (WIFSIGNALED(st))
            status_line(cfg, "signal %d", WTERMSIG(st));
        else
            status_line(cfg, "exit %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        if (cfg->is_hold) hold();
        return mirror_status(st);
    }
    return SANDBOX_EXEC_SETUP_FAILED; /* unreachable: the loop returns */
}
