#include "reward_server/reward_metrics.h"

#include <stdlib.h>

#include "common/base/err.h"
#include "common/net/metrics.h"

struct RewardMetrics {
    Metrics       *m;
    MetricsFamily *received, *scored, *completions, *unsent, *rejects, *score_s;
};

int reward_metrics_open(const RewardConfig *cfg, RewardMetrics **out)
{
    *out = NULL;
    if (!cfg->metrics_addr || !cfg->metrics_addr[0]) return 0;
    RewardMetrics    *p = xcalloc(1, sizeof *p);
    Metrics          *m = p->m = metrics_new();
    const MetricsType C = METRICS_COUNTER;
    p->received = metrics_family(m, C, "rlhf_reward_groups_received_total",
                                 "frames taken from the samples socket", NULL);
    p->scored = metrics_family(m, C, "rlhf_reward_groups_scored_total",
                               "groups scored and handed to the learner", NULL);
    p->completions = metrics_family(m, C, "rlhf_reward_completions_scored_total",
                                    "completions in the groups scored", NULL);
    p->unsent = metrics_family(m, C, "rlhf_reward_groups_unsent_total",
                               "groups scored but dropped at shutdown", NULL);
    p->rejects = metrics_family(m, C, "rlhf_reward_rejects_total",
                                "frames and groups refused, by reason", "reason");
    p->score_s =
        metrics_family(m, C, "rlhf_reward_score_seconds_total",
                       "time spent scoring groups (divide by groups scored for the mean)", NULL);
    double stale_s = cfg->metrics_stale_s > 0 ? cfg->metrics_stale_s : METRICS_STALE_S;
    int    rc = metrics_serve(m, cfg->metrics_addr, stale_s);
    if (rc) {
        reward_metrics_close(&p);
        return rc;
    }
    *out = p;
    return 0;
}

void reward_metrics_close(RewardMetrics **pp)
{
    if (!pp || !*pp) return;
    metrics_free(&(*pp)->m);
    free(*pp);
    *pp = NULL;
}

void reward_metrics_tick(RewardMetrics *p, const Reward *r)
{
    if (!p) return;
    metrics_tick(p->m);
    RewardStats st;
    reward_stats(r, &st);
    metrics_lock(p->m);
    metrics_set(p->received, NULL, (double)st.groups_received);
    metrics_set(p->scored, NULL, (double)st.groups_scored);
    metrics_set(p->completions, NULL, (double)st.completions_scored);
    metrics_set(p->unsent, NULL, (double)st.groups_unsent);
    for (int k = 0; k < WIRE_REJ_COUNT; k++)
        metrics_set(p->rejects, METRICS_LABELS(wire_reason_name((WireReason)k)),
                    (double)st.rejects[k]);
    metrics_set(p->score_s, NULL, st.score_seconds);
    metrics_unlock(p->m);
}
