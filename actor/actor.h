/* actor: the rollout actor of the cluster. It follows the learner's weights
 * (clone pattern: WeightAnnounce on a SUB says a version exists, a
 * SnapshotRequest to the snapshot ROUTER fetches it as WeightChunk frames),
 * asks the learner's lease ROUTER for work (LeaseRequest / LeaseGrant on a
 * DEALER), samples group_size completions per prompt through the KV cache
 * with gen's continuous batching (a lease's sequences through --batch
 * slots), and PUSHes one SampledGroup per prompt to the reward servers.
 *
 * Weights are swapped whole and only while no sequence is being generated:
 * a snapshot is assembled in a spare buffer, verified (checksum, config,
 * size, finite values) and then copied over the model's parameters in one
 * piece, never while a sequence is running. Every token carries the policy version of the weights
 * that produced it. A (run_id, epoch, policy_version) triple names a set of
 * weights; the actor refetches whenever the learner's (run, epoch,
 * version) differs from what it holds in any direction: another run or
 * epoch, higher or lower (epochs are compared for equality only, never for
 * order: learner/epoch.h), or a newer version; a lower version of the held
 * epoch once the learner repeats it (a stale announce is not). So a learner
 * restarted from an older checkpoint, or from a restored older copy of its
 * checkpoint directory, is followed, and versions of two incarnations are
 * never mixed inside a lease.
 *
 * Log-prob contract: logp_behaviour of a token is log softmax(logits / T) of
 * the token, untruncated (gen's logp_full, what the learner recomputes with
 * model_forward at the same temperature), under the weights the actor
 * decodes with: the snapshot itself with decode_weights KERN_F32, or its
 * matrices rounded to bf16 / fp16 (model_set_decode_type), which is faster
 * and differs from the learner's fp32 log-probs by the rounding (the
 * importance ratio corrects for it); logp_sampled is the log-prob under
 * the top-k/top-p truncated distribution it was actually drawn from (equal
 * to logp_behaviour without truncation). Greedy sampling (T = 0) follows the
 * sampler: logp_behaviour at T = 1, logp_sampled 0.
 *
 * Ownership: actor_new's caller owns the Actor (actor_free); the config's
 * strings are copied. Threading: an Actor and its sockets belong to the
 * thread that created it; only the stop flag given to actor_run may be set
 * from elsewhere (a signal handler or another thread). Errors: actor_new
 * returns NULL after logging; actor_run returns 0 when stopped. Bad input
 * from peers is never an error of the actor: it is logged, counted and
 * ignored. */
#ifndef RLHF_ACTOR_H
#define RLHF_ACTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/net/auth.h"
#include "common/nn/kern.h"
#include "common/net/endpoints.h"
#include "common/net/metrics.h"

#define ACTOR_MAX_REWARD 16  /* reward server endpoints at most */
#define ACTOR_MAX_ID 64      /* bytes of an actor id, NUL included */
#define ACTOR_MAX_RUN_ID 129 /* bytes of a run id, NUL included (WIRE_MAX_NAME + 1) */

/* Plain-data configuration; ACTOR_DEFAULTS documents each default once. */
typedef struct {
    const char *lease_ep;                     /* learner lease ROUTER (DEALER connects) */
    const char *weights_ep;                   /* learner PUB of WeightAnnounce (SUB connects) */
    const char *snapshot_ep;                  /* learner snapshot ROUTER (DEALER connects) */
    const char *reward_eps[ACTOR_MAX_REWARD]; /* reward server PULLs (PUSH connects to each) */
    int         n_reward;                     /* endpoints in reward_eps, >= 1 */
    int         reward_resolve_ms; /* > 0: connect to every address of a reward host name and
                                      re-resolve this often (actor_dns.h); 0 = as given, once */
    const char *id;                /* actor id sent to the learner; NULL = "actor-<pid>" */
    int         batch;             /* sequences generated together at most, >= 1 */
    int         cross_lease; /* 1: the next lease joins the running generation (actor_work.h) */
    uint64_t    seed;        /* sampling seed; 0 = derived from the actor id */
    int         poll_ms;     /* longest wait before the stop flag is looked at */
    int         reply_timeout_ms;    /* re-send a LeaseRequest unanswered this long */
    int         snapshot_timeout_ms; /* re-send a SnapshotRequest when chunks stop this long */
    double      status_every_s;      /* seconds between status lines; 0 = none */
    int         decode_weights; /* KernType the snapshot is decoded in (converted on receipt) */
    /* Metrics: */
    const char *metrics_addr;    /* HOST:PORT of the Prometheus endpoint; NULL or "" = off */
    double      metrics_stale_s; /* /healthz answers 503 after this long without a loop pass */
    /* Security: with keys, every socket is a CURVE client holding DIR/<key_name>.key and the
       server's DIR/learner.pub or DIR/reward.pub (common/net/auth.h). */
    AuthConfig auth;
} ActorConfig;

#define ACTOR_DEFAULTS                                                                             \
    ((ActorConfig){.lease_ep = ENDPOINT_LEASE,                                                     \
                   .weights_ep = ENDPOINT_WEIGHTS,                                                 \
                   .snapshot_ep = ENDPOINT_SNAPSHOT,                                               \
                   .reward_eps = {ENDPOINT_SAMPLES},                                               \
                   .n_reward = 1,                                                                  \
                   .reward_resolve_ms = 0,                                                         \
                   .id = NULL,                                                                     \
                   .batch = 32,                                                                    \
                   .cross_lease = 1,                                                               \
                   .seed = 0,                                                                      \
                   .poll_ms = 50,                                                                  \
                   .reply_timeout_ms = 5000,                                                       \
                   .snapshot_timeout_ms = 5000,                                                    \
                   .status_every_s = 5.0,                                                          \
                   .decode_weights = KERN_BF16,                                                    \
                   .metrics_addr = NULL,                                                           \
                   .metrics_stale_s = METRICS_STALE_S,                                             \
                   .auth = AUTH_DEFAULTS})

/* Counters of one actor, for the status line and tests. */
typedef struct {
    uint64_t leases_done;              /* leases whose every group was pushed */
    uint64_t leases_refused;           /* grants refused (unusable prompts, wrong model) */
    uint64_t leases_abandoned;         /* leases dropped part-way (stop, learner restarted) */
    uint64_t leases_stale;             /* duplicate or old-epoch grants ignored */
    uint64_t leases_joined;            /* leases seeded into a running generation (--cross-lease) */
    uint64_t groups_sent;              /* SampledGroups pushed */
    uint64_t completions_sent;         /* completions in them */
    uint64_t tokens_generated;         /* tokens in them */
    uint64_t requests_sent;            /* LeaseRequests sent, re-sends included */
    uint64_t requests_resent;          /* LeaseRequests re-sent after reply_timeout_ms */
    uint64_t retries;                  /* grants without work (retry_after_ms) */
    uint64_t error_replies;            /* ErrorReply frames received */
    uint64_t snapshots;                /* snapshots installed */
    uint64_t snapshot_failures;        /* fetch attempts that failed (timeout, bad snapshot) */
    uint64_t rejects;                  /* received frames refused, every socket and reason */
    bool     has_weights;              /* a snapshot is installed */
    char     run_id[ACTOR_MAX_RUN_ID]; /* run of the held weights */
    uint64_t epoch;                    /* learner epoch of the held weights */
    uint64_t policy_version;           /* version of the held weights */
    uint64_t snapshot_bytes;           /* bytes of the snapshots installed */
    uint64_t snapshots_adapters;       /* of them, LoRA adapters alone (the base held) */
    uint64_t slot_steps;               /* generation slots offered: --batch per step */
    uint64_t slot_rows_used;           /* of those, slots that held a sequence */
} ActorStats;

typedef struct Actor Actor;

/* Creates the ZeroMQ context and sockets and connects them (connecting
 * never waits for the peer, so start-up order does not matter). Checks the
 * config (CHECK on misuse: batch < 1, no reward endpoint). Returns NULL
 * after logging if a socket cannot be made or an endpoint is malformed.
 * Caller owns. */
Actor *actor_new(const ActorConfig *cfg);
/* Closes the sockets with a short linger, terminates the context and frees
 * everything. No-op on NULL; sets *a to NULL. */
void actor_free(Actor **a);

/* Runs the actor until *stop becomes non-zero: fetches the first snapshot
 * (retrying with back-off until a learner answers), then requests, generates
 * and pushes work, following weight updates, and logs a status line every
 * status_every_s. Every wait is at most poll_ms, so a stop is seen promptly:
 * generation stops at the next decode step, the groups completed before it
 * have been pushed, and the rest of the lease is abandoned (the learner
 * re-issues it at its deadline).
 * Returns 0 when stopped, ERR_IO if a socket fails for good. */
int actor_run(Actor *a, atomic_int *stop);

/* The actor's counters (a copy). Call from the actor's thread, or after
 * actor_run returned. */
void actor_stats(const Actor *a, ActorStats *out);
/* The id the actor uses; borrowed, lives as long as the actor. */
const char *actor_id(const Actor *a);

#endif
