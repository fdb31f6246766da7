/* rlhf-actor: the rollout actor daemon. Fetches the learner's weights,
 * asks it for leases, samples G completions per prompt and pushes the
 * groups to the reward servers, following weight updates, until SIGINT or
 * SIGTERM. The logic lives in actor/actor.c. */
#include <stdio.h>
#include <string.h>

#include "actor/actor.h"
#include "common/base/err.h"
#include "common/base/prog.h"

/* One --reward flag: comma-separated endpoints, appended to those of the
 * flags before it (the default is replaced by the first). The strings
 * point into argv, which outlives the actor. */
static int parse_rewards(const char *text, void *ptr)
{
    static bool  is_default = true;
    ActorConfig *c = ptr;
    if (is_default) {
        c->n_reward = 0;
        is_default = false;
    }
    char *list = (char *)text;
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        if (c->n_reward == ACTOR_MAX_REWARD) {
            fprintf(stderr, "rlhf-actor: --reward: more than %d endpoints\n", ACTOR_MAX_REWARD);
            return ERR_ARG;
        }
        c->reward_eps[c->n_reward++] = ep;
    }
    if (c->n_reward == 0) {
        fprintf(stderr, "rlhf-actor: --reward: no endpoint given\n");
        return ERR_ARG;
    }
    return 0;
}

static void show_rewards(const void *ptr, char *out, size_t cap)
{
    const ActorConfig *c = ptr;
    size_t             at = 0;
    out[0] = '\0';
    for (int i = 0; i < c->n_reward && at < cap; i++) {
        int n = snprintf(out + at, cap - at, "%s%s", i ? "," : "", c->reward_eps[i]);
        if (n < 0) break;
        at += (size_t)n;
    }
}

int main(int argc, char **argv)
{
    ActorConfig cfg = ACTOR_DEFAULTS;
    int         level = -1;

    Flag flags[] = {
        FLAG_STRING("lease", &cfg.lease_ep, "EP", "learner lease ROUTER to connect to"),
        FLAG_STRING("weights", &cfg.weights_ep, "EP", "learner weight announcements (PUB)"),
        FLAG_STRING("snapshot", &cfg.snapshot_ep, "EP", "learner snapshot ROUTER"),
        FLAG_FUNC("reward", &cfg, parse_rewards, show_rewards, "EP[,EP...]",
                  "reward server(s) to push groups to;\nmay be repeated"),
        FLAG_INT("reward-resolve-ms", &cfg.reward_resolve_ms, 0, 3600000, "N",
                 "connect to every address of a --reward host name (a scaled\n"
                 "service behind one DNS name) and re-resolve every N ms; 0 = off"),
        FLAG_STRING("id", &cfg.id, "NAME", "actor id", .lo = 1, .hi = ACTOR_MAX_ID - 1,
                    .def = "actor-<pid>"),
        FLAG_INT("batch", &cfg.batch, 1, 4096, "N", "sequences generated together at most"),
        FLAG_INT("cross-lease", &cfg.cross_lease, 0, 1, "0|1",
                 "1: ask for the next lease while one runs; its prompts take\n"
                 "slots as the running sequences end; 0: one lease at a time"),
        FLAG_U64("seed", &cfg.seed, "S", "sampling seed, 0 = derived from the id"),
        FLAG_CHOICE("decode-weights", &cfg.decode_weights, kern_type_names, "T",
                    "precision the snapshot is decoded in: bf16 or fp16 read\n"
                    "half the bytes per token (log-probs then differ from the\n"
                    "learner's by the rounding); fp32 decodes it as sent"),
        FLAG_STATUS_EVERY(&cfg.status_every_s, "none"),
        FLAG_INT("reply-timeout-ms", &cfg.reply_timeout_ms, 10, 3600000, "N",
                 "re-send an unanswered lease request after N ms"),
        FLAG_INT("snapshot-timeout-ms", &cfg.snapshot_timeout_ms, 10, 3600000, "N",
                 "ask for the snapshot again when no chunk came for N ms"),
        FLAG_LOG_LEVEL(&level, .def = "info, or $RLHF_LOG"),
        METRICS_FLAGS(&cfg.metrics_addr, &cfg.metrics_stale_s),
        AUTH_FLAGS(&cfg.auth, "actor"),
        FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-actor",
        .about = "Rollout actor: fetches the learner's weights, asks it for leases, samples G\n"
                 "completions per prompt and pushes them to the reward servers.\n",
        .flags = flags,
    };
    int rc = prog_start_stoppable(&spec, argc, argv, "actor", &level);
    if (rc != PROG_RUN) return rc;
    Actor *a = actor_new(&cfg);
    if (!a) return PROG_EXIT_FAIL;
    rc = actor_run(a, prog_stop_atomic());
    actor_free(&a);
    return rc ? PROG_EXIT_FAIL : PROG_EXIT_OK;
}
