/* reward_metrics: the reward server's Prometheus endpoint
 * (common/net/metrics.h) when cfg.metrics_addr is set: groups received,
 * scored and unsent, completions scored, rejections by reason, and the
 * time spent scoring.
 *
 * reward_run's loop copies reward_stats into the registry and beats the
 * heartbeat with reward_metrics_tick, so /healthz is 200 while that loop
 * runs (the scoring threads' counters are atomics it may read).
 *
 * Ownership: reward_metrics_open's caller owns the RewardMetrics
 * (reward_metrics_close). Threading: open, tick and close on one thread;
 * the registry is read by the server's own thread under its mutex.
 * Errors: reward_metrics_open returns metrics_serve's ERR_ARG or ERR_IO
 * (logged); the rest cannot fail. */
#ifndef RLHF_REWARD_METRICS_H
#define RLHF_REWARD_METRICS_H

#include "reward_server/reward.h"

/* Milliseconds between reward_run's calls of reward_metrics_tick. */
#define REWARD_METRICS_TICK_MS 250

typedef struct RewardMetrics RewardMetrics;

/* *out := the endpoint serving on cfg->metrics_addr, or NULL when that is
 * NULL or "" (off). Returns 0 or an error. */
int reward_metrics_open(const RewardConfig *cfg, RewardMetrics **out);
/* Stops the server, frees everything, sets *p to NULL; no-op on NULL. */
void reward_metrics_close(RewardMetrics **p);
/* The heartbeat and a copy of r's counters; no-op on NULL p. */
void reward_metrics_tick(RewardMetrics *p, const Reward *r);

#endif
