/* rlhf: the launcher. `rlhf run` starts a local cluster on loopback (the SFT
 * warm start first if its checkpoint is missing, then the learner, reward
 * servers and actors as separate processes), shows one live status line,
 * restarts crashed children and shuts everything down cleanly on Ctrl-C.
 * With --model it trains a pretrained GGUF model instead (no warm start),
 * and --data / --eval-data / --task / --scorer hand a user's JSONL prompts
 * and scorer to the learner and the reward servers. */
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
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
#include "common/tasks/score.h"
#include "deploy/cluster_cmd.h"
#include "deploy/launch.h"

/* rlhf-learner's --algo names (learner/algo/algo.h; deploy does not include
 * learner/, and cli_test checks that the two lists agree). */
static const char *const k_algos[] = {"grpo",    "ppo",  "reinforce", "rloo",
                                      "dr_grpo", "dapo", "gspo",      NULL};

typedef struct {
    int         actors;
    int         rewards;
    int         algo; /* index in k_algos */
    int         steps;
    const char *init;
    int         sft_steps;
    int         sft_layers;
    float       sft_lr;
    const char *run_dir;
    int         port_base;
    int         seed;
    const char *bin_dir;
    int         max_digits;
    float       label_noise;
    float       lr;
    int         batch_groups;
    int         eval_n;
    /* A pretrained model and a user's data: */
    const char *model;     /* GGUF file: policy, reference and tokenizer; NULL = the char model */
    const char *data;      /* training prompts (JSONL); NULL = the built-in task */
    const char *eval_data; /* held-out prompts (JSONL) */
    const char *task;      /* scorer spec of records without a task */
    const char *scorer;    /* the reward servers' --scorer; NULL = each prompt's task */
    /* Learner flags passed on only when given (or set by --model's preset,
     * k_learner_pass), so rlhf-learner's own defaults and --algo's presets hold: */
    int   group;
    int   max_new_tokens;
    float temperature;
    float kl_beta;
    int   lease_prompts;
    int   lease_timeout_ms;
    int   warmup;
    int   ckpt_every;
    int   eval_every;
    int   data_max_bad;
    /* Anything else, split at spaces and appended to each child's command line: */
    const char *learner_flags;
    const char *reward_flags;
    const char *actor_flags;
    bool        is_dry_run; /* print the command lines and exit */
    /* Metrics: */
    int metrics_port_base; /* learner's HTTP port; reward servers, then actors, follow; 0 = off */
    const char *keys;      /* CURVE keys directory for every child (made if missing); NULL = none */
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

/* The learner flags rlhf run passes on only when given, with the value
 * --model sets when they are not (the settings of a 135M chat model on 2
 * cores: README "Pretrained models"); NULL = the learner's own default. */
static const struct {
    const char *name; /* the flag, the same in rlhf run and rlhf-learner */
    size_t      off;  /* its field in RunArgs */
    bool        is_float;
    const char *model; /* the value with --model */
} k_learner_pass[] = {
    {"group", offsetof(RunArgs, group), false, "4"},
    {"max-new-tokens", offsetof(RunArgs, max_new_tokens), false, "16"},
    {"temperature", offsetof(RunArgs, temperature), true, "0.7"},
    {"kl-beta", offsetof(RunArgs, kl_beta), true, "0.01"},
    {"lease-prompts", offsetof(RunArgs, lease_prompts), false, "2"},
    {"lease-timeout-ms", offsetof(RunArgs, lease_timeout_ms), false, "120000"},
    {"warmup", offsetof(RunArgs, warmup), false, "2"},
    {"ckpt-every", offsetof(RunArgs, ckpt_every), false, "0"},
    {"eval-every", offsetof(RunArgs, eval_every), false, NULL},
    {"data-max-bad", offsetof(RunArgs, data_max_bad), false, NULL},
};

/* Flags given on the command line, for cmd_run (flags_at needs the spec). */
typedef struct {
    RunArgs         *a;
    const FlagsSpec *spec;
} RunCheck;

/* Across flags: --model replaces the warm start and changes the defaults
 * its rows name ("40 with --model"). */
static int check_run(const FlagsSpec *spec, void *ctx)
{
    RunCheck *rc = ctx;
    RunArgs  *a = rc->a;
    rc->spec = spec;
    if (a->model && flags_at(spec, "init")) {
        fprintf(stderr, "rlhf run: --model and --init: give one (the model is the warm start)\n");
        return ERR_ARG;
    }
    if (a->eval_data && !a->data) {
        fprintf(stderr, "rlhf run: --eval-data goes with --data (the built-in task has its own "
                        "held-out split)\n");
        return ERR_ARG;
    }
    if (!a->model) return 0;
    /* The preset goes into the fields, so the logged config shows it. */
    for (size_t i = 0; i < sizeof k_learner_pass / sizeof k_learner_pass[0]; i++) {
        const char *v = k_learner_pass[i].model;
        char       *field = (char *)a + k_learner_pass[i].off;
        if (!v || flags_at(spec, k_learner_pass[i].name)) continue;
        if (k_learner_pass[i].is_float) {
            float f = strtof(v, NULL);
            memcpy(field, &f, sizeof f);
        } else {
            int n = atoi(v);
            memcpy(field, &n, sizeof n);
        }
    }
    if (!flags_at(spec, "actors")) a->actors = 1;
    if (!flags_at(spec, "steps")) a->steps = 40;
    if (!flags_at(spec, "lr")) a->lr = 2e-5f;
    if (!flags_at(spec, "batch-groups")) a->batch_groups = 4;
    if (!flags_at(spec, "eval-n")) a->eval_n = 96;
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

/* Appends text split at spaces and tabs (no quoting) to c: the --*-flags. */
static void add_split(ClusterCmd *c, const char *text)
{
    if (!text) return;
    char *buf = xstrdup(text), *save = NULL;
    for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
        cluster_cmd_add(c, "%s", w);
    free(buf);
}

/* The learner flags of k_learner_pass that were given or set by --model. */
static void add_learner_pass(ClusterCmd *c, const RunArgs *a, const FlagsSpec *spec)
{
    for (size_t i = 0; i < sizeof k_learner_pass / sizeof k_learner_pass[0]; i++) {
        const char *name = k_learner_pass[i].name;
        const char *field = (const char *)a + k_learner_pass[i].off;
        if (!flags_at(spec, name) && !(a->model && k_learner_pass[i].model)) continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", name);
        float f;
        int   n;
        if (k_learner_pass[i].is_float) {
            memcpy(&f, field, sizeof f);
            cluster_cmd_flag(c, flag, "%g", (double)f);
        } else {
            memcpy(&n, field, sizeof n);
            cluster_cmd_flag(c, flag, "%d", n);
        }
    }
}

/* One line per child for --dry-run: "name: argv...", arguments that a shell
 * would split or expand in single quotes. */
static void print_command(const char *name, char *const *argv)
{
    printf("%s:", name);
    for (int i = 0; argv[i]; i++) {
        const char *w = argv[i];
        bool        plain = w[0] != '\0' && strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                                                             "QRSTUVWXYZ0123456789-_./:=,+@%") == strlen(w);
        if (plain) {
            printf(" %s", w);
            continue;
        }
        printf(" '");
        for (; *w; w++) {
            if (*w == '\'')
                printf("'\\''");
            else
                putchar(*w);
        }
        putchar('\'');
    }
    putchar('\n');
}

/* `rlhf run` with its parsed flags; returns the exit status. */
static int cmd_run(const RunArgs *args, const FlagsSpec *spec)
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
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", a.run_dir);
    Strs         st = {0};
    LaunchReport rep;
    LaunchConfig quiet = {.max_restarts = 0, .grace_s = 5.0};
    int          rc = 0;

    /* Every command line first, so that --dry-run shows them all. */
    bool       need_sft = !a.model && !ckpt_exists(a.init);
    ClusterCmd sft = {0};
    if (need_sft) {
        cluster_cmd_add(&sft, "%s/rlhf-sft", bin);
        cluster_cmd_flag(&sft, "--out", "%s", a.init);
        cluster_cmd_flag(&sft, "--steps", "%d", a.sft_steps);
        cluster_cmd_flag(&sft, "--layers", "%d", a.sft_layers);
        cluster_cmd_flag(&sft, "--lr", "%g", (double)a.sft_lr);
        cluster_cmd_flag(&sft, "--seed", "%d", a.seed);
        cluster_cmd_flag(&sft, "--max-digits", "%d", a.max_digits);
        cluster_cmd_flag(&sft, "--label-noise", "%g", (double)a.label_noise);
        cluster_cmd_flag(&sft, "--eval-every", "0");
    }
    ClusterEndpoints ep;
    cluster_endpoints(&ep, a.port_base);
    LaunchChild       kids[64];
    ClusterCmd        cmds[64] = {{0}};
    int               n = 0;
    char             *metrics = sdup(&st, "%s/metrics.jsonl", a.run_dir);
    ClusterLearnerRun run = {.init = a.init,
                             .model = a.model,
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
    if (a.data) cluster_cmd_flag(&cmds[n], "--data", "%s", a.data);
    if (a.eval_data) cluster_cmd_flag(&cmds[n], "--eval-data", "%s", a.eval_data);
    if (a.task) cluster_cmd_flag(&cmds[n], "--task", "%s", a.task);
    add_learner_pass(&cmds[n], &a, spec);
    int http_port = a.metrics_port_base; /* the next child's, when serving metrics */
    if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
    add_split(&cmds[n], a.learner_flags);
    kids[n] = (LaunchChild){"learner", cmds[n].argv, sdup(&st, "%s/learner.log", logs), true};
    n++;
    char reward_list[1024] = "";
    for (int i = 0; i < a.rewards; i++) {
        char *samples =
            sdup(&st, ENDPOINT_LOOPBACK_FMT, a.port_base + ENDPOINT_OFF_REWARD_FIRST + i);
        cluster_cmd_reward(&cmds[n], bin, samples, ep.results, i);
        if (a.model) cluster_cmd_flag(&cmds[n], "--model", "%s", a.model);
        if (a.scorer) cluster_cmd_flag(&cmds[n], "--scorer", "%s", a.scorer);
        if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
        add_split(&cmds[n], a.reward_flags);
        kids[n] = (LaunchChild){sdup(&st, "reward-%d", i), cmds[n].argv,
                                sdup(&st, "%s/reward-%d.log", logs, i), false};
        n++;
        size_t len = strlen(reward_list);
        snprintf(reward_list + len, sizeof reward_list - len, "%s%s", i ? "," : "", samples);
    }
    for (int i = 0; i < a.actors; i++) {
        cluster_cmd_actor(&cmds[n], bin, &ep, reward_list, i, a.seed);
        if (http_port) cluster_cmd_flag(&cmds[n], "--metrics-addr", "127.0.0.1:%d", http_port++);
        add_split(&cmds[n], a.actor_flags);
        kids[n] = (LaunchChild){sdup(&st, "actor-%d", i), cmds[n].argv,
                                sdup(&st, "%s/actor-%d.log", logs, i), false};
        n++;
    }
    /* Every child gets the keys: each finds its own key pair by its role. */
    for (int i = 0; a.keys && i < n; i++) cluster_cmd_flag(&cmds[i], "--keys", "%s", a.keys);
    for (int i = 0; i < n; i++) kids[i].argv = cmds[i].argv; /* the vectors may have moved */

    if (a.is_dry_run) {
        if (need_sft) print_command("sft", sft.argv);
        for (int i = 0; i < n; i++) print_command(kids[i].name, kids[i].argv);
        if (fflush(stdout) != 0) rc = ERR_IO;
        goto done;
    }
    if (mkdir_p(a.run_dir) != 0 || mkdir_p(logs) != 0) {
        rc = ERR_IO;
        goto done;
    }
    if (need_sft) {
        log_info("rlhf run: no warm start at %s; running SFT for %d steps first", a.init,
                 a.sft_steps);
        LaunchChild kid = {"sft", sft.argv, NULL, true};
        if ((rc = launch_run(&quiet, &kid, 1, &rep)) != 0) {
            log_error("rlhf run: SFT warm start failed (status %d)", rep.last_status[0]);
            goto done;
        }
    } else if (a.model) {
        log_info("rlhf run: pretrained model %s", a.model);
    } else {
        log_info("rlhf run: warm start from %s (cached)", a.init);
    }

    char key_path[PATH_MAX];
    if (a.keys) snprintf(key_path, sizeof key_path, "%s/learner.key", a.keys);
    if (a.keys && access(key_path, F_OK) != 0) {
        log_info("rlhf run: no keys in %s; making them with rlhf-keygen", a.keys);
        char       *gen[] = {sdup(&st, "%s/rlhf-keygen", bin), "--dir", (char *)a.keys, NULL};
        LaunchChild kid = {"keygen", gen, NULL, true};
        if ((rc = launch_run(&quiet, &kid, 1, &rep)) != 0) {
            log_error("rlhf run: rlhf-keygen failed (status %d)", rep.last_status[0]);
            goto done;
        }
    }

    remove(metrics); /* the status line must not show an older run */
    StatusCtx    sc = {metrics, a.steps, 0};
    LaunchConfig cfg = {.max_restarts = 20,
                        .grace_s = 10.0,
                        .status_every_s = 1.0,
                        .status = show_status,
                        .status_ctx = &sc};
    log_info("rlhf run: %s with %d actor(s), %d reward server(s), %d steps on %s; logs in %s",
             k_algos[a.algo], a.actors, a.rewards, a.steps, a.data ? a.data : "the built-in task",
             logs);
    if (a.metrics_port_base)
        log_info("rlhf run: metrics on http://127.0.0.1:%d/metrics (learner), then one port each "
                 "for the %d reward server(s) and the %d actor(s), up to %d",
                 a.metrics_port_base, a.rewards, a.actors, http_port - 1);
    rc = launch_run(&cfg, kids, n, &rep);
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
done:
    cluster_cmd_free(&sft);
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
        .sft_layers = 2,
        .sft_lr = 2e-3f,
        .run_dir = "runs/latest",
        .port_base = ENDPOINT_PORT_BASE,
        .seed = 1,
        .bin_dir = NULL,
        .max_digits = 2,
        .label_noise = 0.6f,
        .lr = 1e-4f,
        .batch_groups = 16,
        .eval_n = 300,
        .model = NULL,
        .data = NULL,
        .eval_data = NULL,
        .task = NULL,
        .scorer = NULL,
        /* Passed on only when given or set by --model; the values are rlhf-learner's
         * defaults (and grpo's KL beta) as its --help shows them, which cli_test checks. */
        .group = 8,
        .max_new_tokens = 8,
        .temperature = 1.0f,
        .kl_beta = 0.04f,
        .lease_prompts = 4,
        .lease_timeout_ms = 15000,
        .warmup = 3,
        .ckpt_every = 10,
        .eval_every = 0,
        .data_max_bad = 50,
        .learner_flags = NULL,
        .reward_flags = NULL,
        .actor_flags = NULL,
        .is_dry_run = false,
        .metrics_port_base = 0,
        .keys = NULL,
    };
    RunCheck check = {&a, NULL};

    Flag flags[] = {
        FLAG_INT("actors", &a.actors, 1, 32, "N", "rollout actors", .def = "2; 1 with --model"),
        FLAG_INT("rewards", &a.rewards, 1, 16, "N", "reward servers"),
        FLAG_CHOICE("algo", &a.algo, k_algos, "A",
                    "grpo, ppo, reinforce, rloo, dr_grpo, dapo or gspo\n(rlhf-learner --algo)"),
        FLAG_INT("steps", &a.steps, 1, 100000000, "N", "learner optimizer steps",
                 .def = "400; 40 with --model"),
        FLAG_STRING("init", &a.init, "DIR", "warm-start checkpoint; made by rlhf-sft if missing"),
        FLAG_INT("sft-steps", &a.sft_steps, 1, 100000000, "N",
                 "SFT steps when the warm start is made"),
        FLAG_INT("sft-layers", &a.sft_layers, 1, 1024, "N",
                 "transformer layers of the warm start when it is made (width 128,\n"
                 "SwiGLU 512: rlhf-sft's defaults)"),
        FLAG_FLOAT("sft-lr", &a.sft_lr, 1e-12, 1.0, "X",
                   "SFT peak learning rate when the warm start is made"),
        FLAG_FLOAT("label-noise", &a.label_noise, 0.0, 1.0, "P",
                   "fraction of SFT demonstrations with a systematic off-by-one\n"
                   "answer, the imperfect labeller RL has to correct"),
        FLAG_INT("max-digits", &a.max_digits, 1, 6, "N", "operands of 1..N digits"),
        FLAG_FLOAT("lr", &a.lr, 0, 1.0, "X", "learner learning rate (0: sample and score only)",
                   .def = "0.0001; 2e-05 with --model"),
        FLAG_INT("batch-groups", &a.batch_groups, 1, 1024, "N",
                 "groups (prompts x G completions) per learner step", .def = "16; 4 with --model"),
        FLAG_INT("eval-n", &a.eval_n, 1, 100000, "N",
                 "held-out problems evaluated before and after", .def = "300; 96 with --model"),
        FLAG_STRING("run-dir", &a.run_dir, "DIR", "logs, metrics, checkpoints and summary.json"),
        FLAG_INT("port-base", &a.port_base, 1024, 65000, "P", "first of the loopback ports used"),
        FLAG_INT("seed", &a.seed, 0, 2147483647, "N", "seed for every process"),
        FLAG_STRING("bin-dir", &a.bin_dir, "DIR", "where the rlhf-* programs are",
                    .def = "beside this one"),
        FLAG_SECTION("A pretrained model and your data (README \"Bring your own data\"):"),
        FLAG_PATH("model", &a.model, "PATH.gguf",
                  "train this GGUF model (policy, KL reference, tokenizer;\n"
                  "the reward servers decode with it) instead of the char\n"
                  "model of --init; no warm start",
                  .def = "none: the char model"),
        FLAG_PATH("data", &a.data, "FILE.jsonl",
                  "train on these prompts (rlhf-learner --data): \"prompt\" or\n"
                  "\"messages\", optional \"answer\", \"task\", \"meta\"",
                  .def = "none: the built-in task"),
        FLAG_PATH("eval-data", &a.eval_data, "FILE.jsonl",
                  "held-out prompts, the first --eval-n evaluated greedily\n"
                  "before and after (rlhf-learner --eval-data)",
                  .def = "none: no held-out evaluation with --data"),
        FLAG_STRING("task", &a.task, "SPEC",
                    "scorer of records without a \"task\" (rlhf-learner --task):\n"
                    "NAME[:W],... of " SCORE_RULE_NAMES ", rm",
                    .def = "none: such records are refused"),
        FLAG_STRING("scorer", &a.scorer, "SPEC",
                    "the reward servers score every group with SPEC, whatever\n"
                    "its prompt's task (rlhf-reward --scorer)",
                    .def = "each prompt's task"),
        FLAG_INT("data-max-bad", &a.data_max_bad, 0, 100, "PCT",
                 "refuse a --data file with more than PCT% bad records",
                 .def = "rlhf-learner's, 50"),
        FLAG_SECTION("Sampling and update (passed to rlhf-learner only when given or set by "
                     "--model):"),
        FLAG_INT("group", &a.group, 1, 256, "N", "completions per prompt, G",
                 .def = "rlhf-learner's, 8; 4 with --model"),
        FLAG_INT("max-new-tokens", &a.max_new_tokens, 1, 1024, "N", "completion length cap",
                 .def = "rlhf-learner's, 8; 16 with --model"),
        FLAG_FLOAT("temperature", &a.temperature, 1e-3, 100, "X", "sampling temperature",
                   .def = "rlhf-learner's, 1; 0.7 with --model"),
        FLAG_FLOAT("kl-beta", &a.kl_beta, 0, 1e3, "X", "KL penalty coefficient",
                   .def = "--algo's preset; 0.01 with --model"),
        FLAG_INT("lease-prompts", &a.lease_prompts, 1, 64, "N", "prompts per lease",
                 .def = "rlhf-learner's, 4; 2 with --model"),
        FLAG_INT("lease-timeout-ms", &a.lease_timeout_ms, 1, 86400000, "N",
                 "a lease not answered by then is re-issued",
                 .def = "rlhf-learner's, 15000; 120000 with --model"),
        FLAG_INT("warmup", &a.warmup, 0, 100000000, "N", "learning-rate warmup steps",
                 .def = "rlhf-learner's, 3; 2 with --model"),
        FLAG_INT("ckpt-every", &a.ckpt_every, 0, 100000000, "N",
                 "checkpoint every N steps, 0 = only at the end",
                 .def = "rlhf-learner's, 10; 0 with --model"),
        FLAG_INT("eval-every", &a.eval_every, 0, 100000000, "N",
                 "also evaluate the held-out set every N steps, 0 = off",
                 .def = "rlhf-learner's, 0"),
        FLAG_SECTION("Any other flag of the programs (split at spaces, no quoting):"),
        FLAG_STRING("learner-flags", &a.learner_flags, "'FLAGS'",
                    "appended to rlhf-learner's command line", .def = "none"),
        FLAG_STRING("reward-flags", &a.reward_flags, "'FLAGS'",
                    "appended to every rlhf-reward's (e.g. '--code-all-or-nothing')",
                    .def = "none"),
        FLAG_STRING("actor-flags", &a.actor_flags, "'FLAGS'", "appended to every rlhf-actor's",
                    .def = "none"),
        FLAG_BOOL("dry-run", &a.is_dry_run,
                  "print every program's command line (and the warm start's)\nand exit"),
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
        .about = "Runs a local cluster: SFT warm start (skipped when --init holds a checkpoint, "
                 "or\nwith --model), then the learner, reward servers and actors as separate "
                 "processes\non loopback. With --data, on your prompts and scorer:\n"
                 "  rlhf run --model M.gguf --data train.jsonl --eval-data eval.jsonl --task "
                 "number\n",
        .flags = flags,
        .check = check_run,
        .check_ctx = &check,
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: rlhf COMMAND [flags]\n"
                   "commands:\n"
                   "  run     run a local cluster on the built-in task or your data\n\n");
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
    return cmd_run(&a, check.spec);
}
