/* learner: the RL learner daemon's context: prompt set, policy, frozen
 * reference, optimizer(s), lease table, sockets and checkpoints, driven by
 * the services' event loop (common/net/reactor.h): the three readable
 * sockets through one dispatch table, timers for lease expiry, the
 * re-announce and the status line, and the training step as the idle work.
 * Its parts live beside it: learner_setup (models, resume), learner_task,
 * learner_serve (sockets, dispatch, grants), learner_intake (scored groups,
 * batches), learner_train, learner_publish (announce, snapshots) and
 * learner_record (checkpoints, metrics, summary).
 *
 * Sockets (all bound; endpoints from the config):
 *   lease     ROUTER  LeaseRequest -> LeaseGrant (always one reply per request;
 *                     a request that fails validation gets an ErrorReply)
 *   results   PULL    ScoredGroup from reward servers
 *   weights   PUB     WeightAnnounce after every update and once a second
 *   snapshot  ROUTER  SnapshotRequest -> the current weights as WeightChunks (or an
 *                     ErrorReply for a request that fails validation)
 *
 * Run identity: a fresh start draws a random hex run id and starts at epoch
 * 0, version 0. A start that finds a checkpoint in ckpt_dir keeps its run
 * id, step and policy version and takes a new epoch: one restart more than
 * the checkpoint's in the high 32 bits and 32 random bits below
 * (learner/epoch.h), so two incarnations never share an epoch, not even
 * when an older copy of ckpt_dir is restored; it is written to ckpt_dir
 * before any socket opens. Lease ids count up from the epoch's random half
 * shifted up 32 bits, and a group is matched by (epoch, lease id), so a
 * group leased by another incarnation can never match a current lease.
 *
 * Per-peer limits: what one peer can make the learner hold is bounded.
 * Lease credit: a connection (its ZeroMQ routing id) may hold at most
 * learner_lease_credit(cfg) groups in flight (learner/learner_config.h;
 * cfg.lease_credit), and with CURVE keys and cfg.lease_credit_key > 0 all
 * connections of one client key (ZAP's user id: the key's allow-list name)
 * together at most lease_credit_key; a request beyond it gets no work and
 * a short retry delay, counted in grants_credit: flow control, not a
 * reject (an honest actor faster than the learner holds its credit most of
 * the time; a hoarder holds it until its leases expire). Without keys an
 * identity is a connection, and a client that opens many connections gets
 * a credit on each: plaintext binds only to loopback unless --insecure, and
 * a deployment with keys gives each actor its own key for a per-actor bound
 * (actors sharing a key share its credit). Snapshots: one transfer queued
 * per connection at once, and the bytes queued for all peers within
 * learner_snapshot_budget(cfg) (common/net/snapshot.h, WireSnapOut); a
 * request beyond either is answered with an ErrorReply and counted as a
 * busy or over_budget reject of the snapshot socket. A peer that stops
 * reading keeps its one transfer until the learner's heartbeat (or the
 * peer) drops the connection.
 * A checkpoint marked finished whose step has reached cfg.steps is not
 * resumed: the learner starts a fresh run over it (logged).
 *
 * Checkpoint history: each save keeps the one it replaces beside it
 * ("<ckpt_dir>.prev-<n>", the last ckpt_keep in all; common/formats/ckpt.h).
 * A start resumes from the newest checkpoint that loads whole (every
 * tensor's checksum, the optimizer state, the trainer state): a damaged
 * newer one is logged as an error and set aside as "<dir>.damaged-<n>",
 * and the one before it is used and put back at ckpt_dir (a loud warning
 * names both). When none loads, learner_new fails. Without a checkpoint at
 * ckpt_dir itself a fresh run starts, whatever is kept beside it.
 *
 * Policy versions: one per algo_step call (one batch of batch_groups
 * groups), see learner/algo/algo.h. Leases grant min_policy_version = version -
 * max_staleness; the lease table bounds the groups out to what
 * max_staleness + 1 batches consume and drops groups whose oldest token is
 * older than that (learner/lease.h has the state machine and accounting).
 *
 * Input validation: every frame goes through wire_recv_decode (counted per
 * socket and reason, logged rate-limited); with keys (cfg.auth), every
 * socket is a CURVE server and a connection whose key is not allow-listed
 * is refused and counted as the socket's "unauthorized" rejects (and in
 * refused_auth); a scored group is then checked
 * against its lease (group size, sampling settings, the prompt's tokens,
 * token versions, sequence length), and a group that does not fit is
 * counted as a rejection of the results socket (WIRE_REJ_BAD_VALUE or
 * WIRE_REJ_BAD_SHAPE) and logged. Nothing a peer sends is CHECKed.
 *
 * Files: metrics_path gets one JSON object per optimizer step (appended; a
 * fresh run truncates it), summary_path one JSON object at the end, both
 * may be NULL. trained_log_path, when set, gets one line per group an
 * update trained, written before the update's version is announced (see
 * learner_record_trained), appended across restarts. Parent directories
 * are created.
 *
 * Ownership: learner_new's caller owns the Learner; config strings are
 * borrowed and must outlive it. Threading: a Learner belongs to the thread
 * that runs it; only the stop flag may be set from elsewhere (a signal
 * handler, another thread). learner_new may be called on one thread and
 * learner_run on another, as long as the hand-over is synchronised (thread
 * creation is). Errors: learner_new returns NULL after logging (bad
 * checkpoint, bind failure); learner_run returns 0 when it finished or was
 * stopped, or a negative ERR_* (logged) if the checkpoint or summary could
 * not be written or a socket failed for good. */
#ifndef RLHF_LEARNER_H
#define RLHF_LEARNER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/net/auth.h"
#include "common/net/endpoints.h"
#include "common/net/metrics.h"
#include "learner/algo/algo.h"
#include "learner/lease.h"

#define LEARNER_MAX_LEASE_PROMPTS 64 /* prompts in one lease at most */
#define LEARNER_GGUF_MAX_SEQ 256     /* positions a GGUF model is loaded with (KV cache, actors) */
/* Default bound of |reward|: far above any scorer's (0..1.1 for the built-in
 * tasks, a few units for reward models), far below what overflows float
 * arithmetic in advantages and value losses (a reward of 3e38 drove PPO's
 * critic gradient to infinity). */
#define LEARNER_REWARD_LIMIT 1e4f

typedef struct {
    const char *lease_ep;         /* ROUTER bind, e.g. "tcp://127.0.0.1:5555" */
    const char *results_ep;       /* PULL bind */
    const char *weights_ep;       /* PUB bind */
    const char *snapshot_ep;      /* ROUTER bind */
    const char *init_dir;         /* warm-start checkpoint; NULL = random init of the shape below */
    const char *model_path;       /* pretrained GGUF model (policy, reference and BPE tokenizer;
                                     the chat task); NULL = the char task. Excludes init_dir */
    const char *critic_init;      /* PPO: a reward model checkpoint (the policy's shape with the
                                     scalar head) the critic starts from; NULL = the policy */
    const char *ckpt_dir;         /* resumed from if it holds a checkpoint, saved to; NULL = none */
    const char *metrics_path;     /* JSONL, one record per step; NULL = none */
    const char *summary_path;     /* JSON at the end; NULL = none */
    const char *trained_log_path; /* the groups each step trained (learner_record.h); NULL = none */
    int         steps;            /* optimizer steps (versions) to take in total, >= 0 */
    int         batch_groups;     /* groups per update, >= 1 */
    int         group_size;       /* G completions per prompt, >= 1 */
    int         lease_prompts;    /* prompts per lease at most, 1..LEARNER_MAX_LEASE_PROMPTS */
    int         lease_timeout_ms; /* a lease is re-issued after this, > 0 */
    int         max_staleness;    /* versions, >= 0 */
    int         lease_credit;     /* groups one peer (connection) may hold in flight;
                                     0 = learner_lease_credit's default */
    int lease_credit_key;         /* with keys: groups one client key may hold over all its
                                     connections; 0 = no limit per key */
    int snapshot_queue_mb;        /* MiB of snapshots queued for sending, all peers;
                                     0 = learner_snapshot_budget's default */
    int         max_new_tokens;   /* completion length cap, >= 1 */
    float       lr;               /* AdamW learning rate (policy and critic); see the default */
    int         lr_warmup_steps;  /* linear warmup, in updates */
    float       grad_clip;        /* global norm, 0 = off */
    AlgoConfig  algo;             /* update rule; see learner/algo/algo.h */
    float       reward_min;       /* valid rewards: finite, reward_min < reward_max; a group */
    float       reward_max;       /* with one outside is refused (WIRE_REJ_BAD_VALUE) */
    uint64_t    seed;             /* run seed: prompts, init, shuffles */
    int         max_digits;       /* arithmetic operands 1..max_digits digits */
    const char *data_path;        /* JSONL prompts to train on (common/tasks/dataset.h);
                                     NULL = the built-in task */
    const char *eval_data_path;   /* JSONL held-out prompts, evaluated instead of the built-in
                                     split; NULL = the built-in split (none for a data run) */
    const char *data_task;        /* scorer spec of records without a task; NULL = refused */
    int         data_max_bad;     /* a data file with more than this % bad records is refused */
    int         eval_n;           /* held-out problems per evaluation, 0 = no evaluation */
    int         eval_every;       /* evaluate every N steps as well, 0 = start and end only */
    int         ckpt_every;       /* checkpoint every N steps, 0 = only at the end */
    int         ckpt_keep;        /* checkpoints kept (the newest included), 1..CKPT_KEEP_MAX */
    int         poll_ms;          /* longest wait in the loop */
    double      status_every_s;   /* seconds between status lines, 0 = none */
    int         chunk_bytes;      /* snapshot chunk size, 0 = WIRE_CHUNK_BYTES */
    int         snapshot_dtype;   /* Rlhf__WeightDtype snapshots go out in (bf16 default) */
    /* LoRA (common/nn/lora.h): train adapters on a frozen base. */
    int         lora_rank;    /* r, 0 = full fine-tuning */
    float       lora_alpha;   /* updates scaled by alpha / r */
    const char *lora_targets; /* comma list of q,k,v,o,gate,up,down (attn, mlp, all) */
    /* Shape of a random-init model (no init_dir): self-tests and smoke runs. */
    int dim, n_layers, n_heads, hidden_dim;
    /* Metrics: */
    const char *metrics_addr;    /* HOST:PORT of the Prometheus endpoint; NULL or "" = off */
    double      metrics_stale_s; /* /healthz answers 503 after this long without a loop pass */
    /* Security: CURVE keys and the ZAP allow-list (common/net/auth.h). */
    AuthConfig auth; /* keys_dir NULL = plaintext, loopback binds only unless is_insecure */
} LearnerConfig;

/* lr: on the built-in task's ~1M-parameter model warm-started to 0.65
 * held-out accuracy, 3e-4 halved the accuracy within 30 updates of 64
 * samples and 1e-4 lost a little; 2e-5..5e-5 kept it (measured with 2
 * actors). Larger models and batches may take more. */
#define LEARNER_DEFAULTS                                                                           \
    ((LearnerConfig){.lease_ep = ENDPOINT_LEASE,                                                   \
                     .results_ep = ENDPOINT_RESULTS,                                               \
                     .weights_ep = ENDPOINT_WEIGHTS,                                               \
                     .snapshot_ep = ENDPOINT_SNAPSHOT,                                             \
                     .init_dir = NULL,                                                             \
                     .critic_init = NULL,                                                          \
                     .model_path = NULL,                                                           \
                     .ckpt_dir = "runs/latest/ckpt",                                               \
                     .metrics_path = "runs/latest/metrics.jsonl",                                  \
                     .summary_path = "runs/latest/summary.json",                                   \
                     .steps = 60,                                                                  \
                     .batch_groups = 8,                                                            \
                     .group_size = 8,                                                              \
                     .lease_prompts = 4,                                                           \
                     .lease_timeout_ms = 15000,                                                    \
                     .max_staleness = 2,                                                           \
                     .lease_credit = 0,                                                            \
                     .lease_credit_key = 0,                                                        \
                     .snapshot_queue_mb = 0,                                                       \
                     .max_new_tokens = 8,                                                          \
                     .lr = 3e-5f,                                                                  \
                     .lr_warmup_steps = 3,                                                         \
                     .grad_clip = 1.0f,                                                            \
                     .algo = ALGO_DEFAULTS,                                                        \
                     .reward_min = -LEARNER_REWARD_LIMIT,                                          \
                     .reward_max = LEARNER_REWARD_LIMIT,                                           \
                     .seed = 1,                                                                    \
                     .max_digits = 3,                                                              \
                     .data_path = NULL,                                                            \
                     .eval_data_path = NULL,                                                       \
                     .data_task = NULL,                                                            \
                     .data_max_bad = 50,                                                           \
                     .eval_n = 200,                                                                \
                     .eval_every = 0,                                                              \
                     .ckpt_every = 10,                                                             \
                     .ckpt_keep = 3,                                                               \
                     .poll_ms = 50,                                                                \
                     .status_every_s = 5.0,                                                        \
                     .chunk_bytes = 0,                                                             \
                     .snapshot_dtype = 1,                                                          \
                     .lora_rank = 0,                                                               \
                     .lora_alpha = 16.0f,                                                          \
                     .lora_targets = "all",                                                        \
                     .dim = 64,                                                                    \
                     .n_layers = 2,                                                                \
                     .n_heads = 4,                                                                 \
                     .hidden_dim = 128,                                                            \
                     .metrics_addr = NULL,                                                         \
                     .metrics_stale_s = METRICS_STALE_S,                                           \
                     .auth = AUTH_DEFAULTS})

/* Checks every field; returns 0 or ERR_ARG with the reason in why. */
int learner_config_validate(const LearnerConfig *cfg, char *why, size_t why_len);

typedef struct Learner Learner;

/* Loads or creates the policy (resuming from ckpt_dir when it holds a
 * checkpoint), writes the checkpoint of the new epoch, evaluates the start
 * (eval_n > 0) and binds the sockets. Returns NULL after logging. */
Learner *learner_new(const LearnerConfig *cfg);
/* Closes the sockets (short linger), frees everything; no-op on NULL. */
void learner_free(Learner **l);

/* Serves and trains until cfg.steps steps are done or *stop is set; then
 * checkpoints (if a step was taken since the last one), evaluates and
 * writes the summary. Returns as described at the top. */
int learner_run(Learner *l, atomic_int *stop);

/* What tests and the status line look at. */
typedef struct {
    char          run_id[33];
    uint64_t      epoch;
    int64_t       version;
    int64_t       step;
    LeaseCounters lease;
    uint64_t      dup_epoch;     /* groups of another epoch (also in duplicates) */
    uint64_t      rejects_lease; /* frames refused per socket, every reason */
    uint64_t      rejects_results;
    uint64_t      rejects_snapshot;
    uint64_t      snapshots_served;
    uint64_t      grants_empty;    /* requests answered without work */
    uint64_t      grants_credit;   /* of those, because the peer held its lease credit */
    double        accuracy_before; /* held-out greedy accuracy at the run's start */
    double        accuracy_after;  /* at the end (NaN before) */
    double        reward_before;   /* held-out greedy mean reward at the run's start */
    double        reward_after;    /* at the end (NaN before) */
    uint64_t      refused_auth;    /* connections refused by CURVE/ZAP, every socket */
} LearnerStatus;

/* Call from the learner's thread, or when learner_run has returned. */
void learner_status(const Learner *l, LearnerStatus *out);
/* The endpoint a socket actually bound ("tcp://127.0.0.1:40123" for a
 * "tcp://127.0.0.1:*" config); which is "lease", "results", "weights" or
 * "snapshot". Returns 0, ERR_ARG for another name, or wire_last_endpoint's
 * errors. */
int learner_endpoint(Learner *l, const char *which, char *buf, size_t cap);
/* The trainable policy (borrowed), e.g. to compare with a fetched snapshot
 * after learner_run returned. */
Model *learner_policy(Learner *l);

#endif
