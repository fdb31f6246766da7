#include "learner/learner_metrics.h"

#include <stdlib.h>
#include <time.h>

#include "common/base/err.h"
#include "common/net/metrics.h"

#define REFRESH_S 0.25 /* live values are copied at most this often */

struct LearnerMetrics {
    Metrics       *m;
    double         t_refresh;
    MetricsFamily *step, *version, *epoch;
    MetricsFamily *groups_total, *groups, *leases_total, *leases_expired, *grants_empty;
    MetricsFamily *grants_credit;
    MetricsFamily *rejects;
    MetricsFamily *lease_credit, *lease_holders, *lease_held_max;
    MetricsFamily *snap_queued, *snap_budget, *snap_transfers;
    MetricsFamily *samples_total, *tokens_total, *samples_per_s;
    MetricsFamily *stale_mean, *stale_max;
    MetricsFamily *snap_bytes, *snaps_served, *snap_sent_bytes, *snap_send_s, *publish_time;
    MetricsFamily *reward, *accuracy, *kl, *kl_beta, *entropy, *loss, *grad_norm, *lr, *step_s;
    MetricsFamily *groups_flat;
};

/* The lease accounting as metrics.jsonl writes it. */
static void set_leases(LearnerMetrics *p, const Learner *l, const LeaseCounters *c)
{
    metrics_set(p->groups_total, METRICS_LABELS("issued"), (double)c->issued);
    metrics_set(p->groups_total, METRICS_LABELS("trained"), (double)c->trained);
    metrics_set(p->groups_total, METRICS_LABELS("dropped_stale"), (double)c->dropped_stale);
    metrics_set(p->groups_total, METRICS_LABELS("reissued"), (double)c->reissued);
    metrics_set(p->groups_total, METRICS_LABELS("failed"), (double)c->failed);
    /* Groups of another epoch included, as in the record. */
    metrics_set(p->groups_total, METRICS_LABELS("duplicates"),
                (double)(c->duplicates + l->dup_epoch));
    metrics_set(p->groups, METRICS_LABELS("in_flight"), (double)c->in_flight);
    metrics_set(p->groups, METRICS_LABELS("buffered"), (double)c->buffered);
    metrics_set(p->leases_total, NULL, (double)c->leases);
    metrics_set(p->leases_expired, NULL, (double)c->leases_expired);
}

int learner_metrics_open(Learner *l)
{
    const char *addr = l->cfg.metrics_addr;
    if (!addr || !addr[0]) return 0;
    LearnerMetrics   *p = xcalloc(1, sizeof *p);
    Metrics          *m = p->m = metrics_new();
    const MetricsType C = METRICS_COUNTER, G = METRICS_GAUGE;
    p->step = metrics_family(m, G, "rlhf_learner_step", "optimizer steps taken (the run's)", NULL);
    p->version =
        metrics_family(m, G, "rlhf_learner_policy_version", "current policy version", NULL);
    p->epoch =
        metrics_family(m, G, "rlhf_learner_epoch", "restart epoch of this incarnation", NULL);
    p->groups_total = metrics_family(
        m, C, "rlhf_learner_groups_total",
        "groups by final lease state at the last step: issued = trained + dropped_stale + "
        "reissued + failed + rlhf_learner_groups{in_flight,buffered}; duplicates are extra",
        "state");
    p->groups = metrics_family(m, G, "rlhf_learner_groups",
                               "groups in flight or buffered at the last step", "state");
    p->leases_total =
        metrics_family(m, C, "rlhf_learner_leases_total", "leases granted (last step)", NULL);
    p->leases_expired = metrics_family(m, C, "rlhf_learner_leases_expired_total",
                                       "leases expired (last step)", NULL);
    p->grants_empty = metrics_family(m, C, "rlhf_learner_grants_empty_total",
                                     "lease requests answered without work", NULL);
    p->grants_credit = metrics_family(
        m, C, "rlhf_learner_grants_credit_total",
        "lease requests answered without work because the peer held its lease credit "
        "(flow control: it asks again in 50 ms)",
        NULL);
    p->rejects = metrics_family(m, C, "rlhf_learner_rejects_total",
                                "frames and groups refused, by socket and reason", "socket,reason");
    p->lease_credit = metrics_family(m, G, "rlhf_learner_lease_credit",
                                     "groups one peer (connection) may hold in flight", NULL);
    p->lease_holders =
        metrics_family(m, G, "rlhf_learner_lease_holders",
                       "peers (connections, client keys) holding groups in flight", NULL);
    p->lease_held_max = metrics_family(m, G, "rlhf_learner_lease_held_max",
                                       "the most groups in flight one peer holds", NULL);
    p->snap_queued =
        metrics_family(m, G, "rlhf_learner_snapshot_queued_bytes",
                       "bytes of snapshots queued for peers, not yet on the wire", NULL);
    p->snap_budget = metrics_family(m, G, "rlhf_learner_snapshot_queue_budget_bytes",
                                    "the most snapshot bytes that may be queued at once", NULL);
    p->snap_transfers = metrics_family(m, G, "rlhf_learner_snapshot_transfers",
                                       "snapshot transfers queued (one per peer at most)", NULL);
    p->samples_total = metrics_family(m, C, "rlhf_learner_samples_total",
                                      "completions trained on by this incarnation", NULL);
    p->tokens_total = metrics_family(m, C, "rlhf_learner_tokens_total",
                                     "completion tokens trained on by this incarnation", NULL);
    p->samples_per_s = metrics_family(m, G, "rlhf_learner_samples_per_second",
                                      "completions trained per second since the loop began", NULL);
    p->stale_mean = metrics_family(m, G, "rlhf_learner_staleness_mean",
                                   "mean token staleness of the last batch, versions", NULL);
    p->stale_max = metrics_family(m, G, "rlhf_learner_staleness_max",
                                  "largest token staleness of the last batch, versions", NULL);
    p->snap_bytes = metrics_family(m, G, "rlhf_learner_snapshot_bytes",
                                   "bytes of one weight snapshot (the parameters)", NULL);
    p->snaps_served = metrics_family(m, C, "rlhf_learner_snapshots_served_total",
                                     "weight snapshots sent to actors", NULL);
    p->snap_sent_bytes = metrics_family(m, C, "rlhf_learner_snapshot_sent_bytes_total",
                                        "bytes of weight snapshots sent to actors", NULL);
    p->snap_send_s = metrics_family(m, G, "rlhf_learner_snapshot_send_seconds",
                                    "time the last snapshot took to send", NULL);
    p->publish_time = metrics_family(m, G, "rlhf_learner_publish_timestamp_seconds",
                                     "Unix time the current policy version was announced", NULL);
    p->reward =
        metrics_family(m, G, "rlhf_learner_reward_mean", "mean reward of the last batch", NULL);
    p->accuracy = metrics_family(m, G, "rlhf_learner_accuracy",
                                 "fraction of the last batch's completions scored correct", NULL);
    p->kl = metrics_family(m, G, "rlhf_learner_kl_ref",
                           "KL to the reference policy (k3 estimator), last batch", NULL);
    p->kl_beta = metrics_family(m, G, "rlhf_learner_kl_beta",
                                "KL coefficient the last update used (adaptive or fixed)", NULL);
    p->groups_flat = metrics_family(m, C, "rlhf_learner_groups_flat_total",
                                    "groups dropped by dynamic sampling (all rewards equal)", NULL);
    p->entropy = metrics_family(m, G, "rlhf_learner_entropy", "policy entropy, last batch", NULL);
    p->loss = metrics_family(m, G, "rlhf_learner_loss", "loss of the last update", NULL);
    p->grad_norm =
        metrics_family(m, G, "rlhf_learner_grad_norm", "gradient norm of the last update", NULL);
    p->lr = metrics_family(m, G, "rlhf_learner_lr", "learning rate of the last update", NULL);
    p->step_s = metrics_family(m, G, "rlhf_learner_step_seconds",
                               "time the last update took (algo_step)", NULL);
    metrics_set(p->epoch, NULL, (double)l->epoch);
    metrics_set(p->step, NULL, (double)l->step);
    metrics_set(p->version, NULL, (double)l->version);
    metrics_set(p->snap_bytes, NULL, (double)(model_num_params(l->policy) * sizeof(float)));
    LeaseCounters c; /* the restored ones after a resume, until the first step */
    lease_counters(l->leases, &c);
    set_leases(p, l, &c);
    int rc = metrics_serve(m, addr, l->cfg.metrics_stale_s);
    if (rc) {
        metrics_free(&p->m);
        free(p);
        return rc;
    }
    l->http_metrics = p;
    learner_metrics_tick(l);
    return 0;
}

void learner_metrics_close(Learner *l)
{
    if (!l->http_metrics) return;
    metrics_free(&l->http_metrics->m);
    free(l->http_metrics);
    l->http_metrics = NULL;
}

void learner_metrics_step(Learner *l, const LeaseCounters *c, const AlgoStats *st,
                          const LearnerBatchInfo *bi, double step_s, double samples_per_s)
{
    LearnerMetrics *p = l->http_metrics;
    if (!p) return;
    metrics_lock(p->m);
    metrics_set(p->step, NULL, (double)l->step);
    metrics_set(p->version, NULL, (double)l->version);
    set_leases(p, l, c);
    metrics_set(p->samples_total, NULL, (double)l->samples_total);
    metrics_set(p->tokens_total, NULL, (double)l->tokens_total);
    metrics_set(p->samples_per_s, NULL, samples_per_s);
    metrics_set(p->stale_mean, NULL, l->last_stale);
    metrics_set(p->stale_max, NULL, (double)bi->stale_max);
    metrics_set(p->publish_time, NULL, (double)time(NULL));
    metrics_set(p->reward, NULL, l->last_reward);
    metrics_set(p->accuracy, NULL, l->last_accuracy);
    metrics_set(p->kl, NULL, l->last_kl);
    metrics_set(p->kl_beta, NULL, st->kl_beta);
    metrics_set(p->groups_flat, NULL, (double)l->groups_flat);
    metrics_set(p->entropy, NULL, st->entropy);
    metrics_set(p->loss, NULL, st->loss);
    metrics_set(p->grad_norm, NULL, st->grad_norm);
    metrics_set(p->lr, NULL, st->lr);
    metrics_set(p->step_s, NULL, step_s);
    metrics_unlock(p->m);
}

void learner_metrics_snapshot(Learner *l, size_t bytes, double seconds)
{
    LearnerMetrics *p = l->http_metrics;
    if (!p) return;
    metrics_lock(p->m);
    metrics_set(p->snaps_served, NULL, (double)l->snapshots_served);
    metrics_add(p->snap_sent_bytes, NULL, (double)bytes);
    metrics_set(p->snap_send_s, NULL, seconds);
    metrics_unlock(p->m);
}

void learner_metrics_tick(Learner *l)
{
    LearnerMetrics *p = l->http_metrics;
    if (!p) return;
    metrics_tick(p->m);
    double now = progress_now();
    if (now - p->t_refresh < REFRESH_S) return;
    p->t_refresh = now;
    WireSock *socks[3] = {l->s_lease, l->s_results, l->s_snap};
    metrics_lock(p->m);
    for (int i = 0; i < 3; i++) {
        if (!socks[i]) continue;
        const WireRejects *r = wire_sock_rejects(socks[i]);
        for (int k = 0; k < WIRE_REJ_COUNT; k++)
            metrics_set(p->rejects,
                        METRICS_LABELS(wire_sock_name(socks[i]), wire_reason_name((WireReason)k)),
                        (double)wire_rejects_get(r, (WireReason)k));
    }
    metrics_set(p->grants_empty, NULL, (double)l->grants_empty);
    metrics_set(p->grants_credit, NULL, (double)l->grants_credit);
    int holders = 0, held_max = 0;
    lease_holders(l->leases, &holders, &held_max);
    metrics_set(p->lease_credit, NULL, (double)l->lease_credit);
    metrics_set(p->lease_holders, NULL, (double)holders);
    metrics_set(p->lease_held_max, NULL, (double)held_max);
    if (l->snap_out) {
        metrics_set(p->snap_queued, NULL, (double)wire_snap_out_queued(l->snap_out));
        metrics_set(p->snap_budget, NULL, (double)wire_snap_out_budget(l->snap_out));
        metrics_set(p->snap_transfers, NULL, (double)wire_snap_out_transfers(l->snap_out));
    }
    metrics_unlock(p->m);
}
