/* rlhf: the launcher. `rlhf run` starts a local cluster on loopback (the SFT
 * warm start first if its checkpoint is missing, then the learner, reward
 * servers and actors as separate processes), shows one live status line,
 * restarts crashed children and shuts everything down cleanly on Ctrl-C. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/base/err.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/progress.h"
#include "deploy/launch.h"

typedef struct {
    int         actors;
    int         rewards;
    const char *algo;
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
} RunArgs;

static const RunArgs k_defaults = {
    .actors = 2,
    .rewards = 1,
    .algo = "grpo",
    .steps = 400,
    .init = "runs/sft",
    .sft_steps = 4000,
    .run_dir = "runs/latest",
    .port_base = 5555,
    .seed = 1,
    .bin_dir = NULL,
    .max_digits = 2,
    .label_noise = 0.6f,
    .lr = 1e-4f,
    .batch_groups = 16,
    .eval_n = 300,
};

static void usage(FILE *f)
{
    const RunArgs *d = &k_defaults;
    fprintf(f,
            "usage: rlhf run [flags]\n"
            "Runs a local cluster: SFT warm start (skipped when --init holds a checkpoint), then\n"
            "the learner, reward servers and actors as separate processes on loopback.\n"
            "  --actors N       rollout actors (default %d)\n"
            "  --rewards N      reward servers (default %d)\n"
            "  --algo A         grpo or ppo (default %s)\n"
            "  --steps N        learner optimizer steps (default %d)\n"
            "  --init DIR       warm-start checkpoint; made by rlhf-sft if missing (default %s)\n"
            "  --sft-steps N    SFT steps when the warm start is made (default %d)\n"
            "  --label-noise P  fraction of SFT demonstrations with a systematic off-by-one\n"
            "                   answer, the imperfect labeller RL has to correct (default %g)\n"
            "  --max-digits N   operands of 1..N digits (default %d)\n"
            "  --lr X           learner learning rate (default %g)\n"
            "  --batch-groups N groups (prompts x G completions) per learner step (default %d)\n"
            "  --eval-n N       held-out problems evaluated before and after (default %d)\n"
            "  --run-dir DIR    logs, metrics, checkpoints and summary.json (default %s)\n"
            "  --port-base P    first of the loopback ports used (default %d)\n"
            "  --seed N         seed for every process (default %d)\n"
            "  --bin-dir DIR    where the rlhf-* programs are (default: beside this one)\n"
            "  --help           this text\n",
            d->actors, d->rewards, d->algo, d->steps, d->init, d->sft_steps, (double)d->label_noise,
            d->max_digits, (double)d->lr, d->batch_groups, d->eval_n, d->run_dir, d->port_base,
            d->seed);
}

static int parse_run(int argc, char **argv, RunArgs *a)
{
    static const struct option opts[] = {{"actors", required_argument, 0, 'a'},
                                         {"rewards", required_argument, 0, 'r'},
                                         {"algo", required_argument, 0, 'A'},
                                         {"steps", required_argument, 0, 's'},
                                         {"init", required_argument, 0, 'i'},
                                         {"sft-steps", required_argument, 0, 'S'},
                                         {"run-dir", required_argument, 0, 'd'},
                                         {"port-base", required_argument, 0, 'p'},
                                         {"seed", required_argument, 0, 'e'},
                                         {"bin-dir", required_argument, 0, 'b'},
                                         {"label-noise", required_argument, 0, 'N'},
                                         {"max-digits", required_argument, 0, 'D'},
                                         {"lr", required_argument, 0, 'l'},
                                         {"batch-groups", required_argument, 0, 'g'},
                                         {"eval-n", required_argument, 0, 'n'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = k_defaults;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'a':
            rc = flags_int("actors", optarg, 1, 32, &a->actors);
            break;
        case 'r':
            rc = flags_int("rewards", optarg, 1, 16, &a->rewards);
            break;
        case 'A':
            a->algo = optarg;
            if (strcmp(optarg, "grpo") && strcmp(optarg, "ppo")) {
                fprintf(stderr, "rlhf run: --algo '%s': expected grpo or ppo\n", optarg);
                rc = ERR_ARG;
            }
            break;
        case 's':
            rc = flags_int("steps", optarg, 1, 100000000, &a->steps);
            break;
        case 'i':
            a->init = optarg;
            break;
        case 'S':
            rc = flags_int("sft-steps", optarg, 1, 100000000, &a->sft_steps);
            break;
        case 'd':
            a->run_dir = optarg;
            break;
        case 'p':
            rc = flags_int("port-base", optarg, 1024, 65000, &a->port_base);
            break;
        case 'e':
            rc = flags_int("seed", optarg, 0, 2147483647, &a->seed);
            break;
        case 'b':
            a->bin_dir = optarg;
            break;
        case 'N':
            rc = flags_float("label-noise", optarg, 0.0, 1.0, &a->label_noise);
            break;
        case 'D':
            rc = flags_int("max-digits", optarg, 1, 6, &a->max_digits);
            break;
        case 'l':
            rc = flags_float("lr", optarg, 1e-12, 1.0, &a->lr);
            break;
        case 'g':
            rc = flags_int("batch-groups", optarg, 1, 1024, &a->batch_groups);
            break;
        case 'n':
            rc = flags_int("eval-n", optarg, 1, 100000, &a->eval_n);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return ERR_ARG;
        }
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "rlhf run: unexpected argument '%s'\n", argv[optind]);
        return ERR_ARG;
    }
    return 0;
}

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

static int cmd_run(int argc, char **argv)
{
    RunArgs a;
    flags_set_prog("rlhf run");
    if (parse_run(argc, argv, &a)) return 2;
    log_init("rlhf", -1);
    char self[PATH_MAX], bin[PATH_MAX];
    if (a.bin_dir)
        snprintf(bin, sizeof bin, "%s", a.bin_dir);
    else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            log_error("rlhf run: cannot find my own path; pass --bin-dir");
            return 1;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        *slash = '\0';
        snprintf(bin, sizeof bin, "%s", self);
    }
    if (mkdir_p(a.run_dir) != 0) return 1;
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", a.run_dir);
    if (mkdir_p(logs) != 0) return 1;
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
            return 1;
        }
    } else {
        log_info("rlhf run: warm start from %s (cached)", a.init);
    }

    int  P = a.port_base;
    char lease[64], weights[64], results[64], snapshot[64];
    snprintf(lease, sizeof lease, "tcp://127.0.0.1:%d", P);
    snprintf(weights, sizeof weights, "tcp://127.0.0.1:%d", P + 1);
    snprintf(results, sizeof results, "tcp://127.0.0.1:%d", P + 3);
    snprintf(snapshot, sizeof snapshot, "tcp://127.0.0.1:%d", P + 4);
    LaunchChild kids[64];
    int         n = 0;
    char       *metrics = sdup(&st, "%s/metrics.jsonl", a.run_dir);
    char       *learner[] = {sdup(&st, "%s/rlhf-learner", bin),
                             "--lease",
                             lease,
                             "--weights",
                             weights,
                             "--results",
                             results,
                             "--snapshot",
                             snapshot,
                             "--algo",
                             (char *)a.algo,
                             "--steps",
                             sdup(&st, "%d", a.steps),
                             "--init",
                             (char *)a.init,
                             "--ckpt-dir",
                             sdup(&st, "%s/ckpt", a.run_dir),
                             "--metrics",
                             metrics,
                             "--summary",
                             sdup(&st, "%s/summary.json", a.run_dir),
                             "--seed",
                             sdup(&st, "%d", a.seed),
                             "--max-digits",
                             sdup(&st, "%d", a.max_digits),
                             "--lr",
                             sdup(&st, "%g", (double)a.lr),
                             "--batch-groups",
                             sdup(&st, "%d", a.batch_groups),
                             "--eval-n",
                             sdup(&st, "%d", a.eval_n),
                             NULL};
    kids[n++] = (LaunchChild){"learner", learner, sdup(&st, "%s/learner.log", logs), true};
    char **rw = xcalloc((size_t)a.rewards * 12, sizeof(char *));
    char   reward_list[1024] = "";
    for (int i = 0; i < a.rewards; i++) {
        char  *samples = sdup(&st, "tcp://127.0.0.1:%d", P + 10 + i);
        char **v = rw + i * 12;
        v[0] = sdup(&st, "%s/rlhf-reward", bin);
        v[1] = "--samples";
        v[2] = samples;
        v[3] = "--results";
        v[4] = results;
        v[5] = "--id";
        v[6] = sdup(&st, "reward-%d", i);
        kids[n++] = (LaunchChild){v[6], v, sdup(&st, "%s/reward-%d.log", logs, i), false};
        size_t len = strlen(reward_list);
        snprintf(reward_list + len, sizeof reward_list - len, "%s%s", i ? "," : "", samples);
    }
    char **ac = xcalloc((size_t)a.actors * 16, sizeof(char *));
    for (int i = 0; i < a.actors; i++) {
        char **v = ac + i * 16;
        v[0] = sdup(&st, "%s/rlhf-actor", bin);
        v[1] = "--lease";
        v[2] = lease;
        v[3] = "--weights";
        v[4] = weights;
        v[5] = "--snapshot";
        v[6] = snapshot;
        v[7] = "--reward";
        v[8] = reward_list;
        v[9] = "--id";
        v[10] = sdup(&st, "actor-%d", i);
        v[11] = "--seed";
        v[12] = sdup(&st, "%d", a.seed * 100 + i);
        kids[n++] = (LaunchChild){v[10], v, sdup(&st, "%s/actor-%d.log", logs, i), false};
    }
    remove(metrics); /* the status line must not show an older run */
    StatusCtx    sc = {metrics, a.steps, 0};
    LaunchConfig cfg = {.max_restarts = 20,
                        .grace_s = 10.0,
                        .status_every_s = 1.0,
                        .status = show_status,
                        .status_ctx = &sc};
    log_info("rlhf run: %s with %d actor(s), %d reward server(s), %d steps; logs in %s", a.algo,
             a.actors, a.rewards, a.steps, logs);
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
    free(rw);
    free(ac);
    for (int i = 0; i < st.n; i++) free(st.s[i]);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: rlhf COMMAND [flags]\n"
                   "commands:\n"
                   "  run     run a local cluster on the built-in task\n\n");
        usage(f);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc - 1, argv + 1);
    fprintf(stderr, "rlhf: unknown command '%s' (try rlhf --help)\n", argv[1]);
    return 2;
}
