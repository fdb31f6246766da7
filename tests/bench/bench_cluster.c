/* bench_cluster: what distribution costs, measured against this machine.
 *
 * Prints, in one run:
 *   1. samples/s of the real cluster (rlhf-learner, rlhf-reward and two
 *      rlhf-actor processes on loopback, warm-started from a small SFT
 *      checkpoint made here) next to the same loop in one process without
 *      messaging (generate, score, update, copy the weights to the sampling
 *      model), and the overhead of distribution 1 - cluster / in-process;
 *      --rounds alternate the two sides and the best of each counts; and
 *      the CPU time per sample of both, which the machine's load moves
 *      much less than samples/s;
 *   2. the share of time in generation, scoring, learning and weight
 *      publishing in the in-process loop, and the learning share the
 *      learner's metrics give for the cluster;
 *   3. the time to publish one SmolLM2-135M-shape fp32 snapshot to two
 *      receivers over tcp loopback through the wire snapshot path, next to
 *      this machine's memcpy of the same bytes and a raw ZeroMQ transfer of
 *      the same bytes in the same chunks (the best of --reps alternating
 *      repetitions each), and the same snapshot in bf16 and as a LoRA
 *      run's adapters alone (rank 8 on every projection, bf16), what an
 *      actor that holds the base receives per version.
 * Writes the figures under "cluster" in the JSON file given as the first
 * argument (default build/bench.json), keeping other keys. --help lists the
 * flags. The programs are taken from the directory above this one (the
 * build directory the benchmark was built into). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/formats/ckpt.h"
#include "common/formats/ckpt_config.h"
#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/prog.h"
#include "common/nn/gen.h"
#include "common/base/log.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/base/progress.h"
#include "common/base/rng.h"
#include "common/tasks/task.h"
#include "common/formats/tok.h"
#include "common/net/endpoints.h"
#include "common/net/wire.h"
#include "common/net/zsock.h"
#include "common/net/snapshot.h"
#include "common/nn/lora.h"
#include "common/nn/half.h"
#include "learner/algo/algo.h"
#include "learner/learner.h"
#include "learner/learner_config.h"
#include "reward_server/reward.h"
#include "reward_server/scorer.h"
#include "tests/bench/bench_common.h"
#include "deploy/cluster_cmd.h"
#include "tests/support/ports.h"
#include "tests/support/proc.h"

#define MAX_REPS 16
#define MAX_ROUNDS 8
#define N_ACTORS 2
#define N_RECEIVERS 2
#define OVERHEAD_TARGET 0.10 /* the target for 1 - cluster / in-process */
#define LORA_RANK 8          /* the adapters of the LoRA-only snapshot figure */
#define RATIO_GOAL 2.0       /* the goal for snapshot time / raw ZeroMQ time */
#define RECV_TIMEOUT_MS 20000

typedef struct {
    const char *out;
    int         steps;          /* learner steps, and steps of the in-process loop */
    int         rounds;         /* in-process + cluster rounds; the best of each side counts */
    int         sft_steps;      /* steps of the warm start made first */
    int         reps;           /* repetitions of each transfer; the best counts */
    int         chunk_bytes;    /* snapshot and raw chunk size */
    int         port_base;      /* 0 = random */
    int         seed;           /* every process and the in-process loop */
    double      timeout_s;      /* the cluster run is killed after this */
    const char *bin_dir;        /* NULL = the parent of this program's directory */
    bool        skip_cluster;   /* no cluster run */
    bool        skip_inprocess; /* no in-process loop */
    bool        skip_snapshot;  /* no snapshot / raw / memcpy measurement */
    bool        keep;           /* keep the temp dir (logs, metrics) */
} Args;

#define DEFAULT_OUT "build/bench.json"
#define STR_(x) #x
#define STR(x) STR_(x)

static const Args k_defaults = {.out = DEFAULT_OUT,
                                .steps = 30,
                                .rounds = 3,
                                .sft_steps = 30,
                                .reps = 3,
                                .chunk_bytes = (int)WIRE_CHUNK_BYTES,
                                .port_base = 0,
                                .seed = 1,
                                .timeout_s = 600.0,
                                .bin_dir = NULL};

/* The stop flag of common/base/prog (SIGINT, SIGTERM), set in main. */
static atomic_int *g_stop;

/* CPU seconds (user + system) of this process (RUSAGE_SELF, every thread)
 * or of its reaped children (RUSAGE_CHILDREN). */
static double cpu_s(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0) return NAN;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Processes -------------------------------------------------------- */

/* The program of cmd, named for its file, with its output appended to
 * log_path (tests/support/proc.h: its own process group, killed if the
 * benchmark dies). */
static Proc *new_child(const ClusterCmd *cmd, const char *log_path)
{
    ProcOpts o = {.log_path = log_path};
    return proc_new(cmd->argv[0], (const char *const *)cmd->argv, &o);
}

/* The exit status of a program that has exited, or 128 + the signal that
 * ended it. */
static int exit_status(const Proc *p)
{
    return proc_term_signal(p) ? 128 + proc_term_signal(p) : proc_exit_code(p);
}

/* SIGTERM, a grace period, then SIGKILL; frees *p. No-op on NULL. */
static void stop_child(Proc **p)
{
    if (!*p) return;
    proc_signal(*p, SIGTERM);
    if (proc_wait(*p, 5.0) != 0) proc_kill(*p);
    proc_free(p);
}

/* A random base of n free consecutive loopback ports, above 28000 (clear
 * of 5555-5600 and 27000-28000, which other runs on this machine use) and
 * below the kernel's ephemeral range when there is room: the actors start
 * connecting before the learner binds, and an outgoing connection's source
 * port drawn from that range could take one of the learner's ports. */
static int pick_ports(int n)
{
    int   lo = 28100, hi = 60000, eph_lo = 0, eph_hi = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &eph_lo, &eph_hi) == 2 && eph_lo - lo >= 1000) hi = eph_lo;
        fclose(f);
    }
    return ports_pick(n, lo, hi);
}

/* ---- 1. The cluster ------------------------------------------------------ */

typedef struct {
    bool   ok;
    int    steps;
    double samples;
    double samples_per_s;        /* the learner's summary */
    double train_wall_s;         /* the learner's loop time (summary) */
    double steady_samples_per_s; /* after the first step, from the metrics */
    double learn_s;              /* sum of step_s: time in algo_step */
    double learn_share;          /* learn_s / train_wall_s */
    double cpu_s;                /* CPU of all cluster processes, start-up included */
    int    snapshots_served;
} ClusterResult;

/* Counts the lines of the metrics file (one per step), 0 if absent. */
static int metrics_steps(const char *path)
{
    char  *buf = NULL;
    size_t len = 0;
    if (fileio_read_all(path, (size_t)64 << 20, true, &buf, &len) != 0) return 0;
    int n = 0;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    free(buf);
    return n;
}

/* Reads the learner's per-step records: time in algo_step and the rate
 * after the first step (which includes the actors' start-up). */
static void read_metrics(const char *path, ClusterResult *c)
{
    char  *buf = NULL;
    size_t len = 0;
    if (fileio_read_all(path, (size_t)64 << 20, false, &buf, &len) != 0) return;
    double wall_first = NAN, wall_last = NAN, samples_after = 0;
    int    n = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(line, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        double wall = json_number_value(json_object_get(o, "wall_s"));
        c->learn_s += json_number_value(json_object_get(o, "step_s"));
        json_t *ss = json_object_get(o, "snapshots_served");
        if (json_is_integer(ss)) c->snapshots_served = (int)json_integer_value(ss);
        if (n == 0)
            wall_first = wall;
        else
            samples_after += json_number_value(json_object_get(o, "samples"));
        wall_last = wall;
        n++;
        json_decref(o);
    }
    free(buf);
    if (n >= 2 && wall_last > wall_first)
        c->steady_samples_per_s = samples_after / (wall_last - wall_first);
}

static int run_sft(const Args *a, const char *bin, const char *tmp, char *sft_dir, size_t cap)
{
    char log_path[PATH_MAX + 16];
    snprintf(sft_dir, cap, "%s/sft", tmp);
    snprintf(log_path, sizeof log_path, "%s/sft.log", tmp);
    ClusterCmd cmd = {0};
    cluster_cmd_add(&cmd, "%s/rlhf-sft", bin);
    cluster_cmd_flag(&cmd, "--out", "%s", sft_dir);
    cluster_cmd_flag(&cmd, "--steps", "%d", a->sft_steps);
    cluster_cmd_flag(&cmd, "--seed", "%d", a->seed);
    /* One held-out problem: the warm start's accuracy is not what is measured. */
    cluster_cmd_flag(&cmd, "--eval-n", "1");
    printf("warm start: %s --steps %d (log %s)\n", cmd.argv[0], a->sft_steps, log_path);
    fflush(stdout);
    double t0 = now_s();
    Proc  *p = new_child(&cmd, log_path);
    cluster_cmd_free(&cmd);
    int rc = proc_start(p);
    if (rc == 0 && proc_wait(p, a->timeout_s) != 0) {
        stop_child(&p);
        fprintf(stderr, "bench_cluster: rlhf-sft took longer than %g s; see %s\n", a->timeout_s,
                log_path);
        return ERR_TIMEOUT;
    }
    int st = rc == 0 ? exit_status(p) : -1;
    proc_free(&p);
    if (st != 0 || !ckpt_exists(sft_dir)) {
        fprintf(stderr, "bench_cluster: rlhf-sft failed (status %d); see %s\n", st, log_path);
        return ERR_IO;
    }
    printf("warm start: done in %.1f s\n", now_s() - t0);
    return 0;
}

/* Runs learner, reward server and N_ACTORS actors until the learner has
 * taken a->steps steps, with logs, checkpoint, metrics and summary in dir,
 * and reads the summary and metrics. */
static int run_cluster(const Args *a, const char *bin, const char *dir, const char *sft_dir,
                       ClusterResult *c)
{
    memset(c, 0, sizeof *c);
    c->steady_samples_per_s = NAN;
    int P = a->port_base ? a->port_base : pick_ports(ENDPOINT_N_PORTS);
    if (P < 0) {
        fprintf(stderr, "bench_cluster: no %d free consecutive loopback ports found\n",
                ENDPOINT_N_PORTS);
        return ERR_IO;
    }
    ClusterEndpoints ep;
    cluster_endpoints(&ep, P);
    char ckpt[PATH_MAX], metrics[PATH_MAX], summary[PATH_MAX];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    snprintf(summary, sizeof summary, "%s/summary.json", dir);
    /* kids[0] is the learner, kids[1] the reward server, then the actors. */
    char       logs[2 + N_ACTORS][PATH_MAX];
    ClusterCmd cmds[2 + N_ACTORS] = {{0}};
    Proc      *kids[2 + N_ACTORS] = {0};
    /* Evaluation is cut to one problem: its time would count in the
     * learner's samples/s (the final one runs inside the timed loop's
     * wall), and --eval-n 0 makes the learner abort (its checkpoint code
     * json_packs the NaN accuracy_before). */
    ClusterLearnerRun run = {.init = sft_dir,
                             .ckpt_dir = ckpt,
                             .metrics = metrics,
                             .summary = summary,
                             .steps = a->steps,
                             .seed = a->seed,
                             .eval_n = 1};
    cluster_cmd_learner(&cmds[0], bin, &ep, &run);
    cluster_cmd_flag(&cmds[0], "--ckpt-every", "0");
    snprintf(logs[0], sizeof logs[0], "%s/learner.log", dir);
    cluster_cmd_reward(&cmds[1], bin, ep.samples, ep.results, 0);
    snprintf(logs[1], sizeof logs[1], "%s/reward.log", dir);
    for (int i = 0; i < N_ACTORS; i++) {
        cluster_cmd_actor(&cmds[2 + i], bin, &ep, ep.samples, i, a->seed);
        snprintf(logs[2 + i], sizeof logs[2 + i], "%s/actor-%d.log", dir, i);
    }
    for (int i = 0; i < 2 + N_ACTORS; i++) {
        kids[i] = new_child(&cmds[i], logs[i]);
        cluster_cmd_free(&cmds[i]);
    }
    int rc = 0;
    printf("cluster: learner + 1 reward server + %d actors on 127.0.0.1:%d..%d, %d steps of "
           "%d groups x %d (logs in %s)\n",
           N_ACTORS, P, P + ENDPOINT_N_PORTS - 1, a->steps, LEARNER_DEFAULTS.batch_groups,
           LEARNER_DEFAULTS.group_size, dir);
    fflush(stdout);
    /* Start-up order does not matter to the cluster; the learner goes last
     * so its clock does not include the others' exec and model set-up. */
    double cpu0 = cpu_s(RUSAGE_CHILDREN);
    for (int i = 1; i < 2 + N_ACTORS; i++)
        if (proc_start(kids[i]) != 0) rc = ERR_IO;
    if (proc_start(kids[0]) != 0) rc = ERR_IO;

    Progress pr;
    progress_start(&pr, "cluster", "step", a->steps);
    double t_end = now_s() + a->timeout_s;
    int    st = -1;
    while (rc == 0) {
        if (proc_wait(kids[0], 0.5) == 0) {
            st = exit_status(kids[0]);
            break;
        }
        for (int i = 1; i < 2 + N_ACTORS; i++) {
            if (!proc_is_running(kids[i])) {
                fprintf(stderr,
                        "\nbench_cluster: %s exited with status %d during the run; see %s\n",
                        proc_name(kids[i]), exit_status(kids[i]), logs[i]);
                rc = ERR_IO;
            }
        }
        if (*g_stop) rc = ERR_AGAIN;
        if (now_s() > t_end) {
            fprintf(stderr, "\nbench_cluster: the cluster did not finish in %g s; see %s\n",
                    a->timeout_s, logs[0]);
            rc = ERR_TIMEOUT;
        }
        progress_update(&pr, metrics_steps(metrics), NULL, false);
    }
    progress_update(&pr, metrics_steps(metrics), NULL, true);
    progress_end(&pr);
    for (int i = 0; i < 2 + N_ACTORS; i++) stop_child(&kids[i]);
    c->cpu_s = cpu_s(RUSAGE_CHILDREN) - cpu0; /* every child is reaped by now */
    if (rc) return rc;
    if (st != 0) {
        fprintf(stderr, "bench_cluster: rlhf-learner exited with status %d; see %s\n", st, logs[0]);
        return ERR_IO;
    }
    json_t *sum = json_load_file(summary, 0, NULL);
    if (!json_is_object(sum)) {
        fprintf(stderr, "bench_cluster: no summary at %s; see %s\n", summary, logs[0]);
        json_decref(sum);
        return ERR_FORMAT;
    }
    c->steps = (int)json_integer_value(json_object_get(sum, "steps"));
    c->samples = (double)json_integer_value(json_object_get(sum, "samples"));
    c->samples_per_s = json_number_value(json_object_get(sum, "samples_per_s"));
    c->train_wall_s = json_number_value(json_object_get(sum, "train_wall_s"));
    json_decref(sum);
    read_metrics(metrics, c);
    c->learn_share = c->train_wall_s > 0 ? c->learn_s / c->train_wall_s : NAN;
    c->ok = c->steps == a->steps && c->samples_per_s > 0;
    if (!c->ok) {
        fprintf(stderr, "bench_cluster: the summary shows %d steps and %.1f samples/s\n", c->steps,
                c->samples_per_s);
        return ERR_FORMAT;
    }
    return 0;
}

/* ---- 1b. The same loop in one process ------------------------------------ */

enum { PH_GEN, PH_SCORE, PH_LEARN, PH_PUBLISH, PH_OTHER, PH_COUNT };
static const char *const k_phase_names[PH_COUNT] = {"generate", "score", "learn", "publish",
                                                    "other"};

typedef struct {
    bool   ok;
    int    steps;
    double samples;
    double wall_s;
    double samples_per_s;
    double steady_samples_per_s; /* after the first step */
    double phase_s[PH_COUNT];
    double cpu_s; /* CPU of this process (every thread) during the steps */
} LoopResult;

/* What the cluster does per learner step, in one thread and without
 * messages: for batch_groups prompts, lease_prompts at a time (one actor
 * lease, one gen_run of lease_prompts x G sequences on the sampling copy of
 * the policy), generate G completions each, score them with the arith
 * scorer, take one algo_step on the batch and copy the new weights into the
 * sampling copy. */
static int run_inprocess(const Args *a, const char *sft_dir, LoopResult *res)
{
    memset(res, 0, sizeof *res);
    const LearnerConfig d = LEARNER_DEFAULTS;
    const int           NG = d.batch_groups, G = d.group_size, LP = d.lease_prompts;
    const int           W = d.max_new_tokens, N = NG * G;
    ModelConfig         mc;
    Tok                *tok = NULL;
    Model              *policy = NULL, *ref = NULL, *actor = NULL;
    int                 rc;
    if ((rc = ckpt_load_config(sft_dir, &mc)) || (rc = ckpt_load_tok(sft_dir, &tok))) return rc;
    policy = model_new(&mc);
    if ((rc = ckpt_load(sft_dir, policy))) {
        model_free(&policy);
        tok_free(&tok);
        return rc;
    }
    ref = model_new(&mc);
    model_copy_params(ref, policy);
    actor = model_new(&mc);
    model_copy_params(actor, policy);
    OptimConfig oc = learner_optim_config(&d); /* the learner's, at the default flags */
    Optim      *opt = optim_new(&oc, model_num_params(policy));
    AlgoConfig  ac = d.algo;
    ac.seed = (uint64_t)a->seed;
    Algo           *algo = algo_new(&ac, policy, opt, ac.kl_beta > 0 ? ref : NULL, NULL, NULL);
    ScorerRegistry *reg = scorer_registry_new();
    CHECK(scorer_register_builtins(reg, NULL) == 0);
    const Scorer *scorer = scorer_find(reg, "arith");
    CHECK(scorer);

    TaskConfig task = TASK_DEFAULTS;
    task.max_digits = d.max_digits;
    int         longest_prompt = 2 * d.max_digits + 3; /* BOS, two operands, the sign and '=' */
    int         max_len = longest_prompt + W < mc.max_seq_len ? longest_prompt + W : mc.max_seq_len;
    Generator  *gen = gen_new(actor, LP * G, max_len);
    GenConfig   gc = {.sampler = {.temperature = ac.temperature, .top_k = 0, .top_p = 1.0f},
                      .max_new = W,
                      .stop_id = TOK_EOS};
    int        *prompt_tok = xmalloc(sizeof(int) * (size_t)NG * TASK_TEXT_MAX);
    int        *prompt_len = xmalloc(sizeof(int) * (size_t)NG);
    char       *answers = xmalloc((size_t)NG * TASK_TEXT_MAX);
    int        *tokens = xmalloc(sizeof(int) * (size_t)N * W);
    float      *logp_s = xmalloc(sizeof(float) * (size_t)N * W);
    float      *logp_f = xmalloc(sizeof(float) * (size_t)N * W);
    int        *n_tok = xmalloc(sizeof(int) * (size_t)N);
    int        *finish = xmalloc(sizeof(int) * (size_t)N);
    float      *reward = xmalloc(sizeof(float) * (size_t)N);
    int64_t    *version = xmalloc(sizeof(int64_t) * (size_t)W);
    const int **prompts = xmalloc(sizeof(int *) * (size_t)LP * G);
    int        *plens = xmalloc(sizeof(int) * (size_t)LP * G);
    int32_t    *ids32 = xmalloc(sizeof(int32_t) * (size_t)W);
    char       *text = xmalloc(TOK_DECODE_MAX_BYTES(W));
    char        prompt_text[TOK_DECODE_MAX_BYTES(TASK_TEXT_MAX)];
    AlgoTrajectory *traj = xmalloc(sizeof(AlgoTrajectory) * (size_t)N);
    Rng             rng;
    rng_seed(&rng, (uint64_t)a->seed * 7919 + 13);
    uint64_t prompt_seed = (uint64_t)a->seed + 2000; /* the learner's train problems */
    uint64_t next_prompt = 0;

    Progress pr;
    progress_start(&pr, "in-process", "step", a->steps);
    double t_start = now_s(), t_first = 0, cpu0 = cpu_s(RUSAGE_SELF);
    for (int step = 0; step < a->steps && rc == 0 && !*g_stop; step++) {
        double t0 = now_s();
        for (int g = 0; g < NG; g++) {
            TaskProblem p;
            task_problem(&task, prompt_seed, next_prompt++, false, &p);
            CHECK(tok_encode(tok, p.prompt, strlen(p.prompt), TOK_ENC_BOS,
                             prompt_tok + (size_t)g * TASK_TEXT_MAX, TASK_TEXT_MAX,
                             &prompt_len[g]) == 0);
            memcpy(answers + (size_t)g * TASK_TEXT_MAX, p.answer, TASK_TEXT_MAX);
        }
        for (int t = 0; t < W; t++) version[t] = step; /* every token sampled with version step */
        double t1 = now_s();
        res->phase_s[PH_OTHER] += t1 - t0;
        for (int g0 = 0; g0 < NG && rc == 0; g0 += LP) {
            int np = NG - g0 < LP ? NG - g0 : LP, n = np * G;
            for (int i = 0; i < n; i++) {
                prompts[i] = prompt_tok + (size_t)(g0 + i / G) * TASK_TEXT_MAX;
                plens[i] = prompt_len[g0 + i / G];
            }
            size_t    off = (size_t)g0 * G;
            GenOutput out = {tokens + off * W, logp_s + off * W, logp_f + off * W, n_tok + off,
                             finish + off};
            double    tg = now_s();
            rc = gen_run(gen, &gc, n, prompts, plens, &rng, &out);
            res->phase_s[PH_GEN] += now_s() - tg;
        }
        if (rc) break;
        double t2 = now_s();
        for (int g = 0; g < NG && rc == 0; g++) {
            /* As the reward server renders a prompt: special ids skipped. */
            if ((rc = tok_decode(tok, prompt_tok + (size_t)g * TASK_TEXT_MAX, prompt_len[g], 0,
                                 prompt_text, sizeof prompt_text, NULL)))
                break;
            for (int c = 0; c < G; c++) {
                int k = g * G + c, nt = n_tok[k];
                for (int i = 0; i < nt; i++) ids32[i] = tokens[(size_t)k * W + i];
                if ((rc = reward_completion_text(tok, ids32, (size_t)nt, text,
                                                 TOK_DECODE_MAX_BYTES(W))))
                    break;
                ScorerInput  in = {.prompt = prompt_text,
                                   .completion = text,
                                   .answer = answers + (size_t)g * TASK_TEXT_MAX,
                                   .is_truncated = finish[k] == GEN_FINISH_LENGTH};
                ScorerResult sr;
                char         why[160];
                if ((rc = scorer_run(scorer, &in, &sr, why, sizeof why))) {
                    fprintf(stderr, "bench_cluster: scorer: %s\n", why);
                    break;
                }
                reward[k] = sr.reward;
            }
        }
        double t3 = now_s();
        res->phase_s[PH_SCORE] += t3 - t2;
        if (rc) break;
        for (int k = 0; k < N; k++)
            traj[k] = (AlgoTrajectory){.prompt = prompt_tok + (size_t)(k / G) * TASK_TEXT_MAX,
                                       .prompt_len = prompt_len[k / G],
                                       .completion = tokens + (size_t)k * W,
                                       .completion_len = n_tok[k],
                                       .logp_behaviour = logp_f + (size_t)k * W,
                                       .version = version,
                                       .group_id = k / G,
                                       .reward = reward[k],
                                       .temperature = gc.sampler.temperature};
        AlgoStats st;
        double    t4 = now_s();
        res->phase_s[PH_OTHER] += t4 - t3;
        rc = algo_step(algo, traj, N, step, &st);
        double t5 = now_s();
        res->phase_s[PH_LEARN] += t5 - t4;
        if (rc) break;
        /* Publishing, in one process: the sampling copy takes the new weights. */
        model_copy_params(actor, policy);
        res->phase_s[PH_PUBLISH] += now_s() - t5;
        res->steps++;
        if (step == 0) t_first = now_s();
        progress_update(&pr, res->steps, NULL, false);
    }
    progress_end(&pr);
    double t_end = now_s();
    res->cpu_s = cpu_s(RUSAGE_SELF) - cpu0;
    res->samples = (double)res->steps * N;
    res->wall_s = t_end - t_start;
    res->samples_per_s = res->wall_s > 0 ? res->samples / res->wall_s : 0;
    res->steady_samples_per_s = res->steps >= 2 ? (res->samples - N) / (t_end - t_first) : NAN;
    res->ok = rc == 0 && res->steps == a->steps;
    if (rc) fprintf(stderr, "bench_cluster: in-process loop failed: %s\n", err_str(rc));

    free(traj);
    free(text);
    free(ids32);
    free(plens);
    free(prompts);
    free(version);
    free(reward);
    free(finish);
    free(n_tok);
    free(logp_f);
    free(logp_s);
    free(tokens);
    free(answers);
    free(prompt_len);
    free(prompt_tok);
    gen_free(&gen);
    scorer_registry_free(&reg);
    algo_free(&algo);
    optim_free(&opt);
    model_free(&actor);
    model_free(&ref);
    model_free(&policy);
    tok_free(&tok);
    return rc ? rc : (res->ok ? 0 : ERR_AGAIN);
}

/* ---- 3. Snapshot publishing --------------------------------------------- */

/* One receiver thread: its own ZeroMQ context (as in a separate actor
 * process), one DEALER and one block. Per repetition: barrier, ask, take
 * every chunk, note the time, barrier. */
typedef struct {
    const char        *endpoint;
    size_t             bytes;
    int                reps;
    bool               is_raw; /* raw frames instead of the wire snapshot path */
    pthread_barrier_t *bar;
    atomic_int        *failed;
    int                id;
    char              *buf; /* bytes, the assembled block */
    double             t_done[MAX_REPS];
} Rx;

static void *rx_main(void *arg)
{
    Rx   *r = arg;
    void *ctx = zmq_ctx_new();
    CHECK(ctx);
    WireSock   *ws = NULL;
    void       *zs = NULL;
    WireSnapRx *srx = NULL;
    char        name[32];
    snprintf(name, sizeof name, "bench-rx-%d", r->id);
    if (r->is_raw) {
        zs = zmq_socket(ctx, ZMQ_DEALER);
        int hwm = 100000, linger = 0;
        if (!zs || zmq_setsockopt(zs, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
            zmq_setsockopt(zs, ZMQ_LINGER, &linger, sizeof linger) ||
            zmq_connect(zs, r->endpoint)) {
            fprintf(stderr, "bench_cluster: raw receiver %d: %s\n", r->id,
                    zmq_strerror(zmq_errno()));
            atomic_store(r->failed, 1);
        }
    } else {
        WireSockOpts o = WIRE_SOCK_DEFAULTS;
        o.rcvhwm = 100000; /* as many chunks as the sender queues */
        ws = wire_sock_new(ctx, ZMQ_DEALER, name, &o);
        if (!ws || wire_connect(ws, r->endpoint)) atomic_store(r->failed, 1);
        srx = wire_snap_rx_new(r->buf, r->bytes);
    }
    for (int rep = 0; rep < r->reps; rep++) {
        pthread_barrier_wait(r->bar);
        r->t_done[rep] = NAN;
        if (atomic_load(r->failed)) goto next;
        if (r->is_raw) {
            char req = 'r';
            if (zmq_send(zs, &req, 1, 0) != 1) {
                atomic_store(r->failed, 1);
                goto next;
            }
            size_t    off = 0;
            zmq_msg_t m;
            zmq_msg_init(&m);
            int tmo = RECV_TIMEOUT_MS;
            zmq_setsockopt(zs, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
            while (off < r->bytes) {
                int n = zmq_msg_recv(&m, zs, 0);
                if (n < 0 || off + (size_t)n > r->bytes) {
                    fprintf(stderr, "bench_cluster: raw receiver %d: %s at byte %zu\n", r->id,
                            n < 0 ? zmq_strerror(zmq_errno()) : "too many bytes", off);
                    atomic_store(r->failed, 1);
                    break;
                }
                memcpy(r->buf + off, zmq_msg_data(&m), (size_t)n);
                off += (size_t)n;
            }
            zmq_msg_close(&m);
        } else {
            wire_snap_rx_reset(srx);
            Rlhf__SnapshotRequest q = RLHF__SNAPSHOT_REQUEST__INIT;
            q.version = WIRE_PROTOCOL_VERSION;
            q.run_id = "";
            q.actor_id = name;
            int rc;
            /* Immediate mode queues only on a completed connection: retry. */
            while ((rc = wire_send(ws, &q.base, 0)) == ERR_AGAIN && !atomic_load(r->failed)) {
            }
            if (rc) {
                atomic_store(r->failed, 1);
                goto next;
            }
            for (;;) {
                WireMsg           m = {0};
                ProtobufCMessage *msg = NULL;
                WireReject        rej = {0};
                rc = wire_recv_decode(ws, RECV_TIMEOUT_MS, &rlhf__weight_chunk__descriptor, NULL,
                                      &m, &msg, &rej);
                wire_msg_close(&m);
                if (rc == ERR_AGAIN) continue;
                if (rc == 0) {
                    rc = wire_snap_rx_accept(srx, (Rlhf__WeightChunk *)msg, &rej);
                    protobuf_c_message_free_unpacked(msg, NULL);
                }
                if (rc == 1) break;
                if (rc < 0) {
                    fprintf(stderr, "bench_cluster: snapshot receiver %d: %s %s\n", r->id,
                            err_str(rc), rej.why);
                    atomic_store(r->failed, 1);
                    break;
                }
            }
        }
        r->t_done[rep] = now_s();
    next:
        pthread_barrier_wait(r->bar);
    }
    wire_snap_rx_free(&srx);
    wire_sock_free(&ws);
    if (zs) zmq_close(zs);
    zmq_ctx_term(ctx);
    return NULL;
}

typedef struct {
    double best_s;     /* best repetition: first send until both receivers hold the block */
    double checksum_s; /* wire only: the sender's checksum inside best_s */
    bool   ok;         /* every repetition done, the blocks equal the source */
} XferResult;

/* Publishes block (bytes) to N_RECEIVERS receiver threads reps times over
 * tcp loopback, through the wire snapshot path (the learner's: a ROUTER,
 * wire_snap_send per SnapshotRequest, a fresh checksum as for a new
 * version) or as raw frames of the same size. Repetitions are printed
 * numbered from rep0 + 1. */
static int run_transfer(const void *block, size_t bytes, size_t chunk_bytes, int reps, int rep0,
                        bool is_raw, int dtype, const char *label, XferResult *res)
{
    memset(res, 0, sizeof *res);
    res->best_s = INFINITY;
    void *ctx = zmq_ctx_new();
    CHECK(ctx);
    WireSock *ws = NULL;
    void     *zs = NULL;
    char      ep[128];
    int       rc = 0;
    if (is_raw) {
        zs = zmq_socket(ctx, ZMQ_ROUTER);
        int    hwm = 100000, one = 1, tmo = 2000, rtmo = RECV_TIMEOUT_MS;
        size_t len = sizeof ep;
        if (!zs || zmq_setsockopt(zs, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
            zmq_setsockopt(zs, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
            zmq_setsockopt(zs, ZMQ_SNDTIMEO, &tmo, sizeof tmo) ||
            zmq_setsockopt(zs, ZMQ_RCVTIMEO, &rtmo, sizeof rtmo) ||
            zmq_bind(zs, "tcp://127.0.0.1:*") || zmq_getsockopt(zs, ZMQ_LAST_ENDPOINT, ep, &len)) {
            fprintf(stderr, "bench_cluster: raw sender: %s\n", zmq_strerror(zmq_errno()));
            rc = ERR_IO;
        }
    } else {
        /* The learner's snapshot socket options (learner.c's open_sockets),
         * with room for every chunk of both receivers in the queue. */
        WireSockOpts o = WIRE_SOCK_DEFAULTS;
        o.sndtimeo_ms = 2000;
        o.immediate = false;
        o.sndhwm = 100000;
        ws = wire_sock_new(ctx, ZMQ_ROUTER, "bench-snapshot", &o);
        if (!ws || wire_bind(ws, "tcp://127.0.0.1:*") || wire_last_endpoint(ws, ep, sizeof ep))
            rc = ERR_IO;
    }
    if (rc) goto out_sock;

    pthread_barrier_t bar;
    atomic_int        failed = 0;
    Rx                rx[N_RECEIVERS];
    pthread_t         th[N_RECEIVERS];
    CHECK(pthread_barrier_init(&bar, NULL, N_RECEIVERS + 1) == 0);
    for (int i = 0; i < N_RECEIVERS; i++) {
        rx[i] = (Rx){.endpoint = ep,
                     .bytes = bytes,
                     .reps = reps,
                     .is_raw = is_raw,
                     .bar = &bar,
                     .failed = &failed,
                     .id = i,
                     .buf = xmalloc_aligned(bytes)};
        memset(rx[i].buf, 0, bytes); /* a receiver's block is resident, as an actor's is */
        CHECK(pthread_create(&th[i], NULL, rx_main, &rx[i]) == 0);
    }
    WireSnapMeta meta = {.run_id = "bench", .epoch = 0, .config_json = "{}", .dtype = dtype};
    uint32_t     n_chunks = wire_snap_chunk_count(bytes, chunk_bytes);
    for (int rep = 0; rep < reps; rep++) {
        pthread_barrier_wait(&bar);
        unsigned char peer[N_RECEIVERS][WIRE_MAX_IDENTITY];
        size_t        peer_len[N_RECEIVERS];
        for (int i = 0; i < N_RECEIVERS && !atomic_load(&failed); i++) {
            /* Both requests first: the clock starts when both receivers wait. */
            if (is_raw) {
                int  n = zmq_recv(zs, peer[i], sizeof peer[i], 0);
                char req;
                if (n <= 0 || zmq_recv(zs, &req, 1, 0) != 1) atomic_store(&failed, 1);
                peer_len[i] = n > 0 ? (size_t)n : 0;
            } else {
                WireMsg           m = {0};
                ProtobufCMessage *msg = NULL;
                int rc2 = wire_recv_decode(ws, RECV_TIMEOUT_MS, &rlhf__snapshot_request__descriptor,
                                           NULL, &m, &msg, NULL);
                if (rc2 == 0) {
                    memcpy(peer[i], m.peer, m.peer_len);
                    peer_len[i] = m.peer_len;
                    protobuf_c_message_free_unpacked(msg, NULL);
                } else if (rc2 == ERR_AGAIN) {
                    i--;
                } else {
                    atomic_store(&failed, 1);
                }
                wire_msg_close(&m);
            }
        }
        double t0 = now_s(), ck = 0;
        if (!atomic_load(&failed)) {
            if (is_raw) {
                for (int i = 0; i < N_RECEIVERS && !atomic_load(&failed); i++)
                    for (uint32_t c = 0; c < n_chunks; c++) {
                        size_t off = (size_t)c * chunk_bytes;
                        size_t len = bytes - off < chunk_bytes ? bytes - off : chunk_bytes;
                        /* zmq_send copies the data into the frame once, as packing does. */
                        if (zmq_send(zs, peer[i], peer_len[i], ZMQ_SNDMORE) < 0 ||
                            zmq_send(zs, (const char *)block + off, len, 0) < 0) {
                            fprintf(stderr, "bench_cluster: raw send: %s\n",
                                    zmq_strerror(zmq_errno()));
                            atomic_store(&failed, 1);
                            break;
                        }
                    }
            } else {
                /* A new version: the learner checksums once, then serves. */
                meta.policy_version = (uint64_t)rep;
                meta.checksum = wire_snap_checksum(block, bytes);
                meta.has_checksum = true;
                ck = now_s() - t0;
                for (int i = 0; i < N_RECEIVERS && !atomic_load(&failed); i++)
                    if (wire_snap_send(ws, peer[i], peer_len[i], &meta, block, bytes,
                                       chunk_bytes) != 0)
                        atomic_store(&failed, 1);
            }
        }
        pthread_barrier_wait(&bar);
        /* After a failure the remaining repetitions still meet at the
         * barriers (doing nothing), so every thread gets to its end. */
        if (atomic_load(&failed)) continue;
        double done = 0;
        for (int i = 0; i < N_RECEIVERS; i++) done = fmax(done, rx[i].t_done[rep]);
        double dt = done - t0;
        printf("  %-8s rep %d: %.3f s (%.2f GB/s delivered)%s\n", label, rep0 + rep + 1, dt,
               N_RECEIVERS * (double)bytes / dt / 1e9, is_raw ? "" : "  incl. checksum");
        fflush(stdout);
        if (dt < res->best_s) {
            res->best_s = dt;
            res->checksum_s = ck;
        }
    }
    for (int i = 0; i < N_RECEIVERS; i++) CHECK(pthread_join(th[i], NULL) == 0);
    res->ok = !atomic_load(&failed);
    for (int i = 0; i < N_RECEIVERS; i++) {
        if (res->ok && memcmp(rx[i].buf, block, bytes) != 0) {
            fprintf(stderr, "bench_cluster: receiver %d's block differs from the source\n", i);
            res->ok = false;
        }
        free(rx[i].buf);
    }
    pthread_barrier_destroy(&bar);
    if (!res->ok) rc = ERR_IO;
out_sock:
    wire_sock_free(&ws);
    if (zs) {
        int linger = 0;
        zmq_setsockopt(zs, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(zs);
    }
    zmq_ctx_term(ctx);
    return rc;
}

/* ---- main ----------------------------------------------------------------- */

static int check_args(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const Args *a = ctx;
    if (a->chunk_bytes % 4) {
        fprintf(stderr, "bench_cluster: --chunk-bytes %d: expected a multiple of 4\n",
                a->chunk_bytes);
        return ERR_ARG;
    }
    return 0;
}

/* The directory holding the rlhf-* programs: --bin-dir, else the parent of
 * this program's directory ($(BUILD)/bench/bench_cluster -> $(BUILD)). */
static int find_bin_dir(const Args *a, char *out, size_t cap)
{
    if (a->bin_dir) {
        snprintf(out, cap, "%s", a->bin_dir);
        return 0;
    }
    char    self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "bench_cluster: cannot read /proc/self/exe; pass --bin-dir\n");
        return ERR_IO;
    }
    self[n] = '\0';
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(self, '/');
        if (!slash) return ERR_IO;
        *slash = '\0';
    }
    snprintf(out, cap, "%s", self[0] ? self : "/");
    return 0;
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Parts 1 and 2: the warm start, the cluster, the in-process loop, their
 * report, and their figures in res. Returns true if every part asked for
 * succeeded. */
static bool bench_loop(const Args *a, json_t *res)
{
    const LearnerConfig d = LEARNER_DEFAULTS;
    char                bin[PATH_MAX], tmp[] = "/tmp/bench_cluster.XXXXXX", sft_dir[PATH_MAX];
    ClusterResult       cls[MAX_ROUNDS] = {0}, cl = {0};
    LoopResult          lps[MAX_ROUNDS] = {0}, lp = {0};
    bool                ok = true;
    int                 n_cl = 0, n_lp = 0;
    if (find_bin_dir(a, bin, sizeof bin)) return false;
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "bench_cluster: mkdtemp: %s\n", strerror(errno));
        return false;
    }
    bool is_sft_ok = run_sft(a, bin, tmp, sft_dir, sizeof sft_dir) == 0;
    ok = is_sft_ok;
    /* Rounds alternate the two sides (in-process, cluster, in-process, ...)
     * and the best of each side counts: on this shared machine other jobs
     * only ever slow a run down, and alternating keeps a load that comes
     * and goes from landing on one side only. A failed run does not stop
     * the others: half a comparison still says something. */
    for (int r = 0; is_sft_ok && !*g_stop && r < a->rounds; r++) {
        if (!a->skip_inprocess) {
            printf("round %d/%d, in-process: the same loop without messages, generating %d "
                   "prompts x %d per gen_run (one lease)\n",
                   r + 1, a->rounds, d.lease_prompts, d.group_size);
            fflush(stdout);
            if (run_inprocess(a, sft_dir, &lps[r]) == 0)
                n_lp++;
            else
                ok = false;
        }
        if (!a->skip_cluster && !*g_stop) {
            char dir[64]; /* tmp is short: "/tmp/bench_cluster.XXXXXX" */
            snprintf(dir, sizeof dir, "%s/round-%d", tmp, r + 1);
            printf("round %d/%d, ", r + 1, a->rounds);
            if (mkdir(dir, 0755) != 0 || run_cluster(a, bin, dir, sft_dir, &cls[r]) != 0)
                ok = false;
            else
                n_cl++;
        }
    }
    /* The best of each side, figure by figure; the phase times summed. */
    for (int r = 0; r < a->rounds; r++) {
        if (cls[r].ok) {
            if (!cl.ok || cls[r].samples_per_s > cl.samples_per_s) cl = cls[r];
            printf("round %d cluster:    %6.1f samples/s, after the first step %6.1f; CPU %.2f ms "
                   "per sample\n",
                   r + 1, cls[r].samples_per_s, cls[r].steady_samples_per_s,
                   1e3 * cls[r].cpu_s / cls[r].samples);
        }
        if (lps[r].ok) {
            printf("round %d in-process: %6.1f samples/s, after the first step %6.1f; CPU %.2f ms "
                   "per sample\n",
                   r + 1, lps[r].samples_per_s, lps[r].steady_samples_per_s,
                   1e3 * lps[r].cpu_s / lps[r].samples);
            if (!lp.ok) {
                lp = lps[r];
                continue;
            }
            lp.samples_per_s = fmax(lp.samples_per_s, lps[r].samples_per_s);
            lp.steady_samples_per_s = fmax(lp.steady_samples_per_s, lps[r].steady_samples_per_s);
            lp.cpu_s = fmin(lp.cpu_s, lps[r].cpu_s);
            lp.wall_s += lps[r].wall_s;
            for (int p = 0; p < PH_COUNT; p++) lp.phase_s[p] += lps[r].phase_s[p];
        }
    }
    for (int r = 0; r < a->rounds; r++)
        if (cls[r].ok) {
            cl.steady_samples_per_s = fmax(cl.steady_samples_per_s, cls[r].steady_samples_per_s);
            cl.cpu_s = fmin(cl.cpu_s, cls[r].cpu_s);
        }
    if (a->keep || !ok)
        printf("kept %s (logs, metrics, checkpoints)\n", tmp);
    else
        fileio_remove_tree(tmp);
    if (!cl.ok && !lp.ok) return ok;

    printf("\n== 1. samples/s: cluster (learner, reward server, %d actors) vs one process ==\n",
           N_ACTORS);
    printf("   %d steps of %d groups x %d completions, max %d new tokens, GRPO\n", a->steps,
           d.batch_groups, d.group_size, d.max_new_tokens);
    if (cl.ok)
        printf("   cluster     %8.1f samples/s  (best of %d; learner summary: %.0f samples in "
               "%.2f s); after the first step %.1f samples/s\n",
               cl.samples_per_s, n_cl, cl.samples, cl.train_wall_s, cl.steady_samples_per_s);
    if (lp.ok)
        printf("   in-process  %8.1f samples/s  (best of %d, %.0f samples each); after the first "
               "step %.1f samples/s\n",
               lp.samples_per_s, n_lp, lp.samples, lp.steady_samples_per_s);
    json_object_set_new(res, "steps", json_integer(a->steps));
    json_object_set_new(res, "batch_groups", json_integer(d.batch_groups));
    json_object_set_new(res, "group_size", json_integer(d.group_size));
    json_object_set_new(res, "actors", json_integer(N_ACTORS));
    if (cl.ok && lp.ok) {
        double overhead = 1.0 - cl.samples_per_s / lp.samples_per_s;
        double overhead_steady = 1.0 - cl.steady_samples_per_s / lp.steady_samples_per_s;
        printf("   overhead of distribution 1 - cluster/in-process = %+.1f%% (target < %.0f%%: "
               "%s); after the first step %+.1f%%\n",
               100 * overhead, 100 * OVERHEAD_TARGET, overhead < OVERHEAD_TARGET ? "met" : "missed",
               100 * overhead_steady);
        printf("   (the learner's figure counts from its start: the actors' first snapshot, "
               "and the final evaluation and checkpoint. The cluster's %d actors generate while "
               "the learner trains, so on %ld cores it can beat one process, a negative "
               "overhead; on a loaded machine its %d processes also get a larger share of the "
               "CPUs than one process does.)\n",
               N_ACTORS, sysconf(_SC_NPROCESSORS_ONLN), N_ACTORS + 2);
        json_object_set_new(res, "overhead", num(overhead));
        json_object_set_new(res, "overhead_after_first_step", num(overhead_steady));
        json_object_set_new(res, "overhead_target", json_real(OVERHEAD_TARGET));
        /* CPU time per sample barely depends on how busy the machine is,
         * unlike samples/s: the work distribution adds, seen from a side. */
        double cpu_cl = 1e3 * cl.cpu_s / cl.samples, cpu_lp = 1e3 * lp.cpu_s / lp.samples;
        printf("   CPU per sample (least of the rounds): cluster %.2f ms (all %d processes, "
               "start-up included), in-process %.2f ms: the cluster spends %+.1f%% CPU per "
               "sample\n",
               cpu_cl, N_ACTORS + 2, cpu_lp, 100 * (cpu_cl / cpu_lp - 1));
        json_object_set_new(res, "cluster_cpu_ms_per_sample", num(cpu_cl));
        json_object_set_new(res, "inprocess_cpu_ms_per_sample", num(cpu_lp));
    }

    printf("\n== 2. where the time goes ==\n");
    if (lp.ok) {
        printf("   in-process (%d runs together):", n_lp);
        json_t *sh = json_object();
        for (int p = 0; p < PH_COUNT; p++) {
            printf(" %s %.1f%% (%.3f s)%s", k_phase_names[p], 100 * lp.phase_s[p] / lp.wall_s,
                   lp.phase_s[p], p + 1 < PH_COUNT ? "," : "\n");
            json_object_set_new(sh, k_phase_names[p], num(lp.phase_s[p] / lp.wall_s));
        }
        json_object_set_new(res, "rounds", json_integer(a->rounds));
        json_object_set_new(res, "inprocess_samples_per_s", num(lp.samples_per_s));
        json_object_set_new(res, "inprocess_samples_per_s_after_first_step",
                            num(lp.steady_samples_per_s));
        json_object_set_new(res, "inprocess_share", sh);
    }
    if (cl.ok) {
        printf("   cluster, from the learner's metrics: learning %.1f%% of its wall (%.2f of "
               "%.2f s); the rest is waiting for groups and serving %d snapshots. Generation "
               "and scoring run concurrently in the other processes and publishing is not "
               "timed there: the learner's metrics do not expose those shares.\n",
               100 * cl.learn_share, cl.learn_s, cl.train_wall_s, cl.snapshots_served);
        json_object_set_new(res, "cluster_samples_per_s", num(cl.samples_per_s));
        json_object_set_new(res, "cluster_samples_per_s_after_first_step",
                            num(cl.steady_samples_per_s));
        json_object_set_new(res, "cluster_learn_share", num(cl.learn_share));
    }
    return ok;
}

/* Part 3: memcpy, the wire snapshot path and raw ZeroMQ for one
 * SmolLM2-135M-shape parameter block, and their figures in res. */
static bool bench_snapshot(const Args *a, json_t *res)
{
    ModelConfig smol = model_config_llama(576, 30, 9, 3, 1536, 49152, 2048);
    smol.rope_theta = 100000.0f;
    smol.tie_embeddings = true;
    Model *m = model_new(&smol);
    size_t P = model_num_params(m), bytes = P * sizeof(float);
    size_t chunk = (size_t)a->chunk_bytes;
    float *block = model_params(m);
    Rng    r;
    /* Random values, as trained weights are: nothing for a transport to
     * compress (uniform draws: normal ones would only take longer). */
    rng_seed(&r, 1);
    for (size_t i = 0; i < P; i++) block[i] = 0.04f * (rng_uniform(&r) - 0.5f);
    printf("\n== 3. publishing one SmolLM2-135M-shape fp32 snapshot (%.1fM params, %.1f MB) "
           "to %d receivers over tcp loopback ==\n",
           P / 1e6, bytes / 1e6, N_RECEIVERS);
    printf("   %u chunks of %zu bytes; best of %d each; each receiver in its own thread and "
           "ZeroMQ context, as in its own process\n",
           wire_snap_chunk_count(bytes, chunk), chunk, a->reps);
    fflush(stdout);
    double     mc = bench_memcpy_best_s(bytes);
    XferResult snap = {.best_s = INFINITY}, raw = {.best_s = INFINITY};
    int        src = 0, rrc = 0;
    /* One repetition of each at a time, alternating, so that a load which
     * comes and goes does not land on one side only. */
    for (int rep = 0; rep < a->reps && src == 0 && rrc == 0 && !*g_stop; rep++) {
        XferResult x;
        if ((src = run_transfer(block, bytes, chunk, 1, rep, false, 0, "snapshot", &x)) == 0 &&
            x.best_s < snap.best_s)
            snap = x;
        if (src == 0 &&
            (rrc = run_transfer(block, bytes, chunk, 1, rep, true, 0, "raw zmq", &x)) == 0 &&
            x.best_s < raw.best_s)
            raw = x;
    }
    /* The same weights in bf16, as the learner publishes them by default:
     * rounded once per version (timed apart), then half the bytes sent. */
    size_t    hbytes = P * sizeof(uint16_t);
    uint16_t *half = xmalloc_aligned(hbytes);
    double    conv = INFINITY;
    for (int k = 0; k < 3; k++) {
        double t0 = now_s();
        for (size_t i = 0; i < P; i++) half[i] = half_f32_to_bf16(block[i]);
        conv = fmin(conv, now_s() - t0);
    }
    XferResult hsnap = {.best_s = INFINITY};
    int        hrc = src;
    for (int rep = 0; rep < a->reps && hrc == 0 && !*g_stop; rep++) {
        XferResult x;
        if ((hrc = run_transfer(half, hbytes, chunk, 1, rep, false, 1, "bf16", &x)) == 0 &&
            x.best_s < hsnap.best_s)
            hsnap = x;
    }
    free(half);
    /* A LoRA run's snapshot after an actor's first: the adapters alone
     * (rank LORA_RANK on every projection), rounded to bf16 per version. */
    LoraConfig lc = {.rank = LORA_RANK, .alpha = 2.0f * LORA_RANK, .targets = LORA_TARGETS_ALL};
    size_t     NA = lora_config_num_params(&lc, &smol), lbytes = NA * sizeof(uint16_t);
    uint16_t  *lhalf = xmalloc_aligned(lbytes);
    double     lconv = INFINITY;
    for (int k = 0; k < 3; k++) {
        double t0 = now_s();
        for (size_t i = 0; i < NA; i++) lhalf[i] = half_f32_to_bf16(block[i]);
        lconv = fmin(lconv, now_s() - t0);
    }
    XferResult lsnap = {.best_s = INFINITY};
    int        lrc = hrc;
    for (int rep = 0; rep < a->reps && lrc == 0 && !*g_stop; rep++) {
        XferResult x;
        if ((lrc = run_transfer(lhalf, lbytes, chunk, 1, rep, false, 1, "lora", &x)) == 0 &&
            x.best_s < lsnap.best_s)
            lsnap = x;
    }
    free(lhalf);
    if (*g_stop) src = rrc = hrc = lrc = ERR_AGAIN;
    model_free(&m);
    printf("   memcpy      %.3f s for %.1f MB (%.2f GB/s, best of 5); x%d receivers %.3f s\n", mc,
           bytes / 1e6, bytes / mc / 1e9, N_RECEIVERS, N_RECEIVERS * mc);
    if (src == 0)
        printf("   snapshot    %.3f s  (wire: ROUTER, SnapshotRequest -> WeightChunks, each "
               "receiver assembles and verifies the checksum; the sender's checksum is %.3f s of "
               "it) = %.1fx memcpy of %d blocks\n",
               snap.best_s, snap.checksum_s, snap.best_s / (N_RECEIVERS * mc), N_RECEIVERS);
    if (hrc == 0)
        printf(
            "   bf16        %.3f s  + %.3f s rounding the fp32 masters once = %.3f s for %.1f MB "
            "(%.2fx the fp32 snapshot's time, %.2fx its bytes)\n",
            hsnap.best_s, conv, hsnap.best_s + conv, hbytes / 1e6,
            (hsnap.best_s + conv) / snap.best_s, (double)hbytes / (double)bytes);
    if (lrc == 0)
        printf(
            "   lora r%d     %.3f s  + %.4f s rounding = %.3f s for %.2f MB of adapters alone in "
            "bf16 (%.3fx the fp32 snapshot's time, %.4fx its bytes)\n",
            LORA_RANK, lsnap.best_s, lconv, lsnap.best_s + lconv, lbytes / 1e6,
            (lsnap.best_s + lconv) / snap.best_s, (double)lbytes / (double)bytes);
    if (rrc == 0)
        printf("   raw zmq     %.3f s  (ROUTER -> DEALERs, the same chunks as bare frames, "
               "copied into place) = %.1fx memcpy of %d blocks\n",
               raw.best_s, raw.best_s / (N_RECEIVERS * mc), N_RECEIVERS);
    json_t *sj = json_object();
    json_object_set_new(sj, "params", json_integer((json_int_t)P));
    json_object_set_new(sj, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(sj, "chunk_bytes", json_integer((json_int_t)chunk));
    json_object_set_new(sj, "receivers", json_integer(N_RECEIVERS));
    json_object_set_new(sj, "reps", json_integer(a->reps));
    json_object_set_new(sj, "memcpy_s", num(mc));
    json_object_set_new(sj, "memcpy_gbs", num(bytes / mc / 1e9));
    if (src == 0) {
        json_object_set_new(sj, "snapshot_s", num(snap.best_s));
        json_object_set_new(sj, "snapshot_checksum_s", num(snap.checksum_s));
    }
    if (rrc == 0) json_object_set_new(sj, "raw_zmq_s", num(raw.best_s));
    if (hrc == 0) {
        json_object_set_new(sj, "bf16_bytes", json_integer((json_int_t)hbytes));
        json_object_set_new(sj, "bf16_snapshot_s", num(hsnap.best_s));
        json_object_set_new(sj, "bf16_round_s", num(conv));
        json_object_set_new(sj, "bf16_publish_s", num(hsnap.best_s + conv));
        json_object_set_new(sj, "ratio_bf16_fp32_time", num((hsnap.best_s + conv) / snap.best_s));
    }
    if (lrc == 0) {
        json_object_set_new(sj, "lora_rank", json_integer(LORA_RANK));
        json_object_set_new(sj, "lora_params", json_integer((json_int_t)NA));
        json_object_set_new(sj, "lora_bytes", json_integer((json_int_t)lbytes));
        json_object_set_new(sj, "lora_snapshot_s", num(lsnap.best_s));
        json_object_set_new(sj, "lora_round_s", num(lconv));
        json_object_set_new(sj, "lora_publish_s", num(lsnap.best_s + lconv));
        json_object_set_new(sj, "ratio_lora_fp32_time", num((lsnap.best_s + lconv) / snap.best_s));
        json_object_set_new(sj, "ratio_lora_fp32_bytes", num((double)lbytes / (double)bytes));
    }
    if (src == 0 && rrc == 0) {
        double ratio = snap.best_s / raw.best_s;
        printf("   snapshot / raw zmq = %.2fx (goal within %.0fx: %s)\n", ratio, RATIO_GOAL,
               ratio <= RATIO_GOAL ? "met" : "missed");
        json_object_set_new(sj, "ratio_snapshot_raw", num(ratio));
        json_object_set_new(sj, "ratio_goal", json_real(RATIO_GOAL));
    }
    json_object_set_new(res, "snapshot", sj);
    return src == 0 && rrc == 0 && hrc == 0 && lrc == 0;
}

int main(int argc, char **argv)
{
    Args a = k_defaults;

    Flag flags[] = {
        FLAG_INT("steps", &a.steps, 1, 100000, "N", "learner steps, also of the in-process loop"),
        FLAG_INT("rounds", &a.rounds, 1, MAX_ROUNDS, "N",
                 "rounds of in-process then cluster, best of each side counts"),
        FLAG_INT("sft-steps", &a.sft_steps, 1, 1000000, "N", "rlhf-sft steps of the warm start"),
        FLAG_INT("reps", &a.reps, 1, MAX_REPS, "N", "repetitions of each transfer, best counts"),
        FLAG_INT("chunk-bytes", &a.chunk_bytes, 4, (long)WIRE_MAX_CHUNK_BYTES, "N",
                 "snapshot and raw chunk size, multiple of 4"),
        FLAG_INT("port-base", &a.port_base, 1024, 65530, "P",
                 "first of 5 loopback ports for the cluster",
                 .def = "random, free, above 28000\nand below the ephemeral range"),
        FLAG_INT("seed", &a.seed, 0, 1000000, "N",
                 "seed of every process and of the in-process loop"),
        FLAG_DOUBLE("timeout", &a.timeout_s, 1, 86400, "S",
                    "give up on the warm start or cluster after S seconds"),
        FLAG_STRING("bin-dir", &a.bin_dir, "DIR", "where the rlhf-* programs are",
                    .def = "the build dir above this program"),
        FLAG_BOOL("skip-cluster", &a.skip_cluster, "no cluster run"),
        FLAG_BOOL("skip-inprocess", &a.skip_inprocess, "no in-process loop"),
        FLAG_BOOL("skip-snapshot", &a.skip_snapshot,
                  "no snapshot / raw ZeroMQ / memcpy measurement"),
        FLAG_BOOL("keep", &a.keep, "keep the temp dir (logs, metrics, checkpoints)"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "bench_cluster",
        .synopsis = "[OUT.json] [flags]",
        .about = "The cost of distribution: the real cluster's samples/s against the same loop in\n"
                 "one process, the phase shares of that loop, and the time to publish a\n"
                 "SmolLM2-135M-shape snapshot to " STR(
                     N_RECEIVERS) " receivers against "
                                  "memcpy and raw ZeroMQ.\n"
                                  "Writes \"cluster\" into OUT.json (default " DEFAULT_OUT
                                  "), keeping other "
                                  "keys.\n",
        .flags = flags,
        .args = &a.out,
        .n_args_max = 1,
        .is_h_help = true,
        .check = check_args,
        .check_ctx = &a,
    };
    int level = getenv("RLHF_LOG") ? -1 : LOG_WARN;
    int rc = prog_start(&spec, argc, argv, "bench_cluster", &level);
    if (rc != PROG_RUN) return rc;
    if (prog_catch_signals()) return PROG_EXIT_FAIL;
    g_stop = prog_stop_atomic();

    json_t *res = json_object();
    bool    ok = true;
    double  load[3] = {NAN, NAN, NAN};
    /* Other jobs on the machine skew every figure here: say how busy it was. */
    if (getloadavg(load, 3) < 0) fprintf(stderr, "bench_cluster: getloadavg failed\n");
    printf("machine: %ld cores, load average %.2f (1 min) at the start\n",
           sysconf(_SC_NPROCESSORS_ONLN), load[0]);
    json_object_set_new(res, "cores", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_set_new(res, "load_average_start", num(load[0]));
    if (!a.skip_cluster || !a.skip_inprocess) ok = bench_loop(&a, res) && ok;
    if (!a.skip_snapshot && !*g_stop) ok = bench_snapshot(&a, res) && ok;

    json_t *root = json_load_file(a.out, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_object_set_new(root, "cluster", res);
    if (json_dump_file(root, a.out, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "bench_cluster: cannot write %s\n", a.out);
        ok = false;
    } else {
        printf("\nwrote %s\n", a.out);
    }
    json_decref(root);
    return ok && !*g_stop ? PROG_EXIT_OK : PROG_EXIT_FAIL;
}
