#include "actor/actor_metrics.h"

#include <stdlib.h>

#include "common/base/err.h"
#include "common/base/progress.h"
#include "common/net/metrics.h"

#define RATE_WINDOW_S 1.0 /* samples/s is measured over at least this long */

struct ActorMetrics {
    Metrics       *m;
    double         t_rate;       /* start of the current rate window */
    uint64_t       samples_rate; /* completions sent at t_rate */
    MetricsFamily *state, *has_weights, *version, *epoch;
    MetricsFamily *groups, *samples, *tokens, *samples_per_s, *leases, *requests;
    MetricsFamily *rejects, *error_replies, *snapshots, *snap_failures, *snap_bytes;
    MetricsFamily *slot_steps, *slot_used, *joined;
};

/* Label values of ActorState, in its order. */
static const char *const state_labels[] = {
    [ACTOR_WAITING_WEIGHTS] = "waiting_weights",
    [ACTOR_FETCHING] = "fetching",
    [ACTOR_IDLE] = "idle",
    [ACTOR_REQUESTING] = "requesting",
    [ACTOR_SAMPLING] = "sampling",
};
#define N_STATES ((int)(sizeof state_labels / sizeof state_labels[0]))

int actor_metrics_open(Actor *a)
{
    const char *addr = a->cfg.metrics_addr;
    if (!addr || !addr[0]) return 0;
    ActorMetrics     *p = xcalloc(1, sizeof *p);
    Metrics          *m = p->m = metrics_new();
    const MetricsType C = METRICS_COUNTER, G = METRICS_GAUGE;
    p->state = metrics_family(m, G, "rlhf_actor_state", "1 for the state the actor is in", "state");
    p->has_weights =
        metrics_family(m, G, "rlhf_actor_has_weights", "1 once a snapshot is installed", NULL);
    p->version = metrics_family(m, G, "rlhf_actor_policy_version",
                                "policy version of the weights held", NULL);
    p->epoch = metrics_family(m, G, "rlhf_actor_epoch", "learner epoch of the weights held", NULL);
    p->groups =
        metrics_family(m, C, "rlhf_actor_groups_total", "groups pushed to reward servers", NULL);
    p->samples =
        metrics_family(m, C, "rlhf_actor_samples_total", "completions in those groups", NULL);
    p->tokens = metrics_family(m, C, "rlhf_actor_tokens_total", "tokens generated in them", NULL);
    p->samples_per_s = metrics_family(m, G, "rlhf_actor_samples_per_second",
                                      "completions pushed per second, last second or so", NULL);
    p->leases = metrics_family(m, C, "rlhf_actor_leases_total", "leases by outcome", "outcome");
    p->requests = metrics_family(m, C, "rlhf_actor_lease_requests_total",
                                 "lease requests sent, re-sends included", NULL);
    p->rejects = metrics_family(m, C, "rlhf_actor_rejects_total",
                                "frames refused, by socket (local: after decoding) and reason",
                                "socket,reason");
    p->error_replies = metrics_family(m, C, "rlhf_actor_error_replies_total",
                                      "ErrorReply frames received from the learner", NULL);
    p->snapshots = metrics_family(m, C, "rlhf_actor_snapshot_fetches_total",
                                  "weight snapshots fetched and installed", NULL);
    p->snap_failures = metrics_family(m, C, "rlhf_actor_snapshot_failures_total",
                                      "snapshot fetch attempts that failed", NULL);
    p->snap_bytes = metrics_family(m, C, "rlhf_actor_snapshot_bytes_total",
                                   "bytes of the snapshots installed", NULL);
    p->slot_steps = metrics_family(m, C, "rlhf_actor_slot_steps_total",
                                   "generation slots offered: --batch per decode step", NULL);
    p->joined = metrics_family(m, C, "rlhf_actor_leases_joined_total",
                               "leases seeded into a running generation (--cross-lease)", NULL);
    p->slot_used =
        metrics_family(m, C, "rlhf_actor_slot_used_total",
                       "of those, slots that held a sequence (the rest were wasted)", NULL);
    int rc = metrics_serve(m, addr, a->cfg.metrics_stale_s);
    if (rc) {
        metrics_free(&p->m);
        free(p);
        return rc;
    }
    p->t_rate = progress_now();
    a->http_metrics = p;
    actor_metrics_tick(a);
    return 0;
}

void actor_metrics_close(Actor *a)
{
    if (!a->http_metrics) return;
    metrics_free(&a->http_metrics->m);
    free(a->http_metrics);
    a->http_metrics = NULL;
}

static void set_rejects(ActorMetrics *p, const char *socket, const WireRejects *r)
{
    for (int k = 0; k < WIRE_REJ_COUNT; k++)
        metrics_set(p->rejects, METRICS_LABELS(socket, wire_reason_name((WireReason)k)),
                    (double)wire_rejects_get(r, (WireReason)k));
}

void actor_metrics_tick(Actor *a)
{
    ActorMetrics *p = a->http_metrics;
    if (!p) return;
    metrics_tick(p->m);
    ActorStats s;
    actor_stats(a, &s);
    double now = progress_now();
    metrics_lock(p->m);
    for (int i = 0; i < N_STATES; i++)
        metrics_set(p->state, METRICS_LABELS(state_labels[i]), (int)a->state == i ? 1 : 0);
    metrics_set(p->has_weights, NULL, s.has_weights);
    metrics_set(p->version, NULL, (double)s.policy_version);
    metrics_set(p->epoch, NULL, (double)s.epoch);
    metrics_set(p->groups, NULL, (double)s.groups_sent);
    metrics_set(p->samples, NULL, (double)s.completions_sent);
    metrics_set(p->tokens, NULL, (double)s.tokens_generated);
    if (now - p->t_rate >= RATE_WINDOW_S) {
        metrics_set(p->samples_per_s, NULL,
                    (double)(s.completions_sent - p->samples_rate) / (now - p->t_rate));
        p->t_rate = now;
        p->samples_rate = s.completions_sent;
    }
    metrics_set(p->leases, METRICS_LABELS("done"), (double)s.leases_done);
    metrics_set(p->leases, METRICS_LABELS("refused"), (double)s.leases_refused);
    metrics_set(p->leases, METRICS_LABELS("abandoned"), (double)s.leases_abandoned);
    metrics_set(p->leases, METRICS_LABELS("stale"), (double)s.leases_stale);
    metrics_set(p->joined, NULL, (double)s.leases_joined);
    metrics_set(p->requests, NULL, (double)s.requests_sent);
    set_rejects(p, wire_sock_name(a->lease), wire_sock_rejects(a->lease));
    set_rejects(p, wire_sock_name(a->sub), wire_sock_rejects(a->sub));
    set_rejects(p, wire_sock_name(a->snap), wire_sock_rejects(a->snap));
    set_rejects(p, "local", &a->local);
    metrics_set(p->error_replies, NULL, (double)s.error_replies);
    metrics_set(p->snapshots, NULL, (double)s.snapshots);
    metrics_set(p->snap_failures, NULL, (double)s.snapshot_failures);
    metrics_set(p->snap_bytes, NULL, (double)s.snapshot_bytes);
    metrics_set(p->slot_steps, NULL, (double)s.slot_steps);
    metrics_set(p->slot_used, NULL, (double)s.slot_rows_used);
    metrics_unlock(p->m);
}

int actor_metrics_on_timer(Reactor *r, void *arg)
{
    actor_metrics_tick(arg);
    return 0;
}
