/* rlhf-learner: the RL learner daemon. Hands out leases of arithmetic
 * prompts to actors, trains the policy with GRPO, PPO or a relative (--algo)
 * on the scored groups the reward servers send back, publishes each new
 * version, checkpoints and resumes. The logic lives in learner/learner.c. */
#include <stdio.h>

#include "common/base/err.h"
#include "common/base/prog.h"
#include "common/formats/ckpt.h"
#include "common/nn/lora.h"
#include "common/tasks/score.h"
#include "learner/learner.h"

_Static_assert(sizeof(AlgoKind) == sizeof(int) && sizeof(AggMode) == sizeof(int) &&
                   sizeof(PgRatioLevel) == sizeof(int) && sizeof(AlgoKlPlace) == sizeof(int) &&
                   sizeof(KlKind) == sizeof(int),
               "the choice flags store the index of their name in an int");

static const char *const k_off_on[] = {"off", "on", NULL};
static const char *const k_ratio_levels[] = {"token", "sequence", NULL};
/* Indexed by Rlhf__WeightDtype. */
static const char *const k_snapshot_dtypes[] = {"fp32", "bf16", NULL};
static const char *const k_kl_places[] = {"auto", "loss", "reward", NULL};
static const char *const k_kl_kinds[] = {"auto", "k1", "k2", "k3", NULL};
_Static_assert(PG_RATIO_SEQUENCE == 1 && ALGO_KL_REWARD == 2 && KL_K1 == 1 && KL_K3 == 3,
               "the choice lists follow the enums");

/* What the flags fill: the config, and the on/off choices of its bools. */
typedef struct {
    LearnerConfig *cfg;
    int            adv_std; /* index in k_off_on */
    int            dynamic; /* index in k_off_on */
} MainArgs;

/* --algo is a preset (algo_preset): the fields that define the algorithm
 * take its values, except those whose own flag was given. */
static void apply_algo_preset(const FlagsSpec *spec, MainArgs *m)
{
    static const struct {
        const char *flag;
        unsigned    bit;
    } k_fields[] = {
        {"adv-std", ALGO_PRESET_ADV_STD},          {"agg", ALGO_PRESET_AGG},
        {"ratio-level", ALGO_PRESET_RATIO_LEVEL},  {"clip-low", ALGO_PRESET_CLIP_LOW},
        {"clip-high", ALGO_PRESET_CLIP_HIGH},      {"kl-beta", ALGO_PRESET_KL_BETA},
        {"dynamic-sampling", ALGO_PRESET_DYNAMIC}, {"overlong-buffer", ALGO_PRESET_OVERLONG},
    };
    AlgoConfig *a = &m->cfg->algo;
    unsigned    keep = 0;
    for (size_t i = 0; i < sizeof k_fields / sizeof k_fields[0]; i++)
        if (flags_at(spec, k_fields[i].flag)) keep |= k_fields[i].bit;
    a->adv_divide_std = m->adv_std == 1;
    a->dynamic_sampling = m->dynamic == 1;
    a->max_new_tokens = m->cfg->max_new_tokens;
    algo_preset(a, a->kind, keep);
    /* The logged config shows the choices: keep them in step. */
    m->adv_std = a->adv_divide_std;
    m->dynamic = a->dynamic_sampling;
}

static int check(const FlagsSpec *spec, void *ctx)
{
    MainArgs      *m = ctx;
    LearnerConfig *c = m->cfg;
    /* A pretrained model starts on easier arithmetic than the char task. */
    if (c->model_path && !flags_at(spec, "max-digits")) c->max_digits = 2;
    apply_algo_preset(spec, m);
    char why[200];
    if (learner_config_validate(c, why, sizeof why)) {
        fprintf(stderr, "rlhf-learner: %s\n", why);
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    LearnerConfig cfg = LEARNER_DEFAULTS;
    AlgoConfig   *a = &cfg.algo;
    int           level = -1;
    MainArgs      args = {&cfg, a->adv_divide_std, a->dynamic_sampling};

    Flag flags[] = {
        FLAG_SECTION("Sockets (all bound):"),
        FLAG_STRING("lease", &cfg.lease_ep, "EP", "ROUTER for LeaseRequest/LeaseGrant"),
        FLAG_STRING("results", &cfg.results_ep, "EP", "PULL for ScoredGroup from reward servers"),
        FLAG_STRING("weights", &cfg.weights_ep, "EP", "PUB for WeightAnnounce"),
        FLAG_STRING("snapshot", &cfg.snapshot_ep, "EP", "ROUTER for SnapshotRequest/WeightChunk"),
        FLAG_SECTION("Run:"),
        FLAG_PATH("critic-init", &cfg.critic_init, "DIR",
                  "PPO: start the critic from this reward model (the policy's\n"
                  "shape with a scalar head), as the original RLHF recipe does",
                  .def = "the policy with a new head"),
        FLAG_PATH("init", &cfg.init_dir, "DIR", "warm-start checkpoint, also the KL reference",
                  .def = "none: random init"),
        FLAG_PATH("model", &cfg.model_path, "PATH.gguf",
                  "pretrained GGUF model instead of --init: policy, KL reference\n"
                  "and BPE tokenizer; trains the chat task (arith_chat, operands\n"
                  "of 1..2 digits unless --max-digits)"),
        FLAG_PATH("ckpt-dir", &cfg.ckpt_dir, "DIR", "checkpoint to resume from and save to"),
        FLAG_PATH("metrics", &cfg.metrics_path, "FILE", "one JSON record per step"),
        FLAG_PATH("summary", &cfg.summary_path, "FILE", "JSON summary at the end"),
        FLAG_PATH("trained-log", &cfg.trained_log_path, "FILE",
                  "append one line per trained group (step, epoch, lease, slot,\n"
                  "prompt), written before the step is announced",
                  .def = "none"),
        FLAG_INT("steps", &cfg.steps, 0, 100000000, "N", "optimizer steps = policy versions"),
        FLAG_INT("ckpt-every", &cfg.ckpt_every, 0, 100000000, "N",
                 "checkpoint every N steps, 0 = only at the end"),
        FLAG_INT("ckpt-keep", &cfg.ckpt_keep, 1, CKPT_KEEP_MAX, "N",
                 "checkpoints kept, the newest included (DIR.prev-<n>);\n"
                 "a start falls back to an older one when the newest is damaged"),
        FLAG_INT("eval-n", &cfg.eval_n, 0, 1000000, "N",
                 "held-out problems evaluated at start and end, 0 = none"),
        FLAG_INT("eval-every", &cfg.eval_every, 0, 100000000, "N",
                 "also evaluate every N steps, 0 = off"),
        FLAG_U64("seed", &cfg.seed, "N", "prompts, init and shuffling"),
        FLAG_INT("max-digits", &cfg.max_digits, 1, 6, "N", "operands of 1..N digits"),
        FLAG_SECTION("Data (instead of the built-in task):"),
        FLAG_PATH("data", &cfg.data_path, "FILE.jsonl",
                  "train on these prompts: a JSON object a line, \"prompt\" or\n"
                  "\"messages\", optional \"answer\", \"task\", \"meta\"; shuffled\n"
                  "with --seed each epoch, resumed where the checkpoint was",
                  .def = "none: the built-in task"),
        FLAG_PATH("eval-data", &cfg.eval_data_path, "FILE.jsonl",
                  "held-out prompts: the first --eval-n, greedily, each with\n"
                  "its own scorer",
                  .def = "the built-in split; none with --data"),
        FLAG_STRING("task", &cfg.data_task, "SPEC",
                    "scorer of records without a \"task\": NAME[:W],... of\n" SCORE_RULE_NAMES
                    ", rm",
                    .def = "none: refused"),
        FLAG_INT("data-max-bad", &cfg.data_max_bad, 0, 100, "PCT",
                 "refuse a data file with more than PCT% bad records\n"
                 "(each one logged as FILE:LINE and skipped)"),
        FLAG_SECTION("Leases:"),
        FLAG_INT("batch-groups", &cfg.batch_groups, 1, 4096, "N", "groups per update"),
        FLAG_INT("group", &cfg.group_size, 1, 256, "N", "completions per prompt, G"),
        FLAG_INT("lease-prompts", &cfg.lease_prompts, 1, LEARNER_MAX_LEASE_PROMPTS, "N",
                 "prompts per lease at most"),
        FLAG_INT("lease-timeout-ms", &cfg.lease_timeout_ms, 1, 86400000, "N",
                 "re-issue a lease after this"),
        FLAG_INT("max-staleness", &cfg.max_staleness, 0, 1000, "N",
                 "versions a token may lag; bounds work in flight"),
        FLAG_INT("lease-credit", &cfg.lease_credit, 0, 1 << 24, "N",
                 "groups one peer (connection) may hold in flight; 0 =\n"
                 "min(batch-groups, (max-staleness+1)*batch-groups/2), >= lease-prompts"),
        FLAG_INT("lease-credit-key", &cfg.lease_credit_key, 0, 1 << 24, "N",
                 "with --keys: groups one client key may hold over all its\n"
                 "connections (give each actor its own key); 0 = no limit per key"),
        FLAG_INT("snapshot-queue-mb", &cfg.snapshot_queue_mb, 0, 1 << 20, "N",
                 "MiB of weight snapshots queued for sending, all peers (one\n"
                 "at a time per peer); 0 = the larger of 256 MiB and 4 snapshots"),
        FLAG_CHOICE("snapshot-dtype", &cfg.snapshot_dtype, k_snapshot_dtypes, "T",
                    "element type of weight snapshots on the wire: bf16 (the\n"
                    "fp32 masters rounded once per version; half the bytes) or fp32"),
        FLAG_INT("max-new-tokens", &cfg.max_new_tokens, 1, 1024, "N", "completion length cap"),
        FLAG_FLOAT("reward-min", &cfg.reward_min, -3e38, 3e38, "X",
                   "lowest valid reward; a group with one below it is refused"),
        FLAG_FLOAT("reward-max", &cfg.reward_max, -3e38, 3e38, "X",
                   "highest valid reward; a group with one above it is refused"),
        FLAG_SECTION("Update:"),
        FLAG_CHOICE("algo", (int *)&a->kind, algo_kind_names, "A",
                    "grpo, ppo, reinforce, rloo, dr_grpo, dapo or gspo: sets the\n"
                    "flags marked (preset) unless given; README \"Algorithms\""),
        FLAG_FLOAT("lr", &cfg.lr, 0, 1, "X", "AdamW learning rate"),
        FLAG_INT("warmup", &cfg.lr_warmup_steps, 0, 100000000, "N",
                 "learning-rate warmup in optimizer steps"),
        FLAG_FLOAT("grad-clip", &cfg.grad_clip, 0, 1e6, "X", "global gradient norm clip, 0 = off"),
        FLAG_INT("lora-rank", &cfg.lora_rank, 0, LORA_MAX_RANK, "R",
                 "train LoRA adapters of rank R on a frozen base (AdamW over\n"
                 "the adapters only; actors get merged weights), 0 = full\n"
                 "fine-tuning; adapters usually want a larger --lr"),
        FLAG_FLOAT("lora-alpha", &cfg.lora_alpha, 1e-6, 1e6, "X",
                   "LoRA: adapter updates are scaled by X / R"),
        FLAG_STRING("lora-targets", &cfg.lora_targets, "LIST",
                    "LoRA: projections to adapt, comma list of q,k,v,o,gate,up,\n"
                    "down, or attn, mlp, all"),
        FLAG_FLOAT("kl-beta", &a->kl_beta, 0, 1e3, "X",
                   "KL-to-reference weight (preset); the start with --kl-target"),
        FLAG_CHOICE("kl-place", (int *)&a->kl_place, k_kl_places, "P",
                    "KL in the loss or the reward; auto = reward for ppo, else loss"),
        FLAG_CHOICE("kl-estimator", (int *)&a->kl_kind, k_kl_kinds, "K",
                    "k1, k2 or k3; auto = k1 in the reward, k3 in the loss"),
        FLAG_FLOAT("kl-target", &a->kl_target, 0, 1e6, "X",
                   "adaptive KL coefficient: target KL per completion (nats), 0 = fixed"),
        FLAG_FLOAT("kl-horizon", &a->kl_horizon, 1e-3, 1e12, "N",
                   "adaptive KL: horizon in samples"),
        FLAG_FLOAT("kl-gain", &a->kl_gain, 0, 1e3, "X", "adaptive KL: gain K_beta"),
        FLAG_FLOAT("temperature", &a->temperature, 1e-3, 100, "X",
                   "actors' sampling temperature, > 0"),
        FLAG_FLOAT("clip-low", &a->clip_low, 0, 0.999, "X", "clip eps below 1 (preset)"),
        FLAG_FLOAT("clip-high", &a->clip_high, 0, 1e3, "X", "clip eps above 1 (preset)"),
        FLAG_CHOICE("ratio-level", (int *)&a->ratio_level, k_ratio_levels, "L",
                    "importance ratio per token or per sequence (preset)"),
        FLAG_CHOICE("adv-std", &args.adv_std, k_off_on, "S",
                    "divide group advantages by the group's std (preset)"),
        FLAG_CHOICE("agg", (int *)&a->agg, agg_mode_names, "M",
                    "loss aggregation: token-mean, seq-mean or constant (preset)"),
        FLAG_CHOICE("dynamic-sampling", &args.dynamic, k_off_on, "S",
                    "drop groups whose rewards are all equal, lease more (preset)"),
        FLAG_INT("overlong-buffer", &a->overlong_buffer, 0, 1024, "N",
                 "soft overlong penalty over the last N tokens before\n"
                 "--max-new-tokens, 0 = off (preset)"),
        FLAG_FLOAT("overlong-coef", &a->overlong_coef, 0, 1e3, "X",
                   "overlong penalty at the cap (reward -X)"),
        FLAG_FLOAT("baseline-decay", &a->baseline_decay, 0, 0.999999, "X",
                   "reinforce: running-mean baseline decay per batch"),
        FLAG_FLOAT("ratio-cap", &a->ratio_cap, 0, 1e6, "X",
                   "dual-clip cap on the ratio for A<0, 0 = off"),
        FLAG_INT("epochs", &a->epochs, 1, 100, "N", "passes over each batch"),
        FLAG_INT("minibatch", &a->minibatch_size, 0, 1 << 20, "N",
                 "trajectories per optimizer step, 0 = whole batch"),
        FLAG_FLOAT("entropy-coef", &a->entropy_coef, 0, 10, "X", "entropy bonus"),
        FLAG_BOOL("decoupled", &a->decoupled, "decoupled (proximal) objective"),
        FLAG_SECTION("Model shape without --init (smoke tests):"),
        FLAG_INT("dim", &cfg.dim, 8, 65536, "N", "model width"),
        FLAG_INT("layers", &cfg.n_layers, 1, 1024, "N", "layers"),
        FLAG_INT("heads", &cfg.n_heads, 1, 1024, "N", "attention heads"),
        FLAG_INT("hidden", &cfg.hidden_dim, 1, 1 << 20, "N", "SwiGLU width"),
        FLAG_SECTION("Daemon:"),
        FLAG_INT("poll-ms", &cfg.poll_ms, 1, 10000, "N", "longest wait in the loop"),
        FLAG_STATUS_EVERY(&cfg.status_every_s, "none"),
        FLAG_LOG_LEVEL(&level, .def = "info, or $RLHF_LOG"),
        METRICS_FLAGS(&cfg.metrics_addr, &cfg.metrics_stale_s),
        AUTH_FLAGS(&cfg.auth, "learner"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-learner",
        .about = "RL learner: leases prompts (the built-in arithmetic task, or --data) to actors, "
                 "trains\non scored groups, publishes weights, checkpoints and resumes from "
                 "--ckpt-dir.\nPaths may be '' to disable.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &args,
    };
    int rc = prog_start_stoppable(&spec, argc, argv, "learner", &level);
    if (rc != PROG_RUN) return rc;
    Learner *l = learner_new(&cfg);
    if (!l) return PROG_EXIT_FAIL;
    rc = learner_run(l, prog_stop_atomic());
    learner_free(&l);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
