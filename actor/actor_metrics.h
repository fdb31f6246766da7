/* actor_metrics: the actor's Prometheus endpoint (common/net/metrics.h)
 * when cfg.metrics_addr is set: its state, the version of the weights it
 * holds, groups and completions produced and their rate, leases by
 * outcome, rejections per socket and reason, snapshot fetches and bytes.
 *
 * Values are copied from the actor's counters (ActorStats) by
 * actor_metrics_tick, which also beats the heartbeat: from a reactor timer
 * and between the generation batches of a lease, so /healthz stays 200
 * through a long lease and turns 503 when the loop is stuck.
 *
 * Ownership: the Actor owns its ActorMetrics (actor_metrics_close).
 * Threading: the actor's thread; the registry is read by the server's own
 * thread under its mutex. Errors: actor_metrics_open returns
 * metrics_serve's ERR_ARG or ERR_IO (logged); the rest cannot fail and is a
 * no-op while the endpoint is off. */
#ifndef RLHF_ACTOR_METRICS_H
#define RLHF_ACTOR_METRICS_H

#include "actor/actor_int.h"

/* Milliseconds between the reactor's calls of actor_metrics_tick. */
#define ACTOR_METRICS_TICK_MS 250

/* Defines the families and starts the server if cfg.metrics_addr is set
 * (non-empty). Returns 0 or an error. */
int actor_metrics_open(Actor *a);
/* Stops the server and frees the registry; no-op when off. */
void actor_metrics_close(Actor *a);
/* The heartbeat and a copy of the counters. */
void actor_metrics_tick(Actor *a);
/* actor_metrics_tick as a reactor timer (arg: the Actor). */
int actor_metrics_on_timer(Reactor *r, void *arg);

#endif
