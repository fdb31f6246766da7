/* rlhf-reward: the reward server. Binds a PULL for SampledGroups from actors,
 * scores each completion (built-in "arith" scorer by default) on worker
 * threads and pushes ScoredGroups to the learner's results endpoint. Several
 * servers may run; each binds its own samples endpoint and actors connect
 * to all of them. */
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/net/endpoints.h"
#include "common/net/metrics.h"
#include "reward_server/reward.h"

int main(int argc, char **argv)
{
    RewardConfig cfg = {.samples = ENDPOINT_SAMPLES,
                        .results = ENDPOINT_RESULTS,
                        .threads = 2,
                        .id = "reward-0",
                        .format_bonus = 0.0f,
                        .model_path = NULL,
                        .status_every_s = 5.0,
                        .metrics_addr = NULL,
                        .metrics_stale_s = METRICS_STALE_S,
                        .auth = AUTH_DEFAULTS};
    int          level = LOG_INFO;

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
    Reward *r = reward_new(&cfg);
    if (!r) return PROG_EXIT_FAIL;
    rc = reward_run(r, prog_stop_atomic());
    reward_free(&r);
    log_info("shut down");
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
