/* rlhf-learner: the RL learner daemon. Hands out leases of arithmetic
 * prompts to actors, trains the policy with GRPO or PPO on the scored groups
 * the reward servers send back, publishes each new version, checkpoints and
 * resumes. The logic lives in learner/learner.c. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "learner/learner.h"

static atomic_int g_stop;

static void on_signal(int sig)
{
    (void)sig;
    if (atomic_load(&g_stop)) _exit(130); /* a second signal forces an immediate exit */
    atomic_store(&g_stop, 1);
}

static const char *str_or(const char *s, const char *none)
{
    return s ? s : none;
}

static void usage(FILE *f, const char *prog)
{
    const LearnerConfig d = LEARNER_DEFAULTS;
    const AlgoConfig   *a = &d.algo;
    fprintf(f,
            "usage: %s [flags]\n"
            "RL learner: leases arithmetic prompts to actors, trains on scored groups, publishes\n"
            "weights, checkpoints and resumes from --ckpt-dir. Paths may be '' to disable.\n"
            "Sockets (all bound):\n"
            "  --lease EP           ROUTER for LeaseRequest/LeaseGrant (default %s)\n"
            "  --results EP         PULL for ScoredGroup from reward servers (default %s)\n"
            "  --weights EP         PUB for WeightAnnounce (default %s)\n"
            "  --snapshot EP        ROUTER for SnapshotRequest/WeightChunk (default %s)\n"
            "Run:\n"
            "  --init DIR           warm-start checkpoint, also the KL reference (default: random "
            "init)\n"
            "  --model PATH.gguf    pretrained GGUF model instead of --init: policy, KL reference\n"
            "                       and BPE tokenizer; trains the chat task (arith_chat, operands\n"
            "                       of 1..2 digits unless --max-digits)\n"
            "  --ckpt-dir DIR       checkpoint to resume from and save to (default %s)\n"
            "  --metrics FILE       one JSON record per step (default %s)\n"
            "  --summary FILE       JSON summary at the end (default %s)\n"
            "  --steps N            optimizer steps = policy versions (default %d)\n"
            "  --ckpt-every N       checkpoint every N steps, 0 = only at the end (default %d)\n"
            "  --eval-n N           held-out problems evaluated at start and end, 0 = none "
            "(default %d)\n"
            "  --eval-every N       also evaluate every N steps, 0 = off (default %d)\n"
            "  --seed N             prompts, init and shuffling (default %llu)\n"
            "  --max-digits N       operands of 1..N digits (default %d)\n"
            "Leases:\n"
            "  --batch-groups N     groups per update (default %d)\n"
            "  --group N            completions per prompt, G (default %d)\n"
            "  --lease-prompts N    prompts per lease at most (default %d)\n"
            "  --lease-timeout-ms N re-issue a lease after this (default %d)\n"
            "  --max-staleness N    versions a token may lag; bounds work in flight (default %d)\n"
            "  --max-new-tokens N   completion length cap (default %d)\n"
            "Update:\n"
            "  --algo A             grpo or ppo (default %s)\n"
            "  --lr X               AdamW learning rate (default %g)\n"
            "  --warmup N           learning-rate warmup in optimizer steps (default %d)\n"
            "  --grad-clip X        global gradient norm clip, 0 = off (default %g)\n"
            "  --kl-beta X          KL-to-reference weight (default %g)\n"
            "  --temperature X      actors' sampling temperature, > 0 (default %g)\n"
            "  --clip-low X         PPO clip eps below 1 (default %g)\n"
            "  --clip-high X        PPO clip eps above 1 (default %g)\n"
            "  --ratio-cap X        dual-clip cap on the ratio for A<0, 0 = off (default %g)\n"
            "  --epochs N           passes over each batch (default %d)\n"
            "  --minibatch N        trajectories per optimizer step, 0 = whole batch (default "
            "%d)\n"
            "  --entropy-coef X     entropy bonus (default %g)\n"
            "  --decoupled          decoupled (proximal) objective (default off)\n"
            "Model shape without --init (smoke tests):\n"
            "  --dim N --layers N --heads N --hidden N   (defaults %d, %d, %d, %d)\n"
            "Daemon:\n"
            "  --poll-ms N          longest wait in the loop (default %d)\n"
            "  --status-every S     seconds between status lines, 0 = none (default %g)\n"
            "  --log-level L        error, warn, info or debug (default info, or $RLHF_LOG)\n"
            "  --help               this text\n",
            prog, d.lease_ep, d.results_ep, d.weights_ep, d.snapshot_ep, str_or(d.ckpt_dir, "''"),
            str_or(d.metrics_path, "''"), str_or(d.summary_path, "''"), d.steps, d.ckpt_every,
            d.eval_n, d.eval_every, (unsigned long long)d.seed, d.max_digits, d.batch_groups,
            d.group_size, d.lease_prompts, d.lease_timeout_ms, d.max_staleness, d.max_new_tokens,
            a->kind == ALGO_PPO ? "ppo" : "grpo", (double)d.lr, d.lr_warmup_steps,
            (double)d.grad_clip, (double)a->kl_beta, (double)a->temperature, (double)a->clip_low,
            (double)a->clip_high, (double)a->ratio_cap, a->epochs, a->minibatch_size,
            (double)a->entropy_coef, d.dim, d.n_layers, d.n_heads, d.hidden_dim, d.poll_ms,
            d.status_every_s);
}

static const char *path_arg(const char *s)
{
    return *s ? s : NULL;
}

static int parse_args(int argc, char **argv, LearnerConfig *c, int *log_level)
{
    enum {
        O_LEASE = 256,
        O_RESULTS,
        O_WEIGHTS,
        O_SNAPSHOT,
        O_INIT,
        O_MODEL,
        O_CKPT,
        O_METRICS,
        O_SUMMARY,
        O_STEPS,
        O_CKPT_EVERY,
        O_EVAL_N,
        O_EVAL_EVERY,
        O_SEED,
        O_DIGITS,
        O_BATCH,
        O_GROUP,
        O_LEASE_PROMPTS,
        O_LEASE_TIMEOUT,
        O_STALENESS,
        O_MAX_NEW,
        O_ALGO,
        O_LR,
        O_WARMUP,
        O_GRAD_CLIP,
        O_KL,
        O_TEMPERATURE,
        O_CLIP_LOW,
        O_CLIP_HIGH,
        O_RATIO_CAP,
        O_EPOCHS,
        O_MINIBATCH,
        O_ENTROPY,
        O_DECOUPLED,
        O_DIM,
        O_LAYERS,
        O_HEADS,
        O_HIDDEN,
        O_POLL,
        O_LOG_LEVEL,
        O_STATUS,
        O_HELP
    };
    static const struct option opts[] = {
        {"lease", required_argument, 0, O_LEASE},
        {"results", required_argument, 0, O_RESULTS},
        {"weights", required_argument, 0, O_WEIGHTS},
        {"snapshot", required_argument, 0, O_SNAPSHOT},
        {"init", required_argument, 0, O_INIT},
        {"model", required_argument, 0, O_MODEL},
        {"ckpt-dir", required_argument, 0, O_CKPT},
        {"metrics", required_argument, 0, O_METRICS},
        {"summary", required_argument, 0, O_SUMMARY},
        {"steps", required_argument, 0, O_STEPS},
        {"ckpt-every", required_argument, 0, O_CKPT_EVERY},
        {"eval-n", required_argument, 0, O_EVAL_N},
        {"eval-every", required_argument, 0, O_EVAL_EVERY},
        {"seed", required_argument, 0, O_SEED},
        {"max-digits", required_argument, 0, O_DIGITS},
        {"batch-groups", required_argument, 0, O_BATCH},
        {"group", required_argument, 0, O_GROUP},
        {"lease-prompts", required_argument, 0, O_LEASE_PROMPTS},
        {"lease-timeout-ms", required_argument, 0, O_LEASE_TIMEOUT},
        {"max-staleness", required_argument, 0, O_STALENESS},
        {"max-new-tokens", required_argument, 0, O_MAX_NEW},
        {"algo", required_argument, 0, O_ALGO},
        {"lr", required_argument, 0, O_LR},
        {"warmup", required_argument, 0, O_WARMUP},
        {"grad-clip", required_argument, 0, O_GRAD_CLIP},
        {"kl-beta", required_argument, 0, O_KL},
        {"temperature", required_argument, 0, O_TEMPERATURE},
        {"clip-low", required_argument, 0, O_CLIP_LOW},
        {"clip-high", required_argument, 0, O_CLIP_HIGH},
        {"ratio-cap", required_argument, 0, O_RATIO_CAP},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"minibatch", required_argument, 0, O_MINIBATCH},
        {"entropy-coef", required_argument, 0, O_ENTROPY},
        {"decoupled", no_argument, 0, O_DECOUPLED},
        {"dim", required_argument, 0, O_DIM},
        {"layers", required_argument, 0, O_LAYERS},
        {"heads", required_argument, 0, O_HEADS},
        {"hidden", required_argument, 0, O_HIDDEN},
        {"poll-ms", required_argument, 0, O_POLL},
        {"status-every", required_argument, 0, O_STATUS},
        {"log-level", required_argument, 0, O_LOG_LEVEL},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    *c = LEARNER_DEFAULTS;
    flags_set_prog("rlhf-learner");
    AlgoConfig *a = &c->algo;
    int         opt;
    bool        digits_given = false;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case O_LEASE:
            c->lease_ep = optarg;
            break;
        case O_RESULTS:
            c->results_ep = optarg;
            break;
        case O_WEIGHTS:
            c->weights_ep = optarg;
            break;
        case O_SNAPSHOT:
            c->snapshot_ep = optarg;
            break;
        case O_INIT:
            c->init_dir = path_arg(optarg);
            break;
        case O_MODEL:
            c->model_path = path_arg(optarg);
            break;
        case O_CKPT:
            c->ckpt_dir = path_arg(optarg);
            break;
        case O_METRICS:
            c->metrics_path = path_arg(optarg);
            break;
        case O_SUMMARY:
            c->summary_path = path_arg(optarg);
            break;
        case O_STEPS:
            rc = flags_int("steps", optarg, 0, 100000000, &c->steps);
            break;
        case O_CKPT_EVERY:
            rc = flags_int("ckpt-every", optarg, 0, 100000000, &c->ckpt_every);
            break;
        case O_EVAL_N:
            rc = flags_int("eval-n", optarg, 0, 1000000, &c->eval_n);
            break;
        case O_EVAL_EVERY:
            rc = flags_int("eval-every", optarg, 0, 100000000, &c->eval_every);
            break;
        case O_SEED:
            rc = flags_u64("seed", optarg, &c->seed);
            break;
        case O_DIGITS:
            rc = flags_int("max-digits", optarg, 1, 6, &c->max_digits);
            digits_given = true;
            break;
        case O_BATCH:
            rc = flags_int("batch-groups", optarg, 1, 4096, &c->batch_groups);
            break;
        case O_GROUP:
            rc = flags_int("group", optarg, 1, 256, &c->group_size);
            break;
        case O_LEASE_PROMPTS:
            rc =
                flags_int("lease-prompts", optarg, 1, LEARNER_MAX_LEASE_PROMPTS, &c->lease_prompts);
            break;
        case O_LEASE_TIMEOUT:
            rc = flags_int("lease-timeout-ms", optarg, 1, 86400000, &c->lease_timeout_ms);
            break;
        case O_STALENESS:
            rc = flags_int("max-staleness", optarg, 0, 1000, &c->max_staleness);
            break;
        case O_MAX_NEW:
            rc = flags_int("max-new-tokens", optarg, 1, 1024, &c->max_new_tokens);
            break;
        case O_ALGO:
            if (!strcmp(optarg, "grpo"))
                a->kind = ALGO_GRPO;
            else if (!strcmp(optarg, "ppo"))
                a->kind = ALGO_PPO;
            else {
                fprintf(stderr, "rlhf-learner: --algo '%s': expected grpo or ppo\n", optarg);
                rc = ERR_ARG;
            }
            break;
        case O_LR:
            rc = flags_float("lr", optarg, 0, 1, &c->lr);
            break;
        case O_WARMUP:
            rc = flags_int("warmup", optarg, 0, 100000000, &c->lr_warmup_steps);
            break;
        case O_GRAD_CLIP:
            rc = flags_float("grad-clip", optarg, 0, 1e6, &c->grad_clip);
            break;
        case O_KL:
            rc = flags_float("kl-beta", optarg, 0, 1e3, &a->kl_beta);
            break;
        case O_TEMPERATURE:
            rc = flags_float("temperature", optarg, 1e-3, 100, &a->temperature);
            break;
        case O_CLIP_LOW:
            rc = flags_float("clip-low", optarg, 0, 0.999, &a->clip_low);
            break;
        case O_CLIP_HIGH:
            rc = flags_float("clip-high", optarg, 0, 1e3, &a->clip_high);
            break;
        case O_RATIO_CAP:
            rc = flags_float("ratio-cap", optarg, 0, 1e6, &a->ratio_cap);
            break;
        case O_EPOCHS:
            rc = flags_int("epochs", optarg, 1, 100, &a->epochs);
            break;
        case O_MINIBATCH:
            rc = flags_int("minibatch", optarg, 0, 1 << 20, &a->minibatch_size);
            break;
        case O_ENTROPY:
            rc = flags_float("entropy-coef", optarg, 0, 10, &a->entropy_coef);
            break;
        case O_DECOUPLED:
            a->decoupled = true;
            break;
        case O_DIM:
            rc = flags_int("dim", optarg, 8, 65536, &c->dim);
            break;
        case O_LAYERS:
            rc = flags_int("layers", optarg, 1, 1024, &c->n_layers);
            break;
        case O_HEADS:
            rc = flags_int("heads", optarg, 1, 1024, &c->n_heads);
            break;
        case O_HIDDEN:
            rc = flags_int("hidden", optarg, 1, 1 << 20, &c->hidden_dim);
            break;
        case O_POLL:
            rc = flags_int("poll-ms", optarg, 1, 10000, &c->poll_ms);
            break;
        case O_STATUS:
            rc = flags_double("status-every", optarg, 0, 86400, &c->status_every_s);
            break;
        case O_LOG_LEVEL:
            rc = flags_log_level("log-level", optarg, log_level);
            break;
        case O_HELP:
            usage(stdout, argv[0]);
            exit(0);
        default:
            usage(stderr, argv[0]);
            return ERR_ARG;
        }
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "rlhf-learner: unexpected argument '%s'\n", argv[optind]);
        return ERR_ARG;
    }
    /* A pretrained model starts on easier arithmetic than the char task. */
    if (c->model_path && !digits_given) c->max_digits = 2;
    char why[200];
    if (learner_config_validate(c, why, sizeof why)) {
        fprintf(stderr, "rlhf-learner: %s\n", why);
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    LearnerConfig cfg;
    int           log_level = -1;
    if (parse_args(argc, argv, &cfg, &log_level)) return 2;
    log_init("learner", log_level);
    const AlgoConfig *a = &cfg.algo;
    log_info("config: lease=%s results=%s weights=%s snapshot=%s init=%s model=%s ckpt-dir=%s "
             "metrics=%s "
             "summary=%s steps=%d batch-groups=%d group=%d lease-prompts=%d lease-timeout-ms=%d "
             "max-staleness=%d max-new-tokens=%d algo=%s lr=%g warmup=%d grad-clip=%g kl-beta=%g "
             "temperature=%g "
             "clip=%g/%g ratio-cap=%g epochs=%d minibatch=%d entropy-coef=%g decoupled=%d "
             "seed=%llu max-digits=%d eval-n=%d eval-every=%d ckpt-every=%d",
             cfg.lease_ep, cfg.results_ep, cfg.weights_ep, cfg.snapshot_ep,
             str_or(cfg.init_dir, "-"), str_or(cfg.model_path, "-"), str_or(cfg.ckpt_dir, "-"),
             str_or(cfg.metrics_path, "-"), str_or(cfg.summary_path, "-"), cfg.steps,
             cfg.batch_groups, cfg.group_size, cfg.lease_prompts, cfg.lease_timeout_ms,
             cfg.max_staleness, cfg.max_new_tokens, a->kind == ALGO_PPO ? "ppo" : "grpo",
             (double)cfg.lr, cfg.lr_warmup_steps, (double)cfg.grad_clip, (double)a->kl_beta,
             (double)a->temperature, (double)a->clip_low, (double)a->clip_high,
             (double)a->ratio_cap, a->epochs, a->minibatch_size, (double)a->entropy_coef,
             a->decoupled, (unsigned long long)cfg.seed, cfg.max_digits, cfg.eval_n, cfg.eval_every,
             cfg.ckpt_every);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    Learner *l = learner_new(&cfg);
    if (!l) return 1;
    int rc = learner_run(l, &g_stop);
    learner_free(&l);
    return rc ? 1 : 0;
}
