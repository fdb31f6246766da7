#include "reward_server/reward_metrics.h"

#include <stdlib.h>

#include "common/base/err.h"
#include "common/net/metrics.h"

struct RewardMetrics {
    Metrics       *m;
    MetricsFamily *received, *scored, *completions, *unsent, *rejects, *score_s;
    MetricsFamily *code_runs, *code_capped, *code_iso, *code_net; /* the code sandbox */
    MetricsFamily *rm_done, *rm_empty, *rm_passes, *rm_rows, *rm_s,
        *rm_refused; /* the reward model */
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
    p->code_runs = metrics_family(m, C, "rlhf_reward_code_runs_total",
                                  "sandboxed code runs, by how they ended", "verdict");
    p->code_capped = metrics_family(m, C, "rlhf_reward_code_output_capped_total",
                                    "sandboxed runs whose output went past the cap", NULL);
    p->code_iso = metrics_family(m, METRICS_GAUGE, "rlhf_reward_code_isolation",
                                 "1 for the sandbox's isolation mode in force (none: no code "
                                 "scorer)",
                                 "mode");
    p->code_net = metrics_family(m, METRICS_GAUGE, "rlhf_reward_code_network_isolated",
                                 "1 when sandboxed programs cannot reach the network, 0 when they "
                                 "can (or there is no code scorer)",
                                 NULL);
    p->rm_done = metrics_family(m, C, "rlhf_reward_rm_completions_total",
                                "completions the reward model scored", NULL);
    p->rm_empty = metrics_family(m, C, "rlhf_reward_rm_empty_total",
                                 "of those, completions that were only the stop token", NULL);
    p->rm_passes = metrics_family(m, C, "rlhf_reward_rm_passes_total",
                                  "forward passes of the reward model", NULL);
    p->rm_rows =
        metrics_family(m, C, "rlhf_reward_rm_tokens_total",
                       "ids through the reward model (a group's prompt once a pass)", NULL);
    p->rm_s = metrics_family(m, C, "rlhf_reward_rm_seconds_total",
                             "wall time of the reward model's passes (divide by completions for "
                             "the mean)",
                             NULL);
    p->rm_refused = metrics_family(m, C, "rlhf_reward_rm_refused_total",
                                   "groups the reward model refused, by the reason of the first "
                                   "bad completion",
                                   "reason");
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
    for (int v = 0; v < SANDBOX_VERDICT_COUNT; v++)
        metrics_set(p->code_runs, METRICS_LABELS(sandbox_verdict_name((SandboxVerdict)v)),
                    (double)st.code.verdicts[v]);
    metrics_set(p->code_capped, NULL, (double)st.code.output_capped);
    for (int i = SANDBOX_ISO_NAMESPACES; i < SANDBOX_ISO_COUNT; i++)
        metrics_set(p->code_iso, METRICS_LABELS(sandbox_iso_names[i]),
                    st.has_code && st.code_isolation == i ? 1.0 : 0.0);
    metrics_set(p->code_net, NULL, st.is_code_net_isolated ? 1.0 : 0.0);
    metrics_set(p->rm_done, NULL, (double)st.rm.completions);
    metrics_set(p->rm_empty, NULL, (double)st.rm.empty);
    metrics_set(p->rm_passes, NULL, (double)st.rm.passes);
    metrics_set(p->rm_rows, NULL, (double)st.rm.rows);
    metrics_set(p->rm_s, NULL, st.rm.seconds);
    for (int k = 0; k < RM_REFUSED_COUNT; k++)
        metrics_set(p->rm_refused, METRICS_LABELS(rm_refusal_names[k]), (double)st.rm.refused[k]);
    metrics_unlock(p->m);
}
