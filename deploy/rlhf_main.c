/* rlhf: the launcher. `rlhf run` starts a local cluster on loopback (the SFT
 * warm start first if its checkpoint is missing, then the learner, reward
 * servers and actors as separate processes), shows one live status line,
 * restarts crashed children and shuts everything down cleanly on Ctrl-C. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/base/progress.h"
#include "common/net/endpoints.h"
#include "deploy/cluster_cmd.h"
#include "deploy/launch.h"

static const char *const k_algos[] = {"grpo", "ppo", NULL};

typedef struct {
    int         actors;
    int         rewards;
    int         algo; /* index in k_algos */
    int         steps;
    const char *init;
    int         sft_steps;
    const char *run_dir;
    int         port_base;
    int         seed;
    const char *bin_dir;
    int         max_digits;
    float       label_noise;
    float       lr;
    int         batch_groups;
    int         eval_n;
    /* Metrics: */
    int metrics_port_base; /* learner's HTTP port; reward servers, then actors, follow; 0 = off */
    const char *keys; /* CURVE keys directory for every child (made if missing); NULL = none */
} RunArgs;

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return ERR_IO;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        log_error("rlhf run: mkdir '%s': %s", path, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

/* Argument vectors are built in a small arena of strings that lives for the run. */
typedef struct {
    char *s[1024];
    int   n;
} Strs;

static char *sdup(Strs *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sdup(Strs *st, const char *fmt, ...)
{
    char    buf[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    CHECK(st->n < 1024);
    return st->s[st->n++] = xstrdup(buf);
}

typedef struct {
    const char *metrics;
    int         steps;
    long        last_size;
} StatusCtx;

/* One live line from the last record of the learner's metrics file. */
static void show_status(void *p, double elapsed)
{
    StatusCtx *sc = p;
    FILE      *f = fopen(sc->metrics, "r");
    char       line[8192], last[8192] = "";
    if (f) {
        while (fgets(line, sizeof line, f))
            if (line[0] == '{') snprintf(last, sizeof last, "%s", line);
        fclose(f);
    }
    char el[32], eta[32] = "?";
    progress_fmt_duration(elapsed, el, sizeof el);
    json_t *o = last[0] ? json_loads(last, 0, NULL) : NULL;
    if (!o) {
        fprintf(stderr, "\r\033[Kcluster starting... %s", el);
        fflush(stderr);
        return;
    }
    double step = json_number_value(json_object_get(o, "step"));
    double ver = json_number_value(json_object_get(o, "version"));
    double rew = json_number_value(json_object_get(o, "reward_mean"));
    double acc = json_number_value(json_object_get(o, "accuracy"));
    double sps = json_number_value(json_object_get(o, "samples_per_s"));
    double stale = json_number_value(json_object_get(o, "staleness_mean"));
    if (step > 0) progress_fmt_duration(elapsed / step * (sc->steps - step), eta, sizeof eta);
    fprintf(stderr,
            "\r\033[Kstep %.0f/%d  version %.0f  reward %.3f  accuracy %.3f  samples/s %.1f  "
            "staleness %.2f  elapsed %s  ETA %s",
            step, sc->steps, ver, rew, acc, sps, stale, el, eta);
    fflush(stderr);
    json_decref(o);
}

/* `rlhf run` with its parsed flags; returns the exit status. */
static int cmd_run(const RunArgs *args)
{
    const RunArgs a = *args;
    char          self[PATH_MAX], bin[PATH_MAX];
    if (a.bin_dir)
        snprintf(bin, sizeof bin, "%s", a.bin_dir);
    else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            log_error("rlhf run: cannot find my own path; pass --bin-dir");
            return PROG_EXIT_FAIL;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        *slash = '\0';
        snprintf(bin, sizeof bin, "%s", self);
    }
    if (mkdir_p(a.run_dir) != 0) return PROG_EXIT_FAIL;
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", a.run_dir);
    if (mkdir_p(logs) != 0) return PROG_EXIT_FAIL;
    Strs         st = {0};
    LaunchReport rep;
    LaunchConfig quiet = {.max_restarts = 0, .grace_s = 5.0};

    if (!ckpt_exists(a.init)) {
        log_info("rlhf run: no warm start at %s; running SFT for %d steps first", a.init,
                 a.sft_steps);
        char       *sft[] = {sdup(&st, "%s/rlhf-sft", bin),
                             "--out",
                             (char *)a.init,
                             "--steps",
                             sdup(&st, "%d", a.sft_steps),
                             "--seed",
                             sdup(&st, "%d", a.seed),
                             "--max-digits",
                             sdup(&st, "%d", a.max_digits),
                             "--label-noise",
                             sdup(&st, "%g", (double)a.label_noise),
                             "--eval-every",
                             "0",
                             NULL};
        LaunchChild kid = {"sft", sft, NULL, true};
        if (launch_run(&quiet, &kid, 1, &rep) != 0) {
            log_error("rlhf run: SFT warm start failed (status %d)", rep.last_status[0]);
            return PROG_EXIT_FAIL;
        }
    } else {
        log_info("rlhf run: warm start from %s (cached)", a.init);
    }

    char key_path[PATH_MAX];
    if (a.keys) snprintf(key_path, sizeof key_path, "%s/learner.key", a.keys);
    if (a.keys && access(key_path, F_OK) != 0) {
        log_info("rlhf run: no keys in %s; making them with rlhf-keygen", a.keys);
        char       *gen[] = {sdup(&st, "%s/rlhf-keygen", bin), "--dir", (char *)a.keys, NULL};
        LaunchChild kid = {"keygen", gen, NULL, true};
        if (launch_run(&quiet, &kid, 1, &rep) != 0) {
            log_error("rlhf run: rlhf-keygen failed (status %d)", rep.last_status[0]);
            return PROG_EXIT_FAIL;
        }
    }

    ClusterEndpoints ep;
    cluster_endpoints(&ep, a.port_base);
    LaunchChild       kids[64];
    ClusterCmd        cmds[64] = {{0}};
    int               n = 0;
    char             *metrics = sdup(&st, "%s/metrics.jsonl", a.run_dir);
    ClusterLearnerRun run = {.init = a.init,
                             .ckpt_dir = sdup(&st, "%s/ckpt", a.run_dir),
                             .metrics = metrics,
                             .summary = sdup(&st, "%s/summary.json", a.run_dir),
                             .steps = a.steps,
                             .seed = a.seed,
                             .eval_n = a.eval_n};
    cluster_cmd_learner(&cmds[n], bin, &ep, &run);
    cluster_cmd_flag(&cmds[n], "--algo", "%s", k_algos[a.algo]);
    cluster_cmd_flag(&cmds[n], "--max-digits", "%d", a.max_digits);
    cluster_cmd_flag(&cmds[n], "--lr", "%g", (double)a.lr);
    cluster_cmd_flag(&cmds[n], "--batch-groups", "%d", a.batch_groups);
    int http_port = a.metrics_port_base; /* the next child's, when serving metrics */
    if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
    kids[n] = (LaunchChild){"learner", cmds[n].argv, sdup(&st, "%s/learner.log", logs), true};
    n++;
    char reward_list[1024] = "";
    for (int i = 0; i < a.rewards; i++) {
        char *samples =
            sdup(&st, ENDPOINT_LOOPBACK_FMT, a.port_base + ENDPOINT_OFF_REWARD_FIRST + i);
        cluster_cmd_reward(&cmds[n], bin, samples, ep.results, i);
        if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
        kids[n] = (LaunchChild){sdup(&st, "reward-%d", i), cmds[n].argv,
                                sdup(&st, "%s/reward-%d.log", logs, i), false};
        n++;
        size_t len = strlen(reward_list);
        snprintf(reward_list + len, sizeof reward_list - len, "%s%s", i ? "," : "", samples);
    }
    for (int i = 0; i < a.actors; i++) {
        cluster_cmd_actor(&cmds[n], bin, &ep, reward_list, i, a.seed);
        if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
        kids[n] = (LaunchChild){sdup(&st, "actor-%d", i), cmds[n].argv,
                                sdup(&st, "%s/actor-%d.log", logs, i), false};
        n++;
    }
    /* Every child gets the keys: each finds its own key pair by its role. */
    for (int i = 0; a.keys && i < n; i++) cluster_cmd_flag(&cmds[i], "--keys", "%s", a.keys);
    for (int i = 0; i < n; i++) kids[i].argv = cmds[i].argv; /* the vectors may have moved */
    remove(metrics); /* the status line must not show an older run */
    StatusCtx    sc = {metrics, a.steps, 0};
    LaunchConfig cfg = {.max_restarts = 20,
                        .grace_s = 10.0,
                        .status_every_s = 1.0,
                        .status = show_status,
                        .status_ctx = &sc};
    log_info("rlhf run: %s with %d actor(s), %d reward server(s), %d steps; logs in %s",
             k_algos[a.algo], a.actors, a.rewards, a.steps, logs);
    if (a.metrics_port_base)
        log_info("rlhf run: metrics on http://127.0.0.1:%d/metrics (learner), then one port each "
                 "for the %d reward server(s) and the %d actor(s), up to %d",
                 a.metrics_port_base, a.rewards, a.actors, http_port - 1);
    int rc = launch_run(&cfg, kids, n, &rep);
    fprintf(stderr, "\n");
    char sum_path[PATH_MAX];
    snprintf(sum_path, sizeof sum_path, "%s/summary.json", a.run_dir);
    json_t *sum = rc == 0 ? json_load_file(sum_path, 0, NULL) : NULL;
    if (sum) {
        char *text = json_dumps(sum, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
        json_decref(sum);
        log_info("rlhf run: summary in %s", sum_path);
    } else if (rc == 0) {
        log_error("rlhf run: the learner finished but wrote no summary at %s", sum_path);
        rc = ERR_NOTFOUND;
    } else {
        log_error("rlhf run: the run did not finish (%s); logs in %s", err_str(rc), logs);
    }
    for (int i = 0; i < n; i++) cluster_cmd_free(&cmds[i]);
    for (int i = 0; i < st.n; i++) free(st.s[i]);
    return rc == 0 ? PROG_EXIT_OK : PROG_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    RunArgs a = {
        .actors = 2,
        .rewards = 1,
        .algo = 0,
        .steps = 400,
        .init = "runs/sft",
        .sft_steps = 4000,
        .run_dir = "runs/latest",
        .port_base = ENDPOINT_PORT_BASE,
        .seed = 1,
        .bin_dir = NULL,
        .max_digits = 2,
        .label_noise = 0.6f,
        .lr = 1e-4f,
        .batch_groups = 16,
        .eval_n = 300,
        .metrics_port_base = 0,
        .keys = NULL,
    };

    Flag flags[] = {
        FLAG_INT("actors", &a.actors, 1, 32, "N", "rollout actors"),
        FLAG_INT("rewards", &a.rewards, 1, 16, "N", "reward servers"),
        FLAG_CHOICE("algo", &a.algo, k_algos, "A", "grpo or ppo"),
        FLAG_INT("steps", &a.steps, 1, 100000000, "N", "learner optimizer steps"),
        FLAG_STRING("init", &a.init, "DIR", "warm-start checkpoint; made by rlhf-sft if missing"),
        FLAG_INT("sft-steps", &a.sft_steps, 1, 100000000, "N",
                 "SFT steps when the warm start is made"),
        FLAG_FLOAT("label-noise", &a.label_noise, 0.0, 1.0, "P",
                   "fraction of SFT demonstrations with a systematic off-by-one\n"
                   "answer, the imperfect labeller RL has to correct"),
        FLAG_INT("max-digits", &a.max_digits, 1, 6, "N", "operands of 1..N digits"),
        FLAG_FLOAT("lr", &a.lr, 1e-12, 1.0, "X", "learner learning rate"),
        FLAG_INT("batch-groups", &a.batch_groups, 1, 1024, "N",
                 "groups (prompts x G completions) per learner step"),
        FLAG_INT("eval-n", &a.eval_n, 1, 100000, "N",
                 "held-out problems evaluated before and after"),
        FLAG_STRING("run-dir", &a.run_dir, "DIR", "logs, metrics, checkpoints and summary.json"),
        FLAG_INT("port-base", &a.port_base, 1024, 65000, "P", "first of the loopback ports used"),
        FLAG_INT("seed", &a.seed, 0, 2147483647, "N", "seed for every process"),
        FLAG_STRING("bin-dir", &a.bin_dir, "DIR", "where the rlhf-* programs are",
                    .def = "beside this one"),
        FLAG_SECTION("Metrics:"),
        FLAG_INT("metrics-port-base", &a.metrics_port_base, 0, 65000, "P",
                 "serve /metrics on 127.0.0.1: the learner on P, reward\n"
                 "servers on P+1.., actors after them; 0 = off"),
        FLAG_SECTION("Security:"),
        FLAG_PATH("keys", &a.keys, "DIR",
                  "CURVE keys for every daemon (README \"Keys\"); made by\nrlhf-keygen when "
                  "DIR/learner.key is missing",
                  .def = "none: plaintext on loopback"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf run",
        .about = "Runs a local cluster: SFT warm start (skipped when --init holds a checkpoint), "
                 "then\nthe learner, reward servers and actors as separate processes on "
                 "loopback.\n",
        .flags = flags,
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: rlhf COMMAND [flags]\n"
                   "commands:\n"
                   "  run     run a local cluster on the built-in task\n\n");
        flags_usage(&spec, f);
        return argc < 2 ? PROG_EXIT_USAGE : PROG_EXIT_OK;
    }
    if (strcmp(argv[1], "run")) {
        fprintf(stderr, "rlhf: unknown command '%s' (try rlhf --help)\n", argv[1]);
        return PROG_EXIT_USAGE;
    }
    /* The launcher's own libuv handles catch SIGINT and SIGTERM (launch.h). */
    int rc = prog_start(&spec, argc - 1, argv + 1, "rlhf", NULL);
    if (rc != PROG_RUN) return rc;
    return cmd_run(&a);
}
