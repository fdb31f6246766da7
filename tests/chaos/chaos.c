/* chaos: the chaos soak (issue 8). Runs a local cluster of real daemons on
 * loopback (the learner, --rewards reward servers, --actors actors, warm
 * started from a small SFT checkpoint made here and cached) for --seconds
 * while, every few seconds at random (seeded), one daemon meets a fault:
 *
 *   kill           SIGKILL, restarted after a random delay (the learner
 *                  resumes from its --ckpt-dir as a new epoch)
 *   stop           SIGSTOP for a random while, then SIGCONT
 *   kill_mid_save  the learner SIGKILLed while it writes a checkpoint (the
 *                  moment its temp directory appears), then restarted
 *
 * leaving at least one actor and one reward server up. Each fault is logged
 * with its time (stdout and DIR/faults.log). In the last --quiet-s seconds
 * no new fault starts and every daemon is brought back; then the learner is
 * stopped with SIGTERM (final evaluation, checkpoint and summary.json) and
 * the invariants are checked from what the daemons wrote
 * (tests/chaos/chaos_check.h), plus: the final checkpoint loads (here and
 * with rlhf-export), the held-out accuracy reaches --target, no daemon
 * exited on its own, and no interrupted save's temp directory is left. The report goes to --out
 * (JSON: settings, fault counts by kind and target, restarts, epochs, steps, samples, accuracy,
 * each invariant with its numbers); the exit status is 0 only if every
 * invariant holds. `make chaos` runs it (CHAOS_SECONDS, default 1800). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/flags.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/net/endpoints.h"
#include "common/nn/model.h"
#include "deploy/cluster_cmd.h"
#include "tests/chaos/chaos_check.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"

typedef struct {
    int         seconds;      /* the soak's length */
    uint64_t    seed;         /* faults and the learner's run */
    const char *out;          /* the JSON report */
    const char *dir;          /* work directory (emptied first) */
    const char *sft_dir;      /* the warm start, made if missing */
    int         sft_steps;    /* its SFT steps */
    int         actors;       /* actor daemons */
    int         rewards;      /* reward servers */
    double      target;       /* held-out accuracy the final model must reach */
    double      fault_min_s;  /* gap between faults, uniform in [min, max] */
    double      fault_max_s;  /*  */
    double      down_max_s;   /* a killed daemon restarts after 1..down_max_s */
    double      stop_max_s;   /* a stopped daemon resumes after 1..stop_max_s */
    double      quiet_s;      /* no new fault in the soak's last quiet_s seconds */
    int         batch_groups; /* the learner's --batch-groups */
    int         ckpt_every;   /* the learner's --ckpt-every */
    int         eval_n;       /* the learner's --eval-n */
} Args;

typedef enum { KIND_LEARNER, KIND_REWARD, KIND_ACTOR, N_KINDS } DaemonKind;
typedef enum { FAULT_KILL, FAULT_STOP, FAULT_KILL_MID_SAVE, N_FAULTS } FaultKind;
static const char *const k_kind_names[N_KINDS] = {"learner", "reward", "actor"};
static const char *const k_fault_names[N_FAULTS] = {"kill", "stop", "kill_mid_save"};

#define MAX_DAEMONS 16

typedef struct {
    char       name[32]; /* learner, reward-0, actor-1, ... */
    char       log[PATH_MAX];
    DaemonKind kind;
    Proc      *p;
    bool       is_down;    /* killed (or exited); restarts at restart_at */
    double     restart_at; /* soak seconds */
    bool       is_stopped; /* SIGSTOPped; resumes at cont_at */
    double     cont_at;
    int        faults[N_FAULTS];
    int        starts, exits; /* exits: on its own, not by a fault */
    long       log_from;      /* the log's size at the last start */
} Daemon;

typedef struct {
    Args    a;
    char    bin[PATH_MAX];
    char    run_dir[PATH_MAX];
    char    ckpt[PATH_MAX + 16], metrics[PATH_MAX + 32], summary[PATH_MAX + 32];
    char    trained[PATH_MAX + 32];
    Daemon  d[MAX_DAEMONS];
    int     n;
    Rng     rng;
    double  t0;
    FILE   *fault_log;
    int     faults[N_KINDS][N_FAULTS];
    int     mid_save_confirmed; /* kills that left a checkpoint's temp directory behind */
    int     ino;                /* inotify on run_dir while a mid-save kill is armed, else -1 */
    Daemon *armed;              /* the learner, when a kill_mid_save waits for a save */
    double  armed_until;
    json_t *unexpected; /* exits on their own: [{daemon, t, status}] */
} Soak;

static double soak_t(const Soak *s)
{
    return progress_now() - s->t0;
}

static double uniform(Soak *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)rng_uniform(&s->rng);
}

static void note(Soak *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(Soak *s, const char *fmt, ...)
{
    char    buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("chaos [%7.1f s] %s\n", soak_t(s), buf);
    fflush(stdout);
    if (s->fault_log) {
        fprintf(s->fault_log, "%.1f %s\n", soak_t(s), buf);
        fflush(s->fault_log);
    }
}

/* ---- the daemons ------------------------------------------------------- */

static Daemon *add_daemon(Soak *s, DaemonKind kind, const char *name, const ClusterCmd *cmd)
{
    CHECK(s->n < MAX_DAEMONS);
    Daemon *d = &s->d[s->n++];
    memset(d, 0, sizeof *d);
    d->kind = kind;
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->log, sizeof d->log, "%s/%s.log", s->a.dir, name);
    ProcOpts o = {.name = d->name, .log_path = d->log};
    d->p = proc_new(cmd->argv[0], (const char *const *)cmd->argv, &o);
    return d;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static int start(Soak *s, Daemon *d)
{
    d->log_from = file_size(d->log);
    int rc = proc_start(d->p);
    if (rc) {
        fprintf(stderr, "chaos: cannot start %s: %s\n", d->name, err_str(rc));
        return rc;
    }
    d->starts++;
    d->is_down = d->is_stopped = false;
    return 0;
}

static bool is_up(Daemon *d)
{
    return !d->is_down && !d->is_stopped;
}

/* Waits until the learner's log, since its last start, says it serves
 * (its startup line), or it exits, or timeout_s passes. */
static bool wait_learner_ready(Soak *s, Daemon *l, double timeout_s)
{
    long   from = l->log_from;
    double end = progress_now() + timeout_s;
    while (progress_now() < end && !proc_interrupted()) {
        char  *text = NULL;
        size_t len = 0;
        if (fileio_read_all(l->log, (size_t)1 << 30, true, &text, &len) == 0) {
            bool ready = (long)len > from && strstr(text + from, "; leases of ");
            free(text);
            if (ready) return true;
        }
        if (!proc_is_running(l->p)) return false;
        usleep(100 * 1000);
    }
    return false;
}

/* The newest metrics record's step, 0 before the first. */
static int64_t metrics_step(const Soak *s)
{
    FILE *f = fopen(s->metrics, "r");
    if (!f) return 0;
    int64_t step = 0;
    char   *line = NULL;
    size_t  cap = 0;
    /* Records are ~1.5 kB: the last few kB hold the newest. */
    if (fseek(f, -8192, SEEK_END) != 0) rewind(f);
    while (getline(&line, &cap, f) > 0) {
        const char *p = strstr(line, "{\"step\":");
        if (p) step = strtoll(p + 8, NULL, 10);
    }
    free(line);
    fclose(f);
    return step;
}

/* ---- faults ------------------------------------------------------------ */

/* True if a fault may take d down now: it is up, and an actor or a reward
 * server is not the last of its kind up. */
static bool may_fault(Soak *s, Daemon *d)
{
    if (!is_up(d)) return false;
    if (d->kind == KIND_LEARNER) return true;
    int up = 0;
    for (int i = 0; i < s->n; i++) up += s->d[i].kind == d->kind && is_up(&s->d[i]);
    return up > 1;
}

static void count_fault(Soak *s, Daemon *d, FaultKind f)
{
    d->faults[f]++;
    s->faults[d->kind][f]++;
}

static void kill_now(Soak *s, Daemon *d, FaultKind f)
{
    proc_kill(d->p);
    d->is_down = true;
    d->restart_at = soak_t(s) + uniform(s, 1.0, s->a.down_max_s);
    count_fault(s, d, f);
    note(s, "%s %s (restart in %.1f s)", k_fault_names[f], d->name, d->restart_at - soak_t(s));
}

/* True if run_dir holds a checkpoint's temp directory (a save under way,
 * or the litter of one interrupted). */
static bool save_litter(const Soak *s)
{
    DIR *dir = opendir(s->run_dir);
    if (!dir) return false;
    bool           found = false;
    struct dirent *e;
    while (!found && (e = readdir(dir)))
        found = !strncmp(e->d_name, ".ckpt" FILEIO_TMP_TAG, strlen(".ckpt" FILEIO_TMP_TAG));
    closedir(dir);
    return found;
}

/* Arms a kill of the learner at its next checkpoint save: inotify reports
 * the save's temp directory the moment it is made. */
static void arm_mid_save(Soak *s, Daemon *l)
{
    s->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->ino < 0 || inotify_add_watch(s->ino, s->run_dir, IN_CREATE) < 0) {
        fprintf(stderr, "chaos: inotify on '%s': %s; a plain kill instead\n", s->run_dir,
                strerror(errno));
        if (s->ino >= 0) close(s->ino);
        s->ino = -1;
        kill_now(s, l, FAULT_KILL);
        return;
    }
    s->armed = l;
    /* Saves come every ckpt_every steps; a slow machine may take a while. */
    s->armed_until = soak_t(s) + 60.0;
    note(s, "kill_mid_save learner armed (waiting for its next checkpoint save)");
}

static void disarm(Soak *s)
{
    if (s->ino >= 0) close(s->ino);
    s->ino = -1;
    s->armed = NULL;
}

/* Waits up to ms for the armed save to begin; kills the learner in it. */
static void poll_armed(Soak *s, int ms)
{
    Daemon       *l = s->armed;
    struct pollfd pfd = {.fd = s->ino, .events = POLLIN};
    int           n = poll(&pfd, 1, ms);
    bool          saving = false;
    if (n > 0) {
        char    buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t len = read(s->ino, buf, sizeof buf);
        for (char *p = buf; len > 0 && p < buf + len;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->len && !strncmp(e->name, ".ckpt" FILEIO_TMP_TAG, strlen(".ckpt" FILEIO_TMP_TAG)))
                saving = true;
            p += sizeof *e + e->len;
        }
    }
    if (saving) {
        /* Somewhere in the save: the weights, the optimizer state or the swap. */
        usleep((useconds_t)(rng_below(&s->rng, 40) * 1000));
        bool litter_before = save_litter(s);
        kill_now(s, l, FAULT_KILL_MID_SAVE);
        bool litter = litter_before && save_litter(s);
        s->mid_save_confirmed += litter;
        note(s, "  the save %s",
             litter ? "was cut short (its temp directory is left)"
                    : "had finished before the kill landed");
        disarm(s);
    } else if (!is_up(l) || soak_t(s) > s->armed_until) {
        note(s, "kill_mid_save learner disarmed (%s)", is_up(l) ? "no save came" : "it is down");
        disarm(s);
    }
}

static void fault(Soak *s)
{
    Daemon *cand[MAX_DAEMONS];
    int     n = 0;
    for (int i = 0; i < s->n; i++)
        if (may_fault(s, &s->d[i]) && &s->d[i] != s->armed) cand[n++] = &s->d[i];
    if (n == 0) return;
    Daemon *d = cand[rng_below(&s->rng, (uint32_t)n)];
    if (rng_below(&s->rng, 2) == 0) {
        if (d->kind == KIND_LEARNER && !s->armed && rng_below(&s->rng, 2) == 0) {
            arm_mid_save(s, d);
            return;
        }
        kill_now(s, d, FAULT_KILL);
        return;
    }
    int rc = proc_pause(d->p, 5.0);
    if (rc) {
        note(s, "stop %s: %s", d->name, err_str(rc));
        return;
    }
    d->is_stopped = true;
    d->cont_at = soak_t(s) + uniform(s, 1.0, s->a.stop_max_s);
    count_fault(s, d, FAULT_STOP);
    note(s, "stop %s (for %.1f s)", d->name, d->cont_at - soak_t(s));
}

/* Resumes, restarts and notices: what is due at soak time t (every
 * deadline taken as due when force). */
static void tend(Soak *s, bool force)
{
    double t = soak_t(s);
    for (int i = 0; i < s->n; i++) {
        Daemon *d = &s->d[i];
        if (d->is_stopped && (force || t >= d->cont_at)) {
            proc_signal(d->p, SIGCONT);
            d->is_stopped = false;
            note(s, "cont %s", d->name);
        }
        if (!d->is_down && !d->is_stopped && !proc_is_running(d->p)) {
            char st[64];
            proc_describe(d->p, st, sizeof st);
            d->exits++;
            json_array_append_new(s->unexpected, json_pack("{s:s, s:f, s:s}", "daemon", d->name,
                                                           "t", t, "status", st));
            d->is_down = true;
            d->restart_at = t + 1.0;
            note(s, "%s exited on its own (%s); restart in 1 s", d->name, st);
        }
        if (d->is_down && (force || t >= d->restart_at)) {
            if (start(s, d) == 0) note(s, "restart %s", d->name);
        }
    }
}

/* ---- setup ------------------------------------------------------------- */

/* The warm start: a_sft_dir if it holds a checkpoint, else made by rlhf-sft
 * (a tiny model on 1-digit operands, as tests/cluster/compose_test.sh). */
static int warm_start(Soak *s)
{
    if (ckpt_exists(s->a.sft_dir)) {
        printf("chaos: warm start %s (cached)\n", s->a.sft_dir);
        return 0;
    }
    char tmp[PATH_MAX + 8], log[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->a.sft_dir);
    snprintf(log, sizeof log, "%s/sft.log", s->a.dir);
    struct stat st;
    if (stat(tmp, &st) == 0) fileio_remove_tree(tmp); /* an interrupted one's */
    ClusterCmd c = {0};
    cluster_cmd_add(&c, "%s/rlhf-sft", s->bin);
    cluster_cmd_flag(&c, "--out", "%s", tmp);
    cluster_cmd_flag(&c, "--steps", "%d", s->a.sft_steps);
    cluster_cmd_flag(&c, "--max-digits", "%d", 1);
    cluster_cmd_flag(&c, "--dim", "%d", 128);
    cluster_cmd_flag(&c, "--layers", "%d", 2);
    cluster_cmd_flag(&c, "--hidden", "%d", 256);
    cluster_cmd_flag(&c, "--eval-n", "%d", 100);
    cluster_cmd_flag(&c, "--seed", "%d", 1);
    printf("chaos: warm start: rlhf-sft --steps %d into %s (log %s)\n", s->a.sft_steps,
           s->a.sft_dir, log);
    fflush(stdout);
    ProcOpts   o = {.log_path = log};
    ProcResult r;
    int        rc = proc_run(c.argv[0], (const char *const *)c.argv, &o, 3600, &r);
    cluster_cmd_free(&c);
    if (rc == 0 && r.status == 0 && ckpt_exists(tmp) && rename(tmp, s->a.sft_dir) == 0) {
        proc_result_free(&r);
        return 0;
    }
    fprintf(stderr, "chaos: rlhf-sft failed (status %d); see %s\n", r.status, log);
    proc_result_free(&r);
    return rc ? rc : ERR_IO;
}

static void setup_daemons(Soak *s, int port)
{
    ClusterEndpoints e;
    cluster_endpoints(&e, port);
    char samples[MAX_DAEMONS][48], all[MAX_DAEMONS * 48] = "";
    for (int i = 0; i < s->a.rewards; i++) {
        /* reward-0 on the layout's samples port, the others past the learner's. */
        snprintf(samples[i], sizeof samples[i], ENDPOINT_LOOPBACK_FMT,
                 i == 0 ? port + ENDPOINT_OFF(ENDPOINT_PORT_SAMPLES)
                        : port + ENDPOINT_N_PORTS + i - 1);
        if (i) strcat(all, ",");
        strcat(all, samples[i]);
    }
    ClusterLearnerRun run = {.init = s->a.sft_dir,
                             .ckpt_dir = s->ckpt,
                             .metrics = s->metrics,
                             .summary = s->summary,
                             .steps = 100000000, /* ended by the soak's clock */
                             .seed = (int)(s->a.seed % 1000000),
                             .eval_n = s->a.eval_n};
    ClusterCmd        c = {0};
    cluster_cmd_learner(&c, s->bin, &e, &run);
    cluster_cmd_flag(&c, "--trained-log", "%s", s->trained);
    cluster_cmd_flag(&c, "--max-digits", "%d", 1);
    cluster_cmd_flag(&c, "--lr", "%g", 5e-5);
    cluster_cmd_flag(&c, "--batch-groups", "%d", s->a.batch_groups);
    cluster_cmd_flag(&c, "--lease-timeout-ms", "%d", 3000);
    cluster_cmd_flag(&c, "--max-staleness", "%d", 4);
    cluster_cmd_flag(&c, "--ckpt-every", "%d", s->a.ckpt_every);
    cluster_cmd_flag(&c, "--ckpt-keep", "%d", 3);
    cluster_cmd_flag(&c, "--status-every", "%d", 10);
    add_daemon(s, KIND_LEARNER, "learner", &c);
    cluster_cmd_free(&c);
    for (int i = 0; i < s->a.rewards; i++) {
        char name[32];
        snprintf(name, sizeof name, "reward-%d", i);
        cluster_cmd_reward(&c, s->bin, samples[i], e.results, i);
        add_daemon(s, KIND_REWARD, name, &c);
        cluster_cmd_free(&c);
    }
    for (int i = 0; i < s->a.actors; i++) {
        char name[32];
        snprintf(name, sizeof name, "actor-%d", i);
        cluster_cmd_actor(&c, s->bin, &e, all, i, (int)(s->a.seed % 1000000));
        cluster_cmd_flag(&c, "--batch", "%d", 16);
        /* Debug: every snapshot an actor installs is logged (the versions check). */
        cluster_cmd_flag(&c, "--log-level", "%s", "debug");
        add_daemon(s, KIND_ACTOR, name, &c);
        cluster_cmd_free(&c);
    }
}

/* ---- the end ----------------------------------------------------------- */

/* The final checkpoint, loaded here (weights, optimizer state, trainer
 * state: every checksum verified) and exported by rlhf-export. */
static bool check_ckpt(Soak *s, const json_t *summary, json_t **out)
{
    ModelConfig      mc;
    CkptTrainerState ts = {0};
    Model           *m = NULL;
    int              rc = ckpt_load_config(s->ckpt, &mc);
    int              rc_w = -1, rc_o = -1, rc_t = -1;
    int64_t          opt_steps = -1;
    if (rc == 0) {
        m = model_new(&mc);
        rc_w = ckpt_load(s->ckpt, m);
        size_t n = model_num_params(m);
        float *mv = xmalloc(2 * n * sizeof(float));
        rc_o = ckpt_load_optim(s->ckpt, mv, mv + n, n, &opt_steps);
        free(mv);
        rc_t = ckpt_load_trainer_state(s->ckpt, &ts);
        model_free(&m);
    }
    json_t *fin = ts.extra ? json_object_get(ts.extra, "finished") : NULL;
    char    gguf[PATH_MAX + 32], log[PATH_MAX + 32];
    snprintf(gguf, sizeof gguf, "%s/final.gguf", s->a.dir);
    snprintf(log, sizeof log, "%s/export.log", s->a.dir);
    const char *argv[] = {"rlhf-export", "--model", s->ckpt, "--out", gguf, NULL};
    char        prog[PATH_MAX + 16];
    snprintf(prog, sizeof prog, "%s/rlhf-export", s->bin);
    ProcOpts   o = {.log_path = log};
    ProcResult r;
    int        rc_x = proc_run(prog, argv, &o, 300, &r);
    int        export_status = rc_x == 0 ? r.status : -1;
    proc_result_free(&r);
    int64_t sum_steps =
        summary ? (int64_t)json_integer_value(json_object_get(summary, "steps")) : -1;
    bool ok = rc == 0 && rc_w == 0 && rc_o == 0 && rc_t == 0 && ts.step == sum_steps &&
              export_status == 0 && file_size(gguf) > 0;
    *out = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:i, s:I}", "ok", ok, "config",
                     err_str(rc), "weights", rc_w == -1 ? "not tried" : err_str(rc_w), "optimizer",
                     rc_o == -1 ? "not tried" : err_str(rc_o), "trainer_state",
                     rc_t == -1 ? "not tried" : err_str(rc_t), "step", (json_int_t)ts.step,
                     "summary_steps", (json_int_t)sum_steps, "optimizer_steps",
                     (json_int_t)opt_steps, "finished_flag", json_is_true(fin), "export_status",
                     export_status, "export_bytes", (json_int_t)file_size(gguf));
    json_decref(ts.extra);
    return ok;
}

static json_t *fault_counts(const Soak *s, int *total)
{
    json_t *by_kind = json_object(), *by_target = json_object();
    *total = 0;
    for (int f = 0; f < N_FAULTS; f++) {
        int n = 0;
        for (int k = 0; k < N_KINDS; k++) n += s->faults[k][f];
        json_object_set_new(by_kind, k_fault_names[f], json_integer(n));
        *total += n;
    }
    for (int k = 0; k < N_KINDS; k++) {
        json_t *o = json_object();
        for (int f = 0; f < N_FAULTS; f++)
            if (k == KIND_LEARNER || f != FAULT_KILL_MID_SAVE)
                json_object_set_new(o, k_fault_names[f], json_integer(s->faults[k][f]));
        json_object_set_new(by_target, k_kind_names[k], o);
    }
    json_t *per = json_object();
    for (int i = 0; i < s->n; i++) {
        const Daemon *d = &s->d[i];
        json_t       *o = json_object();
        for (int f = 0; f < N_FAULTS; f++)
            if (d->kind == KIND_LEARNER || f != FAULT_KILL_MID_SAVE)
                json_object_set_new(o, k_fault_names[f], json_integer(d->faults[f]));
        json_object_set_new(o, "starts", json_integer(d->starts));
        json_object_set_new(per, d->name, o);
    }
    return json_pack("{s:i, s:o, s:o, s:o, s:i}", "total", *total, "by_kind", by_kind, "by_target",
                     by_target, "by_daemon", per, "kill_mid_save_cut_a_save_short",
                     s->mid_save_confirmed);
}

static json_t *num_or_null(const json_t *o, const char *k)
{
    const json_t *x = o ? json_object_get(o, k) : NULL;
    return json_is_number(x) ? json_real(json_number_value(x)) : json_null();
}

/* Stops the cluster, checks everything, writes the report. Returns the
 * number of invariants violated. */
static int finish(Soak *s, double soak_s, bool interrupted)
{
    /* Everything back, then the learner's clean end. */
    disarm(s);
    tend(s, true);
    Daemon *l = &s->d[0];
    bool    learner_ok = false;
    if (l->starts > 0) {
        /* A learner restarted moments ago is still resuming: let it serve
         * first, so that its end is the normal one. */
        wait_learner_ready(s, l, 300);
        note(s, "stopping the learner (SIGTERM: final evaluation, checkpoint, summary)");
        proc_signal(l->p, SIGTERM);
        learner_ok = proc_wait(l->p, 600) == 0 && proc_exited_ok(l->p);
        if (!learner_ok) {
            char st[64];
            note(s, "the learner did not end cleanly (%s)", proc_describe(l->p, st, sizeof st));
            proc_kill(l->p);
        }
    }
    for (int i = 1; i < s->n; i++) proc_signal(s->d[i].p, SIGTERM);
    for (int i = 1; i < s->n; i++)
        if (proc_wait(s->d[i].p, 10) != 0) proc_kill(s->d[i].p);

    json_t *summary = json_load_file(s->summary, 0, NULL);
    json_t *inv = json_object();
    json_t *x;
    int     bad = 0;
    bad += !chaos_check_accounting(s->metrics, summary, &x);
    json_object_set_new(inv, "every_lease_accounted_for", x);
    bad += !chaos_check_trained(s->trained, s->a.batch_groups, summary, &x);
    json_object_set_new(inv, "no_group_trained_twice", x);
    const char *logs[MAX_DAEMONS];
    int         n_logs = 0;
    for (int i = 0; i < s->n; i++)
        if (s->d[i].kind == KIND_ACTOR) logs[n_logs++] = s->d[i].log;
    bad += !chaos_check_versions(s->metrics, logs, n_logs, &x);
    json_object_set_new(inv, "versions_never_go_backwards_within_an_epoch", x);
    bad += !check_ckpt(s, summary, &x);
    json_object_set_new(inv, "final_checkpoint_loads", x);
    const json_t *acc = summary ? json_object_get(summary, "accuracy_after") : NULL;
    bool          acc_ok = json_is_number(acc) && json_number_value(acc) >= s->a.target;
    bad += !acc_ok;
    json_object_set_new(inv, "accuracy_reaches_target",
                        json_pack("{s:b, s:o, s:f}", "ok", acc_ok, "accuracy_after",
                                  num_or_null(summary, "accuracy_after"), "target", s->a.target));
    int  exits = (int)json_array_size(s->unexpected);
    bool alive_ok = exits == 0 && learner_ok;
    bad += !alive_ok;
    json_object_set_new(inv, "no_daemon_exited_on_its_own",
                        json_pack("{s:b, s:i, s:O, s:b}", "ok", alive_ok, "exits", exits, "which",
                                  s->unexpected, "learner_ended_cleanly", learner_ok));

    /* Interrupted saves leave their temp directories; the next save must
     * remove them, or a learner that crashes now and then fills its disk. */
    int  litter = 0;
    DIR *dir = opendir(s->run_dir);
    for (struct dirent *e; dir && (e = readdir(dir));)
        litter += !strncmp(e->d_name, ".ckpt" FILEIO_TMP_TAG, strlen(".ckpt" FILEIO_TMP_TAG));
    if (dir) closedir(dir);
    char  *ltext = NULL;
    size_t llen = 0;
    int    removed = 0;
    if (fileio_read_all(l->log, (size_t)1 << 30, true, &ltext, &llen) == 0)
        for (const char *p = ltext; (p = strstr(p, "left by a save that was interrupted")); p++)
            removed++;
    free(ltext);
    bool litter_ok = litter == 0;
    bad += !litter_ok;
    json_object_set_new(inv, "interrupted_saves_cleaned_up",
                        json_pack("{s:b, s:i, s:i}", "ok", litter_ok, "temp_dirs_left", litter,
                                  "temp_dirs_removed_by_later_saves", removed));

    int     total = 0;
    json_t *faults = fault_counts(s, &total);
    json_t *restarts = json_object();
    for (int k = 0; k < N_KINDS; k++) {
        int n = 0;
        for (int i = 0; i < s->n; i++)
            if ((int)s->d[i].kind == k) n += s->d[i].starts - 1;
        json_object_set_new(restarts, k_kind_names[k], json_integer(n));
    }
    const json_t *tr = json_object_get(inv, "no_group_trained_twice");
    json_t       *report = json_pack(
              "{s:i, s:f, s:I, s:b, s:{s:i, s:i, s:f, s:f, s:f, s:f, s:i, s:i, s:i, s:s},"
                    " s:o, s:o, s:{s:O, s:o, s:o, s:o, s:o}, s:{s:o, s:o, s:o, s:f}, s:o, s:i, s:b, s:s}",
              "seconds", s->a.seconds, "wall_s", soak_s, "seed", (json_int_t)s->a.seed, "interrupted",
              interrupted, "settings", "actors", s->a.actors, "reward_servers", s->a.rewards,
              "fault_every_min_s", s->a.fault_min_s, "fault_every_max_s", s->a.fault_max_s, "down_max_s",
              s->a.down_max_s, "stop_max_s", s->a.stop_max_s, "batch_groups", s->a.batch_groups,
              "ckpt_every", s->a.ckpt_every, "eval_n", s->a.eval_n, "warm_start", s->a.sft_dir, "faults",
              faults, "restarts", restarts, "learner", "incarnations",
              json_object_get(tr, "learner_incarnations"), "steps", num_or_null(summary, "steps"),
              "samples_last_incarnation", num_or_null(summary, "samples"), "groups_trained",
              num_or_null(summary, "trained"), "samples_per_s", num_or_null(summary, "samples_per_s"),
              "accuracy", "before", num_or_null(summary, "accuracy_before"), "start_of_last_incarnation",
              num_or_null(summary, "accuracy_start"), "after", num_or_null(summary, "accuracy_after"),
              "target", s->a.target, "invariants", inv, "violations", bad, "ok", bad == 0, "files",
              s->a.dir);
    CHECK(report);
    if (json_dump_file(report, s->a.out, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0)
        fprintf(stderr, "chaos: cannot write '%s'\n", s->a.out);
    char *text =
        json_dumps(json_object_get(report, "invariants"), JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    printf("chaos: %d faults in %.0f s; invariants:\n%s\n", total, soak_s, text ? text : "");
    free(text);
    printf("chaos: %s (%d violated); report %s, files %s\n", bad ? "FAIL" : "PASS", bad, s->a.out,
           s->a.dir);
    json_decref(report);
    json_decref(summary);
    return bad;
}

/* ---- main -------------------------------------------------------------- */

static int check_args(const FlagsSpec *spec, void *ctx)
{
    const Args *a = ctx;
    if (a->fault_min_s > a->fault_max_s) {
        fprintf(stderr, "chaos: --fault-min-s %g is above --fault-max-s %g\n", a->fault_min_s,
                a->fault_max_s);
        return ERR_ARG;
    }
    return 0;
}

static int run(Soak *s)
{
    Args       *a = &s->a;
    struct stat st;
    if (stat(a->dir, &st) == 0 && fileio_remove_tree(a->dir) != 0) return PROG_EXIT_FAIL;
    snprintf(s->run_dir, sizeof s->run_dir, "%s/run", a->dir);
    if (mkdir(a->dir, 0755) != 0 || mkdir(s->run_dir, 0755) != 0) {
        fprintf(stderr, "chaos: mkdir '%s': %s\n", s->run_dir, strerror(errno));
        return PROG_EXIT_FAIL;
    }
    snprintf(s->ckpt, sizeof s->ckpt, "%s/ckpt", s->run_dir);
    snprintf(s->metrics, sizeof s->metrics, "%s/metrics.jsonl", s->run_dir);
    snprintf(s->summary, sizeof s->summary, "%s/summary.json", s->run_dir);
    snprintf(s->trained, sizeof s->trained, "%s/trained.log", s->run_dir);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/faults.log", a->dir);
    if (!(s->fault_log = fopen(path, "w")) || warm_start(s) != 0) return PROG_EXIT_FAIL;

    int port = ports_pick(ENDPOINT_N_PORTS + MAX_DAEMONS, 40000, 50000);
    if (port < 0) {
        fprintf(stderr, "chaos: no free block of ports\n");
        return PROG_EXIT_FAIL;
    }
    setup_daemons(s, port);
    s->t0 = progress_now();
    Daemon *l = &s->d[0];
    if (start(s, l) || !wait_learner_ready(s, l, 300)) {
        fprintf(stderr, "chaos: the learner did not come up; see %s\n", l->log);
        return PROG_EXIT_FAIL;
    }
    for (int i = 1; i < s->n; i++)
        if (start(s, &s->d[i])) return PROG_EXIT_FAIL;
    note(s, "cluster up on ports %d..: learner, %d reward servers, %d actors; waiting for step 1",
         port, a->rewards, a->actors);
    while (metrics_step(s) < 1) {
        if (soak_t(s) > 300 || proc_interrupted() || !proc_is_running(l->p)) {
            fprintf(stderr, "chaos: no training step within 300 s; see %s\n", l->log);
            return PROG_EXIT_FAIL;
        }
        usleep(200 * 1000);
    }
    /* The soak's clock starts with training. */
    s->t0 = progress_now();
    note(s, "training; faults every %g..%g s for %d s (seed %" PRIu64 ")", a->fault_min_s,
         a->fault_max_s, a->seconds, a->seed);
    Progress pg;
    progress_start(&pg, "chaos", "s", a->seconds);
    pg.every_s = 30;
    double next_fault = uniform(s, a->fault_min_s, a->fault_max_s);
    double quiet_from = a->seconds - a->quiet_s;
    bool   interrupted = false;
    while (soak_t(s) < a->seconds) {
        if (proc_interrupted()) {
            interrupted = true;
            break;
        }
        if (s->armed)
            poll_armed(s, 50);
        else
            usleep(50 * 1000);
        double t = soak_t(s);
        tend(s, t >= quiet_from);
        if (t >= next_fault && t < quiet_from) {
            fault(s);
            next_fault = t + uniform(s, a->fault_min_s, a->fault_max_s);
        }
        int up = 0, total = 0;
        for (int i = 0; i < s->n; i++) up += is_up(&s->d[i]);
        for (int k = 0; k < N_KINDS; k++)
            for (int f = 0; f < N_FAULTS; f++) total += s->faults[k][f];
        char extra[96];
        snprintf(extra, sizeof extra, "step %" PRId64 ", %d faults, %d/%d daemons up",
                 metrics_step(s), total, up, s->n);
        progress_update(&pg, (int64_t)t, extra, false);
    }
    progress_end(&pg);
    double soak_s = soak_t(s);
    int    bad = finish(s, soak_s, interrupted);
    return bad || interrupted ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}

int main(int argc, char **argv)
{
    Soak  s = {.ino = -1};
    Args *a = &s.a;
    *a = (Args){.seconds = 1800,
                .seed = 1,
                .out = "build/chaos.json",
                .dir = "build/chaos-run",
                .sft_dir = "build/chaos-sft",
                .sft_steps = 300,
                .actors = 3,
                .rewards = 2,
                .target = 0.6,
                .fault_min_s = 3,
                .fault_max_s = 12,
                .down_max_s = 10,
                .stop_max_s = 10,
                .quiet_s = 20,
                .batch_groups = 8,
                .ckpt_every = 20,
                .eval_n = 200};
    int  level = -1;
    Flag flags[] = {
        FLAG_INT("seconds", &a->seconds, 10, 86400, "S",
                 "length of the soak (from the first step)"),
        FLAG_U64("seed", &a->seed, "N", "faults, their times and the learner's run"),
        FLAG_PATH("out", &a->out, "FILE", "the JSON report"),
        FLAG_PATH("dir", &a->dir, "DIR", "work directory: logs, checkpoints, records (emptied)"),
        FLAG_PATH("sft", &a->sft_dir, "DIR", "warm-start checkpoint, made by rlhf-sft if missing"),
        FLAG_INT("sft-steps", &a->sft_steps, 1, 1000000, "N", "SFT steps of a new warm start"),
        FLAG_INT("actors", &a->actors, 1, 8, "N", "actor daemons"),
        FLAG_INT("rewards", &a->rewards, 1, 4, "N", "reward servers"),
        FLAG_DOUBLE("target", &a->target, 0, 1, "X",
                    "held-out accuracy the final model must reach"),
        FLAG_DOUBLE("fault-min-s", &a->fault_min_s, 0.1, 3600, "S", "shortest gap between faults"),
        FLAG_DOUBLE("fault-max-s", &a->fault_max_s, 0.1, 3600, "S", "longest gap between faults"),
        FLAG_DOUBLE("down-max-s", &a->down_max_s, 1, 3600, "S",
                    "a killed daemon restarts after 1..S seconds"),
        FLAG_DOUBLE("stop-max-s", &a->stop_max_s, 1, 3600, "S",
                    "a stopped daemon resumes after 1..S seconds"),
        FLAG_DOUBLE("quiet-s", &a->quiet_s, 0, 3600, "S",
                    "no new fault in the last S seconds (all daemons back)"),
        FLAG_INT("batch-groups", &a->batch_groups, 1, 256, "N", "the learner's --batch-groups"),
        FLAG_INT("ckpt-every", &a->ckpt_every, 1, 100000, "N", "the learner's --ckpt-every"),
        FLAG_INT("eval-n", &a->eval_n, 10, 100000, "N", "the learner's --eval-n"),
        FLAG_LOG_LEVEL(&level),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "chaos",
        .about = "The chaos soak: a local cluster under random kills and stops, then its "
                 "invariants\nchecked and reported as JSON (exit 1 if one is violated).\n",
        .flags = flags,
        .check = check_args,
        .check_ctx = a,
    };
    int rc = prog_start(&spec, argc, argv, "chaos", &level);
    if (rc != PROG_RUN) return rc;
    if (proc_catch_interrupts() != 0) return PROG_EXIT_FAIL;
    /* The programs are in the build directory, the one above build/chaos/. */
    proc_build_dir(s.bin, sizeof s.bin);
    char *slash = strrchr(s.bin, '/');
    if (slash && !strcmp(slash, "/chaos")) *slash = '\0';
    rng_seed(&s.rng, a->seed);
    s.unexpected = json_array();
    rc = run(&s);
    for (int i = 0; i < s.n; i++) proc_free(&s.d[i].p);
    if (s.fault_log) fclose(s.fault_log);
    json_decref(s.unexpected);
    return rc;
}
