/* learner_metrics: the learner's Prometheus endpoint (common/net/metrics.h)
 * when cfg.metrics_addr is set: the lease accounting, rejections per socket
 * and reason, progress, throughput, staleness, snapshots, reward, accuracy,
 * KL and step time.
 *
 * The values of a step are set together (one scrape sees all of them or
 * none) at the moment its metrics.jsonl record is written, from the same
 * numbers, so /metrics agrees with the file's last record: the lease
 * counters are those of the last step, not of this instant. Rejections,
 * snapshots and the heartbeat are refreshed live from the loop.
 *
 * Ownership: the Learner owns its LearnerMetrics (learner_metrics_close).
 * Threading: everything here runs on the Learner's thread; the registry is
 * read by the server's own thread under its mutex. Errors:
 * learner_metrics_open returns metrics_serve's ERR_ARG or ERR_IO (logged);
 * the updates cannot fail and are no-ops while the endpoint is off. */
#ifndef RLHF_LEARNER_METRICS_H
#define RLHF_LEARNER_METRICS_H

#include "learner/learner_intake.h"
#include "learner/learner_int.h"

/* Defines the families and starts the server if cfg.metrics_addr is set
 * (non-empty). Returns 0 or an error. */
int learner_metrics_open(Learner *l);
/* Stops the server and frees the registry; no-op when off. */
void learner_metrics_close(Learner *l);

/* One optimizer step's values (with c the lease counters and
 * samples_per_s the rate written to the step's metrics record). */
void learner_metrics_step(Learner *l, const LeaseCounters *c, const AlgoStats *st,
                          const LearnerBatchInfo *bi, double step_s, double samples_per_s);
/* A snapshot of bytes was sent to an actor in seconds. */
void learner_metrics_snapshot(Learner *l, size_t bytes, double seconds);
/* Each pass of the loop: the heartbeat, and (a few times a second) the
 * rejection counters. */
void learner_metrics_tick(Learner *l);

#endif
