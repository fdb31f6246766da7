/* rlhf-reward: the reward server. Binds a PULL for SampledGroups from actors,
 * scores each completion with the scorer its prompt's task names (or --scorer) on worker
 * threads and pushes ScoredGroups to the learner's results endpoint. Several
 * servers may run; each binds its own samples endpoint and actors connect
 * to all of them. */
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/net/endpoints.h"
#include "common/net/metrics.h"
#include "common/tasks/score.h"
#include "reward_server/reward.h"

int main(int argc, char **argv)
{
    RewardConfig cfg = {.samples = ENDPOINT_SAMPLES,
                        .results = ENDPOINT_RESULTS,
                        .threads = 2,
                        .id = "reward-0",
                        .format_bonus = 0.0f,
                        .model_path = NULL,
                        .scorer = NULL,
                        .status_every_s = 5.0,
                        .metrics_addr = NULL,
                        .metrics_stale_s = METRICS_STALE_S,
                        .auth = AUTH_DEFAULTS,
                        .code = {.sandbox = SANDBOX_DEFAULTS},
                        .reward_model = NULL,
                        .rm_max_tokens = RM_DEFAULT_MAX_TOKENS,
                        .rm_streams = 0};
    int          level = LOG_INFO;
    /* One sandboxed run per CPU. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.code.sandbox.workers = (int)(cpus < 1                     ? 1
                                     : cpus > SANDBOX_MAX_WORKERS ? SANDBOX_MAX_WORKERS
                                                                  : cpus);
    /* One reward-model pass per CPU, each on one BLAS thread. */
    cfg.rm_streams = (int)(cpus < 1 ? 1 : cpus > RM_MAX_STREAMS ? RM_MAX_STREAMS : cpus);

    Flag flags[] = {
        FLAG_STRING("samples", &cfg.samples, "EP", "endpoint to bind for actors' samples"),
        FLAG_STRING("results", &cfg.results, "EP", "learner's results endpoint to connect"),
        FLAG_INT("threads", &cfg.threads, 1, REWARD_MAX_THREADS, "N", "scoring threads"),
        FLAG_STRING("id", &cfg.id, "NAME", "this server's name in logs"),
        FLAG_FLOAT("format-bonus", &cfg.format_bonus, 0, 1, "X",
                   "arith: reward added for an integer answer, 0..1"),
        FLAG_STRING("model", &cfg.model_path, "PATH.gguf",
                    "decode with this model's BPE tokenizer (the chat task)\n"
                    "instead of the char tokenizer",
                    .def = "none: the char tokenizer"),
        FLAG_STRING("scorer", &cfg.scorer, "SPEC",
                    "score every group with SPEC, whatever its prompt's task:\n"
                    "NAME[:W],... of " SCORE_RULE_NAMES ", rm",
                    .def = "each prompt's task"),
        FLAG_SECTION("Reward model (scorer \"rm\", README \"A reward model in the reward "
                     "server\"):"),
        FLAG_PATH("reward-model", &cfg.reward_model, "DIR",
                  "host this reward model as the scorer \"rm\": a checkpoint\n"
                  "with the scalar head (ours, or transformers'\n"
                  "LlamaForSequenceClassification with one label); the reward is\n"
                  "its value at the last id of prompt + completion as sampled.\n"
                  "Combine with rules: --scorer rm:1,format_answer_tag:0.1",
                  .def = "none: no \"rm\" scorer"),
        FLAG_INT("reward-model-tokens", &cfg.rm_max_tokens, 1, 1 << 20, "N",
                 "ids in one forward pass at most (its memory): a group's\n"
                 "completions go through together, the prompt once"),
        FLAG_INT("reward-model-streams", &cfg.rm_streams, 1, RM_MAX_STREAMS, "N",
                 "forward passes at once, each a group on one core (OpenBLAS\n"
                 "then runs one thread a product); 1 = one pass at a time on\n"
                 "every core. Set --threads to at least N",
                 .def = "one per CPU"),
        FLAG_SECTION("Code rewards (task \"code\", README \"Code rewards in a sandbox\"):"),
        FLAG_INT("code-workers", &cfg.code.sandbox.workers, 0, SANDBOX_MAX_WORKERS, "N",
                 "sandboxed runs at once; 0 = no \"code\" scorer.\n"
                 "Set --threads to at least N",
                 .def = "one per CPU"),
        FLAG_BOOL("code-all-or-nothing", &cfg.code.is_all_or_nothing,
                  "reward 1 when every test passes, else 0\n(instead of the fraction passed)"),
        FLAG_INT("code-timeout-ms", &cfg.code.sandbox.timeout_ms, 10, 3600000, "MS",
                 "wall clock of one run, then its process group is killed"),
        FLAG_INT("code-cpu-s", &cfg.code.sandbox.cpu_s, 1, 3600, "S", "CPU seconds of one run"),
        FLAG_INT("code-mem-mb", &cfg.code.sandbox.mem_mb, 16, 1 << 20, "MB",
                 "address space of one run"),
        FLAG_CHOICE("code-isolation", &cfg.code.sandbox.isolation, sandbox_iso_names, "MODE",
                    "namespaces, seccomp, rlimits, or auto: the strongest that works"),
        FLAG_STRING("code-python", &cfg.code.sandbox.python, "PATH", "the interpreter"),
        FLAG_INT("code-uid", &cfg.code.sandbox.uid, 1, 0x7ffffffe, "UID",
                 "when run as root: the uid (and gid) programs run as"),
        FLAG_STATUS_EVERY(&cfg.status_every_s, "off"),
        FLAG_LOG_LEVEL(&level),
        METRICS_FLAGS(&cfg.metrics_addr, &cfg.metrics_stale_s),
        AUTH_FLAGS(&cfg.auth, "reward"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-reward",
        .about = "Reward server: scores SampledGroups from actors, sends ScoredGroups to the "
                 "learner.\n",
        .flags = flags,
    };
    int rc = prog_start_stoppable(&spec, argc, argv, "reward", &level);
    if (rc != PROG_RUN) return rc;
    cfg.code.sandbox.gid = cfg.code.sandbox.uid;
    /* Asked for by name: a sandbox that cannot start fails the start. */
    cfg.code.is_required = flags_at(&spec, "code-workers") > 0 && cfg.code.sandbox.workers > 0;
    Reward *r = reward_new(&cfg);
    if (!r) return PROG_EXIT_FAIL;
    rc = reward_run(r, prog_stop_atomic());
    reward_free(&r);
    log_info("shut down");
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
